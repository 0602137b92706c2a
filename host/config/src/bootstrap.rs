//! The one start-up sequence of every host (`switchyard serve`, the router
//! function, the mesh extension): restore the last known good routes from
//! the cache, poll the store once within a timeout, then poll in the
//! background, never in a request's path.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::store::StoreError;
use crate::watch::{Outcome, Watcher};

/// When the first poll runs before serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPoll {
    /// Always (a server: serve what the store says now).
    Always,
    /// Only when the cache restored nothing (a Lambda warm start serves the
    /// cache at once and leaves the store to the background poller).
    WhenNothingRestored,
}

/// How a host starts.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    /// Whether to poll before serving.
    pub first_poll: FirstPoll,
    /// How long that poll may take before the host serves without it.
    pub timeout: Duration,
}

/// What start-up did.
#[derive(Debug)]
pub struct Started {
    /// Functions restored from the cache.
    pub restored: Vec<String>,
    /// The first poll's outcome, when it ran.
    pub first_poll: Option<Result<Vec<(String, Outcome)>, StoreError>>,
    /// The background poller.
    pub poller: tokio::task::JoinHandle<()>,
}

/// How a host writes its start-up report ([`Started::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Lines for a person at a terminal (`switchyard serve`).
    Text,
    /// One JSON object a line with an `event` field, for a log service
    /// (CloudWatch, from the Lambda embeddings).
    Json,
}

impl Started {
    /// What start-up did, as the lines a host writes to stderr: the
    /// functions restored from the cache, then each function the first
    /// poll read and what it found, or that the first poll failed (the
    /// host serves what the cache had and keeps polling). Every host
    /// reports through this, so they say the same things.
    pub fn report(&self, format: ReportFormat) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.restored.is_empty() {
            lines.push(match format {
                ReportFormat::Text => format!("restored from cache: {}", self.restored.join(", ")),
                ReportFormat::Json => {
                    json!({"event": "restored-from-cache", "functions": self.restored}).to_string()
                }
            });
        }
        match &self.first_poll {
            Some(Ok(outcomes)) => {
                for (f, o) in outcomes {
                    lines.push(match format {
                        // (An outcome always serializes.)
                        ReportFormat::Text => {
                            format!("{f}: {}", serde_json::to_string(o).unwrap_or_default())
                        }
                        ReportFormat::Json => {
                            json!({"event": "poll", "function": f, "outcome": o}).to_string()
                        }
                    });
                }
            }
            Some(Err(e)) => lines.push(match format {
                ReportFormat::Text => format!(
                    "warning: first poll failed ({e}); serving what the cache had, retrying"
                ),
                ReportFormat::Json => {
                    json!({"event": "poll-failed", "error": e.to_string()}).to_string()
                }
            }),
            None => {}
        }
        lines
    }
}

/// Restores from the cache, polls once (see [`Bootstrap`]), and starts the
/// background poller. Call it on a Tokio runtime.
pub async fn bootstrap(watcher: &Arc<Watcher>, how: Bootstrap) -> Started {
    let restored = watcher.restore_from_cache();
    let poll = match how.first_poll {
        FirstPoll::Always => true,
        FirstPoll::WhenNothingRestored => restored.is_empty(),
    };
    let first_poll = if poll {
        Some(
            tokio::time::timeout(how.timeout, watcher.poll())
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable {
                        store: watcher.store().uri(),
                        message: format!("no answer within {:?}", how.timeout),
                    })
                }),
        )
    } else {
        None
    };
    let poller = watcher.clone().spawn();
    Started {
        restored,
        first_poll,
        poller,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(first_poll: Option<Result<Vec<(String, Outcome)>, StoreError>>) -> Started {
        Started {
            restored: vec!["orders".into()],
            first_poll,
            poller: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .spawn(async {}),
        }
    }

    #[test]
    fn the_report_says_what_start_up_did_in_either_format() {
        let ok = started(Some(Ok(vec![(
            "orders".into(),
            Outcome::Swapped { from: None, to: 3 },
        )])));
        assert_eq!(
            ok.report(ReportFormat::Text),
            [
                "restored from cache: orders",
                r#"orders: {"outcome":"swapped","from":null,"to":3}"#,
            ]
        );
        let json: Vec<serde_json::Value> = ok
            .report(ReportFormat::Json)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            json,
            [
                json!({"event": "restored-from-cache", "functions": ["orders"]}),
                json!({"event": "poll", "function": "orders", "outcome": {"outcome": "swapped", "from": null, "to": 3}}),
            ]
        );
        let failed = started(Some(Err(StoreError::Unavailable {
            store: "dir:x".into(),
            message: "no answer within 1s".into(),
        })));
        let text = failed.report(ReportFormat::Text);
        assert!(
            text[1].starts_with("warning: first poll failed ("),
            "{text:?}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&failed.report(ReportFormat::Json)[1]).unwrap();
        assert_eq!(json["event"], "poll-failed", "{json}");
        assert!(
            json["error"].as_str().unwrap().contains("no answer"),
            "{json}"
        );
        assert_eq!(started(None).report(ReportFormat::Text).len(), 1);
    }
}
