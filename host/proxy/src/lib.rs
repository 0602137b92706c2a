//! Switchyard's front ends: requests in, the policy decides, the dispatch
//! layer reaches the chosen version. This file is the crate's map.
//!
//! A request's way through it, in the order it is taken:
//!
//! 1. `server.rs`: the listener accepts it (HTTP/1.1 or cleartext HTTP/2,
//!    within [`ConnectionLimits`]) and hands it to [`public`].
//! 2. [`public`] (below) tries each front end in turn; the first that
//!    claims the request serves it. A front end (`front/*.rs`, one file
//!    each) says how a request names its function and how its answers are
//!    shaped ([`Shape`]):
//!    * `front/invoke.rs`: `POST /2015-03-31/functions/{name}/invocations`,
//!      the Lambda Invoke API, so unchanged AWS SDK clients pointed at the
//!      proxy are routed too (and every other Lambda API path answered as
//!      Lambda answers an unknown operation);
//!    * `front/path.rs`: `/{function}/{rest...}`, forwarded to the version
//!      with the rest of the path.
//! 3. `hygiene.rs`: header and body limits, dot segments, forged tags.
//! 4. `decide.rs`: the function's live policy decides (timed, counted,
//!    logged, captured).
//! 5. `steps.rs`: `dispatch_decided` lists what follows, in order: guard
//!    (`guard.rs`), trace (`traces.rs`), mirror (`shadow.rs`), send, guard
//!    record, fallback (`fallback.rs`), shadow tee, trace end, finish
//!    (`count.rs`).
//! 6. `answer.rs`: every error the proxy answers, in one table, turned
//!    into an answer in the front end's shape.
//!
//! Metrics are defined once, in `catalogue.rs` (and each lower crate's
//! own), and described when the recorder is installed
//! ([`install_metrics_recorder`]).
//!
//! Two listeners, so what reveals config never shares a port with traffic:
//! the public one ([`router`], served by [`serve`]; `GET /healthz` says
//! only whether it is ready) and the admin one (`admin/`: [`admin_router`],
//! served by [`serve_admin`]; loopback by default, optionally behind a
//! bearer token, [`AdminConfig`]): the decide API, `/healthz` with the
//! functions, `/metrics`, and the live view. The mesh extension serves both
//! on one loopback port for its own function ([`mesh_router`]). The routers
//! are public so tests drive them without sockets.
#![deny(missing_docs)]
#![deny(unreachable_pub)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request as AxumRequest, State};
use axum::response::Response;
use switchyard_core::Traffic;

mod activity;
mod admin;
mod answer;
mod capture;
mod catalogue;
mod count;
mod decide;
mod emf;
mod fallback;
mod front;
mod guard;
mod handles;
mod hygiene;
mod proxy;
mod server;
mod shadow;
mod steps;
mod traces;

pub use admin::{admin_router, mesh_router};
pub use answer::Shape;
pub use capture::{Capture, CaptureConfig};
pub use catalogue::{METRICS, all as metric_catalogue};
pub use emf::{DEFAULT_EMF_NAMESPACE, Emf};
pub use proxy::{Host, Proxy, install_metrics_recorder, start};
pub use server::{
    ConnectionLimits, Handler, bind_reuseport, default_max_connections, default_upstream_sockets,
    public_handler, raise_open_file_limit, router_handler, serve, serve_admin,
    serve_public_threads, serve_router, serve_threads,
};
pub use switchyard_dispatch::ClientsConfig;
pub use traces::{TraceConfig, Traces};

/// The public listener's requests: `GET /healthz` (readiness, not
/// counted), then each front end in turn, the first to claim the request
/// serving it; nothing claims it: 404 naming the shapes a request may
/// take. Every answer to a request for a function, errors included, is
/// counted in `switchyard_requests_total`.
///
/// The list of front ends: adding one is a file in `front/` and a line
/// here.
pub async fn public(p: Arc<Proxy>, req: AxumRequest) -> Response {
    if req.uri().path() == "/healthz" {
        return if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
            admin::ready(&p)
        } else {
            answer::ProxyError::MethodNotAllowed("GET, HEAD").answer(Shape::Http)
        };
    }
    front::try_front_ends!(
        &p,
        req,
        [
            front::invoke::InvokeApi,
            #[cfg(test)]
            front::example::Example,
            front::path::PathRouting,
        ]
    )
}

/// The public listener's routes as a router: every request to [`public`].
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .fallback(|State(p): State<Arc<Proxy>>, req: AxumRequest| public(p, req))
        .with_state(proxy)
}

