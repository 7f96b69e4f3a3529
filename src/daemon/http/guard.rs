//! Failed authentications per client address (DESIGN §17): after [`LOCKOUT_FAILURES`] within a
//! minute from one address, every request from it that presents a token is answered 429 until
//! that minute has passed — the right token included, so guessing gains nothing.
//!
//! Memory is bounded whatever addresses arrive: at most [`CAPACITY`] addresses are tracked. When
//! the table is full, addresses whose minute has passed go first, then the address with the
//! fewest failures that is not locked out, then the oldest lockout. IPv6 clients are counted by
//! their /64 (one host usually holds a whole /64, and could otherwise step through it), and the
//! audit log gets at most [`AUDIT_ADDRESSES_PER_MINUTE`] addresses a minute (the rest are
//! counted under `other`), so a flood from many addresses grows it by a bounded number of rows.
//!
//! Time is the daemon's clock, passed in, so tests move it instead of sleeping.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

/// Failed authentications within [`WINDOW_SECONDS`] that lock an address out.
pub const LOCKOUT_FAILURES: u32 = 10;
/// The lockout window: a minute from an address's first failure.
pub const WINDOW_SECONDS: i64 = 60;
/// Addresses tracked at most.
pub const CAPACITY: usize = 4096;
/// Distinct addresses written to the audit log per minute; later ones are counted as `other`.
pub const AUDIT_ADDRESSES_PER_MINUTE: usize = 32;

/// The address failures are counted for: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as
/// IPv4).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How a key is written in the audit log and the log: `203.0.113.7`, `2001:db8:1:2::/64`.
pub fn key_text(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// What a failed authentication led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// This failure was the one that locked the address out.
    pub locked_now: bool,
    /// The address to record in the audit log (`other` past the per-minute limit).
    pub audit_as: String,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: DateTime<Utc>,
    failures: u32,
}

impl Entry {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.window_start + chrono::Duration::seconds(WINDOW_SECONDS)
    }
    fn locked(&self, now: DateTime<Utc>) -> bool {
        self.failures >= LOCKOUT_FAILURES && !self.expired(now)
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<IpAddr, Entry>,
    /// The minute (unix seconds / 60) `audited` is about.
    minute: i64,
    audited: HashSet<IpAddr>,
}

/// The failed-authentication counter of one server.
#[derive(Debug, Default)]
pub struct AuthGuard {
    inner: Mutex<Inner>,
    total: AtomicU64,
}

impl AuthGuard {
    pub fn new() -> AuthGuard {
        AuthGuard::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds until `key` may present a token again, when it is locked out.
    pub fn locked(&self, key: IpAddr, now: DateTime<Utc>) -> Option<u64> {
        let inner = self.lock();
        let e = inner.entries.get(&key)?;
        e.locked(now).then(|| {
            let until = e.window_start + chrono::Duration::seconds(WINDOW_SECONDS);
            (until - now).num_seconds().max(1) as u64
        })
    }

    /// Count a failed authentication from `key`.
    pub fn fail(&self, key: IpAddr, now: DateTime<Utc>) -> Failure {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        if !inner.entries.contains_key(&key) && inner.entries.len() >= CAPACITY {
            evict(&mut inner.entries, now);
        }
        let entry = inner.entries.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
        });
        if entry.expired(now) {
            *entry = Entry {
                window_start: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        let locked_now = entry.failures == LOCKOUT_FAILURES;
        let minute = now.timestamp().div_euclid(60);
        if inner.minute != minute {
            inner.minute = minute;
            inner.audited.clear();
        }
        let audit_as = if inner.audited.contains(&key) {
            key_text(key)
        } else if inner.audited.len() < AUDIT_ADDRESSES_PER_MINUTE {
            inner.audited.insert(key);
            key_text(key)
        } else {
            "other".to_string()
        };
        Failure {
            locked_now,
            audit_as,
        }
    }

    /// Addresses tracked now (at most [`CAPACITY`]).
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }

