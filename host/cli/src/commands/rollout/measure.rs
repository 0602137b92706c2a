//! The fleet's metrics, where the fleet reports them: a Prometheus server
//! that scrapes the hosts (`--prometheus`), or the admin `/metrics` of a
//! list of hosts, summed (`--hosts`, for small fleets). Synthetic and
//! production are always separate series.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};

/// Where a rollout reads the fleet's metrics (kept in its state, so a
/// runner that resumes it elsewhere reads the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SourceSpec {
    /// A Prometheus HTTP API, e.g. `http://prometheus:9090`.
    Prometheus(String),
    /// Admin listeners, e.g. `http://10.0.0.5:9901`.
    Hosts(Vec<String>),
    /// A CloudWatch namespace the hosts' EMF lines become metrics in
    /// (`Requests`, `Errors`, `Latency` by `Function`, `Target`, `Traffic`).
    Cloudwatch(String),
}

impl SourceSpec {
    pub(crate) fn describe(&self) -> String {
        match self {
            SourceSpec::Prometheus(url) => format!("Prometheus at {url}"),
            SourceSpec::Hosts(hosts) => format!("the /metrics of {}", hosts.join(", ")),
            SourceSpec::Cloudwatch(ns) => format!("CloudWatch namespace {ns}"),
        }
    }
}

/// What a step is judged on: one function's candidate, in one traffic
/// class.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub(crate) function: String,
    pub(crate) candidate: String,
    pub(crate) stable: String,
    /// `production` or `synthetic`.
    pub(crate) traffic: &'static str,
}

/// The fleet's counts since a step began. `None`: no data (a query that
/// failed or found no series, a host that did not answer).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Measured {
    /// Answers of the candidate in the subject's traffic class.
    pub(crate) requests: Option<f64>,
    /// Of them, with a 5xx status.
    pub(crate) errors: Option<f64>,
    /// Their duration's p99, in seconds.
    pub(crate) p99: Option<f64>,
    /// Mirrored answers compared, and differences found (by kind, so an
    /// answer that differs in status and body counts twice: the rate errs
    /// on the side of failing).
    pub(crate) compared: Option<f64>,
    pub(crate) diffs: Option<f64>,
    /// Guard trips of the function, any traffic class.
    pub(crate) guard_trips: Option<f64>,
    /// Why some value is missing.
    pub(crate) problems: Vec<String>,
}

/// A source, ready to measure.
pub(crate) enum Source {
    Prometheus(Prometheus),
    Hosts(Hosts),
    Cloudwatch(Cloudwatch),
}

impl Source {
    pub(crate) async fn new(spec: &SourceSpec, token: Option<String>) -> Result<Source> {
        Ok(match spec {
            SourceSpec::Cloudwatch(namespace) => {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                Source::Cloudwatch(Cloudwatch {
                    client: aws_sdk_cloudwatch::Client::new(&config),
                    namespace: namespace.clone(),
                })
            }
            SourceSpec::Prometheus(url) => Source::Prometheus(Prometheus {
                url: url.trim_end_matches('/').to_owned(),
                http: Http::new(),
            }),
            SourceSpec::Hosts(urls) => Source::Hosts(Hosts {
                urls: urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect(),
                token,
                baseline: None,
                http: Http::new(),
            }),
        })
    }

    /// Starts a step's window (the hosts' counters now are its zero).
    pub(crate) async fn begin(&mut self) {
        if let Source::Hosts(h) = self {
            h.baseline = match h.scrape().await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("rollout: {e:#}; the step's window starts at the next answer");
                    None
                }
            };
        }
    }

    /// The counts since the step began, `window` ago.
    pub(crate) async fn measure(&mut self, subject: &Subject, window: Duration) -> Measured {
        match self {
            Source::Prometheus(p) => p.measure(subject, window).await,
            Source::Hosts(h) => h.measure(subject).await,
            Source::Cloudwatch(c) => c.measure(subject, window).await,
        }
    }

    /// A query gate's value (`None`: no data, with why).
    pub(crate) async fn query(
        &self,
        query: &str,
        subject: &Subject,
        window: Duration,
    ) -> (Option<f64>, Option<String>) {
        match self {
            Source::Prometheus(p) => {
                let q = query
                    .replace("$function", &subject.function)
                    .replace("$candidate", &subject.candidate)
                    .replace("$stable", &subject.stable)
                    .replace("$window", &range(window));
                match p.instant(&q).await {
                    Ok(Some(v)) => (Some(v), None),
                    Ok(None) => (None, Some(format!("{q} returned no series"))),
                    Err(e) => (None, Some(format!("{q}: {e:#}"))),
                }
            }
            Source::Hosts(_) | Source::Cloudwatch(_) => {
                (None, Some("query gates need --prometheus".to_owned()))
            }
        }
    }
}

