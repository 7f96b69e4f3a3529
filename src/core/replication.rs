//! What a replica should receive and what it may delete (DESIGN §15), pure: two listings, the
//! archive facts and the replica's retention in, a [`ReplicaPlan`] out.
//!
//! A replica is planned from two complete listings: the primary's and its own. Two questions:
//!
//! - **Copies.** A committed object of the primary that the replica lacks is copied when the
//!   replica's own retention would keep it there. Retention is asked over the union of both
//!   listings, so a dump the replica's (shorter) `daily` would delete at once is not copied only to
//!   be deleted, and archives are not copied to a replica whose `weekly` is off. Oldest first.
//! - **Deletions.** Retention over the replica's listing alone, with the replica's spans: the
//!   same rules as the primary's (never the newest dump of a database, a dump past `daily` only
//!   when an archive *on the replica* covers it). A replica may keep longer than the primary:
//!   what the primary pruned stays on the replica until the replica's own spans release it.
//!
//! Deletions are only planned from a complete listing; the caller never plans from a failed one.
//! The two questions agree: what the union keeps, the replica's own listing keeps once it is
//! copied (the union has at least the replica's archives, and a dump newest on the replica
//! is newest in the union or not copied at all), so nothing is copied and deleted in turn.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::inventory::{CommittedArchive, CommittedDump, Inventory};
use crate::policy::{Replica, Retention};
use crate::retention::{ArchiveFacts, KeepRules, Verdict};

/// A committed object of the primary that a replica lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub data_key: String,
    pub manifest_key: String,
    /// A weekly archive (else a daily dump).
    pub archive: bool,
    /// When the dump was taken, or when the archive's week ended: the copy order.
    pub at: DateTime<Utc>,
}

/// What one replica should receive and may delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// Objects to copy, oldest first.
    pub copies: Vec<Missing>,
    /// Retention's deletions on the replica (each `delete == true`, with its reasons).
    pub deletions: Vec<Verdict>,
}

/// The spans a replica keeps by: its own overrides, else the primary's `[retention]`.
pub fn keep_rules(replica: &Replica, primary: &Retention) -> KeepRules {
    KeepRules {
        daily: replica.daily.unwrap_or(primary.daily),
        weekly: replica.weekly.unwrap_or(primary.weekly),
        monthly: replica.monthly.unwrap_or(primary.monthly),
    }
}

/// What `replica` lacks of the committed dumps and archives in `primary`, oldest first. A
/// replica "has" an object when its listing shows it committed (data and manifest) with the
/// primary's size: a data object without its manifest (a copy cut short) is still missing, and
/// so is one whose size differs (damaged: copied again over it).
pub fn missing(primary: &Inventory, replica: &Inventory) -> Vec<Missing> {
    let have: HashMap<&str, u64> = replica
        .dumps
        .iter()
        .map(|d| (d.manifest_key.as_str(), d.data.size))
        .chain(
            replica
                .archives
                .iter()
                .map(|a| (a.manifest_key.as_str(), a.data.size)),
        )
        .collect();
    let lacks = |manifest_key: &str, size: u64| have.get(manifest_key) != Some(&size);
    let dumps = primary
        .dumps
        .iter()
        .filter(|d| lacks(&d.manifest_key, d.data.size))
        .map(|d| Missing {
            data_key: d.data.key.clone(),
            manifest_key: d.manifest_key.clone(),
            archive: false,
            at: d.id.taken_at,
        });
    let archives = primary
        .archives
        .iter()
        .filter(|a| lacks(&a.manifest_key, a.data.size))
        .map(|a| Missing {
            data_key: a.data.key.clone(),
            manifest_key: a.manifest_key.clone(),
            archive: true,
            at: a
                .week
                .start()
                .map_or(a.data.last_modified, |s| s + chrono::Duration::days(7)),
        });
    let mut out: Vec<Missing> = dumps.chain(archives).collect();
    out.sort_by(|a, b| (a.at, &a.data_key).cmp(&(b.at, &b.data_key)));
    out
}

