//! Component builds of the policies in `policies/`, for host tests and benches.
//!
//! ```text
//! let bytes = std::fs::read(switchyard_test_artifacts::SYNTHETIC_HEADER)?;
//! ```
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
