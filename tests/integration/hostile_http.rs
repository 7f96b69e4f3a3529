//! Hostile HTTP against a live server (the real stack in-process over the in-process S3 server,
//! with real backups): wrong, missing and garbled bearer tokens; path traversal, encoded
//! slashes, NUL bytes, invalid UTF-8, unicode look-alikes and impossible dates in `/download`,
//! `/restore-guide` and `/list`; oversized and malformed `/trigger` bodies; unknown methods.
//! Requests go out as raw bytes over TCP (an HTTP client would normalise `..` and `%2e`).
//!
//! Every answer must be a clean 4xx with a JSON `{"error": …}` body: never a 5xx, never a 2xx,
//! never the bytes of a foreign object (objects that are not committed backups are put in the
//! bucket, inside and outside the prefix, and no request may reach them).

use std::sync::{Arc, Mutex};

use patina::backup::Quiet;
use patina::catalog::Catalog;
use patina::http::AppState;
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
}

async fn live() -> Live {
    let dir = tempfile::tempdir().unwrap();
    for name in ["alpha", "beta"] {
        std::fs::copy(DEMO_DB, dir.path().join(format!("{name}.db"))).unwrap();
    }
    let text = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntick = \"60s\"\napi_token = \"{TOKEN}\"\n\
         [storage]\nurl = \"file://unused\"\n\
         [priorities.critical]\nschedule = \"0 3 * * *\"\n\
         [[database]]\nname = \"alpha\"\nkind = \"sqlite\"\npath = \"alpha.db\"\npriority = \"critical\"\n\
         [[database]]\nname = \"beta\"\nkind = \"sqlite\"\npath = \"beta.db\"\npriority = \"critical\"\n"
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
    tokio::spawn(patina::http::serve(listener, state, std::future::pending()));
    Live {
        _dir: dir,
        _s3: s3,
        addr,
        reconciler,
        catalog,
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
