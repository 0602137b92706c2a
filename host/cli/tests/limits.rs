//! `switchyard serve` under a small open-file limit (set by `prlimit`, as
//! `ulimit -n` would): a burst to one version, then one to another while
//! the first one's connections sit idle in the pool, stays within the
//! budget `serve` reports at start, and every request gets its version's
//! answer (the adversarial run saw `502 Too many open files` here).

use switchyard_test_support as common;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// An upstream standing in for `version`: answers its name after `delay`,
/// keeping connections alive (as a function URL or load balancer does).
async fn upstream(version: &'static str, delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        version
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// `n` requests at once to `url`, each on a connection of its own; the
/// answers as (status, body), or the client's error.
async fn burst(url: &str, n: usize, synthetic: bool) -> Vec<Result<(u16, String), String>> {
    // Many clients, each closing its connection after its answer: a
    // client keeping idle connections open holds the proxy's connection
    // slots until --idle-timeout.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<axum::body::Bytes>>();
    let calls = (0..n).map(|_| {
        let mut req = http::Request::get(url);
        if synthetic {
            req = req.header("x-switchyard-synthetic", "1");
        }
        let req = req.body(Full::default()).unwrap();
        let client = client.clone();
        tokio::spawn(async move {
            let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{e:?}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        })
    });
    let mut answers = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        answers.push(call.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_to_two_versions_stay_within_the_open_file_limit() {
    let delay = Duration::from_millis(200);
    let (stable, candidate) = (upstream("7", delay).await, upstream("8", delay).await);
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let route = serde_json::json!({
        "mode": "synthetic",
        "versions": {"stable": "7", "candidate": "8"},
        "dispatch": {"type": "http", "urls": {"7": stable, "8": candidate}},
    });
    common::publish_synthetic_header(&store, "orders", &route, tmp.path());
    let host = common::serve_with_open_files(256, &store, &[], &[]);
    let url = host.url("/orders/a");
    let probe = url.clone();
    tokio::task::spawn_blocking(move || {
        common::wait_until("the proxy did not come up", || {
            common::call(&probe, &[]).0 == 200
        });
    })
    .await
    .unwrap();
    // 256 files: 96 client connections, 96 upstream sockets, 64 kept.
    let log = host.log();
    assert!(
        log.contains(
            "open files: limit 256; up to 96 client connections per listener and 96 upstream sockets"
        ),
        "{log}"
    );
    for (synthetic, version) in [(false, "7"), (true, "8")] {
        let answers = burst(&url, 200, synthetic).await;
        let wrong: Vec<_> = answers
            .iter()
            .filter(|a| !matches!(a, Ok((200, body)) if body == version))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of 200 requests for {version} did not get its answer, e.g. {:?}\n{}",
            wrong.len(),
            wrong.first(),
            host.log()
        );
    }
    // The candidate's burst found the budget taken by stable's idle
    // sockets, and closed them to make room.
    let reclaimed = tokio::task::spawn_blocking(move || {
        host.metric("switchyard_upstream_sockets_reclaimed_total")
    })
    .await
    .unwrap();
    assert!(reclaimed > 0, "no idle socket was closed");
}
