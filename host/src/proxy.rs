//! The HTTP front end: requests in, the policy decides, the chosen function
//! version answers.
//!
//! Routes (one listener):
//! * `/{function}/{rest...}`: decided by the function's policy and forwarded
//!   to the chosen version (the route config's `dispatch`).
//! * `POST /2015-03-31/functions/{name}/invocations`: the Lambda Invoke API,
//!   so unchanged AWS SDK clients pointed at the proxy are routed too.
//! * `POST /v1/decide`: the decision for a request JSON, for any language.
//! * `GET /healthz`: ready once every watched function has a policy.
//! * `GET /metrics`: Prometheus text format.
//!
//! Dispatch follows the route config's `dispatch` block: `http` forwards to
//! the chosen qualifier's URL, `lambda` invokes the function with the chosen
//! qualifier (see [`crate::lambda`]). HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge) are served on the same listener.
//!
//! The router is built by [`router`] so tests drive it without sockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request as AxumRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::sync::{OnceCell, Semaphore};

use crate::decision::{Decision, Traffic};
use crate::lambda::{self, InvokeError};
use crate::request::{Request, RequestJson};
use crate::route::Dispatch;
use crate::watch::{Active, PolicySet};

/// Limits and timeouts of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Largest request body accepted (413 above). Default 6 MiB, Lambda's
    /// synchronous payload limit.
    pub max_body: usize,
    /// Largest total size of request header names and values (431 above).
    pub max_header_bytes: usize,
    /// How long an upstream may take (504 after).
    pub upstream_timeout: Duration,
    /// Mirror copies in flight at once; more are dropped and counted.
    pub mirror_slots: usize,
    /// Functions that must have a policy for `/healthz` to say ready.
    pub expected_functions: Vec<String>,
    /// Log one in this many decision lines. 1 logs every decision; 0 logs
    /// none. (Metrics count every request regardless.)
    pub decision_log_sample: u64,
    /// Skip the policies: every request goes to its function's `stable`
    /// version as production traffic (an operator's kill switch, and the
    /// baseline that isolates a policy's cost under load).
    pub bypass_policies: bool,
    /// The Lambda client for `lambda` dispatch; by default one is made from
    /// the environment (like any AWS SDK client) on first use.
    pub lambda_client: Option<aws_sdk_lambda::Client>,
    /// The traffic class of the invocation this proxy serves calls for (the
    /// mesh extension sets it from each incoming event). While it is
    /// synthetic, every call is decided as a synthetic one and stays
    /// synthetic whatever the policy returns: see [`InvocationTraffic`].
    pub invocation_traffic: Option<Arc<InvocationTraffic>>,
}

/// The traffic class of the invocation in progress, shared between the
/// code that sees each incoming event and the proxy that routes that
/// invocation's outgoing calls (one invocation at a time, as in a Lambda
/// execution environment).
///
/// While it is synthetic, a call's policy sees the request marked the way
/// QA marks one (`x-switchyard-traffic: synthetic`, and `true` in the
/// route's `synthetic-header` flag, default `x-switchyard-synthetic`), and
/// the decision's traffic is synthetic even when the policy says otherwise:
/// a synthetic request stays synthetic along a chain of functions.
#[derive(Debug, Default)]
pub struct InvocationTraffic {
    synthetic: std::sync::atomic::AtomicBool,
    events: AtomicU64,
}

impl InvocationTraffic {
    /// A new event is on its way to the function: the class of the last
    /// one no longer holds (production until [`set`](Self::set) says).
    pub fn next_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.synthetic.store(false, Ordering::Release);
    }

    /// How many events the function has asked for so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Sets the class of the invocation now in progress.
    pub fn set(&self, traffic: Traffic) {
        self.synthetic
            .store(traffic == Traffic::Synthetic, Ordering::Release);
    }

    /// The class of the invocation now in progress.
    pub fn get(&self) -> Traffic {
        if self.synthetic.load(Ordering::Acquire) {
            Traffic::Synthetic
        } else {
            Traffic::Production
        }
    }
}

/// The header QA's synthetic requests carry for `route` (its
/// `synthetic-header` flag, by default `x-switchyard-synthetic`).
fn synthetic_marker(route: &crate::Route) -> String {
    route
        .config()
        .flags
        .get("synthetic-header")
        .map(|h| h.to_ascii_lowercase())
        .unwrap_or_else(|| "x-switchyard-synthetic".to_owned())
}

