//! `switchyard rollout` against real parts: two `switchyard serve` hosts on
//! one store, a real Prometheus scraping their admin `/metrics`, load from
//! curl, and upstreams standing in for the stable and candidate versions.
//! Times are scaled down (bakes of seconds, not minutes).

use switchyard_test_support as common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::prometheus::Prometheus;
use serde_json::{Value, json};

/// An upstream standing in for a version: answers every request with
/// `status` and `body` (JSON), counting requests by the traffic class the
/// mesh tagged them with.
struct Upstream {
    url: String,
    status: Arc<AtomicU16>,
    body: Arc<Mutex<String>>,
    production: Arc<AtomicU64>,
    synthetic: Arc<AtomicU64>,
}

fn upstream(body: Value) -> Upstream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let u = Upstream {
        url: format!("http://{}", listener.local_addr().unwrap()),
        status: Arc::new(AtomicU16::new(200)),
        body: Arc::new(Mutex::new(body.to_string())),
        production: Arc::default(),
        synthetic: Arc::default(),
    };
    let (status, text, production, synthetic) = (
        u.status.clone(),
        u.body.clone(),
        u.production.clone(),
        u.synthetic.clone(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (status, text, production, synthetic) = (
                status.clone(),
                text.clone(),
                production.clone(),
                synthetic.clone(),
            );
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let l = line.to_ascii_lowercase();
                    if l.starts_with("x-switchyard-traffic: production") {
                        production.fetch_add(1, Ordering::SeqCst);
                    } else if l.starts_with("x-switchyard-traffic: synthetic") {
                        synthetic.fetch_add(1, Ordering::SeqCst);
                    }
                    line.clear();
                }
                let body = text.lock().unwrap().clone();
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    status.load(Ordering::SeqCst),
                    body.len()
                );
            });
        }
    });
    u
}

/// Two hosts on one store, scraped by a real Prometheus, with load.
struct Fleet {
    hosts: Vec<common::Served>,
    prometheus: Prometheus,
    stop: Arc<AtomicBool>,
    load: Vec<std::thread::JoinHandle<()>>,
}

impl Fleet {
    fn start(store: &str, serve_args: &[&str]) -> Fleet {
        let args = [&["--poll-interval", "200ms"][..], serve_args].concat();
        let hosts: Vec<common::Served> = (0..2).map(|_| common::serve(store, &args, &[])).collect();
        for h in &hosts {
            common::wait_until("the host ready", || {
                common::call(&h.admin_url("/healthz"), &[]).0 == 200
            });
        }
        let prometheus = Prometheus::scraping(
            &hosts
                .iter()
                .map(|h| format!("127.0.0.1:{}", h.admin))
                .collect::<Vec<_>>(),
            Duration::from_millis(500),
        );
        Fleet {
            hosts,
            prometheus,
            stop: Arc::default(),
            load: Vec::new(),
        }
    }

    /// Production requests from distinct users (and, with `qa`, QA's
    /// synthetic ones) on both hosts until dropped: a load generator.
    fn drive_load(&mut self, qa: bool) {
        for t in 0..2 {
            let urls: Vec<String> = self.hosts.iter().map(|h| h.url("/orders/cart")).collect();
            let stop = self.stop.clone();
            self.load.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let user = format!("x-user-id: user-{t}-{i}");
                    let mut args = vec!["-H", &user];
                    if qa && i.is_multiple_of(3) {
                        args.extend(["-H", "x-switchyard-synthetic: true"]);
                    }
                    common::call(&urls[(i % 2) as usize], &args);
                    i += 1;
                }
            }));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for l in self.load.drain(..) {
            let _ = l.join();
        }
    }
}

fn plan_file(dir: &std::path::Path, plan: Value) -> String {
    let path = dir.join(format!("plan-{}.json", common::free_port()));
    std::fs::write(&path, plan.to_string()).unwrap();
    path.display().to_string()
}

fn rollout(store: &str, args: &[&str]) -> Output {
    Command::new(common::workspace_bin("switchyard"))
        .arg("rollout")
        .args(args)
        .env("SWITCHYARD_STORE", store)
        .output()
        .unwrap()
}

/// `rollout start orders --plan PLAN --prometheus <the fleet's>`.
fn start_with_prometheus(store: &str, plan: &str, fleet: &Fleet) -> Output {
    rollout(
        store,
        &[
            "start",
            "orders",
            "--plan",
            plan,
            "--prometheus",
            &fleet.prometheus.url,
        ],
    )
}

