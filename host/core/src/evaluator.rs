//! Evaluation on reused instances: the evaluator, its pool, the errors
//! an evaluation can end in, and the fail-safe decision that answers them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::{ResourceLimiter, Store, Trap};

use crate::bindings::{current, previous};
use crate::decision::{Decision, Traffic};
use crate::host::HostState;
use crate::idle::{IdleBudget, IdlePool};
use crate::policy::{Policy, Pre};
use crate::request::Request;
use crate::route::{Route, valid_qualifier};

/// Why an evaluation failed. Each is answered by the fail-safe decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Ran out of fuel: the evaluation budget.
    #[error("policy exceeded its evaluation budget of {fuel} fuel (one unit per instruction)")]
    Budget {
        /// The budget, in fuel units.
        fuel: u64,
    },
    /// Tried to grow its memory by more than the limit.
    #[error("policy grew its memory by more than its limit of {limit} bytes")]
    Memory {
        /// The cap in bytes.
        limit: usize,
    },
    /// Trapped (a panic, `unreachable`, out-of-bounds access, ...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// Could not be instantiated (e.g. the instance pool is full).
    #[error("policy could not be instantiated: {0}")]
    Instantiate(String),
    /// Returned a decision the host cannot use.
    #[error("policy returned an unusable decision: {0}")]
    BadDecision(String),
    /// Not evaluated: the policy failed too often in a row just now.
    #[error(
        "policy not evaluated: it failed {failures} times in a row, so its circuit is open for {open_ms} ms"
    )]
    CircuitOpen {
        /// Consecutive failures that opened it.
        failures: u32,
        /// How long it stays open, in milliseconds.
        open_ms: u64,
    },
}

impl EvalError {
    /// A short label for metrics: `budget`, `memory`, `trap`, `instantiate`,
    /// `bad-decision`, `circuit-open`.
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::Budget { .. } => "budget",
            EvalError::Memory { .. } => "memory",
            EvalError::Trap(_) => "trap",
            EvalError::Instantiate(_) => "instantiate",
            EvalError::BadDecision(_) => "bad-decision",
            EvalError::CircuitOpen { .. } => "circuit-open",
        }
    }

    /// Whether the policy is to blame (not the host running out of
    /// instances, not an open circuit): what the circuit breaker counts.
    fn is_the_policys(&self) -> bool {
        !matches!(
            self,
            EvalError::Instantiate(_) | EvalError::CircuitOpen { .. }
        )
    }
}

struct Instance {
    store: Store<HostState>,
    router: Router,
    calls: u64,
    configured: Option<u64>,
}

/// An instance's exports, of the contract version it was built against.
enum Router {
    Current(current::Router),
    Previous(previous::Router),
}

impl Router {
    fn configure(&self, store: &mut Store<HostState>, route: &Route) -> wasmtime::Result<()> {
        match self {
            Router::Current(r) => r.call_configure(store, &route.to_wit()),
            Router::Previous(r) => r.call_configure(store, &route.to_wit_previous()),
        }
    }

    /// The policy's answer, its strings not yet checked.
    fn evaluate(&self, store: &mut Store<HostState>, explain: bool) -> wasmtime::Result<Answer> {
        Ok(match self {
            Router::Current(r) => Answer::Current(r.call_evaluate(store, explain)?),
            Router::Previous(r) => Answer::Previous(r.call_evaluate(store)?),
        })
    }
}

enum Answer {
    Current(current::Decision),
    Previous(previous::Decision),
}

/// One warm instance of a policy, reused across evaluations (policies are
/// pure) and replaced after a trap or after `recycle_after` calls. Not shared
/// between threads: keep one per worker.
pub struct Evaluator {
    policy: Arc<Policy>,
    instance: Option<Instance>,
}

impl Evaluator {
    pub(crate) fn new(policy: Arc<Policy>) -> Self {
        Evaluator {
            policy,
            instance: None,
        }
    }

    /// The policy this evaluator runs.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Evaluates `req` against `route`. On any failure the instance is
    /// discarded and the error returned; see [`Evaluator::decide`] for the
    /// fail-safe.
    pub fn evaluate(&mut self, req: &Arc<Request>, route: &Route) -> Result<Decision, EvalError> {
        self.evaluate_with(req, route, true)
    }

