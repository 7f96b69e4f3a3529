//! The catalog: Patina's local metadata database (`{state_dir}/patina.db`, SQLite in WAL mode).
//!
//! It records jobs, per-database results, the inventory of committed backups and verification
//! runs. Object storage stays the source of truth: the catalog is a fast index that can be
//! rebuilt from the bucket's manifests (`patina catalog rebuild`). Table and column names follow
//! the seed's status page (`backup_jobs`, `backup_results`, `backup_inventory`), so its three
//! queries work unchanged; Patina's own columns are added after them. Timestamps are unix
//! seconds. Schema changes are numbered migrations tracked in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{ArchiveManifest, Manifest, Trigger};

mod audit;
pub use audit::{AuditEntry, AuditRow};

/// File name of the catalog inside the state directory.
pub const FILE_NAME: &str = "patina.db";

/// The migrations, in order; `user_version` = number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the seed-compatible tables plus Patina's columns.
    r#"
    CREATE TABLE backup_jobs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      job_id TEXT UNIQUE NOT NULL,
      started_at INTEGER NOT NULL,
      completed_at INTEGER,
      status TEXT NOT NULL,             -- running | completed | failed | interrupted
      trigger_type TEXT NOT NULL,       -- scheduled | manual | catch-up
      total_databases INTEGER NOT NULL,
      successful_count INTEGER DEFAULT 0,
      failed_count INTEGER DEFAULT 0,
      total_size_bytes INTEGER DEFAULT 0,
      duration_ms INTEGER,
      error_message TEXT,
      initiated_by TEXT,
      reason TEXT
    );
    CREATE INDEX idx_backup_jobs_started ON backup_jobs(started_at DESC);
    CREATE INDEX idx_backup_jobs_status ON backup_jobs(status);

    CREATE TABLE backup_results (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      job_id TEXT NOT NULL REFERENCES backup_jobs(job_id),
      database_name TEXT NOT NULL,
      status TEXT NOT NULL,             -- success | failed
      r2_key TEXT,
      size_bytes INTEGER,
      table_count INTEGER,
      row_count INTEGER,
      started_at INTEGER NOT NULL,
      completed_at INTEGER,
      duration_ms INTEGER,
      error_message TEXT
    );
    CREATE INDEX idx_backup_results_job ON backup_results(job_id);
    CREATE INDEX idx_backup_results_db ON backup_results(database_name, started_at DESC);

    CREATE TABLE backup_inventory (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      r2_key TEXT UNIQUE NOT NULL,
      database_name TEXT NOT NULL,
      backup_date TEXT NOT NULL,        -- YYYY-MM-DD (UTC)
      size_bytes INTEGER NOT NULL,
      table_count INTEGER,
      created_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      deleted_at INTEGER,
      tier TEXT NOT NULL DEFAULT 'daily',
      manifest_key TEXT,
      sha256 TEXT,
      row_count INTEGER,
      schema_hash TEXT,
      compression TEXT,
      job_id TEXT
    );
    CREATE INDEX idx_inventory_date ON backup_inventory(backup_date DESC);
    CREATE INDEX idx_inventory_db ON backup_inventory(database_name);
    CREATE INDEX idx_inventory_expires ON backup_inventory(expires_at) WHERE deleted_at IS NULL;

    CREATE TABLE verifications (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      database_name TEXT NOT NULL,
      r2_key TEXT NOT NULL,
      verified_at INTEGER NOT NULL,
      status TEXT NOT NULL,             -- ok | failed
      detail TEXT
    );
    CREATE INDEX idx_verifications_db ON verifications(database_name, verified_at DESC);
    "#,
    // 2: the daemon: why an inventory entry left, weekly archives, config reloads.
    r#"
    ALTER TABLE backup_inventory ADD COLUMN deleted_reason TEXT;  -- retention | vanished | debris

    CREATE TABLE weekly_archives (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      week TEXT UNIQUE NOT NULL,          -- 2026-W47
      r2_key TEXT UNIQUE NOT NULL,
      size_bytes INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      member_count INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      deleted_at INTEGER
    );

    CREATE TABLE config_reloads (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at INTEGER NOT NULL,
      result TEXT NOT NULL,               -- success | failure
      detail TEXT
    );
    "#,
    // 3: alert deliveries: one row per attempt (DESIGN §9).
    r#"
    CREATE TABLE alert_deliveries (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      sink TEXT NOT NULL,                 -- the [[alert]] name
      sink_kind TEXT NOT NULL,            -- webhook | discord | slack | healthchecks
      event TEXT NOT NULL,                -- failure | success | … | start | test
      state TEXT NOT NULL,                -- firing | reminder | resolved
      dedup_key TEXT NOT NULL,
      attempt INTEGER NOT NULL,           -- 1, 2, …
      result TEXT NOT NULL,               -- success | retry | failure (the last two: final)
      status_code INTEGER,                -- HTTP status, when there was a response
      error TEXT,                         -- never contains the URL or header values
      queued_at INTEGER NOT NULL,
      attempted_at INTEGER NOT NULL
    );
    CREATE INDEX idx_alert_deliveries_at ON alert_deliveries(attempted_at DESC);
    CREATE INDEX idx_alert_deliveries_key ON alert_deliveries(dedup_key);
    "#,
    // 4: what a D1 backup's fidelity check did (DESIGN §12): values repaired from /query, and
    // why the whole run fell back to query mode (NULL when it did not).
    r#"
    ALTER TABLE backup_results ADD COLUMN d1_repaired_values INTEGER;
    ALTER TABLE backup_results ADD COLUMN d1_fallback TEXT;
    "#,
    // 5: restore points (DESIGN §13). A dump rolled into a weekly archive stays a live row once
    // its daily object is pruned (tier `weekly`, living in `archive_key`); restore history;
    // what a drill checked.
    r#"
    ALTER TABLE backup_inventory ADD COLUMN archive_key TEXT;     -- weekly/2026-W47.tar holding it
    ALTER TABLE backup_inventory ADD COLUMN archive_member TEXT;  -- its path inside that tar
    ALTER TABLE backup_inventory ADD COLUMN daily_deleted_at INTEGER; -- its daily object pruned
    CREATE INDEX idx_inventory_archive ON backup_inventory(archive_key) WHERE archive_key IS NOT NULL;
    ALTER TABLE weekly_archives ADD COLUMN expires_at INTEGER;

    ALTER TABLE verifications ADD COLUMN location TEXT;           -- daily/… or weekly/….tar:member
    ALTER TABLE verifications ADD COLUMN taken_at INTEGER;        -- when the dump was taken
    ALTER TABLE verifications ADD COLUMN origin TEXT;             -- drill | cli
    ALTER TABLE verifications ADD COLUMN duration_ms INTEGER;
    ALTER TABLE verifications ADD COLUMN newest INTEGER;          -- 1: the database's newest point

    CREATE TABLE restores (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      started_at INTEGER NOT NULL,
      completed_at INTEGER NOT NULL,
      initiated_by TEXT NOT NULL,         -- cli:<os user> | api:<token name> | drill
      action TEXT NOT NULL,               -- restore | verify | download
      database_name TEXT NOT NULL,
      r2_key TEXT,                        -- the restore point's dump key (NULL: none found)
      location TEXT,                      -- where it was read from
      taken_at INTEGER,                   -- when the restored dump was taken
      target TEXT,                        -- the file, d1:<uuid>, or the HTTP client's address
      result TEXT NOT NULL,               -- success | failed
      error TEXT,
      duration_ms INTEGER NOT NULL
    );
    CREATE INDEX idx_restores_started ON restores(started_at DESC);
    "#,
    // 6: each dump's tables with their own schema hashes, so
    // a new dump can say which tables were added, dropped and altered (`schema_changed`); and
    // what housekeeping pruned, so counters read from row counts never go down
    // (`patina_backups_total`, `…_alerts_sent_total`, the duration histogram, …).
    r#"
    ALTER TABLE backup_inventory ADD COLUMN table_schemas TEXT;  -- JSON {table: sha256 | null}

    CREATE TABLE pruned_totals (
      counter TEXT NOT NULL,              -- backups | backup_duration | retention_deleted | …
      labels TEXT NOT NULL,               -- label values joined by char(31); '' for none
      value INTEGER NOT NULL,
      PRIMARY KEY (counter, labels)
    );
    "#,
    // 7: the audit log
    // (DESIGN §17): who triggered, downloaded or restored what, and every refusal. Failed
    // authentications are coalesced per address and minute (`coalesce_key`, one row with a
    // `count`); rows older than `[daemon] audit_retention` are pruned.
    r#"
    CREATE TABLE audit_log (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at INTEGER NOT NULL,                -- unix seconds (coalesced rows: the first of them)
      who TEXT,                           -- token name (http), OS user (cli); NULL: unknown
      via TEXT NOT NULL,                  -- http | cli
      remote_addr TEXT,                   -- client address (http); NULL for the cli
      action TEXT NOT NULL,               -- trigger | download | restore | read | audit | authenticate
      target TEXT,                        -- databases, DB/DATE, a path; never a query string
      result TEXT NOT NULL,               -- ok | error | forbidden | failed
      status INTEGER,                     -- HTTP status, when there is one
      count INTEGER NOT NULL DEFAULT 1,   -- > 1 only for coalesced rows
      coalesce_key TEXT UNIQUE            -- authenticate|ADDRESS|MINUTE; NULL for the rest
    );
    CREATE INDEX idx_audit_log_at ON audit_log(at);
    "#,
    // 8: who an encrypted dump was sealed for (DESIGN §14): its recipients' fingerprints,
    // comma-separated (public: `age1…` / `SHA256:…`); NULL for a plaintext dump.
    r#"
    ALTER TABLE backup_inventory ADD COLUMN sealed_for TEXT;
    "#,
];

