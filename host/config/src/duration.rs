//! Durations as operators write them in flags and environment variables.

use std::time::Duration;

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number at the start.
    #[error("{0:?} is not a duration like 500ms, 10s or 2m")]
    NotADuration(String),
    /// A unit other than `ms`, `s`, `m`.
    #[error("{raw:?}: unknown unit {unit:?}; use ms, s or m")]
    Unit {
        /// The whole text.
        raw: String,
        /// The unit found.
        unit: String,
    },
    /// Shorter than allowed.
    #[error("{raw:?} is too short; use at least {min:?}")]
    TooShort {
        /// The whole text.
        raw: String,
        /// The shortest allowed.
        min: Duration,
    },
}

/// The shortest poll interval accepted: shorter would spin a core on the
/// store for nothing.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A poll interval: a duration of at least [`MIN_POLL_INTERVAL`].
pub fn parse_poll_interval(raw: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(raw)?;
    if d < MIN_POLL_INTERVAL {
        return Err(DurationError::TooShort {
            raw: raw.trim().to_owned(),
            min: MIN_POLL_INTERVAL,
        });
    }
    Ok(d)
}

/// Parses `250ms`, `10s`, `2m` (a bare number is seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, DurationError> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (n, unit) = raw.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| DurationError::NotADuration(raw.to_owned()))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(DurationError::Unit {
            raw: raw.to_owned(),
            unit: unit.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(matches!(
            parse_poll_interval("0s"),
            Err(DurationError::TooShort { .. })
        ));
        assert!(parse_poll_interval("50ms").is_err());
        assert_eq!(parse_poll_interval("100ms"), Ok(MIN_POLL_INTERVAL));
        assert!(
            parse_duration("s")
                .unwrap_err()
                .to_string()
                .contains("500ms")
        );
        assert!(
            parse_duration("3h")
                .unwrap_err()
                .to_string()
                .contains("use ms, s or m")
        );
    }
}
