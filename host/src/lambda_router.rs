//! The router function: Switchyard as a Lambda function (binary
//! `switchyard-lambda`, runtime `provided.al2023`) behind API Gateway (HTTP
//! API, payload format 2.0) or a function URL. Each event is routed exactly
//! as `switchyard serve` routes an HTTP request: the function's policy picks
//! the qualifier and the traffic class, and the route config's `dispatch`
//! says how to reach it (normally `lambda`: an `Invoke` of that qualifier).
//! The function's response comes back as the router's own.
//!
//! Configuration, from environment variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SWITCHYARD_STORE` | config store, e.g. `ssm:/switchyard` | required |
//! | `SWITCHYARD_FUNCTION` | the store function every request is routed as | none |
//! | `SWITCHYARD_ROUTES` | path prefixes to store functions, `/orders=orders,/pay=payments`; longest prefix wins, over `SWITCHYARD_FUNCTION` | none |
//! | `SWITCHYARD_CACHE_DIR` | precompiled policies, kept across warm starts | `/tmp/switchyard-cache` |
//! | `SWITCHYARD_POLL_INTERVAL` | store poll interval (`500ms`, `10s`, `2m`) | `10s` |
//!
//! The store is polled by a background task between and during
//! invocations, never in an invocation's path: an invocation reads the live
//! policy set, which the poller swaps atomically.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue, Request as HttpRequest};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::proxy::{Proxy, ProxyConfig};
use crate::store;
use crate::watch::{WatchConfig, Watcher};
use crate::{Engine, engine};

/// How long a cold start waits for the store before serving without it
/// (Lambda allows 10 s for init).
pub const INIT_POLL_TIMEOUT: Duration = Duration::from_secs(8);

/// The router function's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterEnv {
    /// Config store URI.
    pub store: String,
    /// The store function requests are routed as when no prefix matches.
    pub function: Option<String>,
    /// Path prefix -> store function.
    pub routes: Vec<(String, String)>,
    /// Precompiled-policy cache.
    pub cache_dir: PathBuf,
    /// Store poll interval.
    pub poll_interval: Duration,
}

impl RouterEnv {
    /// Reads the settings from the environment (see the module docs).
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let store = var("SWITCHYARD_STORE").filter(|s| !s.is_empty()).ok_or(
            "SWITCHYARD_STORE is not set; set it to the config store, e.g. ssm:/switchyard",
        )?;
        let function = var("SWITCHYARD_FUNCTION").filter(|s| !s.is_empty());
        let mut routes = Vec::new();
        for pair in var("SWITCHYARD_ROUTES").unwrap_or_default().split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (prefix, f) = pair
                .split_once('=')
                .filter(|(p, f)| p.starts_with('/') && !f.is_empty())
                .ok_or_else(|| {
                    format!(
                        "SWITCHYARD_ROUTES: {pair:?} is not /prefix=function \
                         (e.g. /orders=orders,/pay=payments)"
                    )
                })?;
            routes.push((prefix.to_owned(), f.to_owned()));
        }
        if function.is_none() && routes.is_empty() {
            return Err(
                "set SWITCHYARD_FUNCTION (the store function to route every request \
                        as) or SWITCHYARD_ROUTES (/prefix=function,...)"
                    .into(),
            );
        }
        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let (cache_dir, poll_interval) = cache_and_poll(&var)?;
        Ok(RouterEnv {
            store,
            function,
            routes,
            cache_dir,
            poll_interval,
        })
    }

    /// The store functions this router routes.
    pub fn functions(&self) -> Vec<String> {
        let mut f: Vec<String> = self.routes.iter().map(|(_, f)| f.clone()).collect();
        f.extend(self.function.clone());
        f.sort();
        f.dedup();
        f
    }

    /// The store function for a request path.
    pub fn function_for(&self, path: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(prefix, _)| {
                path == prefix
                    || path.starts_with(prefix.as_str())
                        && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/'))
            })
            .map(|(_, f)| f.as_str())
            .or(self.function.as_deref())
    }
}

/// `SWITCHYARD_CACHE_DIR` (default `/tmp/switchyard-cache`) and
/// `SWITCHYARD_POLL_INTERVAL` (default 10 s), shared by the Lambda
/// embeddings.
pub(crate) fn cache_and_poll(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<(PathBuf, Duration), String> {
    let cache_dir = var("SWITCHYARD_CACHE_DIR")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/tmp/switchyard-cache".into())
        .into();
    let poll_interval = match var("SWITCHYARD_POLL_INTERVAL") {
        Some(raw) => crate::cli::parse_duration(&raw)
            .map_err(|e| format!("SWITCHYARD_POLL_INTERVAL: {e}"))?,
        None => Duration::from_secs(10),
    };
    Ok((cache_dir, poll_interval))
}

/// The proxy's routes over `watcher`'s policies, for a Lambda embedding.
pub(crate) fn lambda_routes(watcher: &Watcher, config: ProxyConfig) -> axum::Router {
    crate::proxy::router(Proxy::new(watcher.policies(), config))
}

/// Logs to stderr (CloudWatch) without colours; the filter comes from
/// `SWITCHYARD_LOG` (`tracing` env-filter syntax), by default
/// `warn,switchyard=info`. For the Lambda binaries.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info")),
        )
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

