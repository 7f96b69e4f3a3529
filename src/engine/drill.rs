//! Restore drills (DESIGN §13): the daemon restores its own backups to prove they restore.
//!
//! A drill lists every restore point (daily objects and weekly archive members), takes each
//! declared database's newest and `[verify] sample` older ones chosen at random
//! ([`points::drill_sample`]), and checks each as `patina verify` does
//! ([`restore::verify_located`]: download, sha256, decompress, load into a scratch file,
//! `integrity_check`, `foreign_key_check`, row counts and schema hash against the manifest).
//! Points are drilled one after another, so a drill holds one scratch database at a time.
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
use crate::catalog::{Catalog, VerificationRecord};
use crate::points;
use crate::restore;
use crate::store::Store;

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
}

/// One drilled restore point.
#[derive(Debug, Clone)]
pub struct DrillResult {
    pub database: String,
    pub location: String,
    pub taken_at: DateTime<Utc>,
    /// Empty when it passed.
    pub problems: Vec<String>,
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
    let all = restore::restore_points(&ctx.store).await?;
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
        let checked = match all.locate(&ctx.store, point).await {
            Ok(located) => {
                let from = restore::Sources::single(ctx.store.clone());
                restore::verify_located(&from, &located, &ctx.scratch_dir, started, &ctx.keys).await
            }
            Err(e) => Err(e),
        };
        let problems = match checked {
            Ok(v) => v.problems,
            Err(e) => vec![e.to_string()],
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
