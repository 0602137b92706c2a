//! Switchyard's config layer: where route configs and policy blobs live,
//! and how a host keeps its live policies current.
//!
//! * [`ConfigStore`] and its backends, opened by URI with [`open`]:
//!   `dir:<path>` (a folder, the embedded default) and, with the `aws`
//!   feature, `ssm:<prefix>` (SSM Parameter Store, large blobs in S3) and
//!   `cloudmap:<namespace>?blobs=ssm:<prefix>` (AWS Cloud Map, blobs in
//!   SSM).
//! * [`Loader`]: a verified, compiled policy per digest (memory LRU,
//!   precompiled disk cache, then the store).
//! * [`Watcher`]: polls the store and swaps new versions into a
//!   [`PolicySet`] atomically, keeping the last known good.
//! * [`bootstrap`]: the one start-up sequence every host runs.
//!
//! Data flows one way: store → loader → watcher → policy set → the
//! evaluators of `switchyard-core`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use switchyard_config::{Bootstrap, FirstPoll, WatchConfig, Watcher, bootstrap, open};
//! use switchyard_core::Engine;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = open("dir:./store").await?;
//! let watcher = Arc::new(Watcher::new(store, Engine::new()?, WatchConfig::default()));
//! let how = Bootstrap { first_poll: FirstPoll::Always, timeout: Duration::from_secs(30) };
//! let started = bootstrap(&watcher, how).await;
//! let live = watcher.policies(); // hand this to the request path
//! # drop((started, live)); Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(unreachable_pub)]

#[cfg(feature = "aws")]
mod aws;
mod blob;
mod bootstrap;
mod catalogue;
#[cfg(feature = "aws")]
mod cloudmap;
mod dir;
mod duration;
pub mod infrastructure;
mod loader;
mod log;
mod open;
mod random;
#[cfg(feature = "aws")]
mod s3;
mod sign;
#[cfg(feature = "aws")]
pub mod snapshot;
#[cfg(feature = "aws")]
mod ssm;
mod store;
mod watch;

#[cfg(feature = "aws")]
pub use aws::{NoHostPrefix, sdk_message};
pub use blob::{CHUNK_CHARS, MAX_BLOB_BYTES, MAX_INLINE_BLOB_BYTES, Manifest};
pub use bootstrap::{Bootstrap, FirstPoll, ReportFormat, Started, bootstrap};
pub use catalogue::METRICS;
#[cfg(feature = "aws")]
pub use cloudmap::{CloudMapStore, LIVE_SERVICE, client as cloudmap_client};
pub use dir::DirStore;
pub use duration::{DurationError, MIN_POLL_INTERVAL, parse_duration, parse_poll_interval};
pub use loader::{CacheKey, LoadError, Loader};
pub use log::log_filter;
pub use open::open;
#[cfg(feature = "aws")]
pub use open::open_snapshotted;
#[cfg(feature = "aws")]
pub use s3::{BlobBucket, SnapshotObjectS3, client as s3_client};
pub use sign::{KeyError, MAX_SIGNATURES, PolicySigner, SignatureDoc, SignatureError, TrustKeys};
#[cfg(feature = "aws")]
pub use ssm::{DEFAULT_BLOB_THRESHOLD, GET_PARAMETERS_MAX, SsmStore};
pub use store::{
    ConfigStore, Entry, MAX_NOTE_CHARS, MAX_ROUTE_CONFIG_CHARS, MAX_STORED_ROUTE_CHARS, Result,
    StoreError, StoredRoute, check_function_name, decode_route, encode_route,
};
pub use watch::{
    Active, LOOK_BACK_VERSIONS, Outcome, POLL_TIMEOUT, PolicySet, Prepare, Prepared, REMIND_EVERY,
    RejectReason, Trouble, UNLIST_LISTINGS, WatchConfig, WatchStats, Watcher,
};
