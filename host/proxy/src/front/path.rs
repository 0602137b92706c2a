//! Path routing: `/{function}` and `/{function}/{rest...}`, forwarded with
//! the rest of the path as the client sent it (still percent-encoded:
//! decoding would turn `%2F` into a separator). Answers in plain HTTP.

use std::sync::Arc;

use axum::extract::Request as AxumRequest;
use axum::response::Response;
use switchyard_core::Request;
use switchyard_dispatch::{Call, HttpCall, RequestContext};

use super::FrontEnd;
use crate::Proxy;
use crate::answer::{ProxyError, Shape};
use crate::hygiene::{decoded_segment, drop_tags, has_dot_segment};
use crate::steps;

/// `/{function}/{rest...}`: claims every request whose target is a path
/// (tried last).
pub(crate) struct PathRouting;

/// The function a path names and the rest of the path.
pub(crate) struct PathClaim {
    function: String,
    rest: String,
}

impl FrontEnd for PathRouting {
    const SHAPE: Shape = Shape::Http;
    type Claim = PathClaim;

    fn claim(req: &AxumRequest) -> Option<Result<PathClaim, ProxyError>> {
        let path = req.uri().path();
        // `CONNECT host:port` and `OPTIONS *` have no path to route by.
        let Some(tail) = path.strip_prefix('/') else {
            return Some(Err(ProxyError::NotAPath));
        };
        let segment = tail.split('/').next().unwrap_or("");
        if segment.is_empty() {
            return Some(Err(ProxyError::NoRoute));
        }
        let Some(function) = decoded_segment(segment) else {
            return Some(Err(ProxyError::BadSegment));
        };
        let rest = match &tail[segment.len()..] {
            "" => "/".to_owned(),
            rest => rest.to_owned(),
        };
        Some(Ok(PathClaim {
            function: function.into_owned(),
            rest,
        }))
    }

    async fn serve(p: &Arc<Proxy>, claim: PathClaim, req: AxumRequest) -> Response {
        let PathClaim { function, rest } = claim;
        // The function first: an answer labelled with a function must name
        // one this proxy routes (a caller cannot mint metric labels).
        let Some(active) = p.policies.get(&function) else {
            return super::refuse::<Self>(p, None, ProxyError::UnknownFunction(function));
        };
        if has_dot_segment(req.uri().path()) {
            return super::refuse::<Self>(p, Some(&function), ProxyError::DotSegment);
        }
        let (mut parts, body, _held) = match super::admit(p, req).await {
            Ok(admitted) => admitted,
            Err(e) => return super::refuse::<Self>(p, Some(&function), e),
        };
        // The policy reads the request's own header map in place, minus any
        // tag a caller forged under the names the mesh sets (they are
        // dropped on the way out too); the call takes the map back after
        // the decision.
        drop_tags(&mut parts.headers);
        let policy_req = Arc::new(Request::from_http(
            &function,
            &parts.method,
            rest.as_str(),
            std::mem::take(&mut parts.headers),
        ));
        let decision = crate::decide::decide(p, &active, &policy_req, false);
        let mut headers = match Arc::try_unwrap(policy_req) {
            Ok(req) => req.into_http_headers(),
            // Nothing keeps the request after deciding; were it still
            // shared, the copy would still be right.
            Err(shared) => Request::clone(&shared).into_http_headers(),
        };
        if let Some(peer) = crate::server::peer() {
            crate::hygiene::forwarded_for(&mut headers, peer.ip());
        }
        let call = Call::Http(HttpCall {
            method: parts.method,
            path: rest,
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers,
            body,
            request_context: parts.extensions.remove::<RequestContext>(),
        });
        steps::dispatch_decided(p, &function, &active, decision, call, Self::SHAPE).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::front::testing::proxy;

    /// Request-targets that are not paths (`CONNECT host:port`, `OPTIONS
    /// *`, an absolute URI with no path) are answered over a real socket,
    /// not dropped by a panic.
    #[tokio::test]
    async fn every_request_target_form_is_answered() {
        let (_tmp, p) = proxy().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(crate::serve(listener, p, async {
            let _ = stopped.await;
        }));
        for (request, status) in [
            ("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", "400"),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "400"),
            ("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", "404"),
            ("GET http://a/orders/x HTTP/1.1\r\nHost: a\r\n\r\n", "200"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut buf = vec![0; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status}")),
                "{request:?}: {text}"
            );
        }
        let _ = stop.send(());
        served.await.unwrap().unwrap();
    }
}

/// The front ends' path handling, as the other parsers are: any
/// request-target a client can send is answered, never a panic, and never
/// a 5xx of the mesh's own.
#[cfg(test)]
mod properties {
    use std::sync::{Arc, OnceLock};

    use axum::body::Body;
    use proptest::prelude::*;

    use crate::Proxy;

    fn rig() -> &'static (tokio::runtime::Runtime, Arc<Proxy>, tempfile::TempDir) {
        static RIG: OnceLock<(tokio::runtime::Runtime, Arc<Proxy>, tempfile::TempDir)> =
            OnceLock::new();
        RIG.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (tmp, p) = rt.block_on(crate::front::testing::proxy());
            (rt, p, tmp)
        })
    }

    proptest! {
        #[test]
        fn any_request_target_is_answered(
            method in prop::sample::select(vec!["GET", "POST", "CONNECT", "OPTIONS", "PUT"]),
            target in "[!-~]{0,48}",
        ) {
            let Ok(uri) = target.parse::<http::Uri>() else { return Ok(()) };
            let (rt, p, _) = rig();
            let req = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let status = rt.block_on(crate::public(p.clone(), req)).status();
            prop_assert!(!status.is_server_error(), "{method} {target}: {status}");
        }
    }
}
