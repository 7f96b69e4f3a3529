//! The SQLite source end to end: dump a real database, restore it with the real `sqlite3`
//! shell and with `load()`, and compare every value bit for bit.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patina::source::sqlite::{self, DumpRequest, DumpSummary, Progress, SourceError};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use tempfile::TempDir;

use crate::support::sqlite3;

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T03:04:05Z")
        .unwrap()
        .to_utc()
}

fn request<'a>(path: &'a Path, exclude: &'a [String]) -> DumpRequest<'a> {
    DumpRequest {
        database: "app",
        path,
        job_id: "job-1",
        generated_at: at(),
        exclude_tables: exclude,
        busy_timeout: Duration::from_secs(5),
    }
}

fn dump_to_vec(req: &DumpRequest) -> Result<(Vec<u8>, DumpSummary), SourceError> {
    let mut out = Vec::new();
    let summary = sqlite::dump(req, &mut out, &mut |_| {})?;
    Ok((out, summary))
}

/// The dump without the lines that legitimately differ between runs.
fn body(dump: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for line in dump.split_inclusive(|&c| c == b'\n') {
        if line.starts_with(b"-- Generated: ")
            || line.starts_with(b"-- Job ID: ")
            || line.starts_with(b"-- Duration: ")
        {
            continue;
        }
        b.extend_from_slice(line);
    }
    b
}

/// One value, REAL by its bits (so -0.0 ≠ 0.0 and every ulp counts).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Null,
    Int(i64),
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

fn cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(r) => Cell::Real(r.to_bits()),
        ValueRef::Text(t) => Cell::Text(t.to_vec()),
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
    }
}

/// Every row of every table (internal ones included), in rowid / primary-key order, all
/// columns (generated ones too).
fn contents(path: &Path) -> BTreeMap<String, Vec<Vec<Cell>>> {
    let conn = Connection::open(path).unwrap();
    let tables: Vec<(String, bool)> = conn
        .prepare("SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name <> 'sqlite_schema'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut all = BTreeMap::new();
    for (name, without_rowid) in tables {
        let q = patina::dump::quote_ident(&name);
        let order = if without_rowid {
            String::new()
        } else {
            " ORDER BY _rowid_".to_string()
        };
        let mut stmt = conn.prepare(&format!("SELECT * FROM {q}{order}")).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| (0..n).map(|i| Ok(cell(r.get_ref(i)?))).collect())
            .unwrap()
            .collect::<Result<Vec<Vec<Cell>>, _>>()
            .unwrap();
        all.insert(name, rows);
    }
    all
}

fn assert_same_contents(original: &Path, restored: &Path) {
    let a = contents(original);
    let b = contents(restored);
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same tables"
    );
    for (table, rows) in &a {
        let other = &b[table];
        assert_eq!(rows.len(), other.len(), "row count of {table}");
        for (i, (x, y)) in rows.iter().zip(other).enumerate() {
            assert_eq!(x, y, "row {i} of {table}");
        }
    }
}

/// Doubles that stress the REAL literal: extremes, subnormals, and pseudo-random bit patterns.
#[allow(clippy::excessive_precision)] // 123456789.123456789 as users write it
fn nasty_reals() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        1.0 / 3.0,
        123456789.123456789,
        62791.5517683045, // shortest form misread by sqlite3 3.40
        1e308,
        -1e308,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        2.225073858507201e-308,
        1e-300,
        i64::MAX as f64,
        i64::MIN as f64,
        9007199254740993.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    while v.len() < 3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = f64::from_bits(state);
        if f.is_finite() {
            v.push(f);
        }
    }
    v
}

