//! Numbers for people, in the seed's format wherever Patina shows them (CLI, status page, JSON
//! API, alerts): sizes `512 B`, `212 KB`, `2.1 MB` (1024-based, one decimal, `.0` dropped) and
//! durations `45s`, `12m 5s`, `2h 3m`. Pure.

use std::time::Duration;

/// `512 B`, `212 KB`, `2.1 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// `45s`, `12m`, `12m 5s`, `2h`, `2h 3m` (whole seconds).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// A timeout or wait, exact: `5s`, or `400ms` when it is not whole seconds.
pub fn wait(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// [`duration`] of milliseconds as the catalog stores them, rounded to the nearest second.
pub fn duration_ms(ms: i64) -> String {
    duration(Duration::from_secs((ms.max(0) as u64 + 500) / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_the_seed() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5 GB");
        assert_eq!(duration(Duration::from_secs(2700)), "45m");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(bytes(212 * 1024), "212 KB");
        assert_eq!(bytes(2_202_010), "2.1 MB");
        assert_eq!(bytes(5 * 1024 * 1024 + 1), "5 MB");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(725)), "12m 5s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 3m");
        assert_eq!(duration_ms(185_000), "3m 5s");
        assert_eq!(duration_ms(3_720_000), "1h 2m");
        assert_eq!(duration_ms(1499), "1s");
        assert_eq!(duration_ms(1500), "2s");
        assert_eq!(duration_ms(-5), "0s");
        assert_eq!(wait(Duration::from_secs(5)), "5s");
        assert_eq!(wait(Duration::from_millis(400)), "400ms");
    }
}
