//! The router function (`switchyard-lambda`) run as Lambda runs it: under
//! `cargo lambda watch --only-lambda-apis` (PyPI `cargo-lambda`), which
//! serves the Runtime API to our prebuilt binary and the Invoke API to
//! callers, with the chosen versions invoked in moto's Lambda (its recorder
//! shows the qualifier of every Invoke) and route configs in moto's SSM.

use switchyard_test_support as common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{
    Killed, aws, cargo_lambda_watch, eventually, invoke_http_event, lambda_route_with_two_versions,
    moto_lambda, repo_root, switchyard_cli as switchyard, unique_tag,
};
use serde_json::{Value, json};

/// The router binary attached to the watch's Runtime API, with its own
/// stderr captured to `log`.
fn router(port: u16, env: &[(&str, String)], log: &std::path::Path) -> Killed {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    common::router_function(
        std::path::Path::new(env!("CARGO_BIN_EXE_switchyard-lambda")),
        port,
        &env,
        log,
    )
}

/// Invokes the router through the watch's Invoke API with an API Gateway
/// HTTP API event; returns the router's response event.
fn invoke(port: u16, headers: Value) -> Value {
    let out = invoke_http_event(port, "switchyard-lambda", "GET", "/orders/1", headers);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("router answer {:?}: {e}", String::from_utf8_lossy(&out)))
}

fn qualifiers(name: &str) -> Vec<String> {
    moto_lambda(&["calls", aws::endpoint(), name])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["qualifier"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_router_function_routes_by_header_and_mode_and_restarts_warm_from_tmp() {
    let endpoint = aws::endpoint().to_owned();
    let name = format!("sy-router-{}", unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("ssm:/router{}", std::process::id());
    let (stable, candidate) = lambda_route_with_two_versions(&store, "orders", &name, tmp.path());

    let (_watch, port) = cargo_lambda_watch(&repo_root());
    let cache = tmp.path().join("tmp-cache");
    let env = vec![
        ("SWITCHYARD_STORE", store.clone()),
        ("SWITCHYARD_FUNCTION", "orders".to_owned()),
        ("SWITCHYARD_CACHE_DIR", cache.display().to_string()),
        ("SWITCHYARD_POLL_INTERVAL", "300ms".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
    ];
    let log1 = tmp.path().join("router1.log");
    let first = router(port, &env, &log1);

    // Header routing: the tagged request reaches the candidate qualifier.
    let r = invoke(port, json!({"x-switchyard-synthetic": "true"}));
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(
        r["headers"]["x-switchyard-target"],
        candidate.as_str(),
        "{r}"
    );
    assert_eq!(r["headers"]["x-switchyard-traffic"], "synthetic");
    // moto echoes the event the function got: tagged synthetic.
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["headers"]["x-switchyard-traffic"], "synthetic");
    let r = invoke(port, json!({"accept": "*/*"}));
    assert_eq!(r["headers"]["x-switchyard-target"], stable.as_str(), "{r}");
    assert_eq!(qualifiers(&name), [candidate.clone(), stable.clone()]);

    // Mode flip in the store: picked up by the background poll.
    switchyard(&store, &["mode", "orders", "production"]);
    eventually(
        Duration::from_secs(20),
        "the mode flip reaches the router",
        || {
            let r = invoke(port, json!({"x-switchyard-synthetic": "true"}));
            let to_stable = r["headers"]["x-switchyard-target"] == stable.as_str();
            to_stable.then_some(()).ok_or(r.to_string())
        },
    );
    drop(first);
    let log = std::fs::read_to_string(&log1).unwrap();
    assert!(log.contains(r#""event":"ready""#), "{log}");
    assert!(log.contains(r#""event":"first-response""#), "{log}");

    // A warm start whose store never answers (a listener that accepts and
    // stays silent): the policy comes from the /tmp cache, and invocations
    // are served while the poll hangs.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut env = env;
    env.push((
        "AWS_ENDPOINT_URL_SSM",
        format!("http://{}", silent.local_addr().unwrap()),
    ));
    let log2 = tmp.path().join("router2.log");
    let _second = router(port, &env, &log2);
    let started = Instant::now();
    let r = invoke(port, json!({"x-switchyard-synthetic": "true"}));
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(
        r["headers"]["x-switchyard-target"],
        stable.as_str(),
        "the cached (production-mode) route serves: {r}"
    );
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(log.contains("restored-from-cache"), "{log}");
    eprintln!(
        "warm start with a silent store: first answer after {:?}",
        started.elapsed()
    );
}