/// A database with every identifier and value edge the dump must survive.
fn nasty_db(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        r#"
        PRAGMA foreign_keys=ON;
        CREATE TABLE "order"("select" INTEGER PRIMARY KEY, "a""b" TEXT, "with space" REAL, "ünï" BLOB, v);
        CREATE TABLE "a""b"(id INTEGER PRIMARY KEY AUTOINCREMENT, "order" INTEGER REFERENCES "order"("select"), note TEXT);
        CREATE TABLE "with space"(k TEXT NOT NULL, n INTEGER NOT NULL, payload, PRIMARY KEY(k, n)) WITHOUT ROWID;
        CREATE TABLE "ünïcødé 表"("列 😀" TEXT, x INTEGER,
            doubled INTEGER GENERATED ALWAYS AS (x * 2) VIRTUAL,
            tripled INTEGER GENERATED ALWAYS AS (x * 3) STORED);
        CREATE TABLE log(id INTEGER PRIMARY KEY, msg TEXT);
        CREATE TABLE plain(a, b);
        CREATE TABLE shadowed("rowid" TEXT, "oid" TEXT, b);
        CREATE TABLE "_cf_KV"(k, v);
        CREATE INDEX "idx order v" ON "order"(v);
        CREATE UNIQUE INDEX idx_partial ON "a""b"(note) WHERE note IS NOT NULL;
        CREATE VIEW "view of order" AS SELECT "select", v FROM "order";
        CREATE TRIGGER "after insert" AFTER INSERT ON "order"
        BEGIN
            INSERT INTO log(msg) VALUES ('inserted ' || new."select");
        END;
        INSERT INTO "_cf_KV" VALUES ('internal', 1);
        "#,
    )
    .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut ins = conn
            .prepare(
                r#"INSERT INTO "order"("a""b", "with space", "ünï", v) VALUES (?1, ?2, ?3, ?4)"#,
            )
            .unwrap();
        for (i, r) in nasty_reals().into_iter().enumerate() {
            ins.execute(params![format!("real {i}"), r, Option::<Vec<u8>>::None, r])
                .unwrap();
        }
        for i in [0, 1, -1, i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            ins.execute(params!["int", i, b"".to_vec(), i]).unwrap();
        }
        let texts: Vec<&[u8]> = vec![
            b"",
            b"it's",
            b"''",
            b"line\nbreak\ttab",
            b"crlf\r\nline",
            b"lone\rcr",
            b"nul\0byte",
            "emoji 😀👍🏽 ünïcødé 表".as_bytes(),
            b"\n.quit\n",
            b"x\ngo\n/\n;\n",
            b"-- not a comment",
            b"ends with semicolon;",
        ];
        for t in texts {
            // TEXT bound as bytes through a cast keeps NUL and every byte.
            ins.execute(params![
                "text",
                Option::<f64>::None,
                t.to_vec(),
                String::from_utf8(t.to_vec()).unwrap()
            ])
            .unwrap();
        }
        ins.execute(params![
            "null",
            Option::<f64>::None,
            Option::<Vec<u8>>::None,
            Option::<i64>::None
        ])
        .unwrap();
        ins.execute(params![
            "empty blob",
            0.5,
            Vec::<u8>::new(),
            Vec::<u8>::new()
        ])
        .unwrap();
        let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
        ins.execute(params!["1 MiB blob", 2.5, big.clone(), big])
            .unwrap();
    }
    conn.execute_batch(
        r#"
        INSERT INTO "order"("a""b", v) VALUES ('invalid utf-8', CAST(X'fffe' AS TEXT));
        INSERT INTO "order"("a""b", v) VALUES ('nul text', CAST(X'610062' AS TEXT));
        INSERT INTO "order"("a""b", v) VALUES ('mixed', CAST(X'c3' AS TEXT) || 'x');
        INSERT INTO "a""b"("order", note) VALUES (1, 'first'), (2, NULL), (3, 'third'), (NULL, 'orphan');
        INSERT INTO "a""b"("order", note) VALUES (4, 'deleted');
        DELETE FROM "a""b" WHERE note = 'deleted';
        INSERT INTO "with space" VALUES ('b', 2, 'x'), ('a', 10, X'00'), ('a', 9, NULL), ('é', -1, 1.5);
        INSERT INTO "ünïcødé 表"("列 😀", x) VALUES ('a', 1), ('b', NULL), (NULL, -4);
        INSERT INTO plain VALUES (1, 2), ('x', NULL);
        DELETE FROM plain WHERE a = 1;
        INSERT INTO plain VALUES (3, 4);
        INSERT INTO shadowed VALUES ('r', 'o', 1), ('s', 'p', 2);
        COMMIT;
        "#,
    )
    .unwrap();
}

