//! API Gateway's HTTP API (payload format 2.0), in both directions and in
//! one place: the event a function behind API Gateway receives and the
//! proxy response it returns, read as API Gateway reads them.
//!
//! Kept as JSON rather than `aws_lambda_events`' typed structs on purpose:
//! the router function hands the caller's `requestContext` (authorizer
//! claims of any shape, source IP, stage, request id, domain) to the
//! chosen version unchanged, and a typed round trip drops what the types
//! do not model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::dispatcher::{HttpCall, RequestContext, Target};
use crate::headers::outgoing;

/// The event a function version receives for an HTTP call: [`event`]
/// over the call's outgoing headers (tagged for `to`: the traffic class and
/// the context), with the client's `Host` kept. What `lambda` invokes with
/// and `step-functions` starts an execution with.
pub(crate) fn tagged_event(call: &HttpCall, to: &Target) -> Value {
    let mut headers = outgoing(&call.headers, to);
    if let Some(host) = call.headers.get(http::header::HOST) {
        headers.insert(http::header::HOST, host.clone());
    }
    event(
        &call.method,
        &call.path,
        &call.query,
        &headers,
        &call.body,
        call.request_context.as_ref(),
    )
}

/// The event for a request, as a Lambda function behind API Gateway or a
/// function URL receives it. `headers` are what the function should see
/// (the mesh's tags included); repeated headers are joined with `,` as API
/// Gateway joins them, cookies become `cookies`. A body that is not UTF-8
/// is sent base64-encoded. With `context` (the caller's API Gateway
/// request context) that is the event's `requestContext`, unchanged;
/// without, one is made as a function URL would make it.
pub fn event(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    context: Option<&RequestContext>,
) -> Value {
    let mut hdrs = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == http::header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_owned())),
            );
            continue;
        }
        join_into(&mut hdrs, name.as_str(), &value);
    }
    let mut query = Map::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        join_into(&mut query, &k, &v);
    }
    let (body, is_base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (B64.encode(body), true),
    };
    let request_context = match context {
        Some(RequestContext(ctx)) => ctx.clone(),
        None => made_context(method, raw_path, &hdrs),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": hdrs,
        "requestContext": request_context,
        "body": body,
        "isBase64Encoded": is_base64,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    event
}

/// A request context for a request that did not come through API Gateway.
fn made_context(method: &Method, raw_path: &str, hdrs: &Map<String, Value>) -> Value {
    let header = |name: &str| hdrs.get(name).and_then(Value::as_str).unwrap_or("");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "accountId": "anonymous",
        "apiId": "switchyard",
        "domainName": header("host"),
        "domainPrefix": header("host").split('.').next().unwrap_or(""),
        "http": {
            "method": method.as_str(),
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": header("user-agent"),
        },
        "requestId": request_id(now.as_nanos()),
        "routeKey": "$default",
        "stage": "$default",
        "time": clf_time(now.as_secs()),
        "timeEpoch": now.as_millis() as u64,
    })
}

/// Adds `value` under `key`, joining a repeat with `,` (API Gateway's rule
/// for repeated headers and query parameters).
fn join_into(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get_mut(key) {
        Some(Value::String(existing)) => {
            existing.push(',');
            existing.push_str(value);
        }
        _ => {
            map.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
}

fn request_id(nanos: u128) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("sy-{:x}-{seq:x}", nanos)
}

/// `25/Nov/2026:15:54:48 +0000`, the format of `requestContext.time`.
fn clf_time(secs: u64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// A function's proxy response that cannot be turned into HTTP.
#[derive(Debug, thiserror::Error)]
#[error("invalid proxy response from the function: {0}")]
pub struct BadProxyResponse(String);

/// Maps a function's response to HTTP the way API Gateway does for payload
/// format 2.0: an object with `statusCode` gives the status, `headers`,
/// `multiValueHeaders`, `cookies` and `body` (base64-decoded when
/// `isBase64Encoded`); any other JSON is a 200 `application/json` body.
pub fn proxy_response(payload: &[u8]) -> Result<(StatusCode, HeaderMap, Bytes), BadProxyResponse> {
    let bad = |m: String| BadProxyResponse(m);
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        bad(format!(
            "not JSON ({e}); return {{\"statusCode\":200,\"body\":\"...\"}} or any JSON value"
        ))
    })?;
    let Some(obj) = value.as_object().filter(|o| o.contains_key("statusCode")) else {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok((StatusCode::OK, headers, Bytes::copy_from_slice(payload)));
    };
    let status = obj["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| {
            bad(format!(
                "statusCode {} is not an HTTP status",
                obj["statusCode"]
            ))
        })?;
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &Value| -> Result<(), BadProxyResponse> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            other => return Err(bad(format!("header {name:?} has value {other}"))),
        };
        let name = HeaderName::try_from(name).map_err(|e| bad(format!("header {name:?}: {e}")))?;
        let value = HeaderValue::try_from(text).map_err(|e| bad(format!("header {name}: {e}")))?;
        headers.append(name, value);
        Ok(())
    };
    if let Some(map) = obj.get("headers").and_then(Value::as_object) {
        for (k, v) in map {
            add(k, v)?;
        }
    }
    if let Some(map) = obj.get("multiValueHeaders").and_then(Value::as_object) {
        for (k, vs) in map {
            for v in vs.as_array().into_iter().flatten() {
                add(k, v)?;
            }
        }
    }
    for cookie in obj
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("set-cookie", cookie)?;
    }
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            B64.decode(s).map(Bytes::from).map_err(|e| {
                bad(format!(
                    "isBase64Encoded is true but body is not base64: {e}"
                ))
            })?
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    Ok((status, headers, body))
}

