//! The [`Alerts`] handle: raising events (routing, de-duplication through the pure
//! [`Tracker`]), the delivery queue and its background worker, retries, the catalog record and
//! the counters behind `patina_alerts_sent_total{sink,event,result}`.
//!
//! Raising is synchronous and cheap: it never waits on the network, so a slow or dead endpoint
//! cannot delay or fail a backup. Each delivery (one alert to one sink) is its own task: a
//! hanging sink delays only its own messages. A delivery is tried up to
//! [`DeliveryConfig::attempts`] times, each bounded by [`DeliveryConfig::timeout`]; between tries
//! it waits `backoff × 2^(n-1)` (capped at `max_backoff`) scaled by a random factor in
//! [0.5, 1.5), or what a 429's `Retry-After` asks (capped at `max_retry_after`). Timeouts,
//! connection errors, 408, 429 and 5xx are retried; other 4xx are final (a wrong URL or token
//! does not get better). At most `queue` deliveries are pending; beyond that new ones are
//! dropped and counted with `result="dropped"`.
//!
//! Failure de-duplication: a job alert goes out when a database in it starts failing (or the
//! job is a success); retries of the same failing databases stay quiet until the daily
//! reminder, and the first success after failures is sent to `failure` sinks too (a recovery).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::conditions::{self, Tracker};
use super::{
    Alert, AlertHistory, AlertState, Body, DeliveryAttempt, Digest, DigestRow, JobSummary, Subject,
};
use crate::clock::Clock;
use crate::plan::Plan;
use crate::policy::{AlertSink, Policy};

/// How deliveries are made. The defaults give 3 tries over about a minute.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Tries per delivery (at least 1).
    pub attempts: u32,
    /// The wait before the second try; doubles for each further one.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Per request (connect, send, response).
    pub timeout: Duration,
    /// The longest `Retry-After` honoured; longer requests wait this long.
    pub max_retry_after: Duration,
    /// Deliveries pending at most; more are dropped (and counted).
    pub queue: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempts: 3,
            backoff: Duration::from_secs(20),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
            queue: 1024,
        }
    }
}

/// One series of `patina_alerts_sent_total`: final outcomes of deliveries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SentCount {
    /// The `[[alert]]` name.
    pub sink: String,
    /// An [`AlertEvent`](crate::policy::AlertEvent) name, or `start` (healthchecks start
    /// pings).
    pub event: &'static str,
    /// `success`, `failure` (given up after retries, or a final 4xx) or `dropped` (queue full).
    pub result: &'static str,
    pub count: u64,
}

/// The outcome of `patina alert test` for one sink: the HTTP status, or why there was none.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub sink: String,
    pub kind: &'static str,
    pub result: Result<u16, String>,
}

/// The handle events are raised through; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    policy: Mutex<Arc<Policy>>,
    watch: Mutex<Watch>,
    tx: mpsc::Sender<Delivery>,
    closed: AtomicBool,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the worker and the delivery tasks share with the handle.
struct Shared {
    config: DeliveryConfig,
    clock: Clock,
    history: Arc<dyn AlertHistory>,
    counters: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// Deliveries queued or in flight.
    pending: AtomicUsize,
    jitter_seq: AtomicU64,
}

/// The state behind de-duplication and the tick's evaluations.
struct Watch {
    tracker: Tracker,
    running: BTreeMap<String, (DateTime<Utc>, Vec<String>)>,
    first_seen: BTreeMap<String, DateTime<Utc>>,
    last_summary: Option<DateTime<Utc>>,
}

struct Delivery {
    sink: AlertSink,
    alert: Arc<Alert>,
    queued_at: DateTime<Utc>,
}

/// `[alerts] renotify` as the tracker's reminder interval.
fn renotify_of(policy: &Policy) -> Option<chrono::Duration> {
    policy
        .alerts
        .renotify
        .and_then(|r| chrono::Duration::from_std(r).ok())
}

