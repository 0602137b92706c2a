//! Shadow diffs: when a decision mirrors and the route asks for a `shadow`,
//! the mirror's answer is compared with the primary's: the status, the
//! headers the route names, and the body (JSON structurally, less the
//! `ignore` paths; other bodies by digest). Differences are counted
//! (`switchyard_shadow_compared_total`, `switchyard_shadow_diff_total{kind}`)
//! and the latest kept per function, values redacted unless a `reveal`
//! path covers them, for the admin listener's `GET /v1/shadow/{function}`
//! and `switchyard shadow report`.
//!
//! The primary is never held back: its body streams to the client as
//! before while a copy of at most `max-body-bytes` is teed off; the
//! comparison runs in the mirror's task, which has one of the bounded
//! mirror slots (none free: the copy is dropped and counted).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};
use serde_json::{Value, json};
use switchyard_core::{Decision, Shadow, Traffic, parse_path};
use switchyard_dispatch::{Call, Dispatcher, Target};
use tokio::sync::oneshot;

use crate::catalogue::{SHADOW_COMPARED, SHADOW_DIFF};
use crate::steps::{Routing, Sent};

/// Where the primary's answer goes for a shadow comparison, and how much
/// of its body.
pub(crate) struct Tee {
    tx: oneshot::Sender<Captured>,
    limit: usize,
}

/// The mirror step: when the decision mirrors, a copy goes to the mirror
/// target in one of the bounded mirror slots (synthetic traffic, its trace
/// continued as such); with the route's `shadow`, its answer is compared
/// with the primary's, which is then teed ([`tee`]).
pub(crate) fn mirror(
    r: &Routing<'_>,
    dispatcher: &Arc<dyn Dispatcher>,
    decision: &Decision,
) -> Option<Tee> {
    let config = r.active.route.config();
    let mut mirror = Target::mirror(r.function, decision, config)?;
    mirror.propagate = r
        .routed
        .mirror(r.p.config.traces.as_deref(), r.function, &mirror.qualifier)
        .propagate(r.call.headers(), Traffic::Synthetic);
    match &config.shadow {
        Some(spec) => spawn_shadow(r, dispatcher, mirror, spec),
        None => {
            r.p.clients
                .spawn_mirror(dispatcher.clone(), r.call.clone(), mirror);
            None
        }
    }
}

/// The shadow tee step: the primary's answer, its body teed to the
/// comparison when there is one.
pub(crate) fn tee(sent: Sent, tee: Option<Tee>) -> Sent {
    match tee {
        Some(Tee { tx, limit }) => Sent {
            response: TeeBody::wrap(sent.response, limit, tx),
            failure: sent.failure,
        },
        None => sent,
    }
}

/// Sends a mirror copy whose answer is compared with the primary's:
/// returns where the primary's answer goes, or `None` when no mirror slot
/// is free (the copy dropped and counted).
fn spawn_shadow(
    r: &Routing<'_>,
    dispatcher: &Arc<dyn Dispatcher>,
    mirror: Target,
    spec: &Shadow,
) -> Option<Tee> {
    let (tx, rx) = oneshot::channel();
    let reports = r.p.shadows.clone();
    let request = match r.call {
        Call::Http(h) => json!({"method": h.method.as_str(), "path": h.path}),
        Call::Invoke(_) => json!({"invoke": true}),
    };
    let limit = spec.max_body_bytes;
    let spec = spec.clone();
    let wait = r.p.clients.timeout() + Duration::from_secs(30);
    let sent = r.p.clients.spawn_mirror_answer(
        dispatcher.clone(),
        r.call.clone(),
        mirror,
        move |mirror, answer| async move {
            let mirrored = match answer {
                Ok(r) => {
                    let (parts, body) = r.into_parts();
                    let (body, complete) = read_limited(body, spec.max_body_bytes).await;
                    Captured {
                        status: parts.status.as_u16(),
                        headers: parts.headers,
                        body,
                        complete,
                    }
                }
                Err(e) => Captured {
                    status: e.status.as_u16(),
                    headers: HeaderMap::new(),
                    body: Vec::new(),
                    complete: false,
                },
            };
            let Ok(Ok(primary)) = tokio::time::timeout(wait, rx).await else {
                return; // the client went away before the primary's answer ended
            };
            let diff = compare(&spec, &primary, &mirrored).map(|(kinds, mut report)| {
                report["request"] = request;
                report["primary"] = json!({"status": primary.status});
                report["mirror"] =
                    json!({"qualifier": mirror.qualifier, "status": mirrored.status});
                report["at"] = json!(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                );
                (kinds, report)
            });
            reports.record(&mirror.function, diff);
        },
    );
    sent.then_some(Tee { tx, limit })
}

