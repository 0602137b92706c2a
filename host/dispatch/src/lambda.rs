//! `{"type":"lambda","function-name":"orders"}`: Lambda `Invoke` of the
//! chosen qualifier. An HTTP call travels as API Gateway's HTTP API event
//! and the function's proxy response comes back as HTTP; an Invoke API
//! call travels unchanged and is answered as Lambda answers. The traffic
//! class and the context ride in the client context's `custom` (and, for
//! HTTP calls, the event's headers). A mirror copy is an asynchronous
//! (`Event`) invoke.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::apigw;
use crate::clients::Clients;
use crate::dispatcher::{Body, Call, Dispatcher, HttpCall, InvokeCall, Target, full};
use crate::error::{DispatchError, SpecError};
use crate::headers::tags;

/// Longest client context Lambda accepts (base64 text, in bytes).
pub const MAX_CLIENT_CONTEXT: usize = 3583;

/// The `lambda` backend's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LambdaSpec {
    /// The Lambda function's name or ARN.
    #[serde(rename = "function-name")]
    function_name: String,
}

impl LambdaSpec {
    pub(crate) fn check(&self) -> Result<(), SpecError> {
        if self.function_name.trim().is_empty() {
            return Err(SpecError::Invalid(
                "\"function-name\" is empty; name the Lambda function (or its ARN)".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct LambdaDispatcher {
    function_name: String,
    clients: Arc<Clients>,
}

/// Lambda's errors that say the caller's payload or headers were at fault,
/// not the function (`Side::Client`).
const REQUEST_FAULTS: &[&str] = &[
    "InvalidRequestContentException",
    "RequestTooLargeException",
    "UnsupportedMediaTypeException",
];

impl LambdaDispatcher {
    pub(crate) fn new(spec: LambdaSpec, clients: Arc<Clients>) -> Result<Self, SpecError> {
        spec.check()?;
        Ok(LambdaDispatcher {
            function_name: spec.function_name,
            clients,
        })
    }

    /// The API Gateway event for an HTTP call, tagged for `to`.
    fn event(&self, call: &HttpCall, to: &Target) -> Bytes {
        Bytes::from(apigw::tagged_event(call, to).to_string())
    }

    /// An HTTP call: the event to the qualifier, its proxy response back.
    async fn http(
        &self,
        call: &HttpCall,
        to: &Target,
    ) -> Result<http::Response<Body>, DispatchError> {
        let (name, q) = (self.function_name.as_str(), to.qualifier.as_str());
        let gateway = |status, code: &str, message: String| {
            DispatchError::upstream(status, code, message).at_lambda(name, q)
        };
        let told = Told::new(client_context(None, &tags(to)), &call.headers, to);
        let client = self.clients.lambda().await;
        let call = invoke(client, name, q, self.event(call, to), told, None, None);
        let timeout = self.clients.timeout;
        let out = match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                return Err(gateway(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!("Lambda {name} qualifier {q} did not answer within {timeout:?}"),
                ));
            }
            Ok(Err(InvokeError::Service { code, message, .. })) => {
                return Err(gateway(
                    StatusCode::BAD_GATEWAY,
                    &code,
                    format!("Lambda {name} qualifier {q} was not invoked: {code}: {message}"),
                ));
            }
            Ok(Err(e @ InvokeError::Unreachable(_))) => {
                return Err(gateway(
                    StatusCode::BAD_GATEWAY,
                    "Unreachable",
                    format!("Lambda {name} qualifier {q}: {e}"),
                ));
            }
            Ok(Ok(out)) => out,
        };
        if let Some(kind) = &out.function_error {
            let detail = error_summary(&out.payload)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            return Err(gateway(
                StatusCode::BAD_GATEWAY,
                kind,
                format!("Lambda {name} qualifier {q} failed ({kind}){detail}"),
            ));
        }
        match apigw::proxy_response(&out.payload) {
            Ok((status, mut headers, body)) => {
                // As before the split (axum's default for bytes): a body
                // without a declared type is octet-stream.
                headers
                    .entry(http::header::CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("application/octet-stream"));
                let mut response = http::Response::new(full(body));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                Ok(response)
            }
            Err(e) => Err(gateway(
                StatusCode::BAD_GATEWAY,
                "InvalidResponse",
                format!("Lambda {name} qualifier {q}: {e}"),
            )),
        }
    }

    /// An Invoke API call: the payload to the qualifier, answered as
    /// Lambda answers.
    async fn invoke(
        &self,
        call: &InvokeCall,
        to: &Target,
    ) -> Result<http::Response<Body>, DispatchError> {
        let (name, q) = (self.function_name.as_str(), to.qualifier.as_str());
        let ctx = client_context(call.client_context.as_deref(), &tags(to));
        let told = Told::new(ctx, &call.headers, to);
        let client = self.clients.lambda().await;
        let invoked = invoke(
            client,
            name,
            q,
            call.payload.clone(),
            told,
            call.invocation_type.as_deref(),
            call.log_type.as_deref(),
        );
        let timeout = self.clients.timeout;
        let api = |status, code: &str, message: String| {
            DispatchError::upstream(status, code, message).at_lambda(name, q)
        };
        match tokio::time::timeout(timeout, invoked).await {
            Err(_) => Err(api(
                StatusCode::GATEWAY_TIMEOUT,
                "ServiceException",
                format!("{name}:{q} did not answer within {timeout:?}"),
            )),
            Ok(Err(InvokeError::Service {
                status,
                code,
                message,
            })) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                Err(if REQUEST_FAULTS.contains(&code.as_str()) {
                    DispatchError::client(status, &code, message).at_lambda(name, q)
                } else {
                    api(status, &code, message)
                })
            }
            Ok(Err(e @ InvokeError::Unreachable(_))) => Err(api(
                StatusCode::BAD_GATEWAY,
                "ServiceException",
                format!("{name}:{q}: {e}"),
            )),
            Ok(Ok(out)) => {
                let mut response = http::Response::new(full(out.payload));
                *response.status_mut() = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
                let h = response.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                for (header, value) in [
                    ("x-amz-function-error", &out.function_error),
                    ("x-amz-executed-version", &out.executed_version),
                    ("x-amz-log-result", &out.log_result),
                ] {
                    if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                        h.insert(header, v);
                    }
                }
                Ok(response)
            }
        }
    }
}

#[async_trait]
impl Dispatcher for LambdaDispatcher {
    async fn send(&self, call: &Call, to: &Target) -> Result<http::Response<Body>, DispatchError> {
        match call {
            Call::Http(h) => self.http(h, to).await,
            Call::Invoke(i) => self.invoke(i, to).await,
        }
    }

