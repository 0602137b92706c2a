//! One test suite, run against every `ConfigStore` backend: `dir` on a temp
//! folder, `ssm` against moto's SSM API, and `ssm` with every blob in moto's
//! S3 (`?blobs=s3://..&blob-threshold=0`), and `cloudmap` against moto's
//! Cloud Map (`servicediscovery`) with blobs in its SSM. Plus the watcher's hot swap and
//! last-known-good behaviour on both.

use switchyard_test_support as common;

use std::sync::Arc;

use common::aws;
use switchyard_config::{ConfigStore, DirStore, SsmStore, StoreError};
use switchyard_config::{Outcome, WatchConfig, Watcher};
use switchyard_core::{Digest, Mode, RouteConfig};
use switchyard_test_artifacts as art;

/// A fresh, isolated store of each kind, and how to corrupt data in it
/// behind the store's back (as a broken pipeline or an attacker would).
#[async_trait::async_trait]
trait Backend: Sized {
    async fn fresh() -> (Arc<dyn ConfigStore>, Self);
    /// Replaces the first stored piece of blob `digest` with other bytes.
    async fn corrupt_blob(&self, digest: &Digest);
    /// Writes raw text as a new route-config version, unchecked.
    async fn put_raw_route(&self, function: &str, text: &str);
}

struct Dir(tempfile::TempDir);

#[async_trait::async_trait]
impl Backend for Dir {
    async fn fresh() -> (Arc<dyn ConfigStore>, Self) {
        let tmp = tempfile::tempdir().unwrap();
        (Arc::new(DirStore::new(tmp.path()).unwrap()), Dir(tmp))
    }

    async fn corrupt_blob(&self, digest: &Digest) {
        let path = self
            .0
            .path()
            .join(format!("policies/sha256-{}.wasm", digest.hex()));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }

    async fn put_raw_route(&self, function: &str, text: &str) {
        let dir = self.0.path().join("functions").join(function);
        std::fs::create_dir_all(&dir).unwrap();
        let next = std::fs::read_dir(&dir).unwrap().count() + 1;
        std::fs::write(dir.join(format!("{next}.json")), text).unwrap();
    }
}

struct Ssm {
    client: aws_sdk_ssm::Client,
    prefix: String,
}

static PREFIXES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[async_trait::async_trait]
impl Backend for Ssm {
    async fn fresh() -> (Arc<dyn ConfigStore>, Self) {
        aws::endpoint();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let client = aws_sdk_ssm::Client::new(&config);
        let prefix = format!(
            "/t{}-{}",
            std::process::id(),
            PREFIXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let store = SsmStore::new(client.clone(), &prefix).unwrap();
        (Arc::new(store), Ssm { client, prefix })
    }

    async fn corrupt_blob(&self, digest: &Digest) {
        // Valid base64 of other data: decodes, decompresses or not, and
        // must never verify.
        let garbage = base64_of(b"definitely not the policy you published");
        self.client
            .put_parameter()
            .name(format!(
                "{}/policies/sha256-{}/0000",
                self.prefix,
                digest.hex()
            ))
            .value(garbage)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }

    async fn put_raw_route(&self, function: &str, text: &str) {
        self.client
            .put_parameter()
            .name(format!("{}/functions/{function}", self.prefix))
            .value(text)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }
}

/// Cloud Map (the emulator's `servicediscovery`) for route configs, SSM
/// for blobs; a fresh namespace each.
struct CloudMap {
    client: aws_sdk_servicediscovery::Client,
    namespace: String,
    namespace_id: String,
    ssm: Ssm,
}

impl CloudMap {
    /// The id of service `name` in this namespace, made if missing.
    async fn service_id(&self, name: &str) -> String {
        let services = self.client.list_services().send().await.unwrap();
        for s in services.services() {
            if s.name() == Some(name) {
                let got = self
                    .client
                    .get_service()
                    .id(s.id().unwrap())
                    .send()
                    .await
                    .unwrap();
                if got.service().unwrap().namespace_id() == Some(self.namespace_id.as_str()) {
                    return s.id().unwrap().to_owned();
                }
            }
        }
        let created = self
            .client
            .create_service()
            .name(name)
            .namespace_id(&self.namespace_id)
            .send()
            .await
            .unwrap();
        created.service().unwrap().id().unwrap().to_owned()
    }
}

#[async_trait::async_trait]
impl Backend for CloudMap {
    async fn fresh() -> (Arc<dyn ConfigStore>, Self) {
        let (_, ssm) = Ssm::fresh().await;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let client = switchyard_config::cloudmap_client(&config);
        let namespace = format!("sy{}", &ssm.prefix[2..]);
        let created = client
            .create_http_namespace()
            .name(&namespace)
            .send()
            .await
            .unwrap();
        let op = client
            .get_operation()
            .operation_id(created.operation_id().unwrap())
            .send()
            .await
            .unwrap();
        let namespace_id = op.operation().unwrap().targets().unwrap()
            [&aws_sdk_servicediscovery::types::OperationTargetType::Namespace]
            .clone();
        let blobs = SsmStore::new(ssm.client.clone(), &ssm.prefix).unwrap();
        let store =
            switchyard_config::CloudMapStore::new(client.clone(), &namespace, blobs).unwrap();
        (
            Arc::new(store),
            CloudMap {
                client,
                namespace,
                namespace_id,
                ssm,
            },
        )
    }

    async fn corrupt_blob(&self, digest: &Digest) {
        self.ssm.corrupt_blob(digest).await
    }

