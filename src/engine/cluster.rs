//! Several daemons on one bucket (DESIGN §16, issue 18): the I/O of [`crate::lease`]'s
//! decisions, and the daemon's side of them ([`Node`]).
//!
//! - **Membership.** Each node renews its heartbeat `nodes/{node}.json` on a timer of its own
//!   ([`Node::heartbeat`]: a GET every sixth of the ttl, a PUT every third) and watches the
//!   others' from the reconcile pass's listing ([`Membership::watch_listed`]): a heartbeat is
//!   alive while it keeps changing. A GET only when the listing shows a change.
//! - **Leases.** Once per pass, [`Leases::settle`] moves each database lease
//!   (`leases/db/{name}.json`) and the maintenance lease (`leases/maintenance.json`) toward the
//!   node [`crate::lease::assign`] gives it among the live nodes, with conditional writes. Lease
//!   objects are written only when their holder changes (see [`crate::lease`] for why, and why
//!   that departs from DESIGN §16's "renewed every lease_ttl/3").
//! - **Fencing.** A backup runs under a [`Ticket`] from [`Node::claim`]: the claim
//!   `claims/{name}/{fire}.json` is created first (`If-None-Match: *`), every upload part checks
//!   the lease without I/O ([`Ticket::check`]), and [`Ticket::commit`] re-reads the lease and
//!   turns the claim `committed` with `If-Match` — the commit point — before the manifest is
//!   created. The committed claim carries the manifest's bytes, so one lost to a crash between
//!   the two writes is written by the next claimer ([`Node::claim`]); a claim left `running`
//!   by an older lease term is taken over ([`crate::lease::claim_verdict`]). Archives are built
//!   and deletions made only under the maintenance lease, re-read before each batch and checked
//!   without I/O before each deletion.
//!
//! Cost (R2 Class A = PUT, LIST): the heartbeats are the only regular writes, at most 6 a
//! minute per node at the default 30 s ttl (measured: 2.4 per ttl, ≈ 0.62 M a month for three
//! nodes); the listing is the reconcile pass's own. BENCHMARKS.md has the measured figures.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use crate::inventory::ObjectInfo;
use crate::lease::{ClaimBody, ClaimState, Condition, LeaseBody, Mono, Step, Timing, Tracker};
use crate::store::{ETag, PutMode, Store, StoreError};

/// Where node heartbeats live.
pub const NODES: &str = "nodes/";

/// The key of `node`'s heartbeat.
pub fn heartbeat_key(node: &str) -> String {
    format!("{NODES}{node}.json")
}

/// The node a heartbeat key names ([`heartbeat_key`]'s inverse); `None` for other keys.
fn node_of(key: &str) -> Option<&str> {
    key.strip_prefix(NODES)?.strip_suffix(".json")
}

/// This node's view of the nodes sharing the bucket.
#[derive(Clone)]
pub struct Membership {
    store: Store,
    me: String,
    timing: Timing,
    own: Tracker,
    others: BTreeMap<String, Tracker>,
    /// Each other node's heartbeat as the last listing showed it ([`stamp`]).
    stamps: BTreeMap<String, String>,
    /// Grows by one each time this node's heartbeat is written after a lapse (or first): the
    /// leases of an older term are not trusted any more ([`Leases::settle`] re-takes them).
    epoch: u64,
}

