//! The router function: Switchyard as a Lambda function (binary
//! `switchyard-lambda`, runtime `provided.al2023`) behind API Gateway (HTTP
//! API, payload format 2.0) or a function URL. Each event is routed exactly
//! as `switchyard serve` routes an HTTP request, through the same
//! decide-and-dispatch step; the caller's API Gateway `requestContext`
//! reaches the chosen version unchanged: the function's policy picks
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
//! | `SWITCHYARD_EMF_NAMESPACE` | CloudWatch namespace of the EMF metric line written to stdout per request (requests, errors, latency per function, version and traffic class); `off`: none | `Switchyard` |
//!
//! The store is polled by a background task between and during
//! invocations, never in an invocation's path: an invocation reads the live
//! policy set, which the poller swaps atomically.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchyard_config::Watcher;
use switchyard_proxy::ProxyConfig;
use tower::ServiceExt;

use crate::env::{EnvError, Vars};
use crate::start::{StartError, start};

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
    /// The namespace of the EMF line written per request
    /// (`SWITCHYARD_EMF_NAMESPACE`, default `Switchyard`; `off`: none).
    pub emf: Option<switchyard_proxy::Emf>,
}

impl RouterEnv {
    /// Reads the settings from the environment (see the module docs).
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let vars = Vars(var);
        let bad = |m: &str| EnvError(m.to_owned());
        let (store, cache_dir, poll_interval) = vars.store_settings()?;
        let emf = vars.emf()?;
        let function = vars.get("SWITCHYARD_FUNCTION");
        let mut routes = Vec::new();
        for pair in vars.list("SWITCHYARD_ROUTES") {
            let (prefix, f) = pair
                .split_once('=')
                .filter(|(p, f)| p.starts_with('/') && !f.is_empty())
                .ok_or_else(|| {
                    EnvError(format!(
                        "SWITCHYARD_ROUTES: {pair:?} is not /prefix=function \
                         (e.g. /orders=orders,/pay=payments)"
                    ))
                })?;
            routes.push((prefix.to_owned(), f.to_owned()));
        }
        if function.is_none() && routes.is_empty() {
            return Err(bad(
                "set SWITCHYARD_FUNCTION (the store function to route every request \
                        as) or SWITCHYARD_ROUTES (/prefix=function,...)",
            ));
        }
        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(RouterEnv {
            store,
            function,
            routes,
            cache_dir,
            poll_interval,
            emf,
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
    pub async fn init(env: RouterEnv) -> Result<Self, StartError> {
        let (watcher, proxy, poller) = start(
            &env.store,
            env.functions(),
            &env.cache_dir,
            env.poll_interval,
            ProxyConfig {
                expected_functions: env.functions(),
                emf: env.emf.clone().map(Arc::new),
                ..Default::default()
            },
        )
        .await?;
        Ok(RouterFunction {
            // Only the functions: an API Gateway caller reaches neither
            // the decide API nor the metrics.
            routes: switchyard_proxy::router(proxy),
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
        let request = match switchyard_dispatch::request_from_event(event, &format!("/{function}"))
        {
            Ok(r) => r.map(Body::from),
            Err(why) => return api_response(400, &json!({"error": why.to_string()})),
        };
        let response = match self.routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        switchyard_dispatch::response_event(&parts, &bytes)
    }
}

fn api_response(status: u16, body: &Value) -> Value {
    json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<RouterEnv, EnvError> {
        RouterEnv::from_vars(crate::env::fake_env(vars))
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
        assert!(err.to_string().contains("SWITCHYARD_STORE"), "{err}");
        let err = env(&[("SWITCHYARD_STORE", "ssm:/s")]).unwrap_err();
        assert!(err.to_string().contains("SWITCHYARD_FUNCTION"), "{err}");
        let err = env(&[
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_ROUTES", "orders"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("/prefix=function"), "{err}");
        let only_routes = env(&[
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_ROUTES", "/a=a"),
        ])
        .unwrap();
        assert_eq!(only_routes.function_for("/b"), None);
        // EMF lines by default, in the namespace given, or none.
        let ns = |e: &RouterEnv| e.emf.as_ref().map(|e| e.namespace().to_owned());
        assert_eq!(ns(&only_routes).as_deref(), Some("Switchyard"));
        let base = [
            ("SWITCHYARD_STORE", "ssm:/s"),
            ("SWITCHYARD_FUNCTION", "web"),
        ];
        let named = env(&[&base[..], &[("SWITCHYARD_EMF_NAMESPACE", "Shop/Mesh")]].concat());
        assert_eq!(ns(&named.unwrap()).as_deref(), Some("Shop/Mesh"));
        let off = env(&[&base[..], &[("SWITCHYARD_EMF_NAMESPACE", "off")]].concat());
        assert_eq!(ns(&off.unwrap()), None);
        let err =
            env(&[&base[..], &[("SWITCHYARD_EMF_NAMESPACE", "AWS/Lambda")]].concat()).unwrap_err();
        assert!(
            err.to_string().contains("SWITCHYARD_EMF_NAMESPACE"),
            "{err}"
        );
    }
}
