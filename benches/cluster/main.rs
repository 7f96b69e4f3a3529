//! Several daemons on one bucket (issue 18): what they cost in R2 Class A operations, and how
//! they cope with many databases. Real `patina run` processes (the release binary) against the
//! in-process S3 server (requests one at a time, as the chaos test runs it).
//!
//! ```text
//! cargo bench --bench cluster -- [--quick] [--dbs 12,1000] [--nodes 1,3] [--window SECS] [--aged N]
//! ```
//!
//! For each number of databases and of nodes: tiny SQLite databases on a nightly schedule, the
//! daemons started together (tick 5 s, `lease_ttl` 3 s), then
//! - **scale**: the time until every database has a committed backup, each node's peak RSS
//!   (`VmHWM`) and its last reconcile pass (`/status` `lastPass.durationMs`);
//! - **cost**: each node's storage requests by operation (`patina_storage_requests_total`)
//!   over a quiet window after the first backups. Class A operations (LIST, PUT — multipart
//!   parts and completions count as PUTs) come from two sources: the reconcile listing, once
//!   per tick (pages of 1,000 keys: between full listings only the newest keys, DESIGN §16),
//!   and heartbeats, once per third of the ttl. Both are measured here and projected to a
//!   month at the production settings (tick 60 s, one full listing an hour, `lease_ttl` 30 s,
//!   and 60 s), plus the backups of a nightly schedule at the Class A operations each first
//!   backup cost.
//! - **aged** (`--aged N`): the bucket starts with N more keys under old days, as a bucket
//!   looks after weeks of backups (Grove at 1,000 databases: about 22,000). They are foreign
//!   (names Patina does not write), so retention leaves them and the cost is the listing's.
//!
//! `--quick` is 12 and 100 databases, a 10 s window (CI runs it so the harness never rots; it
//! reports, it never asserts).

#[path = "../../tests/support/daemon.rs"]
mod daemon;
#[path = "../../tests/support/s3.rs"]
mod s3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::Daemon;
use s3::S3Server;

const MONTH_SECONDS: f64 = 30.0 * 86_400.0;
const TICK: u64 = 5;
const TTL: u64 = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let list = |name: &str, default: &[usize]| -> Vec<usize> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    let dbs = list("--dbs", if quick { &[12, 100] } else { &[12, 1000] });
    let nodes = list("--nodes", &[1, 3]);
    let window = list("--window", if quick { &[10] } else { &[60] })[0] as u64;
    let aged = list("--aged", &[0])[0];
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "# several daemons: tick {TICK} s, lease_ttl {TTL} s, quiet window {window} s, {aged} aged keys; load average {}",
        load_average()
    );
    println!();
    println!(
        "| databases | nodes | all backed up | peak RSS per node (max) | reconcile pass (max) | objects | LIST / pass | PUT / s / node | GET / s / node | Class A per first backup | Class A / month (tick 60 s, ttl 30 s) | (ttl 60 s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &d in &dbs {
        for &n in &nodes {
            let r = rt.block_on(run(d, n, window, aged));
            let month = |ttl: f64| {
                // Heartbeats (and lease changes) only with [cluster].
                let heartbeats = if n > 1 {
                    r.puts_per_second * TTL as f64 * (MONTH_SECONDS / ttl)
                } else {
                    0.0
                };
                // The partial listings measured (pages per tick are the same at any tick), and
                // one full listing of the whole bucket an hour.
                let per_node = r.lists_per_pass * (MONTH_SECONDS / 60.0)
                    + patina::listing::pages(r.objects) as f64 * (MONTH_SECONDS / 3600.0)
                    + heartbeats;
                // Nightly backups of every database, once across the cluster.
                per_node * n as f64 + r.class_a_per_backup * d as f64 * 30.0
            };
            println!(
                "| {d} | {n} | {:.1} s | {:.1} MiB | {} ms | {} | {:.2} ({:.0} full) | {:.3} | {:.3} | {:.1} | {:.2} M | {:.2} M |",
                r.all_backed_up.as_secs_f64(),
                r.peak_rss_kib as f64 / 1024.0,
                r.pass_ms,
                r.objects,
                r.lists_per_pass,
                r.full_in_window,
                r.puts_per_second,
                r.gets_per_second,
                r.class_a_per_backup,
                month(30.0) / 1e6,
                month(60.0) / 1e6,
            );
        }
    }
    println!();
    println!(
        "Projection: per node, the LIST requests per pass in the quiet window (partial listings; the comments compare the daemons' count with the server's) x 43,200 passes, plus one full \
         listing an hour (ceil(objects / 1,000) LISTs x 720), plus with [cluster] the PUTs of the quiet window (heartbeats, \
         any lease change) scaled from ttl {TTL} s to the ttl; times the nodes; plus (Class A per first backup) x databases \
         x 30 nightly backups. --aged N starts the bucket with N old keys."
    );
}

