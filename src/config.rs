//! Reading `patina.toml`: raw serde structs, `${VAR}` expansion, validation into a [`Policy`]
//! with every problem reported at once (file:line:column, key, hint), and the JSON Schema.
//!
//! The pipeline, all in [`from_str`]:
//!
//! 1. `toml::de::DeTable::parse` — a syntax error is one problem at its span.
//! 2. The spanned tree becomes a plain `toml::Value` tree; every string has its `${VAR}`
//!    references expanded (`$${` writes a literal `${`); the position of every key and value is
//!    indexed by its dotted path (`database[1].schedule`, 0-based indices).
//! 3. The tree is checked against the JSON Schema generated from the raw types below, so the
//!    schema editors use and the validator can never disagree: unknown keys (with a
//!    did-you-mean), missing required keys, wrong types, unknown enum values, minimums. Offending
//!    entries are removed so that the next steps still run and report their own problems.
//! 4. The cleaned tree is deserialized into the raw types (each `[[database]]` and `[[alert]]`
//!    on its own, so one broken entry does not hide the others).
//! 5. Semantic validation builds the [`Policy`]: addresses, durations, cron, timezone, URLs,
//!    names, cross references, credentials.
//!
//! A path that already has a problem gets no follow-on problems. Messages never contain the
//! value of a secret (tokens, keys, alert URLs and headers).
//!
//! Decisions: `weekly = "off"` (or `monthly = "off"`) disables that tier; storage `prefix` loses
//! any leading `/` and gains a trailing one; `[[alert]] on` is required and non-empty; a D1
//! database's `mode` defaults to `export`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::policy::{
    AlertEvent, AlertSettings, AlertSink, Cloudflare, Compression, D1Mode, Daemon, Database,
    Policy, Priority, PriorityLevel, Retention, Secret, SinkKind, SourceSpec, Span, Storage,
    StorageLocation,
};
use crate::schedule::Schedule;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `database[1].schedule` (empty for syntax errors).
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for ConfigProblem {
    /// `<message> at <file>:<line>:<col>`, then ` — <hint>` when there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {}:{}:{}",
            self.message, self.file, self.line, self.column
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a policy file (never empty). `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_problems(.problems))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

fn display_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ConfigProblem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Raw types: the file as written. Their `///` docs are the schema's descriptions (editor hover).
// ---------------------------------------------------------------------------------------------

/// Patina's policy file: which databases to back up, when, for how long, and who hears about
/// problems. Strings may use `${VAR}` to read the environment.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "patina.toml")]
struct RawConfig {
    /// The daemon: HTTP listener, state directory, reconcile tick, concurrency and timezone.
    daemon: RawDaemon,
    /// Where backups are stored: a local folder, an S3 bucket (R2, MinIO, AWS) or memory.
    storage: RawStorage,
    /// Backup schedules by priority. Databases name one of these; the executor serves critical
    /// before high before normal before low.
    priorities: RawPriorities,
    /// How long backups are kept, and when the week's dumps are rolled into an archive.
    retention: RawRetention,
    /// Cloudflare credentials; needed only by databases of kind "d1".
    cloudflare: Option<RawCloudflare>,
    /// A database to back up. Repeat `[[database]]` for each one.
    database: Vec<RawDatabase>,
    /// When to alert: thresholds for slow jobs, odd sizes and stale backups.
    alerts: RawAlerts,
    /// An alert sink. Repeat `[[alert]]` for each one.
    alert: Vec<RawAlert>,
}

/// The daemon process.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Daemon")]
struct RawDaemon {
    /// Address of the HTTP server (health, metrics, status page, API), as IP:PORT.
    #[schemars(extend("default" = "127.0.0.1:9477"))]
    listen: Option<String>,
    /// Directory for the catalog (patina.db) and scratch space, relative to this file.
    #[schemars(extend("default" = ".patina"))]
    state_dir: Option<String>,
    /// How often the policy is reconciled against storage, e.g. "60s" or "5m".
    #[schemars(extend("default" = "60s"), regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    tick: Option<String>,
    /// How many backups may run at once (at least 1).
    #[schemars(extend("default" = 3), range(min = 1))]
    concurrency: Option<u32>,
    /// IANA timezone in which schedules are read, e.g. "Europe/Berlin".
    #[schemars(extend("default" = "UTC"))]
    timezone: Option<String>,
    /// Bearer token for POST /trigger and GET /download (secret; use "${VAR}"). Without it those
    /// endpoints are disabled.
    api_token: Option<String>,
}

/// Backup storage.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Storage")]
struct RawStorage {
    /// "file://PATH" (relative to this file), "s3://BUCKET" (R2, MinIO, AWS) or "memory://".
    #[schemars(
        extend("default" = "file://.patina/backups"),
        regex(pattern = r"^(file|s3|memory)://")
    )]
    url: Option<String>,
    /// S3 endpoint URL (s3:// only), e.g. "https://ACCOUNT.r2.cloudflarestorage.com". Unset
    /// means AWS.
    endpoint: Option<String>,
    /// S3 region (s3:// only), e.g. "auto" for R2.
    region: Option<String>,
    /// S3 access key id (s3:// only; secret; use "${VAR}"). Set both keys or neither.
    access_key_id: Option<String>,
    /// S3 secret access key (s3:// only; secret; use "${VAR}"). Set both keys or neither.
    secret_access_key: Option<String>,
    /// Key prefix inside the bucket or folder, e.g. "patina/". A trailing "/" is added.
    #[schemars(extend("default" = ""))]
    prefix: Option<String>,
    /// Compression of dumps.
    #[schemars(extend("default" = "zstd"))]
    compression: Option<RawCompression>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Compression")]
enum RawCompression {
    Zstd,
    Gzip,
    None,
}

/// The declared priorities.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Priorities")]
struct RawPriorities {
    /// Served first.
    critical: Option<RawPriority>,
    /// Served after critical.
    high: Option<RawPriority>,
    /// Served after high.
    normal: Option<RawPriority>,
    /// Served last.
    low: Option<RawPriority>,
}

/// One priority.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Priority")]
struct RawPriority {
    /// When databases of this priority are backed up: 5-field cron ("0 3 * * *") or an alias
    /// (@daily), read in the daemon's timezone.
    schedule: String,
}

/// Retention tiers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Retention")]
struct RawRetention {
    /// Every dump is kept at least this long: "30s 15m 2h 7d 12w 12mo".
    #[schemars(extend("default" = "7d"), regex(pattern = r"^[0-9]+(s|m|h|d|w|mo)$"))]
    daily: Option<String>,
    /// Weekly archives are kept this long, or "off" for no weekly tier (dumps then expire
    /// after `daily`).
    #[schemars(
        extend("default" = "12w"),
        regex(pattern = r"^([0-9]+(s|m|h|d|w|mo)|off)$")
    )]
    weekly: Option<String>,
    /// The first weekly archive of each month is kept this long, e.g. "12mo". Unset or "off":
    /// no monthly tier.
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d|w|mo)|off)$"))]
    monthly: Option<String>,
    /// When last week's dumps are rolled into weekly/YYYY-Www.tar (cron).
    #[schemars(extend("default" = "0 4 * * SUN"))]
    archive: Option<String>,
}

/// Cloudflare API access for D1 databases.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cloudflare")]
struct RawCloudflare {
    /// Cloudflare account id.
    account_id: String,
    /// API token with D1 read access (secret; use "${VAR}").
    api_token: String,
    /// API base URL; override for proxies and tests.
    #[schemars(extend("default" = "https://api.cloudflare.com/client/v4"))]
    api_url: Option<String>,
}

/// A database to back up.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Database")]
struct RawDatabase {
    /// Unique name, `[a-z0-9][a-z0-9_-]*`; becomes part of object keys.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    name: String,
    /// "sqlite" (a local file) or "d1" (Cloudflare D1).
    kind: RawKind,
    /// Path of the SQLite file, relative to this file (kind = "sqlite").
    path: Option<String>,
    /// D1 database id, a UUID (kind = "d1").
    id: Option<String>,
    /// How a D1 database is read: "export" (the export API) or "query" (paged SELECTs).
    #[schemars(extend("default" = "export"))]
    mode: Option<RawD1Mode>,
    /// One of the priorities declared under [priorities].
    priority: RawLevel,
    /// Overrides the priority's schedule for this database (cron).
    schedule: Option<String>,
    /// Tables whose contents never leave the machine.
    #[serde(default)]
    exclude_tables: Vec<String>,
    /// Set to false to stop backing this database up (its backups stay).
    #[schemars(extend("default" = true))]
    enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Kind")]
enum RawKind {
    Sqlite,
    D1,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "D1Mode")]
