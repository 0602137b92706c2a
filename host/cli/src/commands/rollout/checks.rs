//! What a rollout checks with the live policy itself, before it moves
//! traffic: recorded requests decided with the route as it is and as the
//! next stage writes it (the replay gate), and whether the policy honours
//! a weight (`canary-percent`) or a mirror (`mirror-role`) at all.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use switchyard_config::{ConfigStore, Loader};
use switchyard_core::{Engine, Policy, Request, Route, RouteConfig};

use super::super::decide::request_lines;
use super::super::replay::{changes, parse_limit};

/// Requests made up to see what a policy does with a route: distinct
/// users (in the headers sticky policies key on), paths and addresses.
const PROBES: usize = 2000;

/// The live policy of a route config, from the store.
pub(crate) async fn live_policy(
    store: &Arc<dyn ConfigStore>,
    function: &str,
    config: &RouteConfig,
) -> Result<Arc<Policy>> {
    let digest = config
        .policy
        .with_context(|| format!("{function}'s live route names no policy; publish one first"))?;
    let loader = Loader::new(store.clone(), Engine::new()?, None, 1);
    Ok(loader.policy(&digest).await?)
}

fn probes(function: &str, config: &RouteConfig) -> Vec<Arc<Request>> {
    let sticky = config
        .flags
        .get("sticky-header")
        .cloned()
        .unwrap_or_else(|| "x-user-id".to_owned());
    (0..PROBES)
        .map(|i| {
            let user = format!("rollout-probe-{i}");
            let mut headers = vec![
                ("x-user-id".to_owned(), user.clone()),
                (
                    "x-forwarded-for".to_owned(),
                    format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                ),
                ("cookie".to_owned(), format!("session={user}")),
            ];
            if sticky != "x-user-id" {
                headers.push((sticky.clone(), user.clone()));
            }
            Arc::new(Request::new(function, "GET", format!("/{user}"), headers))
        })
        .collect()
}

/// Refuses a weight the policy does not honour: with `canary-percent` at
/// `percent`, production requests must reach the candidate in about that
/// share (within four standard deviations, and half a percent).
pub(crate) fn honours_weight(
    policy: &Arc<Policy>,
    function: &str,
    config: &RouteConfig,
    candidate: &str,
    percent: f64,
) -> Result<()> {
    let route = Route::new(function.to_owned(), config.clone())?;
    let mut evaluator = policy.evaluator();
    let mut to_candidate = 0usize;
    let probes = probes(function, config);
    for r in &probes {
        let (d, failed) = evaluator.decide(r, &route);
        if let Some(e) = failed {
            bail!("the live policy failed on a probe request with canary-percent={percent}: {e}");
        }
        if d.target == candidate && d.traffic == switchyard_core::Traffic::Production {
            to_candidate += 1;
        }
    }
    let n = probes.len() as f64;
    let expected = percent / 100.0;
    let share = to_candidate as f64 / n;
    let slack = 4.0 * (expected * (1.0 - expected) / n).sqrt() + 0.005;
    if (share - expected).abs() > slack {
        bail!(
            "the live policy ({}) does not honour canary-percent: with canary-percent={percent}, {to_candidate} of {} probe requests went to {candidate} as production ({:.1} %, expected about {percent} %). Use a policy that reads it (sticky-canary does: docs/policies.md), or leave canary stages out of the plan",
            policy.digest(),
            probes.len(),
            share * 100.0
        );
    }
    Ok(())
}

/// Refuses a shadow stage the policy cannot serve: with `mirror-role` set
/// to the candidate, production requests must be mirrored to it.
pub(crate) fn honours_mirror(
    policy: &Arc<Policy>,
    function: &str,
    config: &RouteConfig,
    candidate: &str,
) -> Result<()> {
    let route = Route::new(function.to_owned(), config.clone())?;
    let mut evaluator = policy.evaluator();
    let probes = probes(function, config);
    let mirrored = probes
        .iter()
        .filter(|r| evaluator.decide(r, &route).0.mirror.as_deref() == Some(candidate))
        .count();
    if mirrored * 2 < probes.len() {
        bail!(
            "the live policy ({}) does not mirror to the candidate with mirror-role=candidate: {mirrored} of {} probe requests were mirrored to {candidate}. Use a policy that reads it (synthetic-header does: docs/policies.md), or leave the shadow stage out of the plan",
            policy.digest(),
            probes.len()
        );
    }
    Ok(())
}

/// The replay gate: recorded requests decided by the live policy with the
/// live route and with each of `next` (the routes later stages write,
/// named); under each, at most `max_changed` of them may change target or
/// traffic class (a mirror is the shadow stage's purpose, not a change of
/// what the caller gets). Returns a summary.
pub(crate) fn replay(
    policy: &Arc<Policy>,
    function: &str,
    live: &RouteConfig,
    next: &[(String, RouteConfig)],
    requests: &Path,
    max_changed: Option<&str>,
) -> Result<String> {
    let limit = parse_limit(max_changed.unwrap_or("0"))?;
    let from = Route::new(function.to_owned(), live.clone())?;
    let mut recorded = Vec::new();
    for line in request_lines(requests, Some(function))? {
        let request = line.context("the replay stage's requests")?;
        if request.function == function {
            recorded.push(Arc::new(request));
        }
    }
    if recorded.is_empty() {
        bail!(
            "{} has no requests of {function} to replay (one request JSON a line, as `serve --capture` writes them)",
            requests.display()
        );
    }
    let mut evaluator = policy.evaluator();
    let mut summaries = Vec::new();
    for (stage, config) in next {
        let to = Route::new(function.to_owned(), config.clone())?;
        let mut changed = 0u64;
        let mut example = None;
        for request in &recorded {
            let (a, _) = evaluator.decide(request, &from);
            let (b, failed) = evaluator.decide(request, &to);
            let mut what: Vec<&str> = changes(&a, &b)
                .into_iter()
                .filter(|c| *c != "mirror")
                .collect();
            if failed.is_some() {
                what.push("fail-safe");
            }
            if !what.is_empty() {
                changed += 1;
                example.get_or_insert_with(|| {
                    format!(
                        "{} {}: {} {} -> {} {} ({})",
                        request.method,
                        request.path,
                        a.target,
                        a.traffic.as_str(),
                        b.target,
                        b.traffic.as_str(),
                        what.join(", ")
                    )
                });
            }
        }
        let total = recorded.len() as u64;
        let summary = format!(
            "{changed} of {total} recorded requests change target or traffic class under the {stage} stage's route"
        );
        if !limit.passes(changed, total) {
            bail!(
                "gate replay max-changed: {summary}, more than {} (e.g. {})",
                max_changed.unwrap_or("0"),
                example.unwrap_or_default()
            );
        }
        summaries.push(summary);
    }
    Ok(summaries.join("; "))
}
