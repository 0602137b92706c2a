//! Switchyard's front ends: requests in, the policy decides, the dispatch
//! layer reaches the chosen version. One shared step,
//! [`dispatch_decided`](Proxy), serves every front end.
//!
//! Two listeners, so what reveals config never shares a port with traffic:
//!
//! The public one ([`router`], served by [`serve`]):
//! * `/{function}/{rest...}`: decided by the function's policy and sent to
//!   the chosen version (the route config's `dispatch`).
//! * `POST /2015-03-31/functions/{name}/invocations`: the Lambda Invoke API,
//!   so unchanged AWS SDK clients pointed at the proxy are routed too.
//! * `GET /healthz`: `{"ready": bool}`, ready once every watched function
//!   has a policy.
//!
//! The admin one ([`admin_router`], served by [`serve_admin`]; loopback by
//! default, optionally behind a bearer token, [`AdminConfig`]):
//! * `POST /v1/decide`: the decision for a request JSON, for any language,
//!   its context values hidden unless asked for and allowed.
//! * `GET /healthz`: readiness with the functions routed and missing.
//! * `GET /metrics`: Prometheus text format, rendered by what the binary
//!   injects ([`ProxyConfig::metrics`]).
//!
//! The mesh extension serves both on one loopback port for its own
//! function ([`mesh_router`]). HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge) are served on each listener, within [`ConnectionLimits`]. The
//! routers are public so tests drive them without sockets.
#![deny(missing_docs)]
#![deny(unreachable_pub)]

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use switchyard_config::{Active, Bootstrap, PolicySet, Started, WatchConfig, Watcher, bootstrap};
use switchyard_core::{
    DEFAULT_SYNTHETIC_HEADER, Decision, Request, RequestJson, Route, TARGET_HEADER, TRAFFIC_HEADER,
    Traffic,
};
use switchyard_dispatch::{
    Call, Clients, ClientsConfig, DispatchError, Dispatcher, HttpCall, InvokeCall, RequestContext,
    RouteDispatch, Target, custom_fields, is_tag, split_function_name,
};

mod activity;
mod capture;
mod guard;
mod handles;
mod server;
mod shadow;
mod traces;

use handles::Handles;

pub use capture::{Capture, CaptureConfig};
pub use server::{
    ConnectionLimits, Handler, bind_reuseport, default_max_connections, raise_open_file_limit,
    router_handler, serve_router, serve_threads,
};
pub use traces::{TraceConfig, Traces};

/// Limits and timeouts of the proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Largest request body accepted (413 above). Default 6 MiB, Lambda's
    /// synchronous payload limit.
    pub max_body: usize,
    /// Largest total size of request header names and values (431 above).
    pub max_header_bytes: usize,
    /// How long an upstream may take (504 after).
    pub upstream_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse.
    pub upstream_idle_timeout: Duration,
    /// How long a request body may stall (no byte arriving) before the
    /// request is answered `408` and its connection closed.
    pub body_timeout: Duration,
    /// Timeouts and the connection cap of the listeners.
    pub connections: ConnectionLimits,
    /// Who may use the admin listener and what it reveals.
    pub admin: AdminConfig,
    /// Mirror copies in flight at once; more are dropped and counted.
    pub mirror_slots: usize,
    /// Serving threads with their own upstream connections (see
    /// [`serve_public_threads`]); 1 for one shared pool.
    pub workers: usize,
    /// Functions that must have a policy for `/healthz` to say ready.
    pub expected_functions: Vec<String>,
    /// Log one in this many decision lines, counted per serving thread
    /// (each logs its first). 1 logs every decision; 0 logs none. (Metrics
    /// count every request regardless.)
    pub decision_log_sample: u64,
    /// Skip the policies: every request goes to its function's `stable`
    /// version as production traffic (an operator's kill switch, and the
    /// baseline that isolates a policy's cost under load).
    pub bypass_policies: bool,
    /// The Lambda client for `lambda` dispatch; by default one is made from
    /// the environment (like any AWS SDK client) on first use.
    pub lambda_client: Option<aws_sdk_lambda::Client>,
    /// The Step Functions client; by default one is made from the
    /// environment on first use.
    pub sfn_client: Option<aws_sdk_sfn::Client>,
    /// How long a secret a route's context refers to is used before it is
    /// read again (`serve --secret-ttl`; default 5 minutes).
    pub secret_ttl: Duration,
    /// A sample of the decided requests written for `switchyard replay`
    /// (`serve --capture`).
    pub capture: Option<Arc<Capture>>,
    /// The traffic class the calls inherit from whoever makes them (the
    /// mesh extension: the invocation in progress). While it is synthetic,
    /// every call is decided as a synthetic one and stays synthetic
    /// whatever the policy returns.
    pub inherited_traffic: Option<Arc<dyn InheritedTraffic>>,
    /// Renders `/metrics` (the binary installs the recorder and passes its
    /// handle's `render`); without it `/metrics` is empty.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Span exporters (`serve --otlp-endpoint`, `--otlp-synthetic-endpoint`);
    /// without them no span is recorded, and a caller's trace context is
    /// still continued to the target with the traffic class marked.
    pub traces: Option<Arc<Traces>>,
    /// Where a tripped `guard` writes its rollback (`serve
    /// --guard-writes`); without it, a host only stops sending to the
    /// candidate itself.
    pub guard_store: Option<Arc<dyn switchyard_config::ConfigStore>>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("max_body", &self.max_body)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("upstream_idle_timeout", &self.upstream_idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("connections", &self.connections)
            .field("admin", &self.admin)
            .field("expected_functions", &self.expected_functions)
            .field("bypass_policies", &self.bypass_policies)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body: 6 << 20,
            max_header_bytes: 32 << 10,
            upstream_timeout: Duration::from_secs(30),
            upstream_idle_timeout: Duration::from_secs(90),
            body_timeout: Duration::from_secs(30),
            connections: ConnectionLimits::default(),
            admin: AdminConfig::default(),
            mirror_slots: 64,
            workers: 1,
            expected_functions: Vec::new(),
            decision_log_sample: 1,
            bypass_policies: false,
            lambda_client: None,
            sfn_client: None,
            secret_ttl: Duration::from_secs(300),
            capture: None,
            inherited_traffic: None,
            metrics: None,
            traces: None,
            guard_store: None,
        }
    }
}

