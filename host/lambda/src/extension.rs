//! The mesh extension: Switchyard as a Lambda external extension (binary
//! `switchyard-extension`, shipped in a layer as
//! `extensions/switchyard-extension`) that runs next to any function, in
//! any runtime, and routes the function's own calls to other functions.
//!
//! It serves two things on `127.0.0.1`:
//!
//! * **The mesh** (`SWITCHYARD_PORT`, default 9010): the proxy's routes,
//!   so the decide API (`POST /v1/decide`) and the Lambda Invoke API
//!   (`POST /2015-03-31/functions/{name}/invocations`). A function whose
//!   AWS SDK Lambda client has `endpoint_url=http://localhost:9010` is
//!   routed by policy: the one-line change.
//! * **A Runtime API proxy** (`SWITCHYARD_RUNTIME_PROXY_PORT`, default
//!   9009): the function's runtime talks to Lambda's Runtime API through
//!   it (the layer's `switchyard-wrapper`, set as `AWS_LAMBDA_EXEC_WRAPPER`,
//!   points `AWS_LAMBDA_RUNTIME_API` here). Every call is passed through
//!   unchanged; from each event it hands out (`/invocation/next`) the
//!   extension learns the invocation's traffic class: synthetic when the
//!   client context's `custom` or the event's `headers` carry
//!   `x-switchyard-traffic: synthetic`. An extension alone cannot know
//!   this: Lambda's INVOKE events to extensions carry only the request id.
//!
//! While the invocation in progress is synthetic, its outgoing calls
//! through the mesh are decided and tagged as synthetic (see
//! [`InvocationTraffic`]), so a synthetic request stays
//! synthetic along a chain of functions, each with the extension.
//!
//! Configuration, from environment variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SWITCHYARD_STORE` | config store, e.g. `ssm:/switchyard` | required |
//! | `SWITCHYARD_FUNCTIONS` | the store functions this function calls, `orders,payments` | required |
//! | `SWITCHYARD_PORT` | the mesh's port on 127.0.0.1 | `9010` |
//! | `SWITCHYARD_RUNTIME_PROXY_PORT` | the Runtime API proxy's port on 127.0.0.1 | `9009` |
//! | `SWITCHYARD_RUNTIME_UPSTREAM` | where the Runtime API proxy forwards | `AWS_LAMBDA_RUNTIME_API` |
//! | `SWITCHYARD_CACHE_DIR` | precompiled policies, kept across warm starts | `/tmp/switchyard-cache` |
//! | `SWITCHYARD_POLL_INTERVAL` | store poll interval (`500ms`, `10s`, `2m`) | `10s` |
//! | `SWITCHYARD_EMF_NAMESPACE` | CloudWatch namespace of the EMF metric line written to stdout per request (requests, errors, latency per function, version and traffic class); `off`: none | `Switchyard` |
//! | `AWS_LAMBDA_RUNTIME_API` | set by Lambda: the Extensions API | required |
//!
//! The extension registers under the file name it was started as (Lambda
//! requires the name of the file in `/opt/extensions`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request as AxumRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use switchyard_core::Traffic;
use switchyard_dispatch::strip_hop_by_hop;
use switchyard_dispatch::{causes, custom_fields};
use switchyard_proxy::{InheritedTraffic, ProxyConfig};

use crate::env::{EnvError, Vars};
use crate::start::{StartError, start};

/// The longest a Lambda invocation may run (15 minutes): how long the mesh
/// waits for a callee.
pub const MAX_INVOCATION: Duration = Duration::from_secs(900);

