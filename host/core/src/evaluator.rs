//! Evaluation on reused instances: the evaluator, its pool, the errors
//! an evaluation can end in, and the fail-safe decision that answers them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use wasmtime::{ResourceLimiter, Store, Trap};

use crate::bindings::{Router, WitDecision, WitTraffic};
use crate::decision::{Decision, Traffic};
use crate::host::HostState;
use crate::policy::Policy;
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
}

impl EvalError {
    /// A short label for metrics: `budget`, `memory`, `trap`, `instantiate`,
    /// `bad-decision`.
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::Budget { .. } => "budget",
            EvalError::Memory { .. } => "memory",
            EvalError::Trap(_) => "trap",
            EvalError::Instantiate(_) => "instantiate",
            EvalError::BadDecision(_) => "bad-decision",
        }
    }
}

struct Instance {
    store: Store<HostState>,
    router: Router,
    calls: u64,
    configured: Option<u64>,
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
                inst.router
                    .call_configure(&mut inst.store, &route.to_wit())?;
                inst.configured = Some(route.id());
            }
            refuel(&mut inst.store, engine.fuel)?;
            inst.router.call_evaluate(&mut inst.store)
        })();
        inst.store.data_mut().request = None;
        match result {
            Ok(d) => convert(d, route).inspect_err(|_| {
                // A policy that answers nonsense may be in a bad state:
                // the next call gets a fresh instance, as after a trap.
                self.instance = None;
            }),
            Err(e) => {
                let err = if inst.store.data().memory_denied {
                    EvalError::Memory {
                        limit: engine.memory_limit,
                    }
                } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
                    EvalError::Budget {
                        fuel: engine.fuel.unwrap_or_default(),
                    }
                } else {
                    EvalError::Trap(trap_summary(&e))
                };
                self.instance = None;
                Err(err)
            }
        }
    }

    /// Evaluates, and answers any failure with the fail-safe decision
    /// (stable, production, reason `fail-safe: <why>`), logging it.
    pub fn decide(&mut self, req: &Arc<Request>, route: &Route) -> (Decision, Option<EvalError>) {
        match self.evaluate(req, route) {
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

/// Warm evaluators of one policy, shared by concurrent request handlers:
/// each call borrows an idle evaluator (or makes one) and returns it, so a
/// busy host keeps about one warm instance per concurrent request.
pub struct EvaluatorPool {
    policy: Arc<Policy>,
    idle: std::sync::Mutex<Vec<Evaluator>>,
    max_idle: usize,
}

impl fmt::Debug for EvaluatorPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvaluatorPool")
            .field("policy", &self.policy.digest())
            .finish()
    }
}

impl EvaluatorPool {
    /// A pool keeping at most `max_idle` warm evaluators.
    pub fn new(policy: Arc<Policy>, max_idle: usize) -> Self {
        EvaluatorPool {
            policy,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// The pooled policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// [`Evaluator::decide`] on a pooled evaluator.
    pub fn decide(&self, req: &Arc<Request>, route: &Route) -> (Decision, Option<EvalError>) {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut ev = idle.unwrap_or_else(|| self.policy.evaluator());
        let out = ev.decide(req, route);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(ev);
        }
        out
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
            },
        );
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        refuel(&mut store, engine.fuel).map_err(|e| EvalError::Instantiate(format!("{e:#}")))?;
        let router = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| EvalError::Instantiate(format!("{e:#}")))?;
        store.data_mut().instantiated = true;
        Ok(Instance {
            store,
            router,
            calls: 0,
            configured: None,
        })
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

fn convert(d: WitDecision, route: &Route) -> Result<Decision, EvalError> {
    if !valid_qualifier(&d.target) {
        return Err(EvalError::BadDecision(format!(
            "target {:?} is not a valid qualifier",
            d.target
        )));
    }
    if let Some(m) = &d.mirror
        && !valid_qualifier(m)
    {
        return Err(EvalError::BadDecision(format!(
            "mirror {m:?} is not a valid qualifier"
        )));
    }
    if d.context.len() > MAX_CONTEXT {
        return Err(EvalError::BadDecision(format!(
            "{} context entries (at most {MAX_CONTEXT})",
            d.context.len()
        )));
    }
    let mut context: BTreeMap<String, String> = d.context.into_iter().collect();
    if let Some(configured) = route.config().context.get(&d.target) {
        context.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut reason = d.reason;
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    Ok(Decision {
        target: d.target,
        traffic: match d.traffic {
            WitTraffic::Production => Traffic::Production,
            WitTraffic::Synthetic => Traffic::Synthetic,
        },
        mirror: d.mirror,
        context,
        reason,
    })
}
