//! Fixture cases: requests with expected decisions, run against a policy by
//! `switchyard policy test` (and before a policy is published).
//!
//! A cases file:
//!
//! ```json
//! {
//!   "function": "orders",
//!   "config": {"mode": "synthetic", "versions": {"stable": "7", "candidate": "8"}},
//!   "cases": [
//!     {"name": "tagged request reaches the candidate",
//!      "request": {"headers": {"x-switchyard-synthetic": "true"}},
//!      "expect": {"target": "8", "traffic": "synthetic"}}
//!   ]
//! }
//! ```
//!
//! `function` and `config` are defaults a case may override. Every field of
//! `expect` is optional: `target`, `traffic`, `mirror` (null for none) and
//! `context` must match exactly, `reason` must be contained in the reason.
//! A case whose evaluation fails (trap, budget, memory) fails, unless it
//! expects `"fail-safe": true`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::decision::{Decision, Traffic};
use crate::policy::Policy;
use crate::request::RequestJson;
use crate::route::{Route, RouteConfig};

/// A cases file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// Default function name.
    #[serde(default)]
    pub function: Option<String>,
    /// Default route config.
    #[serde(default)]
    pub config: Option<RouteConfig>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in reports.
    pub name: String,
    /// The request (request JSON contract).
    pub request: RequestJson,
    /// Route config for this case (default: the file's).
    #[serde(default)]
    pub config: Option<RouteConfig>,
    /// What the decision must look like.
    pub expect: Expect,
}

/// Expected decision fields; absent ones are not checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expect {
    /// Exact target qualifier.
    #[serde(default)]
    pub target: Option<String>,
    /// Exact traffic class.
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// Exact mirror (`null`: no mirror).
    #[serde(default, deserialize_with = "present")]
    pub mirror: Option<Option<String>>,
    /// Exact context.
    #[serde(default)]
    pub context: Option<BTreeMap<String, String>>,
    /// Substring of the reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// The policy is expected to fail and the fail-safe to apply.
    #[serde(default)]
    pub fail_safe: bool,
}

/// Distinguishes `"mirror": null` (expect none) from an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A cases file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// Not valid cases JSON.
    #[error("invalid cases file: {0}")]
    Json(serde_json::Error),
    /// A case lacks what it needs.
    #[error("case {name:?}: {why}")]
    Case {
        /// The case.
        name: String,
        /// What is missing.
        why: String,
    },
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// The decision made.
    pub decision: Decision,
    /// Mismatches, as `field: expected X, got Y` lines; empty when passed.
    pub mismatches: Vec<String>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl CaseFile {
    /// Parses a cases file.
    pub fn from_json(json: &str) -> Result<Self, CaseError> {
        serde_json::from_str(json).map_err(CaseError::Json)
    }

    /// Runs every case on one warm instance of `policy`.
    pub fn run(&self, policy: &Arc<Policy>) -> Result<Vec<CaseResult>, CaseError> {
        let mut evaluator = policy.evaluator();
        let mut results = Vec::with_capacity(self.cases.len());
        for case in &self.cases {
            let err = |why: String| CaseError::Case {
                name: case.name.clone(),
                why,
            };
            let config = case
                .config
                .as_ref()
                .or(self.config.as_ref())
                .ok_or_else(|| {
                    err("no route config: add \"config\" to the case or the file".into())
                })?;
            let request = case
                .request
                .clone()
                .into_request(self.function.as_deref())
                .map_err(|e| err(e.to_string()))?;
            let route = Route::new(request.function.clone(), config.clone())
                .map_err(|e| err(e.to_string()))?;
            let (decision, failure) = evaluator.decide(&Arc::new(request), &route);
            let mut mismatches = Vec::new();
            match (&failure, case.expect.fail_safe) {
                (Some(e), false) => mismatches.push(format!("policy failed: {e}")),
                (None, true) => {
                    mismatches.push("expected the policy to fail (fail-safe), it did not".into())
                }
                _ => {}
            }
            let e = &case.expect;
            let mut field = |name: &str, want: String, got: String| {
                if want != got {
                    mismatches.push(format!("{name}: expected {want}, got {got}"));
                }
            };
            if let Some(t) = &e.target {
                field("target", json(t), json(&decision.target));
            }
            if let Some(t) = &e.traffic {
                field("traffic", json(t), json(&decision.traffic));
            }
            if let Some(m) = &e.mirror {
                field("mirror", json(m), json(&decision.mirror));
            }
            if let Some(c) = &e.context {
                field("context", json(c), json(&decision.context));
            }
            if let Some(r) = &e.reason
                && !decision.reason.contains(r.as_str())
            {
                mismatches.push(format!(
                    "reason: expected to contain {r:?}, got {:?}",
                    decision.reason
                ));
            }
            results.push(CaseResult {
                name: case.name.clone(),
                decision,
                mismatches,
            });
        }
        Ok(results)
    }
}

/// Compact JSON of a value, for mismatch lines.
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
