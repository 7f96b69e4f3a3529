//! Taking backups: one job over a set of databases, each dumped, compressed, hashed and
//! streamed to storage, then committed by writing its manifest, then recorded in the catalog.
//!
//! The pipeline for one database runs on a blocking thread (rusqlite is synchronous):
//! `source rows → SQL text → codec (compress → [age-encrypt] → sha256 + byte count) → UploadSink`, while an
//! async task uploads fixed-size parts. The SQL text is handed to a second thread that runs the
//! [`crate::codec::Encoder`] and fills the sink, so dumping and compressing overlap on two cores.
//! Memory does not grow with the database. The manifest is written
//! only after the data object is stored and its size checked, with create-only semantics, so a
//! backup either exists completely or not at all. One failing database never stops the others.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::catalog::{Catalog, CatalogError, NewJob, ResultRow};
use crate::codec::{Digest, Encoder, Encoding};
use crate::manifest::{DumpId, Encryption, FORMAT_VERSION, Manifest, Trigger};
use crate::policy::{Database, Policy};
use crate::source::d1::D1Error;
use crate::source::sqlite::{self, DumpRequest, Progress, SourceError};
use crate::source::{SnapshotError, SnapshotRequest};
use crate::store::{PutMode, Store, StoreError, UploadSink};

/// How long a SQLite source may stay locked by a writer before the backup fails.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::clock::{Clock, system_clock};

/// What a job needs: the policy it runs under, storage, the catalog, the clock.
#[derive(Clone)]
pub struct Context {
    pub policy: Arc<Policy>,
    pub store: Store,
    pub catalog: Arc<Mutex<Catalog>>,
    pub clock: Clock,
    /// With `[cluster]`: the claimed fire of each database this job may back up, under the
    /// lease it was claimed with (DESIGN §16). A database without one is not backed up.
    /// `None`: one daemon, no leases.
    pub tickets: Option<Arc<std::collections::BTreeMap<String, Arc<crate::cluster::Ticket>>>>,
}

/// Hears about a job's progress (the CLI's progress bars and log lines, the daemon's status).
pub trait Observer: Send + Sync {
    fn started(&self, database: &str);
    fn progress(&self, database: &str, progress: Progress);
    fn finished(&self, database: &str, outcome: &Result<Manifest, BackupError>);
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn started(&self, _: &str) {}
    fn progress(&self, _: &str, _: Progress) {}
    fn finished(&self, _: &str, _: &Result<Manifest, BackupError>) {}
}

/// Why one database's backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    D1(#[from] D1Error),
    #[error("compress dump of {database}: {source}")]
    Compress {
        database: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "a backup of {database} taken at {at} already exists ({key}) — wait a second and retry"
    )]
    Collision {
        database: String,
        at: String,
        key: String,
    },
    #[error(
        "stored size of {location} is {stored} bytes but {written} were written — the upload is incomplete; retry the backup"
    )]
    SizeMismatch {
        location: String,
        written: u64,
        stored: u64,
    },
    #[error("back up {database}: {reason}")]
    Unsupported { database: String, reason: String },
    #[error("back up {database}: the backup task failed: {reason}")]
    Task { database: String, reason: String },
    /// Several daemons: this node may not (or may no longer) back the database up.
    #[error("back up {database}: {reason}")]
    Fenced { database: String, reason: String },
}

/// A request for one job.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The job's id; one is generated when `None`.
    pub job_id: Option<String>,
    /// Database names; each must be declared in the policy.
    pub databases: Vec<String>,
    pub trigger: Trigger,
    pub initiated_by: Option<String>,
    pub reason: Option<String>,
}

/// What a job did.
#[derive(Debug)]
pub struct JobReport {
    pub job_id: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// In the order the databases were served (priority order).
    pub results: Vec<(String, Result<Manifest, BackupError>)>,
}

