//! What the commands share: the store flag, running a store call, JSON
//! output, reading policy and route config files.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use switchyard_config::{ConfigStore, StoredRoute};
use switchyard_core::{Engine, Policy, PolicyError, RouteConfig};

/// Where route configs and policies live.
#[derive(Debug, Args)]
pub(crate) struct StoreArg {
    /// The config store: dir:<path> (a local folder) or ssm:<prefix> (AWS SSM
    /// Parameter Store, e.g. ssm:/switchyard; the usual AWS environment
    /// applies: AWS_REGION, AWS_ENDPOINT_URL, credentials).
    #[arg(long, env = "SWITCHYARD_STORE")]
    pub(crate) store: String,
}

/// Runs one store operation on a single-threaded runtime.
pub(crate) fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn summary(r: &StoredRoute) -> serde_json::Value {
    serde_json::json!({
        "function": r.function,
        "version": r.version,
        "mode": r.config.mode,
        "versions": r.config.versions,
        "context": r.config.context,
        "policy": r.config.policy,
        "cases": r.config.cases,
        "modified": r.modified,
        "by": r.by,
        "note": r.note,
    })
}

/// A write command's precondition from a pipeline.
#[derive(Debug, Args)]
pub(crate) struct ExpectArg {
    /// Write only if the function's live version is N (the one the
    /// pipeline read and decided on); any other is a conflict, not an
    /// overwrite. Without it the version this command reads is the
    /// precondition: a write in between is a conflict either way.
    #[arg(long, value_name = "N")]
    pub(crate) expect_version: Option<u64>,
    /// Why: kept with the version (with the command's name) and shown by
    /// `history`, beside who wrote it and when.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
}

/// A `--context` value: a secret reference when it is one as JSON
/// (`{"$ssm":"/name"}`), else the literal.
pub(crate) fn context_value(v: &str) -> Result<switchyard_core::ContextValue> {
    if v.trim_start().starts_with("{\"$") {
        return serde_json::from_str(v).context("not a secret reference");
    }
    Ok(v.into())
}

/// Whether a context key names something secret.
fn secret_like(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN", "KEY"]
        .iter()
        .any(|w| key.contains(w))
}

/// Warns (stderr) of each context key that looks like a credential and
/// holds a literal: stored, it is readable by everyone who reads the store.
pub(crate) fn warn_literal_secrets(config: &RouteConfig) {
    for (q, values) in &config.context {
        for (k, v) in values {
            if secret_like(k) && v.secret().is_none() {
                eprintln!(
                    "warning: context key {k} of version {q} looks like a credential and holds a literal value, which the store keeps and `status`/`history` show; keep it in SSM as a SecureString (or in Secrets Manager) and reference it: \"{k}\": {{\"$ssm\": \"/<parameter>\"}}"
                );
            }
        }
    }
}

/// `major.minor.patch` as numbers, for comparing releases.
pub(crate) fn release(v: &str) -> Result<(u64, u64, u64)> {
    let mut parts = v
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok((a, b, c)),
        _ => anyhow::bail!("minimum host version {v:?} is not a release like 0.2.0"),
    }
}

/// Refuses a config whose schema needs newer hosts than the fleet runs:
/// `min_host` (--min-host-version), else the store's `min-host-version`
/// setting, else, on a store with no route yet, this CLI's release (recorded
/// as the store's setting: the hosts that will read a new store are as new
/// as the tools writing it), else 0.1.0. With `force`, a warning instead.
pub(crate) async fn fleet_reads(
    store: &dyn ConfigStore,
    config: &RouteConfig,
    min_host: Option<&str>,
    force: bool,
) -> Result<()> {
    let min_host = match min_host {
        Some(v) => v.to_owned(),
        None => match store.setting("min-host-version").await? {
            Some(v) => v,
            None => super::fleet::default_for_new_store(store).await?,
        },
    };
    let needs = switchyard_core::host_version_for_schema(config.schema);
    let min = release(&min_host)?;
    if release(&needs).is_ok_and(|n| n > min) {
        let uses = super::fleet::too_new_for(config, min);
        if force {
            eprintln!(
                "warning: this config needs hosts of switchyard {needs} or later (route-config schema {}: {uses}); older hosts keep the version they have",
                config.schema
            );
        } else {
            anyhow::bail!(
                "refusing to write: this config needs hosts of switchyard {needs} or later (route-config schema {}: {uses}), and the fleet's minimum host version is {min_host}: older hosts would keep the version they have. Upgrade the hosts, then `switchyard fleet --min-host-version {needs}` (or pass --min-host-version to publish), or --force",
                config.schema
            );
        }
    }
    Ok(())
}

