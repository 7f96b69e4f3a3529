//! D1 fidelity (DESIGN §12) against Cloudflare's own exporter: the stand-in serves the bytes
//! `wrangler d1 export --local` writes (miniflare's `dumpSql`, the code production D1 runs), so
//! every hazard of that format reaches the client as it would in production — integers beyond
//! 2^53 through a JavaScript double, `3.0` → `3`, `-0.0` → `0`, backslash-n turned into line
//! breaks, `Infinity`, raw NUL bytes, triggers before views. Each test compares the copy with
//! the source value by value, type included (REALs by their bits).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use patina::policy::D1Mode;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::integration::cli::{assert_code, text};
use crate::integration::d1::{ID_A, fast, scratch_files, snapshot};
use crate::support::d1::{D1Server, Fault};
use crate::support::wrangler::LocalD1;
use patina::policy::{Cloudflare, Secret};
use patina::source::d1::{Client, Options};

/// One value with its storage class; REALs by their bits, so `-0.0` is not `0.0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exact {
    Null,
    Integer(i64),
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// Every row of every user table (virtual tables included, their shadow tables and internal
/// tables left out), rows sorted: tables without an INTEGER PRIMARY KEY do not keep rowids.
pub(crate) fn exact_content(path: &Path) -> BTreeMap<String, Vec<Vec<Exact>>> {
    let c = Connection::open(path).unwrap();
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type IN ('table', 'virtual')
               AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM \"{}\"", table.replace('"', "\"\"")))
            .unwrap();
        let n = stmt.column_count();
        let mut rows: Vec<Vec<Exact>> = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Exact::Null,
                            ValueRef::Integer(v) => Exact::Integer(v),
                            ValueRef::Real(v) => Exact::Real(v.to_bits()),
                            ValueRef::Text(v) => Exact::Text(v.to_vec()),
                            ValueRef::Blob(v) => Exact::Blob(v.to_vec()),
                        })
                    })
                    .collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// A snapshot of the stand-in's database `ID_A` with the tests' fast timings.
async fn snap_of(
    server: &D1Server,
    mode: D1Mode,
    scratch: &Path,
) -> Result<patina::source::d1::Snapshot, patina::source::d1::D1Error> {
    snapshot(server, &server.token, ID_A, mode, fast(), scratch).await
}

/// Fails with the first differing row, readably.
pub(crate) fn assert_exact(copy: &Path, source: &Path) {
    let (a, b) = (exact_content(copy), exact_content(source));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "tables of {} and {}",
        copy.display(),
        source.display()
    );
    for (table, rows) in &b {
        let got = &a[table];
        assert_eq!(got.len(), rows.len(), "row count of {table}");
        for (x, y) in got.iter().zip(rows) {
            assert_eq!(x, y, "a row of {table} differs (copy, source)");
        }
    }
}

const TWO_53: i64 = 1 << 53;

