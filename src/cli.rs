//! The command line (clap): one-shot commands over the same backup, restore and catalog code
//! the daemon uses. The only module where `anyhow` is welcome.
//!
//! Exit codes: 0 ok, 1 runtime failure (a backup, restore or verification failed), 2 bad usage
//! or an invalid policy file. Errors print as one line with their whole cause chain, then a
//! `Try:` hint where the operator can act.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::backup::{self, BackupError, JobRequest, Observer};
use crate::bucket;
use crate::catalog::{self, Catalog};
use crate::config;
use crate::human;
use crate::inventory;
use crate::manifest::{Manifest, Trigger};
use crate::policy::Policy;
use crate::restore::{self, At};
use crate::source::sqlite::Progress;
use crate::store::Store;

/// `0.1.0 (commit 0123456789ab)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PATINA_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "patina",
    version = VERSION,
    about = "Declarative backups of SQLite and Cloudflare D1 databases to object storage",
    long_about = "Patina backs up the databases declared in patina.toml as deterministic SQL \
                  dumps (compressed, checksummed) to a local folder, Cloudflare R2 or any S3, \
                  and restores them with `patina restore` or with plain zstd + sqlite3."
)]
struct Cli {
    /// The policy file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "PATINA_CONFIG",
        default_value = "patina.toml",
        value_name = "FILE"
    )]
    config: PathBuf,

    /// Log format on stderr: `text` for people, `json` (one object per line) for collectors.
    /// The level filter is read from PATINA_LOG (e.g. `info`, `patina=debug`).
    #[arg(
        long,
        global = true,
        env = "PATINA_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// What `patina restore --to FILE` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreFormat {
    /// A SQLite database file.
    Sqlite,
    /// A SQL file for `wrangler d1 execute --file` (DESIGN §12).
    D1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: reconcile storage with the policy every tick, take due backups, roll
    /// weekly archives, prune what expired; reload the policy on change or SIGHUP.
    Run {
        /// How long running backups may finish after SIGTERM before they are aborted.
        #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
        shutdown_grace: Duration,
        /// How long one alert delivery request may take.
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
        alert_timeout: Duration,
        /// The wait before an alert delivery's second try (doubling for each further try, up
        /// to three tries).
        #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = parse_duration)]
        alert_retry_backoff: Duration,
    },
    /// Send alerts by hand.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Show what the daemon would do now (or at --at), and why, without doing it.
    Plan {
        /// Plan as of this time: RFC 3339, or `YYYY-MM-DD HH:MM` in the policy's timezone.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the policy file and print the effective policy with next fire times.
    Check,
    /// Print the JSON Schema of the policy file (for editors: taplo, Even Better TOML).
    Schema,
    /// Take backups now: the named databases, or every enabled one.
    Backup {
        /// Databases to back up (default: all enabled).
        #[arg(value_name = "DB")]
        databases: Vec<String>,
        /// A note recorded with the job.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List committed backups recorded in the catalog.
    List {
        /// Only this database.
        #[arg(long, short = 'd', value_name = "DB")]
        database: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a new SQLite file, a D1-ready SQL file, or a D1 database.
    Restore {
        /// The database to restore.
        #[arg(value_name = "DB")]
        database: String,
        /// Which restore point: `latest`; a UTC date (2026-11-20: that day's newest); or a time
        /// (2026-11-20T14:00Z, "2026-11-20 14:00" in UTC, RFC 3339 with an offset): the newest
        /// taken at or before it. Daily objects and weekly archive members alike.
        #[arg(long, default_value = "latest", value_name = "WHEN")]
        at: At,
        /// Restore only this table (with its indexes and triggers); repeat for more. Views are
        /// left out.
        #[arg(long = "table", value_name = "NAME", conflicts_with = "to_d1")]
        tables: Vec<String>,
        /// The file to create: a SQLite database, or with `--format d1` a SQL file for
        /// `wrangler d1 execute --file`.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "to_d1",
            conflicts_with = "to_d1"
        )]
        to: Option<PathBuf>,
        /// What `--to` writes: `sqlite` (a database file) or `d1` (SQL that D1 can execute into
        /// a fresh database or one holding the same tables).
        #[arg(long, value_enum, default_value = "sqlite", conflicts_with = "to_d1")]
        format: RestoreFormat,
        /// Import the backup into this D1 database (its UUID) through the D1 import API, after
        /// a safety backup of the tables it holds (trigger `pre-restore`).
        #[arg(long = "to-d1", value_name = "UUID")]
        to_d1: Option<String>,
        /// Replace FILE if it exists; with `--to-d1`, replace the tables of a D1 database that
        /// already holds tables.
        #[arg(long)]
        force: bool,
        /// The age identity file that opens encrypted backups (default: `[encryption]
        /// identity_file`). It may hold several identities.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Read only from this destination: `primary` ([storage]) or a [[replica]]'s name.
        /// Default: the primary, falling back to each replica in turn.
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
    },
    /// Restore the newest backup of each database into a scratch file and check it against
    /// its manifest (integrity_check, row counts, schema hash).
    Verify {
        /// Databases to verify (default: all enabled).
        #[arg(value_name = "DB")]
        databases: Vec<String>,
        /// Which restore point of each: `latest`, a UTC date, or a time (the newest at or
        /// before it), as for `restore --at`.
        #[arg(long, default_value = "latest", value_name = "WHEN")]
        at: At,
        /// The age identity file that opens encrypted backups (default: `[encryption]
        /// identity_file`).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Read only from this destination: `primary` ([storage]) or a [[replica]]'s name.
        /// Default: the primary, falling back to each replica in turn.
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
    },
    /// Maintain the catalog (the local metadata database).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `patina man > /usr/local/share/man/man1/patina.1`.
    Man,
}

