//! The request a policy decides on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One request to a function: what a policy sees. Header names are stored
/// lower-cased; lookups are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Logical function name, e.g. `orders`.
    pub function: String,
    /// HTTP method, upper case.
    pub method: String,
    /// Path, e.g. `/api/v1/orders/1`.
    pub path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// Builds a request; header names are lower-cased, the method upper-cased.
    pub fn new<K, V>(
        function: impl Into<String>,
        method: impl Into<String>,
        path: impl Into<String>,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut method = method.into();
        method.make_ascii_uppercase();
        Request {
            function: function.into(),
            method,
            path: path.into(),
            headers: headers
                .into_iter()
                .map(|(k, v)| {
                    let mut k = k.into();
                    k.make_ascii_lowercase();
                    (k, v.into())
                })
                .collect(),
        }
    }

    /// First value of header `name`, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, names lower-cased, in arrival order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Parses the request JSON contract:
    /// `{"function":"orders","method":"GET","path":"/x","headers":{"name":"value"}}`.
    /// `function` may be omitted when `default_function` is given; `method`
    /// defaults to `GET` and `path` to `/`.
    pub fn from_json(json: &str, default_function: Option<&str>) -> Result<Self, RequestError> {
        let raw: RequestJson = serde_json::from_str(json).map_err(RequestError::Json)?;
        raw.into_request(default_function)
    }
}

/// A request that could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not valid request JSON.
    #[error(
        "invalid request JSON: {0} (expected {{\"function\":\"orders\",\"method\":\"GET\",\"path\":\"/x\",\"headers\":{{\"name\":\"value\"}}}})"
    )]
    Json(serde_json::Error),
    /// Neither the request nor the caller named the function.
    #[error("the request names no function: add \"function\" to it")]
    NoFunction,
}

/// The request JSON contract, as parsed.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestJson {
    /// Function name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Method, default GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path, default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Headers by name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl RequestJson {
    /// Converts into a [`Request`], taking `default_function` when the JSON
    /// names none.
    pub fn into_request(self, default_function: Option<&str>) -> Result<Request, RequestError> {
        // An empty name is no name (found by the property tests: `[""]`
        // parsed as a request for the function "").
        let function = match (self.function.filter(|f| !f.is_empty()), default_function) {
            (Some(f), _) => f,
            (None, Some(f)) if !f.is_empty() => f.to_owned(),
            (None, _) => return Err(RequestError::NoFunction),
        };
        Ok(Request::new(
            function,
            self.method.unwrap_or_else(|| "GET".into()),
            self.path.unwrap_or_else(|| "/".into()),
            self.headers,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive_and_names_are_lowered() {
        let r = Request::new("f", "get", "/", [("X-User-Id", "u1"), ("Accept", "a")]);
        assert_eq!(r.header("x-user-id"), Some("u1"));
        assert_eq!(r.header("X-USER-ID"), Some("u1"));
        assert_eq!(r.headers()[0].0, "x-user-id");
        assert_eq!(r.method, "GET");
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn json_defaults_and_errors() {
        let r = Request::from_json(r#"{"headers":{"A":"1"}}"#, Some("orders")).unwrap();
        assert_eq!(
            (r.function.as_str(), r.method.as_str(), r.path.as_str()),
            ("orders", "GET", "/")
        );
        assert!(matches!(
            Request::from_json("{}", None),
            Err(RequestError::NoFunction)
        ));
        for empty in [r#"{"function":""}"#, r#"[""]"#] {
            assert!(
                matches!(
                    Request::from_json(empty, None),
                    Err(RequestError::NoFunction)
                ),
                "{empty}"
            );
        }
        let err = Request::from_json(r#"{"fn":"x"}"#, None).unwrap_err();
        assert!(err.to_string().contains("unknown field `fn`"), "{err}");
    }
}
