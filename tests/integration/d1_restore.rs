//! The D1 restore file against Cloudflare's own local D1 (wrangler 4.86): written from a SQLite
//! database with everything D1 makes hard, loaded with `wrangler d1 execute --file` into a fresh
//! database and into one that already holds the tables with other rows and deep cascade chains,
//! and compared with the source table by table, value by value, type and REAL bits included.

use std::path::{Path, PathBuf};

use patina::source::d1_restore::{D1_MAX_STATEMENT, D1FileStats, write_d1_file};
use rusqlite::Connection;
use rusqlite::types::Value;

use crate::support::wrangler::LocalD1;

/// Tables, indexes, views and triggers of both the source and the pre-filled target.
const SCHEMA: &str = r#"
    CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
    CREATE TABLE sessions(id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, token TEXT NOT NULL);
    CREATE TABLE audit(id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE RESTRICT, what TEXT);
    CREATE TABLE node(id INTEGER PRIMARY KEY,
        parent_id INTEGER REFERENCES node(id) ON DELETE CASCADE, label TEXT);
    CREATE TABLE tree(id INTEGER PRIMARY KEY,
        parent_id INTEGER NOT NULL REFERENCES tree(id) ON DELETE CASCADE);
    CREATE TABLE a(id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id) ON DELETE CASCADE);
    CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id) ON DELETE CASCADE);
    CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT CHECK (json_valid(body)), data BLOB);
    CREATE TABLE vals(id INTEGER PRIMARY KEY, v, t TEXT, r REAL);
    CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
    CREATE TABLE counters(id INTEGER PRIMARY KEY AUTOINCREMENT, n TEXT);
    CREATE TABLE loose(x, y);
    CREATE TABLE checked(x, CHECK (x IS NULL OR CASE WHEN x > 0 THEN 1 END));
    CREATE TABLE articles(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
    CREATE VIRTUAL TABLE search USING fts5(title, body);
    CREATE VIRTUAL TABLE articles_fts USING fts5(body, content='articles', content_rowid='id');
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE INDEX vals_positive ON vals(r) WHERE r > 0;
    CREATE VIEW user_emails AS SELECT id, email FROM users;
    CREATE TRIGGER user_emails_insert INSTEAD OF INSERT ON user_emails
        BEGIN INSERT INTO users(id, email) VALUES (NEW.id, NEW.email); END;
    CREATE TRIGGER articles_insert AFTER INSERT ON articles
        BEGIN INSERT INTO articles_fts(rowid, body) VALUES (NEW.id, NEW.body); END;
"#;

/// Levels of the table chain `level1` ← `level2` ← … (each ON DELETE CASCADE to the one before):
/// deeper than D1's ten cascade levels, so dropping `level1` first would fail.
const LEVELS: usize = 12;

/// [`SCHEMA`] and the level tables, each row `i` of `levelN` pointing at row `i` of the level
/// above, `rows` rows each.
fn create(conn: &Connection, level_rows: usize) {
    conn.execute_batch("PRAGMA foreign_keys=OFF").unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for n in 1..=LEVELS {
        let up = if n == 1 {
            String::new()
        } else {
            format!(
                ", up INTEGER REFERENCES level{}(id) ON DELETE CASCADE",
                n - 1
            )
        };
        conn.execute_batch(&format!(
            "CREATE TABLE level{n}(id INTEGER PRIMARY KEY{up});
             WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {level_rows})
                 INSERT INTO level{n} SELECT i{} FROM r;",
            if n == 1 { "" } else { ", i" }
        ))
        .unwrap();
    }
}

