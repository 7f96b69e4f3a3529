//! Cloudflare's own local D1: wrangler + miniflare on workerd, pinned in `tests/d1/package.json`
//! (installed by `.ci/run` with `npm ci`). Its exporter is the code production D1 runs, and it
//! enforces D1's rules (foreign keys always on, no `PRAGMA writable_schema`, statement limits),
//! so tests use it to produce the bytes a real export holds and to load restore files as D1
//! would. Each [`LocalD1`] is one wrangler project in its own folder with one database.
//!
//! A wrangler call starts node and workerd (about 4 s): tests batch their SQL into few calls.

// Shared by several integration test modules; not each of them uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The D1 database name every local project uses.
pub const NAME: &str = "groveauth";
/// Its id (the value does not matter locally, but it fixes the file name of the database).
pub const ID: &str = "45eae4c7-8ae7-4078-9218-8e1677a4360f";

/// The pinned wrangler; panics (never skips) with the install command when it is missing.
pub fn program() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/d1");
    let bin = root.join("node_modules/.bin/wrangler");
    assert!(
        bin.exists(),
        "Cloudflare's local D1 (wrangler) is required: (cd {} && npm ci), or run .ci/run",
        root.display()
    );
    bin
}

/// One local D1 database in its own wrangler project folder.
pub struct LocalD1 {
    dir: PathBuf,
}

/// What a failed wrangler call printed.
#[derive(Debug)]
pub struct WranglerError(pub String);

impl std::fmt::Display for WranglerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl LocalD1 {
    /// A new, empty local D1 database in `dir` (created if missing).
    pub fn new(dir: &Path) -> LocalD1 {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("wrangler.toml"),
            format!(
                "name = \"patina-test\"\ncompatibility_date = \"2025-01-01\"\n\n[[d1_databases]]\nbinding = \"DB\"\ndatabase_name = \"{NAME}\"\ndatabase_id = \"{ID}\"\n"
            ),
        )
        .unwrap();
        LocalD1 {
            dir: dir.to_path_buf(),
        }
    }

    /// A local D1 database whose content is a copy of the SQLite file `source`.
    pub fn from_sqlite(dir: &Path, source: &Path) -> LocalD1 {
        let d1 = LocalD1::new(dir);
        d1.replace_with(source);
        d1
    }

    /// Replaces the database's content with a copy of the SQLite file `source` (wrangler must
    /// not be running on it).
    pub fn replace_with(&self, source: &Path) {
        let target = self.sqlite_path();
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
        }
        let _ = std::fs::remove_file(&target);
        let src = rusqlite::Connection::open(source).unwrap();
        src.execute("VACUUM INTO ?1", [target.to_str().unwrap()])
            .unwrap();
    }

    fn wrangler(&self, args: &[&str]) -> Result<String, WranglerError> {
        let out = Command::new(program())
            .args(args)
            .current_dir(&self.dir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("NO_UPDATE_NOTIFIER", "1")
            .env("CI", "true")
            .output()
            .expect("start wrangler");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(WranglerError(format!(
                "wrangler {} failed ({}): {stderr}{stdout}",
                args.join(" "),
                out.status
            )))
        }
    }

    /// `wrangler d1 execute --local --file=FILE`: loads a SQL file as D1 would.
    pub fn execute_file(&self, file: &Path) -> Result<(), WranglerError> {
        let file = std::path::absolute(file).unwrap();
        self.wrangler(&[
            "d1",
            "execute",
            NAME,
            "--local",
            "--yes",
            &format!("--file={}", file.display()),
        ])
        .map(drop)
    }

    /// Runs `sql` (any number of statements) through `wrangler d1 execute --local --file`.
    pub fn execute(&self, sql: &str) -> Result<(), WranglerError> {
        let file = self
            .dir
            .join(format!("exec-{}.sql", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, sql).unwrap();
        let result = self.execute_file(&file);
        let _ = std::fs::remove_file(&file);
        result
    }

    /// Runs one statement with `--command … --json` and returns its rows, as D1 answers them.
    pub fn query(&self, sql: &str) -> Result<Vec<serde_json::Value>, WranglerError> {
        let out = self.wrangler(&["d1", "execute", NAME, "--local", "--json", "--command", sql])?;
        let parsed: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| WranglerError(format!("wrangler --json printed {out:?}: {e}")))?;
        Ok(parsed[0]["results"].as_array().cloned().unwrap_or_default())
    }

    /// `wrangler d1 export --local`: the bytes D1's exporter writes.
    pub fn export(&self) -> Result<Vec<u8>, WranglerError> {
        let file = self
            .dir
            .join(format!("export-{}.sql", uuid::Uuid::new_v4().simple()));
        self.wrangler(&[
            "d1",
            "export",
            NAME,
            "--local",
            &format!("--output={}", file.display()),
        ])?;
        let bytes = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        Ok(bytes)
    }

    /// The SQLite file the local D1 keeps the database in (created on first use).
    pub fn sqlite_path(&self) -> PathBuf {
        let dir = self
            .dir
            .join(".wrangler/state/v3/d1/miniflare-D1DatabaseObject");
        if let Some(found) = find_database(&dir) {
            return found;
        }
        self.execute("SELECT 1;")
            .unwrap_or_else(|e| panic!("create the local D1 database: {e}"));
        find_database(&dir).expect("wrangler created no database file")
    }
}

fn find_database(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "sqlite")
                && p.file_name().is_some_and(|n| n != "metadata.sqlite")
        })
}
