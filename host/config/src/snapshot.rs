//! The fleet's read path: one compact snapshot of what hosts need (every
//! function's live route version and config, each naming its policy by
//! digest), published beside the store of record on every route write and
//! read by hosts with a conditional GET, so an unchanged snapshot costs one
//! cheap `304 Not Modified` and no body.
//!
//! A store opened as `ssm:/switchyard?snapshot=s3://<bucket>/<key>` (or
//! `cloudmap:...&snapshot=...`) is a [`Snapshotted`] store:
//!
//! * **Writes** (`publish`, `mode`, `set`, `promote`, `rollback`, the
//!   guard's rollback, a rollout step: every route write goes through
//!   [`ConfigStore::put_route_if`]) go to the store of record first, then
//!   to the snapshot, with a compare-and-swap on its ETag (`If-Match`), so
//!   two writers never lose each other's change. A snapshot of up to
//!   [`REBUILD_UP_TO`] functions is rebuilt from the store's latest
//!   versions on every write (two store reads), which repairs whatever an
//!   earlier writer that died between its two writes left behind; a larger
//!   one has the written function's entry replaced (no store read), and is
//!   repaired by the next write of that function or by `switchyard fleet
//!   --sync-snapshot` (a full rebuild, by hand or on a schedule).
//! * **Reads** ([`ConfigStore::latest`], [`ConfigStore::functions`]) come
//!   from the snapshot, verified: a truncated or tampered object (its
//!   SHA-256 does not match its header), one of another store, or one older
//!   than the snapshot already held (a CDN or cache serving a stale copy)
//!   is refused and counted, and a function never moves back to an older
//!   version than this host already read. A refused, missing or unreadable
//!   object leaves the snapshot held serving (at fleet scale, falling back
//!   to the store would throttle it); a host that never held one reads the
//!   store itself. The store of record stays the one source of truth:
//!   every `audit` interval (jittered) a host reads it and the snapshot;
//!   where the store is ahead, its version is served from then on (and
//!   the snapshot counted as behind), so every host converges within one
//!   audit period even when no writer repairs the snapshot.
//!
//! Blobs are not in the snapshot: they are immutable, content-addressed
//! and fetched once per digest from where they are stored, as before.
//!
//! The object's format: one header line, then the body.
//!
//! ```text
//! switchyard-snapshot/1 sha256:<hex of the body> <length of the body>
//! {"generation":..,"written-ms":..,"store":"ssm:/switchyard","functions":{"orders":{"version":12,"config":{..}}}}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchyard_core::{Digest, RouteConfig, RouteConfigError, supported_schema};

use crate::catalogue::{SNAPSHOT_GENERATION, SNAPSHOT_READS, SNAPSHOT_WRITES};
use crate::store::{ConfigStore, Entry, Result, StoreError, StoredRoute, decode_route};

/// The header line's first word.
pub const SNAPSHOT_MAGIC: &str = "switchyard-snapshot/1";

/// Largest snapshot read: 1,000 functions of the largest route config
/// (4,096 characters) fit four times over.
pub const MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// How often a host reads the store of record itself, by default, to
/// check the snapshot is not behind it (jittered ±50 %). At 10,000 hosts
/// watching up to ten functions each, one `GetParameters` a host every 15
/// minutes is 11 calls a second, within SSM's default 40.
pub const DEFAULT_AUDIT: Duration = Duration::from_secs(15 * 60);

/// A listing and the latest read that follows it within this long share
/// one snapshot read (a poll's two reads).
const REUSE_WITHIN: Duration = Duration::from_secs(1);

/// A snapshot naming at most this many functions is rebuilt from the store
/// on every write (two store reads: the listing and one batch); a larger
/// one has the written function's entry replaced.
pub const REBUILD_UP_TO: usize = 10;

/// Conditional writes attempted before a publish gives up (another writer
/// won every time).
const PUBLISH_ATTEMPTS: u32 = 8;

/// Where a snapshot object lives and how it is read and written.
#[async_trait]
pub trait SnapshotObject: Send + Sync + fmt::Debug {
    /// Its URL, e.g. `s3://bucket/key`.
    fn url(&self) -> String;

    /// Reads it; with `if_none_match`, [`Fetched::Unchanged`] when its
    /// ETag still is that.
    async fn get(&self, if_none_match: Option<&str>) -> Result<Fetched>;

    /// Writes it only while `expected` holds; `Ok(false)` when another
    /// writer changed it first.
    async fn put(&self, bytes: Vec<u8>, expected: Expected) -> Result<bool>;
}

