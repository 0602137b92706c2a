//! `switchyard shadow report`: what a running host's shadow comparisons
//! found, read from its admin listener.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use http_body_util::BodyExt as _;

use super::shared::{block_on, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum ShadowCommand {
    /// A function's shadow comparisons on one host: how many mirrored
    /// answers were compared with the primary's, how many differed, and
    /// the latest differences (status, the route's headers, the JSON paths
    /// that differ; values redacted unless the route's shadow.reveal names
    /// them). Prints JSON.
    Report {
        /// The function.
        function: String,
        /// The host's admin listener (`serve --admin-listen`).
        #[arg(
            long,
            default_value = "http://127.0.0.1:9901",
            env = "SWITCHYARD_ADMIN"
        )]
        admin: String,
        /// The admin listener's bearer token, in a file (`serve
        /// --admin-token-file`).
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: ShadowCommand) -> Result<()> {
    let ShadowCommand::Report {
        function,
        admin,
        admin_token_file,
    } = cmd;
    switchyard_config::check_function_name(&function)?;
    let token = admin_token_file
        .map(|p| {
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read the admin token file {}", p.display()))
        })
        .transpose()?;
    let url = format!("{}/v1/shadow/{function}", admin.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--admin {admin:?} is not a URL like http://127.0.0.1:9901"))?;
    block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut req = http::Request::get(uri);
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {}", t.trim()));
        }
        let res = client
            .request(req.body(http_body_util::Empty::new())?)
            .await
            .with_context(|| format!("cannot reach the admin listener at {admin} (is `switchyard serve` running with --admin-listen there?)"))?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::json!({"error": String::from_utf8_lossy(&body)}));
        if !status.is_success() {
            bail!(
                "{admin} answered {status}: {}",
                json["error"].as_str().unwrap_or_default()
            );
        }
        print_json(&json)
    })
}