/// Why a beat failed: storage could not be read or listed (a write that loses a race is not an
/// error: the next beat reads again).
#[derive(Debug, thiserror::Error)]
#[error("node heartbeat: {0}")]
pub struct BeatError(#[from] StoreError);

impl Membership {
    pub fn new(store: Store, me: impl Into<String>, timing: Timing) -> Membership {
        Membership {
            store,
            me: me.into(),
            timing,
            own: Tracker::default(),
            others: BTreeMap::new(),
            stamps: BTreeMap::new(),
            epoch: 0,
        }
    }

    /// [`Membership::renew`], then [`Membership::watch`].
    pub async fn beat(
        &mut self,
        now: Mono,
        wall: DateTime<Utc>,
        leaving: bool,
    ) -> Result<(), BeatError> {
        self.renew(now, wall, leaving).await?;
        self.watch(now).await
    }

    /// Renew this node's heartbeat when a third of the ttl has passed since its last write, at
    /// `now` (this node's monotonic clock; `wall` only for the body's `expiresAt`); one GET,
    /// and one PUT when due. `leaving`: write it released (shutdown), so the others need not
    /// wait out the ttl. Must run at least every ttl/3, whatever the daemon's tick.
    pub async fn renew(
        &mut self,
        now: Mono,
        wall: DateTime<Utc>,
        leaving: bool,
    ) -> Result<(), BeatError> {
        let key = heartbeat_key(&self.me);
        let read = read_body(&self.store, &key).await?;
        self.own.observe(read, now);
        if leaving
            && !self.own.holds()
            && let Some((etag, body)) = self.own.seen()
            && body.node == self.me
            && !body.released
        {
            // Leaving with a heartbeat this run wrote but did not record (the timer was
            // stopped mid-write): give it up all the same, so the others need not wait.
            let body = LeaseBody {
                released: true,
                beat: body.beat + 1,
                expires_at: wall,
                ..body.clone()
            };
            let bytes = serde_json::to_vec(&body).expect("a heartbeat serializes");
            if let Err(e) = self
                .store
                .put(&key, bytes.into(), PutMode::Replace(etag.clone()))
                .await
            {
                tracing::warn!(key, error = %e, "heartbeat not released");
            }
            return Ok(());
        }
        let was_valid = self.own.valid(now, self.timing).is_some();
        if let Step::Write { condition, body } =
            self.own.step(&self.me, !leaving, now, wall, self.timing)
        {
            let mode = match condition {
                Condition::Absent => PutMode::Create,
                Condition::Unchanged(etag) => PutMode::Replace(etag),
            };
            let bytes = serde_json::to_vec(&body).expect("a heartbeat serializes");
            match self.store.put(&key, bytes.into(), mode).await {
                Ok(Some(etag)) => {
                    if !was_valid && !body.released {
                        self.epoch += 1;
                    }
                    self.own.written(etag, body, now)
                }
                Ok(None) => {
                    tracing::warn!(key, "the store reported no etag for a heartbeat");
                    self.own.conflict();
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "heartbeat not written");
                    self.own.conflict();
                }
            }
        }
        Ok(())
    }

    /// Read the other nodes' heartbeats: one LIST of `nodes/`, and a GET of each that changed.
    /// A LIST is an R2 Class A operation like a PUT: the daemon uses the pass's own listing
    /// instead ([`Membership::watch_listed`]).
    pub async fn watch(&mut self, now: Mono) -> Result<(), BeatError> {
        let listed = self.store.list(NODES).await?;
        self.watch_listed(&listed, now).await
    }

    /// [`Membership::watch`] from a listing of the bucket (the reconcile pass's): no LIST of
    /// its own, and a GET only for a heartbeat that changed since the last listing (its etag,
    /// or its size and time where the listing has no etags) — liveness is it moving.
    pub async fn watch_listed(
        &mut self,
        listed: &[ObjectInfo],
        now: Mono,
    ) -> Result<(), BeatError> {
        let mut seen = BTreeMap::new();
        let mut stamps = BTreeMap::new();
        for object in listed {
            let Some(node) = node_of(&object.key) else {
                continue;
            };
            if node == self.me {
                continue;
            }
            let mut tracker = self.others.remove(node).unwrap_or_default();
            let listed_stamp = stamp(object);
            let known = match (self.stamps.get(node), tracker.seen()) {
                (Some(known), Some((etag, body))) if *known == listed_stamp => {
                    Some((etag.clone(), body.clone()))
                }
                _ => None,
            };
            let read = match known {
                Some(read) => Some(read),
                None => read_body(&self.store, &object.key).await?,
            };
            tracker.observe(read, now);
            stamps.insert(node.to_string(), listed_stamp);
            seen.insert(node.to_string(), tracker);
        }
        self.others = seen;
        self.stamps = stamps;
        Ok(())
    }

    /// True while this node may start side effects: its own heartbeat is held and fresh.
    pub fn valid(&self, now: Mono) -> bool {
        self.own.valid(now, self.timing).is_some()
    }

    /// Until when [`Membership::valid`] holds without another renewal.
    pub fn valid_until(&self) -> Option<Mono> {
        self.own.valid_until(self.timing)
    }

    /// The current term of this node's heartbeat (see the field).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The timing rules.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The live nodes, sorted: this one while [`Membership::valid`], and every other whose
    /// heartbeat moved within the ttl.
    pub fn live(&self, now: Mono) -> Vec<String> {
        let mut out: Vec<String> = self
            .others
            .iter()
            .filter(|(_, t)| t.alive(now, self.timing))
            .map(|(n, _)| n.clone())
            .collect();
        if self.valid(now) {
            out.push(self.me.clone());
        }
        out.sort();
        out
    }
}

impl Membership {
    /// This node's name.
    pub fn node(&self) -> &str {
        &self.me
    }

    /// Whether `node` is alive as far as this node can tell now (itself: while valid).
    pub fn is_alive(&self, node: &str, now: Mono) -> bool {
        if node == self.me {
            return self.valid(now);
        }
        self.others
            .get(node)
            .is_some_and(|t| t.alive(now, self.timing))
    }
}

/// Where all leases live.
pub const LEASES_ROOT: &str = "leases/";

/// Where database leases live.
pub const LEASES: &str = "leases/db/";

/// The maintenance lease: archives, retention, debris, replica syncs and drills run only on
/// its holder.
pub const MAINTENANCE: &str = "leases/maintenance.json";

/// How the maintenance lease is named where databases are (metrics, `/status`): database
/// names start with a letter or digit, so it cannot be one.
pub const MAINTENANCE_LABEL: &str = "_maintenance";

/// Where claims live.
pub const CLAIMS: &str = "claims/";

/// The key of `database`'s lease.
pub fn lease_key(database: &str) -> String {
    format!("{LEASES}{database}.json")
}

