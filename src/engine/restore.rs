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
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::archive;
use crate::bucket::{self, ReadError};
use crate::codec::{self, DecodeError, Layers, Mismatch, Verified, Verifier};
use crate::inventory::Inventory;
use crate::keys::Identities;
use crate::manifest::{ArchiveManifest, ArchiveMember, Encryption, Manifest};
use crate::points::{self, Place, RestorePoint};
use crate::policy::{Compression, Policy};
use crate::source::sqlite::{self, SourceError};
use crate::store::{Store, StoreError};

pub use crate::points::At;

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
    #[error(transparent)]
    Load(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
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

/// Every restore point in storage, and the manifests of the archives they came from.
#[derive(Debug, Clone, Default)]
pub struct Points {
    /// Oldest first.
    pub points: Vec<RestorePoint>,
    /// Archive manifests by archive data key.
    pub archives: BTreeMap<String, ArchiveManifest>,
    /// Archives whose manifest could not be read: their members are not offered.
    pub unreadable: Vec<String>,
}

impl Points {
    /// Where a point's bytes are, with the manifest that describes them: a daily point's is
    /// read from storage; an archived point's archive manifest is already here.
    pub async fn locate(
        &self,
        store: &Store,
        point: &RestorePoint,
    ) -> Result<Located, RestoreError> {
        match &point.place {
            Place::Daily { manifest_key, .. } => Ok(Located::Daily(
                bucket::read_manifest(store, manifest_key).await?,
            )),
            Place::Archived {
                archive_key,
                member,
                ..
            } => {
                let archive = self.archives.get(archive_key).cloned().ok_or_else(|| {
                    RestoreError::Archive(format!(
                        "{} is not among the archives read",
                        store.location(archive_key)
                    ))
                })?;
                Ok(Located::Archived {
                    archive,
                    member: member.clone(),
                })
            }
        }
    }
}

/// Every restore point in storage (DESIGN §13): the committed daily dumps, and the members of
/// the weekly archives whose daily copy is gone. Archive manifests are read (eight at a time);
/// one that cannot be read is logged and left out, so a damaged archive never hides the rest.
pub async fn restore_points(store: &Store) -> Result<Points, RestoreError> {
    let dailies = Inventory::classify(store.list("daily/").await?);
    let archives = Inventory::classify(store.list("weekly/").await?).archives;
    let mut reads = futures::stream::iter(archives.into_iter().map(|a| async move {
        let m = archive::read_manifest(store, &a.manifest_key).await;
        (a, m)
    }))
    .buffered(8);
    let mut read = Vec::new();
    let mut unreadable = Vec::new();
    while let Some((a, m)) = reads.next().await {
        match m {
            Ok(m) => read.push((a, m)),
            Err(e) => {
                tracing::warn!(archive = %a.manifest_key, error = %e, "cannot read an archive manifest; its restore points are not offered");
                unreadable.push(store.location(&a.data.key));
            }
        }
    }
    let points = points::restore_points(&dailies, &read);
    Ok(Points {
        points,
        archives: read.into_iter().map(|(a, m)| (a.data.key, m)).collect(),
        unreadable,
    })
}

/// Find the committed dump of `database` that `at` asks for: the newest daily dump for
/// `latest` (archives are read only when there is none), otherwise the newest restore point
/// taken on that date or at or before that time, daily or archived.
pub async fn locate(store: &Store, database: &str, at: At) -> Result<Located, RestoreError> {
    if at == At::Latest {
        let dailies = Inventory::classify(store.list("daily/").await?);
        if let Some(d) = dailies.latest(database) {
            return Ok(Located::Daily(
                bucket::read_manifest(store, &d.manifest_key).await?,
            ));
        }
    }
    let all = restore_points(store).await?;
    match at.pick(&all.points, database) {
        Some(point) => all.locate(store, point).await,
        None => Err(no_point(store, database, at, &all)),
    }
}

/// "No backup" with what there is instead.
fn no_point(store: &Store, database: &str, at: At, all: &Points) -> RestoreError {
    let mut dates: Vec<String> = all
        .points
        .iter()
        .filter(|p| p.database == database)
        .map(|p| p.taken_at.format("%Y-%m-%d").to_string())
        .collect();
    dates.dedup();
    let mut hint = match (at, dates.is_empty()) {
        (At::Latest, true) => {
            " — run `patina backup` first, or check [storage] in patina.toml".to_string()
        }
        (_, true) => format!(" {} (and none at any other time)", describe_at(at)),
        (_, false) => format!(
            " {} — dates with restore points: {} (`patina list --database {database}` shows them all)",
            describe_at(at),
            dates.join(", ")
        ),
    };
    if !all.unreadable.is_empty() {
        hint.push_str(&format!(
            "; the manifests of {} could not be read (see the log)",
            all.unreadable.join(", ")
        ));
    }
    RestoreError::NoBackup {
        database: database.to_string(),
        location: store.location(""),
        hint,
    }
}

fn describe_at(at: At) -> String {
    match at {
        At::Latest => String::new(),
        At::Date(d) => format!("on {d}"),
        At::Time(t) => format!("at or before {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub target: PathBuf,
    pub statements: u64,
    /// The manifest of the dump restored (for an archived one, its copy inside the archive).
    pub manifest: Manifest,
    /// With `--table`: the rows copied from the selected tables.
    pub table_rows: Option<u64>,
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
    pub fn database(&self) -> &str {
        match self {
            Located::Daily(m) => &m.database,
            Located::Archived { member, .. } => &member.database,
        }
    }
    /// The daily key the dump was written under.
    pub fn dump_key(&self) -> &str {
        match self {
            Located::Daily(m) => &m.key,
            Located::Archived { member, .. } => &member.dump_key,
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
}

/// Download, check, decompress and load the dump of `manifest` into `target`.
pub async fn restore(
    store: &Store,
    manifest: &Manifest,
    target: &Path,
    force: bool,
    keys: &Keys,
) -> Result<Restored, RestoreError> {
    let from = Sources::single(store.clone());
    restore_located(
        &from,
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
    from: &Sources,
    located: &Located,
    target: &Path,
    force: bool,
    keys: &Keys,
) -> Result<Restored, RestoreError> {
    restore_tables(from, located, target, force, &[], keys).await
}

/// [`restore_located`], keeping only `tables` (with their indexes and triggers) when it is not
/// empty (`patina restore --table`): the whole dump is loaded into a scratch file beside the
/// target first, so nothing is written at `target` for a table name the backup lacks.
pub async fn restore_tables(
    from: &Sources,
    located: &Located,
    target: &Path,
    force: bool,
    tables: &[String],
    keys: &Keys,
) -> Result<Restored, RestoreError> {
    if target.exists() && !force {
        return Err(RestoreError::TargetExists(target.to_path_buf()));
    }
    let identities = keys.open(located, from.first())?;
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

    let verified = from.fetch_verified(located, &download).await?;
    let manifest = verified.manifest().clone();
    let loading = database.0.clone();
    let statements =
        tokio::task::spawn_blocking(move || load_plain(verified, identities.as_ref(), &loading))
            .await
            .map_err(|e| RestoreError::Task(e.to_string()))??;
    let mut table_rows = None;
    let database = if tables.is_empty() {
        database
    } else {
        let selected = TempPath(dir.join(format!(".{name}.patina-{tag}.tables")));
        let (from, to, tables) = (database.0.clone(), selected.0.clone(), tables.to_vec());
        let rows = tokio::task::spawn_blocking(move || sqlite::copy_tables(&from, &to, &tables))
            .await
            .map_err(|e| RestoreError::Task(e.to_string()))??;
        table_rows = Some(rows);
        selected
    };

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
        manifest,
        table_rows,
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
    manifest: Manifest,
    /// Where the bytes came from, for messages.
    location: String,
    _path: TempPath,
}

impl VerifiedFile {
    /// The manifest the bytes were checked against.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// How the stored bytes are encoded.
    pub fn layers(&self) -> Layers {
        self.layers
    }

    /// The stored bytes as they are (`/download?raw=1`).
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
            download_checked(store, &manifest.key, &manifest.sha256, manifest.size, path).await?,
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
        encryption: manifest.encryption.clone(),
        manifest,
        location: located.describe(store),
        _path: guard,
    })
}

/// Stream the object at `key` to `path`, hashing as it goes; fail unless sha256 and size
/// match what its manifest says (`expected_*`). Also how a replica copy reads the primary.
/// On failure `path` may hold a partial file: the caller removes it.
pub async fn download_checked(
    store: &Store,
    key: &str,
    expected_sha256: &str,
    expected_size: u64,
    path: &Path,
) -> Result<Verified<File>, RestoreError> {
    let io_err = |source| RestoreError::Io {
        action: "write download",
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
    let mut verifier = Verifier::new(expected_sha256, expected_size);
    let mut stream = store.get_stream(key).await?;
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
                location: store.location(key),
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
///
/// The stored bytes are decoded (decrypted, decompressed) on a second thread, [`DecodeAhead`],
/// while this one loads: SQLite's inserts and zstd then run side by side when a core is free.
/// The bytes were checked against their sha256 before `verified` existed, so decoding ahead
/// changes nothing about what is decoded, only where; the age header is still opened here,
/// before the thread starts, so a wrong identity fails the same way.
fn load_plain(
    verified: VerifiedFile,
    keys: Option<&IdentityFile>,
    database: &Path,
) -> Result<u64, RestoreError> {
    let plain = verified.into_plain(keys)?;
    let summary = std::thread::scope(|scope| {
        let (mut reader, decoder) = DecodeAhead::new(plain);
        std::thread::Builder::new()
            .name("patina-decode".into())
            .spawn_scoped(scope, decoder)
            .map_err(|source| RestoreError::Io {
                action: "start the decoding thread for",
                path: database.to_path_buf(),
                source,
            })?;
        // Dropping the reader (here, on every path out) stops the decoding thread.
        sqlite::load(&mut reader, database).map_err(RestoreError::from)
    })?;
    File::open(database)
        .and_then(|f| f.sync_all())
        .map_err(|source| RestoreError::Io {
            action: "sync restored database",
            path: database.to_path_buf(),
            source,
        })?;
    Ok(summary.statements)
}

/// Bytes read from a decoder on another thread, in owned chunks through a bounded channel (at
/// most [`DecodeAhead::CHUNKS`] in flight, so memory stays bounded); emptied chunks go back to
/// the decoding thread to be refilled. A read error of the decoder reaches the loader as the
/// same `io::Error`, after the chunks before it, as if it had read the decoder itself.
struct DecodeAhead {
    full: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    empty: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl DecodeAhead {
    /// Bytes per chunk: large enough that the hand-over costs nothing next to the decoding.
    const CHUNK: usize = 1 << 18;
    /// Chunks decoded ahead of the loader, at most.
    const CHUNKS: usize = 4;

    /// The reading side, and the decoding side to run on its own thread.
    fn new(mut decoder: Box<dyn Read + Send>) -> (DecodeAhead, impl FnOnce() + Send + 'static) {
        let (full_tx, full) = std::sync::mpsc::sync_channel(Self::CHUNKS);
        let (empty, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::CHUNKS + 2);
        let decode = move || loop {
            let mut chunk = empty_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(Self::CHUNK));
            chunk.resize(Self::CHUNK, 0);
            let mut filled = 0;
            let read = loop {
                match decoder.read(&mut chunk[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == chunk.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            chunk.truncate(filled);
            let last = read.is_err() || filled < Self::CHUNK;
            if filled > 0 && full_tx.send(Ok(chunk)).is_err() {
                return; // the loader stopped
            }
            if let Err(e) = read {
                let _ = full_tx.send(Err(e));
            }
            if last {
                return;
            }
        };
        let reader = DecodeAhead {
            full,
            empty,
            chunk: Vec::new(),
            pos: 0,
        };
        (reader, decode)
    }
}

impl Read for DecodeAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for DecodeAhead {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.chunk.len() {
            match self.full.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.chunk, next?);
                    self.pos = 0;
                    // Full when the decoder is ahead; the chunk is then simply freed.
                    let _ = self.empty.try_send(done);
                }
                // The decoding thread ended after its last chunk: the end of the text. (Had it
                // panicked instead, the scope it runs in re-raises that when it ends, so a
                // panic never passes for the end.)
                Err(std::sync::mpsc::RecvError) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len());
    }
}

/// The result of verifying one restore point.
#[derive(Debug, Clone)]
pub struct Verification {
    pub database: String,
    /// The daily key the dump was written under (unique per restore point).
    pub key: String,
    /// Where it was read from (`daily/…` or `weekly/….tar:…`).
    pub location: String,
    /// When the dump was taken.
    pub taken_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
    /// Empty when the backup is good; otherwise every discrepancy found.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Restore the backup of `database` that `at` selects into `scratch_dir` and compare it with
/// its manifest.
pub async fn verify(
    from: &Sources,
    database: &str,
    at: At,
    scratch_dir: &Path,
    now: DateTime<Utc>,
    keys: &Keys,
) -> Result<Verification, RestoreError> {
    let (located, from) = from.locate(database, at).await?;
    verify_located(&from, &located, scratch_dir, now, keys).await
}

/// A drill of one restore point (DESIGN §13): download, sha256, decompress, load into a scratch
/// file, then `integrity_check`, `foreign_key_check`, row counts and schema hash against the
/// manifest. The scratch file is removed on every path out. A sealed backup opens with `keys`;
/// without an identity it fails before the scratch directory is touched.
pub async fn verify_located(
    from: &Sources,
    located: &Located,
    scratch_dir: &Path,
    now: DateTime<Utc>,
    keys: &Keys,
) -> Result<Verification, RestoreError> {
    keys.open(located, from.first())?;
    std::fs::create_dir_all(scratch_dir).map_err(|source| RestoreError::Io {
        action: "create scratch directory",
        path: scratch_dir.to_path_buf(),
        source,
    })?;
    let database = located.database().to_string();
    let scratch = TempPath(scratch_dir.join(format!(
        "verify-{database}-{}.db",
        uuid::Uuid::new_v4().simple()
    )));
    let restored = restore_located(from, located, &scratch.0, false, keys).await?;
    let path = scratch.0.clone();
    let inspection = tokio::task::spawn_blocking(move || sqlite::inspect(&path))
        .await
        .map_err(|e| RestoreError::Task(e.to_string()))??;
    drop(scratch);
    let manifest = &restored.manifest;

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
        database,
        key: located.dump_key().to_string(),
        location: located.describe(from.first()),
        taken_at: located.taken_at(),
        at: now,
        problems,
    })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Where backups are read from (DESIGN §15): the primary `[storage]` first, then each replica
/// in policy order — or only the one `--from NAME` chose. The one place restore, verify and
/// `/download` fall back: [`Sources::locate`] asks the next destination when one has no such
/// restore point or cannot be listed, and [`Sources::fetch_verified`] fetches the same object
/// from the next destination when one lacks it, cannot be reached or serves bytes that fail
/// their sha256. Replicas hold byte-for-byte copies under the same keys, so one manifest
/// checks the bytes of every destination.
///
/// Decision: every destination is listed for each lookup and the newest matching restore point
/// wins, so a primary that lost its newest backup does not silently offer an older one; a slow
/// replica slows the lookup down (`--from primary` skips the replicas).
#[derive(Debug, Clone)]
pub struct Sources {
    /// Never empty; the first is where a located point was found (or the primary).
    list: Vec<(String, Store)>,
}

impl Sources {
    /// Destinations in the order they are asked; `list` must not be empty.
    pub fn new(list: Vec<(String, Store)>) -> Sources {
        assert!(!list.is_empty(), "at least one destination");
        Sources { list }
    }

    /// The primary alone (no replicas, or tools).
    pub fn single(store: Store) -> Sources {
        Sources::new(vec![(crate::policy::PRIMARY.to_string(), store)])
    }

    /// Only the destination called `name`, if any.
    pub fn only(&self, name: &str) -> Option<Sources> {
        let found = self.list.iter().find(|(n, _)| n == name)?;
        Some(Sources::new(vec![found.clone()]))
    }

    /// The destination asked first: where a located point was found, else the primary.
    pub fn first(&self) -> &Store {
        &self.list[0].1
    }

    /// The name of [`Sources::first`] (`primary` or a replica's name).
    pub fn first_name(&self) -> &str {
        &self.list[0].0
    }

    /// These sources with the `i`-th asked first.
    fn preferring(&self, i: usize) -> Sources {
        let mut list = self.list.clone();
        let found = list.remove(i);
        list.insert(0, found);
        Sources { list }
    }

    /// [`locate`] in every destination at once; the newest restore point found answers (on a
    /// tie, the destination asked first). Returns it with these sources reordered so that its
    /// destination is asked first when fetching. When none has one, the first destination's
    /// error. A destination that cannot be listed is logged and passed over.
    pub async fn locate(&self, database: &str, at: At) -> Result<(Located, Sources), RestoreError> {
        let results = futures::future::join_all(
            self.list
                .iter()
                .map(|(_, store)| locate(store, database, at)),
        )
        .await;
        let mut best: Option<(usize, Located)> = None;
        let mut first_error = None;
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(located) => {
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| located.taken_at() > b.taken_at())
                    {
                        best = Some((i, located));
                    }
                }
                Err(e) => {
                    if self.list.len() > 1 {
                        tracing::warn!(destination = %self.list[i].0, database, error = %e, "cannot locate the restore point here; the other destinations answer");
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        match best {
            Some((i, located)) => {
                if i > 0 {
                    tracing::warn!(destination = %self.list[i].0, database, point = %located.describe(&self.list[i].1), "restore point located on a replica: the primary has none as new");
                }
                Ok((located, self.preferring(i)))
            }
            None => Err(first_error.expect("at least one destination")),
        }
    }

    /// [`fetch_verified`] from each destination in turn until one serves the object with its
    /// manifest's sha256 and size. When none does, the first destination's error. A local
    /// write failure is not retried elsewhere.
    pub async fn fetch_verified(
        &self,
        located: &Located,
        path: &Path,
    ) -> Result<VerifiedFile, RestoreError> {
        let mut first_error = None;
        for (i, (name, store)) in self.list.iter().enumerate() {
            match fetch_verified(store, located, path).await {
                Ok(verified) => {
                    if i > 0 {
                        tracing::warn!(destination = %name, object = %located.describe(store), "served by a replica: an earlier destination lacked it, was unreachable or failed its sha256");
                    }
                    return Ok(verified);
                }
                Err(e @ RestoreError::Io { .. }) => return Err(e),
                Err(e) => {
                    if self.list.len() > 1 {
                        tracing::warn!(destination = %name, object = %located.describe(store), error = %e, "cannot fetch a verified copy here; trying the next destination");
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("at least one destination"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `decoder` through a [`DecodeAhead`] on a second thread, line by line as the
    /// loader does: what it saw, and the error it ended with.
    fn read_ahead(decoder: Box<dyn Read + Send>) -> (Vec<u8>, Option<std::io::Error>) {
        std::thread::scope(|scope| {
            let (mut reader, decode) = DecodeAhead::new(decoder);
            scope.spawn(decode);
            let mut seen = Vec::new();
            loop {
                match reader.read_until(b'\n', &mut seen) {
                    Ok(0) => return (seen, None),
                    Ok(_) => {}
                    Err(e) => return (seen, Some(e)),
                }
            }
        })
    }

    fn text(bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes + 64);
        let mut i = 0u64;
        while out.len() < bytes {
            out.extend_from_slice(format!("INSERT INTO \"t\" VALUES({i},'row {i}');\n").as_bytes());
            i += 1;
        }
        out.truncate(bytes);
        out
    }

    #[test]
    fn decoding_ahead_hands_over_every_byte_in_order() {
        // Several chunks and a partial last one, and the empty text.
        for size in [0, 1, DecodeAhead::CHUNK, 3 * DecodeAhead::CHUNK + 12_345] {
            let plain = text(size);
            let compressed = zstd::encode_all(&plain[..], 3).unwrap();
            let decoder = codec::decompress(Compression::Zstd, std::io::Cursor::new(compressed));
            let (seen, error) = read_ahead(decoder.unwrap());
            assert!(error.is_none(), "{error:?}");
            assert_eq!(seen.len(), plain.len());
            assert!(seen == plain, "the bytes differ at size {size}");
        }
    }

    /// A decoder that gives `good` bytes, then fails.
    struct FailsAfter {
        good: std::io::Cursor<Vec<u8>>,
    }

    impl Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.good.read(buf)? {
                0 => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "Unknown frame descriptor",
                )),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_decoding_error_reaches_the_loader_after_the_bytes_before_it() {
        let good = text(2 * DecodeAhead::CHUNK + 777);
        let (seen, error) = read_ahead(Box::new(FailsAfter {
            good: std::io::Cursor::new(good.clone()),
        }));
        assert!(seen == good, "{} of {} bytes", seen.len(), good.len());
        let error = error.expect("the decoder's error");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(error.to_string(), "Unknown frame descriptor");
    }

    #[test]
    fn a_loader_that_stops_early_stops_the_decoding_thread() {
        // An endless decoder: the scope only ends if dropping the reader ends the thread.
        std::thread::scope(|scope| {
            let (mut reader, decode) = DecodeAhead::new(Box::new(std::io::repeat(b'x')));
            scope.spawn(decode);
            let mut first = vec![0; 10];
            reader.read_exact(&mut first).unwrap();
            assert_eq!(first, b"xxxxxxxxxx");
        });
    }
}
