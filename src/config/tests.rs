use super::validate::parse_span;
use super::*;
use chrono::Utc;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Policy, ConfigError> {
    from_str(text, "patina.toml", Path::new("/srv/patina"), &no_env)
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    parse(text)
        .expect_err("the policy should be rejected")
        .problems
}

/// The one problem of `text`, displayed.
fn only(text: &str) -> String {
    let problems = problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    problems[0].to_string()
}

const BASE: &str = r#"
[priorities.critical]
schedule = "0 3 * * *"

[[database]]
name = "app"
kind = "sqlite"
path = "app.db"
priority = "critical"
"#;

#[test]
fn defaults_fill_a_minimal_file() {
    let p = parse(BASE).unwrap();
    assert_eq!(p.daemon.listen.to_string(), "127.0.0.1:9477");
    assert_eq!(p.daemon.state_dir, Path::new("/srv/patina/.patina"));
    assert_eq!(p.daemon.tick, Duration::from_secs(60));
    assert_eq!(p.daemon.concurrency, 3);
    assert_eq!(p.daemon.timezone, chrono_tz::Tz::UTC);
    assert!(p.daemon.tokens.is_empty());
    assert!(p.daemon.public_read);
    assert!(p.daemon.trusted_proxies.is_empty());
    assert_eq!(p.daemon.audit_retention, Duration::from_secs(90 * 86_400));
    assert!(p.daemon.tls.is_none());
    assert_eq!(
        p.storage.location,
        StorageLocation::File("/srv/patina/.patina/backups".into())
    );
    assert_eq!(p.storage.prefix, "");
    assert_eq!(p.storage.compression, Compression::Zstd);
    assert_eq!(p.retention.daily, Span::Seconds(7 * 86_400));
    assert_eq!(p.retention.weekly, Some(Span::Seconds(12 * 604_800)));
    assert_eq!(p.retention.monthly, None);
    assert_eq!(p.retention.archive.expression(), "0 4 * * SUN");
    assert!(p.cloudflare.is_none());
    assert_eq!(p.alerts.max_duration, Duration::from_secs(45 * 60));
    assert_eq!(p.alerts.size_deviation, 0.5);
    assert_eq!(p.alerts.stale_after, StaleAfter::Intervals(2));
    assert!(p.alerts.daily_summary.is_none());
    let db = &p.databases[0];
    assert_eq!(
        db.source,
        SourceSpec::Sqlite {
            path: "/srv/patina/app.db".into()
        }
    );
    assert!(db.enabled && !db.schedule_overridden);
    assert_eq!(db.schedule.expression(), "0 3 * * *");
}

#[test]
fn stale_after_takes_intervals_or_a_duration() {
    let with = |v: &str| parse(&format!("{BASE}\n[alerts]\nstale_after = {v}\n")).unwrap();
    assert_eq!(with("3").alerts.stale_after, StaleAfter::Intervals(3));
    assert_eq!(
        with("\"8d\"").alerts.stale_after,
        StaleAfter::Duration(Duration::from_secs(8 * 86_400))
    );
    assert_eq!(
        with("\"36h\"").alerts.stale_after,
        StaleAfter::Duration(Duration::from_secs(36 * 3_600))
    );
    assert!(
        describe(&with("\"8d\""), Utc::now()).contains("stale after 8d,"),
        "patina check shows the window as written"
    );
}

#[test]
fn weekly_off_prefix_and_months() {
    let text = format!(
        "{BASE}\n[retention]\nweekly = \"off\"\nmonthly = \"12mo\"\n[storage]\nurl = \"s3://grove-patina\"\nprefix = \"/patina\"\n"
    );
    let p = parse(&text).unwrap();
    assert_eq!(p.retention.weekly, None);
    assert_eq!(p.retention.monthly, Some(Span::Months(12)));
    assert_eq!(p.storage.prefix, "patina/");
    assert_eq!(
        p.storage.location,
        StorageLocation::S3 {
            bucket: "grove-patina".into()
        }
    );
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let text = "[priorities.critical]\nshedule = \"0 3 * * *\"\n";
    let problems = problems(text);
    // The table then lacks its schedule; that is reported too, at the header.
    assert_eq!(
        problems[0].to_string(),
        "missing key \"schedule\" in [priorities.critical] at patina.toml:1:1"
    );
    assert_eq!(
        problems[1].to_string(),
        "unknown key \"shedule\" in [priorities.critical] at patina.toml:2:1 — did you mean \
             \"schedule\"?"
    );
    assert_eq!(problems[1].key, "priorities.critical.shedule");
    assert_eq!(problems.len(), 2);
}

