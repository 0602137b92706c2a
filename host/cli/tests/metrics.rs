//! The metric catalogue (each crate's `catalogue.rs`: every metric's name,
//! kind, labels and help, defined once) against what a running host
//! exports, what a real Prometheus and `promtool` make of it, what the docs
//! name and what the Grafana dashboard queries. Renaming a metric, or a
//! label, without the docs or the dashboard fails here.

use switchyard_test_support as common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::prometheus::{Prometheus, promtool_check_metrics};
use serde_json::json;
use switchyard_core::{Metric, MetricKind};

fn catalogue() -> BTreeMap<&'static str, &'static Metric> {
    let mut all = BTreeMap::new();
    for m in switchyard_proxy::metric_catalogue() {
        assert!(
            all.insert(m.name, m).is_none(),
            "{} is defined twice",
            m.name
        );
        assert!(m.name.starts_with("switchyard_"), "{}", m.name);
        assert_eq!(
            m.kind == MetricKind::Counter,
            m.name.ends_with("_total"),
            "{}: counters, and only counters, end in _total",
            m.name
        );
        assert!(!m.help.is_empty(), "{} has no help text", m.name);
    }
    all
}

/// The catalogue metric a series or query name belongs to (a histogram's
/// or summary's `_bucket`, `_sum` and `_count` series included).
fn family<'a>(cat: &BTreeMap<&str, &'a Metric>, name: &str) -> Option<&'a Metric> {
    cat.get(name).copied().or_else(|| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .and_then(|base| cat.get(base).copied())
            .filter(|m| m.kind == MetricKind::Histogram)
    })
}

/// Label names a series of `m` may carry beyond its own.
fn implicit(m: &Metric) -> &'static [&'static str] {
    match m.kind {
        MetricKind::Histogram => &["quantile", "le"],
        _ => &[],
    }
}

/// Each `switchyard_*` name in `text`, with the label names written in
/// braces right after it (`name{a,b}` or `name{a="x"}`).
fn named(text: &str) -> Vec<(String, Vec<String>)> {
    // Crate names, not metrics.
    const CRATES: &[&str] = &[
        "switchyard_core",
        "switchyard_config",
        "switchyard_dispatch",
        "switchyard_proxy",
        "switchyard_lambda",
        "switchyard_guest",
        "switchyard_test_support",
        "switchyard_test_artifacts",
    ];
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchyard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if CRATES.contains(&name.as_str()) || rest.starts_with("::") {
            continue;
        }
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
            for part in inner.0.split(',') {
                let label = part
                    .split(['=', '!', '~'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                if !label.is_empty() {
                    labels.push(label);
                }
            }
        }
        out.push((name, labels));
    }
    out
}

/// Every Markdown file the README links a newcomer to: the README and
/// `docs/`.
fn docs() -> Vec<(String, String)> {
    let root = common::repo_root();
    let mut files = vec![root.join("README.md"), root.join("host/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|x| x == "md") {
            files.push(entry.path());
        }
    }
    files
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(&root).unwrap_or(&p).display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_metric_the_docs_name_is_in_the_catalogue_with_its_labels() {
    let cat = catalogue();
    let mut mentioned = BTreeSet::new();
    for (file, text) in docs() {
        for (name, labels) in named(&text) {
            let m = family(&cat, &name).unwrap_or_else(|| {
                panic!("{file} names {name}, which no catalogue defines (renamed or removed?)")
            });
            for l in &labels {
                assert!(
                    m.labels.contains(&l.as_str()) || implicit(m).contains(&l.as_str()),
                    "{file} gives {name} a label {l:?}; the catalogue's are {:?}",
                    m.labels
                );
            }
            mentioned.insert(m.name);
        }
    }
    // The reference page lists every one, as the catalogue defines it.
    let page = std::fs::read_to_string(common::repo_root().join("docs/metrics.md")).unwrap();
    let mut rows = BTreeMap::new();
    for line in page.lines().filter(|l| l.starts_with("| `switchyard_")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 4, "docs/metrics.md: {line}");
        rows.insert(cells[0].trim_matches('`').to_owned(), cells);
    }
    let mut expected = String::new();
    for m in cat.values() {
        let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
        expected.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            labels.join(", "),
            m.help
        ));
    }
    for m in cat.values() {
        let row = rows.get(m.name).unwrap_or_else(|| {
            panic!(
                "docs/metrics.md has no row for {}; its table should be:\n{expected}",
                m.name
            )
        });
        let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
        assert_eq!(
            (row[1], row[2], row[3]),
            (m.kind.as_str(), labels.join(", ").as_str(), m.help),
            "docs/metrics.md's row for {} differs from the catalogue; the table should be:\n{expected}",
            m.name
        );
        assert!(mentioned.contains(m.name), "no doc names {}", m.name);
    }
    assert_eq!(
        rows.len(),
        cat.len(),
        "docs/metrics.md lists metrics no catalogue defines; the table should be:\n{expected}"
    );
}

