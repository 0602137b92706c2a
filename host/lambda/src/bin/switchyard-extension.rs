//! The mesh extension for AWS Lambda: see `switchyard_lambda::run` for what
//! it serves and its environment variables. Ship it in a layer as
//! `extensions/switchyard-extension`, with `switchyard-wrapper` as
//! `AWS_LAMBDA_EXEC_WRAPPER` (README: "The mesh extension").

use std::process::ExitCode;
use std::sync::Arc;

use switchyard_lambda::{ExtensionEnv, init_logging, run};

#[tokio::main]
async fn main() -> ExitCode {
    let started = std::time::Instant::now();
    init_logging();
    let metrics = switchyard_proxy::install_metrics_recorder();
    // Lambda matches the registered name against the file in /opt/extensions.
    let name = std::env::args()
        .next()
        .as_deref()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()?
                .to_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "switchyard-extension".to_owned());
    let outcome = match ExtensionEnv::from_env() {
        Ok(env) => run(
            env,
            &name,
            started,
            Some(Arc::new(move || metrics.render())),
        )
        .await
        .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-extension: {e}");
            ExitCode::FAILURE
        }
    }
}
