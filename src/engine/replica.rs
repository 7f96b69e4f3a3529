//! Replicas (DESIGN §15): every committed dump and archive of the primary `[storage]` is copied
//! to every `[[replica]]`, off the backup path.
//!
//! A sync of one replica takes the primary's listing (the reconcile pass's own, less what the
//! pass deleted: no second listing per tick), lists the replica, works out what the replica lacks
//! ([`missing`], oldest first) and copies it one object at a time: the manifest is read from the
//! primary, the data object is streamed into a scratch file while its sha256 and size are
//! checked against that manifest ([`restore::download_checked`], the codec's verifier), the
//! checked file is uploaded, and only then is the manifest written, create-only where the
//! storage supports it. A copy that fails leaves no manifest on the replica: at most a data
//! object without one, which the replica's own listing classifies as debris. So a replica that
//! was down is caught up when it answers again, and a replica added later receives all the
//! history the primary still keeps.
//!
//! Decisions: a problem on the primary's side (an object that fails its sha256, a manifest
//! that cannot be read) skips that object and goes on with the next; a problem on the
//! replica's side (it is down, refuses writes) ends the sync, since later copies would fail
//! the same way and oldest-first order is kept. The reconciler starts at most one sync per
//! replica at a time, never with a backup permit, so a slow or dead replica never delays or
//! fails a backup to the primary. Copies are byte for byte: keys, data and manifests are the
//! primary's.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::archive;
use crate::bucket;
use crate::inventory::Inventory;
use crate::manifest::{ArchiveManifest, Manifest};
use crate::policy::{PRIMARY, Policy};
use crate::replication::{self, Missing, ReplicaPlan};
use crate::restore::{self, Sources};
use crate::retention::{ArchiveFacts, KeepRules};
use crate::store::{PutMode, Store, StoreError};

/// A replica as the engine uses it: its name and its opened storage.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub store: Store,
    /// The spans retention keeps by here (the replica's overrides, else the primary's).
    pub rules: KeepRules,
}

/// What is known of committed archives, by manifest key: the same facts serve the primary and
/// every replica (copies are byte for byte). Shared with the reconciler's own cache.
pub type ArchiveFactsCache = Arc<Mutex<HashMap<String, ArchiveFacts>>>;

/// Open every `[[replica]]` of `policy` (no request is made). One that cannot be opened (an
/// invalid endpoint) is logged and left out, never stopping the others or the primary.
pub fn open_all(policy: &Policy) -> Vec<Destination> {
    policy
        .replicas
        .iter()
        .filter_map(|r| match Store::open(&r.storage) {
            Ok(store) => Some(Destination {
                name: r.name.clone(),
                store,
                rules: replication::keep_rules(r, &policy.retention),
            }),
            Err(e) => {
                tracing::error!(replica = %r.name, error = %e, "cannot open the replica's storage; it is skipped");
                None
            }
        })
        .collect()
}

/// Where restores read from: `primary` first, then every replica of `policy` in file order
/// (`from`: only the one it names, `primary` or a replica's name).
pub fn sources(policy: &Policy, primary: Store, from: Option<&str>) -> Result<Sources, String> {
    let mut list = vec![(PRIMARY.to_string(), primary)];
    list.extend(open_all(policy).into_iter().map(|d| (d.name, d.store)));
    let sources = Sources::new(list);
    match from {
        None => Ok(sources),
        Some(name) => sources.only(name).ok_or_else(|| {
            let mut names = vec![format!("{PRIMARY:?}")];
            names.extend(policy.replicas.iter().map(|r| format!("{:?}", r.name)));
            format!(
                "--from {name:?} names no destination; use one of {}",
                names.join(", ")
            )
        }),
    }
}