/// Who may use the admin listener, and what it reveals.
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// When set, every admin request must carry `Authorization: Bearer
    /// <token>` (401 otherwise).
    pub token: Option<String>,
    /// Whether the decide API may show a decision's context values (they
    /// may be credentials) to a caller that asks with `?context=show`.
    /// Without it, or without the ask, values are replaced by `"(hidden)"`.
    pub reveal_context: bool,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("reveal_context", &self.reveal_context)
            .finish()
    }
}

/// Where the calls through the proxy come from, when that decides their
/// class: the hook through which an embedding (the mesh extension) makes a
/// synthetic invocation's outgoing calls synthetic. The proxy knows nothing
/// of how the class is learnt.
pub trait InheritedTraffic: Send + Sync {
    /// The class calls made now inherit.
    fn traffic(&self) -> Traffic;
}

/// The header QA's synthetic requests carry for `route` (its
/// `synthetic-header` flag, by default `x-switchyard-synthetic`).
fn synthetic_marker(route: &Route) -> String {
    route
        .config()
        .flags
        .get("synthetic-header")
        .map(|h| h.to_ascii_lowercase())
        .unwrap_or_else(|| DEFAULT_SYNTHETIC_HEADER.to_owned())
}

/// `req` marked as a synthetic request: the markers first, so they win
/// over anything the caller sent under the same names.
fn marked_synthetic(req: &Request, route: &Route) -> Request {
    let markers = [
        (TRAFFIC_HEADER.to_owned(), "synthetic".to_owned()),
        (synthetic_marker(route), "true".to_owned()),
    ];
    Request::new(
        req.function.clone(),
        req.method.clone(),
        req.path.clone(),
        markers.into_iter().chain(req.headers()),
    )
}

/// Shared state of the proxy.
pub struct Proxy {
    policies: Arc<PolicySet>,
    config: ProxyConfig,
    clients: Arc<Clients>,
    /// Metric handles, one set per serving thread.
    handles: Vec<std::sync::Mutex<Handles>>,
    /// The route guards' state, per function.
    guards: guard::Guards,
    /// Shadow comparisons, per function.
    shadows: Arc<shadow::Reports>,
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
    pub fn new(policies: Arc<PolicySet>, config: ProxyConfig) -> Arc<Self> {
        let clients = Clients::new(ClientsConfig {
            upstream_timeout: config.upstream_timeout,
            upstream_idle_timeout: config.upstream_idle_timeout,
            mirror_slots: config.mirror_slots,
            lambda_client: config.lambda_client.clone(),
            sfn_client: config.sfn_client.clone(),
            workers: config.workers,
            secret_ttl: config.secret_ttl,
        });
        Arc::new(Proxy {
            policies,
            clients,
            handles: (0..config.workers.max(1))
                .map(|_| std::sync::Mutex::new(Handles::default()))
                .collect(),
            guards: guard::Guards::default(),
            shadows: Arc::default(),
            config,
        })
    }

    /// The watcher hook that parses each route version's `dispatch` block
    /// once, before it goes live, with this proxy's clients (see
    /// `Watcher::set_prepare`). Without it the proxy parses the block per
    /// request. A watcher takes one hook: proxies sharing a watcher share
    /// the first one's clients (timeout, mirror slots, Lambda client).
    pub fn prepare_hook(&self) -> switchyard_config::Prepare {
        switchyard_dispatch::prepare(self.clients.clone())
    }

    /// The calling serving thread's metric handles (its own lock: never
    /// contended in a thread-per-core server).
    fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        let slot = &self.handles[switchyard_dispatch::worker() % self.handles.len()];
        slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dispatcher of `active`'s version.
    fn dispatcher(&self, active: &Active) -> Result<Arc<dyn Dispatcher>, DispatchError> {
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
    /// Serves them: [`router`] or [`serve`] it.
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
/// scrapes) and returns its handle. For binaries: call it once, before
/// anything records, and pass `handle.render()` as [`ProxyConfig::metrics`].
/// When another recorder is installed already, the handle renders nothing.
pub fn install_metrics_recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
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
    let _ = metrics::set_global_recorder(recorder);
    handle
}

/// The public listener's routes: the functions, the Invoke API and a
/// bare `/healthz`, all served by [`public`]. Every answer to a request for
/// a function (path routing, the Invoke API, and a path that routes
/// nowhere), errors included, is counted in `switchyard_requests_total`;
/// `/healthz` is not.
pub fn router(proxy: Arc<Proxy>) -> Router {
    front_routes().with_state(proxy)
}

/// Every request to [`public`]; a router that adds its own `/healthz` (the
/// mesh's) answers that one first.
fn front_routes() -> Router<Arc<Proxy>> {
    Router::new().fallback(|State(p): State<Arc<Proxy>>, req: AxumRequest| public(p, req))
}

/// The Invoke API's path prefix and suffix:
/// `/2015-03-31/functions/{name}/invocations`.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const INVOKE_SUFFIX: &str = "/invocations";

/// The public listener's requests, routed by hand: the hot path, with no
/// route table to search and no extractor allocations.
///
/// * `GET /healthz`: readiness;
/// * `POST /2015-03-31/functions/{name}/invocations`: the Invoke API;
/// * `/{function}` and `/{function}/{rest...}`: path routing;
/// * anything else: 404 naming the two shapes.
pub async fn public(p: Arc<Proxy>, req: AxumRequest) -> Response {
    let path = req.uri().path();
    if path == "/healthz" {
        return if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
            ready(&p)
        } else {
            method_not_allowed("GET, HEAD")
        };
    }
    // `forward` and `invoke_api` count their own answers (labelled with
    // the function and decision); the rest are counted here, undecided.
    if let Some(name) = path
        .strip_prefix(INVOKE_PREFIX)
        .and_then(|rest| rest.strip_suffix(INVOKE_SUFFIX))
        .filter(|name| !name.is_empty() && !name.contains('/'))
    {
        if req.method() != http::Method::POST {
            return undecided(&p, method_not_allowed("POST"));
        }
        return match decoded_segment(name) {
            Some(name) => {
                let name = name.into_owned();
                invoke_api(&p, &name, req).await
            }
            None => undecided(&p, bad_segment()),
        };
    }
    // `/{function}` or `/{function}/{rest...}`, the function non-empty.
    let tail = &path[1..];
    let segment = tail.split('/').next().unwrap_or("");
    if segment.is_empty() {
        return undecided(&p, no_route());
    }
    let Some(function) = decoded_segment(segment) else {
        return undecided(&p, bad_segment());
    };
    // Forward the rest as the client sent it (still percent-encoded):
    // decoding would turn `%2F` into a separator.
    let rest = match &tail[segment.len()..] {
        "" => "/".to_owned(),
        rest => rest.to_owned(),
    };
    let function = function.into_owned();
    forward(&p, &function, rest, req).await
}

