//! The Grafana dashboard (`docs/grafana/switchyard.json`) queries only
//! metrics the host exports: every `switchyard_*` name in its queries is
//! one the host's sources record (`counter!`, `gauge!`, `histogram!`), and
//! the ones an operator watches first are on it.

use std::collections::BTreeSet;
use std::path::Path;

use switchyard_test_support::repo_root;

/// Every metric name recorded in `dir`'s Rust sources.
fn recorded(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n != "target" && n != "tests")
            {
                recorded(&path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for kind in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(kind) {
                let rest = text[at + kind.len()..].trim_start();
                if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
                    && name.starts_with("switchyard_")
                {
                    out.insert(name.to_owned());
                }
            }
        }
    }
}

/// The `switchyard_*` names in a PromQL expression.
fn queried(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("switchyard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn every_dashboard_query_names_a_metric_the_host_exports() {
    let mut exported = BTreeSet::new();
    recorded(&repo_root().join("host"), &mut exported);
    assert!(
        exported.contains("switchyard_requests_total"),
        "{exported:?}"
    );
    let text = std::fs::read_to_string(repo_root().join("docs/grafana/switchyard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = queried(expr);
            assert!(!names.is_empty(), "{expr} queries no switchyard metric");
            for name in names {
                // A summary's series keep its name (quantile label); a
                // histogram's add these suffixes.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(*b)))
                    .unwrap_or(&name)
                    .to_owned();
                assert!(
                    exported.contains(&base),
                    "panel {:?} queries {name}, which the host does not export (it exports {exported:?})",
                    panel["title"]
                );
                used.insert(base);
            }
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
}
