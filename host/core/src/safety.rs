//! The route config's safety nets, as CI/CD writes them: a `guard` that
//! takes the candidate out when it fails, and a `fallback` that retries an
//! idempotent request on stable. The host (the proxy) enforces them; here
//! they are parsed and checked, so a bad block is refused at `publish`
//! naming the field.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `"guard": {"max-error-rate":0.05,"min-requests":50,"window":"60s","max-p99-ms":800}`:
/// judged per host over the candidate's answers, production and synthetic
/// traffic apart. Tripped when, over the window and with at least
/// `min-requests` answers, the share of failures (5xx, timeouts, function
/// errors) is above `max-error-rate`, or the 99th-percentile latency above
/// `max-p99-ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Guard {
    /// Largest share of failed answers tolerated, in (0, 1].
    pub max_error_rate: f64,
    /// Answers needed in the window before the guard judges (1..=100000).
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// How far back the guard looks (1s..=1h).
    #[serde(
        default = "default_window",
        serialize_with = "window_text",
        deserialize_with = "window_parse"
    )]
    pub window: Duration,
    /// Largest 99th-percentile latency tolerated, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
}

// Validated: never NaN.
impl Eq for Guard {}

fn default_min_requests() -> u32 {
    50
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

fn window_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_millis() == 0 {
        s.serialize_str(&format!("{}s", d.as_secs()))
    } else {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

fn window_parse<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "guard.window {text:?} is not a duration like \"60s\", \"5m\" or \"500ms\""
        ))
    })
}

/// `500ms`, `60s`, `5m`, `1h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = t[..split].parse().ok()?;
    match &t[split..] {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

impl Guard {
    /// Checks the ranges, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.max_error_rate > 0.0 && self.max_error_rate <= 1.0) {
            return Err(format!(
                "guard.max-error-rate {} is out of range: a share in (0, 1], e.g. 0.05 for 5 %",
                self.max_error_rate
            ));
        }
        if !(1..=100_000).contains(&self.min_requests) {
            return Err(format!(
                "guard.min-requests {} is out of range: 1 to 100000",
                self.min_requests
            ));
        }
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(3600) {
            return Err(format!(
                "guard.window {:?} is out of range: 1s to 1h",
                self.window
            ));
        }
        if let Some(ms) = self.max_p99_ms
            && !(1..=3_600_000).contains(&ms)
        {
            return Err(format!(
                "guard.max-p99-ms {ms} is out of range: 1 to 3600000"
            ));
        }
        Ok(())
    }
}

/// `"fallback": "stable"`: an idempotent request that fails on another
/// version is retried once on stable, and the client gets stable's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Retry on the `stable` version.
    Stable,
}

/// `"shadow": {"headers":["content-type"],"ignore":["$.timestamp"],"reveal":["$.total"],"max-body-bytes":65536}`:
/// when a decision mirrors, the mirror's answer is compared with the
/// primary's (status, these headers, the body: JSON structurally, less the
/// `ignore` paths; other bodies by digest). A difference's values are shown
/// only for the `reveal` paths (and the headers named); the rest as
/// `(redacted)`. Paths are `$`, `.key` and `[index]` segments, `*` for any
/// key or index; a path covers what is below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Shadow {
    /// Answer headers compared (names, any case).
    #[serde(default)]
    pub headers: Vec<String>,
    /// JSON paths left out of the comparison.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// JSON paths whose values a report may show.
    #[serde(default)]
    pub reveal: Vec<String>,
    /// How much of each body is kept for the comparison (1 to 6 MiB;
    /// default 64 KiB); a larger body is compared by neither.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_max_body() -> usize {
    64 << 10
}

/// A JSON path as segments: `Some(key)`, or `None` for an index; `*` is
/// any. `$.items[0].id` -> `["items", "[]"... ]`.
pub fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let bad = || format!("{path:?} is not a JSON path like $.items[0].id or $.items[*].id");
    let rest = path.strip_prefix('$').ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                if key.is_empty() {
                    return Err(bad());
                }
                out.push(key);
            }
            '[' => {
                let mut index = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    index.push(c);
                }
                if index != "*" && index.parse::<usize>().is_err() {
                    return Err(bad());
                }
                out.push(format!("[{index}]"));
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

impl Shadow {
    /// Checks the names, paths and size, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if let Some(h) = self.headers.iter().find(|h| {
            h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        }) {
            return Err(format!("shadow.headers: {h:?} is not a header name"));
        }
        for (field, paths) in [("ignore", &self.ignore), ("reveal", &self.reveal)] {
            for p in paths.iter() {
                parse_path(p).map_err(|e| format!("shadow.{field}: {e}"))?;
            }
        }
        if !(1..=6 << 20).contains(&self.max_body_bytes) {
            return Err(format!(
                "shadow.max-body-bytes {} is out of range: 1 to 6291456",
                self.max_body_bytes
            ));
        }
        Ok(())
    }
}

/// Methods idempotent without being declared so.
pub const IDEMPOTENT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_parse_with_defaults_and_ranges_are_named() {
        let g: Guard = serde_json::from_str(r#"{"max-error-rate":0.05}"#).unwrap();
        assert_eq!(
            (g.min_requests, g.window, g.max_p99_ms),
            (50, Duration::from_secs(60), None)
        );
        assert!(g.check().is_ok());
        let g: Guard = serde_json::from_str(
            r#"{"max-error-rate":0.5,"min-requests":5,"window":"500ms","max-p99-ms":800}"#,
        )
        .unwrap();
        assert_eq!(g.window, Duration::from_millis(500));
        assert!(g.check().unwrap_err().contains("guard.window"));
        assert_eq!(
            serde_json::to_string(&Guard {
                window: Duration::from_secs(90),
                ..g.clone()
            })
            .unwrap(),
            r#"{"max-error-rate":0.5,"min-requests":5,"window":"90s","max-p99-ms":800}"#
        );
        for (bad, says) in [
            (r#"{"max-error-rate":1.5}"#, "guard.max-error-rate 1.5"),
            (r#"{"max-error-rate":0}"#, "guard.max-error-rate 0"),
            (
                r#"{"max-error-rate":0.1,"min-requests":0}"#,
                "guard.min-requests 0",
            ),
            (
                r#"{"max-error-rate":0.1,"max-p99-ms":0}"#,
                "guard.max-p99-ms 0",
            ),
        ] {
            let g: Guard = serde_json::from_str(bad).unwrap();
            assert!(g.check().unwrap_err().contains(says), "{bad}");
        }
        for (bad, says) in [
            (
                r#"{"max-error-rate":0.1,"colour":"red"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"max-error-rate":0.1,"window":"soon"}"#,
                "guard.window \"soon\"",
            ),
            (r#"{"min-requests":5}"#, "missing field `max-error-rate`"),
        ] {
            let e = serde_json::from_str::<Guard>(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
