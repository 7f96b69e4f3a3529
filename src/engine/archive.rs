//! Weekly archives: roll a week's committed dumps into one standard tar object
//! (`weekly/2026-W47.tar`, or `.tar.gz` when compression = "none"), commit it with its manifest,
//! and get single dumps back out of it.
//!
//! # Layout of the tar (DESIGN §3)
//!
//! Members are ordered by (taken_at, database); each dump contributes its data member
//! `{date}/{db}/{ts}.sql.zst` followed by its manifest `{date}/{db}/{ts}.manifest.json` (the
//! manifest's bytes exactly as stored). Headers are explicit and deterministic: ustar, mode
//! 0o644, uid/gid 0, no user or group names, mtime = the dump's `taken_at`. Restoring never
//! needs Patina: `tar -xf 2026-W47.tar && zstd -dc 2026-11-22/db/ts.sql.zst | sqlite3 new.db`.
//!
//! # Encryption (DESIGN §14)
//!
//! Members are the daily objects' stored bytes, copied as they are: a sealed dump
//! (`….sql.zst.age`) stays sealed inside the tar, with its sha256 unchanged, and is opened with
//! `age -d` after `tar -x`. The archive never decrypts, and the tar container itself is not
//! encrypted (its member names are the daily keys, already visible in the bucket). A week with
//! dumps from before and after `[encryption]` was turned on holds both kinds, each as it was
//! stored; the archive manifest records each member's encryption.
//!
//! # Streaming and memory
//!
//! Nothing is built in memory. An async *feeder* task opens each member with
//! [`Store::get_stream`] and forwards its chunks through a bounded channel
//! ([`FEED_CHANNEL_CAPACITY`] chunks) to one blocking thread, which runs
//! `verifying reader → tar::Builder → codec::Encoder (gzip or nothing → sha256) → UploadSink`;
//! the sink blocks while
//! its parts are in flight ([`crate::store::UploadSink::max_buffered_bytes`]). So one build holds
//! at most a few channel chunks, one 8 KiB copy buffer, the gzip window and the upload's
//! `(1 + queued + in flight)` parts, whatever the size of the archive. The dump manifests
//! (about 1 KiB each) are read up front — they are compared with the caller's manifests before
//! a single byte is uploaded. Extraction uses the same feeder in the other direction.
//!
//! # Commit protocol (same as a dump's)
//!
//! 1. Refuse if the week's archive manifest already exists (archives are immutable).
//! 2. Stream the data object, verifying each member's sha256 and size against its dump manifest
//!    *while* streaming. On any mismatch or error the sink is dropped without `finish`, which
//!    abandons the upload (a multipart upload is aborted): nothing becomes visible.
//! 3. Check the stored size against the bytes written.
//! 4. Write the archive manifest with create-only semantics: the commit marker.
//!
//! A crash between 3 and 4 leaves a data object without a manifest: debris, which the inventory
//! reports and reconcile removes. Two builds of the same week racing each other are prevented by
//! the planner (one job per week); if they raced anyway, the loser's manifest write fails with
//! [`ArchiveError::AlreadyExists`], but its data upload may have replaced the winner's bytes —
//! the store has no create-only streamed upload yet.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::codec::{self, Checked, Encoder, Encoding, Mismatch, Tallied, Verified, Verifier};
use crate::manifest::{
    ArchiveManifest, ArchiveMember, DumpId, FORMAT_VERSION, IsoWeek, Manifest, ManifestError,
    ParsedKey, archive_member_path, parse_key,
};
use crate::policy::Compression;
use crate::store::{PutMode, Store, StoreError};

/// Chunks of a member buffered between the feeder task and the blocking tar thread.
pub const FEED_CHANNEL_CAPACITY: usize = 4;

/// The largest dump manifest member `extract_dump` reads into memory.
const MAX_MANIFEST_MEMBER: u64 = 1 << 20;

