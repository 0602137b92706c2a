//! What every dispatcher of a process shares: the HTTP(S) clients (one per
//! serving thread, so a thread reuses the upstream connections its own
//! runtime drives), the Lambda client, the upstream timeout and the bounded
//! mirror slots.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OnceCell, Semaphore};

use crate::dispatcher::{Call, Dispatcher, Target};
use crate::sockets::{Budget, Budgeted};

/// A Step Functions client for `sdk`. With an endpoint URL of its own (an
/// emulator, a VPC endpoint), the SDK's `sync-` host prefix for
/// `StartSyncExecution` is turned off: it would make `sync-127.0.0.1`.
pub fn sfn_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sfn::Client {
    let mut config = aws_sdk_sfn::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        config = config.interceptor(switchyard_config::NoHostPrefix);
    }
    aws_sdk_sfn::Client::from_conf(config.build())
}

/// The HTTP(S) client the `http` backend uses.
pub(crate) type HttpClient = Client<TimedConnect<HttpsConnector<HttpConnector>>, Full<Bytes>>;

/// A connector whose connections (TCP, then TLS) must be made within a
/// time of their own: an upstream that accepts and never completes its
/// handshake fails fast, instead of holding the request for the whole
/// upstream timeout. Each connection takes a place in the upstream socket
/// [`Budget`] first (idle sockets closed to make room when it is used up).
#[derive(Clone)]
pub(crate) struct TimedConnect<C> {
    inner: C,
    timeout: Duration,
    budget: Arc<Budget>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<http::Uri> for TimedConnect<C>
where
    C: tower_service::Service<http::Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
{
    type Response = Budgeted<C::Response>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let timeout = self.timeout;
        let budget = self.budget.clone();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let permit = budget.reserve(timeout).await?;
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => Ok(budget.hold(connected.map_err(Into::<BoxError>::into)?, permit)),
                Err(_) => Err(format!(
                    "no connection (TCP and TLS handshake) within {timeout:?} (--upstream-connect-timeout)"
                )
                .into()),
            }
        })
    }
}

/// How the shared clients behave.
#[derive(Debug, Clone)]
pub struct ClientsConfig {
    /// How long a target may take (504 after).
    pub upstream_timeout: Duration,
    /// How long making a connection to an `http` target may take, TCP and
    /// TLS handshake together (502 after); at most the upstream timeout.
    pub connect_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse before it is
    /// closed.
    pub upstream_idle_timeout: Duration,
    /// Mirror copies in flight at once; more are dropped and counted.
    pub mirror_slots: usize,
    /// The Lambda client; by default one is made from the environment
    /// (like any AWS SDK client) on first use.
    pub lambda_client: Option<aws_sdk_lambda::Client>,
    /// The Step Functions client; by default one is made from the
    /// environment on first use (see [`sfn_client`]).
    pub sfn_client: Option<aws_sdk_sfn::Client>,
    /// Serving threads that each get their own HTTP(S) client and
    /// connection pool (see [`enter_worker`]); 1 shares one among all.
    pub workers: usize,
    /// How long a secret read for a context reference is used before it
    /// is read again (in the background; the last good value is kept if
    /// that fails).
    pub secret_ttl: Duration,
    /// Sockets to `http` targets open at once, busy or idle; a connection
    /// that finds them used up closes idle ones first, then waits within
    /// the connect timeout. `None`: no budget of its own (the proxy sets
    /// one from the open-file limit).
    pub max_upstream_sockets: Option<usize>,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            upstream_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(90),
            mirror_slots: 64,
            lambda_client: None,
            sfn_client: None,
            workers: 1,
            secret_ttl: Duration::from_secs(300),
            max_upstream_sockets: None,
        }
    }
}

