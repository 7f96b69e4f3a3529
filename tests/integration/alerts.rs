//! Alerts end to end: real failures (a missing source file, a shrunken database, a vanished
//! backup, an invalid edit, a clock moved past the stale window) driven through the reconciler
//! with an injected clock — and through a running `patina run` — into local axum receivers,
//! asserting the exact JSON each got, retries, the catalog record, de-duplication and that a
//! dead endpoint never holds up a backup.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patina::alert::{Alerts, DeliveryConfig};
use patina::backup::{JobRequest, Quiet};
use patina::catalog::Catalog;
use patina::human;
use patina::manifest::Trigger;
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::Store;
use serde_json::json;

use crate::support::receiver::{Receiver, Reply};

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");
const HOOK_TOKEN: &str = "tok-5ecret-header-value";
const T0: &str = "2026-11-22T03:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Fast retries so tests never wait on the default minute.
fn fast() -> DeliveryConfig {
    DeliveryConfig {
        attempts: 3,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(2),
        queue: 64,
    }
}

/// A policy: databases (all critical, daily at 03:00; a missing file fails), the sinks text.
fn policy_text(dbs: &[&str], sinks: &str) -> String {
    let mut s = String::from(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"1s\"\n\n[storage]\nurl = \"file://backups\"\n\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\n[alerts]\nstale_after = 2\n\
         max_duration = \"45m\"\nsize_deviation = 0.5\ndaily_summary = \"0 8 * * *\"\n\n",
    );
    s.push_str(sinks);
    for name in dbs {
        s.push_str(&format!(
            "\n[[database]]\nname = \"{name}\"\nkind = \"sqlite\"\npath = \"{name}.db\"\npriority = \"critical\"\n"
        ));
    }
    s
}

fn sink(name: &str, kind: &str, url: &str, on: &[&str]) -> String {
    let on: Vec<String> = on.iter().map(|e| format!("\"{e}\"")).collect();
    let headers = if kind == "webhook" {
        "headers = { Authorization = \"Bearer ${HOOK_TOKEN}\" }\n"
    } else {
        ""
    };
    format!(
        "[[alert]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\non = [{}]\n{headers}\n",
        on.join(", ")
    )
}

fn env(name: &str) -> Option<String> {
    (name == "HOOK_TOKEN").then(|| HOOK_TOKEN.to_string())
}

struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    /// Every read of the clock advances it by this many milliseconds (0: a still clock), so a
    /// backup can "take" a chosen time without a test waiting for it.
    step_ms: Arc<AtomicI64>,
    reconciler: Reconciler,
    alerts: Alerts,
    catalog: Arc<Mutex<Catalog>>,
    store: Store,
    policy: Arc<Policy>,
}

