//! Alerts: the events operators need (DESIGN §9), de-duplicated, rendered for each sink kind
//! and delivered off the backup path.
//!
//! The parts:
//!
//! - [`Alert`] / [`Subject`]: what happened, as plain data.
//! - [`conditions`] (pure): thresholds and de-duplication, with `now` passed in.
//! - [`webhook`], [`discord`], [`slack`], [`healthchecks`] (pure): one [`Outgoing`] request per
//!   alert and sink kind; each documents its payload.
//! - [`Alerts`] (in `delivery`): the handle the reconciler and the daemon raise events through.
//!   Raising never blocks and never fails: it routes the alert to the sinks that listen to its
//!   event and puts the deliveries on a bounded queue. A background worker sends them, each
//!   with a timeout, retried with exponential backoff and jitter (429 `Retry-After` honoured),
//!   every attempt recorded in the catalog (`alert_deliveries`) and every final outcome counted
//!   for `patina_alerts_sent_total{sink,event,result}` ([`Alerts::sent_counts`]).
//!
//! Where events come from: the reconciler's job task (`job_started`, `job_finished`: start
//! pings, failure/success, duration, size_anomaly), its pass (`plan_observed`: drift, an
//! archive waiting too long) and archive task (`archive_failed`); the daemon's reload path
//! (`config_invalid` / `config_valid`) and tick (`evaluate`: stale, still-running jobs over
//! time, the daily summary, reminders).
//!
//! Secrets: sink URLs and header values are only read where a request is built; errors are
//! stripped of URLs and scrubbed of both before they are logged or recorded.

pub mod conditions;
mod delivery;
pub mod discord;
pub mod healthchecks;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

pub use delivery::{Alerts, DeliveryConfig, SentCount, TestOutcome};

use crate::human;
use crate::policy::{AlertEvent, AlertSink, SinkKind};

/// Whether a condition starts, persists (a reminder) or ends. One-shot facts always fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Firing,
    Reminder,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Reminder => "reminder",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert: what happened, its state, when, and its de-duplication key.
#[derive(Debug, Clone)]
pub struct Alert {
    pub subject: Subject,
    pub state: AlertState,
    pub at: DateTime<Utc>,
    /// De-duplication key, e.g. `stale:groveauth`, `failure:<job id>`.
    pub key: String,
    /// When the condition started (reminders and resolutions).
    pub since: Option<DateTime<Utc>>,
}

impl Alert {
    pub fn new(subject: Subject, state: AlertState, key: &str, at: DateTime<Utc>) -> Alert {
        Alert {
            subject,
            state,
            at,
            key: key.to_string(),
            since: None,
        }
    }

    /// The policy event this alert belongs to; `None` for job-start pings and test messages,
    /// which are routed by sink kind instead.
    pub fn event(&self) -> Option<AlertEvent> {
        Some(match &self.subject {
            Subject::JobStarted { .. } | Subject::Test => return None,
            Subject::Job(j) if j.failed() > 0 => AlertEvent::Failure,
            Subject::Job(_) => AlertEvent::Success,
            Subject::Duration { .. } => AlertEvent::Duration,
            Subject::SizeAnomaly { .. } => AlertEvent::SizeAnomaly,
            Subject::SchemaChanged { .. } => AlertEvent::SchemaChanged,
            Subject::Slow { .. } => AlertEvent::Slow,
            Subject::Stale { .. } => AlertEvent::Stale,
            Subject::ArchiveFailed { .. } => AlertEvent::ArchiveFailed,
            Subject::Drift { .. } => AlertEvent::Drift,
            Subject::StorageUnreachable { .. } => AlertEvent::Failure,
            Subject::ConfigInvalid { .. } => AlertEvent::ConfigInvalid,
            Subject::Summary(_) => AlertEvent::Summary,
            Subject::VerifyFailed { .. } => AlertEvent::VerifyFailed,
            Subject::ReplicaBehind { .. } => AlertEvent::ReplicaBehind,
        })
    }