/// A path segment percent-decoded; `None` when that is not UTF-8.
fn decoded_segment(segment: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

fn bad_segment() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "a path segment percent-decodes to invalid UTF-8",
    )
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this path takes {allow}"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn admin_routes() -> Router<Arc<Proxy>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/v1/decide", post(decide_api))
        .route("/v1/shadow/{function}", get(shadow_report))
        .route("/v1/mesh", get(mesh_state))
}

/// The live view's page and script: static, compiled in, no data (the
/// page reads `/v1/mesh`, which the admin token guards).
fn ui_routes() -> Router<Arc<Proxy>> {
    let page = |body: &'static str, kind: &'static str| {
        move || async move {
            (
                [
                    (http::header::CONTENT_TYPE, kind),
                    (http::header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        }
    };
    Router::new()
        .route(
            "/ui",
            get(page(
                include_str!("ui/index.html"),
                "text/html; charset=utf-8",
            )),
        )
        .route(
            "/ui/app.js",
            get(page(
                include_str!("ui/app.js"),
                "text/javascript; charset=utf-8",
            )),
        )
}

/// A series' (requests, errors) per bucket, oldest first.
type Buckets = (Vec<u64>, Vec<u64>);

/// The mesh as the live view shows it: every function with its live route
/// version, and its requests and errors per target and traffic class over
/// the last 10 minutes (60 ten-second buckets, oldest first), fail-safes,
/// guard trips and shadow comparisons.
async fn mesh_state(State(p): State<Arc<Proxy>>) -> Response {
    use activity::{BUCKET_SECONDS, BUCKETS};
    let now = activity::bucket_now();
    let mut functions = Vec::new();
    for function in p.policies.functions() {
        let Some(active) = p.policies.get(&function) else {
            continue;
        };
        // target -> [production, synthetic]
        let mut merged: std::collections::BTreeMap<String, [Buckets; 2]> = Default::default();
        let mut fail_safes = 0;
        for slot in &p.handles {
            let h = slot.lock().unwrap_or_else(|e| e.into_inner());
            fail_safes += h.activity.fail_safes.get(&function).copied().unwrap_or(0);
            for (target, rings) in h.activity.of(&function).into_iter().flatten() {
                let series = merged.entry(target.clone()).or_insert_with(|| {
                    std::array::from_fn(|_| (vec![0; BUCKETS], vec![0; BUCKETS]))
                });
                for (ring, (req, err)) in rings.iter().zip(series.iter_mut()) {
                    ring.merge_into(now, req, err);
                }
            }
        }
        let mut series = Vec::new();
        for (target, classes) in merged {
            for ((requests, errors), traffic) in
                classes.into_iter().zip(["production", "synthetic"])
            {
                let total: u64 = requests.iter().sum();
                if total == 0 {
                    continue;
                }
                series.push(json!({
                    "target": target,
                    "traffic": traffic,
                    "total": total,
                    "errors-total": errors.iter().sum::<u64>(),
                    "requests": requests,
                    "errors": errors,
                }));
            }
        }
        let guard = p.guards.of(&function, &active);
        let config = active.route.config();
        let shadow = p.shadows.report(&function);
        functions.push(json!({
            "function": function,
            "mode": config.mode,
            "versions": config.versions,
            "policy": active.policy.digest(),
            "route-version": active.stored.version,
            "modified": active.stored.modified,
            "fail-safes": fail_safes,
            "guard": guard.map(|g| json!({
                "candidate": g.candidate,
                "production": g.tripped(Traffic::Production),
                "synthetic": g.tripped(Traffic::Synthetic),
            })),
            "shadow": {"compared": shadow["compared"], "differed": shadow["differed"]},
            "series": series,
        }));
    }
    axum::Json(json!({
        "bucket-seconds": BUCKET_SECONDS,
        "buckets": BUCKETS,
        "now": now * BUCKET_SECONDS,
        "functions": functions,
    }))
    .into_response()
}

/// The shadow comparisons of a function: counts and the latest
/// differences (values redacted unless the route reveals them).
async fn shadow_report(
    State(p): State<Arc<Proxy>>,
    axum::extract::Path(function): axum::extract::Path<String>,
) -> Response {
    if p.policies.get(&function).is_none() {
        return unknown_function(&function);
    }
    axum::Json(p.shadows.report(&function)).into_response()
}

/// The admin listener's routes: the decide API (counted in
/// `switchyard_decision_seconds`), `/healthz` with the functions, and
/// `/metrics`; behind the bearer token when [`AdminConfig::token`] is set.
pub fn admin_router(proxy: Arc<Proxy>) -> Router {
    let auth = middleware::from_fn_with_state(proxy.clone(), authorize);
    admin_routes()
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "the admin listener serves GET /ui (the live view), POST /v1/decide, GET /v1/mesh, GET /v1/shadow/{function}, GET /healthz and GET /metrics; functions are routed on the public listener",
            )
        })
        .layer(auth)
        .merge(ui_routes())
        .with_state(proxy)
}

