//! The `switchyard` command line: JSON on stdout, human messages on stderr,
//! non-zero exit on failure.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::build::build_policy;
use crate::cases::CaseFile;
use crate::policy::{Policy, inspect};
use crate::{Engine, Request, RequestJson, Route, RouteConfig};

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
    Policy(PolicyCommand),
    /// Decide requests with a policy and a route config; prints decision JSON.
    ///
    /// One request from the flags, or many from --requests (one request JSON
    /// a line, one decision a line, all on one warm instance). Request JSON:
    /// {"function":"orders","method":"GET","path":"/x","headers":{"name":"value"}}
    Decide(DecideArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Build a Rust policy crate into a component (wasm32-unknown-unknown +
    /// wit-component). Prints the component's path as the last line of stdout.
    Build {
        /// Folder of the policy crate (its Cargo.toml has crate-type cdylib).
        crate_dir: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a component's digest, size, imports and exports as JSON; exits
    /// non-zero (with the reason on stderr) when it is not a valid policy.
    Inspect {
        /// The component file.
        file: PathBuf,
    },
    /// Run fixture cases against a policy: prints each failure as a diff and
    /// a final "N passed, N failed" line; exits 1 on any failure.
    Test {
        /// The component file.
        file: PathBuf,
        /// The cases file (JSON; see the `cases` module docs or README).
        cases: PathBuf,
    },
}

#[derive(Debug, Args)]
struct DecideArgs {
    /// The policy component.
    #[arg(long)]
    policy: PathBuf,
    /// The route config JSON file:
    /// {"mode":"synthetic","versions":{"stable":"7","candidate":"8"},"flags":{},"context":{}}
    #[arg(long)]
    config: PathBuf,
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

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::Policy(PolicyCommand::Build { crate_dir, output }) => {
            let built = build_policy(&crate_dir, output.as_deref())?;
            eprintln!(
                "built {} ({} bytes, {})",
                built.path.display(),
                built.info.size,
                built.info.digest
            );
            println!("{}", built.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Inspect { file }) => {
            let bytes = read_policy(&file)?;
            let what = file.display().to_string();
            let info = inspect(&bytes, &what)?;
            let verdict = Engine::new()
                .map_err(anyhow::Error::from)
                .and_then(|engine| Ok(Policy::new(&engine, &bytes, &what)?));
            let mut json = serde_json::to_value(&info)?;
            json["valid"] = verdict.is_ok().into();
            if let Err(e) = &verdict {
                json["error"] = format!("{e:#}").into();
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
            match verdict {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e),
            }
        }
        Command::Policy(PolicyCommand::Test { file, cases }) => {
            let policy = load_policy(&Engine::new()?, &file)?;
            let text = std::fs::read_to_string(&cases)
                .with_context(|| format!("cannot read cases file {}", cases.display()))?;
            let file_cases =
                CaseFile::from_json(&text).with_context(|| format!("in {}", cases.display()))?;
            let results = file_cases.run(&policy)?;
            let mut out = std::io::stdout().lock();
            let failed = results.iter().filter(|r| !r.passed()).count();
            for r in &results {
                if r.passed() {
                    writeln!(out, "ok    {}", r.name)?;
                } else {
                    writeln!(out, "FAIL  {}", r.name)?;
                    for m in &r.mismatches {
                        writeln!(out, "      - {m}")?;
                    }
                    writeln!(
                        out,
                        "      decision: {}",
                        serde_json::to_string(&r.decision)?
                    )?;
                }
            }
            writeln!(out, "{} passed, {} failed", results.len() - failed, failed)?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Decide(args) => decide(args).map(|()| ExitCode::SUCCESS),
    }
}

fn read_policy(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read policy file {}; build one with `switchyard policy build <crate-dir>`",
            path.display()
        )
    })
}

fn load_policy(engine: &Engine, path: &Path) -> Result<Arc<Policy>> {
    let bytes = read_policy(path)?;
    Ok(Policy::new(engine, &bytes, &path.display().to_string())?)
}

fn load_config(path: &Path) -> Result<RouteConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read route config {}", path.display()))?;
    RouteConfig::from_json(&text).with_context(|| format!("in {}", path.display()))
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

fn decide(args: DecideArgs) -> Result<()> {
    let engine = Engine::new()?;
    let policy = load_policy(&engine, &args.policy)?;
    let config = load_config(&args.config)?;
    let mut evaluator = policy.evaluator();
    // One Route per function, so the instance is configured once per function.
    let mut routes: HashMap<String, Route> = HashMap::new();
    let mut decide_one = |request: Request| -> Result<crate::Decision> {
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

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
