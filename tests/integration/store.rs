//! The storage interface's conformance suite: one set of cases run on every [`Backend`] —
//! `file://`, `memory://` and a real S3-protocol server (s3s-fs, SigV4 checked) — through the
//! [`Store`] façade, plus what only one backend can show (raw files, bad credentials).
//!
//! Adding a backend: a fixture function and one line in `conformance!`, with what it can do.

use std::any::Any;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use patina::policy::{Compression, Secret, Storage, StorageLocation};
use patina::store::{
    Backend, BackendError, ETag, ObjectStoreBackend, PART_SIZE, PutMode, Store, StoreError,
};

use crate::support::s3::S3Server;

/// What a backend can do, as measured by this suite: each flag but `atomic` is asserted both
/// ways, so a backend that gains or loses a capability fails here until its line is updated.
#[derive(Debug, Clone, Copy)]
struct Can {
    /// `PutMode::Create` (`If-None-Match: *`); else `Unsupported`.
    create: bool,
    /// `PutMode::Replace(etag)` (`If-Match`); else `Unsupported`.
    replace: bool,
    /// Listings carry etags; else `None` in every listed `ObjectInfo`.
    list_etags: bool,
    /// Conditional writes hold under concurrency: of writers racing with one condition, exactly
    /// one wins. Not checked when false (a race may happen not to show).
    atomic: bool,
}

/// A backend under test and whatever must live as long as it (a folder, a server).
struct Fixture {
    backend: Arc<dyn Backend>,
    _keep: Box<dyn Any>,
}

async fn memory() -> Fixture {
    Fixture {
        backend: Arc::new(ObjectStoreBackend::memory()),
        _keep: Box::new(()),
    }
}

async fn file() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        backend: Arc::new(ObjectStoreBackend::local(dir.path()).unwrap()),
        _keep: Box::new(dir),
    }
}

async fn s3() -> Fixture {
    let server = S3Server::start().await;
    let backend = ObjectStoreBackend::s3(&server.bucket, &server.storage("")).unwrap();
    Fixture {
        backend: Arc::new(backend),
        _keep: Box::new(server),
    }
}

macro_rules! conformance {
    ($($test:ident: $fixture:ident, $can:expr;)*) => {$(
        // Several threads, so that racing writers really overlap.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            let fixture = $fixture().await;
            conformance(fixture.backend.clone(), $can).await;
        }
    )*};
}

conformance! {
    conformance_memory: memory, Can { create: true, replace: true, list_etags: true, atomic: true };
    // object_store's LocalFileSystem creates with an atomic hard link but has no If-Match.
    conformance_file: file, Can { create: true, replace: false, list_etags: true, atomic: true };
    // s3s-fs leaves ETag out of ListObjectsV2, and checks a condition before writing, without a
    // lock: of 16 writers racing on one key with 256 KiB bodies, 5 to 16 "won" in each of 20
    // rounds (Create and Replace alike). Real S3, R2 and MinIO list etags and decide atomically.
    conformance_s3: s3, Can { create: true, replace: true, list_etags: false, atomic: false };
}

/// Three views of one backend: prefixes `a/` and `b/`, and the bare root.
struct Stores {
    a: Store,
    b: Store,
    root: Store,
}

async fn conformance(backend: Arc<dyn Backend>, can: Can) {
    let view = |prefix| Store::with_backend(backend.clone(), prefix).unwrap();
    let stores = Stores {
        a: view("a/"),
        b: view("b/"),
        root: view(""),
    };
    let store = &stores.a;
    round_trip(store).await;
    etags(store, can).await;
    create_only(store, can).await;
    concurrent_creates(store, can).await;
    replace_if_etag(store, backend.as_ref(), can).await;
    listing(store, can).await;
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
    assert_eq!(PutMode::default(), PutMode::Overwrite);
    store
        .put(
            "rt/one.txt",
            Bytes::from_static(b"hello again"),
            PutMode::default(),
        )
        .await
        .unwrap();
    assert_eq!(store.get("rt/one.txt").await.unwrap(), &b"hello again"[..]);
}

/// Every put reports the new etag; `head` and listings give the same one; an overwrite
/// changes it, even to the same size.
async fn etags(store: &Store, can: Can) {
    let put = |body: &'static [u8]| async move {
        store
            .put(
                "et/lease.json",
                Bytes::from_static(body),
                PutMode::Overwrite,
            )
            .await
            .unwrap()
            .expect("put returns an etag")
    };
    let first = put(b"{\"generation\":1}").await;
    let head = store.head("et/lease.json").await.unwrap().unwrap();
    assert_eq!(head.etag.as_ref(), Some(&first));
    let listed = store.list("et/").await.unwrap();
    assert_eq!(listed.len(), 1);
    let expected = can.list_etags.then(|| first.clone());
    assert_eq!(listed[0].etag, expected, "etag in the listing");

    let second = put(b"{\"generation\":2}").await;
    assert_ne!(first, second, "an overwrite keeps the etag");
    let head = store.head("et/lease.json").await.unwrap().unwrap();
    assert_eq!(head.etag.as_ref(), Some(&second));

    // A read with its etag (what leases use): the bytes and the etag of the same version.
    let (bytes, etag) = store
        .get_versioned("et/lease.json")
        .await
        .unwrap()
        .expect("present");
    assert_eq!((&bytes[..], &etag), (&b"{\"generation\":2}"[..], &second));
    assert!(
        store
            .get_versioned("et/absent.json")
            .await
            .unwrap()
            .is_none()
    );
}

