//! The JSON endpoints: service info (`/`), liveness and readiness (`/healthz`, `/readyz`), the
//! Prometheus scrape (`/metrics`), `/status`, `/list` and `POST /trigger`.
//!
//! `/healthz` is 200 while the loop ran a pass within 3 ticks (by the daemon's clock); `/readyz`
//! is 200 once the catalog answers and the last storage listing succeeded. `POST /trigger`
//! starts its job through [`Reconciler::start_job`](crate::reconcile::Reconciler::start_job),
//! like the loop, so one database never has two jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Client, check_database_name, parse_date, parse_limit};
use super::{ApiError, AppState, date_of, iso, json_response};
use crate::backup::JobRequest;
use crate::catalog::{
    CatalogError, InventoryRow, InventorySummary, JobDetail, PointStats, RestoreRow,
    VerificationRow,
};
use crate::human;
use crate::manifest::Trigger;
use crate::metrics::{Format, Inputs};
use crate::policy::{Policy, Scope};

/// Largest `limit` of `/list`.
pub const MAX_LIST: usize = 1000;

pub(super) async fn healthz(State(s): State<Arc<AppState>>) -> Response {
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

pub(super) async fn readyz(State(s): State<Arc<AppState>>) -> Response {
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

pub(super) async fn metrics(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let facts = s.read(|c| c.metric_facts()).await?;
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let cluster = s.reconciler.cluster().map(|n| n.view());
    let text = s.metrics.render(
        &Inputs {
            policy: &policy,
            snapshot: &snapshot,
            facts: &facts,
            now: (s.clock)(),
            started_at: s.started_at,
            auth_failures: s.guard.failures_total(),
            cluster: cluster.as_ref(),
        },
        format,
    );
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}

pub(super) async fn index(State(s): State<Arc<AppState>>) -> axum::Json<Value> {
    let policy = s.reconciler.policy();
    axum::Json(json!({
        "name": "Patina",
        "version": env!("CARGO_PKG_VERSION"),
        "description": env!("CARGO_PKG_DESCRIPTION"),
        "schedule": schedule_summary(&policy),
        "timezone": policy.daemon.timezone.name(),
        "retention": retention_summary(&policy),
        "databases": policy.databases.len(),
        "databaseList": policy.databases.iter().map(|d| json!({
            "name": d.name,
            "description": d.description,
            "kind": d.source.kind(),
            "priority": d.priority.as_str(),
        })).collect::<Vec<_>>(),
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
            "GET /api/audit": "The audit log, newest first (token with scope read; ?limit=)",
        },
    }))
}

/// `critical 0 3 * * *; normal 0 4 * * SUN` (priorities used by some database, and overrides).
pub(super) fn schedule_summary(policy: &Policy) -> String {
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

pub(super) fn retention_summary(policy: &Policy) -> String {
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
    running: &BTreeSet<String>,
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
                "description": d.description,
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

pub(super) struct StatusData {
    pub(super) running_jobs: Vec<JobDetail>,
    pub(super) recent: Vec<JobDetail>,
    pub(super) summary: InventorySummary,
    pub(super) last_success: BTreeMap<String, i64>,
    pub(super) points: BTreeMap<String, PointStats>,
    pub(super) drills: BTreeMap<String, VerificationRow>,
    pub(super) restores: Vec<RestoreRow>,
}

pub(super) async fn status_data(s: &AppState) -> Result<StatusData, ApiError> {
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
            points: c.restore_point_stats()?,
            drills: c.last_verifications()?,
            restores: c.recent_restores(10)?,
        })
    })
    .await
}

