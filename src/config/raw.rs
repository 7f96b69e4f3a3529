//! The policy file as written: serde types whose `///` docs are the JSON Schema's descriptions
//! (editor hover) and whose shape is the schema (`patina schema`). Nothing here validates.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Raw types: the file as written. Their `///` docs are the schema's descriptions (editor hover).
// ---------------------------------------------------------------------------------------------

/// Patina's policy file: which databases to back up, when, for how long, and who hears about
/// problems. Strings may use `${VAR}` to read the environment.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "patina.toml")]
pub(super) struct RawConfig {
    /// The daemon: HTTP listener, state directory, reconcile tick, concurrency and timezone.
    pub(super) daemon: RawDaemon,
    /// Where backups are stored: a local folder, an S3 bucket (R2, MinIO, AWS) or memory.
    pub(super) storage: RawStorage,
    /// Backup schedules by priority. Databases name one of these; the executor serves critical
    /// before high before normal before low.
    pub(super) priorities: RawPriorities,
    /// How long backups are kept, and when the week's dumps are rolled into an archive.
    pub(super) retention: RawRetention,
    /// Cloudflare credentials; needed only by databases of kind "d1".
    pub(super) cloudflare: Option<RawCloudflare>,
    /// Encryption at rest with age: every new dump is sealed for these recipients after
    /// compression (keys end in .age), and opens only with one of their identities.
    pub(super) encryption: Option<RawEncryption>,
    /// A database to back up. Repeat `[[database]]` for each one.
    pub(super) database: Vec<RawDatabase>,
    /// When to alert: thresholds for slow jobs, odd sizes and stale backups.
    pub(super) alerts: RawAlerts,
    /// An alert sink. Repeat `[[alert]]` for each one.
    pub(super) alert: Vec<RawAlert>,
    /// A bearer token for the HTTP API, with its scopes. Repeat `[[token]]` for each one.
    pub(super) token: Vec<RawToken>,
    /// Restore drills the daemon runs by itself: each database's newest restore point and a
    /// random sample of older ones are restored into scratch files and checked.
    pub(super) verify: RawVerify,
    /// Another destination every committed backup and archive is copied to (3-2-1), with the
    /// same keys as [storage]. Repeat `[[replica]]` for each one.
    pub(super) replica: Vec<RawReplica>,
    /// Several daemons on one bucket: each database is backed up by the one node holding its
    /// lease. Needs storage with conditional writes (s3://: R2, S3, MinIO).
    pub(super) cluster: Option<RawCluster>,
}

/// Several daemons sharing one policy and one bucket (leases through conditional writes).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Cluster")]
pub(super) struct RawCluster {
    /// How long a node may go without renewing its heartbeat before the others take its
    /// databases over, e.g. "30s". Renewals run every third of it.
    #[schemars(extend("default" = "30s"), regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub(super) lease_ttl: Option<String>,
    /// This node's name in the bucket (leases, heartbeats, /status): letters, digits, '.',
    /// '_' and '-'. Default: the host name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub(super) node: Option<String>,
}

/// A replica: a second bucket or folder that receives a copy of every committed backup.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Replica")]
pub(super) struct RawReplica {
    /// Unique name, `[a-z0-9-]+` ("primary" is the main [storage]); used by `--from NAME`, in
    /// logs and metrics.
    #[schemars(regex(pattern = r"^[a-z0-9-]+$"))]
    pub(super) name: String,
    /// "file://PATH" (relative to this file) or "s3://BUCKET" (R2, MinIO, AWS).
    #[schemars(regex(pattern = r"^(file|s3)://"))]
    pub(super) url: String,
    /// S3 endpoint URL (s3:// only), e.g. "https://ACCOUNT.r2.cloudflarestorage.com". Unset
    /// means AWS.
    pub(super) endpoint: Option<String>,
    /// S3 region (s3:// only), e.g. "auto" for R2.
    pub(super) region: Option<String>,
    /// S3 access key id (s3:// only; secret; use "${VAR}"). Set both keys or neither.
    pub(super) access_key_id: Option<String>,
    /// S3 secret access key (s3:// only; secret; use "${VAR}"). Set both keys or neither.
    pub(super) secret_access_key: Option<String>,
    /// Key prefix inside the bucket or folder, e.g. "patina/". A trailing "/" is added.
    #[schemars(extend("default" = ""))]
    pub(super) prefix: Option<String>,
    /// Dumps are kept here at least this long; unset: [retention] daily. Retention runs on each
    /// replica from its own listing (never its newest dump of a database), so it may keep longer.
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d|w|mo)$"))]
    pub(super) daily: Option<String>,
    /// Weekly archives are kept here this long, or "off" (none are copied here); unset:
    /// [retention] weekly.
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d|w|mo)|off)$"))]
    pub(super) weekly: Option<String>,
    /// The first archive of each month is kept here this long, or "off"; unset: [retention]
    /// monthly.
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d|w|mo)|off)$"))]
    pub(super) monthly: Option<String>,
}