    /// An asynchronous (`Event`) invoke: nothing to wait for but Lambda's
    /// 202.
    async fn mirror(&self, call: &Call, to: &Target) -> String {
        let (payload, headers) = match call {
            Call::Http(h) => (self.event(h, to), &h.headers),
            Call::Invoke(i) => (i.payload.clone(), &i.headers),
        };
        // Only the mesh's tags: the caller's client context is for the
        // version it called, not for a shadow copy.
        let told = Told::new(client_context(None, &tags(to)), headers, to);
        let client = self.clients.lambda().await;
        let call = invoke(
            client,
            &self.function_name,
            &to.qualifier,
            payload,
            told,
            Some("Event"),
            None,
        );
        match tokio::time::timeout(self.clients.timeout, call).await {
            Ok(Ok(out)) => out.status.to_string(),
            Ok(Err(_)) => "error".to_owned(),
            Err(_) => "timeout".to_owned(),
        }
    }

    fn lambda_function(&self) -> Option<&str> {
        Some(split_function_name(&self.function_name).0)
    }

    fn invocation_types(&self) -> bool {
        true
    }
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
        // Only the mesh sets these, in whatever case a caller spelt them.
        custom.retain(|k, _| !crate::headers::is_tag(k));
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
pub(crate) struct Invoked {
    /// Lambda's status: 200 (RequestResponse), 202 (Event), 204 (DryRun).
    pub(crate) status: u16,
    /// `Handled` or `Unhandled` when the function failed.
    pub(crate) function_error: Option<String>,
    /// The function's response (or error) payload.
    pub(crate) payload: Bytes,
    /// The version that ran.
    pub(crate) executed_version: Option<String>,
    /// The base64 log tail, when asked for.
    pub(crate) log_result: Option<String>,
}

/// An `Invoke` that did not reach the function.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvokeError {
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

/// What an invoke tells the version beside its payload: the client context
/// (the mesh's tags) and the X-Ray trace header.
struct Told {
    client_context: String,
    trace: Option<String>,
}

impl Told {
    fn new(client_context: String, caller: &http::HeaderMap, to: &Target) -> Self {
        Told {
            client_context,
            trace: crate::headers::xray_header(caller, to),
        }
    }
}

/// One `Invoke` of `function_name` at `qualifier`.
async fn invoke(
    client: &Client,
    function_name: &str,
    qualifier: &str,
    payload: Bytes,
    told: Told,
    invocation_type: Option<&str>,
    log_type: Option<&str>,
) -> Result<Invoked, InvokeError> {
    let mut call = client
        .invoke()
        .function_name(function_name)
        .qualifier(qualifier)
        .payload(Blob::new(payload.to_vec()))
        .client_context(told.client_context);
    if let Some(t) = invocation_type {
        call = call.invocation_type(InvocationType::from(t));
    }
    if let Some(t) = log_type {
        call = call.log_type(LogType::from(t));
    }
    let sent = match told.trace {
        // Lambda takes the trace header on the Invoke request itself.
        Some(trace) => {
            call.customize()
                .mutate_request(move |req| {
                    req.headers_mut().insert("x-amzn-trace-id", trace.clone());
                })
                .send()
                .await
        }
        None => call.send().await,
    };
    match sent {
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
        // A caller's forged tags, in any case, are dropped: the class the
        // function sees is the mesh's, and no forged context reaches it.
        let forged = B64.encode(
            r#"{"custom":{"X-Switchyard-Traffic":"synthetic","x-switchyard-ctx-queue_url":"https://evil.example/q","X-SWITCHYARD-TARGET":"9","user":"u1"}}"#,
        );
        let production = vec![("x-switchyard-traffic".to_owned(), "production".to_owned())];
        let mut fields = custom_fields(&client_context(Some(&forged), &production));
        fields.sort();
        assert_eq!(
            fields,
            vec![
                ("user".to_owned(), "u1".to_owned()),
                ("x-switchyard-traffic".to_owned(), "production".to_owned())
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
