//! Source and local-disk faults: a database file replaced while it is being dumped (the dump is
//! still one consistent snapshot of the file it started on), and a full disk under a restore
//! (a clear error, nothing left behind, the target untouched).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use patina::backup::{self, BackupError, Observer};
use patina::catalog::Catalog;
use patina::manifest::{Manifest, Trigger};
use patina::source::sqlite::Progress;
use patina::store::Store;

fn make_db(path: &Path, rows: u32, tag: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT, body BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, '{tag}', randomblob(100) FROM n;"
    ))
    .unwrap();
}

/// Replaces the source file (rename over it, as deploy scripts do) at the first progress call.
struct Replacer {
    source: std::path::PathBuf,
    replacement: std::path::PathBuf,
    done: AtomicBool,
}

impl Observer for Replacer {
    fn started(&self, _: &str) {}
    fn progress(&self, _: &str, _: Progress) {
        if !self.done.swap(true, Ordering::SeqCst) {
            std::fs::rename(&self.replacement, &self.source).unwrap();
        }
    }
    fn finished(&self, _: &str, _: &Result<Manifest, BackupError>) {}
}

#[tokio::test]
async fn a_file_replaced_mid_backup_still_yields_one_consistent_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    make_db(&p.join("app.db"), 30_000, "old");
    make_db(&p.join("new.db"), 10, "new");
    let text = "[storage]\nurl = \"file://backups\"\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\
                [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n";
    let policy = Arc::new(patina::config::from_str(text, "patina.toml", p, &|_| None).unwrap());
    let ctx = backup::Context {
        store: Store::open(&policy.storage).unwrap(),
        catalog: Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap())),
        clock: backup::system_clock(),
        tickets: None,
        policy,
    };
    let replacer = Arc::new(Replacer {
        source: p.join("app.db"),
        replacement: p.join("new.db"),
        done: AtomicBool::new(false),
    });
    let report = backup::run_job(
        &ctx,
        backup::JobRequest {
            job_id: None,
            databases: vec!["app".into()],
            trigger: Trigger::Manual,
            initiated_by: None,
            reason: None,
        },
        replacer.clone(),
    )
    .await
    .unwrap();
    assert!(
        replacer.done.load(Ordering::SeqCst),
        "the file was not replaced mid-dump"
    );
    let manifest = report.results[0].1.as_ref().expect("the backup succeeds");
    // The snapshot is of the file the dump opened: all 30,000 "old" rows, none of the new.
    assert_eq!(manifest.tables["t"], 30_000);
    let target = p.join("restored.db");
    patina::restore::restore(
        &ctx.store,
        manifest,
        &target,
        false,
        &patina::restore::Keys::none(),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(&target).unwrap();
    let (n, tags): (i64, String) = conn
        .query_row(
            "SELECT count(*), group_concat(DISTINCT tag) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, tags.as_str()), (30_000, "old"));
}

/// A small tmpfs (the tests run as root, as CI does).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a tmpfs needs root (CI runs as root): run the tests as root"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_under_a_restore_fails_cleanly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    make_db(&p.join("app.db"), 40_000, "x"); // ~5 MB
    let text = "[storage]\nurl = \"file://backups\"\n[priorities.critical]\nschedule = \"0 3 * * *\"\n\
                [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n";
    std::fs::write(p.join("patina.toml"), text).unwrap();
    let backup = Command::new(env!("CARGO_BIN_EXE_patina"))
        .arg("backup")
        .current_dir(p)
        .env_remove("PATINA_CONFIG")
        .output()
        .unwrap();
    assert!(backup.status.success());

    let small = Tmpfs::mount("1m");
    let target = small.0.path().join("restored.db");
    let o = Command::new(env!("CARGO_BIN_EXE_patina"))
        .args(["restore", "app", "--to"])
        .arg(&target)
        .current_dir(p)
        .env_remove("PATINA_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("No space left") || err.contains("full"),
        "the error says the disk is full: {err}"
    );
    let left: Vec<_> = std::fs::read_dir(small.0.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(
        left.is_empty(),
        "a failed restore leaves nothing behind: {left:?}"
    );
}
