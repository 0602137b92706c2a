//! Every front end reaches a route's dispatcher through the one
//! decide-and-dispatch step: path routing, the Lambda Invoke API, the
//! router function and the mesh extension, each checked against the
//! test-only `echo` backend (`host/dispatch/src/echo.rs`, feature `echo`),
//! which answers with what a target would have received. Also: the router
//! function hands API Gateway's request context to the target unchanged.

use switchyard_test_support as common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchyard_config::{ConfigStore, DirStore, WatchConfig, Watcher};
use switchyard_core::RouteConfig;
use switchyard_lambda::{RouterEnv, RouterFunction};
use switchyard_proxy::{Proxy, ProxyConfig};
use tower::ServiceExt;

const ROUTE: &str = r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
    "context":{"7":{"QUEUE":"q7"},"8":{"QUEUE":"q8"}},"dispatch":{"type":"echo"}}"#;

/// A `dir:` store with `orders` routed by synthetic-header to `echo`.
async fn store() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = DirStore::new(&root).unwrap();
    let bytes = std::fs::read(switchyard_test_artifacts::SYNTHETIC_HEADER).unwrap();
    let mut cfg = RouteConfig::from_json(ROUTE).unwrap();
    cfg.policy = Some(store.put_blob(&bytes, &|_, _| {}).await.unwrap());
    store.put_route("orders", &cfg).await.unwrap();
    (tmp, format!("dir:{}", root.display()))
}

/// What the echo target received, from a response body.
fn echoed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not the echo backend's JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

fn assert_candidate(e: &Value, call: &str) {
    assert_eq!(e["dispatcher"], "echo", "{e}");
    assert_eq!(e["call"], call, "{e}");
    assert_eq!(e["qualifier"], "8", "{e}");
    assert_eq!(e["traffic"], "synthetic", "{e}");
    assert_eq!(e["context"], json!({"QUEUE": "q8"}), "{e}");
    assert_eq!(e["headers"]["x-switchyard-traffic"], "synthetic", "{e}");
    assert_eq!(e["headers"]["x-switchyard-ctx-queue"], "q8", "{e}");
}

#[tokio::test]
async fn path_routing_and_the_invoke_api_reach_the_dispatcher() {
    let (_tmp, uri) = store().await;
    let watcher = Arc::new(Watcher::new(
        switchyard_config::open(&uri).await.unwrap(),
        switchyard_core::Engine::new().unwrap(),
        WatchConfig::default(),
    ));
    let proxy = Proxy::new(watcher.policies(), ProxyConfig::default());
    watcher.set_prepare(proxy.prepare_hook());
    watcher.poll().await.unwrap();
    let routes = switchyard_proxy::router(proxy);

    let req = http::Request::get("/orders/api/1?x=1")
        .header("x-switchyard-synthetic", "true")
        // A caller cannot forge the context a version is handed.
        .header("x-switchyard-ctx-queue", "forged")
        .body(Body::empty())
        .unwrap();
    let response = routes.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let e = echoed(&response.into_body().collect().await.unwrap().to_bytes());
    assert_candidate(&e, "http");
    assert_eq!(
        (e["path"].as_str(), e["query"].as_str()),
        (Some("/api/1"), Some("x=1"))
    );

    let req = http::Request::post("/2015-03-31/functions/orders/invocations")
        .header("x-switchyard-synthetic", "true")
        .body(Body::from(r#"{"order":1}"#))
        .unwrap();
    let response = routes.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let e = echoed(&response.into_body().collect().await.unwrap().to_bytes());
    assert_candidate(&e, "invoke");
    assert_eq!(e["body"], r#"{"order":1}"#);
}

#[tokio::test]
async fn the_router_function_reaches_the_dispatcher_with_the_callers_request_context() {
    let (tmp, uri) = store().await;
    let router = RouterFunction::init(RouterEnv {
        store: uri,
        function: Some("orders".into()),
        routes: Vec::new(),
        cache_dir: tmp.path().join("cache"),
        poll_interval: Duration::from_secs(60),
        emf: None,
    })
    .await
    .unwrap();
    // As API Gateway sends it: the authorizer's claims, the caller's
    // address, the stage and request id must reach the version unchanged.
    let context = json!({
        "accountId": "123456789012", "apiId": "a1b2c3", "domainName": "api.example.com",
        "domainPrefix": "api", "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default",
        "stage": "prod", "time": "26/Nov/2026:15:00:00 +0000", "timeEpoch": 1795618800000u64,
        "http": {"method": "POST", "path": "/api/1", "protocol": "HTTP/1.1",
                 "sourceIp": "203.0.113.9", "userAgent": "curl/8"},
        "authorizer": {"jwt": {"claims": {"sub": "user-1", "scope": "orders"}, "scopes": null}},
    });
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/api/1", "rawQueryString": "",
        "headers": {"x-switchyard-synthetic": "true", "content-type": "application/json"},
        "requestContext": context, "body": "{}", "isBase64Encoded": false,
    });
    let response = router.handle(&event).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let e = echoed(response["body"].as_str().unwrap().as_bytes());
    assert_candidate(&e, "http");
    assert_eq!(e["request-context"], context);
}

/// Lambda's Extensions API, answered on loopback as Lambda answers it (the
/// emulator has none): registration succeeds, and `event/next` never
/// returns, as while no invocation comes.
async fn extensions_api() -> u16 {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/2020-01-01/extension/register",
            post(|| async { ([("lambda-extension-identifier", "test-id")], "{}") }),
        )
        .route(
            "/2020-01-01/extension/event/next",
            get(std::future::pending::<&'static str>),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_reaches_the_dispatcher() {
    let (tmp, uri) = store().await;
    let api = extensions_api().await;
    let (mesh, runtime) = (common::free_port(), common::free_port());
    let _extension = common::Killed(
        Command::new(env!("CARGO_BIN_EXE_switchyard-extension"))
            .env("SWITCHYARD_STORE", &uri)
            .env("SWITCHYARD_FUNCTIONS", "orders")
            .env("SWITCHYARD_PORT", mesh.to_string())
            .env("SWITCHYARD_RUNTIME_PROXY_PORT", runtime.to_string())
            .env("SWITCHYARD_CACHE_DIR", tmp.path().join("cache"))
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{api}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{mesh}/2015-03-31/functions/orders/invocations");
    let out = tokio::task::spawn_blocking(move || {
        common::wait_for_port(mesh, "the extension's mesh", Duration::from_secs(60));
        // The mesh binds before the policies load; /healthz says when ready.
        let health = format!("http://127.0.0.1:{mesh}/healthz");
        common::eventually(Duration::from_secs(60), "the extension is ready", || {
            let o = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &health])
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&o.stdout).into_owned();
            (code == "200").then_some(()).ok_or(code)
        });
        Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                &url,
                "-H",
                "x-switchyard-synthetic: true",
                "-d",
                "{}",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_candidate(&echoed(&out.stdout), "invoke");
}
