//! What a reconcile pass lists (DESIGN §16 "Listing cost"): everything once per
//! `[daemon] full_listing`, and between full listings only the keys that change.
//!
//! The keys that change between full listings all sort at or after `daily/{day}/`: today's (and
//! near midnight yesterday's) dumps, and `leases/`, `nodes/` and `weekly/`. What sorts before it
//! — older days' dumps and `claims/` — only grows by this node's own commits and shrinks by
//! retention. So a partial pass asks the store for the keys after [`fresh_from`] (one listing
//! that starts after a key, S3's `start-after`), and [`merge`]s them with the part of the carried
//! listing before it. The result has the shape of a full listing, so `plan` and the status page
//! read it the same way, but:
//!
//! - **Older keys are as old as the last full listing.** A key another node deleted since then
//!   is still in it; a dump another node committed since then, under an older day, is not. So a
//!   partial pass deletes nothing and raises no drift ([`hold_for_full_listing`]); a node's own
//!   commits are added to the carried listing ([`insert`]) and its own deletions removed, so its
//!   own view of what is due is never behind.
//! - **The fresh part starts at the day of the last full listing less [`COMMIT_MARGIN`]**, so a
//!   backup another node started before midnight and committed in the first hour after it is
//!   still seen without waiting for the next full listing.
//!
//! The cost (Class A on R2): a partial pass pays for the objects of today (and yesterday near
//! midnight), the leases and heartbeats and the weekly archives, 1,000 keys per request —
//! flat as backups age, where a full listing grows with every day retained.

use chrono::{DateTime, Duration, Utc};

use crate::inventory::ObjectInfo;
use crate::plan::{Deferred, Plan};

/// How long before the last full listing the fresh part starts: a backup that started before
/// midnight and committed within this margin after the full listing is still seen.
pub const COMMIT_MARGIN: Duration = Duration::hours(1);

/// The key after which a partial listing reads from storage: `daily/{day}` for the day (UTC) of
/// the last full listing less [`COMMIT_MARGIN`] (never later than today).
pub fn fresh_from(last_full: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let from = last_full.min(now) - COMMIT_MARGIN;
    // `daily/2026-11-29` sorts before every `daily/2026-11-29/…` key and after every earlier day.
    format!("daily/{}", from.format("%Y-%m-%d"))
}

/// The carried listing's keys before `from`, then the fresh keys after it: sorted, each key once.
/// `fresh` is what the store listed after `from` (anything at or before it is dropped, in case a
/// server ignored the start key).
pub fn merge(carried: &[ObjectInfo], from: &str, fresh: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    let split = carried.partition_point(|o| o.key.as_str() <= from);
    let mut out = Vec::with_capacity(split + fresh.len());
    out.extend_from_slice(&carried[..split]);
    out.extend(fresh.into_iter().filter(|o| o.key.as_str() > from));
    out
}

/// The requests a listing of `keys` keys takes: S3 and R2 answer 1,000 keys a page.
pub fn pages(keys: usize) -> u64 {
    keys.div_ceil(1000).max(1) as u64
}

/// Put `objects` into the sorted `listing`, replacing entries of the same key.
pub fn insert(listing: &mut Vec<ObjectInfo>, objects: impl IntoIterator<Item = ObjectInfo>) {
    for object in objects {
        match listing.binary_search_by(|o| o.key.cmp(&object.key)) {
            Ok(i) => listing[i] = object,
            Err(i) => listing.insert(i, object),
        }
    }
}

/// Take `keys` out of the sorted `listing` (what this node just deleted).
pub fn remove<'a>(listing: &mut Vec<ObjectInfo>, keys: impl IntoIterator<Item = &'a str>) {
    for key in keys {
        if let Ok(i) = listing.binary_search_by(|o| o.key.as_str().cmp(key)) {
            listing.remove(i);
        }
    }
}

