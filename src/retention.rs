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
//! otherwise; everything is UTC, so daylight-saving time plays no part.
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

use std::collections::{BTreeMap, BTreeSet};
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
        let mut verdicts = Vec::with_capacity(dumps.len() + archives.len());

        let mut newest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for d in dumps {
            let t = newest.entry(&d.id.database).or_insert(d.id.taken_at);
            *t = (*t).max(d.id.taken_at);
        }
        let mut sorted_archives: Vec<&ArchiveFacts> = archives.iter().collect();
        sorted_archives.sort_by(|a, b| (a.week, &a.data_key).cmp(&(b.week, &b.data_key)));

        let mut sorted_dumps: Vec<&CommittedDump> = dumps.iter().collect();
        sorted_dumps.sort_by(|a, b| {
            (&a.id.database, a.id.taken_at, &a.data.key).cmp(&(
                &b.id.database,
                b.id.taken_at,
                &b.data.key,
            ))
        });
        for d in sorted_dumps {
            let is_newest = newest.get(d.id.database.as_str()) == Some(&d.id.taken_at);
            verdicts.push(self.dump_verdict(d, is_newest, &sorted_archives, now));
        }

        let keepers = monthly_keepers(&sorted_archives);
        for a in &sorted_archives {
            verdicts.push(self.archive_verdict(a, &keepers, now));
        }

        if !listing_complete {
            for v in &mut verdicts {
                hold(v);
            }
        }
        verdicts
    }

    fn dump_verdict(
        &self,
        d: &CommittedDump,
        is_newest: bool,
        archives: &[&ArchiveFacts],
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
            let covering: Vec<&str> = archives
                .iter()
                .filter(|a| a.covers.contains(key))
                .map(|a| a.data_key.as_str())
                .collect();
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
fn expired(t: DateTime<Utc>, span: Span, now: DateTime<Utc>) -> bool {
    t < span.before(now)
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
