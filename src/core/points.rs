//! Restore points (DESIGN §13): every committed dump, whether it lives as a daily object or as
//! a member of a weekly archive, and the choice of one by `--at`.
//!
//! Pure: the engine lists the bucket and reads the archive manifests; this module merges them
//! into one time line per database and picks from it. A dump whose daily object is still
//! present is one point (its daily copy is read first, the cheaper fetch), even when an archive
//! holds it too.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::inventory::{CommittedArchive, Inventory};
use crate::manifest::{ArchiveManifest, ArchiveMember};

/// Where a restore point's stored bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A daily object and its manifest.
    Daily {
        data_key: String,
        manifest_key: String,
    },
    /// A member of a weekly archive (its daily copy pruned).
    Archived {
        archive_key: String,
        archive_manifest_key: String,
        member: ArchiveMember,
    },
}

/// One committed dump that can be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub database: String,
    /// When the dump started (the time in its key).
    pub taken_at: DateTime<Utc>,
    /// Size of the stored bytes.
    pub size: u64,
    pub place: Place,
}

impl RestorePoint {
    /// `daily` or `weekly`: the tier the point lives in now.
    pub fn tier(&self) -> &'static str {
        match self.place {
            Place::Daily { .. } => "daily",
            Place::Archived { .. } => "weekly",
        }
    }

    /// The daily key the dump was written under (also for an archived one: its archive member
    /// records it). Unique per restore point.
    pub fn dump_key(&self) -> &str {
        match &self.place {
            Place::Daily { data_key, .. } => data_key,
            Place::Archived { member, .. } => &member.dump_key,
        }
    }

    /// Where it lives, for people: `daily/…` or `weekly/2026-W47.tar:2026-11-20/db/….sql.zst`.
    pub fn location(&self) -> String {
        match &self.place {
            Place::Daily { data_key, .. } => data_key.clone(),
            Place::Archived {
                archive_key,
                member,
                ..
            } => format!("{archive_key}:{}", member.path),
        }
    }
}

/// Every restore point in a listing, oldest first (ties by database name): the committed
/// dumps, then the members of `archives` whose daily copy is gone. `archives` pairs each
/// committed archive with its manifest; archives whose manifest could not be read are simply
/// absent (their points are not offered, never invented).
pub fn restore_points(
    inventory: &Inventory,
    archives: &[(CommittedArchive, ArchiveManifest)],
) -> Vec<RestorePoint> {
    let mut points: Vec<RestorePoint> = inventory
        .dumps
        .iter()
        .map(|d| RestorePoint {
            database: d.id.database.clone(),
            taken_at: d.id.taken_at,
            size: d.data.size,
            place: Place::Daily {
                data_key: d.data.key.clone(),
                manifest_key: d.manifest_key.clone(),
            },
        })
        .collect();
    let mut seen: BTreeSet<String> = points.iter().map(|p| p.dump_key().to_string()).collect();
    for (archive, manifest) in archives {
        for member in &manifest.members {
            if !seen.insert(member.dump_key.clone()) {
                continue;
            }
            points.push(RestorePoint {
                database: member.database.clone(),
                taken_at: member.taken_at,
                size: member.size,
                place: Place::Archived {
                    archive_key: archive.data.key.clone(),
                    archive_manifest_key: archive.manifest_key.clone(),
                    member: member.clone(),
                },
            });
        }
    }
    points.sort_by(|a, b| (a.taken_at, &a.database).cmp(&(b.taken_at, &b.database)));
    points
}

/// Which restore point `--at` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The newest.
    Latest,
    /// The newest taken on this UTC date.
    Date(NaiveDate),
    /// The newest taken at or before this time.
    Time(DateTime<Utc>),
}

impl At {
    /// The newest point of `database` in `points` (oldest first) that this selects.
    pub fn pick<'a>(&self, points: &'a [RestorePoint], database: &str) -> Option<&'a RestorePoint> {
        points.iter().rfind(|p| {
            p.database == database
                && match *self {
                    At::Latest => true,
                    At::Date(d) => p.taken_at.date_naive() == d,
                    At::Time(t) => p.taken_at <= t,
                }
        })
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Latest => f.write_str("latest"),
            At::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            At::Time(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ")),
        }
    }
}

/// What `--at` accepts, for error messages and help.
pub const AT_FORMATS: &str = "\"latest\", a UTC date (2026-11-20: that day's newest), or a time \
     (2026-11-20T14:00Z, \"2026-11-20 14:00\" in UTC, or RFC 3339 with an offset: the newest at or before it)";

impl std::str::FromStr for At {
    type Err = String;