/// Values D1's exporter writes wrongly, in tables it can still load: repairable rows in a
/// table keyed by INTEGER PRIMARY KEY, hazards in a table without one and in a WITHOUT ROWID
/// table (re-read whole), a key beyond 2^53, a wide table and many small clean tables.
/// Returns the number of values that must be repaired row by row.
fn hazards_db(path: &Path) -> u64 {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, r REAL, u, t TEXT, b BLOB);
         CREATE TABLE nokey (a, b TEXT);
         CREATE TABLE pairs (k TEXT, n INTEGER, v, PRIMARY KEY (k, n)) WITHOUT ROWID;
         CREATE TABLE bigkey (id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE clean (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, note);
         CREATE INDEX clean_by_name ON clean(name);",
    )
    .unwrap();
    use rusqlite::types::Value as V;
    let t = |s: &str| V::Text(s.into());
    let rows: Vec<[V; 6]> = vec![
        // 4 hazards: i64::MAX, -0.0 (untyped), 3.0 (untyped), C:\new with a line break.
        [
            V::Integer(1),
            V::Integer(i64::MAX),
            V::Real(0.25),
            V::Real(3.0),
            t("C:\\new\nx"),
            V::Blob(vec![0]),
        ],
        // 3 hazards: -(2^53+1), 2^60 as REAL (untyped), a literal backslash-n.
        [
            V::Integer(2),
            V::Integer(-(TWO_53 + 1)),
            V::Real(0.5),
            V::Real((1u64 << 60) as f64),
            t("plain\\nliteral"),
            V::Blob(vec![]),
        ],
        // No hazard: real CR/LF, max safe integer, subnormal-ish REAL, text in untyped.
        [
            V::Integer(3),
            V::Integer(TWO_53 - 1),
            V::Real(-1e-300),
            t("text"),
            t("crlf\r\n"),
            V::Blob(vec![1, 2, 3]),
        ],
        // 1 hazard: -0.0 in an untyped column.
        [
            V::Integer(4),
            V::Integer(i64::MIN + 1),
            V::Real(0.1),
            V::Real(-0.0),
            t("unicode é 中文 🦀 'quoted'"),
            V::Null,
        ],
        // 2 hazards: i64::MIN, a literal backslash-r.
        [
            V::Integer(5),
            V::Integer(i64::MIN),
            V::Real(62791.5517683045),
            V::Real(2.5),
            t("back\\r"),
            V::Blob(b"\x00\xff'".to_vec()),
        ],
    ];
    for r in &rows {
        c.execute(
            "INSERT INTO vals VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params_from_iter(r),
        )
        .unwrap();
    }
    c.execute_batch(&format!(
        "INSERT INTO nokey VALUES ({big}, 'a'), (1.0, 'b'), (2, 'C:\\new' || char(10));
         INSERT INTO pairs VALUES ('a', {big}, 1), ('a', 1, -0.0), ('b', 2, 'x');
         INSERT INTO bigkey VALUES ({big}, 'beyond 2^53'), (1, 'one');",
        big = TWO_53 + 1
    ))
    .unwrap();
    for n in 0..500 {
        c.execute(
            "INSERT INTO clean VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![n, format!("name {n}"), n as f64 + 0.5, n % 7],
        )
        .unwrap();
    }
    // A wide table (60 columns, long text) with one hazard, and 25 small clean tables.
    let cols: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    c.execute_batch(&format!(
        "CREATE TABLE wide (id INTEGER PRIMARY KEY, {});",
        cols.join(", ")
    ))
    .unwrap();
    for id in 0..20i64 {
        let values: Vec<String> = (0..60)
            .map(|i| {
                if id == 7 && i == 17 {
                    i64::MAX.to_string()
                } else {
                    format!("'{}'", format!("{id}:{i} ").repeat(40))
                }
            })
            .collect();
        c.execute_batch(&format!(
            "INSERT INTO wide VALUES ({id}, {});",
            values.join(", ")
        ))
        .unwrap();
    }
    // Doubles of every magnitude, printed by the exporter in JavaScript's shortest form.
    c.execute_batch("CREATE TABLE reals (id INTEGER PRIMARY KEY, r REAL);")
        .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for id in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = f64::from_bits(x);
        if r.is_finite() {
            c.execute(
                "INSERT INTO reals VALUES (?1, ?2)",
                rusqlite::params![id, r],
            )
            .unwrap();
        }
    }
    for t in 0..25 {
        c.execute_batch(&format!(
            "CREATE TABLE small_{t:02} (id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO small_{t:02} (v) VALUES ('x'), ('y');"
        ))
        .unwrap();
    }
    4 + 3 + 1 + 2 + 1
}

