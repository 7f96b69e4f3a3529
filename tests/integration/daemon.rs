//! The reconciling daemon: reconcile passes driven with an injected clock against the real
//! in-process S3 server (tests never sleep for real schedules), and the `patina run` process
//! itself: catch-up at start, live reload, an invalid edit ignored, SIGTERM, the state-dir lock,
//! and a restart after `kill -9`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::manifest::{ParsedKey, parse_key};
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::{PutMode, Store};

use crate::support::s3::S3Server;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A policy over `dir` with the given databases (name, priority, schedule).
fn policy_text(storage: &str, dbs: &[(&str, &str, &str)], extra: &str) -> String {
    let mut s = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"1s\"\nconcurrency = 2\n\n[storage]\nurl = \"{storage}\"\n\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n[priorities.high]\nschedule = \"0 3 * * *\"\n\
         [priorities.normal]\nschedule = \"0 3 * * *\"\n\n{extra}\n"
    );
    for (name, priority, schedule) in dbs {
        s.push_str(&format!(
            "[[database]]\nname = \"{name}\"\nkind = \"sqlite\"\npath = \"{name}.db\"\npriority = \"{priority}\"\nschedule = \"{schedule}\"\n\n"
        ));
    }
    s
}

struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    reconciler: Reconciler,
    catalog: Arc<Mutex<Catalog>>,
    store: Store,
    _server: Option<S3Server>,
}

impl World {
    async fn s3(dbs: &[(&str, &str, &str)], extra: &str, start: DateTime<Utc>) -> World {
        let server = S3Server::start().await;
        let storage = server.storage("patina/");
        World::build(dbs, extra, start, Some(server), Some(storage)).await
    }

    async fn local(dbs: &[(&str, &str, &str)], extra: &str, start: DateTime<Utc>) -> World {
        World::build(dbs, extra, start, None, None).await
    }

    async fn build(
        dbs: &[(&str, &str, &str)],
        extra: &str,
        start: DateTime<Utc>,
        server: Option<S3Server>,
        storage: Option<patina::policy::Storage>,
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        for (name, _, _) in dbs {
            std::fs::copy(DEMO_DB, dir.path().join(format!("{name}.db"))).unwrap();
        }
        let mut policy = load(dir.path(), &policy_text("file://backups", dbs, extra));
        if let Some(storage) = storage {
            policy.storage = storage;
        }
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
        let clock = ManualClock::new(start);
        let reconciler = Reconciler::new(
            Arc::new(policy),
            store.clone(),
            Arc::clone(&catalog),
            clock.clock(),
            Arc::new(Quiet),
        );
        World {
            dir,
            clock,
            reconciler,
            catalog,
            store,
            _server: server,
        }
    }

    /// One pass, then wait for the work it started.
    async fn pass(&self) -> patina::reconcile::PassReport {
        let report = self.reconciler.run_once().await.unwrap();
        self.reconciler.wait_idle().await;
        report
    }

