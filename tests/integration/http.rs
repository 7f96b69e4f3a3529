//! The HTTP server over real HTTP: the real stack in-process (policy, reconciler with an injected
//! clock, catalog, the in-process S3 server or a folder) on `127.0.0.1:0`, real backups, and
//! every endpoint's status codes and JSON fields checked against what storage and the catalog
//! hold. `promtool check metrics` runs on a live scrape when promtool is installed (`.ci/run`
//! installs it).

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::http::{AppState, Limits, Tls, TlsError};
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::certs::{Key, Pki};
use crate::support::s3::S3Server;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");
const TOKEN: &str = "t0ken-for-tests";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// alpha: critical, daily at 03:00; beta: normal, Sundays at 04:00.
fn policy_text(daemon_extra: &str) -> String {
    format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"60s\"\n{daemon_extra}\n\
         [storage]\nurl = \"file://backups\"\n\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n[priorities.normal]\nschedule = \"0 4 * * SUN\"\n\n\
         [[database]]\nname = \"alpha\"\ndescription = \"Auth: users & sessions\"\nkind = \"sqlite\"\npath = \"alpha.db\"\npriority = \"critical\"\n\n\
         [[database]]\nname = \"beta\"\nkind = \"sqlite\"\npath = \"beta.db\"\npriority = \"normal\"\n\n\
         [[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\non = [\"failure\"]\n"
    )
}

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(
        reconciler: &Arc<Reconciler>,
        catalog: &Arc<Mutex<Catalog>>,
        clock: &ManualClock,
    ) -> Server {
        let listener = patina::http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(Arc::clone(reconciler), Arc::clone(catalog), clock.clock());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(patina::http::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server {
            base,
            stop: Some(stop),
            task,
        }
    }

    /// The same server over HTTPS.
    async fn start_tls(
        reconciler: &Arc<Reconciler>,
        catalog: &Arc<Mutex<Catalog>>,
        clock: &ManualClock,
        tls: Tls,
    ) -> Server {
        let listener = patina::http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let state = AppState::new(Arc::clone(reconciler), Arc::clone(catalog), clock.clock());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(patina::http::serve_with(
            listener,
            state,
            Some(tls),
            Limits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            base,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    reconciler: Arc<Reconciler>,
    catalog: Arc<Mutex<Catalog>>,
    store: Store,
    server: Server,
    http: reqwest::Client,
    _s3: Option<S3Server>,
}

impl World {
    async fn new(daemon_extra: &str, s3: bool, start: DateTime<Utc>) -> World {
        let dir = tempfile::tempdir().unwrap();
        for name in ["alpha", "beta"] {
            std::fs::copy(DEMO_DB, dir.path().join(format!("{name}.db"))).unwrap();
        }
        let mut policy = load(dir.path(), &policy_text(daemon_extra));
        let server = if s3 {
            Some(S3Server::start().await)
        } else {
            None
        };
        if let Some(s) = &server {
            policy.storage = s.storage("patina/");
        }
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
        let clock = ManualClock::new(start);
        let reconciler = Arc::new(Reconciler::new(
            Arc::new(policy),
            store.clone(),
            Arc::clone(&catalog),
            clock.clock(),
            Arc::new(Quiet),
        ));
        let http_server = Server::start(&reconciler, &catalog, &clock).await;
        World {
            dir,
            clock,
            reconciler,
            catalog,
            store,
            server: http_server,
            http: reqwest::Client::new(),
            _s3: server,
        }
    }

    async fn pass(&self) {
        self.reconciler.run_once().await.unwrap();
        self.reconciler.wait_idle().await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.get(path).await;
        let status = r.status();
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        (status, r.json().await.unwrap())
    }

    async fn trigger(&self, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(self.url("/trigger"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }
}

fn load(dir: &Path, text: &str) -> Policy {
    std::fs::write(dir.join("patina.toml"), text).unwrap();
    patina::config::from_str(text, "patina.toml", dir, &|_| None).unwrap()
}

fn assert_json_error(v: &Value) {
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

#[tokio::test]
async fn every_endpoint_against_real_backups_on_s3() {
    let token_line = format!("api_token = \"{TOKEN}\"");
    let w = World::new(&token_line, true, t("2026-11-16T10:00:00Z")).await; // a Monday

    // Before the first pass: alive, not ready.
    assert_eq!(w.get("/healthz").await.status(), StatusCode::OK);
    let (st, ready) = w.get_json("/readyz").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready["reason"]
            .as_str()
            .unwrap()
            .contains("first reconcile pass"),
        "{ready}"
    );

    // New databases are due at once: one catch-up job backs up both.
    w.pass().await;
    let (st, ready) = w.get_json("/readyz").await;
    assert_eq!(
        (st, &ready["ready"]),
        (StatusCode::OK, &json!(true)),
        "{ready}"
    );
    let backups = w.catalog.lock().unwrap().list_backups(None).unwrap();
    assert_eq!(backups.len(), 2);
    let total_bytes: u64 = backups.iter().map(|b| b.size_bytes).sum();
    let alpha = backups
        .iter()
        .find(|b| b.database == "alpha")
        .unwrap()
        .clone();

    // The status page's shape, exactly.
    let (st, bs) = w.get_json("/api/backup-status").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        bs,
        json!({
            "summary": {"totalBackups": 2, "uniqueDays": 1, "totalBytes": total_bytes, "lastBackup": "2026-11-16"},
            // beta's schedule is weekly: its day is a weekly day.
            "dailyHistory": [{"date": "2026-11-16", "count": 2, "size": total_bytes, "type": "weekly"}],
            "reliability": {"score": 100.0, "perfectJobs": 1, "partialJobs": 0, "totalJobs": 1},
            "isHealthy": true,
        })
    );

    // /status: last job, next run per database, storage totals.
    let (st, s) = w.get_json("/status").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s["currentStatus"], "idle");
    assert_eq!(s["lastBackup"]["successful"], 2);
    assert_eq!(s["lastBackup"]["failed"], 0);
    assert_eq!(s["lastBackup"]["status"], "completed");
    assert_eq!(s["lastBackup"]["trigger"], "catch-up");
    assert_eq!(s["lastBackup"]["date"], "2026-11-16");
    assert_eq!(s["nextScheduled"], "2026-11-17T03:00:00Z");
    let next: Vec<(&str, &str)> = s["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["database"].as_str().unwrap(),
                d["nextRun"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        next,
        [
            ("alpha", "2026-11-17T03:00:00Z"),
            ("beta", "2026-11-22T04:00:00Z")
        ]
    );
    assert_eq!(s["databases"][0]["description"], "Auth: users & sessions");
    assert_eq!(s["databases"][1]["description"], Value::Null);
    assert_eq!(s["recentJobs"].as_array().unwrap().len(), 1);
    assert_eq!(s["storage"]["totalBackups"], 2);
    assert_eq!(s["storage"]["totalBytes"], total_bytes);
    assert_eq!(s["storage"]["oldestBackup"], "2026-11-16");
    assert_eq!(s["storage"]["newestBackup"], "2026-11-16");

    // /: service info.
    let (_, info) = w.get_json("/").await;
    assert_eq!(info["name"], "Patina");
    assert_eq!(info["databases"], 2);
    assert_eq!(
        info["databaseList"][0],
        json!({"name": "alpha", "description": "Auth: users & sessions", "kind": "sqlite", "priority": "critical"})
    );
    assert!(info["endpoints"]["POST /trigger"].is_string());

    // /list with filters, and its validation.
    let (_, l) = w.get_json("/list").await;
    assert_eq!(
        (l["total"].clone(), l["filtered"].clone()),
        (json!(2), json!(2))
    );
    let (_, l) = w.get_json("/list?database=alpha").await;
    assert_eq!(l["filtered"], 1);
    let b = &l["backups"][0];
    assert_eq!(b["r2Key"], alpha.key.as_str());
    assert_eq!(b["sizeBytes"], alpha.size_bytes);
    assert_eq!(b["tables"], alpha.table_count);
    assert_eq!(b["rows"], alpha.row_count);
    assert_eq!(b["date"], "2026-11-16");
    assert_eq!(b["createdAt"].as_str().unwrap().len(), 20);
    let (_, l) = w.get_json("/list?date=2026-11-16&limit=1").await;
    assert_eq!(
        (
            l["backups"].as_array().unwrap().len(),
            l["filtered"].clone()
        ),
        (1, json!(2))
    );
    let (_, l) = w.get_json("/list?date=2026-11-15").await;
    assert_eq!(l["filtered"], 0);
    for bad in [
        "date=2026-13-01",
        "date=yesterday",
        "limit=0",
        "limit=1001",
        "limit=x",
        "database=..%2Fetc",
        "database=Alpha",
        "color=red",
    ] {
        let (st, e) = w.get_json(&format!("/list?{bad}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert_json_error(&e);
    }

    // /download: token, then the stored dump decompressed; ?raw=1 the stored bytes.
    let path = "/download/2026-11-16/alpha";
    assert_eq!(w.get(path).await.status(), StatusCode::UNAUTHORIZED);
    let r = w
        .http
        .get(w.url(path))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_json_error(&r.json().await.unwrap());
    let stored = w.store.get(&alpha.key).await.unwrap();
    let r = w
        .http
        .get(w.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"alpha-2026-11-16.sql\""
    );
    assert_eq!(r.headers()["content-type"], "application/sql");
    let sql = r.bytes().await.unwrap();
    assert_eq!(
        sql.as_ref(),
        zstd::decode_all(stored.as_ref()).unwrap().as_slice()
    );
    assert!(sql.starts_with(b"-- "), "a SQL dump");
    let r = w
        .http
        .get(w.url(&format!("{path}?raw=1")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"alpha-2026-11-16.sql.zst\""
    );
    assert_eq!(r.bytes().await.unwrap(), stored);
    for (bad, want) in [
        ("/download/2026-11-15/alpha", StatusCode::NOT_FOUND),
        ("/download/2026-11-16/nope", StatusCode::NOT_FOUND),
        ("/download/20261116/alpha", StatusCode::BAD_REQUEST),
        (
            "/download/2026-11-16/..%2F..%2Fweekly",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/download/2026-11-16/alpha?raw=maybe",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = w
            .http
            .get(w.url(bad))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{bad}");
        assert_json_error(&r.json().await.unwrap());
    }

    // /restore-guide.
    let (st, g) = w.get_json("/restore-guide/alpha").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(g["database"], "alpha");
    assert_eq!(g["kind"], "sqlite");
    assert_eq!(g["priority"], "critical");
    assert_eq!(g["description"], "Auth: users & sessions");
    assert_eq!(g["availableBackups"][0]["date"], "2026-11-16");
    let steps = g["restoreInstructions"]["method1_patina"]["steps"].to_string();
    assert!(
        steps.contains("patina restore alpha --at 2026-11-16"),
        "{steps}"
    );
    let plain = g["restoreInstructions"]["method2_plain"]["steps"].to_string();
    assert!(
        plain.contains("sqlite3 alpha-restored.db < alpha-2026-11-16.sql"),
        "{plain}"
    );
    assert_eq!(
        w.get_json("/restore-guide/nope").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.get_json("/restore-guide/N%20O").await.0,
        StatusCode::BAD_REQUEST
    );

    // /metrics: the DESIGN §8 names, values from the catalog, and promtool's approval.
    let r = w.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let last = alpha.created_at;
    assert!(
        text.contains(&format!("patina_backup_last_success_timestamp_seconds{{database=\"alpha\",priority=\"critical\"}} {last}")),
        "{text}"
    );
    assert!(
        text.contains("patina_backups_total{database=\"alpha\",result=\"success\"} 1\n"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "patina_backup_last_size_bytes{{database=\"alpha\"}} {}\n",
        alpha.size_bytes
    )));
    assert!(
        text.contains("patina_inventory_objects{tier=\"daily\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("patina_databases{priority=\"critical\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("patina_next_backup_timestamp_seconds{database=\"beta\"} 1795320000"),
        "{text}"
    );
    assert!(
        text.contains("patina_backup_duration_seconds_count 2\n"),
        "{text}"
    );
    assert!(
        text.contains("patina_storage_requests_total{op=\"list\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "patina_alerts_sent_total{sink=\"ops\",event=\"failure\",result=\"failure\"} 0\n"
        ),
        "{text}"
    );
    // Replica families have series only when [[replica]] blocks exist (an empty family is not
    // exposed); the replica suite scrapes them.
    for name in patina::metrics::NAMES.iter().filter(|n| {
        !["replica_", "lease_", "maintenance_lease", "cluster_"]
            .iter()
            .any(|p| n.starts_with(p))
    }) {
        assert!(
            text.contains(&format!("# HELP patina_{name} ")),
            "HELP of {name}"
        );
        assert!(
            text.contains(&format!("# TYPE patina_{name} ")),
            "TYPE of {name}"
        );
    }
    promtool_check(&text, w.dir.path());
    let r = w
        .http
        .get(w.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));

    // /ui: one self-contained page that says the state in words.
    let r = w.get("/ui").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    for needle in [
        "Data Backups",
        "Backups Healthy",
        "Backup ran today",
        "Last 7 days",
        ">Today<",
        "Weekly",
        "Next runs",
        "Catch-up",
        "prefers-color-scheme: dark",
        "prefers-reduced-motion",
    ] {
        assert!(html.contains(needle), "{needle} missing from /ui");
    }
    assert!(!html.contains("{{"), "unfilled template field");
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    // /trigger: auth, unknown databases, 202, then 409 while running.
    let (st, e) = w.trigger(None, "{}").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    let (st, _) = w.trigger(Some("wrong"), "{}").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, e) = w
        .trigger(Some(TOKEN), r#"{"databases":["alpha","nope"]}"#)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("nope"), "{e}");
    let (st, e) = w.trigger(Some(TOKEN), "{not json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_json_error(&e);
    let (st, e) = w
        .trigger(Some(TOKEN), r#"{"databases":["alpha"],"mood":"x"}"#)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // Hold alpha's source locked so its backup waits (busy timeout) while we look.
    let lock = rusqlite::Connection::open(w.dir.path().join("alpha.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    w.clock.set(t("2026-11-16T11:00:00Z"));
    let (st, started) = w
        .trigger(
            Some(TOKEN),
            r#"{"databases":["alpha"],"reason":"pre-deploy"}"#,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["status"], "started");
    assert_eq!(started["databases"], 1);
    let job_id = started["jobId"].as_str().unwrap().to_owned();
    let (st, e) = w.trigger(Some(TOKEN), r#"{"databases":["alpha"]}"#).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert!(e["error"].as_str().unwrap().contains("alpha"), "{e}");
    let (_, s) = w.get_json("/status").await;
    assert_eq!(s["currentStatus"], "running");
    assert_eq!(s["runningDatabases"], json!(["alpha"]));
    let r = w.get("/metrics").await.text().await.unwrap();
    assert!(r.contains("patina_jobs_running 1\n"), "{r}");
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    w.reconciler.wait_idle().await;
    let (_, s) = w.get_json("/status").await;
    assert_eq!(s["currentStatus"], "idle");
    let newest = &s["recentJobs"][0];
    assert_eq!(newest["jobId"], job_id.as_str());
    assert_eq!(newest["trigger"], "manual");
    // Manual jobs name the token that started them (`api_token` is the token "default").
    assert_eq!(newest["initiatedBy"], "api:default");
    assert_eq!(newest["reason"], "pre-deploy");
    assert_eq!(newest["status"], "completed");
    let (_, bs) = w.get_json("/api/backup-status").await;
    assert_eq!(bs["summary"]["totalBackups"], 3);
    assert_eq!(bs["reliability"]["totalJobs"], 2);
    let html = w.get("/ui").await.text().await.unwrap();
    assert!(
        html.contains("Manual") && html.contains("by api:default"),
        "who triggered it"
    );

    // The download now serves that day's newest backup of alpha.
    let newest_key = w
        .catalog
        .lock()
        .unwrap()
        .list_backups(Some("alpha"))
        .unwrap()[0]
        .key
        .clone();
    assert_ne!(newest_key, alpha.key);
    let raw = w
        .http
        .get(w.url(&format!("{path}?raw=1")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.bytes().await.unwrap(),
        w.store.get(&newest_key).await.unwrap()
    );

    // Bad routes and bodies: JSON errors.
    let (st, e) = w.get_json("/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_json_error(&e);
    let r = w.http.post(w.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_json_error(&r.json().await.unwrap());
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(100 * 1024));
    let (st, e) = w.trigger(Some(TOKEN), &big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_json_error(&e);

    // The loop stalls: 3 ticks without a pass is still fine, more is not.
    w.clock.set(t("2026-11-16T11:03:00Z"));
    w.pass().await;
    w.clock.set(t("2026-11-16T11:06:00Z"));
    assert_eq!(w.get("/healthz").await.status(), StatusCode::OK);
    w.clock.set(t("2026-11-16T11:06:01Z"));
    let (st, h) = w.get_json("/healthz").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["status"], "stalled");
    w.pass().await;
    assert_eq!(w.get("/healthz").await.status(), StatusCode::OK);

    // Two days later without a backup: the page says so in words.
    w.clock.set(t("2026-11-18T12:00:00Z"));
    let (_, bs) = w.get_json("/api/backup-status").await;
    assert_eq!(bs["isHealthy"], false);
    let html = w.get("/ui").await.text().await.unwrap();
    assert!(html.contains("Backup Issue") && html.contains("No backup has run today yet"));

    w.server.shutdown().await;
}

/// `promtool check metrics` on a scrape; a missing promtool fails the test with an install hint.
fn promtool_check(text: &str, dir: &Path) {
    crate::support::require(
        "promtool",
        "apt-get install -y --no-install-recommends prometheus",
    );
    let file = dir.join("scrape.txt");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn without_a_token_writes_and_downloads_are_disabled() {
    let w = World::new("", false, t("2026-11-16T10:00:00Z")).await;
    w.pass().await;
    let (st, e) = w.trigger(None, "{}").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");
    assert!(e["error"].as_str().unwrap().contains("disabled"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("api_token"), "{e}");
    let (st, _) = w.trigger(Some("anything"), "{}").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, e) = w.get_json("/download/2026-11-16/alpha").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(e["error"].as_str().unwrap().contains("disabled"));
    // Nothing was started.
    assert_eq!(w.catalog.lock().unwrap().recent_jobs(10).unwrap().len(), 1);
    w.server.shutdown().await;
}

/// `/download` fetches and verifies as `patina restore` does: a damaged object is refused with a
/// 502 before a byte is sent (plain and raw alike), and nothing is left in the state directory.
#[tokio::test]
async fn a_damaged_object_is_refused_before_a_byte_is_sent() {
    let w = World::new(
        &format!("api_token = \"{TOKEN}\""),
        false,
        t("2026-11-16T10:00:00Z"),
    )
    .await;
    w.pass().await;
    let key = w
        .catalog
        .lock()
        .unwrap()
        .list_backups(Some("alpha"))
        .unwrap()[0]
        .key
        .clone();
    let good = w.store.get(&key).await.unwrap();
    let mut bytes = good.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    w.store
        .put(&key, bytes.into(), patina::store::PutMode::Overwrite)
        .await
        .unwrap();
    let path = "/download/2026-11-16/alpha";
    for url in [path.to_string(), format!("{path}?raw=1")] {
        let r = w
            .http
            .get(w.url(&url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{url}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"].as_str().unwrap().contains("checksum mismatch"),
            "{e}"
        );
        assert_json_error(&e);
    }
    let state_dir = w.reconciler.policy().daemon.state_dir.clone();
    let leftovers: Vec<_> = std::fs::read_dir(&state_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".download-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Repaired, it is served again.
    w.store
        .put(&key, good.clone(), patina::store::PutMode::Overwrite)
        .await
        .unwrap();
    let r = w
        .http
        .get(w.url(&format!("{path}?raw=1")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), good);
    w.server.shutdown().await;
}

#[tokio::test]
async fn readyz_says_why_when_the_listing_fails() {
    let w = World::new("", false, t("2026-11-16T10:00:00Z")).await;
    w.pass().await;
    assert_eq!(w.get("/readyz").await.status(), StatusCode::OK);
    // Storage becomes unreachable: nothing listens on the endpoint.
    let mut policy = (*w.reconciler.policy()).clone();
    policy.storage.location = patina::policy::StorageLocation::S3 {
        bucket: "gone".into(),
    };
    policy.storage.endpoint = Some("http://127.0.0.1:9".into());
    policy.storage.access_key_id = Some(patina::policy::Secret::new("k"));
    policy.storage.secret_access_key = Some(patina::policy::Secret::new("s"));
    let store = Store::open(&policy.storage).unwrap();
    w.reconciler.set_policy(Arc::new(policy), store);
    assert!(w.reconciler.run_once().await.is_err());
    let (st, r) = w.get_json("/readyz").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r["ready"], false);
    assert!(
        r["reason"].as_str().unwrap().contains("list storage"),
        "{r}"
    );
    w.server.shutdown().await;
}

#[tokio::test]
async fn metrics_after_a_restart_still_carry_the_last_success() {
    let w = World::new("", false, t("2026-11-16T10:00:00Z")).await;
    w.pass().await;
    let before = w.get("/metrics").await.text().await.unwrap();
    let line = |text: &str, prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {text}"))
            .to_owned()
    };
    let last = "patina_backup_last_success_timestamp_seconds{database=\"alpha\"";
    assert!(!line(&before, last).ends_with(" 0"), "{before}");
    w.server.shutdown().await;

    // A new process: a new reconciler over the same catalog, no pass yet.
    let policy = w.reconciler.policy();
    let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
    let clock = ManualClock::new(t("2026-11-16T12:00:00Z"));
    let reconciler = Arc::new(Reconciler::new(
        Arc::clone(&policy),
        Store::open(&policy.storage).unwrap(),
        Arc::clone(&catalog),
        clock.clock(),
        Arc::new(Quiet),
    ));
    let server = Server::start(&reconciler, &catalog, &clock).await;
    let after = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(line(&after, last), line(&before, last));
    for same in [
        "patina_backups_total{database=\"beta\",result=\"success\"}",
        "patina_inventory_objects{tier=\"daily\"}",
        "patina_inventory_bytes{tier=\"daily\"}",
        "patina_backup_last_size_bytes{database=\"beta\"}",
    ] {
        assert_eq!(line(&after, same), line(&before, same));
    }
    assert_eq!(
        line(&after, "patina_reconcile_last_success_timestamp_seconds"),
        "patina_reconcile_last_success_timestamp_seconds 0.0"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_taken_port_is_named_in_the_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = patina::http::bind(addr).await.unwrap_err().to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains("daemon.listen"),
        "{err}"
    );
}

/// See: issue 14 — the guide's step 1 was `patina list alpha`, which exits 2. Every `patina …`
/// command the sqlite restore guide gives is run, as written, through the real binary against
/// the real catalog and storage (with `--config` added, as an operator's shell would have it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restore_guides_commands_run_as_written() {
    let w = World::new("", false, t("2026-11-16T10:00:00Z")).await;
    w.pass().await;
    let (st, g) = w.get_json("/restore-guide/alpha").await;
    assert_eq!(st, StatusCode::OK);
    let steps = g["restoreInstructions"]["method1_patina"]["steps"]
        .as_array()
        .unwrap();
    let commands: Vec<&str> = steps
        .iter()
        .filter_map(|s| s.as_str()?.split_once(": patina ").map(|(_, c)| c))
        .collect();
    assert!(commands.len() >= 2, "{steps:?}");
    assert_eq!(commands[0], "list --database alpha");
    for command in commands {
        let dir = w.dir.path().to_path_buf();
        let args: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_patina"))
                .current_dir(dir)
                .args(args)
                .args(["--config", "patina.toml"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "patina {command}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if command.starts_with("list") {
            assert!(String::from_utf8_lossy(&out.stdout).contains("alpha"));
        }
    }
    let restored = rusqlite::Connection::open(w.dir.path().join("alpha-restored.db")).unwrap();
    let ok: String = restored
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    w.server.shutdown().await;
}

/// The status page as a browser sees it: headless Chromium renders `/ui` and the dumped DOM
/// shows the health text and one row per day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_headless_chromium() {
    let w = World::new("", false, t("2026-11-10T03:00:10Z")).await;
    for day in 0..8 {
        // alpha grows a little every day, so its size trend has a shape.
        let c = rusqlite::Connection::open(w.dir.path().join("alpha.db")).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS notes (n TEXT); INSERT INTO notes SELECT hex(randomblob({}));",
            200 * (day + 1)
        ))
        .unwrap();
        drop(c);
        w.clock
            .set(t("2026-11-10T03:00:10Z") + chrono::Duration::days(day));
        w.pass().await;
    }
    // A drill of alpha's newest restore point failed; beta was never drilled.
    {
        let c = w.catalog.lock().unwrap();
        let newest = c.list_backups(Some("alpha")).unwrap()[0].key.clone();
        c.record_verification(&patina::catalog::VerificationRecord {
            database: "alpha",
            key: &newest,
            location: Some(&newest),
            taken_at: None,
            origin: "drill",
            at: t("2026-11-17T05:00:00Z"),
            duration_ms: Some(1200),
            newest: true,
            outcome: Err("row count of notes differs"),
        })
        .unwrap();
    }
    let url = w.url("/ui");
    // Screenshots, light and dark, for a person to look at (target/tmp/patina-ui-*.png).
    for (scheme, flags) in [
        ("light", vec![]),
        (
            "dark",
            vec![
                "--force-dark-mode",
                "--blink-settings=preferredColorScheme=0",
            ],
        ),
    ] {
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("patina-ui-{scheme}.png"));
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,2200",
        ]
        .map(str::to_string)
        .to_vec();
        args.extend(flags.iter().map(|f| f.to_string()));
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--screenshot={}", shot.display()));
        args.push(url.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("chromium")
                .args(args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{scheme} screenshot"
        );
    }
    let profile = tempfile::tempdir().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &profile_arg,
                "--dump-dom",
                &url,
            ])
            .output()
            .expect("chromium is required: apt-get install -y chromium (or run .ci/run)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("Data Backups"), "{dom}");
    assert!(
        dom.contains("Backups Healthy"),
        "the health banner says so in words: {dom}"
    );
    assert_eq!(
        dom.matches(r#"<li class="day">"#).count(),
        7,
        "the last 7 days: {dom}"
    );
    assert!(
        dom.contains("alpha") && dom.contains("beta"),
        "next runs per database"
    );
    // Restore points: per database its count and oldest, a size trend drawn inline, the drill.
    assert!(dom.contains("Restore points"), "{dom}");
    assert_eq!(
        dom.matches(r#"<svg class="trend""#).count(),
        2,
        "one size trend per database: {dom}"
    );
    assert!(
        dom.contains("Size of the last 8 backups"),
        "alpha's 8 dumps in its trend: {dom}"
    );
    assert!(
        dom.contains("8<span class=\"by\"> · oldest Nov 10, 03:00 UTC</span>"),
        "{dom}"
    );
    assert!(dom.contains("✗ failed"), "alpha's failed drill: {dom}");
    assert!(dom.contains("never"), "beta was never drilled: {dom}");
    assert!(
        dom.contains("Auth: users &amp; sessions"),
        "the description: {dom}"
    );
    assert!(!dom.contains("<script"), "no scripts");
    w.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// HTTPS (DESIGN §17): certificates made here with rcgen, clients that trust only their root.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ecdsa_and_rsa_certificate_chains() {
    let w = World::new(
        &format!("api_token = \"{TOKEN}\""),
        false,
        t("2026-11-16T10:00:00Z"),
    )
    .await;
    w.pass().await;
    for key in [Key::Ecdsa, Key::Rsa] {
        let pki = Pki::new(&format!("{key:?}"), key);
        // The client trusts only the root: the server must send the intermediate too.
        let files = pki.write(w.dir.path(), &format!("{key:?}"));
        let tls = Tls::load(&files).unwrap();
        let server = Server::start_tls(&w.reconciler, &w.catalog, &w.clock, tls).await;
        let client = pki.client();
        let r = client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e:?}"));
        assert_eq!(r.status(), StatusCode::OK, "{key:?}");
        let r = client
            .get(format!("{}/download/2026-11-16/alpha", server.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{key:?}");
        assert!(r.bytes().await.unwrap().starts_with(b"-- "), "a SQL dump");
        // The same address over plain HTTP gets no answer, and nothing breaks.
        let plain = server.base.replace("https://", "http://");
        assert!(
            reqwest::Client::new()
                .get(format!("{plain}/healthz"))
                .send()
                .await
                .is_err()
        );
        // A client trusting another root refuses the certificate.
        let stranger = Pki::new("stranger", Key::Ecdsa).client();
        assert!(
            stranger
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_err()
        );
        assert_eq!(
            client
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        server.shutdown().await;
    }
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_reload_without_dropping_the_listener() {
    let w = World::new("", false, t("2026-11-16T10:00:00Z")).await;
    let old = Pki::new("old", Key::Ecdsa);
    let new = Pki::new("new", Key::Rsa);
    let files = old.write(w.dir.path(), "server");
    let tls = Tls::load(&files).unwrap();
    let before = tls.fingerprint();
    let server = Server::start_tls(&w.reconciler, &w.catalog, &w.clock, tls.clone()).await;
    let url = format!("{}/healthz", server.base);
    let kept = old.client();
    assert_eq!(
        kept.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(new.client().get(&url).send().await.is_err());

    // Renewal: new files in place, then the reload the daemon does on SIGHUP.
    new.install(&files);
    assert!(tls.reload(&files).unwrap(), "the certificate changed");
    assert_ne!(tls.fingerprint(), before);
    assert_eq!(
        new.client().get(&url).send().await.unwrap().status(),
        StatusCode::OK,
        "new handshakes get the renewed certificate on the same listener"
    );
    assert!(old.client().get(&url).send().await.is_err());
    // The connection opened before the renewal was not dropped.
    assert_eq!(
        kept.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    // Reloading the same files again changes nothing.
    assert!(!tls.reload(&files).unwrap());

    // Bad files at a reload: an error naming the file and what to do; the current certificate
    // stays.
    let renewed = tls.fingerprint();
    let still_new = || async { new.client().get(&url).send().await.unwrap().status() };
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let e = tls.reload(&files).unwrap_err();
    assert!(matches!(e, TlsError::Cert { .. }), "{e}");
    assert!(
        e.to_string().contains("server.crt") && e.to_string().contains("PEM"),
        "{e}"
    );
    assert_eq!(still_new().await, StatusCode::OK);
    new.install(&files);
    std::fs::remove_file(&files.key).unwrap();
    let e = tls.reload(&files).unwrap_err();
    assert!(matches!(e, TlsError::Key { .. }), "{e}");
    assert!(e.to_string().contains("server.key"), "{e}");
    assert_eq!(still_new().await, StatusCode::OK);
    // A key that belongs to another certificate.
    std::fs::write(&files.key, &old.key_pem).unwrap();
    let e = tls.reload(&files).unwrap_err();
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not fit"), "{e}");
    std::fs::write(&files.cert, "").unwrap();
    assert!(matches!(
        tls.reload(&files).unwrap_err(),
        TlsError::Cert { .. }
    ));
    assert_eq!(still_new().await, StatusCode::OK);
    assert_eq!(tls.fingerprint(), renewed);
    server.shutdown().await;
    w.server.shutdown().await;
}

/// The daemon itself: HTTPS from `tls_cert`/`tls_key`, a renewed certificate picked up on
/// SIGHUP without a restart, a broken one refused with `config_invalid` while the old one stays,
/// and unusable files at start a clear error with exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_https_and_renews_its_certificate_on_sighup() {
    use crate::support::daemon::Daemon;
    use crate::support::receiver::Receiver;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(DEMO_DB, dir.path().join("alpha.db")).unwrap();
    let rx = Receiver::start().await;
    let text = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"60s\"\ntls_cert = \"tls/server.crt\"\n\
         tls_key = \"tls/server.key\"\n\n\
         [storage]\nurl = \"file://backups\"\n\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
         [[database]]\nname = \"alpha\"\nkind = \"sqlite\"\npath = \"alpha.db\"\npriority = \"critical\"\n\n\
         [[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\non = [\"config_invalid\"]\n",
        rx.url("/hook")
    );
    std::fs::write(dir.path().join("patina.toml"), &text).unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();

    // Missing files at start: exit 2, naming the file.
    let mut d = Daemon::start(dir.path(), "info", &[]);
    assert_eq!(d.wait_exit(std::time::Duration::from_secs(20)), Some(2));
    let log = d.log();
    assert!(
        log.contains("tls/server.crt") && log.contains("daemon.tls_cert"),
        "{log}"
    );

    let old = Pki::new("old", Key::Ecdsa);
    let new = Pki::new("new", Key::Ecdsa);
    let files = old.write(&dir.path().join("tls"), "server");
    let mut d = Daemon::start(dir.path(), "info", &[]);
    let url = format!("https://{}/healthz", d.addr());
    let ok = |pki: &Pki| {
        let client = pki.client();
        let url = url.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    };
    assert!(ok(&old).await, "{}", d.log());
    assert!(!ok(&new).await);

    new.install(&files);
    d.signal("-HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ok(&new).await {
        assert!(
            std::time::Instant::now() < deadline,
            "not renewed:\n{}",
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!ok(&old).await);
    assert!(d.log().contains("TLS certificate reloaded"), "{}", d.log());

    // A broken certificate at the next reload: refused, alerted, the renewed one stays.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    d.signal("-HUP");
    let got = rx
        .wait_for("/hook", 1, std::time::Duration::from_secs(30))
        .await;
    let body = got[0].json();
    assert_eq!(body["type"], "config_invalid", "{body}");
    assert!(body.to_string().contains("server.crt"), "{body}");
    assert!(
        ok(&new).await,
        "the renewed certificate was dropped:\n{}",
        d.log()
    );
    assert!(d.log().contains("reload aborted"), "{}", d.log());
    d.signal("-TERM");
    assert_eq!(d.wait_exit(std::time::Duration::from_secs(20)), Some(0));
}
