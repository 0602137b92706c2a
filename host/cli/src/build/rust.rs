//! Rust policies: cargo for the policy target, then wit-component.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use switchyard_core::check;

use super::tools::{BuildError, Built, TARGET};

/// Turns a core module built with `switchyard-guest` (it embeds the world's
/// type information) into a component.
pub fn componentize(core: &[u8], what: &str) -> Result<Vec<u8>, BuildError> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)
        .and_then(|e| e.encode())
        .map_err(|e| BuildError::Componentize {
            path: what.to_owned(),
            message: format!("{e:#}"),
        })
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
    // Cargo runs in the crate's folder: rustup picks the toolchain by the
    // working directory (the folder's rust-toolchain.toml), not by
    // --manifest-path, so a caller elsewhere would get their default one.
    let folder = manifest.parent().unwrap_or(crate_dir);
    let (name, target_dir) = crate_metadata(&manifest, folder)?;

    let status = Command::new(cargo())
        .current_dir(folder)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .env(POLICY_RUSTFLAGS_VAR, policy_rustflags())
        .stdout(Stdio::null())
        .status()
        .map_err(BuildError::Cargo)?;
    if !status.success() {
        return Err(BuildError::CargoFailed {
            dir: folder.display().to_string(),
            toolchain: toolchain_in(folder),
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

/// The toolchain a build in `folder` uses, for an error: what `rustup show
/// active-toolchain` says there (name and why), else `rustc --version`.
fn toolchain_in(folder: &Path) -> String {
    let first_line = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(folder)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_owned)
            })
    };
    let rustc = first_line("rustc", &["--version"]);
    match (first_line("rustup", &["show", "active-toolchain"]), rustc) {
        (Some(rustup), Some(rustc)) => format!("{rustup}, {rustc}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => "unknown (neither rustup nor rustc could be run)".to_owned(),
    }
}

/// The package name of `manifest` and its target directory, as cargo run in
/// `folder` sees them.
fn crate_metadata(manifest: &Path, folder: &Path) -> Result<(String, PathBuf), BuildError> {
    let output = Command::new(cargo())
        .current_dir(folder)
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