/// What one sync of one replica did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub replica: String,
    /// Objects the replica lacked (and should keep) when the sync started.
    pub missing_before: usize,
    pub copied: usize,
    pub bytes: u64,
    /// Objects still missing when the sync ended.
    pub missing_after: usize,
    /// Objects (data and manifest) deleted by the replica's retention.
    pub deleted: usize,
    /// One line per failed copy or deletion (what, where, why).
    pub errors: Vec<String>,
}

/// A sync that could not start: the replica could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "replica {replica:?}: list the replica: {source} — nothing was copied; it is caught up once it answers again (check its url, endpoint and keys)"
    )]
    Replica {
        replica: String,
        #[source]
        source: StoreError,
    },
}

/// Why one copy failed, by side.
enum CopyError {
    /// The primary's object: skip it.
    Primary(String),
    /// The replica refused or is unreachable: stop this sync.
    Replica(String),
}

/// List `replica` and plan it against `source`, a complete listing of the primary (see
/// [`replication::plan`]): the facts of archives only the replica holds are read from its
/// manifests there (once; cached). Returns the plan and the replica's listing. Nothing is
/// written.
pub async fn plan(
    source: &Inventory,
    replica: &Destination,
    facts: &ArchiveFactsCache,
    now: DateTime<Utc>,
) -> Result<(ReplicaPlan, Inventory), SyncError> {
    let target =
        Inventory::classify(
            replica
                .store
                .list("")
                .await
                .map_err(|source| SyncError::Replica {
                    replica: replica.name.clone(),
                    source,
                })?,
        );
    let unknown: Vec<_> = {
        let known = facts.lock().expect("archive facts");
        target
            .archives
            .iter()
            .filter(|a| !known.contains_key(&a.manifest_key))
            .cloned()
            .collect()
    };
    for a in unknown {
        // An archive whose manifest cannot be read covers nothing: retention keeps more.
        match archive::read_manifest(&replica.store, &a.manifest_key).await {
            Ok(m) => {
                facts
                    .lock()
                    .expect("archive facts")
                    .insert(a.manifest_key.clone(), ArchiveFacts::from_manifest(&a, &m));
            }
            Err(e) => {
                tracing::warn!(replica = %replica.name, archive = %a.manifest_key, error = %e, "cannot read an archive manifest on the replica; the dumps it holds are kept there")
            }
        }
    }
    let known = facts.lock().expect("archive facts").clone();
    let lookup = |key: &str| known.get(key).cloned();
    let planned = replication::plan(&replica.rules, source, &target, &lookup, now);
    Ok((planned, target))
}

/// Bring `replica` up to date with the primary (as `source`, a complete listing of it, says):
/// copy what it lacks and should keep, oldest first, then delete what its own retention
/// releases (manifest first, then data). Scratch files go to `scratch_dir`, which must be this
/// replica's own: they are removed on every path out, and leftovers of an earlier sync at the
/// start.
pub async fn sync(
    primary: &Store,
    source: &Inventory,
    replica: &Destination,
    facts: &ArchiveFactsCache,
    scratch_dir: &Path,
    now: DateTime<Utc>,
) -> Result<SyncReport, SyncError> {
    let name = replica.name.clone();
    let (planned, _) = plan(source, replica, facts, now).await?;
    let todo = planned.copies;
    let mut report = SyncReport {
        replica: name.clone(),
        missing_before: todo.len(),
        missing_after: todo.len(),
        ..SyncReport::default()
    };
    let mut replica_failed = false;
    if !todo.is_empty() {
        // The folder is this replica's own (one sync per replica at a time, one daemon per
        // state directory): whatever is in it was left by a sync cut short (a crash, SIGKILL).
        if let Ok(entries) = std::fs::read_dir(scratch_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Err(e) = std::fs::create_dir_all(scratch_dir) {
            report.errors.push(format!(
                "replica {name:?}: create scratch directory {}: {e}",
                scratch_dir.display()
            ));
            return Ok(report);
        }
    }
    for item in &todo {
        match copy(primary, &replica.store, item, scratch_dir).await {
            Ok(bytes) => {
                tracing::info!(replica = %name, key = %item.data_key, bytes, "copied to replica");
                report.copied += 1;
                report.missing_after -= 1;
                report.bytes += bytes;
            }
            Err(CopyError::Primary(e)) => {
                tracing::warn!(replica = %name, key = %item.data_key, error = %e, "not copied to the replica: the primary's object is unusable");
                report
                    .errors
                    .push(format!("replica {name:?}: copy {}: {e}", item.data_key));
            }
            Err(CopyError::Replica(e)) => {
                tracing::warn!(replica = %name, key = %item.data_key, error = %e, "replica copy failed; the rest waits for the next pass");
                report
                    .errors
                    .push(format!("replica {name:?}: copy {}: {e}", item.data_key));
                replica_failed = true;
                break;
            }
        }
    }
    if replica_failed {
        return Ok(report);
    }
    for d in &planned.deletions {
        match bucket::delete_committed(&replica.store, &d.manifest_key, &d.data_key).await {
            Ok(()) => {
                tracing::info!(replica = %name, key = %d.data_key, reason = %d.reasons.join("; "), "deleted from the replica by its retention");
                report.deleted += 1;
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("replica {name:?}: delete {}: {e}", d.data_key));
                break;
            }
        }
    }
    Ok(report)
}

