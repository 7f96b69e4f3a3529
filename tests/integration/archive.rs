//! Weekly archives: built over `file://` and a real S3-protocol server (s3s-fs), checked with
//! the real `tar`, `zstd` and `sqlite3` programs — restoring must never need Patina.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use patina::archive::{self, ArchiveError};
use patina::manifest::{DumpId, FORMAT_VERSION, IsoWeek, Manifest, SourceFacts, Trigger};
use patina::policy::Compression;
use patina::store::{PART_SIZE, PutMode, Store};
use sha2::{Digest, Sha256};

use crate::support::s3::S3Server;

const DATABASES: [&str; 2] = ["alpha", "beta"];
const DAYS: [&str; 3] = ["2026-11-16", "2026-11-17", "2026-11-18"];

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn week() -> IsoWeek {
    IsoWeek::of(t("2026-11-18T00:00:00Z"))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A program the test needs; a missing one fails the test with an install hint (never skips).
fn tool(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    if path.exists() {
        return path;
    }
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed; these tests need it — install it: apt-get install -y {name}"
        )
    })
}

fn run(program: &Path, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Commit a dump the way `backup.rs` does — data first, manifest last (create-only) — with
/// `data` as the stored bytes.
async fn put_dump(
    store: &Store,
    database: &str,
    taken_at: DateTime<Utc>,
    compression: Compression,
    data: &[u8],
) -> Manifest {
    let id = DumpId::new(database, taken_at);
    let key = id.data_key(patina::codec::Layers::plain(compression));
    store
        .put(&key, Bytes::copy_from_slice(data), PutMode::Create)
        .await
        .unwrap();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        database: database.into(),
        tier: "daily".into(),
        key,
        sha256: sha256(data),
        size: data.len() as u64,
        compression,
        encryption: None,
        sql_bytes: data.len() as u64,
        tables: BTreeMap::from([("t".to_string(), 1)]),
        table_count: 1,
        row_count: 1,
        schema_hash: "ab".repeat(32),
        table_schema_hashes: Default::default(),
        source: SourceFacts::Sqlite {
            path: format!("/srv/{database}.db"),
        },
        fidelity: None,
        job_id: "job-dumps".into(),
        trigger: Trigger::Scheduled,
        started_at: taken_at,
        completed_at: taken_at,
        patina_version: "0.1.0".into(),
        lease_generation: None,
    };
    store
        .put(
            &id.manifest_key(),
            Bytes::from(manifest.to_json()),
            PutMode::Create,
        )
        .await
        .unwrap();
    manifest
}

fn sql_for(day: usize, db: usize) -> String {
    format!(
        "CREATE TABLE t(x); INSERT INTO t VALUES({});\n",
        day * 10 + db
    )
}

/// 2 databases × 3 days of tiny dumps, all taken at 03:00:00 (so the database name breaks the
/// tie). Returned in a scrambled order: the archiver must sort them itself.
async fn small_week(store: &Store, compression: Compression) -> Vec<Manifest> {
    let mut dumps = Vec::new();
    for (d, day) in DAYS.iter().enumerate() {
        for (b, db) in DATABASES.iter().enumerate() {
            let sql = sql_for(d, b);
            let data = match compression {
                Compression::Zstd => zstd::encode_all(sql.as_bytes(), 3).unwrap(),
                Compression::None => sql.into_bytes(),
                Compression::Gzip => unreachable!("not used here"),
            };
            let at = t(&format!("{day}T03:00:00Z"));
            dumps.push(put_dump(store, db, at, compression, &data).await);
        }
    }
    dumps.reverse();
    dumps.swap(0, 3);
    dumps
}

