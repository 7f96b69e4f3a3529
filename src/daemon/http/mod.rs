//! The HTTP server of `patina run` (DESIGN §7): health, Prometheus metrics, the JSON API of the
//! seed (`/`, `/status`, `/list`, `/trigger`, `/download`, `/restore-guide`), the status page's
//! `/api/backup-status` and the "Data Backups" page at `/ui`. This file holds what every route
//! shares: the router, the state handlers read, and the JSON error.
//!
//! It reads state — the reconciler's snapshot, the catalog, storage — and never changes the
//! policy. The one thing it starts is a manual backup job (`POST /trigger`), through the same
//! [`Reconciler::start_job`] the loop uses, so the one-job-per-database rule holds.
//!
//! One file per job:
//! - `auth.rs` — bearer tokens and scopes (constant time), the client address, the audit
//!   records of what callers did, and the validation of names and dates;
//! - `guard.rs` — failed authentications per address and the lockout, in bounded memory;
//! - `audit.rs` — `GET /api/audit`;
//! - `api.rs` — the JSON endpoints: `/`, `/healthz`, `/readyz`, `/metrics`, `/status`, `/list`,
//!   `POST /trigger`;
//! - `download.rs` — `/download`, fetched and verified as `patina restore` does;
//! - `guide.rs` — `/restore-guide` and its instructions;
//! - `page.rs` — the status page: `/api/backup-status` and `/ui`;
//! - `server.rs` — the connection loop and its limits (connections, header and handshake
//!   timeouts); `tls.rs` — HTTPS with a certificate that reloads swap.
//!
//! Routes come in three groups: always open (`/healthz`, `/readyz`); reads, behind
//! [`auth::read_gate`] (open while `public_read = true`, else scope `read`); and the endpoints
//! that check their own scope (`/trigger`, `/download`, `/api/audit`).
//!
//! Decisions:
//! - Binds `daemon.listen` (default `127.0.0.1:9477`) before the first pass; a taken port stops
//!   the daemon at start with the address in the message.
//! - Every error is JSON `{"error", "hint"}` with a 4xx/5xx status, including unknown routes,
//!   wrong methods, bad query strings and oversized bodies (64 KiB). Errors hyper answers before
//!   any handler runs (a malformed request, a head over 64 KiB) are bare 400/431s.

mod api;
mod audit;
mod auth;
mod download;
mod guard;
mod guide;
mod page;
mod server;
mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::backup::Clock;
use crate::catalog::{Catalog, CatalogError};
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;

pub use api::MAX_LIST;
pub use guard::{AUDIT_ADDRESSES_PER_MINUTE, CAPACITY as LOCKOUT_CAPACITY, LOCKOUT_FAILURES};
pub use guide::{GuideFacts, restore_instructions};
pub use page::BackupStatus;
pub use server::{Limits, MAX_HEAD};
pub use tls::{Tls, TlsError};

/// Largest request body accepted (`POST /trigger`).
pub const MAX_BODY: usize = 64 * 1024;

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
    /// Failed authentications per client address, and the lockout.
    guard: guard::AuthGuard,
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
            guard: guard::AuthGuard::new(),
        })
    }

    /// Client addresses the failed-authentication counter tracks now (bounded: see
    /// [`LOCKOUT_CAPACITY`]).
    pub fn tracked_addresses(&self) -> usize {
        self.guard.tracked()
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

    /// Run a catalog write on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.read(f).await
    }
}

impl AppState {
    /// Record a download in the restore history (DESIGN §13); a catalog error is logged, never
    /// the request's failure.
    async fn record_download(
        &self,
        who: &str,
        database: &str,
        located: Option<&crate::restore::Located>,
        started_at: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) {
        let store = self.reconciler.store();
        let location = located.map(|l| l.describe(&store));
        let key = located.map(|l| l.dump_key().to_string());
        let taken_at = located.map(|l| l.taken_at());
        let completed_at = (self.clock)();
        let (who, database) = (who.to_string(), database.to_string());
        let outcome = outcome.map_err(str::to_string);
        let catalog = Arc::clone(&self.catalog);
        let recorded = tokio::task::spawn_blocking(move || {
            let catalog = catalog.lock().unwrap_or_else(|e| e.into_inner());
            catalog.record_restore(&crate::catalog::RestoreRecord {
                started_at,
                completed_at,
                initiated_by: &who,
                action: "download",
                database: &database,
                key: key.as_deref(),
                location: location.as_deref(),
                taken_at,
                target: None,
                outcome: outcome.as_ref().map(|_| ()).map_err(String::as_str),
            })
        })
        .await;
        let failed = match recorded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            tracing::warn!(error = %e, "the download was not recorded in the restore history");
        }
    }
}

/// Bind the listener (before the first pass, so a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serve plain HTTP with the default [`Limits`] until `shutdown` resolves, then finish the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, state, None, Limits::default(), shutdown).await
}

/// Serve HTTP, or HTTPS with `tls`, within `limits`, until `shutdown` resolves.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<Tls>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = router_with(state, limits);
    server::run(listener, router, tls, limits, shutdown).await
}

/// Every route, with the default [`Limits`].
pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Limits::default())
}

fn router_with(state: Arc<AppState>, limits: Limits) -> Router {
    let timeout = limits.request_timeout;
    let deadline = move |req: Request, next: Next| request_deadline(timeout, req, next);
    let open = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz));
    let reads = Router::new()
        .route("/", get(api::index))
        .route("/metrics", get(api::metrics))
        .route("/status", get(api::status))
        .route("/list", get(api::list))
        .route("/restore-guide/{db}", get(guide::restore_guide))
        .route("/api/backup-status", get(page::backup_status))
        .route("/ui", get(page::ui))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::read_gate,
        ));
    let scoped = Router::new()
        .route("/trigger", post(api::trigger))
        .route("/api/audit", get(audit::list));
    let bounded = open
        .merge(reads)
        .merge(scoped)
        .route_layer(middleware::from_fn(deadline));
    Router::new()
        .merge(bounded)
        // Exempt from the deadline: fetching and verifying a large backup takes its time.
        .route("/download/{date}/{db}", get(download::download))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Answer 408 when a request (reading its body included) is not answered within `timeout`.
async fn request_deadline(timeout: std::time::Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {}s", timeout.as_secs_f64()),
            Some("send the request body at once"),
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A JSON error: `{"error": "...", "hint": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    hint: Option<String>,
    /// More fields of the JSON body (e.g. the missing `scope`).
    extra: Vec<(&'static str, Value)>,
    /// Response headers (`WWW-Authenticate`, `Retry-After`).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, hint: Option<&str>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            hint: hint.map(str::to_owned),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }
    fn bad_request(error: impl Into<String>, hint: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, Some(hint))
    }
    /// The error text (no hint).
    fn message(&self) -> String {
        self.error.clone()
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
        for (k, v) in self.extra {
            body[k] = v;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
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
// Formatting shared by the JSON views

/// Unix seconds as RFC 3339 UTC (`2026-11-22T03:00:00Z`), `null` when out of range.
fn iso(ts: i64) -> Value {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

/// Unix seconds as the UTC date `YYYY-MM-DD`.
fn date_of(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}
