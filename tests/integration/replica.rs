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
use patina::alert::{Alerts, DeliveryConfig};
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::inventory::Inventory;
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::replica::{self, Destination};
use patina::store::{Backend, BackendError, ObjectInfo, ObjectStoreBackend, Parts, PutMode, Store};

use crate::support::faulty::{Fault, FaultyProxy};
use crate::support::receiver::Receiver;
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
    alerts: Alerts,
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
    /// Receives `replica_behind` webhooks.
    hook: Receiver,
    setup: Setup,
}

/// What a [`World`]'s policy says beyond its storage.
#[derive(Clone, Copy)]
struct Setup {
    /// The `[retention]` spans (the archive schedule is added).
    retention: &'static str,
    /// The `[[replica]]` blocks, from the places.
    replicas: fn(&Places) -> String,
}

/// "offsite" (the second S3 server through its proxy, keeping dumps 90 days) and "nas"
/// (`file://nas`, the primary's spans).
fn offsite_and_nas(p: &Places) -> String {
    format!(
        "\n[[replica]]\nname = \"offsite\"\n{}daily = \"90d\"\n\n\
         [[replica]]\nname = \"nas\"\nurl = \"file://nas\"\n",
        s3_keys(&p.offsite, &p.offsite_proxy.endpoint())
    )
}

const DEFAULT: Setup = Setup {
    retention: "daily = \"30d\"\nweekly = \"12w\"\n",
    replicas: offsite_and_nas,
};

impl Places {
    /// Write `patina.toml` (with or without the replicas) and parse it.
    fn write_policy(&self, replicas: bool) -> Policy {
        let mut text = format!(
            "[daemon]\ntick = \"60s\"\napi_token = \"tok-replica-test\"\n\n[storage]\n{}\n\
             [priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
             [retention]\n{}archive = \"0 4 * * SUN\"\n\n\
             [[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\non = [\"replica_behind\"]\n\n\
             [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n",
            s3_keys(&self.primary, &self.primary_proxy.endpoint()),
            self.setup.retention,
            self.hook.url("/hook"),
        );
        if replicas {
            text.push_str(&(self.setup.replicas)(self));
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
        World::with(replicas, DEFAULT).await
    }

    async fn with(replicas: bool, setup: Setup) -> World {
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
            hook: Receiver::start().await,
            setup,
        };
        let policy = Arc::new(places.write_policy(replicas));
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
        let clock = ManualClock::new(t("2026-11-13T03:00:10Z"));
        let alerts = Alerts::start(
            Arc::clone(&policy),
            Arc::new(patina::daemon::CatalogHistory(Arc::clone(&catalog))),
            clock.clock(),
            DeliveryConfig {
                attempts: 2,
                backoff: std::time::Duration::from_millis(20),
                max_backoff: std::time::Duration::from_millis(50),
                timeout: std::time::Duration::from_secs(2),
                max_retry_after: std::time::Duration::from_secs(1),
                queue: 64,
            },
        );
        let reconciler = Arc::new(
            Reconciler::new(policy, store, catalog, clock.clock(), Arc::new(Quiet))
                .with_alerts(alerts.clone()),
        );
        World {
            places,
            clock,
            reconciler,
            alerts,
        }
    }

    /// The `replica_behind` webhook bodies received so far (deliveries flushed first).
    async fn hooks(&self) -> Vec<serde_json::Value> {
        self.alerts
            .wait_idle(std::time::Duration::from_secs(5))
            .await;
        self.hook.to("/hook").iter().map(|r| r.json()).collect()
    }

