//! Lambda dispatch: the API Gateway HTTP API event (payload format 2.0) a
//! function receives, `Invoke` with the decision's qualifier, the function's
//! proxy response mapped back to HTTP, and the client context that carries
//! the traffic class to the function.
//!
//! The pure mapping functions here are unit-tested; the `Invoke` call itself
//! is tested against moto's Lambda API in `host/tests/lambda.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

/// Longest client context Lambda accepts (base64 text, in bytes).
pub const MAX_CLIENT_CONTEXT: usize = 3583;

/// The API Gateway HTTP API (payload format 2.0) event for a request, as a
/// Lambda function behind API Gateway or a function URL receives it.
/// `headers` are the headers the function should see (the proxy's tags
/// included); repeated headers are joined with `,`, cookies become `cookies`.
/// A body that is not UTF-8 is sent base64-encoded.
pub fn http_api_event(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
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
    let header = |name: &str| hdrs.get(name).and_then(Value::as_str).unwrap_or("");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let request_id = request_id(now.as_nanos());
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": hdrs,
        "requestContext": {
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
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": clf_time(now.as_secs()),
            "timeEpoch": now.as_millis() as u64,
        },
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
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss) = crate::store::dir::utc_parts(secs as i64);
    let month = MONTHS[(m - 1) as usize];
    format!("{d:02}/{month}/{y}:{hh:02}:{mm:02}:{ss:02} +0000")
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

/// The `custom` fields of a client context, as `(name, value)` pairs with
/// lower-cased names (non-string values as their JSON text). The context
/// is base64 JSON as callers send it (`X-Amz-Client-Context`) or plain
/// JSON as the Runtime API hands it to the function
/// (`Lambda-Runtime-Client-Context`); anything else has none.
pub fn custom_fields(client_context: &str) -> Vec<(String, String)> {
    let Some(ctx) = decode_context(client_context) else {
        return Vec::new();
    };
    let Some(custom) = ctx.get("custom").and_then(Value::as_object) else {
        return Vec::new();
    };
    custom
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.to_ascii_lowercase(), v)
        })
        .collect()
}

fn decode_context(text: &str) -> Option<Map<String, Value>> {
    let text = text.trim();
    let raw = if text.starts_with('{') {
        text.as_bytes().to_vec()
    } else {
        B64.decode(text).ok()?
    };
    match serde_json::from_slice(&raw).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The client context to send: the caller's (if any) with `tags` set in
/// its `custom` object, base64-encoded. When that is over Lambda's limit,
/// only the tags are sent; when even those are, only the first tag (the
/// traffic class, by convention).
pub fn client_context(caller: Option<&str>, tags: &[(String, String)]) -> String {
    let encode = |ctx: &Map<String, Value>| B64.encode(Value::Object(ctx.clone()).to_string());
    let with_tags = |mut ctx: Map<String, Value>, tags: &[(String, String)]| {
        let custom = ctx
            .entry("custom")
            .or_insert_with(|| Value::Object(Map::new()));
        if !custom.is_object() {
            *custom = Value::Object(Map::new());
        }
        let custom = custom.as_object_mut().expect("made an object above");
        for (k, v) in tags {
            custom.insert(k.clone(), Value::String(v.clone()));
        }
        ctx
    };
    let full = encode(&with_tags(
        caller.and_then(decode_context).unwrap_or_default(),
        tags,
    ));
    if full.len() <= MAX_CLIENT_CONTEXT {
        return full;
    }
    let only_tags = encode(&with_tags(Map::new(), tags));
    if only_tags.len() <= MAX_CLIENT_CONTEXT {
        return only_tags;
    }
    encode(&with_tags(Map::new(), &tags[..tags.len().min(1)]))
}

/// What `Invoke` returned.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// Lambda's status: 200 (RequestResponse), 202 (Event), 204 (DryRun).
    pub status: u16,
    /// `Handled` or `Unhandled` when the function failed.
    pub function_error: Option<String>,
    /// The function's response (or error) payload.
    pub payload: Bytes,
    /// The version that ran.
    pub executed_version: Option<String>,
    /// The base64 log tail, when asked for.
    pub log_result: Option<String>,
}

/// An `Invoke` that did not reach the function.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Lambda answered with an error (no such function or qualifier,
    /// throttled, access denied, ...).
    #[error("Lambda refused the call: {code}: {message}")]
    Service {
        /// HTTP status of Lambda's answer.
        status: u16,
        /// Error code, e.g. `ResourceNotFoundException`.
        code: String,
        /// Lambda's message.
        message: String,
    },
    /// Lambda could not be reached, or the call timed out in the SDK.
    #[error("Lambda could not be reached: {0}")]
    Unreachable(String),
}

