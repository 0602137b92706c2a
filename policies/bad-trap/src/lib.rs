//! Test only: traps (a Rust panic, which aborts) on every request, unless
//! it carries `x-bad-trap-recovered: true`.
use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

struct Trap;

impl Policy for Trap {
    fn configure(_: &Config) -> Self {
        Trap
    }

    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        // The one way out, so a test can show a tripped circuit breaker
        // closing again once the policy recovers.
        if req.header_is_true("x-bad-trap-recovered") {
            return Decision::stable(cfg).reason("bad-trap spared by x-bad-trap-recovered");
        }
        panic!("bad-trap always panics (path {})", req.path());
    }
}

export_policy!(Trap);
