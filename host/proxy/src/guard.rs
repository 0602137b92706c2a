//! Router-side automatic rollback: the route config's `guard`, judged on
//! this host over the candidate's answers, production and synthetic
//! traffic apart. Once tripped for a traffic class, that class stops going
//! to the candidate at once (to stable, with reason `guard tripped: ...`);
//! with `serve --guard-writes` the host also writes a rollback version so
//! the fleet follows within one poll.
//!
//! The write converges when many hosts trip at once: each re-reads the
//! function, writes only while the live version is still the one that
//! tripped (a compare-and-swap), and writes explicit content (the
//! candidate role removed, mode production), so whichever host wins, the
//! routing is the same, and the others' writes are refused as conflicts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_config::{Active, ConfigStore, StoreError};
use switchyard_core::{Decision, Guard, Mode, Traffic};
use switchyard_dispatch::Target;

use crate::Proxy;
use crate::catalogue::{GUARD_ROLLBACKS, GUARD_TRIPS};
use crate::steps::{Routing, Sent};

/// Most answers kept per traffic class and window (a bound on memory; at
/// a higher rate the window covers the latest this many).
const MAX_SAMPLES: usize = 20_000;

/// One traffic class's recent answers from the candidate.
#[derive(Debug, Default)]
struct Class {
    samples: VecDeque<(Instant, bool, Duration)>,
    tripped: Option<String>,
}

/// The guard of one route version.
#[derive(Debug)]
pub(crate) struct GuardState {
    version: u64,
    spec: Guard,
    /// The qualifier of the `candidate` role: whose answers are judged.
    pub(crate) candidate: String,
    classes: [Mutex<Class>; 2],
}

fn index(traffic: Traffic) -> usize {
    match traffic {
        Traffic::Production => 0,
        Traffic::Synthetic => 1,
    }
}

impl GuardState {
    /// Why the guard tripped for `traffic`, if it did.
    pub(crate) fn tripped(&self, traffic: Traffic) -> Option<String> {
        self.classes[index(traffic)]
            .lock()
            .expect("lock")
            .tripped
            .clone()
    }

    /// Records one answer of the candidate; returns why, when this answer
    /// trips the guard.
    pub(crate) fn record(&self, traffic: Traffic, failed: bool, took: Duration) -> Option<String> {
        let now = Instant::now();
        let mut class = self.classes[index(traffic)].lock().expect("lock");
        if class.tripped.is_some() {
            return None;
        }
        class.samples.push_back((now, failed, took));
        while class.samples.len() > MAX_SAMPLES
            || class
                .samples
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > self.spec.window)
        {
            class.samples.pop_front();
        }
        let n = class.samples.len();
        if n < self.spec.min_requests as usize {
            return None;
        }
        let failures = class.samples.iter().filter(|(_, f, _)| *f).count();
        let rate = failures as f64 / n as f64;
        let why = if rate > self.spec.max_error_rate {
            Some(format!(
                "{failures} of the candidate's last {n} {} answers failed ({:.1} %, more than {:.1} %)",
                traffic.as_str(),
                rate * 100.0,
                self.spec.max_error_rate * 100.0
            ))
        } else if let Some(max) = self.spec.max_p99_ms {
            let mut took: Vec<Duration> = class.samples.iter().map(|(_, _, d)| *d).collect();
            took.sort_unstable();
            let p99 = took[(n * 99).div_ceil(100).saturating_sub(1)];
            (p99 > Duration::from_millis(max)).then(|| {
                format!(
                    "the candidate's p99 over its last {n} {} answers is {} ms, more than {max} ms",
                    traffic.as_str(),
                    p99.as_millis()
                )
            })
        } else {
            None
        };
        if let Some(why) = &why {
            class.tripped = Some(why.clone());
            class.samples.clear();
        }
        why
    }
}

/// The guards of every function this host routes, per live route version.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    map: Mutex<HashMap<String, Arc<GuardState>>>,
}

impl Guards {
    /// The guard of `function`'s live version, if its route has one (and
    /// a candidate to judge). A new version starts a fresh guard.
    pub(crate) fn of(&self, function: &str, active: &Active) -> Option<Arc<GuardState>> {
        let config = active.route.config();
        let spec = config.guard.as_ref()?;
        let candidate = config.versions.get("candidate")?;
        let version = active.stored.version;
        let mut map = self.map.lock().expect("lock");
        if let Some(g) = map.get(function)
            && g.version == version
        {
            return Some(g.clone());
        }
        let g = Arc::new(GuardState {
            version,
            spec: spec.clone(),
            candidate: candidate.clone(),
            classes: Default::default(),
        });
        map.insert(function.to_owned(), g.clone());
        Some(g)
    }
}

/// The guard step before sending: a class the guard took off the candidate
/// goes to stable instead (and a mirror copy, synthetic traffic, is not
/// sent to a candidate tripped for synthetic traffic). Returns the guard
/// of the function's live version, for [`record`].
pub(crate) fn apply(
    p: &Proxy,
    function: &str,
    active: &Active,
    decision: &mut Decision,
) -> Option<Arc<GuardState>> {
    let g = p.guards.of(function, active)?;
    if decision.target == g.candidate
        && let Some(why) = g.tripped(decision.traffic)
    {
        let traffic = decision.traffic;
        *decision = switchyard_core::fail_safe(&active.route, "");
        decision.traffic = traffic;
        decision.reason = format!("guard tripped: {why}");
    }
    if decision.mirror.as_deref() == Some(g.candidate.as_str())
        && g.tripped(Traffic::Synthetic).is_some()
    {
        decision.mirror = None;
    }
    Some(g)
}