/// The backup: awkward values of every type, a 300 KB TEXT and a 200 KB BLOB.
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("source.db");
    let conn = Connection::open(&path).unwrap();
    create(&conn, 1);
    conn.execute_batch(
        r#"
        INSERT INTO users VALUES (1, 'ann@example.com'), (2, 'bob@example.com');
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
            INSERT INTO sessions SELECT i, 1 + i % 2, 'token-' || i FROM n;
        INSERT INTO audit VALUES (1, 2, 'login');
        INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'child'), (3, 3, 'self'), (4, 2, NULL);
        INSERT INTO tree VALUES (1, 1), (2, 1), (3, 2);
        INSERT INTO a VALUES (1, NULL), (2, 1);
        INSERT INTO b VALUES (1, 2), (2, NULL);
        INSERT INTO docs VALUES (2, '{}', X'00ff80'), (3, NULL, X'');
        INSERT INTO kv VALUES ('a', 1), ('b', 'two'), (printf('%.5000c', 'k'), 'long key');
        INSERT INTO counters(n) VALUES ('one'), ('two'), ('three');
        DELETE FROM counters WHERE id = 3;
        INSERT INTO loose(rowid, x, y) VALUES (10, 1, 'ten'), (20, NULL, X'20'), (99, 'x', 2.5);
        INSERT INTO checked VALUES (1), (NULL);
        INSERT INTO articles VALUES (1, 'the quick brown fox'), (2, 'lazy dogs sleep');
        INSERT INTO search(rowid, title, body) VALUES (5, 'hello', 'world wide'), (9, 'x', NULL);
        INSERT INTO search(search, rank) VALUES ('rank', 'bm25(10.0, 5.0)');
        "#,
    )
    .unwrap();
    // 300 KB of JSON (checked by json_valid, so it must never be stored in part) and 200 KB of
    // every byte value.
    let body = serde_json::to_string(&["ünï 'quoted' \\n line\n".repeat(300_000 / 22)]).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    conn.execute(
        "INSERT INTO docs VALUES (1, ?1, ?2)",
        rusqlite::params![body, data],
    )
    .unwrap();
    let vals: Vec<(Value, Value, Value)> = vec![
        (Value::Integer(i64::MIN), Value::Null, Value::Null),
        (Value::Integer(i64::MAX), Value::Null, Value::Null),
        (Value::Integer((1 << 53) + 1), Value::Null, Value::Null),
        (Value::Real(-0.0), Value::Null, Value::Real(-0.0)),
        (
            Value::Real(f64::INFINITY),
            Value::Null,
            Value::Real(f64::NEG_INFINITY),
        ),
        (
            Value::Real(3.0),
            Value::Text("3.0".into()),
            Value::Real(0.1),
        ),
        (Value::Real(5e-324), Value::Null, Value::Real(f64::MAX)),
        (
            Value::Real(62791.5517683045),
            Value::Null,
            Value::Real(-1e-300),
        ),
        (
            Value::Text("C:\\new\nline".into()),
            Value::Text("it's \"quoted\"".into()),
            Value::Null,
        ),
        (
            Value::Text("nul\0inside".into()),
            Value::Text("cr\r\nlf".into()),
            Value::Null,
        ),
        (
            Value::Text("ünïcødé 😀 \u{202e}rtl".into()),
            Value::Text("BEGIN TRANSACTION; x COMMIT;".into()),
            Value::Null,
        ),
        (
            Value::Blob(Vec::new()),
            Value::Text(String::new()),
            Value::Null,
        ),
        (
            Value::Blob(b"BEGIN TRANSACTION; a text-like blob of more than 32 bytes".to_vec()),
            Value::Text("-- not a comment; /* nor this */".into()),
            Value::Null,
        ),
        (
            Value::Blob(vec![0xff, 0xfe, 0x00]),
            Value::Text("$1 $$x$$ `q`".into()),
            Value::Null,
        ),
    ];
    for (v, t, r) in vals {
        conn.execute(
            "INSERT INTO vals(v, t, r) VALUES (?1, ?2, ?3)",
            rusqlite::params![v, t, r],
        )
        .unwrap();
    }
    path
}

/// What the target D1 database holds before the restore: the same tables with other rows —
/// 3000 sessions of a user the backup does not have (dropping `users` while they exist would
/// cascade into them), audit rows whose RESTRICT D1 defers (SQLite treats RESTRICT as a
/// deferred check under `defer_foreign_keys`), and chains far deeper than D1's ten cascade
/// levels: of rows within a table, across a two-table cycle, and across the level tables.
fn existing(dir: &Path) -> PathBuf {
    let path = dir.join("existing.db");
    let conn = Connection::open(&path).unwrap();
    create(&conn, 3);
    conn.execute_batch(
        r#"
        INSERT INTO users VALUES (7, 'old@example.com');
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
            INSERT INTO sessions SELECT i, 7, 'old-' || i FROM n;
        INSERT INTO audit VALUES (1, 7, 'old'), (2, 7, 'old');
        INSERT INTO node VALUES (1, NULL, 'old root');
        WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
            INSERT INTO node SELECT i, i - 1, 'old' FROM n;
        INSERT INTO tree VALUES (1, 1);
        WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
            INSERT INTO tree SELECT i, i - 1 FROM n;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)
            INSERT INTO b SELECT i, i FROM n;
        INSERT INTO a VALUES (1, NULL);
        WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 30)
            INSERT INTO a SELECT i, i - 1 FROM n;
        INSERT INTO docs VALUES (1, '[1]', X'01');
        INSERT INTO counters(id, n) VALUES (40, 'old');
        INSERT INTO articles VALUES (1, 'old article');
        INSERT INTO search(rowid, title, body) VALUES (5, 'old', 'old');
        "#,
    )
    .unwrap();
    let violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0, "the existing data must be valid for D1");
    path
}