    /// [`Evaluator::evaluate`], saying whether the decision's reason will
    /// be shown (`explain`). Without it, a policy built against
    /// `switchyard:policy@0.2.0` may leave the reason empty and save the
    /// work of building it and of copying it out.
    pub fn evaluate_with(
        &mut self,
        req: &Arc<Request>,
        route: &Route,
        explain: bool,
    ) -> Result<Decision, EvalError> {
        let engine = *self.policy.engine.config();
        if self
            .instance
            .as_ref()
            .is_some_and(|i| i.calls >= engine.recycle_after)
        {
            self.instance = None;
        }
        let inst = match &mut self.instance {
            Some(inst) => inst,
            slot @ None => slot.insert(self.policy.instantiate()?),
        };
        inst.calls += 1;
        inst.store.data_mut().request = Some(req.clone());
        let result = (|| {
            if inst.configured != Some(route.id()) {
                refuel(&mut inst.store, engine.fuel)?;
                inst.router.configure(&mut inst.store, route)?;
                inst.configured = Some(route.id());
            }
            refuel(&mut inst.store, engine.fuel)?;
            inst.router.evaluate(&mut inst.store, explain)
        })();
        inst.store.data_mut().request = None;
        match result {
            Ok(d) => convert(d, route).inspect_err(|_| {
                // A policy that answers nonsense may be in a bad state:
                // the next call gets a fresh instance, as after a trap.
                self.instance = None;
            }),
            Err(e) => {
                let err = policy_failure(&e, &inst.store, engine.fuel, "");
                self.instance = None;
                Err(err)
            }
        }
    }

    /// Evaluates, and answers any failure with the fail-safe decision
    /// (stable, production, reason `fail-safe: <why>`), logging it.
    pub fn decide(&mut self, req: &Arc<Request>, route: &Route) -> (Decision, Option<EvalError>) {
        match self.evaluate_with(req, route, true) {
            Ok(d) => (d, None),
            Err(e) => {
                tracing::warn!(
                    target: "switchyard::policy",
                    function = route.function(),
                    policy = %self.policy.digest().short(),
                    error = %e,
                    "policy failed; fail-safe decision applied"
                );
                (fail_safe(route, &e.to_string()), Some(e))
            }
        }
    }
}

struct PoolShared {
    id: u64,
    /// Idle evaluators, a list per serving thread ([`thread_shard`]), so
    /// threads deciding for the same function at once share no lock.
    shards: Box<[Shard]>,
    /// When the pool was last marked used in the budget's LRU (seconds).
    touched: AtomicU64,
}

/// One thread's idle evaluators, on a cache line of its own.
#[repr(align(128))]
struct Shard(Mutex<Vec<Evaluator>>);

impl PoolShared {
    /// The calling thread's idle list.
    fn shard(&self) -> &Mutex<Vec<Evaluator>> {
        &self.shards[thread_shard() % self.shards.len()].0
    }

    /// Every idle evaluator, taken out and counted out of the engine's
    /// `idle` budget under each list's lock.
    fn drain(&self, idle: &AtomicUsize) -> Vec<Evaluator> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let mut list = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            idle.fetch_sub(list.len(), Ordering::AcqRel);
            all.append(&mut list);
        }
        all
    }
}

impl IdlePool for PoolShared {
    fn evict(&self, idle: &AtomicUsize) -> (usize, Box<dyn Send>) {
        // Out of the LRU: its next use must put it back.
        self.touched.store(u64::MAX, Ordering::Relaxed);
        let gone = self.drain(idle);
        (gone.len(), Box::new(gone))
    }
}

thread_local! {
    static SHARD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Pins the calling thread to idle list `index` of every pool (a
/// thread-per-core server numbers its serving threads 0, 1, ...). Other
/// threads are numbered in the order they first decide.
pub fn set_thread_shard(index: usize) {
    SHARD.with(|s| s.set(Some(index)));
}

fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|s| {
        s.get().unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            s.set(Some(n));
            n
        })
    })
}

/// Idle lists per pool: one per core (at most 64).
fn shard_count() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 64)
    })
}

