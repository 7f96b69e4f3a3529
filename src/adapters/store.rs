//! Object storage behind one small [`Store`] façade: it applies the key prefix, counts
//! requests, names the object in every error, and streams uploads from a blocking producer in
//! fixed-size parts. The storage itself sits behind the [`Backend`] interface (put with
//! [`PutMode`]: overwrite, create-only, replace-if-etag; etags in `head` and listings);
//! [`ObjectStoreBackend`] implements it for `file://` (the embedded default), `s3://bucket` (R2,
//! S3, MinIO) and `memory://` (tests).
//!
//! Keys given to and returned by a [`Store`] are relative to the configured prefix. Every error
//! names the operation and the full location (`get s3://bucket/prefix/key: …`); secrets never
//! appear in errors or `Debug` output.

mod backend;
mod objstore;

use std::fmt;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

pub use backend::{Backend, BackendError, ETag, ObjectInfo, Parts, PutMode};
pub use objstore::ObjectStoreBackend;

use crate::policy::{Storage, StorageLocation};

/// Part size of multipart uploads. R2 wants equal parts (except the last) of at least 5 MiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts queued between an [`UploadSink`] and its upload task. Together with the part being
/// filled by the sink and [`MAX_PARTS_IN_FLIGHT`], this bounds the memory of one upload; see
/// [`UploadSink::max_buffered_bytes`].
pub const UPLOAD_CHANNEL_CAPACITY: usize = 1;

/// Parts of one multipart upload sent concurrently.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// A failed storage operation: what, on which object, why.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {location}: object not found")]
    NotFound { op: &'static str, location: String },
    /// A [`PutMode::Create`] found an object at the key.
    #[error("{op} {location}: object already exists")]
    AlreadyExists { op: &'static str, location: String },
    /// A [`PutMode::Replace`] found another version at the key (or none): someone else wrote it.
    #[error(
        "{op} {location}: the object changed or was deleted since it was read (expected etag {expected_etag})"
    )]
    Precondition {
        op: &'static str,
        location: String,
        expected_etag: ETag,
    },
    /// The storage cannot do this at all (a conditional write on `file://`).
    #[error(
        "{op} {location}: {backend} storage cannot {operation}; use s3:// storage (R2, S3, MinIO) for this"
    )]
    Unsupported {
        op: &'static str,
        location: String,
        operation: &'static str,
        backend: String,
    },
    #[error("{op} {location}: {source}")]
    Backend {
        op: &'static str,
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error("upload to {location} was abandoned: {reason}")]
    Abandoned { location: String, reason: String },
}

impl StoreError {
    /// `error` from the backend, about the object at `location`, during `op`.
    fn from_backend(op: &'static str, location: String, error: BackendError) -> StoreError {
        match error {
            BackendError::NotFound { .. } => StoreError::NotFound { op, location },
            BackendError::AlreadyExists { .. } => StoreError::AlreadyExists { op, location },
            BackendError::Precondition { expected_etag, .. } => StoreError::Precondition {
                op,
                location,
                expected_etag,
            },
            BackendError::Unsupported {
                operation, backend, ..
            } => StoreError::Unsupported {
                op,
                location,
                operation,
                backend,
            },
            BackendError::Abandoned { reason, .. } => StoreError::Abandoned { location, reason },
            BackendError::Other { source, .. } => StoreError::Backend {
                op,
                location,
                source,
            },
        }
    }
}

/// A bucket (or folder) with a key prefix.
///
/// Cheap to clone. `Debug` prints only the display location: the backend (which may hold
/// credentials) is never printed.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Empty, or ends with `/`; prepended to every key.
    prefix: String,
    /// Requests made through this store (and its clones), by operation.
    requests: Arc<RequestCounters>,
}

/// Storage requests by operation (R2 and S3 bill them; LIST is the expensive class).
#[derive(Debug, Default)]
pub struct RequestCounters {
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
}

