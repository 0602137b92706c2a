//! The `dir` store: a local folder, the embedded default. Human-readable:
//!
//! ```text
//! <root>/functions/<function>/<version>.json    one file per route-config version
//! <root>/policies/sha256-<hex>.wasm              policy blobs, content-addressed
//! <root>/policies/sha256-<hex>.json              other blobs (fixture cases)
//! <root>/signatures/sha256-<hex>/<key id>.json   their signatures, one per key
//! <root>/rollouts/<function>/<revision>.json     a rollout's state, the last few revisions
//! ```
//!
//! Versions are files, so history and rollback work as in SSM. A new version
//! is written aside and hard-linked in under the next free number, so two
//! writers never overwrite each other and no reader sees half a version.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use switchyard_core::{Digest, RouteConfig};

use crate::blob;
use crate::store::{
    ConfigStore, Entry, Result, StoreError, StoredRoute, check_function_name, decode_route,
    encode_route,
};

/// Revisions of a rollout document a `dir` store keeps (the older are
/// removed): enough for a reader that listed just before a write.
const ROLLOUT_REVISIONS_KEPT: u64 = 4;

/// A store in a local folder.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Ok(DirStore { root: root.into() })
    }

    fn function_dir(&self, function: &str) -> Result<PathBuf> {
        check_function_name(function)?;
        Ok(self.root.join("functions").join(function))
    }

    /// Where a blob is kept: `.wasm` for a WebAssembly module or
    /// component, `.json` for anything else (fixture cases).
    fn blob_path_for(&self, digest: &Digest, bytes: &[u8]) -> PathBuf {
        let ext = if bytes.starts_with(b"\0asm") {
            "wasm"
        } else {
            "json"
        };
        self.root
            .join("policies")
            .join(format!("sha256-{}.{ext}", digest.hex()))
    }

    /// Where a blob may be: the first of these that exists.
    fn blob_paths(&self, digest: &Digest) -> [PathBuf; 2] {
        ["wasm", "json"].map(|ext| {
            self.root
                .join("policies")
                .join(format!("sha256-{}.{ext}", digest.hex()))
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let [wasm, json] = self.blob_paths(digest);
        if json.is_file() && !wasm.is_file() {
            json
        } else {
            wasm
        }
    }

    fn signature_dir(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("signatures")
            .join(format!("sha256-{}", digest.hex()))
    }

    fn io(&self, what: &Path, e: std::io::Error) -> StoreError {
        StoreError::Unavailable {
            store: self.uri(),
            message: format!("{}: {e}", what.display()),
        }
    }

    /// The UTF-8 names in folder `dir`; none when it does not exist yet.
    fn names_in(&self, dir: &Path) -> Result<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(dir, e)),
        }
    }

    /// Version numbers present for a function, ascending.
    fn versions(&self, function: &str) -> Result<Vec<u64>> {
        let dir = self.function_dir(function)?;
        let mut versions: Vec<u64> = self
            .names_in(&dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    fn read_version(&self, function: &str, version: u64) -> Result<StoredRoute> {
        let path = self.function_dir(function)?.join(format!("{version}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!(
                    "route config of {function} version {version}"
                )));
            }
            Err(e) => return Err(self.io(&path, e)),
        };
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .map(rfc3339);
        let note = std::fs::read_to_string(path.with_extension("note"))
            .ok()
            .map(|n| n.trim_end().to_owned());
        Ok(StoredRoute {
            function: function.to_owned(),
            version,
            modified,
            config: decode_route(function, version, &text)?,
            by: owner(&path),
            note,
        })
    }
}

/// The name of the user owning `path` (from `/etc/passwd`; else the uid).
#[cfg(unix)]
fn owner(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).ok()?.uid();
    Some(user_name(uid))
}

