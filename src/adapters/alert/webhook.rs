//! The generic webhook sink (pure): a JSON POST per alert, with the sink's custom headers.
//!
//! Job outcomes use the seed's shapes exactly:
//!
//! ```json
//! {"type":"backup_completed","jobId":"…","status":"success","timestamp":"2024-12-08T03:01:30Z",
//!  "summary":{"successful":9,"failed":0,"totalSize":"2.1 MB","duration":"45s"},
//!  "details":[{"database":"groveauth","status":"success","size":"212 KB"}]}
//! {"type":"backup_failed","jobId":"…","status":"partial_failure","timestamp":"…",
//!  "summary":{…},"failures":[{"database":"scout-db","error":"…"}]}
//! ```
//!
//! Every other event shares one envelope — `type` (`backup_duration_exceeded`,
//! `backup_size_anomaly`, `backup_stale`, `archive_failed`, `backup_drift`, `config_invalid`,
//! `schema_changed`, `backup_slow`, `daily_summary`, `test`), `state` (`firing` | `reminder` |
//! `resolved`), `timestamp`, `message` (one human line) — plus the event's own fields
//! (`database`, `jobId`, …). The two wave-2 notices, each sent once per dump:
//!
//! ```json
//! {"type":"schema_changed","state":"firing","timestamp":"…","message":"…","jobId":"…",
//!  "database":"blog","key":"daily/…/20261122T030012Z.sql.zst","previousKey":"daily/…",
//!  "tablesAdded":["tags"],"tablesDropped":[],"tablesAltered":["posts"]}
//! {"type":"backup_slow","state":"firing","timestamp":"…","message":"…","jobId":"…",
//!  "database":"blog","key":"…","duration":"4m 2s","durationSeconds":242.0,
//!  "medianSeconds":61.5,"runs":7,"factor":3}
//! ```
//!
//! A `tables…` list is `null` when the previous dump's record cannot say (it predates per-table
//! schema hashes).
//! Job-start pings are for healthchecks only: a webhook gets nothing for them.

use serde_json::{Value, json};

use super::{Alert, AlertState, Body, Digest, JobStatus, JobSummary, Outgoing, Subject, timestamp};
use crate::human;

pub fn render(alert: &Alert) -> Option<Outgoing> {
    Some(Outgoing {
        path: "",
        body: Body::Json(payload(alert)?),
    })
}

