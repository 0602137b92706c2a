//! Decision latency of `sticky-canary` on the reference request.
//!
//! Groups:
//! * `decision`: `native` (the same logic in plain Rust: the floor),
//!   `wasm_warm` (reused instance), `wasm_warm_no_reason` (the same, the
//!   reason not asked for: the proxy's path unless the decision is logged),
//!   `wasm_warm_0.1.0` (the same source as published against the previous
//!   contract), `wasm_fresh` (new pooled instance per
//!   evaluation, configured, then evaluated), and the peers `regorus_engine`
//!   (the same decision in Rego, regorus's interpreter, `bucket` as an
//!   extension) and `regorus_rvm` (regorus's Rego VM, `bucket` precomputed
//!   in the input); building their input from the request is
//!   `regorus_input`, timed apart.
//! * `pool`: `EvaluatorPool::decide` (the proxy's path) on one thread, and
//!   on two threads at once for the same function (the shared pool's cost).
//! * `sandbox`: `wasm_warm` with the fuel budget (`fuel`) and without
//!   (`unmetered`); `exhaust`: how long `bad-loop` takes to burn the default
//!   fuel budget (what "1 ms" means in fuel).
//! * `instantiate`: `wasm_fresh` with copy-on-write memory initialisation
//!   off and on (the default), nothing kept resident; and with memory kept
//!   resident between instances, reset whole or (`_pagemap`, the default
//!   where the kernel has it) only where dirtied.
//! * `swap`: `compile` (component bytes to a ready policy: verified and
//!   compiled), `deserialize` (the same from the precompiled cache file),
//!   `swap` (end to end: a new route version in a `dir` store naming another
//!   policy, polled, the policy deserialized from the cache, checked and
//!   live; the store write before each poll is not timed).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_benches::{
    NativeCanary, REGO_ENTRY_POINT, bench_request, bench_route, rego_decision, rego_engine,
    rego_input, rego_rvm_program,
};
use switchyard_config::{ConfigStore, DirStore, Outcome, WatchConfig, Watcher};
use switchyard_core::{Engine, EngineConfig, Policy, RouteConfig};

fn decision(c: &mut Criterion) {
    let engine = Engine::new().unwrap();
    let bytes = std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap();
    let policy = Policy::new(&engine, &bytes, "sticky-canary").unwrap();
    let req = bench_request();
    let route = bench_route();
    let native = NativeCanary::configure(&route);
    let mut warm = policy.evaluator();
    let old = std::fs::read(switchyard_test_artifacts::STICKY_CANARY_0_1_0).unwrap();
    let mut previous = Policy::new(&engine, &old, "sticky-canary@0.1.0")
        .unwrap()
        .evaluator();

    // All must agree before anything is timed.
    let expected = native.evaluate(&req, &route);
    assert_eq!(warm.evaluate(&req, &route).unwrap(), expected);
    assert_eq!(previous.evaluate(&req, &route).unwrap(), expected);
    let no_reason = warm.evaluate_with(&req, &route, false).unwrap();
    assert_eq!(
        (&no_reason.target, no_reason.reason.as_str()),
        (&expected.target, "")
    );
    assert_eq!(policy.evaluator().evaluate(&req, &route).unwrap(), expected);

    let mut g = c.benchmark_group("decision");
    g.throughput(Throughput::Elements(1));
    g.bench_function("native", |b| {
        b.iter(|| native.evaluate(black_box(&req), &route))
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| warm.evaluate(black_box(&req), &route).unwrap())
    });
    // The proxy's path: the reason is asked for only for a logged decision.
    g.bench_function("wasm_warm_no_reason", |b| {
        b.iter(|| warm.evaluate_with(black_box(&req), &route, false).unwrap())
    });
    // The same source as published against `switchyard:policy@0.1.0`.
    g.bench_function("wasm_warm_0.1.0", |b| {
        b.iter(|| previous.evaluate(black_box(&req), &route).unwrap())
    });
    g.bench_function("wasm_fresh", |b| {
        b.iter(|| {
            policy
                .evaluator()
                .evaluate(black_box(&req), &route)
                .unwrap()
        })
    });

    // The peers, checked to agree first.
    let want = (
        expected.target.clone(),
        expected.traffic.as_str().to_owned(),
        expected.reason.clone(),
    );
    let mut rego = rego_engine();
    let input = rego_input(&req, &route, false);
    rego.set_input(input.clone());
    assert_eq!(
        rego_decision(&rego.eval_rule(REGO_ENTRY_POINT.into()).unwrap()),
        want
    );
    let mut vm = regorus::rvm::vm::RegoVM::new();
    vm.load_program(rego_rvm_program());
    let rvm_input = rego_input(&req, &route, true);
    vm.set_input(rvm_input.clone());
    assert_eq!(rego_decision(&vm.execute().unwrap()), want);
    g.bench_function("regorus_engine", |b| {
        b.iter(|| {
            rego.set_input(black_box(input.clone()));
            rego.eval_rule(REGO_ENTRY_POINT.into()).unwrap()
        })
    });
    g.bench_function("regorus_rvm", |b| {
        b.iter(|| {
            vm.set_input(black_box(rvm_input.clone()));
            vm.execute().unwrap()
        })
    });
    g.bench_function("regorus_input", |b| {
        b.iter(|| rego_input(black_box(&req), &route, false))
    });
    g.finish();
}

