//! The status page: `/api/backup-status` in the seed's shape and the "Data Backups" page at
//! `/ui`, both from one typed [`BackupStatus`] — serialized for the one, rendered for the other.
//!
//! - `/api/backup-status` runs the seed's three queries; a day's `type` is `weekly` when a
//!   database whose schedule fires weekly or less often was backed up that day (the seed's
//!   Sunday "Weekly Full" run), `daily` otherwise; `isHealthy` is a committed backup dated today
//!   or yesterday (UTC).
//! - `/ui` is rendered on the server from `ui.html` (no scripts, no external assets), so it
//!   works with JavaScript off and refreshes itself every minute.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::api::{StatusData, retention_summary, schedule_summary, status_data};
use super::{ApiError, AppState};
use crate::catalog::{DayRow, InventorySummary, JobDetail, VerificationRow};
use crate::human;
use crate::policy::Policy;

/// The status page template; see [`render`].
const UI_TEMPLATE: &str = include_str!("ui.html");

/// The status page's data (seed 000): served as JSON by `/api/backup-status` and shown by `/ui`.
///
/// Fields here and below are declared in alphabetical order, the order the JSON has always had,
/// so the bytes served stay the same.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The newest days with backups (at most 7), newest first.
    pub daily_history: Vec<Day>,
    /// A committed backup is dated today or yesterday (UTC).
    pub is_healthy: bool,
    /// How the last 10 jobs went.
    pub reliability: Reliability,
    /// Totals over the inventory.
    pub summary: Summary,
}

/// Totals over the backups in storage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Date (`YYYY-MM-DD`) of the newest backup, if any.
    pub last_backup: Option<String>,
    pub total_backups: u64,
    pub total_bytes: u64,
    /// Days with at least one backup.
    pub unique_days: u64,
}

/// One day of the daily history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// Backups taken that day.
    pub count: u64,
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Their total size in bytes.
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: DayKind,
}

/// A day is `weekly` when a database whose schedule fires weekly or less often was backed up
/// that day (the seed's Sunday "Weekly Full" run), `daily` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DayKind {
    Daily,
    Weekly,
}

/// How the recent jobs went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reliability {
    /// Completed with some databases failed.
    pub partial_jobs: usize,
    /// Completed with no database failed.
    pub perfect_jobs: usize,
    /// Percent of the jobs that were perfect (0 with no jobs).
    pub score: f64,
    pub total_jobs: usize,
}

