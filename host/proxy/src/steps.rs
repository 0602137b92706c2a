//! The request path once a policy has decided, shared by every front end:
//! [`dispatch_decided`] lists its steps in order, each a function in the
//! module of its concern (as Pingora names a request's phases).

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use switchyard_config::Active;
use switchyard_core::{Decision, TARGET_HEADER, TRAFFIC_HEADER};
use switchyard_dispatch::{Call, Dispatcher, Side, Target};

use crate::answer::{ProxyError, Shape};
use crate::{Proxy, count, fallback, guard, shadow, traces};

/// What sending a call came to.
pub(crate) struct Sent {
    /// The answer for the caller.
    pub(crate) response: Response,
    /// When the answer is a failure (a 5xx, a timeout, the version
    /// unreachable, a function error), which side failed.
    pub(crate) failure: Option<Side>,
}

impl Sent {
    /// Whether the version (or the mesh on its behalf) failed: what the
    /// guard counts and the fallback retries. A failure the caller's own
    /// request caused is neither.
    pub(crate) fn version_failed(&self) -> bool {
        matches!(self.failure, Some(Side::Upstream | Side::Internal))
    }
}

/// A decided request on its way: what every step after the decision reads.
pub(crate) struct Routing<'a> {
    pub(crate) p: &'a Proxy,
    pub(crate) function: &'a str,
    pub(crate) active: &'a Active,
    pub(crate) call: &'a Call,
    pub(crate) shape: Shape,
    /// Its trace: the span, and what the target continues.
    pub(crate) routed: &'a traces::Routed,
}

/// The steps after the decision: guard, trace, mirror, send, guard
/// record, fallback, shadow tee, trace end, finish.
///
/// `shape`: how the front end that took the request answers.
pub(crate) async fn dispatch_decided(
    p: &Proxy,
    function: &str,
    active: &Active,
    mut decision: Decision,
    call: Call,
    shape: Shape,
) -> Response {
    let decided = Instant::now();
    let guard = guard::apply(p, function, active, &mut decision);
    let routed = traces::Routed::begin(
        p.config.traces.as_deref(),
        call.headers(),
        decision.traffic,
        function,
    );
    let r = Routing {
        p,
        function,
        active,
        call: &call,
        shape,
        routed: &routed,
    };
    let (sent, judged) = match p.dispatcher(active) {
        Err(e) => (failed(ProxyError::Dispatch(e), shape), None),
        Ok(dispatcher) => {
            let tee = shadow::mirror(&r, &dispatcher, &decision);
            let started = guard.as_ref().map(|_| Instant::now());
            let (to, sent) = send(&r, &*dispatcher, &decision).await;
            let judged = guard::record(&r, guard.as_ref(), &to, &decision, &sent, started);
            let sent = fallback::on_stable(&r, &*dispatcher, &to, &mut decision, sent).await;
            (shadow::tee(sent, tee), judged)
        }
    };
    routed.end_routed(function, active, &decision, &call, &sent);
    let tail = matches!(&call, Call::Invoke(c) if c.log_type.as_deref() == Some("Tail"));
    let timing = Timing {
        tail,
        judged,
        decided: Some(decided),
    };
    finish(p, sent.response, function, &decision, shape, timing)
}

/// An Invoke API `DryRun` on a target that does not take invocation types
/// itself: decided and checked (the guard applied, the route's dispatch
/// block usable) and answered `204` as Lambda answers one, with the
/// version a call would have gone to; nothing is sent. Counted under that
/// version with status 204.
pub(crate) fn dry_run(
    p: &Proxy,
    function: &str,
    active: &Active,
    mut decision: Decision,
    shape: Shape,
) -> Response {
    let _ = guard::apply(p, function, active, &mut decision);
    let response = match p.dispatcher(active) {
        Err(e) => failed(ProxyError::Dispatch(e), shape).response,
        Ok(_) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = http::StatusCode::NO_CONTENT;
            r
        }
    };
    // Nothing was sent: no duration to record.
    let timing = Timing {
        tail: false,
        judged: None,
        decided: None,
    };
    finish(p, response, function, &decision, shape, timing)
}

/// An Invoke API `Event` on a target that does not take invocation types
/// itself: answered `202` with no body at once, as Lambda answers one, and
/// made in the background through every step of [`dispatch_decided`] (the
/// guard, fallback and counting by the status it gets), in one of a bounded
/// number of slots; with none free, `429` so the caller retries. `held`,
/// the body's share of the body budget, is kept until the call is done.
pub(crate) fn event(
    p: &std::sync::Arc<Proxy>,
    function: String,
    active: std::sync::Arc<Active>,
    decision: Decision,
    call: Call,
    held: crate::hygiene::Held,
) -> Response {
    let shape = Shape::LambdaApi;
    let Ok(slot) = p.events.clone().try_acquire_owned() else {
        let full = ProxyError::EventsFull {
            slots: p.config.clients.mirror_slots.max(1),
        };
        return count::for_function(p, full.answer(shape), &function);
    };
    let p = p.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let _held = held;
        let answer = dispatch_decided(&p, &function, &active, decision, call, shape).await;
        // The answer is nobody's; reading it to the end frees its connection.
        let _ = http_body_util::BodyExt::collect(answer.into_body()).await;
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = http::StatusCode::ACCEPTED;
    r
}

