//! Object storage through `object_store`: `file://` (the embedded default), `s3://bucket` (R2,
//! S3, MinIO; path-style with a custom endpoint) and `memory://` (tests), behind one small
//! [`Store`] type that applies the key prefix, names the object in every error, and streams
//! uploads from a blocking producer with fixed-size multipart parts.
//!
//! CONTRACT STUB — to be implemented (see the helper brief). The public API below is fixed.

use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::policy::Storage;

/// Part size of multipart uploads. R2 wants equal parts (except the last) of at least 5 MiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

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
#[derive(Clone)]
pub struct Store {}

/// Where to write bytes from synchronous code; see [`Store::start_upload`].
pub struct UploadSink {}

impl std::io::Write for UploadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = buf;
        todo!()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        todo!()
    }
}

impl UploadSink {
    /// Mark the stream complete. Dropping the sink without calling `finish` abandons the
    /// upload: nothing becomes visible at the key.
    pub fn finish(self) -> std::io::Result<()> {
        todo!()
    }
}

impl Store {
    /// Open the configured storage; `file://` folders are created if missing.
    pub fn open(storage: &Storage) -> Result<Store, StoreError> {
        let _ = storage;
        todo!()
    }

    /// A process-local in-memory store (tests).
    pub fn memory(prefix: &str) -> Store {
        let _ = prefix;
        todo!()
    }

    /// `file://` store rooted at `root` (tests and tools).
    pub fn local(root: &Path, prefix: &str) -> Result<Store, StoreError> {
        let _ = (root, prefix);
        todo!()
    }

    /// Full display location of a key (`s3://bucket/prefix/key`), for messages.
    pub fn location(&self, key: &str) -> String {
        let _ = key;
        todo!()
    }

    /// Put a small object whole. With `create_only`, fail with `AlreadyExists` if present.
    pub async fn put(&self, key: &str, bytes: Bytes, create_only: bool) -> Result<(), StoreError> {
        let _ = (key, bytes, create_only);
        todo!()
    }

    /// Start a streamed upload to `key`: write from blocking code into the returned sink, then
    /// `finish()` it; the future resolves once the object is stored (or the upload failed or
    /// was abandoned, in which case nothing is visible at `key`). Memory stays bounded: the sink
    /// blocks while a few parts are in flight.
    pub fn start_upload(
        &self,
        key: &str,
    ) -> (UploadSink, tokio::task::JoinHandle<Result<u64, StoreError>>) {
        let _ = key;
        todo!()
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let _ = key;
        todo!()
    }

    /// Stream an object's bytes.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let _ = key;
        todo!()
    }

    /// `None` when absent.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let _ = key;
        todo!()
    }

    /// Every object under `prefix` (relative), complete or an error: never a partial listing.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let _ = prefix;
        todo!()
    }

    /// Delete; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        todo!()
    }
}
