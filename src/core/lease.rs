//! Leases for several daemons on one bucket (DESIGN §16), pure: what one node concludes from what
//! it read and its own monotonic clock, and which databases each live node should hold.
//!
//! This is the decision half of issue 18; `crate::cluster` does the I/O and the daemon uses it
//! with `[cluster]`. Nothing here does I/O: the caller
//! reads the lease object (its body and etag), hands it to [`Tracker::observe`], performs the
//! write [`Tracker::step`] asks for with the conditional mode it names, and reports the outcome
//! ([`Tracker::written`], [`Tracker::conflict`]).
//!
//! # Time
//!
//! Wall clocks are never compared across nodes. [`Mono`] is this node's monotonic clock.
//! - A holder may start side effects only while `lease_ttl - margin` has not passed since the
//!   moment it *sent* its last successful write ([`Tracker::valid`]); a stalled holder that
//!   wakes up finds its lease invalid before it can renew, whatever the other nodes did.
//! - Another node treats a lease as expired only after it has seen the *same etag* for longer
//!   than `lease_ttl` on its own clock (a holder renews every `lease_ttl / 3`, so a live holder
//!   always changes the etag well within that).
//! - `expires_at` in the body is the writer's wall clock plus the ttl, for people reading the
//!   bucket; no decision reads it.
//!
//! # Cost: what is renewed
//!
//! DESIGN §16 renews every lease object each `lease_ttl / 3`. Each renewal is a PUT, an R2
//! Class A operation: 12 database leases, the maintenance lease and 3 node heartbeats at the
//! default 30 s ttl are 16 objects × 6 PUTs a minute ≈ 4.1 M Class A operations a month — four
//! times the free tier the issue asks the Grove setup to stay under. Renewing only the node
//! heartbeats (3 × 6 a minute ≈ 0.78 M a month) fits, so: a [`Tracker`] per node heartbeat
//! (this node's own renewed and [`Tracker::valid`]; others' [`Tracker::alive`]), and lease
//! objects written only on a change of holder ([`lease_step`]: `If-Match` on the lease, once
//! its holder's heartbeat has been seen unchanged for longer than the ttl). A holder may act
//! under a lease while its own heartbeat is valid and the lease, as last read, names it with the
//! generation it acts under. This departs from DESIGN §16's "renewed every lease_ttl/3" for the
//! lease objects themselves, for the cost above.
//!
//! # Generations
//!
//! Every takeover writes the previous generation + 1 (a renewal keeps it), and lease objects are
//! never deleted — a release writes `released: true` — so a generation only ever grows for a
//! lease key and can fence what its holder writes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::inventory::ETag;

/// Whether `name` can name a node: 1 to 63 of `[A-Za-z0-9._-]`, not "." or "..", so it is safe
/// as one segment of a key.
pub fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A reading of this node's monotonic clock (time since some fixed point of this process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mono(pub Duration);

impl Mono {
    fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// The JSON body of a lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseBody {
    /// The node that wrote it.
    pub node: String,
    /// Grows by one at every takeover; a renewal keeps it.
    pub generation: u64,
    /// The writer's wall clock plus the ttl: informative only (see the module docs).
    pub expires_at: DateTime<Utc>,
    /// Given up by its holder: any node may take it at once.
    #[serde(default)]
    pub released: bool,
    /// Grows by one at every write. S3's etag of a small object is the MD5 of its bytes: a
    /// renewal that wrote the same bytes would keep the etag, and the others would count the
    /// writer dead while it renews.
    #[serde(default)]
    pub beat: u64,
}

/// The conditional write a [`Step`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if the object is absent (`If-None-Match: *`).
    Absent,
    /// Only if the object still has this etag (`If-Match`).
    Unchanged(ETag),
}

/// What to do next about one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing now.
    Idle,
    /// Write `body` under `condition`, then report [`Tracker::written`] or
    /// [`Tracker::conflict`].
    Write {
        condition: Condition,
        body: LeaseBody,
    },
}

/// What the timing rules are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
    /// Stop starting side effects this long before the ttl runs out on our own clock.
    pub margin: Duration,
}

impl Timing {
    /// `ttl` with a margin of a tenth of it (at least a second, at most a third).
    pub fn new(ttl: Duration) -> Timing {
        let margin = (ttl / 10).max(Duration::from_secs(1)).min(ttl / 3);
        Timing { ttl, margin }
    }

