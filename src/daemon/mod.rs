//! The daemon (`patina run`): the composition root. It takes the state directory's lock, opens
//! the catalog (marking jobs a crash left `running` as `interrupted`), and then loops: every
//! `daemon.tick` one reconcile pass; on a change of the policy file (watched through its
//! folder, because editors replace files by rename; debounced) or SIGHUP — one shared reload
//! path — a reload followed by an immediate pass. SIGTERM or SIGINT stop taking new work, let
//! running jobs finish for the grace period, then abort them (no manifest is written for an
//! aborted backup) and exit 0.
//!
//! An invalid policy file changes nothing: the last good policy keeps running, and the error is
//! logged with line and column and recorded in the catalog (`config_reloads`).
//!
//! With `[daemon] tls_cert`/`tls_key`, the files are read before anything else at start (an
//! unusable one stops the daemon, exit 2) and again on every reload, last: a renewed
//! certificate is swapped in without touching the listener; a missing or bad one refuses the
//! reload like an invalid policy file (the old certificate and policy stay, `config_invalid`).
//! Audit records older than `audit_retention` are pruned after every pass.
//!
//! This folder is the daemon's side of the ways in (with `cli` and `config`): the process loop
//! here, catalog housekeeping ([`housekeeping`]), the HTTP surface ([`http`]) and the Prometheus
//! rendering ([`metrics`]). They sit above
//! the engine and may use it and any adapter; nothing below imports them.

pub mod housekeeping;
pub mod http;
pub mod metrics;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::alert::{AlertHistory, Alerts, DeliveryAttempt, DeliveryConfig};
use crate::backup::{self, Clock, Observer};
use crate::catalog::{Catalog, CatalogError};
use crate::config;
use crate::policy::Policy;
use crate::reconcile::Reconciler;
use crate::store::{Store, StoreError};

/// How long pending alert deliveries may finish at exit.
pub const ALERT_GRACE: Duration = Duration::from_secs(5);

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "patina.lock";

/// Why the daemon could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another patina daemon is running with state directory {dir}{pid} — stop it first, or give this one its own state_dir"
    )]
    AlreadyRunning { dir: PathBuf, pid: String },
    #[error("lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // Transparent: `{:#}` prints the cause chain, and "{0}" plus the source said it twice.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("open storage: {0}")]
    Store(#[from] StoreError),
    #[error("watch {path} for changes: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Tls(#[from] crate::http::TlsError),
}

impl DaemonError {
    /// Exit code 2 (bad usage or configuration, DESIGN §10) rather than 1: another daemon on
    /// the state directory, or TLS files that cannot be used.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DaemonError::AlreadyRunning { .. } | DaemonError::Tls(_)
        )
    }
}

/// Settings of a daemon run that are not policy.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// How long running jobs may finish after SIGTERM before they are aborted.
    pub shutdown_grace: Duration,
    /// Timeouts and retries of alert deliveries.
    pub alert_delivery: DeliveryConfig,
}

/// The held lock on a state directory; released when dropped (or when the process dies).
pub struct StateLock {
    _file: File,
}

