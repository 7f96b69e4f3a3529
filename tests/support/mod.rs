//! Test support: real servers and tools the integration tests talk to.

pub mod certs;
pub mod d1;
pub mod daemon;
pub mod faulty;
pub mod receiver;
pub mod s3;
pub mod sqlite3;
pub mod wrangler;

/// A knob of the long runs (`PATINA_SOAK_SECONDS`, …): the variable parsed, or `default` when
/// it is unset or not a number.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A program the tests need, checked with `PROGRAM --version`; a missing one fails the test with
/// how to install it (`.ci/run` installs them all) — never a silent skip.
pub fn require(program: &'static str, install: &str) -> &'static str {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "`{program}` is required: {install} (or run .ci/run)");
    program
}