    fn from_str(s: &str) -> Result<At, String> {
        let s = s.trim();
        if s == "latest" {
            return Ok(At::Latest);
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(At::Date(d));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(At::Time(t.with_timezone(&Utc)));
        }
        // Without seconds or without an offset: minutes precision, `Z` or nothing meaning UTC.
        let naive = s.strip_suffix('Z').unwrap_or(s).replace('T', " ");
        for format in ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(&naive, format) {
                return Ok(At::Time(t.and_utc()));
            }
        }
        // An offset without seconds: `2026-11-20T14:00+02:00`.
        for format in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M%:z"] {
            if let Ok(t) = DateTime::parse_from_str(s, format) {
                return Ok(At::Time(t.with_timezone(&Utc)));
            }
        }
        Err(format!("expected {AT_FORMATS}; got {s:?}"))
    }
}

/// The restore points a drill checks (DESIGN §13): for each of `databases`, its newest point
/// and `sample` of its older ones (daily and archived alike) chosen at random from `seed`.
/// Newest first per database, databases in the given order.
pub fn drill_sample<'a>(
    points: &'a [RestorePoint],
    databases: &[String],
    sample: u32,
    seed: u64,
) -> Vec<&'a RestorePoint> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::new();
    for db in databases {
        let mut mine: Vec<&RestorePoint> = points.iter().filter(|p| &p.database == db).collect();
        let Some(newest) = mine.pop() else { continue };
        out.push(newest);
        // A partial Fisher–Yates shuffle: the first `sample` of `mine` become a uniform choice.
        let take = (sample as usize).min(mine.len());
        for i in 0..take {
            let j = i + (rng.next() % (mine.len() - i) as u64) as usize;
            mine.swap(i, j);
        }
        let mut chosen = mine[..take].to_vec();
        chosen.sort_by_key(|p| std::cmp::Reverse(p.taken_at));
        out.extend(chosen);
    }
    out
}

