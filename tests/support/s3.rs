//! A real S3-protocol server for tests: s3s-fs (SigV4 signatures checked, multipart, conditional
//! writes) serving one bucket from a temporary folder, in the test's own tokio runtime.
//!
//! ```ignore
//! let s3 = S3Server::start().await;
//! let store = Store::open(&s3.storage("prod/")).unwrap();
//! // … raw objects are files under s3.bucket_dir()
//! ```
//!
//! The server stops when the `S3Server` is dropped (or when the test's runtime ends).

// Shared by every integration test module; not each of them uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use patina::policy::{Compression, Secret, Storage, StorageLocation};
use patina::store::Store;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running s3s-fs server with one empty bucket.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub addr: SocketAddr,
    /// Keeps the served folder alive; the bucket is its sub-folder `bucket`.
    root: TempDir,
    accept_loop: JoinHandle<()>,
}

impl S3Server {
    /// Start the server on `127.0.0.1:0` with SigV4 auth on and the bucket created.
    /// Call from within a tokio runtime (`#[tokio::test]`).
    pub async fn start() -> S3Server {
        S3Server::start_with_keys("test-access-key", "test-secret-key-d0nt-l3ak").await
    }

    /// [`S3Server::start`] with chosen credentials (the secrets suite uses recognisable ones).
    pub async fn start_with_keys(access_key: &str, secret_key: &str) -> S3Server {
        let root = tempfile::tempdir().expect("create the s3s-fs root");
        let bucket = "patina".to_owned();
        std::fs::create_dir(root.path().join(&bucket)).expect("create the bucket folder");
        let access_key = access_key.to_owned();
        let secret_key = secret_key.to_owned();

        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs on the root folder");
        let mut service = S3ServiceBuilder::new(fs);
        service.set_auth(SimpleAuth::from_single(
            access_key.clone(),
            secret_key.clone(),
        ));
        let service = service.build();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accept_loop = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });

        S3Server {
            endpoint: format!("http://{addr}"),
            bucket,
            access_key,
            secret_key,
            addr,
            root,
            accept_loop,
        }
    }

    /// The policy's `[storage]` pointing at this server: `s3://{bucket}`, the endpoint, region
    /// `auto`, the server's keys, zstd compression, and `prefix` (empty or ending with `/`).
    pub fn storage(&self, prefix: &str) -> Storage {
        Storage {
            location: StorageLocation::S3 {
                bucket: self.bucket.clone(),
            },
            endpoint: Some(self.endpoint.clone()),
            region: Some("auto".to_owned()),
            access_key_id: Some(Secret::new(self.access_key.clone())),
            secret_access_key: Some(Secret::new(self.secret_key.clone())),
            prefix: prefix.to_owned(),
            compression: Compression::Zstd,
        }
    }

    /// A [`Store`] on this server's bucket with `prefix`.
    pub fn store(&self, prefix: &str) -> Store {
        Store::open(&self.storage(prefix)).expect("open the s3s-fs store")
    }

    /// The bucket's folder: object `a/b.sql.zst` is the file `bucket_dir()/a/b.sql.zst`.
    /// (s3s-fs keeps multipart parts and metadata in the root, outside this folder.)
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    /// Multipart uploads started but neither completed nor aborted: their parts would stay
    /// billed on R2/S3. Zero after every finished or properly abandoned upload.
    pub fn pending_multipart_uploads(&self) -> usize {
        std::fs::read_dir(self.root.path())
            .expect("read the s3s-fs root")
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
