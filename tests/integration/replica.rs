//! Replicas (DESIGN §15, issue 16) against real storage: the in-process S3 server as primary
//! and a second S3 server (behind the fault-injecting proxy) and a `file://` folder as
//! replicas; a daemon driven pass by pass with a manual clock, then the real `patina` binary
//! and the HTTP API on the buckets it left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::inventory::Inventory;
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::replica::{self, Destination};
use patina::store::{Backend, BackendError, ObjectInfo, ObjectStoreBackend, Parts, PutMode, Store};

use crate::support::faulty::{Fault, FaultyProxy};
use crate::support::s3::S3Server;
use crate::support::sqlite3;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct World {
    places: Places,
    clock: ManualClock,
    reconciler: Arc<Reconciler>,
}

/// `[storage]`-style keys for an S3 server reached at `endpoint`.
fn s3_keys(server: &S3Server, endpoint: &str) -> String {
    format!(
        "url = \"s3://{}\"\nendpoint = \"{endpoint}\"\nregion = \"auto\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        server.bucket, server.access_key, server.secret_key
    )
}

/// The servers and the folder a [`World`] runs on.
struct Places {
    dir: tempfile::TempDir,
    primary: S3Server,
    primary_proxy: FaultyProxy,
    offsite: S3Server,
    offsite_proxy: FaultyProxy,
}

