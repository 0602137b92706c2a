//! Building a policy folder into a policy component: a Rust crate with
//! cargo and wit-component, a Python module with componentize-py, a
//! JavaScript module with jco. Every language gets the same contract and the
//! same check: the component may import only `switchyard:policy` interfaces.

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
        "cargo build of {dir} failed (see cargo's output above); if it says it can't find crate `core`/`std`, run: rustup target add {TARGET}"
    )]
    CargoFailed {
        /// The crate folder.
        dir: String,
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

/// The file a Python policy folder must have.
pub const PYTHON_MODULE: &str = "policy.py";
/// The file a JavaScript policy folder must have.
pub const JS_MODULE: &str = "policy.js";

/// The WIT contract, embedded so that building a Python or JavaScript policy
/// needs no checkout of this repository.
pub const WIT: &str = include_str!("../../../wit/policy.wit");

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

/// `<dir>/target`, holding the contract for the tool and the output.
fn staging(dir: &Path) -> Result<PathBuf, BuildError> {
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

fn default_output(dir: &Path, target: &Path) -> PathBuf {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "policy".to_owned());
    target.join(format!("{name}.component.wasm"))
}

/// Runs a build tool with its output on stderr.
fn run_tool(
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
fn finish(out: PathBuf) -> Result<Built, BuildError> {
    let bytes = std::fs::read(&out).map_err(|source| BuildError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let info = check(&bytes, &out.display().to_string())?;
    Ok(Built { path: out, info })
}

/// The componentize-py program: `$SWITCHYARD_COMPONENTIZE_PY` or on `PATH`.
fn componentize_py() -> std::ffi::OsString {
    std::env::var_os("SWITCHYARD_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into())
}

/// Builds `<dir>/policy.py` with componentize-py, WASI stubbed out: the
/// interpreter's file, clock and random imports become traps or errors
/// inside the component, so it imports only `switchyard:policy`.
pub fn build_python(dir: &Path, out: Option<&Path>) -> Result<Built, BuildError> {
    let target = staging(dir)?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_output(dir, &target));
    let mut cmd = Command::new(componentize_py());
    cmd.arg("-d")
        .arg(target.join("wit"))
        .args(["-w", "router", "componentize", "--stub-wasi", "-p"])
        .arg(dir)
        .arg(PYTHON_MODULE.trim_end_matches(".py"))
        .arg("-o")
        .arg(&out);
    run_tool(
        cmd,
        "componentize-py",
        "install it with `pip install componentize-py==0.25.1` (the version Switchyard is \
         tested with), or set SWITCHYARD_COMPONENTIZE_PY",
        dir,
    )?;
    finish(out)
}

/// Turns a core module built with `switchyard-guest` (it embeds the world's
/// type information) into a component.
pub fn componentize(core: &[u8], what: &str) -> Result<Vec<u8>, BuildError> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)
        .and_then(|mut e| e.encode())
        .map_err(|e| BuildError::Componentize {
            path: what.to_owned(),
            message: format!("{e:#}"),
        })
}

/// A built policy.
#[derive(Debug, Clone)]
pub struct Built {
    /// Where the component was written.
    pub path: PathBuf,
    /// Its digest, imports and exports.
    pub info: PolicyInfo,
}

/// Where cargo reads extra rustflags for the policy target.
pub const POLICY_RUSTFLAGS_VAR: &str = "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS";

/// Rustflags for policies: a 64 KiB shadow stack instead of rustc's 1 MiB
/// default, so the pages a policy touches sit at the start of its memory
/// (what `EngineConfig::keep_resident` keeps warm between instances; see
/// BENCHMARKS.md). Flags the caller already set in the variable come first.
pub fn policy_rustflags() -> String {
    let own = "-C link-arg=-zstack-size=65536";
    match std::env::var(POLICY_RUSTFLAGS_VAR) {
        Ok(v) if !v.trim().is_empty() => format!("{v} {own}"),
        _ => own.to_owned(),
    }
}

/// Builds the policy crate in `crate_dir` for [`TARGET`] in release mode,
/// componentizes it, checks its interface, and writes it to `out` (default:
/// `<target-dir>/wasm32-unknown-unknown/release/<crate>.component.wasm`).
/// Cargo's progress goes to stderr.
pub fn build_policy(crate_dir: &Path, out: Option<&Path>) -> Result<Built, BuildError> {
    let manifest = crate_dir.join("Cargo.toml");
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BuildError::Io { path, source }
    };
    let manifest = manifest.canonicalize().map_err(|e| {
        BuildError::NotAPolicyCrate(format!(
            "{} has no Cargo.toml ({e}); pass the folder of a Rust policy crate",
            crate_dir.display()
        ))
    })?;
    let (name, target_dir) = crate_metadata(&manifest)?;

    let status = Command::new(cargo())
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .env(POLICY_RUSTFLAGS_VAR, policy_rustflags())
        .stdout(Stdio::null())
        .status()
        .map_err(BuildError::Cargo)?;
    if !status.success() {
        return Err(BuildError::CargoFailed {
            dir: crate_dir.display().to_string(),
        });
    }

    let release = target_dir.join(TARGET).join("release");
    let core_path = release.join(format!("{}.wasm", name.replace('-', "_")));
    let core = std::fs::read(&core_path).map_err(io(&core_path))?;
    let component = componentize(&core, &core_path.display().to_string())?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| release.join(format!("{name}.component.wasm")));
    let info = check(&component, &out.display().to_string())?;
    std::fs::write(&out, &component).map_err(io(&out))?;
    Ok(Built { path: out, info })
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The package name of `manifest` and its target directory.
fn crate_metadata(manifest: &Path) -> Result<(String, PathBuf), BuildError> {
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(BuildError::Cargo)?;
    let bad = |why: String| BuildError::NotAPolicyCrate(format!("{}: {why}", manifest.display()));
    if !output.status.success() {
        return Err(bad("cargo metadata failed (see above)".into()));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| bad(format!("cargo metadata: {e}")))?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest))
        .ok_or_else(|| {
            bad("is a workspace manifest, not a policy crate; pass the crate's folder".into())
        })?;
    let is_cdylib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
        });
    if !is_cdylib {
        return Err(bad(
            "is not a cdylib; a policy crate needs `[lib] crate-type = [\"cdylib\"]`".into(),
        ));
    }
    let name = package["name"].as_str().unwrap_or_default().to_owned();
    let target_dir = PathBuf::from(meta["target_directory"].as_str().unwrap_or("target"));
    Ok((name, target_dir))
}

