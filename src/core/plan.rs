//! The plan (pure): given the policy, the inventory in storage, a view of the catalog and the
//! time, what should happen now — and why. `patina plan` prints it; the daemon executes it.
//!
//! Reconcile is level-triggered: the plan is computed from what *is* (the listing), not from
//! what happened, so running a plan and planning again yields an empty plan, and a daemon that
//! was down simply finds the world behind and catches up (DESIGN §5):
//!
//! - A database is due when its newest committed backup is older than its schedule's most recent
//!   fire time; a database without any backup is due at once. After downtime that is one
//!   catch-up backup per database, however many fire times were missed.
//! - A database whose last attempts failed waits with exponential backoff (1 min doubling to
//!   1 h), until its next fire time makes it due again regardless.
//! - A weekly archive is due for every finished ISO week that has committed dumps and no
//!   archive, once `retention.archive` has fired after that week ended; it waits while backups
//!   of that week are still running or due.
//! - Deletions come from `retention` and only from a complete listing.
//! - Committed dumps missing from the catalog are adopted; catalog entries whose objects are gone
//!   are drift; data objects without a manifest older than [`DEBRIS_GRACE`] are debris.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::inventory::Inventory;
use crate::manifest::{IsoWeek, Trigger};
use crate::policy::{Policy, PriorityLevel};
use crate::retention::{self, ArchiveFacts, Tier};

/// Data objects without a manifest younger than this may be an upload about to commit.
pub const DEBRIS_GRACE: Duration = Duration::hours(1);

/// Longest wait between retries of a failing database.
pub const MAX_BACKOFF: Duration = Duration::hours(1);

/// What the planner needs to know from the catalog.
#[derive(Debug, Clone, Default)]
pub struct CatalogView {
    /// Databases with a backup running now.
    pub running: BTreeSet<String>,
    /// True while a weekly archive is being built.
    pub archiving: bool,
    /// Consecutive failed attempts since each database's last success.
    pub failures: BTreeMap<String, FailureStreak>,
    /// Data keys the catalog knows as present (not deleted).
    pub known_keys: BTreeSet<String>,
    /// Weekly archives (data keys) the catalog knows as present.
    pub known_archives: BTreeSet<String>,
    /// When the newest restore drill started (`None`: never).
    pub last_drill: Option<DateTime<Utc>>,
    /// True while a restore drill runs.
    pub drilling: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureStreak {
    pub count: u32,
    pub last_at: DateTime<Utc>,
}

/// Everything to do now, each with its reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub at: DateTime<Utc>,
    pub backups: Vec<PlannedBackup>,
    pub archives: Vec<PlannedArchive>,
    pub deletions: Vec<PlannedDeletion>,
    /// At most [`ADOPTIONS_PER_PASS`] of the committed dumps the catalog lacks, newest first.
    pub adoptions: Vec<Adoption>,
    /// How many committed dumps the catalog lacks in all (the rest are adopted by later
    /// passes).
    pub adoptions_pending: usize,
    pub debris: Vec<DebrisRemoval>,
    pub drift: Vec<Drift>,
    /// Things deliberately not done now (backoff, an archive waiting), for operators.
    pub deferred: Vec<Deferred>,
    /// A restore drill to start now.
    pub drill: Option<PlannedDrill>,
    /// When the next drill is scheduled (after this one, if one starts now).
    pub next_drill: Option<DateTime<Utc>>,
}

/// A restore drill (DESIGN §13): each database's newest restore point and `sample` older ones
/// chosen at random are restored into scratch files and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedDrill {
    /// The schedule fire it answers.
    pub fire: DateTime<Utc>,
    pub sample: u32,
    pub reason: String,
}

