//! `Store` conformance: one suite run on `file://`, `memory://` and a real S3-protocol server
//! (s3s-fs, SigV4 checked), plus what only one backend can show (raw files, bad credentials).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use patina::policy::{Compression, Secret, Storage, StorageLocation};
use patina::store::{Backend, ObjectStoreBackend, PART_SIZE, PutMode, Store, StoreError};

use crate::support::s3::S3Server;

/// Three views of one backend: prefixes `a/` and `b/`, and the bare root.
struct Stores {
    a: Store,
    b: Store,
    root: Store,
}

#[tokio::test]
async fn conformance_memory() {
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
    let view = |prefix| Store::with_backend(backend.clone(), prefix).unwrap();
    conformance(Stores {
        a: view("a/"),
        b: view("b/"),
        root: view(""),
    })
    .await;
}

#[tokio::test]
async fn conformance_file() {
    let dir = tempfile::tempdir().unwrap();
    let view = |prefix| Store::local(dir.path(), prefix).unwrap();
    conformance(Stores {
        a: view("a/"),
        b: view("b/"),
        root: view(""),
    })
    .await;
}

#[tokio::test]
async fn conformance_s3() {
    let s3 = S3Server::start().await;
    conformance(Stores {
        a: s3.store("a/"),
        b: s3.store("b/"),
        root: s3.store(""),
    })
    .await;
}

async fn conformance(stores: Stores) {
    let store = &stores.a;
    round_trip(store).await;
    create_only(store).await;
    listing(store).await;
    deletion(store).await;
    missing_objects(store).await;
    small_uploads(store).await;
    large_upload(store).await;
    abandoned_uploads(store).await;
    failed_upload_stops_the_writer(store).await;
    prefix_isolation(&stores).await;
}

