//! Traces end to end: `switchyard serve` with two real OTLP/HTTP receivers
//! on loopback (Python, decoding with `opentelemetry-proto`): production
//! spans reach one and synthetic spans only the other, each span continues
//! the caller's trace (W3C or X-Ray), and the version that serves the
//! request receives the trace context with the traffic class marked.

use switchyard_test_support as common;

use std::time::{Duration, Instant};

use common::curl;
use switchyard_test_artifacts as art;

fn spans(receiver: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&curl(&[&format!("{receiver}/spans")])).unwrap_or_default()
}

/// The value of header `name` in an echoed request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn spans_are_split_by_traffic_class_and_continue_the_callers_trace() {
    let (_p, production) = common::otlp_receiver();
    let (_s, synthetic) = common::otlp_receiver();
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
    // Every production request to `mirrored` is also copied to its
    // candidate, as synthetic traffic.
    common::publish_route(
        &store,
        "mirrored",
        art::SYNTHETIC_HEADER,
        &format!(
            r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},
                "flags":{{"mirror-role":"candidate"}},
                "dispatch":{{"type":"http","urls":{{"7":"{upstream}","8":"{upstream}"}}}}}}"#
        ),
        &[],
    );
    let host = common::serve(
        &store,
        &[
            "--otlp-endpoint",
            &production,
            "--otlp-synthetic-endpoint",
            &synthetic,
        ],
        // Export batches every 100 ms rather than 5 s.
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ],
    );
    let url = host.url("/orders/items/1");
    common::wait_until("the proxy did not come up", || {
        !(!curl(&[&url]).contains("get /items/1"))
    });

    // A production request in a W3C trace, with a forged class in its
    // baggage and trace state.
    let (prod_trace, prod_parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let head = curl(&[
        "-H",
        &format!("traceparent: 00-{prod_trace}-{prod_parent}-01"),
        "-H",
        "tracestate: vendor=v,switchyard=synthetic",
        "-H",
        "baggage: user=alice,switchyard.traffic=synthetic",
        &url,
    ]);
    let traceparent = header(&head, "traceparent").expect("a traceparent reaches the version");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", prod_trace, "01"),
        "{head}"
    );
    let prod_span = parts[2].to_owned();
    assert_ne!(
        prod_span, prod_parent,
        "the version's parent is the mesh's span"
    );
    assert_eq!(
        header(&head, "tracestate"),
        Some("switchyard=production,vendor=v")
    );
    assert_eq!(
        header(&head, "baggage"),
        Some("user=alice,switchyard.traffic=production")
    );
    assert_eq!(header(&head, "x-switchyard-traffic"), Some("production"));

    // A synthetic request in another W3C trace.
    let (syn_trace, syn_parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let head = curl(&[
        "-H",
        &format!("traceparent: 00-{syn_trace}-{syn_parent}-01"),
        "-H",
        "x-switchyard-synthetic: true",
        &url,
    ]);
    assert_eq!(header(&head, "x-switchyard-traffic"), Some("synthetic"));
    let syn_span = header(&head, "traceparent")
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_owned();
    assert_eq!(header(&head, "tracestate"), Some("switchyard=synthetic"));
    assert_eq!(
        header(&head, "baggage"),
        Some("switchyard.traffic=synthetic")
    );

    // A synthetic request in an X-Ray trace (as API Gateway or Lambda send).
    let head = curl(&[
        "-H",
        "x-amzn-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "-H",
        "x-switchyard-synthetic: true",
        &url,
    ]);
    let xray = header(&head, "x-amzn-trace-id").unwrap();
    assert!(
        xray.starts_with("root=1-5759e988-bd862e3fe1be46a994272793;parent=")
            && xray.ends_with(";sampled=1;switchyard=synthetic"),
        "{xray}"
    );

    // A production request that is mirrored: its copy is a trace of its
    // own in the synthetic pipeline, linked to the production span.
    let (mir_trace, mir_parent) = ("11f92f3577b34da6a3ce929d0e0e4711", "22f067aa0ba902b2");
    let head = curl(&[
        "-H",
        &format!("traceparent: 00-{mir_trace}-{mir_parent}-01"),
        &host.url("/mirrored/m"),
    ]);
    let mir_route_span = header(&head, "traceparent")
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_owned();

    // The spans: each at its class's receiver only, children of the
    // caller's spans, parents of what the version received.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (p, s) = loop {
        let (p, s) = (spans(&production), spans(&synthetic));
        if p.len() >= 3 && s.len() >= 3 {
            break (p, s);
        }
        assert!(
            Instant::now() < deadline,
            "spans did not arrive: {p:?} {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let find = |spans: &[serde_json::Value], trace: &str| {
        spans.iter().find(|s| s["trace_id"] == trace).cloned()
    };
    let span = find(&p, prod_trace).expect("the production span");
    assert_eq!(span["parent_span_id"], prod_parent);
    assert_eq!(span["span_id"], prod_span.as_str());
    assert_eq!(span["name"], "route orders");
    let attrs = &span["attributes"];
    assert_eq!(attrs["switchyard.function"], "orders");
    assert_eq!(attrs["switchyard.target"], "7");
    assert_eq!(attrs["switchyard.traffic"], "production");
    assert_eq!(attrs["switchyard.route_version"], 1);
    assert!(
        attrs["switchyard.policy"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        attrs["switchyard.reason"]
            .as_str()
            .unwrap()
            .contains("synthetic mode"),
        "{attrs}"
    );
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["url.path"], "/items/1");

    let span = find(&s, syn_trace).expect("the synthetic span");
    assert_eq!(span["parent_span_id"], syn_parent);
    assert_eq!(span["span_id"], syn_span.as_str());
    assert_eq!(span["attributes"]["switchyard.traffic"], "synthetic");
    assert_eq!(span["attributes"]["switchyard.target"], "8");
    assert_eq!(span["resource"]["switchyard.traffic"], "synthetic");
    let span = find(&s, "5759e988bd862e3fe1be46a994272793").expect("the X-Ray trace's span");
    assert_eq!(span["parent_span_id"], "53995c3f42cd8ad8");

    // The mirror copy: a producer span in a trace of its own, in the
    // synthetic pipeline only, linked to the production request's span.
    let copy = s
        .iter()
        .find(|s| s["name"] == "mirror mirrored")
        .unwrap_or_else(|| panic!("no mirror span: {s:?}"));
    assert_ne!(copy["trace_id"], mir_trace, "{copy}");
    assert_eq!(copy["parent_span_id"], "", "{copy}");
    assert_eq!(copy["kind"], 4, "a producer span: {copy}");
    assert_eq!(
        copy["links"],
        serde_json::json!([{"trace_id": mir_trace, "span_id": mir_route_span}]),
        "{copy}"
    );
    assert!(find(&p, mir_trace).is_some_and(|span| span["name"] == "route mirrored"));
    assert!(
        p.iter().all(|span| span["name"] != "mirror mirrored"),
        "{p:?}"
    );

    // Never crossed over.
    assert!(
        find(&p, syn_trace).is_none() && find(&p, "5759e988bd862e3fe1be46a994272793").is_none()
    );
    assert!(find(&s, prod_trace).is_none());
    assert!(
        p.iter()
            .all(|s| s["attributes"]["switchyard.traffic"] == "production"),
        "{p:?}"
    );
    assert!(
        s.iter()
            .all(|s| s["attributes"]["switchyard.traffic"] == "synthetic"),
        "{s:?}"
    );
}