/// Databases whose export D1 writes but cannot load again, each for another reason.
fn unloadable_db(path: &Path, reason: &str) {
    let c = Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v, w TEXT);")
        .unwrap();
    match reason {
        // Written as `Infinity` (older exports) — not SQL.
        "infinity" => c
            .execute_batch("INSERT INTO t VALUES (1, 9e999, 'a'), (2, -9e999, 'b'), (3, 1.5, 'c');")
            .unwrap(),
        // Written raw, inside a string literal.
        "nul" => c
            .execute_batch("INSERT INTO t VALUES (1, 1, 'a' || char(0) || 'b'), (2, 2, 'ok');")
            .unwrap(),
        // The INSTEAD OF trigger comes before its view.
        "view-trigger" => c
            .execute_batch(
                "INSERT INTO t VALUES (1, 1, 'a');
                 CREATE VIEW tv AS SELECT id, v FROM t;
                 CREATE TRIGGER tv_insert INSTEAD OF INSERT ON tv
                 BEGIN INSERT INTO t (id, v) VALUES (NEW.id, NEW.v); END;",
            )
            .unwrap(),
        other => panic!("no such reason {other}"),
    }
}

#[tokio::test]
async fn values_the_export_cannot_carry_are_repaired_from_query() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hazards.db");
    let planted = hazards_db(&source);
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    let scratch = dir.path().join("scratch");
    let snap = snap_of(&server, D1Mode::Export, &scratch).await.unwrap();
    assert_eq!(snap.mode(), D1Mode::Export, "{:?}", snap.fallback());
    assert!(snap.bookmark().is_some());
    let f = snap.fidelity();
    assert!(f.checked);
    assert_eq!(f.fallback, None);
    assert_eq!(f.repaired_values, planted, "{f:?}");
    assert_eq!(f.tables_from_query, ["bigkey", "nokey", "pairs"], "{f:?}");
    assert_exact(snap.path(), &source);
    // One export, started once and then polled.
    let started = server
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/export") && !s.body.contains("current_bookmark"))
        .count();
    assert_eq!(started, 1);
}

#[tokio::test]
async fn query_mode_is_exact_for_every_hazard() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hazards.db");
    hazards_db(&source);
    Connection::open(&source)
        .unwrap()
        .execute_batch(
            "INSERT INTO vals (id, u, t) VALUES (6, 9e999, 'nul ' || char(0)), (7, -9e999, NULL);",
        )
        .unwrap();
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    let snap = snap_of(&server, D1Mode::Query, &dir.path().join("s"))
        .await
        .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    let f = snap.fidelity();
    assert!(f.checked);
    assert_eq!(f.repaired_values, 0);
    assert_eq!(f.tables_from_query.len(), 32, "{f:?}");
    assert_exact(snap.path(), &source);
    assert!(
        server.seen().iter().all(|s| !s.path.ends_with("/export")),
        "query mode never exports"
    );
}

#[tokio::test]
async fn exports_that_do_not_load_fall_back_to_query_mode() {
    for reason in ["infinity", "nul", "view-trigger"] {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join(format!("{reason}.db"));
        unloadable_db(&source, reason);
        let server = D1Server::start();
        server.add_database(ID_A, &source);
        let snap = snap_of(&server, D1Mode::Export, &dir.path().join("s"))
            .await
            .unwrap_or_else(|e| panic!("{reason}: {e}"));
        assert_eq!(snap.mode(), D1Mode::Query, "{reason}");
        let why = snap
            .fallback()
            .unwrap_or_else(|| panic!("{reason}: no fallback"));
        assert!(why.contains("did not load"), "{reason}: {why}");
        assert_eq!(snap.fidelity().fallback.as_deref(), Some(why));
        assert_exact(snap.path(), &source);
        if reason == "view-trigger" {
            let c = Connection::open(snap.path()).unwrap();
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name IN ('tv', 'tv_insert')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 2, "the view and its trigger are copied");
        }
    }
}