/// The request an event stands for: method, `prefix` + `rawPath`, query,
/// headers (cookies joined back into `cookie`), body (base64-decoded when
/// marked), and the event's `requestContext` as a [`RequestContext`]
/// extension.
pub fn request_from_event(event: &Value, prefix: &str) -> Result<http::Request<Bytes>, BadEvent> {
    let bad = BadEvent;
    let method = event["requestContext"]["http"]["method"]
        .as_str()
        .unwrap_or("GET");
    let path = event["rawPath"].as_str().unwrap_or("/");
    let mut uri = format!("{prefix}{path}");
    if let Some(q) = event["rawQueryString"].as_str().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q);
    }
    let mut builder = http::Request::builder().method(method).uri(&uri);
    if let Some(headers) = event["headers"].as_object() {
        for (k, v) in headers {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(k.as_str()),
                v.as_str().map(HeaderValue::try_from),
            ) else {
                return Err(bad(format!("header {k:?} is not a valid HTTP header")));
            };
            builder = builder.header(name, value);
        }
    }
    if let Some(cookies) = event["cookies"].as_array() {
        let joined: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            builder = builder.header("cookie", joined.join("; "));
        }
    }
    let body = match event["body"].as_str() {
        None => Vec::new(),
        Some(b) if event["isBase64Encoded"].as_bool() == Some(true) => B64
            .decode(b)
            .map_err(|e| bad(format!("body is marked base64 but is not: {e}")))?,
        Some(b) => b.as_bytes().to_vec(),
    };
    if let Some(ctx) = event.get("requestContext").filter(|c| c.is_object()) {
        builder = builder.extension(RequestContext(ctx.clone()));
    }
    builder
        .body(Bytes::from(body))
        .map_err(|e| bad(format!("cannot build the request {method} {uri}: {e}")))
}

/// An event that is not a usable API Gateway HTTP API request.
#[derive(Debug, thiserror::Error)]
#[error("invalid API Gateway event: {0}")]
pub struct BadEvent(pub String);