/// A snapshot of [`RequestCounters`]: `(operation, count)` pairs.
pub type RequestCounts = [(&'static str, u64); 5];

impl RequestCounters {
    fn count(&self, op: &AtomicU64, n: u64) {
        op.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCounts {
        [
            ("list", self.list.load(Ordering::Relaxed)),
            ("get", self.get.load(Ordering::Relaxed)),
            ("head", self.head.load(Ordering::Relaxed)),
            ("put", self.put.load(Ordering::Relaxed)),
            ("delete", self.delete.load(Ordering::Relaxed)),
        ]
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").field(&self.location("")).finish()
    }
}

/// What the sink sends to the upload task.
enum Chunk {
    /// Exactly [`PART_SIZE`] bytes, except the last one before `Done`.
    Data(Bytes),
    /// The producer finished: everything was sent.
    Done,
}

/// Asked before each part of a guarded upload is sent ([`Store::start_upload_guarded`]).
pub type UploadGuard = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Where to write bytes from synchronous code; see [`Store::start_upload`].
///
/// Write to it from a blocking thread (`spawn_blocking`, `std::thread`), never from async
/// code: a full queue blocks the writer, which is how memory stays bounded.
pub struct UploadSink {
    tx: mpsc::Sender<Chunk>,
    /// The part being filled; sent when it reaches [`PART_SIZE`].
    buf: BytesMut,
    location: String,
    /// Set by the upload task before it stops on an error, so the writer learns why.
    failure: Arc<OnceLock<String>>,
}

impl fmt::Debug for UploadSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadSink")
            .field("location", &self.location)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl std::io::Write for UploadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(PART_SIZE - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == PART_SIZE {
            let part = self.buf.split().freeze();
            self.buf.reserve(PART_SIZE);
            self.send(Chunk::Data(part))?;
        }
        Ok(n)
    }

    /// Does nothing: parts are sent when full, the tail by [`UploadSink::finish`].
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl UploadSink {
    /// Mark the stream complete. Dropping the sink without calling `finish` abandons the
    /// upload: nothing becomes visible at the key.
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let tail = self.buf.split().freeze();
            self.send(Chunk::Data(tail))?;
        }
        self.send(Chunk::Done)
    }

    /// The most bytes one upload holds at once: the part being filled here, the queued parts,
    /// and the parts being sent. Independent of the object's size.
    pub fn max_buffered_bytes(&self) -> usize {
        (1 + self.tx.max_capacity() + MAX_PARTS_IN_FLIGHT) * PART_SIZE
    }

    fn send(&self, chunk: Chunk) -> std::io::Result<()> {
        self.tx.blocking_send(chunk).map_err(|_| {
            let why = self
                .failure
                .get()
                .map_or("the upload task stopped", String::as_str);
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("upload to {} failed: {why}", self.location),
            )
        })
    }
}

impl Store {
    /// Open the configured storage; `file://` folders are created if missing. Makes no
    /// network request: a wrong bucket or key shows up on the first operation.
    pub fn open(storage: &Storage) -> Result<Store, StoreError> {
        let backend = match &storage.location {
            StorageLocation::File(root) => ObjectStoreBackend::local(root)?,
            StorageLocation::Memory => ObjectStoreBackend::memory(),
            StorageLocation::S3 { bucket } => ObjectStoreBackend::s3(bucket, storage)?,
        };
        Store::with_backend(Arc::new(backend), &storage.prefix)
    }

    /// A process-local in-memory store (tests).
    pub fn memory(prefix: &str) -> Store {
        Store::with_backend(Arc::new(ObjectStoreBackend::memory()), prefix).expect("a valid prefix")
    }

    /// `file://` store rooted at `root` (tests and tools).
    pub fn local(root: &FsPath, prefix: &str) -> Result<Store, StoreError> {
        Store::with_backend(Arc::new(ObjectStoreBackend::local(root)?), prefix)
    }

