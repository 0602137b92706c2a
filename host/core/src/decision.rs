//! Decisions: where a request goes and how it is tagged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The traffic class of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Traffic {
    /// Real users.
    #[default]
    Production,
    /// QA / test traffic, kept apart in logs, metrics and traces.
    Synthetic,
}

impl Traffic {
    /// `production` or `synthetic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Traffic::Production => "production",
            Traffic::Synthetic => "synthetic",
        }
    }
}

/// A routing decision, as printed by `switchyard decide`:
/// `{"target":"8","traffic":"synthetic","mirror":null,"context":{..},"reason":".."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Qualifier (version or alias) to invoke.
    pub target: String,
    /// Traffic class.
    pub traffic: Traffic,
    /// Qualifier that also receives a copy (response discarded).
    pub mirror: Option<String>,
    /// Key/values handed to the target: the policy's, then the route
    /// config's context for the target (the config wins on a clash).
    pub context: BTreeMap<String, String>,
    /// Which rule decided.
    pub reason: String,
}

/// The header that carries the traffic class downstream
/// (`production` or `synthetic`), on requests and on the proxy's answers.
pub const TRAFFIC_HEADER: &str = "x-switchyard-traffic";

/// Prefix of the headers that carry a decision's context downstream:
/// context key `DB_URL` travels as `x-switchyard-ctx-db_url`.
pub const CONTEXT_HEADER_PREFIX: &str = "x-switchyard-ctx-";

/// The header on the proxy's answers naming the qualifier that served.
pub const TARGET_HEADER: &str = "x-switchyard-target";

/// The header QA's synthetic requests carry unless the route config's
/// `synthetic-header` flag names another.
pub const DEFAULT_SYNTHETIC_HEADER: &str = "x-switchyard-synthetic";
