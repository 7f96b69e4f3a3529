//! `GET /download/{date}/{db}`: one day's backup of a database, as SQL or (`?raw=1`) as stored.
//!
//! It finds the day's newest backup in storage (the source of truth, so archived days work too)
//! and fetches it as `patina restore` does ([`restore::fetch_verified`]): into a file in
//! `state_dir`, its sha256 and size checked before a byte is sent, so a damaged object is a 502
//! rather than a silently damaged file. The SQL is decoded on a blocking thread: memory does not
//! grow with the dump.
//!
//! A sealed backup (DESIGN §14) is decrypted with `[encryption] identity_file`; without one, or
//! with one that does not open it, the answer is 409 with a hint, before anything is fetched (no
//! identity) or sent (a wrong one: the age header is opened before the response starts).
//! `?raw=1` needs no identity: it sends the stored bytes, still sealed.

use std::io::{self, Read};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::auth::{Client, check_database_name, parse_date, path_error};
use super::{ApiError, AppState};
use crate::codec;
use crate::policy::{Compression, Scope};
use crate::restore::{At, Keys, RestoreError};
use crate::store::StoreError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DownloadParams {
    raw: Option<String>,
    /// A time on the path's date (or that date): the newest restore point at or before it.
    at: Option<String>,
}

pub(super) async fn download(
    State(s): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<DownloadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = s
        .authorize(&headers, client, Scope::Download, "download", uri.path())
        .await?;
    let who = format!("api:{}", caller.name);
    let outcome = send_backup(&s, &who, path, params).await;
    let target = match &outcome {
        Ok((target, _)) => target.clone(),
        Err(_) => uri.path().to_owned(),
    };
    let (result, status) = match &outcome {
        Ok((_, r)) => ("ok", r.status()),
        Err(e) => ("error", e.status),
    };
    s.audit(
        Some(&caller.name),
        client,
        "download",
        &target,
        result,
        status,
    )
    .await;
    outcome.map(|(_, r)| r)
}

