//! A stand-in for the Cloudflare D1 REST API (TESTING.md, "The D1 REST API stand-in"), backed by
//! real SQLite files, with scriptable failure modes.
//!
//! It follows the documented shapes, not Patina's client: `POST …/export` with
//! `{"output_format":"polling","current_bookmark"?}` answers 202 `active` (with `at_bookmark`)
//! for a configurable number of polls, then 200 `complete` with `result.result.signed_url` on
//! this server; a new export while one is running is refused, and so are queries (D1 blocks a
//! database while exporting); a database with a virtual table cannot be exported (`status:
//! "error"`, Cloudflare's message). `POST …/query` runs real SQL and answers rows as JSON objects
//! the way D1 does (integers and reals as JSON numbers, BLOBs as arrays of bytes). The export
//! is a real `sqlite3 .dump` of the file, reshaped like D1's (`PRAGMA defer_foreign_keys=TRUE;`,
//! `CREATE TABLE IF NOT EXISTS`, no `BEGIN`/`COMMIT`). `Authorization: Bearer` is checked on
//! API calls; every request is recorded. The server runs on its own thread and runtime, so
//! synchronous tests can use it; it stops when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::types::ValueRef;
use serde_json::{Value as Json, json};

/// A scripted misbehaviour of one database.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// 403 "Authentication error": a token without D1 permission.
    Forbidden,
    /// The next `times` API calls answer 429 with `Retry-After: retry_after` (seconds).
    RateLimited {
        times: u32,
        retry_after: u64,
    },
    /// The next `times` API calls answer 502.
    ServerError {
        times: u32,
    },
    /// The export never leaves `active`.
    StuckActive,
    /// The export ends with `status: "error"` and this message.
    ExportError(String),
    /// The signed URL answers 403 (expired).
    SignedUrlExpired,
    /// API calls answer 200 with an HTML page.
    MalformedJson,
    /// A `complete` export without `signed_url`.
    MissingSignedUrl,
    /// Every API call takes this long before answering.
    Slow(Duration),
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
    pub authorization: Option<String>,
}

struct Db {
    path: PathBuf,
    fault: Fault,
    /// `active` answers before an export completes.
    active_polls: u32,
    /// The running export: its bookmark and the `active` answers still to give.
    export: Option<(String, u32)>,
    /// When the running export was last polled.
    polled: Instant,
}

/// Like D1, an export that is no longer polled is cancelled (the real delay is longer).
const ABANDONED_AFTER: Duration = Duration::from_millis(250);

impl Db {
    fn cancel_if_abandoned(&mut self) {
        if self.export.is_some() && self.polled.elapsed() > ABANDONED_AFTER {
            self.export = None;
        }
    }
}

struct Shared {
    token: String,
    account: String,
    base: Mutex<String>,
    dbs: Mutex<HashMap<String, Db>>,
    downloads: Mutex<HashMap<String, Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
    bookmarks: Mutex<u64>,
}

