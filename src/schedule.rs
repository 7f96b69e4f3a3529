//! Cron schedules in an IANA timezone: last and next fire times (pure; the clock is a parameter).
//!
//! CONTRACT STUB — to be implemented (see the helper brief). The public API below is fixed.

use chrono::{DateTime, Utc};

/// A parsed 5-field cron expression (or `@daily`-style alias) read in a timezone.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    timezone: chrono_tz::Tz,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.timezone)
    }
}

/// Why an expression was rejected (human-readable, lowercase).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

impl Schedule {
    /// Parse a standard 5-field expression or alias, read in `timezone`.
    pub fn parse(expression: &str, timezone: chrono_tz::Tz) -> Result<Schedule, ScheduleError> {
        let _ = (expression, timezone);
        todo!()
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
        let _ = t;
        todo!()
    }

    /// The most recent fire time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let _ = t;
        todo!()
    }

    /// The next `n` fire times strictly after `t`, in the schedule's timezone.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<chrono_tz::Tz>> {
        let _ = (t, n);
        todo!()
    }
}
