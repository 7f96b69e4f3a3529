//! Property-based dump round trip: random schemas (names with quotes, spaces, keywords,
//! unicode; declared types and affinities; collations; WITHOUT ROWID; generated columns;
//! partial indexes) filled with random values of every type and edge, dumped by Patina,
//! loaded by the real `sqlite3` program, and compared table by table, value by value.
//!
//! `PATINA_PROPTEST_CASES` raises the case count for the soak run (default 1,000).

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use crate::support::sqlite3;

/// Identifier material that has broken dumpers before.
const NAMES: &[&str] = &[
    "order",
    "select",
    "a\"b",
    "with space",
    "it's",
    "ünïcødé",
    "表",
    "🦀",
    "group by",
    "x[1]",
    "`tick`",
    "semi;colon",
    "dash-ed",
    "rowid",
    "_rowid_",
    "oid",
    "CamelCase",
    "new\nline",
];

const TYPES: &[&str] = &[
    "INTEGER",
    "REAL",
    "TEXT",
    "BLOB",
    "NUMERIC",
    "",
    "VARCHAR(10)",
    "DOUBLE PRECISION",
    "BOOLEAN",
    "DATETIME",
];

#[derive(Debug, Clone)]
struct Column {
    name: String,
    decl: &'static str,
    nocase: bool,
}

#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<Column>,
    without_rowid: bool,
    generated: bool,
    partial_index: bool,
    rows: Vec<Vec<Value>>,
}

fn name(i: usize, salt: usize) -> String {
    // Unique within a table or schema: the pool entry plus a position suffix when reused.
    let base = NAMES[(i + salt) % NAMES.len()];
    if i < NAMES.len() {
        base.to_string()
    } else {
        format!("{base}{i}")
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0i64),
            Just(-1i64),
            Just(1i64 << 53)
        ]
        .prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        prop_oneof![
            Just(-0.0f64),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(1e308),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.1),
            Just(1.0 / 3.0)
        ]
        .prop_map(Value::Real),
        ".{0,40}".prop_map(Value::Text),
        prop_oneof![
            Just(String::new()),
            Just("it's \"quoted\"".to_string()),
            Just("line\r\nbreak\rcr\ttab".to_string()),
            Just("nul\0inside".to_string()),
            Just("-- not a comment; DROP TABLE x;".to_string())
        ]
        .prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Blob),
    ]
}

fn table(salt: usize) -> impl Strategy<Value = Table> {
    (
        1usize..5,
        proptest::collection::vec((0usize..TYPES.len(), any::<bool>()), 5),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..12,
    )
        .prop_flat_map(
            move |(ncols, types, without_rowid, generated, partial, nrows)| {
                let columns: Vec<Column> = (0..ncols)
                    .map(|i| Column {
                        name: name(i, salt * 7 + 3),
                        decl: TYPES[types[i].0],
                        nocase: types[i].1,
                    })
                    .collect();
                proptest::collection::vec(proptest::collection::vec(value(), ncols), nrows)
                    .prop_map(move |rows| Table {
                        name: name(salt, 0),
                        columns: columns.clone(),
                        without_rowid,
                        generated,
                        partial_index: partial,
                        rows,
                    })
            },
        )
}

