//! Polling the config store and hot-swapping policies, keeping the last
//! known good version whenever a new one fails to fetch, verify, compile or
//! pass its fixture cases.
//!
//! Data flows one way: store -> watcher -> [`PolicySet`] -> evaluation.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::cases::CaseFile;
use crate::engine::Engine;
use crate::policy::{Digest, EvaluatorPool, Policy, PolicyInfo};
use crate::route::Route;
use crate::store::{ConfigStore, StoreError, StoredRoute};

/// A function's live routing: its route config version and compiled policy.
#[derive(Debug)]
pub struct Active {
    /// The stored route config this came from.
    pub stored: StoredRoute,
    /// The route, ready for evaluation.
    pub route: Route,
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// Warm evaluators of the policy, for request handlers.
    pub pool: EvaluatorPool,
}

impl Active {
    fn new(stored: StoredRoute, route: Route, policy: Arc<Policy>) -> Self {
        let pool = EvaluatorPool::new(policy.clone(), 64);
        Active {
            stored,
            route,
            policy,
            pool,
        }
    }
}

/// The live policies, one per function, swapped atomically: a reader gets a
/// consistent snapshot, and in-flight evaluations finish on what they hold.
#[derive(Debug, Default)]
pub struct PolicySet {
    map: ArcSwap<HashMap<String, Arc<Active>>>,
}

impl PolicySet {
    /// The live routing of `function`.
    pub fn get(&self, function: &str) -> Option<Arc<Active>> {
        self.map.load().get(function).cloned()
    }

    /// Functions with a live policy, sorted.
    pub fn functions(&self) -> Vec<String> {
        let mut f: Vec<String> = self.map.load().keys().cloned().collect();
        f.sort();
        f
    }

    fn insert(&self, function: &str, active: Arc<Active>) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(function.to_owned(), active.clone());
            m
        });
    }
}

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Functions to watch; empty: every function in the store (one more
    /// store call per poll to list them).
    pub functions: Vec<String>,
    /// Time between polls (jittered by up to ±10 %).
    pub interval: Duration,
    /// Where compiled policies and the last known good route configs are
    /// kept across restarts; `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Compiled policies kept in memory, by digest.
    pub lru_capacity: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            functions: Vec::new(),
            interval: Duration::from_secs(10),
            cache_dir: None,
            lru_capacity: 64,
        }
    }
}

/// What one poll did for one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Already live.
    Unchanged {
        /// The live version.
        version: u64,
    },
    /// A new version went live.
    Swapped {
        /// The version replaced, if any.
        from: Option<u64>,
        /// The version now live.
        to: u64,
    },
    /// A new version was refused; the previous one (if any) keeps serving.
    Rejected {
        /// The refused version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The store has no route config for the function.
    Missing,
}

/// Counters, for logs and metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Polls attempted.
    pub polls: AtomicU64,
    /// Versions that went live.
    pub swaps: AtomicU64,
    /// Versions refused.
    pub rejections: AtomicU64,
    /// Polls that failed to reach the store.
    pub store_errors: AtomicU64,
}

/// Polls a store and keeps a [`PolicySet`] current.
pub struct Watcher {
    store: Arc<dyn ConfigStore>,
    engine: Engine,
    set: Arc<PolicySet>,
    config: WatchConfig,
    compiled: Mutex<lru::LruCache<Digest, Arc<Policy>>>,
    /// The last version refused per function, so it is not refetched and
    /// recompiled on every poll.
    refused: Mutex<HashMap<String, (u64, String)>>,
    /// Counters.
    pub stats: WatchStats,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("store", &self.store.uri())
            .field("config", &self.config)
            .finish()
    }
}

impl Watcher {
    /// A watcher over `store`, feeding a new [`PolicySet`].
    pub fn new(store: Arc<dyn ConfigStore>, engine: Engine, config: WatchConfig) -> Self {
        let cap = NonZeroUsize::new(config.lru_capacity.max(1)).expect("non-zero");
        Watcher {
            store,
            engine,
            set: Arc::new(PolicySet::default()),
            config,
            compiled: Mutex::new(lru::LruCache::new(cap)),
            refused: Mutex::new(HashMap::new()),
            stats: WatchStats::default(),
        }
    }

