//! `switchyard serve`'s proxy over real sockets: loopback upstreams that
//! answer with their version, a `dir` store, the watcher, and a real client.

use switchyard_test_support as common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::moto_lambda;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_config::{ConfigStore, DirStore};
use switchyard_config::{WatchConfig, Watcher};
use switchyard_core::{Mode, RouteConfig};
use switchyard_proxy::{ClientsConfig, Proxy, ProxyConfig};
use switchyard_test_artifacts as art;

/// What an upstream saw: (version, traffic header, path+query, body,
/// `x-switchyard-ctx-queue_url`).
type Seen = Arc<Mutex<Vec<(String, String, String, String, String)>>>;

/// An upstream "function version" on loopback: answers JSON naming its
/// version, echoing the traffic tag and context headers; `delay` first.
async fn upstream(version: &'static str, delay: Duration, seen: Seen) -> String {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(delay).await;
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let h = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            seen.lock().unwrap().push((
                version.into(),
                h("x-switchyard-traffic"),
                path.clone(),
                String::from_utf8_lossy(&body).into(),
                h("x-switchyard-ctx-queue_url"),
            ));
            axum::Json(serde_json::json!({
                "version": version,
                "traffic": h("x-switchyard-traffic"),
                "queue": h("x-switchyard-ctx-queue_url"),
                "path": path,
                "body": String::from_utf8_lossy(&body),
                "functions-key": h("x-functions-key"),
            }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Rig {
    base: String,
    /// The admin listener: decide, metrics, health with functions.
    admin: String,
    store: Arc<dyn ConfigStore>,
    watcher: Arc<Watcher>,
    seen: Seen,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _tmp: tempfile::TempDir,
}

fn route(mode: &str, urls: &HashMap<&str, String>, extra: &str) -> RouteConfig {
    RouteConfig::from_json(&format!(
        r#"{{"mode":"{mode}","versions":{{"stable":"7","candidate":"8"}},
            "context":{{"8":{{"QUEUE_URL":"q-candidate"}}}}{extra},
            "dispatch":{{"type":"http","urls":{{"7":"{}","8":"{}"}}}}}}"#,
        urls["7"], urls["8"]
    ))
    .unwrap()
}

async fn rig(extra: &str, slow: Duration, config: ProxyConfig) -> Rig {
    let seen: Seen = Arc::default();
    let urls = HashMap::from([
        ("7", upstream("7", slow, seen.clone()).await),
        ("8", upstream("8", Duration::ZERO, seen.clone()).await),
    ]);
    rig_route(route("synthetic", &urls, extra), seen, config).await
}

/// The proxy serving `orders` with route config `cfg` and the
/// `synthetic-header` policy, from a `dir` store.
async fn rig_route(cfg: RouteConfig, seen: Seen, config: ProxyConfig) -> Rig {
    rig_named("orders", cfg, seen, config).await
}

/// The proxy serving `function` with route config `cfg`.
async fn rig_named(function: &str, cfg: RouteConfig, seen: Seen, config: ProxyConfig) -> Rig {
    rig_policy(art::SYNTHETIC_HEADER, function, cfg, seen, config).await
}

/// The proxy serving `function` with the policy component at `policy`.
async fn rig_policy(
    policy: &str,
    function: &str,
    mut cfg: RouteConfig,
    seen: Seen,
    config: ProxyConfig,
) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(DirStore::new(tmp.path()).unwrap());
    let bytes = std::fs::read(policy).unwrap();
    cfg.policy = Some(store.put_blob(&bytes, &|_, _| {}).await.unwrap());
    store.put_route(function, &cfg).await.unwrap();
    let watcher = Arc::new(Watcher::new(
        store.clone(),
        common::engine().clone(),
        WatchConfig {
            functions: vec![function.into()],
            ..Default::default()
        },
    ));
    let proxy = Proxy::new(
        watcher.policies(),
        ProxyConfig {
            expected_functions: vec![function.into()],
            metrics: Some(metrics()),
            ..config
        },
    );
    watcher.set_prepare(proxy.prepare_hook());
    watcher.poll().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    tokio::spawn(switchyard_proxy::serve_admin(
        admin_listener,
        proxy.clone(),
        std::future::pending(),
    ));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(switchyard_proxy::serve(listener, proxy, async {
        let _ = rx.await;
    }));
    Rig {
        base,
        admin,
        store,
        watcher,
        seen,
        shutdown: Some(tx),
        served,
        _tmp: tmp,
    }
}

/// The route config `orders` has in `store` now.
async fn live_config(store: &dyn ConfigStore) -> RouteConfig {
    store
        .latest(&["orders".into()])
        .await
        .unwrap()
        .remove(0)
        .unwrap()
        .expect("orders has a route config")
        .config
}

/// `/metrics` of this test process: one recorder, installed once, as a
/// binary does.
fn metrics() -> Arc<dyn Fn() -> String + Send + Sync> {
    static RENDER: std::sync::OnceLock<Arc<dyn Fn() -> String + Send + Sync>> =
        std::sync::OnceLock::new();
    RENDER
        .get_or_init(|| {
            let handle = switchyard_proxy::install_metrics_recorder();
            Arc::new(move || handle.render())
        })
        .clone()
}

async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_tags_and_hot_swaps() {
    let r = rig("", Duration::ZERO, ProxyConfig::default()).await;
    let (status, headers, body) = call(
        "POST",
        &format!("{}/orders/api/x?y=1", r.base),
        &[("X-Switchyard-Synthetic", "true")],
        "hello",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], "8");
    assert_eq!(body["traffic"], "synthetic");
    assert_eq!(body["queue"], "q-candidate");
    assert_eq!(body["path"], "/api/x?y=1");
    assert_eq!(body["body"], "hello");
    assert_eq!(headers["x-switchyard-target"], "8");
    assert_eq!(headers["x-switchyard-traffic"], "synthetic");

    let (_, _, body) = call(
        "GET",
        &format!("{}/orders/a%2Fb/c%20d?q=%26", r.base),
        &[],
        "",
    )
    .await;
    assert_eq!(
        body["path"], "/a%2Fb/c%20d?q=%26",
        "the path is forwarded as sent"
    );

    let (_, headers, body) = call("GET", &format!("{}/orders/api/x", r.base), &[], "").await;
    assert_eq!(
        (body["version"].as_str(), body["traffic"].as_str()),
        (Some("7"), Some("production"))
    );
    assert_eq!(headers["x-switchyard-target"], "7");
    assert_eq!(
        body["queue"], "",
        "the candidate's context does not leak to stable"
    );

    // A client cannot forge the traffic tag: the proxy sets it.
    let (_, _, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-switchyard-traffic", "synthetic")],
        "",
    )
    .await;
    assert_eq!(body["traffic"], "production");

    // Flip to production mode in the store: the next poll swaps it in.
    let mut cfg = live_config(&*r.store).await;
    cfg.mode = Mode::Production;
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (_, _, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-switchyard-synthetic", "1")],
        "",
    )
    .await;
    assert_eq!(body["version"], "7");

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("{}/metrics", r.admin).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for want in [
        r#"switchyard_requests_total{function="orders",target="8",traffic="synthetic",status="200"}"#,
        "switchyard_decision_seconds",
        r#"switchyard_swaps_total{function="orders"}"#,
        r#"switchyard_route_version{function="orders"}"#,
    ] {
        assert!(text.contains(want), "{want} missing from /metrics:\n{text}");
    }
}

