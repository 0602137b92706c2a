//! The proxy under hostile or broken clients, over real sockets: stalled
//! and silent connections, the connection cap, a bounded shutdown, idle
//! upstream connections, forged mesh headers, odd paths, and what the
//! admin listener reveals to whom. The target is the `echo` backend (it
//! answers with what a target would receive) or a raw loopback upstream.

use switchyard_test_support as common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_config::{ConfigStore, DirStore, WatchConfig, Watcher};
use switchyard_core::RouteConfig;
use switchyard_proxy::{AdminConfig, ClientsConfig, ConnectionLimits, Proxy, ProxyConfig};
use switchyard_test_artifacts as art;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for anything the server must do on its own; a test that
/// hits it has found the server holding on.
const PATIENCE: Duration = Duration::from_secs(15);

struct Rig {
    addr: String,
    admin: String,
    shutdown: Option<Box<dyn FnOnce() + Send>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _tmp: tempfile::TempDir,
}

/// How the rig serves the public listener.
#[derive(Debug, Clone, Copy)]
enum Serving {
    /// `serve`: one listener on the test's runtime.
    One,
    /// `serve_public_threads`: this many threads, each with its own
    /// listener on one port and its own runtime (`serve --runtime
    /// per-core`).
    Threads(usize),
}

const ECHO_ROUTE: &str = r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
    "context":{"8":{"DB_PASSWORD":"hunter2"}},"dispatch":{"type":"echo"}}"#;

/// `orders` with `route` and the `synthetic-header` policy, served with
/// `config` on a public and an admin listener.
async fn rig(route: &str, config: ProxyConfig) -> Rig {
    rig_in(Serving::One, route, config).await
}

/// [`rig`], served as `serving` says.
async fn rig_in(serving: Serving, route: &str, mut config: ProxyConfig) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(DirStore::new(tmp.path()).unwrap());
    let mut cfg = RouteConfig::from_json(route).unwrap();
    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    cfg.policy = Some(store.put_blob(&bytes, &|_, _| {}).await.unwrap());
    store.put_route("orders", &cfg).await.unwrap();
    let watcher = Arc::new(Watcher::new(
        store,
        common::engine().clone(),
        WatchConfig {
            functions: vec!["orders".into()],
            ..Default::default()
        },
    ));
    if let Serving::Threads(n) = serving {
        config.clients.workers = n;
    }
    let proxy = Proxy::new(watcher.policies(), config);
    watcher.set_prepare(proxy.prepare_hook());
    watcher.poll().await.unwrap();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap().to_string();
    tokio::spawn(switchyard_proxy::serve_admin(
        admin_listener,
        proxy.clone(),
        std::future::pending(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (addr, served) = match serving {
        Serving::One => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let mut stopped = stopped;
            let served = tokio::spawn(switchyard_proxy::serve(listener, proxy, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            (addr, served)
        }
        Serving::Threads(n) => {
            let listeners = switchyard_proxy::bind_reuseport("127.0.0.1:0", n).unwrap();
            let addr = listeners[0].local_addr().unwrap().to_string();
            let threads =
                switchyard_proxy::serve_public_threads(listeners, proxy, stopped).unwrap();
            let served = tokio::task::spawn_blocking(move || {
                for t in threads {
                    t.join().expect("a serving thread panicked")?;
                }
                Ok(())
            });
            (addr, served)
        }
    };
    Rig {
        addr,
        admin,
        shutdown: Some(Box::new(move || {
            let _ = stop.send(true);
        })),
        served,
        _tmp: tmp,
    }
}

fn limits(header: Duration, idle: Duration, max_connections: usize) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: header,
        idle_timeout: idle,
        busy_timeout: Duration::from_secs(60),
        max_connections,
        shutdown_grace: SHUTDOWN_GRACE,
    }
}

/// The grace period [`limits`] gives a shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// Everything the server sends until it closes the connection. Panics if
/// it keeps the connection open past [`PATIENCE`].
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "the server still holds the connection after {PATIENCE:?}; it sent {text:?}"
    );
    text
}