/// Both, on one listener, with context values shown: the mesh extension's
/// loopback API, which only its own function reaches.
pub fn mesh_router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .merge(admin_routes())
        .merge(front_routes())
        .layer(axum::Extension(ShowContext))
        .with_state(proxy)
}

/// Marks a router whose decide API shows context values unasked.
#[derive(Debug, Clone, Copy)]
struct ShowContext;

/// 401 unless the request carries the admin token (when one is set).
async fn authorize(State(p): State<Arc<Proxy>>, req: AxumRequest, next: Next) -> Response {
    if let Some(token) = &p.config.admin.token {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "the admin listener needs Authorization: Bearer <token> (the token serve was given with --admin-token-file)",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts a front-end answer under its labels and returns it. One that was
/// never decided (a 400, 404, 413, 431) is counted with `target="none"`,
/// `traffic="none"` ([`for_function`]), and `function="-"` when the
/// function is not one this proxy routes ([`undecided`]; so callers cannot
/// mint label values).
fn counted(
    p: &Proxy,
    response: Response,
    function: &str,
    target: &str,
    traffic: &'static str,
) -> Response {
    let status = response.status().as_u16();
    let mut handles = p.handles();
    handles
        .request(function, target, traffic, status)
        .increment(1);
    handles
        .activity
        .record(function, target, traffic, status >= 500);
    response
}

/// Counts an answer that names no routed function.
fn undecided(p: &Proxy, response: Response) -> Response {
    counted(p, response, "-", "none", "none")
}

/// Counts an undecided answer of a routed function under the function.
fn for_function(p: &Proxy, response: Response, function: &str) -> Response {
    counted(p, response, function, "none", "none")
}

fn no_route() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no route: send /{function}/... or POST /2015-03-31/functions/{name}/invocations",
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": message.into(), "status": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

/// The public readiness probe: whether every expected function has a
/// policy, and nothing about which.
fn ready(p: &Proxy) -> Response {
    let live = p.policies.functions();
    let ready = !live.is_empty() && p.config.expected_functions.iter().all(|f| live.contains(f));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"ready": ready}))).into_response()
}

async fn healthz(State(p): State<Arc<Proxy>>) -> Response {
    let live = p.policies.functions();
    let missing: Vec<&String> = p
        .config
        .expected_functions
        .iter()
        .filter(|f| !live.contains(f))
        .collect();
    if missing.is_empty() && !live.is_empty() {
        (
            StatusCode::OK,
            axum::Json(json!({"ready": true, "functions": live})),
        )
            .into_response()
    } else {
        let body = json!({"ready": false, "functions": live, "missing": missing});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn render_metrics(State(p): State<Arc<Proxy>>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    let text = p
        .config
        .metrics
        .as_ref()
        .map(|render| render())
        .unwrap_or_default();
    (headers, text).into_response()
}

/// Decides with the function's live policy, recording the decision.
/// `shown`: the caller shows the decision (the decide API), so its reason is
/// wanted even when no log line is.
fn decide(p: &Proxy, active: &Active, req: &Arc<Request>, shown: bool) -> Decision {
    let inherited = p
        .config
        .inherited_traffic
        .as_ref()
        .is_some_and(|t| t.traffic() == Traffic::Synthetic);
    if p.config.bypass_policies {
        let mut decision = switchyard_core::fail_safe(&active.route, "");
        decision.reason = "policies bypassed (serve --bypass-policies)".to_owned();
        if inherited {
            decision.traffic = Traffic::Synthetic;
        }
        return decision;
    }
    // Whether this decision is logged is known before it is made, so a
    // policy is asked for its reason only when it will be shown.
    let seq = p.handles().next_decision();
    let logged = sampled(seq, p.config.decision_log_sample);
    // The request as the policy sees it; the decide API's are not traffic.
    if !shown
        && let Some(capture) = &p.config.capture
        && capture.sampled(seq)
    {
        capture.record(req);
    }
    // A span carries the reason too.
    let explain = shown || logged || p.config.traces.is_some();
    let start = Instant::now();
    let (mut decision, failure) = if inherited {
        let marked = Arc::new(marked_synthetic(req, &active.route));
        active.pool.decide_with(&marked, &active.route, explain)
    } else {
        active.pool.decide_with(req, &active.route, explain)
    };
    let nanos = start.elapsed().as_nanos() as u64;
    if inherited && decision.traffic != Traffic::Synthetic {
        decision.traffic = Traffic::Synthetic;
        decision
            .reason
            .push_str("; synthetic: the calling invocation is synthetic");
    }
    p.handles()
        .decision(&req.function)
        .record(nanos as f64 / 1e9);
    if let Some(e) = &failure {
        metrics::counter!("switchyard_fail_safe_total", "function" => req.function.clone(), "kind" => e.kind())
            .increment(1);
        *p.handles()
            .activity
            .fail_safes
            .entry(req.function.clone())
            .or_default() += 1;
    }
    if !logged {
        return decision;
    }
    let policy = active.policy.digest().short();
    // Synthetic traffic logs under its own target, so it can be kept apart.
    match decision.traffic {
        Traffic::Production => tracing::info!(
            target: "switchyard::decision",
            function = %req.function, route_version = active.stored.version, %policy,
            target = %decision.target, traffic = "production", reason = %decision.reason, eval_ns = nanos
        ),
        Traffic::Synthetic => tracing::info!(
            target: "switchyard::decision::synthetic",
            function = %req.function, route_version = active.stored.version, %policy,
            target = %decision.target, traffic = "synthetic", reason = %decision.reason, eval_ns = nanos
        ),
    }
    decision
}

/// Whether the `seq`-th decision is logged at one in `sample`.
fn sampled(seq: u64, sample: u64) -> bool {
    sample > 0 && seq.is_multiple_of(sample)
}

fn unknown_function(function: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "unknown function {function:?}: this switchyard does not route it (the admin listener's /healthz lists those it does)"
        ),
    )
}

