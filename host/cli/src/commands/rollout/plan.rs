//! A rollout plan: ordered stages, each with a bake time and gates, read
//! from JSON and checked before anything is written.
//!
//! ```json
//! {"stages": [
//!   {"stage": "replay", "requests": "captured.jsonl", "max-changed": "0"},
//!   {"stage": "shadow", "bake": "5m", "gates": {"min-compared": 100, "max-diff-rate": 0.01}},
//!   {"stage": "synthetic", "bake": "10m", "approval": true,
//!    "gates": {"min-requests": 50, "max-error-rate": 0.01, "max-p99": "800ms"}},
//!   {"stage": "canary", "percent": [1, 5, 25, 50], "bake": "5m",
//!    "gates": {"min-requests": 100, "max-error-rate": 0.01, "max-p99": "800ms"}},
//!   {"stage": "promote"}
//! ]}
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// How often gates are measured during a bake, unless the plan says.
pub(crate) const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(10);

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Plan {
    /// The qualifier rolled out (default: the route's `candidate` role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) candidate: Option<String>,
    /// How often the gates are measured during a bake (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) check_every: Option<String>,
    /// The stages, in order.
    pub(crate) stages: Vec<Stage>,
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum Stage {
    /// Recorded production requests decided with the route as it is and
    /// as the first stage that moves traffic will write it: at most
    /// `max-changed` decisions may change.
    Replay {
        /// The requests, one request JSON a line (`serve --capture`
        /// writes them), relative to the plan's folder.
        requests: PathBuf,
        /// A count (`0`) or a share (`1%`) of the requests; default 0.
        #[serde(default, rename = "max-changed")]
        max_changed: Option<String>,
    },
    /// Every production request mirrored to the candidate (flag
    /// `mirror-role=candidate`), its answers compared by the route's
    /// shadow; the candidate answers no one.
    Shadow {
        /// How long it runs.
        bake: String,
        /// What must hold.
        #[serde(default)]
        gates: Gates,
    },
    /// Mode synthetic: QA's tagged requests reach the candidate.
    Synthetic {
        /// How long it runs.
        bake: String,
        /// Wait for `switchyard rollout approve` after the bake.
        #[serde(default)]
        approval: bool,
        /// What must hold, of the synthetic requests to the candidate.
        #[serde(default)]
        gates: Gates,
    },
    /// Production traffic to the candidate by weight (flag
    /// `canary-percent`), one step per percentage.
    Canary {
        /// A percentage, or several in ascending order (one step each).
        percent: Percents,
        /// How long each step runs.
        bake: String,
        /// Wait for `switchyard rollout approve` after the last step.
        #[serde(default)]
        approval: bool,
        /// What must hold, of the production requests to the candidate.
        #[serde(default)]
        gates: Gates,
    },
    /// The candidate becomes stable, mode production.
    Promote {},
}

/// One percentage or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Percents {
    /// One step.
    One(f64),
    /// One step each.
    Many(Vec<f64>),
}

impl Percents {
    pub(crate) fn steps(&self) -> Vec<f64> {
        match self {
            Percents::One(p) => vec![*p],
            Percents::Many(ps) => ps.clone(),
        }
    }
}

/// What must hold during and after a bake. Every gate set is measured
/// across the fleet (see `--prometheus`, `--hosts`); a gate with no data
/// is not passing: it waits up to `max-wait` past the bake, then fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Gates {
    /// Requests the candidate must have answered (in the stage's traffic
    /// class) before the rates below are judged; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_requests: Option<u64>,
    /// Highest share of those answers with a 5xx status (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_error_rate: Option<f64>,
    /// Highest p99 of their duration (`switchyard_request_duration_seconds`),
    /// e.g. `800ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_p99: Option<String>,
    /// Mirrored answers that must have been compared (shadow); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_compared: Option<u64>,
    /// Highest share of compared answers that differed (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_diff_rate: Option<f64>,
    /// Most guard trips of the function allowed during the stage (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_guard_trips: Option<u64>,
    /// How long past the bake a gate without data may wait for it
    /// (default: one bake, at least 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_wait: Option<String>,
    /// Any Prometheus query with a threshold (needs `--prometheus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) queries: Vec<QueryGate>,
}

/// A Prometheus query and the range its value must stay in. `$function`,
/// `$candidate`, `$stable` and `$window` (the stage's age, e.g. `90s`) are
/// replaced before it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct QueryGate {
    /// Its name in messages (default: the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// PromQL returning one series (or a scalar).
    pub(crate) query: String,
    /// The value may not go above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max: Option<f64>,
    /// The value may not go below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min: Option<f64>,
}

