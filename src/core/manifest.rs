//! Object keys and manifests (pure): the storage layout of DESIGN §3.
//!
//! ```text
//! daily/2026-11-22/groveauth/20261122T030012Z.sql.zst         (.sql.zst.age with [encryption])
//! daily/2026-11-22/groveauth/20261122T030012Z.manifest.json   ← written last: commit marker
//! weekly/2026-W47.tar                                          (.tar.gz when compression = none)
//! weekly/2026-W47.manifest.json
//! ```
//!
//! Keys here are relative to the configured prefix. Every key Patina writes is built by a
//! function of this module and read back by [`parse_key`]; a key that does not parse is foreign
//! and is never touched. The date folder is the UTC date of the timestamp, and a key whose
//! folder disagrees with its timestamp is foreign too.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::{self, Layers};
use crate::policy::Compression;

/// The manifest format this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST_SUFFIX: &str = ".manifest.json";
const TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// One dump: a database at an instant (second precision, UTC).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DumpId {
    pub database: String,
    pub taken_at: DateTime<Utc>,
}

impl DumpId {
    /// Truncates `taken_at` to whole seconds, as keys carry it.
    pub fn new(database: impl Into<String>, taken_at: DateTime<Utc>) -> DumpId {
        let taken_at = taken_at.with_nanosecond(0).unwrap_or(taken_at);
        DumpId {
            database: database.into(),
            taken_at,
        }
    }

    /// `YYYY-MM-DD`, the UTC date folder.
    pub fn date(&self) -> String {
        let d = self.taken_at.date_naive();
        if (0..=9999).contains(&d.year()) {
            // What "%Y-%m-%d" writes, without interpreting the format string each time.
            format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
        } else {
            self.taken_at.format("%Y-%m-%d").to_string()
        }
    }

    fn stem(&self) -> String {
        format!(
            "daily/{}/{}/{}",
            self.date(),
            self.database,
            self.taken_at.format(TS_FORMAT)
        )
    }

    /// Key of the dump's data object stored with `layers`.
    pub fn data_key(&self, layers: Layers) -> String {
        format!("{}{}", self.stem(), codec::dump_suffix(layers))
    }

    /// Key of the dump's manifest (the commit marker).
    pub fn manifest_key(&self) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.stem())
    }
}

/// An ISO week (`2026-W47`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsoWeek {
    pub year: i32,
    pub week: u32,
}

impl IsoWeek {
    pub fn of(t: DateTime<Utc>) -> IsoWeek {
        let w = t.iso_week();
        IsoWeek {
            year: w.year(),
            week: w.week(),
        }
    }

    /// Monday 00:00 UTC of the week, or `None` for a week that does not exist.
    pub fn start(&self) -> Option<DateTime<Utc>> {
        let monday = NaiveDate::from_isoywd_opt(self.year, self.week, chrono::Weekday::Mon)?;
        Some(Utc.from_utc_datetime(&monday.and_hms_opt(0, 0, 0)?))
    }

    /// Key of the week's archive of dumps stored with `compression` (`.tar`, or `.tar.gz` for
    /// uncompressed dumps: see [`codec::archive_compression`]).
    pub fn archive_key(&self, compression: Compression) -> String {
        format!("weekly/{self}{}", codec::archive_suffix(compression))
    }

    pub fn manifest_key(&self) -> String {
        format!("weekly/{self}{MANIFEST_SUFFIX}")
    }
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

/// What a key is, when Patina wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    DumpData {
        id: DumpId,
        layers: Layers,
    },
    DumpManifest {
        id: DumpId,
    },
    ArchiveData {
        week: IsoWeek,
        /// True for `.tar.gz`.
        gzipped: bool,
    },
    ArchiveManifest {
        week: IsoWeek,
    },
}

/// The manifest key that commits the data object `data_key` (a dump or an archive); `None`
/// for any other key.
pub fn manifest_key_for(data_key: &str) -> Option<String> {
    match parse_key(data_key)? {
        ParsedKey::DumpData { id, .. } => Some(id.manifest_key()),
        ParsedKey::ArchiveData { week, .. } => Some(week.manifest_key()),
        _ => None,
    }
}

