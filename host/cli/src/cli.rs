//! The `switchyard` command line: JSON on stdout, human messages on stderr,
//! non-zero exit on failure.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use switchyard_config::{
    Bootstrap, ConfigStore, FirstPoll, Loader, POLL_TIMEOUT, StoredRoute, WatchConfig, Watcher,
    bootstrap, parse_duration,
};
use switchyard_core::{
    CaseFile, Decision, Engine, Mode, Policy, Request, RequestJson, Route, RouteConfig, inspect,
};
use switchyard_proxy::{Proxy, ProxyConfig};

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
    /// The policy and route config come from files (--policy, --config) or
    /// from a config store (--store: the function's current version).
    /// One request from the flags, or many from --requests (one request JSON
    /// a line, one decision a line, all on one warm instance). Request JSON:
    /// {"function":"orders","method":"GET","path":"/x","headers":{"name":"value"}}
    Decide(DecideArgs),
    /// Publish a policy and a route config for a function: uploads the policy
    /// blob if its digest is new (and the fixture cases, if given), then writes
    /// a new route-config version. Prints {"function","version","policy"}.
    Publish(PublishArgs),
    /// Set a function's mode: writes a new route-config version with only the
    /// mode changed.
    Mode {
        #[command(flatten)]
        store: StoreArg,
        /// The function.
        function: String,
        /// The new mode.
        #[arg(value_parser = ["production", "synthetic"])]
        mode: String,
    },
    /// Roll a function back: writes a new version whose content equals
    /// version N (default: the version before the current one). Live hosts
    /// pick it up within one poll interval.
    Rollback {
        #[command(flatten)]
        store: StoreArg,
        /// The function.
        function: String,
        /// The version to restore.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Current version, mode, versions, policy digest and change time of one
    /// function, or of every function in the store.
    Status {
        #[command(flatten)]
        store: StoreArg,
        /// The function (default: all).
        function: Option<String>,
    },
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
    Serve(ServeArgs),
    /// Every route-config version of a function, oldest first.
    History {
        #[command(flatten)]
        store: StoreArg,
        /// The function.
        function: String,
    },
}

