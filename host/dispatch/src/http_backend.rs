//! `{"type":"http","urls":{"7":"https://..."}}`: forward to the chosen
//! qualifier's base URL (Lambda function URLs, containers, local
//! development), over HTTP/1.1 or HTTP/2, TLS for `https://`.
//!
//! An optional `auth` block authenticates each request:
//! `{"kind":"aws-iam"}` signs it with AWS Signature Version 4 and the
//! host's own credentials (service `lambda` and the environment's region
//! unless `"service"` / `"region"` say otherwise: a Lambda function URL
//! with `AuthType: AWS_IAM`); `{"kind":"header","name":"x-functions-key",
//! "value":"..."}` adds a header (Azure Functions' key, a bearer token).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;

use crate::clients::Clients;
use crate::dispatcher::{Body, Call, Dispatcher, Target};
use crate::error::{DispatchError, SpecError, causes};
use crate::headers::{outgoing, strip_hop_by_hop};
use crate::sockets::{Released, SocketTag};

/// The `http` backend's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSpec {
    /// Qualifier -> base URL.
    urls: BTreeMap<String, String>,
    /// How each request is authenticated (none by default).
    #[serde(default)]
    auth: Option<AuthSpec>,
}

/// The `auth` block of `http` dispatch.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum AuthSpec {
    /// SigV4 with the host's own AWS credentials.
    AwsIam {
        /// The signing region; default the environment's (`AWS_REGION`).
        #[serde(default)]
        region: Option<String>,
        /// The signing service; default `lambda` (function URLs).
        #[serde(default = "lambda_service")]
        service: String,
    },
    /// A header added to every request.
    Header {
        /// The header's name, e.g. `x-functions-key` or `authorization`.
        name: String,
        /// Its value, e.g. `Bearer ...`.
        value: String,
    },
}

fn lambda_service() -> String {
    "lambda".to_owned()
}

/// An `auth` block, checked and parsed once per route version.
#[derive(Debug)]
enum Auth {
    AwsIam {
        region: Option<String>,
        service: String,
    },
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
}

impl AuthSpec {
    fn parse(&self) -> Result<Auth, SpecError> {
        match self {
            AuthSpec::AwsIam { region, service } => {
                if service.trim().is_empty() {
                    return Err(SpecError::Invalid(
                        "auth \"service\" is empty; leave it out for \"lambda\" (function URLs)"
                            .into(),
                    ));
                }
                Ok(Auth::AwsIam {
                    region: region.clone(),
                    service: service.clone(),
                })
            }
            AuthSpec::Header { name, value } => {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    SpecError::Invalid(format!("auth header name {name:?} is not a header name"))
                })?;
                let mut value = HeaderValue::from_str(value).map_err(|_| {
                    SpecError::Invalid(format!(
                        "auth header {name} has a value that cannot be sent in a header"
                    ))
                })?;
                // Never shown by debug output or logged by hyper.
                value.set_sensitive(true);
                Ok(Auth::Header { name, value })
            }
        }
    }
}

impl HttpSpec {
    /// Every URL is an absolute http(s) URL.
    pub(crate) fn check(&self) -> Result<(), SpecError> {
        if let Some(auth) = &self.auth {
            auth.parse()?;
        }
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
    auth: Option<Auth>,
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
        let auth = spec.auth.as_ref().map(AuthSpec::parse).transpose()?;
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
        Ok(HttpDispatcher {
            urls,
            auth,
            clients,
        })
    }
}

impl HttpDispatcher {
    /// Signs `req` with SigV4 and the host's AWS credentials.
    async fn sign(
        &self,
        req: &mut http::Request<Full<Bytes>>,
        body: &[u8],
        region: Option<&str>,
        service: &str,
        to: &Target,
    ) -> Result<(), DispatchError> {
        let failed = |why: String| {
            DispatchError::internal(
                "AuthFailed",
                format!(
                    "{} qualifier {}: aws-iam auth failed: {why}",
                    to.function, to.qualifier
                ),
            )
        };
        let sdk = self.clients.aws().await;
        let Some(provider) = sdk.credentials_provider() else {
            return Err(failed("no AWS credentials provider is configured".into()));
        };
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| failed(format!("no AWS credentials: {}", causes(&e))))?;
        let Some(region) = region
            .map(str::to_owned)
            .or_else(|| sdk.region().map(|r| r.to_string()))
        else {
            return Err(failed(
                "no region: set \"region\" in the auth block or AWS_REGION".into(),
            ));
        };
        let identity: aws_smithy_runtime_api::client::identity::Identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name(service)
            .time(std::time::SystemTime::now())
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .map_err(|e| failed(e.to_string()))?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = aws_sigv4::http_request::SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.into_iter(),
            aws_sigv4::http_request::SignableBody::Bytes(body),
        )
        .map_err(|e| failed(e.to_string()))?;
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|e| failed(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
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
        match &self.auth {
            None => {}
            Some(Auth::Header { name, value }) => {
                req.headers_mut().insert(name.clone(), value.clone());
            }
            Some(Auth::AwsIam { region, service }) => {
                self.sign(&mut req, &call.body, region.as_deref(), service, to)
                    .await?;
            }
        }
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
            Ok(Ok(mut resp)) => {
                // Its socket is idle again once this body ends.
                let tag = resp.extensions_mut().remove::<SocketTag>();
                let resp = resp.map(|body| Released::new(body, tag));
                // AWS's own refusal of the signature (it names its error
                // type), not the function's answer.
                if matches!(self.auth, Some(Auth::AwsIam { .. }))
                    && matches!(resp.status().as_u16(), 401 | 403)
                    && let Some(kind) = resp.headers().get("x-amzn-errortype")
                {
                    let kind = kind.to_str().unwrap_or("AccessDenied").to_owned();
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    let detail = body
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .and_then(|v| {
                            v.get("message")
                                .or_else(|| v.get("Message"))
                                .and_then(|m| m.as_str())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    return Err(DispatchError::upstream(
                        StatusCode::BAD_GATEWAY,
                        &kind,
                        format!(
                            "{function} qualifier {}: aws-iam auth was refused ({status}, {kind}): {detail}",
                            to.qualifier
                        ),
                    ));
                }
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
