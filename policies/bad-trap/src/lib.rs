//! Test only: traps (a Rust panic, which aborts) on every request.
use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

struct Trap;

impl Policy for Trap {
    fn configure(_: &Config) -> Self {
        Trap
    }

    fn evaluate(&self, req: &Request, _: &Config) -> Decision {
        panic!("bad-trap always panics (path {})", req.path());
    }
}

export_policy!(Trap);
