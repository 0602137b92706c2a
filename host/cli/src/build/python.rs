//! Python policies: componentize-py, WASI stubbed out.

use std::path::Path;
use std::process::Command;

use super::tools::{BuildError, Built, default_output, finish, run_tool, staging};

/// The file a Python policy folder must have.
pub const PYTHON_MODULE: &str = "policy.py";

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
