//! Encryption at rest (DESIGN §14, issue 15) end to end: keys made by the real `age-keygen`,
//! real storage (a folder and the in-process S3 server), restores with Patina and with nothing
//! but the plain `age`, `zstd`, `gzip`, `tar` and `sqlite3` programs; every write path checked
//! for plaintext; rotation and mixed plaintext/encrypted histories through archives and
//! retention; `/download` without, with a wrong and with the right identity.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::policy::Policy;
use patina::reconcile::{ManualClock, Reconciler};
use patina::restore::{self, At, Keys, Located, RestoreError};
use patina::store::Store;
use rusqlite::Connection;

use crate::integration::cli::{assert_code, assert_same_content, integrity, text, walk};
use crate::support::d1::D1Server;
use crate::support::require;
use crate::support::s3::S3Server;

/// A row value that must never appear in anything Patina stores, logs or records.
const SENTINEL: &str = "hush-7f3a9c-sentinel";
/// A column name: it appears only in the schema (the dump's `CREATE TABLE`).
const COLUMN: &str = "hush_body";
const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn age() -> &'static str {
    require("age", "apt-get install -y age")
}

/// An identity made by `age-keygen -o FILE`, and its public key as `age-keygen -y` prints it.
struct Key {
    file: PathBuf,
    public: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let keygen = require("age-keygen", "apt-get install -y age");
    let file = dir.join(name);
    let o = Command::new(keygen).arg("-o").arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(keygen).arg("-y").arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    Key {
        file,
        public: String::from_utf8(o.stdout).unwrap().trim().to_string(),
    }
}

/// An identity file holding several identities (`cat a.txt b.txt`), as after a rotation.
fn both(dir: &Path, keys: &[&Key]) -> PathBuf {
    let path = dir.join(format!("identities-{}.txt", keys.len()));
    let text: String = keys
        .iter()
        .map(|k| std::fs::read_to_string(&k.file).unwrap())
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A small database whose rows carry [`SENTINEL`] and whose schema carries [`COLUMN`].
fn secret_db(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, {COLUMN} TEXT NOT NULL, n REAL);
         CREATE INDEX notes_n ON notes(n);
         CREATE TABLE tags (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT);
         INSERT INTO tags (label) VALUES ('a'), ('b');"
    ))
    .unwrap();
    for i in 0..300 {
        c.execute(
            "INSERT INTO notes VALUES (?1, ?2, ?3)",
            rusqlite::params![i, format!("{SENTINEL} {i}"), i as f64 / 7.0],
        )
        .unwrap();
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Nothing readable in `bytes`: no schema, no column name, no row value.
#[track_caller]
fn assert_unreadable(what: &str, bytes: &[u8]) {
    for needle in ["CREATE TABLE", COLUMN, SENTINEL] {
        assert!(!contains(bytes, needle), "{what} shows {needle:?}");
    }
}

/// Every file under `root` (a storage folder or the S3 server's bucket folder): nothing
/// readable anywhere, every dump sealed with age — daily objects and archive members alike —
/// and every manifest recording it. Returns (sealed daily dumps, sealed archive members).
fn assert_every_stored_dump_is_sealed(root: &Path) -> (usize, usize) {
    let mut files = Vec::new();
    walk(root, &mut files);
    let (mut dumps, mut members) = (0, 0);
    for file in &files {
        let name = file.to_string_lossy().into_owned();
        let bytes = std::fs::read(file).unwrap();
        assert_unreadable(&name, &bytes);
        if name.ends_with(".manifest.json") {
            let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if m["tier"] == "daily" {
                assert_eq!(m["encryption"]["kind"], "age", "{name}");
                assert!(m["key"].as_str().unwrap().ends_with(".age"), "{name}");
            } else {
                for member in m["members"].as_array().unwrap() {
                    assert_eq!(member["encryption"]["kind"], "age", "{name}: {member}");
                }
            }
        } else if name.contains(".s3s") {
            // s3s-fs's own metadata beside an object.
        } else if name.contains("/daily/") {
            assert!(name.ends_with(".sql.zst.age"), "{name} is not sealed");
            assert!(bytes.starts_with(AGE_HEADER), "{name} is not an age file");
            dumps += 1;
        } else if name.ends_with(".tar") {
            let mut tar = tar::Archive::new(bytes.as_slice());
            for entry in tar.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let mut member = Vec::new();
                entry.read_to_end(&mut member).unwrap();
                if !path.ends_with(".manifest.json") {
                    assert!(path.ends_with(".sql.zst.age"), "{name}: member {path}");
                    assert!(member.starts_with(AGE_HEADER), "{name}: member {path}");
                    members += 1;
                }
            }
        }
    }
    (dumps, members)
}