struct Figures {
    all_backed_up: Duration,
    peak_rss_kib: u64,
    pass_ms: u64,
    /// LIST requests (pages) per reconcile pass in the window.
    lists_per_pass: f64,
    /// Full listings among those passes.
    full_in_window: f64,
    puts_per_second: f64,
    gets_per_second: f64,
    class_a_per_backup: f64,
    /// Objects in the bucket after the first backups (a listing is one LIST per 1,000).
    objects: usize,
}

fn policy(server: &S3Server, node: &str, nodes: usize, dbs: &Path, n_dbs: usize) -> String {
    let cluster = if nodes > 1 {
        format!("[cluster]\nlease_ttl = \"{TTL}s\"\nnode = \"{node}\"\n\n")
    } else {
        String::new()
    };
    let mut s = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"{TICK}s\"\nconcurrency = 3\n\n\
         [storage]\nurl = \"s3://{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"auto\"\n\
         access_key_id = \"node-{node}\"\nsecret_access_key = \"node-{node}-secret\"\nprefix = \"bench/\"\n\n\
         {cluster}[priorities.normal]\nschedule = \"0 3 * * *\"\n\n",
        bucket = server.bucket,
        endpoint = server.endpoint,
    );
    for i in 0..n_dbs {
        s.push_str(&format!(
            "[[database]]\nname = \"db{i:04}\"\nkind = \"sqlite\"\npath = \"{}\"\npriority = \"normal\"\n\n",
            dbs.join(format!("db{i:04}.sqlite")).display()
        ));
    }
    s
}

