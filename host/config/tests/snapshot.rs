//! The fleet's read path: hosts read one snapshot from an S3-like bucket
//! with a conditional GET instead of polling the store of record
//! (`switchyard_config::snapshot`).
//!
//! The store of record and the bucket are loopback endpoints answering as
//! SSM and S3 do (`fake_ssm`), each with its documented request rate
//! enforced by a token bucket: SSM's 40 `GetParameters` a second, S3's
//! 5,500 GETs a second per prefix. moto has conditional requests but no
//! rates; the last test here runs the S3 half against moto itself.
//!
//! The host model of the fleet runs: each host is a real `Watcher` over
//! its own `Snapshotted` store (its own held snapshot, ETag, audit clock
//! and never-backwards memory), polling on its own task with the real
//! jitter. What the hosts share: one SDK client per service (a real fleet
//! has one per process: its own connections and credential lookups, left
//! out here) and one compiled policy (one `Loader`; compiling it 10,000
//! times would measure the compiler). Calls are counted at the endpoints.
//!
//! Time is stretched for 10,000 hosts, so they fit a debug build on two
//! cores: `FLEET_SCALE` (default 2 there, 1 for the 1,000 hosts of the
//! thousand-function run) multiplies the poll interval and the
//! audit period and divides both endpoints' rates by it, which keeps every
//! ratio (requests asked for against each quota) as at full scale.
//! `FLEET_SCALE=1` runs in real time (BENCHMARKS.md's runs, a release
//! build); `FLEET_HOSTS` changes the fleet's size.

use switchyard_test_support as common;

mod fake_ssm;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake_ssm::{FakeS3, FakeSsm, Traffic, fake_s3, fake_ssm, host_store, s3_client};
use switchyard_config::snapshot::{SnapshotObject, SnapshotOptions, Snapshotted};
use switchyard_config::{ConfigStore, Loader, SnapshotObjectS3, WatchConfig, Watcher};
use switchyard_core::{Mode, RouteConfig};
use switchyard_test_artifacts as art;

const SNAPSHOT: &str = "s3://fleet-bucket/switchyard/fleet.snap";
const SNAPSHOT_PATH: &str = "/fleet-bucket/switchyard/fleet.snap";

/// SSM's default `GetParameters` rate and S3's GET rate per prefix.
const SSM_RATE: f64 = 40.0;
const S3_RATE: f64 = 5500.0;

struct Scene {
    ssm: Arc<FakeSsm>,
    s3: Arc<FakeS3>,
    ssm_url: String,
    object: Arc<dyn SnapshotObject>,
    /// The publisher's store: the store of record with the snapshot.
    publisher: Arc<Snapshotted>,
    config: RouteConfig,
}

async fn scene() -> Scene {
    scaled_scene(1.0).await
}