impl World {
    async fn new(dbs: &[&str], missing: &[&str], sinks: &str, config: DeliveryConfig) -> World {
        let dir = tempfile::tempdir().unwrap();
        for name in dbs.iter().filter(|d| !missing.contains(d)) {
            std::fs::copy(DEMO_DB, dir.path().join(format!("{name}.db"))).unwrap();
        }
        let text = policy_text(dbs, sinks);
        std::fs::write(dir.path().join("patina.toml"), &text).unwrap();
        let policy = Arc::new(
            patina::config::from_str(&text, "patina.toml", dir.path(), &env)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
        let clock = ManualClock::new(t(T0));
        let step_ms = Arc::new(AtomicI64::new(0));
        let stepping: patina::clock::Clock = {
            let (clock, step_ms) = (clock.clone(), Arc::clone(&step_ms));
            Arc::new(move || {
                clock.advance(chrono::Duration::milliseconds(
                    step_ms.load(Ordering::SeqCst),
                ));
                clock.now()
            })
        };
        let alerts = Alerts::start(
            Arc::clone(&policy),
            Arc::new(patina::daemon::CatalogHistory(Arc::clone(&catalog))),
            Arc::clone(&stepping),
            config,
        );
        let reconciler = Reconciler::new(
            Arc::clone(&policy),
            store.clone(),
            Arc::clone(&catalog),
            stepping,
            Arc::new(Quiet),
        )
        .with_alerts(alerts.clone());
        World {
            dir,
            clock,
            step_ms,
            reconciler,
            alerts,
            catalog,
            store,
            policy,
        }
    }

    /// Run a manual job with a known id and wait for it (not for its alerts).
    async fn job(&self, id: &str, dbs: &[&str]) {
        self.reconciler
            .start_job(
                JobRequest {
                    job_id: Some(id.into()),
                    databases: dbs.iter().map(|d| d.to_string()).collect(),
                    trigger: Trigger::Manual,
                    initiated_by: None,
                    reason: None,
                },
                &Default::default(),
                Arc::clone(&self.policy),
                self.store.clone(),
            )
            .await;
        self.reconciler.wait_idle().await;
    }

    async fn settle(&self) {
        assert!(
            self.alerts.wait_idle(Duration::from_secs(15)).await,
            "alert deliveries did not finish"
        );
    }

    fn size_of(&self, db: &str) -> u64 {
        self.catalog.lock().unwrap().list_backups(Some(db)).unwrap()[0].size_bytes
    }

    fn error_of(&self, job: &str, db: &str) -> String {
        self.catalog
            .lock()
            .unwrap()
            .connection()
            .query_row(
                "SELECT error_message FROM backup_results WHERE job_id = ?1 AND database_name = ?2",
                [job, db],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// (sink, event, attempt, result, status) of every recorded attempt, oldest first.
    fn attempts(&self) -> Vec<(String, String, u32, String, Option<u16>)> {
        let mut rows: Vec<_> = self
            .catalog
            .lock()
            .unwrap()
            .alert_attempts(1000)
            .unwrap()
            .into_iter()
            .map(|a| (a.sink, a.event, a.attempt, a.result, a.status_code))
            .collect();
        rows.reverse();
        rows
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_reaches_every_sink_kind_in_its_exact_shape() {
    let rx = Receiver::start().await;
    let all = ["failure", "success"];
    let sinks = [
        sink("hook", "webhook", &rx.url("/hook/s3cret-path"), &all),
        sink("chat", "discord", &rx.url("/discord"), &["failure"]),
        sink("team", "slack", &rx.url("/slack"), &["failure"]),
        sink("hc", "healthchecks", &rx.url("/hc/uuid-1"), &all),
    ]
    .concat();
    // `ghost` has no file: a missing source file fails that database only.
    let w = World::new(&["alpha", "ghost"], &["ghost"], &sinks, fast()).await;
    w.job("job-1", &["alpha", "ghost"]).await;
    w.settle().await;

    let size = human::bytes(w.size_of("alpha"));
    let error = w.error_of("job-1", "ghost");
    let hook = rx.to("/hook/s3cret-path");
    assert_eq!(hook.len(), 1, "one alert per job: {hook:?}");
    assert_eq!(
        hook[0].json(),
        json!({
            "type": "backup_failed",
            "jobId": "job-1",
            "status": "partial_failure",
            "timestamp": "2026-11-22T03:00:00Z",
            "summary": {"successful": 1, "failed": 1, "totalSize": size, "duration": "0s"},
            "failures": [{"database": "ghost", "error": error}],
        })
    );
    assert_eq!(
        hook[0].headers["authorization"],
        format!("Bearer {HOOK_TOKEN}").as_str()
    );
    assert_eq!(hook[0].headers["content-type"], "application/json");

    assert_eq!(
        rx.to("/discord")[0].json(),
        json!({"embeds": [{
            "title": "⚠️ Patina backup partially failed",
            "color": 0xef4444,
            "fields": [
                {"name": "Databases", "value": "1/2 successful", "inline": true},
                {"name": "Total Size", "value": size, "inline": true},
                {"name": "Duration", "value": "0.0s", "inline": true},
                {"name": "Failures", "value": format!("• **ghost**: {error}"), "inline": false},
            ],
            "footer": {"text": "Job ID: job-1"},
            "timestamp": "2026-11-22T03:00:00Z",
        }]})
    );

    let headline = "backup partially failed: 1 of 2 databases failed (ghost)";
    assert_eq!(
        rx.to("/slack")[0].json(),
        json!({
            "text": headline,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "⚠️ Patina backup partially failed", "emoji": true}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Databases*\n1/2 successful"},
                    {"type": "mrkdwn", "text": format!("*Total size*\n{size}")},
                    {"type": "mrkdwn", "text": "*Duration*\n0s"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Failures*\n• `ghost`: {error}")}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "Job ID: job-1 · 2026-11-22T03:00:00Z"}]},
            ],
        })
    );

    // Healthchecks: /start when the job begins, /fail when it ends with failures.
    let start = rx.to("/hc/uuid-1/start");
    let fail = rx.to("/hc/uuid-1/fail");
    assert_eq!((start.len(), fail.len()), (1, 1), "{:?}", rx.requests());
    assert_eq!(fail[0].body, headline);
    assert_eq!(start[0].method, "POST");

    // Every delivery is recorded and counted, once.
    let counts: Vec<(String, &str, &str, u64)> = w
        .alerts
        .sent_counts()
        .into_iter()
        .map(|c| (c.sink, c.event, c.result, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("chat".into(), "failure", "success", 1),
            ("hc".into(), "failure", "success", 1),
            ("hc".into(), "start", "success", 1),
            ("hook".into(), "failure", "success", 1),
            ("team".into(), "failure", "success", 1),
        ]
    );
    let from_catalog = w.catalog.lock().unwrap().alert_delivery_counts().unwrap();
    assert_eq!(from_catalog.len(), 5);

    // A retry of the same failing database stays quiet; its recovery is sent once, also to
    // the failure-only sinks (green), and healthchecks gets a success ping.
    w.clock.advance(chrono::Duration::minutes(1));
    w.job("job-2", &["ghost"]).await;
    w.settle().await;
    assert_eq!(rx.to("/hook/s3cret-path").len(), 1);
    assert_eq!(rx.to("/discord").len(), 1);
    std::fs::copy(DEMO_DB, w.dir.path().join("ghost.db")).unwrap();
    w.clock.advance(chrono::Duration::minutes(1));
    w.job("job-3", &["ghost"]).await;
    w.settle().await;
    let hook = rx.to("/hook/s3cret-path");
    assert_eq!(hook.len(), 2);
    assert_eq!(hook[1].json()["type"], "backup_completed");
    assert_eq!(hook[1].json()["status"], "success");
    assert_eq!(
        hook[1].json()["details"],
        json!([{"database": "ghost", "status": "success", "size": human::bytes(w.size_of("ghost"))}])
    );
    let discord = rx.to("/discord");
    assert_eq!(discord.len(), 2);
    assert_eq!(discord[1].json()["embeds"][0]["color"], 0x22c55e);
    assert_eq!(
        discord[1].json()["embeds"][0]["title"],
        "✅ Patina backup completed"
    );
    assert_eq!(rx.to("/hc/uuid-1").len(), 1, "success ping");
    assert_eq!(rx.to("/hc/uuid-1/start").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_honour_retry_after_and_record_every_attempt() {
    let rx = Receiver::start().await;
    let sinks = [
        sink(
            "flaky",
            "webhook",
            &rx.url("/flaky/s3cret-path"),
            &["failure"],
        ),
        sink("limited", "slack", &rx.url("/limited"), &["failure"]),
        sink(
            "dead",
            "discord",
            &rx.url("/dead/s3cret-path"),
            &["failure"],
        ),
    ]
    .concat();
    let w = World::new(&["ghost"], &["ghost"], &sinks, fast()).await;
    // Scripted per arrival order is shared; give each sink its own receiver path behaviour by
    // scripting all replies up front is not possible, so use one sink at a time.
    rx.script([Reply::Status(500), Reply::Status(503)]);
    w.alerts.set_policy(Arc::new(Policy {
        sinks: w.policy.sinks[..1].to_vec(),
        ..(*w.policy).clone()
    }));
    w.job("job-1", &["ghost"]).await;
    w.settle().await;
    assert_eq!(
        rx.to("/flaky/s3cret-path").len(),
        3,
        "fails twice then succeeds"
    );
    assert_eq!(
        w.attempts(),
        [
            (
                "flaky".into(),
                "failure".into(),
                1,
                "retry".into(),
                Some(500)
            ),
            (
                "flaky".into(),
                "failure".into(),
                2,
                "retry".into(),
                Some(503)
            ),
            (
                "flaky".into(),
                "failure".into(),
                3,
                "success".into(),
                Some(204)
            ),
        ]
    );

    // 429 with Retry-After: 1 — the second try waits at least that second.
    rx.script([Reply::RetryAfter(1)]);
    w.alerts.set_policy(Arc::new(Policy {
        sinks: w.policy.sinks[1..2].to_vec(),
        ..(*w.policy).clone()
    }));
    let ghost_fixed = w.dir.path().join("ghost.db");
    std::fs::copy(DEMO_DB, &ghost_fixed).unwrap();
    let started = Instant::now();
    w.clock.advance(chrono::Duration::minutes(1));
    w.job("ok-1", &["ghost"]).await; // recovery: sent to failure sinks
    w.settle().await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    std::fs::remove_file(&ghost_fixed).unwrap();
    w.clock.advance(chrono::Duration::minutes(1));
    w.job("job-2", &["ghost"]).await;
    w.settle().await;
    let limited = rx.to("/limited");
    assert_eq!(limited.len(), 3, "{limited:?}"); // recovery (429, then ok), then job-2
    let a = w.attempts();
    assert_eq!(
        a[3..5]
            .iter()
            .map(|r| (r.3.as_str(), r.4))
            .collect::<Vec<_>>(),
        [("retry", Some(429)), ("success", Some(204))]
    );

    // A sink that always fails: three tries, then given up — recorded as a final failure,
    // counted, and nowhere does the URL's secret path appear.
    rx.always(Reply::Status(500));
    w.alerts.set_policy(Arc::new(Policy {
        sinks: w.policy.sinks[2..].to_vec(),
        ..(*w.policy).clone()
    }));
    std::fs::copy(DEMO_DB, &ghost_fixed).unwrap();
    w.clock.advance(chrono::Duration::minutes(1));
    w.job("ok-2", &["ghost"]).await;
    w.settle().await;
    assert_eq!(rx.to("/dead/s3cret-path").len(), 3);
    let rows = w.catalog.lock().unwrap().alert_attempts(3).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(),
        ["failure", "retry", "retry"]
    );
    assert!(rows.iter().all(|r| r.status_code == Some(500)));
    for r in &rows {
        let e = r.error.as_deref().unwrap();
        assert!(e.starts_with("HTTP 500"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
    assert!(w.alerts.sent_counts().iter().any(|c| c.sink == "dead"
        && c.event == "success"
        && c.result == "failure"
        && c.count == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_never_holds_up_a_backup() {
    let rx = Receiver::start().await;
    rx.always(Reply::Hang);
    let sinks = [
        sink(
            "slow",
            "webhook",
            &rx.url("/slow/s3cret-path"),
            &["failure", "success"],
        ),
        sink("hc", "healthchecks", &rx.url("/hc/x"), &["success"]),
    ]
    .concat();
    let config = DeliveryConfig {
        timeout: Duration::from_secs(60),
        ..fast()
    };
    let w = World::new(&["alpha"], &[], &sinks, config).await;
    let started = Instant::now();
    w.job("job-1", &["alpha"]).await;
    // The job is done and recorded while both deliveries still hang.
    let job = &w.catalog.lock().unwrap().recent_jobs(1).unwrap()[0];
    assert_eq!(job.status, "completed");
    assert!(
        w.alerts.pending() >= 2,
        "deliveries should still be in flight"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Shutdown gives up on them after the grace period instead of waiting for the timeout.
    assert!(!w.alerts.shutdown(Duration::from_millis(200)).await);
    rx.wait_for("/hc/x/start", 1, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fires_once_across_twenty_ticks_then_resolves() {
    let rx = Receiver::start().await;
    let sinks = sink("ops", "webhook", &rx.url("/ops"), &["stale"]);
    let w = World::new(&["alpha"], &[], &sinks, fast()).await;
    // A committed backup now, then the daemon keeps ticking but backups stop (no passes run).
    let r = w.reconciler.run_once().await.unwrap();
    assert_eq!(r.backups_started, 1);
    w.reconciler.wait_idle().await;
    let last = w.catalog.lock().unwrap().latest_backups().unwrap()["alpha"].0;
    w.alerts.evaluate();
    w.clock.advance(chrono::Duration::hours(47));
    w.alerts.evaluate();
    w.settle().await;
    assert!(rx.to("/ops").is_empty(), "within 2 intervals: not stale");

    // Past 2 daily intervals: stale, once, however many ticks follow.
    w.clock.advance(chrono::Duration::hours(2));
    for _ in 0..20 {
        w.alerts.evaluate();
        w.clock.advance(chrono::Duration::minutes(1));
    }
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(
        body,
        json!({
            "type": "backup_stale",
            "state": "firing",
            "timestamp": "2026-11-24T04:00:00Z",
            "message": format!("alpha: no committed backup within 48h (last: {})", last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "database": "alpha",
            "lastSuccess": last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "staleAfter": "48h",
        })
    );

    // A backup commits: one resolved, then silence.
    w.reconciler.run_once().await.unwrap();
    w.reconciler.wait_idle().await;
    for _ in 0..5 {
        w.alerts.evaluate();
        w.clock.advance(chrono::Duration::minutes(1));
    }
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].json()["state"], "resolved");
    assert_eq!(got[1].json()["type"], "backup_stale");
    assert_eq!(got[1].json()["since"], "2026-11-24T04:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrunken_database_and_a_vanished_backup_alert_once() {
    let rx = Receiver::start().await;
    let sinks = sink(
        "ops",
        "webhook",
        &rx.url("/ops"),
        &["size_anomaly", "drift"],
    );
    let w = World::new(&["alpha"], &[], &sinks, fast()).await;
    for i in 0..4 {
        w.job(&format!("job-{i}"), &["alpha"]).await;
        w.clock.advance(chrono::Duration::days(1));
    }
    w.settle().await;
    assert!(rx.to("/ops").is_empty(), "steady sizes: quiet");
    let normal = w.size_of("alpha");

    // The database loses almost everything.
    let path = w.dir.path().join("alpha.db");
    std::fs::remove_file(&path).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(c);
    w.job("job-small", &["alpha"]).await;
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["type"], "backup_size_anomaly");
    assert_eq!(body["database"], "alpha");
    assert_eq!(body["jobId"], "job-small");
    let median = body["medianBytes"].as_u64().unwrap();
    assert!(
        median.abs_diff(normal) * 20 < normal,
        "{median} vs {normal}"
    );
    assert!(body["deviation"].as_f64().unwrap() < -0.5, "{body}");

    // A committed backup vanishes from storage: drift, once.
    let key = w
        .catalog
        .lock()
        .unwrap()
        .list_backups(Some("alpha"))
        .unwrap()[1]
        .key
        .clone();
    w.store
        .delete(&format!(
            "{}.manifest.json",
            key.trim_end_matches(".sql.zst")
        ))
        .await
        .unwrap();
    w.store.delete(&key).await.unwrap();
    for _ in 0..3 {
        w.reconciler.run_once().await.unwrap();
        w.reconciler.wait_idle().await;
    }
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].json()["type"], "backup_drift");
    assert_eq!(got[1].json()["keys"], json!([key]));
}

/// See: issue 14. A new dump whose schema differs from the previous dump's is announced once,
/// naming the tables added, dropped and altered; an unchanged schema stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_is_announced_once_with_the_tables() {
    let rx = Receiver::start().await;
    let sinks = sink("ops", "webhook", &rx.url("/ops"), &["schema_changed"])
        + &sink("chat", "discord", &rx.url("/chat"), &["schema_changed"]);
    let w = World::new(&["alpha"], &[], &sinks, fast()).await;
    w.job("job-0", &["alpha"]).await;
    w.clock.advance(chrono::Duration::days(1));
    w.job("job-1", &["alpha"]).await;
    w.settle().await;
    assert!(rx.to("/ops").is_empty(), "same schema: quiet");

    // The application migrates: a table added, one dropped, an index on another.
    let c = rusqlite::Connection::open(w.dir.path().join("alpha.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);
         DROP TABLE audit_log;
         CREATE INDEX users_by_name ON users(name);",
    )
    .unwrap();
    drop(c);
    w.clock.advance(chrono::Duration::days(1));
    w.job("job-2", &["alpha"]).await;
    w.clock.advance(chrono::Duration::days(1));
    w.job("job-3", &["alpha"]).await;
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    let keys: Vec<String> = w
        .catalog
        .lock()
        .unwrap()
        .list_backups(Some("alpha"))
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert_eq!(
        body,
        json!({
            "type": "schema_changed",
            "state": "firing",
            "timestamp": "2026-11-24T03:00:00Z",
            "message": "alpha: the schema changed since the previous backup (added: tags; dropped: audit_log; altered: users)",
            "jobId": "job-2",
            "database": "alpha",
            "key": keys[1],
            "previousKey": keys[2],
            "tablesAdded": ["tags"],
            "tablesDropped": ["audit_log"],
            "tablesAltered": ["users"],
        })
    );
    let chat = rx.to("/chat");
    assert_eq!(chat.len(), 1, "{chat:?}");
    let embed = &chat[0].json()["embeds"][0];
    assert_eq!(embed["title"], "🧬 Schema changed: alpha");
    assert_eq!(embed["color"], 0x3b82f6);
}

/// See: issue 14. A backup taking more than 3× the median of its last successful runs, and
/// more than a minute, alerts once; durations come from the catalog's recorded results, made
/// long by a clock that advances on every read (nothing sleeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_far_slower_than_its_median_alerts_once() {
    let rx = Receiver::start().await;
    let sinks = sink("ops", "webhook", &rx.url("/ops"), &["slow"]);
    let w = World::new(&["alpha"], &[], &sinks, fast()).await;
    let duration_of = |w: &World, job: &str| -> i64 {
        w.catalog
            .lock()
            .unwrap()
            .connection()
            .query_row(
                "SELECT duration_ms FROM backup_results WHERE job_id = ?1",
                [job],
                |r| r.get(0),
            )
            .unwrap()
    };
    w.step_ms.store(1_000, Ordering::SeqCst);
    for i in 0..4 {
        w.job(&format!("job-{i}"), &["alpha"]).await;
        w.clock.advance(chrono::Duration::days(1));
    }
    w.settle().await;
    let usual = duration_of(&w, "job-3");
    assert!(
        usual >= 1_000,
        "each run takes a few clock reads: {usual} ms"
    );
    assert!(rx.to("/ops").is_empty(), "steady durations: quiet");

    // The same backup, with every clock read 40 s apart: far over 3× the median and a minute.
    w.step_ms.store(40_000, Ordering::SeqCst);
    w.job("job-slow", &["alpha"]).await;
    w.step_ms.store(1_000, Ordering::SeqCst);
    w.clock.advance(chrono::Duration::days(1));
    w.job("job-after", &["alpha"]).await;
    w.settle().await;
    let slow = duration_of(&w, "job-slow");
    assert!(slow > 60_000 && slow > 3 * usual, "{slow} vs {usual}");
    let got = rx.to("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["type"], "backup_slow");
    assert_eq!(body["jobId"], "job-slow");
    assert_eq!(body["database"], "alpha");
    assert_eq!(body["runs"], 4);
    assert_eq!(body["factor"], 3);
    assert_eq!(body["durationSeconds"], json!(slow as f64 / 1000.0));
    assert_eq!(body["medianSeconds"], json!(usual as f64 / 1000.0));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("alpha: the backup took "),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_past_max_duration_alerts_while_running_once() {
    let rx = Receiver::start().await;
    let sinks = sink("ops", "discord", &rx.url("/ops"), &["duration"]);
    let w = World::new(&["alpha"], &[], &sinks, fast()).await;
    w.alerts.job_started("long-job", &["alpha".to_string()]);
    w.clock.advance(chrono::Duration::minutes(45));
    w.alerts.evaluate();
    w.clock.advance(chrono::Duration::seconds(1));
    for _ in 0..10 {
        w.alerts.evaluate();
    }
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let embed = &got[0].json()["embeds"][0];
    assert_eq!(embed["title"], "⏱️ Patina backup is taking too long");
    assert_eq!(embed["color"], 0xef4444);
    assert_eq!(embed["footer"]["text"], "Job ID: long-job");
    assert_eq!(
        embed["description"],
        "backup job long-job has been running for 45m 1s (limit 45m)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_summary_is_sent_once_per_fire_with_every_database() {
    let rx = Receiver::start().await;
    let sinks = sink("ops", "webhook", &rx.url("/ops"), &["summary"]);
    let w = World::new(&["alpha", "ghost"], &["ghost"], &sinks, fast()).await;
    w.job("job-1", &["alpha", "ghost"]).await;
    // Starting after today's 08:00 would not send yesterday's summary: the first tick only
    // sets the baseline.
    w.alerts.evaluate();
    w.clock.set(t("2026-11-22T08:00:00Z"));
    for _ in 0..5 {
        w.alerts.evaluate();
        w.clock.advance(chrono::Duration::minutes(1));
    }
    w.settle().await;
    let got = rx.to("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["type"], "daily_summary");
    assert_eq!(body["jobs"], 1);
    assert_eq!(body["failedJobs"], 1);
    assert_eq!(
        body["databases"],
        json!([
            {"database": "alpha", "lastSuccess": T0, "size": human::bytes(w.size_of("alpha")), "trend": "—"},
            {"database": "ghost", "lastSuccess": null, "size": null, "trend": "—"},
        ])
    );
    assert_eq!(
        body["abnormal"],
        json!(["ghost failing since 2026-11-22T03:00:00Z"])
    );
}

// --- through a running daemon -------------------------------------------------------------

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_patina"))
            .args([
                "run",
                "--shutdown-grace",
                "5s",
                "--alert-retry-backoff",
                "20ms",
            ])
            .current_dir(dir)
            .env_remove("PATINA_CONFIG")
            .env("PATINA_LOG", "debug")
            .env("HOOK_TOKEN", HOOK_TOKEN)
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
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_alerts_on_a_bad_reload_with_line_and_column_and_resolves_it() {
    let rx = Receiver::start().await;
    // The first delivery fails twice: the daemon retries it.
    rx.script([Reply::Status(500), Reply::Status(502)]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(DEMO_DB, p.join("alpha.db")).unwrap();
    let sinks = sink(
        "ops",
        "webhook",
        &rx.url("/ops/s3cret-path"),
        &["config_invalid", "success"],
    );
    let good = policy_text(&["alpha"], &sinks);
    std::fs::write(p.join("patina.toml"), &good).unwrap();
    let d = Daemon::start(p);
    // The catch-up backup succeeds: a success alert, delivered on the third try.
    let got = rx
        .wait_for("/ops/s3cret-path", 3, Duration::from_secs(30))
        .await;
    assert_eq!(got[2].json()["type"], "backup_completed", "{}", d.log());

    // An invalid edit (a typo'd key on line 19): config_invalid with file:line:column.
    let bad = good.replace("priority = \"critical\"", "priorty = \"critical\"");
    let line = bad.lines().position(|l| l.starts_with("priorty")).unwrap() + 1;
    std::fs::write(p.join("patina.toml"), &bad).unwrap();
    let got = rx
        .wait_for("/ops/s3cret-path", 4, Duration::from_secs(30))
        .await;
    let body = got[3].json();
    assert_eq!(body["type"], "config_invalid", "{body}");
    assert_eq!(body["state"], "firing");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"priorty\"") && e.contains(&format!("patina.toml:{line}:1"))),
        "{errors:?} (line {line})"
    );
    assert!(
        errors.iter().all(|e| e.contains("patina.toml:")),
        "{errors:?}"
    );

    // Touching the still-invalid file again does not repeat the alert.
    std::fs::write(p.join("patina.toml"), format!("{bad}\n")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.to("/ops/s3cret-path").len(), 4);

    // Fixed: one resolved.
    std::fs::write(p.join("patina.toml"), &good).unwrap();
    let got = rx
        .wait_for("/ops/s3cret-path", 5, Duration::from_secs(30))
        .await;
    assert_eq!(got[4].json()["type"], "config_invalid");
    assert_eq!(got[4].json()["state"], "resolved");

    // Secrets never reach the log, though debug logging is on and deliveries failed.
    let log = d.log();
    assert!(log.contains("alert"), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
    assert!(!log.contains(HOOK_TOKEN), "{log}");
}