impl Places {
    /// Write `patina.toml` (with or without the replicas) and parse it.
    fn write_policy(&self, replicas: bool) -> Policy {
        let mut text = format!(
            "[daemon]\ntick = \"60s\"\napi_token = \"tok-replica-test\"\n\n[storage]\n{}\n\
             [priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
             [retention]\ndaily = \"30d\"\nweekly = \"12w\"\narchive = \"0 4 * * SUN\"\n\n\
             [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n",
            s3_keys(&self.primary, &self.primary_proxy.endpoint())
        );
        if replicas {
            text.push_str(&format!(
                "\n[[replica]]\nname = \"offsite\"\n{}daily = \"90d\"\n\n\
                 [[replica]]\nname = \"nas\"\nurl = \"file://nas\"\n",
                s3_keys(&self.offsite, &self.offsite_proxy.endpoint())
            ));
        }
        std::fs::write(self.dir.path().join("patina.toml"), &text).unwrap();
        patina::config::from_str(&text, "patina.toml", self.dir.path(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl std::ops::Deref for World {
    type Target = Places;
    fn deref(&self) -> &Places {
        &self.places
    }
}

impl World {
    /// A daemon on the primary (through its proxy); with `replicas`, also copying to
    /// "offsite" (the second S3 server, through its proxy) and "nas" (`file://nas`).
    async fn new(replicas: bool) -> World {
        let primary = S3Server::start().await;
        let primary_proxy = FaultyProxy::start(primary.addr).await;
        let offsite = S3Server::start().await;
        let offsite_proxy = FaultyProxy::start(offsite.addr).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(DEMO_DB, dir.path().join("app.db")).unwrap();
        let places = Places {
            dir,
            primary,
            primary_proxy,
            offsite,
            offsite_proxy,
        };
        let policy = places.write_policy(replicas);
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
        let clock = ManualClock::new(t("2026-11-13T03:00:10Z"));
        let reconciler = Arc::new(Reconciler::new(
            Arc::new(policy),
            store,
            catalog,
            clock.clock(),
            Arc::new(Quiet),
        ));
        World {
            places,
            clock,
            reconciler,
        }
    }

    /// Declare (or drop) the replicas for the next pass, as a reload does.
    fn set_replicas(&self, on: bool) {
        let policy = self.write_policy(on);
        let store = Store::open(&policy.storage).unwrap();
        self.reconciler.set_policy(Arc::new(policy), store);
    }

    /// Two passes at `at`, each waited for (backups, archives and syncs included).
    async fn passes(&self, at: DateTime<Utc>) {
        self.clock.set(at);
        for _ in 0..2 {
            self.reconciler.run_once().await.unwrap();
            self.reconciler.wait_idle().await;
        }
    }

    /// The days from `from` to `to` (inclusive): passes at 03:00:10 and 15:00:10.
    async fn days(&self, from: &str, to: &str) {
        let mut day = t(&format!("{from}T03:00:10Z"));
        let end = t(&format!("{to}T15:00:10Z"));
        while day <= end {
            self.passes(day).await;
            self.passes(day + chrono::Duration::hours(12)).await;
            day += chrono::Duration::days(1);
        }
    }

    /// An absolute path in the test's folder (the binary runs in the crate's folder).
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn nas_dir(&self) -> PathBuf {
        self.dir.path().join("nas")
    }

    /// Run the `patina` binary on this world's policy, off the runtime's threads (the S3
    /// servers it talks to are served by this process).
    async fn patina(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patina"));
        cmd.arg("--config")
            .arg(self.dir.path().join("patina.toml"))
            .args(args)
            .env("PATINA_LOG", "warn")
            .env("USER", "replica-tester");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }
}

/// Every file under `root`, by relative key, with its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let key = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(key, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The primary's committed keys (data and manifests).
fn committed(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let inv = Inventory::classify(
        files
            .iter()
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
                last_modified: Utc::now(),
                etag: None,
            })
            .collect(),
    );
    inv.dumps
        .iter()
        .flat_map(|d| [d.data.key.clone(), d.manifest_key.clone()])
        .chain(
            inv.archives
                .iter()
                .flat_map(|a| [a.data.key.clone(), a.manifest_key.clone()]),
        )
        .collect()
}

/// Assert `replica` holds every committed object of `primary`, byte for byte.
fn assert_mirrors(primary: &BTreeMap<String, Vec<u8>>, replica: &BTreeMap<String, Vec<u8>>) {
    let keys = committed(primary);
    assert!(!keys.is_empty());
    for key in keys {
        let copy = replica
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is missing from the replica"));
        assert!(copy == &primary[&key], "{key} differs on the replica");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn backups_reach_replicas_after_an_outage_and_a_replica_added_later_gets_the_history() {
    let w = World::new(false).await;
    // Three days with no replica declared.
    w.days("2026-11-13", "2026-11-15").await;
    assert!(files(&w.offsite.bucket_dir()).is_empty());

    // The replicas are declared, but "offsite" is down: backups still commit on the primary
    // (one pass a day: each sync of the dead replica waits out its retries); "nas" receives
    // the history at once.
    w.set_replicas(true);
    w.offsite_proxy.outage(Fault::Reset);
    for day in ["2026-11-16", "2026-11-17"] {
        w.clock.set(t(&format!("{day}T03:00:10Z")));
        let report = w.reconciler.run_once().await.unwrap();
        assert_eq!(report.backups_started, 1, "{day}");
        w.reconciler.wait_idle().await;
    }
    let primary = files(&w.primary.bucket_dir());
    let dumps = committed(&primary)
        .iter()
        .filter(|k| k.ends_with(".sql.zst"))
        .count();
    assert_eq!(dumps, 5, "{:?}", primary.keys());
    assert!(
        committed(&files(&w.offsite.bucket_dir())).is_empty(),
        "nothing is committed on a replica that is down"
    );
    let status = w.reconciler.snapshot().replicas;
    let offsite = &status["offsite"];
    assert!(offsite.last_sync.is_none() && offsite.missing.is_none());
    let error = offsite.last_error.as_deref().unwrap();
    assert!(
        error.contains("list the replica") && error.contains("offsite"),
        "{error}"
    );
    assert!(!error.contains(&w.offsite.secret_key), "{error}");
    assert_eq!(status["nas"].missing, Some(0));

    // It answers again: caught up, and then every backup and the archive of W46 (built on
    // Sunday 22 Nov) follow.
    w.offsite_proxy.heal();
    w.days("2026-11-18", "2026-11-22").await;
    w.passes(t("2026-11-22T16:00:10Z")).await;
    let primary = files(&w.primary.bucket_dir());
    assert!(
        primary.contains_key("weekly/2026-W46.manifest.json"),
        "{:?}",
        primary.keys()
    );
    assert_mirrors(&primary, &files(&w.offsite.bucket_dir()));
    assert_mirrors(&primary, &files(&w.nas_dir()));
    let status = w.reconciler.snapshot().replicas;
    for name in ["offsite", "nas"] {
        assert_eq!(status[name].missing, Some(0), "{name}");
        assert_eq!(
            status[name].last_sync,
            Some(t("2026-11-22T16:00:10Z")),
            "{name}"
        );
        assert!(!status[name].syncing, "{name}");
    }
}

/// A replica `Backend` over a real folder that records each write and can refuse manifests.
struct Recording {
    inner: ObjectStoreBackend,
    writes: Mutex<Vec<String>>,
    refuse_manifests: bool,
}

#[async_trait]
impl Backend for Recording {
    fn root(&self) -> &str {
        self.inner.root()
    }
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<patina::store::ETag>, BackendError> {
        self.writes.lock().unwrap().push(format!("put {key}"));
        if self.refuse_manifests && key.ends_with(".manifest.json") {
            return Err(BackendError::Other {
                key: key.into(),
                source: "503 slow down".into(),
            });
        }
        self.inner.put(key, bytes, mode).await
    }
    async fn upload(&self, key: &str, parts: Parts<'_>) -> Result<u64, BackendError> {
        self.writes.lock().unwrap().push(format!("upload {key}"));
        self.inner.upload(key, parts).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
    }
    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError> {
        self.inner.get_stream(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BackendError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn copies_write_the_manifest_last_and_a_failed_copy_leaves_none() {
    let w = World::new(false).await;
    w.days("2026-11-13", "2026-11-14").await;
    let primary = w.primary.store("");
    let listing = patina::bucket::scan(&primary).await.unwrap();
    let scratch = w.dir.path().join("scratch");

    // The manifest is written after its data object, for every copy.
    let folder = tempfile::tempdir().unwrap();
    let recording = Arc::new(Recording {
        inner: ObjectStoreBackend::local(folder.path()).unwrap(),
        writes: Mutex::default(),
        refuse_manifests: false,
    });
    let dest = Destination {
        name: "nas".into(),
        store: Store::with_backend(recording.clone(), "").unwrap(),
    };
    let report = replica::sync(&primary, &listing, &dest, &scratch)
        .await
        .unwrap();
    assert_eq!((report.missing_before, report.copied), (2, 2), "{report:?}");
    let writes = recording.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 4, "{writes:?}");
    for pair in writes.chunks(2) {
        let data = pair[0].strip_prefix("upload ").unwrap();
        let manifest = pair[1].strip_prefix("put ").unwrap();
        assert_eq!(
            manifest,
            data.replace(".sql.zst", ".manifest.json"),
            "{writes:?}"
        );
    }
    assert_eq!(
        files(&w.primary.bucket_dir()),
        files(folder.path()),
        "a byte-for-byte copy"
    );
    // Nothing more to do.
    let again = replica::sync(&primary, &listing, &dest, &scratch)
        .await
        .unwrap();
    assert_eq!((again.missing_before, again.copied), (0, 0));

    // A replica that refuses the manifest keeps the data object as debris, never a manifest.
    let folder = tempfile::tempdir().unwrap();
    let refusing = Destination {
        name: "flaky".into(),
        store: Store::with_backend(
            Arc::new(Recording {
                inner: ObjectStoreBackend::local(folder.path()).unwrap(),
                writes: Mutex::default(),
                refuse_manifests: true,
            }),
            "",
        )
        .unwrap(),
    };
    let report = replica::sync(&primary, &listing, &refusing, &scratch)
        .await
        .unwrap();
    assert_eq!((report.copied, report.missing_after), (0, 2), "{report:?}");
    assert_eq!(
        report.errors.len(),
        1,
        "the sync stops at the replica's failure"
    );
    assert!(report.errors[0].contains("flaky"), "{:?}", report.errors);
    let inv = Inventory::classify(refusing.store.list("").await.unwrap());
    assert!(inv.dumps.is_empty() && inv.orphaned_manifests.is_empty());
    assert_eq!(inv.debris.len(), 1, "{inv:?}");

    // A primary object whose bytes fail their sha256 is never copied; the next one is.
    let bucket = w.primary.bucket_dir();
    let oldest = committed(&files(&bucket))
        .into_iter()
        .find(|k| k.ends_with(".sql.zst"))
        .unwrap();
    let mut bytes = std::fs::read(bucket.join(&oldest)).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(bucket.join(&oldest), &bytes).unwrap();
    let listing = patina::bucket::scan(&primary).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let dest = Destination {
        name: "fresh".into(),
        store: Store::local(folder.path(), "").unwrap(),
    };
    let report = replica::sync(&primary, &listing, &dest, &scratch)
        .await
        .unwrap();
    assert_eq!((report.copied, report.missing_after), (1, 1), "{report:?}");
    assert!(
        report.errors[0].contains("checksum mismatch"),
        "{:?}",
        report.errors
    );
    assert!(!files(folder.path()).contains_key(&oldest));
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "no scratch file is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_verify_and_download_fall_back_to_a_replica() {
    let w = World::new(true).await;
    w.days("2026-11-13", "2026-11-15").await;
    let bucket = w.primary.bucket_dir();
    let primary = files(&bucket);
    assert_mirrors(&primary, &files(&w.offsite.bucket_dir()));
    let dump_on = |date: &str| {
        committed(&primary)
            .into_iter()
            .find(|k| k.starts_with(&format!("daily/{date}/")) && k.ends_with(".sql.zst"))
            .unwrap()
    };
    let expected = sqlite3::run(
        &w.dir.path().join("app.db"),
        b"SELECT count(*) FROM users; SELECT count(*) FROM posts;",
    );
    let check = |db: &Path| {
        let out = sqlite3::run(
            db,
            b"SELECT count(*) FROM users; SELECT count(*) FROM posts; PRAGMA integrity_check;",
        );
        assert_eq!(out, format!("{expected}ok\n"), "{}", db.display());
    };

    // The newest data object is gone from the primary (its manifest stays, so its listing no
    // longer shows that backup committed): `latest` is still the newest, read from a replica.
    std::fs::remove_file(bucket.join(dump_on("2026-11-15"))).unwrap();
    let out = w
        .patina(&["restore", "app", "--to", &w.path("latest.db")])
        .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("restoring s3://patina/daily/2026-11-15/")
            && stderr.contains(r#"from replica "offsite""#),
        "{stderr}"
    );
    check(&w.dir.path().join("latest.db"));
    // Forced to the primary, that day is not there and it says so; forced to the replica, it
    // is.
    let out = w
        .patina(&[
            "restore",
            "app",
            "--at",
            "2026-11-15",
            "--from",
            "primary",
            "--to",
            &w.path("p.db"),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no committed backup of app"),
        "{}",
        text(&out.stderr)
    );
    assert!(!w.dir.path().join("p.db").exists());
    let out = w
        .patina(&[
            "restore",
            "app",
            "--from",
            "offsite",
            "--to",
            &w.path("o.db"),
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    check(&w.dir.path().join("o.db"));
    let out = w
        .patina(&["restore", "app", "--from", "tape", "--to", &w.path("t.db")])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            r#"--from "tape" names no destination; use one of "primary", "offsite", "nas""#
        ),
        "{}",
        text(&out.stderr)
    );

    // Another day's bytes fail their sha256 on the primary: restore and verify fall back.
    let damaged = dump_on("2026-11-14");
    let mut bytes = std::fs::read(bucket.join(&damaged)).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(bucket.join(&damaged), &bytes).unwrap();
    let out = w
        .patina(&[
            "restore",
            "app",
            "--at",
            "2026-11-14",
            "--to",
            &w.path("d14.db"),
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    check(&w.dir.path().join("d14.db"));
    let out = w.patina(&["verify", "--at", "2026-11-14"]).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = w
        .patina(&["verify", "--at", "2026-11-14", "--from", "primary"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("checksum mismatch"),
        "{}",
        text(&out.stdout)
    );

    // A day the primary lost outright (manifest too) is found on a replica.
    let lost = dump_on("2026-11-13");
    std::fs::remove_file(bucket.join(lost.replace(".sql.zst", ".manifest.json"))).unwrap();
    std::fs::remove_file(bucket.join(&lost)).unwrap();
    let out = w
        .patina(&[
            "restore",
            "app",
            "--at",
            "2026-11-13",
            "--to",
            &w.path("d13.db"),
        ])
        .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(r#"from replica "offsite""#), "{stderr}");
    check(&w.dir.path().join("d13.db"));

    // /download serves the damaged and the lost day from the replica too.
    let listener = patina::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let catalog = Arc::new(Mutex::new(
        Catalog::open(&w.reconciler.policy().daemon.state_dir).unwrap(),
    ));
    let state = patina::http::AppState::new(Arc::clone(&w.reconciler), catalog, w.clock.clock());
    let task = tokio::spawn(patina::http::serve(listener, state, std::future::pending()));
    let client = reqwest::Client::new();
    for date in ["2026-11-13", "2026-11-14", "2026-11-15"] {
        let r = client
            .get(format!("{base}/download/{date}/app"))
            .bearer_auth("tok-replica-test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{date}");
        let sql = r.text().await.unwrap();
        assert!(sql.contains("CREATE TABLE"), "{date}");
    }

    // /status shows each replica's state.
    let status: serde_json::Value = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let replicas = status["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{status}");
    assert_eq!(replicas[0]["name"], "nas");
    assert_eq!(replicas[1]["name"], "offsite");
    assert_eq!(replicas[1]["missingObjects"], 0, "{status}");
    assert_eq!(replicas[1]["lastSync"], "2026-11-15T15:00:10Z", "{status}");

    // /metrics has both replica families, for each replica.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in patina::metrics::NAMES
        .iter()
        .filter(|n| n.starts_with("replica_"))
    {
        assert!(
            metrics.contains(&format!("# HELP patina_{name} ")),
            "{metrics}"
        );
    }
    for replica in ["offsite", "nas"] {
        assert!(
            metrics.contains(&format!(
                "patina_replica_missing_objects{{replica=\"{replica}\"}} 0\n"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "patina_replica_last_sync_timestamp_seconds{{replica=\"{replica}\"}} 1794754810"
            )),
            "{metrics}"
        );
    }

    // The primary cannot be reached at all: restore reads a replica.
    w.primary_proxy.outage(Fault::Reset);
    let out = w
        .patina(&["restore", "app", "--to", &w.path("down.db")])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    check(&w.dir.path().join("down.db"));
    task.abort();
}
