//! The SQL dump writer (pure): values, identifiers, header and footer, in the deterministic
//! format of DESIGN §6.
//!
//! [`Writer`] formats into a reusable buffer and hands it to any [`std::io::Write`] in large
//! chunks; it knows nothing about where rows come from. Rows of a table go into multi-row
//! `INSERT INTO "t" ("a","b") VALUES (…),\n(…);` statements of about [`INSERT_BATCH_BYTES`]
//! each (one row per line), which the `sqlite3` shell and [`crate::source::sqlite::load`] both
//! replay far faster than one statement per row. Every value it writes must read back
//! bit-exactly through the real `sqlite3` shell (3.40 and later), which is how users restore:
//!
//! - REAL: SQLite 3.40's decimal parser is not correctly rounded (it scales in `long double`), so
//!   the shortest round-trip form does not always read back exactly (e.g. `62791.5517683045`).
//!   Integral values below 2^53 are written as `N.0` (parsed exactly), everything else with 17
//!   significant digits, which reads back exactly for magnitudes above 1e-290; below that the
//!   parser's subnormal path rounds twice, so tiny values are written as `(y/2^500)` where
//!   `y = x·2^500` is exact and so is the division. ±Inf is `9e999` / `-9e999`.
//! - TEXT: `'…'` with quotes doubled, unless it contains `\r` (the shell strips `\r` before `\n`
//!   when reading a file), NUL or invalid UTF-8: then `CAST(X'…' AS TEXT)`, byte-exact.
//! - BLOB: `X'…'` in lowercase hex, or `CAST('…' AS BLOB)` when its bytes are such text and
//!   at least 32 long (half the size of hex).

use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// One SQL value, as read from a source (borrowed; TEXT as raw bytes, never lossily decoded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// The first lines of a dump.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// The Patina database name.
    pub database: &'a str,
    pub generated_at: DateTime<Utc>,
    pub job_id: &'a str,
    /// Number of tables whose data the dump carries.
    pub tables: usize,
    pub total_rows: u64,
}

/// The kinds of schema objects written after the table data, in dump order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    Index,
    View,
    Trigger,
}

const RULE: &str = "-- ================================================\n";
/// Hand the buffer to the output once it holds this much.
const FLUSH_AT: usize = 256 * 1024;
/// Rows go into one multi-row `INSERT` until it holds about this many bytes: far less text than
/// one `INSERT` per row, and much faster to replay, while one statement stays small enough
/// for any loader (the `sqlite3` shell included).
pub const INSERT_BATCH_BYTES: usize = 64 * 1024;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Streams a dump into `out`, counting the bytes written.
pub struct Writer<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
    written: u64,
    /// `INSERT INTO "t" ("a","b") VALUES (` of the current table.
    insert_prefix: Vec<u8>,
    /// Values written in the current row (for the separating commas).
    row_values: usize,
    /// Where the open `INSERT` began in the output (`bytes()`), if one is open.
    open_insert: Option<u64>,
}

impl<'w> Writer<'w> {
    pub fn new(out: &'w mut dyn Write) -> Self {
        Writer {
            out,
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            written: 0,
            insert_prefix: Vec::new(),
            row_values: 0,
            open_insert: None,
        }
    }