async fn round_trip(store: &Store) {
    let before = chrono::Utc::now() - chrono::Duration::minutes(1);
    store
        .put(
            "rt/one.txt",
            Bytes::from_static(b"hello"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(store.get("rt/one.txt").await.unwrap(), &b"hello"[..]);
    let info = store.head("rt/one.txt").await.unwrap().expect("present");
    assert_eq!((info.key.as_str(), info.size), ("rt/one.txt", 5));
    assert!(info.last_modified > before, "{info:?}");

    // Overwrite is the default.
    store
        .put(
            "rt/one.txt",
            Bytes::from_static(b"hello again"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(store.get("rt/one.txt").await.unwrap(), &b"hello again"[..]);
}

async fn create_only(store: &Store) {
    store
        .put(
            "co/manifest.json",
            Bytes::from_static(b"first"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let err = store
        .put(
            "co/manifest.json",
            Bytes::from_static(b"second"),
            PutMode::Create,
        )
        .await
        .unwrap_err();
    match &err {
        StoreError::AlreadyExists { op, location } => {
            assert_eq!(*op, "put");
            assert_eq!(location, &store.location("co/manifest.json"));
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(err.to_string().contains("co/manifest.json"), "{err}");
    assert_eq!(store.get("co/manifest.json").await.unwrap(), &b"first"[..]);
}

async fn listing(store: &Store) {
    for (key, body) in [
        ("ls/a", "1"),
        ("ls/b/c", "22"),
        ("ls/bz", "333"),
        ("lsx/d", "4444"),
    ] {
        store
            .put(key, Bytes::from(body), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let keys = |objects: Vec<patina::store::ObjectInfo>| {
        objects
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.list("ls/").await.unwrap()),
        [
            ("ls/a".into(), 1),
            ("ls/b/c".into(), 2),
            ("ls/bz".into(), 3)
        ]
    );
    // A plain string prefix, as in S3: not only whole folders.
    assert_eq!(
        keys(store.list("ls/b").await.unwrap()),
        [("ls/b/c".into(), 2), ("ls/bz".into(), 3)]
    );
    assert_eq!(
        keys(store.list("ls").await.unwrap()),
        [
            ("ls/a".into(), 1),
            ("ls/b/c".into(), 2),
            ("ls/bz".into(), 3),
            ("lsx/d".into(), 4)
        ]
    );
    assert_eq!(
        keys(store.list("ls/a").await.unwrap()),
        [("ls/a".into(), 1)]
    );
    assert!(store.list("nothing/here/").await.unwrap().is_empty());
    assert!(store.list("ls/zzz").await.unwrap().is_empty());

    // The whole store: everything written so far, relative, sorted, complete.
    let all: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for key in ["rt/one.txt", "co/manifest.json", "ls/a", "ls/b/c", "lsx/d"] {
        assert!(all.iter().any(|k| k == key), "{key} missing from {all:?}");
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
}

async fn deletion(store: &Store) {
    store
        .put("del/x", Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap();
    store.delete("del/x").await.unwrap();
    assert_eq!(store.head("del/x").await.unwrap(), None);
    assert!(store.list("del/").await.unwrap().is_empty());
    store.delete("del/x").await.unwrap(); // again: already gone
    store.delete("never/was/there").await.unwrap();
}

async fn missing_objects(store: &Store) {
    let err = store.get("no/such.sql.zst").await.unwrap_err();
    match &err {
        StoreError::NotFound { op, location } => {
            assert_eq!(*op, "get");
            assert_eq!(location, &store.location("no/such.sql.zst"));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "get {}: object not found",
            store.location("no/such.sql.zst")
        )
    );
    assert!(matches!(
        store.get_stream("no/such.sql.zst").await.err(),
        Some(StoreError::NotFound { .. })
    ));
    assert_eq!(store.head("no/such.sql.zst").await.unwrap(), None);
}

async fn small_uploads(store: &Store) {
    let data = noise(1000, 1);
    assert_eq!(upload(store, "up/small", &data).await.unwrap(), 1000);
    assert_eq!(store.get("up/small").await.unwrap(), data);

    assert_eq!(upload(store, "up/empty", &[]).await.unwrap(), 0);
    assert_eq!(store.head("up/empty").await.unwrap().unwrap().size, 0);

    // Exactly one part: still a single put, and nothing lost at the boundary.
    let data = noise(PART_SIZE, 2);
    assert_eq!(
        upload(store, "up/one-part", &data).await.unwrap(),
        PART_SIZE as u64
    );
    assert_eq!(store.get("up/one-part").await.unwrap(), data);
}

async fn large_upload(store: &Store) {
    let len = 20 * 1024 * 1024 + 12_345; // three parts, the last one short
    assert!(len > 2 * PART_SIZE);
    let data = noise(len, 3);
    assert_eq!(upload(store, "up/large", &data).await.unwrap(), len as u64);
    assert_eq!(
        store.head("up/large").await.unwrap().unwrap().size,
        len as u64
    );
    assert!(store.get("up/large").await.unwrap() == data, "get differs");

    let mut streamed = Vec::with_capacity(len);
    let mut chunks = store.get_stream("up/large").await.unwrap();
    while let Some(chunk) = chunks.try_next().await.unwrap() {
        streamed.extend_from_slice(&chunk);
    }
    assert!(streamed == data, "get_stream differs");
}

async fn abandoned_uploads(store: &Store) {
    // Dropped within the first part, and after parts were already sent (multipart).
    for (key, len) in [("ab/small", 10), ("ab/large", 2 * PART_SIZE + 10)] {
        let (mut sink, task) = store.start_upload(key);
        let data = noise(len, 4);
        tokio::task::spawn_blocking(move || {
            sink.write_all(&data).unwrap();
            drop(sink); // no finish(): the producer failed
        })
        .await
        .unwrap();
        match task.await.unwrap() {
            Err(StoreError::Abandoned { location, .. }) => {
                assert_eq!(location, store.location(key))
            }
            other => panic!("{key}: expected Abandoned, got {other:?}"),
        }
        assert_eq!(store.head(key).await.unwrap(), None, "{key} is visible");
    }
    assert!(store.list("ab/").await.unwrap().is_empty());
}

async fn failed_upload_stops_the_writer(store: &Store) {
    // An invalid key fails the upload task at once; the writer must get an error, not block.
    let (mut sink, task) = store.start_upload("bad//key");
    assert!(
        sink.max_buffered_bytes() <= 4 * PART_SIZE,
        "an upload may hold {} bytes",
        sink.max_buffered_bytes()
    );
    let writer = tokio::task::spawn_blocking(move || {
        let part = vec![7u8; PART_SIZE];
        for _ in 0..10 {
            sink.write_all(&part)?;
        }
        sink.finish()
    });
    let result = task.await.unwrap();
    assert!(
        matches!(result, Err(StoreError::Backend { op: "upload", .. })),
        "{result:?}"
    );
    let err = writer.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("bad//key"), "{err}");
}

async fn prefix_isolation(stores: &Stores) {
    let Stores { a, b, root } = stores;
    a.put("iso/k", Bytes::from_static(b"from a"), PutMode::Overwrite)
        .await
        .unwrap();
    b.put("iso/k", Bytes::from_static(b"from b"), PutMode::Overwrite)
        .await
        .unwrap();
    b.put("iso/only-b", Bytes::from_static(b"b"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(a.get("iso/k").await.unwrap(), &b"from a"[..]);
    assert_eq!(b.get("iso/k").await.unwrap(), &b"from b"[..]);
    assert_eq!(a.head("iso/only-b").await.unwrap(), None);
    let a_keys: Vec<_> = a
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(a_keys.iter().all(|k| !k.starts_with("b/")), "{a_keys:?}");
    assert!(!a_keys.contains(&"iso/only-b".to_owned()), "{a_keys:?}");
    let b_keys: Vec<_> = b
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(b_keys, ["iso/k", "iso/only-b"]);

    // The bare root sees both, with the prefixes in the keys.
    let root_keys: Vec<_> = root
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for key in ["a/iso/k", "b/iso/k", "b/iso/only-b", "a/up/large"] {
        assert!(root_keys.iter().any(|k| k == key), "{key} missing");
    }
    a.delete("iso/k").await.unwrap();
    assert_eq!(b.get("iso/k").await.unwrap(), &b"from b"[..]);
}

#[tokio::test]
async fn s3_objects_are_plain_files_in_the_bucket() {
    let s3 = S3Server::start().await;
    let store = s3.store("prod/");
    let data = noise(2 * PART_SIZE + 99, 5);
    upload(&store, "daily/x.sql.zst", &data).await.unwrap();
    let raw = std::fs::read(s3.bucket_dir().join("prod/daily/x.sql.zst")).unwrap();
    assert!(raw == data, "raw object differs");
    upload(&store, "daily/small.sql.zst", &data[..PART_SIZE])
        .await
        .unwrap();

    // s3s-fs gives multipart objects the S3-style ETag `md5-PARTS` (and rejects parts under
    // 5 MiB but the last): the large object went up in 3 parts, the small one in one put.
    let raw_s3 = AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_bucket_name(&s3.bucket)
        .with_region("auto")
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let etag = |key: &'static str| {
        let raw_s3 = &raw_s3;
        async move {
            let meta = raw_s3.head(&ObjectPath::from(key)).await.unwrap();
            meta.e_tag.unwrap().trim_matches('"').to_owned()
        }
    };
    let large = etag("prod/daily/x.sql.zst").await;
    assert!(large.ends_with("-3"), "{large}");
    let small = etag("prod/daily/small.sql.zst").await;
    assert!(!small.contains('-'), "{small}");

    let (mut sink, task) = store.start_upload("daily/gone.sql.zst");
    tokio::task::spawn_blocking(move || sink.write_all(&noise(2 * PART_SIZE + 1, 6)).unwrap())
        .await
        .unwrap();
    // (The sink is dropped without `finish`: the producer failed.)
    assert!(task.await.unwrap().is_err());
    assert!(!s3.bucket_dir().join("prod/daily/gone.sql.zst").exists());
    // The abandoned multipart upload was aborted, not left behind.
    assert_eq!(s3.pending_multipart_uploads(), 0);
}

#[tokio::test]
async fn s3_wrong_secret_names_the_operation_and_hides_the_secret() {
    let s3 = S3Server::start().await;
    let mut storage = s3.storage("p/");
    let wrong = "wrong-secret-Zx81Qq";
    storage.secret_access_key = Some(Secret::new(wrong));
    let store = Store::open(&storage).unwrap();
    assert!(!format!("{store:?}").contains(wrong));

    let put = store
        .put("k.json", Bytes::from_static(b"{}"), PutMode::Overwrite)
        .await
        .unwrap_err();
    let list = store.list("daily/").await.unwrap_err();
    let get = store.get("k.json").await.unwrap_err();
    for (err, expected) in [
        (&put, "put s3://patina/p/k.json: "),
        (&list, "list objects in s3://patina/p/daily/: "),
        (&get, "get s3://patina/p/k.json: "),
    ] {
        let text = format!("{err} {err:?} {:?}", std::error::Error::source(err));
        eprintln!("{err}");
        assert!(err.to_string().starts_with(expected), "{err}");
        assert!(!text.contains(wrong), "secret leaked: {text}");
        assert!(!text.contains(&s3.secret_key), "secret leaked: {text}");
    }

    // A failed streamed upload stops the writer with the reason, without the secret.
    let (mut sink, task) = store.start_upload("big.sql.zst");
    let writer = tokio::task::spawn_blocking(move || {
        let part = vec![1u8; PART_SIZE];
        for _ in 0..8 {
            sink.write_all(&part)?;
        }
        sink.finish()
    });
    let err = task.await.unwrap().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("upload s3://patina/p/big.sql.zst: "),
        "{err}"
    );
    let writer_err = writer.await.unwrap().unwrap_err().to_string();
    assert!(writer_err.contains("big.sql.zst"), "{writer_err}");
    assert!(!writer_err.contains(wrong) && !err.to_string().contains(wrong));
}

#[tokio::test]
async fn locations_name_the_backend_the_prefix_and_the_key() {
    assert_eq!(Store::memory("").location("k"), "memory://k");
    assert_eq!(
        Store::memory("p/").location("daily/x.sql.zst"),
        "memory://p/daily/x.sql.zst"
    );
    assert_eq!(Store::memory("p").location("k"), "memory://p/k");

    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().canonicalize().unwrap();
    assert_eq!(
        Store::local(dir.path(), "").unwrap().location("k"),
        format!("file://{}/k", abs.display())
    );
    assert_eq!(
        Store::local(dir.path(), "p/").unwrap().location("d/k"),
        format!("file://{}/p/d/k", abs.display())
    );

    let s3 = Storage {
        location: StorageLocation::S3 {
            bucket: "grove-patina".into(),
        },
        endpoint: Some("https://acct.r2.cloudflarestorage.com".into()),
        region: None,
        access_key_id: Some(Secret::new("id")),
        secret_access_key: Some(Secret::new("s3cr3t")),
        prefix: "prod/".into(),
        compression: Compression::Zstd,
    };
    let store = Store::open(&s3).unwrap();
    assert_eq!(store.location("k"), "s3://grove-patina/prod/k");
    assert_eq!(format!("{store:?}"), r#"Store("s3://grove-patina/prod/")"#);
    let bare = Storage {
        prefix: String::new(),
        ..s3.clone()
    };
    assert_eq!(
        Store::open(&bare).unwrap().location(""),
        "s3://grove-patina/"
    );

    let memory = Storage {
        location: StorageLocation::Memory,
        ..s3
    };
    assert_eq!(
        Store::open(&memory).unwrap().location("k"),
        "memory://prod/k"
    );
}

#[tokio::test]
async fn file_storage_creates_its_folder_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let storage = |path| Storage {
        location: StorageLocation::File(path),
        endpoint: None,
        region: None,
        access_key_id: None,
        secret_access_key: None,
        prefix: String::new(),
        compression: Compression::Zstd,
    };
    let nested = dir.path().join("backups/patina");
    let store = Store::open(&storage(nested.clone())).unwrap();
    store
        .put("a/b", Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(std::fs::read(nested.join("a/b")).unwrap(), b"x");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = Store::open(&storage(file.join("sub"))).unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("a-file/sub"), "{err}");
}

#[test]
fn s3_needs_both_keys_or_none() {
    let storage = Storage {
        location: StorageLocation::S3 { bucket: "b".into() },
        endpoint: None,
        region: None,
        access_key_id: Some(Secret::new("id")),
        secret_access_key: None,
        prefix: String::new(),
        compression: Compression::Zstd,
    };
    let err = Store::open(&storage).unwrap_err();
    assert!(err.to_string().contains("secret_access_key"), "{err}");
}

/// Stream `data` through an upload sink from a blocking thread, in odd-sized writes.
async fn upload(store: &Store, key: &str, data: &[u8]) -> Result<u64, StoreError> {
    let (mut sink, task) = store.start_upload(key);
    let data = data.to_vec();
    let writer = tokio::task::spawn_blocking(move || {
        for chunk in data.chunks(100_003) {
            sink.write_all(chunk)?;
        }
        sink.finish()
    });
    let stored = task.await.unwrap();
    if stored.is_ok() {
        writer.await.unwrap().unwrap();
    }
    stored
}

/// Non-repeating pseudo-random bytes (splitmix64): a misplaced or repeated part cannot match.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}
