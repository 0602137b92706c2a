//! Test only: never returns, to prove the host's evaluation budget.
use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

struct Loop;

impl Policy for Loop {
    fn configure(_: &Config) -> Self {
        Loop
    }

    fn evaluate(&self, req: &Request, _: &Config) -> Decision {
        let mut n: u64 = 0;
        loop {
            // Opaque to the optimiser, so the loop is really executed.
            n = std::hint::black_box(n.wrapping_add(req as *const _ as u64));
        }
    }
}

export_policy!(Loop);
