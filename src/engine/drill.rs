//! Restore drills (DESIGN §13): the daemon restores its own backups to prove they restore.
//!
//! A drill lists every restore point (daily objects and weekly archive members), takes each
//! declared database's newest and `[verify] sample` older ones chosen at random
//! ([`points::drill_sample`]), and checks each as `patina verify` does
//! ([`restore::verify_located`]: download, sha256, decompress, load into a scratch file,
//! `integrity_check`, `foreign_key_check`, row counts and schema hash against the manifest).
//! Points are drilled one after another, so a drill holds one scratch database at a time.
//!
//! With `[[replica]]`s (DESIGN §15), a drill whose primary cannot be listed drills the first
//! replica that can instead. A point that fails on the primary is tried on the
//! replicas too: the drill still fails (the primary's copy is what it checks), and its problems
//! say which replica holds a good copy (`patina restore --from NAME`). A point that passes on the
//! primary has its replica copies checked as stored (sha256 and size, no restore): a copy that
//! fails is removed from that replica (manifest first), so the next sync copies it again from
//! the primary's verified one — a damaged replica object is detected, never served (restores
//! check sha256 on every destination) and re-copied.
//!
//! Results go to the catalog (`verifications`, origin `drill`) and to alerts: a failed point
//! raises `verify_failed` for its database (once, reminded while it lasts); a database whose
//! drilled points all pass resolves it. The reconciler starts drills off the backup path (the
//! plan holds one back while backups run or are due; drills take no backup permit) and aborts
//! a running drill at shutdown: the scratch file goes with it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::alert::Alerts;
use crate::backup::Clock;
use crate::bucket;
use crate::catalog::{Catalog, VerificationRecord};
use crate::manifest::manifest_key_for;
use crate::points;
use crate::replica::Destination;
use crate::restore::{self, Located, RestoreError, Sources};
use crate::store::{Store, StoreError};

/// What a drill needs.
pub struct DrillContext {
    pub store: Store,
    pub catalog: Arc<Mutex<Catalog>>,
    pub clock: Clock,
    pub alerts: Option<Alerts>,
    /// Databases to drill (declared in the policy), in policy order.
    pub databases: Vec<String>,
    pub sample: u32,
    pub scratch_dir: PathBuf,
    /// Seeds the random choice of older points.
    pub seed: u64,
    /// The identities that open sealed backups (`[encryption] identity_file`).
    pub keys: restore::Keys,
    /// The `[[replica]]` destinations whose copies are checked too.
    pub replicas: Vec<Destination>,
}

/// One drilled restore point.
#[derive(Debug, Clone)]
pub struct DrillResult {
    pub database: String,
    pub location: String,
    pub taken_at: DateTime<Utc>,
    /// Empty when it passed.
    pub problems: Vec<String>,
    /// Replica copies of it found damaged and removed for the next sync to copy again.
    pub repaired: Vec<String>,
}

