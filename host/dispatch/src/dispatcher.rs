//! What a front end hands the dispatch layer, and the trait every backend
//! implements.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use switchyard_core::{Decision, RouteConfig, SecretRef, Traffic};

use crate::error::DispatchError;

/// A response body from any backend.
pub type Body =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A body of bytes already in hand.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The request context API Gateway gave an event, carried with the request
/// it became (as an `http` request extension) so the version that serves
/// it receives it unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext(pub serde_json::Value);

/// An HTTP request on its way to a function version, as the front end
/// received it.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Method.
    pub method: Method,
    /// The path below the function, as the client sent it (still
    /// percent-encoded), e.g. `/api/1`.
    pub path: String,
    /// The raw query, without `?` (may be empty).
    pub query: String,
    /// The client's headers (hop-by-hop ones and forged tags are dropped
    /// on the way out).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// API Gateway's request context, when the request came through it
    /// (the router function): a `lambda` target receives it unchanged.
    pub request_context: Option<RequestContext>,
}

/// A Lambda Invoke API call on its way to a function version.
#[derive(Debug, Clone)]
pub struct InvokeCall {
    /// The payload, unchanged.
    pub payload: Bytes,
    /// The caller's client context (`X-Amz-Client-Context`, base64 JSON).
    pub client_context: Option<String>,
    /// `RequestResponse` (default), `Event` or `DryRun`.
    pub invocation_type: Option<String>,
    /// `Tail` to get the log tail back.
    pub log_type: Option<String>,
    /// The caller's headers.
    pub headers: HeaderMap,
}

/// What a front end hands a dispatcher.
#[derive(Debug, Clone)]
pub enum Call {
    /// An HTTP request (path routing, the router function).
    Http(HttpCall),
    /// A Lambda Invoke API call (the Invoke API front end, the mesh
    /// extension).
    Invoke(InvokeCall),
}

impl Call {
    /// The headers the caller sent.
    pub fn headers(&self) -> &HeaderMap {
        match self {
            Call::Http(h) => &h.headers,
            Call::Invoke(i) => &i.headers,
        }
    }

    /// The method and path as the caller sent them (an Invoke is a
    /// `POST /`, as [`Call::as_http`] makes it), without a copy.
    pub fn method_and_path(&self) -> (&str, &str) {
        match self {
            Call::Http(h) => (h.method.as_str(), h.path.as_str()),
            Call::Invoke(_) => ("POST", "/"),
        }
    }

    /// The call as an HTTP request: an Invoke becomes a `POST /` of its
    /// payload, for backends that are not Lambda.
    pub fn as_http(&self) -> std::borrow::Cow<'_, HttpCall> {
        match self {
            Call::Http(h) => std::borrow::Cow::Borrowed(h),
            Call::Invoke(i) => std::borrow::Cow::Owned(HttpCall {
                method: Method::POST,
                path: "/".into(),
                query: String::new(),
                headers: i.headers.clone(),
                body: i.payload.clone(),
                request_context: None,
            }),
        }
    }
}

/// Where a call goes and how it is tagged. Its `Debug` shows the
/// context's keys, not their values (a resolved secret is among them).
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The store function (for messages and metrics).
    pub function: String,
    /// The qualifier chosen.
    pub qualifier: String,
    /// The traffic class the target is told.
    pub traffic: Traffic,
    /// The context the target is handed.
    pub context: BTreeMap<String, String>,
    /// Context keys whose value is a secret, still to be read: until
    /// [`Clients::resolve_secrets`](crate::Clients::resolve_secrets) puts
    /// the values in, `context` holds their references.
    pub secrets: Vec<(String, SecretRef)>,
    /// Trace context for the target (`traceparent`, `tracestate`,
    /// `baggage`, `x-amzn-trace-id`), replacing what the caller sent under
    /// these names; empty: the caller's pass unchanged.
    pub propagate: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("function", &self.function)
            .field("qualifier", &self.qualifier)
            .field("traffic", &self.traffic)
            .field("context", &self.context.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets)
            .field("propagate", &self.propagate)
            .finish()
    }
}

impl Target {
    /// The decision's target: its qualifier, traffic and context (with the
    /// secrets `config` gives that qualifier, to resolve).
    pub fn primary(function: &str, decision: &Decision, config: &RouteConfig) -> Self {
        Target {
            function: function.to_owned(),
            qualifier: decision.target.clone(),
            traffic: decision.traffic,
            context: decision.context.clone(),
            secrets: config.secrets_for(&decision.target),
            propagate: Vec::new(),
        }
    }

    /// The decision's mirror, if any: always synthetic, and handed the
    /// mirror version's own configured context (not the target's): the
    /// policy's context entries, minus what the route config sets for the
    /// target, plus what it sets for the mirror.
    pub fn mirror(function: &str, decision: &Decision, config: &RouteConfig) -> Option<Self> {
        let qualifier = decision.mirror.clone()?;
        let mut context = decision.context.clone();
        if let Some(target) = config.context.get(&decision.target) {
            context.retain(|k, _| !target.contains_key(k));
        }
        context.extend(config.context_for(&qualifier));
        Some(Target {
            function: function.to_owned(),
            secrets: config.secrets_for(&qualifier),
            propagate: Vec::new(),
            qualifier,
            traffic: Traffic::Synthetic,
            context,
        })
    }
}

/// How one route version's qualifiers are reached.
#[async_trait]
pub trait Dispatcher: Send + Sync + fmt::Debug {
    /// Sends `call` to `to` and returns the answer for the front end.
    async fn send(&self, call: &Call, to: &Target) -> Result<http::Response<Body>, DispatchError>;

    /// Sends a mirror copy, whose answer is discarded: returns a status
    /// label for the mirror metric (`200`, `error`, `timeout`, ...). By
    /// default [`send`](Self::send), with the body drained.
    async fn mirror(&self, call: &Call, to: &Target) -> String {
        match self.send(call, to).await {
            Ok(response) => {
                let status = response.status().as_u16().to_string();
                let _ = response.into_body().collect().await;
                status
            }
            Err(e) => e.label().to_owned(),
        }
    }

    /// The Lambda function this dispatcher invokes, if any, so an Invoke
    /// API caller naming it (not the store function) is routed.
    fn lambda_function(&self) -> Option<&str> {
        None
    }

    /// Whether the target itself honours an Invoke API call's invocation
    /// type and log type (Lambda does); otherwise the front end gives them
    /// their meaning (a dry run sends nothing, an event is sent in the
    /// background, a log tail is the mesh's own decision line).
    fn invocation_types(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> RouteConfig {
        RouteConfig::from_json(json).unwrap()
    }

    #[test]
    fn a_mirror_gets_its_own_versions_context() {
        let cfg = config(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
                "context":{"7":{"DB":"db7","Q":"q7"},"8":{"DB":"db8"}}}"#,
        );
        let decision = Decision {
            target: "7".into(),
            traffic: Traffic::Production,
            mirror: Some("8".into()),
            context: [("DB", "db7"), ("Q", "q7"), ("FROM_POLICY", "p")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            reason: String::new(),
        };
        let m = Target::mirror("orders", &decision, &cfg).unwrap();
        assert_eq!(m.qualifier, "8");
        assert_eq!(m.traffic, Traffic::Synthetic);
        let want: BTreeMap<String, String> = [("DB", "db8"), ("FROM_POLICY", "p")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(m.context, want);
    }
}
