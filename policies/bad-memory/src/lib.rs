//! Test only: grows memory without bound, to prove the host's memory cap.
use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

struct Hog;

impl Policy for Hog {
    fn configure(_: &Config) -> Self {
        Hog
    }

    fn evaluate(&self, _: &Request, _: &Config) -> Decision {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Reserve without touching: memory grows at once, with no time
            // spent writing it, so the memory cap (not the budget) stops us.
            let mut chunk = Vec::<u8>::with_capacity(1 << 20);
            chunk.push(1);
            chunks.push(std::hint::black_box(chunk));
        }
    }
}

export_policy!(Hog);
