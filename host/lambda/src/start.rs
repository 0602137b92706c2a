//! How a Lambda embedding starts: the store, the watcher, the proxy's
//! routes, and the shared bootstrap (cache first, then one poll within
//! Lambda's init budget, then background polling).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::{Bootstrap, FirstPoll, ReportFormat, StoreError, WatchConfig, Watcher};
use switchyard_core::{Engine, EngineConfig, EngineError};
use switchyard_proxy::ProxyConfig;

/// How long a cold start waits for the store before serving without it
/// (Lambda allows 10 s for init).
pub const INIT_POLL_TIMEOUT: Duration = Duration::from_secs(8);

/// A Lambda embedding that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store URI is not usable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy engine could not be made.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The span exporters could not be made.
    #[error("traces: {0}")]
    Traces(String),
    /// A key in `SWITCHYARD_TRUST_KEYS` is not usable.
    #[error("SWITCHYARD_TRUST_KEYS: {0}")]
    TrustKey(#[from] switchyard_config::KeyError),
}

/// Opens the store and the policies of `functions`, restored from the
/// precompiled cache in `cache_dir` first (a warm start, or a store that is
/// down), else one poll of the store within [`INIT_POLL_TIMEOUT`]; then
/// polled in the background, never in an invocation's path. Returns the
/// watcher, the proxy over it and the poller. Progress and
/// problems go to stderr (CloudWatch) as JSON lines.
pub(crate) async fn start(
    store_uri: &str,
    functions: Vec<String>,
    cache_dir: &Path,
    poll_interval: Duration,
    config: ProxyConfig,
) -> Result<
    (
        Arc<Watcher>,
        Arc<switchyard_proxy::Proxy>,
        tokio::task::JoinHandle<()>,
    ),
    StartError,
> {
    let store = switchyard_config::open(store_uri).await?;
    let trust = switchyard_config::TrustKeys::from_env()?;
    let mut config = config;
    if config.traces.is_none() {
        // The standard OTEL_EXPORTER_OTLP_* variables for production spans,
        // SWITCHYARD_OTLP_SYNTHETIC_ENDPOINT for synthetic ones. Made off
        // the runtime: the exporters' HTTP client blocks.
        let traces = switchyard_proxy::TraceConfig {
            endpoint: None,
            from_env: true,
            synthetic_endpoint: std::env::var("SWITCHYARD_OTLP_SYNTHETIC_ENDPOINT")
                .ok()
                .filter(|e| !e.is_empty()),
        };
        config.traces = tokio::task::spawn_blocking(move || switchyard_proxy::Traces::new(&traces))
            .await
            .map_err(|e| StartError::Traces(e.to_string()))?
            .map_err(StartError::Traces)?;
    }
    let engine = Engine::with_config(EngineConfig {
        // One invocation at a time per execution environment.
        max_instances: 100,
        ..Default::default()
    })?;
    let host = switchyard_proxy::start(
        store,
        engine,
        WatchConfig {
            functions,
            interval: poll_interval,
            cache_dir: Some(cache_dir.to_owned()),
            cache_key: switchyard_config::CacheKey::from_env(),
            trust,
            ..Default::default()
        },
        config,
        Bootstrap {
            first_poll: FirstPoll::WhenNothingRestored,
            timeout: INIT_POLL_TIMEOUT,
        },
    )
    .await;
    for line in host.started.report(ReportFormat::Json) {
        eprintln!("{line}");
    }
    Ok((host.watcher, host.proxy, host.started.poller))
}