    async fn keys(&self) -> Vec<String> {
        self.store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Committed dump manifests per database.
    async fn dumps(&self, db: &str) -> Vec<String> {
        self.keys()
            .await
            .into_iter()
            .filter(|k| matches!(parse_key(k), Some(ParsedKey::DumpManifest { id }) if id.database == db))
            .collect()
    }
}

fn load(dir: &Path, text: &str) -> Policy {
    std::fs::write(dir.join("patina.toml"), text).unwrap();
    patina::config::from_str(text, "patina.toml", dir, &|_| None).unwrap()
}

#[tokio::test]
async fn catch_up_once_after_downtime_then_nothing_until_the_next_fire() {
    let w = World::s3(
        &[
            ("alpha", "normal", "0 3 * * *"),
            ("beta", "critical", "0 3 * * *"),
        ],
        "",
        t("2026-11-16T10:00:00Z"),
    )
    .await;
    // New databases are due at once; critical first.
    let r = w.pass().await;
    let order: Vec<&str> = r.plan.backups.iter().map(|b| b.database.as_str()).collect();
    assert_eq!(order, ["beta", "alpha"]);
    assert!(
        r.plan
            .backups
            .iter()
            .all(|b| b.trigger.as_str() == "catch-up")
    );
    assert_eq!(w.dumps("alpha").await.len(), 1);
    assert_eq!(w.dumps("beta").await.len(), 1);
    // Level-triggered: planning again right away finds nothing to do.
    let again = w.reconciler.plan().await.unwrap().0;
    assert!(again.is_empty(), "{again:?}");

    // Three days down: one catch-up backup per database, not three.
    w.clock.set(t("2026-11-19T12:00:00Z"));
    let r = w.pass().await;
    assert_eq!(r.plan.backups.len(), 2, "{:?}", r.plan.backups);
    assert!(
        r.plan
            .backups
            .iter()
            .all(|b| b.trigger.as_str() == "catch-up")
    );
    assert_eq!(w.dumps("alpha").await.len(), 2);
    assert!(w.reconciler.plan().await.unwrap().0.is_empty());

    // On time: a pass right after the fire time is a scheduled backup.
    w.clock.set(t("2026-11-20T03:00:20Z"));
    let r = w.pass().await;
    assert!(
        r.plan
            .backups
            .iter()
            .all(|b| b.trigger.as_str() == "scheduled"),
        "{:?}",
        r.plan
    );
    w.clock.set(t("2026-11-20T09:00:00Z"));
    assert!(w.pass().await.plan.is_empty());

    // Jobs are recorded with their trigger.
    let triggers: BTreeSet<String> = w
        .catalog
        .lock()
        .unwrap()
        .recent_jobs(10)
        .unwrap()
        .into_iter()
        .map(|j| j.trigger_type)
        .collect();
    assert_eq!(
        triggers,
        BTreeSet::from(["catch-up".into(), "scheduled".into()])
    );
}

#[tokio::test]
async fn a_failing_database_backs_off_and_does_not_stop_the_others() {
    let w = World::local(
        &[
            ("good", "critical", "* * * * *"),
            ("bad", "critical", "0 3 * * *"),
        ],
        "",
        t("2026-11-16T10:00:30Z"),
    )
    .await;
    std::fs::remove_file(w.dir.path().join("bad.db")).unwrap();
    let r = w.pass().await;
    assert_eq!(r.backups_started, 2);
    assert_eq!(w.dumps("good").await.len(), 1);
    assert!(w.dumps("bad").await.is_empty());

    // 30 s later: bad waits (backoff 1 min), good has nothing due until 10:01.
    w.clock.set(t("2026-11-16T10:00:59Z"));
    let r = w.pass().await;
    assert!(r.plan.backups.is_empty(), "{:?}", r.plan.backups);
    assert_eq!(r.plan.deferred.len(), 1, "{:?}", r.plan.deferred);
    assert!(r.plan.deferred[0].what.contains("bad"));

    // After the backoff it is retried (and good is due for its 10:01 fire).
    w.clock.set(t("2026-11-16T10:01:31Z"));
    let r = w.pass().await;
    let names: BTreeSet<&str> = r.plan.backups.iter().map(|b| b.database.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["bad", "good"]));
    // Two failures now: the wait doubles.
    w.clock.set(t("2026-11-16T10:03:00Z"));
    let r = w.pass().await;
    assert!(
        r.plan.backups.iter().all(|b| b.database != "bad"),
        "{:?}",
        r.plan
    );
    w.clock.set(t("2026-11-16T10:03:32Z"));
    let r = w.pass().await;
    assert!(
        r.plan.backups.iter().any(|b| b.database == "bad"),
        "{:?}",
        r.plan
    );

