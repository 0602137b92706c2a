//! Every answer to a request for a function is counted once, in
//! `switchyard_requests_total` and the live view: decided ones under their
//! decision, the rest (a 400, 404, 413, 431 before any decision) under
//! `target="none"`, `traffic="none"`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use metrics::{Counter, Histogram};

use crate::Proxy;

/// Counts a front-end answer under its labels and returns it.
pub(crate) fn counted(
    p: &Proxy,
    response: Response,
    function: &str,
    target: &str,
    traffic: &'static str,
) -> Response {
    let status = response.status().as_u16();
    let mut handles = p.handles();
    handles
        .request(function, target, traffic, status)
        .increment(1);
    handles.activity.record(function, target, traffic, status);
    response
}

/// Counts an answer that names no routed function, under `function="-"`
/// (so callers cannot mint label values).
pub(crate) fn undecided(p: &Proxy, response: Response) -> Response {
    counted(p, response, "-", "none", "none")
}

/// Counts an undecided answer of a routed function under the function.
pub(crate) fn for_function(p: &Proxy, response: Response, function: &str) -> Response {
    counted(p, response, function, "none", "none")
}

/// Counts a decided answer when its body ends (and, from `started`, the
/// decision, times it in `switchyard_request_duration_seconds`), so an upstream that closes
/// mid-body is counted as what the caller got: a failed answer, status
/// `502` (the head said otherwise, but the caller's client reports an
/// error), and a failure of the version for its guard (`guard`). An
/// answer whose body is already whole is counted at once. The live view
/// counts it under the head's status.
pub(crate) fn counted_at_end(
    p: &Proxy,
    response: Response,
    function: &str,
    target: &str,
    traffic: &'static str,
    guard: Option<crate::guard::Pending>,
    started: Option<Instant>,
) -> Response {
    if http_body::Body::is_end_stream(response.body()) {
        if let Some(g) = guard {
            g.settle(false);
        }
        if let Some(t) = started {
            let took = t.elapsed();
            p.handles().duration(function, target, traffic).record(took);
            if let Some(emf) = &p.config.emf {
                emf.emit(function, target, traffic, response.status().as_u16(), took);
            }
        }
        return counted(p, response, function, target, traffic);
    }
    let status = response.status().as_u16();
    let mut handles = p.handles();
    let answered = handles.request(function, target, traffic, status).clone();
    let cut = handles.request(function, target, traffic, 502).clone();
    let timed = started.map(|t| (t, handles.duration(function, target, traffic).clone()));
    let emf = match (&p.config.emf, started) {
        (Some(emf), Some(_)) => Some(Box::new(EmfPending {
            emf: emf.clone(),
            function: function.to_owned(),
            target: target.to_owned(),
            traffic,
            status,
        })),
        _ => None,
    };
    handles.activity.record(function, target, traffic, status);
    drop(handles);
    response.map(|inner| {
        Body::new(Ending {
            inner,
            end: Some(End {
                answered,
                cut,
                guard,
                timed,
                emf,
            }),
        })
    })
}

/// What is counted when an answer's body ends.
struct End {
    /// The request under the status its head gave.
    answered: Counter,
    /// The request under `502`: the body broke off.
    cut: Counter,
    guard: Option<crate::guard::Pending>,
    /// When the request was decided, and its duration's histogram.
    timed: Option<(Instant, Histogram)>,
    /// Its EMF line's labels, when the host writes them.
    emf: Option<Box<EmfPending>>,
}

/// What a request's EMF line says, but its duration and final status.
struct EmfPending {
    emf: std::sync::Arc<crate::Emf>,
    function: String,
    target: String,
    traffic: &'static str,
    /// The head's status.
    status: u16,
}

impl End {
    fn settle(self, cut: bool) {
        self.time(cut);
        if cut {
            self.cut.increment(1);
        } else {
            self.answered.increment(1);
        }
        if let Some(g) = self.guard {
            g.settle(cut);
        }
    }

    /// Records how long the request took, to its end or its caller leaving
    /// (and writes its EMF line: `502` when its body broke off).
    fn time(&self, cut: bool) {
        if let Some((started, h)) = &self.timed {
            let took = started.elapsed();
            h.record(took);
            if let Some(e) = &self.emf {
                let status = if cut { 502 } else { e.status };
                e.emf.emit(&e.function, &e.target, e.traffic, status, took);
            }
        }
    }
}

/// An answer's body that counts the request when it ends: at its last
/// frame, at an error (cut off), or when dropped first (the caller left:
/// counted as answered, and not judged by the guard).
struct Ending {
    inner: Body,
    end: Option<End>,
}

impl http_body::Body for Ending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let cut = match &polled {
            Poll::Pending => return polled,
            Poll::Ready(Some(Ok(_))) if !self.inner.is_end_stream() => return polled,
            Poll::Ready(Some(Ok(_)) | None) => false,
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(target: "switchyard::dispatch", error = %e, "the version's answer broke off mid-body; counted as 502");
                true
            }
        };
        if let Some(end) = self.end.take() {
            end.settle(cut);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end.time(false);
            end.answered.increment(1);
        }
    }
}