/// Most recent differences kept per function.
const RING: usize = 100;
/// Most differing paths reported per comparison (all are counted).
const MAX_PATHS: usize = 20;

/// An answer as the comparison sees it.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// Whether `body` is the whole body (not cut at the limit, not
    /// abandoned by the client).
    pub(crate) complete: bool,
}

/// The primary's body, streamed on unchanged while a copy is kept for the
/// comparison (up to a limit) and handed over when it ends.
pub(crate) struct TeeBody {
    inner: Body,
    copy: Vec<u8>,
    limit: usize,
    over: bool,
    status: u16,
    headers: HeaderMap,
    tx: Option<oneshot::Sender<Captured>>,
}

impl TeeBody {
    /// `response`, its body teed to `tx` (up to `limit` bytes).
    pub(crate) fn wrap(
        response: axum::response::Response,
        limit: usize,
        tx: oneshot::Sender<Captured>,
    ) -> axum::response::Response {
        let (parts, inner) = response.into_parts();
        let tee = TeeBody {
            inner,
            copy: Vec::new(),
            limit,
            over: false,
            status: parts.status.as_u16(),
            headers: parts.headers.clone(),
            tx: Some(tx),
        };
        axum::response::Response::from_parts(parts, Body::new(tee))
    }

    fn finish(&mut self, ended: bool) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Captured {
                status: self.status,
                headers: std::mem::take(&mut self.headers),
                body: std::mem::take(&mut self.copy),
                complete: ended && !self.over,
            });
        }
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !this.over && this.copy.len() + data.len() <= this.limit {
                        this.copy.extend_from_slice(data);
                    } else {
                        this.over = true;
                        this.copy = Vec::new();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // An empty body may end without a poll.
        let ended = self.inner.is_end_stream();
        self.finish(ended);
    }
}

/// Reads a mirror's body, keeping at most `limit` bytes: the bytes, and
/// whether they are the whole body.
pub(crate) async fn read_limited(
    mut body: switchyard_dispatch::Body,
    limit: usize,
) -> (Vec<u8>, bool) {
    use http_body_util::BodyExt as _;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (Vec::new(), false);
        };
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return (Vec::new(), false);
            }
            out.extend_from_slice(data);
        }
    }
    (out, true)
}

/// Whether path `at` (segments) is covered by pattern `pattern`: the
/// pattern is a prefix of it, `*` matching any key and `[*]` any index.
fn covers(pattern: &[String], at: &[String]) -> bool {
    pattern.len() <= at.len()
        && pattern.iter().zip(at).all(|(p, a)| {
            p == a || (p == "*" && !a.starts_with('[')) || (p == "[*]" && a.starts_with('['))
        })
}

fn path_text(at: &[String]) -> String {
    let mut out = String::from("$");
    for s in at {
        if s.starts_with('[') {
            out.push_str(s);
        } else {
            out.push('.');
            out.push_str(s);
        }
    }
    out
}

/// A route's shadow settings, parsed once per comparison.
struct Paths {
    ignore: Vec<Vec<String>>,
    reveal: Vec<Vec<String>>,
}

impl Paths {
    fn of(spec: &Shadow) -> Self {
        let parse = |v: &[String]| v.iter().filter_map(|p| parse_path(p).ok()).collect();
        Paths {
            ignore: parse(&spec.ignore),
            reveal: parse(&spec.reveal),
        }
    }

