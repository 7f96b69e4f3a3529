//! The D1-ready restore file (DESIGN §12): turns a restored SQLite database — what `patina
//! restore` produces from any backup — into one SQL file that Cloudflare D1 executes
//! (`wrangler d1 execute DB --file=FILE`, or the D1 import API) to replace the backed-up tables
//! with exactly the backed-up rows, whatever the target database already holds.
//!
//! The file, in order:
//!
//! 1. `PRAGMA defer_foreign_keys=TRUE;` after one comment line; nothing else about foreign keys
//!    and no `BEGIN`/`COMMIT` (D1 runs the file in one transaction, foreign keys always on).
//! 2. Drops. The backup's triggers, views and indexes (`DROP … IF EXISTS`). Then every table in a
//!    foreign-key cycle (a self-reference is one) gets `CREATE TABLE IF NOT EXISTS` with the
//!    backup's schema, so that the next statement also works on a fresh database, and an
//!    `UPDATE` that cuts the cycle's edges in the rows already there: a nullable column is set
//!    to NULL, a NOT NULL self-reference is pointed at its own row. Then `DROP TABLE IF EXISTS`
//!    for every table: virtual tables, then ordinary tables children-first.
//! 3. Creates. Ordinary tables parents-first (foreign-key topological order, by name among
//!    equals), then their rows in the same order (all tables first: inside a cycle, SQLite
//!    cannot insert a row whose parent table does not exist yet, deferred or not — `no such
//!    table: main.b`); virtual tables, filled with ordinary INSERTs of their columns (FTS5
//!    options restored first) or, for external-content FTS, rebuilt; the `sqlite_sequence`
//!    values of the restored tables; then indexes, views, triggers (an INSTEAD OF trigger needs
//!    its view). Rows go in rowid (or primary-key) order, with their rowid when it is not
//!    already a column, in multi-row INSERTs of at most `max_statement` bytes.
//!
//! What Cloudflare's local D1 (wrangler 4.86: D1's own code on workerd) does, which shaped this:
//!
//! - A statement of 100,001 bytes fails with `statement too long: SQLITE_TOOBIG`; 100,000 pass.
//! - Foreign-key actions run as triggers, ten levels deep at most: deleting the root of an
//!   11-row `ON DELETE CASCADE` chain fails with `too many levels of trigger recursion:
//!   SQLITE_ERROR` (10 rows pass). `DROP TABLE` deletes the rows first and fails the same way;
//!   `defer_foreign_keys` defers checks, not actions, and `PRAGMA foreign_keys=OFF` is accepted
//!   but changes nothing inside D1's transaction. Hence all drops before any create (no cascade
//!   can reach a restored row), children dropped before parents (a drop then finds no children
//!   to cascade into), and cycle edges cut before dropping — after which a 50-deep chain drops.
//!   Dropping tables in a NO ACTION or RESTRICT cycle passes with deferred checks, and so does
//!   dropping a parent before its RESTRICT children (SQLite treats RESTRICT as a deferred check
//!   under `defer_foreign_keys`): the order matters for cascades, which a chain of twelve
//!   tables makes fail when dropped parents-first. A cycle of
//!   NOT NULL edges across tables cannot be cut this way: if the target holds chains deeper
//!   than ten along it, D1 refuses the file (with the error above, changing nothing).
//! - `PRAGMA writable_schema=ON`, `CREATE TEMP TABLE` and any write to `_cf_*` fail with `not
//!   authorized: SQLITE_AUTH`; `BEGIN`/`SAVEPOINT` fail with `To execute a transaction, please
//!   use the state.storage.transaction() or state.storage.transactionSync() APIs …`.
//! - When the file text holds `BEGIN TRANSACTION` anywhere — inside a string literal too —
//!   wrangler deletes the first `BEGIN TRANSACTION;` and the first `COMMIT;` from it (silently
//!   changing the data), and refuses it outright when it holds two (`Wrangler could not process
//!   the provided SQL file, as it contains several transactions.`). So values holding it are
//!   written in hex, and schema text holding it is an error.
//! - wrangler splits the file itself, on `;` outside quotes and comments, keeping `BEGIN`/`CASE`
//!   … `END` together — but it only sees a `CASE` with whitespace before it and an uppercase
//!   `END` followed by `;` or whitespace, so `CHECK (a OR CASE … END)` leaves it waiting for
//!   an `END` and it joins every following statement into one, which then fails as too long.
//!   After such a schema statement the file has `SELECT 0 AS END;` (harmless SQL) for each
//!   block left open. wrangler also strips `--` and `/* */` comments from the text it sends,
//!   so D1 stores schema SQL without its comments.
//! - `||` returns TEXT; `CAST(v AS BLOB)` of BLOB pieces joined that way gives the original
//!   bytes back, invalid UTF-8 and NUL included. `CAST(X'…' AS TEXT)` (NUL, CR, invalid UTF-8),
//!   `9e999`/`-9e999`, `-0.0`, `i64::MIN` and `(y/2^500)` subnormals are stored exactly.
//! - `DELETE FROM sqlite_sequence …` and `INSERT INTO sqlite_sequence …` are allowed; so are
//!   `CREATE VIRTUAL TABLE … USING fts5`, INSERTs into it with explicit rowids, and
//!   `INSERT INTO f(f) VALUES('rebuild')`.
//!
//! A value too large for one statement is built in a scratch table, `_patina_d1_value`: its
//! first piece inserted, the rest appended with `UPDATE … SET v = v || …`, the row then inserted
//! with `(SELECT v FROM "_patina_d1_value" WHERE k = …)` (`CAST(v AS BLOB)` for a BLOB), and the
//! scratch table dropped at the end. Built aside rather than in the row itself, the row never
//! holds a partial value: CHECK constraints (`json_valid(body)`), UNIQUE indexes, an FTS index
//! and a primary key made of the large value only ever see the complete one.
//!
//! Left as they are: target tables that are not in the backup (a target-only child of a
//! restored table loses its rows to `ON DELETE CASCADE` when the parent is dropped, as with any
//! `DROP TABLE`), and target-only triggers on restored tables (they fire on the cycle-cutting
//! `UPDATE`s before their table is dropped).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::dump::{
    push_blob, push_blob_value, push_ident, push_integer, push_real, push_text, quote_ident,
};
use crate::source::sqlite::{
    Column, is_internal, is_virtual, primary_key, schema_objects, table_columns, without_rowid,
};

/// D1's limit on one SQL statement, in bytes.
pub const D1_MAX_STATEMENT: usize = 100_000;

/// The smallest `max_statement` accepted: room for the fixed part of every generated statement
/// and a piece of a large value.
pub const MIN_STATEMENT: usize = 512;

/// What [`write_d1_file`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct D1FileStats {
    /// Statements in the file.
    pub statements: u64,
    /// Tables created (ordinary and virtual).
    pub tables: u64,
    /// Rows inserted (an FTS table rebuilt from its content table adds none).
    pub rows: u64,
    /// Bytes of the longest statement, its `;` included.
    pub largest_statement: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum D1FileError {
    #[error("open restored database {}: {source} — pass the SQLite file `patina restore` wrote", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("read {what} from {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("write d1 restore file: {0}")]
    Write(#[from] io::Error),
    #[error(
        "statement limit of {limit} bytes is too small — use at least {MIN_STATEMENT} (D1 allows {D1_MAX_STATEMENT})"
    )]
    LimitTooSmall { limit: usize },
    #[error(
        "{kind} {name}: its CREATE statement is {bytes} bytes, over the statement limit of {limit} — D1 cannot create it; shorten its definition"
    )]
    SchemaTooLong {
        kind: String,
        name: String,
        bytes: usize,
        limit: usize,
    },
    #[error(
        "table {table}: a row needs {bytes} bytes even with its TEXT and BLOB values sent in pieces, over the statement limit of {limit} — raise the limit (D1 allows {D1_MAX_STATEMENT})"
    )]
    RowTooLong {
        table: String,
        bytes: usize,
        limit: usize,
    },
    #[error(
        "{kind} {name}: its SQL contains `BEGIN TRANSACTION`, which `wrangler d1 execute --file` strips from files — reword it before restoring into D1"
    )]
    TransactionText { kind: String, name: String },
    #[error(
        "virtual table {table} is contentless (content=''): its text is not stored, so it cannot be restored — drop it from the backup or re-index it from its source"
    )]
    Contentless { table: String },
    #[error(
        "table {table}: {rows} row(s) violate its foreign key to {parent} (first rowid {first_rowid}) — D1 always enforces foreign keys and would refuse the file; fix those rows in a SQLite restore, then write the D1 file from it"
    )]
    ForeignKeyViolation {
        table: String,
        parent: String,
        rows: u64,
        first_rowid: String,
    },
}

