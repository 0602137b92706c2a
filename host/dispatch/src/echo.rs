//! `{"type":"echo"}` (feature `echo`, for tests): answers every call itself
//! with what a target would have received, so a test sees the tags, the
//! context and the request as they leave the mesh, from every front end.
//! It is also the worked example of adding a backend: this file, plus one
//! variant and one arm in `for_route`.

use async_trait::async_trait;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::dispatcher::{Body, Call, Dispatcher, Target, full};
use crate::error::DispatchError;
use crate::headers::outgoing;

/// The `echo` backend's settings: none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EchoSpec {}

#[derive(Debug)]
pub(crate) struct EchoDispatcher;

impl EchoDispatcher {
    pub(crate) fn new(_spec: EchoSpec) -> Self {
        EchoDispatcher
    }
}

#[async_trait]
impl Dispatcher for EchoDispatcher {
    async fn send(&self, call: &Call, to: &Target) -> Result<http::Response<Body>, DispatchError> {
        let http = call.as_http();
        let headers: Map<String, Value> = outgoing(&http.headers, to)
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::from(String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect();
        let body = json!({
            "dispatcher": "echo",
            "call": match call { Call::Http(_) => "http", Call::Invoke(_) => "invoke" },
            "function": to.function,
            "qualifier": to.qualifier,
            "traffic": to.traffic,
            "context": to.context,
            "method": http.method.as_str(),
            "path": http.path,
            "query": http.query,
            "headers": headers,
            "body": String::from_utf8_lossy(&http.body),
            "request-context": http.request_context.as_ref().map(|c| c.0.clone()),
        });
        let mut response = http::Response::new(full(body.to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}
