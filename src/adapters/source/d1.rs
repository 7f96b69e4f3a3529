//! Cloudflare D1 source: one database read through the D1 REST API and materialised into a
//! scratch SQLite file, which the SQLite source then dumps like any other.
//!
//! Why a scratch file (and not a second dump writer): the dump Patina stores for a D1 database
//! is then byte-for-byte the format of a SQLite source, with the same header, the same
//! deterministic order and the same manifest facts (tables, row counts, schema hash), so
//! restore, verify, retention and the status page need no D1 case at all. The cost is disk space
//! for one copy of the database under `{state_dir}/scratch`, removed when the [`Snapshot`] is
//! dropped (success, failure or panic alike). Memory stays bounded in both modes.
//!
//! Two ways in, chosen per database with `mode` (DESIGN §6):
//!
//! - **export** (default): `POST /accounts/{account}/d1/database/{id}/export` with
//!   `{"output_format":"polling"}`, then the same call with `current_bookmark` until the status is
//!   `complete`; the `signed_url` is downloaded as a stream into a scratch `.sql` file (the
//!   Cloudflare token is never sent to that URL) and replayed with [`sqlite::load`], which takes
//!   D1's `PRAGMA defer_foreign_keys` and `CREATE TABLE IF NOT EXISTS` as they are. The export is
//!   one consistent snapshot and its `at_bookmark` goes into the manifest (usable with
//!   `wrangler d1 time-travel restore --bookmark`). While an export runs, D1 serves no other
//!   queries on that database; Cloudflare cancels an export that is no longer polled, so an
//!   export still `active` after [`Options::export_limit`] is abandoned by simply stopping.
//! - **query**: `sqlite_master` and `PRAGMA table_list` / `table_xinfo` through `/query`, then
//!   each table in pages of [`Options::page_size`] rows — keyset on the rowid (`WHERE rowid > ?`)
//!   for rowid tables, `LIMIT/OFFSET` ordered by the primary key for `WITHOUT ROWID` tables. Every
//!   value travels as `typeof()` plus an exact text form (integers as decimal text, REAL as
//!   `printf('%!.17g')`, TEXT and BLOB as hex), because D1's JSON loses integers beyond 2^53,
//!   infinities and the bytes of BLOBs. Pages are separate requests: unlike an export this is
//!   not a single point-in-time snapshot while the database is being written to, and there is no
//!   bookmark. It is the fallback for databases the export refuses (virtual tables such as
//!   FTS5): an export that fails for that reason is retried in query mode automatically.
//!
//! Every call carries `Authorization: Bearer`, a timeout, and is retried on 429 (honouring
//! `Retry-After`), 5xx and transport errors with exponential backoff, within one retry budget per
//! database backup ([`Options::retry_budget`], [`Options::max_retries`]). 401/403, 404, an
//! `error` status, a refused signed URL and malformed responses become a [`D1Error`] naming the
//! database. The token never appears in an error: reqwest errors are stripped of their URL and
//! any text from the server is scrubbed of it.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use tokio::io::AsyncWriteExt;

use crate::dump::quote_ident;
use crate::manifest::Fidelity;
use crate::policy::{Cloudflare, D1Mode, Secret};
use crate::source::sqlite::{self, SourceError};

/// The permission a token needs to back up, in the words of the Cloudflare dashboard.
pub const TOKEN_PERMISSION: &str = "\"D1 Read\" (Account → D1 → Read)";
/// The permission a token needs to restore into D1 (`patina restore --to-d1`).
pub const EDIT_PERMISSION: &str = "\"D1 Edit\" (Account → D1 → Edit)";

/// Timings and limits of the client. The defaults suit the real API; tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    /// Limit for one API call (the download uses [`Options::read_timeout`] instead).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while downloading the export.
    pub read_timeout: Duration,
    /// Pause between two polls of an `active` export.
    pub poll_interval: Duration,
    /// An export still `active` after this long is abandoned.
    pub export_limit: Duration,
    /// Total time one database backup may spend waiting before retries.
    pub retry_budget: Duration,
    /// Retries (not counting first attempts) one database backup may make.
    pub max_retries: u32,
    /// First backoff after a 5xx or transport error; doubles up to [`Options::max_backoff`].
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Rows per `/query` page in query mode.
    pub page_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            export_limit: Duration::from_secs(30 * 60),
            retry_budget: Duration::from_secs(5 * 60),
            max_retries: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            page_size: 500,
        }
    }
}

/// Why reading a D1 database failed. Every message names the Patina database.
#[derive(Debug, thiserror::Error)]
pub enum D1Error {
    #[error(
        "read d1 database {database}: Cloudflare refused the API token (HTTP {status}{detail}) — the token needs the {TOKEN_PERMISSION} permission on this account; check api_token and account_id in [cloudflare]"
    )]
    Unauthorized {
        database: String,
        status: u16,
        detail: String,
    },
    #[error(
        "read d1 database {database}: Cloudflare has no D1 database {id} in this account (HTTP 404) — check id in patina.toml against `wrangler d1 list` and account_id in [cloudflare]"
    )]
    NotFound { database: String, id: String },
    #[error(
        "read d1 database {database}: {action} failed after {attempts} attempts ({last}) — Cloudflare is rate limiting or unavailable; the next scheduled run tries again"
    )]
    RetriesExhausted {
        database: String,
        action: &'static str,
        attempts: u32,
        last: String,
    },
    #[error("read d1 database {database}: {action}: {message}")]
    Api {
        database: String,
        action: &'static str,
        message: String,
    },
    #[error("read d1 database {database}: the export failed: {message}{hint}")]
    ExportFailed {
        database: String,
        message: String,
        hint: String,
    },
    #[error(
        "read d1 database {database}: the export was still active after {waited} and was abandoned (Cloudflare cancels an export that is no longer polled; while it runs the database serves no other queries) — retry at a quieter time, or set mode = \"query\" for this database"
    )]
    ExportTimeout { database: String, waited: String },
    #[error(
        "read d1 database {database}: download of the export was refused (HTTP {status}) — the signed URL has probably expired; the next run exports again"
    )]
    SignedUrlRefused { database: String, status: u16 },
    #[error(
        "read d1 database {database}: unexpected response from the D1 API ({action}): {detail}"
    )]
    Malformed {
        database: String,
        action: &'static str,
        detail: String,
    },
    #[error("read d1 database {database}: {action}: {detail}")]
    Http {
        database: String,
        action: &'static str,
        detail: String,
    },
    #[error(
        "restore into d1 database {id} ({database}): Cloudflare refused the API token (HTTP {status}) — importing needs the {EDIT_PERMISSION} permission on this account; nothing was changed"
    )]
    ImportUnauthorized {
        database: String,
        id: String,
        status: u16,
    },
    #[error(
        "restore into d1 database {id} ({database}): D1 refused the import and left the database as it was: {message}"
    )]
    ImportFailed {
        database: String,
        id: String,
        message: String,
    },
    #[error(
        "restore into d1 database {id} ({database}): the import was still running after {waited}; check the database with `wrangler d1 info` before retrying"
    )]
    ImportTimeout {
        database: String,
        id: String,
        waited: String,
    },
    #[error("read d1 database {database}: scratch file {}: {source}", .path.display())]
    Scratch {
        database: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read d1 database {database}: {source}")]
    Load {
        database: String,
        #[source]
        source: SourceError,
    },
    #[error("read d1 database {database}: write scratch copy {}: {message}", .path.display())]
    Materialise {
        database: String,
        path: PathBuf,
        message: String,
    },
}

/// What to read.
#[derive(Debug, Clone)]
pub struct SnapshotRequest<'a> {
    /// The Patina database name (for messages and scratch file names).
    pub database: &'a str,
    /// The D1 database id (UUID).
    pub id: &'a str,
    pub mode: D1Mode,
    /// Where scratch files go (`{state_dir}/scratch`); created if missing.
    pub scratch_dir: &'a Path,
    /// Tables not read at all in query mode (export mode downloads them; the dump leaves them out).
    pub exclude_tables: &'a [String],
}

/// A D1 database copied into a scratch SQLite file; the files are removed on drop.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    bookmark: Option<String>,
    mode: D1Mode,
    files: Vec<PathBuf>,
    fidelity: Fidelity,
    fallback: Option<String>,
}

