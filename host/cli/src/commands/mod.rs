//! The `switchyard` command line, one file per command: JSON on stdout,
//! human messages on stderr, non-zero exit on failure.

mod decide;
mod history;
mod mode;
mod policy;
mod publish;
mod rollback;
mod serve;
mod status;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use switchyard_config::{ConfigStore, StoredRoute};
use switchyard_core::{Engine, Policy, RouteConfig};

/// Switchyard: route requests to function versions with WebAssembly policies.
///
/// A policy is a component implementing the `switchyard:policy` router world.
/// It sees each request and the function's route config (mode, versions,
/// flags) and decides which version gets the request, and whether the
/// request is production or synthetic traffic.
///
/// Typical flow:
///
///   switchyard policy build policies/synthetic-header -o sh.wasm
///   switchyard policy test sh.wasm policies/synthetic-header/cases.json
///   switchyard decide --policy sh.wasm --config route.json --function orders \
///       -H 'x-switchyard-synthetic: true'
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, inspect and test policy components.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Decide requests with a policy and a route config; prints decision JSON.
    ///
    /// The policy and route config come from files (--policy, --config) or
    /// from a config store (--store: the function's current version).
    /// One request from the flags, or many from --requests (one request JSON
    /// a line, one decision a line, all on one warm instance). Request JSON:
    /// {"function":"orders","method":"GET","path":"/x","headers":{"name":"value"}}
    Decide(decide::DecideArgs),
    /// Publish a policy and a route config for a function: uploads the policy
    /// blob if its digest is new (and the fixture cases, if given), then writes
    /// a new route-config version. Prints {"function","version","policy"}.
    Publish(publish::PublishArgs),
    /// Set a function's mode: writes a new route-config version with only the
    /// mode changed.
    Mode(mode::ModeArgs),
    /// Roll a function back: writes a new version whose content equals
    /// version N (default: the version before the current one). Live hosts
    /// pick it up within one poll interval.
    Rollback(rollback::RollbackArgs),
    /// Current version, mode, versions, policy digest and change time of one
    /// function, or of every function in the store.
    Status(status::StatusArgs),
    /// Run the proxy: route /{function}/... to the version each function's
    /// policy chooses, hot-swapping policies as the store changes.
    ///
    /// Each function's route config names its dispatch: {"type":"http",
    /// "urls":{...}} forwards to the chosen qualifier's URL; {"type":
    /// "lambda","function-name":"..."} invokes that Lambda function with the
    /// chosen qualifier (AWS credentials and region from the environment,
    /// like any AWS SDK; AWS_ENDPOINT_URL for an emulator).
    ///
    /// Also serves the Lambda Invoke API (POST /2015-03-31/functions/{name}/
    /// invocations: point an AWS SDK's endpoint URL here), POST /v1/decide
    /// (decision JSON for a request JSON), GET /healthz and GET /metrics
    /// (Prometheus). HTTP/1.1 and HTTP/2 (prior knowledge). Stops gracefully
    /// on SIGINT/SIGTERM, letting in-flight requests finish.
    Serve(serve::ServeArgs),
    /// Every route-config version of a function, oldest first.
    History(history::HistoryArgs),
}

/// Where route configs and policies live.
#[derive(Debug, Args)]
pub(crate) struct StoreArg {
    /// The config store: dir:<path> (a local folder) or ssm:<prefix> (AWS SSM
    /// Parameter Store, e.g. ssm:/switchyard; the usual AWS environment
    /// applies: AWS_REGION, AWS_ENDPOINT_URL, credentials).
    #[arg(long, env = "SWITCHYARD_STORE")]
    pub(crate) store: String,
}

/// Runs a parsed command line; returns the process exit code. Failures are
/// printed as `error: <what, and what to do>`.
pub fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Decide(args) => decide::run(args).map(|()| ExitCode::SUCCESS),
        Command::Publish(args) => publish::run(args).map(|()| ExitCode::SUCCESS),
        Command::Mode(args) => mode::run(args).map(|()| ExitCode::SUCCESS),
        Command::Rollback(args) => rollback::run(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => status::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::History(args) => history::run(args).map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one store operation on a single-threaded runtime.
pub(crate) fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn summary(r: &StoredRoute) -> serde_json::Value {
    serde_json::json!({
        "function": r.function,
        "version": r.version,
        "mode": r.config.mode,
        "versions": r.config.versions,
        "policy": r.config.policy,
        "cases": r.config.cases,
        "modified": r.modified,
    })
}

pub(crate) async fn latest(store: &dyn ConfigStore, function: &str) -> Result<StoredRoute> {
    store
        .latest(&[function.to_owned()])
        .await?
        .pop()
        .flatten()
        .with_context(|| {
            format!(
                "{function} has no route config in {}; publish one first",
                store.uri()
            )
        })
}

fn read_policy(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read policy file {}; build one with `switchyard policy build <crate-dir>`",
            path.display()
        )
    })
}

pub(crate) fn load_policy(engine: &Engine, path: &Path) -> Result<Arc<Policy>> {
    let bytes = read_policy(path)?;
    Ok(Policy::new(engine, &bytes, &path.display().to_string())?)
}

pub(crate) fn load_config(path: &Path) -> Result<RouteConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read route config {}", path.display()))?;
    RouteConfig::from_json(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
