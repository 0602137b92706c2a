//! `switchyard status`.

use anyhow::{Result, bail};
use clap::Args;

use super::shared::{StoreArg, block_on, print_json, summary};

// `switchyard status [function]`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function (default: all).
    function: Option<String>,
}

pub(crate) fn run(args: StatusArgs) -> Result<()> {
    let StatusArgs { store, function } = args;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let functions = match function {
            Some(f) => vec![f],
            None => store.functions().await?,
        };
        let latest = store.latest(&functions).await?;
        let mut out = Vec::new();
        let mut unreadable = 0;
        for (f, r) in functions.iter().zip(latest) {
            match r {
                Ok(Some(r)) => out.push(summary(&r)),
                Ok(None) => bail!("{f} has no route config in {}", store.uri()),
                // One function's bad version does not hide the others.
                Err(e) => {
                    unreadable += 1;
                    out.push(serde_json::json!({"function": f, "error": e.to_string(), "kind": e.kind()}));
                }
            }
        }
        if unreadable > 0 {
            eprintln!(
                "warning: {unreadable} function(s) have an unreadable latest version (hosts keep serving the version before it); publish a good one or `switchyard rollback`"
            );
        }
        print_json(&serde_json::Value::Array(out))
    })
}
