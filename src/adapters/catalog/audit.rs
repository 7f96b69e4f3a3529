//! The audit log (`audit_log`, DESIGN §17): one row per trigger, download, restore and refusal,
//! and one row per address and minute for failed authentications (with a count), so a flood of
//! wrong tokens grows it by at most one row per address and minute. Rows older than the
//! retention are pruned by the daemon. Nothing secret is written: who is a token's name or an OS
//! user, never a token.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Catalog, CatalogError};

/// One audited event as it is recorded.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub at: DateTime<Utc>,
    /// A token's name (`via = "http"`), an OS user (`via = "cli"`); `None` when unknown.
    pub who: Option<&'a str>,
    /// `http` or `cli`.
    pub via: &'a str,
    /// The client's address (HTTP).
    pub remote_addr: Option<&'a str>,
    /// `trigger`, `download`, `restore`, `read`, `audit` or `authenticate`.
    pub action: &'a str,
    /// What it was about: databases, `DB/DATE`, a path. Never a query string.
    pub target: Option<&'a str>,
    /// `ok`, `error`, `forbidden` (a token without the scope) or `failed` (no such token).
    pub result: &'a str,
    /// The HTTP status answered, when there is one.
    pub status: Option<u16>,
}

/// An audit record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub who: Option<String>,
    pub via: String,
    pub remote_addr: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub result: String,
    pub status: Option<u16>,
    /// How many events the row stands for (failed authentications are coalesced).
    pub count: u64,
}

impl Catalog {
    /// Record one audited event (a trigger, a download, a restore from the CLI — `via = "cli"`,
    /// `who` = the OS user, `action = "restore"` — or a refusal).
    pub fn record_audit(&self, e: &AuditEntry<'_>) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO audit_log (at, who, via, remote_addr, action, target, result, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    e.at.timestamp(),
                    e.who,
                    e.via,
                    e.remote_addr,
                    e.action,
                    e.target,
                    e.result,
                    e.status.map(i64::from)
                ],
            )
            .map_err(self.q("record an audit entry"))?;
        Ok(())
    }

    /// Count a failed authentication from `address` into the row of its minute (created by the
    /// minute's first failure, which also gives the row its target). Returns the row's count.
    pub fn record_auth_failure(
        &self,
        at: DateTime<Utc>,
        address: &str,
        target: &str,
    ) -> Result<u64, CatalogError> {
        let minute = at.timestamp().div_euclid(60);
        let key = format!("authenticate|{address}|{minute}");
        self.conn
            .query_row(
                "INSERT INTO audit_log (at, via, remote_addr, action, target, result, status,
                   coalesce_key)
                 VALUES (?1, 'http', ?2, 'authenticate', ?3, 'failed', 401, ?4)
                 ON CONFLICT(coalesce_key) DO UPDATE SET count = count + 1
                 RETURNING count",
                params![at.timestamp(), address, target, key],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(self.q("record a failed authentication"))
    }

    /// The newest audit records, newest first; only `actions` when given.
    pub fn audit_log(
        &self,
        limit: usize,
        actions: Option<&[&str]>,
    ) -> Result<Vec<AuditRow>, CatalogError> {
        let filter = match actions {
            Some(list) => format!(
                "WHERE action IN ({})",
                list.iter()
                    .map(|a| format!("'{}'", a.replace('\'', "''")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT id, at, who, via, remote_addr, action, target, result, status, count
             FROM audit_log {filter} ORDER BY at DESC, id DESC LIMIT ?1"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(self.q("read the audit log"))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    who: r.get(2)?,
                    via: r.get(3)?,
                    remote_addr: r.get(4)?,
                    action: r.get(5)?,
                    target: r.get(6)?,
                    result: r.get(7)?,
                    status: r.get::<_, Option<i64>>(8)?.map(|s| s as u16),
                    count: r.get::<_, i64>(9)?.max(0) as u64,
                })
            })
            .map_err(self.q("read the audit log"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("read the audit log"))
    }

    /// Delete audit records older than `before`; returns how many went.
    pub fn prune_audit(&self, before: DateTime<Utc>) -> Result<usize, CatalogError> {
        self.conn
            .execute(
                "DELETE FROM audit_log WHERE at < ?1",
                params![before.timestamp()],
            )
            .map_err(self.q("prune the audit log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn failed_authentications_coalesce_per_address_and_minute() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        for s in 0..30 {
            let at = t("2026-11-16T10:00:00Z") + chrono::Duration::seconds(s);
            c.record_auth_failure(at, "203.0.113.7", "/trigger")
                .unwrap();
        }
        assert_eq!(
            c.record_auth_failure(t("2026-11-16T10:00:59Z"), "203.0.113.7", "/x")
                .unwrap(),
            31
        );
        c.record_auth_failure(t("2026-11-16T10:01:00Z"), "203.0.113.7", "/x")
            .unwrap();
        c.record_auth_failure(t("2026-11-16T10:00:10Z"), "198.51.100.1", "/x")
            .unwrap();
        let rows = c.audit_log(100, None).unwrap();
        let summary: Vec<(String, u64, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.remote_addr.clone().unwrap(),
                    r.count,
                    r.target.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("203.0.113.7".into(), 1, "/x".into()),
                ("198.51.100.1".into(), 1, "/x".into()),
                ("203.0.113.7".into(), 31, "/trigger".into()),
            ]
        );
        assert!(
            rows.iter()
                .all(|r| r.action == "authenticate" && r.result == "failed" && r.who.is_none())
        );
    }

    #[test]
    fn records_filter_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        for (at, action) in [
            ("2026-08-01T00:00:00Z", "download"),
            ("2026-11-16T10:00:00Z", "trigger"),
            ("2026-11-16T11:00:00Z", "restore"),
        ] {
            c.record_audit(&AuditEntry {
                at: t(at),
                who: Some("ops"),
                via: if action == "restore" { "cli" } else { "http" },
                remote_addr: None,
                action,
                target: Some("alpha"),
                result: "ok",
                status: None,
            })
            .unwrap();
        }
        let only = c.audit_log(10, Some(&["download", "restore"])).unwrap();
        assert_eq!(
            only.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["restore", "download"]
        );
        assert_eq!(c.prune_audit(t("2026-08-17T00:00:00Z")).unwrap(), 1);
        assert_eq!(c.audit_log(10, None).unwrap().len(), 2);
    }
}
