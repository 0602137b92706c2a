//! Numbers for jitter and unique file names: a splitmix64 over the clock,
//! the pid and a per-process counter, so watchers and writers asking at
//! the same instant (in one process or in several on one volume) get
//! different ones. Not for secrets.

use std::sync::atomic::{AtomicU64, Ordering};

/// A number no two calls are likely to share.
pub(crate) fn unique() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ SEQ
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .rotate_left(17)
        ^ u64::from(std::process::id()).rotate_left(40);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in [0, 1).
pub(crate) fn fraction() -> f64 {
    (unique() >> 11) as f64 / (1u64 << 53) as f64
}
