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
    /// The route-config schema this version needs (1 when left out). A
    /// host that reads only older schemas keeps the version it has instead
    /// of refusing what it does not know field by field. `switchyard
    /// publish` sets it from what the config uses ([`RouteConfig::needed_schema`]).
    #[serde(default = "schema_one", skip_serializing_if = "is_schema_one")]
    pub schema: u32,
    /// Production or synthetic.
    pub mode: Mode,
    /// Role -> qualifier. `stable` is required: it is where the fail-safe goes.
    pub versions: BTreeMap<String, String>,
    /// Free-form settings for the policy. Numbers and booleans are accepted
    /// and handed to the policy as their JSON text.
    #[serde(default, deserialize_with = "flags_as_strings")]
    pub flags: BTreeMap<String, String>,
    /// Qualifier -> key/values the host hands to that version. A value is
    /// a string, or a reference to a secret the host reads itself and
    /// hands on without ever showing it: `{"$ssm": "/orders/db-password"}`
    /// (a SecureString), `{"$secretsmanager": "<arn or name>"}`.
    #[serde(default)]
    pub context: BTreeMap<String, BTreeMap<String, ContextValue>>,
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
    /// Takes the candidate out (on this host at once, and in the store with
    /// `serve --guard-writes`) when its answers fail (see [`Guard`](crate::safety::Guard)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::safety::Guard>,
    /// Retries an idempotent request that failed on another version once
    /// on stable (see [`Fallback`](crate::safety::Fallback)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<crate::safety::Fallback>,
    /// Methods this function treats as idempotent for `fallback`, beside
    /// GET, HEAD and OPTIONS (e.g. `["PUT", "DELETE"]`).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "idempotent-methods"
    )]
    pub idempotent_methods: Vec<String>,
    /// Compares a mirror's answers with the primary's (see
    /// [`Shadow`](crate::safety::Shadow)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::safety::Shadow>,
}

/// A context value: a literal, or a secret the host resolves when it
/// dispatches (and never writes, logs or shows: everything that prints a
/// route config or a decision prints the reference).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContextValue {
    /// A plain string, handed on as it is.
    Literal(String),
    /// A reference to a secret.
    Secret(SecretRef),
}

/// Where a secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SecretRef {
    /// An SSM parameter (a SecureString, read with decryption).
    #[serde(rename = "$ssm")]
    Ssm(String),
    /// A Secrets Manager secret (its ARN or name; its `SecretString`).
    #[serde(rename = "$secretsmanager")]
    SecretsManager(String),
}

/// Longest secret name or ARN accepted (SSM's parameter-name limit).
const MAX_SECRET_NAME: usize = 2048;

impl SecretRef {
    /// `ssm` or `secretsmanager`, for metric labels.
    pub fn source(&self) -> &'static str {
        match self {
            SecretRef::Ssm(_) => "ssm",
            SecretRef::SecretsManager(_) => "secretsmanager",
        }
    }

    /// The parameter name or secret id.
    pub fn name(&self) -> &str {
        match self {
            SecretRef::Ssm(n) | SecretRef::SecretsManager(n) => n,
        }
    }
}

impl std::fmt::Display for SecretRef {
    /// The reference as JSON, e.g. `{"$ssm":"/orders/db-password"}`: what a
    /// decision shows in place of the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

impl ContextValue {
    /// What may be shown: the literal, or the reference (never a secret).
    pub fn shown(&self) -> String {
        match self {
            ContextValue::Literal(s) => s.clone(),
            ContextValue::Secret(r) => r.to_string(),
        }
    }

    /// The secret this value refers to, if any.
    pub fn secret(&self) -> Option<&SecretRef> {
        match self {
            ContextValue::Secret(r) => Some(r),
            ContextValue::Literal(_) => None,
        }
    }
}

impl From<String> for ContextValue {
    fn from(s: String) -> Self {
        ContextValue::Literal(s)
    }
}

impl From<&str> for ContextValue {
    fn from(s: &str) -> Self {
        ContextValue::Literal(s.to_owned())
    }
}

impl Serialize for ContextValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ContextValue::Literal(v) => s.serialize_str(v),
            ContextValue::Secret(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ContextValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let hint = "a context value is a string, {\"$ssm\": \"/parameter/name\"} or {\"$secretsmanager\": \"<arn or name>\"}";
        match Value::deserialize(d)? {
            Value::String(s) => Ok(ContextValue::Literal(s)),
            v @ Value::Object(_) => {
                let r: SecretRef = serde_json::from_value(v.clone())
                    .map_err(|_| D::Error::custom(format!("{v}: {hint}")))?;
                let name = r.name();
                if name.is_empty()
                    || name.len() > MAX_SECRET_NAME
                    || name.chars().any(char::is_control)
                {
                    return Err(D::Error::custom(format!(
                        "secret reference {r}: the name must be 1-{MAX_SECRET_NAME} printable characters"
                    )));
                }
                Ok(ContextValue::Secret(r))
            }
            other => Err(D::Error::custom(format!("{other}: {hint}"))),
        }
    }
}