/// The key of the claim of one schedule fire (`fire` as in manifests' keys, UTC) or job.
pub fn claim_key(database: &str, fire: &str) -> String {
    format!("{CLAIMS}{database}/{fire}.json")
}

/// A lease this node holds: the generation it acts under and the etag its write left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub generation: u64,
    pub etag: ETag,
}

/// Why a lease changed hands here (`patina_lease_changes_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Taken while absent or released.
    Taken,
    /// Taken from a node whose heartbeat stopped (or from this node's own earlier run or term).
    TakenOver,
    /// Given up: above this node's share, or at shutdown.
    Released,
    /// Found written by another node while this one thought it held it.
    Lost,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Taken => "taken",
            Change::TakenOver => "taken_over",
            Change::Released => "released",
            Change::Lost => "lost",
        }
    }
}

/// What [`Leases::settle`] found: what this node holds, who holds the rest, and what changed.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Databases this node holds.
    pub held: BTreeMap<String, Held>,
    /// The maintenance lease, if this node holds it.
    pub maintenance: Option<Held>,
    /// Every database's holder as read (this node included); absent: nobody.
    pub holders: BTreeMap<String, String>,
    pub maintenance_holder: Option<String>,
    /// The changes made or noticed by this settle, by database ("" for maintenance).
    pub changes: Vec<(String, Change)>,
}

/// This node's side of the lease table.
#[derive(Debug, Default)]
pub struct Leases {
    /// Per lease key: the etag and generation of the last lease this run wrote (held while the
    /// lease still has that etag and the heartbeat's term has not changed).
    written: BTreeMap<String, Held>,
    /// The heartbeat term the entries of `written` belong to.
    epoch: u64,
    /// Lease bodies by key, as last read: a listing that shows the lease unchanged needs no
    /// GET ([`Leases::read`]).
    bodies: BTreeMap<String, Cached>,
}

/// A lease body as read, with the listing's stamp of it then.
#[derive(Debug, Clone)]
struct Cached {
    stamp: String,
    etag: ETag,
    body: LeaseBody,
    read_at: Mono,
}

/// How long a lease is taken as unchanged on the word of a listing without etags (its size
/// and time only).
pub const STAMP_TRUST: std::time::Duration = std::time::Duration::from_secs(60);

/// What a listing says about an object's version: its etag, or else its size and time.
fn stamp(o: &ObjectInfo) -> String {
    match &o.etag {
        Some(e) => format!("etag {e}"),
        None => format!("{} bytes at {}", o.size, o.last_modified.timestamp_millis()),
    }
}

