//! The live view in a real browser: `switchyard serve` routes requests while
//! headless Chromium (Debian's `chromium`) loads the admin listener's `/ui`;
//! the numbers the page shows match `/metrics`, and a screenshot is kept
//! (target/ui/live-view.png).

use switchyard_test_support as common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{curl, repo_root};
use switchyard_test_artifacts as art;

fn chromium(profile: &std::path::Path, args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Lets the page's fetch and its rendering finish before the dump.
        .arg("--virtual-time-budget=8000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium)")
}

/// `switchyard_requests_total` summed over statuses, by (function, target,
/// traffic).
fn requests_in_metrics(metrics: &str) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("switchyard_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap()
        };
        *out.entry((label("function"), label("target"), label("traffic")))
            .or_default() += value.trim().parse::<u64>().unwrap();
    }
    out
}

/// The totals the page shows: each `td.total` cell's data attributes and
/// text.
fn totals_on_page(dom: &str) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for cell in dom.split("<td class=\"num total\"").skip(1) {
        let attr = |name: &str| {
            let at = cell.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            cell[at..cell[at..].find('"').unwrap() + at].to_owned()
        };
        let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
        out.insert(
            (
                attr("data-function"),
                attr("data-target"),
                attr("data-traffic"),
            ),
            text.parse().unwrap(),
        );
    }
    out
}

#[test]
fn the_live_view_shows_what_the_metrics_count() {
    let upstream = common::echo_head_upstream();
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let config = format!(
        r#"{{"mode":"synthetic","versions":{{"stable":"7","candidate":"8"}},
            "dispatch":{{"type":"http","urls":{{"7":"{upstream}","8":"{upstream}"}}}}}}"#
    );
    for function in ["orders", "payments"] {
        common::publish_route(&store, function, art::SYNTHETIC_HEADER, &config, &[]);
    }
    let host = common::serve(&store, &["--poll-interval", "200ms"], &[]);
    let url = |f: &str| host.url(&format!("/{f}/x"));
    common::wait_until("the proxy did not come up", || {
        !(!curl(&[&url("orders")]).contains("get /x"))
    });
    for i in 0..7 {
        curl(&["-H", "x-switchyard-synthetic: true", &url("orders")]);
        if i < 3 {
            curl(&[&url("payments")]);
        }
    }
    for _ in 0..4 {
        curl(&[&url("orders")]);
    }
    // An unknown function: counted in the metrics under "-", not a row.
    curl(&[&url("nope")]);
    // A request refused before deciding: a client error of orders.
    curl(&["--path-as-is", &host.url("/orders/../x")]);
    // A newer payments version that does not parse (held back: version 1
    // keeps serving), and a function whose only version does not parse.
    let functions = tmp.path().join("store/functions");
    std::fs::write(functions.join("payments/2.json"), r#"{"mode":"synth"#).unwrap();
    std::fs::create_dir_all(functions.join("refunds")).unwrap();
    std::fs::write(functions.join("refunds/1.json"), r#"{"mode":"synth"#).unwrap();
    common::wait_until("the host did not see the broken versions", || {
        let mesh = curl(&[&host.admin_url("/v1/mesh")]);
        mesh.contains("held-back\":{") && mesh.contains("refunds")
    });

    let profile = tempfile::tempdir().unwrap();
    let page = host.admin_url("/ui");
    let o = chromium(profile.path(), &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    let shown = totals_on_page(&dom);
    let metrics = requests_in_metrics(&curl(&[&host.admin_url("/metrics")]));
    let key = |f: &str, t: &str, c: &str| (f.to_owned(), t.to_owned(), c.to_owned());
    // 1 + 4 production and 7 synthetic to orders, 3 production to payments.
    assert_eq!(
        shown.get(&key("orders", "8", "synthetic")),
        Some(&7),
        "{dom}"
    );
    assert_eq!(
        shown.get(&key("orders", "7", "production")),
        Some(&5),
        "{dom}"
    );
    assert_eq!(
        shown.get(&key("payments", "7", "production")),
        Some(&3),
        "{dom}"
    );
    for (series, n) in &shown {
        assert_eq!(
            metrics.get(series),
            Some(n),
            "{series:?}: the page says {n}, /metrics {metrics:?}"
        );
    }
    assert_eq!(
        shown.len(),
        metrics.keys().filter(|(f, _, _)| f != "-").count(),
        "every routed series is on the page: {shown:?} {metrics:?}"
    );
    assert!(dom.contains(r#"data-field="mode">synthetic<"#), "{dom}");
    assert_eq!(shown.get(&key("orders", "none", "none")), Some(&1), "{dom}");
    assert!(
        dom.contains(r#"<td class="num client-errors" data-function="orders" data-target="none" data-traffic="none">1</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"data-field="held-back">newer route version 2 not served"#),
        "{dom}"
    );
    assert!(
        dom.contains(
            r#"data-field="unloadable">nothing served: route version 1 could not be loaded"#
        ),
        "{dom}"
    );
    // One form of time on the page: ISO 8601, UTC.
    for field in [r#"id="updated">Updated "#, r#"data-field="modified">"#] {
        let at = dom.find(field).unwrap_or_else(|| panic!("{field}: {dom}")) + field.len();
        let time = &dom[at..at + 20];
        assert!(
            time.len() == 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "{field} {time:?}"
        );
    }

    // The screenshot, kept for the README.
    let shots = repo_root().join("target/ui");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("live-view.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,640",
        ],
        &page,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {o:?}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