/// The guard step after sending: the candidate's answer judged; a trip
/// logged, counted and, with `--guard-writes`, a rollback written in the
/// background. Only a failure of the version's side counts (a request the
/// caller got wrong is not the candidate's fault). An answer whose body is
/// still coming is judged when it ends (an upstream that closes mid-body
/// failed): returned as [`Pending`] for the body to settle.
pub(crate) fn record(
    r: &Routing<'_>,
    guard: Option<&Arc<GuardState>>,
    to: &Target,
    decision: &Decision,
    sent: &Sent,
    started: Option<Instant>,
) -> Option<Pending> {
    let (Some(g), Some(started)) = (guard, started) else {
        return None;
    };
    if to.qualifier != g.candidate {
        return None;
    }
    let pending = Pending {
        g: g.clone(),
        traffic: decision.traffic,
        started,
        function: r.function.to_owned(),
        version: r.active.stored.version,
        store: r.p.config.guard_store.clone(),
    };
    let failed = sent.version_failed();
    if !failed && !http_body::Body::is_end_stream(sent.response.body()) {
        return Some(pending);
    }
    pending.settle(failed);
    None
}

/// A candidate's answer the guard judges once its body has ended.
pub(crate) struct Pending {
    g: Arc<GuardState>,
    traffic: Traffic,
    started: Instant,
    function: String,
    version: u64,
    store: Option<Arc<dyn ConfigStore>>,
}

impl Pending {
    /// Records the answer as failed or not, taking as long as it took
    /// until now.
    pub(crate) fn settle(self, failed: bool) {
        let traffic = self.traffic;
        let Some(why) = self.g.record(traffic, failed, self.started.elapsed()) else {
            return;
        };
        let (function, version) = (self.function, self.version);
        tracing::error!(target: "switchyard::guard", %function, route_version = version, traffic = traffic.as_str(), reason = %why, "guard tripped: the candidate gets no more of this traffic on this host");
        GUARD_TRIPS
            .counter(&[("function", &function), ("traffic", traffic.as_str())])
            .increment(1);
        if let Some(store) = self.store {
            tokio::spawn(write_rollback(store, function, version, why));
        }
    }
}

/// What a tripped guard writes: the version that tripped, without its
/// candidate, in production mode. Explicit content, so hosts that trip at
/// once write the same routing.
async fn write_rollback(store: Arc<dyn ConfigStore>, function: String, tripped: u64, why: String) {
    let outcome = async {
        let live = store
            .latest(std::slice::from_ref(&function))
            .await?
            .pop()
            .transpose()?
            .flatten();
        let Some(live) = live else {
            return Ok("superseded");
        };
        if live.version != tripped {
            // Someone (another host, a pipeline) already moved it on.
            return Ok("superseded");
        }
        let mut config = live.config;
        config.versions.remove("candidate");
        config.mode = Mode::Production;
        let note = format!("switchyard guard: guard tripped: {why}");
        match store
            .put_route_if(&function, &config, tripped, &note)
            .await
        {
            Ok(version) => {
                tracing::warn!(target: "switchyard::guard", %function, version, "rollback written: the candidate is out of the route");
                Ok("written")
            }
            Err(StoreError::Conflict { .. } | StoreError::Busy { .. }) => Ok("superseded"),
            Err(e) => Err(e),
        }
    }
    .await;
    let label = match outcome {
        Ok(label) => label,
        Err(e) => {
            tracing::error!(target: "switchyard::guard", %function, error = %e, "the guard's rollback could not be written; this host keeps the candidate out");
            "failed"
        }
    };
    GUARD_ROLLBACKS
        .counter(&[("function", &function), ("outcome", label)])
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(json: &str) -> GuardState {
        GuardState {
            version: 1,
            spec: serde_json::from_str(json).unwrap(),
            candidate: "8".into(),
            classes: Default::default(),
        }
    }

    #[test]
    fn trips_on_the_error_rate_once_enough_answers_are_in() {
        let g = guard(r#"{"max-error-rate":0.2,"min-requests":10,"window":"60s"}"#);
        let ms = Duration::from_millis(1);
        for _ in 0..8 {
            assert!(g.record(Traffic::Production, false, ms).is_none());
        }
        // 2 of 10 failed: 20 %, not more than 20 %.
        assert!(g.record(Traffic::Production, true, ms).is_none());
        assert!(g.record(Traffic::Production, true, ms).is_none());
        let why = g
            .record(Traffic::Production, true, ms)
            .expect("3 of 11 trips it");
        assert!(
            why.contains("3 of the candidate's last 11 production answers failed"),
            "{why}"
        );
        assert!(g.tripped(Traffic::Production).is_some());
        // Synthetic traffic is judged on its own.
        assert!(g.tripped(Traffic::Synthetic).is_none());
        for _ in 0..3 {
            assert!(g.record(Traffic::Synthetic, true, ms).is_none());
        }
        assert!(
            g.tripped(Traffic::Synthetic).is_none(),
            "3 answers are fewer than 10"
        );
    }

    #[test]
    fn trips_on_the_p99() {
        let g = guard(r#"{"max-error-rate":1,"min-requests":100,"max-p99-ms":50}"#);
        for i in 0..99 {
            assert!(
                g.record(Traffic::Synthetic, false, Duration::from_millis(i % 40))
                    .is_none()
            );
        }
        // The 100th is slow: the p99 of 100 answers is the 99th slowest.
        assert!(
            g.record(Traffic::Synthetic, false, Duration::from_millis(900))
                .is_none()
        );
        let why = g
            .record(Traffic::Synthetic, false, Duration::from_millis(900))
            .expect("two slow answers in 101 put the p99 over");
        assert!(why.contains("p99"), "{why}");
    }
}
