//! The upstream socket budget: `http` targets' connections are made
//! within a number of open sockets set at start (what the open-file limit
//! leaves beside the client connections), so a burst to a second version,
//! while the first version's connections sit idle in the pool, never meets
//! the process's open-file limit (`EMFILE` on a client's accept, or on the
//! next connect).
//!
//! A connection that finds the budget used up closes idle sockets first.
//! Each socket knows whether a request is on it: a write after a read
//! starts the next request (HTTP/1 sends one at a time), and its answer's
//! body ending makes the socket idle again unless another request has
//! started since (the pool may hand the socket on before the body's reader
//! sees its end, so each answer carries the number of the request it
//! answers). An idle socket is closed as the upstream closing it would be:
//! hyper reads an end of stream on an idle connection and drops it, and a
//! request that had just taken it from the pool, not yet written, is
//! handed back and retried by hyper's client on another connection, as
//! after any idle close. The connection then waits
//! for a socket to close, within the connect timeout; the error after
//! names the budget. HTTP/2 sockets, which carry many requests at once,
//! are not closed this way.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::catalogue::{UPSTREAM_SOCKETS, UPSTREAM_SOCKETS_RECLAIMED};

/// Idle sockets closed at most per connection that finds the budget used
/// up: enough for a burst's connections to find room in a few rounds,
/// without emptying the pool at once.
const RECLAIM_AT_ONCE: usize = 8;

/// The sockets `http` targets may hold open at once.
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    max: usize,
    /// The sockets made, for closing idle ones.
    open: Mutex<Open>,
}

/// The sockets made, closed ones among them until the list is pruned:
/// when it is walked, and whenever it doubles since the last pruning, so
/// a host that never runs out keeps it in proportion to the sockets open.
#[derive(Default)]
struct Open {
    sockets: Vec<Weak<Socket>>,
    prune_at: usize,
}

impl Open {
    /// Least length at which the list is pruned as it grows.
    const PRUNE_FROM: usize = 64;

    fn prune(&mut self) {
        self.sockets.retain(|s| s.strong_count() > 0);
        self.prune_at = (self.sockets.len() * 2).max(Self::PRUNE_FROM);
    }
}

impl Budget {
    pub(crate) fn new(max: Option<usize>) -> Arc<Budget> {
        let max = max
            .unwrap_or(Semaphore::MAX_PERMITS)
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(max)),
            max,
            open: Mutex::default(),
        })
    }

    /// A socket's place in the budget: at once when one is free, else
    /// after idle sockets are closed, within `within`.
    pub(crate) async fn reserve(&self, within: Duration) -> Result<OwnedSemaphorePermit, String> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        self.reclaim();
        match tokio::time::timeout(within, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(format!(
                "all {} upstream sockets are in use, none idle (--max-upstream-sockets; raise the open-file limit, ulimit -n, or lower --max-connections)",
                self.max
            )),
        }
    }

    /// Closes up to [`RECLAIM_AT_ONCE`] idle sockets, oldest first.
    fn reclaim(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.prune();
        let mut closed = 0;
        for socket in open.sockets.iter().filter_map(Weak::upgrade) {
            if closed == RECLAIM_AT_ONCE {
                break;
            }
            if socket.idle() && !socket.evict.swap(true, Ordering::AcqRel) {
                socket.read.wake();
                closed += 1;
            }
        }
        drop(open);
        if closed > 0 {
            UPSTREAM_SOCKETS_RECLAIMED
                .counter(&[])
                .increment(closed as u64);
            tracing::debug!(target: "switchyard::dispatch", closed, max = self.max, "the upstream socket budget is used up; idle sockets closed");
        }
    }

    /// `io` counted in the budget (its place, `permit`, is given back when
    /// it is dropped).
    pub(crate) fn hold<T>(&self, io: T, permit: OwnedSemaphorePermit) -> Budgeted<T> {
        let socket = Arc::new(Socket::default());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.sockets.len() >= open.prune_at {
            open.prune();
        }
        open.sockets.push(Arc::downgrade(&socket));
        drop(open);
        UPSTREAM_SOCKETS.gauge(&[]).increment(1.0);
        Budgeted {
            inner: io,
            socket,
            _permit: permit,
        }
    }
}

/// What is known of one upstream socket.
#[derive(Default, Debug)]
pub(crate) struct Socket {
    /// The number of the request on it (from 1; 0: none yet), times two,
    /// plus one while that request is busy (written, and its answer's
    /// body not ended).
    state: AtomicU64,
    /// Bytes were read since the last write: the next write starts the
    /// next request.
    read_since_write: AtomicBool,
    /// Negotiated HTTP/2: never closed as idle.
    h2: AtomicBool,
    /// Asked to close while idle.
    evict: AtomicBool,
    /// Who waits to read from it (hyper, on an idle connection too).
    read: AtomicWaker,
}

impl Socket {
    /// Between requests, after one at least: a fresh connection is made
    /// for a request about to be written on it (and hyper takes an end of
    /// stream on it for an error, not for an idle close).
    fn idle(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        state != 0 && state & 1 == 0 && !self.h2.load(Ordering::Acquire)
    }

