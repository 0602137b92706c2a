//! Shared by the host's integration tests: one engine per test binary, the
//! policy components built by `switchyard-test-artifacts`, and route helpers.
#![allow(dead_code)]

pub mod aws;

use std::sync::{Arc, OnceLock};

use switchyard::{Engine, Policy, Request, Route, RouteConfig};

/// The one engine of this test process (engines reserve a pool each).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("engine"))
}

/// Loads a built policy component.
pub fn load(path: &str) -> Arc<Policy> {
    let bytes = std::fs::read(path).expect("artifact");
    Policy::new(engine(), &bytes, path).expect("policy loads")
}

/// A route for `orders` from route config JSON.
pub fn route(json: &str) -> Route {
    Route::new(
        "orders",
        RouteConfig::from_json(json).expect("route config"),
    )
    .expect("route")
}

/// The usual synthetic-mode route with a candidate.
pub fn synthetic_route() -> Route {
    route(r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#)
}

/// A request to `orders` with the given headers.
pub fn request(headers: &[(&str, &str)]) -> Arc<Request> {
    Arc::new(Request::new(
        "orders",
        "GET",
        "/",
        headers.iter().map(|(k, v)| (*k, *v)),
    ))
}

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Kills the child process when dropped, so a failing test leaves no server.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `host/tests/support/moto_lambda.py` (boto3 against moto's Lambda)
/// and parses its JSON output.
pub fn moto_lambda(args: &[&str]) -> serde_json::Value {
    let script = repo_root().join("host/tests/support/moto_lambda.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "moto_lambda.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