/// The extension's settings (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionEnv {
    /// Config store URI.
    pub store: String,
    /// The store functions the function calls through the mesh.
    pub functions: Vec<String>,
    /// The mesh's port on 127.0.0.1.
    pub port: u16,
    /// The Runtime API proxy's port on 127.0.0.1.
    pub runtime_proxy_port: u16,
    /// The Extensions API base URL (from `AWS_LAMBDA_RUNTIME_API`).
    pub extensions_api: String,
    /// The Runtime API base URL the proxy forwards to.
    pub runtime_upstream: String,
    /// Precompiled-policy cache.
    pub cache_dir: PathBuf,
    /// Store poll interval.
    pub poll_interval: Duration,
    /// The namespace of the EMF line written per request
    /// (`SWITCHYARD_EMF_NAMESPACE`, default `Switchyard`; `off`: none).
    pub emf: Option<switchyard_proxy::Emf>,
}

impl ExtensionEnv {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let vars = Vars(var);
        let bad = |m: &str| EnvError(m.to_owned());
        let (store, cache_dir, poll_interval) = vars.store_settings()?;
        let emf = vars.emf()?;
        let functions = vars.list("SWITCHYARD_FUNCTIONS");
        if functions.is_empty() {
            return Err(bad(
                "SWITCHYARD_FUNCTIONS is not set; set it to the store functions this \
                        function calls, e.g. orders,payments",
            ));
        }
        let port_mesh = vars.port("SWITCHYARD_PORT", 9010)?;
        let runtime_proxy_port = vars.port("SWITCHYARD_RUNTIME_PROXY_PORT", 9009)?;
        if port_mesh == runtime_proxy_port {
            return Err(EnvError(format!(
                "SWITCHYARD_PORT and SWITCHYARD_RUNTIME_PROXY_PORT are both {port_mesh}; \
                 they need a port each"
            )));
        }
        let api = vars.get("AWS_LAMBDA_RUNTIME_API").ok_or_else(|| {
            bad(
                "AWS_LAMBDA_RUNTIME_API is not set: Lambda sets it; to run the extension locally, \
             point it at `cargo lambda watch` (http://127.0.0.1:9000/.rt)",
            )
        })?;
        let extensions_api = base_url(&api);
        let runtime_upstream = vars
            .get("SWITCHYARD_RUNTIME_UPSTREAM")
            .map(|u| base_url(&u))
            .unwrap_or_else(|| extensions_api.clone());
        Ok(ExtensionEnv {
            store,
            functions,
            port: port_mesh,
            runtime_proxy_port,
            extensions_api,
            runtime_upstream,
            cache_dir,
            poll_interval,
            emf,
        })
    }
}

