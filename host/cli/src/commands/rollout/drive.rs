//! The runner: walks a plan's steps, each written as an ordinary route
//! version, bakes it while measuring its gates across the fleet, and on a
//! failed gate (or an abort) rolls back: candidate out, production mode.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use switchyard_config::{ConfigStore, StoredRoute};
use switchyard_core::{Mode, RouteConfig};

use super::super::shared::{ExpectArg, latest, write_route};
use super::checks;
use super::judge::{Verdict, judge, waiting};
use super::measure::{Source, Subject};
use super::plan::{Plan, Stage, Step};
use super::state::{Held, Phase, now_ms};

/// The flags a rollout writes, and takes out when it ends.
pub(crate) const WEIGHT_FLAG: &str = "canary-percent";
pub(crate) const MIRROR_FLAG: &str = "mirror-role";

/// The route a step runs on, from the live one.
pub(crate) fn step_config(live: &RouteConfig, step: &Step<'_>, candidate: &str) -> RouteConfig {
    let mut c = live.clone();
    c.flags.remove(WEIGHT_FLAG);
    c.flags.remove(MIRROR_FLAG);
    c.versions.insert("candidate".into(), candidate.to_owned());
    match step.stage {
        Stage::Shadow { .. } => {
            c.mode = Mode::Production;
            c.flags.insert(MIRROR_FLAG.into(), "candidate".into());
        }
        Stage::Synthetic { .. } => c.mode = Mode::Synthetic,
        Stage::Canary { .. } => {
            c.mode = Mode::Production;
            let p = step.percent.unwrap_or_default();
            c.flags.insert(WEIGHT_FLAG.into(), format!("{p}"));
        }
        Stage::Promote {} => {
            c.mode = Mode::Production;
            c.versions.insert("stable".into(), candidate.to_owned());
            c.versions.remove("candidate");
        }
        Stage::Replay { .. } => {}
    }
    c
}

/// The route after a rollback: the candidate out, production mode, no
/// weight or mirror.
pub(crate) fn rolled_back(live: &RouteConfig) -> RouteConfig {
    let mut c = live.clone();
    c.flags.remove(WEIGHT_FLAG);
    c.flags.remove(MIRROR_FLAG);
    c.versions.remove("candidate");
    c.mode = Mode::Production;
    c
}