/// Why an archive could not be built, read or extracted from. Every message names the action
/// (`archive 2026-W47` or `extract … from …`) and the object.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "archive {week}: {location} already exists — archives are immutable; delete it first to rebuild"
    )]
    AlreadyExists { week: String, location: String },
    #[error("archive {week}: no dumps to archive")]
    NoDumps { week: String },
    /// Several daemons: the maintenance lease is not (or no longer) this node's.
    #[error("archive {week}: {reason}")]
    Fenced { week: String, reason: String },
    #[error("archive {week}: dump {key} was taken in {actual}, not in this week")]
    WrongWeek {
        week: String,
        key: String,
        actual: String,
    },
    #[error("archive {week}: dump {key} is listed twice")]
    Duplicate { week: String, key: String },
    #[error("archive {week}: manifest {key} is unusable: {reason}")]
    BadDumpManifest {
        week: String,
        key: String,
        reason: String,
    },
    #[error(
        "archive {week}: member {key}: the daily object is gone ({location}) — it was not archived"
    )]
    MemberMissing {
        week: String,
        key: String,
        location: String,
    },
    #[error(
        "archive {week}: member {key}: {problem} — the daily object is damaged; it was not archived"
    )]
    MemberDamaged {
        week: String,
        key: String,
        problem: String,
    },
    #[error("archive {week}: {source}")]
    Store {
        week: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("archive {week}: write the tar: {source}")]
    Write {
        week: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "archive {week}: stored size of {location} is {stored} bytes but {written} were written — the upload is incomplete; retry"
    )]
    SizeMismatch {
        week: String,
        location: String,
        written: u64,
        stored: u64,
    },
    #[error("archive {week}: the archive task failed: {reason}")]
    Task { week: String, reason: String },
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("read {location}: {source}")]
    Read {
        location: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "extract {dump_key} from {archive}: the archive manifest does not list it — see `patina list` for what the archive holds"
    )]
    NotListed { archive: String, dump_key: String },
    #[error(
        "extract {dump_key} from {archive}: member {path} is not in the tar — the archive is damaged"
    )]
    NotInTar {
        archive: String,
        dump_key: String,
        path: String,
    },
    #[error("extract {dump_key} from {archive}: {problem} — the archive is damaged")]
    ExtractDamaged {
        archive: String,
        dump_key: String,
        problem: String,
    },
    #[error("extract {dump_key} from {archive}: read the tar: {source}")]
    ReadTar {
        archive: String,
        dump_key: String,
        #[source]
        source: io::Error,
    },
    #[error("extract {dump_key} to {}: {source}", dest.display())]
    Dest {
        dump_key: String,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One dump to put in the tar: its data key, declared size and sha256, the stored manifest.
struct PlannedMember {
    member: ArchiveMember,
    manifest_path: String,
    manifest_bytes: Bytes,
}

/// Build `weekly/{week}.tar` (or `.tar.gz` when `compression` is [`Compression::None`]) from
/// committed dumps and commit it with its manifest. `dumps` are the dumps' manifests, in any
/// order; each must belong to `week`. Fails, leaving nothing visible, when any member is missing
/// or does not match its manifest; fails with [`ArchiveError::AlreadyExists`] when the week is
/// already archived.
pub async fn build(
    store: &Store,
    week: IsoWeek,
    dumps: &[Manifest],
    compression: Compression,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<ArchiveManifest, ArchiveError> {
    build_fenced(store, week, dumps, compression, job_id, now, None).await
}

/// [`build`] under the maintenance lease of several daemons (DESIGN §16): every part is sent
/// only while `node` holds it, the lease is read again before the manifest is written, and
/// its generation goes into the manifest.
pub async fn build_fenced(
    store: &Store,
    week: IsoWeek,
    dumps: &[Manifest],
    compression: Compression,
    job_id: &str,
    now: DateTime<Utc>,
    node: Option<&std::sync::Arc<crate::cluster::Node>>,
) -> Result<ArchiveManifest, ArchiveError> {
    let week_name = week.to_string();
    let lost = |reason: &str| ArchiveError::Fenced {
        week: week_name.clone(),
        reason: reason.to_string(),
    };
    let generation = match node {
        None => None,
        Some(n) => Some(
            n.maintains()
                .ok_or_else(|| lost("this node does not hold the maintenance lease"))?,
        ),
    };
    let guard: Option<crate::store::UploadGuard> = match (node, generation) {
        (Some(n), Some(g)) => {
            let n = std::sync::Arc::clone(n);
            Some(std::sync::Arc::new(move || {
                (n.maintains() == Some(g)).then_some(()).ok_or_else(|| {
                    "this node lost the maintenance lease: nothing is committed".to_string()
                })
            }))
        }
        _ => None,
    };
    let store_err = |source| ArchiveError::Store {
        week: week_name.clone(),
        source: Box::new(source),
    };
    let archive_key = week.archive_key(compression);
    let manifest_key = week.manifest_key();
    let already_exists = || ArchiveError::AlreadyExists {
        week: week_name.clone(),
        location: store.location(&manifest_key),
    };
    if store
        .head(&manifest_key)
        .await
        .map_err(store_err)?
        .is_some()
    {
        return Err(already_exists());
    }
    let planned = plan_members(store, &week_name, week, dumps).await?;

    // Stream: feeder task → blocking tar thread → upload task.
    let keys = planned.iter().map(|p| p.member.dump_key.clone()).collect();
    let (feed, feeder) = spawn_feeder(store.clone(), keys);
    let (sink, upload) = store.start_upload_guarded(&archive_key, guard);
    let writer = {
        let week_name = week_name.clone();
        tokio::task::spawn_blocking(move || {
            write_tar(&week_name, &planned, feed, compression, sink).map(|r| (r, planned))
        })
    };
    let written = writer.await;
    let uploaded = upload.await;
    feeder.abort();
    let ((sha256, size), planned) = match (written, uploaded) {
        (Ok(Ok(w)), Ok(Ok(stored))) => {
            if stored != w.0.1 {
                // Not committed: remove the bad object now rather than leave it as debris.
                let _ = store.delete(&archive_key).await;
                return Err(ArchiveError::SizeMismatch {
                    week: week_name,
                    location: store.location(&archive_key),
                    written: w.0.1,
                    stored,
                });
            }
            w
        }
        // The upload failing makes the tar's writes fail: report the upload's cause.
        (Ok(Err(ArchiveError::Write { .. })), Ok(Err(up))) => return Err(store_err(up)),
        (Ok(Err(e)), _) => return Err(e),
        (Ok(Ok(_)), Ok(Err(up))) => return Err(store_err(up)),
        (Err(join), _) | (_, Err(join)) => {
            return Err(ArchiveError::Task {
                week: week_name,
                reason: join.to_string(),
            });
        }
    };

    let manifest = ArchiveManifest {
        format: FORMAT_VERSION,
        tier: "weekly".into(),
        week: week_name.clone(),
        key: archive_key,
        sha256,
        size,
        members: planned.into_iter().map(|p| p.member).collect(),
        job_id: job_id.to_string(),
        created_at: now,
        patina_version: env!("CARGO_PKG_VERSION").to_string(),
        lease_generation: generation,
    };
    if let Some(n) = node {
        match n.confirm_maintenance().await {
            Ok(Some(g)) if Some(g) == generation => {}
            Ok(_) => {
                return Err(lost(
                    "the maintenance lease changed hands before the commit",
                ));
            }
            Err(e) => return Err(store_err(e)),
        }
    }
    match store
        .put(
            &manifest_key,
            Bytes::from(manifest.to_json()),
            PutMode::Create,
        )
        .await
    {
        Ok(_) => Ok(manifest),
        Err(StoreError::AlreadyExists { .. }) => Err(already_exists()),
        Err(e) => Err(store_err(e)),
    }
}

/// Check the dumps, order them by (taken_at, database) and read their stored manifests.
async fn plan_members(
    store: &Store,
    week_name: &str,
    week: IsoWeek,
    dumps: &[Manifest],
) -> Result<Vec<PlannedMember>, ArchiveError> {
    if dumps.is_empty() {
        return Err(ArchiveError::NoDumps {
            week: week_name.to_string(),
        });
    }
    let mut ordered: Vec<(DumpId, &Manifest)> = Vec::with_capacity(dumps.len());
    let mut seen = BTreeSet::new();
    for m in dumps {
        let bad = |reason: String| ArchiveError::BadDumpManifest {
            week: week_name.to_string(),
            key: m.key.clone(),
            reason,
        };
        let id = m
            .dump_id()
            .ok_or_else(|| bad(format!("data key {:?} is not a dump key", m.key)))?;
        if id.database != m.database {
            return Err(bad(format!("it names database {:?}", m.database)));
        }
        let actual = IsoWeek::of(id.taken_at);
        if actual != week {
            return Err(ArchiveError::WrongWeek {
                week: week_name.to_string(),
                key: m.key.clone(),
                actual: actual.to_string(),
            });
        }
        if !seen.insert(id.clone()) {
            return Err(ArchiveError::Duplicate {
                week: week_name.to_string(),
                key: m.key.clone(),
            });
        }
        ordered.push((id, m));
    }
    ordered.sort_by(|(a, _), (b, _)| (a.taken_at, &a.database).cmp(&(b.taken_at, &b.database)));

    let mut planned = Vec::with_capacity(ordered.len());
    for (id, m) in ordered {
        let key = id.manifest_key();
        let bytes = match store.get(&key).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { location, .. }) => {
                return Err(ArchiveError::MemberMissing {
                    week: week_name.to_string(),
                    key,
                    location,
                });
            }
            Err(source) => {
                return Err(ArchiveError::Store {
                    week: week_name.to_string(),
                    source: Box::new(source),
                });
            }
        };
        let stored =
            Manifest::from_json(&bytes, &key).map_err(|e| ArchiveError::BadDumpManifest {
                week: week_name.to_string(),
                key: key.clone(),
                reason: e.reason,
            })?;
        if &stored != m {
            return Err(ArchiveError::BadDumpManifest {
                week: week_name.to_string(),
                key,
                reason: "the stored manifest differs from the one given to the archiver".into(),
            });
        }
        planned.push(PlannedMember {
            member: ArchiveMember {
                database: m.database.clone(),
                dump_key: m.key.clone(),
                path: archive_member_path(&m.key).to_string(),
                sha256: m.sha256.clone(),
                size: m.size,
                taken_at: id.taken_at,
                encryption: m.encryption.clone(),
            },
            manifest_path: archive_member_path(&key).to_string(),
            manifest_bytes: bytes,
        });
    }
    Ok(planned)
}