/// Writes the D1 restore file for the SQLite database `db` into `out`; no statement is longer
/// than `max_statement` bytes (use [`D1_MAX_STATEMENT`]).
pub fn write_d1_file(
    db: &Path,
    out: &mut dyn Write,
    max_statement: usize,
) -> Result<D1FileStats, D1FileError> {
    if max_statement < MIN_STATEMENT {
        return Err(D1FileError::LimitTooSmall {
            limit: max_statement,
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(|source| D1FileError::Open {
        path: db.into(),
        source,
    })?;
    let read = |what: &str| {
        let what = what.to_string();
        move |source| D1FileError::Read {
            path: db.into(),
            what,
            source,
        }
    };
    conn.execute_batch("BEGIN").map_err(read("the schema"))?;
    let schema = Schema::read(&conn).map_err(read("the schema"))?;
    if let Some(t) = schema
        .virtuals
        .iter()
        .find(|t| matches!(t.fill, Fill::Contentless))
    {
        return Err(D1FileError::Contentless {
            table: t.name.clone(),
        });
    }
    check_foreign_keys(&conn).map_err(|e| match e {
        Checked::Sqlite(source) => read("foreign key check")(source),
        Checked::Violation(v) => v,
    })?;

    let mut w = FileWriter::new(out, max_statement, schema.scratch_name());
    w.comment("Patina D1 restore file: replaces the backed-up tables with the backed-up rows.")?;
    w.statement(b"PRAGMA defer_foreign_keys=TRUE")?;

    // Drops: triggers, views and indexes of the backup; cycle edges cut; tables children-first.
    for (kind, objects) in [
        ("TRIGGER", &schema.triggers),
        ("VIEW", &schema.views),
        ("INDEX", &schema.indexes),
    ] {
        for o in objects {
            w.statement(&drop_statement(kind, &o.name))?;
        }
    }
    // Every table of a cycle exists before the first cut: an UPDATE of a foreign key column
    // needs the parent table (`no such table: main.b`).
    let cycles = || schema.order.iter().map(|&i| &schema.tables[i]);
    for t in cycles().filter(|t| !t.cut.is_empty()) {
        w.schema("table", &t.name, &create_if_not_exists(&t.sql))?;
    }
    for t in cycles() {
        for cut in &t.cut {
            w.checked("table", &t.name, cut.as_bytes())?;
        }
    }
    for t in &schema.virtuals {
        w.statement(&drop_statement("TABLE", &t.name))?;
    }
    for &i in schema.order.iter().rev() {
        w.statement(&drop_statement("TABLE", &schema.tables[i].name))?;
    }

    // Creates: tables parents-first, then their rows (see the module docs), virtual tables,
    // sequences, the rest.
    for &i in &schema.order {
        let t = &schema.tables[i];
        w.schema("table", &t.name, &t.sql)?;
        w.stats.tables += 1;
    }
    for &i in &schema.order {
        let t = &schema.tables[i];
        w.rows(&conn, t).map_err(|e| e.or_read(db, &t.name))?;
    }
    for t in &schema.virtuals {
        w.schema("virtual table", &t.name, &t.sql)?;
        w.stats.tables += 1;
        // FTS5's special INSERT: `INSERT INTO f (f, rank) VALUES ('pgsz', 4072)`.
        let mut command = b"INSERT INTO ".to_vec();
        push_ident(&mut command, &t.name);
        command.extend_from_slice(b" (");
        push_ident(&mut command, &t.name);
        for (k, v) in &t.fts5_config {
            let mut s = command.clone();
            s.extend_from_slice(b", rank) VALUES (");
            push_d1_value(&mut s, ValueRef::Text(k.as_bytes()));
            s.extend_from_slice(b", ");
            push_d1_value(&mut s, v.into());
            s.push(b')');
            w.checked("virtual table", &t.name, &s)?;
        }
        match t.fill {
            Fill::Rows => w.rows(&conn, t).map_err(|e| e.or_read(db, &t.name))?,
            Fill::Rebuild => {
                command.extend_from_slice(b") VALUES ('rebuild')");
                w.checked("virtual table", &t.name, &command)?;
            }
            Fill::Contentless => unreachable!("refused before writing"),
        }
    }
    w.sequences(&conn, &schema)
        .map_err(|e| e.or_read(db, "sqlite_sequence"))?;
    w.drop_scratch()?;
    for (kind, objects) in [
        ("index", &schema.indexes),
        ("view", &schema.views),
        ("trigger", &schema.triggers),
    ] {
        for o in objects {
            w.schema(kind, &o.name, &o.sql)?;
        }
    }
    conn.execute_batch("COMMIT").map_err(read("the database"))?;
    w.finish()
}

/// `DROP <KIND> IF EXISTS "name"`.
fn drop_statement(kind: &str, name: &str) -> Vec<u8> {
    let mut s = format!("DROP {kind} IF EXISTS ").into_bytes();
    push_ident(&mut s, name);
    s
}

/// The stored `CREATE TABLE …` text (SQLite normalises its first two words) as `CREATE TABLE IF
/// NOT EXISTS …`.
fn create_if_not_exists(sql: &str) -> String {
    const PREFIX: &str = "CREATE TABLE ";
    match sql.get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => {
            format!("CREATE TABLE IF NOT EXISTS {}", &sql[PREFIX.len()..])
        }
        _ => sql.to_string(),
    }
}

/// What the database holds, in the order the file needs it.
struct Schema {
    /// Ordinary tables.
    tables: Vec<Table>,
    /// Indexes into `tables`, parents first.
    order: Vec<usize>,
    virtuals: Vec<Table>,
    indexes: Vec<Object>,
    views: Vec<Object>,
    triggers: Vec<Object>,
    /// The backup has a `sqlite_sequence` table.
    has_sequence: bool,
}

/// An index, view or trigger.
struct Object {
    name: String,
    sql: String,
}

struct Table {
    name: String,
    sql: String,
    /// `INSERT INTO "t" (…) VALUES`: the rowid first when it is not a column.
    insert: Vec<u8>,
    /// The same columns, in row order.
    select: String,
    fill: Fill,
    /// FTS5 options set after creation (`rank`, `pgsz`, `automerge`, …): `<name>_config`.
    fts5_config: Vec<(String, rusqlite::types::Value)>,
    /// Foreign keys (ordinary tables).
    foreign_keys: Vec<ForeignKey>,
    /// `UPDATE`s cutting this table's foreign-key cycle edges in existing rows.
    cut: Vec<String>,
    autoincrement: bool,
}

enum Fill {
    /// INSERT the rows.
    Rows,
    /// External-content FTS: rebuild the index from the content table.
    Rebuild,
    /// Contentless FTS (`content=''`): the text is nowhere, so it cannot be restored.
    Contentless,
}

struct ForeignKey {
    parent: String,
    /// Child columns, with the parent columns they reference (empty: the parent's key).
    from: Vec<String>,
    to: Vec<Option<String>>,
}

impl Schema {
    fn read(conn: &Connection) -> rusqlite::Result<Schema> {
        let objects = schema_objects(conn, &[])?;
        let shadows: BTreeSet<String> = conn
            .prepare(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'",
            )?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        let has_sequence = conn.query_row(
            "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )?;
        let mut schema = Schema {
            tables: Vec::new(),
            order: Vec::new(),
            virtuals: Vec::new(),
            indexes: Vec::new(),
            views: Vec::new(),
            triggers: Vec::new(),
            has_sequence,
        };
        for o in objects {
            let sql = o.sql.unwrap_or_default();
            match o.kind.as_str() {
                "table" if shadows.contains(&o.name) => {}
                "table" if is_virtual(&sql) => schema
                    .virtuals
                    .push(Table::read_virtual(conn, o.name, sql)?),
                "table" => schema.tables.push(Table::read(conn, o.name, sql)?),
                "index" => schema.indexes.push(Object { name: o.name, sql }),
                "view" => schema.views.push(Object { name: o.name, sql }),
                "trigger" => schema.triggers.push(Object { name: o.name, sql }),
                _ => {}
            }
        }
        let (order, cyclic) = order_tables(&schema.tables);
        schema.order = order;
        for (child, fk) in cyclic {
            let cut = cut_statement(conn, &schema.tables[child], fk)?;
            schema.tables[child].cut.extend(cut);
        }
        Ok(schema)
    }

    /// A name for the scratch table of large values that no restored table has.
    fn scratch_name(&self) -> String {
        let taken = |n: &str| {
            self.tables
                .iter()
                .chain(&self.virtuals)
                .any(|t| t.name.eq_ignore_ascii_case(n))
        };
        let mut name = "_patina_d1_value".to_string();
        let mut n = 1;
        while taken(&name) {
            n += 1;
            name = format!("_patina_d1_value_{n}");
        }
        name
    }
}

/// `INSERT INTO "t" (rowid,"a","b") VALUES` and `SELECT rowid,"a","b" FROM main."t" ORDER BY
/// …`, the rowid (under the name given) as a bare word: quoted, it would read as a column name.
fn insert_and_select(
    table: &str,
    rowid: Option<&str>,
    columns: &[String],
    order_by: &str,
) -> (Vec<u8>, String) {
    let mut insert = b"INSERT INTO ".to_vec();
    push_ident(&mut insert, table);
    insert.extend_from_slice(b" (");
    let mut select = String::from("SELECT ");
    if let Some(r) = rowid {
        insert.extend_from_slice(r.as_bytes());
        select.push_str(r);
    }
    for (i, c) in columns.iter().enumerate() {
        if i > 0 || rowid.is_some() {
            insert.push(b',');
            select.push(',');
        }
        push_ident(&mut insert, c);
        select.push_str(&quote_ident(c));
    }
    insert.extend_from_slice(b") VALUES");
    select.push_str(" FROM main.");
    select.push_str(&quote_ident(table));
    if !order_by.is_empty() {
        select.push_str(" ORDER BY ");
        select.push_str(order_by);
    }
    (insert, select)
}

impl Table {
    fn read(conn: &Connection, name: String, sql: String) -> rusqlite::Result<Table> {
        let cols = table_columns(conn, &name)?;
        let without_rowid = without_rowid(conn, &name)?;
        let inserted: Vec<String> = cols
            .iter()
            .filter(|c| !c.is_generated())
            .map(|c| c.name.clone())
            .collect();
        let mut explicit_rowid = None;
        let order_by = if without_rowid {
            let pk = primary_key(&cols);
            pk.iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            // The rowid under a name no column shadows, written explicitly unless a column
            // (INTEGER PRIMARY KEY) already is the rowid.
            let rowid = ["rowid", "_rowid_", "oid"]
                .into_iter()
                .find(|alias| !cols.iter().any(|c| c.name.eq_ignore_ascii_case(alias)));
            let pk: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
            let alias = match pk.as_slice() {
                [c] if c.decl.eq_ignore_ascii_case("INTEGER") => {
                    is_rowid_alias(conn, &name, &c.name)?
                }
                _ => false,
            };
            if !alias {
                explicit_rowid = rowid;
            }
            rowid.unwrap_or_default().to_string() // none: a plain scan is rowid order
        };
        let (insert, select) = insert_and_select(&name, explicit_rowid, &inserted, &order_by);
        let mut foreign_keys: Vec<ForeignKey> = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1, 'main') ORDER BY id, seq",
            )?;
            let mut rows = stmt.query([&name])?;
            let mut last_id = None;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                if last_id != Some(id) {
                    foreign_keys.push(ForeignKey {
                        parent: r.get(1)?,
                        from: Vec::new(),
                        to: Vec::new(),
                    });
                    last_id = Some(id);
                }
                let fk = foreign_keys.last_mut().expect("pushed above");
                fk.from.push(r.get(2)?);
                fk.to.push(r.get(3)?);
            }
        }
        let autoincrement = sql.to_ascii_uppercase().contains("AUTOINCREMENT");
        Ok(Table {
            name,
            sql,
            insert,
            select,
            fill: Fill::Rows,
            fts5_config: Vec::new(),
            foreign_keys,
            cut: Vec::new(),
            autoincrement,
        })
    }

    fn read_virtual(conn: &Connection, name: String, sql: String) -> rusqlite::Result<Table> {
        let (module, args) = virtual_module(&sql);
        let fts = matches!(module.as_str(), "fts3" | "fts4" | "fts5");
        let content = args.iter().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("content")
                .then(|| unquote(v.trim()))
        });
        let fill = match content {
            Some(c) if fts && c.is_empty() => Fill::Contentless,
            Some(_) if fts => Fill::Rebuild,
            _ => Fill::Rows,
        };
        let fts5_config = if module == "fts5" {
            fts5_config(conn, &name)?
        } else {
            Vec::new()
        };
        // Hidden columns of a virtual table (FTS5's `rank` and table-named column) are not
        // stored; FTS rows keep their rowid.
        let inserted: Vec<String> = table_columns(conn, &name)?
            .into_iter()
            .filter(|c| c.hidden == 0)
            .map(|c| c.name)
            .collect();
        let (rowid, order_by) = if fts {
            (Some("rowid"), "rowid")
        } else {
            (None, "")
        };
        let (insert, select) = insert_and_select(&name, rowid, &inserted, order_by);
        Ok(Table {
            name,
            sql,
            insert,
            select,
            fill,
            fts5_config,
            foreign_keys: Vec::new(),
            cut: Vec::new(),
            autoincrement: false,
        })
    }
}

