//! When to alert (pure): the thresholds of `[alerts]` applied to facts, and the de-duplication
//! of conditions that persist. No I/O and no clock of its own — `now` is always a parameter.
//!
//! Rules (DESIGN §9, issue 5):
//!
//! - `size_anomaly`: a dump whose size is off the median of that database's previous
//!   [`SIZE_HISTORY`] committed dumps by more than `alerts.size_deviation` (relative). Needs at
//!   least [`MIN_SIZE_HISTORY`] earlier dumps, so a new database's first days stay quiet.
//! - `stale`: no committed backup within `stale_after` — a number of the schedule's current
//!   intervals (the longest gap between its fire times around now), or a fixed duration
//!   ([`StaleAfter::window`]). A database never backed up counts from when the daemon started
//!   watching.
//! - `duration`: a job running (or having run) longer than `alerts.max_duration`.
//! - `slow`: a database's backup taking more than [`SLOW_FACTOR`] (3) × the median of its
//!   previous [`SLOW_HISTORY`] successful runs and more than [`SLOW_FLOOR`] (60 s); needs
//!   [`MIN_SLOW_HISTORY`] earlier runs. Durations are the catalog's recorded results.
//! - `schema_changed`: a new dump whose schema hash differs from the previous dump's, with the
//!   tables added, dropped and altered (per-table schema hashes; "unknown" when the older dump's
//!   record predates them). A notice, sent once per dump.
//! - Persisting conditions (stale, config_invalid, archive waits) go through [`Tracker`]: an
//!   alert when the condition starts, a reminder every `reminder` interval while it persists
//!   (if configured), one `resolved` alert when it clears — never one per tick. One-shot facts
//!   (a job's failure, a drifted key, a slow job) are sent once per key ([`Tracker::once`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::{Alert, AlertState, DumpSchema, SLOW_FACTOR, SLOW_FLOOR, SchemaChange, Subject};
use crate::policy::StaleAfter;
use crate::schedule::Schedule;

/// How many earlier dumps the size median is taken over.
pub const SIZE_HISTORY: usize = 7;

/// Fewer earlier dumps than this: no size verdict yet.
pub const MIN_SIZE_HISTORY: usize = 3;

/// How many one-shot keys are remembered (oldest forgotten first).
const ONCE_MEMORY: usize = 4096;

/// The median of `sizes` (the lower middle for an even count); `None` when empty.
pub fn median(sizes: &[u64]) -> Option<u64> {
    if sizes.is_empty() {
        return None;
    }
    let mut s = sizes.to_vec();
    s.sort_unstable();
    Some(s[(s.len() - 1) / 2])
}

/// A size verdict: `Some((median, relative deviation))` when `size` is off the median of
/// `history` (the previous dumps, newest first; only the first [`SIZE_HISTORY`] count) by more
/// than `limit`.
pub fn size_anomaly(size: u64, history: &[u64], limit: f64) -> Option<(u64, f64)> {
    let history = &history[..history.len().min(SIZE_HISTORY)];
    if history.len() < MIN_SIZE_HISTORY {
        return None;
    }
    let median = median(history)?;
    if median == 0 {
        return None;
    }
    let deviation = (size as f64 - median as f64) / median as f64;
    (deviation.abs() > limit).then_some((median, deviation))
}

/// The window within which a database must have a committed backup:
/// [`StaleAfter::window`] — the same definition as the `patina_backup_stale_after_seconds`
/// metric. `None` when the schedule never fires again.
pub fn stale_window(
    schedule: &Schedule,
    stale_after: StaleAfter,
    now: DateTime<Utc>,
) -> Option<Duration> {
    stale_after.window(schedule, now)
}

/// True when the newest backup (or, without one, the start of observation) is older than
/// `window` at `now`.
pub fn is_stale(last: DateTime<Utc>, window: Duration, now: DateTime<Utc>) -> bool {
    now - last > window
}

/// True when a job started at `started` has run longer than `limit` at `now`.
pub fn over_time(started: DateTime<Utc>, now: DateTime<Utc>, limit: std::time::Duration) -> bool {
    Duration::from_std(limit).is_ok_and(|limit| now - started > limit)
}

/// The relative change of `size` against the median of `history` (for the daily trend).
pub fn trend(size: u64, history: &[u64]) -> Option<f64> {
    let history = &history[..history.len().min(SIZE_HISTORY)];
    let median = median(history)?;
    (median > 0).then(|| (size as f64 - median as f64) / median as f64)
}

/// How many earlier successful runs the `slow` median is taken over.
pub const SLOW_HISTORY: usize = 7;