/// The blocking half of [`build`]: write the tar into `sink`; the stored bytes' sha256 and size.
fn write_tar(
    week: &str,
    planned: &[PlannedMember],
    mut feed: mpsc::Receiver<Feed>,
    compression: Compression,
    sink: crate::store::UploadSink,
) -> Result<(String, u64), ArchiveError> {
    let write_err = |source| ArchiveError::Write {
        week: week.to_string(),
        source,
    };
    // `.tar.gz` when the dumps themselves are not compressed.
    // The container is never sealed: its members are, when their dumps were.
    let container = Encoding::plain(codec::archive_compression(compression));
    let encoder = Encoder::new(&container, sink).map_err(write_err)?;
    let mut tar = new_builder(encoder);
    let appended = append_members(week, planned, &mut feed, &mut tar);
    match (appended, tar.into_inner()) {
        (Ok(()), Ok(encoder)) => {
            let (sink, digest) = encoder.finish().map_err(write_err)?;
            sink.finish().map_err(write_err)?;
            Ok((digest.sha256, digest.size))
        }
        // Not finished, so the upload is abandoned and nothing becomes visible.
        (Err(e), Ok(encoder)) => {
            encoder.abandon();
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
        (Ok(()), Err(e)) => Err(write_err(e)),
    }
}

fn new_builder<W: Write>(w: W) -> tar::Builder<W> {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    tar
}

fn append_members<W: Write>(
    week: &str,
    planned: &[PlannedMember],
    feed: &mut mpsc::Receiver<Feed>,
    tar: &mut tar::Builder<W>,
) -> Result<(), ArchiveError> {
    for p in planned {
        let m = &p.member;
        let mtime = m.taken_at.timestamp().max(0) as u64;
        let damaged = |problem: String| ArchiveError::MemberDamaged {
            week: week.to_string(),
            key: m.dump_key.clone(),
            problem,
        };

        let mut reader = Verifying::new(FeedReader::new(feed), Verifier::new(&m.sha256, m.size));
        let mut header = member_header(m.size, mtime);
        let appended = tar.append_data(&mut header, &m.path, &mut reader);
        let failure = reader.inner.failure.take();
        match (appended, failure) {
            (_, Some(StoreError::NotFound { location, .. })) => {
                return Err(ArchiveError::MemberMissing {
                    week: week.to_string(),
                    key: m.dump_key.clone(),
                    location,
                });
            }
            (_, Some(source)) => {
                return Err(ArchiveError::Store {
                    week: week.to_string(),
                    source: Box::new(source),
                });
            }
            (Err(_), None) if reader.too_long => {
                return Err(damaged(format!(
                    "size mismatch (more than the {} bytes its manifest records)",
                    m.size
                )));
            }
            (Err(source), None) => {
                return Err(ArchiveError::Write {
                    week: week.to_string(),
                    source,
                });
            }
            (Ok(()), None) => {}
        }
        if let Err(Mismatch { actual, .. }) = reader.verifier.finish() {
            return Err(damaged(if actual.size != m.size {
                format!(
                    "size mismatch ({} bytes, its manifest records {})",
                    actual.size, m.size
                )
            } else {
                format!(
                    "sha256 mismatch ({}, its manifest records {})",
                    actual.sha256, m.sha256
                )
            }));
        }

        let bytes = &p.manifest_bytes;
        let mut header = member_header(bytes.len() as u64, mtime);
        tar.append_data(&mut header, &p.manifest_path, &bytes[..])
            .map_err(|source| ArchiveError::Write {
                week: week.to_string(),
                source,
            })?;
    }
    Ok(())
}

/// A deterministic regular-file header: ustar, 0o644, uid/gid 0, the given size and mtime.
fn member_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header
}

