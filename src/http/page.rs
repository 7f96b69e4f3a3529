//! The status page: `/api/backup-status` in the seed's shape and the "Data Backups" page at
//! `/ui`.
//!
//! - `/api/backup-status` runs the seed's three queries; a day's `type` is `weekly` when a
//!   database whose schedule fires weekly or less often was backed up that day (the seed's
//!   Sunday "Weekly Full" run), `daily` otherwise; `isHealthy` is a committed backup dated today
//!   or yesterday (UTC).
//! - `/ui` is rendered on the server from `ui.html` (no scripts, no external assets), so it
//!   works with JavaScript off and refreshes itself every minute.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use super::api::{StatusData, retention_summary, schedule_summary, status_data};
use super::{ApiError, AppState};
use crate::human;

/// The status page template; see [`ui`].
const UI_TEMPLATE: &str = include_str!("../ui.html");

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
    let weekly_dbs: BTreeSet<&str> = policy
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

pub(super) async fn backup_status(
    State(s): State<Arc<AppState>>,
) -> Result<axum::Json<Value>, ApiError> {
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

pub(super) async fn ui(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
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
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
