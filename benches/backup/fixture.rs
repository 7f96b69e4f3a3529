//! Deterministic, seeded fixture databases for the benchmark: a realistic application schema
//! (users, orders, a narrow high-volume events table, documents with text and BLOBs, a WITHOUT
//! ROWID settings table, an AUTOINCREMENT audit log), with indexes, a view, triggers and foreign
//! keys, at a chosen scale. The same scale and [`VERSION`] always give the same rows.
//!
//! A second shape, [`Shape::Documents`], is text- and BLOB-heavy: long TEXT articles with JSON
//! metadata, BLOB attachments (binary, JSON and plain text) and a table of narrow events beside
//! them, the kind of database a CMS or a notes app keeps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, params};

/// Bump when the generator changes: cached fixtures carry it in their file name.
pub const VERSION: u32 = 3;

/// What kind of rows a fixture holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// The application schema: mostly narrow rows (5 million events at 1.0).
    Narrow,
    /// Long TEXT documents, JSON and BLOB attachments beside narrow events.
    Documents,
}

/// A fixture size and shape. Row counts scale linearly with `factor`; 1.0 is about 1 GB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub name: &'static str,
    pub factor: f64,
    pub shape: Shape,
}

pub const SMALL: Scale = Scale {
    name: "small",
    factor: 0.05,
    shape: Shape::Narrow,
};
pub const LARGE: Scale = Scale {
    name: "large",
    factor: 1.0,
    shape: Shape::Narrow,
};
pub const DOCS_SMALL: Scale = Scale {
    name: "docs-small",
    factor: 0.05,
    shape: Shape::Documents,
};
pub const DOCS_LARGE: Scale = Scale {
    name: "docs-large",
    factor: 1.0,
    shape: Shape::Documents,
};

/// Row counts at scale 1.0.
const USERS: f64 = 400_000.0;
const ORDERS: f64 = 2_500_000.0;
const EVENTS: f64 = 5_000_000.0;
const DOCUMENTS: f64 = 110_000.0;
const SETTINGS_PER_USER: u64 = 2;
const AUDIT: f64 = 500_000.0;

const SCHEMA: &str = r#"
CREATE TABLE users(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  email TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  bio TEXT,
  balance REAL NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  deleted_at INTEGER,
  avatar BLOB
);
CREATE TABLE orders(
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  total REAL NOT NULL,
  currency TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('new','paid','shipped','refunded')),
  note TEXT,
  created_at INTEGER NOT NULL
);
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  kind INTEGER NOT NULL,
  at INTEGER NOT NULL,
  value REAL
);
CREATE TABLE documents(
  id INTEGER PRIMARY KEY,
  owner INTEGER REFERENCES users(id),
  title TEXT NOT NULL,
  body TEXT NOT NULL,
  attachment BLOB,
  thumbnail BLOB
);
CREATE TABLE "user settings"(
  user_id INTEGER NOT NULL REFERENCES users(id),
  key TEXT NOT NULL,
  value TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE TABLE audit_log(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  detail TEXT
);
"#;

/// Created after the rows: indexes, a view, triggers.
const SCHEMA_AFTER: &str = r#"
CREATE INDEX orders_by_user ON orders(user_id, created_at);
CREATE INDEX events_by_kind ON events(kind, at);
CREATE INDEX documents_by_owner ON documents(owner);
CREATE VIEW active_users AS
  SELECT id, email, name, balance FROM users WHERE deleted_at IS NULL;
CREATE TRIGGER orders_audit AFTER INSERT ON orders BEGIN
  INSERT INTO audit_log(at, action, detail) VALUES (new.created_at, 'order', 'order ' || new.id);
END;
CREATE TRIGGER users_email_audit AFTER UPDATE OF email ON users BEGIN
  INSERT INTO audit_log(at, action, detail) VALUES (unixepoch(), 'email', old.email || ' -> ' || new.email);
END;
"#;

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "backup",
    "restore",
    "data",
    "record",
    "invoice",
    "customer",
    "shipping",
    "address",
    "street",
    "city",
    "order",
    "payment",
    "naïve",
    "café",
    "über",
    "façade",
    "smörgåsbord",
    "日本語",
    "データ",
    "привет",
    "😀",
    "🚀",
    "O'Brien",
    "it's",
    "\"quoted\"",
    "semi;colon",
    "comma,",
    "tab\there",
    "100%",
    "x_y",
];
const FIRST: &[&str] = &[
    "Anna",
    "Ben",
    "Chloé",
    "Dmitri",
    "Eve",
    "François",
    "Greta",
    "Hiro",
    "Ines",
    "Jürgen",
    "Kofi",
    "Léa",
    "Mateo",
    "Nadia",
    "Olu",
    "Priya",
    "Quinn",
    "Rosa",
    "Søren",
    "Tomás",
];
const LAST: &[&str] = &[
    "O'Connor",
    "Smith",
    "Müller",
    "García",
    "Nguyen",
    "Kowalski",
    "D'Angelo",
    "Tanaka",
    "Okafor",
    "Ivanova",
    "Rossi",
    "Haddad",
    "Lindqvist",
    "Dubois",
    "Park",
    "Silva",
];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];
const STATUSES: &[&str] = &["new", "paid", "shipped", "refunded"];
const SETTING_KEYS: &[&str] = &["theme", "locale", "timezone", "newsletter", "2fa"];

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// Words, with a line break now and then.
    fn text(&mut self, words: usize) -> String {
        let mut s = String::with_capacity(words * 7);
        for i in 0..words {
            if i > 0 {
                s.push(if self.chance(4) { '\n' } else { ' ' });
            }
            s.push_str(self.pick(WORDS));
        }
        s
    }
    /// A compressible JSON-ish document as bytes.
    fn json(&mut self, items: usize) -> Vec<u8> {
        let mut s = String::from("{\"items\":[");
        for i in 0..items {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"sku\":\"SKU-{:06}\",\"qty\":{},\"label\":\"{}\"}}",
                self.below(50_000),
                1 + self.below(9),
                self.pick(WORDS).replace('"', "")
            ));
        }
        s.push_str("]}");
        s.into_bytes()
    }
}