fn rollout_status(store: &str) -> Value {
    let o = rollout(store, &["status", "orders", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn live_route(store: &str) -> Value {
    common::switchyard_json(store, &["status", "orders"])[0].clone()
}

fn history_notes(store: &str) -> Vec<String> {
    common::switchyard_json(store, &["history", "orders"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["note"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store with `orders` on sticky-canary: stable 7, candidate 8.
fn sticky_store(
    dir: &std::path::Path,
    stable: &Upstream,
    candidate: &Upstream,
    extra: Value,
) -> String {
    let store = format!("dir:{}", dir.join("store").display());
    let mut route = json!({
        "mode": "production",
        "versions": {"stable": "7", "candidate": "8"},
        "dispatch": {"type": "http", "urls": {"7": stable.url, "8": candidate.url}},
    });
    if let (Some(r), Some(e)) = (route.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    common::publish_route(
        &store,
        "orders",
        switchyard_test_artifacts::STICKY_CANARY,
        &route.to_string(),
        &[],
    );
    store
}

/// What most tests start from: `orders` on sticky-canary (stable 7,
/// candidate 8, plus `extra` route fields), two hosts started with
/// `serve_args`, a real Prometheus scraping them, production load.
struct Scene {
    tmp: tempfile::TempDir,
    #[allow(dead_code)] // answers for stable until the test ends
    stable: Upstream,
    candidate: Upstream,
    store: String,
    fleet: Fleet,
}

fn sticky_scene(extra: Value, serve_args: &[&str]) -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) = (upstream(json!({"v": 7})), upstream(json!({"v": 8})));
    let store = sticky_store(tmp.path(), &stable, &candidate, extra);
    let mut fleet = Fleet::start(&store, serve_args);
    fleet.drive_load(false);
    Scene {
        tmp,
        stable,
        candidate,
        store,
        fleet,
    }
}

fn canary_gates() -> Value {
    json!({"min-requests": 5, "max-error-rate": 0.1, "max-p99": "2s", "max-wait": "20s"})
}

#[test]
fn a_healthy_candidate_ramps_through_every_step_to_promote() {
    let Scene {
        tmp,
        candidate,
        store,
        fleet,
        ..
    } = sticky_scene(json!({}), &[]);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": [10, 50], "bake": "3s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let o = rollout(
        &store,
        &[
            "start",
            "orders",
            "--plan",
            &plan,
            "--prometheus",
            &fleet.prometheus.url,
            "--lease",
            "3s",
        ],
    );
    assert!(o.status.success(), "the rollout failed: {}", stderr(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["phase"], "succeeded", "{status}");
    // Every step is an ordinary route version with its reason.
    let notes = history_notes(&store);
    let ours: Vec<&String> = notes
        .iter()
        .filter(|n| n.starts_with("switchyard rollout"))
        .collect();
    assert_eq!(ours.len(), 3, "{notes:?}");
    assert!(ours[0].contains("canary 10% of 8"), "{notes:?}");
    assert!(ours[1].contains("canary 50% of 8"), "{notes:?}");
    assert!(ours[2].contains("promote 8 to stable"), "{notes:?}");
    let live = live_route(&store);
    assert_eq!(live["versions"], json!({"stable": "8"}), "{live}");
    assert_eq!(live["mode"], "production");
    // The candidate answered production traffic along the way.
    assert!(candidate.production.load(Ordering::SeqCst) > 0);
    // A finished rollout lets the next one start; this one has nothing to
    // roll out.
    let again = start_with_prometheus(&store, &plan, &fleet);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no candidate to roll out"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_candidate_failing_at_the_25_percent_step_is_rolled_back_by_the_gate() {
    let Scene {
        tmp,
        candidate,
        store,
        fleet,
        ..
    } = sticky_scene(json!({}), &[]);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": [5, 25, 50], "bake": "3s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let runner = {
        let (store, plan, url) = (store.clone(), plan.clone(), fleet.prometheus.url.clone());
        std::thread::spawn(move || {
            rollout(
                &store,
                &[
                    "start",
                    "orders",
                    "--plan",
                    &plan,
                    "--prometheus",
                    &url,
                    "--lease",
                    "3s",
                ],
            )
        })
    };
    // The candidate starts failing once the 25 % step is written.
    common::eventually(Duration::from_secs(60), "the 25 % step", || {
        let s = rollout_status(&store);
        match s["step"].as_str() {
            Some("canary 25%") if s["route-version"].as_u64() > Some(2) => Ok(()),
            _ => Err(s.to_string()),
        }
    });
    candidate.status.store(500, Ordering::SeqCst);
    let o = runner.join().unwrap();
    assert!(
        !o.status.success(),
        "a failing candidate must fail the rollout"
    );
    let err = stderr(&o);
    assert!(
        err.contains("canary 25%: gate max-error-rate: measured"),
        "{err}"
    );
    assert!(err.contains("> threshold 0.1000"), "{err}");
    let live = live_route(&store);
    assert_eq!(
        live["versions"],
        json!({"stable": "7"}),
        "candidate out: {live}"
    );
    assert_eq!(live["mode"], "production");
    let notes = history_notes(&store);
    assert!(
        notes.last().unwrap().contains("rolled back: canary 25%"),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains("canary 50%")), "{notes:?}");
    assert_eq!(rollout_status(&store)["phase"], "failed");
}

#[test]
fn a_killed_runner_is_resumed_mid_bake_and_a_second_runner_is_told_who_drives() {
    let Scene {
        tmp,
        candidate: _,
        store,
        fleet,
        ..
    } = sticky_scene(json!({}), &[]);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": 20, "bake": "6s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let args = [
        "start",
        "orders",
        "--plan",
        &plan,
        "--prometheus",
        &fleet.prometheus.url,
        "--lease",
        "2s",
    ];
    // Two runners at once: one drives, the other is told who does.
    let spawn = || {
        Command::new(common::workspace_bin("switchyard"))
            .arg("rollout")
            .args(args)
            .env("SWITCHYARD_STORE", &store)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    // The one told exits at once; the driver is killed mid-bake.
    let (mut driver, told) = common::eventually(Duration::from_secs(30), "one runner refused", {
        let mut pair = Some((a, b));
        move || {
            let (mut a, mut b) = pair.take().unwrap();
            if a.try_wait().unwrap().is_some() {
                return Ok((b, a.wait_with_output().unwrap()));
            }
            if b.try_wait().unwrap().is_some() {
                return Ok((a, b.wait_with_output().unwrap()));
            }
            pair = Some((a, b));
            Err("both still running".to_owned())
        }
    });
    assert!(!told.status.success());
    let told_err = stderr(&told);
    assert!(
        told_err.contains("is driven by pid") && told_err.contains("rollout status orders"),
        "{told_err}"
    );
    common::eventually(Duration::from_secs(30), "the runner mid-bake", || {
        let s = rollout_status(&store);
        match s["baked-seconds"].as_f64() {
            Some(b) if b >= 1.0 && s["step"] == "canary 20%" => Ok(()),
            _ => Err(s.to_string()),
        }
    });
    driver.kill().unwrap();
    let _ = driver.wait();
    let versions_before = history_notes(&store).len();
    // While its lease lasts nobody else drives; then resume takes over.
    common::eventually(
        Duration::from_secs(30),
        "the dead runner's lease over",
        || {
            let s = rollout_status(&store);
            if s["runner"]["live"] == false {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let again = rollout(&store, &args);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("rollout resume orders"),
        "{}",
        stderr(&again)
    );
    let resumed = rollout(&store, &["resume", "orders", "--lease", "2s"]);
    let err = stderr(&resumed);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("resumed mid-bake"), "{err}");
    // The step was not written again: only the promotion followed.
    let notes = history_notes(&store);
    assert_eq!(notes.len(), versions_before + 1, "{notes:?}");
    assert!(
        notes.last().unwrap().contains("promote 8 to stable"),
        "{notes:?}"
    );
    assert_eq!(rollout_status(&store)["phase"], "succeeded");
}

#[test]
fn bad_plans_and_policies_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) = (upstream(json!({"v": 7})), upstream(json!({"v": 8})));
    let store = sticky_store(tmp.path(), &stable, &candidate, json!({}));
    let versions = history_notes(&store).len();
    let url = "http://127.0.0.1:9"; // never reached
    for (plan, says) in [
        (
            json!({"stages": [{"stage": "canery", "percent": 5, "bake": "1m"}]}),
            "unknown variant `canery`",
        ),
        (
            json!({"stages": [{"stage": "canary", "percent": 5, "bake": "1m", "gates": {"max-error-rate": 2}}]}),
            "out of range",
        ),
        // sticky-canary mirrors nothing: a shadow stage cannot be served.
        (
            json!({"stages": [{"stage": "shadow", "bake": "1m"}]}),
            "shadow block",
        ),
    ] {
        let o = rollout(
            &store,
            &[
                "start",
                "orders",
                "--plan",
                &plan_file(tmp.path(), plan.clone()),
                "--prometheus",
                url,
            ],
        );
        assert!(!o.status.success(), "{plan}");
        assert!(stderr(&o).contains(says), "{plan}: {}", stderr(&o));
    }
    // A policy that does not honour a weight (synthetic-header) is refused.
    let sh_store = format!("dir:{}", tmp.path().join("sh").display());
    common::publish_synthetic_header(
        &sh_store,
        "orders",
        &json!({"mode": "production", "versions": {"stable": "7", "candidate": "8"},
                "dispatch": {"type": "http", "urls": {"7": stable.url, "8": candidate.url}}}),
        tmp.path(),
    );
    let plan = plan_file(
        tmp.path(),
        json!({"stages": [{"stage": "canary", "percent": 10, "bake": "1m"}]}),
    );
    let o = rollout(
        &sh_store,
        &["start", "orders", "--plan", &plan, "--prometheus", url],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not honour canary-percent"),
        "{}",
        stderr(&o)
    );
    // No metrics source named.
    let o = rollout(&store, &["start", "orders", "--plan", &plan]);
    assert!(stderr(&o).contains("--prometheus"), "{}", stderr(&o));
    assert_eq!(history_notes(&store).len(), versions, "nothing was written");
}

#[test]
fn query_gates_without_data_or_that_error_wait_then_fail_naming_the_query() {
    let Scene {
        tmp,
        candidate: _,
        store,
        fleet,
        ..
    } = sticky_scene(json!({}), &[]);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": 10, "bake": "2s", "gates": {
                "max-wait": "2s",
                "queries": [
                    {"name": "orders-db-latency", "query": "sum(no_such_metric{function=\"$function\"})", "max": 1},
                    {"name": "typo", "query": "sum(rate(switchyard_requests_total[1m]", "max": 1}]}},
            {"stage": "promote"}
        ]}),
    );
    let o = start_with_prometheus(&store, &plan, &fleet);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("gate orders-db-latency has no data"), "{err}");
    assert!(
        err.contains(r#"sum(no_such_metric{function="orders"}) returned no series"#),
        "{err}"
    );
    // A query Prometheus refuses is no data either, with Prometheus's word.
    assert!(err.contains("gate typo has no data"), "{err}");
    assert!(err.contains("Prometheus refused it"), "{err}");
    assert_eq!(live_route(&store)["versions"], json!({"stable": "7"}));
}