/// The traffic class of the invocation in progress, shared between the
/// Runtime API proxy, which sees each incoming event, and the mesh, which
/// routes that invocation's outgoing calls (one invocation at a time, as in
/// a Lambda execution environment). While it is synthetic, a call's policy
/// sees the request marked the way QA marks one, and the decision's
/// traffic is synthetic even when the policy says otherwise: a synthetic
/// request stays synthetic along a chain of functions.
#[derive(Debug, Default)]
pub struct InvocationTraffic {
    synthetic: AtomicBool,
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

impl InheritedTraffic for InvocationTraffic {
    fn traffic(&self) -> Traffic {
        self.get()
    }
}

/// A Runtime API address as a base URL: Lambda's `127.0.0.1:9001` becomes
/// `http://127.0.0.1:9001`; a URL (`cargo lambda watch`'s
/// `http://127.0.0.1:9000/.rt`) is kept, without a trailing `/`.
pub fn base_url(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.starts_with("http://") || api.starts_with("https://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    }
}

/// The traffic class of an event a function is about to handle: synthetic
/// when its client context's `custom` (the `Lambda-Runtime-Client-Context`
/// header, JSON) or its `headers` or `multiValueHeaders` (an HTTP event:
/// API Gateway, function URL, ALB) carry `x-switchyard-traffic:
/// synthetic`, names and values in any case.
pub fn event_traffic(client_context: Option<&str>, event: &[u8]) -> Traffic {
    let synthetic = |v: &str| v.trim().eq_ignore_ascii_case("synthetic");
    let in_context = client_context.is_some_and(|ctx| {
        custom_fields(ctx)
            .iter()
            .any(|(k, v)| k == "x-switchyard-traffic" && synthetic(v))
    });
    let in_headers = || {
        let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(event) else {
            return false;
        };
        let tagged = |headers: Option<&Value>, value: &dyn Fn(&Value) -> bool| {
            headers.and_then(Value::as_object).is_some_and(|h| {
                h.iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case("x-switchyard-traffic") && value(v))
            })
        };
        // `headers` (HTTP API, function URLs, REST API, ALB) or only
        // `multiValueHeaders` (REST API, ALB with multi-value headers on).
        tagged(event.get("headers"), &|v| v.as_str().is_some_and(synthetic))
            || tagged(event.get("multiValueHeaders"), &|v| {
                v.as_array()
                    .is_some_and(|vs| vs.iter().filter_map(Value::as_str).any(synthetic))
            })
    };
    if in_context || in_headers() {
        Traffic::Synthetic
    } else {
        Traffic::Production
    }
}

type HttpClient = Client<HttpConnector, Body>;

struct RuntimeProxy {
    upstream: String,
    client: HttpClient,
    traffic: Arc<InvocationTraffic>,
}

/// The Runtime API proxy's routes: everything is forwarded to `upstream`
/// unchanged; each event handed out sets `traffic`.
pub fn runtime_proxy(upstream: String, traffic: Arc<InvocationTraffic>) -> axum::Router {
    let mut connector = HttpConnector::new();
    // Small request/answer pairs on loopback: Nagle's algorithm would hold
    // each back for the peer's delayed ACK.
    connector.set_nodelay(true);
    let state = Arc::new(RuntimeProxy {
        upstream: base_url(&upstream),
        // A connection per call, closed by the Runtime API when it has
        // answered (see `forward_runtime`).
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector),
        traffic,
    });
    axum::Router::new()
        .fallback(forward_runtime)
        .with_state(state)
}

async fn forward_runtime(State(s): State<Arc<RuntimeProxy>>, req: AxumRequest) -> Response {
    let path_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let is_next =
        req.method() == http::Method::GET && req.uri().path().ends_with("/runtime/invocation/next");
    let url = format!("{}{path_query}", s.upstream);
    tracing::debug!(target: "switchyard::extension", method = %req.method(), %url, "runtime call");
    let (mut parts, body) = req.into_parts();
    parts.uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            return bad_gateway(format!("cannot forward to the Runtime API at {url}: {e}"));
        }
    };
    strip_hop_by_hop(&mut parts.headers, true);
    parts.headers.remove(http::header::HOST);
    // Without `close`, one call in ten stalled ~40 ms under `cargo lambda
    // watch` (Nagle against delayed ACKs on a kept-alive connection);
    // with it, the answer is flushed as the connection ends
    // (benches/extension_hop.sh; BENCHMARKS.md).
    parts.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    if is_next {
        s.traffic.next_event();
    }
    let answer = match s
        .client
        .request(http::Request::from_parts(parts, body))
        .await
    {
        Ok(a) => a,
        Err(e) => {
            // `{:#}`: the whole chain, as hyper's top error says only
            // "client error (Connect)".
            return bad_gateway(format!(
                "the Runtime API at {} did not answer {path_query}: {}",
                s.upstream,
                causes(&e)
            ));
        }
    };
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    if is_next && !parts.status.is_success() {
        tracing::warn!(target: "switchyard::extension", status = %parts.status, "the Runtime API refused the next event");
    }
    if !is_next || !parts.status.is_success() {
        return Response::from_parts(parts, Body::new(body.map_err(axum::Error::new)));
    }
    let event = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("the next event broke off: {e}")),
    };
    let ctx = parts
        .headers
        .get("lambda-runtime-client-context")
        .and_then(|v| v.to_str().ok());
    let traffic = event_traffic(ctx, &event);
    s.traffic.set(traffic);
    tracing::debug!(target: "switchyard::extension", traffic = traffic.as_str(), "next event");
    Response::from_parts(parts, Body::from(event))
}