/// 431 when the request's headers are over the limit.
fn check_headers(p: &Proxy, headers: &HeaderMap) -> Option<Response> {
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > p.config.max_header_bytes {
        return Some(error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers are {bytes} bytes; the limit is {}",
                p.config.max_header_bytes
            ),
        ));
    }
    None
}

/// Why a request body could not be read.
enum BodyError {
    /// Over the limit (413).
    TooLarge,
    /// No byte for `body_timeout` (408).
    Stalled,
    /// The client broke off or sent a malformed body (400).
    Broken,
}

/// The whole body, within the size limit, with no stall longer than
/// `body_timeout` between its parts and all of it within four times that
/// (a client dripping a byte a minute cannot hold a connection for ever).
async fn read_body(p: &Proxy, body: Body) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let start = tokio::time::Instant::now();
    let all_by = start + p.config.body_timeout * 4;
    loop {
        let next_by = (tokio::time::Instant::now() + p.config.body_timeout).min(all_by);
        let frame = match tokio::time::timeout_at(next_by, body.frame()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > p.config.max_body {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// The answer for a body that could not be read, in the front end's shape.
fn body_error(p: &Proxy, e: BodyError, invoke: bool) -> Response {
    let (status, code, message) = match e {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("request body over the limit of {} bytes", p.config.max_body),
        ),
        BodyError::Stalled => (
            StatusCode::REQUEST_TIMEOUT,
            "ServiceException",
            format!(
                "the request body stalled: no byte for {:?}, or not all of it within {:?}",
                p.config.body_timeout,
                p.config.body_timeout * 4
            ),
        ),
        BodyError::Broken => (
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "the request body broke off or was malformed".to_owned(),
        ),
    };
    let mut r = if invoke {
        lambda_api_error(status, code, message)
    } else {
        error(status, message)
    };
    if !matches!(e, BodyError::TooLarge) {
        // The rest of a stalled or broken body cannot be told from the
        // next request.
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The request's headers as the policy sees them: minus any a caller sent
/// under the names the mesh itself sets (`x-switchyard-traffic`,
/// `x-switchyard-target`, `x-switchyard-ctx-*`).
fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers
        .iter()
        .filter(|(k, _)| !is_tag(k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
}

/// Whether a path has a `.` or `..` segment (also percent-encoded), which
/// upstreams may resolve differently from the mesh.
fn has_dot_segment(path: &str) -> bool {
    // Separators and dots as some upstreams decode them: `%2f`, `%5c`,
    // `\`, `%2e`, and a segment's `;param` (`..;/` passes for `../` in
    // some). One pass, no copy: this runs on every request.
    let b = path.as_bytes();
    let escape = |i: usize, hex: &[u8; 2]| {
        b.len() >= i + 3
            && b[i] == b'%'
            && b[i + 1] == hex[0]
            && b[i + 2].eq_ignore_ascii_case(&hex[1])
    };
    // In the current segment: the dots before any `;`, whether anything
    // else came before it, and whether its `;param` part has begun.
    let (mut dots, mut other, mut param) = (0u8, false, false);
    let mut i = 0;
    loop {
        let separator = if i == b.len() {
            Some(0)
        } else if b[i] == b'/' || b[i] == b'\\' {
            Some(1)
        } else if escape(i, b"2f") || escape(i, b"5c") {
            Some(3)
        } else {
            None
        };
        if let Some(len) = separator {
            if !other && (dots == 1 || dots == 2) {
                return true;
            }
            if i == b.len() {
                return false;
            }
            (dots, other, param) = (0, false, false);
            i += len;
            continue;
        }
        if !param {
            if b[i] == b';' {
                param = true;
            } else if b[i] == b'.' {
                dots = dots.saturating_add(1);
            } else if escape(i, b"2e") {
                dots = dots.saturating_add(1);
                i += 3;
                continue;
            } else {
                other = true;
            }
        }
        i += 1;
    }
}

/// The `context` query parameter of the decide API.
#[derive(Debug, serde::Deserialize)]
struct DecideQuery {
    context: Option<String>,
}

async fn decide_api(
    State(p): State<Arc<Proxy>>,
    show: Option<axum::Extension<ShowContext>>,
    axum::extract::Query(query): axum::extract::Query<DecideQuery>,
    body: Bytes,
) -> Response {
    let asked = query.context.as_deref() == Some("show");
    if asked && show.is_none() && !p.config.admin.reveal_context {
        return error(
            StatusCode::FORBIDDEN,
            "context values may be credentials: start serve with --admin-reveal-context to let the decide API show them",
        );
    }
    let reveal = show.is_some() || asked;
    let raw: RequestJson = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid request JSON: {e}; expected {{\"function\":\"orders\",\"method\":\"GET\",\"path\":\"/x\",\"headers\":{{}}}}"
                ),
            );
        }
    };
    let req = match raw.into_request(None) {
        Ok(r) => Arc::new(r),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(active) = p.policies.get(&req.function) else {
        return unknown_function(&req.function);
    };
    let mut decision = decide(&p, &active, &req, true);
    if !reveal {
        for v in decision.context.values_mut() {
            *v = "(hidden)".to_owned();
        }
    }
    // Beside the reason: which policy and which route version decided.
    let mut body = serde_json::to_value(&decision).unwrap_or_default();
    body["policy"] = json!(active.policy.digest());
    body["route-version"] = json!(active.stored.version);
    axum::Json(body).into_response()
}

/// Path routing: `req` for `function`, forwarded with `path` (the rest of
/// the request's path, as sent).
async fn forward(p: &Proxy, function: &str, path: String, req: AxumRequest) -> Response {
    // The function first: an answer labelled with a function must name one
    // this proxy routes (a caller cannot mint metric labels).
    let Some(active) = p.policies.get(function) else {
        return undecided(p, unknown_function(function));
    };
    if let Some(r) = check_headers(p, req.headers()) {
        return for_function(p, r, function);
    }
    if has_dot_segment(req.uri().path()) {
        let r = error(
            StatusCode::BAD_REQUEST,
            "the path has a '.' or '..' segment; send it resolved",
        );
        return for_function(p, r, function);
    }
    let (mut parts, body) = req.into_parts();
    let body = match read_body(p, body).await {
        Ok(b) => b,
        Err(e) => return for_function(p, body_error(p, e, false), function),
    };
    // The policy reads the request's own header map in place, minus any
    // tag a caller forged under the names the mesh sets (they are dropped
    // on the way out too); the call takes the map back after the decision.
    drop_tags(&mut parts.headers);
    let policy_req = Arc::new(Request::from_http(
        function,
        &parts.method,
        path.as_str(),
        std::mem::take(&mut parts.headers),
    ));
    let decision = decide(p, &active, &policy_req, false);
    let headers = match Arc::try_unwrap(policy_req) {
        Ok(req) => req.into_http_headers(),
        // Nothing keeps the request after deciding; were it still shared,
        // the copy would still be right.
        Err(shared) => Request::clone(&shared).into_http_headers(),
    };
    let call = Call::Http(HttpCall {
        method: parts.method,
        path,
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body,
        request_context: parts.extensions.remove::<RequestContext>(),
    });
    dispatch_decided(p, function, &active, decision, call).await
}

/// Removes the headers a caller may not send (the mesh's own tags:
/// `x-switchyard-traffic`, `x-switchyard-target`, `x-switchyard-ctx-*`),
/// so a policy never reads a forged one.
fn drop_tags(headers: &mut HeaderMap) {
    if headers.keys().any(|k| is_tag(k.as_str())) {
        let forged: Vec<_> = headers
            .keys()
            .filter(|k| is_tag(k.as_str()))
            .cloned()
            .collect();
        for name in forged {
            headers.remove(&name);
        }
    }
}

/// The step every front end shares once its policy has decided: send a
/// mirror copy when the decision asks for one, send the call to the
/// target, and answer (errors in the front end's own shape), labelled for
/// the request counter and telling the caller where it went.
async fn dispatch_decided(
    p: &Proxy,
    function: &str,
    active: &Active,
    mut decision: Decision,
    call: Call,
) -> Response {
    let invoke = matches!(call, Call::Invoke(_));
    let (method, path, headers) = match &call {
        Call::Http(h) => (h.method.as_str(), h.path.as_str(), &h.headers),
        Call::Invoke(i) => ("POST", "/", &i.headers),
    };
    let config = active.route.config();
    // A tripped guard: this traffic class no longer goes to the candidate.
    let guard = p.guards.of(function, active);
    if let Some(g) = &guard {
        if decision.target == g.candidate
            && let Some(why) = g.tripped(decision.traffic)
        {
            decision = guarded(active, decision.traffic, &why);
        }
        // A mirror copy is synthetic traffic.
        if decision.mirror.as_deref() == Some(g.candidate.as_str())
            && g.tripped(Traffic::Synthetic).is_some()
        {
            decision.mirror = None;
        }
    }
    let routed = traces::Routed::begin(
        p.config.traces.as_deref(),
        headers,
        decision.traffic,
        function,
    );
    let response = match p.dispatcher(active) {
        Err(e) => render_error(&e, invoke),
        Ok(dispatcher) => {
            let mut shadowed = None;
            if let Some(mut mirror) = Target::mirror(function, &decision, config) {
                mirror.propagate = routed.propagate(headers, Traffic::Synthetic);
                match &config.shadow {
                    Some(spec) => {
                        shadowed = spawn_shadow(p, &dispatcher, &call, mirror, spec)
                            .map(|tx| (tx, spec.max_body_bytes));
                    }
                    None => p
                        .clients
                        .spawn_mirror(dispatcher.clone(), call.clone(), mirror),
                }
            }
            let mut to = Target::primary(function, &decision, config);
            to.propagate = routed.propagate(headers, decision.traffic);
            let started = guard.as_ref().map(|_| Instant::now());
            let (mut response, failed) = send(p, &*dispatcher, &call, &mut to, invoke).await;
            if let (Some(g), Some(started)) = (&guard, started)
                && to.qualifier == g.candidate
                && let Some(why) = g.record(decision.traffic, failed, started.elapsed())
            {
                tripped(p, function, active, decision.traffic, why);
            }
            // The candidate (or any version but stable) failed an
            // idempotent request: once more on stable.
            if failed
                && config.fallback == Some(switchyard_core::Fallback::Stable)
                && to.qualifier != config.stable()
                && config.idempotent(method)
            {
                metrics::counter!("switchyard_fallback_total", "function" => function.to_owned())
                    .increment(1);
                let status = response.status().as_u16();
                let traffic = decision.traffic;
                decision = switchyard_core::fail_safe(&active.route, "");
                decision.traffic = traffic;
                decision.reason = format!(
                    "fallback: {} answered {status}; retried on stable",
                    to.qualifier
                );
                let mut stable = Target::primary(function, &decision, config);
                stable.propagate = routed.propagate(headers, decision.traffic);
                response = send(p, &*dispatcher, &call, &mut stable, invoke).await.0;
            }
            match shadowed {
                Some((tx, limit)) => shadow::TeeBody::wrap(response, limit, tx),
                None => response,
            }
        }
    };
    if routed.recording() {
        use opentelemetry::KeyValue;
        routed.end(
            vec![
                KeyValue::new("switchyard.function", function.to_owned()),
                KeyValue::new("switchyard.target", decision.target.clone()),
                KeyValue::new("switchyard.traffic", decision.traffic.as_str()),
                KeyValue::new("switchyard.reason", decision.reason.clone()),
                KeyValue::new("switchyard.policy", active.policy.digest().to_string()),
                KeyValue::new("switchyard.route_version", active.stored.version as i64),
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.path", path.to_owned()),
            ],
            response.status().as_u16(),
        );
    }
    finish(p, response, function, &decision)
}

/// Sends `call` to `to` (its secrets read first): the answer, and whether
/// it counts as a failure of the version (a 5xx, a timeout, a function
/// error, the version unreachable).
async fn send(
    p: &Proxy,
    dispatcher: &dyn switchyard_dispatch::Dispatcher,
    call: &Call,
    to: &mut Target,
    invoke: bool,
) -> (Response, bool) {
    let result = match p.clients.resolve_secrets(to).await {
        Err(e) => Err(e),
        Ok(()) => dispatcher.send(call, to).await,
    };
    match result {
        Ok(r) => {
            let failed = r.status().is_server_error();
            (r.map(Body::new), failed)
        }
        Err(e) => (render_error(&e, invoke), e.status.is_server_error()),
    }
}

/// Sends a mirror copy whose answer is compared with the primary's (the
/// route's `shadow`): returns where the primary's answer goes, or `None`
/// when no mirror slot is free (the copy dropped and counted).
fn spawn_shadow(
    p: &Proxy,
    dispatcher: &Arc<dyn switchyard_dispatch::Dispatcher>,
    call: &Call,
    mirror: Target,
    spec: &switchyard_core::Shadow,
) -> Option<tokio::sync::oneshot::Sender<shadow::Captured>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reports = p.shadows.clone();
    let request = match call {
        Call::Http(h) => json!({"method": h.method.as_str(), "path": h.path}),
        Call::Invoke(_) => json!({"invoke": true}),
    };
    let spec = spec.clone();
    let wait = p.clients.timeout() + Duration::from_secs(30);
    let sent = p.clients.spawn_mirror_answer(
        dispatcher.clone(),
        call.clone(),
        mirror,
        move |mirror, answer| async move {
            let mirrored = match answer {
                Ok(r) => {
                    let (parts, body) = r.into_parts();
                    let (body, complete) = shadow::read_limited(body, spec.max_body_bytes).await;
                    shadow::Captured {
                        status: parts.status.as_u16(),
                        headers: parts.headers,
                        body,
                        complete,
                    }
                }
                Err(e) => shadow::Captured {
                    status: e.status.as_u16(),
                    headers: HeaderMap::new(),
                    body: Vec::new(),
                    complete: false,
                },
            };
            let Ok(Ok(primary)) = tokio::time::timeout(wait, rx).await else {
                return; // the client went away before the primary's answer ended
            };
            let diff = shadow::compare(&spec, &primary, &mirrored).map(|(kinds, mut report)| {
                report["request"] = request;
                report["primary"] = json!({"status": primary.status});
                report["mirror"] =
                    json!({"qualifier": mirror.qualifier, "status": mirrored.status});
                report["at"] = json!(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                );
                (kinds, report)
            });
            reports.record(&mirror.function, diff);
        },
    );
    sent.then_some(tx)
}

/// The decision for a request whose class the guard took off the
/// candidate: stable, as the fail-safe would, with the guard's reason.
fn guarded(active: &Active, traffic: Traffic, why: &str) -> Decision {
    let mut decision = switchyard_core::fail_safe(&active.route, "");
    decision.traffic = traffic;
    decision.reason = format!("guard tripped: {why}");
    decision
}

/// A guard that just tripped: logged, counted, and with `--guard-writes`
/// a rollback written to the store in the background.
fn tripped(p: &Proxy, function: &str, active: &Active, traffic: Traffic, why: String) {
    tracing::error!(target: "switchyard::guard", %function, route_version = active.stored.version, traffic = traffic.as_str(), reason = %why, "guard tripped: the candidate gets no more of this traffic on this host");
    metrics::counter!("switchyard_guard_trips_total", "function" => function.to_owned(), "traffic" => traffic.as_str())
        .increment(1);
    if let Some(store) = &p.config.guard_store {
        tokio::spawn(guard::write_rollback(
            store.clone(),
            function.to_owned(),
            active.stored.version,
            why,
        ));
    }
}

/// A dispatch error as the caller expects it: the Lambda API's error shape
/// for an Invoke API caller (so AWS SDKs raise the right exception), a JSON
/// gateway error naming the function and qualifier otherwise.
fn render_error(e: &DispatchError, invoke: bool) -> Response {
    if invoke {
        // Lambda's own error codes pass through; the mesh's (a timeout, an
        // unreachable URL, no dispatch block) are Lambda's ServiceException,
        // so an AWS SDK raises what it knows.
        let code = if e.lambda_function.is_some() {
            e.code.as_str()
        } else {
            "ServiceException"
        };
        return lambda_api_error(e.status, code, e.message.clone());
    }
    let mut body = json!({"error": e.message, "status": e.status.as_u16()});
    if let Some(f) = &e.lambda_function {
        body["function"] = json!(f);
        body["qualifier"] = json!(e.qualifier);
        body["error-type"] = json!(e.code);
    }
    (e.status, axum::Json(body)).into_response()
}

/// Labels the answer for the request counter and tells the caller where it
/// went.
fn finish(p: &Proxy, mut response: Response, function: &str, decision: &Decision) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&decision.target) {
        h.insert(TARGET_NAME, v);
    }
    h.insert(
        TRAFFIC_NAME,
        HeaderValue::from_static(decision.traffic.as_str()),
    );
    counted(
        p,
        response,
        function,
        &decision.target,
        decision.traffic.as_str(),
    )
}

/// The mesh's answer headers as header names (a `&str` name would be
/// parsed and copied on every insert).
const TARGET_NAME: HeaderName = HeaderName::from_static(TARGET_HEADER);
const TRAFFIC_NAME: HeaderName = HeaderName::from_static(TRAFFIC_HEADER);

/// An error the way Lambda's API answers, so AWS SDKs raise the right
/// exception (`x-amzn-ErrorType` names it).
fn lambda_api_error(status: StatusCode, code: &str, message: String) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"Type": "User", "message": message})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

