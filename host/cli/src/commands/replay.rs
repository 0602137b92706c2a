//! `switchyard replay`: the same requests decided by two policies, and how
//! many decisions change; a gate a pipeline runs before `publish`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_config::{ConfigStore, Loader};
use switchyard_core::{Decision, Engine, Policy, Request, Route, RouteConfig};

use super::decide::{ReadFailed, request_lines};
use super::shared::{block_on, latest, load_config, load_policy, print_json};

// `switchyard replay --requests FILE --to COMPONENT [--from live|N|COMPONENT] ...`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The requests: one request JSON a line ('-' for stdin), as `decide
    /// --requests` reads them.
    #[arg(long)]
    requests: PathBuf,
    /// The policy component to compare against the current one.
    #[arg(long)]
    to: PathBuf,
    /// What decides today: `live` (each function's current version in the
    /// store), a store version number (with --function), or a component
    /// file.
    #[arg(long, default_value = "live")]
    from: String,
    /// The route config both decide with (default: the store's, of the
    /// version --from names, or the live one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The config store (dir:<path> or ssm:<prefix>); default SWITCHYARD_STORE.
    #[arg(long)]
    store: Option<String>,
    /// The function of requests that name none.
    #[arg(long)]
    function: Option<String>,
    /// Fail (exit 1) when more decisions than this change: a count (`10`)
    /// or a share of the requests (`5%`). By default any change passes.
    #[arg(long, value_name = "N|P%")]
    max_changed: Option<String>,
    /// A line that is not a request is reported (file and line number) and
    /// skipped, instead of ending the replay with that error.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Examples of changed decisions shown per function.
    #[arg(long, default_value_t = 3)]
    examples: usize,
}

/// How much change the gate lets through.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    Count(u64),
    Share(f64),
}

impl Limit {
    /// Whether `changed` of `total` decisions are within the limit.
    pub(crate) fn passes(self, changed: u64, total: u64) -> bool {
        match self {
            Limit::Count(n) => changed <= n,
            Limit::Share(p) => total == 0 || changed as f64 / total as f64 <= p,
        }
    }
}

pub(crate) fn parse_limit(raw: &str) -> Result<Limit> {
    let bad = || {
        anyhow::anyhow!(
            "--max-changed {raw:?} is neither a count (e.g. 10) nor a share of the requests (e.g. 5%)"
        )
    };
    match raw.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            Ok(Limit::Share(p / 100.0))
        }
        None => raw.trim().parse().map(Limit::Count).map_err(|_| bad()),
    }
}

/// One side of the comparison for one function: a policy and the route
/// (config) both decide with.
struct Side {
    policy: Arc<Policy>,
    route: Route,
}

/// What changed between two decisions: `target`, `traffic`, `mirror`.
pub(crate) fn changes(a: &Decision, b: &Decision) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.target != b.target {
        out.push("target");
    }
    if a.traffic != b.traffic {
        out.push("traffic");
    }
    if a.mirror != b.mirror {
        out.push("mirror");
    }
    out
}

fn shown(d: &Decision) -> Value {
    json!({"target": d.target, "traffic": d.traffic, "mirror": d.mirror, "reason": d.reason})
}

#[derive(Default)]
struct Tally {
    requests: u64,
    changed: u64,
    by_kind: BTreeMap<&'static str, u64>,
    examples: Vec<Value>,
}