/// A running router: the live policies and the proxy's routes.
pub struct RouterFunction {
    env: RouterEnv,
    routes: axum::Router,
    watcher: Arc<Watcher>,
    _poller: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RouterFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterFunction")
            .field("env", &self.env)
            .finish()
    }
}

impl RouterFunction {
    /// Init: opens the store, restores policies from the cache directory
    /// (a warm start, or a store that is down), polls once, and starts the
    /// background poller. Progress and problems go to stderr (CloudWatch).
    pub async fn init(env: RouterEnv) -> anyhow::Result<Self> {
        let (watcher, poller) = start_watcher(
            &env.store,
            env.functions(),
            &env.cache_dir,
            env.poll_interval,
        )
        .await?;
        Ok(RouterFunction {
            routes: lambda_routes(
                &watcher,
                ProxyConfig {
                    expected_functions: env.functions(),
                    ..Default::default()
                },
            ),
            env,
            watcher,
            _poller: poller,
        })
    }

    /// The live policies.
    pub fn watcher(&self) -> &Arc<Watcher> {
        &self.watcher
    }

    /// Routes one API Gateway HTTP API (2.0) or function URL event and
    /// returns the response in the same format.
    pub async fn handle(&self, event: &Value) -> Value {
        let path = event["rawPath"].as_str().unwrap_or("/");
        let Some(function) = self.env.function_for(path) else {
            return api_response(
                404,
                &json!({"error": format!("no route for {path}: SWITCHYARD_ROUTES has no prefix \
                        of it and SWITCHYARD_FUNCTION is not set")}),
            );
        };
        let request = match to_http(event, function) {
            Ok(r) => r,
            Err(why) => return api_response(400, &json!({"error": why})),
        };
        match self.routes.clone().oneshot(request).await {
            Ok(response) => from_http(response).await,
            Err(never) => match never {},
        }
    }
}

/// Opens the store and the policies of `functions` the way a Lambda
/// embedding needs them: restored from the precompiled cache in
/// `cache_dir` first (a warm start, or a store that is down), else one
/// poll of the store within [`INIT_POLL_TIMEOUT`]; then polled in the
/// background, never in an invocation's path. Progress and problems go to
/// stderr (CloudWatch) as JSON lines.
pub async fn start_watcher(
    store_uri: &str,
    functions: Vec<String>,
    cache_dir: &std::path::Path,
    poll_interval: Duration,
) -> anyhow::Result<(Arc<Watcher>, tokio::task::JoinHandle<()>)> {
    let store = store::open(store_uri).await?;
    let engine = Engine::with_config(engine::EngineConfig {
        // One invocation at a time per execution environment.
        max_instances: 100,
        ..Default::default()
    })?;
    let watcher = Arc::new(Watcher::new(
        store,
        engine,
        WatchConfig {
            functions,
            interval: poll_interval,
            cache_dir: Some(cache_dir.to_owned()),
            ..Default::default()
        },
    ));
    let restored = watcher.restore_from_cache();
    if !restored.is_empty() {
        eprintln!(
            "{}",
            json!({"event": "restored-from-cache", "functions": restored})
        );
    }
    // A warm start serves what the cache had at once and leaves the store
    // to the background poller; a cold one waits for the store, within
    // Lambda's 10 s init limit.
    if restored.is_empty() {
        match tokio::time::timeout(INIT_POLL_TIMEOUT, watcher.poll()).await {
            Ok(Ok(outcomes)) => {
                for (f, o) in outcomes {
                    eprintln!("{}", json!({"event": "poll", "function": f, "outcome": o}));
                }
            }
            Ok(Err(e)) => eprintln!(
                "{}",
                json!({"event": "poll-failed", "error": e.to_string()})
            ),
            Err(_) => eprintln!(
                "{}",
                json!({"event": "poll-failed",
                       "error": format!("no answer from {store_uri} within {INIT_POLL_TIMEOUT:?}")})
            ),
        }
    }
    let poller = watcher.clone().spawn();
    Ok((watcher, poller))
}

fn api_response(status: u16, body: &Value) -> Value {
    json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
        "isBase64Encoded": false,
    })
}

