//! The config store: where CI/CD writes route configs and policy blobs, and
//! where every host reads them. Three backends pass one shared test suite
//! (`tests/store.rs`): `dir` (a local folder, the embedded default), and
//! with the `aws` feature `ssm` (AWS SSM Parameter Store, with large blobs
//! in S3) and `cloudmap` (AWS Cloud Map, with blobs in SSM). A new
//! backend is one file implementing [`ConfigStore`] plus one arm in
//! [`open`](crate::open).
//!
//! Layout (contract): per function, one route-config document (JSON, with
//! `"policy": "sha256:<hex>"`), versioned by the store; policy blobs are
//! immutable and content-addressed, and verified against their digest on
//! every read.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use switchyard_core::{Digest, RouteConfig, RouteConfigError};

/// Longest route-config document: SSM's standard-tier value limit.
pub const MAX_ROUTE_CONFIG_CHARS: usize = 4096;

/// Longest stored value read as a route config (SSM's advanced tier); a
/// longer one is corrupt, not parsed.
pub const MAX_STORED_ROUTE_CHARS: usize = 8192;

/// Longest note kept with a version (SSM's limit for a parameter's
/// description); longer ones are cut.
pub const MAX_NOTE_CHARS: usize = 1024;

/// `note` cut to [`MAX_NOTE_CHARS`] characters.
pub(crate) fn cut_note(note: &str) -> &str {
    match note.char_indices().nth(MAX_NOTE_CHARS) {
        Some((at, _)) => &note[..at],
        None => note,
    }
}

/// One version of a function's route config, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredRoute {
    /// The function.
    pub function: String,
    /// The store's version number (1, 2, ...).
    pub version: u64,
    /// When this version was written, RFC 3339, if the store knows.
    pub modified: Option<String>,
    /// The config.
    pub config: RouteConfig,
    /// Who wrote this version, where the store records it (SSM: the
    /// writer's principal; `dir`: the version file's owner). Read by
    /// `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// What its writer said of it: the command and its `--reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{0} not found in the store")]
    NotFound(String),
    /// The store could not be reached or answered with an error.
    #[error("store {store} unreachable or failing: {message}")]
    Unavailable {
        /// The store URI.
        store: String,
        /// What happened.
        message: String,
    },
    /// The store asked us to slow down.
    #[error("store {store} is throttling requests: {message}")]
    Throttled {
        /// The store URI.
        store: String,
        /// What it said.
        message: String,
    },
    /// A blob's bytes do not hash to its name.
    #[error(
        "policy blob {expected} is corrupt: its content hashes to {actual} (digest mismatch); republish the policy"
    )]
    DigestMismatch {
        /// The digest the blob is stored under.
        expected: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// Stored data that cannot be decoded.
    #[error("{what} is corrupt: {why}")]
    Corrupt {
        /// What was read.
        what: String,
        /// Why it is unusable.
        why: String,
    },
    /// A value over the store's size limit.
    #[error("{what} is {len} characters; the limit is {limit}")]
    TooLarge {
        /// What was being written.
        what: String,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A stored route config that does not parse or validate.
    #[error("route config of {function} version {version}: {reason}")]
    InvalidRoute {
        /// The function.
        function: String,
        /// The version.
        version: u64,
        /// What is wrong.
        reason: RouteConfigError,
    },
    /// A conditional write whose precondition no longer holds: the
    /// function moved on since it was read.
    #[error(
        "{function} changed while this was being written: it was read at version {expected}, and the store now has version {found} (another pipeline or an operator wrote in between); read it again and retry"
    )]
    Conflict {
        /// The function.
        function: String,
        /// The version the writer read (0: none).
        expected: u64,
        /// The version the store has now.
        found: u64,
    },
    /// Another writer holds the function's write lock (stores without a
    /// conditional write serialise writers with one).
    #[error("{function} is being written by another writer ({holder}); retry in a moment")]
    Busy {
        /// The function.
        function: String,
        /// Who holds the lock, and until when.
        holder: String,
    },
    /// A name the store cannot hold.
    #[error("{0}")]
    InvalidName(String),
    /// A backend this build leaves out.
    #[error("{0}")]
    Unsupported(String),
    /// The store URI is malformed.
    #[error(
        "invalid store {0:?}: use dir:<path> (a local folder), ssm:<prefix> (e.g. ssm:/switchyard, or ssm:/switchyard?blobs=s3://<bucket>/<prefix> for large policies) or cloudmap:<namespace>?blobs=ssm:<prefix> (route configs in AWS Cloud Map)"
    )]
    BadUri(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One function's entry in a batched read: `Ok(None)` when it has no
/// route config, an error when that entry alone could not be read or
/// decoded (the others are unaffected).
pub type Entry = Result<Option<StoredRoute>>;

impl StoreError {
    /// The kind, as metrics and logs label it: `throttled`,
    /// `unavailable`, `not-found`, `corrupt` (stored data that does not
    /// decode, verify or fit), or `invalid` (a request the store refuses).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Throttled { .. } => "throttled",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::NotFound(_) => "not-found",
            StoreError::InvalidRoute {
                reason: switchyard_core::RouteConfigError::SchemaTooNew { .. },
                ..
            } => "too-new",
            StoreError::DigestMismatch { .. }
            | StoreError::Corrupt { .. }
            | StoreError::InvalidRoute { .. } => "corrupt",
            StoreError::Conflict { .. } | StoreError::Busy { .. } => "conflict",
            StoreError::TooLarge { .. }
            | StoreError::InvalidName(_)
            | StoreError::Unsupported(_)
            | StoreError::BadUri(_) => "invalid",
        }
    }

    /// The route-config version the error is about, when it names one.
    pub fn version(&self) -> Option<u64> {
        match self {
            StoreError::InvalidRoute { version, .. } => Some(*version),
            _ => None,
        }
    }

    /// Whether asking again later may succeed: the store was unreachable
    /// or throttling, or something was not there yet (a blob written
    /// after the route config that names it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Throttled { .. } | StoreError::Unavailable { .. } | StoreError::NotFound(_)
        )
    }
}

