//! Builds every crate of the `policies/` workspace to `wasm32-unknown-unknown`,
//! turns each into a component with `wit-component`, and generates path
//! constants plus a `foreach_policy!` macro so each policy gets a host test.
//! (The pattern of wasmtime's `crates/test-programs/artifacts`.)
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let policies = root.join("policies");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out.join("target");

    for watched in [
        "policies/Cargo.toml",
        "policies/Cargo.lock",
        "guest-sdk",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let crates = policy_crates(&policies);
    for name in &crates {
        println!(
            "cargo:rerun-if-changed={}",
            policies.join(name).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            policies.join(name).join("Cargo.toml").display()
        );
        let wit = policies.join(name).join("wit");
        if wit.exists() {
            println!("cargo:rerun-if-changed={}", wit.display());
        }
    }

    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "--workspace",
        "--target",
        "wasm32-unknown-unknown",
    ])
    .arg("--manifest-path")
    .arg(policies.join("Cargo.toml"))
    // As `switchyard policy build` does (host/cli/src/build.rs, policy_rustflags):
    // a 64 KiB shadow stack at the start of memory.
    .env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        "-C link-arg=-zstack-size=65536",
    );
    // Settings meant for the host build must not leak into the wasm build
    // (clippy's wrapper, host rustflags, the profile of the outer build).
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_TARGET_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    // After the removals: an outer CARGO_TARGET_DIR (a shared target dir)
    // must not undo it, or the policies land where this script never looks.
    cmd.env("CARGO_TARGET_DIR", &target_dir);
    let status = cmd.status().expect("failed to run cargo for policies/");
    assert!(
        status.success(),
        "building policies/ for wasm32-unknown-unknown failed; is the target installed? \
         (rustup target add wasm32-unknown-unknown)"
    );

    let mut generated = String::new();
    let mut all = String::new();
    let mut foreach = String::new();
    for name in &crates {
        let core = target_dir
            .join("wasm32-unknown-unknown/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = fs::read(&core).unwrap_or_else(|e| panic!("reading {}: {e}", core.display()));
        let component = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&bytes)
            .and_then(|e| e.encode())
            .unwrap_or_else(|e| panic!("componentizing {name}: {e:?}"));
        let path = out.join(format!("{name}.component.wasm"));
        fs::write(&path, component).unwrap();
        let ident = name.to_uppercase().replace('-', "_");
        writeln!(
            generated,
            "/// Path of the `{name}` policy component.\npub const {ident}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        writeln!(all, "    ({name:?}, {ident}),").unwrap();
        writeln!(
            foreach,
            "        $mac!({}, {ident});",
            name.replace('-', "_")
        )
        .unwrap();
    }
    writeln!(
        generated,
        "/// Every policy: (crate name, component path).\npub const ALL: &[(&str, &str)] = &[\n{all}];\n\n\
         /// Calls `$mac!(snake_name, PATH_CONST)` for every policy in `policies/`.\n\
         #[macro_export]\nmacro_rules! foreach_policy {{\n    ($mac:ident) => {{\n{foreach}    }};\n}}"
    )
    .unwrap();
    fs::write(out.join("gen.rs"), generated).unwrap();
}

/// Member crates of the policies workspace: its subfolders with a Cargo.toml.
fn policy_crates(policies: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(policies)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