impl Leases {
    /// Move every lease of `databases` (and the maintenance lease) toward this node holding
    /// exactly those `assign` gives it among the live nodes: take what is absent, released,
    /// its own from an earlier run or term, or held by a dead node; release what it holds and
    /// should not, except the `busy` ones (a backup runs; the maintenance lease: when
    /// `maintenance_busy`), released between jobs instead. A write that loses a race is not an
    /// error (the winner holds it); a store that cannot be read is.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle(
        &mut self,
        store: &Store,
        members: &Membership,
        databases: &[String],
        busy: &std::collections::BTreeSet<String>,
        maintenance_busy: bool,
        listed: Option<&[ObjectInfo]>,
        now: Mono,
        wall: DateTime<Utc>,
    ) -> Result<Table, BeatError> {
        if members.epoch() != self.epoch {
            // The heartbeat lapsed (a stall, a partition): what was held may have been taken.
            // Every lease is read and re-taken from scratch, with a new generation.
            self.written.clear();
            self.epoch = members.epoch();
        }
        let me = members.node().to_string();
        let valid = members.valid(now);
        let live = members.live(now);
        let assigned = crate::lease::assign(databases, &live);
        let maintainer = crate::lease::assign(&["maintenance".to_string()], &live);
        let mut table = Table::default();
        let mut work: Vec<(String, String, bool, bool)> = databases
            .iter()
            .map(|db| {
                let want = valid && assigned.get(db) == Some(&me);
                (db.clone(), lease_key(db), want, busy.contains(db))
            })
            .collect();
        work.push((
            String::new(),
            MAINTENANCE.to_string(),
            valid && maintainer.values().any(|n| *n == me),
            maintenance_busy,
        ));
        let index: Option<std::collections::HashMap<&str, &ObjectInfo>> =
            listed.map(|l| l.iter().map(|o| (o.key.as_str(), o)).collect());
        if let Some(index) = &index {
            let keys: Vec<String> = work.iter().map(|(_, k, _, _)| k.clone()).collect();
            self.prefetch(store, &keys, index, now).await?;
        }
        for (name, key, want, busy) in work {
            let read = self.read(store, &key, index.as_ref(), now).await?;
            // Busy with a job: keep it (released between jobs), but only while valid.
            let want = want || (busy && valid && self.written.contains_key(&key));
            let holder_alive = read
                .as_ref()
                .is_some_and(|(_, l)| members.is_alive(&l.node, now));
            let written = self.written.get(&key).map(|h| &h.etag);
            if let (Some((etag, lease)), Some(w)) = (&read, written)
                && etag != w
            {
                tracing::warn!(lease = %key, holder = %lease.node, "lease lost: another node wrote it");
                table.changes.push((name.clone(), Change::Lost));
                self.written.remove(&key);
            }
            let written = self.written.get(&key).map(|h| &h.etag);
            let step = crate::lease::lease_step(
                read.as_ref().map(|(e, l)| (e, l)),
                &me,
                want,
                holder_alive,
                written,
                wall,
            );
            let mut holder = read
                .as_ref()
                .filter(|(_, l)| !l.released)
                .map(|(_, l)| l.node.clone());
            let mut mine = None;
            match step {
                None => {
                    if let (Some((etag, lease)), Some(held)) = (&read, self.written.get(&key))
                        && *etag == held.etag
                        && !lease.released
                    {
                        mine = Some(held.clone());
                    }
                }
                Some((condition, body)) => {
                    let mode = match condition {
                        Condition::Absent => PutMode::Create,
                        Condition::Unchanged(etag) => PutMode::Replace(etag),
                    };
                    let bytes = serde_json::to_vec(&body).expect("a lease serializes");
                    // Whatever the outcome, the lease changed or was changed: read it next time.
                    self.bodies.remove(&key);
                    match store.put(&key, bytes.into(), mode).await {
                        Ok(Some(etag)) if !body.released => {
                            let change = match &read {
                                Some((_, l)) if !l.released => Change::TakenOver,
                                _ => Change::Taken,
                            };
                            tracing::info!(lease = %key, generation = body.generation, previous = ?holder, "lease {}", change.as_str().replace('_', " "));
                            table.changes.push((name.clone(), change));
                            let held = Held {
                                generation: body.generation,
                                etag,
                            };
                            self.written.insert(key.clone(), held.clone());
                            mine = Some(held);
                            holder = Some(me.clone());
                        }
                        Ok(_) => {
                            if body.released {
                                tracing::info!(lease = %key, "lease released");
                                table.changes.push((name.clone(), Change::Released));
                                holder = None;
                            }
                            self.written.remove(&key);
                        }
                        Err(e) => {
                            tracing::debug!(lease = %key, error = %e, "lease write lost or failed");
                            self.written.remove(&key);
                        }
                    }
                }
            }
            if name.is_empty() {
                table.maintenance = mine;
                table.maintenance_holder = holder;
            } else {
                if let Some(m) = mine {
                    table.held.insert(name.clone(), m);
                }
                if let Some(h) = holder {
                    table.holders.insert(name, h);
                }
            }
        }
        Ok(table)
    }

    /// The cached body of `key` if the listed object `o` shows it unchanged.
    fn fresh(&self, key: &str, o: &ObjectInfo, now: Mono) -> Option<&Cached> {
        self.bodies.get(key).filter(|cached| {
            cached.stamp == stamp(o)
                && (o.etag.is_some() || now.0.saturating_sub(cached.read_at.0) < STAMP_TRUST)
        })
    }

    /// Read, 16 at a time, the leases of `keys` the listing shows changed since the last read
    /// (at start, all of them), so that the settle's own reads find them cached.
    async fn prefetch(
        &mut self,
        store: &Store,
        keys: &[String],
        listed: &std::collections::HashMap<&str, &ObjectInfo>,
        now: Mono,
    ) -> Result<(), StoreError> {
        let stale: Vec<(String, String)> = keys
            .iter()
            .filter_map(|k| {
                let o = listed.get(k.as_str())?;
                self.fresh(k, o, now)
                    .is_none()
                    .then(|| (k.clone(), stamp(o)))
            })
            .collect();
        let reads = stale.into_iter().map(|(key, stamp)| {
            let store = store.clone();
            async move {
                let read = read_body(&store, &key).await;
                (key, stamp, read)
            }
        });
        let mut reads = futures::stream::iter(reads).buffer_unordered(16);
        while let Some((key, stamp, read)) = reads.next().await {
            match read? {
                Some((etag, body)) => {
                    self.bodies.insert(
                        key,
                        Cached {
                            stamp,
                            etag,
                            body,
                            read_at: now,
                        },
                    );
                }
                None => {
                    self.bodies.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// A lease as it stands: from the listing (`listed`, by key) when it shows the lease
    /// absent or unchanged since the last read here, else one GET. "Unchanged" is the same
    /// etag; where the listing has no etags (some S3 servers), the same size and time, trusted
    /// for [`STAMP_TRUST`] only (a rewrite within the same second would look the same).
    async fn read(
        &mut self,
        store: &Store,
        key: &str,
        listed: Option<&std::collections::HashMap<&str, &ObjectInfo>>,
        now: Mono,
    ) -> Result<Option<(ETag, LeaseBody)>, StoreError> {
        let mut listed_stamp = None;
        if let Some(listed) = listed {
            match listed.get(key) {
                None => {
                    self.bodies.remove(key);
                    return Ok(None);
                }
                Some(o) => {
                    if let Some(cached) = self.fresh(key, o, now) {
                        return Ok(Some((cached.etag.clone(), cached.body.clone())));
                    }
                    listed_stamp = Some(stamp(o));
                }
            }
        }
        let read = read_body(store, key).await?;
        match (&read, listed_stamp) {
            (Some((etag, body)), Some(stamp)) => {
                self.bodies.insert(
                    key.to_string(),
                    Cached {
                        stamp,
                        etag: etag.clone(),
                        body: body.clone(),
                        read_at: now,
                    },
                );
            }
            _ => {
                self.bodies.remove(key);
            }
        }
        Ok(read)
    }

    /// Give up every lease this run holds (shutdown): written `released`, so the others take
    /// them at once instead of waiting out the ttl. Best effort.
    pub async fn release_all(&mut self, store: &Store, me: &str, wall: DateTime<Utc>) -> usize {
        let mut released = 0;
        for (key, held) in std::mem::take(&mut self.written) {
            let body = LeaseBody {
                node: me.to_string(),
                generation: held.generation,
                expires_at: wall,
                released: true,
                beat: 0,
            };
            let Ok(Some((_, current))) = read_body(store, &key).await else {
                continue;
            };
            let body = LeaseBody {
                beat: current.beat + 1,
                ..body
            };
            let bytes = serde_json::to_vec(&body).expect("a lease serializes");
            if store
                .put(&key, bytes.into(), PutMode::Replace(held.etag.clone()))
                .await
                .is_ok()
            {
                released += 1;
            }
        }
        released
    }

    /// Right before a side effect under a lease (`lease_key` or [`MAINTENANCE`]): the
    /// generation to act under, only if this node's heartbeat is valid and the lease, read
    /// now, is still the one this run wrote. `None`: do nothing.
    pub async fn confirm(
        &self,
        store: &Store,
        members: &Membership,
        key: &str,
        now: Mono,
    ) -> Result<Option<u64>, BeatError> {
        if !members.valid(now) || members.epoch() != self.epoch {
            return Ok(None);
        }
        let Some(held) = self.written.get(key) else {
            return Ok(None);
        };
        confirm_lease(store, key, held).await.map_err(BeatError)
    }
}

/// Whether the lease at `key` still has the etag `held` was written with (one GET).
async fn confirm_lease(store: &Store, key: &str, held: &Held) -> Result<Option<u64>, StoreError> {
    let read = read_body(store, key).await?;
    Ok(read
        .filter(|(etag, lease)| *etag == held.etag && !lease.released)
        .map(|_| held.generation))
}

/// Claim one schedule fire (or job) of `database`, create-only: true when this call made the
/// claim, false when it was there already (another node, or a holder that lost its lease, took
/// that fire). The bare create, without the take-over rules of [`Node::claim`].
pub async fn claim(
    store: &Store,
    database: &str,
    fire: &str,
    node: &str,
    generation: u64,
) -> Result<bool, StoreError> {
    let body = ClaimBody {
        node: node.to_string(),
        generation,
        job: String::new(),
        state: ClaimState::Running,
        manifest_key: None,
        manifest: None,
    };
    match store
        .put(
            &claim_key(database, fire),
            serde_json::to_vec(&body).expect("json").into(),
            PutMode::Create,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why this node may not back up a database for a fire now.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{database} is held by node {holder}: that node backs it up")]
    HeldElsewhere { database: String, holder: String },
    #[error("this node holds no valid lease on {database} (no live node has taken it yet)")]
    NotHeld { database: String },
    #[error("fire {fire} of {database} was already backed up by node {node}")]
    Done {
        database: String,
        fire: String,
        node: String,
    },
    #[error(
        "fire {fire} of {database} is claimed by node {node} under lease generation {generation}"
    )]
    Taken {
        database: String,
        fire: String,
        node: String,
        generation: u64,
    },
    #[error("claim {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("claim {key}: {reason}")]
    Unreadable { key: String, reason: String },
}

/// What `/status`, `/metrics` and the reconcile pass know of the cluster, as of the last
/// heartbeat and settle.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub node: String,
    pub lease_ttl: std::time::Duration,
    /// Until when this node's heartbeat is valid (its own clock).
    pub valid_until: Option<Mono>,
    /// The heartbeat term the table was settled in.
    pub epoch: u64,
    pub live: Vec<String>,
    pub table: Table,
    /// Lease changes since start, by lease (a database, or [`MAINTENANCE_LABEL`]) and reason.
    pub changes: BTreeMap<(String, &'static str), u64>,
    /// Why the last heartbeat or settle failed, if it did.
    pub error: Option<String>,
}

/// The cluster side of one running daemon (DESIGN §16): its heartbeat, renewed on a timer of
/// its own ([`Node::heartbeat`]), and its leases, settled once per reconcile pass
/// ([`Node::settle`]). Backups run under a [`Ticket`] from [`Node::claim`].
pub struct Node {
    store: Store,
    origin: std::time::Instant,
    members: tokio::sync::Mutex<Membership>,
    leases: tokio::sync::Mutex<Leases>,
    view: std::sync::Mutex<View>,
    epoch_now: std::sync::atomic::AtomicU64,
}

impl Node {
    pub fn new(store: Store, node: &str, lease_ttl: std::time::Duration) -> std::sync::Arc<Node> {
        let timing = Timing::new(lease_ttl);
        std::sync::Arc::new(Node {
            members: tokio::sync::Mutex::new(Membership::new(store.clone(), node, timing)),
            store,
            origin: std::time::Instant::now(),
            leases: tokio::sync::Mutex::new(Leases::default()),
            view: std::sync::Mutex::new(View {
                node: node.to_string(),
                lease_ttl,
                ..View::default()
            }),
            epoch_now: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This process's monotonic clock.
    pub fn now(&self) -> Mono {
        Mono(self.origin.elapsed())
    }

    pub fn node(&self) -> String {
        self.view().node
    }

    /// The view as of the last heartbeat and settle; what it says this node holds is what it
    /// may act under now (nothing while its heartbeat is not valid, or lapsed since the settle).
    pub fn view(&self) -> View {
        let mut view = self.view.lock().expect("cluster view").clone();
        let valid = view.valid_until.is_some_and(|until| self.now() < until);
        let epoch = self.epoch_now.load(std::sync::atomic::Ordering::SeqCst);
        if !valid || epoch != view.epoch {
            view.table.held.clear();
            view.table.maintenance = None;
        }
        view
    }

    /// Renew this node's heartbeat if due (one GET, and a PUT every third of the ttl).
    pub async fn renew(&self, leaving: bool) {
        let mut members = self.members.lock().await;
        let result = members.renew(self.now(), Utc::now(), leaving).await;
        let mut view = self.view.lock().expect("cluster view");
        view.valid_until = members.valid_until();
        self.epoch_now
            .store(members.epoch(), std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not renew this node's heartbeat");
            view.error = Some(e.to_string());
        }
    }

    /// Renew the heartbeat every sixth of the ttl until the task is aborted: whatever the
    /// reconcile tick, a live node's heartbeat changes well within the ttl.
    pub fn heartbeat(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let node = std::sync::Arc::clone(self);
        let every = (self.view().lease_ttl / 6).max(std::time::Duration::from_millis(200));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                node.renew(false).await;
            }
        })
    }

    /// Once per pass: read the other nodes' heartbeats, then settle the leases of `databases`
    /// (see [`Leases::settle`]). The heartbeat timer is not held up: the settle works on a
    /// copy of the membership.
    pub async fn settle(
        &self,
        databases: &[String],
        busy: &std::collections::BTreeSet<String>,
        maintenance_busy: bool,
        listed: Option<&[ObjectInfo]>,
    ) -> Result<(), BeatError> {
        let members = {
            let mut members = self.members.lock().await;
            match listed {
                Some(listed) => members.watch_listed(listed, self.now()).await?,
                None => members.watch(self.now()).await?,
            }
            members.clone()
        };
        let mut leases = self.leases.lock().await;
        let result = leases
            .settle(
                &self.store,
                &members,
                databases,
                busy,
                maintenance_busy,
                listed,
                self.now(),
                Utc::now(),
            )
            .await;
        let mut view = self.view.lock().expect("cluster view");
        view.live = members.live(self.now());
        match result {
            Ok(table) => {
                for (name, change) in &table.changes {
                    let lease = if name.is_empty() {
                        MAINTENANCE_LABEL.to_string()
                    } else {
                        name.clone()
                    };
                    *view.changes.entry((lease, change.as_str())).or_default() += 1;
                }
                view.epoch = members.epoch();
                view.table = table;
                view.error = None;
                Ok(())
            }
            Err(e) => {
                // Not knowing the table, hold nothing.
                view.table.held.clear();
                view.table.maintenance = None;
                view.error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The lease on `key`'s holding as of the last settle, if this node may still act under
    /// it now: its heartbeat is valid and has not lapsed since.
    fn held_now(&self, database: Option<&str>) -> Option<(Held, u64)> {
        let view = self.view.lock().expect("cluster view");
        let valid = view.valid_until.is_some_and(|until| self.now() < until);
        let epoch = self.epoch_now.load(std::sync::atomic::Ordering::SeqCst);
        if !valid || epoch != view.epoch {
            return None;
        }
        match database {
            Some(db) => view.table.held.get(db).cloned(),
            None => view.table.maintenance.clone(),
        }
        .map(|h| (h, epoch))
    }

    /// Whether this node's heartbeat is valid now (no I/O).
    pub fn valid(&self) -> bool {
        let until = self.view.lock().expect("cluster view").valid_until;
        until.is_some_and(|u| self.now() < u)
    }

    /// Whether this node holds `database`'s lease now (no I/O).
    pub fn holds(&self, database: &str) -> bool {
        self.held_now(Some(database)).is_some()
    }

    /// The maintenance lease's generation, if this node holds it now (no I/O).
    pub fn maintains(&self) -> Option<u64> {
        self.held_now(None).map(|(h, _)| h.generation)
    }

    /// Right before deleting or committing under the maintenance lease: read it again (one
    /// GET). The generation to act under, or `None`: do nothing.
    pub async fn confirm_maintenance(&self) -> Result<Option<u64>, StoreError> {
        let Some((held, _)) = self.held_now(None) else {
            return Ok(None);
        };
        confirm_lease(&self.store, MAINTENANCE, &held).await
    }

    /// Claim `fire` (a schedule fire, `YYYYMMDDTHHMMSSZ`, or `job-{id}`) of `database` for
    /// `job`: create the claim, or take over one left unfinished by an older lease term or by
    /// an earlier attempt of this term. A committed claim whose manifest is missing (its
    /// writer died between the two writes) gets its manifest written here.
    pub async fn claim(
        self: &std::sync::Arc<Self>,
        database: &str,
        fire: &str,
        job: &str,
    ) -> Result<Ticket, Refused> {
        let Some((held, epoch)) = self.held_now(Some(database)) else {
            let holder = self.view().table.holders.get(database).cloned();
            return Err(match holder {
                Some(holder) if holder != self.node() => Refused::HeldElsewhere {
                    database: database.into(),
                    holder,
                },
                _ => Refused::NotHeld {
                    database: database.into(),
                },
            });
        };
        let me = self.node();
        let key = claim_key(database, fire);
        let store_err = |source| Refused::Store {
            key: key.clone(),
            source,
        };
        let body = ClaimBody {
            node: me.clone(),
            generation: held.generation,
            job: job.to_string(),
            state: ClaimState::Running,
            manifest_key: None,
            manifest: None,
        };
        let bytes = serde_json::to_vec(&body).expect("a claim serializes");
        let etag = match self
            .store
            .put(&key, bytes.clone().into(), PutMode::Create)
            .await
        {
            Ok(Some(etag)) => etag,
            Ok(None) => return Err(no_etag(&key)),
            Err(StoreError::AlreadyExists { .. }) => {
                let Some((current, etag)) =
                    self.store.get_versioned(&key).await.map_err(store_err)?
                else {
                    return Err(Refused::Taken {
                        database: database.into(),
                        fire: fire.into(),
                        node: "?".into(),
                        generation: 0,
                    });
                };
                let existing: ClaimBody =
                    serde_json::from_slice(&current).map_err(|e| Refused::Unreadable {
                        key: key.clone(),
                        reason: format!("not a claim: {e}"),
                    })?;
                match crate::lease::claim_verdict(&existing, &me, held.generation) {
                    crate::lease::ClaimVerdict::Done => {
                        self.materialize(&existing).await;
                        return Err(Refused::Done {
                            database: database.into(),
                            fire: fire.into(),
                            node: existing.node,
                        });
                    }
                    crate::lease::ClaimVerdict::Taken => {
                        return Err(Refused::Taken {
                            database: database.into(),
                            fire: fire.into(),
                            node: existing.node,
                            generation: existing.generation,
                        });
                    }
                    crate::lease::ClaimVerdict::TakeOver => {
                        match self
                            .store
                            .put(&key, bytes.into(), PutMode::Replace(etag))
                            .await
                        {
                            Ok(Some(etag)) => {
                                tracing::info!(database, fire, previous = %existing.node, previous_generation = existing.generation, "unfinished claim taken over");
                                etag
                            }
                            Ok(None) => {
                                return Err(no_etag(&key));
                            }
                            Err(_) => {
                                return Err(Refused::Taken {
                                    database: database.into(),
                                    fire: fire.into(),
                                    node: "another node".into(),
                                    generation: held.generation,
                                });
                            }
                        }
                    }
                }
            }
            Err(e) => return Err(store_err(e)),
        };
        Ok(Ticket {
            node: std::sync::Arc::clone(self),
            database: database.to_string(),
            epoch,
            held,
            claim: body,
            claim_key: key,
            claim_etag: etag,
        })
    }

    /// Write the manifest a committed claim carries, if it is missing (create-only).
    async fn materialize(&self, claim: &ClaimBody) {
        let (Some(key), Some(manifest)) = (&claim.manifest_key, &claim.manifest) else {
            return;
        };
        if matches!(self.store.head(key).await, Ok(None)) {
            match self
                .store
                .put(key, manifest.clone().into_bytes().into(), PutMode::Create)
                .await
            {
                Ok(_) => {
                    tracing::warn!(manifest = %key, node = %claim.node, "wrote the manifest a committed claim carried (its writer stopped between the claim and the manifest)")
                }
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::warn!(manifest = %key, error = %e, "could not write the manifest of a committed claim")
                }
            }
        }
    }

    /// Shutdown: give up every lease and the heartbeat, so the others take over at once.
    pub async fn leave(&self) {
        let me = self.node();
        let released = self
            .leases
            .lock()
            .await
            .release_all(&self.store, &me, Utc::now())
            .await;
        self.renew(true).await;
        tracing::info!(
            leases = released,
            "left the cluster: leases and heartbeat released"
        );
    }
}

fn no_etag(key: &str) -> Refused {
    Refused::Unreadable {
        key: key.to_string(),
        reason: "the store returned no etag for a conditional write".into(),
    }
}

/// The right to back up one database for one claimed fire.
pub struct Ticket {
    node: std::sync::Arc<Node>,
    database: String,
    epoch: u64,
    held: Held,
    claim: ClaimBody,
    claim_key: String,
    claim_etag: ETag,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("database", &self.database)
            .field("generation", &self.held.generation)
            .field("claim", &self.claim_key)
            .finish()
    }
}

impl Ticket {
    /// The lease generation the backup runs under (written into its manifest).
    pub fn generation(&self) -> u64 {
        self.held.generation
    }

    /// No I/O: this node still holds the lease it claimed under — its heartbeat valid now and
    /// never lapsed since, and the last settle left the lease with it.
    pub fn check(&self) -> Result<(), String> {
        match self.node.held_now(Some(&self.database)) {
            Some((held, epoch)) if held == self.held && epoch == self.epoch => Ok(()),
            _ => Err(format!(
                "this node lost the lease on {} (generation {}): its heartbeat lapsed or another node took it; nothing is committed",
                self.database, self.held.generation
            )),
        }
    }

    /// [`Ticket::check`] as an upload guard.
    pub fn guard(self: &std::sync::Arc<Self>) -> crate::store::UploadGuard {
        let ticket = std::sync::Arc::clone(self);
        std::sync::Arc::new(move || ticket.check())
    }

    /// The commit point: check, read the lease again, then mark the claim committed with the
    /// manifest's exact bytes, `If-Match` the claim this backup made. Only after `Ok` may the
    /// manifest be written.
    pub async fn commit(&self, manifest_key: &str, manifest: &[u8]) -> Result<(), String> {
        self.check()?;
        let store = &self.node.store;
        match confirm_lease(store, &lease_key(&self.database), &self.held).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "the lease on {} changed hands before the commit: nothing is committed",
                    self.database
                ));
            }
            Err(e) => return Err(format!("read the lease before the commit: {e}")),
        }
        let body = ClaimBody {
            state: ClaimState::Committed,
            manifest_key: Some(manifest_key.to_string()),
            manifest: Some(String::from_utf8_lossy(manifest).into_owned()),
            ..self.claim.clone()
        };
        let bytes = serde_json::to_vec(&body).expect("a claim serializes");
        store
            .put(
                &self.claim_key,
                bytes.into(),
                PutMode::Replace(self.claim_etag.clone()),
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::Precondition { .. } => format!(
                    "the claim {} was taken over by another node: nothing is committed",
                    self.claim_key
                ),
                e => format!("commit the claim: {e}"),
            })
    }
}

