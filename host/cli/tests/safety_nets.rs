//! The route config's safety nets end to end, with `switchyard serve`:
//! a `guard` that trips when the candidate starts failing mid-run (this
//! host stops sending to it at once, and with `--guard-writes` the store
//! records a rollback), a `fallback` that retries idempotent requests on
//! stable, and a `shadow` that compares a mirrored candidate's answers
//! with stable's.

use switchyard_test_support as common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::call;
use switchyard_test_artifacts as art;

/// An upstream standing in for one version: answers `200 <name>`, or
/// `500 <name> failing` while its switch is on.
fn upstream(name: &'static str) -> (String, Arc<AtomicBool>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let failing = Arc::new(AtomicBool::new(false));
    let switch = failing.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let failing = switch.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let (status, body) = if failing.load(Ordering::SeqCst) {
                    ("500 Internal Server Error", format!("{name} failing"))
                } else {
                    ("200 OK", name.to_owned())
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, failing)
}

#[test]
fn a_failing_candidate_trips_the_guard_and_the_store_records_the_rollback() {
    let (stable, _) = upstream("stable");
    let (candidate, failing) = upstream("candidate");
    let (payments_candidate, payments_failing) = upstream("payments-candidate");
    payments_failing.store(true, Ordering::SeqCst);
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let write = |name: &str, json: String| {
        let path = tmp.path().join(name);
        std::fs::write(&path, json).unwrap();
        path.display().to_string()
    };
    // Every user in the canary: all production traffic to the candidate.
    let orders = write(
        "orders.json",
        format!(
            r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},
                "flags":{{"canary-percent":100}},
                "guard":{{"max-error-rate":0.2,"min-requests":10,"window":"30s"}},
                "dispatch":{{"type":"http","urls":{{"7":"{stable}","8":"{candidate}"}}}}}}"#
        ),
    );
    let payments = write(
        "payments.json",
        format!(
            r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},
                "flags":{{"canary-percent":100}},"fallback":"stable","idempotent-methods":["PUT"],
                "dispatch":{{"type":"http","urls":{{"7":"{stable}","8":"{payments_candidate}"}}}}}}"#
        ),
    );
    for (function, config) in [("orders", &orders), ("payments", &payments)] {
        common::switchyard_json(
            &store,
            &[
                "publish",
                "--function",
                function,
                "--policy",
                art::STICKY_CANARY,
                "--config",
                config,
                "--min-host-version",
                "0.3.0",
            ],
        );
    }
    // A guard block with an out-of-range field is refused, naming it.
    let bad = write(
        "bad.json",
        r#"{"mode":"production","versions":{"stable":"7"},"guard":{"max-error-rate":2}}"#.into(),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["publish", "--store", &store, "--function", "orders"])
        .args(["--policy", art::STICKY_CANARY, "--config", &bad])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("guard.max-error-rate 2 is out of range"),
        "{err}"
    );

    let host = common::serve(&store, &["--guard-writes", "--poll-interval", "200ms"], &[]);
    let orders_url = host.url("/orders/x");
    let user = |i: usize| format!("x-user-id: user-{i}");
    common::wait_until("the proxy did not come up", || {
        !(call(&orders_url, &["-H", &user(0)]) != (200, "candidate".into()))
    });
    for i in 0..5 {
        assert_eq!(
            call(&orders_url, &["-H", &user(i)]),
            (200, "candidate".into())
        );
    }

    // The candidate starts failing mid-run.
    failing.store(true, Ordering::SeqCst);
    let mut failures = 0;
    let mut i = 0;
    loop {
        i += 1;
        match call(&orders_url, &["-H", &user(i)]) {
            (200, body) if body == "stable" => break,
            (500, _) => failures += 1,
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            failures <= 10,
            "the guard did not trip after {failures} failures"
        );
    }
    // 5 answers were good (6 with the first): the guard judges from the
    // 10th answer on, when 4 of 10 have failed, more than 20 %.
    assert_eq!(failures, 4, "failures before the trip");
    // After the trip: no failure a client sees.
    for i in 100..140 {
        assert_eq!(call(&orders_url, &["-H", &user(i)]), (200, "stable".into()));
    }
    assert_eq!(
        host.metric(r#"switchyard_guard_trips_total{function="orders",traffic="production"}"#),
        1
    );

    // The store records the rollback: the candidate out, production mode,
    // and why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = common::switchyard_json(&store, &["status", "orders"]);
        if status[0]["version"] == 2 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback in the store: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status[0]["mode"], "production");
    assert_eq!(status[0]["versions"], serde_json::json!({"stable": "7"}));
    let note = status[0]["note"].as_str().unwrap();
    assert!(
        note.starts_with("switchyard guard: guard tripped: ")
            && note.contains("production answers failed"),
        "{note}"
    );
    // The host takes the rollback version: still stable, now by policy.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(call(&orders_url, &["-H", &user(1)]), (200, "stable".into()));

    // Fallback: the payments candidate always fails. Idempotent requests
    // (GET, and PUT as the route declares) get stable's answer; a POST
    // gets the candidate's failure.
    let payments_url = host.url("/payments/x");
    for method in ["GET", "PUT"] {
        let (status, body) = call(&payments_url, &["-X", method, "-H", &user(1)]);
        assert_eq!((status, body.as_str()), (200, "stable"), "{method}");
    }
    let (status, body) = call(&payments_url, &["-X", "POST", "-H", &user(1), "-d", "x"]);
    assert_eq!((status, body.as_str()), (500, "payments-candidate failing"));
    assert_eq!(
        host.metric(r#"switchyard_fallback_total{function="payments"}"#),
        2
    );
}