fn count(base: f64, scale: Scale) -> u64 {
    (base * scale.factor).round().max(1.0) as u64
}

/// The cached fixture for `scale` under `dir`, generated first if missing.
pub fn ensure(dir: &Path, scale: Scale) -> rusqlite::Result<PathBuf> {
    std::fs::create_dir_all(dir).expect("create fixture directory");
    let path = dir.join(format!("fixture-v{VERSION}-{}.db", scale.name));
    if path.exists() {
        return Ok(path);
    }
    let partial = dir.join(format!("fixture-v{VERSION}-{}.db.partial", scale.name));
    let _ = std::fs::remove_file(&partial);
    let started = Instant::now();
    eprintln!("generating {} ...", path.display());
    generate(&partial, scale)?;
    std::fs::rename(&partial, &path).expect("move fixture into place");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "generated {} ({:.1} MB) in {:.1}s",
        path.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// Writes the fixture at `scale` into a new file at `path`.
pub fn generate(path: &Path, scale: Scale) -> rusqlite::Result<()> {
    match scale.shape {
        Shape::Narrow => generate_narrow(path, scale),
        Shape::Documents => generate_documents(path, scale),
    }
}

/// `n` narrow rows of the `events` table both fixtures have (ids from 1, times from `t0`).
fn fill_events(
    conn: &rusqlite::Connection,
    rng: &mut Rng,
    t0: i64,
    n: u64,
) -> rusqlite::Result<()> {
    let mut ins =
        conn.prepare("INSERT INTO events(id, kind, at, value) VALUES (?1, ?2, ?3, ?4)")?;
    for id in 1..=n as i64 {
        let kind = rng.below(12) as i64;
        let at = t0 + id * 5 + rng.below(5) as i64;
        let value = if rng.chance(10) {
            None
        } else if rng.chance(50) {
            Some(rng.below(100) as f64)
        } else {
            Some(rng.unit() * 1000.0)
        };
        ins.execute(params![id, kind, at, value])?;
    }
    Ok(())
}

fn generate_narrow(path: &Path, scale: Scale) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;",
    )?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch("BEGIN")?;
    let mut rng = Rng(0x5eed_0f7a_717a);
    let t0: i64 = 1_600_000_000;

    let users = count(USERS, scale);
    {
        let mut ins = conn.prepare(
            "INSERT INTO users(id, email, name, bio, balance, created_at, deleted_at, avatar)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for id in 1..=users as i64 {
            let first = rng.pick(FIRST);
            let last = rng.pick(LAST);
            let email = format!("{}.{id}+{}@example.com", first.to_lowercase(), id % 97);
            let name = format!("{first} {last}");
            let bio = rng.chance(70).then(|| {
                let n = 5 + rng.below(30) as usize;
                rng.text(n)
            });
            let balance = if rng.chance(20) {
                rng.below(1000) as f64
            } else {
                (rng.below(10_000_000) as f64) / 100.0
            };
            let created = t0 + rng.below(100_000_000) as i64;
            let deleted = rng
                .chance(10)
                .then(|| created + rng.below(1_000_000) as i64);
            let avatar = rng.chance(50).then(|| {
                let n = 48 + rng.below(64) as usize;
                rng.bytes(n)
            });
            ins.execute(params![
                id, email, name, bio, balance, created, deleted, avatar
            ])?;
        }
    }

    {
        let mut ins = conn.prepare(
            "INSERT INTO orders(id, user_id, total, currency, status, note, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for id in 1..=count(ORDERS, scale) as i64 {
            let user = 1 + rng.below(users) as i64;
            let total = (rng.below(500_000) as f64) / 100.0 + 0.99;
            let currency = rng.pick(CURRENCIES);
            let status = rng.pick(STATUSES);
            let note = rng.chance(15).then(|| {
                let n = 2 + rng.below(8) as usize;
                rng.text(n)
            });
            let created = t0 + id * 37 + rng.below(30) as i64;
            ins.execute(params![id, user, total, currency, status, note, created])?;
        }
    }

    fill_events(&conn, &mut rng, t0, count(EVENTS, scale))?;

    {
        let mut ins = conn.prepare(
            "INSERT INTO documents(id, owner, title, body, attachment, thumbnail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for id in 1..=count(DOCUMENTS, scale) as i64 {
            let owner = rng.chance(95).then(|| 1 + rng.below(users) as i64);
            let title = {
                let n = 3 + rng.below(6) as usize;
                rng.text(n)
            };
            let body = {
                let n = 150 + rng.below(300) as usize;
                rng.text(n)
            };
            let attachment = rng.chance(70).then(|| {
                let n = 10 + rng.below(40) as usize;
                rng.json(n)
            });
            let thumbnail = rng.chance(60).then(|| {
                let n = 400 + rng.below(800) as usize;
                rng.bytes(n)
            });
            ins.execute(params![id, owner, title, body, attachment, thumbnail])?;
        }
    }

    {
        let mut ins = conn.prepare(
            "INSERT INTO \"user settings\"(user_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for user in 1..=users as i64 {
            for k in 0..SETTINGS_PER_USER {
                let key =
                    SETTING_KEYS[((user as u64 + k * 3) % SETTING_KEYS.len() as u64) as usize];
                let value = rng.chance(90).then(|| {
                    let n = 1 + rng.below(4) as usize;
                    rng.text(n)
                });
                ins.execute(params![
                    user,
                    key,
                    value,
                    t0 + rng.below(100_000_000) as i64
                ])?;
            }
        }
    }

    {
        let mut ins =
            conn.prepare("INSERT INTO audit_log(at, action, detail) VALUES (?1, ?2, ?3)")?;
        for i in 0..count(AUDIT, scale) as i64 {
            let action = rng.pick(&["login", "logout", "order", "email", "export"]);
            let detail = rng.chance(80).then(|| {
                let n = 2 + rng.below(6) as usize;
                rng.text(n)
            });
            ins.execute(params![t0 + i * 11, action, detail])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    conn.execute_batch(SCHEMA_AFTER)?;
    // Users deleted since leave the AUTOINCREMENT sequence above the largest id.
    conn.execute_batch(
        "UPDATE sqlite_sequence SET seq = seq + 17 WHERE name = 'users';
         PRAGMA journal_mode=DELETE;",
    )?;
    Ok(())
}

/// Row counts of the documents shape at scale 1.0 (about 1 GB).
const DOC_EVENTS: f64 = 3_000_000.0;
const ARTICLES: f64 = 60_000.0;
const ATTACHMENTS: f64 = 50_000.0;

const DOCS_SCHEMA: &str = r#"
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  kind INTEGER NOT NULL,
  at INTEGER NOT NULL,
  value REAL
);
CREATE TABLE articles(
  id INTEGER PRIMARY KEY,
  author TEXT NOT NULL,
  title TEXT NOT NULL,
  body TEXT NOT NULL,
  meta TEXT NOT NULL CHECK (json_valid(meta)),
  created_at INTEGER NOT NULL
);
CREATE TABLE attachments(
  id INTEGER PRIMARY KEY,
  article_id INTEGER NOT NULL REFERENCES articles(id),
  name TEXT NOT NULL,
  mime TEXT NOT NULL,
  data BLOB NOT NULL
);
"#;

