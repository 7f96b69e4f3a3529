//! Cron schedules in an IANA timezone: last and next fire times (pure; the clock is a parameter).
//!
//! Expressions are standard 5-field cron (`minute hour day-of-month month day-of-week`), with
//! names (`JAN`…`DEC`, `SUN`…`SAT`), weekdays `0`–`7` (both `0` and `7` are Sunday) and the
//! aliases `@yearly @annually @monthly @weekly @daily @midnight @hourly`. When both the
//! day-of-month and the day-of-week are restricted, either matching fires (vixie-cron rule).
//!
//! We use `croner` rather than `cron`: `cron` requires a seconds field, numbers weekdays 1–7 from
//! Sunday and silently skips fire times that fall into a DST gap.
//!
//! Daylight saving time: expressions are read on the wall clock of the timezone. A fire time that
//! falls into a spring-forward gap runs once, at the first instant after the gap (a daily 02:30
//! job in `America/New_York` runs at 03:00 EDT on that day); a fixed time in a repeated
//! fall-back hour runs once, at its first occurrence. Interval jobs (`*/30 * * * *`) keep
//! firing through both halves of a repeated hour, since real time keeps passing.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed 5-field cron expression (or `@daily`-style alias) read in a timezone.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    timezone: chrono_tz::Tz,
    cron: Cron,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.timezone)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expression == other.expression && self.timezone == other.timezone
    }
}

/// Why an expression was rejected (human-readable, lowercase).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// The fields of a 5-field expression: name and what it accepts (for messages).
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, 0 and 7 are Sunday"),
];

/// Aliases and their 5-field meaning.
const ALIASES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