/// A Grafana query as Prometheus runs it: the dashboard's variables
/// replaced as Grafana would (`$__rate_interval` is at least four scrape
/// intervals).
fn as_prometheus_runs_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
}

/// The label names a PromQL expression uses: in selectors and in `by`,
/// `without`, `on` and `ignoring` clauses.
fn query_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (open, close) in [('{', '}'), ('(', ')')] {
        let mut rest = expr;
        while let Some(at) = rest.find(open) {
            let before = rest[..at].trim_end();
            let inner = &rest[at + 1..];
            let Some(end) = inner.find(close) else { break };
            let body = &inner[..end];
            rest = &inner[end..];
            let grouping = [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .iter()
            .any(|k| before.ends_with(k));
            if open == '{' || grouping {
                for part in body.split(',') {
                    let l = part.split(['=', '!', '~']).next().unwrap_or("").trim();
                    if !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        out.push(l.to_owned());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_live_host_exports_what_the_catalogue_defines_and_prometheus_runs_every_dashboard_query() {
    let cat = catalogue();
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let upstream = common::echo_head_upstream();
    let route = json!({
        "mode": "synthetic",
        "versions": {"stable": "7", "candidate": "8"},
        "flags": {"mirror-role": "candidate"},
        "dispatch": {"type": "http", "urls": {"7": upstream, "8": upstream}},
        "guard": {"max-error-rate": 0.5, "min-requests": 100},
    });
    common::publish_synthetic_header(&store, "orders", &route, tmp.path());
    let host = common::serve(&store, &["--poll-interval", "1s"], &[]);
    common::wait_until("the host ready", || {
        common::call(&host.admin_url("/healthz"), &[]).0 == 200
    });
    let prometheus = Prometheus::scraping(
        &[format!("127.0.0.1:{}", host.admin)],
        Duration::from_millis(500),
    );
    // Traffic of both classes, and answers refused before a decision: once,
    // scraped, then more, so Prometheus sees each series grow (a series
    // that first appears at its first event shows no increase for it).
    let traffic = |n| {
        for _ in 0..n {
            assert_eq!(common::call(&host.url("/orders/a"), &[]).0, 200);
            let synthetic = common::call(
                &host.url("/orders/a"),
                &["-H", "x-switchyard-synthetic: true"],
            );
            assert_eq!(synthetic.0, 200);
            assert_eq!(common::call(&host.url("/nowhere/a"), &[]).0, 404);
        }
    };
    traffic(1);
    prometheus.wait_for_next_scrapes(1);
    traffic(4);
    common::wait_until("the mirror copies counted", || {
        host.metric(r#"switchyard_mirror_total{function="orders",target="8",status="200"}"#) >= 5
    });

    // The scrape: every family described, none outside the catalogue, each
    // with the catalogue's kind and labels; promtool finds nothing to lint.
    let text = common::curl(&[&host.admin_url("/metrics")]);
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    let mut helped = BTreeSet::new();
    let mut typed = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            let m = cat
                .get(name)
                .unwrap_or_else(|| panic!("{name} is not in the catalogue"));
            assert_eq!(help, m.help, "{name}'s help");
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let m = family(&cat, &name)
                .unwrap_or_else(|| panic!("the host exports {name}, which no catalogue defines"));
            let labels: Vec<String> = named(line)
                .first()
                .map(|(_, l)| l.clone())
                .unwrap_or_default();
            let own: Vec<&str> = labels
                .iter()
                .map(String::as_str)
                .filter(|l| !implicit(m).contains(l))
                .collect();
            assert_eq!(own, m.labels, "{line}: labels differ from the catalogue's");
        }
    }
    for (name, kind) in &typed {
        let m = cat[name.as_str()];
        assert!(helped.contains(name), "{name} has no # HELP");
        let expected: &[&str] = match m.kind {
            MetricKind::Histogram => &["summary", "histogram"],
            k => &[k.as_str()],
        };
        assert!(
            expected.contains(&kind.as_str()),
            "{name} is a {kind}, catalogued as {:?}",
            m.kind
        );
    }
    // Rare events exist at 0 before they happen, so increase() sees the
    // first: per routed function, and per kind where no function applies.
    for series in [
        r#"switchyard_guard_trips_total{function="orders",traffic="production"} 0"#,
        r#"switchyard_guard_rollbacks_total{function="orders",outcome="failed"} 0"#,
        r#"switchyard_rejected_versions_total{function="orders"} 0"#,
        r#"switchyard_mirror_dropped_total{function="orders"} 0"#,
        r#"switchyard_store_errors_total{kind="corrupt"} 0"#,
        r#"switchyard_policy_signature_refused_total{why="unsigned"} 0"#,
        "switchyard_cache_refused_total 0",
    ] {
        assert!(text.lines().any(|l| l == series), "no {series} in:\n{text}");
    }
    for seen in [
        "switchyard_requests_total",
        "switchyard_decision_seconds",
        "switchyard_mirror_total",
        "switchyard_swaps_total",
        "switchyard_route_version",
        "switchyard_connections_open",
    ] {
        assert!(
            typed.contains_key(seen),
            "the scrape has no {seen}:\n{text}"
        );
    }

    // The request duration has buckets, so quantiles add up across hosts.
    assert_eq!(
        typed
            .get("switchyard_request_duration_seconds")
            .map(String::as_str),
        Some("histogram"),
        "the request duration must be a histogram with buckets, not a summary:\n{text}"
    );
    for le in ["0.0005", "900", "+Inf"] {
        let bucket = format!(
            r#"switchyard_request_duration_seconds_bucket{{function="orders",target="7",traffic="production",le="{le}"}}"#
        );
        assert!(
            text.lines().any(|l| l.starts_with(&bucket)),
            "no {bucket} in:\n{text}"
        );
    }

    // The dashboard: every query names catalogued metrics and labels, and
    // Prometheus runs it; a panel's queries are told apart by their legends.
    prometheus.wait_for_next_scrapes(1);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("docs/grafana/switchyard.json")).unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        let legends: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["legendFormat"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            legends.len(),
            targets.len(),
            "panel {} queries share a legend",
            panel["title"]
        );
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                !expr.contains("[1m]"),
                "{expr}: use [$__rate_interval], not a fixed window"
            );
            let names = named(expr);
            assert!(!names.is_empty(), "{expr} queries no switchyard metric");
            let mut allowed: BTreeSet<&str> = ["instance", "job"].into();
            for (name, _) in &names {
                let m = family(&cat, name).unwrap_or_else(|| {
                    panic!(
                        "panel {} queries {name}, not in the catalogue",
                        panel["title"]
                    )
                });
                allowed.extend(m.labels.iter().copied());
                allowed.extend(implicit(m).iter().copied());
                used.insert(m.name);
            }
            for l in query_labels(expr) {
                assert!(
                    allowed.contains(l.as_str()),
                    "{expr} uses label {l:?}, which its metrics do not have"
                );
            }
            prometheus.query(&as_prometheus_runs_it(expr));
        }
    }
    for first in [
        "switchyard_requests_total",
        "switchyard_decision_seconds",
        "switchyard_fail_safe_total",
        "switchyard_guard_trips_total",
        "switchyard_shadow_diff_total",
        "switchyard_rejected_versions_total",
    ] {
        assert!(
            used.contains(first),
            "the dashboard has no panel on {first}"
        );
    }
    // What the first panel shows, Prometheus saw.
    let query = as_prometheus_runs_it(
        r#"sum(rate(switchyard_requests_total{function="orders",traffic="synthetic"}[$__rate_interval]))"#,
    );
    common::eventually(
        Duration::from_secs(30),
        "a synthetic request rate",
        || match prometheus.value(&query) {
            Some(rate) if rate > 0.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A fleet-wide quantile of the synthetic requests' duration: a time
    // between the smallest bucket and a loopback answer's worst.
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(switchyard_request_duration_seconds_bucket{function="orders",traffic="synthetic"}[1m])))"#;
    common::eventually(
        Duration::from_secs(30),
        "a synthetic p99 request duration",
        || match prometheus.value(p99) {
            Some(v) if v > 0.0 && v < 5.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A real guard trip and a real refused version: Prometheus sees each
    // as an increase of 1 (the series were there at 0 before).
    let route = |candidate: &str, stable: &str| {
        json!({
            "mode": "synthetic",
            "versions": {"stable": "7", "candidate": "8"},
            "dispatch": {"type": "http", "urls": {"7": stable, "8": candidate}},
            "guard": {"max-error-rate": 0.5, "min-requests": 4},
        })
    };
    // Nothing listens on port 1: every candidate answer is a 502.
    common::publish_synthetic_header(
        &store,
        "orders",
        &route("http://127.0.0.1:1", &upstream),
        tmp.path(),
    );
    common::wait_until("the failing candidate live", || {
        host.metric(r#"switchyard_route_version{function="orders"}"#) == 2
    });
    let synthetic = || {
        common::call(
            &host.url("/orders/a"),
            &["-H", "x-switchyard-synthetic: true"],
        )
        .0
    };
    for _ in 0..4 {
        assert_eq!(synthetic(), 502);
    }
    assert_eq!(
        synthetic(),
        200,
        "the tripped guard sends synthetic traffic to stable"
    );
    // A version whose dispatch block this host refuses: written straight
    // into the folder store, since `switchyard publish` checks it first.
    let versions = tmp.path().join("store/functions/orders");
    let good = std::fs::read_to_string(versions.join("2.json")).unwrap();
    assert!(good.contains("http://127.0.0.1:1"), "{good}");
    std::fs::write(
        versions.join("3.json"),
        good.replace("http://127.0.0.1:1", "not a url"),
    )
    .unwrap();
    common::wait_until("the bad version refused", || {
        host.metric(r#"switchyard_rejected_versions_total{function="orders"}"#) == 1
    });
    prometheus.wait_for_next_scrapes(1);
    for series in [
        r#"switchyard_guard_trips_total{function="orders",traffic="synthetic"}"#,
        r#"switchyard_rejected_versions_total{function="orders"}"#,
    ] {
        let rise = format!("max_over_time({series}[1m]) - min_over_time({series}[1m])");
        let increase = format!("increase({series}[1m])");
        common::eventually(Duration::from_secs(30), &increase, || {
            match (prometheus.value(&rise), prometheus.value(&increase)) {
                (Some(r), Some(i)) if r == 1.0 && (0.9..1.6).contains(&i) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
}
