//! `switchyard history`.

use anyhow::{Result, bail};
use clap::Args;

use super::shared::{StoreArg, block_on, print_json, summary};

// `switchyard history <function>`.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
}

pub(crate) fn run(args: HistoryArgs) -> Result<()> {
    let HistoryArgs { store, function } = args;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let history = store.history(&function).await?;
        if history.is_empty() {
            bail!("{function} has no route config in {}", store.uri());
        }
        // An unreadable version is listed with its error, not fatal.
        print_json(&serde_json::Value::Array(
            history
                .iter()
                .map(|r| match r {
                    Ok(r) => summary(r),
                    Err(e) => serde_json::json!({
                        "function": function,
                        "version": e.version(),
                        "error": e.to_string(),
                        "kind": e.kind(),
                    }),
                })
                .collect(),
        ))
    })
}