/// The download for an authorized caller, and what it was (`DB/DATE`, ` raw` for the stored
/// bytes) for the audit log.
async fn send_backup(
    s: &AppState,
    who: &str,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<DownloadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(String, Response), ApiError> {
    let Path((date, db)) = path.map_err(path_error)?;
    let policy = s.reconciler.policy();
    let day = parse_date(&date)?;
    check_database_name(&db)?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query: {}", e.body_text()), "use ?raw=1")
    })?;
    let raw = match p.raw.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("invalid raw {other:?}"),
                "use ?raw=1 for the stored bytes",
            ));
        }
    };
    let at = match p.at.as_deref() {
        None => At::Date(day),
        Some(text) => match text.parse::<At>() {
            Ok(At::Time(t)) if t.date_naive() == day => At::Time(t),
            Ok(At::Date(d)) if d == day => At::Date(d),
            Ok(_) => {
                return Err(ApiError::bad_request(
                    format!("at={text:?} does not fall on {date}"),
                    "give a time on the path's date, e.g. ?at=2026-11-20T14:00Z",
                ));
            }
            Err(e) => return Err(ApiError::bad_request(format!("invalid at: {e}"), "")),
        },
    };
    // The primary first, then each replica (DESIGN §15).
    let sources = crate::replica::sources(&policy, s.reconciler.store(), None)
        .expect("no --from: every destination");
    let started = (s.clock)();
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            match at {
                At::Time(t) => format!(
                    "no backup of {db} on {date} at or before {}",
                    t.format("%H:%M:%S UTC")
                ),
                _ => format!("no backup of {db} on {date}"),
            },
            Some("GET /list?database=NAME shows every restore point"),
        )
    };
    let located = sources
        .locate(&db, at)
        .await
        .and_then(|(l, from)| match at {
            // A time selects the newest point at or before it; here it must be that day's.
            At::Time(_) if l.taken_at().date_naive() != day => Err(RestoreError::NoBackup {
                database: db.clone(),
                location: String::new(),
                hint: String::new(),
            }),
            _ => Ok((l, from)),
        })
        .map_err(|e| match e {
            RestoreError::NoBackup { .. } => not_found(),
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                other.to_string(),
                Some("storage could not be read; see GET /readyz"),
            ),
        });
    let (located, sources) = match located {
        Ok(found) => found,
        Err(e) => {
            s.record_download(who, &db, None, started, Err(&e.message()))
                .await;
            return Err(e);
        }
    };
    // A sealed backup and no identity: refused before anything is fetched.
    let keys = if raw {
        None
    } else {
        match Keys::from_policy(&policy).open(&located, sources.first()) {
            Ok(keys) => keys,
            Err(e) => {
                let e = fetch_error(e);
                s.record_download(who, &db, Some(&located), started, Err(&e.message()))
                    .await;
                return Err(e);
            }
        }
    };
    // The same fetch-and-verify as `patina restore`: a damaged object is refused before a byte
    // is sent.
    let part = policy
        .daemon
        .state_dir
        .join(format!(".download-{}.part", uuid::Uuid::new_v4().simple()));
    let verified = match sources.fetch_verified(&located, &part).await {
        Ok(v) => v,
        Err(e) => {
            let e = fetch_error(e);
            s.record_download(who, &db, Some(&located), started, Err(&e.message()))
                .await;
            return Err(e);
        }
    };
    let layers = verified.layers();
    let (body, content_type, file_name) = if raw {
        let content_type = match (layers.encrypted, layers.compression) {
            (true, _) => "application/octet-stream",
            (false, Compression::Zstd) => "application/zstd",
            (false, Compression::Gzip) => "application/gzip",
            (false, Compression::None) => "application/sql",
        };
        let file = tokio::fs::File::from_std(verified.into_stored());
        (
            Body::from_stream(tokio_util::io::ReaderStream::new(file)),
            content_type,
            format!("{db}-{date}{}", codec::dump_suffix(layers)),
        )
    } else {
        // Open the layers (the age header too) before the response starts, so a wrong
        // identity is a 409, not a broken transfer.
        let plain = tokio::task::spawn_blocking(move || verified.into_plain(keys.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("decode the backup: {e}")))?
            .map_err(fetch_error);
        let plain = match plain {
            Ok(plain) => plain,
            Err(e) => {
                s.record_download(who, &db, Some(&located), started, Err(&e.message()))
                    .await;
                return Err(e);
            }
        };
        (
            Body::from_stream(plain_stream(plain)),
            "application/sql",
            format!("{db}-{date}.sql"),
        )
    };
    // Verified (and opened) and about to be sent: recorded as a success (a client that breaks
    // off the transfer later is not seen here).
    s.record_download(who, &db, Some(&located), started, Ok(()))
        .await;
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Names are validated ([a-z0-9_-] and a date): nothing to escape.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    let what = format!("{db}/{date}{}", if raw { " raw" } else { "" });
    Ok((what, response))
}

fn storage_error(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        e.to_string(),
        Some("storage could not be read; see GET /readyz"),
    )
}

/// Why the stored bytes could not be fetched, verified or opened.
fn fetch_error(e: RestoreError) -> ApiError {
    match e {
        e if e.is_key_problem() => {
            tracing::warn!(error = %e, "download: refused, the backup is encrypted");
            ApiError::new(StatusCode::CONFLICT, e.to_string(), e.hint())
        }
        RestoreError::Store(e) => storage_error(e),
        e @ RestoreError::Checksum { .. } => {
            tracing::error!(error = %e, "download: checksum mismatch, refused");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                e.to_string(),
                Some("the stored object is damaged; download another date"),
            )
        }
        e @ RestoreError::Archive(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string(), None),
        e @ RestoreError::Decrypt { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            e.to_string(),
            Some("the stored object is not a readable age file; download another date"),
        ),
        e => ApiError::internal(e.to_string()),
    }
}

/// The SQL text of opened stored bytes, read on a blocking thread; chunks flow through a small
/// channel (bounded memory). A decoding error ends the stream with it, which breaks the
/// transfer.
fn plain_stream(mut plain: Box<dyn Read + Send>) -> BoxStream<'static, io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let pumped = pump(&mut plain, &tx);
        if let Err(e) = pumped {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

fn pump(r: &mut impl Read, tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if tx
            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .is_err()
        {
            // The client went away.
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "client gone"));
        }
    }
}