    /// The `event` label of metrics and the catalog.
    pub fn event_label(&self) -> &'static str {
        match (&self.subject, self.event()) {
            (Subject::JobStarted { .. }, _) => "start",
            (Subject::Test, _) => "test",
            (_, Some(e)) => e.as_str(),
            (_, None) => "other",
        }
    }

    /// True when `sink` should receive this alert.
    pub fn wanted_by(&self, sink: &AlertSink) -> bool {
        match (&self.subject, self.event()) {
            // The healthchecks start ping goes to every healthchecks sink that hears job ends.
            (Subject::JobStarted { .. }, _) => {
                sink.kind == SinkKind::Healthchecks
                    && (sink.on.contains(&AlertEvent::Success)
                        || sink.on.contains(&AlertEvent::Failure))
            }
            (Subject::Test, _) => true,
            (_, Some(e)) => sink.on.contains(&e),
            (_, None) => false,
        }
    }

    /// A short title with the outcome (chat sinks).
    pub fn title(&self) -> String {
        let resolved = self.state == AlertState::Resolved;
        let reminder = if self.state == AlertState::Reminder {
            " (still)"
        } else {
            ""
        };
        let t = match &self.subject {
            Subject::JobStarted { .. } => "▶️ Patina backup started".to_string(),
            Subject::Job(j) => match j.status() {
                JobStatus::Success => "✅ Patina backup completed".into(),
                JobStatus::PartialFailure => "⚠️ Patina backup partially failed".into(),
                JobStatus::Failure => "❌ Patina backup failed".into(),
            },
            Subject::Duration { finished, .. } => {
                if *finished {
                    "⏱️ Patina backup took too long".into()
                } else {
                    "⏱️ Patina backup is taking too long".into()
                }
            }
            Subject::SizeAnomaly { database, .. } => format!("📉 Unusual backup size: {database}"),
            Subject::SchemaChanged { database, .. } => format!("🧬 Schema changed: {database}"),
            Subject::Slow { database, .. } => format!("🐢 Slow backup: {database}"),
            Subject::Stale { database, .. } if resolved => {
                format!("✅ Backups current again: {database}")
            }
            Subject::Stale { database, .. } => format!("🕰️ Backups stale: {database}"),
            Subject::ArchiveFailed { week, .. } if resolved => {
                format!("✅ Weekly archive {week} no longer waiting")
            }
            Subject::ArchiveFailed { week, .. } => format!("❌ Weekly archive {week} failed"),
            Subject::Drift { .. } => "❗ Committed backups vanished from storage".into(),
            Subject::StorageUnreachable { .. } if resolved => "✅ Storage reachable again".into(),
            Subject::StorageUnreachable { .. } => "❌ Patina cannot reach its storage".into(),
            Subject::ConfigInvalid { .. } if resolved => "✅ Patina policy valid again".into(),
            Subject::ConfigInvalid { .. } => "❌ Patina policy reload rejected".into(),
            Subject::Summary(_) => "📋 Patina daily summary".into(),
            Subject::VerifyFailed { database, .. } if resolved => {
                format!("✅ Restore drill passed again: {database}")
            }
            Subject::VerifyFailed { database, .. } => {
                format!("❌ Restore drill failed: {database}")
            }
            Subject::ReplicaBehind { replica, .. } if resolved => {
                format!("✅ Replica caught up: {replica}")
            }
            Subject::ReplicaBehind { replica, .. } => format!("🛰️ Replica behind: {replica}"),
            Subject::Test => "🔔 Patina test alert".into(),
        };
        format!("{t}{reminder}")
    }

    /// True when the alert reports something wrong (red), false when good news (green).
    pub fn is_bad(&self) -> bool {
        match &self.subject {
            Subject::Job(j) => j.failed() > 0,
            Subject::Summary(d) => !d.abnormal.is_empty() || d.failed_jobs > 0,
            Subject::JobStarted { .. } | Subject::Test => false,
            // A notice, not a problem: the application changed its schema.
            Subject::SchemaChanged { .. } => false,
            _ => self.state != AlertState::Resolved,
        }
    }

    /// One line for logs, plain text sinks and fallbacks.
    pub fn headline(&self) -> String {
        let resolved = self.state == AlertState::Resolved;
        let still = if self.state == AlertState::Reminder {
            "still: "
        } else {
            ""
        };
        let text = match &self.subject {
            Subject::JobStarted { job_id, databases } => {
                format!(
                    "backup job {job_id} started ({} databases)",
                    databases.len()
                )
            }
            Subject::Job(j) => match j.status() {
                JobStatus::Success => format!(
                    "backup completed: {}/{} databases",
                    j.successful(),
                    j.results.len()
                ),
                JobStatus::PartialFailure => format!(
                    "backup partially failed: {} of {} databases failed ({})",
                    j.failed(),
                    j.results.len(),
                    j.failed_names().join(", ")
                ),
                JobStatus::Failure => format!(
                    "backup failed: all {} databases failed ({})",
                    j.results.len(),
                    j.failed_names().join(", ")
                ),
            },
            Subject::Duration {
                job_id,
                elapsed,
                limit,
                finished,
                ..
            } => format!(
                "backup job {job_id} {} {} (limit {})",
                if *finished {
                    "took"
                } else {
                    "has been running for"
                },
                human::duration(*elapsed),
                human::duration(*limit)
            ),
            Subject::SizeAnomaly {
                database,
                size,
                median,
                deviation,
                ..
            } => format!(
                "{database}: dump size {} is {} the median {} of its recent dumps ({:+.0}%)",
                human::bytes(*size),
                if *deviation < 0.0 { "below" } else { "above" },
                human::bytes(*median),
                deviation * 100.0
            ),
            Subject::SchemaChanged {
                database, change, ..
            } => {
                format!("{database}: the schema changed since the previous backup ({change})")
            }
            Subject::Slow {
                database,
                duration,
                median,
                runs,
                ..
            } => format!(
                "{database}: the backup took {}, over {SLOW_FACTOR}× the median {} of its last {runs} successful runs",
                human::duration(*duration),
                human::duration(*median),
            ),
            Subject::Stale {
                database,
                last_success,
                ..
            } if resolved => format!(
                "{database}: backups are current again (last committed {})",
                last_success.map_or("never".into(), timestamp)
            ),
            Subject::Stale {
                database,
                last_success,
                window,
            } => format!(
                "{database}: no committed backup within {} (last: {})",
                human::duration(window.to_std().unwrap_or_default()),
                last_success.map_or("never".into(), timestamp)
            ),
            Subject::ArchiveFailed { week, error } if resolved => {
                format!("weekly archive {week}: no longer waiting ({error})")
            }
            Subject::ArchiveFailed { week, error } => {
                format!("weekly archive {week} failed: {error}")
            }
            Subject::Drift { keys } => format!(
                "{} committed backup(s) vanished from storage: {}",
                keys.len(),
                keys.join(", ")
            ),
            Subject::StorageUnreachable { location, .. } if resolved => {
                format!("{location}: storage is reachable again")
            }
            Subject::StorageUnreachable { location, error } => format!(
                "{location}: storage cannot be listed — no backup can be committed and nothing is pruned until it can: {error}"
            ),
            Subject::ConfigInvalid { file, .. } if resolved => {
                format!("{file}: the policy file is valid again and was reloaded")
            }
            Subject::ConfigInvalid { file, problems } => format!(
                "{file}: reload rejected, the previous policy keeps running: {}",
                problems.first().map(String::as_str).unwrap_or("invalid")
            ),
            Subject::Summary(d) => format!(
                "daily summary: {} databases, {} jobs in the last 24h ({} with failures), {} problems",
                d.databases.len(),
                d.jobs,
                d.failed_jobs,
                d.abnormal.len()
            ),
            Subject::VerifyFailed {
                database, point, ..
            } if resolved => format!("{database}: the restore drill of {point} passed"),
            Subject::VerifyFailed {
                database,
                point,
                problems,
            } => format!(
                "{database}: the restore drill of {point} failed — this backup may not restore: {}",
                problems.join("; ")
            ),
            Subject::ReplicaBehind { replica, .. } if resolved => {
                format!("replica {replica}: caught up with the primary")
            }
            Subject::ReplicaBehind {
                replica,
                missing,
                since,
                error,
            } => {
                let lacks = match missing {
                    Some(n) => format!("lacks {n} committed object(s) of the primary"),
                    None => "cannot be listed".to_string(),
                };
                let why = error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                format!(
                    "replica {replica} {lacks} since {} — backups still commit to the primary, but this copy is not current{why}",
                    timestamp(*since)
                )
            }
            Subject::Test => "test message from patina: this sink is wired correctly".into(),
        };
        format!("{still}{text}")
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A job began (healthchecks `/start`).
    JobStarted {
        job_id: String,
        databases: Vec<String>,
    },
    /// A job ended (failure or success).
    Job(JobSummary),
    /// A job ran longer than `alerts.max_duration`.
    Duration {
        job_id: String,
        databases: Vec<String>,
        started_at: DateTime<Utc>,
        elapsed: std::time::Duration,
        limit: std::time::Duration,
        /// False while the job is still running.
        finished: bool,
    },
    /// A dump far off the recent median size.
    SizeAnomaly {
        database: String,
        job_id: String,
        key: String,
        size: u64,
        median: u64,
        /// Relative: -0.6 is 60% smaller.
        deviation: f64,
        limit: f64,
    },
    /// A new dump's schema differs from the previous dump's (a one-shot notice).
    SchemaChanged {
        database: String,
        job_id: String,
        /// The new dump's data key, and the previous one's.
        key: String,
        previous_key: String,
        change: SchemaChange,
    },
    /// A database's backup took more than [`SLOW_FACTOR`] × the median of its last
    /// successful runs, and more than [`SLOW_FLOOR`].
    Slow {
        database: String,
        job_id: String,
        key: String,
        duration: std::time::Duration,
        median: std::time::Duration,
        /// How many earlier runs the median is over.
        runs: usize,
    },
    /// No committed backup within the stale window.
    Stale {
        database: String,
        last_success: Option<DateTime<Utc>>,
        window: chrono::Duration,
    },
    /// A weekly archive failed, or waited too long for running backups.
    ArchiveFailed { week: String, error: String },
    /// Committed backups vanished from storage (data keys).
    Drift { keys: Vec<String> },
    /// Storage cannot be listed: no backup can be committed and nothing is pruned (a
    /// persisting condition, under the `failure` event).
    StorageUnreachable { location: String, error: String },
    /// A reload was rejected; the first problems, each with file:line:column.
    ConfigInvalid { file: String, problems: Vec<String> },
    /// The daily digest.
    Summary(Digest),
    /// A restore drill of one restore point failed (or, resolved, a later drill of the
    /// database's restore points passed).
    VerifyFailed {
        database: String,
        /// Where the restore point lives (`daily/…` or `weekly/….tar:member`).
        point: String,
        problems: Vec<String>,
    },
    /// A replica has lacked objects of the primary (or could not be synced) for longer than
    /// `tick` × 10 (DESIGN §15); resolved when a sync leaves it with nothing missing.
    ReplicaBehind {
        replica: String,
        /// Objects it lacks, as of its last sync; `None` when it could not be listed.
        missing: Option<u64>,
        /// Since when it has been behind.
        since: DateTime<Utc>,
        /// The last sync's problem, if any.
        error: Option<String>,
    },
    /// `patina alert test`.
    Test,
}

