//! Cloudflare D1 sources against the stand-in D1 REST API (`support::d1`), backed by real SQLite
//! files: the client on its own (every failure mode, with fast timings), then the `patina`
//! binary end to end (backup in both modes → restore → same content as the source, verify).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use patina::policy::{Cloudflare, D1Mode, Secret};
use patina::source::d1::{Client, D1Error, Options, Snapshot, SnapshotRequest};
use rusqlite::Connection;

use crate::integration::cli::{assert_code, assert_same_content, integrity, text, walk};
use crate::support::d1::{D1Server, Fault};

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");
pub(crate) const ID_A: &str = "45eae4c7-8ae7-4078-9218-8e1677a4360f";
const ID_B: &str = "afd1ce4c-618a-430a-bf0f-0a57647a388d";
const ID_UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// Timings short enough for tests; every loop is still bounded.
pub(crate) fn fast() -> Options {
    Options {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(25),
        // The local D1 behind the stand-in takes a few seconds to generate an export.
        export_limit: Duration::from_secs(60),
        retry_budget: Duration::from_secs(5),
        max_retries: 4,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        page_size: 7,
    }
}

fn cloudflare(server: &D1Server, token: &str) -> Cloudflare {
    Cloudflare {
        account_id: server.account.clone(),
        api_token: Secret::new(token),
        api_url: server.api_url.clone(),
    }
}

/// A copy of the demo database in `dir`.
fn demo_copy(dir: &Path) -> PathBuf {
    let p = dir.join("d1-source.db");
    std::fs::copy(DEMO_DB, &p).unwrap();
    p
}

/// A database full of values that JSON and naive dumps get wrong.
fn awkward_db(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, anything);
         CREATE TABLE shadowed (rowid TEXT, oid TEXT, _rowid_ TEXT, n INTEGER);
         CREATE TABLE pairs (a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
         CREATE TABLE counters (id INTEGER PRIMARY KEY AUTOINCREMENT, x INTEGER,
                                twice INTEGER GENERATED ALWAYS AS (x * 2) VIRTUAL);
         CREATE TABLE \"odd \"\"name\"\"\" (\"col;one\" TEXT);
         CREATE INDEX vals_by_t ON vals(t);
         CREATE VIEW big AS SELECT id FROM vals WHERE i > 0;
         CREATE TRIGGER counters_guard BEFORE INSERT ON counters BEGIN SELECT 1; END;",
    )
    .unwrap();
    let reals = [
        0.1,
        -0.0,
        1e308,
        -1e-308,
        5e-324,
        62791.5517683045,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN_POSITIVE,
        1.0 / 3.0,
        9007199254740993.0,
    ];
    let ints = [i64::MIN, i64::MAX, 0, -1, 9_007_199_254_740_993];
    let texts: [&str; 7] = [
        "",
        "it's \"quoted\"",
        "line\nbreak\r\nand\ttab",
        "unicode: é 中文 🦀",
        "CREATE TABLE nope (x);",
        "COMMIT;",
        "'); DROP TABLE vals; --",
    ];
    for n in 0..40i64 {
        c.execute(
            "INSERT INTO vals (id, i, r, t, b, anything) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                // Sparse and negative rowids, beyond 2^53.
                if n == 0 {
                    i64::MIN + 1
                } else {
                    n * 1_000_000_000_007 - 3
                },
                ints[n as usize % ints.len()],
                reals[n as usize % reals.len()],
                texts[n as usize % texts.len()],
                vec![(n % 256) as u8, 0, 255, b'\''],
                match n % 4 {
                    0 => rusqlite::types::Value::Null,
                    1 => rusqlite::types::Value::Integer(n),
                    2 => rusqlite::types::Value::Real(n as f64 + 0.5),
                    _ => rusqlite::types::Value::Blob(vec![]),
                },
            ],
        )
        .unwrap();
    }
    for n in 0..10i64 {
        c.execute(
            "INSERT INTO shadowed VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![format!("r{n}"), "o", "x", n],
        )
        .unwrap();
        c.execute(
            "INSERT INTO pairs VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("k{}", n % 3), n, vec![n as u8; 3]],
        )
        .unwrap();
    }
    for x in 0..9 {
        c.execute("INSERT INTO counters (x) VALUES (?1)", [x])
            .unwrap();
    }
    c.execute("DELETE FROM counters WHERE x > 5", []).unwrap();
    c.execute("INSERT INTO \"odd \"\"name\"\"\" VALUES ('v')", [])
        .unwrap();
    // A NULL in a column that keyset paging must not trip over, and an empty table.
    c.execute_batch("CREATE TABLE empty (x); INSERT INTO vals (id) VALUES (NULL);")
        .unwrap();
}