/// `tar -tf` of the expected archive: by (taken_at, database), each data member then its manifest.
fn expected_members(suffix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for day in DAYS {
        let ts = format!("{}T030000Z", day.replace('-', ""));
        for db in DATABASES {
            out.push(format!("{day}/{db}/{ts}{suffix}"));
            out.push(format!("{day}/{db}/{ts}.manifest.json"));
        }
    }
    out
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn builds_a_standard_tar_that_restores_without_patina() {
    let (tar, zstd_bin, sqlite3) = (tool("tar"), tool("zstd"), tool("sqlite3"));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path(), "").unwrap();
    let dumps = small_week(&store, Compression::Zstd).await;
    let now = t("2026-11-23T04:00:00Z");

    let built = archive::build(
        &store,
        week(),
        &dumps,
        Compression::Zstd,
        "job-archive",
        now,
    )
    .await
    .unwrap();
    assert_eq!(built.key, "weekly/2026-W47.tar");
    assert_eq!(built.week, "2026-W47");
    assert_eq!(built.tier, "weekly");
    assert_eq!(built.job_id, "job-archive");
    assert_eq!(built.created_at, now);
    assert_eq!(built.members.len(), 6);

    // The manifest describes the stored bytes, and reads back equal.
    let stored = store.get(&built.key).await.unwrap();
    assert_eq!(built.size, stored.len() as u64);
    assert_eq!(built.sha256, sha256(&stored));
    let read = archive::read_manifest(&store, &week().manifest_key())
        .await
        .unwrap();
    assert_eq!(read, built);
    // Members in the manifest follow the tar's order and carry the daily objects' facts.
    let by_key: BTreeMap<&str, &Manifest> = dumps.iter().map(|m| (m.key.as_str(), m)).collect();
    let member_paths: Vec<String> = built.members.iter().map(|m| m.path.clone()).collect();
    let data_paths: Vec<String> = expected_members(".sql.zst")
        .into_iter()
        .step_by(2)
        .collect();
    assert_eq!(member_paths, data_paths);
    for member in &built.members {
        let dump = by_key[member.dump_key.as_str()];
        assert_eq!((&member.sha256, member.size), (&dump.sha256, dump.size));
        assert_eq!(member.database, dump.database);
        assert_eq!(member.path, member.dump_key.strip_prefix("daily/").unwrap());
    }

    // The real tar lists exactly the expected members, in order, with deterministic headers.
    let archive_file = dir.path().join("weekly/2026-W47.tar");
    let listed = run(&tar, &["-tf", archive_file.to_str().unwrap()], dir.path());
    assert_eq!(lines(&listed), expected_members(".sql.zst"));
    let verbose = run(
        &tar,
        &["--numeric-owner", "-tvf", archive_file.to_str().unwrap()],
        dir.path(),
    );
    let first = verbose.lines().next().unwrap();
    assert!(
        first.starts_with("-rw-r--r-- 0/0") && first.contains("2026-11-16 03:00"),
        "{verbose}"
    );

    // Extract with tar, restore each member with zstd | sqlite3.
    let out = tempfile::tempdir().unwrap();
    run(&tar, &["-xf", archive_file.to_str().unwrap()], out.path());
    for (d, day) in DAYS.iter().enumerate() {
        let ts = format!("{}T030000Z", day.replace('-', ""));
        for (b, db) in DATABASES.iter().enumerate() {
            let member = out.path().join(format!("{day}/{db}/{ts}.sql.zst"));
            let sql = Command::new(&zstd_bin)
                .arg("-dc")
                .arg(&member)
                .output()
                .unwrap();
            assert!(sql.status.success(), "zstd -dc {}", member.display());
            assert_eq!(
                String::from_utf8(sql.stdout.clone()).unwrap(),
                sql_for(d, b)
            );
            let new_db = out.path().join(format!("{db}-{d}.db"));
            let mut load = Command::new(&sqlite3)
                .arg(&new_db)
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(load.stdin.as_mut().unwrap(), &sql.stdout).unwrap();
            drop(load.stdin.take());
            assert!(load.wait().unwrap().success(), "sqlite3 load of {member:?}");
            let x = run(
                &sqlite3,
                &[new_db.to_str().unwrap(), "SELECT x FROM t"],
                out.path(),
            );
            assert_eq!(x.trim(), (d * 10 + b).to_string());
            // The manifest member is the manifest as stored.
            let manifest_member = out.path().join(format!("{day}/{db}/{ts}.manifest.json"));
            let id = DumpId::new(*db, t(&format!("{day}T03:00:00Z")));
            assert_eq!(
                std::fs::read(manifest_member).unwrap(),
                store.get(&id.manifest_key()).await.unwrap()
            );
        }
    }

    // Extracting one dump through Patina gives the same bytes and the right manifest.
    let wanted = &dumps[2];
    let dest = out.path().join("one.sql.zst");
    let got = archive::extract_dump(&store, &built, &wanted.key, &dest)
        .await
        .unwrap();
    assert_eq!(&got, wanted);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        store.get(&wanted.key).await.unwrap()
    );

    // A key the archive does not hold: a clear error, and no file left behind.
    let other = DumpId::new("alpha", t("2026-11-19T03:00:00Z"))
        .data_key(patina::codec::Layers::plain(Compression::Zstd));
    let dest = out.path().join("missing.sql.zst");
    let err = archive::extract_dump(&store, &built, &other, &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::NotListed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&other) && msg.contains("does not list it"),
        "{msg}"
    );
    assert!(!dest.exists());
}

