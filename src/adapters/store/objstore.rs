//! The [`Backend`] for everything the `object_store` crate reaches: `file://` (the embedded
//! default), `s3://bucket` (R2, S3, MinIO; path-style with a custom endpoint) and `memory://`
//! (tests).
//!
//! Conditional writes map onto `object_store`'s put modes: [`PutMode::Create`] onto its
//! `Create` (S3 `If-None-Match: *`, an atomic hard link on `file://`), [`PutMode::Replace`] onto
//! `Update` (S3 `If-Match`). Its local filesystem cannot do `Update`: on `file://`, `Replace`
//! fails with [`BackendError::Unsupported`] before anything is written.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutOptions, RetryConfig, UpdateVersion, WriteMultipart,
};

use super::backend::{Backend, BackendError, ETag, ObjectInfo, Parts, PutMode};
use super::{MAX_PARTS_IN_FLIGHT, StoreError};
use crate::policy::Storage;

/// An `object_store` client as a [`Backend`].
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    /// The same storage for [`Backend::get_stream`]: no deadline on the whole request, only
    /// on each read. Same as `inner` but for S3.
    streaming: Arc<dyn ObjectStore>,
    /// Display location of the root, e.g. `s3://bucket/`.
    root: String,
}

impl ObjectStoreBackend {
    /// Every object under `prefix`, or only those after `after` (S3 `start-after`), sorted.
    async fn list_from(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectInfo>, BackendError> {
        // object_store lists whole path segments: list the folder, then filter by the rest.
        let folder = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
        let folder = if folder.is_empty() {
            None
        } else {
            Some(Path::parse(folder).map_err(|e| error(prefix, e.into()))?)
        };
        let listing = match after {
            None => self.inner.list(folder.as_ref()),
            Some(after) => {
                let offset = Path::parse(after).map_err(|e| error(after, e.into()))?;
                self.inner.list_with_offset(folder.as_ref(), &offset)
            }
        };
        let metas: Vec<ObjectMeta> = listing.try_collect().await.map_err(|e| error(prefix, e))?;
        let mut objects: Vec<ObjectInfo> = metas
            .into_iter()
            .filter(|m| {
                let key = m.location.as_ref();
                key.starts_with(prefix) && after.is_none_or(|a| key > a)
            })
            .map(info)
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Wrap any `object_store` client (tests that inject failures, tools). `root` is the
    /// display location of its root, e.g. `s3://bucket/`.
    pub fn new(inner: Arc<dyn ObjectStore>, root: impl Into<String>) -> ObjectStoreBackend {
        ObjectStoreBackend {
            streaming: inner.clone(),
            inner,
            root: root.into(),
        }
    }

    /// A process-local, empty in-memory bucket.
    pub fn memory() -> ObjectStoreBackend {
        ObjectStoreBackend::new(Arc::new(InMemory::new()), "memory://")
    }

    /// The folder `root`, created if missing.
    pub fn local(root: &FsPath) -> Result<ObjectStoreBackend, StoreError> {
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
        let mut display = format!("file://{}", canonical.display());
        if !display.ends_with('/') {
            display.push('/');
        }
        Ok(ObjectStoreBackend::new(Arc::new(fs), display))
    }

    /// The bucket `bucket` with the endpoint, region and keys of `storage`. Makes no request.
    pub fn s3(bucket: &str, storage: &Storage) -> Result<ObjectStoreBackend, StoreError> {
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
        let mut backend =
            ObjectStoreBackend::new(Arc::new(build(options)?), format!("s3://{bucket}/"));
        backend.streaming = Arc::new(streaming);
        Ok(backend)
    }

    /// The scheme of the root, for messages: `file://`, `s3://`, `memory://`.
    fn scheme(&self) -> String {
        match self.root.find("://") {
            Some(i) => self.root[..i + 3].to_owned(),
            None => self.root.clone(),
        }
    }

    async fn put_whole(&self, key: &str, path: &Path, bytes: Bytes) -> Result<u64, BackendError> {
        let size = bytes.len() as u64;
        self.inner
            .put(path, bytes.into())
            .await
            .map_err(|e| error(key, e))?;
        Ok(size)
    }
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn root(&self) -> &str {
        &self.root
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<ETag>, BackendError> {
        let path = path(key)?;
        let object_mode = match &mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Replace(etag) => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(etag.as_str().to_owned()),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode: object_mode,
            ..Default::default()
        };
        let operation = mode.describe();
        let result = self.inner.put_opts(&path, bytes.into(), opts).await;
        let key = key.to_owned();
        match (result, mode) {
            (Ok(result), _) => Ok(result.e_tag.map(ETag::new)),
            (Err(object_store::Error::NotImplemented { .. }), _) => {
                Err(BackendError::Unsupported {
                    key,
                    operation,
                    backend: self.scheme(),
                })
            }
            // S3 answers a failed `If-None-Match: *` with 412 (object_store maps it already).
            (
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ),
                PutMode::Create,
            ) => Err(BackendError::AlreadyExists { key }),
            // A deleted object is a failed precondition too (object_store maps S3's 404).
            (
                Err(
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
                ),
                PutMode::Replace(expected_etag),
            ) => Err(BackendError::Precondition { key, expected_etag }),
            (Err(e), _) => Err(error(&key, e)),
        }
    }

    async fn upload(&self, key: &str, mut parts: Parts<'_>) -> Result<u64, BackendError> {
        let path = path(key)?;
        // An object that fits in one part is stored with one plain put.
        let first = match parts.next().await {
            Some(part) => part?,
            None => return self.put_whole(key, &path, Bytes::new()).await,
        };
        let second = match parts.next().await {
            Some(part) => part?,
            None => return self.put_whole(key, &path, first).await,
        };

        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| error(key, e))?;
        // Parts go up exactly as they come: equal in size but the last, as R2 wants.
        let mut writer = WriteMultipart::new_with_chunk_size(upload, first.len());
        let mut size = (first.len() + second.len()) as u64;
        writer.put(first);
        let pumped = async {
            writer
                .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| error(key, e))?;
            writer.put(second);
            loop {
                // Wait before pulling: a slow network holds the producer back, not memory.
                writer
                    .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| error(key, e))?;
                match parts.next().await {
                    Some(part) => {
                        let part = part?;
                        size += part.len() as u64;
                        writer.put(part);
                    }
                    None => return Ok(()),
                }
            }
        }
        .await;
        match pumped {
            Ok(()) => {
                // `finish` aborts the multipart upload itself when a part or the completion fails.
                writer.finish().await.map_err(|e| error(key, e))?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(
                        location = %format!("{}{key}", self.root),
                        error = %abort,
                        "could not abort a multipart upload; its parts stay billed until a \
                         bucket lifecycle rule removes them"
                    );
                }
                Err(e)
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        let path = path(key)?;
        let result = self.inner.get(&path).await.map_err(|e| error(key, e))?;
        result.bytes().await.map_err(|e| error(key, e))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, ETag)>, BackendError> {
        let path = path(key)?;
        let result = match self.inner.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(error(key, e)),
        };
        let Some(etag) = result.meta.e_tag.clone().map(ETag::new) else {
            return Err(BackendError::Unsupported {
                key: key.to_owned(),
                operation: "report etags",
                backend: self.root().to_owned(),
            });
        };
        let bytes = result.bytes().await.map_err(|e| error(key, e))?;
        Ok(Some((bytes, etag)))
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError> {
        let path = path(key)?;
        let result = self.streaming.get(&path).await.map_err(|e| error(key, e))?;
        let key = key.to_owned();
        let range = result.range.clone();
        match result.payload {
            // object_store reads a local file 8 KiB at a time, each read a round trip to a
            // blocking thread: for a restore of hundreds of MB that hand-over cost more CPU
            // than the reads. Read it in large chunks instead.
            GetResultPayload::File(file, _) => Ok(file_chunks(file, range, key).boxed()),
            GetResultPayload::Stream(stream) => Ok(stream.map_err(move |e| error(&key, e)).boxed()),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BackendError> {
        let path = path(key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(info(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(error(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.list_from(prefix, None).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.list_from(prefix, Some(after)).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let path = path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(error(key, e)),
        }
    }
}

/// `key` as an `object_store` path.
fn path(key: &str) -> Result<Path, BackendError> {
    if key.is_empty() || key.ends_with('/') {
        let source = object_store::path::Error::EmptySegment {
            path: key.to_owned(),
        };
        return Err(error(key, source.into()));
    }
    Path::parse(key).map_err(|e| error(key, e.into()))
}

fn info(meta: ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.as_ref().to_owned(),
        size: meta.size,
        last_modified: meta.last_modified,
        etag: meta.e_tag.map(ETag::new),
    }
}

/// Bytes per read of a local file in [`Backend::get_stream`].
const FILE_CHUNK: u64 = 1024 * 1024;

/// `range` of a local `file` as a stream of [`FILE_CHUNK`]s, each read on a blocking thread.
fn file_chunks(
    file: std::fs::File,
    range: std::ops::Range<u64>,
    key: String,
) -> impl futures::Stream<Item = Result<Bytes, BackendError>> + Send + 'static {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |key: &str, e: std::io::Error| {
        error(
            key,
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            },
        )
    };
    futures::stream::try_unfold(
        (Some(file), range.start, key),
        move |(file, at, key)| async move {
            let Some(mut file) = file.filter(|_| at < range.end) else {
                return Ok(None);
            };
            let want = (range.end - at).min(FILE_CHUNK);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(want as usize);
                file.seek(SeekFrom::Start(at))?;
                (&mut file).take(want).read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>((file, buf))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            let (file, buf) = read.map_err(|e| read_err(&key, e))?;
            if buf.is_empty() {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("file ends at byte {at} of {}", range.end),
                );
                return Err(read_err(&key, e));
            }
            let next = at + buf.len() as u64;
            Ok(Some((Bytes::from(buf), (Some(file), next, key))))
        },
    )
}

fn error(key: &str, source: object_store::Error) -> BackendError {
    let key = key.to_owned();
    match source {
        object_store::Error::NotFound { .. } => BackendError::NotFound { key },
        object_store::Error::AlreadyExists { .. } => BackendError::AlreadyExists { key },
        source => BackendError::Other {
            key,
            source: Box::new(source),
        },
    }
}
