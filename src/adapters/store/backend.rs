//! The storage interface: the few verbs Patina needs from a bucket or folder, with conditional
//! writes and etags, implemented once per kind of storage.
//!
//! A [`Backend`] sees whole keys (the configured prefix already applied) and knows nothing of
//! prefixes, request counting or display messages: [`Store`](super::Store) adds those. Every
//! implementation passes the same conformance suite (`tests/integration/store.rs`).
//!
//! What each implementation can do, as measured by that suite:
//!
//! | backend | `Create` | `Replace(etag)` | etag in `put`/`head` | etag in `list` |
//! | --- | --- | --- | --- | --- |
//! | `memory://` | yes | yes | yes | yes |
//! | `file://` | yes (atomic hard link) | **no**: [`BackendError::Unsupported`] | yes | yes |
//! | `s3://` | yes (`If-None-Match: *`) | yes (`If-Match`) | yes | when the server sends it |
//!
//! Real S3, R2 and MinIO send etags in listings; s3s-fs, the S3 server the tests run, does not,
//! so a listed etag is an `Option`. s3s-fs also checks a condition before writing, without a
//! lock: racing conditional writes can all succeed there, unlike on S3 and R2; on `memory://`
//! and `file://` exactly one wins. A mode a backend cannot honour fails with
//! [`BackendError::Unsupported`] before anything is written: it is never downgraded to a plain
//! overwrite.

use async_trait::async_trait;
use bytes::Bytes;

use futures::stream::BoxStream;

pub use crate::inventory::{ETag, ObjectInfo};

/// How a whole-object put treats an object already at the key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PutMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Only if nothing is there (`If-None-Match: *`); else [`BackendError::AlreadyExists`].
    Create,
    /// Only if the object is still at this version (`If-Match`); else (also when it was
    /// deleted) [`BackendError::Precondition`].
    Replace(ETag),
}

impl PutMode {
    /// The mode in words, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            PutMode::Overwrite => "overwrite an object",
            PutMode::Create => "create an object only if absent (If-None-Match)",
            PutMode::Replace(_) => "replace an object only if its etag matches (If-Match)",
        }
    }
}

/// Parts of a streamed upload, in order. Every part but the last is the same size. The stream
/// ends after the last part when the producer finished; an `Err` item means the producer gave
/// up, and the backend must abandon the upload (nothing visible at the key) and return it.
pub type Parts<'a> = BoxStream<'a, Result<Bytes, BackendError>>;

/// A failed backend operation on `key` (the whole key, prefix included).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{key}: object not found")]
    NotFound { key: String },
    /// [`PutMode::Create`] found an object at the key.
    #[error("{key}: object already exists")]
    AlreadyExists { key: String },
    /// [`PutMode::Replace`] found another version at the key, or none.
    #[error("{key}: object is no longer at etag {expected_etag}")]
    Precondition { key: String, expected_etag: ETag },
    /// The backend cannot do this at all (a put mode, typically): retrying will not help.
    #[error("{key}: {backend} storage cannot {operation}")]
    Unsupported {
        key: String,
        operation: &'static str,
        /// Which storage, e.g. `file://`.
        backend: String,
    },
    /// The producer of an upload stopped before finishing.
    #[error("{key}: upload abandoned: {reason}")]
    Abandoned { key: String, reason: String },
    /// Anything else: network, permissions, an invalid key.
    #[error("{key}: {source}")]
    Other {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A bucket or folder: put, upload, get, head, list, delete. Keys are `/`-separated; a key
/// must not be empty, end with `/` or contain empty segments.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Display location of the root, ending with `/` (or `://`): `s3://bucket/`,
    /// `file:///var/backups/`, `memory://`. Never holds credentials.
    fn root(&self) -> &str;

    /// Store a small object whole, atomically, as `mode` allows. Returns the new etag when the
    /// backend reports one.
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<ETag>, BackendError>;

    /// Store an object streamed in parts (overwriting): nothing is visible at `key` until the
    /// last part is in, and nothing at all if the stream yields an error or this fails.
    /// Pulls the next part only when fewer than
    /// [`MAX_PARTS_IN_FLIGHT`](super::MAX_PARTS_IN_FLIGHT) are being sent, so a slow network
    /// holds the producer back instead of filling memory. Returns the bytes stored.
    async fn upload(&self, key: &str, parts: Parts<'_>) -> Result<u64, BackendError>;

    /// A small object's bytes, whole.
    async fn get(&self, key: &str) -> Result<Bytes, BackendError>;

    /// A small object's bytes and its etag, from one read (so they belong together); `None`
    /// when absent. What leases are read with: a backend that cannot say both at once says
    /// [`BackendError::Unsupported`].
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, ETag)>, BackendError> {
        Err(BackendError::Unsupported {
            key: key.to_owned(),
            operation: "read an object with its etag",
            backend: self.root().to_owned(),
        })
    }

    /// An object's bytes as a stream, with no deadline on the whole transfer (only on each
    /// read): a large restore may take many minutes.
    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError>;

    /// `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BackendError>;

    /// Every object whose key starts with `prefix` (a plain string prefix, as in S3:
    /// `daily/2026-11` matches `daily/2026-11-22/…`), sorted by key; complete or an error,
    /// never a partial listing.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;

    /// As [`list`](Backend::list), only the keys that sort after `after` (S3's `start-after`:
    /// the server skips the rest, so they cost no requests). This default lists everything and
    /// filters.
    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut objects = self.list(prefix).await?;
        objects.retain(|o| o.key.as_str() > after);
        Ok(objects)
    }

    /// Delete; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;
}
