//! Restoring and verifying: find a committed dump in storage (the bucket is the source of
//! truth, so this works on a fresh machine with no catalog), download it while hashing, check
//! sha256 and size against the manifest *before* anything is loaded, decompress and replay it
//! into a new SQLite file, and only then move that file into place.
//!
//! [`fetch_verified`] and [`VerifiedFile`] are the decode side of the codec's I/O: the one way
//! stored bytes are read back, used by restore, verify and `/download` alike.
//!
//! Sealed backups (DESIGN §14) open with the identities of [`Keys`] (`[encryption]
//! identity_file`, or `--identity FILE`). The identity file is read only for a sealed backup,
//! and before anything is downloaded: a host without it fails at once, naming the recipients
//! the backup was sealed for, and writes nothing. A wrong identity is found when the age header
//! is opened — after the sha256 matched, before a byte of SQL is loaded.
//!
//! A restore never overwrites an existing file unless asked to (`--force`); it writes beside
//! the target under a temporary name and renames, so a failed restore leaves nothing behind.
//! Verification restores into a scratch file and compares the result with the manifest:
//! `PRAGMA integrity_check`, per-table row counts and the schema hash.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::archive;
use crate::bucket::{self, ReadError};
use crate::codec::{self, DecodeError, Layers, Mismatch, Verified, Verifier};
use crate::inventory::{CommittedDump, Inventory};
use crate::keys::Identities;
use crate::manifest::{ArchiveManifest, ArchiveMember, Encryption, Manifest};
use crate::policy::{Compression, Policy};
use crate::source::sqlite::{self, SourceError};
use crate::store::{Store, StoreError};

/// Which backup to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Latest,
    /// The newest backup taken on this UTC date.
    Date(NaiveDate),
}

impl std::str::FromStr for At {
    type Err = String;

    fn from_str(s: &str) -> Result<At, String> {
        if s == "latest" {
            return Ok(At::Latest);
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(At::Date)
            .map_err(|_| format!("expected YYYY-MM-DD or \"latest\", got {s:?}"))
    }
}

/// Why a restore or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no committed backup of {database} in {location}{hint}")]
    NoBackup {
        database: String,
        location: String,
        hint: String,
    },
    #[error("restore target {0} already exists — pass --force to replace it")]
    TargetExists(PathBuf),
    #[error(
        "checksum mismatch for {location}: the manifest says sha256 {expected} ({expected_size} bytes) but the stored object has {actual} ({actual_size} bytes) — the object is damaged; restore another backup with --at"
    )]
    Checksum {
        location: String,
        expected: String,
        actual: String,
        expected_size: u64,
        actual_size: u64,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decompress {location}: {source}")]
    Decompress {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{location} is encrypted ({sealed}) and no identity_file is configured to open it; nothing was downloaded or written"
    )]
    NoIdentity { location: String, sealed: String },
    #[error("read identity_file {}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
    #[error(
        "{location} was sealed for {recipients}, and none of the {count} identities in {} opens it{opens}; nothing was loaded",
        path.display()
    )]
    WrongIdentity {
        location: String,
        recipients: String,
        count: usize,
        path: PathBuf,
        /// ` (they open …)`, or empty.
        opens: String,
    },
    #[error("decrypt {location}: {reason} — the stored object is not a readable age file")]
    Decrypt { location: String, reason: String },
    #[error("{0}")]
    Load(#[from] SourceError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Manifest(#[from] ReadError),
    #[error("restore task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Archive(String),
}

impl RestoreError {
    /// What the operator can do, where there is something to say beyond the message.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RestoreError::NoIdentity { .. } => Some(
                "set identity_file in [encryption], or pass --identity FILE, on a machine that holds an identity of one of those recipients",
            ),
            RestoreError::WrongIdentity { .. } => Some(
                "an identity file may hold several identities: add the one whose public key (`age-keygen -y`) is among those recipients",
            ),
            RestoreError::Identity { .. } => Some(
                "the identity file is `age-keygen` output (AGE-SECRET-KEY-1… lines) or an unencrypted OpenSSH private key",
            ),
            _ => None,
        }
    }

    /// A refusal because of keys (no identity, a wrong or unreadable one) rather than damage or
    /// storage: HTTP 409.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            RestoreError::NoIdentity { .. }
                | RestoreError::WrongIdentity { .. }
                | RestoreError::Identity { .. }
        )
    }
}