/// BLOBs that hold text are written as `CAST('…' AS BLOB)`; they must come back as the same
/// BLOBs (not TEXT), byte for byte, through the shell and the loader.
#[test]
fn text_like_blobs_round_trip_as_blobs() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch("CREATE TABLE b(id INTEGER PRIMARY KEY, x BLOB);")
        .unwrap();
    let json = r#"{"items":[{"sku":"SKU-000042","label":"it's naïve 😀; done"}],"n":1}"#;
    let samples: Vec<Vec<u8>> = vec![
        json.as_bytes().to_vec(),
        format!("{json}\nsecond line\n").into_bytes(),
        format!("{json}\r\n").into_bytes(),
        [json.as_bytes(), b"\0"].concat(),
        [json.as_bytes(), b"\xff\xfe"].concat(),
        "".as_bytes().to_vec(),
        b"short".to_vec(),
        vec![],
    ];
    for (i, x) in samples.iter().enumerate() {
        conn.execute("INSERT INTO b VALUES (?1, ?2)", params![i as i64, x])
            .unwrap();
    }
    drop(conn);
    let (_, sql, _) = dump_file(&src, dir.path(), &[]);
    let text = std::str::from_utf8(&sql).expect("the dump is valid UTF-8");
    assert!(text.contains(" AS BLOB)"), "{text}");
    let by_shell = dir.path().join("by-shell.db");
    sqlite3::run(&by_shell, &sql);
    let by_load = dir.path().join("by-load.db");
    sqlite::load(&mut BufReader::new(sql.as_slice()), &by_load).unwrap();
    for restored in [&by_shell, &by_load] {
        assert_same_contents(&src, restored);
        let types: Vec<String> = Connection::open(restored)
            .unwrap()
            .prepare("SELECT typeof(x) FROM b ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(types.iter().all(|t| t == "blob"), "{types:?}");
    }
}

fn dump_file(db: &Path, dir: &Path, exclude: &[String]) -> (PathBuf, Vec<u8>, DumpSummary) {
    let (sql, summary) = dump_to_vec(&request(db, exclude)).unwrap();
    let file = dir.join("dump.sql");
    std::fs::write(&file, &sql).unwrap();
    (file, sql, summary)
}

fn log_count(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM log", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn nasty_database_round_trips_through_sqlite3_and_load() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    nasty_db(&src);
    let (_, sql, summary) = dump_file(&src, dir.path(), &[]);
    let text = std::str::from_utf8(&sql).expect("the dump is valid UTF-8");

    // Internal tables are skipped, everything else is there.
    assert!(!text.contains("_cf_KV"));
    assert_eq!(
        summary
            .tables
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [
            "a\"b",
            "log",
            "order",
            "plain",
            "shadowed",
            "with space",
            "ünïcødé 表"
        ]
    );
    assert_eq!(summary.row_count, summary.tables.values().sum::<u64>());
    assert_eq!(summary.sql_bytes, sql.len() as u64);
    assert!(text.contains("-- Tables: 7\n"));
    assert!(text.contains(&format!("-- Total Rows: {}\n", summary.row_count)));
    // Generated columns are recomputed, not inserted.
    assert!(text.contains("INSERT INTO \"ünïcødé 表\" (\"列 😀\",\"x\") VALUES"));
    // Triggers come after all data.
    let trigger = text.find("CREATE TRIGGER").unwrap();
    assert!(text.rfind("INSERT INTO \"order\"").unwrap() < trigger);

    let original = sqlite::inspect(&src).unwrap();
    let logs = log_count(&src);

    // 1. The real sqlite3 shell, as a user would restore.
    let by_shell = dir.path().join("by-shell.db");
    sqlite3::run(&by_shell, &sql);
    // 2. Our loader.
    let by_load = dir.path().join("by-load.db");
    let loaded = sqlite::load(&mut BufReader::new(sql.as_slice()), &by_load).unwrap();
    // Rows are batched into multi-row INSERTs: fewer statements than rows, but some.
    assert!(loaded.statements > 10 && loaded.statements < summary.row_count);

    for restored in [&by_shell, &by_load] {
        // _cf_KV was not dumped: compare without it.
        let mut a = contents(&src);
        a.remove("_cf_KV");
        assert_eq!(
            a["sqlite_sequence"],
            [vec![Cell::Text(b"a\"b".to_vec()), Cell::Int(5)]]
        );
        let b = contents(restored);
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (table, rows) in &a {
            assert_eq!(
                rows.len(),
                b[table].len(),
                "rows of {table} in {}",
                restored.display()
            );
            for (i, (x, y)) in rows.iter().zip(&b[table]).enumerate() {
                assert_eq!(x, y, "row {i} of {table} in {}", restored.display());
            }
        }
        assert_eq!(
            log_count(restored),
            logs,
            "the trigger fired during restore"
        );
        let inspection = sqlite::inspect(restored).unwrap();
        assert_eq!(inspection.integrity, "ok");
        assert_eq!(inspection.foreign_key_violations, 0);
        assert_eq!(inspection.schema_hash, summary.schema_hash);
        let mut expected_tables = original.tables.clone();
        expected_tables.remove("_cf_KV");
        assert_eq!(inspection.tables, expected_tables);
        assert_eq!(
            sqlite3::run(restored, b"PRAGMA foreign_key_check;\n"),
            "",
            "foreign_key_check in {}",
            restored.display()
        );
        // Dumping the restored database gives the same body: nothing was lost or reordered.
        let (again, _) = dump_to_vec(&request(restored, &[])).unwrap();
        assert!(
            body(&again) == body(&sql),
            "re-dump of {} differs",
            restored.display()
        );
    }
    // The original has one more (internal) table, otherwise the same schema objects.
    assert_eq!(original.integrity, "ok");
    assert_eq!(original.schema_hash, summary.schema_hash);
}

