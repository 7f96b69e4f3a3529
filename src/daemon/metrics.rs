//! Prometheus metrics (DESIGN §8): one registry of typed handles, filled at scrape time.
//!
//! Nothing is counted in memory on the side: every value is read when Prometheus scrapes, from
//! the catalog (history: results, last successes, retention deletions, reloads, verifications,
//! alert deliveries), the reconciler's snapshot (last pass, inventory, running backups, storage
//! requests), the policy (databases, schedules) and the clock. So the numbers are right after a
//! restart — the last success of every database survives it — and the `_total` counters are
//! counts of catalog rows, which only grow while the catalog is kept. The exceptions are
//! `patina_storage_requests_total` (requests this process made) and the reconcile metrics, which
//! start over with the process, as counters may.
//!
//! Conventions: prefix `patina_`, base units (seconds, bytes), `_total` on counters, and labels
//! bounded by the policy (`database`, `priority`) or by fixed sets (`tier`, `result`, `op`). A
//! configured database that never succeeded reports `0` as its last success timestamp, so
//! `time() - patina_backup_last_success_timestamp_seconds > …` fires for it too.
//!
//! Format: the `prometheus-client` crate writes OpenMetrics text, which Prometheus asks for.
//! Clients that do not (curl, `promtool check metrics`) get the classic text format 0.0.4, in
//! which a counter's HELP and TYPE carry the `_total` name and there is no `# UNIT`/`# EOF`:
//! [`Format::Classic`] rewrites just those lines.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::catalog::MetricFacts;
use crate::policy::Policy;
use crate::reconcile::Snapshot;

/// Label sets: `(name, value)` pairs. Names are fixed; values are bounded (see module docs).
type Labels = Vec<(&'static str, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// Buckets of `patina_backup_duration_seconds`: from sub-second dumps to an hour.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The text format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Classic,
}

impl Format {
    /// Pick the format from a request's `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Classic,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Every metric family Patina exposes (DESIGN §8), without the `patina_` prefix; counters carry
/// their `_total`. Tests check a live scrape against it and that dashboards and alert rules
/// only use these names.
pub const NAMES: &[&str] = &[
    "build_info",
    "config_last_reload_successful",
    "config_last_reload_success_timestamp_seconds",
    "config_reloads_total",
    "databases",
    "backup_last_success_timestamp_seconds",
    "backup_last_duration_seconds",
    "backup_last_size_bytes",
    "backups_total",
    "backup_duration_seconds",
    "next_backup_timestamp_seconds",
    "backup_expected_interval_seconds",
    "backup_stale_after_seconds",
    "inventory_objects",
    "inventory_bytes",
    "retention_deleted_objects_total",
    "reconcile_duration_seconds",
    "reconcile_last_success_timestamp_seconds",
    "reconcile_last_full_listing_timestamp_seconds",
    "reconcile_passes_total",
    "verify_last_success_timestamp_seconds",
    "verify_runs_total",
    "restore_points",
    "alerts_sent_total",
    "storage_requests_total",
    "d1_export_fallbacks_total",
    "d1_repaired_values_total",
    "jobs_running",
    "http_auth_failures_total",
    "replica_missing_objects",
    "replica_last_sync_timestamp_seconds",
    "lease_held",
    "lease_changes_total",
    "maintenance_lease_held",
    "cluster_live_nodes",
];

/// What a scrape reads.
pub struct Inputs<'a> {
    pub policy: &'a Policy,
    pub snapshot: &'a Snapshot,
    pub facts: &'a MetricFacts,
    pub now: DateTime<Utc>,
    /// When this process loaded its policy (the first successful "reload").
    pub started_at: DateTime<Utc>,
    /// Failed authentications this process's HTTP server counted.
    pub auth_failures: u64,
    /// With `[cluster]`: this node's view, holdings as valid now.
    pub cluster: Option<&'a crate::cluster::View>,
}