/// Every REAL of `vals` as exact bits, by id.
fn real_bits(path: &Path) -> Vec<(i64, Option<u64>)> {
    let c = Connection::open(path).unwrap();
    let mut s = c.prepare("SELECT id, r FROM vals ORDER BY id").unwrap();
    s.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<f64>>(1)?.map(f64::to_bits),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

pub(crate) async fn snapshot(
    server: &D1Server,
    token: &str,
    id: &str,
    mode: D1Mode,
    options: Options,
    scratch: &Path,
) -> Result<Snapshot, D1Error> {
    let client = Client::new(&cloudflare(server, token), options).unwrap();
    // Never hang: a missing answer fails the test.
    tokio::time::timeout(
        Duration::from_secs(60),
        client.snapshot(&SnapshotRequest {
            database: "groveauth",
            id,
            mode,
            scratch_dir: scratch,
            exclude_tables: &[],
        }),
    )
    .await
    .expect("the D1 client finished in time")
}

pub(crate) fn scratch_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// Run one failing scenario; check the message names the database, never shows the token,
/// and no scratch file is left.
async fn failure(
    server: &D1Server,
    token: &str,
    id: &str,
    mode: D1Mode,
    options: Options,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let err = snapshot(server, token, id, mode, options, &scratch)
        .await
        .expect_err("the snapshot must fail");
    let message = err.to_string();
    assert!(message.contains("groveauth"), "{message}");
    assert!(!message.contains(&server.token), "token leaked: {message}");
    assert!(!message.contains(token), "token leaked: {message}");
    assert!(!format!("{err:?}").contains(&server.token), "{err:?}");
    assert!(
        scratch_files(&scratch).is_empty(),
        "{:?}",
        scratch_files(&scratch)
    );
    message
}

#[tokio::test]
async fn export_polls_with_the_bookmark_and_downloads_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_copy(dir.path());
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    server.set_active_polls(ID_A, 4);
    let scratch = dir.path().join("scratch");
    let snap = snapshot(
        &server,
        &server.token,
        ID_A,
        D1Mode::Export,
        fast(),
        &scratch,
    )
    .await
    .unwrap();
    assert_eq!(snap.mode(), D1Mode::Export);
    assert_same_content(snap.path(), &source);

    let seen = server.seen();
    let exports: Vec<_> = seen
        .iter()
        .filter(|s| s.path.ends_with("/export"))
        .collect();
    // Before the export: the schema, to never ask for an export D1 would refuse.
    assert!(seen[0].body.contains("FROM sqlite_master"), "{:?}", seen[0]);
    // At least 4 active answers (more while the dump is generated), then complete.
    assert!(exports.len() >= 5, "{} export calls", exports.len());
    let bodies: Vec<serde_json::Value> = exports
        .iter()
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(bodies[0], serde_json::json!({"output_format": "polling"}));
    let bookmark = bodies[1]["current_bookmark"].as_str().unwrap().to_string();
    assert!(
        bodies[1..]
            .iter()
            .all(|b| b["current_bookmark"] == bookmark.as_str() && b["output_format"] == "polling")
    );
    assert_eq!(snap.bookmark(), Some(bookmark.as_str()));
    assert!(
        exports
            .iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {}", server.token))),
        "{exports:?}"
    );
    let downloads: Vec<_> = seen.iter().filter(|s| s.method == "GET").collect();
    assert_eq!(downloads.len(), 1);
    assert_eq!(
        downloads[0].authorization, None,
        "the token must not go to the signed URL"
    );

    // The scratch copy goes with the snapshot.
    assert!(!scratch_files(&scratch).is_empty());
    drop(snap);
    assert!(
        scratch_files(&scratch).is_empty(),
        "{:?}",
        scratch_files(&scratch)
    );
}

#[tokio::test]
async fn query_mode_copies_awkward_values_exactly_in_bounded_pages() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("awkward.db");
    awkward_db(&source);
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    let scratch = dir.path().join("scratch");
    let snap = snapshot(
        &server,
        &server.token,
        ID_A,
        D1Mode::Query,
        fast(),
        &scratch,
    )
    .await
    .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    assert_eq!(snap.bookmark(), None);
    assert_same_content(snap.path(), &source);
    assert_eq!(real_bits(snap.path()), real_bits(&source));
    assert_eq!(integrity(snap.path()), "ok");

    // Pages are bounded; no export was started (it would block the database).
    let seen = server.seen();
    assert!(seen.iter().all(|s| !s.path.ends_with("/export")));
    let pages = seen
        .iter()
        .filter(|s| s.body.contains("FROM \\\"vals\\\""))
        .count();
    assert_eq!(pages, 41usize.div_ceil(7), "{seen:#?}");
    assert!(seen.iter().all(|s| !s.body.contains("LIMIT 8")));
}