#[test]
fn every_real_reads_back_bit_exactly_in_sqlite3() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("reals.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch("CREATE TABLE r(x); BEGIN").unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut n = 0;
    while n < 100_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = f64::from_bits(state);
        if f.is_finite() {
            conn.execute("INSERT INTO r VALUES (?1)", [f]).unwrap();
            n += 1;
        }
    }
    for f in nasty_reals() {
        conn.execute("INSERT INTO r VALUES (?1)", [f]).unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let (sql, _) = dump_to_vec(&request(&src, &[])).unwrap();
    let restored = dir.path().join("restored.db");
    sqlite3::run(&restored, &sql);
    assert_same_contents(&src, &restored);
}

#[test]
fn dumps_are_deterministic() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    nasty_db(&src);
    let (first, _) = dump_to_vec(&request(&src, &[])).unwrap();
    let mut req = request(&src, &[]);
    req.job_id = "job-2";
    req.generated_at = at() + chrono::Duration::hours(1);
    let (second, _) = dump_to_vec(&req).unwrap();
    assert_ne!(first, second, "job id and time are in the header");
    assert!(body(&first) == body(&second));

    let copy = dir.path().join("vacuumed.db");
    Connection::open(&src)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let (third, _) = dump_to_vec(&request(&copy, &[])).unwrap();
    assert!(
        body(&first) == body(&third),
        "a VACUUMed copy dumps the same"
    );
}

#[test]
fn excluded_tables_are_left_out_entirely() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    nasty_db(&src);
    let exclude = vec!["a\"b".to_string(), "log".to_string()];
    let (_, sql, summary) = dump_file(&src, dir.path(), &exclude);
    let text = String::from_utf8(sql.clone()).unwrap();
    assert!(!text.contains("-- Table: a\"b\n"), "no section for a\"b");
    assert!(
        !text.contains("CREATE TABLE \"a\"\"b\""),
        "no schema of a\"b"
    );
    assert!(!text.contains("INSERT INTO \"a\"\"b\""), "no data of a\"b");
    assert!(
        !text.contains("idx_partial"),
        "no index of an excluded table"
    );
    assert!(!text.contains("CREATE TABLE log"));
    // The trigger on "order" writes into log; it stays (it belongs to "order").
    assert!(text.contains("CREATE TRIGGER \"after insert\""));
    assert!(!text.contains("INSERT INTO sqlite_sequence (name,seq) VALUES ('a\"b'"));
    assert!(text.contains("-- Table: order\n"));
    assert!(text.contains("-- Table: with space\n"));
    assert!(!summary.tables.contains_key("a\"b"));
    assert!(!summary.tables.contains_key("log"));
    assert_eq!(summary.tables.len(), 5);

    let restored = dir.path().join("restored.db");
    sqlite::load(&mut BufReader::new(sql.as_slice()), &restored).unwrap();
    let inspection = sqlite::inspect(&restored).unwrap();
    assert_eq!(inspection.schema_hash, summary.schema_hash);
    assert_eq!(inspection.tables, summary.tables);
}