enum RawD1Mode {
    Export,
    Query,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Level")]
enum RawLevel {
    Critical,
    High,
    Normal,
    Low,
}

/// Alert thresholds.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "Alerts")]
struct RawAlerts {
    /// A job running longer than this alerts ("duration" event), e.g. "45m".
    #[schemars(extend("default" = "45m"), regex(pattern = r"^[0-9]+(s|m|h|d|w)$"))]
    max_duration: Option<String>,
    /// A dump whose size is off the recent median by more than this fraction alerts
    /// ("size_anomaly" event); 0.5 = 50%.
    #[schemars(extend("default" = 0.5))]
    size_deviation: Option<f64>,
    /// A database without a successful backup within this many schedule intervals alerts
    /// ("stale" event).
    #[schemars(extend("default" = 2), range(min = 1))]
    stale_after: Option<u32>,
    /// When the daily summary is sent (cron); unset: never.
    daily_summary: Option<String>,
    /// A condition that persists (stale, failing, drift, invalid config) is alerted when it
    /// starts, again after this long while it lasts, and once when it resolves; "off": never
    /// again until it resolves.
    #[schemars(extend("default" = "24h"), regex(pattern = r"^([0-9]+(s|m|h|d|w)|off)$"))]
    renotify: Option<String>,
}

/// An alert sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Alert")]
struct RawAlert {
    /// Unique name of the sink (used in logs and the catalog).
    name: String,
    /// "webhook" (JSON POST), "discord", "slack" (incoming webhook) or "healthchecks" (ping).
    kind: RawSinkKind,
    /// The sink's http(s) URL (secret: it usually carries a token; use "${VAR}").
    url: String,
    /// The events sent to this sink.
    on: Vec<RawEvent>,
    /// Extra HTTP headers (webhook only); values are secrets and may use "${VAR}".
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "SinkKind")]
enum RawSinkKind {
    Webhook,
    Discord,
    Slack,
    Healthchecks,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Event")]
enum RawEvent {
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

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Parse and validate a policy from text. `file` names it in messages; `base_dir` resolves
/// relative paths; `env` looks up `${VAR}`.
pub fn from_str(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, ConfigError> {
    let mut cx = Cx::new(text, file);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = cx.line_col(offset);
            return Err(ConfigError {
                problems: vec![ConfigProblem {
                    file: file.to_string(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("invalid TOML: {}", e.message().trim_end()),
                    hint: None,
                }],
            });
        }
    };
    let span = doc.span();
    let root = Spanned::new(span, DeValue::Table(doc.into_inner()));
    let mut tree = cx.convert(&root, String::new(), 0, env);

    let schema = json_schema();
    cx.check(&mut tree, &schema, &schema, "");

    let policy = cx.build(tree, file, base_dir);
    cx.finish(policy)
}

/// Read `path` and validate it with the process environment.
pub fn load(path: &Path) -> Result<Policy, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![ConfigProblem {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("read {}: {e}", path.display()),
            hint: None,
        }],
    })?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    from_str(&text, &path.display().to_string(), &base_dir, &|name| {
        std::env::var(name).ok()
    })
}

/// The JSON Schema of the policy file, generated from the raw config types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    let mut json = serde_json::to_value(schema).expect("a schema is JSON");
    strip_null(&mut json);
    json
}