/// A Prometheus range selector for a window: whole seconds, rounded down,
/// so it never reaches back before the step began (a previous step's, or
/// a previous rollout's, failures are not this step's).
fn range(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

/// A small HTTP client (plain HTTP: Prometheus and admin listeners on a
/// private network).
struct Http {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl Http {
    fn new() -> Http {
        Http {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        }
    }

    async fn call(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Result<(http::StatusCode, bytes::Bytes)> {
        let uri = req.uri().to_string();
        let res = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .with_context(|| format!("{uri} did not answer within 10s"))?
            .with_context(|| format!("cannot reach {uri}"))?;
        let status = res.status();
        let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
            .await
            .with_context(|| format!("{uri} did not finish its answer within 10s"))??
            .to_bytes();
        Ok((status, body))
    }
}

/// A Prometheus HTTP API.
pub(crate) struct Prometheus {
    url: String,
    http: Http,
}

impl Prometheus {
    /// An instant query's single value; `None` when it has no series (or
    /// its value is not a number, as a quantile of nothing).
    async fn instant(&self, query: &str) -> Result<Option<f64>> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        let req = http::Request::post(format!("{}/api/v1/query", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .with_context(|| format!("--prometheus {:?} is not a URL", self.url))?;
        let (status, body) = self.http.call(req).await?;
        let json: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "{} answered {status} with no Prometheus API JSON: {}",
                self.url,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })?;
        if json["status"] != "success" {
            bail!(
                "Prometheus refused it ({status}): {}",
                json["error"].as_str().unwrap_or("no error given")
            );
        }
        let data = &json["data"];
        let value = match data["resultType"].as_str() {
            Some("scalar") => &data["result"][1],
            Some("vector") => {
                let result = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                match result {
                    [] => return Ok(None),
                    [one] => &one["value"][1],
                    many => bail!(
                        "it returned {} series; a gate's query must return one (wrap it in sum(...))",
                        many.len()
                    ),
                }
            }
            other => bail!("it returned a {other:?}; a gate's query must return one number"),
        };
        let v: f64 = value
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("its value is not a number")?;
        Ok(v.is_finite().then_some(v))
    }

    /// A counter's growth (no series: it has counted nothing).
    async fn count(&self, q: String, problems: &mut Vec<String>) -> Option<f64> {
        match self.instant(&q).await {
            Ok(v) => Some(v.unwrap_or(0.0)),
            Err(e) => {
                problems.push(format!("{q}: {e:#}"));
                None
            }
        }
    }

    async fn measure(&self, s: &Subject, window: Duration) -> Measured {
        if window < Duration::from_secs(1) {
            return Measured {
                problems: vec!["the step is younger than a second".into()],
                ..Measured::default()
            };
        }
        let w = range(window);
        let (f, t, c) = (&s.function, &s.candidate, s.traffic);
        let sel = format!(r#"function="{f}",target="{t}",traffic="{c}""#);
        let mut m = Measured::default();
        let p = &mut m.problems;
        m.requests = self
            .count(
                format!("sum(increase(switchyard_requests_total{{{sel}}}[{w}]))"),
                p,
            )
            .await;
        m.errors = self
            .count(
                format!(r#"sum(increase(switchyard_requests_total{{{sel},status=~"5.."}}[{w}]))"#),
                p,
            )
            .await;
        let q = format!(
            "histogram_quantile(0.99, sum by (le) (increase(switchyard_request_duration_seconds_bucket{{{sel}}}[{w}])))"
        );
        m.p99 = match self.instant(&q).await {
            Ok(v) => v,
            Err(e) => {
                p.push(format!("{q}: {e:#}"));
                None
            }
        };
        let fsel = format!(r#"function="{f}""#);
        m.compared = self
            .count(
                format!("sum(increase(switchyard_shadow_compared_total{{{fsel}}}[{w}]))"),
                p,
            )
            .await;
        m.diffs = self
            .count(
                format!("sum(increase(switchyard_shadow_diff_total{{{fsel}}}[{w}]))"),
                p,
            )
            .await;
        m.guard_trips = self
            .count(
                format!("sum(increase(switchyard_guard_trips_total{{{fsel}}}[{w}]))"),
                p,
            )
            .await;
        m
    }
}

/// CloudWatch metrics from the hosts' EMF lines, read with
/// `GetMetricData` over the step's age (one period covering it).
pub(crate) struct Cloudwatch {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

impl Cloudwatch {
    async fn measure(&self, s: &Subject, window: Duration) -> Measured {
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
        let mut m = Measured::default();
        let now = std::time::SystemTime::now();
        // One period over the whole window: a minute's multiple (standard
        // resolution), from the step's start.
        let secs = window.as_secs().max(1);
        let period = secs.div_ceil(60).max(1) * 60;
        let start = now - Duration::from_secs(secs);
        let end = now + Duration::from_secs(1);
        let dims = [
            ("Function", s.function.as_str()),
            ("Target", s.candidate.as_str()),
            ("Traffic", s.traffic),
        ];
        let query = |id: &str, name: &str, stat: &str| {
            let mut metric = Metric::builder()
                .namespace(&self.namespace)
                .metric_name(name);
            for (k, v) in dims {
                metric = metric.dimensions(Dimension::builder().name(k).value(v).build());
            }
            MetricDataQuery::builder()
                .id(id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric.build())
                        .period(period as i32)
                        .stat(stat)
                        .build(),
                )
                .build()
        };
        // The counts, then the p99 on its own: a store that cannot answer a
        // percentile (the emulator) leaves the counts measured.
        let counts = self
            .client
            .get_metric_data()
            .start_time(start.into())
            .end_time(end.into())
            .metric_data_queries(query("requests", "Requests", "Sum"))
            .metric_data_queries(query("errors", "Errors", "Sum"))
            .send()
            .await;
        match counts {
            Ok(out) => {
                // No datapoints: nothing counted.
                let sum = |id: &str| -> f64 {
                    out.metric_data_results()
                        .iter()
                        .filter(|r| r.id() == Some(id))
                        .flat_map(|r| r.values().iter().copied())
                        .fold(0.0, |a, b| a + b)
                };
                m.requests = Some(sum("requests"));
                m.errors = Some(sum("errors"));
            }
            Err(e) => {
                let (_, message) = switchyard_config::sdk_message(&e);
                m.problems.push(format!(
                    "CloudWatch GetMetricData of Requests and Errors: {message}"
                ));
            }
        }
        let latency = self
            .client
            .get_metric_data()
            .start_time(start.into())
            .end_time(end.into())
            .metric_data_queries(query("latency", "Latency", "p99"))
            .send()
            .await;
        match latency {
            Ok(out) => {
                m.p99 = out
                    .metric_data_results()
                    .iter()
                    .find(|r| r.id() == Some("latency"))
                    .and_then(|r| r.values().first().copied())
                    .map(|ms| ms / 1000.0);
                if m.p99.is_none() {
                    m.problems
                        .push("CloudWatch has no p99 of Latency for the window yet".into());
                }
            }
            Err(e) => {
                let (_, message) = switchyard_config::sdk_message(&e);
                m.problems.push(format!(
                    "CloudWatch GetMetricData of the p99 of Latency: {message}"
                ));
            }
        }
        m
    }
}

/// One scrape of every host: series (name and sorted labels) to value,
/// per host.
type Scrape = Vec<HashMap<Series, f64>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

impl Series {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Admin listeners, scraped and summed.
pub(crate) struct Hosts {
    urls: Vec<String>,
    token: Option<String>,
    baseline: Option<Scrape>,
    http: Http,
}

impl Hosts {
    async fn scrape(&self) -> Result<Scrape> {
        let mut all = Vec::new();
        for url in &self.urls {
            let mut req = http::Request::get(format!("{url}/metrics"));
            if let Some(t) = &self.token {
                req = req.header("authorization", format!("Bearer {}", t.trim()));
            }
            let req = req.body(http_body_util::Full::default()).with_context(|| {
                format!("--hosts {url:?} is not a URL like http://10.0.0.5:9901")
            })?;
            let (status, body) = self.http.call(req).await?;
            if !status.is_success() {
                bail!("{url}/metrics answered {status}");
            }
            all.push(parse(&String::from_utf8_lossy(&body)));
        }
        Ok(all)
    }

    async fn measure(&mut self, s: &Subject) -> Measured {
        let mut m = Measured::default();
        let now = match self.scrape().await {
            Ok(now) => now,
            Err(e) => {
                m.problems
                    .push(format!("{e:#} (every host listed must answer)"));
                return m;
            }
        };
        let Some(base) = &self.baseline else {
            // No zero to count from yet: this scrape is it.
            self.baseline = Some(now);
            m.problems
                .push("the step's first scrape: counting starts now".into());
            return m;
        };
        // Each series' growth on each host (a host that restarted counts
        // from 0).
        let mut grown: HashMap<&Series, f64> = HashMap::new();
        for (i, host) in now.iter().enumerate() {
            for (series, v) in host {
                let before = base
                    .get(i)
                    .and_then(|b| b.get(series))
                    .copied()
                    .unwrap_or(0.0);
                let d = if *v >= before { v - before } else { *v };
                *grown.entry(series).or_default() += d;
            }
        }
        let ours = |series: &Series| {
            series.label("function") == Some(s.function.as_str())
                && series.label("target") == Some(s.candidate.as_str())
                && series.label("traffic") == Some(s.traffic)
        };
        let sum = |name: &str, keep: &dyn Fn(&Series) -> bool| -> f64 {
            grown
                .iter()
                .filter(|(k, _)| k.name == name && keep(k))
                .map(|(_, v)| v)
                .fold(0.0, |a, b| a + b)
        };
        m.requests = Some(sum("switchyard_requests_total", &ours));
        m.errors = Some(sum("switchyard_requests_total", &|k| {
            ours(k) && k.label("status").is_some_and(|s| s.starts_with('5'))
        }));
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (k, v) in &grown {
            if k.name == "switchyard_request_duration_seconds_bucket" && ours(k) {
                let le = match k.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => match x.parse() {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += v,
                    None => buckets.push((le, *v)),
                }
            }
        }
        m.p99 = quantile(0.99, &mut buckets);
        let function = |k: &Series| k.label("function") == Some(s.function.as_str());
        m.compared = Some(sum("switchyard_shadow_compared_total", &function));
        m.diffs = Some(sum("switchyard_shadow_diff_total", &function));
        m.guard_trips = Some(sum("switchyard_guard_trips_total", &function));
        m
    }
}

/// The `q` quantile of a histogram's cumulative buckets `(le, count)`, as
/// Prometheus's `histogram_quantile` reckons it: linear within the bucket
/// it falls in, the highest finite bound when it falls in `+Inf`; `None`
/// when the histogram is empty.
pub(crate) fn quantile(q: f64, buckets: &mut [(f64, f64)]) -> Option<f64> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().filter(|(le, _)| le.is_infinite())?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (i, &(le, count)) in buckets.iter().enumerate() {
        if count >= rank {
            if le.is_infinite() {
                return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
            }
            if count == below {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        lower = le;
        below = count;
    }
    None
}

/// Prometheus text: the samples of `switchyard_` families.
fn parse(text: &str) -> HashMap<Series, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if !line.starts_with("switchyard_") {
            continue;
        }
        let (name_labels, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match name_labels.find('{') {
            Some(i) => (&name_labels[..i], labels(&name_labels[i + 1..])),
            None => (name_labels, Vec::new()),
        };
        let mut labels = labels;
        labels.sort();
        out.insert(
            Series {
                name: name.to_owned(),
                labels,
            },
            value,
        );
    }
    out
}

/// `k="v",k2="v2"}` as pairs (escapes `\"`, `\\`, `\n` undone).
fn labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || *c == ' ')
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() || key.starts_with('}') {
            return out;
        }
        if chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_reckoned_as_prometheus_does() {
        let mut b = vec![
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // Rank 99 of 100 falls in (0.5, 1]: 0.5 + 0.5 * 9/10.
        assert!((quantile(0.99, &mut b).unwrap() - 0.95).abs() < 1e-9);
        // Rank 50 is the first bucket's end.
        assert!((quantile(0.5, &mut b).unwrap() - 0.1).abs() < 1e-9);
        // In +Inf: the highest finite bound.
        let mut b = vec![(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &mut b), Some(0.1));
        assert_eq!(quantile(0.99, &mut [(f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &mut []), None);
    }

    #[test]
    fn prometheus_text_is_read_with_its_labels() {
        let text = "# HELP switchyard_requests_total x\n\
            switchyard_requests_total{function=\"orders\",target=\"8\",traffic=\"production\",status=\"200\"} 12\n\
            switchyard_request_duration_seconds_bucket{function=\"orders\",target=\"8\",traffic=\"production\",le=\"+Inf\"} 12\n\
            switchyard_cache_refused_total 0\n\
            switchyard_odd{why=\"a \\\"quoted\\\" one\"} 1\n\
            other_metric 5\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        let key = Series {
            name: "switchyard_requests_total".into(),
            labels: {
                let mut l = vec![
                    ("function".to_owned(), "orders".to_owned()),
                    ("target".to_owned(), "8".to_owned()),
                    ("traffic".to_owned(), "production".to_owned()),
                    ("status".to_owned(), "200".to_owned()),
                ];
                l.sort();
                l
            },
        };
        assert_eq!(s[&key], 12.0);
        let odd = s.keys().find(|k| k.name == "switchyard_odd").unwrap();
        assert_eq!(odd.label("why"), Some("a \"quoted\" one"));
    }
}