async fn run(n_dbs: usize, n_nodes: usize, window: u64, aged: usize) -> Figures {
    let names: Vec<String> = (0..n_nodes).map(|i| format!("n{i}")).collect();
    let keys: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("node-{n}"), format!("node-{n}-secret")))
        .collect();
    let key_refs: Vec<(&str, &str)> = keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // One request at a time (atomic conditional writes, a journal) only when the journal is
    // asked for: serialized, s3s-fs itself becomes the bottleneck of a 1,000-database run.
    let server = if std::env::var("PATINA_BENCH_JOURNAL").is_ok() {
        S3Server::start_journaled(&key_refs).await
    } else {
        S3Server::start_with_node_keys(&key_refs).await
    };
    // The aged keys, written straight into the served folder (s3s-fs lists the files).
    for i in 0..aged {
        let dir = server.bucket_dir().join(format!(
            "bench/daily/2025-{:02}-{:02}/db{:04}",
            1 + i / 28 % 12,
            1 + i % 28,
            i / 336
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("aged-{i}.txt")), b"x").unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    let dbs = root.path().join("dbs");
    std::fs::create_dir(&dbs).unwrap();
    for i in 0..n_dbs {
        let conn = rusqlite::Connection::open(dbs.join(format!("db{i:04}.sqlite"))).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)
             INSERT INTO t (v) SELECT 'row ' || x FROM c;",
        )
        .unwrap();
    }
    let dirs: Vec<PathBuf> = names
        .iter()
        .map(|n| {
            let dir = root.path().join(n);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(
                dir.join("patina.toml"),
                policy(&server, n, n_nodes, &dbs, n_dbs),
            )
            .unwrap();
            dir
        })
        .collect();
    let started = Instant::now();
    let mut daemons: Vec<Daemon> = dirs
        .iter()
        .map(|d| {
            Daemon::start(
                d,
                "warn,patina::daemon=info,patina::engine::cluster=info",
                &[],
            )
        })
        .collect();
    let store = server.store("bench/");
    // Every database backed up once.
    let all_backed_up = loop {
        let listed = store.list("daily/").await.unwrap();
        let manifests = listed
            .iter()
            .filter(|o| o.key.ends_with(".manifest.json"))
            .count();
        if manifests >= n_dbs {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {manifests} of {n_dbs} backed up after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let addrs: Vec<_> = daemons.iter_mut().map(|d| d.addr()).collect();
    // Scrape only once each daemon answers /healthz.
    for &addr in &addrs {
        // Generous: an aged bucket's first full listing is slow on s3s-fs (every page walks
        // the whole folder).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            match reqwest::get(format!("http://{addr}/healthz")).await {
                Ok(r) if r.status().is_success() => break,
                outcome => {
                    assert!(
                        Instant::now() < deadline,
                        "{addr} never answered /healthz: {outcome:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let logs: Vec<PathBuf> = daemons.iter().map(|d| d.log.clone()).collect();
    // A new connection per scrape: the daemon closes a connection idle for its 10 s header
    // timeout, and a pooled one reused at that instant fails with IncompleteMessage (the quick
    // window is 10 s).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let requests = |addr| {
        let http = http.clone();
        let logs = logs.clone();
        async move {
            let response = match http.get(format!("http://{addr}/metrics")).send().await {
                Ok(r) => r,
                Err(e) => {
                    let text: Vec<String> = logs
                        .iter()
                        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                        .collect();
                    panic!("scrape {addr}: {e:?}\n{}", text.join("\n----\n"));
                }
            };
            let text = response.text().await.unwrap();
            let mut by_op = BTreeMap::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("patina_storage_requests_total{op=\"")
                    && let Some((op, value)) = rest.split_once("\"} ")
                {
                    by_op.insert(op.to_string(), value.trim().parse::<f64>().unwrap_or(0.0));
                }
                if let Some(rest) = line.strip_prefix("patina_reconcile_passes_total{listing=\"")
                    && let Some((listing, value)) = rest.split_once("\"} ")
                {
                    let n = value.trim().parse::<f64>().unwrap_or(0.0);
                    *by_op.entry("passes".to_string()).or_default() += n;
                    by_op.insert(format!("passes:{listing}"), n);
                }
            }
            by_op
        }
    };
    // The first backups' cost: every request so far, spread over the databases.
    let mut first = 0.0;
    for &addr in &addrs {
        let r = requests(addr).await;
        first += r.get("list").copied().unwrap_or(0.0) + r.get("put").copied().unwrap_or(0.0);
    }
    // Let the leases settle, then a quiet window.
    tokio::time::sleep(Duration::from_secs(TTL + 2)).await;
    let mut before = Vec::new();
    for &addr in &addrs {
        before.push(requests(addr).await);
    }
    let t0 = Instant::now();
    let journal_from = server.journal().len();
    let server_lists_from = server.list_requests();
    tokio::time::sleep(Duration::from_secs(window)).await;
    if std::env::var("PATINA_BENCH_JOURNAL").is_ok() {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for e in &server.journal()[journal_from..] {
            let key = e.key().strip_prefix("bench/").unwrap_or(e.key());
            let prefix: String = key.split('/').take(2).collect::<Vec<_>>().join("/");
            *by.entry(format!("{} {} {} {}", e.method, prefix, e.query, e.status))
                .or_default() += 1;
        }
        eprintln!("journal of the window ({n_dbs} databases, {n_nodes} nodes): {by:#?}");
    }
    let mut after = Vec::new();
    for &addr in &addrs {
        after.push(requests(addr).await);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // The list requests the server answered in the window (pages, as R2 bills them), per pass
    // of any node (all of them partial listings unless a full one fell in the window).
    let server_lists = (server.list_requests() - server_lists_from) as f64;
    let delta = |op: &str| {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.get(op).copied().unwrap_or(0.0) - b.get(op).copied().unwrap_or(0.0))
            .sum::<f64>()
            / n_nodes as f64
    };
    // Per pass from the daemons' own counters, read in the same scrapes: a scrape that lands
    // mid-pass sees that pass's listing but not its end, at both ends of the window alike.
    let daemon_lists = delta("list") * n_nodes as f64;
    let passes = delta("passes") * n_nodes as f64;
    let lists_per_pass = daemon_lists / passes.max(1.0);
    println!(
        "<!-- {n_dbs} databases, {n_nodes} nodes: {passes} passes; {daemon_lists} LISTs counted by the daemons, {server_lists} by the server -->"
    );
    let full_in_window = delta("passes:full") * n_nodes as f64;
    let puts_per_second = delta("put") / elapsed;
    let gets_per_second = delta("get") / elapsed;
    let mut pass_ms = 0;
    for &addr in &addrs {
        let status: serde_json::Value = http
            .get(format!("http://{addr}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pass_ms = pass_ms.max(status["lastPass"]["durationMs"].as_u64().unwrap_or(0));
    }
    let peak_rss_kib = daemons
        .iter()
        .filter_map(|d| hwm_kib(d.pid()))
        .max()
        .unwrap_or(0);
    let objects = store.list("").await.unwrap().len();
    for d in &mut daemons {
        d.signal("-TERM");
        d.wait_exit(Duration::from_secs(60));
    }
    if let Ok(keep) = std::env::var("PATINA_BENCH_KEEP_LOGS") {
        for (i, d) in daemons.iter().enumerate() {
            let _ = std::fs::copy(&d.log, format!("{keep}/cluster-{n_dbs}-{n_nodes}-{i}.log"));
        }
    }
    // What the first backups cost beyond the listing and heartbeats of the same time.
    let background = (daemon_lists / elapsed / n_nodes as f64 + puts_per_second)
        * all_backed_up.as_secs_f64()
        * n_nodes as f64;
    Figures {
        all_backed_up,
        peak_rss_kib,
        pass_ms,
        lists_per_pass,
        full_in_window,
        puts_per_second,
        gets_per_second,
        class_a_per_backup: ((first - background) / n_dbs as f64).max(0.0),
        objects,
    }
}

fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
