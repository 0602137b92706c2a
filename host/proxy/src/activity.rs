//! What the live view charts: requests and errors per function, target and
//! traffic class over the last 10 minutes, in 60 ten-second buckets. Kept
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

/// One series' buckets: (bucket number, requests, errors), by slot.
#[derive(Debug, Clone)]
pub(crate) struct Ring([(u64, u64, u64); BUCKETS]);

impl Default for Ring {
    fn default() -> Self {
        Ring([(u64::MAX, 0, 0); BUCKETS])
    }
}

impl Ring {
    fn add(&mut self, bucket: u64, failed: bool) {
        let slot = &mut self.0[(bucket % BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(failed);
    }

    /// Adds this ring's counts of the buckets `now - 59 ..= now` into
    /// `requests`/`errors` (oldest first).
    pub(crate) fn merge_into(&self, now: u64, requests: &mut [u64], errors: &mut [u64]) {
        for (bucket, r, e) in self.0 {
            if bucket <= now && now - bucket < BUCKETS as u64 {
                let i = BUCKETS - 1 - (now - bucket) as usize;
                requests[i] += r;
                errors[i] += e;
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

/// One thread's series: function -> target -> [production, synthetic].
#[derive(Debug, Default)]
pub(crate) struct Activity {
    series: HashMap<String, HashMap<String, [Ring; 2]>>,
    count: usize,
    /// Fail-safe decisions per function.
    pub(crate) fail_safes: HashMap<String, u64>,
}

impl Activity {
    /// Counts one answer.
    pub(crate) fn record(&mut self, function: &str, target: &str, traffic: &str, failed: bool) {
        let class = match traffic {
            "production" => 0,
            "synthetic" => 1,
            _ => return,
        };
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
        rings[class].add(bucket_now(), failed);
    }

    /// This thread's rings of `function`, by target.
    pub(crate) fn of(&self, function: &str) -> Option<&HashMap<String, [Ring; 2]>> {
        self.series.get(function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_roll_over_and_merge_oldest_first() {
        let mut r = Ring::default();
        r.add(100, false);
        r.add(100, true);
        r.add(101, false);
        r.add(100 + BUCKETS as u64, false); // reuses bucket 100's slot
        let (mut req, mut err) = (vec![0; BUCKETS], vec![0; BUCKETS]);
        r.merge_into(101 + 5, &mut req, &mut err);
        assert_eq!(
            req.iter().sum::<u64>(),
            1,
            "the future bucket is not counted, 100 is gone"
        );
        assert_eq!(req[BUCKETS - 6], 1);
        let (mut req, mut err) = (vec![0; BUCKETS], vec![0; BUCKETS]);
        r.merge_into(100 + BUCKETS as u64, &mut req, &mut err);
        // 160 is the newest bucket, 101 the oldest still in the window.
        assert_eq!((req[BUCKETS - 1], req[0]), (1, 1));
        assert_eq!(req.iter().sum::<u64>(), 2);
        assert_eq!(err.iter().sum::<u64>(), 0);
    }
}
