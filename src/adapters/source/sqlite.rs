//! SQLite source: one read transaction as a consistent snapshot, streamed into the dump writer;
//! and the loader that replays a dump into a new SQLite file (restore, verify).
//!
//! [`dump`] opens the file read-only, sets the busy timeout and reads everything — schema, row
//! counts, rows — inside one `BEGIN … COMMIT`, so the dump is one snapshot while writers go on
//! (in WAL mode they are never blocked). Rows stream through [`crate::dump::Writer`]; nothing
//! holds a table in memory. [`load`] replays a dump statement by statement into a fresh file,
//! and [`inspect`] gathers the facts `verify` compares (row counts, schema hash, integrity).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::ffi::c_int;
use std::ptr::NonNull;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, ffi};
use sha2::{Digest, Sha256};

use crate::dump::{Header, Insert, InsertReader, ObjectKind, Value, Writer};

/// What to dump and how to label it.
#[derive(Debug, Clone)]
pub struct DumpRequest<'a> {
    /// Patina database name (for the header).
    pub database: &'a str,
    pub path: &'a Path,
    pub job_id: &'a str,
    pub generated_at: chrono::DateTime<chrono::Utc>,
    /// Tables (or views) left out entirely: no schema, no data, no indexes or triggers.
    pub exclude_tables: &'a [String],
    pub busy_timeout: Duration,
}

/// What a dump contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    /// Dumped tables → row count.
    pub tables: BTreeMap<String, u64>,
    pub row_count: u64,
    /// Hex sha256 over the dumped schema objects (see [`inspect`]).
    pub schema_hash: String,
    /// Per dumped table (and view): the same hash over its own objects (itself, its indexes
    /// and triggers).
    pub table_schema_hashes: BTreeMap<String, String>,
    /// Uncompressed bytes written, footer included.
    pub sql_bytes: u64,
}

/// Rows written so far, out of the total counted at the start.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub rows_done: u64,
    pub rows_total: u64,
}

/// What [`load`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    /// Complete statements executed (a line holding several counts once).
    pub statements: u64,
    /// Of those, Patina `INSERT`s whose values were bound to a prepared statement rather than
    /// parsed by SQLite from the text.
    pub bound: u64,
}

/// Facts about a database for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// All user tables (no exclusions) → row count.
    pub tables: BTreeMap<String, u64>,
    /// Same algorithm as [`DumpSummary::schema_hash`], over all user schema objects.
    pub schema_hash: String,
    /// The output of `PRAGMA integrity_check`: `ok` when fine.
    pub integrity: String,
    /// Rows reported by `PRAGMA foreign_key_check`.
    pub foreign_key_violations: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("open sqlite database {}: file not found — check the path in patina.toml", .path.display())]
    NotFound { path: PathBuf },
    #[error("open sqlite database {}: permission denied — let the patina user read the file and its directory", .path.display())]
    PermissionDenied { path: PathBuf },
    #[error("read {}: file is not a SQLite database", .path.display())]
    NotADatabase { path: PathBuf },
    #[error("read {}: database disk image is malformed (corrupt) — run PRAGMA integrity_check", .path.display())]
    Corrupt {
        path: PathBuf,
        /// SQLite's own message, for logs.
        detail: String,
    },
    #[error("read {}: database is locked beyond the busy timeout of {} — a writer holds an exclusive lock", .path.display(), crate::human::wait(*.timeout))]
    Busy { path: PathBuf, timeout: Duration },
    #[error("read {}: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("write dump: {0}")]
    Write(#[source] io::Error),
    #[error("read dump: {0}")]
    ReadDump(#[source] io::Error),
    #[error("restore target {} already exists", .path.display())]
    TargetExists { path: PathBuf },
    #[error("load dump into {}: {message} near statement {statement}", .path.display())]
    Load {
        path: PathBuf,
        statement: u64,
        message: String,
    },
    #[error("copy the selected tables into {}: {message}", .path.display())]
    Copy { path: PathBuf, message: String },
    #[error("the backup has no table {} — its tables are: {}", .missing.join(", "), .available.join(", "))]
    UnknownTables {
        missing: Vec<String>,
        available: Vec<String>,
    },
}

/// Turns a SQLite error while reading `path` into the variant the user can act on.
fn classify(path: &Path, busy_timeout: Duration, e: rusqlite::Error) -> SourceError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SourceError::Busy {
            path,
            timeout: busy_timeout,
        },
        Some(ErrorCode::NotADatabase) => SourceError::NotADatabase { path },
        Some(ErrorCode::DatabaseCorrupt) => SourceError::Corrupt {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::PermissionDenied) => SourceError::PermissionDenied { path },
        Some(ErrorCode::CannotOpen) if !path.exists() => SourceError::NotFound { path },
        _ => SourceError::Sqlite { path, source: e },
    }
}

