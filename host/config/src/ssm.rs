//! The `ssm` store: AWS SSM Parameter Store, through `aws-sdk-ssm` and the
//! standard AWS configuration chain (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! credentials).
//!
//! ```text
//! /<prefix>/functions/<function>                     route config JSON; SSM versions it
//! /<prefix>/policies/sha256-<hex>/manifest           {"size":..,"chunks":N,"encoding":"zlib+base64"}
//! /<prefix>/policies/sha256-<hex>/0000 .. N-1        chunks of <= 4,096 characters
//! /<prefix>/signatures/sha256-<hex>/<key id>         a signature of the blob, per key
//! /<prefix>/rollouts/<function>                      the rollout's state; SSM versions it
//! /<prefix>/locks/<function>                         a writer's lease while it writes
//! ```
//!
//! The manifest is written after the chunks, so a blob with a manifest is
//! complete. With a blob bucket (`ssm:/switchyard?blobs=s3://bucket/prefix`),
//! blobs of at least `blob-threshold` bytes (default
//! [`DEFAULT_BLOB_THRESHOLD`]; 0 sends all) go to S3 instead of chunks and
//! the manifest names their location (see [`crate::s3`]). SSM's own limits are checked here, because the local emulator
//! does not enforce them.

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ssm::types::{ParameterTier, ParameterType};

use switchyard_core::{Digest, RouteConfig};

use crate::aws::sdk_message;
use crate::blob::{self, Manifest};
use crate::infrastructure;
use crate::s3::{self, BlobBucket};
use crate::store::{
    ConfigStore, Entry, Result, StoreError, StoredRoute, check_function_name, decode_route,
    encode_route,
};

/// Names per `GetParameters` call: SSM's limit.
pub const GET_PARAMETERS_MAX: usize = 10;

/// Blobs of at least this many bytes go to the blob bucket, when the store
/// has one: Rust policies (tens of KB) stay in parameters, Python and
/// JavaScript policies (megabytes) go to S3.
pub const DEFAULT_BLOB_THRESHOLD: usize = 256 << 10;

/// A store in SSM Parameter Store under a prefix.
#[derive(Debug, Clone)]
pub struct SsmStore {
    client: Client,
    prefix: String,
    /// Reads blobs whose manifest names an S3 location.
    s3: Option<aws_sdk_s3::Client>,
    /// Where large blobs are written, and from what size.
    blobs: Option<(BlobBucket, usize)>,
}