/// A failed catalog operation.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("open catalog {path}: {source} — check that the state_dir is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "catalog {path} has schema version {found}, newer than this patina knows ({known}) — upgrade patina"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{action} in catalog {path}: {source}")]
    Query {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

/// A job as it starts.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub job_id: &'a str,
    pub started_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub total_databases: usize,
    pub initiated_by: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// The outcome of one database in a job.
#[derive(Debug, Clone)]
pub struct ResultRow<'a> {
    pub job_id: &'a str,
    pub database: &'a str,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub outcome: Result<&'a Manifest, &'a str>,
    /// The error is a handover, not a failure: several daemons, and this node lost the
    /// database's lease mid-backup. Recorded as `handed_over`, so it starts no failure streak
    /// (no backoff) and counts in no job's failures.
    pub handed_over: bool,
}

/// A restore point as `patina list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRow {
    /// The daily key the dump was written under.
    pub key: String,
    /// Where it lives now: the daily key, or `weekly/….tar:member`.
    pub location: String,
    pub database: String,
    pub date: String,
    pub tier: String,
    pub size_bytes: u64,
    pub table_count: u64,
    pub row_count: u64,
    pub sha256: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The recipients' fingerprints an encrypted dump was sealed for; empty for plaintext.
    pub sealed_for: Vec<String>,
}

/// A verification of one restore point, to record.
#[derive(Debug, Clone)]
pub struct VerificationRecord<'a> {
    pub database: &'a str,
    /// The restore point's dump key (empty when none was found).
    pub key: &'a str,
    pub location: Option<&'a str>,
    pub taken_at: Option<DateTime<Utc>>,
    /// `drill` (the daemon) or `cli` (`patina verify`).
    pub origin: &'a str,
    pub at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    /// True when the point was its database's newest restore point when it was checked.
    pub newest: bool,
    pub outcome: Result<(), &'a str>,
}

/// A restore, verification or download, to record in the restore history.
#[derive(Debug, Clone)]
pub struct RestoreRecord<'a> {
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// `cli:<user>`, `api:<token name>`, or `drill`.
    pub initiated_by: &'a str,
    /// `restore`, `verify` or `download`.
    pub action: &'a str,
    pub database: &'a str,
    pub key: Option<&'a str>,
    pub location: Option<&'a str>,
    pub taken_at: Option<DateTime<Utc>>,
    pub target: Option<&'a str>,
    pub outcome: Result<(), &'a str>,
}

/// A database's live restore points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointStats {
    pub total: u64,
    pub daily: u64,
    pub weekly: u64,
    /// Unix seconds of the oldest.
    pub oldest: i64,
}

/// A restore history row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreRow {
    pub started_at: i64,
    pub initiated_by: String,
    pub action: String,
    pub database: String,
    pub key: Option<String>,
    pub location: Option<String>,
    pub taken_at: Option<i64>,
    pub target: Option<String>,
    pub result: String,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// A dump's schema as the inventory records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSchema {
    pub key: String,
    pub schema_hash: String,
    /// Each table (and view) with its own schema hash (`None` when the manifest had none);
    /// `None` for entries recorded before the catalog kept tables.
    pub tables: Option<BTreeMap<String, Option<String>>>,
}

/// A verification run as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRow {
    pub key: String,
    pub verified_at: i64,
    /// `ok` or `failed`.
    pub status: String,
    pub detail: Option<String>,
}

/// A job as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub job_id: String,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub status: String,
    pub trigger_type: String,
    pub total_databases: i64,
    pub successful_count: i64,
    pub failed_count: i64,
    pub total_size_bytes: i64,
    pub duration_ms: Option<i64>,
    pub error_message: Option<String>,
}

/// One attempt to deliver an alert, as recorded.
#[derive(Debug, Clone)]
pub struct AlertAttempt<'a> {
    pub sink: &'a str,
    pub sink_kind: &'a str,
    pub event: &'a str,
    pub state: &'a str,
    pub dedup_key: &'a str,
    pub attempt: u32,
    /// `success`, `retry` (another attempt follows) or `failure` (given up).
    pub result: &'a str,
    pub status_code: Option<u16>,
    pub error: Option<&'a str>,
    pub queued_at: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
}

/// An alert delivery attempt read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertAttemptRow {
    pub sink: String,
    pub sink_kind: String,
    pub event: String,
    pub state: String,
    pub dedup_key: String,
    pub attempt: u32,
    pub result: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub queued_at: i64,
    pub attempted_at: i64,
}

impl Catalog {
    /// Open (creating if needed) the catalog in `state_dir` and apply pending migrations.
    pub fn open(state_dir: &Path) -> Result<Catalog, CatalogError> {
        std::fs::create_dir_all(state_dir).map_err(|source| CatalogError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Catalog::open_file(&state_dir.join(FILE_NAME))
    }

    /// Open (creating if needed) a catalog file and apply pending migrations.
    pub fn open_file(path: &Path) -> Result<Catalog, CatalogError> {
        let open_err = |source| CatalogError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut catalog = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        catalog.migrate()?;
        Ok(catalog)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection, for read-only queries (status page, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn q(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> CatalogError + '_ {
        move |source| CatalogError::Query {
            action,
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            action: "apply migrations",
            path: path.clone(),
            source,
        };
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(CatalogError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(())
    }

    /// Record a job as running.
    pub fn start_job(&self, job: &NewJob<'_>) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO backup_jobs (job_id, started_at, status, trigger_type, total_databases,
                   initiated_by, reason)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
                params![
                    job.job_id,
                    job.started_at.timestamp(),
                    job.trigger.as_str(),
                    job.total_databases as i64,
                    job.initiated_by,
                    job.reason
                ],
            )
            .map_err(self.q("record job start"))?;
        Ok(())
    }

    /// Record one database's outcome; a success also enters the inventory with its expiry.
    pub fn record_result(
        &mut self,
        row: &ResultRow<'_>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            action: "record backup result",
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let duration_ms = (row.completed_at - row.started_at).num_milliseconds();
        match row.outcome {
            Ok(m) => {
                insert_success(
                    &tx,
                    row.job_id,
                    row.database,
                    m,
                    row.started_at,
                    row.completed_at,
                )
                .map_err(err)?;
                insert_inventory(&tx, m, expires_at).map_err(err)?;
            }
            Err(message) => {
                tx.execute(
                    "INSERT INTO backup_results (job_id, database_name, status, started_at,
                       completed_at, duration_ms, error_message)
                     VALUES (?1, ?2, ?7, ?3, ?4, ?5, ?6)",
                    params![
                        row.job_id,
                        row.database,
                        row.started_at.timestamp(),
                        row.completed_at.timestamp(),
                        duration_ms,
                        message,
                        if row.handed_over {
                            "handed_over"
                        } else {
                            "failed"
                        }
                    ],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Close a job: counts and sizes come from its recorded results. A job in which every
    /// database failed is `failed`; otherwise `completed` (with `failed_count` > 0 when partial).
    pub fn finish_job(
        &self,
        job_id: &str,
        completed_at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backup_jobs SET
                   completed_at = ?2,
                   duration_ms = (?2 - started_at) * 1000,
                   successful_count = (SELECT count(*) FROM backup_results r
                                       WHERE r.job_id = ?1 AND r.status = 'success'),
                   failed_count = (SELECT count(*) FROM backup_results r
                                   WHERE r.job_id = ?1 AND r.status = 'failed'),
                   total_size_bytes = (SELECT coalesce(sum(size_bytes), 0) FROM backup_results r
                                       WHERE r.job_id = ?1 AND r.status = 'success'),
                   error_message = (SELECT group_concat(database_name || ': ' || error_message, '; ')
                                    FROM backup_results r
                                    WHERE r.job_id = ?1 AND r.status = 'failed')
                 WHERE job_id = ?1",
                params![job_id, completed_at.timestamp()],
            )
            .map_err(self.q("record job end"))?;
        self.conn
            .execute(
                "UPDATE backup_jobs SET status =
                   CASE WHEN successful_count = 0 AND failed_count > 0 THEN 'failed'
                        ELSE 'completed' END
                 WHERE job_id = ?1",
                params![job_id],
            )
            .map_err(self.q("record job end"))?;
        Ok(())
    }

    /// Mark jobs left `running` (by a crash) as `interrupted`; returns how many.
    pub fn mark_interrupted(&self, now: DateTime<Utc>) -> Result<usize, CatalogError> {
        self.conn
            .execute(
                "UPDATE backup_jobs SET status = 'interrupted', completed_at = ?1,
                   error_message = coalesce(error_message, 'interrupted: patina stopped before the job finished')
                 WHERE status = 'running'",
                params![now.timestamp()],
            )
            .map_err(self.q("mark interrupted jobs"))
    }

    /// Committed, not deleted backups, newest first.
    pub fn list_backups(&self, database: Option<&str>) -> Result<Vec<InventoryRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r2_key, database_name, backup_date, tier, size_bytes,
                        coalesce(table_count, 0), coalesce(row_count, 0), coalesce(sha256, ''),
                        created_at, expires_at,
                        CASE WHEN tier = 'weekly' AND archive_key IS NOT NULL
                             THEN archive_key || ':' || archive_member ELSE r2_key END, sealed_for
                 FROM backup_inventory
                 WHERE deleted_at IS NULL AND (?1 IS NULL OR database_name = ?1)
                 ORDER BY created_at DESC, database_name",
            )
            .map_err(self.q("list backups"))?;
        let rows = stmt
            .query_map(params![database], |r| {
                Ok(InventoryRow {
                    key: r.get(0)?,
                    database: r.get(1)?,
                    date: r.get(2)?,
                    tier: r.get(3)?,
                    size_bytes: r.get::<_, i64>(4)? as u64,
                    table_count: r.get::<_, i64>(5)? as u64,
                    row_count: r.get::<_, i64>(6)? as u64,
                    sha256: r.get(7)?,
                    created_at: r.get(8)?,
                    expires_at: r.get(9)?,
                    location: r.get(10)?,
                    sealed_for: r
                        .get::<_, Option<String>>(11)?
                        .map(|s| s.split(", ").map(str::to_string).collect())
                        .unwrap_or_default(),
                })
            })
            .map_err(self.q("list backups"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("list backups"))
    }

    /// The most recent jobs, newest first.
    pub fn recent_jobs(&self, limit: usize) -> Result<Vec<JobRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM backup_jobs ORDER BY started_at DESC, id DESC LIMIT ?1"
            ))
            .map_err(self.q("list jobs"))?;
        let rows = stmt
            .query_map(params![limit as i64], job_row)
            .map_err(self.q("list jobs"))?;
        rows.collect::<Result<_, _>>().map_err(self.q("list jobs"))
    }