#[test]
fn unknown_sections_and_far_off_keys() {
    let text = "[deamon]\n[storage]\nbananas = 1\n";
    let problems = problems(text);
    assert_eq!(
        problems[0].to_string(),
        "unknown top-level key \"deamon\" at patina.toml:1:2 — did you mean \"daemon\"?"
    );
    assert!(
            problems[1]
                .to_string()
                .starts_with("unknown key \"bananas\" in [storage] at patina.toml:3:1 — the keys allowed here are \"access_key_id\", \"compression\""),
            "{}",
            problems[1]
        );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = r#"[daemon]
tick = "60 seconds"
timezone = "Europe/Berlim"
concurrency = 0

[storage]
url = "gs://bucket"
compression = "zst"

[priorities.critical]
schedule = "0 25 * * *"

[[database]]
name = "App"
kind = "sqlite"
path = "app.db"
priority = "critical"

[[database]]
name = "jobs"
kind = "d1"
id = "not-a-uuid"
priority = "low"
"#;
    let shown: Vec<String> = problems(text).iter().map(|p| p.to_string()).collect();
    let lines: Vec<&str> = shown
        .iter()
        .map(|s| {
            s.split(" at patina.toml:")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        lines,
        [
            "2:8", "3:12", "4:15", "7:7", "8:15", "11:12", "14:8", "19:1", "22:6", "23:12"
        ],
        "{shown:#?}"
    );
    assert!(shown[0].contains("invalid duration \"60 seconds\" for \"tick\" in [daemon]"));
    assert!(
        shown[1].contains("did you mean \"Europe/Berlin\"?"),
        "{}",
        shown[1]
    );
    assert!(shown[2].contains("\"concurrency\" in [daemon] must be at least 1"));
    assert!(shown[3].contains("unsupported storage url scheme \"gs\""));
    assert!(shown[4].contains("must be one of \"zstd\", \"gzip\", \"none\", not \"zst\""));
    assert!(shown[4].ends_with("— did you mean \"zstd\"?"));
    assert!(shown[5].contains("the hour field \"25\" is not valid"));
    assert!(shown[6].contains("invalid database name \"App\""));
    assert!(shown[7].contains("d1 database \"jobs\" needs Cloudflare credentials"));
    assert!(shown[8].contains("invalid D1 database id \"not-a-uuid\""));
    assert!(shown[9].contains("priority \"low\" of database \"jobs\" is not declared"));
}

#[test]
fn missing_environment_variables_are_named_with_their_line() {
    let text = "[daemon]\nlisten = \"127.0.0.1:9477\"\napi_token = \"pre-${PATINA_API_TOKEN}\"\n";
    assert_eq!(
        only(text),
        "environment variable \"PATINA_API_TOKEN\" is not set (used by \"api_token\" in \
             [daemon]) at patina.toml:3:13 — set PATINA_API_TOKEN in the environment (e.g. the \
             service's EnvironmentFile=)"
    );
    let env = |name: &str| (name == "PATINA_API_TOKEN").then(|| "t0k".to_string());
    let p = from_str(text, "patina.toml", Path::new("."), &env).unwrap();
    let token = p.daemon.token("default").unwrap();
    assert_eq!(token.secret.expose(), "pre-t0k");
    assert_eq!(token.scopes, Scope::ALL);
    // `$${` is a literal `${`; a lone `$` is kept.
    let text = "[daemon]\napi_token = \"a$b$${NOT_A_VAR}\"\n";
    let p = parse(text).unwrap();
    assert_eq!(
        p.daemon.token("default").unwrap().secret.expose(),
        "a$b${NOT_A_VAR}"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let problems = problems("[daemon]\nlisten = \n");
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].line, problems[0].column), (2, 10));
    assert!(problems[0].message.starts_with("invalid TOML: "));
}

