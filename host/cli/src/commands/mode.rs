//! `switchyard mode`.

use anyhow::Result;
use clap::Args;
use switchyard_core::Mode;

use super::shared::{ExpectArg, StoreArg, block_on, latest, print_json, write_route};

// `switchyard mode <function> production|synthetic`.
#[derive(Debug, Args)]
pub(crate) struct ModeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
    /// The new mode.
    #[arg(value_parser = ["production", "synthetic"])]
    mode: String,
    #[command(flatten)]
    expect: ExpectArg,
}

pub(crate) fn run(args: ModeArgs) -> Result<()> {
    let ModeArgs {
        store,
        function,
        mode,
        expect,
    } = args;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let mut current = latest(&*store, &function).await?;
        current.config.mode = if mode == "synthetic" {
            Mode::Synthetic
        } else {
            Mode::Production
        };
        let version = write_route(
            &*store,
            &function,
            &current.config,
            current.version,
            &expect,
            "mode",
        )
        .await?;
        print_json(&serde_json::json!({"function": function, "version": version, "mode": mode}))
    })
}