impl Alerts {
    /// Start the delivery worker (needs a tokio runtime) for `policy`'s sinks.
    pub fn start(
        policy: Arc<Policy>,
        history: Arc<dyn AlertHistory>,
        clock: Clock,
        config: DeliveryConfig,
    ) -> Alerts {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let reminder = renotify_of(&policy);
        let shared = Arc::new(Shared {
            config,
            clock,
            history,
            counters: Mutex::new(BTreeMap::new()),
            pending: AtomicUsize::new(0),
            jitter_seq: AtomicU64::new(0),
        });
        let worker = tokio::spawn(worker(Arc::clone(&shared), rx));
        Alerts {
            inner: Arc::new(Inner {
                shared,
                policy: Mutex::new(policy),
                watch: Mutex::new(Watch {
                    tracker: Tracker::new(reminder),
                    running: BTreeMap::new(),
                    first_seen: BTreeMap::new(),
                    last_summary: None,
                }),
                tx,
                closed: AtomicBool::new(false),
                worker: Mutex::new(Some(worker)),
            }),
        }
    }

    /// Use a reloaded policy's sinks and thresholds from now on (queued deliveries keep the
    /// sink they were routed to).
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.watch().tracker.reminder = renotify_of(&policy);
        *self.inner.policy.lock().expect("alerts policy") = policy;
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.inner.policy.lock().expect("alerts policy"))
    }

    fn now(&self) -> DateTime<Utc> {
        (self.inner.shared.clock)()
    }

    fn watch(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.inner.watch.lock().expect("alerts state")
    }

    /// A job began: healthchecks `/start` pings, and the job is watched for `duration`.
    pub fn job_started(&self, job_id: &str, databases: &[String]) {
        let now = self.now();
        self.watch()
            .running
            .insert(job_id.to_string(), (now, databases.to_vec()));
        self.raise(Alert::new(
            Subject::JobStarted {
                job_id: job_id.to_string(),
                databases: databases.to_vec(),
            },
            AlertState::Firing,
            &format!("start:{job_id}"),
            now,
        ));
    }

    /// A job ended: its failure or success alert (de-duplicated per failing database), a
    /// `duration` alert if it ran too long (unless already sent while it ran), a
    /// `size_anomaly` alert for each dump far off its database's recent median, a
    /// `schema_changed` notice for each dump whose schema differs from the dump before it, and a
    /// `slow` alert for each database whose backup took far longer than its recent runs.
    pub fn job_finished(&self, job: &JobSummary) {
        let now = self.now();
        let policy = self.policy();
        // Size, schema and duration history first, outside the state lock.
        let mut anomalies = Vec::new();
        let mut notices = Vec::new();
        for r in &job.results {
            let (Ok(size), Some(key)) = (&r.result, &r.key) else {
                continue;
            };
            let history = self.inner.shared.history.recent_dump_sizes(
                &r.database,
                Some(key),
                conditions::SIZE_HISTORY,
            );
            match history {
                Ok(history) => {
                    if let Some((median, deviation)) =
                        conditions::size_anomaly(*size, &history, policy.alerts.size_deviation)
                    {
                        anomalies.push(Subject::SizeAnomaly {
                            database: r.database.clone(),
                            job_id: job.job_id.clone(),
                            key: key.clone(),
                            size: *size,
                            median,
                            deviation,
                            limit: policy.alerts.size_deviation,
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "size check skipped"),
            }
            match self.inner.shared.history.dump_schemas(&r.database, key) {
                Ok(Some((new, Some(previous)))) => {
                    if let Some(change) = conditions::schema_change(&new, &previous) {
                        notices.push(Subject::SchemaChanged {
                            database: r.database.clone(),
                            job_id: job.job_id.clone(),
                            key: key.clone(),
                            previous_key: previous.key,
                            change,
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "schema comparison skipped"),
            }
            match self.inner.shared.history.run_durations(
                &r.database,
                key,
                conditions::SLOW_HISTORY,
            ) {
                Ok(Some((duration, history))) => {
                    if let Some(median) = conditions::slow(duration, &history) {
                        notices.push(Subject::Slow {
                            database: r.database.clone(),
                            job_id: job.job_id.clone(),
                            key: key.clone(),
                            duration,
                            median,
                            runs: history.len().min(conditions::SLOW_HISTORY),
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "slow check skipped"),
            }
        }
        let mut out = Vec::new();
        {
            let mut w = self.watch();
            w.running.remove(&job.job_id);
            if job.results.is_empty() {
                // Every database of it was handed over to another node: nothing to say.
                return;
            }
            // Failing databases are conditions: a job alert only when one starts failing.
            let mut newly_failing = false;
            let mut recovered = false;
            for r in &job.results {
                let key = format!("failing:{}", r.database);
                match &r.result {
                    Err(_) => {
                        newly_failing |= w
                            .tracker
                            .raise(&key, Subject::Job(job.clone()), now)
                            .is_some();
                    }
                    Ok(_) => recovered |= w.tracker.clear(&key, now).is_some(),
                }
            }
            let key = format!("job:{}", job.job_id);
            let mut alert = Alert::new(Subject::Job(job.clone()), AlertState::Firing, &key, now);
            if job.failed() == 0 {
                if recovered {
                    alert.state = AlertState::Resolved;
                }
                out.push(alert);
            } else if newly_failing {
                out.push(alert);
            } else {
                tracing::info!(job = %job.job_id, failed = ?job.failed_names(), "failure alert suppressed: these databases were already failing");
            }
            if conditions::over_time(job.started_at, job.completed_at, policy.alerts.max_duration) {
                let subject = Subject::Duration {
                    job_id: job.job_id.clone(),
                    databases: job.results.iter().map(|r| r.database.clone()).collect(),
                    started_at: job.started_at,
                    elapsed: job.duration(),
                    limit: policy.alerts.max_duration,
                    finished: true,
                };
                out.extend(
                    w.tracker
                        .once(&format!("duration:{}", job.job_id), subject, now),
                );
            }
            for subject in anomalies {
                let Subject::SizeAnomaly { key, .. } = &subject else {
                    continue;
                };
                let key = format!("size_anomaly:{key}");
                out.extend(w.tracker.once(&key, subject, now));
            }
            // One-shot notices, once per dump.
            for subject in notices {
                let key = match &subject {
                    Subject::SchemaChanged { key, .. } => format!("schema_changed:{key}"),
                    Subject::Slow { key, .. } => format!("slow:{key}"),
                    _ => continue,
                };
                out.extend(w.tracker.once(&key, subject, now));
            }
        }
        for a in out {
            self.raise(a);
        }
    }

    /// A reconcile pass planned: drift (once per vanished key, all new keys in one alert) and
    /// weekly archives waiting for running backups longer than `alerts.max_duration` past the
    /// archive's fire time (`archive_failed`, resolved when the archive proceeds).
    pub fn plan_observed(&self, plan: &Plan) {
        let now = self.now();
        let policy = self.policy();
        let mut out = Vec::new();
        {
            let mut w = self.watch();
            let new_keys: Vec<String> = plan
                .drift
                .iter()
                .filter(|d| {
                    w.tracker
                        .once(&format!("drift:{}", d.data_key), Subject::Test, now)
                        .is_some()
                })
                .map(|d| d.data_key.clone())
                .collect();
            if let Some(first) = new_keys.first() {
                let key = format!("drift:{first}+{}", new_keys.len());
                out.push(Alert::new(
                    Subject::Drift { keys: new_keys },
                    AlertState::Firing,
                    &key,
                    now,
                ));
            }
            let fire = policy.retention.archive.latest_at_or_before(now);
            let waited_too_long =
                fire.is_some_and(|f| conditions::over_time(f, now, policy.alerts.max_duration));
            let waiting: Vec<(String, Subject)> = plan
                .deferred
                .iter()
                .filter(|_| waited_too_long)
                .filter(|d| d.reason.starts_with("waiting for"))
                .filter_map(|d| {
                    let week = d.what.strip_prefix("archive of ")?;
                    let since = fire?;
                    Some((
                        format!("archive_wait:{week}"),
                        Subject::ArchiveFailed {
                            week: week.to_string(),
                            error: format!(
                                "still not built {} after the archive schedule fired: {}",
                                crate::human::duration((now - since).to_std().unwrap_or_default()),
                                d.reason
                            ),
                        },
                    ))
                })
                .collect();
            out.extend(w.tracker.observe("archive_wait:", waiting, now));
        }
        for a in out {
            self.raise(a);
        }
    }

    /// A weekly archive failed; alerts once per week until it is built
    /// ([`Alerts::archive_committed`]).
    pub fn archive_failed(&self, week: &str, error: &str) {
        let now = self.now();
        let subject = Subject::ArchiveFailed {
            week: week.to_string(),
            error: error.to_string(),
        };
        let alert = self
            .watch()
            .tracker
            .raise(&format!("archive:{week}"), subject, now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A weekly archive was built: a failure of that week resolves.
    pub fn archive_committed(&self, week: &str) {
        let now = self.now();
        let alert = self.watch().tracker.clear(&format!("archive:{week}"), now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A restore drill of `database` failed: `verify_failed`, once until a drill of it passes
    /// ([`Alerts::verify_passed`]), with reminders while it lasts.
    pub fn verify_failed(&self, database: &str, point: &str, problems: &[String]) {
        let now = self.now();
        let subject = Subject::VerifyFailed {
            database: database.to_string(),
            point: point.to_string(),
            problems: problems.to_vec(),
        };
        let alert = self
            .watch()
            .tracker
            .raise(&format!("verify:{database}"), subject, now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// Every drilled restore point of `database` passed: a failed drill before resolves.
    pub fn verify_passed(&self, database: &str) {
        let now = self.now();
        let alert = self
            .watch()
            .tracker
            .clear(&format!("verify:{database}"), now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A replica has been behind since `since` for longer than its bound:
    /// `replica_behind`, once until it catches up ([`Alerts::replica_caught_up`]), with
    /// reminders while it lasts.
    pub fn replica_behind(
        &self,
        replica: &str,
        missing: Option<u64>,
        since: DateTime<Utc>,
        error: Option<&str>,
    ) {
        let now = self.now();
        let subject = Subject::ReplicaBehind {
            replica: replica.to_string(),
            missing,
            since,
            error: error.map(str::to_string),
        };
        let alert = self
            .watch()
            .tracker
            .raise(&format!("replica:{replica}"), subject, now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A sync left `replica` with nothing missing: a `replica_behind` before resolves.
    pub fn replica_caught_up(&self, replica: &str) {
        let now = self.now();
        let alert = self
            .watch()
            .tracker
            .clear(&format!("replica:{replica}"), now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A reload was rejected: `config_invalid` with the first problems (each already carries
    /// file:line:column), once until a reload succeeds.
    pub fn config_invalid(&self, file: &str, message: &str) {
        let now = self.now();
        let problems: Vec<String> = message
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(5)
            .map(str::to_string)
            .collect();
        let subject = Subject::ConfigInvalid {
            file: file.to_string(),
            problems,
        };
        let alert = self.watch().tracker.raise("config_invalid", subject, now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A reload succeeded: a rejected one before it resolves.
    pub fn config_valid(&self) {
        let now = self.now();
        let alert = self.watch().tracker.clear("config_invalid", now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// Storage could not be listed: raised once while it lasts (reminded, then resolved).
    pub fn storage_unreachable(&self, location: &str, error: &str) {
        let now = self.now();
        let subject = Subject::StorageUnreachable {
            location: location.to_string(),
            error: error.to_string(),
        };
        let alert = self.watch().tracker.raise("storage", subject, now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// A listing succeeded: an outage before it resolves.
    pub fn storage_reachable(&self) {
        let now = self.now();
        let alert = self.watch().tracker.clear("storage", now);
        if let Some(a) = alert {
            self.raise(a);
        }
    }

    /// The tick's evaluation: jobs still running past `max_duration`, stale databases, the
    /// daily summary when its schedule fired, reminders of persisting conditions.
    pub fn evaluate(&self) {
        let now = self.now();
        let policy = self.policy();
        let latest = match self.inner.shared.history.latest_backups() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "stale check skipped");
                None
            }
        };
        let mut out = Vec::new();
        let summary_due;
        {
            let mut w = self.watch();
            let running: Vec<_> = w
                .running
                .iter()
                .filter(|(_, (started, _))| {
                    conditions::over_time(*started, now, policy.alerts.max_duration)
                })
                .map(|(id, (started, dbs))| (id.clone(), *started, dbs.clone()))
                .collect();
            for (job_id, started_at, databases) in running {
                let subject = Subject::Duration {
                    job_id: job_id.clone(),
                    databases,
                    started_at,
                    elapsed: (now - started_at).to_std().unwrap_or_default(),
                    limit: policy.alerts.max_duration,
                    finished: false,
                };
                out.extend(w.tracker.once(&format!("duration:{job_id}"), subject, now));
            }
            if let Some(latest) = &latest {
                let mut stale = Vec::new();
                for db in policy.databases.iter().filter(|d| d.enabled) {
                    let first_seen = *w.first_seen.entry(db.name.clone()).or_insert(now);
                    let Some(window) =
                        conditions::stale_window(&db.schedule, policy.alerts.stale_after, now)
                    else {
                        continue;
                    };
                    let last = latest.get(&db.name).map(|(at, _)| *at);
                    if conditions::is_stale(last.unwrap_or(first_seen), window, now) {
                        stale.push((
                            format!("stale:{}", db.name),
                            Subject::Stale {
                                database: db.name.clone(),
                                last_success: last,
                                window,
                            },
                        ));
                    }
                }
                out.extend(w.tracker.observe("stale:", stale, now));
            }
            summary_due = match policy
                .alerts
                .daily_summary
                .as_ref()
                .and_then(|s| s.latest_at_or_before(now))
            {
                Some(fire) => {
                    let due = w.last_summary.is_some_and(|last| fire > last);
                    if w.last_summary.is_none_or(|last| fire > last) {
                        w.last_summary = Some(fire);
                    }
                    due
                }
                None => false,
            };
            out.extend(w.tracker.reminders(now));
        }
        if summary_due {
            match self.digest(&policy, now, latest.unwrap_or_default()) {
                Ok(d) => out.push(Alert::new(
                    Subject::Summary(d),
                    AlertState::Firing,
                    &format!("summary:{}", now.format("%Y-%m-%d")),
                    now,
                )),
                Err(e) => tracing::warn!(error = %e, "daily summary skipped"),
            }
        }
        for a in out {
            self.raise(a);
        }
    }

    fn digest(
        &self,
        policy: &Policy,
        now: DateTime<Utc>,
        latest: BTreeMap<String, (DateTime<Utc>, u64)>,
    ) -> Result<Digest, String> {
        let history = &self.inner.shared.history;
        let mut databases = Vec::new();
        for db in policy.databases.iter().filter(|d| d.enabled) {
            let sizes = history.recent_dump_sizes(&db.name, None, conditions::SIZE_HISTORY + 1)?;
            let last = latest.get(&db.name);
            databases.push(DigestRow {
                database: db.name.clone(),
                last_success: last.map(|(at, _)| *at),
                size: last.map(|(_, s)| *s),
                trend: sizes
                    .split_first()
                    .and_then(|(newest, rest)| conditions::trend(*newest, rest)),
            });
        }
        let (jobs, failed_jobs) = history.jobs_since(now - chrono::Duration::hours(24))?;
        let abnormal = self
            .watch()
            .tracker
            .active()
            .map(|(key, subject, since)| {
                let mut a = Alert::new(subject.clone(), AlertState::Firing, key, since);
                a.since = Some(since);
                match subject {
                    Subject::Job(_) => format!(
                        "{} failing since {}",
                        key.trim_start_matches("failing:"),
                        super::timestamp(since)
                    ),
                    _ => a.headline(),
                }
            })
            .collect();
        Ok(Digest {
            databases,
            jobs,
            failed_jobs,
            abnormal,
        })
    }

    /// Route an alert to the sinks that listen to it and queue the deliveries. Never blocks.
    pub fn raise(&self, alert: Alert) {
        let policy = self.policy();
        tracing::info!(
            event = alert.event_label(),
            state = alert.state.as_str(),
            key = %alert.key,
            "alert: {}",
            alert.headline()
        );
        let alert = Arc::new(alert);
        let recovery = matches!(&alert.subject, Subject::Job(j) if j.failed() == 0)
            && alert.state == AlertState::Resolved;
        for sink in &policy.sinks {
            let wanted = alert.wanted_by(sink)
                || (recovery && sink.on.contains(&crate::policy::AlertEvent::Failure));
            if !wanted {
                continue;
            }
            let shared = &self.inner.shared;
            if self.inner.closed.load(Ordering::SeqCst) {
                continue;
            }
            if shared.pending.fetch_add(1, Ordering::SeqCst) >= shared.config.queue {
                shared.pending.fetch_sub(1, Ordering::SeqCst);
                shared.count(&sink.name, alert.event_label(), "dropped");
                tracing::warn!(sink = %sink.name, event = alert.event_label(), "alert dropped: too many deliveries pending");
                continue;
            }
            let delivery = Delivery {
                sink: sink.clone(),
                alert: Arc::clone(&alert),
                queued_at: self.now(),
            };
            if self.inner.tx.try_send(delivery).is_err() {
                shared.pending.fetch_sub(1, Ordering::SeqCst);
                shared.count(&sink.name, alert.event_label(), "dropped");
                tracing::warn!(sink = %sink.name, event = alert.event_label(), "alert dropped: delivery queue closed or full");
            }
        }
    }

    /// Final delivery outcomes since start, for `patina_alerts_sent_total{sink,event,result}`.
    pub fn sent_counts(&self) -> Vec<SentCount> {
        self.inner
            .shared
            .counters
            .lock()
            .expect("alert counters")
            .iter()
            .map(|((sink, event, result), count)| SentCount {
                sink: sink.clone(),
                event,
                result,
                count: *count,
            })
            .collect()
    }

    /// Deliveries queued or in flight.
    pub fn pending(&self) -> usize {
        self.inner.shared.pending.load(Ordering::SeqCst)
    }

    /// Wait until no delivery is pending, at most `limit`; true when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stop taking alerts, let in-flight deliveries finish for up to `grace`, then abort
    /// them. True when everything was delivered (or given up) in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.closed.store(true, Ordering::SeqCst);
        let drained = self.wait_idle(grace).await;
        let worker = self.inner.worker.lock().expect("alerts worker").take();
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
        if !drained {
            tracing::warn!(
                pending = self.pending(),
                "stopping: alert deliveries still pending were abandoned"
            );
        }
        drained
    }

    /// Send a clearly marked test message to every sink, or the one named, once (no retries,
    /// nothing recorded); `patina alert test`.
    pub async fn send_test(
        policy: &Policy,
        name: Option<&str>,
        timeout: Duration,
    ) -> Vec<TestOutcome> {
        let client = http_client(timeout);
        let alert = Alert::new(Subject::Test, AlertState::Firing, "test", Utc::now());
        let mut out = Vec::new();
        for sink in policy
            .sinks
            .iter()
            .filter(|s| name.is_none_or(|n| n == s.name))
        {
            let result = match super::render(sink.kind, &alert) {
                Some(req) => send(&client, sink, req.path, &req.body, timeout)
                    .await
                    .map_err(|f| f.message),
                None => Err("nothing to send for this sink kind".into()),
            };
            out.push(TestOutcome {
                sink: sink.name.clone(),
                kind: sink.kind.as_str(),
                result,
            });
        }
        out
    }
}

impl Shared {
    fn count(&self, sink: &str, event: &'static str, result: &'static str) {
        *self
            .counters
            .lock()
            .expect("alert counters")
            .entry((sink.to_string(), event, result))
            .or_insert(0) += 1;
    }

    /// The wait before try `attempt + 1`: exponential, capped, with jitter in [0.5, 1.5).
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .config
            .backoff
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
            .min(self.config.max_backoff);
        let seq = self.jitter_seq.fetch_add(1, Ordering::Relaxed);
        let random = std::collections::hash_map::RandomState::new().hash_one(seq);
        let factor = 0.5 + (random % 1000) as f64 / 1000.0;
        base.mul_f64(factor)
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("patina/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

async fn worker(shared: Arc<Shared>, mut rx: mpsc::Receiver<Delivery>) {
    let client = http_client(shared.config.timeout);
    let mut tasks = JoinSet::new();
    while let Some(d) = rx.recv().await {
        while tasks.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        let client = client.clone();
        tasks.spawn(async move {
            deliver(&shared, &client, &d).await;
            shared.pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Send one alert to one sink, with retries; record every attempt; count the outcome.
async fn deliver(shared: &Shared, client: &reqwest::Client, d: &Delivery) {
    let event = d.alert.event_label();
    let Some(req) = super::render(d.sink.kind, &d.alert) else {
        return;
    };
    let attempts = shared.config.attempts.max(1);
    for attempt in 1..=attempts {
        let outcome = send(client, &d.sink, req.path, &req.body, shared.config.timeout).await;
        let last = attempt == attempts;
        let (result, wait) = match &outcome {
            Ok(_) => ("success", None),
            Err(f) if f.retryable && !last => (
                "retry",
                Some(match f.retry_after {
                    Some(r) => r.min(shared.config.max_retry_after),
                    None => shared.backoff(attempt),
                }),
            ),
            Err(_) => ("failure", None),
        };
        let (status, error) = match &outcome {
            Ok(code) => (Some(*code), None),
            Err(f) => (f.status, Some(f.message.as_str())),
        };
        let recorded = shared.history.record_attempt(&DeliveryAttempt {
            sink: &d.sink.name,
            sink_kind: d.sink.kind.as_str(),
            event,
            state: d.alert.state.as_str(),
            dedup_key: &d.alert.key,
            attempt,
            result,
            status_code: status,
            error,
            queued_at: d.queued_at,
            attempted_at: (shared.clock)(),
        });
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "alert delivery not recorded");
        }
        match (result, wait) {
            ("retry", Some(wait)) => {
                tracing::debug!(sink = %d.sink.name, event, attempt, error = error.unwrap_or(""), wait_ms = wait.as_millis() as u64, "alert delivery failed; retrying");
                tokio::time::sleep(wait).await;
            }
            ("success", _) => {
                shared.count(&d.sink.name, event, "success");
                tracing::debug!(sink = %d.sink.name, event, attempt, "alert delivered");
                return;
            }
            _ => {
                shared.count(&d.sink.name, event, "failure");
                tracing::warn!(sink = %d.sink.name, kind = d.sink.kind.as_str(), event, attempts = attempt, error = error.unwrap_or(""), "alert not delivered");
                return;
            }
        }
    }
}

/// Why one request failed; `message` never contains the URL or header values.
struct SendFailure {
    status: Option<u16>,
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
}

async fn send(
    client: &reqwest::Client,
    sink: &AlertSink,
    path: &str,
    body: &Body,
    timeout: Duration,
) -> Result<u16, SendFailure> {
    let base = sink.url.expose();
    let url = if path.is_empty() {
        base.to_string()
    } else {
        format!("{}{path}", base.trim_end_matches('/'))
    };
    let mut req = client.post(url);
    for (name, value) in &sink.headers {
        req = req.header(name.as_str(), value.expose());
    }
    req = match body {
        Body::Json(v) => req.json(v),
        Body::Text(t) => req
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(t.clone()),
    };
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Ok(status.as_u16());
            }
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let code = status.as_u16();
            let text = tokio::time::timeout(timeout, resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let text: String = text.trim().chars().take(200).collect();
            let message = if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            };
            Err(SendFailure {
                status: Some(code),
                retryable: code == 408 || code == 429 || status.is_server_error(),
                retry_after: if code == 429 { retry_after } else { None },
                message: scrub(&message, sink),
            })
        }
        Err(e) => {
            let e = e.without_url();
            let message = if e.is_timeout() {
                format!("no response within {}", crate::human::duration(timeout))
            } else {
                let mut m = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    source = s.source();
                }
                m
            };
            Err(SendFailure {
                status: None,
                retryable: !e.is_builder(),
                retry_after: None,
                message: scrub(&message, sink),
            })
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// Remove the sink's URL (and its path, which carries the token) and header values from a
/// message.
fn scrub(message: &str, sink: &AlertSink) -> String {
    let mut out = message.to_string();
    let url = sink.url.expose();
    let mut secrets: Vec<&str> = vec![url];
    if let Ok(u) = url::Url::parse(url) {
        let path = u.path();
        if path.len() > 1 {
            secrets.push(&url[url.find(path).unwrap_or(0)..]);
        }
    }
    secrets.extend(sink.headers.values().map(|v| v.expose()));
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None); // past
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn errors_lose_urls_and_header_values() {
        let sink = AlertSink {
            name: "ops".into(),
            kind: crate::policy::SinkKind::Webhook,
            url: crate::policy::Secret::new("https://hooks.example.com/services/T0/B0/xyzzy"),
            on: vec![],
            headers: BTreeMap::from([(
                "Authorization".into(),
                crate::policy::Secret::new("Bearer s3cr3t"),
            )]),
        };
        let m = scrub(
            "post https://hooks.example.com/services/T0/B0/xyzzy failed; /services/T0/B0/xyzzy; Bearer s3cr3t",
            &sink,
        );
        assert_eq!(m, "post *** failed; ***; ***");
    }
}
