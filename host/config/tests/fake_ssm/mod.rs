//! An SSM-like store on loopback for the fleet and fault tests: it answers
//! the calls hosts and publishers make (`GetParameters`, `PutParameter`)
//! as SSM does, with a token bucket on reads that answers
//! `ThrottlingException` past it, and faults on demand (down, throttling,
//! slow). moto has neither a quota nor faults. Also the requests those
//! tests run against their hosts meanwhile.
#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use switchyard_config::{ConfigStore, SsmStore, Watcher};

/// The quota and the parameters of an SSM-like store on loopback.
pub struct FakeSsm {
    params: Mutex<HashMap<String, (String, u64)>>,
    bucket: Mutex<(f64, Instant)>,
    rate: f64,
    /// `GetParameters` calls answered, per access key id.
    pub calls: Mutex<HashMap<String, u64>>,
    pub throttled: AtomicU64,
    /// What the store does to reads now.
    pub fault: Mutex<Fault>,
}

/// A fault the store plays on reads (writes go through, as a publisher's
/// would to a store whose reads are failing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers.
    None,
    /// `InternalServerError`, as a failing region does.
    Down,
    /// `ThrottlingException` on every read.
    Throttle,
    /// Answers after this long.
    Slow(Duration),
}

impl FakeSsm {
    fn take_token(&self) -> bool {
        let mut b = self.bucket.lock().unwrap();
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.rate);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Writes a parameter as it is, bypassing the SDK (a corrupt value).
    pub fn put_raw(&self, name: &str, value: &str) {
        let mut params = self.params.lock().unwrap();
        let version = params.get(name).map_or(0, |(_, v)| *v) + 1;
        params.insert(name.to_owned(), (value.to_owned(), version));
    }

    /// The value of a parameter.
    pub fn get_raw(&self, name: &str) -> Option<String> {
        self.params
            .lock()
            .unwrap()
            .get(name)
            .map(|(v, _)| v.clone())
    }

    pub fn reset_counts(&self) {
        self.calls.lock().unwrap().clear();
        self.throttled.store(0, Ordering::Relaxed);
    }

    /// The answer; a slow store reads at once and answers late, as a
    /// slow network would.
    async fn answer(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, HeaderMap, String) {
        let fault = self.fault.lock().unwrap().clone();
        let out = self.answer_now(headers, body, &fault);
        let write = headers
            .get("x-amz-target")
            .is_some_and(|t| t == "AmazonSSM.PutParameter");
        if let (Fault::Slow(d), false) = (&fault, write) {
            tokio::time::sleep(*d).await;
        }
        out
    }

    fn answer_now(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        fault: &Fault,
    ) -> (StatusCode, HeaderMap, String) {
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut out = HeaderMap::new();
        out.insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        let error = |code: &str, message: &str| {
            let mut h = out.clone();
            h.insert("x-amzn-errortype", code.parse().unwrap());
            (
                StatusCode::BAD_REQUEST,
                h,
                json!({"__type": code, "message": message}).to_string(),
            )
        };
        if *fault == Fault::Down && target != "AmazonSSM.PutParameter" {
            let mut h = out.clone();
            h.insert("x-amzn-errortype", "InternalServerError".parse().unwrap());
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                h,
                json!({"__type": "InternalServerError", "message": "down for this test"})
                    .to_string(),
            );
        }
        match target {
            "AmazonSSM.GetParameters" => {
                if *fault == Fault::Throttle || !self.take_token() {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    return error("ThrottlingException", "Rate exceeded");
                }
                // The host is the access key id in the signature.
                let host = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|a| a.split("Credential=").nth(1))
                    .and_then(|c| c.split('/').next())
                    .unwrap_or("?")
                    .to_owned();
                *self.calls.lock().unwrap().entry(host).or_default() += 1;
                let params = self.params.lock().unwrap();
                let (mut found, mut invalid) = (Vec::new(), Vec::new());
                for name in req["Names"].as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap_or_default();
                    match params.get(name) {
                        Some((value, version)) => found.push(json!({
                            "Name": name, "Type": "String", "Value": value, "Version": version,
                            "LastModifiedDate": 1.7e9, "DataType": "text",
                            "ARN": format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}"),
                        })),
                        None => invalid.push(name.to_owned()),
                    }
                }
                (
                    StatusCode::OK,
                    out,
                    json!({"Parameters": found, "InvalidParameters": invalid}).to_string(),
                )
            }
            // Writes have their own quota in SSM; not limited here.
            "AmazonSSM.PutParameter" => {
                let name = req["Name"].as_str().unwrap_or_default().to_owned();
                let value = req["Value"].as_str().unwrap_or_default().to_owned();
                let mut params = self.params.lock().unwrap();
                let version = params.get(&name).map_or(0, |(_, v)| *v) + 1;
                params.insert(name, (value, version));
                (
                    StatusCode::OK,
                    out,
                    json!({"Version": version, "Tier": "Standard"}).to_string(),
                )
            }
            other => error(
                "InvalidAction",
                &format!("{other} is not served by this test's store"),
            ),
        }
    }
}

/// Starts the store; returns it and its endpoint URL.
pub async fn fake_ssm(rate: f64) -> (Arc<FakeSsm>, String) {
    let ssm = Arc::new(FakeSsm {
        params: Mutex::default(),
        bucket: Mutex::new((rate, Instant::now())),
        rate,
        calls: Mutex::default(),
        throttled: AtomicU64::new(0),
        fault: Mutex::new(Fault::None),
    });
    let state = ssm.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let ssm = state.clone();
        async move { ssm.answer(&headers, &body).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (ssm, url)
}

/// An SSM store as host `name` sees it: its own client and credentials,
/// no SDK retries.
pub fn host_store(url: &str, name: &str) -> Arc<dyn ConfigStore> {
    use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(name, "secret", None, None, "fleet"))
        .retry_config(RetryConfig::disabled())
        .build();
    Arc::new(SsmStore::new(aws_sdk_ssm::Client::from_conf(conf), "/fleet").unwrap())
}

/// Requests against `hosts` in turn, one a millisecond, until dropped: a
/// decision for `orders` on the host's live policy; one fails when the
/// host has none or its policy fails.
pub struct Traffic {
    requests: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(hosts: Vec<Arc<Watcher>>) -> Self {
        let (requests, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, f) = (requests.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let req = Arc::new(switchyard_core::Request::new(
                "orders",
                "GET",
                "/",
                [("x-switchyard-synthetic", "true")],
            ));
            let mut i = 0usize;
            loop {
                // A stride prime to any fleet size used here.
                i = (i + 7919) % hosts.len();
                r.fetch_add(1, Ordering::Relaxed);
                match hosts[i].policies().get("orders") {
                    Some(a) if a.pool.decide(&req, &a.route).1.is_none() => {}
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Traffic {
            requests,
            failed,
            task,
        }
    }

    /// (requests, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}