/// What a read of the snapshot object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Its ETag is still the one asked about: no body.
    Unchanged,
    /// There is none.
    Missing,
    /// Its bytes and ETag.
    Body {
        /// The bytes, as stored.
        bytes: Vec<u8>,
        /// The ETag, for the next conditional read or write.
        etag: Option<String>,
    },
}

/// The precondition of a snapshot write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// There is no object yet (`If-None-Match: *`).
    Absent,
    /// The object still has this ETag (`If-Match`).
    Etag(String),
}

/// One function's entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SnapEntry {
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified: Option<String>,
    /// The route config as the store holds it; absent when the store's
    /// newest version does not decode (then `error` says why, and a host
    /// reads the store's history itself, as without a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// With `error`: the route-config schema the version needs, when that
    /// is why its writer could not read it (a newer host may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<u32>,
}

impl SnapEntry {
    fn of(version: u64, modified: Option<String>, config: &RouteConfig) -> Self {
        SnapEntry {
            version,
            modified,
            config: Some(serde_json::value::to_raw_value(config).expect("route config serializes")),
            error: None,
            schema: None,
        }
    }
}

/// The body of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Body {
    /// Grows with every write: a reader refuses a lower one than it holds.
    generation: u64,
    /// When it was written, milliseconds since the Unix epoch.
    written_ms: u64,
    /// The store it mirrors (its URI without options).
    store: String,
    functions: BTreeMap<String, SnapEntry>,
}

/// Why a snapshot object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot, truncated, or its body does not hash to its header.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    /// A snapshot of another store.
    #[error("snapshot is of store {found}, not {expected}")]
    Foreign {
        /// The store it names.
        found: String,
        /// This host's store.
        expected: String,
    },
    /// Older than the one this host holds.
    #[error(
        "snapshot generation {found} is older than generation {held} already read (a stale cached copy)"
    )]
    Older {
        /// Its generation.
        found: u64,
        /// The one held.
        held: u64,
    },
}

impl SnapshotError {
    fn outcome(&self) -> &'static str {
        match self {
            SnapshotError::Corrupt(_) => "corrupt",
            SnapshotError::Foreign { .. } => "foreign",
            SnapshotError::Older { .. } => "older",
        }
    }
}

/// The version a store's entry names (0: none, or an error naming none).
fn version_in_store(entry: &Entry) -> u64 {
    match entry {
        Ok(Some(s)) => s.version,
        Err(e) => e.version().unwrap_or(0),
        Ok(None) => 0,
    }
}

/// `uri` without its options: what identifies a store in a snapshot.
fn identity(uri: &str) -> &str {
    uri.split_once('?').map_or(uri, |(base, _)| base)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Encodes a body as the object's bytes: header line, body.
fn encode(body: &Body) -> Vec<u8> {
    let json = serde_json::to_vec(body).expect("snapshot serializes");
    let mut out = format!("{SNAPSHOT_MAGIC} {} {}\n", Digest::of(&json), json.len()).into_bytes();
    out.extend_from_slice(&json);
    out
}

/// Decodes and verifies an object's bytes.
fn decode(bytes: &[u8]) -> std::result::Result<Body, SnapshotError> {
    let corrupt = |why: String| SnapshotError::Corrupt(why);
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(corrupt(format!(
            "{} bytes; the limit is {MAX_SNAPSHOT_BYTES}",
            bytes.len()
        )));
    }
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..nl])
        .map_err(|_| corrupt("the header line is not UTF-8".into()))?;
    let body = &bytes[nl + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(SNAPSHOT_MAGIC) {
        return Err(corrupt(format!(
            "the header does not start with {SNAPSHOT_MAGIC}"
        )));
    }
    let digest: Digest = words
        .next()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| corrupt("the header names no sha256 digest".into()))?;
    let len: usize = words
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| corrupt("the header names no length".into()))?;
    if body.len() != len {
        return Err(corrupt(format!(
            "the body is {} bytes, the header says {len} (truncated or appended to)",
            body.len()
        )));
    }
    let actual = Digest::of(body);
    if actual != digest {
        return Err(corrupt(format!(
            "the body hashes to {actual}, the header says {digest} (tampered with)"
        )));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(format!("the body does not decode: {e}")))
}