    fn shown(&self, at: &[String], v: Option<&Value>) -> Value {
        match v {
            None => json!("(absent)"),
            Some(v) if self.reveal.iter().any(|p| covers(p, at)) => v.clone(),
            Some(_) => json!("(redacted)"),
        }
    }
}

/// Collects the paths where `a` and `b` differ, less the ignored ones.
fn json_diff(
    paths: &Paths,
    at: &mut Vec<String>,
    a: Option<&Value>,
    b: Option<&Value>,
    out: &mut Vec<Value>,
    count: &mut usize,
) {
    if paths.ignore.iter().any(|p| covers(p, at)) {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                at.push(k.clone());
                json_diff(paths, at, x.get(k), y.get(k), out, count);
                at.pop();
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                at.push(format!("[{i}]"));
                json_diff(paths, at, x.get(i), y.get(i), out, count);
                at.pop();
            }
        }
        (a, b) if a != b => {
            *count += 1;
            if out.len() < MAX_PATHS {
                out.push(json!({
                    "path": path_text(at),
                    "primary": paths.shown(at, a),
                    "mirror": paths.shown(at, b),
                }));
            }
        }
        _ => {}
    }
}

fn digest(bytes: &[u8]) -> String {
    switchyard_core::Digest::of(bytes).to_string()
}

