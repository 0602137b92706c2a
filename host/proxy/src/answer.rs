//! Every error the proxy answers, in one table, and the one place an error
//! becomes an answer: in the shape of the front end that was asked
//! ([`Shape`]). A new error is one variant and one row of [`ProxyError::row`];
//! a new shape is one arm of [`ProxyError::answer`].
//!
//! | error | status | Lambda API error type |
//! |---|---|---|
//! | no route (`/`, an unknown Lambda API path) | 404 | `UnknownOperationException` |
//! | unknown function | 404 | `ResourceNotFoundException` |
//! | a path segment that is not UTF-8 | 400 | `InvalidParameterValueException` |
//! | a `.` or `..` path segment | 400 | `InvalidParameterValueException` |
//! | a request-target that is not a path (`CONNECT a:1`, `*`) | 400 | `InvalidParameterValueException` |
//! | wrong method | 405 | `MethodNotAllowedException` |
//! | headers over the limit | 431 | `RequestTooLargeException` |
//! | body over the limit (its `Content-Length` or what arrived) | 413 | `RequestTooLargeException` |
//! | body past the budget of all bodies held at once | 503 | `ServiceException` |
//! | body stalled | 408 | `ServiceException` |
//! | body broken off | 400 | `InvalidRequestContentException` |
//! | request JSON invalid (decide API) | 400 | `InvalidRequestContentException` |
//! | an invocation type other than `RequestResponse`, `Event`, `DryRun` | 400 | `InvalidParameterValueException` |
//! | an `Event` invocation with every background slot busy | 429 | `TooManyRequestsException` |
//! | context shown without leave | 403 | `AccessDeniedException` |
//! | admin token missing or wrong | 401 | `UnrecognizedClientException` |
//! | an admin path that does not exist | 404 | `UnknownOperationException` |
//! | dispatch failed | the error's | Lambda's own code, else `ServiceException` |
//!
//! An HTTP-shaped answer is `{"error": message, "status": n}` (a Lambda
//! failure adds `function`, `qualifier` and `error-type`); a Lambda API
//! answer is `{"Type": "User" | "Service", "message": ...}` with
//! `x-amzn-ErrorType`, as Lambda answers, so AWS SDKs raise the exception
//! they know. A body that was too large, over the budget, broken off or
//! stalled also closes the connection: what is left of it is not read, and
//! cannot be told from the next request.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_dispatch::{DispatchError, Side};

/// How a front end's answers are shaped: what differs between front ends
/// once a request has named its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Plain HTTP: errors as `{"error", "status"}` JSON.
    Http,
    /// Lambda's API (the Invoke API): errors as Lambda answers them.
    LambdaApi,
}