#[derive(Debug, Subcommand)]
enum AlertCommand {
    /// Send a clearly marked test message to every alert sink (or the one named) and report
    /// each HTTP outcome; backups are not touched.
    Test {
        /// The `[[alert]]` name (default: all sinks).
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Rebuild the catalog from the manifests in storage alone; the old one is kept aside.
    Rebuild {
        /// Read this destination instead of the primary: a [[replica]]'s name (when the
        /// primary bucket is gone or unreachable).
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
    },
}

/// An error with the exit code it deserves.
struct Failure {
    code: u8,
    error: anyhow::Error,
    hint: Option<String>,
}

impl Failure {
    fn usage(error: anyhow::Error, hint: Option<String>) -> Failure {
        Failure {
            code: 2,
            error,
            hint,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure {
            code: 1,
            error,
            hint: None,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("Error: {:#}", f.error);
            if let Some(hint) = f.hint {
                eprintln!("Try: {hint}");
            }
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATINA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Run {
            shutdown_grace,
            alert_timeout,
            alert_retry_backoff,
        } => {
            let policy = load_policy(&cli.config)?;
            let options = crate::daemon::Options {
                config: cli.config.clone(),
                shutdown_grace,
                alert_delivery: crate::alert::DeliveryConfig {
                    timeout: alert_timeout,
                    backoff: alert_retry_backoff,
                    max_backoff: alert_retry_backoff.saturating_mul(3),
                    ..crate::alert::DeliveryConfig::default()
                },
            };
            let rt = runtime()?;
            let result = rt.block_on(crate::daemon::run(
                options,
                policy,
                backup::system_clock(),
                std::future::pending(),
            ));
            // Do not wait for an aborted dump's blocking thread: its upload is gone and no
            // manifest will be written.
            rt.shutdown_timeout(Duration::from_secs(1));
            result.map_err(|e| {
                let code = if e.is_usage() { 2 } else { 1 };
                Failure {
                    code,
                    error: anyhow::Error::new(e),
                    hint: None,
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { at, json } => {
            let policy = load_policy(&cli.config)?;
            let now = match at {
                None => Utc::now(),
                Some(s) => parse_time(&s, policy.daemon.timezone).map_err(|e| {
                    Failure::usage(
                        anyhow!("--at {s:?}: {e}"),
                        Some("use RFC 3339 (2026-11-22T03:00:00Z) or \"2026-11-22 03:00\"".into()),
                    )
                })?,
            };
            runtime()?.block_on(plan_cmd(policy, now, json))
        }
        Command::Schema => {
            let schema = config::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("schema serializes")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let policy = load_policy(&cli.config)?;
            print!("{}", config::describe(&policy, Utc::now()));
            // The files the policy names but does not hold are read now, so a wrong path or a
            // bad PEM fails here, not when the daemon starts or at the first restore.
            // A file this user may not read (mode 0600, owned by the service user) is noted,
            // not failed: the daemon's user is the one that must read it.
            let unreadable = |path: &Path| {
                let denied = std::fs::File::open(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
                if denied {
                    println!(
                        "note: {} is not readable by this user; not checked (the daemon's user \
                         must be able to read it)",
                        path.display()
                    );
                }
                denied
            };
            let mut problems = Vec::new();
            if let Some(files) = &policy.daemon.tls
                && !unreadable(&files.cert)
                && !unreadable(&files.key)
                && let Err(e) = crate::http::Tls::load(files)
            {
                problems.push(e.to_string());
            }
            let keys = restore::Keys::from_policy(&policy);
            if !keys.identity_file().is_some_and(unreadable)
                && let Err(e) = keys.load()
            {
                problems.push(e.to_string());
            }
            if !problems.is_empty() {
                return Err(Failure::usage(
                    anyhow!(
                        "{} is valid, but the files it names are not usable:\n  {}",
                        cli.config.display(),
                        problems.join("\n  ")
                    ),
                    Some(
                        "fix the files (paths are relative to the policy file), then run \
                         `patina check` again"
                            .into(),
                    ),
                ));
            }
            println!("\n{}: ok", cli.config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { databases, reason } => {
            let policy = load_policy(&cli.config)?;
            let names = select_databases(&policy, &databases)?;
            runtime()?.block_on(backup_now(policy, names, reason))
        }
        Command::List { database, json } => {
            let policy = load_policy(&cli.config)?;
            list(&policy, database.as_deref(), json)
        }
        Command::Restore {
            database,
            at,
            tables,
            to,
            format,
            to_d1,
            force,
            identity,
            from,
        } => {
            let policy = load_policy(&cli.config)?;
            let keys = keys(&policy, identity);
            if !crate::manifest::valid_database_name(&database) {
                return Err(Failure::usage(
                    anyhow!("{database:?} is not a database name"),
                    Some("names are lowercase letters, digits, '-' and '_'".into()),
                ));
            }
            match (to, to_d1) {
                (_, Some(id)) => {
                    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
                        return Err(Failure::usage(
                            anyhow!("--to-d1 {id:?} is not a D1 database id"),
                            Some("D1 ids are UUIDs: `wrangler d1 list` shows them".into()),
                        ));
                    };
                    runtime()?.block_on(restore_to_d1(
                        policy,
                        database,
                        at,
                        uuid.hyphenated().to_string(),
                        force,
                        keys,
                        from,
                    ))
                }
                (Some(to), None) => runtime()?.block_on(restore_cmd(
                    policy,
                    RestoreRequest {
                        database,
                        at,
                        tables,
                        to,
                        format,
                        force,
                        keys,
                        from,
                    },
                )),
                (None, None) => Err(Failure::usage(
                    anyhow!("restore needs --to FILE or --to-d1 UUID"),
                    None,
                )),
            }
        }
        Command::Verify {
            databases,
            at,
            identity,
            from,
        } => {
            let policy = load_policy(&cli.config)?;
            let names = select_databases(&policy, &databases)?;
            let keys = keys(&policy, identity);
            runtime()?.block_on(verify_cmd(policy, names, at, keys, from))
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "patina", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .context("write the completions")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("write the manual page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alert {
            command: AlertCommand::Test { name },
        } => {
            let policy = load_policy(&cli.config)?;
            alert_test(&policy, name.as_deref())
        }
        Command::Catalog {
            command: CatalogCommand::Rebuild { from },
        } => {
            let policy = load_policy(&cli.config)?;
            runtime()?.block_on(rebuild_catalog(policy, from))
        }
    }
}

/// `patina alert test [NAME]`: one test message per sink, one line per outcome.
fn alert_test(policy: &Policy, name: Option<&str>) -> Result<ExitCode, Failure> {
    if let Some(n) = name
        && !policy.sinks.iter().any(|s| s.name == n)
    {
        let known: Vec<&str> = policy.sinks.iter().map(|s| s.name.as_str()).collect();
        return Err(Failure::usage(
            anyhow!("no alert sink named {n:?}"),
            Some(if known.is_empty() {
                "add an [[alert]] section to the policy file".into()
            } else {
                format!("declared sinks: {}", known.join(", "))
            }),
        ));
    }
    if policy.sinks.is_empty() {
        println!("no alert sinks are configured");
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes = runtime()?.block_on(crate::alert::Alerts::send_test(
        policy,
        name,
        Duration::from_secs(10),
    ));
    let mut failed = false;
    for o in &outcomes {
        match &o.result {
            Ok(code) => println!("{:<24} {:<13} ok (HTTP {code})", o.sink, o.kind),
            Err(e) => {
                failed = true;
                println!("{:<24} {:<13} FAILED  {e}", o.sink, o.kind);
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn load_policy(path: &Path) -> Result<Policy, Failure> {
    config::load(path).map_err(|e| {
        let n = e.problems.len();
        Failure::usage(
            anyhow!(
                "{} has {n} problem{}:\n{e}",
                path.display(),
                if n == 1 { "" } else { "s" }
            ),
            Some(format!(
                "fix the file, then run `patina check --config {}`",
                path.display()
            )),
        )
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .map_err(Failure::from)
}

/// The named databases (checked against the policy), or every enabled one.
fn select_databases(policy: &Policy, names: &[String]) -> Result<Vec<String>, Failure> {
    if names.is_empty() {
        return Ok(policy
            .databases
            .iter()
            .filter(|d| d.enabled)
            .map(|d| d.name.clone())
            .collect());
    }
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| policy.database(n).is_none())
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = policy.databases.iter().map(|d| d.name.as_str()).collect();
        return Err(Failure::usage(
            anyhow!(
                "unknown database{} {} in {}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                policy.source.display()
            ),
            Some(format!("declared databases: {}", known.join(", "))),
        ));
    }
    let mut out = names.to_vec();
    out.dedup();
    Ok(out)
}

fn open_store(policy: &Policy) -> Result<Store, Failure> {
    Store::open(&policy.storage)
        .context("open storage")
        .map_err(|e| Failure::usage(e, Some("check [storage] in the policy file".into())))
}

/// Where restores read from: the primary, then each replica (or only `--from NAME`).
fn open_sources(policy: &Policy, from: Option<&str>) -> Result<restore::Sources, Failure> {
    crate::replica::sources(policy, open_store(policy)?, from)
        .map_err(|e| Failure::usage(anyhow!(e), None))
}

fn open_catalog(policy: &Policy) -> Result<Catalog, Failure> {
    Catalog::open(&policy.daemon.state_dir).map_err(|e| Failure::from(anyhow::Error::new(e)))
}

async fn backup_now(
    policy: Policy,
    names: Vec<String>,
    reason: Option<String>,
) -> Result<ExitCode, Failure> {
    if names.is_empty() {
        return Err(Failure::usage(
            anyhow!("no enabled databases in {}", policy.source.display()),
            Some("add a [[database]] section, or name a disabled one explicitly".into()),
        ));
    }
    let ctx = job_context(policy)?;
    let bars = show_progress().then(|| Arc::new(Bars::new(&names)));
    let observer: Arc<dyn Observer> = match &bars {
        Some(b) => Arc::clone(b) as Arc<dyn Observer>,
        None => Arc::new(LogLines),
    };
    let report = backup::run_job(
        &ctx,
        JobRequest {
            job_id: None,
            databases: names,
            trigger: Trigger::Manual,
            initiated_by: Some(format!("cli:{}", whoami())),
            reason,
        },
        observer,
    )
    .await
    .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    if let Some(bars) = bars {
        // The summary below replaces the bars.
        bars.multi.clear().ok();
    }
    for (name, outcome) in &report.results {
        match outcome {
            Ok(m) => println!(
                "{name:<24} ok      {:>10}  {:>3} tables  {:>9} rows  {}",
                human::bytes(m.size),
                m.table_count,
                m.row_count,
                ctx.store.location(&m.key)
            ),
            Err(e) => println!("{name:<24} FAILED  {e}"),
        }
    }
    let failed = report.failed();
    let total = report.results.len();
    let secs = (report.completed_at - report.started_at).num_milliseconds() as f64 / 1000.0;
    if failed > 0 {
        eprintln!(
            "job {}: {failed} of {total} backups failed ({secs:.1}s)",
            report.job_id
        );
        Ok(ExitCode::from(1))
    } else {
        eprintln!(
            "job {}: {total} backups committed ({secs:.1}s)",
            report.job_id
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn show_progress() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Plain log lines, for logs and pipes.
struct LogLines;

impl Observer for LogLines {
    fn started(&self, database: &str) {
        tracing::info!(database, "backup started");
    }
    fn progress(&self, _: &str, _: Progress) {}
    fn finished(&self, database: &str, outcome: &Result<Manifest, BackupError>) {
        match outcome {
            Ok(m) => tracing::info!(
                database,
                size = m.size,
                tables = m.table_count,
                rows = m.row_count,
                seconds = (m.completed_at - m.started_at).num_milliseconds() as f64 / 1000.0,
                key = %m.key,
                "backup committed"
            ),
            Err(e) => tracing::error!(database, error = %e, "backup failed"),
        }
    }
}

/// One progress bar per database, on a terminal.
struct Bars {
    bars: Vec<(String, ProgressBar)>,
    multi: MultiProgress,
}

impl Bars {
    fn new(names: &[String]) -> Bars {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:<24} [{bar:30}] {pos:>9}/{len:9} rows {elapsed:>4} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let bars = names
            .iter()
            .map(|n| {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(n.clone());
                bar.set_message("waiting");
                (n.clone(), bar)
            })
            .collect();
        Bars { bars, multi }
    }

    fn bar(&self, database: &str) -> Option<&ProgressBar> {
        self.bars
            .iter()
            .find(|(n, _)| n == database)
            .map(|(_, b)| b)
    }
}

impl Observer for Bars {
    fn started(&self, database: &str) {
        if let Some(b) = self.bar(database) {
            b.set_message("dumping");
            b.enable_steady_tick(Duration::from_millis(200));
        }
    }
    fn progress(&self, database: &str, p: Progress) {
        if let Some(b) = self.bar(database) {
            b.set_length(p.rows_total);
            b.set_position(p.rows_done);
        }
    }
    fn finished(&self, database: &str, outcome: &Result<Manifest, BackupError>) {
        if let Some(b) = self.bar(database) {
            match outcome {
                Ok(m) => {
                    b.set_length(m.row_count);
                    b.set_position(m.row_count);
                    b.finish_with_message(format!("done, {}", human::bytes(m.size)))
                }
                Err(_) => b.abandon_with_message("failed"),
            }
        }
    }
}

/// The identities that open encrypted backups: `--identity FILE`, else the policy's
/// `[encryption] identity_file`.
fn keys(policy: &Policy, identity: Option<PathBuf>) -> restore::Keys {
    identity.map_or_else(|| restore::Keys::from_policy(policy), restore::Keys::file)
}

/// A failed restore or verification (exit 1), with its hint.
fn restore_failure(e: restore::RestoreError) -> Failure {
    let hint = match &e {
        restore::RestoreError::TargetExists(_) => {
            Some("choose another --to FILE, or add --force".to_string())
        }
        restore::RestoreError::Load(crate::source::sqlite::SourceError::UnknownTables {
            ..
        }) => Some("name tables as the backup has them (`--table NAME`, repeatable)".into()),
        e => e.hint().map(str::to_string),
    };
    Failure {
        code: 1,
        error: anyhow::Error::new(e),
        hint,
    }
}

fn list(policy: &Policy, database: Option<&str>, json: bool) -> Result<ExitCode, Failure> {
    let catalog = open_catalog(policy)?;
    let rows = catalog
        .list_backups(database)
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "database": r.database, "date": r.date, "tier": r.tier, "key": r.key,
                    "location": r.location,
                    "encryption": (!r.sealed_for.is_empty())
                        .then(|| serde_json::json!({"kind": "age", "recipients": r.sealed_for})),
                    "size": r.size_bytes, "tables": r.table_count, "rows": r.row_count,
                    "sha256": r.sha256,
                    "createdAt": rfc3339(r.created_at), "expiresAt": rfc3339(r.expires_at),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&items).expect("json serializes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!(
            "no backups in the catalog {}{} — run `patina backup`, or `patina catalog rebuild` to read them from storage",
            catalog.path().display(),
            database.map(|d| format!(" for {d}")).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20}  {:<24}  {:<6}  {:>10}  {:>6}  {:>10}  {:<12}  {:<20}  WHERE",
        "TIME", "DATABASE", "TIER", "SIZE", "TABLES", "ROWS", "SHA256", "SEALED FOR"
    );
    // Tables and rows of a point recovered from an archive alone are not known (`-`).
    let count = |n: u64| {
        if n == 0 {
            "-".to_string()
        } else {
            n.to_string()
        }
    };
    for r in &rows {
        println!(
            "{:<20}  {:<24}  {:<6}  {:>10}  {:>6}  {:>10}  {:<12}  {:<20}  {}",
            rfc3339(r.created_at),
            r.database,
            r.tier,
            human::bytes(r.size_bytes),
            count(r.table_count),
            count(r.row_count),
            &r.sha256[..r.sha256.len().min(12)],
            sealed_for(&r.sealed_for),
            r.location
        );
    }
    let mut per_db: std::collections::BTreeMap<&str, (usize, i64)> = Default::default();
    for r in &rows {
        let e = per_db.entry(&r.database).or_insert((0, r.created_at));
        e.0 += 1;
        e.1 = e.1.min(r.created_at);
    }
    for (db, (n, oldest)) in per_db {
        eprintln!("{db}: {n} restore points, oldest {}", rfc3339(oldest));
    }
    Ok(ExitCode::SUCCESS)
}

/// `patina list`'s SEALED FOR column: `-` for plaintext, else each recipient's fingerprint cut
/// to 16 characters (enough to tell `age-keygen -y` / `ssh-keygen -lf` output apart; `--json`
/// has them whole).
fn sealed_for(fingerprints: &[String]) -> String {
    if fingerprints.is_empty() {
        return "-".into();
    }
    fingerprints
        .iter()
        .map(|f| match f.char_indices().nth(16) {
            Some((i, _)) => format!("{}…", &f[..i]),
            None => f.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `patina restore DB --to FILE`, as asked.
struct RestoreRequest {
    database: String,
    at: At,
    tables: Vec<String>,
    to: PathBuf,
    format: RestoreFormat,
    force: bool,
    keys: restore::Keys,
    /// `--from NAME`: only this destination.
    from: Option<String>,
}

async fn restore_cmd(policy: Policy, req: RestoreRequest) -> Result<ExitCode, Failure> {
    let started = Utc::now();
    let sources = open_sources(&policy, req.from.as_deref())?;
    let found = locate_backup(&sources, &req.database, req.at).await;
    let (located, sources) = split_found(found, sources);
    let result = match &located {
        Ok(located) => restore_located_cmd(&sources, located, &req).await,
        Err(_) => Ok(ExitCode::SUCCESS),
    };
    let target = match req.format {
        RestoreFormat::Sqlite => req.to.display().to_string(),
        RestoreFormat::D1 => format!("{} (D1 SQL file)", req.to.display()),
    };
    let restore = (started, req.database.as_str(), target.as_str());
    finish_restore(&policy, sources.first(), restore, located, result)
}

/// Record a CLI restore (started at, database, target) in the restore history with its
/// outcome — the locating failure, or the restore's — and return that outcome.
fn finish_restore(
    policy: &Policy,
    store: &Store,
    (started_at, database, target): (DateTime<Utc>, &str, &str),
    located: Result<restore::Located, Failure>,
    result: Result<ExitCode, Failure>,
) -> Result<ExitCode, Failure> {
    let outcome = match (&located, &result) {
        (Err(f), _) | (_, Err(f)) => Err(format!("{:#}", f.error)),
        _ => Ok(()),
    };
    record_history(
        policy,
        store,
        History {
            started_at,
            action: "restore",
            database,
            located: located.as_ref().ok(),
            target: Some(target),
            outcome: outcome.as_ref().map(|_| ()).map_err(String::as_str),
        },
    );
    located?;
    result
}

async fn restore_located_cmd(
    sources: &restore::Sources,
    located: &restore::Located,
    req: &RestoreRequest,
) -> Result<ExitCode, Failure> {
    let (database, to, force) = (&req.database, &req.to, req.force);
    let only = if req.tables.is_empty() {
        String::new()
    } else {
        format!(" (only {})", req.tables.join(", "))
    };
    match req.format {
        RestoreFormat::Sqlite => {
            let restored =
                restore::restore_tables(sources, located, to, force, &req.tables, &req.keys)
                    .await
                    .map_err(restore_failure)?;
            match restored.table_rows {
                Some(rows) => println!(
                    "restored {database}{only} into {}: {rows} rows (sha256 verified)",
                    restored.target.display()
                ),
                None => println!(
                    "restored {database} into {} (sha256 verified, {} statements)",
                    restored.target.display(),
                    restored.statements
                ),
            }
        }
        RestoreFormat::D1 => {
            if to.exists() && !force {
                return Err(restore_failure(restore::RestoreError::TargetExists(
                    to.clone(),
                )));
            }
            // The backup is restored into a scratch database beside FILE, which the D1 file is
            // written from; both temporary files go on every path out.
            let scratch = sibling(to, "db");
            let partial = sibling(to, "partial");
            let _cleanup = RemoveOnDrop(vec![scratch.clone(), partial.clone()]);
            restore::restore_tables(sources, located, &scratch, true, &req.tables, &req.keys)
                .await
                .map_err(restore_failure)?;
            let stats = write_d1(&scratch, &partial).await?;
            std::fs::rename(&partial, to)
                .with_context(|| format!("move the D1 file into place at {}", to.display()))?;
            println!(
                "wrote {} for D1 from {database}{only}: {} tables, {} rows, {} statements (each at most {} bytes; sha256 of the backup verified)",
                to.display(),
                stats.tables,
                stats.rows,
                stats.statements,
                stats.largest_statement
            );
            println!(
                "load it with: wrangler d1 execute <DATABASE> --remote --file={}  (or: patina restore {database} --to-d1 <UUID>)",
                to.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who runs this command, for the restore history: `cli:<user>`.
fn cli_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let name = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| format!("uid {}", m.uid()))
        })
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{name}")
}

/// One entry of the restore history, as a command saw it.
struct History<'a> {
    started_at: DateTime<Utc>,
    action: &'static str,
    database: &'a str,
    located: Option<&'a restore::Located>,
    target: Option<&'a str>,
    outcome: Result<(), &'a str>,
}

/// Record a restore or verification in the catalog's restore history, best effort (DESIGN
/// §13): only when the state directory exists (it is never created for this), and a failure
/// to record is a warning, never the command's failure.
fn record_history(policy: &Policy, store: &Store, h: History<'_>) {
    let state_dir = &policy.daemon.state_dir;
    if !state_dir.is_dir() {
        return;
    }
    let location = h.located.map(|l| l.describe(store));
    let who = cli_user();
    let record = catalog::RestoreRecord {
        started_at: h.started_at,
        completed_at: Utc::now(),
        initiated_by: &who,
        action: h.action,
        database: h.database,
        key: h.located.map(|l| l.dump_key()),
        location: location.as_deref(),
        taken_at: h.located.map(|l| l.taken_at()),
        target: h.target,
        outcome: h.outcome,
    };
    // Restores are audited too (DESIGN §17), with the OS user as who.
    let user = who.trim_start_matches("cli:");
    let audit = catalog::AuditEntry {
        at: record.completed_at,
        who: Some(user),
        via: "cli",
        remote_addr: None,
        action: h.action,
        target: h.target,
        result: if h.outcome.is_ok() { "ok" } else { "error" },
        status: None,
    };
    let recorded = Catalog::open(state_dir).and_then(|c| {
        c.record_restore(&record)?;
        if h.action == "restore" {
            c.record_audit(&audit)?;
        }
        Ok(())
    });
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "the restore history was not recorded");
    }
}

/// The backup `at` of `database`, announced on stderr, with the sources reordered to read it
/// from where it was found first (a replica when the primary could not offer it).
async fn locate_backup(
    sources: &restore::Sources,
    database: &str,
    at: At,
) -> Result<(restore::Located, restore::Sources), Failure> {
    let (located, sources) = sources
        .locate(database, at)
        .await
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let store = sources.first();
    let from = match sources.first_name() {
        crate::policy::PRIMARY => String::new(),
        name => format!(" from replica {name:?}"),
    };
    eprintln!(
        "restoring {}{from} ({}, taken {})",
        located.describe(store),
        human::bytes(located.size()),
        located.taken_at().format("%Y-%m-%d %H:%M:%S UTC")
    );
    Ok((located, sources))
}

/// A located backup and the sources to read it from (the given ones when it was not found).
fn split_found(
    found: Result<(restore::Located, restore::Sources), Failure>,
    sources: restore::Sources,
) -> (Result<restore::Located, Failure>, restore::Sources) {
    match found {
        Ok((located, sources)) => (Ok(located), sources),
        Err(e) => (Err(e), sources),
    }
}

/// `{file}.patina-{random}.{ext}` beside `file`.
fn sibling(file: &Path, ext: &str) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    file.with_file_name(format!(
        ".{name}.patina-{}.{ext}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Files removed when dropped (on every path out).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes the D1-ready SQL of the SQLite database `db` into `target`.
async fn write_d1(
    db: &Path,
    target: &Path,
) -> Result<crate::source::d1_restore::D1FileStats, Failure> {
    use crate::source::d1_restore::{D1_MAX_STATEMENT, write_d1_file};
    let (db, target) = (db.to_path_buf(), target.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let file = std::fs::File::create(&target)
            .with_context(|| format!("create {}", target.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let stats = write_d1_file(&db, &mut out, D1_MAX_STATEMENT)?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("write {}", target.display()))?;
        file.sync_all()
            .with_context(|| format!("sync {}", target.display()))?;
        Ok(stats)
    })
    .await
    .map_err(|e| Failure::from(anyhow!("write the D1 file: {e}")))?
    .map_err(Failure::from)
}

/// `patina restore DB --to-d1 UUID`: restore the backup locally and check it, refuse a target
/// holding tables unless `--force`, back those tables up first (trigger `pre-restore`), import
/// the D1 file through the import API, then compare every table of the target with the backup.
async fn restore_to_d1(
    policy: Policy,
    database: String,
    at: At,
    id: String,
    force: bool,
    keys: restore::Keys,
    from: Option<String>,
) -> Result<ExitCode, Failure> {
    let Some(cloudflare) = policy.cloudflare.clone() else {
        return Err(Failure::usage(
            anyhow!(
                "--to-d1 needs a [cloudflare] section (account_id, api_token) in {}",
                policy.source.display()
            ),
            Some("the token needs the \"D1 Edit\" permission to import".into()),
        ));
    };
    let started = Utc::now();
    let sources = open_sources(&policy, from.as_deref())?;
    let found = locate_backup(&sources, &database, at).await;
    let (located, sources) = split_found(found, sources);
    let result = match &located {
        Ok(l) => {
            let target = D1Target {
                cloudflare: &cloudflare,
                database: &database,
                id: &id,
                force,
            };
            import_to_d1(&policy, &sources, l, target, &keys).await
        }
        Err(_) => Ok(ExitCode::SUCCESS),
    };
    let target = format!("d1:{id}");
    finish_restore(
        &policy,
        sources.first(),
        (started, database.as_str(), target.as_str()),
        located,
        result,
    )
}

/// Where `restore --to-d1` imports.
struct D1Target<'a> {
    cloudflare: &'a crate::policy::Cloudflare,
    database: &'a str,
    id: &'a str,
    force: bool,
}

/// The import half of [`restore_to_d1`], for a located backup.
async fn import_to_d1(
    policy: &Policy,
    sources: &restore::Sources,
    located: &restore::Located,
    target: D1Target<'_>,
    keys: &restore::Keys,
) -> Result<ExitCode, Failure> {
    let (cloudflare, force) = (target.cloudflare, target.force);
    let (database, id) = (target.database.to_string(), target.id.to_string());
    let client = crate::source::d1::Client::new(cloudflare, Default::default())
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let d1_err = |e: crate::source::d1::D1Error| Failure::from(anyhow::Error::new(e));

    let tables = client.user_tables(&database, &id).await.map_err(d1_err)?;
    if !tables.is_empty() && !force {
        return Err(Failure {
            code: 1,
            error: anyhow!(
                "D1 database {id} already holds {} tables ({}); nothing was changed",
                tables.len(),
                tables.join(", ")
            ),
            hint: Some(
                "add --force to replace the tables the backup holds (a safety backup of the current ones is taken first), or restore into an empty database".into(),
            ),
        });
    }

    let scratch_dir = policy.daemon.state_dir.join("scratch");
    std::fs::create_dir_all(&scratch_dir)
        .with_context(|| format!("create {}", scratch_dir.display()))?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let scratch = scratch_dir.join(format!("restore-{database}-{tag}.db"));
    let sql = scratch_dir.join(format!("restore-{database}-{tag}.d1.sql"));
    let _cleanup = RemoveOnDrop(vec![scratch.clone(), sql.clone()]);
    // Restored (and so decrypted) before the target is touched: without an identity nothing
    // changes in D1.
    restore::restore_located(sources, located, &scratch, true, keys)
        .await
        .map_err(restore_failure)?;
    let stats = write_d1(&scratch, &sql).await?;

    if !tables.is_empty() {
        let safety = safety_backup(policy, &database, &id).await?;
        eprintln!(
            "safety backup of D1 database {id} before replacing its tables: {}",
            open_store(policy)?.location(&safety.key)
        );
    }
    eprintln!(
        "importing {} statements ({} tables, {} rows) into D1 database {id}",
        stats.statements, stats.tables, stats.rows
    );
    let imported = client.import(&database, &id, &sql).await.map_err(d1_err)?;
    let problems = client
        .compare(&database, &id, &scratch)
        .await
        .map_err(d1_err)?;
    if !problems.is_empty() {
        return Err(Failure {
            code: 1,
            error: anyhow!(
                "D1 database {id} does not hold what the backup holds after the import: {}",
                problems.join("; ")
            ),
            hint: Some(
                "check the database with `wrangler d1 execute`, and restore the safety backup or use Time Travel to go back".into(),
            ),
        });
    }
    println!(
        "restored {database} into D1 database {id}: {} statements, every table checked against the backup{}",
        imported.queries,
        imported
            .bookmark
            .map(|b| format!(" (Time Travel bookmark {b})"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// What a one-shot job runs with: the policy, its storage and catalog, the system clock.
fn job_context(policy: Policy) -> Result<backup::Context, Failure> {
    Ok(backup::Context {
        store: open_store(&policy)?,
        catalog: Arc::new(Mutex::new(open_catalog(&policy)?)),
        policy: Arc::new(policy),
        clock: backup::system_clock(),
        tickets: None,
    })
}

/// A committed backup of D1 database `id` with trigger `pre-restore`: under the name of the
/// policy's database with that id, else `{database}-pre-restore`.
async fn safety_backup(policy: &Policy, database: &str, id: &str) -> Result<Manifest, Failure> {
    use crate::policy::SourceSpec;
    let mut policy = policy.clone();
    let declared = policy
        .databases
        .iter()
        .find(|d| matches!(&d.source, SourceSpec::D1 { id: other, .. } if other == id))
        .map(|d| d.name.clone());
    let name = match declared {
        Some(name) => name,
        None => {
            let name = format!("{database}-pre-restore");
            let template = policy
                .databases
                .iter()
                .find(|d| d.name == database)
                .or(policy.databases.first())
                .cloned();
            let Some(mut db) = template else {
                return Err(Failure::from(anyhow!(
                    "no database in {} to model the safety backup of D1 database {id} on",
                    policy.source.display()
                )));
            };
            db.name = name.clone();
            db.source = SourceSpec::D1 {
                id: id.to_string(),
                mode: crate::policy::D1Mode::Export,
            };
            db.exclude_tables.clear();
            db.enabled = true;
            policy.databases.retain(|d| d.name != name);
            policy.databases.push(db);
            name
        }
    };
    let ctx = job_context(policy)?;
    let report = backup::run_job(
        &ctx,
        JobRequest {
            job_id: None,
            databases: vec![name.clone()],
            trigger: Trigger::PreRestore,
            initiated_by: Some(format!("cli:{}", whoami())),
            reason: Some(format!("before restoring {database} into D1 database {id}")),
        },
        Arc::new(LogLines),
    )
    .await
    .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    match report.results.into_iter().next() {
        Some((_, Ok(manifest))) => Ok(manifest),
        Some((_, Err(e))) => Err(Failure {
            code: 1,
            error: anyhow!(
                "the safety backup of D1 database {id} failed, so nothing was restored: {e}"
            ),
            hint: None,
        }),
        None => Err(Failure::from(anyhow!(
            "the safety backup of D1 database {id} did not run"
        ))),
    }
}

async fn verify_cmd(
    policy: Policy,
    names: Vec<String>,
    at: At,
    keys: restore::Keys,
    from: Option<String>,
) -> Result<ExitCode, Failure> {
    let sources = open_sources(&policy, from.as_deref())?;
    let catalog = open_catalog(&policy)?;
    let scratch = policy.daemon.state_dir.join("scratch");
    let who = cli_user();
    let mut failed = 0;
    for name in &names {
        let started = Utc::now();
        let (located, from) = match sources.locate(name, at).await {
            Ok((l, from)) => (Ok(l), from),
            Err(e) => (Err(e), sources.clone()),
        };
        let mut hint = None;
        let outcome: Result<(), String> = match &located {
            Err(e) => Err(e.to_string()),
            Ok(l) => match restore::verify_located(&from, l, &scratch, started, &keys).await {
                Err(e) => {
                    hint = e.hint();
                    Err(e.to_string())
                }
                Ok(v) if !v.ok() => Err(v.problems.join("; ")),
                Ok(_) => Ok(()),
            },
        };
        let location = located.as_ref().ok().map(|l| l.describe(from.first()));
        let completed = Utc::now();
        let record = catalog::VerificationRecord {
            database: name,
            key: located.as_ref().map(|l| l.dump_key()).unwrap_or(""),
            location: location.as_deref(),
            taken_at: located.as_ref().ok().map(|l| l.taken_at()),
            origin: "cli",
            at: started,
            duration_ms: Some((completed - started).num_milliseconds()),
            newest: at == At::Latest,
            outcome: outcome.as_ref().map(|_| ()).map_err(String::as_str),
        };
        catalog
            .record_verification(&record)
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
        let history = catalog::RestoreRecord {
            started_at: started,
            completed_at: completed,
            initiated_by: &who,
            action: "verify",
            database: name,
            key: (!record.key.is_empty()).then_some(record.key),
            location: location.as_deref(),
            taken_at: record.taken_at,
            target: None,
            outcome: record.outcome,
        };
        if let Err(e) = catalog.record_restore(&history) {
            tracing::warn!(error = %e, "the restore history was not recorded");
        }
        let shown = location.as_deref().unwrap_or("");
        match outcome {
            Ok(()) => println!("{name:<24} ok      {shown}"),
            Err(problems) => {
                failed += 1;
                println!(
                    "{name:<24} FAILED  {shown}{}{problems}",
                    if shown.is_empty() { "" } else { ": " }
                );
                if let Some(hint) = hint {
                    eprintln!("Try: {hint}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} verifications failed", names.len());
        Ok(ExitCode::from(1))
    } else {
        eprintln!("{} backups verified", names.len());
        Ok(ExitCode::SUCCESS)
    }
}

async fn rebuild_catalog(policy: Policy, from: Option<String>) -> Result<ExitCode, Failure> {
    let store = open_sources(&policy, from.as_deref())?.first().clone();
    let inv = bucket::scan(&store)
        .await
        .context("list storage")
        .map_err(Failure::from)?;
    let store_ref = &store;
    let mut manifests = Vec::new();
    let mut unreadable = 0usize;
    let mut reads = futures::stream::iter(inv.dumps.iter())
        .map(|d| async move { bucket::read_manifest(store_ref, &d.manifest_key).await })
        .buffer_unordered(8);
    while let Some(result) = reads.next().await {
        match result {
            Ok(m) => manifests.push(m),
            Err(e) => {
                unreadable += 1;
                tracing::warn!(error = %e, "skipping an unreadable manifest");
            }
        }
    }
    manifests.sort_by(|a, b| (a.started_at, &a.database).cmp(&(b.started_at, &b.database)));
    // Weekly archives: their members are restore points too, whose daily copies may be gone.
    let mut archives = Vec::new();
    for a in &inv.archives {
        match crate::archive::read_manifest(&store, &a.manifest_key).await {
            Ok(m) => archives.push((a.week, m)),
            Err(e) => {
                unreadable += 1;
                tracing::warn!(error = %e, "skipping an unreadable archive manifest");
            }
        }
    }

    let state_dir = &policy.daemon.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("create state directory {}", state_dir.display()))?;
    let live = state_dir.join(catalog::FILE_NAME);
    let fresh = state_dir.join(format!("{}.rebuild", catalog::FILE_NAME));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fresh.display()));
    }
    {
        let mut catalog =
            Catalog::open_file(&fresh).map_err(|e| Failure::from(anyhow::Error::new(e)))?;
        let daily = policy.retention.daily;
        catalog
            .import_manifests(&manifests, &|m| daily.after(m.completed_at))
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
        for (week, m) in &archives {
            let expires = crate::reconcile::archive_expiry(&policy, *week, m.created_at);
            catalog
                .record_archive(m, expires)
                .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
        }
    }
    // A -wal left beside a deleted catalog would be replayed into the rebuilt one: it goes
    // aside with the rest.
    let leftover = ["", "-wal", "-shm"]
        .iter()
        .any(|suffix| PathBuf::from(format!("{}{suffix}", live.display())).exists());
    let kept = if leftover {
        let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
        let aside = state_dir.join(format!("{}.bak-{stamp}", catalog::FILE_NAME));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", live.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to)
                    .with_context(|| format!("move the old catalog {} aside", from.display()))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&fresh, &live)
        .with_context(|| format!("move the rebuilt catalog into place at {}", live.display()))?;
    println!(
        "rebuilt {} from {} manifests and {} weekly archives in {}{}",
        live.display(),
        manifests.len(),
        archives.len(),
        store.location(""),
        if unreadable > 0 {
            format!(" ({unreadable} unreadable manifests skipped, see the log)")
        } else {
            String::new()
        }
    );
    if let Some(aside) = kept {
        println!("the previous catalog is kept at {}", aside.display());
    }
    if !inv.debris.is_empty() || !inv.foreign.is_empty() {
        println!(
            "storage also holds {} uncommitted data objects and {} foreign keys (left untouched)",
            inv.debris.len(),
            inv.foreign.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn plan_cmd(policy: Policy, now: DateTime<Utc>, json: bool) -> Result<ExitCode, Failure> {
    let store = open_store(&policy)?;
    let catalog = open_catalog(&policy)?;
    let location = store.location("");
    let reconciler = crate::reconcile::Reconciler::new(
        Arc::new(policy),
        store,
        Arc::new(Mutex::new(catalog)),
        Arc::new(move || now),
        Arc::new(backup::Quiet),
    );
    let (plan, inventory, _) = reconciler
        .plan()
        .await
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let replicas = reconciler.replica_plans(&plan, &inventory).await;
    let policy = reconciler.policy();
    // Several daemons: this plan is what a node holding every lease would do; say who holds
    // what, and where each database would go.
    let cluster = match &policy.cluster {
        None => None,
        Some(c) => {
            let databases = policy.enabled_names();
            let outlook = crate::cluster::outlook(&reconciler.store(), &databases)
                .await
                .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
            Some((c.clone(), outlook))
        }
    };
    if json {
        let mut value = serde_json::to_value(&plan).expect("plan serializes");
        if let Some((c, outlook)) = &cluster {
            value["cluster"] = serde_json::json!({
                "node": c.node,
                "leaseTtlSeconds": c.lease_ttl.as_secs(),
                "outlook": outlook,
            });
        }
        value["replicas"] = replicas
            .iter()
            .map(|(name, location, planned)| match planned {
                Ok(p) => serde_json::json!({
                    "name": name,
                    "location": location,
                    "copies": p.copies.iter().map(|c| serde_json::json!({
                        "dataKey": c.data_key,
                        "manifestKey": c.manifest_key,
                        "archive": c.archive,
                    })).collect::<Vec<_>>(),
                    "deletions": p.deletions.iter().map(|d| serde_json::json!({
                        "dataKey": d.data_key,
                        "manifestKey": d.manifest_key,
                        "database": d.database,
                        "reason": d.reasons.join("; "),
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({ "name": name, "location": location, "error": e }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("plan serializes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_plan(&plan, &location, &inventory));
    print!("{}", render_replica_plans(&replicas));
    if let Some((c, outlook)) = &cluster {
        print!("{}", render_outlook(c, outlook));
    }
    Ok(ExitCode::SUCCESS)
}

/// `patina plan` with `[cluster]`: the nodes, and each lease's holder and share.
fn render_outlook(c: &crate::policy::Cluster, o: &crate::cluster::Outlook) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncluster — this node: {}, lease_ttl {}s; nodes with a heartbeat: {}{}",
        c.node,
        c.lease_ttl.as_secs(),
        if o.nodes.is_empty() {
            "none".to_string()
        } else {
            o.nodes.join(", ")
        },
        if o.left.is_empty() {
            String::new()
        } else {
            format!(" (left: {})", o.left.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "  (the plan above is what a node holding every lease would do; each node backs up only what it holds)"
    );
    let width = o
        .databases
        .iter()
        .map(|e| e.database.len())
        .chain([o.maintenance.database.len()])
        .max()
        .unwrap_or(0);
    for e in o.databases.iter().chain([&o.maintenance]) {
        let held = match (&e.holder, e.generation) {
            (Some(h), Some(g)) => format!("held by {h} (generation {g})"),
            _ => "not held".to_string(),
        };
        let share = e.share.as_deref().map_or("no node".to_string(), |s| {
            if Some(s) == e.holder.as_deref() {
                "stays".to_string()
            } else {
                format!("goes to {s}")
            }
        });
        let _ = writeln!(out, "  {:width$}  {held}; {share}", e.database);
    }
    out
}

/// Each replica's pending copies and deletions (`patina plan`).
fn render_replica_plans(
    replicas: &[(
        String,
        String,
        Result<crate::replication::ReplicaPlan, String>,
    )],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, location, planned) in replicas {
        let _ = write!(out, "\nreplica {name} — {location}: ");
        match planned {
            Err(e) => {
                let _ = writeln!(out, "cannot be listed: {e}");
            }
            Ok(p) if p.copies.is_empty() && p.deletions.is_empty() => {
                let _ = writeln!(out, "up to date, nothing to delete");
            }
            Ok(p) => {
                let _ = writeln!(
                    out,
                    "{} to copy, {} to delete",
                    p.copies.len(),
                    p.deletions.len()
                );
                for c in &p.copies {
                    let _ = writeln!(out, "  copy    {}", c.data_key);
                }
                for d in &p.deletions {
                    let _ = writeln!(out, "  delete  {}  {}", d.data_key, d.reasons.join("; "));
                }
            }
        }
    }
    out
}

/// The plan as a readable table.
fn render_plan(plan: &crate::plan::Plan, location: &str, inv: &inventory::Inventory) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan at {} — {location}: {} committed dumps, {} archives, {} uncommitted, {} foreign",
        plan.at.format("%Y-%m-%d %H:%M:%S UTC"),
        inv.dumps.len(),
        inv.archives.len(),
        inv.debris.len(),
        inv.foreign.len()
    );
    let mut section = |title: &str, rows: Vec<[String; 3]>| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title} ({}):", rows.len());
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
        for r in rows {
            let _ = writeln!(out, "  {:<w0$}  {:<w1$}  {}", r[0], r[1], r[2]);
        }
    };
    section(
        "backups",
        plan.backups
            .iter()
            .map(|b| {
                [
                    b.database.clone(),
                    format!("{} {}", b.priority, b.trigger.as_str()),
                    b.reason.clone(),
                ]
            })
            .collect(),
    );
    section(
        "archives",
        plan.archives
            .iter()
            .map(|a| [a.week.to_string(), String::new(), a.reason.clone()])
            .collect(),
    );
    section(
        "drill",
        plan.drill
            .iter()
            .map(|d| {
                [
                    "restore drill".to_string(),
                    format!("newest + {} sampled", d.sample),
                    d.reason.clone(),
                ]
            })
            .collect(),
    );
    section(
        "deletions",
        plan.deletions
            .iter()
            .map(|d| [d.data_key.clone(), d.tier.to_string(), d.reason.clone()])
            .collect(),
    );
    section(
        "adoptions",
        plan.adoptions
            .iter()
            .map(|a| [a.data_key.clone(), String::new(), a.reason.to_string()])
            .chain((plan.adoptions_pending > plan.adoptions.len()).then(|| {
                [
                    format!(
                        "… and {} more",
                        plan.adoptions_pending - plan.adoptions.len()
                    ),
                    String::new(),
                    "adopted by the next passes, newest first".into(),
                ]
            }))
            .collect(),
    );
    section(
        "drift",
        plan.drift
            .iter()
            .map(|d| [d.data_key.clone(), String::new(), d.reason.clone()])
            .collect(),
    );
    section(
        "debris",
        plan.debris
            .iter()
            .map(|d| [d.key.clone(), String::new(), d.reason.clone()])
            .collect(),
    );
    section(
        "deferred",
        plan.deferred
            .iter()
            .map(|d| {
                [
                    d.what.clone(),
                    d.until
                        .map(|u| format!("until {}", u.format("%H:%M:%S UTC")))
                        .unwrap_or_default(),
                    d.reason.clone(),
                ]
            })
            .collect(),
    );
    if plan.is_empty() {
        out.push_str("\nnothing to do\n");
    }
    if let Some(next) = plan.next_drill {
        let _ = writeln!(
            out,
            "\nnext restore drill: {} — each database's newest restore point and a random \
             sample of older ones, from {} daily objects and the members of {} weekly archives",
            next.format("%Y-%m-%d %H:%M UTC"),
            inv.dumps.len(),
            inv.archives.len()
        );
    }
    out
}

/// `30s`, `15m`, `2h` for command-line durations.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a duration like 30s, 15m or 2h, got {s:?}"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// RFC 3339, or a local `YYYY-MM-DD HH:MM[:SS]` in `tz`.
fn parse_time(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    use chrono::TimeZone as _;
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| format!("{s} does not exist in {tz} (a DST gap)"));
        }
    }
    Err("not a time".into())
}

fn rfc3339(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_flag_goes_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["patina", "--config", "x.toml", "check"]).unwrap();
        let b = Cli::try_parse_from(["patina", "check", "--config", "x.toml"]).unwrap();
        assert_eq!(a.config, PathBuf::from("x.toml"));
        assert_eq!(b.config, PathBuf::from("x.toml"));
    }

    #[test]
    fn restore_at_parses_dates_and_latest() {
        let c = Cli::try_parse_from([
            "patina",
            "restore",
            "demo-app",
            "--at",
            "2026-11-22",
            "--to",
            "x.db",
        ])
        .unwrap();
        match c.command {
            Command::Restore { at, .. } => assert_eq!(
                at,
                At::Date(chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap())
            ),
            other => panic!("{other:?}"),
        }
        let err = Cli::try_parse_from([
            "patina",
            "restore",
            "demo-app",
            "--at",
            "yesterday",
            "--to",
            "x.db",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("a UTC date (2026-11-20"), "{err}");
        let c = Cli::try_parse_from([
            "patina",
            "restore",
            "demo-app",
            "--at",
            "2026-11-22 14:00",
            "--table",
            "users",
            "--table",
            "sessions",
            "--to",
            "x.db",
        ])
        .unwrap();
        match c.command {
            Command::Restore { at, tables, .. } => {
                assert_eq!(at.to_string(), "2026-11-22T14:00:00Z");
                assert_eq!(tables, ["users", "sessions"]);
            }
            other => panic!("{other:?}"),
        }
        let err = Cli::try_parse_from([
            "patina", "restore", "demo-app", "--table", "users", "--to-d1", "x",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
    }
}
