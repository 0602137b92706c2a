//! The `switchyard` binary: see `switchyard --help`. The process globals
//! are set here and nowhere else: the heap allocator, the tracing
//! subscriber and the metrics recorder.

use std::sync::Arc;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a proxied request allocates about
/// forty times; with mimalloc the proxy spends about 1 µs less user CPU
/// per request (BENCHMARKS.md, "The hot path, step by step"). Built
/// without transparent huge pages (`no_thp`): with them, its arenas made
/// 48 MiB of huge pages resident in a one-function `serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = switchyard::Cli::parse();
    // JSON and results go to stdout, logs to stderr. Decision lines and
    // swaps are info; everything else warns.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            switchyard_config::log_filter(std::env::var("SWITCHYARD_LOG").ok().as_deref()),
        ))
        .init();
    if cli.is_one_shot() {
        // `switchyard status | head -1`: a closed pipe ends the command
        // quietly, as it does any Unix tool, instead of a panic in
        // println!. (serve keeps Rust's default: its sockets never raise
        // SIGPIPE, and it must not die of a stray one.)
        #[cfg(unix)]
        // SAFETY: setting a signal's disposition to the default, before
        // any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Before anything records (serve's first poll), so nothing is lost.
    let metrics = switchyard_proxy::install_metrics_recorder();
    switchyard::run(cli, Some(Arc::new(move || metrics.render())))
}