#[tokio::test]
async fn a_database_with_a_virtual_table_is_never_exported() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fts.db");
    Connection::open(&source)
        .unwrap()
        .execute_batch(
            "CREATE TABLE posts (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO posts (body) VALUES ('hello world'), ('C:\\new');
             CREATE VIRTUAL TABLE search USING fts5(body);
             INSERT INTO search SELECT body FROM posts;",
        )
        .unwrap();
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    let snap = snap_of(&server, D1Mode::Export, &dir.path().join("s"))
        .await
        .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    assert!(
        snap.fallback()
            .unwrap()
            .contains("virtual table \"search\"")
    );
    assert!(
        server.seen().iter().all(|s| !s.path.ends_with("/export")),
        "an export D1 would refuse must never be requested"
    );
    assert_exact(snap.path(), &source);

    // The exporter's real refusal (a virtual table created between the check and the export)
    // still falls back.
    let plain = dir.path().join("plain.db");
    hazards_db(&plain);
    let server = D1Server::start();
    server.add_database(ID_A, &plain);
    server.set_fault(
        ID_A,
        Fault::ExportError(
            "D1 Export error: cannot export databases with Virtual Tables (fts5)".into(),
        ),
    );
    let snap = snap_of(&server, D1Mode::Export, &dir.path().join("s2"))
        .await
        .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    assert_exact(snap.path(), &plain);
}

#[tokio::test]
async fn truncated_and_broken_exports_never_become_a_wrong_copy() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hazards.db");
    hazards_db(&source);

    // Rows silently missing: caught by the row counts, the table is re-read.
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    server.set_fault(
        ID_A,
        Fault::DropsLines("INSERT INTO \"clean\" VALUES(4".into()),
    );
    let snap = snap_of(&server, D1Mode::Export, &dir.path().join("a"))
        .await
        .unwrap();
    assert_eq!(snap.mode(), D1Mode::Export);
    assert_eq!(
        snap.fidelity().tables_from_query,
        ["bigkey", "clean", "nokey", "pairs"],
        "{:?}",
        snap.fidelity()
    );
    assert_exact(snap.path(), &source);

    // Cut between statements: tables are missing — query mode for this run.
    server.set_fault(ID_A, Fault::TruncatedAtStatement(0.5));
    let snap = snap_of(&server, D1Mode::Export, &dir.path().join("a2"))
        .await
        .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    assert!(
        snap.fallback()
            .unwrap()
            .contains("the export holds the tables"),
        "{:?}",
        snap.fallback()
    );
    assert_exact(snap.path(), &source);

    // Cut inside a statement: it does not load — query mode for this run.
    server.set_fault(ID_A, Fault::TruncatedMidStatement);
    let snap = snap_of(&server, D1Mode::Export, &dir.path().join("b"))
        .await
        .unwrap();
    assert_eq!(snap.mode(), D1Mode::Query);
    assert_exact(snap.path(), &source);

    // The download breaks off: a clear error, nothing left behind, no hang.
    server.set_fault(ID_A, Fault::DownloadBreaksOff);
    let scratch = dir.path().join("c");
    let err = snap_of(&server, D1Mode::Export, &scratch)
        .await
        .expect_err("a broken download fails");
    let message = err.to_string();
    assert!(
        message.contains("groveauth") && message.contains("download"),
        "{message}"
    );
    assert!(
        scratch_files(&scratch).is_empty(),
        "{:?}",
        scratch_files(&scratch)
    );
}

#[tokio::test]
async fn a_database_busy_with_an_export_is_waited_for_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hazards.db");
    hazards_db(&source);
    let server = D1Server::start();
    server.add_database(ID_A, &source);
    server.set_fault(ID_A, Fault::Busy { times: 3 });
    let snap = snap_of(&server, D1Mode::Export, &dir.path().join("a"))
        .await
        .unwrap();
    assert_exact(snap.path(), &source);

    server.set_fault(ID_A, Fault::Busy { times: 1000 });
    let err = snap_of(&server, D1Mode::Export, &dir.path().join("b"))
        .await
        .expect_err("busy for ever");
    let message = err.to_string();
    assert!(
        message.contains("long-running export") && message.contains("attempts"),
        "{message}"
    );
}

