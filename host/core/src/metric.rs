//! Metrics, each defined once: name, kind, labels and help text in one
//! [`Metric`], recorded through it. Every crate lists its own in a
//! `catalogue` module (this crate's: [`METRICS`]); the binary that installs
//! the recorder describes them all, so `/metrics` carries `# HELP` for each
//! family, and a test checks the README, the docs and the Grafana dashboard
//! against the catalogues and a live scrape.

use metrics::{Counter, Gauge, Histogram, Label};

use crate::RouteConfig;

/// What a metric measures over time, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

impl MetricKind {
    /// The `# TYPE` Prometheus gives this kind (a histogram rendered
    /// without buckets is a summary).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family, defined once.
#[derive(Debug)]
pub struct Metric {
    /// Its name in `/metrics`.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// Its label names, in the order they are given.
    pub labels: &'static [&'static str],
    /// What it counts, for `# HELP`.
    pub help: &'static str,
    /// The values each label other than `function` can take, when they
    /// are known in advance: the series [`Metric::zero`] creates at 0.
    pub values: &'static [(&'static str, &'static [&'static str])],
    /// For a per-function metric of a rare event: whether a function with
    /// this route config gets its series at 0 as soon as it is routed
    /// (`None`: it appears at its first event).
    pub zero_for: Option<fn(&RouteConfig) -> bool>,
}

impl Metric {
    fn label_set(&self, values: &[(&'static str, &str)]) -> Vec<Label> {
        debug_assert!(
            values
                .iter()
                .map(|(k, _)| *k)
                .eq(self.labels.iter().copied()),
            "{} takes labels {:?}, not {:?}",
            self.name,
            self.labels,
            values
        );
        values
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect()
    }

    /// The counter of these label values (in [`Metric::labels`] order).
    pub fn counter(&self, labels: &[(&'static str, &str)]) -> Counter {
        debug_assert_eq!(self.kind, MetricKind::Counter, "{}", self.name);
        metrics::counter!(self.name, self.label_set(labels))
    }

    /// The gauge of these label values.
    pub fn gauge(&self, labels: &[(&'static str, &str)]) -> Gauge {
        debug_assert_eq!(self.kind, MetricKind::Gauge, "{}", self.name);
        metrics::gauge!(self.name, self.label_set(labels))
    }

    /// The histogram of these label values.
    pub fn histogram(&self, labels: &[(&'static str, &str)]) -> Histogram {
        debug_assert_eq!(self.kind, MetricKind::Histogram, "{}", self.name);
        metrics::histogram!(self.name, self.label_set(labels))
    }

    /// Creates every series of this metric whose label values are known
    /// (`function`'s given; the others' from [`Metric::values`]) at 0, so
    /// Prometheus's `increase()` and `rate()` see its first event. Does
    /// nothing when a label's values are not known, or `function` is
    /// needed and not given.
    pub fn zero(&self, function: Option<&str>) {
        let mut sets: Vec<Vec<Label>> = vec![Vec::new()];
        for &label in self.labels {
            let values: Vec<String> = if label == "function" {
                match function {
                    Some(f) => vec![f.to_owned()],
                    None => return,
                }
            } else {
                match self.values.iter().find(|(l, _)| *l == label) {
                    Some((_, vs)) => vs.iter().map(|v| (*v).to_owned()).collect(),
                    None => return,
                }
            };
            sets = sets
                .into_iter()
                .flat_map(|set| {
                    values.iter().map(move |v| {
                        let mut set = set.clone();
                        set.push(Label::new(label, v.clone()));
                        set
                    })
                })
                .collect();
        }
        for set in sets {
            match self.kind {
                MetricKind::Counter => metrics::counter!(self.name, set).absolute(0),
                MetricKind::Gauge => metrics::gauge!(self.name, set).set(0.0),
                MetricKind::Histogram => {}
            }
        }
    }

    /// Gives the installed recorder this metric's help text.
    pub fn describe(&self) {
        match self.kind {
            MetricKind::Counter => metrics::describe_counter!(self.name, self.help),
            MetricKind::Gauge => metrics::describe_gauge!(self.name, self.help),
            MetricKind::Histogram => metrics::describe_histogram!(self.name, self.help),
        }
    }
}

/// The policy's circuit breaker opening and closing.
pub(crate) const POLICY_CIRCUIT: Metric = Metric {
    name: "switchyard_policy_circuit_total",
    kind: MetricKind::Counter,
    labels: &["function", "state"],
    help: "Times a function's policy circuit breaker changed state (state=open: failing evaluations answered by the fail-safe without evaluating; closed: a probe evaluation succeeded).",
    values: &[("state", &["open", "closed"])],
    zero_for: None,
};

/// This crate's metrics.
pub const METRICS: &[&Metric] = &[&POLICY_CIRCUIT];