/// Where the identities that open sealed backups come from: `[encryption] identity_file`, or a
/// file named on the command line. Read only when a sealed backup is about to be fetched.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    identity_file: Option<PathBuf>,
}

impl Keys {
    /// No identities: plaintext backups only.
    pub fn none() -> Keys {
        Keys::default()
    }

    /// The identities in `path`.
    pub fn file(path: impl Into<PathBuf>) -> Keys {
        Keys {
            identity_file: Some(path.into()),
        }
    }

    /// The policy's `[encryption] identity_file`, if any.
    pub fn from_policy(policy: &Policy) -> Keys {
        Keys {
            identity_file: policy
                .encryption
                .as_ref()
                .and_then(|e| e.identity_file.clone()),
        }
    }

    pub fn identity_file(&self) -> Option<&Path> {
        self.identity_file.as_deref()
    }

    /// Read and parse the identity file (blocking; small).
    pub fn load(&self) -> Result<Option<IdentityFile>, RestoreError> {
        let Some(path) = &self.identity_file else {
            return Ok(None);
        };
        let bad = |reason: String| RestoreError::Identity {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let identities = Identities::parse(&text).map_err(|e| bad(e.to_string()))?;
        Ok(Some(IdentityFile {
            path: path.clone(),
            identities: Arc::new(identities),
        }))
    }

    /// The identities to open `located` with: `None` for a plaintext backup; for a sealed one,
    /// the identity file read now, or [`RestoreError::NoIdentity`] naming its recipients.
    pub fn open(
        &self,
        located: &Located,
        store: &Store,
    ) -> Result<Option<IdentityFile>, RestoreError> {
        if !located.layers().encrypted {
            return Ok(None);
        }
        match self.load()? {
            Some(file) => Ok(Some(file)),
            None => Err(RestoreError::NoIdentity {
                location: located.describe(store),
                sealed: located
                    .encryption()
                    .map_or_else(|| "age".to_string(), Encryption::describe),
            }),
        }
    }
}

/// The identities of an identity file, and where they were read from (for messages).
#[derive(Debug, Clone)]
pub struct IdentityFile {
    pub path: PathBuf,
    pub identities: Arc<Identities>,
}

/// Find the committed dump of `database` to restore, and read its manifest.
pub async fn find(
    store: &Store,
    database: &str,
    at: At,
) -> Result<(CommittedDump, Manifest), RestoreError> {
    let listing = match at {
        At::Latest => "daily/".to_string(),
        At::Date(d) => format!("daily/{}/{database}/", d.format("%Y-%m-%d")),
    };
    let inv = Inventory::classify(store.list(&listing).await?);
    let found = match at {
        At::Latest => inv.latest(database),
        At::Date(d) => inv.latest_on(database, &d.format("%Y-%m-%d").to_string()),
    };
    let Some(dump) = found.cloned() else {
        let hint = match at {
            At::Latest => " — run `patina backup` first, or check [storage] in patina.toml".into(),
            At::Date(d) => {
                let all = Inventory::classify(store.list("daily/").await?);
                let dates: Vec<String> = all.dumps_of(database).map(|d| d.id.date()).collect();
                match dates.last() {
                    None => format!(" on {d} (and none on any other day)"),
                    Some(_) => {
                        let mut dates = dates;
                        dates.dedup();
                        format!(" on {d} — dates with backups: {}", dates.join(", "))
                    }
                }
            }
        };
        return Err(RestoreError::NoBackup {
            database: database.to_string(),
            location: store.location("daily/"),
            hint,
        });
    };
    let manifest = bucket::read_manifest(store, &dump.manifest_key).await?;
    Ok((dump, manifest))
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub target: PathBuf,
    pub statements: u64,
}

/// A backup found to restore: a daily dump, or a dump inside a weekly archive (its daily copy
/// already pruned).
#[derive(Debug, Clone)]
pub enum Located {
    Daily(Manifest),
    Archived {
        archive: ArchiveManifest,
        member: ArchiveMember,
    },
}

impl Located {
    /// Where it is, for messages.
    pub fn describe(&self, store: &Store) -> String {
        match self {
            Located::Daily(m) => store.location(&m.key),
            Located::Archived { archive, member } => {
                format!("{} in {}", member.path, store.location(&archive.key))
            }
        }
    }
    pub fn size(&self) -> u64 {
        match self {
            Located::Daily(m) => m.size,
            Located::Archived { member, .. } => member.size,
        }
    }
    pub fn taken_at(&self) -> DateTime<Utc> {
        match self {
            Located::Daily(m) => m.started_at,
            Located::Archived { member, .. } => member.taken_at,
        }
    }

