//! Catalog housekeeping, off the backup path: the catalog stays as large as what storage holds,
//! not as old as the daemon.
//!
//! Every [`period`] (a quarter of the history window, between one tick and an hour) the daemon
//! starts one pass on a blocking thread with its own connection, so the shared catalog's lock
//! is never held by it and a backup never waits for it (SQLite's busy timeout serializes the
//! few writes). A pass prunes history older than [`Policy::history_retention`] that describes
//! nothing in storage any more ([`Catalog::prune_history`]: jobs and results whose dumps are all
//! deleted, inventory rows of deleted dumps, alert deliveries, config reloads, old
//! verifications and restore history — their counts
//! kept so no metric counter goes down), then `PRAGMA optimize`, a `VACUUM` when a quarter of
//! the file is free pages, and a WAL truncation ([`Catalog::optimize`]). At most one pass runs
//! at a time; a pass still running at shutdown is waited for briefly, then left to the process
//! exit (SQLite rolls an unfinished transaction back).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::catalog::{Catalog, CatalogError, PruneReport};
use crate::policy::Policy;

/// How often a pass runs for a history window of `window` and a daemon tick of `tick`.
pub fn period(window: Duration, tick: Duration) -> Duration {
    (window / 4).clamp(tick.max(Duration::from_secs(1)), Duration::from_secs(3600))
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub pruned: PruneReport,
    pub vacuumed: bool,
    /// Bytes of the catalog file and its WAL before and after.
    pub size_before: u64,
    pub size_after: u64,
}

/// One pass on the catalog at `path` (blocking): prune history older than `window` before
/// `now`, then optimize.
pub fn run_once(path: &Path, now: DateTime<Utc>, window: Duration) -> Result<Report, CatalogError> {
    let mut catalog = Catalog::open_file(path)?;
    let size_before = catalog.size_on_disk();
    let cutoff = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let pruned = catalog.prune_history(cutoff, &crate::metrics::DURATION_BUCKETS)?;
    let vacuumed = catalog.optimize()?;
    Ok(Report {
        pruned,
        vacuumed,
        size_before,
        size_after: catalog.size_on_disk(),
    })
}

/// Starts passes when they are due; at most one at a time.
pub struct Housekeeper {
    path: PathBuf,
    started: Instant,
    last: Option<Instant>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Housekeeper {
    pub fn new(path: PathBuf) -> Housekeeper {
        Housekeeper {
            path,
            started: Instant::now(),
            last: None,
            task: None,
        }
    }

    /// Start a pass if one is due and none is running (the first one period after start).
    pub fn tick(&mut self, policy: &Policy, now: DateTime<Utc>) {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let window = policy.history_retention();
        let every = period(window, policy.daemon.tick);
        if self.last.unwrap_or(self.started).elapsed() < every {
            return;
        }
        self.last = Some(Instant::now());
        let path = self.path.clone();
        self.task = Some(tokio::task::spawn_blocking(move || {
            match run_once(&path, now, window) {
                Ok(r) if r.pruned.total() > 0 || r.vacuumed => tracing::info!(
                    jobs = r.pruned.jobs,
                    results = r.pruned.results,
                    inventory = r.pruned.inventory,
                    alert_deliveries = r.pruned.alert_deliveries,
                    config_reloads = r.pruned.config_reloads,
                    vacuumed = r.vacuumed,
                    bytes_before = r.size_before,
                    bytes_after = r.size_after,
                    "catalog housekeeping"
                ),
                Ok(r) => tracing::debug!(
                    bytes = r.size_after,
                    "catalog housekeeping: nothing to prune"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "catalog housekeeping failed; it is tried again later")
                }
            }
        }));
    }

    /// Wait up to `grace` for a running pass.
    pub async fn finish(&mut self, grace: Duration) {
        if let Some(task) = self.task.take()
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!(
                "catalog housekeeping still running at exit; its transaction is rolled back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_run_four_times_per_window_between_a_tick_and_an_hour() {
        let s = Duration::from_secs;
        assert_eq!(period(s(16 * 7 * 86_400), s(60)), s(3600));
        assert_eq!(period(s(60), s(1)), s(15));
        assert_eq!(period(s(2), s(1)), s(1));
        assert_eq!(period(s(60), s(30)), s(30));
    }
}