    /// How often a holder renews.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    etag: ETag,
    generation: u64,
    /// When the write that gave us this etag was sent.
    sent: Mono,
}

/// One node's knowledge of one lease object.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// The etag last read, its body, and when this node first saw that etag.
    seen: Option<(ETag, LeaseBody, Mono)>,
    /// Read and found absent.
    absent: bool,
    /// The highest generation this node has seen for this key.
    generation: u64,
    held: Option<Held>,
}

impl Tracker {
    /// Record what a read returned (`None`: no lease object).
    pub fn observe(&mut self, read: Option<(ETag, LeaseBody)>, now: Mono) {
        match read {
            None => {
                self.seen = None;
                self.absent = true;
                // Lease objects are never deleted: one that vanished is not ours any more.
                self.held = None;
            }
            Some((etag, body)) => {
                self.absent = false;
                self.generation = self.generation.max(body.generation);
                if self.held.as_ref().is_some_and(|h| h.etag != etag) {
                    // Someone else wrote it: whatever we thought, we do not hold it now.
                    self.held = None;
                }
                let first = match &self.seen {
                    Some((seen, _, at)) if *seen == etag => *at,
                    _ => now,
                };
                self.seen = Some((etag, body, first));
            }
        }
    }

    /// The generation under which this node may start a side effect now, if any: it holds the
    /// lease and `ttl - margin` has not passed since it sent the write that gave it the lease
    /// (or renewed it).
    pub fn valid(&self, now: Mono, timing: Timing) -> Option<u64> {
        let held = self.held.as_ref()?;
        let budget = timing.ttl.saturating_sub(timing.margin);
        (now.since(held.sent) < budget).then_some(held.generation)
    }

    /// Until when (on this node's clock) [`Tracker::valid`] holds without another write.
    pub fn valid_until(&self, timing: Timing) -> Option<Mono> {
        let held = self.held.as_ref()?;
        Some(Mono(held.sent.0 + timing.ttl.saturating_sub(timing.margin)))
    }

    /// True when this node holds the lease (valid or not yet renewed).
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// For another node's object (its heartbeat): alive when it is there, not released, and its
    /// etag changed within the ttl on this node's clock. An object this node has watched for
    /// less than the ttl counts as alive (it has not had the chance to change yet).
    pub fn alive(&self, now: Mono, timing: Timing) -> bool {
        match &self.seen {
            Some((_, body, first)) => !body.released && now.since(*first) <= timing.ttl,
            None => false,
        }
    }

    /// The etag and body last read, if any.
    pub fn seen(&self) -> Option<(&ETag, &LeaseBody)> {
        self.seen.as_ref().map(|(e, b, _)| (e, b))
    }

    /// Who holds the lease as last read (the body), if anyone and not released.
    pub fn holder(&self) -> Option<&LeaseBody> {
        self.seen
            .as_ref()
            .map(|(_, b, _)| b)
            .filter(|b| !b.released)
    }

    /// The next write toward holding the lease (`want`) or giving it up (`!want`), for node
    /// `me` at `now` (`wall`: this node's wall clock, only for `expires_at`).
    pub fn step(
        &self,
        me: &str,
        want: bool,
        now: Mono,
        wall: DateTime<Utc>,
        timing: Timing,
    ) -> Step {
        let beat = self.seen.as_ref().map_or(0, |(_, b, _)| b.beat) + 1;
        let body = |generation: u64, released: bool| LeaseBody {
            node: me.to_string(),
            generation,
            expires_at: wall + chrono::Duration::from_std(timing.ttl).unwrap_or_default(),
            released,
            // The last body read or written here, plus one.
            beat,
        };
        if let Some(held) = &self.held {
            let condition = Condition::Unchanged(held.etag.clone());
            return if !want {
                Step::Write {
                    condition,
                    body: body(held.generation, true),
                }
            } else if now.since(held.sent) >= timing.renew_every() {
                Step::Write {
                    condition,
                    body: body(held.generation, false),
                }
            } else {
                Step::Idle
            };
        }
        if !want {
            return Step::Idle;
        }
        if self.absent {
            return Step::Write {
                condition: Condition::Absent,
                body: body(self.generation + 1, false),
            };
        }
        let Some((etag, seen, first)) = &self.seen else {
            // Never read: read first.
            return Step::Idle;
        };
        // Ours from an earlier run of this node (one process per node: that run is over), given
        // up, or unchanged for longer than the ttl on our own clock: take it over.
        let free = seen.node == me || seen.released || now.since(*first) > timing.ttl;
        if free {
            Step::Write {
                condition: Condition::Unchanged(etag.clone()),
                body: body(self.generation.max(seen.generation) + 1, false),
            }
        } else {
            Step::Idle
        }
    }