/// Writes `config` as `function`'s next version, only over version `read`
/// (the one this command read; 0: none) and, with --expect-version, only
/// when that is the one the pipeline expects: no write in between is
/// silently overwritten.
pub(crate) async fn write_route(
    store: &dyn ConfigStore,
    function: &str,
    config: &RouteConfig,
    read: u64,
    expect: &ExpectArg,
    command: &str,
) -> Result<u64> {
    if let Some(n) = expect.expect_version
        && n != read
    {
        anyhow::bail!(
            "{function} is at version {read}, not {n} (--expect-version): it changed after the pipeline read it; read it again and retry"
        );
    }
    let note = match &expect.reason {
        Some(why) => format!("switchyard {command}: {why}"),
        None => format!("switchyard {command}"),
    };
    if let Some(root) = store.infrastructure_root() {
        // The store drops them itself, whoever writes; say so here.
        let dropped =
            switchyard_config::infrastructure::prune(&mut config.clone(), &root, function);
        if !dropped.is_empty() {
            eprintln!(
                "note: not keeping the per-version infrastructure reference(s) {}: only the candidate in synthetic mode keeps references under {root}/{function}/<candidate>/ (what they name goes at the next redeploy of its stack)",
                dropped.join(", ")
            );
        }
    }
    Ok(store.put_route_if(function, config, read, &note).await?)
}

/// The latest version number of `function` (0: none), readable or not.
pub(crate) async fn live_version(store: &dyn ConfigStore, function: &str) -> Result<u64> {
    match store.latest(&[function.to_owned()]).await?.pop() {
        Some(Ok(Some(r))) => Ok(r.version),
        Some(Ok(None)) | None => Ok(0),
        Some(Err(e)) => e.version().ok_or(e).map_err(Into::into),
    }
}

pub(crate) async fn latest(store: &dyn ConfigStore, function: &str) -> Result<StoredRoute> {
    store
        .latest(&[function.to_owned()])
        .await?
        .pop()
        .transpose()?
        .flatten()
        .with_context(|| {
            format!(
                "{function} has no route config in {}; publish one first",
                store.uri()
            )
        })
}

pub(crate) fn read_policy(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read policy file {}; build one with `switchyard policy build <crate-dir>`",
            path.display()
        )
    })
}

pub(crate) fn load_policy(engine: &Engine, path: &Path) -> Result<Arc<Policy>> {
    let bytes = read_policy(path)?;
    Policy::new(engine, &bytes, &path.display().to_string()).map_err(with_hint)
}

/// A policy error, with what to do about it on this command line when the
/// file is not a component at all.
pub(crate) fn with_hint(e: PolicyError) -> anyhow::Error {
    match e {
        PolicyError::NotWasm { .. } | PolicyError::CoreModule { .. } => anyhow::anyhow!(
            "{e}; build one from a policy folder with `switchyard policy build <policy-dir>`"
        ),
        other => other.into(),
    }
}

pub(crate) fn load_config(path: &Path) -> Result<RouteConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read route config {}", path.display()))?;
    RouteConfig::from_json(&text).with_context(|| format!("in {}", path.display()))
}
