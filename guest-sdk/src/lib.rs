//! Write Switchyard routing policies in Rust.
//!
//! A policy is a type that is built from a function's route config once per
//! config version ([`Policy::configure`]) and then decides requests
//! ([`Policy::evaluate`]). Build it to `wasm32-unknown-unknown` and turn it into
//! a component with `switchyard policy build <crate-dir>`.
//!
//! ```no_run
//! use switchyard_guest::{export_policy, Config, Decision, Mode, Policy, Request};
//!
//! struct SyntheticHeader {
//!     header: String,
//! }
//!
//! impl Policy for SyntheticHeader {
//!     fn configure(cfg: &Config) -> Self {
//!         let header = cfg.flag_or("synthetic-header", "x-switchyard-synthetic");
//!         SyntheticHeader { header: header.to_owned() }
//!     }
//!
//!     fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
//!         if cfg.mode() == Mode::Production {
//!             return Decision::stable(cfg).reason("production mode");
//!         }
//!         match req.header(&self.header).as_deref() {
//!             Some("true" | "1") => Decision::role(cfg, "candidate")
//!                 .synthetic()
//!                 .reason("synthetic header"),
//!             _ => Decision::stable(cfg).reason("no synthetic header"),
//!         }
//!     }
//! }
//!
//! export_policy!(SyntheticHeader);
//! ```
#![deny(missing_docs)]

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bindings generated from the `switchyard:policy` WIT package. Policy authors
/// rarely need them directly.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "router",
        pub_export_macro: true,
        default_bindings_module: "switchyard_guest::bindings",
    });
}

pub use bindings::switchyard::policy::types::{Mode, Traffic};
use bindings::switchyard::policy::{host, request};

/// The route config of the function being routed (one version of it).
#[derive(Debug, Clone)]
pub struct Config {
    function: String,
    mode: Mode,
    versions: Vec<(String, String)>,
    flags: Vec<(String, String)>,
}

impl Config {
    /// Builds a config by hand, for unit tests of policy logic.
    pub fn new(
        function: impl Into<String>,
        mode: Mode,
        versions: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Self {
        let own = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Config {
            function: function.into(),
            mode,
            versions: own(versions),
            flags: own(flags),
        }
    }

    /// The logical function name, e.g. `orders`.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// `Production` or `Synthetic`, as set by `switchyard mode`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The qualifier configured for `role` (e.g. `"stable"` -> `"7"`).
    pub fn version(&self, role: &str) -> Option<&str> {
        lookup(&self.versions, role)
    }

    /// All role -> qualifier pairs.
    pub fn versions(&self) -> &[(String, String)] {
        &self.versions
    }

    /// Where `role` is in [`Config::versions`]: what a [`Target::Version`]
    /// holds.
    pub fn position(&self, role: &str) -> Option<u32> {
        self.versions
            .iter()
            .position(|(k, _)| k == role)
            .map(|i| i as u32)
    }

    /// The qualifier a target names (`None`: a position past the versions).
    pub fn qualifier<'a>(&'a self, target: &'a Target) -> Option<&'a str> {
        match target {
            Target::Version(i) => self.versions.get(*i as usize).map(|(_, q)| q.as_str()),
            Target::Qualifier(q) => Some(q),
        }
    }

    /// The raw value of flag `name`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        lookup(&self.flags, name)
    }

