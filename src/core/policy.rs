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
    /// `[verify]`: restore drills; `None` without a schedule.
    pub drills: Option<Drills>,
    /// `[[replica]]`: further destinations every committed backup is copied to (DESIGN §15),
    /// in file order.
    pub replicas: Vec<Replica>,
    /// `[cluster]`: several daemons share this policy and bucket (DESIGN §16).
    pub cluster: Option<Cluster>,
}

/// `[cluster]`: leases through the bucket's conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// A node whose heartbeat has not changed for this long is dead to the others.
    pub lease_ttl: Duration,
    /// This node's name (`[A-Za-z0-9._-]{1,63}`).
    pub node: String,
}

/// The name `--from` and messages give the `[storage]` destination.
pub const PRIMARY: &str = "primary";

/// A further destination (DESIGN §15): the same storage keys as `[storage]`, and optional
/// retention overrides, applied to the replica's own listing (`replication::keep_rules`).
#[derive(Debug, Clone)]
pub struct Replica {
    /// `[a-z0-9-]+`, unique, never "primary".
    pub name: String,
    /// Where; its `compression` is the primary's (copies are byte for byte).
    pub storage: Storage,
    /// Overrides `[retention] daily` here; `None`: the primary's.
    pub daily: Option<Span>,
    /// Overrides `[retention] weekly` here (`Some(None)`: off); `None`: the primary's.
    pub weekly: Option<Option<Span>>,
    /// Overrides `[retention] monthly` here (`Some(None)`: off); `None`: the primary's.
    pub monthly: Option<Option<Span>>,
}

impl Policy {
    /// The replica with this name, if declared.
    pub fn replica(&self, name: &str) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.name == name)
    }
}

/// Restore drills the daemon runs (DESIGN §13).
#[derive(Debug, Clone)]
pub struct Drills {
    pub schedule: Schedule,
    /// Older restore points drilled besides each database's newest, chosen at random.
    pub sample: u32,
}

impl Policy {
    /// The names of the enabled databases, in file order.
    pub fn enabled_names(&self) -> Vec<String> {
        self.databases
            .iter()
            .filter(|d| d.enabled)
            .map(|d| d.name.clone())
            .collect()
    }

    /// The database with this name, if declared.
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// How long the catalog keeps history that no longer describes anything in storage: jobs
    /// and results whose dumps are all deleted, inventory rows of deleted dumps, alert
    /// deliveries, config reloads. `[daemon] history_retention`, by default the longest
    /// retention tier (a month counted as 31 days) plus 4 weeks.
    pub fn history_retention(&self) -> Duration {
        if let Some(d) = self.daemon.history_retention {
            return d;
        }
        let r = &self.retention;
        let secs = |s: Span| match s {
            Span::Seconds(s) => s,
            Span::Months(m) => u64::from(m) * 31 * 86_400,
        };
        let longest = [Some(r.daily), r.weekly, r.monthly]
            .into_iter()
            .flatten()
            .map(secs)
            .max()
            .unwrap_or(0);
        Duration::from_secs(longest + 4 * 7 * 86_400)
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
    /// How often a pass lists the whole bucket; passes between list only the newest keys
    /// (DESIGN §16, `listing`). Set to `tick` or less, every pass lists everything.
    pub full_listing: Duration,
    pub concurrency: usize,
    pub timezone: chrono_tz::Tz,
    /// Bearer tokens (`[[token]]`, and `api_token` as the token `default` with every scope).
    /// Empty: trigger and download endpoints are disabled.
    pub tokens: Vec<ApiToken>,
    /// Read endpoints (`/`, `/status`, `/list`, `/restore-guide`, `/api/*`, `/ui`, `/metrics`)
    /// are open without a token; when false they need scope `read`.
    pub public_read: bool,
    /// Peers whose `X-Forwarded-For` names the client (its last hop).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long `audit_log` rows are kept.
    pub audit_retention: Duration,
    /// Serve HTTPS with these PEM files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// How long history that describes nothing in storage any more is kept; `None`: the
    /// default, [`Policy::history_retention`].
    pub history_retention: Option<Duration>,
}

impl Daemon {
    /// The token with this name, if declared.
    pub fn token(&self, name: &str) -> Option<&ApiToken> {
        self.tokens.iter().find(|t| t.name == name)
    }
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `POST /trigger`.
    Trigger,
    /// `GET /download`.
    Download,
    /// The read endpoints, when `public_read = false`, and `GET /api/audit` always.
    Read,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Trigger, Scope::Download, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Trigger => "trigger",
            Scope::Download => "download",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Name of the token `[daemon] api_token` stands for.
pub const DEFAULT_TOKEN: &str = "default";

/// Longest secret a token may have (and longest bearer value the server reads).
pub const MAX_TOKEN_LEN: usize = 512;

/// A named bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Recorded as who did it (`api:<name>`).
    pub name: String,
    /// Visible ASCII, 1 to [`MAX_TOKEN_LEN`] bytes, unique among tokens.
    pub secret: Secret,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
}

impl ApiToken {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The PEM files of `[daemon] tls_cert` / `tls_key`, resolved against the policy file's
/// directory. They are read by the daemon at start and on every reload, not by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
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
    /// What the database is, for people ("Auth sessions and users"); shown on `/`, `/status`,
    /// `/restore-guide` and `/ui`.
    pub description: Option<String>,
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
    /// How long a database may go without a committed backup before `stale` fires.
    pub stale_after: StaleAfter,
    /// When the daily digest is sent; `None`: never.
    pub daily_summary: Option<Schedule>,
    /// How often a persisting condition is alerted again; `None`: only when it starts and
    /// when it resolves.
    pub renotify: Option<Duration>,
}

/// `[alerts] stale_after`: a number of schedule intervals (`2`) or a fixed duration (`"8d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleAfter {
    /// This many times the schedule's [expected interval](Schedule::expected_interval).
    Intervals(u32),
    /// This long, whatever the schedule.
    Duration(Duration),
}