    /// Bytes handed to the output so far plus those still buffered.
    pub fn bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// The header comment, then `PRAGMA foreign_keys=OFF; BEGIN TRANSACTION;`.
    pub fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        let b = &mut self.buf;
        b.extend_from_slice(RULE.as_bytes());
        push_comment_line(b, "Patina backup: ", h.database);
        let at = h.generated_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        push_comment_line(b, "Generated: ", &at);
        push_comment_line(b, "Job ID: ", h.job_id);
        push_comment_line(b, "Tables: ", &h.tables.to_string());
        push_comment_line(b, "Total Rows: ", &h.total_rows.to_string());
        b.extend_from_slice(RULE.as_bytes());
        b.extend_from_slice(b"\nPRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n");
        self.maybe_flush()
    }

    /// Starts a table section: comment, `DROP TABLE IF EXISTS`, the stored `CREATE TABLE` text,
    /// and prepares the `INSERT` prefix for `columns` (generated columns already left out).
    pub fn table(
        &mut self,
        name: &str,
        rows: u64,
        create_sql: &str,
        columns: &[String],
    ) -> io::Result<()> {
        self.close_insert();
        let b = &mut self.buf;
        b.push(b'\n');
        push_comment_line(b, "Table: ", name);
        push_comment_line(b, "Rows: ", &rows.to_string());
        b.extend_from_slice(b"DROP TABLE IF EXISTS ");
        push_ident(b, name);
        b.extend_from_slice(b";\n");
        push_statement(b, create_sql);
        self.insert_prefix = insert_prefix(name, columns);
        self.maybe_flush()
    }

    /// A virtual table, the way `sqlite3 .dump` writes one: its schema row goes straight into
    /// `sqlite_master` (creating it would initialise fresh shadow tables); the shadow tables
    /// that hold its data are dumped as ordinary tables.
    pub fn virtual_table(&mut self, name: &str, sql: &str) -> io::Result<()> {
        self.close_insert();
        let b = &mut self.buf;
        b.push(b'\n');
        push_comment_line(b, "Virtual table: ", name);
        b.extend_from_slice(
            b"PRAGMA writable_schema=ON;\n\
              INSERT INTO sqlite_master (type,name,tbl_name,rootpage,sql) VALUES ('table',",
        );
        push_text(b, name.as_bytes());
        b.push(b',');
        push_text(b, name.as_bytes());
        b.extend_from_slice(b",0,");
        push_text(b, sql.as_bytes());
        b.extend_from_slice(b");\nPRAGMA writable_schema=OFF;\n");
        self.maybe_flush()
    }

    /// Starts one row of the current table: a new `INSERT … VALUES (`, or `,\n(` continuing
    /// the open one.
    pub fn row_start(&mut self) {
        if self.open_insert.is_some() {
            self.buf.extend_from_slice(b",\n(");
        } else {
            self.open_insert = Some(self.bytes());
            self.buf.extend_from_slice(&self.insert_prefix);
        }
        self.row_values = 0;
    }

    /// One value of the current row.
    pub fn value(&mut self, v: Value<'_>) {
        if self.row_values > 0 {
            self.buf.push(b',');
        }
        self.row_values += 1;
        push_value(&mut self.buf, v);
    }

    /// Ends the current row; ends the `INSERT` too once it is [`INSERT_BATCH_BYTES`] long.
    pub fn row_end(&mut self) -> io::Result<()> {
        self.buf.push(b')');
        if let Some(start) = self.open_insert
            && self.bytes() - start >= INSERT_BATCH_BYTES as u64
        {
            self.close_insert();
        }
        self.maybe_flush()
    }

    /// Ends the open `INSERT`, if any.
    fn close_insert(&mut self) {
        if self.open_insert.take().is_some() {
            self.buf.extend_from_slice(b";\n");
        }
    }

    /// An index, view or trigger, after all table data (so triggers do not fire on restore).
    /// Views are preceded by `DROP VIEW IF EXISTS`; indexes and triggers go with their table.
    pub fn object(&mut self, kind: ObjectKind, name: &str, sql: &str) -> io::Result<()> {
        self.close_insert();
        let b = &mut self.buf;
        if kind == ObjectKind::View {
            b.extend_from_slice(b"DROP VIEW IF EXISTS ");
            push_ident(b, name);
            b.extend_from_slice(b";\n");
        }
        push_statement(b, sql);
        self.maybe_flush()
    }

    /// Starts the `sqlite_sequence` section; rows follow with [`Writer::row_start`].
    pub fn sqlite_sequence(&mut self) -> io::Result<()> {
        self.close_insert();
        self.buf
            .extend_from_slice(b"\n-- sqlite_sequence\nDELETE FROM sqlite_sequence;\n");
        self.insert_prefix = b"INSERT INTO sqlite_sequence (name,seq) VALUES (".to_vec();
        self.maybe_flush()
    }

    /// `COMMIT; PRAGMA foreign_keys=ON;` then the footer; flushes and returns the total bytes.
    pub fn finish(mut self, duration: Duration) -> io::Result<u64> {
        self.close_insert();
        self.buf
            .extend_from_slice(b"\nCOMMIT;\nPRAGMA foreign_keys=ON;\n");
        let size = self.bytes();
        let b = &mut self.buf;
        b.push(b'\n');
        b.extend_from_slice(RULE.as_bytes());
        b.extend_from_slice(b"-- Backup complete\n");
        push_comment_line(b, "Duration: ", &format!("{:.3}s", duration.as_secs_f64()));
        push_comment_line(b, "Size: ", &format!("{size} bytes"));
        b.extend_from_slice(RULE.as_bytes());
        self.hand_over()?;
        self.out.flush()?;
        Ok(self.written)
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Writes the buffer to the output without flushing it: a compressor flushed every few
    /// hundred KiB ends a block each time, which costs both speed and ratio.
    fn hand_over(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// `-- <label><text>` on one line; line breaks in `text` (names may contain them) become spaces
/// so a name can never end the comment early.
fn push_comment_line(b: &mut Vec<u8>, label: &str, text: &str) {
    b.extend_from_slice(b"-- ");
    b.extend_from_slice(label.as_bytes());
    for &c in text.as_bytes() {
        b.push(if c == b'\n' || c == b'\r' { b' ' } else { c });
    }
    b.push(b'\n');
}

/// Stored schema text followed by `;` and a newline.
fn push_statement(b: &mut Vec<u8>, sql: &str) {
    b.extend_from_slice(sql.as_bytes());
    b.extend_from_slice(b";\n");
}

/// `INSERT INTO "t" ("a","b") VALUES (`.
pub fn insert_prefix(table: &str, columns: &[String]) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + table.len() + columns.len() * 12);
    b.extend_from_slice(b"INSERT INTO ");
    push_ident(&mut b, table);
    b.extend_from_slice(b" (");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        push_ident(&mut b, c);
    }
    b.extend_from_slice(b") VALUES (");
    b
}

/// An identifier in double quotes, with `"` doubled: `a"b` → `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    let mut b = Vec::with_capacity(name.len() + 2);
    push_ident(&mut b, name);
    String::from_utf8(b).expect("quoting keeps UTF-8 valid")
}