/// What the snapshot holds against the store of record.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotStatus {
    /// Where it is.
    pub url: String,
    /// Whether there is an object.
    pub present: bool,
    /// Why hosts would refuse it, if they would.
    pub refused: Option<String>,
    /// Its generation.
    pub generation: Option<u64>,
    /// When it was written, milliseconds since the Unix epoch.
    pub written_ms: Option<u64>,
    /// The functions it names.
    pub functions: usize,
    /// The functions whose version in it is not the store's newest.
    pub behind: Vec<Behind>,
}

/// A function whose snapshot entry is not the store's newest version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Behind {
    /// The function.
    pub function: String,
    /// The store's newest version (0: none).
    pub in_store: u64,
    /// The snapshot's (0: none).
    pub in_snapshot: u64,
}

/// How a [`Snapshotted`] store reads and writes its snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// How often a host reads the store of record itself to check the
    /// snapshot is not behind it; `None`: never.
    pub audit: Option<Duration>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            audit: Some(DEFAULT_AUDIT),
        }
    }
}

/// The snapshot a host holds.
#[derive(Debug)]
struct Held {
    etag: Option<String>,
    body: Body,
    /// The entries of the functions this host asked for, decoded once
    /// (not on every poll): the route, or why it is unusable.
    decoded: HashMap<String, Lookup>,
    /// When it was last confirmed current (fetched or a 304).
    at: Instant,
}

impl Held {
    fn new(etag: Option<String>, body: Body) -> Self {
        Held {
            etag,
            body,
            decoded: HashMap::new(),
            at: Instant::now(),
        }
    }

    /// `function`'s entry: `None` when the snapshot does not name it.
    fn route(&mut self, function: &str) -> Option<&Lookup> {
        if !self.decoded.contains_key(function) {
            let e = self.body.functions.get(function)?;
            let route = match (&e.config, &e.error) {
                // Its writer could not read a schema this host reads: the
                // store is asked (once per version).
                (_, Some(_)) if e.schema.is_some_and(|s| s <= supported_schema()) => {
                    Lookup::AskStore(e.version)
                }
                (_, Some(error)) => Lookup::Bad(e.version, error.clone(), e.schema),
                (None, None) => Lookup::Bad(
                    e.version,
                    "the snapshot carries no config for it".into(),
                    None,
                ),
                (Some(config), None) => match decode_route(function, e.version, config.get()) {
                    Ok(config) => Lookup::Route(Box::new(StoredRoute {
                        function: function.to_owned(),
                        version: e.version,
                        modified: e.modified.clone(),
                        config,
                        by: None,
                        note: None,
                    })),
                    Err(err) => Lookup::Bad(
                        e.version,
                        match err {
                            StoreError::InvalidRoute { reason, .. } => reason.to_string(),
                            other => other.to_string(),
                        },
                        None,
                    ),
                },
            };
            self.decoded.insert(function.to_owned(), route);
        }
        self.decoded.get(function)
    }
}

/// A function's entry in the held snapshot, decoded.
#[derive(Debug, Clone)]
enum Lookup {
    Route(Box<StoredRoute>),
    /// Unusable: the version, why, and the schema it needs if that is why.
    Bad(u64, String, Option<u32>),
    /// This version is read from the store itself.
    AskStore(u64),
}

impl Lookup {
    /// The entry as the store would answer it.
    fn entry(&self, function: &str) -> Entry {
        match self {
            Lookup::Route(stored) => Ok(Some(StoredRoute::clone(stored))),
            Lookup::Bad(version, why, schema) => Err(StoreError::InvalidRoute {
                function: function.to_owned(),
                version: *version,
                reason: match schema {
                    Some(schema) => RouteConfigError::SchemaTooNew {
                        schema: *schema,
                        supported: supported_schema(),
                    },
                    None => RouteConfigError::Invalid(why.clone()),
                },
            }),
            Lookup::AskStore(version) => Err(StoreError::NotFound(format!(
                "route config of {function} version {version} in the snapshot"
            ))),
        }
    }
}

#[derive(Debug, Default)]
struct ReadState {
    held: Option<Held>,
    /// The newest version read per function, whichever way: a snapshot
    /// never takes a function back below it.
    newest: HashMap<String, StoredRoute>,
    next_audit: Option<Instant>,
    /// A listing just read the snapshot: the latest read that follows
    /// uses it without another GET.
    listed: bool,
    /// The store's own listing at the last audit of a listing host: its
    /// functions are listed with the snapshot's, so one the snapshot
    /// lacks (its writer died) is still routed, and removed once the store
    /// no longer lists it.
    store_listing: Vec<String>,
    /// A listing audited the store: the latest read that follows audits
    /// the functions it listed.
    audit_next_read: bool,
}

