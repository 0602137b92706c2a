//! The `switchyard` command line, one file per command: JSON on stdout,
//! human messages on stderr, non-zero exit on failure.

mod decide;
mod fleet;
mod history;
mod mode;
mod policy;
mod promote;
mod publish;
mod replay;
mod rollback;
mod rollout;
mod serve;
mod set;
mod shadow;
mod shared;
mod status;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

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
    /// Explain one decision: the decision, the rule that fired, the policy
    /// digest, and the route config and version it was made with.
    ///
    /// Reads the function's current version from the store (--store or
    /// SWITCHYARD_STORE), or takes --policy and --config files. E.g.
    /// `switchyard explain orders -H 'x-switchyard-synthetic: 1'`.
    Explain(decide::ExplainArgs),
    /// Decide recorded requests with the live policy and a new one, and say
    /// how many decisions change.
    ///
    /// A gate to run before `publish`: `switchyard replay --requests
    /// reqs.jsonl --to new.wasm --max-changed 5%` exits 1 when more than 5 %
    /// of the decisions change target, traffic class or mirror. Compares
    /// against each function's live version (--from live, the default), a
    /// store version (--from N --function F) or a component file; with the
    /// store's route config unless --config names one. Prints a summary
    /// per function with examples.
    Replay(replay::ReplayArgs),
    /// Publish a policy and a route config for a function: uploads the policy
    /// blob if its digest is new (and the fixture cases, if given), then writes
    /// a new route-config version. Prints {"function","version","policy"}.
    Publish(publish::PublishArgs),
    /// Set a function's mode: writes a new route-config version with only the
    /// mode changed.
    Mode(mode::ModeArgs),
    /// Promote a function's candidate to stable and go to production mode.
    ///
    /// Writes one new version in which the candidate's qualifier is
    /// `stable`, the `candidate` role is cleared (or kept, --keep-candidate)
    /// and the mode is production. Refuses when there is no candidate.
    /// Prints {"function","version","stable","previous-stable","candidate","mode"}.
    Promote(promote::PromoteArgs),
    /// Change a function's flags, versions or context without editing JSON.
    ///
    /// Writes one new version with only those changed (none when nothing
    /// differs), e.g. `switchyard set orders --flag canary-percent=25
    /// --version candidate=9 --context 9:QUEUE_URL=https://...`. Prints
    /// {"function","version","changed",...}: the context's keys, not its
    /// values.
    Set(set::SetArgs),
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
    /// like any AWS SDK; AWS_ENDPOINT_URL for an emulator);
    /// {"type":"step-functions","state-machine-arn":"...","workflow":
    /// "express"|"standard"} starts an execution of that state machine's
    /// chosen version or alias.
    ///
    /// Also serves the Lambda Invoke API (POST /2015-03-31/functions/{name}/
    /// invocations: point an AWS SDK's endpoint URL here) and GET /healthz
    /// ({"ready": bool}). The admin listener (--admin-listen, loopback by
    /// default, optionally behind --admin-token-file) serves POST /v1/decide
    /// (decision JSON for a request JSON, context values hidden), GET
    /// /healthz with the functions, and GET /metrics (Prometheus).
    /// HTTP/1.1 and HTTP/2 (prior knowledge). Slow or idle clients are cut
    /// off (--header-timeout, --body-timeout, --idle-timeout) and
    /// connections capped (--max-connections). Stops on SIGINT/SIGTERM,
    /// letting in-flight requests finish within --shutdown-grace.
    Serve(Box<serve::ServeArgs>),
    /// Every route-config version of a function, oldest first.
    History(history::HistoryArgs),
    /// The oldest release the hosts reading the store run, as recorded:
    /// `publish` refuses configs that need newer hosts.
    ///
    /// `switchyard fleet --min-host-version 0.2.0` records that every host
    /// has been upgraded (then `step-functions` dispatch and `auth` blocks
    /// can be published). Prints {"min-host-version",...,"snapshot"}: for a
    /// store URI with snapshot=s3://..., whether the fleet snapshot hosts read
    /// is behind the store; --sync-snapshot rebuilds and writes it.
    Fleet(fleet::FleetArgs),
    /// Shadow comparisons of a running host (`shadow report <function>`).
    #[command(subcommand)]
    Shadow(shadow::ShadowCommand),
    /// Roll a candidate out by a plan: replay, shadow, synthetic QA, canary
    /// steps and promote, each gated on fleet-wide metrics, rolled back on a
    /// failed gate; resumable from any machine (`rollout start|status|
    /// approve|abort|resume <function>`).
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
}

impl Cli {
    /// Whether the command runs once and prints (everything but `serve`).
    pub fn is_one_shot(&self) -> bool {
        !matches!(self.command, Command::Serve(_))
    }
}

/// Renders the process's metrics (Prometheus text) for `serve`'s `/metrics`.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Runs a parsed command line; returns the process exit code. Failures are
/// printed as `error: <what, and what to do>`. `metrics` renders what the
/// binary's recorder collected (`serve` serves it on `/metrics`).
pub fn run(cli: Cli, metrics: Option<RenderMetrics>) -> ExitCode {
    let outcome = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Decide(args) => decide::run(args).map(|()| ExitCode::SUCCESS),
        Command::Explain(args) => decide::explain(args).map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => replay::run(args).map(|()| ExitCode::SUCCESS),
        Command::Publish(args) => publish::run(args).map(|()| ExitCode::SUCCESS),
        Command::Mode(args) => mode::run(args).map(|()| ExitCode::SUCCESS),
        Command::Rollback(args) => rollback::run(args).map(|()| ExitCode::SUCCESS),
        Command::Promote(args) => promote::run(args).map(|()| ExitCode::SUCCESS),
        Command::Set(args) => set::run(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => status::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(*args, metrics).map(|()| ExitCode::SUCCESS),
        Command::History(args) => history::run(args).map(|()| ExitCode::SUCCESS),
        Command::Fleet(args) => fleet::run(args).map(|()| ExitCode::SUCCESS),
        Command::Shadow(cmd) => shadow::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Rollout(cmd) => rollout::run(cmd).map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
