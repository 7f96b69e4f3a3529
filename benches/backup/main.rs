//! The backup and restore benchmark: Patina against the commands people script today, side by
//! side on the same seeded fixture, interleaved (A B C … A B C …) so a noisy neighbour hurts all
//! of them alike. Prints medians of wall time, peak RSS and output bytes, and ratios.
//!
//! ```text
//! cargo bench --bench backup -- [--quick] [--scale small|large|both|docs-small|docs-large|docs|all]
//!                                [--iters N] [--only NAME,..]
//!                                [--idle-secs N]
//! ```
//!
//! Besides the fixture rows (`patina backup` also to an in-process s3s-fs server, and backup and
//! restore with `[encryption]`: age over the same zstd stream, measured interleaved with the
//! plain rows so the ratio is the cost of encryption), three daemon
//! rows: `idle daemon` (12 databases, RSS and CPU over `--idle-secs`, 300 by default),
//! `reconcile 100k` (in-process, `Reconciler::plan` vs `store.list`) and `config reload`, and
//! the D1 row: `patina backup` of a ~200 MB D1 database through the stand-in's export flow vs
//! `curl` of the export file (`d1_export`; ~10 MB in `--quick`).
//!
//! `--quick` is the two small fixtures (narrow and documents) with two iterations, a 10 s
//! idle window and the in-memory reconcile store only, about a minute (CI runs it so the
//! harness never rots; it reports, it never asserts timings). Fixtures are cached in
//! `target/bench-fixtures/`. A reference program that is not installed is reported as such,
//! not as a failure.

// The D1 stand-in of the integration tests (it finds the local D1 as `super::wrangler`).
#[path = "../../tests/support/d1.rs"]
#[allow(dead_code)]
mod d1;
mod d1_export;
mod fixture;
mod rows;
#[path = "../../tests/support/s3.rs"]
mod s3;
#[path = "../../tests/support/wrangler.rs"]
mod wrangler;

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixture::Scale;

const PATINA: &str = env!("CARGO_BIN_EXE_patina");
const GNU_TIME: &str = "/usr/bin/time";

/// A scratch file path in the target directory, unique to this process.
fn tempfile_path(name: &str) -> PathBuf {
    let dir = target_dir().join("bench-tmp");
    std::fs::create_dir_all(&dir).expect("create bench-tmp");
    dir.join(format!("{}-{name}", std::process::id()))
}

/// How one run went.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// Peak resident set, KiB; for a pipeline the sum of each stage's peak.
    rss_kib: u64,
    /// User + system CPU seconds of all stages (0 without GNU time).
    cpu: f64,
    bytes: u64,
}

/// Whether a case backs up or restores (ratios compare within a group).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Group {
    Backup,
    Restore,
}

struct Case {
    name: &'static str,
    group: Group,
    /// `None` when the program it needs is missing.
    missing: Option<&'static str>,
    samples: Vec<Sample>,
}

struct Options {
    scales: Vec<Scale>,
    iters: usize,
    only: Option<Vec<String>>,
    /// The idle-daemon window, seconds.
    idle_secs: u64,
    quick: bool,
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|only| {
            only.iter().any(|o| match o.strip_prefix('=') {
                Some(exact) => name == exact,
                None => name.contains(o.as_str()),
            })
        })
    }
}

/// Every fixture, in the order a full run measures them.
const ALL: [Scale; 4] = [
    fixture::SMALL,
    fixture::DOCS_SMALL,
    fixture::LARGE,
    fixture::DOCS_LARGE,
];

