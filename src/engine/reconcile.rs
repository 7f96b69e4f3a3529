//! Reconcile: one pass of "make storage look like the policy says", and the executor that
//! carries out a [`Plan`].
//!
//! A pass lists the prefix — the whole of it once per `[daemon] full_listing`, only the newest
//! keys in between ([`listing`]: such a pass deletes nothing) — reads the manifests of archives
//! it has not seen (they are immutable, so they are cached), asks the pure planner what to do,
//! and does it: starts due backups first, then adopts and marks drift in the catalog, removes
//! debris, deletes what retention released (manifest first, so a crash in between leaves
//! debris, never a manifest without its data), and starts archives, drills and replica syncs —
//! backups and those as background tasks so the loop keeps ticking while they run (at most one
//! sync per replica at a time, holding no backup permit). At most one job per database runs at
//! a time and at most `daemon.concurrency` backups at once (critical first). Nothing is deleted
//! when the listing failed or was partial.
//!
//! The daemon calls [`Reconciler::run_once`] every tick; tests call it directly with an
//! injected clock and [`Reconciler::wait_idle`] for the background work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::alert::Alerts;
use crate::archive;
use crate::backup::{self, Clock, JobRequest, Observer};
use crate::bucket;
use crate::catalog::{Catalog, CatalogError};
use crate::cluster::{CLAIMS, LEASES_ROOT, NODES, Node, Refused, Ticket};
use crate::drill;
use crate::inventory::{Inventory, ObjectInfo};
use crate::listing;
use crate::manifest::{IsoWeek, Manifest, Trigger};
use crate::plan::{self, CatalogView, FailureStreak, Plan};
use crate::policy::Policy;
use crate::replica;
use crate::replication;
use crate::restore;
use crate::retention::ArchiveFacts;
use crate::store::{Store, StoreError};

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("list storage: {0} — nothing is deleted until a listing succeeds")]
    Listing(#[source] StoreError),
    #[error("{0}")]
    Catalog(#[from] CatalogError),
}

/// What one pass did (besides the background work it started).
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    pub plan: Plan,
    pub adopted: usize,
    pub drift: usize,
    pub debris_removed: usize,
    pub deleted: usize,
    pub backups_started: usize,
    pub archives_started: usize,
    /// Storage requests this pass made itself (list pages are counted as one request each by
    /// the store; background jobs are not included).
    pub storage_requests: u64,
    /// Whether the pass listed the whole bucket (else only the newest keys, and it deleted
    /// nothing: [`listing`]).
    pub full_listing: bool,
    /// Errors of single actions; the pass went on.
    pub errors: Vec<String>,
}

/// Adopted manifests read at once.
const ADOPTION_READS: usize = 16;

/// Which listing a pass made ([`Reconciler::list`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The whole bucket.
    Full,
    /// Only the newest keys; the rest carried from the full listing before `next_full`.
    Partial { next_full: DateTime<Utc> },
}

/// The listing partial passes build on (DESIGN §16 "Listing cost", [`listing`]).
#[derive(Debug, Default)]
struct Carried {
    /// The last pass's objects: the last full listing, with the newest keys listed since and
    /// this node's own commits and deletions applied.
    objects: Vec<ObjectInfo>,
    /// When the last full listing started (injected clock); `None`: none yet.
    full_at: Option<DateTime<Utc>>,
    /// The next pass lists everything (this node just took the maintenance lease).
    full_wanted: bool,
    /// This node's commits (data object and manifest) and when they were recorded: kept until
    /// a full listing that started after them, so one that committed under an older day while
    /// a full listing ran is never missing from the view (it would look due again).
    own: Vec<(ObjectInfo, DateTime<Utc>)>,
    /// The maintenance lease generation held when the last full listing was planned: a node
    /// that took the lease since does maintenance only after a full listing of its own.
    maintained: Option<u64>,
}

impl Carried {
    /// Record committed backups (from their manifests) as listed objects.
    fn committed(&mut self, manifests: &[&Manifest], now: DateTime<Utc>) {
        let mut objects = Vec::new();
        for m in manifests {
            objects.push(ObjectInfo {
                key: m.key.clone(),
                size: m.size,
                last_modified: m.completed_at,
                etag: None,
            });
            if let Some(manifest_key) = crate::manifest::manifest_key_for(&m.key) {
                objects.push(ObjectInfo {
                    key: manifest_key,
                    size: 0,
                    last_modified: m.completed_at,
                    etag: None,
                });
            }
        }
        listing::insert(&mut self.objects, objects.iter().cloned());
        self.own.extend(objects.into_iter().map(|o| (o, now)));
    }
}

struct State {
    policy: Arc<Policy>,
    store: Store,
    /// The policy's `[[replica]]`s, opened with it (one client each, reused by every pass).
    replicas: Vec<replica::Destination>,
    last_pass: Option<PassSummary>,
    last_success: Option<DateTime<Utc>>,
    /// Passes since start, by [`PASS_LISTINGS`].
    passes: [u64; 3],
}

/// How a pass listed, as `patina_reconcile_passes_total{listing}` names it.
const PASS_LISTINGS: [&str; 3] = ["full", "partial", "failed"];

/// The outcome of the last pass, for health checks, metrics and the status page.
#[derive(Debug, Clone)]
pub struct PassSummary {
    pub at: DateTime<Utc>,
    pub duration: Duration,
    /// `None` when the pass succeeded; the listing or catalog error otherwise.
    pub error: Option<String>,
    /// What the last successful listing held.
    pub inventory: InventoryStats,
}

/// Counts and bytes of what storage holds, by tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InventoryStats {
    pub daily_objects: u64,
    pub daily_bytes: u64,
    pub weekly_objects: u64,
    pub weekly_bytes: u64,
    pub debris_objects: u64,
    pub foreign_objects: u64,
}

impl InventoryStats {
    pub fn of(inv: &Inventory) -> InventoryStats {
        InventoryStats {
            daily_objects: inv.dumps.len() as u64,
            daily_bytes: inv.dumps.iter().map(|d| d.data.size).sum(),
            weekly_objects: inv.archives.len() as u64,
            weekly_bytes: inv.archives.iter().map(|a| a.data.size).sum(),
            debris_objects: inv.debris.len() as u64,
            foreign_objects: inv.foreign.len() as u64,
        }
    }
}

