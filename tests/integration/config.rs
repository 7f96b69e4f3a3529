//! The policy file as users meet it: the shipped `patina.toml`, the DESIGN §1 example, every
//! `examples/*.toml`, and the checked-in JSON Schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use patina::config;
use patina::policy::{
    AlertEvent, Compression, D1Mode, PriorityLevel, Scope, SinkKind, SourceSpec, Span,
    StorageLocation,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example of DESIGN.md §1, verbatim.
const DESIGN_EXAMPLE: &str = r#"
[daemon]
listen      = "127.0.0.1:9477"   # health, metrics, status page, API
state_dir   = ".patina"          # catalog (patina.db) and scratch space
tick        = "60s"              # reconcile interval
concurrency = 3                  # backups running at once
timezone    = "UTC"              # schedules are read in this zone (IANA name)
api_token   = "${PATINA_API_TOKEN}"   # bearer token for POST /trigger and GET /download

[storage]
url         = "file://.patina/backups"  # embedded default; "s3://bucket" for R2 / S3 / MinIO
# endpoint  = "https://${CF_ACCOUNT_ID}.r2.cloudflarestorage.com"
# region    = "auto"
# access_key_id     = "${R2_ACCESS_KEY_ID}"
# secret_access_key = "${R2_SECRET_ACCESS_KEY}"
prefix      = ""
compression = "zstd"             # zstd | gzip | none

[priorities.critical]
schedule = "0 3 * * *"           # standard 5-field cron; 03:00 every day
[priorities.high]
schedule = "0 3 * * *"
[priorities.normal]
schedule = "0 4 * * SUN"

[retention]
daily   = "7d"                   # every dump is kept at least 7 days
weekly  = "12w"                  # weekly archives are kept 12 weeks
archive = "0 4 * * SUN"          # when last week's dumps are rolled into weekly/YYYY-Www.tar
# monthly = "12mo"               # optional: first weekly archive of each month

[cloudflare]                     # needed only by kind = "d1"
account_id = "${CF_ACCOUNT_ID}"
api_token  = "${CF_API_TOKEN}"
# api_url  = "https://api.cloudflare.com/client/v4"   # the default; override for proxies and tests

[[database]]
name     = "demo-app"            # [a-z0-9][a-z0-9_-]*, unique; becomes part of object keys
kind     = "sqlite"
path     = "examples/data/demo-app.db"
priority = "critical"
# schedule = "*/30 * * * *"      # per-database override of the priority's schedule
# exclude_tables = ["sessions"]  # never leave the machine
# enabled = false

[[database]]
name     = "groveauth"
kind     = "d1"
id       = "45eae4c7-8ae7-4078-9218-8e1677a4360f"
priority = "critical"

[alerts]
max_duration   = "45m"           # a job longer than this alerts
size_deviation = 0.5             # dump size off the recent median by more than 50% alerts
stale_after    = 2               # no success within 2 schedule intervals alerts
daily_summary  = "0 8 * * *"

[[alert]]
name = "ops-discord"
kind = "discord"                 # webhook | discord | slack | healthchecks
url  = "${DISCORD_WEBHOOK_URL}"
on   = ["failure", "stale", "size_anomaly", "duration", "config_invalid", "summary"]
"#;

fn design_env(name: &str) -> Option<String> {
    match name {
        "PATINA_API_TOKEN" => Some("patina-token".into()),
        "CF_ACCOUNT_ID" => Some("0123456789abcdef".into()),
        "CF_API_TOKEN" => Some("cf-token".into()),
        "DISCORD_WEBHOOK_URL" => Some("https://discord.com/api/webhooks/1/abc".into()),
        _ => None,
    }
}

#[test]
fn the_design_example_loads() {
    let base = Path::new("/etc/patina");
    let p = config::from_str(DESIGN_EXAMPLE, "patina.toml", base, &design_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.daemon.listen.to_string(), "127.0.0.1:9477");
    assert_eq!(p.daemon.state_dir, base.join(".patina"));
    assert_eq!(p.daemon.tick, Duration::from_secs(60));
    assert_eq!(p.daemon.concurrency, 3);
    // `api_token` is the token "default" with every scope.
    let default = p.daemon.token("default").unwrap();
    assert_eq!(default.secret.expose(), "patina-token");
    assert_eq!(default.scopes, Scope::ALL);
    assert!(p.daemon.public_read);
    assert_eq!(
        p.storage.location,
        StorageLocation::File(base.join(".patina/backups"))
    );
    assert_eq!(p.storage.compression, Compression::Zstd);
    assert_eq!(
        p.priorities.keys().copied().collect::<Vec<_>>(),
        [
            PriorityLevel::Critical,
            PriorityLevel::High,
            PriorityLevel::Normal
        ]
    );
    assert_eq!(
        p.priorities[&PriorityLevel::Normal].schedule.expression(),
        "0 4 * * SUN"
    );
    assert_eq!(p.retention.daily, Span::Seconds(7 * 86_400));
    assert_eq!(p.retention.weekly, Some(Span::Seconds(12 * 7 * 86_400)));
    assert_eq!(p.retention.monthly, None);
    let cf = p.cloudflare.as_ref().unwrap();
    assert_eq!(cf.account_id, "0123456789abcdef");
    assert_eq!(cf.api_token.expose(), "cf-token");
    assert_eq!(cf.api_url, "https://api.cloudflare.com/client/v4");
    assert_eq!(p.databases.len(), 2);
    assert_eq!(
        p.database("demo-app").unwrap().source,
        SourceSpec::Sqlite {
            path: base.join("examples/data/demo-app.db")
        }
    );
    let auth = p.database("groveauth").unwrap();
    assert_eq!(
        auth.source,
        SourceSpec::D1 {
            id: "45eae4c7-8ae7-4078-9218-8e1677a4360f".into(),
            mode: D1Mode::Export
        }
    );
    assert_eq!(auth.priority, PriorityLevel::Critical);
    assert_eq!(auth.schedule.expression(), "0 3 * * *");
    assert!(!auth.schedule_overridden && auth.enabled);
    assert_eq!(p.alerts.max_duration, Duration::from_secs(45 * 60));
    assert_eq!(p.alerts.size_deviation, 0.5);
    assert_eq!(
        p.alerts.stale_after,
        patina::policy::StaleAfter::Intervals(2)
    );
    assert_eq!(
        p.alerts.daily_summary.as_ref().unwrap().expression(),
        "0 8 * * *"
    );
    let sink = &p.sinks[0];
    assert_eq!(sink.name, "ops-discord");
    assert_eq!(sink.kind, SinkKind::Discord);
    assert_eq!(sink.url.expose(), "https://discord.com/api/webhooks/1/abc");
    assert_eq!(
        sink.on,
        [
            AlertEvent::Failure,
            AlertEvent::Stale,
            AlertEvent::SizeAnomaly,
            AlertEvent::Duration,
            AlertEvent::ConfigInvalid,
            AlertEvent::Summary
        ]
    );
}

#[test]
fn the_design_example_without_its_environment_names_every_variable() {
    let err =
        config::from_str(DESIGN_EXAMPLE, "patina.toml", Path::new("."), &|_| None).unwrap_err();
    let at: Vec<(usize, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.key.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (8, "daemon.api_token"),
            (33, "cloudflare.account_id"),
            (34, "cloudflare.api_token"),
            (61, "alert[0].url"),
        ],
        "{err}"
    );
    assert!(err.problems[0].message.contains("\"PATINA_API_TOKEN\""));
}

