//! The live view: `/ui` (a static page, compiled in) polls `GET /v1/mesh`
//! for every function's live version and its requests and errors per
//! target and traffic class; `GET /v1/shadow/{function}` has a function's
//! shadow comparisons.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use switchyard_core::Traffic;

use crate::Proxy;
use crate::activity::{self, BUCKET_SECONDS, BUCKETS, CLASSES, Series};
use crate::answer::{ProxyError, Shape};

/// The live view's page and script: static, compiled in, no data (the
/// page reads `/v1/mesh`, which the admin token guards).
pub(super) fn ui_routes() -> Router<Arc<Proxy>> {
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
                include_str!("../ui/index.html"),
                "text/html; charset=utf-8",
            )),
        )
        .route(
            "/ui/app.js",
            get(page(
                include_str!("../ui/app.js"),
                "text/javascript; charset=utf-8",
            )),
        )
}

/// The mesh as the live view shows it: every function with its live route
/// version, and its requests, errors (5xx) and client errors (4xx) per
/// target and traffic class (`none`: refused before a decision) over the
/// last 10 minutes (60 ten-second buckets, oldest first), fail-safes,
/// guard trips, shadow comparisons and a newer version not served (with
/// why); and the functions the store names that nothing is live for.
pub(super) async fn mesh_state(State(p): State<Arc<Proxy>>) -> Response {
    let now = activity::bucket_now();
    let troubles = p.policies.troubles();
    let mut functions = Vec::new();
    for function in p.policies.functions() {
        let Some(active) = p.policies.get(&function) else {
            continue;
        };
        // target -> one series per class
        let mut merged: BTreeMap<String, [Series; 3]> = Default::default();
        let mut fail_safes = 0;
        for slot in &p.handles {
            let h = slot.lock().unwrap_or_else(|e| e.into_inner());
            fail_safes += h.activity.fail_safes.get(&function).copied().unwrap_or(0);
            for (target, rings) in h.activity.of(&function).into_iter().flatten() {
                let series = merged.entry(target.clone()).or_default();
                for (ring, into) in rings.iter().zip(series.iter_mut()) {
                    ring.merge_into(now, into);
                }
            }
        }
        let mut series = Vec::new();
        for (target, classes) in merged {
            for (s, traffic) in classes.into_iter().zip(CLASSES) {
                let total: u64 = s.requests.iter().sum();
                if total == 0 {
                    continue;
                }
                series.push(json!({
                    "target": target,
                    "traffic": traffic,
                    "total": total,
                    "errors-total": s.errors.iter().sum::<u64>(),
                    "client-errors-total": s.client.iter().sum::<u64>(),
                    "requests": s.requests,
                    "errors": s.errors,
                    "client-errors": s.client,
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
            "held-back": troubles.get(&function).map(|t| json!({
                "newest": t.version,
                "reason": t.reason,
            })),
            "series": series,
        }));
    }
    let unloadable: Vec<_> = troubles
        .iter()
        .filter(|(_, t)| t.serving.is_none())
        .map(|(f, t)| json!({"function": f, "newest": t.version, "reason": t.reason}))
        .collect();
    axum::Json(json!({
        "bucket-seconds": BUCKET_SECONDS,
        "buckets": BUCKETS,
        "now": now * BUCKET_SECONDS,
        "functions": functions,
        "unloadable": unloadable,
    }))
    .into_response()
}

/// The shadow comparisons of a function: counts and the latest
/// differences (values redacted unless the route reveals them).
pub(super) async fn shadow_report(
    State(p): State<Arc<Proxy>>,
    axum::extract::Path(function): axum::extract::Path<String>,
) -> Response {
    if p.policies.get(&function).is_none() {
        return ProxyError::UnknownFunction(function).answer(Shape::Http);
    }
    axum::Json(p.shadows.report(&function)).into_response()
}