#[test]
fn single_problems() {
    let cases: &[(&str, &str)] = &[
        (
            "[retention]\ndaily = \"7 days\"\n",
            "invalid duration \"7 days\" for \"daily\" in [retention] at patina.toml:2:9 — write a number and a unit: 30s, 15m, 2h, 7d, 12w or 12mo",
        ),
        (
            "[alerts]\nmax_duration = \"1mo\"\n",
            "\"max_duration\" in [alerts] cannot be in months: \"1mo\" at patina.toml:2:16 — use s, m, h, d or w, e.g. \"45m\"",
        ),
        (
            "[daemon]\ntimezone = \"Mars/Olympus\"\n",
            "unknown timezone \"Mars/Olympus\" in [daemon] at patina.toml:2:12 — use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
        ),
        (
            "[daemon]\ntimezone = \"europe/berlin\"\n",
            "unknown timezone \"europe/berlin\" in [daemon] at patina.toml:2:12 — did you mean \"Europe/Berlin\"?",
        ),
        (
            "[daemon]\nlisten = \"localhost:9477\"\n",
            "\"listen\" in [daemon] is not an IP:PORT address: \"localhost:9477\" at patina.toml:2:10 — use an IP address and a port, e.g. \"127.0.0.1:9477\"",
        ),
        (
            "[retention]\narchive = \"@reboot\"\n",
            "invalid cron expression \"@reboot\": unknown alias; use one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly in \"archive\" in [retention] at patina.toml:2:11 — use 5 fields, \"minute hour day-of-month month day-of-week\" (e.g. \"0 3 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly",
        ),
        (
            "[storage]\nurl = \"s3://bucket/backups\"\n",
            "\"url\" in [storage] must name only a bucket, not \"bucket/backups\" at patina.toml:2:7 — write url = \"s3://bucket\" and prefix = \"backups\"",
        ),
        (
            "[storage]\nregion = \"auto\"\n",
            "\"region\" in [storage] is used only with s3:// storage at patina.toml:2:1 — remove it, or set url = \"s3://BUCKET\"",
        ),
        (
            "[storage]\nurl = \"s3://bucket\"\naccess_key_id = \"AKIA\"\n",
            "\"access_key_id\" in [storage] is set but \"secret_access_key\" is not at patina.toml:3:1 — set both keys, or neither to use the ambient AWS credentials",
        ),
        (
            "[daemon]\nconcurrency = \"3\"\n",
            "\"concurrency\" in [daemon] must be an integer, not a string at patina.toml:2:15",
        ),
        (
            "[alerts]\nstale_after = \"8 days\"\n",
            "invalid \"stale_after\" in [alerts]: \"8 days\" at patina.toml:2:15 — write a number of schedule intervals (stale_after = 2) or a duration longer than zero in s, m, h, d or w (stale_after = \"8d\")",
        ),
        (
            "[alerts]\nstale_after = 0\n",
            "\"stale_after\" in [alerts] must be at least 1 at patina.toml:2:15",
        ),
        (
            "[alerts]\nstale_after = 1.5\n",
            "\"stale_after\" in [alerts] must be an integer or a string, not a float at patina.toml:2:15",
        ),
        (
            "[alerts]\nsize_deviation = 0\n",
            "\"size_deviation\" in [alerts] must be a number greater than 0 at patina.toml:2:18 — 0.5 alerts when a dump is 50% off the recent median",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"discord\"\nurl = \"https://x.example/hook\"\non = [\"failure\", \"stail\"]\n",
            "an item of \"on\" in [[alert]] #1 must be one of \"failure\", \"success\", \"duration\", \"size_anomaly\", \"stale\", \"archive_failed\", \"drift\", \"config_invalid\", \"summary\", \"schema_changed\", \"slow\", \"verify_failed\", \"replica_behind\", not \"stail\" at patina.toml:5:18 — did you mean \"stale\"?",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"https://x.example/hook\"\non = [\"failure\"]\nheaders = { X-Token = \"t\" }\n",
            "\"headers\" are for webhook sinks; \"ops\" is slack at patina.toml:6:1 — remove them, or set kind = \"webhook\"",
        ),
        (
            "[[alert]]\nkind = \"slack\"\nurl = \"https://x.example/hook\"\non = [\"failure\"]\n",
            "missing key \"name\" in [[alert]] #1 at patina.toml:1:1",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&only(text), want, "{text}");
    }
}

#[test]
fn database_problems() {
    let db =
        |body: &str| format!("[priorities.critical]\nschedule = \"@daily\"\n[[database]]\n{body}");
    let dup = db(
        "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n[[database]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"b.db\"\npriority = \"critical\"\n",
    );
    assert_eq!(
        only(&dup),
        "duplicate database name \"a\" at patina.toml:9:8 — it is already used on line 4; names must be unique"
    );
    assert_eq!(
        only(&db(
            "name = \"a\"\nkind = \"sqlite\"\npriority = \"critical\"\n"
        )),
        "sqlite database \"a\" needs a path at patina.toml:3:1 — add path = \"data/app.db\" (relative to this file)"
    );
    assert_eq!(
        only(&db(
            "name = \"a\"\nkind = \"postgres\"\npath = \"a.db\"\npriority = \"critical\"\n"
        )),
        "\"kind\" in [[database]] #1 must be one of \"sqlite\", \"d1\", not \"postgres\" at patina.toml:5:8"
    );
    // A value that is not a plain word may be a secret a broken line ran into: not echoed.
    assert_eq!(
        only(&db(
            "name = \"a\"\nkind = \"sqliteps://h.example/s3cr3t\"\npath = \"a.db\"\npriority = \"critical\"\n"
        )),
        "\"kind\" in [[database]] #1 must be one of \"sqlite\", \"d1\", not a value of 27 characters (not shown) at patina.toml:5:8"
    );
    assert_eq!(
        only(&db(
            "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"normal\"\n"
        )),
        "priority \"normal\" of database \"a\" is not declared at patina.toml:7:12 — declare [priorities.normal] or use one of \"critical\""
    );
    assert_eq!(
        only(&db(
            "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\nschedule = \"0 3 * * 8\"\n"
        )),
        "invalid cron expression \"0 3 * * 8\": the day-of-week field \"8\" is not valid (expected 0-7 or SUN-SAT, 0 and 7 are Sunday, with * , - /) in \"schedule\" in [[database]] #1 at patina.toml:8:12 — use 5 fields, \"minute hour day-of-month month day-of-week\" (e.g. \"0 3 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly"
    );
    let long = "x".repeat(201);
    assert_eq!(
        only(&db(&format!(
            "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\ndescription = \"{long}\"\n"
        ))),
        "the description of database \"a\" is longer than one line of 200 characters at patina.toml:8:15 — say in a few words what the database holds"
    );
    let described = parse(&db(
        "name = \"a\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\ndescription = \" Auth: users and sessions \"\n",
    ))
    .unwrap();
    assert_eq!(
        described.databases[0].description.as_deref(),
        Some("Auth: users and sessions")
    );
    // A d1 database with credentials and a proper id is fine; its mode defaults to export.
    let ok = db(
        "name = \"a\"\nkind = \"d1\"\nid = \"45EAE4C7-8ae7-4078-9218-8e1677a4360f\"\npriority = \"critical\"\nschedule = \"*/30 * * * *\"\n[cloudflare]\naccount_id = \"acc\"\napi_token = \"tok\"\n",
    );
    let p = parse(&ok).unwrap();
    assert_eq!(
        p.databases[0].source,
        SourceSpec::D1 {
            id: "45eae4c7-8ae7-4078-9218-8e1677a4360f".into(),
            mode: D1Mode::Export
        }
    );
    assert!(p.databases[0].schedule_overridden);
    assert_eq!(
        p.cloudflare.unwrap().api_url,
        "https://api.cloudflare.com/client/v4"
    );
}