    /// Record a verification (a drill, or `patina verify`) of one restore point.
    pub fn record_verification(&self, v: &VerificationRecord<'_>) -> Result<(), CatalogError> {
        let (status, detail) = match v.outcome {
            Ok(()) => ("ok", None),
            Err(d) => ("failed", Some(d)),
        };
        self.conn
            .execute(
                "INSERT INTO verifications (database_name, r2_key, verified_at, status, detail,
                   location, taken_at, origin, duration_ms, newest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    v.database,
                    v.key,
                    v.at.timestamp(),
                    status,
                    detail,
                    v.location,
                    v.taken_at.map(|t| t.timestamp()),
                    v.origin,
                    v.duration_ms,
                    v.newest as i64
                ],
            )
            .map_err(self.q("record verification"))?;
        Ok(())
    }

    /// Record a restore, verification or download (DESIGN §13, restore history).
    pub fn record_restore(&self, r: &RestoreRecord<'_>) -> Result<(), CatalogError> {
        let (result, error) = match r.outcome {
            Ok(()) => ("success", None),
            Err(e) => ("failed", Some(e)),
        };
        self.conn
            .execute(
                "INSERT INTO restores (started_at, completed_at, initiated_by, action,
                   database_name, r2_key, location, taken_at, target, result, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.started_at.timestamp(),
                    r.completed_at.timestamp(),
                    r.initiated_by,
                    r.action,
                    r.database,
                    r.key,
                    r.location,
                    r.taken_at.map(|t| t.timestamp()),
                    r.target,
                    result,
                    error,
                    (r.completed_at - r.started_at).num_milliseconds()
                ],
            )
            .map_err(self.q("record a restore"))?;
        Ok(())
    }

    /// Per database, its live restore points (DESIGN §13): count per tier and the oldest.
    pub fn restore_point_stats(&self) -> Result<BTreeMap<String, PointStats>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT database_name, count(*), sum(tier = 'daily'), sum(tier = 'weekly'),
                        min(created_at)
                 FROM backup_inventory WHERE deleted_at IS NULL GROUP BY database_name",
            )
            .map_err(self.q("count restore points"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PointStats {
                        total: r.get::<_, i64>(1)? as u64,
                        daily: r.get::<_, i64>(2)? as u64,
                        weekly: r.get::<_, i64>(3)? as u64,
                        oldest: r.get(4)?,
                    },
                ))
            })
            .map_err(self.q("count restore points"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("count restore points"))
    }

    /// When the newest drill started (the newest `verifications` row a drill recorded).
    pub fn last_drill(&self) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let at: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(verified_at) FROM verifications WHERE origin = 'drill'",
                [],
                |r| r.get(0),
            )
            .map_err(self.q("read the last drill"))?;
        Ok(at.and_then(|t| DateTime::from_timestamp(t, 0)))
    }

    /// The newest verification of each database.
    pub fn last_verifications(&self) -> Result<BTreeMap<String, VerificationRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT database_name, r2_key, verified_at, status, detail FROM verifications v
                 WHERE id = (SELECT max(id) FROM verifications w
                             WHERE w.database_name = v.database_name)",
            )
            .map_err(self.q("read verifications"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    VerificationRow {
                        key: r.get(1)?,
                        verified_at: r.get(2)?,
                        status: r.get(3)?,
                        detail: r.get(4)?,
                    },
                ))
            })
            .map_err(self.q("read verifications"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("read verifications"))
    }

    /// The newest restores, verifications and downloads, newest first.
    pub fn recent_restores(&self, limit: usize) -> Result<Vec<RestoreRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT started_at, initiated_by, action, database_name, r2_key, location,
                        taken_at, target, result, error, duration_ms
                 FROM restores ORDER BY started_at DESC, id DESC LIMIT ?1",
            )
            .map_err(self.q("read the restore history"))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(RestoreRow {
                    started_at: r.get(0)?,
                    initiated_by: r.get(1)?,
                    action: r.get(2)?,
                    database: r.get(3)?,
                    key: r.get(4)?,
                    location: r.get(5)?,
                    taken_at: r.get(6)?,
                    target: r.get(7)?,
                    result: r.get(8)?,
                    error: r.get(9)?,
                    duration_ms: r.get(10)?,
                })
            })
            .map_err(self.q("read the restore history"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("read the restore history"))
    }

    /// Consecutive failed results of each database since its last success.
    pub fn failure_streaks(&self) -> Result<BTreeMap<String, (u32, DateTime<Utc>)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.database_name, count(*), max(r.completed_at)
                 FROM backup_results r
                 WHERE r.status = 'failed' AND r.id > coalesce(
                   (SELECT max(s.id) FROM backup_results s
                    WHERE s.database_name = r.database_name AND s.status = 'success'), 0)
                 GROUP BY r.database_name",
            )
            .map_err(self.q("read failure streaks"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u32,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                ))
            })
            .map_err(self.q("read failure streaks"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (db, n, at) = row.map_err(self.q("read failure streaks"))?;
            let at = DateTime::<Utc>::from_timestamp(at, 0).unwrap_or_default();
            out.insert(db, (n, at));
        }
        Ok(out)
    }

    /// Data keys of the daily objects the catalog holds as live (archived points excluded:
    /// their daily objects are gone on purpose).
    pub fn known_keys(&self) -> Result<BTreeSet<String>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r2_key FROM backup_inventory WHERE deleted_at IS NULL AND tier = 'daily'",
            )
            .map_err(self.q("read inventory"))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.q("read inventory"))?;
        keys.collect::<Result<_, _>>()
            .map_err(self.q("read inventory"))
    }

    /// Enter a committed dump found in storage (adoption, or a backup recorded elsewhere).
    pub fn adopt(&self, m: &Manifest, expires_at: DateTime<Utc>) -> Result<(), CatalogError> {
        insert_inventory(&self.conn, m, expires_at).map_err(self.q("adopt a backup"))?;
        Ok(())
    }

    /// Mark an inventory entry (dump) or weekly archive as gone, with why. A dump whose daily
    /// object goes while a live weekly archive holds it stays a restore point: its row moves to
    /// tier `weekly` and takes the archive's expiry. An archive that goes takes its archived
    /// points with it.
    pub fn mark_deleted(
        &self,
        data_key: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let moved = self
            .conn
            .execute(
                "UPDATE backup_inventory SET tier = 'weekly',
                   daily_deleted_at = CASE WHEN ?3 = 'retention' THEN ?2 END,
                   expires_at = coalesce((SELECT w.expires_at FROM weekly_archives w
                                          WHERE w.r2_key = backup_inventory.archive_key), expires_at)
                 WHERE r2_key = ?1 AND deleted_at IS NULL AND tier = 'daily'
                   AND archive_key IN (SELECT r2_key FROM weekly_archives WHERE deleted_at IS NULL)",
                params![data_key, at.timestamp(), reason],
            )
            .map_err(self.q("move a backup into its archive"))?;
        if moved == 0 {
            self.conn
                .execute(
                    "UPDATE backup_inventory SET deleted_at = ?2, deleted_reason = ?3
                     WHERE r2_key = ?1 AND deleted_at IS NULL AND tier = 'daily'",
                    params![data_key, at.timestamp(), reason],
                )
                .map_err(self.q("mark a backup deleted"))?;
        }
        let archive = self
            .conn
            .execute(
                "UPDATE weekly_archives SET deleted_at = ?2 WHERE r2_key = ?1 AND deleted_at IS NULL",
                params![data_key, at.timestamp()],
            )
            .map_err(self.q("mark an archive deleted"))?;
        if archive > 0 {
            self.conn
                .execute(
                    "UPDATE backup_inventory SET deleted_at = ?2, deleted_reason = ?3
                     WHERE archive_key = ?1 AND tier = 'weekly' AND deleted_at IS NULL",
                    params![data_key, at.timestamp(), format!("archive {reason}")],
                )
                .map_err(self.q("mark archived backups deleted"))?;
            self.conn
                .execute(
                    "UPDATE backup_inventory SET archive_key = NULL, archive_member = NULL
                     WHERE archive_key = ?1 AND tier = 'daily'",
                    params![data_key],
                )
                .map_err(self.q("mark archived backups deleted"))?;
        }
        Ok(())
    }

    /// Record a committed weekly archive (when it is built, or found in storage) and make each
    /// member a restore point that lives in it: a live row keeps its tier (its daily object is
    /// still there) and learns its archive; a member without a live row (its daily copy pruned,
    /// or a catalog that never saw it) becomes a `weekly` row. `expires_at`: when the weekly
    /// tier releases the archive.
    pub fn record_archive(
        &mut self,
        m: &ArchiveManifest,
        expires_at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            action: "record an archive",
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO weekly_archives (week, r2_key, size_bytes, sha256, member_count, created_at,
               expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(week) DO UPDATE SET r2_key = excluded.r2_key,
               size_bytes = excluded.size_bytes, sha256 = excluded.sha256,
               member_count = excluded.member_count, expires_at = excluded.expires_at,
               deleted_at = NULL",
            params![
                m.week,
                m.key,
                m.size as i64,
                m.sha256,
                m.members.len() as i64,
                m.created_at.timestamp(),
                expires_at.timestamp()
            ],
        )
        .map_err(err)?;
        for member in &m.members {
            let date = member.taken_at.format("%Y-%m-%d").to_string();
            tx.execute(
                "INSERT INTO backup_inventory (r2_key, database_name, backup_date, size_bytes,
                   created_at, expires_at, tier, sha256, archive_key, archive_member)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'weekly', ?7, ?8, ?9)
                 ON CONFLICT(r2_key) DO UPDATE SET archive_key = excluded.archive_key,
                   archive_member = excluded.archive_member,
                   tier = CASE WHEN deleted_at IS NULL THEN tier ELSE 'weekly' END,
                   expires_at = CASE WHEN deleted_at IS NULL THEN expires_at
                                     ELSE excluded.expires_at END,
                   deleted_at = NULL, deleted_reason = NULL",
                params![
                    member.dump_key,
                    member.database,
                    date,
                    member.size as i64,
                    member.taken_at.timestamp(),
                    expires_at.timestamp(),
                    member.sha256,
                    m.key,
                    member.path
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Weekly archives the catalog holds as live, by data key.
    pub fn live_archives(&self) -> Result<BTreeSet<String>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT r2_key FROM weekly_archives WHERE deleted_at IS NULL")
            .map_err(self.q("read archives"))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.q("read archives"))?;
        keys.collect::<Result<_, _>>()
            .map_err(self.q("read archives"))
    }

    /// Record a policy reload attempt.
    pub fn record_reload(
        &self,
        at: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) -> Result<(), CatalogError> {
        let (result, detail) = match outcome {
            Ok(()) => ("success", None),
            Err(d) => ("failure", Some(d)),
        };
        self.conn
            .execute(
                "INSERT INTO config_reloads (at, result, detail) VALUES (?1, ?2, ?3)",
                params![at.timestamp(), result, detail],
            )
            .map_err(self.q("record a reload"))?;
        Ok(())
    }

    /// Record one attempt to deliver an alert.
    pub fn record_alert_attempt(&self, a: &AlertAttempt<'_>) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO alert_deliveries (sink, sink_kind, event, state, dedup_key, attempt,
                   result, status_code, error, queued_at, attempted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    a.sink,
                    a.sink_kind,
                    a.event,
                    a.state,
                    a.dedup_key,
                    a.attempt as i64,
                    a.result,
                    a.status_code.map(i64::from),
                    a.error,
                    a.queued_at.timestamp(),
                    a.attempted_at.timestamp()
                ],
            )
            .map_err(self.q("record an alert delivery"))?;
        Ok(())
    }

    /// The most recent alert delivery attempts, newest first.
    pub fn alert_attempts(&self, limit: usize) -> Result<Vec<AlertAttemptRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sink, sink_kind, event, state, dedup_key, attempt, result, status_code,
                        error, queued_at, attempted_at
                 FROM alert_deliveries ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.q("list alert deliveries"))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(AlertAttemptRow {
                    sink: r.get(0)?,
                    sink_kind: r.get(1)?,
                    event: r.get(2)?,
                    state: r.get(3)?,
                    dedup_key: r.get(4)?,
                    attempt: r.get::<_, i64>(5)? as u32,
                    result: r.get(6)?,
                    status_code: r.get::<_, Option<i64>>(7)?.map(|c| c as u16),
                    error: r.get(8)?,
                    queued_at: r.get(9)?,
                    attempted_at: r.get(10)?,
                })
            })
            .map_err(self.q("list alert deliveries"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("list alert deliveries"))
    }

    /// Sizes of a database's newest daily dumps (deleted by retention or not), newest first,
    /// leaving out `except` (the dump being judged).
    pub fn recent_dump_sizes(
        &self,
        database: &str,
        except: Option<&str>,
        limit: usize,
    ) -> Result<Vec<u64>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT size_bytes FROM backup_inventory
                 WHERE database_name = ?1 AND (?2 IS NULL OR r2_key != ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
            )
            .map_err(self.q("read dump sizes"))?;
        let rows = stmt
            .query_map(params![database, except, limit as i64], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(self.q("read dump sizes"))?;
        rows.map(|r| r.map(|s| s as u64))
            .collect::<Result<_, _>>()
            .map_err(self.q("read dump sizes"))
    }

    /// The newest committed (not deleted) backup of each database: (completed at, size).
    pub fn latest_backups(&self) -> Result<BTreeMap<String, (DateTime<Utc>, u64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT database_name, created_at, size_bytes FROM backup_inventory i
                 WHERE deleted_at IS NULL AND tier = 'daily' AND created_at =
                   (SELECT max(created_at) FROM backup_inventory j
                    WHERE j.database_name = i.database_name AND j.deleted_at IS NULL
                      AND j.tier = 'daily')",
            )
            .map_err(self.q("read latest backups"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.q("read latest backups"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (db, at, size) = row.map_err(self.q("read latest backups"))?;
            let at = DateTime::<Utc>::from_timestamp(at, 0).unwrap_or_default();
            out.insert(db, (at, size as u64));
        }
        Ok(out)
    }

    /// The schema facts of the dump `key` of `database`, and of the dump before it (the newest
    /// recorded earlier, deleted since or not); `None` when `key` is not in the inventory.
    pub fn dump_schemas(
        &self,
        database: &str,
        key: &str,
    ) -> Result<Option<(DumpSchema, Option<DumpSchema>)>, CatalogError> {
        let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(DumpSchema, i64, i64)> {
            let tables: Option<String> = r.get(2)?;
            Ok((
                DumpSchema {
                    key: r.get(0)?,
                    schema_hash: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    tables: tables.and_then(|t| serde_json::from_str(&t).ok()),
                },
                r.get(3)?,
                r.get(4)?,
            ))
        };
        let this = self
            .conn
            .query_row(
                "SELECT r2_key, schema_hash, table_schemas, created_at, id FROM backup_inventory
                 WHERE database_name = ?1 AND r2_key = ?2",
                params![database, key],
                read,
            )
            .optional()
            .map_err(self.q("read dump schemas"))?;
        let Some((this, created_at, id)) = this else {
            return Ok(None);
        };
        let previous = self
            .conn
            .query_row(
                "SELECT r2_key, schema_hash, table_schemas, created_at, id FROM backup_inventory
                 WHERE database_name = ?1 AND tier = 'daily' AND r2_key != ?2
                   AND (created_at < ?3 OR (created_at = ?3 AND id < ?4))
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                params![database, key, created_at, id],
                read,
            )
            .optional()
            .map_err(self.q("read dump schemas"))?;
        Ok(Some((this, previous.map(|(p, _, _)| p))))
    }

    /// How long the successful backup that wrote `key` took, and the durations of up to `n`
    /// successful backups of `database` recorded before it, newest first (from
    /// `backup_results`); `None` when `key` has no successful result.
    pub fn run_durations(
        &self,
        database: &str,
        key: &str,
        n: usize,
    ) -> Result<Option<(Duration, Vec<Duration>)>, CatalogError> {
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        let this: Option<(i64, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT id, duration_ms FROM backup_results
                 WHERE database_name = ?1 AND r2_key = ?2 AND status = 'success'
                 ORDER BY id DESC LIMIT 1",
                params![database, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.q("read backup durations"))?;
        let Some((id, Some(duration))) = this else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT duration_ms FROM backup_results
                 WHERE database_name = ?1 AND status = 'success' AND id < ?2
                   AND duration_ms IS NOT NULL
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(self.q("read backup durations"))?;
        let before = stmt
            .query_map(params![database, id, n as i64], |r| r.get::<_, i64>(0))
            .map_err(self.q("read backup durations"))?
            .map(|r| r.map(ms))
            .collect::<Result<_, _>>()
            .map_err(self.q("read backup durations"))?;
        Ok(Some((ms(duration), before)))
    }

    /// Fill an empty catalog from manifests alone (`patina catalog rebuild`): the inventory,
    /// plus one job and one result per job id found, so history and the status page survive.
    pub fn import_manifests(
        &mut self,
        manifests: &[Manifest],
        expires_at: &dyn Fn(&Manifest) -> DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            action: "import manifests",
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for m in manifests {
            tx.execute(
                "INSERT INTO backup_jobs (job_id, started_at, completed_at, status, trigger_type,
                   total_databases, initiated_by)
                 VALUES (?1, ?2, ?3, 'completed', ?4, 0, 'catalog rebuild')
                 ON CONFLICT(job_id) DO UPDATE SET
                   started_at = min(started_at, excluded.started_at),
                   completed_at = max(completed_at, excluded.completed_at)",
                params![
                    m.job_id,
                    m.started_at.timestamp(),
                    m.completed_at.timestamp(),
                    m.trigger.as_str()
                ],
            )
            .map_err(err)?;
            insert_success(&tx, &m.job_id, &m.database, m, m.started_at, m.completed_at)
                .map_err(err)?;
            insert_inventory(&tx, m, expires_at(m)).map_err(err)?;
        }
        tx.execute_batch(
            "UPDATE backup_jobs SET
               total_databases = (SELECT count(*) FROM backup_results r WHERE r.job_id = backup_jobs.job_id),
               successful_count = (SELECT count(*) FROM backup_results r WHERE r.job_id = backup_jobs.job_id),
               failed_count = 0,
               total_size_bytes = (SELECT coalesce(sum(size_bytes), 0) FROM backup_results r
                                   WHERE r.job_id = backup_jobs.job_id),
               duration_ms = (completed_at - started_at) * 1000",
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }
}

/// One successful `backup_results` row for the committed dump `m` (a job's result, or a
/// manifest imported by `catalog rebuild`).
fn insert_success(
    tx: &rusqlite::Transaction<'_>,
    job_id: &str,
    database: &str,
    m: &Manifest,
    started_at: DateTime<Utc>,
    completed_at: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO backup_results (job_id, database_name, status, r2_key, size_bytes,
           table_count, row_count, started_at, completed_at, duration_ms,
           d1_repaired_values, d1_fallback)
         VALUES (?1, ?2, 'success', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            job_id,
            database,
            m.key,
            m.size as i64,
            m.table_count as i64,
            m.row_count as i64,
            started_at.timestamp(),
            completed_at.timestamp(),
            (completed_at - started_at).num_milliseconds(),
            m.fidelity.as_ref().map(|f| f.repaired_values as i64),
            m.fidelity.as_ref().and_then(|f| f.fallback.as_deref()),
        ],
    )
}

