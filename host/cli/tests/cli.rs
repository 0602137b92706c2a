//! The `switchyard` binary end to end: real processes, real files.

use switchyard_test_support as common;

use std::path::Path;
use std::process::{Command, Output};

use common::repo_root;
use switchyard_test_artifacts as art;

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn route_json() -> String {
    repo_root()
        .join("policies/synthetic-header/route.json")
        .display()
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn decide_routes_the_synthetic_request_to_the_candidate() {
    let route = route_json();
    let base = [
        "decide",
        "--policy",
        art::SYNTHETIC_HEADER,
        "--config",
        &route,
        "--function",
        "orders",
    ];
    let o = switchyard(
        &[
            &base[..],
            &[
                "-X",
                "POST",
                "--path",
                "/orders",
                "-H",
                "X-Switchyard-Synthetic: true",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["target"], "8");
    assert_eq!(d["traffic"], "synthetic");
    assert_eq!(d["mirror"], serde_json::Value::Null);
    assert_eq!(
        d["context"]["QUEUE_URL"],
        "https://sqs.example/orders-candidate"
    );
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("x-switchyard-synthetic")
    );

    let o = switchyard(&base);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (d["target"].as_str(), d["traffic"].as_str()),
        (Some("7"), Some("production"))
    );
}

#[test]
fn decide_many_requests_one_decision_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = write(
        dir.path(),
        "r.jsonl",
        "{\"headers\":{\"x-switchyard-synthetic\":\"1\"}}\n\n{\"function\":\"payments\",\"path\":\"/p\"}\n{\"headers\":{}}\n",
    );
    let route = route_json();
    let o = switchyard(&[
        "decide",
        "--policy",
        art::SYNTHETIC_HEADER,
        "--config",
        &route,
        "--function",
        "orders",
        "--requests",
        &reqs,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let targets: Vec<&str> = lines
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["8", "7", "7"]);

    // A bad line names the file and line.
    let bad = write(dir.path(), "bad.jsonl", "{\"headers\":{}}\nnot json\n");
    let o = switchyard(&[
        "decide",
        "--policy",
        art::SYNTHETIC_HEADER,
        "--config",
        &route,
        "--function",
        "orders",
        "--requests",
        &bad,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("line 2: invalid request JSON"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn decide_explains_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let route = route_json();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--policy".into(),
                dir.path().join("missing.wasm").display().to_string(),
                "--config".into(),
                route.clone(),
            ],
            "cannot read policy file",
        ),
        (
            vec![
                "--policy".into(),
                write(dir.path(), "text.wasm", "hello"),
                "--config".into(),
                route.clone(),
            ],
            "is not a WebAssembly file",
        ),
        (
            vec![
                "--policy".into(),
                art::BAD_WRONG_WORLD.into(),
                "--config".into(),
                route.clone(),
            ],
            "does not implement world `switchyard:policy/router@0.2.0` (nor its previous version, 0.1.0)",
        ),
        (
            vec![
                "--policy".into(),
                art::BAD_WASI_IMPORT.into(),
                "--config".into(),
                route.clone(),
            ],
            "imports `wasi:filesystem/preopens@0.2.0`",
        ),
        (
            vec![
                "--policy".into(),
                art::SYNTHETIC_HEADER.into(),
                "--config".into(),
                write(dir.path(), "m.json", "{\"mode\":"),
            ],
            "invalid route config JSON",
        ),
        (
            vec![
                "--policy".into(),
                art::SYNTHETIC_HEADER.into(),
                "--config".into(),
                write(
                    dir.path(),
                    "u.json",
                    r#"{"mode":"synthetic","versions":{"stable":"7"},"colour":"red"}"#,
                ),
            ],
            "unknown field `colour`",
        ),
        (
            vec![
                "--policy".into(),
                art::SYNTHETIC_HEADER.into(),
                "--config".into(),
                route.clone(),
                "-H".into(),
                "no colon".into(),
            ],
            "must look like 'Name: value'",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["decide".to_string(), "--function".into(), "orders".into()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = switchyard(&all);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{all:?}: want {want:?} in {}",
            stderr(&o)
        );
        assert!(
            o.stdout.is_empty(),
            "no decision on failure: {}",
            stdout(&o)
        );
    }
}

#[test]
fn a_failing_policy_still_decides_with_the_fail_safe() {
    let route = route_json();
    let o = switchyard(&[
        "decide",
        "--policy",
        art::BAD_LOOP,
        "--config",
        &route,
        "--function",
        "orders",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["target"], "7");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .starts_with("fail-safe: policy exceeded its evaluation budget")
    );
    assert!(
        stderr(&o).contains("fail-safe decision applied"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn inspect_reports_and_refuses() {
    let o = switchyard(&["policy", "inspect", art::STICKY_CANARY]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    assert_eq!(
        info["digest"],
        switchyard_core::Digest::of(&bytes).to_string()
    );
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["valid"], true);
    assert_eq!(
        info["exports"],
        serde_json::json!(["configure", "evaluate"])
    );
    let imports: Vec<&str> = info["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"switchyard:policy/request@0.2.0"),
        "{imports:?}"
    );
    assert!(
        imports.iter().all(|i| i.starts_with("switchyard:policy/")),
        "{imports:?}"
    );

    let o = switchyard(&["policy", "inspect", art::BAD_WASI_IMPORT]);
    assert_eq!(o.status.code(), Some(1));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["valid"], false);
    assert!(stderr(&o).contains("imports `wasi:filesystem/preopens@0.2.0`"));

    let o = switchyard(&["policy", "inspect", art::BAD_WRONG_WORLD]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("missing export(s) configure, evaluate"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let core = write(dir.path(), "core.wasm", "\0asm\x01\0\0\0");
    let o = switchyard(&["policy", "inspect", &core]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is a core WebAssembly module, not a component"),
        "{}",
        stderr(&o)
    );
    // The command line says what to do about it (the library does not).
    assert!(
        stderr(&o).contains("`switchyard policy build <policy-dir>`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn policy_test_passes_shipped_cases_and_reports_failures() {
    for (wasm, cases, n) in [
        (
            art::SYNTHETIC_HEADER,
            "policies/synthetic-header/cases.json",
            11,
        ),
        (art::STICKY_CANARY, "policies/sticky-canary/cases.json", 12),
    ] {
        let cases = repo_root().join(cases).display().to_string();
        let o = switchyard(&["policy", "test", wasm, &cases]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert_eq!(
            stdout(&o).lines().last(),
            Some(format!("{n} passed, 0 failed").as_str())
        );
    }
    // The synthetic-header cases run against sticky-canary: some must fail.
    let cases = repo_root()
        .join("policies/synthetic-header/cases.json")
        .display()
        .to_string();
    let o = switchyard(&["policy", "test", art::STICKY_CANARY, &cases]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("FAIL  synthetic mode: header true reaches the candidate"),
        "{out}"
    );
    assert!(out.contains("- target: expected \"8\", got \"7\""), "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.ends_with(" failed") && !last.ends_with(" 0 failed"),
        "{last}"
    );
}

#[test]
fn policy_build_produces_a_component_that_decides() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sh.wasm").display().to_string();
    let krate = repo_root()
        .join("policies/synthetic-header")
        .display()
        .to_string();
    let o = switchyard(&["policy", "build", &krate, "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().last(), Some(out.as_str()));
    let o = switchyard(&["policy", "inspect", &out]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = switchyard(&["policy", "build", &dir.path().display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no Cargo.toml"), "{}", stderr(&o));
}

/// `policy build` of a policy crate outside the checkout, called from yet
/// another folder, as a user outside the repository would: rustup picks the
/// toolchain by the working directory, so cargo must run in the policy's
/// folder to get the toolchain its rust-toolchain.toml names (the caller's
/// default may lack the wasm32 target, or be missing). Without that file the
/// caller's default is used, and a failure names it.
#[test]
fn policy_build_outside_the_checkout_uses_the_policy_folders_toolchain() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |name: &str, toolchain_file: bool| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::copy(
            repo_root().join("policies/sticky-canary/src/lib.rs"),
            dir.join("src/lib.rs"),
        )
        .unwrap();
        // The same dependency versions as the repository's policies.
        std::fs::copy(
            repo_root().join("policies/Cargo.lock"),
            dir.join("Cargo.lock"),
        )
        .unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\nswitchyard-guest = {{ path = {:?} }}\n\n\
                 [profile.release]\nopt-level = \"s\"\npanic = \"abort\"\n\n[workspace]\n",
                repo_root().join("guest-sdk").display().to_string()
            ),
        )
        .unwrap();
        if toolchain_file {
            std::fs::copy(
                repo_root().join("rust-toolchain.toml"),
                dir.join("rust-toolchain.toml"),
            )
            .unwrap();
        }
        dir
    };
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let build = |dir: &Path| {
        let out = dir.join("policy.wasm");
        let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["policy", "build"])
            .arg(dir)
            .arg("-o")
            .arg(&out)
            .current_dir(&elsewhere)
            // As from a user's shell: no toolchain chosen by this test's cargo.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTUP_TOOLCHAIN_SOURCE")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTFLAGS")
            .env("RUSTUP_AUTO_INSTALL", "0")
            // Kept between runs, so a second run does not compile again.
            .env(
                "CARGO_TARGET_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-outside-the-checkout"),
            )
            .output()
            .expect("run switchyard");
        (o, out)
    };

    let (o, out) = build(&copy("outside-policy", true));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = switchyard(&["policy", "inspect", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // No toolchain file: the caller's default toolchain builds it, or the
    // error says which toolchain it was and what to do.
    let (o, _) = build(&copy("no-toolchain-file", false));
    if !o.status.success() {
        let err = stderr(&o);
        assert!(
            err.contains("failed with toolchain ")
                && err.contains("rustup target add wasm32-unknown-unknown"),
            "{err}"
        );
    }
}

#[test]
fn help_teaches() {
    let o = switchyard(&["--help"]);
    let help = stdout(&o);
    for want in ["policy", "decide", "Typical flow"] {
        assert!(help.contains(want), "{help}");
    }
    let o = switchyard(&["decide", "--help"]);
    assert!(stdout(&o).contains("'NAME: VALUE'"));
}

/// A bad `dispatch` block is refused at publish with one clear line: the
/// cause is in the message, once (not again as the error's source).
#[test]
fn publish_refuses_a_bad_dispatch_block_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", dir.path().join("store").display());
    for (block, says) in [
        (r#"{"urls":{}}"#, "needs a \"type\" naming its backend"),
        (
            r#"{"type":"carrier-pigeon"}"#,
            "unknown variant `carrier-pigeon`",
        ),
        (
            r#"{"type":"http","urls":{"7":"ftp://x"}}"#,
            "expected an absolute http:// or https:// URL",
        ),
    ] {
        let config = write(
            dir.path(),
            "route.json",
            &format!(r#"{{"mode":"production","versions":{{"stable":"7"}},"dispatch":{block}}}"#),
        );
        let o = switchyard(&[
            "publish",
            "--store",
            &store,
            "--function",
            "orders",
            "--policy",
            art::SYNTHETIC_HEADER,
            "--config",
            &config,
        ]);
        assert_eq!(o.status.code(), Some(1), "{block}");
        let err = stderr(&o);
        assert_eq!(err.matches(says).count(), 1, "{block}: {err}");
    }
    assert!(
        !dir.path().join("store/functions/orders").exists(),
        "nothing was written"
    );
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    // `switchyard policy inspect x.wasm | head -0`: the reader is gone
    // before the command writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["policy", "inspect", art::SYNTHETIC_HEADER])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            o.status.success() || o.status.signal() == Some(libc_sigpipe()),
            "{:?}: {err}",
            o.status
        );
    }
}

#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn serve_refuses_a_poll_interval_that_would_spin() {
    let o = switchyard(&[
        "serve",
        "--store",
        "dir:/nonexistent",
        "--poll-interval",
        "0s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("too short"), "{}", stderr(&o));
}
