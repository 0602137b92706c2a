//! The fault matrix: a host serving while its store is down at start (with
//! and without a cache), goes down mid-run, throttles, answers slowly (10 s
//! a call), holds a corrupt blob or an oversized value, or was left
//! half-written by a killed publish. In each, requests keep being answered
//! by the last known good version (0 failed), the failure is counted as
//! what it is, and the host catches up once the store is well.
//!
//! The store is the loopback SSM of `fake_ssm` (moto has no faults); a
//! "request" is a decision on the host's live policy, one a millisecond.

use switchyard_test_support as common;

mod fake_ssm;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake_ssm::{FakeSsm, Fault, Traffic, fake_ssm, host_store};
use switchyard_config::{
    Bootstrap, ConfigStore, DirStore, FirstPoll, Outcome, StoreError, WatchConfig, Watcher,
    bootstrap,
};
use switchyard_core::{Digest, Mode, RouteConfig};
use switchyard_test_artifacts as art;

const INTERVAL: Duration = Duration::from_millis(200);

struct Rig {
    ssm: Arc<FakeSsm>,
    url: String,
    publisher: Arc<dyn ConfigStore>,
    config: RouteConfig,
    cache: tempfile::TempDir,
}

/// A store holding `orders` version 1 (synthetic-header, synthetic mode).
async fn rig() -> Rig {
    let (ssm, url) = fake_ssm(1e9).await;
    let publisher = host_store(&url, "publisher");
    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    let mut config =
        RouteConfig::from_json(r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#)
            .unwrap();
    config.policy = Some(publisher.put_blob(&bytes, &|_, _| {}).await.unwrap());
    publisher.put_route("orders", &config).await.unwrap();
    Rig {
        ssm,
        url,
        publisher,
        config,
        cache: tempfile::tempdir().unwrap(),
    }
}

impl Rig {
    fn host(&self, cache: bool) -> Arc<Watcher> {
        Arc::new(Watcher::new(
            host_store(&self.url, "HOST"),
            common::engine().clone(),
            WatchConfig {
                functions: vec!["orders".into()],
                interval: INTERVAL,
                cache_dir: cache.then(|| self.cache.path().to_owned()),
                ..Default::default()
            },
        ))
    }

    async fn publish(&mut self, mode: Mode) -> u64 {
        self.config.mode = mode;
        self.publisher
            .put_route("orders", &self.config)
            .await
            .unwrap()
    }
}

/// Waits (at most 30 s) until `host` serves `version`.
async fn serves(host: &Watcher, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.policies().get("orders").map(|a| a.stored.version) != Some(version) {
        assert!(
            Instant::now() < deadline,
            "still not serving version {version}: {:?}",
            host.policies().get("orders").map(|a| a.stored.version)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the host's poller has failed `n` more polls than `from`.
async fn failed_polls(host: &Watcher, from: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.stats.store_errors.load(Ordering::Relaxed) < from + n {
        assert!(Instant::now() < deadline, "the poller never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_down_at_start_with_and_without_a_cache() {
    let mut r = rig().await;
    // A host that ran before, leaving its cache.
    r.host(true).poll().await.unwrap();
    r.ssm.set_fault(Fault::Down);

    // With the cache: serves version 1 at once, while the store is down.
    let host = r.host(true);
    let started = bootstrap(
        &host,
        Bootstrap {
            first_poll: FirstPoll::Always,
            timeout: Duration::from_secs(5),
        },
    )
    .await;
    assert_eq!(started.restored, ["orders"]);
    assert!(
        matches!(&started.first_poll, Some(Err(e)) if e.kind() == "unavailable"),
        "{:?}",
        started.first_poll
    );
    let traffic = Traffic::start(vec![host.clone()]);
    failed_polls(&host, host.stats.store_errors.load(Ordering::Relaxed), 2).await;
    // Without one: nothing to serve until the store answers.
    let bare = r.host(false);
    let bare_started = bootstrap(
        &bare,
        Bootstrap {
            first_poll: FirstPoll::Always,
            timeout: Duration::from_secs(5),
        },
    )
    .await;
    assert!(bare_started.restored.is_empty());
    assert!(bare.policies().get("orders").is_none());

    // The store comes back with a new version: both catch up.
    r.ssm.set_fault(Fault::None);
    let v2 = r.publish(Mode::Production).await;
    serves(&host, v2).await;
    serves(&bare, v2).await;
    let (requests, failed) = traffic.counts();
    assert!(requests > 0);
    assert_eq!(failed, 0, "requests failed while the store was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_throttled_or_slow_mid_run_keeps_serving() {
    let mut r = rig().await;
    let host = r.host(false);
    host.poll().await.unwrap();
    host.clone().spawn();
    let traffic = Traffic::start(vec![host.clone()]);

    for (fault, kind) in [(Fault::Down, "unavailable"), (Fault::Throttle, "throttled")] {
        r.ssm.set_fault(fault.clone());
        let before = host.stats.store_errors.load(Ordering::Relaxed);
        failed_polls(&host, before, 2).await;
        // What the poller saw, as the metric labels it.
        let e = host.poll().await.unwrap_err();
        assert_eq!(e.kind(), kind, "{fault:?}: {e}");
        r.ssm.set_fault(Fault::None);
        let v = r.publish(Mode::Synthetic).await;
        serves(&host, v).await;
    }

    // Slow: every read takes 10 s; a version published meanwhile arrives
    // with the slow poll, and requests never wait for it.
    r.ssm.set_fault(Fault::Slow(Duration::from_secs(10)));
    let v = r.publish(Mode::Production).await;
    let t0 = Instant::now();
    serves(&host, v).await;
    assert!(t0.elapsed() >= Duration::from_secs(9), "it was not slow");
    r.ssm.set_fault(Fault::None);

    let (requests, failed) = traffic.counts();
    assert!(requests > 100, "{requests}");
    assert_eq!(failed, 0, "requests failed during a store fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_and_oversized_values_keep_the_last_good() {
    let mut r = rig().await;
    let host = r.host(false);
    let v1 = r.publisher.latest(&["orders".into()]).await.unwrap()[0]
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap()
        .version;
    host.poll().await.unwrap();
    let traffic = Traffic::start(vec![host.clone()]);

    // A new policy whose stored chunk is garbage: refused for good.
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    let digest = r.publisher.put_blob(&bytes, &|_, _| {}).await.unwrap();
    let chunk = format!("/fleet/policies/sha256-{}/0000", digest.hex());
    let good = r.ssm.get_raw(&chunk).unwrap();
    r.ssm
        .put_raw(&chunk, &good.chars().rev().collect::<String>());
    r.config.policy = Some(digest);
    let bad = r.publish(Mode::Synthetic).await;
    let out = host.poll().await.unwrap();
    assert!(
        matches!(&out[0].1, Outcome::Rejected { version, reason } if *version == bad && reason.contains(&digest.to_string())),
        "{out:?}"
    );
    // Remembered, not refetched.
    assert_eq!(host.poll().await.unwrap()[0].1, out[0].1);

    // A route value far over what SSM holds: that function's entry is
    // corrupt, the poll itself fine.
    let huge = format!(
        r#"{{"mode":"production","versions":{{"stable":"7"}},"flags":{{"pad":"{}"}}}}"#,
        "x".repeat(100_000)
    );
    r.ssm.put_raw("/fleet/functions/orders", &huge);
    let out = host.poll().await.unwrap();
    assert!(
        matches!(&out[0].1, Outcome::Unreadable { kind: "corrupt", reason, .. } if reason.contains("characters")),
        "{out:?}"
    );
    assert_eq!(host.policies().get("orders").unwrap().stored.version, v1);
    let (requests, failed) = traffic.counts();
    assert!(requests > 0);
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_killed_halfway_leaves_nothing_visible() {
    // SSM: a publish writes the blob's chunks, then its manifest, then the
    // route; killed after the chunks, hosts see no new version.
    let r = rig().await;
    let host = r.host(false);
    host.poll().await.unwrap();
    let bytes = std::fs::read(art::STICKY_CANARY).unwrap();
    let digest = Digest::of(&bytes);
    r.ssm.put_raw(
        &format!("/fleet/policies/sha256-{}/0000", digest.hex()),
        "half-a-blob",
    );
    assert!(
        !r.publisher.has_blob(&digest).await.unwrap(),
        "no manifest, no blob"
    );
    assert!(matches!(
        host.poll().await.unwrap()[0].1,
        Outcome::Unchanged { .. }
    ));

    // dir: what a writer killed mid-write leaves (a temporary route file,
    // a temporary blob) is never read as a version or a blob.
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(DirStore::new(tmp.path()).unwrap());
    let mut cfg = r.config.clone();
    cfg.policy = Some(
        store
            .put_blob(&std::fs::read(art::SYNTHETIC_HEADER).unwrap(), &|_, _| {})
            .await
            .unwrap(),
    );
    let v1 = store.put_route("orders", &cfg).await.unwrap();
    std::fs::write(
        tmp.path().join("functions/orders/.new.999.0"),
        r#"{"mode":"produc"#,
    )
    .unwrap();
    std::fs::write(
        tmp.path()
            .join(format!("policies/.sha256-{}.tmp999", digest.hex())),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let latest = store.latest(&["orders".into()]).await.unwrap();
    assert_eq!(latest[0].as_ref().unwrap().as_ref().unwrap().version, v1);
    assert_eq!(store.history("orders").await.unwrap().len(), 1);
    assert!(!store.has_blob(&digest).await.unwrap());
    assert!(matches!(
        store.get_blob(&digest).await,
        Err(StoreError::NotFound(_))
    ));
}
