//! The validated domain model of `patina.toml`.
//!
//! `config` parses and validates the raw TOML into these types; everything downstream (plan,
//! backup, restore, the daemon) reads only these. A `Policy` is always internally consistent:
//! every database names a declared priority, every schedule parsed, every path resolved against
//! the directory of the policy file, every `${VAR}` expanded. Secrets are wrapped in [`Secret`],
//! whose `Debug` and `Display` print `***`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Months, Utc};

use crate::codec::Encoding;
use crate::keys::Recipients;
use crate::schedule::Schedule;

/// A whole, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file the policy was read from (for messages).
    pub source: PathBuf,
    pub daemon: Daemon,
    pub storage: Storage,
    /// Declared priorities, by rank (critical first).
    pub priorities: BTreeMap<PriorityLevel, Priority>,
    pub retention: Retention,
    /// Present when the file has a `[cloudflare]` section.
    pub cloudflare: Option<Cloudflare>,
    /// In file order.
    pub databases: Vec<Database>,
    pub alerts: AlertSettings,
    pub sinks: Vec<AlertSink>,
    /// Present when the file has an `[encryption]` section: every new dump is sealed.
    pub encryption: Option<Encryption>,
}

impl Policy {
    /// The database with this name, if declared.
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// How every new dump is written: `[storage] compression`, sealed for `[encryption]
    /// recipients` when the section is present. Every write path of a dump (scheduled, manual,
    /// catch-up, pre-restore; and a replica copy, which must copy stored bytes as they are)
    /// takes its key and its encoder from this one value, so a policy that asks for encryption
    /// cannot produce a plaintext dump.
    pub fn dump_encoding(&self) -> Encoding {
        Encoding {
            compression: self.storage.compression,
            seal: self.encryption.as_ref().map(|e| e.recipients.clone()),
        }
    }
}

/// `[encryption]`: age recipients new backups are sealed for, and where this host's identity is.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub recipients: Recipients,
    /// Where the recipients were read from when not from the policy file itself.
    pub recipients_file: Option<PathBuf>,
    /// The identity file that opens backups here (restore, verify, `/download`); `None` on a
    /// host that only backs up. Resolved against the policy file's directory; read only when an
    /// encrypted backup is decoded.
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub listen: SocketAddr,
    /// Resolved against the policy file's directory.
    pub state_dir: PathBuf,
    pub tick: Duration,
    pub concurrency: usize,
    pub timezone: chrono_tz::Tz,
    /// `None`: write and download endpoints are disabled.
    pub api_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub location: StorageLocation,
    /// S3 endpoint (R2, MinIO, …); `None` means AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub compression: Compression,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// `file://PATH`, resolved against the policy file's directory.
    File(PathBuf),
    /// `s3://BUCKET`.
    S3 { bucket: String },
    /// `memory://` — process-local, for tests and dry runs.
    Memory,
}

impl fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageLocation::File(p) => write!(f, "file://{}", p.display()),
            StorageLocation::S3 { bucket } => write!(f, "s3://{bucket}"),
            StorageLocation::Memory => f.write_str("memory://"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "zstd" => Some(Compression::Zstd),
            "gzip" => Some(Compression::Gzip),
            "none" => Some(Compression::None),
            _ => None,
        }
    }
}

/// Priority levels, in the order the executor serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PriorityLevel {
    Critical,
    High,
    Normal,
    Low,
}

impl PriorityLevel {
    pub const ALL: [PriorityLevel; 4] = [
        PriorityLevel::Critical,
        PriorityLevel::High,
        PriorityLevel::Normal,
        PriorityLevel::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PriorityLevel::Critical => "critical",
            PriorityLevel::High => "high",
            PriorityLevel::Normal => "normal",
            PriorityLevel::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<PriorityLevel> {
        PriorityLevel::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for PriorityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Priority {
    pub level: PriorityLevel,
    pub schedule: Schedule,
}

#[derive(Debug, Clone)]
pub struct Retention {
    /// Every dump is kept at least this long.
    pub daily: Span,
    /// Weekly archives are kept this long; `None`: no weekly tier.
    pub weekly: Option<Span>,
    /// The first weekly archive of each month is kept this long; `None`: no monthly tier.
    pub monthly: Option<Span>,
    /// When last week's dumps are rolled into `weekly/YYYY-Www.tar`.
    pub archive: Schedule,
}

/// A retention length: seconds-based (`30s 15m 2h 7d 12w`) or calendar months (`12mo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Seconds(u64),
    Months(u32),
}

impl Span {
    /// The instant `self` before `t` (calendar-aware for months).
    pub fn before(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Span::Seconds(s) => t - chrono::Duration::seconds(s as i64),
            Span::Months(m) => t.checked_sub_months(Months::new(m)).unwrap_or(t),
        }
    }

    /// The instant `self` after `t` (calendar-aware for months).
    pub fn after(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Span::Seconds(s) => t + chrono::Duration::seconds(s as i64),
            Span::Months(m) => t.checked_add_months(Months::new(m)).unwrap_or(t),
        }
    }
}

