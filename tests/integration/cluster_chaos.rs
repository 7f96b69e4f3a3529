//! Several daemons, one bucket, under failure (DESIGN §16, issue 18): three `patina run`
//! processes share a policy of 20 databases (`PATINA_CHAOS_DATABASES`; `PATINA_CHAOS_LARGE_MB`
//! makes the first one large, so a pause can land mid-upload) with minute schedules,
//! a 1 s tick and a full listing every 15 s (retention runs on those) on the journaled in-process
//! S3 server (one request at a time, so conditional writes are atomic as on R2; every change
//! journaled with the node that signed it). Random nodes are SIGKILLed and restarted,
//! SIGSTOPped past the lease ttl and continued, or stopped with SIGTERM, for
//! `PATINA_CHAOS_SECONDS` (150 in `cargo test`; the soak run uses 600). Then a checker reads the
//! journal and the bucket:
//! - every committed manifest is named by exactly one committed claim, and a claim (one schedule
//!   fire of one database) names one manifest: no database is backed up twice for a fire;
//! - every fire in the window was backed up within a bound of `lease_ttl` + tick + the backup;
//! - no manifest is left without its data object;
//! - every deletion of a backup was made by the node holding the maintenance lease at that
//!   point of the journal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use patina::inventory::Inventory;
use patina::lease::{ClaimBody, ClaimState, LeaseBody};

use crate::support::daemon::Daemon;
use crate::support::s3::{Entry, S3Server};

const NODES: [&str; 3] = ["a", "b", "c"];
/// 20 in `cargo test`; `PATINA_CHAOS_DATABASES` for a bigger soak.
fn databases() -> usize {
    crate::support::knob("PATINA_CHAOS_DATABASES", 20)
}
const TTL_SECS: u64 = 3;
const TICK_SECS: u64 = 1;
/// Most passes list only the newest keys; retention runs on the full listings between.
const FULL_LISTING_SECS: u64 = 15;

fn policy(server: &S3Server, node: &str, dbs: &Path) -> String {
    let mut s = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"{TICK_SECS}s\"\nconcurrency = 4\nfull_listing = \"{FULL_LISTING_SECS}s\"\n\n\
         [storage]\nurl = \"s3://{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"auto\"\n\
         access_key_id = \"node-{node}\"\nsecret_access_key = \"node-{node}-secret\"\nprefix = \"chaos/\"\n\n\
         [cluster]\nlease_ttl = \"{TTL_SECS}s\"\nnode = \"{node}\"\n\n\
         [retention]\ndaily = \"2m\"\nweekly = \"off\"\n\n\
         [priorities.normal]\nschedule = \"* * * * *\"\n\n",
        bucket = server.bucket,
        endpoint = server.endpoint,
    );
    for i in 0..databases() {
        s.push_str(&format!(
            "[[database]]\nname = \"db{i:02}\"\nkind = \"sqlite\"\npath = \"{}\"\npriority = \"normal\"\n\n",
            dbs.join(format!("db{i:02}.sqlite")).display()
        ));
    }
    s
}

/// `PATINA_CHAOS_LARGE_MB`: db00 gets this many MiB of random blobs (0 in `cargo test`).
fn large_mb() -> usize {
    crate::support::knob("PATINA_CHAOS_LARGE_MB", 0)
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Node {
    name: &'static str,
    dir: std::path::PathBuf,
    daemon: Option<Daemon>,
    logs: Vec<String>,
}

impl Node {
    fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.dir, "info", &[]));
    }
    fn keep_log(&mut self) {
        if let Some(d) = self.daemon.take() {
            self.logs.push(d.log());
            drop(d);
        }
    }
}

fn minute_floor(t: SystemTime) -> DateTime<Utc> {
    let t: DateTime<Utc> = t.into();
    DateTime::from_timestamp(t.timestamp() - t.timestamp() % 60, 0).unwrap()
}