/// A store whose hosts read a snapshot (see the module docs).
#[derive(Debug)]
pub struct Snapshotted {
    inner: Arc<dyn ConfigStore>,
    object: Arc<dyn SnapshotObject>,
    options: SnapshotOptions,
    state: tokio::sync::Mutex<ReadState>,
    /// Snapshot reads made (conditional or not), for the fleet's figures.
    reads: std::sync::atomic::AtomicU64,
    /// Reads of the store of record made in its place or to audit it.
    store_reads: std::sync::atomic::AtomicU64,
    last_refusal: Mutex<Option<String>>,
    /// The generation of the newest snapshot accepted.
    accepted: std::sync::atomic::AtomicU64,
}

impl Snapshotted {
    /// `inner`, with its hosts reading the snapshot in `object`.
    pub fn new(
        inner: Arc<dyn ConfigStore>,
        object: Arc<dyn SnapshotObject>,
        options: SnapshotOptions,
    ) -> Self {
        Snapshotted {
            inner,
            object,
            options,
            state: tokio::sync::Mutex::new(ReadState::default()),
            reads: 0.into(),
            store_reads: 0.into(),
            last_refusal: Mutex::new(None),
            accepted: 0.into(),
        }
    }

    /// The store of record.
    pub fn inner(&self) -> &Arc<dyn ConfigStore> {
        &self.inner
    }

    /// Snapshot reads made so far (each one GET, most of them a `304`).
    pub fn snapshot_reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads of the store of record made instead of the snapshot or to
    /// audit it.
    pub fn store_reads(&self) -> u64 {
        self.store_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the last snapshot refused was refused, if one was.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal.lock().expect("lock").clone()
    }

    /// The generation of the snapshot held, if any.
    pub async fn generation(&self) -> Option<u64> {
        self.state
            .lock()
            .await
            .held
            .as_ref()
            .map(|h| h.body.generation)
    }