/// TOML has no null: drop the `null` alternatives schemars adds for `Option` fields.
fn strip_null(json: &mut Json) {
    match json {
        Json::Object(map) => {
            if map.get("default") == Some(&Json::Null) {
                map.remove("default");
            }
            if let Some(Json::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Json::Array(alts)) = map.get_mut(key) {
                    alts.retain(|a| a.get("type").and_then(Json::as_str) != Some("null"));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        map.remove(key);
                        if let Json::Object(inner) = only {
                            for (k, v) in inner {
                                map.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
            for v in map.values_mut() {
                strip_null(v);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// The effective policy as `patina check` prints it: databases with priority, schedule and
/// the next three fire times after `now` in the configured timezone. Secrets print as `***`.
pub fn describe(policy: &Policy, now: chrono::DateTime<chrono::Utc>) -> String {
    let when = |s: &Schedule| {
        let times: Vec<String> = s
            .upcoming(now, 3)
            .iter()
            .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
            .collect();
        if times.is_empty() {
            "never".to_string()
        } else {
            times.join(", ")
        }
    };
    let mut out = String::new();
    let d = &policy.daemon;
    let s = &policy.storage;
    let r = &policy.retention;
    let _ = writeln!(out, "config file:  {}", policy.source.display());
    let _ = writeln!(out, "storage:      {}", s.location);
    if !s.prefix.is_empty() {
        let _ = writeln!(out, "  prefix:     {}", s.prefix);
    }
    let _ = writeln!(out, "  compression: {}", s.compression.as_str());
    if let Some(endpoint) = &s.endpoint {
        let _ = writeln!(out, "  endpoint:   {endpoint}");
    }
    if let Some(region) = &s.region {
        let _ = writeln!(out, "  region:     {region}");
    }
    if s.access_key_id.is_some() {
        let _ = writeln!(out, "  keys:       *** / ***");
    }
    let _ = writeln!(out, "state dir:    {}", d.state_dir.display());
    let _ = writeln!(out, "listen:       {}", d.listen);
    let _ = writeln!(
        out,
        "api token:    {}",
        match &d.api_token {
            Some(t) => t.to_string(),
            None => "none (trigger and download endpoints disabled)".into(),
        }
    );
    let _ = writeln!(out, "timezone:     {}", d.timezone);
    let _ = writeln!(out, "tick:         {}", Span::Seconds(d.tick.as_secs()));
    let _ = writeln!(out, "concurrency:  {}", d.concurrency);
    let off = |s: Option<Span>| s.map_or("off".to_string(), |s| s.to_string());
    let _ = writeln!(
        out,
        "retention:    daily {}, weekly {}, monthly {}",
        r.daily,
        off(r.weekly),
        off(r.monthly)
    );
    let _ = writeln!(
        out,
        "  archive:    {}  next: {}",
        r.archive.expression(),
        when(&r.archive)
    );
    if let Some(cf) = &policy.cloudflare {
        let _ = writeln!(
            out,
            "cloudflare:   account {}, token {}, api {}",
            cf.account_id, cf.api_token, cf.api_url
        );
    }
    let _ = writeln!(out, "\ndatabases ({}):", policy.databases.len());
    for db in &policy.databases {
        let _ = writeln!(out, "  {}", db.name);
        let source = match &db.source {
            SourceSpec::Sqlite { path } => path.display().to_string(),
            SourceSpec::D1 { id, mode } => format!(
                "{id} (mode {})",
                match mode {
                    D1Mode::Export => "export",
                    D1Mode::Query => "query",
                }
            ),
        };
        let _ = writeln!(out, "    kind:       {}", db.source.kind());
        let _ = writeln!(out, "    source:     {source}");
        let _ = writeln!(out, "    priority:   {}", db.priority);
        let _ = writeln!(
            out,
            "    schedule:   {}{}",
            db.schedule.expression(),
            if db.schedule_overridden {
                " (override)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "    enabled:    {}",
            if db.enabled { "yes" } else { "no" }
        );
        if !db.exclude_tables.is_empty() {
            let _ = writeln!(out, "    excluded:   {}", db.exclude_tables.join(", "));
        }
        if db.enabled {
            let _ = writeln!(out, "    next:       {}", when(&db.schedule));
        }
    }
    let a = &policy.alerts;
    let _ = writeln!(
        out,
        "\nalerts:       max duration {}, size deviation {}, stale after {} intervals, renotify {}",
        Span::Seconds(a.max_duration.as_secs()),
        a.size_deviation,
        a.stale_after,
        a.renotify
            .map(|d| Span::Seconds(d.as_secs()).to_string())
            .unwrap_or_else(|| "off".into())
    );
    if let Some(summary) = &a.daily_summary {
        let _ = writeln!(
            out,
            "  daily summary: {}  next: {}",
            summary.expression(),
            when(summary)
        );
    }
    let _ = writeln!(out, "alert sinks ({}):", policy.sinks.len());
    for sink in &policy.sinks {
        let events: Vec<&str> = sink.on.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(
            out,
            "  {} ({}, url ***): {}",
            sink.name,
            sink.kind.as_str(),
            events.join(", ")
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The validation context: positions, problems, and the paths that already have one.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Pos {
    key: usize,
    value: usize,
}

struct Cx<'t> {
    text: &'t str,
    file: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    positions: HashMap<String, Pos>,
    problems: Vec<(usize, ConfigProblem)>,
    /// Paths with a problem already: no follow-on problems for them.
    broken: HashSet<String>,
    /// Values read from the environment: never echoed in a problem (a secret put in the
    /// wrong key must not end up in a log).
    from_env: Vec<String>,
}

enum At {
    Key,
    Value,
}

impl<'t> Cx<'t> {
    fn new(text: &'t str, file: &str) -> Cx<'t> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Cx {
            text,
            file: file.to_string(),
            line_starts,
            positions: HashMap::new(),
            problems: Vec::new(),
            broken: HashSet::new(),
            from_env: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// The offset of `path` (its key or its value); a path that is not in the file (a missing
    /// key) falls back to its nearest ancestor that is.
    fn offset(&self, path: &str, at: At) -> usize {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return match at {
                    At::Key => pos.key,
                    At::Value => pos.value,
                };
            }
            match parent(p) {
                Some(up) => p = up,
                None => return 0,
            }
        }
    }

    fn push(&mut self, path: &str, at: At, message: String, hint: Option<String>) {
        if self.broken.contains(path) {
            return;
        }
        self.broken.insert(path.to_string());
        let offset = self.offset(path, at);
        let (line, column) = self.line_col(offset);
        self.problems.push((
            self.problems.len(),
            ConfigProblem {
                file: self.file.clone(),
                line,
                column,
                key: path.to_string(),
                message,
                hint,
            },
        ));
    }

    /// A problem with the value at `path`.
    fn bad(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.push(path, At::Value, message.into(), hint);
    }

    /// A problem with the key at `path` (unknown, misplaced).
    fn bad_key(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.push(path, At::Key, message.into(), hint);
    }

    fn finish(self, policy: Option<Policy>) -> Result<Policy, ConfigError> {
        let mut problems = self.problems;
        // Mask environment-provided text (long enough to be a credential) in every message.
        let mut from_env: Vec<&String> = self.from_env.iter().filter(|v| v.len() >= 6).collect();
        from_env.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for (_, p) in &mut problems {
            for value in &from_env {
                if p.message.contains(value.as_str()) {
                    p.message = p.message.replace(value.as_str(), "***");
                }
                if let Some(hint) = &mut p.hint
                    && hint.contains(value.as_str())
                {
                    *hint = hint.replace(value.as_str(), "***");
                }
            }
        }
        match policy {
            Some(policy) if problems.is_empty() => Ok(policy),
            _ => {
                problems.sort_by_key(|(seq, p)| (p.line, p.column, *seq));
                let mut problems: Vec<ConfigProblem> =
                    problems.into_iter().map(|(_, p)| p).collect();
                if problems.is_empty() {
                    problems.push(ConfigProblem {
                        file: self.file,
                        line: 1,
                        column: 1,
                        key: String::new(),
                        message: "the policy could not be read".into(),
                        hint: None,
                    });
                }
                Err(ConfigError { problems })
            }
        }
    }

    // -- step 2: spanned tree -> plain tree, with ${VAR} expansion and a position index -------

    fn convert(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        path: String,
        key_offset: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> toml::Value {
        self.positions.insert(
            path.clone(),
            Pos {
                key: key_offset,
                value: v.span().start,
            },
        );
        match v.get_ref() {
            DeValue::String(s) => toml::Value::String(self.expand(s, &path, env)),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => {
                    self.bad(&path, format!("{} is out of range", field(&path)), None);
                    toml::Value::Integer(0)
                }
            },
            DeValue::Float(f) => toml::Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(b) => toml::Value::Boolean(*b),
            DeValue::Datetime(d) => toml::Value::Datetime(*d),
            DeValue::Array(items) => toml::Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let p = format!("{path}[{i}]");
                        self.convert(item, p, item.span().start, env)
                    })
                    .collect(),
            ),
            DeValue::Table(table) => {
                let mut out = toml::Table::new();
                for (k, item) in table.iter() {
                    let name = k.get_ref().to_string();
                    let p = join(&path, &name);
                    let value = self.convert(item, p, k.span().start, env);
                    out.insert(name, value);
                }
                toml::Value::Table(out)
            }
        }
    }

    /// Expand `${VAR}` in a string value; `$${` is a literal `${`. Problems name the variable.
    fn expand(&mut self, s: &str, path: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
        if !s.contains('$') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        let mut missing = Vec::new();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("${") {
                let Some(end) = tail.find('}') else {
                    self.bad(
                        path,
                        format!("unterminated \"${{\" in {}", field(path)),
                        Some("write ${NAME}, or $${ for a literal \"${\"".into()),
                    );
                    return s.to_string();
                };
                let name = &tail[..end];
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.bad(
                        path,
                        format!(
                            "invalid environment variable name {name:?} in {}",
                            field(path)
                        ),
                        Some("names are letters, digits and _, e.g. ${CF_API_TOKEN}".into()),
                    );
                    return s.to_string();
                }
                match env(name) {
                    Some(value) => {
                        out.push_str(&value);
                        self.from_env.push(value);
                    }
                    None => missing.push(name.to_string()),
                }
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        if missing.is_empty() {
            return out;
        }
        let names: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
        let (noun, verb) = if missing.len() == 1 {
            ("variable", "is")
        } else {
            ("variables", "are")
        };
        self.bad(
            path,
            format!(
                "environment {noun} {} {verb} not set (used by {})",
                names.join(", "),
                field(path)
            ),
            Some(format!(
                "set {} in the environment (e.g. the service's EnvironmentFile=)",
                missing.join(", ")
            )),
        );
        s.to_string()
    }

    // -- step 3: check the tree against the schema, removing what does not fit --------------

    /// Returns false when `value` does not fit `schema` (and the caller should drop it).
    fn check(&mut self, value: &mut toml::Value, schema: &Json, root: &Json, path: &str) -> bool {
        let schema = deref(schema, root);
        if self.broken.contains(path) {
            return false;
        }
        if let Some(alts) = schema.get("oneOf").or_else(|| schema.get("anyOf")) {
            return self.check_enum(value, alts, path);
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
            return self.check_enum(value, &Json::Array(allowed.clone()), path);
        }
        let ty = schema.get("type").and_then(Json::as_str).unwrap_or("");
        let fits = matches!(
            (ty, &*value),
            ("string", toml::Value::String(_))
                | ("integer", toml::Value::Integer(_))
                | ("number", toml::Value::Integer(_) | toml::Value::Float(_))
                | ("boolean", toml::Value::Boolean(_))
                | ("array", toml::Value::Array(_))
                | ("object", toml::Value::Table(_))
                | ("", _)
        );
        if !fits {
            let want = match ty {
                "string" => "a string",
                "integer" => "an integer",
                "number" => "a number",
                "boolean" => "true or false",
                "array" => "an array",
                _ => "a table",
            };
            self.bad(
                path,
                format!("{} must be {want}, not {}", field(path), type_name(value)),
                None,
            );
            return false;
        }
        match value {
            toml::Value::Integer(n) => {
                if let Some(min) = schema.get("minimum").and_then(Json::as_i64)
                    && *n < min
                {
                    self.bad(
                        path,
                        format!("{} must be at least {min}", field(path)),
                        None,
                    );
                    return false;
                }
                if schema.get("format").and_then(Json::as_str) == Some("uint32")
                    && *n > i64::from(u32::MAX)
                {
                    self.bad(path, format!("{} is too large", field(path)), None);
                    return false;
                }
            }
            toml::Value::Array(items) => {
                let item_schema = schema.get("items").cloned().unwrap_or(Json::Bool(true));
                let mut keep = Vec::with_capacity(items.len());
                for (i, item) in items.iter_mut().enumerate() {
                    keep.push(self.check(item, &item_schema, root, &format!("{path}[{i}]")));
                }
                // Keep indices stable for arrays of tables (positions are indexed by them);
                // other arrays just lose the bad items.
                let is_tables = items.iter().all(toml::Value::is_table);
                if !is_tables {
                    let mut flags = keep.iter();
                    items.retain(|_| *flags.next().unwrap_or(&true));
                } else {
                    for (item, ok) in items.iter_mut().zip(keep) {
                        if !ok {
                            *item = toml::Value::Boolean(false); // a tombstone, skipped later
                        }
                    }
                }
            }
            toml::Value::Table(table) => {
                let ok = self.check_table(table, schema, root, path);
                if !ok {
                    // A required key is missing or broken: drop the table without a second
                    // problem, and let later checks know it was there.
                    self.broken.insert(path.to_string());
                }
                return ok;
            }
            _ => {}
        }
        true
    }

    fn check_enum(&mut self, value: &toml::Value, alts: &Json, path: &str) -> bool {
        let allowed: Vec<&str> = alts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("const").and_then(Json::as_str).or_else(|| a.as_str()))
            .collect();
        let listed = allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        match value {
            toml::Value::String(s) if allowed.contains(&s.as_str()) => true,
            toml::Value::String(s) => {
                self.bad(
                    path,
                    format!("{} must be one of {listed}, not {s:?}", field(path)),
                    did_you_mean(s, &allowed),
                );
                false
            }
            other => {
                self.bad(
                    path,
                    format!(
                        "{} must be one of {listed}, not {}",
                        field(path),
                        type_name(other)
                    ),
                    None,
                );
                false
            }
        }
    }

    fn check_table(
        &mut self,
        table: &mut toml::Table,
        schema: &Json,
        root: &Json,
        path: &str,
    ) -> bool {
        let props = schema.get("properties").and_then(Json::as_object);
        let extra = schema.get("additionalProperties");
        let names: Vec<&str> = props
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut ok = true;
        let keys: Vec<String> = table.keys().cloned().collect();
        for key in keys {
            let p = join(path, &key);
            let sub = match props.and_then(|p| p.get(&key)) {
                Some(sub) => sub.clone(),
                None => match extra {
                    Some(Json::Bool(false)) => {
                        let hint = did_you_mean(&key, &names).or_else(|| {
                            Some(format!(
                                "the keys allowed here are {}",
                                names
                                    .iter()
                                    .map(|n| format!("{n:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        });
                        let message = if path.is_empty() {
                            format!("unknown top-level key {key:?}")
                        } else {
                            format!("unknown key {key:?} in {}", section(path))
                        };
                        self.bad_key(&p, message, hint);
                        table.remove(&key);
                        continue;
                    }
                    Some(s @ Json::Object(_)) => s.clone(),
                    _ => Json::Bool(true),
                },
            };
            let mut v = table.remove(&key).expect("key listed");
            if self.check(&mut v, &sub, root, &p) {
                table.insert(key, v);
            } else if schema
                .get("required")
                .and_then(Json::as_array)
                .is_some_and(|r| r.iter().any(|k| k == key.as_str()))
            {
                ok = false;
            }
        }
        for required in schema
            .get("required")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            let p = join(path, required);
            if !table.contains_key(required) && !self.broken.contains(&p) {
                self.bad(
                    path,
                    format!("missing key {required:?} in {}", section(path)),
                    None,
                );
                ok = false;
            }
        }
        ok
    }

    // -- steps 4 and 5: deserialize the raw types and validate their meaning -----------------

    fn build(&mut self, tree: toml::Value, file: &str, base_dir: &Path) -> Option<Policy> {
        let toml::Value::Table(mut root) = tree else {
            return None;
        };
        let take_items = |root: &mut toml::Table, key: &str| match root.remove(key) {
            Some(toml::Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let db_items = take_items(&mut root, "database");
        let alert_items = take_items(&mut root, "alert");
        let raw: RawConfig = match toml::Value::Table(root).try_into() {
            Ok(raw) => raw,
            Err(e) => {
                self.bad("", format!("cannot read the policy: {}", e.message()), None);
                return None;
            }
        };
        let databases = self.items::<RawDatabase>(db_items, "database");
        let alert_sinks = self.items::<RawAlert>(alert_items, "alert");

        let daemon = self.daemon(&raw.daemon, base_dir);
        let tz = daemon.as_ref().map_or(chrono_tz::Tz::UTC, |d| d.timezone);
        let storage = self.storage(&raw.storage, base_dir);
        let priorities = self.priorities(&raw.priorities, tz);
        let retention = self.retention(&raw.retention, tz);
        let cloudflare = raw.cloudflare.as_ref().and_then(|cf| self.cloudflare(cf));
        let databases = self.databases(
            databases,
            &priorities,
            raw.cloudflare.is_some() || self.broken.contains("cloudflare"),
            tz,
            base_dir,
        );
        let alerts = self.alerts(&raw.alerts, tz);
        let sinks = self.sinks(alert_sinks);

        Some(Policy {
            source: PathBuf::from(file),
            daemon: daemon?,
            storage: storage?,
            priorities,
            retention: retention?,
            cloudflare,
            databases: databases?,
            alerts: alerts?,
            sinks: sinks?,
        })
    }

    /// Deserialize each entry of an array of tables on its own, keeping its index.
    fn items<T: for<'de> Deserialize<'de>>(
        &mut self,
        items: Vec<toml::Value>,
        key: &str,
    ) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if !item.is_table() {
                continue; // a tombstone left by the schema check
            }
            let path = format!("{key}[{i}]");
            match item.try_into::<T>() {
                Ok(v) => out.push((i, v)),
                Err(e) => self.bad(
                    &path,
                    format!("cannot read {}: {}", section(&path), e.message()),
                    None,
                ),
            }
        }
        out
    }

    fn daemon(&mut self, raw: &RawDaemon, base_dir: &Path) -> Option<Daemon> {
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:9477");
        let listen = match listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    "daemon.listen",
                    format!("\"listen\" in [daemon] is not an IP:PORT address: {listen:?}"),
                    Some("use an IP address and a port, e.g. \"127.0.0.1:9477\"".into()),
                );
                None
            }
        };
        let state_dir = raw.state_dir.as_deref().unwrap_or(".patina");
        if state_dir.is_empty() {
            self.bad(
                "daemon.state_dir",
                "\"state_dir\" in [daemon] is empty",
                Some("the default is \".patina\"".into()),
            );
        }
        let tick = self.duration("daemon.tick", raw.tick.as_deref().unwrap_or("60s"));
        let concurrency = raw.concurrency.unwrap_or(3) as usize;
        let timezone = self.timezone(raw.timezone.as_deref().unwrap_or("UTC"));
        Some(Daemon {
            listen: listen?,
            state_dir: resolve(base_dir, state_dir),
            tick: tick?,
            concurrency,
            timezone: timezone?,
            api_token: raw.api_token.clone().map(Secret::new),
        })
    }

    fn timezone(&mut self, name: &str) -> Option<chrono_tz::Tz> {
        match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let lower = name.to_ascii_lowercase();
                let exact = chrono_tz::TZ_VARIANTS
                    .iter()
                    .find(|tz| tz.name().to_ascii_lowercase() == lower);
                let hint = match exact {
                    Some(tz) => Some(format!("did you mean {:?}?", tz.name())),
                    None => {
                        let names: Vec<&str> =
                            chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                        did_you_mean(name, &names)
                    }
                }
                .or_else(|| Some("use an IANA name such as \"UTC\" or \"Europe/Berlin\"".into()));
                self.bad(
                    "daemon.timezone",
                    format!("unknown timezone {name:?} in [daemon]"),
                    hint,
                );
                None
            }
        }
    }

    fn storage(&mut self, raw: &RawStorage, base_dir: &Path) -> Option<Storage> {
        let url = raw.url.as_deref().unwrap_or("file://.patina/backups");
        let scheme_hint = || Some("use \"file://PATH\", \"s3://BUCKET\" or \"memory://\"".into());
        let location = match url.split_once("://") {
            Some(("file", path)) if !path.is_empty() => {
                Some(StorageLocation::File(resolve(base_dir, path)))
            }
            Some(("file", _)) => {
                self.bad(
                    "storage.url",
                    "\"url\" in [storage] names no folder",
                    Some("e.g. \"file://.patina/backups\"".into()),
                );
                None
            }
            Some(("s3", bucket)) => {
                if bucket.contains('/') {
                    let (b, p) = bucket.split_once('/').unwrap_or((bucket, ""));
                    self.bad(
                        "storage.url",
                        format!("\"url\" in [storage] must name only a bucket, not {bucket:?}"),
                        Some(format!("write url = \"s3://{b}\" and prefix = \"{p}\"")),
                    );
                    None
                } else if bucket.len() < 3
                    || bucket.len() > 63
                    || !bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                {
                    self.bad(
                        "storage.url",
                        format!("invalid bucket name {bucket:?} in [storage] url"),
                        Some("bucket names are 3-63 lowercase letters, digits, '-' and '.'".into()),
                    );
                    None
                } else {
                    Some(StorageLocation::S3 {
                        bucket: bucket.to_string(),
                    })
                }
            }
            Some(("memory", "")) => Some(StorageLocation::Memory),
            Some(("memory", _)) => {
                self.bad(
                    "storage.url",
                    "\"memory://\" storage takes no path",
                    Some("write url = \"memory://\"".into()),
                );
                None
            }
            Some((scheme, _)) => {
                self.bad(
                    "storage.url",
                    format!("unsupported storage url scheme {scheme:?} in [storage]"),
                    scheme_hint(),
                );
                None
            }
            None => {
                self.bad(
                    "storage.url",
                    "\"url\" in [storage] is not a URL",
                    scheme_hint(),
                );
                None
            }
        };
        let is_s3 = matches!(location, Some(StorageLocation::S3 { .. }));
        if location.is_some() && !is_s3 {
            for (key, set) in [
                ("endpoint", raw.endpoint.is_some()),
                ("region", raw.region.is_some()),
                ("access_key_id", raw.access_key_id.is_some()),
                ("secret_access_key", raw.secret_access_key.is_some()),
            ] {
                if set {
                    self.bad_key(
                        &format!("storage.{key}"),
                        format!("{key:?} in [storage] is used only with s3:// storage"),
                        Some("remove it, or set url = \"s3://BUCKET\"".into()),
                    );
                }
            }
        }
        if is_s3 {
            match (&raw.access_key_id, &raw.secret_access_key) {
                (Some(_), None) => self.bad_key(
                    "storage.access_key_id",
                    "\"access_key_id\" in [storage] is set but \"secret_access_key\" is not",
                    Some("set both keys, or neither to use the ambient AWS credentials".into()),
                ),
                (None, Some(_)) => self.bad_key(
                    "storage.secret_access_key",
                    "\"secret_access_key\" in [storage] is set but \"access_key_id\" is not",
                    Some("set both keys, or neither to use the ambient AWS credentials".into()),
                ),
                _ => {}
            }
            if let Some(endpoint) = &raw.endpoint {
                self.http_url("storage.endpoint", endpoint, false);
            }
        }
        let prefix = raw.prefix.as_deref().unwrap_or("").trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let compression = match raw.compression.unwrap_or(RawCompression::Zstd) {
            RawCompression::Zstd => Compression::Zstd,
            RawCompression::Gzip => Compression::Gzip,
            RawCompression::None => Compression::None,
        };
        Some(Storage {
            location: location?,
            endpoint: raw.endpoint.clone(),
            region: raw.region.clone(),
            access_key_id: raw.access_key_id.clone().map(Secret::new),
            secret_access_key: raw.secret_access_key.clone().map(Secret::new),
            prefix,
            compression,
        })
    }

    /// Checks an http(s) URL; `secret` keeps the value out of the message.
    fn http_url(&mut self, path: &str, value: &str, secret: bool) -> bool {
        let ok = url::Url::parse(value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            let shown = if secret {
                String::new()
            } else {
                format!(": {value:?}")
            };
            self.bad(
                path,
                format!("{} is not an http(s) URL{shown}", field(path)),
                Some("write a full URL such as \"https://example.com/path\"".into()),
            );
        }
        ok
    }

    fn schedule(&mut self, path: &str, expr: &str, tz: chrono_tz::Tz) -> Option<Schedule> {
        match Schedule::parse(expr, tz) {
            Ok(s) => Some(s),
            Err(e) => {
                self.bad(
                    path,
                    format!("{} in {}", e, field(path)),
                    Some(
                        "use 5 fields, \"minute hour day-of-month month day-of-week\" (e.g. \
                         \"0 3 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly"
                            .into(),
                    ),
                );
                None
            }
        }
    }

    fn priorities(
        &mut self,
        raw: &RawPriorities,
        tz: chrono_tz::Tz,
    ) -> BTreeMap<PriorityLevel, Priority> {
        let mut out = BTreeMap::new();
        for (level, p) in [
            (PriorityLevel::Critical, &raw.critical),
            (PriorityLevel::High, &raw.high),
            (PriorityLevel::Normal, &raw.normal),
            (PriorityLevel::Low, &raw.low),
        ] {
            if let Some(p) = p {
                let path = format!("priorities.{level}.schedule");
                if let Some(schedule) = self.schedule(&path, &p.schedule, tz) {
                    out.insert(level, Priority { level, schedule });
                }
            }
        }
        out
    }

    /// A retention span: `30s 15m 2h 7d 12w` or calendar months `12mo`.
    fn span(&mut self, path: &str, text: &str) -> Option<Span> {
        match parse_span(text) {
            Some(span @ (Span::Seconds(1..) | Span::Months(1..))) => Some(span),
            Some(_) => {
                self.bad(
                    path,
                    format!("{} must be longer than zero", field(path)),
                    None,
                );
                None
            }
            None => {
                self.bad(
                    path,
                    format!("invalid duration {text:?} for {}", field(path)),
                    Some("write a number and a unit: 30s, 15m, 2h, 7d, 12w or 12mo".into()),
                );
                None
            }
        }
    }

    /// A plain duration: like a span, without months.
    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match parse_span(text) {
            Some(Span::Months(_)) => {
                self.bad(
                    path,
                    format!("{} cannot be in months: {text:?}", field(path)),
                    Some("use s, m, h, d or w, e.g. \"45m\"".into()),
                );
                None
            }
            Some(Span::Seconds(0)) => {
                self.bad(
                    path,
                    format!("{} must be longer than zero", field(path)),
                    None,
                );
                None
            }
            Some(Span::Seconds(s)) => Some(Duration::from_secs(s)),
            None => {
                self.bad(
                    path,
                    format!("invalid duration {text:?} for {}", field(path)),
                    Some("write a number and a unit: 30s, 15m, 2h, 7d or 12w".into()),
                );
                None
            }
        }
    }

    fn retention(&mut self, raw: &RawRetention, tz: chrono_tz::Tz) -> Option<Retention> {
        let daily = self.span("retention.daily", raw.daily.as_deref().unwrap_or("7d"));
        let weekly = match raw.weekly.as_deref().unwrap_or("12w") {
            "off" => Some(None),
            text => self.span("retention.weekly", text).map(Some),
        };
        let monthly = match raw.monthly.as_deref() {
            None | Some("off") => Some(None),
            Some(text) => self.span("retention.monthly", text).map(Some),
        };
        let archive = self.schedule(
            "retention.archive",
            raw.archive.as_deref().unwrap_or("0 4 * * SUN"),
            tz,
        );
        Some(Retention {
            daily: daily?,
            weekly: weekly?,
            monthly: monthly?,
            archive: archive?,
        })
    }

    fn cloudflare(&mut self, raw: &RawCloudflare) -> Option<Cloudflare> {
        if raw.account_id.trim().is_empty() {
            self.bad(
                "cloudflare.account_id",
                "\"account_id\" in [cloudflare] is empty",
                None,
            );
        }
        if raw.api_token.trim().is_empty() {
            self.bad(
                "cloudflare.api_token",
                "\"api_token\" in [cloudflare] is empty",
                None,
            );
        }
        let api_url = raw
            .api_url
            .clone()
            .unwrap_or_else(|| "https://api.cloudflare.com/client/v4".into());
        let ok = self.http_url("cloudflare.api_url", &api_url, false);
        (ok && !raw.account_id.trim().is_empty() && !raw.api_token.trim().is_empty()).then(|| {
            Cloudflare {
                account_id: raw.account_id.clone(),
                api_token: Secret::new(raw.api_token.clone()),
                api_url: api_url.trim_end_matches('/').to_string(),
            }
        })
    }

    fn databases(
        &mut self,
        raw: Vec<(usize, RawDatabase)>,
        priorities: &BTreeMap<PriorityLevel, Priority>,
        has_cloudflare: bool,
        tz: chrono_tz::Tz,
        base_dir: &Path,
    ) -> Option<Vec<Database>> {
        let mut out = Vec::new();
        let mut complete = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, db) in raw {
            let at = |key: &str| format!("database[{i}].{key}");
            let mut ok = true;
            if !valid_name(&db.name) {
                self.bad(
                    &at("name"),
                    format!("invalid database name {:?}", db.name),
                    Some(
                        "names are lowercase letters, digits, '_' and '-', starting with a letter \
                         or digit (they become part of object keys)"
                            .into(),
                    ),
                );
                ok = false;
            } else if !self.unique_name(&mut seen, "database", i, &db.name) {
                ok = false;
            }
            let level = match db.priority {
                RawLevel::Critical => PriorityLevel::Critical,
                RawLevel::High => PriorityLevel::High,
                RawLevel::Normal => PriorityLevel::Normal,
                RawLevel::Low => PriorityLevel::Low,
            };
            let declared = priorities.get(&level);
            if declared.is_none()
                && !self
                    .broken
                    .contains(&format!("priorities.{level}.schedule"))
                && !self.broken.contains(&format!("priorities.{level}"))
            {
                let known: Vec<&str> = priorities.keys().map(|l| l.as_str()).collect();
                let hint = if known.is_empty() {
                    format!("declare it: [priorities.{level}] schedule = \"0 3 * * *\"")
                } else {
                    format!(
                        "declare [priorities.{level}] or use one of {}",
                        known
                            .iter()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                self.bad(
                    &at("priority"),
                    format!(
                        "priority {:?} of database {:?} is not declared",
                        level.as_str(),
                        db.name
                    ),
                    Some(hint),
                );
            }
            let (schedule, overridden) = match &db.schedule {
                Some(expr) => (self.schedule(&at("schedule"), expr, tz), true),
                None => (declared.map(|p| p.schedule.clone()), false),
            };
            let source = match db.kind {
                RawKind::Sqlite => {
                    for key in ["id", "mode"] {
                        let set = if key == "id" {
                            db.id.is_some()
                        } else {
                            db.mode.is_some()
                        };
                        if set {
                            self.bad_key(
                                &at(key),
                                format!(
                                    "{key:?} is for kind = \"d1\"; database {:?} is sqlite",
                                    db.name
                                ),
                                Some("remove it, or set kind = \"d1\"".into()),
                            );
                        }
                    }
                    match db.path.as_deref() {
                        Some(p) if !p.is_empty() => Some(SourceSpec::Sqlite {
                            path: resolve(base_dir, p),
                        }),
                        _ => {
                            self.bad(
                                &at("path"),
                                format!("sqlite database {:?} needs a path", db.name),
                                Some("add path = \"data/app.db\" (relative to this file)".into()),
                            );
                            None
                        }
                    }
                }
                RawKind::D1 => {
                    if db.path.is_some() {
                        self.bad_key(
                            &at("path"),
                            format!(
                                "\"path\" is for kind = \"sqlite\"; database {:?} is d1",
                                db.name
                            ),
                            Some("remove it, or set kind = \"sqlite\"".into()),
                        );
                    }
                    if !has_cloudflare {
                        self.bad(
                            &format!("database[{i}]"),
                            format!(
                                "d1 database {:?} needs Cloudflare credentials, but there is no \
                                 [cloudflare] section",
                                db.name
                            ),
                            Some(
                                "add [cloudflare] with account_id = \"${CF_ACCOUNT_ID}\" and \
                                 api_token = \"${CF_API_TOKEN}\""
                                    .into(),
                            ),
                        );
                    }
                    let mode = match db.mode {
                        Some(RawD1Mode::Query) => D1Mode::Query,
                        _ => D1Mode::Export,
                    };
                    match db.id.as_deref() {
                        Some(id) if valid_uuid(id) => Some(SourceSpec::D1 {
                            id: id.to_ascii_lowercase(),
                            mode,
                        }),
                        Some(id) => {
                            self.bad(
                                &at("id"),
                                format!("invalid D1 database id {id:?} for {:?}", db.name),
                                Some(
                                    "a D1 id is a UUID such as \
                                     \"45eae4c7-8ae7-4078-9218-8e1677a4360f\" (see `wrangler d1 list`)"
                                        .into(),
                                ),
                            );
                            None
                        }
                        None => {
                            self.bad(
                                &at("id"),
                                format!("d1 database {:?} needs an id", db.name),
                                Some("add id = \"<uuid>\" (see `wrangler d1 list`)".into()),
                            );
                            None
                        }
                    }
                }
            };
            for (t, table) in db.exclude_tables.iter().enumerate() {
                if table.trim().is_empty() {
                    self.bad(
                        &at(&format!("exclude_tables[{t}]")),
                        "empty table name in exclude_tables",
                        None,
                    );
                }
            }
            match (source, schedule, ok) {
                (Some(source), Some(schedule), true) => out.push(Database {
                    name: db.name,
                    source,
                    priority: level,
                    schedule,
                    schedule_overridden: overridden,
                    exclude_tables: db.exclude_tables,
                    enabled: db.enabled.unwrap_or(true),
                }),
                _ => complete = false,
            }
        }
        complete.then_some(out)
    }

    fn alerts(&mut self, raw: &RawAlerts, tz: chrono_tz::Tz) -> Option<AlertSettings> {
        let max_duration = self.duration(
            "alerts.max_duration",
            raw.max_duration.as_deref().unwrap_or("45m"),
        );
        let size_deviation = raw.size_deviation.unwrap_or(0.5);
        let deviation_ok = size_deviation.is_finite() && size_deviation > 0.0;
        if !deviation_ok {
            self.bad(
                "alerts.size_deviation",
                "\"size_deviation\" in [alerts] must be a number greater than 0",
                Some("0.5 alerts when a dump is 50% off the recent median".into()),
            );
        }
        let daily_summary = match &raw.daily_summary {
            Some(expr) => self.schedule("alerts.daily_summary", expr, tz).map(Some),
            None => Some(None),
        };
        let renotify = match raw.renotify.as_deref().unwrap_or("24h") {
            "off" => Some(None),
            text => self.duration("alerts.renotify", text).map(Some),
        };
        Some(AlertSettings {
            max_duration: max_duration?,
            size_deviation: deviation_ok.then_some(size_deviation)?,
            stale_after: raw.stale_after.unwrap_or(2),
            daily_summary: daily_summary?,
            renotify: renotify?,
        })
    }

    /// Records `name` of `table[i]` in `seen`; a name already there is reported at this entry,
    /// with the line of the first use. Returns whether the name was new.
    fn unique_name(
        &mut self,
        seen: &mut HashMap<String, usize>,
        table: &str,
        i: usize,
        name: &str,
    ) -> bool {
        let Some(first) = seen.get(name) else {
            seen.insert(name.to_string(), i);
            return true;
        };
        let (line, _) = self.line_col(self.offset(&format!("{table}[{first}].name"), At::Value));
        let what = if table == "alert" {
            "alert sink"
        } else {
            table
        };
        self.bad(
            &format!("{table}[{i}].name"),
            format!("duplicate {what} name {name:?}"),
            Some(format!(
                "it is already used on line {line}; names must be unique"
            )),
        );
        false
    }

    fn sinks(&mut self, raw: Vec<(usize, RawAlert)>) -> Option<Vec<AlertSink>> {
        let mut out = Vec::new();
        let mut complete = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, a) in raw {
            let at = |key: &str| format!("alert[{i}].{key}");
            let mut ok = true;
            if a.name.trim().is_empty() {
                self.bad(&at("name"), "alert sink name is empty", None);
                ok = false;
            } else if !self.unique_name(&mut seen, "alert", i, &a.name) {
                ok = false;
            }
            let kind = match a.kind {
                RawSinkKind::Webhook => SinkKind::Webhook,
                RawSinkKind::Discord => SinkKind::Discord,
                RawSinkKind::Slack => SinkKind::Slack,
                RawSinkKind::Healthchecks => SinkKind::Healthchecks,
            };
            ok &= self.http_url(&at("url"), &a.url, true);
            if a.on.is_empty() {
                self.bad(
                    &at("on"),
                    format!("alert sink {:?} listens to no events", a.name),
                    Some(format!(
                        "list some of {}",
                        AlertEvent::ALL.map(|e| e.as_str()).join(", ")
                    )),
                );
                ok = false;
            }
            let mut on: Vec<AlertEvent> = Vec::new();
            for e in &a.on {
                let e = match e {
                    RawEvent::Failure => AlertEvent::Failure,
                    RawEvent::Success => AlertEvent::Success,
                    RawEvent::Duration => AlertEvent::Duration,
                    RawEvent::SizeAnomaly => AlertEvent::SizeAnomaly,
                    RawEvent::Stale => AlertEvent::Stale,
                    RawEvent::ArchiveFailed => AlertEvent::ArchiveFailed,
                    RawEvent::Drift => AlertEvent::Drift,
                    RawEvent::ConfigInvalid => AlertEvent::ConfigInvalid,
                    RawEvent::Summary => AlertEvent::Summary,
                };
                if !on.contains(&e) {
                    on.push(e);
                }
            }
            let mut headers = BTreeMap::new();
            if let Some(raw_headers) = &a.headers {
                if kind != SinkKind::Webhook && !raw_headers.is_empty() {
                    self.bad_key(
                        &at("headers"),
                        format!(
                            "\"headers\" are for webhook sinks; {:?} is {}",
                            a.name,
                            kind.as_str()
                        ),
                        Some("remove them, or set kind = \"webhook\"".into()),
                    );
                    ok = false;
                }
                for (name, value) in raw_headers {
                    let valid = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
                    if !valid {
                        self.bad_key(
                            &at(&format!("headers.{name}")),
                            format!("invalid HTTP header name {name:?}"),
                            None,
                        );
                        ok = false;
                    }
                    headers.insert(name.clone(), Secret::new(value.clone()));
                }
            }
            if ok {
                out.push(AlertSink {
                    name: a.name,
                    kind,
                    url: Secret::new(a.url),
                    on,
                    headers,
                });
            } else {
                complete = false;
            }
        }
        complete.then_some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers
// ---------------------------------------------------------------------------------------------

/// `30s 15m 2h 7d 12w` (seconds) or `12mo` (months).
fn parse_span(text: &str) -> Option<Span> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    let unit = match &text[digits..] {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        "mo" => return u32::try_from(n).ok().map(Span::Months),
        _ => return None,
    };
    n.checked_mul(unit).map(Span::Seconds)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The hyphenated 8-4-4-4-12 form D1 uses.
fn valid_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b[1].c` -> `a.b[1]` -> `a.b` -> `a` -> `` -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// How a table path reads in a message: `[daemon]`, `[[database]] #2`, `the top level`.
fn section(path: &str) -> String {
    if path.is_empty() {
        return "the top level".into();
    }
    if let Some(open) = path.find('[') {
        let (name, rest) = path.split_at(open);
        let close = rest.find(']').unwrap_or(rest.len());
        let index: usize = rest[1..close].parse().unwrap_or(0);
        let tail = rest.get(close + 1..).unwrap_or("");
        let tail = tail.trim_start_matches('.');
        return if tail.is_empty() {
            format!("[[{name}]] #{}", index + 1)
        } else {
            format!("[[{name}]] #{} ({tail})", index + 1)
        };
    }
    format!("[{path}]")
}

/// How a key path reads in a message: `"tick" in [daemon]`.
fn field(path: &str) -> String {
    let Some(up) = parent(path) else {
        return "the policy".into();
    };
    let last = &path[up.len()..];
    let last = last.trim_start_matches('.');
    if last.starts_with('[') {
        // An array item: name the array.
        let array = up;
        return format!("an item of {}", field(array));
    }
    format!("{last:?} in {}", section(up))
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Follow a `$ref` into `$defs`.
fn deref<'s>(schema: &'s Json, root: &'s Json) -> &'s Json {
    match schema.get("$ref").and_then(Json::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs")?.get(name))
            .unwrap_or(schema),
        None => schema,
    }
}

fn did_you_mean(word: &str, candidates: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    let (best, distance) = candidates
        .iter()
        .map(|c| (*c, edit_distance(&lower, &c.to_ascii_lowercase())))
        .min_by_key(|(_, d)| *d)?;
    let limit = (word.chars().count() / 3).max(2);
    (distance <= limit).then(|| format!("did you mean {best:?}?"))
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The policy reference (`docs/policy.md`), generated from the same schema editors use, so the
/// documentation cannot drift from the parser: every section and key with its type, default and
/// description.
pub fn reference_markdown() -> String {
    use std::fmt::Write as _;
    let schema = json_schema();
    let defs = schema.get("$defs").cloned().unwrap_or(Json::Null);
    let resolve = |v: &Json| -> Json {
        match v.get("$ref").and_then(Json::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/$defs/");
                let mut target = defs.get(name).cloned().unwrap_or(Json::Null);
                // Keep the referring property's own description and default.
                if let (Json::Object(t), Json::Object(src)) = (&mut target, v) {
                    for key in ["description", "default"] {
                        if let Some(x) = src.get(key) {
                            t.insert(key.into(), x.clone());
                        }
                    }
                }
                target
            }
            None => v.clone(),
        }
    };
    let kind = |v: &Json| -> String {
        let v = resolve(v);
        if let Some(values) = v.get("enum").and_then(Json::as_array) {
            return values
                .iter()
                .map(|x| format!("`{}`", x.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        if let Some(alts) = v.get("oneOf").and_then(Json::as_array) {
            let consts: Vec<String> = alts
                .iter()
                .filter_map(|a| a.get("const").and_then(Json::as_str))
                .map(|c| format!("`{c}`"))
                .collect();
            if !consts.is_empty() {
                return consts.join(" \\| ");
            }
        }
        match v.get("type") {
            Some(Json::String(t)) if t == "array" => {
                let item = v.get("items").map(&resolve);
                let inner = item
                    .as_ref()
                    .and_then(|i| i.get("type"))
                    .and_then(Json::as_str)
                    .unwrap_or("value");
                format!("array of {inner}")
            }
            Some(Json::String(t)) if t == "object" => "table".into(),
            Some(Json::String(t)) => t.clone(),
            _ => "value".into(),
        }
    };
    let default = |v: &Json| -> String {
        match v.get("default") {
            None => "—".into(),
            Some(Json::String(s)) => format!("`\"{s}\"`"),
            Some(other) => format!("`{other}`"),
        }
    };
    let cell = |s: &str| s.replace('\n', " ").replace('|', "\\|");
    let mut out = String::new();
    out.push_str(
        "# Policy reference\n\n\
         Every key of `patina.toml`, generated from the schema (`schemas/patina.schema.json`) by \
         `config::reference_markdown`; a test fails when this file drifts. Strings may read the \
         environment with `${VAR}` (`$${` is a literal `${`); relative paths are resolved against \
         the policy file's directory. Durations: `30s 15m 2h 7d 12w`, and `12mo` (calendar \
         months) for retention. Schedules: 5-field cron (`minute hour day-of-month month \
         day-of-week`, Sunday is 0 or 7 or `SUN`) or `@hourly @daily @weekly @monthly @yearly`, \
         read in `[daemon] timezone`; a job in a DST gap runs once, at the first instant after \
         it. Unknown keys are errors.\n",
    );
    let props = schema
        .get("properties")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let order = [
        ("daemon", "[daemon]"),
        ("storage", "[storage]"),
        ("priorities", "[priorities.<level>]"),
        ("retention", "[retention]"),
        ("cloudflare", "[cloudflare]"),
        ("database", "[[database]]"),
        ("alerts", "[alerts]"),
        ("alert", "[[alert]]"),
    ];
    for (key, title) in order {
        let Some(section) = props.get(key) else {
            continue;
        };
        let mut section = resolve(section);
        if let Some(items) = section.get("items") {
            let description = section.get("description").cloned();
            section = resolve(items);
            if let (Some(d), Json::Object(m)) = (description, &mut section) {
                m.insert("description".into(), d);
            }
        }
        if key == "priorities" {
            // Each level holds the same table; document the level names and the table once.
            let levels: Vec<String> = section
                .get("properties")
                .and_then(Json::as_object)
                .map(|m| m.keys().map(|k| format!("`{k}`")).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\n## `{title}`\n\n{} Levels: {}.\n",
                cell(
                    section
                        .get("description")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                ),
                levels.join(", ")
            );
            section = defs.get("Priority").cloned().unwrap_or(Json::Null);
        } else {
            let _ = writeln!(
                out,
                "\n## `{title}`\n\n{}\n",
                cell(
                    section
                        .get("description")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                )
            );
        }
        let required: Vec<&str> = section
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
        if let Some(fields) = section.get("properties").and_then(Json::as_object) {
            for (name, field) in fields {
                let d = if required.contains(&name.as_str()) {
                    "required".to_string()
                } else {
                    default(field)
                };
                let _ = writeln!(
                    out,
                    "| `{name}` | {} | {d} | {} |",
                    kind(field),
                    cell(
                        field
                            .get("description")
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                    )
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Policy, ConfigError> {
        from_str(text, "patina.toml", Path::new("/srv/patina"), &no_env)
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        parse(text)
            .expect_err("the policy should be rejected")
            .problems
    }

    /// The one problem of `text`, displayed.
    fn only(text: &str) -> String {
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems[0].to_string()
    }

    const BASE: &str = r#"
[priorities.critical]
schedule = "0 3 * * *"

[[database]]
name = "app"
kind = "sqlite"
path = "app.db"
priority = "critical"
"#;

    #[test]
    fn defaults_fill_a_minimal_file() {
        let p = parse(BASE).unwrap();
        assert_eq!(p.daemon.listen.to_string(), "127.0.0.1:9477");
        assert_eq!(p.daemon.state_dir, Path::new("/srv/patina/.patina"));
        assert_eq!(p.daemon.tick, Duration::from_secs(60));
        assert_eq!(p.daemon.concurrency, 3);
        assert_eq!(p.daemon.timezone, chrono_tz::Tz::UTC);
        assert!(p.daemon.api_token.is_none());
        assert_eq!(
            p.storage.location,
            StorageLocation::File("/srv/patina/.patina/backups".into())
        );
        assert_eq!(p.storage.prefix, "");
        assert_eq!(p.storage.compression, Compression::Zstd);
        assert_eq!(p.retention.daily, Span::Seconds(7 * 86_400));
        assert_eq!(p.retention.weekly, Some(Span::Seconds(12 * 604_800)));
        assert_eq!(p.retention.monthly, None);
        assert_eq!(p.retention.archive.expression(), "0 4 * * SUN");
        assert!(p.cloudflare.is_none());
        assert_eq!(p.alerts.max_duration, Duration::from_secs(45 * 60));
        assert_eq!(p.alerts.size_deviation, 0.5);
        assert_eq!(p.alerts.stale_after, 2);
        assert!(p.alerts.daily_summary.is_none());
        let db = &p.databases[0];
        assert_eq!(
            db.source,
            SourceSpec::Sqlite {
                path: "/srv/patina/app.db".into()
            }
        );
        assert!(db.enabled && !db.schedule_overridden);
        assert_eq!(db.schedule.expression(), "0 3 * * *");
    }

    #[test]
    fn weekly_off_prefix_and_months() {
        let text = format!(
            "{BASE}\n[retention]\nweekly = \"off\"\nmonthly = \"12mo\"\n[storage]\nurl = \"s3://grove-patina\"\nprefix = \"/patina\"\n"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.retention.weekly, None);
        assert_eq!(p.retention.monthly, Some(Span::Months(12)));
        assert_eq!(p.storage.prefix, "patina/");
        assert_eq!(
            p.storage.location,
            StorageLocation::S3 {
                bucket: "grove-patina".into()
            }
        );
    }

    #[test]
    fn unknown_key_suggests_the_nearest() {
        let text = "[priorities.critical]\nshedule = \"0 3 * * *\"\n";
        let problems = problems(text);
        // The table then lacks its schedule; that is reported too, at the header.
        assert_eq!(
            problems[0].to_string(),
            "missing key \"schedule\" in [priorities.critical] at patina.toml:1:1"
        );
        assert_eq!(
            problems[1].to_string(),
            "unknown key \"shedule\" in [priorities.critical] at patina.toml:2:1 — did you mean \
             \"schedule\"?"
        );
        assert_eq!(problems[1].key, "priorities.critical.shedule");
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn unknown_sections_and_far_off_keys() {
        let text = "[deamon]\n[storage]\nbananas = 1\n";
        let problems = problems(text);
        assert_eq!(
            problems[0].to_string(),
            "unknown top-level key \"deamon\" at patina.toml:1:2 — did you mean \"daemon\"?"
        );
        assert!(
            problems[1]
                .to_string()
                .starts_with("unknown key \"bananas\" in [storage] at patina.toml:3:1 — the keys allowed here are \"access_key_id\", \"compression\""),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_in_file_order() {
        let text = r#"[daemon]
tick = "60 seconds"
timezone = "Europe/Berlim"
concurrency = 0

[storage]
url = "gs://bucket"
compression = "zst"

[priorities.critical]
schedule = "0 25 * * *"

[[database]]
name = "App"
kind = "sqlite"
path = "app.db"
priority = "critical"

[[database]]
name = "jobs"
kind = "d1"
id = "not-a-uuid"
priority = "low"
"#;
        let shown: Vec<String> = problems(text).iter().map(|p| p.to_string()).collect();
        let lines: Vec<&str> = shown
            .iter()
            .map(|s| {
                s.split(" at patina.toml:")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            lines,
            [
                "2:8", "3:12", "4:15", "7:7", "8:15", "11:12", "14:8", "19:1", "22:6", "23:12"
            ],
            "{shown:#?}"
        );
        assert!(shown[0].contains("invalid duration \"60 seconds\" for \"tick\" in [daemon]"));
        assert!(
            shown[1].contains("did you mean \"Europe/Berlin\"?"),
            "{}",
            shown[1]
        );
        assert!(shown[2].contains("\"concurrency\" in [daemon] must be at least 1"));
        assert!(shown[3].contains("unsupported storage url scheme \"gs\""));
        assert!(shown[4].contains("must be one of \"zstd\", \"gzip\", \"none\", not \"zst\""));
        assert!(shown[4].ends_with("— did you mean \"zstd\"?"));
        assert!(shown[5].contains("the hour field \"25\" is not valid"));
        assert!(shown[6].contains("invalid database name \"App\""));
        assert!(shown[7].contains("d1 database \"jobs\" needs Cloudflare credentials"));
        assert!(shown[8].contains("invalid D1 database id \"not-a-uuid\""));
        assert!(shown[9].contains("priority \"low\" of database \"jobs\" is not declared"));
    }

    #[test]
    fn missing_environment_variables_are_named_with_their_line() {
        let text =
            "[daemon]\nlisten = \"127.0.0.1:9477\"\napi_token = \"Bearer ${PATINA_API_TOKEN}\"\n";
        assert_eq!(
            only(text),
            "environment variable \"PATINA_API_TOKEN\" is not set (used by \"api_token\" in \
             [daemon]) at patina.toml:3:13 — set PATINA_API_TOKEN in the environment (e.g. the \
             service's EnvironmentFile=)"
        );
        let env = |name: &str| (name == "PATINA_API_TOKEN").then(|| "t0k".to_string());
        let p = from_str(text, "patina.toml", Path::new("."), &env).unwrap();
        assert_eq!(p.daemon.api_token.unwrap().expose(), "Bearer t0k");
        // `$${` is a literal `${`; a lone `$` is kept.
        let text = "[daemon]\napi_token = \"a$b$${NOT_A_VAR}\"\n";
        let p = parse(text).unwrap();
        assert_eq!(p.daemon.api_token.unwrap().expose(), "a$b${NOT_A_VAR}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let problems = problems("[daemon]\nlisten = \n");
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (2, 10));
        assert!(problems[0].message.starts_with("invalid TOML: "));
    }

    #[test]
    fn single_problems() {
        let cases: &[(&str, &str)] = &[
            (
                "[retention]\ndaily = \"7 days\"\n",
                "invalid duration \"7 days\" for \"daily\" in [retention] at patina.toml:2:9 — write a number and a unit: 30s, 15m, 2h, 7d, 12w or 12mo",
            ),
            (
                "[alerts]\nmax_duration = \"1mo\"\n",
                "\"max_duration\" in [alerts] cannot be in months: \"1mo\" at patina.toml:2:16 — use s, m, h, d or w, e.g. \"45m\"",
            ),
            (
                "[daemon]\ntimezone = \"Mars/Olympus\"\n",
                "unknown timezone \"Mars/Olympus\" in [daemon] at patina.toml:2:12 — use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
            ),
            (
                "[daemon]\ntimezone = \"europe/berlin\"\n",
                "unknown timezone \"europe/berlin\" in [daemon] at patina.toml:2:12 — did you mean \"Europe/Berlin\"?",
            ),
            (
                "[daemon]\nlisten = \"localhost:9477\"\n",
                "\"listen\" in [daemon] is not an IP:PORT address: \"localhost:9477\" at patina.toml:2:10 — use an IP address and a port, e.g. \"127.0.0.1:9477\"",
            ),
            (
                "[retention]\narchive = \"@reboot\"\n",
                "invalid cron expression \"@reboot\": unknown alias; use one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly in \"archive\" in [retention] at patina.toml:2:11 — use 5 fields, \"minute hour day-of-month month day-of-week\" (e.g. \"0 3 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly",
            ),
            (
                "[storage]\nurl = \"s3://bucket/backups\"\n",
                "\"url\" in [storage] must name only a bucket, not \"bucket/backups\" at patina.toml:2:7 — write url = \"s3://bucket\" and prefix = \"backups\"",
            ),
            (
                "[storage]\nregion = \"auto\"\n",
                "\"region\" in [storage] is used only with s3:// storage at patina.toml:2:1 — remove it, or set url = \"s3://BUCKET\"",
            ),
            (
                "[storage]\nurl = \"s3://bucket\"\naccess_key_id = \"AKIA\"\n",
                "\"access_key_id\" in [storage] is set but \"secret_access_key\" is not at patina.toml:3:1 — set both keys, or neither to use the ambient AWS credentials",
            ),
            (
                "[daemon]\nconcurrency = \"3\"\n",
                "\"concurrency\" in [daemon] must be an integer, not a string at patina.toml:2:15",
            ),
            (
                "[alerts]\nsize_deviation = 0\n",
                "\"size_deviation\" in [alerts] must be a number greater than 0 at patina.toml:2:18 — 0.5 alerts when a dump is 50% off the recent median",
            ),
            (
                "[[alert]]\nname = \"ops\"\nkind = \"discord\"\nurl = \"https://x.example/hook\"\non = [\"failure\", \"stail\"]\n",
                "an item of \"on\" in [[alert]] #1 must be one of \"failure\", \"success\", \"duration\", \"size_anomaly\", \"stale\", \"archive_failed\", \"drift\", \"config_invalid\", \"summary\", not \"stail\" at patina.toml:5:18 — did you mean \"stale\"?",
            ),
            (
                "[[alert]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"https://x.example/hook\"\non = [\"failure\"]\nheaders = { X-Token = \"t\" }\n",
                "\"headers\" are for webhook sinks; \"ops\" is slack at patina.toml:6:1 — remove them, or set kind = \"webhook\"",
            ),
            (
                "[[alert]]\nkind = \"slack\"\nurl = \"https://x.example/hook\"\non = [\"failure\"]\n",
                "missing key \"name\" in [[alert]] #1 at patina.toml:1:1",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&only(text), want, "{text}");
        }
    }

    #[test]
    fn database_problems() {
        let db = |body: &str| {
            format!("[priorities.critical]\nschedule = \"@daily\"\n[[database]]\n{body}")
        };
        let dup = db(
            "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n[[database]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"b.db\"\npriority = \"critical\"\n",
        );
        assert_eq!(
            only(&dup),
            "duplicate database name \"a\" at patina.toml:9:8 — it is already used on line 4; names must be unique"
        );
        assert_eq!(
            only(&db(
                "name = \"a\"\nkind = \"sqlite\"\npriority = \"critical\"\n"
            )),
            "sqlite database \"a\" needs a path at patina.toml:3:1 — add path = \"data/app.db\" (relative to this file)"
        );
        assert_eq!(
            only(&db(
                "name = \"a\"\nkind = \"postgres\"\npath = \"a.db\"\npriority = \"critical\"\n"
            )),
            "\"kind\" in [[database]] #1 must be one of \"sqlite\", \"d1\", not \"postgres\" at patina.toml:5:8"
        );
        assert_eq!(
            only(&db(
                "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"normal\"\n"
            )),
            "priority \"normal\" of database \"a\" is not declared at patina.toml:7:12 — declare [priorities.normal] or use one of \"critical\""
        );
        assert_eq!(
            only(&db(
                "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\nschedule = \"0 3 * * 8\"\n"
            )),
            "invalid cron expression \"0 3 * * 8\": the day-of-week field \"8\" is not valid (expected 0-7 or SUN-SAT, 0 and 7 are Sunday, with * , - /) in \"schedule\" in [[database]] #1 at patina.toml:8:12 — use 5 fields, \"minute hour day-of-month month day-of-week\" (e.g. \"0 3 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly"
        );
        // A d1 database with credentials and a proper id is fine; its mode defaults to export.
        let ok = db(
            "name = \"a\"\nkind = \"d1\"\nid = \"45EAE4C7-8ae7-4078-9218-8e1677a4360f\"\npriority = \"critical\"\nschedule = \"*/30 * * * *\"\n[cloudflare]\naccount_id = \"acc\"\napi_token = \"tok\"\n",
        );
        let p = parse(&ok).unwrap();
        assert_eq!(
            p.databases[0].source,
            SourceSpec::D1 {
                id: "45eae4c7-8ae7-4078-9218-8e1677a4360f".into(),
                mode: D1Mode::Export
            }
        );
        assert!(p.databases[0].schedule_overridden);
        assert_eq!(
            p.cloudflare.unwrap().api_url,
            "https://api.cloudflare.com/client/v4"
        );
    }

    #[test]
    fn a_missing_cloudflare_variable_is_the_only_problem() {
        // The [cloudflare] section is there but unusable: no extra "credentials missing".
        let text = "[priorities.critical]\nschedule = \"@daily\"\n[cloudflare]\naccount_id = \"acc\"\napi_token = \"${CF_API_TOKEN}\"\n[[database]]\nname = \"a\"\nkind = \"d1\"\nid = \"45eae4c7-8ae7-4078-9218-8e1677a4360f\"\npriority = \"critical\"\n";
        assert!(only(text).starts_with(
            "environment variable \"CF_API_TOKEN\" is not set (used by \"api_token\" in [cloudflare]) at patina.toml:5:13"
        ));
    }

    const SECRET: &str = "sup3r-s3cret-v4lue";

    #[test]
    fn secrets_never_appear_in_describe_or_errors() {
        let env = |_: &str| Some(SECRET.to_string());
        let text = r#"
[daemon]
api_token = "${T}"
[storage]
url = "s3://bucket"
access_key_id = "${T}"
secret_access_key = "${T}"
[cloudflare]
account_id = "acc"
api_token = "${T}"
[[alert]]
name = "hook"
kind = "webhook"
url = "https://hooks.example/${T}"
on = ["failure"]
headers = { Authorization = "Bearer ${T}" }
"#;
        let p = from_str(text, "patina.toml", Path::new("/srv"), &env).unwrap();
        let shown = format!("{}\n{p:?}", describe(&p, Utc::now()));
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("api token:    ***"));
        // Broken secrets: the messages must not echo the values either.
        let bad = r#"
[storage]
url = "s3://bucket"
access_key_id = "${T}"
[[alert]]
name = "hook"
kind = "slack"
url = "ftp://${T}"
on = ["failure"]
headers = { Authorization = "Bearer ${T}" }
"#;
        let err = from_str(bad, "patina.toml", Path::new("/srv"), &env).unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert_eq!(err.problems.len(), 3, "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn describe_snapshot() {
        let text = r#"
[daemon]
timezone = "Europe/Berlin"
api_token = "${T}"
[storage]
url = "s3://grove-patina"
endpoint = "https://acc.r2.cloudflarestorage.com"
region = "auto"
prefix = "prod"
[priorities.critical]
schedule = "0 3 * * *"
[priorities.normal]
schedule = "0 4 * * SUN"
[retention]
weekly = "off"
monthly = "12mo"
[cloudflare]
account_id = "acc"
api_token = "${T}"
[[database]]
name = "auth"
kind = "d1"
id = "45eae4c7-8ae7-4078-9218-8e1677a4360f"
priority = "critical"
schedule = "*/30 * * * *"
[[database]]
name = "blog"
kind = "sqlite"
path = "data/blog.db"
priority = "normal"
exclude_tables = ["sessions", "cache"]
[[database]]
name = "old"
kind = "sqlite"
path = "/var/lib/old.db"
priority = "critical"
enabled = false
[alerts]
daily_summary = "0 8 * * *"
[[alert]]
name = "ops"
kind = "discord"
url = "https://discord.example/${T}"
on = ["failure", "stale", "failure"]
"#;
        let env = |_: &str| Some(SECRET.to_string());
        let p = from_str(
            text,
            "/srv/patina/patina.toml",
            Path::new("/srv/patina"),
            &env,
        )
        .unwrap();
        let now = "2026-11-22T12:10:00Z".parse().unwrap();
        let expected = "\
config file:  /srv/patina/patina.toml
storage:      s3://grove-patina
  prefix:     prod/
  compression: zstd
  endpoint:   https://acc.r2.cloudflarestorage.com
  region:     auto
state dir:    /srv/patina/.patina
listen:       127.0.0.1:9477
api token:    ***
timezone:     Europe/Berlin
tick:         1m
concurrency:  3
retention:    daily 1w, weekly off, monthly 12mo
  archive:    0 4 * * SUN  next: 2026-11-29 04:00 CET, 2026-12-06 04:00 CET, 2026-12-13 04:00 CET
cloudflare:   account acc, token ***, api https://api.cloudflare.com/client/v4

databases (3):
  auth
    kind:       d1
    source:     45eae4c7-8ae7-4078-9218-8e1677a4360f (mode export)
    priority:   critical
    schedule:   */30 * * * * (override)
    enabled:    yes
    next:       2026-11-22 13:30 CET, 2026-11-22 14:00 CET, 2026-11-22 14:30 CET
  blog
    kind:       sqlite
    source:     /srv/patina/data/blog.db
    priority:   normal
    schedule:   0 4 * * SUN
    enabled:    yes
    excluded:   sessions, cache
    next:       2026-11-29 04:00 CET, 2026-12-06 04:00 CET, 2026-12-13 04:00 CET
  old
    kind:       sqlite
    source:     /var/lib/old.db
    priority:   critical
    schedule:   0 3 * * *
    enabled:    no

alerts:       max duration 45m, size deviation 0.5, stale after 2 intervals, renotify 1d
  daily summary: 0 8 * * *  next: 2026-11-23 08:00 CET, 2026-11-24 08:00 CET, 2026-11-25 08:00 CET
alert sinks (1):
  ops (discord, url ***): failure, stale
";
        assert_eq!(describe(&p, now), expected);
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("shedule", "schedule"), 1);
        assert_eq!(edit_distance("daemno", "daemon"), 1);
        assert_eq!(
            did_you_mean("zst", &["zstd", "gzip", "none"]).unwrap(),
            "did you mean \"zstd\"?"
        );
        assert_eq!(did_you_mean("bananas", &["url", "prefix"]), None);
    }

    #[test]
    fn spans_parse() {
        assert_eq!(parse_span("30s"), Some(Span::Seconds(30)));
        assert_eq!(parse_span("15m"), Some(Span::Seconds(900)));
        assert_eq!(parse_span("2h"), Some(Span::Seconds(7200)));
        assert_eq!(parse_span("12mo"), Some(Span::Months(12)));
        for bad in ["", "m", "7", "7 d", "7D", "-7d", "1.5h", "7dd"] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
    }
}
