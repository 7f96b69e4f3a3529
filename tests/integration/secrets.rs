//! Secrets never leak: every secret a policy can hold (the S3 access key id and secret key, the
//! daemon's API token and a `[[token]]` secret, a webhook URL whose path is the credential, a webhook header value, the
//! Cloudflare API token) is given a value that cannot occur by accident, then everything Patina
//! says or writes is searched for them: `patina check`, `plan`, `backup` (text and JSON logs at
//! debug), `list`, a `patina run` daemon's debug log, every HTTP endpoint (with and without the
//! bearer token), the alert payloads a receiver got, every object key and object in the bucket,
//! and the raw bytes of the catalog (`patina.db` and its `-wal`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::d1::D1Server;
use crate::support::daemon::{Daemon, free_port};
use crate::support::receiver::Receiver;
use crate::support::s3::S3Server;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");

const ACCESS_KEY: &str = "AKIDSECRET-4e8d1f";
const SECRET_KEY: &str = "S3CRETKEY-7f3a9c";
const API_TOKEN: &str = "APITOKEN-b51c07";
const HOOK_PATH: &str = "HOOKPATH-2d9e4a";
const HOOK_HEADER: &str = "HDRSECRET-a03f66";
const CF_TOKEN: &str = "CFTOKEN-9c41be";
const OPS_TOKEN: &str = "OPSTOKEN-e7a210";
const SECRETS: [&str; 7] = [
    ACCESS_KEY,
    SECRET_KEY,
    API_TOKEN,
    HOOK_PATH,
    HOOK_HEADER,
    CF_TOKEN,
    OPS_TOKEN,
];

const D1_ID: &str = "45eae4c7-8ae7-4078-9218-8e1677a4360f";

/// Panics naming the secret and the place when any secret occurs in `haystack`.
#[track_caller]
fn assert_clean(place: &str, haystack: &[u8]) {
    for secret in SECRETS {
        let found = haystack
            .windows(secret.len())
            .position(|w| w == secret.as_bytes());
        if let Some(at) = found {
            let from = at.saturating_sub(200);
            let to = (at + secret.len() + 200).min(haystack.len());
            panic!(
                "secret {secret} leaked into {place}:\n…{}…",
                String::from_utf8_lossy(&haystack[from..to])
            );
        }
    }
}

fn policy(s3: &S3Server, d1: &D1Server, hook_url: &str, port: u16) -> String {
    format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\ntick = \"1s\"\napi_token = \"{API_TOKEN}\"\n\n\
         [storage]\nurl = \"s3://{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"auto\"\n\
         access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nprefix = \"patina/\"\n\n\
         [cloudflare]\naccount_id = \"{account}\"\napi_token = \"{CF_TOKEN}\"\napi_url = \"{api_url}\"\n\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\n\
         [[database]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"app.db\"\npriority = \"critical\"\n\n\
         [[database]]\nname = \"edge\"\nkind = \"d1\"\nid = \"{D1_ID}\"\npriority = \"critical\"\n\n\
         [[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook_url}\"\non = [\"failure\"]\n\
         headers = {{ Authorization = \"Bearer {HOOK_HEADER}\" }}\n\n\
         [[token]]\nname = \"ops\"\nsecret = \"{OPS_TOKEN}\"\nscopes = [\"read\", \"download\"]\n",
        bucket = s3.bucket,
        endpoint = s3.endpoint,
        account = d1.account,
        api_url = d1.api_url,
    )
}