/// A store with `orders` on synthetic-header with a shadow block: stable
/// 7, candidate 8.
fn shadow_store(dir: &std::path::Path, stable: &Upstream, candidate: &Upstream) -> String {
    let store = format!("dir:{}", dir.join("store").display());
    common::publish_synthetic_header(
        &store,
        "orders",
        &json!({"mode": "production", "versions": {"stable": "7", "candidate": "8"},
                "dispatch": {"type": "http", "urls": {"7": stable.url, "8": candidate.url}},
                "shadow": {"headers": ["content-type"]}}),
        dir,
    );
    store
}

#[test]
fn a_candidate_whose_shadow_differs_never_answers_production() {
    let tmp = tempfile::tempdir().unwrap();
    let stable = upstream(json!({"id": 1, "total": 10}));
    let candidate = upstream(json!({"id": 1, "total": 12}));
    let store = shadow_store(tmp.path(), &stable, &candidate);
    let mut fleet = Fleet::start(&store, &[]);
    fleet.drive_load(false);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "shadow", "bake": "3s", "gates": {"min-compared": 5, "max-diff-rate": 0}},
            {"stage": "synthetic", "bake": "2s"},
            {"stage": "promote"}
        ]}),
    );
    let o = start_with_prometheus(&store, &plan, &fleet);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("shadow: gate max-diff-rate: measured 1.0000 > threshold 0.0000"),
        "{err}"
    );
    // Mirror copies reached it, as synthetic traffic; no production request did.
    assert!(candidate.synthetic.load(Ordering::SeqCst) > 0);
    assert_eq!(candidate.production.load(Ordering::SeqCst), 0);
    let live = live_route(&store);
    assert_eq!(live["versions"], json!({"stable": "7"}), "{live}");
    let notes = history_notes(&store);
    assert!(
        !notes.iter().any(|n| n.contains("synthetic of 8")),
        "{notes:?}"
    );
}