#[test]
fn virtual_tables_round_trip_with_their_shadow_tables() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    Connection::open(&src)
        .unwrap()
        .execute_batch(
            "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT);
             CREATE VIRTUAL TABLE fts USING fts5(body);
             CREATE VIRTUAL TABLE \"geo box\" USING rtree(id, x0, x1);
             CREATE VIRTUAL TABLE skipped USING fts5(body);
             INSERT INTO docs(body) VALUES ('hello world'), ('it''s a dump');
             INSERT INTO fts(rowid, body) SELECT id, body FROM docs;
             INSERT INTO fts(rowid, body) VALUES (1000000000000, 'far away rowid');
             INSERT INTO \"geo box\" VALUES (1, 0, 5), (7, -1.5, 2.5);
             INSERT INTO skipped(body) VALUES ('not in the dump');",
        )
        .unwrap();
    let exclude = vec!["skipped".to_string()];
    let (_, sql, summary) = dump_file(&src, dir.path(), &exclude);
    let text = String::from_utf8(sql.clone()).unwrap();
    assert!(text.contains("CREATE VIRTUAL TABLE fts USING fts5(body)"));
    assert!(
        !text.contains("skipped"),
        "an excluded virtual table takes its shadow tables"
    );
    assert!(summary.tables.contains_key("fts_data"));
    assert!(!summary.tables.contains_key("fts"));

    let by_shell = dir.path().join("by-shell.db");
    sqlite3::run(&by_shell, &sql);
    let by_load = dir.path().join("by-load.db");
    sqlite::load(&mut BufReader::new(sql.as_slice()), &by_load).unwrap();
    for restored in [&by_shell, &by_load] {
        let inspection = sqlite::inspect(restored).unwrap();
        assert_eq!(inspection.integrity, "ok");
        assert_eq!(inspection.schema_hash, summary.schema_hash);
        assert_eq!(inspection.tables, summary.tables);
        let conn = Connection::open(restored).unwrap();
        conn.execute_batch("INSERT INTO fts(fts) VALUES ('integrity-check')")
            .unwrap();
        let hits: Vec<i64> = conn
            .prepare("SELECT rowid FROM fts WHERE fts MATCH 'hello OR far' ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(hits, [1, 1_000_000_000_000]);
        let boxes: i64 = conn
            .query_row("SELECT count(*) FROM \"geo box\" WHERE x0 < 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(boxes, 1);
        let (again, _) = dump_to_vec(&request(restored, &[])).unwrap();
        assert!(
            body(&again) == body(&sql),
            "re-dump of {} differs",
            restored.display()
        );
    }
}

fn error_of(path: &Path, timeout: Duration) -> SourceError {
    let mut req = request(path, &[]);
    req.busy_timeout = timeout;
    match dump_to_vec(&req) {
        Ok(_) => panic!("dump of {} succeeded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_file_is_reported_with_a_hint() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope.db");
    let e = error_of(&path, Duration::from_secs(1));
    assert!(matches!(e, SourceError::NotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "open sqlite database {}: file not found — check the path in patina.toml",
            path.display()
        )
    );
    assert!(!path.exists(), "a read-only dump never creates the file");
    assert!(matches!(
        sqlite::inspect(&path),
        Err(SourceError::NotFound { .. })
    ));
}

#[test]
fn text_file_is_not_a_database() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "hello, this is not a database\n".repeat(200)).unwrap();
    let e = error_of(&path, Duration::from_secs(1));
    assert!(matches!(e, SourceError::NotADatabase { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("read {}: file is not a SQLite database", path.display())
    );
}

#[test]
fn corrupt_database_is_an_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let good = dir.path().join("good.db");
    let conn = Connection::open(&good).unwrap();
    conn.execute_batch("PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, pad TEXT); CREATE INDEX t_pad ON t(pad);")
        .unwrap();
    for i in 0..2000 {
        conn.execute("INSERT INTO t(pad) VALUES (?1)", [format!("{i:0>200}")])
            .unwrap();
    }
    drop(conn);
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() > 100 * 4096);

    // The first page intact, the rest garbage.
    let mut garbage = bytes[..4096].to_vec();
    let mut state = 12345u64;
    while garbage.len() < bytes.len() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        garbage.push((state >> 33) as u8);
    }
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, &garbage).unwrap();
    let e = error_of(&corrupt, Duration::from_secs(1));
    assert!(
        matches!(
            e,
            SourceError::Corrupt { .. } | SourceError::NotADatabase { .. }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("read {}: ", corrupt.display()))
    );

    // Truncated: the header promises pages that are not there.
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..3 * 4096]).unwrap();
    let e = error_of(&truncated, Duration::from_secs(1));
    assert!(
        matches!(
            e,
            SourceError::Corrupt { .. } | SourceError::NotADatabase { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("corrupt") || e.to_string().contains("not a SQLite"));
}

#[test]
fn exclusive_writer_makes_the_dump_busy_after_the_timeout() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("locked.db");
    let writer = Connection::open(&path).unwrap();
    writer
        .execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    writer
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (2);")
        .unwrap();
    let started = Instant::now();
    let e = error_of(&path, Duration::from_millis(200));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(e, SourceError::Busy { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "read {}: database is locked beyond the busy timeout of 200ms — a writer holds an exclusive lock",
            path.display()
        )
    );
    writer.execute_batch("COMMIT").unwrap();
    let (_, summary) = dump_to_vec(&request(&path, &[])).unwrap();
    assert_eq!(summary.row_count, 2);
}

