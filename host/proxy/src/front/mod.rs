//! The public listener's front ends: each names how a request names its
//! function and how its answers are shaped, then hands the decided
//! request to the one shared path ([`steps`](crate::steps)).
//!
//! A front end is a type implementing [`FrontEnd`], in a file of its own
//! here, plus one line in the list in `lib.rs` (`public_front_ends`), which
//! tries them in order. `example.rs` is the worked example (a front end
//! that exists only in this crate's tests).

use std::future::Future;

use axum::extract::Request as AxumRequest;
use axum::response::Response;

use crate::Proxy;
use crate::answer::{ProxyError, Shape};
use crate::hygiene::Held;

#[cfg(test)]
pub(crate) mod example;
pub(crate) mod invoke;
pub(crate) mod path;

/// A front end of the public listener.
pub(crate) trait FrontEnd {
    /// How its answers, errors included, are shaped.
    const SHAPE: Shape;
    /// What it reads off a request it takes: the function's name, and
    /// whatever else it needs to serve it.
    type Claim: Send;
    /// Whether the request is this front end's: `None` passes it to the
    /// next; `Some(Err(_))` takes it but refuses it before any function is
    /// known (answered in [`Self::SHAPE`], counted as undecided).
    fn claim(req: &AxumRequest) -> Option<Result<Self::Claim, ProxyError>>;
    /// Serves a request it claimed; counts its own answer.
    fn serve(
        p: &std::sync::Arc<Proxy>,
        claim: Self::Claim,
        req: AxumRequest,
    ) -> impl Future<Output = Response> + Send;
}

/// Tries each front end in order; the first to claim the request serves
/// it. Static calls, no table to search.
macro_rules! try_front_ends {
    ($p:expr, $req:ident, [$($(#[$meta:meta])* $front:ty),* $(,)?]) => {{
        use $crate::front::FrontEnd as _;
        $(
            $(#[$meta])*
            let $req = match <$front>::claim(&$req) {
                Some(Ok(claim)) => return <$front>::serve($p, claim, $req).await,
                Some(Err(e)) => {
                    return $crate::count::undecided($p, e.answer(<$front>::SHAPE));
                }
                None => $req,
            };
        )*
        let _ = $req;
        $crate::count::undecided(
            $p,
            $crate::answer::ProxyError::NoRoute.answer($crate::answer::Shape::Http),
        )
    }};
}
pub(crate) use try_front_ends;

/// What every front end does once it knows the function: the header
/// limit, then the whole body within its limits (a refusal for the front
/// end to answer in its shape, [`refuse`]). Keep the [`Held`] share of the
/// body budget until the request is done.
pub(crate) async fn admit(
    p: &Proxy,
    req: AxumRequest,
) -> Result<(http::request::Parts, axum::body::Bytes, Held), ProxyError> {
    crate::hygiene::check_headers(&p.config, req.headers())?;
    let (parts, body) = req.into_parts();
    let (body, held) =
        crate::hygiene::read_body(&p.config, &p.body_budget, &parts.headers, body).await?;
    Ok((parts, body, held))
}

/// A request `F` refuses before deciding, answered in its shape and
/// counted under the function when it is one this host routes.
pub(crate) fn refuse<F: FrontEnd>(p: &Proxy, function: Option<&str>, e: ProxyError) -> Response {
    let answer = e.answer(F::SHAPE);
    match function {
        Some(f) => crate::count::for_function(p, answer, f),
        None => crate::count::undecided(p, answer),
    }
}

/// What the front ends' tests share: a proxy over a `dir` store routing
/// `orders` to the test-only `echo` backend, and a call to it.
#[cfg(test)]
pub(crate) mod testing {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use switchyard_config::{ConfigStore, DirStore, WatchConfig, Watcher};
    use switchyard_core::RouteConfig;

    use crate::{Proxy, ProxyConfig};

    /// A proxy routing `orders` by the synthetic-header policy to the
    /// test-only `echo` backend, which answers with what it was sent.
    pub(crate) async fn proxy() -> (tempfile::TempDir, std::sync::Arc<Proxy>) {
        proxy_with(ProxyConfig::default()).await
    }

    /// [`proxy`] with `config`.
    pub(crate) async fn proxy_with(
        config: ProxyConfig,
    ) -> (tempfile::TempDir, std::sync::Arc<Proxy>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path()).unwrap();
        let bytes = std::fs::read(switchyard_test_artifacts::SYNTHETIC_HEADER).unwrap();
        let mut cfg = RouteConfig::from_json(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"dispatch":{"type":"echo"}}"#,
        )
        .unwrap();
        cfg.policy = Some(store.put_blob(&bytes, &|_, _| {}).await.unwrap());
        store.put_route("orders", &cfg).await.unwrap();
        let watcher = Watcher::new(
            std::sync::Arc::new(store),
            switchyard_core::Engine::new().unwrap(),
            WatchConfig::default(),
        );
        let proxy = Proxy::new(watcher.policies(), config);
        watcher.set_prepare(proxy.prepare_hook());
        watcher.poll().await.unwrap();
        (tmp, proxy)
    }

    /// The public listener's answer: status and JSON body.
    pub(crate) async fn call(p: &std::sync::Arc<Proxy>, req: http::Request<Body>) -> (u16, Value) {
        let (status, _, body) = answer(p, req).await;
        (status, body)
    }

    /// The public listener's answer: status, headers and JSON body.
    pub(crate) async fn answer(
        p: &std::sync::Arc<Proxy>,
        req: http::Request<Body>,
    ) -> (u16, http::HeaderMap, Value) {
        let r = crate::public(p.clone(), req).await;
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        (parts.status.as_u16(), parts.headers, json)
    }
}