/// `req` marked as a synthetic request: the markers first, so they win
/// over anything the caller sent under the same names.
fn marked_synthetic(req: &Request, route: &crate::Route) -> Request {
    let markers = [
        ("x-switchyard-traffic".to_owned(), "synthetic".to_owned()),
        (synthetic_marker(route), "true".to_owned()),
    ];
    Request::new(
        req.function.clone(),
        req.method.clone(),
        req.path.clone(),
        markers.into_iter().chain(req.headers().iter().cloned()),
    )
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body: 6 << 20,
            max_header_bytes: 32 << 10,
            upstream_timeout: Duration::from_secs(30),
            mirror_slots: 64,
            expected_functions: Vec::new(),
            decision_log_sample: 1,
            bypass_policies: false,
            lambda_client: None,
            invocation_traffic: None,
        }
    }
}

/// Shared state of the proxy.
pub struct Proxy {
    policies: Arc<PolicySet>,
    config: ProxyConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    mirror_slots: Arc<Semaphore>,
    metrics: PrometheusHandle,
    lambda: OnceCell<aws_sdk_lambda::Client>,
    decisions: AtomicU64,
}

impl Proxy {
    /// A proxy serving `policies`.
    pub fn new(policies: Arc<PolicySet>, config: ProxyConfig) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Arc::new(Proxy {
            policies,
            mirror_slots: Arc::new(Semaphore::new(config.mirror_slots)),
            client: Client::builder(TokioExecutor::new()).build(connector),
            metrics: metrics_handle(),
            lambda: OnceCell::new_with(config.lambda_client.clone()),
            decisions: AtomicU64::new(0),
            config,
        })
    }

    /// The Lambda client, made from the environment on first use.
    async fn lambda_client(&self) -> &aws_sdk_lambda::Client {
        self.lambda
            .get_or_init(|| async {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                aws_sdk_lambda::Client::new(&config)
            })
            .await
    }
}

/// The process-wide Prometheus recorder, installed on first use. Call it
/// before anything records (e.g. the watcher's first poll) so nothing is lost.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Histograms keep every sample until upkeep folds them in: without
            // it, memory grows with each request while nobody scrapes.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("switchyard-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            // Another recorder may already be installed (an embedding
            // application's): then ours only renders what it records.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The proxy's routes.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/v1/decide", post(decide_api))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke_api))
        .route("/{function}", any(forward_root))
        .route("/{function}/{*rest}", any(forward))
        .with_state(proxy)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": message.into(), "status": status.as_u16()});
    (status, axum::Json(body)).into_response()
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
    (headers, p.metrics.render()).into_response()
}

