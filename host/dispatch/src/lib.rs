//! Switchyard's dispatch layer: once a policy has decided, this is how the
//! request reaches the chosen version.
//!
//! * [`Dispatcher`]: one per route version, made by [`for_route`], the only
//!   place the route config's `dispatch` block is matched. Backends: `http`
//!   (any URL, `https://` included: Lambda function URLs, containers, local
//!   development), `lambda` (`Invoke` with the qualifier) and
//!   `step-functions` (an execution of the qualified state machine).
//! * API Gateway's HTTP API event and response, both ways
//!   ([`apigw_event`], [`proxy_response`], [`request_from_event`],
//!   [`response_event`]), in one module.
//! * Header rules in one module: hop-by-hop ([`strip_hop_by_hop`]), the
//!   mesh's tags and the context headers ([`outgoing_headers`]).
//! * [`Clients`]: the HTTP(S) and Lambda clients and the bounded mirror
//!   slots every dispatcher of a process shares.
//! * [`DispatchError`]: says which side failed (client, upstream, internal).
//!
//! Adding a backend is one file with a `serde` settings struct and a
//! [`Dispatcher`], plus one arm in [`for_route`].
#![deny(missing_docs)]
#![deny(unreachable_pub)]

mod apigw;
mod catalogue;
mod clients;
mod dispatcher;
#[cfg(feature = "echo")]
mod echo;
mod error;
mod headers;
mod http_backend;
mod lambda;
mod registry;
mod secrets;
mod sockets;
mod step_functions;

pub use apigw::{
    BadEvent, BadProxyResponse, event as apigw_event, proxy_response, request_from_event,
    response_event,
};
pub use catalogue::METRICS;
pub use clients::{Clients, ClientsConfig, TlsError, enter_worker, sfn_client, worker};
pub use dispatcher::{Body, Call, Dispatcher, HttpCall, InvokeCall, RequestContext, Target, full};
pub use error::{DispatchError, Side, SpecError, causes};
pub use headers::{HOP_BY_HOP, is_tag, outgoing as outgoing_headers, strip_hop_by_hop, tags};
pub use lambda::{
    MAX_CLIENT_CONTEXT, client_context, custom_fields, error_summary, split_function_name,
};
pub use registry::{RouteDispatch, check, for_route, prepare};
