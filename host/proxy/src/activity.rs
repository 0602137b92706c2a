//! What the live view charts: requests, errors (5xx) and client errors
//! (4xx) per function, target and traffic class (and the requests refused
//! before a decision) over the last 10 minutes, in 60 ten-second buckets. Kept
//! per serving thread (no lock shared between cores on the request path)
//! and merged when the page asks.

use std::collections::HashMap as StdMap;

// The request path hashes a function and a target per answer: foldhash,
// as the metric handles (routed names only; nothing to resist).
type HashMap<K, V> = StdMap<K, V, foldhash::fast::RandomState>;

/// Seconds per bucket.
pub(crate) const BUCKET_SECONDS: u64 = 10;
/// Buckets kept: 10 minutes.
pub(crate) const BUCKETS: usize = 60;
/// Series kept per thread (function x target x class); past it, new ones
/// are not charted (the metrics still count them).
const MAX_SERIES: usize = 4096;

/// One bucket of a series.
#[derive(Debug, Clone, Copy)]
struct Slot {
    bucket: u64,
    requests: u64,
    /// 5xx answers.
    errors: u64,
    /// 4xx answers.
    client: u64,
}

/// One series' buckets, by slot.
#[derive(Debug, Clone)]
pub(crate) struct Ring([Slot; BUCKETS]);

impl Default for Ring {
    fn default() -> Self {
        Ring(
            [Slot {
                bucket: u64::MAX,
                requests: 0,
                errors: 0,
                client: 0,
            }; BUCKETS],
        )
    }
}

/// A series' counts per bucket, oldest first: requests, errors (5xx),
/// client errors (4xx).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) requests: Vec<u64>,
    pub(crate) errors: Vec<u64>,
    pub(crate) client: Vec<u64>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            requests: vec![0; BUCKETS],
            errors: vec![0; BUCKETS],
            client: vec![0; BUCKETS],
        }
    }
}

impl Ring {
    fn add(&mut self, bucket: u64, status: u16) {
        let slot = &mut self.0[(bucket % BUCKETS as u64) as usize];
        if slot.bucket != bucket {
            *slot = Slot {
                bucket,
                requests: 0,
                errors: 0,
                client: 0,
            };
        }
        slot.requests += 1;
        slot.errors += u64::from(status >= 500);
        slot.client += u64::from((400..500).contains(&status));
    }

    /// Adds this ring's counts of the buckets `now - 59 ..= now` into
    /// `into` (oldest first).
    pub(crate) fn merge_into(&self, now: u64, into: &mut Series) {
        for s in self.0 {
            if s.bucket <= now && now - s.bucket < BUCKETS as u64 {
                let i = BUCKETS - 1 - (now - s.bucket) as usize;
                into.requests[i] += s.requests;
                into.errors[i] += s.errors;
                into.client[i] += s.client;
            }
        }
    }
}

/// The current bucket number.
pub(crate) fn bucket_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / BUCKET_SECONDS
}

/// The classes a series is kept for: a decision's traffic classes, and
/// `none` for the requests refused before a decision.
pub(crate) const CLASSES: [&str; 3] = ["production", "synthetic", "none"];

/// One thread's series: function -> target -> one ring per [`CLASSES`].
#[derive(Debug, Default)]
pub(crate) struct Activity {
    series: HashMap<String, HashMap<String, [Ring; 3]>>,
    count: usize,
    /// Fail-safe decisions per function.
    pub(crate) fail_safes: HashMap<String, u64>,
}

impl Activity {
    /// Counts one answer of a routed function (`function` `-`, one this
    /// host does not route, is not charted).
    pub(crate) fn record(&mut self, function: &str, target: &str, traffic: &str, status: u16) {
        let Some(class) = CLASSES.iter().position(|c| *c == traffic) else {
            return;
        };
        if function == "-" {
            return;
        }
        let known = self
            .series
            .get(function)
            .is_some_and(|t| t.contains_key(target));
        if !known {
            if self.count >= MAX_SERIES {
                return;
            }
            self.count += 1;
            self.series
                .entry(function.to_owned())
                .or_default()
                .insert(target.to_owned(), Default::default());
        }
        let rings = self
            .series
            .get_mut(function)
            .and_then(|t| t.get_mut(target))
            .expect("inserted above");
        rings[class].add(bucket_now(), status);
    }

    /// This thread's rings of `function`, by target.
    pub(crate) fn of(&self, function: &str) -> Option<&HashMap<String, [Ring; 3]>> {
        self.series.get(function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_roll_over_and_merge_oldest_first() {
        let mut r = Ring::default();
        r.add(100, 200);
        r.add(100, 502);
        r.add(101, 404);
        r.add(100 + BUCKETS as u64, 200); // reuses bucket 100's slot
        let mut s = Series::default();
        r.merge_into(101 + 5, &mut s);
        assert_eq!(
            s.requests.iter().sum::<u64>(),
            1,
            "the future bucket is not counted, 100 is gone"
        );
        assert_eq!((s.requests[BUCKETS - 6], s.client[BUCKETS - 6]), (1, 1));
        let mut s = Series::default();
        r.merge_into(100 + BUCKETS as u64, &mut s);
        // 160 is the newest bucket, 101 the oldest still in the window.
        assert_eq!((s.requests[BUCKETS - 1], s.requests[0]), (1, 1));
        assert_eq!(s.requests.iter().sum::<u64>(), 2);
        assert_eq!(s.errors.iter().sum::<u64>(), 0);
        assert_eq!(s.client.iter().sum::<u64>(), 1);
    }
}
