//! The Discord sink (pure): one embed per alert, as in the seed's `formatDiscordMessage`.
//!
//! A job: title with the outcome, green `0x22c55e` when every database succeeded and red
//! `0xef4444` otherwise, inline fields `Databases` (`n/m successful`), `Total Size` and
//! `Duration` (`12.3s`), a `Failures` field listing each failed database with its error, the
//! job id in the footer and the alert's RFC 3339 timestamp. Other events: title, the headline
//! as description, red while firing, green when resolved, their facts as fields; the
//! `schema_changed` notice is blue `0x3b82f6` with the tables added, dropped and altered. Discord's
//! limits are respected (field values are cut at 1024 characters, at most 25 fields).

use serde_json::{Value, json};

use super::{Alert, Body, Outgoing, Subject, timestamp};
use crate::human;

pub const GREEN: u32 = 0x22c55e;
pub const RED: u32 = 0xef4444;
/// Notices (`schema_changed`): neither good nor bad news.
pub const BLUE: u32 = 0x3b82f6;

pub fn render(alert: &Alert) -> Option<Outgoing> {
    Some(Outgoing {
        path: "",
        body: Body::Json(payload(alert)?),
    })
}

/// The JSON body for `alert`; `None` for job-start pings.
pub fn payload(alert: &Alert) -> Option<Value> {
    let color = match &alert.subject {
        Subject::SchemaChanged { .. } => BLUE,
        _ if alert.is_bad() => RED,
        _ => GREEN,
    };
    let mut fields: Vec<Value> = Vec::new();
    let mut description: Option<String> = None;
    let mut footer = "Patina".to_string();
    match &alert.subject {
        Subject::JobStarted { .. } => return None,
        Subject::Job(job) => {
            fields.push(field(
                "Databases",
                &format!("{}/{} successful", job.successful(), job.results.len()),
                true,
            ));
            fields.push(field("Total Size", &human::bytes(job.total_size()), true));
            fields.push(field(
                "Duration",
                &format!("{:.1}s", job.duration().as_secs_f64()),
                true,
            ));
            let failures: Vec<String> = job
                .failures()
                .map(|(db, e)| format!("• **{db}**: {e}"))
                .collect();
            if !failures.is_empty() {
                fields.push(field("Failures", &failures.join("\n"), false));
            }
            footer = format!("Job ID: {}", job.job_id);
        }
        Subject::Duration {
            job_id,
            databases,
            elapsed,
            limit,
            ..
        } => {
            description = Some(alert.headline());
            fields.push(field("Running for", &human::duration(*elapsed), true));
            fields.push(field("Limit", &human::duration(*limit), true));
            fields.push(field("Databases", &databases.join(", "), false));
            footer = format!("Job ID: {job_id}");
        }
        Subject::SizeAnomaly {
            database,
            job_id,
            size,
            median,
            deviation,
            ..
        } => {
            description = Some(alert.headline());
            fields.push(field("Database", database, true));
            fields.push(field("Size", &human::bytes(*size), true));
            fields.push(field("Median", &human::bytes(*median), true));
            fields.push(field(
                "Change",
                &format!("{:+.0}%", deviation * 100.0),
                true,
            ));
            footer = format!("Job ID: {job_id}");
        }
        Subject::SchemaChanged {
            database,
            job_id,
            change,
            ..
        } => {
            description = Some(alert.headline());
            let list = |v: &Option<Vec<String>>| match v {
                None => "unknown".to_string(),
                Some(v) if v.is_empty() => "none".to_string(),
                Some(v) => v.join(", "),
            };
            fields.push(field("Database", database, true));
            fields.push(field("Added", &list(&change.added), true));
            fields.push(field("Dropped", &list(&change.dropped), true));
            fields.push(field("Altered", &list(&change.altered), true));
            footer = format!("Job ID: {job_id}");
        }
        Subject::Slow {
            database,
            job_id,
            duration,
            median,
            ..
        } => {
            description = Some(alert.headline());
            fields.push(field("Database", database, true));
            fields.push(field("Took", &human::duration(*duration), true));
            fields.push(field("Median", &human::duration(*median), true));
            footer = format!("Job ID: {job_id}");
        }
        Subject::ConfigInvalid { problems, .. } if alert.is_bad() => {
            description = Some(alert.headline());
            fields.push(field("Errors", &problems.join("\n"), false));
        }
        Subject::Drift { keys } => {
            description = Some(alert.headline());
            fields.push(field("Keys", &keys.join("\n"), false));
        }
        Subject::Summary(d) => {
            description = Some(alert.headline());
            for r in d.databases.iter().take(24) {
                let value = format!(
                    "last {} · {} · {}",
                    r.last_success
                        .map_or("never".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                    r.size.map_or("—".into(), human::bytes),
                    r.trend_text()
                );
                fields.push(field(&r.database, &value, true));
            }
            if !d.abnormal.is_empty() {
                fields.push(field("Needs attention", &d.abnormal.join("\n"), false));
            }
        }
        _ => description = Some(alert.headline()),
    }
    let mut embed = json!({
        "title": cut(&alert.title(), 256),
        "color": color,
        "fields": fields,
        "footer": { "text": footer },
        "timestamp": timestamp(alert.at),
    });
    if let (Some(d), Value::Object(m)) = (description, &mut embed) {
        m.insert("description".into(), cut(&d, 4096).into());
    }
    Some(json!({ "embeds": [embed] }))
}

fn field(name: &str, value: &str, inline: bool) -> Value {
    json!({ "name": cut(name, 256), "value": cut(value, 1024), "inline": inline })
}

/// At most `max` characters, ending in `…` when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}
