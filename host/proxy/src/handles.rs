//! Metric handles by their labels, so a request neither builds label
//! strings nor searches the recorder's registry: looked up by borrowed
//! labels, made once per label set.

use std::collections::HashMap as StdMap;

type HashMap<K, V> = StdMap<K, V, foldhash::fast::RandomState>;

use metrics::{Counter, Histogram};

/// Label sets kept before the cache is emptied and refilled: they are
/// functions x targets x statuses, a few hundred in practice; the bound
/// keeps a policy that invents targets from growing it for ever (the
/// recorder keeps its own series regardless).
const MAX_SETS: usize = 4096;

/// Counters by traffic class and status.
type ByOutcome = HashMap<(&'static str, u16), Counter>;

/// One serving thread's handles.
#[derive(Default)]
pub(crate) struct Handles {
    /// `switchyard_requests_total` by function, target, then traffic and
    /// status.
    requests: HashMap<String, HashMap<String, ByOutcome>>,
    /// `switchyard_decision_seconds` by function.
    decisions: HashMap<String, Histogram>,
    /// `switchyard_request_duration_seconds` by function, target, then
    /// traffic.
    durations: HashMap<String, HashMap<String, HashMap<&'static str, Histogram>>>,
    sets: usize,
    /// Decisions made on this thread, for the sampled decision log.
    decided: u64,
    /// What the live view charts (never emptied with the handles).
    pub(crate) activity: crate::activity::Activity,
}

impl Handles {
    /// `switchyard_requests_total{function,target,traffic,status}`.
    pub(crate) fn request(
        &mut self,
        function: &str,
        target: &str,
        traffic: &'static str,
        status: u16,
    ) -> &Counter {
        let cached = self
            .requests
            .get(function)
            .and_then(|t| t.get(target))
            .is_some_and(|s| s.contains_key(&(traffic, status)));
        if !cached {
            self.make_room();
            self.sets += 1;
            let counter = crate::catalogue::REQUESTS.counter(&[
                ("function", function),
                ("target", target),
                ("traffic", traffic),
                ("status", &status.to_string()),
            ]);
            self.requests
                .entry(function.to_owned())
                .or_default()
                .entry(target.to_owned())
                .or_default()
                .insert((traffic, status), counter);
        }
        &self.requests[function][target][&(traffic, status)]
    }

    /// `switchyard_decision_seconds{function}`.
    pub(crate) fn decision(&mut self, function: &str) -> &Histogram {
        if !self.decisions.contains_key(function) {
            self.make_room();
            self.sets += 1;
            let h = crate::catalogue::DECISION_SECONDS.histogram(&[("function", function)]);
            self.decisions.insert(function.to_owned(), h);
        }
        &self.decisions[function]
    }

    /// `switchyard_request_duration_seconds{function,target,traffic}`.
    pub(crate) fn duration(
        &mut self,
        function: &str,
        target: &str,
        traffic: &'static str,
    ) -> &Histogram {
        let cached = self
            .durations
            .get(function)
            .and_then(|t| t.get(target))
            .is_some_and(|c| c.contains_key(traffic));
        if !cached {
            self.make_room();
            self.sets += 1;
            let h = crate::catalogue::REQUEST_SECONDS.histogram(&[
                ("function", function),
                ("target", target),
                ("traffic", traffic),
            ]);
            self.durations
                .entry(function.to_owned())
                .or_default()
                .entry(target.to_owned())
                .or_default()
                .insert(traffic, h);
        }
        &self.durations[function][target][traffic]
    }

    /// The sequence number of this thread's next decision (the decision
    /// log samples per serving thread: no counter shared between cores).
    pub(crate) fn next_decision(&mut self) -> u64 {
        self.decided += 1;
        self.decided - 1
    }

    fn make_room(&mut self) {
        if self.sets >= MAX_SETS {
            self.requests.clear();
            self.decisions.clear();
            self.durations.clear();
            self.sets = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_set_is_made_once_and_the_cache_stays_bounded() {
        let mut h = Handles::default();
        for _ in 0..3 {
            h.request("orders", "8", "synthetic", 200);
            h.decision("orders");
            h.duration("orders", "8", "synthetic");
        }
        assert_eq!(h.sets, 3, "repeated label sets are looked up, not made");
        for i in 0..(MAX_SETS * 2) {
            h.request("orders", &format!("invented-{i}"), "production", 200);
            assert!(h.sets <= MAX_SETS, "{} sets kept", h.sets);
        }
    }
}
