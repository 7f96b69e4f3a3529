//! `GET /api/audit?limit=`: the audit log, newest first (DESIGN §17). It always needs a token
//! with scope `read`, whatever `public_read` says: it names tokens and client addresses.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Client, parse_limit};
use super::{ApiError, AppState, iso};
use crate::catalog::AuditRow;
use crate::policy::Scope;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    limit: Option<String>,
}

/// One record as `/api/audit` shows it.
pub(super) fn audit_json(r: &AuditRow, with_address: bool) -> Value {
    let mut v = json!({
        "at": iso(r.at),
        "who": r.who,
        "via": r.via,
        "action": r.action,
        "target": r.target,
        "result": r.result,
        "status": r.status,
        "count": r.count,
    });
    if with_address {
        v["remoteAddr"] = json!(r.remote_addr);
    }
    v
}

pub(super) async fn list(
    State(s): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    s.authorize(&headers, client, Scope::Read, "audit", "/api/audit")
        .await?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(
            format!("invalid query: {}", e.body_text()),
            "parameters: limit (1-1000)",
        )
    })?;
    let limit = parse_limit(p.limit.as_deref())?;
    let rows = s.read(move |c| c.audit_log(limit, None)).await?;
    Ok(axum::Json(json!({
        "entries": rows.iter().map(|r| audit_json(r, true)).collect::<Vec<_>>(),
        "limit": limit,
    })))
}