/// One response read off a kept-alive connection (head and a
/// `content-length` body).
async fn one_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_silent_clients_are_cut_at_their_timeouts() {
    stalled_and_silent_clients_are_cut_at_their_timeouts_in(Serving::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_silent_clients_are_cut_at_their_timeouts_thread_per_core() {
    stalled_and_silent_clients_are_cut_at_their_timeouts_in(Serving::Threads(2)).await;
}

async fn stalled_and_silent_clients_are_cut_at_their_timeouts_in(serving: Serving) {
    let r = rig_in(
        serving,
        ECHO_ROUTE,
        ProxyConfig {
            connections: limits(Duration::from_millis(300), Duration::from_millis(600), 64),
            body_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(&r.addr).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, "");

    // Half a request head.
    let mut half = TcpStream::connect(&r.addr).await.unwrap();
    half.write_all(b"GET /orders/x HTTP/1.1\r\nHost: a\r\nX-Partial: ")
        .await
        .unwrap();
    let sent = until_closed(&mut half).await;
    assert!(!sent.contains(" 200 "), "{sent}");

    // Declares ten bytes of body and sends three: 408, then closed.
    let mut short = TcpStream::connect(&r.addr).await.unwrap();
    short
        .write_all(b"POST /orders/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let sent = until_closed(&mut short).await;
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("stalled"), "{sent}");

    // A kept-alive connection that goes quiet after a request.
    let mut idle = TcpStream::connect(&r.addr).await.unwrap();
    idle.write_all(b"GET /orders/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = one_response(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Still usable after the header timeout has passed once: a keep-alive
    // connection gets the idle timeout, not the header timeout.
    idle.write_all(b"GET /orders/y HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let second = one_response(&mut idle).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(until_closed(&mut idle).await, "");

    // The server still serves.
    let mut fresh = TcpStream::connect(&r.addr).await.unwrap();
    fresh
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(one_response(&mut fresh).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_new_clients_until_a_slot_frees() {
    the_connection_cap_holds_new_clients_until_a_slot_frees_in(Serving::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_new_clients_until_a_slot_frees_thread_per_core() {
    the_connection_cap_holds_new_clients_until_a_slot_frees_in(Serving::Threads(2)).await;
}

async fn the_connection_cap_holds_new_clients_until_a_slot_frees_in(serving: Serving) {
    let r = rig_in(
        serving,
        ECHO_ROUTE,
        ProxyConfig {
            connections: limits(Duration::from_secs(60), Duration::from_secs(60), 2),
            ..Default::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&r.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        // Answered: it holds one of the two slots (keep-alive).
        assert!(one_response(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(&r.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served while the cap of 2 was held"
    );
    drop(held.pop());
    let answer = one_response(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period() {
    shutdown_is_bounded_by_the_grace_period_in(Serving::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period_thread_per_core() {
    shutdown_is_bounded_by_the_grace_period_in(Serving::Threads(2)).await;
}

async fn shutdown_is_bounded_by_the_grace_period_in(serving: Serving) {
    // An upstream that takes a request and never answers: the request stays
    // in flight (for the upstream timeout, a minute) unless shutdown cuts it.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", upstream.local_addr().unwrap());
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = arrived_tx.send(());
        std::future::pending::<()>().await;
        drop(s);
    });
    let route = format!(
        r#"{{"mode":"production","versions":{{"stable":"7"}},
            "dispatch":{{"type":"http","urls":{{"7":"{url}"}}}}}}"#
    );
    let mut r = rig_in(
        serving,
        &route,
        ProxyConfig {
            connections: limits(Duration::from_secs(60), Duration::from_secs(60), 64),
            clients: ClientsConfig {
                upstream_timeout: Duration::from_secs(60),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut held = TcpStream::connect(&r.addr).await.unwrap();
    held.write_all(b"GET /orders/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, arrived)
        .await
        .expect("the request did not reach the upstream")
        .unwrap();
    let asked = std::time::Instant::now();
    (r.shutdown.take().unwrap())();
    tokio::time::timeout(PATIENCE, &mut r.served)
        .await
        .expect("serve returns once the grace period is over")
        .unwrap()
        .unwrap();
    // The in-flight request gets the grace period, and no more (plus a
    // second for a loaded CI machine): not the minute it could take.
    let took = asked.elapsed();
    let bound = SHUTDOWN_GRACE + Duration::from_secs(1);
    assert!(
        (SHUTDOWN_GRACE..bound).contains(&took),
        "serve took {took:?} to return after the shutdown signal (grace {SHUTDOWN_GRACE:?}, allowed {bound:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed() {
    idle_upstream_connections_are_closed_in(Serving::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_thread_per_core() {
    idle_upstream_connections_are_closed_in(Serving::Threads(2)).await;
}

async fn idle_upstream_connections_are_closed_in(serving: Serving) {
    // A raw upstream: answers one request, then reports when the proxy
    // closes the connection.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", upstream.local_addr().unwrap());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap_or(0);
        let _ = closed_tx.send(n);
    });
    let route = format!(
        r#"{{"mode":"production","versions":{{"stable":"7"}},
            "dispatch":{{"type":"http","urls":{{"7":"{url}"}}}}}}"#
    );
    let r = rig_in(
        serving,
        &route,
        ProxyConfig {
            clients: ClientsConfig {
                upstream_idle_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    s.write_all(b"GET /orders/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = one_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let left = tokio::time::timeout(PATIENCE, closed_rx)
        .await
        .expect("the proxy kept an idle upstream connection open")
        .unwrap();
    assert_eq!(left, 0, "the proxy closed it without sending more");
}

/// A request on the public listener; the echo target's JSON (or the
/// error's).
async fn send(addr: &str, request: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let text = one_response(&mut s).await;
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_cannot_forge_mesh_headers_or_reach_around_the_path() {
    let r = rig(ECHO_ROUTE, ProxyConfig::default()).await;
    let (status, echo) = send(
        &r.addr,
        "GET /orders/x HTTP/1.1\r\nHost: a\r\n\
         X-Switchyard-Traffic: synthetic\r\n\
         X-SWITCHYARD-TARGET: 9\r\n\
         X-Switchyard-Ctx-Queue_url: https://evil.example/q\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\n\
         Connection: keep-alive, x-hop\r\n\
         X-Hop: 1\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    // The forged class did not make it synthetic (the policy keys on the
    // synthetic-header flag, and the traffic tag is the mesh's).
    assert_eq!(
        (&echo["qualifier"], &echo["traffic"]),
        (&json!("7"), &json!("production")),
        "{echo}"
    );
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-switchyard-traffic"], "production");
    for gone in [
        "x-switchyard-target",
        "x-switchyard-ctx-queue_url",
        "proxy-authorization",
        "x-hop",
        "connection",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the target: {echo}"
        );
    }

    // `/orders/` routes like `/orders`.
    let (status, echo) = send(&r.addr, "GET /orders/ HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!((status, &echo["path"]), (200, &json!("/")), "{echo}");

    // Dot segments, plain or encoded, are refused rather than forwarded.
    for path in [
        "/orders/a/../../admin",
        "/orders/%2e%2E/x",
        "/orders/./x",
        "/orders/..;/admin",
        "/orders/a%2f..%2fadmin",
        "/orders/a%5c..%5cadmin",
    ] {
        let (status, body) =
            send(&r.addr, &format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}

async fn admin_call(addr: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let method = if body.is_empty() { "GET" } else { "POST" };
    send(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_hides_context_and_takes_a_token() {
    const SYNTHETIC: &str = r#"{"function":"orders","headers":{"x-switchyard-synthetic":"1"}}"#;
    // No token, context not revealable.
    let open = rig(ECHO_ROUTE, ProxyConfig::default()).await;
    let (status, d) = admin_call(&open.admin, "/v1/decide", None, SYNTHETIC).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["target"], "8");
    assert_eq!(d["context"], json!({"DB_PASSWORD": "(hidden)"}));
    assert!(!d.to_string().contains("hunter2"));
    let (status, d) = admin_call(&open.admin, "/v1/decide?context=show", None, SYNTHETIC).await;
    assert_eq!(status, 403, "{d}");
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("--admin-reveal-context")
    );

    // A token, and context revealable when asked.
    let guarded = rig(
        ECHO_ROUTE,
        ProxyConfig {
            admin: AdminConfig {
                token: Some("s3cret".into()),
                reveal_context: true,
            },
            ..Default::default()
        },
    )
    .await;
    for (path, body) in [
        ("/v1/decide", SYNTHETIC),
        ("/metrics", ""),
        ("/healthz", ""),
    ] {
        let (status, _) = admin_call(&guarded.admin, path, None, body).await;
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) = admin_call(&guarded.admin, path, Some("wrong"), body).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, d) = admin_call(&guarded.admin, "/v1/decide", Some("s3cret"), SYNTHETIC).await;
    assert_eq!(
        (status, &d["context"]["DB_PASSWORD"]),
        (200, &json!("(hidden)"))
    );
    let (status, d) = admin_call(
        &guarded.admin,
        "/v1/decide?context=show",
        Some("s3cret"),
        SYNTHETIC,
    )
    .await;
    assert_eq!(
        (status, &d["context"]["DB_PASSWORD"]),
        (200, &json!("hunter2"))
    );
    // The public listener has no admin routes, token or not.
    let (status, _) = admin_call(&guarded.addr, "/v1/decide", Some("s3cret"), SYNTHETIC).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_views_data_and_shadow_reports_need_the_admin_token() {
    let guarded = rig(
        ECHO_ROUTE,
        ProxyConfig {
            admin: AdminConfig {
                token: Some("s3cret".into()),
                reveal_context: false,
            },
            ..Default::default()
        },
    )
    .await;
    for path in ["/v1/mesh", "/v1/shadow/orders"] {
        let (status, body) = admin_call(&guarded.admin, path, None, "").await;
        assert_eq!(status, 401, "{path} without the token: {body}");
        let (status, body) = admin_call(&guarded.admin, path, Some("wrong"), "").await;
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
        let (status, body) = admin_call(&guarded.admin, path, Some("s3cret"), "").await;
        assert_eq!(status, 200, "{path} with the token: {body}");
        assert!(body.is_object(), "{path}: {body}");
    }
    // Without a token set, the admin listener (loopback) is open.
    let open = rig(ECHO_ROUTE, ProxyConfig::default()).await;
    for path in ["/v1/mesh", "/v1/shadow/orders"] {
        let (status, body) = admin_call(&open.admin, path, None, "").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_the_idle_timeout_not_the_header_timeout() {
    let r = rig(
        ECHO_ROUTE,
        ProxyConfig {
            connections: limits(Duration::from_millis(300), Duration::from_secs(30), 64),
            ..Default::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    // The preface in two reads' worth, then an empty SETTINGS frame.
    s.write_all(b"PRI * HT").await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"TP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // Idle past the header timeout, then a PING: still answered.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let acked = tokio::time::timeout(PATIENCE, async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
            // A PING frame with the ACK flag, echoing the payload.
            if seen.windows(9).any(|w| w[3] == 0x06 && w[4] == 0x01)
                && seen.windows(8).any(|w| w == b"pingpong")
            {
                return true;
            }
        }
    })
    .await
    .expect("no answer at all");
    assert!(acked, "the idle HTTP/2 connection was closed: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_per_core_listener_is_served() {
    // The kernel spreads connections over the listeners by their address
    // pair: 32 of them all landing on one of two listeners is a chance of
    // 2^-31, so a listener nobody accepts on leaves some unanswered.
    let r = rig_in(Serving::Threads(2), ECHO_ROUTE, ProxyConfig::default()).await;
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let addr = r.addr.clone();
            tokio::spawn(async move {
                send(
                    &addr,
                    &format!("GET /orders/{i} HTTP/1.1\r\nHost: a\r\nx-switchyard-synthetic: true\r\n\r\n"),
                )
                .await
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let (status, echo) = tokio::time::timeout(PATIENCE, c)
            .await
            .expect("a connection was never served")
            .unwrap();
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["path"], format!("/{i}"));
        assert_eq!(echo["qualifier"], "8", "{echo}");
    }
}

#[test]
fn a_port_in_use_is_refused_not_shared() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = switchyard_proxy::bind_reuseport(&addr, 2).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    // Nor does a second switchyard share the port of a first (both would
    // set SO_REUSEPORT).
    let first = switchyard_proxy::bind_reuseport("127.0.0.1:0", 2).unwrap();
    let port = first[0].local_addr().unwrap();
    assert!(first.iter().all(|l| l.local_addr().unwrap() == port));
    let e = switchyard_proxy::bind_reuseport(&port.to_string(), 2).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_routes_answer_every_path_shape() {
    let r = rig(ECHO_ROUTE, ProxyConfig::default()).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    // The function alone, with a slash, percent-encoded; the rest is
    // forwarded as sent.
    for (path, forwarded) in [
        ("/orders", "/"),
        ("/orders/", "/"),
        ("/ord%65rs/a%2Fb?q=1", "/a%2Fb"),
    ] {
        let (status, echo) = send(&r.addr, &get(path)).await;
        assert_eq!(status, 200, "{path}: {echo}");
        assert_eq!(echo["path"], forwarded, "{path}: {echo}");
    }
    // Wrong methods are told the right one.
    for (request, allow) in [
        (
            "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD",
        ),
        (
            "GET /2015-03-31/functions/orders/invocations HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST",
        ),
    ] {
        let mut s = TcpStream::connect(&r.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let text = one_response(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 405"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{text}"
        );
    }
    // A segment that is not UTF-8, and no function at all.
    let (status, body) = send(&r.addr, &get("/%FF/x")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(&r.addr, &get("//x")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no route"),
        "{body}"
    );
}

/// A `Content-Length` over the limit is answered 413 before a byte of the
/// body is read, and `Expect: 100-continue` gets the 413, not `100
/// Continue`; the bodies held at once stay within the proxy's budget, past
/// which a request is answered 503 with `Retry-After` while the others are
/// served, and the budget comes back when their requests are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_refused_early_and_held_within_a_budget() {
    let r = rig(
        ECHO_ROUTE,
        ProxyConfig {
            max_body: 1 << 20,
            body_memory: 2 << 20,
            connections: limits(Duration::from_secs(5), Duration::from_secs(5), 64),
            body_timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await;

    // Declares more than the limit and sends nothing: answered at once.
    let mut big = TcpStream::connect(&r.addr).await.unwrap();
    big.write_all(
        b"POST /orders/x HTTP/1.1\r\nHost: a\r\nContent-Length: 6000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let sent = until_closed(&mut big).await;
    assert!(sent.starts_with("HTTP/1.1 413"), "{sent}");
    assert!(!sent.contains("100 Continue"), "{sent}");

    // Three uploads of 900 KiB each send 800 KiB and stall: two fit the
    // 2 MiB budget, and the one that passes it is answered at once (the
    // first to hear anything back; the held two hear nothing yet).
    let head = "POST /orders/x HTTP/1.1\r\nHost: a\r\nContent-Length: 921600\r\n\r\n";
    let chunk = vec![b'a'; 800 << 10];
    let mut uploads = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&r.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        // (The refused one may be closed before all of it is written.)
        let _ = s.write_all(&chunk).await;
        uploads.push(s);
    }
    let refused = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            _ = uploads[0].readable() => 0,
            _ = uploads[1].readable() => 1,
            _ = uploads[2].readable() => 2,
        }
    })
    .await
    .expect("one upload refused");
    let mut third = uploads.remove(refused);
    let sent = until_closed(&mut third).await;
    assert!(sent.starts_with("HTTP/1.1 503"), "{sent}");
    assert!(
        sent.to_ascii_lowercase().contains("retry-after: 1"),
        "{sent}"
    );
    assert!(sent.contains("--body-memory"), "{sent}");
    let mut small = TcpStream::connect(&r.addr).await.unwrap();
    small
        .write_all(b"POST /orders/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let answer = one_response(&mut small).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The two finish: served, and their share of the budget is back.
    for mut s in uploads {
        s.write_all(&vec![b'b'; 100 << 10]).await.unwrap();
        assert!(one_response(&mut s).await.starts_with("HTTP/1.1 200"));
    }
    for _ in 0..2 {
        let mut again = TcpStream::connect(&r.addr).await.unwrap();
        again.write_all(head.as_bytes()).await.unwrap();
        again.write_all(&chunk).await.unwrap();
        again.write_all(&vec![b'c'; 100 << 10]).await.unwrap();
        assert!(one_response(&mut again).await.starts_with("HTTP/1.1 200"));
    }
}

/// An `https` upstream that accepts the connection and never answers the
/// TLS handshake fails the request at the connect timeout, not at the
/// (much longer) upstream timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_upstream_fails_at_the_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (s, _) = silent.accept().await.unwrap();
            open.push(s);
        }
    });
    let route = format!(
        r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},
            "dispatch":{{"type":"http","urls":{{"7":"https://127.0.0.1:{port}","8":"https://127.0.0.1:{port}"}}}}}}"#
    );
    let r = rig(
        &route,
        ProxyConfig {
            clients: ClientsConfig {
                upstream_timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = send(&r.addr, "GET /orders/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("TLS handshake"),
        "{body}"
    );
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    held.abort();
}