#[tokio::test]
async fn uncompressed_dumps_make_a_tar_gz() {
    let tar = tool("tar");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path(), "backups/").unwrap();
    let dumps = small_week(&store, Compression::None).await;
    let built = archive::build(&store, week(), &dumps, Compression::None, "job", Utc::now())
        .await
        .unwrap();
    assert_eq!(built.key, "weekly/2026-W47.tar.gz");
    let stored = store.get(&built.key).await.unwrap();
    assert_eq!(
        (built.sha256.clone(), built.size),
        (sha256(&stored), stored.len() as u64)
    );
    let file = dir.path().join("backups/weekly/2026-W47.tar.gz");
    let listed = run(&tar, &["-tzf", file.to_str().unwrap()], dir.path());
    assert_eq!(lines(&listed), expected_members(".sql"));

    let wanted = &dumps[0];
    let dest = dir.path().join("out.sql");
    let got = archive::extract_dump(&store, &built, &wanted.key, &dest)
        .await
        .unwrap();
    assert_eq!(&got, wanted);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        store.get(&wanted.key).await.unwrap()
    );
}

#[tokio::test]
async fn a_damaged_member_stops_the_build_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path(), "").unwrap();
    let dumps = small_week(&store, Compression::Zstd).await;

    // Longer than its manifest says: refused before it reaches the tar.
    let damaged = &dumps[1].key;
    let mut bytes = store.get(damaged).await.unwrap().to_vec();
    bytes.extend_from_slice(b"junk");
    store
        .put(damaged, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();
    let err = archive::build(&store, week(), &dumps, Compression::Zstd, "job", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::MemberDamaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("archive 2026-W47: member ")
            && msg.contains(damaged.as_str())
            && msg.contains("size mismatch")
            && msg.contains("it was not archived"),
        "{msg}"
    );
    assert_nothing_archived(&store).await;

    // Repaired; now a daily object that vanished: an error naming it, nothing archived.
    let repaired = store
        .get(damaged)
        .await
        .unwrap()
        .slice(..dumps[1].size as usize);
    store
        .put(damaged, repaired, PutMode::Overwrite)
        .await
        .unwrap();
    let gone = &dumps[4].key;
    store.delete(gone).await.unwrap();
    let err = archive::build(&store, week(), &dumps, Compression::Zstd, "job", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::MemberMissing { .. }), "{err:?}");
    assert!(err.to_string().contains(gone.as_str()), "{err}");
    assert_nothing_archived(&store).await;
}

async fn assert_nothing_archived(store: &Store) {
    for key in [
        week().archive_key(Compression::Zstd),
        week().archive_key(Compression::None),
        week().manifest_key(),
    ] {
        assert_eq!(store.head(&key).await.unwrap(), None, "{key} exists");
    }
}

#[tokio::test]
async fn archives_are_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path(), "").unwrap();
    let dumps = small_week(&store, Compression::Zstd).await;
    let first = archive::build(
        &store,
        week(),
        &dumps,
        Compression::Zstd,
        "job-1",
        Utc::now(),
    )
    .await
    .unwrap();
    let data = store.get(&first.key).await.unwrap();
    let manifest = store.get(&week().manifest_key()).await.unwrap();

    let err = archive::build(
        &store,
        week(),
        &dumps[..2],
        Compression::Zstd,
        "job-2",
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains("immutable"), "{err}");
    assert_eq!(store.get(&first.key).await.unwrap(), data);
    assert_eq!(store.get(&week().manifest_key()).await.unwrap(), manifest);
}

