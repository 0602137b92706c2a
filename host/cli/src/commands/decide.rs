//! `switchyard decide`: decisions from files or from a store, one request
//! or a stream of them.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use switchyard_config::Loader;
use switchyard_core::{Decision, Engine, Request, RequestError, RequestJson, Route};

use super::shared::{block_on, latest, load_config, load_policy};

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
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// A request header, 'Name: value'; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    headers: Vec<String>,
    /// Decide every request of this file (one request JSON a line; '-' for stdin).
    #[arg(long, conflicts_with_all = ["method", "path", "headers"])]
    requests: Option<PathBuf>,
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

pub(crate) fn run(args: DecideArgs) -> Result<()> {
    let engine = Engine::new()?;
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
    let (policy, config) = match (&store, &args.policy, &args.config) {
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
            (policy, stored.config)
        }
        (None, Some(policy), Some(config)) => (load_policy(&engine, policy)?, load_config(config)?),
        _ => bail!("pass --policy and --config, or --store (or set SWITCHYARD_STORE)"),
    };
    let mut evaluator = policy.evaluator();
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
        let headers = args
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>>>()?;
        let decision = decide_one(Request::new(function, args.method, args.path, headers))?;
        println!("{}", serde_json::to_string_pretty(&decision)?);
        return Ok(());
    };

    let reader: Box<dyn BufRead> = if requests == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&requests)
            .with_context(|| format!("cannot read requests file {}", requests.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", requests.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RequestJson = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: invalid request JSON",
                requests.display(),
                n + 1
            )
        })?;
        let request = raw
            .into_request(args.function.as_deref())
            .map_err(|e| match e {
                RequestError::NoFunction => anyhow::anyhow!("{e}, or pass --function"),
                other => other.into(),
            })
            .with_context(|| format!("{} line {}", requests.display(), n + 1))?;
        let decision = decide_one(request)?;
        serde_json::to_writer(&mut out, &decision)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
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
