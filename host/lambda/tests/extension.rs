//! The mesh extension (`switchyard-extension`) next to two functions in two
//! languages, run as Lambda runs them: each function and its extension
//! under their own `cargo lambda watch --only-lambda-apis` (Runtime,
//! Extensions and Invoke APIs), each runtime started through the layer's
//! `switchyard-wrapper`, so it reaches the Runtime API through the
//! extension's proxy.
//!
//! The chain: the test invokes `checkout` (Python, boto3) with an HTTP
//! event; `checkout` calls `orders` (Node.js, AWS SDK v3) through its
//! extension, whose route reaches the chosen version through the function
//! URL of the `orders` watch (`/lambda-url/orders/v1` or `/v2`, so the
//! version is in the path the function sees); `orders` calls `payments`
//! through its own extension, and `payments` runs in moto's Lambda, whose
//! recorder shows the qualifier and the client context of every Invoke.
//!
//! `cargo lambda watch` ignores an Invoke's `Qualifier` and drops its
//! client context, which is why the hop into `orders` goes through a
//! function URL (its headers reach the event) and the last hop to moto.

use switchyard_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Killed, aws, cargo_lambda_watch, cargo_lambda_watch_on, eventually, free_port,
    invoke_http_event, moto_lambda, publish_synthetic_header, repo_root, switchyard_cli,
};
use serde_json::{Value, json};

fn functions_dir() -> PathBuf {
    repo_root().join("host/lambda/tests/support/functions")
}

/// A Cargo project whose binaries are named like the functions, for
/// `cargo lambda watch` to serve them.
fn watch_project(dir: &Path, functions: &[&str]) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    let mut manifest =
        "[package]\nname = \"fns\"\nversion = \"0.0.0\"\nedition = \"2021\"\n".to_owned();
    for f in functions {
        manifest.push_str(&format!(
            "[[bin]]\nname = \"{f}\"\npath = \"src/main.rs\"\n"
        ));
    }
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
}

/// One function with the extension beside it, attached to a watch.
struct Function {
    _extension: Killed,
    _runtime: Killed,
    /// The extension's and the runtime's stderr.
    logs: [PathBuf; 2],
}

struct Spec<'a> {
    name: &'a str,
    watch_port: u16,
    store: &'a str,
    calls: &'a str,
    /// The runtime: program and arguments, run in `dir`.
    runtime: &'a [&'a str],
    dir: PathBuf,
    tmp: &'a Path,
    /// More environment for the extension.
    extension_env: Vec<(&'a str, String)>,
    /// Whether the runtime starts through `switchyard-wrapper` (as with
    /// `AWS_LAMBDA_EXEC_WRAPPER`) or talks to the Runtime API directly.
    wrapped: bool,
}