#[tokio::test]
async fn an_export_refused_for_virtual_tables_falls_back_to_query_mode() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_copy(dir.path());
    {
        let c = Connection::open(&source).unwrap();
        c.execute_batch(
            "CREATE VIRTUAL TABLE search USING fts5(title, body);
             INSERT INTO search SELECT title, body FROM posts;",
        )
        .unwrap();
    }
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    server.set_active_polls(ID_A, 1);
    let scratch = dir.path().join("scratch");
    let snap = snapshot(
        &server,
        &server.token,
        ID_A,
        D1Mode::Export,
        fast(),
        &scratch,
    )
    .await
    .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    assert!(
        server.seen().iter().all(|s| !s.path.ends_with("/export")),
        "the schema check must keep Patina from requesting an export D1 refuses"
    );
    assert_same_content(snap.path(), &source);
    let c = Connection::open(snap.path()).unwrap();
    let hits: i64 = c
        .query_row(
            "SELECT count(*) FROM search WHERE search MATCH 'the'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let expected: i64 = Connection::open(&source)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM search WHERE search MATCH 'the'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hits, expected);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_copy(dir.path());
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    server.set_fault(
        ID_A,
        Fault::RateLimited {
            times: 2,
            retry_after: 1,
        },
    );
    let scratch = dir.path().join("scratch");
    let started = Instant::now();
    // The export limit is wall time, waits for retries included.
    let patient = Options {
        export_limit: Duration::from_secs(20),
        ..fast()
    };
    let snap = snapshot(
        &server,
        &server.token,
        ID_A,
        D1Mode::Export,
        patient,
        &scratch,
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_same_content(snap.path(), &source);
    drop(snap);

    server.set_fault(ID_A, Fault::ServerError { times: 3 });
    let snap = snapshot(
        &server,
        &server.token,
        ID_A,
        D1Mode::Query,
        fast(),
        &scratch,
    )
    .await
    .unwrap();
    assert_same_content(snap.path(), &source);
    drop(snap);

    // Beyond the budget: a clear failure, not a long wait.
    server.set_fault(
        ID_A,
        Fault::RateLimited {
            times: 1000,
            retry_after: 600,
        },
    );
    let started = Instant::now();
    let limited = Options {
        export_limit: Duration::from_millis(400),
        ..fast()
    };
    let m = failure(&server, &server.token, ID_A, D1Mode::Export, limited).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(m.contains("HTTP 429") && m.contains("retry budget"), "{m}");
    server.set_fault(ID_A, Fault::ServerError { times: 1000 });
    let m = failure(&server, &server.token, ID_A, D1Mode::Query, fast()).await;
    assert!(
        m.contains("after 5 attempts") && m.contains("HTTP 502"),
        "{m}"
    );
}

#[tokio::test]
async fn credentials_and_ids_that_do_not_work_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_copy(dir.path());
    let server = D1Server::start();
    server.add_database(ID_A, &source);

    let wrong = "wrong-token-0123456789";
    let m = failure(&server, wrong, ID_A, D1Mode::Export, fast()).await;
    assert!(m.contains("HTTP 401") && m.contains("\"D1 Read\""), "{m}");

    server.set_fault(ID_A, Fault::Forbidden);
    let m = failure(&server, &server.token, ID_A, D1Mode::Query, fast()).await;
    assert!(
        m.contains("HTTP 403") && m.contains("Account → D1 → Read"),
        "{m}"
    );
    server.set_fault(ID_A, Fault::None);

    let m = failure(&server, &server.token, ID_UNKNOWN, D1Mode::Export, fast()).await;
    assert!(
        m.contains("HTTP 404") && m.contains(ID_UNKNOWN) && m.contains("wrangler d1 list"),
        "{m}"
    );
}