/// Run one drill to the end; every point's result is recorded and alerted as it finishes.
pub async fn run(ctx: &DrillContext) -> Result<Vec<DrillResult>, restore::RestoreError> {
    // The scratch folder is the drills' own (one drill at a time, one daemon per state
    // directory): whatever is in it was left by a drill aborted at shutdown.
    if let Ok(entries) = std::fs::read_dir(&ctx.scratch_dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // The primary's restore points; when it cannot be listed, the first replica that can
    // (its copies are what a restore would read then).
    let (all, drilled) = match restore::restore_points(&ctx.store).await {
        Ok(all) => (all, None),
        Err(e) => {
            let mut found = None;
            for replica in &ctx.replicas {
                if let Ok(all) = restore::restore_points(&replica.store).await {
                    tracing::warn!(replica = %replica.name, error = %e, "the primary cannot be listed; drilling a replica's copies");
                    found = Some((all, Some(replica)));
                    break;
                }
            }
            found.ok_or(e)?
        }
    };
    let store = drilled.map_or(&ctx.store, |r| &r.store);
    let others: Vec<&Destination> = ctx
        .replicas
        .iter()
        .filter(|r| drilled.is_none_or(|d| d.name != r.name))
        .collect();
    let picks = points::drill_sample(&all.points, &ctx.databases, ctx.sample, ctx.seed);
    tracing::info!(points = picks.len(), "restore drill started");
    let mut results: Vec<DrillResult> = Vec::new();
    let newest: std::collections::BTreeSet<&str> = ctx
        .databases
        .iter()
        .filter_map(|db| all.points.iter().rfind(|p| &p.database == db))
        .map(|p| p.dump_key())
        .collect();
    for point in picks {
        let started = (ctx.clock)();
        let located = all.locate(store, point).await;
        let checked = match &located {
            Ok(located) => {
                let from = Sources::single(store.clone());
                restore::verify_located(&from, located, &ctx.scratch_dir, started, &ctx.keys).await
            }
            Err(e) => Err(RestoreError::Archive(e.to_string())),
        };
        let mut repaired = Vec::new();
        let problems = match (checked, &located) {
            (Ok(v), Ok(located)) if v.ok() => {
                for replica in &others {
                    if let Some(what) = check_replica_copy(replica, located, &ctx.scratch_dir).await
                    {
                        repaired.push(what);
                    }
                }
                Vec::new()
            }
            (Ok(v), _) => v.problems,
            (Err(e), located) => {
                let mut problems = vec![e.to_string()];
                if let Ok(located) = located
                    && let Some(name) = good_replica(ctx, &others, located, started).await
                {
                    problems.push(format!(
                        "replica {name:?} holds a good copy: `patina restore {} --from {name}` restores it",
                        point.database
                    ));
                }
                problems
            }
        };
        let location = point.location();
        let finished = (ctx.clock)();
        let outcome = problems.join("; ");
        let record = VerificationRecord {
            database: &point.database,
            key: point.dump_key(),
            location: Some(&location),
            taken_at: Some(point.taken_at),
            origin: "drill",
            at: started,
            duration_ms: Some((finished - started).num_milliseconds()),
            newest: newest.contains(point.dump_key()),
            outcome: if problems.is_empty() {
                Ok(())
            } else {
                Err(&outcome)
            },
        };
        if let Err(e) = ctx
            .catalog
            .lock()
            .expect("catalog lock")
            .record_verification(&record)
        {
            tracing::error!(error = %e, "drill result not recorded");
        }
        if problems.is_empty() {
            tracing::info!(database = %point.database, point = %location, "restore drill passed");
        } else {
            tracing::error!(database = %point.database, point = %location, problems = %outcome, "restore drill FAILED");
            if let Some(a) = &ctx.alerts {
                a.verify_failed(&point.database, &location, &problems);
            }
        }
        results.push(DrillResult {
            database: point.database.clone(),
            location,
            taken_at: point.taken_at,
            problems,
            repaired,
        });
    }
    if let Some(a) = &ctx.alerts {
        for db in &ctx.databases {
            let mine: Vec<&DrillResult> = results.iter().filter(|r| &r.database == db).collect();
            if !mine.is_empty() && mine.iter().all(|r| r.problems.is_empty()) {
                a.verify_passed(db);
            }
        }
    }
    let failed = results.iter().filter(|r| !r.problems.is_empty()).count();
    tracing::info!(points = results.len(), failed, "restore drill finished");
    Ok(results)
}

/// The first replica on which `located` restores and passes its checks, for a point that
/// failed on the primary.
async fn good_replica(
    ctx: &DrillContext,
    replicas: &[&Destination],
    located: &Located,
    started: DateTime<Utc>,
) -> Option<String> {
    for replica in replicas {
        let from = Sources::new(vec![(replica.name.clone(), replica.store.clone())]);
        let checked =
            restore::verify_located(&from, located, &ctx.scratch_dir, started, &ctx.keys).await;
        if matches!(checked, Ok(v) if v.ok()) {
            return Some(replica.name.clone());
        }
    }
    None
}

/// Check `replica`'s copy of the stored object behind `located` (the daily dump, or the weekly
/// archive holding it) against its manifest, as stored: sha256 and size. A copy that fails is
/// removed there, manifest first, for the next sync to copy again; returns where it was. A
/// copy that is absent (not copied yet, or pruned there) or a replica that cannot be read is
/// left to the sync.
async fn check_replica_copy(
    replica: &Destination,
    located: &Located,
    scratch_dir: &std::path::Path,
) -> Option<String> {
    let (key, sha256, size) = match located {
        Located::Daily(m) => (&m.key, &m.sha256, m.size),
        Located::Archived { archive, .. } => (&archive.key, &archive.sha256, archive.size),
    };
    let manifest_key = manifest_key_for(key)?;
    std::fs::create_dir_all(scratch_dir).ok()?;
    let part = scratch_dir.join(format!("replica-{}.part", uuid::Uuid::new_v4().simple()));
    let checked = restore::download_checked(&replica.store, key, sha256, size, &part).await;
    let _ = std::fs::remove_file(&part);
    let location = replica.store.location(key);
    match checked {
        Ok(_) => None,
        Err(RestoreError::Checksum { .. }) => {
            tracing::error!(replica = %replica.name, object = %location, "replica copy damaged (sha256 or size differs from its manifest); removed so the next sync copies it again from the primary");
            match bucket::delete_committed(&replica.store, &manifest_key, key).await {
                Ok(()) => Some(location),
                Err(e) => {
                    tracing::error!(replica = %replica.name, object = %location, error = %e, "cannot remove the damaged replica copy; restores skip it (its sha256 fails)");
                    None
                }
            }
        }
        Err(RestoreError::Store(StoreError::NotFound { .. })) => None,
        Err(e) => {
            tracing::warn!(replica = %replica.name, object = %location, error = %e, "cannot check the replica copy; the next drill tries again");
            None
        }
    }
}
