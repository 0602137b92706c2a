//! What a policy instance may call on the host (`switchyard:policy/host`
//! and `request`), and the limiter that caps its memory.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use crate::bindings::{HostImports, RequestImports, TypesImports};
use crate::digest::Digest;
use crate::request::Request;

/// The per-instance host state: the request being decided and the limiter.
pub(crate) struct HostState {
    pub(crate) request: Option<Arc<Request>>,
    pub(crate) memory_limit: usize,
    /// Instantiation is over: memory allocated from here on is growth.
    pub(crate) instantiated: bool,
    /// Bytes all memories of the instance grew by since instantiation.
    pub(crate) memory_grown: usize,
    pub(crate) memory_denied: bool,
    pub(crate) digest: Digest,
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // What instantiation allocates (the initial images) is bounded by
        // the pool's max_memory_size; growth after it, of any memory (one
        // declared with 0 pages included), counts against the limit.
        if self.instantiated {
            let grown = self
                .memory_grown
                .saturating_add(desired.saturating_sub(current));
            if grown > self.memory_limit {
                self.memory_denied = true;
                return Ok(false);
            }
            self.memory_grown = grown;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl TypesImports for HostState {}

impl RequestImports for HostState {
    fn method(&mut self) -> String {
        self.request
            .as_ref()
            .map(|r| r.method.clone())
            .unwrap_or_default()
    }

    fn path(&mut self) -> String {
        self.request
            .as_ref()
            .map(|r| r.path.clone())
            .unwrap_or_default()
    }

    fn header(&mut self, name: String) -> Option<String> {
        self.request.as_ref()?.header(&name).map(|v| v.into_owned())
    }

    fn header_bucket(&mut self, name: String, salt: String) -> Option<u32> {
        let value = self.request.as_ref()?.header(&name)?;
        Some(bucket(&value, &salt))
    }

    fn headers(&mut self) -> Vec<(String, String)> {
        self.request
            .as_ref()
            .map(|r| r.headers())
            .unwrap_or_default()
    }
}

impl HostImports for HostState {
    fn bucket(&mut self, key: String, salt: String) -> u32 {
        bucket(&key, &salt)
    }

    fn log(&mut self, message: String) {
        let mut message = message;
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        tracing::debug!(target: "switchyard::policy", policy = %self.digest.short(), "{message}");
    }
}

/// The sticky bucket of `key` in `[0, 10000)`: FNV-1a 64 over
/// `salt ++ [0xff] ++ key`, then murmur3's fmix64, modulo 10000. The algorithm
/// is part of the contract (documented in `wit/policy.wit`).
pub fn bucket(key: &str, salt: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    salt.bytes().for_each(&mut eat);
    eat(0xff);
    key.bytes().for_each(&mut eat);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % 10_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_pinned_and_in_range() {
        // Pinned values (computed independently from the algorithm in
        // wit/policy.wit): changing it moves users between versions.
        assert_eq!(bucket("user-8472917", "orders"), 3410);
        assert_eq!(bucket("ab", "c"), 5753);
        assert_eq!(bucket("a", "bc"), 462);
        assert_eq!(bucket("", ""), 2295);
        for i in 0..1000 {
            assert!(bucket(&format!("u{i}"), "s") < 10_000);
        }
    }

    #[test]
    fn memory_growth_after_instantiation_counts_from_zero_pages_too() {
        let mut s = HostState {
            request: None,
            memory_limit: 16 << 20,
            instantiated: false,
            memory_grown: 0,
            memory_denied: false,
            digest: Digest::of(b""),
        };
        // Initial images, however large (the pool caps them), and a 0-page memory.
        assert!(s.memory_growing(0, 40 << 20, None).unwrap());
        assert!(s.memory_growing(0, 0, None).unwrap());
        s.instantiated = true;
        // Growth of any memory counts, including from 0 pages.
        assert!(s.memory_growing(0, 10 << 20, None).unwrap());
        assert!(
            s.memory_growing(40 << 20, (46 << 20) + 1, None)
                .is_ok_and(|ok| !ok)
        );
        assert!(s.memory_denied);
        assert!(s.memory_growing(40 << 20, 46 << 20, None).unwrap());
    }
}