    /// As a broken pipeline would: a new version instance holding `text`,
    /// and the live pointer moved to it, unchecked.
    async fn put_raw_route(&self, function: &str, text: &str) {
        let live = self.service_id(switchyard_config::LIVE_SERVICE).await;
        let found = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(switchyard_config::LIVE_SERVICE)
            .query_parameters("function", function)
            .send()
            .await
            .unwrap();
        let version = found
            .instances()
            .iter()
            .filter_map(|i| i.attributes()?.get("version")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let service = self.service_id(function).await;
        self.client
            .register_instance()
            .service_id(service)
            .instance_id(format!("v{version}"))
            .attributes("config-0", text)
            .attributes("version", version.to_string())
            .send()
            .await
            .unwrap();
        self.client
            .register_instance()
            .service_id(live)
            .instance_id(function)
            .attributes("function", function)
            .attributes("version", version.to_string())
            .send()
            .await
            .unwrap();
    }
}

/// SSM for routes and manifests, S3 for every blob.
struct SsmS3 {
    ssm: Ssm,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

/// A fresh moto S3 bucket.
async fn bucket() -> (aws_sdk_s3::Client, String) {
    aws::endpoint();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let s3 = switchyard_config::s3_client(&config);
    let bucket = format!(
        "sy-t{}-{}",
        std::process::id(),
        PREFIXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    (s3, bucket)
}

#[async_trait::async_trait]
impl Backend for SsmS3 {
    async fn fresh() -> (Arc<dyn ConfigStore>, Self) {
        let (_, ssm) = Ssm::fresh().await;
        let (s3, bucket) = bucket().await;
        let store = SsmStore::from_env(&format!(
            "{}?blobs=s3://{bucket}/policies&blob-threshold=0",
            ssm.prefix
        ))
        .await
        .unwrap();
        (Arc::new(store), SsmS3 { ssm, s3, bucket })
    }

    async fn corrupt_blob(&self, digest: &Digest) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(format!("policies/sha256-{}", digest.hex()))
            .body(b"definitely not the policy you published".to_vec().into())
            .send()
            .await
            .unwrap();
    }

    async fn put_raw_route(&self, function: &str, text: &str) {
        self.ssm.put_raw_route(function, text).await
    }
}

fn base64_of(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn config(mode: &str) -> RouteConfig {
    RouteConfig::from_json(&format!(
        r#"{{"mode":"{mode}","versions":{{"stable":"7","candidate":"8"}}}}"#
    ))
    .unwrap()
}

fn no_progress(_: usize, _: usize) {}

async fn publish(store: &dyn ConfigStore, function: &str, wasm: &str, mode: &str) -> (u64, Digest) {
    let bytes = std::fs::read(wasm).unwrap();
    let digest = store.put_blob(&bytes, &no_progress).await.unwrap();
    let mut cfg = config(mode);
    cfg.policy = Some(digest);
    (store.put_route(function, &cfg).await.unwrap(), digest)
}

fn watcher(store: Arc<dyn ConfigStore>, cache: Option<&std::path::Path>) -> Watcher {
    Watcher::new(
        store,
        common::engine().clone(),
        WatchConfig {
            functions: vec!["orders".into()],
            cache_dir: cache.map(Into::into),
            ..Default::default()
        },
    )
}

async fn routes_versions_and_history<B: Backend>() {
    let (store, _b) = B::fresh().await;
    assert_eq!(store.functions().await.unwrap(), Vec::<String>::new());
    assert!(matches!(
        store.latest(&["orders".into()]).await.unwrap()[..],
        [Ok(None)]
    ));
    for (i, mode) in ["synthetic", "production", "synthetic"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            store.put_route("orders", &config(mode)).await.unwrap(),
            i as u64 + 1
        );
    }
    store
        .put_route("payments", &config("production"))
        .await
        .unwrap();
    assert_eq!(store.functions().await.unwrap(), ["orders", "payments"]);
    let latest = store
        .latest(&["orders".into(), "payments".into(), "nope".into()])
        .await
        .unwrap();
    let entry = |i: usize| latest[i].as_ref().unwrap().as_ref();
    assert_eq!(entry(0).unwrap().version, 3);
    assert_eq!(entry(1).unwrap().config.mode, Mode::Production);
    assert!(entry(2).is_none());
    let v2 = store.version("orders", 2).await.unwrap();
    assert_eq!((v2.version, v2.config.mode), (2, Mode::Production));
    assert!(v2.modified.is_some());
    let history = store.history("orders").await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| r.as_ref().unwrap().version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(matches!(
        store.version("orders", 9).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.history("nope").await.unwrap().is_empty());
}

async fn blobs_round_trip_and_are_verified<B: Backend>() {
    let (store, b) = B::fresh().await;
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    let digest = Digest::of(&bytes);
    assert!(!store.has_blob(&digest).await.unwrap());
    assert!(matches!(
        store.get_blob(&digest).await,
        Err(StoreError::NotFound(_))
    ));
    let seen = std::sync::Mutex::new(Vec::new());
    assert_eq!(
        store
            .put_blob(&bytes, &|d, t| seen.lock().unwrap().push((d, t)))
            .await
            .unwrap(),
        digest
    );
    assert!(!seen.lock().unwrap().is_empty());
    assert!(store.has_blob(&digest).await.unwrap());
    assert_eq!(store.get_blob(&digest).await.unwrap(), bytes);
    // Publishing the same bytes again is a no-op.
    assert_eq!(store.put_blob(&bytes, &no_progress).await.unwrap(), digest);
    b.corrupt_blob(&digest).await;
    let err = store.get_blob(&digest).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DigestMismatch { .. } | StoreError::Corrupt { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&digest.to_string()),
        "the error names the digest: {err}"
    );
}

async fn bad_values_are_refused<B: Backend>() {
    let (store, b) = B::fresh().await;
    let mut big = config("synthetic");
    big.flags.insert("padding".into(), "x".repeat(5000));
    let err = store.put_route("orders", &big).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { limit: 4096, .. }),
        "{err}"
    );
    let err = store
        .put_route("../etc", &config("synthetic"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidName(_)), "{err}");
    b.put_raw_route(
        "orders",
        r#"{"mode":"synthetic","versions":{"stable":"7"},"colour":"red"}"#,
    )
    .await;
    // The bad entry is that function's error, not the whole read's.
    let latest = store.latest(&["orders".into()]).await.unwrap();
    let err = latest[0].as_ref().unwrap_err();
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    assert_eq!(err.kind(), "corrupt");
}

async fn watcher_swaps_and_keeps_last_known_good<B: Backend>() {
    let (store, b) = B::fresh().await;
    let w = watcher(store.clone(), None);
    assert_eq!(
        w.poll().await.unwrap(),
        vec![("orders".into(), Outcome::Missing)]
    );
    let (v1, _) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped { from: None, to: v1 }
    );
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Unchanged { version: v1 }
    );
    let held = w.policies().get("orders").unwrap();

    // A new version swaps in; what a reader already holds stays usable.
    let (v2, d2) = publish(&*store, "orders", art::STICKY_CANARY, "production").await;
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped {
            from: Some(v1),
            to: v2
        }
    );
    assert_eq!(w.policies().get("orders").unwrap().policy.digest(), d2);
    assert_eq!(held.stored.version, v1);
    let req = common::request(&[("x-switchyard-synthetic", "true")]);
    assert_eq!(
        held.policy
            .evaluator()
            .evaluate(&req, &held.route)
            .unwrap()
            .target,
        "8"
    );

    // A version whose blob is corrupt is refused; v2 keeps serving.
    let (v3, d3) = publish(&*store, "orders", art::BAD_TRAP, "production").await;
    b.corrupt_blob(&d3).await;
    match &w.poll().await.unwrap()[0].1 {
        Outcome::Rejected { version, reason } => {
            assert_eq!(*version, v3);
            assert!(reason.contains(&d3.to_string()), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(w.policies().get("orders").unwrap().stored.version, v2);

    // Valid bytes that are not a component: refused too.
    let junk = b"\0asm\x01\0\0\0".to_vec();
    let digest = store.put_blob(&junk, &no_progress).await.unwrap();
    let mut cfg = config("synthetic");
    cfg.policy = Some(digest);
    let v4 = store.put_route("orders", &cfg).await.unwrap();
    let out = w.poll().await.unwrap();
    assert!(
        matches!(&out[0].1, Outcome::Rejected { version, reason } if *version == v4 && reason.contains("not a component")),
        "{out:?}"
    );
    assert_eq!(w.policies().get("orders").unwrap().stored.version, v2);
    assert!(
        w.stats
            .rejections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );

    // Rolling back to a good config swaps again.
    let good = store.version("orders", v1).await.unwrap();
    let v5 = store.put_route("orders", &good.config).await.unwrap();
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped {
            from: Some(v2),
            to: v5
        }
    );
}

async fn failing_fixture_cases_keep_a_version_out<B: Backend>() {
    let (store, _b) = B::fresh().await;
    let w = watcher(store.clone(), None);
    let (v1, _) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    w.poll().await.unwrap();
    let cases = br#"{"cases":[{"name":"tagged goes to candidate","request":{"headers":{"x-switchyard-synthetic":"1"}},"expect":{"target":"8"}}]}"#;
    let cases_digest = store.put_blob(cases, &no_progress).await.unwrap();
    // sticky-canary ignores the synthetic header: the case fails.
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    let mut cfg = config("synthetic");
    cfg.policy = Some(store.put_blob(&bytes, &no_progress).await.unwrap());
    cfg.cases = Some(cases_digest);
    let v2 = store.put_route("orders", &cfg).await.unwrap();
    let out = w.poll().await.unwrap();
    assert!(
        matches!(&out[0].1, Outcome::Rejected { version, reason } if *version == v2 && reason.contains("tagged goes to candidate")),
        "{out:?}"
    );
    assert_eq!(w.policies().get("orders").unwrap().stored.version, v1);
}

async fn cache_serves_when_the_store_is_down<B: Backend>() {
    let (store, _b) = B::fresh().await;
    let cache = tempfile::tempdir().unwrap();
    let (v1, d1) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    let w = watcher(store.clone(), Some(cache.path()));
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped { from: None, to: v1 }
    );

    // A new host, its store unreachable: with the cache it serves v1.
    let down: Arc<dyn ConfigStore> = Arc::new(unreachable_ssm().await);
    let w2 = watcher(down.clone(), Some(cache.path()));
    assert_eq!(w2.restore_from_cache(), ["orders"]);
    let active = w2.policies().get("orders").unwrap();
    assert_eq!((active.stored.version, active.policy.digest()), (v1, d1));
    assert!(matches!(
        w2.poll().await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(
        w2.policies().get("orders").is_some(),
        "a failed poll keeps what is live"
    );
    // Without a cache there is nothing to serve.
    let w3 = watcher(down, None);
    assert!(w3.restore_from_cache().is_empty());
    assert!(w3.policies().get("orders").is_none());
}

/// One function's corrupt version, and a version whose blob is not there
/// yet, hold no other function back and are not store failures; the
/// corrupt one is skipped by `history` readers, the late one applied once
/// its blob arrives.
async fn one_bad_function_holds_no_one_back<B: Backend>() {
    let (store, b) = B::fresh().await;
    let (o1, _) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    let (p1, _) = publish(&*store, "payments", art::SYNTHETIC_HEADER, "production").await;
    let w = Watcher::new(
        store.clone(),
        common::engine().clone(),
        WatchConfig {
            // Every function in the store; retries without waiting.
            interval: std::time::Duration::ZERO,
            ..Default::default()
        },
    );
    w.poll().await.unwrap();
    b.put_raw_route("orders", r#"{"mode":"synth"#).await;
    let (p2, _) = publish(&*store, "payments", art::SYNTHETIC_HEADER, "synthetic").await;
    let out: std::collections::HashMap<String, Outcome> = w
        .poll()
        .await
        .expect("not a store failure")
        .into_iter()
        .collect();
    assert_eq!(
        out["payments"],
        Outcome::Swapped {
            from: Some(p1),
            to: p2
        }
    );
    assert!(
        matches!(&out["orders"], Outcome::Unreadable { kind: "corrupt", version: Some(v), reason } if *v == o1 + 1 && reason.contains("orders")),
        "{out:?}"
    );
    assert_eq!(w.policies().get("orders").unwrap().stored.version, o1);
    let history = store.history("orders").await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].as_ref().unwrap().version, o1);
    let bad = history[1].as_ref().unwrap_err();
    assert_eq!((bad.kind(), bad.version()), ("corrupt", Some(o1 + 1)));

    // A version naming a blob that is not stored yet: deferred, not
    // refused for good; live once the blob arrives.
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    let mut cfg = config("production");
    cfg.policy = Some(Digest::of(&bytes));
    let p3 = store.put_route("payments", &cfg).await.unwrap();
    let out: std::collections::HashMap<String, Outcome> =
        w.poll().await.unwrap().into_iter().collect();
    assert!(
        matches!(&out["payments"], Outcome::Deferred { version, .. } if *version == p3),
        "{out:?}"
    );
    store.put_blob(&bytes, &no_progress).await.unwrap();
    let out: std::collections::HashMap<String, Outcome> =
        w.poll().await.unwrap().into_iter().collect();
    assert_eq!(
        out["payments"],
        Outcome::Swapped {
            from: Some(p2),
            to: p3
        }
    );
}

/// A function deleted from the store is unrouted once several successful
/// listings in a row leave it out, and its cached route does not come back
/// after a restart; a listing that is empty or short for a moment (a
/// folder swapped, a store being restored) unroutes nothing and keeps the
/// cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_confirmed_absence_unroutes_a_function() {
    let (store, b) = Dir::fresh().await;
    let cache = tempfile::tempdir().unwrap();
    publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    publish(&*store, "payments", art::SYNTHETIC_HEADER, "synthetic").await;
    let listing = |remove_after| {
        Watcher::new(
            store.clone(),
            common::engine().clone(),
            WatchConfig {
                cache_dir: Some(cache.path().into()),
                remove_after,
                ..Default::default()
            },
        )
    };
    let w = listing(std::time::Duration::ZERO);
    polled(&w).await;
    assert_eq!(w.policies().functions(), ["orders", "payments"]);

    // The whole folder swapped for an empty one for two polls: nothing is
    // unrouted, and a restart meanwhile still restores both.
    let functions = b.0.path().join("functions");
    let aside = b.0.path().join("functions.aside");
    std::fs::rename(&functions, &aside).unwrap();
    std::fs::create_dir(&functions).unwrap();
    for listings in 1..switchyard_config::UNLIST_LISTINGS {
        let out = polled(&w).await;
        assert_eq!(out["orders"], Outcome::Unlisted { listings }, "{out:?}");
        assert_eq!(w.policies().functions(), ["orders", "payments"]);
    }
    assert_eq!(
        listing(std::time::Duration::ZERO).restore_from_cache(),
        ["orders", "payments"]
    );
    std::fs::remove_dir(&functions).unwrap();
    std::fs::rename(&aside, &functions).unwrap();
    let out = polled(&w).await;
    assert_eq!(out["orders"], Outcome::Unchanged { version: 1 }, "{out:?}");

    // Deleted for good: unrouted at the third listing without it.
    std::fs::remove_dir_all(functions.join("payments")).unwrap();
    for listings in 1..switchyard_config::UNLIST_LISTINGS {
        let out = polled(&w).await;
        assert_eq!(out["payments"], Outcome::Unlisted { listings }, "{out:?}");
    }
    let out = polled(&w).await;
    assert_eq!(out["payments"], Outcome::Removed, "{out:?}");
    assert_eq!(w.policies().functions(), ["orders"]);
    assert_eq!(
        listing(std::time::Duration::ZERO).restore_from_cache(),
        ["orders"]
    );

    // By default the listings must also span a minute: three quick polls
    // unroute nothing.
    let patient = listing(switchyard_config::WatchConfig::default().remove_after);
    patient.restore_from_cache();
    std::fs::remove_dir_all(functions.join("orders")).unwrap();
    for _ in 0..5 {
        polled(&patient).await;
    }
    assert_eq!(patient.policies().functions(), ["orders"]);
}