impl Plan {
    /// True when there is nothing to do (deferred items are not work).
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty()
            && self.archives.is_empty()
            && self.deletions.is_empty()
            && self.adoptions.is_empty()
            && self.debris.is_empty()
            && self.drift.is_empty()
            && self.drill.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedBackup {
    pub database: String,
    #[serde(serialize_with = "ser_priority")]
    pub priority: PriorityLevel,
    pub trigger: Trigger,
    pub reason: String,
    /// The schedule fire this backup is for (the newest at or before the plan's time), if the
    /// schedule has fired yet: what several daemons claim it under (DESIGN §16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fire: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedArchive {
    #[serde(serialize_with = "ser_week")]
    pub week: IsoWeek,
    /// Manifest keys of the dumps to archive, oldest first.
    pub dump_manifests: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedDeletion {
    pub tier: &'static str,
    pub database: Option<String>,
    pub data_key: String,
    pub manifest_key: String,
    pub reason: String,
}

/// The most committed dumps one pass adopts: each costs a manifest read, and a catalog rebuilt
/// empty against a large bucket would otherwise hold the loop for one very long pass (and every
/// plan would carry every key).
pub const ADOPTIONS_PER_PASS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adoption {
    pub database: String,
    pub data_key: String,
    pub manifest_key: String,
    /// Always the same sentence (a large first listing adopts every object).
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebrisRemoval {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub data_key: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deferred {
    pub what: String,
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
}

fn ser_priority<S: serde::Serializer>(p: &PriorityLevel, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

fn ser_week<S: serde::Serializer>(w: &IsoWeek, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(w)
}

/// The wait after `count` consecutive failures: 1 min, 2, 4, … capped at [`MAX_BACKOFF`].
pub fn backoff(count: u32) -> Duration {
    let minutes = 1i64 << count.saturating_sub(1).min(10);
    Duration::minutes(minutes).min(MAX_BACKOFF)
}

/// Compute the plan. `archives` are the facts of the committed archives in `inventory` (read
/// from their manifests); an archive whose manifest could not be read is simply absent, which
/// only makes retention keep more.
pub fn plan(
    policy: &Policy,
    inventory: &Inventory,
    archives: &[ArchiveFacts],
    view: &CatalogView,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan {
        at: now,
        ..Plan::default()
    };
    plan_backups(policy, inventory, view, now, &mut plan);
    plan_archives(policy, inventory, archives, view, now, &mut plan);
    plan_drill(policy, view, now, &mut plan);

    let rules = retention::KeepRules::from(&policy.retention);
    for verdict in rules.deletions(&inventory.dumps, archives, now) {
        plan.deletions.push(PlannedDeletion {
            tier: match verdict.tier {
                Tier::Daily => "daily",
                Tier::Weekly => "weekly",
            },
            database: verdict.database,
            data_key: verdict.data_key,
            manifest_key: verdict.manifest_key,
            reason: verdict.reasons.join("; "),
        });
    }

    // Newest first: the restore points people ask about first are in the catalog first.
    for dump in inventory.dumps.iter().rev() {
        if !view.known_keys.contains(&dump.data.key) {
            plan.adoptions_pending += 1;
            if plan.adoptions.len() == ADOPTIONS_PER_PASS {
                continue;
            }
            plan.adoptions.push(Adoption {
                database: dump.id.database.clone(),
                data_key: dump.data.key.clone(),
                manifest_key: dump.manifest_key.clone(),
                reason: "committed in storage but not in the catalog",
            });
        }
    }
    let present: HashSet<&str> = if view.known_keys.is_empty() {
        HashSet::new()
    } else {
        inventory
            .dumps
            .iter()
            .map(|d| d.data.key.as_str())
            .collect()
    };
    for key in &view.known_keys {
        if !present.contains(key.as_str()) {
            plan.drift.push(Drift {
                data_key: key.clone(),
                reason: "recorded in the catalog as committed, but gone from storage".into(),
            });
        }
    }
    let archives: BTreeSet<&str> = inventory
        .archives
        .iter()
        .map(|a| a.data.key.as_str())
        .collect();
    for key in &view.known_archives {
        if !archives.contains(key.as_str()) {
            plan.drift.push(Drift {
                data_key: key.clone(),
                reason: "weekly archive recorded in the catalog, but gone from storage".into(),
            });
        }
    }
    for object in inventory.stale_debris(now, DEBRIS_GRACE) {
        plan.debris.push(DebrisRemoval {
            key: object.key.clone(),
            reason: format!(
                "data object without a manifest since {} (an interrupted backup)",
                object.last_modified.format("%Y-%m-%d %H:%M UTC")
            ),
        });
    }
    plan
}

fn plan_backups(
    policy: &Policy,
    inventory: &Inventory,
    view: &CatalogView,
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    // A fire time this recent counts as "on schedule"; older ones were missed (catch-up).
    let on_time = Duration::from_std(policy.daemon.tick * 2)
        .unwrap_or(Duration::minutes(2))
        .max(Duration::minutes(5));
    let mut due = Vec::new();
    for db in policy.databases.iter().filter(|d| d.enabled) {
        if view.running.contains(&db.name) {
            continue;
        }
        let latest = inventory.latest(&db.name).map(|d| d.id.taken_at);
        let last_fire = db.schedule.latest_at_or_before(now);
        let (trigger, reason) = match (latest, last_fire) {
            (None, _) => (Trigger::CatchUp, "no committed backup yet".to_string()),
            (Some(latest), Some(fire)) if latest < fire => {
                let trigger = if now - fire <= on_time {
                    Trigger::Scheduled
                } else {
                    Trigger::CatchUp
                };
                (
                    trigger,
                    format!(
                        "newest backup {} is older than the fire time {} of \"{}\"",
                        fmt_time(latest),
                        fmt_time(fire),
                        db.schedule.expression()
                    ),
                )
            }
            _ => continue,
        };
        if let Some(streak) = view.failures.get(&db.name) {
            let retry_at = streak.last_at + backoff(streak.count);
            // A fire time after the last failure makes the database due regardless.
            let fired_since = last_fire.is_some_and(|f| f > streak.last_at);
            if now < retry_at && !fired_since {
                plan.deferred.push(Deferred {
                    what: format!("backup of {}", db.name),
                    until: Some(retry_at),
                    reason: format!(
                        "{} consecutive failure{}; retrying with backoff",
                        streak.count,
                        if streak.count == 1 { "" } else { "s" }
                    ),
                });
                continue;
            }
        }
        due.push((
            db.priority,
            PlannedBackup {
                database: db.name.clone(),
                priority: db.priority,
                trigger,
                reason,
                fire: last_fire,
            },
        ));
    }
    // Stable: file order within a priority.
    due.sort_by_key(|(p, _)| *p);
    plan.backups = due.into_iter().map(|(_, b)| b).collect();
}

/// A drill is due when `[verify] schedule` fired after the last drill started (a missed fire is
/// caught up, and the first fire since drills were enabled runs at once). It waits while
/// backups run or are due, so it never delays one, and while another drill runs.
fn plan_drill(policy: &Policy, view: &CatalogView, now: DateTime<Utc>, plan: &mut Plan) {
    let Some(drills) = &policy.drills else {
        return;
    };
    plan.next_drill = drills.schedule.next_after(now);
    let Some(fire) = drills.schedule.latest_at_or_before(now) else {
        return;
    };
    if view.last_drill.is_some_and(|last| last >= fire) {
        return;
    }
    let reason = if view.drilling {
        Some("another drill is running".to_string())
    } else if !view.running.is_empty() || !plan.backups.is_empty() {
        let mut busy: Vec<&str> = view.running.iter().map(String::as_str).collect();
        busy.extend(plan.backups.iter().map(|b| b.database.as_str()));
        busy.sort();
        busy.dedup();
        Some(format!(
            "waiting for the backups of {} (drills never delay a backup)",
            busy.join(", ")
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => plan.deferred.push(Deferred {
            what: "restore drill".into(),
            until: None,
            reason,
        }),
        None => {
            plan.drill = Some(PlannedDrill {
                fire,
                sample: drills.sample,
                reason: format!(
                    "[verify] schedule fired at {}{}",
                    fire.format("%Y-%m-%d %H:%M UTC"),
                    match view.last_drill {
                        Some(last) => format!(", last drill {}", last.format("%Y-%m-%d %H:%M UTC")),
                        None => ", no drill yet".into(),
                    }
                ),
            });
        }
    }
}

fn plan_archives(
    policy: &Policy,
    inventory: &Inventory,
    archives: &[ArchiveFacts],
    view: &CatalogView,
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    if policy.retention.weekly.is_none() {
        return;
    }
    let current = IsoWeek::of(now);
    let archived: BTreeSet<IsoWeek> = inventory
        .archives
        .iter()
        .map(|a| a.week)
        .chain(archives.iter().map(|a| a.week))
        .collect();
    let mut weeks: BTreeMap<IsoWeek, Vec<String>> = BTreeMap::new();
    for dump in &inventory.dumps {
        let week = IsoWeek::of(dump.id.taken_at);
        if week < current && !archived.contains(&week) {
            weeks
                .entry(week)
                .or_default()
                .push(dump.manifest_key.clone());
        }
    }
    let last_archive_fire = policy.retention.archive.latest_at_or_before(now);
    for (week, dump_manifests) in weeks {
        let Some(end) = week_end(week) else { continue };
        let Some(fire) = last_archive_fire.filter(|f| *f >= end) else {
            continue;
        };
        if view.archiving {
            plan.deferred.push(Deferred {
                what: format!("archive of {week}"),
                until: None,
                reason: "another archive is being built".into(),
            });
            continue;
        }
        // The week's dumps must be finished: nothing running, nothing due whose fire time
        // falls in the week (its backup would belong to that week).
        let mut waiting_for: Vec<String> = view.running.iter().cloned().collect();
        for b in &plan.backups {
            let db = policy.database(&b.database);
            let fire_in_week = db
                .and_then(|d| d.schedule.latest_at_or_before(now))
                .is_some_and(|f| f < end);
            if fire_in_week && !waiting_for.contains(&b.database) {
                waiting_for.push(b.database.clone());
            }
        }
        if !waiting_for.is_empty() {
            plan.deferred.push(Deferred {
                what: format!("archive of {week}"),
                until: None,
                reason: format!(
                    "waiting for the backups of {} to finish",
                    waiting_for.join(", ")
                ),
            });
            continue;
        }
        plan.archives.push(PlannedArchive {
            week,
            reason: format!(
                "week {week} ended {} and \"{}\" fired at {}; {} dumps to archive",
                fmt_time(end),
                policy.retention.archive.expression(),
                fmt_time(fire),
                dump_manifests.len()
            ),
            dump_manifests,
        });
    }
}

/// Monday 00:00 UTC after the week.
pub fn week_end(week: IsoWeek) -> Option<DateTime<Utc>> {
    week.start().map(|s| s + Duration::days(7))
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ObjectInfo;
    use crate::manifest::DumpId;
    use crate::policy::Compression;
    use std::path::Path;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn policy(extra: &str) -> Policy {
        let text = format!(
            "[daemon]\ntick = \"60s\"\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\
             [priorities.normal]\nschedule = \"0 4 * * SUN\"\n{extra}\n\
             [[database]]\nname = \"auth\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n\
             [[database]]\nname = \"stats\"\nkind = \"sqlite\"\npath = \"s.db\"\npriority = \"normal\"\n\
             [[database]]\nname = \"blog\"\nkind = \"sqlite\"\npath = \"b.db\"\npriority = \"critical\"\n"
        );
        crate::config::from_str(&text, "patina.toml", Path::new("/srv"), &|_| None).unwrap()
    }

    /// A listing holding committed dumps taken at the given times.
    fn inventory(dumps: &[(&str, &str)]) -> Inventory {
        let mut objects = Vec::new();
        for (db, at) in dumps {
            let id = DumpId::new(*db, t(at));
            for key in [
                id.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                id.manifest_key(),
            ] {
                objects.push(ObjectInfo {
                    key,
                    size: 100,
                    last_modified: t(at),
                    etag: None,
                });
            }
        }
        Inventory::classify(objects)
    }

    fn known(inv: &Inventory) -> CatalogView {
        CatalogView {
            known_keys: inv.dumps.iter().map(|d| d.data.key.clone()).collect(),
            ..CatalogView::default()
        }
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.backups.iter().map(|b| b.database.as_str()).collect()
    }

    #[test]
    fn new_databases_are_due_at_once_in_priority_then_file_order() {
        let p = policy("");
        let inv = inventory(&[]);
        let plan = plan(&p, &inv, &[], &known(&inv), t("2026-11-18T12:00:00Z"));
        assert_eq!(names(&plan), ["auth", "blog", "stats"]);
        assert!(plan.backups.iter().all(|b| b.trigger == Trigger::CatchUp));
        assert!(plan.backups[0].reason.contains("no committed backup"));
    }

    #[test]
    fn due_after_a_fire_time_scheduled_when_on_time_catch_up_when_late() {
        let p = policy("");
        let inv = inventory(&[
            ("auth", "2026-11-17T03:00:05Z"),
            ("blog", "2026-11-18T03:00:05Z"),
            ("stats", "2026-11-15T04:00:05Z"),
        ]);
        let view = known(&inv);
        // 03:01 on the 18th: auth's 03:00 fire is newer than its backup; blog is done.
        let on_time = plan(&p, &inv, &[], &view, t("2026-11-18T03:01:00Z"));
        assert_eq!(names(&on_time), ["auth"]);
        assert_eq!(on_time.backups[0].trigger, Trigger::Scheduled);
        // Noon: still due, but now it is a catch-up (the daemon was not there at 03:00).
        let late = plan(&p, &inv, &[], &view, t("2026-11-18T12:00:00Z"));
        assert_eq!(names(&late), ["auth"]);
        assert_eq!(late.backups[0].trigger, Trigger::CatchUp);
        // Days later: one catch-up each, never one per missed fire.
        let days = plan(&p, &inv, &[], &view, t("2026-11-25T12:00:00Z"));
        assert_eq!(names(&days), ["auth", "blog", "stats"]);
    }

    #[test]
    fn running_and_disabled_databases_are_not_planned() {
        let mut p = policy("");
        p.databases[2].enabled = false;
        let inv = inventory(&[]);
        let mut view = known(&inv);
        view.running.insert("auth".into());
        let plan = plan(&p, &inv, &[], &view, t("2026-11-18T12:00:00Z"));
        assert_eq!(names(&plan), ["stats"]);
    }

    #[test]
    fn failures_back_off_until_the_next_fire_time() {
        let p = policy("");
        let inv = inventory(&[
            ("blog", "2026-11-18T03:00:05Z"),
            ("stats", "2026-11-15T04:00:05Z"),
        ]);
        let mut view = known(&inv);
        view.failures.insert(
            "auth".into(),
            FailureStreak {
                count: 3,
                last_at: t("2026-11-18T10:00:00Z"),
            },
        );
        // 3 failures: wait 4 minutes.
        let waiting = plan(&p, &inv, &[], &view, t("2026-11-18T10:03:00Z"));
        assert!(names(&waiting).is_empty());
        assert_eq!(waiting.deferred.len(), 1);
        assert_eq!(waiting.deferred[0].until, Some(t("2026-11-18T10:04:00Z")));
        assert_eq!(
            names(&plan(&p, &inv, &[], &view, t("2026-11-18T10:04:00Z"))),
            ["auth"]
        );
        // Many failures cap at an hour — but a new fire time makes it due regardless.
        view.failures.get_mut("auth").unwrap().count = 30;
        assert!(names(&plan(&p, &inv, &[], &view, t("2026-11-18T10:59:00Z"))).is_empty());
        view.failures.get_mut("auth").unwrap().last_at = t("2026-11-19T02:59:00Z");
        assert_eq!(
            names(&plan(&p, &inv, &[], &view, t("2026-11-19T03:00:30Z")))[0],
            "auth"
        );
        assert_eq!(backoff(1), Duration::minutes(1));
        assert_eq!(backoff(2), Duration::minutes(2));
        assert_eq!(backoff(7), Duration::hours(1));
        assert_eq!(backoff(u32::MAX), Duration::hours(1));
    }

    #[test]
    fn last_weeks_archive_is_due_after_the_archive_fire_and_waits_for_running_backups() {
        let p = policy("");
        // Week 2026-W46 is Nov 9–15; archive fires Sunday 04:00 (Nov 15 04:00 is inside the
        // week, so the first run after the week ended is Nov 22 04:00).
        let inv = inventory(&[
            ("auth", "2026-11-10T03:00:00Z"),
            ("blog", "2026-11-14T03:00:00Z"),
            ("auth", "2026-11-22T03:00:00Z"),
            ("blog", "2026-11-22T03:00:00Z"),
            ("stats", "2026-11-22T04:00:00Z"),
        ]);
        let mut view = known(&inv);
        let before = plan(&p, &inv, &[], &view, t("2026-11-22T03:59:00Z"));
        assert!(before.archives.is_empty());
        let due = plan(&p, &inv, &[], &view, t("2026-11-22T04:01:00Z"));
        assert_eq!(due.archives.len(), 1, "{due:?}");
        assert_eq!(due.archives[0].week.to_string(), "2026-W46");
        assert_eq!(due.archives[0].dump_manifests.len(), 2);
        view.running.insert("blog".into());
        let waits = plan(&p, &inv, &[], &view, t("2026-11-22T04:01:00Z"));
        assert!(waits.archives.is_empty());
        assert!(
            waits.deferred.iter().any(|d| d.reason.contains("blog")),
            "{waits:?}"
        );
        // With the weekly tier off there are no archives at all.
        let off = policy("[retention]\nweekly = \"off\"\n");
        assert!(
            plan(&off, &inv, &[], &known(&inv), t("2026-11-22T04:01:00Z"))
                .archives
                .is_empty()
        );
    }

    #[test]
    fn adoption_drift_and_debris_come_from_the_listing() {
        let p = policy("");
        let inv = inventory(&[("auth", "2026-11-18T03:00:00Z")]);
        let mut view = CatalogView::default();
        view.known_keys
            .insert("daily/2026-11-17/auth/20261117T030000Z.sql.zst".into());
        let mut with_debris = inv.clone();
        with_debris.debris.push(ObjectInfo {
            key: "daily/2026-11-18/blog/20261118T030000Z.sql.zst".into(),
            size: 1,
            last_modified: t("2026-11-18T03:00:00Z"),
            etag: None,
        });
        let plan = plan(&p, &with_debris, &[], &view, t("2026-11-18T04:30:00Z"));
        assert_eq!(plan.adoptions.len(), 1);
        assert_eq!(plan.drift.len(), 1);
        assert_eq!(plan.debris.len(), 1);
        // Young debris may be an upload about to commit.
        let early = super::plan(&p, &with_debris, &[], &view, t("2026-11-18T03:30:00Z"));
        assert!(early.debris.is_empty());
    }

    #[test]
    fn a_pass_adopts_at_most_a_thousand_dumps_newest_first() {
        let p = policy("");
        let start = t("2026-01-01T03:00:00Z");
        let times: Vec<String> = (0..1500)
            .map(|i| (start + chrono::Duration::hours(i)).to_rfc3339())
            .collect();
        let dumps: Vec<(&str, &str)> = times.iter().map(|at| ("auth", at.as_str())).collect();
        let inv = inventory(&dumps);
        let now = t("2026-03-10T12:00:00Z");
        let plan = plan(&p, &inv, &[], &CatalogView::default(), now);
        assert_eq!(plan.adoptions_pending, 1500);
        assert_eq!(plan.adoptions.len(), ADOPTIONS_PER_PASS);
        assert_eq!(plan.adoptions[0].data_key, inv.dumps[1499].data.key);
        assert_eq!(plan.adoptions[999].data_key, inv.dumps[500].data.key);
        // The next pass, with those adopted, plans the other 500.
        let view = CatalogView {
            known_keys: plan.adoptions.iter().map(|a| a.data_key.clone()).collect(),
            ..CatalogView::default()
        };
        let next = super::plan(&p, &inv, &[], &view, now);
        assert_eq!((next.adoptions.len(), next.adoptions_pending), (500, 500));
    }
}
