//! Route configs: a function's mode, version map, flags and per-version
//! context, as CI/CD writes them to the config store.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bindings::{current, previous};

/// A function's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything is production traffic.
    #[default]
    Production,
    /// QA may send synthetic traffic to the candidate.
    Synthetic,
}

/// The route config JSON contract:
/// `{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"flags":{"k":"v"},"context":{"8":{"QUEUE_URL":"..."}}}`.
/// Unknown fields are an error that names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Production or synthetic.
    pub mode: Mode,
    /// Role -> qualifier. `stable` is required: it is where the fail-safe goes.
    pub versions: BTreeMap<String, String>,
    /// Free-form settings for the policy. Numbers and booleans are accepted
    /// and handed to the policy as their JSON text.
    #[serde(default, deserialize_with = "flags_as_strings")]
    pub flags: BTreeMap<String, String>,
    /// Qualifier -> key/values the host hands to that version.
    #[serde(default)]
    pub context: BTreeMap<String, BTreeMap<String, String>>,
    /// The policy deciding for this function, `sha256:<hex>` (set by
    /// `switchyard publish`; required by the config store, not by `decide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::digest::Digest>,
    /// Fixture cases the policy must pass before it goes live, `sha256:<hex>`
    /// of a cases file in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<crate::digest::Digest>,
    /// Where the request goes once the policy has chosen a qualifier.
    /// Required by the front ends that dispatch, not by `decide`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<DispatchSpec>,
}

/// How a function's versions are reached: the route config's `dispatch`
/// object. Its `"type"` names a backend (`http`, `lambda`, ...); the rest
/// are that backend's settings. The core carries it unread: the dispatch
/// layer (`switchyard-dispatch`) parses and checks it, so a new backend
/// needs no change here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct DispatchSpec(Map<String, Value>);

impl DispatchSpec {
    /// The backend's name: the `"type"` field.
    pub fn kind(&self) -> &str {
        self.0
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The whole object, `"type"` included.
    pub fn json(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// A `dispatch` object without a `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"dispatch\" needs a \"type\" naming its backend, e.g. {{\"type\":\"http\",\"urls\":{{...}}}} or {{\"type\":\"lambda\",\"function-name\":\"...\"}}"
)]
pub struct NoDispatchType;

impl TryFrom<Map<String, Value>> for DispatchSpec {
    type Error = NoDispatchType;

    fn try_from(map: Map<String, Value>) -> Result<Self, NoDispatchType> {
        match map.get("type") {
            Some(Value::String(t)) if !t.is_empty() => Ok(DispatchSpec(map)),
            _ => Err(NoDispatchType),
        }
    }
}

impl From<DispatchSpec> for Map<String, Value> {
    fn from(spec: DispatchSpec) -> Self {
        spec.0
    }
}

/// A route config that is not usable.
#[derive(Debug, thiserror::Error)]
pub enum RouteConfigError {
    /// Not valid route config JSON (unknown fields are named here).
    #[error("invalid route config JSON: {0}")]
    Json(serde_json::Error),
    /// Parsed, but not usable.
    #[error("invalid route config: {0}")]
    Invalid(String),
}

fn flags_as_strings<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        S(String),
        N(serde_json::Number),
        B(bool),
    }
    let raw = BTreeMap::<String, Flag>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Flag::S(s) => s,
                Flag::N(n) => n.to_string(),
                Flag::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Longest qualifier accepted: Lambda's own limit for a version or alias.
pub const MAX_QUALIFIER_LEN: usize = 128;

/// Whether `q` can name a Lambda version or alias (`[A-Za-z0-9$_-]`, 1..=128).
pub fn valid_qualifier(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= MAX_QUALIFIER_LEN
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"$_-".contains(&b))
}

