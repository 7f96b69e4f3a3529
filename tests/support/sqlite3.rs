//! The real `sqlite3` shell, which is how users restore a dump by hand (`sqlite3 new.db < dump`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `sqlite3` program; panics (never skips) when it is not installed.
pub fn program() -> PathBuf {
    let candidates = [
        PathBuf::from("/usr/bin/sqlite3"),
        PathBuf::from("/usr/local/bin/sqlite3"),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("the sqlite3 program is missing: install sqlite3 (apt-get install -y sqlite3)")
}

/// Runs `sqlite3 -bail <db>` with `input` on stdin; panics with stderr unless it succeeds
/// quietly. Returns stdout.
pub fn run(db: &Path, input: &[u8]) -> String {
    let mut child = Command::new(program())
        .arg("-bail")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sqlite3");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait for sqlite3");
    feeder.join().unwrap().expect("feed sqlite3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "sqlite3 {} failed ({}): {stderr}",
        db.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
