//! The config crate's metrics, each defined once (see
//! [`switchyard_core::Metric`]): what the watcher and the loader count.

use switchyard_core::{Metric, MetricKind};

/// A poll, a listing or a route read that failed.
pub(crate) const STORE_ERRORS: Metric = Metric {
    name: "switchyard_store_errors_total",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Config store reads that failed, by kind (throttled, unavailable, not-found, corrupt, too-new, conflict, invalid); the live versions keep serving.",
    values: &[(
        "kind",
        &[
            "throttled",
            "unavailable",
            "not-found",
            "corrupt",
            "too-new",
            "conflict",
            "invalid",
        ],
    )],
    zero_for: None,
};

/// A new route version that went live.
pub(crate) const SWAPS: Metric = Metric {
    name: "switchyard_swaps_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "Route versions swapped in (verified, compiled and live).",
    values: &[],
    zero_for: None,
};

/// The live route version.
pub(crate) const ROUTE_VERSION: Metric = Metric {
    name: "switchyard_route_version",
    kind: MetricKind::Gauge,
    labels: &["function"],
    help: "The route config version each function serves.",
    values: &[],
    zero_for: None,
};

/// A new version whose blob was not available yet.
pub(crate) const DEFERRED_VERSIONS: Metric = Metric {
    name: "switchyard_deferred_versions_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "New route versions put off because their policy could not be fetched yet (retried with backoff; the live one keeps serving).",
    values: &[],
    zero_for: None,
};

/// A new version refused for good.
pub(crate) const REJECTED_VERSIONS: Metric = Metric {
    name: "switchyard_rejected_versions_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "New route versions refused (digest mismatch, untrusted signature, a policy that fails to compile or its cases); the live one keeps serving.",
    values: &[],
    zero_for: Some(|_| true),
};

/// A route config that needs a newer host.
pub(crate) const ROUTE_SCHEMA_TOO_NEW: Metric = Metric {
    name: "switchyard_route_schema_too_new_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "Route versions kept out because they need a newer host (their route-config schema is newer than this host reads).",
    values: &[],
    zero_for: Some(|_| true),
};

/// A fresh host serving an older version because the newest is unusable.
pub(crate) const LOOKED_BACK: Metric = Metric {
    name: "switchyard_looked_back_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "Times a host with nothing live for a function served an older version from the store's history because the newest could not be used (refused, unreadable or not available), as running hosts keep their last known good.",
    values: &[],
    zero_for: Some(|_| true),
};

/// A function no longer in the store's listing.
pub(crate) const FUNCTIONS_REMOVED: Metric = Metric {
    name: "switchyard_functions_removed_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Functions no longer routed because successive listings of the store, over at least a minute, no longer name them.",
    values: &[],
    zero_for: None,
};

/// A precompiled cache entry not used.
pub(crate) const CACHE_REFUSED: Metric = Metric {
    name: "switchyard_cache_refused_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Precompiled policy cache entries refused (unreadable, not private, failing their key or signature check) and compiled again.",
    values: &[],
    zero_for: None,
};

/// A policy whose signature a trusting host refused.
pub(crate) const POLICY_SIGNATURE_REFUSED: Metric = Metric {
    name: "switchyard_policy_signature_refused_total",
    kind: MetricKind::Counter,
    labels: &["why"],
    help: "Policies refused by a host started with --trust-key, by why (unsigned, untrusted-signer, bad-signature).",
    values: &[("why", &["unsigned", "untrusted-signer", "bad-signature"])],
    zero_for: None,
};

/// A read of the fleet snapshot, by what it found.
pub(crate) const SNAPSHOT_READS: Metric = Metric {
    name: "switchyard_snapshot_reads_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Reads of the fleet snapshot (store URIs with snapshot=), by outcome: unchanged (a 304), changed, missing, failed (the store of record is read instead), corrupt, foreign, older (refused: truncated or tampered, another store's, or older than the one held), older-entry (a function kept at the newer version already read), behind (an audit found the store ahead of the snapshot).",
    values: &[(
        "outcome",
        &[
            "unchanged",
            "changed",
            "missing",
            "failed",
            "corrupt",
            "foreign",
            "older",
            "older-entry",
            "behind",
        ],
    )],
    zero_for: None,
};

/// A write of the fleet snapshot, by outcome.
pub(crate) const SNAPSHOT_WRITES: Metric = Metric {
    name: "switchyard_snapshot_writes_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Writes of the fleet snapshot after a route write, by outcome: written, raced (another writer changed it first; rebuilt and retried), failed (the route write stands; hosts reach it at their next audit).",
    values: &[("outcome", &["written", "raced", "failed"])],
    zero_for: None,
};

/// The generation of the snapshot a host holds.
pub(crate) const SNAPSHOT_GENERATION: Metric = Metric {
    name: "switchyard_snapshot_generation",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "The generation of the fleet snapshot this host holds (milliseconds since the Unix epoch of its writing, or higher); compare across hosts to see who lags.",
    values: &[],
    zero_for: None,
};

/// This crate's metrics.
pub const METRICS: &[&Metric] = &[
    &STORE_ERRORS,
    &SWAPS,
    &ROUTE_VERSION,
    &DEFERRED_VERSIONS,
    &REJECTED_VERSIONS,
    &ROUTE_SCHEMA_TOO_NEW,
    &FUNCTIONS_REMOVED,
    &LOOKED_BACK,
    &CACHE_REFUSED,
    &POLICY_SIGNATURE_REFUSED,
    &SNAPSHOT_READS,
    &SNAPSHOT_WRITES,
    &SNAPSHOT_GENERATION,
];
