//! Which backups each retention tier keeps, and why (pure: no I/O, the clock is a parameter).
//!
//! Retention is a function of the inventory — committed dumps and weekly archives as listed in
//! object storage (DESIGN §3, §5.3) — the tier spans and `now`. It returns one [`Verdict`] per
//! committed dump and per committed archive, each with `delete` and the human reasons behind it,
//! in the manner of rustic's `KeepOptions::apply`. The caller (`plan`) turns deletions into plan
//! items; it never second-guesses a verdict.
//!
//! # The rules
//!
//! A *time `t` is expired under span `s` at `now`* when `t < s.before(now)`: strictly more than
//! `s` old. **Exactly at the limit is not yet expired (kept).** [`Span::before`] is
//! calendar-aware for month spans (one month before 31 March is 28 February) and plain seconds
//! otherwise; everything is UTC, so daylight-saving time plays no part. A span too long to
//! subtract from `now` expires nothing.
//!
//! 1. **Incomplete listing.** When `listing_complete` is false nothing is deleted: every verdict
//!    is a keep, saying so first and then what would otherwise have happened.
//! 2. **Dumps** are aged from `id.taken_at`. A dump is deleted only when its `taken_at` is expired
//!    under `daily` AND (there is no weekly tier, OR a committed archive in the input lists its
//!    data key in [`ArchiveFacts::covers`]). Coverage counts even when that archive expires in the
//!    same pass: then the dump's data is past every tier the policy describes.
//! 3. **The newest dump of every database is never deleted**, expired or not, whether or not the
//!    database is still configured ([`apply`] does not even take the database list). "Newest" is
//!    the greatest `taken_at` among the input dumps of that database; ties are all kept.
//! 4. **Archives** are aged from the end of their ISO week: Monday 00:00 UTC of the next week.
//!    With `weekly = Some(w)`, an archive is deleted when its week end is expired under `w`,
//!    unless the monthly tier keeps it. With `weekly = None` archives are never created, so any
//!    that exist are something the policy does not describe: they are kept, and the reason says
//!    so. An archive whose week does not exist (cannot happen for parsed keys) is kept.
//! 5. **Monthly tier.** Every archive belongs to the calendar month (UTC) in which its week's
//!    Monday falls — so `2026-W01` (Monday 29 December 2025) belongs to December 2025. The
//!    *monthly keeper* of a month is the archive with the earliest week among the archives
//!    present in the input that belong to that month. With `monthly = Some(m)`, the keeper is
//!    kept while its week end is not expired under `m` (as well as while the weekly tier keeps
//!    it). Because the keeper is chosen among archives present, a month whose first week was never
//!    archived still gets a keeper.
//!
//! Every verdict carries at least one reason. Deletions name the rule that allowed them
//! (`deleted: 9d old, past daily 7d, covered by weekly/2026-W45.tar`); keeps name every rule
//! that kept them.
//!
//! Verdicts come in a fixed order: dumps by (database, `taken_at`, data key), then archives by
//! (week, data key).
//!
//! A consequence worth knowing: with a `daily` span longer than `weekly` plus a week, an archive
//! can expire before the dumps it covers; those dumps are then no longer covered by anything and
//! are kept until an operator removes them. This errs on the side of keeping data.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Datelike, Utc};

use crate::inventory::{CommittedArchive, CommittedDump};
use crate::manifest::{ArchiveManifest, IsoWeek, archive_member_path};
use crate::policy::{Retention, Span};

/// The tier spans retention decides by: the part of [`Retention`] that is not a schedule.
///
/// Separate from `Retention` so that retention can be exercised (and reasoned about) without a
/// cron schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepRules {
    /// Every dump is kept at least this long.
    pub daily: Span,
    /// Weekly archives are kept this long after their week ended; `None`: no weekly tier.
    pub weekly: Option<Span>,
    /// The first archive of each month is kept this long after its week ended; `None`: no
    /// monthly tier.
    pub monthly: Option<Span>,
}

impl From<&Retention> for KeepRules {
    fn from(r: &Retention) -> KeepRules {
        KeepRules {
            daily: r.daily,
            weekly: r.weekly,
            monthly: r.monthly,
        }
    }
}

/// What retention knows about one committed weekly archive: which daily dump keys it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFacts {
    pub week: IsoWeek,
    /// Key of the archive object (`weekly/2026-W47.tar`).
    pub data_key: String,
    /// Key of the archive manifest.
    pub manifest_key: String,
    /// Data keys of the daily dumps the archive holds.
    pub covers: BTreeSet<String>,
}

impl ArchiveFacts {
    /// The facts of a committed archive, from its manifest.
    ///
    /// Conservative: a manifest that describes another object than `archive` covers nothing,
    /// and a member whose tar path is not [`archive_member_path`] of its dump key does not count
    /// as covering that key.
    pub fn from_manifest(archive: &CommittedArchive, manifest: &ArchiveManifest) -> ArchiveFacts {
        let covers = if manifest.key == archive.data.key {
            manifest
                .members
                .iter()
                .filter(|m| m.path == archive_member_path(&m.dump_key) && m.path != m.dump_key)
                .map(|m| m.dump_key.clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        ArchiveFacts {
            week: archive.week,
            data_key: archive.data.key.clone(),
            manifest_key: archive.manifest_key.clone(),
            covers,
        }
    }
}

/// The tier a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// A daily dump.
    Daily,
    /// A weekly archive.
    Weekly,
}

/// Retention's decision about one committed dump or archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub tier: Tier,
    pub data_key: String,
    pub manifest_key: String,
    /// The database, for dumps; `None` for archives.
    pub database: Option<String>,
    /// True: delete the data object and its manifest.
    pub delete: bool,
    /// Human sentences, at least one: `kept: …` or `deleted: …`.
    pub reasons: Vec<String>,
}

impl fmt::Display for Verdict {
    /// `delete daily/… — deleted: 9d old, …; …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = if self.delete { "delete" } else { "keep" };
        write!(
            f,
            "{action} {} — {}",
            self.data_key,
            self.reasons.join("; ")
        )
    }
}