/// `slow`: a backup slower than this many times the median of its recent runs…
pub const SLOW_FACTOR: u32 = 3;
/// …and slower than this.
pub const SLOW_FLOOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What changed between two dumps' schemas. A list is `None` when the older dump's record
/// cannot say (it was written before Patina kept per-table schema hashes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaChange {
    pub added: Option<Vec<String>>,
    pub dropped: Option<Vec<String>>,
    pub altered: Option<Vec<String>>,
}

impl std::fmt::Display for SchemaChange {
    /// `added: a, b; dropped: none; altered: unknown`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &Option<Vec<String>>| match v {
            None => "unknown".to_string(),
            Some(v) if v.is_empty() => "none".to_string(),
            Some(v) => v.join(", "),
        };
        write!(
            f,
            "added: {}; dropped: {}; altered: {}",
            list(&self.added),
            list(&self.dropped),
            list(&self.altered)
        )
    }
}

/// A dump's schema as the history records it: its schema hash and, when known, each table
/// (and view) with its own schema hash (`None` when only the name is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSchema {
    pub key: String,
    pub schema_hash: String,
    pub tables: Option<BTreeMap<String, Option<String>>>,
}

/// A finished job, as alerts show it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job_id: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// In the order the databases were served.
    pub results: Vec<DbOutcome>,
}