/// Extract one archived dump to the local file `dest`, verifying its bytes against the archive
/// manifest's sha256 and size. Returns the dump's own manifest, read from the member beside it
/// and checked to describe the same bytes.
///
/// The bytes go to `{dest}.partial` first and are renamed to `dest` only once verified, so `dest`
/// never holds unverified bytes and an existing file there is only replaced on success.
pub async fn extract_dump(
    store: &Store,
    archive: &ArchiveManifest,
    dump_key: &str,
    dest: &Path,
) -> Result<Manifest, ArchiveError> {
    extract_verified(store, archive, dump_key, dest)
        .await
        .map(|(manifest, _)| manifest)
}

/// [`extract_dump`], also returning `dest` opened for reading as [`Verified`] stored bytes, for
/// the codec to decode (restore, `/download`).
pub async fn extract_verified(
    store: &Store,
    archive: &ArchiveManifest,
    dump_key: &str,
    dest: &Path,
) -> Result<(Manifest, Verified<File>), ArchiveError> {
    let location = store.location(&archive.key);
    let Some(member) = archive.members.iter().find(|m| m.dump_key == dump_key) else {
        return Err(ArchiveError::NotListed {
            archive: location,
            dump_key: dump_key.to_string(),
        });
    };
    let manifest_key = match parse_key(dump_key) {
        Some(ParsedKey::DumpData { id, .. }) => id.manifest_key(),
        _ => {
            return Err(ArchiveError::NotListed {
                archive: location,
                dump_key: dump_key.to_string(),
            });
        }
    };
    let gzipped = archive.key.ends_with(".tar.gz");
    let (feed, feeder) = spawn_feeder(store.clone(), vec![archive.key.clone()]);
    let job = Extraction {
        archive: location,
        dump_key: dump_key.to_string(),
        member: member.clone(),
        manifest_key,
        dest: dest.to_path_buf(),
        partial: partial_path(dest),
    };
    let result = tokio::task::spawn_blocking(move || {
        let result = job.run(feed, gzipped);
        if result.is_err() {
            let _ = std::fs::remove_file(&job.partial);
        }
        result
    })
    .await;
    feeder.abort();
    result.unwrap_or_else(|join| {
        let _ = std::fs::remove_file(partial_path(dest));
        Err(ArchiveError::Task {
            week: archive.week.clone(),
            reason: join.to_string(),
        })
    })
}

