//! `switchyard rollback`.

use anyhow::{Context, Result, bail};
use clap::Args;

use super::shared::{ExpectArg, StoreArg, block_on, print_json, write_route};

// `switchyard rollback <function> [--to N]`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
    /// The version to restore.
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    expect: ExpectArg,
}

pub(crate) fn run(args: RollbackArgs) -> Result<()> {
    let RollbackArgs {
        store,
        function,
        to,
        expect,
    } = args;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let all = store.history(&function).await?;
        let current_version = all.iter().rev().find_map(|r| match r {
            Ok(r) => Some(r.version),
            Err(e) => e.version(),
        });
        // Unreadable versions cannot be restored: skipped, and said.
        let mut history = Vec::new();
        for r in all {
            match r {
                Ok(r) => history.push(r),
                Err(e) => eprintln!("warning: skipping {e}"),
            }
        }
        let Some(current) = history.last() else {
            bail!(
                "{function} has no route config in {}; publish one first",
                store.uri()
            );
        };
        let target = match to {
            Some(n) => history.iter().find(|r| r.version == n).with_context(|| {
                format!(
                    "{function} has no version {n}; versions: {}",
                    history
                        .iter()
                        .map(|r| r.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
            // The newest readable version before the live one (when the
            // live one is unreadable, the newest readable).
            None => {
                let live_readable = current_version == Some(current.version);
                let pick = if live_readable {
                    history.iter().rev().nth(1)
                } else {
                    Some(current)
                };
                pick.with_context(|| {
                    format!(
                        "{function} has only version {}; nothing to roll back to",
                        current.version
                    )
                })?
            }
        };
        let read = current_version.unwrap_or(current.version);
        let version = write_route(
            &*store,
            &function,
            &target.config,
            read,
            &expect,
            "rollback",
        )
        .await?;
        eprintln!(
            "{function}: version {version} restores version {} (was {})",
            target.version,
            current_version.unwrap_or(current.version)
        );
        print_json(
            &serde_json::json!({"function": function, "version": version, "restored": target.version}),
        )
    })
}
