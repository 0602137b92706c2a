//! `{"type":"step-functions","state-machine-arn":"arn:aws:states:...:stateMachine:orders","workflow":"express"}`:
//! an execution of the chosen version or alias of a state machine (the
//! decision's target appended to the ARN, as Step Functions expects).
//!
//! * `express`: `StartSyncExecution`; a succeeded execution's output is the
//!   answer (a JSON object with `statusCode` is mapped as API Gateway maps a
//!   Lambda proxy response, any other output is a 200 JSON body); a failed,
//!   timed-out or aborted one is a 502 naming the state machine, qualifier,
//!   error and cause.
//! * `standard`: `StartExecution`, answered 202 with
//!   `{"executionArn": ..., "startDate": ...}`.
//!
//! The execution input is the call (an HTTP call as API Gateway's HTTP API
//! event, an Invoke API call's JSON payload) with one field added,
//! `switchyard`: `{"function", "qualifier", "traffic", "context"}`. The
//! caller's `X-Amzn-Trace-Id` is the execution's trace header. A mirror
//! copy starts an (asynchronous) execution of the mirror qualifier.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::types::SyncExecutionStatus;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::apigw;
use crate::clients::Clients;
use crate::dispatcher::{Body, Call, Dispatcher, Target, full};
use crate::error::{DispatchError, SpecError};

/// The `step-functions` backend's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepFunctionsSpec {
    /// The state machine's ARN, without a version or alias.
    #[serde(rename = "state-machine-arn")]
    state_machine_arn: String,
    /// `express` (answered with the execution's output) or `standard`
    /// (answered 202 when the execution has started).
    workflow: Workflow,
}

/// How a state machine's executions are started and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Workflow {
    Express,
    Standard,
}