    // The file comes back: the next attempt succeeds and the streak ends.
    std::fs::copy(DEMO_DB, w.dir.path().join("bad.db")).unwrap();
    w.clock.set(t("2026-11-16T10:08:00Z"));
    w.pass().await;
    assert_eq!(w.dumps("bad").await.len(), 1);
    assert!(
        !w.catalog
            .lock()
            .unwrap()
            .failure_streaks()
            .unwrap()
            .contains_key("bad")
    );
}

/// Every committed dump that ever existed is still present, or was inside a committed archive
/// before it disappeared (archives themselves expire by the weekly tier).
async fn assert_nothing_lost(
    w: &World,
    ever: &BTreeSet<String>,
    covered_ever: &mut BTreeSet<String>,
) {
    let keys: BTreeSet<String> = w.keys().await.into_iter().collect();
    for k in &keys {
        if let Some(ParsedKey::ArchiveManifest { .. }) = parse_key(k) {
            let m = patina::archive::read_manifest(&w.store, k).await.unwrap();
            covered_ever.extend(m.members.into_iter().map(|m| m.dump_key));
        }
    }
    for k in ever {
        assert!(
            keys.contains(k) || covered_ever.contains(k),
            "{k} vanished without ever being archived"
        );
    }
}

#[tokio::test]
async fn weekly_archives_are_built_and_dailies_pruned_only_when_covered() {
    let w = World::s3(
        &[
            ("app", "critical", "0 3 * * *"),
            ("blog", "normal", "0 3 * * *"),
        ],
        "[retention]\ndaily = \"7d\"\nweekly = \"2w\"\narchive = \"0 4 * * SUN\"\n",
        t("2026-11-02T03:00:10Z"), // a Monday
    )
    .await;
    let mut ever = BTreeSet::new();
    let mut covered_ever = BTreeSet::new();
    let start = t("2026-11-02T03:00:10Z");
    for day in 0..30 {
        for at in [start, start + chrono::Duration::hours(1)] {
            w.clock.set(at + chrono::Duration::days(day));
            w.pass().await;
            for k in w.keys().await {
                if matches!(parse_key(&k), Some(ParsedKey::DumpData { .. })) {
                    ever.insert(k);
                }
            }
            assert_nothing_lost(&w, &ever, &mut covered_ever).await;
        }
    }
    let keys = w.keys().await;
    let archives: Vec<&str> = keys
        .iter()
        .filter(|k| k.ends_with(".tar"))
        .map(String::as_str)
        .collect();
    // The clock stops on Tuesday 2026-12-01 04:00. W45 (Nov 2–8), W46 and W47 were archived on
    // the following Sundays; W45 and W46 ended more than 2 weeks ago and expired; W48 (Nov
    // 23–29) waits for Sunday Dec 6's archive run.
    assert_eq!(archives, ["weekly/2026-W47.tar"], "{keys:?}");
    // Dailies younger than 7 days are all there; older ones survive only while no archive
    // covers them (W48 and W49 are not archived yet).
    let now = w.clock.now();
    for db in ["app", "blog"] {
        let dumps = w.dumps(db).await;
        assert_eq!(dumps.len(), 9, "{db}: {dumps:?}");
        for m in &dumps {
            let Some(ParsedKey::DumpManifest { id }) = parse_key(m) else {
                unreachable!()
            };
            let week = patina::manifest::IsoWeek::of(id.taken_at);
            assert!(
                now - id.taken_at <= chrono::Duration::days(7) || week.week >= 48,
                "{m} should have been pruned"
            );
        }
    }
    // Deletions were recorded in the catalog: daily objects pruned (a pruned daily whose
    // archive lives on stays a restore point, tier weekly), and archived points that left with
    // their expired archive.
    let count = |sql: &str| -> i64 {
        w.catalog
            .lock()
            .unwrap()
            .connection()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };
    let pruned = count(
        "SELECT count(*) FROM backup_inventory
         WHERE deleted_reason = 'retention' OR daily_deleted_at IS NOT NULL",
    );
    assert!(pruned >= 30, "{pruned}");
    assert!(
        count("SELECT count(*) FROM backup_inventory WHERE deleted_reason = 'archive retention'")
            >= 14
    );
    // W47's 14 dumps live on in its archive as restore points.
    assert_eq!(
        count(
            "SELECT count(*) FROM backup_inventory WHERE deleted_at IS NULL AND tier = 'weekly'
             AND archive_key = 'weekly/2026-W47.tar'"
        ),
        14
    );
    // The catalog's restore points are exactly the ones storage holds.
    let from_storage: BTreeSet<String> = patina::restore::restore_points(&w.store)
        .await
        .unwrap()
        .points
        .iter()
        .map(|p| p.dump_key().to_string())
        .collect();
    let from_catalog: BTreeSet<String> = w
        .catalog
        .lock()
        .unwrap()
        .list_backups(None)
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(from_catalog, from_storage);
    assert_eq!(from_storage.len(), 14 + 18);
    // Settled: planning again does nothing.
    let plan = w.reconciler.plan().await.unwrap().0;
    assert!(plan.is_empty(), "{plan:?}");
}

