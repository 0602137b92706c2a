//! The one start-up sequence of every host (`switchyard serve`, the router
//! function, the mesh extension): restore the last known good routes from
//! the cache, poll the store once within a timeout, then poll in the
//! background, never in a request's path.

use std::sync::Arc;
use std::time::Duration;

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
