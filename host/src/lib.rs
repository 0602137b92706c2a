//! Switchyard: a serverless service mesh. Routing policies are WebAssembly
//! components (the `switchyard:policy` WIT contract in `wit/`); this crate
//! loads them, evaluates them in a sandbox in microseconds, and dispatches
//! to the chosen function version (HTTP upstreams or Lambda `Invoke`).
//!
//! Deciding a request with a policy:
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchyard::{Engine, Policy, Request, Route, RouteConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new()?;
//! let bytes = std::fs::read("synthetic-header.component.wasm")?;
//! let policy = Policy::new(&engine, &bytes, "synthetic-header.component.wasm")?;
//! let config = RouteConfig::from_json(
//!     r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#,
//! )?;
//! let route = Route::new("orders", config)?;
//! let request = Arc::new(Request::new(
//!     "orders", "GET", "/", [("x-switchyard-synthetic", "true")],
//! ));
//! let mut evaluator = policy.evaluator();
//! let (decision, _error) = evaluator.decide(&request, &route);
//! assert_eq!(decision.target, "8");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod bindings;
pub mod build;
pub mod cases;
pub mod cli;
pub mod decision;
pub mod engine;
pub mod extension;
pub mod lambda;
pub mod lambda_router;
pub mod policy;
pub mod proxy;
pub mod request;
pub mod route;
pub mod store;
pub mod watch;

pub use decision::{Decision, Traffic};
pub use engine::{Engine, EngineConfig, EngineError};
pub use policy::{
    Digest, EvalError, Evaluator, Policy, PolicyError, PolicyInfo, bucket, fail_safe,
};
pub use request::{Request, RequestError, RequestJson};
pub use route::{Mode, Route, RouteConfig, RouteConfigError};