/// The JSON body for `alert`; `None` for job-start pings.
pub fn payload(alert: &Alert) -> Option<Value> {
    let base = |kind: &str| {
        let mut v = json!({
            "type": kind,
            "state": alert.state.as_str(),
            "timestamp": timestamp(alert.at),
            "message": alert.headline(),
        });
        if let (Some(since), Value::Object(m)) = (alert.since, &mut v)
            && alert.state != AlertState::Firing
        {
            m.insert("since".into(), timestamp(since).into());
        }
        v
    };
    let with = |mut v: Value, extra: Value| {
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    };
    Some(match &alert.subject {
        Subject::JobStarted { .. } => return None,
        Subject::Job(job) => job_payload(job, alert),
        Subject::Duration {
            job_id,
            databases,
            started_at,
            elapsed,
            limit,
            finished,
        } => with(
            base("backup_duration_exceeded"),
            json!({
                "jobId": job_id,
                "databases": databases,
                "startedAt": timestamp(*started_at),
                "duration": human::duration(*elapsed),
                "maxDuration": human::duration(*limit),
                "running": !finished,
            }),
        ),
        Subject::SizeAnomaly {
            database,
            job_id,
            key,
            size,
            median,
            deviation,
            limit,
        } => with(
            base("backup_size_anomaly"),
            json!({
                "jobId": job_id,
                "database": database,
                "key": key,
                "size": human::bytes(*size),
                "sizeBytes": size,
                "medianBytes": median,
                "deviation": round2(*deviation),
                "maxDeviation": limit,
            }),
        ),
        Subject::SchemaChanged {
            database,
            job_id,
            key,
            previous_key,
            change,
        } => with(
            base("schema_changed"),
            json!({
                "jobId": job_id,
                "database": database,
                "key": key,
                "previousKey": previous_key,
                "tablesAdded": change.added,
                "tablesDropped": change.dropped,
                "tablesAltered": change.altered,
            }),
        ),
        Subject::Slow {
            database,
            job_id,
            key,
            duration,
            median,
            runs,
        } => with(
            base("backup_slow"),
            json!({
                "jobId": job_id,
                "database": database,
                "key": key,
                "duration": human::duration(*duration),
                "durationSeconds": round2(duration.as_secs_f64()),
                "medianSeconds": round2(median.as_secs_f64()),
                "runs": runs,
                "factor": super::SLOW_FACTOR,
            }),
        ),
        Subject::Stale {
            database,
            last_success,
            window,
        } => with(
            base("backup_stale"),
            json!({
                "database": database,
                "lastSuccess": last_success.map(timestamp),
                "staleAfter": human::duration(window.to_std().unwrap_or_default()),
            }),
        ),
        Subject::ArchiveFailed { week, error } => with(
            base("archive_failed"),
            json!({ "week": week, "error": error }),
        ),
        Subject::Drift { keys } => with(base("backup_drift"), json!({ "keys": keys })),
        Subject::StorageUnreachable { location, error } => with(
            base("storage_unreachable"),
            json!({ "location": location, "error": error }),
        ),
        Subject::ConfigInvalid { file, problems } => with(
            base("config_invalid"),
            json!({ "file": file, "errors": problems }),
        ),
        Subject::Summary(digest) => with(base("daily_summary"), digest_json(digest)),
        Subject::VerifyFailed {
            database,
            point,
            problems,
        } => with(
            base("verify_failed"),
            json!({ "database": database, "restorePoint": point, "problems": problems }),
        ),
        Subject::ReplicaBehind {
            replica,
            missing,
            since,
            error,
        } => with(
            base("replica_behind"),
            json!({ "replica": replica, "missingObjects": missing, "since": timestamp(*since), "error": error }),
        ),
        Subject::Test => base("test"),
    })
}

fn job_payload(job: &JobSummary, alert: &Alert) -> Value {
    let status = job.status();
    let mut v = json!({
        "type": if status == JobStatus::Success { "backup_completed" } else { "backup_failed" },
        "jobId": job.job_id,
        "status": status.as_str(),
        "timestamp": timestamp(alert.at),
        "summary": {
            "successful": job.successful(),
            "failed": job.failed(),
            "totalSize": human::bytes(job.total_size()),
            "duration": human::duration(job.duration()),
        },
    });
    let Value::Object(m) = &mut v else {
        unreachable!()
    };
    if status == JobStatus::Success {
        let details: Vec<Value> = job
            .results
            .iter()
            .map(|r| {
                json!({
                    "database": r.database,
                    "status": "success",
                    "size": human::bytes(*r.result.as_ref().unwrap_or(&0)),
                })
            })
            .collect();
        m.insert("details".into(), details.into());
    } else {
        let failures: Vec<Value> = job
            .results
            .iter()
            .filter_map(|r| {
                r.result
                    .as_ref()
                    .err()
                    .map(|e| json!({ "database": r.database, "error": e }))
            })
            .collect();
        m.insert("failures".into(), failures.into());
    }
    v
}

fn digest_json(d: &Digest) -> Value {
    json!({
        "jobs": d.jobs,
        "failedJobs": d.failed_jobs,
        "databases": d.databases.iter().map(|r| json!({
            "database": r.database,
            "lastSuccess": r.last_success.map(timestamp),
            "size": r.size.map(human::bytes),
            "trend": r.trend_text(),
        })).collect::<Vec<_>>(),
        "abnormal": d.abnormal,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