/// Opens an existing database read-only, with clear errors for missing or unreadable files.
fn open_read_only(path: &Path, busy_timeout: Duration) -> Result<Connection, SourceError> {
    match std::fs::File::open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::NotFound { path: path.into() });
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(SourceError::PermissionDenied { path: path.into() });
        }
        Err(_) => {} // let SQLite report it
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| classify(path, busy_timeout, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| classify(path, busy_timeout, e))?;
    Ok(conn)
}

/// One row of `sqlite_master`.
/// One `sqlite_master` row.
#[derive(Debug, Clone)]
pub(crate) struct SchemaObject {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) tbl_name: String,
    pub(crate) sql: Option<String>,
}

/// Internal tables never dumped: SQLite's own and Cloudflare D1's.
pub(crate) fn is_internal(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("sqlite_") || lower.starts_with("_cf_")
}

/// The user schema objects (tables, indexes with SQL, views, triggers), minus `exclude`d tables
/// and everything attached to them (indexes, triggers, shadow tables of a virtual table),
/// sorted by (type, name).
pub(crate) fn schema_objects(
    conn: &Connection,
    exclude: &[String],
) -> rusqlite::Result<Vec<SchemaObject>> {
    let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM main.sqlite_master")?;
    let mut objects = stmt
        .query_map([], |r| {
            Ok(SchemaObject {
                kind: r.get(0)?,
                name: r.get(1)?,
                tbl_name: r.get(2)?,
                sql: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Shadow tables of an excluded virtual table (`<name>_data`, …) go with it.
    let shadows = conn
        .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    select_dumped(&mut objects, exclude, |n| shadows.iter().any(|s| s == n));
    Ok(objects)
}

/// Keep the objects a dump carries — tables, indexes with SQL, views and triggers, minus
/// internal ones and `exclude`d tables with everything attached to them (their indexes and
/// triggers, and the shadow tables `<name>_…` of an excluded virtual table) — sorted by
/// (type, name). Shared by every source, so they dump the same selection.
pub(crate) fn select_dumped(
    objects: &mut Vec<SchemaObject>,
    exclude: &[String],
    is_shadow: impl Fn(&str) -> bool,
) {
    let excluded = |n: &str| {
        exclude.iter().any(|x| {
            x == n
                || (n.len() > x.len()
                    && n.starts_with(x.as_str())
                    && n[x.len()..].starts_with('_')
                    && is_shadow(n))
        })
    };
    objects.retain(|o| {
        matches!(o.kind.as_str(), "table" | "index" | "view" | "trigger")
            && o.sql.is_some()
            && !is_internal(&o.name)
            && !is_internal(&o.tbl_name)
            && !excluded(&o.name)
            && !excluded(&o.tbl_name)
    });
    objects.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
}

/// sha256 over `type \0 name \0 tbl_name \0 sql \n` of each object, in (type, name) order.
fn schema_hash(objects: &[SchemaObject]) -> String {
    hash_objects(objects.iter())
}

/// Per table (and view): [`schema_hash`]'s algorithm over that table's own objects — itself,
/// its indexes and its triggers (those whose `tbl_name` it is) — so that two dumps whose schema
/// hashes differ can say which tables were altered.
fn table_schema_hashes(objects: &[SchemaObject]) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<&str, Vec<&SchemaObject>> = BTreeMap::new();
    for o in objects {
        groups.entry(o.tbl_name.as_str()).or_default().push(o);
    }
    groups
        .into_iter()
        .map(|(table, objects)| (table.to_string(), hash_objects(objects.into_iter())))
        .collect()
}

fn hash_objects<'a>(objects: impl Iterator<Item = &'a SchemaObject>) -> String {
    let mut h = Sha256::new();
    for o in objects {
        for part in [&o.kind, &o.name, &o.tbl_name] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(o.sql.as_deref().unwrap_or("").as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// How to read one table's rows.
struct TablePlan {
    name: String,
    create_sql: String,
    rows: u64,
    /// Columns in the INSERT (generated columns left out).
    columns: Vec<String>,
    /// `SELECT "a","b" FROM main."t" ORDER BY …`.
    select: String,
}

pub(crate) fn is_virtual(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    words.len() == 2 && words[0] == "CREATE" && words[1] == "VIRTUAL"
}

/// One column of a table, as `pragma_table_xinfo` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    /// The declared type, as written.
    pub decl: String,
    pub notnull: bool,
    /// Position in the primary key (1-based), 0 when not part of it.
    pub pk: i64,
    /// 0 ordinary, 1 hidden (virtual tables), 2 VIRTUAL generated, 3 STORED generated.
    pub hidden: i64,
}

impl Column {
    /// Generated columns are computed again on insert: never dumped or copied.
    pub fn is_generated(&self) -> bool {
        self.hidden == 2 || self.hidden == 3
    }
}

/// The columns of `table` in the main schema, in order.
pub(crate) fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Column>> {
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid",
    )?;
    stmt.query_map([table], |r| {
        Ok(Column {
            name: r.get(0)?,
            decl: r.get(1)?,
            notnull: r.get(2)?,
            pk: r.get(3)?,
            hidden: r.get(4)?,
        })
    })?
    .collect()
}

/// Whether `table` in the main schema is a WITHOUT ROWID table.
pub(crate) fn without_rowid(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main'",
        [table],
        |r| r.get(0),
    )
}

/// The primary key's columns of `table`, in key order.
pub(crate) fn primary_key(columns: &[Column]) -> Vec<&Column> {
    let mut pk: Vec<&Column> = columns.iter().filter(|c| c.pk > 0).collect();
    pk.sort_by_key(|c| c.pk);
    pk
}

fn plan_table(conn: &Connection, name: &str, create_sql: &str) -> rusqlite::Result<TablePlan> {
    use crate::dump::quote_ident;
    let all = table_columns(conn, name)?;
    let all_names: Vec<String> = all.iter().map(|c| c.name.to_ascii_lowercase()).collect();
    let columns: Vec<String> = all
        .iter()
        .filter(|c| !c.is_generated())
        .map(|c| c.name.clone())
        .collect();
    let order_by = if without_rowid(conn, name)? {
        primary_key(&all)
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        // The rowid under a name no column shadows; a plain scan is rowid order otherwise.
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|alias| !all_names.iter().any(|c| c == alias))
            .unwrap_or("")
            .to_string()
    };
    let mut select = String::from("SELECT ");
    select.push_str(
        &columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(","),
    );
    select.push_str(" FROM main.");
    select.push_str(&quote_ident(name));
    if !order_by.is_empty() {
        select.push_str(" ORDER BY ");
        select.push_str(&order_by);
    }
    let rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM main.{}", quote_ident(name)),
        [],
        |r| r.get(0),
    )?;
    Ok(TablePlan {
        name: name.to_string(),
        create_sql: create_sql.to_string(),
        rows: rows as u64,
        columns,
        select,
    })
}