/// [`KeepRules::apply`] with the spans of a policy's `[retention]`.
pub fn apply(
    retention: &Retention,
    dumps: &[CommittedDump],
    archives: &[ArchiveFacts],
    listing_complete: bool,
    now: DateTime<Utc>,
) -> Vec<Verdict> {
    KeepRules::from(retention).apply(dumps, archives, listing_complete, now)
}

impl KeepRules {
    /// One verdict per committed dump and per archive (see the module docs for the rules and
    /// the order).
    pub fn apply(
        &self,
        dumps: &[CommittedDump],
        archives: &[ArchiveFacts],
        listing_complete: bool,
        now: DateTime<Utc>,
    ) -> Vec<Verdict> {
        let mut verdicts = self.verdicts(dumps, archives, now, true);
        if !listing_complete {
            for v in &mut verdicts {
                hold(v);
            }
        }
        verdicts
    }

    /// Only the deletions of [`KeepRules::apply`] on a complete listing, with their reasons, in
    /// the same order: what a pass acts on. Keeps are decided the same way but not explained
    /// (no text is built for them), which is most of the cost over a large bucket.
    pub fn deletions(
        &self,
        dumps: &[CommittedDump],
        archives: &[ArchiveFacts],
        now: DateTime<Utc>,
    ) -> Vec<Verdict> {
        self.verdicts(dumps, archives, now, false)
    }

    /// Every verdict (`explain`), or only the deletions.
    fn verdicts(
        &self,
        dumps: &[CommittedDump],
        archives: &[ArchiveFacts],
        now: DateTime<Utc>,
        explain: bool,
    ) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(if explain {
            dumps.len() + archives.len()
        } else {
            0
        });

        let mut newest: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for d in dumps {
            let t = newest.entry(&d.id.database).or_insert(d.id.taken_at);
            *t = (*t).max(d.id.taken_at);
        }
        let mut sorted_archives: Vec<&ArchiveFacts> = archives.iter().collect();
        sorted_archives.sort_by(|a, b| (a.week, &a.data_key).cmp(&(b.week, &b.data_key)));

        // By (database, taken_at, key): grouped by database first, so the sort within a
        // group compares times, not names (a large bucket has few databases, many dumps).
        let mut by_database: HashMap<&str, Vec<&CommittedDump>> = HashMap::new();
        for d in dumps {
            by_database.entry(&d.id.database).or_default().push(d);
        }
        let mut groups: Vec<(&str, Vec<&CommittedDump>)> = by_database.into_iter().collect();
        groups.sort_unstable_by_key(|(database, _)| *database);
        let mut sorted_dumps: Vec<&CommittedDump> = Vec::with_capacity(dumps.len());
        for (_, mut group) in groups {
            group.sort_by(|a, b| (a.id.taken_at, &a.data.key).cmp(&(b.id.taken_at, &b.data.key)));
            sorted_dumps.extend(group);
        }
        // Which archives cover each dump key, in week order (one pass over the archives).
        let mut covered_by: HashMap<&str, Vec<&str>> = HashMap::new();
        for a in &sorted_archives {
            for key in &a.covers {
                covered_by
                    .entry(key.as_str())
                    .or_default()
                    .push(a.data_key.as_str());
            }
        }
        for d in sorted_dumps {
            let is_newest = newest.get(d.id.database.as_str()) == Some(&d.id.taken_at);
            let covering = covered_by
                .get(d.data.key.as_str())
                .map_or(&[][..], Vec::as_slice);
            if !explain && !self.dump_deleted(d, is_newest, covering, now) {
                continue;
            }
            verdicts.push(self.dump_verdict(d, is_newest, covering, now));
        }

        let keepers = monthly_keepers(&sorted_archives);
        for a in &sorted_archives {
            let v = self.archive_verdict(a, &keepers, now);
            if explain || v.delete {
                verdicts.push(v);
            }
        }
        verdicts
    }

    /// Several daemons: whether a dump that vanished from storage is one this node's own
    /// retention would have deleted by `now` — the same rule as [`KeepRules::deletions`]:
    /// expired, not its database's newest (`newer_exists`), and with a weekly tier covered by
    /// that week's archive (`archived_week`) — so another node holding the maintenance lease
    /// deleted it, and it is not drift.
    pub fn would_have_deleted(
        &self,
        taken_at: DateTime<Utc>,
        newer_exists: bool,
        archived_week: bool,
        now: DateTime<Utc>,
    ) -> bool {
        newer_exists
            && expired(taken_at, self.daily, now)
            && (self.weekly.is_none() || archived_week)
    }

    /// [`KeepRules::dump_verdict`]'s `delete`, without its reasons.
    fn dump_deleted(
        &self,
        d: &CommittedDump,
        is_newest: bool,
        covering: &[&str],
        now: DateTime<Utc>,
    ) -> bool {
        self.would_have_deleted(d.id.taken_at, !is_newest, !covering.is_empty(), now)
    }

    fn dump_verdict(
        &self,
        d: &CommittedDump,
        is_newest: bool,
        covering: &[&str],
        now: DateTime<Utc>,
    ) -> Verdict {
        let key = &d.data.key;
        let age = describe_age(d.id.taken_at, now);
        let past_daily = expired(d.id.taken_at, self.daily, now);
        let mut reasons = Vec::new();
        let mut delete = false;
        if is_newest {
            reasons.push(if past_daily {
                format!(
                    "kept: newest backup of {} — the newest is never deleted, though {age}, past daily {}",
                    d.id.database, self.daily
                )
            } else {
                format!("kept: newest backup of {}", d.id.database)
            });
        }
        if !past_daily {
            reasons.push(format!("kept: {age}, within daily {}", self.daily));
        } else if let Some(weekly) = self.weekly {
            if covering.is_empty() {
                reasons.push(format!(
                    "kept: {age}, past daily {}, but no weekly archive covers it yet (weekly {weekly})",
                    self.daily
                ));
            } else if !is_newest {
                delete = true;
                reasons.push(format!(
                    "deleted: {age}, past daily {}, covered by {}",
                    self.daily,
                    covering.join(", ")
                ));
            }
        } else if !is_newest {
            delete = true;
            reasons.push(format!(
                "deleted: {age}, past daily {}, no weekly tier",
                self.daily
            ));
        }
        Verdict {
            tier: Tier::Daily,
            data_key: key.clone(),
            manifest_key: d.manifest_key.clone(),
            database: Some(d.id.database.clone()),
            delete,
            reasons,
        }
    }

    fn archive_verdict(
        &self,
        a: &ArchiveFacts,
        keepers: &BTreeMap<(i32, u32), IsoWeek>,
        now: DateTime<Utc>,
    ) -> Verdict {
        let mut verdict = Verdict {
            tier: Tier::Weekly,
            data_key: a.data_key.clone(),
            manifest_key: a.manifest_key.clone(),
            database: None,
            delete: false,
            reasons: Vec::new(),
        };
        let (Some(start), Some(end)) = (a.week.start(), week_end(a.week)) else {
            verdict.reasons.push(format!(
                "kept: week {} does not exist, so its archive cannot be aged",
                a.week
            ));
            return verdict;
        };
        let Some(weekly) = self.weekly else {
            verdict.reasons.push(format!(
                "kept: the policy has no weekly tier, and retention does not delete archives it does not describe ({})",
                a.week
            ));
            return verdict;
        };
        let ended = describe_ended(end, now);
        let month = (start.year(), start.month());
        let month_name = format!("{:04}-{:02}", month.0, month.1);
        let keeper = keepers.get(&month).copied();
        let is_keeper = keeper == Some(a.week);

        let past_weekly = expired(end, weekly, now);
        if !past_weekly {
            verdict
                .reasons
                .push(format!("kept: {ended}, within weekly {weekly}"));
        }
        let mut monthly_note = None;
        if let Some(monthly) = self.monthly {
            if is_keeper {
                if expired(end, monthly, now) {
                    monthly_note = Some(format!(
                        "past monthly {monthly} as the first archive of {month_name}"
                    ));
                } else {
                    verdict.reasons.push(format!(
                        "kept: first archive of {month_name}, {ended}, within monthly {monthly}"
                    ));
                }
            } else {
                let first = keeper.map(|k| k.to_string()).unwrap_or_default();
                monthly_note = Some(format!(
                    "not the first archive of {month_name} ({first} is)"
                ));
            }
        }
        if verdict.reasons.is_empty() {
            verdict.delete = true;
            let mut reason = format!("deleted: {ended}, past weekly {weekly}");
            if let Some(note) = monthly_note {
                reason.push_str(", ");
                reason.push_str(&note);
            }
            verdict.reasons.push(reason);
        }
        verdict
    }
}

