//! Who may call, and what a request may say (DESIGN §17): bearer tokens with scopes, the client
//! address, the lockout after failed authentications, the audit records of what callers did,
//! and the validation of names and dates in paths and queries. Every refusal is an
//! [`ApiError`] with a hint.
//!
//! - Tokens are `[[token]]` blocks (and `[daemon] api_token`, the token `default` with every
//!   scope), read from the live policy, so a reload adds, removes or rotates them at once. With
//!   no token configured, the endpoints that need one answer 403 "disabled": never open.
//! - Only `Authorization: Bearer <token>` (scheme case-insensitive, exactly one header, at most
//!   [`MAX_TOKEN_LEN`] bytes of visible ASCII) is read; tokens in query strings or cookies are
//!   never looked at. The presented token is hashed and compared with every configured one in
//!   constant time; it never reaches a log, an error or the catalog.
//! - No `Authorization` header: 401, nothing counted. A header that matches no token (wrong,
//!   malformed, oversized): 401, a failed authentication — counted per client address
//!   ([`super::guard`]), in `patina_http_auth_failures_total`, and in the audit log (one row per
//!   address and minute). An address with 10 failures in its minute gets 429 for every request
//!   that presents a token until the minute passes. A valid token without the scope: 403 naming
//!   the scope, audited.
//! - Open endpoints (`/healthz`, `/readyz`, and reads while `public_read = true`) ignore the
//!   header entirely.
//! - The client address is the TCP peer's, or the last hop of `X-Forwarded-For` when the peer is
//!   in `[daemon] trusted_proxies`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::guard::{client_key, key_text};
use super::server::Peer;
use super::{ApiError, AppState};
use crate::catalog::AuditEntry;
use crate::manifest::valid_database_name;
use crate::policy::{ApiToken, MAX_TOKEN_LEN, Scope};

/// Longest target written to the audit log and the log (paths are client-controlled).
const MAX_TARGET: usize = 200;

/// The client of a request: the peer, or `X-Forwarded-For`'s last hop behind a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Client {
    pub(super) ip: IpAddr,
}

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &Arc<AppState>,
    ) -> Result<Client, Self::Rejection> {
        let policy = s.reconciler.policy();
        let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
        Ok(client_of(
            peer,
            &parts.headers,
            &policy.daemon.trusted_proxies,
        ))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn client_of(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> Client {
    let peer = canonical(peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    if trusted.iter().any(|net| net.contains(&peer)) {
        let last_hop = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .and_then(|hop| {
                hop.parse::<IpAddr>()
                    .ok()
                    .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            });
        if let Some(ip) = last_hop {
            return Client { ip: canonical(ip) };
        }
    }
    Client { ip: peer }
}

/// A caller that presented a valid token with the needed scope.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    /// The token's name.
    pub(super) name: String,
}

/// What the `Authorization` headers present.
enum Presented<'a> {
    Missing,
    Malformed(&'static str),
    Bearer(&'a str),
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::Missing;
    };
    if values.next().is_some() {
        return Presented::Malformed("more than one Authorization header");
    }
    if value.len() > "Bearer ".len() + MAX_TOKEN_LEN {
        return Presented::Malformed("Authorization header too long");
    }
    let Ok(value) = value.to_str() else {
        return Presented::Malformed("Authorization header is not visible ASCII");
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return Presented::Malformed("Authorization header is not \"Bearer <token>\"");
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Malformed("Authorization scheme is not Bearer");
    }
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Presented::Malformed("Authorization header is not \"Bearer <token>\"");
    }
    Presented::Bearer(token)
}

/// The token `given` is, compared with every configured token in constant time (sha256 of
/// both sides, so lengths leak nothing either).
fn find_token<'p>(tokens: &'p [ApiToken], given: &str) -> Option<&'p ApiToken> {
    let given = Sha256::digest(given.as_bytes());
    let mut found = None;
    for t in tokens {
        let expected = Sha256::digest(t.secret.expose().as_bytes());
        let equal: bool = given.as_slice().ct_eq(expected.as_slice()).into();
        if equal && found.is_none() {
            found = Some(t);
        }
    }
    found
}