/// Report progress every this many rows.
const PROGRESS_EVERY: u64 = 4096;

/// Dumps the database at `req.path` as one consistent snapshot into `out`.
pub fn dump(
    req: &DumpRequest,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress),
) -> Result<DumpSummary, SourceError> {
    let started = Instant::now();
    let conn = open_read_only(req.path, req.busy_timeout)?;
    let sql_err = |e| classify(req.path, req.busy_timeout, e);
    conn.execute_batch("BEGIN").map_err(sql_err)?;

    let objects = schema_objects(&conn, req.exclude_tables).map_err(sql_err)?;
    let mut plans = Vec::new();
    let mut virtuals = Vec::new();
    for o in objects.iter().filter(|o| o.kind == "table") {
        let sql = o.sql.as_deref().unwrap_or_default();
        if is_virtual(sql) {
            virtuals.push((o.name.as_str(), sql));
        } else {
            plans.push(plan_table(&conn, &o.name, sql).map_err(sql_err)?);
        }
    }
    let has_sequence: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let rows_total: u64 = plans.iter().map(|p| p.rows).sum();

    let mut w = Writer::new(out);
    w.header(&Header {
        database: req.database,
        generated_at: req.generated_at,
        job_id: req.job_id,
        tables: plans.len(),
        total_rows: rows_total,
    })
    .map_err(SourceError::Write)?;

    let mut tables = BTreeMap::new();
    let mut rows_done = 0u64;
    progress(Progress {
        rows_done,
        rows_total,
    });
    for (name, sql) in &virtuals {
        w.virtual_table(name, sql).map_err(SourceError::Write)?;
    }
    for plan in &plans {
        w.table(&plan.name, plan.rows, &plan.create_sql, &plan.columns)
            .map_err(SourceError::Write)?;
        let mut stmt = conn.prepare(&plan.select).map_err(sql_err)?;
        let n = plan.columns.len();
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(sql_err)? {
            w.row_start();
            for i in 0..n {
                w.value(to_value(row.get_ref(i).map_err(sql_err)?));
            }
            w.row_end().map_err(SourceError::Write)?;
            count += 1;
            rows_done += 1;
            if rows_done.is_multiple_of(PROGRESS_EVERY) {
                progress(Progress {
                    rows_done,
                    rows_total,
                });
            }
        }
        tables.insert(plan.name.clone(), count);
    }

    for (kind, object_kind) in [
        ("index", ObjectKind::Index),
        ("view", ObjectKind::View),
        ("trigger", ObjectKind::Trigger),
    ] {
        for o in objects.iter().filter(|o| o.kind == kind) {
            w.object(object_kind, &o.name, o.sql.as_deref().unwrap_or_default())
                .map_err(SourceError::Write)?;
        }
    }

    // Restoring creates sqlite_sequence only along with an AUTOINCREMENT table, so the section
    // is written only then, with the rows of dumped tables.
    let autoincrement = plans
        .iter()
        .any(|p| p.create_sql.to_ascii_uppercase().contains("AUTOINCREMENT"));
    if has_sequence && autoincrement {
        w.sqlite_sequence().map_err(SourceError::Write)?;
        let mut stmt = conn
            .prepare("SELECT name, seq FROM main.sqlite_sequence ORDER BY name")
            .map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        while let Some(row) = rows.next().map_err(sql_err)? {
            let name = row.get_ref(0).map_err(sql_err)?;
            let dumped = matches!(name, ValueRef::Text(t)
                if plans.iter().any(|p| p.name.as_bytes() == t));
            if !dumped {
                continue;
            }
            w.row_start();
            w.value(to_value(name));
            w.value(to_value(row.get_ref(1).map_err(sql_err)?));
            w.row_end().map_err(SourceError::Write)?;
        }
    }
    conn.execute_batch("COMMIT").map_err(sql_err)?;

    let sql_bytes = w.finish(started.elapsed()).map_err(SourceError::Write)?;
    progress(Progress {
        rows_done,
        rows_total,
    });
    Ok(DumpSummary {
        tables,
        row_count: rows_done,
        schema_hash: schema_hash(&objects),
        table_schema_hashes: table_schema_hashes(&objects),
        sql_bytes,
    })
}