/// Whether `column` of `table` is the rowid itself (an INTEGER PRIMARY KEY): SQLite's own plan
/// for reading it says so (`PRIMARY KEY DESC` columns, for one, are not).
fn is_rowid_alias(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let sql = format!(
        "EXPLAIN SELECT {} FROM main.{}",
        quote_ident(column),
        quote_ident(table)
    );
    let mut stmt = conn.prepare(&sql)?;
    let ops = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ops.iter().any(|op| op == "Rowid") && !ops.iter().any(|op| op == "Column"))
}

/// The options an FTS5 table was given after creation (`rank`, `pgsz`, `automerge`, …), as
/// stored in its `<name>_config` shadow table.
fn fts5_config(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Vec<(String, rusqlite::types::Value)>> {
    let sql = format!(
        "SELECT k, v FROM main.{} WHERE k <> 'version' ORDER BY k",
        quote_ident(&format!("{table}_config"))
    );
    conn.prepare(&sql)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// The module name (lowercase) and the arguments of `CREATE VIRTUAL TABLE … USING m(a, b)`.
fn virtual_module(sql: &str) -> (String, Vec<String>) {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut quote = None;
    let mut using = None;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, b'\'' | b'"' | b'`') => quote = Some(c),
            None if c == b'[' => quote = Some(b']'),
            None if bytes[i..].len() >= 5
                && bytes[i..i + 5].eq_ignore_ascii_case(b"USING")
                && (i == 0 || !is_word(bytes[i - 1]))
                && bytes.get(i + 5).is_none_or(|&n| !is_word(n)) =>
            {
                using = Some(i + 5);
                break;
            }
            None => {}
        }
        i += 1;
    }
    let Some(start) = using else {
        return (String::new(), Vec::new());
    };
    let rest = sql[start..].trim_start();
    let end = rest.find('(').unwrap_or(rest.len());
    let module = unquote(rest[..end].trim()).to_ascii_lowercase();
    let mut args = Vec::new();
    if end < rest.len() {
        let inner = rest[end + 1..].trim_end();
        let inner = inner.strip_suffix(')').unwrap_or(inner);
        let mut depth = 0;
        let mut quote = None;
        let mut current = String::new();
        for ch in inner.chars() {
            match quote {
                Some(q) if ch == q => quote = None,
                Some(_) => {}
                None => match ch {
                    '\'' | '"' | '`' => quote = Some(ch),
                    '[' => quote = Some(']'),
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        args.push(current.trim().to_string());
                        current.clear();
                        continue;
                    }
                    _ => {}
                },
            }
            current.push(ch);
        }
        if !current.trim().is_empty() {
            args.push(current.trim().to_string());
        }
    }
    (module, args)
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// `'x'`, `"x"`, `` `x` `` or `[x]` without its quotes (doubled quotes undoubled).
fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2 {
        let (first, last) = (b[0], b[b.len() - 1]);
        if first == b'[' && last == b']' {
            return s[1..s.len() - 1].to_string();
        }
        if matches!(first, b'\'' | b'"' | b'`') && first == last {
            let q = first as char;
            return s[1..s.len() - 1].replace(&format!("{q}{q}"), &q.to_string());
        }
    }
    s.to_string()
}