/// Decides with the function's live policy, recording the decision.
fn decide(p: &Proxy, active: &Active, req: &Arc<Request>) -> Decision {
    let inherited = p
        .config
        .invocation_traffic
        .as_ref()
        .is_some_and(|t| t.get() == Traffic::Synthetic);
    if p.config.bypass_policies {
        let mut decision = crate::fail_safe(&active.route, "");
        decision.reason = "policies bypassed (serve --bypass-policies)".to_owned();
        if inherited {
            decision.traffic = Traffic::Synthetic;
        }
        return decision;
    }
    let start = Instant::now();
    let (mut decision, failure) = if inherited {
        let marked = Arc::new(marked_synthetic(req, &active.route));
        active.pool.decide(&marked, &active.route)
    } else {
        active.pool.decide(req, &active.route)
    };
    let nanos = start.elapsed().as_nanos() as u64;
    if inherited && decision.traffic != Traffic::Synthetic {
        decision.traffic = Traffic::Synthetic;
        decision
            .reason
            .push_str("; synthetic: the calling invocation is synthetic");
    }
    metrics::histogram!("switchyard_decision_seconds", "function" => req.function.clone())
        .record(nanos as f64 / 1e9);
    if let Some(e) = &failure {
        metrics::counter!("switchyard_fail_safe_total", "function" => req.function.clone(), "kind" => e.kind())
            .increment(1);
    }
    let sample = p.config.decision_log_sample;
    let logged = sampled(p.decisions.fetch_add(1, Ordering::Relaxed), sample);
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

fn unknown_function(p: &Proxy, function: &str) -> Response {
    let known = p.policies.functions();
    let body = json!({
        "error": format!("unknown function {function:?}"),
        "status": 404,
        "functions": known,
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
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

/// The body, or `None` when it is over the limit (or the client broke off).
async fn read_body(p: &Proxy, body: Body) -> Option<Bytes> {
    axum::body::to_bytes(body, p.config.max_body).await.ok()
}

fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers.iter().map(|(k, v)| {
        (
            k.as_str().to_owned(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    })
}

async fn decide_api(State(p): State<Arc<Proxy>>, body: Bytes) -> Response {
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
        return unknown_function(&p, &req.function);
    };
    let decision = decide(&p, &active, &req);
    axum::Json(decision).into_response()
}

async fn forward_root(
    state: State<Arc<Proxy>>,
    Path(function): Path<String>,
    req: AxumRequest,
) -> Response {
    forward_inner(state, function, String::new(), req).await
}

async fn forward(
    state: State<Arc<Proxy>>,
    Path((function, rest)): Path<(String, String)>,
    req: AxumRequest,
) -> Response {
    forward_inner(state, function, rest, req).await
}

/// Hop-by-hop headers, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

async fn forward_inner(
    State(p): State<Arc<Proxy>>,
    function: String,
    rest: String,
    req: AxumRequest,
) -> Response {
    if let Some(r) = check_headers(&p, req.headers()) {
        return r;
    }
    let Some(active) = p.policies.get(&function) else {
        return unknown_function(&p, &function);
    };
    let (parts, body) = req.into_parts();
    let Some(body) = read_body(&p, body).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the limit of {} bytes", p.config.max_body),
        );
    };
    // Forward the path as the client sent it (still percent-encoded), not
    // the decoded `rest`: decoding would turn `%2F` into a separator. The
    // function exists, so its name is plain `[A-Za-z0-9_-]` and the raw
    // path starts with `/{function}`.
    let raw = parts.uri.path();
    let path = match raw.get(function.len() + 1..) {
        Some(p) if raw.starts_with(&format!("/{function}")) && !p.is_empty() => p.to_owned(),
        _ => format!("/{rest}"),
    };
    let policy_req = Arc::new(Request::new(
        function.clone(),
        parts.method.as_str(),
        path.clone(),
        header_pairs(&parts.headers),
    ));
    let decision = decide(&p, &active, &policy_req);
    let query = parts.uri.query().unwrap_or("");
    let response = match &active.route.config().dispatch {
        Some(Dispatch::Http { urls }) => {
            let path_query = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            let send = HttpSend {
                method: &parts.method,
                path_query: &path_query,
                headers: &parts.headers,
                body,
            };
            forward_http(&p, &function, urls, send, &decision).await
        }
        Some(Dispatch::Lambda { function_name }) => {
            let event = |traffic| {
                let mut headers = outgoing_headers(&parts.headers, &decision, traffic);
                if let Some(host) = parts.headers.get(http::header::HOST) {
                    headers.insert(http::header::HOST, host.clone());
                }
                let event = lambda::http_api_event(&parts.method, &path, query, &headers, &body);
                Bytes::from(event.to_string())
            };
            if let Some(mirror) = &decision.mirror {
                mirror_lambda(
                    &p,
                    &function,
                    function_name,
                    mirror,
                    event(Traffic::Synthetic),
                    &decision,
                )
                .await;
            }
            let payload = event(decision.traffic);
            forward_lambda(&p, function_name, payload, &decision).await
        }
        None => error(
            StatusCode::BAD_GATEWAY,
            format!(
                "{function}: the route config has no \"dispatch\" block; add {{\"type\":\"http\",\"urls\":{{...}}}} or {{\"type\":\"lambda\",\"function-name\":\"...\"}}"
            ),
        ),
    };
    finish(response, function, &decision)
}

/// Counts the request and tells the caller where it went.
fn finish(mut response: Response, function: String, decision: &Decision) -> Response {
    metrics::counter!(
        "switchyard_requests_total",
        "function" => function,
        "target" => decision.target.clone(),
        "traffic" => decision.traffic.as_str(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&decision.target) {
        h.insert("x-switchyard-target", v);
    }
    h.insert(
        "x-switchyard-traffic",
        HeaderValue::from_static(decision.traffic.as_str()),
    );
    response
}

/// A request to send to an HTTP upstream.
struct HttpSend<'a> {
    method: &'a Method,
    /// Path and query, appended to the qualifier's base URL.
    path_query: &'a str,
    headers: &'a HeaderMap,
    body: Bytes,
}

/// `http` dispatch: the request to the chosen qualifier's URL, a copy to
/// the mirror's.
async fn forward_http(
    p: &Proxy,
    function: &str,
    urls: &std::collections::BTreeMap<String, String>,
    send: HttpSend<'_>,
    decision: &Decision,
) -> Response {
    let upstream = |qualifier: &str| -> Option<String> {
        urls.get(qualifier)
            .map(|base| format!("{}{}", base.trim_end_matches('/'), send.path_query))
    };
    let Some(url) = upstream(&decision.target) else {
        return error(
            StatusCode::BAD_GATEWAY,
            format!(
                "{function}: no dispatch url for qualifier {:?}",
                decision.target
            ),
        );
    };
    if let Some(mirror) = &decision.mirror
        && let Some(url) = upstream(mirror)
        && let Ok(req) = build_request(
            send.method,
            &url,
            send.headers,
            decision,
            Traffic::Synthetic,
            send.body.clone(),
        )
    {
        let client = p.client.clone();
        let timeout = p.config.upstream_timeout;
        spawn_mirror(p, function, mirror, async move {
            match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(resp)) => {
                    // Drain the body so the connection can be reused.
                    let status = resp.status().as_u16().to_string();
                    let _ = resp.into_body().collect().await;
                    status
                }
                Ok(Err(_)) => "error".to_owned(),
                Err(_) => "timeout".to_owned(),
            }
        });
    }
    let req = match build_request(
        send.method,
        &url,
        send.headers,
        decision,
        decision.traffic,
        send.body,
    ) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("{function}: {e}")),
    };
    match tokio::time::timeout(p.config.upstream_timeout, p.client.request(req)).await {
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{function} qualifier {} did not answer within {:?}",
                decision.target, p.config.upstream_timeout
            ),
        ),
        Ok(Err(e)) => error(
            StatusCode::BAD_GATEWAY,
            format!(
                "{function} qualifier {} at {url} failed: {e}",
                decision.target
            ),
        ),
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                if *h != "content-length" {
                    parts.headers.remove(*h);
                }
            }
            Response::from_parts(parts, Body::new(body.map_err(axum::Error::new)))
        }
    }
}

