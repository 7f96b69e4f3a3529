//! Soak: the real `patina run` with 1 s ticks and three SQLite databases on every-minute
//! schedules, for `PATINA_SOAK_SECONDS` (20 in `cargo test`; the soak run uses 600). Every step
//! (about a second) does one of: rewrite the policy (a valid edit, every fifth time an invalid
//! one that the next step repairs), touch it unchanged, `POST /trigger`, `SIGHUP`. Half way the
//! daemon is SIGKILLed and restarted.
//!
//! Retention keeps dumps a minute (`weekly = "off"`) and `history_retention = "1m"`, so catalog
//! housekeeping prunes while it runs; the catalog's size is sampled every step.
//!
//! Asserted: no growth in resident memory (max over the last third ≤ max over the first third ×
//! 1.5 + 8 MiB), open file descriptors (≤ first-third max + 8) or, in runs of 300 s and more,
//! the catalog file (≤ first-third max × 1.5 + 64 KiB), no missed schedule (every
//! database has a committed backup taken in each minute that began while the daemon was up,
//! at least 15 s before it stopped), `/healthz` 200 on every probe except across the
//! restart, and exit 0 on SIGTERM. The figures are printed (`--nocapture`) for RELIABILITY.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};

use crate::support::daemon::{Daemon, free_port};

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");
const TOKEN: &str = "soak-t0ken";
const DBS: [&str; 3] = ["one", "two", "three"];

fn policy(port: u16, concurrency: u32, note: &str, valid: bool) -> String {
    let mut s = format!(
        "# {note}\n[daemon]\nlisten = \"127.0.0.1:{port}\"\ntick = \"1s\"\nconcurrency = {concurrency}\n\
         api_token = \"{TOKEN}\"\nhistory_retention = \"1m\"\n\n[storage]\nurl = \"file://backups\"\n\n\
         [retention]\ndaily = \"1m\"\nweekly = \"off\"\n\n\
         [priorities.critical]\nschedule = \"* * * * *\"\n[priorities.normal]\nschedule = \"* * * * *\"\n\n"
    );
    for (i, db) in DBS.iter().enumerate() {
        let priority = if i == 0 { "critical" } else { "normal" };
        let key = if valid || i != 1 {
            "priority"
        } else {
            "priorty"
        };
        s.push_str(&format!(
            "[[database]]\nname = \"{db}\"\nkind = \"sqlite\"\npath = \"{db}.db\"\n{key} = \"{priority}\"\n\n"
        ));
    }
    s
}

/// Replace the policy the way editors do (write a temporary file, rename it over).
fn write_policy(dir: &Path, text: &str) {
    let tmp = dir.join("patina.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("patina.toml")).unwrap();
}

/// A minimal HTTP/1.1 exchange; the status, or `None` when the server did not answer.
fn http(addr: SocketAddr, method: &str, path: &str, auth: bool, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = if auth {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = String::from_utf8_lossy(&out);
    head.split(' ').nth(1)?.parse().ok()
}

/// Bytes of the catalog file and of its WAL.
fn catalog_size(dir: &Path) -> (u64, u64) {
    let len = |name: &str| std::fs::metadata(dir.join(".patina").join(name)).map_or(0, |m| m.len());
    (len("patina.db"), len("patina.db-wal"))
}

/// `taken_at` of every committed dump of `db` (from the manifest keys).
fn committed(dir: &Path, db: &str) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(dir.join("backups/daily")) else {
        return out;
    };
    for day in days.flatten() {
        let Ok(files) = std::fs::read_dir(day.path().join(db)) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(stamp) = name.strip_suffix(".manifest.json")
                && let Ok(t) = NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
            {
                out.push(t.and_utc());
            }
        }
    }
    out.sort();
    out
}

struct Sample {
    rss_kib: u64,
    fds: usize,
    catalog: u64,
    wal: u64,
}