pub(crate) fn run(args: ReplayArgs) -> Result<()> {
    let limit = args.max_changed.as_deref().map(parse_limit).transpose()?;
    let engine = Engine::new()?;
    let to = load_policy(&engine, &args.to)?;
    let from_file = PathBuf::from(&args.from);
    let from_policy = if args.from != "live" && args.from.parse::<u64>().is_err() {
        Some(load_policy(&engine, &from_file).with_context(|| {
            format!(
                "--from {:?} is not `live`, a version number or a readable component",
                args.from
            )
        })?)
    } else {
        None
    };
    let config = args.config.as_deref().map(load_config).transpose()?;
    let store_uri = args.store.clone().or_else(|| {
        std::env::var("SWITCHYARD_STORE")
            .ok()
            .filter(|s| !s.is_empty())
    });

    let requests = read_requests(&args)?;
    let functions: Vec<String> = {
        let mut f: Vec<String> = requests.iter().map(|r| r.function.clone()).collect();
        f.sort();
        f.dedup();
        f
    };
    // Each function's "from" side: a component file with the given config,
    // or the store's version (its policy, and its config unless given).
    let mut sides: BTreeMap<String, Side> = BTreeMap::new();
    for function in &functions {
        let side = match (&from_policy, &config) {
            (Some(policy), Some(config)) => Side {
                policy: policy.clone(),
                route: Route::new(function.clone(), config.clone())?,
            },
            _ => {
                let Some(uri) = &store_uri else {
                    bail!(
                        "--from {} needs the store (--store or SWITCHYARD_STORE){}",
                        args.from,
                        if from_policy.is_some() {
                            " for the route config, or pass --config"
                        } else {
                            ""
                        }
                    );
                };
                let (policy, stored) =
                    from_store(&engine, uri, function, &args.from, args.function.as_deref())?;
                Side {
                    policy: from_policy.clone().unwrap_or(policy),
                    route: Route::new(function.clone(), config.clone().unwrap_or(stored))?,
                }
            }
        };
        sides.insert(function.clone(), side);
    }

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut evaluators = BTreeMap::new();
    for request in requests {
        let side = &sides[&request.function];
        let (old, new) = evaluators
            .entry(request.function.clone())
            .or_insert_with(|| (side.policy.evaluator(), to.evaluator()));
        let request = Arc::new(request);
        let (a, _) = old.decide(&request, &side.route);
        let (b, failed) = new.decide(&request, &side.route);
        let tally = tallies.entry(request.function.clone()).or_default();
        tally.requests += 1;
        let mut changed = changes(&a, &b);
        // A policy that fails is answered with the fail-safe, which may
        // equal today's decision: it is a change all the same (the policy
        // decided nothing), or a gate would pass a policy that always traps.
        if failed.is_some() {
            changed.push("fail-safe");
        }
        if changed.is_empty() {
            continue;
        }
        tally.changed += 1;
        for kind in &changed {
            *tally.by_kind.entry(kind).or_default() += 1;
        }
        if tally.examples.len() < args.examples {
            let mut example = json!({
                "request": {"method": request.method, "path": request.path,
                    "headers": request.headers().into_iter().collect::<BTreeMap<_, _>>()},
                "changed": changed,
                "from": shown(&a),
                "to": shown(&b),
            });
            if let Some(e) = &failed {
                example["to-error"] = e.to_string().into();
            }
            tally.examples.push(example);
        }
    }

    let total: u64 = tallies.values().map(|t| t.requests).sum();
    let changed: u64 = tallies.values().map(|t| t.changed).sum();
    let share = if total == 0 {
        0.0
    } else {
        changed as f64 / total as f64
    };
    let passed = limit.is_none_or(|l| l.passes(changed, total));
    let kind = |k: &str| -> u64 {
        tallies
            .values()
            .map(|t| t.by_kind.get(k).copied().unwrap_or(0))
            .sum()
    };
    let per_function: serde_json::Map<String, Value> = tallies
        .iter()
        .map(|(f, t)| {
            (
                f.clone(),
                json!({
                    "requests": t.requests,
                    "changed": t.changed,
                    "target": t.by_kind.get("target").copied().unwrap_or(0),
                    "traffic": t.by_kind.get("traffic").copied().unwrap_or(0),
                    "mirror": t.by_kind.get("mirror").copied().unwrap_or(0),
                    "fail-safe": t.by_kind.get("fail-safe").copied().unwrap_or(0),
                    "examples": t.examples,
                }),
            )
        })
        .collect();
    print_json(&json!({
        "requests": total,
        "changed": changed,
        "changed-share": share,
        "target": kind("target"),
        "traffic": kind("traffic"),
        "mirror": kind("mirror"),
        "fail-safe": kind("fail-safe"),
        "from": args.from,
        "to": to.digest(),
        "max-changed": args.max_changed,
        "passed": passed,
        "functions": per_function,
    }))?;
    let mut summary = format!(
        "{changed} of {total} decisions change ({:.1} %): target {}, traffic {}, mirror {}",
        share * 100.0,
        kind("target"),
        kind("traffic"),
        kind("mirror")
    );
    let failed = kind("fail-safe");
    if failed > 0 {
        summary.push_str(&format!(
            ", fail-safe {failed} (the policy failed on {failed} of {total} requests and the fail-safe decided; each counts as a change, see \"to-error\" in the examples)"
        ));
    }
    if !passed {
        bail!(
            "{summary}: more than --max-changed {}; look at the examples before publishing",
            args.max_changed.as_deref().unwrap_or_default()
        );
    }
    eprintln!("replay: {summary}");
    Ok(())
}

/// The requests of `--requests`, each with a function.
fn read_requests(args: &ReplayArgs) -> Result<Vec<Request>> {
    let mut requests = Vec::new();
    for line in request_lines(&args.requests, args.function.as_deref())? {
        match line {
            Ok(r) => requests.push(r),
            Err(e) if e.is::<ReadFailed>() => return Err(e),
            Err(e) if args.skip_bad_lines => eprintln!("skipped: {e:#}"),
            Err(e) => {
                return Err(e.context(
                    "a line is not a request (pass --skip-bad-lines to report and skip such lines)",
                ));
            }
        }
    }
    if requests.is_empty() {
        bail!(
            "{} has no requests (one request JSON a line)",
            args.requests.display()
        );
    }
    Ok(requests)
}

/// The policy and config of `function` in the store: the live version, or
/// version `from` (only with a single --function).
fn from_store(
    engine: &Engine,
    uri: &str,
    function: &str,
    from: &str,
    only: Option<&str>,
) -> Result<(Arc<Policy>, RouteConfig)> {
    block_on(async {
        let store: Arc<dyn ConfigStore> = switchyard_config::open(uri).await?;
        let stored = match from.parse::<u64>() {
            Ok(n) => {
                if only != Some(function) {
                    bail!(
                        "--from {n} names one function's version: pass --function {function} (and only its requests)"
                    );
                }
                let history = store.history(function).await?;
                history
                    .into_iter()
                    .filter_map(|r| r.ok())
                    .find(|r| r.version == n)
                    .with_context(|| format!("{function} has no readable version {n} in {uri}"))?
            }
            Err(_) => latest(&*store, function).await?,
        };
        let digest = stored
            .config
            .policy
            .with_context(|| format!("{function} version {} names no policy", stored.version))?;
        let loader = Loader::new(store, engine.clone(), None, 1);
        let policy = loader.policy(&digest).await?;
        Ok((policy, stored.config))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_takes_counts_and_shares() {
        assert!(matches!(parse_limit("10").unwrap(), Limit::Count(10)));
        assert!(matches!(parse_limit("5%").unwrap(), Limit::Share(p) if (p - 0.05).abs() < 1e-9));
        for bad in ["", "x", "-1", "101%", "five%"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }
}