/// Appends [`quote_ident`] of `name`.
pub fn push_ident(b: &mut Vec<u8>, name: &str) {
    b.push(b'"');
    for &c in name.as_bytes() {
        if c == b'"' {
            b.push(b'"');
        }
        b.push(c);
    }
    b.push(b'"');
}

/// Appends the SQL literal of `v`.
pub fn push_value(b: &mut Vec<u8>, v: Value<'_>) {
    match v {
        Value::Null => b.extend_from_slice(b"NULL"),
        Value::Integer(i) => push_integer(b, i),
        Value::Real(r) => push_real(b, r),
        Value::Text(t) => push_text(b, t),
        Value::Blob(x) => push_blob_value(b, x),
    }
}

/// Decimal integer; `i64::MIN` is read back as an integer by SQLite.
pub fn push_integer(b: &mut Vec<u8>, i: i64) {
    b.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// 2^500, exact as a double and parsed exactly from this text by SQLite 3.40.
const TWO_POW_500: f64 = 3.273_390_607_896_142e150;
const TWO_POW_500_TEXT: &str = "3.2733906078961419e150";

/// A REAL literal that SQLite (3.40's parser included) reads back bit-exactly; see module docs.
pub fn push_real(b: &mut Vec<u8>, r: f64) {
    if r.is_nan() {
        // SQLite never stores NaN (it becomes NULL); keep the dump loadable if one appears.
        b.extend_from_slice(b"NULL");
    } else if r.is_infinite() {
        b.extend_from_slice(if r > 0.0 { b"9e999" } else { b"-9e999" });
    } else if r.fract() == 0.0 && r.abs() < 9_007_199_254_740_992.0 {
        // Exact integer: `N.0` (and `-0.0`) is parsed exactly and reads well.
        if r == 0.0 && r.is_sign_negative() {
            b.extend_from_slice(b"-0.0");
        } else {
            push_integer(b, r as i64);
            b.extend_from_slice(b".0");
        }
    } else if r.abs() < 1e-290 {
        // Multiplying by a power of two is exact here (the result is a normal number).
        let _ = write!(b, "({:.16e}/{TWO_POW_500_TEXT})", r * TWO_POW_500);
    } else if !push_real_17_fast(b, r) {
        let _ = write!(b, "{r:.16e}");
    }
}

/// `10^i` for `i` in `0..=22`.
const POW10: [u128; 23] = {
    let mut t = [1u128; 23];
    let mut i = 1;
    while i < 23 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Writes exactly what `format!("{r:.16e}")` writes (17 significant digits, correctly rounded)
/// for a finite normal `r` with `1e-6 <= |r| < 1e17`, with integer arithmetic: `r = m·2^e`, so
/// `r·10^p` is `m·10^p` shifted, which fits in a `u128` in this range. Returns `false` (and
/// writes nothing) outside that range and on an exact tie, which the formatter then handles.
fn push_real_17_fast(b: &mut Vec<u8>, r: f64) -> bool {
    const LOW: u128 = 10_000_000_000_000_000; // 10^16
    const HIGH: u128 = 100_000_000_000_000_000; // 10^17
    let bits = r.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 || biased == 0x7ff {
        return false;
    }
    let m = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    let e = biased - 1075; // r = ±m·2^e
    // The decimal exponent: floor(log10 2^(biased-1023)) (exact for these exponents), which
    // is k or k - 1; the loop corrects it from the exact integer part.
    let mut k = ((biased - 1023) * 78_913) >> 18;
    for _ in 0..3 {
        if !(-6..=16).contains(&k) {
            return false;
        }
        let n = m * POW10[(16 - k) as usize]; // < 2^53 · 10^22 < 2^127
        let (q, rounds_up) = if e >= 0 {
            if n.leading_zeros() <= e as u32 {
                return false;
            }
            (n << e, false)
        } else {
            let s = (-e) as u32;
            if s >= 127 {
                return false;
            }
            let rem = n & ((1u128 << s) - 1);
            let half = 1u128 << (s - 1);
            if rem == half {
                return false; // a tie: leave the rounding rule to the formatter
            }
            (n >> s, rem > half)
        };
        if q < LOW {
            k -= 1;
            continue;
        }
        if q >= HIGH {
            k += 1;
            continue;
        }
        let mut d = q + u128::from(rounds_up);
        let mut exp = k;
        if d == HIGH {
            d = LOW;
            exp += 1;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(d as u64).as_bytes();
        if r < 0.0 {
            b.push(b'-');
        }
        b.push(digits[0]);
        b.push(b'.');
        b.extend_from_slice(&digits[1..]);
        b.push(b'e');
        b.extend_from_slice(itoa::Buffer::new().format(exp).as_bytes());
        return true;
    }
    false
}

/// A TEXT literal: `'…'`, or `CAST(X'…' AS TEXT)` when the bytes hold `\r`, NUL or invalid
/// UTF-8 (which the shell would not read back exactly).
pub fn push_text(b: &mut Vec<u8>, t: &[u8]) {
    // Both scans are vectorised: this runs for every TEXT value of the dump.
    let plain = memchr::memchr2(b'\r', 0, t).is_none() && simdutf8::basic::from_utf8(t).is_ok();
    if plain {
        b.reserve(t.len() + 2);
        b.push(b'\'');
        let mut rest = t;
        while let Some(q) = memchr::memchr(b'\'', rest) {
            b.extend_from_slice(&rest[..=q]);
            b.push(b'\'');
            rest = &rest[q + 1..];
        }
        b.extend_from_slice(rest);
        b.push(b'\'');
    } else {
        b.extend_from_slice(b"CAST(");
        push_blob(b, t);
        b.extend_from_slice(b" AS TEXT)");
    }
}

/// The two lowercase hex digits of every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// BLOBs at least this long whose bytes are also plain text are written as text (see
/// [`push_blob_value`]); below it the hex form is about as short.
const BLOB_AS_TEXT_MIN: usize = 32;

/// A BLOB literal: `CAST('…' AS BLOB)` when the bytes are text the shell reads back exactly
/// (UTF-8 without `\r` or NUL, as for TEXT) — half the size of hex for the JSON and other
/// text applications keep in BLOBs, and cheaper to write, compress and replay — else `X'…'`.
/// Like `CAST(X'…' AS TEXT)` for TEXT, this gives the same bytes in a UTF-8 database, which
/// is what restoring into a new file creates.
pub fn push_blob_value(b: &mut Vec<u8>, x: &[u8]) {
    if x.len() >= BLOB_AS_TEXT_MIN
        && memchr::memchr2(b'\r', 0, x).is_none()
        && simdutf8::basic::from_utf8(x).is_ok()
    {
        b.extend_from_slice(b"CAST(");
        push_text(b, x);
        b.extend_from_slice(b" AS BLOB)");
    } else {
        push_blob(b, x);
    }
}

/// `X'…'` in lowercase hex; `X''` when empty.
pub fn push_blob(b: &mut Vec<u8>, x: &[u8]) {
    b.reserve(x.len() * 2 + 3);
    b.extend_from_slice(b"X'");
    let start = b.len();
    b.resize(start + x.len() * 2, 0);
    for (pair, &c) in b[start..].chunks_exact_mut(2).zip(x) {
        pair.copy_from_slice(&HEX_PAIRS[c as usize]);
    }
    b.push(b'\'');
}

// ---- Reading back Patina's own INSERT statements -------------------------------------------

/// One multi-row `INSERT` in exactly the form [`Writer`] writes it, decoded: the loader binds
/// these values to one prepared statement per table instead of having SQLite parse and compile
/// the SQL text. Produced by [`InsertReader::read`].
#[derive(Debug)]
pub struct Insert<'a> {
    /// `INSERT INTO "t" ("a","b") VALUES ` — everything before the first row.
    pub head: &'a [u8],
    /// Values per row (the columns named in `head`).
    pub columns: usize,
    /// The rows, `columns` values each, one after the other.
    pub values: Vec<Value<'a>>,
}

impl Insert<'_> {
    /// The rows, each a slice of `columns` values.
    pub fn rows(&self) -> impl Iterator<Item = &[Value<'_>]> {
        self.values.chunks_exact(self.columns.max(1))
    }
}

/// Where a decoded TEXT or BLOB lives: in the statement itself, or (unescaped, unhexed) in the
/// reader's scratch buffer.
#[derive(Debug, Clone, Copy)]
enum Raw {
    Null,
    Integer(i64),
    Real(f64),
    Text(Span),
    Blob(Span),
}

#[derive(Debug, Clone, Copy)]
enum Span {
    Statement(usize, usize),
    Scratch(usize, usize),
}

/// Decodes [`Insert`]s, reusing its buffers from one statement to the next.
#[derive(Debug, Default)]
pub struct InsertReader {
    scratch: Vec<u8>,
    raw: Vec<Raw>,
    real: Vec<u8>,
}

impl InsertReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `stmt` if it is one `INSERT INTO "t" ("a",…) VALUES (…),\n(…);` whose every
    /// literal is one [`Writer`] writes, and denotes exactly the value SQLite would read from it;
    /// `None` for anything else (other statements, hand-edited literals, an expression, a
    /// REAL not in its canonical form), which the caller hands to SQLite as text. Trailing
    /// whitespace after the `;` is allowed.
    pub fn read<'a>(&'a mut self, stmt: &'a [u8]) -> Option<Insert<'a>> {
        self.scratch.clear();
        self.raw.clear();
        if self.scratch.capacity() > 4 * 1024 * 1024 {
            self.scratch.shrink_to(64 * 1024); // one huge BLOB must not pin its memory
        }
        let (head_len, columns) = parse_head(stmt)?;
        if columns == 0 || memchr::memchr(0, stmt).is_some() {
            return None;
        }
        let mut p = Cursor {
            s: stmt,
            i: head_len,
        };
        loop {
            p.expect(b'(')?;
            for c in 0..columns {
                if c > 0 {
                    p.expect(b',')?;
                }
                let v = self.value(&mut p)?;
                self.raw.push(v);
            }
            p.expect(b')')?;
            match p.next()? {
                b',' => {
                    p.expect(b'\n')?;
                }
                b';' => break,
                _ => return None,
            }
        }
        if !stmt[p.i..].iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let scratch = &self.scratch;
        let span = |s: Span| match s {
            Span::Statement(a, b) => &stmt[a..b],
            Span::Scratch(a, b) => &scratch[a..b],
        };
        let values = self
            .raw
            .iter()
            .map(|r| match *r {
                Raw::Null => Value::Null,
                Raw::Integer(i) => Value::Integer(i),
                Raw::Real(x) => Value::Real(x),
                Raw::Text(s) => Value::Text(span(s)),
                Raw::Blob(s) => Value::Blob(span(s)),
            })
            .collect();
        Some(Insert {
            head: &stmt[..head_len],
            columns,
            values,
        })
    }

    /// One literal at the cursor.
    fn value(&mut self, p: &mut Cursor<'_>) -> Option<Raw> {
        let rest = &p.s[p.i..];
        match *rest.first()? {
            b'\'' => Some(Raw::Text(self.quoted(p)?)),
            b'X' | b'x' => Some(Raw::Blob(self.hex(p)?)),
            b'N' if rest.starts_with(b"NULL") => {
                p.i += 4;
                Some(Raw::Null)
            }
            b'C' if rest.starts_with(b"CAST(X'") => {
                p.i += 5;
                let s = self.hex(p)?;
                p.literal(b" AS TEXT)")?;
                Some(Raw::Text(s))
            }
            b'C' if rest.starts_with(b"CAST('") => {
                p.i += 5;
                let s = self.quoted(p)?;
                p.literal(b" AS BLOB)")?;
                Some(Raw::Blob(s))
            }
            b'-' | b'0'..=b'9' => self.number(p),
            _ => None,
        }
    }

    /// `'…'` with `''` for a quote.
    fn quoted(&mut self, p: &mut Cursor<'_>) -> Option<Span> {
        p.expect(b'\'')?;
        let start = p.i;
        let mut copied: Option<usize> = None; // scratch start, once a `''` was seen
        let mut from = start;
        loop {
            let q = from + memchr::memchr(b'\'', &p.s[from..])?;
            if p.s.get(q + 1) == Some(&b'\'') {
                copied.get_or_insert(self.scratch.len());
                self.scratch.extend_from_slice(&p.s[from..=q]);
                from = q + 2;
                continue;
            }
            p.i = q + 1;
            return Some(match copied {
                None => Span::Statement(start, q),
                Some(at) => {
                    self.scratch.extend_from_slice(&p.s[from..q]);
                    Span::Scratch(at, self.scratch.len())
                }
            });
        }
    }

    /// `X'…'`: an even number of hex digits (either case, as SQLite reads them).
    fn hex(&mut self, p: &mut Cursor<'_>) -> Option<Span> {
        p.i += 1; // the X
        p.expect(b'\'')?;
        let end = p.i + memchr::memchr(b'\'', &p.s[p.i..])?;
        let digits = &p.s[p.i..end];
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let at = self.scratch.len();
        self.scratch.resize(at + digits.len() / 2, 0);
        let mut bad = 0u8;
        for (out, pair) in self.scratch[at..].iter_mut().zip(digits.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
            bad |= (hi | lo) & 0x80;
            *out = hi << 4 | (lo & 0x0f);
        }
        if bad != 0 {
            return None;
        }
        p.i = end + 1;
        Some(Span::Scratch(at, self.scratch.len()))
    }

    /// An INTEGER or REAL literal, accepted only in the canonical form [`push_integer`] or
    /// [`push_real`] writes for the value it denotes: then SQLite reads exactly that value
    /// (which is what the writer guarantees), and so does this parser.
    fn number(&mut self, p: &mut Cursor<'_>) -> Option<Raw> {
        let start = p.i;
        let len = p.s[start..]
            .iter()
            .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(p.s.len() - start);
        let token = &p.s[start..start + len];
        p.i += len;
        // ASCII by construction.
        let text = std::str::from_utf8(token).ok()?;
        let digits = token.strip_prefix(b"-").unwrap_or(token);
        if digits.iter().all(u8::is_ascii_digit) {
            // Canonical: no sign but a leading `-`, no leading zero, not `-0`; in range.
            let canonical = match digits {
                [] => false,
                [b'0'] => digits.len() == token.len(),
                [first, ..] => *first != b'0',
            };
            return canonical
                .then(|| text.parse().ok())
                .flatten()
                .map(Raw::Integer);
        }
        let x: f64 = text.parse().ok()?;
        self.real.clear();
        push_real(&mut self.real, x);
        (self.real == token).then_some(Raw::Real(x))
    }
}