    /// The policy set this watcher keeps current.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.set.clone()
    }

    /// Loads the last known good route configs and their compiled policies
    /// from the cache dir, so a host that starts while the store is
    /// unreachable still serves. Returns the functions restored.
    pub fn restore_from_cache(&self) -> Vec<String> {
        let Some(dir) = &self.config.cache_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir.join("routes")) else {
            return Vec::new();
        };
        let mut restored = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let loaded = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<StoredRoute>(&t).ok())
                .and_then(|stored| {
                    let digest = stored.config.policy?;
                    let policy = self.load_precompiled(&digest)?;
                    let route = Route::new(stored.function.clone(), stored.config.clone()).ok()?;
                    Some(Active::new(stored, route, policy))
                });
            match loaded {
                Some(active) => {
                    let f = active.stored.function.clone();
                    tracing::info!(function = %f, version = active.stored.version, "restored last known good from cache");
                    self.set.insert(&f, Arc::new(active));
                    restored.push(f);
                }
                None => tracing::warn!(path = %path.display(), "unusable cache entry ignored"),
            }
        }
        restored.sort();
        restored
    }

    /// One poll: reads the latest route configs (one batched read) and
    /// swaps in every new version that passes all checks.
    pub async fn poll(&self) -> Result<Vec<(String, Outcome)>, StoreError> {
        self.stats.polls.fetch_add(1, Ordering::Relaxed);
        let result = self.poll_inner().await;
        if let Err(e) = &result {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            let kind = match e {
                StoreError::Throttled { .. } => "throttled",
                _ => "unavailable",
            };
            metrics::counter!("switchyard_store_errors_total", "kind" => kind).increment(1);
        }
        result
    }

    async fn poll_inner(&self) -> Result<Vec<(String, Outcome)>, StoreError> {
        let functions = if self.config.functions.is_empty() {
            self.store.functions().await?
        } else {
            self.config.functions.clone()
        };
        let latest = self.store.latest(&functions).await?;
        let mut outcomes = Vec::with_capacity(functions.len());
        for (function, stored) in functions.into_iter().zip(latest) {
            let outcome = match stored {
                None => Outcome::Missing,
                Some(stored) => self.consider(stored).await,
            };
            outcomes.push((function, outcome));
        }
        Ok(outcomes)
    }

    async fn consider(&self, stored: StoredRoute) -> Outcome {
        let function = stored.function.clone();
        let version = stored.version;
        let current = self.set.get(&function).map(|a| a.stored.version);
        if current == Some(version) {
            return Outcome::Unchanged { version };
        }
        if let Some((v, reason)) = self.refused.lock().expect("lock").get(&function)
            && *v == version
        {
            return Outcome::Rejected {
                version,
                reason: reason.clone(),
            };
        }
        match self.load(stored).await {
            Ok(active) => {
                self.save_route(&active.stored);
                self.set.insert(&function, Arc::new(active));
                self.refused.lock().expect("lock").remove(&function);
                self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("switchyard_swaps_total", "function" => function.clone())
                    .increment(1);
                metrics::gauge!("switchyard_route_version", "function" => function.clone())
                    .set(version as f64);
                tracing::info!(%function, from = ?current, to = version, "policy swapped");
                Outcome::Swapped {
                    from: current,
                    to: version,
                }
            }
            Err(reason) => {
                self.stats.rejections.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("switchyard_rejected_versions_total", "function" => function.clone())
                    .increment(1);
                tracing::error!(%function, version, %reason, live = ?current, "new version refused; the live one keeps serving");
                self.refused
                    .lock()
                    .expect("lock")
                    .insert(function, (version, reason.clone()));
                Outcome::Rejected { version, reason }
            }
        }
    }

    /// Fetches, verifies, compiles (off the async workers) and tests one
    /// route config version.
    async fn load(&self, stored: StoredRoute) -> Result<Active, String> {
        let digest = stored
            .config
            .policy
            .ok_or("the route config names no policy (\"policy\": \"sha256:<hex>\")")?;
        let policy = self.compile(&digest).await?;
        let route = Route::new(stored.function.clone(), stored.config.clone())
            .map_err(|e| e.to_string())?;
        if let Some(cases) = stored.config.cases {
            let bytes = self
                .store
                .get_blob(&cases)
                .await
                .map_err(|e| format!("fixture cases: {e}"))?;
            let text =
                String::from_utf8(bytes).map_err(|_| "fixture cases are not UTF-8".to_string())?;
            let file = CaseFile::from_json(&text).map_err(|e| format!("fixture cases: {e}"))?;
            let results = file
                .run(&policy)
                .map_err(|e| format!("fixture cases: {e}"))?;
            if let Some(bad) = results.iter().find(|r| !r.passed()) {
                return Err(format!(
                    "fixture case {:?} failed: {}",
                    bad.name,
                    bad.mismatches.join("; ")
                ));
            }
        }
        Ok(Active::new(stored, route, policy))
    }

    /// The compiled policy for `digest`: from memory, the disk cache, or
    /// fetched from the store, verified and compiled.
    pub async fn compile(&self, digest: &Digest) -> Result<Arc<Policy>, String> {
        if let Some(p) = self.compiled.lock().expect("lock").get(digest) {
            return Ok(p.clone());
        }
        let policy = match self.load_precompiled(digest) {
            Some(p) => p,
            None => {
                let bytes = self
                    .store
                    .get_blob(digest)
                    .await
                    .map_err(|e| e.to_string())?;
                let engine = self.engine.clone();
                let what = format!("{}/{digest}", self.store.uri());
                let policy =
                    tokio::task::spawn_blocking(move || Policy::new(&engine, &bytes, &what))
                        .await
                        .map_err(|e| format!("compiling {digest}: {e}"))?
                        .map_err(|e| e.to_string())?;
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

    fn load_precompiled(&self, digest: &Digest) -> Option<Arc<Policy>> {
        let dir = self.config.cache_dir.as_ref()?;
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
                tracing::warn!(%digest, error = %e, "precompiled cache entry unusable; recompiling");
                None
            }
        }
    }

    fn save_precompiled(&self, policy: &Policy) {
        let Some(dir) = &self.config.cache_dir else {
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
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the precompiled cache");
        }
    }

    fn save_route(&self, stored: &StoredRoute) {
        let Some(dir) = &self.config.cache_dir else {
            return;
        };
        let dir = dir.join("routes");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.json", stored.function));
            atomic_write(&path, serde_json::to_string(stored)?.as_bytes())
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot save the last known good route");
        }
    }

    /// Polls forever: every `interval` (±10 % jitter), backing off
    /// exponentially (up to 5 minutes) while the store fails or throttles.
    /// A poll that takes longer than [`POLL_TIMEOUT`] (a store that accepts
    /// connections and never answers) is abandoned and counts as a failure.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = self.config.interval;
            loop {
                let polled = tokio::time::timeout(POLL_TIMEOUT, self.poll())
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable {
                            store: self.store.uri(),
                            message: format!("no answer within {POLL_TIMEOUT:?}"),
                        })
                    });
                let wait = match polled {
                    Ok(_) => {
                        backoff = self.config.interval;
                        self.config.interval
                    }
                    Err(e) => {
                        backoff = (backoff * 2).min(Duration::from_secs(300));
                        tracing::warn!(store = %self.store.uri(), error = %e, retry_in = ?backoff, "poll failed; serving the last known good");
                        backoff
                    }
                };
                tokio::time::sleep(jitter(wait)).await;
            }
        })
    }
}

/// The longest a background poll may take, blob downloads and compiles of
/// large (Python, JavaScript) policies included.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(120);

/// `d` ± up to 10 %, so a fleet does not poll in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.9 + 0.2 * (f64::from(nanos % 1000) / 1000.0);
    d.mul_f64(factor)
}

fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