/// Turn a verdict into a keep because the listing was incomplete (rule 1).
fn hold(v: &mut Verdict) {
    let mut reasons = vec![
        "kept: the storage listing was incomplete, and nothing is deleted on an incomplete listing"
            .to_string(),
    ];
    for r in v.reasons.drain(..) {
        match r.strip_prefix("deleted: ") {
            Some(rest) => reasons.push(format!("would otherwise be deleted: {rest}")),
            None => reasons.push(r),
        }
    }
    v.reasons = reasons;
    v.delete = false;
}

/// True when `t` is strictly more than `span` before `now`; exactly at the limit is not expired.
///
/// The same instant as [`Span::before`] wherever that is defined, but a span too long to
/// subtract from `now` (it would reach past chrono's calendar) means "nothing is that old" here,
/// where `Span::before` would panic (seconds) or fall back to `now` itself (months) — and a
/// fallback to `now` would make everything expired.
fn expired(t: DateTime<Utc>, span: Span, now: DateTime<Utc>) -> bool {
    let cutoff = match span {
        Span::Seconds(s) => i64::try_from(s)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|d| now.checked_sub_signed(d)),
        Span::Months(m) => now.checked_sub_months(chrono::Months::new(m)),
    };
    cutoff.is_some_and(|cutoff| t < cutoff)
}

/// Monday 00:00 UTC of the week after `week`.
fn week_end(week: IsoWeek) -> Option<DateTime<Utc>> {
    Some(week.start()? + chrono::Duration::days(7))
}

/// The monthly keeper of each (year, month) — the earliest week among `archives` whose Monday
/// falls in that month. `archives` is sorted by week.
fn monthly_keepers(archives: &[&ArchiveFacts]) -> BTreeMap<(i32, u32), IsoWeek> {
    let mut keepers = BTreeMap::new();
    for a in archives {
        if let Some(start) = a.week.start() {
            keepers
                .entry((start.year(), start.month()))
                .or_insert(a.week);
        }
    }
    keepers
}

fn describe_age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t <= now {
        format!("{} old", compact(now - t))
    } else {
        format!("taken {} after now (clock skew?)", compact(t - now))
    }
}

fn describe_ended(end: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if end <= now {
        format!("week ended {} ago", compact(now - end))
    } else {
        format!("week ends in {}", compact(end - now))
    }
}

