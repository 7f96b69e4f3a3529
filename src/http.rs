//! The HTTP server of `patina run` (DESIGN §7): health, Prometheus metrics, the JSON API of the
//! seed (`/`, `/status`, `/list`, `/trigger`, `/download`, `/restore-guide`), the status page's
//! `/api/backup-status` and the "Data Backups" page at `/ui`.
//!
//! It reads state — the reconciler's snapshot, the catalog, storage — and never changes the
//! policy. The one thing it starts is a manual backup job (`POST /trigger`), through the same
//! [`Reconciler::start_job`] the loop uses, so the one-job-per-database rule holds.
//!
//! Decisions:
//! - Binds `daemon.listen` (default `127.0.0.1:9477`) before the first pass; a taken port stops
//!   the daemon at start with the address in the message.
//! - `POST /trigger` and `GET /download` need `Authorization: Bearer <daemon.api_token>`,
//!   compared in constant time (sha256 of both sides, then `subtle`). With no token configured
//!   they answer 403 "disabled": never open. The token is read from the live policy, so a
//!   reload that sets or rotates it applies at once.
//! - Every error is JSON `{"error", "hint"}` with a 4xx/5xx status, including unknown routes,
//!   wrong methods, bad query strings and oversized bodies (64 KiB).
//! - `/healthz` is 200 while the loop ran a pass within 3 ticks (by the daemon's clock);
//!   `/readyz` is 200 once the catalog answers and the last storage listing succeeded.
//! - `/download` finds the day's newest backup in storage (the source of truth, so archived
//!   days work too) and fetches it as `patina restore` does ([`restore::fetch_verified`]): into
//!   a file in `state_dir`, its sha256 and size checked before a byte is sent, so a damaged
//!   object is a 502 rather than a silently damaged file. The SQL is decoded on a blocking
//!   thread: memory does not grow with the dump.
//! - `/api/backup-status` runs the seed's three queries; a day's `type` is `weekly` when a
//!   database whose schedule fires weekly or less often was backed up that day (the seed's
//!   Sunday "Weekly Full" run), `daily` otherwise; `isHealthy` is a committed backup dated today
//!   or yesterday (UTC).
//! - `/ui` is rendered on the server from `ui.html` (no scripts, no external assets), so it
//!   works with JavaScript off and refreshes itself every minute.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::backup::{Clock, JobRequest};
use crate::catalog::{Catalog, CatalogError, InventoryRow, JobDetail};
use crate::codec;
use crate::human;
use crate::manifest::{Trigger, valid_database_name};
use crate::metrics::{Format, Inputs, Metrics};
use crate::policy::{Compression, Policy, SourceSpec};
use crate::reconcile::Reconciler;
use crate::restore::{self, At, RestoreError};
use crate::store::StoreError;

/// The status page template; see [`ui`].
const UI_TEMPLATE: &str = include_str!("ui.html");

/// Largest request body accepted (`POST /trigger`).
pub const MAX_BODY: usize = 64 * 1024;

/// Largest `limit` of `/list`.
pub const MAX_LIST: usize = 1000;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "listen on {addr} (daemon.listen): {source} — is another patina or program using the port? Pick another with listen = \"127.0.0.1:PORT\""
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// What the handlers read.
pub struct AppState {
    reconciler: Arc<Reconciler>,
    catalog: Arc<Mutex<Catalog>>,
    clock: Clock,
    /// When the server (and so the daemon's policy) started, by `clock`.
    started_at: DateTime<Utc>,
    metrics: Metrics,
}

impl AppState {
    pub fn new(
        reconciler: Arc<Reconciler>,
        catalog: Arc<Mutex<Catalog>>,
        clock: Clock,
    ) -> Arc<AppState> {
        let started_at = clock();
        Arc::new(AppState {
            reconciler,
            catalog,
            clock,
            started_at,
            metrics: Metrics::new(),
        })
    }