fn to_value(v: ValueRef<'_>) -> Value<'_> {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(t),
        ValueRef::Blob(b) => Value::Blob(b),
    }
}

/// Replays a Patina (or `sqlite3 .dump`) SQL stream into a NEW SQLite file at `target`, which
/// must not exist. On failure the partial file is removed.
pub fn load(reader: &mut dyn BufRead, target: &Path) -> Result<LoadSummary, SourceError> {
    create_new(target)?;
    let result = load_into(reader, target);
    if result.is_err() {
        let _ = std::fs::remove_file(target);
    }
    result
}

fn load_into(reader: &mut dyn BufRead, target: &Path) -> Result<LoadSummary, SourceError> {
    let load_err = |statement: u64, e: &dyn std::fmt::Display| SourceError::Load {
        path: target.into(),
        statement,
        message: e.to_string(),
    };
    let conn = Connection::open(target).map_err(|e| load_err(0, &e))?;
    // A fresh scratch file that is renamed into place only when complete and checked: no
    // journal, no syncing, no lock traffic.
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE;",
    )
    .map_err(|e| load_err(0, &e))?;

    // One complete statement (or a line of several) at a time: `execute_batch` prepares and
    // steps statement by statement anyway, so larger batches would save nothing but would lose
    // the exact number of the statement that failed. Patina's own multi-row INSERTs take the
    // fast path: decoded by `dump::InsertReader` and bound to one prepared statement per table.
    let mut inserts = InsertReader::new();
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut stmt: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut terminated: Vec<u8> = Vec::new(); // `stmt` and a NUL, for `sqlite3_complete`
    let mut statements = 0u64;
    let mut bound = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(SourceError::ReadDump)?;
        if n == 0 {
            break;
        }
        if stmt.is_empty() {
            let t = line.trim_ascii();
            if t.is_empty() || t.starts_with(b"--") {
                continue; // blank or comment line between statements
            }
        }
        stmt.extend_from_slice(&line);
        if !line.trim_ascii_end().ends_with(b";") {
            continue;
        }
        // A statement the reader decodes ends at this `;` (it closed every quote), so SQLite's
        // tokenizer need not scan it again to say so.
        let insert = inserts.read(&stmt);
        if insert.is_some() || is_complete(&stmt, &mut terminated) {
            statements += 1;
            let text = simdutf8::compat::from_utf8(&stmt)
                .map_err(|e| load_err(statements, &format!("dump is not valid UTF-8: {e}")))?;
            let fast = match insert {
                Some(insert) => insert_rows(&conn, &mut prepared, &insert)
                    .map_err(|message| load_err(statements, &message))?,
                None => false,
            };
            if fast {
                bound += 1;
            } else {
                conn.execute_batch(text)
                    .map_err(|e| load_err(statements, &e))?;
            }
            stmt.clear();
            if stmt.capacity() > 4 * 1024 * 1024 {
                stmt.shrink_to(64 * 1024); // one huge row must not pin its memory
            }
        }
    }
    drop(prepared); // finalized before the connection closes
    if !stmt.trim_ascii().is_empty() {
        return Err(load_err(
            statements + 1,
            &"dump ends inside an incomplete statement (truncated?)",
        ));
    }
    Ok(LoadSummary { statements, bound })
}

