//! `switchyard serve`: the proxy on a config store.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use switchyard_config::{Bootstrap, FirstPoll, POLL_TIMEOUT, WatchConfig, parse_duration};
use switchyard_core::Engine;
use switchyard_proxy::ProxyConfig;

use super::shared::StoreArg;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// How often to poll the store for new route configs (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) poll_interval: Duration,
    /// Keep compiled policies and the last known good configs here, so a
    /// restart is fast and works while the store is unreachable.
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Functions to serve (repeat); default: every function in the store.
    #[arg(long = "function")]
    pub(crate) functions: Vec<String>,
    /// Largest request body, in bytes (413 above).
    #[arg(long, default_value_t = 6 << 20)]
    pub(crate) max_body: usize,
    /// How long an upstream (HTTP or Lambda) may take (504 after).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) upstream_timeout: Duration,
    /// Largest total size of request header names and values, in bytes
    /// (431 above).
    #[arg(long, default_value_t = 32 << 10)]
    pub(crate) max_header_bytes: usize,
    /// Log one in N decision lines; 0 logs none. Metrics count every
    /// request regardless.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) decision_log_sample: u64,
    /// Do not run policies: send every request to its function's stable
    /// version as production traffic. A kill switch, and the baseline for
    /// measuring what the policies cost (see BENCHMARKS.md).
    #[arg(long)]
    pub(crate) bypass_policies: bool,
}

pub(crate) fn run(args: ServeArgs, metrics: Option<super::RenderMetrics>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = switchyard_config::open(&args.store.store).await?;
        let host = switchyard_proxy::start(
            store.clone(),
            Engine::new()?,
            WatchConfig {
                functions: args.functions.clone(),
                interval: args.poll_interval,
                cache_dir: args.cache_dir.clone(),
                ..Default::default()
            },
            ProxyConfig {
                max_body: args.max_body,
                upstream_timeout: args.upstream_timeout,
                max_header_bytes: args.max_header_bytes,
                decision_log_sample: args.decision_log_sample,
                bypass_policies: args.bypass_policies,
                expected_functions: args.functions.clone(),
                metrics,
                ..Default::default()
            },
            Bootstrap {
                first_poll: FirstPoll::Always,
                timeout: POLL_TIMEOUT,
            },
        )
        .await;
        let started = &host.started;
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
            host.watcher.policies().functions().join(", "),
            store.uri(),
            args.poll_interval
        );
        println!(
            "{}",
            serde_json::json!({"listening": format!("http://{addr}")})
        );
        switchyard_proxy::serve(listener, host.proxy.clone(), shutdown_signal()).await?;
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