#[test]
fn a_missing_cloudflare_variable_is_the_only_problem() {
    // The [cloudflare] section is there but unusable: no extra "credentials missing".
    let text = "[priorities.critical]\nschedule = \"@daily\"\n[cloudflare]\naccount_id = \"acc\"\napi_token = \"${CF_API_TOKEN}\"\n[[database]]\nname = \"a\"\nkind = \"d1\"\nid = \"45eae4c7-8ae7-4078-9218-8e1677a4360f\"\npriority = \"critical\"\n";
    assert!(only(text).starts_with(
            "environment variable \"CF_API_TOKEN\" is not set (used by \"api_token\" in [cloudflare]) at patina.toml:5:13"
        ));
}

const SECRET: &str = "sup3r-s3cret-v4lue";

#[test]
fn secrets_never_appear_in_describe_or_errors() {
    let env = |_: &str| Some(SECRET.to_string());
    let text = r#"
[daemon]
api_token = "${T}"
[[token]]
name = "ci"
secret = "ci-${T}"
scopes = ["trigger"]
[storage]
url = "s3://bucket"
access_key_id = "${T}"
secret_access_key = "${T}"
[cloudflare]
account_id = "acc"
api_token = "${T}"
[[replica]]
name = "offsite"
url = "s3://offsite-bucket"
access_key_id = "${T}"
secret_access_key = "${T}"
[[alert]]
name = "hook"
kind = "webhook"
url = "https://hooks.example/${T}"
on = ["failure"]
headers = { Authorization = "Bearer ${T}" }
"#;
    let p = from_str(text, "patina.toml", Path::new("/srv"), &env).unwrap();
    let shown = format!("{}\n{p:?}", describe(&p, Utc::now()));
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("default (secret ***): trigger, download, read"));
    // Broken secrets: the messages must not echo the values either.
    let bad = r#"
[storage]
url = "s3://bucket"
access_key_id = "${T}"
[[alert]]
name = "hook"
kind = "slack"
url = "ftp://${T}"
on = ["failure"]
headers = { Authorization = "Bearer ${T}" }
"#;
    let err = from_str(bad, "patina.toml", Path::new("/srv"), &env).unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert_eq!(err.problems.len(), 3, "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
}