/// Copy one committed object: data (checked against the manifest) first, manifest last.
async fn copy(
    primary: &Store,
    replica: &Store,
    item: &Missing,
    scratch_dir: &Path,
) -> Result<u64, CopyError> {
    let from_primary = |e: &dyn std::fmt::Display| CopyError::Primary(e.to_string());
    let manifest_bytes = primary
        .get(&item.manifest_key)
        .await
        .map_err(|e| from_primary(&e))?;
    let (key, sha256, size) = if item.archive {
        let m = ArchiveManifest::from_json(&manifest_bytes, &item.manifest_key)
            .map_err(|e| from_primary(&e))?;
        (m.key, m.sha256, m.size)
    } else {
        let m = Manifest::from_json(&manifest_bytes, &item.manifest_key)
            .map_err(|e| from_primary(&e))?;
        (m.key, m.sha256, m.size)
    };
    if key != item.data_key {
        return Err(CopyError::Primary(format!(
            "its manifest {} names {key}, not this object",
            primary.location(&item.manifest_key)
        )));
    }
    let scratch =
        Scratch(scratch_dir.join(format!("replica-{}.part", uuid::Uuid::new_v4().simple())));
    let checked = restore::download_checked(primary, &key, &sha256, size, &scratch.0)
        .await
        .map_err(|e| from_primary(&e))?;
    let file: File = checked.into_stored();

    let (mut sink, task) = replica.start_upload(&key);
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = file;
        std::io::copy(&mut file, &mut sink)?;
        sink.finish()
    });
    let written = writer
        .await
        .map_err(|e| CopyError::Replica(format!("upload task: {e}")))
        .and_then(|r| r.map_err(|e| CopyError::Replica(e.to_string())));
    let stored = task
        .await
        .map_err(|e| CopyError::Replica(format!("upload task: {e}")))?
        .map_err(|e| CopyError::Replica(e.to_string()))?;
    written?;
    if stored != size {
        return Err(CopyError::Replica(format!(
            "{} stored {stored} bytes, the manifest says {size}",
            replica.location(&key)
        )));
    }
    // The commit marker, last; create-only where the storage can (another writer's identical
    // copy is as good as ours).
    match replica
        .put(&item.manifest_key, manifest_bytes.clone(), PutMode::Create)
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(StoreError::Unsupported { .. }) => {
            replica
                .put(&item.manifest_key, manifest_bytes, PutMode::Overwrite)
                .await
                .map_err(|e| CopyError::Replica(e.to_string()))?;
        }
        Err(e) => return Err(CopyError::Replica(e.to_string())),
    }
    Ok(size)
}

/// A scratch file, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
