//! A stand-in for the Cloudflare D1 REST API (TESTING.md, "The D1 REST API stand-in"), backed by
//! real SQLite files, with scriptable failure modes.
//!
//! It follows the documented shapes, not Patina's client: `POST …/export` with
//! `{"output_format":"polling","current_bookmark"?}` answers 202 `active` (with `at_bookmark`)
//! for a configurable number of polls, then 200 `complete` with `result.result.signed_url` on
//! this server; a new export while one is running is refused, and so are queries (D1 blocks a
//! database while exporting: "Currently processing a long-running export").
//!
//! The export is the real thing: the file is copied into a local D1 (wrangler + miniflare, the
//! code production D1 runs; `support::wrangler`) and exported with `wrangler d1 export
//! --local`, so the client sees exactly the bytes — and the lossy quirks, and the refusal of
//! virtual tables (`status: "error"` with the exporter's own message) — that D1 produces.
//! `POST …/query` runs real SQL on the same file and answers rows as JSON objects the way D1
//! does: numbers are JavaScript doubles (integers beyond 2^53 lose digits, `3.0` is `3`, `-0.0`
//! is `0`, infinities are `null`), BLOBs arrays of bytes; D1's math functions that the client
//! uses (`atan2`) are provided. `Authorization: Bearer` is checked on API calls; every request
//! is recorded. The server runs on its own thread and runtime, so synchronous tests can use it;
//! it stops when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// The next `times` API calls answer "Currently processing a long-running export" (D1
    /// while an export runs, or for a while after it refused one).
    Busy {
        times: u32,
    },
    /// The export file is cut after this fraction of its lines (a whole number of statements).
    TruncatedAtStatement(f64),
    /// The export file is cut in the middle of a statement.
    TruncatedMidStatement,
    /// Lines of the export file containing this text are left out (rows silently lost).
    DropsLines(String),
    /// The import's ingest ends with `status: "error"` and this message.
    ImportRejected(String),
    /// The upload URL answers with an ETag that is not the file's MD5.
    UploadDamaged,
    /// The import never leaves `active`.
    ImportStuck,
    /// The token may read but not write: the import answers 403.
    ReadOnlyToken,
    /// The download of the export breaks off halfway (the signed URL expired while streaming).
    DownloadBreaksOff,
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
    pub authorization: Option<String>,
}

/// A running import's outcome once D1 has applied the file: statements run, or D1's error.
type ImportOutcome = Arc<Mutex<Option<Result<u64, String>>>>;

/// An export's dump, or the exporter's error.
type Generated = Result<Bytes, String>;

