//! What a policy instance may call on the host (`switchyard:policy/host`
//! and `request`), and the limiter that caps its memory.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmStr};

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
    /// Header names registered with `host.header-id`; an id is an index.
    pub(crate) header_ids: Vec<http::HeaderName>,
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

/// Most header names one instance may register (`host.header-id`).
pub(crate) const MAX_HEADER_IDS: usize = 64;

/// The id `host.header-id` gives a name no header can have: it reads as
/// absent.
const NO_HEADER: u32 = u32::MAX;

impl HostState {
    fn request(&self) -> Option<&Request> {
        self.request.as_deref()
    }

    /// `host.header-id`: the same id for the same (case-insensitive) name.
    fn header_id(&mut self, name: &str) -> wasmtime::Result<u32> {
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            return Ok(NO_HEADER);
        };
        if let Some(id) = self.header_ids.iter().position(|n| *n == name) {
            return Ok(id as u32);
        }
        if self.header_ids.len() >= MAX_HEADER_IDS {
            wasmtime::bail!(
                "host.header-id: more than {MAX_HEADER_IDS} header names registered by one instance (register the names a policy reads in `configure`)"
            );
        }
        self.header_ids.push(name);
        Ok(self.header_ids.len() as u32 - 1)
    }

    /// The value of the header registered as `id`.
    fn header_at(&self, id: u32) -> wasmtime::Result<Option<std::borrow::Cow<'_, str>>> {
        if id == NO_HEADER {
            return Ok(None);
        }
        let Some(name) = self.header_ids.get(id as usize) else {
            wasmtime::bail!("header id {id} was never returned by host.header-id in this instance");
        };
        Ok(self.request().and_then(|r| r.header_named(name)))
    }
}

/// Links the `switchyard:policy` imports of every contract version a host
/// loads (`bindings::VERSIONS`). By hand rather than through the generated
/// `add_to_linker`: string arguments are read in place from the policy's
/// memory ([`WasmStr`]) instead of being copied into a `String` per call.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for version in crate::bindings::VERSIONS {
        let current = *version != "0.1.0";
        // The types interface has types only; it must still be there.
        linker.instance(&format!("switchyard:policy/types@{version}"))?;
        let mut request = linker.instance(&format!("switchyard:policy/request@{version}"))?;
        request.func_wrap("method", |s: Cx<'_>, (): ()| {
            Ok((s
                .data()
                .request()
                .map(|r| r.method.clone())
                .unwrap_or_default(),))
        })?;
        request.func_wrap("path", |s: Cx<'_>, (): ()| {
            Ok((s
                .data()
                .request()
                .map(|r| r.path.clone())
                .unwrap_or_default(),))
        })?;
        request.func_wrap("header", |s: Cx<'_>, (name,): (WasmStr,)| {
            let name = name.to_str(&s)?;
            let value = s.data().request().and_then(|r| r.header(&name));
            Ok((value.map(|v| v.into_owned()),))
        })?;
        request.func_wrap(
            "header-bucket",
            |s: Cx<'_>, (name, salt): (WasmStr, WasmStr)| {
                let name = name.to_str(&s)?;
                let bucket = match s.data().request().and_then(|r| r.header(&name)) {
                    Some(value) => Some(bucket(&value, &salt.to_str(&s)?)),
                    None => None,
                };
                Ok((bucket,))
            },
        )?;
        request.func_wrap("headers", |s: Cx<'_>, (): ()| {
            Ok((s.data().request().map(|r| r.headers()).unwrap_or_default(),))
        })?;
        if current {
            request.func_wrap("header-at", |s: Cx<'_>, (id,): (u32,)| {
                Ok((s.data().header_at(id)?.map(|v| v.into_owned()),))
            })?;
            request.func_wrap(
                "header-bucket-at",
                |s: Cx<'_>, (id, salt): (u32, WasmStr)| {
                    let bucket = match s.data().header_at(id)? {
                        Some(value) => Some(bucket(&value, &salt.to_str(&s)?)),
                        None => None,
                    };
                    Ok((bucket,))
                },
            )?;
        }
        let mut host = linker.instance(&format!("switchyard:policy/host@{version}"))?;
        host.func_wrap("bucket", |s: Cx<'_>, (key, salt): (WasmStr, WasmStr)| {
            Ok((bucket(&key.to_str(&s)?, &salt.to_str(&s)?),))
        })?;
        host.func_wrap("log", |s: Cx<'_>, (message,): (WasmStr,)| {
            let message = message.to_str(&s)?;
            let mut cut = message.len().min(1024);
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            tracing::debug!(target: "switchyard::policy", policy = %s.data().digest.short(), "{}", &message[..cut]);
            Ok(())
        })?;
        if current {
            host.func_wrap("header-id", |mut s: Cx<'_>, (name,): (WasmStr,)| {
                let name = name.to_str(&s)?.into_owned();
                Ok((s.data_mut().header_id(&name)?,))
            })?;
        }
    }
    Ok(())
}

type Cx<'a> = StoreContextMut<'a, HostState>;

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
    fn header_ids_are_per_name_bounded_and_read_the_request() {
        let mut s = HostState {
            request: Some(Arc::new(Request::new(
                "f",
                "GET",
                "/",
                [("X-User-Id", "u-1"), ("x-other", "o")],
            ))),
            memory_limit: 0,
            instantiated: true,
            memory_grown: 0,
            memory_denied: false,
            digest: Digest::of(b""),
            header_ids: Vec::new(),
        };
        let user = s.header_id("x-user-id").unwrap();
        assert_eq!(s.header_id("X-USER-ID").unwrap(), user, "case-insensitive");
        let other = s.header_id("x-other").unwrap();
        assert_ne!(other, user);
        let missing = s.header_id("x-missing").unwrap();
        assert_eq!(s.header_at(user).unwrap().as_deref(), Some("u-1"));
        assert_eq!(s.header_at(other).unwrap().as_deref(), Some("o"));
        assert_eq!(s.header_at(missing).unwrap(), None);
        // No header can have this name: it reads as absent, takes no slot.
        let bad = s.header_id("not a header").unwrap();
        assert_eq!(s.header_at(bad).unwrap(), None);
        assert_eq!(s.header_ids.len(), 3);
        // An id never handed out is the policy's bug: a trap, not a guess.
        let err = s.header_at(3).unwrap_err().to_string();
        assert!(err.contains("never returned by host.header-id"), "{err}");
        for i in 3..MAX_HEADER_IDS {
            s.header_id(&format!("x-h{i}")).unwrap();
        }
        assert_eq!(
            s.header_id("x-other").unwrap(),
            other,
            "known names still resolve"
        );
        let err = s.header_id("x-one-more").unwrap_err().to_string();
        assert!(err.contains("more than 64 header names"), "{err}");
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
            header_ids: Vec::new(),
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