/// `bash -c SCRIPT` in `dir` (with pipefail): the plain tools, as an operator types them.
#[track_caller]
fn sh(dir: &Path, script: &str) -> Output {
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {script}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}\n{}", text(&o));
    o
}

/// A folder with a policy file, the secret database, and `patina` run in it.
struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new(policy: impl FnOnce(&Path) -> String) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        secret_db(&dir.path().join("app.db"));
        let text = policy(dir.path());
        std::fs::write(dir.path().join("patina.toml"), text).unwrap();
        Cli { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn patina(&self, args: &[&str]) -> Output {
        let o = Command::new(env!("CARGO_BIN_EXE_patina"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PATINA_CONFIG")
            .env("PATINA_LOG", "debug")
            .stdin(Stdio::null())
            .output()
            .expect("run patina");
        // Nothing readable in what Patina prints, whatever it does.
        assert_unreadable(&format!("patina {args:?} output"), &o.stdout);
        assert_unreadable(&format!("patina {args:?} log"), &o.stderr);
        assert!(!contains(&o.stderr, "AGE-SECRET-KEY"), "{}", text(&o));
        assert!(!contains(&o.stdout, "AGE-SECRET-KEY"), "{}", text(&o));
        o
    }

    /// The stored data objects under the storage folder `backups`.
    fn stored(&self, suffix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path("backups"), &mut out);
        out.retain(|p| p.to_string_lossy().ends_with(suffix));
        out.sort();
        out
    }

    /// No file of a failed restore: no target, no temporary file beside it.
    #[track_caller]
    fn assert_nothing_written(&self, target: &str) {
        assert!(!self.path(target).exists(), "{target} was written");
        let leftovers: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".patina-") || n.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

fn policy(compression: &str, encryption: &str) -> String {
    format!(
        "[storage]\nurl = \"file://backups\"\ncompression = \"{compression}\"\n\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\n{encryption}\n\
         [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n"
    )
}

#[test]
fn plain_age_zstd_and_sqlite3_restore_what_patina_sealed() {
    age();
    require("zstd", "apt-get install -y zstd");
    for (compression, suffix, decompress) in [
        ("zstd", ".sql.zst.age", "| zstd -d "),
        ("gzip", ".sql.gz.age", "| gzip -dc "),
        ("none", ".sql.age", ""),
    ] {
        let mut key = None;
        let cli = Cli::new(|dir| {
            let k = keygen(dir, "identity.txt");
            let p = policy(
                compression,
                &format!("[encryption]\nrecipients = [\"{}\"]\n", k.public),
            );
            key = Some(k);
            p
        });
        let key = key.unwrap();
        assert_code(&cli.patina(&["backup"]), 0);
        let stored = cli.stored(suffix);
        assert_eq!(stored.len(), 1, "{compression}: {stored:?}");
        let bytes = std::fs::read(&stored[0]).unwrap();
        assert!(bytes.starts_with(AGE_HEADER), "{compression}");
        assert_unreadable(compression, &bytes);

        // The manifest records the recipient; sha256 and size are of the stored (sealed) bytes.
        let manifest_path = stored[0]
            .to_string_lossy()
            .replace(suffix, ".manifest.json");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        assert_eq!(
            m["encryption"],
            serde_json::json!({"kind": "age", "recipients": [key.public]}),
            "{compression}"
        );
        assert_eq!(m["size"], bytes.len() as u64);
        let o = sh(
            cli.dir.path(),
            &format!("sha256sum < '{}'", stored[0].display()),
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with(m["sha256"].as_str().unwrap()),
            "{compression}"
        );

        // Without Patina: age -d -i identity.txt X | zstd -d | sqlite3 new.db
        sh(
            cli.dir.path(),
            &format!(
                "age -d -i identity.txt '{}' {decompress}| sqlite3 plain.db",
                stored[0].display()
            ),
        );
        assert_same_content(&cli.path("plain.db"), &cli.path("app.db"));
        assert_eq!(integrity(&cli.path("plain.db")), "ok");
    }
}

#[test]
fn a_host_with_only_recipients_backs_up_but_reads_nothing_and_writes_nothing() {
    let mut keys = Vec::new();
    let cli = Cli::new(|dir| {
        keys.push(keygen(dir, "identity.txt"));
        keys.push(keygen(dir, "stranger.txt"));
        policy(
            "zstd",
            &format!("[encryption]\nrecipients = [\"{}\"]\n", keys[0].public),
        )
    });
    let (key, stranger) = (&keys[0], &keys[1]);
    assert_code(&cli.patina(&["backup"]), 0);

    // check: the recipient's fingerprint, no identity here.
    let o = cli.patina(&["check"]);
    assert_code(&o, 0);
    let out = text(&o);
    assert!(
        out.contains(&format!("recipient:  {}", key.public)),
        "{out}"
    );
    assert!(out.contains("identity:   none here"), "{out}");

    // list: who each restore point was sealed for.
    let o = cli.patina(&["list"]);
    assert_code(&o, 0);
    let short: String = key.public.chars().take(16).collect();
    assert!(
        text(&o).contains("SEALED FOR") && text(&o).contains(&format!("{short}…")),
        "{}",
        text(&o)
    );
    let o = cli.patina(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["encryption"]["recipients"][0], key.public.as_str());
    // A catalog rebuilt from storage alone knows it too (from the manifests).
    std::fs::remove_file(cli.path(".patina/patina.db")).unwrap();
    assert_code(&cli.patina(&["catalog", "rebuild"]), 0);
    let o = cli.patina(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["encryption"]["recipients"][0], key.public.as_str());

    // restore, verify: exit 1, what and why and what to do; nothing downloaded or written.
    let o = cli.patina(&["restore", "app", "--to", "out.db"]);
    assert_code(&o, 1);
    let err = text(&o);
    assert!(
        err.contains(&format!("is encrypted (age for {})", key.public))
            && err.contains("no identity_file is configured")
            && err.contains("Try: set identity_file in [encryption], or pass --identity FILE"),
        "{err}"
    );
    cli.assert_nothing_written("out.db");
    let o = cli.patina(&["verify"]);
    assert_code(&o, 1);
    assert!(text(&o).contains("is encrypted"), "{}", text(&o));
    let o = cli.patina(&["restore", "app", "--format", "d1", "--to", "app.d1.sql"]);
    assert_code(&o, 1);
    cli.assert_nothing_written("app.d1.sql");

    // A wrong identity names the recipients the backup was sealed for.
    let o = cli.patina(&[
        "restore",
        "app",
        "--to",
        "out.db",
        "--identity",
        "stranger.txt",
    ]);
    assert_code(&o, 1);
    let err = text(&o);
    assert!(
        err.contains(&format!("was sealed for {}", key.public))
            && err.contains("none of the 1 identities in stranger.txt opens it")
            && err.contains(&format!("(they open {})", stranger.public)),
        "{err}"
    );
    cli.assert_nothing_written("out.db");

    // With the identity (on the command line, as on a clean machine): restored and verified.
    let o = cli.patina(&[
        "restore",
        "app",
        "--to",
        "out.db",
        "--identity",
        "identity.txt",
    ]);
    assert_code(&o, 0);
    assert_same_content(&cli.path("out.db"), &cli.path("app.db"));
    assert_code(&cli.patina(&["verify", "--identity", "identity.txt"]), 0);

    // The catalog holds nothing readable either.
    let mut catalog = std::fs::read(cli.path(".patina/patina.db")).unwrap();
    catalog.extend(std::fs::read(cli.path(".patina/patina.db-wal")).unwrap_or_default());
    assert!(!contains(&catalog, SENTINEL) && !contains(&catalog, COLUMN));
}

#[test]
fn a_truncated_encrypted_object_is_caught_before_anything_is_loaded() {
    let mut key = None;
    let cli = Cli::new(|dir| {
        let k = keygen(dir, "identity.txt");
        let p = policy(
            "zstd",
            &format!(
                "[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"identity.txt\"\n",
                k.public
            ),
        );
        key = Some(k);
        p
    });
    assert_code(&cli.patina(&["backup"]), 0);
    let stored = cli.stored(".sql.zst.age").remove(0);
    let bytes = std::fs::read(&stored).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 17, bytes.len() / 2, 40] {
        std::fs::write(&stored, &bytes[..cut]).unwrap();
        let o = cli.patina(&["restore", "app", "--to", "out.db"]);
        assert_code(&o, 1);
        assert!(
            text(&o).contains("checksum mismatch") && text(&o).contains(&format!("({cut} bytes)")),
            "{}",
            text(&o)
        );
        cli.assert_nothing_written("out.db");
    }
    std::fs::write(&stored, &bytes).unwrap();
    assert_code(&cli.patina(&["restore", "app", "--to", "out.db"]), 0);
    assert_same_content(&cli.path("out.db"), &cli.path("app.db"));
    drop(key);
}

/// The write paths that exist: a manual backup, the D1 pre-restore safety backup (through a
/// restore into D1, which itself opens a sealed backup), then on S3 scheduled and catch-up
/// backups and a weekly archive. A policy that asks for encryption stores no plaintext on any
/// of them. (Replica copies do not exist yet: they must copy stored bytes as they are.)
#[test]
fn a_policy_that_asks_for_encryption_never_stores_plaintext() {
    const ID_SRC: &str = "11111111-1111-4111-8111-111111111111";
    const ID_TARGET: &str = "33333333-3333-4333-8333-333333333333";
    let dir = tempfile::tempdir().unwrap();
    let path = |rel: &str| dir.path().join(rel);
    let key = keygen(dir.path(), "identity.txt");
    secret_db(&path("d1-source.db"));
    secret_db(&path("d1-target.db"));
    Connection::open(path("d1-target.db"))
        .unwrap()
        .execute_batch("UPDATE notes SET n = -n;")
        .unwrap();
    secret_db(&path("app.db"));
    let server = D1Server::start();
    server.add_database(ID_SRC, &path("d1-source.db"));
    server.add_database(ID_TARGET, &path("d1-target.db"));
    std::fs::write(
        path("patina.toml"),
        format!(
            "[storage]\nurl = \"file://backups\"\n\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"identity.txt\"\n\n\
             [cloudflare]\naccount_id = \"{}\"\napi_token = \"${{CF_API_TOKEN}}\"\napi_url = \"{}\"\n\n\
             [[database]]\nname = \"groveauth\"\nkind = \"d1\"\nid = \"{ID_SRC}\"\npriority = \"critical\"\n\n\
             [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n",
            key.public, server.account, server.api_url
        ),
    )
    .unwrap();
    let patina = |args: &[&str]| -> Output {
        let o = Command::new(env!("CARGO_BIN_EXE_patina"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("PATINA_CONFIG")
            .env("CF_API_TOKEN", &server.token)
            .env("PATINA_LOG", "debug")
            .stdin(Stdio::null())
            .output()
            .expect("run patina");
        assert_unreadable(&format!("patina {args:?} log"), &o.stderr);
        o
    };
    // Manual backups of a D1 and a SQLite database.
    assert_code(&patina(&["backup", "--reason", "before the migration"]), 0);
    // Into a D1 database holding tables: a sealed safety backup first, then the sealed backup
    // is opened and imported.
    let o = patina(&["restore", "groveauth", "--to-d1", ID_TARGET, "--force"]);
    assert_code(&o, 0);
    let (dumps, _) = assert_every_stored_dump_is_sealed(&path("backups"));
    assert_eq!(dumps, 3, "groveauth, app and the safety backup");
    let mut files = Vec::new();
    walk(&path("backups"), &mut files);
    let safety = files
        .iter()
        .find(|p| {
            p.to_string_lossy().contains("/groveauth-pre-restore/")
                && p.to_string_lossy().ends_with(".manifest.json")
        })
        .expect("a safety backup");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(safety).unwrap()).unwrap();
    assert_eq!(m["trigger"], "pre-restore");
    assert_eq!(m["encryption"]["recipients"][0], key.public.as_str());

    // Scheduled and catch-up backups and a weekly archive, by the reconcile loop on S3.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s3 = S3Server::start().await;
        let text = std::fs::read_to_string(path("patina.toml")).unwrap();
        let text = text.replace("url = \"file://backups\"", "url = \"memory://\"");
        let mut policy: Policy =
            patina::config::from_str(&text, "patina.toml", dir.path(), &|_| {
                Some(server.token.clone())
            })
            .unwrap();
        policy.storage = s3.storage("patina/");
        policy.databases.retain(|d| d.name == "app");
        let store = Store::open(&policy.storage).unwrap();
        let catalog = Arc::new(Mutex::new(
            Catalog::open(&dir.path().join("s3-state")).unwrap(),
        ));
        let clock = ManualClock::new(t("2026-11-16T10:00:00Z"));
        let reconciler = Reconciler::new(
            Arc::new(policy),
            store.clone(),
            catalog,
            clock.clock(),
            Arc::new(Quiet),
        );
        for at in [
            "2026-11-16T10:00:00Z", // catch-up
            "2026-11-17T03:00:05Z", // scheduled
            "2026-11-18T03:00:05Z",
            "2026-11-29T04:00:05Z", // catch-up, and week 47's archive
            "2026-11-29T04:05:00Z",
        ] {
            clock.set(t(at));
            reconciler.run_once().await.unwrap();
            reconciler.wait_idle().await;
        }
        let (dumps, members) = assert_every_stored_dump_is_sealed(&s3.bucket_dir());
        assert!(dumps >= 1, "{dumps}");
        assert_eq!(members, 3, "week 47's three dumps, sealed as they were");
        drop(s3);
    });
}

