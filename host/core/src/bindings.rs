//! The host side of the `switchyard:policy` WIT contract: one `bindgen!` for
//! each version a host loads (the current one, `wit/policy.wit`: this
//! crate's copy of the repository's, so the crate packages alone, kept
//! identical by a test; and the previous one, kept in `wit-0.1.0/`). The imports are linked by hand
//! ([`crate::host::link`]) so string arguments are read in place from the
//! policy's memory; the generated code is used for the exports.

#[allow(missing_docs)]
mod v1 {
    wasmtime::component::bindgen!({
        path: "wit-0.1.0",
        world: "router",
    });
}

#[allow(missing_docs)]
mod v2 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "router",
    });
}

/// `switchyard:policy@0.1.0`, the previous contract.
pub(crate) mod previous {
    pub(crate) use super::v1::Router;
    pub(crate) use super::v1::RouterPre;
    pub(crate) use super::v1::switchyard::policy::types::{Decision, Mode, RouteConfig, Traffic};
}

/// `switchyard:policy@0.2.0`, the current contract.
pub(crate) mod current {
    pub(crate) use super::v2::Router;
    pub(crate) use super::v2::RouterPre;
    pub(crate) use super::v2::switchyard::policy::types::{
        Decision, Mode, RouteConfig, Target, Traffic,
    };
}

/// Contract versions a host loads, newest first.
pub const VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// Import names a policy may have: the `switchyard:policy` interfaces (of
/// either version), nothing else.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "switchyard:policy/types@0.2.0",
    "switchyard:policy/request@0.2.0",
    "switchyard:policy/host@0.2.0",
    "switchyard:policy/types@0.1.0",
    "switchyard:policy/request@0.1.0",
    "switchyard:policy/host@0.1.0",
];

/// Exports the `router` world requires.
pub const REQUIRED_EXPORTS: &[&str] = &["configure", "evaluate"];

/// The world's full name, for error messages.
pub const WORLD: &str = "switchyard:policy/router@0.2.0";
