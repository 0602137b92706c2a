//! Getting a compiled policy for a digest: from memory (an LRU by digest),
//! from the precompiled disk cache, or fetched from the store, verified
//! and compiled off the async workers. Also the disk cache of the last
//! known good route configs, so a restart serves before the store answers.
//!
//! ```text
//! <cache>/compiled/sha256-<hex>.cwasm   machine code of a verified policy
//! <cache>/compiled/sha256-<hex>.json    its PolicyInfo (digest, imports, exports)
//! <cache>/compiled/sha256-<hex>.sig     its signatures, as the store had them (with trust keys)
//! <cache>/routes/<function>.json        the last route config version that went live
//! ```
//!
//! The precompiled code is loaded as machine code, so the cache is only
//! trusted when no one else could have written it: directories are made
//! `0700` and files `0600`, and a directory or file that is not this
//! user's or that others may write is ignored (the policy is fetched and
//! compiled again). With a [`CacheKey`] (`SWITCHYARD_CACHE_KEY`), every
//! `.cwasm` also carries an HMAC-SHA256 (`.mac`) checked before the code
//! is loaded, so a tampered file is recompiled, never run.
//!
//! With [`TrustKeys`], a policy is loaded only when one of its signatures
//! verifies under a trusted key: checked against the store before the blob
//! is fetched or compiled, and against the signatures cached beside the
//! code before a restart restores it.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use switchyard_core::{Digest, Engine, Policy, PolicyError, PolicyInfo};

use crate::sign::{SignatureError, TrustKeys};
use crate::store::{ConfigStore, StoreError, StoredRoute};

/// Why a policy could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store could not give the blob.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob is not a usable policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The host trusts signing keys, and no signature of the policy
    /// verifies under one of them.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The compile task died (a panic in the compiler).
    #[error("compiling {digest} did not finish: {message}")]
    Compile {
        /// The policy.
        digest: Digest,
        /// What the task reported.
        message: String,
    },
}

/// The secret that authenticates the precompiled cache's files.
#[derive(Clone)]
pub struct CacheKey(Arc<[u8]>);

