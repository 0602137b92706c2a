//! A loaded, verified policy and its evaluation on a reused instance.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmparser::{Parser, Payload};
use wasmtime::component::Component;
use wasmtime::{ResourceLimiter, Store, Trap};

use crate::bindings::{
    ALLOWED_IMPORTS, HostImports, REQUIRED_EXPORTS, RequestImports, Router, RouterPre,
    TypesImports, WORLD, WitDecision, WitTraffic,
};
use crate::decision::{Decision, Traffic};
use crate::engine::Engine;
use crate::request::Request;
use crate::route::{Route, valid_qualifier};

/// A policy's sha256 digest, shown as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for log lines.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;

    /// Parses `sha256:<64 lower-case hex digits>`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a digest; expected sha256:<64 hex digits>");
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why bytes are not a usable policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not WebAssembly at all.
    #[error(
        "{what} is not a WebAssembly file (it does not start with \\0asm); build a policy with `switchyard policy build <crate-dir>`"
    )]
    NotWasm {
        /// What was read (a path or a digest).
        what: String,
    },
    /// A core module, not a component.
    #[error(
        "{what} is a core WebAssembly module, not a component; turn it into a component with `switchyard policy build <crate-dir>` (which runs wit-component)"
    )]
    CoreModule {
        /// What was read.
        what: String,
    },
    /// Malformed or rejected by the compiler.
    #[error("policy {digest} is not a valid component: {message}")]
    Invalid {
        /// The blob's digest.
        digest: Digest,
        /// The parser's or compiler's complaint.
        message: String,
    },
    /// Imports something beyond the `switchyard:policy` interfaces.
    #[error(
        "policy {digest} imports `{import}`; policies may import only {allowed} (no WASI: no files, network, environment or clock)",
        allowed = ALLOWED_IMPORTS.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
    )]
    ForbiddenImport {
        /// The blob's digest.
        digest: Digest,
        /// The offending import's name.
        import: String,
    },
    /// Does not implement the `router` world.
    #[error(
        "policy {digest} does not implement world `{WORLD}`: {detail}; it exports [{exports}]",
        exports = exports.join(", ")
    )]
    WrongWorld {
        /// The blob's digest.
        digest: Digest,
        /// What is wrong.
        detail: String,
        /// What it exports instead.
        exports: Vec<String>,
    },
}

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

/// What `policy inspect` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PolicyInfo {
    /// `sha256:<hex>` of the component bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size: usize,
    /// Top-level import names (instances and functions; type imports grant
    /// nothing and are left out).
    pub imports: Vec<String>,
    /// Top-level export names.
    pub exports: Vec<String>,
}