/// The blocking half of [`extract_dump`].
struct Extraction {
    archive: String,
    dump_key: String,
    member: ArchiveMember,
    manifest_key: String,
    dest: PathBuf,
    /// Where the member is written until it is verified.
    partial: PathBuf,
}

/// `{dest}.partial`, beside `dest`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

impl Extraction {
    fn run(
        &self,
        mut feed: mpsc::Receiver<Feed>,
        gzipped: bool,
    ) -> Result<(Manifest, Verified<File>), ArchiveError> {
        let mut raw = FeedReader::new(&mut feed);
        let container = if gzipped {
            Compression::Gzip
        } else {
            Compression::None
        };
        let result = codec::decompress(container, &mut raw)
            .map_err(|source| ArchiveError::ReadTar {
                archive: self.archive.clone(),
                dump_key: self.dump_key.clone(),
                source,
            })
            .and_then(|tar| self.walk(tar));
        // A storage error explains a tar read error better than the tar does.
        match (result, raw.failure.take()) {
            (Err(ArchiveError::ReadTar { .. }), Some(source)) => Err(ArchiveError::Read {
                location: self.archive.clone(),
                source: Box::new(source),
            }),
            (result, _) => result,
        }
    }

    fn walk<R: Read>(&self, reader: R) -> Result<(Manifest, Verified<File>), ArchiveError> {
        let tar_err = |source| ArchiveError::ReadTar {
            archive: self.archive.clone(),
            dump_key: self.dump_key.clone(),
            source,
        };
        let damaged = |problem: String| ArchiveError::ExtractDamaged {
            archive: self.archive.clone(),
            dump_key: self.dump_key.clone(),
            problem,
        };
        let manifest_path = archive_member_path(&self.manifest_key).to_string();
        let mut archive = tar::Archive::new(reader);
        let mut copied: Option<Checked> = None;
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let path = entry
                .path()
                .map_err(tar_err)?
                .to_string_lossy()
                .into_owned();
            if path == self.member.path {
                copied = Some(self.copy_member(&mut entry)?);
            } else if path == manifest_path {
                let Some(checked) = copied.take() else {
                    break; // members come before their manifests
                };
                if entry.header().size().map_err(tar_err)? > MAX_MANIFEST_MEMBER {
                    return Err(damaged(format!(
                        "member {path} is too large for a manifest"
                    )));
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(tar_err)?;
                let manifest = Manifest::from_json(&bytes, &self.manifest_key)?;
                if manifest.sha256 != self.member.sha256 || manifest.size != self.member.size {
                    return Err(damaged(format!(
                        "member {path} describes other bytes than the archive manifest"
                    )));
                }
                let dest_err = |source| ArchiveError::Dest {
                    dump_key: self.dump_key.clone(),
                    dest: self.dest.clone(),
                    source,
                };
                std::fs::rename(&self.partial, &self.dest).map_err(dest_err)?;
                let file = File::open(&self.dest).map_err(dest_err)?;
                return Ok((manifest, checked.over(file)));
            }
        }
        Err(ArchiveError::NotInTar {
            archive: self.archive.clone(),
            dump_key: self.dump_key.clone(),
            path: if copied.is_some() {
                manifest_path
            } else {
                self.member.path.clone()
            },
        })
    }