impl fmt::Display for Span {
    /// The shortest exact form in the policy syntax (`7d`, `12w`, `90m`, `12mo`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Span::Months(m) => write!(f, "{m}mo"),
            Span::Seconds(s) => {
                for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
                    if s != 0 && s % len == 0 {
                        return write!(f, "{}{unit}", s / len);
                    }
                }
                write!(f, "{s}s")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cloudflare {
    pub account_id: String,
    pub api_token: Secret,
    pub api_url: String,
}

#[derive(Debug, Clone)]
pub struct Database {
    /// `[a-z0-9][a-z0-9_-]*`, unique; part of object keys.
    pub name: String,
    pub source: SourceSpec,
    pub priority: PriorityLevel,
    /// The effective schedule: the database's own override, else its priority's.
    pub schedule: Schedule,
    /// True when `schedule` came from the database's own `schedule` key.
    pub schedule_overridden: bool,
    /// Tables whose contents never leave the machine.
    pub exclude_tables: Vec<String>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A SQLite file; the path is resolved against the policy file's directory.
    Sqlite { path: PathBuf },
    /// A Cloudflare D1 database.
    D1 { id: String, mode: D1Mode },
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Sqlite { .. } => "sqlite",
            SourceSpec::D1 { .. } => "d1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum D1Mode {
    Export,
    Query,
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// A job longer than this alerts.
    pub max_duration: Duration,
    /// Relative deviation from the recent median size that alerts (0.5 = 50%).
    pub size_deviation: f64,
    /// No success within this many schedule intervals alerts.
    pub stale_after: u32,
    /// When the daily digest is sent; `None`: never.
    pub daily_summary: Option<Schedule>,
    /// How often a persisting condition is alerted again; `None`: only when it starts and
    /// when it resolves.
    pub renotify: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct AlertSink {
    pub name: String,
    pub kind: SinkKind,
    /// Webhook URLs carry tokens: treated as secrets.
    pub url: Secret,
    pub on: Vec<AlertEvent>,
    /// Extra HTTP headers (webhook sinks), values may come from `${VAR}`.
    pub headers: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Webhook,
    Discord,
    Slack,
    Healthchecks,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Discord => "discord",
            SinkKind::Slack => "slack",
            SinkKind::Healthchecks => "healthchecks",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertEvent {
    Failure,
    Success,
    Duration,
    SizeAnomaly,
    Stale,
    ArchiveFailed,
    Drift,
    ConfigInvalid,
    Summary,
}

impl AlertEvent {
    pub const ALL: [AlertEvent; 9] = [
        AlertEvent::Failure,
        AlertEvent::Success,
        AlertEvent::Duration,
        AlertEvent::SizeAnomaly,
        AlertEvent::Stale,
        AlertEvent::ArchiveFailed,
        AlertEvent::Drift,
        AlertEvent::ConfigInvalid,
        AlertEvent::Summary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Failure => "failure",
            AlertEvent::Success => "success",
            AlertEvent::Duration => "duration",
            AlertEvent::SizeAnomaly => "size_anomaly",
            AlertEvent::Stale => "stale",
            AlertEvent::ArchiveFailed => "archive_failed",
            AlertEvent::Drift => "drift",
            AlertEvent::ConfigInvalid => "config_invalid",
            AlertEvent::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<AlertEvent> {
        AlertEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A secret string (token, key, webhook URL). Printed as `***` by `Debug` and `Display`; read it
/// with [`Secret::expose`] only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_display_picks_the_largest_exact_unit() {
        assert_eq!(Span::Seconds(7 * 86_400).to_string(), "1w");
        assert_eq!(Span::Seconds(3 * 86_400).to_string(), "3d");
        assert_eq!(Span::Seconds(12 * 604_800).to_string(), "12w");
        assert_eq!(Span::Seconds(90 * 60).to_string(), "90m");
        assert_eq!(Span::Seconds(45).to_string(), "45s");
        assert_eq!(Span::Months(12).to_string(), "12mo");
    }

    #[test]
    fn month_spans_are_calendar_aware() {
        let t = "2026-03-31T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            Span::Months(1).before(t),
            "2026-02-28T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