#[test]
fn describe_snapshot() {
    let text = r#"
[daemon]
timezone = "Europe/Berlin"
api_token = "${T}"
[storage]
url = "s3://grove-patina"
endpoint = "https://acc.r2.cloudflarestorage.com"
region = "auto"
prefix = "prod"
[priorities.critical]
schedule = "0 3 * * *"
[priorities.normal]
schedule = "0 4 * * SUN"
[retention]
weekly = "off"
monthly = "12mo"
[cloudflare]
account_id = "acc"
api_token = "${T}"
[encryption]
recipients = [
  "age1sxhmwc8yhdhf4xumng0wkxqs4s24zvwagr3xgkn796f98tm0mvyqcx64lj",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust",
]
identity_file = "keys/identity.txt"
[[database]]
name = "auth"
kind = "d1"
id = "45eae4c7-8ae7-4078-9218-8e1677a4360f"
priority = "critical"
schedule = "*/30 * * * *"
[[database]]
name = "blog"
kind = "sqlite"
path = "data/blog.db"
priority = "normal"
exclude_tables = ["sessions", "cache"]
[[database]]
name = "old"
kind = "sqlite"
path = "/var/lib/old.db"
priority = "critical"
enabled = false
[alerts]
daily_summary = "0 8 * * *"
[[alert]]
name = "ops"
kind = "discord"
url = "https://discord.example/${T}"
on = ["failure", "stale", "failure"]
"#;
    let env = |_: &str| Some(SECRET.to_string());
    let p = from_str(
        text,
        "/srv/patina/patina.toml",
        Path::new("/srv/patina"),
        &env,
    )
    .unwrap();
    let now = "2026-11-22T12:10:00Z".parse().unwrap();
    let expected = "\
config file:  /srv/patina/patina.toml
storage:      s3://grove-patina
  prefix:     prod/
  compression: zstd
  endpoint:   https://acc.r2.cloudflarestorage.com
  region:     auto
state dir:    /srv/patina/.patina
listen:       127.0.0.1:9477
  reads:      open (public_read = true)
  audit kept: 90d
api tokens:   1
  default (secret ***): trigger, download, read
timezone:     Europe/Berlin
tick:         1m
full listing: every 1h
concurrency:  3
history:      400d (longest retention tier + 4w)
retention:    daily 1w, weekly off, monthly 12mo
  archive:    0 4 * * SUN  next: 2026-11-29 04:00 CET, 2026-12-06 04:00 CET, 2026-12-13 04:00 CET
drills:       off (set [verify] schedule to drill restores)
cloudflare:   account acc, token ***, api https://api.cloudflare.com/client/v4
encryption:   age, 2 recipients
  recipient:  age1sxhmwc8yhdhf4xumng0wkxqs4s24zvwagr3xgkn796f98tm0mvyqcx64lj
  recipient:  SHA256:PYX4o9UfGwCwG76hFcLAEkmMS0PtIBtV9MNmVgW16Oc
  identity:   /srv/patina/keys/identity.txt (read only to restore, verify and download)

databases (3):
  auth
    kind:       d1
    source:     45eae4c7-8ae7-4078-9218-8e1677a4360f (mode export)
    priority:   critical
    schedule:   */30 * * * * (override)
    enabled:    yes
    next:       2026-11-22 13:30 CET, 2026-11-22 14:00 CET, 2026-11-22 14:30 CET
  blog
    kind:       sqlite
    source:     /srv/patina/data/blog.db
    priority:   normal
    schedule:   0 4 * * SUN
    enabled:    yes
    excluded:   sessions, cache
    next:       2026-11-29 04:00 CET, 2026-12-06 04:00 CET, 2026-12-13 04:00 CET
  old
    kind:       sqlite
    source:     /var/lib/old.db
    priority:   critical
    schedule:   0 3 * * *
    enabled:    no

alerts:       max duration 45m, size deviation 0.5, stale after 2 intervals, renotify 1d
  daily summary: 0 8 * * *  next: 2026-11-23 08:00 CET, 2026-11-24 08:00 CET, 2026-11-25 08:00 CET
alert sinks (1):
  ops (discord, url ***): failure, stale
";
    assert_eq!(describe(&p, now), expected);
}

#[test]
fn edit_distance_and_suggestions() {
    assert_eq!(edit_distance("shedule", "schedule"), 1);
    assert_eq!(edit_distance("daemno", "daemon"), 1);
    assert_eq!(
        did_you_mean("zst", &["zstd", "gzip", "none"]).unwrap(),
        "did you mean \"zstd\"?"
    );
    assert_eq!(did_you_mean("bananas", &["url", "prefix"]), None);
}

#[test]
fn spans_parse() {
    assert_eq!(parse_span("30s"), Some(Span::Seconds(30)));
    assert_eq!(parse_span("15m"), Some(Span::Seconds(900)));
    assert_eq!(parse_span("2h"), Some(Span::Seconds(7200)));
    assert_eq!(parse_span("12mo"), Some(Span::Months(12)));
    for bad in ["", "m", "7", "7 d", "7D", "-7d", "1.5h", "7dd"] {
        assert_eq!(parse_span(bad), None, "{bad}");
    }
}