fn write(db: &Path, file: &Path, limit: usize) -> D1FileStats {
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    let stats = write_d1_file(db, &mut out, limit).unwrap();
    assert!(stats.largest_statement <= limit, "{stats:?}");
    stats
}

/// A table's rows with REALs as their bits (`quote()` and `=` lose -0.0's sign).
type Rows = Vec<Vec<Value>>;

/// Every user table of the database at `path` (plus `sqlite_sequence`, the FTS5 options and
/// the schema), skipping `_cf_*`, SQLite's own tables and FTS shadow tables.
fn content(path: &Path) -> Vec<(String, Rows)> {
    let conn = Connection::open(path).unwrap();
    let tables: Vec<(String, bool)> = conn
        .prepare(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main'
             AND type IN ('table', 'virtual') AND substr(name, 1, 4) <> '_cf_'
             AND (substr(name, 1, 7) <> 'sqlite_' OR name = 'sqlite_sequence') ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut queries: Vec<(String, String)> = tables
        .into_iter()
        .map(|(name, without_rowid)| {
            let t = format!("\"{name}\"");
            let sql = if without_rowid || name == "sqlite_sequence" {
                format!("SELECT * FROM {t} ORDER BY 1")
            } else {
                format!("SELECT rowid, * FROM {t} ORDER BY rowid")
            };
            (name, sql)
        })
        .collect();
    queries.push((
        "search_config".into(),
        "SELECT * FROM search_config ORDER BY k".into(),
    ));
    queries.push((
        "matches".into(),
        "SELECT 'search', rowid FROM search WHERE search MATCH 'wide'
         UNION ALL SELECT 'articles_fts', rowid FROM articles_fts WHERE articles_fts MATCH 'dogs'"
            .into(),
    ));
    queries.push((
        "schema".into(),
        "SELECT type, name, tbl_name, sql FROM sqlite_master
         WHERE substr(tbl_name, 1, 4) <> '_cf_'
           AND name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow')
         ORDER BY type, name"
            .into(),
    ));
    queries
        .into_iter()
        .map(|(name, sql)| {
            let mut stmt = conn.prepare(&sql).unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get::<_, Value>(i)? {
                                Value::Real(f) => {
                                    Value::Text(format!("REAL {:#018x}", f.to_bits()))
                                }
                                v => v,
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            (name, rows)
        })
        .collect()
}

/// Fails naming the first table and row that differ (short: rows can hold 300 KB).
fn assert_same(got: &Path, want: &Path) {
    let (got, want) = (content(got), content(want));
    let names = |c: &[(String, Rows)]| c.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, got), (_, want)) in got.iter().zip(&want) {
        assert_eq!(got.len(), want.len(), "number of rows of {name}");
        for (g, w) in got.iter().zip(want) {
            let short = |r: &Vec<Value>| format!("{r:?}").chars().take(300).collect::<String>();
            assert!(
                g == w,
                "{name}: D1 has {} where the source has {}",
                short(g),
                short(w)
            );
        }
    }
}

#[test]
fn restores_exactly_into_a_fresh_d1_database_with_small_statements() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    // A small limit splits the large values into hundreds of pieces and the rows into many
    // INSERTs: the same file shape as at 100,000 bytes, far more of it.
    let file = dir.path().join("restore.sql");
    let stats = write(&db, &file, 2_000);
    assert!(stats.statements > 400, "{stats:?}");
    let d1 = LocalD1::new(&dir.path().join("d1"));
    d1.execute_file(&file).unwrap();
    assert_same(&d1.sqlite_path(), &db);
    // D1's own tables are still there, and nothing of the backup's `_cf_*` came along.
    let conn = Connection::open(d1.sqlite_path()).unwrap();
    let cf: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE name LIKE '\\_cf\\_%' ESCAPE '\\'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(cf, ["_cf_METADATA"]);
}

#[test]
fn replaces_existing_rows_in_d1_however_deep_their_cascade_chains() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let file = dir.path().join("restore.sql");
    let stats = write(&db, &file, D1_MAX_STATEMENT);
    assert_eq!((stats.tables, stats.rows), (28, 557), "{stats:?}");
    assert!(stats.largest_statement > 90_000, "{stats:?}");
    let d1 = LocalD1::from_sqlite(&dir.path().join("d1"), &existing(dir.path()));
    d1.execute_file(&file).unwrap();
    assert_same(&d1.sqlite_path(), &db);
}