async fn polled(w: &Watcher) -> std::collections::HashMap<String, Outcome> {
    w.poll().await.unwrap().into_iter().collect()
}

/// A host that starts while a function's newest version is unusable (its
/// blob corrupt, its JSON corrupt) serves the newest usable version in the
/// store's history, as a host that was already running keeps doing; one
/// whose every version is unusable serves nothing and says so.
async fn a_fresh_host_serves_the_newest_usable_version<B: Backend>() {
    let (store, b) = B::fresh().await;
    let fresh = || {
        Watcher::new(
            store.clone(),
            common::engine().clone(),
            WatchConfig::default(),
        )
    };
    let (v1, _) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    let running = fresh();
    running.poll().await.unwrap();
    // v2's blob does not match its digest.
    let (v2, bad) = publish(&*store, "orders", art::STICKY_CANARY, "synthetic").await;
    b.corrupt_blob(&bad).await;
    let out = polled(&running).await;
    assert!(
        matches!(&out["orders"], Outcome::Rejected { version, .. } if *version == v2),
        "{out:?}"
    );

    let host = fresh();
    let out = polled(&host).await;
    assert!(
        matches!(&out["orders"], Outcome::LookedBack { newest, to, .. } if *newest == v2 && *to == v1),
        "{out:?}"
    );
    assert_eq!(host.policies().get("orders").unwrap().stored.version, v1);
    let troubles = host.policies().troubles();
    assert_eq!(troubles["orders"].version, Some(v2));
    assert_eq!(troubles["orders"].serving, Some(v1));
    assert!(host.policies().unloadable().is_empty());
    // Once per bad version: the next poll finds it refused, nothing more.
    let out = polled(&host).await;
    assert!(
        matches!(&out["orders"], Outcome::Rejected { version, .. } if *version == v2),
        "{out:?}"
    );

    // v3's JSON is corrupt: a fresh host looks past it and past v2.
    b.put_raw_route("orders", r#"{"mode":"synth"#).await;
    let host = fresh();
    let out = polled(&host).await;
    assert!(
        matches!(&out["orders"], Outcome::LookedBack { newest, to, .. } if *newest == v2 + 1 && *to == v1),
        "{out:?}"
    );
    assert_eq!(running.policies().get("orders").unwrap().stored.version, v1);
    let out = polled(&host).await;
    assert!(
        matches!(&out["orders"], Outcome::Unreadable { .. }),
        "{out:?}"
    );

    // Nothing usable at all: nothing served, and the host says which and why.
    b.put_raw_route("payments", r#"{"mode":"synth"#).await;
    let host = fresh();
    host.poll().await.unwrap();
    assert!(host.policies().get("payments").is_none());
    let unloadable = host.policies().unloadable();
    assert_eq!(unloadable.keys().collect::<Vec<_>>(), ["payments"]);
    assert!(
        unloadable["payments"].reason.contains("payments"),
        "{unloadable:?}"
    );

    // A good version published later goes live everywhere.
    let (v4, _) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "production").await;
    for w in [&running, &host] {
        let out = polled(w).await;
        assert_eq!(
            out["orders"],
            Outcome::Swapped {
                from: Some(v1),
                to: v4
            }
        );
    }
    assert!(!host.policies().troubles().contains_key("orders"));
}

/// An SSM store whose endpoint refuses connections.
async fn unreachable_ssm() -> SsmStore {
    aws::endpoint();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    SsmStore::new(aws_sdk_ssm::Client::new(&config), "/down").unwrap()
}

/// More functions and versions than SSM returns in one page (10 names per
/// `GetParametersByPath`, 50 versions per `GetParameterHistory`).
async fn listings_span_pages<B: Backend>() {
    let (store, _b) = B::fresh().await;
    let mut want: Vec<String> = (0..23).map(|i| format!("fn-{i:02}")).collect();
    for f in &want {
        store.put_route(f, &config("production")).await.unwrap();
    }
    for _ in 1..55 {
        store
            .put_route("fn-00", &config("synthetic"))
            .await
            .unwrap();
    }
    want.sort();
    assert_eq!(store.functions().await.unwrap(), want);
    let history = store.history("fn-00").await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| r.as_ref().unwrap().version)
            .collect::<Vec<_>>(),
        (1..=55).collect::<Vec<u64>>()
    );
}