/// The columns [`job_row`] reads, in its order.
const JOB_COLUMNS: &str = "job_id, started_at, completed_at, status, trigger_type, \
     total_databases, coalesce(successful_count, 0), coalesce(failed_count, 0), \
     coalesce(total_size_bytes, 0), duration_ms, error_message";

/// A `backup_jobs` row selected with [`JOB_COLUMNS`] first.
fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        job_id: r.get(0)?,
        started_at: r.get(1)?,
        completed_at: r.get(2)?,
        status: r.get(3)?,
        trigger_type: r.get(4)?,
        total_databases: r.get(5)?,
        successful_count: r.get(6)?,
        failed_count: r.get(7)?,
        total_size_bytes: r.get(8)?,
        duration_ms: r.get(9)?,
        error_message: r.get(10)?,
    })
}

fn insert_inventory(
    conn: &Connection,
    m: &Manifest,
    expires_at: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let manifest_key = m.dump_id().map(|id| id.manifest_key());
    let date = m
        .dump_id()
        .map(|id| id.date())
        .unwrap_or_else(|| m.completed_at.format("%Y-%m-%d").to_string());
    // Each table with its own schema hash; `null` hashes when the manifest predates them.
    let table_schemas: BTreeMap<&str, Option<&str>> = if m.table_schema_hashes.is_empty() {
        m.tables.keys().map(|t| (t.as_str(), None)).collect()
    } else {
        m.table_schema_hashes
            .iter()
            .map(|(t, h)| (t.as_str(), Some(h.as_str())))
            .collect()
    };
    let table_schemas = serde_json::to_string(&table_schemas).ok();
    conn.execute(
        "INSERT INTO backup_inventory (r2_key, database_name, backup_date, size_bytes, table_count,
           created_at, expires_at, tier, manifest_key, sha256, row_count, schema_hash,
           compression, job_id, table_schemas, sealed_for)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT(r2_key) DO UPDATE SET deleted_at = NULL, size_bytes = excluded.size_bytes,
           sha256 = excluded.sha256, sealed_for = excluded.sealed_for,
           table_schemas = coalesce(backup_inventory.table_schemas, excluded.table_schemas)",
        params![
            m.key,
            m.database,
            date,
            m.size as i64,
            m.table_count as i64,
            m.completed_at.timestamp(),
            expires_at.timestamp(),
            m.tier,
            manifest_key,
            m.sha256,
            m.row_count as i64,
            m.schema_hash,
            m.compression.as_str(),
            m.job_id,
            table_schemas,
            m.encryption.as_ref().map(|e| e.recipients.join(", ")),
        ],
    )
}