fn parse_args() -> Options {
    let mut opts = Options {
        scales: ALL.to_vec(),
        iters: 3,
        only: None,
        idle_secs: 300,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                opts.scales = vec![fixture::SMALL, fixture::DOCS_SMALL];
                opts.iters = 2;
                opts.idle_secs = 10;
                opts.quick = true;
            }
            "--idle-secs" => {
                opts.idle_secs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--idle-secs N")
            }
            "--scale" => {
                let list = args.next().unwrap_or_default();
                opts.scales = list
                    .split(',')
                    .flat_map(|s| match s {
                        "small" => vec![fixture::SMALL],
                        "large" => vec![fixture::LARGE],
                        "both" => vec![fixture::SMALL, fixture::LARGE],
                        "docs-small" => vec![fixture::DOCS_SMALL],
                        "docs-large" => vec![fixture::DOCS_LARGE],
                        "docs" => vec![fixture::DOCS_SMALL, fixture::DOCS_LARGE],
                        "all" => ALL.to_vec(),
                        other => panic!(
                            "--scale small|large|both|docs-small|docs-large|docs|all (or a \
                             comma-separated list), got {other:?}"
                        ),
                    })
                    .collect()
            }
            "--iters" => opts.iters = args.next().and_then(|n| n.parse().ok()).expect("--iters N"),
            "--only" => {
                opts.only = Some(
                    args.next()
                        .expect("--only NAME,..")
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            // `cargo bench` passes `--bench`; ignore it and anything else libtest would take.
            _ => {}
        }
    }
    opts
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp, so this honours CARGO_TARGET_DIR.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not installed".into())
}

/// Runs `stages` as a pipeline (each stage's stdout into the next one's stdin), the first
/// reading `stdin` and the last writing `stdout` (or /dev/null); fails unless all succeed.
/// Peak RSS comes from each child's own rusage (`wait4`).
fn pipeline(mut stages: Vec<Command>, stdin: Option<&Path>, stdout: Option<&Path>) -> Sample {
    let started = Instant::now();
    let mut pids = Vec::new();
    let mut next_in: Option<Stdio> = stdin.map(|p| File::open(p).expect("open stdin").into());
    let last = stages.len() - 1;
    let mut names = Vec::new();
    let time = Path::new(GNU_TIME).exists();
    let mut rss_files = Vec::new();
    for (i, stage) in stages.iter_mut().enumerate() {
        names.push(format!("{stage:?}"));
        // GNU time measures the program alone: a child's own peak RSS (wait4) would include
        // this process's, inherited across fork and exec.
        let mut wrapped;
        let cmd = if time {
            let rss = tempfile_path(&format!("rss-{i}"));
            wrapped = Command::new(GNU_TIME);
            wrapped
                .args(["-f", "%M %U %S", "-o"])
                .arg(&rss)
                .arg(stage.get_program())
                .args(stage.get_args());
            for (k, v) in stage.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            rss_files.push(rss);
            &mut wrapped
        } else {
            stage
        };
        cmd.stdin(next_in.take().unwrap_or_else(Stdio::null));
        if i == last {
            match stdout {
                Some(p) => cmd.stdout(File::create(p).expect("create output")),
                None => cmd.stdout(Stdio::null()),
            };
        } else {
            cmd.stdout(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        if i != last {
            next_in = Some(child.stdout.take().expect("piped").into());
        }
        pids.push(child.id() as libc::pid_t);
        // The child is reaped below with wait4, never through `Child`.
        std::mem::forget(child);
    }
    let mut rss_kib = 0u64;
    let mut cpu = 0.0;
    for (pid, name) in pids.into_iter().zip(names) {
        let mut status = 0;
        // SAFETY: plain syscall on our own child with valid out-pointers.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(r, pid, "wait4 {name}: {}", std::io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{name} failed with status {status:#x}"
        );
        if !time {
            rss_kib += usage.ru_maxrss as u64;
        }
    }
    for f in rss_files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let fields: Vec<&str> = text
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if let [rss, user, sys] = fields[..] {
            rss_kib += rss.parse::<u64>().unwrap_or(0);
            cpu += user.parse::<f64>().unwrap_or(0.0) + sys.parse::<f64>().unwrap_or(0.0);
        }
        let _ = std::fs::remove_file(&f);
    }
    Sample {
        wall: started.elapsed(),
        rss_kib,
        cpu,
        bytes: stdout.map_or(0, file_size),
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.env("PATINA_LOG", "warn");
    c.args(args);
    c.stderr(Stdio::inherit());
    c
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Total size of the regular files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += tree_size(&p);
            } else {
                total += file_size(&p);
            }
        }
    }
    total
}