    /// Any backend (tests that inject failures or share one bucket between prefixes, tools).
    pub fn with_backend(backend: Arc<dyn Backend>, prefix: &str) -> Result<Store, StoreError> {
        let prefix = normalize_prefix(prefix);
        if let Some(folder) = prefix.strip_suffix('/') {
            check_key(folder).map_err(|why| {
                StoreError::Config(format!(
                    "prefix {prefix:?} is not a valid object key: {why}"
                ))
            })?;
        }
        Ok(Store {
            backend,
            prefix,
            requests: Arc::default(),
        })
    }

    /// Requests made through this store and its clones so far.
    pub fn requests(&self) -> RequestCounts {
        self.requests.snapshot()
    }

    /// Full display location of a key (`s3://bucket/prefix/key`), for messages.
    pub fn location(&self, key: &str) -> String {
        format!("{}{}{key}", self.backend.root(), self.prefix)
    }

    /// Put a small object whole, as `mode` allows: [`PutMode::Create`] fails with
    /// [`StoreError::AlreadyExists`] if an object is there, [`PutMode::Replace`] with
    /// [`StoreError::Precondition`] unless the object is still at that etag; a mode the storage
    /// cannot do fails with [`StoreError::Unsupported`]. Returns the new etag, when the storage
    /// reports one.
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<ETag>, StoreError> {
        const OP: &str = "put";
        self.requests.count(&self.requests.put, 1);
        let full = self.full_key(OP, key)?;
        self.backend
            .put(&full, bytes, mode)
            .await
            .map_err(|e| self.error(OP, key, e))
    }

    /// Start a streamed upload to `key`: write from blocking code into the returned sink, then
    /// `finish()` it; the future resolves once the object is stored (or the upload failed or
    /// was abandoned, in which case nothing is visible at `key`). Memory stays bounded: the sink
    /// blocks while a few parts are in flight.
    ///
    /// The backend gets equal [`PART_SIZE`] parts (but the last); an object that fits in one
    /// part is stored with a single put, larger ones with a multipart upload. Must be called
    /// within a tokio runtime.
    pub fn start_upload(
        &self,
        key: &str,
    ) -> (UploadSink, tokio::task::JoinHandle<Result<u64, StoreError>>) {
        self.start_upload_guarded(key, None)
    }

    /// [`Store::start_upload`], asking `guard` before each part is sent and before the upload
    /// is completed: an `Err` abandons the upload (nothing becomes visible at `key`) with that
    /// reason. Several daemons (DESIGN §16) pass their lease check here, so a holder that
    /// stalls mid-upload and wakes up without its lease stops before its next write.
    pub fn start_upload_guarded(
        &self,
        key: &str,
        guard: Option<UploadGuard>,
    ) -> (UploadSink, tokio::task::JoinHandle<Result<u64, StoreError>>) {
        let (tx, rx) = mpsc::channel(UPLOAD_CHANNEL_CAPACITY);
        let failure = Arc::new(OnceLock::new());
        let sink = UploadSink {
            tx,
            buf: BytesMut::with_capacity(PART_SIZE),
            location: self.location(key),
            failure: failure.clone(),
        };
        let store = self.clone();
        let key = key.to_owned();
        let task = tokio::spawn(async move {
            let mut rx = rx;
            let result = store.receive_upload(&key, &mut rx, guard).await;
            if let Err(e) = &result {
                let _ = failure.set(e.to_string());
            }
            drop(rx); // only now: a blocked writer wakes up and finds `failure` set
            result
        });
        (sink, task)
    }