impl JobReport {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|(_, r)| r.is_err()).count()
    }

    /// The job as plain data for alerting (which knows nothing of manifests or errors' types).
    /// A backup fenced off because this node lost the database's lease is left out: the new
    /// holder backs the fire up, so it is no failure to alert on (`PatinaLeaseFlapping` watches
    /// the lease changes themselves).
    pub fn summary(&self) -> crate::alert::JobSummary {
        crate::alert::JobSummary {
            job_id: self.job_id.clone(),
            started_at: self.started_at,
            completed_at: self.completed_at,
            results: self
                .results
                .iter()
                .filter(|(_, r)| !matches!(r, Err(BackupError::Fenced { .. })))
                .map(|(name, r)| crate::alert::DbOutcome {
                    database: name.clone(),
                    result: r.as_ref().map(|m| m.size).map_err(|e| e.to_string()),
                    key: r.as_ref().ok().map(|m| m.key.clone()),
                })
                .collect(),
        }
    }
}

/// Run one job: back up the requested databases, at most `daemon.concurrency` at once,
/// critical before high before normal, and record everything in the catalog. Errors of single
/// databases are in the report; only a catalog failure fails the job itself.
pub async fn run_job(
    ctx: &Context,
    request: JobRequest,
    observer: Arc<dyn Observer>,
) -> Result<JobReport, CatalogError> {
    run_job_limited(ctx, request, observer, None).await
}

/// [`run_job`], with each database also taking a permit from `permits` (the daemon's limit on
/// backups running at once across jobs). Permits are granted first come, first served, and a
/// job asks in priority order.
pub async fn run_job_limited(
    ctx: &Context,
    request: JobRequest,
    observer: Arc<dyn Observer>,
    permits: Option<Arc<tokio::sync::Semaphore>>,
) -> Result<JobReport, CatalogError> {
    let job_id = request
        .job_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let started_at = (ctx.clock)();
    // Owned copies: the job's futures must not borrow from a temporary iterator (they are
    // spawned by the daemon, and rustc cannot prove borrowed closures general enough).
    let mut databases: Vec<Database> = request
        .databases
        .iter()
        .filter_map(|name| ctx.policy.database(name).cloned())
        .collect();
    // Stable: file order within a priority.
    databases.sort_by_key(|d| d.priority);
    ctx.catalog
        .lock()
        .expect("catalog lock")
        .start_job(&NewJob {
            job_id: &job_id,
            started_at,
            trigger: request.trigger,
            total_databases: databases.len(),
            initiated_by: request.initiated_by.as_deref(),
            reason: request.reason.as_deref(),
        })?;

    let concurrency = ctx.policy.daemon.concurrency.max(1);
    let trigger = request.trigger;
    let futures: Vec<_> = databases
        .into_iter()
        .enumerate()
        .map(|(order, db)| {
            let permits = permits.clone();
            let observer = Arc::clone(&observer);
            let job_id = job_id.clone();
            async move {
                let _permit = match permits {
                    Some(p) => p.acquire_owned().await.ok(),
                    None => None,
                };
                observer.started(&db.name);
                let db_started = (ctx.clock)();
                let outcome = backup_database(ctx, &db, &job_id, trigger, &observer).await;
                observer.finished(&db.name, &outcome);
                (order, db, db_started, outcome)
            }
        })
        .collect();
    let mut outcomes = futures::stream::iter(futures).buffer_unordered(concurrency);

    let mut results = Vec::new();
    while let Some((order, db, db_started, outcome)) = outcomes.next().await {
        let completed = (ctx.clock)();
        let message = outcome.as_ref().err().map(|e| e.to_string());
        let expires_at = ctx.policy.retention.daily.after(completed);
        ctx.catalog.lock().expect("catalog lock").record_result(
            &ResultRow {
                job_id: &job_id,
                database: &db.name,
                started_at: db_started,
                completed_at: completed,
                outcome: match (&outcome, &message) {
                    (Ok(m), _) => Ok(m),
                    (Err(_), Some(msg)) => Err(msg.as_str()),
                    (Err(_), None) => unreachable!("an error has a message"),
                },
                handed_over: matches!(outcome, Err(BackupError::Fenced { .. })),
            },
            expires_at,
        )?;
        results.push((order, db.name.clone(), outcome));
    }
    drop(outcomes);
    results.sort_by_key(|(order, _, _)| *order);
    let completed_at = (ctx.clock)();
    ctx.catalog
        .lock()
        .expect("catalog lock")
        .finish_job(&job_id, completed_at)?;
    Ok(JobReport {
        job_id,
        started_at,
        completed_at,
        results: results.into_iter().map(|(_, n, r)| (n, r)).collect(),
    })
}