/// Limits and timeouts of the proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Largest request body accepted (413 above). Default 6 MiB, Lambda's
    /// synchronous payload limit.
    pub max_body: usize,
    /// Request body bytes held at once across all requests; a request
    /// whose body would go past it is answered `503` with `Retry-After`.
    /// Default 256 MiB.
    pub body_memory: usize,
    /// Largest total size of request header names and values (431 above).
    pub max_header_bytes: usize,
    /// How long a request body may stall (no byte arriving) before the
    /// request is answered `408` and its connection closed.
    pub body_timeout: Duration,
    /// Timeouts and the connection cap of the listeners.
    pub connections: ConnectionLimits,
    /// The dispatch layer's clients: the upstream timeout and idle
    /// connections, mirror slots, serving threads with their own upstream
    /// connections (see [`serve_public_threads`]; 1 for one shared pool),
    /// the Lambda and Step Functions clients, how long a secret is cached.
    pub clients: ClientsConfig,
    /// Who may use the admin listener and what it reveals.
    pub admin: AdminConfig,
    /// Functions that must have a policy for `/healthz` to say ready.
    pub expected_functions: Vec<String>,
    /// Log one in this many decision lines, counted per serving thread
    /// (each logs its first). 1 logs every decision; 0 logs none. (Metrics
    /// count every request regardless.)
    pub decision_log_sample: u64,
    /// Skip the policies: every request goes to its function's `stable`
    /// version as production traffic (an operator's kill switch, and the
    /// baseline that isolates a policy's cost under load).
    pub bypass_policies: bool,
    /// A sample of the decided requests written for `switchyard replay`
    /// (`serve --capture`).
    pub capture: Option<Arc<Capture>>,
    /// The traffic class the calls inherit from whoever makes them (the
    /// mesh extension: the invocation in progress). While it is synthetic,
    /// every call is decided as a synthetic one and stays synthetic
    /// whatever the policy returns.
    pub inherited_traffic: Option<Arc<dyn InheritedTraffic>>,
    /// Renders `/metrics` (the binary installs the recorder and passes its
    /// handle's `render`); without it `/metrics` is empty.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Span exporters (`serve --otlp-endpoint`, `--otlp-synthetic-endpoint`);
    /// without them no span is recorded, and a caller's trace context is
    /// still continued to the target with the traffic class marked.
    pub traces: Option<Arc<Traces>>,
    /// Where a tripped `guard` writes its rollback (`serve
    /// --guard-writes`); without it, a host only stops sending to the
    /// candidate itself.
    pub guard_store: Option<Arc<dyn switchyard_config::ConfigStore>>,
    /// Writes a CloudWatch Embedded Metric Format line per decided request
    /// to stdout (the Lambda front ends by default; `serve
    /// --emf-namespace`).
    pub emf: Option<Arc<Emf>>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("max_body", &self.max_body)
            .field("body_memory", &self.body_memory)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("connections", &self.connections)
            .field("clients", &self.clients)
            .field("admin", &self.admin)
            .field("expected_functions", &self.expected_functions)
            .field("bypass_policies", &self.bypass_policies)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body: 6 << 20,
            body_memory: 256 << 20,
            max_header_bytes: 32 << 10,
            body_timeout: Duration::from_secs(30),
            connections: ConnectionLimits::default(),
            clients: ClientsConfig::default(),
            admin: AdminConfig::default(),
            expected_functions: Vec::new(),
            decision_log_sample: 1,
            bypass_policies: false,
            capture: None,
            inherited_traffic: None,
            metrics: None,
            traces: None,
            guard_store: None,
            emf: None,
        }
    }
}

/// Who may use the admin listener, and what it reveals.
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// When set, every admin request must carry `Authorization: Bearer
    /// <token>` (401 otherwise).
    pub token: Option<String>,
    /// Whether the decide API may show a decision's context values (they
    /// may be credentials) to a caller that asks with `?context=show`.
    /// Without it, or without the ask, values are replaced by `"(hidden)"`.
    pub reveal_context: bool,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("reveal_context", &self.reveal_context)
            .finish()
    }
}

/// Where the calls through the proxy come from, when that decides their
/// class: the hook through which an embedding (the mesh extension) makes a
/// synthetic invocation's outgoing calls synthetic. The proxy knows nothing
/// of how the class is learnt.
pub trait InheritedTraffic: Send + Sync {
    /// The class calls made now inherit.
    fn traffic(&self) -> Traffic;
}