    /// Failed authentications counted by this process.
    pub fn failures_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Make room: the expired go; if that is not enough, the weakest sixteenth of the unlocked
/// entries (fewest failures, oldest first), else the oldest lockouts. Batches keep a flood of
/// new addresses at a few scans per 256 of them.
fn evict(entries: &mut HashMap<IpAddr, Entry>, now: DateTime<Utc>) {
    entries.retain(|_, e| !e.expired(now));
    if entries.len() < CAPACITY {
        return;
    }
    let batch = CAPACITY / 16;
    let mut unlocked: Vec<(u32, DateTime<Utc>, IpAddr)> = entries
        .iter()
        .filter(|(_, e)| !e.locked(now))
        .map(|(k, e)| (e.failures, e.window_start, *k))
        .collect();
    if unlocked.is_empty() {
        unlocked = entries
            .iter()
            .map(|(k, e)| (0, e.window_start, *k))
            .collect();
    }
    if unlocked.len() > batch {
        unlocked.select_nth_unstable(batch);
        unlocked.truncate(batch);
    }
    for (_, _, k) in unlocked {
        entries.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn ten_failures_in_a_minute_lock_out_until_the_minute_passes() {
        let g = AuthGuard::new();
        let start = t("2026-11-16T10:00:00Z");
        let a = v4(1);
        for i in 0..9 {
            let f = g.fail(a, start + chrono::Duration::seconds(i));
            assert!(!f.locked_now);
            assert_eq!(g.locked(a, start + chrono::Duration::seconds(i)), None);
        }
        assert!(g.fail(a, start + chrono::Duration::seconds(9)).locked_now);
        assert_eq!(g.locked(a, start + chrono::Duration::seconds(10)), Some(50));
        assert_eq!(g.locked(v4(2), start), None, "only that address");
        assert_eq!(g.locked(a, start + chrono::Duration::seconds(60)), None);
        // Nine failures spread over more than a minute never lock.
        let b = v4(3);
        for i in 0..20 {
            g.fail(b, start + chrono::Duration::seconds(i * 7));
        }
        assert!(
            g.locked(b, start + chrono::Duration::seconds(140))
                .is_none()
        );
        assert_eq!(g.failures_total(), 30);
    }

    #[test]
    fn memory_is_bounded_and_a_flood_does_not_free_a_locked_address() {
        let g = AuthGuard::new();
        let now = t("2026-11-16T10:00:00Z");
        let attacker = v4(0);
        for _ in 0..LOCKOUT_FAILURES {
            g.fail(attacker, now);
        }
        for i in 1..100_000 {
            g.fail(v4(i), now);
            assert!(g.tracked() <= CAPACITY);
        }
        assert!(g.tracked() > CAPACITY / 2);
        assert!(g.locked(attacker, now).is_some(), "still locked out");
        // Once the minute has passed, the stale entries are the first to go.
        let later = now + chrono::Duration::seconds(61);
        for i in 0..CAPACITY as u32 {
            g.fail(v4(300_000 + i), later);
        }
        assert_eq!(g.tracked(), CAPACITY);
        assert!(g.locked(attacker, later).is_none());
    }

    #[test]
    fn ipv6_counts_by_64_and_the_audit_sees_a_bounded_set_per_minute() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_eq!(key_text(client_key(a)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(key_text(client_key(mapped)), "203.0.113.7");

        let g = AuthGuard::new();
        let now = t("2026-11-16T10:00:00Z");
        let audited: HashSet<String> = (0..1000).map(|i| g.fail(v4(i), now).audit_as).collect();
        assert_eq!(audited.len(), AUDIT_ADDRESSES_PER_MINUTE + 1);
        assert!(audited.contains("other"));
        // A known address keeps its own row; the next minute starts over.
        assert_eq!(g.fail(v4(0), now).audit_as, "10.0.0.0");
        let next = now + chrono::Duration::seconds(60);
        assert_eq!(g.fail(v4(999), next).audit_as, "10.0.3.231");
    }
}