/// A scene whose endpoints' rates are divided by `k`.
async fn scaled_scene(k: f64) -> Scene {
    let (ssm, ssm_url) = fake_ssm(SSM_RATE / k).await;
    let (s3, s3_url) = fake_s3(S3_RATE / k).await;
    let object: Arc<dyn SnapshotObject> =
        Arc::new(SnapshotObjectS3::new(s3_client(&s3_url), SNAPSHOT).unwrap());
    let publisher = Arc::new(Snapshotted::new(
        host_store(&ssm_url, "publisher"),
        object.clone(),
        SnapshotOptions { audit: None },
    ));
    let bytes = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    let digest = publisher.put_blob(&bytes, &|_, _| {}).await.unwrap();
    let mut config =
        RouteConfig::from_json(r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#)
            .unwrap();
    config.policy = Some(digest);
    Scene {
        ssm,
        s3,
        ssm_url,
        object,
        publisher,
        config,
    }
}

impl Scene {
    /// A host's store: the shared store of record (one client, access key
    /// `HOSTS`) behind the host's own snapshot reader.
    fn host_store(
        &self,
        record: &Arc<dyn ConfigStore>,
        audit: Option<Duration>,
    ) -> Arc<Snapshotted> {
        Arc::new(Snapshotted::new(
            record.clone(),
            self.object.clone(),
            SnapshotOptions { audit },
        ))
    }

    fn record_for_hosts(&self) -> Arc<dyn ConfigStore> {
        host_store(&self.ssm_url, "HOSTS")
    }

    async fn loader(&self) -> Arc<Loader> {
        let loader = Arc::new(Loader::new(
            self.publisher.inner().clone(),
            common::engine().clone(),
            None,
            4,
        ));
        loader.policy(&self.config.policy.unwrap()).await.unwrap();
        loader
    }

    /// The hosts' reads of route configs from the store of record (blob
    /// reads, once per digest, are not counted).
    fn host_calls(&self) -> u64 {
        self.ssm
            .route_calls
            .lock()
            .unwrap()
            .get("HOSTS")
            .copied()
            .unwrap_or(0)
    }

    /// The snapshot's body as JSON.
    fn snapshot_body(&self) -> serde_json::Value {
        let bytes = self.s3.get_raw(SNAPSHOT_PATH).expect("a snapshot");
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        serde_json::from_slice(&bytes[nl + 1..]).unwrap()
    }
}

struct Fleet {
    hosts: usize,
    functions: usize,
    interval: Duration,
    /// After the change and after the rollback: until every host of the
    /// function serves it, and until every host holds the new snapshot.
    converged: [Option<Duration>; 2],
    all_hosts_read: [Option<Duration>; 2],
    /// Snapshot GETs and store calls per host poll, from the settling on.
    calls_per_poll: f64,
    store_calls_per_poll: f64,
    not_modified_share: f64,
    /// The same while nothing changed.
    quiet_not_modified_share: f64,
    scale: f64,
    throttled: u64,
    slowed_down: u64,
    failed_requests: u64,
    requests: u64,
    snapshot_bytes: usize,
}

/// `hosts` hosts, host `i` serving function `i % functions`, each polling
/// the snapshot every `interval`: loads, idles while a quarter of it polls again, then writes a change of
/// function 0 (synthetic to production) and a rollback of it under load,
/// measuring each until every host serves it.
async fn fleet(hosts: usize, functions: usize, interval: Duration, k: f64) -> Fleet {
    static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _fleet = ONE_FLEET.lock().await;
    let interval = interval.mul_f64(k);
    let s = scaled_scene(k).await;
    let names: Vec<String> = (0..functions).map(|i| format!("fn-{i:04}")).collect();
    // The setup (the store filled, the snapshot rebuilt once, the policy
    // compiled) is not the fleet's: no quota for it.
    s.ssm.unlimited.store(true, Ordering::Relaxed);
    let record = s.publisher.inner().clone();
    for name in &names {
        record.put_route(name, &s.config).await.unwrap();
    }
    s.publisher.publish().await.unwrap();
    let loader = s.loader().await;
    s.ssm.unlimited.store(false, Ordering::Relaxed);
    let shared_record = s.record_for_hosts();
    let stores: Vec<Arc<Snapshotted>> = (0..hosts)
        .map(|_| {
            s.host_store(
                &shared_record,
                Some(switchyard_config::snapshot::DEFAULT_AUDIT.mul_f64(k)),
            )
        })
        .collect();
    let watchers: Vec<(Arc<Watcher>, String)> = (0..hosts)
        .map(|i| {
            let function = names[i % functions].clone();
            let w = Watcher::with_loader(
                stores[i].clone(),
                loader.clone(),
                WatchConfig {
                    functions: vec![function.clone()],
                    interval,
                    ..Default::default()
                },
            );
            (Arc::new(w), function)
        })
        .collect();
    // Execution environments start at different times (over half an
    // interval: their polls' jitter spreads them further).
    for (i, (w, _)) in watchers.iter().enumerate() {
        let w = w.clone();
        let offset = interval.mul_f64(0.5 * i as f64 / hosts as f64);
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let _ = w.spawn().await;
        });
    }
    let version = |w: &Watcher, f: &str| w.policies().get(f).map(|a| a.stored.version);
    let start = Instant::now();
    while watchers.iter().any(|(w, f)| version(w, f).is_none()) {
        assert!(
            start.elapsed() < interval * 4,
            "the fleet never loaded its first version"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing changing while a quarter of the fleet polls again:
    // conditional reads only.
    s.s3.reset_counts();
    let quiet = Instant::now();
    while s.s3.gets.load(Ordering::Relaxed) + s.s3.not_modified.load(Ordering::Relaxed)
        < hosts as u64 / 4
    {
        assert!(quiet.elapsed() < interval * 2, "the fleet stopped polling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiet_gets = s.s3.gets.load(Ordering::Relaxed);
    let quiet_304 = s.s3.not_modified.load(Ordering::Relaxed);
    let quiet_not_modified_share = quiet_304 as f64 / (quiet_gets + quiet_304).max(1) as f64;

    let traffic = Traffic::start_for(watchers.clone());
    let polls_before: u64 = watchers
        .iter()
        .map(|(w, _)| w.stats.polls.load(Ordering::Relaxed))
        .sum();
    let host_calls_before = s.host_calls();
    let throttled_before = s.ssm.throttled.load(Ordering::Relaxed);
    s.s3.reset_counts();
    let mut converged = [None; 2];
    let mut all_hosts_read = [None; 2];
    let mut snapshot_bytes = 0;
    let mut config = s.config.clone();
    for (round, mode) in [Mode::Production, Mode::Synthetic].into_iter().enumerate() {
        config.mode = mode;
        let t0 = Instant::now();
        let written = s.publisher.put_route(&names[0], &config).await.unwrap();
        snapshot_bytes = s.s3.get_raw(SNAPSHOT_PATH).unwrap().len();
        let generation = s.snapshot_body()["generation"].as_u64().unwrap();
        let function_hosts: Vec<&Arc<Watcher>> = watchers
            .iter()
            .filter(|(_, f)| *f == names[0])
            .map(|(w, _)| w)
            .collect();
        while t0.elapsed() < interval * 4 {
            if converged[round].is_none()
                && function_hosts
                    .iter()
                    .all(|w| version(w, &names[0]) == Some(written))
            {
                converged[round] = Some(t0.elapsed());
            }
            if all_hosts_read[round].is_none()
                && stores.iter().all(|h| h.generation_now() >= generation)
            {
                all_hosts_read[round] = Some(t0.elapsed());
            }
            if converged[round].is_some() && all_hosts_read[round].is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (requests, failed_requests) = traffic.counts();
    drop(traffic);
    let polls: u64 = watchers
        .iter()
        .map(|(w, _)| w.stats.polls.load(Ordering::Relaxed))
        .sum::<u64>()
        - polls_before;
    let gets = s.s3.gets.load(Ordering::Relaxed);
    let not_modified = s.s3.not_modified.load(Ordering::Relaxed);
    let slowed_down = s.s3.slowed_down.load(Ordering::Relaxed);
    let store_calls = s.host_calls() - host_calls_before;
    Fleet {
        hosts,
        functions,
        interval,
        converged,
        all_hosts_read,
        calls_per_poll: (gets + not_modified + slowed_down + store_calls) as f64
            / polls.max(1) as f64,
        store_calls_per_poll: store_calls as f64 / polls.max(1) as f64,
        not_modified_share: not_modified as f64 / (gets + not_modified).max(1) as f64,
        quiet_not_modified_share,
        scale: k,
        throttled: s.ssm.throttled.load(Ordering::Relaxed) - throttled_before,
        slowed_down,
        failed_requests,
        requests,
        snapshot_bytes,
    }
}

fn report(label: &str, f: &Fleet) {
    let d = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{d:.2?}"));
    eprintln!(
        "fleet {label}: {} hosts, {} functions, poll {:?} (time scale {}): the change served by every host of its function after {}, read by every host after {}; the rollback after {} and {}; {:.3} calls per host per poll ({:.4} to the store of record), {:.1} % of snapshot GETs a 304 ({:.2} % while nothing changed); snapshot {} bytes; {} throttled store calls, {} S3 SlowDowns; {} of {} requests failed",
        f.hosts,
        f.functions,
        f.interval,
        f.scale,
        d(f.converged[0]),
        d(f.all_hosts_read[0]),
        d(f.converged[1]),
        d(f.all_hosts_read[1]),
        f.calls_per_poll,
        f.store_calls_per_poll,
        100.0 * f.not_modified_share,
        100.0 * f.quiet_not_modified_share,
        f.snapshot_bytes,
        f.throttled,
        f.slowed_down,
        f.failed_requests,
        f.requests,
    );
}

/// The time scale: `default`, or `FLEET_SCALE` (1: real time).
fn scale(default: f64) -> f64 {
    std::env::var("FLEET_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn hosts(default: usize) -> usize {
    std::env::var("FLEET_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn check(f: &Fleet) {
    // One poll interval, its +10 % jitter, the write and the swap.
    let bound = f.interval.mul_f64(1.1) + Duration::from_millis(500).mul_f64(f.scale);
    for round in 0..2 {
        let converged = f.converged[round].expect("every host serves the new version");
        assert!(converged <= bound, "round {round}: {converged:?}");
        let read = f.all_hosts_read[round].expect("every host reads the new snapshot");
        assert!(read <= bound, "round {round}: {read:?}");
    }
    assert_eq!(f.throttled, 0, "throttled store calls");
    assert_eq!(f.slowed_down, 0, "S3 SlowDowns");
    assert_eq!(f.failed_requests, 0);
    assert!(f.requests > 0);
    // One cheap conditional read a poll; audits of the store every 15
    // minutes on average add about 1 in 90 polls.
    assert!(f.calls_per_poll <= 1.02, "{}", f.calls_per_poll);
    // While nothing changes, a poll is a 304 without a body.
    assert!(
        f.quiet_not_modified_share > 0.999,
        "{}",
        f.quiet_not_modified_share
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hosts_read_one_snapshot_and_converge_within_one_poll() {
    let f = fleet(hosts(10_000), 1, Duration::from_secs(10), scale(2.0)).await;
    report("one function", &f);
    check(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_functions_in_one_snapshot_converge_within_one_poll() {
    // A thousand hosts ask for 100 GETs a second: real time fits.
    let f = fleet(hosts(1_000), 1_000, Duration::from_secs(10), scale(1.0)).await;
    report("a thousand functions", &f);
    check(&f);
}

/// One host watching `orders` over the scene's store, polled by hand.
fn one_host(s: &Scene, audit: Option<Duration>) -> (Arc<Snapshotted>, Watcher) {
    let store = s.host_store(&s.record_for_hosts(), audit);
    let w = Watcher::new(
        store.clone(),
        common::engine().clone(),
        WatchConfig {
            functions: vec!["orders".into()],
            ..Default::default()
        },
    );
    (store, w)
}

fn serving(w: &Watcher) -> Option<u64> {
    w.policies().get("orders").map(|a| a.stored.version)
}

/// `bytes` (a snapshot) with its body changed by `edit` and a header that
/// matches again: what a writer with the bucket's keys could make.
fn reheader(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&bytes[nl + 1..]).unwrap();
    edit(&mut body);
    let body = serde_json::to_vec(&body).unwrap();
    let mut out = format!(
        "switchyard-snapshot/1 {} {}\n",
        switchyard_core::Digest::of(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_truncated_snapshot_is_refused_and_the_one_held_keeps_serving() {
    let s = scene().await;
    let v1 = s.publisher.put_route("orders", &s.config).await.unwrap();
    let (store, w) = one_host(&s, None);
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v1));
    w.poll().await.unwrap();
    assert_eq!(
        s.s3.not_modified.load(Ordering::Relaxed),
        1,
        "an unchanged snapshot is a 304"
    );
    assert_eq!(s.host_calls(), 0, "the store of record was not read");

    let mut config = s.config.clone();
    config.mode = Mode::Production;
    let v2 = s.publisher.put_route("orders", &config).await.unwrap();
    let honest = s.s3.get_raw(SNAPSHOT_PATH).unwrap();
    let text = String::from_utf8(honest.clone()).unwrap();
    assert!(text.contains(r#""stable":"7""#), "{text}");
    let tampered = text
        .replacen(r#""stable":"7""#, r#""stable":"6""#, 1)
        .into_bytes();
    assert_eq!(tampered.len(), honest.len());
    for (bad, why) in [
        (tampered, "tampered"),
        (honest[..honest.len() - 10].to_vec(), "truncated"),
        (b"<html>502 Bad Gateway</html>".to_vec(), "header"),
    ] {
        s.s3.put_raw(SNAPSHOT_PATH, bad);
        w.poll().await.unwrap();
        assert_eq!(
            serving(&w),
            Some(v1),
            "{why}: the held snapshot keeps serving"
        );
        let refusal = store.last_refusal().unwrap();
        assert!(refusal.contains(why), "{why}: {refusal}");
    }
    assert_eq!(
        s.host_calls(),
        0,
        "a refused snapshot with one held is not a store read"
    );
    s.s3.put_raw(SNAPSHOT_PATH, honest);
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_of_the_snapshot_never_takes_a_host_back() {
    let s = scene().await;
    s.publisher.put_route("orders", &s.config).await.unwrap();
    let first = s.s3.get_raw(SNAPSHOT_PATH).unwrap();
    let mut config = s.config.clone();
    config.mode = Mode::Production;
    let v2 = s.publisher.put_route("orders", &config).await.unwrap();
    let (store, w) = one_host(&s, None);
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v2));
    let held = store.generation().await.unwrap();

    // A cache or CDN serving the older object: refused whole.
    s.s3.put_raw(SNAPSHOT_PATH, first.clone());
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v2));
    assert!(
        store.last_refusal().unwrap().contains("older"),
        "{:?}",
        store.last_refusal()
    );
    assert_eq!(store.generation().await, Some(held));

    // A newer generation naming an older version of the function: the
    // snapshot is taken, the function stays where it is.
    s.s3.put_raw(
        SNAPSHOT_PATH,
        reheader(&first, |b| b["generation"] = (held + 1).into()),
    );
    w.poll().await.unwrap();
    assert_eq!(store.generation().await, Some(held + 1));
    assert_eq!(serving(&w), Some(v2), "moved back to an older version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_snapshot_hosts_read_the_store_of_record() {
    let s = scene().await;
    // Written straight to the store: there is no snapshot yet.
    let record = s.publisher.inner().clone();
    let v1 = record.put_route("orders", &s.config).await.unwrap();
    let (store, w) = one_host(&s, None);
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v1));
    assert_eq!((store.snapshot_reads(), store.store_reads()), (1, 1));
    assert_eq!(s.host_calls(), 1);

    // Another store's snapshot (a bucket shared by two stores by mistake):
    // refused, and the store of record is read again.
    s.publisher.publish().await.unwrap();
    let ours = s.s3.get_raw(SNAPSHOT_PATH).unwrap();
    s.s3.put_raw(
        SNAPSHOT_PATH,
        reheader(&ours, |b| b["store"] = "ssm:/staging".into()),
    );
    let mut config = s.config.clone();
    config.mode = Mode::Production;
    let v2 = record.put_route("orders", &config).await.unwrap();
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v2));
    let refusal = store.last_refusal().unwrap();
    assert!(
        refusal.contains("ssm:/staging") && refusal.contains("ssm:/fleet"),
        "{refusal}"
    );
    assert_eq!(s.host_calls(), 2);

    // Once a good snapshot is there, the store is left alone.
    s.publisher.publish().await.unwrap();
    w.poll().await.unwrap();
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v2));
    assert_eq!(s.host_calls(), 2);

    // The object gone (a bucket emptied): the snapshot held keeps serving,
    // and the store is not read (a fleet falling back at once would
    // throttle it); a host that never held one reads the store.
    s.s3.remove_raw(SNAPSHOT_PATH);
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v2));
    assert_eq!(s.host_calls(), 2);
    let (_, fresh) = one_host(&s, None);
    fresh.poll().await.unwrap();
    assert_eq!(serving(&fresh), Some(v2));
    assert_eq!(s.host_calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_dies_between_its_writes_leaves_hosts_converging_and_the_next_write_repairs_the_snapshot()
 {
    let s = scene().await;
    let v1 = s.publisher.put_route("orders", &s.config).await.unwrap();
    s.publisher.put_route("billing", &s.config).await.unwrap();
    // Audits every 200 ms (jittered), so the test runs in a second.
    let (_, w) = one_host(&s, Some(Duration::from_millis(200)));
    w.poll().await.unwrap();
    assert_eq!(serving(&w), Some(v1));

    // The writer wrote the store and died before the snapshot.
    let mut config = s.config.clone();
    config.mode = Mode::Production;
    let v2 = s
        .publisher
        .inner()
        .put_route("orders", &config)
        .await
        .unwrap();
    assert_eq!(s.snapshot_body()["functions"]["orders"]["version"], v1);
    let t0 = Instant::now();
    while serving(&w) != Some(v2) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the host never audited the store"
        );
        w.poll().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It stays there though the snapshot still says v1.
    for _ in 0..3 {
        w.poll().await.unwrap();
        assert_eq!(serving(&w), Some(v2));
    }

    // The next write, of another function, rebuilds the snapshot from the
    // store: orders is repaired, and a new host reads it from there.
    s.publisher.put_route("billing", &config).await.unwrap();
    assert_eq!(s.snapshot_body()["functions"]["orders"]["version"], v2);
    let calls = s.host_calls();
    let (_, fresh) = one_host(&s, None);
    fresh.poll().await.unwrap();
    assert_eq!(serving(&fresh), Some(v2));
    assert_eq!(s.host_calls(), calls, "the new host read the snapshot only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_change_in_the_snapshot() {
    let s = scene().await;
    // More than REBUILD_UP_TO: the later writes replace their own entry in
    // the snapshot another writer may be replacing too.
    let functions: Vec<String> = (0..16).map(|i| format!("fn-{i:02}")).collect();
    let writes = functions.iter().map(|f| {
        let publisher = s.publisher.clone();
        let config = s.config.clone();
        let f = f.clone();
        tokio::spawn(async move { publisher.put_route(&f, &config).await.unwrap() })
    });
    for w in writes {
        w.await.unwrap();
    }
    let body = s.snapshot_body();
    for f in &functions {
        assert_eq!(body["functions"][f]["version"], 1, "{f} missing: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_on_the_emulators_s3_is_read_and_written_conditionally() {
    use switchyard_config::snapshot::{Expected, Fetched};
    common::aws::endpoint();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let s3 = switchyard_config::s3_client(&config);
    let bucket = format!("sy-snap-{}", std::process::id());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let url = format!("s3://{bucket}/switchyard/fleet.snap");
    let object = SnapshotObjectS3::new(s3.clone(), &url).unwrap();
    assert_eq!(object.get(None).await.unwrap(), Fetched::Missing);
    assert!(object.put(b"one".to_vec(), Expected::Absent).await.unwrap());
    assert!(
        !object.put(b"two".to_vec(), Expected::Absent).await.unwrap(),
        "If-None-Match: * over an existing object"
    );
    let Fetched::Body { bytes, etag } = object.get(None).await.unwrap() else {
        panic!("no body")
    };
    assert_eq!(bytes, b"one");
    let etag = etag.expect("an ETag");
    assert_eq!(object.get(Some(&etag)).await.unwrap(), Fetched::Unchanged);
    assert!(
        !object
            .put(b"two".to_vec(), Expected::Etag("\"not-it\"".into()))
            .await
            .unwrap(),
        "If-Match with another ETag"
    );
    assert!(
        object
            .put(b"two".to_vec(), Expected::Etag(etag.clone()))
            .await
            .unwrap()
    );
    assert!(
        matches!(object.get(Some(&etag)).await.unwrap(), Fetched::Body { bytes, .. } if bytes == b"two")
    );

    // Opened by URI, as hosts and the CLI do: a route write publishes it.
    let prefix = format!("/sy-snap-{}", std::process::id());
    let store = switchyard_config::open(&format!(
        "ssm:{prefix}?snapshot=s3://{bucket}/switchyard/by-uri.snap"
    ))
    .await
    .unwrap();
    assert!(
        store
            .uri()
            .ends_with(&format!("snapshot=s3://{bucket}/switchyard/by-uri.snap")),
        "{}",
        store.uri()
    );
    let mut route =
        RouteConfig::from_json(r#"{"mode":"production","versions":{"stable":"1"}}"#).unwrap();
    let wasm = std::fs::read(art::SYNTHETIC_HEADER).unwrap();
    route.policy = Some(store.put_blob(&wasm, &|_, _| {}).await.unwrap());
    let v = store.put_route("orders", &route).await.unwrap();
    let out = s3
        .get_object()
        .bucket(&bucket)
        .key("switchyard/by-uri.snap")
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(out.body.collect().await.unwrap().to_vec()).unwrap();
    assert!(text.starts_with("switchyard-snapshot/1 sha256:"), "{text}");
    assert!(
        text.contains(&format!(r#""store":"ssm:{prefix}""#)),
        "{text}"
    );
    let latest = store.latest(&["orders".into()]).await.unwrap();
    assert_eq!(latest[0].as_ref().unwrap().as_ref().unwrap().version, v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_routing_every_function_finds_one_the_snapshot_lacks_at_its_audit() {
    let s = scene().await;
    s.publisher.put_route("orders", &s.config).await.unwrap();
    let store = s.host_store(&s.record_for_hosts(), Some(Duration::from_millis(200)));
    // No functions named: the host lists the store (here, the snapshot).
    let w = Watcher::new(store, common::engine().clone(), WatchConfig::default());
    w.poll().await.unwrap();
    assert_eq!(w.policies().functions(), ["orders"]);
    // A new function whose writer died before the snapshot.
    let billing = s
        .publisher
        .inner()
        .put_route("billing", &s.config)
        .await
        .unwrap();
    assert!(s.snapshot_body()["functions"].get("billing").is_none());
    let t0 = Instant::now();
    while w.policies().get("billing").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "never found at an audit"
        );
        w.poll().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.policies().get("billing").unwrap().stored.version, billing);
    // Later listings (from the snapshot, which still lacks it) keep it.
    for _ in 0..5 {
        let outcomes = w.poll().await.unwrap();
        assert!(
            !outcomes
                .iter()
                .any(|(f, o)| f == "billing"
                    && matches!(o, switchyard_config::Outcome::Unlisted { .. })),
            "{outcomes:?}"
        );
    }
    assert_eq!(w.policies().functions(), ["billing", "orders"]);
}