    /// Declare (or drop) the replicas for the next pass, as a reload does.
    fn set_replicas(&self, on: bool) {
        let policy = Arc::new(self.write_policy(on));
        let store = Store::open(&policy.storage).unwrap();
        self.alerts.set_policy(Arc::clone(&policy));
        self.reconciler.set_policy(policy, store);
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

/// The command failed with exit code 1, saying `why` on stderr.
fn refused(out: &Output, why: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
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
    // The outage outlasted tick × 10: `replica_behind` fired once, then resolved.
    let hooks = w.hooks().await;
    let states: Vec<(&str, &str)> = hooks
        .iter()
        .map(|h| (h["replica"].as_str().unwrap(), h["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("offsite", "firing"), ("offsite", "resolved")],
        "{hooks:?}"
    );
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
    let (facts, now) = (replica::ArchiveFactsCache::default(), w.clock.now());
    let rules = patina::retention::KeepRules::from(&w.reconciler.policy().retention);

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
        rules,
    };
    let report = replica::sync(&primary, &listing, &dest, &facts, &scratch, now)
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
    let again = replica::sync(&primary, &listing, &dest, &facts, &scratch, now)
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
        rules,
    };
    let report = replica::sync(&primary, &listing, &refusing, &facts, &scratch, now)
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
        rules,
    };
    let report = replica::sync(&primary, &listing, &dest, &facts, &scratch, now)
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
    refused(&out, "no committed backup of app");
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

    // /ui has a Destinations table with each one.
    let page = client
        .get(format!("{base}/ui"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Destinations"), "{page}");
    for (name, state) in [
        ("primary", "✓ reachable"),
        ("offsite", "✓ up to date, last sync"),
        ("nas", "✓ up to date, last sync"),
    ] {
        assert!(
            page.contains(&format!("<tr><td>{name}</td>")),
            "{name}: {page}"
        );
        assert!(page.contains(state), "{state}: {page}");
    }

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

/// The data keys of the committed dumps under `root`, as `YYYY-MM-DD` days.
fn dump_days(root: &Path) -> Vec<String> {
    committed(&files(root))
        .into_iter()
        .filter(|k| k.starts_with("daily/") && !k.ends_with(".manifest.json"))
        .map(|k| k["daily/".len().."daily/YYYY-MM-DD".len()].to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn weeks(root: &Path) -> Vec<String> {
    committed(&files(root))
        .into_iter()
        .filter(|k| k.starts_with("weekly/") && k.ends_with(".tar"))
        .collect()
}

/// "offsite" keeps dumps 30 days; "nas" 3 days and no weekly archives.
fn long_and_short(p: &Places) -> String {
    format!(
        "\n[[replica]]\nname = \"offsite\"\n{}daily = \"30d\"\n\n\
         [[replica]]\nname = \"nas\"\nurl = \"file://nas\"\ndaily = \"3d\"\nweekly = \"off\"\n",
        s3_keys(&p.offsite, &p.offsite_proxy.endpoint())
    )
}

fn days_from(first: &str, last: &str) -> Vec<String> {
    let (mut day, last) = (
        first.parse::<chrono::NaiveDate>().unwrap(),
        last.parse::<chrono::NaiveDate>().unwrap(),
    );
    let mut out = Vec::new();
    while day <= last {
        out.push(day.to_string());
        day = day.succ_opt().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_each_destination_from_its_own_listing() {
    let w = World::with(
        true,
        Setup {
            retention: "daily = \"7d\"\nweekly = \"12w\"\n",
            replicas: long_and_short,
        },
    )
    .await;
    w.days("2026-11-13", "2026-11-30").await;

    // The primary (7 days) keeps 23–30 Nov as dumps and the rest in W46 and W47.
    assert_eq!(
        dump_days(&w.primary.bucket_dir()),
        days_from("2026-11-23", "2026-11-30")
    );
    let both_weeks = ["weekly/2026-W46.tar", "weekly/2026-W47.tar"];
    assert_eq!(weeks(&w.primary.bucket_dir()), both_weeks);
    // "offsite" (30 days) still has every dump the primary pruned, and the archives.
    assert_eq!(
        dump_days(&w.offsite.bucket_dir()),
        days_from("2026-11-13", "2026-11-30")
    );
    assert_eq!(weeks(&w.offsite.bucket_dir()), both_weeks);
    // "nas" (3 days, no weekly tier) keeps 28–30 Nov and was never sent an archive; what it
    // let go was not sent again.
    assert_eq!(
        dump_days(&w.nas_dir()),
        days_from("2026-11-28", "2026-11-30")
    );
    assert!(weeks(&w.nas_dir()).is_empty());
    assert!(
        files(&w.nas_dir())
            .keys()
            .all(|k| !k.starts_with("weekly/")),
        "{:?}",
        files(&w.nas_dir()).keys()
    );
    let status = w.reconciler.snapshot().replicas;
    assert_eq!(status["nas"].missing, Some(0));
    assert!(status["nas"].deleted >= 10, "{:?}", status["nas"]);
    assert_eq!(status["offsite"].deleted, 0, "{:?}", status["offsite"]);
    assert!(w.hooks().await.is_empty(), "no replica fell behind");

    // A day only "offsite" still has as a dump restores from it.
    let out = w
        .patina(&[
            "restore",
            "app",
            "--at",
            "2026-11-14",
            "--from",
            "offsite",
            "--to",
            &w.path("d14.db"),
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // `patina plan` names each destination and what it would copy and delete there: nothing
    // now. A day later, the primary's new dump is pending for both and "nas" lets 28 Nov go.
    let out = w.patina(&["plan"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["offsite", "nas"] {
        assert!(stdout.contains(&format!("\nreplica {name} — ")), "{stdout}");
    }
    assert_eq!(
        stdout.matches("up to date, nothing to delete").count(),
        2,
        "{stdout}"
    );
    let out = w
        .patina(&["plan", "--at", "2026-12-01 15:00", "--json"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nas = &plan["replicas"][1];
    assert_eq!(nas["name"], "nas", "{plan}");
    let deletions: Vec<&str> = nas["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dataKey"].as_str().unwrap())
        .collect();
    assert_eq!(deletions.len(), 1, "{nas}");
    assert!(deletions[0].starts_with("daily/2026-11-28/"), "{nas}");

    // The catalog can be rebuilt from "offsite" alone.
    let out = w.patina(&["catalog", "rebuild", "--from", "offsite"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("from 18 manifests and 2 weekly archives in s3://"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_replica_copy_is_detected_never_served_and_copied_again() {
    let w = World::new(true).await;
    w.days("2026-11-13", "2026-11-15").await;
    let offsite_dir = w.offsite.bucket_dir();
    let newest = committed(&files(&offsite_dir))
        .into_iter()
        .find(|k| k.starts_with("daily/2026-11-15/") && k.ends_with(".sql.zst"))
        .unwrap();
    // Same size, one byte flipped: only its sha256 can tell.
    let mut bytes = std::fs::read(offsite_dir.join(&newest)).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(offsite_dir.join(&newest), &bytes).unwrap();

    // Not served: forced to "offsite", the restore fails and writes nothing.
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
    refused(&out, "checksum mismatch");
    assert!(!w.dir.path().join("o.db").exists());
    // With the primary down, the damaged copy is passed over for the next replica's.
    w.primary_proxy.outage(Fault::Reset);
    let out = w.patina(&["restore", "app", "--to", &w.path("n.db")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    w.primary_proxy.heal();

    // Detected: a drill of that point checks each replica's copy and removes the damaged one.
    let policy = w.reconciler.policy();
    let ctx = patina::drill::DrillContext {
        store: Store::open(&policy.storage).unwrap(),
        catalog: Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap())),
        clock: w.clock.clock(),
        alerts: None,
        databases: vec!["app".into()],
        sample: 0,
        scratch_dir: w.dir.path().join("drill-scratch"),
        seed: 7,
        keys: patina::restore::Keys::none(),
        replicas: replica::open_all(&policy),
    };
    let results = patina::drill::run(&ctx).await.unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].problems.is_empty(), "{:?}", results[0]);
    assert_eq!(results[0].repaired.len(), 1, "{:?}", results[0]);
    assert!(
        results[0].repaired[0].ends_with(&newest),
        "{:?}",
        results[0]
    );
    assert!(!files(&offsite_dir).contains_key(&newest));

    // A copy of another size (cut short behind our back) is seen by the sync's listing alone.
    let nas_copy = w.nas_dir().join(
        committed(&files(&w.nas_dir()))
            .into_iter()
            .find(|k| k.starts_with("daily/2026-11-14/") && k.ends_with(".sql.zst"))
            .unwrap(),
    );
    let cut = std::fs::read(&nas_copy).unwrap();
    std::fs::write(&nas_copy, &cut[..cut.len() / 2]).unwrap();

    // Copied again by the next pass, byte for byte.
    w.passes(t("2026-11-15T16:00:10Z")).await;
    let primary = files(&w.primary.bucket_dir());
    assert_mirrors(&primary, &files(&offsite_dir));
    assert_mirrors(&primary, &files(&w.nas_dir()));
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

    // The primary's own copy damaged: the drill fails (it checks the primary) and names the
    // replica that holds a good copy.
    let primary_copy = w.primary.bucket_dir().join(&newest);
    let mut bytes = std::fs::read(&primary_copy).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&primary_copy, &bytes).unwrap();
    let results = patina::drill::run(&ctx).await.unwrap();
    let problems = results[0].problems.join("; ");
    assert!(problems.contains("checksum mismatch"), "{problems}");
    assert!(
        problems.contains(
            r#"replica "offsite" holds a good copy: `patina restore app --from offsite`"#
        ),
        "{problems}"
    );
    assert!(results[0].repaired.is_empty(), "{:?}", results[0]);

    // The primary unreachable: the drill runs on the first replica that answers.
    // (A fresh client: the proxy resets new connections, not pooled ones.)
    w.primary_proxy.outage(Fault::Reset);
    let ctx = patina::drill::DrillContext {
        store: Store::open(&policy.storage).unwrap(),
        replicas: replica::open_all(&policy),
        ..ctx
    };
    let results = patina::drill::run(&ctx).await.unwrap();
    w.primary_proxy.heal();
    assert_eq!(results.len(), 1);
    assert!(results[0].problems.is_empty(), "{:?}", results[0]);
}

/// "offsite" with a secret key the server does not know.
fn wrong_key(p: &Places) -> String {
    let keys = s3_keys(&p.offsite, &p.offsite_proxy.endpoint())
        .replace(&p.offsite.secret_key, "not-the-secret-key");
    format!("\n[[replica]]\nname = \"offsite\"\n{keys}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_credential_error_alerts_clearly_and_the_primary_is_unaffected() {
    let w = World::with(
        true,
        Setup {
            retention: DEFAULT.retention,
            replicas: wrong_key,
        },
    )
    .await;
    w.days("2026-11-13", "2026-11-14").await;
    // Backups commit on the primary every day, as without a replica.
    assert_eq!(
        dump_days(&w.primary.bucket_dir()),
        ["2026-11-13", "2026-11-14"]
    );
    assert!(files(&w.offsite.bucket_dir()).is_empty());
    let snapshot = w.reconciler.snapshot();
    assert!(
        snapshot.last_pass.as_ref().unwrap().error.is_none(),
        "{:?}",
        snapshot.last_pass
    );
    let offsite = &snapshot.replicas["offsite"];
    let error = offsite.last_error.clone().unwrap();
    assert!(error.contains(r#"replica "offsite""#), "{error}");
    assert!(
        error.contains("check its url, endpoint and keys"),
        "{error}"
    );
    assert!(offsite.behind_since.is_some());

    // One replica_behind alert, after tick × 10, naming the replica and the error, and
    // never the key.
    let hooks = w.hooks().await;
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["type"], "replica_behind", "{hooks:?}");
    assert_eq!(hooks[0]["replica"], "offsite", "{hooks:?}");
    assert_eq!(hooks[0]["missingObjects"], serde_json::Value::Null);
    assert!(
        hooks[0]["error"]
            .as_str()
            .unwrap()
            .contains("list the replica"),
        "{hooks:?}"
    );
    let raw = serde_json::to_string(&hooks).unwrap();
    assert!(!raw.contains("not-the-secret-key"), "{raw}");

    // The key is fixed (a reload): the replica catches up and the alert resolves.
    let fixed = |p: &Places| {
        format!(
            "\n[[replica]]\nname = \"offsite\"\n{}",
            s3_keys(&p.offsite, &p.offsite_proxy.endpoint())
        )
    };
    let w = World {
        places: Places {
            setup: Setup {
                retention: DEFAULT.retention,
                replicas: fixed,
            },
            ..w.places
        },
        ..w
    };
    w.set_replicas(true);
    w.passes(t("2026-11-14T16:00:10Z")).await;
    assert_mirrors(
        &files(&w.primary.bucket_dir()),
        &files(&w.offsite.bucket_dir()),
    );
    let hooks = w.hooks().await;
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[1]["state"], "resolved", "{hooks:?}");
}