/// The inventory as the status page's summary query sees it: committed dumps not deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventorySummary {
    pub total_backups: u64,
    pub unique_days: u64,
    pub total_bytes: u64,
    /// Oldest and newest `backup_date` (`YYYY-MM-DD`).
    pub oldest_date: Option<String>,
    pub newest_date: Option<String>,
}

/// One day of the status page's daily history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRow {
    pub date: String,
    pub count: u64,
    pub bytes: u64,
    /// The databases backed up that day.
    pub databases: Vec<String>,
}

/// A job with who started it and why (manual triggers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDetail {
    pub job: JobRow,
    pub initiated_by: Option<String>,
    pub reason: Option<String>,
}

/// The newest successful backup of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSuccess {
    /// Unix seconds: the newest committed backup, from results or the inventory (adopted
    /// backups have no result row).
    pub at: i64,
    /// Size and duration of the newest recorded successful result, when there is one.
    pub size_bytes: Option<u64>,
    pub duration_ms: Option<i64>,
}

/// Everything the metrics read from the catalog at scrape time.
#[derive(Debug, Clone, Default)]
pub struct MetricFacts {
    pub last_success: BTreeMap<String, LastSuccess>,
    /// `(database, status)` → results recorded (`success` | `failed`).
    pub results: BTreeMap<(String, String), u64>,
    /// Durations of successful backups, in milliseconds.
    pub durations_ms: Vec<i64>,
    /// Dumps and weekly archives deleted by retention.
    pub retention_deleted_daily: u64,
    pub retention_deleted_weekly: u64,
    /// Dumps not deleted, and their bytes.
    pub live_daily_objects: u64,
    pub live_daily_bytes: u64,
    /// Weekly archives present, and their bytes.
    pub weekly_objects: u64,
    pub weekly_bytes: u64,
    /// `result` → reloads recorded.
    pub reloads: BTreeMap<String, u64>,
    /// The newest reload's result, and the newest successful reload (unix seconds).
    pub last_reload_ok: Option<bool>,
    pub last_reload_success_at: Option<i64>,
    /// Newest passed verification per database (unix seconds).
    pub verified: BTreeMap<String, i64>,
    /// `(database, status)` → verifications recorded (`ok` | `failed`).
    pub verify_runs: BTreeMap<(String, String), u64>,
    /// `(database, tier)` → inventory entries not deleted (restore points).
    pub restore_points: BTreeMap<(String, String), u64>,
    /// `(sink, event, result)` → deliveries; see [`Catalog::alert_delivery_counts`].
    pub alerts: BTreeMap<(String, String, String), u64>,
    /// D1 databases → (backups that fell back to query mode, values repaired from `/query`).
    pub d1_fidelity: BTreeMap<String, (u64, u64)>,
    /// Durations of pruned successful backups, bucketed (see [`PrunedTotals`]); the counters
    /// above already include what was pruned.
    pub pruned_duration_buckets: BTreeMap<String, u64>,
    pub pruned_duration_sum_ms: u64,
    pub pruned_duration_count: u64,
}

/// What one housekeeping pass did ([`Catalog::prune_history`], [`Catalog::optimize`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub jobs: u64,
    pub results: u64,
    pub inventory: u64,
    pub alert_deliveries: u64,
    pub config_reloads: u64,
    /// Verifications (drills, `patina verify`).
    pub verifications: u64,
    /// Restore history entries.
    pub restores: u64,
}

impl PruneReport {
    pub fn total(&self) -> u64 {
        self.jobs
            + self.results
            + self.inventory
            + self.alert_deliveries
            + self.config_reloads
            + self.verifications
            + self.restores
    }
}

/// Restore history entries kept whatever their age (`/status` and `/ui` show the newest).
const RESTORES_KEPT: i64 = 50;

/// Separates label values in `pruned_totals.labels` (the ASCII unit separator, char(31)).
const SEP: char = '\u{1f}';

/// Counts of rows [`Catalog::prune_history`] removed, by counter and labels, which the metrics
/// add to the rows still present so that no counter goes down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunedTotals {
    /// `(database, status)` → results pruned.
    pub results: BTreeMap<(String, String), u64>,
    /// Pruned successful durations: per bucket upper bound (seconds, as written by
    /// [`Catalog::prune_history`]'s `bounds`; `+Inf` last), their sum (ms) and count.
    pub duration_buckets: BTreeMap<String, u64>,
    pub duration_sum_ms: u64,
    pub duration_count: u64,
    /// Dumps deleted by retention whose inventory rows were pruned.
    pub retention_deleted_daily: u64,
    /// `result` → reloads pruned.
    pub reloads: BTreeMap<String, u64>,
    /// `(sink, event, result)` → final deliveries pruned.
    pub alerts: BTreeMap<(String, String, String), u64>,
    /// D1 database → (fallbacks, repaired values) of pruned results.
    pub d1_fidelity: BTreeMap<String, (u64, u64)>,
    /// `(database, status)` → verifications pruned.
    pub verify_runs: BTreeMap<(String, String), u64>,
}