/// Restore drills.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Verify")]
pub(super) struct RawVerify {
    /// When to drill (cron, in [daemon] timezone), e.g. "0 5 * * SAT". Absent: no drills.
    pub(super) schedule: Option<String>,
    /// Besides each database's newest restore point, this many older ones chosen at random
    /// (daily objects and weekly archive members alike).
    #[schemars(extend("default" = 2), range(min = 0, max = 100))]
    pub(super) sample: Option<u32>,
}

/// The daemon process.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Daemon")]
pub(super) struct RawDaemon {
    /// Address of the HTTP server (health, metrics, status page, API), as IP:PORT.
    #[schemars(extend("default" = "127.0.0.1:9477"))]
    pub(super) listen: Option<String>,
    /// Directory for the catalog (patina.db) and scratch space, relative to this file.
    #[schemars(extend("default" = ".patina"))]
    pub(super) state_dir: Option<String>,
    /// How often the policy is reconciled against storage, e.g. "60s" or "5m".
    #[schemars(extend("default" = "60s"), regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    pub(super) tick: Option<String>,
    /// How often a reconcile pass lists the whole bucket, e.g. "1h". Passes between list only
    /// the keys that change (today's dumps, leases, heartbeats, archives), so storage requests
    /// stay flat as backups age; retention, debris and drift wait for the full listings. Set to
    /// the tick to list everything every pass.
    #[schemars(extend("default" = "1h"), regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    pub(super) full_listing: Option<String>,
    /// How many backups may run at once (at least 1).
    #[schemars(extend("default" = 3), range(min = 1))]
    pub(super) concurrency: Option<u32>,
    /// IANA timezone in which schedules are read, e.g. "Europe/Berlin".
    #[schemars(extend("default" = "UTC"))]
    pub(super) timezone: Option<String>,
    /// Shorthand for one [[token]] named "default" with every scope (secret; use "${VAR}").
    /// Without any token, POST /trigger and GET /download are disabled.
    pub(super) api_token: Option<String>,
    /// How long the catalog keeps history that describes nothing in storage any more: jobs
    /// whose backups are all deleted, deleted inventory entries, alert deliveries, config
    /// reloads, old verifications and restore history. Unset: the longest retention tier plus 4
    /// weeks (12w + 4w by default).
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    pub(super) history_retention: Option<String>,
    /// Whether the read endpoints (/, /status, /list, /restore-guide, /api/*, /ui, /metrics) are
    /// open on the listen address. When false they need a token with scope "read"; /healthz
    /// and /readyz stay open.
    #[schemars(extend("default" = true))]
    pub(super) public_read: Option<bool>,
    /// Reverse proxies (IP addresses or CIDR ranges) whose X-Forwarded-For header names the
    /// client: its last hop becomes the remote address of audit records and lockouts.
    #[schemars(extend("default" = []))]
    pub(super) trusted_proxies: Option<Vec<String>>,
    /// How long audit records (downloads, triggers, restores, refusals) are kept, e.g. "90d".
    #[schemars(extend("default" = "90d"), regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    pub(super) audit_retention: Option<String>,
    /// PEM certificate chain (leaf first) to serve HTTPS on `listen`, relative to this file.
    /// Re-read on every reload (SIGHUP), so a renewed certificate needs no restart. Set
    /// together with tls_key.
    pub(super) tls_cert: Option<String>,
    /// PEM private key (PKCS#8, RSA or EC) of tls_cert, relative to this file.
    pub(super) tls_key: Option<String>,
}