pub(super) async fn status(State(s): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let now = (s.clock)();
    let d = status_data(&s).await?;
    let recent_access = s
        .read(|c| c.audit_log(10, Some(&["download", "restore"])))
        .await?;
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
    let cluster = s.reconciler.cluster().map(|n| n.view());
    let mut schedules = database_schedules(&policy, &d.last_success, &snapshot.running, now);
    for entry in &mut schedules {
        let name = entry["database"].as_str().unwrap_or_default().to_string();
        let points = d.points.get(&name).cloned().unwrap_or_default();
        entry["restorePoints"] = json!(points.total);
        entry["restorePointsByTier"] = json!({"daily": points.daily, "weekly": points.weekly});
        entry["oldestRestorePoint"] = json!((points.total > 0).then(|| iso(points.oldest)));
        entry["lastDrill"] = json!(d.drills.get(&name).map(|v| json!({
            "at": iso(v.verified_at),
            "result": v.status,
            "restorePoint": v.key,
            "detail": v.detail,
        })));
        if let Some(view) = &cluster {
            entry["leaseHolder"] = json!(view.table.holders.get(&name));
        }
    }
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
        // Who downloaded or restored what (no client addresses: /status may be public).
        "recentAccess": recent_access.iter().map(|r| super::audit::audit_json(r, false)).collect::<Vec<_>>(),
        "storage": {
            "totalBackups": d.summary.total_backups,
            "totalSize": human::bytes(d.summary.total_bytes),
            "totalBytes": d.summary.total_bytes,
            "oldestBackup": d.summary.oldest_date,
            "newestBackup": d.summary.newest_date,
        },
        "restoreHistory": d.restores.iter().map(|r| json!({
            "at": iso(r.started_at),
            "by": r.initiated_by,
            "action": r.action,
            "database": r.database,
            "restorePoint": r.location,
            "takenAt": r.taken_at.map(iso),
            "target": r.target,
            "result": r.result,
            "error": r.error,
            "durationMs": r.duration_ms,
        })).collect::<Vec<_>>(),
        "lastPass": snapshot.last_pass.as_ref().map(|p| json!({
            "at": p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "durationMs": p.duration.as_millis() as u64,
            "error": p.error,
            // Passes between full listings list only the newest keys (DESIGN §16).
            "lastFullListing": snapshot.last_full_listing.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        })),
        // Each [[replica]] (DESIGN §15): how far behind it is, as its syncs found.
        "replicas": snapshot.replicas.iter().map(|(name, r)| json!({
            "name": name,
            "syncing": r.syncing,
            "missingObjects": r.missing,
            "lastSync": r.last_sync.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "behindSince": r.behind_since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "deletedObjects": r.deleted,
            "error": r.last_error,
        })).collect::<Vec<_>>(),
        // Several daemons (DESIGN §16): this node, the live ones, and who holds what.
        "cluster": cluster.as_ref().map(|v| json!({
            "node": v.node,
            "leaseTtlSeconds": v.lease_ttl.as_secs(),
            "valid": s.reconciler.cluster().is_some_and(|n| n.valid()),
            "liveNodes": v.live,
            "heldDatabases": v.table.held.keys().collect::<Vec<_>>(),
            "maintenanceHolder": v.table.maintenance_holder,
            "leaseChanges": v.changes.iter().fold(BTreeMap::<&str, u64>::new(), |mut by, ((_, reason), n)| {
                *by.entry(reason).or_default() += n;
                by
            }),
            "error": v.error,
        })),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
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
        "location": b.location,
        "createdAt": iso(b.created_at),
        "expiresAt": iso(b.expires_at),
    })
}

pub(super) async fn list(
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
    let limit = parse_limit(p.limit.as_deref())?;
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    databases: Option<Vec<String>>,
    reason: Option<String>,
}

pub(super) async fn trigger(
    State(s): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = s
        .authorize(&headers, client, Scope::Trigger, "trigger", "/trigger")
        .await?;
    let mut target = "/trigger".to_string();
    let outcome = start_manual_job(&s, &caller.name, body, &mut target).await;
    let (result, status) = match &outcome {
        Ok(r) => ("ok", r.status()),
        Err(e) => ("error", e.status),
    };
    s.audit(
        Some(&caller.name),
        client,
        "trigger",
        &target,
        result,
        status,
    )
    .await;
    outcome
}

/// `POST /trigger` for an authorized caller; `target` becomes the databases asked for.
async fn start_manual_job(
    s: &AppState,
    caller: &str,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    target: &mut String,
) -> Result<Response, ApiError> {
    let policy = s.reconciler.policy();
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
    *target = databases.join(",");
    if databases.is_empty() {
        return Err(ApiError::bad_request(
            "no enabled databases to back up",
            "declare a [[database]] in patina.toml",
        ));
    }
    // Several daemons: a backup runs on the node holding the database's lease.
    if let Some(node) = s.reconciler.cluster() {
        let view = node.view();
        let elsewhere: Vec<String> = databases
            .iter()
            .filter(|d| !node.holds(d))
            .map(|d| match view.table.holders.get(d.as_str()) {
                Some(h) => format!("{d} (held by node {h})"),
                None => format!("{d} (not held by any node yet)"),
            })
            .collect();
        if !elsewhere.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "this node ({}) does not hold the lease on: {}",
                    view.node,
                    elsewhere.join(", ")
                ),
                Some("trigger the backup on the node holding it (GET /status shows leaseHolder)"),
            ));
        }
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
                initiated_by: Some(format!("api:{caller}")),
                reason: request.reason,
            },
            &Default::default(),
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
