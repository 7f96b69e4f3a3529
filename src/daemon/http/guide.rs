//! `GET /restore-guide/{db}`: the database's backups and step-by-step restore instructions for
//! its kind; steps particular to a source come from [`crate::source::Source::restore_guide`].

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::auth::{check_database_name, path_error};
use super::{ApiError, AppState, iso};
use crate::codec::Layers;
use crate::human;
use crate::policy::{Compression, SourceSpec};

pub(super) async fn restore_guide(
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
        layers: newest
            .and_then(|b| match crate::manifest::parse_key(&b.key) {
                Some(crate::manifest::ParsedKey::DumpData { layers, .. }) => Some(layers),
                _ => None,
            })
            .unwrap_or_else(|| policy.dump_encoding().layers()),
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
        "description": declared.and_then(|d| d.description.clone()),
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
    /// How the newest backup is stored (compressed, sealed with age).
    pub layers: Layers,
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
    let stored = format!("{db}-{date}{}", crate::codec::dump_suffix(f.layers));
    let decompress = match (f.layers.encrypted, f.layers.compression) {
        (false, Compression::Zstd) => format!("zstd -d -c {stored} > {db}-{date}.sql"),
        (false, Compression::Gzip) => format!("gzip -d -c {stored} > {db}-{date}.sql"),
        (false, Compression::None) => format!("(stored uncompressed: {stored} is the dump)"),
        (true, Compression::Zstd) => {
            format!("age -d -i identity.txt {stored} | zstd -d > {db}-{date}.sql")
        }
        (true, Compression::Gzip) => {
            format!("age -d -i identity.txt {stored} | gzip -d > {db}-{date}.sql")
        }
        (true, Compression::None) => {
            format!("age -d -i identity.txt {stored} > {db}-{date}.sql")
        }
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
                    format!("1. List backups: patina list --database {db}"),
                    format!("2. Restore into a new file (sha256 checked before loading): patina restore {db} --at {date} --to {db}-restored.db"),
                    format!("3. Check it: sqlite3 {db}-restored.db \"PRAGMA integrity_check\""),
                    "4. Stop the application, move the restored file into place, start it again".to_string(),
                ],
                "note": "Works on a fresh machine: the bucket is the source of truth. --at also reaches days kept only in weekly archives.",
            },
            "method2_plain": {
                "name": if f.layers.encrypted {
                    "age + zstd + sqlite3 (no Patina needed; the backup is encrypted: use the identity file of one of its recipients)"
                } else {
                    "zstd + sqlite3 (no Patina needed)"
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SourceSpec;

    #[test]
    fn the_d1_restore_guide_makes_the_dump_d1_ready_and_offers_time_travel() {
        let g = restore_instructions(&GuideFacts {
            database: "groveauth",
            kind: "d1",
            date: Some("2026-11-22".into()),
            taken_at: None,
            location: None,
            layers: Layers::plain(Compression::Zstd),
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
}