/// The circuit breaker of one pool, and its log rate limit. Times are
/// milliseconds since the engine's start.
#[derive(Default)]
struct Breaker {
    /// Failures in a row.
    failures: AtomicU32,
    /// Open until then; 0: closed.
    open_until: AtomicU64,
    /// A probe is running (the circuit is half-open).
    probing: AtomicBool,
    /// The second a fail-safe line was last logged, and lines held back
    /// since.
    logged_at: AtomicU64,
    held_back: AtomicU64,
}

/// Warm evaluators of one policy, shared by concurrent request handlers:
/// each call borrows an idle evaluator (or makes one) and returns it, so a
/// busy host keeps about one warm instance per concurrent request. Idle
/// instances count against the engine's budget (half its instance limit),
/// shared with every other pool; the least recently used pools give theirs
/// up first, so any number of functions can decide.
pub struct EvaluatorPool {
    policy: Arc<Policy>,
    shared: Arc<PoolShared>,
    budget: Arc<IdleBudget>,
    max_idle: usize,
    breaker: Breaker,
}

impl fmt::Debug for EvaluatorPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvaluatorPool")
            .field("policy", &self.policy.digest())
            .finish()
    }
}

impl EvaluatorPool {
    /// A pool keeping at most `max_idle` warm evaluators (and fewer when
    /// the engine's idle budget is spent elsewhere).
    pub fn new(policy: Arc<Policy>, max_idle: usize) -> Self {
        let budget = policy.engine.idle_budget().clone();
        let shared = Arc::new(PoolShared {
            id: budget.next_id.fetch_add(1, Ordering::Relaxed),
            shards: (0..shard_count())
                .map(|_| Shard(Mutex::new(Vec::new())))
                .collect(),
            touched: AtomicU64::new(u64::MAX),
        });
        EvaluatorPool {
            policy,
            shared,
            budget,
            max_idle,
            breaker: Breaker {
                logged_at: AtomicU64::new(u64::MAX),
                ..Default::default()
            },
        }
    }