/// The first file under `dir` whose name ends with `suffix`.
fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, suffix) {
                return Some(f);
            }
        } else if p.to_string_lossy().ends_with(suffix) {
            return Some(p);
        }
    }
    None
}

fn reset(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create work dir");
}

fn patina_config(work: &Path, db: &Path) -> PathBuf {
    patina_config_sealed(work, db, None)
}

/// [`patina_config`], with `[encryption]` for `key` when given.
fn patina_config_sealed(work: &Path, db: &Path, key: Option<&AgeKey>) -> PathBuf {
    let cfg = work.join("patina.toml");
    let encryption = key.map_or(String::new(), |k| {
        format!(
            "[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\n",
            k.public,
            k.identity_file.display()
        )
    });
    let text = format!(
        "[daemon]\nstate_dir = \"{state}\"\n\n[storage]\nurl = \"file://{store}\"\n\n\
         [priorities.normal]\nschedule = \"0 4 * * SUN\"\n\n{encryption}\
         [[database]]\nname = \"bench\"\nkind = \"sqlite\"\npath = \"{db}\"\npriority = \"normal\"\n",
        state = work.join("state").display(),
        store = work.join("store").display(),
        db = db.display(),
    );
    std::fs::write(&cfg, text).expect("write patina.toml");
    cfg
}

/// An age key pair for the encryption rows: the identity in a file, the public key as text.
struct AgeKey {
    identity_file: PathBuf,
    public: String,
}

impl AgeKey {
    fn generate(dir: &Path) -> AgeKey {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let identity_file = dir.join("bench-identity.txt");
        std::fs::create_dir_all(dir).expect("create key dir");
        std::fs::write(
            &identity_file,
            format!("{}\n", id.to_string().expose_secret()),
        )
        .expect("write the identity");
        AgeKey {
            identity_file,
            public: id.to_public().to_string(),
        }
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} × {cpu}, {mem_gib:.0} GiB")
}