impl SsmStore {
    /// A store from the part of a store URI after `ssm:`: a prefix (e.g.
    /// `/switchyard`), optionally followed by
    /// `?blobs=s3://<bucket>[/<prefix>][&blob-threshold=<bytes>]`, configured
    /// from the environment like any AWS SDK client.
    pub async fn from_env(spec: &str) -> Result<Self> {
        let (prefix, query) = spec.split_once('?').unwrap_or((spec, ""));
        let mut bucket = None;
        let mut threshold = DEFAULT_BLOB_THRESHOLD;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "blobs" => bucket = Some(BlobBucket::parse(&value)?),
                "blob-threshold" => {
                    threshold = value.parse().map_err(|_| {
                        StoreError::BadUri(format!(
                            "ssm:{spec} (blob-threshold must be a number of bytes)"
                        ))
                    })?
                }
                _ => {
                    return Err(StoreError::BadUri(format!(
                        "ssm:{spec} (unknown option {key:?}; options: blobs, blob-threshold)"
                    )));
                }
            }
        }
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let mut store = Self::new(Client::new(&config), prefix)?;
        store.s3 = Some(s3::client(&config));
        store.blobs = bucket.map(|b| (b, threshold));
        Ok(store)
    }

    /// A store under `prefix` using `client`.
    pub fn new(client: Client, prefix: &str) -> Result<Self> {
        let trimmed = prefix.trim_end_matches('/');
        let ok = trimmed.starts_with('/')
            && trimmed.len() > 1
            && trimmed[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            });
        if !ok {
            return Err(StoreError::BadUri(format!("ssm:{prefix}")));
        }
        Ok(SsmStore {
            client,
            prefix: trimmed.to_owned(),
            s3: None,
            blobs: None,
        })
    }

    fn route_name(&self, function: &str) -> Result<String> {
        check_function_name(function)?;
        Ok(format!("{}/functions/{function}", self.prefix))
    }

    /// The parameter holding `function`'s rollout document.
    fn rollout_name(&self, function: &str) -> Result<String> {
        check_function_name(function)?;
        Ok(format!("{}/rollouts/{function}", self.prefix))
    }

    /// The parameter a writer holds while it writes `function` (SSM has
    /// no conditional write of an existing parameter, but creating one is
    /// conditional: `Overwrite=false`).
    fn lock_name(&self, function: &str) -> Result<String> {
        check_function_name(function)?;
        Ok(format!("{}/locks/{function}", self.prefix))
    }

    /// Takes `function`'s write lock: creates its lock parameter, holding a
    /// lease of [`LOCK_LEASE`]. A lease past its end (a writer that died)
    /// is taken over; a live one is waited for up to [`LOCK_WAIT`], then
    /// [`StoreError::Busy`].
    pub(crate) async fn lock(&self, function: &str) -> Result<String> {
        let name = self.lock_name(function)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut pause = std::time::Duration::from_millis(25);
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let lease = serde_json::json!({
                "holder": format!("pid {} on {}", std::process::id(), host_name()),
                "until": now + LOCK_LEASE.as_secs(),
            })
            .to_string();
            let created = self
                .client
                .put_parameter()
                .name(&name)
                .value(lease)
                .r#type(ParameterType::String)
                .overwrite(false)
                .send()
                .await;
            match created {
                Ok(_) => return Ok(name),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_parameter_already_exists()) => {}
                Err(e) => return Err(self.err(e)),
            }
            let held = self.get_many(std::slice::from_ref(&name)).await?;
            let Some((text, _, _)) = held.get(&name) else {
                continue; // released in between
            };
            let until = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v["until"].as_u64())
                .unwrap_or(0);
            if until < now {
                // A writer that died holding it: its lease is over.
                self.unlock(&name).await;
                continue;
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Busy {
                    function: function.to_owned(),
                    holder: format!("lock {name}: {text}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(400));
        }
    }

    /// Writes parameter `name` only while its version is still `expected`
    /// (0: none), under `function`'s write lock (SSM has no conditional
    /// write of an existing parameter): a compare-and-swap, whose conflict
    /// names `what`.
    async fn put_if(
        &self,
        function: &str,
        name: &str,
        what: &str,
        expected: u64,
        value: &str,
        description: Option<&str>,
    ) -> Result<u64> {
        let lock = self.lock(function).await?;
        let written = async {
            let found = self
                .get_many(&[name.to_owned()])
                .await?
                .get(name)
                .map_or(0, |(_, version, _)| *version);
            if found != expected {
                return Err(StoreError::Conflict {
                    function: what.to_owned(),
                    expected,
                    found,
                });
            }
            self.put_described(name, value, expected != 0, description)
                .await
        }
        .await;
        self.unlock(&lock).await;
        written
    }

    /// Releases a write lock (best effort: a lock left behind expires).
    pub(crate) async fn unlock(&self, name: &str) {
        if let Err(e) = self.client.delete_parameter().name(name).send().await {
            tracing::debug!(target: "switchyard::store", lock = name, error = %crate::aws::sdk_message(&e).1, "write lock not released; its lease will end");
        }
    }

    fn signature_dir(&self, digest: &Digest) -> String {
        format!("{}/signatures/sha256-{}", self.prefix, digest.hex())
    }

    fn blob_dir(&self, digest: &Digest) -> String {
        format!("{}/policies/sha256-{}", self.prefix, digest.hex())
    }

    fn err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        e: SdkError<E>,
    ) -> StoreError {
        let (code, message) = sdk_message(&e);
        if code.contains("Throttling") || code == "TooManyUpdates" {
            StoreError::Throttled {
                store: self.uri(),
                message,
            }
        } else {
            StoreError::Unavailable {
                store: self.uri(),
                message,
            }
        }
    }

    /// `GetParameters` for any number of names, 10 a call. Missing names are
    /// absent from the map.
    async fn get_many(
        &self,
        names: &[String],
    ) -> Result<std::collections::HashMap<String, (String, u64, Option<String>)>> {
        let mut found = std::collections::HashMap::new();
        for batch in names.chunks(GET_PARAMETERS_MAX) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| self.err(e))?;
            for p in out.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    found.insert(
                        name.to_owned(),
                        (
                            value.to_owned(),
                            p.version() as u64,
                            p.last_modified_date().and_then(fmt_date),
                        ),
                    );
                }
            }
        }
        Ok(found)
    }

    /// A route config as written: per-version infrastructure references
    /// kept only for the synthetic candidate (see crate::infrastructure).
    fn encode(&self, function: &str, config: &RouteConfig) -> Result<String> {
        let mut config = config.clone();
        infrastructure::prune(&mut config, &self.infrastructure(), function);
        encode_route(function, &config)
    }

    fn infrastructure(&self) -> String {
        format!("{}/infrastructure", self.prefix)
    }

    async fn put(&self, name: &str, value: &str, overwrite: bool) -> Result<u64> {
        self.put_described(name, value, overwrite, None).await
    }

    /// `put`, with a description kept with this version of the parameter
    /// (GetParameterHistory returns it).
    async fn put_described(
        &self,
        name: &str,
        value: &str,
        overwrite: bool,
        description: Option<&str>,
    ) -> Result<u64> {
        let out = self
            .client
            .put_parameter()
            .name(name)
            .value(value)
            .set_description(description.map(str::to_owned))
            .r#type(ParameterType::String)
            .tier(ParameterTier::Standard)
            .overwrite(overwrite)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(out.version() as u64)
    }

    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>> {
        let name = format!("{}/manifest", self.blob_dir(digest));
        let found = self.get_many(std::slice::from_ref(&name)).await?;
        match found.get(&name) {
            None => Ok(None),
            Some((text, _, _)) => {
                serde_json::from_str(text)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("manifest of policy blob {digest}"),
                        why: e.to_string(),
                    })
            }
        }
    }
}

