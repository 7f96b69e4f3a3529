//! Who may call, and what a request may say: the bearer-token check for the write and download
//! endpoints and the validation of names and dates in paths and queries. Every refusal is an
//! [`ApiError`] with a hint.
//!
//! `POST /trigger` and `GET /download` need `Authorization: Bearer <daemon.api_token>`, compared
//! in constant time (sha256 of both sides, then `subtle`). With no token configured they answer
//! 403 "disabled": never open. The token is read from the live policy, so a reload that sets or
//! rotates it applies at once.

use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::manifest::valid_database_name;
use crate::policy::Policy;

/// Check `Authorization: Bearer <token>` against `daemon.api_token`, in constant time.
pub(super) fn authorize(policy: &Policy, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &policy.daemon.api_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "disabled: no api_token is configured",
            Some(
                "set api_token = \"${PATINA_API_TOKEN}\" in [daemon] of patina.toml to enable /trigger and /download",
            ),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorized = |why: &str| {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            why,
            Some("send Authorization: Bearer <daemon.api_token>"),
        );
        e.error = why.to_owned();
        e
    };
    let Some(given) = given else {
        return Err(unauthorized("missing bearer token"));
    };
    // Hash both sides: equal lengths, so the comparison leaks neither content nor length.
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err(unauthorized("wrong bearer token"))
    }
}

/// A path segment that does not decode (e.g. `%FF`, invalid UTF-8): a JSON 400 like every
/// other error, not axum's plain-text rejection.
pub(super) fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(
        format!("invalid path: {}", e.body_text()),
        "GET / lists the endpoints; names and dates are plain ASCII",
    )
}

pub(super) fn parse_date(s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == s)
        .ok_or_else(|| {
            ApiError::bad_request(
                format!("invalid date {s:?}"),
                "use YYYY-MM-DD, e.g. 2026-11-22",
            )
        })
}

pub(super) fn check_database_name(s: &str) -> Result<(), ApiError> {
    if s.len() <= 64 && valid_database_name(s) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            format!("invalid database name {s:?}"),
            "database names match [a-z0-9][a-z0-9_-]*",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_exact() {
        assert!(parse_date("2026-11-22").is_ok());
        for bad in ["2026-1-5", "2026-02-30", "../etc", "2026-11-22x", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