/// A plan made from a partial listing: deletions, debris and drift wait for the next full
/// listing (at `next_full`), because keys before the fresh part may be up to `full_listing` old
/// (DESIGN §5: nothing is deleted from an incomplete listing). Says so in `deferred` when it
/// held anything back.
pub fn hold_for_full_listing(plan: &mut Plan, next_full: DateTime<Utc>) {
    let held = plan.deletions.len() + plan.debris.len() + plan.drift.len();
    plan.deletions.clear();
    plan.debris.clear();
    plan.drift.clear();
    if held > 0 {
        plan.deferred.push(Deferred {
            what: format!("retention, debris and drift ({held} found)"),
            until: Some(next_full),
            reason: "this pass listed only the newest keys; the next full listing decides".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn obj(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            last_modified: t("2026-11-29T10:00:00Z"),
            etag: None,
        }
    }

    fn keys(objects: &[ObjectInfo]) -> Vec<&str> {
        objects.iter().map(|o| o.key.as_str()).collect()
    }

    #[test]
    fn the_fresh_part_starts_at_the_day_of_the_last_full_listing_less_an_hour() {
        let now = t("2026-11-29T12:00:00Z");
        assert_eq!(
            fresh_from(t("2026-11-29T11:30:00Z"), now),
            "daily/2026-11-29"
        );
        // In the first hour after midnight yesterday is still read fresh.
        assert_eq!(
            fresh_from(t("2026-11-29T00:30:00Z"), now),
            "daily/2026-11-28"
        );
        // An old full listing: everything since its day is read fresh.
        assert_eq!(
            fresh_from(t("2026-11-25T09:00:00Z"), now),
            "daily/2026-11-25"
        );
        // A clock that went back: never later than now less the margin.
        assert_eq!(
            fresh_from(t("2026-11-30T09:00:00Z"), t("2026-11-29T00:10:00Z")),
            "daily/2026-11-28"
        );
        // Every key of that day and later days sorts after it; earlier days before it.
        let from = fresh_from(t("2026-11-29T11:30:00Z"), now);
        assert!("daily/2026-11-29/a/20261129T000000Z.sql.zst" > from.as_str());
        assert!("daily/2026-11-28/a/20261128T235959Z.manifest.json" < from.as_str());
        assert!("claims/a/x.json" < from.as_str());
        for later in ["leases/db/a.json", "nodes/n.json", "weekly/2026-W48.tar"] {
            assert!(later > from.as_str(), "{later}");
        }
    }

    #[test]
    fn merge_takes_older_keys_from_the_carried_listing_and_the_rest_fresh() {
        let carried = vec![
            obj("claims/a/1.json", 1),
            obj("daily/2026-11-27/a/x.sql.zst", 1),
            obj("daily/2026-11-29/a/gone.sql.zst", 1),
            obj("leases/db/a.json", 1),
        ];
        let fresh = vec![
            // A server that ignored the start key would send this again: dropped.
            obj("daily/2026-11-27/a/x.sql.zst", 9),
            obj("daily/2026-11-29/a/new.sql.zst", 2),
            obj("leases/db/a.json", 2),
            obj("nodes/n.json", 2),
        ];
        let merged = merge(&carried, "daily/2026-11-29", fresh);
        assert_eq!(
            keys(&merged),
            [
                "claims/a/1.json",
                "daily/2026-11-27/a/x.sql.zst",
                "daily/2026-11-29/a/new.sql.zst",
                "leases/db/a.json",
                "nodes/n.json"
            ]
        );
        // Older keys as carried, newer ones as listed now (the deleted one is gone).
        assert_eq!(merged[1].size, 1);
        assert_eq!(merged[3].size, 2);
    }

    #[test]
    fn own_commits_are_inserted_and_own_deletions_removed_in_order() {
        let mut listing = vec![obj("a", 1), obj("c", 1)];
        insert(&mut listing, [obj("b", 1), obj("c", 2), obj("d", 1)]);
        assert_eq!(keys(&listing), ["a", "b", "c", "d"]);
        assert_eq!(listing[2].size, 2);
        remove(&mut listing, ["a", "c", "missing"]);
        assert_eq!(keys(&listing), ["b", "d"]);
    }

    #[test]
    fn a_partial_plan_holds_deletions_debris_and_drift_and_says_until_when() {
        let mut plan = Plan::default();
        plan.debris.push(crate::plan::DebrisRemoval {
            key: "daily/x".into(),
            reason: "r".into(),
        });
        plan.drift.push(crate::plan::Drift {
            data_key: "daily/y".into(),
            reason: "r".into(),
        });
        let next = t("2026-11-29T13:00:00Z");
        hold_for_full_listing(&mut plan, next);
        assert!(plan.debris.is_empty() && plan.drift.is_empty() && plan.deletions.is_empty());
        assert_eq!(plan.deferred.len(), 1);
        assert_eq!(plan.deferred[0].until, Some(next));
        assert_eq!(
            plan.deferred[0].what,
            "retention, debris and drift (2 found)"
        );
        // Nothing held back: nothing said.
        let mut empty = Plan::default();
        hold_for_full_listing(&mut empty, next);
        assert!(empty.deferred.is_empty());
    }
}