fn run_scale(scale: Scale, opts: &Options) -> String {
    let has_sqlite3 = have("sqlite3");
    let has_zstd = have("zstd");
    let has_restic = have("restic");
    let missing = |need_sqlite3: bool, need_zstd: bool, need_restic: bool| {
        if need_sqlite3 && !has_sqlite3 {
            Some("sqlite3")
        } else if need_zstd && !has_zstd {
            Some("zstd")
        } else if need_restic && !has_restic {
            Some("restic")
        } else {
            None
        }
    };
    let mut cases = vec![
        Case {
            name: "patina backup",
            group: Group::Backup,
            missing: None,
            samples: vec![],
        },
        Case {
            name: "patina backup, encrypted (age)",
            group: Group::Backup,
            missing: None,
            samples: vec![],
        },
        Case {
            name: "patina backup to in-process S3",
            group: Group::Backup,
            missing: None,
            samples: vec![],
        },
        Case {
            name: "sqlite3 .dump | zstd -3",
            group: Group::Backup,
            missing: missing(true, true, false),
            samples: vec![],
        },
        Case {
            name: "sqlite3 .dump",
            group: Group::Backup,
            missing: missing(true, false, false),
            samples: vec![],
        },
        Case {
            name: "sqlite3 .backup",
            group: Group::Backup,
            missing: missing(true, false, false),
            samples: vec![],
        },
        Case {
            name: "restic backup (first run)",
            group: Group::Backup,
            missing: missing(false, false, true),
            samples: vec![],
        },
        Case {
            name: "patina restore",
            group: Group::Restore,
            missing: None,
            samples: vec![],
        },
        Case {
            name: "patina verify",
            group: Group::Restore,
            missing: None,
            samples: vec![],
        },
        Case {
            name: "patina restore, encrypted (age)",
            group: Group::Restore,
            missing: None,
            samples: vec![],
        },
        Case {
            name: "zstd -dc | sqlite3 new.db",
            group: Group::Restore,
            missing: missing(true, true, false),
            samples: vec![],
        },
    ];
    cases.retain(|c| opts.wants(c.name));
    if cases.is_empty() {
        return String::new();
    }
    let fixtures = target_dir().join("bench-fixtures");
    let db = fixture::ensure(&fixtures, scale).expect("generate fixture");
    let db_bytes = file_size(&db);
    let work = target_dir().join("bench-work");
    reset(&work);
    let db_s = db.to_string_lossy().into_owned();
    // The S3 case's server runs in this process (its CPU is not in the child's figures).
    let s3_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let s3_server = cases
        .iter()
        .any(|c| c.name.ends_with("S3"))
        .then(|| s3_rt.block_on(s3::S3Server::start()));

    // Warm the page cache so no case pays for the first read.
    std::io::copy(
        &mut File::open(&db).expect("open fixture"),
        &mut std::io::sink(),
    )
    .expect("read fixture");

    let key = AgeKey::generate(&target_dir().join("bench-keys"));
    let restore_with = |pdir: &Path, key: Option<&AgeKey>| {
        // Restores what the last backup of that case stored (or makes one).
        let cfg = pdir.join("patina.toml");
        if !cfg.exists() {
            reset(pdir);
            patina_config_sealed(pdir, &db, key);
            pipeline(
                vec![cmd(PATINA, &["--config", &cfg.to_string_lossy(), "backup"])],
                None,
                None,
            );
        }
        let out = pdir.join("restored.db");
        let _ = std::fs::remove_file(&out);
        let mut s = pipeline(
            vec![cmd(
                PATINA,
                &[
                    "--config",
                    &cfg.to_string_lossy(),
                    "restore",
                    "bench",
                    "--to",
                    &out.to_string_lossy(),
                ],
            )],
            None,
            None,
        );
        s.bytes = file_size(&out);
        let _ = std::fs::remove_file(&out);
        s
    };

    let load_before = loadavg();
    let started = Instant::now();
    let reference_zst = work.join("reference.sql.zst");
    for iter in 0..opts.iters {
        for case in cases.iter_mut().filter(|c| c.missing.is_none()) {
            let dir = work.join(case.name.split_whitespace().next().unwrap_or("case"));
            let sample = match case.name {
                "patina backup" => {
                    reset(&dir);
                    let cfg = patina_config(&dir, &db);
                    let cfg = cfg.to_string_lossy();
                    let mut s =
                        pipeline(vec![cmd(PATINA, &["--config", &cfg, "backup"])], None, None);
                    s.bytes = find_file(&dir.join("store"), ".zst").map_or(0, |f| file_size(&f));
                    s
                }
                "patina backup, encrypted (age)" => {
                    let dir = work.join("patina-age");
                    reset(&dir);
                    let cfg = patina_config_sealed(&dir, &db, Some(&key));
                    let cfg = cfg.to_string_lossy();
                    let mut s =
                        pipeline(vec![cmd(PATINA, &["--config", &cfg, "backup"])], None, None);
                    s.bytes =
                        find_file(&dir.join("store"), ".zst.age").map_or(0, |f| file_size(&f));
                    s
                }
                "patina backup to in-process S3" => {
                    let server = s3_server.as_ref().expect("S3 server started");
                    let dir = work.join("patina-s3");
                    reset(&dir);
                    let cfg = dir.join("patina.toml");
                    let prefix = format!("{}-{iter}/", scale.name);
                    std::fs::write(
                        &cfg,
                        format!(
                            "[daemon]\nstate_dir = \"{state}\"\n\n[storage]\nurl = \"s3://{bucket}\"\n\
                             endpoint = \"{endpoint}\"\nregion = \"auto\"\nprefix = \"{prefix}\"\n\
                             access_key_id = \"${{BENCH_S3_KEY}}\"\n\
                             secret_access_key = \"${{BENCH_S3_SECRET}}\"\n\n\
                             [priorities.normal]\nschedule = \"0 4 * * SUN\"\n\n\
                             [[database]]\nname = \"bench\"\nkind = \"sqlite\"\npath = \"{db}\"\n\
                             priority = \"normal\"\n",
                            state = dir.join("state").display(),
                            bucket = server.bucket,
                            endpoint = server.endpoint,
                            db = db.display(),
                        ),
                    )
                    .expect("write patina.toml");
                    let mut c = cmd(PATINA, &["--config", &cfg.to_string_lossy(), "backup"]);
                    c.env("BENCH_S3_KEY", &server.access_key)
                        .env("BENCH_S3_SECRET", &server.secret_key);
                    let mut s = pipeline(vec![c], None, None);
                    s.bytes = find_file(&server.bucket_dir().join(&prefix), ".zst")
                        .map_or(0, |f| file_size(&f));
                    s
                }
                "patina restore" => restore_with(&work.join("patina"), None),
                "patina verify" => {
                    // A drill of what the last `patina backup` stored (or of a new backup).
                    let pdir = work.join("patina");
                    let cfg = pdir.join("patina.toml");
                    if !cfg.exists() {
                        reset(&pdir);
                        patina_config(&pdir, &db);
                        pipeline(
                            vec![cmd(PATINA, &["--config", &cfg.to_string_lossy(), "backup"])],
                            None,
                            None,
                        );
                    }
                    pipeline(
                        vec![cmd(
                            PATINA,
                            &["--config", &cfg.to_string_lossy(), "verify", "bench"],
                        )],
                        None,
                        None,
                    )
                }
                "patina restore, encrypted (age)" => {
                    restore_with(&work.join("patina-age"), Some(&key))
                }
                "sqlite3 .dump | zstd -3" => pipeline(
                    vec![
                        cmd("sqlite3", &[&db_s, ".dump"]),
                        cmd("zstd", &["-3", "-q", "-c"]),
                    ],
                    None,
                    Some(&reference_zst),
                ),
                "sqlite3 .dump" => {
                    reset(&dir);
                    let out = dir.join("dump.sql");
                    pipeline(vec![cmd("sqlite3", &[&db_s, ".dump"])], None, Some(&out))
                }
                "sqlite3 .backup" => {
                    reset(&dir);
                    let out = dir.join("copy.db");
                    let mut s = pipeline(
                        vec![cmd(
                            "sqlite3",
                            &[&db_s, &format!(".backup '{}'", out.display())],
                        )],
                        None,
                        None,
                    );
                    s.bytes = file_size(&out);
                    s
                }
                "restic backup (first run)" => {
                    reset(&dir);
                    let repo = dir.join("repo");
                    let repo_s = repo.to_string_lossy().into_owned();
                    let mut init = cmd("restic", &["init", "--repo", &repo_s, "-q"]);
                    init.env("RESTIC_PASSWORD", "bench");
                    pipeline(vec![init], None, None);
                    let mut backup = cmd("restic", &["backup", "--repo", &repo_s, "-q", &db_s]);
                    backup
                        .env("RESTIC_PASSWORD", "bench")
                        .env("RESTIC_CACHE_DIR", dir.join("cache"));
                    let before = tree_size(&repo);
                    let mut s = pipeline(vec![backup], None, None);
                    s.bytes = tree_size(&repo) - before;
                    s
                }
                "zstd -dc | sqlite3 new.db" => {
                    if !reference_zst.exists() {
                        pipeline(
                            vec![
                                cmd("sqlite3", &[&db_s, ".dump"]),
                                cmd("zstd", &["-3", "-q", "-c"]),
                            ],
                            None,
                            Some(&reference_zst),
                        );
                    }
                    reset(&dir);
                    let out = dir.join("new.db");
                    let mut s = pipeline(
                        vec![
                            cmd("zstd", &["-dc", "-q"]),
                            cmd("sqlite3", &["-bail", &out.to_string_lossy()]),
                        ],
                        Some(&reference_zst),
                        None,
                    );
                    s.bytes = file_size(&out);
                    s
                }
                other => unreachable!("unknown case {other}"),
            };
            eprintln!(
                "[{} {}/{}] {:<28} {:>8.2}s {:>7.2}s CPU {:>7.1} MiB {:>12} B",
                scale.name,
                iter + 1,
                opts.iters,
                case.name,
                sample.wall.as_secs_f64(),
                sample.cpu,
                sample.rss_kib as f64 / 1024.0,
                sample.bytes
            );
            case.samples.push(sample);
        }
    }
    let load_after = loadavg();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} fixture: {:.1} MB, {} iterations interleaved, {:.0}s; load average {} before, {} after\n",
        scale.name,
        db_bytes as f64 / 1e6,
        opts.iters,
        started.elapsed().as_secs_f64(),
        load_before,
        load_after
    );
    let _ = writeln!(
        out,
        "| command | median wall | × patina time | CPU (user+sys) | peak RSS | output bytes | × patina bytes |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for group in [Group::Backup, Group::Restore] {
        let med = |c: &Case| {
            let mut w: Vec<f64> = c.samples.iter().map(|s| s.wall.as_secs_f64()).collect();
            let mut r: Vec<f64> = c.samples.iter().map(|s| s.rss_kib as f64).collect();
            let mut b: Vec<f64> = c.samples.iter().map(|s| s.bytes as f64).collect();
            let mut u: Vec<f64> = c.samples.iter().map(|s| s.cpu).collect();
            (
                median(&mut w),
                median(&mut r),
                median(&mut b),
                median(&mut u),
            )
        };
        let base = cases
            .iter()
            .find(|c| c.group == group && c.name.starts_with("patina") && !c.samples.is_empty())
            .map(med);
        for c in cases.iter().filter(|c| c.group == group) {
            if let Some(m) = c.missing {
                let _ = writeln!(
                    out,
                    "| `{}` | {m} not installed | | | | | |",
                    c.name.replace('|', "\\|")
                );
                continue;
            }
            if c.samples.is_empty() {
                continue;
            }
            let (w, r, b, u) = med(c);
            let (tw, tb) = match base {
                Some((bw, _, bb, _)) => (
                    format!("{:.2}×", w / bw),
                    if bb > 0.0 && b > 0.0 {
                        format!("{:.3}×", b / bb)
                    } else {
                        String::new()
                    },
                ),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                out,
                "| `{}` | {:.2} s | {} | {:.2} s | {:.1} MiB | {} | {} |",
                c.name.replace('|', "\\|"),
                w,
                tw,
                u,
                r / 1024.0,
                b as u64,
                tb
            );
        }
    }
    drop(s3_server);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(target_dir().join("bench-keys"));
    out
}