/// Rotation and mixed histories, through the reconcile loop: plaintext, then sealed for A,
/// then for B, archived together, the dailies pruned, then encryption turned off again. Every
/// restore point restores with the right identity (an identity file may hold several), a wrong
/// or missing one is refused naming the recipients, the archive's members open with plain `tar`
/// and `age`, and retention prunes the mixed week like any other.
#[tokio::test]
async fn rotation_and_mixed_histories_restore_archive_and_prune_normally() {
    age();
    let dir = tempfile::tempdir().unwrap();
    let a = keygen(dir.path(), "a.txt");
    let b = keygen(dir.path(), "b.txt");
    let ab = both(dir.path(), &[&a, &b]);
    secret_db(&dir.path().join("app.db"));
    let policy_with = |encryption: &str| -> Arc<Policy> {
        let text = format!("[daemon]\ntick = \"60s\"\n\n{}", policy("zstd", encryption));
        std::fs::write(dir.path().join("patina.toml"), &text).unwrap();
        Arc::new(patina::config::from_str(&text, "patina.toml", dir.path(), &|_| None).unwrap())
    };
    let sealed_for = |k: &Key| format!("[encryption]\nrecipients = [\"{}\"]\n", k.public);
    let plain = policy_with("");
    let store = Store::open(&plain.storage).unwrap();
    let catalog = Arc::new(Mutex::new(Catalog::open(&plain.daemon.state_dir).unwrap()));
    let clock = ManualClock::new(t("2026-11-16T10:00:00Z"));
    let reconciler = Reconciler::new(
        Arc::clone(&plain),
        store.clone(),
        Arc::clone(&catalog),
        clock.clock(),
        Arc::new(Quiet),
    );
    let pass = |at: &'static str| {
        let (clock, reconciler) = (&clock, &reconciler);
        async move {
            clock.set(t(at));
            reconciler.run_once().await.unwrap();
            reconciler.wait_idle().await;
        }
    };
    pass("2026-11-16T10:00:00Z").await; // plaintext
    reconciler.set_policy(policy_with(&sealed_for(&a)), store.clone());
    pass("2026-11-17T03:00:05Z").await; // sealed for A
    reconciler.set_policy(policy_with(&sealed_for(&b)), store.clone());
    pass("2026-11-18T03:00:05Z").await; // rotated: sealed for B

    // `patina list`'s source: which recipients sealed each restore point.
    let rows = catalog.lock().unwrap().list_backups(Some("app")).unwrap();
    let sealed: Vec<(String, Vec<String>)> = rows
        .iter()
        .map(|r| (r.date.clone(), r.sealed_for.clone()))
        .collect();
    assert_eq!(
        sealed,
        vec![
            ("2026-11-18".into(), vec![b.public.clone()]),
            ("2026-11-17".into(), vec![a.public.clone()]),
            ("2026-11-16".into(), vec![]),
        ]
    );

    let restore_on = |day: &str, keys: Keys| {
        let store = store.clone();
        let target = dir
            .path()
            .join(format!("{day}-{}.db", uuid::Uuid::new_v4().simple()));
        let day: NaiveDate = day.parse().unwrap();
        async move {
            let located = restore::locate(&store, "app", At::Date(day)).await.unwrap();
            let from = restore::Sources::single(store.clone());
            let restored = restore::restore_located(&from, &located, &target, false, &keys).await;
            (located, restored.map(|r| r.target))
        }
    };
    let (a, b, ab, restore_on, app) = (&a, &b, &ab, &restore_on, dir.path().join("app.db"));
    let app = &app;
    let check_all = |archived: bool| async move {
        // Plaintext: no identity needed.
        let (located, restored) = restore_on("2026-11-16", Keys::none()).await;
        assert_eq!(matches!(located, Located::Archived { .. }), archived);
        assert_same_content(&restored.unwrap(), app);
        // Sealed for A: A alone, or A and B together, open it; B alone or nothing do not.
        for keys in [Keys::file(&a.file), Keys::file(ab)] {
            let (_, restored) = restore_on("2026-11-17", keys).await;
            assert_same_content(&restored.unwrap(), app);
        }
        let (_, refused) = restore_on("2026-11-17", Keys::file(&b.file)).await;
        match refused.unwrap_err() {
            e @ RestoreError::WrongIdentity { .. } => {
                let m = e.to_string();
                assert!(m.contains(&format!("was sealed for {}", a.public)), "{m}");
                assert!(m.contains(&format!("(they open {})", b.public)), "{m}");
            }
            e => panic!("{e}"),
        }
        let (_, refused) = restore_on("2026-11-17", Keys::none()).await;
        assert!(
            matches!(refused, Err(RestoreError::NoIdentity { .. })),
            "{refused:?}"
        );
        // Sealed for B after the rotation.
        let (_, restored) = restore_on("2026-11-18", Keys::file(ab)).await;
        assert_same_content(&restored.unwrap(), app);
    };
    check_all(false).await;

    // Week 47 is archived as it was stored (one plaintext, two sealed members), then its
    // dailies are pruned by retention like any others.
    pass("2026-11-29T04:00:05Z").await;
    // Retention runs on a full listing: the next one is an hour after that pass's.
    pass("2026-11-29T05:00:10Z").await;
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        keys.contains(&"weekly/2026-W47.tar".to_string()),
        "{keys:?}"
    );
    for day in ["2026-11-16", "2026-11-17", "2026-11-18"] {
        assert!(
            !keys.iter().any(|k| k.starts_with(&format!("daily/{day}/"))),
            "{day} was not pruned: {keys:?}"
        );
    }
    let archive_manifest: serde_json::Value =
        serde_json::from_slice(&store.get("weekly/2026-W47.manifest.json").await.unwrap()).unwrap();
    let sealed: Vec<serde_json::Value> = archive_manifest["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["encryption"]["recipients"].clone())
        .collect();
    assert_eq!(
        sealed,
        vec![
            serde_json::Value::Null,
            serde_json::json!([a.public]),
            serde_json::json!([b.public]),
        ]
    );
    check_all(true).await;

    // Without Patina: tar -xf, then age -d | zstd -d | sqlite3, member by member.
    let member = archive_manifest["members"][1]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(member.ends_with(".sql.zst.age"), "{member}");
    let out = dir.path().join("extracted");
    std::fs::create_dir(&out).unwrap();
    sh(
        &out,
        &format!(
            "tar -xf '{}' && age -d -i '{}' '{member}' | zstd -d | sqlite3 from-tar.db",
            dir.path().join("backups/weekly/2026-W47.tar").display(),
            ab.display()
        ),
    );
    assert_same_content(&out.join("from-tar.db"), &dir.path().join("app.db"));

    // Encryption turned off again: plaintext from now on, the sealed history still opens.
    reconciler.set_policy(policy_with(""), store.clone());
    pass("2026-11-30T03:00:05Z").await;
    let (_, restored) = restore_on("2026-11-30", Keys::none()).await;
    assert_same_content(&restored.unwrap(), &dir.path().join("app.db"));
    let (_, restored) = restore_on("2026-11-29", Keys::file(&b.file)).await;
    assert_same_content(&restored.unwrap(), &dir.path().join("app.db"));
}

