//! Polling the config store and hot-swapping policies, keeping the last
//! known good version whenever a new one fails to fetch, verify, compile or
//! pass its fixture cases.
//!
//! Data flows one way: store -> watcher -> [`PolicySet`] -> evaluation.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use switchyard_core::{
    CaseError, CaseFile, Digest, Engine, EvaluatorPool, Policy, Route, RouteConfigError,
};

use crate::catalogue::{
    DEFERRED_VERSIONS, FUNCTIONS_REMOVED, LOOKED_BACK, REJECTED_VERSIONS, ROUTE_SCHEMA_TOO_NEW,
    ROUTE_VERSION, STORE_ERRORS, SWAPS,
};
use crate::loader::{LoadError, Loader};
use crate::store::{ConfigStore, StoreError, StoredRoute};

/// What a layer above the watcher makes of a route version before it goes
/// live (the dispatch layer: the version's parsed dispatcher), kept with
/// it in [`Active::prepared`].
pub type Prepared = Arc<dyn Any + Send + Sync>;

/// Checks a route version beyond what the core validates and prepares what
/// serving it needs (or nothing), once per version, off the request path.
/// An error refuses the version as a failing policy is refused.
pub type Prepare = Arc<
    dyn Fn(&Route) -> Result<Option<Prepared>, Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync,
>;

/// Why a route version was refused.
#[derive(Debug, thiserror::Error)]
pub enum RejectReason {
    /// The route config names no policy.
    #[error("the route config names no policy (\"policy\": \"sha256:<hex>\")")]
    NoPolicy,
    /// The policy could not be fetched, verified or compiled.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The route config is not usable.
    #[error(transparent)]
    Route(#[from] RouteConfigError),
    /// The fixture cases could not be read or run.
    #[error("fixture cases: {0}")]
    Cases(String),
    /// A fixture case failed.
    #[error("fixture case {name:?} failed: {mismatches}")]
    CaseFailed {
        /// The case.
        name: String,
        /// What differed.
        mismatches: String,
    },
    /// The layer above refused it (e.g. a `dispatch` block that does not parse).
    #[error("{0}")]
    Prepare(Box<dyn std::error::Error + Send + Sync>),
    /// The fixture cases could not be fetched.
    #[error("fixture cases: {0}")]
    CasesFetch(StoreError),
}

impl RejectReason {
    /// Whether trying the same version again later may succeed: the store
    /// was unreachable or throttling, or a blob was not there yet. Such a
    /// version is retried with backoff; any other refusal is remembered.
    pub fn is_transient(&self) -> bool {
        match self {
            RejectReason::Load(LoadError::Store(e)) | RejectReason::CasesFetch(e) => {
                e.is_transient()
            }
            _ => false,
        }
    }
}

impl From<CaseError> for RejectReason {
    fn from(e: CaseError) -> Self {
        RejectReason::Cases(e.to_string())
    }
}

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
    /// What the watcher's [`Prepare`] hook made of this version.
    pub prepared: Option<Prepared>,
}

impl Active {
    /// What the [`Prepare`] hook made of this version, as a `T`.
    pub fn prepared<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.prepared.as_ref()?.downcast_ref()
    }
}

/// Why a function the store names does not serve its newest version: the
/// version was refused, is unreadable, or cannot be had yet. Kept beside
/// the live policies so health checks can say which functions a host could
/// not load and why ([`PolicySet::troubles`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trouble {
    /// The version that could not be loaded, when the store names it.
    pub version: Option<u64>,
    /// Why.
    pub reason: String,
    /// The version served instead, if any.
    pub serving: Option<u64>,
}

/// The live policies, one per function, swapped atomically: a reader gets a
/// consistent snapshot, and in-flight evaluations finish on what they hold.
#[derive(Debug, Default)]
pub struct PolicySet {
    map: ArcSwap<HashMap<String, Arc<Active>>>,
    troubles: Mutex<BTreeMap<String, Trouble>>,
}

impl PolicySet {
    /// The functions whose newest version in the store is not the one
    /// served (refused, unreadable, not available yet, or no route config
    /// at all), with why and what is served instead, as of the last poll.
    pub fn troubles(&self) -> BTreeMap<String, Trouble> {
        let mut troubles = self.troubles.lock().expect("lock").clone();
        for (function, t) in troubles.iter_mut() {
            t.serving = self.get(function).map(|a| a.stored.version);
        }
        troubles
    }

