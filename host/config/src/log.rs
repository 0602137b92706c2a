//! The log filter every Switchyard binary uses.

/// Crates whose debug output carries request signatures and credential
/// details (the access key id in an `Authorization` header, the
/// credentials chain): held at `info` unless the filter names them.
const QUIET: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
];

/// The tracing filter for `requested` (`SWITCHYARD_LOG`; by default
/// `warn,switchyard=info`): what was asked, with the AWS SDK's crates held
/// at `info` unless it names them, so `SWITCHYARD_LOG=debug` shows the
/// mesh's and the policies' debug lines without credentials.
pub fn log_filter(requested: Option<&str>) -> String {
    let requested = requested
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("warn,switchyard=info");
    let mut filter = requested.to_owned();
    for krate in QUIET {
        if !requested.contains(krate) {
            filter.push_str(&format!(",{krate}=info"));
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_crates_stay_at_info_unless_named() {
        let f = log_filter(Some("debug"));
        assert!(f.starts_with("debug,") && f.contains("aws_smithy_runtime=info"));
        let f = log_filter(Some("debug,aws_sigv4=trace"));
        assert!(f.contains("aws_sigv4=trace") && !f.contains("aws_sigv4=info"));
        assert!(log_filter(None).starts_with("warn,switchyard=info,"));
    }
}