/// The registry and its typed handles.
pub struct Metrics {
    registry: Registry,
    h: Handles,
    /// One scrape at a time: handles are reset and refilled per scrape.
    scrape: Mutex<()>,
}

struct Handles {
    build_info: Family<Labels, Gauge>,
    config_last_reload_successful: Gauge,
    config_last_reload_success_timestamp_seconds: GaugeF,
    config_reloads: Family<Labels, Counter>,
    databases: Family<Labels, Gauge>,
    backup_last_success_timestamp_seconds: Family<Labels, GaugeF>,
    backup_last_duration_seconds: Family<Labels, GaugeF>,
    backup_last_size_bytes: Family<Labels, Gauge>,
    backups: Family<Labels, Counter>,
    backup_duration_seconds: StoredHistogram,
    next_backup_timestamp_seconds: Family<Labels, GaugeF>,
    backup_expected_interval_seconds: Family<Labels, GaugeF>,
    backup_stale_after_seconds: Family<Labels, GaugeF>,
    inventory_objects: Family<Labels, Gauge>,
    inventory_bytes: Family<Labels, Gauge>,
    retention_deleted_objects: Family<Labels, Counter>,
    reconcile_duration_seconds: GaugeF,
    reconcile_last_success_timestamp_seconds: GaugeF,
    reconcile_last_full_listing_timestamp_seconds: GaugeF,
    verify_last_success_timestamp_seconds: Family<Labels, GaugeF>,
    verify_runs: Family<Labels, Counter>,
    restore_points: Family<Labels, Gauge>,
    alerts_sent: Family<Labels, Counter>,
    storage_requests: Family<Labels, Counter>,
    reconcile_passes: Family<Labels, Counter>,
    jobs_running: Gauge,
    d1_export_fallbacks: Family<Labels, Counter>,
    d1_repaired_values: Family<Labels, Counter>,
    http_auth_failures: Counter,
    replica_missing_objects: Family<Labels, Gauge>,
    replica_last_sync_timestamp_seconds: Family<Labels, GaugeF>,
    lease_held: Family<Labels, Gauge>,
    lease_changes: Family<Labels, Counter>,
    maintenance_lease_held: Family<Labels, Gauge>,
    cluster_live_nodes: Family<Labels, Gauge>,
}

/// A histogram rebuilt from the catalog on every scrape (a plain `Histogram` can neither be
/// reset nor be given the bucket counts of rows housekeeping pruned).
#[derive(Debug, Clone, Default)]
struct StoredHistogram(Arc<RwLock<HistogramData>>);

