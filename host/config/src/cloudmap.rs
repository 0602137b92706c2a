//! The `cloudmap` store: route configs in AWS Cloud Map, where many teams
//! keep per-service attributes already; policy blobs, their signatures and
//! the store's settings in an `ssm:` store beside it (itself with large
//! blobs in S3 as usual). URI: `cloudmap:<namespace>?blobs=ssm:<prefix>`.
//!
//! ```text
//! namespace <namespace> (an HTTP namespace; created by the operator)
//!   service <function>          one per function
//!     instance v<N>             route-config version N, immutable:
//!                               config-0..config-K  the route config JSON, in <= 1,024-character pieces
//!                               version, modified, by, note
//!   service switchyard-live     one instance per function: its live version
//!     instance <function>       function, version
//! ```
//!
//! Cloud Map's limits shape it: 30 custom attributes per instance, 1,024
//! characters per value, 5,000 characters in all (keys included),
//! printable ASCII (the JSON is written with non-ASCII escaped). A config
//! that does not fit is refused when it is written, naming the limit.
//!
//! Polling costs one `DiscoverInstancesRevision` call for all functions
//! when nothing changed; when the live service's revision moved, one
//! `DiscoverInstances` for every pointer, and one per function whose live
//! version moved (a version, once read, is cached: versions are
//! immutable). `RegisterInstance` is asynchronous: every write waits for
//! its operation. Writers serialise on the blob store's SSM lock for the
//! function (Cloud Map has no conditional write), as `ssm:` writers do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_servicediscovery::types::{
    FilterCondition, HealthStatusFilter, OperationStatus, ServiceFilter, ServiceFilterName,
    ServiceTypeOption,
};

use switchyard_core::{Digest, RouteConfig};

use crate::ssm::SsmStore;
use crate::store::{
    ConfigStore, Entry, MAX_NOTE_CHARS, Result, StoreError, StoredRoute, check_function_name,
    cut_note, decode_route, encode_route,
};

/// The service holding each function's live version.
pub const LIVE_SERVICE: &str = "switchyard-live";

/// Cloud Map's limits on an instance's custom attributes.
const MAX_ATTRIBUTES: usize = 30;
const MAX_VALUE_CHARS: usize = 1024;
const MAX_TOTAL_CHARS: usize = 5000;

/// Most functions one `DiscoverInstances` call returns (Cloud Map's limit).
const MAX_DISCOVERED: i32 = 1000;

/// How long a write waits for Cloud Map to finish registering.
const OPERATION_WAIT: Duration = Duration::from_secs(30);

/// A store in a Cloud Map namespace, with blobs in SSM (and S3).
#[derive(Debug)]
pub struct CloudMapStore {
    client: Client,
    namespace: String,
    blobs: SsmStore,
    namespace_id: tokio::sync::OnceCell<String>,
    service_ids: Mutex<HashMap<String, String>>,
    /// The live service's revision and the pointers read at it.
    live: Mutex<Option<(i64, HashMap<String, u64>)>>,
    /// Versions read, by (function, version): immutable once written.
    versions: Mutex<HashMap<(String, u64), StoredRoute>>,
}

/// Most versions kept in memory (each at most 5,000 characters).
const MAX_CACHED_VERSIONS: usize = 4096;

impl CloudMapStore {
    /// A store from the part of a store URI after `cloudmap:`:
    /// `<namespace>?blobs=ssm:<prefix>[?blobs=s3://...]`, configured from the
    /// environment like any AWS SDK client.
    pub async fn from_env(spec: &str) -> Result<Self> {
        let usage = || {
            StoreError::BadUri(format!(
                "cloudmap:{spec} (use cloudmap:<namespace>?blobs=ssm:<prefix>, e.g. cloudmap:orders-mesh?blobs=ssm:/switchyard: route configs in the Cloud Map namespace, policy blobs in SSM)"
            ))
        };
        let (namespace, blobs) = spec.split_once("?blobs=").ok_or_else(usage)?;
        let blobs = blobs.strip_prefix("ssm:").ok_or_else(usage)?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let blobs = SsmStore::from_env(blobs).await?;
        Self::new(client(&config), namespace, blobs)
    }