const DOCS_SCHEMA_AFTER: &str = r#"
CREATE INDEX events_by_kind ON events(kind, at);
CREATE INDEX attachments_by_article ON attachments(article_id);
CREATE VIEW recent_articles AS SELECT id, title, created_at FROM articles ORDER BY created_at DESC;
"#;

/// The documents shape: articles of 2–14 KB of text (paragraphs, quotes, unicode) with JSON
/// metadata; attachments of which half are binary (random bytes behind a PNG signature, 1–16
/// KB), a quarter JSON and a quarter plain text BLOBs (a few with CRLF line ends); and 3
/// million narrow events at 1.0.
fn generate_documents(path: &Path, scale: Scale) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;",
    )?;
    conn.execute_batch(DOCS_SCHEMA)?;
    conn.execute_batch("BEGIN")?;
    let mut rng = Rng(0xd0c5_5eed_0001);
    let t0: i64 = 1_600_000_000;

    fill_events(&conn, &mut rng, t0, count(DOC_EVENTS, scale))?;

    let articles = count(ARTICLES, scale);
    {
        let mut ins = conn.prepare(
            "INSERT INTO articles(id, author, title, body, meta, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for id in 1..=articles as i64 {
            let author = format!("{} {}", rng.pick(FIRST), rng.pick(LAST));
            let title = {
                let n = 4 + rng.below(8) as usize;
                rng.text(n)
            };
            let mut body = String::new();
            let paragraphs = 3 + rng.below(20);
            for p in 0..paragraphs {
                if p > 0 {
                    body.push_str("\n\n");
                }
                let n = 40 + rng.below(120) as usize;
                body.push_str(&rng.text(n));
                body.push_str(&format!(" ({}.{}%)", rng.below(100), rng.below(10)));
            }
            let meta = format!(
                "{{\"tags\":[\"{}\",\"{}\"],\"words\":{},\"draft\":{},\"rating\":{:.2},\"source\":\"{}\"}}",
                rng.pick(&["news", "howto", "review", "notes", "faq"]),
                rng.pick(&["sqlite", "backup", "rust", "ops", "d1"]),
                body.len() / 6,
                rng.chance(10),
                rng.unit() * 5.0,
                rng.pick(WORDS).replace(['"', '\t'], ""),
            );
            let created = t0 + id * 600 + rng.below(600) as i64;
            ins.execute(params![id, author, title, body, meta, created])?;
        }
    }

    {
        let mut ins = conn.prepare(
            "INSERT INTO attachments(id, article_id, name, mime, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for id in 1..=count(ATTACHMENTS, scale) as i64 {
            let article = 1 + rng.below(articles) as i64;
            let (name, mime, data) = match rng.below(4) {
                0 | 1 => {
                    let n = 1024 + rng.below(15 * 1024) as usize;
                    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
                    png.extend_from_slice(&rng.bytes(n));
                    (format!("image-{id}.png"), "image/png", png)
                }
                2 => {
                    let n = 20 + rng.below(150) as usize;
                    (format!("data-{id}.json"), "application/json", rng.json(n))
                }
                _ => {
                    let n = 200 + rng.below(1500) as usize;
                    let mut text = rng.text(n);
                    if rng.chance(10) {
                        text = text.replace('\n', "\r\n");
                    }
                    (format!("notes-{id}.txt"), "text/plain", text.into_bytes())
                }
            };
            ins.execute(params![id, article, name, mime, data])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    conn.execute_batch(DOCS_SCHEMA_AFTER)?;
    conn.execute_batch("PRAGMA journal_mode=DELETE;")?;
    Ok(())
}