/// A store with `orders` on qa-canary (every stage in one policy) with a
/// shadow block: stable 7, candidate 8.
fn qa_canary_store(dir: &std::path::Path, stable: &Upstream, candidate: &Upstream) -> String {
    let store = format!("dir:{}", dir.join("store").display());
    let route = json!({"mode": "production", "versions": {"stable": "7", "candidate": "8"},
        "dispatch": {"type": "http", "urls": {"7": stable.url, "8": candidate.url}},
        "shadow": {"headers": ["content-type"]}});
    common::publish_route(
        &store,
        "orders",
        switchyard_test_artifacts::QA_CANARY,
        &route.to_string(),
        &[],
    );
    store
}

#[test]
fn every_stage_with_a_healthy_candidate_qa_judged_apart_and_an_approval_ends_in_promote() {
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) = (
        upstream(json!({"total": 10})),
        upstream(json!({"total": 10})),
    );
    let store = qa_canary_store(tmp.path(), &stable, &candidate);
    let mut fleet = Fleet::start(&store, &[]);
    fleet.drive_load(true);
    // Recorded production requests: none may change under the shadow and
    // synthetic routes (the replay gate, before any traffic moves).
    let requests = tmp.path().join("captured.jsonl");
    std::fs::write(
        &requests,
        (0..20)
            .map(|i| json!({"function": "orders", "method": "GET", "path": "/cart", "headers": {"x-user-id": format!("u{i}")}}).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "replay", "requests": requests, "max-changed": "0"},
            {"stage": "shadow", "bake": "2s", "gates": {"min-compared": 3, "max-diff-rate": 0}},
            {"stage": "synthetic", "bake": "2s", "approval": true,
             "gates": {"min-requests": 3, "max-error-rate": 0, "max-wait": "20s"}},
            {"stage": "canary", "percent": [10, 50], "bake": "2s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let runner = {
        let (store, plan, url) = (store.clone(), plan.clone(), fleet.prometheus.url.clone());
        std::thread::spawn(move || {
            rollout(
                &store,
                &["start", "orders", "--plan", &plan, "--prometheus", &url],
            )
        })
    };
    let waiting = common::eventually(
        Duration::from_secs(60),
        "the rollout waiting for approval",
        || {
            let s = rollout_status(&store);
            if s["phase"] == "waiting-approval" {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    // Judged on QA's synthetic requests to the candidate; production has
    // not reached it yet (mirror copies are synthetic).
    let requests_gate = waiting["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "min-requests")
        .unwrap()
        .clone();
    assert!(requests_gate["value"].as_f64().unwrap() >= 3.0, "{waiting}");
    assert_eq!(candidate.production.load(Ordering::SeqCst), 0);
    assert!(candidate.synthetic.load(Ordering::SeqCst) > 0);
    // Still waiting until approved.
    assert_eq!(rollout_status(&store)["phase"], "waiting-approval");
    let approved = rollout(&store, &["approve", "orders"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let o = runner.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("replay: 0 of 20 recorded requests change"),
        "{err}"
    );
    let notes: Vec<String> = history_notes(&store)
        .into_iter()
        .filter(|n| n.starts_with("switchyard rollout"))
        .collect();
    assert_eq!(notes.len(), 5, "{notes:?}");
    for (note, step) in notes.iter().zip([
        "shadow of 8",
        "synthetic of 8",
        "canary 10% of 8",
        "canary 50% of 8",
        "promote 8",
    ]) {
        assert!(note.contains(step), "{notes:?}");
    }
    assert!(
        candidate.production.load(Ordering::SeqCst) > 0,
        "the canary steps sent production"
    );
    assert_eq!(live_route(&store)["versions"], json!({"stable": "8"}));
    // A second approval has nothing to approve.
    let again = rollout(&store, &["approve", "orders"]);
    assert!(
        stderr(&again).contains("nothing waits for approval"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn the_guard_takes_a_failing_candidate_out_first_and_the_rollout_ends_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) = (upstream(json!({"v": 7})), upstream(json!({"v": 8})));
    let store = sticky_store(
        tmp.path(),
        &stable,
        &candidate,
        json!({"guard": {"max-error-rate": 0.5, "min-requests": 3, "window": "30s"}}),
    );
    let mut fleet = Fleet::start(&store, &["--guard-writes"]);
    fleet.drive_load(false);
    candidate.status.store(503, Ordering::SeqCst);
    // Gates that would take longer to notice than the guard does.
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": 50, "bake": "20s",
             "gates": {"min-requests": 1000, "max-error-rate": 0.1, "max-wait": "20s"}},
            {"stage": "promote"}
        ]}),
    );
    let o = start_with_prometheus(&store, &plan, &fleet);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("the candidate 8 was taken out by version"),
        "{err}"
    );
    assert!(err.contains("switchyard guard: guard tripped"), "{err}");
    let status = rollout_status(&store);
    assert_eq!(status["phase"], "failed", "{status}");
    let live = live_route(&store);
    assert_eq!(live["versions"], json!({"stable": "7"}), "{live}");
    // The rollout wrote nothing after the guard's rollback.
    let notes = history_notes(&store);
    assert!(
        notes.last().unwrap().starts_with("switchyard guard"),
        "{notes:?}"
    );
}