/// A small, well-mixed generator for sampling (not for secrets).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ObjectInfo;
    use crate::manifest::DumpId;
    use crate::policy::Compression;

    fn obj(key: String, size: u64) -> ObjectInfo {
        ObjectInfo {
            key,
            size,
            last_modified: "2026-11-22T03:00:00Z".parse().unwrap(),
            etag: None,
        }
    }

    fn member(db: &str, at: &str) -> ArchiveMember {
        let id = DumpId::new(db, at.parse().unwrap());
        let key = id.data_key(crate::codec::Layers::plain(Compression::Zstd));
        ArchiveMember {
            database: db.into(),
            path: key.trim_start_matches("daily/").to_string(),
            dump_key: key,
            sha256: "00".repeat(32),
            size: 7,
            taken_at: at.parse().unwrap(),
            encryption: None,
        }
    }

    fn archive(week: &str, members: Vec<ArchiveMember>) -> (CommittedArchive, ArchiveManifest) {
        let key = format!("weekly/{week}.tar");
        let manifest_key = format!("weekly/{week}.manifest.json");
        let inv = Inventory::classify(vec![obj(key.clone(), 100), obj(manifest_key, 1)]);
        let committed = inv.archives[0].clone();
        let manifest = ArchiveManifest {
            format: 1,
            tier: "weekly".into(),
            week: week.into(),
            key,
            sha256: "11".repeat(32),
            size: 100,
            members,
            job_id: "j".into(),
            created_at: "2026-11-23T00:00:00Z".parse().unwrap(),
            patina_version: "test".into(),
            lease_generation: None,
        };
        (committed, manifest)
    }

    fn points() -> Vec<RestorePoint> {
        // Week 46 archived (its dailies pruned but one); week 47 still daily.
        let kept = DumpId::new("app", "2026-11-15T03:00:00Z".parse().unwrap());
        let fresh = DumpId::new("app", "2026-11-20T03:00:00Z".parse().unwrap());
        let noon = DumpId::new("app", "2026-11-20T12:00:00Z".parse().unwrap());
        let inv = Inventory::classify(vec![
            obj(
                kept.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                7,
            ),
            obj(kept.manifest_key(), 1),
            obj(
                fresh.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                9,
            ),
            obj(fresh.manifest_key(), 1),
            obj(
                noon.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                9,
            ),
            obj(noon.manifest_key(), 1),
        ]);
        let w46 = archive(
            "2026-W46",
            vec![
                member("app", "2026-11-10T03:00:00Z"),
                member("app", "2026-11-12T03:00:00Z"),
                member("other", "2026-11-12T03:00:00Z"),
                member("app", "2026-11-15T03:00:00Z"),
            ],
        );
        restore_points(&inv, &[w46])
    }

    #[test]
    fn archived_members_and_dailies_form_one_time_line() {
        let p = points();
        let app: Vec<(String, &str)> = p
            .iter()
            .filter(|p| p.database == "app")
            .map(|p| (p.taken_at.format("%m-%d %H").to_string(), p.tier()))
            .collect();
        assert_eq!(
            app,
            vec![
                ("11-10 03".to_string(), "weekly"),
                ("11-12 03".to_string(), "weekly"),
                // Still a daily object: one point, read from its daily copy.
                ("11-15 03".to_string(), "daily"),
                ("11-20 03".to_string(), "daily"),
                ("11-20 12".to_string(), "daily"),
            ]
        );
        let archived = &p[0];
        assert_eq!(
            archived.location(),
            "weekly/2026-W46.tar:2026-11-10/app/20261110T030000Z.sql.zst"
        );
        assert_eq!(p.iter().filter(|p| p.database == "other").count(), 1);
    }

    #[test]
    fn at_picks_the_newest_point_at_or_before() {
        let p = points();
        let pick = |at: &str| {
            at.parse::<At>()
                .unwrap()
                .pick(&p, "app")
                .map(|p| p.taken_at.to_rfc3339())
        };
        assert_eq!(pick("latest").unwrap(), "2026-11-20T12:00:00+00:00");
        assert_eq!(pick("2026-11-20").unwrap(), "2026-11-20T12:00:00+00:00");
        assert_eq!(pick("2026-11-12").unwrap(), "2026-11-12T03:00:00+00:00");
        assert_eq!(pick("2026-11-11"), None, "no point taken that day");
        // An incident at 11:59 needs the point before it, not the day's newest.
        assert_eq!(
            pick("2026-11-20T11:59Z").unwrap(),
            "2026-11-20T03:00:00+00:00"
        );
        assert_eq!(
            pick("2026-11-20 12:00").unwrap(),
            "2026-11-20T12:00:00+00:00"
        );
        assert_eq!(
            pick("2026-11-20T13:00:00+02:00").unwrap(),
            "2026-11-20T03:00:00+00:00"
        );
        assert_eq!(
            pick("2026-11-13T00:00Z").unwrap(),
            "2026-11-12T03:00:00+00:00"
        );
        assert_eq!(pick("2026-11-01T00:00Z"), None, "before the first point");
        assert_eq!(
            "other".parse::<At>().unwrap_err(),
            format!("expected {AT_FORMATS}; got \"other\"")
        );
    }

    #[test]
    fn drills_take_the_newest_and_a_random_sample_of_older_points() {
        let p = points();
        let dbs = vec!["app".to_string(), "other".to_string(), "gone".to_string()];
        let mut seen_older = BTreeSet::new();
        for seed in 0..200 {
            let picked = drill_sample(&p, &dbs, 2, seed);
            // app: newest + 2 of its 4 older points; other: its only point; gone: nothing.
            assert_eq!(picked.len(), 4, "seed {seed}");
            assert_eq!(picked[0].taken_at.to_rfc3339(), "2026-11-20T12:00:00+00:00");
            assert!(
                picked[1].taken_at > picked[2].taken_at,
                "older ones newest first"
            );
            assert_ne!(picked[1].dump_key(), picked[2].dump_key(), "no point twice");
            assert_eq!(picked[3].database, "other");
            for q in &picked[1..3] {
                assert_eq!(q.database, "app");
                seen_older.insert(q.dump_key().to_string());
            }
        }
        // Every older point, archived ones included, gets drilled by some seed.
        assert_eq!(seen_older.len(), 4, "{seen_older:?}");
        assert_eq!(
            drill_sample(&p, &dbs, 0, 1).len(),
            2,
            "sample 0: newest only"
        );
        assert_eq!(
            drill_sample(&p, &dbs, 50, 1).len(),
            6,
            "sample larger than the history"
        );
    }

    #[test]
    fn at_accepts_the_documented_shapes() {
        let t = |s: &str| match s.parse::<At>().unwrap() {
            At::Time(t) => t.to_rfc3339(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(t("2026-11-20T14:00Z"), "2026-11-20T14:00:00+00:00");
        assert_eq!(t("2026-11-20T14:00"), "2026-11-20T14:00:00+00:00");
        assert_eq!(t("2026-11-20 14:00"), "2026-11-20T14:00:00+00:00");
        assert_eq!(t("2026-11-20 14:00:30"), "2026-11-20T14:00:30+00:00");
        assert_eq!(t("2026-11-20T14:00:00-05:00"), "2026-11-20T19:00:00+00:00");
        assert_eq!(t("2026-11-20T14:00+01:00"), "2026-11-20T13:00:00+00:00");
        for bad in ["2026-13-01", "2026-11-20T25:00Z", "yesterday", ""] {
            assert!(bad.parse::<At>().is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            "2026-11-20T14:00Z".parse::<At>().unwrap().to_string(),
            "2026-11-20T14:00:00Z"
        );
    }
}