/// The traffic tag and the decision's context, as header names and values:
/// what the target receives as headers and in the client context `custom`.
fn tags(decision: &Decision, traffic: Traffic) -> Vec<(String, String)> {
    std::iter::once((
        "x-switchyard-traffic".to_owned(),
        traffic.as_str().to_owned(),
    ))
    .chain(decision.context.iter().map(|(k, v)| {
        (
            format!("x-switchyard-ctx-{}", k.to_ascii_lowercase()),
            v.clone(),
        )
    }))
    .collect()
}

/// The client's headers minus hop-by-hop ones and any forged tags, plus
/// the proxy's tags.
fn outgoing_headers(headers: &HeaderMap, decision: &Decision, traffic: Traffic) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 1 + decision.context.len());
    for (k, v) in headers {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name)
            || name.starts_with("x-switchyard-ctx-")
            || name == "x-switchyard-traffic"
        {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    for (k, v) in tags(decision, traffic) {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            out.insert(n, v);
        }
    }
    out
}

fn build_request(
    method: &Method,
    url: &str,
    headers: &HeaderMap,
    decision: &Decision,
    traffic: Traffic,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad upstream url {url:?}: {e}"))?;
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = outgoing_headers(headers, decision, traffic);
    Ok(req)
}

/// Runs a mirror copy in the background. Bounded: without a free slot the
/// copy is dropped and counted. `send` resolves to the status label.
fn spawn_mirror(
    p: &Proxy,
    function: &str,
    qualifier: &str,
    send: impl std::future::Future<Output = String> + Send + 'static,
) {
    let Ok(permit) = p.mirror_slots.clone().try_acquire_owned() else {
        metrics::counter!("switchyard_mirror_dropped_total", "function" => function.to_owned())
            .increment(1);
        return;
    };
    let (function, qualifier) = (function.to_owned(), qualifier.to_owned());
    tokio::spawn(async move {
        let _permit = permit;
        let outcome = send.await;
        metrics::counter!("switchyard_mirror_total", "function" => function, "target" => qualifier, "status" => outcome)
            .increment(1);
    });
}