    /// The write of `body`, sent at `sent`, succeeded and the object now has `etag`.
    pub fn written(&mut self, etag: ETag, body: LeaseBody, sent: Mono) {
        self.generation = self.generation.max(body.generation);
        self.absent = false;
        self.held = (!body.released).then(|| Held {
            etag: etag.clone(),
            generation: body.generation,
            sent,
        });
        self.seen = Some((etag, body, sent));
    }

    /// A conditional write failed (someone else wrote first): forget holding, read again.
    pub fn conflict(&mut self) {
        self.held = None;
        self.seen = None;
        self.absent = false;
    }
}

/// The write that moves a database lease object toward `want` for node `me`. Lease objects are
/// written only when their holder changes, never renewed: the holder's liveness is its
/// heartbeat's (see the module docs). `read` is the lease as just read, `holder_alive` whether
/// the node it names is alive by its heartbeat ([`Tracker::alive`]), `written` the etag of the
/// last lease write of this run of this node, if any. Takes an absent or released lease, one
/// whose holder is dead, or this node's own from an earlier run (a new generation fences what
/// that run left in flight), always with the next generation; gives up its own with
/// `released`. `None`: nothing to write.
pub fn lease_step(
    read: Option<(&ETag, &LeaseBody)>,
    me: &str,
    want: bool,
    holder_alive: bool,
    written: Option<&ETag>,
    wall: DateTime<Utc>,
) -> Option<(Condition, LeaseBody)> {
    let beat = read.map_or(0, |(_, l)| l.beat) + 1;
    let body = |generation: u64, released: bool| LeaseBody {
        node: me.to_string(),
        generation,
        expires_at: wall,
        released,
        beat,
    };
    let Some((etag, lease)) = read else {
        return want.then(|| (Condition::Absent, body(1, false)));
    };
    let unchanged = Condition::Unchanged(etag.clone());
    let ours = lease.node == me && !lease.released;
    if !want {
        return ours.then(|| (unchanged, body(lease.generation, true)));
    }
    if ours && written == Some(etag) {
        return None;
    }
    let free = lease.released || lease.node == me || !holder_alive;
    free.then(|| (unchanged, body(lease.generation + 1, false)))
}

/// The body of a claim object `claims/{database}/{fire}.json`: one schedule fire (or manual
/// job) of one database, created with `If-None-Match: *` before the backup starts, and turned
/// `committed` with `If-Match` right before its manifest is written. That second write is the
/// commit point: a holder paused after losing its lease finds the claim changed (taken over by
/// the new holder, with a higher generation) and writes no manifest; and a committed claim
/// carries the manifest's exact bytes, so a manifest lost to a crash between the two writes is
/// written by whoever finds the claim next ([`ClaimBody::manifest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimBody {
    pub node: String,
    /// The generation of the database lease the claimer held.
    pub generation: u64,
    /// The job that claimed it.
    pub job: String,
    pub state: ClaimState,
    /// When committed: the manifest's key and its exact bytes (UTF-8 JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// Where a claimed fire stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimState {
    /// Claimed; the backup runs (or its node died or lost the lease).
    Running,
    /// The backup was committed: its manifest is (or is about to be) in storage.
    Committed,
}

/// What a node holding a database lease at `generation` may do about a fire whose claim
/// already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// Take the claim over (`If-Match` its etag): it is this node's own unfinished claim from
    /// the same lease term (a retry), or an unfinished one from an older generation — its
    /// claimer lost the lease before committing.
    TakeOver,
    /// The fire was backed up: nothing to do (but see that its manifest exists).
    Done,
    /// Claimed under the same or a newer generation by another node: leave it.
    Taken,
}