/// What differs between the primary's answer and the mirror's: the kinds
/// (`status`, `header`, `body`) and the report, or `None` when they agree.
pub(crate) fn compare(
    spec: &Shadow,
    primary: &Captured,
    mirror: &Captured,
) -> Option<(Vec<&'static str>, Value)> {
    let mut kinds = Vec::new();
    let mut report = serde_json::Map::new();
    if primary.status != mirror.status {
        kinds.push("status");
        report.insert(
            "status".into(),
            json!({"primary": primary.status, "mirror": mirror.status}),
        );
    }
    let mut headers = serde_json::Map::new();
    for name in &spec.headers {
        let name = name.to_ascii_lowercase();
        let get = |h: &HeaderMap| {
            h.get(&name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (a, b) = (get(&primary.headers), get(&mirror.headers));
        if a != b {
            headers.insert(name, json!({"primary": a, "mirror": b}));
        }
    }
    if !headers.is_empty() {
        kinds.push("header");
        report.insert("headers".into(), Value::Object(headers));
    }
    if primary.complete && mirror.complete {
        let parsed = (
            serde_json::from_slice::<Value>(&primary.body),
            serde_json::from_slice::<Value>(&mirror.body),
        );
        match parsed {
            (Ok(a), Ok(b)) => {
                let (mut out, mut count) = (Vec::new(), 0);
                json_diff(
                    &Paths::of(spec),
                    &mut Vec::new(),
                    Some(&a),
                    Some(&b),
                    &mut out,
                    &mut count,
                );
                if count > 0 {
                    kinds.push("body");
                    report.insert("body".into(), json!({"differences": count, "paths": out}));
                }
            }
            _ if primary.body != mirror.body => {
                kinds.push("body");
                report.insert(
                    "body".into(),
                    json!({"digest": {"primary": digest(&primary.body), "mirror": digest(&mirror.body)}}),
                );
            }
            _ => {}
        }
    } else {
        report.insert(
            "body-not-compared".into(),
            json!(format!(
                "a body over shadow.max-body-bytes ({}) or not received whole",
                spec.max_body_bytes
            )),
        );
    }
    (!kinds.is_empty()).then(|| {
        report.insert("kinds".into(), json!(kinds));
        (kinds, Value::Object(report))
    })
}

/// The comparisons of each function: counts and the latest differences.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    map: Mutex<HashMap<String, Report>>,
}

#[derive(Debug, Default)]
struct Report {
    compared: u64,
    differed: u64,
    recent: VecDeque<Value>,
}

impl Reports {
    /// Records one comparison of `function` (`diff`: what differed).
    pub(crate) fn record(&self, function: &str, diff: Option<(Vec<&'static str>, Value)>) {
        SHADOW_COMPARED
            .counter(&[("function", function)])
            .increment(1);
        let mut map = self.map.lock().expect("lock");
        let r = map.entry(function.to_owned()).or_default();
        r.compared += 1;
        if let Some((kinds, report)) = diff {
            for kind in kinds {
                SHADOW_DIFF
                    .counter(&[("function", function), ("kind", kind)])
                    .increment(1);
            }
            r.differed += 1;
            if r.recent.len() == RING {
                r.recent.pop_front();
            }
            r.recent.push_back(report);
        }
    }

    /// `function`'s report: counts and the latest differences, newest
    /// last.
    pub(crate) fn report(&self, function: &str) -> Value {
        let map = self.map.lock().expect("lock");
        match map.get(function) {
            Some(r) => json!({
                "function": function,
                "compared": r.compared,
                "differed": r.differed,
                "recent": r.recent,
            }),
            None => json!({"function": function, "compared": 0, "differed": 0, "recent": []}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(status: u16, body: &str) -> Captured {
        Captured {
            status,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            complete: true,
        }
    }

    fn spec(json: &str) -> Shadow {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn json_bodies_differ_by_path_less_the_ignored_and_redacted_unless_revealed() {
        let s = spec(
            r#"{"ignore":["$.requestId","$.items[*].at"],"reveal":["$.total"],"headers":["x-v"]}"#,
        );
        let a = captured(
            200,
            r#"{"requestId":"a","total":10,"user":"alice","items":[{"id":1,"at":5}]}"#,
        );
        let b = captured(
            200,
            r#"{"requestId":"b","total":12,"user":"bob","items":[{"id":1,"at":6},{"id":2}]}"#,
        );
        let (kinds, report) = compare(&s, &a, &b).unwrap();
        assert_eq!(kinds, ["body"]);
        let paths = &report["body"]["paths"];
        assert_eq!(report["body"]["differences"], 3);
        assert_eq!(
            paths[0],
            json!({"path":"$.items[1]","primary":"(absent)","mirror":"(redacted)"})
        );
        assert_eq!(paths[1], json!({"path":"$.total","primary":10,"mirror":12}));
        assert_eq!(
            paths[2],
            json!({"path":"$.user","primary":"(redacted)","mirror":"(redacted)"})
        );
        // Only ignored fields differ: no difference.
        let c = captured(
            200,
            r#"{"requestId":"c","total":10,"user":"alice","items":[{"id":1,"at":9}]}"#,
        );
        assert!(compare(&s, &a, &c).is_none());
    }

    #[test]
    fn status_headers_and_other_bodies() {
        let s = spec(r#"{"headers":["X-V"]}"#);
        let mut a = captured(200, "plain text");
        let mut b = captured(503, "other text");
        a.headers.insert("x-v", "1".parse().unwrap());
        b.headers.insert("x-v", "2".parse().unwrap());
        let (kinds, report) = compare(&s, &a, &b).unwrap();
        assert_eq!(kinds, ["status", "header", "body"]);
        assert_eq!(
            report["headers"]["x-v"],
            json!({"primary":"1","mirror":"2"})
        );
        assert!(
            report["body"]["digest"]["primary"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        // Bodies not received whole are not compared.
        b.complete = false;
        b.status = 200;
        b.headers = a.headers.clone();
        assert!(compare(&s, &a, &b).is_none());
    }

    #[test]
    fn paths_cover_what_is_below_them() {
        let p = |s: &str| parse_path(s).unwrap();
        assert!(covers(&p("$.a"), &p("$.a.b[3]")));
        assert!(covers(&p("$.a[*].b"), &p("$.a[7].b")));
        assert!(!covers(&p("$.a[*].b"), &p("$.a.x.b")));
        assert!(covers(&p("$.*.id"), &p("$.x.id")));
        assert!(!covers(&p("$.a.b"), &p("$.a")));
    }
}
