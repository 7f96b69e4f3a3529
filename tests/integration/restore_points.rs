//! Restore points and drills (DESIGN §13, issue 14) against real storage: four weeks of a
//! daemon with a manual clock (two backups a day, weekly archives, seven days of dailies,
//! Saturday drills), then the real `patina` binary and the HTTP API on the bucket it left.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use patina::alert::{Alerts, DeliveryConfig};
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::Store;
use serde_json::Value;

use crate::support::receiver::Receiver;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    reconciler: Arc<Reconciler>,
    alerts: Alerts,
    catalog: Arc<Mutex<Catalog>>,
    store: Store,
    hook: Receiver,
}

impl World {
    async fn new(storage: &str, sample: u32) -> World {
        let hook = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(DEMO_DB, dir.path().join("app.db")).unwrap();
        let text = format!(
            "[daemon]\ntick = \"60s\"\n\n[storage]\nurl = \"{storage}\"\n\n\
             [priorities.critical]\nschedule = \"0 3,15 * * *\"\n\n\
             [retention]\ndaily = \"7d\"\nweekly = \"12w\"\narchive = \"0 4 * * SUN\"\n\n\
             [verify]\nschedule = \"0 5 * * SAT\"\nsample = {sample}\n\n\
             [[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\non = [\"verify_failed\"]\n\n\
             [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n",
            hook.url("/hook")
        );
        std::fs::write(dir.path().join("patina.toml"), &text).unwrap();
        let policy: Arc<Policy> = Arc::new(
            patina::config::from_str(&text, "patina.toml", dir.path(), &|_| None)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
        let clock = ManualClock::new(t("2026-11-02T03:00:10Z"));
        let alerts = Alerts::start(
            Arc::clone(&policy),
            Arc::new(patina::daemon::CatalogHistory(Arc::clone(&catalog))),
            clock.clock(),
            DeliveryConfig {
                attempts: 2,
                backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(50),
                timeout: Duration::from_secs(2),
                max_retry_after: Duration::from_secs(1),
                queue: 64,
            },
        );
        let reconciler = Reconciler::new(
            Arc::clone(&policy),
            store.clone(),
            Arc::clone(&catalog),
            clock.clock(),
            Arc::new(Quiet),
        )
        .with_alerts(alerts.clone());
        World {
            dir,
            clock,
            reconciler: Arc::new(reconciler),
            alerts,
            catalog,
            store,
            hook,
        }
    }

    /// Two passes at `at` (the second one runs what waited for the first one's backups, such
    /// as a drill), each waited for.
    async fn passes(&self, at: DateTime<Utc>) {
        self.clock.set(at);
        for _ in 0..2 {
            self.reconciler.run_once().await.unwrap();
            self.reconciler.wait_idle().await;
        }
    }

    /// Run the days from `from` to `to` (inclusive): passes at 03:00:10 and 15:00:10.
    async fn days(&self, from: &str, to: &str) {
        let mut day = t(&format!("{from}T03:00:10Z"));
        let end = t(&format!("{to}T15:00:10Z"));
        while day <= end {
            self.passes(day).await;
            self.passes(day + chrono::Duration::hours(12)).await;
            day += chrono::Duration::days(1);
        }
    }

    fn count(&self, sql: &str) -> i64 {
        self.catalog
            .lock()
            .unwrap()
            .connection()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    fn patina(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_patina"))
            .arg("--config")
            .arg(self.dir.path().join("patina.toml"))
            .args(args)
            .env("PATINA_LOG", "warn")
            .env("USER", "drill-tester")
            .output()
            .unwrap()
    }

    /// The webhook bodies received (verify_failed firing and resolved).
    fn hooks(&self) -> Vec<Value> {
        self.hook.to("/hook").iter().map(|r| r.json()).collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Flip one byte of `member`'s data inside the tar at `archive` (the archive object's own
/// sha256 in its manifest no longer matches either).
fn damage_member(archive: &Path, member: &str) -> Vec<u8> {
    let original = std::fs::read(archive).unwrap();
    let mut bytes = original.clone();
    let name = member.as_bytes();
    let header = (0..bytes.len())
        .step_by(512)
        .find(|&o| bytes[o..].starts_with(name))
        .unwrap_or_else(|| panic!("{member} not found in {}", archive.display()));
    bytes[header + 512 + 40] ^= 0xff;
    std::fs::write(archive, &bytes).unwrap();
    original
}

fn tables_of(db: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every row of `table` with each value as `quote()` writes it (type-exact), in rowid order.
fn quoted(db: &Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let cols: Vec<String> = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expr = cols
        .iter()
        .map(|c| format!("quote(\"{c}\")"))
        .collect::<Vec<_>>()
        .join(" || ',' || ");
    conn.prepare(&format!("SELECT {expr} FROM {table} ORDER BY rowid"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn rows(db: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn archived_weeks_stay_restore_points_listed_restored_by_time_and_drilled() {
    let w = World::new("file://backups", 100).await;
    // Mon 2 Nov … Sat 21 Nov: W45 (2–8 Nov) is archived on Sun 15 Nov, when its dailies are
    // pruned.
    w.days("2026-11-02", "2026-11-21").await;

    // Drills: at the first pass (no drill yet: the fire of Sat 31 Oct is caught up, after the
    // backups it waited for), and on Saturdays 7, 14 and 21 Nov; each checks every point
    // (sample 100), archived ones included, and all pass.
    let drills = w.count(
        "SELECT count(DISTINCT verified_at / 3600) FROM verifications WHERE origin = 'drill'",
    );
    assert_eq!(drills, 4);
    let archived_drilled = w.count(
        "SELECT count(*) FROM verifications
         WHERE origin = 'drill' AND status = 'ok' AND location LIKE 'weekly/2026-W45.tar:%'",
    );
    let seen: Vec<String> = {
        let c = w.catalog.lock().unwrap();
        let mut stmt = c
            .connection()
            .prepare("SELECT verified_at || ' ' || coalesce(location, '') FROM verifications")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(archived_drilled >= 8, "{archived_drilled}: {seen:#?}");
    assert_eq!(
        w.count("SELECT count(*) FROM verifications WHERE status != 'ok'"),
        0
    );
    assert!(w.hooks().is_empty(), "{:?}", w.hooks());

    // A damaged member of the W45 archive (its daily copy is long gone): the next drill
    // catches it and alerts once; later passes without a drill add nothing.
    let member = "2026-11-03/app/20261103T030010Z.sql.zst";
    let archive = w.dir.path().join("backups/weekly/2026-W45.tar");
    let original = damage_member(&archive, member);
    w.days("2026-11-22", "2026-11-28").await;
    w.passes(t("2026-11-28T18:00:00Z")).await;
    assert!(w.alerts.wait_idle(Duration::from_secs(10)).await);
    let hooks = w.hooks();
    assert_eq!(hooks.len(), 1, "one alert, de-duplicated: {hooks:?}");
    assert_eq!(hooks[0]["type"], "verify_failed");
    assert_eq!(hooks[0]["database"], "app");
    assert_eq!(
        hooks[0]["restorePoint"],
        format!("weekly/2026-W45.tar:{member}")
    );
    let failed =
        w.count("SELECT count(*) FROM verifications WHERE origin = 'drill' AND status = 'failed'");
    assert_eq!(failed, 1, "only the damaged point fails");

    // Repaired: the next Saturday's drill passes and resolves the alert.
    std::fs::write(&archive, &original).unwrap();
    w.days("2026-11-29", "2026-12-05").await;
    assert!(w.alerts.wait_idle(Duration::from_secs(10)).await);
    let hooks = w.hooks();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[1]["state"], "resolved", "{:?}", hooks[1]);

    // Every committed dump is a restore point, in the catalog as in storage.
    let points = patina::restore::restore_points(&w.store).await.unwrap();
    let in_storage: BTreeSet<String> = points
        .points
        .iter()
        .map(|p| p.dump_key().to_string())
        .collect();
    assert_eq!(in_storage.len(), 2 * 34, "two dumps a day, 2 Nov – 5 Dec");
    let listed: Vec<Value> =
        serde_json::from_slice(&w.patina(&["list", "--database", "app", "--json"]).stdout).unwrap();
    let listed_keys: BTreeSet<String> = listed
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_keys, in_storage);
    let archived: Vec<&Value> = listed.iter().filter(|p| p["tier"] == "weekly").collect();
    assert!(archived.len() >= 42, "W45, W46 and W47 live in archives");
    assert!(
        archived.iter().all(|p| p["location"]
            .as_str()
            .unwrap()
            .starts_with("weekly/2026-W4")),
        "{archived:?}"
    );
    // The seed's status-page query counts them.
    assert_eq!(
        w.count("SELECT COUNT(*) FROM backup_inventory WHERE deleted_at IS NULL"),
        68
    );
    let table = text(&w.patina(&["list", "--database", "app"]).stdout);
    assert!(
        table.contains(&format!("weekly/2026-W45.tar:{member}")),
        "{table}"
    );

    // Restore by time: an incident at 14:00 on 3 Nov needs that morning's point, which lives
    // only in the W45 archive.
    let out = w.dir.path().join("restored.db");
    let r = w.patina(&[
        "restore",
        "app",
        "--at",
        "2026-11-03 14:00",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let said = text(&r.stderr);
    assert!(
        said.contains("2026-W45.tar") && said.contains("2026-11-03 03:00:10 UTC"),
        "{said}"
    );
    assert_eq!(tables_of(&out), tables_of(Path::new(DEMO_DB)));

    // --table: just posts, with its index and trigger, and its rows.
    let posts = w.dir.path().join("posts.db");
    let r = w.patina(&[
        "restore",
        "app",
        "--at",
        "2026-11-03T15:30:00+00:00",
        "--table",
        "posts",
        "--to",
        posts.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("2026-11-03 15:00:10 UTC"));
    assert_eq!(
        tables_of(&posts),
        ["posts", "posts_audit", "posts_by_author"]
            .map(String::from)
            .into()
    );
    assert_eq!(rows(&posts, "posts"), rows(Path::new(DEMO_DB), "posts"));
    // Value by value, as SQLite itself quotes them (type and bytes).
    assert!(!quoted(Path::new(DEMO_DB), "posts").is_empty());
    assert_eq!(quoted(&posts, "posts"), quoted(Path::new(DEMO_DB), "posts"));
    assert_eq!(quoted(&out, "users"), quoted(Path::new(DEMO_DB), "users"));

    // An unknown table writes nothing and says what the backup has.
    let none = w.dir.path().join("none.db");
    let r = w.patina(&[
        "restore",
        "app",
        "--table",
        "nope",
        "--to",
        none.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let said = text(&r.stderr);
    assert!(
        said.contains("no table nope") && said.contains("posts"),
        "{said}"
    );
    assert!(!none.exists());
    let leftovers: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".patina-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A time before the first point: a clear miss, with the dates that exist.
    let r = w.patina(&[
        "restore",
        "app",
        "--at",
        "2026-10-01T00:00Z",
        "--to",
        "x.db",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("at or before 2026-10-01 00:00:00 UTC"));

    // The plan names the next drill and what it samples.
    let plan = text(&w.patina(&["plan", "--at", "2026-12-05T16:00:00Z"]).stdout);
    assert!(
        plan.contains("next restore drill: 2026-12-12 05:00 UTC")
            && plan.contains("members of 3 weekly archives"),
        "{plan}"
    );

    // verify --at an archived point.
    let v = w.patina(&["verify", "app", "--at", "2026-11-04"]);
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    assert!(text(&v.stdout).contains("weekly/2026-W45.tar"));

    // The restore history: every CLI restore and verify, with who and where from.
    let history = w.count(
        "SELECT count(*) FROM restores WHERE initiated_by = 'cli:drill-tester' AND action = 'restore'",
    );
    assert_eq!(history, 4);
    // … and audited, with the OS user as who.
    assert_eq!(
        w.count(
            "SELECT count(*) FROM audit_log WHERE via = 'cli' AND who = 'drill-tester'
             AND action = 'restore'"
        ),
        4
    );
    assert_eq!(
        w.count("SELECT count(*) FROM restores WHERE action = 'restore' AND result = 'failed'"),
        2
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM restores WHERE action = 'verify' AND result = 'success'
             AND location LIKE '%2026-W45.tar'"
        ),
        1
    );

    // From storage alone: a rebuilt catalog has the same restore points, archived ones too
    // (its write-ahead log left behind must not leak into the rebuilt catalog).
    std::fs::remove_file(w.dir.path().join(".patina/patina.db")).unwrap();
    assert!(w.dir.path().join(".patina/patina.db-wal").exists());
    let r = w.patina(&["catalog", "rebuild"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(text(&r.stdout).contains("weekly archives"));
    let relisted: Vec<Value> =
        serde_json::from_slice(&w.patina(&["list", "--json"]).stdout).unwrap();
    let relisted: BTreeSet<(String, String)> = relisted
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_string(),
                p["location"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let before: BTreeSet<(String, String)> = listed
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_string(),
                p["location"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(relisted, before);
}

#[tokio::test]
async fn downloads_by_time_are_recorded_and_status_counts_archived_points() {
    let server = crate::support::s3::S3Server::start().await;
    let w = World::new("file://unused", 0).await;
    // Same policy, on the in-process S3 server.
    let mut policy = (*w.reconciler.policy()).clone();
    policy.storage = server.storage("patina/");
    policy.daemon.tokens = vec![patina::policy::ApiToken {
        name: "ops".into(),
        secret: patina::policy::Secret::new("tok"),
        scopes: patina::policy::Scope::ALL.to_vec(),
    }];
    let store = Store::open(&policy.storage).unwrap();
    w.reconciler.set_policy(Arc::new(policy), store);
    w.days("2026-11-02", "2026-11-17").await;

    let listener = patina::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = patina::http::AppState::new(
        Arc::clone(&w.reconciler),
        Arc::clone(&w.catalog),
        w.clock.clock(),
    );
    let task = tokio::spawn(patina::http::serve(listener, state, std::future::pending()));
    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth("tok")
            .send()
    };

    // The 15:00 point of 3 Nov, from the W45 archive, chosen by ?at=.
    let r = get("/download/2026-11-03/app?at=2026-11-03T16:00Z".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sql = r.text().await.unwrap();
    assert!(
        sql.contains("CREATE TABLE"),
        "{}",
        &sql[..200.min(sql.len())]
    );
    // A time before that day's first point finds nothing on that day.
    let r = get("/download/2026-11-03/app?at=2026-11-03T02:00Z".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = get("/download/2026-11-03/app?at=2026-11-04T02:00Z".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a time on another day than the path's");
    let r = get("/download/2026-11-03/app?at=soon".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let status: Value = get("/status".into()).await.unwrap().json().await.unwrap();
    let app = &status["databases"][0];
    assert_eq!(app["restorePoints"], 32, "{app}");
    assert!(app["restorePointsByTier"]["weekly"].as_u64().unwrap() >= 14);
    assert_eq!(app["oldestRestorePoint"], "2026-11-02T03:00:10Z");
    assert_eq!(status["storage"]["totalBackups"], 32);
    let history = status["restoreHistory"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[1]["action"], "download");
    assert_eq!(history[1]["by"], "api:ops");
    assert_eq!(history[1]["result"], "success");
    let point = history[1]["restorePoint"].as_str().unwrap();
    assert!(
        point.starts_with("2026-11-03/app/20261103T150010Z.sql.zst in s3://")
            && point.ends_with("/patina/weekly/2026-W45.tar"),
        "{point}"
    );
    assert_eq!(history[0]["result"], "failed");
    let list: Value = get("/list?database=app&limit=1000".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["filtered"], 32);
    task.abort();
}

#[tokio::test]
async fn shutdown_stops_a_running_drill_at_once() {
    let w = World::new("file://backups", 0).await;
    // A database big enough that restoring it takes a while.
    let conn = rusqlite::Connection::open(w.dir.path().join("app.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE bulk (id INTEGER PRIMARY KEY, body TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
         INSERT INTO bulk SELECT i, printf('%d %s', i, hex(randomblob(48))) FROM n;",
    )
    .unwrap();
    drop(conn);
    // The first pass backs up (the drill waits for it), the second starts the drill.
    w.clock.set(t("2026-11-02T03:00:10Z"));
    w.reconciler.run_once().await.unwrap();
    w.reconciler.wait_idle().await;
    w.reconciler.run_once().await.unwrap();
    assert!(w.reconciler.drilling(), "the drill should be running");
    // Wait until it is restoring (its scratch database exists).
    let scratch = w.dir.path().join(".patina/scratch/drill");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&scratch).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the drill never started restoring"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    assert!(w.reconciler.shutdown(Duration::from_secs(60)).await);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited for the drill: {:?}",
        started.elapsed()
    );
    assert!(!w.reconciler.drilling());
    assert_eq!(
        w.count("SELECT count(*) FROM verifications"),
        0,
        "an aborted drill records no result"
    );
}
