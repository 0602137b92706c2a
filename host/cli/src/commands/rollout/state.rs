//! A rollout's state, kept in the store beside the route (one document per
//! function, written by compare-and-swap): where it is, who drives it (a
//! runner's lease, renewed by its heartbeat), what its gates last read.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use switchyard_config::{ConfigStore, StoreError};

use super::measure::SourceSpec;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// A runner drives it.
    Running,
    /// A stage's bake passed; it waits for `switchyard rollout approve`.
    WaitingApproval,
    /// It stopped without writing (the route changed by hand): `resume`
    /// goes on from the route as it is, `abort` rolls back.
    Stopped,
    /// Promoted, or every stage passed.
    Succeeded,
    /// A gate failed (or the candidate was taken out): rolled back.
    Failed,
    /// `switchyard rollout abort`: rolled back.
    Aborted,
}

impl Phase {
    /// Whether the rollout is over (a new one may start).
    pub(crate) fn is_over(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Aborted)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::WaitingApproval => "waiting-approval",
            Phase::Stopped => "stopped",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }
}

/// Who drives a rollout, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Runner {
    /// `pid N on host`.
    pub(crate) id: String,
    /// Tells this runner from a later one with the same id.
    pub(crate) token: String,
    /// Its last heartbeat, ms since the epoch.
    pub(crate) beat: u64,
    /// How long its lease lasts past a heartbeat, in ms.
    pub(crate) lease: u64,
}

impl Runner {
    pub(crate) fn new(lease: Duration) -> Runner {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now_ms() as u128 ^ u128::from(std::process::id()));
        Runner {
            id: format!("pid {} on {}", std::process::id(), host_name()),
            token: format!("{:016x}", h.finish()),
            beat: now_ms(),
            lease: lease.as_millis() as u64,
        }
    }

    /// Whether its lease still holds at `now` (ms).
    pub(crate) fn live(&self, now: u64) -> bool {
        now < self.beat.saturating_add(self.lease)
    }

    /// How it is named in messages: who, and when it was last heard.
    pub(crate) fn describe(&self, now: u64) -> String {
        format!(
            "{} (last heartbeat {} ago)",
            self.id,
            ago(now.saturating_sub(self.beat))
        )
    }
}

/// A gate as last measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct GateView {
    /// The gate, e.g. `max-error-rate` or a query gate's name.
    pub(crate) gate: String,
    /// Its value (none: no data yet).
    #[serde(default)]
    pub(crate) value: Option<f64>,
    /// Its threshold, as the plan gives it (e.g. `<= 0.01`).
    pub(crate) threshold: String,
    /// `ok`, `waiting` (no data, or not enough yet) or `failed`.
    pub(crate) state: String,
}

/// The state document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Doc {
    /// The plan, a blob in the store (`sha256:<hex>`).
    pub(crate) plan: switchyard_core::Digest,
    /// The qualifier rolled out, and stable's when it began.
    pub(crate) candidate: String,
    pub(crate) stable: String,
    pub(crate) phase: Phase,
    pub(crate) runner: Runner,
    /// The stage (0-based) and its step (a canary's percentage).
    pub(crate) stage: usize,
    pub(crate) step: usize,
    /// When the step's route version was written (ms; 0: not yet).
    pub(crate) since: u64,
    /// The route version the rollout wrote last (or found and accepted).
    pub(crate) route_version: u64,
    /// The gates of the step, as last measured.
    #[serde(default)]
    pub(crate) gates: Vec<GateView>,
    /// Approved to go on past the step's bake.
    #[serde(default)]
    pub(crate) approved: bool,
    /// An abort asked for, with who asked and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) abort: Option<String>,
    /// Where the fleet's metrics are read.
    pub(crate) metrics: SourceSpec,
    /// How it ended (or why it stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outcome: Option<String>,
    /// When it began and ended (ms).
    pub(crate) started: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ended: Option<u64>,
}

/// A document as read, with the revision a write must name.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) doc: Doc,
    pub(crate) revision: u64,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `3s`, `2m 5s`, `1h 4m`.
pub(crate) fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this host".to_owned())
}

/// Runs a store call again while the store throttles or is unreachable
/// (for up to two minutes): a rollout never skips a step because the store
/// was busy.
pub(crate) async fn retrying<T, F, Fut>(what: &str, mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut pause = Duration::from_millis(200);
    loop {
        match f().await {
            Err(e)
                if matches!(
                    e,
                    StoreError::Throttled { .. } | StoreError::Unavailable { .. }
                ) && tokio::time::Instant::now() < deadline =>
            {
                eprintln!("rollout: {what}: {e}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Reads `function`'s rollout document.
pub(crate) async fn read(store: &dyn ConfigStore, function: &str) -> Result<Option<Read>> {
    let found = retrying("reading the rollout", || store.rollout(function)).await?;
    found
        .map(|(text, revision)| {
            let doc = serde_json::from_str(&text).with_context(|| {
                format!(
                    "the rollout document of {function} (revision {revision}) in {} does not parse",
                    store.uri()
                )
            })?;
            Ok(Read { doc, revision })
        })
        .transpose()
}

/// Writes a document over `revision`; `Ok(None)` when another writer
/// wrote first (read it again).
pub(crate) async fn write(
    store: &dyn ConfigStore,
    function: &str,
    doc: &Doc,
    revision: u64,
) -> Result<Option<u64>> {
    let text = serde_json::to_string(doc)?;
    match retrying("writing the rollout", || {
        store.put_rollout_if(function, &text, revision)
    })
    .await
    {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(StoreError::Busy { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A runner's hold on a rollout: the document as it last wrote it.
pub(crate) struct Held {
    pub(crate) store: Arc<dyn ConfigStore>,
    pub(crate) function: String,
    pub(crate) doc: Doc,
    pub(crate) revision: u64,
}

impl Held {
    /// Applies `change` to the stored document and writes it, as long as
    /// this runner still holds the rollout; another writer's change in
    /// between (an approval, an abort) is kept, and `change` applied on top.
    pub(crate) async fn update(&mut self, change: impl Fn(&mut Doc)) -> Result<()> {
        let mut doc = self.doc.clone();
        let mut revision = self.revision;
        loop {
            change(&mut doc);
            if let Some(r) = write(&*self.store, &self.function, &doc, revision).await? {
                self.doc = doc;
                self.revision = r;
                return Ok(());
            }
            let Some(now) = read(&*self.store, &self.function).await? else {
                bail!(
                    "the rollout document of {} disappeared from {}",
                    self.function,
                    self.store.uri()
                );
            };
            if now.doc.runner.token != self.doc.runner.token {
                bail!(
                    "this runner lost the rollout of {}: {} took it over (this runner's lease ran out); it goes on there",
                    self.function,
                    now.doc.runner.id
                );
            }
            doc = now.doc;
            revision = now.revision;
        }
    }

    /// Renews the lease (and records the gates).
    pub(crate) async fn beat(&mut self, gates: Option<Vec<GateView>>) -> Result<()> {
        self.update(|d| {
            d.runner.beat = now_ms();
            if let Some(g) = &gates {
                d.gates = g.clone();
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_its_heartbeat_plus_its_length() {
        let mut r = Runner::new(Duration::from_secs(30));
        r.beat = 1_000_000;
        assert!(r.live(1_000_000 + 29_999));
        assert!(!r.live(1_000_000 + 30_000));
        assert!(r.describe(1_000_000 + 75_000).contains("1m 15s ago"));
        let other = Runner::new(Duration::from_secs(30));
        assert_ne!(r.token, other.token, "each runner is told apart");
    }
}
