//! `switchyard rollout start|status|approve|abort|resume <function>`: the
//! whole QA-in-production pipeline as one resumable command, gated on a
//! replay, shadow diffs, synthetic QA and fleet-wide metrics.

mod checks;
mod drive;
mod judge;
mod measure;
mod plan;
mod state;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use switchyard_config::ConfigStore;

use super::shared::{StoreArg, block_on, print_json};
use measure::SourceSpec;
use plan::Plan;
use state::{Doc, Held, Phase, Runner, now_ms};

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
    /// Start a rollout of a function's candidate and drive it to its end.
    ///
    /// Walks the plan's stages in order, each step written as an ordinary
    /// route version (`history` shows every one with its reason): replay
    /// (recorded requests decided under the next stage's route), shadow
    /// (production mirrored to the candidate, answers compared), synthetic
    /// (QA's tagged requests reach it), canary steps (a share of
    /// production, by `canary-percent`), promote. Each step bakes while its
    /// gates are measured across the fleet (--prometheus, or --hosts); a
    /// failed gate rolls back (candidate out, production mode) and exits 1
    /// naming the gate, its value and its threshold. A gate with no data is
    /// not a passing gate: it waits (gates.max-wait), then fails.
    ///
    /// The rollout's state lives in the store: `status` shows it from
    /// anywhere, a runner that dies is continued by `resume` from any
    /// machine, and a second runner is told who drives.
    ///
    /// Plan (JSON): {"stages": [{"stage": "canary", "percent": 10,
    /// "bake": "5m", "gates": {"min-requests": 100, "max-error-rate":
    /// 0.01, "max-p99": "800ms"}}, {"stage": "promote"}]}: CodeDeploy's
    /// Canary10Percent5Minutes. Every stage and gate: docs/rollouts.md.
    Start(StartArgs),
    /// Where a function's rollout is: stage, step, time left in the bake,
    /// each gate's value against its threshold, who drives it. A view
    /// with a progress bar on a terminal, JSON otherwise (or --json).
    Status {
        #[command(flatten)]
        store: StoreArg,
        /// The function.
        function: String,
        /// JSON even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Let a rollout waiting for approval (a stage with "approval": true
    /// whose bake and gates passed) go on.
    Approve {
        #[command(flatten)]
        store: StoreArg,
        /// The function.
        function: String,
    },
    /// Stop a rollout and roll back: candidate out, production mode. Its
    /// runner does it at its next check (this command waits for it); with
    /// no live runner, this command does it.
    Abort {
        #[command(flatten)]
        store: StoreArg,
        /// The function.
        function: String,
        /// Why, kept with the rollback's version.
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
    /// Check a plan without touching any store: prints its steps in order
    /// and the shortest time it can take (the bakes added up), or says what
    /// is wrong with it (exit 1). For a pipeline's lint step.
    Check {
        /// The rollout plan, a JSON file.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
    /// Go on with a rollout whose runner died (its lease ran out) or that
    /// stopped because its route was changed by hand, from the step it was
    /// at, from this machine.
    Resume(ResumeArgs),
}

/// How a runner reads the fleet's metrics and holds its lease.
#[derive(Debug, Args)]
pub(crate) struct RunnerArgs {
    /// A bearer token file for the hosts' admin listeners (--hosts; `serve
    /// --admin-token-file`).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// How long this runner's lease lasts past each heartbeat (it beats
    /// four times a lease): a runner silent for longer is taken to have
    /// died, and `resume` may take over.
    #[arg(long, default_value = "60s", value_parser = lease)]
    lease: Duration,
}

fn lease(raw: &str) -> Result<Duration, String> {
    let d = plan::duration(raw).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{raw:?} is shorter than 1s"));
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
    /// The rollout plan, a JSON file (see docs/rollouts.md).
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Read the fleet's metrics from this Prometheus HTTP API (it scrapes
    /// every host's admin /metrics), e.g. http://prometheus:9090.
    #[arg(long, value_name = "URL", conflicts_with = "hosts")]
    prometheus: Option<String>,
    /// Read them from these hosts' admin listeners, summed (a small
    /// fleet): comma-separated, e.g. http://10.0.0.5:9901,http://10.0.0.6:9901.
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        conflicts_with = "cloudwatch"
    )]
    hosts: Vec<String>,
    /// Read them from CloudWatch, in this namespace: the metrics the router
    /// function's and the mesh extension's EMF lines become (`serve
    /// --emf-namespace` for other hosts), with the usual AWS environment.
    #[arg(long, value_name = "NAMESPACE", conflicts_with = "prometheus")]
    cloudwatch: Option<String>,
    #[command(flatten)]
    runner: RunnerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
    #[command(flatten)]
    runner: RunnerArgs,
}