    /// The pooled policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Warm instances this pool holds now.
    pub fn idle(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// [`Evaluator::decide`] on a pooled evaluator. When no instance can be
    /// made because the engine's instances are all taken, the least
    /// recently used pools' idle instances are dropped and it is tried once
    /// more before the fail-safe. A policy that keeps failing trips the
    /// pool's circuit breaker ([`EngineConfig::breaker_failures`]): while it
    /// is open the fail-safe is answered without evaluating. Fail-safe log
    /// lines are at most one a second per pool (with a count of those held
    /// back); the breaker's opening and closing are always logged.
    ///
    /// [`EngineConfig::breaker_failures`]: crate::EngineConfig::breaker_failures
    pub fn decide(&self, req: &Arc<Request>, route: &Route) -> (Decision, Option<EvalError>) {
        self.decide_with(req, route, true)
    }

    /// [`EvaluatorPool::decide`], saying whether the reason will be shown
    /// (see [`Evaluator::evaluate_with`]): a proxy that logs one decision in
    /// N asks for the reason of that one only.
    pub fn decide_with(
        &self,
        req: &Arc<Request>,
        route: &Route,
        explain: bool,
    ) -> (Decision, Option<EvalError>) {
        let config = *self.policy.engine.config();
        let now = self.budget.start.elapsed().as_millis() as u64;
        let open_until = self.breaker.open_until.load(Ordering::Acquire);
        let probe = open_until != 0;
        if probe && (now < open_until || self.breaker.probing.swap(true, Ordering::AcqRel)) {
            let e = EvalError::CircuitOpen {
                failures: config.breaker_failures,
                open_ms: config.breaker_open.as_millis() as u64,
            };
            return (fail_safe(route, &e.to_string()), Some(e));
        }
        // A probe that never reports back (a panic) must not leave the
        // circuit waiting for it.
        struct ProbeGuard<'a>(Option<&'a AtomicBool>);
        impl Drop for ProbeGuard<'_> {
            fn drop(&mut self) {
                if let Some(p) = self.0 {
                    p.store(false, Ordering::Release);
                }
            }
        }
        let guard = ProbeGuard(probe.then_some(&self.breaker.probing));
        let out = self.evaluate(req, route, explain);
        std::mem::forget(guard);
        match &out {
            Ok(_) if probe => {
                self.breaker.failures.store(0, Ordering::Relaxed);
                self.breaker.open_until.store(0, Ordering::Release);
                self.breaker.probing.store(false, Ordering::Release);
                tracing::warn!(target: "switchyard::policy", function = route.function(), policy = %self.policy.digest().short(), "policy circuit closed: the probe evaluation succeeded");
                crate::metric::POLICY_CIRCUIT
                    .counter(&[("function", route.function()), ("state", "closed")])
                    .increment(1);
            }
            Ok(_) => {
                if self.breaker.failures.load(Ordering::Relaxed) != 0 {
                    self.breaker.failures.store(0, Ordering::Relaxed);
                }
            }
            Err(e) if e.is_the_policys() && config.breaker_failures > 0 => {
                let failures = self.breaker.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if probe || failures >= config.breaker_failures {
                    let open_ms = config.breaker_open.as_millis() as u64;
                    self.breaker.failures.store(0, Ordering::Relaxed);
                    self.breaker
                        .open_until
                        .store(now + open_ms.max(1), Ordering::Release);
                    self.breaker.probing.store(false, Ordering::Release);
                    tracing::warn!(target: "switchyard::policy", function = route.function(), policy = %self.policy.digest().short(), error = %e, failures, open_ms, "policy circuit opened: answering the fail-safe without evaluating until a probe succeeds");
                    crate::metric::POLICY_CIRCUIT
                        .counter(&[("function", route.function()), ("state", "open")])
                        .increment(1);
                }
            }
            Err(_) => {
                if probe {
                    self.breaker.probing.store(false, Ordering::Release);
                }
            }
        }
        match out {
            Ok(d) => (d, None),
            Err(e) => {
                self.log_fail_safe(route, &e, now / 1000);
                (fail_safe(route, &e.to_string()), Some(e))
            }
        }
    }

    /// One fail-safe line a second at most, saying how many were held back.
    fn log_fail_safe(&self, route: &Route, e: &EvalError, second: u64) {
        if self.breaker.logged_at.swap(second, Ordering::AcqRel) == second {
            self.breaker.held_back.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let held_back = self.breaker.held_back.swap(0, Ordering::Relaxed);
        tracing::warn!(
            target: "switchyard::policy",
            function = route.function(),
            policy = %self.policy.digest().short(),
            error = %e,
            held_back,
            "policy failed; fail-safe decision applied"
        );
    }

    /// An evaluation on a pooled evaluator (from the calling thread's idle
    /// list), retried once on a fresh instance budget when none could be
    /// made.
    fn evaluate(
        &self,
        req: &Arc<Request>,
        route: &Route,
        explain: bool,
    ) -> Result<Decision, EvalError> {
        let shard = self.shared.shard();
        let idle = shard.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // An idle evaluator stays counted in the engine's budget while it
        // decides and after it goes back, so a decision writes no counter
        // the other cores share; a new one is counted when first kept.
        let counted = idle.is_some();
        let mut ev = idle.unwrap_or_else(|| self.policy.evaluator());
        let mut out = ev.evaluate_with(req, route, explain);
        if matches!(out, Err(EvalError::Instantiate(_)))
            && self.budget.evict(self.shared.id, true) > 0
        {
            out = ev.evaluate_with(req, route, explain);
        }
        self.keep(shard, ev, counted);
        out
    }

    /// Returns `ev` to `shard` when there is room, here and in the
    /// engine's budget (`counted`: it is in the budget already).
    fn keep(&self, shard: &Mutex<Vec<Evaluator>>, ev: Evaluator, counted: bool) {
        // One that lost its instance (a trap) holds nothing worth keeping.
        let kept = ev.instance.is_some() && {
            let mut idle = shard.lock().unwrap_or_else(|e| e.into_inner());
            let room = idle.len() < self.max_idle.div_ceil(self.shared.shards.len());
            if room {
                idle.push(ev);
                if !counted {
                    // Counted under the list's lock, as every change is.
                    self.budget.idle.fetch_add(1, Ordering::AcqRel);
                }
            }
            room
        };
        if !kept {
            // (An evaluator not kept is torn down outside the lock.)
            if counted {
                self.budget.idle.fetch_sub(1, Ordering::AcqRel);
            }
            return;
        }
        // Mark this pool used, at most once a second (the LRU's lock is
        // shared by every pool; the read keeps the line shared between
        // cores the rest of the second).
        let now = self.budget.now();
        if self.shared.touched.load(Ordering::Relaxed) != now
            && self.shared.touched.swap(now, Ordering::Relaxed) != now
        {
            self.budget
                .lru
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(
                    self.shared.id,
                    Arc::downgrade(&self.shared) as Weak<dyn IdlePool>,
                );
        }
        if self.budget.idle.load(Ordering::Acquire) > self.budget.cap {
            self.budget.evict(self.shared.id, false);
        }
    }
}