/// One database's outcome in a job: the stored size, or the error.
#[derive(Debug, Clone, PartialEq)]
pub struct DbOutcome {
    pub database: String,
    pub result: Result<u64, String>,
    /// The stored dump's key, when it succeeded (for the size history).
    pub key: Option<String>,
}

/// What alerting reads from, and records in, the world outside it — the size history of dumps,
/// the newest backups, the day's jobs, the record of each delivery attempt — behind one narrow
/// interface, so that alerts know neither the engine nor the catalog. The composition root
/// implements it over the catalog (`daemon::CatalogHistory`). Errors are messages: alerting
/// only logs them and carries on.
pub trait AlertHistory: Send + Sync {
    /// Stored sizes of `database`'s newest `n` dumps, newest first, leaving out `except`.
    fn recent_dump_sizes(
        &self,
        database: &str,
        except: Option<&str>,
        n: usize,
    ) -> Result<Vec<u64>, String>;
    /// Each database's newest committed backup: when, and its stored size.
    fn latest_backups(&self) -> Result<BTreeMap<String, (DateTime<Utc>, u64)>, String>;
    /// The schema of the dump `key` of `database` and of the dump before it; `None` when the
    /// dump is unknown.
    fn dump_schemas(
        &self,
        database: &str,
        key: &str,
    ) -> Result<Option<(DumpSchema, Option<DumpSchema>)>, String>;
    /// How long the successful backup that wrote `key` took, and the durations of up to `n`
    /// successful backups of `database` before it, newest first.
    fn run_durations(
        &self,
        database: &str,
        key: &str,
        n: usize,
    ) -> Result<Option<(std::time::Duration, Vec<std::time::Duration>)>, String>;
    /// Jobs started at or after `since`: how many, and how many had a failed database.
    fn jobs_since(&self, since: DateTime<Utc>) -> Result<(usize, usize), String>;
    /// One delivery attempt, for the record.
    fn record_attempt(&self, attempt: &DeliveryAttempt<'_>) -> Result<(), String>;
}

/// One attempt to deliver an alert to a sink.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt<'a> {
    pub sink: &'a str,
    pub sink_kind: &'a str,
    pub event: &'a str,
    pub state: &'a str,
    pub dedup_key: &'a str,
    pub attempt: u32,
    /// `success`, `retry` (another attempt follows) or `failure` (given up).
    pub result: &'a str,
    pub status_code: Option<u16>,
    pub error: Option<&'a str>,
    pub queued_at: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
}