/// Read a lease or heartbeat body with its etag; an unreadable body counts as absent.
async fn read_body(store: &Store, key: &str) -> Result<Option<(ETag, LeaseBody)>, StoreError> {
    Ok(match store.get_versioned(key).await? {
        None => None,
        Some((bytes, etag)) => match serde_json::from_slice::<LeaseBody>(&bytes) {
            Ok(body) => Some((etag, body)),
            Err(e) => {
                tracing::warn!(key, error = %e, "unreadable lease object; treated as absent");
                None
            }
        },
    })
}

/// What `patina plan` says about the cluster: every heartbeat and lease as stored now, and
/// which node would take each database if every node with a heartbeat is alive (liveness itself
/// is judged by the daemons over the ttl, which one look cannot do).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlook {
    /// Nodes with a heartbeat that is not released.
    pub nodes: Vec<String>,
    /// Nodes that left (their heartbeat released).
    pub left: Vec<String>,
    pub databases: Vec<OutlookEntry>,
    pub maintenance: OutlookEntry,
}

/// One lease in an [`Outlook`].
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlookEntry {
    pub database: String,
    /// The node the lease object names, unless released.
    pub holder: Option<String>,
    pub generation: Option<u64>,
    /// Where `assign` puts it among `nodes`.
    pub share: Option<String>,
}

