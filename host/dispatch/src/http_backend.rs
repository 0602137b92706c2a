//! `{"type":"http","urls":{"7":"https://..."}}`: forward to the chosen
//! qualifier's base URL (Lambda function URLs, containers, local
//! development), over HTTP/1.1 or HTTP/2, TLS for `https://`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;

use crate::clients::Clients;
use crate::dispatcher::{Body, Call, Dispatcher, Target};
use crate::error::{DispatchError, SpecError, causes};
use crate::headers::{outgoing, strip_hop_by_hop};

/// The `http` backend's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSpec {
    /// Qualifier -> base URL.
    urls: BTreeMap<String, String>,
}

impl HttpSpec {
    /// Every URL is an absolute http(s) URL.
    pub(crate) fn check(&self) -> Result<(), SpecError> {
        for (q, url) in &self.urls {
            let ok = url.parse::<Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                return Err(SpecError::Invalid(format!(
                    "dispatch url for {q:?} is {url:?}; expected an absolute http:// or https:// URL"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct HttpDispatcher {
    /// Qualifier -> base URL without a trailing `/`.
    urls: BTreeMap<String, String>,
    clients: Arc<Clients>,
}

impl HttpDispatcher {
    pub(crate) fn new(spec: HttpSpec, clients: Arc<Clients>) -> Result<Self, SpecError> {
        spec.check()?;
        let urls = spec
            .urls
            .into_iter()
            .map(|(q, u)| (q, u.trim_end_matches('/').to_owned()))
            .collect();
        Ok(HttpDispatcher { urls, clients })
    }
}

#[async_trait]
impl Dispatcher for HttpDispatcher {
    async fn send(&self, call: &Call, to: &Target) -> Result<http::Response<Body>, DispatchError> {
        let call = call.as_http();
        let function = &to.function;
        let Some(base) = self.urls.get(&to.qualifier) else {
            return Err(DispatchError::internal(
                "NoUrl",
                format!(
                    "{function}: no dispatch url for qualifier {:?}",
                    to.qualifier
                ),
            ));
        };
        let url = if call.query.is_empty() {
            format!("{base}{}", call.path)
        } else {
            format!("{base}{}?{}", call.path, call.query)
        };
        let uri: Uri = url.parse().map_err(|e| {
            DispatchError::internal(
                "BadUrl",
                format!("{function}: bad upstream url {url:?}: {e}"),
            )
        })?;
        let mut req = http::Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .body(Full::new(call.body.clone()))
            .map_err(|e| DispatchError::internal("BadRequest", format!("{function}: {e}")))?;
        *req.headers_mut() = outgoing(&call.headers, to);
        let client = self
            .clients
            .http()
            .map_err(|e| DispatchError::internal("Tls", format!("{function}: {e}")))?;
        let timeout = self.clients.timeout;
        match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Err(DispatchError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!(
                    "{function} qualifier {} did not answer within {timeout:?}",
                    to.qualifier
                ),
            )),
            Ok(Err(e)) => Err(DispatchError::upstream(
                StatusCode::BAD_GATEWAY,
                "Unreachable",
                format!(
                    "{function} qualifier {} at {url} failed: {}",
                    to.qualifier,
                    causes(&e)
                ),
            )),
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, false);
                Ok(http::Response::from_parts(
                    parts,
                    body.map_err(|e| Box::new(e) as _).boxed(),
                ))
            }
        }
    }
}