    /// The functions the store names that this host serves nothing for,
    /// with why: what a readiness check reports.
    pub fn unloadable(&self) -> BTreeMap<String, Trouble> {
        let mut troubles = self.troubles();
        troubles.retain(|_, t| t.serving.is_none());
        troubles
    }

    fn set_trouble(&self, function: &str, trouble: Option<Trouble>) {
        let mut troubles = self.troubles.lock().expect("lock");
        match trouble {
            Some(t) => troubles.insert(function.to_owned(), t),
            None => troubles.remove(function),
        };
    }

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

    fn remove(&self, function: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(function);
            m
        });
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
    /// Authenticates the precompiled cache (`SWITCHYARD_CACHE_KEY`).
    pub cache_key: Option<crate::CacheKey>,
    /// Keys a policy must be signed by (`--trust-key`); empty: signatures
    /// are not required.
    pub trust: crate::TrustKeys,
    /// How long a live function must be missing from the store's listing,
    /// over at least [`UNLIST_LISTINGS`] successful listings in a row,
    /// before it is no longer routed: one empty or shrunken listing (a
    /// store being restored, a folder swapped) never empties the mesh.
    pub remove_after: Duration,
}

/// Consecutive successful listings that must all leave a live function out
/// before it is unrouted (and [`WatchConfig::remove_after`] must have
/// passed since the first).
pub const UNLIST_LISTINGS: u32 = 3;

/// How many route versions older than an unusable newest one a host with
/// nothing live for the function tries, newest first, before it gives up.
pub const LOOK_BACK_VERSIONS: usize = 10;