    /// Run a catalog read on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || {
            let catalog = catalog.lock().unwrap_or_else(|e| e.into_inner());
            f(&catalog)
        })
        .await
        .map_err(|e| ApiError::internal(format!("catalog read failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// Bind the listener (before the first pass, so a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serve until `shutdown` resolves, then finish the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/list", get(list))
        .route("/trigger", post(trigger))
        .route("/download/{date}/{db}", get(download))
        .route("/restore-guide/{db}", get(restore_guide))
        .route("/api/backup-status", get(backup_status))
        .route("/ui", get(ui))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A JSON error: `{"error": "...", "hint": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    hint: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, hint: Option<&str>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            hint: hint.map(str::to_owned),
        }
    }
    fn bad_request(error: impl Into<String>, hint: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, Some(hint))
    }
    fn internal(error: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error,
            Some("see the daemon's log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(h) = self.hint {
            body["hint"] = Value::String(h);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found",
        Some("GET / lists the endpoints"),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        Some("GET / lists the endpoints and their methods"),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Auth and input

/// Check `Authorization: Bearer <token>` against `daemon.api_token`, in constant time.
fn authorize(policy: &Policy, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &policy.daemon.api_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "disabled: no api_token is configured",
            Some(
                "set api_token = \"${PATINA_API_TOKEN}\" in [daemon] of patina.toml to enable /trigger and /download",
            ),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorized = |why: &str| {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            why,
            Some("send Authorization: Bearer <daemon.api_token>"),
        );
        e.error = why.to_owned();
        e
    };
    let Some(given) = given else {
        return Err(unauthorized("missing bearer token"));
    };
    // Hash both sides: equal lengths, so the comparison leaks neither content nor length.
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err(unauthorized("wrong bearer token"))
    }
}

/// A path segment that does not decode (e.g. `%FF`, invalid UTF-8): a JSON 400 like every
/// other error, not axum's plain-text rejection.
fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(
        format!("invalid path: {}", e.body_text()),
        "GET / lists the endpoints; names and dates are plain ASCII",
    )
}

fn parse_date(s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == s)
        .ok_or_else(|| {
            ApiError::bad_request(
                format!("invalid date {s:?}"),
                "use YYYY-MM-DD, e.g. 2026-11-22",
            )
        })
}

fn check_database_name(s: &str) -> Result<(), ApiError> {
    if s.len() <= 64 && valid_database_name(s) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            format!("invalid database name {s:?}"),
            "database names match [a-z0-9][a-z0-9_-]*",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting

fn iso(ts: i64) -> Value {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn date_of(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Health

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let now = (s.clock)();
    let last = snapshot.last_pass.as_ref().map_or(s.started_at, |p| p.at);
    let tick = chrono::Duration::from_std(policy.daemon.tick).unwrap_or(chrono::Duration::MAX);
    let limit = tick.checked_mul(3).unwrap_or(chrono::Duration::MAX);
    let age = now - last;
    let ticking = age <= limit;
    let body = json!({
        "status": if ticking { "ok" } else { "stalled" },
        "lastTick": last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "secondsSinceTick": age.num_seconds(),
        "tickSeconds": policy.daemon.tick.as_secs_f64(),
    });
    let status = if ticking {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body)
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let not_ready = |reason: String| {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": reason }),
        )
    };
    let catalog = s
        .read(|c| {
            c.connection()
                .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(|source| CatalogError::Query {
                    action: "check",
                    path: c.path().to_path_buf(),
                    source,
                })
        })
        .await;
    if let Err(e) = catalog {
        return not_ready(format!("catalog: {}", e.error));
    }
    let snapshot = s.reconciler.snapshot();
    match snapshot.last_pass {
        None => not_ready("no storage listing yet: the first reconcile pass has not run".into()),
        Some(p) => match p.error {
            Some(e) => not_ready(e),
            None => json_response(
                StatusCode::OK,
                json!({
                    "ready": true,
                    "lastListing": p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }),
            ),
        },
    }
}

async fn metrics(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let facts = s.read(|c| c.metric_facts()).await?;
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let text = s.metrics.render(
        &Inputs {
            policy: &policy,
            snapshot: &snapshot,
            facts: &facts,
            now: (s.clock)(),
            started_at: s.started_at,
        },
        format,
    );
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}

// ---------------------------------------------------------------------------------------------
// Service info and status

async fn index(State(s): State<Arc<AppState>>) -> axum::Json<Value> {
    let policy = s.reconciler.policy();
    axum::Json(json!({
        "name": "Patina",
        "version": env!("CARGO_PKG_VERSION"),
        "description": env!("CARGO_PKG_DESCRIPTION"),
        "schedule": schedule_summary(&policy),
        "timezone": policy.daemon.timezone.name(),
        "retention": retention_summary(&policy),
        "databases": policy.databases.len(),
        "endpoints": {
            "GET /": "This documentation",
            "GET /healthz": "Liveness: the reconcile loop is ticking",
            "GET /readyz": "Readiness: policy loaded, catalog open, last storage listing succeeded",
            "GET /metrics": "Prometheus metrics",
            "GET /status": "Current backup status and recent history",
            "GET /list": "List available backups (?database=&date=YYYY-MM-DD&limit=)",
            "POST /trigger": "Manually trigger a backup (Bearer token; {\"databases\":[..],\"reason\":\"..\"})",
            "GET /download/:date/:db": "Download a backup as SQL (Bearer token; ?raw=1 for the stored bytes)",
            "GET /restore-guide/:db": "Restore instructions for a database",
            "GET /api/backup-status": "The status page's backup summary",
            "GET /ui": "The Data Backups status page",
        },
    }))
}

/// `critical 0 3 * * *; normal 0 4 * * SUN` (priorities used by some database, and overrides).
fn schedule_summary(policy: &Policy) -> String {
    let mut parts: Vec<String> = policy
        .priorities
        .iter()
        .filter(|(level, _)| policy.databases.iter().any(|d| d.priority == **level))
        .map(|(level, p)| format!("{level} {}", p.schedule.expression()))
        .collect();
    for d in policy.databases.iter().filter(|d| d.schedule_overridden) {
        parts.push(format!("{} {}", d.name, d.schedule.expression()));
    }
    parts.join("; ")
}

fn retention_summary(policy: &Policy) -> String {
    let r = &policy.retention;
    let mut s = format!("daily dumps {}", r.daily);
    if let Some(w) = r.weekly {
        s.push_str(&format!(
            ", weekly archives {w} (rolled {})",
            r.archive.expression()
        ));
    }
    if let Some(m) = r.monthly {
        s.push_str(&format!(", monthly {m}"));
    }
    s
}

fn job_json(j: &JobDetail) -> Value {
    json!({
        "jobId": j.job.job_id,
        "date": date_of(j.job.started_at),
        "startedAt": iso(j.job.started_at),
        "completedAt": j.job.completed_at.map(iso).unwrap_or(Value::Null),
        "status": j.job.status,
        "trigger": j.job.trigger_type,
        "initiatedBy": j.initiated_by,
        "reason": j.reason,
        "databases": {
            "total": j.job.total_databases,
            "successful": j.job.successful_count,
            "failed": j.job.failed_count,
        },
        "totalSizeBytes": j.job.total_size_bytes,
        "durationMs": j.job.duration_ms,
        "error": j.job.error_message,
    })
}

/// Per declared database: schedule, next run, newest committed backup.
fn database_schedules(
    policy: &Policy,
    last_success: &BTreeMap<String, i64>,
    running: &std::collections::BTreeSet<String>,
    now: DateTime<Utc>,
) -> Vec<Value> {
    policy
        .databases
        .iter()
        .map(|d| {
            let next = if d.enabled {
                d.schedule.next_after(now)
            } else {
                None
            };
            json!({
                "database": d.name,
                "kind": d.source.kind(),
                "priority": d.priority.as_str(),
                "schedule": d.schedule.expression(),
                "enabled": d.enabled,
                "running": running.contains(&d.name),
                "nextRun": next.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "lastSuccess": last_success.get(&d.name).copied().map(iso),
            })
        })
        .collect()
}

struct StatusData {
    running_jobs: Vec<JobDetail>,
    recent: Vec<JobDetail>,
    summary: crate::catalog::InventorySummary,
    last_success: BTreeMap<String, i64>,
}

async fn status_data(s: &AppState) -> Result<StatusData, ApiError> {
    s.read(|c| {
        let facts = c.metric_facts()?;
        Ok(StatusData {
            running_jobs: c.jobs_detail(20, true)?,
            recent: c.jobs_detail(10, false)?,
            summary: c.inventory_summary()?,
            last_success: facts
                .last_success
                .into_iter()
                .map(|(k, v)| (k, v.at))
                .collect(),
        })
    })
    .await
}

async fn status(State(s): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let now = (s.clock)();
    let d = status_data(&s).await?;
    let last = d.recent.iter().find(|j| j.job.status != "running");
    let last_backup = last.map(|j| {
        json!({
            "jobId": j.job.job_id,
            "date": date_of(j.job.started_at),
            "status": j.job.status,
            "trigger": j.job.trigger_type,
            "successful": j.job.successful_count,
            "failed": j.job.failed_count,
            "totalSize": human::bytes(j.job.total_size_bytes.max(0) as u64),
            "totalSizeBytes": j.job.total_size_bytes,
            "duration": human::duration_ms(j.job.duration_ms.unwrap_or(0)),
            "durationMs": j.job.duration_ms,
        })
    });
    let schedules = database_schedules(&policy, &d.last_success, &snapshot.running, now);
    let next_scheduled = policy
        .databases
        .iter()
        .filter(|d| d.enabled)
        .filter_map(|d| d.schedule.next_after(now))
        .min();
    let running = !snapshot.running.is_empty() || !d.running_jobs.is_empty();
    Ok(axum::Json(json!({
        "currentStatus": if running { "running" } else { "idle" },
        "currentJobs": d.running_jobs.iter().map(job_json).collect::<Vec<_>>(),
        "runningDatabases": snapshot.running,
        "archiving": snapshot.archiving,
        "lastBackup": last_backup,
        "nextScheduled": next_scheduled.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "databases": schedules,
        "recentJobs": d.recent.iter().map(job_json).collect::<Vec<_>>(),
        "storage": {
            "totalBackups": d.summary.total_backups,
            "totalSize": human::bytes(d.summary.total_bytes),
            "totalBytes": d.summary.total_bytes,
            "oldestBackup": d.summary.oldest_date,
            "newestBackup": d.summary.newest_date,
        },
        "lastPass": snapshot.last_pass.as_ref().map(|p| json!({
            "at": p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "durationMs": p.duration.as_millis() as u64,
            "error": p.error,
        })),
    })))
}

// ---------------------------------------------------------------------------------------------
// /list

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    database: Option<String>,
    date: Option<String>,
    limit: Option<String>,
}

fn backup_json(b: &InventoryRow) -> Value {
    json!({
        "database": b.database,
        "date": b.date,
        "tier": b.tier,
        "r2Key": b.key,
        "size": human::bytes(b.size_bytes),
        "sizeBytes": b.size_bytes,
        "tables": b.table_count,
        "rows": b.row_count,
        "sha256": b.sha256,
        "createdAt": iso(b.created_at),
        "expiresAt": iso(b.expires_at),
    })
}

async fn list(
    State(s): State<Arc<AppState>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(
            format!("invalid query: {}", e.body_text()),
            "parameters: database, date (YYYY-MM-DD), limit (1-1000)",
        )
    })?;
    let database = p.database.filter(|d| !d.is_empty());
    if let Some(d) = &database {
        check_database_name(d)?;
    }
    let date = match p.date.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => Some(parse_date(d)?.format("%Y-%m-%d").to_string()),
        None => None,
    };
    let limit = match p.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("invalid limit {l:?}"),
                    "limit is a whole number from 1 to 1000",
                )
            })?,
    };
    let all = s.read(|c| c.list_backups(None)).await?;
    let total = all.len();
    let matching: Vec<&InventoryRow> = all
        .iter()
        .filter(|b| database.as_ref().is_none_or(|d| &b.database == d))
        .filter(|b| date.as_ref().is_none_or(|d| &b.date == d))
        .collect();
    Ok(axum::Json(json!({
        "backups": matching.iter().take(limit).map(|b| backup_json(b)).collect::<Vec<_>>(),
        "total": total,
        "filtered": matching.len(),
        "limit": limit,
    })))
}

// ---------------------------------------------------------------------------------------------
// /trigger

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    databases: Option<Vec<String>>,
    reason: Option<String>,
}

async fn trigger(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let policy = s.reconciler.policy();
    authorize(&policy, &headers)?;
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("request body: {}", e.body_text()),
            Some("send at most 64 KiB of JSON"),
        )
    })?;
    let hint = "send {\"databases\": [\"name\", ..], \"reason\": \"..\"} (both optional)";
    let request: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"), hint))?
    };
    if let Some(r) = &request.reason
        && r.chars().count() > 500
    {
        return Err(ApiError::bad_request(
            "reason is longer than 500 characters",
            hint,
        ));
    }
    let databases: Vec<String> = match request.databases {
        None => policy
            .databases
            .iter()
            .filter(|d| d.enabled)
            .map(|d| d.name.clone())
            .collect(),
        Some(list) => {
            if list.is_empty() {
                return Err(ApiError::bad_request("databases is empty", hint));
            }
            let unknown: Vec<&String> = list
                .iter()
                .filter(|n| policy.database(n).is_none())
                .collect();
            if !unknown.is_empty() {
                return Err(ApiError::bad_request(
                    format!("unknown databases: {unknown:?}"),
                    "name databases declared in patina.toml (GET /status lists them)",
                ));
            }
            let disabled: Vec<&String> = list
                .iter()
                .filter(|n| policy.database(n).is_some_and(|d| !d.enabled))
                .collect();
            if !disabled.is_empty() {
                return Err(ApiError::bad_request(
                    format!("disabled databases: {disabled:?}"),
                    "set enabled = true in patina.toml first",
                ));
            }
            let mut list = list;
            list.sort();
            list.dedup();
            list
        }
    };
    if databases.is_empty() {
        return Err(ApiError::bad_request(
            "no enabled databases to back up",
            "declare a [[database]] in patina.toml",
        ));
    }
    let running = s.reconciler.running();
    let busy: Vec<&String> = databases.iter().filter(|d| running.contains(*d)).collect();
    if !busy.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("already running: {busy:?}"),
            Some("wait for the running backup to finish (GET /status)"),
        ));
    }
    let job_id = uuid::Uuid::new_v4().to_string();
    let (job_id, started) = s
        .reconciler
        .start_job(
            JobRequest {
                job_id: Some(job_id),
                databases,
                trigger: Trigger::Manual,
                initiated_by: Some("api".into()),
                reason: request.reason,
            },
            Arc::clone(&policy),
            s.reconciler.store(),
        )
        .await;
    if started.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already running: the databases started a backup just now",
            Some("wait for the running backup to finish (GET /status)"),
        ));
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({
            "jobId": job_id,
            "status": "started",
            "databases": started.len(),
            "databaseNames": started,
            "message": "Backup job started. Check /status for progress.",
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// /download

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadParams {
    raw: Option<String>,
}

async fn download(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<DownloadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((date, db)) = path.map_err(path_error)?;
    let policy = s.reconciler.policy();
    authorize(&policy, &headers)?;
    let day = parse_date(&date)?;
    check_database_name(&db)?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query: {}", e.body_text()), "use ?raw=1")
    })?;
    let raw = match p.raw.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("invalid raw {other:?}"),
                "use ?raw=1 for the stored bytes",
            ));
        }
    };
    let store = s.reconciler.store();
    let located = restore::locate(&store, &db, At::Date(day))
        .await
        .map_err(|e| match e {
            RestoreError::NoBackup { .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no backup of {db} on {date}"),
                Some("GET /list?database=NAME shows the dates with backups"),
            ),
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                other.to_string(),
                Some("storage could not be read; see GET /readyz"),
            ),
        })?;
    // The same fetch-and-verify as `patina restore`: a damaged object is refused before a byte
    // is sent.
    let part = policy
        .daemon
        .state_dir
        .join(format!(".download-{}.part", uuid::Uuid::new_v4().simple()));
    let verified = restore::fetch_verified(&store, &located, &part)
        .await
        .map_err(fetch_error)?;
    let compression = verified.compression();
    let (body, content_type, file_name) = if raw {
        let content_type = match compression {
            Compression::Zstd => "application/zstd",
            Compression::Gzip => "application/gzip",
            Compression::None => "application/sql",
        };
        let file = tokio::fs::File::from_std(verified.into_stored());
        (
            Body::from_stream(tokio_util::io::ReaderStream::new(file)),
            content_type,
            format!("{db}-{date}{}", codec::dump_suffix(compression)),
        )
    } else {
        (
            Body::from_stream(plain_stream(verified)),
            "application/sql",
            format!("{db}-{date}.sql"),
        )
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Names are validated ([a-z0-9_-] and a date): nothing to escape.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

fn storage_error(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        e.to_string(),
        Some("storage could not be read; see GET /readyz"),
    )
}

/// Why the stored bytes could not be fetched and verified.
fn fetch_error(e: RestoreError) -> ApiError {
    match e {
        RestoreError::Store(e) => storage_error(e),
        e @ RestoreError::Checksum { .. } => {
            tracing::error!(error = %e, "download: checksum mismatch, refused");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                e.to_string(),
                Some("the stored object is damaged; download another date"),
            )
        }
        e @ RestoreError::Archive(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string(), None),
        e => ApiError::internal(e.to_string()),
    }
}

/// The SQL text of verified stored bytes, decoded on a blocking thread; chunks flow through a
/// small channel (bounded memory). A decoding error ends the stream with it, which breaks the
/// transfer.
fn plain_stream(verified: restore::VerifiedFile) -> BoxStream<'static, io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let pumped = verified
            .into_plain()
            .map_err(io::Error::other)
            .and_then(|mut plain| pump(&mut plain, &tx));
        if let Err(e) = pumped {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

fn pump(r: &mut impl Read, tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if tx
            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .is_err()
        {
            // The client went away.
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "client gone"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /restore-guide

async fn restore_guide(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Path(db) = path.map_err(path_error)?;
    check_database_name(&db)?;
    let policy = s.reconciler.policy();
    let name = db.clone();
    let backups = s.read(move |c| c.list_backups(Some(&name))).await?;
    let declared = policy.database(&db);
    if declared.is_none() && backups.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown database {db:?}"),
            Some("GET /status lists the declared databases"),
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| policy.daemon.listen.to_string());
    let base_url = format!("http://{host}");
    let store = s.reconciler.store();
    let newest = backups.first();
    let facts = GuideFacts {
        database: &db,
        kind: declared.map_or("sqlite", |d| d.source.kind()),
        date: newest.map(|b| b.date.clone()),
        taken_at: newest.map(|b| iso(b.created_at)),
        location: newest.map(|b| store.location(&b.key)),
        compression: newest
            .and_then(|b| {
                Compression::parse(if b.key.ends_with(".zst") {
                    "zstd"
                } else if b.key.ends_with(".gz") {
                    "gzip"
                } else {
                    "none"
                })
            })
            .unwrap_or(policy.storage.compression),
        base_url: &base_url,
        source_steps: declared.and_then(|d| {
            let date = newest.map_or("YYYY-MM-DD", |b| b.date.as_str());
            crate::source::of(&d.source).restore_guide(&db, date)
        }),
    };
    let source = declared.map(|d| match &d.source {
        SourceSpec::Sqlite { path } => {
            json!({ "kind": "sqlite", "path": path.display().to_string() })
        }
        SourceSpec::D1 { id, .. } => json!({ "kind": "d1", "databaseId": id }),
    });
    Ok(axum::Json(json!({
        "database": db,
        "kind": facts.kind,
        "declared": declared.is_some(),
        "databaseId": declared.and_then(|d| match &d.source {
            SourceSpec::D1 { id, .. } => Some(id.clone()),
            SourceSpec::Sqlite { .. } => None,
        }),
        "priority": declared.map(|d| d.priority.as_str()),
        "schedule": declared.map(|d| d.schedule.expression().to_owned()),
        "source": source,
        "availableBackups": backups.iter().map(|b| json!({
            "date": b.date,
            "size": human::bytes(b.size_bytes),
            "sizeBytes": b.size_bytes,
            "createdAt": iso(b.created_at),
            "r2Key": b.key,
        })).collect::<Vec<_>>(),
        "restoreInstructions": restore_instructions(&facts),
    })))
}

/// What restore instructions are written from.
pub struct GuideFacts<'a> {
    pub database: &'a str,
    /// `sqlite` or `d1` (a database no longer declared gets the sqlite steps: a dump is SQL).
    pub kind: &'a str,
    /// Date of the newest backup, if any.
    pub date: Option<String>,
    pub taken_at: Option<Value>,
    /// Full storage location of the newest backup's data object.
    pub location: Option<String>,
    pub compression: Compression,
    /// `http://host:port` of this server.
    pub base_url: &'a str,
    /// Restore steps particular to the source's kind ([`crate::source::Source::restore_guide`]).
    pub source_steps: Option<Vec<String>>,
}

/// Step-by-step restore instructions for a database's kind. Add a kind by adding an arm.
pub fn restore_instructions(f: &GuideFacts<'_>) -> Value {
    let db = f.database;
    let date = f.date.clone().unwrap_or_else(|| "YYYY-MM-DD".into());
    let download = format!(
        "curl -fH \"Authorization: Bearer $PATINA_API_TOKEN\" -o {db}-{date}.sql {}/download/{date}/{db}",
        f.base_url
    );
    let location = f
        .location
        .clone()
        .unwrap_or_else(|| "the backup's object in storage".into());
    let decompress = match f.compression {
        Compression::Zstd => format!("zstd -d -c {db}-{date}.sql.zst > {db}-{date}.sql"),
        Compression::Gzip => format!("gzip -d -c {db}-{date}.sql.gz > {db}-{date}.sql"),
        Compression::None => format!("(stored uncompressed: {db}-{date}.sql is the dump)"),
    };
    match f.kind {
        "d1" => {
            // The steps live with the D1 source: `patina restore --format d1` makes the file
            // D1-ready (foreign-key order, no BEGIN/COMMIT, statements under 100 KB); the last
            // two are Time Travel's.
            let mut steps = f.source_steps.clone().unwrap_or_default();
            let time_travel = steps.split_off(steps.len().saturating_sub(2));
            json!({
                "method1_wrangler": {
                    "name": "patina restore + Wrangler CLI (recommended)",
                    "steps": steps,
                    "warning": "This will DROP and recreate tables. All existing data will be replaced.",
                },
                "method2_timetravel": {
                    "name": "D1 Time Travel (last 30 days)",
                    "steps": time_travel,
                    "note": "Time Travel is faster and does not need a download, but only reaches back 30 days.",
                },
            })
        }
        _ => json!({
            "method1_patina": {
                "name": "patina restore (recommended)",
                "steps": [
                    format!("1. List backups: patina list {db}"),
                    format!("2. Restore into a new file (sha256 checked before loading): patina restore {db} --at {date} --to {db}-restored.db"),
                    format!("3. Check it: sqlite3 {db}-restored.db \"PRAGMA integrity_check\""),
                    "4. Stop the application, move the restored file into place, start it again".to_string(),
                ],
                "note": "Works on a fresh machine: the bucket is the source of truth. --at also reaches days kept only in weekly archives.",
            },
            "method2_plain": {
                "name": "zstd + sqlite3 (no Patina needed)",
                "steps": [
                    format!("1. Download the SQL: {download}  (or fetch {location} with any S3 tool and decompress: {decompress})"),
                    format!("2. Load it into a new database: sqlite3 {db}-restored.db < {db}-{date}.sql"),
                    format!("3. Check it: sqlite3 {db}-restored.db \"PRAGMA integrity_check\""),
                ],
                "warning": "Load into a new file: the dump drops and recreates every table.",
            },
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// /api/backup-status and /ui

/// The status page's data (seed 000), computed from the catalog with its three queries.
pub struct BackupStatus {
    pub json: Value,
    pub days: Vec<(String, u64, u64, &'static str)>,
    pub healthy: bool,
}

async fn backup_status_data(s: &AppState) -> Result<(BackupStatus, StatusData), ApiError> {
    let policy = s.reconciler.policy();
    let now = (s.clock)();
    let (summary, days, jobs) = s
        .read(|c| {
            Ok((
                c.inventory_summary()?,
                c.daily_history(7)?,
                c.jobs_detail(10, false)?,
            ))
        })
        .await?;
    let weekly_dbs: std::collections::BTreeSet<&str> = policy
        .databases
        .iter()
        .filter(|d| {
            crate::metrics::expected_interval(&d.schedule, now).is_some_and(|s| s >= 7.0 * 86_400.0)
        })
        .map(|d| d.name.as_str())
        .collect();
    let days: Vec<(String, u64, u64, &'static str)> = days
        .into_iter()
        .map(|d| {
            let weekly = d.databases.iter().any(|n| weekly_dbs.contains(n.as_str()));
            (
                d.date,
                d.count,
                d.bytes,
                if weekly { "weekly" } else { "daily" },
            )
        })
        .collect();
    let perfect = jobs
        .iter()
        .filter(|j| j.job.status == "completed" && j.job.failed_count == 0)
        .count();
    let partial = jobs
        .iter()
        .filter(|j| j.job.status == "completed" && j.job.failed_count > 0)
        .count();
    let score = if jobs.is_empty() {
        0.0
    } else {
        perfect as f64 / jobs.len() as f64 * 100.0
    };
    let today = now.format("%Y-%m-%d").to_string();
    let yesterday = (now - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let healthy = days.iter().any(|d| d.0 == today || d.0 == yesterday);
    let json = json!({
        "summary": {
            "totalBackups": summary.total_backups,
            "uniqueDays": summary.unique_days,
            "totalBytes": summary.total_bytes,
            "lastBackup": summary.newest_date,
        },
        "dailyHistory": days.iter().map(|(date, count, size, kind)| json!({
            "date": date, "count": count, "size": size, "type": kind,
        })).collect::<Vec<_>>(),
        "reliability": {
            "score": score,
            "perfectJobs": perfect,
            "partialJobs": partial,
            "totalJobs": jobs.len(),
        },
        "isHealthy": healthy,
    });
    let extra = status_data(s).await?;
    Ok((
        BackupStatus {
            json,
            days,
            healthy,
        },
        extra,
    ))
}

async fn backup_status(State(s): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(backup_status_data(&s).await?.0.json))
}

/// HTML-escape text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "Today", "Yesterday" or "Nov 18".
fn day_label(date: &str, now: DateTime<Utc>) -> String {
    let Ok(d) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
        return date.to_owned();
    };
    let today = now.date_naive();
    if d == today {
        "Today".into()
    } else if Some(d) == today.pred_opt() {
        "Yesterday".into()
    } else {
        d.format("%a, %b %-d").to_string()
    }
}

fn local_time(ts: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    ts.with_timezone(&tz).format("%b %-d, %H:%M %Z").to_string()
}

async fn ui(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let now = (s.clock)();
    let tz = policy.daemon.timezone;
    let (status, data) = backup_status_data(&s).await?;
    let j = &status.json;
    let summary = &j["summary"];
    let rel = &j["reliability"];

    let last_backup = summary["lastBackup"].as_str();
    let (state_class, banner_icon, banner_text, banner_detail) = if status.healthy {
        (
            "ok",
            "✓",
            "Backups Healthy",
            format!(
                "Last backup {}",
                last_backup.map_or("—".into(), |d| day_label(d, now))
            ),
        )
    } else {
        (
            "warn",
            "!",
            "Backup Issue",
            match last_backup {
                Some(d) => format!(
                    "No backup today or yesterday — the newest is from {}",
                    day_label(d, now)
                ),
                None => "No backups yet".into(),
            },
        )
    };

    // "Backup ran today": the newest job today, by the daemon's timezone-independent UTC date.
    let today = now.format("%Y-%m-%d").to_string();
    let ran_today = status.days.iter().any(|d| d.0 == today);
    let today_html = if ran_today {
        let count = status.days.iter().find(|d| d.0 == today).map_or(0, |d| d.1);
        format!(
            r#"<p class="today ok" role="status"><span aria-hidden="true">✓</span> Backup ran today — {count} file{}</p>"#,
            if count == 1 { "" } else { "s" }
        )
    } else {
        r#"<p class="today warn" role="status"><span aria-hidden="true">!</span> No backup has run today yet</p>"#.to_string()
    };

    let stats = [
        (summary["totalBackups"].to_string(), "Total Backups"),
        (summary["uniqueDays"].to_string(), "Days Covered"),
        (
            human::bytes(summary["totalBytes"].as_u64().unwrap_or(0)),
            "Storage Used",
        ),
        (policy.databases.len().to_string(), "Databases"),
    ]
    .iter()
    .map(|(v, l)| {
        format!(
            r#"<div class="stat"><div class="value">{}</div><div class="label">{}</div></div>"#,
            esc(v),
            esc(l)
        )
    })
    .collect::<String>();

    let score = rel["score"].as_f64().unwrap_or(0.0);
    let bar_class = if score >= 90.0 {
        "ok"
    } else if score >= 70.0 {
        "warn"
    } else {
        "bad"
    };

    let days_html = if status.days.is_empty() {
        r#"<li class="empty">No backups in storage yet.</li>"#.to_string()
    } else {
        status
            .days
            .iter()
            .map(|(date, count, size, kind)| {
                let badge = if *kind == "weekly" {
                    r#"<span class="badge weekly">Weekly</span>"#
                } else {
                    r#"<span class="badge daily">Daily</span>"#
                };
                format!(
                    r#"<li class="day"><span class="when"><time datetime="{date}">{}</time> {badge}</span><span class="meta"><span>{count} file{}</span><span>{}</span></span></li>"#,
                    esc(&day_label(date, now)),
                    if *count == 1 { "" } else { "s" },
                    esc(&human::bytes(*size)),
                    date = esc(date),
                )
            })
            .collect()
    };

    let next_html = policy
        .databases
        .iter()
        .map(|d| {
            let next = if !d.enabled {
                "disabled".to_string()
            } else if snapshot.running.contains(&d.name) {
                "running now".to_string()
            } else {
                d.schedule
                    .next_after(now)
                    .map_or("—".into(), |t| local_time(t, tz))
            };
            let last = data
                .last_success
                .get(&d.name)
                .and_then(|t| DateTime::<Utc>::from_timestamp(*t, 0))
                .map_or("never".into(), |t| local_time(t, tz));
            format!(
                r#"<tr><th scope="row">{}</th><td><span class="badge prio">{}</span></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>"#,
                esc(&d.name),
                esc(d.priority.as_str()),
                esc(d.schedule.expression()),
                esc(&next),
                esc(&last),
            )
        })
        .collect::<String>();

    let jobs_html = if data.recent.is_empty() {
        r#"<tr><td colspan="5" class="empty">No jobs yet.</td></tr>"#.to_string()
    } else {
        data.recent
            .iter()
            .map(|jd| {
                let job = &jd.job;
                let trigger = match job.trigger_type.as_str() {
                    "manual" => format!(
                        r#"<span class="badge manual">Manual</span> <span class="by">by {}</span>"#,
                        esc(jd.initiated_by.as_deref().unwrap_or("unknown"))
                    ),
                    "catch-up" => r#"<span class="badge catchup">Catch-up</span>"#.to_string(),
                    other => format!(r#"<span class="badge scheduled">{}</span>"#, esc(&capitalize(other))),
                };
                let status_text = match (job.status.as_str(), job.failed_count) {
                    ("completed", 0) => "✓ Completed".to_string(),
                    ("completed", n) => format!("⚠ Partial ({n} failed)"),
                    ("failed", _) => "✗ Failed".to_string(),
                    ("running", _) => "… Running".to_string(),
                    (other, _) => capitalize(other),
                };
                let when = DateTime::<Utc>::from_timestamp(job.started_at, 0)
                    .map_or("—".into(), |t| local_time(t, tz));
                let outcome = match (job.status.as_str(), job.failed_count) {
                    ("completed", n) if n > 0 => "partial",
                    (other, _) => other,
                };
                format!(
                    r#"<tr><td>{}</td><td>{}</td><td class="st-{}">{}</td><td>{}/{}</td><td>{} · {}</td></tr>"#,
                    esc(&when),
                    trigger,
                    esc(outcome),
                    esc(&status_text),
                    job.successful_count,
                    job.total_databases,
                    esc(&human::bytes(job.total_size_bytes.max(0) as u64)),
                    esc(&human::duration_ms(job.duration_ms.unwrap_or(0))),
                )
            })
            .collect()
    };

    let footer = format!(
        "Schedules ({}): {} • Retention: {} • Updated {}",
        tz.name(),
        schedule_summary(&policy),
        retention_summary(&policy),
        local_time(now, tz)
    );

    let html = UI_TEMPLATE
        .replace("{{state}}", state_class)
        .replace("{{banner_icon}}", banner_icon)
        .replace("{{banner_text}}", banner_text)
        .replace("{{banner_detail}}", &esc(&banner_detail))
        .replace("{{today}}", &today_html)
        .replace("{{stats}}", &stats)
        .replace("{{score}}", &format!("{score:.0}"))
        .replace("{{score_raw}}", &format!("{score:.1}"))
        .replace("{{bar_class}}", bar_class)
        .replace("{{perfect}}", &rel["perfectJobs"].to_string())
        .replace("{{partial}}", &rel["partialJobs"].to_string())
        .replace("{{total_jobs}}", &rel["totalJobs"].to_string())
        .replace("{{days}}", &days_html)
        .replace("{{next_runs}}", &next_html)
        .replace("{{jobs}}", &jobs_html)
        .replace("{{footer}}", &esc(&footer))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"));
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_d1_restore_guide_makes_the_dump_d1_ready_and_offers_time_travel() {
        let g = restore_instructions(&GuideFacts {
            database: "groveauth",
            kind: "d1",
            date: Some("2026-11-22".into()),
            taken_at: None,
            location: None,
            compression: Compression::Zstd,
            base_url: "http://127.0.0.1:9477",
            source_steps: crate::source::of(&SourceSpec::D1 {
                id: "45eae4c7-8ae7-4078-9218-8e1677a4360f".into(),
                mode: crate::policy::D1Mode::Export,
            })
            .restore_guide("groveauth", "2026-11-22"),
        });
        let wrangler = g["method1_wrangler"]["steps"].to_string();
        assert!(
            wrangler.contains("wrangler d1 execute groveauth --remote --file="),
            "{wrangler}"
        );
        assert!(
            wrangler.contains("patina restore groveauth --at 2026-11-22 --format d1 --to"),
            "the D1-ready step: {wrangler}"
        );
        assert!(!wrangler.contains("sed "), "no sed recipe: {wrangler}");
        assert!(
            wrangler.contains("45eae4c7-8ae7-4078-9218-8e1677a4360f"),
            "{wrangler}"
        );
        let tt = g["method2_timetravel"]["steps"].to_string();
        assert!(
            tt.contains("wrangler d1 time-travel info groveauth"),
            "{tt}"
        );
        assert!(tt.contains("time-travel restore groveauth"), "{tt}");
    }

    use super::*;

    #[test]
    fn dates_must_be_exact() {
        assert!(parse_date("2026-11-22").is_ok());
        for bad in ["2026-1-5", "2026-02-30", "../etc", "2026-11-22x", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
