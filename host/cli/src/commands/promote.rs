//! `switchyard promote`.

use anyhow::{Result, bail};
use clap::Args;
use switchyard_core::Mode;

use super::shared::{ExpectArg, StoreArg, block_on, latest, print_json, write_route};

// `switchyard promote <function> [--keep-candidate]`.
#[derive(Debug, Args)]
pub(crate) struct PromoteArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
    /// Keep the `candidate` role (now the same qualifier as `stable`)
    /// instead of clearing it.
    #[arg(long)]
    keep_candidate: bool,
    #[command(flatten)]
    expect: ExpectArg,
}

pub(crate) fn run(args: PromoteArgs) -> Result<()> {
    let PromoteArgs {
        store,
        function,
        keep_candidate,
        expect,
    } = args;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let current = latest(&*store, &function).await?;
        let mut config = current.config;
        let Some(candidate) = config.versions.get("candidate").cloned() else {
            let roles = config
                .versions
                .iter()
                .map(|(role, q)| format!("{role}={q}"))
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "{function} has no candidate to promote (version {} has {roles}); name one with `switchyard set {function} --version candidate=<qualifier>`",
                current.version
            );
        };
        let previous = config
            .versions
            .insert("stable".to_owned(), candidate.clone())
            .unwrap_or_default();
        if !keep_candidate {
            config.versions.remove("candidate");
        }
        config.mode = Mode::Production;
        let version = write_route(
            &*store,
            &function,
            &config,
            current.version,
            &expect,
            "promote",
        )
        .await?;
        eprintln!(
            "{function}: version {version} makes {candidate} stable (was {previous}), mode production{}",
            if keep_candidate {
                ", candidate kept"
            } else {
                ", candidate cleared"
            }
        );
        print_json(&serde_json::json!({
            "function": function,
            "version": version,
            "stable": candidate,
            "previous-stable": previous,
            "candidate": config.versions.get("candidate"),
            "mode": config.mode,
        }))
    })
}