    /// The value of flag `name`, or `default` when it is not set.
    pub fn flag_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.flag(name).unwrap_or(default)
    }

    /// Flag `name` parsed as `T`: `None` when unset, `Some(Err(..))` when it
    /// does not parse.
    pub fn flag_parse<T: FromStr>(&self, name: &str) -> Option<Result<T, T::Err>> {
        self.flag(name).map(|v| v.trim().parse())
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The request being decided. Values are fetched from the host on demand, so
/// a policy pays only for what it reads.
#[derive(Debug)]
pub struct Request {
    _private: (),
}

impl Request {
    /// HTTP method, upper case.
    pub fn method(&self) -> String {
        request::method()
    }

    /// Request path.
    pub fn path(&self) -> String {
        request::path()
    }

    /// Value of header `name`, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        request::header_at(header_id(name))
    }

    /// Whether header `name` is present with a truthy value (`true` or `1`,
    /// case-insensitive, surrounding whitespace ignored).
    pub fn header_is_true(&self, name: &str) -> bool {
        self.header(name).is_some_and(|v| {
            let v = v.trim();
            v == "1" || v.eq_ignore_ascii_case("true")
        })
    }

    /// The sticky bucket (see [`bucket`]) of header `name`'s value, `None`
    /// when the header is absent. Faster than `bucket(&req.header(name)?, salt)`:
    /// one host call, and the value is never copied into the policy.
    pub fn header_bucket(&self, name: &str, salt: &str) -> Option<u32> {
        request::header_bucket_at(header_id(name), salt)
    }

    /// All headers, names lower-cased. Copies every header: prefer
    /// [`Request::header`].
    pub fn headers(&self) -> Vec<(String, String)> {
        request::headers()
    }
}

thread_local! {
    /// Header names this instance registered with the host, and their ids.
    static HEADER_IDS: RefCell<Vec<(String, u32)>> = const { RefCell::new(Vec::new()) };
}

/// The host's id for header `name` (`host.header-id`), asked once per name:
/// the host then checks the name once, not on every request.
fn header_id(name: &str) -> u32 {
    HEADER_IDS.with(|ids| {
        if let Some((_, id)) = ids.borrow().iter().find(|(n, _)| n == name) {
            return *id;
        }
        let id = host::header_id(name);
        ids.borrow_mut().push((name.to_owned(), id));
        id
    })
}

/// Whether the host will show the reason of the decision being made (a
/// sampled decision log line, `switchyard decide` or `explain`, a test).
/// [`Decision::reason`] checks it for you; check it yourself only to skip
/// work that only feeds a reason.
pub fn explaining() -> bool {
    EXPLAIN.load(Ordering::Relaxed)
}

/// Outside the component (unit tests of policy logic) reasons are kept.
static EXPLAIN: AtomicBool = AtomicBool::new(true);

/// Stable sticky bucket of `key` in `[0, 10000)`, identical on every host and
/// in every language (the algorithm is documented in `wit/policy.wit`).
pub fn bucket(key: &str, salt: &str) -> u32 {
    host::bucket(key, salt)
}

/// Writes a debug line to the host's log.
pub fn log(message: &str) {
    host::log(message)
}

/// A version a decision names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The route config's version at this position of [`Config::versions`]
    /// (what [`Decision::stable`] and [`Decision::role`] answer: nothing
    /// is copied back to the host).
    Version(u32),
    /// A qualifier (version number or alias) given literally.
    Qualifier(String),
}

/// A routing decision, built fluently.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Decision {
    /// The version to invoke.
    pub target: Target,
    /// Traffic class.
    pub traffic: Traffic,
    /// The version that also gets a copy of the request.
    pub mirror: Option<Target>,
    /// Key/values handed to the target.
    pub context: Vec<(String, String)>,
    /// Which rule decided (empty when the host does not ask for it: see
    /// [`explaining`]).
    pub reason: String,
}

impl Decision {
    fn to(target: Target) -> Self {
        Decision {
            target,
            traffic: Traffic::Production,
            mirror: None,
            context: Vec::new(),
            reason: String::new(),
        }
    }

    /// Route to a qualifier given literally (a version number or an alias).
    pub fn qualifier(target: impl Into<String>) -> Self {
        Self::to(Target::Qualifier(target.into()))
    }

    /// Route to the `stable` version, production traffic.
    pub fn stable(cfg: &Config) -> Self {
        match cfg.position("stable") {
            Some(i) => Self::to(Target::Version(i)),
            None => Self::qualifier("stable"),
        }
    }