thread_local! {
    /// The serving thread this is, set by [`enter_worker`].
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as serving thread `index` (of
/// [`ClientsConfig::workers`]): the HTTP(S) calls it makes go through its
/// own client, whose connections are driven by the thread's own runtime
/// (a thread-per-core server, where a connection made on another thread's
/// runtime would cost a cross-thread wake-up per request). Threads never
/// marked share client 0. Its policy decisions take warm evaluators from
/// its own idle list of each pool too ([`switchyard_core::set_thread_shard`]).
pub fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
    switchyard_core::set_thread_shard(index);
}

/// The serving thread this is ([`enter_worker`]; 0 for threads never
/// marked): for state kept per thread, like its clients.
pub fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// The trust roots could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot set up TLS for https:// upstreams: {0}")]
pub struct TlsError(String);

/// The clients every dispatcher of a process shares.
pub struct Clients {
    /// One per serving thread, each made on first use: loading the trust
    /// roots costs milliseconds that a Lambda cold start whose targets are
    /// all `lambda` need not pay.
    http: Vec<OnceLock<HttpClient>>,
    /// The TLS settings (trust roots loaded), shared by the HTTP clients.
    tls: OnceLock<Result<rustls::ClientConfig, TlsError>>,
    lambda: OnceCell<aws_sdk_lambda::Client>,
    sfn: OnceCell<aws_sdk_sfn::Client>,
    aws: OnceCell<aws_config::SdkConfig>,
    secrets: Arc<crate::secrets::Secrets>,
    pub(crate) timeout: Duration,
    connect_timeout: Duration,
    idle_timeout: Duration,
    mirror_slots: Arc<Semaphore>,
    /// The upstream socket budget all HTTP(S) clients share.
    sockets: Arc<Budget>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Clients {
    /// Clients as configured. `https://` upstreams are verified against the
    /// public (Mozilla) roots plus the system's, where `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` replace the system's as usual, so a private CA works.
    /// The roots are loaded when the first HTTP(S) call is made.
    pub fn new(config: ClientsConfig) -> Arc<Self> {
        Arc::new(Clients {
            http: (0..config.workers.max(1))
                .map(|_| OnceLock::new())
                .collect(),
            tls: OnceLock::new(),
            lambda: OnceCell::new_with(config.lambda_client),
            sfn: OnceCell::new_with(config.sfn_client),
            aws: OnceCell::new(),
            secrets: crate::secrets::Secrets::new(config.secret_ttl, config.upstream_timeout),
            timeout: config.upstream_timeout,
            connect_timeout: config.connect_timeout.min(config.upstream_timeout),
            idle_timeout: config.upstream_idle_timeout,
            mirror_slots: Arc::new(Semaphore::new(config.mirror_slots)),
            sockets: Budget::new(config.max_upstream_sockets),
        })
    }

    /// The calling thread's HTTP(S) client, made on first use.
    pub(crate) fn http(&self) -> Result<&HttpClient, TlsError> {
        let slot = &self.http[worker() % self.http.len()];
        if let Some(client) = slot.get() {
            return Ok(client);
        }
        let tls = self.tls.get_or_init(tls_config).clone()?;
        Ok(slot.get_or_init(|| {
            let mut http = HttpConnector::new();
            // Small request/answer pairs: Nagle's algorithm would hold
            // each back for the peer's delayed ACK.
            http.set_nodelay(true);
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            let https = TimedConnect {
                inner: https,
                timeout: self.connect_timeout,
                budget: self.sockets.clone(),
            };
            // The pool's timer reaps connections idle past the timeout;
            // without one they are kept forever.
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(self.idle_timeout)
                .build(https)
        }))
    }

    /// How long a target may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Lambda client, made from the environment on first use.
    pub(crate) async fn lambda(&self) -> &aws_sdk_lambda::Client {
        self.lambda
            .get_or_init(|| async { aws_sdk_lambda::Client::new(self.aws().await) })
            .await
    }

    /// The AWS environment (credentials, region), loaded once on first use:
    /// what the Lambda and Step Functions clients are made from and
    /// `aws-iam` auth signs with.
    pub(crate) async fn aws(&self) -> &aws_config::SdkConfig {
        self.aws
            .get_or_init(|| aws_config::defaults(aws_config::BehaviorVersion::latest()).load())
            .await
    }

    /// The Step Functions client, made from the environment on first use.
    pub(crate) async fn sfn(&self) -> &aws_sdk_sfn::Client {
        self.sfn
            .get_or_init(|| async { sfn_client(self.aws().await) })
            .await
    }

    /// Puts the values of the secrets `to`'s context refers to into it
    /// (see the `secrets` module): from the cache, else read with the AWS
    /// SDK. A secret that cannot be read, and was never read, is a 502
    /// naming the key and the reference.
    pub async fn resolve_secrets(&self, to: &mut Target) -> Result<(), crate::DispatchError> {
        if to.secrets.is_empty() {
            return Ok(());
        }
        let aws = self.aws().await;
        self.secrets.resolve(aws, to).await
    }

    /// Sends a mirror copy in the background, never delaying the caller.
    /// Bounded: without a free slot the copy is dropped and counted
    /// (`switchyard_mirror_dropped_total`); each one sent is counted by
    /// status (`switchyard_mirror_total`).
    pub fn spawn_mirror(self: &Arc<Self>, dispatcher: Arc<dyn Dispatcher>, call: Call, to: Target) {
        self.in_mirror_slot(to, move |to, secrets| async move {
            let outcome = match secrets {
                Ok(()) => dispatcher.mirror(&call, &to).await,
                Err(e) => e.label().to_owned(),
            };
            count_mirror(&to, outcome);
        });
    }

    /// Sends a mirror copy in the background as [`spawn_mirror`](Self::spawn_mirror)
    /// does, in the same bounded slots, but keeps its whole answer (a
    /// `lambda` target is a `RequestResponse` invoke, not an `Event`):
    /// `then` gets it with the target. Returns whether the copy was sent
    /// (`false`: no free slot; dropped and counted).
    pub fn spawn_mirror_answer<F, Fut>(
        self: &Arc<Self>,
        dispatcher: Arc<dyn Dispatcher>,
        call: Call,
        to: Target,
        then: F,
    ) -> bool
    where
        F: FnOnce(Target, Result<http::Response<crate::Body>, crate::DispatchError>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.in_mirror_slot(to, move |to, secrets| async move {
            let answer = match secrets {
                Ok(()) => dispatcher.send(&call, &to).await,
                Err(e) => Err(e),
            };
            let outcome = match &answer {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => e.label().to_owned(),
            };
            count_mirror(&to, outcome);
            then(to, answer).await;
        })
    }

    /// Runs `send` for mirror target `to` in one of the bounded mirror
    /// slots, once its secrets are read (`send` gets whether they could
    /// be); without a free slot the copy is dropped and counted
    /// (`switchyard_mirror_dropped_total`). Returns whether it ran.
    fn in_mirror_slot<F, Fut>(self: &Arc<Self>, mut to: Target, send: F) -> bool
    where
        F: FnOnce(Target, Result<(), crate::DispatchError>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(permit) = self.mirror_slots.clone().try_acquire_owned() else {
            crate::catalogue::MIRROR_DROPPED
                .counter(&[("function", &to.function)])
                .increment(1);
            return false;
        };
        let clients = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let secrets = clients.resolve_secrets(&mut to).await;
            send(to, secrets).await;
        });
        true
    }
}

/// Counts one mirror copy by its outcome (`switchyard_mirror_total`).
fn count_mirror(to: &Target, outcome: String) {
    crate::catalogue::MIRROR
        .counter(&[
            ("function", &to.function),
            ("target", &to.qualifier),
            ("status", &outcome),
        ])
        .increment(1);
}

fn tls_config() -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The system's roots, or what SSL_CERT_FILE / SSL_CERT_DIR name
    // instead. Unreadable entries are skipped, as curl and OpenSSL do.
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(target: "switchyard::dispatch", error = %e, "a trust root could not be loaded; skipped");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(target: "switchyard::dispatch", added, "system trust roots loaded");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
