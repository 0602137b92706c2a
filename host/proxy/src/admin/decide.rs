//! The decide API: `POST /v1/decide` with a request as JSON answers the
//! decision the function's live policy makes, for callers in any language;
//! its context values hidden unless asked for and allowed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_core::RequestJson;

use crate::Proxy;
use crate::answer::{ProxyError, Shape};

/// Marks a router whose decide API shows context values unasked (the mesh
/// extension's, which only its own function reaches).
#[derive(Debug, Clone, Copy)]
pub(super) struct ShowContext;

/// The `context` query parameter of the decide API.
#[derive(Debug, serde::Deserialize)]
pub(super) struct DecideQuery {
    context: Option<String>,
}

pub(super) async fn decide_api(
    State(p): State<Arc<Proxy>>,
    show: Option<axum::Extension<ShowContext>>,
    axum::extract::Query(query): axum::extract::Query<DecideQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let refuse = |e: ProxyError| e.answer(Shape::Http);
    if let Err(e) = crate::hygiene::check_headers(&p.config, &headers) {
        return refuse(e);
    }
    let asked = query.context.as_deref() == Some("show");
    if asked && show.is_none() && !p.config.admin.reveal_context {
        return refuse(ProxyError::RevealNotAllowed);
    }
    let reveal = show.is_some() || asked;
    let raw: RequestJson = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(ProxyError::BadRequestJson(format!(
                "invalid request JSON: {e}; expected {{\"function\":\"orders\",\"method\":\"GET\",\"path\":\"/x\",\"headers\":{{}}}}"
            )));
        }
    };
    let req = match raw.into_request(None) {
        Ok(r) => Arc::new(r),
        Err(e) => return refuse(ProxyError::BadRequestJson(e.to_string())),
    };
    let Some(active) = p.policies.get(&req.function) else {
        return refuse(ProxyError::UnknownFunction(req.function.clone()));
    };
    let mut decision = crate::decide::decide(&p, &active, &req, true);
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