/// The name of user `uid`, looked up once per process: every poll reads
/// each function's latest version, and `/etc/passwd` per read was most of
/// an idle host's work with thousands of functions.
#[cfg(unix)]
fn user_name(uid: u32) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(name) = names.lock().unwrap_or_else(|e| e.into_inner()).get(&uid) {
        return name.clone();
    }
    let name = passwd_name(uid).unwrap_or_else(|| format!("uid {uid}"));
    names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid, name.clone());
    name
}

/// Reads of `/etc/passwd`, counted for the test that they are not per read.
#[cfg(all(unix, test))]
static PASSWD_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(unix)]
fn passwd_name(uid: u32) -> Option<String> {
    #[cfg(test)]
    PASSWD_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let uid = uid.to_string();
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_owned())
    })
}

#[cfg(not(unix))]
fn owner(_: &Path) -> Option<String> {
    None
}

/// Formats a time as RFC 3339 UTC, seconds precision.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t)
        .format(FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl DirStore {
    /// Runs `f` on the blocking pool, so file system calls (many per poll
    /// with thousands of functions) never stall the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DirStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Unavailable {
                store: self.uri(),
                message: format!("the file task failed: {e}"),
            })?
    }

    fn latest_now(&self, functions: &[String]) -> Result<Vec<Entry>> {
        // The store as a whole fails only when its root is unreadable.
        std::fs::metadata(&self.root).map_err(|e| self.io(&self.root, e))?;
        Ok(functions
            .iter()
            .map(|f| match self.versions(f)?.last() {
                Some(&v) => self.read_version(f, v).map(Some),
                None => Ok(None),
            })
            .collect())
    }

    fn history_now(&self, function: &str) -> Result<Vec<Result<StoredRoute>>> {
        Ok(self
            .versions(function)?
            .into_iter()
            .map(|v| self.read_version(function, v))
            .collect())
    }

    /// The functions with a version. A listing unroutes the functions it
    /// leaves out, so it is all or an error: a folder that cannot be read
    /// (out of descriptors, permissions) fails the whole listing rather
    /// than dropping that function from it.
    fn functions_now(&self) -> Result<Vec<String>> {
        std::fs::metadata(&self.root).map_err(|e| self.io(&self.root, e))?;
        let mut names = Vec::new();
        for name in self.names_in(&self.root.join("functions"))? {
            if check_function_name(&name).is_ok() && !self.versions(&name)?.is_empty() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes the version whole, aside, then links it in under the next
    /// free number: a reader never sees half a version, and a writer
    /// killed halfway leaves only a hidden temporary file.
    /// Writes `text` as the next version; with `expected`, only as version
    /// `expected + 1` (creating that file fails when another writer took
    /// it: the compare-and-swap).
    fn put_route_now(&self, function: &str, text: &str, expected: Option<u64>) -> Result<u64> {
        let dir = self.function_dir(function)?;
        std::fs::create_dir_all(&dir).map_err(|e| self.io(&dir, e))?;
        let text = format!("{text}\n");
        // A name no other writer (another process, another container on
        // the same volume with the same pid) will pick: created, never
        // truncated.
        let (tmp, mut file) = loop {
            let tmp = dir.join(format!(
                ".new.{}.{:016x}",
                std::process::id(),
                crate::random::unique()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(&tmp, e)),
            }
        };
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        let linked = written
            .map_err(|e| self.io(&tmp, e))
            .and_then(|()| self.link_next(function, &dir, &tmp, &text, expected));
        let _ = std::fs::remove_file(&tmp);
        linked
    }

    /// Links `tmp` in as the next free version. A hard link fails when
    /// the name exists (like `O_EXCL`) and shows the whole file at once;
    /// where the file system has no hard links, the version is written in
    /// place with `O_EXCL` instead.
    fn link_next(
        &self,
        function: &str,
        dir: &Path,
        tmp: &Path,
        text: &str,
        expected: Option<u64>,
    ) -> Result<u64> {
        let conflict = |s: &Self| -> Result<u64> {
            Err(StoreError::Conflict {
                function: function.to_owned(),
                expected: expected.unwrap_or_default(),
                found: s.versions(function)?.last().copied().unwrap_or(0),
            })
        };
        loop {
            let latest = self.versions(function)?.last().copied().unwrap_or(0);
            if expected.is_some_and(|e| e != latest) {
                return conflict(self);
            }
            let version = latest + 1;
            let path = dir.join(format!("{version}.json"));
            let linked = match std::fs::hard_link(tmp, &path) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .and_then(|mut f| {
                            f.write_all(text.as_bytes())?;
                            f.sync_all()
                        })
                }
                other => other,
            };
            match linked {
                Ok(()) => return Ok(version),
                // Another writer took this number: take the next one, or
                // (compare-and-swap) say so.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if expected.is_some() {
                        return conflict(self);
                    }
                    continue;
                }
                Err(e) => return Err(self.io(&path, e)),
            }
        }
    }

    fn rollout_dir(&self, function: &str) -> Result<PathBuf> {
        check_function_name(function)?;
        Ok(self.root.join("rollouts").join(function))
    }

    /// The revisions of `function`'s rollout document, ascending.
    fn rollout_revisions(&self, dir: &Path) -> Result<Vec<u64>> {
        let mut revisions: Vec<u64> = self
            .names_in(dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
            .collect();
        revisions.sort_unstable();
        Ok(revisions)
    }

    fn rollout_now(&self, function: &str) -> Result<Option<(String, u64)>> {
        let dir = self.rollout_dir(function)?;
        // A revision pruned between the listing and the read: list again.
        for _ in 0..3 {
            let Some(&revision) = self.rollout_revisions(&dir)?.last() else {
                return Ok(None);
            };
            let path = dir.join(format!("{revision}.json"));
            match std::fs::read_to_string(&path) {
                Ok(text) => return Ok(Some((text.trim_end().to_owned(), revision))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&path, e)),
            }
        }
        Err(StoreError::Unavailable {
            store: self.uri(),
            message: format!("the rollout of {function} changed on every read"),
        })
    }

    /// Writes revision `expected + 1` aside and hard-links it in, which
    /// fails when another writer took that revision first; keeps the last
    /// few revisions.
    fn put_rollout_now(&self, function: &str, doc: &str, expected: u64) -> Result<u64> {
        let dir = self.rollout_dir(function)?;
        std::fs::create_dir_all(&dir).map_err(|e| self.io(&dir, e))?;
        let conflict = |s: &Self| -> Result<u64> {
            Err(StoreError::Conflict {
                function: format!("the rollout of {function}"),
                expected,
                found: s.rollout_revisions(&dir)?.last().copied().unwrap_or(0),
            })
        };
        let latest = self.rollout_revisions(&dir)?.last().copied().unwrap_or(0);
        if latest != expected {
            return conflict(self);
        }
        let revision = expected + 1;
        let tmp = dir.join(format!(
            ".new.{}.{:016x}",
            std::process::id(),
            crate::random::unique()
        ));
        let path = dir.join(format!("{revision}.json"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{doc}\n").as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| self.io(&tmp, e))
            .and_then(|()| match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(revision),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => conflict(self),
                Err(e) => Err(self.io(&path, e)),
            });
        let _ = std::fs::remove_file(&tmp);
        if written.is_ok() {
            for old in self.rollout_revisions(&dir)? {
                if old + ROLLOUT_REVISIONS_KEPT <= revision {
                    let _ = std::fs::remove_file(dir.join(format!("{old}.json")));
                }
            }
        }
        written
    }

    fn get_blob_now(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!("policy blob {digest}")));
            }
            Err(e) => return Err(self.io(&path, e)),
        };
        blob::verify(digest, bytes)
    }

    /// Writes the blob unless it is there (`replace`: over what is there).
    fn put_blob_now(&self, digest: &Digest, bytes: &[u8], replace: bool) -> Result<()> {
        let path = self.blob_path_for(digest, bytes);
        let there = self.blob_paths(digest).iter().any(|p| p.is_file());
        if replace || !there {
            if replace {
                // Whatever was there, under either name, goes.
                for old in self.blob_paths(digest) {
                    if old != path {
                        let _ = std::fs::remove_file(old);
                    }
                }
            }
            let dir = path.parent().expect("blob path has a parent");
            std::fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
            // Write aside, then rename: a reader never sees half a blob.
            let tmp = dir.join(format!(
                ".sha256-{}.tmp{}",
                digest.hex(),
                std::process::id()
            ));
            std::fs::write(&tmp, bytes).map_err(|e| self.io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| self.io(&path, e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl ConfigStore for DirStore {
    fn uri(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    async fn latest(&self, functions: &[String]) -> Result<Vec<Entry>> {
        let functions = functions.to_vec();
        self.blocking(move |s| s.latest_now(&functions)).await
    }

    async fn version(&self, function: &str, version: u64) -> Result<StoredRoute> {
        let function = function.to_owned();
        self.blocking(move |s| s.read_version(&function, version))
            .await
    }

    async fn history(&self, function: &str) -> Result<Vec<Result<StoredRoute>>> {
        let function = function.to_owned();
        self.blocking(move |s| s.history_now(&function)).await
    }

    async fn functions(&self) -> Result<Vec<String>> {
        self.blocking(|s| s.functions_now()).await
    }

    async fn put_route(&self, function: &str, config: &RouteConfig) -> Result<u64> {
        let text = encode_route(function, config)?;
        let function = function.to_owned();
        self.blocking(move |s| s.put_route_now(&function, &text, None))
            .await
    }

    async fn put_route_if(
        &self,
        function: &str,
        config: &RouteConfig,
        expected: u64,
        note: &str,
    ) -> Result<u64> {
        let text = encode_route(function, config)?;
        let function = function.to_owned();
        let note = crate::store::cut_note(note).to_owned();
        self.blocking(move |s| {
            let version = s.put_route_now(&function, &text, Some(expected))?;
            // Beside the version, after it: a version without its note
            // (a crash in between) is still a good version.
            let path = s.function_dir(&function)?.join(format!("{version}.note"));
            if let Err(e) = std::fs::write(&path, format!("{note}\n")) {
                tracing::warn!(target: "switchyard::store", path = %path.display(), error = %e, "the version's note was not written");
            }
            Ok(version)
        })
        .await
    }

    async fn rollout(&self, function: &str) -> Result<Option<(String, u64)>> {
        let function = function.to_owned();
        self.blocking(move |s| s.rollout_now(&function)).await
    }

    async fn put_rollout_if(&self, function: &str, doc: &str, expected: u64) -> Result<u64> {
        let (function, doc) = (function.to_owned(), doc.to_owned());
        self.blocking(move |s| s.put_rollout_now(&function, &doc, expected))
            .await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        check_function_name(name)?;
        let path = self.root.join("settings").join(name);
        self.blocking(move |s| match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v.trim_end().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(s.io(&path, e)),
        })
        .await
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        check_function_name(name)?;
        let dir = self.root.join("settings");
        let (path, value) = (dir.join(name), format!("{value}\n"));
        self.blocking(move |s| {
            std::fs::create_dir_all(&dir).map_err(|e| s.io(&dir, e))?;
            std::fs::write(&path, value).map_err(|e| s.io(&path, e))
        })
        .await
    }

    async fn signatures(&self, digest: &Digest) -> Result<Vec<String>> {
        let dir = self.signature_dir(digest);
        self.blocking(move |s| {
            let mut names = s.names_in(&dir)?;
            names.retain(|n| n.ends_with(".json"));
            names.sort();
            // Every one: the trusted key's document may sort after any
            // number of others.
            names
                .iter()
                .map(|n| {
                    let path = dir.join(n);
                    std::fs::read_to_string(&path).map_err(|e| s.io(&path, e))
                })
                .collect()
        })
        .await
    }

    async fn put_signature(&self, digest: &Digest, key_id: &str, doc: &str) -> Result<()> {
        check_function_name(key_id)?;
        let dir = self.signature_dir(digest);
        let (path, doc) = (dir.join(format!("{key_id}.json")), doc.to_owned());
        self.blocking(move |s| {
            std::fs::create_dir_all(&dir).map_err(|e| s.io(&dir, e))?;
            std::fs::write(&path, doc).map_err(|e| s.io(&path, e))
        })
        .await
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let paths = self.blob_paths(digest);
        self.blocking(move |_| Ok(paths.iter().any(|p| p.is_file())))
            .await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let digest = *digest;
        self.blocking(move |s| s.get_blob_now(&digest)).await
    }

    async fn put_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.write_blob(bytes, progress, false).await
    }

    async fn replace_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Digest> {
        self.write_blob(bytes, progress, true).await
    }
}

impl DirStore {
    async fn write_blob(
        &self,
        bytes: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
        replace: bool,
    ) -> Result<Digest> {
        if bytes.len() > blob::MAX_BLOB_BYTES {
            return Err(StoreError::TooLarge {
                what: "policy blob".into(),
                len: bytes.len(),
                limit: blob::MAX_BLOB_BYTES,
            });
        }
        let digest = Digest::of(bytes);
        let bytes = bytes.to_vec();
        self.blocking(move |s| s.put_blob_now(&digest, &bytes, replace))
            .await?;
        progress(1, 1);
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy is kept as `.wasm`, fixture cases as `.json`; both read
    /// back, and a store written before (everything `.wasm`) still reads.
    #[test]
    fn blobs_are_named_by_what_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path()).unwrap();
        let cases = br#"{"cases":[]}"#;
        let wasm = b"\0asm\x0d\0\x01\0";
        for (bytes, ext) in [(&cases[..], "json"), (&wasm[..], "wasm")] {
            let digest = Digest::of(bytes);
            store.put_blob_now(&digest, bytes, false).unwrap();
            let path = tmp
                .path()
                .join(format!("policies/sha256-{}.{ext}", digest.hex()));
            assert!(path.is_file(), "{}", path.display());
            assert_eq!(store.get_blob_now(&digest).unwrap(), bytes);
        }
        let old = br#"{"cases":[1]}"#;
        let digest = Digest::of(old);
        std::fs::write(
            tmp.path()
                .join(format!("policies/sha256-{}.wasm", digest.hex())),
            old,
        )
        .unwrap();
        assert_eq!(store.get_blob_now(&digest).unwrap(), old);
    }

    #[test]
    // Expected values from Python: datetime.fromtimestamp(s, datetime.UTC).
    fn rfc3339_formats_known_instants() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(t(1_795_000_000)), "2026-11-18T11:06:40Z");
    }

    /// The owner's name of every version read is looked up once per
    /// process, not per read (a poll reads each function's latest).
    #[cfg(unix)]
    #[test]
    fn the_owner_name_is_looked_up_once() {
        use std::sync::atomic::Ordering;
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path()).unwrap();
        let config =
            RouteConfig::from_json(r#"{"mode":"production","versions":{"stable":"1"}}"#).unwrap();
        let text = encode_route("orders", &config).unwrap();
        for _ in 0..3 {
            store.put_route_now("orders", &text, None).unwrap();
        }
        let by = store.read_version("orders", 1).unwrap().by.unwrap();
        for _ in 0..20 {
            for v in 1..=3 {
                assert_eq!(
                    store.read_version("orders", v).unwrap().by,
                    Some(by.clone())
                );
            }
            store.latest_now(&["orders".to_owned()]).unwrap();
        }
        // Once in this process (other tests read versions as the same user).
        assert_eq!(PASSWD_READS.load(Ordering::Relaxed), 1);
    }
}