    /// A store in `namespace` using `client`, with blobs in `blobs`.
    pub fn new(client: Client, namespace: &str, blobs: SsmStore) -> Result<Self> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 1024
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(StoreError::BadUri(format!(
                "cloudmap:{namespace} (a namespace name is letters, digits, '.', '_' and '-')"
            )));
        }
        Ok(CloudMapStore {
            client,
            namespace: namespace.to_owned(),
            blobs,
            namespace_id: tokio::sync::OnceCell::new(),
            service_ids: Mutex::new(HashMap::new()),
            live: Mutex::new(None),
            versions: Mutex::new(HashMap::new()),
        })
    }

    fn err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        e: SdkError<E>,
    ) -> StoreError {
        let (code, message) = crate::aws::sdk_message(&e);
        if code.contains("Throttl") || code == "RequestLimitExceeded" {
            StoreError::Throttled {
                store: self.uri(),
                message,
            }
        } else if code == "NamespaceNotFound" {
            self.no_namespace()
        } else {
            StoreError::Unavailable {
                store: self.uri(),
                message,
            }
        }
    }

    fn no_namespace(&self) -> StoreError {
        StoreError::Unavailable {
            store: self.uri(),
            message: format!(
                "the Cloud Map namespace {ns:?} does not exist; create it once with `aws servicediscovery create-http-namespace --name {ns}` (switchyard creates the services it needs in it)",
                ns = self.namespace
            ),
        }
    }

    /// A function name that is also a Cloud Map service name.
    fn check_name(function: &str) -> Result<()> {
        check_function_name(function)?;
        if function.len() > 63 || function.starts_with('-') || function.ends_with('-') {
            return Err(StoreError::InvalidName(format!(
                "function name {function:?}: a cloudmap: store keeps each function as a Cloud Map service, whose name is at most 63 characters and does not begin or end with '-'"
            )));
        }
        if function == LIVE_SERVICE {
            return Err(StoreError::InvalidName(format!(
                "function name {LIVE_SERVICE:?} is the cloudmap: store's own service of live versions"
            )));
        }
        Ok(())
    }

    async fn namespace_id(&self) -> Result<&str> {
        self.namespace_id
            .get_or_try_init(|| async {
                let mut pages = self.client.list_namespaces().into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| self.err(e))?;
                    if let Some(ns) = page
                        .namespaces()
                        .iter()
                        .find(|ns| ns.name() == Some(self.namespace.as_str()))
                    {
                        return ns
                            .id()
                            .map(str::to_owned)
                            .ok_or_else(|| self.no_namespace());
                    }
                }
                Err(self.no_namespace())
            })
            .await
            .map(String::as_str)
    }

    /// The id of service `name`, if it exists.
    async fn service_id(&self, name: &str) -> Result<Option<String>> {
        if let Some(id) = self.service_ids.lock().expect("lock").get(name) {
            return Ok(Some(id.clone()));
        }
        let namespace = self.namespace_id().await?.to_owned();
        let in_namespace = ServiceFilter::builder()
            .name(ServiceFilterName::NamespaceId)
            .values(&namespace)
            .condition(FilterCondition::Eq)
            .build()
            .expect("all fields set");
        let mut pages = self
            .client
            .list_services()
            .filters(in_namespace)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e))?;
            for s in page.services() {
                let (Some(id), Some(n)) = (s.id(), s.name()) else {
                    continue;
                };
                if n != name {
                    continue;
                }
                // The listing's summary does not say the namespace, and a
                // service of that name may be in another one.
                let got = self
                    .client
                    .get_service()
                    .id(id)
                    .send()
                    .await
                    .map_err(|e| self.err(e))?;
                if got.service().and_then(|s| s.namespace_id()) == Some(namespace.as_str()) {
                    self.service_ids
                        .lock()
                        .expect("lock")
                        .insert(name.to_owned(), id.to_owned());
                    return Ok(Some(id.to_owned()));
                }
            }
        }
        Ok(None)
    }

    /// The id of service `name`, created (an HTTP service) if missing.
    async fn ensure_service(&self, name: &str) -> Result<String> {
        if let Some(id) = self.service_id(name).await? {
            return Ok(id);
        }
        let namespace = self.namespace_id().await?.to_owned();
        let created = self
            .client
            .create_service()
            .name(name)
            .namespace_id(namespace)
            .r#type(ServiceTypeOption::Http)
            .description("switchyard route configs")
            .send()
            .await;
        match created {
            Ok(out) => {
                let id = out
                    .service()
                    .and_then(|s| s.id())
                    .ok_or_else(|| StoreError::Unavailable {
                        store: self.uri(),
                        message: format!("CreateService {name} returned no id"),
                    })?
                    .to_owned();
                self.service_ids
                    .lock()
                    .expect("lock")
                    .insert(name.to_owned(), id.clone());
                Ok(id)
            }
            // Another writer made it in between.
            Err(e) if e.code() == Some("ServiceAlreadyExists") => self
                .service_id(name)
                .await?
                .ok_or_else(|| StoreError::Unavailable {
                    store: self.uri(),
                    message: format!("service {name} exists and cannot be found"),
                }),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Registers an instance and waits for Cloud Map to finish.
    async fn register(
        &self,
        service: &str,
        instance: &str,
        attributes: HashMap<String, String>,
    ) -> Result<()> {
        let service_id = self.ensure_service(service).await?;
        let out = self
            .client
            .register_instance()
            .service_id(service_id)
            .instance_id(instance)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let Some(op) = out.operation_id() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + OPERATION_WAIT;
        let mut pause = Duration::from_millis(20);
        loop {
            let got = self
                .client
                .get_operation()
                .operation_id(op)
                .send()
                .await
                .map_err(|e| self.err(e))?;
            match got.operation().and_then(|o| o.status()) {
                Some(OperationStatus::Success) => return Ok(()),
                Some(OperationStatus::Fail) => {
                    let o = got.operation();
                    return Err(StoreError::Unavailable {
                        store: self.uri(),
                        message: format!(
                            "registering {service}/{instance} failed: {} {}",
                            o.and_then(|o| o.error_code()).unwrap_or_default(),
                            o.and_then(|o| o.error_message()).unwrap_or_default()
                        ),
                    });
                }
                _ if std::time::Instant::now() >= deadline => {
                    return Err(StoreError::Unavailable {
                        store: self.uri(),
                        message: format!(
                            "registering {service}/{instance} did not finish within {OPERATION_WAIT:?} (operation {op})"
                        ),
                    });
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// `DiscoverInstances` of `service`, filtered by attributes; `None`
    /// when the service does not exist.
    async fn discover(
        &self,
        service: &str,
        filter: Option<(&str, String)>,
    ) -> Result<Option<Vec<HashMap<String, String>>>> {
        let out = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(service)
            .set_query_parameters(filter.map(|(k, v)| HashMap::from([(k.to_owned(), v)])))
            .health_status(HealthStatusFilter::All)
            .max_results(MAX_DISCOVERED)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Some(
                out.instances()
                    .iter()
                    .map(|i| i.attributes().cloned().unwrap_or_default())
                    .collect(),
            )),
            Err(e) if e.code() == Some("ServiceNotFound") => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Each function's live version. One cheap call when the live service
    /// did not change since the last read.
    async fn pointers(&self) -> Result<HashMap<String, u64>> {
        let revision = self
            .client
            .discover_instances_revision()
            .namespace_name(&self.namespace)
            .service_name(LIVE_SERVICE)
            .send()
            .await;
        let revision = match revision {
            Ok(out) => out.instances_revision().unwrap_or(0),
            Err(e) if e.code() == Some("ServiceNotFound") => return Ok(HashMap::new()),
            Err(e) => return Err(self.err(e)),
        };
        if let Some((seen, map)) = &*self.live.lock().expect("lock")
            && *seen == revision
        {
            return Ok(map.clone());
        }
        let mut map = HashMap::new();
        for attrs in self.discover(LIVE_SERVICE, None).await?.unwrap_or_default() {
            let (Some(f), Some(v)) = (
                attrs.get("function"),
                attrs.get("version").and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            // Versions only grow (a rollback writes a new one): of two
            // records of one function, the newer is the live one.
            let e = map.entry(f.clone()).or_insert(v);
            *e = (*e).max(v);
        }
        *self.live.lock().expect("lock") = Some((revision, map.clone()));
        Ok(map)
    }

    /// The live version of `function` as Cloud Map has it now (no cache):
    /// what a writer checks its precondition against.
    async fn live_version(&self, function: &str) -> Result<u64> {
        let found = self
            .discover(LIVE_SERVICE, Some(("function", function.to_owned())))
            .await?
            .unwrap_or_default();
        Ok(found
            .iter()
            .filter_map(|a| a.get("version")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0))
    }

    /// Version `version` of `function`, from memory or Cloud Map.
    async fn read_version(&self, function: &str, version: u64) -> Result<StoredRoute> {
        let key = (function.to_owned(), version);
        if let Some(r) = self.versions.lock().expect("lock").get(&key) {
            return Ok(r.clone());
        }
        let found = self
            .discover(function, Some(("version", version.to_string())))
            .await?
            .unwrap_or_default();
        let attrs = found
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("version {version} of {function}")))?;
        let stored = decode(function, &attrs)?;
        let mut cache = self.versions.lock().expect("lock");
        if cache.len() >= MAX_CACHED_VERSIONS {
            cache.clear();
        }
        cache.insert(key, stored.clone());
        Ok(stored)
    }
}

/// A Cloud Map client; given an endpoint URL (an emulator), without the
/// SDK's `data-` host prefix on the discovery calls.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    let mut config = aws_sdk_servicediscovery::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        config = config.interceptor(crate::aws::NoHostPrefix);
    }
    Client::from_conf(config.build())
}

/// `text` with every non-ASCII character as a JSON `\u` escape (Cloud Map
/// takes printable ASCII), and control characters likewise.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Printable ASCII only (others as `?`), at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect()
}

/// A route version's attributes, or which limit it breaks.
fn encode(
    function: &str,
    version: u64,
    config: &RouteConfig,
    note: &str,
) -> Result<HashMap<String, String>> {
    let text = ascii_json(&encode_route(function, config)?);
    let mut attrs: HashMap<String, String> = text
        .as_bytes()
        .chunks(MAX_VALUE_CHARS)
        .enumerate()
        .map(|(i, c)| {
            (
                format!("config-{i}"),
                String::from_utf8(c.to_vec()).expect("ASCII"),
            )
        })
        .collect();
    attrs.insert("version".into(), version.to_string());
    attrs.insert(
        "modified".into(),
        crate::dir::rfc3339(std::time::SystemTime::now()),
    );
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    attrs.insert(
        "by".into(),
        printable(&format!("{user} on {}", crate::ssm::host_name()), 256),
    );
    let size =
        |a: &HashMap<String, String>| a.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if attrs.len() + 1 > MAX_ATTRIBUTES || size(&attrs) > MAX_TOTAL_CHARS {
        return Err(StoreError::TooLarge {
            what: format!(
                "route config of {function} as Cloud Map instance attributes (at most {MAX_ATTRIBUTES} attributes of {MAX_VALUE_CHARS} characters, {MAX_TOTAL_CHARS} characters in all, keys included)"
            ),
            len: size(&attrs),
            limit: MAX_TOTAL_CHARS,
        });
    }
    // The note gets what room is left.
    let room = MAX_TOTAL_CHARS - size(&attrs) - "note".len();
    let note = printable(
        cut_note(note),
        room.min(MAX_NOTE_CHARS).min(MAX_VALUE_CHARS),
    );
    if !note.is_empty() {
        attrs.insert("note".into(), note);
    }
    Ok(attrs)
}

/// A route version from its attributes.
fn decode(function: &str, attrs: &HashMap<String, String>) -> Result<StoredRoute> {
    let version = attrs
        .get("version")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("a Cloud Map instance of {function}"),
            why: "no numeric \"version\" attribute".into(),
        })?;
    let mut text = String::new();
    for i in 0..MAX_ATTRIBUTES {
        match attrs.get(&format!("config-{i}")) {
            Some(piece) => text.push_str(piece),
            None => break,
        }
    }
    Ok(StoredRoute {
        function: function.to_owned(),
        version,
        modified: attrs.get("modified").cloned(),
        config: decode_route(function, version, &text)?,
        by: attrs.get("by").cloned(),
        note: attrs.get("note").cloned(),
    })
}

