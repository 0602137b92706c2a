//! Component builds of the policies in `policies/`, for host tests and benches.
//!
//! ```text
//! let bytes = std::fs::read(switchyard_test_artifacts::SYNTHETIC_HEADER)?;
//! ```
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/gen.rs"));

/// `sticky-canary` as published against `switchyard:policy@0.1.0` (a
/// component binary kept in `published-0.1.0/`, never rebuilt): hosts keep
/// loading policies built for the previous contract.
pub const STICKY_CANARY_0_1_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/published-0.1.0/sticky-canary.component.wasm"
);

/// `synthetic-header` as published against `switchyard:policy@0.1.0`.
pub const SYNTHETIC_HEADER_0_1_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/published-0.1.0/synthetic-header.component.wasm"
);
