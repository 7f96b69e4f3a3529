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
use std::sync::{Arc, Mutex};

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
    journal: Arc<Mutex<Vec<Entry>>>,
    /// List requests served (each page of a listing is one; Class A on R2).
    lists: Arc<std::sync::atomic::AtomicU64>,
}

/// One request that changed (or tried to change) the bucket, as a journaled server saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the server finished handling it.
    pub at: std::time::SystemTime,
    pub method: String,
    /// `/{bucket}/{key}`.
    pub path: String,
    pub query: String,
    /// The access key that signed it.
    pub signer: String,
    /// The response's status (0: the service failed).
    pub status: u16,
    /// For lease and claim objects, and batch deletes: the body sent.
    pub body: Option<String>,
}

impl Entry {
    /// The object key (without the bucket).
    pub fn key(&self) -> &str {
        let path = self.path.trim_start_matches('/');
        path.split_once('/').map_or("", |(_, k)| k)
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The object keys this request deleted (or tried to): a `DELETE` of one, or the `<Key>`s
    /// of a batch delete.
    pub fn deleted(&self) -> Vec<String> {
        if self.method == "DELETE" && self.query.is_empty() {
            return vec![self.key().to_string()];
        }
        if self.method != "POST" || self.query != "delete" {
            return Vec::new();
        }
        let body = self.body.as_deref().unwrap_or_default();
        body.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(|k| k.replace("&amp;", "&"))
            .collect()
    }
}

/// The access key in a SigV4 `Authorization` header.
fn signer(headers: &hyper::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .unwrap_or_default()
        .to_string()
}

impl S3Server {
    /// Start the server on `127.0.0.1:0` with SigV4 auth on and the bucket created.
    /// Call from within a tokio runtime (`#[tokio::test]`).
    pub async fn start() -> S3Server {
        S3Server::start_with_keys("test-access-key", "test-secret-key-d0nt-l3ak").await
    }

    /// A server for several daemons (DESIGN §16): requests are handled one at a time, so a
    /// conditional write is atomic as on R2 or S3 (s3s-fs checks the condition and writes in
    /// two steps), and every request that changes something is journaled in order with the
    /// access key that signed it — give each node its own key (`extra_keys`) to know who did
    /// what. Lease and claim objects' bodies are journaled too.
    pub async fn start_journaled(extra_keys: &[(&str, &str)]) -> S3Server {
        S3Server::start_inner(
            "test-access-key",
            "test-secret-key-d0nt-l3ak",
            extra_keys,
            true,
        )
        .await
    }

    /// [`S3Server::start`] accepting `extra_keys` too, requests handled concurrently (conditional
    /// writes are not atomic here: for benchmarks, not for lease tests).
    pub async fn start_with_node_keys(extra_keys: &[(&str, &str)]) -> S3Server {
        S3Server::start_inner(
            "test-access-key",
            "test-secret-key-d0nt-l3ak",
            extra_keys,
            false,
        )
        .await
    }

    /// The journal of a [`S3Server::start_journaled`] server, in the order requests were
    /// handled.
    pub fn journal(&self) -> Vec<Entry> {
        self.journal.lock().unwrap().clone()
    }

    /// How many list requests (pages of up to 1,000 keys) the server has answered.
    pub fn list_requests(&self) -> u64 {
        self.lists.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// [`S3Server::start`] with chosen credentials (the secrets suite uses recognisable ones).
    pub async fn start_with_keys(access_key: &str, secret_key: &str) -> S3Server {
        S3Server::start_inner(access_key, secret_key, &[], false).await
    }

    async fn start_inner(
        access_key: &str,
        secret_key: &str,
        extra_keys: &[(&str, &str)],
        serialized: bool,
    ) -> S3Server {
        let root = tempfile::tempdir().expect("create the s3s-fs root");
        let bucket = "patina".to_owned();
        std::fs::create_dir(root.path().join(&bucket)).expect("create the bucket folder");
        let access_key = access_key.to_owned();
        let secret_key = secret_key.to_owned();

        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs on the root folder");
        let mut service = S3ServiceBuilder::new(fs);
        let mut auth = SimpleAuth::from_single(access_key.clone(), secret_key.clone());
        for (ak, sk) in extra_keys {
            auth.register((*ak).to_owned(), (*sk).to_owned().into());
        }
        service.set_auth(auth);
        let service = service.build();
        let journal: Arc<Mutex<Vec<Entry>>> = Arc::default();
        let lists: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
        let handler = {
            let journal = Arc::clone(&journal);
            let lists = Arc::clone(&lists);
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                let journal = Arc::clone(&journal);
                let lock = Arc::clone(&one_at_a_time);
                if req.method() == hyper::Method::GET
                    && req.uri().query().is_some_and(|q| q.contains("list-type="))
                {
                    lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                async move {
                    if !serialized {
                        return service.call(req.map(s3s::Body::from)).await;
                    }
                    let _turn = lock.lock().await;
                    let method = req.method().to_string();
                    let path = req.uri().path().to_string();
                    let query = req.uri().query().unwrap_or_default().to_string();
                    let signer = signer(req.headers());
                    let mut req = req.map(s3s::Body::from);
                    let changes = method != "GET" && method != "HEAD";
                    // Lease and claim bodies, and the keys of a batch delete (`POST ?delete`,
                    // which object_store sends even for one key).
                    let body = if changes
                        && (path.contains("/leases/")
                            || path.contains("/claims/")
                            || query == "delete")
                    {
                        let bytes = req.body_mut().store_all_limited(1 << 20).await.ok();
                        bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
                    } else {
                        None
                    };
                    let response = service.call(req).await;
                    if changes {
                        let status = response.as_ref().map_or(0, |r| r.status().as_u16());
                        journal.lock().unwrap().push(Entry {
                            at: std::time::SystemTime::now(),
                            method,
                            path,
                            query,
                            signer,
                            status,
                            body,
                        });
                    }
                    response
                }
            })
        };

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accept_loop = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), handler.clone())
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
            journal,
            lists,
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