#[tokio::test]
async fn export_failures_are_reported_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_copy(dir.path());
    let server = D1Server::start();
    server.add_database(ID_A, &source);

    server.set_fault(ID_A, Fault::StuckActive);
    let started = Instant::now();
    let limited = Options {
        export_limit: Duration::from_millis(400),
        ..fast()
    };
    let m = failure(&server, &server.token, ID_A, D1Mode::Export, limited).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        m.contains("still active after 400ms")
            && m.contains("abandoned")
            && m.contains("mode = \"query\""),
        "{m}"
    );

    // D1 cancels an export nobody polls any more; until then the database is busy.
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.set_fault(
        ID_A,
        Fault::ExportError("internal error while dumping".into()),
    );
    let m = failure(&server, &server.token, ID_A, D1Mode::Export, fast()).await;
    assert!(
        m.contains("export failed: internal error while dumping"),
        "{m}"
    );

    server.set_fault(ID_A, Fault::SignedUrlExpired);
    let m = failure(&server, &server.token, ID_A, D1Mode::Export, fast()).await;
    assert!(m.contains("HTTP 403") && m.contains("expired"), "{m}");

    server.set_fault(ID_A, Fault::MalformedJson);
    let m = failure(&server, &server.token, ID_A, D1Mode::Export, fast()).await;
    assert!(
        m.contains("unexpected response") && m.contains("not a Cloudflare API response"),
        "{m}"
    );
    let m = failure(&server, &server.token, ID_A, D1Mode::Query, fast()).await;
    assert!(m.contains("unexpected response"), "{m}");

    server.set_fault(ID_A, Fault::MissingSignedUrl);
    let m = failure(&server, &server.token, ID_A, D1Mode::Export, fast()).await;
    assert!(m.contains("signed_url"), "{m}");

    // A request that exceeds the client's timeout is retried, then reported.
    server.set_fault(ID_A, Fault::Slow(Duration::from_millis(1500)));
    let mut options = fast();
    options.request_timeout = Duration::from_millis(200);
    options.max_retries = 1;
    let m = failure(&server, &server.token, ID_A, D1Mode::Query, options).await;
    assert!(
        m.contains("timed out") && m.contains("after 2 attempts"),
        "{m}"
    );
}

// ---- the binary, end to end ----

struct Site {
    dir: tempfile::TempDir,
    server: D1Server,
}

impl Site {
    /// Two D1 databases (export and query mode) and one SQLite database.
    fn new(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(DEMO_DB, dir.path().join("demo.db")).unwrap();
        std::fs::copy(DEMO_DB, dir.path().join("d1-a.db")).unwrap();
        awkward_db(&dir.path().join("d1-b.db"));
        let server = D1Server::start();
        server.add_database(ID_A, &dir.path().join("d1-a.db"));
        server.add_database(ID_B, &dir.path().join("d1-b.db"));
        server.set_active_polls(ID_A, 2);
        let policy = format!(
            "[storage]\nurl = \"file://backups\"\n\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
             [cloudflare]\naccount_id = \"{}\"\napi_token = \"${{CF_API_TOKEN}}\"\napi_url = \"{}\"\n\n\
             [[database]]\nname = \"groveauth\"\nkind = \"d1\"\nid = \"{ID_A}\"\npriority = \"critical\"\n\n\
             [[database]]\nname = \"scout-db\"\nkind = \"d1\"\nid = \"{ID_B}\"\nmode = \"query\"\npriority = \"critical\"\n\n\
             [[database]]\nname = \"demo-app\"\nkind = \"sqlite\"\npath = \"demo.db\"\npriority = \"critical\"\n{extra}",
            server.account, server.api_url
        );
        std::fs::write(dir.path().join("patina.toml"), policy).unwrap();
        Site { dir, server }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn patina(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_patina"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PATINA_CONFIG")
            .env("PATINA_LOG", "debug")
            .env("CF_API_TOKEN", &self.server.token)
            .stdin(Stdio::null())
            .output()
            .expect("run patina");
        assert!(
            !text(&out).contains(&self.server.token),
            "the token leaked: {}",
            text(&out)
        );
        out
    }