/// The pooled path the proxy takes (`EvaluatorPool::decide`: an idle
/// evaluator taken and returned, the circuit breaker and the idle budget
/// checked) on one thread, then on two threads deciding for the same
/// function at once, as two serving cores do: per decision, what the
/// pool's shared lock and counters cost when both cores touch them.
fn pool(c: &mut Criterion) {
    let engine = Engine::new().unwrap();
    let bytes = std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap();
    let policy = Policy::new(&engine, &bytes, "sticky-canary").unwrap();
    let pool = switchyard_core::EvaluatorPool::new(policy, 64);
    let (req, route) = (bench_request(), bench_route());
    assert!(pool.decide(&req, &route).1.is_none());
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decide_1_thread", |b| {
        b.iter(|| pool.decide(black_box(&req), &route))
    });
    // Wall time of `iters` decisions on each of two threads (the slower
    // one's): with nothing shared, the one-thread figure. The baseline
    // shares nothing: each thread its own warm evaluator, no pool.
    let two_threads = |iters: u64, decide: &(dyn Fn() + Sync)| {
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            decide();
                        }
                        t.elapsed()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .max()
                .unwrap()
        })
    };
    g.bench_function("decide_2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(pool.decide(black_box(&req), &route));
            })
        })
    });
    g.bench_function("warm_2_threads_no_pool", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                EVALUATOR.with(|ev| {
                    let mut ev = ev.borrow_mut();
                    let ev = ev.get_or_insert_with(|| pool.policy().evaluator());
                    black_box(ev.evaluate(black_box(&req), &route).unwrap());
                })
            })
        })
    });
    g.finish();
}

thread_local! {
    /// `pool/warm_2_threads_no_pool`: each thread's own warm evaluator.
    static EVALUATOR: std::cell::RefCell<Option<switchyard_core::Evaluator>> =
        const { std::cell::RefCell::new(None) };
}

fn sandbox(c: &mut Criterion) {
    let req = bench_request();
    let route = bench_route();
    let bytes = std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap();
    let mut g = c.benchmark_group("sandbox");
    g.throughput(Throughput::Elements(1));
    for (name, fuel) in [("fuel", EngineConfig::default().fuel), ("unmetered", None)] {
        let engine = Engine::with_config(EngineConfig {
            fuel,
            ..Default::default()
        })
        .unwrap();
        let policy = Policy::new(&engine, &bytes, "sticky-canary").unwrap();
        let mut ev = policy.evaluator();
        g.bench_function(format!("wasm_warm/{name}"), |b| {
            b.iter(|| ev.evaluate(black_box(&req), &route).unwrap())
        });
    }

    let engine = Engine::new().unwrap();
    let looping = std::fs::read(switchyard_test_artifacts::BAD_LOOP).unwrap();
    let policy = Policy::new(&engine, &looping, "bad-loop").unwrap();
    let mut ev = policy.evaluator();
    assert!(ev.evaluate(&req, &route).is_err());
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("exhaust", |b| {
        b.iter(|| ev.evaluate(black_box(&req), &route).unwrap_err())
    });
    g.finish();
}