#[tokio::test]
async fn a_damaged_archive_is_caught_on_extract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path(), "").unwrap();
    let dumps = small_week(&store, Compression::Zstd).await;
    let built = archive::build(&store, week(), &dumps, Compression::Zstd, "job", Utc::now())
        .await
        .unwrap();
    // Flip a byte inside the first member's data (after its 512-byte header).
    let mut bytes = store.get(&built.key).await.unwrap().to_vec();
    bytes[512 + 5] ^= 0xff;
    store
        .put(&built.key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();

    let first = &built.members[0];
    let dest = dir.path().join("x.sql.zst");
    let err = archive::extract_dump(&store, &built, &first.dump_key, &dest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::ExtractDamaged { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(!dest.exists(), "a damaged extract is removed");
    assert!(!archive::partial_path(&dest).exists());

    // An existing file at dest is only replaced by verified bytes.
    std::fs::write(&dest, b"keep me").unwrap();
    archive::extract_dump(&store, &built, &first.dump_key, &dest)
        .await
        .unwrap_err();
    assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
    let second = &built.members[1];
    archive::extract_dump(&store, &built, &second.dump_key, &dest)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        store.get(&second.dump_key).await.unwrap()
    );
}

/// Incompressible bytes (xorshift), `len` long.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Two ~9 MiB members: the archive is larger than 2 × PART_SIZE, so it goes up as a multipart
/// upload of several parts.
async fn large_week(store: &Store) -> Vec<Manifest> {
    let mut dumps = Vec::new();
    for (i, db) in DATABASES.iter().enumerate() {
        let data = random_bytes(i as u64 + 7, 9 * 1024 * 1024 + 123 * i);
        let at = t("2026-11-20T03:00:00Z");
        dumps.push(put_dump(store, db, at, Compression::Zstd, &data).await);
    }
    dumps
}

#[tokio::test]
async fn s3_multipart_archive_round_trips() {
    let tar = tool("tar");
    let s3 = S3Server::start().await;
    let store = s3.store("prod/");
    let mut dumps = small_week(&store, Compression::Zstd).await;
    dumps.extend(large_week(&store).await);

    let built = archive::build(&store, week(), &dumps, Compression::Zstd, "job", Utc::now())
        .await
        .unwrap();
    assert!(built.size > 2 * PART_SIZE as u64, "size {}", built.size);
    assert_eq!(s3.pending_multipart_uploads(), 0);
    let stored = store.get(&built.key).await.unwrap();
    assert_eq!(
        (built.sha256.clone(), built.size),
        (sha256(&stored), stored.len() as u64)
    );
    assert_eq!(
        archive::read_manifest(&store, &week().manifest_key())
            .await
            .unwrap(),
        built
    );

    // The object in the bucket is a standard tar.
    let file = s3.bucket_dir().join("prod/weekly/2026-W47.tar");
    let listed = lines(&run(
        &tar,
        &["-tf", file.to_str().unwrap()],
        &s3.bucket_dir(),
    ));
    assert_eq!(listed.len(), 16);
    assert_eq!(listed[12], "2026-11-20/alpha/20261120T030000Z.sql.zst");
    assert_eq!(listed[14], "2026-11-20/beta/20261120T030000Z.sql.zst");

    // Extract the last (large) member: identical bytes, the right manifest.
    let dir = tempfile::tempdir().unwrap();
    let wanted = dumps.last().unwrap();
    let dest = dir.path().join("beta.sql.zst");
    let got = archive::extract_dump(&store, &built, &wanted.key, &dest)
        .await
        .unwrap();
    assert_eq!(&got, wanted);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        store.get(&wanted.key).await.unwrap()
    );

    // Immutable on S3 too.
    let err = archive::build(
        &store,
        week(),
        &dumps,
        Compression::Zstd,
        "job-2",
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get(&built.key).await.unwrap(), stored);
}