    fn manifests(&self, database: &str) -> Vec<serde_json::Value> {
        let mut files = Vec::new();
        walk(&self.path("backups"), &mut files);
        files
            .iter()
            .filter(|p| {
                p.to_string_lossy().ends_with(".manifest.json")
                    && p.to_string_lossy().contains(&format!("/{database}/"))
            })
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

#[test]
fn d1_databases_back_up_restore_and_verify_in_both_modes() {
    let s = Site::new("");
    let o = s.patina(&["backup"]);
    assert_code(&o, 0);

    for (name, source) in [
        ("groveauth", "d1-a.db"),
        ("scout-db", "d1-b.db"),
        ("demo-app", "demo.db"),
    ] {
        let target = format!("{name}-restored.db");
        assert_code(&s.patina(&["restore", name, "--to", &target]), 0);
        assert_same_content(&s.path(&target), &s.path(source));
        assert_eq!(integrity(&s.path(&target)), "ok");
    }
    assert_eq!(
        real_bits(&s.path("scout-db-restored.db")),
        real_bits(&s.path("d1-b.db"))
    );

    let export = &s.manifests("groveauth")[0];
    assert_eq!(export["source"]["kind"], "d1");
    assert_eq!(export["source"]["id"], ID_A);
    assert!(
        export["source"]["bookmark"]
            .as_str()
            .unwrap()
            .contains("bookmark")
    );
    assert_eq!(export["tables"]["posts"], 200);
    // The same dump facts as a SQLite source of the same data.
    let sqlite = &s.manifests("demo-app")[0];
    assert_eq!(export["schema_hash"], sqlite["schema_hash"]);
    assert_eq!(export["tables"], sqlite["tables"]);
    let query = &s.manifests("scout-db")[0];
    assert_eq!(query["source"]["kind"], "d1");
    assert_eq!(query["source"].get("bookmark"), None);
    assert_eq!(query["tables"]["vals"], 41);

    let o = s.patina(&["verify"]);
    assert_code(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("groveauth") && out.contains("scout-db"),
        "{out}"
    );

    // Scratch copies are gone.
    let mut scratch = Vec::new();
    walk(&s.path(".patina/scratch"), &mut scratch);
    assert!(scratch.is_empty(), "{scratch:?}");
}

#[test]
fn a_failing_d1_database_does_not_stop_the_others() {
    let s = Site::new(&format!(
        "\n[[database]]\nname = \"gone\"\nkind = \"d1\"\nid = \"{ID_UNKNOWN}\"\npriority = \"critical\"\n"
    ));
    s.server.set_fault(ID_B, Fault::Forbidden);
    let o = s.patina(&["backup"]);
    assert_code(&o, 1);
    let out = text(&o);
    assert!(out.contains("gone") && out.contains(ID_UNKNOWN), "{out}");
    assert!(out.contains("scout-db") && out.contains("D1 Read"), "{out}");
    assert_eq!(s.manifests("demo-app").len(), 1, "{out}");
    assert_eq!(s.manifests("groveauth").len(), 1, "{out}");
    assert!(s.manifests("scout-db").is_empty());
    assert!(s.manifests("gone").is_empty());
    let mut scratch = Vec::new();
    walk(&s.path(".patina/scratch"), &mut scratch);
    assert!(scratch.is_empty(), "{scratch:?}");
}

#[test]
fn check_reports_missing_credentials_and_never_prints_the_token() {
    let s = Site::new("");
    let o = s.patina(&["check"]);
    assert_code(&o, 0);
    assert!(text(&o).contains("groveauth"), "{}", text(&o));

    // No [cloudflare] section: every d1 database is reported, with the fix.
    let policy = std::fs::read_to_string(s.path("patina.toml")).unwrap();
    let start = policy.find("[cloudflare]").unwrap();
    let end = policy.find("[[database]]").unwrap();
    std::fs::write(
        s.path("patina.toml"),
        format!("{}{}", &policy[..start], &policy[end..]),
    )
    .unwrap();
    let o = s.patina(&["check"]);
    assert_code(&o, 2);
    let out = text(&o);
    assert!(
        out.contains("d1 database \"groveauth\" needs Cloudflare credentials")
            && out.contains("d1 database \"scout-db\" needs Cloudflare credentials")
            && out.contains("CF_API_TOKEN"),
        "{out}"
    );

    // The variable missing from the environment is named.
    std::fs::write(s.path("patina.toml"), &policy).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_patina"))
        .arg("check")
        .current_dir(s.dir.path())
        .env_remove("PATINA_CONFIG")
        .env_remove("CF_API_TOKEN")
        .output()
        .unwrap();
    assert_code(&o, 2);
    assert!(text(&o).contains("CF_API_TOKEN"), "{}", text(&o));
}

#[tokio::test]
async fn query_mode_never_reads_excluded_tables() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_copy(dir.path());
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    let client = Client::new(&cloudflare(&server, &server.token), fast()).unwrap();
    let exclude = vec!["sessions".to_string()];
    let snap = client
        .snapshot(&SnapshotRequest {
            database: "groveauth",
            id: ID_A,
            mode: D1Mode::Query,
            scratch_dir: &dir.path().join("scratch"),
            exclude_tables: &exclude,
        })
        .await
        .unwrap();
    let seen = server.seen();
    assert!(
        seen.iter()
            .filter(|s| s.body.contains("sessions"))
            .all(|s| s.body.contains("sqlite_master") || s.body.contains("table_list")),
        "{seen:#?}"
    );
    let tables: i64 = Connection::open(snap.path())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sessions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}
