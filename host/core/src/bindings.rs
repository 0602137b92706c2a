//! The host side of the `switchyard:policy` WIT contract: the crate's one
//! `bindgen!`, re-exported as a small curated API.

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "router",
    });
}

pub(crate) use generated::Router;
pub(crate) use generated::RouterPre;
pub(crate) use generated::switchyard::policy::host::Host as HostImports;
pub(crate) use generated::switchyard::policy::request::Host as RequestImports;
pub(crate) use generated::switchyard::policy::types::{
    Decision as WitDecision, Host as TypesImports, Mode as WitMode, RouteConfig as WitRouteConfig,
    Traffic as WitTraffic,
};

/// Import names a policy may have: the `switchyard:policy` interfaces, nothing else.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "switchyard:policy/types@0.1.0",
    "switchyard:policy/request@0.1.0",
    "switchyard:policy/host@0.1.0",
];

/// Exports the `router` world requires.
pub const REQUIRED_EXPORTS: &[&str] = &["configure", "evaluate"];

/// The world's full name, for error messages.
pub const WORLD: &str = "switchyard:policy/router@0.1.0";
