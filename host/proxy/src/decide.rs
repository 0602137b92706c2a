//! The decide step every front end shares: the function's live policy
//! decides, the decision is timed, counted, sampled into the decision log
//! (synthetic traffic under its own target) and, when asked, captured for
//! `switchyard replay`.

use std::sync::Arc;
use std::time::Instant;

use switchyard_config::Active;
use switchyard_core::{
    DEFAULT_SYNTHETIC_HEADER, Decision, Request, Route, TRAFFIC_HEADER, Traffic,
};

use crate::Proxy;

/// Decides with the function's live policy, recording the decision.
/// `shown`: the caller shows the decision (the decide API), so its reason is
/// wanted even when no log line is.
pub(crate) fn decide(p: &Proxy, active: &Active, req: &Arc<Request>, shown: bool) -> Decision {
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
        crate::catalogue::FAIL_SAFE
            .counter(&[("function", &req.function), ("kind", e.kind())])
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