impl StaleAfter {
    /// The stale deadline of a database on `schedule` at `now`: how long after its newest
    /// committed backup `stale` fires. The one definition behind the `stale` alert and
    /// `patina_backup_stale_after_seconds`. `None` when the schedule never fires again (no
    /// backup is expected, so none is late).
    pub fn window(self, schedule: &Schedule, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let interval = schedule.expected_interval(now)?;
        match self {
            StaleAfter::Intervals(n) => Some(interval * n.max(1) as i32),
            StaleAfter::Duration(d) => chrono::Duration::from_std(d).ok(),
        }
    }
}

impl fmt::Display for StaleAfter {
    /// `2 intervals` or `8d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StaleAfter::Intervals(1) => f.write_str("1 interval"),
            StaleAfter::Intervals(n) => write!(f, "{n} intervals"),
            StaleAfter::Duration(d) => Span::Seconds(d.as_secs()).fmt(f),
        }
    }
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
    SchemaChanged,
    Slow,
    /// A restore drill failed (DESIGN §13).
    VerifyFailed,
    /// A replica lacks objects for longer than `tick` × 10, or cannot be synced (DESIGN §15).
    ReplicaBehind,
}

impl AlertEvent {
    pub const ALL: [AlertEvent; 13] = [
        AlertEvent::Failure,
        AlertEvent::Success,
        AlertEvent::Duration,
        AlertEvent::SizeAnomaly,
        AlertEvent::Stale,
        AlertEvent::ArchiveFailed,
        AlertEvent::Drift,
        AlertEvent::ConfigInvalid,
        AlertEvent::Summary,
        AlertEvent::SchemaChanged,
        AlertEvent::Slow,
        AlertEvent::VerifyFailed,
        AlertEvent::ReplicaBehind,
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
            AlertEvent::SchemaChanged => "schema_changed",
            AlertEvent::Slow => "slow",
            AlertEvent::VerifyFailed => "verify_failed",
            AlertEvent::ReplicaBehind => "replica_behind",
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
    fn stale_after_is_intervals_or_a_fixed_duration() {
        let weekly = Schedule::parse("0 4 * * SUN", chrono_tz::UTC).unwrap();
        let now = "2026-11-25T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        // The seed's case: a weekly database with 2 intervals waits 14 days; "8d" waits 8.
        assert_eq!(
            StaleAfter::Intervals(2).window(&weekly, now),
            Some(chrono::Duration::days(14))
        );
        assert_eq!(
            StaleAfter::Duration(Duration::from_secs(8 * 86_400)).window(&weekly, now),
            Some(chrono::Duration::days(8))
        );
        assert_eq!(StaleAfter::Intervals(2).to_string(), "2 intervals");
        assert_eq!(
            StaleAfter::Duration(Duration::from_secs(8 * 86_400)).to_string(),
            "8d"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
