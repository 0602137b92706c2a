//! Property tests of the core's parsers of untrusted input: the decide
//! API's request JSON and a stored route config. Whatever the input, a
//! value or an error, never a panic; what parses is within its limits.

use proptest::prelude::*;
use switchyard_core::{Request, RouteConfig};

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        ".{0,30}".prop_map(|s| serde_json::Value::from(s).to_string()),
    ];
    let key = prop_oneof![
        Just("function"),
        Just("method"),
        Just("path"),
        Just("headers"),
        Just("mode"),
        Just("versions"),
        Just("stable"),
        Just("candidate"),
        Just("flags"),
        Just("context"),
        Just("policy"),
        Just("dispatch"),
        Just("x"),
    ];
    leaf.prop_recursive(3, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key.clone(), inner), 0..7).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

proptest! {
    #[test]
    fn request_json_never_panics(text in prop_oneof![json_text(), ".{0,120}"]) {
        if let Ok(req) = Request::from_json(&text, Some("orders")) {
            prop_assert!(!req.function.is_empty());
        }
    }

    #[test]
    fn route_configs_never_panic(text in prop_oneof![json_text(), ".{0,120}"]) {
        if let Ok(cfg) = RouteConfig::from_json(&text) {
            // What parses can be written back and read again the same.
            let again = RouteConfig::from_json(&serde_json::to_string(&cfg).unwrap());
            prop_assert_eq!(again.ok(), Some(cfg));
        }
    }
}