/// A config store backend.
#[async_trait]
pub trait ConfigStore: Send + Sync + fmt::Debug {
    /// The store's URI, e.g. `dir:./store` or `ssm:/switchyard`.
    fn uri(&self) -> String;

    /// The latest route config of each function, in one batched read where
    /// the backend allows. The outer error is the store failing as a whole;
    /// a function whose entry alone is unreadable (a corrupt version) has
    /// its own error, so it never holds the others back.
    async fn latest(&self, functions: &[String]) -> Result<Vec<Entry>>;

    /// One version of a function's route config.
    async fn version(&self, function: &str, version: u64) -> Result<StoredRoute>;

    /// Every version of a function's route config, oldest first; a version
    /// that does not decode is its error (`InvalidRoute`, naming the
    /// version), so the readable ones stay usable.
    async fn history(&self, function: &str) -> Result<Vec<Result<StoredRoute>>>;

    /// The functions that have a route config.
    async fn functions(&self) -> Result<Vec<String>>;

    /// Writes a new version of a function's route config; returns its
    /// version number.
    async fn put_route(&self, function: &str, config: &RouteConfig) -> Result<u64>;

    /// Writes a new version only while the function's latest version is
    /// still `expected` (0: it has none): a compare-and-swap, so two
    /// writers that read the same version cannot both write, and neither
    /// change is lost. Otherwise [`StoreError::Conflict`] naming both
    /// versions (or [`StoreError::Busy`] while another writer holds the
    /// lock, where the store needs one). Returns the new version number.
    /// `note` (the command and its reason, at most [`MAX_NOTE_CHARS`]) is
    /// kept with the version, for `history`.
    async fn put_route_if(
        &self,
        function: &str,
        config: &RouteConfig,
        expected: u64,
        note: &str,
    ) -> Result<u64>;

