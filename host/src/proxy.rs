//! The HTTP front end: requests in, the policy decides, the chosen function
//! version answers.
//!
//! Routes (one listener):
//! * `/{function}/{rest...}`: decided by the function's policy and forwarded
//!   to the chosen version (the route config's `dispatch`).
//! * `POST /v1/decide`: the decision for a request JSON, for any language.
//! * `GET /healthz`: ready once every watched function has a policy.
//! * `GET /metrics`: Prometheus text format.
//!
//! The router is built by [`router`] so tests drive it without sockets.

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
use tokio::sync::Semaphore;

use crate::decision::{Decision, Traffic};
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
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body: 6 << 20,
            max_header_bytes: 32 << 10,
            upstream_timeout: Duration::from_secs(30),
            mirror_slots: 64,
            expected_functions: Vec::new(),
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
}

impl Proxy {
    /// A proxy serving `policies`.
    pub fn new(policies: Arc<PolicySet>, config: ProxyConfig) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Arc::new(Proxy {
            policies,
            mirror_slots: Arc::new(Semaphore::new(config.mirror_slots)),
            config,
            client: Client::builder(TokioExecutor::new()).build(connector),
            metrics: metrics_handle(),
        })
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
fn decide(active: &Active, req: &Arc<Request>) -> Decision {
    let start = Instant::now();
    let (decision, failure) = active.pool.decide(req, &active.route);
    let nanos = start.elapsed().as_nanos() as u64;
    metrics::histogram!("switchyard_decision_seconds", "function" => req.function.clone())
        .record(nanos as f64 / 1e9);
    if let Some(e) = &failure {
        metrics::counter!("switchyard_fail_safe_total", "function" => req.function.clone(), "kind" => e.kind())
            .increment(1);
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

fn unknown_function(p: &Proxy, function: &str) -> Response {
    let known = p.policies.functions();
    let body = json!({
        "error": format!("unknown function {function:?}"),
        "status": 404,
        "functions": known,
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
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
    let decision = decide(&active, &req);
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
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > p.config.max_header_bytes {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers are {header_bytes} bytes; the limit is {}",
                p.config.max_header_bytes
            ),
        );
    }
    let Some(active) = p.policies.get(&function) else {
        return unknown_function(&p, &function);
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, p.config.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {} bytes", p.config.max_body),
            );
        }
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
        parts.headers.iter().map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }),
    ));
    let decision = decide(&active, &policy_req);

    let Some(Dispatch::Http { urls }) = &active.route.config().dispatch else {
        let msg = match &active.route.config().dispatch {
            Some(Dispatch::Lambda { .. }) => {
                "lambda dispatch is not supported by this build yet; use an http dispatch"
            }
            _ => {
                "the route config has no \"dispatch\" block; add {\"type\":\"http\",\"urls\":{...}}"
            }
        };
        return error(StatusCode::BAD_GATEWAY, format!("{function}: {msg}"));
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let upstream = |qualifier: &str| -> Option<String> {
        urls.get(qualifier)
            .map(|base| format!("{}{path}{query}", base.trim_end_matches('/')))
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
    {
        mirror_copy(
            &p,
            &function,
            mirror,
            url,
            &parts.method,
            &parts.headers,
            &decision,
            body.clone(),
        );
    }

    let upstream_req = build_request(
        &parts.method,
        &url,
        &parts.headers,
        &decision,
        decision.traffic,
        body,
    );
    let upstream_req = match upstream_req {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("{function}: {e}")),
    };
    let sent =
        tokio::time::timeout(p.config.upstream_timeout, p.client.request(upstream_req)).await;
    let mut response = match sent {
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
    };
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
    let h = req.headers_mut();
    for (k, v) in headers {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name)
            || name.starts_with("x-switchyard-ctx-")
            || name == "x-switchyard-traffic"
        {
            continue;
        }
        h.append(k.clone(), v.clone());
    }
    h.insert(
        "x-switchyard-traffic",
        HeaderValue::from_static(traffic.as_str()),
    );
    for (k, v) in &decision.context {
        let name = format!("x-switchyard-ctx-{}", k.to_ascii_lowercase());
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(v)) {
            h.insert(n, v);
        }
    }
    Ok(req)
}

/// Sends a copy to the mirror qualifier in the background, tagged synthetic.
/// Bounded: without a free slot the copy is dropped and counted.
#[allow(clippy::too_many_arguments)]
fn mirror_copy(
    p: &Proxy,
    function: &str,
    qualifier: &str,
    url: String,
    method: &Method,
    headers: &HeaderMap,
    decision: &Decision,
    body: Bytes,
) {
    let Ok(permit) = p.mirror_slots.clone().try_acquire_owned() else {
        metrics::counter!("switchyard_mirror_dropped_total", "function" => function.to_owned())
            .increment(1);
        return;
    };
    let Ok(req) = build_request(method, &url, headers, decision, Traffic::Synthetic, body) else {
        return;
    };
    let client = p.client.clone();
    let timeout = p.config.upstream_timeout;
    let (function, qualifier) = (function.to_owned(), qualifier.to_owned());
    tokio::spawn(async move {
        let _permit = permit;
        let outcome = match tokio::time::timeout(timeout, client.request(req)).await {
            Ok(Ok(resp)) => {
                // Drain the body so the connection can be reused.
                let status = resp.status().as_u16().to_string();
                let _ = resp.into_body().collect().await;
                status
            }
            Ok(Err(_)) => "error".to_owned(),
            Err(_) => "timeout".to_owned(),
        };
        metrics::counter!("switchyard_mirror_total", "function" => function, "target" => qualifier, "status" => outcome)
            .increment(1);
    });
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
