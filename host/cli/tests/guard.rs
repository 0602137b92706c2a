//! The route config's safety nets end to end, with `switchyard serve`:
//! a `guard` that trips when the candidate starts failing mid-run (this
//! host stops sending to it at once, and with `--guard-writes` the store
//! records a rollback), and a `fallback` that retries idempotent requests
//! on stable.

use switchyard_test_support as common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Killed;
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

/// `(status, body)` of one request.
fn call(url: &str, args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn switchyard(store: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_STORE", store)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
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
        switchyard(
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

    let (port, admin) = (free_port(), free_port());
    let _serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--store", &store, "--guard-writes"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--poll-interval", "200ms"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let orders_url = format!("http://127.0.0.1:{port}/orders/x");
    let user = |i: usize| format!("x-user-id: user-{i}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&orders_url, &["-H", &user(0)]) != (200, "candidate".into()) {
        assert!(Instant::now() < deadline, "the proxy did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let metrics = call(&format!("http://127.0.0.1:{admin}/metrics"), &[]).1;
    assert!(
        metrics
            .contains(r#"switchyard_guard_trips_total{function="orders",traffic="production"} 1"#),
        "{metrics}"
    );

    // The store records the rollback: the candidate out, production mode,
    // and why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = switchyard(&store, &["status", "orders"]);
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
    let payments_url = format!("http://127.0.0.1:{port}/payments/x");
    for method in ["GET", "PUT"] {
        let (status, body) = call(&payments_url, &["-X", method, "-H", &user(1)]);
        assert_eq!((status, body.as_str()), (200, "stable"), "{method}");
    }
    let (status, body) = call(&payments_url, &["-X", "POST", "-H", &user(1), "-d", "x"]);
    assert_eq!((status, body.as_str()), (500, "payments-candidate failing"));
    let metrics = call(&format!("http://127.0.0.1:{admin}/metrics"), &[]).1;
    assert!(
        metrics.contains(r#"switchyard_fallback_total{function="payments"} 2"#),
        "{metrics}"
    );
}