pub(crate) fn run(cmd: RolloutCommand) -> Result<()> {
    match cmd {
        RolloutCommand::Start(a) => start(a),
        RolloutCommand::Status {
            store,
            function,
            json,
        } => status(&store.store, &function, json),
        RolloutCommand::Approve { store, function } => approve(&store.store, &function),
        RolloutCommand::Abort {
            store,
            function,
            reason,
        } => abort(&store.store, &function, &reason),
        RolloutCommand::Resume(a) => resume(a),
        RolloutCommand::Check { plan } => check(&plan),
    }
}

fn check(path: &std::path::Path) -> Result<()> {
    let plan = Plan::read(path)?;
    let mut steps = Vec::new();
    let mut least = Duration::ZERO;
    for stage in &plan.stages {
        for i in 0..stage.steps() {
            let step = stage.step(i);
            least += stage.bake();
            let mut label = step.label();
            if stage.bake() > Duration::ZERO {
                label.push_str(&format!(" ({:?} bake)", stage.bake()));
            }
            if step.last && stage.approval() {
                label.push_str(", then approval");
            }
            steps.push(label);
        }
    }
    print_json(&json!({
        "plan": path.display().to_string(),
        "steps": steps,
        "check-every-seconds": plan.check_every().as_secs_f64(),
        "least-seconds": least.as_secs_f64(),
    }))
}

fn token(runner: &RunnerArgs) -> Result<Option<String>> {
    runner
        .admin_token_file
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the admin token file {}", p.display()))
        })
        .transpose()
}

/// Says why a rollout that exists keeps another from starting or resuming.
fn busy(function: &str, doc: &Doc) -> anyhow::Error {
    let now = now_ms();
    if doc.runner.live(now) && doc.phase != Phase::Stopped {
        anyhow::anyhow!(
            "the rollout of {function} is driven by {}; watch it with `switchyard rollout status {function}`",
            doc.runner.describe(now)
        )
    } else {
        anyhow::anyhow!(
            "the rollout of {function} is {} at stage {} (its runner, {}, holds it no more): `switchyard rollout resume {function}` goes on from there, `switchyard rollout abort {function}` rolls back",
            doc.phase.as_str(),
            doc.stage + 1,
            doc.runner.describe(now)
        )
    }
}

fn start(args: StartArgs) -> Result<()> {
    let plan = Plan::read(&args.plan)?;
    let metrics = match (&args.prometheus, args.hosts.is_empty(), &args.cloudwatch) {
        (Some(url), true, None) => SourceSpec::Prometheus(url.clone()),
        (None, false, None) => SourceSpec::Hosts(args.hosts.clone()),
        (None, true, Some(ns)) => {
            switchyard_proxy::Emf::new(ns).map_err(|e| anyhow::anyhow!("--cloudwatch: {e}"))?;
            SourceSpec::Cloudwatch(ns.clone())
        }
        _ => bail!(
            "say where the fleet's metrics are: --prometheus <URL> (a Prometheus scraping every host), --hosts <admin URLs> (a small fleet, summed) or --cloudwatch <namespace> (the EMF metrics of Lambda front ends)"
        ),
    };
    let gates = || plan.stages.iter().filter_map(|s| s.gates());
    if !matches!(metrics, SourceSpec::Prometheus(_)) && gates().any(|g| !g.queries.is_empty()) {
        bail!("the plan has query gates, which Prometheus answers: pass --prometheus <URL>");
    }
    if let SourceSpec::Cloudwatch(_) = metrics {
        if plan
            .stages
            .iter()
            .any(|s| matches!(s, plan::Stage::Shadow { .. }))
        {
            bail!(
                "a shadow stage is judged on shadow comparisons, which the EMF lines do not carry: pass --prometheus or --hosts"
            );
        }
        if gates().any(|g| g.max_guard_trips.is_some()) {
            bail!(
                "max-guard-trips counts guard trips, which the EMF lines do not carry: pass --prometheus or --hosts, or leave it out"
            );
        }
    }
    let token = token(&args.runner)?;
    let function = args.function.clone();
    switchyard_config::check_function_name(&function)?;
    block_on(async {
        let store = switchyard_config::open(&args.store.store).await?;
        let live = drive::live(&store, &function).await?;
        let candidate = match plan
            .candidate
            .clone()
            .or_else(|| live.config.versions.get("candidate").cloned())
        {
            Some(c) => c,
            None => bail!(
                "{function} has no candidate to roll out: name one with `switchyard set {function} --version candidate=<qualifier>`, or give \"candidate\" in the plan"
            ),
        };
        let stable = live
            .config
            .versions
            .get("stable")
            .cloned()
            .unwrap_or_default();
        if candidate == stable {
            bail!("{candidate} is {function}'s stable version already; nothing to roll out");
        }
        let existing = state::read(&*store, &function).await?;
        if let Some(r) = &existing
            && !r.doc.phase.is_over()
        {
            return Err(busy(&function, &r.doc));
        }
        // The policy must do what the plan asks, before anything moves.
        let policy = checks::live_policy(&store, &function, &live.config).await?;
        drive::check_policy(&policy, &function, &live.config, &plan, &candidate)?;
        let plan_blob = serde_json::to_vec(&plan)?;
        let digest = store.put_blob(&plan_blob, &|_, _| {}).await?;
        let doc = Doc {
            plan: digest,
            candidate: candidate.clone(),
            stable,
            phase: Phase::Running,
            runner: Runner::new(args.runner.lease),
            stage: 0,
            step: 0,
            since: 0,
            route_version: live.version,
            gates: Vec::new(),
            approved: false,
            abort: None,
            metrics,
            outcome: None,
            started: now_ms(),
            ended: None,
        };
        let expected = existing.map_or(0, |r| r.revision);
        let Some(revision) = state::write(&*store, &function, &doc, expected).await? else {
            let now = state::read(&*store, &function).await?;
            return Err(match now {
                Some(r) if !r.doc.phase.is_over() => busy(&function, &r.doc),
                _ => anyhow::anyhow!(
                    "another runner wrote the rollout of {function} at the same moment; try again"
                ),
            });
        };
        eprintln!(
            "rollout: {function}: {candidate} from version {}, {} stage(s), metrics from {}, driven by {}",
            live.version,
            plan.stages.len(),
            doc.metrics.describe(),
            doc.runner.id
        );
        drive_and_report(&store, &function, doc, revision, plan, token).await
    })
}