/// The watched function an Invoke names: by its own name, or by the Lambda
/// function its dispatcher invokes.
fn resolve_invoked(p: &Proxy, name: &str) -> Option<(String, Arc<Active>)> {
    if let Some(active) = p.policies.get(name) {
        return Some((name.to_owned(), active));
    }
    p.policies.functions().into_iter().find_map(|f| {
        let active = p.policies.get(&f)?;
        let dispatcher = p.dispatcher(&active).ok()?;
        (dispatcher.lambda_function() == Some(name)).then_some((f, active))
    })
}

/// The Lambda Invoke API front end: the policy sees the caller's headers
/// and its client context's `custom` fields as headers (plus
/// `x-amz-qualifier` when the caller named one), and the chosen qualifier
/// is invoked with the payload unchanged.
async fn invoke_api(p: &Proxy, name: &str, req: AxumRequest) -> Response {
    let (lambda_name, mut requested) = split_function_name(name);
    let query_qualifier = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "Qualifier")
            .map(|(_, v)| v.into_owned())
    });
    if query_qualifier.is_some() {
        requested = query_qualifier.as_deref();
    }
    let Some((function, active)) = resolve_invoked(p, lambda_name) else {
        let r = lambda_api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {lambda_name} is not routed by this switchyard"),
        );
        return undecided(p, r);
    };
    if let Some(r) = check_headers(p, req.headers()) {
        return for_function(p, r, &function);
    }
    let (parts, body) = req.into_parts();
    let payload = match read_body(p, body).await {
        Ok(b) => b,
        Err(e) => return for_function(p, body_error(p, e, true), &function),
    };

    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let caller_context = header("x-amz-client-context");
    let mut seen: Vec<(String, String)> = header_pairs(&parts.headers).collect();
    if let Some(ctx) = &caller_context {
        seen.extend(custom_fields(ctx).into_iter().filter(|(k, _)| !is_tag(k)));
    }
    if let Some(q) = requested {
        seen.push(("x-amz-qualifier".to_owned(), q.to_owned()));
    }
    let policy_req = Arc::new(Request::new(
        function.clone(),
        "POST",
        parts.uri.path(),
        seen,
    ));
    let call = Call::Invoke(InvokeCall {
        payload,
        client_context: caller_context,
        invocation_type: header("x-amz-invocation-type"),
        log_type: header("x-amz-log-type"),
        headers: parts.headers,
    });
    let decision = decide(p, &active, &policy_req, false);
    dispatch_decided(p, &function, &active, decision, call).await
}

