//! The worked example of adding a front end (it exists only in this
//! crate's tests, as `echo` does for dispatch backends): a request to
//! `/by-header/{rest...}` names its function in an `x-example-function`
//! header. This file, plus one line in the list in `lib.rs`, is all it
//! takes: the claim says how a request names its function, `SHAPE` how its
//! answers look, and `serve` hands the decided request to the shared steps.

use std::sync::Arc;

use axum::extract::Request as AxumRequest;
use axum::response::Response;
use switchyard_core::Request;
use switchyard_dispatch::{Call, HttpCall};

use super::FrontEnd;
use crate::Proxy;
use crate::answer::{ProxyError, Shape};
use crate::hygiene::drop_tags;
use crate::steps;

pub(crate) struct Example;

impl FrontEnd for Example {
    const SHAPE: Shape = Shape::Http;
    /// The function, and the path to forward.
    type Claim = (String, String);

    fn claim(req: &AxumRequest) -> Option<Result<(String, String), ProxyError>> {
        let rest = req.uri().path().strip_prefix("/by-header")?;
        let rest = if rest.is_empty() { "/" } else { rest };
        Some(
            req.headers()
                .get("x-example-function")
                .and_then(|v| v.to_str().ok())
                .map(|f| (f.to_owned(), rest.to_owned()))
                .ok_or(ProxyError::NoRoute),
        )
    }

    async fn serve(
        p: &Arc<Proxy>,
        (function, rest): (String, String),
        req: AxumRequest,
    ) -> Response {
        let Some(active) = p.policies.get(&function) else {
            return super::refuse::<Self>(p, None, ProxyError::UnknownFunction(function));
        };
        let (mut parts, body, _held) = match super::admit(p, req).await {
            Ok(admitted) => admitted,
            Err(e) => return super::refuse::<Self>(p, Some(&function), e),
        };
        drop_tags(&mut parts.headers);
        let policy_req = Arc::new(Request::from_http(
            &function,
            &parts.method,
            &rest,
            parts.headers.clone(),
        ));
        let decision = crate::decide::decide(p, &active, &policy_req, false);
        let call = Call::Http(HttpCall {
            method: parts.method,
            path: rest,
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: parts.headers,
            body,
            request_context: None,
        });
        steps::dispatch_decided(p, &function, &active, decision, call, Self::SHAPE).await
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use crate::front::testing::{call, proxy};

    #[tokio::test]
    async fn a_new_front_end_is_one_file_and_one_line() {
        let (_tmp, p) = proxy().await;
        // Claimed by the example: the function from the header, decided by
        // the policy, sent through the shared steps.
        let req = http::Request::get("/by-header/api/1?x=1")
            .header("x-example-function", "orders")
            .header("x-switchyard-synthetic", "true")
            .body(Body::empty())
            .unwrap();
        let (status, echoed) = call(&p, req).await;
        assert_eq!(status, 200, "{echoed}");
        assert_eq!(echoed["dispatcher"], "echo", "{echoed}");
        assert_eq!(echoed["qualifier"], "8", "{echoed}");
        assert_eq!(echoed["traffic"], "synthetic", "{echoed}");
        assert_eq!(echoed["path"], "/api/1", "{echoed}");
        // Its refusal, in its shape, before any function is known.
        let req = http::Request::get("/by-header/x")
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&p, req).await;
        assert_eq!(status, 404);
        assert_eq!(body["status"], 404, "{body}");
        // The front ends after it in the list still serve the rest.
        let req = http::Request::get("/orders/api/2")
            .body(Body::empty())
            .unwrap();
        let (status, echoed) = call(&p, req).await;
        assert_eq!(status, 200, "{echoed}");
        assert_eq!(echoed["qualifier"], "7", "{echoed}");
    }
}
