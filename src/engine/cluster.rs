//! Membership of several daemons on one bucket (DESIGN §16, issue 18): each node renews its
//! heartbeat `nodes/{node}.json` and watches the others'. The decisions are
//! [`crate::lease`]'s; this is their I/O. Not wired into the daemon yet: it is the piece the
//! lease table and the per-fire claims will stand on.
//!
//! A beat: read this node's heartbeat with its etag, renew it when a third of the ttl has passed
//! since the last write (`If-Match` the etag it holds; `If-None-Match: *` when absent), then list
//! `nodes/` and read each other node's heartbeat with its etag. Every request is one of the
//! store's; none is repeated within a beat.
//!
//! Cost (R2 Class A = PUT, LIST): renewals run every ttl/3 on their own timer (a 60 s tick is
//! longer than a 30 s ttl), so three nodes at the default 30 s ttl write 3 × 6 × 43,200 ≈ 0.78 M
//! heartbeats a month; listing `nodes/` at every renewal would double that, hence
//! [`Membership::watch`] once per tick (3 × 43,200 ≈ 0.13 M at 60 s). With the reconcile
//! listings on top, the 1 M free tier for the Grove setup on three nodes wants `lease_ttl =
//! "60s"` (≈ 0.39 M heartbeats) or a tick listing only what it needs (DESIGN §16's
//! `full_listing`). A write that fails for any reason leaves this node
//! not holding its heartbeat until the next beat reads it again (and so not valid: no side
//! effects under any lease).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::lease::{Condition, LeaseBody, Mono, Step, Timing, Tracker};
use crate::store::{ETag, PutMode, Store, StoreError};

/// Where node heartbeats live.
pub const NODES: &str = "nodes/";

/// The key of `node`'s heartbeat.
pub fn heartbeat_key(node: &str) -> String {
    format!("{NODES}{node}.json")
}

/// This node's view of the nodes sharing the bucket.
pub struct Membership {
    store: Store,
    me: String,
    timing: Timing,
    own: Tracker,
    others: BTreeMap<String, Tracker>,
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
        if let Step::Write { condition, body } =
            self.own.step(&self.me, !leaving, now, wall, self.timing)
        {
            let mode = match condition {
                Condition::Absent => PutMode::Create,
                Condition::Unchanged(etag) => PutMode::Replace(etag),
            };
            let bytes = serde_json::to_vec(&body).expect("a heartbeat serializes");
            match self.store.put(&key, bytes.into(), mode).await {
                Ok(Some(etag)) => self.own.written(etag, body, now),
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

    /// Read the other nodes' heartbeats: one LIST of `nodes/` and a GET each. A LIST is an R2
    /// Class A operation like a PUT: once per tick is enough (liveness is judged over the
    /// ttl), not once per renewal.
    pub async fn watch(&mut self, now: Mono) -> Result<(), BeatError> {
        let listed = self.store.list(NODES).await?;
        let mut seen = BTreeMap::new();
        for object in listed {
            let Some(node) = object
                .key
                .strip_prefix(NODES)
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            if node == self.me {
                continue;
            }
            let mut tracker = self.others.remove(node).unwrap_or_default();
            let read = read_body(&self.store, &object.key).await?;
            tracker.observe(read, now);
            seen.insert(node.to_string(), tracker);
        }
        self.others = seen;
        Ok(())
    }

    /// True while this node may start side effects: its own heartbeat is held and fresh.
    pub fn valid(&self, now: Mono) -> bool {
        self.own.valid(now, self.timing).is_some()
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

/// Where database leases live.
pub const LEASES: &str = "leases/db/";

/// The key of `database`'s lease.
pub fn lease_key(database: &str) -> String {
    format!("{LEASES}{database}.json")
}

/// The key of the claim of one schedule fire (`fire` as in manifests' keys, UTC) or job.
pub fn claim_key(database: &str, fire: &str) -> String {
    format!("claims/{database}/{fire}.json")
}

/// This node's side of the database lease table.
#[derive(Debug, Default)]
pub struct Leases {
    /// Per database: the etag and generation of the last lease this run wrote (held while the
    /// lease still has that etag).
    written: BTreeMap<String, (ETag, u64)>,
}

impl Leases {
    /// Move every lease of `databases` toward this node holding exactly those `assign` gives
    /// it among the live nodes: take what is absent, released, its own from an earlier run or
    /// held by a dead node; release what it holds and should not. Returns the databases this
    /// node holds after the writes, with their generations. A write that loses a race is not
    /// an error (the winner holds it); a store that cannot be read is.
    pub async fn settle(
        &mut self,
        store: &Store,
        members: &Membership,
        databases: &[String],
        now: Mono,
        wall: DateTime<Utc>,
    ) -> Result<BTreeMap<String, u64>, BeatError> {
        let me = members.node().to_string();
        let assigned = crate::lease::assign(databases, &members.live(now));
        let mut held = BTreeMap::new();
        for db in databases {
            let key = lease_key(db);
            let read = read_body(store, &key).await?;
            let want = members.valid(now) && assigned.get(db) == Some(&me);
            let holder_alive = read
                .as_ref()
                .is_some_and(|(_, l)| members.is_alive(&l.node, now));
            let written = self.written.get(db).map(|(e, _)| e);
            let step = crate::lease::lease_step(
                read.as_ref().map(|(e, l)| (e, l)),
                &me,
                want,
                holder_alive,
                written,
                wall,
            );
            match step {
                None => {
                    if let (Some((etag, lease)), Some((mine, generation))) =
                        (&read, self.written.get(db))
                        && etag == mine
                        && !lease.released
                    {
                        held.insert(db.clone(), *generation);
                    }
                }
                Some((condition, body)) => {
                    let mode = match condition {
                        Condition::Absent => PutMode::Create,
                        Condition::Unchanged(etag) => PutMode::Replace(etag),
                    };
                    let bytes = serde_json::to_vec(&body).expect("a lease serializes");
                    match store.put(&key, bytes.into(), mode).await {
                        Ok(Some(etag)) if !body.released => {
                            tracing::info!(database = %db, generation = body.generation, "lease taken");
                            self.written.insert(db.clone(), (etag, body.generation));
                            held.insert(db.clone(), body.generation);
                        }
                        Ok(_) => {
                            if body.released {
                                tracing::info!(database = %db, "lease released");
                            }
                            self.written.remove(db);
                        }
                        Err(e) => {
                            tracing::debug!(database = %db, error = %e, "lease write lost or failed");
                            self.written.remove(db);
                        }
                    }
                }
            }
        }
        Ok(held)
    }

    /// Right before a side effect under `database`'s lease: the generation to act under, only
    /// if this node's heartbeat is valid and the lease, read now, is still the one this run
    /// wrote. `None`: do nothing.
    pub async fn confirm(
        &self,
        store: &Store,
        members: &Membership,
        database: &str,
        now: Mono,
    ) -> Result<Option<u64>, BeatError> {
        if !members.valid(now) {
            return Ok(None);
        }
        let Some((mine, generation)) = self.written.get(database) else {
            return Ok(None);
        };
        let read = read_body(store, &lease_key(database)).await?;
        Ok(read
            .filter(|(etag, lease)| etag == mine && !lease.released)
            .map(|_| *generation))
    }
}

/// Claim one schedule fire (or job) of `database`, create-only: true when this call made the
/// claim, false when it was there already (another node, or a holder that lost its lease, took
/// that fire).
pub async fn claim(
    store: &Store,
    database: &str,
    fire: &str,
    node: &str,
    generation: u64,
) -> Result<bool, StoreError> {
    let body = serde_json::json!({ "node": node, "generation": generation });
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