/// A mirror copy to a Lambda qualifier: an asynchronous (`Event`) invoke,
/// tagged synthetic.
async fn mirror_lambda(
    p: &Proxy,
    function: &str,
    lambda_name: &str,
    qualifier: &str,
    payload: Bytes,
    decision: &Decision,
) {
    let tags = tags(decision, Traffic::Synthetic);
    let client = p.lambda_client().await.clone();
    let timeout = p.config.upstream_timeout;
    let (name, q) = (lambda_name.to_owned(), qualifier.to_owned());
    spawn_mirror(p, function, qualifier, async move {
        let ctx = lambda::client_context(None, &tags);
        let call = lambda::invoke(&client, &name, &q, payload, Some(ctx), Some("Event"), None);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(out)) => out.status.to_string(),
            Ok(Err(_)) => "error".to_owned(),
            Err(_) => "timeout".to_owned(),
        }
    });
}

/// A JSON gateway error naming the Lambda function and qualifier.
fn lambda_gateway_error(
    status: StatusCode,
    lambda_name: &str,
    qualifier: &str,
    error_type: &str,
    message: String,
) -> Response {
    let body = json!({
        "error": message,
        "status": status.as_u16(),
        "function": lambda_name,
        "qualifier": qualifier,
        "error-type": error_type,
    });
    (status, axum::Json(body)).into_response()
}

/// `lambda` dispatch from the HTTP front end: the event to the chosen
/// qualifier, its proxy response back as HTTP.
async fn forward_lambda(
    p: &Proxy,
    lambda_name: &str,
    payload: Bytes,
    decision: &Decision,
) -> Response {
    let q = decision.target.as_str();
    let ctx = lambda::client_context(None, &tags(decision, decision.traffic));
    let client = p.lambda_client().await;
    let call = lambda::invoke(client, lambda_name, q, payload, Some(ctx), None, None);
    let gateway =
        |status, ty: &str, msg: String| lambda_gateway_error(status, lambda_name, q, ty, msg);
    match tokio::time::timeout(p.config.upstream_timeout, call).await {
        Err(_) => gateway(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!(
                "Lambda {lambda_name} qualifier {q} did not answer within {:?}",
                p.config.upstream_timeout
            ),
        ),
        Ok(Err(InvokeError::Service { code, message, .. })) => gateway(
            StatusCode::BAD_GATEWAY,
            &code,
            format!("Lambda {lambda_name} qualifier {q} was not invoked: {code}: {message}"),
        ),
        Ok(Err(e @ InvokeError::Unreachable(_))) => gateway(
            StatusCode::BAD_GATEWAY,
            "Unreachable",
            format!("Lambda {lambda_name} qualifier {q}: {e}"),
        ),
        Ok(Ok(out)) => {
            if let Some(kind) = &out.function_error {
                let detail = lambda::error_summary(&out.payload)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                return gateway(
                    StatusCode::BAD_GATEWAY,
                    kind,
                    format!("Lambda {lambda_name} qualifier {q} failed ({kind}){detail}"),
                );
            }
            match lambda::proxy_response(&out.payload) {
                Ok((status, headers, body)) => (status, headers, body).into_response(),
                Err(e) => gateway(
                    StatusCode::BAD_GATEWAY,
                    "InvalidResponse",
                    format!("Lambda {lambda_name} qualifier {q}: {e}"),
                ),
            }
        }
    }
}

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
/// function its `lambda` dispatch invokes.
fn resolve_invoked(p: &Proxy, name: &str) -> Option<(String, Arc<Active>)> {
    if let Some(active) = p.policies.get(name) {
        return Some((name.to_owned(), active));
    }
    p.policies.functions().into_iter().find_map(|f| {
        let active = p.policies.get(&f)?;
        match &active.route.config().dispatch {
            Some(Dispatch::Lambda { function_name })
                if lambda::split_function_name(function_name).0 == name =>
            {
                Some((f, active))
            }
            _ => None,
        }
    })
}