#[tokio::test]
async fn a_removed_database_keeps_its_newest_backup_forever() {
    let w = World::local(
        &[
            ("stay", "critical", "0 3 * * *"),
            ("gone", "critical", "0 3 * * *"),
        ],
        "[retention]\ndaily = \"2d\"\nweekly = \"off\"\n",
        t("2026-11-02T03:00:10Z"),
    )
    .await;
    for day in 0..3 {
        w.clock
            .set(t("2026-11-02T03:00:10Z") + chrono::Duration::days(day));
        w.pass().await;
    }
    assert_eq!(w.dumps("gone").await.len(), 3);
    let text = policy_text(
        "file://backups",
        &[("stay", "critical", "0 3 * * *")],
        "[retention]\ndaily = \"2d\"\nweekly = \"off\"\n",
    );
    let policy = load(w.dir.path(), &text);
    w.reconciler.set_policy(Arc::new(policy), w.store.clone());
    w.clock.set(t("2027-06-01T12:00:00Z"));
    let r = w.pass().await;
    assert!(r.plan.backups.iter().all(|b| b.database == "stay"));
    let gone = w.dumps("gone").await;
    assert_eq!(
        gone.len(),
        1,
        "the newest backup of a removed database stays: {gone:?}"
    );
    assert!(gone[0].contains("2026-11-04"), "{gone:?}");
    assert_eq!(w.dumps("stay").await.len(), 2);
}