#[test]
fn summed_host_metrics_gate_a_step_and_an_abort_rolls_back_through_the_runner() {
    let Scene {
        tmp,
        candidate: _,
        store,
        fleet,
        ..
    } = sticky_scene(json!({}), &[]);
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.admin_url("")).collect();
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "300ms", "stages": [
            {"stage": "canary", "percent": 30, "bake": "60s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let runner = {
        let (store, plan, hosts) = (store.clone(), plan.clone(), hosts.join(","));
        std::thread::spawn(move || {
            rollout(
                &store,
                &[
                    "start", "orders", "--plan", &plan, "--hosts", &hosts, "--lease", "5s",
                ],
            )
        })
    };
    // The hosts' own counters, summed by the runner, pass the gates.
    common::eventually(
        Duration::from_secs(30),
        "gates measured from the hosts",
        || {
            let s = rollout_status(&store);
            let gates = s["gates"].as_array().cloned().unwrap_or_default();
            let ok = |name: &str| {
                gates
                    .iter()
                    .any(|g| g["gate"] == name && g["state"] == "ok")
            };
            if ok("min-requests") && ok("max-error-rate") && ok("max-p99") {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let aborted = rollout(&store, &["abort", "orders", "--reason", "QA found a bug"]);
    assert!(aborted.status.success(), "{}", stderr(&aborted));
    let status: Value = serde_json::from_slice(&aborted.stdout).unwrap();
    assert_eq!(status["phase"], "aborted", "{status}");
    let o = runner.join().unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was aborted and rolled back: QA found a bug"),
        "{}",
        stderr(&o)
    );
    assert_eq!(live_route(&store)["versions"], json!({"stable": "7"}));
    let notes = history_notes(&store);
    assert!(
        notes
            .last()
            .unwrap()
            .contains("rolled back: QA found a bug"),
        "{notes:?}"
    );
    // An aborted rollout is over: nothing to abort or resume.
    let again = rollout(&store, &["resume", "orders"]);
    assert!(
        stderr(&again).contains("is over (aborted"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_candidate_removed_by_hand_mid_rollout_stops_it_saying_who() {
    let Scene {
        tmp,
        candidate: _,
        store,
        fleet,
        ..
    } = sticky_scene(json!({}), &[]);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "300ms", "stages": [
            {"stage": "canary", "percent": 20, "bake": "60s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let runner = {
        let (store, plan, url) = (store.clone(), plan.clone(), fleet.prometheus.url.clone());
        std::thread::spawn(move || {
            rollout(
                &store,
                &["start", "orders", "--plan", &plan, "--prometheus", &url],
            )
        })
    };
    common::eventually(Duration::from_secs(30), "the canary step baking", || {
        let s = rollout_status(&store);
        if s["baked-seconds"].as_f64() > Some(0.5) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    common::switchyard_cli(
        &store,
        &[
            "set",
            "orders",
            "--unset-version",
            "candidate",
            "--reason",
            "8 corrupts carts",
        ],
    );
    let o = runner.join().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("the candidate 8 was taken out by version"),
        "{err}"
    );
    assert!(err.contains("8 corrupts carts"), "{err}");
    assert_eq!(rollout_status(&store)["phase"], "failed");
    // Left as the operator wrote it: the rollout wrote nothing after.
    let notes = history_notes(&store);
    assert!(
        notes.last().unwrap().contains("8 corrupts carts"),
        "{notes:?}"
    );
}

/// What the EMF specification asks of a line, as CloudWatch checks it:
/// the problems found (none: valid).
fn emf_problems(line: &str) -> Vec<String> {
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let mut p = Vec::new();
    let Ok(root) = serde_json::from_str::<Value>(line) else {
        return vec![format!("not JSON: {line}")];
    };
    let aws = &root["_aws"];
    if !aws["Timestamp"].is_u64() {
        p.push("_aws.Timestamp is not a non-negative integer (ms since the epoch)".into());
    }
    let Some(directives) = aws["CloudWatchMetrics"]
        .as_array()
        .filter(|d| !d.is_empty())
    else {
        p.push("_aws.CloudWatchMetrics is not a non-empty array".into());
        return p;
    };
    for d in directives {
        match d["Namespace"].as_str() {
            Some(ns) if (1..=255).contains(&ns.len()) => {}
            _ => p.push("Namespace is not a string of 1-255 characters".into()),
        }
        for set in d["Dimensions"].as_array().into_iter().flatten() {
            let names = set.as_array().cloned().unwrap_or_default();
            if names.len() > 30 {
                p.push("a dimension set has more than 30 dimensions".into());
            }
            for n in names {
                match n.as_str().map(|n| &root[n]) {
                    Some(Value::String(v)) if (1..=1024).contains(&v.len()) => {}
                    _ => p.push(format!("dimension {n} does not name a string member")),
                }
            }
        }
        let metrics = d["Metrics"].as_array().cloned().unwrap_or_default();
        if metrics.is_empty() || metrics.len() > 100 {
            p.push("Metrics is not an array of 1-100 metric definitions".into());
        }
        for m in metrics {
            let name = m["Name"].as_str().unwrap_or("");
            if !root[name].is_number() {
                p.push(format!("metric {name:?} does not name a number member"));
            }
            if let Some(u) = m.get("Unit")
                && !u.as_str().is_some_and(|u| UNITS.contains(&u))
            {
                p.push(format!("metric {name}: unit {u} is not a CloudWatch unit"));
            }
        }
    }
    p
}

/// Ships EMF lines to CloudWatch as CloudWatch Logs would: a datum per
/// metric of each directive, with each dimension set's values. (The
/// emulator has no Logs-to-metrics extraction: this stands in for it.)
fn put_as_cloudwatch_would(
    client: &aws_sdk_cloudwatch::Client,
    rt: &tokio::runtime::Runtime,
    lines: &[Value],
) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let mut by_ns: std::collections::BTreeMap<String, Vec<MetricDatum>> = Default::default();
    for root in lines {
        let ts = root["_aws"]["Timestamp"].as_u64().unwrap();
        for d in root["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            let ns = d["Namespace"].as_str().unwrap().to_owned();
            for set in d["Dimensions"].as_array().unwrap() {
                for m in d["Metrics"].as_array().unwrap() {
                    let name = m["Name"].as_str().unwrap();
                    let mut datum = MetricDatum::builder()
                        .metric_name(name)
                        .value(root[name].as_f64().unwrap())
                        .unit(StandardUnit::from(m["Unit"].as_str().unwrap_or("None")))
                        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_millis(
                            ts as i64,
                        ));
                    for dim in set.as_array().unwrap() {
                        let dim = dim.as_str().unwrap();
                        datum = datum.dimensions(
                            Dimension::builder()
                                .name(dim)
                                .value(root[dim].as_str().unwrap())
                                .build(),
                        );
                    }
                    by_ns.entry(ns.clone()).or_default().push(datum.build());
                }
            }
        }
    }
    for (ns, data) in by_ns {
        for chunk in data.chunks(500) {
            rt.block_on(
                client
                    .put_metric_data()
                    .namespace(&ns)
                    .set_metric_data(Some(chunk.to_vec()))
                    .send(),
            )
            .unwrap();
        }
    }
}

#[test]
fn emf_lines_follow_the_specification_and_their_cloudwatch_metrics_gate_a_rollout() {
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) = (upstream(json!({"v": 7})), upstream(json!({"v": 8})));
    let store = sticky_store(tmp.path(), &stable, &candidate, json!({}));
    let namespace = format!("Switchyard-{}", common::unique_tag());
    let mut fleet = Fleet::start(&store, &["--emf-namespace", &namespace]);
    fleet.drive_load(false);
    // Each host's stdout, shipped to the emulator's CloudWatch as it grows.
    let outputs: Vec<std::path::PathBuf> = fleet.hosts.iter().map(|h| h.stdout_path()).collect();
    let shipping = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let shipper = {
        let (shipping, seen) = (shipping.clone(), seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let config =
                rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
            let client = aws_sdk_cloudwatch::Client::new(&config);
            let mut offsets = vec![0usize; outputs.len()];
            let mut problems = Vec::new();
            while shipping.load(Ordering::SeqCst) {
                let mut batch = Vec::new();
                for (i, path) in outputs.iter().enumerate() {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    let complete = text[offsets[i]..]
                        .rfind('\n')
                        .map_or(offsets[i], |n| offsets[i] + n + 1);
                    for line in text[offsets[i]..complete].lines() {
                        // As CloudWatch Logs reads them: a JSON object with
                        // `_aws` is EMF; any other line (serve's start-up
                        // line) is a log line.
                        match serde_json::from_str::<Value>(line) {
                            Ok(v) if v.get("_aws").is_some() => {
                                problems.extend(emf_problems(line));
                                batch.push(v);
                            }
                            _ => {}
                        }
                    }
                    offsets[i] = complete;
                }
                if !batch.is_empty() {
                    put_as_cloudwatch_would(&client, &rt, &batch);
                    seen.lock().unwrap().extend(batch);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            problems
        })
    };
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": [10, 50], "bake": "3s",
             "gates": {"min-requests": 5, "max-error-rate": 0.1, "max-wait": "20s"}},
            {"stage": "promote"}
        ]}),
    );
    let o = rollout(
        &store,
        &[
            "start",
            "orders",
            "--plan",
            &plan,
            "--cloudwatch",
            &namespace,
        ],
    );
    shipping.store(false, Ordering::SeqCst);
    let problems = shipper.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("metrics from CloudWatch namespace {namespace}")));
    assert!(
        problems.is_empty(),
        "EMF lines break the specification: {problems:?}"
    );
    let seen = seen.lock().unwrap();
    let to_candidate = seen
        .iter()
        .filter(|l| l["Target"] == "8" && l["Traffic"] == "production" && l["Requests"] == 1)
        .count();
    assert!(
        to_candidate >= 10,
        "{to_candidate} EMF lines of the candidate"
    );
    assert!(
        seen.iter()
            .all(|l| l["Latency"].as_f64().is_some_and(|ms| ms > 0.0))
    );
    assert_eq!(live_route(&store)["versions"], json!({"stable": "8"}));
    drop(seen);
    // The emulator answers no percentile statistic (`p99` of Latency; AWS's
    // CloudWatch computes it from the EMF values), so a max-p99 gate read
    // from it has no data: it waits, then fails naming the gate.
    common::switchyard_cli(&store, &["set", "orders", "--version", "candidate=7"]);
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "500ms", "stages": [
            {"stage": "canary", "percent": 10, "bake": "1s",
             "gates": {"min-requests": 1, "max-p99": "1s", "max-wait": "1s"}}
        ]}),
    );
    let o = rollout(
        &store,
        &[
            "start",
            "orders",
            "--plan",
            &plan,
            "--cloudwatch",
            &namespace,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("gate max-p99 has no data"),
        "{}",
        stderr(&o)
    );
}

