//! Building a policy folder into a policy component: a Rust crate with
//! cargo and wit-component, a Python module with componentize-py, a
//! JavaScript module with jco. Every language gets the same contract and the
//! same check: the component may import only `switchyard:policy` interfaces.
//!
//! One file per language (`rust.rs`, `python.rs`, `js.rs`); what they share
//! (errors, the staging folder, running a tool, the final check) is in
//! `tools.rs`. This module only tells the languages apart.

mod js;
mod python;
mod rust;
mod tools;

use std::path::Path;

pub use js::{JS_MODULE, JsBackend, build_js};
pub use python::{PYTHON_MODULE, build_python};
pub use rust::{POLICY_RUSTFLAGS_VAR, build_policy, componentize, policy_rustflags};
pub use tools::{BuildError, Built, TARGET, WIT};

/// The language of a policy folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A crate (`Cargo.toml`) using `switchyard-guest`.
    Rust,
    /// A module `policy.py` defining class `WitWorld`.
    Python,
    /// An ES module `policy.js` exporting `configure` and `evaluate`.
    JavaScript,
}

impl Language {
    /// The language of the policy in `dir`, from the file that marks it.
    pub fn of(dir: &Path) -> Result<Language, BuildError> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Language::Rust)
        } else if dir.join(PYTHON_MODULE).is_file() {
            Ok(Language::Python)
        } else if dir.join(JS_MODULE).is_file() {
            Ok(Language::JavaScript)
        } else {
            Err(BuildError::NotAPolicyCrate(format!(
                "{} has no Cargo.toml (Rust), {PYTHON_MODULE} (Python) or {JS_MODULE} \
                 (JavaScript); pass the folder of a policy",
                dir.display()
            )))
        }
    }
}

/// Builds the policy in `dir`, whatever its language (see [`Language::of`]),
/// checks its interface and writes it to `out`. Default output: Rust as in
/// [`build_policy`]; others `<dir>/target/<folder name>.component.wasm`.
pub fn build(dir: &Path, out: Option<&Path>, js: JsBackend) -> Result<Built, BuildError> {
    match Language::of(dir)? {
        Language::Rust => build_policy(dir, out),
        Language::Python => build_python(dir, out),
        Language::JavaScript => build_js(dir, out, js),
    }
}