/// Take the state directory's lock, or say who holds it.
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, DaemonError> {
    std::fs::create_dir_all(state_dir).map_err(|source| DaemonError::Lock {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join(LOCK_FILE);
    let lock_err = |source| DaemonError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(DaemonError::AlreadyRunning {
                dir: state_dir.to_path_buf(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    file.set_len(0).map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(StateLock { _file: file })
}

/// The one-line summary for `systemctl status`:
/// "2 databases, last backup 03:00:41, next 03:00 tomorrow" (times in the policy's timezone).
pub fn status_line(reconciler: &Reconciler, now: chrono::DateTime<chrono::Utc>) -> String {
    let policy = reconciler.policy();
    let tz = policy.daemon.timezone;
    let n = policy.databases.iter().filter(|d| d.enabled).count();
    let mut parts = vec![format!("{n} database{}", if n == 1 { "" } else { "s" })];
    let snapshot = reconciler.snapshot();
    if !snapshot.running.is_empty() {
        parts.push(format!("{} running", snapshot.running.len()));
    }
    if let Some(last) = snapshot.last_backup {
        parts.push(format!(
            "last backup {}",
            last.with_timezone(&tz).format("%H:%M:%S")
        ));
    }
    let next = policy
        .databases
        .iter()
        .filter(|d| d.enabled)
        .filter_map(|d| d.schedule.next_after(now))
        .min();
    if let Some(next) = next {
        let local = next.with_timezone(&tz);
        let today = now.with_timezone(&tz).date_naive();
        let day = match (local.date_naive() - today).num_days() {
            0 => "today".to_string(),
            1 => "tomorrow".to_string(),
            _ => local.format("%a %d %b").to_string(),
        };
        parts.push(format!("next {} {day}", local.format("%H:%M")));
    }
    if let Some(e) = snapshot.last_pass.and_then(|p| p.error) {
        parts.push(format!(
            "storage problem: {}",
            e.chars().take(80).collect::<String>()
        ));
    }
    parts.join(", ")
}

/// The catalog as alerting's history: alerts read dump sizes, the newest backups and the day's
/// jobs from it and record each delivery attempt in it, without knowing it exists.
pub struct CatalogHistory(pub Arc<Mutex<Catalog>>);

impl CatalogHistory {
    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.0.lock().expect("catalog lock")
    }
}

impl AlertHistory for CatalogHistory {
    fn recent_dump_sizes(
        &self,
        database: &str,
        except: Option<&str>,
        n: usize,
    ) -> Result<Vec<u64>, String> {
        self.catalog()
            .recent_dump_sizes(database, except, n)
            .map_err(|e| e.to_string())
    }

    fn latest_backups(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (chrono::DateTime<chrono::Utc>, u64)>, String>
    {
        self.catalog().latest_backups().map_err(|e| e.to_string())
    }

    fn dump_schemas(
        &self,
        database: &str,
        key: &str,
    ) -> Result<Option<(crate::alert::DumpSchema, Option<crate::alert::DumpSchema>)>, String> {
        let convert = |d: crate::catalog::DumpSchema| crate::alert::DumpSchema {
            key: d.key,
            schema_hash: d.schema_hash,
            tables: d.tables,
        };
        Ok(self
            .catalog()
            .dump_schemas(database, key)
            .map_err(|e| e.to_string())?
            .map(|(new, previous)| (convert(new), previous.map(convert))))
    }

    fn run_durations(
        &self,
        database: &str,
        key: &str,
        n: usize,
    ) -> Result<Option<(Duration, Vec<Duration>)>, String> {
        self.catalog()
            .run_durations(database, key, n)
            .map_err(|e| e.to_string())
    }

    fn jobs_since(&self, since: chrono::DateTime<chrono::Utc>) -> Result<(usize, usize), String> {
        let jobs = self.catalog().recent_jobs(500).map_err(|e| e.to_string())?;
        let recent: Vec<_> = jobs
            .iter()
            .filter(|j| j.started_at >= since.timestamp())
            .collect();
        Ok((
            recent.len(),
            recent.iter().filter(|j| j.failed_count > 0).count(),
        ))
    }

    fn record_attempt(&self, a: &DeliveryAttempt<'_>) -> Result<(), String> {
        self.catalog()
            .record_alert_attempt(&crate::catalog::AlertAttempt {
                sink: a.sink,
                sink_kind: a.sink_kind,
                event: a.event,
                state: a.state,
                dedup_key: a.dedup_key,
                attempt: a.attempt,
                result: a.result,
                status_code: a.status_code,
                error: a.error,
                queued_at: a.queued_at,
                attempted_at: a.attempted_at,
            })
            .map_err(|e| e.to_string())
    }
}

/// Logs each backup as one event (database, size, duration, result).
pub struct LogObserver;

impl Observer for LogObserver {
    fn started(&self, database: &str) {
        tracing::info!(database, "backup started");
    }
    fn progress(&self, _: &str, _: crate::source::sqlite::Progress) {}
    fn finished(
        &self,
        database: &str,
        outcome: &Result<crate::manifest::Manifest, backup::BackupError>,
    ) {
        match outcome {
            Ok(m) => tracing::info!(
                database,
                size = m.size,
                rows = m.row_count,
                seconds = (m.completed_at - m.started_at).num_milliseconds() as f64 / 1000.0,
                trigger = m.trigger.as_str(),
                key = %m.key,
                "backup committed"
            ),
            // Another node holds the database now and backs the fire up: nothing was lost.
            Err(e @ backup::BackupError::Fenced { .. }) => {
                tracing::warn!(database, error = %e, "backup handed over")
            }
            Err(e) => tracing::error!(database, error = %e, "backup failed"),
        }
    }
}

/// Run the daemon until `shutdown` resolves (or SIGTERM/SIGINT).
pub async fn run(
    options: Options,
    policy: Policy,
    clock: Clock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let state_dir = policy.daemon.state_dir.clone();
    // Unusable TLS files stop the start before anything else happens.
    let tls = match &policy.daemon.tls {
        Some(files) => Some(crate::http::Tls::load(files)?),
        None => None,
    };
    let _lock = lock_state_dir(&state_dir)?;
    let catalog = Catalog::open(&state_dir)?;
    let interrupted = catalog.mark_interrupted(clock())?;
    if interrupted > 0 {
        tracing::warn!(
            jobs = interrupted,
            "jobs left running by a previous process are marked interrupted; their databases are due again"
        );
    }
    let catalog = Arc::new(Mutex::new(catalog));
    let store = Store::open(&policy.storage)?;
    tracing::info!(
        config = %options.config.display(),
        databases = policy.databases.len(),
        storage = %store.location(""),
        tick = ?policy.daemon.tick,
        "patina daemon started"
    );
    let policy = Arc::new(policy);
    let alerts = Alerts::start(
        Arc::clone(&policy),
        Arc::new(CatalogHistory(Arc::clone(&catalog))),
        Arc::clone(&clock),
        options.alert_delivery.clone(),
    );
    let mut reconciler = Reconciler::new(
        Arc::clone(&policy),
        store.clone(),
        Arc::clone(&catalog),
        Arc::clone(&clock),
        Arc::new(LogObserver),
    )
    .with_alerts(alerts.clone());
    // Several daemons (DESIGN §16): the heartbeat is written before the first pass and then
    // renewed on its own timer, whatever the tick.
    let mut heartbeat = None;
    if let Some(cluster) = &policy.cluster {
        let node = crate::cluster::Node::new(store, &cluster.node, cluster.lease_ttl);
        node.renew(false).await;
        tracing::info!(
            node = %cluster.node,
            lease_ttl = ?cluster.lease_ttl,
            "sharing the bucket with other daemons: backing up the databases this node holds leases on"
        );
        heartbeat = Some((Arc::clone(&node), node.heartbeat()));
        reconciler = reconciler.with_cluster(node);
    }
    let reconciler = Arc::new(reconciler);
    // Bound before the first pass: a taken port fails the start, naming the address.
    let listener = crate::http::bind(policy.daemon.listen).await?;
    let http_state = crate::http::AppState::new(
        Arc::clone(&reconciler),
        Arc::clone(&catalog),
        Arc::clone(&clock),
    );
    let bound = listener
        .local_addr()
        .map_or_else(|_| policy.daemon.listen.to_string(), |a| a.to_string());
    match &tls {
        Some(t) => tracing::info!(
            listen = %bound,
            certificate = %t.fingerprint(),
            "serving /healthz, /metrics, the API and /ui over HTTPS"
        ),
        None => tracing::info!(listen = %bound, "serving /healthz, /metrics, the API and /ui"),
    }
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(crate::http::serve_with(
        listener,
        http_state,
        tls.clone(),
        crate::http::Limits::default(),
        async {
            let _ = http_stopped.await;
        },
    ));

    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<()>();
    let _watcher = watch_config(&options.config, changed_tx)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    tokio::pin!(shutdown);

    let mut housekeeper = housekeeping::Housekeeper::new(state_dir.join(crate::catalog::FILE_NAME));
    let mut tick_every = policy.daemon.tick;
    let mut ticker = new_ticker(tick_every);
    crate::systemd::ready(&status_line(&reconciler, clock()));
    loop {
        let reload = tokio::select! {
            _ = ticker.tick() => false,
            Some(()) = changed_rx.recv() => {
                // Debounce: editors write in several steps.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while changed_rx.try_recv().is_ok() {}
                true
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the policy");
                true
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = &mut shutdown => break,
        };
        if reload {
            crate::systemd::reloading();
            let applied =
                reload_policy(&options.config, &reconciler, &catalog, &clock, tls.as_ref());
            crate::systemd::reloaded(&status_line(&reconciler, clock()));
            if let Some(new) = applied
                && new.daemon.tick != tick_every
            {
                tick_every = new.daemon.tick;
                ticker = new_ticker(tick_every);
            }
        }
        match reconciler.run_once().await {
            Ok(report) => {
                let p = &report.plan;
                if !p.is_empty() || !report.errors.is_empty() {
                    tracing::info!(
                        backups = report.backups_started,
                        archives = report.archives_started,
                        deleted = report.deleted,
                        adopted = report.adopted,
                        drift = report.drift,
                        debris = report.debris_removed,
                        errors = report.errors.len(),
                        "reconcile pass"
                    );
                }
                for d in &p.deferred {
                    tracing::debug!(what = %d.what, reason = %d.reason, "deferred");
                }
            }
            Err(e) => tracing::error!(error = %e, "reconcile pass failed"),
        }
        alerts.evaluate();
        housekeeper.tick(&reconciler.policy(), clock());
        prune_audit(&reconciler, &catalog, clock());
        // The loop is alive: feed the watchdog (WatchdogSec= restarts a stuck loop).
        crate::systemd::watchdog();
        crate::systemd::status(&status_line(&reconciler, clock()));
    }
    crate::systemd::stopping();

    let running = reconciler.running();
    if running.is_empty() {
        tracing::info!("stopping");
    } else {
        tracing::info!(
            running = ?running,
            grace_seconds = options.shutdown_grace.as_secs(),
            "stopping: letting running backups finish"
        );
    }
    if !reconciler.shutdown(options.shutdown_grace).await {
        tracing::warn!(
            "grace period over: running backups were aborted (nothing was committed for them)"
        );
    }
    if let Some((node, task)) = heartbeat {
        task.abort();
        node.leave().await;
    }
    // The server answers (health, status) while jobs finish; then it stops too.
    let _ = http_stop.send(());
    if tokio::time::timeout(Duration::from_secs(5), http)
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after 5s were dropped");
    }
    alerts.shutdown(ALERT_GRACE).await;
    housekeeper.finish(Duration::from_secs(10)).await;
    tracing::info!("stopped");
    Ok(())
}

fn new_ticker(every: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Watch the policy file's folder; send a unit for every event touching the file.
fn watch_config(
    path: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    let file_name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
            if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = changed.send(());
            }
        }
    })
    .map_err(|source| DaemonError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| DaemonError::Watch {
            path: dir.clone(),
            source,
        })?;
    Ok(watcher)
}

/// Delete audit records older than `[daemon] audit_retention`.
fn prune_audit(
    reconciler: &Reconciler,
    catalog: &Arc<Mutex<Catalog>>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let keep = reconciler.policy().daemon.audit_retention;
    let Some(before) = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|k| now.checked_sub_signed(k))
    else {
        return;
    };
    match catalog.lock().expect("catalog lock").prune_audit(before) {
        Ok(0) => {}
        Ok(n) => tracing::info!(records = n, "audit records past audit_retention deleted"),
        Err(e) => tracing::warn!(error = %e, "could not prune the audit log"),
    }
}

/// Re-read the TLS files of a new policy into the running server (renewed certificates need no
/// restart). An error keeps the old certificate and refuses the reload.
fn reload_tls(tls: Option<&crate::http::Tls>, old: &Policy, new: &Policy) -> Result<(), String> {
    match (tls, &new.daemon.tls) {
        (Some(tls), Some(files)) => {
            let changed = tls
                .reload(files)
                .map_err(|e| format!("{e} (the current certificate stays in use)"))?;
            if changed {
                tracing::info!(certificate = %tls.fingerprint(), "TLS certificate reloaded");
            }
            Ok(())
        }
        (None, None) => Ok(()),
        _ => {
            if old.daemon.tls.is_some() != new.daemon.tls.is_some() {
                tracing::warn!(
                    "turning TLS on or off (tls_cert, tls_key) takes effect after a restart"
                );
            }
            Ok(())
        }
    }
}

/// The one reload path. Returns the new policy when it was applied.
fn reload_policy(
    path: &Path,
    reconciler: &Reconciler,
    catalog: &Arc<Mutex<Catalog>>,
    clock: &Clock,
    tls: Option<&crate::http::Tls>,
) -> Option<Arc<Policy>> {
    let now = clock();
    let old = reconciler.policy();
    let loaded = config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|new| {
            let store = if format!("{:?}", new.storage) == format!("{:?}", old.storage)
                && new.storage.access_key_id == old.storage.access_key_id
                && new.storage.secret_access_key == old.storage.secret_access_key
            {
                None
            } else {
                Some(Store::open(&new.storage).map_err(|e| format!("open storage: {e}"))?)
            };
            // Last: a certificate is swapped in only when the rest of the reload is good.
            reload_tls(tls, &old, &new)?;
            Ok((new, store))
        });
    match loaded {
        Ok((new, store)) => {
            for line in describe_changes(&old, &new) {
                tracing::info!(change = %line, "policy reloaded");
            }
            if new.daemon.state_dir != old.daemon.state_dir {
                tracing::warn!("state_dir changes take effect after a restart");
            }
            if new.daemon.listen != old.daemon.listen {
                tracing::warn!("listen changes take effect after a restart");
            }
            if new.cluster != old.cluster {
                tracing::warn!("[cluster] changes take effect after a restart");
            }
            if old.cluster.is_some() && store.is_some() {
                tracing::warn!(
                    "with [cluster], the leases stay on the storage the daemon started with until a restart"
                );
            }
            let store = match store {
                Some(s) => {
                    tracing::info!(storage = %s.location(""), "storage changed");
                    s
                }
                None => reconciler.store(),
            };
            let new = Arc::new(new);
            reconciler.set_policy(Arc::clone(&new), store);
            if let Some(alerts) = reconciler.alerts() {
                alerts.set_policy(Arc::clone(&new));
                alerts.config_valid();
            }
            if let Err(e) = catalog
                .lock()
                .expect("catalog lock")
                .record_reload(now, Ok(()))
            {
                tracing::warn!(error = %e, "could not record the reload");
            }
            Some(new)
        }
        Err(message) => {
            tracing::error!(
                config = %path.display(),
                "reload aborted, the previous policy keeps running:\n{message}"
            );
            if let Some(alerts) = reconciler.alerts() {
                alerts.config_invalid(&path.display().to_string(), &message);
            }
            if let Err(e) = catalog
                .lock()
                .expect("catalog lock")
                .record_reload(now, Err(&message))
            {
                tracing::warn!(error = %e, "could not record the reload");
            }
            None
        }
    }
}