impl QueryGate {
    pub(crate) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.query.clone())
    }
}

/// A plan's step: a stage, and for a canary its percentage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step<'a> {
    pub(crate) stage: &'a Stage,
    /// The percentage of a canary step.
    pub(crate) percent: Option<f64>,
    /// Whether this is the stage's last step.
    pub(crate) last: bool,
}

impl Stage {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Stage::Replay { .. } => "replay",
            Stage::Shadow { .. } => "shadow",
            Stage::Synthetic { .. } => "synthetic",
            Stage::Canary { .. } => "canary",
            Stage::Promote {} => "promote",
        }
    }

    /// The steps of this stage (a canary has one per percentage).
    pub(crate) fn steps(&self) -> usize {
        match self {
            Stage::Canary { percent, .. } => percent.steps().len(),
            _ => 1,
        }
    }

    pub(crate) fn step(&self, i: usize) -> Step<'_> {
        let percent = match self {
            Stage::Canary { percent, .. } => percent.steps().get(i).copied(),
            _ => None,
        };
        Step {
            stage: self,
            percent,
            last: i + 1 >= self.steps(),
        }
    }

    pub(crate) fn gates(&self) -> Option<&Gates> {
        match self {
            Stage::Shadow { gates, .. }
            | Stage::Synthetic { gates, .. }
            | Stage::Canary { gates, .. } => Some(gates),
            _ => None,
        }
    }

    /// Its bake, parsed (checked by [`Plan::check`]).
    pub(crate) fn bake(&self) -> Duration {
        match self {
            Stage::Shadow { bake, .. }
            | Stage::Synthetic { bake, .. }
            | Stage::Canary { bake, .. } => duration(bake).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    pub(crate) fn approval(&self) -> bool {
        matches!(
            self,
            Stage::Synthetic { approval: true, .. } | Stage::Canary { approval: true, .. }
        )
    }
}

impl<'a> Step<'a> {
    /// How this step is named in messages and notes, e.g. `canary 25%`.
    pub(crate) fn label(&self) -> String {
        match self.percent {
            Some(p) => format!("{} {p}%", self.stage.name()),
            None => self.stage.name().to_owned(),
        }
    }
}

/// A duration as plans write them: `500ms`, `30s`, `5m`, `1h`.
pub(crate) fn duration(raw: &str) -> Result<Duration> {
    if let Some(h) = raw.trim().strip_suffix('h')
        && let Ok(n) = h.trim().parse::<u64>()
    {
        return Ok(Duration::from_secs(n * 3600));
    }
    Ok(switchyard_config::parse_duration(raw)?)
}

impl Plan {
    /// Reads and checks a plan file.
    pub(crate) fn read(path: &std::path::Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the rollout plan {}", path.display()))?;
        let mut plan = Plan::parse(&text).with_context(|| {
            format!(
                "in the rollout plan {} (see `switchyard rollout start --help`)",
                path.display()
            )
        })?;
        // A replay's requests are named relative to the plan.
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for stage in &mut plan.stages {
            if let Stage::Replay { requests, .. } = stage
                && requests.is_relative()
            {
                *requests = base.join(&*requests);
            }
        }
        Ok(plan)
    }

    /// Parses and checks a plan.
    pub(crate) fn parse(text: &str) -> Result<Plan> {
        let plan: Plan = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        plan.check()?;
        Ok(plan)
    }

    /// How often gates are measured.
    pub(crate) fn check_every(&self) -> Duration {
        self.check_every
            .as_deref()
            .and_then(|d| duration(d).ok())
            .unwrap_or(DEFAULT_CHECK_EVERY)
    }

    /// Everything a plan must be before a runner acts on it.
    pub(crate) fn check(&self) -> Result<()> {
        if self.stages.is_empty() {
            bail!(
                "the plan has no stages; give at least one of replay, shadow, synthetic, canary, promote"
            );
        }
        if let Some(d) = &self.check_every {
            let every = duration(d).with_context(|| format!("check-every {d:?}"))?;
            if every < Duration::from_millis(100) {
                bail!("check-every {d:?} is shorter than 100ms");
            }
        }
        if let Some(c) = &self.candidate
            && (c.is_empty() || c.len() > 128)
        {
            bail!("candidate {c:?} is not a qualifier");
        }
        let mut last_percent = 0.0_f64;
        for (i, stage) in self.stages.iter().enumerate() {
            let at = format!("stage {} ({})", i + 1, stage.name());
            match stage {
                Stage::Replay { max_changed, .. } => {
                    if let Some(m) = max_changed {
                        super::super::replay::parse_limit(m).with_context(|| at.clone())?;
                    }
                    if self.stages[..i].iter().any(|s| s.moves_traffic()) {
                        bail!(
                            "{at}: a replay gates the route before any traffic moves; put it before the shadow, synthetic and canary stages"
                        );
                    }
                }
                Stage::Promote {} => {
                    if i + 1 != self.stages.len() {
                        bail!("{at}: promote ends a rollout; it must be the last stage");
                    }
                }
                Stage::Shadow { bake, gates } | Stage::Synthetic { bake, gates, .. } => {
                    check_bake(bake).with_context(|| at.clone())?;
                    gates.check(stage).with_context(|| at.clone())?;
                }
                Stage::Canary {
                    percent,
                    bake,
                    gates,
                    ..
                } => {
                    check_bake(bake).with_context(|| at.clone())?;
                    gates.check(stage).with_context(|| at.clone())?;
                    let steps = percent.steps();
                    if steps.is_empty() {
                        bail!("{at}: percent names no step");
                    }
                    for p in steps {
                        if !(p > 0.0 && p <= 100.0) {
                            bail!(
                                "{at}: percent {p} is out of range; a canary step sends more than 0 and at most 100 % of production to the candidate"
                            );
                        }
                        if (p * 100.0).fract() != 0.0 {
                            bail!("{at}: percent {p} is finer than the 0.01 % a weight resolves");
                        }
                        if p <= last_percent {
                            bail!(
                                "{at}: percent {p} does not go up from {last_percent}; canary steps only ramp up (a failed gate is what takes traffic away)"
                            );
                        }
                        last_percent = p;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Stage {
    fn moves_traffic(&self) -> bool {
        !matches!(self, Stage::Replay { .. })
    }
}

fn check_bake(bake: &str) -> Result<()> {
    let d = duration(bake).with_context(|| format!("bake {bake:?}"))?;
    if d.is_zero() {
        bail!("bake {bake:?} is zero; give the stage time to be judged (e.g. 30s)");
    }
    Ok(())
}

impl Gates {
    fn check(&self, stage: &Stage) -> Result<()> {
        for (name, rate) in [
            ("max-error-rate", self.max_error_rate),
            ("max-diff-rate", self.max_diff_rate),
        ] {
            if let Some(r) = rate
                && !(0.0..=1.0).contains(&r)
            {
                bail!("gate {name} {r} is out of range: a share from 0 to 1 (0.01 is 1 %)");
            }
        }
        if let Some(p) = &self.max_p99 {
            let d = duration(p).with_context(|| format!("gate max-p99 {p:?}"))?;
            if d.is_zero() {
                bail!("gate max-p99 {p:?} is zero: no request is that fast");
            }
        }
        if let Some(w) = &self.max_wait {
            duration(w).with_context(|| format!("gate max-wait {w:?}"))?;
        }
        let shadow = matches!(stage, Stage::Shadow { .. });
        if !shadow && (self.min_compared.is_some() || self.max_diff_rate.is_some()) {
            bail!(
                "gates min-compared and max-diff-rate judge a shadow stage's comparisons; this stage compares nothing"
            );
        }
        if shadow
            && (self.min_requests.is_some()
                || self.max_error_rate.is_some()
                || self.max_p99.is_some())
        {
            bail!(
                "a shadow stage's candidate answers no one: judge it by min-compared and max-diff-rate (its mirror copies are counted apart, in switchyard_mirror_total)"
            );
        }
        for q in &self.queries {
            if q.query.trim().is_empty() {
                bail!("a query gate has an empty query");
            }
            match (q.min, q.max) {
                (None, None) => bail!(
                    "query gate {:?} has neither max nor min: give the range its value must stay in",
                    q.label()
                ),
                (Some(lo), Some(hi)) if lo > hi => {
                    bail!("query gate {:?}: min {lo} is above max {hi}", q.label())
                }
                (lo, hi)
                    if lo.is_some_and(|v| !v.is_finite()) || hi.is_some_and(|v| !v.is_finite()) =>
                {
                    bail!(
                        "query gate {:?}: thresholds must be finite numbers",
                        q.label()
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Requests needed before rates are judged.
    pub(crate) fn min_requests(&self) -> u64 {
        self.min_requests.unwrap_or(1).max(1)
    }

    pub(crate) fn min_compared(&self) -> u64 {
        self.min_compared.unwrap_or(1).max(1)
    }

    pub(crate) fn max_p99(&self) -> Option<Duration> {
        self.max_p99.as_deref().and_then(|p| duration(p).ok())
    }

    /// How long past the bake a gate without data waits.
    pub(crate) fn max_wait(&self, bake: Duration) -> Duration {
        self.max_wait
            .as_deref()
            .and_then(|w| duration(w).ok())
            .unwrap_or_else(|| bake.max(Duration::from_secs(30)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Plan::parse(text).unwrap_err())
    }

    #[test]
    fn a_plan_with_every_stage_parses() {
        let plan = Plan::parse(
            r#"{"check-every": "2s", "stages": [
                {"stage": "replay", "requests": "r.jsonl", "max-changed": "0"},
                {"stage": "shadow", "bake": "30s", "gates": {"min-compared": 10, "max-diff-rate": 0.01}},
                {"stage": "synthetic", "bake": "1m", "approval": true, "gates": {"min-requests": 5, "max-error-rate": 0.05, "max-p99": "500ms"}},
                {"stage": "canary", "percent": [1, 5, 25, 50], "bake": "1m",
                 "gates": {"max-error-rate": 0.01, "queries": [{"query": "sum(up)", "min": 2}]}},
                {"stage": "promote"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(plan.stages.len(), 5);
        assert_eq!(plan.stages[3].steps(), 4);
        assert_eq!(plan.stages[3].step(2).label(), "canary 25%");
        assert!(plan.stages[3].step(3).last);
        assert_eq!(plan.check_every(), Duration::from_secs(2));
        assert!(plan.stages[2].approval());
        // CodeDeploy's Canary10Percent5Minutes.
        let plan = Plan::parse(
            r#"{"stages": [{"stage": "canary", "percent": 10, "bake": "5m"}, {"stage": "promote"}]}"#,
        )
        .unwrap();
        assert_eq!(plan.stages[0].bake(), Duration::from_secs(300));
        assert_eq!(plan.check_every(), DEFAULT_CHECK_EVERY);
    }

    #[test]
    fn bad_plans_are_refused_naming_what_is_wrong() {
        let unknown_stage = err(r#"{"stages": [{"stage": "canery", "percent": 5, "bake": "1m"}]}"#);
        assert!(
            unknown_stage.contains("unknown variant `canery`"),
            "{unknown_stage}"
        );
        assert!(unknown_stage.contains("canary"), "{unknown_stage}");
        let unknown_gate = err(
            r#"{"stages": [{"stage": "canary", "percent": 5, "bake": "1m", "gates": {"max-erors": 0.1}}]}"#,
        );
        assert!(
            unknown_gate.contains("unknown field `max-erors`"),
            "{unknown_gate}"
        );
        assert!(unknown_gate.contains("max-error-rate"), "{unknown_gate}");
        for (plan, says) in [
            (r#"{"stages": []}"#, "no stages"),
            (
                r#"{"stages": [{"stage": "canary", "percent": 5, "bake": "1m", "gates": {"max-error-rate": 5}}]}"#,
                "out of range",
            ),
            (
                r#"{"stages": [{"stage": "canary", "percent": 150, "bake": "1m"}]}"#,
                "percent 150 is out of range",
            ),
            (
                r#"{"stages": [{"stage": "canary", "percent": [5, 1], "bake": "1m"}]}"#,
                "does not go up",
            ),
            (
                r#"{"stages": [{"stage": "canary", "percent": 5, "bake": "soon"}]}"#,
                "not a duration",
            ),
            (
                r#"{"stages": [{"stage": "canary", "percent": 5, "bake": "0s"}]}"#,
                "is zero",
            ),
            (
                r#"{"stages": [{"stage": "promote"}, {"stage": "canary", "percent": 5, "bake": "1m"}]}"#,
                "must be the last stage",
            ),
            (
                r#"{"stages": [{"stage": "synthetic", "bake": "1m"}, {"stage": "replay", "requests": "r"}]}"#,
                "before any traffic moves",
            ),
            (
                r#"{"stages": [{"stage": "shadow", "bake": "1m", "gates": {"max-error-rate": 0.1}}]}"#,
                "answers no one",
            ),
            (
                r#"{"stages": [{"stage": "synthetic", "bake": "1m", "gates": {"max-diff-rate": 0.1}}]}"#,
                "compares nothing",
            ),
            (
                r#"{"stages": [{"stage": "canary", "percent": 5, "bake": "1m", "gates": {"queries": [{"query": "up"}]}}]}"#,
                "neither max nor min",
            ),
            (
                r#"{"stages": [{"stage": "replay", "requests": "r", "max-changed": "lots"}]}"#,
                "neither a count",
            ),
            (
                r#"{"stages": [{"stage": "canary", "percent": 5, "bake": "1m", "gates": {"max-p99": "fast"}}]}"#,
                "max-p99",
            ),
        ] {
            let e = err(plan);
            assert!(e.contains(says), "{plan}: {e}");
        }
    }
}