/// `target`, cut to a bounded length on a character boundary.
pub(super) fn bounded(target: &str) -> String {
    match target.char_indices().nth(MAX_TARGET) {
        Some((i, _)) => format!("{}…", &target[..i]),
        None => target.to_owned(),
    }
}

fn unauthorized(error: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        error,
        Some("send Authorization: Bearer <token> with a token from [[token]] in patina.toml"),
    );
    e.headers
        .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
    e
}

impl AppState {
    /// Check the request's bearer token for `scope`. `action` and `target` name what is asked
    /// for in the audit records of a refusal. A missing token is a plain 401; the rest of the
    /// refusals are counted and recorded (see the module docs).
    pub(super) async fn authorize(
        &self,
        headers: &HeaderMap,
        client: Client,
        scope: Scope,
        action: &'static str,
        target: &str,
    ) -> Result<Caller, ApiError> {
        let policy = self.reconciler.policy();
        let tokens = &policy.daemon.tokens;
        if tokens.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "disabled: no token is configured",
                Some(
                    "add a [[token]] (name, secret = \"${PATINA_OPS_TOKEN}\", scopes) or \
                     api_token = \"${PATINA_API_TOKEN}\" in [daemon] of patina.toml to enable \
                     /trigger, /download and /api/audit",
                ),
            ));
        }
        let presented = presented(headers);
        if let Presented::Missing = presented {
            return Err(unauthorized("missing bearer token"));
        }
        let now = (self.clock)();
        let key = client_key(client.ip);
        if let Some(seconds) = self.guard.locked(key, now) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed authentications from {}: try again in {seconds}s",
                    key_text(key)
                ),
                Some("check the token the client sends; every token is refused until then"),
            );
            e.headers
                .push((header::RETRY_AFTER, HeaderValue::from(seconds)));
            return Err(e);
        }
        let why = match presented {
            Presented::Bearer(given) => match find_token(tokens, given) {
                Some(token) if token.allows(scope) => {
                    return Ok(Caller {
                        name: token.name.clone(),
                    });
                }
                Some(token) => {
                    let name = token.name.clone();
                    let mut e = ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("token {name:?} lacks scope {:?}", scope.as_str()),
                        Some(&format!(
                            "add \"{scope}\" to the scopes of the [[token]] named {name:?}, or \
                             use a token that has it"
                        )),
                    );
                    e.extra.push(("scope", scope.as_str().into()));
                    self.audit(
                        Some(&name),
                        client,
                        action,
                        target,
                        "forbidden",
                        StatusCode::FORBIDDEN,
                    )
                    .await;
                    return Err(e);
                }
                None => "wrong bearer token",
            },
            Presented::Malformed(why) => why,
            Presented::Missing => unreachable!("answered above"),
        };
        self.failed_authentication(client, target, now).await;
        Err(unauthorized(why))
    }

    /// Count a failed authentication (lockout, metric) and record it, coalesced per address
    /// and minute; the log says so once per row, and when the address gets locked out.
    async fn failed_authentication(
        &self,
        client: Client,
        target: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let failure = self.guard.fail(client_key(client.ip), now);
        let target = bounded(target);
        let address = failure.audit_as.clone();
        let recorded = {
            let target = target.clone();
            self.write(move |c| c.record_auth_failure(now, &address, &target))
                .await
        };
        match recorded {
            Ok(1) => tracing::warn!(
                audit = "authenticate",
                remote = %failure.audit_as,
                target = %target,
                result = "failed",
                "failed authentication (further ones from this address this minute are counted in the audit log)"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e.error, "could not record a failed authentication"),
        }
        if failure.locked_now {
            tracing::warn!(
                remote = %key_text(client_key(client.ip)),
                "too many failed authentications: this address gets 429 for every token it presents until its minute has passed"
            );
        }
    }

    /// Record what a caller did (or was refused) in the audit log and as a log line. A catalog
    /// that cannot be written is logged; it does not fail the request.
    pub(super) async fn audit(
        &self,
        who: Option<&str>,
        client: Client,
        action: &'static str,
        target: &str,
        result: &'static str,
        status: StatusCode,
    ) {
        let at = (self.clock)();
        let target = bounded(target);
        let remote = client.ip.to_string();
        if result == "forbidden" {
            tracing::warn!(audit = action, who, remote = %remote, target = %target, result, status = status.as_u16(), "refused: token lacks the scope");
        } else {
            tracing::info!(audit = action, who, remote = %remote, target = %target, result, status = status.as_u16(), "audit");
        }
        let who = who.map(str::to_owned);
        let written = self
            .write(move |c| {
                c.record_audit(&AuditEntry {
                    at,
                    who: who.as_deref(),
                    via: "http",
                    remote_addr: Some(&remote),
                    action,
                    target: Some(&target),
                    result,
                    status: Some(status.as_u16()),
                })
            })
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e.error, action, "could not write the audit record");
        }
    }
}