fn main() {
    let opts = parse_args();
    let mut report = String::new();
    let _ = writeln!(report, "## Backup benchmark\n");
    let _ = writeln!(report, "- machine: {}", machine());
    let _ = writeln!(
        report,
        "- {}; zstd {}; restic {}",
        version("sqlite3", "--version")
            .split_whitespace()
            .take(1)
            .map(|v| format!("sqlite3 {v}"))
            .collect::<String>(),
        version("zstd", "--version")
            .split_whitespace()
            .find(|w| w.starts_with('v'))
            .map_or("not installed", |v| v.trim_end_matches(',')),
        version("restic", "version")
            .strip_prefix("restic ")
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("not installed"),
    );
    let _ = writeln!(
        report,
        "- ratios: the command's median over patina's (time > 1 means patina is faster)\n"
    );
    for scale in opts.scales.clone() {
        report.push_str(&run_scale(scale, &opts));
        report.push('\n');
    }
    if opts.wants(d1_export::BACKUP) || opts.wants(d1_export::DOWNLOAD) {
        let scale = if opts.quick {
            d1_export::QUICK
        } else {
            d1_export::FULL
        };
        report.push_str(&d1_export::d1_row(
            &target_dir().join("bench-d1"),
            scale,
            opts.iters,
        ));
    }
    let work = target_dir().join("bench-daemon");
    if opts.wants(rows::RECONCILE) {
        // Quick: memory store only, 3 iterations; full: memory and file://, 7 iterations.
        let iters = if opts.quick { 3 } else { 7 };
        report.push_str(&rows::reconcile_row(&work, iters, !opts.quick));
    }
    let idle = opts.wants(rows::IDLE);
    let reloads = if !opts.wants(rows::RELOAD) {
        0
    } else if opts.quick {
        3
    } else {
        9
    };
    if idle || reloads > 0 {
        if opts.quick && idle {
            let _ = writeln!(
                report,
                "(quick mode: the idle window is {} s, not 5 minutes)\n",
                opts.idle_secs
            );
        }
        report.push_str(&rows::daemon_rows(&work, opts.idle_secs, idle, reloads));
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("{report}");
}