/// `GET /download`: 409 with a hint without an identity (nothing fetched, the daemon keeps
/// backing up), the sealed bytes with `?raw=1`, 409 naming the recipients with a wrong
/// identity, the SQL with the right one.
#[tokio::test]
async fn download_needs_the_identity_and_says_so() {
    const TOKEN: &str = "t0ken-for-tests";
    let dir = tempfile::tempdir().unwrap();
    let a = keygen(dir.path(), "a.txt");
    let b = keygen(dir.path(), "b.txt");
    secret_db(&dir.path().join("app.db"));
    let policy_with = |identity: &str| -> Arc<Policy> {
        let text = format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\n\n{}",
            policy(
                "zstd",
                &format!("[encryption]\nrecipients = [\"{}\"]\n{identity}", a.public)
            )
        );
        Arc::new(patina::config::from_str(&text, "patina.toml", dir.path(), &|_| None).unwrap())
    };
    let policy = policy_with("");
    let store = Store::open(&policy.storage).unwrap();
    let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
    let state_dir = policy.daemon.state_dir.clone();
    let clock = ManualClock::new(t("2026-11-16T10:00:00Z"));
    let reconciler = Arc::new(Reconciler::new(
        policy,
        store.clone(),
        Arc::clone(&catalog),
        clock.clock(),
        Arc::new(Quiet),
    ));
    reconciler.run_once().await.unwrap();
    reconciler.wait_idle().await;
    let listener = patina::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = patina::http::AppState::new(Arc::clone(&reconciler), catalog, clock.clock());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patina::http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(TOKEN).send();

    let r = get("/download/2026-11-16/app").await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let e: serde_json::Value = r.json().await.unwrap();
    let error = e["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("is encrypted (age for {})", a.public)),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("identity_file"), "{e}");
    let leftovers: Vec<_> = std::fs::read_dir(&state_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".download-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The stored bytes need no identity: still sealed.
    let r = get("/download/2026-11-16/app?raw=1").await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(disposition.ends_with(".sql.zst.age\""), "{disposition}");
    let raw = r.bytes().await.unwrap();
    assert!(raw.starts_with(AGE_HEADER));
    assert_unreadable("raw download", &raw);

    // The daemon keeps backing up.
    clock.set(t("2026-11-17T03:00:05Z"));
    let report = reconciler.run_once().await.unwrap();
    reconciler.wait_idle().await;
    assert_eq!(report.backups_started, 1, "{report:?}");
    let r = get("/download/2026-11-17/app?raw=1").await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);

    // A wrong identity: 409 naming the recipients; the right one (among others): the SQL.
    reconciler.set_policy(
        policy_with(&format!("identity_file = \"{}\"\n", b.file.display())),
        store.clone(),
    );
    let r = get("/download/2026-11-16/app").await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains(&format!("was sealed for {}", a.public)),
        "{e}"
    );
    let ab = both(dir.path(), &[&b, &a]);
    reconciler.set_policy(
        policy_with(&format!("identity_file = \"{}\"\n", ab.display())),
        store.clone(),
    );
    let r = get("/download/2026-11-16/app").await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let sql = r.text().await.unwrap();
    assert!(
        sql.contains(SENTINEL) && sql.contains("CREATE TABLE"),
        "{}",
        &sql[..200]
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// A reload says what it did to encryption (the log line operators see after an edit).
#[test]
fn a_reload_names_the_encryption_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = keygen(dir.path(), "a.txt");
    let b = keygen(dir.path(), "b.txt");
    let load = |encryption: &str| -> Policy {
        patina::config::from_str(
            &policy("zstd", encryption),
            "patina.toml",
            dir.path(),
            &|_| None,
        )
        .unwrap()
    };
    let sealed = |k: &Key| format!("[encryption]\nrecipients = [\"{}\"]\n", k.public);
    let changes = |old: &str, new: &str| patina::daemon::describe_changes(&load(old), &load(new));
    assert_eq!(
        changes("", &sealed(&a)),
        vec![format!(
            "encryption turned on: new backups are sealed for {}",
            a.public
        )]
    );
    assert_eq!(
        changes(&sealed(&a), &sealed(&b)),
        vec![format!(
            "encryption recipients changed: new backups are sealed for {}",
            b.public
        )]
    );
    assert_eq!(
        changes(&sealed(&a), ""),
        vec!["encryption turned off: new backups are stored unencrypted".to_string()]
    );
    assert_eq!(
        changes(&sealed(&a), &sealed(&a)),
        vec!["no effective change".to_string()]
    );
}
