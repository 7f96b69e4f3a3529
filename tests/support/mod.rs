//! Test support: real servers and tools the integration tests talk to.

pub mod certs;
pub mod d1;
pub mod daemon;
pub mod faulty;
pub mod receiver;
pub mod s3;
pub mod sqlite3;
pub mod wrangler;

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