/// The value of each hex digit (either case, as SQLite reads them); 0x80 for other bytes.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// `INSERT INTO "t" ("a","b") VALUES ` → its length (up to the first row's `(`) and the
/// number of columns.
fn parse_head(stmt: &[u8]) -> Option<(usize, usize)> {
    let mut p = Cursor { s: stmt, i: 0 };
    p.literal(b"INSERT INTO ")?;
    p.ident()?;
    p.literal(b" (")?;
    let mut columns = 0;
    loop {
        p.ident()?;
        columns += 1;
        match p.next()? {
            b',' => continue,
            b')' => break,
            _ => return None,
        }
    }
    p.literal(b" VALUES ")?;
    Some((p.i, columns))
}

/// A position in a statement being decoded.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.s.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn literal(&mut self, text: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(text) {
            self.i += text.len();
            Some(())
        } else {
            None
        }
    }

    /// `"…"` with `""` for a quote.
    fn ident(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            let q = self.i + memchr::memchr(b'"', &self.s[self.i..])?;
            self.i = q + 1;
            if self.s.get(self.i) == Some(&b'"') {
                self.i += 1;
            } else {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: Value<'_>) -> String {
        let mut b = Vec::new();
        push_value(&mut b, v);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote_ident("users"), r#""users""#);
        assert_eq!(quote_ident("order"), r#""order""#);
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_ident("with space"), r#""with space""#);
        assert_eq!(quote_ident("ünï😀"), "\"ünï😀\"");
        assert_eq!(quote_ident(""), r#""""#);
    }

    #[test]
    fn insert_prefix_quotes_table_and_columns() {
        let p = insert_prefix("a\"b", &["id".into(), "with space".into()]);
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"INSERT INTO "a""b" ("id","with space") VALUES ("#
        );
    }

    #[test]
    fn integers() {
        assert_eq!(lit(Value::Integer(0)), "0");
        assert_eq!(lit(Value::Integer(-42)), "-42");
        assert_eq!(lit(Value::Integer(i64::MAX)), "9223372036854775807");
        assert_eq!(lit(Value::Integer(i64::MIN)), "-9223372036854775808");
        assert_eq!(lit(Value::Null), "NULL");
    }

    #[test]
    fn reals() {
        assert_eq!(lit(Value::Real(1.0)), "1.0");
        assert_eq!(lit(Value::Real(-0.0)), "-0.0");
        assert_eq!(lit(Value::Real(0.0)), "0.0");
        assert_eq!(lit(Value::Real(-1234.0)), "-1234.0");
        assert_eq!(lit(Value::Real(0.1)), "1.0000000000000001e-1");
        assert_eq!(lit(Value::Real(1e308)), "1.0000000000000000e308");
        assert_eq!(lit(Value::Real(f64::INFINITY)), "9e999");
        assert_eq!(lit(Value::Real(f64::NEG_INFINITY)), "-9e999");
        assert_eq!(lit(Value::Real(f64::NAN)), "NULL");
        assert_eq!(
            lit(Value::Real(5e-324)),
            format!("({:.16e}/{TWO_POW_500_TEXT})", 5e-324 * TWO_POW_500)
        );
        assert_eq!(TWO_POW_500, 2f64.powi(500));
        assert_eq!(TWO_POW_500_TEXT.parse::<f64>().unwrap(), TWO_POW_500);
    }

    /// Every REAL literal denotes exactly the original value (Rust's parser is exact; the
    /// integration tests check the same against the real `sqlite3` shell).
    #[test]
    fn real_literals_denote_the_exact_value() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut samples = vec![
            5e-324,
            -5e-324,
            2.2250738585072014e-308,
            1e-290,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let f = f64::from_bits(state);
            if f.is_finite() {
                samples.push(f);
            }
        }
        for f in samples {
            let s = lit(Value::Real(f));
            let back = if let Some(inner) = s.strip_prefix('(') {
                let (y, p) = inner.trim_end_matches(')').split_once('/').unwrap();
                y.parse::<f64>().unwrap() / p.parse::<f64>().unwrap()
            } else {
                s.parse::<f64>().unwrap()
            };
            assert_eq!(back.to_bits(), f.to_bits(), "{f:e} written as {s}");
        }
    }

    /// The integer fast path writes exactly what the formatter writes.
    #[test]
    fn fast_reals_match_the_formatter() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut samples = vec![0.1, 0.5, 1.5, 123.45, 9.999_999_999_999_999e16, 1e-6, 1e16];
        for n in 1..80 {
            samples.push(2f64.powi(-n));
            samples.push(10f64.powi(n % 23 - 6) * 0.999_999_999_999_999_9);
        }
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Random bits, and values like prices and measurements.
            samples.push(f64::from_bits(state));
            samples.push((state % 10_000_000) as f64 / 100.0 + 0.01);
            samples.push((state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0);
        }
        let mut hits = 0;
        for f in &samples {
            for f in [*f, -f] {
                let mut fast = Vec::new();
                if push_real_17_fast(&mut fast, f) {
                    hits += 1;
                    assert_eq!(String::from_utf8(fast).unwrap(), format!("{f:.16e}"));
                }
            }
        }
        // Prices and measurements all take the fast path; random bits rarely do.
        assert!(hits > samples.len(), "{hits} of {}", samples.len() * 2);
    }

    #[test]
    fn text_is_quoted_or_hex_cast() {
        assert_eq!(lit(Value::Text(b"")), "''");
        assert_eq!(lit(Value::Text(b"it's")), "'it''s'");
        assert_eq!(lit(Value::Text(b"''")), "''''''");
        assert_eq!(lit(Value::Text(b"a\nb\tc")), "'a\nb\tc'");
        assert_eq!(lit(Value::Text("😀".as_bytes())), "'😀'");
        assert_eq!(lit(Value::Text(b"a\r\nb")), "CAST(X'610d0a62' AS TEXT)");
        assert_eq!(lit(Value::Text(b"a\0b")), "CAST(X'610062' AS TEXT)");
        assert_eq!(lit(Value::Text(b"\xff\xfe")), "CAST(X'fffe' AS TEXT)");
    }

    #[test]
    fn blobs_are_lowercase_hex() {
        assert_eq!(lit(Value::Blob(b"")), "X''");
        assert_eq!(lit(Value::Blob(&[0x00, 0xab, 0xff, 0x10])), "X'00abff10'");
        assert_eq!(lit(Value::Blob(b"short text")), "X'73686f72742074657874'");
    }

    #[test]
    fn long_text_like_blobs_are_cast_from_text() {
        let json = r#"{"items":[{"sku":"it's","qty":1}],"note":"café"}"#.as_bytes();
        assert_eq!(
            lit(Value::Blob(json)),
            "CAST('{\"items\":[{\"sku\":\"it''s\",\"qty\":1}],\"note\":\"café\"}' AS BLOB)"
        );
        let mut crlf = json.to_vec();
        crlf.extend_from_slice(b"\r\n");
        assert!(lit(Value::Blob(&crlf)).starts_with("X'"));
        let mut nul = json.to_vec();
        nul.push(0);
        assert!(lit(Value::Blob(&nul)).starts_with("X'"));
        let mut invalid = json.to_vec();
        invalid.push(0xff);
        assert!(lit(Value::Blob(&invalid)).starts_with("X'"));
    }

    #[test]
    fn writer_sections_and_footer_size() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        w.header(&Header {
            database: "app",
            generated_at: at,
            job_id: "job-1",
            tables: 1,
            total_rows: 1,
        })
        .unwrap();
        w.table("t", 1, "CREATE TABLE t(a, b)", &["a".into(), "b".into()])
            .unwrap();
        w.row_start();
        w.value(Value::Integer(1));
        w.value(Value::Text(b"x"));
        w.row_end().unwrap();
        w.object(ObjectKind::View, "v", "CREATE VIEW v AS SELECT a FROM t")
            .unwrap();
        let total = w.finish(Duration::from_millis(1234)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(total as usize, text.len());
        let body_end = text.find("\n-- ====").unwrap();
        let end = "\nCOMMIT;\nPRAGMA foreign_keys=ON;\n";
        let size = text.find(end).unwrap() + end.len();
        assert!(text.contains(&format!("-- Size: {size} bytes\n")), "{text}");
        assert!(body_end > 0);
        assert!(text.starts_with(
            "-- ================================================\n\
             -- Patina backup: app\n\
             -- Generated: 2026-01-02T03:04:05Z\n\
             -- Job ID: job-1\n\
             -- Tables: 1\n\
             -- Total Rows: 1\n\
             -- ================================================\n\
             \nPRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n\
             \n-- Table: t\n-- Rows: 1\n\
             DROP TABLE IF EXISTS \"t\";\nCREATE TABLE t(a, b);\n\
             INSERT INTO \"t\" (\"a\",\"b\") VALUES (1,'x');\n\
             DROP VIEW IF EXISTS \"v\";\nCREATE VIEW v AS SELECT a FROM t;\n\
             \nCOMMIT;\nPRAGMA foreign_keys=ON;\n\n"
        ));
        assert!(text.contains("-- Duration: 1.234s\n"));
    }

    /// The INSERT statements a [`Writer`] writes for `rows` of a table with `columns`.
    fn inserts(columns: &[&str], rows: &[Vec<Value<'_>>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        w.table("t\"x y", rows.len() as u64, "CREATE TABLE t(a)", &names)
            .unwrap();
        for row in rows {
            w.row_start();
            for v in row {
                w.value(*v);
            }
            w.row_end().unwrap();
        }
        w.finish(Duration::ZERO).unwrap();
        let text = String::from_utf8(out).unwrap();
        // Statements start at the beginning of a line; values may hold newlines, not "\nINSERT".
        let pieces: Vec<&str> = text.split("\nINSERT INTO ").skip(1).collect();
        let last = pieces.len() - 1;
        pieces
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = if i == last {
                    &s[..s.find(");\n").unwrap() + 2]
                } else {
                    s
                };
                format!("INSERT INTO {s}\n").into_bytes()
            })
            .collect()
    }

    /// Every kind of value the writer writes, with the edges of each.
    fn edge_values() -> Vec<Value<'static>> {
        vec![
            Value::Null,
            Value::Integer(0),
            Value::Integer(-1),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Real(0.0),
            Value::Real(-0.0),
            Value::Real(1.0),
            Value::Real(-1234.0),
            Value::Real(0.1),
            Value::Real(1e308),
            Value::Real(-1e308),
            Value::Real(f64::MAX),
            Value::Real(1e-290),
            Value::Real(-1.5e-200),
            Value::Real(62791.5517683045),
            Value::Real(9_007_199_254_740_993.0),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NEG_INFINITY),
            Value::Text(b""),
            Value::Text(b"it's"),
            Value::Text(b"''"),
            Value::Text(b"line\nbreak;\n"),
            Value::Text("naïve 日本語 😀 \"q\" ,);".as_bytes()),
            Value::Text(b"cr\r\nlf"),
            Value::Text(b"nul\0byte"),
            Value::Text(b"\xff\xfe not utf-8"),
            Value::Blob(b""),
            Value::Blob(b"\x00\x01\xff"),
            Value::Blob(b"{\"json\": \"a blob that is plain text, it's long\"}"),
            Value::Blob(b"a blob with a\r\ncarriage return and enough bytes"),
        ]
    }

    #[test]
    fn the_reader_decodes_what_the_writer_writes() {
        let values = edge_values();
        // One column per value, and the same values as rows of one column.
        let columns: Vec<String> = (0..values.len()).map(|i| format!("c{i}")).collect();
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        let wide = inserts(&names, &[values.clone(), values.clone()]);
        let tall = inserts(
            &["only"],
            &values.iter().map(|v| vec![*v]).collect::<Vec<_>>(),
        );
        let mut reader = InsertReader::new();
        for v in &values {
            let one = inserts(&["a"], &[vec![*v]]);
            assert!(
                reader.read(&one[0]).is_some(),
                "{v:?}: {}",
                String::from_utf8_lossy(&one[0])
            );
        }
        for (stmts, columns) in [(wide, values.len()), (tall, 1)] {
            assert_eq!(stmts.len(), 1);
            let insert = reader.read(&stmts[0]).expect("decoded");
            assert_eq!(insert.columns, columns);
            let head = "INSERT INTO \"t\"\"x y\" (";
            assert!(insert.head.starts_with(head.as_bytes()));
            assert!(insert.head.ends_with(b") VALUES "));
            let expected: Vec<Value<'_>> = if columns == 1 {
                values.clone()
            } else {
                [values.clone(), values.clone()].concat()
            };
            assert_eq!(insert.values.len(), expected.len());
            for (got, want) in insert.values.iter().zip(&expected) {
                match (got, want) {
                    // NaN-free: compare REALs by their bits (-0.0 is not 0.0).
                    (Value::Real(a), Value::Real(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                    _ => assert_eq!(got, want),
                }
            }
        }
    }

    #[test]
    fn the_reader_follows_the_writer_across_statements() {
        // Rows long enough to fill several statements of INSERT_BATCH_BYTES.
        let text = "x'y\n".repeat(1000);
        let rows: Vec<Vec<Value<'_>>> = (0..100)
            .map(|i| vec![Value::Integer(i), Value::Text(text.as_bytes())])
            .collect();
        let stmts = inserts(&["id", "body"], &rows);
        assert!(stmts.len() > 3);
        let mut reader = InsertReader::new();
        let mut seen = 0;
        for s in &stmts {
            let insert = reader.read(s).expect("decoded");
            for row in insert.rows() {
                assert_eq!(row, &[Value::Integer(seen), Value::Text(text.as_bytes())]);
                seen += 1;
            }
        }
        assert_eq!(seen, 100);
    }

    #[test]
    fn the_reader_leaves_anything_else_to_sqlite() {
        let mut reader = InsertReader::new();
        for stmt in [
            // Not Patina's INSERT form.
            "INSERT INTO t VALUES (1);\n",
            "INSERT INTO \"t\" VALUES (1);\n",
            "INSERT INTO sqlite_sequence (name,seq) VALUES ('t',3);\n",
            "insert into \"t\" (\"a\") values (1);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (1),(2);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (1);\nINSERT INTO \"t\" (\"a\") VALUES (2);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (1) ON CONFLICT DO NOTHING;\n",
            "INSERT INTO \"t\" (\"a\",\"b\") VALUES (1);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (1,2);\n",
            "CREATE TABLE t(a);\n",
            // Literals not in the writer's canonical form, or expressions.
            "INSERT INTO \"t\" (\"a\") VALUES (1e5);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (1.5);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (0.1);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (007);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (+7);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (-0);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (9223372036854775808);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (0x10);\n",
            "INSERT INTO \"t\" (\"a\") VALUES ((1.0/2.0));\n",
            "INSERT INTO \"t\" (\"a\") VALUES ('a' || 'b');\n",
            "INSERT INTO \"t\" (\"a\") VALUES (X'abc');\n",
            "INSERT INTO \"t\" (\"a\") VALUES (X'zz');\n",
            "INSERT INTO \"t\" (\"a\") VALUES (CAST(1 AS TEXT));\n",
            "INSERT INTO \"t\" (\"a\") VALUES (null);\n",
            "INSERT INTO \"t\" (\"a\") VALUES ( 1);\n",
            "INSERT INTO \"t\" (\"a\") VALUES ('unterminated);\n",
            "INSERT INTO \"t\" (\"a\") VALUES ('nul\0');\n",
        ] {
            assert!(reader.read(stmt.as_bytes()).is_none(), "{stmt:?}");
        }
        // Tiny REALs are written as a division, which SQLite evaluates.
        for x in [f64::MIN_POSITIVE, 1e-300, 5e-324] {
            let stmt = &inserts(&["a"], &[vec![Value::Real(x)]])[0];
            assert!(reader.read(stmt).is_none());
        }
        // The canonical forms of the same values are read.
        for stmt in [
            "INSERT INTO \"t\" (\"a\") VALUES (100000.0);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (1.0000000000000001e-1);\n",
            "INSERT INTO \"t\" (\"a\") VALUES (7),\n(-7);\n\n",
            "INSERT INTO \"t\" (\"a\") VALUES (X'ABcd');",
        ] {
            assert!(reader.read(stmt.as_bytes()).is_some(), "{stmt:?}");
        }
    }
}