impl Drop for EvaluatorPool {
    fn drop(&mut self) {
        // Taken under the lock, so an eviction racing this drop finds
        // nothing left to count again.
        let gone = self.shared.drain(&self.budget.idle);
        drop(gone);
        self.budget
            .lru
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop(&self.shared.id);
    }
}

impl Policy {
    /// A new evaluator: one reusable instance of this policy, for one worker
    /// at a time.
    pub fn evaluator(self: &Arc<Self>) -> Evaluator {
        Evaluator::new(self.clone())
    }

    fn instantiate(&self) -> Result<Instance, EvalError> {
        let engine = self.engine.config();
        let mut store = Store::new(
            self.engine.wasmtime(),
            HostState {
                request: None,
                memory_limit: engine.memory_limit,
                instantiated: false,
                memory_grown: 0,
                memory_denied: false,
                digest: self.info.digest,
                header_ids: Vec::new(),
            },
        );
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        refuel(&mut store, engine.fuel).map_err(|e| EvalError::Instantiate(format!("{e:#}")))?;
        let router = match &self.pre {
            Pre::Current(pre) => pre.instantiate(&mut store).map(Router::Current),
            Pre::Previous(pre) => pre.instantiate(&mut store).map(Router::Previous),
        };
        let router = router.map_err(|e| {
            // The engine out of instances is the host's problem; a policy
            // whose start-up runs out of fuel or memory, or traps, is the
            // policy's (and counts for its circuit breaker).
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                EvalError::Instantiate(format!("{e:#}"))
            } else {
                policy_failure(&e, &store, engine.fuel, "at start-up: ")
            }
        })?;
        store.data_mut().instantiated = true;
        Ok(Instance {
            store,
            router,
            calls: 0,
            configured: None,
        })
    }
}

/// What a failed call of the policy was: out of memory, out of fuel, or a
/// trap (`context` prefixes the trap's summary).
fn policy_failure(
    e: &wasmtime::Error,
    store: &Store<HostState>,
    fuel: Option<u64>,
    context: &str,
) -> EvalError {
    let state = store.data();
    if state.memory_denied {
        EvalError::Memory {
            limit: state.memory_limit,
        }
    } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        EvalError::Budget {
            fuel: fuel.unwrap_or_default(),
        }
    } else {
        EvalError::Trap(format!("{context}{}", trap_summary(e)))
    }
}

/// One line for a trap: what happened and the innermost named function, e.g.
/// "wasm trap: wasm `unreachable` instruction executed (in
/// libc.so!wall_clock_now)" for a Python policy reading the clock. (The full
/// backtrace is many lines and ends up in decision reasons and logs.)
fn trap_summary(e: &wasmtime::Error) -> String {
    let what = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{}", e.root_cause()),
    };
    let frame = e.downcast_ref::<wasmtime::WasmBacktrace>().and_then(|bt| {
        bt.frames().iter().find_map(|f| {
            f.func_name()
                .map(|n| format!("{}!{n}", f.module().name().unwrap_or("<module>")))
        })
    });
    match frame {
        Some(frame) => format!("{what} (in {frame})"),
        None => what,
    }
}