impl Snapshot {
    /// The scratch SQLite file holding the copy.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The D1 bookmark the export was taken at (export mode only).
    pub fn bookmark(&self) -> Option<&str> {
        self.bookmark.as_deref()
    }

    /// The mode that produced the copy (query after an automatic fallback).
    pub fn mode(&self) -> D1Mode {
        self.mode
    }

    /// What was checked and repaired, for the manifest.
    pub fn fidelity(&self) -> &Fidelity {
        &self.fidelity
    }

    /// Why export mode fell back to query mode for this run, if it did.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for f in &self.files {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = f.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
        }
    }
}

/// A client for one account's D1 databases.
pub struct Client {
    http: reqwest::Client,
    api_url: String,
    account_id: String,
    token: Secret,
    options: Options,
}

/// Per-backup state: the database's name and id and what is left of the retry budget.
struct Call<'a> {
    database: &'a str,
    id: &'a str,
    retries: u32,
    waited: Duration,
}

impl Client {
    pub fn new(cloudflare: &Cloudflare, options: Options) -> Result<Client, D1Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("patina/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| D1Error::Http {
                database: String::new(),
                action: "create HTTP client",
                detail: e.without_url().to_string(),
            })?;
        Ok(Client {
            http,
            api_url: cloudflare.api_url.trim_end_matches('/').to_string(),
            account_id: cloudflare.account_id.clone(),
            token: cloudflare.api_token.clone(),
            options,
        })
    }

    /// Copy the database into a scratch SQLite file, in the requested mode, and check the copy
    /// (DESIGN §12). In export mode the database's schema is read first: a database with a
    /// virtual table is read in query mode at once (D1 refuses to export it, and a refused export
    /// can keep the database busy for a while). An export that does not load is replaced by
    /// query mode for this run; one that loads is checked value class by value class against
    /// `/query`, and what it carried wrongly is repaired.
    pub async fn snapshot(&self, req: &SnapshotRequest<'_>) -> Result<Snapshot, D1Error> {
        std::fs::create_dir_all(req.scratch_dir).map_err(|source| D1Error::Scratch {
            database: req.database.to_string(),
            path: req.scratch_dir.to_path_buf(),
            source,
        })?;
        let mut call = Call {
            database: req.database,
            id: req.id,
            retries: 0,
            waited: Duration::ZERO,
        };
        match req.mode {
            D1Mode::Query => self.query_copy(&mut call, req, None).await,
            D1Mode::Export => {
                let objects = self.read_schema(&mut call).await?;
                if let Some(v) = objects.iter().find(|o| {
                    o.kind == "table" && sqlite::is_virtual(o.sql.as_deref().unwrap_or(""))
                }) {
                    let reason = format!(
                        "the database has the virtual table {:?}, which D1's export refuses",
                        v.name
                    );
                    tracing::info!(
                        database = req.database,
                        "{reason}; reading it in query mode — set mode = \"query\" to say so in the policy"
                    );
                    return self.query_copy(&mut call, req, Some(reason)).await;
                }
                match self.export_copy(&mut call, req).await {
                    Ok(snapshot) => self.check_export(&mut call, req, &objects, snapshot).await,
                    Err(D1Error::ExportFailed { message, .. }) if refuses_virtual(&message) => {
                        let reason = format!("the export refused the database ({message})");
                        tracing::warn!(
                            database = req.database,
                            "{reason}; reading it in query mode instead"
                        );
                        self.query_copy(&mut call, req, Some(reason)).await
                    }
                    Err(e @ D1Error::Load { .. }) => {
                        let reason = format!("the export did not load: {e}");
                        tracing::warn!(
                            database = req.database,
                            "{reason}; reading it in query mode instead"
                        );
                        self.query_copy(&mut call, req, Some(reason)).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn endpoint(&self, id: &str, verb: &str) -> String {
        format!(
            "{}/accounts/{}/d1/database/{}/{verb}",
            self.api_url, self.account_id, id
        )
    }

    /// Replaces the token in text that came from the server.
    fn scrub(&self, text: &str) -> String {
        let token = self.token.expose();
        let text = if token.is_empty() {
            text.to_string()
        } else {
            text.replace(token, "***")
        };
        let mut short: String = text.chars().take(300).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        short
    }

    /// Sends a request built by `make`, retrying 429, 5xx and transport errors within the
    /// budget. Returns the first other response, whatever its status.
    async fn send(
        &self,
        call: &mut Call<'_>,
        action: &'static str,
        make: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response, D1Error> {
        let mut backoff = self.options.backoff;
        let mut attempts = 1u32;
        loop {
            let (last, wait) = match make().send().await {
                Ok(r) if r.status().as_u16() == 429 => {
                    let wait = retry_after(r.headers()).unwrap_or(backoff);
                    (
                        format!("HTTP 429, Retry-After {}", crate::human::wait(wait)),
                        wait,
                    )
                }
                Ok(r) if r.status().is_server_error() => {
                    (format!("HTTP {}", r.status().as_u16()), backoff)
                }
                Ok(r) => return Ok(r),
                Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => {
                    (transport(&e), backoff)
                }
                Err(e) => {
                    return Err(D1Error::Http {
                        database: call.database.to_string(),
                        action,
                        detail: transport(&e),
                    });
                }
            };
            let over_budget = call.waited + wait > self.options.retry_budget;
            if call.retries >= self.options.max_retries || over_budget {
                return Err(D1Error::RetriesExhausted {
                    database: call.database.to_string(),
                    action,
                    attempts,
                    last: if over_budget {
                        format!("{last}: beyond the retry budget")
                    } else {
                        last
                    },
                });
            }
            tracing::debug!(database = call.database, action, "retrying after {last}");
            tokio::time::sleep(wait).await;
            call.retries += 1;
            call.waited += wait;
            attempts += 1;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// One API call: POST `body` to `verb`, check the status and the Cloudflare envelope, and
    /// return `result`.
    async fn api(
        &self,
        call: &mut Call<'_>,
        action: &'static str,
        verb: &str,
        body: &Json,
    ) -> Result<Json, D1Error> {
        let url = self.endpoint(call.id, verb);
        let make = || {
            self.http
                .post(&url)
                .bearer_auth(self.token.expose())
                .timeout(self.options.request_timeout)
                .json(body)
        };
        let mut backoff = self.options.backoff;
        let (status, text, envelope, messages) = loop {
            let response = self.send(call, action, &make).await?;
            let status = response.status().as_u16();
            let text = response.text().await.map_err(|e| D1Error::Http {
                database: call.database.to_string(),
                action,
                detail: transport(&e),
            })?;
            let envelope: Option<Envelope> = serde_json::from_str(&text).ok();
            let messages = envelope
                .as_ref()
                .map(|e| self.scrub(&e.error_text()))
                .unwrap_or_default();
            // D1 answers every call this way while an export (ours, or one it refused) is
            // still running: wait for it like for a rate limit, within the same budget.
            let busy = envelope.as_ref().is_some_and(|e| !e.success)
                && messages
                    .to_ascii_lowercase()
                    .contains("long-running export");
            if !busy {
                break (status, text, envelope, messages);
            }
            if call.retries >= self.options.max_retries
                || call.waited + backoff > self.options.retry_budget
            {
                return Err(D1Error::RetriesExhausted {
                    database: call.database.to_string(),
                    action,
                    attempts: call.retries + 1,
                    last: format!("HTTP {status}: {messages}"),
                });
            }
            tracing::debug!(
                database = call.database,
                action,
                "D1 is busy with an export; retrying"
            );
            tokio::time::sleep(backoff).await;
            call.retries += 1;
            call.waited += backoff;
            backoff = (backoff * 2).min(self.options.max_backoff);
        };
        let detail = if messages.is_empty() {
            String::new()
        } else {
            format!(": {messages}")
        };
        match status {
            401 | 403 => {
                return Err(D1Error::Unauthorized {
                    database: call.database.to_string(),
                    status,
                    detail,
                });
            }
            404 => {
                return Err(D1Error::NotFound {
                    database: call.database.to_string(),
                    id: call.id.to_string(),
                });
            }
            _ => {}
        }
        let Some(envelope) = envelope else {
            return Err(D1Error::Malformed {
                database: call.database.to_string(),
                action,
                detail: format!(
                    "HTTP {status}, not a Cloudflare API response: {:?}",
                    self.scrub(&text)
                ),
            });
        };
        if !(200..300).contains(&status) || !envelope.success {
            return Err(D1Error::Api {
                database: call.database.to_string(),
                action,
                message: if messages.is_empty() {
                    format!("HTTP {status} without an error message")
                } else {
                    format!("HTTP {status}: {messages}")
                },
            });
        }
        envelope.result.ok_or_else(|| D1Error::Malformed {
            database: call.database.to_string(),
            action,
            detail: "the response has no \"result\"".into(),
        })
    }

    // ---- export mode ----

    async fn export_copy(
        &self,
        call: &mut Call<'_>,
        req: &SnapshotRequest<'_>,
    ) -> Result<Snapshot, D1Error> {
        let (bookmark, signed_url) = self.export(call).await?;
        let stem = req.scratch_dir.join(format!(
            "d1-{}-{}",
            req.database,
            uuid::Uuid::new_v4().simple()
        ));
        let sql_path = stem.with_extension("sql");
        let db_path = stem.with_extension("db");
        let snapshot = Snapshot {
            path: db_path.clone(),
            bookmark: Some(bookmark),
            mode: D1Mode::Export,
            files: vec![sql_path.clone(), db_path.clone()],
            fidelity: Fidelity::default(),
            fallback: None,
        };
        self.download(call, &signed_url, &sql_path).await?;
        let database = req.database.to_string();
        let loaded = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&sql_path).map_err(|source| D1Error::Scratch {
                database: database.clone(),
                path: sql_path.clone(),
                source,
            })?;
            // rusqlite's SQLite enforces foreign keys by default and a D1 export only defers
            // them (each statement commits on its own here): switch them off, as the sqlite3
            // shell has them, so tables load in any order.
            let reader = std::io::Read::chain(&b"PRAGMA foreign_keys=OFF;\n"[..], file);
            let loaded = sqlite::load(&mut BufReader::with_capacity(1 << 16, reader), &db_path)
                .map_err(|source| D1Error::Load {
                    database: database.clone(),
                    source,
                });
            let _ = std::fs::remove_file(&sql_path);
            loaded
        })
        .await;
        match loaded {
            Ok(Ok(_)) => Ok(snapshot),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(D1Error::Materialise {
                database: req.database.to_string(),
                path: snapshot.path.clone(),
                message: join.to_string(),
            }),
        }
    }

    /// Runs the polling export flow; returns the bookmark and the signed URL.
    async fn export(&self, call: &mut Call<'_>) -> Result<(String, String), D1Error> {
        const ACTION: &str = "export";
        let started = Instant::now();
        let mut bookmark: Option<String> = None;
        let malformed = |call: &Call<'_>, detail: String| D1Error::Malformed {
            database: call.database.to_string(),
            action: ACTION,
            detail,
        };
        loop {
            let mut body = json!({ "output_format": "polling" });
            if let Some(b) = &bookmark {
                body["current_bookmark"] = Json::String(b.clone());
            }
            let result = self.api(call, ACTION, "export", &body).await?;
            let result: ExportResult = serde_json::from_value(result)
                .map_err(|e| malformed(call, format!("export result: {e}")))?;
            if let Some(b) = result.at_bookmark {
                bookmark = Some(b);
            }
            match result.status.as_deref() {
                Some("complete") => {
                    let url = result.result.and_then(|r| r.signed_url).ok_or_else(|| {
                        malformed(call, "a complete export without result.signed_url".into())
                    })?;
                    let bookmark = bookmark.ok_or_else(|| {
                        malformed(call, "a complete export without at_bookmark".into())
                    })?;
                    return Ok((bookmark, url));
                }
                Some("error") => {
                    let message = self.scrub(
                        result
                            .error
                            .as_deref()
                            .unwrap_or("Cloudflare gave no reason"),
                    );
                    let hint = if refuses_virtual(&message) {
                        " — the export cannot read virtual tables; set mode = \"query\" for this database"
                    } else {
                        ""
                    };
                    return Err(D1Error::ExportFailed {
                        database: call.database.to_string(),
                        message,
                        hint: hint.into(),
                    });
                }
                Some("active") => {
                    if bookmark.is_none() {
                        return Err(malformed(
                            call,
                            "an active export without at_bookmark".into(),
                        ));
                    }
                    if started.elapsed() >= self.options.export_limit {
                        return Err(D1Error::ExportTimeout {
                            database: call.database.to_string(),
                            waited: crate::human::wait(self.options.export_limit),
                        });
                    }
                    tokio::time::sleep(self.options.poll_interval).await;
                }
                other => {
                    return Err(malformed(call, format!("export status {other:?}")));
                }
            }
        }
    }

    /// Streams the signed URL into `target`. The Cloudflare token is not sent there.
    async fn download(
        &self,
        call: &mut Call<'_>,
        signed_url: &str,
        target: &Path,
    ) -> Result<(), D1Error> {
        const ACTION: &str = "download the export";
        let make = || self.http.get(signed_url);
        let response = self.send(call, ACTION, &make).await?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 | 404 | 410 => {
                return Err(D1Error::SignedUrlRefused {
                    database: call.database.to_string(),
                    status,
                });
            }
            _ => {
                return Err(D1Error::Http {
                    database: call.database.to_string(),
                    action: ACTION,
                    detail: format!("HTTP {status}"),
                });
            }
        }
        let scratch_err = |source| D1Error::Scratch {
            database: call.database.to_string(),
            path: target.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(target).await.map_err(scratch_err)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| D1Error::Http {
                database: call.database.to_string(),
                action: ACTION,
                detail: format!("interrupted: {}", transport(&e)),
            })?;
            file.write_all(&chunk).await.map_err(scratch_err)?;
        }
        file.flush().await.map_err(scratch_err)?;
        Ok(())
    }

    // ---- query mode ----

    /// Runs one statement through `/query`; returns its rows as JSON objects.
    async fn query(
        &self,
        call: &mut Call<'_>,
        action: &'static str,
        sql: &str,
    ) -> Result<Vec<Map<String, Json>>, D1Error> {
        let result = self
            .api(call, action, "query", &json!({ "sql": sql, "params": [] }))
            .await?;
        let malformed = |detail: String| D1Error::Malformed {
            database: call.database.to_string(),
            action,
            detail,
        };
        let mut results: Vec<QueryResult> =
            serde_json::from_value(result).map_err(|e| malformed(format!("query result: {e}")))?;
        if results.len() != 1 {
            return Err(malformed(format!(
                "{} result sets for one statement",
                results.len()
            )));
        }
        let one = results.pop().expect("one result");
        if one.success == Some(false) {
            return Err(D1Error::Api {
                database: call.database.to_string(),
                action,
                message: "the statement failed".into(),
            });
        }
        Ok(one.results)
    }

    async fn query_copy(
        &self,
        call: &mut Call<'_>,
        req: &SnapshotRequest<'_>,
        fallback: Option<String>,
    ) -> Result<Snapshot, D1Error> {
        let path = req.scratch_dir.join(format!(
            "d1-{}-{}.db",
            req.database,
            uuid::Uuid::new_v4().simple()
        ));
        let mut snapshot = Snapshot {
            path: path.clone(),
            bookmark: None,
            mode: D1Mode::Query,
            files: vec![path.clone()],
            fidelity: Fidelity {
                checked: true,
                repaired_values: 0,
                tables_from_query: Vec::new(),
                fallback: fallback.clone(),
            },
            fallback,
        };
        // A blocking writer thread applies what the fetcher sends; the channel bounds memory
        // to a couple of pages.
        let (tx, rx) = tokio::sync::mpsc::channel::<Op>(2);
        let writer = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || write_scratch(&path, rx))
        };
        let fetched = self.fetch_all(call, req, &tx).await;
        drop(tx);
        snapshot.fidelity.tables_from_query = settle(req.database, &path, fetched, writer.await)?;
        Ok(snapshot)
    }

    /// `sqlite_master` through `/query`.
    async fn read_schema(&self, call: &mut Call<'_>) -> Result<Vec<sqlite::SchemaObject>, D1Error> {
        const SCHEMA: &str = "read the schema";
        let rows = self
            .query(
                call,
                SCHEMA,
                "SELECT type, name, tbl_name, sql FROM sqlite_master",
            )
            .await?;
        let mut objects = Vec::with_capacity(rows.len());
        for row in &rows {
            let text = |k: &str| row.get(k).and_then(Json::as_str).map(str::to_string);
            let (Some(kind), Some(name), Some(tbl_name)) =
                (text("type"), text("name"), text("tbl_name"))
            else {
                return Err(D1Error::Malformed {
                    database: call.database.to_string(),
                    action: SCHEMA,
                    detail: format!("sqlite_master row {row:?}"),
                });
            };
            objects.push(sqlite::SchemaObject {
                kind,
                name,
                tbl_name,
                sql: text("sql"),
            });
        }
        Ok(objects)
    }

    /// Checks a loaded export against the database and repairs what the export carried
    /// wrongly (DESIGN §12). Per table: one `/query` finds the rows holding values D1's exporter
    /// cannot write exactly; up to [`REPAIR_LIMIT`] such rows of a table keyed by an INTEGER
    /// PRIMARY KEY are read exactly and written over their scratch copies, any other table with
    /// such values is re-read whole in query mode. Then row counts and the bytes of every TEXT
    /// and BLOB are compared with D1's; a table that differs (a truncated export, text the
    /// exporter re-encoded, or a table written to since the export) is re-read in query mode.
    async fn check_export(
        &self,
        call: &mut Call<'_>,
        req: &SnapshotRequest<'_>,
        d1_objects: &[sqlite::SchemaObject],
        mut snapshot: Snapshot,
    ) -> Result<Snapshot, D1Error> {
        let path = snapshot.path.clone();
        let exclude = req.exclude_tables.to_vec();
        let scratch_tables = tokio::task::spawn_blocking(move || scratch_tables(&path, &exclude))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|message| D1Error::Materialise {
                database: req.database.to_string(),
                path: snapshot.path.clone(),
                message,
            })?;
        let mut d1_tables: Vec<sqlite::SchemaObject> = d1_objects.to_vec();
        sqlite::select_dumped(&mut d1_tables, req.exclude_tables, |_| false);
        let d1_names: Vec<&str> = d1_tables
            .iter()
            .filter(|o| o.kind == "table")
            .map(|o| o.name.as_str())
            .collect();
        let scratch_names: Vec<&str> = scratch_tables.iter().map(|t| t.name.as_str()).collect();
        if d1_names != scratch_names {
            let reason =
                format!("the export holds the tables {scratch_names:?}, the database {d1_names:?}");
            tracing::warn!(
                database = req.database,
                "{reason}; reading it in query mode instead"
            );
            drop(snapshot);
            return self.query_copy(call, req, Some(reason)).await;
        }

        let (tx, rx) = tokio::sync::mpsc::channel::<Op>(2);
        let writer = {
            let path = snapshot.path.clone();
            tokio::task::spawn_blocking(move || write_scratch(&path, rx))
        };
        let checked = self
            .check_tables(call, req, &scratch_tables, &tx, &mut snapshot.fidelity)
            .await;
        drop(tx);
        settle(req.database, &snapshot.path, checked, writer.await)?;
        snapshot.fidelity.checked = true;
        Ok(snapshot)
    }

    async fn check_tables(
        &self,
        call: &mut Call<'_>,
        req: &SnapshotRequest<'_>,
        tables: &[ScratchTable],
        tx: &tokio::sync::mpsc::Sender<Op>,
        fidelity: &mut Fidelity,
    ) -> Result<(), D1Error> {
        const ACTION: &str = "check the export";
        let writer_gone = || D1Error::Materialise {
            database: req.database.to_string(),
            path: req.scratch_dir.to_path_buf(),
            message: "the scratch writer stopped".into(),
        };
        let malformed = |detail: String| D1Error::Malformed {
            database: req.database.to_string(),
            action: ACTION,
            detail,
        };
        for table in tables {
            let q = quote_ident(&table.name);
            let mut recopy: Option<String> = None;
            let mut repaired = 0u64;
            // 1. Values the exporter cannot carry.
            let hazards = hazard_conditions(&table.columns);
            if !hazards.is_empty() {
                let flags: Vec<String> = hazards
                    .iter()
                    .enumerate()
                    .map(|(i, (_, c))| format!("({c}) AS \"h{i}\""))
                    .collect();
                let any = hazards
                    .iter()
                    .map(|(_, c)| format!("({c})"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let key = table
                    .key
                    .as_deref()
                    .map(|k| format!("CAST({} AS TEXT)", quote_ident(k)))
                    .unwrap_or_else(|| "NULL".into());
                let sql = format!(
                    "SELECT {key} AS \"k\", {} FROM {q} WHERE {any} LIMIT {}",
                    flags.join(", "),
                    REPAIR_LIMIT + 1
                );
                let rows = self.query(call, ACTION, &sql).await?;
                if !rows.is_empty() {
                    let mut keys = Vec::with_capacity(rows.len());
                    let mut values = 0u64;
                    let mut in_key = false;
                    for row in &rows {
                        for (i, (column, _)) in hazards.iter().enumerate() {
                            if truthy(row.get(&format!("h{i}"))) {
                                values += 1;
                                in_key |= table.key.as_deref() == Some(column.as_str());
                            }
                        }
                        if let Some(k) = row
                            .get("k")
                            .and_then(Json::as_str)
                            .and_then(|k| k.parse::<i64>().ok())
                        {
                            keys.push(k);
                        }
                    }
                    recopy = if table.key.is_none() {
                        Some(format!(
                            "{values}+ values the export cannot carry, and no INTEGER PRIMARY KEY to repair rows by"
                        ))
                    } else if rows.len() > REPAIR_LIMIT {
                        Some(format!(
                            "more than {REPAIR_LIMIT} rows hold values the export cannot carry"
                        ))
                    } else if in_key || keys.len() != rows.len() {
                        Some("its INTEGER PRIMARY KEY holds values the export cannot carry".into())
                    } else {
                        let key = table.key.clone().expect("checked above");
                        let mut all_updated = true;
                        for chunk in keys.chunks(self.options.page_size.max(1) as usize) {
                            let exact = self
                                .read_rows(call, &table.name, &table.columns, &key, chunk)
                                .await?;
                            if exact.len() != chunk.len() {
                                all_updated = false;
                                break;
                            }
                            let (reply, answer) = tokio::sync::oneshot::channel();
                            tx.send(Op::Repair {
                                table: table.name.clone(),
                                columns: table.columns.iter().map(|c| c.name.clone()).collect(),
                                key: key.clone(),
                                rows: exact,
                                reply,
                            })
                            .await
                            .map_err(|_| writer_gone())?;
                            if !answer.await.map_err(|_| writer_gone())? {
                                all_updated = false;
                                break;
                            }
                        }
                        repaired = values;
                        (!all_updated).then(|| {
                            "a row to repair is missing from the export (changed since?)".into()
                        })
                    };
                }
            }
            // 2. Row count and the bytes of every TEXT and BLOB, D1 against the scratch copy.
            if recopy.is_none() {
                let sql = fingerprint_sql(&table.name, &table.columns);
                let rows = self.query(call, ACTION, &sql).await?;
                let remote = rows
                    .first()
                    .and_then(|r| Some((text_i64(r.get("n"))?, text_i64(r.get("b"))?)))
                    .ok_or_else(|| {
                        malformed(format!("fingerprint of {:?}: {rows:?}", table.name))
                    })?;
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send(Op::Fingerprint { sql, reply })
                    .await
                    .map_err(|_| writer_gone())?;
                let local = answer.await.map_err(|_| writer_gone())?;
                if local != Some(remote) {
                    recopy = Some(format!(
                        "the export's copy differs from the database (rows and text/blob bytes {local:?} against {remote:?})"
                    ));
                }
            }
            match recopy {
                None => fidelity.repaired_values += repaired,
                Some(reason) => {
                    tracing::warn!(
                        database = req.database,
                        table = table.name.as_str(),
                        "re-reading the table in query mode: {reason}"
                    );
                    tx.send(Op::Exec(format!("DELETE FROM {q}")))
                        .await
                        .map_err(|_| writer_gone())?;
                    self.copy_table(call, &table.name, table.without_rowid, tx, &writer_gone)
                        .await?;
                    fidelity.tables_from_query.push(table.name.clone());
                }
            }
        }
        Ok(())
    }

    /// The exact values of the rows of `table` whose `key` column is in `keys`.
    async fn read_rows(
        &self,
        call: &mut Call<'_>,
        table: &str,
        columns: &[ScratchColumn],
        key: &str,
        keys: &[i64],
    ) -> Result<Vec<(i64, Vec<Cell>)>, D1Error> {
        const ACTION: &str = "repair values of the export";
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let list = keys
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT CAST({k} AS TEXT) AS \"k\", {} FROM {} WHERE {k} IN ({list})",
            exact_columns(&names),
            quote_ident(table),
            k = quote_ident(key),
        );
        let rows = self.query(call, ACTION, &sql).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let k = row
                .get("k")
                .and_then(Json::as_str)
                .and_then(|k| k.parse::<i64>().ok());
            let cells = decode_row(row, names.len());
            match (k, cells) {
                (Some(k), Some(cells)) => out.push((k, cells)),
                _ => {
                    return Err(D1Error::Malformed {
                        database: call.database.to_string(),
                        action: ACTION,
                        detail: format!("row of {table:?}"),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn fetch_all(
        &self,
        call: &mut Call<'_>,
        req: &SnapshotRequest<'_>,
        tx: &tokio::sync::mpsc::Sender<Op>,
    ) -> Result<Vec<String>, D1Error> {
        let malformed = |action: &'static str, detail: String| D1Error::Malformed {
            database: req.database.to_string(),
            action,
            detail,
        };
        // The writer only stops early on an error, which `query_copy` reports.
        let writer_gone = || D1Error::Materialise {
            database: req.database.to_string(),
            path: req.scratch_dir.to_path_buf(),
            message: "the scratch writer stopped".into(),
        };

        const SCHEMA: &str = "read the schema";
        let mut objects = self.read_schema(call).await?;
        let table_list = self.query(call, SCHEMA, "PRAGMA table_list").await?;
        let listed = |name: &str| {
            table_list.iter().find(|r| {
                r.get("schema").and_then(Json::as_str) == Some("main")
                    && r.get("name").and_then(Json::as_str) == Some(name)
            })
        };
        let is_shadow = |name: &str| {
            listed(name)
                .and_then(|r| r.get("type"))
                .and_then(Json::as_str)
                == Some("shadow")
        };
        let has_sequence = objects.iter().any(|o| o.name == "sqlite_sequence");
        sqlite::select_dumped(&mut objects, req.exclude_tables, is_shadow);

        let send = |op| async move { tx.send(op).await.map_err(|_| writer_gone()) };
        let mut virtuals = Vec::new();
        let mut copied = Vec::new();
        for o in objects.iter().filter(|o| o.kind == "table") {
            let sql = o.sql.clone().unwrap_or_default();
            if sqlite::is_virtual(&sql) {
                virtuals.push((o.name.clone(), sql));
                continue;
            }
            send(Op::Exec(sql)).await?;
            let without_rowid = listed(&o.name)
                .and_then(|r| r.get("wr"))
                .and_then(Json::as_i64)
                .unwrap_or(0)
                != 0;
            self.copy_table(call, &o.name, without_rowid, tx, &writer_gone)
                .await?;
            copied.push(o.name.clone());
        }
        for (name, sql) in virtuals {
            send(Op::VirtualTable { name, sql }).await?;
        }
        for kind in ["index", "view", "trigger"] {
            for o in objects.iter().filter(|o| o.kind == kind) {
                send(Op::Exec(o.sql.clone().unwrap_or_default())).await?;
            }
        }
        if has_sequence {
            const SEQ: &str = "read sqlite_sequence";
            let rows = self
                .query(
                    call,
                    SEQ,
                    "SELECT name, CAST(seq AS TEXT) AS seq FROM sqlite_sequence ORDER BY name",
                )
                .await?;
            let mut seqs = Vec::new();
            for row in rows {
                let name = row.get("name").and_then(Json::as_str);
                let seq = row
                    .get("seq")
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse::<i64>().ok());
                match (name, seq) {
                    (Some(n), Some(s)) if copied.iter().any(|c| c == n) => {
                        seqs.push((n.to_string(), s))
                    }
                    (Some(_), Some(_)) => {}
                    _ => return Err(malformed(SEQ, format!("sqlite_sequence row {row:?}"))),
                }
            }
            send(Op::Sequence(seqs)).await?;
        }
        Ok(copied)
    }

    /// Pages through one table, sending each page to the writer.
    async fn copy_table(
        &self,
        call: &mut Call<'_>,
        table: &str,
        without_rowid: bool,
        tx: &tokio::sync::mpsc::Sender<Op>,
        writer_gone: &(dyn Fn() -> D1Error + Sync),
    ) -> Result<(), D1Error> {
        const ACTION: &str = "read a table";
        let malformed = |detail: String| D1Error::Malformed {
            database: call.database.to_string(),
            action: ACTION,
            detail,
        };
        let info = self
            .query(
                call,
                ACTION,
                &format!("PRAGMA table_xinfo({})", quote_ident(table)),
            )
            .await?;
        let mut columns = Vec::new();
        let mut all_names = Vec::new();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for row in &info {
            let Some(name) = row.get("name").and_then(Json::as_str) else {
                return Err(malformed(format!("table_xinfo row {row:?}")));
            };
            let hidden = row.get("hidden").and_then(Json::as_i64).unwrap_or(0);
            let pk_pos = row.get("pk").and_then(Json::as_i64).unwrap_or(0);
            all_names.push(name.to_ascii_lowercase());
            if pk_pos > 0 {
                pk.push((pk_pos, name.to_string()));
            }
            // 2 and 3: generated columns, recomputed on insert.
            if hidden != 2 && hidden != 3 {
                columns.push(name.to_string());
            }
        }
        if columns.is_empty() {
            return Err(malformed(format!("no columns for table {table:?}")));
        }
        pk.sort();
        let rowid = if without_rowid {
            None
        } else {
            ["rowid", "_rowid_", "oid"]
                .into_iter()
                .find(|alias| !all_names.iter().any(|c| c == alias))
        };
        let mut select = String::from("SELECT ");
        if let Some(r) = rowid {
            select.push_str(&format!("CAST({r} AS TEXT) AS \"k\", "));
        }
        select.push_str(&exact_columns(&columns));
        select.push_str(" FROM ");
        select.push_str(&quote_ident(table));
        let page = self.options.page_size.max(1);
        let mut after: Option<i64> = None;
        let mut offset = 0u64;
        loop {
            let sql = match (rowid, after) {
                (Some(r), None) => format!("{select} ORDER BY {r} LIMIT {page}"),
                (Some(r), Some(k)) => {
                    format!("{select} WHERE {r} > {k} ORDER BY {r} LIMIT {page}")
                }
                (None, _) => {
                    let order = if pk.is_empty() {
                        String::new()
                    } else {
                        let cols: Vec<String> = pk.iter().map(|(_, c)| quote_ident(c)).collect();
                        format!(" ORDER BY {}", cols.join(","))
                    };
                    format!("{select}{order} LIMIT {page} OFFSET {offset}")
                }
            };
            let rows = self.query(call, ACTION, &sql).await?;
            let n = rows.len();
            let mut values = Vec::with_capacity(n);
            for row in &rows {
                if rowid.is_some() {
                    let k = row
                        .get("k")
                        .and_then(Json::as_str)
                        .and_then(|k| k.parse::<i64>().ok())
                        .ok_or_else(|| malformed(format!("row of {table:?} without its rowid")))?;
                    after = Some(k);
                }
                values.push(
                    decode_row(row, columns.len())
                        .ok_or_else(|| malformed(format!("a value of a row of {table:?}")))?,
                );
            }
            if !values.is_empty() {
                tx.send(Op::Rows {
                    table: table.to_string(),
                    columns: columns.clone(),
                    rows: values,
                })
                .await
                .map_err(|_| writer_gone())?;
            }
            offset += n as u64;
            if n < page as usize {
                return Ok(());
            }
        }
    }
}

/// What an import into D1 did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Statements D1 executed.
    pub queries: u64,
    /// The bookmark the database is at after the import (for Time Travel).
    pub bookmark: Option<String>,
}

impl Client {
    /// The user tables of D1 database `id` (neither `sqlite_*` nor D1's own `_cf_*`).
    pub async fn user_tables(&self, database: &str, id: &str) -> Result<Vec<String>, D1Error> {
        let mut call = Call {
            database,
            id,
            retries: 0,
            waited: Duration::ZERO,
        };
        let mut objects = self.read_schema(&mut call).await?;
        sqlite::select_dumped(&mut objects, &[], |_| false);
        Ok(objects
            .into_iter()
            .filter(|o| o.kind == "table")
            .map(|o| o.name)
            .collect())
    }

    /// Runs the SQL file at `file` on D1 database `id` through the import API, as
    /// `wrangler d1 execute --remote --file` does: `init` with the file's MD5 → PUT the file to
    /// the `upload_url` (checking the ETag D1 answers) → `ingest` → `poll` until `complete` or
    /// `error`. D1 applies the file as one unit: on error the database is left as it was.
    pub async fn import(&self, database: &str, id: &str, file: &Path) -> Result<Imported, D1Error> {
        const ACTION: &str = "import";
        let mut call = Call {
            database,
            id,
            retries: 0,
            waited: Duration::ZERO,
        };
        let scratch = |source| D1Error::Scratch {
            database: database.to_string(),
            path: file.to_path_buf(),
            source,
        };
        let etag = {
            use md5::Digest;
            let mut hasher = md5::Md5::new();
            let mut f = std::fs::File::open(file).map_err(scratch)?;
            std::io::copy(&mut f, &mut hasher).map_err(scratch)?;
            hex::encode(hasher.finalize())
        };
        let malformed = |detail: String| D1Error::Malformed {
            database: database.to_string(),
            action: ACTION,
            detail,
        };
        let init = self
            .api(
                &mut call,
                ACTION,
                "import",
                &json!({ "action": "init", "etag": etag }),
            )
            .await
            .map_err(|e| match e {
                // A token that can read (the checks before passed) but not write.
                D1Error::Unauthorized { status, .. } => D1Error::ImportUnauthorized {
                    database: database.to_string(),
                    id: id.to_string(),
                    status,
                },
                other => other,
            })?;
        let mut state = match init.get("upload_url").and_then(Json::as_str) {
            Some(url) => {
                let filename = init
                    .get("filename")
                    .and_then(Json::as_str)
                    .ok_or_else(|| {
                        malformed("init answered an upload_url without a filename".into())
                    })?
                    .to_string();
                self.upload(&mut call, url, file, &etag).await?;
                self.api(
                    &mut call,
                    ACTION,
                    "import",
                    &json!({ "action": "ingest", "etag": etag, "filename": filename }),
                )
                .await?
            }
            // D1 already has this very file: `init` answered like a poll.
            None => init,
        };
        let started = Instant::now();
        loop {
            let status: ImportStatus = serde_json::from_value(state.clone())
                .map_err(|e| malformed(format!("import status {state}: {e}")))?;
            if status.success == Some(false) || status.status.as_deref() == Some("error") {
                let mut why: Vec<String> = status.errors.clone();
                why.extend(status.error.clone());
                if why.is_empty() {
                    why = status.messages.clone();
                }
                return Err(D1Error::ImportFailed {
                    database: database.to_string(),
                    id: id.to_string(),
                    message: self.scrub(&why.join("; ")),
                });
            }
            match status.status.as_deref() {
                Some("complete") => {
                    let result = status.result.unwrap_or_default();
                    return Ok(Imported {
                        queries: result.num_queries.unwrap_or(0),
                        bookmark: result.final_bookmark,
                    });
                }
                Some("active") | None => {
                    if started.elapsed() >= self.options.export_limit {
                        return Err(D1Error::ImportTimeout {
                            database: database.to_string(),
                            id: id.to_string(),
                            waited: crate::human::wait(self.options.export_limit),
                        });
                    }
                    let bookmark = status
                        .at_bookmark
                        .ok_or_else(|| malformed("an active import without at_bookmark".into()))?;
                    tokio::time::sleep(self.options.poll_interval).await;
                    state = self
                        .api(
                            &mut call,
                            ACTION,
                            "import",
                            &json!({ "action": "poll", "current_bookmark": bookmark }),
                        )
                        .await?;
                }
                Some(other) => return Err(malformed(format!("import status {other:?}"))),
            }
        }
    }

    /// PUTs `file` to the import's upload URL (no Cloudflare token there) and checks the ETag.
    async fn upload(
        &self,
        call: &mut Call<'_>,
        url: &str,
        file: &Path,
        etag: &str,
    ) -> Result<(), D1Error> {
        const ACTION: &str = "upload the restore file";
        let size = std::fs::metadata(file)
            .map_err(|source| D1Error::Scratch {
                database: call.database.to_string(),
                path: file.to_path_buf(),
                source,
            })?
            .len();
        let make = || {
            let body = match std::fs::File::open(file) {
                Ok(f) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
                    tokio::fs::File::from_std(f),
                )),
                Err(_) => reqwest::Body::from(Vec::new()),
            };
            self.http
                .put(url)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(body)
        };
        let response = self.send(call, ACTION, &make).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(D1Error::Http {
                database: call.database.to_string(),
                action: ACTION,
                detail: format!(
                    "HTTP {status} — the upload URL may have expired; run the restore again"
                ),
            });
        }
        let answered = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string());
        if answered.as_deref() != Some(etag) {
            return Err(D1Error::Http {
                database: call.database.to_string(),
                action: ACTION,
                detail: format!(
                    "the stored file's ETag {answered:?} is not the file's MD5 {etag} — the upload was damaged; run the restore again"
                ),
            });
        }
        Ok(())
    }

    /// Compares every ordinary table of the SQLite file `expected` with D1 database `id`: row
    /// count and the bytes of every TEXT and BLOB value. Returns the differences (empty when
    /// they agree).
    pub async fn compare(
        &self,
        database: &str,
        id: &str,
        expected: &Path,
    ) -> Result<Vec<String>, D1Error> {
        let mut call = Call {
            database,
            id,
            retries: 0,
            waited: Duration::ZERO,
        };
        let path = expected.to_path_buf();
        let tables = tokio::task::spawn_blocking(move || {
            let tables = scratch_tables(&path, &[])?;
            let conn = Connection::open(&path).map_err(|e| e.to_string())?;
            tables
                .into_iter()
                .map(|t| {
                    let sql = fingerprint_sql(&t.name, &t.columns);
                    let local: (String, String) = conn
                        .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(|e| e.to_string())?;
                    Ok((t.name, sql, local))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|message| D1Error::Materialise {
            database: database.to_string(),
            path: expected.to_path_buf(),
            message,
        })?;
        let mut problems = Vec::new();
        for (table, sql, (rows, bytes)) in tables {
            let remote = self
                .query(&mut call, "compare after the import", &sql)
                .await?;
            let got = remote
                .first()
                .map(|r| (text_i64(r.get("n")), text_i64(r.get("b"))));
            let want = (rows.parse().ok(), bytes.parse().ok());
            if got != Some(want) {
                problems.push(format!(
                    "table {table:?}: {rows} rows / {bytes} text+blob bytes expected, D1 has {}",
                    match got {
                        Some((Some(r), Some(b))) => format!("{r} rows / {b} bytes"),
                        _ => "no such table".into(),
                    }
                ));
            }
        }
        Ok(problems)
    }
}

/// An import's state, as `init` (for a known file), `ingest` and `poll` answer it.
#[derive(Debug, Default, Deserialize)]
struct ImportStatus {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    at_bookmark: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    result: Option<ImportResult>,
}

#[derive(Debug, Default, Deserialize)]
struct ImportResult {
    #[serde(default)]
    num_queries: Option<u64>,
    #[serde(default)]
    final_bookmark: Option<String>,
}

/// The Cloudflare API envelope.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Option<Json>,
}

impl Envelope {
    fn error_text(&self) -> String {
        self.errors
            .iter()
            .map(|e| match e.code {
                Some(c) => format!("{} (code {c})", e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ExportResult {
    #[serde(default)]
    at_bookmark: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    result: Option<ExportFile>,
}

#[derive(Deserialize)]
struct ExportFile {
    #[serde(default)]
    signed_url: Option<String>,
}

#[derive(Deserialize)]
struct QueryResult {
    #[serde(default)]
    results: Vec<Map<String, Json>>,
    #[serde(default)]
    success: Option<bool>,
}

/// A value read in query mode, decoded from its exact text form.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(*i),
            Cell::Real(r) => ValueRef::Real(*r),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn decode(kind: Option<&Json>, value: Option<&Json>) -> Option<Cell> {
    let text = || value.and_then(Json::as_str);
    Some(match kind?.as_str()? {
        "null" => Cell::Null,
        "integer" => Cell::Integer(text()?.parse().ok()?),
        "real" => Cell::Real(match value? {
            Json::Number(n) => n.as_f64()?,
            Json::String(s) => parse_real(s)?,
            _ => return None,
        }),
        "text" => Cell::Text(hex::decode(text()?).ok()?),
        "blob" => Cell::Blob(hex::decode(text()?).ok()?),
        _ => return None,
    })
}

/// A REAL sent as text: `-0.0`, `Inf` / `-Inf` (or any decimal).
fn parse_real(s: &str) -> Option<f64> {
    match s.trim_start_matches('+') {
        "Inf" | "inf" | "Infinity" => Some(f64::INFINITY),
        "-Inf" | "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// The select list that reads `columns` exactly through D1's JSON: for each column `typeof()` as
/// `t{i}` and an exact form as `v{i}` — integers as decimal text (JSON numbers are doubles),
/// REALs as JSON numbers (JavaScript writes the shortest form that reads back exactly; D1's own
/// `printf('%!.17g')` is off by one ulp for some large doubles, measured against wrangler's
/// local D1), except `-0.0` (whose sign JSON, `printf` and `CAST` all drop; told apart by
/// `atan2`) and ±Inf (JSON `null`) as text, TEXT and BLOB as hex.
fn exact_columns(columns: &[String]) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let q = quote_ident(c);
            format!(
                "typeof({q}) AS \"t{i}\", CASE typeof({q}) WHEN 'null' THEN NULL \
                 WHEN 'integer' THEN CAST({q} AS TEXT) \
                 WHEN 'real' THEN CASE WHEN {q} = 0 AND atan2({q}, -1) < 0 THEN '-0.0' \
                 WHEN {q} = 9e999 THEN 'Inf' WHEN {q} = -9e999 THEN '-Inf' ELSE {q} END \
                 ELSE hex({q}) END AS \"v{i}\""
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row read with [`exact_columns`].
fn decode_row(row: &Map<String, Json>, columns: usize) -> Option<Vec<Cell>> {
    (0..columns)
        .map(|i| decode(row.get(&format!("t{i}")), row.get(&format!("v{i}"))))
        .collect()
}

/// Tables with more rows to repair than this are re-read whole in query mode.
const REPAIR_LIMIT: usize = 1000;

/// JavaScript's largest exactly representable integer, 2^53 - 1.
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// A column of a table in the scratch copy.
#[derive(Debug, Clone)]
struct ScratchColumn {
    name: String,
    /// The column has REAL affinity (declared type with REAL, FLOA or DOUB and no INT).
    real_affinity: bool,
}

/// A table of the scratch copy as the check needs it.
#[derive(Debug, Clone)]
struct ScratchTable {
    name: String,
    /// Stored columns (generated ones are recomputed and left out).
    columns: Vec<ScratchColumn>,
    /// The INTEGER PRIMARY KEY column rows are repaired by, if the table has one.
    key: Option<String>,
    without_rowid: bool,
}

/// The dumped ordinary tables of the scratch copy, in name order.
fn scratch_tables(path: &Path, exclude: &[String]) -> Result<Vec<ScratchTable>, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    let mut objects = sqlite::schema_objects(&conn, exclude).map_err(|e| e.to_string())?;
    objects.retain(|o| o.kind == "table" && !sqlite::is_virtual(o.sql.as_deref().unwrap_or("")));
    let mut tables = Vec::with_capacity(objects.len());
    for o in objects {
        let err = |e: rusqlite::Error| e.to_string();
        let without_rowid = sqlite::without_rowid(&conn, &o.name).map_err(err)?;
        let all = sqlite::table_columns(&conn, &o.name).map_err(err)?;
        let columns = all
            .iter()
            .filter(|c| !c.is_generated())
            .map(|c| {
                let d = c.decl.to_ascii_uppercase();
                let real_affinity = !d.contains("INT")
                    && !d.contains("CHAR")
                    && !d.contains("CLOB")
                    && !d.contains("TEXT")
                    && !d.contains("BLOB")
                    && (d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB"));
                ScratchColumn {
                    name: c.name.clone(),
                    real_affinity,
                }
            })
            .collect();
        let key = match sqlite::primary_key(&all).as_slice() {
            [c] if !without_rowid && c.decl.eq_ignore_ascii_case("INTEGER") => Some(c.name.clone()),
            _ => None,
        };
        tables.push(ScratchTable {
            name: o.name,
            columns,
            key,
            without_rowid,
        });
    }
    Ok(tables)
}

/// Per column, the SQL condition under which a value cannot pass through D1's exporter
/// exactly: integers beyond ±(2^53 - 1) (a JavaScript double), `-0.0` (written `0`), ±Inf,
/// integral REALs outside REAL affinity (written `3`, read back as INTEGER), text holding a
/// backslash followed by `n` or `r` (the exporter's own escape) or a NUL byte.
fn hazard_conditions(columns: &[ScratchColumn]) -> Vec<(String, String)> {
    columns
        .iter()
        .map(|c| {
            let q = quote_ident(&c.name);
            let integral = if c.real_affinity {
                String::new()
            } else {
                format!(" OR {q} = round({q})")
            };
            let cond = format!(
                "(typeof({q}) = 'integer' AND ({q} > {MAX_SAFE_INTEGER} OR {q} < -{MAX_SAFE_INTEGER})) \
                 OR (typeof({q}) = 'real' AND (({q} = 0 AND atan2({q}, -1) < 0) OR {q} IN (9e999, -9e999){integral})) \
                 OR (typeof({q}) = 'text' AND (instr({q}, '\\n') > 0 OR instr({q}, '\\r') > 0 OR instr(CAST({q} AS BLOB), X'00') > 0))"
            );
            (c.name.clone(), cond)
        })
        .collect()
}

/// Row count (`n`) and total bytes of every TEXT and BLOB value (`b`) of a table, both as
/// text; the same statement runs on D1 and on the scratch copy.
fn fingerprint_sql(table: &str, columns: &[ScratchColumn]) -> String {
    let bytes = columns
        .iter()
        .map(|c| {
            let q = quote_ident(&c.name);
            format!("CASE WHEN typeof({q}) IN ('text', 'blob') THEN length(CAST({q} AS BLOB)) ELSE 0 END")
        })
        .collect::<Vec<_>>()
        .join(" + ");
    let bytes = if bytes.is_empty() { "0".into() } else { bytes };
    format!(
        "SELECT CAST(count(*) AS TEXT) AS \"n\", CAST(coalesce(sum({bytes}), 0) AS TEXT) AS \"b\" FROM {}",
        quote_ident(table)
    )
}

/// A condition's value in a `/query` answer: a JSON number or boolean (1 / true).
fn truthy(v: Option<&Json>) -> bool {
    match v {
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

fn text_i64(v: Option<&Json>) -> Option<i64> {
    v?.as_str()?.parse().ok()
}

/// What the query-mode fetcher asks the scratch writer to do.
enum Op {
    /// A schema statement (CREATE TABLE, INDEX, VIEW, TRIGGER).
    Exec(String),
    Rows {
        table: String,
        columns: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    /// A virtual table's schema row, written the way the dump writer does (its shadow tables
    /// hold the data and are copied as ordinary tables).
    VirtualTable { name: String, sql: String },
    /// `sqlite_sequence` as in the source.
    Sequence(Vec<(String, i64)>),
    /// Overwrite rows (by their `key` column) with exact values; answers whether every row
    /// was there to overwrite.
    Repair {
        table: String,
        columns: Vec<String>,
        key: String,
        rows: Vec<(i64, Vec<Cell>)>,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// Run a [`fingerprint_sql`] statement on the scratch copy.
    Fingerprint {
        sql: String,
        reply: tokio::sync::oneshot::Sender<Option<(i64, i64)>>,
    },
}

/// The outcome of work that fed a scratch writer (`write_scratch` on its own thread) and of
/// the writer itself. A writer that stopped early is reported with its own reason (the work
/// only saw the channel close).
fn settle<T>(
    database: &str,
    path: &Path,
    work: Result<T, D1Error>,
    written: Result<Result<(), String>, tokio::task::JoinError>,
) -> Result<T, D1Error> {
    let materialise = |message: String| D1Error::Materialise {
        database: database.to_string(),
        path: path.to_path_buf(),
        message,
    };
    match (work, written) {
        (Err(D1Error::Materialise { .. }), Ok(Err(message))) => Err(materialise(message)),
        (Err(e), _) => Err(e),
        (Ok(done), Ok(Ok(()))) => Ok(done),
        (Ok(_), Ok(Err(message))) => Err(materialise(message)),
        (Ok(_), Err(join)) => Err(materialise(join.to_string())),
    }
}

fn write_scratch(path: &Path, mut rx: tokio::sync::mpsc::Receiver<Op>) -> Result<(), String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    // Tables arrive in name order, children before parents: no foreign key checks here; and
    // repairs must not fire the database's own triggers.
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA foreign_keys=OFF;")
        .map_err(|e| e.to_string())?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
        false,
    )
    .map_err(|e| e.to_string())?;
    while let Some(op) = rx.blocking_recv() {
        match op {
            Op::Exec(sql) => conn
                .execute_batch(&sql)
                .map_err(|e| format!("{e} in {sql}"))?,
            Op::Rows {
                table,
                columns,
                rows,
            } => {
                let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
                let marks = vec!["?"; cols.len()].join(",");
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({marks})",
                    quote_ident(&table),
                    cols.join(",")
                );
                let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
                {
                    let mut stmt = tx.prepare(&sql).map_err(|e| e.to_string())?;
                    for row in &rows {
                        stmt.execute(rusqlite::params_from_iter(row.iter()))
                            .map_err(|e| format!("insert into {table:?}: {e}"))?;
                    }
                }
                tx.commit().map_err(|e| e.to_string())?;
            }
            Op::VirtualTable { name, sql } => {
                conn.execute_batch("PRAGMA writable_schema=ON")
                    .map_err(|e| e.to_string())?;
                conn.execute(
                    "INSERT INTO sqlite_master (type,name,tbl_name,rootpage,sql) VALUES ('table',?1,?1,0,?2)",
                    (&name, &sql),
                )
                .map_err(|e| format!("virtual table {name:?}: {e}"))?;
                conn.execute_batch("PRAGMA writable_schema=OFF")
                    .map_err(|e| e.to_string())?;
            }
            Op::Repair {
                table,
                columns,
                key,
                rows,
                reply,
            } => {
                let sets: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} = ?{}", quote_ident(c), i + 1))
                    .collect();
                let sql = format!(
                    "UPDATE {} SET {} WHERE {} = ?{}",
                    quote_ident(&table),
                    sets.join(", "),
                    quote_ident(&key),
                    columns.len() + 1
                );
                let mut stmt = conn.prepare(&sql).map_err(|e| format!("{e} in {sql}"))?;
                let mut all = true;
                for (k, cells) in &rows {
                    let mut params: Vec<&dyn ToSql> =
                        cells.iter().map(|c| c as &dyn ToSql).collect();
                    params.push(k);
                    let changed = stmt
                        .execute(params.as_slice())
                        .map_err(|e| format!("repair a row of {table:?}: {e}"))?;
                    all &= changed == 1;
                }
                let _ = reply.send(all);
            }
            Op::Fingerprint { sql, reply } => {
                let got = conn
                    .query_row(&sql, [], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(|e| format!("{e} in {sql}"))?;
                let _ = reply.send(got.0.parse().ok().zip(got.1.parse().ok()));
            }
            Op::Sequence(seqs) => {
                let exists: bool = conn
                    .query_row(
                        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(|e| e.to_string())?;
                if exists {
                    conn.execute("DELETE FROM sqlite_sequence", [])
                        .map_err(|e| e.to_string())?;
                    for (name, seq) in seqs {
                        conn.execute(
                            "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                            (&name, seq),
                        )
                        .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether an export error says the export cannot handle the database's virtual tables
/// (Cloudflare: "D1 Export error: cannot export databases with Virtual Tables (fts5)").
pub fn refuses_virtual(message: &str) -> bool {
    message.to_ascii_lowercase().contains("virtual table")
}

/// `Retry-After` in seconds (the HTTP-date form falls back to the backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A transport error without its URL (a signed URL carries a credential).
fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut detail = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// Restore instructions for a D1 database, for the restore guide: Patina writes a D1-ready file
/// from the backup (or imports it directly), or D1 Time Travel (no download, last 30 days).
/// `database` is the Patina name (the guide assumes the D1 database has the same name), `id`
/// the D1 id and `date` the backup's `YYYY-MM-DD`. The last two steps are Time Travel's.
pub fn restore_steps(database: &str, id: &str, date: &str) -> Vec<String> {
    let file = format!("{database}-{date}.d1.sql");
    vec![
        format!(
            "1. Write a D1-ready file from the backup (drops and recreates the backed-up tables in foreign-key order, so no ON DELETE CASCADE reaches restored rows; every statement under D1's 100 KB limit): patina restore {database} --at {date} --format d1 --to {file}"
        ),
        format!(
            "2. Execute it: wrangler d1 execute {database} --remote --file={file} (D1 database id {id}; use its name from `wrangler d1 list` if it differs)"
        ),
        format!(
            "Or both in one step, with a safety backup of the current tables first and every table compared with the backup afterwards: patina restore {database} --at {date} --to-d1 {id} --force"
        ),
        format!(
            "3. Verify: wrangler d1 execute {database} --remote --command=\"SELECT name FROM sqlite_master WHERE type = 'table'\" and compare row counts with the backup's manifest"
        ),
        format!(
            "Alternative, D1 Time Travel (last 30 days, no download): wrangler d1 time-travel info {database}"
        ),
        format!(
            "Then: wrangler d1 time-travel restore {database} --timestamp=\"{date}T03:00:00Z\" (the time of the backup, or --bookmark=<bookmark from the manifest>)"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_exactly_from_their_text_forms() {
        let j = |s: &str| Json::String(s.into());
        let t = |k: &str, v: Json| decode(Some(&j(k)), Some(&v));
        assert_eq!(t("null", Json::Null), Some(Cell::Null));
        assert_eq!(
            t("integer", j("-9223372036854775808")),
            Some(Cell::Integer(i64::MIN))
        );
        assert_eq!(t("real", j("Inf")), Some(Cell::Real(f64::INFINITY)));
        assert_eq!(t("real", j("-Inf")), Some(Cell::Real(f64::NEG_INFINITY)));
        assert_eq!(t("real", j("0.10000000000000001")), Some(Cell::Real(0.1)));
        assert_eq!(t("real", Json::from(0.1)), Some(Cell::Real(0.1)));
        let neg_zero = t("real", j("-0.0"));
        assert!(matches!(neg_zero, Some(Cell::Real(z)) if z == 0.0 && z.is_sign_negative()));
        assert_eq!(t("text", j("C3A9")), Some(Cell::Text("é".into())));
        assert_eq!(t("blob", j("00FF")), Some(Cell::Blob(vec![0, 255])));
        assert_eq!(t("blob", j("zz")), None);
        assert_eq!(
            t("integer", Json::from(3)),
            None,
            "numbers must come as text"
        );
        assert_eq!(t("weird", j("1")), None);
    }

    #[test]
    fn the_export_refusal_of_virtual_tables_is_recognised() {
        assert!(refuses_virtual(
            "cannot export databases with Virtual Tables (fts5)"
        ));
        assert!(!refuses_virtual("internal error"));
    }

    #[test]
    fn restore_steps_use_patina_wrangler_and_time_travel() {
        let steps = restore_steps(
            "groveauth",
            "45eae4c7-8ae7-4078-9218-8e1677a4360f",
            "2026-11-22",
        );
        let all = steps.join("\n");
        assert!(all.contains(
            "patina restore groveauth --at 2026-11-22 --format d1 --to groveauth-2026-11-22.d1.sql"
        ));
        assert!(
            all.contains(
                "wrangler d1 execute groveauth --remote --file=groveauth-2026-11-22.d1.sql"
            )
        );
        assert!(all.contains(
            "patina restore groveauth --at 2026-11-22 --to-d1 45eae4c7-8ae7-4078-9218-8e1677a4360f --force"
        ));
        assert!(!all.contains("sed "), "the sed recipe is gone: {all}");
        assert!(all.contains("wrangler d1 time-travel info groveauth"));
        assert!(all.contains("wrangler d1 time-travel restore groveauth --timestamp="));
    }
}
