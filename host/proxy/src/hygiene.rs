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

/// The bytes of request bodies held at once across every request (the
/// proxy's [`ProxyConfig::body_memory`]): each body takes its share as it
/// arrives and gives it back when its request is done, so many slow or
/// large uploads at once cannot take the host's memory.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    left: std::sync::Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub(crate) fn new(total: usize) -> Self {
        BodyBudget {
            left: std::sync::Arc::new(tokio::sync::Semaphore::new(
                total.min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            total,
        }
    }

    /// `bytes` more for `held`, or the refusal when the budget is spent.
    fn take(&self, held: &mut Held, bytes: usize) -> Result<(), ProxyError> {
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.left.clone().try_acquire_many_owned(n).ok())
            .ok_or(ProxyError::BodyBudget { budget: self.total })?;
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }
}

/// A request body's share of the [`BodyBudget`], given back when dropped:
/// keep it while the body is.
#[derive(Debug, Default)]
pub(crate) struct Held(Option<tokio::sync::OwnedSemaphorePermit>);

/// The whole body, within the size limit and the proxy's body budget,
/// with no stall longer than `body_timeout` between its parts and all of
/// it within four times that (a client dripping a byte a minute cannot
/// hold a connection for ever). A `Content-Length` over the limit is
/// refused before a byte is read (and before `100 Continue` is sent).
pub(crate) async fn read_body(
    config: &ProxyConfig,
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Held), ProxyError> {
    use http_body_util::BodyExt;
    let too_large = ProxyError::BodyTooLarge {
        limit: config.max_body,
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body as u64) {
        return Err(too_large);
    }
    let mut held = Held::default();
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
            Ok(None) => return Ok((buf.freeze(), held)),
            Ok(Some(Err(_))) => return Err(ProxyError::BodyBroken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > config.max_body {
                return Err(too_large);
            }
            budget.take(&mut held, data.len())?;
            buf.extend_from_slice(&data);
        }
    }
}

/// Appends the address of the client that connected to the mesh to
/// `X-Forwarded-For` (and to `Forwarded`, RFC 7239, when the caller sent
/// one), as a proxy does: the version sees who called, after whatever
/// the caller claimed.
pub(crate) fn forwarded_for(headers: &mut HeaderMap, peer: std::net::IpAddr) {
    use http::header::{FORWARDED, HeaderValue};
    use std::io::Write as _;
    const XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    let append = |headers: &mut HeaderMap, name: http::HeaderName, ours: &str| {
        // Several fields of one name are one list (RFC 9110 5.3).
        let value = if headers.contains_key(&name) {
            let joined = headers
                .get_all(&name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .chain(std::iter::once(ours))
                .collect::<Vec<_>>()
                .join(", ");
            HeaderValue::from_str(&joined)
        } else {
            HeaderValue::from_str(ours)
        };
        if let Ok(v) = value {
            headers.insert(name, v);
        }
    };
    // The address formatted on the stack: this runs on every request.
    let mut buf = [0u8; 48];
    let mut at = &mut buf[..];
    let _ = write!(at, "{peer}");
    let len = 48 - at.len();
    let ours = std::str::from_utf8(&buf[..len]).unwrap_or_default();
    append(headers, XFF, ours);
    if headers.contains_key(FORWARDED) {
        let node = match peer {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        append(headers, FORWARDED, &format!("for={node}"));
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

    /// The peer is appended to what the caller sent, one list per header.
    #[test]
    fn the_peer_is_appended_to_forwarded_headers() {
        let v4: std::net::IpAddr = "10.0.0.9".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let mut h = HeaderMap::new();
        forwarded_for(&mut h, v4);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert!(h.get("forwarded").is_none());
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
        h.insert("forwarded", "for=1.2.3.4;proto=https".parse().unwrap());
        forwarded_for(&mut h, v6);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 2001:db8::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4;proto=https, for=\"[2001:db8::1]\""
        );
    }

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