/// The verdict for `existing` when node `me` holds the database's lease at `generation`.
pub fn claim_verdict(existing: &ClaimBody, me: &str, generation: u64) -> ClaimVerdict {
    match existing.state {
        ClaimState::Committed => ClaimVerdict::Done,
        ClaimState::Running
            if existing.generation < generation
                || (existing.generation == generation && existing.node == me) =>
        {
            ClaimVerdict::TakeOver
        }
        ClaimState::Running => ClaimVerdict::Taken,
    }
}

/// Which of `databases` each of the `live` nodes should hold: every database goes to the
/// node ranked first for it by rendezvous hashing that still has room, where each node's room
/// is ceil(databases / nodes). Every node computes the same answer from the same view, a node
/// joining or leaving moves few databases, and no node holds more than its share.
pub fn assign(databases: &[String], live: &[String]) -> BTreeMap<String, String> {
    let mut nodes: Vec<&String> = live.iter().collect();
    nodes.sort();
    nodes.dedup();
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let mut dbs: Vec<&String> = databases.iter().collect();
    dbs.sort();
    dbs.dedup();
    let room = dbs.len().div_ceil(nodes.len());
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for db in dbs {
        let mut ranked: Vec<(&String, [u8; 32])> =
            nodes.iter().map(|n| (*n, score(db, n))).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let chosen = ranked
            .iter()
            .map(|(n, _)| *n)
            .find(|n| load.get(n.as_str()).copied().unwrap_or(0) < room)
            .expect("room for every database");
        *load.entry(chosen.as_str()).or_default() += 1;
        out.insert(db.clone(), chosen.clone());
    }
    out
}

