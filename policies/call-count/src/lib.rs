//! Test only: counts the calls this instance has decided and says so in
//! its reason (`call 1`, `call 2`, ...), so a host test can see when an
//! instance is replaced. The count lives in the instance's memory (a
//! static, not the configured value), so a new route config does not reset
//! it; only a new instance does. Always stable, production.
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct CallCount;

impl Policy for CallCount {
    fn configure(_: &Config) -> Self {
        CallCount
    }

    fn evaluate(&self, _: &Request, cfg: &Config) -> Decision {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Decision::stable(cfg).reason(format_args!("call {n}"))
    }
}

export_policy!(CallCount);