    /// The answer to request `request` ended (or was dropped): idle again,
    /// unless a later request has started.
    fn answered(&self, request: u64) {
        let _ = self.state.compare_exchange(
            request << 1 | 1,
            request << 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// A write: the start of the next request after a read, else more of
    /// the current one. Either way busy, and no longer to be closed.
    fn writing(&self) {
        let fresh = self.state.load(Ordering::Relaxed) == 0;
        if fresh
            || self.read_since_write.load(Ordering::Relaxed)
                && self.read_since_write.swap(false, Ordering::AcqRel)
        {
            let _ = self
                .state
                .try_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    Some(((s >> 1) + 1) << 1 | 1)
                });
        } else if self.state.load(Ordering::Relaxed) & 1 == 0 {
            self.state.fetch_or(1, Ordering::AcqRel);
        }
        if self.evict.load(Ordering::Relaxed) {
            self.evict.store(false, Ordering::Release);
        }
    }
}

/// Put on each answer from a budgeted socket (hyper's client copies a
/// connection's extras onto each answer, by `clone`, before the socket can
/// go back to the pool): the socket, and the number of the request the
/// answer is for.
#[derive(Debug)]
pub(crate) struct SocketTag {
    socket: Arc<Socket>,
    request: u64,
}

impl Clone for SocketTag {
    fn clone(&self) -> Self {
        SocketTag {
            socket: self.socket.clone(),
            request: self.socket.state.load(Ordering::Acquire) >> 1,
        }
    }
}

/// A connection counted in the [`Budget`].
pub(crate) struct Budgeted<T> {
    inner: T,
    socket: Arc<Socket>,
    _permit: OwnedSemaphorePermit,
}

impl<T> Drop for Budgeted<T> {
    fn drop(&mut self) {
        UPSTREAM_SOCKETS.gauge(&[]).decrement(1.0);
    }
}

impl<T: Read + Unpin> Read for Budgeted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.socket.evict.load(Ordering::Acquire) && self.socket.idle() {
            // Read as the end of the stream: hyper closes an idle
            // connection whose peer closed it.
            return Poll::Ready(Ok(()));
        }
        self.socket.read.register(cx.waker());
        // Read through a buffer of our own over the same memory, to see
        // how many bytes came (as hyper-util's TokioIo does).
        // SAFETY: `as_mut` hands out the cursor's unfilled memory, which
        // the inner read only writes; `advance` then marks exactly the
        // bytes it wrote (and so initialised) as filled.
        let n = unsafe {
            let mut own = hyper::rt::ReadBuf::uninit(buf.as_mut());
            match Pin::new(&mut self.inner).poll_read(cx, own.unfilled()) {
                Poll::Ready(Ok(())) => own.filled().len(),
                other => return other,
            }
        };
        if n > 0 {
            self.socket.read_since_write.store(true, Ordering::Release);
        }
        // SAFETY: see above.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<T: Write + Unpin> Write for Budgeted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.socket.writing();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.socket.writing();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Budgeted<T> {
    fn connected(&self) -> Connected {
        let connected = self.inner.connected();
        if connected.is_negotiated_h2() {
            self.socket.h2.store(true, Ordering::Release);
        }
        connected.extra(SocketTag {
            socket: self.socket.clone(),
            request: 0,
        })
    }
}

/// An answer's body that marks its socket idle again when it ends (or is
/// dropped first).
pub(crate) struct Released<B> {
    inner: B,
    tag: Option<SocketTag>,
}

impl<B: http_body::Body> Released<B> {
    /// `body`, from the socket `tag` names (none: not budgeted).
    pub(crate) fn new(body: B, tag: Option<SocketTag>) -> Self {
        let mut released = Released { inner: body, tag };
        if released.inner.is_end_stream() {
            released.release();
        }
        released
    }

    fn release(&mut self) {
        if let Some(tag) = self.tag.take() {
            tag.socket.answered(tag.request);
        }
    }
}

impl<B> Drop for Released<B> {
    fn drop(&mut self) {
        if let Some(tag) = self.tag.take() {
            tag.socket.answered(tag.request);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Released<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if !self.inner.is_end_stream() => {}
            Poll::Ready(_) => self.release(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer's tag, as hyper's client copies it onto an answer.
    fn tag(socket: &Arc<Socket>) -> SocketTag {
        SocketTag {
            socket: socket.clone(),
            request: 0,
        }
        .clone()
    }

    #[test]
    fn the_list_of_sockets_stays_in_proportion_to_those_open() {
        let budget = Budget::new(Some(16));
        let mut held = Vec::new();
        for i in 0..10_000 {
            if held.len() == 16 {
                held.remove(i % 16);
            }
            let permit = budget.permits.clone().try_acquire_owned().unwrap();
            held.push(budget.hold((), permit));
        }
        let open = budget.open.lock().unwrap();
        assert!(
            open.sockets.len() <= 2 * Open::PRUNE_FROM,
            "{} sockets listed, 16 open",
            open.sockets.len()
        );
    }

    #[test]
    fn a_late_end_of_an_earlier_answer_leaves_the_next_request_busy() {
        let s = Arc::new(Socket::default());
        assert!(!s.idle(), "a fresh connection is for a request on its way");
        s.writing();
        s.read_since_write.store(true, Ordering::Release);
        let first = tag(&s);
        assert_eq!(first.request, 1);
        // The pool hands the socket on before the first answer's reader
        // sees its end: the second request is written.
        s.writing();
        s.answered(first.request);
        assert!(!s.idle(), "the second request is still on it");
        s.read_since_write.store(true, Ordering::Release);
        let second = tag(&s);
        assert_eq!(second.request, 2);
        s.answered(second.request);
        assert!(s.idle());
        // More writes of one request (its body) keep its number.
        s.writing();
        s.writing();
        assert_eq!(tag(&s).request, 3);
    }
}