// Housekeeping: the catalog stays as large as what storage holds, not as old as the daemon.
impl Catalog {
    /// Remove history older than `cutoff` that describes nothing still in storage: jobs (and
    /// their results) that finished before it and none of whose dumps is still in the
    /// inventory, inventory rows of dumps deleted before it, verifications before it (the
    /// newest per database, its newest passed one and the newest drill stay), restore history
    /// before it beyond the newest [`RESTORES_KEPT`], alert delivery attempts and
    /// config reloads before it (the newest reload, and the newest successful one, stay: the
    /// metrics read them). What is removed is first added to `pruned_totals`, so the counters
    /// read from row counts never go down. `bounds` are the duration histogram's upper bounds
    /// in seconds. One transaction: all or nothing.
    pub fn prune_history(
        &mut self,
        cutoff: DateTime<Utc>,
        bounds: &[f64],
    ) -> Result<PruneReport, CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            action: "prune old history",
            path: path.clone(),
            source,
        };
        let cutoff = cutoff.timestamp();
        let tx = self.conn.transaction().map_err(err)?;
        let add = |counter: &str, labels: &str, value: i64| -> rusqlite::Result<()> {
            if value != 0 {
                tx.execute(
                    "INSERT INTO pruned_totals (counter, labels, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT(counter, labels) DO UPDATE SET value = value + excluded.value",
                    params![counter, labels, value],
                )?;
            }
            Ok(())
        };
        let rows = |sql: &str| -> rusqlite::Result<Vec<(String, i64)>> {
            let mut stmt = tx.prepare(sql)?;
            stmt.query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        };
        let mut report = PruneReport::default();
        let result: rusqlite::Result<()> = (|| {
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS prune_jobs (job_id TEXT PRIMARY KEY);
                 DELETE FROM temp.prune_jobs;",
            )?;
            tx.execute(
                "INSERT INTO temp.prune_jobs
                 SELECT j.job_id FROM backup_jobs j
                 WHERE j.status != 'running' AND coalesce(j.completed_at, j.started_at) < ?1
                   AND NOT EXISTS (SELECT 1 FROM backup_results r JOIN backup_inventory i
                                   ON i.r2_key = r.r2_key
                                   WHERE r.job_id = j.job_id AND i.deleted_at IS NULL)",
                params![cutoff],
            )?;
            const PRUNED: &str = "job_id IN (SELECT job_id FROM temp.prune_jobs)";
            for (labels, n) in rows(&format!(
                "SELECT database_name || char(31) || status, count(*) FROM backup_results
                 WHERE {PRUNED} AND ?1 IS NOT NULL GROUP BY 1"
            ))? {
                add("backups", &labels, n)?;
            }
            let mut stmt = tx.prepare(&format!(
                "SELECT duration_ms FROM backup_results
                 WHERE {PRUNED} AND status = 'success' AND duration_ms IS NOT NULL"
            ))?;
            let durations: Vec<i64> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            for ms in &durations {
                let secs = *ms as f64 / 1000.0;
                let le = bounds
                    .iter()
                    .find(|b| secs <= **b)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                add("backup_duration_bucket", &le, 1)?;
            }
            add("backup_duration_sum_ms", "", durations.iter().sum())?;
            add("backup_duration_count", "", durations.len() as i64)?;
            for (db, n) in rows(&format!(
                "SELECT database_name, count(d1_fallback) FROM backup_results
                 WHERE {PRUNED} AND d1_repaired_values IS NOT NULL AND ?1 IS NOT NULL GROUP BY 1"
            ))? {
                add("d1_fallbacks", &db, n)?;
            }
            for (db, n) in rows(&format!(
                "SELECT database_name, sum(d1_repaired_values) FROM backup_results
                 WHERE {PRUNED} AND d1_repaired_values IS NOT NULL AND ?1 IS NOT NULL GROUP BY 1"
            ))? {
                add("d1_repaired", &db, n)?;
            }
            report.results =
                tx.execute(&format!("DELETE FROM backup_results WHERE {PRUNED}"), [])? as u64;
            report.jobs =
                tx.execute(&format!("DELETE FROM backup_jobs WHERE {PRUNED}"), [])? as u64;

            for (_, n) in rows(
                "SELECT '', count(*) FROM backup_inventory
                 WHERE deleted_at < ?1
                   AND (deleted_reason = 'retention' OR daily_deleted_at IS NOT NULL)",
            )? {
                add("retention_deleted", "daily", n)?;
            }
            report.inventory = tx.execute(
                "DELETE FROM backup_inventory WHERE deleted_at < ?1",
                params![cutoff],
            )? as u64;

            for (labels, n) in rows(
                "SELECT sink || char(31) || event || char(31) || result, count(*) FROM alert_deliveries
                 WHERE attempted_at < ?1 AND result IN ('success', 'failure') GROUP BY 1",
            )? {
                add("alerts_sent", &labels, n)?;
            }
            report.alert_deliveries = tx.execute(
                "DELETE FROM alert_deliveries WHERE attempted_at < ?1",
                params![cutoff],
            )? as u64;

            const KEEP: &str = "id NOT IN (SELECT max(id) FROM config_reloads
                 UNION SELECT max(id) FROM config_reloads WHERE result = 'success')";
            for (result, n) in rows(&format!(
                "SELECT result, count(*) FROM config_reloads WHERE at < ?1 AND {KEEP} GROUP BY 1"
            ))? {
                add("config_reloads", &result, n)?;
            }
            report.config_reloads = tx.execute(
                &format!("DELETE FROM config_reloads WHERE at < ?1 AND {KEEP}"),
                params![cutoff],
            )? as u64;

            // Verifications: per database the newest, the newest passed check of a newest
            // point (the metric's last success) and the newest drill stay.
            const KEEP_VERIFIED: &str = "id NOT IN (
                 SELECT max(id) FROM verifications GROUP BY database_name
                 UNION SELECT max(id) FROM verifications
                       WHERE status = 'ok' AND coalesce(newest, 1) = 1 GROUP BY database_name
                 UNION SELECT max(id) FROM verifications WHERE origin = 'drill')";
            for (labels, n) in rows(&format!(
                "SELECT database_name || char(31) || status, count(*) FROM verifications
                 WHERE verified_at < ?1 AND {KEEP_VERIFIED} GROUP BY 1"
            ))? {
                add("verify_runs", &labels, n)?;
            }
            report.verifications = tx.execute(
                &format!("DELETE FROM verifications WHERE verified_at < ?1 AND {KEEP_VERIFIED}"),
                params![cutoff],
            )? as u64;
            report.restores = tx.execute(
                "DELETE FROM restores WHERE started_at < ?1 AND id NOT IN (
                     SELECT id FROM restores ORDER BY started_at DESC, id DESC LIMIT ?2)",
                params![cutoff, RESTORES_KEPT],
            )? as u64;
            Ok(())
        })();
        result.map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(report)
    }

    /// Let SQLite refresh its statistics (`PRAGMA optimize`), give back free pages when more
    /// than a quarter of the file and over 4 MiB is free (`VACUUM`), and truncate the WAL.
    /// Returns whether it vacuumed.
    pub fn optimize(&self) -> Result<bool, CatalogError> {
        let err = self.q("optimize the catalog");
        let pragma = |name: &str| -> rusqlite::Result<i64> {
            self.conn.pragma_query_value(None, name, |r| r.get(0))
        };
        let result: rusqlite::Result<bool> = (|| {
            self.conn.execute_batch("PRAGMA optimize;")?;
            let (pages, free, page_size) = (
                pragma("page_count")?,
                pragma("freelist_count")?,
                pragma("page_size")?,
            );
            let vacuum = free * 4 > pages && free * page_size > 4 << 20;
            if vacuum {
                self.conn.execute_batch("VACUUM;")?;
            }
            // Busy readers may keep part of the WAL; what they hold is truncated next time.
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(vacuum)
        })();
        result.map_err(err)
    }

    /// Bytes of the catalog file and its WAL now.
    pub fn size_on_disk(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        len(&self.path) + len(Path::new(&wal))
    }

    /// Everything pruned so far (see [`PrunedTotals`]).
    pub fn pruned_totals(&self) -> Result<PrunedTotals, CatalogError> {
        let mut t = PrunedTotals::default();
        let mut stmt = self
            .conn
            .prepare("SELECT counter, labels, value FROM pruned_totals")
            .map_err(self.q("read pruned totals"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })
            .map_err(self.q("read pruned totals"))?;
        for row in rows {
            let (counter, labels, n) = row.map_err(self.q("read pruned totals"))?;
            let mut parts = labels.splitn(3, SEP).map(str::to_string);
            let mut next = || parts.next().unwrap_or_default();
            match counter.as_str() {
                "backups" => {
                    *t.results.entry((next(), next())).or_default() += n;
                }
                "backup_duration_bucket" => *t.duration_buckets.entry(labels).or_default() += n,
                "backup_duration_sum_ms" => t.duration_sum_ms += n,
                "backup_duration_count" => t.duration_count += n,
                "retention_deleted" => t.retention_deleted_daily += n,
                "config_reloads" => *t.reloads.entry(labels).or_default() += n,
                "alerts_sent" => {
                    *t.alerts.entry((next(), next(), next())).or_default() += n;
                }
                "d1_fallbacks" => t.d1_fidelity.entry(labels).or_default().0 += n,
                "d1_repaired" => t.d1_fidelity.entry(labels).or_default().1 += n,
                "verify_runs" => {
                    *t.verify_runs.entry((next(), next())).or_default() += n;
                }
                _ => {}
            }
        }
        Ok(t)
    }
}