#[tokio::test]
async fn adoption_drift_and_debris() {
    let now = Utc::now() + chrono::Duration::hours(3);
    let w = World::local(&[("app", "critical", "0 3 * * *")], "", now).await;
    w.pass().await;
    let committed = w.dumps("app").await;
    assert_eq!(committed.len(), 1);

    // Debris: a data object without a manifest (a crash mid-backup), older than the grace.
    w.store
        .put(
            "daily/2026-11-20/app/20261120T030000Z.sql.zst",
            bytes::Bytes::from_static(b"partial"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    // Foreign: never touched.
    w.store
        .put(
            "notes/README.txt",
            bytes::Bytes::from_static(b"hi"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    // Debris is removed on a full listing ([daemon] full_listing, an hour by default).
    let hour = chrono::Duration::minutes(61);
    w.clock.advance(hour);
    let r = w.pass().await;
    assert!(r.full_listing);
    assert_eq!(r.debris_removed, 1, "{:?}", r.plan.debris);
    assert!(w.keys().await.contains(&"notes/README.txt".to_string()));

    // Adoption: a fresh catalog learns the committed backup from storage.
    let fresh = Arc::new(Mutex::new(
        Catalog::open_file(&w.dir.path().join("other.db")).unwrap(),
    ));
    let other = Reconciler::new(
        w.reconciler.policy(),
        w.store.clone(),
        Arc::clone(&fresh),
        w.clock.clock(),
        Arc::new(Quiet),
    );
    let r = other.run_once().await.unwrap();
    assert_eq!(r.adopted, 1);
    assert_eq!(
        fresh
            .lock()
            .unwrap()
            .list_backups(Some("app"))
            .unwrap()
            .len(),
        1
    );

    // Drift: the committed backup vanishes behind Patina's back.
    let manifest = &committed[0];
    let data = manifest.replace(".manifest.json", ".sql.zst");
    w.store.delete(&data).await.unwrap();
    w.store.delete(manifest).await.unwrap();
    w.clock.advance(hour);
    let r = w.reconciler.run_once().await.unwrap();
    assert!(r.full_listing);
    assert_eq!(r.drift, 1);
    w.reconciler.wait_idle().await;
    // Reported once, not every full listing.
    w.clock.advance(hour);
    let r = w.reconciler.run_once().await.unwrap();
    assert!(r.full_listing);
    assert_eq!(r.drift, 0);
    w.reconciler.wait_idle().await;
}

/// DESIGN §16 "Listing cost": between full listings (`[daemon] full_listing`, 1 h by default)
/// a pass lists only the keys after `daily/{day}` from the real S3 server (`start-after`), so an
/// aged bucket costs one request, not one per 1,000 keys; such a pass deletes nothing and raises
/// no drift, and a backup this node committed under an older day is still in its view.
#[tokio::test]
async fn between_full_listings_a_pass_lists_only_the_newest_keys() {
    let w = World::s3(
        &[("app", "critical", "0 3 * * *")],
        "",
        t("2026-11-20T10:00:00Z"),
    )
    .await;
    let server = w._server.as_ref().unwrap();
    // An aged bucket: 1,500 keys under an old day (foreign to Patina, so never touched).
    let old: Vec<String> = (0..1500)
        .map(|i| format!("daily/2026-11-01/notes/{i:04}.txt"))
        .collect();
    futures::stream::iter(old.iter())
        .for_each_concurrent(16, |k| async {
            w.store
                .put(k, bytes::Bytes::from_static(b"x"), PutMode::Overwrite)
                .await
                .unwrap();
        })
        .await;

    let lists = || server.list_requests();
    let before = lists();
    let r = w.pass().await;
    assert!(r.full_listing);
    assert!(
        lists() - before >= 2,
        "a full listing of 1,500+ keys takes two pages"
    );
    assert_eq!(r.backups_started, 1);
    let stats = |w: &World| w.reconciler.snapshot().last_pass.unwrap().inventory;
    assert_eq!(stats(&w).foreign_objects, 1500);

    w.clock.set(t("2026-11-20T10:01:00Z"));
    let before = lists();
    let r = w.pass().await;
    assert!(!r.full_listing);
    assert_eq!(lists() - before, 1, "one page: today's keys only");
    assert!(r.plan.backups.is_empty(), "{:?}", r.plan.backups);
    // The carried part still describes the old day.
    assert_eq!(stats(&w).foreign_objects, 1500);
    assert_eq!(stats(&w).daily_objects, 1);

    // The backup vanishes behind Patina's back: a partial pass raises no drift (it cannot tell
    // gone from not yet listed for older days) and says the check waits.
    let committed = w.dumps("app").await;
    for key in [
        committed[0].clone(),
        committed[0].replace(".manifest.json", ".sql.zst"),
    ] {
        w.store.delete(&key).await.unwrap();
    }
    w.clock.set(t("2026-11-20T10:02:00Z"));
    let r = w.pass().await;
    assert!(!r.full_listing);
    assert_eq!(r.drift, 0);
    assert!(
        r.plan
            .deferred
            .iter()
            .any(|d| d.what.starts_with("retention, debris and drift")
                && d.until == Some(t("2026-11-20T11:00:00Z"))),
        "{:?}",
        r.plan.deferred
    );
    // Its newest backup is gone from today's keys: due again at once.
    assert_eq!(r.backups_started, 1);

    // An hour after the last full listing: everything is listed, and the drift is raised.
    w.clock.set(t("2026-11-20T11:05:00Z"));
    let r = w.pass().await;
    assert!(r.full_listing);
    assert_eq!(r.drift, 1);

    // Near midnight: a backup this node started before midnight and committed after a full
    // listing of the next day is in its view at once (not only after the next full listing).
    w.clock.set(t("2026-11-21T02:00:00Z"));
    assert!(w.pass().await.full_listing);
    let dumps_before = stats(&w).daily_objects;
    w.clock.set(t("2026-11-20T23:30:00Z"));
    let (_, started) = w
        .reconciler
        .start_job(
            patina::backup::JobRequest {
                job_id: None,
                databases: vec!["app".into()],
                trigger: patina::manifest::Trigger::Manual,
                initiated_by: Some("test".into()),
                reason: None,
            },
            &Default::default(),
            w.reconciler.policy(),
            w.store.clone(),
        )
        .await;
    assert_eq!(started, ["app"]);
    w.reconciler.wait_idle().await;
    assert!(
        w.keys()
            .await
            .iter()
            .any(|k| k.starts_with("daily/2026-11-20/app/20261120T233000Z"))
    );
    w.clock.set(t("2026-11-21T02:05:00Z"));
    let r = w.pass().await;
    assert!(!r.full_listing);
    assert_eq!(stats(&w).daily_objects, dumps_before + 1);
}

// ---- the `patina run` process -------------------------------------------------------------

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        Daemon::start_with_grace(dir, "5s")
    }

    fn start_with_grace(dir: &Path, grace: &str) -> Daemon {
        let log = dir.join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(env!("CARGO_BIN_EXE_patina"))
            .args(["run", "--shutdown-grace", grace])
            .current_dir(dir)
            .env_remove("PATINA_CONFIG")
            .env("PATINA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not exit within {within:?}:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifests_of(dir: &Path, db: &str) -> usize {
    let mut n = 0;
    let root = dir.join("backups/daily");
    if let Ok(days) = std::fs::read_dir(root) {
        for day in days.flatten() {
            if let Ok(files) = std::fs::read_dir(day.path().join(db)) {
                n += files
                    .flatten()
                    .filter(|f| f.file_name().to_string_lossy().ends_with(".manifest.json"))
                    .count();
            }
        }
    }
    n
}

#[track_caller]
fn wait_for(what: &str, daemon: &Daemon, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {what}; daemon log:\n{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_catches_up_reloads_ignores_bad_edits_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(DEMO_DB, p.join("one.db")).unwrap();
    std::fs::copy(DEMO_DB, p.join("two.db")).unwrap();
    let one = policy_text("file://backups", &[("one", "critical", "0 3 * * *")], "");
    std::fs::write(p.join("patina.toml"), &one).unwrap();
    let mut d = Daemon::start(p);
    wait_for("the catch-up backup of one", &d, || {
        manifests_of(p, "one") == 1
    });

    // A second daemon on the same state dir is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_patina"))
        .arg("run")
        .current_dir(p)
        .env_remove("PATINA_CONFIG")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another patina daemon is running"), "{err}");
    assert!(err.contains(&format!("pid {}", d.child.id())), "{err}");

    // Editing the policy adds a database live (editors replace the file by rename).
    let both = policy_text(
        "file://backups",
        &[
            ("one", "critical", "0 3 * * *"),
            ("two", "high", "0 3 * * *"),
        ],
        "",
    );
    std::fs::write(p.join("patina.toml.tmp"), &both).unwrap();
    std::fs::rename(p.join("patina.toml.tmp"), p.join("patina.toml")).unwrap();
    wait_for("the first backup of two", &d, || {
        manifests_of(p, "two") == 1
    });
    assert!(d.log().contains("database two added"), "{}", d.log());

    // An invalid edit changes nothing: the old policy keeps running.
    std::fs::write(
        p.join("patina.toml"),
        both.replace("priority = \"high\"", "priorty = \"high\""),
    )
    .unwrap();
    wait_for("the reload to be refused", &d, || {
        d.log().contains("reload aborted")
    });
    assert!(d.log().contains("patina.toml:"), "{}", d.log());
    let read_reloads = || -> Vec<(String, Option<String>)> {
        let c = rusqlite::Connection::open(p.join(".patina/patina.db")).unwrap();
        let mut stmt = c
            .prepare("SELECT result, detail FROM config_reloads ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // The refusal is logged just before it is recorded: wait for the record.
    wait_for("the refusal to be recorded", &d, || {
        read_reloads().last().is_some_and(|r| r.0 == "failure")
    });
    let reloads = read_reloads();
    assert_eq!(reloads.last().unwrap().0, "failure", "{reloads:?}");
    assert!(reloads.iter().any(|r| r.0 == "success"));

    // SIGHUP takes the same path (still invalid: refused again, daemon alive).
    d.signal("-HUP");
    wait_for("a second refusal", &d, || {
        d.log().matches("reload aborted").count() >= 2
    });
    assert!(d.child.try_wait().unwrap().is_none());

    d.signal("-TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0), "{}", d.log());
    assert!(d.log().contains("stopped"), "{}", d.log());
}

#[test]
fn a_killed_daemon_restarts_into_a_consistent_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(DEMO_DB, p.join("one.db")).unwrap();
    let text = policy_text("file://backups", &[("one", "critical", "* * * * *")], "");
    std::fs::write(p.join("patina.toml"), &text).unwrap();
    let mut d = Daemon::start(p);
    wait_for("a backup", &d, || manifests_of(p, "one") >= 1);
    d.signal("-KILL");
    d.wait_exit(Duration::from_secs(10));

    let mut d = Daemon::start(p);
    wait_for("the restarted daemon's first pass", &d, || {
        d.log().contains("patina daemon started")
    });
    std::thread::sleep(Duration::from_millis(1500));
    d.signal("-TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0), "{}", d.log());

    // No job is left running; every committed backup is in the catalog and verifies.
    let c = rusqlite::Connection::open(p.join(".patina/patina.db")).unwrap();
    let running: i64 = c
        .query_row(
            "SELECT count(*) FROM backup_jobs WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
    let in_catalog: i64 = c
        .query_row(
            "SELECT count(*) FROM backup_inventory WHERE deleted_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_catalog as usize, manifests_of(p, "one"));
    let verify = Command::new(env!("CARGO_BIN_EXE_patina"))
        .arg("verify")
        .current_dir(p)
        .env_remove("PATINA_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn sigterm_past_the_grace_period_aborts_a_backup_without_committing_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // Big enough that dumping it takes seconds: 120 MB of random blobs (hex doubles them).
    let made = Command::new("sqlite3")
        .arg(p.join("big.db"))
        .arg(
            "CREATE TABLE b(x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n \
             WHERE i < 120000) INSERT INTO b SELECT randomblob(1000) FROM n;",
        )
        .status()
        .expect("the sqlite3 program is required: apt-get install -y sqlite3");
    assert!(made.success());
    let text = policy_text("file://backups", &[("big", "critical", "0 3 * * *")], "");
    std::fs::write(p.join("patina.toml"), &text).unwrap();
    let mut d = Daemon::start_with_grace(p, "0s");
    wait_for("the backup to start", &d, || {
        d.log().contains("backup started")
    });
    d.signal("-TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0), "{}", d.log());
    assert!(d.log().contains("were aborted"), "{}", d.log());
    assert_eq!(
        manifests_of(p, "big"),
        0,
        "an aborted backup must not be committed"
    );
    let c = rusqlite::Connection::open(p.join(".patina/patina.db")).unwrap();
    let status: String = c
        .query_row("SELECT status FROM backup_jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");
}