fn wait_healthy(d: &mut Daemon, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(addr, "GET", "/healthz", false, "") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "/healthz not 200 within 30 s:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn soak_reloads_triggers_signals_and_a_restart_without_growth_or_missed_schedules() {
    let seconds: u64 = crate::support::knob("PATINA_SOAK_SECONDS", 20);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for db in DBS {
        std::fs::copy(DEMO_DB, p.join(format!("{db}.db"))).unwrap();
    }
    let port = free_port();
    write_policy(p, &policy(port, 2, "start", true));

    let mut logs = Vec::new();
    let mut d = Daemon::start(p, "info", &[]);
    let mut addr = d.addr();
    wait_healthy(&mut d, addr);
    // Up-intervals of the daemon (wall clock), for the schedule check.
    let mut up: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut up_since = Utc::now();

    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let restart_at = start + Duration::from_secs(seconds / 2);
    let mut restarted = false;
    let mut samples: Vec<(Duration, Sample)> = Vec::new();
    let (mut edits, mut invalid, mut touches, mut triggers, mut hups) = (0, 0, 0, 0, 0);
    let mut accepted = 0;
    let mut health_probes = 0;
    let mut broken = false;
    let mut step = 0u64;
    let mut writes = 0u64;
    let mut seen: std::collections::BTreeMap<&str, std::collections::BTreeSet<DateTime<Utc>>> =
        Default::default();
    while Instant::now() < end {
        step += 1;
        if !restarted && Instant::now() >= restart_at {
            if broken {
                write_policy(p, &policy(port, 2, "repaired before the kill", true));
                broken = false;
            }
            d.signal("-KILL");
            d.wait_exit(Duration::from_secs(10));
            up.push((up_since, Utc::now()));
            logs.push(d.log());
            d = Daemon::start(p, "info", &[]);
            addr = d.addr();
            wait_healthy(&mut d, addr);
            up_since = Utc::now();
            restarted = true;
            continue;
        }
        match step % 4 {
            0 => {
                writes += 1;
                if broken {
                    write_policy(p, &policy(port, 2, &format!("repair {writes}"), true));
                    broken = false;
                    edits += 1;
                } else if writes.is_multiple_of(5) {
                    write_policy(p, &policy(port, 2, &format!("broken {writes}"), false));
                    broken = true;
                    invalid += 1;
                } else {
                    let c = 2 + (writes % 2) as u32;
                    write_policy(p, &policy(port, c, &format!("edit {writes}"), true));
                    edits += 1;
                }
            }
            1 => {
                let status = http(addr, "POST", "/trigger", true, "{\"reason\":\"soak\"}");
                assert!(
                    matches!(status, Some(202 | 409)),
                    "POST /trigger: {status:?}\n{}",
                    d.log()
                );
                accepted += usize::from(status == Some(202));
                triggers += 1;
            }
            2 => {
                d.signal("-HUP");
                hups += 1;
            }
            _ => {
                // Touch: the same bytes written again.
                let text = std::fs::read_to_string(p.join("patina.toml")).unwrap();
                write_policy(p, &text);
                touches += 1;
            }
        }
        // A policy only ever shows the daemon a valid file for more than one step.
        let status = http(addr, "GET", "/healthz", false, "");
        health_probes += 1;
        assert_eq!(status, Some(200), "/healthz at step {step}:\n{}", d.log());
        if let (Some(rss_kib), Some(fds)) = (d.rss_kib(), d.fds()) {
            let (catalog, wal) = catalog_size(p);
            samples.push((
                start.elapsed(),
                Sample {
                    rss_kib,
                    fds,
                    catalog,
                    wal,
                },
            ));
        }
        // Retention deletes dumps after a minute: remember every one seen committed.
        for db in DBS {
            seen.entry(db).or_default().extend(committed(p, db));
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    if broken {
        write_policy(p, &policy(port, 2, "repaired at the end", true));
        std::thread::sleep(Duration::from_millis(1500));
    }
    d.signal("-TERM");
    let code = d.wait_exit(Duration::from_secs(30));
    let stopped = Utc::now();
    up.push((up_since, stopped));
    logs.push(d.log());
    assert_eq!(code, Some(0), "exit on SIGTERM:\n{}", d.log());
    let log = logs.join("\n");

    // No growth: thirds of the run (by time), compared by their maxima.
    let third = Duration::from_secs(seconds) / 3;
    let first: Vec<&Sample> = samples
        .iter()
        .filter(|(t, _)| *t < third)
        .map(|(_, s)| s)
        .collect();
    let last: Vec<&Sample> = samples
        .iter()
        .filter(|(t, _)| *t >= third * 2)
        .map(|(_, s)| s)
        .collect();
    assert!(
        !first.is_empty() && !last.is_empty(),
        "{} samples",
        samples.len()
    );
    let max_rss = |v: &[&Sample]| v.iter().map(|s| s.rss_kib).max().unwrap();
    let max_catalog = |v: &[&Sample]| v.iter().map(|s| s.catalog).max().unwrap();
    let max_wal = |v: &[&Sample]| v.iter().map(|s| s.wal).max().unwrap();
    let max_fds = |v: &[&Sample]| v.iter().map(|s| s.fds).max().unwrap();
    let all: Vec<&Sample> = samples.iter().map(|(_, s)| s).collect();
    let rss_min = all.iter().map(|s| s.rss_kib).min().unwrap();
    let fds_min = all.iter().map(|s| s.fds).min().unwrap();

    // Schedules: each minute that began while the daemon was up (at least 15 s before it
    // stopped, so its backup had time to commit) has a committed backup of every database
    // taken within that minute.
    let mut missed = Vec::new();
    let mut boundaries = 0;
    let mut backups = 0;
    for db in DBS {
        let mut taken: std::collections::BTreeSet<DateTime<Utc>> =
            seen.remove(db).unwrap_or_default();
        taken.extend(committed(p, db));
        let taken: Vec<DateTime<Utc>> = taken.into_iter().collect();
        backups += taken.len();
        for (from, to) in &up {
            let mut m = from.with_second(0).unwrap().with_nanosecond(0).unwrap()
                + chrono::Duration::minutes(1);
            while m + chrono::Duration::seconds(15) <= *to {
                boundaries += 1;
                let covered = taken
                    .iter()
                    .any(|t| *t >= m && *t < m + chrono::Duration::minutes(1));
                if !covered {
                    missed.push(format!("{db} at {m}"));
                }
                m += chrono::Duration::minutes(1);
            }
        }
        assert!(!taken.is_empty(), "{db} was never backed up");
    }
    let reloaded = log.matches("policy reloaded").count();
    let refused = log.matches("reload aborted").count();

    println!(
        "soak {seconds}s: {} samples; RSS min {} KiB, max first third {} KiB, max last third {} KiB; \
         fds min {fds_min}, max first third {}, max last third {}; backups {backups} \
         ({boundaries} minute boundaries checked, missed {}); policy writes: {edits} valid, \
         {invalid} invalid, {touches} touches; SIGHUP {hups}; triggers {triggers} ({accepted} \
         accepted); reloads applied {reloaded}, refused {refused}; /healthz probes {health_probes} \
         all 200; restart 1 (SIGKILL); exit on SIGTERM 0; catalog max first third {} KiB \
         (+ WAL {} KiB), max last third {} KiB (+ WAL {} KiB), at the end {} KiB (+ WAL {} KiB)",
        samples.len(),
        rss_min,
        max_rss(&first),
        max_rss(&last),
        max_fds(&first),
        max_fds(&last),
        missed.len(),
        max_catalog(&first) / 1024,
        max_wal(&first) / 1024,
        max_catalog(&last) / 1024,
        max_wal(&last) / 1024,
        catalog_size(p).0 / 1024,
        catalog_size(p).1 / 1024,
    );
    assert!(missed.is_empty(), "missed schedules: {missed:?}\n{log}");
    assert!(
        max_rss(&last) <= max_rss(&first) * 3 / 2 + 8 * 1024,
        "resident memory grew: first third max {} KiB, last third max {} KiB",
        max_rss(&first),
        max_rss(&last)
    );
    assert!(
        max_fds(&last) <= max_fds(&first) + 8,
        "open file descriptors grew: first third max {}, last third max {}",
        max_fds(&first),
        max_fds(&last)
    );
    // The catalog stays as large as what storage holds: dumps live a minute, their history
    // another, housekeeping prunes every 15 s. Judged once the first third is past that.
    if seconds >= 300 {
        assert!(
            max_catalog(&last) <= max_catalog(&first) * 3 / 2 + 64 * 1024,
            "the catalog grew: first third max {} B, last third max {} B",
            max_catalog(&first),
            max_catalog(&last)
        );
    }
    assert!(
        !log.contains("panicked"),
        "a panic in the daemon's log:\n{log}"
    );
    if invalid > 0 {
        assert!(refused > 0, "invalid edits were not refused:\n{log}");
    }
    // The catalog has no job left running.
    let c = rusqlite::Connection::open(p.join(".patina/patina.db")).unwrap();
    let running: i64 = c
        .query_row(
            "SELECT count(*) FROM backup_jobs WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
}