/// [`public`] as a [`Handler`]: the public listener's hot path, without
/// a router in front.
pub fn public_handler(proxy: Arc<Proxy>) -> Handler {
    Arc::new(move |req| Box::pin(public(proxy.clone(), req)))
}

/// Serves the public routes ([`public`]) on `listener` within the proxy's
/// [`ConnectionLimits`] until `shutdown` resolves; in-flight requests get
/// the shutdown grace to finish. One listener on the calling runtime; see
/// [`serve_public_threads`] for a thread per core.
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = proxy.config.connections.clone();
    server::serve_one(listener, public_handler(proxy), limits, "public", shutdown).await
}

/// Serves the public routes thread-per-core: thread `i` runs a
/// single-threaded runtime accepting on `listeners[i]` (see
/// [`bind_reuseport`]) with its own upstream connections (the proxy's
/// [`ProxyConfig::workers`] should be `listeners.len()`). The threads end
/// once `shutdown` says `true` and their connections are done.
pub fn serve_public_threads(
    listeners: Vec<std::net::TcpListener>,
    proxy: Arc<Proxy>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let limits = proxy.config.connections.clone();
    serve_threads(
        listeners,
        public_handler(proxy),
        limits,
        "public",
        shutdown,
        Arc::new(switchyard_dispatch::enter_worker),
    )
}

