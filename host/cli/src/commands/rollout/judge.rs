//! A step's gates against what the fleet measured: each `ok`, `waiting`
//! (no data, or not enough yet) or `failed`.

use super::measure::Measured;
use super::plan::{Gates, Stage};
use super::state::GateView;

/// What the gates of a step say together.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Every gate holds.
    Pass,
    /// None failed, some have no data (or not enough) yet.
    Wait,
    /// A gate failed: what it measured against its threshold.
    Fail(String),
}

fn view(gate: &str, value: Option<f64>, threshold: String, state: &str) -> GateView {
    GateView {
        gate: short(gate, 120),
        value,
        threshold: short(&threshold, 60),
        state: short(state, 200),
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), marked
/// with `…` when cut: the gates ride in the rollout's document, which an
/// `ssm:` store keeps within 4,096 characters (the whole text goes to the
/// runner's stderr).
pub(crate) fn short(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!("{}…", &text[..text.floor_char_boundary(max)])
}

/// The gates judged so far, and the first failure.
#[derive(Default)]
struct Judged {
    out: Vec<GateView>,
    fail: Option<String>,
    /// Why some measurement has no value, for gates left waiting.
    problem: Option<String>,
}

impl Judged {
    fn push(&mut self, gate: &str, value: Option<f64>, threshold: String, state: &str) {
        self.out.push(view(gate, value, threshold, state));
    }

    fn failed(&mut self, gate: &str, value: f64, threshold: String, why: String) {
        self.push(gate, Some(value), threshold, "failed");
        self.fail.get_or_insert(why);
    }

    /// The state of a gate with no value: waiting, and why when known.
    fn waiting(&self) -> String {
        match &self.problem {
            Some(p) => format!("waiting: {p}"),
            None => "waiting".to_owned(),
        }
    }

    /// A gate the value may not go above; no value waits.
    fn max(&mut self, gate: &str, value: Option<f64>, max: f64, unit: fn(f64) -> String) {
        let threshold = format!("<= {}", unit(max));
        match value {
            None => {
                let state = self.waiting();
                self.push(gate, None, threshold, &state)
            }
            Some(x) if x > max => {
                let why = format!(
                    "gate {gate}: measured {} > threshold {}",
                    unit(x),
                    unit(max)
                );
                self.failed(gate, x, threshold, why)
            }
            Some(x) => self.push(gate, Some(x), threshold, "ok"),
        }
    }

    /// A gate the value must reach; below it waits.
    fn min(&mut self, gate: &str, value: Option<f64>, min: f64) -> bool {
        let enough = value.is_some_and(|v| v >= min);
        let state = match (enough, value) {
            (true, _) => "ok".to_owned(),
            (false, Some(_)) => "waiting".to_owned(),
            (false, None) => self.waiting(),
        };
        self.push(gate, value, format!(">= {min}"), &state);
        enough
    }
}

fn plain(x: f64) -> String {
    format!("{x}")
}

fn share(x: f64) -> String {
    format!("{x:.4}")
}

fn seconds(x: f64) -> String {
    format!("{x:.3}s")
}

/// Judges a step's gates. `queries`: each query gate's value (or why it
/// has none), in the plan's order.
pub(crate) fn judge(
    stage: &Stage,
    gates: &Gates,
    m: &Measured,
    queries: &[(Option<f64>, Option<String>)],
) -> (Vec<GateView>, Verdict) {
    let mut j = Judged {
        problem: m.problems.first().cloned(),
        ..Judged::default()
    };
    match stage {
        Stage::Shadow { .. } => {
            let enough = j.min("min-compared", m.compared, gates.min_compared() as f64);
            if let Some(max) = gates.max_diff_rate {
                let rate = match (m.compared, m.diffs) {
                    (Some(c), Some(d)) if enough && c > 0.0 => Some((d / c).min(1.0)),
                    _ => None,
                };
                j.max("max-diff-rate", rate, max, share);
            }
        }
        Stage::Synthetic { .. } | Stage::Canary { .. } => {
            let enough = j.min("min-requests", m.requests, gates.min_requests() as f64);
            if let Some(max) = gates.max_error_rate {
                let rate = match (m.requests, m.errors) {
                    (Some(r), Some(e)) if enough && r > 0.0 => Some((e / r).min(1.0)),
                    _ => None,
                };
                j.max("max-error-rate", rate, max, share);
            }
            if let Some(max) = gates.max_p99() {
                let p99 = if enough { m.p99 } else { None };
                j.max("max-p99", p99, max.as_secs_f64(), seconds);
            }
        }
        _ => {}
    }
    // Judged by default where the source reports guard trips (Prometheus,
    // the hosts; not CloudWatch).
    if m.guard_trips.is_some() || gates.max_guard_trips.is_some() {
        let trips = gates.max_guard_trips.unwrap_or(0) as f64;
        j.max("max-guard-trips", m.guard_trips, trips, plain);
    }
    for (q, (value, why)) in gates.queries.iter().zip(queries) {
        let name = q.label();
        let threshold = match (q.min, q.max) {
            (Some(lo), Some(hi)) => format!("{lo} ..= {hi}"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => String::new(),
        };
        match value {
            None => {
                let state = match why {
                    Some(w) => format!("waiting: {w}"),
                    None => "waiting".to_owned(),
                };
                j.push(&name, None, threshold, &state);
            }
            Some(x) if q.max.is_some_and(|hi| *x > hi) || q.min.is_some_and(|lo| *x < lo) => {
                let why = format!("query gate {name:?}: measured {x} outside {threshold}");
                j.failed(&name, *x, threshold, why);
            }
            Some(x) => j.push(&name, Some(*x), threshold, "ok"),
        }
    }
    let verdict = match j.fail {
        Some(why) => Verdict::Fail(why),
        None if j.out.iter().all(|g| g.state == "ok") => Verdict::Pass,
        None => Verdict::Wait,
    };
    (j.out, verdict)
}

/// Why the gates still wait, for a failure after `max-wait`: each
/// waiting gate and what it lacks.
pub(crate) fn waiting(gates: &[GateView]) -> String {
    gates
        .iter()
        .filter(|g| g.state != "ok")
        .map(|g| match g.value {
            Some(v) => format!("gate {} has {v}, needs {}", g.gate, g.threshold),
            None => format!(
                "gate {} has no data ({})",
                g.gate,
                g.state
                    .strip_prefix("waiting: ")
                    .unwrap_or("nothing measured")
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::rollout::plan::Plan;

    fn canary(gates: &str) -> Plan {
        Plan::parse(&format!(
            r#"{{"stages": [{{"stage": "canary", "percent": 5, "bake": "1m", "gates": {gates}}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn rates_are_judged_once_there_are_enough_requests() {
        let plan = canary(r#"{"min-requests": 10, "max-error-rate": 0.1, "max-p99": "200ms"}"#);
        let stage = &plan.stages[0];
        let gates = stage.gates().unwrap();
        let few = Measured {
            requests: Some(3.0),
            errors: Some(3.0),
            p99: Some(1.0),
            guard_trips: Some(0.0),
            ..Measured::default()
        };
        let (views, verdict) = judge(stage, gates, &few, &[]);
        assert_eq!(verdict, Verdict::Wait, "{views:?}");
        let failing = Measured {
            requests: Some(20.0),
            errors: Some(5.0),
            ..few.clone()
        };
        let (_, verdict) = judge(stage, gates, &failing, &[]);
        match verdict {
            Verdict::Fail(why) => {
                assert!(why.contains("max-error-rate"), "{why}");
                assert!(why.contains("0.2500 > threshold 0.1000"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let healthy = Measured {
            requests: Some(20.0),
            errors: Some(1.0),
            p99: Some(0.05),
            ..few.clone()
        };
        assert_eq!(judge(stage, gates, &healthy, &[]).1, Verdict::Pass);
        // No p99 (no duration series): waiting, not passing.
        let no_p99 = Measured {
            p99: None,
            ..healthy.clone()
        };
        let (views, verdict) = judge(stage, gates, &no_p99, &[]);
        assert_eq!(verdict, Verdict::Wait);
        assert!(waiting(&views).contains("max-p99 has no data"), "{views:?}");
        // A guard trip fails the step.
        let tripped = Measured {
            guard_trips: Some(1.0),
            ..healthy
        };
        assert!(
            matches!(judge(stage, gates, &tripped, &[]).1, Verdict::Fail(w) if w.contains("max-guard-trips"))
        );
    }

    #[test]
    fn what_the_document_keeps_of_a_gate_is_short() {
        assert_eq!(short("abc", 3), "abc");
        assert_eq!(short("abcdef", 3), "abc…");
        assert_eq!(short("ééé", 3), "é…", "cut on a character boundary");
        let long = "x".repeat(5000);
        let g = view(&long, None, long.clone(), &long);
        assert!(
            g.gate.len() + g.threshold.len() + g.state.len() < 400,
            "{g:?}"
        );
    }

    #[test]
    fn a_query_without_data_waits_and_says_why() {
        let plan = canary(r#"{"queries": [{"name": "hosts up", "query": "sum(up)", "min": 2}]}"#);
        let stage = &plan.stages[0];
        let m = Measured {
            requests: Some(5.0),
            guard_trips: Some(0.0),
            ..Measured::default()
        };
        let none = [(None, Some("sum(up) returned no series".to_owned()))];
        let (views, verdict) = judge(stage, stage.gates().unwrap(), &m, &none);
        assert_eq!(verdict, Verdict::Wait);
        assert!(
            waiting(&views).contains("sum(up) returned no series"),
            "{views:?}"
        );
        let low = [(Some(1.0), None)];
        assert!(
            matches!(judge(stage, stage.gates().unwrap(), &m, &low).1, Verdict::Fail(w) if w.contains("hosts up"))
        );
        let ok = [(Some(2.0), None)];
        assert_eq!(
            judge(stage, stage.gates().unwrap(), &m, &ok).1,
            Verdict::Pass
        );
    }
}
