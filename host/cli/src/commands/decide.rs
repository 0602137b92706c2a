//! `switchyard decide`: decisions from files or from a store, one request
//! or a stream of them.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use switchyard_config::Loader;
use switchyard_core::{
    Decision, Engine, Policy, Request, RequestError, RequestJson, Route, RouteConfig,
};

use super::shared::{block_on, latest, load_config, load_policy, print_json};

#[derive(Debug, Args)]
pub(crate) struct DecideArgs {
    /// The policy component.
    #[arg(long, requires = "config", conflicts_with = "store")]
    policy: Option<PathBuf>,
    /// The route config JSON file:
    /// {"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"flags":{},"context":{}}
    #[arg(long, requires = "policy", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// Read the function's current policy and route config from this store
    /// instead (dir:<path> or ssm:<prefix>); needs --function. Given
    /// neither this nor --policy/--config, SWITCHYARD_STORE is used.
    #[arg(long, requires = "function")]
    store: Option<String>,
    /// With --store: keep the compiled policy here (as `serve --cache-dir`
    /// does), so the next run deserializes it instead of compiling.
    #[arg(long, requires = "store")]
    cache_dir: Option<PathBuf>,
    /// The function the request is for (requests in --requests may name their own).
    #[arg(long)]
    function: Option<String>,
    #[command(flatten)]
    request: RequestArgs,
    /// Decide every request of this file (one request JSON a line; '-' for stdin).
    #[arg(long, conflicts_with_all = ["method", "path", "headers"])]
    requests: Option<PathBuf>,
}

/// The request to decide, from flags.
#[derive(Debug, Args)]
struct RequestArgs {
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// A request header, 'Name: value'; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    headers: Vec<String>,
}

impl RequestArgs {
    /// The headers as (name, value) pairs.
    fn headers(&self) -> Result<Vec<(String, String)>> {
        self.headers.iter().map(|h| parse_header(h)).collect()
    }
}

/// Parses `Name: value`.
fn parse_header(raw: &str) -> Result<(String, String)> {
    match raw.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => bail!("header {raw:?} must look like 'Name: value'"),
    }
}

/// Where a decision's policy and route config came from: the policy, the
/// config, and the route version when they were read from a store.
struct Source {
    policy: Arc<Policy>,
    config: RouteConfig,
    route_version: Option<u64>,
}

impl Source {
    /// A decision as the host reports it: the decision's fields, then the
    /// policy's digest and the route version it was made with.
    fn report(&self, decision: &Decision) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(decision)?;
        v["policy"] = serde_json::to_value(self.policy.digest())?;
        v["route-version"] = serde_json::to_value(self.route_version)?;
        Ok(v)
    }
}

/// The policy and route config `args` name: files, or a store's current
/// version of the function.
fn source(engine: &Engine, args: &DecideArgs) -> Result<Source> {
    // SWITCHYARD_STORE only when neither source is named, so an exported
    // store does not override --policy/--config.
    let from_env = || {
        std::env::var("SWITCHYARD_STORE")
            .ok()
            .filter(|s| !s.is_empty())
    };
    let store = match (&args.store, &args.policy) {
        (Some(uri), _) => Some(uri.clone()),
        (None, None) => from_env(),
        (None, Some(_)) => None,
    };
    Ok(match (&store, &args.policy, &args.config) {
        (Some(uri), _, _) => {
            if args.function.is_none() {
                bail!(
                    "name the function with --function (e.g. --function orders) to decide with its policy from {uri}"
                );
            }
            let function = args.function.clone().unwrap_or_default();
            let (policy, stored) = block_on(async {
                let store = switchyard_config::open(uri).await?;
                let stored = latest(&*store, &function).await?;
                let digest = stored.config.policy.with_context(|| {
                    format!(
                        "{function} version {} names no policy; publish one",
                        stored.version
                    )
                })?;
                // The hosts' loader: the precompiled cache when given,
                // else the blob, verified and compiled.
                let loader = Loader::new(store, engine.clone(), args.cache_dir.clone(), 1)
                    .with_cache_key(switchyard_config::CacheKey::from_env());
                let policy = loader.policy(&digest).await?;
                anyhow::Ok((policy, stored))
            })?;
            Source {
                policy,
                route_version: Some(stored.version),
                config: stored.config,
            }
        }
        (None, Some(policy), Some(config)) => Source {
            policy: load_policy(engine, policy)?,
            config: load_config(config)?,
            route_version: None,
        },
        _ => bail!("pass --policy and --config, or --store (or set SWITCHYARD_STORE)"),
    })
}

