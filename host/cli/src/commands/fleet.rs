//! `switchyard fleet`: what the hosts reading a store run, as the operator
//! records it.

use anyhow::Result;
use clap::Args;
use switchyard_config::ConfigStore;
use switchyard_core::RouteConfig;

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
    /// Rebuild the fleet snapshot from the store and write it (a store URI
    /// with snapshot=s3://...): repairs one a writer left behind, e.g. on a
    /// schedule. Without it, `fleet` reports whether the snapshot is behind.
    #[arg(long)]
    sync_snapshot: bool,
}

pub(crate) fn run(args: FleetArgs) -> Result<()> {
    block_on(async {
        let snapshotted = switchyard_config::open_snapshotted(&args.store.store).await?;
        if args.sync_snapshot && snapshotted.is_none() {
            anyhow::bail!(
                "--sync-snapshot: the store {} names no snapshot; add snapshot=s3://<bucket>/<key> to its URI (docs/stores.md)",
                args.store.store
            );
        }
        let store: std::sync::Arc<dyn ConfigStore> = match &snapshotted {
            Some(s) => s.clone(),
            None => switchyard_config::open(&args.store.store).await?,
        };
        if let (true, Some(s)) = (args.sync_snapshot, &snapshotted) {
            let generation = s.publish().await?;
            eprintln!(
                "{}: snapshot rebuilt from the store and written (generation {generation})",
                store.uri()
            );
        }
        let snapshot = match &snapshotted {
            Some(s) => {
                let status = s.status().await?;
                if !status.behind.is_empty() || status.refused.is_some() || !status.present {
                    eprintln!(
                        "{}: the snapshot is {}; hosts reach the store's versions at their next audit; `switchyard fleet --sync-snapshot` repairs it",
                        status.url,
                        if !status.present {
                            "missing".to_owned()
                        } else if let Some(why) = &status.refused {
                            format!("refused by hosts ({why})")
                        } else {
                            format!("behind the store for {} function(s)", status.behind.len())
                        }
                    );
                }
                serde_json::to_value(status)?
            }
            None => serde_json::Value::Null,
        };
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
            "snapshot": snapshot,
        }))
    })
}

/// The fleet minimum of a store without a `min-host-version` setting: on a
/// store with no route yet, this CLI's release, recorded (and said on
/// stderr), so the first publish to a new store may use what this release
/// has; on a store that has routes, 0.1.0 (hosts of any release may be
/// reading it).
pub(crate) async fn default_for_new_store(store: &dyn ConfigStore) -> Result<String> {
    let routes = match store.functions().await {
        Ok(functions) => functions.len(),
        // A `dir:` store's folder is made by its first write.
        Err(e) => match store.uri().strip_prefix("dir:") {
            Some(root) if !std::path::Path::new(root).exists() => 0,
            _ => return Err(e.into()),
        },
    };
    if routes > 0 {
        return Ok("0.1.0".to_owned());
    }
    let this = this_release();
    store.put_setting("min-host-version", &this).await?;
    eprintln!(
        "{}: no route yet, so its fleet minimum host version is now {this}, this CLI's release (hosts reading this store must run switchyard {this} or later; `switchyard fleet --min-host-version <VERSION>` changes it)",
        store.uri()
    );
    Ok(this)
}

/// This build's release, `major.minor.patch` (no pre-release tag).
fn this_release() -> String {
    format!(
        "{}.{}.{}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    )
}

/// What `config` uses that hosts of release `min` cannot read, by name
/// (e.g. "guard, fallback"); the declared schema when it uses nothing newer.
pub(crate) fn too_new_for(config: &RouteConfig, min: (u64, u64, u64)) -> String {
    let uses: Vec<&str> = config
        .schema_features()
        .into_iter()
        .filter(|&(schema, _)| {
            release(&switchyard_core::host_version_for_schema(schema)).is_ok_and(|n| n > min)
        })
        .map(|(_, name)| name)
        .collect();
    if uses.is_empty() {
        "declared in its \"schema\" field".to_owned()
    } else {
        uses.join(", ")
    }
}