    /// How its stored bytes are encoded (from its key).
    pub fn layers(&self) -> Layers {
        let key = match self {
            Located::Daily(m) => return m.layers(),
            Located::Archived { member, .. } => &member.dump_key,
        };
        match crate::manifest::parse_key(key) {
            Some(crate::manifest::ParsedKey::DumpData { layers, .. }) => layers,
            // `archive::read_manifest` checked every member key.
            _ => Layers::plain(Compression::None),
        }
    }

    /// Who it was sealed for, when it was.
    pub fn encryption(&self) -> Option<&Encryption> {
        match self {
            Located::Daily(m) => m.encryption.as_ref(),
            Located::Archived { member, .. } => member.encryption.as_ref(),
        }
    }
}

/// Find a backup: the daily dumps first; for a date whose dailies were pruned, the weekly
/// archives.
pub async fn locate(store: &Store, database: &str, at: At) -> Result<Located, RestoreError> {
    match find(store, database, at).await {
        Ok((_, manifest)) => Ok(Located::Daily(manifest)),
        Err(RestoreError::NoBackup {
            database: db,
            location,
            hint,
        }) => {
            let At::Date(date) = at else {
                return Err(RestoreError::NoBackup {
                    database: db,
                    location,
                    hint,
                });
            };
            let day = date.format("%Y-%m-%d").to_string();
            let archives = Inventory::classify(store.list("weekly/").await?).archives;
            let mut best: Option<(ArchiveManifest, ArchiveMember)> = None;
            for a in archives.iter().rev() {
                let m = archive::read_manifest(store, &a.manifest_key)
                    .await
                    .map_err(|e| RestoreError::Archive(e.to_string()))?;
                for member in &m.members {
                    let same_day = member.taken_at.format("%Y-%m-%d").to_string() == day;
                    let newer = best
                        .as_ref()
                        .is_none_or(|(_, b)| member.taken_at > b.taken_at);
                    if member.database == database && same_day && newer {
                        best = Some((m.clone(), member.clone()));
                    }
                }
            }
            match best {
                Some((archive, member)) => Ok(Located::Archived { archive, member }),
                None => Err(RestoreError::NoBackup {
                    database: db,
                    location,
                    hint: format!("{hint} (weekly archives searched too)"),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

/// Download, check, decompress and load the dump of `manifest` into `target`.
pub async fn restore(
    store: &Store,
    manifest: &Manifest,
    target: &Path,
    force: bool,
    keys: &Keys,
) -> Result<Restored, RestoreError> {
    restore_located(
        store,
        &Located::Daily(manifest.clone()),
        target,
        force,
        keys,
    )
    .await
}

/// Restore a located backup into `target`: fetch it into a temporary file beside the target
/// while checking sha256 and size, decode (decrypt with `keys` when sealed, decompress) and load
/// it into a second temporary file, then rename that into place. A sealed backup with no
/// identity fails before anything is fetched.
pub async fn restore_located(
    store: &Store,
    located: &Located,
    target: &Path,
    force: bool,
    keys: &Keys,
) -> Result<Restored, RestoreError> {
    if target.exists() && !force {
        return Err(RestoreError::TargetExists(target.to_path_buf()));
    }
    let identities = keys.open(located, store)?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let download = dir.join(format!(".{name}.patina-{tag}.download"));
    let database = TempPath(dir.join(format!(".{name}.patina-{tag}.tmp")));

    let verified = fetch_verified(store, located, &download).await?;
    let loading = database.0.clone();
    let statements =
        tokio::task::spawn_blocking(move || load_plain(verified, identities.as_ref(), &loading))
            .await
            .map_err(|e| RestoreError::Task(e.to_string()))??;

    for suffix in ["-wal", "-shm", "-journal"] {
        let side = PathBuf::from(format!("{}{suffix}", target.display()));
        if side.exists() {
            std::fs::remove_file(&side).map_err(|source| RestoreError::Io {
                action: "remove stale",
                path: side.clone(),
                source,
            })?;
        }
    }
    std::fs::rename(&database.0, target).map_err(|source| RestoreError::Io {
        action: "move restored database into place at",
        path: target.to_path_buf(),
        source,
    })?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Restored {
        target: target.to_path_buf(),
        statements,
    })
}

/// A temporary file, removed when this is dropped (on every path out, a cancelled future's too).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The stored bytes of a backup in a local file, checked against their manifest's sha256 and
/// size: what [`fetch_verified`] returns, and the only thing restore, verify and `/download`
/// decode. The file is removed when this is dropped (an open handle from
/// [`VerifiedFile::into_stored`] or [`VerifiedFile::into_plain`] keeps reading it).
pub struct VerifiedFile {
    stored: Verified<File>,
    layers: Layers,
    /// Who the bytes were sealed for, from their manifest.
    encryption: Option<Encryption>,
    /// Where the bytes came from, for messages.
    location: String,
    _path: TempPath,
}

impl VerifiedFile {
    /// How the stored bytes are encoded.
    pub fn layers(&self) -> Layers {
        self.layers
    }

    /// The stored bytes as they are (`/download?raw=1`; still sealed when they were).
    pub fn into_stored(self) -> File {
        self.stored.into_stored()
    }

    /// The SQL text: the stored bytes through the codec's decoding layers ([`codec::decode`]),
    /// opened with `keys` when sealed. Blocking; the age header is opened here, so a wrong
    /// identity fails before the first byte is returned.
    pub fn into_plain(
        self,
        keys: Option<&IdentityFile>,
    ) -> Result<Box<dyn Read + Send>, RestoreError> {
        let location = self.location;
        let encryption = self.encryption;
        codec::decode(
            self.layers,
            keys.map(|k| k.identities.as_ref()),
            self.stored,
        )
        .map_err(|e| match e {
            DecodeError::NoIdentity => RestoreError::NoIdentity {
                location,
                sealed: encryption.map_or_else(|| "age".into(), |e| e.describe()),
            },
            DecodeError::NoMatchingIdentity(count) => {
                let keys = keys.expect("identities were given");
                let opens = keys.identities.opens();
                RestoreError::WrongIdentity {
                    location,
                    recipients: encryption.map_or_else(
                        || "recipients the manifest does not name".into(),
                        |e| e.recipients.join(", "),
                    ),
                    count,
                    path: keys.path.clone(),
                    opens: if opens.is_empty() {
                        String::new()
                    } else {
                        format!(" (they open {})", opens.join(", "))
                    },
                }
            }
            DecodeError::Decrypt(reason) => RestoreError::Decrypt { location, reason },
            DecodeError::Io(source) => RestoreError::Decompress { location, source },
        })
    }
}

/// Fetch a located backup's stored bytes into the local file `path` and check them against
/// their manifest: a daily dump is streamed from storage while hashed; an archived one is
/// extracted from its weekly archive, checked against the archive manifest. Nothing is decoded
/// before this returns, and on any failure nothing is left at `path`; neither when the future is
/// dropped, except that an extraction already running on its blocking thread finishes (as
/// [`archive::extract_dump`] always has) and may leave its file.
pub async fn fetch_verified(
    store: &Store,
    located: &Located,
    path: &Path,
) -> Result<VerifiedFile, RestoreError> {
    let guard = TempPath(path.to_path_buf());
    let (stored, manifest) = match located {
        Located::Daily(manifest) => (
            download_checked(store, manifest, path).await?,
            manifest.clone(),
        ),
        Located::Archived { archive, member } => {
            let (manifest, stored) =
                archive::extract_verified(store, archive, &member.dump_key, path)
                    .await
                    .map_err(|e| RestoreError::Archive(e.to_string()))?;
            (stored, manifest)
        }
    };
    Ok(VerifiedFile {
        stored,
        layers: manifest.layers(),
        encryption: manifest.encryption,
        location: located.describe(store),
        _path: guard,
    })
}

/// Stream the object to `path`, hashing as it goes; fail unless sha256 and size match.
async fn download_checked(
    store: &Store,
    manifest: &Manifest,
    path: &Path,
) -> Result<Verified<File>, RestoreError> {
    let io_err = |source| RestoreError::Io {
        action: "write download",
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
    let mut verifier = Verifier::new(&manifest.sha256, manifest.size);
    let mut stream = store.get_stream(&manifest.key).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        verifier.update(&chunk);
        file.write_all(&chunk).await.map_err(io_err)?;
    }
    file.flush().await.map_err(io_err)?;
    drop(file);
    let checked =
        verifier
            .finish()
            .map_err(|Mismatch { expected, actual }| RestoreError::Checksum {
                location: store.location(&manifest.key),
                expected: expected.sha256,
                actual: actual.sha256,
                expected_size: expected.size,
                actual_size: actual.size,
            })?;
    let file = File::open(path).map_err(|source| RestoreError::Io {
        action: "read download",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(checked.over(file))
}

/// Replay the SQL text of `verified` into a new SQLite file at `database`, and sync it.
fn load_plain(
    verified: VerifiedFile,
    keys: Option<&IdentityFile>,
    database: &Path,
) -> Result<u64, RestoreError> {
    let mut reader = BufReader::with_capacity(1 << 18, verified.into_plain(keys)?);
    let summary = sqlite::load(&mut reader, database)?;
    File::open(database)
        .and_then(|f| f.sync_all())
        .map_err(|source| RestoreError::Io {
            action: "sync restored database",
            path: database.to_path_buf(),
            source,
        })?;
    Ok(summary.statements)
}

/// The result of verifying one database's newest backup.
#[derive(Debug, Clone)]
pub struct Verification {
    pub database: String,
    pub key: String,
    pub at: DateTime<Utc>,
    /// Empty when the backup is good; otherwise every discrepancy found.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Restore the newest backup of `database` into `scratch_dir` and compare it with its manifest.
pub async fn verify(
    store: &Store,
    database: &str,
    scratch_dir: &Path,
    now: DateTime<Utc>,
    keys: &Keys,
) -> Result<Verification, RestoreError> {
    let (dump, manifest) = find(store, database, At::Latest).await?;
    // A sealed backup without an identity fails before the scratch directory is touched.
    keys.open(&Located::Daily(manifest.clone()), store)?;
    std::fs::create_dir_all(scratch_dir).map_err(|source| RestoreError::Io {
        action: "create scratch directory",
        path: scratch_dir.to_path_buf(),
        source,
    })?;
    let scratch = scratch_dir.join(format!(
        "verify-{database}-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let restored = restore(store, &manifest, &scratch, false, keys).await;
    let inspected = match restored {
        Ok(_) => {
            let path = scratch.clone();
            tokio::task::spawn_blocking(move || sqlite::inspect(&path))
                .await
                .map_err(|e| RestoreError::Task(e.to_string()))
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&scratch);
    let inspection = inspected??;

    let mut problems = Vec::new();
    if inspection.integrity != "ok" {
        problems.push(format!("integrity_check: {}", inspection.integrity));
    }
    if inspection.foreign_key_violations > 0 {
        problems.push(format!(
            "{} foreign key violations",
            inspection.foreign_key_violations
        ));
    }
    if inspection.schema_hash != manifest.schema_hash {
        problems.push(format!(
            "schema hash {} differs from the manifest's {}",
            short(&inspection.schema_hash),
            short(&manifest.schema_hash)
        ));
    }
    for (table, rows) in &manifest.tables {
        match inspection.tables.get(table) {
            None => problems.push(format!("table {table:?} is missing")),
            Some(n) if n != rows => problems.push(format!(
                "table {table:?} has {n} rows, the manifest says {rows}"
            )),
            Some(_) => {}
        }
    }
    for table in inspection.tables.keys() {
        if !manifest.tables.contains_key(table) {
            problems.push(format!("table {table:?} is not in the manifest"));
        }
    }
    Ok(Verification {
        database: database.to_string(),
        key: dump.data.key,
        at: now,
        problems,
    })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
