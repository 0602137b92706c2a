//! The pipeline commands end to end, as CI/CD runs them: real `switchyard`
//! processes against a `dir:` store and against moto's SSM (`ssm:`).

use switchyard_test_support as common;

use std::process::{Command, Output};

use common::{Killed, aws, repo_root};
use switchyard_test_artifacts as art;

fn run(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_STORE", store)
        .output()
        .expect("run switchyard")
}

fn ok_json(store: &str, args: &[&str]) -> serde_json::Value {
    let o = run(store, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Publishes synthetic-header for `orders` with its shipped route config.
fn publish_orders(store: &str) {
    let route = repo_root().join("policies/synthetic-header/route.json");
    ok_json(
        store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            "--config",
            &route.display().to_string(),
        ],
    );
}

fn target(store: &str) -> String {
    let d = ok_json(
        store,
        &[
            "decide",
            "--store",
            store,
            "--function",
            "orders",
            "-H",
            "x-switchyard-synthetic: true",
        ],
    );
    d["target"].as_str().unwrap().to_owned()
}

/// publish -> status -> mode -> decide -> rollback -> decide -> history,
/// then a corrupted blob.
fn pipeline(store: &str, corrupt: impl Fn(&str)) {
    let route = repo_root()
        .join("policies/synthetic-header/route.json")
        .display()
        .to_string();
    let cases = repo_root()
        .join("policies/synthetic-header/cases.json")
        .display()
        .to_string();
    let p = ok_json(
        store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            "--config",
            &route,
            "--cases",
            &cases,
        ],
    );
    assert_eq!(p["version"], 1);
    let inspect = ok_json(store, &["policy", "inspect", art::SYNTHETIC_HEADER]);
    assert_eq!(p["policy"], inspect["digest"]);

    let status = ok_json(store, &["status", "orders"]);
    assert_eq!(status[0]["version"], 1);
    assert_eq!(status[0]["policy"], inspect["digest"]);
    assert_eq!(status[0]["mode"], "synthetic");
    assert!(status[0]["modified"].is_string());
    assert_eq!(target(store), "8");

    // What decided, and with what: the rule, the policy, the route version.
    let e = ok_json(
        store,
        &["explain", "orders", "-H", "x-switchyard-synthetic: true"],
    );
    assert_eq!(e["decision"]["target"], "8");
    assert_eq!(
        e["rule"],
        "synthetic mode and x-switchyard-synthetic is true"
    );
    assert_eq!(e["decision"]["policy"], p["policy"]);
    assert_eq!(e["decision"]["route-version"], 1);
    assert_eq!(e["route-config"]["versions"]["candidate"], "8");
    assert_eq!(e["request"]["headers"]["x-switchyard-synthetic"], "true");
    let o = run(store, &["explain", "orders"]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("orders version 1, policy sha256:")
            && said.contains("GET / -> 7 as production traffic, because: synthetic mode, no true x-switchyard-synthetic"),
        "{said}"
    );
    let d = ok_json(store, &["decide", "--store", store, "--function", "orders"]);
    assert_eq!(
        (&d["policy"], &d["route-version"]),
        (&p["policy"], &serde_json::json!(1))
    );

    assert_eq!(
        ok_json(
            store,
            &[
                "mode",
                "orders",
                "production",
                "--reason",
                "QA found a bug in 8"
            ]
        )["version"],
        2
    );
    assert_eq!(
        target(store),
        "7",
        "production mode sends even tagged requests to stable"
    );

    let r = ok_json(store, &["rollback", "orders"]);
    assert_eq!(
        (r["version"].as_u64(), r["restored"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(target(store), "8", "rolled back to synthetic mode");

    let history = ok_json(store, &["history", "orders"]);
    let modes: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["synthetic", "production", "synthetic"]);
    // Who wrote each version, with which command and why.
    let notes: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["note"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        notes,
        [
            "switchyard publish",
            "switchyard mode: QA found a bug in 8",
            "switchyard rollback"
        ]
    );
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["by"].as_str().is_some_and(|b| !b.is_empty())),
        "{history}"
    );

    let o = run(store, &["rollback", "orders", "--to", "42"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no version 42; versions: 1, 2, 3"));

    // A policy whose cases fail is refused before anything is written.
    let o = run(
        store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::STICKY_CANARY,
            "--config",
            &route,
            "--cases",
            &cases,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to publish"));
    let o = run(
        store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::BAD_WASI_IMPORT,
            "--config",
            &route,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wasi:filesystem/preopens"));
    assert_eq!(ok_json(store, &["status", "orders"])[0]["version"], 3);

    set_and_promote(store);

    // A pipeline pins the version it read: a write in between is refused,
    // naming both versions, not overwritten.
    let o = run(
        store,
        &["mode", "orders", "synthetic", "--expect-version", "3"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("orders is at version 7, not 3 (--expect-version)"),
        "{err}"
    );
    let pinned = ok_json(
        store,
        &["mode", "orders", "synthetic", "--expect-version", "7"],
    );
    assert_eq!(pinned["version"], 8);

    corrupt(p["policy"].as_str().unwrap());
    let o = run(store, &["decide", "--store", store, "--function", "orders"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(p["policy"].as_str().unwrap()), "{err}");
    assert!(
        err.contains("digest mismatch") || err.contains("corrupt"),
        "{err}"
    );

    // Publishing the policy again finds the stored blob corrupt and
    // stores it again, instead of "already in".
    let o = run(
        store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            "--config",
            &route,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("policy {} in ", p["policy"].as_str().unwrap()))
            && err.contains("repaired: stored it again")
            && !err.contains("already in"),
        "{err}"
    );
    assert_eq!(target(store), "8", "the repaired policy decides");
    let status = ok_json(store, &["status", "orders"]);
    assert_eq!(status[0]["version"], 9, "{status}");
    assert!(status[0].get("error").is_none(), "{status}");
    // Intact now: said to be there, not stored again.
    let o = run(
        store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            "--config",
            &route,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("already in"), "{err}");
}

/// From version 3 (synthetic, stable 7, candidate 8): a pipeline points
/// the candidate at a new version and the canary at 25 % without editing
/// JSON, then promotes it.
fn set_and_promote(store: &str) {
    let set = [
        "set",
        "orders",
        "--version",
        "candidate=9",
        "--flag",
        "canary-percent=25",
        "--context",
        "9:QUEUE_URL=https://sqs.example/q9",
    ];
    let s = ok_json(store, &set);
    assert_eq!(s["version"], 4);
    assert_eq!(
        s["changed"],
        serde_json::json!([
            "flags.canary-percent",
            "versions.candidate",
            "context.9.QUEUE_URL"
        ])
    );
    assert_eq!(
        s["versions"],
        serde_json::json!({"stable": "7", "candidate": "9"})
    );
    assert_eq!(s["flags"]["canary-percent"], "25");
    assert_eq!(s["context-keys"]["9"], serde_json::json!(["QUEUE_URL"]));
    assert!(
        !s.to_string().contains("sqs.example/q9"),
        "context values are not printed: {s}"
    );
    assert_eq!(
        target(store),
        "9",
        "tagged requests reach the new candidate"
    );
    let again = ok_json(store, &set);
    assert_eq!(
        (&again["version"], &again["changed"]),
        (&serde_json::json!(4), &serde_json::json!([])),
        "the same settings again write nothing"
    );
    for (args, says) in [
        (
            &["set", "orders", "--version", "candidate=not ok"][..],
            "is not a qualifier",
        ),
        (
            &["set", "orders", "--flag", "no-equals"][..],
            "is not of the form NAME=VALUE",
        ),
        (
            &["set", "orders", "--context", "9=x"][..],
            "is not of the form QUALIFIER:KEY=VALUE",
        ),
        (
            &["set", "orders", "--unset-version", "stable"][..],
            "every route needs a stable version",
        ),
        (&["set", "orders"][..], "nothing to set"),
    ] {
        let o = run(store, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }

    let p = ok_json(store, &["promote", "orders"]);
    assert_eq!(
        (
            &p["version"],
            &p["stable"],
            &p["previous-stable"],
            &p["mode"],
            &p["candidate"]
        ),
        (
            &serde_json::json!(5),
            &serde_json::json!("9"),
            &serde_json::json!("7"),
            &serde_json::json!("production"),
            &serde_json::Value::Null
        )
    );
    let status = ok_json(store, &["status", "orders"]);
    assert_eq!(status[0]["versions"], serde_json::json!({"stable": "9"}));
    assert_eq!(status[0]["mode"], "production");
    assert_eq!(target(store), "9", "the promoted version serves everything");
    let o = run(store, &["promote", "orders"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("orders has no candidate to promote (version 5 has stable=9)")
            && err.contains("switchyard set orders --version candidate=<qualifier>"),
        "{err}"
    );

    ok_json(store, &["set", "orders", "--version", "candidate=10"]);
    let p = ok_json(store, &["promote", "orders", "--keep-candidate"]);
    assert_eq!(
        (&p["version"], &p["stable"], &p["candidate"]),
        (
            &serde_json::json!(7),
            &serde_json::json!("10"),
            &serde_json::json!("10")
        )
    );
    let history = ok_json(store, &["history", "orders"]);
    let stables: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["versions"]["stable"].as_str().unwrap())
        .collect();
    assert_eq!(
        stables,
        ["7", "7", "7", "7", "9", "9", "10"],
        "each step is one version in history"
    );
}

#[test]
fn pipeline_on_a_dir_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().display());
    pipeline(&store, |digest| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let path = tmp.path().join(format!("policies/sha256-{hex}.wasm"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(path, bytes).unwrap();
    });
}

#[test]
fn pipeline_on_an_ssm_store() {
    aws::endpoint();
    let prefix = format!("/cli{}", std::process::id());
    let store = format!("ssm:{prefix}");
    pipeline(&store, |digest| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            aws_sdk_ssm::Client::new(&config)
                .put_parameter()
                .name(format!("{prefix}/policies/sha256-{hex}/0000"))
                .value("Z2FyYmFnZQ==")
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .unwrap();
        });
    });
}

/// A fresh Cloud Map namespace in the emulator, made as an operator would
/// (the store creates the services it needs in it, not the namespace), and
/// the `cloudmap:` store on it with blobs under an SSM prefix.
fn cloudmap_store(tag: &str) -> (String, String) {
    aws::endpoint();
    let id = format!("{}-{tag}", std::process::id());
    boto3(&format!(
        "boto3.client('servicediscovery').create_http_namespace(Name='sy-{id}')"
    ));
    let prefix = format!("/cm{}", id.replace('-', "_"));
    (format!("cloudmap:sy-{id}?blobs=ssm:{prefix}"), prefix)
}

#[test]
fn pipeline_on_an_ssm_store_with_a_snapshot() {
    let (store, prefix) = snapshot_store("pipeline");
    pipeline(&store, |digest| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        boto3(&format!(
            "boto3.client('ssm').put_parameter(Name='{prefix}/policies/sha256-{hex}/0000', Value='Z2FyYmFnZQ==', Type='String', Overwrite=True)"
        ));
    });
}

#[test]
fn pipeline_on_a_cloudmap_store() {
    let (store, prefix) = cloudmap_store("pipeline");
    pipeline(&store, |digest| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        boto3(&format!(
            "boto3.client('ssm').put_parameter(Name='{prefix}/policies/sha256-{hex}/0000', Value='Z2FyYmFnZQ==', Type='String', Overwrite=True)"
        ));
    });
}

