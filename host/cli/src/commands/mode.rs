//! `switchyard mode`.

use anyhow::Result;
use clap::Args;
use switchyard_core::Mode;

use super::shared::{StoreArg, block_on, latest, print_json};

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
}

pub(crate) fn run(args: ModeArgs) -> Result<()> {
    let ModeArgs {
        store,
        function,
        mode,
    } = args;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let mut current = latest(&*store, &function).await?;
        current.config.mode = if mode == "synthetic" {
            Mode::Synthetic
        } else {
            Mode::Production
        };
        let version = store.put_route(&function, &current.config).await?;
        print_json(&serde_json::json!({"function": function, "version": version, "mode": mode}))
    })
}