/// A prepared `INSERT INTO "t" (…) VALUES (?,…),(?,…)…` of `rows` rows, finalized on drop.
struct Prepared {
    /// The [`Insert::head`] it was prepared for.
    head: Vec<u8>,
    rows: usize,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: a statement prepared by `prepare_insert` and finalized only here.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// Rows bound per step: one step inserts this many rows through a multi-row statement, as
/// the text would, so the per-statement cost of stepping is paid once for all of them.
const BOUND_ROWS: usize = 64;

/// The statement for `rows` rows of `insert`'s table from `cache` (which holds one table's
/// statements: a new table empties it), prepared when missing. `None` when SQLite will not
/// prepare it (the caller then runs the text, which reports SQLite's error for it).
fn prepare_insert(
    db: *mut ffi::sqlite3,
    cache: &mut Vec<Prepared>,
    insert: &Insert<'_>,
    rows: usize,
) -> Option<*mut ffi::sqlite3_stmt> {
    if cache.first().is_some_and(|p| p.head != insert.head) {
        cache.clear();
    }
    if let Some(p) = cache.iter().find(|p| p.rows == rows) {
        return Some(p.stmt.as_ptr());
    }
    let mut sql = insert.head.to_vec();
    for r in 0..rows {
        sql.extend_from_slice(if r == 0 { b"(" } else { b",\n(" });
        for i in 0..insert.columns {
            sql.extend_from_slice(if i == 0 { b"?" } else { b",?" });
        }
        sql.push(b')');
    }
    let mut stmt = std::ptr::null_mut();
    // SAFETY: `sql` is valid for its length; `stmt` receives the new statement or null.
    let rc = unsafe {
        ffi::sqlite3_prepare_v2(
            db,
            sql.as_ptr().cast(),
            c_int::try_from(sql.len()).ok()?,
            &mut stmt,
            std::ptr::null_mut(),
        )
    };
    let Some(stmt) = NonNull::new(stmt).filter(|_| rc == ffi::SQLITE_OK) else {
        // SAFETY: finalizing null is a no-op; otherwise it frees what prepare returned.
        unsafe { ffi::sqlite3_finalize(stmt) };
        return None;
    };
    let p = Prepared {
        head: insert.head.to_vec(),
        rows,
        stmt,
    };
    // SAFETY: a valid statement.
    let params = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
    if usize::try_from(params).ok() != Some(rows * insert.columns) {
        return None;
    }
    cache.push(p);
    Some(stmt.as_ptr())
}

/// Inserts the rows of a decoded Patina `INSERT` through prepared multi-row statements of the
/// same table (kept in `cache` while the table's statements follow one another) — the same
/// rows, values and types SQLite would insert from the text, in the same order, without
/// parsing and compiling it. `Ok(false)` when the statement cannot be prepared here (the
/// caller then runs the text, which reports the error SQLite gives for it); `Err` with
/// SQLite's message when a row fails.
fn insert_rows(
    conn: &Connection,
    cache: &mut Vec<Prepared>,
    insert: &Insert<'_>,
) -> Result<bool, String> {
    // SAFETY: the handle stays valid while `conn` lives, and is used on this thread only.
    let db = unsafe { conn.handle() };
    // Within SQLite's default limit of 32766 parameters.
    let per_step = BOUND_ROWS.min(32_766 / insert.columns).max(1);
    let rows = insert.values.len() / insert.columns;
    // Both statements are prepared before any row goes in: on `Ok(false)` the caller runs the
    // whole text.
    let many = match rows / per_step {
        0 => None,
        _ => match prepare_insert(db, cache, insert, per_step) {
            Some(stmt) => Some(stmt),
            None => return Ok(false),
        },
    };
    let one = match rows % per_step {
        0 => None,
        _ => match prepare_insert(db, cache, insert, 1) {
            Some(stmt) => Some(stmt),
            None => return Ok(false),
        },
    };
    let (full, rest) = insert
        .values
        .split_at(rows / per_step * per_step * insert.columns);
    let steps = full
        .chunks_exact(per_step * insert.columns)
        .map(|values| (many, values))
        .chain(
            rest.chunks_exact(insert.columns)
                .map(|values| (one, values)),
        );
    for (stmt, values) in steps {
        let stmt = stmt.expect("prepared above for these rows");
        for (i, v) in values.iter().enumerate() {
            // SAFETY: `stmt` is valid; TEXT and BLOB bytes are bound SQLITE_STATIC: they live
            // in `insert` (or the buffers it borrows) through the step below, and every
            // parameter is bound again before the statement's next step.
            let rc = unsafe { bind(stmt, i as c_int + 1, *v) };
            if rc != ffi::SQLITE_OK {
                return Err(error_message(db, stmt));
            }
        }
        // SAFETY: a valid statement with every parameter bound.
        let rc = unsafe { ffi::sqlite3_step(stmt) };
        if rc != ffi::SQLITE_DONE {
            return Err(error_message(db, stmt));
        }
        // SAFETY: as above.
        unsafe { ffi::sqlite3_reset(stmt) };
    }
    Ok(true)
}

/// Binds `v` to parameter `i` (1-based).
///
/// # Safety
/// `stmt` is a valid statement, and TEXT and BLOB bytes outlive its next step.
unsafe fn bind(stmt: *mut ffi::sqlite3_stmt, i: c_int, v: Value<'_>) -> c_int {
    // A non-null pointer for empty values: a null one would bind NULL.
    static EMPTY: [u8; 1] = [0];
    let bytes = |b: &[u8]| -> Option<(*const u8, c_int)> {
        let ptr = if b.is_empty() {
            EMPTY.as_ptr()
        } else {
            b.as_ptr()
        };
        Some((ptr, c_int::try_from(b.len()).ok()?))
    };
    // SAFETY: the caller's contract.
    unsafe {
        match v {
            Value::Null => ffi::sqlite3_bind_null(stmt, i),
            Value::Integer(x) => ffi::sqlite3_bind_int64(stmt, i, x),
            Value::Real(x) => ffi::sqlite3_bind_double(stmt, i, x),
            Value::Text(t) => match bytes(t) {
                Some((ptr, n)) => {
                    ffi::sqlite3_bind_text(stmt, i, ptr.cast(), n, ffi::SQLITE_STATIC())
                }
                None => ffi::SQLITE_TOOBIG,
            },
            Value::Blob(b) => match bytes(b) {
                Some((ptr, n)) => {
                    ffi::sqlite3_bind_blob(stmt, i, ptr.cast(), n, ffi::SQLITE_STATIC())
                }
                None => ffi::SQLITE_TOOBIG,
            },
        }
    }
}

/// SQLite's message for the last error on `db`, after resetting `stmt` for the next use.
fn error_message(db: *mut ffi::sqlite3, stmt: *mut ffi::sqlite3_stmt) -> String {
    // SAFETY: valid handles; the message is copied before anything else runs on `db`.
    unsafe {
        let message = std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(db))
            .to_string_lossy()
            .into_owned();
        ffi::sqlite3_reset(stmt);
        message
    }
}