pub struct D1Server {
    /// What goes into `[cloudflare] api_url`.
    pub api_url: String,
    pub account: String,
    pub token: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl D1Server {
    pub fn start() -> D1Server {
        let token = format!("cf-test-token-{}", uuid::Uuid::new_v4().simple());
        let account = "0123456789abcdef0123456789abcdef".to_string();
        let shared = Arc::new(Shared {
            token: token.clone(),
            account: account.clone(),
            base: Mutex::new(String::new()),
            dbs: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            bookmarks: Mutex::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        *shared.base.lock().unwrap() = format!("http://{addr}");
        let app = Router::new()
            .route(
                "/client/v4/accounts/{account}/d1/database/{id}/export",
                post(export),
            )
            .route(
                "/client/v4/accounts/{account}/d1/database/{id}/query",
                post(query),
            )
            .route("/signed/{key}", get(download))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        D1Server {
            api_url: format!("http://{addr}/client/v4"),
            account,
            token,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Serve the SQLite file at `path` as the D1 database `id`.
    pub fn add_database(&self, id: &str, path: &Path) {
        self.shared.dbs.lock().unwrap().insert(
            id.to_string(),
            Db {
                path: path.to_path_buf(),
                fault: Fault::None,
                active_polls: 2,
                export: None,
                polled: Instant::now(),
            },
        );
    }

    pub fn set_fault(&self, id: &str, fault: Fault) {
        self.shared.dbs.lock().unwrap().get_mut(id).unwrap().fault = fault;
    }

    /// How many `active` answers an export gives before it completes.
    pub fn set_active_polls(&self, id: &str, polls: u32) {
        self.shared
            .dbs
            .lock()
            .unwrap()
            .get_mut(id)
            .unwrap()
            .active_polls = polls;
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for D1Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cf_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "success": false,
            "errors": [{ "code": code, "message": message }],
            "messages": [],
            "result": null,
        })),
    )
        .into_response()
}

fn cf_ok(status: StatusCode, result: Json) -> Response {
    (
        status,
        axum::Json(json!({ "success": true, "errors": [], "messages": [], "result": result })),
    )
        .into_response()
}

/// Records the request, checks token, account and database, and applies the API-wide faults.
/// `Ok` carries the database's file and its fault.
async fn gate(
    s: &Shared,
    verb: &str,
    account: &str,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(PathBuf, Fault), Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.seen.lock().unwrap().push(Seen {
        method: "POST".into(),
        path: format!("/accounts/{account}/d1/database/{id}/{verb}"),
        body: String::from_utf8_lossy(body).into_owned(),
        authorization: authorization.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {}", s.token)) {
        return Err(cf_error(
            StatusCode::UNAUTHORIZED,
            10000,
            "Authentication error",
        ));
    }
    if account != s.account {
        return Err(cf_error(
            StatusCode::FORBIDDEN,
            10000,
            "Authentication error",
        ));
    }
    let (path, fault) = {
        let mut dbs = s.dbs.lock().unwrap();
        let Some(db) = dbs.get_mut(id) else {
            return Err(cf_error(
                StatusCode::NOT_FOUND,
                7404,
                &format!("The database {id} could not be found"),
            ));
        };
        let fault = db.fault.clone();
        match &mut db.fault {
            Fault::RateLimited { times, .. } | Fault::ServerError { times } if *times > 0 => {
                *times -= 1
            }
            _ => {}
        }
        (db.path.clone(), fault)
    };
    match fault {
        Fault::Forbidden => Err(cf_error(
            StatusCode::FORBIDDEN,
            10000,
            "Authentication error",
        )),
        Fault::RateLimited { times, retry_after } if times > 0 => {
            let mut r = cf_error(
                StatusCode::TOO_MANY_REQUESTS,
                971,
                "Please wait and consider throttling your request speed",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after.to_string().parse().unwrap(),
            );
            Err(r)
        }
        Fault::ServerError { times } if times > 0 => Err((
            StatusCode::BAD_GATEWAY,
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response()),
        Fault::MalformedJson => Err((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Just a moment...</body></html>",
        )
            .into_response()),
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            Ok((path, Fault::Slow(d)))
        }
        other => Ok((path, other)),
    }
}

async fn export(
    State(s): State<Arc<Shared>>,
    UrlPath((account, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (path, fault) = match gate(&s, "export", &account, &id, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(request) = serde_json::from_slice::<Json>(&body) else {
        return cf_error(StatusCode::BAD_REQUEST, 7400, "Invalid JSON body");
    };
    if request["output_format"] != "polling" {
        return cf_error(
            StatusCode::BAD_REQUEST,
            7400,
            "output_format must be \"polling\"",
        );
    }
    let current = request["current_bookmark"].as_str().map(str::to_string);
    let active = |bookmark: &str| {
        cf_ok(
            StatusCode::ACCEPTED,
            json!({
                "success": true,
                "type": "export",
                "at_bookmark": bookmark,
                "status": "active",
                "messages": ["Generating dump"],
            }),
        )
    };
    let bookmark = {
        let mut dbs = s.dbs.lock().unwrap();
        let db = dbs.get_mut(&id).unwrap();
        if current.is_none() {
            db.cancel_if_abandoned();
        }
        db.polled = Instant::now();
        match (&mut db.export, current) {
            (None, None) => {
                let mut n = s.bookmarks.lock().unwrap();
                *n += 1;
                let bookmark = format!("00000001-{:08x}-00004f7b-bookmark", *n);
                let stuck = fault == Fault::StuckActive;
                db.export = Some((bookmark.clone(), db.active_polls.saturating_sub(1)));
                if stuck || db.active_polls > 0 {
                    return active(&bookmark);
                }
                bookmark
            }
            (Some(_), None) => {
                return cf_error(
                    StatusCode::CONFLICT,
                    7500,
                    "Currently processing a long-running export.",
                );
            }
            (None, Some(_)) => {
                return cf_error(StatusCode::BAD_REQUEST, 7500, "No export in progress.");
            }
            (Some((b, _)), Some(c)) if *b != c => {
                return cf_error(StatusCode::BAD_REQUEST, 7500, "Unknown bookmark.");
            }
            (Some((b, left)), Some(_)) => {
                if fault == Fault::StuckActive || *left > 0 {
                    *left = left.saturating_sub(1);
                    return active(b);
                }
                b.clone()
            }
        }
    };
    // Done, one way or another: the database is free again.
    let finish = || s.dbs.lock().unwrap().get_mut(&id).unwrap().export = None;
    let failure = match &fault {
        Fault::ExportError(m) => Some(m.clone()),
        _ if has_virtual_table(&path) => {
            Some("cannot export databases with Virtual Tables (fts5)".to_string())
        }
        _ => None,
    };
    if let Some(message) = failure {
        finish();
        return cf_ok(
            StatusCode::OK,
            json!({
                "success": false,
                "type": "export",
                "at_bookmark": bookmark,
                "status": "error",
                "error": message,
                "messages": [],
            }),
        );
    }
    let sql = d1_style_dump(&path);
    let key = uuid::Uuid::new_v4().simple().to_string();
    s.downloads.lock().unwrap().insert(key.clone(), sql);
    finish();
    let base = s.base.lock().unwrap().clone();
    let mut file = json!({
        "filename": format!("{id}-{bookmark}.sql"),
        "signed_url": format!("{base}/signed/{key}?X-Amz-Signature=deadbeef"),
    });
    if fault == Fault::MissingSignedUrl {
        file.as_object_mut().unwrap().remove("signed_url");
    }
    cf_ok(
        StatusCode::OK,
        json!({
            "success": true,
            "type": "export",
            "at_bookmark": bookmark,
            "status": "complete",
            "result": file,
            "messages": ["Uploaded part 1", "Finished uploading"],
        }),
    )
}

fn has_virtual_table(path: &Path) -> bool {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

/// `sqlite3 .dump`, reshaped the way D1 exports look.
fn d1_style_dump(path: &Path) -> Vec<u8> {
    let out = Command::new(super::sqlite3::program())
        .arg(path)
        .arg(".dump")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut d1 = String::new();
    for line in text.split_inclusive('\n') {
        match line.trim_end() {
            "BEGIN TRANSACTION;" | "COMMIT;" => continue,
            "PRAGMA foreign_keys=OFF;" => d1.push_str("PRAGMA defer_foreign_keys=TRUE;\n"),
            _ => match line.strip_prefix("CREATE TABLE ") {
                Some(rest) if !rest.starts_with("IF NOT EXISTS") => {
                    d1.push_str("CREATE TABLE IF NOT EXISTS ");
                    d1.push_str(rest);
                }
                _ => d1.push_str(line),
            },
        }
    }
    d1.into_bytes()
}

async fn download(
    State(s): State<Arc<Shared>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    s.seen.lock().unwrap().push(Seen {
        method: "GET".into(),
        path: format!("/signed/{key}"),
        body: String::new(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let expired = s
        .dbs
        .lock()
        .unwrap()
        .values()
        .any(|d| d.fault == Fault::SignedUrlExpired);
    if expired {
        return (
            StatusCode::FORBIDDEN,
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        )
            .into_response();
    }
    match s.downloads.lock().unwrap().get(&key) {
        Some(sql) => (StatusCode::OK, sql.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such export").into_response(),
    }
}

async fn query(
    State(s): State<Arc<Shared>>,
    UrlPath((account, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (path, _) = match gate(&s, "query", &account, &id, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let exporting = {
        let mut dbs = s.dbs.lock().unwrap();
        let db = dbs.get_mut(&id).unwrap();
        db.cancel_if_abandoned();
        db.export.is_some()
    };
    if exporting {
        return cf_error(
            StatusCode::CONFLICT,
            7500,
            "D1_ERROR: Currently processing a long-running export.",
        );
    }
    let Ok(request) = serde_json::from_slice::<Json>(&body) else {
        return cf_error(StatusCode::BAD_REQUEST, 7400, "Invalid JSON body");
    };
    let Some(sql) = request["sql"].as_str() else {
        return cf_error(StatusCode::BAD_REQUEST, 7400, "sql is required");
    };
    let params: Vec<Json> = request["params"].as_array().cloned().unwrap_or_default();
    match run_sql(&path, sql, &params) {
        Ok(rows) => {
            let n = rows.len();
            cf_ok(
                StatusCode::OK,
                json!([{
                    "results": rows,
                    "success": true,
                    "meta": {
                        "changed_db": false,
                        "changes": 0,
                        "duration": 0.1,
                        "last_row_id": 0,
                        "rows_read": n,
                        "rows_written": 0,
                        "served_by_primary": true,
                        "size_after": std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                    },
                }]),
            )
        }
        Err(message) => cf_error(
            StatusCode::BAD_REQUEST,
            7500,
            &format!("{message}: SQLITE_ERROR"),
        ),
    }
}

fn run_sql(path: &Path, sql: &str, params: &[Json]) -> Result<Vec<Json>, String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    for (i, p) in params.iter().enumerate() {
        let i = i + 1;
        match p {
            Json::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null),
            Json::Bool(b) => stmt.raw_bind_parameter(i, *b as i64),
            Json::Number(n) if n.is_i64() => stmt.raw_bind_parameter(i, n.as_i64().unwrap()),
            Json::Number(n) => stmt.raw_bind_parameter(i, n.as_f64().unwrap()),
            Json::String(t) => stmt.raw_bind_parameter(i, t.as_str()),
            other => stmt.raw_bind_parameter(i, other.to_string()),
        }
        .map_err(|e| e.to_string())?;
    }
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut obj = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match row.get_ref(i).map_err(|e| e.to_string())? {
                ValueRef::Null => Json::Null,
                ValueRef::Integer(n) => json!(n),
                // JSON has no infinities: D1 (JavaScript) sends null, as serde_json does.
                ValueRef::Real(r) => json!(r),
                ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => json!(b),
            };
            obj.insert(name.clone(), v);
        }
        out.push(Json::Object(obj));
    }
    Ok(out)
}