/// The live route, read again while the store throttles.
pub(crate) async fn live(store: &Arc<dyn ConfigStore>, function: &str) -> Result<StoredRoute> {
    let mut pause = Duration::from_millis(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match latest(&**store, function).await {
            Err(e)
                if e.downcast_ref::<switchyard_config::StoreError>()
                    .is_some_and(|s| s.is_transient())
                    && tokio::time::Instant::now() < deadline =>
            {
                eprintln!("rollout: reading {function}: {e:#}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Writes a route version for the rollout over `read`, retrying while the
/// store throttles (never skipping the step).
async fn put(
    store: &Arc<dyn ConfigStore>,
    function: &str,
    config: &RouteConfig,
    read: u64,
    reason: String,
) -> Result<u64> {
    let expect = ExpectArg {
        expect_version: None,
        reason: Some(reason),
    };
    let mut pause = Duration::from_millis(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match write_route(&**store, function, config, read, &expect, "rollout").await {
            Err(e)
                if e.downcast_ref::<switchyard_config::StoreError>()
                    .is_some_and(|s| {
                        matches!(
                            s,
                            switchyard_config::StoreError::Throttled { .. }
                                | switchyard_config::StoreError::Unavailable { .. }
                                | switchyard_config::StoreError::Busy { .. }
                        )
                    })
                    && tokio::time::Instant::now() < deadline =>
            {
                eprintln!("rollout: writing {function}: {e:#}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// How a drive ended, when it did not succeed.
fn ended(held: &Held, phase: Phase, why: &str) -> anyhow::Error {
    anyhow!(
        "rollout of {} {}: {why}",
        held.function,
        match phase {
            Phase::Failed => "failed and was rolled back",
            Phase::Aborted => "was aborted and rolled back",
            Phase::Stopped => "stopped",
            _ => "ended",
        }
    )
}

/// Rolls the route back (candidate out, production mode) and records why.
pub(crate) async fn roll_back(held: &mut Held, phase: Phase, why: String) -> Result<anyhow::Error> {
    let store = held.store.clone();
    let function = held.function.clone();
    let candidate = held.doc.candidate.clone();
    let mut written = None;
    for _ in 0..5 {
        let now = live(&store, &function).await?;
        if now.config.versions.get("candidate") != Some(&candidate)
            && now.config.mode == Mode::Production
        {
            break; // already out (the guard, or an operator)
        }
        let back = rolled_back(&now.config);
        match put(
            &store,
            &function,
            &back,
            now.version,
            format!("rolled back: {why}"),
        )
        .await
        {
            Ok(v) => {
                written = Some(v);
                break;
            }
            Err(e)
                if e.downcast_ref::<switchyard_config::StoreError>()
                    .is_some_and(|s| {
                        matches!(s, switchyard_config::StoreError::Conflict { .. })
                    }) =>
            {
                continue; // someone wrote in between: roll back over theirs
            }
            Err(e) => return Err(e),
        }
    }
    let outcome = match written {
        Some(v) => format!("{why}; version {v} takes {candidate} out (mode production)"),
        None => format!("{why}; {candidate} was already out"),
    };
    eprintln!("rollout: {function}: {outcome}");
    let o = outcome.clone();
    held.update(move |d| {
        d.phase = phase;
        d.outcome = Some(super::judge::short(&o, 800));
        d.ended = Some(now_ms());
        if let Some(v) = written {
            d.route_version = v;
        }
    })
    .await?;
    Ok(ended(held, phase, &outcome))
}

/// What the live route says when it is no longer the version the rollout
/// wrote: the candidate taken out (the guard, an operator) ends it; any
/// other change stops it for a person to look.
async fn changed_by_hand(held: &mut Held, now: &StoredRoute) -> Result<anyhow::Error> {
    let by = format!(
        "version {}{}{}",
        now.version,
        now.note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        now.by
            .as_deref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default()
    );
    let (phase, why) = if now.config.versions.get("candidate") != Some(&held.doc.candidate) {
        (
            Phase::Failed,
            format!(
                "the candidate {} was taken out by {by}; nothing more to roll out",
                held.doc.candidate
            ),
        )
    } else {
        (
            Phase::Stopped,
            format!(
                "the route was changed by {by}, not by this rollout; it stopped without writing. `switchyard rollout resume {f}` goes on from this step over the route as it is now, `switchyard rollout abort {f}` rolls back",
                f = held.function
            ),
        )
    };
    let w = why.clone();
    held.update(move |d| {
        d.phase = phase;
        d.outcome = Some(super::judge::short(&w, 800));
        if phase.is_over() {
            d.ended = Some(now_ms());
        }
    })
    .await?;
    Ok(ended(held, phase, &why))
}

/// Drives a held rollout to its end. `Ok` when it succeeded.
pub(crate) async fn drive(mut held: Held, plan: Plan, token: Option<String>) -> Result<()> {
    let mut source = Source::new(&held.doc.metrics, token).await?;
    let every = plan.check_every();
    let beat_every =
        Duration::from_millis(held.doc.runner.lease / 4).max(Duration::from_millis(100));
    loop {
        let (si, st) = (held.doc.stage, held.doc.step);
        let Some(stage) = plan.stages.get(si) else {
            held.update(|d| {
                d.phase = Phase::Succeeded;
                d.outcome = Some("every stage passed".into());
                d.ended = Some(now_ms());
            })
            .await?;
            eprintln!("rollout: {}: every stage passed", held.function);
            return Ok(());
        };
        let step = stage.step(st);
        let label = step.label();
        let now = live(&held.store, &held.function).await?;
        if now.version != held.doc.route_version {
            return Err(changed_by_hand(&mut held, &now).await?);
        }
        if let Some(why) = held.doc.abort.clone() {
            return Err(roll_back(&mut held, Phase::Aborted, why).await?);
        }
        match stage {
            Stage::Replay {
                requests,
                max_changed,
            } => {
                // Against the routes of the later shadow and synthetic
                // stages (else the first canary step's).
                let later = &plan.stages[si + 1..];
                let mut next: Vec<(String, RouteConfig)> = later
                    .iter()
                    .filter(|s| matches!(s, Stage::Shadow { .. } | Stage::Synthetic { .. }))
                    .map(|s| {
                        let step = s.step(0);
                        (
                            step.label(),
                            step_config(&now.config, &step, &held.doc.candidate),
                        )
                    })
                    .collect();
                if next.is_empty()
                    && let Some(c) = later.iter().find(|s| matches!(s, Stage::Canary { .. }))
                {
                    let step = c.step(0);
                    next.push((
                        step.label(),
                        step_config(&now.config, &step, &held.doc.candidate),
                    ));
                }
                let policy = checks::live_policy(&held.store, &held.function, &now.config).await?;
                match checks::replay(
                    &policy,
                    &held.function,
                    &now.config,
                    &next,
                    requests,
                    max_changed.as_deref(),
                ) {
                    Ok(summary) => eprintln!("rollout: {}: replay: {summary}", held.function),
                    Err(e) => {
                        // Nothing moved yet: the route stays as it was.
                        let why = format!("{e:#}");
                        let w = why.clone();
                        held.update(move |d| {
                            d.phase = Phase::Failed;
                            d.outcome = Some(super::judge::short(
                                &format!("{w}; no traffic had moved, the route is as it was"),
                                800,
                            ));
                            d.ended = Some(now_ms());
                        })
                        .await?;
                        return Err(ended(&held, Phase::Failed, &why));
                    }
                }
                advance(&mut held, &plan).await?;
                continue;
            }
            Stage::Promote {} => {
                let config = step_config(&now.config, &step, &held.doc.candidate);
                let v = put(
                    &held.store,
                    &held.function,
                    &config,
                    now.version,
                    format!("promote {} to stable", held.doc.candidate),
                )
                .await?;
                eprintln!(
                    "rollout: {}: version {v} promotes {} to stable",
                    held.function, held.doc.candidate
                );
                held.update(move |d| {
                    d.route_version = v;
                    d.phase = Phase::Succeeded;
                    d.outcome = Some(format!("promoted at version {v}"));
                    d.ended = Some(now_ms());
                    d.stage = si + 1;
                })
                .await?;
                return Ok(());
            }
            _ => {}
        }
        // A step that moves traffic: write it (once; a resumed runner finds
        // it written), then bake it.
        if held.doc.since == 0 {
            let config = step_config(&now.config, &step, &held.doc.candidate);
            let v = if config == now.config {
                now.version
            } else {
                put(
                    &held.store,
                    &held.function,
                    &config,
                    now.version,
                    format!("{label} of {}", held.doc.candidate),
                )
                .await?
            };
            eprintln!(
                "rollout: {}: {label}: version {v}, baking {:?}",
                held.function,
                stage.bake()
            );
            held.update(move |d| {
                d.route_version = v;
                d.since = now_ms();
                d.gates.clear();
                d.approved = false;
                d.phase = Phase::Running;
            })
            .await?;
        } else {
            eprintln!("rollout: {}: {label}: resumed mid-bake", held.function);
        }
        source.begin().await;
        let gates = stage.gates().cloned().unwrap_or_default();
        let bake = stage.bake();
        let max_wait = gates.max_wait(bake);
        let subject = Subject {
            function: held.function.clone(),
            candidate: held.doc.candidate.clone(),
            stable: held.doc.stable.clone(),
            traffic: if matches!(stage, Stage::Synthetic { .. }) {
                "synthetic"
            } else {
                "production"
            },
        };
        loop {
            let now = live(&held.store, &held.function).await?;
            if now.version != held.doc.route_version {
                return Err(changed_by_hand(&mut held, &now).await?);
            }
            let age = Duration::from_millis(now_ms().saturating_sub(held.doc.since));
            let m = source.measure(&subject, age).await;
            let mut queries = Vec::new();
            for q in &gates.queries {
                queries.push(source.query(&q.query, &subject, age).await);
            }
            let (views, verdict) = judge(stage, &gates, &m, &queries);
            for p in &m.problems {
                tracing::debug!(target: "switchyard::rollout", problem = %p, "a measurement found no data");
            }
            held.beat(Some(views.clone())).await?;
            if let Some(why) = held.doc.abort.clone() {
                return Err(roll_back(&mut held, Phase::Aborted, why).await?);
            }
            let line: Vec<String> = views
                .iter()
                .map(|g| {
                    format!(
                        "{} {} {} {}",
                        g.gate,
                        g.value.map_or("-".to_owned(), |v| format!("{v:.4}")),
                        g.threshold,
                        g.state
                    )
                })
                .collect();
            eprintln!(
                "rollout: {}: {label}: {:.0}s of {:.0}s: {}",
                held.function,
                age.as_secs_f64(),
                bake.as_secs_f64(),
                line.join("; ")
            );
            match verdict {
                Verdict::Fail(why) => {
                    let why = format!("{label}: {why}");
                    return Err(roll_back(&mut held, Phase::Failed, why).await?);
                }
                Verdict::Pass if age >= bake => {
                    if stage.approval() && step.last && !held.doc.approved {
                        if held.doc.phase != Phase::WaitingApproval {
                            eprintln!(
                                "rollout: {f}: {label} passed; waiting for `switchyard rollout approve {f}`",
                                f = held.function
                            );
                            held.update(|d| d.phase = Phase::WaitingApproval).await?;
                        }
                    } else {
                        break;
                    }
                }
                Verdict::Wait if age >= bake + max_wait => {
                    let why = format!(
                        "{label}: no verdict {:?} past the bake: {}",
                        max_wait,
                        waiting(&views)
                    );
                    return Err(roll_back(&mut held, Phase::Failed, why).await?);
                }
                _ => {}
            }
            // Sleep to the next check, renewing the lease meanwhile.
            let mut left = every;
            while !left.is_zero() {
                let nap = left.min(beat_every);
                tokio::time::sleep(nap).await;
                left -= nap;
                if !left.is_zero() {
                    held.beat(None).await?;
                }
            }
        }
        advance(&mut held, &plan).await?;
    }
}

/// Moves to the next step (or stage).
async fn advance(held: &mut Held, plan: &Plan) -> Result<()> {
    let (si, st) = (held.doc.stage, held.doc.step);
    let steps = plan.stages.get(si).map_or(1, Stage::steps);
    let (si, st) = if st + 1 < steps {
        (si, st + 1)
    } else {
        (si + 1, 0)
    };
    held.update(move |d| {
        d.stage = si;
        d.step = st;
        d.since = 0;
        d.gates.clear();
        d.approved = false;
        d.phase = Phase::Running;
    })
    .await
}

/// Checks, before anything is written, that the live policy can do what
/// the plan asks of it.
pub(crate) fn check_policy(
    policy: &Arc<switchyard_core::Policy>,
    function: &str,
    live: &RouteConfig,
    plan: &Plan,
    candidate: &str,
) -> Result<()> {
    for stage in &plan.stages {
        for i in 0..stage.steps() {
            let step = stage.step(i);
            let config = step_config(live, &step, candidate);
            match stage {
                Stage::Canary { .. } => checks::honours_weight(
                    policy,
                    function,
                    &config,
                    candidate,
                    step.percent.unwrap_or_default(),
                )?,
                Stage::Shadow { .. } => {
                    if live.shadow.is_none() {
                        bail!(
                            "the plan has a shadow stage, and {function}'s route has no shadow block to compare the mirror's answers with; add one (docs/routing.md#shadow), e.g. `\"shadow\": {{\"headers\": [\"content-type\"]}}`"
                        );
                    }
                    checks::honours_mirror(policy, function, &config, candidate)?
                }
                _ => {}
            }
        }
    }
    Ok(())
}
