//! `switchyard serve`: the proxy on a config store.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use switchyard_config::{
    Bootstrap, FirstPoll, POLL_TIMEOUT, ReportFormat, WatchConfig, parse_duration,
    parse_poll_interval,
};
use switchyard_core::Engine;
use switchyard_proxy::{AdminConfig, ClientsConfig, ConnectionLimits, ProxyConfig};

use super::shared::StoreArg;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Address to listen on: the functions (`/{function}/...`), the Lambda
    /// Invoke API and a bare `/healthz`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// Address of the admin listener: `POST /v1/decide`, `GET /metrics` and
    /// `GET /healthz` with the functions routed. Keep it on loopback or a
    /// private network; `off` serves none.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub(crate) admin_listen: String,
    /// A file holding the bearer token every admin request must carry
    /// (`Authorization: Bearer <token>`). A file, not a flag, so the token
    /// stays out of `ps` and shell history.
    #[arg(long, value_name = "FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// Let the decide API show a decision's context values (they may be
    /// credentials) to a caller that asks with `?context=show`; hidden
    /// otherwise.
    #[arg(long)]
    pub(crate) admin_reveal_context: bool,
    /// Run only policies signed by this key: an Ed25519 public key in PEM
    /// (`openssl pkey -in signing.pem -pubout`). Repeat for more keys; a
    /// policy signed by any of them loads. Without one, signatures are not
    /// required.
    #[arg(
        long = "trust-key",
        value_name = "FILE",
        env = "SWITCHYARD_TRUST_KEYS",
        value_delimiter = ','
    )]
    pub(crate) trust_keys: Vec<PathBuf>,
    /// How long a secret that a route's context refers to ({"$ssm": ...},
    /// {"$secretsmanager": ...}) is used before it is read again, in the
    /// background (a failed read keeps the last good value).
    #[arg(long, default_value = "5m", env = "SWITCHYARD_SECRET_TTL", value_parser = parse_duration)]
    pub(crate) secret_ttl: Duration,
    /// Send a span per routed production request to this OTLP/HTTP
    /// collector (its base URL, e.g. http://127.0.0.1:4318, or the full
    /// /v1/traces URL). Default: what OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_ENDPOINT says, else no production spans.
    #[arg(long, value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,
    /// Send the spans of synthetic requests to this OTLP/HTTP collector
    /// instead; without it they are dropped (never sent with production's).
    #[arg(long, value_name = "URL", env = "SWITCHYARD_OTLP_SYNTHETIC_ENDPOINT")]
    pub(crate) otlp_synthetic_endpoint: Option<String>,
    /// When a route's `guard` trips on this host, also write a rollback
    /// version to the store (the candidate removed, mode production), so
    /// every host follows within one poll. Needs write access to the store;
    /// without it the host only stops sending to the candidate itself.
    #[arg(long)]
    pub(crate) guard_writes: bool,
    /// Write a CloudWatch Embedded Metric Format line per decided request to
    /// stdout, in this namespace (e.g. Switchyard): requests, errors and
    /// latency per function, version and traffic class, which ECS's awslogs
    /// driver or the CloudWatch agent turn into metrics (`switchyard
    /// rollout --cloudwatch` reads them).
    #[arg(long, value_name = "NAMESPACE", value_parser = emf_namespace)]
    pub(crate) emf_namespace: Option<switchyard_proxy::Emf>,
    /// How often to poll the store for new route configs (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_poll_interval)]
    pub(crate) poll_interval: Duration,
    /// Keep compiled policies and the last known good configs here, so a
    /// restart is fast and works while the store is unreachable.
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Functions to serve (repeat); default: every function in the store.
    #[arg(long = "function")]
    pub(crate) functions: Vec<String>,
    /// Largest request body, in bytes (413 above, at once when the
    /// request's Content-Length says so).
    #[arg(long, default_value_t = 6 << 20)]
    pub(crate) max_body: usize,
    /// Request body bytes held at once across all requests (bodies are
    /// read whole before deciding); a request past it is answered 503 with
    /// Retry-After: 1, so many large or slow uploads cannot take the
    /// host's memory.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub(crate) body_memory: usize,
    /// How long an upstream (HTTP or Lambda) may take (504 after).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) upstream_timeout: Duration,
    /// How long making a connection to an http(s) upstream may take, TCP
    /// and TLS handshake together (502 after; at most --upstream-timeout).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) upstream_connect_timeout: Duration,
    /// Mirror copies (and Event invocations the mesh makes itself) in
    /// flight at once; past it, a copy is dropped and counted
    /// (switchyard_mirror_dropped_total), an Event answered 429.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub(crate) mirror_slots: usize,
    /// How long an idle upstream connection is kept for reuse.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub(crate) upstream_idle_timeout: Duration,
    /// A request's head must arrive within this (counted from the accept,
    /// or from its first byte on a kept-alive connection); the connection
    /// is closed after.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) header_timeout: Duration,
    /// A request body that stalls (no byte) this long is answered 408.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) body_timeout: Duration,
    /// A keep-alive connection with no request this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// Client connections open at once, per listener; past it the listener
    /// waits for one to close. Default: half the open-file limit (raised
    /// to its hard limit at start) less a reserve, at most 16384.
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Sockets to http targets open at once, busy or idle in the pool; a
    /// new connection that finds them used up closes idle ones first, then
    /// waits within --upstream-connect-timeout (502 after). Default: what
    /// the open-file limit leaves beside --max-connections, less 64.
    #[arg(long, value_name = "N")]
    pub(crate) max_upstream_sockets: Option<usize>,
    /// On SIGTERM or SIGINT, how long in-flight requests may take before
    /// the process exits anyway.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// Largest total size of request header names and values, in bytes
    /// (431 above).
    #[arg(long, default_value_t = 32 << 10)]
    pub(crate) max_header_bytes: usize,
    /// Log one in N decision lines (counted on each serving thread); 0
    /// logs none. Metrics count every request regardless.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) decision_log_sample: u64,
    /// Do not run policies: send every request to its function's stable
    /// version as production traffic. A kill switch, and the baseline for
    /// measuring what the policies cost (see BENCHMARKS.md).
    #[arg(long)]
    pub(crate) bypass_policies: bool,
    /// Write a sample of the decided requests to FILE, as the request JSON
    /// lines `switchyard replay` reads: function, method, path and the
    /// --capture-header headers, never bodies. Rotated at
    /// --capture-max-bytes (FILE becomes FILE.1).
    #[arg(long, value_name = "FILE")]
    pub(crate) capture: Option<PathBuf>,
    /// Capture one decided request in N, counted per serving thread.
    #[arg(long, default_value_t = 100, value_name = "N", requires = "capture")]
    pub(crate) capture_sample: u64,
    /// A header to keep in captured requests; repeat for more (the headers
    /// your policies read). Default: x-switchyard-synthetic. Cookies and
    /// credentials are never written unless named.
    #[arg(long = "capture-header", value_name = "NAME", requires = "capture")]
    pub(crate) capture_headers: Vec<String>,
    /// Rotate the capture file past this many bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES", requires = "capture")]
    pub(crate) capture_max_bytes: u64,
    /// How requests are served. `per-core`: one thread per core, each a
    /// single-threaded runtime with its own listener on the same port
    /// (SO_REUSEPORT) and its own upstream connections; the fastest for
    /// HTTP upstreams (see BENCHMARKS.md). `multi-thread`: one
    /// work-stealing runtime and one listener, which evens out uneven
    /// connections (few long-lived clients, slow Lambda calls).
    #[arg(long, value_enum, default_value_t = Runtime::PerCore)]
    pub(crate) runtime: Runtime,
    /// Serving threads (`--runtime per-core`) or runtime workers
    /// (`multi-thread`). Default: the cores this process may use.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) workers: Option<u16>,
}