/// Parse a key relative to the prefix; `None` means foreign (not written by Patina).
pub fn parse_key(key: &str) -> Option<ParsedKey> {
    if let Some(rest) = key.strip_prefix("daily/") {
        return parse_daily(rest);
    }
    if let Some(rest) = key.strip_prefix("weekly/") {
        return parse_weekly(rest);
    }
    None
}

fn parse_daily(rest: &str) -> Option<ParsedKey> {
    let mut parts = rest.split('/');
    let (date, database, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_database_name(database) {
        return None;
    }
    let (ts, kind) = if let Some(ts) = file.strip_suffix(MANIFEST_SUFFIX) {
        (ts, None)
    } else {
        let (ts, layers) = Layers::ALL
            .into_iter()
            .find_map(|l| file.strip_suffix(codec::dump_suffix(l)).map(|ts| (ts, l)))?;
        (ts, Some(layers))
    };
    let taken_at = parse_canonical_ts(ts, date)?;
    let id = DumpId {
        database: database.to_string(),
        taken_at,
    };
    Some(match kind {
        None => ParsedKey::DumpManifest { id },
        Some(layers) => ParsedKey::DumpData { id, layers },
    })
}

/// `YYYYMMDDTHHMMSSZ` in its canonical form (what `TS_FORMAT` writes), in the date folder
/// `YYYY-MM-DD` of the same day; `None` otherwise. The same answer as parsing with chrono and
/// checking that both format back to the same text, without the format-string interpretation
/// (a reconcile pass parses every key of the listing).
fn parse_canonical_ts(ts: &str, date: &str) -> Option<DateTime<Utc>> {
    let t = ts.as_bytes();
    let d = date.as_bytes();
    if t.len() != 16
        || t[8] != b'T'
        || t[15] != b'Z'
        || d.len() != 10
        || d[4] != b'-'
        || d[7] != b'-'
    {
        return None;
    }
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    if d[..4] != t[..4] || d[5..7] != t[4..6] || d[8..10] != t[6..8] {
        return None;
    }
    let year = i32::try_from(digits(&t[..4])?).ok()?;
    let day = NaiveDate::from_ymd_opt(year, digits(&t[4..6])?, digits(&t[6..8])?)?;
    let (hour, minute, second) = (digits(&t[9..11])?, digits(&t[11..13])?, digits(&t[13..15])?);
    // chrono reads (and writes back) second 60 as a leap second.
    let time = if second == 60 {
        chrono::NaiveTime::from_hms_milli_opt(hour, minute, 59, 1000)?
    } else {
        chrono::NaiveTime::from_hms_opt(hour, minute, second)?
    };
    Some(NaiveDateTime::new(day, time).and_utc())
}

fn parse_weekly(file: &str) -> Option<ParsedKey> {
    let (stem, kind) = if let Some(s) = file.strip_suffix(MANIFEST_SUFFIX) {
        (s, None)
    } else if let Some(s) = file.strip_suffix(".tar.gz") {
        (s, Some(true))
    } else {
        (file.strip_suffix(".tar")?, Some(false))
    };
    let (year, week) = stem.split_once("-W")?;
    if year.len() != 4 || week.len() != 2 {
        return None;
    }
    let week = IsoWeek {
        year: year.parse().ok()?,
        week: week.parse().ok()?,
    };
    week.start()?;
    Some(match kind {
        None => ParsedKey::ArchiveManifest { week },
        Some(gzipped) => ParsedKey::ArchiveData { week, gzipped },
    })
}

/// `[a-z0-9][a-z0-9_-]*` — the rule for database names, which become part of keys.
pub fn valid_database_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Scheduled,
    Manual,
    CatchUp,
    /// The safety backup of a D1 database taken just before `patina restore --to-d1` replaces
    /// its tables.
    PreRestore,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Manual => "manual",
            Trigger::CatchUp => "catch-up",
            Trigger::PreRestore => "pre-restore",
        }
    }
}