#[test]
fn the_dump_is_one_snapshot_while_a_wal_writer_commits() {
    const ACCOUNTS: i64 = 6000;
    const START: i64 = 1000;
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("bank.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE ledger(id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER);
         CREATE INDEX ledger_src ON ledger(src);
         CREATE INDEX ledger_dst ON ledger(dst);",
    )
    .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for id in 1..=ACCOUNTS {
        conn.execute("INSERT INTO accounts VALUES (?1, ?2)", [id, START])
            .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, path) = (stop.clone(), commits.clone(), path.clone());
        std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (src, dst, amount) = (i % ACCOUNTS + 1, (i * 7) % ACCOUNTS + 1, i % 13 + 1);
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                conn.execute(
                    "UPDATE accounts SET balance = balance - ?2 WHERE id = ?1",
                    [src, amount],
                )
                .unwrap();
                conn.execute(
                    "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1",
                    [dst, amount],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO ledger(src, dst, amount) VALUES (?1, ?2, ?3)",
                    [src, dst, amount],
                )
                .unwrap();
                conn.execute_batch("COMMIT").unwrap();
                commits.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Let the ledger grow, then dump while the writer keeps going; the progress callback
    // (accounts has more rows than one progress step) pauses mid-dump so commits land between
    // reading accounts and reading ledger.
    while commits.load(Ordering::SeqCst) < 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut during = (0u64, 0u64);
    let mut sql = Vec::new();
    let summary = sqlite::dump(&request(&path, &[]), &mut sql, &mut |p: Progress| {
        if p.rows_done == 0 {
            during.0 = commits.load(Ordering::SeqCst);
        } else if p.rows_done < p.rows_total {
            std::thread::sleep(Duration::from_millis(100));
        }
        during.1 = commits.load(Ordering::SeqCst);
    })
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        during.1 > during.0 + 10,
        "the writer committed during the dump: {during:?}"
    );

    let restored = dir.path().join("restored.db");
    sqlite::load(&mut BufReader::new(sql.as_slice()), &restored).unwrap();
    let conn = Connection::open(&restored).unwrap();
    let (total, ledger): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT sum(balance) FROM accounts), (SELECT count(*) FROM ledger)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(total, ACCOUNTS * START);
    assert_eq!(ledger as u64, summary.tables["ledger"]);
    let text = String::from_utf8(sql).unwrap();
    assert!(text.contains(&format!("-- Table: ledger\n-- Rows: {ledger}\n")));
    // Every balance is explained by exactly the ledger in the same snapshot.
    let unexplained: i64 = conn
        .query_row(
            "SELECT count(*) FROM accounts a WHERE balance <> ?1
                 - coalesce((SELECT sum(amount) FROM ledger WHERE src = a.id), 0)
                 + coalesce((SELECT sum(amount) FROM ledger WHERE dst = a.id), 0)",
            [START],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unexplained, 0);
}

