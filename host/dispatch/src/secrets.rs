//! Secret references in a route's context (`{"$ssm": "/orders/db-password"}`,
//! `{"$secretsmanager": "<arn>"}`), read with the AWS SDK when a call needs
//! them and handed to the target, never shown.
//!
//! Values are cached per reference. Past the TTL a value is still used
//! while one background read refreshes it; a refresh that fails keeps the
//! last good value and is counted
//! (`switchyard_secret_refresh_failures_total{source}`). Only a secret
//! never read yet waits for the store, and only its failure fails a call
//! (a 502 naming the function, the key and the reference, not the value).
//!
//! The reads share the account's SSM quota with the route polls, so a
//! missing or hanging secret costs the store little: one read in flight
//! per reference (the calls that need it meanwhile wait for that read), a
//! failure remembered for [`FAILURE_TTL`] (calls fail at once, saying
//! when it is read again), and each read bounded by [`READ_TIMEOUT`] or
//! half the upstream timeout, whichever is shorter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::SecretRef;
use tokio::sync::OnceCell;

use crate::dispatcher::Target;
use crate::error::DispatchError;

/// How long a read may take at most.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a secret that could not be read is not asked for again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(10);

/// Most secrets cached at once (routes name few; a bound all the same).
const MAX_CACHED: usize = 4096;

/// A secret's value, kept out of `Debug`.
#[derive(Clone)]
struct Value(Arc<str>);

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

#[derive(Debug)]
struct Cached {
    value: Value,
    read_at: Instant,
    refreshing: bool,
}

/// The secret cache and the clients that read secrets.
#[derive(Debug)]
pub(crate) struct Secrets {
    ttl: Duration,
    read_timeout: Duration,
    cache: Mutex<HashMap<SecretRef, Cached>>,
    /// Secrets never read that could not be: why, and when.
    failed: Mutex<HashMap<SecretRef, (String, Instant)>>,
    /// The first read of a secret in flight: the calls that need it wait
    /// for it instead of each reading.
    first_reads: Mutex<HashMap<SecretRef, Arc<tokio::sync::Mutex<()>>>>,
    ssm: OnceCell<aws_sdk_ssm::Client>,
    secretsmanager: OnceCell<aws_sdk_secretsmanager::Client>,
}

impl Secrets {
    /// Secrets cached for `ttl`, read within `upstream_timeout / 2` (at
    /// most [`READ_TIMEOUT`]).
    pub(crate) fn new(ttl: Duration, upstream_timeout: Duration) -> Arc<Self> {
        Arc::new(Secrets {
            ttl,
            read_timeout: (upstream_timeout / 2).min(READ_TIMEOUT),
            cache: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            first_reads: Mutex::new(HashMap::new()),
            ssm: OnceCell::new(),
            secretsmanager: OnceCell::new(),
        })
    }

    /// The value cached for `r`, or the remembered failure of its first
    /// read; `None` when it must be read.
    fn cached_first(&self, r: &SecretRef) -> Option<Result<Value, String>> {
        if let Some(c) = self.cache.lock().expect("lock").get(r) {
            return Some(Ok(c.value.clone()));
        }
        let failed = self.failed.lock().expect("lock");
        let (why, at) = failed.get(r)?;
        let left = FAILURE_TTL.saturating_sub(at.elapsed());
        (!left.is_zero()).then(|| {
            Err(format!(
                "{why} (not asked again for {}s)",
                left.as_secs_f64().ceil()
            ))
        })
    }

    /// The first read of `r`: one in flight; the calls that arrive
    /// meanwhile get its outcome.
    async fn first_read(
        self: &Arc<Self>,
        aws: &aws_config::SdkConfig,
        r: &SecretRef,
    ) -> Result<Value, String> {
        let lock = self
            .first_reads
            .lock()
            .expect("lock")
            .entry(r.clone())
            .or_default()
            .clone();
        let _reading = lock.lock().await;
        if let Some(done) = self.cached_first(r) {
            return done;
        }
        let read = self.read(aws, r).await;
        self.store(r, read.clone());
        self.first_reads.lock().expect("lock").remove(r);
        read
    }