/// `patina backup` then `patina restore` of every hazard, in both modes: the restored file
/// equals the D1 database, and each manifest says what was checked and repaired.
#[test]
fn every_hazard_round_trips_through_backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let server = D1Server::start();
    let planted = hazards_db(&dir.path().join("hazards.db"));
    let mut databases = vec![
        ("hazards", "hazards.db", "export"),
        ("hazards-q", "hazards.db", "query"),
    ];
    for reason in ["infinity", "nul", "view-trigger"] {
        unloadable_db(&dir.path().join(format!("{reason}.db")), reason);
        databases.push((reason, "", "export"));
    }
    let mut policy = format!(
        "[storage]\nurl = \"file://backups\"\n\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
         [cloudflare]\naccount_id = \"{}\"\napi_token = \"${{CF_API_TOKEN}}\"\napi_url = \"{}\"\n",
        server.account, server.api_url
    );
    for (i, (name, file, mode)) in databases.iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let file = if file.is_empty() {
            format!("{name}.db")
        } else {
            file.to_string()
        };
        server.add_database(&id, &dir.path().join(&file));
        policy.push_str(&format!(
            "\n[[database]]\nname = \"{name}\"\nkind = \"d1\"\nid = \"{id}\"\nmode = \"{mode}\"\npriority = \"critical\"\n"
        ));
    }
    std::fs::write(dir.path().join("patina.toml"), policy).unwrap();
    let patina = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_patina"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("PATINA_CONFIG")
            .env("CF_API_TOKEN", &server.token)
            .stdin(Stdio::null())
            .output()
            .expect("run patina")
    };
    let o = patina(&["backup"]);
    assert_code(&o, 0);
    let log = text(&o);
    for (name, file, _) in &databases {
        let target = format!("{name}-restored.db");
        assert_code(&patina(&["restore", name, "--to", &target]), 0);
        let file = if file.is_empty() {
            format!("{name}.db")
        } else {
            file.to_string()
        };
        assert_exact(&dir.path().join(&target), &dir.path().join(&file));
    }
    let manifest = |name: &str| -> serde_json::Value {
        let mut files = Vec::new();
        crate::integration::cli::walk(&dir.path().join("backups"), &mut files);
        let m = files
            .iter()
            .find(|p| {
                p.to_string_lossy().ends_with(".manifest.json")
                    && p.to_string_lossy().contains(&format!("/{name}/"))
            })
            .unwrap_or_else(|| panic!("no manifest for {name}"));
        serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap()
    };
    let m = manifest("hazards");
    assert_eq!(m["fidelity"]["checked"], true, "{m}");
    assert_eq!(m["fidelity"]["repaired_values"], planted, "{m}");
    assert_eq!(
        m["fidelity"]["tables_from_query"],
        serde_json::json!(["bigkey", "nokey", "pairs"])
    );
    assert!(m["source"]["bookmark"].is_string());
    let q = manifest("hazards-q");
    assert_eq!(q["fidelity"]["checked"], true);
    assert_eq!(q["fidelity"]["repaired_values"], 0);
    assert_eq!(
        q["fidelity"]["tables_from_query"].as_array().unwrap().len(),
        32
    );
    assert_eq!(
        q["schema_hash"], m["schema_hash"],
        "both modes see the same schema"
    );
    for reason in ["infinity", "nul", "view-trigger"] {
        let m = manifest(reason);
        assert_eq!(m["fidelity"]["checked"], true);
        assert!(
            m["fidelity"]["fallback"]
                .as_str()
                .unwrap()
                .contains("did not load"),
            "{m}"
        );
        assert!(log.contains("reading it in query mode instead"), "{log}");
    }
    // `verify` agrees with what was stored.
    assert_code(&patina(&["verify"]), 0);
    // Counted for the metrics (patina_d1_export_fallbacks_total, patina_d1_repaired_values_total).
    let facts = patina::catalog::Catalog::open(&dir.path().join(".patina"))
        .unwrap()
        .metric_facts()
        .unwrap();
    assert_eq!(facts.d1_fidelity["hazards"], (0, planted));
    assert_eq!(facts.d1_fidelity["hazards-q"], (0, 0));
    for reason in ["infinity", "nul", "view-trigger"] {
        assert_eq!(facts.d1_fidelity[reason], (1, 0), "{reason}");
    }
}

