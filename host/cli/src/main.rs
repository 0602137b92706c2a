//! The `switchyard` binary: see `switchyard --help`. The process globals
//! are set here and nowhere else: the tracing subscriber and the metrics
//! recorder.

use std::sync::Arc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = switchyard::Cli::parse();
    // JSON and results go to stdout, logs to stderr. Decision lines and
    // swaps are info; everything else warns.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info")),
        )
        .init();
    // Before anything records (serve's first poll), so nothing is lost.
    let metrics = switchyard_proxy::install_metrics_recorder();
    switchyard::run(cli, Some(Arc::new(move || metrics.render())))
}
