//! The request a policy decides on.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One request to a function: what a policy sees. Header names are
/// lower-cased; lookups are case-insensitive.
///
/// A proxy hands over the request's own [`http::HeaderMap`]
/// ([`Request::from_http`]): the policy reads it in place, with no copy of
/// the headers it does not ask for, and the proxy takes it back
/// ([`Request::into_http_headers`]) to send the request on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Logical function name, e.g. `orders`.
    pub function: String,
    /// HTTP method, upper case.
    pub method: String,
    /// Path, e.g. `/api/v1/orders/1`.
    pub path: String,
    headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Headers {
    /// Names lower-cased, in arrival order.
    Pairs(Vec<(String, String)>),
    /// A request's own header map.
    Http(http::HeaderMap),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::Pairs(Vec::new())
    }
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
            headers: Headers::Pairs(
                headers
                    .into_iter()
                    .map(|(k, v)| {
                        let mut k = k.into();
                        k.make_ascii_lowercase();
                        (k, v.into())
                    })
                    .collect(),
            ),
        }
    }

    /// A request over an HTTP request's own header map, moved in (not
    /// copied). Values that are not UTF-8 read as their lossy UTF-8.
    pub fn from_http(
        function: impl Into<String>,
        method: &http::Method,
        path: impl Into<String>,
        headers: http::HeaderMap,
    ) -> Self {
        Request {
            function: function.into(),
            method: method.as_str().to_ascii_uppercase(),
            path: path.into(),
            headers: Headers::Http(headers),
        }
    }

    /// The header map given to [`Request::from_http`], back (a request
    /// built from pairs gives the pairs that are valid HTTP headers).
    pub fn into_http_headers(self) -> http::HeaderMap {
        match self.headers {
            Headers::Http(map) => map,
            Headers::Pairs(pairs) => pairs
                .into_iter()
                .filter_map(|(k, v)| {
                    Some((
                        http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                        http::HeaderValue::from_str(&v).ok()?,
                    ))
                })
                .collect(),
        }
    }

    /// First value of header `name`, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        match &self.headers {
            Headers::Pairs(pairs) => pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
            // `get` parses `name` as a header name, lower-casing it; a name
            // no header can have has no value.
            Headers::Http(map) => map.get(name).map(|v| String::from_utf8_lossy(v.as_bytes())),
        }
    }

    /// First value of header `name` (a parsed, lower-case name).
    pub fn header_named(&self, name: &http::HeaderName) -> Option<Cow<'_, str>> {
        match &self.headers {
            Headers::Pairs(pairs) => pairs
                .iter()
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
            Headers::Http(map) => map.get(name).map(|v| String::from_utf8_lossy(v.as_bytes())),
        }
    }

    /// All headers, names lower-cased, in arrival order (from an HTTP
    /// request, a repeated name's values come together, where the name
    /// first arrived).
    pub fn headers(&self) -> Vec<(String, String)> {
        match &self.headers {
            Headers::Pairs(pairs) => pairs.clone(),
            Headers::Http(map) => map
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
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
        assert_eq!(r.header("x-user-id").as_deref(), Some("u1"));
        assert_eq!(r.header("X-USER-ID").as_deref(), Some("u1"));
        assert_eq!(r.headers()[0].0, "x-user-id");
        assert_eq!(r.method, "GET");
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn an_http_header_map_reads_like_pairs_and_comes_back_whole() {
        let mut map = http::HeaderMap::new();
        map.append("x-user-id", http::HeaderValue::from_static("u1"));
        map.append("accept", http::HeaderValue::from_static("a"));
        map.append("x-user-id", http::HeaderValue::from_static("u2"));
        map.append("x-raw", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let r = Request::from_http("f", &http::Method::GET, "/", map.clone());
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.header("X-User-Id").as_deref(),
            Some("u1"),
            "the first value"
        );
        assert_eq!(
            r.header("x-raw").as_deref(),
            Some("caf\u{fffd}"),
            "lossy UTF-8"
        );
        assert_eq!(r.header("missing"), None);
        assert_eq!(r.header("not a header name"), None);
        let pairs = r.headers();
        assert_eq!(
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            [
                "x-user-id=u1",
                "x-user-id=u2",
                "accept=a",
                "x-raw=caf\u{fffd}"
            ]
        );
        assert_eq!(r.into_http_headers(), map);
        let from_pairs = Request::new("f", "get", "/", [("X-A", "1"), ("bad name", "2")]);
        let back = from_pairs.into_http_headers();
        assert_eq!(back.len(), 1);
        assert_eq!(back["x-a"], "1");
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