/// A bearer token for the HTTP API. Repeat `[[token]]` for each one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Token")]
pub(super) struct RawToken {
    /// Unique name, `[a-z0-9][a-z0-9_-]*`; recorded as who did it ("api:NAME").
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub(super) name: String,
    /// The token (secret; use "${VAR}"): visible ASCII without spaces, at most 512 bytes.
    pub(super) secret: String,
    /// What the token may do: "trigger" (POST /trigger), "download" (GET /download), "read"
    /// (read endpoints when public_read = false, and GET /api/audit).
    pub(super) scopes: Vec<RawScope>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Scope")]
pub(super) enum RawScope {
    Trigger,
    Download,
    Read,
}

/// Backup storage.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Storage")]
pub(super) struct RawStorage {
    /// "file://PATH" (relative to this file), "s3://BUCKET" (R2, MinIO, AWS) or "memory://".
    #[schemars(
        extend("default" = "file://.patina/backups"),
        regex(pattern = r"^(file|s3|memory)://")
    )]
    pub(super) url: Option<String>,
    /// S3 endpoint URL (s3:// only), e.g. "https://ACCOUNT.r2.cloudflarestorage.com". Unset
    /// means AWS.
    pub(super) endpoint: Option<String>,
    /// S3 region (s3:// only), e.g. "auto" for R2.
    pub(super) region: Option<String>,
    /// S3 access key id (s3:// only; secret; use "${VAR}"). Set both keys or neither.
    pub(super) access_key_id: Option<String>,
    /// S3 secret access key (s3:// only; secret; use "${VAR}"). Set both keys or neither.
    pub(super) secret_access_key: Option<String>,
    /// Key prefix inside the bucket or folder, e.g. "patina/". A trailing "/" is added.
    #[schemars(extend("default" = ""))]
    pub(super) prefix: Option<String>,
    /// Compression of dumps.
    #[schemars(extend("default" = "zstd"))]
    pub(super) compression: Option<RawCompression>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Compression")]
pub(super) enum RawCompression {
    Zstd,
    Gzip,
    None,
}

/// The declared priorities.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Priorities")]
pub(super) struct RawPriorities {
    /// Served first.
    pub(super) critical: Option<RawPriority>,
    /// Served after critical.
    pub(super) high: Option<RawPriority>,
    /// Served after high.
    pub(super) normal: Option<RawPriority>,
    /// Served last.
    pub(super) low: Option<RawPriority>,
}

/// One priority.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Priority")]
pub(super) struct RawPriority {
    /// When databases of this priority are backed up: 5-field cron ("0 3 * * *") or an alias
    /// (@daily), read in the daemon's timezone.
    pub(super) schedule: String,
}

/// Retention tiers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Retention")]
pub(super) struct RawRetention {
    /// Every dump is kept at least this long: "30s 15m 2h 7d 12w 12mo".
    #[schemars(extend("default" = "7d"), regex(pattern = r"^[0-9]+(s|m|h|d|w|mo)$"))]
    pub(super) daily: Option<String>,
    /// Weekly archives are kept this long, or "off" for no weekly tier (dumps then expire
    /// after `daily`).
    #[schemars(
        extend("default" = "12w"),
        regex(pattern = r"^([0-9]+(s|m|h|d|w|mo)|off)$")
    )]
    pub(super) weekly: Option<String>,
    /// The first weekly archive of each month is kept this long, e.g. "12mo". Unset or "off":
    /// no monthly tier.
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d|w|mo)|off)$"))]
    pub(super) monthly: Option<String>,
    /// When last week's dumps are rolled into weekly/YYYY-Www.tar (cron).
    #[schemars(extend("default" = "0 4 * * SUN"))]
    pub(super) archive: Option<String>,
}

/// Cloudflare API access for D1 databases.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cloudflare")]
pub(super) struct RawCloudflare {
    /// Cloudflare account id.
    pub(super) account_id: String,
    /// API token with D1 read access (secret; use "${VAR}").
    pub(super) api_token: String,
    /// API base URL; override for proxies and tests.
    #[schemars(extend("default" = "https://api.cloudflare.com/client/v4"))]
    pub(super) api_url: Option<String>,
}

/// Encryption at rest (age).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Encryption")]
pub(super) struct RawEncryption {
    /// Public keys new backups are encrypted to: age X25519 recipients ("age1…", from
    /// `age-keygen -y identity.txt`) and/or OpenSSH public keys ("ssh-ed25519 AAAA…",
    /// "ssh-rsa AAAA…"). Any one of their identities opens a backup. Set this or
    /// `recipients_file`.
    pub(super) recipients: Option<Vec<String>>,
    /// A file of recipients, one public key per line ("#" comments and blank lines skipped),
    /// as `age -R` reads it; relative to this file. Set this or `recipients`.
    pub(super) recipients_file: Option<String>,
    /// The identity file (private keys) that opens backups on this host, for `patina restore`,
    /// `verify` and GET /download: `age-keygen` output (it may hold several identities, e.g. old
    /// and new after a rotation) or an unencrypted OpenSSH private key. Optional: a host without
    /// it backs up but cannot read backups. Read only when an encrypted backup is opened.
    pub(super) identity_file: Option<String>,
}