/// How `serve` runs its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Runtime {
    /// A thread per core, each with its own listener and upstream pool.
    PerCore,
    /// One work-stealing runtime.
    MultiThread,
}

/// The file's permission bits when users other than its owner may read it.
fn readable_by_others(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// The public listener, bound before anything is announced.
enum Public {
    One(tokio::net::TcpListener),
    PerCore(Vec<std::net::TcpListener>),
}

pub(crate) fn run(args: ServeArgs, metrics: Option<super::RenderMetrics>) -> Result<()> {
    let open_files = switchyard_proxy::raise_open_file_limit();
    let admin_token = match &args.admin_token_file {
        None => None,
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
            let token = token.trim().to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "the admin token file {} is empty",
                path.display()
            );
            if let Some(mode) = readable_by_others(path) {
                eprintln!(
                    "warning: the admin token file {} can be read by other users (mode {mode:o}); chmod 600 it",
                    path.display()
                );
            }
            Some(token)
        }
    };
    let has_token = admin_token.is_some();
    let connections = ConnectionLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        // A client that stopped reading: longer than an upstream may take
        // plus a body stall.
        busy_timeout: args.upstream_timeout + args.body_timeout,
        max_connections: args
            .max_connections
            .unwrap_or_else(switchyard_proxy::default_max_connections),
        shutdown_grace: args.shutdown_grace,
    };
    let upstream_sockets = args
        .max_upstream_sockets
        .unwrap_or_else(|| switchyard_proxy::default_upstream_sockets(connections.max_connections));
    // What the open-file limit is spent on, said once: the first thing to
    // look at when a burst meets it.
    eprintln!(
        "open files: {}; up to {} client connections per listener and {upstream_sockets} upstream sockets (idle ones closed first when they run out)",
        open_files.map_or_else(|| "limit unknown".to_owned(), |n| format!("limit {n}")),
        connections.max_connections,
    );
    let workers = args.workers.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.runtime == Runtime::PerCore {
        // The control plane only (polling, the admin listener, signals):
        // the serving threads are the per-core ones.
        runtime.worker_threads(1);
    } else {
        runtime.worker_threads(workers);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let capture = match &args.capture {
        Some(path) => Some(switchyard_proxy::Capture::start(
            switchyard_proxy::CaptureConfig {
                path: path.clone(),
                sample: args.capture_sample,
                headers: if args.capture_headers.is_empty() {
                    vec![switchyard_core::DEFAULT_SYNTHETIC_HEADER.to_owned()]
                } else {
                    args.capture_headers.clone()
                },
                max_bytes: args.capture_max_bytes,
            },
        )?),
        None => None,
    };
    // Made outside the runtime: the exporters' HTTP client blocks, on
    // their own thread.
    let traces = switchyard_proxy::Traces::new(&switchyard_proxy::TraceConfig {
        endpoint: args.otlp_endpoint.clone(),
        from_env: true,
        synthetic_endpoint: args.otlp_synthetic_endpoint.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let flush = traces.clone();
    let served = runtime.block_on(async move {
        let store = switchyard_config::open(&args.store.store).await?;
        let host = switchyard_proxy::start(
            store.clone(),
            Engine::new()?,
            WatchConfig {
                functions: args.functions.clone(),
                interval: args.poll_interval,
                cache_dir: args.cache_dir.clone(),
                cache_key: switchyard_config::CacheKey::from_env(),
                trust: switchyard_config::TrustKeys::from_pem_files(&args.trust_keys)
                    .context("a --trust-key is not usable")?,
                ..Default::default()
            },
            ProxyConfig {
                max_body: args.max_body,
                body_memory: args.body_memory,
                clients: ClientsConfig {
                    upstream_timeout: args.upstream_timeout,
                    connect_timeout: args.upstream_connect_timeout,
                    mirror_slots: args.mirror_slots,
                    upstream_idle_timeout: args.upstream_idle_timeout,
                    secret_ttl: args.secret_ttl,
                    max_upstream_sockets: Some(upstream_sockets),
                    workers: if args.runtime == Runtime::PerCore {
                        workers
                    } else {
                        1
                    },
                    ..Default::default()
                },
                body_timeout: args.body_timeout,
                connections,
                admin: AdminConfig {
                    token: admin_token,
                    reveal_context: args.admin_reveal_context,
                },
                max_header_bytes: args.max_header_bytes,
                decision_log_sample: args.decision_log_sample,
                bypass_policies: args.bypass_policies,
                expected_functions: args.functions.clone(),
                capture,
                metrics,
                traces,
                guard_store: args.guard_writes.then(|| store.clone()),
                emf: args.emf_namespace.clone().map(std::sync::Arc::new),
                ..Default::default()
            },
            Bootstrap {
                first_poll: FirstPoll::Always,
                timeout: POLL_TIMEOUT,
            },
        )
        .await;
        let started = &host.started;
        for line in started.report(ReportFormat::Text) {
            eprintln!("{line}");
        }
        let listen_error = || format!("cannot listen on {}", args.listen);
        let public = match args.runtime {
            Runtime::MultiThread => Public::One(
                tokio::net::TcpListener::bind(&args.listen)
                    .await
                    .with_context(listen_error)?,
            ),
            Runtime::PerCore => Public::PerCore(
                switchyard_proxy::bind_reuseport(&args.listen, workers)
                    .with_context(listen_error)?,
            ),
        };
        let addr = match &public {
            Public::One(l) => l.local_addr()?,
            Public::PerCore(ls) => ls[0].local_addr()?,
        };
        let admin = if args.admin_listen == "off" {
            None
        } else {
            let l = tokio::net::TcpListener::bind(&args.admin_listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for the admin listener (--admin-listen; 'off' serves none)",
                        args.admin_listen
                    )
                })?;
            Some(l)
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        if let Some(a) = admin_addr
            && !a.ip().is_loopback()
            && !has_token
        {
            eprintln!(
                "warning: the admin listener on {a} is reachable beyond this machine and has no token: anyone who reaches it can read the routes, decisions and metrics; pass --admin-token-file, or listen on 127.0.0.1"
            );
        }
        eprintln!(
            "switchyard serving {} on http://{addr} ({}; store {}, polling every {:?}){}",
            host.watcher.policies().functions().join(", "),
            match args.runtime {
                Runtime::PerCore => format!("{workers} threads, one listener each"),
                Runtime::MultiThread => format!("one runtime, {workers} workers"),
            },
            store.uri(),
            args.poll_interval,
            admin_addr
                .map(|a| format!("; admin on http://{a}"))
                .unwrap_or_default()
        );
        println!(
            "{}",
            serde_json::json!({
                "listening": format!("http://{addr}"),
                "admin": admin_addr.map(|a| format!("http://{a}")),
            })
        );
        // One signal stops both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let admin_task = admin.map(|l| {
            tokio::spawn(switchyard_proxy::serve_admin(
                l,
                host.proxy.clone(),
                until(stopped.clone()),
            ))
        });
        match public {
            Public::One(listener) => {
                switchyard_proxy::serve(listener, host.proxy.clone(), until(stopped)).await?
            }
            Public::PerCore(listeners) => {
                let threads =
                    switchyard_proxy::serve_public_threads(listeners, host.proxy.clone(), stopped)
                        .context("cannot start the serving threads")?;
                tokio::task::spawn_blocking(move || {
                    for t in threads {
                        match t.join() {
                            Ok(r) => r?,
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                    std::io::Result::Ok(())
                })
                .await??;
            }
        }
        if let Some(t) = admin_task {
            t.abort();
        }
        started.poller.abort();
        Ok(())
    });
    if let Some(traces) = flush {
        traces.shutdown();
    }
    eprintln!("switchyard stopped");
    served
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

fn emf_namespace(raw: &str) -> Result<switchyard_proxy::Emf, String> {
    switchyard_proxy::Emf::new(raw)
}
