//! Request hygiene, before anything is decided: limits on headers and
//! body, paths an upstream could read differently from the mesh, and the
//! mesh's own tags, which a caller may not send.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use switchyard_dispatch::is_tag;

use crate::ProxyConfig;
use crate::answer::ProxyError;

/// A 431 when the request's headers are over the limit.
pub(crate) fn check_headers(config: &ProxyConfig, headers: &HeaderMap) -> Result<(), ProxyError> {
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > config.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            bytes,
            limit: config.max_header_bytes,
        });
    }
    Ok(())
}

/// The whole body, within the size limit, with no stall longer than
/// `body_timeout` between its parts and all of it within four times that
/// (a client dripping a byte a minute cannot hold a connection for ever).
pub(crate) async fn read_body(config: &ProxyConfig, body: Body) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let start = tokio::time::Instant::now();
    let all_by = start + config.body_timeout * 4;
    loop {
        let next_by = (tokio::time::Instant::now() + config.body_timeout).min(all_by);
        let frame = match tokio::time::timeout_at(next_by, body.frame()).await {
            Err(_) => {
                return Err(ProxyError::BodyStalled {
                    stall: config.body_timeout,
                });
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(ProxyError::BodyBroken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > config.max_body {
                return Err(ProxyError::BodyTooLarge {
                    limit: config.max_body,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// A path segment percent-decoded; `None` when that is not UTF-8.
pub(crate) fn decoded_segment(segment: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

/// The request's headers as the policy sees them: minus any a caller sent
/// under the names the mesh itself sets (`x-switchyard-traffic`,
/// `x-switchyard-target`, `x-switchyard-ctx-*`).
pub(crate) fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers
        .iter()
        .filter(|(k, _)| !is_tag(k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
}

/// Removes the headers a caller may not send (the mesh's own tags:
/// `x-switchyard-traffic`, `x-switchyard-target`, `x-switchyard-ctx-*`),
/// so a policy never reads a forged one.
pub(crate) fn drop_tags(headers: &mut HeaderMap) {
    if headers.keys().any(|k| is_tag(k.as_str())) {
        let forged: Vec<_> = headers
            .keys()
            .filter(|k| is_tag(k.as_str()))
            .cloned()
            .collect();
        for name in forged {
            headers.remove(&name);
        }
    }
}

/// Whether a path has a `.` or `..` segment (also percent-encoded), which
/// upstreams may resolve differently from the mesh.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    // Separators and dots as some upstreams decode them: `%2f`, `%5c`,
    // `\`, `%2e`, and a segment's `;param` (`..;/` passes for `../` in
    // some). One pass, no copy: this runs on every request.
    let b = path.as_bytes();
    let escape = |i: usize, hex: &[u8; 2]| {
        b.len() >= i + 3
            && b[i] == b'%'
            && b[i + 1] == hex[0]
            && b[i + 2].eq_ignore_ascii_case(&hex[1])
    };
    // In the current segment: the dots before any `;`, whether anything
    // else came before it, and whether its `;param` part has begun.
    let (mut dots, mut other, mut param) = (0u8, false, false);
    let mut i = 0;
    loop {
        let separator = if i == b.len() {
            Some(0)
        } else if b[i] == b'/' || b[i] == b'\\' {
            Some(1)
        } else if escape(i, b"2f") || escape(i, b"5c") {
            Some(3)
        } else {
            None
        };
        if let Some(len) = separator {
            if !other && (dots == 1 || dots == 2) {
                return true;
            }
            if i == b.len() {
                return false;
            }
            (dots, other, param) = (0, false, false);
            i += len;
            continue;
        }
        if !param {
            if b[i] == b';' {
                param = true;
            } else if b[i] == b'.' {
                dots = dots.saturating_add(1);
            } else if escape(i, b"2e") {
                dots = dots.saturating_add(1);
                i += 3;
                continue;
            } else {
                other = true;
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check answers as the copying one it replaced, on
    /// every path of up to 5 characters over the characters that matter.
    #[test]
    fn dot_segments_are_found_without_copying() {
        fn by_copying(path: &str) -> bool {
            let lower = path.to_ascii_lowercase();
            let decoded = lower
                .replace("%2e", ".")
                .replace("%2f", "/")
                .replace("%5c", "/")
                .replace('\\', "/");
            decoded.split('/').any(|seg| {
                let seg = seg.split(';').next().unwrap_or(seg);
                seg == "." || seg == ".."
            })
        }
        let alphabet = [
            '/', '\\', '.', ';', '%', '2', 'e', 'E', 'f', 'F', '5', 'c', 'a',
        ];
        let mut paths = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut longer = Vec::new();
            for p in &paths {
                for c in alphabet {
                    let q = format!("{p}{c}");
                    assert_eq!(has_dot_segment(&q), by_copying(&q), "{q:?}");
                    checked += 1;
                    longer.push(q);
                }
            }
            paths = longer;
        }
        assert!(checked > 300_000);
        for (path, dot) in [
            ("/a/../b", true),
            ("/a/%2E%2e/b", true),
            ("/a/..;x/b", true),
            ("/a%2f.%5cb", true),
            ("/a/...", false),
            ("/a/.b", false),
            ("/api/v1/orders/1", false),
        ] {
            assert_eq!(has_dot_segment(path), dot, "{path}");
        }
    }
}