/// One `Invoke` of `function_name` at `qualifier`.
pub async fn invoke(
    client: &Client,
    function_name: &str,
    qualifier: &str,
    payload: Bytes,
    client_context: Option<String>,
    invocation_type: Option<&str>,
    log_type: Option<&str>,
) -> Result<Invoked, InvokeError> {
    let mut call = client
        .invoke()
        .function_name(function_name)
        .qualifier(qualifier)
        .payload(Blob::new(payload.to_vec()))
        .set_client_context(client_context);
    if let Some(t) = invocation_type {
        call = call.invocation_type(InvocationType::from(t));
    }
    if let Some(t) = log_type {
        call = call.log_type(LogType::from(t));
    }
    match call.send().await {
        Ok(out) => Ok(Invoked {
            status: u16::try_from(out.status_code()).unwrap_or(200),
            function_error: out.function_error().map(str::to_owned),
            payload: out
                .payload()
                .map(|b| Bytes::copy_from_slice(b.as_ref()))
                .unwrap_or_default(),
            executed_version: out.executed_version().map(str::to_owned),
            log_result: out.log_result().map(str::to_owned),
        }),
        Err(SdkError::ServiceError(e)) => {
            let status = e.raw().status().as_u16();
            let err = e.into_err();
            Err(InvokeError::Service {
                status,
                code: err.code().unwrap_or("Unknown").to_owned(),
                message: err.message().unwrap_or("no message").to_owned(),
            })
        }
        Err(e) => Err(InvokeError::Unreachable(
            aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
        )),
    }
}

/// The `errorType: errorMessage` of a function error payload, when it has
/// the runtime's usual shape.
pub fn error_summary(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let ty = v.get("errorType").and_then(Value::as_str);
    let msg = v.get("errorMessage").and_then(Value::as_str);
    match (ty, msg) {
        (Some(t), Some(m)) => Some(format!("{t}: {m}")),
        (Some(t), None) => Some(t.to_owned()),
        (None, Some(m)) => Some(m.to_owned()),
        _ => None,
    }
}

/// Splits what an Invoke caller names: a name, `name:qualifier`, or an ARN
/// (`arn:aws:lambda:region:account:function:name[:qualifier]`).
pub fn split_function_name(name: &str) -> (&str, Option<&str>) {
    // Full and partial ARNs both carry `function:` before the name.
    let rest = match name.find("function:") {
        Some(i) if i == 0 || name.as_bytes()[i - 1] == b':' => &name[i + "function:".len()..],
        _ => name,
    };
    match rest.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (rest, None),
    }
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
        let e = http_api_event(&Method::POST, "/orders/1", "q=x%20y&q=z&k", &h, b"hi");
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
        let bin = http_api_event(&Method::PUT, "/", "", &HeaderMap::new(), &[0xff, 0, 1]);
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
    fn client_context_keeps_the_callers_and_adds_tags() {
        let caller = B64.encode(r#"{"client":{"app_title":"t"},"custom":{"user":"u1"}}"#);
        let tags = vec![("x-switchyard-traffic".to_owned(), "synthetic".to_owned())];
        let out = client_context(Some(&caller), &tags);
        let ctx = decode_context(&out).unwrap();
        assert_eq!(ctx["client"]["app_title"], "t");
        assert_eq!(ctx["custom"]["user"], "u1");
        assert_eq!(ctx["custom"]["x-switchyard-traffic"], "synthetic");
        let mut fields = custom_fields(&out);
        fields.sort();
        assert_eq!(
            fields,
            vec![
                ("user".to_owned(), "u1".to_owned()),
                ("x-switchyard-traffic".to_owned(), "synthetic".to_owned())
            ]
        );
        // Garbage from the caller is replaced, not passed on or fatal.
        let out = client_context(Some("%%%"), &tags);
        assert_eq!(
            decode_context(&out).unwrap()["custom"]["x-switchyard-traffic"],
            "synthetic"
        );
        assert!(custom_fields("%%%").is_empty());
        // Over the limit: the caller's context gives way to the tags.
        let big = B64.encode(format!(r#"{{"custom":{{"pad":"{}"}}}}"#, "x".repeat(4000)));
        let out = client_context(Some(&big), &tags);
        assert!(out.len() <= MAX_CLIENT_CONTEXT);
        assert!(decode_context(&out).unwrap()["custom"].get("pad").is_none());
    }

    #[test]
    fn function_names_split_like_lambda() {
        assert_eq!(split_function_name("orders"), ("orders", None));
        assert_eq!(split_function_name("orders:8"), ("orders", Some("8")));
        assert_eq!(
            split_function_name("arn:aws:lambda:us-east-1:123456789012:function:orders:live"),
            ("orders", Some("live"))
        );
        assert_eq!(
            split_function_name("arn:aws:lambda:us-east-1:123456789012:function:orders"),
            ("orders", None)
        );
        assert_eq!(
            split_function_name("123456789012:function:orders:8"),
            ("orders", Some("8"))
        );
    }

    #[test]
    fn error_summaries() {
        assert_eq!(
            error_summary(br#"{"errorType":"KeyError","errorMessage":"'id'"}"#).as_deref(),
            Some("KeyError: 'id'")
        );
        assert_eq!(error_summary(b"x"), None);
    }
}