/// An upstream answering JSON: `{"total": <total>, "requestId": <unique>, "user": "alice"}`.
fn json_upstream(total: u32) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(conn);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = format!(r#"{{"total":{total},"requestId":"r-{total}-{n}","user":"alice"}}"#);
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-version: v{total}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_shadowed_candidate_that_changes_a_field_is_reported_with_that_field() {
    let (stable, candidate) = (json_upstream(10), json_upstream(12));
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    // Every request to stable is mirrored to the candidate and compared;
    // requestId differs on every answer and is ignored.
    common::publish_route(
        &store,
        "orders",
        art::SYNTHETIC_HEADER,
        &format!(
            r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},
                "flags":{{"mirror-role":"candidate"}},
                "shadow":{{"ignore":["$.requestId"],"reveal":["$.total"],"headers":["content-type"]}},
                "dispatch":{{"type":"http","urls":{{"7":"{stable}","8":"{candidate}"}}}}}}"#
        ),
        &["--min-host-version", "0.3.0"],
    );
    let host = common::serve(&store, &[], &[]);
    let url = host.url("/orders/x");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(&url, &[]);
        if status == 200 {
            // The client gets stable's answer, untouched.
            assert!(body.contains(r#""total":10"#), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the proxy did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..4 {
        assert_eq!(call(&url, &[]).0, 200);
    }
    let admin_url = host.admin_url("");
    let report = |store: &str| {
        common::switchyard_json(
            store,
            &["shadow", "report", "orders", "--admin", &admin_url],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = report(&store);
        if r["compared"].as_u64() >= Some(5) {
            break r;
        }
        assert!(Instant::now() < deadline, "not compared: {r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r["differed"], r["compared"], "{r}");
    let last = &r["recent"].as_array().unwrap()[0];
    assert_eq!(last["kinds"], serde_json::json!(["body"]), "{last}");
    // The changed field, its values shown (revealed); not the ignored one.
    assert_eq!(
        last["body"]["paths"],
        serde_json::json!([{"path": "$.total", "primary": 10, "mirror": 12}]),
        "{last}"
    );
    assert_eq!(
        last["request"],
        serde_json::json!({"method": "GET", "path": "/x"})
    );
    assert_eq!(last["mirror"]["qualifier"], "8");
    let metrics = common::curl(&[&host.admin_url("/metrics")]);
    assert!(
        metrics.contains(r#"switchyard_shadow_diff_total{function="orders",kind="body"}"#),
        "{metrics}"
    );
    // x-version differs on every answer but is not a compared header (the
    // series exists at 0 from the start, so Prometheus sees a first diff).
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"switchyard_shadow_diff_total{function="orders",kind="header"} 0"#),
        "{metrics}"
    );
    // A function this host does not route is a clear error.
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["shadow", "report", "payments", "--admin", &admin_url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown function"),
        "{o:?}"
    );
}

/// A capture file that cannot be written (a full disk: /dev/full) never
/// fails a request.
#[test]
fn an_unwritable_capture_file_fails_no_request() {
    let (stable, _) = upstream("stable");
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    common::publish_route(
        &store,
        "orders",
        art::SYNTHETIC_HEADER,
        &format!(
            r#"{{"mode":"production","versions":{{"stable":"7"}},
                "dispatch":{{"type":"http","urls":{{"7":"{stable}"}}}}}}"#
        ),
        &[],
    );
    let host = common::serve(
        &store,
        &["--capture", "/dev/full", "--capture-sample", "1"],
        &[],
    );
    let url = host.url("/orders/x");
    common::wait_until("the proxy did not come up", || !(call(&url, &[]).0 != 200));
    for _ in 0..200 {
        assert_eq!(call(&url, &[]), (200, "stable".into()));
    }
    // The lines that could not be written are counted.
    let metrics = host.admin_url("/metrics");
    common::wait_until("the dropped capture lines were not counted", || {
        let (_, text) = call(&metrics, &[]);
        text.lines()
            .find_map(|l| l.strip_prefix("switchyard_capture_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)
    });
}

/// Two hosts whose guards trip at once both try to write the rollback: the
/// writes converge on one new version (one written, the other told the
/// function moved on), not two.
#[test]
fn hosts_tripping_at_once_write_one_rollback() {
    let (stable, _) = upstream("stable");
    let (candidate, failing) = upstream("candidate");
    failing.store(true, Ordering::SeqCst);
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    common::publish_route(
        &store,
        "orders",
        art::STICKY_CANARY,
        &format!(
            r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},
                "flags":{{"canary-percent":100}},
                "guard":{{"max-error-rate":0.5,"min-requests":4,"window":"60s"}},
                "dispatch":{{"type":"http","urls":{{"7":"{stable}","8":"{candidate}"}}}}}}"#
        ),
        &["--min-host-version", "0.3.0"],
    );
    let host = || common::serve(&store, &["--guard-writes", "--poll-interval", "200ms"], &[]);
    let (host_a, host_b) = (host(), host());
    let (a, b) = (host_a.url("/orders/x"), host_b.url("/orders/x"));
    let user = ["-H", "x-user-id: u1"];
    for url in [&a, &b] {
        common::wait_until("a host did not come up", || !(call(url, &user).0 != 500));
    }
    // Each host has seen 1 failure; 2 more each, then the 4th on both at once.
    for _ in 0..2 {
        assert_eq!(call(&a, &user).0, 500);
        assert_eq!(call(&b, &user).0, 500);
    }
    let (ta, tb) = (a.clone(), b.clone());
    let both = [
        std::thread::spawn(move || call(&ta, &["-H", "x-user-id: u1"]).0),
        std::thread::spawn(move || call(&tb, &["-H", "x-user-id: u1"]).0),
    ];
    for t in both {
        assert_eq!(t.join().unwrap(), 500);
    }
    let outcome = |o: &str| {
        let s = format!(r#"switchyard_guard_rollbacks_total{{function="orders",outcome="{o}"}}"#);
        host_a.metric(&s) + host_b.metric(&s)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcome("written") + outcome("superseded") < 2 {
        assert!(
            Instant::now() < deadline,
            "the rollback writes did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((outcome("written"), outcome("superseded")), (1, 1));
    let trips = r#"switchyard_guard_trips_total{function="orders",traffic="production"}"#;
    for h in [&host_a, &host_b] {
        assert_eq!(h.metric(trips), 1, "each host tripped");
    }
    let history = common::switchyard_json(&store, &["history", "orders"]);
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(history[1]["versions"], serde_json::json!({"stable": "7"}));
    for url in [&a, &b] {
        assert_eq!(call(url, &user), (200, "stable".into()));
    }
}