    /// Where a synthetic candidate's own stack writes what the route hands
    /// it (`<prefix>/infrastructure` on `ssm:`): every write of this store
    /// keeps references under it only for the synthetic candidate (see
    /// [`crate::infrastructure`]). `None` (the default): a store that keeps
    /// no such references apart.
    fn infrastructure_root(&self) -> Option<String> {
        None
    }

    /// The state document of `function`'s rollout (`switchyard rollout`)
    /// with its revision (1, 2, ...); `None` when it never had one.
    async fn rollout(&self, function: &str) -> Result<Option<(String, u64)>>;

    /// Writes `function`'s rollout document only while its revision is
    /// still `expected` (0: it has none): a compare-and-swap, so two
    /// runners never both take a rollout and neither's write is lost;
    /// otherwise [`StoreError::Conflict`] (or [`StoreError::Busy`]).
    /// Returns the new revision.
    async fn put_rollout_if(&self, function: &str, doc: &str, expected: u64) -> Result<u64>;

    /// A store-wide setting the operator keeps with the data, e.g.
    /// `min-host-version`; `None` when unset.
    async fn setting(&self, name: &str) -> Result<Option<String>>;

    /// Sets a store-wide setting.
    async fn put_setting(&self, name: &str, value: &str) -> Result<()>;

    /// Every signature document stored for the blob `digest` (see
    /// [`SignatureDoc`](crate::SignatureDoc)), whoever signed it; none when
    /// it is unsigned. All of them: the one by a trusted key may come
    /// after any number of others (a reader filters by key).
    async fn signatures(&self, digest: &Digest) -> Result<Vec<String>>;

    /// Stores a signature document for the blob `digest` by key `key_id`
    /// (replacing that key's earlier one).
    async fn put_signature(&self, digest: &Digest, key_id: &str, doc: &str) -> Result<()>;

    /// Whether a blob is stored (completely) under `digest`.
    async fn has_blob(&self, digest: &Digest) -> Result<bool>;

    /// Reads a blob and verifies it against `digest`.
    async fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>>;

    /// Stores a blob under its digest (a no-op when already there).
    /// `progress(done, total)` is called per chunk written.
    async fn put_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest>;

    /// Stores a blob under its digest over whatever is there: the repair of
    /// a stored blob that [`get_blob`](Self::get_blob) finds corrupt (which
    /// [`put_blob`](Self::put_blob) would leave as it is).
    async fn replace_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest>;
}

/// Checks a function name: 1-64 of `A-Z a-z 0-9 _ -`, so it is safe as a
/// path segment and a parameter name.
pub fn check_function_name(name: &str) -> Result<()> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(StoreError::InvalidName(format!(
            "function name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ -"
        )))
    }
}

/// Serializes a route config for storage, checking the size limit.
pub fn encode_route(function: &str, config: &RouteConfig) -> Result<String> {
    config
        .validate()
        .map_err(|reason| StoreError::InvalidRoute {
            function: function.to_owned(),
            version: 0,
            reason,
        })?;
    let text = serde_json::to_string(config).expect("route config serializes");
    if text.chars().count() > MAX_ROUTE_CONFIG_CHARS {
        return Err(StoreError::TooLarge {
            what: format!("route config of {function}"),
            len: text.chars().count(),
            limit: MAX_ROUTE_CONFIG_CHARS,
        });
    }
    Ok(text)
}

/// Parses a stored route config.
pub fn decode_route(function: &str, version: u64, text: &str) -> Result<RouteConfig> {
    // Larger than any store holds (SSM's advanced tier: 8 KB): not parsed.
    if text.len() > MAX_STORED_ROUTE_CHARS {
        return Err(StoreError::Corrupt {
            what: format!("route config of {function} version {version}"),
            why: format!(
                "{} characters; a stored route config is at most {MAX_STORED_ROUTE_CHARS}",
                text.len()
            ),
        });
    }
    RouteConfig::from_json(text).map_err(|reason| StoreError::InvalidRoute {
        function: function.to_owned(),
        version,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_are_path_safe() {
        assert!(check_function_name("orders-v2_x").is_ok());
        for bad in ["", "../etc", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_function_name(bad).is_err(), "{bad:?}");
        }
    }
}