/// Back up one database and commit it. Nothing is visible in storage unless this returns `Ok`
/// (a data object left by a crash has no manifest and is cleaned up as debris).
pub async fn backup_database(
    ctx: &Context,
    db: &Database,
    job_id: &str,
    trigger: Trigger,
    observer: &Arc<dyn Observer>,
) -> Result<Manifest, BackupError> {
    let ticket = match &ctx.tickets {
        None => None,
        Some(tickets) => {
            let fenced = |reason: String| BackupError::Fenced {
                database: db.name.clone(),
                reason,
            };
            let ticket = tickets.get(&db.name).ok_or_else(|| {
                fenced("no claim was made for it on this node (several daemons)".into())
            })?;
            ticket.check().map_err(fenced)?;
            Some(Arc::clone(ticket))
        }
    };
    // Keys have one-second resolution: a second backup of the same database within the same
    // second waits for the next one rather than failing.
    let mut attempt = 0;
    let (started_at, id) = loop {
        let started_at = (ctx.clock)();
        let id = DumpId::new(&db.name, started_at);
        if ctx.store.head(&id.manifest_key()).await?.is_none() {
            break (started_at, id);
        }
        attempt += 1;
        if attempt == 3 {
            return Err(BackupError::Collision {
                database: db.name.clone(),
                at: id.taken_at.to_rfc3339(),
                key: ctx.store.location(&id.manifest_key()),
            });
        }
        let into_second = started_at.timestamp_subsec_millis() as u64;
        tokio::time::sleep(Duration::from_millis(1001 - into_second.min(1000))).await;
    };
    // A source gives one consistent SQLite file to dump (a D1 database is copied into a scratch
    // file first, removed when `snapshot` is dropped); from there on every kind is the same.
    let scratch_dir = ctx.policy.daemon.state_dir.join("scratch");
    let snapshot = crate::source::of(&db.source)
        .snapshot(&SnapshotRequest {
            database: &db.name,
            scratch_dir: &scratch_dir,
            exclude_tables: &db.exclude_tables,
            cloudflare: ctx.policy.cloudflare.as_ref(),
        })
        .await
        .map_err(|e| match e {
            SnapshotError::D1(e) => BackupError::D1(e),
            SnapshotError::Unsupported { reason } => BackupError::Unsupported {
                database: db.name.clone(),
                reason,
            },
        })?;
    let path = snapshot.path().to_path_buf();
    // The key and the encoder come from this one value (sealed when the policy has
    // [encryption]), so they cannot disagree and a sealed policy never stores plaintext.
    let encoding = ctx.policy.dump_encoding();
    let compression = encoding.compression;
    let encryption = encoding
        .seal
        .as_ref()
        .map(|r| Encryption::age(r.fingerprints()));
    let data_key = id.data_key(encoding.layers());
    let manifest_key = id.manifest_key();

    // Under a lease, every part is sent only while this node still holds it.
    let (sink, upload) = ctx
        .store
        .start_upload_guarded(&data_key, ticket.as_ref().map(|t| t.guard()));
    let dump = {
        let database = db.name.clone();
        let job_id = job_id.to_string();
        let exclude = db.exclude_tables.clone();
        let path = path.clone();
        let observer = Arc::clone(observer);
        tokio::task::spawn_blocking(move || {
            let request = DumpRequest {
                database: &database,
                path: &path,
                job_id: &job_id,
                generated_at: started_at,
                exclude_tables: &exclude,
                busy_timeout: SQLITE_BUSY_TIMEOUT,
            };
            let mut progress = |p: Progress| observer.progress(&database, p);
            dump_compressed(&request, &encoding, sink, &mut progress)
        })
    };
    let dumped = dump.await;
    let uploaded = upload.await;
    let (summary, sha256, written) = match (dumped, uploaded) {
        (Ok(Ok(d)), Ok(Ok(stored))) => {
            if stored != d.2 {
                return Err(BackupError::SizeMismatch {
                    location: ctx.store.location(&data_key),
                    written: d.2,
                    stored,
                });
            }
            d
        }
        // The upload failing makes the dump's writes fail: report the upload's cause.
        (Ok(Err(e)), Ok(Err(up))) if is_write_failure(&e) => return Err(up.into()),
        (Ok(Err(e)), _) => return Err(e),
        (Ok(Ok(_)), Ok(Err(up))) => return Err(up.into()),
        (Err(join), _) | (_, Err(join)) => {
            return Err(BackupError::Task {
                database: db.name.clone(),
                reason: join.to_string(),
            });
        }
    };

    let manifest = Manifest {
        format: FORMAT_VERSION,
        database: db.name.clone(),
        tier: "daily".into(),
        key: data_key,
        sha256,
        size: written,
        compression,
        encryption,
        sql_bytes: summary.sql_bytes,
        table_count: summary.tables.len() as u64,
        tables: summary.tables,
        row_count: summary.row_count,
        schema_hash: summary.schema_hash,
        table_schema_hashes: summary.table_schema_hashes,
        source: snapshot.facts.clone(),
        fidelity: snapshot.fidelity.clone(),
        job_id: job_id.to_string(),
        trigger,
        started_at,
        completed_at: (ctx.clock)(),
        patina_version: env!("CARGO_PKG_VERSION").to_string(),
        lease_generation: ticket.as_ref().map(|t| t.generation()),
    };
    let bytes = Bytes::from(manifest.to_json());
    if let Some(ticket) = &ticket {
        // The commit point under a lease: the claim turns committed (If-Match) or nothing is.
        ticket
            .commit(&manifest_key, &bytes)
            .await
            .map_err(|reason| BackupError::Fenced {
                database: db.name.clone(),
                reason,
            })?;
    }
    match ctx
        .store
        .put(&manifest_key, bytes.clone(), PutMode::Create)
        .await
    {
        Ok(_) => Ok(manifest),
        // Under a lease, the committed claim may have been materialized by another node
        // already (this one stalled between the claim and the manifest): the same bytes are
        // the same commit.
        Err(StoreError::AlreadyExists { .. })
            if ticket.is_some() && ctx.store.get(&manifest_key).await.ok() == Some(bytes) =>
        {
            Ok(manifest)
        }
        Err(StoreError::AlreadyExists { .. }) => Err(BackupError::Collision {
            database: db.name.clone(),
            at: id.taken_at.to_rfc3339(),
            key: ctx.store.location(&manifest_key),
        }),
        Err(e) => Err(e.into()),
    }
}

