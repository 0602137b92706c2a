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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::SecretRef;
use tokio::sync::OnceCell;

use crate::dispatcher::Target;
use crate::error::DispatchError;

/// How long a read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    cache: Mutex<HashMap<SecretRef, Cached>>,
    ssm: OnceCell<aws_sdk_ssm::Client>,
    secretsmanager: OnceCell<aws_sdk_secretsmanager::Client>,
}

impl Secrets {
    pub(crate) fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Secrets {
            ttl,
            cache: Mutex::new(HashMap::new()),
            ssm: OnceCell::new(),
            secretsmanager: OnceCell::new(),
        })
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
            None => {
                let read = self.read(aws, r).await;
                self.store(r, read.clone());
                read
            }
        }
    }

    /// Keeps a read's value, or counts its failure (keeping the last good).
    fn store(&self, r: &SecretRef, read: Result<Value, String>) {
        let mut cache = self.cache.lock().expect("lock");
        match read {
            Ok(value) => {
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
                    tracing::warn!(target: "switchyard::dispatch", secret = %r, error = %why, "a secret could not be read");
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
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {READ_TIMEOUT:?}")))
    }
}
