//! The dispatch layer's metrics, each defined once (see
//! [`switchyard_core::Metric`]).

use switchyard_core::{Metric, MetricKind};

/// Mirror copies sent, by outcome.
pub(crate) const MIRROR: Metric = Metric {
    name: "switchyard_mirror_total",
    kind: MetricKind::Counter,
    labels: &["function", "target", "status"],
    help: "Mirror copies sent to a version, by the status they got (or timeout, error); their answers are never returned to the caller.",
    values: &[],
    zero_for: None,
};

/// Mirror copies dropped for want of a slot.
pub(crate) const MIRROR_DROPPED: Metric = Metric {
    name: "switchyard_mirror_dropped_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "Mirror copies dropped because every mirror slot was busy (serve --mirror-slots); the primary request is never delayed.",
    values: &[],
    zero_for: Some(|_| true),
};

/// A secret reference whose refresh failed.
pub(crate) const SECRET_REFRESH_FAILURES: Metric = Metric {
    name: "switchyard_secret_refresh_failures_total",
    kind: MetricKind::Counter,
    labels: &["source"],
    help: "Reads of a secret a route's context refers to that failed, by source (ssm, secretsmanager); the last good value is kept.",
    values: &[("source", &["ssm", "secretsmanager"])],
    zero_for: None,
};

/// Upstream sockets open.
pub(crate) const UPSTREAM_SOCKETS: Metric = Metric {
    name: "switchyard_upstream_sockets",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Sockets open to http targets, busy or idle in the pool; at most the budget serve reports at start (--max-upstream-sockets).",
    values: &[],
    zero_for: None,
};

/// Idle upstream sockets closed to make room.
pub(crate) const UPSTREAM_SOCKETS_RECLAIMED: Metric = Metric {
    name: "switchyard_upstream_sockets_reclaimed_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Idle sockets to http targets closed because a new connection found the upstream socket budget used up (--max-upstream-sockets).",
    values: &[],
    zero_for: None,
};

/// This crate's metrics.
pub const METRICS: &[&Metric] = &[
    &MIRROR,
    &MIRROR_DROPPED,
    &SECRET_REFRESH_FAILURES,
    &UPSTREAM_SOCKETS,
    &UPSTREAM_SOCKETS_RECLAIMED,
];