    /// The generation of the newest snapshot accepted (0: none yet),
    /// without waiting for a read under way.
    pub fn generation_now(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rebuilds the snapshot from the store of record's latest versions and
    /// writes it (compare-and-swap on its ETag, retried when another writer
    /// got in first): what `switchyard fleet --sync-snapshot` runs. Returns
    /// the generation written.
    pub async fn publish(&self) -> Result<u64> {
        self.write_snapshot(None).await
    }

    /// The store's newest version of every function, as snapshot entries,
    /// and the functions whose entry could not be had (left as the
    /// previous snapshot has them). The store failing or throttling fails
    /// the rebuild.
    async fn rebuild(&self) -> Result<(BTreeMap<String, SnapEntry>, Vec<String>)> {
        let functions = self.inner.functions().await?;
        let latest = self.inner.latest(&functions).await?;
        let mut entries = BTreeMap::new();
        let mut unknown = Vec::new();
        for (function, entry) in functions.into_iter().zip(latest) {
            let entry = match entry {
                Ok(None) => continue,
                Ok(Some(stored)) => SnapEntry::of(stored.version, stored.modified, &stored.config),
                Err(e) => match e.version() {
                    Some(version) => SnapEntry {
                        version,
                        modified: None,
                        config: None,
                        schema: match &e {
                            StoreError::InvalidRoute {
                                reason: RouteConfigError::SchemaTooNew { schema, .. },
                                ..
                            } => Some(*schema),
                            _ => None,
                        },
                        error: Some(match &e {
                            StoreError::InvalidRoute { reason, .. } => reason.to_string(),
                            other => other.to_string(),
                        }),
                    },
                    // The store failing: retried by the caller.
                    None if matches!(
                        e,
                        StoreError::Throttled { .. } | StoreError::Unavailable { .. }
                    ) =>
                    {
                        return Err(e);
                    }
                    // Not to be had (a version the store names but cannot
                    // give): the previous snapshot's entry stays, so one
                    // bad entry never blocks every write.
                    None => {
                        tracing::warn!(target: "switchyard::snapshot", %function, error = %e, "the store's newest version of this function cannot be read; the snapshot keeps its previous entry");
                        unknown.push(function);
                        continue;
                    }
                },
            };
            entries.insert(function, entry);
        }
        Ok((entries, unknown))
    }

    /// Writes the snapshot: after a route write (`written`), the previous
    /// snapshot with that function's entry replaced, when it is usable and
    /// names more than [`REBUILD_UP_TO`] functions (a write then costs no
    /// store reads); otherwise rebuilt from the store, which repairs
    /// whatever an earlier writer left behind.
    async fn write_snapshot(&self, written: Option<(&str, u64, &RouteConfig)>) -> Result<u64> {
        let store = identity(&self.inner.uri()).to_owned();
        for _ in 0..PUBLISH_ATTEMPTS {
            let (previous, expected) = match self.object.get(None).await? {
                Fetched::Body { bytes, etag } => (
                    decode(&bytes).ok().filter(|b| b.store == store),
                    etag.map_or(Expected::Absent, Expected::Etag),
                ),
                Fetched::Missing | Fetched::Unchanged => (None, Expected::Absent),
            };
            let generation = previous
                .as_ref()
                .map_or(0, |b| b.generation + 1)
                .max(now_ms());
            // A large store's write replaces its own entry; otherwise the
            // store is read whole.
            let patch = matches!(
                (written, &previous),
                (Some(_), Some(p)) if p.functions.len() > REBUILD_UP_TO
            );
            let (mut functions, unknown) = if patch {
                (BTreeMap::new(), Vec::new())
            } else {
                self.rebuild().await?
            };
            // The highest version of each function wins, whichever of the
            // store's read, the previous snapshot and this write has it: a
            // lagging read (an eventually consistent store) or a writer
            // racing this one never takes an entry back.
            if let Some(previous) = previous {
                for (function, entry) in previous.functions {
                    let keep = match functions.get(&function) {
                        _ if patch => true,
                        Some(read) => read.version < entry.version,
                        None => unknown.contains(&function),
                    };
                    if keep {
                        functions.insert(function, entry);
                    }
                }
            }
            if let Some((function, version, config)) = written
                && functions.get(function).is_none_or(|e| e.version < version)
            {
                let modified = crate::dir::rfc3339(SystemTime::now());
                functions.insert(
                    function.to_owned(),
                    SnapEntry::of(version, Some(modified), config),
                );
            }
            let body = Body {
                generation,
                written_ms: now_ms(),
                store: store.clone(),
                functions,
            };
            if self.object.put(encode(&body), expected).await? {
                SNAPSHOT_WRITES
                    .counter(&[("outcome", "written")])
                    .increment(1);
                tracing::debug!(target: "switchyard::snapshot", snapshot = %self.object.url(), generation, functions = body.functions.len(), "snapshot written");
                return Ok(generation);
            }
            SNAPSHOT_WRITES
                .counter(&[("outcome", "raced")])
                .increment(1);
        }
        Err(StoreError::Busy {
            function: "the snapshot".into(),
            holder: format!(
                "other writers changed {} {PUBLISH_ATTEMPTS} times in a row",
                self.object.url()
            ),
        })
    }

    /// What the snapshot holds against the store of record: for `switchyard
    /// fleet`.
    pub async fn status(&self) -> Result<SnapshotStatus> {
        let fetched = self.object.get(None).await?;
        let functions = self.inner.functions().await?;
        let latest = self.inner.latest(&functions).await?;
        let mut status = SnapshotStatus {
            url: self.object.url(),
            present: false,
            refused: None,
            generation: None,
            written_ms: None,
            functions: 0,
            behind: Vec::new(),
        };
        let body = match fetched {
            Fetched::Body { bytes, .. } => match decode(&bytes) {
                Ok(body) => body,
                Err(e) => {
                    status.present = true;
                    status.refused = Some(e.to_string());
                    return Ok(status);
                }
            },
            Fetched::Missing | Fetched::Unchanged => return Ok(status),
        };
        status.present = true;
        if body.store != identity(&self.inner.uri()) {
            status.refused = Some(
                SnapshotError::Foreign {
                    found: body.store.clone(),
                    expected: identity(&self.inner.uri()).to_owned(),
                }
                .to_string(),
            );
        }
        status.generation = Some(body.generation);
        status.written_ms = Some(body.written_ms);
        status.functions = body.functions.len();
        for (function, entry) in functions.iter().zip(&latest) {
            let in_store = version_in_store(entry);
            let in_snapshot = body.functions.get(function).map_or(0, |e| e.version);
            if in_store != in_snapshot {
                status.behind.push(Behind {
                    function: function.clone(),
                    in_store,
                    in_snapshot,
                });
            }
        }
        Ok(status)
    }

    /// Publishes after a route write that succeeded: a failure is logged,
    /// not returned (the store holds the write; hosts reach it through
    /// their audits, and the next write or `switchyard fleet --sync-snapshot`
    /// repairs the snapshot).
    async fn publish_after_write(&self, function: &str, version: u64, config: &RouteConfig) {
        if let Err(e) = self.write_snapshot(Some((function, version, config))).await {
            SNAPSHOT_WRITES
                .counter(&[("outcome", "failed")])
                .increment(1);
            tracing::warn!(target: "switchyard::snapshot", %function, version, snapshot = %self.object.url(), error = %e, "route written to the store, but the fleet snapshot could not be updated: hosts reading it reach this version at their next audit of the store; run `switchyard fleet --sync-snapshot` (or write again) to repair it");
        }
    }

    /// Refreshes the held snapshot (one conditional GET; a listing's is
    /// shared with the latest read that follows it within
    /// [`REUSE_WITHIN`]); `None` when the store must be read instead (no
    /// snapshot was usable here yet). A refused, missing or unreadable
    /// object leaves the one held serving.
    async fn refresh(&self, state: &mut ReadState) -> Option<()> {
        let fresh = std::mem::take(&mut state.listed)
            && state
                .held
                .as_ref()
                .is_some_and(|h| h.at.elapsed() < REUSE_WITHIN);
        if !fresh {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let etag = state.held.as_ref().and_then(|h| h.etag.clone());
            match self.object.get(etag.as_deref()).await {
                Ok(Fetched::Unchanged) => {
                    SNAPSHOT_READS
                        .counter(&[("outcome", "unchanged")])
                        .increment(1);
                    if let Some(h) = state.held.as_mut() {
                        h.at = Instant::now();
                    }
                }
                Ok(Fetched::Body { bytes, etag }) => match self.accept(state, &bytes) {
                    Ok(body) => {
                        SNAPSHOT_READS
                            .counter(&[("outcome", "changed")])
                            .increment(1);
                        SNAPSHOT_GENERATION.gauge(&[]).set(body.generation as f64);
                        self.accepted
                            .store(body.generation, std::sync::atomic::Ordering::Relaxed);
                        state.held = Some(Held::new(etag, body));
                    }
                    Err(e) => {
                        SNAPSHOT_READS
                            .counter(&[("outcome", e.outcome())])
                            .increment(1);
                        tracing::warn!(target: "switchyard::snapshot", snapshot = %self.object.url(), error = %e, held = ?state.held.as_ref().map(|h| h.body.generation), "snapshot refused; keeping the one held, or reading the store when none is");
                        *self.last_refusal.lock().expect("lock") = Some(e.to_string());
                    }
                },
                // The one held (if any) keeps serving: at fleet scale a
                // fallback to the store of record would throttle it.
                Ok(Fetched::Missing) => {
                    SNAPSHOT_READS
                        .counter(&[("outcome", "missing")])
                        .increment(1);
                    tracing::debug!(target: "switchyard::snapshot", snapshot = %self.object.url(), held = state.held.is_some(), "no snapshot; the one held serves, or the store is read");
                }
                Err(e) => {
                    SNAPSHOT_READS
                        .counter(&[("outcome", "failed")])
                        .increment(1);
                    tracing::debug!(target: "switchyard::snapshot", snapshot = %self.object.url(), error = %e, held = state.held.is_some(), "snapshot unreadable; the one held serves, or the store is read");
                }
            }
        }
        state.held.as_ref().map(|_| ())
    }

    /// Verifies a fetched snapshot against this host's store and what it
    /// holds.
    fn accept(&self, state: &ReadState, bytes: &[u8]) -> std::result::Result<Body, SnapshotError> {
        let body = decode(bytes)?;
        let uri = self.inner.uri();
        let expected = identity(&uri);
        if body.store != expected {
            return Err(SnapshotError::Foreign {
                found: body.store,
                expected: expected.to_owned(),
            });
        }
        if let Some(held) = &state.held
            && body.generation < held.body.generation
        {
            return Err(SnapshotError::Older {
                found: body.generation,
                held: held.body.generation,
            });
        }
        Ok(body)
    }

    /// Whether this read is the audit's turn, and schedules the next.
    fn audit_due(&self, state: &mut ReadState) -> bool {
        let Some(every) = self.options.audit else {
            return false;
        };
        let now = Instant::now();
        let jittered = || every.mul_f64(0.5 + crate::random::fraction());
        match state.next_audit {
            // The first read is the snapshot's; the first audit comes at a
            // random point of the first period, so a fleet started
            // together spreads its audits.
            None => {
                state.next_audit = Some(now + every.mul_f64(crate::random::fraction()));
                false
            }
            Some(at) if now >= at => {
                state.next_audit = Some(now + jittered());
                true
            }
            Some(_) => false,
        }
    }

    /// `functions`' latest versions as the held snapshot has them, never
    /// below what this host already read.
    async fn read_snapshot(
        &self,
        state: &mut ReadState,
        functions: &[String],
    ) -> Result<Vec<Entry>> {
        let held = state.held.as_mut().expect("a snapshot is held");
        let lookups: Vec<Option<Lookup>> =
            functions.iter().map(|f| held.route(f).cloned()).collect();
        let mut out = Vec::with_capacity(functions.len());
        for (function, lookup) in functions.iter().zip(lookups) {
            out.push(match lookup {
                None => Ok(None),
                Some(Lookup::AskStore(version)) => {
                    self.store_reads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // An error is this entry's alone, as in the store's own
                    // batched read.
                    let entry = match self.inner.latest(std::slice::from_ref(function)).await {
                        Ok(mut entries) => entries.pop().unwrap_or(Ok(None)),
                        Err(e) => Err(e),
                    };
                    // Kept for the next polls once it reads.
                    if let (Ok(Some(stored)), Some(held)) = (&entry, state.held.as_mut())
                        && stored.version == version
                    {
                        held.decoded
                            .insert(function.clone(), Lookup::Route(Box::new(stored.clone())));
                    }
                    entry
                }
                Some(lookup) => lookup.entry(function),
            });
        }
        Ok(self.never_back(state, functions, out))
    }

    /// Keeps each function at or above the newest version read before,
    /// whichever way (versions only grow: a lagging read of an eventually
    /// consistent store does not take a host back either).
    fn never_back(
        &self,
        state: &mut ReadState,
        functions: &[String],
        entries: Vec<Entry>,
    ) -> Vec<Entry> {
        functions
            .iter()
            .zip(entries)
            .map(|(function, entry)| match entry {
                Ok(Some(stored)) => match state.newest.get(function) {
                    Some(newer) if newer.version > stored.version => {
                        SNAPSHOT_READS
                            .counter(&[("outcome", "older-entry")])
                            .increment(1);
                        Ok(Some(newer.clone()))
                    }
                    _ => {
                        state.newest.insert(function.clone(), stored.clone());
                        Ok(Some(stored))
                    }
                },
                other => other,
            })
            .collect()
    }

    /// Reads the store itself: where it is ahead of the held snapshot, its
    /// version is served, and kept (a function never moves back), and the
    /// snapshot is counted and logged as behind.
    async fn audit(&self, state: &mut ReadState, functions: &[String]) -> Result<Vec<Entry>> {
        self.store_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let latest = self.inner.latest(functions).await?;
        if let Some(held) = &state.held {
            for (function, entry) in functions.iter().zip(&latest) {
                let in_store = version_in_store(entry);
                let in_snapshot = held.body.functions.get(function).map_or(0, |e| e.version);
                if in_store > in_snapshot {
                    SNAPSHOT_READS
                        .counter(&[("outcome", "behind")])
                        .increment(1);
                    tracing::warn!(target: "switchyard::snapshot", %function, in_store, in_snapshot, generation = held.body.generation, snapshot = %self.object.url(), "the snapshot is behind the store (a writer stopped between its two writes?): this host serves the store's version from now on, other hosts at their own audits; `switchyard fleet --sync-snapshot` repairs it");
                }
            }
        }
        Ok(self.never_back(state, functions, latest))
    }
}

#[async_trait]
impl ConfigStore for Snapshotted {
    fn uri(&self) -> String {
        let inner = self.inner.uri();
        let sep = if inner.contains('?') { '&' } else { '?' };
        format!("{inner}{sep}snapshot={}", self.object.url())
    }

