//! One error for every backend, saying which side failed.

use http::StatusCode;

/// Which side of the proxy a failure is on (as Pingora's `ErrorSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something the target cannot take.
    Client,
    /// The target (or the service in front of it) failed, refused or was
    /// too slow.
    Upstream,
    /// The mesh itself failed (a route without a URL for the qualifier).
    Internal,
}

/// A call that did not produce the target's answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DispatchError {
    /// Which side failed.
    pub side: Side,
    /// The status the caller gets.
    pub status: StatusCode,
    /// A short code: Lambda's error code (`ResourceNotFoundException`,
    /// `Unhandled`, ...), or `Timeout`, `Unreachable`, `InvalidResponse`.
    pub code: String,
    /// What happened, naming the function and qualifier.
    pub message: String,
    /// The Lambda function called, for a `lambda` target.
    pub lambda_function: Option<String>,
    /// The qualifier called.
    pub qualifier: Option<String>,
}

impl DispatchError {
    /// A failure of the target's side.
    pub fn upstream(status: StatusCode, code: &str, message: String) -> Self {
        DispatchError {
            side: Side::Upstream,
            status,
            code: code.to_owned(),
            message,
            lambda_function: None,
            qualifier: None,
        }
    }

    /// A call the caller's own request made impossible (Lambda refusing
    /// the payload, say): not the version's fault, so neither a guard nor a
    /// fallback acts on it.
    pub fn client(status: StatusCode, code: &str, message: String) -> Self {
        DispatchError {
            side: Side::Client,
            ..DispatchError::upstream(status, code, message)
        }
    }

    /// A failure of the mesh's own.
    pub fn internal(code: &str, message: String) -> Self {
        DispatchError {
            side: Side::Internal,
            status: StatusCode::BAD_GATEWAY,
            code: code.to_owned(),
            message,
            lambda_function: None,
            qualifier: None,
        }
    }

    /// Names the Lambda function and qualifier called.
    pub fn at_lambda(mut self, function: &str, qualifier: &str) -> Self {
        self.lambda_function = Some(function.to_owned());
        self.qualifier = Some(qualifier.to_owned());
        self
    }

    /// A label for the mirror metric: `timeout` or `error`.
    pub fn label(&self) -> &'static str {
        if self.status == StatusCode::GATEWAY_TIMEOUT {
            "timeout"
        } else {
            "error"
        }
    }
}

/// An error and its causes on one line, `outer: cause: root`: hyper's own
/// error says only "client error (Connect)", its causes say what (refused,
/// certificate unknown, ...).
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A `dispatch` block that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The block does not parse (an unknown `type` or field is named).
    #[error("invalid \"dispatch\" block: {0}")]
    Json(serde_json::Error),
    /// Parsed, but not usable.
    #[error("invalid \"dispatch\" block: {0}")]
    Invalid(String),
    /// The route config has none.
    #[error(
        "the route config has no \"dispatch\" block; add {{\"type\":\"http\",\"urls\":{{...}}}} or {{\"type\":\"lambda\",\"function-name\":\"...\"}}"
    )]
    Missing,
}