impl CacheKey {
    /// A key from secret bytes (at least 16).
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= 16).then(|| CacheKey(bytes.into()))
    }

    /// The key in `SWITCHYARD_CACHE_KEY`, if set (at least 16 bytes;
    /// shorter is refused with a warning, and the cache runs unkeyed).
    pub fn from_env() -> Option<Self> {
        let raw = std::env::var("SWITCHYARD_CACHE_KEY").ok()?;
        let key = CacheKey::new(raw.trim().as_bytes());
        if key.is_none() {
            tracing::warn!(target: "switchyard::watch", "SWITCHYARD_CACHE_KEY is shorter than 16 bytes; ignored");
        }
        key
    }

    /// The HMAC state over `parts`, each length-prefixed so no two
    /// splits of the same bytes collide.
    fn keyed(&self, parts: &[&[u8]]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::{KeyInit, Mac};
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// Writes the MAC of `parts` to `mac_path` (hex).
    fn write_mac(&self, mac_path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
        let tag = hmac::Mac::finalize(self.keyed(parts)).into_bytes();
        atomic_write(mac_path, hex::encode(tag).as_bytes())
    }

    /// Whether `mac_path` holds the MAC of `parts` (compared in constant
    /// time); a missing or unreadable file does not.
    fn check_mac(&self, mac_path: &Path, parts: &[&[u8]]) -> bool {
        std::fs::read_to_string(mac_path)
            .ok()
            .and_then(|t| hex::decode(t.trim()).ok())
            .is_some_and(|tag| hmac::Mac::verify_slice(self.keyed(parts), &tag).is_ok())
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// Whether `path` (a cache directory or file) could only have been written
/// by this user: owned by the effective user, not writable by group or
/// others.
fn private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!("owned by uid {}, not this user ({me})", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {:o})",
                meta.mode() & 0o777
            ));
        }
        if meta.file_type().is_symlink() {
            return Err("a symbolic link".into());
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A cache directory of this user's that others may read or write (made
/// by an older version, or under a loose umask) is made `0700`; the files
/// in it are still checked one by one (and a loose one rewritten).
fn tighten(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            return;
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.is_dir() && meta.uid() == me && meta.mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Makes `dir` (and its parents) if missing, `0700` where this creates it.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Compiled policies by digest: memory, disk, then the store.
pub struct Loader {
    store: Arc<dyn ConfigStore>,
    engine: Engine,
    cache_dir: Option<PathBuf>,
    cache_key: Option<CacheKey>,
    trust: TrustKeys,
    compiled: Mutex<lru::LruCache<Digest, Arc<Policy>>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("store", &self.store.uri())
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl Loader {
    /// A loader reading blobs from `store`, compiling with `engine`, keeping
    /// `capacity` compiled policies in memory and, with a `cache_dir`,
    /// their machine code on disk.
    pub fn new(
        store: Arc<dyn ConfigStore>,
        engine: Engine,
        cache_dir: Option<PathBuf>,
        capacity: usize,
    ) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
        Loader {
            store,
            engine,
            cache_dir,
            cache_key: None,
            trust: TrustKeys::default(),
            compiled: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    /// Authenticates the precompiled cache with `key` (see [`CacheKey`]).
    pub fn with_cache_key(mut self, key: Option<CacheKey>) -> Self {
        self.cache_key = key;
        self
    }

    /// Loads only policies signed by one of `keys` (none: signatures are
    /// not required).
    pub fn with_trust(mut self, keys: TrustKeys) -> Self {
        self.trust = keys;
        self
    }

    /// Checks that `digest` carries a signature by a trusted key (when
    /// the host trusts any) and returns the stored signatures to cache
    /// beside the code.
    async fn check_signed(&self, digest: &Digest) -> Result<Option<Vec<String>>, LoadError> {
        if self.trust.is_empty() {
            return Ok(None);
        }
        let docs = self.store.signatures(digest).await?;
        match self.trust.verify(digest, &docs) {
            Ok(key) => {
                tracing::debug!(target: "switchyard::watch", %digest, %key, "policy signature verified");
                Ok(Some(docs))
            }
            Err(e) => {
                signature_refused(&e);
                Err(e.into())
            }
        }
    }

    /// Makes `sub` of the cache dir for writing: created `0700`, and (as
    /// for reading, [`Loader::trusted_dir`]) tightened when it is ours and
    /// refused when it is not private.
    fn writable_dir(&self, sub: &str) -> std::io::Result<()> {
        let root = self.cache_dir.as_ref().expect("called with a cache dir");
        let dir = root.join(sub);
        make_private_dir(&dir)?;
        for d in [root, &dir] {
            tighten(d);
            private(d).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// `sub` of the cache dir when the cache dir and it are private (see
    /// the module docs); a warning and `None` otherwise.
    fn trusted_dir(&self, sub: &str) -> Option<PathBuf> {
        let root = self.cache_dir.as_ref()?;
        let dir = root.join(sub);
        for d in [root, &dir] {
            tighten(d);
            if let Err(why) = private(d) {
                if d.exists() {
                    tracing::warn!(target: "switchyard::watch", dir = %d.display(), %why, "cache directory not private; ignored");
                }
                return None;
            }
        }
        Some(dir)
    }

    /// The store blobs come from.
    pub fn store(&self) -> &Arc<dyn ConfigStore> {
        &self.store
    }

    /// The compiled policy for `digest`: from memory, the disk cache, or
    /// fetched from the store, verified and compiled.
    pub async fn policy(&self, digest: &Digest) -> Result<Arc<Policy>, LoadError> {
        if let Some(p) = self.compiled.lock().expect("lock").get(digest) {
            return Ok(p.clone());
        }
        // Before anything of the policy is read or compiled: a host that
        // trusts signing keys compiles nothing unsigned.
        let signatures = self.check_signed(digest).await?;
        let policy = match self.precompiled(digest) {
            Some(p) => p,
            None => {
                let bytes = self.store.get_blob(digest).await?;
                let engine = self.engine.clone();
                let what = format!("{}/{digest}", self.store.uri());
                let policy =
                    tokio::task::spawn_blocking(move || Policy::new(&engine, &bytes, &what))
                        .await
                        .map_err(|e| LoadError::Compile {
                            digest: *digest,
                            message: e.to_string(),
                        })??;
                self.save_precompiled(&policy);
                policy
            }
        };
        if let Some(docs) = signatures {
            self.save_signatures(digest, &docs);
        }
        self.compiled
            .lock()
            .expect("lock")
            .put(*digest, policy.clone());
        Ok(policy)
    }

    /// The compiled policy for `digest` without asking the store: from
    /// memory, else the precompiled disk cache (then kept in memory, so
    /// routes sharing a policy share one copy).
    pub(crate) fn cached(&self, digest: &Digest) -> Option<Arc<Policy>> {
        if let Some(p) = self.compiled.lock().expect("lock").get(digest) {
            return Some(p.clone());
        }
        if !self.trust.is_empty() && !self.cached_signed(digest) {
            return None;
        }
        let policy = self.precompiled(digest)?;
        self.compiled
            .lock()
            .expect("lock")
            .put(*digest, policy.clone());
        Some(policy)
    }

    /// The policy from the precompiled disk cache, if it is there and
    /// loads.
    pub(crate) fn precompiled(&self, digest: &Digest) -> Option<Arc<Policy>> {
        let base = self
            .trusted_dir("compiled")?
            .join(format!("sha256-{}", digest.hex()));
        let refuse = |why: String| {
            tracing::warn!(target: "switchyard::watch", %digest, %why, "precompiled cache entry refused; recompiling");
            crate::catalogue::CACHE_REFUSED.counter(&[]).increment(1);
        };
        let (code_path, info_path) = (base.with_extension("cwasm"), base.with_extension("json"));
        if !code_path.exists() {
            return None;
        }
        for p in [&code_path, &info_path] {
            if let Err(why) = private(p) {
                refuse(format!("{}: {why}", p.display()));
                return None;
            }
        }
        let info_text = std::fs::read(&info_path).ok()?;
        let code = std::fs::read(&code_path).ok()?;
        if let Some(key) = &self.cache_key
            && !key.check_mac(&base.with_extension("mac"), &[&info_text, &code])
        {
            refuse("its MAC is missing or does not match SWITCHYARD_CACHE_KEY".into());
            return None;
        }
        let info: PolicyInfo = serde_json::from_slice(&info_text).ok()?;
        if &info.digest != digest {
            refuse(format!("its info names {}", info.digest));
            return None;
        }
        match Policy::from_precompiled_bytes(&self.engine, info, &code) {
            Ok(p) => Some(p),
            Err(e) => {
                refuse(e.to_string());
                None
            }
        }
    }

    /// Whether the signatures cached beside `digest`'s code verify under
    /// a trusted key (a restart restores no code the store could not
    /// vouch for now).
    fn cached_signed(&self, digest: &Digest) -> bool {
        let path = self.trusted_dir("compiled").map(|d| {
            d.join(format!("sha256-{}", digest.hex()))
                .with_extension("sig")
        });
        let docs: Vec<String> = path
            .as_deref()
            .filter(|p| private(p).is_ok())
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        match self.trust.verify(digest, &docs) {
            Ok(_) => true,
            Err(e) => {
                signature_refused(&e);
                tracing::warn!(target: "switchyard::watch", %digest, error = %e, "cached policy not restored");
                false
            }
        }
    }

    fn save_signatures(&self, digest: &Digest, docs: &[String]) {
        let Some(dir) = &self.cache_dir else {
            return;
        };
        let path = dir
            .join("compiled")
            .join(format!("sha256-{}", digest.hex()))
            .with_extension("sig");
        let write = || -> std::io::Result<()> {
            self.writable_dir("compiled")?;
            atomic_write(&path, &serde_json::to_vec(docs)?)
        };
        if let Err(e) = write() {
            tracing::warn!(target: "switchyard::watch", path = %path.display(), error = %e, "cannot cache a policy's signatures");
        }
    }

    fn save_precompiled(&self, policy: &Policy) {
        let Some(dir) = &self.cache_dir else {
            return;
        };
        let dir = dir.join("compiled");
        let base = dir.join(format!("sha256-{}", policy.digest().hex()));
        let write = || -> std::io::Result<()> {
            self.writable_dir("compiled")?;
            let bytes = policy.serialize().map_err(std::io::Error::other)?;
            let info = serde_json::to_vec(policy.info())?;
            if let Some(key) = &self.cache_key {
                key.write_mac(&base.with_extension("mac"), &[&info, &bytes])?;
            }
            atomic_write(&base.with_extension("cwasm"), &bytes)?;
            atomic_write(&base.with_extension("json"), &info)
        };
        if let Err(e) = write() {
            tracing::warn!(target: "switchyard::watch", dir = %dir.display(), error = %e, "cannot write the precompiled cache");
        }
    }

    /// Keeps `stored` as the last known good route of its function.
    pub(crate) fn save_route(&self, stored: &StoredRoute) {
        let Some(dir) = &self.cache_dir else {
            return;
        };
        let dir = dir.join("routes");
        let write = || -> std::io::Result<()> {
            self.writable_dir("routes")?;
            let path = dir.join(format!("{}.json", stored.function));
            let json = serde_json::to_vec(stored)?;
            if let Some(key) = &self.cache_key {
                key.write_mac(&path.with_extension("mac"), &[&json])?;
            }
            atomic_write(&path, &json)
        };
        if let Err(e) = write() {
            tracing::warn!(target: "switchyard::watch", dir = %dir.display(), error = %e, "cannot save the last known good route");
        }
    }

    /// Drops the last known good route of `function` (no longer in the
    /// store), so a restart does not bring it back.
    pub(crate) fn forget_route(&self, function: &str) {
        let Some(dir) = &self.cache_dir else {
            return;
        };
        let path = dir.join("routes").join(format!("{function}.json"));
        let _ = std::fs::remove_file(path.with_extension("mac"));
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(target: "switchyard::watch", path = %path.display(), error = %e, "cannot drop a deleted function's cached route");
        }
    }

    /// The last known good routes in the cache: each file with what it
    /// holds (`None` when it does not parse).
    pub(crate) fn cached_routes(&self) -> Vec<(PathBuf, Option<StoredRoute>)> {
        let Some(dir) = self.trusted_dir("routes") else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|x| x == "json"))
            .map(|path| {
                let stored = private(&path)
                    .ok()
                    .and_then(|()| std::fs::read(&path).ok())
                    .filter(|json| self.route_authentic(&path, json))
                    .and_then(|json| serde_json::from_slice::<StoredRoute>(&json).ok());
                (path, stored)
            })
            .collect()
    }

    /// Whether a cached route's bytes carry this host's MAC (always, with
    /// no cache key): a route says where traffic goes and with what
    /// context, so with a key it is authenticated like the code.
    fn route_authentic(&self, path: &Path, json: &[u8]) -> bool {
        let Some(key) = &self.cache_key else {
            return true;
        };
        let ok = key.check_mac(&path.with_extension("mac"), &[json]);
        if !ok {
            tracing::warn!(target: "switchyard::watch", path = %path.display(), "cached route's MAC is missing or does not match SWITCHYARD_CACHE_KEY; ignored");
            crate::catalogue::CACHE_REFUSED.counter(&[]).increment(1);
        }
        ok
    }
}

/// Counts and labels a policy refused for its signatures.
fn signature_refused(e: &SignatureError) {
    let why = match e {
        SignatureError::Unsigned { .. } => "unsigned",
        SignatureError::UntrustedSigner { .. } => "untrusted-signer",
        SignatureError::BadSignature { .. } => "bad-signature",
    };
    crate::catalogue::POLICY_SIGNATURE_REFUSED
        .counter(&[("why", why)])
        .increment(1);
}

/// Writes `bytes` to `path` as a new `0600` file swapped in whole.
fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{:016x}", crate::random::unique()));
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(&tmp)?.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}