#[test]
fn the_shipped_patina_toml_runs_without_environment() {
    let path = root().join("patina.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#:schema ./schemas/patina.schema.json\n"));
    let p = config::from_str(&text, "patina.toml", &root(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.daemon.listen.to_string(), "127.0.0.1:9477");
    assert!(p.daemon.tokens.is_empty());
    assert_eq!(
        p.storage.location,
        StorageLocation::File(root().join(".patina/backups"))
    );
    assert!(p.cloudflare.is_none() && p.sinks.is_empty());
    assert_eq!(p.databases.len(), 1);
    let demo = &p.databases[0];
    assert_eq!(demo.name, "demo-app");
    assert_eq!(demo.priority, PriorityLevel::Critical);
    assert_eq!(
        demo.source,
        SourceSpec::Sqlite {
            path: root().join("examples/data/demo-app.db")
        }
    );
    // And through `load`, which resolves against the file's own directory.
    let loaded = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.databases[0].source, demo.source);
}

#[test]
fn every_example_loads() {
    let dir = root().join("examples");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("list examples/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "too few example policies found: {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Dummy values that pass validation wherever a variable is used.
        let env = |name: &str| {
            Some(if name.contains("URL") {
                "https://example.com/hook".to_string()
            } else {
                format!("dummy-{}", name.to_ascii_lowercase())
            })
        };
        if let Err(e) = config::from_str(&text, &file.display().to_string(), &dir, &env) {
            panic!("{} does not load:\n{e}", file.display());
        }
    }
}

#[test]
fn load_reports_a_missing_file() {
    let err = config::load(Path::new("/nonexistent/patina.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0]
            .message
            .starts_with("read /nonexistent/patina.toml: "),
        "{err}"
    );
}

#[test]
fn the_checked_in_schema_is_current() {
    let path = root().join("schemas/patina.schema.json");
    let generated = serde_json::to_string_pretty(&config::json_schema()).unwrap() + "\n";
    if std::env::var_os("PATINA_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schemas/patina.schema.json is out of date: regenerate with \
         `cargo run -- schema > schemas/patina.schema.json`"
    );
}

#[test]
fn the_policy_reference_is_generated_from_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy.md");
    let generated = patina::config::reference_markdown();
    if std::env::var_os("PATINA_UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/policy.md is out of date: regenerate with `PATINA_UPDATE_DOCS=1 cargo test --test integration policy_reference`"
    );
}

#[test]
fn renotify_defaults_to_a_day_and_can_be_turned_off() {
    let load = |extra: &str| {
        patina::config::from_str(
            &format!(
                "[priorities.critical]\nschedule = \"0 3 * * *\"\n{extra}\n\
                 [[database]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n"
            ),
            "patina.toml",
            std::path::Path::new("/srv"),
            &|_| None,
        )
    };
    let p = load("").unwrap();
    assert_eq!(
        p.alerts.renotify,
        Some(std::time::Duration::from_secs(86_400))
    );
    let p = load("[alerts]\nrenotify = \"6h\"\n").unwrap();
    assert_eq!(
        p.alerts.renotify,
        Some(std::time::Duration::from_secs(6 * 3600))
    );
    let p = load("[alerts]\nrenotify = \"off\"\n").unwrap();
    assert_eq!(p.alerts.renotify, None);
    let e = load("[alerts]\nrenotify = \"sometimes\"\n").unwrap_err();
    assert!(e.to_string().contains("renotify"), "{e}");
}