/// A database to back up.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Database")]
pub(super) struct RawDatabase {
    /// Unique name, `[a-z0-9][a-z0-9_-]*`; becomes part of object keys.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub(super) name: String,
    /// What the database holds, in a few words for people ("Auth: users and sessions"); shown
    /// on the status page, /status and the restore guide.
    pub(super) description: Option<String>,
    /// "sqlite" (a local file) or "d1" (Cloudflare D1).
    pub(super) kind: RawKind,
    /// Path of the SQLite file, relative to this file (kind = "sqlite").
    pub(super) path: Option<String>,
    /// D1 database id, a UUID (kind = "d1").
    pub(super) id: Option<String>,
    /// How a D1 database is read: "export" (the export API) or "query" (paged SELECTs).
    #[schemars(extend("default" = "export"))]
    pub(super) mode: Option<RawD1Mode>,
    /// One of the priorities declared under [priorities].
    pub(super) priority: RawLevel,
    /// Overrides the priority's schedule for this database (cron).
    pub(super) schedule: Option<String>,
    /// Tables whose contents never leave the machine.
    #[serde(default)]
    pub(super) exclude_tables: Vec<String>,
    /// Set to false to stop backing this database up (its backups stay).
    #[schemars(extend("default" = true))]
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Kind")]
pub(super) enum RawKind {
    Sqlite,
    D1,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "D1Mode")]
pub(super) enum RawD1Mode {
    Export,
    Query,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Level")]
pub(super) enum RawLevel {
    Critical,
    High,
    Normal,
    Low,
}

/// Alert thresholds.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Alerts")]
pub(super) struct RawAlerts {
    /// A job running longer than this alerts ("duration" event), e.g. "45m".
    #[schemars(extend("default" = "45m"), regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    pub(super) max_duration: Option<String>,
    /// A dump whose size is off the recent median by more than this fraction alerts
    /// ("size_anomaly" event); 0.5 = 50%.
    #[schemars(extend("default" = 0.5))]
    pub(super) size_deviation: Option<f64>,
    /// A database without a successful backup for this long alerts ("stale" event): a number
    /// of its schedule's intervals (2: two days for a daily schedule, two weeks for a weekly
    /// one) or a duration ("8d").
    #[schemars(extend("default" = 2), schema_with = "stale_after_schema")]
    pub(super) stale_after: Option<RawStaleAfter>,
    /// When the daily summary is sent (cron); unset: never.
    pub(super) daily_summary: Option<String>,
    /// A condition that persists (stale, failing, drift, invalid config) is alerted when it
    /// starts, again after this long while it lasts, and once when it resolves; "off": never
    /// again until it resolves.
    #[schemars(extend("default" = "24h"), regex(pattern = r"^([0-9]+(s|m|h|d|w)|off)$"))]
    pub(super) renotify: Option<String>,
}

/// `stale_after`: a count of schedule intervals or a duration.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawStaleAfter {
    Intervals(u64),
    Duration(String),
}

/// An integer of at least 1, or a duration string: one schema both editors and the checker
/// understand (`minimum` applies to numbers only, `pattern` to strings only).
fn stale_after_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["integer", "string"],
        "minimum": 1,
        "pattern": "^[0-9]+(s|m|h|d|w)$",
    })
}

/// An alert sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Alert")]
pub(super) struct RawAlert {
    /// Unique name of the sink (used in logs and the catalog).
    pub(super) name: String,
    /// "webhook" (JSON POST), "discord", "slack" (incoming webhook) or "healthchecks" (ping).
    pub(super) kind: RawSinkKind,
    /// The sink's http(s) URL (secret: it usually carries a token; use "${VAR}").
    pub(super) url: String,
    /// The events sent to this sink.
    pub(super) on: Vec<RawEvent>,
    /// Extra HTTP headers (webhook only); values are secrets and may use "${VAR}".
    pub(super) headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "SinkKind")]
pub(super) enum RawSinkKind {
    Webhook,
    Discord,
    Slack,
    Healthchecks,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Event")]
pub(super) enum RawEvent {
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
    VerifyFailed,
    ReplicaBehind,
}