/// Whether `stmt` ends a complete SQL statement (SQLite's own tokenizer decides), copied into
/// `terminated` with the NUL it needs.
fn is_complete(stmt: &[u8], terminated: &mut Vec<u8>) -> bool {
    terminated.clear();
    terminated.extend_from_slice(stmt);
    terminated.push(0);
    // SAFETY: the buffer is NUL-terminated and outlives the call.
    let complete = unsafe { ffi::sqlite3_complete(terminated.as_ptr().cast()) } != 0;
    if terminated.capacity() > 4 * 1024 * 1024 {
        *terminated = Vec::new();
    }
    complete
}

/// Create `target` as an empty file, refusing one that exists (atomically: `create_new`); an
/// empty file is an empty database.
fn create_new(target: &Path) -> Result<(), SourceError> {
    match OpenOptions::new().write(true).create_new(true).open(target) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SourceError::TargetExists {
            path: target.into(),
        }),
        Err(e) => Err(SourceError::Load {
            path: target.into(),
            statement: 0,
            message: format!("create file: {e}"),
        }),
    }
}

/// Copy `tables` (with their rows, indexes and triggers, and their AUTOINCREMENT counters) of
/// the database at `from` into a NEW SQLite file at `target` (`patina restore --table`). Views
/// are left out: they may name tables that were not asked for. An unknown table name is an
/// error before `target` is created. On failure the partial file is removed. Returns the rows
/// copied.
pub fn copy_tables(from: &Path, target: &Path, tables: &[String]) -> Result<u64, SourceError> {
    let timeout = Duration::from_secs(5);
    let source = open_read_only(from, timeout)?;
    let sql_err = |e| classify(from, timeout, e);
    let objects = schema_objects(&source, &[]).map_err(sql_err)?;
    let available: Vec<String> = objects
        .iter()
        .filter(|o| o.kind == "table")
        .map(|o| o.name.clone())
        .collect();
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !available.contains(t))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(SourceError::UnknownTables { missing, available });
    }
    let mut plans = Vec::new();
    for o in objects
        .iter()
        .filter(|o| o.kind == "table" && tables.contains(&o.name))
    {
        let sql = o.sql.as_deref().unwrap_or_default();
        let columns: Vec<String> = table_columns(&source, &o.name)
            .map_err(sql_err)?
            .into_iter()
            .filter(|c| !c.is_generated() && (c.hidden == 0 || !is_virtual(sql)))
            .map(|c| crate::dump::quote_ident(&c.name))
            .collect();
        plans.push((o, columns.join(", ")));
    }
    drop(source);

    create_new(target)?;
    let copy = || -> rusqlite::Result<u64> {
        let conn = Connection::open(target)?;
        // The selected tables may reference tables that were not asked for.
        conn.execute_batch(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA foreign_keys=OFF;",
        )?;
        conn.execute("ATTACH DATABASE ?1 AS src", [from.to_string_lossy()])?;
        conn.execute_batch("BEGIN")?;
        let mut rows = 0u64;
        for (o, columns) in &plans {
            conn.execute_batch(o.sql.as_deref().unwrap_or_default())?;
            let name = crate::dump::quote_ident(&o.name);
            rows += conn.execute(
                &format!("INSERT INTO main.{name} ({columns}) SELECT {columns} FROM src.{name}"),
                [],
            )? as u64;
        }
        // Indexes after the rows (faster), triggers last (so they do not fire on the copy).
        for kind in ["index", "trigger"] {
            for o in objects
                .iter()
                .filter(|o| o.kind == kind && tables.contains(&o.tbl_name))
            {
                conn.execute_batch(o.sql.as_deref().unwrap_or_default())?;
            }
        }
        let has_sequence = |schema: &str| -> rusqlite::Result<bool> {
            conn.query_row(
                &format!(
                    "SELECT count(*) FROM {schema}.sqlite_master WHERE name = 'sqlite_sequence'"
                ),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        if has_sequence("main")? && has_sequence("src")? {
            conn.execute(
                "UPDATE main.sqlite_sequence SET seq = (SELECT s.seq FROM src.sqlite_sequence s
                   WHERE s.name = main.sqlite_sequence.name)
                 WHERE name IN (SELECT name FROM src.sqlite_sequence)",
                [],
            )?;
        }
        conn.execute_batch("COMMIT")?;
        conn.execute_batch("DETACH DATABASE src")?;
        Ok(rows)
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(target);
        SourceError::Copy {
            path: target.into(),
            message: e.to_string(),
        }
    })
}

