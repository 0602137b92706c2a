//! `switchyard fleet`: what the hosts reading a store run, as the operator
//! records it.

use anyhow::Result;
use clap::Args;

use super::shared::{StoreArg, block_on, print_json, release};

// `switchyard fleet [--min-host-version VERSION]`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Record that every host reading this store runs this release or
    /// later: `publish` then accepts configs that need it.
    #[arg(long, value_name = "VERSION")]
    min_host_version: Option<String>,
}

pub(crate) fn run(args: FleetArgs) -> Result<()> {
    block_on(async {
        let store = switchyard_config::open(&args.store.store).await?;
        if let Some(v) = &args.min_host_version {
            release(v)?;
            store.put_setting("min-host-version", v.trim()).await?;
            eprintln!(
                "{}: hosts run switchyard {} or later; publish accepts configs that need it",
                store.uri(),
                v.trim()
            );
        }
        let min = store.setting("min-host-version").await?;
        print_json(&serde_json::json!({
            "store": store.uri(),
            "min-host-version": min.as_deref().unwrap_or("0.1.0"),
            "set": min.is_some(),
            "this-host": env!("CARGO_PKG_VERSION"),
            "this-host-route-schema": switchyard_core::ROUTE_SCHEMA,
        }))
    })
}