/// Gives a call its full budget (fuel does not carry over between calls).
fn refuel(store: &mut Store<HostState>, fuel: Option<u64>) -> wasmtime::Result<()> {
    match fuel {
        Some(f) => store.set_fuel(f),
        None => Ok(()),
    }
}

/// The decision when a policy fails: stable, production traffic.
pub fn fail_safe(route: &Route, why: &str) -> Decision {
    let target = route.config().stable().to_owned();
    let context = route.config().context_for(&target);
    Decision {
        target,
        traffic: Traffic::Production,
        mirror: None,
        context,
        reason: format!("fail-safe: {why}"),
    }
}

/// Most context entries a policy may return.
const MAX_CONTEXT: usize = 64;
/// Longest reason kept (longer ones are cut).
const MAX_REASON: usize = 1024;

/// The policy's answer as a [`Decision`], checked: targets that are
/// qualifiers (or positions in the route's versions), bounded context, the
/// reason cut to [`MAX_REASON`]; the route's context for the target added.
fn convert(answer: Answer, route: &Route) -> Result<Decision, EvalError> {
    let (target, traffic, mirror, context, reason) = match answer {
        Answer::Current(d) => (
            resolve(d.target, route, "target")?,
            matches!(d.traffic, current::Traffic::Synthetic),
            d.mirror.map(|m| resolve(m, route, "mirror")).transpose()?,
            d.context,
            d.reason,
        ),
        Answer::Previous(d) => (
            qualifier(d.target, "target")?,
            matches!(d.traffic, previous::Traffic::Synthetic),
            d.mirror.map(|m| qualifier(m, "mirror")).transpose()?,
            d.context,
            d.reason,
        ),
    };
    if context.len() > MAX_CONTEXT {
        return Err(EvalError::BadDecision(format!(
            "{} context entries (at most {MAX_CONTEXT})",
            context.len()
        )));
    }
    let mut context: BTreeMap<String, String> = context.into_iter().collect();
    if let Some(configured) = route.config().context.get(&target) {
        context.extend(configured.iter().map(|(k, v)| (k.clone(), v.shown())));
    }
    let mut reason = reason;
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    Ok(Decision {
        target,
        traffic: if traffic {
            Traffic::Synthetic
        } else {
            Traffic::Production
        },
        mirror,
        context,
        reason,
    })
}

/// A `target` of the current contract as a qualifier: a position in the
/// route's versions, or a qualifier given literally.
fn resolve(target: current::Target, route: &Route, what: &str) -> Result<String, EvalError> {
    match target {
        current::Target::Version(i) => route
            .config()
            .versions
            .values()
            .nth(i as usize)
            .cloned()
            .ok_or_else(|| {
                EvalError::BadDecision(format!(
                    "{what} is version {i}, but the route config has {} version(s) (0-based)",
                    route.config().versions.len()
                ))
            }),
        current::Target::Qualifier(q) => qualifier(q, what),
    }
}

fn qualifier(q: String, what: &str) -> Result<String, EvalError> {
    if valid_qualifier(&q) {
        Ok(q)
    } else {
        Err(EvalError::BadDecision(format!(
            "{what} {q:?} is not a valid qualifier"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteConfig;

    #[test]
    fn a_target_by_position_names_the_routes_version_or_is_refused() {
        let route = Route::new(
            "f",
            RouteConfig::from_json(
                r#"{"mode":"production","versions":{"stable":"7","candidate":"8"}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        // Positions count `versions` in the order `configure` hands them
        // over (sorted by role).
        let roles: Vec<_> = route.to_wit().versions;
        assert_eq!(roles[0], ("candidate".into(), "8".into()));
        assert_eq!(
            resolve(current::Target::Version(0), &route, "target").unwrap(),
            "8"
        );
        assert_eq!(
            resolve(current::Target::Version(1), &route, "target").unwrap(),
            "7"
        );
        let err = resolve(current::Target::Version(2), &route, "mirror").unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy returned an unusable decision: mirror is version 2, but the route config has 2 version(s) (0-based)"
        );
        assert!(
            resolve(
                current::Target::Qualifier("$LATEST".into()),
                &route,
                "target"
            )
            .is_ok()
        );
        assert!(resolve(current::Target::Qualifier("a b".into()), &route, "target").is_err());
    }
}