// Read queries for the HTTP status endpoints and the metrics (DESIGN §7, §8). They read only.
impl Catalog {
    /// The seed status page's summary query, plus the oldest date.
    pub fn inventory_summary(&self) -> Result<InventorySummary, CatalogError> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT backup_date), coalesce(SUM(size_bytes), 0),
                        MIN(backup_date), MAX(backup_date)
                 FROM backup_inventory WHERE deleted_at IS NULL",
                [],
                |r| {
                    Ok(InventorySummary {
                        total_backups: r.get::<_, i64>(0)? as u64,
                        unique_days: r.get::<_, i64>(1)? as u64,
                        total_bytes: r.get::<_, i64>(2)? as u64,
                        oldest_date: r.get(3)?,
                        newest_date: r.get(4)?,
                    })
                },
            )
            .map_err(self.q("summarize the inventory"))
    }

    /// The seed status page's daily history query: the newest `limit` days with backups.
    pub fn daily_history(&self, limit: usize) -> Result<Vec<DayRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT backup_date, COUNT(*), coalesce(SUM(size_bytes), 0),
                        group_concat(DISTINCT database_name)
                 FROM backup_inventory WHERE deleted_at IS NULL
                 GROUP BY backup_date ORDER BY backup_date DESC LIMIT ?1",
            )
            .map_err(self.q("read the daily history"))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                let names: Option<String> = r.get(3)?;
                Ok(DayRow {
                    date: r.get(0)?,
                    count: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                    databases: names
                        .map(|n| n.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })
            .map_err(self.q("read the daily history"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("read the daily history"))
    }

    /// The newest jobs (the seed's reliability query orders the same way), with who started
    /// them; `running_only` keeps the jobs still running.
    pub fn jobs_detail(
        &self,
        limit: usize,
        running_only: bool,
    ) -> Result<Vec<JobDetail>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS}, initiated_by, reason
                     FROM backup_jobs WHERE (?2 = 0 OR status = 'running')
                     ORDER BY started_at DESC, id DESC LIMIT ?1"
            ))
            .map_err(self.q("list jobs"))?;
        let rows = stmt
            .query_map(params![limit as i64, running_only as i64], |r| {
                Ok(JobDetail {
                    job: job_row(r)?,
                    initiated_by: r.get(11)?,
                    reason: r.get(12)?,
                })
            })
            .map_err(self.q("list jobs"))?;
        rows.collect::<Result<_, _>>().map_err(self.q("list jobs"))
    }

    /// Everything `/metrics` reads from the catalog, in one go.
    pub fn metric_facts(&self) -> Result<MetricFacts, CatalogError> {
        let err = self.q("read metrics");
        let mut f = MetricFacts::default();
        let result: rusqlite::Result<()> = (|| {
            let mut stmt = self.conn.prepare(
                "SELECT database_name, max(created_at) FROM backup_inventory GROUP BY database_name",
            )?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (db, at) = row?;
                f.last_success.insert(
                    db,
                    LastSuccess {
                        at,
                        size_bytes: None,
                        duration_ms: None,
                    },
                );
            }
            let mut stmt = self.conn.prepare(
                "SELECT r.database_name, r.completed_at, r.size_bytes, r.duration_ms
                 FROM backup_results r
                 WHERE r.status = 'success' AND r.id = (SELECT max(s.id) FROM backup_results s
                   WHERE s.database_name = r.database_name AND s.status = 'success')",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })? {
                let (db, at, size, duration) = row?;
                let e = f.last_success.entry(db).or_insert(LastSuccess {
                    at,
                    size_bytes: None,
                    duration_ms: None,
                });
                e.at = e.at.max(at);
                e.size_bytes = size.map(|s| s as u64);
                e.duration_ms = duration;
            }
            let mut stmt = self.conn.prepare(
                "SELECT database_name, status, count(*) FROM backup_results GROUP BY 1, 2",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })? {
                let (db, status, n) = row?;
                f.results.insert((db, status), n as u64);
            }
            let mut stmt = self.conn.prepare(
                "SELECT duration_ms FROM backup_results
                 WHERE status = 'success' AND duration_ms IS NOT NULL",
            )?;
            f.durations_ms = stmt
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<Result<_, _>>()?;
            (f.live_daily_objects, f.live_daily_bytes) = self.conn.query_row(
                "SELECT count(*), coalesce(sum(size_bytes), 0) FROM backup_inventory
                 WHERE deleted_at IS NULL AND tier = 'daily'",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?;
            f.retention_deleted_daily = self.conn.query_row(
                "SELECT count(*) FROM backup_inventory
                 WHERE deleted_reason = 'retention' OR daily_deleted_at IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            (f.retention_deleted_weekly, f.weekly_objects, f.weekly_bytes) = self.conn.query_row(
                "SELECT count(deleted_at), count(*) - count(deleted_at),
                        coalesce(sum(CASE WHEN deleted_at IS NULL THEN size_bytes END), 0)
                 FROM weekly_archives",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )?;
            let mut stmt = self
                .conn
                .prepare("SELECT result, count(*) FROM config_reloads GROUP BY result")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (result, n) = row?;
                f.reloads.insert(result, n as u64);
            }
            f.last_reload_ok = self
                .conn
                .query_row(
                    "SELECT result FROM config_reloads ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .map(|r| r == "success");
            f.last_reload_success_at = self.conn.query_row(
                "SELECT max(at) FROM config_reloads WHERE result = 'success'",
                [],
                |r| r.get(0),
            )?;
            let mut stmt = self.conn.prepare(
                "SELECT database_name, max(verified_at) FROM verifications
                 WHERE status = 'ok' AND coalesce(newest, 1) = 1 GROUP BY database_name",
            )?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (db, at) = row?;
                f.verified.insert(db, at);
            }
            for (sql, map) in [
                (
                    "SELECT database_name, status, count(*) FROM verifications GROUP BY 1, 2",
                    &mut f.verify_runs,
                ),
                (
                    "SELECT database_name, tier, count(*) FROM backup_inventory
                     WHERE deleted_at IS NULL GROUP BY 1, 2",
                    &mut f.restore_points,
                ),
            ] {
                let mut stmt = self.conn.prepare(sql)?;
                for row in stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })? {
                    let (a, b, n) = row?;
                    map.insert((a, b), n as u64);
                }
            }
            f.alerts = self.alert_delivery_counts()?;
            let mut stmt = self.conn.prepare(
                "SELECT database_name, count(d1_fallback), coalesce(sum(d1_repaired_values), 0)
                 FROM backup_results WHERE d1_repaired_values IS NOT NULL GROUP BY 1",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })? {
                let (db, fallbacks, repaired) = row?;
                f.d1_fidelity
                    .insert(db, (fallbacks as u64, repaired as u64));
            }
            Ok(())
        })();
        result.map_err(err)?;
        // Rows housekeeping pruned still count.
        let p = self.pruned_totals()?;
        for (k, n) in p.results {
            *f.results.entry(k).or_default() += n;
        }
        for (k, n) in p.reloads {
            *f.reloads.entry(k).or_default() += n;
        }
        for (k, n) in p.verify_runs {
            *f.verify_runs.entry(k).or_default() += n;
        }
        for (k, n) in p.alerts {
            *f.alerts.entry(k).or_default() += n;
        }
        for (db, (fallbacks, repaired)) in p.d1_fidelity {
            let e = f.d1_fidelity.entry(db).or_default();
            e.0 += fallbacks;
            e.1 += repaired;
        }
        f.retention_deleted_daily += p.retention_deleted_daily;
        f.pruned_duration_buckets = p.duration_buckets;
        f.pruned_duration_sum_ms = p.duration_sum_ms;
        f.pruned_duration_count = p.duration_count;
        Ok(f)
    }

    /// Final alert delivery outcomes by `(sink, event, result)` for
    /// `patina_alerts_sent_total` (retried attempts are not counted; a delivery counts once).
    pub fn alert_delivery_counts(
        &self,
    ) -> rusqlite::Result<BTreeMap<(String, String, String), u64>> {
        let mut stmt = self.conn.prepare(
            "SELECT sink, event, result, count(*) FROM alert_deliveries
             WHERE result IN ('success', 'failure') GROUP BY 1, 2, 3",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ),
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DumpId, FORMAT_VERSION, SourceFacts};
    use crate::policy::Compression;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn manifest(db: &str, at: &str, size: u64, job: &str) -> Manifest {
        let id = DumpId::new(db, t(at));
        Manifest {
            format: FORMAT_VERSION,
            database: db.into(),
            tier: "daily".into(),
            key: id.data_key(crate::codec::Layers::plain(Compression::Zstd)),
            sha256: "00".repeat(32),
            size,
            compression: Compression::Zstd,
            encryption: None,
            sql_bytes: size * 4,
            tables: BTreeMap::from([("t".into(), 2)]),
            table_count: 1,
            row_count: 2,
            schema_hash: String::new(),
            table_schema_hashes: BTreeMap::new(),
            source: SourceFacts::Sqlite { path: "x".into() },
            fidelity: None,
            job_id: job.into(),
            trigger: Trigger::Manual,
            started_at: t(at),
            completed_at: t(at) + chrono::Duration::seconds(2),
            patina_version: "0".into(),
            lease_generation: None,
        }
    }

    #[test]
    fn migrations_apply_once_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        drop(Catalog::open(dir.path()).unwrap());
        let c = Catalog::open(dir.path()).unwrap();
        let v: i64 = c
            .connection()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = c
            .connection()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_newer_catalog_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.connection()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(c);
        let err = Catalog::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("upgrade patina"), "{err}");
    }

    /// One job of one database at `at`: a success (its dump `key`) or a failure.
    fn job(c: &mut Catalog, id: &str, db: &str, at: &str, ok: bool) -> String {
        let start = t(at);
        c.start_job(&NewJob {
            job_id: id,
            started_at: start,
            trigger: Trigger::Scheduled,
            total_databases: 1,
            initiated_by: None,
            reason: None,
        })
        .unwrap();
        let m = manifest(db, at, 100, id);
        let row = ResultRow {
            job_id: id,
            database: db,
            started_at: start,
            completed_at: start + chrono::Duration::seconds(2),
            outcome: if ok { Ok(&m) } else { Err("boom") },
            handed_over: false,
        };
        c.record_result(&row, start + chrono::Duration::days(7))
            .unwrap();
        c.finish_job(id, start + chrono::Duration::seconds(2))
            .unwrap();
        m.key
    }

    #[test]
    fn pruning_removes_only_history_of_what_is_gone_and_counters_never_go_down() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let gone = job(&mut c, "j-gone", "a", "2026-08-01T03:00:00Z", true);
        job(&mut c, "j-failed", "a", "2026-08-02T03:00:00Z", false);
        let kept = job(&mut c, "j-live", "a", "2026-08-03T03:00:00Z", true);
        job(&mut c, "j-recent", "a", "2026-11-20T03:00:00Z", false);
        c.mark_deleted(&gone, "retention", t("2026-08-10T03:00:00Z"))
            .unwrap();
        c.record_reload(t("2026-08-01T00:00:00Z"), Err("bad"))
            .unwrap();
        c.record_reload(t("2026-08-02T00:00:00Z"), Ok(())).unwrap();
        c.record_reload(t("2026-08-03T00:00:00Z"), Err("bad again"))
            .unwrap();
        // Verifications of "a": passed, failed, passed (of an older point), failed (a drill),
        // all old; and 60 old restores.
        for (day, ok, newest, origin) in [
            ("2026-08-01", true, true, "cli"),
            ("2026-08-02", false, true, "cli"),
            ("2026-08-03", true, false, "cli"),
            ("2026-08-04", false, true, "drill"),
        ] {
            c.record_verification(&VerificationRecord {
                database: "a",
                key: &kept,
                location: None,
                taken_at: None,
                origin,
                at: t(&format!("{day}T05:00:00Z")),
                duration_ms: Some(10),
                newest,
                outcome: if ok { Ok(()) } else { Err("row counts differ") },
            })
            .unwrap();
        }
        for i in 0..60 {
            let at = t("2026-08-01T00:00:00Z") + chrono::Duration::minutes(i);
            c.record_restore(&RestoreRecord {
                started_at: at,
                completed_at: at,
                initiated_by: "cli:ops",
                action: "restore",
                database: "a",
                key: None,
                location: None,
                taken_at: None,
                target: Some("/tmp/a.db"),
                outcome: Ok(()),
            })
            .unwrap();
        }
        let before = c.metric_facts().unwrap();

        let report = c
            .prune_history(t("2026-10-01T00:00:00Z"), &[1.0, 5.0])
            .unwrap();
        // The job whose dump is gone and the failed one go; the live dump's job and the
        // recent failure stay; of the reloads, only the newest and the newest successful one.
        assert_eq!(
            report,
            PruneReport {
                jobs: 2,
                results: 2,
                inventory: 1,
                alert_deliveries: 0,
                config_reloads: 1,
                // The newest (the drill, which is also the newest drill) and the newest passed
                // check of a newest point (08-01) stay.
                verifications: 2,
                restores: 10,
            }
        );
        let after = c.metric_facts().unwrap();
        assert_eq!(
            after.verify_runs, before.verify_runs,
            "verify_runs_total unchanged"
        );
        assert_eq!(after.verified, before.verified, "last success unchanged");
        assert_eq!(c.recent_restores(100).unwrap().len(), 50);
        let jobs: Vec<String> = c
            .recent_jobs(10)
            .unwrap()
            .into_iter()
            .map(|j| j.job_id)
            .collect();
        assert_eq!(jobs, ["j-recent", "j-live"]);
        assert_eq!(c.list_backups(None).unwrap()[0].key, kept);

        let after = c.metric_facts().unwrap();
        assert_eq!(after.results, before.results, "backups_total unchanged");
        assert_eq!(after.reloads, before.reloads);
        assert_eq!(
            after.retention_deleted_daily,
            before.retention_deleted_daily
        );
        assert_eq!(
            after.durations_ms.len() as u64 + after.pruned_duration_count,
            before.durations_ms.len() as u64
        );
        assert_eq!(after.pruned_duration_buckets["5"], 1, "a 2 s run, le=5");
        // Pruning again finds nothing and adds nothing.
        assert_eq!(
            c.prune_history(t("2026-10-01T00:00:00Z"), &[1.0, 5.0])
                .unwrap()
                .total(),
            0
        );
        assert_eq!(c.metric_facts().unwrap().results, before.results);
        assert!(!c.optimize().unwrap(), "nothing worth a VACUUM");
    }

    #[test]
    fn jobs_count_their_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let start = t("2026-11-22T03:00:00Z");
        c.start_job(&NewJob {
            job_id: "j1",
            started_at: start,
            trigger: Trigger::Manual,
            total_databases: 2,
            initiated_by: Some("cli"),
            reason: None,
        })
        .unwrap();
        let m = manifest("a", "2026-11-22T03:00:00Z", 100, "j1");
        c.record_result(
            &ResultRow {
                job_id: "j1",
                database: "a",
                started_at: start,
                completed_at: start + chrono::Duration::seconds(1),
                outcome: Ok(&m),
                handed_over: false,
            },
            start + chrono::Duration::days(7),
        )
        .unwrap();
        c.record_result(
            &ResultRow {
                job_id: "j1",
                database: "b",
                started_at: start,
                completed_at: start,
                outcome: Err("file not found"),
                handed_over: false,
            },
            start,
        )
        .unwrap();
        c.finish_job("j1", start + chrono::Duration::seconds(3))
            .unwrap();
        let jobs = c.recent_jobs(10).unwrap();
        assert_eq!(jobs.len(), 1);
        let j = &jobs[0];
        assert_eq!(
            (
                j.status.as_str(),
                j.successful_count,
                j.failed_count,
                j.total_size_bytes
            ),
            ("completed", 1, 1, 100)
        );
        assert_eq!(j.duration_ms, Some(3000));
        assert_eq!(j.error_message.as_deref(), Some("b: file not found"));
        let list = c.list_backups(None).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].date, "2026-11-22");
        assert!(c.list_backups(Some("b")).unwrap().is_empty());
    }

    #[test]
    fn failure_streaks_count_since_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let t0 = t("2026-11-22T03:00:00Z");
        c.start_job(&NewJob {
            job_id: "j",
            started_at: t0,
            trigger: Trigger::Scheduled,
            total_databases: 1,
            initiated_by: None,
            reason: None,
        })
        .unwrap();
        let m = manifest("a", "2026-11-22T03:00:00Z", 1, "j");
        let mut record = |db: &str, minute: i64, ok: bool, handed_over: bool| {
            let at = t0 + chrono::Duration::minutes(minute);
            c.record_result(
                &ResultRow {
                    job_id: "j",
                    database: db,
                    started_at: at,
                    completed_at: at,
                    outcome: if ok { Ok(&m) } else { Err("boom") },
                    handed_over,
                },
                at,
            )
            .unwrap();
        };
        record("a", 0, false, false);
        record("a", 1, true, false);
        record("a", 2, false, false);
        record("a", 5, false, false);
        record("b", 3, false, false);
        // A backup handed over to another node (its lease moved) is no failure: no backoff.
        record("a", 6, false, true);
        record("c", 4, false, true);
        let streaks = c.failure_streaks().unwrap();
        assert_eq!(streaks["a"], (2, t0 + chrono::Duration::minutes(5)));
        assert_eq!(streaks["b"], (1, t0 + chrono::Duration::minutes(3)));
        assert_eq!(streaks.len(), 2);
        c.finish_job("j", t0 + chrono::Duration::minutes(7))
            .unwrap();
        assert_eq!(c.recent_jobs(1).unwrap()[0].failed_count, 4);
        assert_eq!(c.known_keys().unwrap().len(), 1);
        c.mark_deleted(&m.key, "retention", t0).unwrap();
        assert!(c.known_keys().unwrap().is_empty());
    }

    #[test]
    fn running_jobs_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let start = t("2026-11-22T03:00:00Z");
        c.start_job(&NewJob {
            job_id: "j1",
            started_at: start,
            trigger: Trigger::Scheduled,
            total_databases: 1,
            initiated_by: None,
            reason: None,
        })
        .unwrap();
        assert_eq!(c.mark_interrupted(start).unwrap(), 1);
        assert_eq!(c.recent_jobs(1).unwrap()[0].status, "interrupted");
        assert_eq!(c.mark_interrupted(start).unwrap(), 0);
    }

    #[test]
    fn import_rebuilds_jobs_and_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let ms = vec![
            manifest("a", "2026-11-21T03:00:00Z", 10, "j1"),
            manifest("b", "2026-11-21T03:00:05Z", 20, "j1"),
            manifest("a", "2026-11-22T03:00:00Z", 30, "j2"),
        ];
        c.import_manifests(&ms, &|m| m.completed_at).unwrap();
        let jobs = c.recent_jobs(10).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].job_id, "j2");
        assert_eq!(
            (jobs[1].successful_count, jobs[1].total_size_bytes),
            (2, 30)
        );
        assert_eq!(c.list_backups(Some("a")).unwrap().len(), 2);
    }
}