#[test]
fn tokens_with_scopes_and_the_api_token_shorthand() {
    let text = r#"
[daemon]
api_token = "shorthand-secret"
public_read = false
trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "fd00::1/64"]
audit_retention = "30d"
tls_cert = "tls/fullchain.pem"
tls_key = "/etc/patina/key.pem"
[[token]]
name = "ops"
secret = "ops-secret"
scopes = ["read", "trigger", "read"]
[[token]]
name = "prometheus"
secret = "prom-secret"
scopes = ["read"]
"#;
    let p = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let d = &p.daemon;
    let names: Vec<(&str, Vec<Scope>)> = d
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.scopes.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("default", Scope::ALL.to_vec()),
            ("ops", vec![Scope::Trigger, Scope::Read]),
            ("prometheus", vec![Scope::Read]),
        ]
    );
    assert_eq!(d.token("ops").unwrap().secret.expose(), "ops-secret");
    assert!(!d.public_read);
    let proxies: Vec<String> = d.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(proxies, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/64"]);
    assert_eq!(d.audit_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(
        d.tls,
        Some(TlsFiles {
            cert: "/srv/patina/tls/fullchain.pem".into(),
            key: "/etc/patina/key.pem".into(),
        })
    );
    let shown = describe(&p, Utc::now());
    assert!(!shown.contains("-secret"), "{shown}");
    assert!(
        shown.contains("  ops (secret ***): trigger, read\n"),
        "{shown}"
    );
    assert!(shown.contains("need a token with scope read"), "{shown}");
}

#[test]
fn bad_tokens_are_reported_without_their_secrets() {
    let text = r#"
[daemon]
api_token = "same-secret"
public_read = false
trusted_proxies = ["10.0.0.0/33", "proxy.local"]
tls_cert = "cert.pem"
[[token]]
name = "default"
secret = "another-secret"
scopes = ["read"]
[[token]]
name = "ci"
secret = "same-secret"
scopes = ["trigger"]
[[token]]
name = "ci"
secret = "ci2-secret"
scopes = ["download"]
[[token]]
name = "Ops"
secret = ""
scopes = []
[[token]]
name = "spacey"
secret = "has a space"
scopes = ["read"]
[[token]]
name = "admin"
secret = "admin-secret"
scopes = ["everything"]
"#;
    let err = parse(text).unwrap_err();
    let shown: Vec<String> = err
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    let all = shown.join("\n");
    for secret in ["same-secret", "another-secret", "has a space", "ci2-secret"] {
        assert!(!all.contains(secret), "{secret} echoed:\n{all}");
    }
    let expect = [
        "daemon.trusted_proxies[0]: \"10.0.0.0/33\" in trusted_proxies of [daemon] is not an IP address or CIDR range",
        "daemon.trusted_proxies[1]: \"proxy.local\" in trusted_proxies",
        "daemon.tls_cert: \"tls_cert\" in [daemon] is set but \"tls_key\" is not",
        "token[0].name: token name \"default\" is taken by api_token in [daemon]",
        "token[1].secret: token \"ci\" has the same secret as api_token in [daemon]",
        "token[2].name: duplicate token name \"ci\"",
        "token[3].name: invalid token name \"Ops\"",
        "token[3].secret: \"secret\" in [[token]] #4 is empty",
        "token[3].scopes: token \"Ops\" has no scopes",
        "token[4].secret: \"secret\" in [[token]] #5 holds a space",
        "token[5].scopes[0]: ",
    ];
    for want in expect {
        assert!(
            shown.iter().any(|s| s.starts_with(want)),
            "missing {want:?} in:\n{all}"
        );
    }
    assert_eq!(shown.len(), expect.len(), "{all}");
}

#[test]
fn closing_reads_needs_a_token_that_can_read() {
    let text = "[daemon]\npublic_read = false\n[[token]]\nname = \"ci\"\nsecret = \"x\"\nscopes = [\"trigger\"]\n";
    assert!(
        only(text).starts_with(
            "public_read = false in [daemon], but no token has scope \"read\": nobody could read /status, /ui or /metrics at patina.toml:2:15"
        ),
        "{}",
        only(text)
    );
}

const AGE_A: &str = "age1sxhmwc8yhdhf4xumng0wkxqs4s24zvwagr3xgkn796f98tm0mvyqcx64lj";
const SSH_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";

#[test]
fn encryption_reads_recipients_and_resolves_the_identity_file() {
    let text = format!(
        "{BASE}[encryption]\nrecipients = [\"{AGE_A}\", \"{SSH_A}\", \"{AGE_A}\"]\nidentity_file = \"keys/id.txt\"\n"
    );
    let p = parse(&text).unwrap();
    let e = p.encryption.as_ref().unwrap();
    assert_eq!(
        e.recipients.fingerprints(),
        vec![
            AGE_A.to_string(),
            "SHA256:PYX4o9UfGwCwG76hFcLAEkmMS0PtIBtV9MNmVgW16Oc".to_string()
        ]
    );
    assert_eq!(
        e.identity_file.as_deref(),
        Some(Path::new("/srv/patina/keys/id.txt"))
    );
    assert!(p.dump_encoding().layers().encrypted);
    assert!(!parse(BASE).unwrap().dump_encoding().layers().encrypted);
}

#[test]
fn malformed_recipients_are_named_by_position_and_line_never_echoed() {
    let secret = "AGE-SECRET-KEY-10DW0D43ZK60APLH32Z0CFQ883SPCLPX7CT24LTXZA7LM8L4Q5X6SG496ZZ";
    let text = format!(
        "{BASE}[encryption]\nrecipients = [\n  \"{AGE_A}\",\n  \"age1typo\",\n  \"{secret}\",\n]\n"
    );
    let problems = problems(&text);
    let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            "recipient #2 in [encryption] is not a valid age public key (a typo, or cut short?) at patina.toml:13:3 — age recipients look like \"age1…\" (`age-keygen -y identity.txt` prints one); ssh ones like \"ssh-ed25519 AAAA… comment\"".to_string(),
            "recipient #3 in [encryption] is a private key (an identity), not a recipient — never put it in the policy; put its public key (`age-keygen -y identity.txt`) here, and treat this one as exposed at patina.toml:14:3 — age recipients look like \"age1…\" (`age-keygen -y identity.txt` prints one); ssh ones like \"ssh-ed25519 AAAA… comment\"".to_string(),
        ]
    );
    assert!(!shown.join("\n").contains("ZK60APLH"));
    assert!(!shown.join("\n").contains("age1typo"));

    for (section, want) in [
        (
            "[encryption]\nidentity_file = \"id.txt\"\n",
            "[encryption] names no recipients at patina.toml:10:2",
        ),
        (
            "[encryption]\nrecipients = []\n",
            "\"recipients\" in [encryption] is empty at patina.toml:11:14",
        ),
        (
            "[encryption]\nrecipients = [\"x\"]\nrecipients_file = \"r.txt\"\n",
            "[encryption] has both \"recipients\" and \"recipients_file\" at patina.toml:12:1",
        ),
        (
            "[encryption]\nrecipient = [\"x\"]\n",
            "unknown key \"recipient\" in [encryption] at patina.toml:11:1",
        ),
    ] {
        let text = format!("{BASE}{section}");
        let got = only(&text);
        assert!(got.starts_with(want), "{got}");
    }
}

