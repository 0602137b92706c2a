//! Lambda's API: `POST /2015-03-31/functions/{name}/invocations`, so an
//! unchanged AWS SDK client pointed at the host is routed. The policy sees
//! the caller's headers and its client context's `custom` fields as
//! headers (plus `x-amz-qualifier` when the caller named one), and the
//! chosen qualifier is invoked with the payload unchanged. Every other path
//! of Lambda's API (`/{api-version}/...`) is answered as Lambda answers an
//! operation it does not know, so an SDK raises a clear error. Answers in
//! Lambda's error shape.

use std::sync::Arc;

use axum::extract::Request as AxumRequest;
use axum::response::Response;
use switchyard_config::Active;
use switchyard_core::Request;
use switchyard_dispatch::{Call, InvokeCall, custom_fields, is_tag, split_function_name};

use super::FrontEnd;
use crate::Proxy;
use crate::answer::{ProxyError, Shape};
use crate::hygiene::{decoded_segment, header_pairs};
use crate::steps;

/// The Invoke API's path prefix and suffix:
/// `/2015-03-31/functions/{name}/invocations`.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const INVOKE_SUFFIX: &str = "/invocations";

/// Lambda's API: claims every path whose first segment is an API version
/// (`/2015-03-31/...`, `/2021-10-31/...`).
pub(crate) struct InvokeApi;

/// Whether a path segment is one of Lambda's API versions (`YYYY-MM-DD`).
fn is_api_version(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

impl FrontEnd for InvokeApi {
    const SHAPE: Shape = Shape::LambdaApi;
    /// The function name (or ARN, or `name:qualifier`) the path names.
    type Claim = String;

    fn claim(req: &AxumRequest) -> Option<Result<String, ProxyError>> {
        let path = req.uri().path();
        let first = path.strip_prefix('/')?.split('/').next()?;
        if !is_api_version(first) {
            return None;
        }
        let Some(name) = path
            .strip_prefix(INVOKE_PREFIX)
            .and_then(|rest| rest.strip_suffix(INVOKE_SUFFIX))
            .filter(|name| !name.is_empty() && !name.contains('/'))
        else {
            return Some(Err(ProxyError::UnsupportedLambdaApi(format!(
                "{} {path}",
                req.method()
            ))));
        };
        if req.method() != http::Method::POST {
            return Some(Err(ProxyError::MethodNotAllowed("POST")));
        }
        Some(
            decoded_segment(name)
                .map(|n| n.into_owned())
                .ok_or(ProxyError::BadSegment),
        )
    }

    async fn serve(p: &Arc<Proxy>, name: String, req: AxumRequest) -> Response {
        let (lambda_name, mut requested) = split_function_name(&name);
        let query_qualifier = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "Qualifier")
                .map(|(_, v)| v.into_owned())
        });
        if query_qualifier.is_some() {
            requested = query_qualifier.as_deref();
        }
        let Some((function, active)) = resolve_invoked(p, lambda_name) else {
            return super::refuse::<Self>(
                p,
                None,
                ProxyError::UnknownFunction(lambda_name.to_owned()),
            );
        };
        let (parts, payload, held) = match super::admit(p, req).await {
            Ok(admitted) => admitted,
            Err(e) => return super::refuse::<Self>(p, Some(&function), e),
        };
        let invocation = match parts.headers.get("x-amz-invocation-type") {
            None => Invocation::RequestResponse,
            Some(v) => match v.as_bytes() {
                b"RequestResponse" => Invocation::RequestResponse,
                b"Event" => Invocation::Event,
                b"DryRun" => Invocation::DryRun,
                other => {
                    let given = String::from_utf8_lossy(other).into_owned();
                    return super::refuse::<Self>(
                        p,
                        Some(&function),
                        ProxyError::BadInvocationType(given),
                    );
                }
            },
        };
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let caller_context = header("x-amz-client-context");
        let mut seen: Vec<(String, String)> = header_pairs(&parts.headers).collect();
        if let Some(ctx) = &caller_context {
            seen.extend(custom_fields(ctx).into_iter().filter(|(k, _)| !is_tag(k)));
        }
        if let Some(q) = requested {
            seen.push(("x-amz-qualifier".to_owned(), q.to_owned()));
        }
        let policy_req = Arc::new(Request::new(
            function.clone(),
            "POST",
            parts.uri.path(),
            seen,
        ));
        let call = Call::Invoke(InvokeCall {
            payload,
            client_context: caller_context,
            invocation_type: header("x-amz-invocation-type"),
            log_type: header("x-amz-log-type"),
            headers: parts.headers,
        });
        let decision = crate::decide::decide(p, &active, &policy_req, false);
        // Lambda takes the invocation type itself; for any other target
        // the mesh gives it Lambda's meaning.
        let native = p.dispatcher(&active).is_ok_and(|d| d.invocation_types());
        match invocation {
            Invocation::DryRun if !native => {
                steps::dry_run(p, &function, &active, decision, Self::SHAPE)
            }
            Invocation::Event if !native => steps::event(p, function, active, decision, call, held),
            _ => {
                let answer =
                    steps::dispatch_decided(p, &function, &active, decision, call, Self::SHAPE)
                        .await;
                drop(held);
                answer
            }
        }
    }
}

