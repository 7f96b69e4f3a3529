//! End-to-end tests of the `patina` binary as an operator runs it: real SQLite files, real
//! storage (a folder, and the in-process S3 server), the real `sqlite3`, `zstd` and `gzip`
//! programs for restores without Patina.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rusqlite::Connection;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

/// A scratch folder with a policy file and a copy of the demo database.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(storage: &str) -> Setup {
        Setup::with_policy(&policy(storage, &[("demo-app", "demo.db")]))
    }

    fn with_policy(policy: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(DEMO_DB, dir.path().join("demo.db")).unwrap();
        std::fs::write(dir.path().join("patina.toml"), policy).unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn patina(&self, args: &[&str]) -> Output {
        self.patina_env(args, &[])
    }

    fn patina_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patina"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("PATINA_CONFIG")
            .env("PATINA_LOG", "warn")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run patina")
    }

    /// Committed data objects under the file:// storage folder `backups`.
    fn stored_dumps(&self, suffix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path("backups"), &mut out);
        out.retain(|p| p.to_string_lossy().ends_with(suffix));
        out.sort();
        out
    }
}

pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn policy(storage: &str, databases: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[storage]\nurl = \"{storage}\"\n\n[priorities.critical]\nschedule = \"0 3 * * *\"\n"
    );
    for (name, path) in databases {
        s.push_str(&format!(
            "\n[[database]]\nname = \"{name}\"\nkind = \"sqlite\"\npath = \"{path}\"\npriority = \"critical\"\n"
        ));
    }
    s
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub(crate) fn assert_code(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
}

fn sqlite3() -> &'static str {
    crate::support::require("sqlite3", "apt-get install -y sqlite3")
}

