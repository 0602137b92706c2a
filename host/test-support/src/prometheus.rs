//! A real Prometheus server (Debian's `prometheus` package, which `.ci/run`
//! installs) scraping hosts on loopback, and `promtool check metrics`: for
//! tests that check what a host exports the way an operator's Prometheus
//! reads it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::{Killed, curl, eventually, free_port};

/// A running Prometheus (killed, its data removed, when dropped).
pub struct Prometheus {
    _child: Killed,
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: TempDir,
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tool's path, or a panic that says how to install it.
fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: apt-get install prometheus (.ci/run installs it)")
        })
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, whose metrics are
    /// at `/metrics`) every `interval`, as job `switchyard`; returns once it
    /// is ready.
    pub fn scraping(targets: &[String], interval: Duration) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        // Prometheus durations are whole units: `500ms`, not `0.5s`.
        let every = format!("{}ms", interval.as_millis().max(1));
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\nscrape_configs:\n  - job_name: switchyard\n    scrape_interval: {every}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.0.join("prometheus.yml");
        std::fs::File::create(&config_path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = std::process::Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Prometheus {
            _child: Killed(child),
            url,
            _dir: dir,
        };
        let log = prometheus._dir.0.join("prometheus.log");
        eventually(Duration::from_secs(30), "Prometheus ready", || {
            let body = curl(&[&format!("{}/-/ready", prometheus.url)]);
            if body.contains("Ready") {
                Ok(())
            } else {
                Err(format!(
                    "{body}; its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ))
            }
        });
        prometheus
    }

    /// An instant query's `data.result` (a PromQL error is a test failure
    /// naming the query).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let body = curl(&[
            "--get",
            "--data-urlencode",
            &format!("query={expr}"),
            &format!("{}/api/v1/query", self.url),
        ]);
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Prometheus answered {expr:?} with no JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query {expr:?} failed: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that yields one number (the first series'),
    /// `None` when it has no series.
    pub fn value(&self, expr: &str) -> Option<f64> {
        self.query(expr)
            .first()
            .and_then(|s| s["value"][1].as_str().map(str::to_owned))
            .and_then(|v| v.parse().ok())
    }

    /// Scrapes of the busiest target so far (over the last 5 minutes).
    pub fn scrapes(&self) -> usize {
        self.value("max(count_over_time(up{job=\"switchyard\"}[5m]))")
            .unwrap_or(0.0) as usize
    }

    /// Waits until every target has been scraped again, twice, since now
    /// (so a change made before this call is in a sample).
    pub fn wait_for_next_scrapes(&self, targets: usize) {
        let before = self.scrapes();
        self.wait_for_scrapes(targets, before + 2);
    }

    /// Waits until every target has been scraped successfully at least
    /// `scrapes` times since it started (so `rate()` has two samples).
    pub fn wait_for_scrapes(&self, targets: usize, scrapes: usize) {
        eventually(Duration::from_secs(60), "every target scraped", || {
            let seen = self
                .query("count_over_time(up{job=\"switchyard\"}[5m]) and up == 1")
                .iter()
                .filter(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|n| n >= scrapes as f64)
                })
                .count();
            if seen >= targets {
                Ok(())
            } else {
                Err(format!(
                    "{seen} of {targets} targets scraped {scrapes} times"
                ))
            }
        });
    }
}

/// `promtool check metrics` on an exposition text: `Err` with what it
/// found (it lints a family without `# HELP`, a counter not named
/// `_total`, ...).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = std::process::Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