/// A policy published before the contract moved to 0.2.0 (the component
/// binary as built then) is published to the store, loaded and routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_published_against_the_previous_contract_routes() {
    let seen: Seen = Arc::default();
    let urls = HashMap::from([
        ("7", upstream("7", Duration::ZERO, seen.clone()).await),
        ("8", upstream("8", Duration::ZERO, seen.clone()).await),
    ]);
    let cfg = route("synthetic", &urls, "");
    let r = rig_policy(
        art::SYNTHETIC_HEADER_0_1_0,
        "orders",
        cfg,
        seen,
        ProxyConfig::default(),
    )
    .await;
    for (headers, version, traffic) in [
        (&[("x-switchyard-synthetic", "true")][..], "8", "synthetic"),
        (&[][..], "7", "production"),
    ] {
        let (status, answer, body) =
            call("GET", &format!("{}/orders/x", r.base), headers, "").await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["version"].as_str(), body["traffic"].as_str()),
            (Some(version), Some(traffic))
        );
        assert_eq!(answer["x-switchyard-target"], version);
    }
    // `decide` shows its reason, as the policy wrote it then.
    let (status, _, decided) = call(
        "POST",
        &format!("{}/v1/decide", r.admin),
        &[],
        r#"{"function":"orders","headers":{"x-switchyard-synthetic":"1"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(decided["target"], "8");
    assert_eq!(
        decided["reason"],
        "synthetic mode and x-switchyard-synthetic is true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decide_api_health_and_errors() {
    let r = rig(
        "",
        Duration::ZERO,
        ProxyConfig {
            max_body: 1024,
            max_header_bytes: 2048,
            ..Default::default()
        },
    )
    .await;
    let (status, _, body) = call(
        "POST",
        &format!("{}/v1/decide", r.admin),
        &[],
        r#"{"function":"orders","headers":{"x-switchyard-synthetic":"1"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["route-version"], 1, "{body}");
    assert!(
        body["policy"]
            .as_str()
            .is_some_and(|p| p.starts_with("sha256:")),
        "{body}"
    );
    assert_eq!(
        (body["target"].as_str(), body["traffic"].as_str()),
        (Some("8"), Some("synthetic"))
    );

    let (status, _, body) = call("POST", &format!("{}/v1/decide", r.admin), &[], "{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid request JSON")
    );

    // A 404 on the public listener names no function: the routed ones
    // are config, listed on the admin listener.
    let (status, _, body) = call("GET", &format!("{}/nope/x", r.base), &[], "").await;
    assert_eq!(status, 404);
    assert!(body.get("functions").is_none(), "{body}");
    assert!(!body.to_string().contains("orders"), "{body}");

    let (status, _, body) = call("GET", &format!("{}/healthz", r.base), &[], "").await;
    assert_eq!(
        (status, body.clone()),
        (StatusCode::OK, serde_json::json!({"ready": true}))
    );
    let (status, _, body) = call("GET", &format!("{}/healthz", r.admin), &[], "").await;
    assert_eq!(
        (status, body["functions"].clone()),
        (StatusCode::OK, serde_json::json!(["orders"]))
    );
    // Neither the decide API nor the metrics are on the public listener.
    for (method, path) in [("POST", "/v1/decide"), ("GET", "/metrics")] {
        let (status, _, _) = call(method, &format!("{}{path}", r.base), &[], "{}").await;
        assert_eq!(status, 404, "{method} {path} on the public listener");
    }

    let (status, _, _) = call(
        "POST",
        &format!("{}/orders/x", r.base),
        &[],
        &"b".repeat(2000),
    )
    .await;
    assert_eq!(status, 413);
    let big = "h".repeat(3000);
    let (status, _, _) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-big", &big)],
        "",
    )
    .await;
    assert_eq!(status, 431);
    assert!(
        r.seen.lock().unwrap().is_empty(),
        "nothing rejected reached an upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_slow_is_a_clear_gateway_error() {
    let r = rig(
        "",
        Duration::from_secs(3),
        ProxyConfig {
            clients: ClientsConfig {
                upstream_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    // Stable (7) is slow: 504.
    let (status, _, body) = call("GET", &format!("{}/orders/x", r.base), &[], "").await;
    assert_eq!(status, 504);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{body}"
    );
    // Point the candidate at a closed port: 502.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = live_config(&*r.store).await;
    let mut spec = serde_json::Value::Object(cfg.dispatch.clone().unwrap().json().clone());
    spec["urls"]["8"] = serde_json::json!(format!("http://127.0.0.1:{port}"));
    cfg.dispatch = Some(serde_json::from_value(spec).unwrap());
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (status, headers, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-switchyard-synthetic", "1")],
        "",
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-switchyard-target"], "8");
    assert!(
        body["error"].as_str().unwrap().contains("qualifier 8"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_are_synthetic_and_do_not_change_the_response() {
    let r = rig(
        r#","flags":{"mirror-role":"candidate"}"#,
        Duration::ZERO,
        ProxyConfig::default(),
    )
    .await;
    let (status, headers, body) = call("POST", &format!("{}/orders/pay", r.base), &[], "p").await;
    assert_eq!(
        (status, body["version"].as_str()),
        (StatusCode::OK, Some("7"))
    );
    assert_eq!(headers["x-switchyard-traffic"], "production");
    // The copy arrives asynchronously at the candidate, tagged synthetic.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = r.seen.lock().unwrap().clone();
        if let Some(copy) = seen.iter().find(|s| s.0 == "8") {
            // Handed the candidate's own context, not stable's (none).
            assert_eq!(
                (
                    copy.1.as_str(),
                    copy.2.as_str(),
                    copy.3.as_str(),
                    copy.4.as_str()
                ),
                ("synthetic", "/pay", "p", "q-candidate")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mirror copy: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upstream for version 7 that takes one request: it says when the
/// request has arrived, and answers it only when told to.
async fn gated_upstream() -> (
    String,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((arrived_tx, release_rx))));
    let app = axum::Router::new().fallback(move || {
        let gate = gate.clone();
        async move {
            let (arrived, release) = gate.lock().unwrap().take().expect("one request");
            let _ = arrived.send(());
            let _ = release.await;
            axum::Json(serde_json::json!({"version": "7"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), arrived, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let seen: Seen = Arc::default();
    let (stable, arrived, release) = gated_upstream().await;
    let urls = HashMap::from([
        ("7", stable),
        ("8", upstream("8", Duration::ZERO, seen.clone()).await),
    ]);
    let mut r = rig_route(route("synthetic", &urls, ""), seen, ProxyConfig::default()).await;
    let url = format!("{}/orders/slow", r.base);
    let in_flight = tokio::spawn(async move { call("GET", &url, &[], "").await });
    tokio::time::timeout(Duration::from_secs(5), arrived)
        .await
        .expect("the request did not reach the upstream")
        .unwrap();
    r.shutdown.take().unwrap().send(()).unwrap();
    // The server has stopped accepting (its listener is closed) while the
    // request is still at the upstream, and serve waits for it...
    let addr = r.base.trim_start_matches("http://").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server still accepts after the shutdown signal"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // (A negative, so watched for a while: serve is still waiting.)
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut r.served)
            .await
            .is_err(),
        "serve returned with a request in flight"
    );
    // ...and once the upstream answers, the request gets its answer and
    // serve returns.
    release.send(()).unwrap();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, body["version"].as_str()),
        (StatusCode::OK, Some("7"))
    );
    tokio::time::timeout(Duration::from_secs(5), &mut r.served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served() {
    let r = rig("", Duration::ZERO, ProxyConfig::default()).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("{}/orders/h2", r.base))
        .header("x-switchyard-synthetic", "true")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-target"], "8");
}

// ---- Lambda dispatch and the Invoke API front end, against moto's Lambda ----

/// A Lambda function in moto with two published versions; its name is
/// unique to this test run. Returns (name, versions).
fn lambda_function(region: &str, tag: &str) -> (String, Vec<String>) {
    let endpoint = common::aws::endpoint();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("sy-{tag}-{}-{nanos}", std::process::id());
    let out = moto_lambda(&["setup", endpoint, region, &name]);
    let versions = serde_json::from_value(out["versions"].clone()).unwrap();
    (name, versions)
}

/// The proxy serving `cfg` with a Lambda client made from `sdk`.
async fn lambda_rig(cfg: RouteConfig, sdk: &aws_config::SdkConfig) -> Rig {
    let config = ProxyConfig {
        clients: ClientsConfig {
            lambda_client: Some(aws_sdk_lambda::Client::new(sdk)),
            ..Default::default()
        },
        ..Default::default()
    };
    rig_route(cfg, Seen::default(), config).await
}

fn lambda_route(name: &str, versions: &[String]) -> RouteConfig {
    RouteConfig::from_json(&format!(
        r#"{{"mode":"synthetic","versions":{{"stable":"{}","candidate":"{}"}},
            "context":{{"{}":{{"QUEUE_URL":"q-candidate"}}}},
            "dispatch":{{"type":"lambda","function-name":"{name}"}}}}"#,
        versions[0], versions[1], versions[1]
    ))
    .unwrap()
}

/// Each Invoke moto saw for `name`: qualifier, client context, type.
fn lambda_calls(name: &str) -> Vec<serde_json::Value> {
    let out = moto_lambda(&["calls", common::aws::endpoint(), name]);
    out.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_dispatch_invokes_the_chosen_qualifier() {
    // Its own region: moto's canned-result queue is per region.
    let region = "eu-west-1";
    let (name, versions) = lambda_function(region, "http");
    let (stable, candidate) = (versions[0].as_str(), versions[1].as_str());
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .load()
        .await;
    let r = lambda_rig(lambda_route(&name, &versions), &sdk).await;

    // moto without Docker echoes the event: the body is what the function got.
    let (status, headers, event) = call(
        "POST",
        &format!("{}/orders/api/x?y=1&y=2", r.base),
        &[("x-switchyard-synthetic", "true"), ("cookie", "a=1")],
        "hello",
    )
    .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(headers["x-switchyard-target"], candidate);
    assert_eq!(headers["x-switchyard-traffic"], "synthetic");
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["rawPath"], "/api/x");
    assert_eq!(event["rawQueryString"], "y=1&y=2");
    assert_eq!(event["queryStringParameters"]["y"], "1,2");
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["headers"]["x-switchyard-traffic"], "synthetic");
    assert_eq!(
        event["headers"]["x-switchyard-ctx-queue_url"],
        "q-candidate"
    );
    assert_eq!(event["cookies"][0], "a=1");
    assert_eq!(event["body"], "hello");

    let (status, headers, event) = call(
        "GET",
        &format!("{}/orders/plain", r.base),
        &[("x-switchyard-traffic", "synthetic")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchyard-target"], stable);
    assert_eq!(
        event["headers"]["x-switchyard-traffic"], "production",
        "a client cannot forge the tag"
    );
    assert!(event["headers"].get("x-switchyard-ctx-queue_url").is_none());

    // The recorder shows the qualifiers invoked and the tag in the client context.
    let calls = lambda_calls(&name);
    let seen: Vec<_> = calls
        .iter()
        .map(|c| {
            (
                c["qualifier"].as_str().unwrap_or(""),
                c["client_context"]["custom"]["x-switchyard-traffic"]
                    .as_str()
                    .unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![(candidate, "synthetic"), (stable, "production")],
        "{calls:?}"
    );
    assert_eq!(
        calls[0]["client_context"]["custom"]["x-switchyard-ctx-queue_url"],
        "q-candidate"
    );

    // A proxy response is mapped back to HTTP: status, headers, base64 body.
    let endpoint = common::aws::endpoint();
    let canned = serde_json::json!([
        r#"{"statusCode":201,"headers":{"x-made":"yes"},"cookies":["s=1"],"body":"AAEC","isBase64Encoded":true}"#,
        "this is not JSON",
    ]);
    moto_lambda(&["respond", endpoint, region, &canned.to_string()]);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("{}/orders/made", r.base).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-made"], "yes");
    assert_eq!(resp.headers()["set-cookie"], "s=1");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], &[0u8, 1, 2]);
    let (status, _, body) = call("GET", &format!("{}/orders/bad", r.base), &[], "").await;
    assert_eq!(status, 502);
    assert_eq!(body["function"], name.as_str());
    assert_eq!(body["qualifier"], stable);
    assert_eq!(body["error-type"], "InvalidResponse");

    // A mirror copy is an asynchronous (Event) invoke of the mirror
    // qualifier, tagged synthetic; the client gets the primary's answer.
    let mut cfg = lambda_route(&name, &versions);
    cfg.flags.insert("mirror-role".into(), "candidate".into());
    cfg.policy = live_config(&*r.store).await.policy;
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (status, headers, _) = call("GET", &format!("{}/orders/m", r.base), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchyard-target"], stable);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let calls = lambda_calls(&name);
        if let Some(copy) = calls.iter().find(|c| c["invocation_type"] == "Event") {
            assert_eq!(copy["qualifier"], candidate);
            assert_eq!(
                copy["client_context"]["custom"]["x-switchyard-traffic"],
                "synthetic"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no mirror: {calls:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_unreachable_is_a_clear_gateway_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::for_tests())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let r = lambda_rig(lambda_route("orders-fn", &["1".into(), "2".into()]), &sdk).await;
    let (status, headers, body) = call("GET", &format!("{}/orders/x", r.base), &[], "").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["x-switchyard-target"], "1");
    assert_eq!(body["function"], "orders-fn");
    assert_eq!(body["error-type"], "Unreachable");
    assert!(
        body["error"].as_str().unwrap().contains("qualifier 1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_api_front_end_routes_boto3_clients() {
    let (name, versions) = lambda_function("us-east-1", "invoke");
    let (stable, candidate) = (versions[0].as_str(), versions[1].as_str());
    let r = rig_route(
        lambda_route(&name, &versions),
        Seen::default(),
        ProxyConfig::default(),
    )
    .await;

    // A synthetic caller: the tag rides in the client context's `custom`.
    let out = moto_lambda(&[
        "invoke",
        &r.base,
        &name,
        r#"{"order":1}"#,
        r#"{"x-switchyard-synthetic":"true","user":"qa-bot"}"#,
    ]);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(
        out["payload"], r#"{"order":1}"#,
        "the payload is passed unchanged"
    );
    // Without a context, by the logical name: production, to stable.
    let out = moto_lambda(&["invoke", &r.base, "orders", r#"{"order":2}"#]);
    assert_eq!(out["status"], 200, "{out}");

    let calls = lambda_calls(&name);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["qualifier"], candidate);
    let custom = &calls[0]["client_context"]["custom"];
    assert_eq!(custom["x-switchyard-traffic"], "synthetic");
    assert_eq!(custom["x-switchyard-ctx-queue_url"], "q-candidate");
    assert_eq!(custom["user"], "qa-bot", "the caller's context is kept");
    assert_eq!(calls[1]["qualifier"], stable);
    assert_eq!(
        calls[1]["client_context"]["custom"]["x-switchyard-traffic"],
        "production"
    );

    // A function the proxy does not route: the SDK's own exception.
    let out = moto_lambda(&["invoke", &r.base, "nope", "{}"]);
    assert_eq!(out["error"], "ResourceNotFoundException", "{out}");
    assert!(out["message"].as_str().unwrap().contains("nope"), "{out}");
}

/// The value of the Prometheus sample `series` (exact labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_request() {
    // A function of its own: the recorder is shared by every test here.
    let seen: Seen = Arc::default();
    let urls = HashMap::from([
        ("7", upstream("7", Duration::ZERO, seen.clone()).await),
        ("8", upstream("8", Duration::ZERO, seen.clone()).await),
    ]);
    let cfg = route("synthetic", &urls, "");
    let r = rig_named("metered", cfg, seen, ProxyConfig::default()).await;
    for i in 0..7 {
        let synthetic: &[(&str, &str)] = if i < 4 {
            &[("x-switchyard-synthetic", "true")]
        } else {
            &[]
        };
        let (status, _, _) = call("GET", &format!("{}/metered/n{i}", r.base), synthetic, "").await;
        assert_eq!(status, 200);
    }
    let (_, _, _) = call(
        "POST",
        &format!("{}/v1/decide", r.admin),
        &[],
        r#"{"function":"metered"}"#,
    )
    .await;
    // Answers that never reach a policy are counted too: a function this
    // proxy does not route (labelled "-", so callers cannot mint label
    // values), and headers over the limit for one it does.
    let (status, _, _) = call("GET", &format!("{}/no-such-function/x", r.base), &[], "").await;
    assert_eq!(status, 404);
    let big = "x".repeat(40 << 10);
    let (status, _, _) = call(
        "GET",
        &format!("{}/metered/big", r.base),
        &[("x-big", &big)],
        "",
    )
    .await;
    assert_eq!(status, 431);
    // More header lines than hyper parses: hyper answers 431 itself,
    // before any handler, and that is counted too.
    let names: Vec<String> = (0..120).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let (status, _, _) = call("GET", &format!("{}/metered/many", r.base), &many, "").await;
    assert_eq!(status, 431);
    // hyper's own 431 is counted when its connection ends, which is just
    // after the client has the answer: read until it is there.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let hyper_431 =
        r#"switchyard_requests_total{function="-",target="none",traffic="none",status="431"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let resp = client
            .get(format!("{}/metrics", r.admin).parse().unwrap())
            .await
            .unwrap();
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        if sample(&text, hyper_431).is_some() || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let requests = |target: &str, traffic: &str| {
        sample(
            &text,
            &format!(
                r#"switchyard_requests_total{{function="metered",target="{target}",traffic="{traffic}",status="200"}}"#
            ),
        )
    };
    assert_eq!(requests("8", "synthetic"), Some(4.0), "{text}");
    assert_eq!(requests("7", "production"), Some(3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"switchyard_requests_total{function="metered",target="none",traffic="none",status="431"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // Refusals before any function was named, hyper's own 431 among them.
    for series in [
        r#"switchyard_requests_total{function="-",target="none",traffic="none",status="404"}"#,
        r#"switchyard_requests_total{function="-",target="none",traffic="none",status="431"}"#,
        r#"switchyard_connections_closed_total{listener="public",reason="head-too-large"}"#,
    ] {
        assert!(
            sample(&text, series).is_some_and(|n| n >= 1.0),
            "{series}\n{text}"
        );
    }
    // Every decision is timed, the decide API's included.
    assert_eq!(
        sample(
            &text,
            r#"switchyard_decision_seconds_count{function="metered"}"#
        ),
        Some(8.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_sends_everything_to_stable_as_production() {
    let r = rig(
        "",
        Duration::ZERO,
        ProxyConfig {
            bypass_policies: true,
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-switchyard-synthetic", "true")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchyard-target"], "7");
    assert_eq!(body["traffic"], "production");
}

/// A loopback endpoint answering every Invoke the way Lambda reports a
/// function that raised (moto's Lambda without Docker never does): 200,
/// `X-Amz-Function-Error: Unhandled`, the runtime's error payload.
async fn failing_lambda_endpoint() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            [
                ("x-amz-function-error", "Unhandled"),
                ("x-amz-executed-version", "2"),
                ("content-type", "application/json"),
            ],
            r#"{"errorType":"KeyError","errorMessage":"'id'","stackTrace":[]}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_errors_are_named_gateway_errors() {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::for_tests())
        .endpoint_url(failing_lambda_endpoint().await)
        .load()
        .await;
    let r = lambda_rig(lambda_route("orders-fn", &["1".into(), "2".into()]), &sdk).await;
    // HTTP front end: a 502 naming the function, qualifier and error.
    let (status, headers, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-switchyard-synthetic", "true")],
        "",
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["x-switchyard-target"], "2");
    assert_eq!(body["function"], "orders-fn");
    assert_eq!(body["qualifier"], "2");
    assert_eq!(body["error-type"], "Unhandled");
    assert!(
        body["error"].as_str().unwrap().contains("KeyError: 'id'"),
        "{body}"
    );
    // Invoke API front end: answered as Lambda does, so SDKs see FunctionError.
    let (status, headers, body) = call(
        "POST",
        &format!("{}/2015-03-31/functions/orders-fn/invocations", r.base),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    assert_eq!(headers["x-amz-executed-version"], "2");
    assert_eq!(body["errorType"], "KeyError");
}

// ---- Step Functions dispatch ----
//
// Against a loopback endpoint answering as Step Functions does, not the AWS
// API emulator: moto 5.2 has no StartSyncExecution, and its StartExecution
// fails (HTTP 500, `'StateMachineVersion' object has no attribute
// 'start_execution'`) for a version's ARN and refuses an alias's, which is
// every call this backend makes.

fn sfn_route(arn: &str, workflow: &str) -> RouteConfig {
    RouteConfig::from_json(&format!(
        r#"{{"mode":"synthetic","versions":{{"stable":"1","candidate":"2"}},
            "context":{{"2":{{"QUEUE_URL":"q-candidate"}}}},
            "dispatch":{{"type":"step-functions","state-machine-arn":"{arn}","workflow":"{workflow}"}}}}"#
    ))
    .unwrap()
}

const STATE_MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:orders";

/// The proxy serving `cfg`, its Step Functions client pointed at `url`
/// (so with the `sync-` host prefix off).
async fn sfn_rig(cfg: RouteConfig, url: &str) -> Rig {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(url)
        .load()
        .await;
    let config = ProxyConfig {
        clients: ClientsConfig {
            sfn_client: Some(switchyard_dispatch::sfn_client(&sdk)),
            ..Default::default()
        },
        ..Default::default()
    };
    rig_route(cfg, Seen::default(), config).await
}

/// Through `switchyard serve`: a synthetic request starts an execution of
/// the candidate version of a (standard) state machine, a production one of
/// stable, each with the qualified ARN and the decision in its input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_functions_dispatch_starts_the_chosen_version() {
    let started = Started::default();
    let url = step_functions(started.clone()).await;
    let r = sfn_rig(sfn_route(STATE_MACHINE, "standard"), &url).await;

    let (status, headers, body) = call(
        "POST",
        &format!("{}/orders/api/x?y=1", r.base),
        &[
            ("x-switchyard-synthetic", "true"),
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793",
            ),
        ],
        "hello",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(headers["x-switchyard-target"], "2");
    assert_eq!(
        body["executionArn"], "arn:aws:states:us-east-1:123456789012:execution:orders:2-run",
        "{body}"
    );
    let (status, headers, _) = call("GET", &format!("{}/orders/plain", r.base), &[], "").await;
    assert_eq!(status, 202);
    assert_eq!(headers["x-switchyard-target"], "1");
    assert_eq!(
        operations(&started),
        [
            ("StartExecution".to_owned(), format!("{STATE_MACHINE}:2")),
            ("StartExecution".to_owned(), format!("{STATE_MACHINE}:1")),
        ]
    );
    {
        let seen = started.lock().unwrap();
        let input = &seen[0].2;
        assert_eq!(input["rawPath"], "/api/x");
        assert_eq!(input["rawQueryString"], "y=1");
        assert_eq!(input["body"], "hello");
        assert_eq!(input["headers"]["x-switchyard-traffic"], "synthetic");
        assert_eq!(
            input["switchyard"],
            serde_json::json!({"function": "orders", "qualifier": "2", "traffic": "synthetic",
                "context": {"QUEUE_URL": "q-candidate"}})
        );
        assert_eq!(
            seen[0].3.as_deref(),
            Some("Root=1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(seen[1].2["switchyard"]["traffic"], "production");
        assert_eq!(seen[1].2["switchyard"]["context"], serde_json::json!({}));
    }

    // A version the state machine does not have: Step Functions' refusal,
    // naming the state machine and qualifier.
    let mut cfg = live_config(&*r.store).await;
    cfg.versions.insert("candidate".into(), "9".into());
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (status, _, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-switchyard-synthetic", "1")],
        "",
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "state machine {STATE_MACHINE} qualifier 9 was not started: StateMachineDoesNotExist"
        )),
        "{body}"
    );
}

/// What the loopback Step Functions endpoint saw: (operation, state
/// machine ARN, input, trace header).
type Started = Arc<Mutex<Vec<(String, String, serde_json::Value, Option<String>)>>>;

/// The operations the endpoint was called with, and the ARN of each.
fn operations(started: &Started) -> Vec<(String, String)> {
    let seen = started.lock().unwrap();
    seen.iter().map(|s| (s.0.clone(), s.1.clone())).collect()
}

/// A loopback endpoint answering `StartExecution` and `StartSyncExecution`
/// as Step Functions does (its JSON 1.0 protocol). By qualifier: 1 and 2
/// exist (a sync run of 1 outputs an API Gateway-shaped response, of 2 a
/// plain JSON value), 3 exists and its runs fail, others do not exist.
/// Returns its URL.
async fn step_functions(started: Started) -> String {
    use axum::response::IntoResponse;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let started = started.clone();
            async move {
                let op = headers["x-amz-target"]
                    .to_str()
                    .unwrap()
                    .trim_start_matches("AWSStepFunctions.")
                    .to_owned();
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let arn = req["stateMachineArn"].as_str().unwrap().to_owned();
                let input = serde_json::from_str(req["input"].as_str().unwrap()).unwrap();
                let trace = req["traceHeader"].as_str().map(str::to_owned);
                started
                    .lock()
                    .unwrap()
                    .push((op.clone(), arn.clone(), input, trace));
                let json = [("content-type", "application/x-amz-json-1.0")];
                let qualifier = arn.rsplit(':').next().unwrap().to_owned();
                if !matches!(qualifier.as_str(), "1" | "2" | "3") {
                    let err = serde_json::json!({
                        "__type": "com.amazonaws.states#StateMachineDoesNotExist",
                        "message": format!("State Machine Does Not Exist: '{arn}'"),
                    });
                    return (StatusCode::BAD_REQUEST, json, err.to_string()).into_response();
                }
                let execution = format!(
                    "{}:{qualifier}-run",
                    arn.rsplit_once(':')
                        .unwrap()
                        .0
                        .replace(":stateMachine:", ":execution:")
                );
                let mut answer = serde_json::json!({"executionArn": execution, "startDate": 1.7e9});
                if op == "StartSyncExecution" {
                    answer["stateMachineArn"] = serde_json::json!(arn);
                    answer["stopDate"] = serde_json::json!(1.7e9);
                    match qualifier.as_str() {
                        "1" => {
                            answer["status"] = serde_json::json!("SUCCEEDED");
                            answer["output"] = serde_json::json!(
                                r#"{"statusCode":201,"headers":{"x-made-by":"v1"},"body":"made"}"#
                            );
                        }
                        "2" => {
                            answer["status"] = serde_json::json!("SUCCEEDED");
                            answer["output"] = serde_json::json!(r#"{"order":42}"#);
                        }
                        _ => {
                            answer["status"] = serde_json::json!("FAILED");
                            answer["error"] = serde_json::json!("States.TaskFailed");
                            answer["cause"] = serde_json::json!("the payment service said no");
                        }
                    }
                }
                (StatusCode::OK, json, answer.to_string()).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Express workflows answer with the execution's output, through a client
/// whose `sync-` host prefix is off for the endpoint URL it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_workflows_answer_with_their_output() {
    let started = Started::default();
    let url = step_functions(started.clone()).await;
    let arn = STATE_MACHINE;
    let r = sfn_rig(sfn_route(arn, "express"), &url).await;

    // Stable (1): an API Gateway-shaped output is mapped to the response.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(
            http::Request::get(format!("{}/orders/x", r.base))
                .header(
                    "x-amzn-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793",
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-made-by"], "v1");
    assert_eq!(resp.headers()["x-switchyard-target"], "1");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"made");

    // Candidate (2): any other output is a 200 JSON body.
    let (status, headers, body) = call(
        "POST",
        &format!("{}/orders/api/x?y=1", r.base),
        &[("x-switchyard-synthetic", "true")],
        "hello",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"order": 42}));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        operations(&started),
        [
            ("StartSyncExecution".to_owned(), format!("{arn}:1")),
            ("StartSyncExecution".to_owned(), format!("{arn}:2")),
        ]
    );
    {
        let seen = started.lock().unwrap();
        assert_eq!(
            seen[0].3.as_deref(),
            Some("Root=1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(seen[1].2["switchyard"]["traffic"], "synthetic");
        assert_eq!(seen[1].2["body"], "hello");
    }

    // The Invoke API front end reaches it through the same dispatcher: a
    // boto3 Invoke of `orders` gets stable's output as the payload.
    let out = moto_lambda(&["invoke", &r.base, "orders", r#"{"order":7}"#]);
    assert_eq!(out["status"], 200, "{out}");
    let payload: serde_json::Value =
        serde_json::from_str(out["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["statusCode"], 201, "{out}");
    {
        let seen = started.lock().unwrap();
        let last = seen.last().unwrap();
        assert_eq!(last.1, format!("{arn}:1"));
        assert_eq!(last.2["order"], 7, "the payload is the input");
        assert_eq!(last.2["switchyard"]["traffic"], "production");
    }

    // A mirror copy starts an execution of the mirror qualifier (without
    // waiting for it), tagged synthetic.
    let mut cfg = live_config(&*r.store).await;
    cfg.flags.insert("mirror-role".into(), "candidate".into());
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (status, _, _) = call("GET", &format!("{}/orders/m", r.base), &[], "").await;
    assert_eq!(status, 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let copy = started
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.0 == "StartExecution")
            .cloned();
        if let Some((_, qualified, input, _)) = copy {
            assert_eq!(qualified, format!("{arn}:2"));
            assert_eq!(input["switchyard"]["traffic"], "synthetic");
            assert_eq!(input["switchyard"]["context"]["QUEUE_URL"], "q-candidate");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mirror execution started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A failed execution is a 502 naming the state machine, qualifier,
    // error and cause.
    let mut cfg = live_config(&*r.store).await;
    cfg.flags.remove("mirror-role");
    cfg.versions.insert("stable".into(), "3".into());
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (status, _, body) = call("GET", &format!("{}/orders/x", r.base), &[], "").await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("state machine {arn} qualifier 3 failed"))
            && message.contains("States.TaskFailed: the payment service said no"),
        "{body}"
    );
}

// ---- Authenticated HTTP dispatch ----

/// The SigV4 verifier (`host/test-support/support/sigv4_verifier.py`: a
/// loopback endpoint checking signatures with botocore's signer, as a
/// function URL with `AuthType: AWS_IAM` does) on a free port.
fn sigv4_verifier() -> (common::Killed, String) {
    let port = common::free_port();
    let child = std::process::Command::new("python3")
        .arg(common::repo_root().join("host/test-support/support/sigv4_verifier.py"))
        .arg(port.to_string())
        .spawn()
        .expect("python3 for the SigV4 verifier");
    let killed = common::Killed(child);
    common::wait_for_port(port, "the SigV4 verifier", Duration::from_secs(30));
    (killed, format!("http://127.0.0.1:{port}"))
}

fn auth_route(url: &str, auth: &str) -> RouteConfig {
    RouteConfig::from_json(&format!(
        r#"{{"mode":"synthetic","versions":{{"stable":"7","candidate":"8"}},
            "dispatch":{{"type":"http","urls":{{"7":"{url}/v7","8":"{url}/v8"}},"auth":{auth}}}}}"#
    ))
    .unwrap()
}

/// `aws-iam` auth: every request is signed (SigV4, service `lambda`) with
/// the host's credentials, which the emulator's test credentials are here;
/// an endpoint that refuses the signature is a 502 naming the auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_iam_auth_signs_each_request() {
    common::aws::endpoint(); // the test credentials and region in the environment
    let (_verifier, url) = sigv4_verifier();
    let r = rig_route(
        auth_route(&url, r#"{"kind":"aws-iam"}"#),
        Seen::default(),
        ProxyConfig::default(),
    )
    .await;
    let (status, headers, body) = call(
        "POST",
        &format!("{}/orders/api/x?b=2&a=1", r.base),
        &[
            ("x-switchyard-synthetic", "true"),
            ("authorization", "Bearer from-the-client"),
        ],
        r#"{"order":1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-switchyard-target"], "8");
    assert_eq!(body["verified"], true, "{body}");
    assert_eq!(body["service"], "lambda");
    assert_eq!(body["path"], "/v8/api/x?b=2&a=1");
    assert_eq!(body["traffic"], "synthetic");
    let signed: Vec<&str> = body["signed-headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        signed.contains(&"host")
            && signed.contains(&"x-amz-date")
            && signed.contains(&"x-switchyard-traffic"),
        "{signed:?}"
    );

    // A signing region set in the block wins over the environment's.
    let mut cfg = live_config(&*r.store).await;
    let json = serde_json::to_value(&cfg.dispatch).unwrap();
    let mut dispatch = json.as_object().unwrap().clone();
    dispatch["auth"] = serde_json::json!({"kind": "aws-iam", "region": "eu-west-1"});
    cfg.dispatch = serde_json::from_value(serde_json::Value::Object(dispatch)).unwrap();
    r.store.put_route("orders", &cfg).await.unwrap();
    r.watcher.poll().await.unwrap();
    let (status, _, body) = call("GET", &format!("{}/orders/x", r.base), &[], "").await;
    assert_eq!(status, 200, "another region still verifies: {body}");
    assert_eq!(body["region"], "eu-west-1");
}

/// A host whose credentials the endpoint does not accept: a 502 naming
/// the function and that `aws-iam` auth was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_iam_auth_refused_is_a_named_gateway_error() {
    let (_verifier, url) = sigv4_verifier();
    // Credentials of their own (not the test ones), through the same
    // environment variables any AWS SDK reads, in a child `serve`.
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().display());
    let route = tmp.path().join("route.json");
    std::fs::write(
        &route,
        serde_json::to_string(&auth_route(
            &url,
            r#"{"kind":"aws-iam","region":"us-east-1"}"#,
        ))
        .unwrap(),
    )
    .unwrap();
    let cli = common::workspace_bin("switchyard");
    let published = std::process::Command::new(&cli)
        .args([
            "publish",
            "--store",
            &store,
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            // An auth block needs hosts of 0.2.0 (these are).
            "--min-host-version",
            "0.2.0",
            "--config",
        ])
        .arg(&route)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    for (key, says) in [
        (
            "not-a-known-key",
            "aws-iam auth was refused (403 Forbidden, UnrecognizedClientException)",
        ),
        ("", "aws-iam auth failed: no AWS credentials"),
    ] {
        let port = common::free_port();
        let mut serve = std::process::Command::new(&cli);
        serve
            .args([
                "serve",
                "--store",
                &store,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                "off",
            ])
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", tmp.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", tmp.path().join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_REGION", "us-east-1");
        if key.is_empty() {
            serve
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY");
        } else {
            serve
                .env("AWS_ACCESS_KEY_ID", key)
                .env("AWS_SECRET_ACCESS_KEY", "whatever");
        }
        let _serve = common::Killed(
            serve
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        common::wait_for_port(port, "switchyard serve", Duration::from_secs(30));
        let (status, _, body) =
            call("GET", &format!("http://127.0.0.1:{port}/orders/x"), &[], "").await;
        assert_eq!(status, 502, "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("orders qualifier 7: ") && message.contains(says),
            "{key:?}: {body}"
        );
    }
}

/// `header` auth adds the configured header (a function key, a bearer
/// token) to every request, over what the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_auth_adds_the_configured_header() {
    let seen: Seen = Arc::default();
    let up = upstream("7", Duration::ZERO, seen.clone()).await;
    let cfg = RouteConfig::from_json(&format!(
        r#"{{"mode":"production","versions":{{"stable":"7"}},
            "dispatch":{{"type":"http","urls":{{"7":"{up}"}},
                "auth":{{"kind":"header","name":"x-functions-key","value":"k-123"}}}}}}"#
    ))
    .unwrap();
    let r = rig_route(cfg, seen, ProxyConfig::default()).await;
    let (status, _, body) = call(
        "GET",
        &format!("{}/orders/x", r.base),
        &[("x-functions-key", "forged")],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["functions-key"], "k-123", "{body}");
}

// ---- Capture for replay ----

/// `serve --capture`: the sampled requests as the policy saw them (the
/// allowlisted headers only, no body), as lines `switchyard replay` reads;
/// the decide API's requests are not captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_requests_replay_as_they_were_decided() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.jsonl");
    let capture = switchyard_proxy::Capture::start(switchyard_proxy::CaptureConfig {
        path: file.clone(),
        sample: 2,
        headers: vec!["X-Switchyard-Synthetic".into(), "x-user-id".into()],
        max_bytes: 1 << 20,
    })
    .unwrap();
    let r = rig(
        "",
        Duration::ZERO,
        ProxyConfig {
            capture: Some(capture.clone()),
            ..Default::default()
        },
    )
    .await;
    for i in 0..6 {
        let tagged = if i % 4 == 0 { "true" } else { "no" };
        let (status, _, _) = call(
            "POST",
            &format!("{}/orders/o/{i}?q=1", r.base),
            &[
                ("x-switchyard-synthetic", tagged),
                ("x-user-id", &format!("u{i}")),
                ("authorization", "Bearer secret"),
                ("cookie", "session=secret"),
            ],
            "a body",
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = call(
        "POST",
        &format!("{}/v1/decide", r.admin),
        &[],
        r#"{"function":"orders","path":"/from-the-decide-api"}"#,
    )
    .await;
    assert_eq!(status, 200);
    capture.flush();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("secret") && !text.contains("a body"),
        "{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [0, 2, 4]
            .iter()
            .map(|i| {
                let tagged = if i % 4 == 0 { "true" } else { "no" };
                serde_json::json!({"function": "orders", "method": "POST", "path": format!("/o/{i}"),
                    "headers": {"x-switchyard-synthetic": tagged, "x-user-id": format!("u{i}")}})
            })
            .collect::<Vec<_>>(),
        "one in two, as the policy saw them (the path below the function)"
    );

    // Replayed against the live policy and itself: the same decisions.
    let out = std::process::Command::new(common::workspace_bin("switchyard"))
        .args([
            "replay",
            "--store",
            &format!("dir:{}", r._tmp.path().display()),
            "--requests",
        ])
        .arg(&file)
        .args(["--to", art::SYNTHETIC_HEADER, "--max-changed", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&summary["requests"], &summary["changed"]),
        (&serde_json::json!(3), &serde_json::json!(0))
    );
}

/// Past its size limit the capture file is rotated: FILE becomes FILE.1.
#[test]
fn the_capture_file_is_rotated_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.jsonl");
    let capture = switchyard_proxy::Capture::start(switchyard_proxy::CaptureConfig {
        path: file.clone(),
        sample: 1,
        headers: vec![],
        max_bytes: 150,
    })
    .unwrap();
    let req = |i: usize| {
        switchyard_core::Request::new(
            "orders",
            "GET",
            format!("/{i:0>60}"),
            Vec::<(String, String)>::new(),
        )
    };
    // Each line is ~100 bytes: the second passes 150 and rotates.
    for i in 0..3 {
        capture.record(&req(i));
    }
    capture.flush();
    let old = std::fs::read_to_string(dir.path().join("c.jsonl.1")).unwrap();
    let new = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        (old.lines().count(), new.lines().count()),
        (2, 1),
        "{old}\n{new}"
    );
    assert!(new.contains(&format!("/{:0>60}", 2)));
}

/// A capture file deleted (or moved aside) while a host writes it is made
/// again, and stays within its size limit.
#[test]
fn a_deleted_capture_file_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.jsonl");
    let capture = switchyard_proxy::Capture::start(switchyard_proxy::CaptureConfig {
        path: file.clone(),
        sample: 1,
        headers: vec![],
        max_bytes: 1 << 20,
    })
    .unwrap();
    let req = |i: usize| {
        switchyard_core::Request::new(
            "orders",
            "GET",
            format!("/{i}"),
            Vec::<(String, String)>::new(),
        )
    };
    capture.record(&req(1));
    capture.flush();
    std::fs::remove_file(&file).unwrap();
    for i in 2..4 {
        capture.record(&req(i));
    }
    capture.flush();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.ends_with('\n'), "{text}");
    std::fs::rename(&file, dir.path().join("aside.jsonl")).unwrap();
    capture.record(&req(4));
    capture.flush();
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
}

/// A host that starts while a function's newest version is unusable serves
/// the newest usable one, and its health checks say which functions are
/// held back or could not be loaded at all, and why, without a function
/// list being named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_checks_name_what_could_not_load() {
    let seen: Seen = Arc::default();
    let url = upstream("7", Duration::ZERO, seen.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(DirStore::new(tmp.path()).unwrap());
    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    let digest = store.put_blob(&bytes, &|_, _| {}).await.unwrap();
    let route = |dispatch: &str| {
        let mut cfg = RouteConfig::from_json(&format!(
            r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},"dispatch":{dispatch}}}"#
        ))
        .unwrap();
        cfg.policy = Some(digest);
        cfg
    };
    let good = route(&format!(
        r#"{{"type":"http","urls":{{"7":"{url}","8":"{url}"}}}}"#
    ));
    store.put_route("orders", &good).await.unwrap();
    // v2: a dispatch block this host refuses.
    store
        .put_route(
            "orders",
            &route(r#"{"type":"http","urls":{"7":"not a url"}}"#),
        )
        .await
        .unwrap();
    // payments: its only version does not parse.
    let payments = tmp.path().join("functions/payments");
    std::fs::create_dir_all(&payments).unwrap();
    std::fs::write(payments.join("1.json"), r#"{"mode":"synth"#).unwrap();

    let watcher = Arc::new(Watcher::new(
        store.clone(),
        common::engine().clone(),
        WatchConfig::default(),
    ));
    let proxy = Proxy::new(watcher.policies(), ProxyConfig::default());
    watcher.set_prepare(proxy.prepare_hook());
    watcher.poll().await.unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    tokio::spawn(switchyard_proxy::serve_admin(
        admin_listener,
        proxy.clone(),
        std::future::pending(),
    ));
    tokio::spawn(switchyard_proxy::serve(
        public,
        proxy,
        std::future::pending(),
    ));

    // orders answers from v1, as a host running since v1 would.
    let (status, _, body) = call("GET", &format!("{base}/orders/x"), &[], "").await;
    assert_eq!(
        (status, body["version"].as_str()),
        (StatusCode::OK, Some("7"))
    );
    let (status, _, body) = call("GET", &format!("{admin}/healthz"), &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["functions"], serde_json::json!(["orders"]));
    assert_eq!(body["held_back"]["orders"]["newest"], 2, "{body}");
    assert_eq!(body["held_back"]["orders"]["serving"], 1, "{body}");
    assert!(
        body["held_back"]["orders"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a url"),
        "{body}"
    );
    assert!(
        body["unloadable"]["payments"]["reason"]
            .as_str()
            .unwrap()
            .contains("payments"),
        "{body}"
    );
    let (status, _, body) = call("GET", &format!("{base}/healthz"), &[], "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false})
        )
    );

    // A usable payments version: ready, and only orders still held back.
    store.put_route("payments", &good).await.unwrap();
    watcher.poll().await.unwrap();
    let (status, _, body) = call("GET", &format!("{admin}/healthz"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["functions"], serde_json::json!(["orders", "payments"]));
    assert!(body.get("unloadable").is_none(), "{body}");
    assert_eq!(body["held_back"]["orders"]["newest"], 2, "{body}");
}

/// boto3's Invoke through the Invoke API to an `http` target gets Lambda's
/// meaning of each invocation type: `DryRun` answers 204 and sends nothing,
/// `Event` answers 202 with no body and is sent in the background (429
/// when every background slot is busy), `LogType: Tail` gets the mesh's
/// decision line as its log, an unknown type is Lambda's 400, and every
/// answer names the version in `ExecutedVersion`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_gives_http_targets_lambdas_invocation_types() {
    let seen: Seen = Arc::default();
    let fast = upstream("7", Duration::ZERO, seen.clone()).await;
    let slow = upstream("8", Duration::from_secs(3), seen.clone()).await;
    let urls = HashMap::from([("7", fast), ("8", slow)]);
    let config = ProxyConfig {
        clients: ClientsConfig {
            mirror_slots: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = rig_route(route("synthetic", &urls, ""), seen.clone(), config).await;
    let invoke = |args: &[&str]| {
        let mut all = vec!["invoke", &r.base, "orders", r#"{"order":1}"#];
        all.extend_from_slice(args);
        moto_lambda(&all)
    };

    let out = invoke(&["", "DryRun"]);
    assert_eq!(out["status"], 204, "{out}");
    assert_eq!(out["payload"], "", "{out}");
    assert_eq!(out["executed_version"], "7", "{out}");
    assert!(seen.lock().unwrap().is_empty(), "a dry run sends nothing");

    let out = invoke(&["", "RequestResponse", "Tail"]);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["executed_version"], "7", "{out}");
    let log = out["log_result"].as_str().unwrap();
    assert!(
        log.starts_with("switchyard: function=orders target=7 traffic=production status=200"),
        "{log}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // An event to the slow version: 202 at once, sent in the background;
    // a second one while it runs finds the one slot busy.
    let started = std::time::Instant::now();
    let out = invoke(&[r#"{"x-switchyard-synthetic":"true"}"#, "Event"]);
    assert_eq!(out["status"], 202, "{out}");
    assert_eq!(out["payload"], "", "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let out = invoke(&[r#"{"x-switchyard-synthetic":"true"}"#, "Event"]);
    assert_eq!(out["error"], "TooManyRequestsException", "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the event was never sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = seen.lock().unwrap()[1].clone();
    assert_eq!((sent.0.as_str(), sent.1.as_str()), ("8", "synthetic"));
    assert_eq!(sent.3, r#"{"order":1}"#);

    let out = invoke(&["", "Sometimes"]);
    assert_eq!(out["error"], "InvalidParameterValueException", "{out}");
}

/// An upstream that answers every request `200` with a `Content-Length`
/// of 1000 and closes after the first few bytes.
async fn breaking_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\":")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_breaks_off_mid_body_is_a_failure_of_its_version() {
    let seen: Seen = Arc::default();
    let urls = HashMap::from([
        ("7", upstream("7", Duration::ZERO, seen.clone()).await),
        ("8", breaking_upstream().await),
    ]);
    let cfg = route(
        "synthetic",
        &urls,
        r#","guard":{"max-error-rate":0.5,"min-requests":4}"#,
    );
    let r = rig_named("cut", cfg, seen, ProxyConfig::default()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let synthetic = || {
        let req = http::Request::get(format!("{}/cut/a", r.base))
            .header("x-switchyard-synthetic", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = client.clone();
        async move {
            // The proxy sends the head, then aborts the connection when the
            // version's body breaks off; when the abort overtakes the head
            // on the wire, the client sees no answer at all (hyper's
            // IncompleteMessage): a broken answer either way.
            match client.request(req).await {
                Ok(resp) => {
                    let target = resp.headers()["x-switchyard-target"].clone();
                    Some((resp.status(), target, resp.into_body().collect().await))
                }
                Err(e) => {
                    assert!(
                        e.is_connect() || format!("{e:?}").contains("IncompleteMessage"),
                        "{e:?}"
                    );
                    None
                }
            }
        }
    };
    for _ in 0..4 {
        if let Some((status, target, body)) = synthetic().await {
            assert_eq!((status.as_u16(), target.to_str().unwrap()), (200, "8"));
            assert!(body.is_err(), "the candidate's body breaks off");
        }
    }
    // Four failures of four: the guard has tripped, and synthetic traffic
    // goes to stable, whole.
    let (status, target, body) = synthetic().await.expect("stable answers whole");
    assert_eq!((status.as_u16(), target.to_str().unwrap()), (200, "7"));
    assert!(body.is_ok());
    let text = metrics()();
    let series = |status: &str| {
        sample(
            &text,
            &format!(
                r#"switchyard_requests_total{{function="cut",target="8",traffic="synthetic",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(series("502"), Some(4.0), "{text}");
    assert_eq!(series("200").unwrap_or(0.0), 0.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"switchyard_guard_trips_total{function="cut",traffic="synthetic"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

/// An upstream that answers `version` only when `gate` gives a permit;
/// `arrived` counts the requests it holds.
async fn held_upstream(
    version: &'static str,
) -> (
    String,
    tokio::sync::watch::Receiver<usize>,
    Arc<tokio::sync::Semaphore>,
) {
    let (arrived_tx, arrived) = tokio::sync::watch::channel(0usize);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let app = axum::Router::new().fallback(move || {
        let (arrived_tx, held) = (arrived_tx.clone(), held.clone());
        async move {
            arrived_tx.send_modify(|n| *n += 1);
            held.acquire().await.unwrap().forget();
            axum::Json(serde_json::json!({ "version": version }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), arrived, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sockets_stay_within_their_budget_and_idle_ones_make_room() {
    let (stable, mut stable_arrived, stable_gate) = held_upstream("7").await;
    let (candidate, mut candidate_arrived, candidate_gate) = held_upstream("8").await;
    let urls = HashMap::from([("7", stable), ("8", candidate)]);
    let r = rig_named(
        "budgeted",
        route("synthetic", &urls, ""),
        Arc::default(),
        ProxyConfig {
            clients: ClientsConfig {
                max_upstream_sockets: Some(4),
                connect_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let url = format!("{}/budgeted/a", r.base);
    let spawn = |synthetic: bool| {
        let url = url.clone();
        tokio::spawn(async move {
            let headers: &[(&str, &str)] = if synthetic {
                &[("x-switchyard-synthetic", "1")]
            } else {
                &[]
            };
            let (status, _, body) = call("GET", &url, headers, "").await;
            (status, body)
        })
    };
    // Four requests held at stable: all four sockets busy.
    let held: Vec<_> = (0..4).map(|_| spawn(false)).collect();
    stable_arrived.wait_for(|n| *n == 4).await.unwrap();
    // A fifth finds none free and none idle: a 502 that names the budget,
    // after the connect timeout; no busy socket is closed for it.
    let (status, body) = spawn(false).await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("all 4 upstream sockets are in use"),
        "{body}"
    );
    stable_gate.add_permits(4);
    for h in held {
        let (status, body) = h.await.unwrap();
        assert_eq!(
            (status.as_u16(), &body["version"]),
            (200, &serde_json::json!("7"))
        );
    }
    // Stable's four sockets are idle in the pool now. Four requests held
    // at the candidate at once need four sockets: the idle ones are
    // closed to make room.
    let held: Vec<_> = (0..4).map(|_| spawn(true)).collect();
    candidate_arrived.wait_for(|n| *n == 4).await.unwrap();
    candidate_gate.add_permits(4);
    for h in held {
        let (status, body) = h.await.unwrap();
        assert_eq!(
            (status.as_u16(), &body["version"]),
            (200, &serde_json::json!("8"))
        );
    }
    let text = metrics()();
    assert_eq!(
        sample(&text, "switchyard_upstream_sockets_reclaimed_total"),
        Some(4.0),
        "{text}"
    );
}
