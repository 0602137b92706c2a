//! Getting a compiled policy for a digest: from memory (an LRU by digest),
//! from the precompiled disk cache, or fetched from the store, verified
//! and compiled off the async workers. Also the disk cache of the last
//! known good route configs, so a restart serves before the store answers.
//!
//! ```text
//! <cache>/compiled/sha256-<hex>.cwasm   machine code of a verified policy
//! <cache>/compiled/sha256-<hex>.json    its PolicyInfo (digest, imports, exports)
//! <cache>/routes/<function>.json        the last route config version that went live
//! ```

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use switchyard_core::{Digest, Engine, Policy, PolicyError, PolicyInfo};

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
    /// The compile task died (a panic in the compiler).
    #[error("compiling {digest} did not finish: {message}")]
    Compile {
        /// The policy.
        digest: Digest,
        /// What the task reported.
        message: String,
    },
}

/// Compiled policies by digest: memory, disk, then the store.
pub struct Loader {
    store: Arc<dyn ConfigStore>,
    engine: Engine,
    cache_dir: Option<PathBuf>,
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
            compiled: Mutex::new(lru::LruCache::new(cap)),
        }
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
        self.compiled
            .lock()
            .expect("lock")
            .put(*digest, policy.clone());
        Ok(policy)
    }

    /// The policy from the precompiled disk cache, if it is there and
    /// loads.
    pub(crate) fn precompiled(&self, digest: &Digest) -> Option<Arc<Policy>> {
        let dir = self.cache_dir.as_ref()?;
        let base = dir
            .join("compiled")
            .join(format!("sha256-{}", digest.hex()));
        let info: PolicyInfo =
            serde_json::from_str(&std::fs::read_to_string(base.with_extension("json")).ok()?)
                .ok()?;
        if &info.digest != digest {
            return None;
        }
        match Policy::from_precompiled_file(&self.engine, info, &base.with_extension("cwasm")) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(target: "switchyard::watch", %digest, error = %e, "precompiled cache entry unusable; recompiling");
                None
            }
        }
    }

    fn save_precompiled(&self, policy: &Policy) {
        let Some(dir) = &self.cache_dir else {
            return;
        };
        let dir = dir.join("compiled");
        let base = dir.join(format!("sha256-{}", policy.digest().hex()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let bytes = policy.serialize().map_err(std::io::Error::other)?;
            atomic_write(&base.with_extension("cwasm"), &bytes)?;
            atomic_write(
                &base.with_extension("json"),
                serde_json::to_string(policy.info())?.as_bytes(),
            )
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
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.json", stored.function));
            atomic_write(&path, serde_json::to_string(stored)?.as_bytes())
        };
        if let Err(e) = write() {
            tracing::warn!(target: "switchyard::watch", dir = %dir.display(), error = %e, "cannot save the last known good route");
        }
    }

    /// The last known good routes in the cache: each file with what it
    /// holds (`None` when it does not parse).
    pub(crate) fn cached_routes(&self) -> Vec<(PathBuf, Option<StoredRoute>)> {
        let Some(dir) = &self.cache_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir.join("routes")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|entry| {
                let path = entry.path();
                let stored = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<StoredRoute>(&t).ok());
                (path, stored)
            })
            .collect()
    }
}

fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