/// Ordinary tables parents-first (Kahn's algorithm over the strongly connected components of
/// the foreign-key graph, the component with the smallest table name first among those ready),
/// and the foreign keys whose child and parent are in the same component: the cycle edges.
fn order_tables(tables: &[Table]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let index: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.to_lowercase(), i))
        .collect();
    // parents[i]: tables that table i references.
    let parents: Vec<BTreeSet<usize>> = tables
        .iter()
        .map(|t| {
            t.foreign_keys
                .iter()
                .filter_map(|fk| index.get(&fk.parent.to_lowercase()).copied())
                .collect()
        })
        .collect();
    let component = strongly_connected(&parents);
    let count = component.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, &c) in component.iter().enumerate() {
        members[c].push(i);
    }
    for m in &mut members {
        m.sort_by(|&a, &b| tables[a].name.cmp(&tables[b].name));
    }
    let mut waiting_on: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
    let mut children: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
    for (i, ps) in parents.iter().enumerate() {
        for &p in ps {
            let (c, pc) = (component[i], component[p]);
            if c != pc {
                waiting_on[c].insert(pc);
                children[pc].insert(c);
            }
        }
    }
    let mut ready: BTreeSet<(&str, usize)> = (0..count)
        .filter(|&c| waiting_on[c].is_empty())
        .map(|c| (tables[members[c][0]].name.as_str(), c))
        .collect();
    let mut order: Vec<usize> = Vec::with_capacity(tables.len());
    while let Some((_, c)) = ready.pop_first() {
        order.extend(&members[c]);
        for &child in &children[c] {
            waiting_on[child].remove(&c);
            if waiting_on[child].is_empty() {
                ready.insert((tables[members[child][0]].name.as_str(), child));
            }
        }
    }
    let mut cyclic = Vec::new();
    for &i in &order {
        for (k, fk) in tables[i].foreign_keys.iter().enumerate() {
            if let Some(&p) = index.get(&fk.parent.to_lowercase())
                && component[p] == component[i]
            {
                cyclic.push((i, k));
            }
        }
    }
    (order, cyclic)
}

/// Tarjan's strongly connected components of the graph `edges[node] = successors`; returns the
/// component of each node.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<usize> {
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        component: Vec<usize>,
        components: usize,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                s.component[w] = s.components;
                if w == v {
                    break;
                }
            }
            s.components += 1;
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        component: vec![0; n],
        components: 0,
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.component
}

