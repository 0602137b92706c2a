//! Settings from environment variables, shared by the Lambda binaries.

use std::path::PathBuf;
use std::time::Duration;

/// A setting that is missing or malformed; the message names the variable
/// and what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// What both Lambda embeddings read: `SWITCHYARD_STORE` (required),
/// `SWITCHYARD_CACHE_DIR` (default `/tmp/switchyard-cache`) and
/// `SWITCHYARD_POLL_INTERVAL` (default 10 s). Blank counts as unset.
pub(crate) fn store_settings(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<(String, PathBuf, Duration), EnvError> {
    let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    let store = set("SWITCHYARD_STORE").ok_or_else(|| {
        EnvError(
            "SWITCHYARD_STORE is not set; set it to the config store, e.g. ssm:/switchyard".into(),
        )
    })?;
    let cache_dir = set("SWITCHYARD_CACHE_DIR")
        .unwrap_or_else(|| "/tmp/switchyard-cache".into())
        .into();
    let poll_interval = match set("SWITCHYARD_POLL_INTERVAL") {
        Some(raw) => switchyard_config::parse_poll_interval(&raw)
            .map_err(|e| EnvError(format!("SWITCHYARD_POLL_INTERVAL: {e}")))?,
        None => Duration::from_secs(10),
    };
    Ok((store, cache_dir, poll_interval))
}

/// Logs to stderr (CloudWatch) without colours; the filter comes from
/// `SWITCHYARD_LOG` (`tracing` env-filter syntax), by default
/// `warn,switchyard=info`. For the Lambda binaries (it installs the
/// process's subscriber).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            switchyard_config::log_filter(std::env::var("SWITCHYARD_LOG").ok().as_deref()),
        ))
        .init();
}

/// An environment of `pairs`, for tests of the settings.
#[cfg(test)]
pub(crate) fn fake_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}
