//! The route's `fallback`: a request the chosen version failed is sent
//! once more to stable, when it is idempotent (`idempotent-methods`) and
//! the failure was the version's (or the mesh's on its behalf), never one
//! the caller's own request caused.

use switchyard_core::{Fallback, Traffic};
use switchyard_dispatch::{Dispatcher, Target};

use crate::catalogue::FALLBACK;
use crate::steps::{self, Routing, Sent};

/// The fallback step: `sent` as it is, or stable's answer when the route
/// falls back and `to` failed; `decision` then says so.
pub(crate) async fn on_stable(
    r: &Routing<'_>,
    dispatcher: &dyn Dispatcher,
    to: &Target,
    decision: &mut switchyard_core::Decision,
    sent: Sent,
) -> Sent {
    let config = r.active.route.config();
    let (method, _) = r.call.method_and_path();
    if !sent.version_failed()
        || config.fallback != Some(Fallback::Stable)
        || to.qualifier == config.stable()
        || !config.idempotent(method)
    {
        return sent;
    }
    FALLBACK.counter(&[("function", r.function)]).increment(1);
    let status = sent.response.status().as_u16();
    let traffic: Traffic = decision.traffic;
    *decision = switchyard_core::fail_safe(&r.active.route, "");
    decision.traffic = traffic;
    decision.reason = format!(
        "fallback: {} answered {status}; retried on stable",
        to.qualifier
    );
    steps::send(r, dispatcher, decision).await.1
}