fn is_write_failure(e: &BackupError) -> bool {
    matches!(
        e,
        BackupError::Compress { .. } | BackupError::Source(SourceError::Write(_))
    )
}

/// Dump into `sink` through the codec, hashing what is stored.
/// Returns the dump summary, the sha256 (hex) and the size of the stored bytes.
///
/// This thread dumps; a second one compresses, hashes and hands parts to the upload, so the
/// two halves overlap on two cores. Between them travel at most [`PIPE_DEPTH`] buffers of
/// [`PIPE_CHUNK`] bytes, so memory stays bounded, and the output is byte for byte what one
/// thread would write.
fn dump_compressed(
    request: &DumpRequest<'_>,
    encoding: &Encoding,
    sink: UploadSink,
    progress: &mut dyn FnMut(Progress),
) -> Result<(sqlite::DumpSummary, String, u64), BackupError> {
    let compress_err = |source| BackupError::Compress {
        database: request.database.to_string(),
        source,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let encoding = encoding.clone();
    let compressor = std::thread::Builder::new()
        .name("patina-compress".into())
        .spawn(move || compress(&encoding, sink, rx, spare_tx))
        .map_err(compress_err)?;
    let mut pipe = PipeWriter {
        tx: Some(tx),
        spare: spare_rx,
        buf: Vec::with_capacity(PIPE_CHUNK),
    };
    let dumped = sqlite::dump(request, &mut pipe, progress);
    let sent = match &dumped {
        Ok(_) => pipe.send(),
        Err(_) => Ok(()),
    };
    drop(pipe); // closes the channel: the compressor finishes the stream
    let compressed = compressor.join().map_err(|_| BackupError::Task {
        database: request.database.to_string(),
        reason: "the compressing thread panicked".into(),
    })?;
    match (dumped, sent, compressed) {
        (Ok(summary), Ok(()), Ok((sink, digest))) => {
            sink.finish().map_err(compress_err)?;
            Ok((summary, digest.sha256, digest.size))
        }
        // The compressor (or the upload behind it) failing makes the dump's writes fail:
        // report the compressor's cause. Dropping the sink unfinished abandons the upload.
        (_, _, Err(e)) => Err(compress_err(e)),
        (Err(e), _, _) => Err(e.into()),
        (Ok(_), Err(e), _) => Err(compress_err(e)),
    }
}

/// Buffers in flight between the dumping and the compressing thread.
const PIPE_DEPTH: usize = 8;
/// Size of one such buffer.
const PIPE_CHUNK: usize = 256 * 1024;

/// The dumping thread's end of the pipe: fills a buffer, sends it when full (the tail by
/// [`PipeWriter::send`]), reusing buffers the compressor hands back.
struct PipeWriter {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(PIPE_CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self.tx.as_ref().expect("pipe open");
        tx.send(full).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the compressing thread stopped")
        })
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.buf.is_empty() && self.buf.len() + data.len() > PIPE_CHUNK {
            self.send()?;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIPE_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    /// Does nothing: buffers go when full, the tail once the dump is complete.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressing (and sealing) thread: everything from `rx` through the codec into `sink`.
/// Returns the sink (unfinished: only a complete dump finishes it) and the digest of the stored
/// bytes. The encoder is finished only when the dump ended (the channel closed); an error drops
/// it, and with it the sink unfinished, so the upload is abandoned.
fn compress(
    encoding: &Encoding,
    sink: UploadSink,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
) -> io::Result<(UploadSink, Digest)> {
    let mut encoder = Encoder::new(encoding, sink)?;
    for mut chunk in rx {
        encoder.write_all(&chunk)?;
        chunk.clear();
        let _ = spare.send(chunk);
    }
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_handed_over_to_another_node_is_no_failure_to_alert_on() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let report = JobReport {
            job_id: "j".into(),
            started_at: at,
            completed_at: at,
            results: vec![
                (
                    "moved".into(),
                    Err(BackupError::Fenced {
                        database: "moved".into(),
                        reason: "this node lost the lease".into(),
                    }),
                ),
                (
                    "broken".into(),
                    Err(BackupError::Task {
                        database: "broken".into(),
                        reason: "panicked".into(),
                    }),
                ),
            ],
        };
        assert_eq!(report.failed(), 2);
        let summary = report.summary();
        let named: Vec<&str> = summary
            .results
            .iter()
            .map(|r| r.database.as_str())
            .collect();
        assert_eq!(named, ["broken"]);
    }
}