/// Where route configs and policies live.
#[derive(Debug, Args)]
struct StoreArg {
    /// The config store: dir:<path> (a local folder) or ssm:<prefix> (AWS SSM
    /// Parameter Store, e.g. ssm:/switchyard; the usual AWS environment
    /// applies: AWS_REGION, AWS_ENDPOINT_URL, credentials).
    #[arg(long, env = "SWITCHYARD_STORE")]
    store: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// How often to poll the store for new route configs (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Keep compiled policies and the last known good configs here, so a
    /// restart is fast and works while the store is unreachable.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Functions to serve (repeat); default: every function in the store.
    #[arg(long = "function")]
    functions: Vec<String>,
    /// Largest request body, in bytes (413 above).
    #[arg(long, default_value_t = 6 << 20)]
    max_body: usize,
    /// How long an upstream (HTTP or Lambda) may take (504 after).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    upstream_timeout: Duration,
    /// Largest total size of request header names and values, in bytes
    /// (431 above).
    #[arg(long, default_value_t = 32 << 10)]
    max_header_bytes: usize,
    /// Log one in N decision lines; 0 logs none. Metrics count every
    /// request regardless.
    #[arg(long, default_value_t = 1, value_name = "N")]
    decision_log_sample: u64,
    /// Do not run policies: send every request to its function's stable
    /// version as production traffic. A kill switch, and the baseline for
    /// measuring what the policies cost (see BENCHMARKS.md).
    #[arg(long)]
    bypass_policies: bool,
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    #[arg(long)]
    function: String,
    /// The policy component.
    #[arg(long)]
    policy: PathBuf,
    /// The route config JSON file (its "policy" field is set for you).
    #[arg(long)]
    config: PathBuf,
    /// Fixture cases the policy must pass: checked now, and by every host
    /// before the version goes live.
    #[arg(long)]
    cases: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Build a policy folder into a component; the language comes from the
    /// folder: Rust (Cargo.toml: cargo for wasm32-unknown-unknown, then
    /// wit-component), Python (policy.py: componentize-py --stub-wasi) or
    /// JavaScript (policy.js: jco componentize with WASI disabled).
    /// Python and JavaScript builds go to <folder>/target/<folder>.component.wasm.
    /// Prints the component's path as the last line of stdout.
    Build {
        /// The policy folder.
        #[arg(value_name = "POLICY_DIR")]
        crate_dir: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// JavaScript engine: quickjs (componentize-qjs; small, fast to
        /// build and call) or spidermonkey (componentize-js).
        #[arg(long, value_name = "ENGINE", default_value = "quickjs", value_parser = ["quickjs", "spidermonkey"])]
        js_backend: String,
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

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                // Decision lines and swaps are info; everything else warns.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info")),
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
        Command::Policy(PolicyCommand::Build {
            crate_dir,
            output,
            js_backend,
        }) => {
            let js = match js_backend.as_str() {
                "spidermonkey" => crate::build::JsBackend::SpiderMonkey,
                _ => crate::build::JsBackend::QuickJs,
            };
            let built = crate::build::build(&crate_dir, output.as_deref(), js)?;
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
        Command::Publish(args) => publish(args).map(|()| ExitCode::SUCCESS),
        Command::Mode {
            store,
            function,
            mode,
        } => block_on(async {
            let store = switchyard_config::open(&store.store).await?;
            let mut current = latest(&*store, &function).await?;
            current.config.mode = if mode == "synthetic" {
                Mode::Synthetic
            } else {
                Mode::Production
            };
            let version = store.put_route(&function, &current.config).await?;
            print_json(&serde_json::json!({"function": function, "version": version, "mode": mode}))
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Rollback {
            store,
            function,
            to,
        } => block_on(async {
            let store = switchyard_config::open(&store.store).await?;
            let history = store.history(&function).await?;
            let Some(current) = history.last() else {
                bail!(
                    "{function} has no route config in {}; publish one first",
                    store.uri()
                );
            };
            let target = match to {
                Some(n) => history.iter().find(|r| r.version == n).with_context(|| {
                    format!(
                        "{function} has no version {n}; versions: {}",
                        history
                            .iter()
                            .map(|r| r.version.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
                None => history.iter().rev().nth(1).with_context(|| {
                    format!(
                        "{function} has only version {}; nothing to roll back to",
                        current.version
                    )
                })?,
            };
            let version = store.put_route(&function, &target.config).await?;
            eprintln!(
                "{function}: version {version} restores version {} (was {})",
                target.version, current.version
            );
            print_json(
                &serde_json::json!({"function": function, "version": version, "restored": target.version}),
            )
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Status { store, function } => block_on(async {
            let store = switchyard_config::open(&store.store).await?;
            let functions = match function {
                Some(f) => vec![f],
                None => store.functions().await?,
            };
            let latest = store.latest(&functions).await?;
            let mut out = Vec::new();
            for (f, r) in functions.iter().zip(latest) {
                match r {
                    Some(r) => out.push(summary(&r)),
                    None => bail!("{f} has no route config in {}", store.uri()),
                }
            }
            print_json(&serde_json::Value::Array(out))
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::History { store, function } => block_on(async {
            let store = switchyard_config::open(&store.store).await?;
            let history = store.history(&function).await?;
            if history.is_empty() {
                bail!("{function} has no route config in {}", store.uri());
            }
            print_json(&serde_json::Value::Array(
                history.iter().map(summary).collect(),
            ))
        })
        .map(|()| ExitCode::SUCCESS),
    }
}

/// Runs one store operation on a single-threaded runtime.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn summary(r: &StoredRoute) -> serde_json::Value {
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

async fn latest(store: &dyn ConfigStore, function: &str) -> Result<StoredRoute> {
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

fn serve(args: ServeArgs) -> Result<()> {
    // Before anything records (the first poll's swaps), so nothing is lost.
    let metrics = switchyard_proxy::install_metrics_recorder();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = switchyard_config::open(&args.store.store).await?;
        let engine = Engine::new()?;
        let watcher = Arc::new(Watcher::new(
            store.clone(),
            engine,
            WatchConfig {
                functions: args.functions.clone(),
                interval: args.poll_interval,
                cache_dir: args.cache_dir.clone(),
                ..Default::default()
            },
        ));
        let proxy = Proxy::new(
            watcher.policies(),
            ProxyConfig {
                max_body: args.max_body,
                upstream_timeout: args.upstream_timeout,
                max_header_bytes: args.max_header_bytes,
                decision_log_sample: args.decision_log_sample,
                bypass_policies: args.bypass_policies,
                expected_functions: args.functions.clone(),
                metrics: Some(Arc::new(move || metrics.render())),
                ..Default::default()
            },
        )?;
        watcher.set_prepare(proxy.prepare_hook());
        let started = bootstrap(
            &watcher,
            Bootstrap {
                first_poll: FirstPoll::Always,
                timeout: POLL_TIMEOUT,
            },
        )
        .await;
        if !started.restored.is_empty() {
            eprintln!("restored from cache: {}", started.restored.join(", "));
        }
        match &started.first_poll {
            Some(Ok(outcomes)) => {
                for (f, o) in outcomes {
                    eprintln!("{f}: {}", serde_json::to_string(&o)?);
                }
            }
            Some(Err(e)) => {
                eprintln!("warning: first poll failed ({e}); serving what the cache had, retrying")
            }
            None => {}
        }
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "switchyard serving {} on http://{addr} (store {}, polling every {:?})",
            watcher.policies().functions().join(", "),
            store.uri(),
            args.poll_interval
        );
        println!(
            "{}",
            serde_json::json!({"listening": format!("http://{addr}")})
        );
        switchyard_proxy::serve(listener, proxy, shutdown_signal()).await?;
        started.poller.abort();
        eprintln!("switchyard stopped");
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn publish(args: PublishArgs) -> Result<()> {
    let engine = Engine::new()?;
    let bytes = read_policy(&args.policy)?;
    let policy = Policy::new(&engine, &bytes, &args.policy.display().to_string())
        .context("refusing to publish")?;
    let mut config = load_config(&args.config)?;
    switchyard_dispatch::check(&config).with_context(|| format!("in {}", args.config.display()))?;
    let cases = match &args.cases {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read cases file {}", path.display()))?;
            let mut file =
                CaseFile::from_json(&text).with_context(|| format!("in {}", path.display()))?;
            file.config.get_or_insert_with(|| config.clone());
            file.function.get_or_insert_with(|| args.function.clone());
            let results = file.run(&policy)?;
            let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
            if !failed.is_empty() {
                for r in &failed {
                    eprintln!("FAIL  {}: {}", r.name, r.mismatches.join("; "));
                }
                bail!(
                    "refusing to publish: {} of {} fixture cases failed (run `switchyard policy test` for details)",
                    failed.len(),
                    results.len()
                );
            }
            eprintln!("fixture cases: {} passed", results.len());
            Some(serde_json::to_vec(&file)?)
        }
    };
    block_on(async {
        let store = switchyard_config::open(&args.store.store).await?;
        let digest = policy.digest();
        if store.has_blob(&digest).await? {
            eprintln!("policy {digest} already in {}", store.uri());
        } else {
            store
                .put_blob(&bytes, &|done, total| {
                    eprintln!("uploading policy {}: chunk {done}/{total}", digest.short())
                })
                .await?;
        }
        if let Some(cases) = &cases {
            config.cases = Some(store.put_blob(cases, &|_, _| {}).await?);
        }
        config.policy = Some(digest);
        let version = store.put_route(&args.function, &config).await?;
        print_json(
            &serde_json::json!({"function": args.function, "version": version, "policy": digest}),
        )
    })?;
    Ok(())
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
                let loader = Loader::new(store, engine.clone(), args.cache_dir.clone(), 1);
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