/// Plan one replica (see the module docs). `facts` holds what is known of archives by manifest
/// key, for both destinations (copies are byte for byte, so one fact serves both); an archive
/// without facts covers nothing, which only keeps more.
pub fn plan(
    rules: &KeepRules,
    primary: &Inventory,
    replica: &Inventory,
    facts: &dyn Fn(&str) -> Option<ArchiveFacts>,
    now: DateTime<Utc>,
) -> ReplicaPlan {
    let have = committed_manifests(replica);
    let facts_of = |archives: &mut dyn Iterator<Item = &CommittedArchive>| -> Vec<ArchiveFacts> {
        archives.filter_map(|a| facts(&a.manifest_key)).collect()
    };

    // Copies: what retention over both listings keeps on the replica.
    let mut union_dumps: Vec<CommittedDump> = replica.dumps.clone();
    union_dumps.extend(
        primary
            .dumps
            .iter()
            .filter(|d| !have.contains(d.manifest_key.as_str()))
            .cloned(),
    );
    let union_archives = facts_of(
        &mut replica.archives.iter().chain(
            primary
                .archives
                .iter()
                .filter(|a| !have.contains(a.manifest_key.as_str())),
        ),
    );
    let released: BTreeSet<String> = rules
        .deletions(&union_dumps, &union_archives, now)
        .into_iter()
        .map(|v| v.data_key)
        .collect();
    let copies = missing(primary, replica)
        .into_iter()
        .filter(|m| !released.contains(&m.data_key))
        .filter(|m| !m.archive || rules.weekly.is_some())
        .collect();

    // Deletions: retention over the replica's own listing.
    let own_archives = facts_of(&mut replica.archives.iter());
    let deletions = rules.deletions(&replica.dumps, &own_archives, now);
    ReplicaPlan { copies, deletions }
}