fn schema() -> impl Strategy<Value = Vec<Table>> {
    (1usize..4).prop_flat_map(|n| (0..n).map(table).collect::<Vec<_>>())
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Build the source database; returns the SQL `ORDER BY` to read each table in a stable order.
fn build(path: &Path, tables: &[Table]) -> Vec<(String, String)> {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY; BEGIN;")
        .unwrap();
    let mut reads = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        // A leading integer key keeps WITHOUT ROWID tables valid and rows distinguishable.
        let mut defs = vec!["\"k\" INTEGER PRIMARY KEY".to_string()];
        for c in &t.columns {
            let mut d = format!("{} {}", q(&c.name), c.decl);
            if c.nocase {
                d.push_str(" COLLATE NOCASE");
            }
            defs.push(d);
        }
        if t.generated {
            defs.push(format!(
                "\"g\" TEXT GENERATED ALWAYS AS (typeof({})) VIRTUAL",
                q(&t.columns[0].name)
            ));
        }
        let suffix = if t.without_rowid {
            " WITHOUT ROWID"
        } else {
            ""
        };
        conn.execute_batch(&format!(
            "CREATE TABLE {} ({}){suffix};",
            q(&t.name),
            defs.join(", ")
        ))
        .unwrap();
        if t.partial_index {
            conn.execute_batch(&format!(
                "CREATE INDEX {} ON {} ({}) WHERE {} IS NOT NULL;",
                q(&format!("ix {ti} {}", t.name)),
                q(&t.name),
                q(&t.columns[0].name),
                q(&t.columns[0].name)
            ))
            .unwrap();
        }
        let cols: Vec<String> = std::iter::once("\"k\"".to_string())
            .chain(t.columns.iter().map(|c| q(&c.name)))
            .collect();
        let marks = vec!["?"; cols.len()].join(", ");
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            q(&t.name),
            cols.join(", ")
        );
        for (i, row) in t.rows.iter().enumerate() {
            let mut values = vec![Value::Integer(i as i64)];
            values.extend(row.iter().cloned());
            conn.execute(&sql, params_from_iter(values)).unwrap();
        }
        reads.push((t.name.clone(), "\"k\"".to_string()));
    }
    conn.execute_batch("COMMIT;").unwrap();
    reads
}

/// Every row as typed values; REALs by their bits (so -0.0 and 0.0 differ) and TEXT as bytes.
fn read(path: &Path, reads: &[(String, String)]) -> Vec<Vec<String>> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for (table, order) in reads {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {} ORDER BY {order}", q(table)))
            .unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                use rusqlite::types::ValueRef::*;
                row.push(match r.get_ref(i).unwrap() {
                    Null => "null".to_string(),
                    Integer(v) => format!("int:{v}"),
                    Real(v) => format!("real:{:016x}", v.to_bits()),
                    Text(b) => format!("text:{}", hex::encode(b)),
                    Blob(b) => format!("blob:{}", hex::encode(b)),
                });
            }
            out.push(row);
        }
        out.push(vec![format!("-- end of {table}")]);
    }
    out
}

fn round_trip(tables: &[Table]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    let reads = build(&src, tables);
    let mut sql = Vec::new();
    patina::source::sqlite::dump(
        &patina::source::sqlite::DumpRequest {
            database: "prop",
            path: &src,
            job_id: "prop",
            generated_at: chrono::Utc::now(),
            exclude_tables: &[],
            busy_timeout: std::time::Duration::from_secs(5),
        },
        &mut sql,
        &mut |_| {},
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let restored = dir.path().join("restored.db");
    sqlite3::run(&restored, &sql);
    let (a, b) = (read(&src, &reads), read(&restored, &reads));
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        prop_assert_eq!(x, y);
    }
    let check = sqlite3::run(&restored, b"PRAGMA integrity_check;");
    prop_assert_eq!(check.trim(), "ok");
    // Patina's own loader (which binds the values of its INSERTs) reads the same values as
    // the shell (see: issue 19).
    let loaded = dir.path().join("loaded.db");
    patina::source::sqlite::load(&mut std::io::BufReader::new(&sql[..]), &loaded)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let c = read(&loaded, &reads);
    prop_assert_eq!(b.len(), c.len());
    for (x, y) in b.iter().zip(&c) {
        prop_assert_eq!(x, y);
    }
    Ok(())
}

#[test]
fn random_schemas_and_values_round_trip_through_sqlite3() {
    let cases = crate::support::knob("PATINA_PROPTEST_CASES", 1000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&schema(), |tables| round_trip(&tables)).unwrap();
}