#[test]
fn a_recipients_file_is_read_and_its_bad_lines_are_reported_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recipients.txt");
    std::fs::write(&file, format!("# ops team\n{AGE_A}\n\n{SSH_A}\n")).unwrap();
    let text = format!("{BASE}[encryption]\nrecipients_file = \"recipients.txt\"\n");
    let p = from_str(&text, "patina.toml", dir.path(), &no_env).unwrap();
    let e = p.encryption.unwrap();
    assert_eq!(e.recipients.fingerprints().len(), 2);
    assert_eq!(e.recipients_file.as_deref(), Some(file.as_path()));

    std::fs::write(
        &file,
        format!("# ops team\n{AGE_A}\nssh-ed25519 AAAA\n\nage1nope\n"),
    )
    .unwrap();
    let err = from_str(&text, "patina.toml", dir.path(), &no_env).unwrap_err();
    let shown: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    let f = file.display();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert!(
        shown[0].starts_with(&format!(
            "recipient #2 of recipients_file (named by \"recipients_file\" in [encryption]) is not a valid ssh public key (\"ssh-ed25519 AAAA… comment\") at {f}:3:1"
        )),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].contains("recipient #3 of recipients_file")
            && shown[1].contains(&format!("at {f}:5:1")),
        "{}",
        shown[1]
    );

    std::fs::remove_file(&file).unwrap();
    let got = from_str(&text, "patina.toml", dir.path(), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        got.starts_with(&format!("read recipients_file {f}: No such file"))
            && got.contains("patina.toml:11:19"),
        "{got}"
    );
}

#[test]
fn verify_names_a_bad_sample_and_a_bad_schedule_together() {
    let text = format!("{BASE}[verify]\nschedule = \"0 5 * * FUNDAY\"\nsample = 500\n");
    let shown: Vec<String> = problems(&text).iter().map(|p| p.to_string()).collect();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    // In file order: the schedule (line 11), then the sample (line 12).
    assert!(shown[0].contains("\"FUNDAY\" is not valid"), "{shown:#?}");
    assert!(
        shown[1].starts_with("\"sample\" in [verify] is 500; at most 100"),
        "{shown:#?}"
    );
    let ok = parse(&format!("{BASE}[verify]\nschedule = \"0 5 * * SAT\"\n")).unwrap();
    assert_eq!(ok.drills.as_ref().map(|d| d.sample), Some(2));
    assert!(parse(BASE).unwrap().drills.is_none());
}

