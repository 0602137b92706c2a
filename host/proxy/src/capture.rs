//! `serve --capture FILE`: a sample of the decided requests, written as the
//! request JSON lines `switchyard replay` (and `decide --requests`) read:
//! `{"function","method","path","headers"}` with only the headers an
//! allowlist names, never a body. Written by a thread of its own through a
//! bounded queue, so a request never waits on the disk: when the queue is
//! full the line is dropped and counted (`switchyard_capture_dropped_total`).
//! The file is rotated at a size limit (FILE becomes FILE.1).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};

use http::HeaderName;
use serde_json::{Map, Value};
use switchyard_core::Request;

/// Lines waiting for the writer at most; more are dropped and counted.
const QUEUE: usize = 4096;

/// What to capture and where.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// The file, appended to (created when missing).
    pub path: PathBuf,
    /// Capture one decided request in this many (counted per serving
    /// thread; each captures its first). 0 captures none.
    pub sample: u64,
    /// The headers kept in a captured request (case-insensitive); all
    /// others, cookies and credentials included, are left out.
    pub headers: Vec<String>,
    /// Rotate when the file grows past this many bytes.
    pub max_bytes: u64,
}

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

/// A running capture.
pub struct Capture {
    tx: SyncSender<Msg>,
    sample: u64,
    headers: Vec<HeaderName>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("sample", &self.sample)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Opens the file and starts the writer thread.
    pub fn start(config: CaptureConfig) -> io::Result<Arc<Capture>> {
        let headers = config
            .headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--capture-header {h:?} is not a header name"),
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let file = open(&config.path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = sync_channel(QUEUE);
        let path = config.path.clone();
        let max_bytes = config.max_bytes.max(1);
        std::thread::Builder::new()
            .name("switchyard-capture".into())
            .spawn(move || write_lines(rx, path, file, size, max_bytes))?;
        Ok(Arc::new(Capture {
            tx,
            sample: config.sample,
            headers,
        }))
    }

    /// Whether the `seq`-th decision of a serving thread is captured.
    pub(crate) fn sampled(&self, seq: u64) -> bool {
        self.sample > 0 && seq.is_multiple_of(self.sample)
    }

    /// Queues `req` (its allowlisted headers only), or drops and counts it
    /// when the writer is behind. (The proxy calls it for the sampled
    /// decisions; an embedder may for its own.)
    pub fn record(&self, req: &Request) {
        let mut headers = Map::new();
        for name in &self.headers {
            if let Some(v) = req.header_named(name) {
                headers.insert(name.as_str().to_owned(), Value::String(v.into_owned()));
            }
        }
        let line = serde_json::json!({
            "function": req.function,
            "method": req.method,
            "path": req.path,
            "headers": headers,
        })
        .to_string();
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            crate::catalogue::CAPTURE_DROPPED.counter(&[]).increment(1);
        }
    }

    /// Waits until every line queued so far is in the file.
    pub fn flush(&self) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the capture file {}: {e}", path.display()),
            )
        })
}

/// The writer thread: appends lines, rotates past `max_bytes`, and
/// flushes whenever the queue runs dry (a reader sees every line within
/// moments, and a busy one costs one write a batch).
fn write_lines(rx: Receiver<Msg>, path: PathBuf, file: File, mut size: u64, max_bytes: u64) {
    let mut out = BufWriter::new(file);
    let mut failing = false;
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                if let Err(e) = out.flush() {
                    report(&path, e, &mut failing);
                }
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Msg::Line(line) => {
                let written = out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"));
                match written {
                    Ok(()) => {
                        failing = false;
                        size += line.len() as u64 + 1;
                    }
                    Err(e) => report(&path, e, &mut failing),
                }
                if size >= max_bytes {
                    match rotate(&path, &mut out) {
                        Ok(()) => size = 0,
                        Err(e) => report(&path, e, &mut failing),
                    }
                }
            }
            Msg::Flush(ack) => {
                if let Err(e) = out.flush() {
                    report(&path, e, &mut failing);
                }
                let _ = ack.send(());
            }
        }
    }
    let _ = out.flush();
}

/// FILE becomes FILE.1 (replacing an older one); writing goes on in a new
/// FILE.
fn rotate(path: &Path, out: &mut BufWriter<File>) -> io::Result<()> {
    out.flush()?;
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    std::fs::rename(path, old)?;
    *out = BufWriter::new(open(path)?);
    Ok(())
}

/// Logs the first failure of a run of them.
fn report(path: &Path, e: io::Error, failing: &mut bool) {
    if !*failing {
        tracing::warn!(target: "switchyard::capture", path = %path.display(), error = %e, "cannot write the capture file; lines are lost until it works again");
    }
    *failing = true;
}