/// An error the proxy answers itself.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// The request names no front end's shape.
    NoRoute,
    /// A Lambda API path this host does not serve.
    UnsupportedLambdaApi(String),
    /// The function is not routed here.
    UnknownFunction(String),
    /// A path segment percent-decodes to invalid UTF-8.
    BadSegment,
    /// The path has a `.` or `..` segment.
    DotSegment,
    /// The request-target is not a path (`CONNECT host:port`, `*`).
    NotAPath,
    /// The path takes other methods (the `Allow` value).
    MethodNotAllowed(&'static str),
    /// The headers' total size is over the limit.
    HeadersTooLarge {
        /// Their size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is over the limit.
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The bodies held at once would go past the proxy's budget.
    BodyBudget {
        /// The budget, in bytes.
        budget: usize,
    },
    /// The body stalled.
    BodyStalled {
        /// The longest pause allowed between two parts.
        stall: Duration,
    },
    /// The body broke off or was malformed.
    BodyBroken,
    /// The decide API's request JSON is not usable.
    BadRequestJson(String),
    /// An Invoke API call's `X-Amz-Invocation-Type` is none of Lambda's.
    BadInvocationType(String),
    /// An `Event` invocation found every background slot busy.
    EventsFull {
        /// The slots.
        slots: usize,
    },
    /// The decide API was asked for context values it may not show.
    RevealNotAllowed,
    /// The admin token is missing or wrong.
    Unauthorized,
    /// An admin path that does not exist.
    AdminNotFound,
    /// The call to the version did not produce its answer.
    Dispatch(DispatchError),
}

/// One row of the table: what an error answers.
struct Row<'a> {
    status: StatusCode,
    /// Lambda's error type for it.
    code: &'a str,
    message: String,
    /// An extra header (`Allow`, `WWW-Authenticate`).
    header: Option<(HeaderName, &'static str)>,
    /// Close the connection after answering.
    close: bool,
}

impl<'a> Row<'a> {
    fn new(status: StatusCode, code: &'a str, message: impl Into<String>) -> Row<'a> {
        Row {
            status,
            code,
            message: message.into(),
            header: None,
            close: false,
        }
    }
}

impl ProxyError {
    /// The table: status, Lambda error type and message of every error.
    fn row(&self) -> Row<'_> {
        use ProxyError::*;
        match self {
            NoRoute => Row::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "no route: send /{function}/... or POST /2015-03-31/functions/{name}/invocations",
            ),
            UnsupportedLambdaApi(path) => Row::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!(
                    "{path}: switchyard serves only Lambda's Invoke API (POST /2015-03-31/functions/{{name}}/invocations); call AWS Lambda itself for its other APIs"
                ),
            ),
            UnknownFunction(function) => Row::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!(
                    "Function not found: unknown function {function:?}: this switchyard does not route it (the admin listener's /healthz lists those it does)"
                ),
            ),
            BadSegment => Row::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "a path segment percent-decodes to invalid UTF-8",
            ),
            DotSegment => Row::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "the path has a '.' or '..' segment; send it resolved",
            ),
            NotAPath => Row::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "the request-target is not a path: send /{function}/... (CONNECT and '*' are not proxied)",
            ),
            MethodNotAllowed(allow) => Row {
                header: Some((axum::http::header::ALLOW, allow)),
                ..Row::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowedException",
                    format!("this path takes {allow}"),
                )
            },
            HeadersTooLarge { bytes, limit } => Row::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestTooLargeException",
                format!("request headers are {bytes} bytes; the limit is {limit}"),
            ),
            // Closed: what is left of the body is not read.
            BodyTooLarge { limit } => Row {
                close: true,
                ..Row::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestTooLargeException",
                    format!("request body over the limit of {limit} bytes"),
                )
            },
            BodyBudget { budget } => Row {
                close: true,
                header: Some((axum::http::header::RETRY_AFTER, "1")),
                ..Row::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceException",
                    format!(
                        "this host holds as many request bodies as it may at once ({} MiB, serve --body-memory); retry in a moment",
                        budget >> 20
                    ),
                )
            },
            BodyStalled { stall } => Row {
                close: true,
                ..Row::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "ServiceException",
                    format!(
                        "the request body stalled: no byte for {stall:?}, or not all of it within {:?}",
                        *stall * 4
                    ),
                )
            },
            BodyBroken => Row {
                close: true,
                ..Row::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    "the request body broke off or was malformed",
                )
            },
            BadRequestJson(why) => Row::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                why.clone(),
            ),
            BadInvocationType(given) => Row::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                format!("X-Amz-Invocation-Type is {given:?}; use RequestResponse, Event or DryRun"),
            ),
            EventsFull { slots } => Row {
                header: Some((axum::http::header::RETRY_AFTER, "1")),
                ..Row::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    format!(
                        "Rate Exceeded: all {slots} background slots for Event invocations are busy (serve --mirror-slots); retry in a moment"
                    ),
                )
            },
            RevealNotAllowed => Row::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "context values may be credentials: start serve with --admin-reveal-context to let the decide API show them",
            ),
            Unauthorized => Row {
                header: Some((axum::http::header::WWW_AUTHENTICATE, "Bearer")),
                ..Row::new(
                    StatusCode::UNAUTHORIZED,
                    "UnrecognizedClientException",
                    "the admin listener needs Authorization: Bearer <token> (the token serve was given with --admin-token-file)",
                )
            },
            AdminNotFound => Row::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "the admin listener serves GET /ui (the live view), POST /v1/decide, GET /v1/mesh, GET /v1/shadow/{function}, GET /healthz and GET /metrics; functions are routed on the public listener",
            ),
            Dispatch(e) => Row::new(
                e.status,
                // Lambda's own error codes pass through; the mesh's (a
                // timeout, an unreachable URL, no dispatch block) are
                // Lambda's ServiceException, so an AWS SDK raises what it
                // knows.
                if e.lambda_function.is_some() {
                    e.code.as_str()
                } else {
                    "ServiceException"
                },
                e.message.clone(),
            ),
        }
    }

    /// The status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.row().status
    }

    /// This error as `shape`'s front end answers it.
    pub(crate) fn answer(&self, shape: Shape) -> Response {
        let row = self.row();
        let mut response = match shape {
            Shape::Http => {
                let mut body = json!({"error": row.message, "status": row.status.as_u16()});
                if let ProxyError::Dispatch(e) = self
                    && let Some(f) = &e.lambda_function
                {
                    body["function"] = json!(f);
                    body["qualifier"] = json!(e.qualifier);
                    body["error-type"] = json!(e.code);
                }
                (row.status, Json(body)).into_response()
            }
            Shape::LambdaApi => lambda_api_error(row.status, row.code, row.message),
        };
        let headers = response.headers_mut();
        if let Some((name, value)) = row.header {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if row.close {
            headers.insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        response
    }

    /// Which side failed: the caller's request, the version, or the mesh.
    pub(crate) fn side(&self) -> Side {
        match self {
            ProxyError::Dispatch(e) => e.side,
            _ => Side::Client,
        }
    }
}

impl From<DispatchError> for ProxyError {
    fn from(e: DispatchError) -> Self {
        ProxyError::Dispatch(e)
    }
}

/// An error the way Lambda's API answers: `Type` says whose fault it was
/// (`User` for a 4xx, `Service` for a 5xx) and `x-amzn-ErrorType` names the
/// exception.
fn lambda_api_error(status: StatusCode, code: &str, message: String) -> Response {
    let kind = if status.is_server_error() {
        "Service"
    } else {
        "User"
    };
    let mut response = (status, Json(json!({"Type": kind, "message": message}))).into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode as S;

    /// Every error, with the status, Lambda error type and extra header
    /// it must answer with.
    fn table() -> Vec<(ProxyError, S, &'static str, Option<&'static str>)> {
        let lambda_failure = DispatchError::upstream(
            S::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "orders:8: Rate exceeded".into(),
        )
        .at_lambda("orders", "8");
        vec![
            (
                ProxyError::NoRoute,
                S::NOT_FOUND,
                "UnknownOperationException",
                None,
            ),
            (
                ProxyError::UnsupportedLambdaApi("/2015-03-31/functions/x".into()),
                S::NOT_FOUND,
                "UnknownOperationException",
                None,
            ),
            (
                ProxyError::UnknownFunction("x".into()),
                S::NOT_FOUND,
                "ResourceNotFoundException",
                None,
            ),
            (
                ProxyError::BadSegment,
                S::BAD_REQUEST,
                "InvalidParameterValueException",
                None,
            ),
            (
                ProxyError::DotSegment,
                S::BAD_REQUEST,
                "InvalidParameterValueException",
                None,
            ),
            (
                ProxyError::NotAPath,
                S::BAD_REQUEST,
                "InvalidParameterValueException",
                None,
            ),
            (
                ProxyError::MethodNotAllowed("POST"),
                S::METHOD_NOT_ALLOWED,
                "MethodNotAllowedException",
                Some("allow"),
            ),
            (
                ProxyError::HeadersTooLarge { bytes: 9, limit: 8 },
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestTooLargeException",
                None,
            ),
            (
                ProxyError::BodyTooLarge { limit: 8 },
                S::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                None,
            ),
            (
                ProxyError::BodyStalled {
                    stall: Duration::from_secs(1),
                },
                S::REQUEST_TIMEOUT,
                "ServiceException",
                Some("connection"),
            ),
            (
                ProxyError::BodyBroken,
                S::BAD_REQUEST,
                "InvalidRequestContentException",
                Some("connection"),
            ),
            (
                ProxyError::BadRequestJson("no".into()),
                S::BAD_REQUEST,
                "InvalidRequestContentException",
                None,
            ),
            (
                ProxyError::RevealNotAllowed,
                S::FORBIDDEN,
                "AccessDeniedException",
                None,
            ),
            (
                ProxyError::Unauthorized,
                S::UNAUTHORIZED,
                "UnrecognizedClientException",
                Some("www-authenticate"),
            ),
            (
                ProxyError::AdminNotFound,
                S::NOT_FOUND,
                "UnknownOperationException",
                None,
            ),
            (
                ProxyError::Dispatch(DispatchError::internal("NoDispatch", "no block".into())),
                S::BAD_GATEWAY,
                "ServiceException",
                None,
            ),
            (
                ProxyError::Dispatch(lambda_failure),
                S::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                None,
            ),
        ]
    }

    async fn json_of(r: Response) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_answers_in_both_shapes() {
        for (error, status, code, header) in table() {
            let http = error.answer(Shape::Http);
            assert_eq!(http.status(), status, "{error:?}");
            assert!(http.headers().get("x-amzn-errortype").is_none());
            if let Some(h) = header {
                assert!(http.headers().contains_key(h), "{error:?} lacks {h}");
            }
            let body = json_of(http).await;
            assert_eq!(body["status"], status.as_u16(), "{error:?}");
            assert!(!body["error"].as_str().unwrap().is_empty(), "{error:?}");

            let lambda = error.answer(Shape::LambdaApi);
            assert_eq!(lambda.status(), status, "{error:?}");
            assert_eq!(lambda.headers()["x-amzn-errortype"], code, "{error:?}");
            if let Some(h) = header {
                assert!(lambda.headers().contains_key(h), "{error:?} lacks {h}");
            }
            let body = json_of(lambda).await;
            let kind = if status.is_server_error() {
                "Service"
            } else {
                "User"
            };
            assert_eq!(body["Type"], kind, "{error:?}");
            assert!(!body["message"].as_str().unwrap().is_empty(), "{error:?}");
            assert_eq!(error.status(), status);
        }
    }

    #[tokio::test]
    async fn a_lambda_failure_names_the_function_and_qualifier_in_http_shape() {
        let e = DispatchError::upstream(S::BAD_GATEWAY, "Unhandled", "boom".into())
            .at_lambda("orders", "8");
        let body = json_of(ProxyError::Dispatch(e).answer(Shape::Http)).await;
        assert_eq!(body["function"], "orders");
        assert_eq!(body["qualifier"], "8");
        assert_eq!(body["error-type"], "Unhandled");
    }
}