    async fn latest(&self, functions: &[String]) -> Result<Vec<Entry>> {
        let mut state = self.state.lock().await;
        let audit = std::mem::take(&mut state.audit_next_read) || self.audit_due(&mut state);
        let refreshed = if audit {
            // The snapshot is read too, so the store is compared with the
            // newest one and a host that audits still holds it.
            state.listed = false;
            let refreshed = self.refresh(&mut state).await;
            match self.audit(&mut state, functions).await {
                Ok(entries) => return Ok(entries),
                // A throttled or failing audit waits for the next one; the
                // snapshot serves meanwhile.
                Err(e) => {
                    tracing::debug!(target: "switchyard::snapshot", error = %e, "audit of the store failed; the snapshot serves until the next one");
                    refreshed
                }
            }
        } else {
            self.refresh(&mut state).await
        };
        match refreshed {
            Some(()) => self.read_snapshot(&mut state, functions).await,
            None => {
                self.store_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let latest = self.inner.latest(functions).await?;
                Ok(self.never_back(&mut state, functions, latest))
            }
        }
    }

    async fn version(&self, function: &str, version: u64) -> Result<StoredRoute> {
        self.inner.version(function, version).await
    }

    async fn history(&self, function: &str) -> Result<Vec<Result<StoredRoute>>> {
        self.inner.history(function).await
    }