/// Where a dump came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceFacts {
    Sqlite {
        path: String,
    },
    D1 {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bookmark: Option<String>,
    },
}

/// What Patina checked about a D1 copy before storing it, and what it repaired (DESIGN §12).
///
/// D1's exporter is lossy (integers beyond ±2^53, `-0.0`, integral REALs, backslash-n in text,
/// NUL): after loading an export Patina asks D1 for exactly the values the export cannot carry
/// and repairs those rows from `/query`, or re-reads the whole table in query mode. In query mode
/// every table is read exactly, so nothing needs repairing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Whether the copy was checked against the database (always true for new D1 backups).
    pub checked: bool,
    /// Values the export carried wrongly, repaired row by row from `/query`.
    pub repaired_values: u64,
    /// Tables read through `/query` instead of the export (all of them in query mode).
    pub tables_from_query: Vec<String>,
    /// Why export mode read the whole database in query mode for this backup, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// How a dump's stored bytes are sealed (DESIGN §14): `{"kind": "age", "recipients": [..]}`.
/// The recipients are fingerprints (`age1…` for age keys, `SHA256:…` for ssh keys: see
/// [`crate::keys`]), public facts that tell an operator which identity opens the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub kind: EncryptionKind,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionKind {
    Age,
}

impl Encryption {
    /// Sealed with age for recipients with these fingerprints.
    pub fn age(recipients: Vec<String>) -> Encryption {
        Encryption {
            kind: EncryptionKind::Age,
            recipients,
        }
    }

    /// `age for age1…, SHA256:…`: for messages and listings.
    pub fn describe(&self) -> String {
        format!("age for {}", self.recipients.join(", "))
    }
}

/// The manifest of one dump: the commit marker and everything needed to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub database: String,
    /// Always `daily` for dumps.
    pub tier: String,
    /// Data object key, relative to the prefix.
    pub key: String,
    /// sha256 (hex) of the stored bytes.
    pub sha256: String,
    /// Size of the stored bytes.
    pub size: u64,
    #[serde(with = "compression_serde")]
    pub compression: Compression,
    /// Present when the stored bytes are sealed (after compression); absent for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Size of the SQL before compression.
    pub sql_bytes: u64,
    /// Dumped tables and their row counts.
    pub tables: BTreeMap<String, u64>,
    pub table_count: u64,
    pub row_count: u64,
    pub schema_hash: String,
    /// Per table (and view): sha256 of its own schema objects (the table, its indexes and
    /// triggers), so a changed `schema_hash` can name the tables altered (`schema_changed`).
    /// Absent in manifests written before it was added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub table_schema_hashes: BTreeMap<String, String>,
    pub source: SourceFacts,
    /// D1 backups only: what was checked and repaired (absent in manifests before wave 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Fidelity>,
    pub job_id: String,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub patina_version: String,
    /// With `[cluster]`: the generation of the database lease this backup was taken under
    /// (DESIGN §16). Absent for a single daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_generation: Option<u64>,
}

impl Manifest {
    /// The layers of the stored bytes, as the manifest records them.
    pub fn layers(&self) -> Layers {
        Layers {
            compression: self.compression,
            encrypted: self.encryption.is_some(),
        }
    }

