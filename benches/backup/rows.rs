//! The daemon-side rows of issue 8: an idle `patina run` (RSS and CPU over a window), one
//! reconcile pass over 100,000 objects against the bare listing (in-process), and the time
//! from a `patina.toml` edit to the daemon's `policy reloaded`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::{PutMode, Store};

use crate::{PATINA, loadavg, median, reset};

pub const IDLE: &str = "idle daemon";
pub const RECONCILE: &str = "reconcile 100k";
pub const RELOAD: &str = "config reload";

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

fn daemon_config(work: &Path, databases: usize, daily: &str) -> String {
    let mut text = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\ntick = \"60s\"\n\n\
         [storage]\nurl = \"file://{store}\"\n\n\
         [priorities.normal]\nschedule = \"0 3 * * *\"\n\n\
         [retention]\ndaily = \"{daily}\"\nweekly = \"12w\"\narchive = \"0 4 * * SUN\"\n\n",
        state = work.join("state").display(),
        store = work.join("store").display(),
    );
    for i in 0..databases {
        let _ = write!(
            text,
            "[[database]]\nname = \"db{i:02}\"\nkind = \"sqlite\"\npath = \"{}\"\npriority = \"normal\"\n\n",
            work.join(format!("db{i:02}.db")).display()
        );
    }
    text
}

fn count_suffix(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count_suffix(&p, suffix);
            } else if p.to_string_lossy().ends_with(suffix) {
                n += 1;
            }
        }
    }
    n
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reloads_logged(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("policy reloaded")
        .count()
}