    async fn functions(&self) -> Result<Vec<String>> {
        let mut state = self.state.lock().await;
        if self.audit_due(&mut state) {
            state.audit_next_read = true;
            self.store_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.inner.functions().await {
                Ok(listing) => state.store_listing = listing,
                Err(e) => {
                    tracing::debug!(target: "switchyard::snapshot", error = %e, "audit of the store's listing failed; the last one stands")
                }
            }
        }
        let refreshed = self.refresh(&mut state).await;
        state.listed = refreshed.is_some();
        match refreshed {
            Some(()) => {
                let mut names: std::collections::BTreeSet<String> = state
                    .held
                    .as_ref()
                    .map(|h| h.body.functions.keys().cloned().collect())
                    .unwrap_or_default();
                names.extend(state.store_listing.iter().cloned());
                Ok(names.into_iter().collect())
            }
            None => {
                self.store_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.inner.functions().await
            }
        }
    }

    async fn put_route(&self, function: &str, config: &RouteConfig) -> Result<u64> {
        let version = self.inner.put_route(function, config).await?;
        self.publish_after_write(function, version, config).await;
        Ok(version)
    }

    async fn put_route_if(
        &self,
        function: &str,
        config: &RouteConfig,
        expected: u64,
        note: &str,
    ) -> Result<u64> {
        let version = self
            .inner
            .put_route_if(function, config, expected, note)
            .await?;
        self.publish_after_write(function, version, config).await;
        Ok(version)
    }

