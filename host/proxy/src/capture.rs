//! `serve --capture FILE`: a sample of the decided requests, written as the
//! request JSON lines `switchyard replay` (and `decide --requests`) read:
//! `{"function","method","path","headers"}` with only the headers an
//! allowlist names, never a body. Written by a thread of its own through a
//! bounded queue, so a request never waits on the disk: when the queue is
//! full the line is dropped and counted (`switchyard_capture_dropped_total`).
//! The file is rotated at a size limit (FILE becomes FILE.1).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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

/// Most bytes batched before they are written.
const BATCH_BYTES: usize = 64 << 10;

/// The writer thread: batches lines and appends each batch whole when the
/// queue runs dry (a reader sees every line within moments, and a busy
/// writer costs one write a batch); rotates past `max_bytes`. Before each
/// batch it checks that `path` is still the file it writes (deleted or
/// moved aside: a new one is made). A batch that fails (a full disk) is
/// cut back off the file, so no partial line is left; its lines are
/// dropped and counted, with one warning per run of failures.
fn write_lines(rx: Receiver<Msg>, path: PathBuf, file: File, size: u64, max_bytes: u64) {
    let mut out = Out {
        path,
        file,
        size,
        max_bytes,
        batch: Vec::new(),
        lines: 0,
        failing: false,
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                out.write_batch();
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Msg::Line(line) => {
                out.batch.extend_from_slice(line.as_bytes());
                out.batch.push(b'\n');
                out.lines += 1;
                // Past the size limit the batch is written at once, so the
                // file rotates at the line that passed it.
                if out.batch.len() >= BATCH_BYTES
                    || out.size + out.batch.len() as u64 >= out.max_bytes
                {
                    out.write_batch();
                }
            }
            Msg::Flush(ack) => {
                out.write_batch();
                let _ = ack.send(());
            }
        }
    }
    out.write_batch();
}

/// The capture file being written, and the lines not written yet.
struct Out {
    path: PathBuf,
    file: File,
    /// The file's length: where the next batch starts.
    size: u64,
    max_bytes: u64,
    batch: Vec<u8>,
    lines: u64,
    failing: bool,
}

impl Out {
    fn write_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if let Err(e) = self.reopen_if_gone() {
            return self.failed(e);
        }
        if let Err(e) = (&self.file).write_all(&self.batch) {
            // Whatever part of the batch reached the file is cut off.
            let _ = self.file.set_len(self.size);
            return self.failed(e);
        }
        self.size += self.batch.len() as u64;
        self.batch.clear();
        self.lines = 0;
        if self.failing {
            tracing::info!(target: "switchyard::capture", path = %self.path.display(), "writing the capture file again");
            self.failing = false;
        }
        if self.size >= self.max_bytes
            && let Err(e) = self.rotate()
        {
            tracing::warn!(target: "switchyard::capture", path = %self.path.display(), error = %e, "cannot rotate the capture file");
        }
    }

    /// The batch's lines dropped and counted; the first failure of a run
    /// logged.
    fn failed(&mut self, e: io::Error) {
        crate::catalogue::CAPTURE_DROPPED
            .counter(&[])
            .increment(self.lines);
        if !self.failing {
            tracing::warn!(target: "switchyard::capture", path = %self.path.display(), error = %e, dropped = self.lines, "cannot write the capture file; sampled lines are dropped (switchyard_capture_dropped_total) until it works again");
            self.failing = true;
        }
        self.batch.clear();
        self.lines = 0;
    }

    /// A new file at `path` when the one written was deleted or moved
    /// aside.
    fn reopen_if_gone(&mut self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let ours = self.file.metadata()?;
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
        if !same {
            self.file = open(&self.path)?;
            self.size = self.file.metadata()?.len();
            tracing::warn!(target: "switchyard::capture", path = %self.path.display(), "the capture file was deleted or moved; writing a new one");
        }
        Ok(())
    }

    /// FILE becomes FILE.1 (replacing an older one); writing goes on in a
    /// new FILE.
    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(&self.path, old)?;
        self.file = open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}