/// Sum, count and per-bucket (not cumulative) counts; the last bucket is `+Inf`.
#[derive(Debug, Clone, Default)]
struct HistogramData {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl HistogramData {
    /// The live durations (ms) plus what was pruned, in [`DURATION_BUCKETS`].
    fn of(facts: &MetricFacts) -> HistogramData {
        let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .chain([f64::INFINITY].iter())
            .map(|b| (*b, 0))
            .collect();
        let slot = |secs: f64| buckets.iter().position(|(b, _)| secs <= *b).unwrap_or(0);
        let mut counts = vec![0u64; buckets.len()];
        for ms in &facts.durations_ms {
            counts[slot(*ms as f64 / 1000.0)] += 1;
        }
        for (le, n) in &facts.pruned_duration_buckets {
            let bound = le.parse::<f64>().unwrap_or(f64::INFINITY);
            counts[slot(bound)] += n;
        }
        for ((_, c), n) in buckets.iter_mut().zip(counts) {
            *c = n;
        }
        let live_ms: i64 = facts.durations_ms.iter().sum();
        HistogramData {
            sum: (live_ms.max(0) as u64 + facts.pruned_duration_sum_ms) as f64 / 1000.0,
            count: facts.durations_ms.len() as u64 + facts.pruned_duration_count,
            buckets,
        }
    }
}

impl EncodeMetric for StoredHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = self.0.read().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum, h.count, &h.buckets, None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let h = Handles {
            build_info: Family::default(),
            config_last_reload_successful: Gauge::default(),
            config_last_reload_success_timestamp_seconds: GaugeF::default(),
            config_reloads: Family::default(),
            databases: Family::default(),
            backup_last_success_timestamp_seconds: Family::default(),
            backup_last_duration_seconds: Family::default(),
            backup_last_size_bytes: Family::default(),
            backups: Family::default(),
            backup_duration_seconds: StoredHistogram::default(),
            next_backup_timestamp_seconds: Family::default(),
            backup_expected_interval_seconds: Family::default(),
            backup_stale_after_seconds: Family::default(),
            inventory_objects: Family::default(),
            inventory_bytes: Family::default(),
            retention_deleted_objects: Family::default(),
            d1_export_fallbacks: Family::default(),
            d1_repaired_values: Family::default(),
            reconcile_duration_seconds: GaugeF::default(),
            reconcile_last_success_timestamp_seconds: GaugeF::default(),
            reconcile_last_full_listing_timestamp_seconds: GaugeF::default(),
            verify_last_success_timestamp_seconds: Family::default(),
            verify_runs: Family::default(),
            restore_points: Family::default(),
            alerts_sent: Family::default(),
            storage_requests: Family::default(),
            reconcile_passes: Family::default(),
            jobs_running: Gauge::default(),
            http_auth_failures: Counter::default(),
            replica_missing_objects: Family::default(),
            replica_last_sync_timestamp_seconds: Family::default(),
            lease_held: Family::default(),
            lease_changes: Family::default(),
            maintenance_lease_held: Family::default(),
            cluster_live_nodes: Family::default(),
        };
        let mut r = Registry::with_prefix("patina");
        r.register(
            "build_info",
            "Patina's version; always 1",
            h.build_info.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "1 when the last policy (re)load succeeded, 0 when it was rejected",
            h.config_last_reload_successful.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running policy was loaded (unix seconds)",
            h.config_last_reload_success_timestamp_seconds.clone(),
        );
        r.register(
            "config_reloads",
            "Policy reloads by result (success, failure)",
            h.config_reloads.clone(),
        );
        r.register(
            "databases",
            "Databases declared in the policy, by priority",
            h.databases.clone(),
        );
        r.register(
            "backup_last_success_timestamp_seconds",
            "Newest committed backup of each declared database (unix seconds; 0 = never)",
            h.backup_last_success_timestamp_seconds.clone(),
        );
        r.register(
            "backup_last_duration_seconds",
            "Duration of the newest successful backup of each database",
            h.backup_last_duration_seconds.clone(),
        );
        r.register(
            "backup_last_size_bytes",
            "Stored (compressed) size of the newest successful backup of each database",
            h.backup_last_size_bytes.clone(),
        );
        r.register(
            "backups",
            "Backups recorded, by database and result (success, failure)",
            h.backups.clone(),
        );
        r.register(
            "backup_duration_seconds",
            "Durations of successful backups",
            h.backup_duration_seconds.clone(),
        );
        r.register(
            "next_backup_timestamp_seconds",
            "Next scheduled fire time of each enabled database (unix seconds)",
            h.next_backup_timestamp_seconds.clone(),
        );
        r.register(
            "backup_expected_interval_seconds",
            "Longest gap between the next fire times of each enabled database's schedule",
            h.backup_expected_interval_seconds.clone(),
        );
        r.register(
            "backup_stale_after_seconds",
            "How long each enabled database may go without a committed backup before the stale alert fires ([alerts] stale_after)",
            h.backup_stale_after_seconds.clone(),
        );
        r.register(
            "inventory_objects",
            "Committed objects in storage by tier (daily dumps, weekly archives)",
            h.inventory_objects.clone(),
        );
        r.register(
            "inventory_bytes",
            "Bytes of committed objects in storage by tier",
            h.inventory_bytes.clone(),
        );
        r.register(
            "retention_deleted_objects",
            "Objects deleted by retention, by tier",
            h.retention_deleted_objects.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of the last reconcile pass",
            h.reconcile_duration_seconds.clone(),
        );
        r.register(
            "reconcile_last_success_timestamp_seconds",
            "When the last successful reconcile pass ran (unix seconds; 0 = none yet)",
            h.reconcile_last_success_timestamp_seconds.clone(),
        );
        r.register(
            "reconcile_last_full_listing_timestamp_seconds",
            "When the last full listing of the bucket started (unix seconds; 0 = none yet); \
             retention, debris and drift run on those",
            h.reconcile_last_full_listing_timestamp_seconds.clone(),
        );
        r.register(
            "replica_missing_objects",
            "Committed dumps and archives of the primary that each replica lacked after its last sync (absent until a sync listed both)",
            h.replica_missing_objects.clone(),
        );
        r.register(
            "lease_held",
            "1 for each database whose lease this node holds now, 0 for the others ([cluster] only)",
            h.lease_held.clone(),
        );
        r.register(
            "lease_changes",
            "Lease changes made or seen by this node since it started, by database (_maintenance: the maintenance lease) and reason: taken, taken_over, released, lost ([cluster] only)",
            h.lease_changes.clone(),
        );
        r.register(
            "maintenance_lease_held",
            "1 while this node holds the maintenance lease (archives, retention, debris, replica syncs, drills) ([cluster] only)",
            h.maintenance_lease_held.clone(),
        );
        r.register(
            "cluster_live_nodes",
            "Nodes whose heartbeat this node saw change within the lease ttl, itself included ([cluster] only)",
            h.cluster_live_nodes.clone(),
        );
        r.register(
            "replica_last_sync_timestamp_seconds",
            "When each replica's last sync ended with nothing missing (unix seconds; 0 = not yet)",
            h.replica_last_sync_timestamp_seconds.clone(),
        );
        r.register(
            "verify_last_success_timestamp_seconds",
            "Newest passed `patina verify` of each declared database (unix seconds; 0 = never)",
            h.verify_last_success_timestamp_seconds.clone(),
        );
        r.register(
            "verify_runs",
            "Verifications (drills and `patina verify`) recorded, by database and result (success, failure)",
            h.verify_runs.clone(),
        );
        r.register(
            "restore_points",
            "Restore points in the catalog's inventory (entries not deleted), by database and tier",
            h.restore_points.clone(),
        );
        r.register(
            "alerts_sent",
            "Alert deliveries by sink, event and result",
            h.alerts_sent.clone(),
        );
        r.register(
            "d1_export_fallbacks",
            "D1 backups whose export could not be used and that were read in query mode instead",
            h.d1_export_fallbacks.clone(),
        );
        r.register(
            "d1_repaired_values",
            "Values a D1 export carried wrongly that were repaired from exact /query reads",
            h.d1_repaired_values.clone(),
        );
        r.register(
            "storage_requests",
            "Storage requests made by this process, by operation",
            h.storage_requests.clone(),
        );
        r.register(
            "reconcile_passes",
            "Reconcile passes by listing: full (the whole bucket), partial (only the newest keys), \
             failed",
            h.reconcile_passes.clone(),
        );
        r.register(
            "jobs_running",
            "Database backups running in this daemon now",
            h.jobs_running.clone(),
        );
        r.register(
            "http_auth_failures",
            "Requests to the HTTP API whose Authorization matched no token (this process)",
            h.http_auth_failures.clone(),
        );
        Metrics {
            registry: r,
            h,
            scrape: Mutex::new(()),
        }
    }

    /// Fill every metric from `inputs` and encode the registry.
    pub fn render(&self, inputs: &Inputs<'_>, format: Format) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.fill(inputs);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Classic => to_classic(&out),
        }
    }

    fn fill(&self, inputs: &Inputs<'_>) {
        let h = &self.h;
        let Inputs {
            policy,
            snapshot,
            facts,
            now,
            started_at,
            auth_failures,
            cluster,
        } = *inputs;
        for family in [
            &h.build_info,
            &h.databases,
            &h.backup_last_size_bytes,
            &h.restore_points,
            &h.inventory_objects,
            &h.inventory_bytes,
            &h.replica_missing_objects,
            &h.lease_held,
            &h.maintenance_lease_held,
            &h.cluster_live_nodes,
        ] {
            family.clear();
        }
        for family in [
            &h.backup_last_success_timestamp_seconds,
            &h.backup_last_duration_seconds,
            &h.next_backup_timestamp_seconds,
            &h.backup_expected_interval_seconds,
            &h.backup_stale_after_seconds,
            &h.verify_last_success_timestamp_seconds,
            &h.replica_last_sync_timestamp_seconds,
        ] {
            family.clear();
        }
        for family in [
            &h.config_reloads,
            &h.backups,
            &h.retention_deleted_objects,
            &h.alerts_sent,
            &h.verify_runs,
            &h.storage_requests,
            &h.reconcile_passes,
            &h.d1_export_fallbacks,
            &h.d1_repaired_values,
        ] {
            family.clear();
        }

        h.build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);

        // Policy loads: the start counts as a successful load.
        h.config_last_reload_successful
            .set(i64::from(facts.last_reload_ok.unwrap_or(true)));
        let loaded_at = facts
            .last_reload_success_at
            .unwrap_or(0)
            .max(started_at.timestamp());
        h.config_last_reload_success_timestamp_seconds
            .set(loaded_at as f64);
        for result in ["success", "failure"] {
            set_counter(
                &h.config_reloads,
                vec![("result", result.to_owned())],
                facts.reloads.get(result).copied().unwrap_or(0),
            );
        }

        for level in policy.priorities.keys() {
            let n = policy
                .databases
                .iter()
                .filter(|d| d.priority == *level)
                .count();
            h.databases
                .get_or_create(&vec![("priority", level.as_str().to_owned())])
                .set(n as i64);
        }

        for db in &policy.databases {
            let name = db.name.clone();
            let last = facts.last_success.get(&db.name);
            h.backup_last_success_timestamp_seconds
                .get_or_create(&vec![
                    ("database", name.clone()),
                    ("priority", db.priority.as_str().to_owned()),
                ])
                .set(last.map_or(0.0, |l| l.at as f64));
            if let Some(l) = last {
                if let Some(ms) = l.duration_ms {
                    h.backup_last_duration_seconds
                        .get_or_create(&vec![("database", name.clone())])
                        .set(ms as f64 / 1000.0);
                }
                if let Some(size) = l.size_bytes {
                    h.backup_last_size_bytes
                        .get_or_create(&vec![("database", name.clone())])
                        .set(size as i64);
                }
            }
            for result in ["success", "failure"] {
                let status = if result == "success" {
                    "success"
                } else {
                    "failed"
                };
                let n = facts
                    .results
                    .get(&(db.name.clone(), status.to_owned()))
                    .copied()
                    .unwrap_or(0);
                set_counter(
                    &h.backups,
                    vec![("database", name.clone()), ("result", result.to_owned())],
                    n,
                );
            }
            if db.enabled {
                if let Some(next) = db.schedule.next_after(now) {
                    h.next_backup_timestamp_seconds
                        .get_or_create(&vec![("database", name.clone())])
                        .set(next.timestamp() as f64);
                }
                if let Some(every) = expected_interval(&db.schedule, now) {
                    h.backup_expected_interval_seconds
                        .get_or_create(&vec![("database", name.clone())])
                        .set(every);
                }
                if let Some(window) = policy.alerts.stale_after.window(&db.schedule, now) {
                    h.backup_stale_after_seconds
                        .get_or_create(&vec![("database", name.clone())])
                        .set(window.num_seconds() as f64);
                }
            }
            h.verify_last_success_timestamp_seconds
                .get_or_create(&vec![("database", name.clone())])
                .set(facts.verified.get(&db.name).map_or(0.0, |t| *t as f64));
            // Every declared database has both results and a daily tier, 0 when none.
            for (result, status) in [("success", "ok"), ("failure", "failed")] {
                let n = facts
                    .verify_runs
                    .get(&(db.name.clone(), status.to_owned()))
                    .copied()
                    .unwrap_or(0);
                set_counter(
                    &h.verify_runs,
                    vec![("database", name.clone()), ("result", result.to_owned())],
                    n,
                );
            }
            h.restore_points
                .get_or_create(&vec![
                    ("database", name.clone()),
                    ("tier", "daily".to_owned()),
                ])
                .set(0);
        }
        for ((db, tier), n) in &facts.restore_points {
            h.restore_points
                .get_or_create(&vec![("database", db.clone()), ("tier", tier.clone())])
                .set(*n as i64);
        }

        *h.backup_duration_seconds
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner()) = HistogramData::of(facts);

        // The catalog's inventory: updated when a backup commits or an object is deleted, and
        // reconciled with the storage listing (adoption, drift) on every pass. The pass's own
        // listing would lag by a tick: it is taken before the backups that pass starts.
        let (daily_objects, daily_bytes, weekly_objects, weekly_bytes) = (
            facts.live_daily_objects,
            facts.live_daily_bytes,
            facts.weekly_objects,
            facts.weekly_bytes,
        );
        for (tier, objects, bytes) in [
            ("daily", daily_objects, daily_bytes),
            ("weekly", weekly_objects, weekly_bytes),
        ] {
            h.inventory_objects
                .get_or_create(&vec![("tier", tier.to_owned())])
                .set(objects as i64);
            h.inventory_bytes
                .get_or_create(&vec![("tier", tier.to_owned())])
                .set(bytes as i64);
        }
        // Every declared database has a series (0 for SQLite), so the families always exist.
        let names = policy.databases.iter().map(|d| &d.name);
        for db in names.chain(facts.d1_fidelity.keys()) {
            let (fallbacks, repaired) = facts.d1_fidelity.get(db).copied().unwrap_or_default();
            set_counter(
                &h.d1_export_fallbacks,
                vec![("database", db.clone())],
                fallbacks,
            );
            set_counter(
                &h.d1_repaired_values,
                vec![("database", db.clone())],
                repaired,
            );
        }
        set_counter(
            &h.retention_deleted_objects,
            vec![("tier", "daily".to_owned())],
            facts.retention_deleted_daily,
        );
        set_counter(
            &h.retention_deleted_objects,
            vec![("tier", "weekly".to_owned())],
            facts.retention_deleted_weekly,
        );

        h.reconcile_duration_seconds.set(
            snapshot
                .last_pass
                .as_ref()
                .map_or(0.0, |p| p.duration.as_secs_f64()),
        );
        h.reconcile_last_success_timestamp_seconds.set(
            snapshot
                .last_success
                .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
        );
        h.reconcile_last_full_listing_timestamp_seconds.set(
            snapshot
                .last_full_listing
                .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
        );

        // Every declared sink × event × result starts at 0, so `rate()` sees the first one.
        for sink in &policy.sinks {
            for event in &sink.on {
                for result in ["success", "failure"] {
                    set_counter(
                        &h.alerts_sent,
                        vec![
                            ("sink", sink.name.clone()),
                            ("event", event.as_str().to_owned()),
                            ("result", result.to_owned()),
                        ],
                        0,
                    );
                }
            }
        }
        for ((sink, event, result), n) in &facts.alerts {
            set_counter(
                &h.alerts_sent,
                vec![
                    ("sink", sink.clone()),
                    ("event", event.clone()),
                    ("result", result.clone()),
                ],
                *n,
            );
        }
        for (op, n) in snapshot.requests {
            set_counter(&h.storage_requests, vec![("op", op.to_owned())], n);
        }
        for (listing, n) in snapshot.passes {
            set_counter(
                &h.reconcile_passes,
                vec![("listing", listing.to_owned())],
                n,
            );
        }
        for (name, status) in &snapshot.replicas {
            let labels = vec![("replica", name.clone())];
            match status.missing {
                Some(missing) => {
                    h.replica_missing_objects
                        .get_or_create(&labels)
                        .set(missing as i64);
                }
                // Unknown now (the last sync could not list it): no stale count.
                None => {
                    h.replica_missing_objects.remove(&labels);
                }
            }
            h.replica_last_sync_timestamp_seconds
                .get_or_create(&labels)
                .set(
                    status
                        .last_sync
                        .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
                );
        }
        if let Some(view) = cluster {
            for db in policy.databases.iter().filter(|d| d.enabled) {
                h.lease_held
                    .get_or_create(&vec![("database", db.name.clone())])
                    .set(i64::from(view.table.held.contains_key(&db.name)));
            }
            for ((lease, reason), n) in &view.changes {
                set_counter(
                    &h.lease_changes,
                    vec![
                        ("database", lease.clone()),
                        ("reason", (*reason).to_owned()),
                    ],
                    *n,
                );
            }
            let node = vec![("node", view.node.clone())];
            h.maintenance_lease_held
                .get_or_create(&node)
                .set(i64::from(view.table.maintenance.is_some()));
            h.cluster_live_nodes
                .get_or_create(&node)
                .set(view.live.len() as i64);
        }
        h.jobs_running.set(snapshot.running.len() as i64);
        h.http_auth_failures
            .inner()
            .store(auth_failures, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counters are read from the catalog: set the value rather than add to it.
fn set_counter(family: &Family<Labels, Counter>, labels: Labels, value: u64) {
    family
        .get_or_create(&labels)
        .inner()
        .store(value, std::sync::atomic::Ordering::Relaxed);
}

/// [`Schedule::expected_interval`](crate::schedule::Schedule::expected_interval) in seconds.
pub fn expected_interval(schedule: &crate::schedule::Schedule, now: DateTime<Utc>) -> Option<f64> {
    schedule
        .expected_interval(now)
        .map(|d| d.num_seconds() as f64)
}

/// OpenMetrics text → classic text format 0.0.4: counters' HELP/TYPE lines take the sample
/// name (`…_total`), and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
fn to_classic(openmetrics: &str) -> String {
    let mut counters = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let mut rewritten = None;
        for prefix in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.iter().any(|c| c == name) {
                    rewritten = Some(format!("{prefix}{name}_total {tail}"));
                }
            }
        }
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_format_names_counters_with_total() {
        let om = "# HELP patina_backups Backups.\n# TYPE patina_backups counter\n\
                  patina_backups_total{database=\"a\"} 3\n# HELP patina_up Up.\n\
                  # TYPE patina_up gauge\npatina_up 1\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP patina_backups_total Backups.\n# TYPE patina_backups_total counter\n\
             patina_backups_total{database=\"a\"} 3\n# HELP patina_up Up.\n\
             # TYPE patina_up gauge\npatina_up 1\n"
        );
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Classic);
        assert_eq!(Format::from_accept(None), Format::Classic);
    }

    #[test]
    fn expected_interval_is_the_longest_gap() {
        let s = crate::schedule::Schedule::parse("0 3 * * 1-5", chrono_tz::UTC).unwrap();
        let now: DateTime<Utc> = "2026-11-16T00:00:00Z".parse().unwrap();
        assert_eq!(expected_interval(&s, now), Some(3.0 * 86_400.0));
    }
}