/// An Invoke API call's `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invocation {
    /// The answer awaited (the default).
    RequestResponse,
    /// `202` at once; the call made asynchronously.
    Event,
    /// Checked only: `204`, nothing run.
    DryRun,
}

/// The watched function an Invoke names: by its own name, or by the Lambda
/// function its dispatcher invokes.
fn resolve_invoked(p: &Proxy, name: &str) -> Option<(String, Arc<Active>)> {
    if let Some(active) = p.policies.get(name) {
        return Some((name.to_owned(), active));
    }
    p.policies.functions().into_iter().find_map(|f| {
        let active = p.policies.get(&f)?;
        let dispatcher = p.dispatcher(&active).ok()?;
        (dispatcher.lambda_function() == Some(name)).then_some((f, active))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::testing::{answer, proxy};
    use axum::body::Body;

    fn post(path: &str) -> http::request::Builder {
        http::Request::post(path)
    }

    /// Every refusal of the Invoke API is in Lambda's shape, so an AWS SDK
    /// raises the exception it names with its message.
    #[tokio::test]
    async fn the_invoke_api_answers_every_error_as_lambda_does() {
        let (_tmp, p) = proxy().await;
        let big = "x".repeat(40 << 10);
        let cases = [
            (
                post("/2015-03-31/functions/orders/invocations").header("x-big", big.as_str()),
                431,
                "RequestTooLargeException",
            ),
            (
                post("/2015-03-31/functions/nowhere/invocations"),
                404,
                "ResourceNotFoundException",
            ),
            (
                http::Request::get("/2015-03-31/functions/orders/invocations"),
                405,
                "MethodNotAllowedException",
            ),
            // Other Lambda APIs: not routed, not mistaken for a function
            // named "2015-03-31".
            (
                http::Request::get("/2015-03-31/functions/orders"),
                404,
                "UnknownOperationException",
            ),
            (
                http::Request::get("/2015-03-31/functions/"),
                404,
                "UnknownOperationException",
            ),
            (
                http::Request::get("/2021-10-31/functions/orders/url"),
                404,
                "UnknownOperationException",
            ),
        ];
        for (req, status, code) in cases {
            let req = req.body(Body::empty()).unwrap();
            let what = format!("{} {}", req.method(), req.uri());
            let (got, headers, body) = answer(&p, req).await;
            assert_eq!(got, status, "{what}: {body}");
            assert_eq!(headers["x-amzn-errortype"], code, "{what}");
            assert_eq!(body["Type"], "User", "{what}: {body}");
            assert!(
                !body["message"].as_str().unwrap_or("").is_empty(),
                "{what}: {body}"
            );
        }
    }

    /// boto3 reads `ExecutedVersion` from `X-Amz-Executed-Version`: the
    /// version the policy chose, on every dispatch kind.
    #[tokio::test]
    async fn an_invoke_answer_names_the_version_that_ran() {
        let (_tmp, p) = proxy().await;
        for (synthetic, version) in [(true, "8"), (false, "7")] {
            let mut req = post("/2015-03-31/functions/orders/invocations");
            if synthetic {
                req = req.header("x-switchyard-synthetic", "true");
            }
            let (status, headers, body) = answer(&p, req.body(Body::from("{}")).unwrap()).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(headers["x-amz-executed-version"], version, "{body}");
            assert_eq!(body["qualifier"], version, "{body}");
        }
    }

    #[test]
    fn api_versions_are_dates() {
        assert!(is_api_version("2015-03-31"));
        assert!(is_api_version("2021-10-31"));
        for not in [
            "orders",
            "2015-03-3",
            "2015-03-311",
            "2015_03_31",
            "abcd-ef-gh",
            "",
        ] {
            assert!(!is_api_version(not), "{not}");
        }
    }
}