/// How JavaScript policies are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsBackend {
    /// QuickJS through componentize-qjs: 1.7 MB components built in about
    /// 2 s; a warm decision in about 9 µs (the default; BENCHMARKS.md).
    #[default]
    QuickJs,
    /// SpiderMonkey through componentize-js (`jco componentize`): 12.5 MB
    /// components built in about 10 s; a warm decision in about 0.9 ms, and
    /// its collector sometimes exceeds the default fuel budget.
    SpiderMonkey,
}

/// A Node.js tool: `$<var>` if set, else `node_modules/.bin/<name>` in the
/// policy folder or the nearest folder above it that has one, else on `PATH`.
fn node_tool(dir: &Path, name: &str, var: &str) -> std::ffi::OsString {
    if let Some(tool) = std::env::var_os(var) {
        return tool;
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors()
        .map(|d| d.join("node_modules/.bin").join(name))
        .find(|p| p.is_file())
        .map_or_else(|| name.into(), Into::into)
}

const NODE_TOOLS_INSTALL: &str = "run `npm ci --prefix policies/js` in a Switchyard checkout, or \
    `npm install componentize-qjs@0.4.5 @bytecodealliance/jco@1.34.0 \
    @bytecodealliance/componentize-js@0.22.0` in your policy's folder or one above it";

/// Builds `<dir>/policy.js` with `backend`, WASI stubbed out or disabled,
/// so the component imports only `switchyard:policy`.
pub fn build_js(dir: &Path, out: Option<&Path>, backend: JsBackend) -> Result<Built, BuildError> {
    let target = staging(dir)?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_output(dir, &target));
    let (cmd, tool) = match backend {
        JsBackend::QuickJs => {
            let mut cmd = Command::new(node_tool(
                dir,
                "componentize-qjs",
                "SWITCHYARD_COMPONENTIZE_QJS",
            ));
            // --sync: plain exports (the async ABI is not enabled in the host).
            cmd.arg("--wit")
                .arg(target.join("wit"))
                .args(["--world", "router", "--sync", "--stub-wasi", "--js"])
                .arg(dir.join(JS_MODULE))
                .arg("-o")
                .arg(&out);
            (cmd, "componentize-qjs")
        }
        JsBackend::SpiderMonkey => {
            let mut cmd = Command::new(node_tool(dir, "jco", "SWITCHYARD_JCO"));
            cmd.arg("componentize")
                .arg(dir.join(JS_MODULE))
                .arg("--wit")
                .arg(target.join("wit"))
                .args(["--world-name", "router", "-d", "all", "-o"])
                .arg(&out);
            (cmd, "jco")
        }
    };
    run_tool(cmd, tool, NODE_TOOLS_INSTALL, dir)?;
    finish(out)
}
