//! The `switchyard` command line (`switchyard --help`), and the policy
//! build tooling it runs (`switchyard policy build`): a Rust, Python or
//! JavaScript policy folder into a component. The binary is
//! `src/main.rs`; this library is what it and the tests call. One file per
//! command in `src/commands/`.
#![deny(missing_docs)]

mod build;
mod commands;

pub use build::{
    BuildError, Built, JS_MODULE, JsBackend, Language, POLICY_RUSTFLAGS_VAR, PYTHON_MODULE, TARGET,
    WIT, build, build_js, build_policy, build_python, componentize, policy_rustflags,
};
pub use commands::{Cli, RenderMetrics, run};