impl Schedule {
    /// Parse a standard 5-field expression or alias, read in `timezone`.
    pub fn parse(expression: &str, timezone: chrono_tz::Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expression.trim();
        let fail =
            |why: String| ScheduleError(format!("invalid cron expression {trimmed:?}: {why}"));
        if trimmed.is_empty() {
            return Err(ScheduleError(
                "empty cron expression: expected 5 fields (minute hour day-of-month month \
                 day-of-week) or an alias such as @daily"
                    .into(),
            ));
        }
        let pattern = if trimmed.starts_with('@') {
            let lower = trimmed.to_ascii_lowercase();
            match ALIASES.iter().find(|(alias, _)| *alias == lower) {
                Some((_, pattern)) => (*pattern).to_string(),
                None => {
                    let known: Vec<&str> = ALIASES.iter().map(|(a, _)| *a).collect();
                    return Err(fail(format!(
                        "unknown alias; use one of {}",
                        known.join(", ")
                    )));
                }
            }
        } else {
            trimmed.to_string()
        };
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(fail(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        // Probe each field alone so the message can name the one that is wrong.
        for (i, field) in fields.iter().enumerate() {
            let mut probe = ["*"; 5];
            probe[i] = field;
            if parser().parse(&probe.join(" ")).is_err() {
                let (name, allowed) = FIELDS[i];
                return Err(fail(format!(
                    "the {name} field {field:?} is not valid (expected {allowed}, with * , - /)"
                )));
            }
        }
        let cron = parser()
            .parse(&pattern)
            .map_err(|e| fail(e.to_string().to_lowercase()))?;
        let schedule = Schedule {
            expression: trimmed.to_string(),
            timezone,
            cron,
        };
        // `0 0 30 2 *` parses but never fires: reject it rather than never backing up.
        let probe = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("valid"); // 2026-01-01
        if schedule.next_after(probe).is_none() {
            return Err(fail("it never fires".into()));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole minutes; start from the whole second at or before `t`, so a
        // fractional `t` just before a fire time still finds it.
        let local = truncate_to_second(t).with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The most recent fire time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = truncate_to_second(t).with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// What "one interval" of this schedule means around `now`: the longest gap between
    /// consecutive fire times from the latest one at or before `now` through the next eight
    /// (a weekday-only schedule has a 3-day gap over the weekend). The one definition behind
    /// the stale alert and `patina_backup_expected_interval_seconds`, so the daemon and a
    /// Prometheus rule on that metric agree. `None` when the schedule never fires again.
    pub fn expected_interval(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let mut fires: Vec<DateTime<Utc>> = self.latest_at_or_before(now).into_iter().collect();
        fires.extend(self.upcoming(now, 8).iter().map(|t| t.with_timezone(&Utc)));
        fires.windows(2).map(|w| w[1] - w[0]).max()
    }

    /// The next `n` fire times strictly after `t`, in the schedule's timezone.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<chrono_tz::Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = t;
        while out.len() < n {
            match self.next_after(cursor) {
                Some(next) => {
                    out.push(next.with_timezone(&self.timezone));
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn sched(expr: &str, tz: Tz) -> Schedule {
        Schedule::parse(expr, tz).unwrap()
    }

    fn next_n(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        s.upcoming(utc(from), n)
            .iter()
            .map(|d| d.with_timezone(&Utc).to_rfc3339())
            .collect()
    }

    #[test]
    fn daily_in_utc() {
        let s = sched("0 3 * * *", Tz::UTC);
        assert_eq!(
            s.next_after(utc("2026-11-22T12:00:00Z")),
            Some(utc("2026-11-23T03:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-22T12:00:00Z")),
            Some(utc("2026-11-22T03:00:00Z"))
        );
    }

    #[test]
    fn latest_is_inclusive_and_next_is_strict() {
        let s = sched("0 3 * * *", Tz::UTC);
        let at = utc("2026-11-22T03:00:00Z");
        assert_eq!(s.latest_at_or_before(at), Some(at));
        assert_eq!(s.next_after(at), Some(utc("2026-11-23T03:00:00Z")));
        // Sub-second instants around a fire time.
        let just_after = utc("2026-11-22T03:00:00.500Z");
        assert_eq!(s.latest_at_or_before(just_after), Some(at));
        let just_before = utc("2026-11-22T02:59:59.500Z");
        assert_eq!(s.next_after(just_before), Some(at));
        assert_eq!(
            s.latest_at_or_before(just_before),
            Some(utc("2026-11-21T03:00:00Z"))
        );
    }

    #[test]
    fn europe_berlin_is_read_on_the_local_clock() {
        let s = sched("0 3 * * *", Tz::Europe__Berlin);
        // Winter: CET = UTC+1.
        assert_eq!(
            s.next_after(utc("2026-01-10T00:00:00Z")),
            Some(utc("2026-01-10T02:00:00Z"))
        );
        // Summer: CEST = UTC+2.
        assert_eq!(
            s.next_after(utc("2026-07-10T00:00:00Z")),
            Some(utc("2026-07-10T01:00:00Z"))
        );
        // Berlin springs forward 2026-03-29 02:00 -> 03:00; 02:30 runs once, at 03:00 CEST.
        let s = sched("30 2 * * *", Tz::Europe__Berlin);
        assert_eq!(
            next_n(&s, "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]
        );
    }

    #[test]
    fn new_york_spring_forward_runs_a_gap_time_once_after_the_gap() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let s = sched("30 2 * * *", Tz::America__New_York);
        assert_eq!(
            next_n(&s, "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00+00:00", // 03:00 EDT, the first instant after the gap
                "2026-03-09T06:30:00+00:00", // 02:30 EDT
                "2026-03-10T06:30:00+00:00",
            ]
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-08T12:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-08T06:59:59Z")),
            Some(utc("2026-03-07T07:30:00Z"))
        );
    }

    #[test]
    fn new_york_fall_back_runs_a_repeated_time_once() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let s = sched("30 1 * * *", Tz::America__New_York);
        assert_eq!(
            next_n(&s, "2026-10-31T12:00:00Z", 3),
            [
                "2026-11-01T05:30:00+00:00", // 01:30 EDT, first occurrence only
                "2026-11-02T06:30:00+00:00", // 01:30 EST
                "2026-11-03T06:30:00+00:00",
            ]
        );
        // Between the two 01:30s the latest is the first one, and the next is tomorrow.
        let between = utc("2026-11-01T06:00:00Z");
        assert_eq!(
            s.latest_at_or_before(between),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(s.next_after(between), Some(utc("2026-11-02T06:30:00Z")));
    }

    #[test]
    fn intervals_keep_firing_through_a_repeated_hour() {
        let s = sched("*/30 * * * *", Tz::America__New_York);
        // 05:00Z = 01:00 EDT; 06:00Z = 01:00 EST.
        assert_eq!(
            next_n(&s, "2026-11-01T04:59:00Z", 5),
            [
                "2026-11-01T05:00:00+00:00",
                "2026-11-01T05:30:00+00:00",
                "2026-11-01T06:00:00+00:00",
                "2026-11-01T06:30:00+00:00",
                "2026-11-01T07:00:00+00:00",
            ]
        );
    }

    #[test]
    fn every_thirty_minutes() {
        let s = sched("*/30 * * * *", Tz::UTC);
        assert_eq!(
            next_n(&s, "2026-11-22T10:10:00Z", 3),
            [
                "2026-11-22T10:30:00+00:00",
                "2026-11-22T11:00:00+00:00",
                "2026-11-22T11:30:00+00:00",
            ]
        );
    }

    #[test]
    fn sunday_is_0_7_and_sun() {
        // 2026-11-22 is a Sunday.
        for expr in ["0 4 * * 0", "0 4 * * 7", "0 4 * * SUN", "0 4 * * sun"] {
            let s = sched(expr, Tz::UTC);
            assert_eq!(
                next_n(&s, "2026-11-20T00:00:00Z", 2),
                ["2026-11-22T04:00:00+00:00", "2026-11-29T04:00:00+00:00"],
                "{expr}"
            );
        }
        let weekdays = sched("0 9 * * MON-FRI", Tz::UTC);
        assert_eq!(
            next_n(&weekdays, "2026-11-20T10:00:00Z", 2), // a Friday
            ["2026-11-23T09:00:00+00:00", "2026-11-24T09:00:00+00:00"]
        );
    }

    #[test]
    fn aliases() {
        let from = "2026-11-22T10:10:00Z";
        let cases = [
            ("@yearly", "2027-01-01T00:00:00+00:00"),
            ("@annually", "2027-01-01T00:00:00+00:00"),
            ("@monthly", "2026-12-01T00:00:00+00:00"),
            ("@weekly", "2026-11-29T00:00:00+00:00"),
            ("@daily", "2026-11-23T00:00:00+00:00"),
            ("@midnight", "2026-11-23T00:00:00+00:00"),
            ("@hourly", "2026-11-22T11:00:00+00:00"),
            ("@DAILY", "2026-11-23T00:00:00+00:00"),
        ];
        for (alias, want) in cases {
            let s = sched(alias, Tz::UTC);
            assert_eq!(s.expression(), alias);
            assert_eq!(next_n(&s, from, 1), [want], "{alias}");
        }
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        let err = |e: &str| Schedule::parse(e, Tz::UTC).unwrap_err().to_string();
        assert_eq!(
            err("0 3 * *"),
            "invalid cron expression \"0 3 * *\": expected 5 fields (minute hour day-of-month \
             month day-of-week), found 4"
        );
        assert_eq!(
            err("0 0 3 * * *"),
            "invalid cron expression \"0 0 3 * * *\": expected 5 fields (minute hour \
             day-of-month month day-of-week), found 6"
        );
        assert_eq!(
            err("61 3 * * *"),
            "invalid cron expression \"61 3 * * *\": the minute field \"61\" is not valid \
             (expected 0-59, with * , - /)"
        );
        assert!(err("0 24 * * *").contains("the hour field \"24\""));
        assert!(err("0 3 * * FUN").contains("the day-of-week field \"FUN\""));
        assert!(err("0 3 * 13 *").contains("the month field \"13\""));
        assert!(err("0 3 0 * *").contains("the day-of-month field \"0\""));
        assert!(err("@reboot").contains("unknown alias; use one of @yearly"));
        assert!(err("").starts_with("empty cron expression"));
        assert_eq!(
            err("0 0 30 2 *"),
            "invalid cron expression \"0 0 30 2 *\": it never fires"
        );
    }

    #[test]
    fn upcoming_is_in_the_schedule_timezone() {
        let s = sched("0 3 * * *", Tz::Europe__Berlin);
        let up = s.upcoming(utc("2026-11-22T12:00:00Z"), 3);
        let shown: Vec<String> = up
            .iter()
            .map(|d| d.format("%Y-%m-%d %H:%M %Z").to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "2026-11-23 03:00 CET",
                "2026-11-24 03:00 CET",
                "2026-11-25 03:00 CET"
            ]
        );
    }
}