/// The newest route-config schema this build reads: 1; 2 for what came
/// with `switchyard` 0.2.0 (a dispatch `auth` block, `step-functions`
/// dispatch); 3 for 0.3.0's secret references in `context`, `guard`,
/// `fallback` and `idempotent-methods`.
pub const ROUTE_SCHEMA: u32 = 3;

/// The first `switchyard` release that reads route-config schema `schema`.
pub fn host_version_for_schema(schema: u32) -> String {
    match schema {
        0 | 1 => "0.1.0".to_owned(),
        2 => "0.2.0".to_owned(),
        3 => "0.3.0".to_owned(),
        _ => format!("newer than {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The newest schema this process reads: [`ROUTE_SCHEMA`], or less when
/// `SWITCHYARD_ROUTE_SCHEMA` says so (a host made to read as an older
/// build would, to try a mixed fleet before upgrading it).
pub fn supported_schema() -> u32 {
    static SUPPORTED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::env::var("SWITCHYARD_ROUTE_SCHEMA")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(ROUTE_SCHEMA, |v: u32| v.clamp(1, ROUTE_SCHEMA))
    })
}

fn schema_one() -> u32 {
    1
}

fn is_schema_one(s: &u32) -> bool {
    *s == 1
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
    /// Written for a newer host than this one.
    #[error(
        "needs route-config schema {schema}, and this host reads up to schema {supported}: it takes hosts of switchyard {} or later (this host keeps the version it has)",
        host_version_for_schema(*schema)
    )]
    SchemaTooNew {
        /// The schema the config declares.
        schema: u32,
        /// The newest this host reads.
        supported: u32,
    },
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
    /// Parses and validates route config JSON. A config declaring a newer
    /// schema than this host reads is [`RouteConfigError::SchemaTooNew`],
    /// whatever else is in it.
    pub fn from_json(json: &str) -> Result<Self, RouteConfigError> {
        #[derive(Deserialize)]
        struct Schema {
            #[serde(default = "schema_one")]
            schema: u32,
        }
        if let Ok(Schema { schema }) = serde_json::from_str::<Schema>(json) {
            let supported = supported_schema();
            if schema > supported {
                return Err(RouteConfigError::SchemaTooNew { schema, supported });
            }
        }
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
        if let Some(g) = &self.guard {
            g.check().map_err(RouteConfigError::Invalid)?;
        }
        if let Some(s) = &self.shadow {
            s.check().map_err(RouteConfigError::Invalid)?;
        }
        if let Some(m) = self
            .idempotent_methods
            .iter()
            .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(RouteConfigError::Invalid(format!(
                "idempotent-methods: {m:?} is not an HTTP method in capitals, e.g. \"PUT\""
            )));
        }
        Ok(())
    }

    /// Whether a request of `method` may be retried on stable (`fallback`).
    pub fn idempotent(&self, method: &str) -> bool {
        crate::safety::IDEMPOTENT_METHODS.contains(&method)
            || self.idempotent_methods.iter().any(|m| m == method)
    }

    /// The oldest schema that has everything this config uses: 3 with a
    /// secret reference in `context`, a `guard`, a `fallback`, a `shadow`
    /// or `idempotent-methods`; 2 with a dispatch `auth` block or
    /// `step-functions` dispatch; else 1.
    pub fn needed_schema(&self) -> u32 {
        self.schema_features()
            .iter()
            .map(|&(schema, _)| schema)
            .max()
            .unwrap_or(1)
    }

    /// What this config uses that schema 1 lacks, each with the schema that
    /// brought it, by the name a user knows it by (`"guard"`,
    /// `"step-functions dispatch"`): what a refusal to publish for older
    /// hosts names.
    pub fn schema_features(&self) -> Vec<(u32, &'static str)> {
        let mut uses = Vec::new();
        if self.secrets().next().is_some() {
            uses.push((3, "secret references in context"));
        }
        if self.guard.is_some() {
            uses.push((3, "guard"));
        }
        if self.fallback.is_some() {
            uses.push((3, "fallback"));
        }
        if self.shadow.is_some() {
            uses.push((3, "shadow"));
        }
        if !self.idempotent_methods.is_empty() {
            uses.push((3, "idempotent-methods"));
        }
        if let Some(d) = &self.dispatch {
            let json = d.json();
            if json.get("type").and_then(Value::as_str) == Some("step-functions") {
                uses.push((2, "step-functions dispatch"));
            }
            if json.contains_key("auth") {
                uses.push((2, "a dispatch auth block"));
            }
        }
        uses
    }

    /// The context configured for qualifier `target` (empty when none),
    /// as it may be shown: a secret is its reference.
    pub fn context_for(&self, target: &str) -> BTreeMap<String, String> {
        self.context
            .get(target)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.shown())).collect())
            .unwrap_or_default()
    }

    /// The secrets `target`'s context refers to, by key.
    pub fn secrets_for(&self, target: &str) -> Vec<(String, SecretRef)> {
        self.context
            .get(target)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.secret().map(|r| (k.clone(), r.clone())))
            .collect()
    }

    /// Every (qualifier, key, secret) the context refers to.
    pub fn secrets(&self) -> impl Iterator<Item = (&str, &str, &SecretRef)> {
        self.context.iter().flat_map(|(q, c)| {
            c.iter()
                .filter_map(move |(k, v)| v.secret().map(|r| (q.as_str(), k.as_str(), r)))
        })
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
    #[test]
    fn a_config_for_a_newer_schema_is_named_too_new_not_corrupt() {
        // Whatever a newer schema adds, the host says what it needs.
        let err = RouteConfig::from_json(
            r#"{"schema":4,"mode":"production","versions":{"stable":"1"},"some-future-field":{}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                RouteConfigError::SchemaTooNew {
                    schema: 4,
                    supported: ROUTE_SCHEMA
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("needs route-config schema 4"),
            "{err}"
        );
        let two = RouteConfig::from_json(
            r#"{"schema":2,"mode":"production","versions":{"stable":"1"},
                "dispatch":{"type":"step-functions","state-machine-arn":"a","workflow":"express"}}"#,
        )
        .unwrap();
        assert_eq!((two.schema, two.needed_schema()), (2, 2));
        assert!(
            serde_json::to_string(&two)
                .unwrap()
                .contains(r#""schema":2"#)
        );
        let one = RouteConfig::from_json(
            r#"{"mode":"production","versions":{"stable":"1"},"dispatch":{"type":"lambda","function-name":"f"}}"#,
        )
        .unwrap();
        assert_eq!((one.schema, one.needed_schema()), (1, 1));
        assert!(
            !serde_json::to_string(&one).unwrap().contains("schema"),
            "schema 1 is left out"
        );
        let auth = RouteConfig::from_json(
            r#"{"mode":"production","versions":{"stable":"1"},"dispatch":{"type":"http","urls":{},"auth":{"kind":"aws-iam"}}}"#,
        )
        .unwrap();
        assert_eq!(auth.needed_schema(), 2);
        assert_eq!(auth.schema_features(), [(2, "a dispatch auth block")]);
        assert_eq!(host_version_for_schema(2), "0.2.0");
        let guarded = RouteConfig::from_json(
            r#"{"mode":"production","versions":{"stable":"1"},"guard":{"max-error-rate":0.5},
                "dispatch":{"type":"step-functions","state-machine-arn":"a","workflow":"express"}}"#,
        )
        .unwrap();
        assert_eq!(guarded.needed_schema(), 3);
        assert_eq!(
            guarded.schema_features(),
            [(3, "guard"), (2, "step-functions dispatch")]
        );
    }

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
        assert_eq!(cfg.context["8"]["Q"], "u".into());
    }

    #[test]
    fn context_values_may_be_secret_references_shown_as_such() {
        let cfg = RouteConfig::from_json(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
                "context":{"8":{"Q":"u","DB_PASSWORD":{"$ssm":"/orders/db-password"},
                                "API_TOKEN":{"$secretsmanager":"arn:aws:secretsmanager:us-east-1:1:secret:t"}}}}"#,
        )
        .unwrap();
        assert_eq!(cfg.needed_schema(), 3);
        let shown = cfg.context_for("8");
        assert_eq!(shown["DB_PASSWORD"], r#"{"$ssm":"/orders/db-password"}"#);
        assert_eq!(shown["Q"], "u");
        let secrets = cfg.secrets_for("8");
        assert_eq!(
            secrets,
            [
                (
                    "API_TOKEN".to_owned(),
                    SecretRef::SecretsManager("arn:aws:secretsmanager:us-east-1:1:secret:t".into())
                ),
                (
                    "DB_PASSWORD".to_owned(),
                    SecretRef::Ssm("/orders/db-password".into())
                ),
            ]
        );
        assert!(cfg.secrets_for("7").is_empty());
        // Written back, a reference stays a reference.
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            json.contains(r#""DB_PASSWORD":{"$ssm":"/orders/db-password"}"#),
            "{json}"
        );
        assert_eq!(RouteConfig::from_json(&json).unwrap(), cfg);

        for (bad, says) in [
            (r#"{"$vault":"x"}"#, "a context value is a string"),
            (
                r#"{"$ssm":"/a","$secretsmanager":"b"}"#,
                "a context value is a string",
            ),
            (r#"{"$ssm":""}"#, "the name must be"),
            ("42", "a context value is a string"),
        ] {
            let json = format!(
                r#"{{"mode":"production","versions":{{"stable":"7"}},"context":{{"7":{{"K":{bad}}}}}}}"#
            );
            let e = RouteConfig::from_json(&json).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
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