/// A namespace that does not exist is a clear error that says how to make
/// it; a function name Cloud Map cannot take as a service is refused.
#[test]
fn a_missing_cloudmap_namespace_says_how_to_create_it() {
    aws::endpoint();
    let store = format!(
        "cloudmap:sy-missing-{}?blobs=ssm:/cm-missing",
        std::process::id()
    );
    let o = run(&store, &["status", "orders"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not exist; create it once with `aws servicediscovery create-http-namespace --name sy-missing-"),
        "{err}"
    );
    let o = run("cloudmap:sy-x", &["status"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("use cloudmap:<namespace>?blobs=ssm:<prefix>"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn debug_logs_keep_the_access_key_id_out() {
    aws::endpoint();
    let key = "AKIASWITCHYARDLOGTEST";
    let status = |filter: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["status", "--store", "ssm:/switchyard-log-test"])
            .env("AWS_ACCESS_KEY_ID", key)
            .env("SWITCHYARD_LOG", filter)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // The SDK's own debug lines carry it (so this test can fail)...
    let sdk = status(
        "debug,aws_smithy_runtime=debug,aws_sigv4=debug,aws_config=debug,aws_smithy_runtime_api=debug",
    );
    assert!(
        sdk.contains(key),
        "the SDK no longer logs the key id at debug; this test needs a new probe"
    );
    // ...and SWITCHYARD_LOG=debug, as the README suggests for policy
    // logs, does not.
    let ours = status("debug");
    assert!(!ours.contains(key), "the access key id was logged:\n{ours}");
}

#[test]
fn a_corrupt_version_is_listed_skipped_and_rolled_back_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    publish_orders(&store);
    ok_json(&store, &["mode", "orders", "production"]);
    // A truncated third version, as a crashed writer or a bad hand edit
    // leaves it.
    std::fs::write(
        tmp.path().join("store/functions/orders/3.json"),
        r#"{"mode":"synth"#,
    )
    .unwrap();
    let history = ok_json(&store, &["history", "orders"]);
    assert_eq!(history[1]["version"], 2, "{history}");
    assert_eq!(
        (&history[2]["version"], &history[2]["kind"]),
        (&serde_json::json!(3), &serde_json::json!("corrupt")),
        "{history}"
    );
    let status = ok_json(&store, &["status"]);
    assert_eq!(status[0]["kind"], "corrupt", "{status}");
    // Rollback from an unreadable live version restores the newest
    // readable one.
    let out = ok_json(&store, &["rollback", "orders"]);
    assert_eq!(
        (&out["version"], &out["restored"]),
        (&serde_json::json!(4), &serde_json::json!(2))
    );
    let status = ok_json(&store, &["status", "orders"]);
    assert_eq!(
        (&status[0]["version"], &status[0]["mode"]),
        (&serde_json::json!(4), &serde_json::json!("production"))
    );
}

#[test]
fn store_errors_are_clear() {
    let o = run("nowhere:/x", &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use dir:<path>"));
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().display());
    let o = run(&store, &["mode", "orders", "synthetic"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("orders has no route config"));
    let o = run(&store, &["mode", "orders", "sideways"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects an unknown mode");
}

#[test]
fn rollback_to_an_older_version_makes_its_content_live() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let publish = |policy: &str, config: &str| {
        let path = tmp.path().join("route.json");
        std::fs::write(&path, config).unwrap();
        ok_json(
            &store,
            &[
                "publish",
                "--function",
                "orders",
                "--policy",
                policy,
                "--config",
                &path.display().to_string(),
            ],
        )
    };
    // Three versions that differ in policy, mode and versions, so the one
    // restored is known by its content.
    let v1 = publish(
        art::SYNTHETIC_HEADER,
        r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#,
    );
    let v2 = publish(
        art::STICKY_CANARY,
        r#"{"mode":"synthetic","versions":{"stable":"5","candidate":"6"},"flags":{"canary-percent":"0"}}"#,
    );
    let v3 = publish(
        art::STICKY_CANARY,
        r#"{"mode":"production","versions":{"stable":"9"}}"#,
    );
    assert_eq!(
        [&v1, &v2, &v3].map(|p| p["version"].as_u64()),
        [Some(1), Some(2), Some(3)]
    );
    assert_ne!(v1["policy"], v3["policy"]);
    assert_eq!(target(&store), "9");

    let r = ok_json(&store, &["rollback", "orders", "--to", "1"]);
    assert_eq!(
        (r["version"].as_u64(), r["restored"].as_u64()),
        (Some(4), Some(1)),
        "{r}"
    );
    // Live: version 4, with version 1's policy, mode and versions.
    let status = ok_json(&store, &["status", "orders"]);
    let live = &status[0];
    assert_eq!(live["version"], 4, "{status}");
    assert_eq!(live["policy"], v1["policy"], "{status}");
    assert_eq!(live["mode"], "synthetic", "{status}");
    assert_eq!(
        live["versions"],
        serde_json::json!({"stable": "7", "candidate": "8"}),
        "{status}"
    );
    assert_eq!(target(&store), "8", "version 1's policy decides again");
    let history = ok_json(&store, &["history", "orders"]);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 4, "{history:?}");
    for field in ["policy", "mode", "versions"] {
        assert_eq!(history[3][field], history[0][field], "{field}: {history:?}");
    }
    assert_eq!(history[3]["note"], "switchyard rollback");
}

/// `curl -s` `args`; stdout as text (empty when curl fails).
fn curl(args: &[&str]) -> String {
    let o = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_running_proxy_sees_a_mode_flip_within_one_poll() {
    let tmp = tempfile::tempdir().unwrap();
    mode_flip_within_one_poll(&format!("dir:{}", tmp.path().join("store").display()));
}

#[test]
fn a_running_proxy_on_cloudmap_sees_a_mode_flip_within_one_poll() {
    mode_flip_within_one_poll(&cloudmap_store("flip").0);
}

/// An `ssm:` store in the emulator whose hosts read a fleet snapshot in
/// the emulator's S3 (a fresh bucket).
fn snapshot_store(tag: &str) -> (String, String) {
    aws::endpoint();
    let id = format!("{}-{tag}", std::process::id());
    boto3(&format!(
        "boto3.client('s3').create_bucket(Bucket='sy-snap-{id}')"
    ));
    let prefix = format!("/snap{}", id.replace('-', "_"));
    (
        format!("ssm:{prefix}?snapshot=s3://sy-snap-{id}/switchyard/fleet.snap"),
        prefix,
    )
}

#[test]
fn a_running_proxy_on_a_snapshot_sees_a_mode_flip_within_one_poll_without_polling_the_store() {
    let (store, _) = snapshot_store("flip");
    let (_serve, admin) = mode_flip_within_one_poll(&store);
    let metrics = curl(&[&format!("http://{admin}/metrics")]);
    let count = |outcome: &str| -> f64 {
        let series = format!("switchyard_snapshot_reads_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    // Polls of an unchanged snapshot are 304s; the flip was read as a
    // changed one; nothing was refused.
    assert!(count("unchanged") > 0.0, "{metrics}");
    assert!(count("changed") >= 2.0, "{metrics}");
    for refused in ["corrupt", "foreign", "older", "missing", "failed"] {
        assert_eq!(count(refused), 0.0, "{refused}: {metrics}");
    }
}

#[test]
fn fleet_says_when_the_snapshot_is_behind_the_store_and_sync_repairs_it() {
    let (store, prefix) = snapshot_store("sync");
    publish_orders(&store);
    let fleet = ok_json(&store, &["fleet"]);
    assert_eq!(fleet["snapshot"]["present"], true, "{fleet}");
    assert_eq!(fleet["snapshot"]["functions"], 1, "{fleet}");
    assert_eq!(
        fleet["snapshot"]["behind"],
        serde_json::json!([]),
        "{fleet}"
    );
    // A writer that knows nothing of the snapshot (the plain ssm: URI).
    ok_json(&format!("ssm:{prefix}"), &["mode", "orders", "production"]);
    let o = run(&store, &["fleet"]);
    assert!(o.status.success());
    let fleet: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        fleet["snapshot"]["behind"][0]["function"], "orders",
        "{fleet}"
    );
    assert_eq!(fleet["snapshot"]["behind"][0]["in-store"], 2, "{fleet}");
    assert_eq!(fleet["snapshot"]["behind"][0]["in-snapshot"], 1, "{fleet}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--sync-snapshot"), "{stderr}");
    let synced = ok_json(&store, &["fleet", "--sync-snapshot"]);
    assert_eq!(
        synced["snapshot"]["behind"],
        serde_json::json!([]),
        "{synced}"
    );
    // A store URI without a snapshot is told how to name one.
    let o = run(&format!("ssm:{prefix}"), &["fleet", "--sync-snapshot"]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("snapshot=s3://"), "{stderr}");
}

/// Runs a proxy on `store` polling every 500 ms, flips `orders` to
/// production and checks the proxy follows within one poll; returns the
/// proxy, still running, and its admin listener's address.
fn mode_flip_within_one_poll(store: &str) -> (Killed, String) {
    use std::time::{Duration, Instant};
    let store = store.to_owned();
    publish_orders(&store);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{admin_port}");
    let poll = Duration::from_millis(500);
    let serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--store", &store, "--listen", &listen])
            .args(["--admin-listen", &admin])
            .args(["--poll-interval", &format!("{}ms", poll.as_millis())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{admin}");
    let decide = || {
        let out = curl(&[
            "-X",
            "POST",
            &format!("{base}/v1/decide"),
            "-d",
            r#"{"function":"orders","headers":{"x-switchyard-synthetic":"true"}}"#,
        ]);
        serde_json::from_str::<serde_json::Value>(&out)
            .map(|d| d["target"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    common::wait_until("the proxy did not come up", || !(decide() != "8"));
    ok_json(&store, &["mode", "orders", "production"]);
    let flipped = Instant::now();
    // One poll interval (its jitter is at most a tenth of it), plus a
    // second for the poll, the swap and a loaded 2-core CI machine.
    let within = poll + Duration::from_secs(1);
    while decide() != "7" {
        assert!(
            flipped.elapsed() < within,
            "still routing to the candidate {:?} after the flip (allowed: {within:?})",
            flipped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    (serve, admin)
}

#[test]
fn synthetic_decision_lines_log_under_their_own_target() {
    let upstream = common::echo_head_upstream();
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    common::publish_route(
        &store,
        "orders",
        art::SYNTHETIC_HEADER,
        &format!(
            r#"{{"mode":"synthetic","versions":{{"stable":"7","candidate":"8"}},
                "dispatch":{{"type":"http","urls":{{"7":"{upstream}","8":"{upstream}"}}}}}}"#
        ),
        &[],
    );
    // The default filter (decision lines are info under switchyard).
    let host = common::serve(&store, &[], &[]);
    let url = host.url("/orders/x");
    common::wait_until("the proxy did not come up", || {
        curl(&["-H", "x-switchyard-synthetic: true", &url]).contains("get /x")
    });
    assert!(curl(&[&url]).contains("get /x"));
    // A decision line: "... INFO <target>: function=orders ...".
    let lines = |target: &str| -> Vec<String> {
        host.log()
            .lines()
            .filter(|l| l.contains(&format!(" {target}: ")))
            .map(str::to_owned)
            .collect()
    };
    common::wait_until("no production decision line", || {
        !lines("switchyard::decision").is_empty()
    });
    let synthetic = lines("switchyard::decision::synthetic");
    let production = lines("switchyard::decision");
    assert!(!synthetic.is_empty(), "{}", host.log());
    for line in &synthetic {
        assert!(
            line.contains("target=8") && line.contains(r#"traffic="synthetic""#),
            "{line}"
        );
    }
    for line in &production {
        assert!(
            line.contains("target=7") && line.contains(r#"traffic="production""#),
            "{line}"
        );
    }
}

/// `decide` falls back to `SWITCHYARD_STORE` when given neither
/// `--policy/--config` nor `--store`, and an exported store does not
/// override `--policy/--config`.
#[test]
fn decide_reads_the_store_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    publish_orders(&store);
    let tagged = ["--function", "orders", "-H", "x-switchyard-synthetic: true"];
    let from_env = ok_json(&store, &[&["decide"][..], &tagged].concat());
    assert_eq!(from_env["target"], "8", "{from_env}");
    // Files win over the exported store: this config has no candidate.
    let stable_only = tmp.path().join("stable-only.json");
    std::fs::write(
        &stable_only,
        r#"{"mode":"production","versions":{"stable":"3"}}"#,
    )
    .unwrap();
    let from_files = ok_json(
        &store,
        &[
            &["decide", "--policy", art::SYNTHETIC_HEADER, "--config"][..],
            &[stable_only.to_str().unwrap()],
            &tagged,
        ]
        .concat(),
    );
    assert_eq!(from_files["target"], "3", "{from_files}");
}

/// `replay` decides recorded requests with the live policy and a candidate
/// policy and gates on how many decisions change.
#[test]
fn replay_gates_a_policy_change_on_recorded_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    publish_orders(&store);
    // 10 requests: 4 tagged synthetic (3 of them from a QA tenant), 6 not.
    let mut lines = Vec::new();
    for i in 0..10 {
        let mut headers = serde_json::Map::new();
        if i < 4 {
            headers.insert("x-switchyard-synthetic".into(), "true".into());
        }
        if i < 3 {
            headers.insert("x-tenant".into(), "acme".into());
        }
        lines.push(
            serde_json::json!({"function": "orders", "path": format!("/o/{i}"), "headers": headers})
                .to_string(),
        );
    }
    let path = tmp.path().join("requests.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let requests = path.display().to_string();
    let config = tmp.path().join("tenants.json");
    std::fs::write(
        &config,
        r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"flags":{"qa-tenants":"acme"}}"#,
    )
    .unwrap();
    let config = config.display().to_string();
    // `switchyard replay` of these requests to `to`, with `more` arguments.
    let replay = |to: &'static str, more: &[&str]| -> Vec<String> {
        ["replay", "--requests", requests.as_str(), "--to", to]
            .iter()
            .chain(more)
            .map(|a| a.to_string())
            .collect()
    };
    let run_replay =
        |args: Vec<String>| run(&store, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let ok_replay = |args: Vec<String>| {
        let o = run_replay(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };

    // The same policy: nothing changes, the strictest gate passes.
    let same = ok_replay(replay(art::SYNTHETIC_HEADER, &["--max-changed", "0"]));
    assert_eq!(
        (&same["requests"], &same["changed"], &same["passed"]),
        (
            &serde_json::json!(10),
            &serde_json::json!(0),
            &serde_json::json!(true)
        )
    );

    // tenant-allowlist sends the tagged request without a QA tenant to
    // stable: one of ten changes target and traffic.
    let to_tenants = |gate: &str| {
        replay(
            art::TENANT_ALLOWLIST,
            &["--config", &config, "--max-changed", gate],
        )
    };
    let changed = ok_replay(to_tenants("10%"));
    assert_eq!(
        (&changed["changed"], &changed["target"], &changed["traffic"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        )
    );
    let example = &changed["functions"]["orders"]["examples"][0];
    assert_eq!(example["request"]["path"], "/o/3");
    assert_eq!(
        (&example["from"]["target"], &example["to"]["target"]),
        (&serde_json::json!("8"), &serde_json::json!("7"))
    );
    assert_eq!(example["to"]["reason"], "not a QA tenant");
    let o = run_replay(to_tenants("5%"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 of 10 decisions change (10.0 %)")
            && err.contains("more than --max-changed 5%"),
        "{err}"
    );

    // Against a store version, which must name its function.
    ok_json(&store, &["mode", "orders", "production"]);
    let from_v1 = ok_replay(replay(
        art::SYNTHETIC_HEADER,
        &["--from", "1", "--function", "orders"],
    ));
    assert_eq!(
        from_v1["changed"], 0,
        "version 1 decided with its own config"
    );
    assert_eq!(ok_replay(replay(art::SYNTHETIC_HEADER, &[]))["changed"], 0);
    let o = run_replay(replay(art::SYNTHETIC_HEADER, &["--from", "1"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --function orders"));
}

/// Pipelines writing the same function at once: each write is conditional
/// on the version its command read, so no change is lost; the writers that
/// lost a race are told to retry.
fn racing_pipelines(store: &str) {
    publish_orders(store);
    // One after another, every write goes in.
    for i in 0..4 {
        ok_json(
            store,
            &["set", "orders", "--flag", &format!("pipeline-{i}=done")],
        );
    }
    // At once: the racers that read a version another one replaced first
    // are refused, and said why.
    let spawned: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(["set", "orders", "--flag", &format!("racer-{i}=done")])
                .env("SWITCHYARD_STORE", store)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut won = Vec::new();
    for (i, child) in spawned.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            won.push(i);
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("changed while this was being written")
                    || err.contains("is being written by another writer"),
                "racer {i} failed otherwise: {err}"
            );
        }
    }
    assert!(!won.is_empty(), "someone wins");
    let status = ok_json(store, &["status", "orders"]);
    let live = ok_json(store, &["explain", "orders"]);
    let flags = &live["route-config"]["flags"];
    for i in 0..4 {
        assert_eq!(flags[format!("pipeline-{i}")], "done", "{flags}");
        let present = flags.get(format!("racer-{i}")).is_some();
        assert_eq!(
            present,
            won.contains(&i),
            "racer {i}: won {won:?}, flags {flags}"
        );
    }
    assert_eq!(
        status[0]["version"],
        1 + 4 + won.len() as u64,
        "one version per write that won"
    );
}

#[test]
fn racing_pipelines_on_a_dir_store() {
    let tmp = tempfile::tempdir().unwrap();
    racing_pipelines(&format!("dir:{}", tmp.path().display()));
}

#[test]
fn racing_pipelines_on_an_ssm_store() {
    aws::endpoint();
    racing_pipelines(&format!("ssm:/race{}", std::process::id()));
}

/// `switchyard serve` on `store` with `--poll-interval 200ms` and extra
/// environment; returns it and its admin listener's URL.
fn serve_admin(store: &str, env: &[(&str, &str)]) -> (Killed, String) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, admin) = (free(), free());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    serve
        .args([
            "serve",
            "--store",
            store,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--poll-interval", "200ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        serve.env(k, v);
    }
    (
        Killed(serve.spawn().unwrap()),
        format!("http://127.0.0.1:{admin}"),
    )
}

/// A fleet upgrading one host at a time: a config that needs a newer
/// route-config schema is refused at publish unless the operator says the
/// fleet runs hosts that read it; then a host that reads only the older
/// schema (the same binary told so) keeps serving its version and counts
/// the newer one, while an upgraded host serves it.
#[test]
fn an_older_host_keeps_its_version_while_a_newer_one_serves_the_new_schema() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let write = |name: &str, auth: &str| {
        let path = tmp.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"{{"mode":"synthetic","versions":{{"stable":"7","candidate":"8"}},
                    "dispatch":{{"type":"http","urls":{{"7":"http://127.0.0.1:9","8":"http://127.0.0.1:9"}}{auth}}}}}"#
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let publish = |config: &str, more: &[&str]| {
        run(
            &store,
            &[
                &[
                    "publish",
                    "--function",
                    "orders",
                    "--policy",
                    art::SYNTHETIC_HEADER,
                    "--config",
                    config,
                ][..],
                more,
            ]
            .concat(),
        )
    };
    let plain = write("plain.json", "");
    let keyed = write(
        "keyed.json",
        r#","auth":{"kind":"header","name":"x-functions-key","value":"k"}"#,
    );
    // A fleet that still runs hosts of 0.1.0 (else the first publish to
    // this new store records this CLI's release as the minimum).
    ok_json(&store, &["fleet", "--min-host-version", "0.1.0"]);
    assert!(publish(&plain, &[]).status.success());

    let (_old, old) = serve_admin(&store, &[("SWITCHYARD_ROUTE_SCHEMA", "1")]);
    let (_new, new) = serve_admin(&store, &[]);
    let version = |admin: &str| {
        let out = curl(&[
            "-X",
            "POST",
            &format!("{admin}/v1/decide"),
            "-d",
            r#"{"function":"orders"}"#,
        ]);
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|d| d["route-version"].as_u64())
    };
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("both hosts serve version 1", &|| {
        version(&old) == Some(1) && version(&new) == Some(1)
    });

    // The auth block needs hosts of 0.2.0: refused until the operator says so.
    let o = publish(&keyed, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "needs hosts of switchyard 0.2.0 or later (route-config schema 2: a dispatch auth block)"
        ) && err.contains("the fleet's minimum host version is 0.1.0"),
        "{err}"
    );
    let fleet = ok_json(&store, &["fleet"]);
    assert_eq!(
        (&fleet["min-host-version"], &fleet["set"]),
        (&serde_json::json!("0.1.0"), &serde_json::json!(true))
    );
    let o = run(&store, &["fleet", "--min-host-version", "0.2.x"]);
    assert_eq!(o.status.code(), Some(1), "not a release");
    let fleet = ok_json(&store, &["fleet", "--min-host-version", "0.2.0"]);
    assert_eq!(fleet["min-host-version"], "0.2.0");
    let o = publish(&keyed, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stored = std::fs::read_to_string(tmp.path().join("store/functions/orders/2.json")).unwrap();
    assert!(
        stored.contains(r#""schema": 2"#) || stored.contains(r#""schema":2"#),
        "{stored}"
    );

    until("the upgraded host serves version 2", &|| {
        version(&new) == Some(2)
    });
    let metrics = || curl(&[&format!("{old}/metrics")]);
    until("the older host counts the version it cannot read", &|| {
        metrics().contains(r#"switchyard_route_schema_too_new_total{function="orders"}"#)
    });
    assert_eq!(
        version(&old),
        Some(1),
        "the older host keeps serving version 1"
    );
}

/// A config that uses only a guard, a fallback or a shadow is refused for
/// older hosts naming that feature (not another of its schema), and the
/// first publish to a new store records this CLI's release as the fleet
/// minimum, so it may use what this release has, and says so; a store
/// that already has routes keeps 0.1.0 until the operator says otherwise.
#[test]
fn publish_names_the_newer_feature_and_a_new_store_starts_at_this_release() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, extra: &str| {
        let path = tmp.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}}{extra}}}"#
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let publish = |store: &str, config: &str| {
        run(
            store,
            &[
                "publish",
                "--function",
                "orders",
                "--policy",
                art::STICKY_CANARY,
                "--config",
                config,
            ],
        )
    };
    let plain = write("plain.json", "");
    let configs = [
        (
            "guard",
            write("guard.json", r#","guard":{"max-error-rate":0.5}"#),
        ),
        (
            "fallback",
            write("fallback.json", r#","fallback":"stable""#),
        ),
        (
            "shadow",
            write("shadow.json", r#","shadow":{"ignore":["$.id"]}"#),
        ),
    ];

    // An older fleet, recorded: each is refused for what it uses.
    let old = format!("dir:{}", tmp.path().join("old").display());
    ok_json(&old, &["fleet", "--min-host-version", "0.1.0"]);
    for (feature, config) in &configs {
        let o = publish(&old, config);
        assert_eq!(o.status.code(), Some(1), "{feature}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "needs hosts of switchyard 0.3.0 or later (route-config schema 3: {feature})"
            )),
            "{feature}: {err}"
        );
        assert!(!err.contains("secret references"), "{feature}: {err}");
    }

    // A new store: the first publish sets the minimum to this release.
    for (feature, config) in &configs {
        let new = format!(
            "dir:{}",
            tmp.path().join(format!("new-{feature}")).display()
        );
        let o = publish(&new, config);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{feature}: {err}");
        assert!(
            err.contains(&format!(
                "no route yet, so its fleet minimum host version is now {}",
                env!("CARGO_PKG_VERSION")
            )),
            "{feature}: {err}"
        );
        let fleet = ok_json(&new, &["fleet"]);
        assert_eq!(
            (&fleet["min-host-version"], &fleet["set"]),
            (
                &serde_json::json!(env!("CARGO_PKG_VERSION")),
                &serde_json::json!(true)
            )
        );
        // Said once: the next publish finds the setting.
        let o = publish(&new, config);
        assert!(o.status.success());
        assert!(!String::from_utf8_lossy(&o.stderr).contains("no route yet"));
    }

    // A store that has routes but no recorded minimum (written before this
    // release): 0.1.0, nothing recorded.
    let used = tmp.path().join("used");
    let used_store = format!("dir:{}", used.display());
    ok_json(&used_store, &["fleet", "--min-host-version", "0.1.0"]);
    assert!(publish(&used_store, &plain).status.success());
    std::fs::remove_file(used.join("settings/min-host-version")).unwrap();
    let fleet = ok_json(&used_store, &["fleet"]);
    assert_eq!(fleet["set"], false, "the setting was removed: {fleet}");
    let o = publish(&used_store, &configs[0].1);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the fleet's minimum host version is 0.1.0"),
        "{err}"
    );
    assert_eq!(ok_json(&used_store, &["fleet"])["set"], false);
}

/// Signed policies end to end: `publish --sign-key` and `policy sign` with
/// keys OpenSSL made, a `serve --trust-key` host that loads the signed
/// version and refuses an unsigned one, one signed by a key it does not
/// trust, and one whose stored signature was tampered with, serving the
/// signed version throughout; `status` says which is which.
#[test]
fn a_host_with_a_trust_key_serves_only_signed_policies() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = format!("dir:{}", root.display());
    let (ours, ours_pub) = common::ed25519_keys(tmp.path(), "ours");
    let (theirs, _) = common::ed25519_keys(tmp.path(), "theirs");
    let (ours, ours_pub, theirs) = (
        ours.display().to_string(),
        ours_pub.display().to_string(),
        theirs.display().to_string(),
    );
    let route = repo_root().join("policies/synthetic-header/route.json");
    let route = route.display().to_string();
    let publish = |policy: &str, more: &[&str]| {
        let args = [
            &[
                "publish",
                "--function",
                "orders",
                "--policy",
                policy,
                "--config",
                &route,
            ][..],
            more,
        ]
        .concat();
        ok_json(&store, &args)
    };
    let v1 = publish(art::SYNTHETIC_HEADER, &["--sign-key", &ours]);
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["signed-by"].as_str().unwrap().len(), 16);

    let (_host, admin) = serve_admin(&store, &[("SWITCHYARD_TRUST_KEYS", &ours_pub)]);
    let version = || {
        let out = curl(&[
            "-X",
            "POST",
            &format!("{admin}/v1/decide"),
            "-d",
            r#"{"function":"orders"}"#,
        ]);
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|d| d["route-version"].as_u64())
    };
    let refusals = |why: &str| {
        let metrics = curl(&[&format!("{admin}/metrics")]);
        let line = format!("switchyard_policy_signature_refused_total{{why=\"{why}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("the signed version goes live", &|| version() == Some(1));
    let status = |trust: bool| {
        let mut args = vec!["status", "orders"];
        if trust {
            args.extend(["--trust-key", &ours_pub]);
        }
        ok_json(&store, &args)[0]["signature"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        status(true).starts_with("verified: signed by trusted key"),
        "{}",
        status(true)
    );

    // Unsigned: refused, counted; version 1 keeps serving.
    publish(art::STICKY_CANARY, &[]);
    until("the unsigned version is refused", &|| {
        refusals("unsigned") >= 1
    });
    assert_eq!(version(), Some(1));
    assert_eq!(status(false), "unsigned");
    assert!(status(true).contains("is not signed"), "{}", status(true));

    // Signed by a key the host does not trust.
    publish(art::STICKY_CANARY_0_1_0, &["--sign-key", &theirs]);
    until("the version signed by another key is refused", &|| {
        refusals("untrusted-signer") >= 1
    });
    assert_eq!(version(), Some(1));

    // A signature by the trusted key, tampered with in the store (one
    // character of the signature changed, as an attacker who can write
    // the store but not sign would).
    let signed = ok_json(
        &store,
        &[
            "policy",
            "sign",
            "--key",
            &ours,
            art::SYNTHETIC_HEADER_0_1_0,
        ],
    );
    let digest = signed["policy"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let mut sig = signed["signature"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    let dir = root.join(format!("signatures/sha256-{digest}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{}.json", signed["key"].as_str().unwrap())),
        serde_json::json!({"algorithm": "ed25519", "key": signed["key"], "signature": sig})
            .to_string(),
    )
    .unwrap();
    publish(art::SYNTHETIC_HEADER_0_1_0, &[]);
    until("the tampered version is refused", &|| {
        refusals("bad-signature") >= 1
    });
    assert_eq!(version(), Some(1));

    // Signing an already-stored policy lets the next version naming it in.
    let o = run(
        &store,
        &[
            "policy",
            "sign",
            "--key",
            &ours,
            "--store",
            &store,
            art::STICKY_CANARY,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v5 = publish(art::STICKY_CANARY, &[]);
    let v5 = v5["version"].as_u64().unwrap();
    until("the policy signed later goes live", &|| {
        version() == Some(v5)
    });
}

/// Runs a Python snippet with boto3 against the emulator (a real AWS
/// client, as an operator's script would be).
fn boto3(script: &str) {
    aws::endpoint();
    let o = Command::new("python3")
        .args(["-c", &format!("import boto3\n{script}")])
        .env(
            "AWS_DEFAULT_REGION",
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        )
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Secret references end to end on an SSM store in the emulator: the
/// candidate's context names an SSM SecureString and a Secrets Manager
/// secret; `switchyard serve` reads them and hands the values to the
/// target, while `status`, `history`, `decide`, the decide API and the
/// host's own log show only the references. A refresh that fails keeps the
/// last good value and is counted; a secret that cannot be read at all is a
/// 502 naming the key and the reference.
#[test]
fn a_secret_reference_reaches_the_target_and_is_never_shown() {
    use std::time::{Duration, Instant};
    let id = format!("{}-{}", std::process::id(), line!());
    let store = format!("ssm:/sy-secrets-{id}");
    let (password, token) = (format!("hunter2-{id}"), format!("tok-{id}"));
    let parameter = format!("/sy-secrets-{id}-app/db-password");
    let secret = format!("sy-secrets-{id}-api-token");
    boto3(&format!(
        "boto3.client('ssm').put_parameter(Name='{parameter}', Value='{password}', Type='SecureString')\n\
         boto3.client('secretsmanager').create_secret(Name='{secret}', SecretString='{token}')"
    ));
    let upstream = common::echo_head_upstream();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("route.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"mode":"synthetic","versions":{{"stable":"7","candidate":"8"}},
                "context":{{"8":{{"DB_PASSWORD":{{"$ssm":"{parameter}"}},"API_TOKEN":{{"$secretsmanager":"{secret}"}},"QUEUE":"q8"}},
                            "7":{{"DB_PASSWORD":"literal-7"}}}},
                "dispatch":{{"type":"http","urls":{{"7":"{upstream}","8":"{upstream}"}}}}}}"#
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let publish = || {
        run(
            &store,
            &[
                "publish",
                "--function",
                "orders",
                "--policy",
                art::SYNTHETIC_HEADER,
                "--config",
                &config,
            ],
        )
    };
    // References need hosts of 0.3.0: refused until the fleet runs them.
    ok_json(&store, &["fleet", "--min-host-version", "0.2.0"]);
    let o = publish();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("secret references"), "{err}");
    ok_json(&store, &["fleet", "--min-host-version", "0.3.0"]);
    let o = publish();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "context key DB_PASSWORD of version 7 looks like a credential and holds a literal"
        ),
        "{err}"
    );
    assert!(
        !err.contains("API_TOKEN of version 8"),
        "a reference is not warned of: {err}"
    );

    let host = common::serve(
        &store,
        &["--admin-reveal-context", "--secret-ttl", "200ms"],
        &[("RUST_LOG", "debug")],
    );
    let call = || curl(&["-H", "x-switchyard-synthetic: true", &host.url("/orders/x")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let head = loop {
        let head = call();
        if head.contains("x-switchyard-ctx-") {
            break head;
        }
        assert!(Instant::now() < deadline, "the proxy did not route: {head}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        head.contains(&format!("x-switchyard-ctx-db_password: {password}"))
            && head.contains(&format!("x-switchyard-ctx-api_token: {token}"))
            && head.contains("x-switchyard-ctx-queue: q8"),
        "{head}"
    );

    // Everything that shows the config or a decision shows the reference.
    let shown = [
        String::from_utf8(run(&store, &["status", "orders"]).stdout).unwrap(),
        String::from_utf8(run(&store, &["history", "orders"]).stdout).unwrap(),
        String::from_utf8(
            run(
                &store,
                &[
                    "decide",
                    "--store",
                    &store,
                    "--function",
                    "orders",
                    "-H",
                    "x-switchyard-synthetic: 1",
                ],
            )
            .stdout,
        )
        .unwrap(),
        curl(&[
            "-X",
            "POST",
            &host.admin_url("/v1/decide?context=show"),
            "-d",
            r#"{"function":"orders","headers":{"x-switchyard-synthetic":"true"}}"#,
        ]),
    ];
    for out in &shown[2..] {
        assert!(out.contains(&parameter) && out.contains(&secret), "{out}");
    }
    for out in &shown {
        assert!(
            !out.contains(&password) && !out.contains(&token),
            "a secret value is shown: {out}"
        );
    }

    // The parameter is deleted: refreshes fail, are counted, and the last
    // good value keeps going to the target.
    boto3(&format!(
        "boto3.client('ssm').delete_parameter(Name='{parameter}')"
    ));
    let failures = || {
        curl(&[&host.admin_url("/metrics")])
            .lines()
            .find_map(|l| {
                l.strip_prefix("switchyard_secret_refresh_failures_total{source=\"ssm\"} ")
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while failures() == 0 {
        assert!(
            call().contains(&format!("x-switchyard-ctx-db_password: {password}")),
            "the last good value was dropped"
        );
        assert!(Instant::now() < deadline, "no refresh failure was counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(call().contains(&format!("x-switchyard-ctx-db_password: {password}")));

    // A reference to a secret that does not exist: a 502 naming the key
    // and the reference, for the version that needs it only.
    let missing = config.replace(".json", "-missing.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&secret, &format!("{secret}-missing"));
    std::fs::write(&missing, text).unwrap();
    let o = run(
        &store,
        &[
            "publish",
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            "--config",
            &missing,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = call();
        if answer.contains("\"error\"") {
            break answer;
        }
        assert!(Instant::now() < deadline, "still routing: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        answer.contains("API_TOKEN") && answer.contains(&format!("{secret}-missing")),
        "{answer}"
    );
    let production = curl(&[&host.url("/orders/x")]);
    assert!(
        production.contains("x-switchyard-ctx-db_password: literal-7"),
        "{production}"
    );

    let log = host.log();
    assert!(
        !log.contains(&password) && !log.contains(&token),
        "a secret value is in the host's log"
    );
}

/// A replay file with a line that is not a request: fatal, naming the
/// line, unless --skip-bad-lines, which reports it and goes on.
#[test]
fn a_malformed_replay_line_is_named_and_fatal_or_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    publish_orders(&store);
    let requests = tmp.path().join("requests.jsonl");
    std::fs::write(
        &requests,
        "{\"function\":\"orders\",\"headers\":{\"x-switchyard-synthetic\":\"1\"}}\nnot json\n{\"function\":\"orders\"}\n",
    )
    .unwrap();
    let requests = requests.display().to_string();
    let replay = |more: &[&str]| {
        run(
            &store,
            &[
                &[
                    "replay",
                    "--store",
                    &store,
                    "--requests",
                    &requests,
                    "--to",
                    art::SYNTHETIC_HEADER,
                ][..],
                more,
            ]
            .concat(),
        )
    };
    let o = replay(&[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("requests.jsonl line 2: invalid request JSON")
            && err.contains("--skip-bad-lines"),
        "{err}"
    );
    let o = replay(&["--skip-bad-lines"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped: "));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["requests"], 2);
}

/// `replay --requests <a folder>` is an error, with --skip-bad-lines too
/// (a folder opens, then fails every read: skipped line by line, it looped
/// for ever), and a policy that fails on every request does not pass a
/// gate on a production-mode function, although its fail-safe is today's
/// decision: each failure counts as a change, and the output says so.
#[test]
fn replay_refuses_a_folder_and_counts_fail_safes_as_changes() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    publish_orders(&store);
    ok_json(&store, &["mode", "orders", "production"]);

    // Bounded: before the fix this never ended, writing without end.
    let folder = tmp.path().join("requests");
    std::fs::create_dir_all(&folder).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["replay", "--requests"])
        .arg(&folder)
        .args(["--to", art::SYNTHETIC_HEADER, "--skip-bad-lines"])
        .env("SWITCHYARD_STORE", &store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if kept.len() < 64 << 10 {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "replay of a folder did not end: {}",
                &reader.join().unwrap()[..1000]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(!err.contains("skipped"), "{err}");

    // 20 untagged requests, decided stable in production mode by both
    // today's policy and the fail-safe of one that traps on each.
    let requests = tmp.path().join("requests.jsonl");
    let lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"function":"orders","path":"/o/{i}"}}"#))
        .collect();
    std::fs::write(&requests, lines.join("\n")).unwrap();
    let requests = requests.display().to_string();
    let replay = |gate: &[&str]| {
        run(
            &store,
            &[
                &["replay", "--requests", &requests, "--to", art::BAD_TRAP][..],
                gate,
            ]
            .concat(),
        )
    };
    let o = replay(&["--max-changed", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("20 of 20 decisions change (100.0 %)")
            && err.contains("fail-safe 20 (the policy failed on 20 of 20 requests"),
        "{err}"
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            &out["changed"],
            &out["fail-safe"],
            &out["target"],
            &out["passed"]
        ),
        (
            &serde_json::json!(20),
            &serde_json::json!(20),
            &serde_json::json!(0),
            &serde_json::json!(false)
        ),
        "{out}"
    );
    let example = &out["functions"]["orders"]["examples"][0];
    assert_eq!(example["changed"], serde_json::json!(["fail-safe"]));
    assert!(
        example["to-error"]
            .as_str()
            .is_some_and(|e| e.contains("policy trapped")),
        "{example}"
    );
    // Without a gate it passes, and still says so.
    let o = replay(&[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("fail-safe 20"));
}