/// `9d`, `13w 1d`, `2h 5s`, `0s` — exact, largest units first, zero units left out.
fn compact(d: chrono::Duration) -> String {
    let mut s = d.num_seconds().max(0);
    let mut parts = Vec::new();
    for (unit, len) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ] {
        if s >= len {
            parts.push(format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ObjectInfo;
    use crate::manifest::{ArchiveMember, DumpId, FORMAT_VERSION};
    use crate::policy::Compression;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn days(n: u64) -> Span {
        Span::Seconds(n * 86_400)
    }

    fn weeks(n: u64) -> Span {
        Span::Seconds(n * 604_800)
    }

    fn rules(daily: Span, weekly: Option<Span>, monthly: Option<Span>) -> KeepRules {
        KeepRules {
            daily,
            weekly,
            monthly,
        }
    }

    fn dump_at(db: &str, at: DateTime<Utc>) -> CommittedDump {
        let id = DumpId::new(db, at);
        CommittedDump {
            data: ObjectInfo {
                key: id.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                size: 100,
                last_modified: at,
                etag: None,
            },
            manifest_key: id.manifest_key(),
            id,
        }
    }

    fn dump(db: &str, at: &str) -> CommittedDump {
        dump_at(db, t(at))
    }

    fn week(s: &str) -> IsoWeek {
        let (y, w) = s.split_once("-W").unwrap();
        IsoWeek {
            year: y.parse().unwrap(),
            week: w.parse().unwrap(),
        }
    }

    fn archive<'a>(w: &str, covers: impl IntoIterator<Item = &'a CommittedDump>) -> ArchiveFacts {
        let week = week(w);
        ArchiveFacts {
            week,
            data_key: week.archive_key(Compression::Zstd),
            manifest_key: week.manifest_key(),
            covers: covers.into_iter().map(|d| d.data.key.clone()).collect(),
        }
    }

    fn deleted(verdicts: &[Verdict]) -> BTreeSet<String> {
        verdicts
            .iter()
            .filter(|v| v.delete)
            .map(|v| v.data_key.clone())
            .collect()
    }

    fn verdict<'a>(verdicts: &'a [Verdict], key: &str) -> &'a Verdict {
        verdicts
            .iter()
            .find(|v| v.data_key == key)
            .unwrap_or_else(|| panic!("no verdict for {key}"))
    }

    /// Nightly 03:00 dumps of demo-app and groveauth, 1–20 November 2026 (Sunday 1 November is
    /// the last day of W44; W45 is 2–8, W46 9–15, W47 16–22).
    fn nightly() -> Vec<CommittedDump> {
        let mut dumps = Vec::new();
        for day in 1..=20 {
            for db in ["demo-app", "groveauth"] {
                dumps.push(dump(db, &format!("2026-11-{day:02}T03:00:00Z")));
            }
        }
        dumps
    }

    fn in_days(
        dumps: &[CommittedDump],
        first: u32,
        last: u32,
    ) -> impl Iterator<Item = &CommittedDump> {
        dumps
            .iter()
            .filter(move |d| (first..=last).contains(&d.id.taken_at.day()))
    }

    #[test]
    fn deletions_are_exactly_the_deleting_verdicts_of_apply() {
        let dumps = nightly();
        let archives = vec![
            archive("2026-W44", in_days(&dumps, 1, 1)),
            archive("2026-W45", in_days(&dumps, 2, 8)),
            archive("2026-W46", in_days(&dumps, 9, 15)),
        ];
        for rule in [
            rules(days(3), Some(weeks(1)), None),
            rules(days(7), Some(weeks(12)), Some(days(400))),
            rules(days(2), None, None),
            rules(days(1), Some(days(1)), Some(weeks(3))),
        ] {
            for now in [
                "2026-11-20T12:00:00Z",
                "2026-12-01T00:00:00Z",
                "2027-03-01T00:00:00Z",
            ] {
                let all = rule.apply(&dumps, &archives, true, t(now));
                let expected: Vec<&Verdict> = all.iter().filter(|v| v.delete).collect();
                let lean = rule.deletions(&dumps, &archives, t(now));
                assert_eq!(
                    lean.iter().collect::<Vec<_>>(),
                    expected,
                    "{rule:?} at {now}"
                );
            }
        }
    }

    #[test]
    fn seven_days_twelve_weeks_over_twenty_nights() {
        let dumps = nightly();
        let gap = dump("groveauth", "2026-11-12T03:00:00Z");
        let archives = vec![
            archive("2026-W44", in_days(&dumps, 1, 1)),
            archive("2026-W45", in_days(&dumps, 2, 8)),
            // W46 lacks groveauth's 12 November dump (say it failed to archive).
            archive(
                "2026-W46",
                in_days(&dumps, 9, 15).filter(|d| d.data.key != gap.data.key),
            ),
        ];
        let now = t("2026-11-21T03:00:00Z");
        let v = rules(days(7), Some(weeks(12)), None).apply(&dumps, &archives, true, now);
        assert_eq!(v.len(), dumps.len() + archives.len());

        // Cutoff: 14 November 03:00 exactly — that dump is exactly 7d old and kept.
        let expected: BTreeSet<String> = in_days(&dumps, 1, 13)
            .filter(|d| d.data.key != gap.data.key)
            .map(|d| d.data.key.clone())
            .collect();
        assert_eq!(deleted(&v), expected);
        assert_eq!(expected.len(), 25);

        let first = verdict(&v, "daily/2026-11-01/demo-app/20261101T030000Z.sql.zst");
        assert_eq!(
            first.reasons,
            vec!["deleted: 2w 6d old, past daily 1w, covered by weekly/2026-W44.tar"]
        );
        assert_eq!(first.database.as_deref(), Some("demo-app"));
        assert_eq!(first.tier, Tier::Daily);
        assert_eq!(
            verdict(&v, &gap.data.key).reasons,
            vec![
                "kept: 1w 2d old, past daily 1w, but no weekly archive covers it yet (weekly 12w)"
            ]
        );
        assert_eq!(
            verdict(&v, "daily/2026-11-14/demo-app/20261114T030000Z.sql.zst").reasons,
            vec!["kept: 1w old, within daily 1w"]
        );
        assert_eq!(
            verdict(&v, "daily/2026-11-20/groveauth/20261120T030000Z.sql.zst").reasons,
            vec![
                "kept: newest backup of groveauth",
                "kept: 1d old, within daily 1w"
            ]
        );
        assert_eq!(
            verdict(&v, "weekly/2026-W44.tar").reasons,
            vec!["kept: week ended 2w 5d 3h ago, within weekly 12w"]
        );
        // Order: dumps by database then time, then archives by week.
        let order: Vec<&str> = v.iter().map(|v| v.data_key.as_str()).collect();
        assert_eq!(
            order[0],
            "daily/2026-11-01/demo-app/20261101T030000Z.sql.zst"
        );
        assert_eq!(
            order[20],
            "daily/2026-11-01/groveauth/20261101T030000Z.sql.zst"
        );
        assert_eq!(
            &order[40..],
            [
                "weekly/2026-W44.tar",
                "weekly/2026-W45.tar",
                "weekly/2026-W46.tar"
            ]
        );
        // The same inputs in another order give the same verdicts.
        let mut shuffled = dumps.clone();
        shuffled.reverse();
        let mut archives_rev = archives.clone();
        archives_rev.reverse();
        assert_eq!(
            rules(days(7), Some(weeks(12)), None).apply(&shuffled, &archives_rev, true, now),
            v
        );
    }

    #[test]
    fn without_a_weekly_tier_dumps_need_no_archive_and_stray_archives_stay() {
        let dumps = nightly();
        let stray = archive("2026-W45", in_days(&dumps, 2, 8));
        let now = t("2026-11-21T03:00:00Z");
        let v = rules(days(7), None, Some(Span::Months(12))).apply(
            &dumps,
            std::slice::from_ref(&stray),
            true,
            now,
        );
        let expected: BTreeSet<String> =
            in_days(&dumps, 1, 13).map(|d| d.data.key.clone()).collect();
        assert_eq!(deleted(&v), expected);
        assert_eq!(
            verdict(&v, "daily/2026-11-05/groveauth/20261105T030000Z.sql.zst").reasons,
            vec!["deleted: 2w 2d old, past daily 1w, no weekly tier"]
        );
        let a = verdict(&v, &stray.data_key);
        assert!(!a.delete);
        assert_eq!(a.tier, Tier::Weekly);
        assert_eq!(a.database, None);
        assert!(a.reasons[0].contains("no weekly tier"), "{:?}", a.reasons);
    }

    #[test]
    fn the_newest_dump_of_a_removed_database_stays_for_ever() {
        let old = dump("oldapp", "2025-11-01T03:00:00Z");
        let newest = dump("oldapp", "2025-11-02T03:00:00Z");
        let dumps = vec![old.clone(), newest.clone()];
        let archives = vec![archive("2025-W44", &dumps)];
        let now = t("2026-11-21T03:00:00Z");
        for r in [
            rules(days(7), Some(weeks(12)), None),
            rules(days(7), None, None),
            rules(Span::Seconds(0), Some(Span::Seconds(0)), None),
        ] {
            let v = r.apply(&dumps, &archives, true, now);
            assert!(verdict(&v, &old.data.key).delete, "{r:?}");
            let n = verdict(&v, &newest.data.key);
            assert!(!n.delete, "{r:?}");
            assert!(
                n.reasons[0].starts_with(
                    "kept: newest backup of oldapp — the newest is never deleted, though 54w 6d old"
                ),
                "{:?}",
                n.reasons
            );
        }
    }

    #[test]
    fn nothing_is_deleted_on_an_incomplete_listing() {
        let dumps = nightly();
        let archives = vec![archive("2026-W45", in_days(&dumps, 2, 8))];
        let now = t("2027-06-01T00:00:00Z");
        let r = rules(days(7), Some(weeks(12)), Some(Span::Months(1)));
        let complete = r.apply(&dumps, &archives, true, now);
        assert!(!deleted(&complete).is_empty());
        let v = r.apply(&dumps, &archives, false, now);
        assert_eq!(v.len(), complete.len());
        for (held, full) in v.iter().zip(&complete) {
            assert!(!held.delete);
            assert_eq!(held.data_key, full.data_key);
            assert!(
                held.reasons[0].starts_with("kept: the storage listing was incomplete"),
                "{:?}",
                held.reasons
            );
            if full.delete {
                assert!(held.reasons[1].starts_with("would otherwise be deleted: "));
            }
        }
    }

    #[test]
    fn boundaries_keep_at_the_limit_and_delete_a_second_later() {
        // 2026-03-29 is the EU daylight-saving switch; retention is UTC and does not notice.
        let d = dump("a", "2026-03-22T01:30:00Z");
        let newest = dump("a", "2026-03-30T00:00:00Z");
        let dumps = vec![d.clone(), newest];
        let r = rules(days(7), None, None);
        let at_limit = r.apply(&dumps, &[], true, t("2026-03-29T01:30:00Z"));
        assert!(!verdict(&at_limit, &d.data.key).delete);
        let after = r.apply(&dumps, &[], true, t("2026-03-29T01:30:01Z"));
        assert_eq!(
            verdict(&after, &d.data.key).reasons,
            vec!["deleted: 1w 1s old, past daily 1w, no weekly tier"]
        );

        // Archive 2026-W13 (23–29 March) ended Monday 30 March 00:00.
        let a = archive("2026-W13", []);
        let r = rules(days(7), Some(weeks(2)), None);
        let v = r.apply(
            &[],
            std::slice::from_ref(&a),
            true,
            t("2026-04-13T00:00:00Z"),
        );
        assert_eq!(
            v[0].reasons,
            vec!["kept: week ended 2w ago, within weekly 2w"]
        );
        let v = r.apply(
            &[],
            std::slice::from_ref(&a),
            true,
            t("2026-04-13T00:00:01Z"),
        );
        assert_eq!(
            v[0].reasons,
            vec!["deleted: week ended 2w 1s ago, past weekly 2w"]
        );
        assert!(v[0].delete);
    }

    #[test]
    fn month_spans_are_calendar_months() {
        let r = rules(Span::Months(1), None, None);
        let newest = dump("a", "2026-12-01T00:00:00Z");
        let jan31 = dump("a", "2026-01-31T03:00:00Z");
        let feb28 = dump("a", "2026-02-28T03:00:00Z");
        let feb28_early = dump("a", "2026-02-28T02:59:59Z");
        let dumps = vec![jan31.clone(), feb28.clone(), feb28_early.clone(), newest];
        // One month before 28 February 03:00 is 28 January 03:00: 31 January is not expired.
        let v = r.apply(&dumps, &[], true, t("2026-02-28T03:00:00Z"));
        assert!(deleted(&v).is_empty());
        // One month before 31 March 03:00 is 28 February 03:00 (clamped): exactly at the limit.
        let v = r.apply(&dumps, &[], true, t("2026-03-31T03:00:00Z"));
        assert_eq!(
            deleted(&v),
            BTreeSet::from([jan31.data.key.clone(), feb28_early.data.key.clone()])
        );
        assert_eq!(
            verdict(&v, &feb28_early.data.key).reasons,
            vec!["deleted: 4w 3d 1s old, past daily 1mo, no weekly tier"]
        );

        // weekly = 12mo: 2025-W48 ended Monday 1 December 2025; kept through 1 December 2026.
        let a = archive("2025-W48", []);
        let r = rules(days(7), Some(Span::Months(12)), None);
        let v = r.apply(
            &[],
            std::slice::from_ref(&a),
            true,
            t("2026-12-01T00:00:00Z"),
        );
        assert!(!v[0].delete, "{:?}", v[0].reasons);
        assert!(v[0].reasons[0].ends_with("within weekly 12mo"));
        let v = r.apply(
            &[],
            std::slice::from_ref(&a),
            true,
            t("2026-12-01T00:00:01Z"),
        );
        assert!(v[0].delete);
        assert_eq!(
            v[0].reasons,
            vec!["deleted: week ended 52w 1d 1s ago, past weekly 12mo"]
        );
    }

    #[test]
    fn the_monthly_tier_keeps_the_first_archive_of_each_month() {
        // Months by Monday: W44 (26 Oct) October; W45 (2 Nov), W46, W47, W49 (30 Nov) November;
        // W50 (7 Dec) December. W48 was never archived.
        let archives: Vec<ArchiveFacts> = [
            "2026-W44", "2026-W45", "2026-W46", "2026-W47", "2026-W49", "2026-W50",
        ]
        .into_iter()
        .map(|w| archive(w, []))
        .collect();
        let r = rules(days(7), Some(weeks(4)), Some(Span::Months(12)));
        let v = r.apply(&[], &archives, true, t("2027-03-01T00:00:00Z"));
        assert_eq!(
            deleted(&v),
            BTreeSet::from([
                "weekly/2026-W46.tar".to_string(),
                "weekly/2026-W47.tar".to_string(),
                "weekly/2026-W49.tar".to_string(),
            ])
        );
        assert_eq!(
            verdict(&v, "weekly/2026-W45.tar").reasons,
            vec!["kept: first archive of 2026-11, week ended 16w ago, within monthly 12mo"]
        );
        assert_eq!(
            verdict(&v, "weekly/2026-W49.tar").reasons,
            vec![
                "deleted: week ended 12w ago, past weekly 4w, not the first archive of 2026-11 (2026-W45 is)"
            ]
        );

        // W45 ended 9 November 2026: the monthly keeper stays through 9 November 2027.
        let w45 = std::slice::from_ref(&archives[1]);
        let v = r.apply(&[], w45, true, t("2027-11-09T00:00:00Z"));
        assert!(!v[0].delete);
        let v = r.apply(&[], w45, true, t("2027-11-09T00:00:01Z"));
        assert!(v[0].delete);
        assert_eq!(
            v[0].reasons,
            vec![
                "deleted: week ended 52w 1d 1s ago, past weekly 4w, past monthly 12mo as the first archive of 2026-11"
            ]
        );

        // Around new year: 2026-W01 starts Monday 29 December 2025, so it belongs to December.
        let archives: Vec<ArchiveFacts> = ["2025-W52", "2026-W01", "2026-W02", "2026-W03"]
            .into_iter()
            .map(|w| archive(w, []))
            .collect();
        let v = r.apply(&[], &archives, true, t("2026-06-01T00:00:00Z"));
        assert_eq!(
            deleted(&v),
            BTreeSet::from([
                "weekly/2026-W01.tar".to_string(),
                "weekly/2026-W03.tar".to_string(),
            ])
        );
    }

    #[test]
    fn archive_facts_trust_only_consistent_manifests() {
        let d = dump("a", "2026-11-22T03:00:12Z");
        let w = IsoWeek::of(d.id.taken_at);
        let member = |dump_key: &str, path: &str| ArchiveMember {
            database: "a".into(),
            dump_key: dump_key.into(),
            path: path.into(),
            sha256: "00".repeat(32),
            size: 100,
            taken_at: d.id.taken_at,
            encryption: None,
        };
        let committed = CommittedArchive {
            week: w,
            data: ObjectInfo {
                key: w.archive_key(Compression::Zstd),
                size: 1000,
                last_modified: d.id.taken_at,
                etag: None,
            },
            manifest_key: w.manifest_key(),
        };
        let mut manifest = ArchiveManifest {
            format: FORMAT_VERSION,
            tier: "weekly".into(),
            week: w.to_string(),
            key: w.archive_key(Compression::Zstd),
            sha256: "11".repeat(32),
            size: 1000,
            members: vec![
                member(&d.data.key, archive_member_path(&d.data.key)),
                member(
                    "daily/2026-11-21/a/20261121T030000Z.sql.zst",
                    "elsewhere.sql.zst",
                ),
                member(
                    "2026-11-20/a/20261120T030000Z.sql.zst",
                    "2026-11-20/a/20261120T030000Z.sql.zst",
                ),
            ],
            job_id: "j".into(),
            created_at: d.id.taken_at,
            patina_version: "0.1.0".into(),
            lease_generation: None,
        };
        let facts = ArchiveFacts::from_manifest(&committed, &manifest);
        assert_eq!(facts.covers, BTreeSet::from([d.data.key.clone()]));
        assert_eq!(facts.data_key, "weekly/2026-W47.tar");
        assert_eq!(facts.manifest_key, "weekly/2026-W47.manifest.json");

        manifest.key = "weekly/2026-W47.tar.gz".into();
        assert!(
            ArchiveFacts::from_manifest(&committed, &manifest)
                .covers
                .is_empty()
        );
    }

    #[test]
    fn verdicts_display_as_one_line() {
        let d = dump("a", "2026-11-01T03:00:00Z");
        let v = rules(days(7), None, None).apply(
            std::slice::from_ref(&d),
            &[],
            true,
            t("2026-11-01T03:00:00Z"),
        );
        assert_eq!(
            v[0].to_string(),
            "keep daily/2026-11-01/a/20261101T030000Z.sql.zst — kept: newest backup of a; kept: 0s old, within daily 1w"
        );
    }

    #[test]
    fn limits_table() {
        struct Case {
            name: &'static str,
            rules: KeepRules,
            /// Dump time (tier daily) or archive week (tier weekly).
            item: &'static str,
            now: &'static str,
            delete: bool,
        }
        let d7 = rules(days(7), None, None);
        let w2 = rules(days(1), Some(weeks(2)), None);
        let m12 = rules(days(1), Some(weeks(1)), Some(Span::Months(12)));
        let cases = [
            Case {
                name: "dump 1s inside daily",
                rules: d7,
                item: "2026-10-25T03:00:00Z",
                now: "2026-11-01T02:59:59Z",
                delete: false,
            },
            Case {
                name: "dump exactly daily old",
                rules: d7,
                item: "2026-10-25T03:00:00Z",
                now: "2026-11-01T03:00:00Z",
                delete: false,
            },
            Case {
                name: "dump 1s past daily",
                rules: d7,
                item: "2026-10-25T03:00:00Z",
                now: "2026-11-01T03:00:01Z",
                delete: true,
            },
            // 25 October 2026 is the EU switch back from summer time: a UTC day is still 86 400 s.
            Case {
                name: "dump across a DST switch, at the limit",
                rules: d7,
                item: "2026-10-24T23:30:00Z",
                now: "2026-10-31T23:30:00Z",
                delete: false,
            },
            Case {
                name: "dump across a DST switch, past",
                rules: d7,
                item: "2026-10-24T23:30:00Z",
                now: "2026-10-31T23:30:01Z",
                delete: true,
            },
            Case {
                name: "dump taken after now",
                rules: d7,
                item: "2026-11-02T00:00:00Z",
                now: "2026-11-01T00:00:00Z",
                delete: false,
            },
            Case {
                name: "dump under an unrepresentable span",
                rules: rules(Span::Seconds(u64::MAX), None, None),
                item: "2000-01-01T00:00:00Z",
                now: "2026-11-01T00:00:00Z",
                delete: false,
            },
            Case {
                name: "dump under an absurd month span",
                rules: rules(Span::Months(u32::MAX), None, None),
                item: "2000-01-01T00:00:00Z",
                now: "2026-11-01T00:00:00Z",
                delete: false,
            },
            // 2026-W44 ends Monday 2 November 00:00.
            Case {
                name: "archive exactly weekly old",
                rules: w2,
                item: "2026-W44",
                now: "2026-11-16T00:00:00Z",
                delete: false,
            },
            Case {
                name: "archive 1s past weekly",
                rules: w2,
                item: "2026-W44",
                now: "2026-11-16T00:00:01Z",
                delete: true,
            },
            Case {
                name: "monthly keeper exactly 12mo old",
                rules: m12,
                item: "2026-W44",
                now: "2027-11-02T00:00:00Z",
                delete: false,
            },
            Case {
                name: "monthly keeper 1s past 12mo",
                rules: m12,
                item: "2026-W44",
                now: "2027-11-02T00:00:01Z",
                delete: true,
            },
        ];
        for c in cases {
            let now = t(c.now);
            let v = if c.item.contains("-W") {
                c.rules.apply(&[], &[archive(c.item, [])], true, now)
            } else {
                // A newer dump, so that the newest-dump rule stays out of the way.
                let dumps = [dump("a", c.item), dump_at("a", t("2100-01-01T00:00:00Z"))];
                c.rules.apply(&dumps, &[], true, now)
            };
            assert_eq!(v[0].delete, c.delete, "{}: {:?}", c.name, v[0].reasons);
        }
    }

    /// Safety properties over random histories: 1–4 databases, dumps over ~120 days on an hourly
    /// grid (so `now` often lands exactly on a limit), a random subset of weeks archived with
    /// random (sometimes cross-week) coverage, random spans including `None` and months.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        const DBS: [&str; 4] = ["auth", "blog", "jobs", "stats"];

        fn base() -> DateTime<Utc> {
            t("2026-01-05T00:00:00Z") // a Monday: 2026-W02
        }

        fn hours(h: i64) -> DateTime<Utc> {
            base() + chrono::Duration::hours(h)
        }

        fn span() -> impl Strategy<Value = Span> {
            prop_oneof![
                (0u64..=30).prop_map(|d| Span::Seconds(d * 86_400)),
                (0u64..=30 * 24).prop_map(|h| Span::Seconds(h * 3_600)),
                (1u64..=20).prop_map(|w| Span::Seconds(w * 604_800)),
                (1u32..=6).prop_map(Span::Months),
            ]
        }

        fn keep_rules() -> impl Strategy<Value = KeepRules> {
            (
                span(),
                prop::option::weighted(0.8, span()),
                prop::option::weighted(0.5, span()),
            )
                .prop_map(|(daily, weekly, monthly)| KeepRules {
                    daily,
                    weekly,
                    monthly,
                })
        }

        #[derive(Debug, Clone)]
        struct History {
            dumps: Vec<CommittedDump>,
            archives: Vec<ArchiveFacts>,
        }

        fn history() -> impl Strategy<Value = History> {
            (
                prop::collection::vec((0usize..4, 0i64..120 * 24), 1..50),
                prop::collection::vec((0i64..20, any::<u64>(), prop::bool::weighted(0.2)), 0..12),
            )
                .prop_map(|(raw, raw_archives)| {
                    let mut dumps: Vec<CommittedDump> = raw
                        .into_iter()
                        .map(|(db, h)| dump_at(DBS[db], hours(h)))
                        .collect();
                    dumps.sort_by(|a, b| a.id.cmp(&b.id));
                    dumps.dedup_by(|a, b| a.id == b.id);
                    let mut archives: Vec<ArchiveFacts> = Vec::new();
                    for (w, mask, cross) in raw_archives {
                        let week = IsoWeek::of(base() + chrono::Duration::weeks(w));
                        if archives.iter().any(|a| a.week == week) {
                            continue;
                        }
                        let covers = dumps
                            .iter()
                            .enumerate()
                            .filter(|(i, d)| {
                                (cross || IsoWeek::of(d.id.taken_at) == week)
                                    && mask & (1 << (i % 64)) != 0
                            })
                            .map(|(_, d)| d.data.key.clone())
                            .collect();
                        archives.push(ArchiveFacts {
                            week,
                            data_key: week.archive_key(Compression::Zstd),
                            manifest_key: week.manifest_key(),
                            covers,
                        });
                    }
                    History { dumps, archives }
                })
        }

        fn now() -> impl Strategy<Value = DateTime<Utc>> {
            (0i64..200 * 24).prop_map(hours)
        }

        /// The specification, restated: strictly more than `span` before `now`.
        fn older_than(t: DateTime<Utc>, span: Span, now: DateTime<Utc>) -> bool {
            match span {
                Span::Seconds(s) => (now - t).num_seconds() > s as i64,
                Span::Months(m) => t < now.checked_sub_months(chrono::Months::new(m)).unwrap(),
            }
        }

        fn newest_keys(dumps: &[CommittedDump]) -> BTreeSet<String> {
            let mut newest: BTreeMap<&str, &CommittedDump> = BTreeMap::new();
            for d in dumps {
                let e = newest.entry(&d.id.database).or_insert(d);
                if d.id.taken_at > e.id.taken_at {
                    *e = d;
                }
            }
            newest.values().map(|d| d.data.key.clone()).collect()
        }

        /// True when `a` is the earliest archive present whose week's Monday is in its month.
        fn is_monthly_keeper(a: &ArchiveFacts, archives: &[ArchiveFacts]) -> bool {
            let month = |w: IsoWeek| {
                let s = w.start().unwrap();
                (s.year(), s.month())
            };
            !archives
                .iter()
                .any(|b| month(b.week) == month(a.week) && b.week < a.week)
        }

        fn survivors(h: &History, verdicts: &[Verdict]) -> History {
            let gone = deleted(verdicts);
            History {
                dumps: h
                    .dumps
                    .iter()
                    .filter(|d| !gone.contains(&d.data.key))
                    .cloned()
                    .collect(),
                archives: h
                    .archives
                    .iter()
                    .filter(|a| !gone.contains(&a.data_key))
                    .cloned()
                    .collect(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn one_verdict_each_with_reasons(r in keep_rules(), h in history(), now in now(), complete in any::<bool>()) {
                let v = r.apply(&h.dumps, &h.archives, complete, now);
                prop_assert_eq!(v.len(), h.dumps.len() + h.archives.len());
                let mut keys: Vec<&str> = v.iter().map(|v| v.data_key.as_str()).collect();
                keys.sort();
                let mut expected: Vec<&str> = h
                    .dumps
                    .iter()
                    .map(|d| d.data.key.as_str())
                    .chain(h.archives.iter().map(|a| a.data_key.as_str()))
                    .collect();
                expected.sort();
                prop_assert_eq!(keys, expected);
                for v in &v {
                    prop_assert!(!v.reasons.is_empty());
                    let prefix = if v.delete { "deleted: " } else { "kept: " };
                    prop_assert!(v.reasons[0].starts_with(prefix), "{:?}", v);
                }
                // Deterministic: input order does not matter.
                let mut dumps = h.dumps.clone();
                dumps.reverse();
                let mut archives = h.archives.clone();
                archives.reverse();
                prop_assert_eq!(r.apply(&dumps, &archives, complete, now), v);
            }

            #[test]
            fn never_deletes_the_newest_dump_of_any_database(r in keep_rules(), h in history(), now in now()) {
                let v = r.apply(&h.dumps, &h.archives, true, now);
                let gone = deleted(&v);
                for key in newest_keys(&h.dumps) {
                    prop_assert!(!gone.contains(&key), "deleted newest {}", key);
                }
            }

            #[test]
            fn never_deletes_on_an_incomplete_listing(r in keep_rules(), h in history(), now in now()) {
                let v = r.apply(&h.dumps, &h.archives, false, now);
                prop_assert!(deleted(&v).is_empty());
            }

            #[test]
            fn deleted_dumps_are_past_daily_and_covered(r in keep_rules(), h in history(), now in now()) {
                let v = r.apply(&h.dumps, &h.archives, true, now);
                let gone = deleted(&v);
                for d in h.dumps.iter().filter(|d| gone.contains(&d.data.key)) {
                    prop_assert!(older_than(d.id.taken_at, r.daily, now), "{:?} not past daily", d.id);
                    prop_assert!(
                        r.weekly.is_none() || h.archives.iter().any(|a| a.covers.contains(&d.data.key)),
                        "{:?} deleted without a covering archive", d.id
                    );
                }
            }

            #[test]
            fn deleted_archives_are_past_weekly_and_not_a_monthly_keeper(r in keep_rules(), h in history(), now in now()) {
                let v = r.apply(&h.dumps, &h.archives, true, now);
                let gone = deleted(&v);
                for a in h.archives.iter().filter(|a| gone.contains(&a.data_key)) {
                    let end = a.week.start().unwrap() + chrono::Duration::weeks(1);
                    let weekly = r.weekly;
                    prop_assert!(weekly.is_some(), "archive deleted without a weekly tier");
                    prop_assert!(older_than(end, weekly.unwrap(), now), "{} not past weekly", a.week);
                    if let Some(monthly) = r.monthly && is_monthly_keeper(a, &h.archives) {
                        prop_assert!(older_than(end, monthly, now), "{} monthly keeper deleted", a.week);
                    }
                }
            }

            #[test]
            fn idempotent(r in keep_rules(), h in history(), now in now()) {
                let first = r.apply(&h.dumps, &h.archives, true, now);
                let rest = survivors(&h, &first);
                let second = r.apply(&rest.dumps, &rest.archives, true, now);
                prop_assert!(deleted(&second).is_empty(), "second pass deletes {:?}", deleted(&second));
            }

            #[test]
            fn monotone_in_time(r in keep_rules(), h in history(), now in now(), later in 0i64..100 * 24) {
                let early = deleted(&r.apply(&h.dumps, &h.archives, true, now));
                let late = deleted(&r.apply(&h.dumps, &h.archives, true, now + chrono::Duration::hours(later)));
                prop_assert!(early.is_subset(&late), "un-deleted later: {:?}", early.difference(&late).collect::<Vec<_>>());
            }
        }
    }
}

#[cfg(test)]
mod vanished_tests {
    use super::*;

    #[test]
    fn a_vanished_dump_counts_as_retention_only_where_retention_would_delete_it() {
        let day = |d: i64| chrono::Duration::days(d);
        let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let rules = KeepRules {
            daily: Span::Seconds(7 * 86_400),
            weekly: Some(Span::Seconds(84 * 86_400)),
            monthly: None,
        };
        let old = now - day(10);
        assert!(rules.would_have_deleted(old, true, true, now));
        assert!(
            !rules.would_have_deleted(old, false, true, now),
            "the newest stays"
        );
        assert!(
            !rules.would_have_deleted(old, true, false, now),
            "not yet archived"
        );
        assert!(
            !rules.would_have_deleted(now - day(2), true, true, now),
            "not expired"
        );
        let no_weekly = KeepRules {
            weekly: None,
            ..rules
        };
        assert!(no_weekly.would_have_deleted(old, true, false, now));
    }
}