/// What query mode relies on, asked of D1 itself (workerd, through wrangler): a REAL read as a
/// JSON number comes back exactly — while `printf('%!.17g')` does not (one ulp off for some large
/// doubles, which is why the client does not use it) — and `atan2` tells `-0.0` from `0.0`.
#[test]
fn d1_itself_carries_reals_exactly_as_json_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hazards.db");
    hazards_db(&source);
    let d1 = LocalD1::from_sqlite(&dir.path().join("d1"), &source);
    let rows = d1
        .query("SELECT id, r, printf('%!.17g', r) AS p FROM reals ORDER BY id")
        .unwrap();
    let c = Connection::open(&source).unwrap();
    let expected: Vec<(i64, f64)> = c
        .prepare("SELECT id, r FROM reals ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    let mut printf_off = 0;
    for (row, (id, r)) in rows.iter().zip(&expected) {
        assert_eq!(row["id"].as_i64(), Some(*id));
        let back = row["r"].as_f64().unwrap();
        assert_eq!(
            back.to_bits(),
            r.to_bits(),
            "id {id}: {} is not {r:e}",
            row["r"]
        );
        let printed: f64 = row["p"].as_str().unwrap().parse().unwrap();
        printf_off += usize::from(printed.to_bits() != r.to_bits());
    }
    assert!(
        printf_off > 0,
        "D1's printf became exact: query mode could use it again"
    );
    let negative_zero = d1
        .query("SELECT id FROM vals WHERE typeof(u) = 'real' AND u = 0 AND atan2(u, -1) < 0")
        .unwrap();
    assert_eq!(negative_zero, [serde_json::json!({"id": 4})]);
}

// ---- restore into D1 ----

/// Users, their 3000 sessions (ON DELETE CASCADE) and a comment thread `depth` deep (a
/// self-reference with ON DELETE CASCADE, deeper than the ~10 levels D1 cascades).
fn auth_tables(c: &Connection, seed: i64, depth: i64) {
    c.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY,
                                user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                                data TEXT);
         CREATE TABLE comments (id INTEGER PRIMARY KEY,
                                parent_id INTEGER REFERENCES comments(id) ON DELETE CASCADE,
                                body TEXT);",
    )
    .unwrap();
    for u in 1..=50 {
        c.execute(
            "INSERT INTO users VALUES (?1, ?2)",
            rusqlite::params![u, format!("user{u}.{seed}@example.com")],
        )
        .unwrap();
    }
    for n in 1..=3000 {
        c.execute(
            "INSERT INTO sessions VALUES (?1, ?2, ?3)",
            rusqlite::params![
                n,
                1 + (n * seed) % 50,
                format!("session {n} of seed {seed}")
            ],
        )
        .unwrap();
    }
    for n in 1..=depth {
        c.execute(
            "INSERT INTO comments VALUES (?1, ?2, ?3)",
            rusqlite::params![n, (n > 1).then_some(n - 1), format!("reply {n} ({seed})")],
        )
        .unwrap();
    }
}