#[test]
fn load_refuses_an_existing_target_and_names_the_failing_statement() {
    let dir = TempDir::new().unwrap();
    let target = dir.path().join("exists.db");
    std::fs::write(&target, b"").unwrap();
    let e = sqlite::load(&mut BufReader::new(&b"SELECT 1;\n"[..]), &target).unwrap_err();
    assert!(matches!(e, SourceError::TargetExists { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("restore target {} already exists", target.display())
    );

    let bad = b"-- comment\nCREATE TABLE t(x);\nINSERT INTO t VALUES (1);\n\nINSERT INTO t VALUES ('a;\nb');\nINSERT INTO nope VALUES (1);\n";
    let target = dir.path().join("new.db");
    let e = sqlite::load(&mut BufReader::new(&bad[..]), &target).unwrap_err();
    assert!(matches!(e, SourceError::Load { statement: 4, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "load dump into {}: no such table: nope near statement 4",
            target.display()
        )
    );
    assert!(!target.exists(), "a failed load leaves no partial file");

    let truncated = b"CREATE TABLE t(x);\nINSERT INTO t VALUES ('unterminated\n";
    let e = sqlite::load(&mut BufReader::new(&truncated[..]), &target).unwrap_err();
    assert!(matches!(e, SourceError::Load { statement: 2, .. }), "{e:?}");
}

#[test]
fn load_reads_sqlite3_dot_dump_output() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    nasty_db(&src);
    let sql = sqlite3::run(&src, b".dump\n");
    let restored = dir.path().join("restored.db");
    sqlite::load(&mut BufReader::new(sql.as_bytes()), &restored).unwrap();
    assert_eq!(sqlite::inspect(&restored).unwrap().integrity, "ok");
    assert_eq!(
        sqlite::inspect(&restored).unwrap().tables["order"],
        sqlite::inspect(&src).unwrap().tables["order"]
    );
}

/// `quote()` and `typeof()` of every column of every row of `table`, read by rusqlite.
fn quoted(path: &Path, table: &str) -> Vec<Vec<String>> {
    let conn = Connection::open(path).unwrap();
    let q = patina::dump::quote_ident(table);
    let columns: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM pragma_table_info({})",
            sqlite_text(table)
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let select: Vec<String> = columns
        .iter()
        .map(|c| {
            let c = patina::dump::quote_ident(c);
            format!("typeof({c}) || ' ' || quote({c})")
        })
        .collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {q} ORDER BY _rowid_",
            select.join(", ")
        ))
        .unwrap();
    let n = stmt.column_count();
    // As escaped bytes: quote() of TEXT that is not UTF-8 is not UTF-8 either.
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| Ok(r.get_ref(i)?.as_bytes()?.escape_ascii().to_string()))
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn sqlite_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Loads `sql` with `sqlite::load` and with the `sqlite3` program, and asserts both hold the
/// same values in `tables` (`quote()` and `typeof()` of every column, and the bits of every
/// value); returns what `load` reported.
fn load_both_ways(dir: &Path, sql: &[u8], tables: &[&str]) -> sqlite::LoadSummary {
    let by_shell = dir.join("by-shell.db");
    let by_load = dir.join("by-load.db");
    let _ = std::fs::remove_file(&by_shell);
    let _ = std::fs::remove_file(&by_load);
    sqlite3::run(&by_shell, sql);
    let summary = sqlite::load(&mut BufReader::new(sql), &by_load).unwrap();
    for t in tables {
        let (a, b) = (quoted(&by_shell, t), quoted(&by_load, t));
        assert!(!a.is_empty(), "{t} has rows");
        assert_eq!(a.len(), b.len(), "rows of {t}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "row {i} of {t}");
        }
    }
    assert_same_contents(&by_shell, &by_load);
    summary
}