async fn create_only(store: &Store, can: Can) {
    let created = store
        .put(
            "co/manifest.json",
            Bytes::from_static(b"first"),
            PutMode::Create,
        )
        .await;
    if !can.create {
        assert_unsupported(store, "co/manifest.json", created.unwrap_err());
        assert_eq!(store.head("co/manifest.json").await.unwrap(), None);
        return;
    }
    let etag = created.unwrap().expect("create returns an etag");
    let head = store.head("co/manifest.json").await.unwrap().unwrap();
    assert_eq!(head.etag, Some(etag));

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

/// Body of each racing writer: large enough that a check-then-write backend lets several win.
const RACE_BODY: usize = 256 * 1024;

/// Several writers race to create one key (a claim, DESIGN §16): exactly one wins.
async fn concurrent_creates(store: &Store, can: Can) {
    if !(can.create && can.atomic) {
        return;
    }
    let racers = (0..8u8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let body = Bytes::from(vec![i; RACE_BODY]);
            store.put("race/claim.json", body, PutMode::Create).await
        })
    });
    let mut winners = Vec::new();
    for (i, racer) in racers.enumerate() {
        match racer.await.unwrap() {
            Ok(_) => winners.push(i as u8),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("racer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.get("race/claim.json").await.unwrap();
    assert!(
        stored == vec![winners[0]; RACE_BODY],
        "not the winner's bytes"
    );
}

/// Replace-if-etag, the lease renewal of DESIGN §16.
async fn replace_if_etag(store: &Store, backend: &dyn Backend, can: Can) {
    let key = "rp/lease.json";
    let v1 = store
        .put(key, Bytes::from_static(b"v1"), PutMode::Overwrite)
        .await
        .unwrap()
        .unwrap();
    let replaced = store
        .put(key, Bytes::from_static(b"v2"), PutMode::Replace(v1.clone()))
        .await;
    if !can.replace {
        // Never a silent overwrite.
        assert_unsupported(store, key, replaced.unwrap_err());
        assert_eq!(store.get(key).await.unwrap(), &b"v1"[..]);
        return;
    }
    let v2 = replaced.unwrap().expect("replace returns the new etag");
    assert_ne!(v1, v2);
    assert_eq!(store.get(key).await.unwrap(), &b"v2"[..]);
    assert_eq!(
        store.head(key).await.unwrap().unwrap().etag.as_ref(),
        Some(&v2)
    );

    // A stale etag: someone else wrote since we read.
    let err = store
        .put(key, Bytes::from_static(b"v3"), PutMode::Replace(v1.clone()))
        .await
        .unwrap_err();
    assert_precondition(store, key, &v1, err);
    assert_eq!(store.get(key).await.unwrap(), &b"v2"[..]);

    // The same through the interface itself: the error names the whole key.
    let full = format!("a/{key}");
    match backend
        .put(
            &full,
            Bytes::from_static(b"v3"),
            PutMode::Replace(v1.clone()),
        )
        .await
    {
        Err(BackendError::Precondition { key, expected_etag }) => {
            assert_eq!((key.as_str(), &expected_etag), (full.as_str(), &v1));
        }
        other => panic!("expected Precondition, got {other:?}"),
    }

    // Holders renew with the same etag at once: exactly one wins.
    if can.atomic {
        let racers = (0..8u8).map(|i| {
            let store = store.clone();
            let v2 = v2.clone();
            tokio::spawn(async move {
                let body = Bytes::from(vec![i; RACE_BODY]);
                store.put("rp/lease.json", body, PutMode::Replace(v2)).await
            })
        });
        let mut winners = Vec::new();
        for (i, racer) in racers.enumerate() {
            match racer.await.unwrap() {
                Ok(_) => winners.push(i as u8),
                Err(StoreError::Precondition { .. }) => {}
                Err(e) => panic!("racer {i}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let stored = store.get(key).await.unwrap();
        assert!(
            stored == vec![winners[0]; RACE_BODY],
            "not the winner's bytes"
        );
    }

    // A deleted object has no version to match.
    let current = store.head(key).await.unwrap().unwrap().etag.unwrap();
    store.delete(key).await.unwrap();
    let err = store
        .put(
            key,
            Bytes::from_static(b"v4"),
            PutMode::Replace(current.clone()),
        )
        .await
        .unwrap_err();
    assert_precondition(store, key, &current, err);
    assert_eq!(store.head(key).await.unwrap(), None);
}

fn assert_precondition(store: &Store, key: &str, stale: &ETag, err: StoreError) {
    match &err {
        StoreError::Precondition {
            op,
            location,
            expected_etag,
        } => {
            assert_eq!(*op, "put");
            assert_eq!(location, &store.location(key));
            assert_eq!(expected_etag, stale);
        }
        other => panic!("expected Precondition, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(key) && text.contains(stale.as_str()),
        "{text}"
    );
}

fn assert_unsupported(store: &Store, key: &str, err: StoreError) {
    match &err {
        StoreError::Unsupported { op, location, .. } => {
            assert_eq!(*op, "put");
            assert_eq!(location, &store.location(key));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("use s3://"), "no hint: {text}");
}

async fn listing(store: &Store, can: Can) {
    let mut etags = std::collections::HashMap::new();
    for (key, body) in [
        ("ls/a", "1"),
        ("ls/b/c", "22"),
        ("ls/bz", "333"),
        ("lsx/d", "4444"),
    ] {
        let etag = store
            .put(key, Bytes::from(body), PutMode::Overwrite)
            .await
            .unwrap();
        etags.insert(key, etag);
    }
    for listed in store.list("ls").await.unwrap() {
        let expected = etags[listed.key.as_str()]
            .clone()
            .filter(|_| can.list_etags);
        assert_eq!(listed.etag, expected, "{listed:?}");
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
    let head = store.head("up/large").await.unwrap().unwrap();
    assert_eq!(head.size, len as u64);
    assert!(
        head.etag.is_some(),
        "a multipart object has an etag: {head:?}"
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