/// Row counts, schema hash, integrity and foreign-key check of the database at `path`.
pub fn inspect(path: &Path) -> Result<Inspection, SourceError> {
    let timeout = Duration::from_secs(5);
    let conn = open_read_only(path, timeout)?;
    let sql_err = |e| classify(path, timeout, e);
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let objects = schema_objects(&conn, &[]).map_err(sql_err)?;
    let mut tables = BTreeMap::new();
    // Virtual tables hold no rows of their own (their shadow tables do, and are counted).
    for o in objects
        .iter()
        .filter(|o| o.kind == "table" && !is_virtual(o.sql.as_deref().unwrap_or_default()))
    {
        let n: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM main.{}",
                    crate::dump::quote_ident(&o.name)
                ),
                [],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        tables.insert(o.name.clone(), n as u64);
    }
    let integrity = {
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(sql_err)?;
        stmt.query_map([], |r| r.get::<_, String>(0))
            .map_err(sql_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_err)?
            .join("\n")
    };
    let foreign_key_violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .map_err(sql_err)?;
    conn.execute_batch("COMMIT").map_err(sql_err)?;
    Ok(Inspection {
        tables,
        schema_hash: schema_hash(&objects),
        integrity,
        foreign_key_violations: foreign_key_violations as u64,
    })
}