/// `success` | `partial_failure` | `failure` (the webhook's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Success,
    PartialFailure,
    Failure,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::PartialFailure => "partial_failure",
            JobStatus::Failure => "failure",
        }
    }
}

impl JobSummary {
    pub fn successful(&self) -> usize {
        self.results.iter().filter(|r| r.result.is_ok()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.successful()
    }

    /// `(database, error)` of every failed database, in job order.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.results.iter().filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| (r.database.as_str(), e.as_str()))
        })
    }

    pub fn failed_names(&self) -> Vec<&str> {
        self.failures().map(|(db, _)| db).collect()
    }

    pub fn total_size(&self) -> u64 {
        self.results
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .sum()
    }

    pub fn duration(&self) -> std::time::Duration {
        (self.completed_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }

    pub fn status(&self) -> JobStatus {
        match (self.successful(), self.failed()) {
            (_, 0) => JobStatus::Success,
            (0, _) => JobStatus::Failure,
            _ => JobStatus::PartialFailure,
        }
    }
}

/// The daily digest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Digest {
    pub databases: Vec<DigestRow>,
    /// Jobs started in the last 24 hours, and how many had failed databases.
    pub jobs: usize,
    pub failed_jobs: usize,
    /// Anything abnormal now (active conditions), one line each.
    pub abnormal: Vec<String>,
}

/// One database in the digest.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestRow {
    pub database: String,
    pub last_success: Option<DateTime<Utc>>,
    pub size: Option<u64>,
    /// Relative change of the newest dump against the median of the ones before.
    pub trend: Option<f64>,
}

impl DigestRow {
    /// `+3%`, `-60%`, `stable` (within 1%), or `—` without history.
    pub fn trend_text(&self) -> String {
        match self.trend {
            None => "—".into(),
            Some(t) if t.abs() < 0.01 => "stable".into(),
            Some(t) => format!("{:+.0}%", t * 100.0),
        }
    }
}

/// An HTTP request a sink wants sent: appended to the sink's URL, with this body.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Appended to the sink URL (`/start`, `/fail` for healthchecks; empty otherwise).
    pub path: &'static str,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(serde_json::Value),
    Text(String),
}

/// The request for `alert` on a sink of `kind`; `None` when that kind has nothing to send.
pub fn render(kind: SinkKind, alert: &Alert) -> Option<Outgoing> {
    match kind {
        SinkKind::Webhook => webhook::render(alert),
        SinkKind::Discord => discord::render(alert),
        SinkKind::Slack => slack::render(alert),
        SinkKind::Healthchecks => healthchecks::render(alert),
    }
}

/// RFC 3339 in UTC with whole seconds and `Z` (`2024-12-08T03:01:30Z`).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_follows_the_results() {
        let t = "2026-11-22T03:00:00Z".parse().unwrap();
        let job = |results: Vec<Result<u64, String>>| JobSummary {
            job_id: "j".into(),
            started_at: t,
            completed_at: t,
            results: results
                .into_iter()
                .enumerate()
                .map(|(i, result)| DbOutcome {
                    database: format!("db{i}"),
                    result,
                    key: None,
                })
                .collect(),
        };
        assert_eq!(job(vec![Ok(1), Ok(2)]).status(), JobStatus::Success);
        assert_eq!(
            job(vec![Ok(1), Err("x".into())]).status(),
            JobStatus::PartialFailure
        );
        assert_eq!(job(vec![Err("x".into())]).status(), JobStatus::Failure);
        assert_eq!(job(vec![Ok(1), Ok(2)]).total_size(), 3);
    }
}