impl BackupStatus {
    /// The page's data from the catalog's answers (the seed's three queries), at `now`.
    pub fn new(
        policy: &Policy,
        summary: InventorySummary,
        days: Vec<DayRow>,
        jobs: &[JobDetail],
        now: DateTime<Utc>,
    ) -> BackupStatus {
        let weekly_dbs: BTreeSet<&str> = policy
            .databases
            .iter()
            .filter(|d| {
                crate::metrics::expected_interval(&d.schedule, now)
                    .is_some_and(|s| s >= 7.0 * 86_400.0)
            })
            .map(|d| d.name.as_str())
            .collect();
        let daily_history: Vec<Day> = days
            .into_iter()
            .map(|d| {
                let weekly = d.databases.iter().any(|n| weekly_dbs.contains(n.as_str()));
                Day {
                    count: d.count,
                    date: d.date,
                    size: d.bytes,
                    kind: if weekly {
                        DayKind::Weekly
                    } else {
                        DayKind::Daily
                    },
                }
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
        let is_healthy = daily_history
            .iter()
            .any(|d| d.date == today || d.date == yesterday);
        BackupStatus {
            daily_history,
            is_healthy,
            reliability: Reliability {
                partial_jobs: partial,
                perfect_jobs: perfect,
                score,
                total_jobs: jobs.len(),
            },
            summary: Summary {
                last_backup: summary.newest_date,
                total_backups: summary.total_backups,
                total_bytes: summary.total_bytes,
                unique_days: summary.unique_days,
            },
        }
    }

    /// Run the three queries and build the page's data.
    async fn load(s: &AppState, policy: &Policy, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let (summary, days, jobs) = s
            .read(|c| {
                Ok((
                    c.inventory_summary()?,
                    c.daily_history(7)?,
                    c.jobs_detail(10, false)?,
                ))
            })
            .await?;
        Ok(BackupStatus::new(policy, summary, days, &jobs, now))
    }
}

pub(super) async fn backup_status(
    State(s): State<Arc<AppState>>,
) -> Result<axum::Json<BackupStatus>, ApiError> {
    let policy = s.reconciler.policy();
    let now = (s.clock)();
    Ok(axum::Json(BackupStatus::load(&s, &policy, now).await?))
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

/// What `/ui` shows per database beyond the status data: its restore points, the sizes of its
/// newest dumps (for the trend) and its newest verification (the last drill).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct DbPanel {
    pub(super) restore_points: u64,
    /// Unix seconds of the oldest restore point.
    pub(super) oldest: Option<i64>,
    /// Stored sizes of the newest [`TREND_POINTS`] dumps, oldest first.
    pub(super) sizes: Vec<u64>,
    pub(super) last_drill: Option<VerificationRow>,
    /// With `[cluster]`: the node holding the database's lease (DESIGN §16).
    pub(super) holder: Option<String>,
}

/// How many dumps the size trend spans.
const TREND_POINTS: usize = 30;

async fn db_panels(s: &AppState, policy: &Policy) -> Result<BTreeMap<String, DbPanel>, ApiError> {
    let names: Vec<String> = policy.databases.iter().map(|d| d.name.clone()).collect();
    s.read(move |c| {
        let counts = c.restore_point_stats()?;
        let drills = c.last_verifications()?;
        let mut out = BTreeMap::new();
        for name in names {
            let points = counts.get(&name).cloned().unwrap_or_default();
            let (restore_points, oldest) = (points.total, points.oldest);
            let mut sizes = c.recent_dump_sizes(&name, None, TREND_POINTS)?;
            sizes.reverse();
            out.insert(
                name.clone(),
                DbPanel {
                    restore_points,
                    oldest: (restore_points > 0).then_some(oldest),
                    sizes,
                    last_drill: drills.get(&name).cloned(),
                    holder: None,
                },
            );
        }
        Ok(out)
    })
    .await
}

/// An inline SVG line of `sizes` (oldest first): no script, no external asset; it draws in
/// `currentColor`, so it follows the page's light or dark palette.
fn sparkline(sizes: &[u64]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    if sizes.is_empty() {
        return r#"<span class="muted">no dumps yet</span>"#.to_string();
    }
    let (min, max) = (
        *sizes.iter().min().unwrap_or(&0) as f64,
        *sizes.iter().max().unwrap_or(&0) as f64,
    );
    let span = (max - min).max(1.0);
    let step = if sizes.len() > 1 {
        (W - 4.0) / (sizes.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<(f64, f64)> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let x = 2.0 + step * i as f64;
            // A flat history is drawn in the middle, not along an edge.
            let y = if max == min {
                H / 2.0
            } else {
                H - 3.0 - (*s as f64 - min) / span * (H - 6.0)
            };
            (x, y)
        })
        .collect();
    let path = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (lx, ly) = points[points.len() - 1];
    let label = format!(
        "Size of the last {} backups: from {} to {}",
        sizes.len(),
        human::bytes(sizes[0]),
        human::bytes(sizes[sizes.len() - 1])
    );
    format!(
        r#"<svg class="trend" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{label}"><title>{label}</title><polyline fill="none" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round" points="{path}"/><circle cx="{lx:.1}" cy="{ly:.1}" r="2.5" fill="currentColor"/></svg>"#,
        label = esc(&label),
    )
}

pub(super) async fn ui(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let policy = s.reconciler.policy();
    let snapshot = s.reconciler.snapshot();
    let now = (s.clock)();
    let status = BackupStatus::load(&s, &policy, now).await?;
    let data = status_data(&s).await?;
    let mut panels = db_panels(&s, &policy).await?;
    if let Some(node) = s.reconciler.cluster() {
        let view = node.view();
        for (db, panel) in panels.iter_mut() {
            panel.holder = view.table.holders.get(db).map(|h| {
                if *h == view.node {
                    format!("{h} (this node)")
                } else {
                    h.clone()
                }
            });
        }
    }
    let places = destinations(&s, &policy, &snapshot);
    let html = render(
        &status,
        &data,
        &policy,
        (&snapshot.running, &places),
        &panels,
        now,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

/// One storage destination as the page shows it: the primary, then each replica.
pub(super) struct Place {
    pub name: String,
    pub location: String,
    /// `completed` (current), `partial` (catching up), `failed`.
    pub class: &'static str,
    pub state: String,
}

/// Where backups live now (DESIGN §15): the primary as the last pass found it, each replica as
/// its syncs found it.
fn destinations(
    s: &AppState,
    policy: &Policy,
    snapshot: &crate::reconcile::Snapshot,
) -> Vec<Place> {
    let tz = policy.daemon.timezone;
    let primary = match snapshot.last_pass.as_ref().and_then(|p| p.error.as_ref()) {
        Some(e) => ("failed", format!("✗ {e}")),
        None => ("completed", "✓ reachable".to_string()),
    };
    let mut out = vec![Place {
        name: crate::policy::PRIMARY.into(),
        location: s.reconciler.store().location(""),
        class: primary.0,
        state: primary.1,
    }];
    for d in s.reconciler.replicas() {
        let r = snapshot.replicas.get(&d.name).cloned().unwrap_or_default();
        let synced = r.last_sync.map_or("never".into(), |t| local_time(t, tz));
        let (class, state) = match (&r.last_error, r.missing) {
            (Some(e), _) => ("failed", format!("✗ {e}")),
            (None, Some(0)) => ("completed", format!("✓ up to date, last sync {synced}")),
            (None, Some(n)) => (
                "partial",
                format!("{n} objects to copy, last complete sync {synced}"),
            ),
            (None, None) if r.syncing => ("partial", "first sync running".to_string()),
            (None, None) => ("partial", "not synced yet".to_string()),
        };
        out.push(Place {
            name: d.name,
            location: d.store.location(""),
            class,
            state,
        });
    }
    out
}

/// The page: `ui.html` filled from the page's data, the `/status` facts (last success per
/// database, recent jobs), the policy's schedules, the databases running now and the state of
/// each destination.
fn render(
    status: &BackupStatus,
    data: &StatusData,
    policy: &Policy,
    (running, places): (&BTreeSet<String>, &[Place]),
    panels: &BTreeMap<String, DbPanel>,
    now: DateTime<Utc>,
) -> String {
    let tz = policy.daemon.timezone;
    let summary = &status.summary;
    let rel = &status.reliability;

    let last_backup = summary.last_backup.as_deref();
    let (state_class, banner_icon, banner_text, banner_detail) = if status.is_healthy {
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
    let today_html = if let Some(day) = status.daily_history.iter().find(|d| d.date == today) {
        let count = day.count;
        format!(
            r#"<p class="today ok" role="status"><span aria-hidden="true">✓</span> Backup ran today — {count} file{}</p>"#,
            if count == 1 { "" } else { "s" }
        )
    } else {
        r#"<p class="today warn" role="status"><span aria-hidden="true">!</span> No backup has run today yet</p>"#.to_string()
    };

    let stats = [
        (summary.total_backups.to_string(), "Total Backups"),
        (summary.unique_days.to_string(), "Days Covered"),
        (human::bytes(summary.total_bytes), "Storage Used"),
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

    let score = rel.score;
    let bar_class = if score >= 90.0 {
        "ok"
    } else if score >= 70.0 {
        "warn"
    } else {
        "bad"
    };

    let days_html = if status.daily_history.is_empty() {
        r#"<li class="empty">No backups in storage yet.</li>"#.to_string()
    } else {
        status
            .daily_history
            .iter()
            .map(|Day { count, date, size, kind }| {
                let badge = if *kind == DayKind::Weekly {
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
            } else if running.contains(&d.name) {
                "running now".to_string()
            } else {
                d.schedule
                    .next_after(now)
                    .map_or("—".into(), |t| local_time(t, tz))
            };
            let next = match panels.get(&d.name).and_then(|p| p.holder.as_deref()) {
                Some(holder) => format!("{next} · on node {holder}"),
                None => next,
            };
            let last = data
                .last_success
                .get(&d.name)
                .and_then(|t| DateTime::<Utc>::from_timestamp(*t, 0))
                .map_or("never".into(), |t| local_time(t, tz));
            let about = d.description.as_deref().map_or(String::new(), |t| {
                format!(r#"<span class="about">{}</span>"#, esc(t))
            });
            format!(
                r#"<tr><th scope="row">{}{about}</th><td><span class="badge prio">{}</span></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>"#,
                esc(&d.name),
                esc(d.priority.as_str()),
                esc(d.schedule.expression()),
                esc(&next),
                esc(&last),
            )
        })
        .collect::<String>();

    let points_html = policy
        .databases
        .iter()
        .map(|d| {
            let panel = panels.get(&d.name).cloned().unwrap_or_default();
            let points = match panel.oldest.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)) {
                Some(oldest) => format!(
                    r#"{}<span class="by"> · oldest {}</span>"#,
                    panel.restore_points,
                    esc(&local_time(oldest, tz))
                ),
                None => "0".to_string(),
            };
            let newest = panel
                .sizes
                .last()
                .map_or(String::new(), |s| format!(r#" <span class="by">{}</span>"#, esc(&human::bytes(*s))));
            let drill = match &panel.last_drill {
                None => r#"<span class="by">never</span>"#.to_string(),
                Some(v) => {
                    let when = DateTime::<Utc>::from_timestamp(v.verified_at, 0)
                        .map_or("—".into(), |t| local_time(t, tz));
                    if v.status == "ok" {
                        format!(r#"<span class="st-ok">✓ passed</span> <span class="by">{}</span>"#, esc(&when))
                    } else {
                        format!(
                            r#"<span class="st-bad" title="{}">✗ failed</span> <span class="by">{}</span>"#,
                            esc(v.detail.as_deref().unwrap_or("")),
                            esc(&when)
                        )
                    }
                }
            };
            format!(
                r#"<tr><th scope="row">{}</th><td>{points}</td><td class="trend-cell">{}{newest}</td><td>{drill}</td></tr>"#,
                esc(&d.name),
                sparkline(&panel.sizes),
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

    let restores_html = if data.restores.is_empty() {
        r#"<tr><td colspan="6" class="empty">No restores, verifications or downloads yet.</td></tr>"#
            .to_string()
    } else {
        data.restores
            .iter()
            .map(|r| {
                let when = DateTime::<Utc>::from_timestamp(r.started_at, 0)
                    .map_or("—".into(), |t| local_time(t, tz));
                let taken = r
                    .taken_at
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                    .map_or("—".into(), |t| local_time(t, tz));
                let (class, result) = match r.result.as_str() {
                    "success" => ("completed", "✓ ".to_string() + &human::duration_ms(r.duration_ms)),
                    _ => ("failed", "✗ ".to_string() + r.error.as_deref().unwrap_or("failed")),
                };
                format!(
                    r#"<tr><td>{}</td><td>{}</td><td>{}</td><td title="{}">{}</td><td>{}</td><td class="st-{class}">{}</td></tr>"#,
                    esc(&when),
                    esc(&capitalize(&r.action)),
                    esc(&r.database),
                    esc(r.location.as_deref().unwrap_or("")),
                    esc(&taken),
                    esc(&r.initiated_by),
                    esc(&result),
                )
            })
            .collect()
    };

    let places_html: String = places
        .iter()
        .map(|p| {
            format!(
                r#"<tr><td>{}</td><td>{}</td><td class="st-{}">{}</td></tr>"#,
                esc(&p.name),
                esc(&p.location),
                p.class,
                esc(&p.state)
            )
        })
        .collect();

    let footer = format!(
        "Schedules ({}): {} • Retention: {} • Updated {}",
        tz.name(),
        schedule_summary(policy),
        retention_summary(policy),
        local_time(now, tz)
    );

    UI_TEMPLATE
        .replace("{{state}}", state_class)
        .replace("{{banner_icon}}", banner_icon)
        .replace("{{banner_text}}", banner_text)
        .replace("{{banner_detail}}", &esc(&banner_detail))
        .replace("{{today}}", &today_html)
        .replace("{{stats}}", &stats)
        .replace("{{score}}", &format!("{score:.0}"))
        .replace("{{score_raw}}", &format!("{score:.1}"))
        .replace("{{bar_class}}", bar_class)
        .replace("{{perfect}}", &rel.perfect_jobs.to_string())
        .replace("{{partial}}", &rel.partial_jobs.to_string())
        .replace("{{total_jobs}}", &rel.total_jobs.to_string())
        .replace("{{days}}", &days_html)
        .replace("{{next_runs}}", &next_html)
        .replace("{{restore_points}}", &points_html)
        .replace("{{restores}}", &restores_html)
        .replace("{{destinations}}", &places_html)
        .replace("{{jobs}}", &jobs_html)
        .replace("{{footer}}", &esc(&footer))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
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
    use crate::catalog::{JobRow, RestoreRow};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// alpha backs up daily, beta weekly.
    fn policy() -> Policy {
        let text = "[daemon]\ntick = \"60s\"\n\
             [priorities.critical]\nschedule = \"0 3 * * *\"\n\
             [priorities.normal]\nschedule = \"0 4 * * SUN\"\n\
             [[database]]\nname = \"alpha\"\nkind = \"sqlite\"\npath = \"a.db\"\npriority = \"critical\"\n\
             [[database]]\nname = \"beta\"\nkind = \"sqlite\"\npath = \"b.db\"\npriority = \"normal\"\n";
        crate::config::from_str(text, "patina.toml", std::path::Path::new("/srv"), &|_| None)
            .unwrap()
    }

    fn day(date: &str, databases: &[&str]) -> DayRow {
        DayRow {
            date: date.into(),
            count: databases.len() as u64,
            bytes: 1000 * databases.len() as u64,
            databases: databases.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn job(failed: i64) -> JobDetail {
        JobDetail {
            job: JobRow {
                job_id: format!("job-{failed}"),
                started_at: t("2026-11-16T03:00:00Z").timestamp(),
                completed_at: Some(t("2026-11-16T03:00:05Z").timestamp()),
                status: "completed".into(),
                trigger_type: "scheduled".into(),
                total_databases: 2,
                successful_count: 2 - failed,
                failed_count: failed,
                total_size_bytes: 2000,
                duration_ms: Some(5000),
                error_message: None,
            },
            initiated_by: Some("daemon".into()),
            reason: None,
        }
    }

    fn status(now: DateTime<Utc>) -> BackupStatus {
        BackupStatus::new(
            &policy(),
            InventorySummary {
                total_backups: 3,
                unique_days: 2,
                total_bytes: 3000,
                oldest_date: Some("2026-11-15".into()),
                newest_date: Some("2026-11-16".into()),
            },
            vec![
                day("2026-11-16", &["alpha", "beta"]),
                day("2026-11-15", &["alpha"]),
            ],
            &[job(0), job(1)],
            now,
        )
    }

    #[test]
    fn the_status_serializes_in_the_seeds_shape_byte_for_byte() {
        let json = serde_json::to_string(&status(t("2026-11-17T12:00:00Z"))).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"dailyHistory":[{"count":2,"date":"2026-11-16","size":2000,"type":"weekly"},"#,
                r#"{"count":1,"date":"2026-11-15","size":1000,"type":"daily"}],"isHealthy":true,"#,
                r#""reliability":{"partialJobs":1,"perfectJobs":1,"score":50.0,"totalJobs":2},"#,
                r#""summary":{"lastBackup":"2026-11-16","totalBackups":3,"totalBytes":3000,"uniqueDays":2}}"#,
            )
        );
    }

    #[test]
    fn the_page_is_rendered_from_the_same_status() {
        let now = t("2026-11-16T12:00:00Z");
        let data = StatusData {
            running_jobs: vec![],
            recent: vec![job(1)],
            summary: InventorySummary {
                total_backups: 3,
                unique_days: 2,
                total_bytes: 3000,
                oldest_date: None,
                newest_date: None,
            },
            last_success: Default::default(),
            points: Default::default(),
            drills: Default::default(),
            restores: vec![RestoreRow {
                started_at: t("2026-11-16T09:30:00Z").timestamp(),
                initiated_by: "cli:ops".into(),
                action: "restore".into(),
                database: "alpha".into(),
                key: Some("daily/2026-11-15/alpha/20261115T030000Z.sql.zst".into()),
                location: Some(
                    "weekly/2026-W46.tar:2026-11-15/alpha/20261115T030000Z.sql.zst".into(),
                ),
                taken_at: Some(t("2026-11-15T03:00:00Z").timestamp()),
                target: Some("/tmp/alpha.db".into()),
                result: "success".into(),
                error: None,
                duration_ms: 1500,
            }],
        };
        let panels = BTreeMap::from([(
            "alpha".to_string(),
            DbPanel {
                restore_points: 2,
                oldest: Some(t("2026-11-15T03:00:00Z").timestamp()),
                sizes: vec![1000, 1200, 900],
                last_drill: Some(VerificationRow {
                    key: "k".into(),
                    verified_at: t("2026-11-16T05:00:00Z").timestamp(),
                    status: "failed".into(),
                    detail: Some("row count of users differs".into()),
                }),
                holder: Some("backup-2".into()),
            },
        )]);
        let html = render(
            &status(now),
            &data,
            &policy(),
            (
                &BTreeSet::new(),
                &[
                    Place {
                        name: "primary".into(),
                        location: "s3://grove/patina/".into(),
                        class: "completed",
                        state: "✓ reachable".into(),
                    },
                    Place {
                        name: "offsite".into(),
                        location: "file:///mnt/offsite/".into(),
                        class: "failed",
                        state: "✗ list the replica: access denied".into(),
                    },
                ],
            ),
            &panels,
            now,
        );
        for needle in [
            "Backups Healthy",
            "Backup ran today — 2 files",
            r#"<time datetime="2026-11-16">Today</time> <span class="badge weekly">Weekly</span>"#,
            r#"<time datetime="2026-11-15">Yesterday</time> <span class="badge daily">Daily</span>"#,
            "<span>50%</span>",
            "⚠ Partial (1 failed)",
            "2.9 KB",
            "2<span class=\"by\"> · oldest Nov 15, 03:00 UTC</span>",
            r#"aria-label="Size of the last 3 backups: from 1000 B to 900 B""#,
            r#"title="row count of users differs">✗ failed</span>"#,
            "no dumps yet",
            " · on node backup-2</td>",
            r#"<tr><td>offsite</td><td>file:///mnt/offsite/</td><td class="st-failed">✗ list the replica: access denied</td></tr>"#,
            r#"<td>Restore</td><td>alpha</td><td title="weekly/2026-W46.tar:2026-11-15/alpha/20261115T030000Z.sql.zst">Nov 15, 03:00 UTC</td><td>cli:ops</td><td class="st-completed">✓ 2s</td>"#,
        ] {
            assert!(html.contains(needle), "{needle} missing from {html}");
        }
        assert!(!html.contains("{{"), "unfilled template field");
        let unhealthy = render(
            &status(t("2026-11-18T12:00:00Z")),
            &data,
            &policy(),
            (&BTreeSet::new(), &[]),
            &BTreeMap::new(),
            t("2026-11-18T12:00:00Z"),
        );
        assert!(
            unhealthy.contains("Backup Issue") && unhealthy.contains("No backup has run today yet")
        );
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
