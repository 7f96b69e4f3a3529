//! Membership of several daemons on one bucket (DESIGN §16, issue 18): each node renews its
//! heartbeat `nodes/{node}.json` and watches the others'. The decisions are
//! [`crate::lease`]'s; this is their I/O. Not wired into the daemon yet: it is the piece the
//! lease table and the per-fire claims will stand on.
//!
//! A beat: read this node's heartbeat with its etag, renew it when a third of the ttl has passed
//! since the last write (`If-Match` the etag it holds; `If-None-Match: *` when absent), then list
//! `nodes/` and read each other node's heartbeat with its etag. Every request is one of the
//! store's; none is repeated within a beat. A write that fails for any reason leaves this node
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

    /// One beat at `now` (this node's monotonic clock; `wall` only for the body's
    /// `expiresAt`). `leaving`: write the heartbeat as released (shutdown), so the others need
    /// not wait out the ttl.
    pub async fn beat(
        &mut self,
        now: Mono,
        wall: DateTime<Utc>,
        leaving: bool,
    ) -> Result<(), BeatError> {
        let key = heartbeat_key(&self.me);
        let read = self.read(&key).await?;
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
            let read = self.read(&object.key).await?;
            tracker.observe(read, now);
            seen.insert(node.to_string(), tracker);
        }
        self.others = seen;
        Ok(())
    }

    /// Read one heartbeat with its etag; an unreadable body counts as absent (and is logged).
    async fn read(&self, key: &str) -> Result<Option<(ETag, LeaseBody)>, StoreError> {
        Ok(match self.store.get_versioned(key).await? {
            None => None,
            Some((bytes, etag)) => match serde_json::from_slice::<LeaseBody>(&bytes) {
                Ok(body) => Some((etag, body)),
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable heartbeat; treated as absent");
                    None
                }
            },
        })
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
