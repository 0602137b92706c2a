//! The same policy (`sticky-canary`) built from Rust, JavaScript (QuickJS
//! and SpiderMonkey) and Python, on the reference request: what each
//! language costs the host. Builds the JavaScript and Python components
//! first (needs componentize-py and `npm ci --prefix policies/js`; see the
//! README) and prints their sizes.
//!
//! Group `languages`: `warm/<lang>` (reused instance), `fresh/<lang>` (new
//! pooled instance per evaluation: instantiate, configure, evaluate),
//! `deserialize/<lang>` (from the precompiled cache file, what a host does
//! at start or on a swap once a version has been compiled) and
//! `compile/<lang>` (component bytes to a ready policy, 10 samples).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::{self as build, JsBackend};
use switchyard_benches::{bench_request, bench_route};
use switchyard_core::{Engine, EngineConfig, Policy};

fn components() -> Vec<(&'static str, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/bench-languages");
    std::fs::create_dir_all(&out).unwrap();
    let mut all = vec![(
        "rust",
        std::fs::read(switchyard_test_artifacts::STICKY_CANARY).unwrap(),
    )];
    for (name, dir, js) in [
        (
            "js-quickjs",
            "policies/js/sticky-canary",
            JsBackend::QuickJs,
        ),
        (
            "js-spidermonkey",
            "policies/js/sticky-canary",
            JsBackend::SpiderMonkey,
        ),
        (
            "python",
            "policies/python/sticky-canary",
            JsBackend::default(),
        ),
    ] {
        let path = out.join(format!("{name}.component.wasm"));
        let built = build::build(&root.join(dir), Some(&path), js)
            .unwrap_or_else(|e| panic!("building the {name} policy: {e}"));
        all.push((name, std::fs::read(built.path).unwrap()));
    }
    for (name, bytes) in &all {
        eprintln!("languages: {name} component is {} bytes", bytes.len());
    }
    all
}

/// How many of `calls` warm calls of `policy` failed under the default
/// limits, by kind (`budget`, `memory`, ...).
fn failures(policy: &std::sync::Arc<Policy>, calls: usize) -> Vec<(&'static str, usize)> {
    let (req, route) = (bench_request(), bench_route());
    let mut ev = policy.evaluator();
    let mut out: Vec<(&'static str, usize)> = Vec::new();
    for _ in 0..calls {
        if let Err(e) = ev.evaluate(&req, &route) {
            match out.iter_mut().find(|(k, _)| *k == e.kind()) {
                Some((_, n)) => *n += 1,
                None => out.push((e.kind(), 1)),
            }
        }
    }
    out
}

fn languages(c: &mut Criterion) {
    let engine = Engine::new().unwrap();
    // SpiderMonkey's heap outgrows the default limits on a warm instance
    // (its collector takes some calls past the fuel budget, and memory grows
    // past 16 MiB before the 10,000-call recycle; counted below), so it is
    // timed with ten times the budget and 128 MiB of growth.
    let roomy = Engine::with_config(EngineConfig {
        fuel: Some(10 * switchyard_core::DEFAULT_FUEL),
        memory_limit: 128 << 20,
        ..Default::default()
    })
    .unwrap();
    let req = bench_request();
    let route = bench_route();
    let tmp = std::env::temp_dir().join(format!("switchyard-bench-langs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let components = components();
    let mut g = c.benchmark_group("languages");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in &components {
        let policy = Policy::new(&engine, bytes, name).unwrap();
        eprintln!(
            "languages: {name}: failures in 20000 warm calls under the default limits: {:?}",
            failures(&policy, 20_000)
        );
        let engine = if *name == "js-spidermonkey" {
            &roomy
        } else {
            &engine
        };
        let policy = Policy::new(engine, bytes, name).unwrap();
        let expected = policy.evaluator().evaluate(&req, &route).unwrap();
        let mut warm = policy.evaluator();
        assert_eq!(warm.evaluate(&req, &route).unwrap(), expected, "{name}");
        g.bench_function(format!("warm/{name}"), |b| {
            b.iter(|| warm.evaluate(black_box(&req), &route).unwrap())
        });
        g.bench_function(format!("fresh/{name}"), |b| {
            b.iter(|| {
                policy
                    .evaluator()
                    .evaluate(black_box(&req), &route)
                    .unwrap()
            })
        });
        let cwasm = tmp.join(format!("{name}.cwasm"));
        std::fs::write(&cwasm, policy.serialize().unwrap()).unwrap();
        eprintln!(
            "languages: {name} precompiled is {} bytes",
            std::fs::metadata(&cwasm).unwrap().len()
        );
        g.bench_function(format!("deserialize/{name}"), |b| {
            b.iter(|| Policy::from_precompiled_file(engine, policy.info().clone(), &cwasm).unwrap())
        });
    }
    g.sample_size(10);
    for (name, bytes) in &components {
        g.bench_function(format!("compile/{name}"), |b| {
            b.iter(|| Policy::new(&engine, black_box(bytes), name).unwrap())
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&tmp);
}

criterion_group!(benches, languages);
criterion_main!(benches);