fn bad_gateway(message: String) -> Response {
    tracing::warn!(target: "switchyard::extension", "{message}");
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

/// What the Extensions API's `event/next` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionEvent {
    /// An invocation started (its request id).
    Invoke(String),
    /// The execution environment is shutting down (the reason).
    Shutdown(String),
}

/// Why the extension stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    /// Lambda's Extensions API refused or could not be reached.
    #[error("{0}")]
    ExtensionsApi(String),
    /// A port the extension serves on is taken.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What was to be served there.
        what: String,
        /// The OS's answer.
        source: std::io::Error,
    },
    /// The store, engine or TLS setup failed.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A client of Lambda's Extensions API (register, then `event/next` in a
/// loop). Hand-written: two calls do not need the `lambda-extension`
/// crate's 18 dependencies.
pub struct ExtensionsApi {
    base: String,
    id: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ExtensionsApi {
    /// Registers the extension `name` for INVOKE and SHUTDOWN events.
    pub async fn register(base: &str, name: &str) -> Result<Self, ExtensionError> {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let url = format!("{base}/2020-01-01/extension/register");
        let api = |m: String| ExtensionError::ExtensionsApi(m);
        let req = http::Request::post(&url)
            .header("lambda-extension-name", name)
            .header("content-type", "application/json")
            .body(Full::from(r#"{"events":["INVOKE","SHUTDOWN"]}"#))
            .map_err(|e| api(format!("cannot register {name:?}: {e}")))?;
        let answer = client.request(req).await.map_err(|e| {
            api(format!(
                "cannot register with the Extensions API at {url}: {}",
                causes(&e)
            ))
        })?;
        let status = answer.status();
        let id = answer
            .headers()
            .get("lambda-extension-identifier")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_answer(answer, &url).await?;
        match id {
            Some(id) if status.is_success() => Ok(ExtensionsApi {
                base: base.to_owned(),
                id,
                client,
            }),
            _ => Err(api(format!(
                "the Extensions API at {url} refused to register {name:?}: {status} {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    /// Waits for the next event (long poll).
    pub async fn next(&self) -> Result<ExtensionEvent, ExtensionError> {
        let url = format!("{}/2020-01-01/extension/event/next", self.base);
        let api = |m: String| ExtensionError::ExtensionsApi(m);
        let req = http::Request::get(&url)
            .header("lambda-extension-identifier", &self.id)
            .body(Full::default())
            .map_err(|e| api(format!("cannot ask {url}: {e}")))?;
        let answer = self.client.request(req).await.map_err(|e| {
            api(format!(
                "the Extensions API at {url} did not answer: {}",
                causes(&e)
            ))
        })?;
        let status = answer.status();
        let body = read_answer(answer, &url).await?;
        if !status.is_success() {
            return Err(api(format!(
                "the Extensions API at {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let event: Value = serde_json::from_slice(&body).map_err(|e| {
            api(format!(
                "the Extensions API at {url} sent no JSON event: {e}"
            ))
        })?;
        let text = |k: &str| event[k].as_str().unwrap_or("").to_owned();
        match event["eventType"].as_str() {
            Some("SHUTDOWN") => Ok(ExtensionEvent::Shutdown(text("shutdownReason"))),
            _ => Ok(ExtensionEvent::Invoke(text("requestId"))),
        }
    }
}

/// The body of an Extensions API answer.
async fn read_answer(
    answer: http::Response<hyper::body::Incoming>,
    url: &str,
) -> Result<Bytes, ExtensionError> {
    Ok(answer
        .into_body()
        .collect()
        .await
        .map_err(|e| {
            ExtensionError::ExtensionsApi(format!("the Extensions API at {url} broke off: {e}"))
        })?
        .to_bytes())
}

/// Runs the extension until Lambda shuts the environment down: binds both
/// listeners, registers (so the runtime starts only once the Runtime API
/// proxy is up), loads the policies, then serves while waiting for events.
/// `started` is when the process started: `ready` reports init from it.
pub async fn run(
    env: ExtensionEnv,
    name: &str,
    started: std::time::Instant,
    metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
) -> Result<(), ExtensionError> {
    let bind = |port: u16, what: &str| {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let what = what.to_owned();
        async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ExtensionError::Listen { addr, what, source })
        }
    };
    let runtime_listener = bind(env.runtime_proxy_port, "the Runtime API proxy").await?;
    let mesh_listener = bind(env.port, "the mesh (SWITCHYARD_PORT)").await?;
    let traffic = Arc::new(InvocationTraffic::default());
    let runtime_routes = runtime_proxy(env.runtime_upstream.clone(), traffic.clone());
    let runtime_listener = runtime_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(runtime_listener, runtime_routes).await {
            eprintln!(
                "{}",
                json!({"event": "runtime-proxy-failed", "error": e.to_string()})
            );
        }
    });
    let api = ExtensionsApi::register(&env.extensions_api, name).await?;
    let (watcher, proxy, _poller) = start(
        &env.store,
        env.functions.clone(),
        &env.cache_dir,
        env.poll_interval,
        ProxyConfig {
            expected_functions: env.functions.clone(),
            inherited_traffic: Some(traffic.clone()),
            // A callee may run as long as Lambda lets it; answering 504
            // earlier would make the caller's SDK retry a call that is
            // still running.
            clients: switchyard_proxy::ClientsConfig {
                upstream_timeout: MAX_INVOCATION,
                ..Default::default()
            },
            metrics,
            emf: env.emf.clone().map(Arc::new),
            ..Default::default()
        },
    )
    .await?;
    // The function's own loopback API: its calls, and the decide API with
    // context (the function is the one its context is for).
    let mesh_routes = switchyard_proxy::mesh_router(proxy);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(mesh_listener, mesh_routes).await {
            eprintln!(
                "{}",
                json!({"event": "mesh-failed", "error": e.to_string()})
            );
        }
    });
    eprintln!(
        "{}",
        json!({"event": "ready", "init_ms": started.elapsed().as_secs_f64() * 1e3,
               "mesh": format!("http://127.0.0.1:{}", env.port),
               "runtime_proxy": format!("127.0.0.1:{}", env.runtime_proxy_port),
               "functions": watcher.policies().functions()})
    );
    let mut invokes = 0u64;
    loop {
        match api.next().await? {
            ExtensionEvent::Invoke(_) => {
                invokes += 1;
                // By its second invocation a runtime started through the
                // wrapper has asked the proxy for events at least twice.
                if invokes == 2 && traffic.events() == 0 {
                    eprintln!(
                        "{}",
                        json!({"event": "no-runtime-proxy",
                               "error": "the function's runtime does not reach the Runtime API through \
                                         switchyard: its calls are routed, but a synthetic event's calls \
                                         are not tagged synthetic; set AWS_LAMBDA_EXEC_WRAPPER=/opt/switchyard-wrapper"})
                    );
                }
            }
            ExtensionEvent::Shutdown(reason) => {
                eprintln!("{}", json!({"event": "shutdown", "reason": reason}));
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn env(vars: &[(&str, &str)]) -> Result<ExtensionEnv, EnvError> {
        ExtensionEnv::from_vars(crate::env::fake_env(vars))
    }

    #[test]
    fn settings_from_the_environment() {
        let base = [
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_FUNCTIONS", " orders, payments ,"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ];
        let e = env(&base).unwrap();
        assert_eq!(e.functions, ["orders", "payments"]);
        assert_eq!((e.port, e.runtime_proxy_port), (9010, 9009));
        assert_eq!(e.extensions_api, "http://127.0.0.1:9001");
        assert_eq!(e.runtime_upstream, "http://127.0.0.1:9001");

        let mut v = base.to_vec();
        v.push((
            "SWITCHYARD_RUNTIME_UPSTREAM",
            "http://127.0.0.1:9000/.rt/f/",
        ));
        v.push(("SWITCHYARD_PORT", "7000"));
        let e = env(&v).unwrap();
        assert_eq!(e.runtime_upstream, "http://127.0.0.1:9000/.rt/f");
        assert_eq!(e.port, 7000);

        let err = env(&base[..2]).unwrap_err();
        assert!(err.to_string().contains("AWS_LAMBDA_RUNTIME_API"), "{err}");
        let err = env(&[base[0], base[2]]).unwrap_err();
        assert!(err.to_string().contains("SWITCHYARD_FUNCTIONS"), "{err}");
        let err = env(&[base[1], base[2]]).unwrap_err();
        assert!(err.to_string().contains("SWITCHYARD_STORE"), "{err}");
        let mut v = base.to_vec();
        v.push(("SWITCHYARD_PORT", "http"));
        assert!(env(&v).unwrap_err().to_string().contains("not a port"));
        let mut v = base.to_vec();
        v.push(("SWITCHYARD_PORT", "9009"));
        assert!(env(&v).unwrap_err().to_string().contains("a port each"));
    }

    #[test]
    fn the_traffic_class_comes_from_the_client_context_or_the_event_headers() {
        let ctx = |custom: Value| {
            base64::engine::general_purpose::STANDARD
                .encode(json!({ "custom": custom }).to_string())
        };
        let synthetic = ctx(json!({"x-switchyard-traffic": "synthetic"}));
        assert_eq!(event_traffic(Some(&synthetic), b"{}"), Traffic::Synthetic);
        // As the Runtime API hands it over: plain JSON.
        let runtime_ctx = json!({"custom": {"x-switchyard-traffic": "synthetic"}}).to_string();
        assert_eq!(event_traffic(Some(&runtime_ctx), b"{}"), Traffic::Synthetic);
        let upper = ctx(json!({"X-Switchyard-Traffic": "Synthetic"}));
        assert_eq!(event_traffic(Some(&upper), b"[]"), Traffic::Synthetic);
        let production = ctx(json!({"x-switchyard-traffic": "production"}));
        assert_eq!(event_traffic(Some(&production), b"{}"), Traffic::Production);

        let http_event = json!({"headers": {"X-Switchyard-Traffic": "synthetic"}}).to_string();
        assert_eq!(
            event_traffic(None, http_event.as_bytes()),
            Traffic::Synthetic
        );
        let multi = json!({"multiValueHeaders": {"x-switchyard-traffic": ["a", "synthetic"]}});
        assert_eq!(
            event_traffic(None, multi.to_string().as_bytes()),
            Traffic::Synthetic
        );
        // Anything else is production: no tag, a tag elsewhere in the
        // payload, a context or event that is not what it claims to be.
        for (ctx, event) in [
            (
                None,
                json!({"headers": {"x-switchyard-synthetic": "true"}}).to_string(),
            ),
            (
                None,
                json!({"x-switchyard-traffic": "synthetic"}).to_string(),
            ),
            (
                None,
                json!({"headers": {"x-switchyard-traffic": 1}}).to_string(),
            ),
            (Some("%%% not base64"), "not json".to_owned()),
            (None, String::new()),
        ] {
            assert_eq!(
                event_traffic(ctx, event.as_bytes()),
                Traffic::Production,
                "{ctx:?} {event}"
            );
        }
    }

    #[test]
    fn runtime_addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:9001"), "http://127.0.0.1:9001");
        assert_eq!(
            base_url("http://127.0.0.1:9000/.rt/"),
            "http://127.0.0.1:9000/.rt"
        );
    }
}