fn score(database: &str, node: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(database.as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Mono {
        Mono(Duration::from_secs(secs))
    }

    fn wall() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    const T: Timing = Timing {
        ttl: Duration::from_secs(30),
        margin: Duration::from_secs(3),
    };

    fn etag(s: &str) -> ETag {
        ETag::new(s)
    }

    /// Apply `step` as a store would, with a new etag `e`.
    fn perform(t: &mut Tracker, step: Step, e: &str, sent: Mono) -> LeaseBody {
        let Step::Write { body, .. } = step else {
            panic!("expected a write, got {step:?}")
        };
        t.written(etag(e), body.clone(), sent);
        body
    }

    #[test]
    fn a_claim_is_taken_over_only_from_an_older_term_or_a_retry_and_never_once_committed() {
        let claim = |node: &str, generation, state| ClaimBody {
            node: node.into(),
            generation,
            job: "j".into(),
            state,
            manifest_key: None,
            manifest: None,
        };
        use ClaimState::*;
        use ClaimVerdict::*;
        assert_eq!(claim_verdict(&claim("a", 3, Running), "b", 4), TakeOver);
        assert_eq!(claim_verdict(&claim("a", 3, Running), "a", 3), TakeOver);
        assert_eq!(claim_verdict(&claim("a", 3, Running), "b", 3), Taken);
        assert_eq!(claim_verdict(&claim("a", 5, Running), "b", 4), Taken);
        assert_eq!(claim_verdict(&claim("a", 3, Committed), "b", 9), Done);
        assert_eq!(claim_verdict(&claim("a", 3, Committed), "a", 3), Done);
        assert!(valid_node_name("db-1.example_2"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_absent_lease_is_created_renewed_and_valid_only_within_ttl_minus_margin() {
        let mut a = Tracker::default();
        assert_eq!(a.step("a", true, s(0), wall(), T), Step::Idle, "read first");
        a.observe(None, s(0));
        let step = a.step("a", true, s(0), wall(), T);
        assert!(matches!(
            &step,
            Step::Write { condition: Condition::Absent, body } if body.generation == 1 && body.node == "a"
        ));
        perform(&mut a, step, "e1", s(0));
        assert_eq!(a.valid(s(26), T), Some(1));
        assert_eq!(a.valid(s(27), T), None, "ttl 30 s minus margin 3 s");
        // Renewed every ttl / 3, keeping the generation, against the etag it holds.
        assert_eq!(a.step("a", true, s(9), wall(), T), Step::Idle);
        let step = a.step("a", true, s(10), wall(), T);
        assert!(matches!(
            &step,
            Step::Write { condition: Condition::Unchanged(e), body } if e.as_str() == "e1" && body.generation == 1
        ));
        perform(&mut a, step, "e2", s(10));
        assert_eq!(a.valid(s(36), T), Some(1));
    }

    #[test]
    fn another_node_takes_over_only_after_seeing_the_same_etag_for_longer_than_the_ttl() {
        let held = LeaseBody {
            node: "a".into(),
            generation: 4,
            expires_at: wall(),
            released: false,
            beat: 0,
        };
        let mut b = Tracker::default();
        b.observe(Some((etag("e1"), held.clone())), s(100));
        assert_eq!(b.step("b", true, s(100), wall(), T), Step::Idle);
        // A renewal (new etag) restarts the count, whatever the wall clocks say.
        b.observe(Some((etag("e2"), held.clone())), s(125));
        assert_eq!(b.step("b", true, s(150), wall(), T), Step::Idle);
        b.observe(Some((etag("e2"), held.clone())), s(155));
        assert_eq!(
            b.step("b", true, s(155), wall(), T),
            Step::Idle,
            "exactly ttl"
        );
        let step = b.step("b", true, s(156), wall(), T);
        assert!(matches!(
            &step,
            Step::Write { condition: Condition::Unchanged(e), body } if e.as_str() == "e2" && body.generation == 5
        ));
        perform(&mut b, step, "e3", s(156));
        assert_eq!(b.valid(s(156), T), Some(5));
    }

    #[test]
    fn a_stalled_holder_is_invalid_on_waking_and_loses_the_lease_on_reading_it() {
        let mut a = Tracker::default();
        a.observe(None, s(0));
        let step = a.step("a", true, s(0), wall(), T);
        let body = perform(&mut a, step, "e1", s(0));
        // SIGSTOP for 40 s: on waking it may not start anything before talking to storage.
        assert_eq!(a.valid(s(40), T), None);
        // Its renewal would be conditional on e1; b took over meanwhile (e2).
        let taken = LeaseBody {
            node: "b".into(),
            generation: body.generation + 1,
            ..body
        };
        a.observe(Some((etag("e2"), taken.clone())), s(41));
        assert!(!a.holds());
        assert_eq!(a.valid(s(41), T), None);
        assert_eq!(a.holder(), Some(&taken));
        // Had it written first, the store would have refused it: a conflict forgets it too.
        let mut c = Tracker::default();
        c.observe(None, s(0));
        let step = c.step("c", true, s(0), wall(), T);
        perform(&mut c, step, "x1", s(0));
        c.conflict();
        assert_eq!(c.valid(s(1), T), None);
    }

    #[test]
    fn a_release_keeps_the_generation_growing_and_frees_the_lease_at_once() {
        let mut a = Tracker::default();
        a.observe(None, s(0));
        let step = a.step("a", true, s(0), wall(), T);
        perform(&mut a, step, "e1", s(0));
        let step = a.step("a", false, s(5), wall(), T);
        let released = perform(&mut a, step, "e2", s(5));
        assert!(released.released && released.generation == 1);
        assert!(!a.holds());
        assert_eq!(a.holder(), None);
        let mut b = Tracker::default();
        b.observe(Some((etag("e2"), released)), s(6));
        let step = b.step("b", true, s(6), wall(), T);
        assert!(matches!(
            &step,
            Step::Write { condition: Condition::Unchanged(e), body } if e.as_str() == "e2" && body.generation == 2
        ));
    }

    #[test]
    fn a_restarted_node_takes_back_its_own_lease_without_waiting() {
        let mine = LeaseBody {
            node: "a".into(),
            generation: 9,
            expires_at: wall(),
            released: false,
            beat: 0,
        };
        let mut a = Tracker::default();
        a.observe(Some((etag("e9"), mine)), s(0));
        assert!(matches!(
            a.step("a", true, s(0), wall(), T),
            Step::Write { body, .. } if body.generation == 10
        ));
    }

    #[test]
    fn every_write_changes_the_bytes_so_an_md5_etag_changes_too() {
        let mut a = Tracker::default();
        a.observe(None, s(0));
        let mut beats = Vec::new();
        for (t, e) in [(0, "e1"), (10, "e2"), (20, "e3")] {
            let step = a.step("a", true, s(t), wall(), T);
            beats.push(perform(&mut a, step, e, s(t)).beat);
        }
        let step = a.step("a", false, s(25), wall(), T);
        beats.push(perform(&mut a, step, "e4", s(25)).beat);
        assert_eq!(beats, [1, 2, 3, 4]);
    }

    #[test]
    fn the_body_is_camel_case_json_and_released_defaults_to_false() {
        let body: LeaseBody = serde_json::from_str(
            r#"{"node":"a","generation":3,"expiresAt":"2026-11-30T12:00:30Z"}"#,
        )
        .unwrap();
        assert!(!body.released);
        assert_eq!(body.generation, 3);
    }

    #[test]
    fn heartbeats_are_alive_while_their_etag_moves_within_the_ttl() {
        let beat = |generation| LeaseBody {
            node: "b".into(),
            generation,
            expires_at: wall(),
            released: false,
            beat: 0,
        };
        let mut b = Tracker::default();
        assert!(!b.alive(s(0), T), "never read");
        b.observe(Some((etag("h1"), beat(1))), s(0));
        assert!(b.alive(s(30), T));
        assert!(!b.alive(s(31), T), "the same etag for longer than the ttl");
        b.observe(Some((etag("h2"), beat(1))), s(31));
        assert!(b.alive(s(40), T));
        b.observe(None, s(41));
        assert!(!b.alive(s(41), T), "gone");
    }

    #[test]
    fn lease_objects_change_hands_only_when_free_and_always_with_a_new_generation() {
        let lease = |node: &str, generation, released| LeaseBody {
            node: node.into(),
            generation,
            expires_at: wall(),
            released,
            beat: 0,
        };
        let e = etag("l1");
        // Absent: created at generation 1; not wanted: nothing.
        let (c, b) = lease_step(None, "a", true, false, None, wall()).unwrap();
        assert_eq!((c, b.generation), (Condition::Absent, 1));
        assert_eq!(lease_step(None, "a", false, false, None, wall()), None);
        // Held by a live node: wait; by a dead one: take it over, If-Match.
        let theirs = lease("b", 4, false);
        assert_eq!(
            lease_step(Some((&e, &theirs)), "a", true, true, None, wall()),
            None
        );
        let (c, b) = lease_step(Some((&e, &theirs)), "a", true, false, None, wall()).unwrap();
        assert_eq!(
            (c, b.node.as_str(), b.generation),
            (Condition::Unchanged(e.clone()), "a", 5)
        );
        // Released: free at once.
        let released = lease("b", 4, true);
        let (_, b) = lease_step(Some((&e, &released)), "a", true, true, None, wall()).unwrap();
        assert_eq!(b.generation, 5);
        // Ours, written by this run: nothing to write; from an earlier run: a new generation.
        let ours = lease("a", 7, false);
        assert_eq!(
            lease_step(Some((&e, &ours)), "a", true, true, Some(&e), wall()),
            None
        );
        let (_, b) = lease_step(Some((&e, &ours)), "a", true, true, None, wall()).unwrap();
        assert_eq!(b.generation, 8);
        // Given up: released, same generation, If-Match; someone else's is never released by us.
        let (c, b) = lease_step(Some((&e, &ours)), "a", false, true, Some(&e), wall()).unwrap();
        assert_eq!(
            (c, b.released, b.generation),
            (Condition::Unchanged(e.clone()), true, 7)
        );
        assert_eq!(
            lease_step(Some((&e, &theirs)), "a", false, false, None, wall()),
            None
        );
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:02}")).collect()
    }

    #[test]
    fn databases_are_spread_evenly_and_move_little_when_a_node_joins() {
        let dbs = names("db", 20);
        let three = names("node", 3);
        let a = assign(&dbs, &three);
        assert_eq!(a.len(), 20);
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for n in a.values() {
            *load.entry(n).or_default() += 1;
        }
        assert!(load.values().all(|&l| l <= 7), "{load:?}");
        // Order of the inputs does not matter: every node computes the same.
        let mut shuffled = three.clone();
        shuffled.reverse();
        assert_eq!(assign(&dbs, &shuffled), a);
        // A fourth node takes about its share; most databases stay where they were.
        let four = names("node", 4);
        let b = assign(&dbs, &four);
        let moved = dbs.iter().filter(|d| a[*d] != b[*d]).count();
        assert!((4..=10).contains(&moved), "{moved} moved");
        assert!(b.values().all(|n| four.contains(n)));
        // One node left: it has everything.
        let one = assign(&dbs, &names("node", 1));
        assert!(one.values().all(|n| n == "node00"));
        assert!(assign(&dbs, &[]).is_empty());
    }
}
