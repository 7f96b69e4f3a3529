//! Hostile HTTP against a live server (the real stack in-process over the in-process S3 server,
//! with real backups): wrong, missing and garbled bearer tokens; path traversal, encoded
//! slashes, NUL bytes, invalid UTF-8, unicode look-alikes and impossible dates in `/download`,
//! `/restore-guide` and `/list`; oversized and malformed `/trigger` bodies; unknown methods.
//! Access control (DESIGN §17): scope confusion between tokens, tokens in query strings and
//! cookies, oversized and malformed `Authorization` headers, slowloris connections, TLS
//! handshakes that never finish, and the lockout after failed authentications with its bounded
//! memory and audit rows. Requests go out as raw bytes over TCP (an HTTP client would normalise
//! `..` and `%2e`).
//!
//! Every answer must be a clean 4xx with a JSON `{"error": …}` body: never a 5xx, never a 2xx,
//! never the bytes of a foreign object (objects that are not committed backups are put in the
//! bucket, inside and outside the prefix, and no request may reach them).

use std::sync::{Arc, Mutex};

use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::http::{AppState, Limits, Tls};
use patina::reconcile::{ManualClock, Reconciler};
use patina::store::{PutMode, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::s3::S3Server;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/demo-app.db");
const TOKEN: &str = "h0stile-t0ken-for-tests";
const FOREIGN: &str = "FOREIGN-0bject-bytes-c0ffee";
const DAY: &str = "2026-11-16";

struct Live {
    _dir: tempfile::TempDir,
    _s3: S3Server,
    addr: std::net::SocketAddr,
    reconciler: Arc<Reconciler>,
    catalog: Arc<Mutex<Catalog>>,
    clock: ManualClock,
    state: Arc<AppState>,
}

async fn live() -> Live {
    live_with("", "", Limits::default(), None).await
}

/// A live server: `daemon_extra` lines go into `[daemon]` (which has `api_token = TOKEN`),
/// `blocks` (e.g. `[[token]]`s) at the end of the policy.
async fn live_with(daemon_extra: &str, blocks: &str, limits: Limits, tls: Option<Tls>) -> Live {
    let dir = tempfile::tempdir().unwrap();
    for name in ["alpha", "beta"] {
        std::fs::copy(DEMO_DB, dir.path().join(format!("{name}.db"))).unwrap();
    }
    let text = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"60s\"\napi_token = \"{TOKEN}\"\n{daemon_extra}\n\
         [storage]\nurl = \"file://unused\"\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\
         [[database]]\nname = \"alpha\"\nkind = \"sqlite\"\npath = \"alpha.db\"\npriority = \"critical\"\n\
         [[database]]\nname = \"beta\"\nkind = \"sqlite\"\npath = \"beta.db\"\npriority = \"critical\"\n\
         {blocks}"
    );
    let mut policy = patina::config::from_str(&text, "patina.toml", dir.path(), &|_| None).unwrap();
    let s3 = S3Server::start().await;
    policy.storage = s3.storage("patina/");
    let store = Store::open(&policy.storage).unwrap();
    let catalog = Arc::new(Mutex::new(Catalog::open(&policy.daemon.state_dir).unwrap()));
    let clock = ManualClock::new(format!("{DAY}T10:00:00Z").parse().unwrap());
    let reconciler = Arc::new(Reconciler::new(
        Arc::new(policy),
        store.clone(),
        Arc::clone(&catalog),
        clock.clock(),
        Arc::new(Quiet),
    ));
    reconciler.run_once().await.unwrap();
    reconciler.wait_idle().await;
    assert_eq!(catalog.lock().unwrap().list_backups(None).unwrap().len(), 2);

    // Foreign objects: outside the prefix, inside it, and a dump-shaped key with no manifest.
    let raw = Store::open(&s3.storage("")).unwrap();
    for key in [
        "etc/passwd",
        "patina/etc/passwd",
        "patina/notes/secret.txt",
        "patina/daily/2026-11-16/ghost/20261116T030000Z.sql",
    ] {
        raw.put(
            key,
            bytes::Bytes::from_static(FOREIGN.as_bytes()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    }
    // A file next to the bucket folder, for traversals out of it.
    std::fs::write(s3.bucket_dir().join("../outside.txt"), FOREIGN).unwrap();

    let listener = patina::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(Arc::clone(&reconciler), Arc::clone(&catalog), clock.clock());
    tokio::spawn(patina::http::serve_with(
        listener,
        Arc::clone(&state),
        tls,
        limits,
        std::future::pending(),
    ));
    Live {
        _dir: dir,
        _s3: s3,
        addr,
        reconciler,
        catalog,
        clock,
        state,
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// One request as raw bytes (`target` is sent exactly as given), read to the connection's end.
async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    target: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Answer {
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await; // a reset after an early answer is fine
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut body = out[end + 4..].to_vec();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        body = dechunk(&body);
    }
    Answer {
        status,
        content_type: header("content-type"),
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// A clean refusal: 4xx, JSON `{"error": "…"}`, no foreign bytes.
#[track_caller]
fn assert_refused(what: &str, a: &Answer) {
    let body = String::from_utf8_lossy(&a.body);
    assert!(
        !body.contains(FOREIGN),
        "{what}: served a foreign object: {body}"
    );
    assert!(
        (400..500).contains(&a.status),
        "{what}: expected a 4xx, got {}: {body}",
        a.status
    );
    assert!(
        a.content_type.starts_with("application/json"),
        "{what}: {} is not JSON: {body}",
        a.content_type
    );
    let v: serde_json::Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: no error field: {body}"
    );
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_missing_and_garbled_tokens_are_refused() {
    let l = live().await;
    let off_by_one = {
        let mut t = TOKEN.as_bytes().to_vec();
        *t.last_mut().unwrap() ^= 1;
        String::from_utf8(t).unwrap()
    };
    let mut cases: Vec<(String, Option<Vec<u8>>)> = vec![
        ("none".into(), None),
        ("Bearer".into(), Some(b"Bearer".to_vec())),
        ("Bearer + space".into(), Some(b"Bearer ".to_vec())),
        (
            "lower-case scheme, wrong token".into(),
            Some(b"bearer x".to_vec()),
        ),
        ("one byte off".into(), Some(bearer(&off_by_one))),
        ("a prefix".into(), Some(bearer(&TOKEN[..TOKEN.len() - 1]))),
        ("one byte more".into(), Some(bearer(&format!("{TOKEN}x")))),
        ("10 KB".into(), Some(bearer(&"A".repeat(10 * 1024)))),
        (
            "10 KB starting with the token".into(),
            Some(bearer(&format!("{TOKEN}{}", "A".repeat(10 * 1024)))),
        ),
        (
            "non-ASCII".into(),
            Some("Bearer tökén-ü".as_bytes().to_vec()),
        ),
        (
            "the token followed by non-ASCII".into(),
            Some(format!("Bearer {TOKEN}é").into_bytes()),
        ),
        ("Basic".into(), Some(format!("Basic {TOKEN}").into_bytes())),
        ("no scheme".into(), Some(TOKEN.as_bytes().to_vec())),
        (
            "Token scheme".into(),
            Some(format!("Token {TOKEN}").into_bytes()),
        ),
        ("empty".into(), Some(Vec::new())),
    ];
    // The token twice, comma-separated (a proxy merging headers).
    cases.push((
        "two tokens".into(),
        Some(format!("Bearer {TOKEN}, Bearer {TOKEN}").into_bytes()),
    ));
    for (what, auth) in &cases {
        let headers: Vec<(&str, &[u8])> = auth
            .iter()
            .map(|a| ("Authorization", a.as_slice()))
            .collect();
        for (method, target, body) in [
            ("POST", "/trigger".to_string(), b"{}".as_slice()),
            ("GET", format!("/download/{DAY}/alpha"), b"".as_slice()),
            (
                "GET",
                format!("/download/{DAY}/alpha?raw=1"),
                b"".as_slice(),
            ),
        ] {
            let a = raw(l.addr, method, target.as_bytes(), &headers, body).await;
            let tag = format!("{method} {target} with token {what}");
            assert_refused(&tag, &a);
            assert_eq!(a.status, 401, "{tag}: {}", String::from_utf8_lossy(&a.body));
        }
        // Each case in a minute of its own: the lockout (10 failures a minute) is tested
        // apart.
        l.clock.advance(chrono::Duration::seconds(61));
    }
    // A NUL in a header value is malformed HTTP: hyper refuses the request before any handler
    // runs, with a bare 400 (no body, so nothing to leak); never a 2xx.
    for (method, target, body) in [
        ("POST", "/trigger", b"{}".as_slice()),
        ("GET", "/download/2026-11-16/alpha", b"".as_slice()),
    ] {
        let a = raw(
            l.addr,
            method,
            target.as_bytes(),
            &[("Authorization", format!("Bearer {TOKEN}\0").as_bytes())],
            body,
        )
        .await;
        assert_eq!(a.status, 400, "{method} {target} with a NUL in the token");
        assert!(a.body.is_empty(), "{:?}", String::from_utf8_lossy(&a.body));
    }
    // The same header twice, the first wrong: refused (never "any of them matches").
    let a = raw(
        l.addr,
        "GET",
        format!("/download/{DAY}/alpha").as_bytes(),
        &[
            ("Authorization", b"Bearer wrong"),
            ("Authorization", &bearer(TOKEN)),
        ],
        b"",
    )
    .await;
    assert_refused("two Authorization headers, the first wrong", &a);
    // Nothing was started by any of them.
    assert_eq!(l.catalog.lock().unwrap().recent_jobs(10).unwrap().len(), 1);
    assert!(l.reconciler.running().is_empty());
    // The right token still works.
    let a = raw(
        l.addr,
        "GET",
        format!("/download/{DAY}/alpha").as_bytes(),
        &[("Authorization", &bearer(TOKEN))],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(a.body.starts_with(b"-- "), "a SQL dump");
}

/// Targets that must never be served: traversal, encodings, look-alikes, impossible dates.
fn hostile_targets() -> Vec<String> {
    let dbs = [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e",
        "%2E%2E%2F%2E%2E%2Fetc",
        ".",
        "..",
        "alpha%2F..%2F..%2Fetc",
        "alpha%2Fghost",
        "alpha%00",
        "%00",
        "alpha%00.sql",
        "alpha%0A",
        "alpha%20",
        "%20alpha",
        "Alpha",
        "ALPHA",
        "%EF%BD%81lpha",  // fullwidth ａ
        "%D0%B0lpha",     // Cyrillic а
        "alph%C9%91",     // Latin alpha ɑ
        "alpha%E2%80%8B", // zero-width space
        "alpha%CC%81",    // combining acute
        "alpha%FF",       // invalid UTF-8
        "%C0%AE%C0%AE",   // overlong UTF-8 for ".."
        "ghost",
        "etc",
        "notes",
        "-alpha",
        "_alpha",
        "alpha.db",
        "alpha%5C..%5C..%5Cetc",
        "a%25252e%25252e",
    ];
    let long = "a".repeat(65);
    let mut targets = Vec::new();
    for db in dbs.iter().copied().chain([long.as_str()]) {
        targets.push(format!("/download/{DAY}/{db}"));
        targets.push(format!("/download/{DAY}/{db}?raw=1"));
        targets.push(format!("/restore-guide/{db}"));
        targets.push(format!("/list?database={db}"));
    }
    for date in [
        "2026-02-30",
        "2026-13-01",
        "2026-00-10",
        "2026-11-31",
        "2026-11-16T00:00:00Z",
        "02026-11-16",
        "+2026-11-16",
        "-2026-11-16",
        "2026-11-16%00",
        "2026-11-16%2F..",
        "..%2F2026-11-16",
        "%2e%2e",
        "99999999999999999999-01-01",
        "262144-01-01",
        "2026-1-16",
        "2026-11-6",
        "%EF%BC%92026-11-16", // fullwidth 2
        "2026%2D11%2D16%FF",
        "yesterday",
    ] {
        targets.push(format!("/download/{date}/alpha"));
        targets.push(format!("/list?date={date}"));
    }
    for q in [
        "limit=0",
        "limit=-1",
        "limit=-0",
        "limit=1001",
        "limit=99999999999999999999999999",
        "limit=18446744073709551616",
        "limit=1e3",
        "limit=0x10",
        "limit=1.5",
        "limit=%00",
        "limit=10%00",
        "limit=%FF",
        "limit=1&limit=2",
        "database=alpha&database=beta",
        "date=2026-11-16&date=2026-11-17",
        "database[]=alpha",
        "database=alpha&color=red",
        "path=..%2F..%2Fetc%2Fpasswd",
        "%FF=1",
    ] {
        targets.push(format!("/list?{q}"));
    }
    for q in [
        "raw=maybe",
        "raw=1&raw=1",
        "raw=%00",
        "raw=1&key=etc%2Fpasswd",
        "key=patina%2Fnotes%2Fsecret.txt",
    ] {
        targets.push(format!("/download/{DAY}/alpha?{q}"));
    }
    // Raw traversal (no route matches: 404, never a file).
    for t in [
        "/download/2026-11-16/../../etc/passwd",
        "/download/2026-11-16/alpha/../../../outside.txt",
        "/download/../../outside.txt",
        "/download/2026-11-16/alpha/extra",
        "/download/2026-11-16",
        "/download/2026-11-16/",
        "/download//alpha",
        "/restore-guide/",
        "/restore-guide/alpha/../../etc/passwd",
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/patina/notes/secret.txt",
        "/etc/passwd",
        "/outside.txt",
        "/ui/../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
    ] {
        targets.push(t.to_string());
    }
    targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_encodings_lookalikes_and_bad_parameters_get_clean_4xx() {
    let l = live().await;
    let auth = bearer(TOKEN);
    let mut failures = Vec::new();
    for target in hostile_targets() {
        for with_token in [true, false] {
            let headers: Vec<(&str, &[u8])> = if with_token {
                vec![("Authorization", auth.as_slice())]
            } else {
                vec![]
            };
            let a = raw(l.addr, "GET", target.as_bytes(), &headers, b"").await;
            let what = format!("GET {target} (token: {with_token})");
            // /list filters: a well-formed name or date it knows nothing of lists nothing (200,
            // no backups) — allowed, as it serves no data.
            if target.starts_with("/list?") && a.status == 200 {
                let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
                if v["filtered"] == 0 && v["backups"].as_array().is_some_and(Vec::is_empty) {
                    continue;
                }
            }
            if let Err(e) = std::panic::catch_unwind(|| assert_refused(&what, &a)) {
                failures.push(
                    e.downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| what.clone()),
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} hostile requests were not cleanly refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // And still serving: the real backup is there.
    let a = raw(l.addr, "GET", b"/list?database=alpha", &[], b"").await;
    assert_eq!(a.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["filtered"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_trigger_bodies_and_unknown_methods_get_clean_4xx() {
    let l = live().await;
    let auth = bearer(TOKEN);
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"databases\":{}{}}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("invalid JSON", b"{not json".to_vec()),
        ("truncated", b"{\"databases\":[\"alpha\"".to_vec()),
        ("an array", b"[\"alpha\"]".to_vec()),
        ("a string", b"\"alpha\"".to_vec()),
        ("a number", b"42".to_vec()),
        ("JSON null", b"null".to_vec()),
        ("databases a string", br#"{"databases":"alpha"}"#.to_vec()),
        ("databases numbers", br#"{"databases":[1,2]}"#.to_vec()),
        ("databases nested", br#"{"databases":[["alpha"]]}"#.to_vec()),
        ("databases empty", br#"{"databases":[]}"#.to_vec()),
        (
            "databases traversal",
            br#"{"databases":["../../etc/passwd"]}"#.to_vec(),
        ),
        (
            "databases NUL",
            b"{\"databases\":[\"alpha\\u0000\"]}".to_vec(),
        ),
        (
            "databases look-alike",
            "{\"databases\":[\"\u{0430}lpha\"]}".as_bytes().to_vec(),
        ),
        ("databases upper", br#"{"databases":["ALPHA"]}"#.to_vec()),
        ("reason a number", br#"{"reason":5}"#.to_vec()),
        (
            "reason too long",
            format!("{{\"reason\":\"{}\"}}", "x".repeat(501)).into_bytes(),
        ),
        (
            "unknown field",
            br#"{"databases":["alpha"],"force":true}"#.to_vec(),
        ),
        (
            "duplicate field",
            br#"{"databases":["alpha"],"databases":["beta"]}"#.to_vec(),
        ),
        ("trailing garbage", br#"{"databases":["alpha"]} x"#.to_vec()),
        ("two documents", br#"{}{}"#.to_vec()),
        ("invalid UTF-8", b"{\"reason\":\"\xff\xfe\"}".to_vec()),
        ("a BOM", b"\xef\xbb\xbf{}".to_vec()),
        (
            "100 KB",
            format!("{{\"reason\":\"{}\"}}", "x".repeat(100 * 1024)).into_bytes(),
        ),
        (
            "1 MB of spaces then {}",
            [vec![b' '; 1 << 20], b"{}".to_vec()].concat(),
        ),
        ("deeply nested array", nested.into_bytes()),
        ("deeply nested databases", deep_object.into_bytes()),
        ("NUL bytes", vec![0u8; 64]),
    ];
    let mut failures = Vec::new();
    for (what, body) in &bodies {
        let a = raw(
            l.addr,
            "POST",
            b"/trigger",
            &[
                ("Authorization", auth.as_slice()),
                ("Content-Type", b"application/json"),
            ],
            body,
        )
        .await;
        let tag = format!("POST /trigger with {what}");
        if let Err(e) = std::panic::catch_unwind(|| assert_refused(&tag, &a)) {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or(tag));
        }
    }
    // Unknown and wrong methods, on every route.
    for method in [
        "PUT", "DELETE", "PATCH", "FOO", "TRACE", "OPTIONS", "PROPFIND",
    ] {
        for target in [
            "/",
            "/status",
            "/trigger",
            "/list",
            "/metrics",
            "/ui",
            "/download/2026-11-16/alpha",
            "/restore-guide/alpha",
        ] {
            let a = raw(
                l.addr,
                method,
                target.as_bytes(),
                &[("Authorization", auth.as_slice())],
                b"{}",
            )
            .await;
            let tag = format!("{method} {target}");
            if let Err(e) = std::panic::catch_unwind(|| assert_refused(&tag, &a)) {
                failures.push(e.downcast_ref::<String>().cloned().unwrap_or(tag));
            }
        }
    }
    let a = raw(l.addr, "GET", b"/trigger", &[], b"").await;
    assert_refused("GET /trigger", &a);
    assert!(
        failures.is_empty(),
        "{} requests were not cleanly refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing was started by any of them.
    assert_eq!(l.catalog.lock().unwrap().recent_jobs(10).unwrap().len(), 1);
    assert!(l.reconciler.running().is_empty());
}

/// Regression: a path segment that is not UTF-8 once percent-decoded (`/download/DAY/alpha%FF`,
/// `/restore-guide/%C0%AE%C0%AE`) got axum's plain-text 400 ("Invalid URL: Invalid UTF-8 in
/// `db`") instead of the JSON `{"error", "hint"}` every other error has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_invalid_utf8_in_a_path_segment_got_a_plain_text_400() {
    let l = live().await;
    let auth = bearer(TOKEN);
    for target in [
        "/download/2026-11-16/alpha%FF",
        "/download/2026%FF-11-16/alpha",
        "/restore-guide/%C0%AE%C0%AE",
    ] {
        let a = raw(
            l.addr,
            "GET",
            target.as_bytes(),
            &[("Authorization", auth.as_slice())],
            b"",
        )
        .await;
        assert_refused(target, &a);
        assert_eq!(a.status, 400, "{target}");
    }
}

// ---------------------------------------------------------------------------------------------
// Access control (DESIGN §17): scopes, query strings, Authorization headers, slow clients,
// TLS handshakes, the lockout.

const CI: &str = "ci-t0ken-trigger-only";
const FETCH: &str = "fetch-t0ken-download-only";
const VIEWER: &str = "viewer-t0ken-read-only";

/// Three one-scope tokens besides `api_token` (the token "default" with every scope).
fn scoped_tokens() -> String {
    format!(
        "[[token]]\nname = \"ci\"\nsecret = \"{CI}\"\nscopes = [\"trigger\"]\n\
         [[token]]\nname = \"fetch\"\nsecret = \"{FETCH}\"\nscopes = [\"download\"]\n\
         [[token]]\nname = \"viewer\"\nsecret = \"{VIEWER}\"\nscopes = [\"read\"]\n"
    )
}

fn json_of(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&a.body)))
}

async fn get(addr: std::net::SocketAddr, target: &str, token: Option<&str>) -> Answer {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &[u8])> = auth
        .iter()
        .map(|a| ("Authorization", a.as_slice()))
        .collect();
    raw(addr, "GET", target.as_bytes(), &headers, b"").await
}

/// The `patina_http_auth_failures_total` sample of a scrape.
async fn auth_failures(l: &Live) -> u64 {
    let a = get(l.addr, "/metrics", Some(VIEWER)).await;
    let text = String::from_utf8_lossy(&a.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("patina_http_auth_failures_total "))
        .unwrap_or_else(|| panic!("no auth failure counter in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_does_only_what_its_scopes_allow_and_every_refusal_is_audited() {
    let l = live_with(
        "public_read = false",
        &scoped_tokens(),
        Limits::default(),
        None,
    )
    .await;
    let download = format!("/download/{DAY}/alpha");
    let reads = [
        "/",
        "/status",
        "/list",
        "/ui",
        "/metrics",
        "/restore-guide/alpha",
        "/api/backup-status",
        "/api/audit",
    ];
    // Every token on every endpoint but /trigger (which starts a job): 2xx exactly where a
    // scope allows it, else a 403 that names the scope.
    let mut forbidden = 0;
    for (token, name, scope) in [
        (CI, "ci", "trigger"),
        (FETCH, "fetch", "download"),
        (VIEWER, "viewer", "read"),
        (TOKEN, "default", "all"),
    ] {
        for target in reads.iter().copied().chain([download.as_str()]) {
            let needed = if target == download {
                "download"
            } else {
                "read"
            };
            let a = get(l.addr, target, Some(token)).await;
            let what = format!("GET {target} as {name}");
            if scope == "all" || scope == needed {
                assert!(
                    (200..300).contains(&a.status),
                    "{what}: {} {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                );
            } else {
                assert_refused(&what, &a);
                assert_eq!(a.status, 403, "{what}");
                let e = json_of(&a);
                assert_eq!(e["scope"], needed, "{what}: {e}");
                assert!(
                    e["error"].as_str().unwrap().contains(&format!("{name:?}")),
                    "{what}: {e}"
                );
                forbidden += 1;
            }
        }
        if scope != "trigger" && scope != "all" {
            let auth = bearer(token);
            let a = raw(
                l.addr,
                "POST",
                b"/trigger",
                &[("Authorization", &auth)],
                br#"{"databases":["alpha"]}"#,
            )
            .await;
            assert_refused(&format!("POST /trigger as {name}"), &a);
            assert_eq!(
                (a.status, json_of(&a)["scope"].clone()),
                (403, "trigger".into())
            );
            forbidden += 1;
        }
    }
    // Health stays open without a token; reads are closed without one.
    for open in ["/healthz", "/readyz"] {
        assert_eq!(get(l.addr, open, None).await.status, 200, "{open}");
    }
    for target in reads {
        let a = get(l.addr, target, None).await;
        assert_refused(target, &a);
        assert_eq!(a.status, 401, "{target}");
    }
    // The trigger token starts a job recorded as its own.
    let auth = bearer(CI);
    let a = raw(
        l.addr,
        "POST",
        b"/trigger",
        &[("Authorization", &auth)],
        br#"{"databases":["alpha"],"reason":"scope test"}"#,
    )
    .await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    l.reconciler.wait_idle().await;
    let status = json_of(&get(l.addr, "/status", Some(VIEWER)).await);
    assert_eq!(status["recentJobs"][0]["initiatedBy"], "api:ci", "{status}");
    // The download shows on /status without the client's address.
    let access = &status["recentAccess"];
    assert!(
        access
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["who"] == "fetch" && r["action"] == "download" && r["result"] == "ok"),
        "{access}"
    );
    assert!(access[0].get("remoteAddr").is_none(), "{access}");

    // The audit log: the trigger, the downloads, one record per refusal, no failed
    // authentications (a token without the scope is not one), nothing locked out.
    let audit = json_of(&get(l.addr, "/api/audit?limit=1000", Some(VIEWER)).await);
    let entries = audit["entries"].as_array().unwrap();
    let count = |who: &str, action: &str, result: &str| {
        entries
            .iter()
            .filter(|e| e["who"] == who && e["action"] == action && e["result"] == result)
            .count()
    };
    assert_eq!(count("ci", "trigger", "ok"), 1, "{audit}");
    let trigger = entries
        .iter()
        .find(|e| e["who"] == "ci" && e["action"] == "trigger")
        .unwrap();
    assert_eq!(trigger["target"], "alpha");
    assert_eq!(trigger["status"], 202);
    assert_eq!(trigger["remoteAddr"], "127.0.0.1");
    assert_eq!(count("fetch", "download", "ok"), 1, "{audit}");
    assert_eq!(count("default", "download", "ok"), 1, "{audit}");
    let refused = entries
        .iter()
        .filter(|e| e["result"] == "forbidden" && e["status"] == 403)
        .count();
    assert_eq!(refused, forbidden, "{audit}");
    assert_eq!(count("viewer", "trigger", "forbidden"), 1);
    assert_eq!(count("ci", "read", "forbidden"), reads.len() - 1);
    assert_eq!(count("ci", "audit", "forbidden"), 1);
    assert!(entries.iter().all(|e| e["action"] != "authenticate"));
    // Newest first.
    let ids: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    assert_eq!(auth_failures(&l).await, 0);
    // A limit outside 1-1000 is a 400, like /list's.
    let a = get(l.addr, "/api/audit?limit=0", Some(VIEWER)).await;
    assert_refused("limit=0", &a);
    assert_eq!(a.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_audit_needs_a_read_token_even_when_reads_are_public() {
    let l = live_with("", &scoped_tokens(), Limits::default(), None).await;
    assert_eq!(get(l.addr, "/status", None).await.status, 200);
    let a = get(l.addr, "/api/audit", None).await;
    assert_refused("/api/audit without a token", &a);
    assert_eq!(a.status, 401);
    assert_eq!(get(l.addr, "/api/audit", Some(FETCH)).await.status, 403);
    assert_eq!(get(l.addr, "/api/audit", Some(VIEWER)).await.status, 200);
    // Open endpoints ignore a wrong token: nothing to guess there, nothing counted.
    let a = get(l.addr, "/status", Some("wrong")).await;
    assert_eq!(a.status, 200);
    assert_eq!(auth_failures(&l).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_query_strings_and_cookies_are_never_accepted() {
    let l = live_with(
        "public_read = false",
        &scoped_tokens(),
        Limits::default(),
        None,
    )
    .await;
    let mut targets = Vec::new();
    for (path, token) in [
        ("/trigger", CI),
        (&*format!("/download/{DAY}/alpha"), FETCH),
        ("/status", VIEWER),
        ("/ui", VIEWER),
        ("/metrics", VIEWER),
        ("/list", VIEWER),
        ("/api/audit", VIEWER),
    ] {
        for param in ["access_token", "token", "api_token", "bearer", "auth"] {
            targets.push((path.to_string(), format!("{path}?{param}={token}")));
        }
        targets.push((
            path.to_string(),
            format!("{path}?authorization=Bearer%20{token}"),
        ));
        targets.push((path.to_string(), format!("{path}?access_token={TOKEN}")));
    }
    for (path, target) in &targets {
        let method = if path == "/trigger" { "POST" } else { "GET" };
        let a = raw(l.addr, method, target.as_bytes(), &[], b"").await;
        assert_refused(target, &a);
        assert_eq!(a.status, 401, "{target}");
        let body = String::from_utf8_lossy(&a.body);
        for secret in [CI, FETCH, VIEWER, TOKEN] {
            assert!(!body.contains(secret), "{target} echoed a token: {body}");
        }
    }
    for (name, token) in [("token", VIEWER), ("patina_token", TOKEN)] {
        let cookie = format!("{name}={token}");
        let a = raw(
            l.addr,
            "GET",
            b"/status",
            &[("Cookie", cookie.as_bytes())],
            b"",
        )
        .await;
        assert_eq!(a.status, 401, "cookie {name}");
    }
    // A missing token is not a failed authentication, and no token reached the audit log.
    assert_eq!(auth_failures(&l).await, 0);
    let audit = get(l.addr, "/api/audit?limit=1000", Some(VIEWER)).await;
    let text = String::from_utf8_lossy(&audit.body);
    for secret in [CI, FETCH, TOKEN] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(l.reconciler.running().is_empty());
    assert_eq!(l.catalog.lock().unwrap().recent_jobs(10).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_authorization_headers_are_refused_cleanly() {
    let l = live_with("", &scoped_tokens(), Limits::default(), None).await;
    let download = format!("/download/{DAY}/alpha");
    // Refused by hyper before any handler runs: a head over 64 KiB (431), and a folded header
    // (400). Bare answers, nothing leaked, nothing counted.
    let huge = bearer(&"A".repeat(1 << 20));
    let over = bearer(&"A".repeat(patina::http::MAX_HEAD + 1));
    for (what, value, status) in [
        ("1 MB", huge.as_slice(), 431),
        ("just over 64 KiB", over.as_slice(), 431),
    ] {
        let a = raw(
            l.addr,
            "GET",
            download.as_bytes(),
            &[("Authorization", value)],
            b"",
        )
        .await;
        assert_eq!(a.status, status, "{what}");
        assert!(a.body.is_empty(), "{what}");
    }
    let folded = format!("Bearer\r\n {TOKEN}");
    let a = raw(
        l.addr,
        "GET",
        download.as_bytes(),
        &[("Authorization", folded.as_bytes())],
        b"",
    )
    .await;
    assert_eq!(a.status, 400, "obs-fold");
    assert_eq!(auth_failures(&l).await, 0);

    // Malformed but readable: 401 JSON, counted as failed authentications. Each case is the
    // list of its Authorization values.
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a token over 512 bytes", vec![bearer(&"A".repeat(513))]),
        (
            "fifty Authorization headers",
            (0..50).map(|_| bearer(TOKEN)).collect(),
        ),
        ("a 0xFF byte", vec![b"Bearer \xff\xfe".to_vec()]),
        ("a tab", vec![format!("Bearer\t{TOKEN}").into_bytes()]),
        ("two spaces", vec![format!("Bearer  {TOKEN}").into_bytes()]),
        (
            "a quoted token",
            vec![format!("Bearer \"{TOKEN}\"").into_bytes()],
        ),
        ("Basic", vec![b"Basic dXNlcjpwYXNz".to_vec()]),
    ];
    for (what, values) in &cases {
        let headers: Vec<(&str, &[u8])> = values
            .iter()
            .map(|v| ("Authorization", v.as_slice()))
            .collect();
        let a = raw(l.addr, "GET", download.as_bytes(), &headers, b"").await;
        assert_refused(what, &a);
        assert_eq!(a.status, 401, "{what}");
        l.clock.advance(chrono::Duration::seconds(61)); // keep the lockout out of it
    }
    assert_eq!(auth_failures(&l).await, cases.len() as u64);
    // Header names are case-insensitive; the scheme too.
    let right = format!("bearer {TOKEN}");
    let a = raw(
        l.addr,
        "GET",
        download.as_bytes(),
        &[("AUTHORIZATION", right.as_bytes())],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
}

/// Whether the server closed `s` within `within` (a read returns EOF or an error).
async fn closed_within(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

fn tight_limits() -> Limits {
    Limits {
        max_connections: 8,
        header_timeout: std::time::Duration::from_secs(1),
        handshake_timeout: std::time::Duration::from_secs(1),
        request_timeout: std::time::Duration::from_secs(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_dropped_and_cannot_starve_the_server() {
    let l = live_with("", "", tight_limits(), None).await;
    let started = std::time::Instant::now();
    // Fill every connection slot: four that send nothing, four that trickle a request head.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(l.addr).await.unwrap());
    }
    let mut tricklers = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
        let task = tokio::spawn(async move {
            let head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .chain(b"a".repeat(100).iter())
                .copied()
                .collect::<Vec<u8>>();
            for byte in head {
                if s.write_all(&[byte]).await.is_err() {
                    return (true, s);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            (false, s)
        });
        tricklers.push(task);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A real request waits for a slot (the limit holds) and gets one once the header timeout
    // has dropped a slow connection.
    let a = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        get(l.addr, "/healthz", None),
    )
    .await
    .expect("a real request was starved by slow connections");
    assert_eq!(a.status, 200);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(800),
        "answered after {waited:?}: the 8-connection limit did not hold"
    );
    for mut s in silent {
        assert!(
            closed_within(&mut s, std::time::Duration::from_secs(3)).await,
            "an idle connection was kept"
        );
    }
    for t in tricklers {
        let (broken, mut s) = t.await.unwrap();
        assert!(
            broken || closed_within(&mut s, std::time::Duration::from_secs(1)).await,
            "a trickled request head was read for longer than the header timeout"
        );
    }
    // An idle keep-alive connection after an answer is closed too.
    let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut s, std::time::Duration::from_secs(3)).await);
    // A body trickled in slower than the request deadline: 408, nothing started.
    let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    let head = format!(
        "POST /trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let _ = s.write_all(b" ").await;
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            Ok(_) => break,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(l.reconciler.running().is_empty());
    // Still serving.
    assert_eq!(get(l.addr, "/healthz", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_that_never_finish_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::support::certs::Pki::new("hostile", crate::support::certs::Key::Ecdsa);
    let files = pki.write(dir.path(), "server");
    let tls = Tls::load(&files).unwrap();
    let l = live_with("", "", tight_limits(), Some(tls)).await;
    let started = std::time::Instant::now();
    // Every slot taken by a handshake that never finishes: silence, or half a ClientHello.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    let url = format!("https://127.0.0.1:{}/healthz", l.addr.port());
    let r = pki.client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(800));
    for mut s in stalled {
        assert!(
            closed_within(&mut s, std::time::Duration::from_secs(3)).await,
            "a stalled handshake was kept"
        );
    }
    // Plain HTTP on the TLS port ends at once, without an answer.
    let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, std::time::Duration::from_millis(500)).await);
    // A client that does not trust the certificate is refused by the handshake, and the
    // server keeps serving.
    let other = crate::support::certs::Pki::new("other", crate::support::certs::Key::Ecdsa);
    assert!(other.client().get(&url).send().await.is_err());
    assert_eq!(pki.client().get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failures_lock_an_address_out_for_the_minute_in_bounded_memory() {
    // Behind a trusted proxy (the test's own 127.0.0.1), X-Forwarded-For names the client.
    let l = live_with(
        "trusted_proxies = [\"127.0.0.1\"]",
        &scoped_tokens(),
        Limits::default(),
        None,
    )
    .await;
    let download = format!("/download/{DAY}/alpha");
    let from = |ip: &str, token: Option<&str>| {
        let mut h: Vec<(String, Vec<u8>)> = vec![(
            "X-Forwarded-For".into(),
            format!("198.51.100.1, {ip}").into_bytes(),
        )];
        if let Some(t) = token {
            h.push(("Authorization".into(), bearer(t)));
        }
        h
    };
    let send = |headers: Vec<(String, Vec<u8>)>| {
        let addr = l.addr;
        let target = download.clone();
        async move {
            let h: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            raw(addr, "GET", target.as_bytes(), &h, b"").await
        }
    };
    let attacker = "203.0.113.7";
    for i in 0..10 {
        let a = send(from(attacker, Some(&format!("guess-{i}")))).await;
        assert_eq!(a.status, 401, "guess {i}");
    }
    // Locked out: even the right token gets 429 with Retry-After, for this address only.
    let a = send(from(attacker, Some(FETCH))).await;
    assert_refused("the right token from a locked-out address", &a);
    assert_eq!(a.status, 429);
    assert!(String::from_utf8_lossy(&a.body).contains("203.0.113.7"));
    // No token at all is not "presenting" one: still the plain 401.
    assert_eq!(send(from(attacker, None)).await.status, 401);
    assert_eq!(send(from("203.0.113.8", Some(FETCH))).await.status, 200);
    let direct = bearer(FETCH);
    let a = raw(
        l.addr,
        "GET",
        download.as_bytes(),
        &[("Authorization", &direct)],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "the proxy's own address is not locked");

    // One audit row for the ten failures, with the client's address from X-Forwarded-For.
    let audit = json_of(&get(l.addr, "/api/audit?limit=1000", Some(VIEWER)).await);
    let failed: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "authenticate")
        .collect();
    assert_eq!(failed.len(), 1, "{audit}");
    assert_eq!(failed[0]["count"], 10);
    assert_eq!(failed[0]["remoteAddr"], attacker);
    assert_eq!(failed[0]["who"], serde_json::Value::Null);
    assert_eq!(failed[0]["target"], download.as_str());
    assert!(
        !audit.to_string().contains("guess-"),
        "a presented token was recorded"
    );
    let downloads: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["who"] == "fetch" && e["action"] == "download")
        .collect();
    assert_eq!(downloads.len(), 2, "{audit}");
    assert_eq!(downloads[0]["remoteAddr"], "127.0.0.1");
    assert_eq!(downloads[1]["remoteAddr"], "203.0.113.8");
    assert_eq!(auth_failures(&l).await, 10);

    // A flood of wrong tokens from more addresses than the counter holds: memory stays
    // bounded, the locked-out address stays locked, and the audit log grows by a bounded
    // number of rows (one per address up to the per-minute limit, the rest as "other").
    let flood = patina::http::LOCKOUT_CAPACITY + 500;
    for i in 0..flood {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let a = send(from(&ip, Some("wrong"))).await;
        assert_eq!(a.status, 401);
    }
    assert!(l.state.tracked_addresses() <= patina::http::LOCKOUT_CAPACITY);
    assert_eq!(send(from(attacker, Some(FETCH))).await.status, 429);
    let rows: i64 = l
        .catalog
        .lock()
        .unwrap()
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'authenticate'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        rows as usize <= patina::http::AUDIT_ADDRESSES_PER_MINUTE + 1,
        "{rows} audit rows for one minute's flood"
    );
    let counted: i64 = l
        .catalog
        .lock()
        .unwrap()
        .connection()
        .query_row(
            "SELECT SUM(count) FROM audit_log WHERE action = 'authenticate'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted as usize, 10 + flood, "every failure is counted");

    // Once the minute has passed, the right token works again.
    l.clock.advance(chrono::Duration::seconds(60));
    assert_eq!(send(from(attacker, Some(FETCH))).await.status, 200);
}