/// Conditional writes: a stale precondition is a conflict naming both
/// versions, and writers racing from the same version lose nothing (each
/// retries on a conflict; every one's change is in the end result).
async fn writes_are_compare_and_swap<B: Backend>() {
    let (store, _b) = B::fresh().await;
    assert_eq!(
        store
            .put_route_if("orders", &config("synthetic"), 0, "switchyard test")
            .await
            .unwrap(),
        1
    );
    match store
        .put_route_if("orders", &config("production"), 0, "switchyard test")
        .await
    {
        Err(StoreError::Conflict {
            function,
            expected: 0,
            found: 1,
        }) => assert_eq!(function, "orders"),
        other => panic!("a stale write must conflict: {other:?}"),
    }
    let err = store
        .put_route_if("orders", &config("production"), 0, "switchyard test")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("it was read at version 0, and the store now has version 1"),
        "{err}"
    );
    assert_eq!(
        store
            .put_route_if("orders", &config("production"), 1, "switchyard test")
            .await
            .unwrap(),
        2
    );

    let writers: Vec<_> = (0..5)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let read = store
                        .latest(&["orders".into()])
                        .await
                        .unwrap()
                        .pop()
                        .unwrap();
                    let read = read.unwrap().unwrap();
                    let mut cfg = read.config.clone();
                    cfg.flags.insert(format!("writer-{i}"), "done".into());
                    match store
                        .put_route_if("orders", &cfg, read.version, &format!("writer {i}"))
                        .await
                    {
                        Ok(version) => return version,
                        Err(StoreError::Conflict { .. } | StoreError::Busy { .. }) => continue,
                        Err(e) => panic!("writer {i}: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut versions = Vec::new();
    for w in writers {
        versions.push(w.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, [3, 4, 5, 6, 7], "each write its own version");
    let last = store
        .latest(&["orders".into()])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(last.version, 7);
    for i in 0..5 {
        assert_eq!(
            last.config
                .flags
                .get(&format!("writer-{i}"))
                .map(String::as_str),
            Some("done"),
            "writer {i}'s change was lost: {:?}",
            last.config.flags
        );
    }
    // Each version keeps its writer's note, and who wrote it.
    let history = store.history("orders").await.unwrap();
    let notes: Vec<String> = history
        .iter()
        .map(|r| r.as_ref().unwrap().note.clone().unwrap_or_default())
        .collect();
    assert_eq!(notes[..2], ["switchyard test", "switchyard test"]);
    let mut writers = notes[2..].to_vec();
    writers.sort();
    assert_eq!(
        writers,
        (0..5).map(|i| format!("writer {i}")).collect::<Vec<_>>()
    );
    assert!(
        history.iter().all(|r| r.as_ref().unwrap().by.is_some()),
        "{history:?}"
    );
}

/// A rollout's document is a compare-and-swap: none at first, then each
/// write over the revision read; a stale write conflicts, and of runners
/// racing over one revision exactly one wins.
async fn rollout_documents_are_compare_and_swap<B: Backend>() {
    let (store, _b) = B::fresh().await;
    assert_eq!(store.rollout("orders").await.unwrap(), None);
    assert_eq!(
        store
            .put_rollout_if("orders", r#"{"runner":"a"}"#, 0)
            .await
            .unwrap(),
        1
    );
    match store.put_rollout_if("orders", r#"{"runner":"b"}"#, 0).await {
        Err(StoreError::Conflict {
            expected: 0,
            found: 1,
            ..
        }) => {}
        other => panic!("a stale rollout write must conflict: {other:?}"),
    }
    assert_eq!(
        store.rollout("orders").await.unwrap(),
        Some((r#"{"runner":"a"}"#.to_owned(), 1))
    );
    let mut revision = 1;
    for i in 0..6 {
        revision = store
            .put_rollout_if("orders", &format!(r#"{{"beat":{i}}}"#), revision)
            .await
            .unwrap();
    }
    assert_eq!(
        store.rollout("orders").await.unwrap(),
        Some((r#"{"beat":5}"#.to_owned(), 7))
    );
    // Four runners over the same revision: one takes it.
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    match store
                        .put_rollout_if("orders", &format!(r#"{{"runner":{i}}}"#), 7)
                        .await
                    {
                        Ok(_) => return true,
                        Err(StoreError::Conflict { .. }) => return false,
                        Err(StoreError::Busy { .. }) => continue,
                        Err(e) => panic!("runner {i}: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one runner takes the rollout");
    assert_eq!(store.rollout("orders").await.unwrap().unwrap().1, 8);
    // Another function's rollout is its own.
    assert_eq!(store.rollout("payments").await.unwrap(), None);
    assert!(
        store.rollout("../escape").await.is_err(),
        "names are checked"
    );
}

/// Store-wide settings: unset, set, read back, replaced.
async fn settings_round_trip<B: Backend>() {
    let (store, _b) = B::fresh().await;
    assert_eq!(store.setting("min-host-version").await.unwrap(), None);
    store
        .put_setting("min-host-version", "0.2.0")
        .await
        .unwrap();
    assert_eq!(
        store.setting("min-host-version").await.unwrap().as_deref(),
        Some("0.2.0")
    );
    store
        .put_setting("min-host-version", "0.3.0")
        .await
        .unwrap();
    assert_eq!(
        store.setting("min-host-version").await.unwrap().as_deref(),
        Some("0.3.0")
    );
    assert!(
        store.setting("../escape").await.is_err(),
        "setting names are checked"
    );
}

/// A host that trusts a signing key loads only policies signed by it:
/// unsigned, signed by another key, and a signature moved from another
/// policy are refused (the live version keeps serving); signing later lets
/// a new version in; a restart restores only code whose cached signatures
/// still verify.
async fn only_signed_policies_load_where_keys_are_trusted<B: Backend>() {
    let (store, _b) = B::fresh().await;
    let keys = tempfile::tempdir().unwrap();
    let (ours, ours_pub) = common::ed25519_keys(keys.path(), "ours");
    let (theirs, _) = common::ed25519_keys(keys.path(), "theirs");
    let ours = switchyard_config::PolicySigner::from_pem_file(&ours).unwrap();
    let theirs = switchyard_config::PolicySigner::from_pem_file(&theirs).unwrap();
    let trust = switchyard_config::TrustKeys::from_pem_files(&[&ours_pub]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = |store: Arc<dyn ConfigStore>, trust: &switchyard_config::TrustKeys| {
        Watcher::new(
            store,
            common::engine().clone(),
            WatchConfig {
                functions: vec!["orders".into()],
                cache_dir: Some(cache.path().into()),
                trust: trust.clone(),
                ..Default::default()
            },
        )
    };
    let sign = async |signer: &switchyard_config::PolicySigner, digest: &Digest| {
        let doc = signer.sign(digest).to_json();
        store
            .put_signature(digest, signer.key_id(), &doc)
            .await
            .unwrap();
    };
    let put = async |wasm: &str| {
        let bytes = std::fs::read(wasm).unwrap();
        store.put_blob(&bytes, &no_progress).await.unwrap()
    };
    let route = async |digest: Digest| {
        let mut cfg = config("synthetic");
        cfg.policy = Some(digest);
        store.put_route("orders", &cfg).await.unwrap()
    };
    let w = host(store.clone(), &trust);

    let d1 = put(art::SYNTHETIC_HEADER).await;
    sign(&ours, &d1).await;
    assert_eq!(store.signatures(&d1).await.unwrap().len(), 1);
    let v1 = route(d1).await;
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped { from: None, to: v1 }
    );

    let refused = |out: Vec<(String, Outcome)>, version: u64, says: &str| match &out[0].1 {
        Outcome::Rejected { version: v, reason } if *v == version && reason.contains(says) => {}
        other => panic!("version {version}: expected a refusal saying {says:?}, got {other:?}"),
    };
    // Unsigned.
    let d2 = put(art::STICKY_CANARY).await;
    let v2 = route(d2).await;
    refused(w.poll().await.unwrap(), v2, "is not signed");
    assert_eq!(w.policies().get("orders").unwrap().stored.version, v1);
    // Signed, by a key this host does not trust.
    let d3 = put(art::STICKY_CANARY_0_1_0).await;
    sign(&theirs, &d3).await;
    let v3 = route(d3).await;
    refused(w.poll().await.unwrap(), v3, "does not trust");
    assert_eq!(w.policies().get("orders").unwrap().stored.version, v1);
    // A trusted signature of v1's policy, moved onto another policy.
    let d4 = put(art::SYNTHETIC_HEADER_0_1_0).await;
    let moved = ours.sign(&d1).to_json();
    store
        .put_signature(&d4, ours.key_id(), &moved)
        .await
        .unwrap();
    let v4 = route(d4).await;
    refused(w.poll().await.unwrap(), v4, "does not verify");
    assert_eq!(w.policies().get("orders").unwrap().stored.version, v1);

    // Signed after the fact: the next version naming it goes live.
    sign(&ours, &d2).await;
    let v5 = route(d2).await;
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped {
            from: Some(v1),
            to: v5
        }
    );

    // A restart with the store down restores v5: its cached signature
    // verifies...
    let down: Arc<dyn ConfigStore> = Arc::new(unreachable_ssm().await);
    assert_eq!(host(down.clone(), &trust).restore_from_cache(), ["orders"]);
    // ...and not once the cached signature is gone.
    let sig = cache
        .path()
        .join(format!("compiled/sha256-{}.sig", d2.hex()));
    std::fs::write(&sig, "[]").unwrap();
    assert!(host(down.clone(), &trust).restore_from_cache().is_empty());
    // A host that trusts no key restores it as before.
    let none = switchyard_config::TrustKeys::default();
    assert_eq!(host(down, &none).restore_from_cache(), ["orders"]);
}

/// A policy signed by a trusted key loads however many other signature
/// documents (junk, or by other keys) are stored beside its signature and
/// sort or list before it; the same blob, stored corrupt, is stored again
/// by `replace_blob` (`put_blob` leaves it as it is).
async fn junk_signatures_hide_no_trusted_one<B: Backend>() {
    let (store, b) = B::fresh().await;
    let keys = tempfile::tempdir().unwrap();
    let (ours, ours_pub) = common::ed25519_keys(keys.path(), "ours");
    let (theirs, _) = common::ed25519_keys(keys.path(), "theirs");
    let ours = switchyard_config::PolicySigner::from_pem_file(&ours).unwrap();
    let theirs = switchyard_config::PolicySigner::from_pem_file(&theirs).unwrap();
    let trust = switchyard_config::TrustKeys::from_pem_files(&[&ours_pub]).unwrap();
    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    let digest = store.put_blob(&bytes, &no_progress).await.unwrap();
    // 11 before the real one: "00-junk-.." sorts before any key id (hex),
    // and they are written first.
    for i in 0..11 {
        let doc = match i % 2 {
            0 => theirs.sign(&digest).to_json(),
            _ => "junk".to_owned(),
        };
        store
            .put_signature(&digest, &format!("00-junk-{i:02}"), &doc)
            .await
            .unwrap();
    }
    store
        .put_signature(&digest, ours.key_id(), &ours.sign(&digest).to_json())
        .await
        .unwrap();
    let docs = store.signatures(&digest).await.unwrap();
    assert_eq!(docs.len(), 12);
    assert_eq!(trust.verify(&digest, &docs), Ok(ours.key_id().to_owned()));
    let mut cfg = config("synthetic");
    cfg.policy = Some(digest);
    let v1 = store.put_route("orders", &cfg).await.unwrap();
    let w = Watcher::new(
        store.clone(),
        common::engine().clone(),
        WatchConfig {
            functions: vec!["orders".into()],
            trust,
            ..Default::default()
        },
    );
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped { from: None, to: v1 }
    );

    // A corrupt stored blob: put_blob leaves it, replace_blob repairs it.
    b.corrupt_blob(&digest).await;
    assert!(store.get_blob(&digest).await.is_err());
    store.put_blob(&bytes, &no_progress).await.unwrap();
    assert!(store.get_blob(&digest).await.is_err());
    assert_eq!(
        store.replace_blob(&bytes, &no_progress).await.unwrap(),
        digest
    );
    assert_eq!(store.get_blob(&digest).await.unwrap(), bytes);
}

macro_rules! suite {
    ($module:ident, $backend:ident: $($test:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<super::$backend>().await
                }
            )*
        }
    };
}

suite!(dir, Dir: routes_versions_and_history, blobs_round_trip_and_are_verified, bad_values_are_refused,
       watcher_swaps_and_keeps_last_known_good, failing_fixture_cases_keep_a_version_out,
       cache_serves_when_the_store_is_down, listings_span_pages, one_bad_function_holds_no_one_back,
       writes_are_compare_and_swap, rollout_documents_are_compare_and_swap, settings_round_trip,
       only_signed_policies_load_where_keys_are_trusted, junk_signatures_hide_no_trusted_one, a_fresh_host_serves_the_newest_usable_version);
suite!(ssm, Ssm: routes_versions_and_history, blobs_round_trip_and_are_verified, bad_values_are_refused,
       watcher_swaps_and_keeps_last_known_good, failing_fixture_cases_keep_a_version_out,
       cache_serves_when_the_store_is_down, listings_span_pages, one_bad_function_holds_no_one_back,
       writes_are_compare_and_swap, rollout_documents_are_compare_and_swap, settings_round_trip,
       only_signed_policies_load_where_keys_are_trusted, junk_signatures_hide_no_trusted_one, a_fresh_host_serves_the_newest_usable_version);
suite!(cloudmap, CloudMap: routes_versions_and_history, blobs_round_trip_and_are_verified,
       bad_values_are_refused, watcher_swaps_and_keeps_last_known_good,
       failing_fixture_cases_keep_a_version_out, cache_serves_when_the_store_is_down,
       listings_span_pages, one_bad_function_holds_no_one_back, writes_are_compare_and_swap,
       rollout_documents_are_compare_and_swap, settings_round_trip, only_signed_policies_load_where_keys_are_trusted,
       junk_signatures_hide_no_trusted_one, a_fresh_host_serves_the_newest_usable_version);
suite!(ssm_s3, SsmS3: routes_versions_and_history, blobs_round_trip_and_are_verified,
       bad_values_are_refused, watcher_swaps_and_keeps_last_known_good,
       failing_fixture_cases_keep_a_version_out, cache_serves_when_the_store_is_down,
       junk_signatures_hide_no_trusted_one, a_fresh_host_serves_the_newest_usable_version);

/// Bytes that are not a policy, of a given size, and not compressible.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545f4914f6cdd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_go_to_s3_and_small_ones_stay_in_ssm() {
    let (ssm_only, b) = Ssm::fresh().await;
    // Past the inline limit, an SSM-only store says what to do.
    let big = noise(switchyard_config::MAX_INLINE_BLOB_BYTES + 1);
    let err = ssm_only.put_blob(&big, &no_progress).await.unwrap_err();
    assert!(err.to_string().contains("blobs=s3://"), "{err}");

    // With a bucket and the default threshold: a Rust policy stays in SSM
    // chunks, a blob above 256 KiB goes to S3, and its manifest says where.
    let (s3, bucket) = bucket().await;
    let store = SsmStore::from_env(&format!("{}?blobs=s3://{bucket}/p", b.prefix))
        .await
        .unwrap();
    assert_eq!(
        store.uri(),
        format!("ssm:{}?blobs=s3://{bucket}/p", b.prefix)
    );
    let small = std::fs::read(art::STICKY_CANARY).unwrap();
    let small_digest = store.put_blob(&small, &no_progress).await.unwrap();
    let large = noise(300 << 10);
    let large_digest = store.put_blob(&large, &no_progress).await.unwrap();
    let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [format!("p/sha256-{}", large_digest.hex())]);

    // A reader configured without the bucket follows the manifest.
    let reader = SsmStore::from_env(&b.prefix).await.unwrap();
    assert_eq!(reader.get_blob(&large_digest).await.unwrap(), large);
    assert_eq!(reader.get_blob(&small_digest).await.unwrap(), small);

    // The object gone behind the store's back: a clear not-found.
    s3.delete_object()
        .bucket(&bucket)
        .key(format!("p/sha256-{}", large_digest.hex()))
        .send()
        .await
        .unwrap();
    let err = reader.get_blob(&large_digest).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("s3://"), "{err}");

    // Bad options are named.
    for bad in ["?blobs=bkt", "?blob-threshold=lots", "?colour=blue"] {
        let err = SsmStore::from_env(&format!("{}{bad}", b.prefix))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BadUri(_)), "{bad}: {err}");
    }
}

#[tokio::test]
async fn ssm_blobs_are_chunked_within_the_standard_tier_limit() {
    let (store, b) = Ssm::fresh().await;
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    let digest = store.put_blob(&bytes, &no_progress).await.unwrap();
    let out = b
        .client
        .get_parameters_by_path()
        .path(format!("{}/policies/sha256-{}", b.prefix, digest.hex()))
        .send()
        .await
        .unwrap();
    let values: Vec<&str> = out.parameters().iter().filter_map(|p| p.value()).collect();
    assert!(
        values.len() >= 3,
        "manifest plus several chunks: {}",
        values.len()
    );
    assert!(values.iter().all(|v| v.chars().count() <= 4096));
}

#[tokio::test]
async fn an_unreachable_ssm_store_is_a_clear_error() {
    let err = unreachable_ssm()
        .await
        .latest(&["orders".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("ssm:/down"), "{err}");
}

#[tokio::test]
async fn a_throttling_response_is_reported_as_throttling() {
    aws::endpoint();
    // A loopback server answering every call the way SSM throttles.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten().take(8) {
            let mut buf = [0u8; 65536];
            let _ = conn.read(&mut buf);
            let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-errortype: ThrottlingException\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let store = SsmStore::new(aws_sdk_ssm::Client::new(&config), "/busy").unwrap();
    let err = store.latest(&["orders".into()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Throttled { .. }), "{err}");
    assert!(err.to_string().contains("Rate exceeded"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_dying_mid_run_keeps_the_live_policy() {
    aws::endpoint();
    let (url, pid) = aws::start_moto();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&url)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let store: Arc<dyn ConfigStore> =
        Arc::new(SsmStore::new(aws_sdk_ssm::Client::new(&config), "/dies").unwrap());
    let (v1, _) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    let w = watcher(store, None);
    assert_eq!(
        w.poll().await.unwrap()[0].1,
        Outcome::Swapped { from: None, to: v1 }
    );
    aws::kill_moto(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let err = loop {
        match w.poll().await {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Ok(out) => panic!("the store is dead but polls succeed: {out:?}"),
        }
    };
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    let live = w.policies().get("orders").expect("still serving");
    assert_eq!(live.stored.version, v1);
    let req = common::request(&[("x-switchyard-synthetic", "true")]);
    assert_eq!(
        live.policy
            .evaluator()
            .evaluate(&req, &live.route)
            .unwrap()
            .target,
        "8"
    );
    assert!(
        w.stats
            .store_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

/// The precompiled cache is machine code: made private, and a file that is
/// tampered with (MAC), writable by others, or keyed differently is never
/// loaded; the policy comes from the store again.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_exposed_cache_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    use switchyard_config::CacheKey;
    let rig = CacheRig::new().await;
    let (root, code) = (&rig.root, rig.code());
    let key = CacheKey::new(b"0123456789abcdef-test-key");
    let host = |key: Option<CacheKey>| rig.host(key);
    host(key.clone()).poll().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(root), 0o700);
    assert_eq!(mode(&root.join("compiled")), 0o700);
    assert_eq!(mode(&code), 0o600);
    assert_eq!(mode(&root.join("routes/orders.json")), 0o600);

    // Untouched, with the key: restored (so the refusals below can fail).
    assert_eq!(host(key.clone()).restore_from_cache(), ["orders"]);
    // A cached route edited (still valid JSON): refused with the key.
    let route = root.join("routes/orders.json");
    let original = std::fs::read_to_string(&route).unwrap();
    std::fs::write(&route, original.replace("synthetic", "production")).unwrap();
    assert!(host(key.clone()).restore_from_cache().is_empty());
    std::fs::write(&route, &original).unwrap();
    // Another key, or none written when one is expected: refused.
    assert!(
        host(CacheKey::new(b"another-key-0123456789"))
            .restore_from_cache()
            .is_empty()
    );
    // One flipped byte of machine code: refused.
    let good = std::fs::read(&code).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(&code, &bad).unwrap();
    assert!(host(key.clone()).restore_from_cache().is_empty());
    // The store still serves it: the next poll recompiles.
    let h = host(key.clone());
    assert!(matches!(
        h.poll().await.unwrap()[0].1,
        Outcome::Swapped { .. }
    ));
    assert_ne!(std::fs::read(&code).unwrap(), bad, "rewritten");
    assert_eq!(host(key.clone()).restore_from_cache(), ["orders"]);
    // A file others may write: refused, key or not.
    std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(host(key.clone()).restore_from_cache().is_empty());
    assert!(host(None).restore_from_cache().is_empty());
    std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A cache directory of ours that others may write (an older version's,
    // a loose umask) is made private again; its files are still checked
    // one by one.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(host(key).restore_from_cache(), ["orders"]);
    assert_eq!(mode(root), 0o700);
}

/// A precompiled cache written by another wasmtime (here: this one's file
/// with its engine section claiming an older release, as a host upgraded in
/// place finds its `/tmp`) is refused by wasmtime's compatibility check,
/// never loaded; the store serves the policy again and it is recompiled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_from_another_wasmtime_is_recompiled_not_loaded() {
    let rig = CacheRig::new().await;
    let host = || rig.host(None);
    host().poll().await.unwrap();
    assert_eq!(
        host().restore_from_cache(),
        ["orders"],
        "restores untouched"
    );

    // wasmtime stamps its release into the file's `.wasmtime.engine`
    // section as a length-prefixed string.
    let code = rig.code();
    let good = std::fs::read(&code).unwrap();
    let at = engine_version_at(&good).expect("a wasmtime version string in the cwasm");
    let len = good[at] as usize;
    let release = std::str::from_utf8(&good[at + 1..at + 1 + len]).unwrap();
    // wasmtime writes its major release, e.g. "50"; claim the one before.
    let major: u32 = release.parse().expect("a major release number");
    let older = format!("{:0>len$}", major - 1);
    let mut old = good.clone();
    old[at + 1..at + 1 + len].copy_from_slice(older.as_bytes());
    std::fs::write(&code, &old).unwrap();

    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    let info = switchyard_core::inspect(&bytes, "synthetic-header").unwrap();
    let err = switchyard_core::Policy::from_precompiled_bytes(common::engine(), info, &old)
        .expect_err("wasmtime refuses another release's code");
    assert!(err.to_string().contains("version"), "{err}");
    assert!(host().restore_from_cache().is_empty(), "never loaded");

    // The next poll fetches from the store and recompiles over it.
    assert!(matches!(
        host().poll().await.unwrap()[0].1,
        Outcome::Swapped { .. }
    ));
    assert_eq!(
        std::fs::read(&code).unwrap(),
        good,
        "rewritten by this wasmtime"
    );
    assert_eq!(host().restore_from_cache(), ["orders"]);
}

/// `orders` published to a fresh `dir` store, and a cache directory for
/// the hosts a precompiled-cache test starts over it.
struct CacheRig {
    store: Arc<dyn ConfigStore>,
    _backend: Dir,
    digest: Digest,
    _cache: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl CacheRig {
    async fn new() -> Self {
        let (store, backend) = Dir::fresh().await;
        let (_, digest) = publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
        let cache = tempfile::tempdir().unwrap();
        let root = cache.path().join("cache");
        CacheRig {
            store,
            _backend: backend,
            digest,
            _cache: cache,
            root,
        }
    }

    /// A host of `orders` over the store and the cache.
    fn host(&self, cache_key: Option<switchyard_config::CacheKey>) -> Watcher {
        Watcher::new(
            self.store.clone(),
            common::engine().clone(),
            WatchConfig {
                functions: vec!["orders".into()],
                cache_dir: Some(self.root.clone()),
                cache_key,
                ..Default::default()
            },
        )
    }

    /// The policy's precompiled code in the cache.
    fn code(&self) -> std::path::PathBuf {
        self.root
            .join(format!("compiled/sha256-{}.cwasm", self.digest.hex()))
    }
}

/// Where, in the cwasm's `.wasmtime.engine` section (a format byte, a
/// length byte, then the release of the wasmtime that wrote the file),
/// the length byte is.
fn engine_version_at(code: &[u8]) -> Option<usize> {
    use object::{Object, ObjectSection};
    let elf = object::File::parse(code).ok()?;
    let (start, _) = elf.section_by_name(".wasmtime.engine")?.file_range()?;
    (code.get(start as usize) == Some(&0)).then_some(start as usize + 1)
}

/// Counts the Cloud Map operations a client sends, by name (Cloud Map's
/// JSON protocol names each in its `x-amz-target` header).
#[derive(Debug, Default, Clone)]
struct Calls(Arc<std::sync::Mutex<Vec<String>>>);

impl aws_sdk_servicediscovery::config::Intercept for Calls {
    fn name(&self) -> &'static str {
        "Calls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_servicediscovery::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_servicediscovery::config::RuntimeComponents,
        _: &mut aws_sdk_servicediscovery::config::ConfigBag,
    ) -> Result<(), aws_sdk_servicediscovery::error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("");
        let op = target.rsplit('.').next().unwrap_or(target).to_owned();
        self.0.lock().unwrap().push(op);
        Ok(())
    }
}

impl Calls {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The poll budget on Cloud Map: while nothing changes, one
/// `DiscoverInstancesRevision` per poll for all watched functions; when one
/// function changes, its config alone is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudmap_poll_costs_one_call_when_nothing_changed() {
    let (_, b) = CloudMap::fresh().await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let calls = Calls::default();
    let client = aws_sdk_servicediscovery::Client::from_conf(
        aws_sdk_servicediscovery::config::Builder::from(&config)
            .interceptor(switchyard_config::NoHostPrefix)
            .interceptor(calls.clone())
            .build(),
    );
    let blobs = SsmStore::new(b.ssm.client.clone(), &b.ssm.prefix).unwrap();
    let store: Arc<dyn ConfigStore> =
        Arc::new(switchyard_config::CloudMapStore::new(client, &b.namespace, blobs).unwrap());
    publish(&*store, "orders", art::SYNTHETIC_HEADER, "synthetic").await;
    let (p1, _) = publish(&*store, "payments", art::SYNTHETIC_HEADER, "synthetic").await;
    let w = Watcher::new(
        store.clone(),
        common::engine().clone(),
        WatchConfig {
            functions: vec!["orders".into(), "payments".into()],
            ..Default::default()
        },
    );
    w.poll().await.unwrap();
    calls.take();
    for _ in 0..3 {
        let out = w.poll().await.unwrap();
        assert!(
            out.iter()
                .all(|(_, o)| matches!(o, Outcome::Unchanged { .. })),
            "{out:?}"
        );
    }
    assert_eq!(calls.take(), ["DiscoverInstancesRevision"; 3]);

    let (o2, _) = publish(&*store, "orders", art::STICKY_CANARY, "production").await;
    calls.take();
    let out = w.poll().await.unwrap();
    assert_eq!(
        out,
        [
            (
                "orders".to_owned(),
                Outcome::Swapped {
                    from: Some(o2 - 1),
                    to: o2
                }
            ),
            ("payments".to_owned(), Outcome::Unchanged { version: p1 }),
        ]
    );
    // The revision; the live pointers; orders' new version (its policy
    // blob comes from SSM). Nothing of payments.
    assert_eq!(
        calls.take(),
        [
            "DiscoverInstancesRevision",
            "DiscoverInstances",
            "DiscoverInstances"
        ]
    );
}
