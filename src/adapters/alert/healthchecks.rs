//! The healthchecks.io sink (pure): a dead man's switch. Pings, per the healthchecks protocol:
//!
//! - a job begins: `{url}/start` (sent when the sink listens to `success` or `failure`, so
//!   healthchecks measures run time and notices a job that never ends);
//! - a job succeeds (`success`): `{url}`; a job with failed databases (`failure`): `{url}/fail`;
//! - any other event the sink listens to, firing or reminding: `{url}/fail`; resolved:
//!   `{url}` (success);
//! - `summary`, `test`, `schema_changed` and `slow`: `{url}/log` (recorded in the check's log,
//!   no state change: the backup itself succeeded).
//!
//! The body is the alert's one-line headline (healthchecks shows it in the event log).

use super::{Alert, AlertState, Body, Outgoing, Subject};

pub fn render(alert: &Alert) -> Option<Outgoing> {
    let path = match &alert.subject {
        Subject::JobStarted { .. } => "/start",
        Subject::Job(j) if j.failed() > 0 => "/fail",
        Subject::Job(_) => "",
        // Notices: the backups are there, so the check's state does not change.
        Subject::Summary(_)
        | Subject::Test
        | Subject::SchemaChanged { .. }
        | Subject::Slow { .. } => "/log",
        _ if alert.state == AlertState::Resolved => "",
        _ => "/fail",
    };
    Some(Outgoing {
        path,
        body: Body::Text(alert.headline()),
    })
}
