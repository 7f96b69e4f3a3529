//! Crash consistency: real `patina backup` processes are killed with SIGKILL at random moments
//! (mid-dump, mid-upload, between data object and manifest, mid-catalog write), then the daemon
//! starts and reconciles. Nothing committed may be lost or lie: every manifest's object exists
//! with the recorded sha256 and size, debris is cleaned, interrupted jobs are recorded as such,
//! the catalog agrees with storage, and the next backup succeeds.
//!
//! `PATINA_CRASH_KILLS` sets the number of kills (20 here; the soak run uses 200).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patina::catalog::Catalog;
use patina::inventory::Inventory;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::Store;
use sha2::Digest;

fn make_db(path: &Path, rows: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT, blob BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, printf('row %d %s', i, hex(randomblob(40))), randomblob(200) FROM n;"
    ))
    .unwrap();
}

/// A cheap deterministic random sequence (no extra dependency): splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backups_lose_nothing_and_lie_about_nothing() {
    let kills: u32 = crate::support::knob("PATINA_CRASH_KILLS", 20);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    make_db(&p.join("big.db"), 40_000);
    make_db(&p.join("small.db"), 500);
    std::fs::write(
        p.join("patina.toml"),
        "[daemon]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"file://backups\"\ncompression = \"zstd\"\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\
         [[database]]\nname = \"big\"\nkind = \"sqlite\"\npath = \"big.db\"\npriority = \"critical\"\n\
         [[database]]\nname = \"small\"\nkind = \"sqlite\"\npath = \"small.db\"\npriority = \"critical\"\n",
    )
    .unwrap();

    let mut rng = Rng(0x005E_ED0F_CAFE);
    let mut finished = 0;
    for _ in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_patina"))
            .arg("backup")
            .current_dir(p)
            .env_remove("PATINA_CONFIG")
            .env("PATINA_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.next() % 600);
        tokio::time::sleep(delay).await;
        if child.try_wait().unwrap().is_some() {
            finished += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Keys have one-second resolution: move on to a fresh second now and then.
        if rng.next().is_multiple_of(3) {
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }

    // The daemon starts: interrupted jobs are marked, then it reconciles.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_patina"))
        .args(["run", "--shutdown-grace", "10s"])
        .current_dir(p)
        .env_remove("PATINA_CONFIG")
        .env("PATINA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(p.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        daemon.wait().unwrap().code(),
        Some(0),
        "the daemon's log:\n{}",
        std::fs::read_to_string(p.join("daemon.log")).unwrap_or_default()
    );

    let policy = patina::config::load(&p.join("patina.toml")).unwrap();
    let store = Store::open(&policy.storage).unwrap();

    // Every committed backup is whole: the object exists with the recorded sha256 and size.
    let inv = patina::bucket::scan(&store).await.unwrap();
    assert!(!inv.dumps.is_empty());
    for d in &inv.dumps {
        let m = patina::bucket::read_manifest(&store, &d.manifest_key)
            .await
            .unwrap();
        let bytes = store.get(&m.key).await.unwrap();
        assert_eq!(bytes.len() as u64, m.size, "{}", m.key);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            m.sha256,
            "{}",
            m.key
        );
    }

    // No job is left "running"; killed ones are "interrupted".
    {
        let c = Catalog::open(&policy.daemon.state_dir).unwrap();
        let running: i64 = c
            .connection()
            .query_row(
                "SELECT count(*) FROM backup_jobs WHERE status = 'running'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(running, 0);
        let interrupted: i64 = c
            .connection()
            .query_row(
                "SELECT count(*) FROM backup_jobs WHERE status = 'interrupted'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if finished < kills {
            assert!(
                interrupted >= 1,
                "{kills} kills, {finished} finished, none interrupted"
            );
        }
    }

    // An hour later, debris of the killed uploads is cleaned and the catalog agrees with storage.
    let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
    let clock = ManualClock::new(chrono::Utc::now() + chrono::Duration::hours(2));
    let reconciler = Reconciler::new(
        Arc::new(policy.clone()),
        store.clone(),
        Arc::clone(&catalog),
        clock.clock(),
        Arc::new(patina::backup::Quiet),
    );
    reconciler.run_once().await.unwrap();
    reconciler.wait_idle().await;
    let inv: Inventory = patina::bucket::scan(&store).await.unwrap();
    assert!(inv.debris.is_empty(), "debris left: {:?}", inv.debris);
    assert!(
        inv.orphaned_manifests.is_empty(),
        "{:?}",
        inv.orphaned_manifests
    );
    let known = catalog.lock().unwrap().known_keys().unwrap();
    let present: std::collections::BTreeSet<String> =
        inv.dumps.iter().map(|d| d.data.key.clone()).collect();
    assert_eq!(known, present, "the catalog disagrees with storage");

    // And the next backup succeeds and verifies.
    for command in ["backup", "verify"] {
        let next = Command::new(env!("CARGO_BIN_EXE_patina"))
            .arg(command)
            .current_dir(p)
            .env_remove("PATINA_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            next.status.code(),
            Some(0),
            "{command}: {}{}",
            String::from_utf8_lossy(&next.stdout),
            String::from_utf8_lossy(&next.stderr)
        );
    }
}