/// Sends the call to the decision's target (its secrets read first, the
/// trace continued); returns the target as sent.
pub(crate) async fn send(
    r: &Routing<'_>,
    dispatcher: &dyn Dispatcher,
    decision: &Decision,
) -> (Target, Sent) {
    let mut to = Target::primary(r.function, decision, r.active.route.config());
    to.propagate = r.routed.propagate(r.call.headers(), decision.traffic);
    let result = match r.p.clients.resolve_secrets(&mut to).await {
        Err(e) => Err(e),
        Ok(()) => dispatcher.send(r.call, &to).await,
    };
    let sent = match result {
        Ok(answer) => Sent {
            failure: answer.status().is_server_error().then_some(Side::Upstream),
            response: answer.map(Body::new),
        },
        Err(e) => {
            let (function, qualifier, code) = (&to.function, &to.qualifier, &e.code);
            match e.side {
                // Counted in switchyard_requests_total by status; a failing
                // version must not flood the log.
                Side::Upstream => {
                    tracing::debug!(target: "switchyard::dispatch", %function, %qualifier, %code, error = %e, "the version did not answer")
                }
                // The mesh's own configuration: worth an operator's eye.
                Side::Internal => {
                    tracing::warn!(target: "switchyard::dispatch", %function, %qualifier, %code, error = %e, "the mesh could not send the request; check the route's dispatch block")
                }
                Side::Client => {
                    tracing::debug!(target: "switchyard::dispatch", %function, %qualifier, %code, error = %e, "refused for what the caller sent")
                }
            }
            failed(ProxyError::Dispatch(e), r.shape)
        }
    };
    (to, sent)
}

/// An error answered in the front end's shape, as a failure of its side
/// when it is a 5xx.
fn failed(e: ProxyError, shape: Shape) -> Sent {
    Sent {
        failure: e.status().is_server_error().then_some(e.side()),
        response: e.answer(shape),
    }
}

/// Labels the answer for the request counter and tells the caller where it
/// went (an Invoke API caller also as Lambda tells it, in
/// `X-Amz-Executed-Version`, whatever the dispatch kind). Counted, and
/// judged by the guard (`judged`), when its body ends.
fn finish(
    p: &Proxy,
    mut response: Response,
    function: &str,
    decision: &Decision,
    shape: Shape,
    timing: Timing,
) -> Response {
    let Timing {
        tail,
        judged,
        decided,
    } = timing;
    let status = response.status();
    let success = status.is_success();
    let h = response.headers_mut();
    // A log tail asked of a target that keeps no Lambda log: the mesh's
    // own line about the call (Lambda's is the last 4 KB of the log).
    if tail && shape == Shape::LambdaApi && !h.contains_key(LOG_RESULT) {
        use base64::Engine as _;
        let mut line = format!(
            "switchyard: function={function} target={} traffic={} status={} reason={}\n",
            decision.target,
            decision.traffic.as_str(),
            status.as_u16(),
            decision.reason
        );
        line.truncate(line.floor_char_boundary(4096));
        if let Ok(v) =
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(line))
        {
            h.insert(LOG_RESULT, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&decision.target) {
        if shape == Shape::LambdaApi && success && !h.contains_key(EXECUTED_VERSION) {
            h.insert(EXECUTED_VERSION, v.clone());
        }
        h.insert(TARGET_NAME, v);
    }
    h.insert(
        TRAFFIC_NAME,
        HeaderValue::from_static(decision.traffic.as_str()),
    );
    count::counted_at_end(
        p,
        response,
        function,
        &decision.target,
        decision.traffic.as_str(),
        judged,
        decided,
    )
}

/// What [`finish`] settles when the answer's body ends.
struct Timing {
    /// The caller asked for a log tail (`X-Amz-Log-Type: Tail`).
    tail: bool,
    /// The guard's judgement of the answer, pending its end.
    judged: Option<guard::Pending>,
    /// When the request was decided, for its duration (`None`: nothing
    /// was sent, as for a dry run).
    decided: Option<Instant>,
}

/// The mesh's answer headers as header names (a `&str` name would be
/// parsed and copied on every insert).
const TARGET_NAME: HeaderName = HeaderName::from_static(TARGET_HEADER);
const TRAFFIC_NAME: HeaderName = HeaderName::from_static(TRAFFIC_HEADER);
const EXECUTED_VERSION: HeaderName = HeaderName::from_static("x-amz-executed-version");
const LOG_RESULT: HeaderName = HeaderName::from_static("x-amz-log-result");