/// A consistent view of the reconciler's state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub running: BTreeSet<String>,
    pub archiving: bool,
    pub last_pass: Option<PassSummary>,
    pub last_success: Option<DateTime<Utc>>,
    /// When this daemon last committed a backup.
    pub last_backup: Option<DateTime<Utc>>,
    /// When the last full listing started (retention, debris and drift run on those).
    pub last_full_listing: Option<DateTime<Utc>>,
    /// Passes since start by listing: `full`, `partial`, `failed`.
    pub passes: [(&'static str, u64); 3],
    pub requests: crate::store::RequestCounts,
    /// Per declared replica (by name): what its syncs found.
    pub replicas: BTreeMap<String, ReplicaStatus>,
}

/// What the syncs of one replica found (DESIGN §15).
#[derive(Debug, Clone, Default)]
pub struct ReplicaStatus {
    /// True while a sync runs.
    pub syncing: bool,
    /// Committed objects of the primary the replica lacked when the last sync ended; `None`
    /// until a sync could list both.
    pub missing: Option<u64>,
    /// When a sync last ended with nothing missing of what it listed.
    pub last_sync: Option<DateTime<Utc>>,
    /// The last sync's problem (a listing or a copy that failed), if any.
    pub last_error: Option<String>,
    /// Since when it has lacked something or failed, until a sync leaves nothing missing
    /// (`replica_behind` fires when this is older than `tick` × 10).
    pub behind_since: Option<DateTime<Utc>>,
    /// Objects its retention deleted there since this daemon started.
    pub deleted: u64,
}

/// Runs reconcile passes and owns the background jobs they start.
pub struct Reconciler {
    state: Mutex<State>,
    catalog: Arc<Mutex<Catalog>>,
    clock: Clock,
    running: Arc<Mutex<BTreeSet<String>>>,
    archiving: Arc<AtomicBool>,
    last_backup: Arc<Mutex<Option<DateTime<Utc>>>>,
    permits: Arc<Semaphore>,
    permits_total: AtomicU64,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// The running restore drill, if any: aborted, not waited for, at shutdown.
    drills: tokio::sync::Mutex<JoinSet<()>>,
    drilling: Arc<AtomicBool>,
    /// When the newest drill started (from the catalog at start).
    last_drill: Arc<Mutex<Option<DateTime<Utc>>>>,
    archive_facts: replica::ArchiveFactsCache,
    /// The last listing and its classification ([`Reconciler::classify`]).
    last_listing: Mutex<Option<(Vec<ObjectInfo>, Arc<Inventory>)>>,
    /// What a partial pass builds on ([`listing`]): shared with the backup jobs, which add
    /// their commits.
    carried: Arc<Mutex<Carried>>,
    observer: Arc<dyn Observer>,
    alerts: Option<Alerts>,
    /// Replica syncs: aborted, not waited for, at shutdown (a copy cut short leaves debris at
    /// most, never a manifest).
    syncs: tokio::sync::Mutex<JoinSet<()>>,
    sync_status: Arc<Mutex<BTreeMap<String, ReplicaStatus>>>,
    /// With `[cluster]`: this daemon's heartbeat and leases (DESIGN §16).
    cluster: Option<Arc<Node>>,
}

impl Reconciler {
    pub fn new(
        policy: Arc<Policy>,
        store: Store,
        catalog: Arc<Mutex<Catalog>>,
        clock: Clock,
        observer: Arc<dyn Observer>,
    ) -> Reconciler {
        let concurrency = policy.daemon.concurrency.max(1);
        let last_drill = catalog
            .lock()
            .expect("catalog lock")
            .last_drill()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the last drill; one may run early");
                None
            });
        Reconciler {
            state: Mutex::new(State {
                replicas: replica::open_all(&policy),
                policy,
                store,
                last_pass: None,
                last_success: None,
                passes: [0; 3],
            }),
            catalog,
            clock,
            running: Arc::new(Mutex::new(BTreeSet::new())),
            archiving: Arc::new(AtomicBool::new(false)),
            last_backup: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency)),
            permits_total: AtomicU64::new(concurrency as u64),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            drills: tokio::sync::Mutex::new(JoinSet::new()),
            drilling: Arc::new(AtomicBool::new(false)),
            last_drill: Arc::new(Mutex::new(last_drill)),
            archive_facts: Arc::default(),
            last_listing: Mutex::new(None),
            carried: Arc::default(),
            observer,
            alerts: None,
            syncs: tokio::sync::Mutex::new(JoinSet::new()),
            sync_status: Arc::default(),
            cluster: None,
        }
    }

    /// Share the bucket with other daemons (DESIGN §16): each pass settles the leases first,
    /// then backs up only the databases this node holds, and runs archives, retention, debris
    /// cleanup, replica syncs and drills only while it holds the maintenance lease.
    pub fn with_cluster(mut self, node: Arc<Node>) -> Reconciler {
        self.cluster = Some(node);
        self
    }

    /// The cluster side, with `[cluster]`.
    pub fn cluster(&self) -> Option<&Arc<Node>> {
        self.cluster.as_ref()
    }

    /// Raise alerts from jobs (start, failure/success, duration, size), passes (drift, an
    /// archive waiting too long) and archives (failed, built) through `alerts`.
    pub fn with_alerts(mut self, alerts: Alerts) -> Reconciler {
        self.alerts = Some(alerts);
        self
    }

    /// The alert handle, if alerts are wired in.
    pub fn alerts(&self) -> Option<&Alerts> {
        self.alerts.as_ref()
    }

    /// Swap the policy (and storage, if it changed) for the next pass; running jobs finish
    /// under the policy they started with.
    pub fn set_policy(&self, policy: Arc<Policy>, store: Store) {
        let wanted = policy.daemon.concurrency.max(1) as u64;
        let have = self.permits_total.load(Ordering::SeqCst);
        if wanted > have {
            self.permits.add_permits((wanted - have) as usize);
            self.permits_total.store(wanted, Ordering::SeqCst);
        } else if wanted < have {
            // Take the surplus permits out of circulation as running jobs release them.
            let permits = Arc::clone(&self.permits);
            let surplus = (have - wanted) as u32;
            self.permits_total.store(wanted, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many(surplus).await {
                    p.forget();
                }
            });
        }
        let replicas = replica::open_all(&policy);
        let mut state = self.state.lock().expect("state lock");
        if state.store.location("") != store.location("") {
            // Another bucket: nothing carried over describes it.
            *self.carried.lock().expect("carried listing") = Carried::default();
        }
        state.policy = policy;
        state.store = store;
        state.replicas = replicas;
    }

    /// The current policy's replicas, opened.
    pub fn replicas(&self) -> Vec<replica::Destination> {
        self.state.lock().expect("state lock").replicas.clone()
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.state.lock().expect("state lock").policy)
    }

    /// The storage the next pass uses.
    pub fn store(&self) -> Store {
        self.state.lock().expect("state lock").store.clone()
    }

    /// The reconciler's state now.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().expect("state lock");
        Snapshot {
            running: self.running(),
            archiving: self.archiving.load(Ordering::SeqCst),
            last_pass: state.last_pass.clone(),
            last_success: state.last_success,
            last_backup: *self.last_backup.lock().expect("last backup lock"),
            last_full_listing: self.carried.lock().expect("carried listing").full_at,
            passes: std::array::from_fn(|i| (PASS_LISTINGS[i], state.passes[i])),
            requests: state.store.requests(),
            replicas: self.replica_status(&state.policy),
        }
    }

    /// What the syncs of each declared replica found, by name.
    fn replica_status(&self, policy: &Policy) -> BTreeMap<String, ReplicaStatus> {
        let known = self.sync_status.lock().expect("replica lock");
        policy
            .replicas
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    known.get(&r.name).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Databases with a backup running now.
    pub fn running(&self) -> BTreeSet<String> {
        self.running.lock().expect("running lock").clone()
    }

    /// List storage and compute the plan, without doing anything.
    pub async fn plan(&self) -> Result<(Plan, Arc<Inventory>, u64), ReconcileError> {
        let (plan, inventory, requests, _) = self.plan_listed().await?;
        Ok((plan, inventory, requests))
    }

    /// The plan, from a full or a partial listing ([`Reconciler::list`]); a partial one holds
    /// deletions, debris and drift for the next full listing.
    async fn plan_listed(&self) -> Result<(Plan, Arc<Inventory>, u64, Scope), ReconcileError> {
        let policy = self.policy();
        let store = self.store();
        // Read the catalog before listing: a key the catalog knew before the listing started
        // and that the listing lacks is really gone (no race with a backup committing now).
        // Jobs add their commits to the carried listing before they stop running, so one that
        // finished before this view is in the listing below.
        let view = self.catalog_view()?;
        let (objects, scope, mut requests) = self
            .list(&store, &policy)
            .await
            .map_err(ReconcileError::Listing)?;
        let inventory = self.classify(objects);
        let (facts, reads) = self.archive_facts(&store, &inventory).await;
        requests += reads;
        let now = (self.clock)();
        let mut plan = plan::plan(&policy, &inventory, &facts, &view, now);
        if let Scope::Partial { next_full } = scope {
            listing::hold_for_full_listing(&mut plan, next_full);
        }
        Ok((plan, inventory, requests, scope))
    }

    /// This pass's listing (DESIGN §16 "Listing cost"): the whole bucket when a full listing is
    /// due — none yet, `[daemon] full_listing` has passed, or one was asked for — and otherwise
    /// the keys after [`listing::fresh_from`], merged with the carried rest. Returns the
    /// objects, which it was, and the requests it took (one per 1,000 keys).
    async fn list(
        &self,
        store: &Store,
        policy: &Policy,
    ) -> Result<(Vec<ObjectInfo>, Scope, u64), StoreError> {
        let now = (self.clock)();
        let partial_from = {
            let carried = self.carried.lock().expect("carried listing");
            carried
                .full_at
                .filter(|at| {
                    !carried.full_wanted
                        && *at <= now
                        && (now - *at).to_std().unwrap_or_default() < policy.daemon.full_listing
                })
                .map(|at| (listing::fresh_from(at, now), at))
        };
        match partial_from {
            None => {
                let mut objects = store.list("").await?;
                let requests = listing::pages(objects.len());
                let mut carried = self.carried.lock().expect("carried listing");
                // This node's commits since the listing started may be missing from it.
                carried.own.retain(|(_, recorded)| *recorded >= now);
                listing::insert(&mut objects, carried.own.iter().map(|(o, _)| o.clone()));
                carried.objects = objects.clone();
                carried.full_at = Some(now);
                carried.full_wanted = false;
                Ok((objects, Scope::Full, requests))
            }
            Some((from, full_at)) => {
                let fresh = store.list_after("", &from).await?;
                let requests = listing::pages(fresh.len());
                let mut carried = self.carried.lock().expect("carried listing");
                let mut objects = listing::merge(&carried.objects, &from, fresh);
                let own = carried.own.iter().map(|(o, _)| o);
                listing::insert(&mut objects, own.filter(|o| o.key <= from).cloned());
                carried.objects = objects.clone();
                let next_full = full_at
                    + chrono::Duration::from_std(policy.daemon.full_listing)
                        .unwrap_or(chrono::Duration::MAX);
                Ok((objects, Scope::Partial { next_full }, requests))
            }
        }
    }

    /// The listing classified, reused from the previous pass when the listing is the same
    /// object for object (key, size, time, etag) — most ticks between backups.
    fn classify(&self, objects: Vec<ObjectInfo>) -> Arc<Inventory> {
        let mut last = self.last_listing.lock().expect("listing cache");
        if let Some((listed, inventory)) = last.as_ref()
            && *listed == objects
        {
            return Arc::clone(inventory);
        }
        let inventory = Arc::new(Inventory::classify(objects.clone()));
        *last = Some((objects, Arc::clone(&inventory)));
        inventory
    }

    fn catalog_view(&self) -> Result<CatalogView, CatalogError> {
        let catalog = self.catalog.lock().expect("catalog lock");
        Ok(CatalogView {
            running: self.running(),
            archiving: self.archiving.load(Ordering::SeqCst),
            failures: catalog
                .failure_streaks()?
                .into_iter()
                .map(|(db, (count, last_at))| (db, FailureStreak { count, last_at }))
                .collect(),
            known_keys: catalog.known_keys()?,
            known_archives: catalog.live_archives()?,
            last_drill: *self.last_drill.lock().expect("drill lock"),
            drilling: self.drilling.load(Ordering::SeqCst),
        })
    }

    /// Facts of every committed archive; manifests are read once and cached. An archive whose
    /// manifest cannot be read is left out (retention then keeps more, never less).
    async fn archive_facts(
        &self,
        store: &Store,
        inventory: &Inventory,
    ) -> (Vec<ArchiveFacts>, u64) {
        let mut reads = 0;
        let mut out = Vec::new();
        for a in &inventory.archives {
            let cached = self
                .archive_facts
                .lock()
                .expect("archive cache")
                .get(&a.manifest_key)
                .cloned();
            let facts = match cached {
                Some(f) => f,
                None => {
                    reads += 1;
                    match archive::read_manifest(store, &a.manifest_key).await {
                        Ok(m) => {
                            // Its members are restore points, whichever process built it.
                            let expires = archive_expiry(&self.policy(), a.week, m.created_at);
                            if let Err(e) = self
                                .catalog
                                .lock()
                                .expect("catalog lock")
                                .record_archive(&m, expires)
                            {
                                tracing::error!(archive = %a.manifest_key, error = %e, "cannot record the archive's restore points");
                            }
                            let f = ArchiveFacts::from_manifest(a, &m);
                            self.archive_facts
                                .lock()
                                .expect("archive cache")
                                .insert(a.manifest_key.clone(), f.clone());
                            f
                        }
                        Err(e) => {
                            tracing::warn!(archive = %a.manifest_key, error = %e, "cannot read archive manifest; its dumps are kept");
                            continue;
                        }
                    }
                }
            };
            out.push(facts);
        }
        (out, reads)
    }

    /// One reconcile pass: plan, then act. Backups and archives start in the background.
    pub async fn run_once(&self) -> Result<PassReport, ReconcileError> {
        let started = std::time::Instant::now();
        let at = (self.clock)();
        let result = self.pass().await;
        let mut state = self.state.lock().expect("state lock");
        let inventory = match &result {
            Ok((_, stats)) => *stats,
            Err(_) => state
                .last_pass
                .as_ref()
                .map(|p| p.inventory)
                .unwrap_or_default(),
        };
        state.last_pass = Some(PassSummary {
            at,
            duration: started.elapsed(),
            error: result.as_ref().err().map(|e| e.to_string()),
            inventory,
        });
        if result.is_ok() {
            state.last_success = Some(at);
        }
        let counted = match &result {
            Ok((r, _)) if r.full_listing => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        state.passes[counted] += 1;
        let location = state.store.location("");
        drop(state);
        if let Some(alerts) = &self.alerts {
            match &result {
                Ok(_) => alerts.storage_reachable(),
                Err(ReconcileError::Listing(e)) => {
                    alerts.storage_unreachable(&location, &e.to_string())
                }
                Err(_) => {}
            }
        }
        result.map(|(report, _)| report)
    }

    async fn pass(&self) -> Result<(PassReport, InventoryStats), ReconcileError> {
        let (mut plan, inventory, requests, scope) = self.plan_listed().await?;
        let stats = InventoryStats::of(&inventory);
        let policy = self.policy();
        let store = self.store();
        let now = (self.clock)();
        let full = scope == Scope::Full;
        let mut report = PassReport {
            storage_requests: requests,
            full_listing: full,
            ..PassReport::default()
        };
        let mut maintenance_ready = true;
        if let Some(node) = &self.cluster {
            let databases = policy.enabled_names();
            let busy = self.running();
            let maintenance_busy = self.archiving.load(Ordering::SeqCst) || self.drilling();
            // The pass's own listing has the heartbeats, leases and claims: no LIST of its own.
            let listed = self.listed_under(&[NODES, LEASES_ROOT, CLAIMS]);
            if let Err(e) = node
                .settle(&databases, &busy, maintenance_busy, Some(&listed))
                .await
            {
                report.errors.push(format!("settle the leases: {e}"));
            }
            self.keep_to_leases(node, &mut plan);
            // Another node's retention deleted these: recorded as deleted, not alerted as drift.
            let (elsewhere, drift): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.drift)
                .into_iter()
                .partition(|d| deleted_by_retention(&policy, &inventory, &d.data_key, now));
            plan.drift = drift;
            for d in elsewhere {
                self.catalog.lock().expect("catalog lock").mark_deleted(
                    &d.data_key,
                    "retention",
                    now,
                )?;
            }
            let maintains = node.maintains();
            {
                // Maintenance works from a listing taken while this node held the lease: one
                // that took it since the last full listing waits for a full listing of its own
                // (the carried keys may hold what the previous holder deleted meanwhile).
                let mut carried = self.carried.lock().expect("carried listing");
                if full {
                    carried.maintained = maintains;
                } else if maintains.is_some() && carried.maintained != maintains {
                    carried.full_wanted = true;
                    maintenance_ready = false;
                    plan.archives.clear();
                    plan.drill = None;
                }
            }
            if maintains.is_some() && full {
                // Claims are kept as long as the dumps they fenced, and a day more.
                let stale = listed.iter().filter(|o| {
                    o.key.starts_with(CLAIMS)
                        && policy.retention.daily.after(o.last_modified) + chrono::Duration::days(1)
                            < now
                });
                for o in stale.take(plan::ADOPTIONS_PER_PASS) {
                    plan.debris.push(plan::DebrisRemoval {
                        key: o.key.clone(),
                        reason: "a claim older than the daily retention and a day".into(),
                    });
                }
            }
        }
        if let Some(alerts) = &self.alerts {
            alerts.plan_observed(&plan);
        }

        // Backups first, so the bookkeeping and deletions below never delay them (a takeover's
        // included): one job per trigger kind, in the plan's priority order.
        let mut by_trigger: BTreeMap<&'static str, (Trigger, Vec<String>)> = BTreeMap::new();
        let fires: BTreeMap<String, DateTime<Utc>> = plan
            .backups
            .iter()
            .map(|b| (b.database.clone(), b.fire.unwrap_or(DateTime::UNIX_EPOCH)))
            .collect();
        for b in &plan.backups {
            by_trigger
                .entry(b.trigger.as_str())
                .or_insert((b.trigger, Vec::new()))
                .1
                .push(b.database.clone());
        }
        for (_, (trigger, databases)) in by_trigger {
            report.backups_started += databases.len();
            self.start_job(
                JobRequest {
                    job_id: None,
                    databases,
                    trigger,
                    initiated_by: Some("daemon".into()),
                    reason: None,
                },
                &fires,
                Arc::clone(&policy),
                store.clone(),
            )
            .await;
        }

        // Manifests read 16 at a time: with several daemons each one adopts the others'
        // backups (hundreds after a nightly run), and read one by one they held the pass — and
        // the backups it starts, a takeover's included — for many seconds.
        let read: Vec<_> = futures::stream::iter(&plan.adoptions)
            .map(|a| {
                let store = &store;
                async move { (a, bucket::read_manifest(store, &a.manifest_key).await) }
            })
            .buffered(ADOPTION_READS)
            .collect()
            .await;
        for (a, manifest) in read {
            report.storage_requests += 1;
            match manifest {
                Ok(m) => {
                    let expires = policy.retention.daily.after(m.completed_at);
                    self.catalog
                        .lock()
                        .expect("catalog lock")
                        .adopt(&m, expires)?;
                    tracing::info!(database = %a.database, key = %a.data_key, "adopted a backup found in storage");
                    report.adopted += 1;
                }
                Err(e) => report.errors.push(format!("adopt {}: {e}", a.data_key)),
            }
        }
        for d in &plan.drift {
            tracing::warn!(key = %d.data_key, "drift: a committed backup vanished from storage");
            self.catalog.lock().expect("catalog lock").mark_deleted(
                &d.data_key,
                "vanished",
                now,
            )?;
            report.drift += 1;
        }
        if let Some(node) = &self.cluster
            && !(plan.debris.is_empty() && plan.deletions.is_empty())
        {
            // Deletions re-read the maintenance lease first: a node that lost it deletes nothing.
            report.storage_requests += 1;
            match node.confirm_maintenance().await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(
                        "maintenance lease lost before deleting: nothing deleted this pass"
                    );
                    plan.debris.clear();
                    plan.deletions.clear();
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("read the maintenance lease: {e}"));
                    plan.debris.clear();
                    plan.deletions.clear();
                }
            }
        }
        // Several daemons: each deletion first checks, without I/O, that the maintenance lease
        // confirmed above is still this node's (a stall past the ttl ends the batch).
        let still_maintains = || {
            self.cluster
                .as_ref()
                .is_none_or(|n| n.maintains().is_some())
        };
        for d in &plan.debris {
            if !still_maintains() {
                report
                    .errors
                    .push("the maintenance lease lapsed: the rest of the deletions wait".into());
                break;
            }
            report.storage_requests += 1;
            match store.delete(&d.key).await {
                Ok(()) => {
                    tracing::info!(key = %d.key, reason = %d.reason, "removed debris");
                    self.forget(&[&d.key]);
                    report.debris_removed += 1;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for d in &plan.deletions {
            if !still_maintains() {
                report
                    .errors
                    .push("the maintenance lease lapsed: the rest of the deletions wait".into());
                break;
            }
            // Manifest first (a deletion cut short leaves debris, never a manifest without its
            // data); the lease is checked again before the second request, so a node paused
            // between the two sends nothing once it resumes without the lease.
            report.storage_requests += 1;
            if let Err(e) = store.delete(&d.manifest_key).await {
                report.errors.push(e.to_string());
                continue;
            }
            self.forget(&[&d.manifest_key]);
            self.catalog.lock().expect("catalog lock").mark_deleted(
                &d.data_key,
                "retention",
                now,
            )?;
            self.archive_facts
                .lock()
                .expect("archive cache")
                .remove(&d.manifest_key);
            report.deleted += 1;
            if !still_maintains() {
                report.errors.push(format!(
                    "the maintenance lease lapsed after deleting {}: its data object {} is left \
                     as debris for the next holder, and the rest of the deletions wait",
                    d.manifest_key, d.data_key
                ));
                break;
            }
            report.storage_requests += 1;
            match store.delete(&d.data_key).await {
                Ok(()) => {
                    tracing::info!(key = %d.data_key, tier = d.tier, reason = %d.reason, "deleted by retention");
                    self.forget(&[&d.data_key]);
                }
                Err(e) => report.errors.push(format!(
                    "{e} (its manifest is deleted: the data object is debris, removed later)"
                )),
            }
        }

        if let Some(a) = plan.archives.first() {
            // One archive at a time; the next week waits for the next pass.
            report.archives_started += 1;
            self.start_archive(
                a.week,
                a.dump_manifests.clone(),
                Arc::clone(&policy),
                store.clone(),
            )
            .await;
        }
        if let Some(d) = &plan.drill {
            self.start_drill(d.fire, d.sample, &policy, store.clone())
                .await;
        }
        let maintains = self
            .cluster
            .as_ref()
            .is_none_or(|n| n.maintains().is_some());
        if !policy.replicas.is_empty() && maintains && maintenance_ready {
            let source = primary_after(&plan, &inventory);
            self.start_syncs(&policy, &store, source).await;
        }
        for e in &report.errors {
            tracing::warn!(error = %e, "reconcile action failed");
        }
        report.plan = plan;
        Ok((report, stats))
    }

    /// Start a backup job in the background (also used for manual triggers). Databases that
    /// already have a job running are left out; returns the job id and the databases started
    /// (none: nothing was started).
    ///
    /// With `[cluster]`, each database is first claimed (DESIGN §16) under `fires[database]`
    /// (a schedule fire) or the job id: one this node does not hold, or whose fire another node
    /// claimed or backed up, is left out too.
    pub async fn start_job(
        &self,
        mut request: JobRequest,
        fires: &BTreeMap<String, DateTime<Utc>>,
        policy: Arc<Policy>,
        store: Store,
    ) -> (String, Vec<String>) {
        let job_id = request
            .job_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        {
            let mut running = self.running.lock().expect("running lock");
            request.databases.retain(|d| !running.contains(d));
            running.extend(request.databases.iter().cloned());
        }
        let tickets = match &self.cluster {
            None => None,
            Some(node) => {
                let tickets = self
                    .claim_all(node, &request.databases, fires, &job_id)
                    .await;
                let mut running = self.running.lock().expect("running lock");
                request.databases.retain(|d| {
                    let claimed = tickets.contains_key(d);
                    if !claimed {
                        running.remove(d);
                    }
                    claimed
                });
                Some(Arc::new(tickets))
            }
        };
        let started = request.databases.clone();
        if started.is_empty() {
            return (job_id, started);
        }
        let ctx = backup::Context {
            policy,
            store,
            catalog: Arc::clone(&self.catalog),
            clock: Arc::clone(&self.clock),
            tickets,
        };
        let running = Arc::clone(&self.running);
        let permits = Arc::clone(&self.permits);
        let observer = Arc::clone(&self.observer);
        let last_backup = Arc::clone(&self.last_backup);
        let names = started.clone();
        let alerts = self.alerts.clone();
        let carried = Arc::clone(&self.carried);
        let clock = Arc::clone(&self.clock);
        self.tasks.lock().await.spawn(async move {
            let guard = RunningGuard {
                running,
                names: names.clone(),
            };
            if let Some(a) = &alerts {
                a.job_started(request.job_id.as_deref().unwrap_or_default(), &names);
            }
            let report = backup::run_job_limited(&ctx, request, observer, Some(permits)).await;
            match report {
                Ok(r) => {
                    let failed = r.failed();
                    tracing::info!(job = %r.job_id, databases = names.len(), failed, "job finished");
                    // Before the databases leave `running`: the next plan sees these backups.
                    let committed: Vec<&Manifest> =
                        r.results.iter().filter_map(|(_, o)| o.as_ref().ok()).collect();
                    carried
                        .lock()
                        .expect("carried listing")
                        .committed(&committed, clock());
                    let newest = r
                        .results
                        .iter()
                        .filter_map(|(_, o)| o.as_ref().ok().map(|m| m.completed_at))
                        .max();
                    if let Some(t) = newest {
                        let mut last = last_backup.lock().expect("last backup lock");
                        *last = Some(last.map_or(t, |l| l.max(t)));
                    }
                    if let Some(a) = &alerts {
                        a.job_finished(&r.summary());
                    }
                }
                Err(e) => tracing::error!(error = %e, "job could not be recorded"),
            }
            drop(guard);
        });
        (job_id, started)
    }

    /// Take what this node deleted out of the carried listing: a partial pass must not see it.
    fn forget(&self, keys: &[&str]) {
        let mut carried = self.carried.lock().expect("carried listing");
        listing::remove(&mut carried.objects, keys.iter().copied());
    }

    /// The objects of the last listing under any of `prefixes`.
    fn listed_under(&self, prefixes: &[&str]) -> Vec<ObjectInfo> {
        let last = self.last_listing.lock().expect("listing cache");
        last.as_ref()
            .map(|(objects, _)| {
                objects
                    .iter()
                    .filter(|o| prefixes.iter().any(|p| o.key.starts_with(p)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Several daemons: keep in `plan` only what this node's leases allow — backups of the
    /// databases it holds (the others are deferred, naming their holder), and archives,
    /// retention, debris and the drill only with the maintenance lease.
    fn keep_to_leases(&self, node: &Node, plan: &mut Plan) {
        let view = node.view();
        let mut deferred = Vec::new();
        plan.backups.retain(|b| {
            let held = node.holds(&b.database);
            if !held {
                deferred.push(plan::Deferred {
                    what: format!("backup of {}", b.database),
                    until: None,
                    reason: match view.table.holders.get(&b.database) {
                        Some(h) if *h != view.node => format!("held by node {h}"),
                        _ => "no valid lease on this node yet".into(),
                    },
                });
            }
            held
        });
        if node.maintains().is_none() {
            let holder = view
                .table
                .maintenance_holder
                .clone()
                .filter(|h| *h != view.node)
                .map_or("no node yet".to_string(), |h| format!("node {h}"));
            if !(plan.archives.is_empty()
                && plan.deletions.is_empty()
                && plan.debris.is_empty()
                && plan.drill.is_none())
            {
                deferred.push(plan::Deferred {
                    what: "archives, retention, debris and drills".into(),
                    until: None,
                    reason: format!("the maintenance lease is held by {holder}"),
                });
            }
            plan.archives.clear();
            plan.deletions.clear();
            plan.debris.clear();
            plan.drill = None;
        }
        plan.deferred.extend(deferred);
    }

    /// Claim each database's fire (or the job) for this node, a few at a time; the refused
    /// ones are logged and left out.
    async fn claim_all(
        &self,
        node: &Arc<Node>,
        databases: &[String],
        fires: &BTreeMap<String, DateTime<Utc>>,
        job_id: &str,
    ) -> BTreeMap<String, Arc<Ticket>> {
        // Owned futures: the daemon spawns this, and borrowed closures trip rustc's lifetime
        // inference (as in `backup::run_job_limited`).
        let claims: Vec<_> = databases
            .iter()
            .map(|db| {
                let fire = match fires.get(db) {
                    Some(at) => at.format("%Y%m%dT%H%M%SZ").to_string(),
                    None => format!("job-{job_id}"),
                };
                let (db, node, job) = (db.clone(), Arc::clone(node), job_id.to_string());
                async move {
                    let result = node.claim(&db, &fire, &job).await;
                    (db, result)
                }
            })
            .collect();
        let mut claimed = futures::stream::iter(claims).buffer_unordered(16);
        let mut out = BTreeMap::new();
        while let Some((db, result)) = claimed.next().await {
            match result {
                Ok(ticket) => {
                    out.insert(db, Arc::new(ticket));
                }
                Err(e @ (Refused::Store { .. } | Refused::Unreadable { .. })) => {
                    tracing::warn!(database = %db, error = %e, "could not claim the backup; retried next pass")
                }
                Err(e) => {
                    tracing::info!(database = %db, reason = %e, "backup left to another node")
                }
            }
        }
        out
    }

    /// Start a restore drill in the background (at most one at a time).
    async fn start_drill(&self, fire: DateTime<Utc>, sample: u32, policy: &Policy, store: Store) {
        if self.drilling.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.last_drill.lock().expect("drill lock") = Some((self.clock)().max(fire));
        let ctx = drill::DrillContext {
            store,
            catalog: Arc::clone(&self.catalog),
            clock: Arc::clone(&self.clock),
            alerts: self.alerts.clone(),
            databases: policy.databases.iter().map(|d| d.name.clone()).collect(),
            sample,
            scratch_dir: policy.daemon.state_dir.join("scratch").join("drill"),
            seed: uuid::Uuid::new_v4().as_u64_pair().0,
            keys: restore::Keys::from_policy(policy),
            replicas: self.replicas(),
        };
        // Cleared on every way out, an abort at shutdown included (before the first poll too:
        // the guard is moved into the task, not made by it).
        let running = ClearOnDrop(Arc::clone(&self.drilling));
        self.drills.lock().await.spawn(async move {
            let _running = running;
            if let Err(e) = drill::run(&ctx).await {
                tracing::error!(error = %e, "restore drill could not list the restore points");
            }
        });
    }

    /// What each replica would receive and delete after this `plan` of the primary
    /// (`patina plan`): its name, location and plan, or why it could not be listed. Nothing is
    /// written.
    pub async fn replica_plans(
        &self,
        plan: &Plan,
        inventory: &Arc<Inventory>,
    ) -> Vec<(String, String, Result<replication::ReplicaPlan, String>)> {
        let source = primary_after(plan, inventory);
        let mut out = Vec::new();
        for d in self.replicas() {
            let planned = replica::plan(&source, &d, &self.archive_facts, plan.at)
                .await
                .map(|(p, _)| p)
                .map_err(|e| e.to_string());
            out.push((d.name.clone(), d.store.location(""), planned));
        }
        out
    }

    /// Start a sync of every replica that has none running (DESIGN §15): copies what it lacks
    /// from the primary and applies its retention, in the background, holding no backup
    /// permit. Also where `replica_behind` is judged, every pass, so a sync that hangs is seen.
    async fn start_syncs(&self, policy: &Policy, primary: &Store, source: Arc<Inventory>) {
        let scratch = policy.daemon.state_dir.join("scratch").join("replica");
        let now = (self.clock)();
        let bound = replica_behind_bound(policy);
        for destination in self.replicas() {
            let behind = {
                let mut known = self.sync_status.lock().expect("replica lock");
                let status = known.entry(destination.name.clone()).or_default();
                let behind = status
                    .behind_since
                    .filter(|since| now - *since > bound)
                    .map(|since| (since, status.missing, status.last_error.clone()));
                if status.syncing {
                    None
                } else {
                    status.syncing = true;
                    // Until this sync says otherwise: a sync that never ends is behind too.
                    status.behind_since.get_or_insert(now);
                    Some(behind)
                }
            };
            let Some(behind) = behind else {
                continue;
            };
            if let (Some(alerts), Some((since, missing, error))) = (&self.alerts, behind) {
                alerts.replica_behind(&destination.name, missing, since, error.as_deref());
            }
            let sync_status = Arc::clone(&self.sync_status);
            let clock = Arc::clone(&self.clock);
            let alerts = self.alerts.clone();
            let facts = Arc::clone(&self.archive_facts);
            let (primary, scratch) = (primary.clone(), scratch.join(&destination.name));
            let source = Arc::clone(&source);
            let running = SyncingGuard {
                sync_status: Arc::clone(&sync_status),
                name: destination.name.clone(),
            };
            self.syncs.lock().await.spawn(async move {
                let _running = running;
                let result =
                    replica::sync(&primary, &source, &destination, &facts, &scratch, now).await;
                let ended = clock();
                let caught_up = {
                    let mut known = sync_status.lock().expect("replica lock");
                    let status = known.entry(destination.name.clone()).or_default();
                    match result {
                        Ok(report) => {
                            if report.missing_before > 0
                                || report.deleted > 0
                                || !report.errors.is_empty()
                            {
                                tracing::info!(replica = %report.replica, copied = report.copied, missing = report.missing_after, deleted = report.deleted, bytes = report.bytes, "replica sync finished");
                            }
                            status.missing = Some(report.missing_after as u64);
                            status.deleted += report.deleted as u64;
                            status.last_error = report.errors.last().cloned();
                            if report.missing_after == 0 && report.errors.is_empty() {
                                status.last_sync = Some(ended);
                                status.behind_since = None;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "replica sync could not start");
                            status.missing = None;
                            status.last_error = Some(e.to_string());
                        }
                    }
                    status.behind_since.is_none()
                };
                if let (Some(alerts), true) = (&alerts, caught_up) {
                    alerts.replica_caught_up(&destination.name);
                }
            });
        }
    }

    /// True while a restore drill runs.
    pub fn drilling(&self) -> bool {
        self.drilling.load(Ordering::SeqCst)
    }

    async fn start_archive(
        &self,
        week: IsoWeek,
        dump_manifests: Vec<String>,
        policy: Arc<Policy>,
        store: Store,
    ) {
        if self.archiving.swap(true, Ordering::SeqCst) {
            return;
        }
        let archiving = Arc::clone(&self.archiving);
        let catalog = Arc::clone(&self.catalog);
        let clock = Arc::clone(&self.clock);
        let alerts = self.alerts.clone();
        let node = self.cluster.clone();
        self.tasks.lock().await.spawn(async move {
            let result =
                build_archive(&store, week, &dump_manifests, &policy, &clock, node.as_ref()).await;
            match result {
                Ok(m) => {
                    let expires = archive_expiry(&policy, week, m.created_at);
                    if let Err(e) = catalog
                        .lock()
                        .expect("catalog lock")
                        .record_archive(&m, expires)
                    {
                        tracing::error!(error = %e, "archive committed but not recorded");
                    }
                    tracing::info!(week = %week, members = m.members.len(), size = m.size, "weekly archive committed");
                    if let Some(a) = &alerts {
                        a.archive_committed(&week.to_string());
                    }
                }
                Err(e) => {
                    tracing::error!(week = %week, error = %e, "weekly archive failed");
                    if let Some(a) = &alerts {
                        a.archive_failed(&week.to_string(), &e);
                    }
                }
            }
            archiving.store(false, Ordering::SeqCst);
        });
    }

    /// Wait until every background job (and drill) started so far has finished.
    pub async fn wait_idle(&self) {
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        drop(tasks);
        let mut drills = self.drills.lock().await;
        while drills.join_next().await.is_some() {}
        drop(drills);
        let mut syncs = self.syncs.lock().await;
        while syncs.join_next().await.is_some() {}
    }

    /// Stop: let running jobs finish for up to `grace`, then abort them (an aborted backup
    /// writes no manifest; its job stays `running` and is marked `interrupted` on next start).
    /// Returns true when everything finished within the grace period.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        // A drill is only a check: it stops at once (its scratch file goes with it).
        {
            let mut drills = self.drills.lock().await;
            drills.abort_all();
            while drills.join_next().await.is_some() {}
            let mut syncs = self.syncs.lock().await;
            syncs.abort_all();
            while syncs.join_next().await.is_some() {}
        }
        let mut tasks = self.tasks.lock().await;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        if !drained {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let now = (self.clock)();
            if let Err(e) = self
                .catalog
                .lock()
                .expect("catalog lock")
                .mark_interrupted(now)
            {
                tracing::error!(error = %e, "could not mark aborted jobs");
            }
        }
        drained
    }
}

/// Several daemons: whether `key`, gone from storage, is one retention would have deleted by
/// `now` ([`crate::retention::KeepRules::would_have_deleted`] for a dump, an expired archive)
/// — so the node holding the maintenance lease deleted it, and it is not drift.
fn deleted_by_retention(
    policy: &Policy,
    inventory: &Inventory,
    key: &str,
    now: DateTime<Utc>,
) -> bool {
    match crate::manifest::parse_key(key) {
        Some(crate::manifest::ParsedKey::DumpData { id, .. }) => {
            let newer_exists = inventory
                .latest(&id.database)
                .is_some_and(|newest| newest.id.taken_at > id.taken_at);
            let week = IsoWeek::of(id.taken_at);
            let archived_week = inventory.archives.iter().any(|a| a.week == week);
            crate::retention::KeepRules::from(&policy.retention).would_have_deleted(
                id.taken_at,
                newer_exists,
                archived_week,
                now,
            )
        }
        Some(crate::manifest::ParsedKey::ArchiveData { week, .. }) => {
            archive_expiry(policy, week, now) <= now
        }
        _ => false,
    }
}

/// When the weekly tier releases the archive of `week` (aged from the end of its week, as
/// retention does; the monthly tier may keep it longer). Without a weekly tier: `created_at`.
pub fn archive_expiry(policy: &Policy, week: IsoWeek, created_at: DateTime<Utc>) -> DateTime<Utc> {
    match (policy.retention.weekly, week.start()) {
        (Some(weekly), Some(start)) => weekly.after(start + chrono::Duration::days(7)),
        _ => created_at,
    }
}

async fn build_archive(
    store: &Store,
    week: IsoWeek,
    dump_manifests: &[String],
    policy: &Policy,
    clock: &Clock,
    node: Option<&Arc<Node>>,
) -> Result<crate::manifest::ArchiveManifest, String> {
    let reads: Vec<_> = dump_manifests
        .iter()
        .cloned()
        .map(|key| {
            let store = store.clone();
            async move {
                let bytes = store.get(&key).await.map_err(|e| e.to_string())?;
                Manifest::from_json(&bytes, &key).map_err(|e| e.to_string())
            }
        })
        .collect();
    let reads = futures::stream::iter(reads)
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    let manifests: Vec<Manifest> = reads.into_iter().collect::<Result<_, _>>()?;
    let job_id = uuid::Uuid::new_v4().to_string();
    archive::build_fenced(
        store,
        week,
        &manifests,
        policy.storage.compression,
        &job_id,
        clock(),
        node,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Removes a job's databases from the running set however the job ends (even aborted).
struct RunningGuard {
    running: Arc<Mutex<BTreeSet<String>>>,
    names: Vec<String>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            for n in &self.names {
                running.remove(n);
            }
        }
    }
}

pub use crate::clock::ManualClock;

/// The primary as a pass leaves it, what replicas are synced from: its listing, less what
/// retention deletes.
fn primary_after(plan: &Plan, inventory: &Arc<Inventory>) -> Arc<Inventory> {
    if plan.deletions.is_empty() {
        // Most passes: the listing as it is, not a copy of it.
        return Arc::clone(inventory);
    }
    let deleted: BTreeSet<&str> = plan.deletions.iter().map(|d| d.data_key.as_str()).collect();
    let mut source = Inventory::clone(inventory);
    source
        .dumps
        .retain(|d| !deleted.contains(d.data.key.as_str()));
    source
        .archives
        .retain(|a| !deleted.contains(a.data.key.as_str()));
    Arc::new(source)
}

/// How long a replica may lack something before `replica_behind` (DESIGN §15): `tick` × 10.
pub fn replica_behind_bound(policy: &Policy) -> chrono::Duration {
    chrono::Duration::from_std(policy.daemon.tick * 10).unwrap_or(chrono::Duration::MAX)
}

/// Marks a replica's sync finished however it ends (even aborted).
struct SyncingGuard {
    sync_status: Arc<Mutex<BTreeMap<String, ReplicaStatus>>>,
    name: String,
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        if let Ok(mut known) = self.sync_status.lock()
            && let Some(status) = known.get_mut(&self.name)
        {
            status.syncing = false;
        }
    }
}

/// Sets the flag false when dropped.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