fn resume(args: ResumeArgs) -> Result<()> {
    let token = token(&args.runner)?;
    let function = args.function.clone();
    block_on(async {
        let store = switchyard_config::open(&args.store.store).await?;
        let Some(read) = state::read(&*store, &function).await? else {
            bail!(
                "{function} has no rollout to resume; start one with `switchyard rollout start {function} --plan <file>`"
            );
        };
        if read.doc.phase.is_over() {
            bail!(
                "the rollout of {function} is over ({}: {}); start a new one",
                read.doc.phase.as_str(),
                read.doc.outcome.as_deref().unwrap_or("")
            );
        }
        if read.doc.runner.live(now_ms()) && read.doc.phase != Phase::Stopped {
            return Err(busy(&function, &read.doc));
        }
        let plan = load_plan(&*store, &read.doc).await?;
        let live = drive::live(&store, &function).await?;
        let mut doc = read.doc.clone();
        let previous = doc.runner.id.clone();
        doc.runner = Runner::new(args.runner.lease);
        if doc.phase == Phase::Stopped || live.version != doc.route_version {
            // Over the route as it is now: the step is written again.
            doc.route_version = live.version;
            doc.since = 0;
        }
        if doc.phase == Phase::Stopped {
            doc.phase = Phase::Running;
            doc.outcome = None;
        }
        let Some(revision) = state::write(&*store, &function, &doc, read.revision).await? else {
            let now = state::read(&*store, &function).await?;
            return Err(match now {
                Some(r) if !r.doc.phase.is_over() => busy(&function, &r.doc),
                _ => anyhow::anyhow!(
                    "the rollout of {function} changed while resuming; look at `switchyard rollout status {function}`"
                ),
            });
        };
        eprintln!(
            "rollout: {function}: resumed at stage {} step {} (was driven by {previous}), driven by {}",
            doc.stage + 1,
            doc.step + 1,
            doc.runner.id
        );
        drive_and_report(&store, &function, doc, revision, plan, token).await
    })
}

/// Drives a rollout this runner holds to its end, then prints its status.
async fn drive_and_report(
    store: &std::sync::Arc<dyn ConfigStore>,
    function: &str,
    doc: Doc,
    revision: u64,
    plan: Plan,
    token: Option<String>,
) -> Result<()> {
    let held = Held {
        store: store.clone(),
        function: function.to_owned(),
        doc,
        revision,
    };
    let outcome = drive::drive(held, plan, token).await;
    print_status(&**store, function).await?;
    outcome
}