/// Fewer earlier runs than this: no `slow` verdict yet.
pub const MIN_SLOW_HISTORY: usize = 3;

/// A `slow` verdict: `Some(median)` when `duration` is more than [`SLOW_FACTOR`] × the median
/// of `history` (earlier successful runs, newest first; the first [`SLOW_HISTORY`] count) and
/// more than [`SLOW_FLOOR`]. Needs [`MIN_SLOW_HISTORY`] earlier runs.
pub fn slow(
    duration: std::time::Duration,
    history: &[std::time::Duration],
) -> Option<std::time::Duration> {
    let history = &history[..history.len().min(SLOW_HISTORY)];
    if history.len() < MIN_SLOW_HISTORY {
        return None;
    }
    let mut sorted = history.to_vec();
    sorted.sort_unstable();
    let median = sorted[(sorted.len() - 1) / 2];
    (duration > median * SLOW_FACTOR && duration > SLOW_FLOOR).then_some(median)
}

/// What changed from `previous` to `new`; `None` when the schema hashes agree. Tables added
/// and dropped come from the table lists, tables altered from their own schema hashes; what
/// the older record cannot say is `None` ("unknown").
pub fn schema_change(new: &DumpSchema, previous: &DumpSchema) -> Option<SchemaChange> {
    if new.schema_hash == previous.schema_hash {
        return None;
    }
    let (Some(now), Some(before)) = (&new.tables, &previous.tables) else {
        return Some(SchemaChange::default());
    };
    let added = now
        .keys()
        .filter(|t| !before.contains_key(*t))
        .cloned()
        .collect();
    let dropped = before
        .keys()
        .filter(|t| !now.contains_key(*t))
        .cloned()
        .collect();
    let mut altered = Some(Vec::new());
    for (table, hash) in now {
        let Some(old) = before.get(table) else {
            continue;
        };
        match (hash, old, &mut altered) {
            (Some(h), Some(o), Some(list)) if h != o => list.push(table.clone()),
            (Some(_), Some(_), _) => {}
            _ => altered = None,
        }
    }
    Some(SchemaChange {
        added: Some(added),
        dropped: Some(dropped),
        altered,
    })
}

/// De-duplicates alerts: remembers which conditions are active and which one-shot keys were
/// already sent.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    active: BTreeMap<String, Active>,
    sent: BTreeSet<String>,
    sent_order: VecDeque<String>,
    /// Re-notify a persisting condition this often; `None`: never.
    pub reminder: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Active {
    subject: Subject,
    since: DateTime<Utc>,
    last_sent: DateTime<Utc>,
}

impl Tracker {
    pub fn new(reminder: Option<Duration>) -> Tracker {
        Tracker {
            reminder,
            ..Tracker::default()
        }
    }

    /// The complete set of active conditions of one family (key prefix, e.g. `stale:`) now:
    /// new keys fire, keys no longer present resolve, the rest stay quiet (their facts are
    /// refreshed for reminders and the summary).
    pub fn observe(
        &mut self,
        family: &str,
        current: Vec<(String, Subject)>,
        now: DateTime<Utc>,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        let keys: BTreeSet<String> = current.iter().map(|(k, _)| k.clone()).collect();
        let gone: Vec<String> = self
            .active
            .keys()
            .filter(|k| k.starts_with(family) && !keys.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            out.extend(self.clear(&key, now));
        }
        for (key, subject) in current {
            out.extend(self.raise(&key, subject, now));
        }
        out
    }

    /// Set one condition; fires only when it was not already active.
    pub fn raise(&mut self, key: &str, subject: Subject, now: DateTime<Utc>) -> Option<Alert> {
        if let Some(a) = self.active.get_mut(key) {
            a.subject = subject;
            return None;
        }
        self.active.insert(
            key.to_string(),
            Active {
                subject: subject.clone(),
                since: now,
                last_sent: now,
            },
        );
        Some(Alert::new(subject, AlertState::Firing, key, now))
    }

    /// Clear one condition; resolves only when it was active.
    pub fn clear(&mut self, key: &str, now: DateTime<Utc>) -> Option<Alert> {
        let a = self.active.remove(key)?;
        let mut alert = Alert::new(a.subject, AlertState::Resolved, key, now);
        alert.since = Some(a.since);
        Some(alert)
    }