pub(crate) fn run(args: DecideArgs) -> Result<()> {
    let engine = Engine::new()?;
    let source = source(&engine, &args)?;
    let config = &source.config;
    let mut evaluator = source.policy.evaluator();
    // One Route per function, so the instance is configured once per function.
    let mut routes: HashMap<String, Route> = HashMap::new();
    let mut decide_one = |request: Request| -> Result<Decision> {
        let route = match routes.get(&request.function) {
            Some(r) => r,
            None => routes
                .entry(request.function.clone())
                .or_insert(Route::new(request.function.clone(), config.clone())?),
        };
        Ok(evaluator.decide(&Arc::new(request), route).0)
    };

    let Some(requests) = args.requests else {
        let Some(function) = args.function else {
            bail!("name the function with --function (e.g. --function orders)");
        };
        let headers = args.request.headers()?;
        let RequestArgs { method, path, .. } = args.request;
        let decision = decide_one(Request::new(function, method, path, headers))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&source.report(&decision)?)?
        );
        return Ok(());
    };

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for request in request_lines(&requests, args.function.as_deref())? {
        let decision = decide_one(request?)?;
        serde_json::to_writer(&mut out, &source.report(&decision)?)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// Reading the requests failed (the file, not a line of it): never a line
/// to skip, and the end of the requests.
#[derive(Debug, thiserror::Error)]
#[error("cannot read requests file {path}: {source}")]
pub(crate) struct ReadFailed {
    path: String,
    source: std::io::Error,
}

/// The requests of a file of request JSON lines (`-`: stdin), read one at
/// a time; blank lines are skipped, and an error names the file and line.
/// Requests without a function get `default_function`. A read error
/// ([`ReadFailed`]) is the last item: reading on would fail again.
pub(crate) fn request_lines<'a>(
    path: &'a Path,
    default_function: Option<&'a str>,
) -> Result<impl Iterator<Item = Result<Request>> + 'a> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read requests file {}", path.display()))?;
        // A folder opens, then fails every read.
        if f.metadata().is_ok_and(|m| m.is_dir()) {
            bail!(
                "requests file {} is a directory; pass a file of request JSON lines (or - for stdin)",
                path.display()
            );
        }
        Box::new(std::io::BufReader::new(f))
    };
    let lines = reader
        .split(b'\n')
        .enumerate()
        .scan(false, move |failed, (n, line)| {
            if *failed {
                return None;
            }
            let at = || format!("{} line {}", path.display(), n + 1);
            let line = match line {
                Ok(bytes) => bytes,
                Err(source) => {
                    *failed = true;
                    let path = path.display().to_string();
                    return Some(Some(Err(ReadFailed { path, source }.into())));
                }
            };
            let Ok(line) = String::from_utf8(line) else {
                return Some(Some(Err(anyhow::anyhow!("{}: not UTF-8 text", at()))));
            };
            if line.trim().is_empty() {
                return Some(None);
            }
            Some(Some(
                serde_json::from_str::<RequestJson>(&line)
                    .with_context(|| format!("{}: invalid request JSON", at()))
                    .and_then(|raw| {
                        raw.into_request(default_function)
                            .map_err(|e| match e {
                                RequestError::NoFunction => {
                                    anyhow::anyhow!("{e}, or pass --function")
                                }
                                other => other.into(),
                            })
                            .with_context(at)
                    }),
            ))
        });
    Ok(lines.flatten())
}

/// `switchyard explain <function> [-H ...]`: one decision with what it was
/// made from.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The function.
    function: String,
    /// The config store to read the function's current version from
    /// (dir:<path> or ssm:<prefix>); default SWITCHYARD_STORE.
    #[arg(long)]
    store: Option<String>,
    /// Explain with this policy component instead of the store's.
    #[arg(long, requires = "config", conflicts_with = "store")]
    policy: Option<PathBuf>,
    /// ... and this route config file.
    #[arg(long, requires = "policy", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// With the store: keep the compiled policy here (as `serve --cache-dir`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    request: RequestArgs,
}

pub(crate) fn explain(args: ExplainArgs) -> Result<()> {
    let function = args.function.clone();
    let args = DecideArgs {
        policy: args.policy,
        config: args.config,
        store: args.store,
        cache_dir: args.cache_dir,
        function: Some(args.function),
        request: args.request,
        requests: None,
    };
    let engine = Engine::new()?;
    let source = source(&engine, &args)?;
    let headers = args.request.headers()?;
    let request = Request::new(
        function.clone(),
        &args.request.method,
        &args.request.path,
        headers.clone(),
    );
    let route = Route::new(function.clone(), source.config.clone())?;
    let (decision, failure) = source
        .policy
        .evaluator()
        .decide(&Arc::new(request.clone()), &route);
    let version = source
        .route_version
        .map_or_else(|| "the given config".to_owned(), |v| format!("version {v}"));
    eprintln!(
        "{function} {version}, policy {}: {} {} -> {} as {} traffic{}, because: {}",
        source.policy.digest().short(),
        request.method,
        request.path,
        decision.target,
        decision.traffic.as_str(),
        decision
            .mirror
            .as_deref()
            .map(|m| format!(", mirrored to {m}"))
            .unwrap_or_default(),
        decision.reason
    );
    print_json(&serde_json::json!({
        "function": function,
        "request": {
            "method": request.method,
            "path": request.path,
            "headers": headers
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect::<serde_json::Map<_, _>>(),
        },
        "decision": source.report(&decision)?,
        "rule": decision.reason,
        "failed": failure.map(|e| e.to_string()),
        "route-config": source.config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_flag_parsing() {
        assert_eq!(
            parse_header("X-A: b: c").unwrap(),
            ("X-A".to_string(), "b: c".to_string())
        );
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header(": v").is_err());
    }
}
