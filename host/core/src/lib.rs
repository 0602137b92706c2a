//! The embeddable core of Switchyard, a serverless service mesh: routing
//! policies are WebAssembly components on the `switchyard:policy` WIT
//! contract (`wit/`); this crate verifies and compiles them, and decides
//! requests with them in a sandbox, in microseconds. It has no server,
//! async runtime or cloud SDK in it: put it in your own proxy or wrapper.
//!
//! Embedding it: load a component, configure a function's route, decide a
//! request.
//!
//! ```
//! use std::sync::Arc;
//! use switchyard_core::{Engine, Policy, Request, Route, RouteConfig, Traffic};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let path = switchyard_test_artifacts::SYNTHETIC_HEADER;
//! // One engine per process; a component built by `switchyard policy build`.
//! let engine = Engine::new()?;
//! let bytes = std::fs::read(path)?;
//! let policy = Policy::new(&engine, &bytes, path)?;
//!
//! // The function's route config, as CI/CD writes it to the config store.
//! let config = RouteConfig::from_json(
//!     r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#,
//! )?;
//! let route = Route::new("orders", config)?;
//!
//! // A QA request, tagged as synthetic, reaches the candidate.
//! let request = Arc::new(Request::new(
//!     "orders", "GET", "/", [("x-switchyard-synthetic", "true")],
//! ));
//! let mut evaluator = policy.evaluator();
//! let (decision, failure) = evaluator.decide(&request, &route);
//! assert!(failure.is_none());
//! assert_eq!(decision.target, "8");
//! assert_eq!(decision.traffic, Traffic::Synthetic);
//! # Ok(()) }
//! ```
//!
//! An [`Evaluator`] keeps one warm instance for one thread; an
//! [`EvaluatorPool`] shares warm instances between concurrent callers. A
//! policy that traps, loops past its fuel budget or grows past its memory
//! limit gets the [`fail_safe`] decision (stable, production traffic).
#![deny(missing_docs)]
#![deny(unreachable_pub)]

mod bindings;
mod cases;
mod decision;
mod digest;
mod engine;
mod evaluator;
mod host;
mod idle;
mod metric;
mod policy;
mod request;
mod route;
mod safety;
mod verify;

pub use bindings::{ALLOWED_IMPORTS, REQUIRED_EXPORTS, VERSIONS, WORLD};
pub use cases::{Case, CaseError, CaseFile, CaseResult, Expect};
pub use decision::{
    CONTEXT_HEADER_PREFIX, DEFAULT_SYNTHETIC_HEADER, Decision, TARGET_HEADER, TRAFFIC_HEADER,
    Traffic,
};
pub use digest::{Digest, DigestParseError};
pub use engine::{
    DEFAULT_FUEL, Engine, EngineConfig, EngineError, KEEP_RESIDENT, MAX_CORE_INSTANCES_PER_POLICY,
    MAX_MEMORIES_PER_POLICY, MAX_TABLES_PER_POLICY, TABLE_KEEP_RESIDENT,
};
pub use evaluator::{EvalError, Evaluator, EvaluatorPool, fail_safe, set_thread_shard};
pub use host::bucket;
pub use metric::{METRICS, Metric, MetricKind};
pub use policy::Policy;
pub use request::{Request, RequestError, RequestJson};
pub use route::{
    ContextValue, DispatchSpec, MAX_QUALIFIER_LEN, Mode, NoDispatchType, ROUTE_SCHEMA, Route,
    RouteConfig, RouteConfigError, SecretRef, host_version_for_schema, supported_schema,
    valid_qualifier,
};
pub use safety::{Fallback, Guard, IDEMPOTENT_METHODS, Shadow, parse_path};
pub use verify::{PolicyError, PolicyInfo, check, inspect};