    async fn receive_upload(
        &self,
        key: &str,
        rx: &mut mpsc::Receiver<Chunk>,
        guard: Option<UploadGuard>,
    ) -> Result<u64, StoreError> {
        const OP: &str = "upload";
        let full = self.full_key(OP, key)?;
        let parts = counted_parts(rx, &self.requests, &full, guard);
        self.backend
            .upload(&full, parts)
            .await
            .map_err(|e| self.error(OP, key, e))
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        const OP: &str = "get";
        self.requests.count(&self.requests.get, 1);
        let full = self.full_key(OP, key)?;
        self.backend
            .get(&full)
            .await
            .map_err(|e| self.error(OP, key, e))
    }

    /// A small object's bytes with its etag, from one read; `None` when absent (leases).
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, ETag)>, StoreError> {
        const OP: &str = "get";
        self.requests.count(&self.requests.get, 1);
        let full = self.full_key(OP, key)?;
        self.backend
            .get_versioned(&full)
            .await
            .map_err(|e| self.error(OP, key, e))
    }

    /// Stream an object's bytes.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        const OP: &str = "get";
        self.requests.count(&self.requests.get, 1);
        let full = self.full_key(OP, key)?;
        let stream = self
            .backend
            .get_stream(&full)
            .await
            .map_err(|e| self.error(OP, key, e))?;
        let location = self.location(key);
        Ok(stream
            .map_err(move |e| StoreError::from_backend("read", location.clone(), e))
            .boxed())
    }

    /// `None` when absent.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        const OP: &str = "head";
        self.requests.count(&self.requests.head, 1);
        let full = self.full_key(OP, key)?;
        let info = self
            .backend
            .head(&full)
            .await
            .map_err(|e| self.error(OP, key, e))?;
        Ok(info.map(|info| ObjectInfo {
            key: key.to_owned(),
            ..info
        }))
    }

    /// Every object under `prefix` (relative), complete or an error: never a partial listing.
    ///
    /// `prefix` is a plain string prefix, as in S3: `daily/2026-11` matches
    /// `daily/2026-11-22/…`. Keys come back relative to the store's prefix, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.list_from(prefix, None).await
    }

    /// As [`list`](Store::list), only the keys (relative) that sort after `after`: the server
    /// starts the listing there, so the keys before it cost no requests.
    pub async fn list_after(
        &self,
        prefix: &str,
        after: &str,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        self.list_from(prefix, Some(after)).await
    }

    async fn list_from(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        const OP: &str = "list objects in";
        let full = format!("{}{prefix}", self.prefix);
        let listed = match after {
            None => self.backend.list(&full).await,
            Some(after) => {
                let after = format!("{}{after}", self.prefix);
                self.backend.list_after(&full, &after).await
            }
        };
        // One request per page of 1,000 keys, as S3 and R2 answer (and bill) a listing.
        let pages = listed
            .as_ref()
            .map_or(1, |o| crate::listing::pages(o.len()));
        self.requests.count(&self.requests.list, pages);
        let objects = listed.map_err(|e| self.error(OP, prefix, e))?;
        Ok(objects
            .into_iter()
            .filter_map(|info| {
                let key = info.key.strip_prefix(&self.prefix)?.to_owned();
                Some(ObjectInfo { key, ..info })
            })
            .collect())
    }

    /// Delete; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        const OP: &str = "delete";
        self.requests.count(&self.requests.delete, 1);
        let full = self.full_key(OP, key)?;
        self.backend
            .delete(&full)
            .await
            .map_err(|e| self.error(OP, key, e))
    }

    /// The backend key of `key`: the prefix applied, checked against [`check_key`], so that
    /// every backend gets the same, portable keys.
    fn full_key(&self, op: &'static str, key: &str) -> Result<String, StoreError> {
        let full = format!("{}{key}", self.prefix);
        match check_key(&full) {
            Ok(()) => Ok(full),
            Err(why) => Err(StoreError::Backend {
                op,
                location: self.location(key),
                source: why.into(),
            }),
        }
    }

    fn error(&self, op: &'static str, key: &str, error: BackendError) -> StoreError {
        StoreError::from_backend(op, self.location(key), error)
    }
}

