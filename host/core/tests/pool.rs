//! The instance budget is process-wide: pools of many functions share it,
//! so idle instances are capped in all and the least recently used go
//! first, and no function is left unable to decide.

use switchyard_test_support as common;

use switchyard_core::{Engine, EngineConfig, EvaluatorPool, Policy, Route, RouteConfig};
use switchyard_test_artifacts as art;

/// Forty functions, each with its own pool of `synthetic-header`, on an
/// engine of eight instances in all (so at most four idle).
fn forty_functions() -> (
    std::sync::Arc<Policy>,
    RouteConfig,
    Vec<(Route, EvaluatorPool)>,
) {
    let engine = Engine::with_config(EngineConfig {
        max_instances: 8,
        ..Default::default()
    })
    .unwrap();
    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    let policy = Policy::new(&engine, &bytes, "synthetic-header").unwrap();
    let config =
        RouteConfig::from_json(r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#)
            .unwrap();
    let functions = (0..40)
        .map(|i| {
            let route = Route::new(format!("fn-{i}"), config.clone()).unwrap();
            (route, EvaluatorPool::new(policy.clone(), 64))
        })
        .collect();
    (policy, config, functions)
}

#[test]
fn any_number_of_functions_decide_on_a_bounded_engine() {
    let (policy, config, functions) = forty_functions();
    let req = common::request(&[("x-switchyard-synthetic", "true")]);
    for round in 0..2 {
        for (route, pool) in &functions {
            let (decision, failure) = pool.decide(&req, route);
            assert!(
                failure.is_none(),
                "round {round}, {}: {failure:?}",
                route.function()
            );
            assert_eq!(decision.target, "8");
        }
    }
    let idle: Vec<usize> = functions.iter().map(|(_, p)| p.idle()).collect();
    assert!(
        idle.iter().sum::<usize>() <= 4,
        "idle instances over half the engine's limit: {idle:?}"
    );
    assert_eq!(
        idle.last(),
        Some(&1),
        "the most recently used function keeps its warm instance: {idle:?}"
    );

    // A pool that goes (a route version replaced) gives its budget back.
    drop(functions);
    let route = Route::new("late", config).unwrap();
    let pool = EvaluatorPool::new(policy, 64);
    assert!(pool.decide(&req, &route).1.is_none());
    assert_eq!(pool.idle(), 1);
}

/// Two serving threads deciding for the same forty functions at once, each
/// from its own idle lists: the engine-wide cap on idle instances holds
/// across them, nothing fails, and the budget comes back when the pools go.
#[test]
fn serving_threads_share_the_idle_budget_not_the_lists() {
    let (policy, config, functions) = forty_functions();
    let req = common::request(&[("x-switchyard-synthetic", "true")]);
    std::thread::scope(|s| {
        for thread in 0..2 {
            let (functions, req) = (&functions, &req);
            s.spawn(move || {
                switchyard_core::set_thread_shard(thread);
                for round in 0..3 {
                    for (route, pool) in functions {
                        let (decision, failure) = pool.decide(req, route);
                        assert!(
                            failure.is_none(),
                            "thread {thread}, round {round}: {failure:?}"
                        );
                        assert_eq!(decision.target, "8");
                    }
                }
            });
        }
    });
    let idle: usize = functions.iter().map(|(_, p)| p.idle()).sum();
    assert!(
        (1..=4).contains(&idle),
        "idle instances within half the engine's limit: {idle}"
    );
    drop(functions);
    let route = Route::new("late", config).unwrap();
    let pool = EvaluatorPool::new(policy, 64);
    for _ in 0..3 {
        assert!(pool.decide(&req, &route).1.is_none());
    }
    assert_eq!(pool.idle(), 1, "one warm instance, reused");
}

/// A pool of `bad-trap` (it traps unless spared) on an engine of its own
/// with the given circuit breaker.
fn bad_trap_pool(breaker_failures: u32, breaker_open: std::time::Duration) -> EvaluatorPool {
    let engine = Engine::with_config(EngineConfig {
        max_instances: 8,
        breaker_failures,
        breaker_open,
        ..Default::default()
    })
    .unwrap();
    let bytes = std::fs::read(art::BAD_TRAP).unwrap();
    EvaluatorPool::new(Policy::new(&engine, &bytes, "bad-trap").unwrap(), 4)
}

#[test]
fn a_failing_policy_trips_its_circuit_and_a_good_probe_closes_it() {
    let pool = bad_trap_pool(3, std::time::Duration::from_millis(100));
    let route = common::synthetic_route();
    let failing = common::request(&[]);
    let recovered = common::request(&[("x-bad-trap-recovered", "true")]);
    let kind = |req| {
        let (decision, failure) = pool.decide(req, &route);
        assert_eq!(decision.target, "7", "every answer here is stable");
        failure.map(|e| e.kind())
    };
    for _ in 0..3 {
        assert_eq!(kind(&failing), Some("trap"));
    }
    // Open: not evaluated, even for a request the policy would answer.
    assert_eq!(kind(&recovered), Some("circuit-open"));
    // After the open spell one probe runs; a good one closes the circuit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kind(&recovered) == Some("circuit-open") {
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit never let a probe through"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(kind(&recovered), None, "closed: evaluated again");
    // A failing probe opens it again at once (no three strikes).
    for _ in 0..3 {
        assert_eq!(kind(&failing), Some("trap"));
    }
    assert_eq!(kind(&failing), Some("circuit-open"));
    while kind(&failing) == Some("circuit-open") {
        assert!(std::time::Instant::now() < deadline, "no probe");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        kind(&failing),
        Some("circuit-open"),
        "the failed probe reopened it"
    );
}

/// Log lines written through `tracing` while `f` runs.
fn logged(f: impl FnOnce()) -> Vec<String> {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn fail_safe_lines_are_rate_limited() {
    let pool = bad_trap_pool(0, std::time::Duration::from_secs(10));
    let route = common::synthetic_route();
    let req = common::request(&[]);
    let lines = logged(|| {
        for _ in 0..200 {
            assert_eq!(pool.decide(&req, &route).1.map(|e| e.kind()), Some("trap"));
        }
    });
    let fail_safe: Vec<&String> = lines.iter().filter(|l| l.contains("fail-safe")).collect();
    // One a second (the loop may straddle a second or two).
    assert!(
        !fail_safe.is_empty() && fail_safe.len() <= 3,
        "{} fail-safe lines for 200 failures:\n{}",
        fail_safe.len(),
        lines.join("\n")
    );
}
