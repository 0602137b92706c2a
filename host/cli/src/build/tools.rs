//! What every language's build shares.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use switchyard_core::{PolicyError, PolicyInfo, check};

/// The Rust target policies are built for: no WASI, so no capabilities.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Why a policy crate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `cargo` could not be run.
    #[error("cannot run cargo: {0}; is Rust installed (https://rustup.rs)?")]
    Cargo(#[source] std::io::Error),
    /// `cargo build` failed (its output went to stderr).
    #[error(
        "cargo build of {dir} failed with toolchain {toolchain} (see cargo's output above); if it says it can't find crate `core`/`std`, that toolchain lacks the {TARGET} target: run `rustup target add {TARGET}` in {dir}, or name a toolchain that has it in {dir}/rust-toolchain.toml"
    )]
    CargoFailed {
        /// The crate folder.
        dir: String,
        /// The toolchain cargo ran with there, as rustup (else rustc) names it.
        toolchain: String,
    },
    /// The folder is not a policy crate.
    #[error("{0}")]
    NotAPolicyCrate(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// wit-component refused the module.
    #[error("cannot turn {path} into a component: {message}")]
    Componentize {
        /// The core module.
        path: String,
        /// wit-component's complaint.
        message: String,
    },
    /// The component is built but is not a valid policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A language's build tool is not installed.
    #[error("cannot run {tool} ({source}); {install}")]
    ToolMissing {
        /// The program.
        tool: String,
        /// How to install it.
        install: &'static str,
        /// Why it could not be started.
        source: std::io::Error,
    },
    /// A language's build tool ran and failed.
    #[error("{tool} could not build {dir} (see its output above)")]
    ToolFailed {
        /// The program.
        tool: String,
        /// The policy folder.
        dir: String,
    },
}

/// The WIT contract, embedded so that building a Python or JavaScript policy
/// needs no checkout of this repository.
pub const WIT: &str = include_str!("../../wit/policy.wit");

/// A built policy.
#[derive(Debug, Clone)]
pub struct Built {
    /// Where the component was written.
    pub path: PathBuf,
    /// Its digest, imports and exports.
    pub info: PolicyInfo,
}

/// `<dir>/target`, holding the contract for the tool and the output.
pub(crate) fn staging(dir: &Path) -> Result<PathBuf, BuildError> {
    let target = dir.join("target");
    let wit = target.join("wit");
    std::fs::create_dir_all(&wit).map_err(|source| BuildError::Io {
        path: wit.display().to_string(),
        source,
    })?;
    let file = wit.join("policy.wit");
    std::fs::write(&file, WIT).map_err(|source| BuildError::Io {
        path: file.display().to_string(),
        source,
    })?;
    Ok(target)
}

pub(crate) fn default_output(dir: &Path, target: &Path) -> PathBuf {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "policy".to_owned());
    target.join(format!("{name}.component.wasm"))
}

/// Runs a build tool with its output on stderr.
pub(crate) fn run_tool(
    mut cmd: Command,
    tool: &str,
    install: &'static str,
    dir: &Path,
) -> Result<(), BuildError> {
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| BuildError::ToolMissing {
            tool: tool.to_owned(),
            install,
            source,
        })?;
    if !status.success() {
        return Err(BuildError::ToolFailed {
            tool: tool.to_owned(),
            dir: dir.display().to_string(),
        });
    }
    Ok(())
}

/// Checks and keeps a component a tool wrote to `out`.
pub(crate) fn finish(out: PathBuf) -> Result<Built, BuildError> {
    let bytes = std::fs::read(&out).map_err(|source| BuildError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let info = check(&bytes, &out.display().to_string())?;
    Ok(Built { path: out, info })
}