#[test]
fn three_daemons_under_sigkill_and_sigstop_back_up_every_fire_once() {
    let seconds: u64 = crate::support::knob("PATINA_CHAOS_SECONDS", 150);
    let seed = std::env::var("PATINA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos: {seconds} s, PATINA_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<(String, String)> = NODES
        .iter()
        .map(|n| (format!("node-{n}"), format!("node-{n}-secret")))
        .collect();
    let key_refs: Vec<(&str, &str)> = keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let server = rt.block_on(S3Server::start_journaled(&key_refs));

    let root = tempfile::tempdir().unwrap();
    let dbs = root.path().join("dbs");
    std::fs::create_dir(&dbs).unwrap();
    for i in 0..databases() {
        let conn = rusqlite::Connection::open(dbs.join(format!("db{i:02}.sqlite"))).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {})
             INSERT INTO t (v) SELECT 'row ' || x FROM c;",
            100 + i * 50
        ))
        .unwrap();
        if i == 0 && large_mb() > 0 {
            // Incompressible: its upload spans several parts, so a SIGSTOP can land mid-upload.
            conn.execute_batch(&format!(
                "CREATE TABLE big (b BLOB);
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {})
                 INSERT INTO big (b) SELECT randomblob(1048576) FROM c;",
                large_mb()
            ))
            .unwrap();
        }
    }
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|name| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("patina.toml"), policy(&server, name, &dbs)).unwrap();
            Node {
                name,
                dir,
                daemon: None,
                logs: Vec::new(),
            }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let started = SystemTime::now();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut actions = Vec::new();
    // When each node was killed, stopped or terminated: the holder of a database going down
    // restarts that database's lateness bound (DESIGN §16: within the ttl and a tick after its
    // holder dies).
    let mut disruptions: Vec<(SystemTime, &str)> = Vec::new();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(3000 + rng.next(4000)));
        let i = rng.next(3) as usize;
        let n = &mut nodes[i];
        disruptions.push((SystemTime::now(), n.name));
        match rng.next(3) {
            0 => {
                n.daemon.as_ref().unwrap().signal("-KILL");
                n.keep_log();
                std::thread::sleep(Duration::from_millis(500 + rng.next(3000)));
                n.start();
                actions.push(format!("SIGKILL {}", n.name));
            }
            1 => {
                let pause = 4000 + rng.next(4000);
                n.daemon.as_ref().unwrap().signal("-STOP");
                std::thread::sleep(Duration::from_millis(pause));
                n.daemon.as_ref().unwrap().signal("-CONT");
                actions.push(format!("SIGSTOP {} {pause} ms", n.name));
            }
            _ => {
                let d = n.daemon.as_mut().unwrap();
                d.signal("-TERM");
                d.wait_exit(Duration::from_secs(30));
                n.keep_log();
                std::thread::sleep(Duration::from_millis(rng.next(2000)));
                n.start();
                actions.push(format!("SIGTERM {}", n.name));
            }
        }
    }
    // Calm: everyone up for a while, so the last fires are backed up and the leases settle.
    std::thread::sleep(Duration::from_secs(12));
    let ended = SystemTime::now();
    // Spread: every database held by exactly one node, each node its share (ceil(20 / 3) at
    // most), as each node's /status and /metrics say.
    let mut held: BTreeMap<String, &str> = BTreeMap::new();
    for n in &mut nodes {
        let addr = n.daemon.as_mut().unwrap().addr();
        let status: serde_json::Value = rt
            .block_on(async {
                reqwest::get(format!("http://{addr}/status"))
                    .await?
                    .json()
                    .await
            })
            .unwrap();
        let cluster = &status["cluster"];
        assert_eq!(cluster["node"], n.name, "{status}");
        assert_eq!(cluster["liveNodes"], serde_json::json!(NODES), "{status}");
        let mine = cluster["heldDatabases"].as_array().unwrap();
        assert!(
            mine.len() <= databases().div_ceil(3),
            "node {}: {mine:?}",
            n.name
        );
        for db in mine {
            let db = db.as_str().unwrap().to_string();
            if let Some(other) = held.insert(db.clone(), n.name) {
                panic!("{db} held by {other} and {}", n.name);
            }
        }
        let metrics = rt
            .block_on(async {
                reqwest::get(format!("http://{addr}/metrics"))
                    .await?
                    .text()
                    .await
            })
            .unwrap();
        for db in mine {
            let line = format!("patina_lease_held{{database={db}}} 1");
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
    }
    assert_eq!(held.len(), databases(), "{held:?}");
    for n in &mut nodes {
        if let Some(d) = n.daemon.as_mut() {
            d.signal("-TERM");
            d.wait_exit(Duration::from_secs(30));
        }
        n.keep_log();
    }
    eprintln!("chaos actions: {actions:?}");
    for n in &nodes {
        let all = n.logs.join("\n");
        let count = |what: &str| all.matches(what).count();
        eprintln!(
            "node {}: {} backups committed, {} deleted by retention, {} leases taken, {} taken over, {} released, {} lost, {} backups left to another node, {} handed over mid-backup, {} ERROR lines",
            n.name,
            count("backup committed"),
            count("deleted by retention"),
            count("lease taken") - count("lease taken over"),
            count("lease taken over"),
            count("lease released"),
            count("lease lost"),
            count("backup left to another node"),
            count("backup handed over"),
            count(" ERROR ")
        );
        for line in all
            .lines()
            .filter(|l| {
                l.contains("left to another node")
                    || l.contains("handed over")
                    || l.contains(" ERROR ")
            })
            .take(3)
        {
            eprintln!("  {line}");
        }
    }
    let logs = || {
        nodes
            .iter()
            .map(|n| {
                format!(
                    "==== node {} ====\n{}",
                    n.name,
                    n.logs.join("\n---- restart ----\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // `patina plan` names each lease's holder and where it would go.
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_patina"))
        .arg("plan")
        .current_dir(&nodes[0].dir)
        .output()
        .unwrap();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{plan_text}{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        plan_text.contains(
            "cluster — this node: a, lease_ttl 3s; nodes with a heartbeat: none (left: a, b, c)"
        ),
        "{plan_text}"
    );
    assert!(
        plan_text
            .lines()
            .any(|l| l.trim_start().starts_with("db07 ") && l.ends_with("not held; no node")),
        "{plan_text}"
    );
    assert!(
        plan_text.contains(" 0 foreign") || !plan_text.contains("foreign"),
        "{plan_text}"
    );
    let journal = server.journal();
    let report = check(&journal, started, ended, &disruptions);
    let store = server.store("chaos/");
    let inventory = Inventory::classify(rt.block_on(store.list("")).unwrap());
    if !report.violations.is_empty() || !inventory.orphaned_manifests.is_empty() {
        let tail: String = logs()
            .chars()
            .rev()
            .take(60_000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "seed {seed}: {} violations:\n{}\norphaned manifests: {:?}\nactions: {actions:?}\n{tail}",
            report.violations.len(),
            report.violations.join("\n"),
            inventory.orphaned_manifests
        );
    }
    eprintln!(
        "chaos: {} fires checked, {} backups committed, {} deletions (all by the maintenance holder), latest backup {:.1} s after its fire (or its holder's disruption: {} fires), {} takeovers of unfinished claims",
        report.fires,
        report.manifests,
        report.deletions,
        report.worst_lateness,
        report.restarted_bounds,
        report.claim_takeovers
    );
    assert!(
        report.fires >= databases(),
        "too few fires checked: {}",
        report.fires
    );
    assert!(report.manifests >= databases());
}

#[derive(Default)]
struct Report {
    violations: Vec<String>,
    fires: usize,
    manifests: usize,
    deletions: usize,
    worst_lateness: f64,
    claim_takeovers: usize,
    /// Fires whose holder was disrupted after the fire and before the backup.
    restarted_bounds: usize,
}

/// The checker: replays the journal in the order the server handled it.
fn check(
    journal: &[Entry],
    started: SystemTime,
    ended: SystemTime,
    disruptions: &[(SystemTime, &str)],
) -> Report {
    let mut r = Report::default();
    // Each database's lease holder over time, as written: (when, node; None once released).
    let mut holders: BTreeMap<String, Vec<(SystemTime, Option<String>)>> = BTreeMap::new();
    let node_of = |signer: &str| signer.strip_prefix("node-").unwrap_or(signer).to_string();
    let mut maintenance: Option<LeaseBody> = None;
    // Committed claims: claim key → manifest key; and the manifests PUT, with when.
    let mut committed: BTreeMap<String, String> = BTreeMap::new();
    let mut claims_seen: BTreeMap<String, ClaimBody> = BTreeMap::new();
    let mut manifests: Vec<(String, SystemTime, String)> = Vec::new();
    for e in journal.iter().filter(|e| e.ok()) {
        let key = e
            .key()
            .strip_prefix("chaos/")
            .unwrap_or(e.key())
            .to_string();
        if e.method == "PUT" && key == "leases/maintenance.json" {
            maintenance = e.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
        } else if e.method == "PUT"
            && let Some(db) = key
                .strip_prefix("leases/db/")
                .and_then(|k| k.strip_suffix(".json"))
        {
            if let Some(lease) = e
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<LeaseBody>(b).ok())
            {
                let holder = (!lease.released).then_some(lease.node);
                holders
                    .entry(db.to_string())
                    .or_default()
                    .push((e.at, holder));
            }
        } else if e.method == "PUT" && key.starts_with("claims/") {
            let Some(body) = e
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<ClaimBody>(b).ok())
            else {
                continue;
            };
            if let Some(previous) = claims_seen.get(&key)
                && previous.state == ClaimState::Running
                && body.state == ClaimState::Running
                && previous.node != body.node
            {
                r.claim_takeovers += 1;
            }
            if body.state == ClaimState::Committed {
                let manifest = body.manifest_key.clone().unwrap_or_default();
                if let Some(before) = committed.insert(key.clone(), manifest.clone())
                    && before != manifest
                {
                    r.violations.push(format!(
                        "claim {key} committed twice: {before} and {manifest}"
                    ));
                }
            }
            claims_seen.insert(key, body);
        } else if e.method == "PUT"
            && e.query.is_empty()
            && key.starts_with("daily/")
            && key.ends_with(".manifest.json")
        {
            manifests.push((key, e.at, node_of(&e.signer)));
        } else {
            for deleted in e.deleted() {
                let key = deleted.strip_prefix("chaos/").unwrap_or(&deleted);
                if !key.starts_with("daily/") && !key.starts_with("weekly/") {
                    continue;
                }
                r.deletions += 1;
                let by = node_of(&e.signer);
                match &maintenance {
                    Some(m) if m.node == by && !m.released => {}
                    other => r.violations.push(format!(
                        "{by} deleted {key} while the maintenance lease was {other:?}"
                    )),
                }
            }
        }
    }
    // Every manifest is named by exactly one committed claim.
    let mut by_manifest: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (claim, manifest) in &committed {
        by_manifest.entry(manifest).or_default().push(claim);
    }
    let mut first_backup: BTreeMap<(String, DateTime<Utc>), SystemTime> = BTreeMap::new();
    for (manifest, at, by) in &manifests {
        match by_manifest.get(manifest.as_str()).map(Vec::as_slice) {
            Some([claim]) => {
                // claims/{db}/{fire}.json
                let mut parts = claim.trim_end_matches(".json").split('/').skip(1);
                let (Some(db), Some(fire)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if let Ok(fire) = chrono::NaiveDateTime::parse_from_str(fire, "%Y%m%dT%H%M%SZ") {
                    first_backup
                        .entry((db.to_string(), fire.and_utc()))
                        .or_insert(*at);
                }
            }
            Some(claims) => r
                .violations
                .push(format!("{manifest} (by {by}) is named by several claims: {claims:?}")),
            None => r.violations.push(format!(
                "{manifest} was committed by {by} without a committed claim naming it (an unfenced backup)"
            )),
        }
    }
    r.manifests = manifests.len();
    let distinct: BTreeSet<&String> = manifests.iter().map(|(m, _, _)| m).collect();
    if distinct.len() != manifests.len() {
        r.violations
            .push("a manifest key was written twice (create-only writes were bypassed)".into());
    }
    // Every fire from the first full minute to the last one before the calm ends was backed up
    // in time: a holder that dies is replaced within the ttl and a tick, plus the backup.
    let bound = Duration::from_secs(TTL_SECS + TICK_SECS + 10);
    let mut fire = minute_floor(started) + chrono::Duration::minutes(1);
    let last = minute_floor(ended - bound);
    while fire < last {
        for i in 0..databases() {
            let db = format!("db{i:02}");
            r.fires += 1;
            // The bound runs from the fire, or from the last time the database's holder was
            // disrupted before the backup, whichever is later.
            let holder_at = |t: SystemTime| {
                holders
                    .get(&db)
                    .and_then(|h| h.iter().rev().find(|(at, _)| *at <= t))
                    .and_then(|(_, node)| node.clone())
            };
            let backed_up = first_backup.get(&(db.clone(), fire)).copied();
            let from = disruptions
                .iter()
                .filter(|(at, node)| {
                    *at > SystemTime::from(fire)
                        && backed_up.is_none_or(|b| *at < b)
                        && holder_at(*at).as_deref() == Some(*node)
                })
                .map(|(at, _)| *at)
                .max();
            if from.is_some() {
                r.restarted_bounds += 1;
            }
            let from = from.unwrap_or(SystemTime::from(fire));
            match backed_up {
                Some(at) => {
                    let late = at.duration_since(from).unwrap_or_default().as_secs_f64();
                    r.worst_lateness = r.worst_lateness.max(late);
                    if late > bound.as_secs_f64() {
                        r.violations.push(format!(
                            "{db}: fire {fire} backed up {late:.1} s late (bound {bound:?}, from {})",
                            DateTime::<Utc>::from(from)
                        ));
                    }
                }
                None => r
                    .violations
                    .push(format!("{db}: fire {fire} was never backed up")),
            }
        }
        fire += chrono::Duration::minutes(1);
    }
    r
}
