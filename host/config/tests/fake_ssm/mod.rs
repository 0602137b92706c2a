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

/// A request rate enforced as AWS does: `rate` a second, bursts up to
/// `rate`.
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Whether a request may go now (and takes its token).
    pub fn take(&self) -> bool {
        let mut b = self.state.lock().unwrap();
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
}

/// The quota and the parameters of an SSM-like store on loopback.
pub struct FakeSsm {
    params: Mutex<HashMap<String, (String, u64)>>,
    quota: TokenBucket,
    /// `GetParameters` calls answered, per access key id.
    pub calls: Mutex<HashMap<String, u64>>,
    /// Those of them that read a route config (`.../functions/<name>`),
    /// not a blob.
    pub route_calls: Mutex<HashMap<String, u64>>,
    pub throttled: AtomicU64,
    /// What the store does to reads now.
    pub fault: Mutex<Fault>,
    /// No quota while set (a test's own setup).
    pub unlimited: std::sync::atomic::AtomicBool,
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
        self.unlimited.load(Ordering::Relaxed) || self.quota.take()
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
        self.route_calls.lock().unwrap().clear();
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
                let routes = req["Names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n.as_str().is_some_and(|n| n.contains("/functions/")));
                if routes {
                    *self
                        .route_calls
                        .lock()
                        .unwrap()
                        .entry(host.clone())
                        .or_default() += 1;
                }
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
            // One page of SSM's ten, the next page's index as its token;
            // the same quota as GetParameters (SSM's 40/s covers both).
            "AmazonSSM.GetParametersByPath" => {
                if *fault == Fault::Throttle || !self.take_token() {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    return error("ThrottlingException", "Rate exceeded");
                }
                let path = format!("{}/", req["Path"].as_str().unwrap_or_default());
                let params = self.params.lock().unwrap();
                let mut names: Vec<&String> = params
                    .keys()
                    .filter(|n| {
                        n.strip_prefix(&path)
                            .is_some_and(|rest| !rest.contains('/'))
                    })
                    .collect();
                names.sort();
                let from: usize = req["NextToken"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let page: Vec<Value> = names
                    .iter()
                    .skip(from)
                    .take(10)
                    .map(|name| {
                        let (value, version) = &params[*name];
                        json!({"Name": name, "Type": "String", "Value": value, "Version": version,
                               "LastModifiedDate": 1.7e9, "DataType": "text"})
                    })
                    .collect();
                let mut answer = json!({ "Parameters": page });
                if from + 10 < names.len() {
                    answer["NextToken"] = json!((from + 10).to_string());
                }
                (StatusCode::OK, out, answer.to_string())
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
        quota: TokenBucket::new(rate),
        calls: Mutex::default(),
        route_calls: Mutex::default(),
        throttled: AtomicU64::new(0),
        fault: Mutex::new(Fault::None),
        unlimited: Default::default(),
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
    /// Requests for `orders` on every host.
    pub fn start(hosts: Vec<Arc<Watcher>>) -> Self {
        Self::start_for(
            hosts
                .into_iter()
                .map(|h| (h, "orders".to_owned()))
                .collect(),
        )
    }

    /// Requests for each host's own function.
    pub fn start_for(hosts: Vec<(Arc<Watcher>, String)>) -> Self {
        let (requests, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, f) = (requests.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                // A stride prime to any fleet size used here.
                i = (i + 7919) % hosts.len();
                r.fetch_add(1, Ordering::Relaxed);
                let (host, function) = &hosts[i];
                let req = Arc::new(switchyard_core::Request::new(
                    function.as_str(),
                    "GET",
                    "/",
                    [("x-switchyard-synthetic", "true")],
                ));
                match host.policies().get(function) {
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

/// An S3-like bucket on loopback holding the fleet snapshot: `GetObject`
/// with `If-None-Match` (a `304` without a body while the ETag matches)
/// and `PutObject` with `If-Match` / `If-None-Match: *` (`412
/// PreconditionFailed` when the condition fails), path-style, with S3's
/// documented 5,500 GET a second per prefix enforced by a token bucket
/// (`503 SlowDown` past it). moto has conditional requests but no request
/// rates.
pub struct FakeS3 {
    objects: Mutex<HashMap<String, (Vec<u8>, String)>>,
    quota: TokenBucket,
    /// GETs answered with a body, and with a 304.
    pub gets: AtomicU64,
    pub not_modified: AtomicU64,
    pub slowed_down: AtomicU64,
    pub puts: AtomicU64,
    etags: AtomicU64,
}

impl FakeS3 {
    /// The object at `path` (`/bucket/key`), as stored.
    pub fn get_raw(&self, path: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .unwrap()
            .get(path)
            .map(|(b, _)| b.clone())
    }

    /// Replaces an object behind the writers' backs (a tampered or stale
    /// copy), with a new ETag.
    pub fn put_raw(&self, path: &str, bytes: Vec<u8>) {
        let etag = format!("\"e{}\"", self.etags.fetch_add(1, Ordering::Relaxed));
        self.objects
            .lock()
            .unwrap()
            .insert(path.to_owned(), (bytes, etag));
    }

    /// Deletes an object (a bucket emptied by mistake or by a lifecycle rule).
    pub fn remove_raw(&self, path: &str) {
        self.objects.lock().unwrap().remove(path);
    }

    pub fn reset_counts(&self) {
        for c in [
            &self.gets,
            &self.not_modified,
            &self.slowed_down,
            &self.puts,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn answer(
        &self,
        method: &axum::http::Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut out = HeaderMap::new();
        let error = |status: StatusCode, code: &str, message: &str| {
            let mut h = HeaderMap::new();
            h.insert("content-type", "application/xml".parse().unwrap());
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fake</RequestId></Error>"
            );
            (status, h, xml.into_bytes())
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match *method {
            axum::http::Method::GET => {
                if !self.quota.take() {
                    self.slowed_down.fetch_add(1, Ordering::Relaxed);
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SlowDown",
                        "Please reduce your request rate.",
                    );
                }
                let objects = self.objects.lock().unwrap();
                let Some((bytes, etag)) = objects.get(path) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NoSuchKey",
                        "The specified key does not exist.",
                    );
                };
                out.insert("etag", etag.parse().unwrap());
                if header("if-none-match") == Some(etag.as_str()) {
                    self.not_modified.fetch_add(1, Ordering::Relaxed);
                    return (StatusCode::NOT_MODIFIED, out, Vec::new());
                }
                self.gets.fetch_add(1, Ordering::Relaxed);
                out.insert("content-type", "text/plain".parse().unwrap());
                (StatusCode::OK, out, bytes.clone())
            }
            axum::http::Method::PUT => {
                let mut objects = self.objects.lock().unwrap();
                let current = objects.get(path).map(|(_, e)| e.clone());
                let holds = match (header("if-match"), header("if-none-match")) {
                    (Some(want), _) => current.as_deref() == Some(want),
                    (None, Some("*")) => current.is_none(),
                    _ => true,
                };
                if !holds {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "At least one of the pre-conditions you specified did not hold",
                    );
                }
                self.puts.fetch_add(1, Ordering::Relaxed);
                let etag = format!("\"e{}\"", self.etags.fetch_add(1, Ordering::Relaxed));
                objects.insert(path.to_owned(), (body.to_vec(), etag.clone()));
                out.insert("etag", etag.parse().unwrap());
                (StatusCode::OK, out, Vec::new())
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not served by this test's bucket",
            ),
        }
    }
}

/// Starts a bucket allowing `rate` GETs a second; returns it and its
/// endpoint URL.
pub async fn fake_s3(rate: f64) -> (Arc<FakeS3>, String) {
    let s3 = Arc::new(FakeS3 {
        objects: Mutex::default(),
        quota: TokenBucket::new(rate),
        gets: AtomicU64::new(0),
        not_modified: AtomicU64::new(0),
        slowed_down: AtomicU64::new(0),
        puts: AtomicU64::new(0),
        etags: AtomicU64::new(0),
    });
    let state = s3.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: HeaderMap,
              body: axum::body::Bytes| {
            let s3 = state.clone();
            async move { s3.answer(&method, uri.path(), &headers, &body) }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (s3, url)
}

/// An S3 client for the bucket at `url` (path-style, no SDK retries).
pub fn s3_client(url: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("fleet", "secret", None, None, "fleet"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