#[tokio::test]
async fn s3_damaged_member_aborts_the_multipart_upload() {
    let s3 = S3Server::start().await;
    let store = s3.store("");
    let dumps = large_week(&store).await;
    // Same size, one byte changed, in the last member: parts are already uploaded by then.
    let damaged = &dumps[1];
    let mut bytes = store.get(&damaged.key).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    store
        .put(&damaged.key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();

    let err = archive::build(&store, week(), &dumps, Compression::Zstd, "job", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::MemberDamaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("member {}: sha256 mismatch", damaged.key))
            && msg.contains("the daily object is damaged; it was not archived"),
        "{msg}"
    );
    assert_nothing_archived(&store).await;
    assert_eq!(
        s3.pending_multipart_uploads(),
        0,
        "the multipart upload was aborted"
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_before_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path(), "").unwrap();
    let err = archive::build(&store, week(), &[], Compression::Zstd, "job", Utc::now())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "archive 2026-W47: no dumps to archive");

    let dumps = small_week(&store, Compression::Zstd).await;
    let other_week = IsoWeek::of(t("2026-11-30T00:00:00Z"));
    let err = archive::build(
        &store,
        other_week,
        &dumps,
        Compression::Zstd,
        "job",
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ArchiveError::WrongWeek { .. }), "{err:?}");

    let twice = vec![dumps[0].clone(), dumps[0].clone()];
    let err = archive::build(&store, week(), &twice, Compression::Zstd, "job", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err:?}");
    assert_nothing_archived(&store).await;
}

/// A day whose daily dump was pruned restores from its weekly archive, `.tar` and `.tar.gz`
/// alike, through the same fetch-and-verify as a daily dump; a damaged archive member is
/// refused before anything is loaded.
#[tokio::test]
async fn a_pruned_day_restores_from_its_weekly_archive() {
    use patina::restore::{self, At, Located};
    for compression in [Compression::Zstd, Compression::None] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path(), "backups/").unwrap();
        let dumps = small_week(&store, compression).await;
        let built = archive::build(&store, week(), &dumps, compression, "job", Utc::now())
            .await
            .unwrap();
        // Prune every daily dump of the week.
        for m in &dumps {
            let id = m.dump_id().unwrap();
            store.delete(&m.key).await.unwrap();
            store.delete(&id.manifest_key()).await.unwrap();
        }
        let day = DAYS[1].parse().unwrap();
        let located = restore::locate(&store, "beta", At::Date(day))
            .await
            .unwrap();
        assert!(
            matches!(located, Located::Archived { .. }),
            "{compression:?}"
        );
        let target = dir.path().join("beta.db");
        restore::restore_located(
            &restore::Sources::single(store.clone()),
            &located,
            &target,
            false,
            &restore::Keys::none(),
        )
        .await
        .unwrap();
        let db = rusqlite::Connection::open(&target).unwrap();
        let x: i64 = db.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 11, "{compression:?}: day 1, database 1");
        drop(db);

        // The archive's copy of that dump is damaged: refused, nothing loaded or left behind.
        let mut bytes = store.get(&built.key).await.unwrap().to_vec();
        if compression == Compression::Zstd {
            // Inside the plain tar, flip a byte of a data member (after the first header).
            let at = bytes.len() / 2;
            bytes[at] ^= 0xff;
        } else {
            // Replace the gzip stream with one whose member bytes differ.
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .read_to_end(&mut tar)
                .unwrap();
            let needle = b"VALUES(11)";
            let at = tar.windows(needle.len()).position(|w| w == needle).unwrap();
            tar[at + 7] = b'9';
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&tar).unwrap();
            bytes = gz.finish().unwrap();
        }
        store
            .put(&built.key, bytes.into(), patina::store::PutMode::Overwrite)
            .await
            .unwrap();
        let again = dir.path().join("again.db");
        let err = restore::restore_located(
            &restore::Sources::single(store.clone()),
            &located,
            &again,
            false,
            &restore::Keys::none(),
        )
        .await
        .unwrap_err();
        assert!(!again.exists(), "{compression:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".patina-"))
            .collect();
        assert!(leftovers.is_empty(), "{compression:?}: {leftovers:?}");
        if compression == Compression::None {
            assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        }
    }
}