/// The parts an [`UploadSink`] sends, as a [`Parts`] stream for the backend, counting requests
/// as R2 bills them: one put for a single-part object; for a multipart upload its creation,
/// one per part, and its completion.
fn counted_parts<'a>(
    rx: &'a mut mpsc::Receiver<Chunk>,
    requests: &'a RequestCounters,
    key: &'a str,
    guard: Option<UploadGuard>,
) -> Parts<'a> {
    futures::stream::unfold(Some((rx, 0u64)), move |state| {
        let guard = guard.clone();
        async move {
            let (rx, sent) = state?;
            let received = rx.recv().await;
            if let (Some(Chunk::Data(_) | Chunk::Done), Some(guard)) = (&received, &guard)
                && let Err(reason) = guard()
            {
                let abandoned = BackendError::Abandoned {
                    key: key.to_owned(),
                    reason,
                };
                return Some((Err(abandoned), None));
            }
            match received {
                Some(Chunk::Data(part)) => {
                    // The second part turns the upload into a multipart one: create, then send.
                    requests.count(&requests.put, if sent == 1 { 2 } else { 1 });
                    Some((Ok(part), Some((rx, sent + 1))))
                }
                Some(Chunk::Done) => {
                    if sent != 1 {
                        // the put of an empty object, or the completion of a multipart upload
                        requests.count(&requests.put, 1);
                    }
                    None
                }
                None => {
                    let reason =
                        "the writer stopped before finishing (sink dropped without finish)"
                            .to_owned();
                    let abandoned = BackendError::Abandoned {
                        key: key.to_owned(),
                        reason,
                    };
                    Some((Err(abandoned), None))
                }
            }
        }
    })
    .boxed()
}

/// Whether `key` is a portable object key: `/`-separated segments, none empty, `.` or `..`,
/// and no control characters.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("an object key cannot be empty".into());
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(format!("{key:?} has an empty path segment"));
        }
        if segment == "." || segment == ".." {
            return Err(format!("{key:?} has a {segment:?} path segment"));
        }
        if segment.chars().any(|c| c.is_ascii_control()) {
            return Err(format!("{key:?} has a control character"));
        }
    }
    Ok(())
}

/// `""`, or the prefix with one trailing `/` and no leading one.
fn normalize_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_start_matches('/');
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("a"), "a/");
        assert_eq!(normalize_prefix("/a/b/"), "a/b/");
    }

    #[test]
    fn keys_are_checked_the_same_for_every_backend() {
        for key in [
            "a",
            "daily/2026-11-22/app/20261122T030012Z.sql.zst",
            "a b/ü",
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
        for key in ["", "a/", "/a", "a//b", "a/./b", "../a", "a\nb"] {
            assert!(check_key(key).is_err(), "{key:?} accepted");
        }
        let err = Store::with_backend(Arc::new(ObjectStoreBackend::memory()), "p//q/").unwrap_err();
        assert!(err.to_string().contains("p//q/"), "{err}");
    }

    /// Requests are counted as R2 bills them: one put for an object of up to one part; a
    /// multipart upload's creation, parts and completion.
    #[tokio::test]
    async fn upload_requests_are_counted_as_billed() {
        let store = Store::memory("");
        for (len, puts) in [(0, 1), (10, 1), (PART_SIZE, 1), (2 * PART_SIZE + 1, 5)] {
            let before = store.requests()[3].1;
            let (mut sink, task) = store.start_upload("k");
            tokio::task::spawn_blocking(move || {
                std::io::Write::write_all(&mut sink, &vec![1; len])?;
                sink.finish()
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(task.await.unwrap().unwrap(), len as u64);
            assert_eq!(store.requests()[3], ("put", before + puts), "{len} bytes");
        }
    }

    #[test]
    fn debug_shows_only_the_location() {
        let store = Store::memory("p/");
        assert_eq!(format!("{store:?}"), r#"Store("memory://p/")"#);
    }
}
