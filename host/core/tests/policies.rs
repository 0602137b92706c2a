//! Every policy in `policies/` gets a test here: `foreach_policy!` expands to
//! one test per built component, calling the function of the same name in
//! `expect`, so adding a policy without a test does not compile.

use switchyard_test_support as common;

use common::*;
use switchyard_core::check;
use switchyard_core::{EvalError, Policy, PolicyError, Traffic};
use switchyard_test_artifacts::foreach_policy;

macro_rules! policy_test {
    ($name:ident, $path:ident) => {
        #[test]
        fn $name() {
            expect::$name(switchyard_test_artifacts::$path);
        }
    };
}

foreach_policy!(policy_test);

mod expect {
    use super::*;

    fn fail_safe_with(path: &str, want: fn(&EvalError) -> bool) {
        let policy = load(path);
        let mut ev = policy.evaluator();
        let route = route(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"context":{"7":{"Q":"stable-q"}}}"#,
        );
        // Twice: the instance that failed is replaced, and fails the same way.
        for _ in 0..2 {
            let (d, err) = ev.decide(&request(&[("x-switchyard-synthetic", "true")]), &route);
            let err = err.expect("the policy must fail");
            assert!(want(&err), "unexpected error kind: {err}");
            assert_eq!(d.target, "7");
            assert_eq!(d.traffic, Traffic::Production);
            assert!(d.reason.starts_with("fail-safe: "), "{}", d.reason);
            assert_eq!(
                d.context["Q"], "stable-q",
                "the stable's context still applies"
            );
        }
    }

    pub fn call_count(path: &str) {
        // One instance counts every call it decides, whatever the request
        // or the route config (recycling is tested below).
        let policy = load(path);
        let mut ev = policy.evaluator();
        let other = route(r#"{"mode":"production","versions":{"stable":"3"}}"#);
        for (n, route) in [synthetic_route(), other, synthetic_route()]
            .iter()
            .enumerate()
        {
            let d = ev
                .evaluate(&request(&[("x-switchyard-synthetic", "true")]), route)
                .unwrap();
            assert_eq!(d.reason, format!("call {}", n + 1));
            assert_eq!(d.traffic, Traffic::Production);
        }
    }

    pub fn bad_loop(path: &str) {
        fail_safe_with(
            path,
            |e| matches!(e, EvalError::Budget { fuel } if *fuel == switchyard_core::DEFAULT_FUEL),
        );
    }

    pub fn bad_memory(path: &str) {
        fail_safe_with(
            path,
            |e| matches!(e, EvalError::Memory { limit } if *limit == 16 << 20),
        );
    }

    pub fn bad_trap(path: &str) {
        fail_safe_with(
            path,
            |e| matches!(e, EvalError::Trap(m) if m.contains("unreachable")),
        );
    }

    pub fn bad_decision(path: &str) {
        let policy = load(path);
        let mut ev = policy.evaluator();
        let route = synthetic_route();
        let mut reason = |headers: &[(&str, &str)]| {
            let (d, err) = ev.decide(&request(headers), &route);
            (d.reason, err)
        };
        assert_eq!(reason(&[]).0, "call 1 on this instance");
        assert_eq!(reason(&[]).0, "call 2 on this instance");
        let (why, err) = reason(&[("x-bad", "true")]);
        assert!(
            matches!(&err, Some(EvalError::BadDecision(m)) if m.contains("not a qualifier!")),
            "{err:?}"
        );
        assert!(why.starts_with("fail-safe: "), "{why}");
        // The instance that answered nonsense is gone: a fresh one counts
        // from 1 again.
        assert_eq!(reason(&[]).0, "call 1 on this instance");
    }

    pub fn bad_wrong_world(path: &str) {
        let bytes = std::fs::read(path).unwrap();
        let err = Policy::new(engine(), &bytes, path).unwrap_err();
        assert!(matches!(err, PolicyError::WrongWorld { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("missing export(s) configure, evaluate"),
            "{msg}"
        );
        assert!(msg.contains("it exports [run]"), "{msg}");
    }

    pub fn bad_wasi_import(path: &str) {
        let bytes = std::fs::read(path).unwrap();
        let err = check(&bytes, path).unwrap_err();
        assert!(
            matches!(&err, PolicyError::ForbiddenImport { import, .. } if import == "wasi:filesystem/preopens@0.2.0"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("imports `wasi:filesystem/preopens@0.2.0`")
        );
        assert!(Policy::new(engine(), &bytes, path).is_err());
    }

    pub fn synthetic_header(path: &str) {
        let policy = load(path);
        assert!(
            policy
                .info()
                .imports
                .iter()
                .all(|i| i.starts_with("switchyard:policy/")),
            "{:?}",
            policy.info().imports
        );
        let mut ev = policy.evaluator();
        let route = synthetic_route();
        let d = ev
            .evaluate(&request(&[("X-Switchyard-Synthetic", "true")]), &route)
            .unwrap();
        assert_eq!((d.target.as_str(), d.traffic), ("8", Traffic::Synthetic));
        let d = ev.evaluate(&request(&[]), &route).unwrap();
        assert_eq!((d.target.as_str(), d.traffic), ("7", Traffic::Production));
        // A new route config version reaches the warm instance.
        let prod =
            common::route(r#"{"mode":"production","versions":{"stable":"7","candidate":"8"}}"#);
        let d = ev
            .evaluate(&request(&[("x-switchyard-synthetic", "1")]), &prod)
            .unwrap();
        assert_eq!((d.target.as_str(), d.traffic), ("7", Traffic::Production));
        run_cases(&policy, "policies/synthetic-header/cases.json");
    }

    pub fn sticky_canary(path: &str) {
        let policy = load(path);
        run_cases(&policy, "policies/sticky-canary/cases.json");
        // The distribution, stickiness and ramp properties are in sticky_canary.rs.
    }

    pub fn qa_canary(path: &str) {
        let policy = load(path);
        run_cases(&policy, "policies/qa-canary/cases.json");
        // `switchyard rollout` drives it through every stage: host/cli/tests/rollout.rs.
    }

    pub fn tenant_allowlist(path: &str) {
        let policy = load(path);
        run_cases(&policy, "policies/tenant-allowlist/cases.json");
        // Its JavaScript and Python twins are held to the same cases and
        // decisions in languages.rs.
    }

    fn run_cases(policy: &std::sync::Arc<Policy>, cases: &str) {
        let text = std::fs::read_to_string(repo_root().join(cases)).unwrap();
        let file = switchyard_core::CaseFile::from_json(&text).unwrap();
        let results = file.run(policy).unwrap();
        assert!(!results.is_empty());
        for r in &results {
            assert!(r.passed(), "case {:?} failed: {:?}", r.name, r.mismatches);
        }
    }
}

#[test]
fn a_failing_case_is_reported_with_the_difference() {
    let policy = load(switchyard_test_artifacts::SYNTHETIC_HEADER);
    let file = switchyard_core::CaseFile::from_json(
        r#"{"function":"orders","config":{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}},
            "cases":[{"name":"wrong on purpose","request":{},"expect":{"target":"8","traffic":"synthetic","mirror":null}}]}"#,
    )
    .unwrap();
    let results = file.run(&policy).unwrap();
    assert_eq!(
        results[0].mismatches,
        vec![
            "target: expected \"8\", got \"7\"".to_string(),
            "traffic: expected \"synthetic\", got \"production\"".to_string(),
        ]
    );
}

#[test]
fn a_trapping_policy_fails_its_cases_unless_fail_safe_is_expected() {
    let policy = load(switchyard_test_artifacts::BAD_TRAP);
    let file = switchyard_core::CaseFile::from_json(
        r#"{"function":"orders","config":{"mode":"synthetic","versions":{"stable":"7"}},
            "cases":[{"name":"a","request":{},"expect":{"target":"7"}},
                     {"name":"b","request":{},"expect":{"target":"7","fail-safe":true}}]}"#,
    )
    .unwrap();
    let results = file.run(&policy).unwrap();
    assert!(!results[0].passed());
    assert!(results[0].mismatches[0].starts_with("policy failed: policy trapped"));
    assert!(results[1].passed(), "{:?}", results[1].mismatches);
}

#[test]
fn recycles_the_instance_after_n_calls() {
    let engine = switchyard_core::Engine::with_config(switchyard_core::EngineConfig {
        recycle_after: 3,
        max_instances: 4,
        ..Default::default()
    })
    .unwrap();
    let bytes = std::fs::read(switchyard_test_artifacts::CALL_COUNT).unwrap();
    let policy = Policy::new(&engine, &bytes, "call-count").unwrap();
    let route = synthetic_route();
    let mut ev = policy.evaluator();
    // call-count's reason is how many calls its instance has decided: it
    // starts over on each new instance, after every third call.
    let reasons: Vec<String> = (0..10)
        .map(|_| ev.evaluate(&request(&[]), &route).unwrap().reason)
        .collect();
    assert_eq!(
        reasons,
        [1, 2, 3, 1, 2, 3, 1, 2, 3, 1].map(|n| format!("call {n}"))
    );
}

#[test]
fn the_instance_pool_exhausted_is_a_fail_safe_not_a_crash() {
    let engine = switchyard_core::Engine::with_config(switchyard_core::EngineConfig {
        max_instances: 1,
        ..Default::default()
    })
    .unwrap();
    let bytes = std::fs::read(switchyard_test_artifacts::SYNTHETIC_HEADER).unwrap();
    let policy = Policy::new(&engine, &bytes, "synthetic-header").unwrap();
    let route = synthetic_route();
    let mut a = policy.evaluator();
    let mut b = policy.evaluator();
    a.evaluate(&request(&[]), &route).unwrap();
    let (d, err) = b.decide(&request(&[]), &route);
    assert!(matches!(err, Some(EvalError::Instantiate(_))), "{err:?}");
    assert_eq!(d.target, "7");
}

/// Policies published against `switchyard:policy@0.1.0` (component binaries
/// kept as they were built then) still load, and decide exactly as the same
/// sources built against the current contract; asked for no reason, a
/// current build leaves it out and decides the same.
#[test]
fn policies_built_for_the_previous_contract_decide_as_the_current_builds() {
    use switchyard_test_artifacts as art;
    let routes = [
        r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"flags":{"canary-percent":"30","mirror-role":"candidate"},"context":{"8":{"Q":"cand"}}}"#,
        r#"{"mode":"production","versions":{"stable":"7","candidate":"8"},"flags":{"canary-percent":"100","sticky-header":"X-Tenant"}}"#,
        r#"{"mode":"synthetic","versions":{"a":"1","b":"2","stable":"3"},"flags":{"canary-percent":"50","synthetic-header":"x-qa","mirror-role":"b"}}"#,
        r#"{"mode":"synthetic","versions":{"stable":"live"},"flags":{"canary-percent":"abc"}}"#,
    ];
    let values = ["true", "1", " TRUE ", "no", ""];
    for (old, new) in [
        (art::STICKY_CANARY_0_1_0, art::STICKY_CANARY),
        (art::SYNTHETIC_HEADER_0_1_0, art::SYNTHETIC_HEADER),
    ] {
        let (old, new) = (load(old), load(new));
        assert_eq!(
            (old.contract_version(), new.contract_version()),
            ("0.1.0", "0.2.0")
        );
        let (mut o, mut n) = (old.evaluator(), new.evaluator());
        let mut reasons = std::collections::BTreeSet::new();
        for json in routes {
            let route = route(json);
            for i in 0..60 {
                let user = format!("user-{i}");
                let value = values[i % values.len()];
                let mut headers = vec![("x-user-id", user.as_str()), ("x-tenant", &user[5..])];
                if i % 3 != 0 {
                    headers.push(("x-switchyard-synthetic", value));
                    headers.push(("X-QA", value));
                }
                let req = request(&headers);
                let want = o.evaluate(&req, &route).unwrap();
                assert_eq!(
                    n.evaluate(&req, &route).unwrap(),
                    want,
                    "{json} {headers:?}"
                );
                let quiet = n.evaluate_with(&req, &route, false).unwrap();
                assert_eq!(quiet.reason, "", "no reason built when none is asked for");
                assert_eq!(
                    (quiet.target, quiet.traffic, quiet.mirror, quiet.context),
                    (want.target, want.traffic, want.mirror, want.context)
                );
                reasons.insert(want.reason);
            }
        }
        assert!(
            reasons.len() >= 3,
            "the requests take several rules: {reasons:?}"
        );
    }
}