fn committed_manifests(inv: &Inventory) -> HashSet<&str> {
    inv.dumps
        .iter()
        .map(|d| d.manifest_key.as_str())
        .chain(inv.archives.iter().map(|a| a.manifest_key.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ObjectInfo;
    use crate::manifest::IsoWeek;
    use crate::policy::Span;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 1,
            last_modified: "2026-11-30T00:00:00Z".parse().unwrap(),
            etag: None,
        }
    }

    fn inv(keys: &[&str]) -> Inventory {
        Inventory::classify(keys.iter().map(|k| obj(k)).collect())
    }

    fn daily(day: &str) -> [String; 2] {
        let compact = day.replace('-', "");
        [
            format!("daily/{day}/app/{compact}T030000Z.sql.zst"),
            format!("daily/{day}/app/{compact}T030000Z.manifest.json"),
        ]
    }

    fn days(list: &[&str]) -> Vec<String> {
        list.iter().flat_map(|d| daily(d)).collect()
    }

    fn keys(inv_keys: &[String]) -> Inventory {
        inv(&inv_keys.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn no_facts(_: &str) -> Option<ArchiveFacts> {
        None
    }

    fn rules(daily: u64, weekly: Option<u64>) -> KeepRules {
        KeepRules {
            daily: Span::Seconds(daily * 86_400),
            weekly: weekly.map(|w| Span::Seconds(w * 7 * 86_400)),
            monthly: None,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn missing_lists_what_the_replica_lacks_oldest_first() {
        let primary = inv(&[
            "daily/2026-11-22/app/20261122T030000Z.sql.zst",
            "daily/2026-11-22/app/20261122T030000Z.manifest.json",
            "daily/2026-11-21/app/20261121T030000Z.sql.zst",
            "daily/2026-11-21/app/20261121T030000Z.manifest.json",
            "daily/2026-11-23/app/20261123T030000Z.sql.zst",
            "daily/2026-11-23/app/20261123T030000Z.manifest.json",
            "weekly/2026-W46.tar",
            "weekly/2026-W46.manifest.json",
            // Not committed on the primary: never copied.
            "daily/2026-11-24/app/20261124T030000Z.sql.zst",
        ]);
        let replica = inv(&[
            "daily/2026-11-22/app/20261122T030000Z.sql.zst",
            "daily/2026-11-22/app/20261122T030000Z.manifest.json",
            // Debris of a failed copy: still missing.
            "daily/2026-11-23/app/20261123T030000Z.sql.zst",
        ]);
        let todo = missing(&primary, &replica);
        let keys: Vec<&str> = todo.iter().map(|m| m.data_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "weekly/2026-W46.tar",
                "daily/2026-11-21/app/20261121T030000Z.sql.zst",
                "daily/2026-11-23/app/20261123T030000Z.sql.zst",
            ]
        );
        assert!(missing(&primary, &primary).is_empty());

        // A replica copy whose size differs from the primary's is damaged: copied again.
        let mut damaged = primary.clone();
        damaged.dumps[0].data.size = 2;
        let todo = missing(&primary, &damaged);
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].data_key, primary.dumps[0].data.key);
    }

    #[test]
    fn a_replica_that_keeps_longer_keeps_what_the_primary_pruned() {
        // The primary (7 days) pruned 11-10..11-20; the replica (30 days) still has them.
        let primary = keys(&days(&["2026-11-25", "2026-11-28", "2026-11-29"]));
        let replica = keys(&days(&[
            "2026-11-10",
            "2026-11-20",
            "2026-11-25",
            "2026-11-28",
        ]));
        let p = plan(&rules(30, None), &primary, &replica, &no_facts, now());
        assert!(p.deletions.is_empty(), "{:?}", p.deletions);
        let copies: Vec<&str> = p.copies.iter().map(|m| m.data_key.as_str()).collect();
        assert_eq!(copies, [daily("2026-11-29")[0].as_str()]);
    }

    #[test]
    fn a_shorter_replica_deletes_its_own_old_dumps_and_is_not_sent_them_again() {
        // Replica keeps 3 days without a weekly tier: 11-20 and 11-25 go, and the primary's
        // 11-22 (kept there for 7 days) is not copied only to be deleted.
        let primary = keys(&days(&["2026-11-22", "2026-11-25", "2026-11-29"]));
        let replica = keys(&days(&["2026-11-20", "2026-11-25"]));
        let p = plan(&rules(3, None), &primary, &replica, &no_facts, now());
        let deleted: Vec<&str> = p.deletions.iter().map(|v| v.data_key.as_str()).collect();
        // 11-25 is the replica's newest: kept until 11-29 lands there.
        assert_eq!(deleted, [daily("2026-11-20")[0].as_str()]);
        let copies: Vec<&str> = p.copies.iter().map(|m| m.data_key.as_str()).collect();
        assert_eq!(copies, [daily("2026-11-29")[0].as_str()]);

        // Once 11-29 is there, the next plan releases 11-25 and copies nothing.
        let replica = keys(&days(&["2026-11-25", "2026-11-29"]));
        let p = plan(&rules(3, None), &primary, &replica, &no_facts, now());
        let deleted: Vec<&str> = p.deletions.iter().map(|v| v.data_key.as_str()).collect();
        assert_eq!(deleted, [daily("2026-11-25")[0].as_str()]);
        assert!(p.copies.is_empty(), "{:?}", p.copies);
    }

    #[test]
    fn the_newest_on_the_replica_is_never_deleted_and_coverage_must_be_on_the_replica() {
        // Everything is old. The primary has the archive covering 11-01; the replica does not
        // yet: the replica's 11-01 stays (not covered there) and the archive is copied.
        let mut primary_keys = days(&["2026-11-01", "2026-11-02"]);
        primary_keys.extend([
            "weekly/2026-W44.tar".into(),
            "weekly/2026-W44.manifest.json".into(),
        ]);
        let primary = keys(&primary_keys);
        let replica = keys(&days(&["2026-11-01", "2026-11-02"]));
        let covers = |manifest: &str| {
            (manifest == "weekly/2026-W44.manifest.json").then(|| ArchiveFacts {
                week: IsoWeek {
                    year: 2026,
                    week: 44,
                },
                data_key: "weekly/2026-W44.tar".into(),
                manifest_key: manifest.into(),
                covers: [daily("2026-11-01")[0].clone()].into_iter().collect(),
            })
        };
        let p = plan(&rules(7, Some(12)), &primary, &replica, &covers, now());
        assert!(p.deletions.is_empty(), "{:?}", p.deletions);
        let copies: Vec<&str> = p.copies.iter().map(|m| m.data_key.as_str()).collect();
        assert_eq!(copies, ["weekly/2026-W44.tar"]);

        // With the archive on the replica, its 11-01 goes; 11-02, the newest, stays.
        let replica = keys(&primary_keys);
        let p = plan(&rules(7, Some(12)), &primary, &replica, &covers, now());
        let deleted: Vec<&str> = p.deletions.iter().map(|v| v.data_key.as_str()).collect();
        assert_eq!(deleted, [daily("2026-11-01")[0].as_str()]);
    }

    #[test]
    fn archives_are_not_copied_where_the_weekly_tier_is_off() {
        let primary = inv(&["weekly/2026-W44.tar", "weekly/2026-W44.manifest.json"]);
        let p = plan(&rules(7, None), &primary, &inv(&[]), &no_facts, now());
        assert!(p.copies.is_empty(), "{:?}", p.copies);
        let p = plan(&rules(7, Some(12)), &primary, &inv(&[]), &no_facts, now());
        assert_eq!(p.copies.len(), 1);
    }
}