#[test]
fn replicas_take_the_storage_keys_and_retention_overrides() {
    let text = format!(
        "{BASE}\n[[replica]]\nname = \"offsite\"\nurl = \"s3://grove-patina-eu\"\nendpoint = \"https://eu.r2.example\"\nregion = \"auto\"\nprefix = \"/patina\"\ndaily = \"30d\"\nweekly = \"off\"\n\n[[replica]]\nname = \"nas-2\"\nurl = \"file://../nas\"\n"
    );
    let p = parse(&text).unwrap();
    assert_eq!(p.replicas.len(), 2);
    let offsite = p.replica("offsite").unwrap();
    assert_eq!(
        offsite.storage.location,
        StorageLocation::S3 {
            bucket: "grove-patina-eu".into()
        }
    );
    assert_eq!(offsite.storage.prefix, "patina/");
    assert_eq!(offsite.storage.region.as_deref(), Some("auto"));
    assert_eq!(offsite.daily, Some(Span::Seconds(30 * 86_400)));
    assert_eq!(offsite.weekly, Some(None));
    assert_eq!(offsite.monthly, None);
    let nas = p.replica("nas-2").unwrap();
    assert_eq!(
        nas.storage.location,
        StorageLocation::File("/srv/patina/../nas".into())
    );
    assert_eq!((nas.daily, nas.weekly, nas.monthly), (None, None, None));
    let shown = describe(&p, Utc::now());
    assert!(
        shown.contains("replica:      offsite s3://grove-patina-eu"),
        "{shown}"
    );
    assert!(
        shown.contains("retention:  daily 30d, weekly off, monthly off (as [retention])"),
        "{shown}"
    );
}

#[test]
fn replica_problems() {
    let cases = [
        (
            "[[replica]]\nname = \"Off Site\"\nurl = \"file://x\"\n",
            "invalid replica name \"Off Site\"",
        ),
        (
            "[[replica]]\nname = \"primary\"\nurl = \"file://x\"\n",
            "the replica name \"primary\" is reserved for [storage]",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"file://x\"\n[[replica]]\nname = \"a\"\nurl = \"file://y\"\n",
            "duplicate replica name \"a\"",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"s3://bucket/backups\"\n",
            "\"url\" in [[replica]] #1 must name only a bucket, not \"bucket/backups\"",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"file://x\"\nregion = \"auto\"\n",
            "\"region\" in [[replica]] #1 is used only with s3:// storage",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"s3://bucket\"\naccess_key_id = \"AKIA\"\n",
            "\"access_key_id\" in [[replica]] #1 is set but \"secret_access_key\" is not",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"file://.patina/backups\"\n",
            "[[replica]] #1 is the same place as [storage]",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"file://x\"\ndaily = \"0d\"\n",
            "\"daily\" in [[replica]] #1 must be longer than zero",
        ),
        (
            "[[replica]]\nname = \"a\"\nurl = \"file://x\"\nshedule = \"x\"\n",
            "unknown key \"shedule\" in [[replica]] #1",
        ),
    ];
    for (tail, expected) in cases {
        let shown = only(&format!("{BASE}\n{tail}"));
        assert!(shown.contains(expected), "{tail}: {shown}");
    }
}

#[test]
fn cluster_needs_conditional_writes_a_ttl_and_a_node_name() {
    let s3 = "[storage]\nurl = \"s3://grove\"\nendpoint = \"https://r2.example\"\n";
    let p = parse(&format!(
        "{BASE}\n{s3}\n[cluster]\nlease_ttl = \"45s\"\nnode = \"backup-1\"\n"
    ))
    .unwrap();
    let cluster = p.cluster.clone().unwrap();
    assert_eq!(cluster.lease_ttl, std::time::Duration::from_secs(45));
    assert_eq!(cluster.node, "backup-1");
    let shown = describe(&p, Utc::now());
    assert!(
        shown.contains("cluster:      node backup-1, lease_ttl 45s"),
        "{shown}"
    );
    // The default ttl, and the host name for the node.
    let p = parse(&format!("{BASE}\n{s3}\n[cluster]\n")).unwrap();
    let cluster = p.cluster.unwrap();
    assert_eq!(cluster.lease_ttl, std::time::Duration::from_secs(30));
    assert!(
        crate::lease::valid_node_name(&cluster.node),
        "{}",
        cluster.node
    );
    assert!(parse(BASE).unwrap().cluster.is_none());

    let cases = [
        (
            "[cluster]\n".to_string(),
            "[cluster] needs storage with conditional writes (If-Match, If-None-Match), and [storage] is a file:// folder",
        ),
        (
            "[storage]\nurl = \"memory://\"\n[cluster]\n".to_string(),
            "and [storage] is memory://, which has none",
        ),
        (
            format!("{s3}[cluster]\nlease_ttl = \"2s\"\n"),
            "\"lease_ttl\" in [cluster] is 2s; at least 3s",
        ),
        (
            format!("{s3}[cluster]\nnode = \"a/b\"\n"),
            "invalid node name \"a/b\"",
        ),
        (
            format!("{s3}[cluster]\nlease_tll = \"30s\"\n"),
            "unknown key \"lease_tll\" in [cluster]",
        ),
    ];
    for (tail, expected) in cases {
        let shown = only(&format!("{BASE}\n{tail}"));
        assert!(shown.contains(expected), "{tail}: {shown}");
    }
}
