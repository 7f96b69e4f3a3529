//! Database sources behind one interface. A [`Source`] turns a declared database into one
//! consistent SQLite snapshot that the dump writer reads, plus the facts the manifest records
//! about where it came from, and may add restore guidance of its own kind. A SQLite file is its
//! own snapshot (the dump reads it inside one read transaction); a D1 database is copied into a
//! scratch file first (`d1`). A new kind of source is one new file here, one arm in [`of`] and
//! one `SourceSpec` variant in the policy.

pub mod d1;
pub mod d1_restore;
pub mod sqlite;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::manifest::{Fidelity, SourceFacts};
use crate::policy::{Cloudflare, D1Mode, SourceSpec};

/// What a snapshot needs besides the source itself.
#[derive(Debug, Clone)]
pub struct SnapshotRequest<'a> {
    /// The Patina database name (for messages and scratch file names).
    pub database: &'a str,
    /// Where scratch copies go (`{state_dir}/scratch`).
    pub scratch_dir: &'a Path,
    /// Tables that never leave the machine.
    pub exclude_tables: &'a [String],
    /// The policy's `[cloudflare]` section, when it has one.
    pub cloudflare: Option<&'a Cloudflare>,
}

/// A consistent copy to dump, and what the manifest says about it. Scratch files it owns are
/// removed when it is dropped.
pub struct Snapshot {
    path: PathBuf,
    /// Where the data came from.
    pub facts: SourceFacts,
    /// What was checked and repaired while copying (D1 only).
    pub fidelity: Option<Fidelity>,
    /// Keeps scratch files alive until the dump is done.
    _scratch: Option<Box<dyn Send + Sync>>,
}

impl Snapshot {
    /// The SQLite file to dump.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a source could not give a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    D1(#[from] d1::D1Error),
    #[error("{reason}")]
    Unsupported { reason: String },
}

/// A future a source returns (sources are used as trait objects).
pub type SnapshotFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Snapshot, SnapshotError>> + Send + 'a>>;

/// One kind of database Patina backs up.
pub trait Source: Send + Sync {
    /// One consistent snapshot of the database.
    fn snapshot<'a>(&'a self, req: &'a SnapshotRequest<'a>) -> SnapshotFuture<'a>;

    /// Restore steps particular to this kind of database (for `/restore-guide`), for the backup
    /// of `date` (`YYYY-MM-DD`) of `database`; `None` when the generic SQLite steps apply.
    fn restore_guide(&self, _database: &str, _date: &str) -> Option<Vec<String>> {
        None
    }
}

/// The source a policy declares.
pub fn of(spec: &SourceSpec) -> Box<dyn Source> {
    match spec {
        SourceSpec::Sqlite { path } => Box::new(SqliteFile { path: path.clone() }),
        SourceSpec::D1 { id, mode } => Box::new(D1Database {
            id: id.clone(),
            mode: *mode,
        }),
    }
}

/// A SQLite file: its own snapshot.
struct SqliteFile {
    path: PathBuf,
}

impl Source for SqliteFile {
    fn snapshot<'a>(&'a self, _req: &'a SnapshotRequest<'a>) -> SnapshotFuture<'a> {
        Box::pin(async move {
            Ok(Snapshot {
                path: self.path.clone(),
                facts: SourceFacts::Sqlite {
                    path: self.path.display().to_string(),
                },
                fidelity: None,
                _scratch: None,
            })
        })
    }
}

/// A Cloudflare D1 database, copied through the REST API into a scratch SQLite file.
struct D1Database {
    id: String,
    mode: D1Mode,
}

impl Source for D1Database {
    fn snapshot<'a>(&'a self, req: &'a SnapshotRequest<'a>) -> SnapshotFuture<'a> {
        Box::pin(async move {
            // `config` refuses a d1 database without a [cloudflare] section; this is a backstop.
            let cloudflare = req.cloudflare.ok_or_else(|| SnapshotError::Unsupported {
                reason: "a d1 database needs a [cloudflare] section with account_id and api_token"
                    .into(),
            })?;
            let client = d1::Client::new(cloudflare, d1::Options::default())?;
            let copy = client
                .snapshot(&d1::SnapshotRequest {
                    database: req.database,
                    id: &self.id,
                    mode: self.mode,
                    scratch_dir: req.scratch_dir,
                    exclude_tables: req.exclude_tables,
                })
                .await?;
            Ok(Snapshot {
                path: copy.path().to_path_buf(),
                facts: SourceFacts::D1 {
                    id: self.id.clone(),
                    bookmark: copy.bookmark().map(str::to_string),
                },
                fidelity: Some(copy.fidelity().clone()),
                _scratch: Some(Box::new(copy)),
            })
        })
    }

    fn restore_guide(&self, database: &str, date: &str) -> Option<Vec<String>> {
        Some(d1::restore_steps(database, &self.id, date))
    }
}
