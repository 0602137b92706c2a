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
            chunks.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

export_policy!(Hog);