/// How often a problem that persists (a corrupt newest version, say) is
/// logged again at WARN; in between, each poll logs it at DEBUG.
pub const REMIND_EVERY: Duration = Duration::from_secs(600);

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            functions: Vec::new(),
            interval: Duration::from_secs(10),
            cache_dir: None,
            lru_capacity: 64,
            cache_key: None,
            trust: crate::TrustKeys::default(),
            remove_after: Duration::from_secs(60),
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
    /// A new version could not be had for now (the store failed for it, or
    /// its blob is not there yet): retried at a later poll, with backoff.
    Deferred {
        /// The version waiting.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The function's entry in the store could not be read or decoded (a
    /// corrupt version); the live version keeps serving and the other
    /// functions are unaffected.
    Unreadable {
        /// The error's kind (`corrupt`, `not-found`, ...).
        kind: &'static str,
        /// The version unreadable, when the store could say.
        version: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A successful listing of the store does not name a live function;
    /// it keeps serving until enough listings in a row confirm it is gone
    /// (see [`WatchConfig::remove_after`]).
    Unlisted {
        /// Successful listings in a row without it, this one included.
        listings: u32,
    },
    /// Enough successful listings of the store in a row no longer name
    /// the function: it is no longer routed.
    Removed,
    /// The host had nothing live for the function and its newest version
    /// could not be used, so it serves the newest usable one from the
    /// store's history, as a running host that kept its last known good
    /// does.
    LookedBack {
        /// The newest version, not used.
        newest: u64,
        /// Why it was not used.
        reason: String,
        /// The version now live.
        to: u64,
    },
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
    loader: Arc<Loader>,
    set: Arc<PolicySet>,
    config: WatchConfig,
    prepare: std::sync::OnceLock<Prepare>,
    /// The last version refused per function, so it is not refetched and
    /// recompiled on every poll.
    refused: Mutex<HashMap<String, (u64, String)>>,
    /// Versions that failed transiently: (version, attempts, not before).
    deferred: Mutex<HashMap<String, (u64, u32, std::time::Instant)>>,
    /// The newest version past which the store's history was searched, per
    /// function, so a host looks back once per bad version, not per poll.
    looked_back: Mutex<HashMap<String, u64>>,
    /// Live functions missing from the listing: listings in a row, since.
    unlisted: Mutex<HashMap<String, (u32, Instant)>>,
    /// The last problem logged at WARN per function, and when.
    warned: Mutex<HashMap<String, (String, Instant)>>,
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
        let loader = Loader::new(
            store.clone(),
            engine,
            config.cache_dir.clone(),
            config.lru_capacity,
        )
        .with_cache_key(config.cache_key.clone())
        .with_trust(config.trust.clone());
        Self::with_loader(store, Arc::new(loader), config)
    }

    /// A watcher over `store` that gets its compiled policies from
    /// `loader`, which other watchers may share (a process embedding many
    /// watchers of one policy compiles it once; the fleet test's thousand
    /// hosts do). The loader's own cache settings apply, not `config`'s.
    pub fn with_loader(
        store: Arc<dyn ConfigStore>,
        loader: Arc<Loader>,
        config: WatchConfig,
    ) -> Self {
        Watcher {
            loader,
            store,
            set: Arc::new(PolicySet::default()),
            config,
            prepare: std::sync::OnceLock::new(),
            refused: Mutex::new(HashMap::new()),
            deferred: Mutex::new(HashMap::new()),
            looked_back: Mutex::new(HashMap::new()),
            unlisted: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
            stats: WatchStats::default(),
        }
    }

    /// Runs `prepare` on every route version before it goes live (restored
    /// from the cache or read from the store); a version it refuses never
    /// replaces the live one. Set it before the first poll; once set, it
    /// stays (a second call returns `false` and changes nothing).
    pub fn set_prepare(&self, prepare: Prepare) -> bool {
        self.prepare.set(prepare).is_ok()
    }

    /// The store polled.
    pub fn store(&self) -> &Arc<dyn ConfigStore> {
        &self.store
    }

    /// How often it polls.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    /// The policy set this watcher keeps current.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.set.clone()
    }

    /// Loads the last known good route configs and their compiled policies
    /// from the cache dir, so a host that starts while the store is
    /// unreachable still serves. Returns the functions restored.
    pub fn restore_from_cache(&self) -> Vec<String> {
        let mut restored = Vec::new();
        for (path, stored) in self.loader.cached_routes() {
            let loaded = stored.and_then(|stored| {
                let digest = stored.config.policy?;
                // One compiled copy per digest, however many routes name it.
                let policy = self.loader.cached(&digest)?;
                self.activate(stored, policy).ok()
            });
            match loaded {
                Some(active) => {
                    let f = active.stored.function.clone();
                    tracing::info!(target: "switchyard::watch", function = %f, version = active.stored.version, "restored last known good from cache");
                    self.set.insert(&f, Arc::new(active));
                    restored.push(f);
                }
                None => {
                    tracing::warn!(target: "switchyard::watch", path = %path.display(), "unusable cache entry ignored")
                }
            }
        }
        restored.sort();
        restored
    }

    /// The route ready to serve: validated, prepared, with a pool.
    fn activate(&self, stored: StoredRoute, policy: Arc<Policy>) -> Result<Active, RejectReason> {
        let route = Route::new(stored.function.clone(), stored.config.clone())?;
        let prepared = match self.prepare.get() {
            Some(prepare) => prepare(&route).map_err(RejectReason::Prepare)?,
            None => None,
        };
        Ok(Active {
            stored,
            route,
            pool: EvaluatorPool::new(policy.clone(), 64),
            policy,
            prepared,
        })
    }

    /// One poll: reads the latest route configs (one batched read) and
    /// swaps in every new version that passes all checks.
    pub async fn poll(&self) -> Result<Vec<(String, Outcome)>, StoreError> {
        self.stats.polls.fetch_add(1, Ordering::Relaxed);
        let result = self.poll_inner().await;
        if let Err(e) = &result {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            STORE_ERRORS.counter(&[("kind", e.kind())]).increment(1);
        }
        result
    }

    async fn poll_inner(&self) -> Result<Vec<(String, Outcome)>, StoreError> {
        let listing = self.config.functions.is_empty();
        let functions = if listing {
            self.store.functions().await?
        } else {
            self.config.functions.clone()
        };
        let latest = self.store.latest(&functions).await?;
        let mut outcomes = Vec::with_capacity(functions.len());
        if listing {
            // Only a successful listing unroutes (a not-found or an outage
            // may be transient), and only once enough of them agree.
            outcomes.extend(self.unlist(&functions));
        }
        for (function, entry) in functions.into_iter().zip(latest) {
            let mut outcome = match entry {
                Ok(None) => Outcome::Missing,
                Ok(Some(stored)) => self.consider(stored).await,
                Err(e) => self.unreadable(&function, e),
            };
            if self.set.get(&function).is_none()
                && let Some(older) = self.look_back(&function, &outcome).await
            {
                outcome = older;
            }
            self.note(&function, &outcome);
            outcomes.push((function, outcome));
        }
        Ok(outcomes)
    }

    /// The live functions a successful listing leaves out. Each keeps
    /// serving until [`UNLIST_LISTINGS`] listings in a row over
    /// [`WatchConfig::remove_after`] leave it out; then it is unrouted and
    /// its cached route forgotten.
    fn unlist(&self, functions: &[String]) -> Vec<(String, Outcome)> {
        let listed: std::collections::HashSet<&String> = functions.iter().collect();
        let mut unlisted = self.unlisted.lock().expect("lock");
        unlisted.retain(|f, _| !listed.contains(f));
        let mut outcomes = Vec::new();
        for gone in self
            .set
            .functions()
            .into_iter()
            .filter(|f| !listed.contains(f))
        {
            let (listings, since) = {
                let seen = unlisted.entry(gone.clone()).or_insert((0, Instant::now()));
                seen.0 += 1;
                *seen
            };
            if listings < UNLIST_LISTINGS || since.elapsed() < self.config.remove_after {
                if listings == 1 {
                    tracing::warn!(target: "switchyard::watch", function = %gone, confirm_after = UNLIST_LISTINGS, remove_after = ?self.config.remove_after, "live function missing from the store's listing; still routed until later listings confirm it is gone");
                }
                outcomes.push((gone, Outcome::Unlisted { listings }));
                continue;
            }
            unlisted.remove(&gone);
            self.set.remove(&gone);
            self.set.set_trouble(&gone, None);
            self.loader.forget_route(&gone);
            self.refused.lock().expect("lock").remove(&gone);
            self.deferred.lock().expect("lock").remove(&gone);
            self.looked_back.lock().expect("lock").remove(&gone);
            self.warned.lock().expect("lock").remove(&gone);
            tracing::warn!(target: "switchyard::watch", function = %gone, listings, "no longer in the store; no longer routed");
            FUNCTIONS_REMOVED.counter(&[]).increment(1);
            outcomes.push((gone, Outcome::Removed));
        }
        // A function that never loaded and is no longer listed has
        // nothing to report.
        self.set
            .troubles
            .lock()
            .expect("lock")
            .retain(|f, _| listed.contains(f) || self.set.get(f).is_some());
        outcomes
    }

    /// A function whose entry could not be read or decoded: counted, and
    /// logged at WARN when the problem is new (DEBUG while it persists,
    /// with a reminder every [`REMIND_EVERY`]).
    fn unreadable(&self, function: &str, e: StoreError) -> Outcome {
        let kind = e.kind();
        STORE_ERRORS.counter(&[("kind", kind)]).increment(1);
        if kind == "too-new" {
            ROUTE_SCHEMA_TOO_NEW
                .counter(&[("function", function)])
                .increment(1);
        }
        let reason = e.to_string();
        let live = self.set.get(function).map(|a| a.stored.version);
        if self.is_news(function, &reason) {
            tracing::warn!(target: "switchyard::watch", %function, kind, error = %reason, ?live, "route config unreadable; {}", keeps_serving(live));
        } else {
            tracing::debug!(target: "switchyard::watch", %function, kind, error = %reason, ?live, "route config still unreadable");
        }
        Outcome::Unreadable {
            kind,
            version: e.version(),
            reason,
        }
    }

    /// Whether `problem` is new for `function`, or last logged at WARN
    /// longer than [`REMIND_EVERY`] ago (and so is logged now).
    fn is_news(&self, function: &str, problem: &str) -> bool {
        let mut warned = self.warned.lock().expect("lock");
        match warned.get(function) {
            Some((p, at)) if p == problem && at.elapsed() < REMIND_EVERY => false,
            _ => {
                warned.insert(function.to_owned(), (problem.to_owned(), Instant::now()));
                true
            }
        }
    }

    /// For a function with nothing live whose newest version cannot be
    /// used (refused, unreadable, its blob not there): the newest usable
    /// one of the [`LOOK_BACK_VERSIONS`] before it in the store's history,
    /// made live, as a running host that kept its last known good serves
    /// it. One history read per bad version, not per poll (a store error
    /// is retried at the next poll), so a fleet of cold starts after a bad
    /// publish costs the store one extra read each.
    async fn look_back(&self, function: &str, outcome: &Outcome) -> Option<Outcome> {
        let (newest, reason) = match outcome {
            Outcome::Rejected { version, reason } | Outcome::Deferred { version, reason } => {
                (*version, reason)
            }
            Outcome::Unreadable {
                kind,
                version,
                reason,
            } if !matches!(*kind, "throttled" | "unavailable" | "not-found") => {
                (version.unwrap_or(u64::MAX), reason)
            }
            _ => return None,
        };
        if self.looked_back.lock().expect("lock").get(function) == Some(&newest) {
            return None;
        }
        let history = match self.store.history(function).await {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(target: "switchyard::watch", %function, newest, error = %e, "could not read the store's history for an older usable version; retrying at the next poll");
                return None;
            }
        };
        let mut tried = 0;
        for entry in history.into_iter().rev() {
            let version = match &entry {
                Ok(stored) => stored.version,
                Err(e) => e.version().unwrap_or(u64::MAX),
            };
            if version >= newest {
                continue;
            }
            if tried == LOOK_BACK_VERSIONS {
                break;
            }
            tried += 1;
            let Ok(stored) = entry else { continue };
            match self.load(stored).await {
                Ok(active) => {
                    let to = active.stored.version;
                    self.loader.save_route(&active.stored);
                    self.set.insert(function, Arc::new(active));
                    self.looked_back
                        .lock()
                        .expect("lock")
                        .insert(function.to_owned(), newest);
                    self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                    SWAPS.counter(&[("function", function)]).increment(1);
                    LOOKED_BACK.counter(&[("function", function)]).increment(1);
                    ROUTE_VERSION
                        .gauge(&[("function", function)])
                        .set(to as f64);
                    tracing::warn!(target: "switchyard::watch", %function, newest, %reason, serving = to, "newest version unusable and nothing live here: serving the newest usable version in the store's history, as running hosts keep doing");
                    return Some(Outcome::LookedBack {
                        newest,
                        reason: reason.clone(),
                        to,
                    });
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(target: "switchyard::watch", %function, version, error = %e, "an older version could not be fetched; looking back again at the next poll");
                    return None;
                }
                Err(e) => {
                    tracing::debug!(target: "switchyard::watch", %function, version, error = %e, "older version unusable too")
                }
            }
        }
        self.looked_back
            .lock()
            .expect("lock")
            .insert(function.to_owned(), newest);
        tracing::error!(target: "switchyard::watch", %function, newest, %reason, tried, "no usable version among the older ones tried; nothing is served for this function until a usable version is published");
        None
    }

    /// Records what the poll found for `function` where health checks read
    /// it ([`PolicySet::troubles`]).
    fn note(&self, function: &str, outcome: &Outcome) {
        let trouble = |version: Option<u64>, reason: &str| {
            Some(Trouble {
                version,
                reason: reason.to_owned(),
                serving: None,
            })
        };
        let trouble = match outcome {
            Outcome::Rejected { version, reason } | Outcome::Deferred { version, reason } => {
                trouble(Some(*version), reason)
            }
            Outcome::LookedBack { newest, reason, .. } => trouble(Some(*newest), reason),
            Outcome::Unreadable {
                version, reason, ..
            } => trouble(*version, reason),
            Outcome::Missing => trouble(None, "the store has no route config for it"),
            Outcome::Unchanged { .. } | Outcome::Swapped { .. } | Outcome::Removed => {
                self.warned.lock().expect("lock").remove(function);
                None
            }
            Outcome::Unlisted { .. } => return,
        };
        self.set.set_trouble(function, trouble);
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
        let attempts = match self.deferred.lock().expect("lock").get(&function) {
            Some(&(v, attempts, not_before)) if v == version => {
                if std::time::Instant::now() < not_before {
                    return Outcome::Deferred {
                        version,
                        reason: format!("retrying after attempt {attempts}"),
                    };
                }
                attempts
            }
            _ => 0,
        };
        match self.load(stored).await {
            Ok(active) => {
                self.loader.save_route(&active.stored);
                self.set.insert(&function, Arc::new(active));
                self.refused.lock().expect("lock").remove(&function);
                self.deferred.lock().expect("lock").remove(&function);
                self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                SWAPS.counter(&[("function", &function)]).increment(1);
                ROUTE_VERSION
                    .gauge(&[("function", &function)])
                    .set(version as f64);
                tracing::info!(target: "switchyard::watch", %function, from = ?current, to = version, "policy swapped");
                Outcome::Swapped {
                    from: current,
                    to: version,
                }
            }
            Err(reason) if reason.is_transient() => {
                // Back off per version: 1, 2, 4... intervals, up to 5 min.
                let attempts = attempts + 1;
                let wait = (self.config.interval * 2u32.saturating_pow(attempts - 1))
                    .min(Duration::from_secs(300));
                self.deferred.lock().expect("lock").insert(
                    function.clone(),
                    (version, attempts, std::time::Instant::now() + wait),
                );
                let reason = reason.to_string();
                DEFERRED_VERSIONS
                    .counter(&[("function", &function)])
                    .increment(1);
                tracing::warn!(target: "switchyard::watch", %function, version, %reason, attempts, retry_in = ?wait, live = ?current, "new version not available yet; retrying; {}", keeps_serving(current));
                Outcome::Deferred { version, reason }
            }
            Err(reason) => {
                let reason = reason.to_string();
                self.stats.rejections.fetch_add(1, Ordering::Relaxed);
                REJECTED_VERSIONS
                    .counter(&[("function", &function)])
                    .increment(1);
                tracing::error!(target: "switchyard::watch", %function, version, %reason, live = ?current, "new version refused; {}", keeps_serving(current));
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
    async fn load(&self, stored: StoredRoute) -> Result<Active, RejectReason> {
        let digest = stored.config.policy.ok_or(RejectReason::NoPolicy)?;
        let policy = self.loader.policy(&digest).await?;
        if let Some(cases) = stored.config.cases {
            let bytes = self
                .store
                .get_blob(&cases)
                .await
                .map_err(RejectReason::CasesFetch)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| RejectReason::Cases("the file is not UTF-8".into()))?;
            let results = CaseFile::from_json(&text)?.run(&policy)?;
            if let Some(bad) = results.iter().find(|r| !r.passed()) {
                return Err(RejectReason::CaseFailed {
                    name: bad.name.clone(),
                    mismatches: bad.mismatches.join("; "),
                });
            }
        }
        self.activate(stored, policy)
    }

    /// The compiled policy for `digest` (see [`Loader::policy`]).
    pub async fn compile(&self, digest: &Digest) -> Result<Arc<Policy>, LoadError> {
        self.loader.policy(digest).await
    }

    /// Polls forever: every `interval` (±10 % jitter), backing off
    /// exponentially (up to 5 minutes) while the store fails or throttles.
    /// A poll that takes longer than [`POLL_TIMEOUT`] (a store that accepts
    /// connections and never answers) is abandoned and counts as a failure.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // An embedding's zero interval would spin on the store.
            let interval = self.config.interval.max(crate::MIN_POLL_INTERVAL);
            // Failures (the store down) back off exponentially. Throttling
            // is the store's quota shared by the fleet: the poll period
            // stretches (doubling, up to 3 intervals, which bounds how stale
            // a host may get) and shrinks back by a fiftieth of an interval
            // per success, so a fleet asking for more than the quota
            // settles at what it allows; a throttled poll is retried soon,
            // at a random point, not after minutes.
            let mut backoff = interval;
            let mut pace = interval;
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
                        backoff = interval;
                        pace = pace.saturating_sub(interval / 50).max(interval);
                        jitter(pace)
                    }
                    Err(e @ StoreError::Throttled { .. }) => {
                        backoff = interval;
                        pace = (pace * 2).min(interval * 3);
                        // Retried soon, at a random point. (Waiting the
                        // whole period after repeated throttles was tried:
                        // 1,000 hosts at 10 s then took 40-64 s to converge
                        // instead of 32 s. Past what the cap can absorb,
                        // hosts over 3 x interval x quota, a throttled host
                        // asks up to 3 times as often as a calm one; size the
                        // interval instead, see BENCHMARKS.md.)
                        let retry_in = pace.mul_f64(0.1 + 0.2 * crate::random::fraction());
                        tracing::warn!(target: "switchyard::watch", store = %self.store.uri(), error = %e, ?retry_in, poll_every = ?pace, "poll throttled; serving the last known good and polling less often");
                        retry_in
                    }
                    Err(e) => {
                        backoff = (backoff * 2).min(Duration::from_secs(300));
                        tracing::warn!(target: "switchyard::watch", store = %self.store.uri(), error = %e, retry_in = ?backoff, "poll failed; serving the last known good");
                        jitter(backoff)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// The longest a background poll may take, blob downloads and compiles of
/// large (Python, JavaScript) policies included.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(120);

/// What serves while a newer version cannot: said in logs.
fn keeps_serving(live: Option<u64>) -> String {
    match live {
        Some(v) => format!("version {v} keeps serving"),
        None => "nothing is live for this function here yet".to_owned(),
    }
}

/// `d` ± up to 10 %, so a fleet does not poll in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * crate::random::fraction())
}
