//! Switchyard inside AWS Lambda: the router function (binary
//! `switchyard-lambda`) and the mesh extension (binary
//! `switchyard-extension`, with the layer's `switchyard-wrapper`). Both run
//! the proxy's front ends over the shared config bootstrap; see each
//! binary's docs for its environment variables.
#![deny(missing_docs)]

mod env;
mod extension;
mod router;
mod start;

pub use env::{EnvError, init_logging};
pub use extension::{
    ExtensionEnv, ExtensionError, ExtensionEvent, ExtensionsApi, InvocationTraffic, MAX_INVOCATION,
    base_url, event_traffic, run, runtime_proxy,
};
pub use router::{RouterEnv, RouterFunction};
pub use start::{INIT_POLL_TIMEOUT, StartError};