/// The read endpoints: open while `public_read = true` (the header is not looked at), else
/// they need scope `read`.
pub(super) async fn read_gate(
    State(s): State<Arc<AppState>>,
    client: Client,
    req: Request,
    next: Next,
) -> Response {
    if s.reconciler.policy().daemon.public_read {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    match s
        .authorize(req.headers(), client, Scope::Read, "read", &path)
        .await
    {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
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

/// `?limit=`: 1 to [`MAX_LIST`](super::MAX_LIST), 100 when absent or empty.
pub(super) fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None | Some("") => Ok(100),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=super::MAX_LIST).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("invalid limit {l:?}"),
                    "limit is a whole number from 1 to 1000",
                )
            }),
    }
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
    use crate::policy::Secret;

    #[test]
    fn dates_must_be_exact() {
        assert!(parse_date("2026-11-22").is_ok());
        for bad in ["2026-1-5", "2026-02-30", "../etc", "2026-11-22x", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn only_one_well_formed_bearer_header_presents_a_token() {
        assert!(matches!(presented(&headers(&[])), Presented::Missing));
        for ok in [&b"Bearer abc"[..], b"bearer abc", b"BEARER abc"] {
            assert!(matches!(
                presented(&headers(&[ok])),
                Presented::Bearer("abc")
            ));
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer  abc",
            b"Basic abc",
            b"abc",
            b"",
            b"Bearer a b",
            b"Bearer abc, Bearer abc",
            "Bearer t\u{f6}k".as_bytes(),
            long.as_bytes(),
        ] {
            assert!(
                matches!(presented(&headers(&[bad])), Presented::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            presented(&headers(&[b"Bearer abc", b"Bearer abc"])),
            Presented::Malformed(_)
        ));
    }

    #[test]
    fn tokens_are_found_by_secret() {
        let token = |name: &str, secret: &str| ApiToken {
            name: name.into(),
            secret: Secret::new(secret),
            scopes: vec![Scope::Read],
        };
        let tokens = [token("a", "alpha-secret"), token("b", "beta-secret")];
        assert_eq!(find_token(&tokens, "beta-secret").unwrap().name, "b");
        assert!(find_token(&tokens, "beta-secre").is_none());
        assert!(find_token(&tokens, "beta-secret ").is_none());
        assert!(find_token(&[], "x").is_none());
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwards() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.2, 203.0.113.7"),
        );
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_of(Some(peer), &h, &trusted).ip.to_string(),
            "203.0.113.7"
        );
        assert_eq!(client_of(Some(peer), &h, &[]).ip, peer, "untrusted peer");
        let mut garbage = HeaderMap::new();
        garbage.append("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_of(Some(peer), &garbage, &trusted).ip, peer);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            client_of(Some(mapped), &h, &trusted).ip.to_string(),
            "203.0.113.7",
            "an IPv4-mapped peer matches an IPv4 range"
        );
    }
}