/// Serves [`admin_router`] on `listener` (the same connection limits)
/// until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = proxy.config.connections.clone();
    serve_router(listener, admin_router(proxy), limits, "admin", shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check answers as the copying one it replaced, on
    /// every path of up to 5 characters over the characters that matter.
    #[test]
    fn dot_segments_are_found_without_copying() {
        fn by_copying(path: &str) -> bool {
            let lower = path.to_ascii_lowercase();
            let decoded = lower
                .replace("%2e", ".")
                .replace("%2f", "/")
                .replace("%5c", "/")
                .replace('\\', "/");
            decoded.split('/').any(|seg| {
                let seg = seg.split(';').next().unwrap_or(seg);
                seg == "." || seg == ".."
            })
        }
        let alphabet = [
            '/', '\\', '.', ';', '%', '2', 'e', 'E', 'f', 'F', '5', 'c', 'a',
        ];
        let mut paths = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut longer = Vec::new();
            for p in &paths {
                for c in alphabet {
                    let q = format!("{p}{c}");
                    assert_eq!(has_dot_segment(&q), by_copying(&q), "{q:?}");
                    checked += 1;
                    longer.push(q);
                }
            }
            paths = longer;
        }
        assert!(checked > 300_000);
        for (path, dot) in [
            ("/a/../b", true),
            ("/a/%2E%2e/b", true),
            ("/a/..;x/b", true),
            ("/a%2f.%5cb", true),
            ("/a/...", false),
            ("/a/.b", false),
            ("/api/v1/orders/1", false),
        ] {
            assert_eq!(has_dot_segment(path), dot, "{path}");
        }
    }

    #[test]
    fn decision_log_sampling() {
        let logged = |sample| (0..1000).filter(|&i| sampled(i, sample)).count();
        assert_eq!(logged(1), 1000);
        assert_eq!(logged(10), 100);
        assert_eq!(logged(0), 0);
        assert!(sampled(0, 7), "the first decision is always logged");
    }
}