/// A response as API Gateway 2.0's response to the caller: repeated
/// headers joined with `,`, `set-cookie` as `cookies`, a body that is not
/// UTF-8 base64-encoded.
pub fn response_event(parts: &http::response::Parts, bytes: &[u8]) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (k, v) in &parts.headers {
        let Ok(v) = v.to_str() else { continue };
        if k == http::header::SET_COOKIE {
            cookies.push(Value::from(v));
            continue;
        }
        join_into(&mut headers, k.as_str(), v);
    }
    let (body, base64) = match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (B64.encode(bytes), true),
    };
    let mut out = json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        out["cookies"] = Value::Array(cookies);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_has_the_v2_shape() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.example.com"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("cookie", HeaderValue::from_static("a=1; b=2"));
        let e = event(&Method::POST, "/orders/1", "q=x%20y&q=z&k", &h, b"hi", None);
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["rawPath"], "/orders/1");
        assert_eq!(e["rawQueryString"], "q=x%20y&q=z&k");
        assert_eq!(e["queryStringParameters"]["q"], "x y,z");
        assert_eq!(e["queryStringParameters"]["k"], "");
        assert_eq!(e["headers"]["x-a"], "1,2");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["domainName"], "api.example.com");
        assert_eq!(e["body"], "hi");
        assert_eq!(e["isBase64Encoded"], false);
        let bin = event(
            &Method::PUT,
            "/",
            "",
            &HeaderMap::new(),
            &[0xff, 0, 1],
            None,
        );
        assert_eq!(bin["isBase64Encoded"], true);
        assert_eq!(bin["body"], B64.encode([0xff, 0, 1]));
        assert!(bin.get("queryStringParameters").is_none());
    }

    #[test]
    fn clf_time_matches_known_dates() {
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        // 2026-11-25T15:54:48Z
        assert_eq!(clf_time(1_795_622_088), "25/Nov/2026:15:54:48 +0000");
        // 2024-02-29T23:59:59Z (leap day)
        assert_eq!(clf_time(1_709_251_199), "29/Feb/2024:23:59:59 +0000");
    }

    #[test]
    fn proxy_responses_map_like_api_gateway() {
        let (s, h, b) = proxy_response(
            br#"{"statusCode":201,"headers":{"content-type":"text/plain","x-n":5},"multiValueHeaders":{"x-m":["a","b"]},"cookies":["c=1"],"body":"made"}"#,
        )
        .unwrap();
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["x-n"], "5");
        assert_eq!(h.get_all("x-m").iter().count(), 2);
        assert_eq!(h["set-cookie"], "c=1");
        assert_eq!(&b[..], b"made");

        let enc = B64.encode([0u8, 159, 146, 150]);
        let payload = format!(r#"{{"statusCode":200,"body":"{enc}","isBase64Encoded":true}}"#);
        let (_, _, b) = proxy_response(payload.as_bytes()).unwrap();
        assert_eq!(&b[..], &[0u8, 159, 146, 150]);

        // Any JSON without statusCode is the body itself.
        let (s, h, b) = proxy_response(br#"{"hello":"world"}"#).unwrap();
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(&b[..], br#"{"hello":"world"}"#);
        let (s, _, b) = proxy_response(b"\"text\"").unwrap();
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"\"text\""[..]));
    }

    #[test]
    fn bad_proxy_responses_are_errors_not_panics() {
        for bad in [
            &b"not json"[..],
            br#"{"statusCode":"200"}"#,
            br#"{"statusCode":99}"#,
            br#"{"statusCode":700}"#,
            br#"{"statusCode":200,"headers":{"bad name":"x"}}"#,
            br#"{"statusCode":200,"headers":{"x":"line\nbreak"}}"#,
            br#"{"statusCode":200,"headers":{"x":{"nested":1}}}"#,
            br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#,
        ] {
            assert!(
                proxy_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_callers_request_context_passes_unchanged() {
        let ctx = json!({"accountId": "123456789012", "stage": "prod", "requestId": "r-1",
                         "http": {"method": "GET", "sourceIp": "203.0.113.9"},
                         "authorizer": {"jwt": {"claims": {"sub": "u1"}, "scopes": null}}});
        let incoming = json!({"rawPath": "/1", "rawQueryString": "", "headers": {},
                              "requestContext": ctx, "body": ""});
        let req = request_from_event(&incoming, "/orders").unwrap();
        assert_eq!(req.uri(), "/orders/1");
        let carried = req.extensions().get::<RequestContext>().unwrap();
        let e = event(
            &Method::GET,
            "/1",
            "",
            &HeaderMap::new(),
            b"",
            Some(carried),
        );
        assert_eq!(e["requestContext"], ctx);
    }

    #[test]
    fn events_become_requests_and_responses_become_events() {
        let incoming = json!({
            "version": "2.0",
            "rawPath": "/orders/1",
            "rawQueryString": "a=1&b=2",
            "cookies": ["s=1", "t=2"],
            "headers": {"x-switchyard-synthetic": "true", "content-type": "text/plain"},
            "requestContext": {"http": {"method": "POST"}},
            "body": "aGk=",
            "isBase64Encoded": true,
        });
        let req = request_from_event(&incoming, "/orders").unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri(), "/orders/orders/1?a=1&b=2");
        assert_eq!(req.headers()["cookie"], "s=1; t=2");
        assert_eq!(req.headers()["x-switchyard-synthetic"], "true");
        assert_eq!(&req.body()[..], b"hi");
        let bad = json!({"rawPath": "/", "body": "%%%", "isBase64Encoded": true});
        assert!(
            request_from_event(&bad, "/f")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );

        let (parts, ()) = http::Response::builder()
            .status(201)
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("vary", "a")
            .header("vary", "b")
            .body(())
            .unwrap()
            .into_parts();
        let out = response_event(&parts, &[0xff, 0x00]);
        assert_eq!(out["statusCode"], 201);
        assert_eq!(out["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(out["headers"]["vary"], "a,b", "joined as API Gateway joins");
        assert_eq!(out["isBase64Encoded"], true);
        assert_eq!(out["body"], "/wA=");
    }
}
