//! Decision latency of `sticky-canary` on the reference request.
//!
//! Groups:
//! * `decision`: `native` (the same logic in plain Rust: the floor),
//!   `wasm_warm` (reused instance), `wasm_fresh` (new pooled instance per
//!   evaluation, configured, then evaluated).
//! * `sandbox`: `wasm_warm` with the fuel budget (`fuel`) and without
//!   (`unmetered`); `exhaust`: how long `bad-loop` takes to burn the default
//!   fuel budget (what "1 ms" means in fuel).
//! * `instantiate`: `wasm_fresh` with copy-on-write memory initialisation
//!   off (the default) and on.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::{Engine, EngineConfig, Policy};
use switchyard_benches::{NativeCanary, bench_request, bench_route};

fn decision(c: &mut Criterion) {
    let engine = Engine::new().unwrap();
    let bytes = std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap();
    let policy = Policy::new(&engine, &bytes, "sticky-canary").unwrap();
    let req = bench_request();
    let route = bench_route();
    let native = NativeCanary::configure(&route);
    let mut warm = policy.evaluator();

    // All must agree before anything is timed.
    let expected = native.evaluate(&req, &route);
    assert_eq!(warm.evaluate(&req, &route).unwrap(), expected);
    assert_eq!(policy.evaluator().evaluate(&req, &route).unwrap(), expected);

    let mut g = c.benchmark_group("decision");
    g.throughput(Throughput::Elements(1));
    g.bench_function("native", |b| {
        b.iter(|| native.evaluate(black_box(&req), &route))
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| warm.evaluate(black_box(&req), &route).unwrap())
    });
    g.bench_function("wasm_fresh", |b| {
        b.iter(|| {
            policy
                .evaluator()
                .evaluate(black_box(&req), &route)
                .unwrap()
        })
    });
    g.finish();
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
    g.finish();
}

criterion_group!(benches, decision, sandbox, instantiate);
criterion_main!(benches);
