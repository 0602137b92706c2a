//! The proxy's shared state, and a host started the way every front end
//! starts: a watcher over the store, a proxy over its policies.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use switchyard_config::{Active, Bootstrap, PolicySet, Started, WatchConfig, Watcher, bootstrap};
use switchyard_dispatch::{Clients, DispatchError, Dispatcher, RouteDispatch};

use crate::ProxyConfig;
use crate::handles::Handles;
use crate::{guard, shadow};

/// Shared state of the proxy.
pub struct Proxy {
    pub(crate) policies: Arc<PolicySet>,
    pub(crate) config: ProxyConfig,
    pub(crate) clients: Arc<Clients>,
    /// Metric handles, one set per serving thread.
    pub(crate) handles: Vec<Mutex<Handles>>,
    /// The route guards' state, per function.
    pub(crate) guards: guard::Guards,
    /// Shadow comparisons, per function.
    pub(crate) shadows: Arc<shadow::Reports>,
    /// The request body bytes all requests may hold at once.
    pub(crate) body_budget: crate::hygiene::BodyBudget,
    /// Slots for the background calls of `Event` invocations the proxy
    /// makes itself (as many as mirror slots).
    pub(crate) events: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .finish()
    }
}

impl Proxy {
    /// A proxy serving `policies`, with its own dispatch clients.
    /// Without a socket budget of their own (`clients.max_upstream_sockets`),
    /// the clients get what the open-file limit leaves beside the client
    /// connections ([`default_upstream_sockets`](crate::default_upstream_sockets)).
    pub fn new(policies: Arc<PolicySet>, mut config: ProxyConfig) -> Arc<Self> {
        if config.clients.max_upstream_sockets.is_none() {
            config.clients.max_upstream_sockets = Some(crate::default_upstream_sockets(
                config.connections.max_connections,
            ));
        }
        let clients = Clients::new(config.clients.clone());
        Arc::new(Proxy {
            policies,
            clients,
            handles: (0..config.clients.workers.max(1))
                .map(|_| Mutex::new(Handles::default()))
                .collect(),
            guards: guard::Guards::default(),
            shadows: Arc::default(),
            body_budget: crate::hygiene::BodyBudget::new(config.body_memory),
            events: Arc::new(tokio::sync::Semaphore::new(
                config.clients.mirror_slots.max(1),
            )),
            config,
        })
    }

    /// The watcher hook that parses each route version's `dispatch` block
    /// once, before it goes live, with this proxy's clients (see
    /// `Watcher::set_prepare`). Without it the proxy parses the block per
    /// request. A watcher takes one hook: proxies sharing a watcher share
    /// the first one's clients (timeout, mirror slots, Lambda client).
    ///
    /// It also creates, at 0, the series of the rare events a function with
    /// that route can have (a guard trip, a refused version, ...: the
    /// catalogue's `zero_for`), so Prometheus sees their first event.
    pub fn prepare_hook(&self) -> switchyard_config::Prepare {
        let dispatch = switchyard_dispatch::prepare(self.clients.clone());
        Arc::new(move |route: &switchyard_core::Route| {
            for metric in crate::catalogue::all() {
                if metric.zero_for.is_some_and(|when| when(route.config())) {
                    metric.zero(Some(route.function()));
                }
            }
            dispatch(route)
        })
    }

    /// The calling serving thread's metric handles (its own lock: never
    /// contended in a thread-per-core server).
    pub(crate) fn handles(&self) -> MutexGuard<'_, Handles> {
        let slot = &self.handles[switchyard_dispatch::worker() % self.handles.len()];
        slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dispatcher of `active`'s version.
    pub(crate) fn dispatcher(&self, active: &Active) -> Result<Arc<dyn Dispatcher>, DispatchError> {
        if let Some(RouteDispatch(d)) = active.prepared::<RouteDispatch>() {
            return Ok(d.clone());
        }
        let spec = active.route.config().dispatch.as_ref().ok_or_else(|| {
            DispatchError::internal(
                "NoDispatch",
                format!(
                    "{}: {}",
                    active.stored.function,
                    switchyard_dispatch::SpecError::Missing
                ),
            )
        })?;
        switchyard_dispatch::for_route(spec, &self.clients).map_err(|e| {
            DispatchError::internal("BadDispatch", format!("{}: {e}", active.stored.function))
        })
    }
}

/// A running host: the watcher keeping the policies current, and the proxy
/// serving them.
#[derive(Debug)]
pub struct Host {
    /// Keeps the policies current.
    pub watcher: Arc<Watcher>,
    /// Serves them: [`router`](crate::router) or [`serve`](crate::serve) it.
    pub proxy: Arc<Proxy>,
    /// What start-up did (restored, first poll, the poller).
    pub started: Started,
}

/// Starts a host the way every front end starts (`switchyard serve`, the
/// router function, the mesh extension): a watcher over `store`, a proxy
/// over its policies whose dispatchers are parsed once per route version
/// (the watcher's prepare hook), then the shared bootstrap (cache, first
/// poll, background polling). Call it on a Tokio runtime.
pub async fn start(
    store: Arc<dyn switchyard_config::ConfigStore>,
    engine: switchyard_core::Engine,
    watch: WatchConfig,
    config: ProxyConfig,
    how: Bootstrap,
) -> Host {
    let watcher = Arc::new(Watcher::new(store, engine, watch));
    let proxy = Proxy::new(watcher.policies(), config);
    watcher.set_prepare(proxy.prepare_hook());
    let started = bootstrap(&watcher, how).await;
    Host {
        watcher,
        proxy,
        started,
    }
}

/// Installs the process-wide Prometheus recorder (with a thread that folds
/// histogram samples in every 5 s, so memory does not grow between
/// scrapes), describes every metric of the catalogue (so each family has
/// its `# HELP`) and returns its handle. For binaries: call it once,
/// before anything records, and pass `handle.render()` as
/// [`ProxyConfig::metrics`]. When another recorder is installed already,
/// the handle renders nothing.
pub fn install_metrics_recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        // The request duration is a histogram with buckets (the decision's
        // stays a summary, rendered per host).
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                crate::catalogue::REQUEST_SECONDS.name.to_owned(),
            ),
            crate::catalogue::REQUEST_SECONDS_BUCKETS,
        )
        .expect("the request duration's buckets are not empty")
        .build_recorder();
    let handle = recorder.handle();
    let upkeep = handle.clone();
    let _ = std::thread::Builder::new()
        .name("switchyard-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
    if metrics::set_global_recorder(recorder).is_ok() {
        for metric in crate::catalogue::all() {
            metric.describe();
            // The series whose labels are all known (store errors by kind,
            // signature refusals by why, ...) exist at 0 from the start.
            metric.zero(None);
        }
    }
    handle
}