#[async_trait]
impl ConfigStore for CloudMapStore {
    fn uri(&self) -> String {
        format!("cloudmap:{}?blobs={}", self.namespace, self.blobs.uri())
    }

    async fn latest(&self, functions: &[String]) -> Result<Vec<Entry>> {
        let pointers = self.pointers().await?;
        let mut out = Vec::with_capacity(functions.len());
        for f in functions {
            out.push(match pointers.get(f) {
                None => Ok(None),
                Some(&v) => match self.read_version(f, v).await {
                    Ok(r) => Ok(Some(r)),
                    // The store failing is the whole read's error; a
                    // version that does not decode is this function's.
                    Err(e @ (StoreError::Unavailable { .. } | StoreError::Throttled { .. })) => {
                        return Err(e);
                    }
                    Err(e) => Err(e),
                },
            });
        }
        Ok(out)
    }

    async fn version(&self, function: &str, version: u64) -> Result<StoredRoute> {
        Self::check_name(function)?;
        self.read_version(function, version).await
    }

    async fn history(&self, function: &str) -> Result<Vec<Result<StoredRoute>>> {
        Self::check_name(function)?;
        let Some(id) = self.service_id(function).await? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_instances()
            .service_id(id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e))?;
            for i in page.instances() {
                let attrs = i.attributes().cloned().unwrap_or_default();
                let version = attrs.get("version").and_then(|v| v.parse::<u64>().ok());
                found.push((version.unwrap_or(0), decode(function, &attrs)));
            }
        }
        found.sort_by_key(|(v, _)| *v);
        // An instance written twice (an emulator that appends) counts once.
        found.dedup_by_key(|(v, _)| *v);
        Ok(found.into_iter().map(|(_, r)| r).collect())
    }

    async fn functions(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.pointers().await?.into_keys().collect();
        names.sort();
        Ok(names)
    }

    async fn put_route(&self, function: &str, config: &RouteConfig) -> Result<u64> {
        Self::check_name(function)?;
        let read = self.live_version(function).await?;
        self.put_route_if(function, config, read, "").await
    }

    async fn put_route_if(
        &self,
        function: &str,
        config: &RouteConfig,
        expected: u64,
        note: &str,
    ) -> Result<u64> {
        Self::check_name(function)?;
        // Refused before the lock is taken, naming the limit it breaks.
        encode(function, expected + 1, config, note)?;
        let lock = self.blobs.lock(function).await?;
        let written = async {
            let found = self.live_version(function).await?;
            if found != expected {
                return Err(StoreError::Conflict {
                    function: function.to_owned(),
                    expected,
                    found,
                });
            }
            let version = found + 1;
            let attrs = encode(function, version, config, note)?;
            self.register(function, &format!("v{version}"), attrs)
                .await?;
            let pointer = HashMap::from([
                ("function".to_owned(), function.to_owned()),
                ("version".to_owned(), version.to_string()),
            ]);
            self.register(LIVE_SERVICE, function, pointer).await?;
            Ok(version)
        }
        .await;
        self.blobs.unlock(&lock).await;
        written
    }

    async fn rollout(&self, function: &str) -> Result<Option<(String, u64)>> {
        Self::check_name(function)?;
        self.blobs.rollout(function).await
    }

    async fn put_rollout_if(&self, function: &str, doc: &str, expected: u64) -> Result<u64> {
        Self::check_name(function)?;
        self.blobs.put_rollout_if(function, doc, expected).await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        self.blobs.setting(name).await
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.blobs.put_setting(name, value).await
    }

    async fn signatures(&self, digest: &Digest) -> Result<Vec<String>> {
        self.blobs.signatures(digest).await
    }

    async fn put_signature(&self, digest: &Digest, key_id: &str, doc: &str) -> Result<()> {
        self.blobs.put_signature(digest, key_id, doc).await
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        self.blobs.has_blob(digest).await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.blobs.get_blob(digest).await
    }

    async fn put_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.blobs.put_blob(bytes, progress).await
    }

    async fn replace_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.blobs.replace_blob(bytes, progress).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_in_printable_ascii_within_the_limits() {
        let cfg = RouteConfig::from_json(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
                "flags":{"greeting":"grüß dich 🚦","pad":"PADDING"},"context":{"8":{"Q":"q"}}}"#
                .replace("PADDING", &"x".repeat(2500))
                .as_str(),
        )
        .unwrap();
        let attrs = encode("orders", 3, &cfg, "switchyard set: QA ✓").unwrap();
        assert!(
            attrs.values().all(
                |v| v.len() <= MAX_VALUE_CHARS && v.bytes().all(|b| (b' '..=b'~').contains(&b))
            )
        );
        assert!(attrs.len() <= MAX_ATTRIBUTES);
        assert!(attrs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= MAX_TOTAL_CHARS);
        let back = decode("orders", &attrs).unwrap();
        assert_eq!((back.version, &back.config), (3, &cfg));
        assert_eq!(back.note.as_deref(), Some("switchyard set: QA ?"));
    }

    #[test]
    fn a_config_over_the_limits_is_refused_naming_them() {
        let mut cfg =
            RouteConfig::from_json(r#"{"mode":"production","versions":{"stable":"7"}}"#).unwrap();
        // Within SSM's 4,096 characters, past Cloud Map's 5,000 once every
        // character is escaped.
        cfg.flags.insert("k".into(), "é".repeat(1000));
        let err = encode("orders", 1, &cfg, "").unwrap_err().to_string();
        assert!(err.contains("5000 characters in all"), "{err}");
    }
}
