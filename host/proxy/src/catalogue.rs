//! The proxy's metrics, each defined once (see [`switchyard_core::Metric`]),
//! and [`all`]: every metric a host records, from every crate, which
//! [`install_metrics_recorder`](crate::install_metrics_recorder) describes
//! so that `/metrics` carries `# HELP` for each family.

use switchyard_core::{Metric, MetricKind};

/// Every answer to a request for a function.
pub(crate) const REQUESTS: Metric = Metric {
    name: "switchyard_requests_total",
    kind: MetricKind::Counter,
    labels: &["function", "target", "traffic", "status"],
    help: "Answers to requests for a function, by the version it went to (target), its traffic class and the status answered; target and traffic are \"none\" for requests refused before a decision, function is \"-\" for a function this host does not route.",
    values: &[],
    zero_for: None,
};

/// How long a policy took to decide.
pub(crate) const DECISION_SECONDS: Metric = Metric {
    name: "switchyard_decision_seconds",
    kind: MetricKind::Histogram,
    labels: &["function"],
    help: "Time the function's policy took to decide a request, in seconds.",
    values: &[],
    zero_for: None,
};

/// How long a decided request took, as a histogram with buckets (so
/// quantiles add up across hosts).
pub(crate) const REQUEST_SECONDS: Metric = Metric {
    name: "switchyard_request_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["function", "target", "traffic"],
    help: "Time from a request's decision to the last byte of its answer (the version's answer, a fallback's, or the mesh's error), by the version it went to (target) and traffic class, in seconds; a histogram with buckets, so rates of its _bucket series add up across hosts for fleet-wide quantiles.",
    values: &[],
    zero_for: None,
};

/// The buckets of [`REQUEST_SECONDS`], in seconds: from a loopback
/// answer (half a millisecond) to Lambda's longest synchronous call.
pub(crate) const REQUEST_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 900.0,
];

/// A decision the fail-safe made.
pub(crate) const FAIL_SAFE: Metric = Metric {
    name: "switchyard_fail_safe_total",
    kind: MetricKind::Counter,
    labels: &["function", "kind"],
    help: "Requests decided by the fail-safe (stable, traffic as requested) because the policy failed, by kind (trap, fuel, memory, invalid-decision, circuit-open, ...).",
    values: &[],
    zero_for: None,
};

/// An idempotent request retried on stable.
pub(crate) const FALLBACK: Metric = Metric {
    name: "switchyard_fallback_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "Idempotent requests that failed on the chosen version and were sent once more to stable (the route's fallback).",
    values: &[],
    zero_for: Some(|c| c.fallback.is_some()),
};

/// A guard tripping.
pub(crate) const GUARD_TRIPS: Metric = Metric {
    name: "switchyard_guard_trips_total",
    kind: MetricKind::Counter,
    labels: &["function", "traffic"],
    help: "Times a route's guard tripped on this host: that traffic class stopped going to the candidate.",
    values: &[("traffic", &["production", "synthetic"])],
    zero_for: Some(|c| c.guard.is_some()),
};

/// A guard's rollback write.
pub(crate) const GUARD_ROLLBACKS: Metric = Metric {
    name: "switchyard_guard_rollbacks_total",
    kind: MetricKind::Counter,
    labels: &["function", "outcome"],
    help: "Rollbacks a tripped guard wrote to the store (serve --guard-writes), by outcome (written, superseded, failed).",
    values: &[("outcome", &["written", "superseded", "failed"])],
    zero_for: Some(|c| c.guard.is_some()),
};

/// A shadow comparison.
pub(crate) const SHADOW_COMPARED: Metric = Metric {
    name: "switchyard_shadow_compared_total",
    kind: MetricKind::Counter,
    labels: &["function"],
    help: "Mirrored answers compared with the primary's (the route's shadow).",
    values: &[],
    zero_for: Some(|c| c.shadow.is_some()),
};

/// A shadow difference.
pub(crate) const SHADOW_DIFF: Metric = Metric {
    name: "switchyard_shadow_diff_total",
    kind: MetricKind::Counter,
    labels: &["function", "kind"],
    help: "Mirrored answers that differed from the primary's, by kind of difference (status, header, body).",
    values: &[("kind", &["status", "header", "body"])],
    zero_for: Some(|c| c.shadow.is_some()),
};

/// A capture line not written.
pub(crate) const CAPTURE_DROPPED: Metric = Metric {
    name: "switchyard_capture_dropped_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Sampled requests not written to the capture file (serve --capture) because its writer was behind or failing.",
    values: &[],
    zero_for: None,
};

/// Connections open now.
pub(crate) const CONNECTIONS_OPEN: Metric = Metric {
    name: "switchyard_connections_open",
    kind: MetricKind::Gauge,
    labels: &["listener"],
    help: "Client connections open, by listener (public, admin).",
    values: &[],
    zero_for: None,
};

/// Connections closed.
pub(crate) const CONNECTIONS_CLOSED: Metric = Metric {
    name: "switchyard_connections_closed_total",
    kind: MetricKind::Counter,
    labels: &["listener", "reason"],
    help: "Client connections closed, by listener and reason (done, error, head-too-large, header-timeout, idle-timeout, busy-timeout).",
    values: &[],
    zero_for: None,
};

/// This crate's metrics.
pub const METRICS: &[&Metric] = &[
    &REQUESTS,
    &DECISION_SECONDS,
    &REQUEST_SECONDS,
    &FAIL_SAFE,
    &FALLBACK,
    &GUARD_TRIPS,
    &GUARD_ROLLBACKS,
    &SHADOW_COMPARED,
    &SHADOW_DIFF,
    &CAPTURE_DROPPED,
    &CONNECTIONS_OPEN,
    &CONNECTIONS_CLOSED,
];

/// Every metric a host records, from every crate it is built of.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    [
        switchyard_core::METRICS,
        switchyard_config::METRICS,
        switchyard_dispatch::METRICS,
        METRICS,
    ]
    .into_iter()
    .flatten()
    .copied()
}
