//! JavaScript policies: componentize-qjs (QuickJS) or jco (SpiderMonkey),
//! WASI stubbed out or disabled.

use std::path::Path;
use std::process::Command;

use super::tools::{BuildError, Built, default_output, finish, run_tool, staging};

/// The file a JavaScript policy folder must have.
pub const JS_MODULE: &str = "policy.js";

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