/// The idle-daemon and config-reload rows: one `patina run` over 12 databases.
pub fn daemon_rows(work: &Path, idle_secs: u64, idle: bool, reload_samples: usize) -> String {
    reset(work);
    const DATABASES: usize = 12;
    for i in 0..DATABASES {
        std::fs::copy(DEMO_DB, work.join(format!("db{i:02}.db"))).expect("copy demo db");
    }
    let cfg = work.join("patina.toml");
    std::fs::write(&cfg, daemon_config(work, DATABASES, "7d")).expect("write patina.toml");
    let log = work.join("daemon.log");
    let child = Command::new(PATINA)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("PATINA_LOG", "info")
        .env("PATINA_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create daemon log"))
        .spawn()
        .expect("start patina run");
    let pid = child.id();
    let daemon = Daemon { child, log };

    // Let the first backups (every database is due at once) finish.
    let started = Instant::now();
    let store = work.join("store");
    while count_suffix(&store, ".manifest.json") < DATABASES {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the first backups did not finish; log: {}",
            std::fs::read_to_string(&daemon.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_backups = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));

    let mut out = String::new();
    if idle {
        let load_before = loadavg();
        let cpu0 = cpu_seconds(pid);
        let rss0 = status_kib(pid, "VmRSS:");
        let mut rss_max = rss0;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(idle_secs) {
            std::thread::sleep(Duration::from_secs(1));
            rss_max = rss_max.max(status_kib(pid, "VmRSS:"));
        }
        let window = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        let rss1 = status_kib(pid, "VmRSS:");
        let hwm = status_kib(pid, "VmHWM:");
        eprintln!(
            "[daemon] idle {window:.0}s: CPU {cpu:.3}s, VmRSS {:.1} MiB (max {:.1}), VmHWM {:.1} MiB",
            rss1 as f64 / 1024.0,
            rss_max as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        let _ = writeln!(
            out,
            "### idle `patina run`: 12 databases, 60 s tick, {window:.0} s window after the first \
             backups ({:.1} s); load average {load_before} before, {} after\n",
            first_backups.as_secs_f64(),
            loadavg()
        );
        let _ = writeln!(
            out,
            "| window | CPU (utime+stime) | CPU per 5 min | VmRSS at start | VmRSS at end | max VmRSS (1 s samples) | VmHWM (incl. first backups) |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
        // /proc/<pid>/stat counts clock ticks (10 ms at USER_HZ 100).
        let cpu_text = |s: f64| {
            if s > 0.0 {
                format!("{s:.2} s")
            } else {
                "< 0.01 s (0 ticks)".to_string()
            }
        };
        let _ = writeln!(
            out,
            "| {window:.0} s | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
            cpu_text(cpu),
            cpu_text(cpu * 300.0 / window),
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            rss_max as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }

    if reload_samples > 0 {
        let load_before = loadavg();
        let mut samples = Vec::new();
        for i in 0..reload_samples {
            let before = reloads_logged(&daemon.log);
            let daily = if i % 2 == 0 { "8d" } else { "7d" };
            // Editors replace the file by rename; the daemon watches the folder.
            let tmp = work.join(".patina.toml.tmp");
            std::fs::write(&tmp, daemon_config(work, DATABASES, daily)).expect("write config");
            let t = Instant::now();
            std::fs::rename(&tmp, &cfg).expect("replace config");
            while reloads_logged(&daemon.log) == before {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "no `policy reloaded` after 20 s; log: {}",
                    std::fs::read_to_string(&daemon.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let took = t.elapsed().as_secs_f64();
            eprintln!("[daemon] reload {}/{reload_samples}: {took:.3}s", i + 1);
            samples.push(took);
            std::thread::sleep(Duration::from_millis(700));
        }
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "### config edit → `policy reloaded` in the log (300 ms debounce included), {} samples; \
             load average {load_before} before, {} after\n",
            samples.len(),
            loadavg()
        );
        let _ = writeln!(out, "| median | min | max |\n|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {:.3} s | {min:.3} s | {max:.3} s |\n",
            median(&mut samples)
        );
    }
    drop(daemon);
    out
}

/// `n` committed-looking dumps (data + manifest, 2n objects) for 10 databases, 10 a day.
fn dump_keys(n: usize) -> Vec<String> {
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).expect("date");
    let mut keys = Vec::with_capacity(2 * n);
    for i in 0..n {
        let db = i % 10;
        let per_day = (i / 10) % 10;
        let day = start + chrono::Days::new((i / 100) as u64);
        let stem = format!(
            "daily/{}/db{db:02}/{}T{:02}0000Z",
            day.format("%Y-%m-%d"),
            day.format("%Y%m%d"),
            per_day
        );
        keys.push(format!("{stem}.sql.zst"));
        keys.push(format!("{stem}.manifest.json"));
    }
    keys
}

/// One reconcile plan over 100,000 objects against the bare listing, interleaved, in-process.
pub fn reconcile_row(work: &Path, iters: usize, with_file: bool) -> String {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    reset(work);
    let keys = dump_keys(50_000);
    let mut out = String::new();
    let load_before = loadavg();
    let mut rows = Vec::new();
    let mut backends = vec!["memory"];
    if with_file {
        backends.push("file://");
    }
    for backend in backends {
        let dir = work.join(backend.trim_end_matches("://"));
        reset(&dir);
        for i in 0..10 {
            std::fs::copy(DEMO_DB, dir.join(format!("db{i:02}.db"))).expect("copy demo db");
        }
        let cfg = dir.join("patina.toml");
        std::fs::write(&cfg, daemon_config(&dir, 10, "7d")).expect("write patina.toml");
        let policy = patina::config::load(&cfg).expect("load policy");
        let store = match backend {
            "memory" => {
                let store = Store::memory("");
                rt.block_on(async {
                    for k in &keys {
                        store
                            .put(k, bytes::Bytes::from_static(b"{}"), PutMode::Overwrite)
                            .await
                            .expect("put");
                    }
                });
                store
            }
            _ => {
                let root = dir.join("store");
                for k in &keys {
                    let p = root.join(k);
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&p, b"{}").expect("write object");
                }
                Store::local(&root, "").expect("file store")
            }
        };
        let catalog = Catalog::open(&dir.join("state")).expect("catalog");
        let now: DateTime<Utc> = "2026-06-01T12:00:00Z".parse().expect("time");
        let reconciler = Reconciler::new(
            Arc::new(policy),
            store.clone(),
            Arc::new(Mutex::new(catalog)),
            ManualClock::new(now).clock(),
            Arc::new(Quiet),
        );
        let (mut list_t, mut plan_t) = (Vec::new(), Vec::new());
        let mut objects = 0;
        let mut planned = String::new();
        // One warm-up of each, then interleaved.
        for i in 0..=iters {
            let t = Instant::now();
            let listed = rt.block_on(store.list("")).expect("list");
            let l = t.elapsed().as_secs_f64();
            objects = listed.len();
            drop(listed);
            let t = Instant::now();
            let (plan, inventory, _) = rt.block_on(reconciler.plan()).expect("plan");
            let p = t.elapsed().as_secs_f64();
            planned = format!(
                "{} dumps; plan: {} deletions, {} backups, {} archives",
                inventory.dumps.len(),
                plan.deletions.len(),
                plan.backups.len(),
                plan.archives.len()
            );
            if i > 0 {
                eprintln!("[reconcile {backend} {i}/{iters}] list {l:.3}s plan {p:.3}s");
                list_t.push(l);
                plan_t.push(p);
            }
        }
        let (l, p) = (median(&mut list_t), median(&mut plan_t));
        rows.push(format!(
            "| {backend} | {objects} | {l:.3} s | {p:.3} s | {:.2}× | {planned} |",
            p / l
        ));
    }
    let _ = writeln!(
        out,
        "### one reconcile plan (`Reconciler::plan`: catalog view + list + classify + plan) vs \
         `store.list(\"\")`, in-process, {iters} iterations interleaved; load average \
         {load_before} before, {} after\n",
        loadavg()
    );
    let _ = writeln!(
        out,
        "| store | objects | median list | median plan | × list | what it planned |\n|---|---:|---:|---:|---:|---|"
    );
    for r in rows {
        let _ = writeln!(out, "{r}");
    }
    out.push('\n');
    out
}