/// How long a write lock is held at most before others may take it over.
const LOCK_LEASE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a writer waits for another's lock before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// This machine's name, for a lock's holder (best effort).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this host".to_owned())
}

fn fmt_date(d: &DateTime) -> Option<String> {
    d.fmt(DateTimeFormat::DateTime).ok()
}

#[async_trait]
impl ConfigStore for SsmStore {
    fn uri(&self) -> String {
        match &self.blobs {
            None => format!("ssm:{}", self.prefix),
            Some((bucket, DEFAULT_BLOB_THRESHOLD)) => format!("ssm:{}?blobs={bucket}", self.prefix),
            Some((bucket, t)) => {
                format!("ssm:{}?blobs={bucket}&blob-threshold={t}", self.prefix)
            }
        }
    }

    async fn latest(&self, functions: &[String]) -> Result<Vec<Entry>> {
        let names = functions
            .iter()
            .map(|f| self.route_name(f))
            .collect::<Result<Vec<_>>>()?;
        let found = self.get_many(&names).await?;
        Ok(functions
            .iter()
            .zip(&names)
            .map(|(function, name)| match found.get(name) {
                None => Ok(None),
                Some((text, version, modified)) => Ok(Some(StoredRoute {
                    function: function.clone(),
                    version: *version,
                    modified: modified.clone(),
                    config: decode_route(function, *version, text)?,
                    by: None,
                    note: None,
                })),
            })
            .collect())
    }