    /// The dump this manifest commits, from its data key.
    pub fn dump_id(&self) -> Option<DumpId> {
        match parse_key(&self.key)? {
            ParsedKey::DumpData { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parse and check a manifest read from `manifest_key`.
    pub fn from_json(bytes: &[u8], manifest_key: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError {
            key: manifest_key.to_string(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| ManifestError {
            key: manifest_key.to_string(),
            reason,
        };
        if m.format > FORMAT_VERSION {
            return Err(bad(format!(
                "format {} is newer than this patina understands ({FORMAT_VERSION}) — upgrade patina",
                m.format
            )));
        }
        let id = m
            .dump_id()
            .ok_or_else(|| bad(format!("data key {:?} is not a dump key", m.key)))?;
        if id.manifest_key() != manifest_key || id.database != m.database {
            return Err(bad(format!(
                "it describes {:?}, which does not belong to this manifest",
                m.key
            )));
        }
        if m.key != id.data_key(m.layers()) {
            return Err(bad(format!(
                "its data key {:?} does not match its compression {:?} and encryption ({})",
                m.key,
                m.compression.as_str(),
                m.encryption
                    .as_ref()
                    .map_or("none".to_string(), Encryption::describe)
            )));
        }
        Ok(m)
    }
}

/// One dump inside a weekly archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveMember {
    pub database: String,
    /// The daily key the dump was archived from.
    pub dump_key: String,
    /// The member's path inside the tar: the daily key without `daily/`.
    pub path: String,
    /// sha256 (hex) and size of the member's bytes (equal to the daily object's).
    pub sha256: String,
    pub size: u64,
    pub taken_at: DateTime<Utc>,
    /// The dump's encryption, as its manifest records it (absent for plaintext members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// The manifest of a weekly archive (`weekly/YYYY-Www.manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveManifest {
    pub format: u32,
    /// Always `weekly`.
    pub tier: String,
    /// `2026-W47`.
    pub week: String,
    /// Archive object key, relative to the prefix.
    pub key: String,
    /// sha256 (hex) and size of the stored archive.
    pub sha256: String,
    pub size: u64,
    /// Dumps in the archive (their manifests are members too, beside them).
    pub members: Vec<ArchiveMember>,
    pub job_id: String,
    pub created_at: DateTime<Utc>,
    pub patina_version: String,
    /// With `[cluster]`: the generation of the maintenance lease it was built under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_generation: Option<u64>,
}

impl ArchiveManifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// The week this manifest describes, checked against the key it was read from.
    pub fn from_json(bytes: &[u8], manifest_key: &str) -> Result<ArchiveManifest, ManifestError> {
        let bad = |reason: String| ManifestError {
            key: manifest_key.to_string(),
            reason,
        };
        let m: ArchiveManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format > FORMAT_VERSION {
            return Err(bad(format!(
                "format {} is newer than this patina understands ({FORMAT_VERSION}) — upgrade patina",
                m.format
            )));
        }
        match (parse_key(&m.key), parse_key(manifest_key)) {
            (
                Some(ParsedKey::ArchiveData { week, .. }),
                Some(ParsedKey::ArchiveManifest { week: w2 }),
            ) if week == w2 && week.to_string() == m.week => Ok(m),
            _ => Err(bad(format!(
                "it describes {:?}, which does not belong to this manifest",
                m.key
            ))),
        }
    }
}

/// The tar member path of a dump key (`daily/2026-11-22/db/ts.sql.zst` → `2026-11-22/db/ts.sql.zst`).
pub fn archive_member_path(dump_key: &str) -> &str {
    dump_key.strip_prefix("daily/").unwrap_or(dump_key)
}

/// A manifest that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("read manifest {key}: {reason}")]
pub struct ManifestError {
    pub key: String,
    pub reason: String,
}

mod compression_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::policy::Compression;

    pub fn serialize<S: Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
        let s = String::deserialize(d)?;
        Compression::parse(&s).ok_or_else(|| D::Error::custom(format!("unknown compression {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn dump_keys_follow_the_layout() {
        let id = DumpId::new("groveauth", t("2026-11-22T03:00:12.345Z"));
        assert_eq!(
            id.data_key(Layers::plain(Compression::Zstd)),
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.zst"
        );
        assert_eq!(
            id.data_key(Layers::sealed(Compression::Zstd)),
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.zst.age"
        );
        assert_eq!(
            id.data_key(Layers::sealed(Compression::None)),
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.age"
        );
        assert_eq!(
            id.manifest_key(),
            "daily/2026-11-22/groveauth/20261122T030012Z.manifest.json"
        );
        assert_eq!(
            id.data_key(Layers::plain(Compression::Gzip)),
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.gz"
        );
        assert_eq!(
            id.data_key(Layers::plain(Compression::None)),
            "daily/2026-11-22/groveauth/20261122T030012Z.sql"
        );
    }

    #[test]
    fn keys_round_trip() {
        let id = DumpId::new("scout-db", t("2026-01-01T00:00:00Z"));
        for layers in Layers::ALL {
            assert_eq!(
                parse_key(&id.data_key(layers)),
                Some(ParsedKey::DumpData {
                    id: id.clone(),
                    layers
                })
            );
        }
        assert_eq!(
            parse_key(&id.manifest_key()),
            Some(ParsedKey::DumpManifest { id: id.clone() })
        );
        let week = IsoWeek::of(t("2026-11-22T03:00:00Z"));
        assert_eq!(week.to_string(), "2026-W47");
        assert_eq!(week.archive_key(Compression::Zstd), "weekly/2026-W47.tar");
        assert_eq!(
            week.archive_key(Compression::None),
            "weekly/2026-W47.tar.gz"
        );
        assert_eq!(
            parse_key(&week.archive_key(Compression::Zstd)),
            Some(ParsedKey::ArchiveData {
                week,
                gzipped: false
            })
        );
        assert_eq!(
            parse_key(&week.manifest_key()),
            Some(ParsedKey::ArchiveManifest { week })
        );
    }

    #[test]
    fn foreign_keys_do_not_parse() {
        for key in [
            "README.txt",
            "daily/2026-11-22/groveauth.sql",
            "daily/2026-11-22/groveauth/notatime.sql.zst",
            "daily/2026-11-21/groveauth/20261122T030012Z.sql.zst", // folder disagrees
            "daily/2026-11-22/Grove/20261122T030012Z.sql.zst",     // bad name
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.bz2",
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.zst.gpg",
            "daily/2026-11-22/groveauth/20261122T030012Z.age",
            "daily/2026-11-22/groveauth/20261122T030012Z.sql.zst.age.age",
            "daily/2026-11-22/groveauth/x/20261122T030012Z.sql",
            "weekly/2026-W54.tar",
            "weekly/2026-W7.tar",
            "weekly/2026-W47.zip",
            "2024-12-08/groveauth.sql",
        ] {
            assert_eq!(parse_key(key), None, "{key}");
        }
    }

    /// The hand-written timestamp parser answers as chrono's parse + round-trip check did.
    #[test]
    fn canonical_timestamps_as_chrono() {
        let chrono_way = |ts: &str, date: &str| {
            let at = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?.and_utc();
            (at.format("%Y-%m-%d").to_string() == date && at.format(TS_FORMAT).to_string() == ts)
                .then_some(at)
        };
        for (ts, date) in [
            ("20261122T030012Z", "2026-11-22"),
            ("20261122T030012Z", "2026-11-21"),
            ("20260229T000000Z", "2026-02-29"),
            ("20240229T235959Z", "2024-02-29"),
            ("20261122T240000Z", "2026-11-22"),
            ("20261122T235960Z", "2026-11-22"),
            ("20261122T031060Z", "2026-11-22"),
            ("20261122T031061Z", "2026-11-22"),
            ("20261322T000000Z", "2026-13-22"),
            ("20261100T000000Z", "2026-11-00"),
            ("2026112T0300120Z", "2026-11-2"),
            ("20261122T030012z", "2026-11-22"),
            ("20261122 030012Z", "2026-11-22"),
            ("+2026112T030012Z", "+202-61-12"),
            ("2026112+T030012Z", "2026-11-2+"),
            ("00000101T000000Z", "0000-01-01"),
            ("99991231T235959Z", "9999-12-31"),
            ("20261122T030012Z", "2026/11/22"),
            ("20261122T03001Z", "2026-11-22"),
            ("202611220T30012Z", "2026-11-22"),
            ("20261122T0300١Z", "2026-11-22"),
        ] {
            assert_eq!(
                parse_canonical_ts(ts, date),
                chrono_way(ts, date),
                "{ts} in {date}"
            );
        }
        for at in [
            "0001-01-01T00:00:00Z",
            "2026-11-22T03:00:12Z",
            "9999-12-31T23:59:59Z",
        ] {
            let id = DumpId::new("db", t(at));
            assert_eq!(id.date(), id.taken_at.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn iso_weeks_cross_years() {
        let w = IsoWeek::of(t("2027-01-01T12:00:00Z"));
        assert_eq!(w.to_string(), "2026-W53");
        assert_eq!(w.start(), Some(t("2026-12-28T00:00:00Z")));
    }

    #[test]
    fn database_names() {
        assert!(valid_database_name("groveauth"));
        assert!(valid_database_name("scout-db_2"));
        assert!(valid_database_name("0day"));
        assert!(!valid_database_name(""));
        assert!(!valid_database_name("-x"));
        assert!(!valid_database_name("Grove"));
        assert!(!valid_database_name("a/b"));
    }

    fn sample() -> Manifest {
        let id = DumpId::new("demo-app", t("2026-11-22T03:00:12Z"));
        Manifest {
            format: FORMAT_VERSION,
            database: "demo-app".into(),
            tier: "daily".into(),
            key: id.data_key(Layers::plain(Compression::Zstd)),
            sha256: "ab".repeat(32),
            size: 1234,
            compression: Compression::Zstd,
            encryption: None,
            sql_bytes: 9999,
            tables: BTreeMap::from([("users".to_string(), 3)]),
            table_count: 1,
            row_count: 3,
            schema_hash: "cd".repeat(32),
            table_schema_hashes: BTreeMap::new(),
            source: SourceFacts::Sqlite {
                path: "/srv/demo.db".into(),
            },
            fidelity: None,
            job_id: "job-1".into(),
            trigger: Trigger::CatchUp,
            started_at: t("2026-11-22T03:00:12Z"),
            completed_at: t("2026-11-22T03:00:13Z"),
            patina_version: "0.1.0".into(),
            lease_generation: None,
        }
    }

    #[test]
    fn manifest_round_trips_and_checks_its_key() {
        let m = sample();
        let key = m.dump_id().unwrap().manifest_key();
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"trigger\": \"catch-up\""), "{text}");
        assert!(text.contains("\"compression\": \"zstd\""), "{text}");
        assert_eq!(Manifest::from_json(&json, &key).unwrap(), m);

        let err = Manifest::from_json(
            &json,
            "daily/2026-11-22/other/20261122T030012Z.manifest.json",
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");

        let mut newer = sample();
        newer.format = FORMAT_VERSION + 1;
        let err = Manifest::from_json(&newer.to_json(), &key).unwrap_err();
        assert!(err.to_string().contains("upgrade patina"), "{err}");

        let err = Manifest::from_json(b"{not json", &key).unwrap_err();
        assert!(err.to_string().starts_with("read manifest daily/"), "{err}");
    }

    #[test]
    fn an_encrypted_manifest_records_its_recipients_and_matches_its_key() {
        let mut m = sample();
        let id = m.dump_id().unwrap();
        m.key = id.data_key(Layers::sealed(Compression::Zstd));
        m.encryption = Some(Encryption::age(vec!["age1abc".into(), "SHA256:xyz".into()]));
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.contains("\"encryption\": {\n    \"kind\": \"age\",\n    \"recipients\": [\n      \"age1abc\",\n      \"SHA256:xyz\"\n    ]\n  }"),
            "{text}"
        );
        assert_eq!(Manifest::from_json(&json, &id.manifest_key()).unwrap(), m);
        assert_eq!(m.layers(), Layers::sealed(Compression::Zstd));

        // A plaintext manifest has no "encryption" at all (manifests before it stay readable).
        let plain = sample();
        assert!(
            !String::from_utf8(plain.to_json())
                .unwrap()
                .contains("encryption")
        );

        // Key and manifest must agree on the layers.
        let mut lying = m.clone();
        lying.encryption = None;
        let err = Manifest::from_json(&lying.to_json(), &id.manifest_key()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let mut lying = sample();
        lying.encryption = Some(Encryption::age(vec!["age1abc".into()]));
        assert!(Manifest::from_json(&lying.to_json(), &id.manifest_key()).is_err());
        let unknown = text.replace("\"kind\": \"age\"", "\"kind\": \"gpg\"");
        assert!(Manifest::from_json(unknown.as_bytes(), &id.manifest_key()).is_err());
    }
}
