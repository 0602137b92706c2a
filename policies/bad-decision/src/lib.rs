//! Test only: counts its calls on this instance (in the reason), and
//! answers a target no host can use when the request has `x-bad: true`, so
//! a test can see that the host replaces an instance that answered
//! nonsense, as it replaces one that trapped.
use std::sync::atomic::{AtomicU32, Ordering};

use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

struct BadDecision {
    calls: AtomicU32,
}

impl Policy for BadDecision {
    fn configure(_: &Config) -> Self {
        BadDecision {
            calls: AtomicU32::new(0),
        }
    }

    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if req.header_is_true("x-bad") {
            return Decision::qualifier("not a qualifier!").reason("asked to answer nonsense");
        }
        Decision::stable(cfg).reason(format_args!("call {n} on this instance"))
    }
}

export_policy!(BadDecision);