fn start(spec: Spec) -> Function {
    let mesh = free_port();
    let runtime_proxy = free_port();
    let watch = format!("http://127.0.0.1:{}/.rt", spec.watch_port);
    let log = spec.tmp.join(format!("{}-extension.log", spec.name));
    let extension = Command::new(env!("CARGO_BIN_EXE_switchyard-extension"))
        .env("AWS_LAMBDA_RUNTIME_API", &watch)
        // Lambda serves the Runtime API and the Extensions API at one
        // address; watch serves each function's under its name.
        .env(
            "SWITCHYARD_RUNTIME_UPSTREAM",
            format!("{watch}/{}", spec.name),
        )
        .env("SWITCHYARD_STORE", spec.store)
        .env("SWITCHYARD_FUNCTIONS", spec.calls)
        .env("SWITCHYARD_PORT", mesh.to_string())
        .env("SWITCHYARD_RUNTIME_PROXY_PORT", runtime_proxy.to_string())
        .env(
            "SWITCHYARD_CACHE_DIR",
            spec.tmp.join(format!("{}-cache", spec.name)),
        )
        .env("SWITCHYARD_POLL_INTERVAL", "300ms")
        .envs(spec.extension_env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let extension = Killed(extension);
    eventually(
        Duration::from_secs(60),
        &format!("the {} extension gets ready", spec.name),
        || {
            let text = std::fs::read_to_string(&log).unwrap();
            text.contains(r#""event":"ready""#)
                .then_some(())
                .ok_or(text)
        },
    );
    let runtime_log = spec.tmp.join(format!("{}-runtime.log", spec.name));
    let mut runtime = if spec.wrapped {
        let mut cmd = Command::new("sh");
        cmd.arg(repo_root().join("host/lambda/switchyard-wrapper"))
            .args(spec.runtime)
            .env("SWITCHYARD_RUNTIME_PROXY_PORT", runtime_proxy.to_string());
        cmd
    } else {
        let mut cmd = Command::new(spec.runtime[0]);
        cmd.args(&spec.runtime[1..])
            .env("AWS_LAMBDA_RUNTIME_API", format!("{watch}/{}", spec.name));
        cmd
    };
    let runtime = runtime
        .current_dir(&spec.dir)
        .env("AWS_LAMBDA_FUNCTION_NAME", spec.name)
        // Lambda sets both; boto3 reads only the second.
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("SWITCHYARD_URL", format!("http://127.0.0.1:{mesh}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&runtime_log).unwrap())
        .spawn()
        .unwrap();
    Function {
        _extension: extension,
        _runtime: Killed(runtime),
        logs: [log, runtime_log],
    }
}

/// Invokes `checkout` through its watch's Invoke API with an HTTP API
/// event carrying `headers`; returns the body `checkout` answered.
fn checkout(port: u16, headers: Value, logs: &[&Function]) -> Value {
    let out = invoke_http_event(port, "checkout", "POST", "/checkout", headers);
    let answer: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    let body = answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok());
    body.unwrap_or_else(|| {
        let logs: Vec<String> = logs
            .iter()
            .flat_map(|f| &f.logs)
            .map(|log| std::fs::read_to_string(log).unwrap_or_default())
            .collect();
        panic!(
            "checkout answered {:?}; function logs: {logs:#?}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// The qualifier and traffic tag of the last Invoke of `name` in moto.
fn last_payment(name: &str) -> (String, String) {
    let calls = moto_lambda(&["calls", aws::endpoint(), name]);
    let last = calls.as_array().unwrap().last().expect("payments invoked");
    (
        last["qualifier"].as_str().unwrap_or("").to_owned(),
        last["client_context"]["custom"]["x-switchyard-traffic"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

#[test]
fn python_and_node_functions_are_routed_and_stay_synthetic_across_two_hops() {
    let endpoint = aws::endpoint().to_owned();
    let tag = common::unique_tag();
    let payments = format!("sy-payments-{tag}");
    let versions: Vec<String> = serde_json::from_value(
        moto_lambda(&["setup", &endpoint, "us-east-1", &payments])["versions"].clone(),
    )
    .unwrap();
    let (stable, candidate) = (versions[0].clone(), versions[1].clone());

    let tmp = tempfile::tempdir().unwrap();
    let (checkout_dir, orders_dir) = (tmp.path().join("w1"), tmp.path().join("w2"));
    watch_project(&checkout_dir, &["checkout"]);
    watch_project(&orders_dir, &["orders"]);
    let (_w1, w1) = cargo_lambda_watch(&checkout_dir);
    let (w2_watch, w2) = cargo_lambda_watch(&orders_dir);

    let store = format!("ssm:/mesh{}", std::process::id());
    let publish = |function: &str, route: Value| {
        publish_synthetic_header(&store, function, &route, tmp.path());
    };
    let orders_url = |v: &str| format!("http://127.0.0.1:{w2}/lambda-url/orders/{v}");
    publish(
        "orders",
        json!({
            "mode": "synthetic",
            "versions": {"stable": "1", "candidate": "2"},
            "dispatch": {"type": "http", "urls": {"1": orders_url("v1"), "2": orders_url("v2")}},
        }),
    );
    publish(
        "payments",
        json!({
            "mode": "synthetic",
            "versions": {"stable": stable, "candidate": candidate},
            "dispatch": {"type": "lambda", "function-name": payments},
        }),
    );

    let python = start(Spec {
        name: "checkout",
        watch_port: w1,
        store: &store,
        calls: "orders",
        runtime: &["python3", "../runtime.py", "checkout.handler"],
        dir: functions_dir().join("python"),
        tmp: tmp.path(),
        extension_env: Vec::new(),
        wrapped: true,
    });
    let orders = |extension_env| Spec {
        name: "orders",
        watch_port: w2,
        store: &store,
        calls: "payments",
        runtime: &["node", "../runtime.mjs", "orders.mjs"],
        dir: functions_dir().join("node"),
        tmp: tmp.path(),
        extension_env,
        wrapped: true,
    };
    let node = start(orders(Vec::new()));
    let logs = [&python, &node];

    // A synthetic request: the candidate at both hops, tagged synthetic at
    // both (Node saw it in its event; moto in the client context).
    let r = checkout(w1, json!({"x-switchyard-traffic": "synthetic"}), &logs);
    assert_eq!(r["orders"]["path"], "/v2/", "orders candidate: {r}");
    assert_eq!(r["orders"]["traffic"], "synthetic", "{r}");
    assert_eq!(r["orders"]["payments"], json!({"amount": 5}), "{r}");
    assert_eq!(
        last_payment(&payments),
        (candidate.clone(), "synthetic".to_owned())
    );

    // A production request: stable everywhere, production everywhere.
    let r = checkout(w1, json!({"accept": "*/*"}), &logs);
    assert_eq!(r["orders"]["path"], "/v1/", "orders stable: {r}");
    assert_eq!(r["orders"]["traffic"], "production", "{r}");
    assert_eq!(
        last_payment(&payments),
        (stable.clone(), "production".to_owned())
    );

    // payments flipped to production mode: a synthetic chain now reaches
    // its stable version, and is still tagged synthetic there.
    switchyard_cli(&store, &["mode", "payments", "production"]);
    eventually(
        Duration::from_secs(20),
        "the mode flip reaches the orders extension",
        || {
            let r = checkout(w1, json!({"x-switchyard-traffic": "synthetic"}), &logs);
            assert_eq!(r["orders"]["path"], "/v2/", "{r}");
            let (qualifier, traffic) = last_payment(&payments);
            assert_eq!(
                traffic, "synthetic",
                "the tag survives a production-mode hop"
            );
            (qualifier == stable).then_some(()).ok_or(qualifier)
        },
    );

    // A new execution environment for orders, as after a crash, with its
    // /tmp kept (a new watch: watch fails every invocation once a
    // registered extension is gone), while SSM accepts and never answers:
    // the extension is ready from its cache at once, the stuck poll
    // blocks no invocation, and the chain still routes and tags.
    drop(node);
    drop(w2_watch);
    let _w2_watch = cargo_lambda_watch_on(&orders_dir, w2);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node = start(orders(vec![(
        "AWS_ENDPOINT_URL_SSM",
        format!("http://{}", silent.local_addr().unwrap()),
    )]));
    let r = checkout(
        w1,
        json!({"x-switchyard-traffic": "synthetic"}),
        &[&python, &node],
    );
    assert_eq!(r["orders"]["traffic"], "synthetic", "{r}");
    assert_eq!(last_payment(&payments), (stable, "synthetic".to_owned()));
    let log = std::fs::read_to_string(&node.logs[0]).unwrap();
    assert!(log.contains("restored-from-cache"), "{log}");
    let log = std::fs::read_to_string(&python.logs[0]).unwrap();
    assert!(
        !log.contains("no-runtime-proxy"),
        "the wrapped runtime uses the proxy: {log}"
    );
}

#[test]
fn a_runtime_not_started_through_the_wrapper_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    watch_project(&dir, &["noop"]);
    let (_watch, port) = cargo_lambda_watch(&dir);
    let store = format!("dir:{}", tmp.path().join("store").display());
    publish_synthetic_header(
        &store,
        "orders",
        &json!({"mode": "synthetic", "versions": {"stable": "1"},
                "dispatch": {"type": "http", "urls": {"1": "http://127.0.0.1:9"}}}),
        tmp.path(),
    );
    let noop = start(Spec {
        name: "noop",
        watch_port: port,
        store: &store,
        calls: "orders",
        runtime: &["python3", "../runtime.py", "noop.handler"],
        dir: functions_dir().join("python"),
        tmp: tmp.path(),
        extension_env: Vec::new(),
        wrapped: false,
    });
    for _ in 0..2 {
        let out = invoke_http_event(port, "noop", "GET", "/", json!({}));
        assert!(
            String::from_utf8_lossy(&out).contains("true"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    // The extension hears of each INVOKE on its own schedule.
    let log = eventually(
        Duration::from_secs(10),
        "the extension warns that the runtime skips its proxy",
        || {
            let log = std::fs::read_to_string(&noop.logs[0]).unwrap();
            log.contains(r#""event":"no-runtime-proxy""#)
                .then(|| log.clone())
                .ok_or(log)
        },
    );
    assert!(log.contains("AWS_LAMBDA_EXEC_WRAPPER"), "{log}");
}

/// A Runtime API on loopback that hands out `events` (client context,
/// body) in turn and records what the runtime posts back.
struct FakeRuntimeApi {
    events: std::sync::Mutex<std::collections::VecDeque<(Option<String>, String)>>,
    posted: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
    /// Header names of every request that reached it.
    header_names: std::sync::Mutex<Vec<String>>,
}

async fn fake_runtime_api(
    axum::extract::State(api): axum::extract::State<std::sync::Arc<FakeRuntimeApi>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path().to_owned();
    api.header_names
        .lock()
        .unwrap()
        .extend(req.headers().keys().map(|k| k.to_string()));
    if req.method() == http::Method::GET && path.ends_with("/invocation/next") {
        let Some((ctx, body)) = api.events.lock().unwrap().pop_front() else {
            return http::StatusCode::GONE.into_response();
        };
        let mut response = ([("lambda-runtime-aws-request-id", "req-1")], body).into_response();
        if let Some(ctx) = ctx {
            response.headers_mut().insert(
                "lambda-runtime-client-context",
                http::HeaderValue::from_str(&ctx).unwrap(),
            );
        }
        return response;
    }
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    api.posted
        .lock()
        .unwrap()
        .push((path.clone(), body.to_vec()));
    if path.ends_with("/error") {
        return (http::StatusCode::BAD_REQUEST, "bad error body").into_response();
    }
    (http::StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

/// `curl` through the proxy: (status, response headers and body).
fn curl(url: &str, post: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "10"]);
    // Headers for this connection only: the proxy must not pass them on.
    cmd.args(["-H", "Connection: keep-alive, x-hop", "-H", "x-hop: 1"]);
    cmd.args(["-H", "Keep-Alive: timeout=5"]);
    if let Some(body) = post {
        cmd.args(["-X", "POST", "--data-binary", body]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn the_runtime_proxy_passes_calls_through_and_reads_each_events_class() {
    use switchyard_core::Traffic;
    use switchyard_lambda::InvocationTraffic;

    // The Runtime API hands the client context over as JSON.
    let synthetic_ctx = json!({"custom": {"x-switchyard-traffic": "synthetic"}}).to_string();
    let api = std::sync::Arc::new(FakeRuntimeApi {
        events: std::sync::Mutex::new(
            [
                (Some(synthetic_ctx.clone()), r#"{"order":1}"#.to_owned()),
                (None, r#"{"order":2}"#.to_owned()),
            ]
            .into(),
        ),
        posted: Default::default(),
        header_names: Default::default(),
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let traffic = std::sync::Arc::new(InvocationTraffic::default());
    let (upstream, proxy) = rt.block_on(async {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let routes = axum::Router::new()
            .fallback(fake_runtime_api)
            .with_state(api.clone());
        tokio::spawn(async move { axum::serve(upstream, routes).await });
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        // Lambda's form of the address: host:port, no scheme.
        let routes =
            switchyard_lambda::runtime_proxy(format!("{upstream_addr}/base"), traffic.clone());
        tokio::spawn(async move { axum::serve(proxy, routes).await });
        (upstream_addr, proxy_addr)
    });
    let base = format!("http://{proxy}/2018-06-01/runtime");

    // An event invoked with a synthetic client context: passed through
    // with its headers, and the invocation is synthetic.
    let (status, text) = curl(&format!("{base}/invocation/next"), None);
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with(r#"{"order":1}"#), "{text}");
    assert!(
        text.contains(&synthetic_ctx),
        "the client context reaches the runtime: {text}"
    );
    assert!(
        text.contains("lambda-runtime-aws-request-id: req-1"),
        "{text}"
    );
    assert_eq!(traffic.get(), Traffic::Synthetic);
    // The runtime's answer reaches the Runtime API byte for byte, and the
    // Runtime API's status reaches the runtime.
    let (status, text) = curl(
        &format!("{base}/invocation/req-1/response"),
        Some("ok \u{e9}"),
    );
    assert_eq!(status, 202, "{text}");

    // The next event has no tag: production again.
    let (status, _) = curl(&format!("{base}/invocation/next"), None);
    assert_eq!(status, 200);
    assert_eq!(traffic.get(), Traffic::Production);
    let (status, text) = curl(&format!("{base}/invocation/req-1/error"), Some("{}"));
    assert_eq!(status, 400, "errors pass through: {text}");
    assert_eq!(
        *api.posted.lock().unwrap(),
        [
            (
                "/base/2018-06-01/runtime/invocation/req-1/response".to_owned(),
                "ok \u{e9}".as_bytes().to_vec()
            ),
            (
                "/base/2018-06-01/runtime/invocation/req-1/error".to_owned(),
                b"{}".to_vec()
            ),
        ]
    );
    let names = api.header_names.lock().unwrap().clone();
    assert!(!names.is_empty());
    for hop in ["keep-alive", "x-hop"] {
        assert!(
            !names.iter().any(|n| n == hop),
            "{hop} passed on: {names:?}"
        );
    }
    // A Runtime API with nothing left to hand out answers 410, passed on
    // as is; one that is gone is a 502 naming it.
    let (status, _) = curl(&format!("{base}/invocation/next"), None);
    assert_eq!(status, 410);
    drop(rt);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let down = rt.block_on(async {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let routes = switchyard_lambda::runtime_proxy(
            format!("http://{upstream}"),
            std::sync::Arc::new(InvocationTraffic::default()),
        );
        tokio::spawn(async move { axum::serve(proxy, routes).await });
        addr
    });
    let (status, text) = curl(
        &format!("http://{down}/2018-06-01/runtime/invocation/next"),
        None,
    );
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains(&format!("the Runtime API at http://{upstream}")),
        "{text}"
    );
}