/// Read the heartbeats and leases of `databases` (one LIST, a GET each).
pub async fn outlook(store: &Store, databases: &[String]) -> Result<Outlook, StoreError> {
    let mut nodes = Vec::new();
    let mut left = Vec::new();
    for object in store.list(NODES).await? {
        let Some(node) = node_of(&object.key) else {
            continue;
        };
        match read_body(store, &object.key).await? {
            Some((_, body)) if !body.released => nodes.push(node.to_string()),
            Some(_) => left.push(node.to_string()),
            None => {}
        }
    }
    let share = crate::lease::assign(databases, &nodes);
    let maintainer = crate::lease::assign(&["maintenance".to_string()], &nodes);
    let entry = |database: &str, read: Option<(ETag, LeaseBody)>, share: Option<&String>| {
        let live = read.filter(|(_, l)| !l.released);
        OutlookEntry {
            database: database.to_string(),
            holder: live.as_ref().map(|(_, l)| l.node.clone()),
            generation: live.as_ref().map(|(_, l)| l.generation),
            share: share.cloned(),
        }
    };
    let mut out = Vec::new();
    for db in databases {
        let read = read_body(store, &lease_key(db)).await?;
        out.push(entry(db, read, share.get(db)));
    }
    let read = read_body(store, MAINTENANCE).await?;
    Ok(Outlook {
        nodes,
        left,
        databases: out,
        maintenance: entry(MAINTENANCE_LABEL, read, maintainer.values().next()),
    })
}