impl RouteConfig {
    /// Parses and validates route config JSON.
    pub fn from_json(json: &str) -> Result<Self, RouteConfigError> {
        let cfg: RouteConfig = serde_json::from_str(json).map_err(RouteConfigError::Json)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what parsing cannot: a `stable` version exists and every
    /// qualifier is one Lambda would accept. (The `dispatch` block is the
    /// dispatch layer's to check.)
    pub fn validate(&self) -> Result<(), RouteConfigError> {
        if !self.versions.contains_key("stable") {
            return Err(RouteConfigError::Invalid(
                "\"versions\" has no \"stable\" entry; add one (e.g. \"stable\": \"7\"): it is where requests go when a policy fails".into(),
            ));
        }
        for (role, q) in &self.versions {
            if !valid_qualifier(q) {
                return Err(RouteConfigError::Invalid(format!(
                    "version {role:?} has qualifier {q:?}; a qualifier is 1-{MAX_QUALIFIER_LEN} characters of A-Z a-z 0-9 $ _ -"
                )));
            }
        }
        Ok(())
    }

    /// The context configured for qualifier `target` (empty when none).
    pub fn context_for(&self, target: &str) -> BTreeMap<String, String> {
        self.context.get(target).cloned().unwrap_or_default()
    }

    /// The `stable` qualifier.
    pub fn stable(&self) -> &str {
        self.versions
            .get("stable")
            .map(String::as_str)
            .unwrap_or("stable")
    }
}

static NEXT_ROUTE_ID: AtomicU64 = AtomicU64::new(1);

/// A function's validated route config, ready for evaluation. Immutable: an
/// evaluator hands it to a policy instance once (`configure`) and reuses that
/// until it sees a route with another id.
#[derive(Debug)]
pub struct Route {
    id: u64,
    function: String,
    config: RouteConfig,
}

impl Route {
    /// Validates `config` and binds it to `function`.
    pub fn new(function: impl Into<String>, config: RouteConfig) -> Result<Self, RouteConfigError> {
        config.validate()?;
        Ok(Route {
            id: NEXT_ROUTE_ID.fetch_add(1, Ordering::Relaxed),
            function: function.into(),
            config,
        })
    }

    /// Unique per `Route` value in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The function name.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The config.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// The config as the current contract hands it to `configure`: its
    /// `versions` in the order a decision's `target` counts them.
    pub(crate) fn to_wit(&self) -> current::RouteConfig {
        current::RouteConfig {
            function: self.function.clone(),
            mode: match self.config.mode {
                Mode::Production => current::Mode::Production,
                Mode::Synthetic => current::Mode::Synthetic,
            },
            versions: pairs(&self.config.versions),
            flags: pairs(&self.config.flags),
        }
    }

    /// The same for a policy built against `switchyard:policy@0.1.0`.
    pub(crate) fn to_wit_previous(&self) -> previous::RouteConfig {
        previous::RouteConfig {
            function: self.function.clone(),
            mode: match self.config.mode {
                Mode::Production => previous::Mode::Production,
                Mode::Synthetic => previous::Mode::Synthetic,
            },
            versions: pairs(&self.config.versions),
            flags: pairs(&self.config.flags),
        }
    }
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_and_stringifies_flags() {
        let cfg = RouteConfig::from_json(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
                "flags":{"canary-percent":12.5,"on":true,"h":"x"},"context":{"8":{"Q":"u"}}}"#,
        )
        .unwrap();
        assert_eq!(cfg.mode, Mode::Synthetic);
        assert_eq!(cfg.flags["canary-percent"], "12.5");
        assert_eq!(cfg.flags["on"], "true");
        assert_eq!(cfg.context["8"]["Q"], "u");
    }

    #[test]
    fn unknown_field_is_named() {
        let err =
            RouteConfig::from_json(r#"{"mode":"production","versions":{"stable":"1"},"flagz":{}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `flagz`"), "{err}");
    }

    #[test]
    fn stable_is_required_and_qualifiers_checked() {
        let err = RouteConfig::from_json(r#"{"mode":"production","versions":{"candidate":"8"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("no \"stable\""), "{err}");
        let err = RouteConfig::from_json(r#"{"mode":"production","versions":{"stable":"7 8"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("qualifier \"7 8\""), "{err}");
        assert!(valid_qualifier("$LATEST") && valid_qualifier("live-1") && !valid_qualifier(""));
    }

    #[test]
    fn dispatch_blocks_are_carried_unread_but_need_a_type() {
        let cfg = RouteConfig::from_json(
            r#"{"mode":"production","versions":{"stable":"1"},"dispatch":{"type":"future-backend","x":1}}"#,
        )
        .unwrap();
        let spec = cfg.dispatch.as_ref().unwrap();
        assert_eq!(spec.kind(), "future-backend");
        assert_eq!(spec.json()["x"], 1);
        let err = RouteConfig::from_json(
            r#"{"mode":"production","versions":{"stable":"1"},"dispatch":{"urls":{}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs a \"type\""), "{err}");
    }

    #[test]
    fn each_route_gets_its_own_id() {
        let cfg =
            RouteConfig::from_json(r#"{"mode":"production","versions":{"stable":"1"}}"#).unwrap();
        let a = Route::new("f", cfg.clone()).unwrap();
        let b = Route::new("f", cfg).unwrap();
        assert_ne!(a.id(), b.id());
    }
}