async fn load_plan(store: &dyn ConfigStore, doc: &Doc) -> Result<Plan> {
    let bytes = store
        .get_blob(&doc.plan)
        .await
        .with_context(|| format!("the rollout's plan {}", doc.plan))?;
    let text = String::from_utf8(bytes).context("the rollout's plan is not text")?;
    Plan::parse(&text).context("the rollout's stored plan")
}

/// Changes the stored document by compare-and-swap, reading it again
/// after another writer's change.
async fn change(
    store: &dyn ConfigStore,
    function: &str,
    mut f: impl FnMut(&mut Doc) -> Result<()>,
) -> Result<Doc> {
    loop {
        let Some(read) = state::read(store, function).await? else {
            bail!("{function} has no rollout");
        };
        let mut doc = read.doc;
        f(&mut doc)?;
        if state::write(store, function, &doc, read.revision)
            .await?
            .is_some()
        {
            return Ok(doc);
        }
    }
}

fn approve(store: &str, function: &str) -> Result<()> {
    block_on(async {
        let store = switchyard_config::open(store).await?;
        change(&*store, function, |d| {
            if d.phase != Phase::WaitingApproval {
                bail!(
                    "the rollout of {function} is {} at stage {}; nothing waits for approval",
                    d.phase.as_str(),
                    d.stage + 1
                );
            }
            d.approved = true;
            Ok(())
        })
        .await?;
        eprintln!("rollout: {function}: approved; its runner goes on at its next check");
        print_status(&*store, function).await
    })
}

fn abort(store_uri: &str, function: &str, reason: &str) -> Result<()> {
    block_on(async {
        let store = switchyard_config::open(store_uri).await?;
        let asked = format!(
            "{} (switchyard rollout abort, pid {})",
            judge::short(reason, 300),
            std::process::id()
        );
        let doc = change(&*store, function, |d| {
            if d.phase.is_over() {
                bail!(
                    "the rollout of {function} is over ({}); roll back with `switchyard rollback {function}` instead",
                    d.phase.as_str()
                );
            }
            d.abort = Some(asked.clone());
            Ok(())
        })
        .await?;
        // A live runner rolls back at its next check: wait for it, for up
        // to its lease; else (or then) roll back here.
        if doc.runner.live(now_ms()) && doc.phase != Phase::Stopped {
            eprintln!(
                "rollout: {function}: abort asked; waiting for its runner, {}",
                doc.runner.id
            );
            let until = now_ms() + doc.runner.lease * 2;
            while now_ms() < until {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(r) = state::read(&*store, function).await?
                    && (r.doc.phase.is_over() || !r.doc.runner.live(now_ms()))
                {
                    if r.doc.phase.is_over() {
                        return print_status(&*store, function).await;
                    }
                    break;
                }
            }
        }
        // Take it over and roll back.
        let Some(read) = state::read(&*store, function).await? else {
            bail!("{function} has no rollout");
        };
        if read.doc.phase.is_over() {
            return print_status(&*store, function).await;
        }
        let mut doc = read.doc;
        doc.runner = Runner::new(Duration::from_secs(60));
        let Some(revision) = state::write(&*store, function, &doc, read.revision).await? else {
            bail!("the rollout of {function} changed while aborting; run abort again");
        };
        let mut held = Held {
            store: store.clone(),
            function: function.to_owned(),
            doc,
            revision,
        };
        let e = drive::roll_back(&mut held, Phase::Aborted, asked.clone()).await?;
        eprintln!("rollout: {e}");
        print_status(&*store, function).await
    })
}

/// The status as JSON.
async fn status_json(store: &dyn ConfigStore, function: &str) -> Result<serde_json::Value> {
    let Some(read) = state::read(store, function).await? else {
        bail!(
            "{function} has no rollout; start one with `switchyard rollout start {function} --plan <file>`"
        );
    };
    let doc = read.doc;
    let plan = load_plan(store, &doc).await.ok();
    let now = now_ms();
    let stage = plan.as_ref().and_then(|p| p.stages.get(doc.stage));
    let step = stage.map(|s| s.step(doc.step));
    let bake = stage.map(|s| s.bake()).unwrap_or_default();
    let age = if doc.since == 0 || doc.phase.is_over() {
        Duration::ZERO
    } else {
        Duration::from_millis(now.saturating_sub(doc.since))
    };
    Ok(json!({
        "function": function,
        "phase": doc.phase,
        "candidate": doc.candidate,
        "stable": doc.stable,
        "stage": doc.stage + 1,
        "stages": plan.as_ref().map(|p| p.stages.iter().map(|s| s.name()).collect::<Vec<_>>()),
        "step": step.as_ref().map(|s| s.label()),
        "bake-seconds": bake.as_secs_f64(),
        "baked-seconds": age.as_secs_f64().min(bake.as_secs_f64()),
        "left-seconds": bake.saturating_sub(age).as_secs_f64(),
        "gates": doc.gates,
        "route-version": doc.route_version,
        "runner": {
            "id": doc.runner.id,
            "live": doc.runner.live(now) && !doc.phase.is_over(),
            "heartbeat-seconds-ago": now.saturating_sub(doc.runner.beat) as f64 / 1000.0,
        },
        "metrics": doc.metrics,
        "abort": doc.abort,
        "outcome": doc.outcome,
        "started-ms": doc.started,
        "ended-ms": doc.ended,
        "revision": read.revision,
    }))
}