fn instantiate(c: &mut Criterion) {
    let req = bench_request();
    let route = bench_route();
    let bytes = std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap();
    let mut g = c.benchmark_group("instantiate");
    g.throughput(Throughput::Elements(1));
    for (name, copy_on_write) in [("cow_off", false), ("cow_on", true)] {
        let engine = Engine::with_config(EngineConfig {
            copy_on_write,
            // Nothing kept resident (the default keeps 256 KiB where the
            // kernel has PAGEMAP_SCAN): what copy-on-write alone does.
            keep_resident: 0,
            table_keep_resident: 0,
            ..Default::default()
        })
        .unwrap();
        let policy = Policy::new(&engine, &bytes, "sticky-canary").unwrap();
        g.bench_function(format!("wasm_fresh/{name}"), |b| {
            b.iter(|| {
                policy
                    .evaluator()
                    .evaluate(black_box(&req), &route)
                    .unwrap()
            })
        });
    }
    // Memory (and tables) kept resident between instances, reset by
    // memset: of the whole kept part, or (PAGEMAP_SCAN) of the pages the
    // last instance dirtied.
    for (keep, pagemap_scan) in [
        (256usize << 10, false),
        (1 << 20, false),
        (256 << 10, true),
        (1 << 20, true),
        (16 << 20, true),
    ] {
        let engine = Engine::with_config(EngineConfig {
            keep_resident: keep,
            table_keep_resident: if keep > 0 { 64 << 10 } else { 0 },
            pagemap_scan,
            ..Default::default()
        })
        .unwrap();
        let policy = Policy::new(&engine, &bytes, "sticky-canary").unwrap();
        let scan = if pagemap_scan { "_pagemap" } else { "" };
        g.bench_function(format!("wasm_fresh/keep_{}k{scan}", keep >> 10), |b| {
            b.iter(|| {
                policy
                    .evaluator()
                    .evaluate(black_box(&req), &route)
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn swap(c: &mut Criterion) {
    let engine = Engine::new().unwrap();
    let canary = std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap();
    let header = std::fs::read(switchyard_test_artifacts::SYNTHETIC_HEADER).unwrap();
    let tmp = std::env::temp_dir().join(format!("switchyard-bench-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    let mut g = c.benchmark_group("swap");
    g.sample_size(20);
    g.bench_function("compile", |b| {
        b.iter(|| Policy::new(&engine, black_box(&canary), "sticky-canary").unwrap())
    });
    let policy = Policy::new(&engine, &canary, "sticky-canary").unwrap();
    let cwasm = tmp.join("sticky-canary.cwasm");
    std::fs::write(&cwasm, policy.serialize().unwrap()).unwrap();
    g.sample_size(100);
    g.bench_function("deserialize", |b| {
        b.iter(|| Policy::from_precompiled_file(&engine, policy.info().clone(), &cwasm).unwrap())
    });

    // End to end through the watcher. Two policies alternate and the
    // in-memory cache holds one, so every swap loads from the disk cache.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(DirStore::new(tmp.join("store")).unwrap());
    let watcher = Watcher::new(
        store.clone(),
        engine.clone(),
        WatchConfig {
            functions: vec!["orders".into()],
            cache_dir: Some(tmp.join("cache")),
            lru_capacity: 1,
            ..Default::default()
        },
    );
    let base = RouteConfig::from_json(switchyard_benches::BENCH_ROUTE_CONFIG).unwrap();
    let digests = rt.block_on(async {
        let mut digests = Vec::new();
        for bytes in [&canary, &header] {
            let digest = store.put_blob(bytes, &|_, _| {}).await.unwrap();
            let mut cfg = base.clone();
            cfg.policy = Some(digest);
            // Compile each once, filling the precompiled cache.
            store.put_route("orders", &cfg).await.unwrap();
            watcher.poll().await.unwrap();
            digests.push(digest);
        }
        digests
    });
    let versions = tmp.join("store/functions/orders");
    let mut turn = 0usize;
    g.bench_function("swap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                turn += 1;
                let mut cfg = base.clone();
                cfg.policy = Some(digests[turn % 2]);
                let version = rt.block_on(store.put_route("orders", &cfg)).unwrap();
                // Keep the history short (untimed): this measures a swap, not
                // listing a growing folder.
                let _ = std::fs::remove_file(versions.join(format!("{}.json", version - 1)));
                let start = Instant::now();
                let outcome = rt.block_on(watcher.poll()).unwrap();
                total += start.elapsed();
                assert!(
                    matches!(outcome[0].1, Outcome::Swapped { .. }),
                    "{outcome:?}"
                );
            }
            total
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&tmp);
}

criterion_group!(benches, decision, pool, sandbox, instantiate, swap);
criterion_main!(benches);