    async fn version(&self, function: &str, version: u64) -> Result<StoredRoute> {
        let name = self.route_name(function)?;
        let out = self
            .client
            .get_parameter()
            .name(format!("{name}:{version}"))
            .send()
            .await;
        let p = match out {
            Ok(out) => out.parameter,
            Err(e)
                if matches!(
                    e.code(),
                    Some("ParameterNotFound" | "ParameterVersionNotFound")
                ) =>
            {
                None
            }
            Err(e) => return Err(self.err(e)),
        };
        let Some(p) = p else {
            return Err(StoreError::NotFound(format!(
                "route config of {function} version {version}"
            )));
        };
        Ok(StoredRoute {
            function: function.to_owned(),
            version,
            modified: p.last_modified_date().and_then(fmt_date),
            config: decode_route(function, version, p.value().unwrap_or_default())?,
            by: None,
            note: None,
        })
    }

    async fn history(&self, function: &str) -> Result<Vec<Result<StoredRoute>>> {
        let name = self.route_name(function)?;
        let mut routes = Vec::new();
        let mut pages = self
            .client
            .get_parameter_history()
            .name(&name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let out = match page {
                Ok(out) => out,
                Err(e) if e.code() == Some("ParameterNotFound") => return Ok(Vec::new()),
                Err(e) => return Err(self.err(e)),
            };
            for p in out.parameters() {
                let version = p.version() as u64;
                let route =
                    decode_route(function, version, p.value().unwrap_or_default()).map(|config| {
                        StoredRoute {
                            function: function.to_owned(),
                            version,
                            modified: p.last_modified_date().and_then(fmt_date),
                            config,
                            by: p.last_modified_user().map(str::to_owned),
                            note: p.description().map(str::to_owned),
                        }
                    });
                routes.push((version, route));
            }
        }
        routes.sort_by_key(|(v, _)| *v);
        Ok(routes.into_iter().map(|(_, r)| r).collect())
    }