// See: issue 19 — the loader binds the values of Patina's own INSERTs to a prepared statement
// instead of having SQLite parse them; it must insert exactly what `sqlite3` reads from the text.
#[test]
fn bound_inserts_load_what_sqlite3_reads_value_by_value() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src.db");
    let conn = Connection::open(&src).unwrap();
    // One column of each affinity, and one without a type.
    conn.execute_batch(
        r#"CREATE TABLE "every type"(n INTEGER, r REAL, t TEXT, b BLOB, num NUMERIC, "any thing");
           CREATE TABLE keyed(id INTEGER PRIMARY KEY, v);"#,
    )
    .unwrap();
    let mut values: Vec<rusqlite::types::Value> = vec![rusqlite::types::Value::Null];
    use rusqlite::types::Value as V;
    for i in [0, 1, -1, 42, i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
        values.push(V::Integer(i));
    }
    for r in [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        -2.5,
        1e308,
        -1e308,
        f64::MAX,
        f64::MIN,
        1e-290,
        1.5e-300,
        5e-324,
        f64::MIN_POSITIVE,
        62791.5517683045,
        9_007_199_254_740_993.0,
        123_456_789.123_456_78,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        values.push(V::Real(r));
    }
    for t in [
        "",
        "it's",
        "''",
        "'",
        "a\nb",
        "line\nbreak;\n",
        "crlf\r\nline",
        "tab\there",
        "naïve 日本語 😀 \"quoted\" ,);",
        "123",
        " 12 ",
        "1e5",
        "-0.0",
        "0x10",
        "NULL",
        "X'00'",
        "CAST('a' AS BLOB)",
    ] {
        values.push(V::Text(t.to_string()));
    }
    for b in [
        &b""[..],
        b"\x00",
        b"\x00\x01\xfe\xff",
        b"{\"json\":\"a blob of plain text, long enough\",\"n\":1}",
        b"a blob with a\r\ncarriage return, long enough to be text",
        b"12",
    ] {
        values.push(V::Blob(b.to_vec()));
    }
    {
        let mut ins = conn
            .prepare(r#"INSERT INTO "every type" VALUES (?1, ?1, ?1, ?1, ?1, ?1)"#)
            .unwrap();
        for v in &values {
            ins.execute([v]).unwrap();
        }
        // TEXT with NUL and invalid UTF-8, as applications can store it.
        conn.execute_batch(
            r#"INSERT INTO "every type" VALUES (CAST(X'610062' AS TEXT), CAST(X'610062' AS TEXT),
                 CAST(X'610062' AS TEXT), CAST(X'610062' AS TEXT), CAST(X'610062' AS TEXT),
                 CAST(X'610062' AS TEXT));
               INSERT INTO "every type" VALUES (CAST(X'fffe' AS TEXT), CAST(X'fffe' AS TEXT),
                 CAST(X'fffe' AS TEXT), CAST(X'fffe' AS TEXT), CAST(X'fffe' AS TEXT),
                 CAST(X'fffe' AS TEXT));"#,
        )
        .unwrap();
        let mut keyed = conn
            .prepare("INSERT INTO keyed(id, v) VALUES (?1, ?2)")
            .unwrap();
        for (i, v) in values.iter().enumerate() {
            keyed.execute(params![i as i64 * 7 - 50, v]).unwrap();
        }
        // Enough rows for several statements.
        let long = "x'y\n".repeat(500);
        for i in 0..2000 {
            keyed
                .execute(params![10_000 + i, format!("{i} {long}")])
                .unwrap();
        }
    }
    drop(conn);
    let (_, sql, _) = dump_file(&src, dir.path(), &[]);
    let summary = load_both_ways(dir.path(), &sql, &["every type", "keyed"]);
    assert!(summary.bound > 20, "most INSERTs are bound: {summary:?}");
    assert!(summary.bound < summary.statements, "{summary:?}");
    assert_same_contents(&src, &dir.path().join("by-load.db"));
}

// See: issue 19 — statements the fast path does not take (other INSERT forms, literals in a
// form Patina does not write, expressions) still load, through SQLite, as `sqlite3` loads them.
#[test]
fn other_inserts_load_through_sqlite_as_before() {
    let dir = TempDir::new().unwrap();
    let sql = br#"PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE "t"("a", b INTEGER, c REAL);
INSERT INTO "t" ("a","b","c") VALUES (1,2,3.0),
(NULL,'7',-0.0);
INSERT INTO "t" ("a","b","c") VALUES (1e5,'12',0.1);
INSERT INTO "t" ("a","b","c") VALUES (0x10,007,1.5),
('a' || 'b',+3,(1.0/3.0));
INSERT INTO t VALUES (X'ABCD',-0,'2.50');
INSERT INTO "t" ("a","b","c") VALUES ((7.2835358703127019e-158/3.2733906078961419e150),9223372036854775808,1);
INSERT INTO "t" ("a","b","c") VALUES ('x',
2,
3.0);
INSERT INTO "t" ("a","b","c") VALUES (CAST(X'610062' AS TEXT),CAST('{}' AS BLOB),X'');
COMMIT;
"#;
    let summary = load_both_ways(dir.path(), sql, &["t"]);
    // The first and the last INSERT are in Patina's form.
    assert_eq!(summary.bound, 2, "{summary:?}");
}