/// The `UPDATE` that cuts cycle edge `fk` of `table` in the target's existing rows: nullable
/// child columns set to NULL (one NULL column switches a foreign key off), or a NOT NULL
/// self-reference pointed at its own row. `None` when neither is possible (a NOT NULL edge to
/// another table, or a key column) or needed (a row can only reference itself).
fn cut_statement(conn: &Connection, table: &Table, fk: usize) -> rusqlite::Result<Option<String>> {
    let fk = &table.foreign_keys[fk];
    let cols = table_columns(conn, &table.name)?;
    let col = |name: &str| cols.iter().find(|c| c.name.eq_ignore_ascii_case(name));
    let t = quote_ident(&table.name);
    let nullable: Vec<&String> = fk
        .from
        .iter()
        .filter(|f| col(f).is_some_and(|c| !c.notnull && c.pk == 0))
        .collect();
    if !nullable.is_empty() {
        let set = nullable
            .iter()
            .map(|c| format!("{} = NULL", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let cond = nullable
            .iter()
            .map(|c| format!("{} IS NOT NULL", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" OR ");
        return Ok(Some(format!("UPDATE {t} SET {set} WHERE {cond}")));
    }
    if !fk.parent.eq_ignore_ascii_case(&table.name) {
        return Ok(None);
    }
    // The parent columns: named, or the table's primary key (the rowid when it has none).
    let to: Vec<String> = if fk.to.iter().all(Option::is_some) {
        fk.to.iter().flatten().cloned().collect()
    } else {
        let pk = primary_key(&cols);
        if pk.is_empty() {
            vec!["rowid".into()]
        } else {
            pk.iter().map(|c| c.name.clone()).collect()
        }
    };
    let pairs: Vec<(&String, &String)> = fk
        .from
        .iter()
        .zip(&to)
        .filter(|(f, t)| !f.eq_ignore_ascii_case(t))
        .collect();
    if to.len() != fk.from.len() || pairs.is_empty() {
        return Ok(None);
    }
    let set = pairs
        .iter()
        .map(|(f, t)| format!("{} = {}", quote_ident(f), quote_ident(t)))
        .collect::<Vec<_>>()
        .join(", ");
    let cond = pairs
        .iter()
        .map(|(f, t)| format!("{} IS NOT {}", quote_ident(f), quote_ident(t)))
        .collect::<Vec<_>>()
        .join(" OR ");
    Ok(Some(format!("UPDATE {t} SET {set} WHERE {cond}")))
}

enum Checked {
    Sqlite(rusqlite::Error),
    Violation(D1FileError),
}

/// D1 checks foreign keys when the file's transaction commits and refuses all of it on a
/// violation (a SQLite source may hold them: SQLite leaves foreign keys off by default), so they
/// are reported here, naming the table.
fn check_foreign_keys(conn: &Connection) -> Result<(), Checked> {
    let mut stmt = conn
        .prepare("SELECT \"table\", parent, rowid FROM pragma_foreign_key_check ORDER BY 1, 2")
        .map_err(Checked::Sqlite)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(Checked::Sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Checked::Sqlite)?;
    let Some((table, parent, rowid)) = rows.iter().find(|(t, _, _)| !is_internal(t)) else {
        return Ok(());
    };
    let count = rows
        .iter()
        .filter(|(t, p, _)| t == table && p == parent)
        .count();
    Err(Checked::Violation(D1FileError::ForeignKeyViolation {
        table: table.clone(),
        parent: parent.clone(),
        rows: count as u64,
        first_rowid: rowid.map_or("none (WITHOUT ROWID)".into(), |r| r.to_string()),
    }))
}

/// Text every value holding it is written in hex for (see the module docs).
const WRANGLER_TRANSACTION: &[u8] = b"BEGIN TRANSACTION";

fn has_transaction_text(b: &[u8]) -> bool {
    memchr::memmem::find(b, WRANGLER_TRANSACTION).is_some()
}

/// The SQL literal of `v` for D1: [`crate::dump`]'s exact forms, in hex when the bytes hold
/// `BEGIN TRANSACTION`.
/// A REAL exactly as D1 will read it. D1's SQLite (workerd) misreads about a fifth of doubles
/// far from 1 whatever decimal form they are written in — 17 digits or the shortest — while
/// every double with a binary exponent within ±50 reads back exactly (measured with wrangler's
/// local D1 on 3,600 values). Outside that range the value is written as its exact binary
/// parts, `(m * pow(2, e))` with an odd integer `m` below 2^53: both factors are exact and so
/// is their product.
fn push_d1_real(b: &mut Vec<u8>, r: f64) {
    if !r.is_finite() || r == 0.0 {
        return push_real(b, r);
    }
    let bits = r.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let (mut mantissa, mut e) = if exponent == 0 {
        (bits & ((1 << 52) - 1), -1074) // subnormal
    } else {
        ((bits & ((1 << 52) - 1)) | (1 << 52), exponent - 1075)
    };
    // |r| = mantissa * 2^e with 2^52 <= mantissa < 2^53 for normal numbers.
    if (-50 - 52..=50 - 52).contains(&e) && exponent != 0 {
        return push_real(b, r);
    }
    let shift = mantissa.trailing_zeros();
    mantissa >>= shift;
    e += i64::from(shift);
    b.push(b'(');
    if r < 0.0 {
        b.push(b'-');
    }
    b.extend_from_slice(mantissa.to_string().as_bytes());
    b.extend_from_slice(b" * pow(2, ");
    b.extend_from_slice(e.to_string().as_bytes());
    b.extend_from_slice(b"))");
}

fn push_d1_value(b: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => b.extend_from_slice(b"NULL"),
        ValueRef::Integer(i) => push_integer(b, i),
        ValueRef::Real(r) => push_d1_real(b, r),
        ValueRef::Text(t) if has_transaction_text(t) => {
            b.extend_from_slice(b"CAST(");
            push_blob(b, t);
            b.extend_from_slice(b" AS TEXT)");
        }
        ValueRef::Text(t) => push_text(b, t),
        ValueRef::Blob(x) if has_transaction_text(x) => push_blob(b, x),
        ValueRef::Blob(x) => push_blob_value(b, x),
    }
}

/// How the pieces of one large value are written.
enum Pieces<'a> {
    /// `'…'`: UTF-8 without CR, NUL or `BEGIN TRANSACTION`, cut between characters.
    Text(&'a str),
    /// `CAST(X'…' AS TEXT)`.
    TextHex(&'a [u8]),
    /// `X'…'`, read back with `CAST(v AS BLOB)`.
    Blob(&'a [u8]),
}

impl<'a> Pieces<'a> {
    fn new(v: ValueRef<'a>) -> Option<Pieces<'a>> {
        match v {
            ValueRef::Text(t) => Some(match std::str::from_utf8(t) {
                Ok(s) if memchr::memchr2(b'\r', 0, t).is_none() && !has_transaction_text(t) => {
                    Pieces::Text(s)
                }
                _ => Pieces::TextHex(t),
            }),
            ValueRef::Blob(x) => Some(Pieces::Blob(x)),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Pieces::Text(s) => s.is_empty(),
            Pieces::TextHex(b) | Pieces::Blob(b) => b.is_empty(),
        }
    }

    /// Appends the literal of the longest next piece that fits in `budget` bytes (at least one
    /// character or byte) and moves past it.
    fn push_next(&mut self, b: &mut Vec<u8>, budget: usize) {
        match self {
            Pieces::Text(s) => {
                let room = budget.saturating_sub(2);
                let mut used = 0;
                let mut end = 0;
                for (i, c) in s.char_indices() {
                    let cost = c.len_utf8() + usize::from(c == '\'');
                    if used + cost > room && end > 0 {
                        break;
                    }
                    used += cost;
                    end = i + c.len_utf8();
                }
                push_text(b, &s.as_bytes()[..end]);
                *s = &s[end..];
            }
            Pieces::TextHex(x) => {
                let n = (budget.saturating_sub(17) / 2).clamp(1, x.len());
                b.extend_from_slice(b"CAST(");
                push_blob(b, &x[..n]);
                b.extend_from_slice(b" AS TEXT)");
                *x = &x[n..];
            }
            Pieces::Blob(x) => {
                let n = (budget.saturating_sub(3) / 2).clamp(1, x.len());
                push_blob(b, &x[..n]);
                *x = &x[n..];
            }
        }
    }
}

/// Hand the buffer to the output once it holds this much.
const FLUSH_AT: usize = 256 * 1024;

/// Writes statements, each at most `max` bytes with its `;`, batching rows into multi-row
/// INSERTs.
struct FileWriter<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
    max: usize,
    stats: D1FileStats,
    /// The open multi-row INSERT (without its `;`), empty when none is open.
    batch: Vec<u8>,
    /// The current row as `(…)`, and where each value's literal lies in it.
    row: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// The scratch table for large values (quoted), and whether the file created it.
    scratch: String,
    scratch_created: bool,
}

/// An error while writing rows: reading the database or something [`D1FileError`] names.
enum RowError {
    Sqlite(rusqlite::Error),
    File(D1FileError),
}

impl From<rusqlite::Error> for RowError {
    fn from(e: rusqlite::Error) -> Self {
        RowError::Sqlite(e)
    }
}

impl From<D1FileError> for RowError {
    fn from(e: D1FileError) -> Self {
        RowError::File(e)
    }
}

impl From<io::Error> for RowError {
    fn from(e: io::Error) -> Self {
        RowError::File(D1FileError::Write(e))
    }
}

impl RowError {
    fn or_read(self, db: &Path, what: &str) -> D1FileError {
        match self {
            RowError::File(e) => e,
            RowError::Sqlite(source) => D1FileError::Read {
                path: db.into(),
                what: format!("table {what}"),
                source,
            },
        }
    }
}

impl<'w> FileWriter<'w> {
    fn new(out: &'w mut dyn Write, max: usize, scratch: String) -> Self {
        FileWriter {
            out,
            buf: Vec::with_capacity(FLUSH_AT + max),
            max,
            stats: D1FileStats::default(),
            batch: Vec::new(),
            row: Vec::new(),
            spans: Vec::new(),
            scratch: quote_ident(&scratch),
            scratch_created: false,
        }
    }

    fn comment(&mut self, text: &str) -> io::Result<()> {
        self.buf.extend_from_slice(b"-- ");
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(b'\n');
        Ok(())
    }

    /// One statement built to fit (`sql` without its `;`).
    fn statement(&mut self, sql: &[u8]) -> io::Result<()> {
        let len = sql.len() + 1;
        debug_assert!(
            len <= self.max,
            "statement of {len} bytes over {}",
            self.max
        );
        self.buf.extend_from_slice(sql);
        self.buf.extend_from_slice(b";\n");
        self.stats.statements += 1;
        self.stats.largest_statement = self.stats.largest_statement.max(len);
        if self.buf.len() >= FLUSH_AT {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Stored schema text, checked against the limit and for what wrangler would break; then
    /// a `SELECT 0 AS END;` for each `BEGIN`/`CASE` block wrangler's splitter would leave open.
    fn schema(&mut self, kind: &str, name: &str, sql: &str) -> Result<(), D1FileError> {
        self.checked(kind, name, sql.as_bytes())?;
        let (_, open) = wrangler_split(&format!("{sql};"));
        for _ in 0..open {
            self.statement(b"SELECT 0 AS END")?;
        }
        Ok(())
    }

    /// A statement holding schema text or names: checked against the limit and for text
    /// wrangler would strip.
    fn checked(&mut self, kind: &str, name: &str, sql: &[u8]) -> Result<(), D1FileError> {
        if sql.len() + 1 > self.max {
            return Err(D1FileError::SchemaTooLong {
                kind: kind.into(),
                name: name.into(),
                bytes: sql.len() + 1,
                limit: self.max,
            });
        }
        if has_transaction_text(sql) {
            return Err(D1FileError::TransactionText {
                kind: kind.into(),
                name: name.into(),
            });
        }
        Ok(self.statement(sql)?)
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.statement(&batch)?;
            self.batch = batch;
            self.batch.clear();
        }
        Ok(())
    }

    /// All rows of `t`.
    fn rows(&mut self, conn: &Connection, t: &Table) -> Result<(), RowError> {
        let mut stmt = conn.prepare(&t.select)?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let values = (0..n)
                .map(|i| r.get_ref(i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            self.row(&t.name, &t.insert, &values)?;
            self.stats.rows += 1;
        }
        self.flush_batch()?;
        Ok(())
    }

    /// One row into the open batch, a new batch, or — too large for one statement — in
    /// pieces through the scratch table.
    fn row(&mut self, table: &str, insert: &[u8], values: &[ValueRef<'_>]) -> Result<(), RowError> {
        self.row.clear();
        self.spans.clear();
        self.row.push(b'(');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.row.push(b',');
            }
            let start = self.row.len();
            push_d1_value(&mut self.row, *v);
            self.spans.push((start, self.row.len()));
        }
        self.row.push(b')');
        let alone = insert.len() + 1 + self.row.len() + 1;
        if alone <= self.max {
            if !self.batch.is_empty() && self.batch.len() + 2 + self.row.len() < self.max {
                self.batch.extend_from_slice(b",\n");
            } else {
                self.flush_batch()?;
                self.batch.extend_from_slice(insert);
                self.batch.push(b'\n');
            }
            self.batch.extend_from_slice(&self.row);
            return Ok(());
        }
        self.flush_batch()?;
        self.split_row(table, insert, values, alone)
    }

    /// `(SELECT v FROM "<scratch>" WHERE k = <key>)`, with `CAST(v AS BLOB)` for a BLOB.
    fn placeholder(&self, key: usize, blob: bool) -> String {
        let v = if blob { "CAST(v AS BLOB)" } else { "v" };
        format!("(SELECT {v} FROM {} WHERE k = {key})", self.scratch)
    }

    fn split_row(
        &mut self,
        table: &str,
        insert: &[u8],
        values: &[ValueRef<'_>],
        mut total: usize,
    ) -> Result<(), RowError> {
        let len = |i: usize| self.spans[i].1 - self.spans[i].0;
        let mut largest: Vec<usize> = (0..values.len())
            .filter(|&i| matches!(values[i], ValueRef::Text(_) | ValueRef::Blob(_)))
            .collect();
        largest.sort_by_key(|&i| std::cmp::Reverse(len(i)));
        let mut aside = vec![false; values.len()];
        for &i in &largest {
            if total <= self.max {
                break;
            }
            let placeholder = self
                .placeholder(i + 1, matches!(values[i], ValueRef::Blob(_)))
                .len();
            if placeholder < len(i) {
                total = total - len(i) + placeholder;
                aside[i] = true;
            }
        }
        if total > self.max {
            return Err(D1FileError::RowTooLong {
                table: table.into(),
                bytes: total,
                limit: self.max,
            }
            .into());
        }
        if !self.scratch_created {
            let s = format!("DROP TABLE IF EXISTS {}", self.scratch);
            self.statement(s.as_bytes())?;
            let create = format!("CREATE TABLE {} (k INTEGER PRIMARY KEY, v)", self.scratch);
            self.statement(create.as_bytes())?;
            self.scratch_created = true;
        }
        let mut s = Vec::with_capacity(self.max);
        for (i, v) in values.iter().enumerate() {
            if !aside[i] {
                continue;
            }
            let mut pieces = Pieces::new(*v).expect("only TEXT and BLOB values are set aside");
            let key = i + 1;
            let first = (
                format!("INSERT INTO {} (k, v) VALUES ({key}, ", self.scratch),
                ")".to_string(),
            );
            let more = (
                format!("UPDATE {} SET v = v || ", self.scratch),
                format!(" WHERE k = {key}"),
            );
            let mut next = &first;
            loop {
                s.clear();
                s.extend_from_slice(next.0.as_bytes());
                pieces.push_next(&mut s, self.max - 1 - next.0.len() - next.1.len());
                s.extend_from_slice(next.1.as_bytes());
                self.statement(&s)?;
                next = &more;
                if pieces.is_empty() {
                    break;
                }
            }
        }
        s.clear();
        s.extend_from_slice(insert);
        s.extend_from_slice(b"\n(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                s.push(b',');
            }
            if aside[i] {
                let p = self.placeholder(i + 1, matches!(v, ValueRef::Blob(_)));
                s.extend_from_slice(p.as_bytes());
            } else {
                let (a, b) = self.spans[i];
                s.extend_from_slice(&self.row[a..b]);
            }
        }
        s.push(b')');
        self.statement(&s)?;
        self.statement(format!("DELETE FROM {}", self.scratch).as_bytes())?;
        Ok(())
    }

    /// The backup's `sqlite_sequence` values of the restored AUTOINCREMENT tables, replacing
    /// those their inserts left.
    fn sequences(&mut self, conn: &Connection, schema: &Schema) -> Result<(), RowError> {
        let restored: Vec<&Table> = schema
            .order
            .iter()
            .map(|&i| &schema.tables[i])
            .filter(|t| t.autoincrement)
            .collect();
        if !schema.has_sequence || restored.is_empty() {
            return Ok(());
        }
        // As many names per DELETE as fit (a name is shorter than its CREATE TABLE).
        let mut s = Vec::new();
        for t in &restored {
            let mut name = Vec::new();
            push_d1_value(&mut name, ValueRef::Text(t.name.as_bytes()));
            if !s.is_empty() && s.len() + 1 + name.len() + 2 > self.max {
                s.push(b')');
                self.statement(&s)?;
                s.clear();
            }
            if s.is_empty() {
                s.extend_from_slice(b"DELETE FROM sqlite_sequence WHERE name IN (");
            } else {
                s.push(b',');
            }
            s.extend_from_slice(&name);
        }
        s.push(b')');
        self.statement(&s)?;
        let mut stmt = conn.prepare("SELECT name, seq FROM main.sqlite_sequence ORDER BY name")?;
        let mut rows = stmt.query([])?;
        let insert = b"INSERT INTO sqlite_sequence (name, seq) VALUES";
        while let Some(r) = rows.next()? {
            let name = r.get_ref(0)?;
            let is_restored = matches!(name, ValueRef::Text(n)
                if restored.iter().any(|t| t.name.as_bytes() == n));
            if is_restored {
                let seq = r.get_ref(1)?;
                self.row("sqlite_sequence", insert, &[name, seq])?;
            }
        }
        self.flush_batch()?;
        Ok(())
    }

    fn drop_scratch(&mut self) -> io::Result<()> {
        if self.scratch_created {
            let s = format!("DROP TABLE {}", self.scratch);
            self.statement(s.as_bytes())?;
        }
        Ok(())
    }

    fn finish(self) -> Result<D1FileStats, D1FileError> {
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.stats)
    }
}

/// How `wrangler d1 execute --file` splits a file into statements (a port of wrangler 4.86's
/// `splitSqlIntoStatements`), and how many `BEGIN`/`CASE` blocks it leaves open at the end.
pub(crate) fn wrangler_split(sql: &str) -> (Vec<String>, usize) {
    fn ends_ws_word(s: &str, word: &str, ignore_case: bool) -> bool {
        // `\s(WORD)` at the end of `s`.
        let Some(head) = s.len().checked_sub(word.len()) else {
            return false;
        };
        let Some(tail) = s.get(head..) else {
            return false;
        };
        let matches = if ignore_case {
            tail.eq_ignore_ascii_case(word)
        } else {
            tail == word
        };
        matches
            && s[..head]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace)
    }
    // /\s(BEGIN|CASE)\s$/i
    let is_start = |s: &str| {
        let Some(last) = s.chars().next_back() else {
            return false;
        };
        let body = &s[..s.len() - last.len_utf8()];
        last.is_whitespace()
            && (ends_ws_word(body, "BEGIN", true) || ends_ws_word(body, "CASE", true))
    };
    // /\sEND[;\s]$/ on the statement so far followed by `next`.
    let is_end = |s: &str, next: char| {
        (next == ';' || next.is_whitespace()) && ends_ws_word(s, "END", false)
    };
    let chars: Vec<char> = sql.chars().collect();
    let mut at = 0;
    // consumeUntilMarker: everything up to and including `marker` (or the rest).
    let until = |at: &mut usize, marker: &str| -> String {
        let mut s = String::new();
        while *at < chars.len() {
            s.push(chars[*at]);
            *at += 1;
            if s.ends_with(marker) {
                break;
            }
        }
        s
    };
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut open = 0usize;
    while at < chars.len() {
        let c = chars[at];
        at += 1;
        if open > 0 && is_end(&current, c) {
            open -= 1;
        }
        match c {
            '\'' | '"' | '`' => {
                current.push(c);
                let rest = until(&mut at, &c.to_string());
                current.push_str(&rest);
            }
            '$' => {
                // consumeWhile(isDollarQuoteIdentifier): identifier characters, plus the one
                // that ends them.
                let mut quote = String::from("$");
                while at < chars.len() {
                    let ch = chars[at];
                    at += 1;
                    quote.push(ch);
                    let ident = ch != '$'
                        && (ch.is_ascii_digit()
                            || ch == '_'
                            || ch.to_lowercase().ne(ch.to_uppercase()));
                    if !ident {
                        break;
                    }
                }
                current.push_str(&quote);
                if quote.ends_with('$') {
                    let rest = until(&mut at, &quote);
                    current.push_str(&rest);
                }
            }
            '-' if chars.get(at) == Some(&'-') => {
                at += 1;
                until(&mut at, "\n");
                current.push('\n');
            }
            '/' if chars.get(at) == Some(&'*') => {
                at += 1;
                until(&mut at, "*/");
            }
            '-' | '/' => {
                current.push(c);
                continue; // wrangler skips the block check here
            }
            ';' if open == 0 => statements.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
        if is_start(&current) {
            open += 1;
        }
    }
    statements.push(current);
    let statements = statements
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (statements, open)
}

#[cfg(test)]
mod real_tests {
    use super::push_d1_real;

    fn text(r: f64) -> String {
        let mut b = Vec::new();
        push_d1_real(&mut b, r);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn reals_far_from_one_are_written_as_exact_binary_parts() {
        assert_eq!(
            text(1.7153739264319663e178),
            "(4766078004519031 * pow(2, 540))"
        );
        assert_eq!(text(-5e-324), "(-1 * pow(2, -1074))");
        assert_eq!(text(2f64.powi(60)), "(1 * pow(2, 60))");
        // Near 1 the ordinary literal stays.
        assert!(!text(0.1).contains("pow"));
        assert!(!text(123456.789).contains("pow"));
        assert!(!text(-0.0).contains("pow"));
        // The parts multiply back to the value.
        for r in [
            1.7153739264319663e178,
            -9.643915712060552e-234,
            f64::from_bits(1 << 44),
            f64::MAX,
            -f64::MIN_POSITIVE,
        ] {
            let t = text(r);
            let inner = t.trim_start_matches('(').trim_end_matches(')');
            let (m, e) = inner
                .split_once(" * pow(2, ")
                .unwrap_or_else(|| panic!("{r:e} written as {t}"));
            let e: i32 = e.parse().unwrap();
            // In two exact steps: 2^e alone may not be a normal double.
            let back = m.parse::<f64>().unwrap() * 2f64.powi(e / 2) * 2f64.powi(e - e / 2);
            assert_eq!(back.to_bits(), r.to_bits(), "{t}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::fallible_iterator::FallibleIterator;
    use rusqlite::types::Value;

    /// A source with what D1 makes hard: cascades, cycles, large values, FTS, triggers.
    const SOURCE: &str = r#"
        PRAGMA foreign_keys=OFF;
        CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
        CREATE TABLE sessions(id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, token TEXT);
        CREATE TABLE node(id INTEGER PRIMARY KEY,
            parent_id INTEGER REFERENCES node(id) ON DELETE CASCADE, label TEXT);
        CREATE TABLE tree(id INTEGER PRIMARY KEY,
            parent_id INTEGER NOT NULL REFERENCES tree(id) ON DELETE CASCADE);
        CREATE TABLE a(id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id) ON DELETE CASCADE);
        CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id) ON DELETE CASCADE);
        CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT CHECK (json_valid(body)), data BLOB);
        CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE counters(id INTEGER PRIMARY KEY AUTOINCREMENT, n);
        CREATE TABLE loose(x, y);
        CREATE TABLE checked(x, CHECK (x IS NULL OR CASE WHEN x > 0 THEN 1 END));
        CREATE TABLE _cf_KV(key TEXT PRIMARY KEY, value BLOB);
        CREATE VIRTUAL TABLE search USING fts5(title, body);
        CREATE INDEX sessions_user ON sessions(user_id);
        CREATE VIEW user_emails AS SELECT id, email FROM users;
        CREATE TRIGGER user_emails_insert INSTEAD OF INSERT ON user_emails
            BEGIN INSERT INTO users(id, email) VALUES (NEW.id, NEW.email); END;
        INSERT INTO users VALUES (1, 'ann@example.com'), (2, 'bob@example.com');
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
            INSERT INTO sessions SELECT i, 1 + i % 2, 'token-' || i FROM n;
        INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'child'), (3, 3, 'self');
        INSERT INTO tree VALUES (1, 1), (2, 1), (3, 2);
        INSERT INTO a VALUES (1, NULL), (2, 1);
        INSERT INTO b VALUES (1, 2), (2, NULL);
        INSERT INTO docs VALUES (1, json_array(printf('%.30000c', 'x')), zeroblob(20000)),
            (2, '{}', X'00ff80');
        INSERT INTO kv VALUES ('a', 1), (printf('%.5000c', 'k'), 'long key');
        INSERT INTO counters(n) VALUES ('one'), ('two');
        DELETE FROM counters WHERE id = 2;
        INSERT INTO loose(rowid, x, y) VALUES (10, 3.0, -0.0), (20, 9223372036854775807, -9e999),
            (30, 'C:\new' || char(10) || char(13) || char(0) || 'x', X''), (40, '', 'BEGIN TRANSACTION;');
        INSERT INTO checked VALUES (1), (NULL);
        INSERT INTO _cf_KV VALUES ('k', X'01');
        INSERT INTO search(rowid, title, body) VALUES (5, 'hello', 'world'), (9, 'x', NULL);
    "#;

    fn source(dir: &Path) -> PathBuf {
        let path = dir.join("source.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(SOURCE)
            .unwrap();
        path
    }

    fn write(db: &Path, limit: usize) -> (String, D1FileStats) {
        let mut out = Vec::new();
        let stats = write_d1_file(db, &mut out, limit).unwrap();
        (String::from_utf8(out).unwrap(), stats)
    }

    /// Runs `sql` as D1 does: foreign keys on, ten trigger levels, one transaction; returns the
    /// text of each statement as SQLite's parser cut it (leading comments and space removed).
    fn load_like_d1(conn: &Connection, sql: &str) -> Vec<String> {
        // SAFETY: the handle is valid for the connection's lifetime.
        unsafe {
            rusqlite::ffi::sqlite3_limit(
                conn.handle(),
                rusqlite::ffi::SQLITE_LIMIT_TRIGGER_DEPTH,
                10,
            );
        }
        conn.execute_batch("PRAGMA foreign_keys=ON; BEGIN").unwrap();
        let mut texts = Vec::new();
        let mut batch = rusqlite::Batch::new(conn, sql);
        while let Some(mut stmt) = batch.next().unwrap() {
            let text = stmt.expanded_sql().unwrap();
            let text = text
                .trim_start()
                .lines()
                .skip_while(|l| l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            let done = if stmt.column_count() > 0 {
                stmt.query([]).and_then(|mut rows| rows.next().map(drop))
            } else {
                stmt.raw_execute().map(drop)
            };
            done.unwrap_or_else(|e| panic!("{e} in {}", &text[..text.len().min(200)]));
            texts.push(text);
        }
        conn.execute_batch("COMMIT").unwrap();
        texts
    }

    /// Every user table (and `sqlite_sequence`) of `db` with its rows, REALs by their bits,
    /// plus the schema: what must come out of D1 exactly as it went in.
    fn content(conn: &Connection) -> Vec<(String, Vec<Vec<Value>>)> {
        let names: Vec<(String, String, bool)> = conn
            .prepare(
                "SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'
                 AND type IN ('table', 'virtual') AND substr(name, 1, 4) <> '_cf_'
                 AND (substr(name, 1, 7) <> 'sqlite_' OR name = 'sqlite_sequence')
                 ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut all = Vec::new();
        for (name, _, without_rowid) in names {
            let t = quote_ident(&name);
            let sql = if without_rowid || name == "sqlite_sequence" {
                format!("SELECT * FROM {t} ORDER BY 1")
            } else {
                format!("SELECT rowid, * FROM {t} ORDER BY rowid")
            };
            let mut stmt = conn.prepare(&sql).unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get::<_, Value>(i)? {
                                Value::Real(f) => Value::Text(format!("real {:#x}", f.to_bits())),
                                v => v,
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            all.push((name, rows));
        }
        let schema = conn
            .prepare(
                "SELECT type, name, sql FROM sqlite_master WHERE substr(tbl_name, 1, 4) <> '_cf_'
                 AND name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow')
                 ORDER BY type, name",
            )
            .unwrap()
            .query_map([], |r| {
                Ok(vec![
                    r.get::<_, Value>(0)?,
                    r.get::<_, Value>(1)?,
                    r.get::<_, Value>(2)?,
                ])
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        all.push(("sqlite_master".into(), schema));
        all
    }

    fn assert_same(got: &Connection, want: &Connection) {
        let (got, want) = (content(got), content(want));
        let names =
            |c: &[(String, Vec<Vec<Value>>)]| c.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want));
        for ((name, got), (_, want)) in got.iter().zip(&want) {
            assert_eq!(got.len(), want.len(), "rows of {name}");
            for (g, w) in got.iter().zip(want) {
                let short = |r: &Vec<Value>| format!("{r:?}").chars().take(300).collect::<String>();
                assert!(g == w, "{name}: got {} want {}", short(g), short(w));
            }
        }
    }

    #[test]
    fn every_statement_fits_the_limit_as_sqlite_and_wrangler_cut_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = source(dir.path());
        let limit = 2_000;
        let (sql, stats) = write(&db, limit);
        assert!(stats.largest_statement <= limit, "{stats:?}");
        let target = Connection::open_in_memory().unwrap();
        let statements = load_like_d1(&target, &sql);
        assert_eq!(statements.len() as u64, stats.statements);
        for s in &statements {
            // SQLite's text of a statement ends with its `;`.
            assert!(s.len() <= limit, "{} bytes: {}…", s.len(), &s[..200]);
        }
        let (split, open) = wrangler_split(&sql);
        assert_eq!(open, 0);
        for s in &split {
            assert!(
                s.len() < limit,
                "wrangler sends {} bytes: {}…",
                s.len(),
                &s[..200]
            );
        }
        // The CHECK (… CASE … END) table is the one statement wrangler joins with its fix-up.
        assert_eq!(split.len(), statements.len() - 1);
        assert!(!sql.contains("BEGIN TRANSACTION"));
        assert!(!sql.contains("_cf_"));
        assert!(
            sql.starts_with("-- ") && sql.lines().nth(1) == Some("PRAGMA defer_foreign_keys=TRUE;")
        );
        assert_same(&target, &Connection::open(&db).unwrap());
    }

    #[test]
    fn replaces_existing_rows_however_deep_their_chains() {
        let dir = tempfile::tempdir().unwrap();
        let db = source(dir.path());
        let (sql, stats) = write(&db, D1_MAX_STATEMENT);
        assert_eq!(stats.tables, 12, "{stats:?}");
        // The target already holds the tables, other rows, chains fifty deep and a trigger.
        let target = Connection::open_in_memory().unwrap();
        target
            .execute_batch(
                "PRAGMA foreign_keys=ON; BEGIN; PRAGMA defer_foreign_keys=ON;
                 CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
                 CREATE TABLE sessions(id INTEGER PRIMARY KEY,
                     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, token TEXT);
                 CREATE TABLE node(id INTEGER PRIMARY KEY,
                     parent_id INTEGER REFERENCES node(id) ON DELETE CASCADE, label TEXT);
                 CREATE TABLE tree(id INTEGER PRIMARY KEY,
                     parent_id INTEGER NOT NULL REFERENCES tree(id) ON DELETE CASCADE);
                 CREATE TABLE a(id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id) ON DELETE CASCADE);
                 CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id) ON DELETE CASCADE);
                 CREATE VIRTUAL TABLE search USING fts5(title, body);
                 CREATE TRIGGER user_emails_insert AFTER INSERT ON users BEGIN SELECT 1; END;
                 INSERT INTO users VALUES (7, 'old@example.com');
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                     INSERT INTO sessions SELECT i, 7, 'old' FROM n;
                 INSERT INTO node VALUES (1, NULL, 'old');
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
                 INSERT INTO search VALUES ('old', 'old');
                 COMMIT;",
            )
            .unwrap();
        load_like_d1(&target, &sql);
        assert_same(&target, &Connection::open(&db).unwrap());
    }

    #[test]
    fn output_is_deterministic_and_parents_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = source(dir.path());
        let (first, _) = write(&db, D1_MAX_STATEMENT);
        assert_eq!(first, write(&db, D1_MAX_STATEMENT).0);
        let at = |s: &str| first.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("DROP TABLE IF EXISTS \"sessions\"") < at("DROP TABLE IF EXISTS \"users\""));
        assert!(at("DROP TABLE IF EXISTS \"users\"") < at("CREATE TABLE users"));
        assert!(at("CREATE TABLE users") < at("CREATE TABLE sessions"));
        assert!(
            at("UPDATE \"node\" SET \"parent_id\" = NULL") < at("DROP TABLE IF EXISTS \"node\"")
        );
        assert!(
            at("UPDATE \"tree\" SET \"parent_id\" = \"id\"") < at("DROP TABLE IF EXISTS \"tree\"")
        );
        assert!(at("CREATE VIEW") < at("CREATE TRIGGER"));
        assert!(
            at("INSERT INTO \"search\" (rowid,\"title\",\"body\") VALUES\n(5,'hello','world')") > 0
        );
    }

    #[test]
    fn refuses_what_d1_would_refuse_or_lose() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bad.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys=OFF;
             CREATE TABLE p(id INTEGER PRIMARY KEY);
             CREATE TABLE c(id INTEGER PRIMARY KEY, p_id REFERENCES p(id));
             INSERT INTO c VALUES (1, 5), (2, 6);",
        )
        .unwrap();
        let err = write_d1_file(&db, &mut Vec::new(), D1_MAX_STATEMENT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "table c: 2 row(s) violate its foreign key to p (first rowid 1) — D1 always enforces \
             foreign keys and would refuse the file; fix those rows in a SQLite restore, then \
             write the D1 file from it"
        );
        conn.execute_batch("DELETE FROM c; CREATE VIRTUAL TABLE f USING fts5(body, content='');")
            .unwrap();
        let err = write_d1_file(&db, &mut Vec::new(), D1_MAX_STATEMENT).unwrap_err();
        assert!(
            matches!(err, D1FileError::Contentless { ref table } if table == "f"),
            "{err}"
        );
        conn.execute_batch("DROP TABLE f; CREATE VIEW v AS SELECT 'BEGIN TRANSACTION' AS x;")
            .unwrap();
        let err = write_d1_file(&db, &mut Vec::new(), D1_MAX_STATEMENT).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("view v: its SQL contains `BEGIN TRANSACTION`")
        );
        let err = write_d1_file(&db, &mut Vec::new(), 100).unwrap_err();
        assert!(
            matches!(err, D1FileError::LimitTooSmall { limit: 100 }),
            "{err}"
        );
    }

    #[test]
    fn large_values_go_in_pieces_that_fit() {
        for (v, budget) in [
            (ValueRef::Text("ab'c😀".repeat(50).as_bytes()), 40),
            (ValueRef::Text(b"a\r\nb\0c".repeat(40).as_slice()), 40),
            (ValueRef::Blob(&[0xff; 333]), 41),
        ] {
            let mut pieces = Pieces::new(v).unwrap();
            let mut sql = String::from("SELECT ''");
            while !pieces.is_empty() {
                let mut b = Vec::new();
                pieces.push_next(&mut b, budget);
                assert!(b.len() <= budget, "{}", String::from_utf8_lossy(&b));
                sql.push_str(" || ");
                sql.push_str(std::str::from_utf8(&b).unwrap());
            }
            let conn = Connection::open_in_memory().unwrap();
            let back: Vec<u8> = conn
                .query_row(&format!("SELECT CAST(({sql}) AS BLOB)"), [], |r| r.get(0))
                .unwrap();
            let want = match v {
                ValueRef::Text(t) | ValueRef::Blob(t) => t,
                _ => unreachable!(),
            };
            assert_eq!(back, want);
        }
    }

    #[test]
    fn wrangler_split_matches_wrangler() {
        let (s, open) = wrangler_split("SELECT 'a;b'; -- c;\nSELECT \"x;\" /* ; */;");
        assert_eq!(s, ["SELECT 'a;b'", "SELECT \"x;\""]);
        assert_eq!(open, 0);
        let trigger = "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES(1); END;";
        assert_eq!(wrangler_split(trigger).0.len(), 1);
        let lower = "CREATE TRIGGER t AFTER INSERT ON a begin INSERT INTO b VALUES(1); end;";
        assert_eq!(wrangler_split(lower).1, 1);
        let check = "CREATE TABLE c(x, CHECK (x IS NULL OR CASE WHEN x THEN 1 END));";
        assert_eq!(wrangler_split(check).1, 1);
        let fixed = format!("{check}\nSELECT 0 AS END;\nSELECT 1;");
        let (s, open) = wrangler_split(&fixed);
        assert_eq!((s.len(), open), (2, 0));
        // Linear: a 90 KB trigger body is split in well under a second.
        let body = "INSERT INTO b VALUES ('x');\n".repeat(3_000);
        let started = std::time::Instant::now();
        let long = format!("CREATE TRIGGER t AFTER INSERT ON a BEGIN\n{body}END;");
        assert_eq!(
            wrangler_split(&long),
            (vec![long[..long.len() - 1].to_string()], 0)
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