/// Reads a component's top-level imports and exports without compiling it,
/// so a forbidden policy is refused before any code generation.
pub fn inspect(bytes: &[u8], what: &str) -> Result<PolicyInfo, PolicyError> {
    let digest = Digest::of(bytes);
    if !bytes.starts_with(b"\0asm") {
        return Err(PolicyError::NotWasm { what: what.into() });
    }
    if Parser::is_core_wasm(bytes) {
        return Err(PolicyError::CoreModule { what: what.into() });
    }
    let invalid = |e: wasmparser::BinaryReaderError| PolicyError::Invalid {
        digest,
        message: e.to_string(),
    };
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have imports of their own; only the
    // outermost ones are the component's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    let i = i.map_err(invalid)?;
                    // Type imports (e.g. `route-config` from the world's
                    // `use`) grant nothing; only instances and functions do.
                    if !matches!(i.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(i.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    exports.push(e.map_err(invalid)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(PolicyInfo {
        digest,
        size: bytes.len(),
        imports,
        exports,
    })
}

/// Reads a component's interface and checks it: only the allowed imports,
/// the world's exports. Does not compile it.
pub fn check(bytes: &[u8], what: &str) -> Result<PolicyInfo, PolicyError> {
    let info = inspect(bytes, what)?;
    check_interface(&info)?;
    Ok(info)
}

/// Checks a policy's interface: only allowed imports, the world's exports.
fn check_interface(info: &PolicyInfo) -> Result<(), PolicyError> {
    if let Some(bad) = info
        .imports
        .iter()
        .find(|i| !ALLOWED_IMPORTS.contains(&i.as_str()))
    {
        return Err(PolicyError::ForbiddenImport {
            digest: info.digest,
            import: bad.clone(),
        });
    }
    let missing: Vec<&str> = REQUIRED_EXPORTS
        .iter()
        .copied()
        .filter(|e| !info.exports.iter().any(|x| x == e))
        .collect();
    if !missing.is_empty() {
        return Err(PolicyError::WrongWorld {
            digest: info.digest,
            detail: format!("missing export(s) {}", missing.join(", ")),
            exports: info.exports.clone(),
        });
    }
    Ok(())
}

/// A verified, compiled policy, ready to be instantiated. Cheap to share.
pub struct Policy {
    engine: Engine,
    info: PolicyInfo,
    pre: RouterPre<HostState>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("info", &self.info).finish()
    }
}

impl Policy {
    /// Verifies and compiles a policy component. `what` names the source in
    /// errors (a path, or the store key).
    pub fn new(engine: &Engine, bytes: &[u8], what: &str) -> Result<Arc<Self>, PolicyError> {
        let info = check(bytes, what)?;
        let component =
            Component::new(engine.wasmtime(), bytes).map_err(|e| PolicyError::Invalid {
                digest: info.digest,
                message: format!("{e:#}"),
            })?;
        Self::from_component(engine, info, component)
    }

    /// Builds a policy from a component compiled earlier (e.g. deserialized
    /// from a precompiled cache) and the info of its original bytes.
    pub fn from_component(
        engine: &Engine,
        info: PolicyInfo,
        component: Component,
    ) -> Result<Arc<Self>, PolicyError> {
        check_interface(&info)?;
        let wrong_world = |e: wasmtime::Error| PolicyError::WrongWorld {
            digest: info.digest,
            detail: format!("{e:#}"),
            exports: info.exports.clone(),
        };
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = RouterPre::new(pre).map_err(wrong_world)?;
        Ok(Arc::new(Policy {
            engine: engine.clone(),
            info,
            pre,
        }))
    }

    /// Digest, size, imports and exports.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The digest.
    pub fn digest(&self) -> Digest {
        self.info.digest
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }

    /// The compiled machine code, for a precompiled cache.
    pub fn serialize(&self) -> Result<Vec<u8>, String> {
        self.component().serialize().map_err(|e| format!("{e:#}"))
    }

    /// Loads a policy precompiled by [`Policy::serialize`] from `path`, with
    /// the info of its original bytes. Only for files this host wrote: the
    /// machine code is trusted, not re-verified. wasmtime refuses files from
    /// another version or configuration, and that is an error here.
    pub fn from_precompiled_file(
        engine: &Engine,
        info: PolicyInfo,
        path: &std::path::Path,
    ) -> Result<Arc<Self>, PolicyError> {
        // SAFETY: the cache directory is the host's own; its files were
        // written by `serialize` on a host of this configuration.
        let component =
            unsafe { Component::deserialize_file(engine.wasmtime(), path) }.map_err(|e| {
                PolicyError::Invalid {
                    digest: info.digest,
                    message: format!("precompiled {}: {e:#}", path.display()),
                }
            })?;
        Self::from_component(engine, info, component)
    }

    /// A new evaluator: one reusable instance of this policy, for one worker
    /// at a time.
    pub fn evaluator(self: &Arc<Self>) -> Evaluator {
        Evaluator {
            policy: self.clone(),
            instance: None,
        }
    }
}

/// The per-instance host state: the request being decided and the limiter.
pub struct HostState {
    request: Option<Arc<Request>>,
    memory_limit: usize,
    /// Instantiation is over: memory allocated from here on is growth.
    instantiated: bool,
    /// Bytes all memories of the instance grew by since instantiation.
    memory_grown: usize,
    memory_denied: bool,
    digest: Digest,
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
        self.request.as_ref()?.header(&name).map(str::to_owned)
    }

    fn header_bucket(&mut self, name: String, salt: String) -> Option<u32> {
        let value = self.request.as_ref()?.header(&name)?;
        Some(bucket(value, &salt))
    }

    fn headers(&mut self) -> Vec<(String, String)> {
        self.request
            .as_ref()
            .map(|r| r.headers().to_vec())
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
            Ok(d) => convert(d, route),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable_and_in_range() {
        // Pinned values: changing the algorithm moves users between versions.
        assert_eq!(
            bucket("user-8472917", "orders"),
            bucket("user-8472917", "orders")
        );
        assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
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

    #[test]
    fn digest_formats() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
    }

    #[test]
    fn inspect_rejects_non_wasm_and_core_modules() {
        assert!(matches!(
            inspect(b"hello", "x"),
            Err(PolicyError::NotWasm { .. })
        ));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(
            inspect(core, "x"),
            Err(PolicyError::CoreModule { .. })
        ));
    }
}