    /// A one-shot fact: sent the first time its key is seen, never again.
    pub fn once(&mut self, key: &str, subject: Subject, now: DateTime<Utc>) -> Option<Alert> {
        if !self.sent.insert(key.to_string()) {
            return None;
        }
        self.sent_order.push_back(key.to_string());
        if self.sent_order.len() > ONCE_MEMORY
            && let Some(old) = self.sent_order.pop_front()
        {
            self.sent.remove(&old);
        }
        Some(Alert::new(subject, AlertState::Firing, key, now))
    }

    /// True when this one-shot key was already sent.
    pub fn was_sent(&self, key: &str) -> bool {
        self.sent.contains(key)
    }

    /// Reminders for the conditions that persisted a whole `reminder` interval since they
    /// were last sent.
    pub fn reminders(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let Some(every) = self.reminder else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, a) in &mut self.active {
            if now - a.last_sent >= every {
                a.last_sent = now;
                let mut alert = Alert::new(a.subject.clone(), AlertState::Reminder, key, now);
                alert.since = Some(a.since);
                out.push(alert);
            }
        }
        out
    }

    /// The active conditions (key, facts, since), for the daily summary.
    pub fn active(&self) -> impl Iterator<Item = (&str, &Subject, DateTime<Utc>)> {
        self.active
            .iter()
            .map(|(k, a)| (k.as_str(), &a.subject, a.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn stale(db: &str) -> Subject {
        Subject::Stale {
            database: db.into(),
            last_success: None,
            window: Duration::days(2),
        }
    }

    #[test]
    fn the_median_takes_the_lower_middle() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 2, 3, 100]), Some(2));
    }

    #[test]
    fn size_anomalies_need_history_and_a_real_deviation() {
        // Too little history: quiet.
        assert_eq!(size_anomaly(10, &[100, 100], 0.5), None);
        // Within 50%: quiet, on both sides, exactly at the limit too.
        assert_eq!(size_anomaly(150, &[100, 100, 100], 0.5), None);
        assert_eq!(size_anomaly(50, &[100, 100, 100], 0.5), None);
        // A shrunken database alerts.
        assert_eq!(size_anomaly(40, &[100, 101, 99], 0.5), Some((100, -0.6)));
        // So does a sudden growth.
        assert_eq!(size_anomaly(300, &[100, 100, 100], 0.5), Some((100, 2.0)));
        // Only the 7 newest count: older history is ignored.
        let h = [100, 100, 100, 100, 100, 100, 100, 5, 5, 5, 5, 5, 5, 5, 5];
        assert_eq!(size_anomaly(100, &h, 0.5), None);
        // A median of zero gives no verdict.
        assert_eq!(size_anomaly(100, &[0, 0, 0], 0.5), None);
    }

    #[test]
    fn stale_is_a_number_of_schedule_intervals() {
        let daily = Schedule::parse("0 3 * * *", chrono_tz::UTC).unwrap();
        let now = t("2026-11-22T10:00:00Z");
        let w = stale_window(&daily, StaleAfter::Intervals(2), now).unwrap();
        assert_eq!(w, Duration::days(2));
        assert!(!is_stale(t("2026-11-20T10:00:00Z"), w, now));
        assert!(is_stale(t("2026-11-20T09:59:59Z"), w, now));
        let half_hourly = Schedule::parse("*/30 * * * *", chrono_tz::UTC).unwrap();
        assert_eq!(
            stale_window(&half_hourly, StaleAfter::Intervals(3), now).unwrap(),
            Duration::minutes(90)
        );
        // A fixed duration ignores the schedule's interval.
        let eight_days = StaleAfter::Duration(std::time::Duration::from_secs(8 * 86_400));
        assert_eq!(
            stale_window(&half_hourly, eight_days, now).unwrap(),
            Duration::days(8)
        );
    }

    #[test]
    fn slow_needs_three_times_the_median_and_a_minute() {
        let s = std::time::Duration::from_secs;
        let history = [s(30), s(20), s(25), s(400), s(22), s(21), s(24)];
        // Median 24 s: 73 s is over 3× and over a minute.
        assert_eq!(slow(s(73), &history), Some(s(24)));
        assert_eq!(slow(s(72), &history), None, "exactly 3× is not slow");
        // Fast databases: 3× the median but under a minute stays quiet.
        assert_eq!(slow(s(59), &[s(1), s(1), s(1)]), None);
        assert_eq!(slow(s(61), &[s(1), s(1), s(1)]), Some(s(1)));
        // Too little history: no verdict; only the 7 newest count.
        assert_eq!(slow(s(600), &[s(1), s(1)]), None);
        let mut long = vec![s(100); 7];
        long.extend([s(1); 20]);
        assert_eq!(slow(s(250), &long), None);
    }

    #[test]
    fn schema_changes_name_tables_added_dropped_and_altered() {
        let schema = |hash: &str, tables: Option<&[(&str, Option<&str>)]>| DumpSchema {
            key: "k".into(),
            schema_hash: hash.into(),
            tables: tables.map(|t| {
                t.iter()
                    .map(|(n, h)| (n.to_string(), h.map(str::to_string)))
                    .collect()
            }),
        };
        let before = schema(
            "1",
            Some(&[
                ("users", Some("u1")),
                ("posts", Some("p1")),
                ("old", Some("o")),
            ]),
        );
        let after = schema(
            "2",
            Some(&[
                ("users", Some("u2")),
                ("posts", Some("p1")),
                ("tags", Some("t")),
            ]),
        );
        assert_eq!(schema_change(&before, &before), None);
        let c = schema_change(&after, &before).unwrap();
        assert_eq!(c.added, Some(vec!["tags".to_string()]));
        assert_eq!(c.dropped, Some(vec!["old".to_string()]));
        assert_eq!(c.altered, Some(vec!["users".to_string()]));
        assert_eq!(c.to_string(), "added: tags; dropped: old; altered: users");
        // An older record with table names but no per-table hashes: altered is unknown.
        let names_only = schema("1", Some(&[("users", None), ("posts", None)]));
        let c = schema_change(&after, &names_only).unwrap();
        assert_eq!(c.added, Some(vec!["tags".to_string()]));
        assert_eq!(c.altered, None);
        assert_eq!(
            c.to_string(),
            "added: tags; dropped: none; altered: unknown"
        );
        // No table list at all: only that the hash changed.
        let c = schema_change(&after, &schema("1", None)).unwrap();
        assert_eq!(
            c.to_string(),
            "added: unknown; dropped: unknown; altered: unknown"
        );
    }

    #[test]
    fn over_time_is_strictly_longer_than_the_limit() {
        let s = t("2026-11-22T03:00:00Z");
        let limit = std::time::Duration::from_secs(45 * 60);
        assert!(!over_time(s, t("2026-11-22T03:45:00Z"), limit));
        assert!(over_time(s, t("2026-11-22T03:45:01Z"), limit));
    }

    #[test]
    fn a_persisting_condition_fires_once_reminds_then_resolves() {
        let mut tr = Tracker::new(Some(Duration::hours(24)));
        let t0 = t("2026-11-22T10:00:00Z");
        let fired = tr.observe("stale:", vec![("stale:a".into(), stale("a"))], t0);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].state, AlertState::Firing);
        // 20 ticks later, still stale: nothing.
        for i in 1..=20 {
            let now = t0 + Duration::minutes(i);
            assert!(
                tr.observe("stale:", vec![("stale:a".into(), stale("a"))], now)
                    .is_empty()
            );
            assert!(tr.reminders(now).is_empty());
        }
        // A day later: one reminder, then quiet again.
        let later = t0 + Duration::hours(24);
        let r = tr.reminders(later);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, AlertState::Reminder);
        assert_eq!(r[0].since, Some(t0));
        assert!(tr.reminders(later + Duration::minutes(1)).is_empty());
        // Another family's observation leaves it alone.
        assert!(tr.observe("drift:", vec![], later).is_empty());
        // Cleared: one resolved.
        let resolved = tr.observe("stale:", vec![], later + Duration::hours(1));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].key, "stale:a");
        assert!(
            tr.observe("stale:", vec![], later + Duration::hours(2))
                .is_empty()
        );
    }

    #[test]
    fn without_a_reminder_interval_there_are_no_reminders() {
        let mut tr = Tracker::new(None);
        let t0 = t("2026-11-22T10:00:00Z");
        tr.raise("config_invalid", stale("x"), t0).unwrap();
        assert!(tr.reminders(t0 + Duration::days(30)).is_empty());
        assert!(tr.raise("config_invalid", stale("x"), t0).is_none());
        assert!(tr.clear("config_invalid", t0).is_some());
        assert!(tr.clear("config_invalid", t0).is_none());
    }

    #[test]
    fn one_shot_keys_are_sent_once() {
        let mut tr = Tracker::new(None);
        let t0 = t("2026-11-22T10:00:00Z");
        assert!(tr.once("duration:j1", stale("a"), t0).is_some());
        assert!(tr.once("duration:j1", stale("a"), t0).is_none());
        assert!(tr.was_sent("duration:j1"));
        assert!(tr.once("duration:j2", stale("a"), t0).is_some());
    }
}
