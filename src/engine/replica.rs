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

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::inventory::Inventory;
use crate::manifest::{ArchiveManifest, Manifest};
use crate::policy::{PRIMARY, Policy};
use crate::restore::{self, Sources};
use crate::store::{PutMode, Store, StoreError};

/// A committed object of the primary that a replica lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub data_key: String,
    pub manifest_key: String,
    /// A weekly archive (else a daily dump).
    pub archive: bool,
    /// When the dump was taken, or when the archive's week ended: the copy order.
    pub at: DateTime<Utc>,
}

/// What `replica` lacks of the committed dumps and archives in `primary`, oldest first. A
/// replica "has" an object when its listing shows it committed (data and manifest).
pub fn missing(primary: &Inventory, replica: &Inventory) -> Vec<Missing> {
    let have: HashSet<&str> = replica
        .dumps
        .iter()
        .map(|d| d.manifest_key.as_str())
        .chain(replica.archives.iter().map(|a| a.manifest_key.as_str()))
        .collect();
    let dumps = primary.dumps.iter().map(|d| Missing {
        data_key: d.data.key.clone(),
        manifest_key: d.manifest_key.clone(),
        archive: false,
        at: d.id.taken_at,
    });
    let archives = primary.archives.iter().map(|a| Missing {
        data_key: a.data.key.clone(),
        manifest_key: a.manifest_key.clone(),
        archive: true,
        at: a
            .week
            .start()
            .map_or(a.data.last_modified, |s| s + chrono::Duration::days(7)),
    });
    let mut out: Vec<Missing> = dumps
        .chain(archives)
        .filter(|m| !have.contains(m.manifest_key.as_str()))
        .collect();
    out.sort_by(|a, b| (a.at, &a.data_key).cmp(&(b.at, &b.data_key)));
    out
}

/// A replica as the engine uses it: its name and its opened storage.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub store: Store,
}

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
    /// Objects the replica lacked when the sync started.
    pub missing_before: usize,
    pub copied: usize,
    pub bytes: u64,
    /// Objects still missing when the sync ended.
    pub missing_after: usize,
    /// One line per failed copy (what, where, why).
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

/// Copy to `replica` every committed object of `primary` (as `source`, a complete listing of
/// it, says) that it lacks, oldest first (see the module docs). Scratch files go to
/// `scratch_dir`, which must be this replica's own: they are removed on every path out, and
/// leftovers of an earlier sync at the start.
pub async fn sync(
    primary: &Store,
    source: &Inventory,
    replica: &Destination,
    scratch_dir: &Path,
) -> Result<SyncReport, SyncError> {
    let name = replica.name.clone();
    let target =
        Inventory::classify(
            replica
                .store
                .list("")
                .await
                .map_err(|source| SyncError::Replica {
                    replica: name.clone(),
                    source,
                })?,
        );
    let todo = missing(source, &target);
    let mut report = SyncReport {
        replica: name.clone(),
        missing_before: todo.len(),
        missing_after: todo.len(),
        ..SyncReport::default()
    };
    if todo.is_empty() {
        return Ok(report);
    }
    // The folder is this replica's own (one sync per replica at a time, one daemon per state
    // directory): whatever is in it was left by a sync cut short (a crash, SIGKILL).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ObjectInfo;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 1,
            last_modified: "2026-11-30T00:00:00Z".parse().unwrap(),
            etag: None,
        }
    }

    fn inv(keys: &[&str]) -> Inventory {
        Inventory::classify(keys.iter().map(|k| obj(k)).collect())
    }

    #[test]
    fn missing_lists_what_the_replica_lacks_oldest_first() {
        let primary = inv(&[
            "daily/2026-11-22/app/20261122T030000Z.sql.zst",
            "daily/2026-11-22/app/20261122T030000Z.manifest.json",
            "daily/2026-11-21/app/20261121T030000Z.sql.zst",
            "daily/2026-11-21/app/20261121T030000Z.manifest.json",
            "daily/2026-11-23/app/20261123T030000Z.sql.zst",
            "daily/2026-11-23/app/20261123T030000Z.manifest.json",
            "weekly/2026-W46.tar",
            "weekly/2026-W46.manifest.json",
            // Not committed on the primary: never copied.
            "daily/2026-11-24/app/20261124T030000Z.sql.zst",
        ]);
        let replica = inv(&[
            "daily/2026-11-22/app/20261122T030000Z.sql.zst",
            "daily/2026-11-22/app/20261122T030000Z.manifest.json",
            // Debris of a failed copy: still missing.
            "daily/2026-11-23/app/20261123T030000Z.sql.zst",
        ]);
        let todo = missing(&primary, &replica);
        let keys: Vec<&str> = todo.iter().map(|m| m.data_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "weekly/2026-W46.tar",
                "daily/2026-11-21/app/20261121T030000Z.sql.zst",
                "daily/2026-11-23/app/20261123T030000Z.sql.zst",
            ]
        );
        assert!(missing(&primary, &primary).is_empty());
    }
}
