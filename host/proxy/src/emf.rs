//! CloudWatch Embedded Metric Format: one JSON line on stdout per decided
//! request, which Lambda (and ECS's `awslogs` driver, and the CloudWatch
//! agent) turn into metrics with no API call on the request path. The
//! router function and the mesh extension emit them by default, `serve`
//! with `--emf-namespace`.
//!
//! Each line has the metrics `Requests` (Count, 1), `Errors` (Count, 1 for a
//! 5xx) and `Latency` (Milliseconds, decision to last byte) under the one
//! dimension set `[Function, Target, Traffic]`, so synthetic traffic is its
//! own series (`Traffic=synthetic`), and `Status` as a property for Logs
//! Insights. See
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.

use std::io::Write as _;
use std::time::Duration;

/// The EMF writer of a host: its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emf {
    namespace: String,
}

/// The namespace a host's EMF lines use unless told otherwise.
pub const DEFAULT_EMF_NAMESPACE: &str = "Switchyard";

impl Emf {
    /// An EMF writer for `namespace`: 1-255 ASCII characters, not starting
    /// with `AWS/` (CloudWatch's rules for a custom namespace).
    pub fn new(namespace: &str) -> Result<Emf, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/#: ".contains(c);
        if namespace.is_empty()
            || namespace.len() > 255
            || !namespace.chars().all(ok_char)
            || namespace.starts_with("AWS/")
        {
            return Err(format!(
                "{namespace:?} is not a CloudWatch namespace: 1-255 of A-Z a-z 0-9 . - _ / # : and space, not starting with AWS/"
            ));
        }
        Ok(Emf {
            namespace: namespace.to_owned(),
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// One request's line.
    pub fn line(
        &self,
        function: &str,
        target: &str,
        traffic: &str,
        status: u16,
        latency: Duration,
        timestamp_ms: u64,
    ) -> String {
        serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function", "Target", "Traffic"]],
                    "Metrics": [
                        {"Name": "Requests", "Unit": "Count"},
                        {"Name": "Errors", "Unit": "Count"},
                        {"Name": "Latency", "Unit": "Milliseconds"},
                    ],
                }],
            },
            "Function": function,
            "Target": target,
            "Traffic": traffic,
            "Requests": 1,
            "Errors": u8::from(status >= 500),
            "Latency": (latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "Status": status,
        })
        .to_string()
    }

    /// Writes one request's line to stdout (a failed write is dropped: the
    /// request is not held back for its metric).
    pub(crate) fn emit(
        &self,
        function: &str,
        target: &str,
        traffic: &str,
        status: u16,
        latency: Duration,
    ) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = self.line(function, target, traffic, status, latency, now);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_cloudwatchs_rules() {
        assert!(Emf::new("Switchyard").is_ok());
        assert!(Emf::new("team/orders-mesh").is_ok());
        for bad in ["", "AWS/Lambda", "naïve", &"x".repeat(256)] {
            assert!(Emf::new(bad).is_err(), "{bad}");
        }
    }
}