/// The Lambda Invoke API front end: the policy sees the caller's headers
/// and its client context's `custom` fields as headers (plus
/// `x-amz-qualifier` when the caller named one), and the chosen qualifier
/// is invoked with the payload unchanged.
async fn invoke_api(
    State(p): State<Arc<Proxy>>,
    Path(name): Path<String>,
    req: AxumRequest,
) -> Response {
    if let Some(r) = check_headers(&p, req.headers()) {
        return r;
    }
    let (lambda_name, mut requested) = lambda::split_function_name(&name);
    let query_qualifier = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "Qualifier")
            .map(|(_, v)| v.into_owned())
    });
    if query_qualifier.is_some() {
        requested = query_qualifier.as_deref();
    }
    let Some((function, active)) = resolve_invoked(&p, lambda_name) else {
        return lambda_api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!(
                "Function not found: {lambda_name} is not routed by this switchyard (routed: {})",
                p.policies.functions().join(", ")
            ),
        );
    };
    let (parts, body) = req.into_parts();
    let Some(payload) = read_body(&p, body).await else {
        return lambda_api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!(
                "request payload over the limit of {} bytes",
                p.config.max_body
            ),
        );
    };

    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let caller_context = header("x-amz-client-context");
    let mut seen: Vec<(String, String)> = header_pairs(&parts.headers).collect();
    if let Some(ctx) = caller_context {
        seen.extend(lambda::custom_fields(ctx));
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
    let decision = decide(&p, &active, &policy_req);
    let response = match &active.route.config().dispatch {
        Some(Dispatch::Lambda { function_name }) => {
            if let Some(mirror) = &decision.mirror {
                mirror_lambda(
                    &p,
                    &function,
                    function_name,
                    mirror,
                    payload.clone(),
                    &decision,
                )
                .await;
            }
            invoke_through(
                &p,
                function_name,
                payload,
                caller_context,
                &parts.headers,
                &decision,
            )
            .await
        }
        Some(Dispatch::Http { urls }) => {
            let send = HttpSend {
                method: &Method::POST,
                path_query: "/",
                headers: &parts.headers,
                body: payload,
            };
            forward_http(&p, &function, urls, send, &decision).await
        }
        None => lambda_api_error(
            StatusCode::BAD_GATEWAY,
            "ServiceException",
            format!("{function}: the route config has no \"dispatch\" block"),
        ),
    };
    finish(response, function, &decision)
}

/// Invokes the chosen qualifier for an Invoke API caller and answers the
/// way Lambda does.
async fn invoke_through(
    p: &Proxy,
    lambda_name: &str,
    payload: Bytes,
    caller_context: Option<&str>,
    headers: &HeaderMap,
    decision: &Decision,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let ctx = lambda::client_context(caller_context, &tags(decision, decision.traffic));
    let client = p.lambda_client().await;
    let call = lambda::invoke(
        client,
        lambda_name,
        &decision.target,
        payload,
        Some(ctx),
        header("x-amz-invocation-type"),
        header("x-amz-log-type"),
    );
    match tokio::time::timeout(p.config.upstream_timeout, call).await {
        Err(_) => lambda_api_error(
            StatusCode::GATEWAY_TIMEOUT,
            "ServiceException",
            format!(
                "{lambda_name}:{} did not answer within {:?}",
                decision.target, p.config.upstream_timeout
            ),
        ),
        Ok(Err(InvokeError::Service {
            status,
            code,
            message,
        })) => lambda_api_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            &code,
            message,
        ),
        Ok(Err(e @ InvokeError::Unreachable(_))) => lambda_api_error(
            StatusCode::BAD_GATEWAY,
            "ServiceException",
            format!("{lambda_name}:{}: {e}", decision.target),
        ),
        Ok(Ok(out)) => {
            let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
            let mut response = (status, out.payload).into_response();
            let h = response.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            for (name, value) in [
                ("x-amz-function-error", &out.function_error),
                ("x-amz-executed-version", &out.executed_version),
                ("x-amz-log-result", &out.log_result),
            ] {
                if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                    h.insert(name, v);
                }
            }
            response
        }
    }
}

/// Serves `router(proxy)` on `listener` until `shutdown` resolves; in-flight
/// requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(proxy))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_log_sampling() {
        let logged = |sample| (0..1000).filter(|&i| sampled(i, sample)).count();
        assert_eq!(logged(1), 1000);
        assert_eq!(logged(10), 100);
        assert_eq!(logged(0), 0);
        assert!(sampled(0, 7), "the first decision is always logged");
    }
}
