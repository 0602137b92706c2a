//! The admin listener: health, metrics, the decide API and the live view,
//! loopback by default and optionally behind a bearer token
//! ([`AdminConfig`](crate::AdminConfig)); and the mesh extension's one
//! listener, which serves both it and the public front ends to its own
//! function.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::Proxy;
use crate::answer::{ProxyError, Shape};

mod decide;
mod live;

fn admin_routes() -> Router<Arc<Proxy>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/v1/decide", post(decide::decide_api))
        .route("/v1/shadow/{function}", get(live::shadow_report))
        .route("/v1/mesh", get(live::mesh_state))
}

/// The admin listener's routes: the decide API (counted in
/// `switchyard_decision_seconds`), `/healthz` with the functions,
/// `/metrics`, `/v1/mesh` and `/v1/shadow/{function}`, behind the bearer
/// token when [`AdminConfig::token`](crate::AdminConfig::token) is set; and
/// the live view's static page `/ui`, which is not.
pub fn admin_router(proxy: Arc<Proxy>) -> Router {
    let auth = middleware::from_fn_with_state(proxy.clone(), authorize);
    admin_routes()
        .fallback(|| async { ProxyError::AdminNotFound.answer(Shape::Http) })
        .layer(auth)
        .merge(live::ui_routes())
        .with_state(proxy)
}

/// Both, on one listener, with context values shown: the mesh extension's
/// loopback API, which only its own function reaches.
pub fn mesh_router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .merge(admin_routes())
        .fallback(|State(p): State<Arc<Proxy>>, req: AxumRequest| crate::public(p, req))
        .layer(axum::Extension(decide::ShowContext))
        .with_state(proxy)
}

/// 401 unless the request carries the admin token (when one is set). The
/// scheme is matched without regard to case (RFC 7235).
async fn authorize(State(p): State<Arc<Proxy>>, req: AxumRequest, next: Next) -> Response {
    if let Some(token) = &p.config.admin.token {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credentials)| credentials.trim_start());
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ProxyError::Unauthorized.answer(Shape::Http);
        }
    }
    next.run(req).await
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the host serves what it should: every expected function has a
/// policy, something is live, and no function the store names is left with
/// nothing live (its newest version unusable and no older usable one).
fn readiness(p: &Proxy) -> (bool, Vec<String>, Vec<String>) {
    let live = p.policies.functions();
    let missing: Vec<String> = p
        .config
        .expected_functions
        .iter()
        .filter(|f| !live.contains(f))
        .cloned()
        .collect();
    let ready = !live.is_empty() && missing.is_empty() && p.policies.unloadable().is_empty();
    (ready, live, missing)
}

/// The public readiness probe: whether the host serves what it should
/// (see the admin listener's `/healthz` for which functions and why).
pub(crate) fn ready(p: &Proxy) -> Response {
    let (ready, _, _) = readiness(p);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"ready": ready}))).into_response()
}

/// Readiness with the detail: the live functions, the expected ones
/// missing, those the store names that could not be loaded
/// (`unloadable`), and those served at an older version than the store's
/// newest (`held_back`), each with why.
async fn healthz(State(p): State<Arc<Proxy>>) -> Response {
    let (ready, live, missing) = readiness(&p);
    let (held_back, unloadable): (Vec<_>, Vec<_>) = p
        .policies
        .troubles()
        .into_iter()
        .partition(|(_, t)| t.serving.is_some());
    let held_back: serde_json::Map<String, serde_json::Value> = held_back
        .into_iter()
        .map(|(f, t)| {
            (
                f,
                json!({"newest": t.version, "reason": t.reason, "serving": t.serving}),
            )
        })
        .collect();
    let unloadable: serde_json::Map<String, serde_json::Value> = unloadable
        .into_iter()
        .map(|(f, t)| (f, json!({"newest": t.version, "reason": t.reason})))
        .collect();
    let mut body = json!({"ready": ready, "functions": live});
    if !missing.is_empty() {
        body["missing"] = json!(missing);
    }
    if !unloadable.is_empty() {
        body["unloadable"] = unloadable.into();
    }
    if !held_back.is_empty() {
        body["held_back"] = held_back.into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::testing::proxy_with;
    use axum::body::Body;
    use tower_service::Service;

    /// The bearer scheme is case-insensitive (RFC 7235); the token is not.
    #[tokio::test]
    async fn the_admin_token_is_read_as_rfc_7235_says() {
        let config = crate::ProxyConfig {
            admin: crate::AdminConfig {
                token: Some("s3cret".into()),
                reveal_context: false,
            },
            ..Default::default()
        };
        let (_tmp, p) = proxy_with(config).await;
        let mut admin = admin_router(p);
        for (authorization, status) in [
            (None, 401),
            (Some("Bearer s3cret"), 200),
            (Some("bearer s3cret"), 200),
            (Some("BEARER  s3cret"), 200),
            (Some("Bearer S3CRET"), 401),
            (Some("Basic s3cret"), 401),
            (Some("Bearers3cret"), 401),
        ] {
            for path in ["/healthz", "/v1/mesh", "/v1/shadow/orders"] {
                let mut req = http::Request::get(path);
                if let Some(a) = authorization {
                    req = req.header("authorization", a);
                }
                let r = admin.call(req.body(Body::empty()).unwrap()).await.unwrap();
                assert_eq!(r.status(), status, "{path} with {authorization:?}");
                if status == 401 {
                    assert_eq!(r.headers()["www-authenticate"], "Bearer");
                }
            }
        }
    }

    /// The decide API has the public listener's header limit.
    #[tokio::test]
    async fn the_decide_api_limits_headers() {
        let (_tmp, p) = proxy_with(crate::ProxyConfig::default()).await;
        let mut admin = admin_router(p);
        let body = r#"{"function":"orders","method":"GET","path":"/","headers":{}}"#;
        let ok = http::Request::post("/v1/decide")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(admin.call(ok).await.unwrap().status(), 200);
        let big = http::Request::post("/v1/decide")
            .header("x-big", "x".repeat(40 << 10))
            .body(Body::from(body))
            .unwrap();
        assert_eq!(admin.call(big).await.unwrap().status(), 431);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
