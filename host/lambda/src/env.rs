//! Settings from environment variables, shared by the Lambda binaries.

use std::path::PathBuf;
use std::time::Duration;

/// A setting that is missing or malformed; the message names the variable
/// and what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// The environment as both Lambda embeddings read it: a blank value counts
/// as unset, lists are comma-separated. `F` looks a variable up (the
/// process's environment, or a test's).
pub(crate) struct Vars<F>(pub(crate) F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// `k`'s value, unless unset or blank.
    pub(crate) fn get(&self, k: &str) -> Option<String> {
        (self.0)(k).filter(|v| !v.trim().is_empty())
    }

    /// `k`'s comma-separated items, trimmed, blank ones skipped.
    pub(crate) fn list(&self, k: &str) -> Vec<String> {
        self.get(k)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `k` as a port number (1-65535), `default` when unset.
    pub(crate) fn port(&self, k: &str, default: u16) -> Result<u16, EnvError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| EnvError(format!("{k}: {v:?} is not a port number (1-65535)"))),
        }
    }

    /// The EMF namespace (`SWITCHYARD_EMF_NAMESPACE`, default `Switchyard`;
    /// `off`: no EMF lines).
    pub(crate) fn emf(&self) -> Result<Option<switchyard_proxy::Emf>, EnvError> {
        match self.get("SWITCHYARD_EMF_NAMESPACE") {
            Some(v) if v.trim().eq_ignore_ascii_case("off") => Ok(None),
            Some(v) => switchyard_proxy::Emf::new(v.trim())
                .map(Some)
                .map_err(|e| EnvError(format!("SWITCHYARD_EMF_NAMESPACE: {e}; or off"))),
            None => Ok(Some(
                switchyard_proxy::Emf::new(switchyard_proxy::DEFAULT_EMF_NAMESPACE)
                    .expect("the default namespace is valid"),
            )),
        }
    }

    /// What both Lambda embeddings read: `SWITCHYARD_STORE` (required),
    /// `SWITCHYARD_CACHE_DIR` (default `/tmp/switchyard-cache`) and
    /// `SWITCHYARD_POLL_INTERVAL` (default 10 s).
    pub(crate) fn store_settings(&self) -> Result<(String, PathBuf, Duration), EnvError> {
        let store = self.get("SWITCHYARD_STORE").ok_or_else(|| {
            EnvError(
                "SWITCHYARD_STORE is not set; set it to the config store, e.g. ssm:/switchyard"
                    .into(),
            )
        })?;
        let cache_dir = self
            .get("SWITCHYARD_CACHE_DIR")
            .unwrap_or_else(|| "/tmp/switchyard-cache".into())
            .into();
        let poll_interval = match self.get("SWITCHYARD_POLL_INTERVAL") {
            Some(raw) => switchyard_config::parse_poll_interval(&raw)
                .map_err(|e| EnvError(format!("SWITCHYARD_POLL_INTERVAL: {e}")))?,
            None => Duration::from_secs(10),
        };
        Ok((store, cache_dir, poll_interval))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_unset_and_lists_skip_blank_items() {
        let vars = Vars(fake_env(&[
            ("BLANK", "  "),
            ("LIST", " a, b ,,c,"),
            ("PORT", "7000"),
            ("ZERO", "0"),
        ]));
        assert_eq!(vars.get("BLANK"), None);
        assert_eq!(vars.get("UNSET"), None);
        assert_eq!(vars.list("LIST"), ["a", "b", "c"]);
        assert!(vars.list("BLANK").is_empty());
        assert_eq!(vars.port("PORT", 1), Ok(7000));
        assert_eq!(vars.port("BLANK", 9), Ok(9));
        assert!(vars.port("ZERO", 9).unwrap_err().0.contains("ZERO"));
        assert!(vars.port("LIST", 9).unwrap_err().0.contains("not a port"));
    }
}
