//! `{"type":"http","urls":{"7":"https://..."}}`: forward to the chosen
//! qualifier's base URL (Lambda function URLs, containers, local
//! development), over HTTP/1.1 or HTTP/2, TLS for `https://`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::uri::{Authority, Scheme};
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
    /// Qualifier -> base URL, parsed once per route version.
    urls: BTreeMap<String, Base>,
    clients: Arc<Clients>,
}

/// A version's base URL, in the parts a request's URI is built from.
#[derive(Debug)]
struct Base {
    scheme: Scheme,
    authority: Authority,
    /// The base path without a trailing `/` (often empty).
    prefix: String,
}

impl Base {
    /// The upstream URI for a request's `path` and `query`.
    fn uri(&self, path: &str, query: &str) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(self.prefix.len() + path.len() + query.len() + 1);
        pq.push_str(&self.prefix);
        pq.push_str(path);
        if !query.is_empty() {
            pq.push('?');
            pq.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

impl std::fmt::Display for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl HttpDispatcher {
    pub(crate) fn new(spec: HttpSpec, clients: Arc<Clients>) -> Result<Self, SpecError> {
        spec.check()?;
        let urls = spec
            .urls
            .into_iter()
            .map(|(q, u)| {
                // `check` saw an absolute http(s) URL with a host.
                let parts = u.parse::<Uri>().map_err(|e| {
                    SpecError::Invalid(format!("dispatch url for {q:?} is {u:?}: {e}"))
                })?.into_parts();
                let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
                    return Err(SpecError::Invalid(format!(
                        "dispatch url for {q:?} is {u:?}; expected an absolute http:// or https:// URL"
                    )));
                };
                let prefix = parts
                    .path_and_query
                    .map(|pq| pq.path().trim_end_matches('/').to_owned())
                    .unwrap_or_default();
                Ok((q, Base { scheme, authority, prefix }))
            })
            .collect::<Result<_, SpecError>>()?;
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
        let uri = base.uri(&call.path, &call.query).map_err(|e| {
            DispatchError::internal(
                "BadUrl",
                format!(
                    "{function}: bad upstream url {base}{}?{}: {e}",
                    call.path, call.query
                ),
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
                    "{function} qualifier {} at {base}{} failed: {}",
                    to.qualifier,
                    call.path,
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