/// The event as the request the proxy routes: `/{function}{rawPath}`.
fn to_http(event: &Value, function: &str) -> Result<HttpRequest<Body>, String> {
    let method = event["requestContext"]["http"]["method"]
        .as_str()
        .unwrap_or("GET");
    let path = event["rawPath"].as_str().unwrap_or("/");
    let mut uri = format!("/{function}{path}");
    if let Some(q) = event["rawQueryString"].as_str().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q);
    }
    let mut builder = HttpRequest::builder().method(method).uri(&uri);
    if let Some(headers) = event["headers"].as_object() {
        for (k, v) in headers {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(k.as_str()),
                v.as_str().map(HeaderValue::try_from),
            ) else {
                return Err(format!("header {k:?} is not a valid HTTP header"));
            };
            builder = builder.header(name, value);
        }
    }
    if let Some(cookies) = event["cookies"].as_array() {
        let joined: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            builder = builder.header("cookie", joined.join("; "));
        }
    }
    let body = match event["body"].as_str() {
        None => Vec::new(),
        Some(b) if event["isBase64Encoded"].as_bool() == Some(true) => STANDARD
            .decode(b)
            .map_err(|e| format!("body is marked base64 but is not: {e}"))?,
        Some(b) => b.as_bytes().to_vec(),
    };
    builder
        .body(Body::from(body))
        .map_err(|e| format!("cannot build the request {method} {uri}: {e}"))
}

/// The proxy's response as an API Gateway 2.0 response.
async fn from_http(response: axum::response::Response) -> Value {
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (k, v) in &parts.headers {
        let Ok(v) = v.to_str() else { continue };
        if k == http::header::SET_COOKIE {
            cookies.push(Value::from(v));
            continue;
        }
        match headers.get_mut(k.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), Value::from(v));
            }
        }
    }
    let (body, base64) = match std::str::from_utf8(&bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(&bytes), true),
    };
    let mut out = json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        out["cookies"] = Value::Array(cookies);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<RouterEnv, String> {
        RouterEnv::from_vars(fake_env(vars))
    }

    #[test]
    fn settings_from_the_environment() {
        let e = env(&[
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_FUNCTION", "web"),
            (
                "SWITCHYARD_ROUTES",
                "/orders=orders, /orders/admin=admin,/pay=payments",
            ),
            ("SWITCHYARD_POLL_INTERVAL", "500ms"),
        ])
        .unwrap();
        assert_eq!(e.function_for("/orders/1"), Some("orders"));
        assert_eq!(e.function_for("/orders"), Some("orders"));
        assert_eq!(e.function_for("/orders/admin/x"), Some("admin"));
        assert_eq!(e.function_for("/ordersx"), Some("web"));
        assert_eq!(e.function_for("/"), Some("web"));
        assert_eq!(e.functions(), ["admin", "orders", "payments", "web"]);
        assert_eq!(e.poll_interval, Duration::from_millis(500));
        assert_eq!(e.cache_dir, PathBuf::from("/tmp/switchyard-cache"));

        let err = env(&[("SWITCHYARD_FUNCTION", "web")]).unwrap_err();
        assert!(err.contains("SWITCHYARD_STORE"), "{err}");
        let err = env(&[("SWITCHYARD_STORE", "ssm:/s")]).unwrap_err();
        assert!(err.contains("SWITCHYARD_FUNCTION"), "{err}");
        let err = env(&[
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_ROUTES", "orders"),
        ])
        .unwrap_err();
        assert!(err.contains("/prefix=function"), "{err}");
        let only_routes = env(&[
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_ROUTES", "/a=a"),
        ])
        .unwrap();
        assert_eq!(only_routes.function_for("/b"), None);
    }

    #[test]
    fn events_become_requests_and_responses_become_events() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/orders/1",
            "rawQueryString": "a=1&b=2",
            "cookies": ["s=1", "t=2"],
            "headers": {"x-switchyard-synthetic": "true", "content-type": "text/plain"},
            "requestContext": {"http": {"method": "POST"}},
            "body": "aGk=",
            "isBase64Encoded": true,
        });
        let req = to_http(&event, "orders").unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri(), "/orders/orders/1?a=1&b=2");
        assert_eq!(req.headers()["cookie"], "s=1; t=2");
        assert_eq!(req.headers()["x-switchyard-synthetic"], "true");
        let bad = json!({"rawPath": "/", "body": "%%%", "isBase64Encoded": true});
        assert!(to_http(&bad, "f").unwrap_err().contains("base64"));

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = http::Response::builder()
            .status(201)
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("vary", "a")
            .header("vary", "b")
            .body(axum::body::Body::from(vec![0xff, 0x00]))
            .unwrap();
        let out = rt.block_on(from_http(response));
        assert_eq!(out["statusCode"], 201);
        assert_eq!(out["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(out["headers"]["vary"], "a, b");
        assert_eq!(out["isBase64Encoded"], true);
        assert_eq!(out["body"], "/wA=");
    }
}