    async fn functions(&self) -> Result<Vec<String>> {
        let path = format!("{}/functions", self.prefix);
        let mut names = Vec::new();
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(&path)
            .recursive(false)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let out = page.map_err(|e| self.err(e))?;
            for p in out.parameters() {
                if let Some(name) = p.name().and_then(|n| n.rsplit('/').next()) {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn put_route(&self, function: &str, config: &RouteConfig) -> Result<u64> {
        let text = self.encode(function, config)?;
        let name = self.route_name(function)?;
        self.put(&name, &text, true).await
    }

    async fn put_route_if(
        &self,
        function: &str,
        config: &RouteConfig,
        expected: u64,
        note: &str,
    ) -> Result<u64> {
        let text = self.encode(function, config)?;
        let name = self.route_name(function)?;
        // The note rides as the version's description, which
        // GetParameterHistory returns with the writer's principal.
        let note = Some(crate::store::cut_note(note));
        self.put_if(function, &name, function, expected, &text, note)
            .await
    }

    fn infrastructure_root(&self) -> Option<String> {
        Some(self.infrastructure())
    }

    async fn rollout(&self, function: &str) -> Result<Option<(String, u64)>> {
        let name = self.rollout_name(function)?;
        let found = self.get_many(std::slice::from_ref(&name)).await?;
        Ok(found
            .get(&name)
            .map(|(v, version, _)| (v.clone(), *version)))
    }

    async fn put_rollout_if(&self, function: &str, doc: &str, expected: u64) -> Result<u64> {
        let name = self.rollout_name(function)?;
        if doc.chars().count() > crate::store::MAX_ROUTE_CONFIG_CHARS {
            return Err(StoreError::TooLarge {
                what: format!("the rollout document of {function}"),
                len: doc.chars().count(),
                limit: crate::store::MAX_ROUTE_CONFIG_CHARS,
            });
        }
        let what = format!("the rollout of {function}");
        self.put_if(function, &name, &what, expected, doc, None)
            .await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        check_function_name(name)?;
        let name = format!("{}/settings/{name}", self.prefix);
        let found = self.get_many(std::slice::from_ref(&name)).await?;
        Ok(found.get(&name).map(|(v, _, _)| v.clone()))
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        check_function_name(name)?;
        let name = format!("{}/settings/{name}", self.prefix);
        self.put(&name, value, true).await.map(|_| ())
    }

    async fn signatures(&self, digest: &Digest) -> Result<Vec<String>> {
        // Every page: the trusted key's document may come after any
        // number of others.
        let mut docs = Vec::new();
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(self.signature_dir(digest))
            .recursive(false)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let out = page.map_err(|e| self.err(e))?;
            docs.extend(
                out.parameters()
                    .iter()
                    .filter_map(|p| p.value().map(str::to_owned)),
            );
        }
        Ok(docs)
    }

    async fn put_signature(&self, digest: &Digest, key_id: &str, doc: &str) -> Result<()> {
        check_function_name(key_id)?;
        let name = format!("{}/{key_id}", self.signature_dir(digest));
        self.put(&name, doc, true).await.map(|_| ())
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.manifest(digest).await?.is_some())
    }

    async fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let manifest = self
            .manifest(digest)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("policy blob {digest}")))?;
        if let Some(location) = &manifest.location {
            let client = self.s3.as_ref().ok_or_else(|| StoreError::Unavailable {
                store: self.uri(),
                message: format!(
                    "policy blob {digest} is at {location}, and this store has no S3 client"
                ),
            })?;
            return s3::get(client, location, digest).await;
        }
        if manifest.chunks > blob::MAX_INLINE_BLOB_BYTES / 1024 {
            return Err(StoreError::Corrupt {
                what: format!("manifest of policy blob {digest}"),
                why: format!("{} chunks", manifest.chunks),
            });
        }
        let dir = self.blob_dir(digest);
        let names: Vec<String> = (0..manifest.chunks)
            .map(|i| format!("{dir}/{i:04}"))
            .collect();
        let mut found = self.get_many(&names).await?;
        let chunks: Vec<String> = names
            .iter()
            .map_while(|n| found.remove(n).map(|(v, _, _)| v))
            .collect();
        blob::decode(digest, &manifest, &chunks)
    }

    async fn put_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest).await? {
            return Ok(digest);
        }
        self.write_blob(&digest, bytes, progress).await
    }

    async fn replace_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.write_blob(&Digest::of(bytes), bytes, progress).await
    }
}

impl SsmStore {
    /// Writes every piece of blob `digest` (each over what is there), the
    /// manifest last: a reader never finds a manifest before its pieces.
    async fn write_blob(
        &self,
        digest: &Digest,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        let digest = *digest;
        let dir = self.blob_dir(&digest);
        if let (Some((bucket, threshold)), Some(client)) = (&self.blobs, &self.s3)
            && bytes.len() >= *threshold
        {
            if bytes.len() > blob::MAX_BLOB_BYTES {
                return Err(StoreError::TooLarge {
                    what: "policy blob, in bytes,".into(),
                    len: bytes.len(),
                    limit: blob::MAX_BLOB_BYTES,
                });
            }
            progress(0, 1);
            s3::put(client, bucket, &digest, bytes).await?;
            let manifest = Manifest {
                size: bytes.len(),
                chunks: 0,
                encoding: "raw".into(),
                location: Some(bucket.url(&digest)),
            };
            let manifest = serde_json::to_string(&manifest).expect("manifest serializes");
            self.put(&format!("{dir}/manifest"), &manifest, true)
                .await?;
            progress(1, 1);
            return Ok(digest);
        }
        let (manifest, chunks) = blob::encode(bytes)?;
        for (i, chunk) in chunks.iter().enumerate() {
            self.put(&format!("{dir}/{i:04}"), chunk, true).await?;
            progress(i + 1, chunks.len());
        }
        let manifest = serde_json::to_string(&manifest).expect("manifest serializes");
        self.put(&format!("{dir}/manifest"), &manifest, true)
            .await?;
        Ok(digest)
    }
}