    /// Route to the version configured for `role` (e.g. `"candidate"`). When
    /// the route config has no such role, routes to `stable` and says so in
    /// the reason.
    pub fn role(cfg: &Config, role: &str) -> Self {
        match cfg.position(role) {
            Some(i) => Self::to(Target::Version(i)),
            None => Self::stable(cfg).reason(format_args!("no '{role}' version configured; ")),
        }
    }

    /// Tag as synthetic traffic.
    pub fn synthetic(mut self) -> Self {
        self.traffic = Traffic::Synthetic;
        self
    }

    /// Set the traffic class.
    pub fn traffic(mut self, traffic: Traffic) -> Self {
        self.traffic = traffic;
        self
    }

    /// Also send a copy to the version configured for `role` (ignored when
    /// the role is not configured).
    pub fn mirror_role(mut self, cfg: &Config, role: &str) -> Self {
        self.mirror = cfg.position(role).map(Target::Version);
        self
    }

    /// Add a key/value for the target.
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }

    /// Say which rule decided (appended to any note already there). Kept
    /// only when the host will show it ([`explaining`]); pass
    /// `format_args!(..)` rather than `format!(..)` and the text is not
    /// even formatted otherwise.
    pub fn reason(mut self, reason: impl fmt::Display) -> Self {
        if explaining() {
            let _ = write!(self.reason, "{reason}");
        }
        self
    }
}

/// A routing policy.
pub trait Policy: Sized + 'static {
    /// Build the policy's settings from a route config. Called once per
    /// config version, not per request: parse flags here.
    fn configure(cfg: &Config) -> Self;

    /// Decide one request. Must be pure: the same request and config always
    /// give the same decision.
    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision;
}

/// Exports a [`Policy`] type as the component's `router` world.
///
/// ```text
/// switchyard_guest::export_policy!(MyPolicy);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        const _: () = {
            static STATE: $crate::__private::State<$ty> = $crate::__private::State::new();
            struct __SwitchyardExport;
            impl $crate::bindings::Guest for __SwitchyardExport {
                fn configure(config: $crate::bindings::RouteConfig) {
                    STATE.configure(config)
                }
                fn evaluate(explain: bool) -> $crate::bindings::Decision {
                    STATE.evaluate(explain)
                }
            }
    $crate::bindings::export!(__SwitchyardExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    /// The configured policy of this instance.
    pub struct State<P> {
        cell: RefCell<Option<(Config, P)>>,
    }

    // SAFETY: a component instance is single-threaded; the host never calls
    // into one instance from two threads at once.
    unsafe impl<P> Sync for State<P> {}

    impl<P: Policy> Default for State<P> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<P: Policy> State<P> {
        pub const fn new() -> Self {
            State {
                cell: RefCell::new(None),
            }
        }

        pub fn configure(&self, raw: bindings::RouteConfig) {
            let cfg = Config {
                function: raw.function,
                mode: raw.mode,
                versions: raw.versions,
                flags: raw.flags,
            };
            let policy = P::configure(&cfg);
            *self.cell.borrow_mut() = Some((cfg, policy));
        }

        pub fn evaluate(&self, explain: bool) -> bindings::Decision {
            let guard = self.cell.borrow();
            let Some((cfg, policy)) = guard.as_ref() else {
                // The host always configures first; trap loudly if not.
                panic!("evaluate called before configure");
            };
            EXPLAIN.store(explain, Ordering::Relaxed);
            let d = policy.evaluate(&Request { _private: () }, cfg);
            bindings::Decision {
                target: wit_target(d.target),
                traffic: d.traffic,
                mirror: d.mirror.map(wit_target),
                context: d.context,
                reason: d.reason,
            }
        }
    }

    fn wit_target(t: Target) -> bindings::switchyard::policy::types::Target {
        use bindings::switchyard::policy::types::Target as Wit;
        match t {
            Target::Version(i) => Wit::Version(i),
            Target::Qualifier(q) => Wit::Qualifier(q),
        }
    }
}
