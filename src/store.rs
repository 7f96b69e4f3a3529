//! Object storage through `object_store`: `file://` (the embedded default), `s3://bucket` (R2,
//! S3, MinIO; path-style with a custom endpoint) and `memory://` (tests), behind one small
//! [`Store`] type that applies the key prefix, names the object in every error, and streams
//! uploads from a blocking producer with fixed-size multipart parts.
//!
//! Keys given to and returned by a [`Store`] are relative to the configured prefix. Every error
//! names the operation and the full location (`get s3://bucket/prefix/key: …`); secrets never
//! appear in errors or `Debug` output.

use std::fmt;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    RetryConfig, WriteMultipart,
};
use tokio::sync::mpsc;

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
    #[error("{op} {location}: object already exists")]
    AlreadyExists { op: &'static str, location: String },
    #[error("{op} {location}: {source}")]
    Backend {
        op: &'static str,
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error("upload to {location} was abandoned: {reason}")]
    Abandoned { location: String, reason: String },
}

/// One object in a listing; `key` is relative to the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// A bucket (or folder) with a key prefix.
///
/// Cheap to clone. `Debug` prints only the display location: the backend (which may hold
/// credentials) is never printed.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The same storage for [`Store::get_stream`]: no deadline on the whole request (a large
    /// restore may take many minutes), only on each read. Same as `inner` but for S3.
    streaming: Arc<dyn ObjectStore>,
    /// Empty, or ends with `/`; prepended to every key.
    prefix: String,
    /// Display base without the prefix: `s3://bucket/`, `file:///abs/path/`, `memory://`.
    base: String,
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
    fn count(&self, op: &AtomicU64) {
        op.fetch_add(1, Ordering::Relaxed);
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
        match &storage.location {
            StorageLocation::File(root) => Store::local(root, &storage.prefix),
            StorageLocation::Memory => Store::with_backend(
                Arc::new(InMemory::new()),
                "memory://".into(),
                &storage.prefix,
            ),
            StorageLocation::S3 { bucket } => Store::s3(bucket, storage),
        }
    }

    /// A process-local in-memory store (tests).
    pub fn memory(prefix: &str) -> Store {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        Store {
            streaming: inner.clone(),
            inner,
            prefix: normalize_prefix(prefix),
            base: "memory://".into(),
            requests: Arc::default(),
        }
    }

    /// `file://` store rooted at `root` (tests and tools).
    pub fn local(root: &FsPath, prefix: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| {
            StoreError::Config(format!(
                "cannot create the storage folder {}: {e}; check the path and its permissions",
                root.display()
            ))
        })?;
        let canonical = std::fs::canonicalize(root).map_err(|e| {
            StoreError::Config(format!(
                "cannot resolve storage folder {}: {e}",
                root.display()
            ))
        })?;
        let fs = LocalFileSystem::new_with_prefix(&canonical)
            .map_err(|e| {
                StoreError::Config(format!("cannot use storage folder {}: {e}", root.display()))
            })?
            // Backups must survive a power cut once reported stored, like on S3.
            .with_fsync(true)
            // Retention deletes whole days: do not leave empty date folders behind.
            .with_automatic_cleanup(true);
        let mut base = format!("file://{}", canonical.display());
        if !base.ends_with('/') {
            base.push('/');
        }
        Store::with_backend(Arc::new(fs), base, prefix)
    }

    /// Wrap any `object_store` backend (tests that inject failures, tools). `base` is the
    /// display location of the backend's root, e.g. `s3://bucket/`.
    pub fn with_backend(
        inner: Arc<dyn ObjectStore>,
        base: String,
        prefix: &str,
    ) -> Result<Store, StoreError> {
        let prefix = normalize_prefix(prefix);
        if !prefix.is_empty() {
            Path::parse(&prefix).map_err(|e| {
                StoreError::Config(format!("prefix {prefix:?} is not a valid object key: {e}"))
            })?;
        }
        Ok(Store {
            streaming: inner.clone(),
            inner,
            prefix,
            base,
            requests: Arc::default(),
        })
    }

    fn s3(bucket: &str, storage: &Storage) -> Result<Store, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(250),
                    max_backoff: Duration::from_secs(8),
                    base: 2.0,
                },
                max_retries: 4,
                retry_timeout: Duration::from_secs(180),
            });
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_read_timeout(Duration::from_secs(60))
            // A whole request, including sending one PART_SIZE part on a slow uplink.
            .with_timeout(Duration::from_secs(120));
        let region = match (&storage.region, &storage.endpoint) {
            (Some(region), _) => region.clone(),
            (None, Some(_)) => "auto".to_owned(),
            (None, None) => "us-east-1".to_owned(),
        };
        builder = builder.with_region(region);
        if let Some(endpoint) = &storage.endpoint {
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                return Err(StoreError::Config(format!(
                    "s3://{bucket}: endpoint {endpoint:?} must start with https:// (or http://)"
                )));
            }
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                options = options.with_allow_http(true);
            }
        }
        match (&storage.access_key_id, &storage.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id.expose())
                    .with_secret_access_key(secret.expose());
            }
            (None, None) => {} // the instance's credentials (IMDS, web identity)
            _ => {
                return Err(StoreError::Config(format!(
                    "s3://{bucket}: set both access_key_id and secret_access_key, or neither"
                )));
            }
        }
        let build = |options: ClientOptions| {
            builder
                .clone()
                .with_client_options(options)
                .build()
                .map_err(|e| StoreError::Config(format!("s3://{bucket}: {e}")))
        };
        let streaming = build(options.clone().with_timeout_disabled())?;
        let mut store = Store::with_backend(
            Arc::new(build(options)?),
            format!("s3://{bucket}/"),
            &storage.prefix,
        )?;
        store.streaming = Arc::new(streaming);
        Ok(store)
    }

    /// Requests made through this store and its clones so far.
    pub fn requests(&self) -> RequestCounts {
        self.requests.snapshot()
    }

    /// Full display location of a key (`s3://bucket/prefix/key`), for messages.
    pub fn location(&self, key: &str) -> String {
        format!("{}{}{key}", self.base, self.prefix)
    }

    /// Put a small object whole. With `create_only`, fail with `AlreadyExists` if present.
    pub async fn put(&self, key: &str, bytes: Bytes, create_only: bool) -> Result<(), StoreError> {
        const OP: &str = "put";
        self.requests.count(&self.requests.put);
        let path = self.path(OP, key)?;
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self.inner.put_opts(&path, bytes.into(), opts).await {
            Ok(_) => Ok(()),
            // S3 answers a failed `If-None-Match: *` with 412.
            Err(object_store::Error::Precondition { .. }) if create_only => {
                Err(StoreError::AlreadyExists {
                    op: OP,
                    location: self.location(key),
                })
            }
            Err(e) => Err(self.error(OP, key, e)),
        }
    }

    /// Start a streamed upload to `key`: write from blocking code into the returned sink, then
    /// `finish()` it; the future resolves once the object is stored (or the upload failed or
    /// was abandoned, in which case nothing is visible at `key`). Memory stays bounded: the sink
    /// blocks while a few parts are in flight.
    ///
    /// An object that fits in one part is stored with a single `put`; larger ones with a
    /// multipart upload of equal [`PART_SIZE`] parts. Must be called within a tokio runtime.
    pub fn start_upload(
        &self,
        key: &str,
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
            let result = store.receive_upload(&key, &mut rx).await;
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
    ) -> Result<u64, StoreError> {
        const OP: &str = "upload";
        let path = self.path(OP, key)?;
        // An object that fits in one part is stored with one plain put.
        let first = match rx.recv().await {
            Some(Chunk::Data(part)) => part,
            Some(Chunk::Done) => return self.put_whole(OP, key, &path, Bytes::new()).await,
            None => return Err(self.abandoned(key)),
        };
        let second = match rx.recv().await {
            Some(Chunk::Data(part)) => part,
            Some(Chunk::Done) => return self.put_whole(OP, key, &path, first).await,
            None => return Err(self.abandoned(key)),
        };

        // Create, one per part, complete: counted as puts (the class R2 bills them in).
        self.requests.count(&self.requests.put);
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| self.error(OP, key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = (first.len() + second.len()) as u64;
        writer.put(first);
        let pumped = async {
            writer
                .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.error(OP, key, e))?;
            writer.put(second);
            loop {
                // Wait before receiving: a slow network keeps the sink blocked, not memory.
                writer
                    .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.error(OP, key, e))?;
                match rx.recv().await {
                    Some(Chunk::Data(part)) => {
                        self.requests.count(&self.requests.put);
                        size += part.len() as u64;
                        writer.put(part);
                    }
                    Some(Chunk::Done) => return Ok(()),
                    None => return Err(self.abandoned(key)),
                }
            }
        }
        .await;
        match pumped {
            Ok(()) => {
                // first two parts + completion
                for _ in 0..3 {
                    self.requests.count(&self.requests.put);
                }
                // `finish` aborts the multipart upload itself when a part or the completion fails.
                writer.finish().await.map_err(|e| self.error(OP, key, e))?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(
                        location = %self.location(key),
                        error = %abort,
                        "could not abort a multipart upload; its parts stay billed until a \
                         bucket lifecycle rule removes them"
                    );
                }
                Err(e)
            }
        }
    }

    async fn put_whole(
        &self,
        op: &'static str,
        key: &str,
        path: &Path,
        bytes: Bytes,
    ) -> Result<u64, StoreError> {
        let size = bytes.len() as u64;
        self.requests.count(&self.requests.put);
        self.inner
            .put(path, bytes.into())
            .await
            .map_err(|e| self.error(op, key, e))?;
        Ok(size)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        const OP: &str = "get";
        self.requests.count(&self.requests.get);
        let path = self.path(OP, key)?;
        let result = self
            .inner
            .get(&path)
            .await
            .map_err(|e| self.error(OP, key, e))?;
        result.bytes().await.map_err(|e| self.error(OP, key, e))
    }

    /// Stream an object's bytes.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        const OP: &str = "get";
        self.requests.count(&self.requests.get);
        let path = self.path(OP, key)?;
        let result = self
            .streaming
            .get(&path)
            .await
            .map_err(|e| self.error(OP, key, e))?;
        let location = self.location(key);
        Ok(result
            .into_stream()
            .map_err(move |source| StoreError::Backend {
                op: "read",
                location: location.clone(),
                source,
            })
            .boxed())
    }

    /// `None` when absent.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        const OP: &str = "head";
        self.requests.count(&self.requests.head);
        let path = self.path(OP, key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: meta.size,
                last_modified: meta.last_modified,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(OP, key, e)),
        }
    }

    /// Every object under `prefix` (relative), complete or an error: never a partial listing.
    ///
    /// `prefix` is a plain string prefix, as in S3: `daily/2026-11` matches
    /// `daily/2026-11-22/…`. Keys come back relative to the store's prefix, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        const OP: &str = "list objects in";
        self.requests.count(&self.requests.list);
        let full = format!("{}{prefix}", self.prefix);
        // object_store lists whole path segments: list the folder, then filter by the rest.
        let folder = &full[..full.rfind('/').map_or(0, |i| i + 1)];
        let folder = if folder.is_empty() {
            None
        } else {
            Some(Path::parse(folder).map_err(|e| self.error(OP, prefix, e.into()))?)
        };
        let metas: Vec<ObjectMeta> = self
            .inner
            .list(folder.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error(OP, prefix, e))?;
        let mut objects: Vec<ObjectInfo> = metas
            .into_iter()
            .filter(|m| m.location.as_ref().starts_with(&full))
            .map(|m| ObjectInfo {
                key: m.location.as_ref()[self.prefix.len()..].to_owned(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Delete; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        const OP: &str = "delete";
        self.requests.count(&self.requests.delete);
        let path = self.path(OP, key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(OP, key, e)),
        }
    }

    /// The backend path of `key`: the prefix applied, validated as an object key.
    fn path(&self, op: &'static str, key: &str) -> Result<Path, StoreError> {
        if key.is_empty() || key.ends_with('/') {
            let source = object_store::path::Error::EmptySegment {
                path: format!("{}{key}", self.prefix),
            };
            return Err(self.error(op, key, source.into()));
        }
        Path::parse(format!("{}{key}", self.prefix)).map_err(|e| self.error(op, key, e.into()))
    }

    fn error(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        let location = self.location(key);
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound { op, location },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists { op, location },
            source => StoreError::Backend {
                op,
                location,
                source,
            },
        }
    }

    fn abandoned(&self, key: &str) -> StoreError {
        StoreError::Abandoned {
            location: self.location(key),
            reason: "the writer stopped before finishing (sink dropped without finish)".into(),
        }
    }
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
    fn debug_shows_only_the_location() {
        let store = Store::memory("p/");
        assert_eq!(format!("{store:?}"), r#"Store("memory://p/")"#);
    }
}