/// A database's whole content as the `sqlite3` program sees it: the schema, then every table's
/// rows in storage order, each value quoted. Independent of the order objects were created in.
fn reference_dump(db: &Path) -> String {
    let tables = Command::new(sqlite3())
        .arg(db)
        .arg("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .output()
        .unwrap();
    assert!(tables.status.success(), "{}", text(&tables));
    let mut script =
        String::from("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name;\n");
    for t in String::from_utf8(tables.stdout).unwrap().lines() {
        script.push_str(&format!("SELECT * FROM \"{}\";\n", t.replace('"', "\"\"")));
    }
    script.push_str("SELECT * FROM sqlite_sequence ORDER BY name;\n");
    let o = Command::new(sqlite3())
        .arg("-quote")
        .arg(db)
        .arg(script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Assert two databases hold the same content, printing only the first difference.
#[track_caller]
pub(crate) fn assert_same_content(a: &Path, b: &Path) {
    let (x, y) = (reference_dump(a), reference_dump(b));
    if x != y {
        let line = x.lines().zip(y.lines()).position(|(l, r)| l != r);
        let show = |s: &str, i: Option<usize>| {
            i.and_then(|i| s.lines().nth(i))
                .unwrap_or("<end>")
                .chars()
                .take(300)
                .collect::<String>()
        };
        panic!(
            "{} and {} differ at line {:?} ({} vs {} lines):\n  {}\n  {}",
            a.display(),
            b.display(),
            line,
            x.lines().count(),
            y.lines().count(),
            show(&x, line),
            show(&y, line)
        );
    }
}

pub(crate) fn integrity(db: &Path) -> String {
    let o = Command::new(sqlite3())
        .arg(db)
        .arg("PRAGMA integrity_check; PRAGMA foreign_key_check;")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Restore without Patina: `DECOMPRESSOR < stored | sqlite3 new.db`.
fn restore_by_hand(decompress: &[&str], stored: &Path, target: &Path) {
    let plain = Command::new(decompress[0])
        .args(&decompress[1..])
        .stdin(std::fs::File::open(stored).unwrap())
        .output()
        .unwrap();
    assert!(plain.status.success(), "{}", text(&plain));
    let mut load = Command::new(sqlite3())
        .arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    load.stdin.take().unwrap().write_all(&plain.stdout).unwrap();
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
}

#[test]
fn backup_then_restore_with_plain_zstd_and_sqlite3() {
    let s = Setup::new("file://backups");
    let o = s.patina(&["backup"]);
    assert_code(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("demo-app"),
        "{}",
        text(&o)
    );
    let dumps = s.stored_dumps(".sql.zst");
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let manifests = s.stored_dumps(".manifest.json");
    assert_eq!(manifests.len(), 1);

    let restored = s.path("by-hand.db");
    restore_by_hand(&["zstd", "-dc"], &dumps[0], &restored);
    assert_same_content(&restored, &s.path("demo.db"));
    assert_eq!(integrity(&restored), "ok");

    // The manifest describes the stored bytes exactly.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    let bytes = std::fs::read(&dumps[0]).unwrap();
    assert_eq!(manifest["size"], bytes.len() as u64);
    use sha2::Digest;
    assert_eq!(
        manifest["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(manifest["tables"]["users"], 40);
    assert_eq!(manifest["tables"]["posts"], 200);
    assert_eq!(manifest["trigger"], "manual");
}

#[test]
fn restore_command_checks_refuses_to_overwrite_and_forces() {
    let s = Setup::new("file://backups");
    assert_code(&s.patina(&["backup"]), 0);
    let o = s.patina(&["restore", "demo-app", "--to", "out.db"]);
    assert_code(&o, 0);
    assert_same_content(&s.path("out.db"), &s.path("demo.db"));

    // An existing file is never overwritten without --force, and stays as it was.
    std::fs::write(s.path("keep.db"), b"precious").unwrap();
    let o = s.patina(&["restore", "demo-app", "--to", "keep.db"]);
    assert_code(&o, 1);
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(std::fs::read(s.path("keep.db")).unwrap(), b"precious");
    let o = s.patina(&["restore", "demo-app", "--to", "keep.db", "--force"]);
    assert_code(&o, 0);
    assert_eq!(integrity(&s.path("keep.db")), "ok");

    // By date: today's exists, another day does not.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_code(
        &s.patina(&["restore", "demo-app", "--at", &today, "--to", "d.db"]),
        0,
    );
    let o = s.patina(&[
        "restore",
        "demo-app",
        "--at",
        "2001-01-01",
        "--to",
        "old.db",
    ]);
    assert_code(&o, 1);
    assert!(
        text(&o).contains("no committed backup of demo-app"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains(&today),
        "lists the dates that exist: {}",
        text(&o)
    );
    assert!(!s.path("old.db").exists());

    // No temporary files are left beside the targets.
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".patina-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_damaged_object_is_refused_before_anything_is_loaded() {
    let s = Setup::new("file://backups");
    assert_code(&s.patina(&["backup"]), 0);
    let dump = &s.stored_dumps(".sql.zst")[0];
    let mut bytes = std::fs::read(dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(dump, &bytes).unwrap();
    let o = s.patina(&["restore", "demo-app", "--to", "out.db"]);
    assert_code(&o, 1);
    assert!(text(&o).contains("checksum mismatch"), "{}", text(&o));
    assert!(!s.path("out.db").exists());
    let o = s.patina(&["verify"]);
    assert_code(&o, 1);
    assert!(text(&o).contains("checksum mismatch"), "{}", text(&o));
}

#[test]
fn one_failing_database_does_not_stop_the_others() {
    let s = Setup::with_policy(&policy(
        "file://backups",
        &[
            ("demo-app", "demo.db"),
            ("ghost", "missing.db"),
            ("junk", "junk.db"),
        ],
    ));
    std::fs::write(
        s.path("junk.db"),
        "this is not a database, just text\n".repeat(200),
    )
    .unwrap();
    let o = s.patina(&["backup"]);
    assert_code(&o, 1);
    let out = text(&o);
    assert!(out.contains("missing.db"), "{out}");
    assert!(out.contains("junk.db"), "{out}");
    assert_eq!(s.stored_dumps(".manifest.json").len(), 1, "{out}");
    let list = s.patina(&["list"]);
    assert_code(&list, 0);
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listed.contains("demo-app") && !listed.contains("ghost"),
        "{listed}"
    );

    // The job is recorded as partial: the status page counts it as such.
    let catalog = Connection::open(s.path(".patina/patina.db")).unwrap();
    let (status, ok, failed): (String, i64, i64) = catalog
        .query_row(
            "SELECT status, successful_count, failed_count FROM backup_jobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), ok, failed), ("completed", 1, 2));
}

#[test]
fn named_databases_only_and_unknown_names_are_usage_errors() {
    let s = Setup::with_policy(&policy(
        "file://backups",
        &[("demo-app", "demo.db"), ("other", "demo.db")],
    ));
    assert_code(&s.patina(&["backup", "other"]), 0);
    let dumps = s.stored_dumps(".manifest.json");
    assert_eq!(dumps.len(), 1);
    assert!(dumps[0].to_string_lossy().contains("/other/"));
    let o = s.patina(&["backup", "nope"]);
    assert_code(&o, 2);
    assert!(
        text(&o).contains("unknown database \"nope\""),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("demo-app, other"), "{}", text(&o));
}

#[test]
fn gzip_and_uncompressed_dumps_restore_without_patina() {
    for (compression, suffix, decompress) in [
        ("gzip", ".sql.gz", vec!["gzip", "-dc"]),
        ("none", ".sql", vec!["cat"]),
    ] {
        let mut p = policy("file://backups", &[("demo-app", "demo.db")]);
        p = p.replace(
            "url = \"file://backups\"",
            &format!("url = \"file://backups\"\ncompression = \"{compression}\""),
        );
        let s = Setup::with_policy(&p);
        assert_code(&s.patina(&["backup"]), 0);
        let dumps = s.stored_dumps(suffix);
        assert_eq!(dumps.len(), 1, "{compression}: {dumps:?}");
        let by_hand = s.path("by-hand.db");
        restore_by_hand(&decompress, &dumps[0], &by_hand);
        assert_same_content(&by_hand, &s.path("demo.db"));
        assert_code(&s.patina(&["restore", "demo-app", "--to", "r.db"]), 0);
        assert_same_content(&s.path("r.db"), &s.path("demo.db"));
        assert_code(&s.patina(&["verify"]), 0);
    }
}

#[test]
fn verify_records_its_result_in_the_catalog() {
    let s = Setup::new("file://backups");
    assert_code(&s.patina(&["backup"]), 0);
    let o = s.patina(&["verify", "demo-app"]);
    assert_code(&o, 0);
    let catalog = Connection::open(s.path(".patina/patina.db")).unwrap();
    let status: String = catalog
        .query_row(
            "SELECT status FROM verifications WHERE database_name = 'demo-app'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "ok");
    // Scratch files are cleaned up.
    let mut scratch = Vec::new();
    walk(&s.path(".patina/scratch"), &mut scratch);
    assert!(scratch.is_empty(), "{scratch:?}");
}

#[test]
fn the_status_page_queries_work_on_the_catalog() {
    let s = Setup::with_policy(&policy(
        "file://backups",
        &[("demo-app", "demo.db"), ("other", "demo.db")],
    ));
    assert_code(&s.patina(&["backup"]), 0);
    assert_code(&s.patina(&["backup", "other"]), 0);
    let c = Connection::open(s.path(".patina/patina.db")).unwrap();
    // The seed status page's three queries, unchanged.
    let (total, days, bytes, last): (i64, i64, i64, String) = c
        .query_row(
            "SELECT
               COUNT(*) as total_backups,
               COUNT(DISTINCT backup_date) as unique_days,
               SUM(size_bytes) as total_bytes,
               MAX(backup_date) as last_backup
             FROM backup_inventory
             WHERE deleted_at IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let stored: u64 = s
        .stored_dumps(".sql.zst")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        (total, days, bytes as u64, last.as_str()),
        (3, 1, stored, today.as_str())
    );

    let daily: Vec<(String, i64, i64)> = c
        .prepare(
            "SELECT backup_date, COUNT(*) as backup_count, SUM(size_bytes) as total_size
             FROM backup_inventory WHERE deleted_at IS NULL
             GROUP BY backup_date ORDER BY backup_date DESC LIMIT 7",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(daily, vec![(today, 3, stored as i64)]);

    let jobs: Vec<(String, i64, i64, String)> = c
        .prepare(
            "SELECT status, successful_count, failed_count,
               datetime(started_at, 'unixepoch') as started
             FROM backup_jobs ORDER BY started_at DESC LIMIT 10",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j.0 == "completed" && j.2 == 0),
        "{jobs:?}"
    );
    assert_eq!(jobs.iter().map(|j| j.1).sum::<i64>(), 3);
}

#[test]
fn catalog_rebuild_recovers_the_inventory_from_storage_alone() {
    let s = Setup::new("file://backups");
    assert_code(&s.patina(&["backup"]), 0);
    let before = String::from_utf8(s.patina(&["list"]).stdout).unwrap();
    for f in ["patina.db", "patina.db-wal", "patina.db-shm"] {
        let _ = std::fs::remove_file(s.path(&format!(".patina/{f}")));
    }
    let empty = s.patina(&["list"]);
    assert_code(&empty, 0);
    assert!(!String::from_utf8_lossy(&empty.stdout).contains("demo-app"));
    let o = s.patina(&["catalog", "rebuild"]);
    assert_code(&o, 0);
    assert!(text(&o).contains("from 1 manifests"), "{}", text(&o));
    let after = String::from_utf8(s.patina(&["list"]).stdout).unwrap();
    assert_eq!(before, after);
    // Rebuilding over an existing catalog keeps the old one aside.
    assert_code(&s.patina(&["catalog", "rebuild"]), 0);
    let aside = std::fs::read_dir(s.path(".patina"))
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("patina.db.bak-")
        });
    assert!(aside);
}

#[test]
fn an_invalid_policy_is_a_usage_error_with_positions() {
    let s = Setup::with_policy(
        "[storage]\nurl = \"file://backups\"\n\n[priorities.critical]\nshedule = \"0 3 * * *\"\n",
    );
    for args in [&["check"][..], &["backup"][..], &["list"][..]] {
        let o = s.patina(args);
        assert_code(&o, 2);
        assert!(text(&o).contains("patina.toml:5:1"), "{}", text(&o));
        assert!(text(&o).contains("schedule"), "{}", text(&o));
    }
    // Nothing was created by the rejected runs.
    assert!(!s.path(".patina").exists());
    assert!(!s.path("backups").exists());
}

#[test]
fn config_comes_from_the_flag_or_the_environment() {
    let s = Setup::new("file://backups");
    std::fs::rename(s.path("patina.toml"), s.path("elsewhere.toml")).unwrap();
    let o = s.patina(&["check"]);
    assert_code(&o, 2);
    assert!(text(&o).contains("patina.toml"), "{}", text(&o));
    assert_code(&s.patina(&["check", "--config", "elsewhere.toml"]), 0);
    assert_code(&s.patina(&["--config", "elsewhere.toml", "check"]), 0);
    assert_code(
        &s.patina_env(&["check"], &[("PATINA_CONFIG", "elsewhere.toml")]),
        0,
    );
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let s = Setup::new("file://backups");
    let o = s.patina(&["schema"]);
    assert_code(&o, 0);
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/patina.schema.json"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), checked_in);
}

#[test]
fn the_schema_validates_every_shipped_policy_with_check_jsonschema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = Command::new("python3")
        .args(["-m", "check_jsonschema", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "check-jsonschema is required: python3 -m pip install check-jsonschema (or run .ci/run)"
    );
    let mut files = vec![root.join("patina.toml")];
    for e in std::fs::read_dir(root.join("examples")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            files.push(e.path());
        }
    }
    let o = Command::new("python3")
        .args(["-m", "check_jsonschema", "--schemafile"])
        .arg(root.join("schemas/patina.schema.json"))
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn s3_backup_restore_verify_and_rebuild_through_a_real_s3_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(crate::support::s3::S3Server::start());
    let p = format!(
        "[storage]\nurl = \"s3://{}\"\nendpoint = \"{}\"\nregion = \"auto\"\n\
         access_key_id = \"${{TEST_S3_KEY}}\"\nsecret_access_key = \"${{TEST_S3_SECRET}}\"\n\
         prefix = \"patina/\"\n\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
         [[database]]\nname = \"demo-app\"\nkind = \"sqlite\"\npath = \"demo.db\"\npriority = \"critical\"\n",
        server.bucket, server.endpoint
    );
    let s = Setup::with_policy(&p);
    let env = [
        ("TEST_S3_KEY", server.access_key.as_str()),
        ("TEST_S3_SECRET", server.secret_key.as_str()),
    ];
    let o = s.patina_env(&["check"], &env);
    assert_code(&o, 0);
    assert!(
        !text(&o).contains(&server.secret_key),
        "secret leaked: {}",
        text(&o)
    );
    assert_code(&s.patina_env(&["backup"], &env), 0);
    assert_code(
        &s.patina_env(&["restore", "demo-app", "--to", "s3.db"], &env),
        0,
    );
    assert_same_content(&s.path("s3.db"), &s.path("demo.db"));
    assert_code(&s.patina_env(&["verify"], &env), 0);
    std::fs::remove_file(s.path(".patina/patina.db")).unwrap();
    assert_code(&s.patina_env(&["catalog", "rebuild"], &env), 0);
    let list = s.patina_env(&["list"], &env);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("demo-app"),
        "{}",
        text(&list)
    );

    // The objects really are in the bucket, under the prefix, in the documented layout.
    let mut objects = Vec::new();
    walk(&server.bucket_dir(), &mut objects);
    let keys: Vec<String> = objects
        .iter()
        .map(|p| {
            p.strip_prefix(server.bucket_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|k| !k.contains(".s3s"))
        .collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("patina/daily/") && k.ends_with(".sql.zst")),
        "{keys:?}"
    );

    // A wrong secret fails cleanly, without printing the secret.
    let o = s.patina_env(
        &["backup"],
        &[
            ("TEST_S3_KEY", server.access_key.as_str()),
            ("TEST_S3_SECRET", "wrong-secret-value"),
        ],
    );
    assert_code(&o, 1);
    assert!(!text(&o).contains("wrong-secret-value"), "{}", text(&o));
    drop(server);
}

#[test]
fn plan_shows_what_would_happen_and_why_without_doing_it() {
    let s = Setup::new("file://backups");
    let o = s.patina(&["plan"]);
    assert_code(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("backups (1):"), "{out}");
    assert!(
        out.contains("demo-app") && out.contains("no committed backup yet"),
        "{out}"
    );
    assert!(
        s.stored_dumps(".manifest.json").is_empty(),
        "plan must not act"
    );

    assert_code(&s.patina(&["backup"]), 0);
    let o = s.patina(&["plan"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        text(&o)
    );

    // Noon, three days on: the 03:00 fires in between were missed by hours (a time just after
    // 03:00 would still count as on time, and the trigger would be `scheduled`).
    let later = (chrono::Utc::now() + chrono::Duration::days(3))
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339();
    let o = s.patina(&["plan", "--at", &later, "--json"]);
    assert_code(&o, 0);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["backups"][0]["database"], "demo-app");
    assert_eq!(plan["backups"][0]["trigger"], "catch-up");
    assert_eq!(plan["backups"][0]["priority"], "critical");

    let o = s.patina(&["plan", "--at", "someday"]);
    assert_code(&o, 2);
    assert!(text(&o).contains("--at \"someday\""), "{}", text(&o));
}

/// `patina check` reads the files the policy only names (the TLS certificate and key, the age
/// identity), so a wrong path or a bad file is found before the daemon starts or a restore
/// needs it; the identity's text is never printed.
#[test]
fn check_reads_the_tls_files_and_the_identity_file_it_names() {
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let base = policy("file://backups", &[("demo-app", "demo.db")]);
    let s = Setup::with_policy(&format!(
        "[daemon]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\n\n\
         [encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"identity.txt\"\n\n{base}"
    ));
    std::fs::write(
        s.path("identity.txt"),
        "# created: today\nAGE-SECRET-KEY-NOT-REALLY-0123456789\n",
    )
    .unwrap();
    let o = s.patina(&["check"]);
    assert_code(&o, 2);
    let t = text(&o);
    assert!(t.contains("fullchain.pem"), "{t}");
    assert!(t.contains("identity.txt"), "{t}");
    assert!(
        !t.contains("NOT-REALLY"),
        "the identity's text was printed: {t}"
    );
    assert!(t.contains("patina check"), "{t}");

    // With both in order, it is ok.
    use age::secrecy::ExposeSecret;
    std::fs::write(
        s.path("identity.txt"),
        format!(
            "{}\n",
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
        ),
    )
    .unwrap();
    std::fs::create_dir(s.path("tls")).unwrap();
    let files = crate::support::certs::Pki::new("localhost", crate::support::certs::Key::Ecdsa)
        .write(&s.path("tls"), "site");
    std::fs::rename(&files.cert, s.path("tls/fullchain.pem")).unwrap();
    std::fs::rename(&files.key, s.path("tls/privkey.pem")).unwrap();
    let o = s.patina(&["check"]);
    assert_code(&o, 0);
}