    fn copy_member(&self, entry: &mut impl Read) -> Result<Checked, ArchiveError> {
        let dest_err = |source| ArchiveError::Dest {
            dump_key: self.dump_key.clone(),
            dest: self.dest.clone(),
            source,
        };
        let file = File::create(&self.partial).map_err(dest_err)?;
        let mut out = Tallied::new(io::BufWriter::with_capacity(1 << 16, file));
        io::copy(entry, &mut out).map_err(|source| ArchiveError::ReadTar {
            archive: self.archive.clone(),
            dump_key: self.dump_key.clone(),
            source,
        })?;
        let (out, digest) = out.into_parts();
        let file = out.into_inner().map_err(|e| dest_err(e.into_error()))?;
        file.sync_all().map_err(dest_err)?;
        digest
            .check(&self.member.sha256, self.member.size)
            .map_err(|Mismatch { actual, .. }| {
                let path = &self.member.path;
                ArchiveError::ExtractDamaged {
                    archive: self.archive.clone(),
                    dump_key: self.dump_key.clone(),
                    problem: if actual.size != self.member.size {
                        format!(
                            "member {path}: size mismatch ({} bytes, the archive manifest records {})",
                            actual.size, self.member.size
                        )
                    } else {
                        format!(
                            "member {path}: sha256 mismatch ({}, the archive manifest records {})",
                            actual.sha256, self.member.sha256
                        )
                    },
                }
            })
    }
}