    /// Puts the value of each of `to`'s secrets into its context.
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        aws: &aws_config::SdkConfig,
        to: &mut Target,
    ) -> Result<(), DispatchError> {
        for (key, r) in std::mem::take(&mut to.secrets) {
            let value = self.get(aws, &r).await.map_err(|why| {
                DispatchError::internal(
                    "SecretUnavailable",
                    format!(
                        "{} (qualifier {}): the secret for context key {key}, {r}, could not be read: {why}",
                        to.function, to.qualifier
                    ),
                )
            })?;
            to.context.insert(key, value.0.to_string());
        }
        Ok(())
    }

    async fn get(
        self: &Arc<Self>,
        aws: &aws_config::SdkConfig,
        r: &SecretRef,
    ) -> Result<Value, String> {
        let stale = {
            let mut cache = self.cache.lock().expect("lock");
            match cache.get_mut(r) {
                Some(c) if c.read_at.elapsed() < self.ttl => return Ok(c.value.clone()),
                Some(c) => {
                    let refresh = !c.refreshing;
                    c.refreshing = true;
                    Some((c.value.clone(), refresh))
                }
                None => None,
            }
        };
        match stale {
            Some((value, refresh)) => {
                if refresh {
                    let (me, aws, r) = (self.clone(), aws.clone(), r.clone());
                    tokio::spawn(async move {
                        let read = me.read(&aws, &r).await;
                        me.store(&r, read);
                    });
                }
                Ok(value)
            }
            None => match self.cached_first(r) {
                Some(done) => done,
                None => self.first_read(aws, r).await,
            },
        }
    }

    /// Keeps a read's value, or counts its failure (keeping the last good).
    fn store(&self, r: &SecretRef, read: Result<Value, String>) {
        let mut cache = self.cache.lock().expect("lock");
        match read {
            Ok(value) => {
                self.failed.lock().expect("lock").remove(r);
                if cache.len() >= MAX_CACHED && !cache.contains_key(r) {
                    cache.clear();
                }
                cache.insert(
                    r.clone(),
                    Cached {
                        value,
                        read_at: Instant::now(),
                        refreshing: false,
                    },
                );
            }
            Err(why) => {
                crate::catalogue::SECRET_REFRESH_FAILURES
                    .counter(&[("source", r.source())])
                    .increment(1);
                if let Some(c) = cache.get_mut(r) {
                    // Tried again after another TTL, not on every call.
                    c.refreshing = false;
                    c.read_at = Instant::now();
                    tracing::warn!(target: "switchyard::dispatch", secret = %r, error = %why, "a secret could not be refreshed; its last good value is kept");
                } else {
                    tracing::warn!(target: "switchyard::dispatch", secret = %r, error = %why, retry_in = ?FAILURE_TTL, "a secret could not be read; calls that need it fail until it is read again");
                    let mut failed = self.failed.lock().expect("lock");
                    if failed.len() >= MAX_CACHED {
                        failed.clear();
                    }
                    failed.insert(r.clone(), (why, Instant::now()));
                }
            }
        }
    }

    async fn read(&self, aws: &aws_config::SdkConfig, r: &SecretRef) -> Result<Value, String> {
        let read = async {
            match r {
                SecretRef::Ssm(name) => {
                    let client = self
                        .ssm
                        .get_or_init(|| async { aws_sdk_ssm::Client::new(aws) })
                        .await;
                    let out = client
                        .get_parameter()
                        .name(name)
                        .with_decryption(true)
                        .send()
                        .await
                        .map_err(|e| switchyard_config::sdk_message(&e).1)?;
                    out.parameter()
                        .and_then(|p| p.value())
                        .map(|v| Value(v.into()))
                        .ok_or_else(|| "SSM returned no value".to_owned())
                }
                SecretRef::SecretsManager(id) => {
                    let client = self
                        .secretsmanager
                        .get_or_init(|| async { aws_sdk_secretsmanager::Client::new(aws) })
                        .await;
                    let out = client
                        .get_secret_value()
                        .secret_id(id)
                        .send()
                        .await
                        .map_err(|e| switchyard_config::sdk_message(&e).1)?;
                    out.secret_string().map(|v| Value(v.into())).ok_or_else(|| {
                        "the secret has no SecretString (binary secrets are not handed on)"
                            .to_owned()
                    })
                }
            }
        };
        let timeout = self.read_timeout;
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback endpoint answering SSM's `GetParameter` as SSM answers
    /// a missing parameter (`400`, `__type: ParameterNotFound`, awsJson1.1),
    /// or never answering; counts the requests. (The emulator's SSM
    /// cannot be made to hang, so this stands in for it.)
    async fn ssm_endpoint(hang: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let calls = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).into_owned();
                        let Some((head, body)) = text.split_once("\r\n\r\n") else {
                            continue;
                        };
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() < len {
                            continue;
                        }
                        got.clear();
                        calls.fetch_add(1, Ordering::SeqCst);
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        let answer = r#"{"__type":"ParameterNotFound","message":"Parameter /missing not found."}"#;
                        let reply = format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: 1\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, calls)
    }

    /// `n` reads of `r` started at once.
    fn at_once(
        n: usize,
        secrets: &Arc<Secrets>,
        aws: &aws_config::SdkConfig,
        r: &SecretRef,
    ) -> Vec<tokio::task::JoinHandle<Result<Value, String>>> {
        (0..n)
            .map(|_| {
                let (secrets, aws, r) = (secrets.clone(), aws.clone(), r.clone());
                tokio::spawn(async move { secrets.get(&aws, &r).await })
            })
            .collect()
    }

    async fn aws(url: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_config::Region::new("us-east-1"))
            .test_credentials()
            .load()
            .await
    }

    /// Twenty calls at once that need a missing secret make one read; the
    /// next calls fail at once from the remembered failure, saying when it
    /// is asked again, and make no read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_secret_is_read_once_and_its_failure_remembered() {
        let (url, calls) = ssm_endpoint(false).await;
        let aws = aws(&url).await;
        let secrets = Secrets::new(Duration::from_secs(300), Duration::from_secs(30));
        let r = SecretRef::Ssm("/missing".into());
        for read in at_once(20, &secrets, &aws, &r) {
            let why = read.await.unwrap().unwrap_err();
            assert!(why.contains("not found"), "{why}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for _ in 0..20 {
            let why = secrets.get(&aws, &r).await.unwrap_err();
            assert!(why.contains("not asked again for"), "{why}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A secret store that never answers holds the calls that need the
    /// secret for half the upstream timeout, once: one read, and the calls
    /// after it fail at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_secret_store_is_waited_on_once_within_the_timeout() {
        let (url, calls) = ssm_endpoint(true).await;
        let aws = aws(&url).await;
        let secrets = Secrets::new(Duration::from_secs(300), Duration::from_millis(600));
        let r = SecretRef::Ssm("/hangs".into());
        let started = Instant::now();
        for read in at_once(10, &secrets, &aws, &r) {
            let why = read.await.unwrap().unwrap_err();
            assert!(why.contains("no answer within 300ms"), "{why}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let again = Instant::now();
        assert!(secrets.get(&aws, &r).await.is_err());
        assert!(again.elapsed() < Duration::from_millis(100));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