/// A loopback endpoint in front of the AWS API emulator that answers
/// every call with SSM's `ThrottlingException` (400, as AWS documents it
/// for the JSON protocol) while `throttling` is set, and forwards
/// otherwise: moto has no quota. Returns its URL and the calls it refused.
fn throttling_front(throttling: Arc<AtomicBool>) -> (String, Arc<AtomicU64>) {
    let emulator =
        std::env::var("AWS_ENDPOINT_URL").expect("the AWS API emulator (.ci/run starts it)");
    let refused = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counted = refused.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<axum::body::Body>();
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (client, emulator, throttling, refused) = (
                    client.clone(),
                    emulator.clone(),
                    throttling.clone(),
                    counted.clone(),
                );
                async move {
                    use axum::response::IntoResponse;
                    if throttling.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return (
                            http::StatusCode::BAD_REQUEST,
                            [
                                ("content-type", "application/x-amz-json-1.1"),
                                ("x-amzn-errortype", "ThrottlingException"),
                            ],
                            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                        )
                            .into_response();
                    }
                    let (mut parts, body) = req.into_parts();
                    let path = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    parts.uri = format!("{emulator}{path}").parse().unwrap();
                    match client.request(http::Request::from_parts(parts, body)).await {
                        Ok(res) => res.map(axum::body::Body::new).into_response(),
                        Err(e) => (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                    }
                }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, refused)
}

