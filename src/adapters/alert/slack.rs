//! The Slack sink (pure): an incoming-webhook message with Block Kit blocks carrying the same
//! facts as the Discord embed — a header with the outcome, a section of fields (databases,
//! total size, duration), the failures, and a context line with the job id and timestamp.
//! `text` holds the one-line headline (Slack's notification fallback).

use serde_json::{Value, json};

use super::discord::cut;
use super::{Alert, Body, Outgoing, Subject, timestamp};
use crate::human;

pub fn render(alert: &Alert) -> Option<Outgoing> {
    Some(Outgoing {
        path: "",
        body: Body::Json(payload(alert)?),
    })
}

/// The JSON body for `alert`; `None` for job-start pings.
pub fn payload(alert: &Alert) -> Option<Value> {
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&alert.title(), 150), "emoji": true },
    })];
    let mut context = vec![timestamp(alert.at)];
    match &alert.subject {
        Subject::JobStarted { .. } => return None,
        Subject::Job(job) => {
            blocks.push(fields(&[
                (
                    "Databases",
                    format!("{}/{} successful", job.successful(), job.results.len()),
                ),
                ("Total size", human::bytes(job.total_size())),
                ("Duration", human::duration(job.duration())),
            ]));
            let failures: Vec<String> = job
                .failures()
                .map(|(db, e)| format!("• `{db}`: {e}"))
                .collect();
            if !failures.is_empty() {
                blocks.push(section(&format!("*Failures*\n{}", failures.join("\n"))));
            }
            context.insert(0, format!("Job ID: {}", job.job_id));
        }
        Subject::ConfigInvalid { problems, .. } if alert.is_bad() => {
            blocks.push(section(&alert.headline()));
            blocks.push(section(&format!("*Errors*\n```{}```", problems.join("\n"))));
        }
        Subject::Summary(d) => {
            blocks.push(section(&alert.headline()));
            let lines: Vec<String> = d
                .databases
                .iter()
                .map(|r| {
                    format!(
                        "• `{}` last {} · {} · {}",
                        r.database,
                        r.last_success
                            .map_or("never".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                        r.size.map_or("—".into(), human::bytes),
                        r.trend_text()
                    )
                })
                .collect();
            if !lines.is_empty() {
                blocks.push(section(&lines.join("\n")));
            }
            if !d.abnormal.is_empty() {
                blocks.push(section(&format!(
                    "*Needs attention*\n{}",
                    d.abnormal
                        .iter()
                        .map(|a| format!("• {a}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )));
            }
        }
        Subject::Duration { job_id, .. }
        | Subject::SizeAnomaly { job_id, .. }
        | Subject::SchemaChanged { job_id, .. }
        | Subject::Slow { job_id, .. } => {
            blocks.push(section(&alert.headline()));
            context.insert(0, format!("Job ID: {job_id}"));
        }
        _ => blocks.push(section(&alert.headline())),
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": context.join(" · ") }],
    }));
    Some(json!({ "text": alert.headline(), "blocks": blocks }))
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(text, 3000) } })
}

fn fields(pairs: &[(&str, String)]) -> Value {
    let fields: Vec<Value> = pairs
        .iter()
        .map(|(k, v)| json!({ "type": "mrkdwn", "text": format!("*{k}*\n{v}") }))
        .collect();
    json!({ "type": "section", "fields": fields })
}