/// What identifies a database file's content for [`D1Server::reuse_exports`]: size and mtime.
type Stamp = (u64, std::time::SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

struct Db {
    path: PathBuf,
    /// The local D1 that exports a copy of `path`.
    local: Arc<super::wrangler::LocalD1>,
    fault: Fault,
    /// `active` answers before an export completes.
    active_polls: u32,
    /// The running export: its bookmark and the `active` answers still to give.
    export: Option<(String, u32)>,
    /// The dump the running export is generating, once it is done.
    generated: Arc<Mutex<Option<Generated>>>,
    /// When the running export was last polled.
    polled: Instant,
    /// Whether an export of an unchanged file serves the dump generated last time.
    reuse: bool,
    /// The last dump generated, and the file it was generated from.
    last_dump: Arc<Mutex<Option<(Stamp, Bytes)>>>,
    /// The running import: its bookmark and its outcome (statements run, or D1's error).
    import: Option<(String, ImportOutcome)>,
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
    downloads: Mutex<HashMap<String, Bytes>>,
    /// Files PUT to import upload URLs, by file name.
    uploads: Mutex<HashMap<String, Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
    bookmarks: Mutex<u64>,
    /// Wrangler projects of the local D1 exporters.
    exporters: tempfile::TempDir,
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
            uploads: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            bookmarks: Mutex::new(0),
            exporters: tempfile::tempdir().unwrap(),
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
            .route(
                "/client/v4/accounts/{account}/d1/database/{id}/import",
                post(import),
            )
            .route("/upload/{filename}", axum::routing::put(upload))
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
        let local = super::wrangler::LocalD1::new(&self.shared.exporters.path().join(id));
        self.shared.dbs.lock().unwrap().insert(
            id.to_string(),
            Db {
                path: path.to_path_buf(),
                local: Arc::new(local),
                fault: Fault::None,
                active_polls: 2,
                export: None,
                generated: Arc::new(Mutex::new(None)),
                polled: Instant::now(),
                reuse: false,
                last_dump: Arc::new(Mutex::new(None)),
                import: None,
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

    /// From now on, an export of `id` whose file has not changed (same size and mtime) serves
    /// the dump the local D1 generated last time instead of running the exporter again, still
    /// through the whole flow (`active` polls, `complete`, the signed URL). For the benchmark:
    /// a 200 MB export takes the local exporter about a minute, which is the stand-in's cost,
    /// not the client's. (Tests want every export made afresh, so only the benchmark calls it.)
    #[allow(dead_code)]
    pub fn reuse_exports(&self, id: &str) {
        self.shared.dbs.lock().unwrap().get_mut(id).unwrap().reuse = true;
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
            Fault::RateLimited { times, .. }
            | Fault::ServerError { times }
            | Fault::Busy { times }
                if *times > 0 =>
            {
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
        Fault::Busy { times } if times > 0 => Err(cf_error(
            StatusCode::CONFLICT,
            7500,
            "D1_ERROR: Currently processing a long-running export.",
        )),
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
    // Like D1, the dump is generated in the background while polls answer `active`.
    let (bookmark, generated) = {
        let mut dbs = s.dbs.lock().unwrap();
        let db = dbs.get_mut(&id).unwrap();
        if current.is_none() {
            db.cancel_if_abandoned();
        }
        db.polled = Instant::now();
        let generated = Arc::clone(&db.generated);
        let bookmark = match (&mut db.export, current) {
            (None, None) => {
                let mut n = s.bookmarks.lock().unwrap();
                *n += 1;
                let bookmark = format!("00000001-{:08x}-00004f7b-bookmark", *n);
                db.export = Some((bookmark.clone(), db.active_polls));
                *generated.lock().unwrap() = None;
                let slot = Arc::clone(&generated);
                match &fault {
                    Fault::ExportError(m) => *slot.lock().unwrap() = Some(Err(m.clone())),
                    _ => {
                        let reused = match (db.reuse, stamp(&path)) {
                            (true, Some(now)) => db
                                .last_dump
                                .lock()
                                .unwrap()
                                .as_ref()
                                .filter(|(then, _)| *then == now)
                                .map(|(_, dump)| dump.clone()),
                            _ => None,
                        };
                        if let Some(dump) = reused {
                            *slot.lock().unwrap() = Some(Ok(dump));
                        } else {
                            let local = Arc::clone(&db.local);
                            let last_dump = Arc::clone(&db.last_dump);
                            let path = path.clone();
                            tokio::task::spawn_blocking(move || {
                                let before = stamp(&path);
                                local.replace_with(&path);
                                let dump = local
                                    .export()
                                    .map(Bytes::from)
                                    .map_err(|e| exporter_message(&e.0));
                                if let (Ok(dump), Some(before)) = (&dump, before) {
                                    *last_dump.lock().unwrap() = Some((before, dump.clone()));
                                }
                                *slot.lock().unwrap() = Some(dump);
                            });
                        }
                    }
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
            (Some((b, _)), Some(_)) => b.clone(),
        };
        let (_, left) = db.export.as_mut().unwrap();
        let done = generated.lock().unwrap().is_some();
        if fault == Fault::StuckActive || *left > 0 || !done {
            *left = left.saturating_sub(1);
            return active(&bookmark);
        }
        (bookmark, generated)
    };
    // Done, one way or another: the database is free again.
    let finish = || s.dbs.lock().unwrap().get_mut(&id).unwrap().export = None;
    let exported = generated.lock().unwrap().take().unwrap();
    let sql = match exported {
        Ok(sql) => sql,
        Err(message) => {
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
    };
    let sql = match &fault {
        Fault::TruncatedAtStatement(fraction) => {
            let lines: Vec<&[u8]> = sql.split_inclusive(|b| *b == b'\n').collect();
            let keep = ((lines.len() as f64) * *fraction) as usize;
            Bytes::from(lines[..keep].concat())
        }
        Fault::DropsLines(pattern) => Bytes::from(
            sql.split_inclusive(|b| *b == b'\n')
                .filter(|line| !String::from_utf8_lossy(line).contains(pattern.as_str()))
                .collect::<Vec<_>>()
                .concat(),
        ),
        Fault::TruncatedMidStatement => {
            let mut cut = sql.len() * 2 / 3;
            while cut > 0 && sql[cut - 1] == b'\n' {
                cut -= 1;
            }
            sql.slice(..cut)
        }
        _ => sql,
    };
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

/// The import API (what `wrangler d1 execute --remote --file` uses): `init` answers an upload
/// URL on this server, `ingest` applies the uploaded file with the local D1 (so D1's own rules
/// decide) in the background, `poll` reports `active` until it is done. Like D1, a file that
/// fails leaves the database as it was.
async fn import(
    State(s): State<Arc<Shared>>,
    UrlPath((account, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (path, fault) = match gate(&s, "import", &account, &id, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if fault == Fault::ReadOnlyToken {
        return cf_error(StatusCode::FORBIDDEN, 10000, "Authentication error");
    }
    let Ok(request) = serde_json::from_slice::<Json>(&body) else {
        return cf_error(StatusCode::BAD_REQUEST, 7400, "Invalid JSON body");
    };
    let base = s.base.lock().unwrap().clone();
    match request["action"].as_str() {
        Some("init") => {
            let Some(etag) = request["etag"].as_str() else {
                return cf_error(StatusCode::BAD_REQUEST, 7400, "etag is required");
            };
            let filename = format!("{id}-{etag}.sql");
            cf_ok(
                StatusCode::OK,
                json!({
                    "success": true,
                    "filename": filename,
                    "upload_url": format!("{base}/upload/{filename}?X-Amz-Signature=cafe"),
                }),
            )
        }
        Some("ingest") => {
            let (Some(etag), Some(filename)) =
                (request["etag"].as_str(), request["filename"].as_str())
            else {
                return cf_error(
                    StatusCode::BAD_REQUEST,
                    7400,
                    "etag and filename are required",
                );
            };
            let Some(sql) = s.uploads.lock().unwrap().get(filename).cloned() else {
                return cf_error(StatusCode::BAD_REQUEST, 7400, "No such upload");
            };
            if md5_hex(&sql) != etag {
                return cf_error(StatusCode::BAD_REQUEST, 7400, "Etag mismatch");
            }
            let mut n = s.bookmarks.lock().unwrap();
            *n += 1;
            let bookmark = format!("00000002-{:08x}-00004f7b-import", *n);
            drop(n);
            let outcome = Arc::new(Mutex::new(None));
            let mut dbs = s.dbs.lock().unwrap();
            let db = dbs.get_mut(&id).unwrap();
            db.import = Some((bookmark.clone(), Arc::clone(&outcome)));
            match fault {
                Fault::ImportRejected(m) => *outcome.lock().unwrap() = Some(Err(m)),
                Fault::ImportStuck => {}
                _ => {
                    let local = Arc::clone(&db.local);
                    tokio::task::spawn_blocking(move || {
                        local.replace_with(&path);
                        let file = path.with_extension(format!(
                            "import-{}.sql",
                            uuid::Uuid::new_v4().simple()
                        ));
                        std::fs::write(&file, &sql).unwrap();
                        let applied = local.execute_file(&file);
                        let _ = std::fs::remove_file(&file);
                        let result = match applied {
                            Ok(()) => {
                                for suffix in ["", "-wal", "-shm", "-journal"] {
                                    let _ =
                                        std::fs::remove_file(format!("{}{suffix}", path.display()));
                                }
                                let c = rusqlite::Connection::open(local.sqlite_path()).unwrap();
                                c.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
                                    .unwrap();
                                let statements =
                                    String::from_utf8_lossy(&sql).matches(";\n").count();
                                Ok(statements as u64)
                            }
                            Err(e) => Err(e.0),
                        };
                        *outcome.lock().unwrap() = Some(result);
                    });
                }
            }
            cf_ok(
                StatusCode::OK,
                json!({
                    "success": true,
                    "type": "import",
                    "at_bookmark": bookmark,
                    "status": "active",
                    "messages": ["Uploaded file", "Ingesting"],
                }),
            )
        }
        Some("poll") => {
            let current = request["current_bookmark"].as_str().unwrap_or_default();
            let running = s.dbs.lock().unwrap().get(&id).unwrap().import.clone();
            let Some((bookmark, outcome)) = running.filter(|(b, _)| b == current) else {
                return cf_error(StatusCode::BAD_REQUEST, 7500, "No import in progress.");
            };
            let done = outcome.lock().unwrap().clone();
            match done {
                None => cf_ok(
                    StatusCode::OK,
                    json!({ "success": true, "type": "import", "at_bookmark": bookmark, "status": "active", "messages": ["Ingesting"] }),
                ),
                Some(Ok(queries)) => cf_ok(
                    StatusCode::OK,
                    json!({
                        "success": true,
                        "type": "import",
                        "at_bookmark": bookmark,
                        "status": "complete",
                        "messages": ["Import complete"],
                        "result": {
                            "final_bookmark": bookmark,
                            "num_queries": queries,
                            "meta": { "duration": 1.0, "rows_read": 0, "rows_written": 0, "size_after": 0 },
                        },
                    }),
                ),
                Some(Err(message)) => cf_ok(
                    StatusCode::OK,
                    json!({
                        "success": true,
                        "type": "import",
                        "at_bookmark": bookmark,
                        "status": "error",
                        "errors": [message],
                        "messages": [],
                    }),
                ),
            }
        }
        _ => cf_error(
            StatusCode::BAD_REQUEST,
            7400,
            "action must be init, ingest or poll",
        ),
    }
}

/// The upload URL of an import: stores the file and answers its MD5 as the ETag, as R2 does.
async fn upload(
    State(s): State<Arc<Shared>>,
    UrlPath(filename): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.seen.lock().unwrap().push(Seen {
        method: "PUT".into(),
        path: format!("/upload/{filename}"),
        body: String::new(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let damaged = s
        .dbs
        .lock()
        .unwrap()
        .values()
        .any(|d| d.fault == Fault::UploadDamaged);
    let etag = if damaged {
        md5_hex(b"something else")
    } else {
        md5_hex(&body)
    };
    s.uploads.lock().unwrap().insert(filename, body.to_vec());
    (StatusCode::OK, [(header::ETAG, format!("\"{etag}\""))]).into_response()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// The exporter's own error line from wrangler's output ("D1 Export error: …").
fn exporter_message(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.find("D1 Export error").map(|i| l[i..].trim().to_string()))
        .unwrap_or_else(|| panic!("the local D1 export failed: {output}"))
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
    let breaks_off = s
        .dbs
        .lock()
        .unwrap()
        .values()
        .any(|d| d.fault == Fault::DownloadBreaksOff);
    match s.downloads.lock().unwrap().get(&key) {
        Some(sql) if breaks_off => {
            let half = Bytes::copy_from_slice(&sql[..sql.len() / 2]);
            let parts: Vec<Result<Bytes, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("signed URL expired"))];
            axum::body::Body::from_stream(futures::stream::iter(parts)).into_response()
        }
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
    add_math_functions(&conn);
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
                ValueRef::Integer(n) => js_number(n as f64),
                ValueRef::Real(r) => js_number(r),
                ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => json!(b),
            };
            obj.insert(name.clone(), v);
        }
        out.push(Json::Object(obj));
    }
    Ok(out)
}

/// A number as D1 (JavaScript's `JSON.stringify`) writes it: a double, integral values without
/// a fraction (`3.0` → `3`, `-0.0` → `0`, 2^63 - 1 → `9223372036854776000`), infinities as `null`.
fn js_number(x: f64) -> Json {
    if !x.is_finite() {
        return Json::Null;
    }
    if x == x.trunc() && x.abs() < 1e21 {
        // Shortest round-trip digits, padded with zeros as JavaScript prints them.
        let sci = format!("{:e}", x.abs());
        let (mantissa, exp) = sci.split_once('e').unwrap();
        let exp: usize = exp.parse().unwrap();
        let digits = mantissa.replace('.', "");
        let mut text = if x < 0.0 {
            "-".to_string()
        } else {
            String::new()
        };
        text.push_str(&digits);
        text.push_str(&"0".repeat(exp + 1 - digits.len()));
        if text == "-0" {
            text = "0".into();
        }
        return serde_json::from_str(&text).unwrap();
    }
    json!(x)
}

/// D1's SQLite has the math functions; the bundled one here does not. The client needs `atan2`
/// (to tell `-0.0` from `0.0`), with SQLite's conversions of its arguments.
fn add_math_functions(conn: &rusqlite::Connection) {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "atan2",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let number = |i: usize| -> rusqlite::Result<Option<f64>> {
                Ok(match ctx.get_raw(i) {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n as f64),
                    ValueRef::Real(r) => Some(r),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Some(
                        std::str::from_utf8(t)
                            .ok()
                            .and_then(|t| t.trim().parse().ok())
                            .unwrap_or(0.0),
                    ),
                })
            };
            Ok(match (number(0)?, number(1)?) {
                (Some(y), Some(x)) => Some(y.atan2(x)),
                _ => None,
            })
        },
    )
    .unwrap();
}
