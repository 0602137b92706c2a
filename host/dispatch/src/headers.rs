//! Header rules, in one place: what never crosses the mesh (hop-by-hop
//! headers, forged tags) and what the mesh adds (the traffic class and the
//! decision's context).

use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard_core::{CONTEXT_HEADER_PREFIX, TARGET_HEADER, TRAFFIC_HEADER};

use crate::dispatcher::Target;

/// Headers that belong to one connection (RFC 9110 section 7.6.1): never
/// forwarded, in either direction.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers addressed to the proxy itself (RFC 9110 section 11.7): the
/// credentials a client gives its proxy are not the target's to see.
const FOR_THE_PROXY: &[&str] = &["proxy-authorization", "proxy-authenticate"];

/// The framing headers a streamed body relies on.
const FRAMING: &[&str] = &["content-length", "transfer-encoding", "trailer"];

/// Drops the hop-by-hop headers and those `Connection` names. With
/// `keep_framing`, `content-length`, `transfer-encoding` and `trailer`
/// stay (a body passed through as it streams needs them).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_framing: bool) {
    let keep = |name: &str| keep_framing && FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f));
    // Names `Connection` lists beyond the hop-by-hop ones (rarely any:
    // `keep-alive` and `close` need no copy).
    let named: Vec<HeaderName> = connection_named(headers)
        .filter(|n| !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h)))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named
        .iter()
        .map(HeaderName::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        if !keep(name) {
            headers.remove(name);
        }
    }
}

/// The header names a `Connection` header lists, as sent (compare them
/// case-insensitively).
fn connection_named(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// Whether a client-sent header (or client context `custom` key) would pose
/// as one the mesh itself sets: the traffic class, the target, or the
/// decision's context. Names in any case.
pub fn is_tag(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRAFFIC_HEADER)
        || name.eq_ignore_ascii_case(TARGET_HEADER)
        || name
            .get(..CONTEXT_HEADER_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(CONTEXT_HEADER_PREFIX))
}

/// The tags a target receives, as header names and values (also what goes
/// in a Lambda client context's `custom`): the traffic class first, then
/// the context, keys lower-cased under `x-switchyard-ctx-`.
pub fn tags(to: &Target) -> Vec<(String, String)> {
    std::iter::once((TRAFFIC_HEADER.to_owned(), to.traffic.as_str().to_owned()))
        .chain(to.context.iter().map(|(k, v)| {
            (
                format!("{CONTEXT_HEADER_PREFIX}{}", k.to_ascii_lowercase()),
                v.clone(),
            )
        }))
        .collect()
}

/// The headers sent to a target: the client's, minus hop-by-hop ones (and
/// those `Connection` names), those addressed to the proxy, `host`,
/// `content-length` (the client re-frames) and anything posing as a tag,
/// plus the mesh's tags. Built in one pass over the client's headers (the
/// hot path: no copy of the map to prune afterwards).
pub fn outgoing(headers: &HeaderMap, to: &Target) -> HeaderMap {
    // Once, not per header (no allocation when there is no `Connection`).
    let listed: Vec<&str> = connection_named(headers).collect();
    let mut out = HeaderMap::with_capacity(headers.len() + 1 + to.context.len());
    for (name, value) in headers {
        // Header map names are lower case already.
        let n = name.as_str();
        let dropped = HOP_BY_HOP.contains(&n)
            || FOR_THE_PROXY.contains(&n)
            || n == "host"
            || n == "content-length"
            || is_tag(n)
            || listed.iter().any(|x| x.eq_ignore_ascii_case(n))
            || to.propagate.iter().any(|(p, _)| p == name);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        HeaderName::from_static(TRAFFIC_HEADER),
        HeaderValue::from_static(to.traffic.as_str()),
    );
    for (k, v) in &to.context {
        let name = format!("{CONTEXT_HEADER_PREFIX}{}", k.to_ascii_lowercase());
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name),
            HeaderValue::try_from(v.as_str()),
        ) {
            out.insert(n, v);
        }
    }
    for (name, value) in &to.propagate {
        out.insert(name.clone(), value.clone());
    }
    out
}

/// The X-Ray trace header a target gets: the mesh's (see
/// [`Target::propagate`]), else the caller's.
pub(crate) fn xray_header(caller: &HeaderMap, to: &Target) -> Option<String> {
    to.propagate
        .iter()
        .find(|(n, _)| n == "x-amzn-trace-id")
        .map(|(_, v)| v)
        .or_else(|| caller.get("x-amzn-trace-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::Traffic;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("x-private, content-length"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut streamed = h.clone();
        strip_hop_by_hop(&mut streamed, true);
        assert!(streamed.get("x-private").is_none() && streamed.get("connection").is_none());
        assert!(
            streamed.get("transfer-encoding").is_some() && streamed.get("content-length").is_some()
        );
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("transfer-encoding").is_none() && h.get("content-length").is_none());
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn forged_tags_are_replaced_by_the_decisions() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-switchyard-traffic",
            HeaderValue::from_static("production"),
        );
        h.insert("X-Switchyard-Ctx-Db", HeaderValue::from_static("forged"));
        h.insert("X-Switchyard-Target", HeaderValue::from_static("forged"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic c2VjcmV0"),
        );
        h.insert("connection", HeaderValue::from_static("x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("host", HeaderValue::from_static("a"));
        let to = Target {
            function: "orders".into(),
            qualifier: "8".into(),
            traffic: Traffic::Synthetic,
            context: [("QUEUE".to_owned(), "q8".to_owned())].into(),
            secrets: Vec::new(),
            propagate: Vec::new(),
        };
        let out = outgoing(&h, &to);
        assert_eq!(out["x-switchyard-traffic"], "synthetic");
        assert_eq!(out["x-switchyard-ctx-queue"], "q8");
        assert!(out.get("x-switchyard-ctx-db").is_none() && out.get("host").is_none());
        for gone in [
            "x-switchyard-target",
            "proxy-authorization",
            "x-hop",
            "connection",
        ] {
            assert!(out.get(gone).is_none(), "{gone} was forwarded");
        }
    }
}