/// Run `patina ARGS` in `dir` with the environment; stdout and stderr together.
fn patina(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Vec<u8>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patina"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("PATINA_CONFIG")
        .env_remove("PATINA_LOG_FORMAT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let mut all = out.stdout;
    all.extend_from_slice(b"\n--- stderr ---\n");
    all.extend_from_slice(&out.stderr);
    (out.status.code(), all)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn catalog_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["patina.db", "patina.db-wal", "patina.db-shm"]
        .iter()
        .filter_map(|f| {
            std::fs::read(dir.join(".patina").join(f))
                .ok()
                .map(|b| (format!(".patina/{f}"), b))
        })
        .collect()
}

#[test]
fn no_secret_appears_in_any_output_log_endpoint_alert_object_or_catalog() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s3 = rt.block_on(S3Server::start_with_keys(ACCESS_KEY, SECRET_KEY));
    let receiver = rt.block_on(Receiver::start());
    let d1 = D1Server::start(); // knows its own token, not ours: every D1 call fails with 403
    let hook_url = receiver.url(&format!("/hook/{HOOK_PATH}"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(DEMO_DB, p.join("app.db")).unwrap();
    let port = free_port();
    std::fs::write(p.join("patina.toml"), policy(&s3, &d1, &hook_url, port)).unwrap();

    // The CLI: check, plan, backup (text and JSON logs at debug), list.
    let (code, out) = patina(p, &["check"], &[]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out));
    assert_clean("patina check", &out);
    let (_, out) = patina(p, &["plan"], &[("PATINA_LOG", "debug")]);
    assert_clean("patina plan", &out);
    let (code, out) = patina(p, &["backup"], &[("PATINA_LOG", "debug")]);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_ne!(code, Some(0), "the D1 database must fail: {text}");
    assert!(text.contains("edge"), "the D1 failure is reported: {text}");
    assert_clean("patina backup (text log, debug)", &out);
    let (_, out) = patina(
        p,
        &["--log-format", "json", "backup"],
        &[("PATINA_LOG", "debug")],
    );
    assert!(
        String::from_utf8_lossy(&out).contains("{\""),
        "JSON log lines: {}",
        String::from_utf8_lossy(&out)
    );
    assert_clean("patina backup (JSON log, debug)", &out);
    let (code, out) = patina(p, &["list"], &[("PATINA_LOG", "debug")]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("app"));
    assert_clean("patina list", &out);

    // The catalog the CLI wrote (failures recorded with their messages). Then a fresh one, so
    // the daemon's first pass retries the D1 database at once (no backoff) and alerts.
    for (name, bytes) in catalog_bytes(p) {
        assert_clean(&format!("{name} (after the CLI)"), &bytes);
    }
    std::fs::remove_dir_all(p.join(".patina")).unwrap();

    // The daemon at debug: catch-up pass (app succeeds, edge fails and alerts), a manual trigger.
    let mut daemon = Daemon::start(p, "debug", &[]);
    let base = format!("http://{}", daemon.addr());
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.to(&format!("/hook/{HOOK_PATH}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no failure alert within 60 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(async {
        let r = http
            .post(format!("{base}/trigger"))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({"databases": ["app"], "reason": "secrets suite"}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.bytes().await.unwrap();
        assert!(status.is_success() || status == 409, "{status}: {body:?}");
        assert_clean("POST /trigger", &body);
        // Wrong and missing tokens: the error must not echo the expected one.
        for auth in [
            None,
            Some("Bearer nope"),
            Some("Bearer APITOKEN-b51c0"),
            Some("Bearer OPSTOKEN-e7a21"),
        ] {
            let mut req = http.post(format!("{base}/trigger")).body("{}");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let body = req.send().await.unwrap().bytes().await.unwrap();
            assert_clean(&format!("POST /trigger with {auth:?}"), &body);
        }
    });
    std::thread::sleep(Duration::from_secs(2));

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let paths = [
        "/".to_string(),
        "/healthz".into(),
        "/readyz".into(),
        "/status".into(),
        "/metrics".into(),
        "/api/backup-status".into(),
        "/ui".into(),
        "/list".into(),
        "/restore-guide/app".into(),
        "/restore-guide/edge".into(),
        format!("/download/{today}/app"),
        format!("/download/{today}/app?raw=1"),
        format!("/download/{today}/edge"),
        "/api/audit".into(),
        "/nope".into(),
    ];
    rt.block_on(async {
        for path in &paths {
            for token in [None, Some(API_TOKEN), Some(OPS_TOKEN)] {
                let mut req = http.get(format!("{base}{path}"));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await.unwrap();
                let status = r.status();
                let body = r.bytes().await.unwrap();
                assert!(
                    !status.is_server_error(),
                    "{path}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                let place = format!("GET {path} (token: {})", token.is_some());
                assert_clean(&place, &body);
            }
        }
        // OpenMetrics too.
        let body = http
            .get(format!("{base}/metrics"))
            .header("accept", "application/openmetrics-text;version=1.0.0")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_clean("GET /metrics (OpenMetrics)", &body);
    });
    // The catalog while the daemon holds it (the WAL is live).
    for (name, bytes) in catalog_bytes(p) {
        assert_clean(&format!("{name} (daemon running)"), &bytes);
    }

    daemon.signal("-TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("DEBUG"), "the daemon logged at debug: {log}");
    assert!(log.contains("edge"), "the D1 failure is in the log: {log}");
    assert_clean("the daemon's debug log", log.as_bytes());

    // The alerts the receiver got (bodies and header names; the header value is expected in the
    // request's own Authorization header and nowhere else).
    let hooks = receiver.to(&format!("/hook/{HOOK_PATH}"));
    assert!(!hooks.is_empty());
    for r in &hooks {
        assert_eq!(
            r.headers["authorization"],
            format!("Bearer {HOOK_HEADER}"),
            "the sink's header is sent"
        );
        assert_clean("an alert payload", r.body.as_bytes());
    }

    // Storage: every key and every object.
    let objects = files(&s3.bucket_dir());
    assert!(
        objects
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".manifest.json")),
        "{objects:?}"
    );
    for f in &objects {
        let key = f.strip_prefix(s3.bucket_dir()).unwrap().to_string_lossy();
        assert_clean("an object key", key.as_bytes());
        let bytes = std::fs::read(f).unwrap();
        assert_clean(&format!("object {key}"), &bytes);
        if key.ends_with(".zst") {
            let plain = zstd::decode_all(bytes.as_slice()).unwrap();
            assert_clean(&format!("object {key} (decompressed)"), &plain);
        }
    }

    // The catalog at rest.
    let catalog = catalog_bytes(p);
    assert!(!catalog.is_empty());
    for (name, bytes) in catalog {
        assert_clean(&name, &bytes);
    }
}