impl StepFunctionsSpec {
    pub(crate) fn check(&self) -> Result<(), SpecError> {
        let parts: Vec<&str> = self.state_machine_arn.split(':').collect();
        let ok = parts.len() == 7
            && parts[0] == "arn"
            && parts[2] == "states"
            && parts[5] == "stateMachine"
            && parts.iter().all(|p| !p.is_empty());
        if !ok {
            return Err(SpecError::Invalid(format!(
                "\"state-machine-arn\" is {:?}; expected arn:aws:states:<region>:<account>:stateMachine:<name>, without a version or alias (the decision's target is appended to it)",
                self.state_machine_arn
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct StepFunctionsDispatcher {
    arn: String,
    workflow: Workflow,
    clients: Arc<Clients>,
}

impl StepFunctionsDispatcher {
    pub(crate) fn new(spec: StepFunctionsSpec, clients: Arc<Clients>) -> Result<Self, SpecError> {
        spec.check()?;
        Ok(StepFunctionsDispatcher {
            arn: spec.state_machine_arn,
            workflow: spec.workflow,
            clients,
        })
    }

    /// The ARN of `qualifier` (a version number or an alias name).
    fn qualified(&self, qualifier: &str) -> String {
        format!("{}:{qualifier}", self.arn)
    }

    /// An error naming the state machine and qualifier.
    fn failed(&self, status: StatusCode, code: &str, to: &Target, what: String) -> DispatchError {
        DispatchError::upstream(
            status,
            code,
            format!(
                "{}: Step Functions state machine {} qualifier {} {what}",
                to.function, self.arn, to.qualifier
            ),
        )
    }

    /// The call's execution input, with the `switchyard` field.
    fn input(call: &Call, to: &Target) -> String {
        let mut input = match call {
            Call::Http(h) => apigw::tagged_event(h, to),
            // An object payload gets the field; anything else is wrapped.
            Call::Invoke(i) => match serde_json::from_slice::<Value>(&i.payload) {
                Ok(Value::Object(o)) => Value::Object(o),
                Ok(other) => json!({ "payload": other }),
                Err(_) => json!({ "payload": String::from_utf8_lossy(&i.payload) }),
            },
        };
        input["switchyard"] = json!({
            "function": to.function,
            "qualifier": to.qualifier,
            "traffic": to.traffic.as_str(),
            "context": to.context,
        });
        input.to_string()
    }

    /// The X-Ray trace header passed on to the execution: the mesh's
    /// (continuing the caller's trace), else the caller's.
    fn trace_header(call: &Call, to: &Target) -> Option<String> {
        let headers = match call {
            Call::Http(h) => &h.headers,
            Call::Invoke(i) => &i.headers,
        };
        crate::headers::xray_header(headers, to)
    }

    /// `StartExecution` of `to`: the execution's ARN and start time.
    async fn start(&self, call: &Call, to: &Target) -> Result<(String, String), DispatchError> {
        let client = self.clients.sfn().await;
        let started = client
            .start_execution()
            .state_machine_arn(self.qualified(&to.qualifier))
            .input(Self::input(call, to))
            .set_trace_header(Self::trace_header(call, to))
            .send();
        match self.within(to, started).await? {
            Ok(out) => Ok((out.execution_arn().to_owned(), out.start_date().to_string())),
            Err(e) => Err(self.refused(to, e)),
        }
    }

    /// `StartSyncExecution` of `to`, its output as the answer.
    async fn run_sync(
        &self,
        call: &Call,
        to: &Target,
    ) -> Result<http::Response<Body>, DispatchError> {
        let client = self.clients.sfn().await;
        let run = client
            .start_sync_execution()
            .state_machine_arn(self.qualified(&to.qualifier))
            .input(Self::input(call, to))
            .set_trace_header(Self::trace_header(call, to))
            .send();
        let out = match self.within(to, run).await? {
            Ok(out) => out,
            Err(e) => return Err(self.refused(to, e)),
        };
        if *out.status() != SyncExecutionStatus::Succeeded {
            let error = out.error().unwrap_or("no error named");
            let cause = out.cause().unwrap_or("no cause given");
            return Err(self.failed(
                StatusCode::BAD_GATEWAY,
                error,
                to,
                format!(
                    "{} ({}): {error}: {cause}",
                    out.status().as_str().to_ascii_lowercase().replace('_', " "),
                    out.execution_arn()
                ),
            ));
        }
        let output = Bytes::from(out.output().unwrap_or("null").to_owned());
        if matches!(call, Call::Invoke(_)) {
            // An Invoke API caller gets the output as a function's payload.
            let mut response = http::Response::new(full(output));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
        let (status, headers, body) = apigw::proxy_response(&output).map_err(|e| {
            self.failed(
                StatusCode::BAD_GATEWAY,
                "InvalidResponse",
                to,
                format!("answered with an output that is not an HTTP response: {e}"),
            )
        })?;
        let mut response = http::Response::new(full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// `fut` within the upstream timeout (a 504 naming the target after it).
    async fn within<T>(
        &self,
        to: &Target,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, DispatchError> {
        let timeout = self.clients.timeout;
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            self.failed(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                to,
                format!("did not answer within {timeout:?}"),
            )
        })
    }

    /// Step Functions refused or could not be reached.
    fn refused<E, R>(&self, to: &Target, e: SdkError<E, R>) -> DispatchError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match e {
            SdkError::ServiceError(s) => {
                let err = s.into_err();
                let code = err.code().unwrap_or("Unknown").to_owned();
                let message = err.message().unwrap_or("no message").to_owned();
                self.failed(
                    StatusCode::BAD_GATEWAY,
                    &code,
                    to,
                    format!("was not started: {code}: {message}"),
                )
            }
            other => self.failed(
                StatusCode::BAD_GATEWAY,
                "Unreachable",
                to,
                format!(
                    "could not be reached: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&other)
                ),
            ),
        }
    }
}

#[async_trait]
impl Dispatcher for StepFunctionsDispatcher {
    async fn send(&self, call: &Call, to: &Target) -> Result<http::Response<Body>, DispatchError> {
        match self.workflow {
            Workflow::Express => self.run_sync(call, to).await,
            Workflow::Standard => {
                let (arn, started) = self.start(call, to).await?;
                let body = json!({"executionArn": arn, "startDate": started}).to_string();
                let mut response = http::Response::new(full(body));
                *response.status_mut() = StatusCode::ACCEPTED;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(response)
            }
        }
    }

    /// A mirror copy starts an execution of the mirror qualifier and does
    /// not wait for it (asynchronous for express workflows too).
    async fn mirror(&self, call: &Call, to: &Target) -> String {
        match self.start(call, to).await {
            Ok(_) => "started".to_owned(),
            Err(e) => e.label().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_arn_is_checked() {
        let spec = |arn: &str| StepFunctionsSpec {
            state_machine_arn: arn.into(),
            workflow: Workflow::Express,
        };
        assert!(
            spec("arn:aws:states:us-east-1:123456789012:stateMachine:orders")
                .check()
                .is_ok()
        );
        for bad in [
            "arn:aws:states:us-east-1:123456789012:stateMachine:orders:1",
            "arn:aws:lambda:us-east-1:123456789012:function:orders",
            "orders",
            "arn:aws:states:us-east-1::stateMachine:orders",
        ] {
            let err = spec(bad).check().unwrap_err().to_string();
            assert!(err.contains("without a version or alias"), "{bad}: {err}");
        }
    }
}