#[test]
fn restore_into_d1_replaces_the_tables_exactly_and_keeps_a_safety_backup() {
    const ID_SRC: &str = "11111111-1111-4111-8111-111111111111";
    const ID_FRESH: &str = "22222222-2222-4222-8222-222222222222";
    const ID_FULL: &str = "33333333-3333-4333-8333-333333333333";
    let dir = tempfile::tempdir().unwrap();
    let path = |rel: &str| dir.path().join(rel);
    hazards_db(&path("source.db"));
    auth_tables(&Connection::open(path("source.db")).unwrap(), 1, 30);
    Connection::open(path("fresh.db"))
        .unwrap()
        .execute_batch("PRAGMA user_version = 1;")
        .unwrap();
    {
        let c = Connection::open(path("full.db")).unwrap();
        auth_tables(&c, 7, 40);
        c.execute_batch("CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, r REAL, u, t TEXT, b BLOB); INSERT INTO vals (id, t) VALUES (99, 'old');")
            .unwrap();
    }
    let server = D1Server::start();
    server.add_database(ID_SRC, &path("source.db"));
    server.add_database(ID_FRESH, &path("fresh.db"));
    server.add_database(ID_FULL, &path("full.db"));
    std::fs::write(
        path("patina.toml"),
        format!(
            "[storage]\nurl = \"file://backups\"\n\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
             [cloudflare]\naccount_id = \"{}\"\napi_token = \"${{CF_API_TOKEN}}\"\napi_url = \"{}\"\n\n\
             [[database]]\nname = \"groveauth\"\nkind = \"d1\"\nid = \"{ID_SRC}\"\npriority = \"critical\"\n",
            server.account, server.api_url
        ),
    )
    .unwrap();
    let patina = |args: &[&str]| -> Output {
        let o = Command::new(env!("CARGO_BIN_EXE_patina"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("PATINA_CONFIG")
            .env("CF_API_TOKEN", &server.token)
            .stdin(Stdio::null())
            .output()
            .expect("run patina");
        assert!(!text(&o).contains(&server.token), "the token leaked");
        o
    };
    assert_code(&patina(&["backup"]), 0);

    // Into a fresh D1 database.
    let o = patina(&["restore", "groveauth", "--to-d1", ID_FRESH]);
    assert_code(&o, 0);
    assert!(
        text(&o).contains("every table checked against the backup"),
        "{}",
        text(&o)
    );
    assert_exact(&path("fresh.db"), &path("source.db"));

    // Into one that holds tables: refused without --force, nothing changed.
    let before = exact_content(&path("full.db"));
    let o = patina(&["restore", "groveauth", "--to-d1", ID_FULL]);
    assert_code(&o, 1);
    let t = text(&o);
    assert!(
        t.contains("already holds 4 tables") && t.contains("--force"),
        "{t}"
    );
    assert_eq!(exact_content(&path("full.db")), before);

    // D1 refusing the import, a token that may not import, a damaged upload: a clear error,
    // the database as it was.
    let refusals: [(Fault, &[&str]); 3] = [
        (
            Fault::ImportRejected("statement too long: SQLITE_TOOBIG".into()),
            &["refused the import and left the database as it was: statement too long"],
        ),
        (
            Fault::ReadOnlyToken,
            &["\"D1 Edit\"", "nothing was changed"],
        ),
        (Fault::UploadDamaged, &["upload was damaged"]),
    ];
    for (fault, expected) in refusals {
        server.set_fault(ID_FULL, fault);
        let o = patina(&["restore", "groveauth", "--to-d1", ID_FULL, "--force"]);
        assert_code(&o, 1);
        for e in expected {
            assert!(text(&o).contains(e), "{e}: {}", text(&o));
        }
        assert_eq!(exact_content(&path("full.db")), before);
    }
    server.set_fault(ID_FULL, Fault::None);

    // With --force: exactly the backup, no session lost to ON DELETE CASCADE, the 40-deep
    // thread replaced; and a committed safety backup of what was there.
    let o = patina(&["restore", "groveauth", "--to-d1", ID_FULL, "--force"]);
    assert_code(&o, 0);
    assert_exact(&path("full.db"), &path("source.db"));
    let mut files = Vec::new();
    crate::integration::cli::walk(&path("backups"), &mut files);
    let safety = files
        .iter()
        .filter(|p| {
            let p = p.to_string_lossy();
            p.contains("/groveauth-pre-restore/") && p.ends_with(".manifest.json")
        })
        .map(|p| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap())
        .collect::<Vec<_>>();
    // One per --force attempt: the three that D1 refused took theirs too.
    assert_eq!(safety.len(), 4, "{files:?}");
    for m in &safety {
        assert_eq!(m["trigger"], "pre-restore");
        assert_eq!(m["source"]["id"], ID_FULL);
    }
    assert_code(
        &patina(&["restore", "groveauth-pre-restore", "--to", "safety.db"]),
        0,
    );
    assert_eq!(exact_content(&path("safety.db")), before);

    // A D1-ready file that Cloudflare's local D1 loads into an empty database.
    let o = patina(&[
        "restore",
        "groveauth",
        "--format",
        "d1",
        "--to",
        "groveauth.d1.sql",
    ]);
    assert_code(&o, 0);
    assert!(text(&o).contains("wrangler d1 execute"), "{}", text(&o));
    let local = LocalD1::new(&path("wrangler"));
    local.execute_file(&path("groveauth.d1.sql")).unwrap();
    assert_exact(&local.sqlite_path(), &path("source.db"));
    let o = patina(&[
        "restore",
        "groveauth",
        "--format",
        "d1",
        "--to",
        "groveauth.d1.sql",
    ]);
    assert_code(&o, 1);
    assert!(text(&o).contains("--force"), "{}", text(&o));

    // Bad input changes nothing and says what is wrong.
    let o = patina(&["restore", "groveauth", "--to-d1", "not-a-uuid"]);
    assert_code(&o, 2);
    assert!(text(&o).contains("not a D1 database id"), "{}", text(&o));
    assert_code(
        &patina(&["restore", "groveauth", "--to", "x.db", "--to-d1", ID_FRESH]),
        2,
    );
    assert_code(&patina(&["restore", "groveauth", "--format", "d1"]), 2);
    assert!(!path("x.db").exists());
}

#[tokio::test]
async fn an_import_that_never_finishes_is_abandoned_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    let server = D1Server::start();
    server.add_database(ID_A, &db);
    server.set_fault(ID_A, Fault::ImportStuck);
    let file = dir.path().join("restore.sql");
    std::fs::write(
        &file,
        "PRAGMA defer_foreign_keys=TRUE;\nINSERT INTO t VALUES (1);\n",
    )
    .unwrap();
    let client = Client::new(
        &Cloudflare {
            account_id: server.account.clone(),
            api_token: Secret::new(&server.token),
            api_url: server.api_url.clone(),
        },
        Options {
            export_limit: std::time::Duration::from_millis(300),
            ..fast()
        },
    )
    .unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.import("groveauth", ID_A, &file),
    )
    .await
    .expect("no hang")
    .expect_err("a stuck import fails");
    let message = err.to_string();
    assert!(
        message.contains("still running after 300ms") && message.contains(ID_A),
        "{message}"
    );
    // The upload went to the upload URL without the Cloudflare token.
    let seen = server.seen();
    let put = seen
        .iter()
        .find(|s| s.method == "PUT")
        .expect("the file was uploaded");
    assert_eq!(put.authorization, None);
}

/// The refusal Patina's fallback recognises is the one Cloudflare's exporter really gives.
#[test]
fn the_real_exporter_refuses_virtual_tables_with_the_message_patina_recognises() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fts.db");
    Connection::open(&source)
        .unwrap()
        .execute_batch(
            "CREATE VIRTUAL TABLE search USING fts5(body); INSERT INTO search VALUES ('x');",
        )
        .unwrap();
    let d1 = LocalD1::from_sqlite(&dir.path().join("d1"), &source);
    let err = d1
        .export()
        .expect_err("D1 refuses to export virtual tables");
    assert!(
        err.0
            .contains("D1 Export error: cannot export databases with Virtual Tables (fts5)"),
        "{err}"
    );
    assert!(patina::source::d1::refuses_virtual(&err.0));
}