async fn print_status(store: &dyn ConfigStore, function: &str) -> Result<()> {
    print_json(&status_json(store, function).await?)
}

fn status(store: &str, function: &str, as_json: bool) -> Result<()> {
    block_on(async {
        let store = switchyard_config::open(store).await?;
        let v = status_json(&*store, function).await?;
        if as_json || !std::io::stdout().is_terminal() {
            return print_json(&v);
        }
        println!("{}", view(&v));
        Ok(())
    })
}

/// The status for a person: stage, a bar of the bake, each gate.
fn view(v: &serde_json::Value) -> String {
    let mut out = String::new();
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let at = v["stage"].as_u64().unwrap_or(1) as usize;
    let path: Vec<String> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| match (i + 1).cmp(&at) {
            std::cmp::Ordering::Less => format!("{s} ✓"),
            std::cmp::Ordering::Equal => format!("[{s}]"),
            std::cmp::Ordering::Greater => s.to_string(),
        })
        .collect();
    out.push_str(&format!(
        "{} rollout of {} → {}: {}\n  {}\n",
        v["function"].as_str().unwrap_or(""),
        v["stable"].as_str().unwrap_or(""),
        v["candidate"].as_str().unwrap_or(""),
        v["phase"].as_str().unwrap_or(""),
        path.join(" → ")
    ));
    let bake = v["bake-seconds"].as_f64().unwrap_or(0.0);
    if bake > 0.0 {
        let done = v["baked-seconds"].as_f64().unwrap_or(0.0);
        let width = 30;
        let filled = ((done / bake) * width as f64).round() as usize;
        out.push_str(&format!(
            "  {} [{}{}] {:.0}s of {:.0}s, {:.0}s left\n",
            v["step"].as_str().unwrap_or(""),
            "█".repeat(filled.min(width)),
            "░".repeat(width - filled.min(width)),
            done,
            bake,
            v["left-seconds"].as_f64().unwrap_or(0.0)
        ));
    }
    for g in v["gates"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<8} {:<20} {:>12} {}\n",
            g["state"].as_str().unwrap_or(""),
            g["gate"].as_str().unwrap_or(""),
            g["value"]
                .as_f64()
                .map_or("-".to_owned(), |x| format!("{x:.4}")),
            g["threshold"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "  runner {} ({}; heartbeat {:.0}s ago)\n",
        v["runner"]["id"].as_str().unwrap_or(""),
        if v["runner"]["live"] == true {
            "live"
        } else {
            "not running"
        },
        v["runner"]["heartbeat-seconds-ago"].as_f64().unwrap_or(0.0)
    ));
    if let Some(o) = v["outcome"].as_str() {
        out.push_str(&format!("  {o}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_view_shows_the_stages_a_bar_of_the_bake_and_each_gate() {
        let v = json!({
            "function": "orders", "phase": "running", "candidate": "8", "stable": "7",
            "stage": 2, "stages": ["shadow", "canary", "promote"], "step": "canary 25%",
            "bake-seconds": 60.0, "baked-seconds": 30.0, "left-seconds": 30.0,
            "gates": [{"gate": "max-error-rate", "value": 0.002, "threshold": "<= 0.0100", "state": "ok"}],
            "runner": {"id": "pid 7 on ci", "live": true, "heartbeat-seconds-ago": 2.0},
        });
        let text = view(&v);
        assert!(text.contains("orders rollout of 7 → 8: running"), "{text}");
        assert!(text.contains("shadow ✓ → [canary] → promote"), "{text}");
        assert!(
            text.contains(&format!(
                "canary 25% [{}{}] 30s of 60s, 30s left",
                "█".repeat(15),
                "░".repeat(15)
            )),
            "{text}"
        );
        assert!(
            text.contains("max-error-rate")
                && text.contains("0.0020")
                && text.contains("<= 0.0100"),
            "{text}"
        );
        assert!(
            text.contains("runner pid 7 on ci (live; heartbeat 2s ago)"),
            "{text}"
        );
    }
}