/// Human lines naming what a reload changed.
pub fn describe_changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for db in &new.databases {
        match old.database(&db.name) {
            None => out.push(format!("database {} added", db.name)),
            Some(o) if format!("{o:?}") != format!("{db:?}") => {
                out.push(format!("database {} changed", db.name))
            }
            Some(_) => {}
        }
    }
    // Secrets print as ***, so token changes are compared here and named without them.
    for t in &new.daemon.tokens {
        match old.daemon.token(&t.name) {
            None => out.push(format!("token {} added", t.name)),
            Some(o) if o.secret != t.secret => out.push(format!("token {} rotated", t.name)),
            Some(o) if o.scopes != t.scopes => out.push(format!("token {} scopes changed", t.name)),
            Some(_) => {}
        }
    }
    for t in &old.daemon.tokens {
        if new.daemon.token(&t.name).is_none() {
            out.push(format!("token {} removed", t.name));
        }
    }
    for db in &old.databases {
        if new.database(&db.name).is_none() {
            out.push(format!(
                "database {} removed (no new backups; its newest backup is kept)",
                db.name
            ));
        }
    }
    let rest = |p: &Policy| {
        format!(
            "{:?}{:?}{:?}{:?}{:?}{:?}",
            p.daemon, p.storage, p.priorities, p.retention, p.alerts, p.sinks
        )
    };
    if rest(old) != rest(new) {
        out.push("settings changed".into());
    }
    let sealed_for = |p: &Policy| {
        p.encryption
            .as_ref()
            .map(|e| (e.recipients.fingerprints(), e.identity_file.clone()))
    };
    match (sealed_for(old), sealed_for(new)) {
        (None, Some((r, _))) => out.push(format!(
            "encryption turned on: new backups are sealed for {}",
            r.join(", ")
        )),
        (Some(_), None) => {
            out.push("encryption turned off: new backups are stored unencrypted".into())
        }
        (Some((a, _)), Some((b, _))) if a != b => out.push(format!(
            "encryption recipients changed: new backups are sealed for {}",
            b.join(", ")
        )),
        (Some((_, a)), Some((_, b))) if a != b => out.push("identity_file changed".into()),
        _ => {}
    }
    if out.is_empty() {
        out.push("no effective change".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tokens: &str) -> Policy {
        let text = format!(
            "[priorities.critical]\nschedule = \"0 3 * * *\"\n[[database]]\nname = \"a\"\n\
             kind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n{tokens}"
        );
        config::from_str(&text, "patina.toml", Path::new("/srv"), &|_| None).unwrap()
    }

    #[test]
    fn token_changes_are_named_without_their_secrets() {
        let token = |name: &str, secret: &str, scopes: &str| {
            format!("[[token]]\nname = \"{name}\"\nsecret = \"{secret}\"\nscopes = [{scopes}]\n")
        };
        let old = policy(&format!(
            "{}{}{}",
            token("ops", "old-ops-secret", "\"read\""),
            token("ci", "ci-secret", "\"trigger\""),
            token("gone", "gone-secret", "\"read\"")
        ));
        let new = policy(&format!(
            "{}{}{}",
            token("ops", "new-ops-secret", "\"read\""),
            token("ci", "ci-secret", "\"trigger\", \"download\""),
            token("fresh", "fresh-secret", "\"read\"")
        ));
        let lines = describe_changes(&old, &new);
        for want in [
            "token ops rotated",
            "token ci scopes changed",
            "token fresh added",
            "token gone removed",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} in {lines:?}");
        }
        assert!(!lines.join(" ").contains("secret"), "{lines:?}");
        assert_eq!(describe_changes(&old, &old), ["no effective change"]);
    }
}
