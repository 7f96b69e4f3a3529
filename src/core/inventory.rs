//! The inventory: what really sits in object storage, as typed facts.
//!
//! One listing of the prefix is classified (purely) into committed dumps (data object and
//! manifest both present), debris (a data object without its manifest — a crash mid-upload, or a
//! backup in flight), orphaned manifests (a manifest whose data object is gone: drift), weekly
//! archives, and foreign keys that Patina did not write and never touches.
//!
//! Pure: the listing comes in as [`ObjectInfo`]s (the storage adapters produce them), and the
//! engine's `bucket` module does the I/O (listing, reading manifests). `plan` and `retention`
//! decide from these types alone.

use std::collections::{BTreeMap, HashMap};

use std::fmt;

use chrono::{DateTime, Utc};

use crate::manifest::{DumpId, IsoWeek, ParsedKey, parse_key};

/// An object's version tag as the backend gave it (quotes included): opaque, compared only
/// for equality and handed back in a replace-if-etag write (`store::PutMode::Replace`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    pub fn new(tag: impl Into<String>) -> ETag {
        ETag(tag.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One object in a listing or a `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// From a storage backend, the whole key; from a `Store`, relative to its prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// `None` where the backend reports none (some S3 servers in listings).
    pub etag: Option<ETag>,
}

/// A dump whose data object and manifest are both present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedDump {
    pub id: DumpId,
    pub data: ObjectInfo,
    pub manifest_key: String,
}

/// A weekly archive (data and manifest present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedArchive {
    pub week: IsoWeek,
    pub data: ObjectInfo,
    pub manifest_key: String,
}

/// Where several daemons keep their heartbeats, leases and claims: Patina's own objects, but
/// neither backups nor foreign.
pub const COORDINATION: [&str; 3] = ["nodes/", "leases/", "claims/"];

/// A classified listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Committed dumps, oldest first.
    pub dumps: Vec<CommittedDump>,
    pub archives: Vec<CommittedArchive>,
    /// Data objects without a manifest.
    pub debris: Vec<ObjectInfo>,
    /// Manifests without their data object.
    pub orphaned_manifests: Vec<String>,
    /// Keys Patina did not write.
    pub foreign: Vec<String>,
}

impl Inventory {
    /// Classify a complete listing.
    pub fn classify(objects: Vec<ObjectInfo>) -> Inventory {
        let mut inv = Inventory::default();
        // Hash maps (the dumps are sorted at the end): a listing of 100,000 objects compared
        // database names for every step down a B-tree.
        let mut dump_data: HashMap<DumpId, ObjectInfo> = HashMap::with_capacity(objects.len() / 2);
        let mut dump_manifests: HashMap<DumpId, String> = HashMap::with_capacity(objects.len() / 2);
        let mut archive_data: BTreeMap<IsoWeek, ObjectInfo> = BTreeMap::new();
        let mut archive_manifests: BTreeMap<IsoWeek, String> = BTreeMap::new();
        for object in objects {
            match parse_key(&object.key) {
                Some(ParsedKey::DumpData { id, .. }) => {
                    // Two data objects for one dump (different compressions) cannot both be
                    // committed: the manifest names one; keep the other as debris.
                    if let Some(previous) = dump_data.insert(id, object) {
                        inv.debris.push(previous);
                    }
                }
                Some(ParsedKey::DumpManifest { id }) => {
                    dump_manifests.insert(id, object.key);
                }
                Some(ParsedKey::ArchiveData { week, .. }) => {
                    if let Some(previous) = archive_data.insert(week, object) {
                        inv.debris.push(previous);
                    }
                }
                Some(ParsedKey::ArchiveManifest { week }) => {
                    archive_manifests.insert(week, object.key);
                }
                // Several daemons' coordination objects (DESIGN §16) are Patina's, not backups.
                None if COORDINATION.iter().any(|p| object.key.starts_with(p)) => {}
                None => inv.foreign.push(object.key),
            }
        }
        for (id, data) in dump_data {
            match dump_manifests.remove(&id) {
                Some(manifest_key) => inv.dumps.push(CommittedDump {
                    id,
                    data,
                    manifest_key,
                }),
                None => inv.debris.push(data),
            }
        }
        for (week, data) in archive_data {
            match archive_manifests.remove(&week) {
                Some(manifest_key) => inv.archives.push(CommittedArchive {
                    week,
                    data,
                    manifest_key,
                }),
                None => inv.debris.push(data),
            }
        }
        inv.orphaned_manifests.extend(
            dump_manifests
                .into_values()
                .chain(archive_manifests.into_values()),
        );
        inv.dumps
            .sort_by(|a, b| (a.id.taken_at, &a.id.database).cmp(&(b.id.taken_at, &b.id.database)));
        inv.debris.sort_by(|a, b| a.key.cmp(&b.key));
        inv.orphaned_manifests.sort();
        inv.foreign.sort();
        inv
    }

    /// Committed dumps of one database, oldest first.
    pub fn dumps_of<'a>(&'a self, database: &'a str) -> impl Iterator<Item = &'a CommittedDump> {
        self.dumps.iter().filter(move |d| d.id.database == database)
    }

    /// The newest committed dump of a database.
    pub fn latest<'a>(&'a self, database: &'a str) -> Option<&'a CommittedDump> {
        // Oldest first: the newest is found from the end, without walking every dump.
        self.dumps.iter().rev().find(|d| d.id.database == database)
    }

    /// The newest committed dump of a database taken on `date` (`YYYY-MM-DD`, UTC).
    pub fn latest_on<'a>(&'a self, database: &'a str, date: &str) -> Option<&'a CommittedDump> {
        self.dumps
            .iter()
            .rev()
            .find(|d| d.id.database == database && d.id.date() == date)
    }

    /// Names of databases that have committed dumps.
    pub fn databases(&self) -> Vec<String> {
        let mut names: Vec<String> = self.dumps.iter().map(|d| d.id.database.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Debris older than `grace` at `now` (younger debris may be an upload in flight).
    pub fn stale_debris(&self, now: DateTime<Utc>, grace: chrono::Duration) -> Vec<&ObjectInfo> {
        self.debris
            .iter()
            .filter(|o| o.last_modified + grace <= now)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Compression;

    fn obj(key: &str, minute: u32) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 10,
            last_modified: format!("2026-11-22T03:{minute:02}:00Z").parse().unwrap(),
            etag: None,
        }
    }

    fn id(db: &str, at: &str) -> DumpId {
        DumpId::new(db, at.parse().unwrap())
    }

    #[test]
    fn classifies_committed_debris_orphans_and_foreign() {
        let a1 = id("a", "2026-11-21T03:00:00Z");
        let a2 = id("a", "2026-11-22T03:00:00Z");
        let b1 = id("b", "2026-11-22T03:00:00Z");
        let inv = Inventory::classify(vec![
            obj(
                &a2.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                1,
            ),
            obj(&a2.manifest_key(), 1),
            obj(
                &a1.data_key(crate::codec::Layers::plain(Compression::Zstd)),
                0,
            ),
            obj(&a1.manifest_key(), 0),
            obj(
                &b1.data_key(crate::codec::Layers::plain(Compression::Gzip)),
                2,
            ), // no manifest: debris
            obj(&id("c", "2026-11-20T00:00:00Z").manifest_key(), 0), // no data: orphan
            obj("notes/readme.txt", 0),
            obj("leases/db/a.json", 0), // several daemons' objects: neither backups nor foreign
            obj("claims/a/20261122T030000Z.json", 0),
            obj("nodes/host-1.json", 0),
            obj("weekly/2026-W46.tar", 0),
            obj("weekly/2026-W46.manifest.json", 0),
        ]);
        assert_eq!(
            inv.dumps.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
            vec![a1.clone(), a2.clone()]
        );
        assert_eq!(inv.latest("a").unwrap().id, a2);
        assert_eq!(inv.latest_on("a", "2026-11-21").unwrap().id, a1);
        assert!(inv.latest("b").is_none());
        assert_eq!(inv.debris.len(), 1);
        assert_eq!(inv.orphaned_manifests.len(), 1);
        assert_eq!(inv.foreign, vec!["notes/readme.txt".to_string()]);
        assert_eq!(inv.archives.len(), 1);
        assert_eq!(inv.databases(), vec!["a".to_string()]);
        let now: DateTime<Utc> = "2026-11-22T03:10:00Z".parse().unwrap();
        assert_eq!(inv.stale_debris(now, chrono::Duration::minutes(5)).len(), 1);
        assert_eq!(inv.stale_debris(now, chrono::Duration::minutes(9)).len(), 0);
    }
}