#[test]
fn a_store_that_throttles_mid_rollout_is_retried_and_no_step_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) = (upstream(json!({"v": 7})), upstream(json!({"v": 8})));
    let store = format!("ssm:/rollout-throttled-{}", common::unique_tag());
    common::publish_route(
        &store,
        "orders",
        switchyard_test_artifacts::STICKY_CANARY,
        &json!({"mode": "production", "versions": {"stable": "7", "candidate": "8"},
                "dispatch": {"type": "http", "urls": {"7": stable.url, "8": candidate.url}}})
        .to_string(),
        &[],
    );
    let mut fleet = Fleet::start(&store, &[]);
    fleet.drive_load(false);
    let throttling = Arc::new(AtomicBool::new(false));
    let (front, refused) = throttling_front(throttling.clone());
    let plan = plan_file(
        tmp.path(),
        json!({"check-every": "300ms", "stages": [
            {"stage": "canary", "percent": [10, 30], "bake": "3s", "gates": canary_gates()},
            {"stage": "promote"}
        ]}),
    );
    let runner = {
        let (store, plan, url, front) = (
            store.clone(),
            plan.clone(),
            fleet.prometheus.url.clone(),
            front.clone(),
        );
        std::thread::spawn(move || {
            Command::new(common::workspace_bin("switchyard"))
                .args([
                    "rollout",
                    "start",
                    "orders",
                    "--plan",
                    &plan,
                    "--prometheus",
                    &url,
                ])
                .env("SWITCHYARD_STORE", &store)
                .env("AWS_ENDPOINT_URL", &front)
                .output()
                .unwrap()
        })
    };
    // Mid-bake of the first step, the store throttles every call for 4 s.
    common::eventually(Duration::from_secs(60), "the first step baking", || {
        let s = rollout_status(&store);
        if s["step"] == "canary 10%" && s["baked-seconds"].as_f64() > Some(0.5) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    throttling.store(true, Ordering::SeqCst);
    common::eventually(Duration::from_secs(10), "calls refused", || {
        if refused.load(Ordering::SeqCst) >= 5 {
            Ok(())
        } else {
            Err("none yet".into())
        }
    });
    std::thread::sleep(Duration::from_secs(4)); // the throttled spell (load, not synchronisation)
    throttling.store(false, Ordering::SeqCst);
    let o = runner.join().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("throttling") && err.contains("retrying"),
        "{err}"
    );
    let notes: Vec<String> = history_notes(&store)
        .into_iter()
        .filter(|n| n.starts_with("switchyard rollout"))
        .collect();
    assert_eq!(notes.len(), 3, "every step written, once: {notes:?}");
    assert!(
        notes[0].contains("canary 10%")
            && notes[1].contains("canary 30%")
            && notes[2].contains("promote"),
        "{notes:?}"
    );
}