/// Read and check an archive manifest: it must parse, belong to `manifest_key`, and list
/// members whose tar paths follow from their dump keys.
pub async fn read_manifest(
    store: &Store,
    manifest_key: &str,
) -> Result<ArchiveManifest, ArchiveError> {
    let bytes = store
        .get(manifest_key)
        .await
        .map_err(|source| ArchiveError::Read {
            location: store.location(manifest_key),
            source: Box::new(source),
        })?;
    let m = ArchiveManifest::from_json(&bytes, manifest_key)?;
    let bad = |reason: String| ManifestError {
        key: manifest_key.to_string(),
        reason,
    };
    if m.tier != "weekly" {
        return Err(bad(format!("tier is {:?}, not \"weekly\"", m.tier)).into());
    }
    if !is_sha256_hex(&m.sha256) {
        return Err(bad(format!("archive sha256 {:?} is not a sha256", m.sha256)).into());
    }
    for member in &m.members {
        let Some(ParsedKey::DumpData { id, layers }) = parse_key(&member.dump_key) else {
            return Err(bad(format!("member {:?} is not a dump key", member.dump_key)).into());
        };
        if member.path != archive_member_path(&member.dump_key)
            || layers.encrypted != member.encryption.is_some()
            || id.database != member.database
            || id.taken_at != member.taken_at
            || !is_sha256_hex(&member.sha256)
        {
            return Err(bad(format!("member {:?} is inconsistent", member.dump_key)).into());
        }
    }
    Ok(m)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------------
// The async → blocking bridge.

/// What the feeder sends: chunks of the current object, then `End`; or why it stopped.
enum Feed {
    Chunk(Bytes),
    End,
    Failed(StoreError),
}

/// Stream the objects at `keys`, in order, into a bounded channel; each object ends with
/// [`Feed::End`]. Stops at the first error (sent as [`Feed::Failed`]) or when the reader hangs
/// up. The task never holds more than one chunk beyond the channel's capacity.
fn spawn_feeder(
    store: Store,
    keys: Vec<String>,
) -> (mpsc::Receiver<Feed>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(FEED_CHANNEL_CAPACITY);
    let task = tokio::spawn(async move {
        for key in keys {
            let mut stream = match store.get_stream(&key).await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send(Feed::Failed(e)).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let feed = match chunk {
                    Ok(bytes) if bytes.is_empty() => continue,
                    Ok(bytes) => Feed::Chunk(bytes),
                    Err(e) => {
                        let _ = tx.send(Feed::Failed(e)).await;
                        return;
                    }
                };
                if tx.send(feed).await.is_err() {
                    return; // the reader stopped
                }
            }
            if tx.send(Feed::End).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// `Read` over one object of a feed, for blocking code. EOF at the object's `End`; a storage
/// failure is kept in `failure` (and reported as an `io::Error`).
struct FeedReader<'a> {
    rx: &'a mut mpsc::Receiver<Feed>,
    current: Bytes,
    done: bool,
    failure: Option<StoreError>,
}

impl<'a> FeedReader<'a> {
    fn new(rx: &'a mut mpsc::Receiver<Feed>) -> Self {
        FeedReader {
            rx,
            current: Bytes::new(),
            done: false,
            failure: None,
        }
    }
}

impl Read for FeedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            if let Some(e) = &self.failure {
                return Err(io::Error::other(e.to_string()));
            }
            match self.rx.blocking_recv() {
                Some(Feed::Chunk(bytes)) => self.current = bytes,
                Some(Feed::End) => self.done = true,
                Some(Feed::Failed(e)) => self.failure = Some(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the storage reader stopped",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Feeds what passes through to a [`Verifier`]; refuses to deliver more than the expected size
/// (a tar header already promised the size, so a longer member must not reach the archive).
struct Verifying<R> {
    inner: R,
    verifier: Verifier,
    limit: u64,
    too_long: bool,
}

impl<R: Read> Verifying<R> {
    fn new(inner: R, verifier: Verifier) -> Self {
        let limit = verifier.expected_size();
        Verifying {
            inner,
            verifier,
            limit,
            too_long: false,
        }
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.verifier.size() + n as u64 > self.limit {
            self.too_long = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "member is longer than its manifest records",
            ));
        }
        self.verifier.update(&buf[..n]);
        Ok(n)
    }
}
