//! Property tests of the parsers that face untrusted input: a Lambda
//! caller's client context, function names and ARNs, a function's proxy
//! response, and an API Gateway event. (`cargo fuzz` needs a sanitizer
//! build of the whole dependency tree, wasmtime and the AWS SDK included;
//! proptest on stable gives the same inputs a bounded run in CI. Set
//! `PROPTEST_CASES` for a longer one.) The seeds in `tests/corpus/` run
//! first, every time.

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_dispatch::{
    MAX_CLIENT_CONTEXT, client_context, custom_fields, is_tag, proxy_response, request_from_event,
    split_function_name,
};

/// Arbitrary JSON, a few levels deep, with the keys these parsers look at
/// mixed in so the interesting branches are reached.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("statusCode".to_owned()),
        Just("headers".to_owned()),
        Just("multiValueHeaders".to_owned()),
        Just("cookies".to_owned()),
        Just("body".to_owned()),
        Just("isBase64Encoded".to_owned()),
        Just("custom".to_owned()),
        Just("rawPath".to_owned()),
        Just("rawQueryString".to_owned()),
        Just("requestContext".to_owned()),
        Just("X-Switchyard-Traffic".to_owned()),
        Just("x-switchyard-ctx-db".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (100u16..700).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// What every client context input must satisfy.
fn check_client_context(raw: &str) {
    let fields = custom_fields(raw);
    for (k, _) in &fields {
        assert_eq!(k, &k.to_ascii_lowercase(), "names come out lower-cased");
    }
    let tags = vec![
        ("x-switchyard-traffic".to_owned(), "production".to_owned()),
        ("x-switchyard-ctx-queue".to_owned(), "q".to_owned()),
    ];
    let out = client_context(Some(raw), &tags);
    assert!(out.len() <= MAX_CLIENT_CONTEXT, "{} > limit", out.len());
    let sent = custom_fields(&out);
    // The mesh's tags are there, exactly, and no caller's tag survives.
    for (k, v) in &tags {
        assert_eq!(
            sent.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
            [v],
            "{k} in {sent:?}"
        );
    }
    for (k, _) in &sent {
        assert!(!is_tag(k) || tags.iter().any(|(t, _)| t == k), "forged {k}");
    }
}

fn check_proxy_response(payload: &[u8]) {
    if let Ok((status, headers, _body)) = proxy_response(payload) {
        assert!((100..=999).contains(&status.as_u16()));
        for (name, _) in &headers {
            assert!(!name.as_str().is_empty());
        }
    }
}

fn check_event(event: &Value) {
    if let Ok(req) = request_from_event(event, "/orders") {
        assert!(req.uri().path().starts_with('/'), "{:?}", req.uri());
    }
}

fn check_function_name(name: &str) {
    let (function, qualifier) = split_function_name(name);
    assert!(name.contains(function));
    if let Some(q) = qualifier {
        assert!(name.ends_with(q));
        assert!(
            !function.contains(':') || name.starts_with("arn:"),
            "{name:?} -> {function:?}"
        );
    }
}

proptest! {
    #[test]
    fn client_contexts_never_panic_and_never_carry_forged_tags(raw in ".{0,200}") {
        check_client_context(&raw);
    }

    #[test]
    fn json_client_contexts_plain_and_base64(v in json_value()) {
        let ctx = json!({"custom": v.clone(), "client": v});
        check_client_context(&ctx.to_string());
        check_client_context(&b64(&ctx.to_string()));
    }

    #[test]
    fn proxy_responses_never_panic(v in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_proxy_response(v.to_string().as_bytes());
        check_proxy_response(&bytes);
    }

    #[test]
    fn api_gateway_events_never_panic(v in json_value()) {
        check_event(&v);
    }

    #[test]
    fn function_names_and_arns_split_sanely(
        name in prop_oneof![
            ".{0,40}",
            "[a-z0-9-]{1,20}(:[A-Za-z0-9$_-]{1,10})?",
            "arn:aws:lambda:[a-z0-9-]{1,12}:[0-9]{12}:function:[a-z0-9-]{1,20}(:[A-Za-z0-9$_-]{1,10})?",
        ]
    ) {
        check_function_name(&name);
    }
}

/// The committed seeds: inputs that once broke something, or sit on an
/// edge, each run through the same checks.
#[test]
fn corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match name.split('-').next().unwrap() {
            "context" => check_client_context(text.trim_end()),
            "response" => check_proxy_response(text.as_bytes()),
            "event" => check_event(&serde_json::from_str(&text).unwrap_or(Value::Null)),
            "name" => check_function_name(text.trim_end()),
            other => panic!("{name}: unknown corpus kind {other:?}"),
        }
        seen += 1;
    }
    assert!(
        seen >= 8,
        "the corpus is missing ({seen} files in {})",
        dir.display()
    );
}