    fn infrastructure_root(&self) -> Option<String> {
        self.inner.infrastructure_root()
    }

    async fn rollout(&self, function: &str) -> Result<Option<(String, u64)>> {
        self.inner.rollout(function).await
    }

    async fn put_rollout_if(&self, function: &str, doc: &str, expected: u64) -> Result<u64> {
        self.inner.put_rollout_if(function, doc, expected).await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        self.inner.setting(name).await
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.inner.put_setting(name, value).await
    }

    async fn signatures(&self, digest: &Digest) -> Result<Vec<String>> {
        self.inner.signatures(digest).await
    }

    async fn put_signature(&self, digest: &Digest, key_id: &str, doc: &str) -> Result<()> {
        self.inner.put_signature(digest, key_id, doc).await
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        self.inner.has_blob(digest).await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.inner.get_blob(digest).await
    }

    async fn put_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.inner.put_blob(bytes, progress).await
    }

    async fn replace_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.inner.replace_blob(bytes, progress).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body {
            generation: 7,
            written_ms: 1,
            store: "ssm:/x".into(),
            functions: BTreeMap::new(),
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_any_change_to_its_bytes_is_refused() {
        let bytes = encode(&body());
        assert_eq!(decode(&bytes).unwrap().generation, 7);
        let truncated = &bytes[..bytes.len() - 1];
        assert!(
            matches!(decode(truncated), Err(SnapshotError::Corrupt(why)) if why.contains("truncated"))
        );
        let mut tampered = bytes.clone();
        let at = tampered.len() - 3;
        tampered[at] = b'9';
        assert!(
            matches!(decode(&tampered), Err(SnapshotError::Corrupt(why)) if why.contains("tampered")),
            "{:?}",
            decode(&tampered)
        );
        assert!(decode(b"{}").is_err());
        assert!(decode(b"switchyard-snapshot/2 sha256:00 2\n{}").is_err());
    }

    #[test]
    fn a_store_is_named_without_its_options() {
        assert_eq!(identity("ssm:/s?blobs=s3://b"), "ssm:/s");
        assert_eq!(identity("dir:/x"), "dir:/x");
    }
}
