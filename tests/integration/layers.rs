//! The arrows between layers point down only (`src/lib.rs`): the core does no I/O, adapters know
//! neither each other nor the engine, and nothing below the ways in imports them. Folders are not
//! crates, so the compiler cannot say this; this test reads the sources and does.
//!
//! It reads each file up to its `#[cfg(test)]` module (tests may build a policy from text) and
//! skips comment lines.

use std::fs;
use std::path::{Path, PathBuf};

const ADAPTERS: &[&str] = &["alert", "catalog", "source", "store", "systemd"];
const ENGINE: &[&str] = &[
    "archive",
    "backup",
    "bucket",
    "cluster",
    "drill",
    "reconcile",
    "replica",
    "restore",
    "engine",
];
const WAYS_IN: &[&str] = &["cli", "config", "daemon", "http", "metrics"];
/// What the pure core must not touch: the async runtime, network, SQLite, object storage and
/// the filesystem.
const IO_CRATES: &[&str] = &[
    "tokio",
    "reqwest",
    "rusqlite",
    "object_store",
    "std::fs",
    "axum",
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code lines of a file before its test module, without comments.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// The crate-root modules a line names as `crate::X` or `crate::{X, Y::…}`.
fn crate_paths(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or("");
                out.extend(group.split(',').map(ident).filter(|m| !m.is_empty()));
            }
            None => out.push(ident(rest)),
        }
    }
    out
}

#[test]
fn crate_paths_reads_single_and_grouped_imports() {
    assert_eq!(crate_paths("use crate::store::Store;"), ["store"]);
    assert_eq!(
        crate_paths("use crate::{catalog::Catalog, engine};"),
        ["catalog", "engine"]
    );
    assert_eq!(crate_paths("let x = 1;"), Vec::<String>::new());
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_core_imports_no_io_and_nothing_above_it() {
    let files = sources(&src().join("core"));
    assert!(files.len() >= 10, "the core's files were not found");
    let mut found = Vec::new();
    for file in &files {
        for (n, line) in code_lines(file) {
            for io in IO_CRATES {
                let used = line.contains(&format!("{io}::"))
                    || line.contains(&format!("use {io}"))
                    || line.contains(&format!("{io} "));
                if used {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
            for module in crate_paths(&line) {
                let above = ADAPTERS.contains(&module.as_str())
                    || ENGINE.contains(&module.as_str())
                    || WAYS_IN.contains(&module.as_str())
                    || module == "adapters";
                if above {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn adapters_import_neither_each_other_nor_the_engine_nor_the_ways_in() {
    let root = src().join("adapters");
    let mut found = Vec::new();
    let mut seen = 0;
    for adapter in ADAPTERS {
        let dir = root.join(adapter);
        let mut files = if dir.is_dir() {
            sources(&dir)
        } else {
            Vec::new()
        };
        let file = root.join(format!("{adapter}.rs"));
        if file.is_file() {
            files.push(file);
        }
        assert!(!files.is_empty(), "adapter {adapter} has no source files");
        for file in &files {
            seen += 1;
            for (n, line) in code_lines(file) {
                for module in crate_paths(&line) {
                    let other_adapter = ADAPTERS.contains(&module.as_str()) && module != *adapter;
                    let above =
                        ENGINE.contains(&module.as_str()) || WAYS_IN.contains(&module.as_str());
                    if other_adapter || above {
                        found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                    }
                }
            }
        }
    }
    assert!(seen >= ADAPTERS.len());
    assert!(
        found.is_empty(),
        "adapters import only the core (and their own modules):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_engine_does_not_import_the_ways_in() {
    let files = sources(&src().join("engine"));
    assert!(files.len() >= 5, "the engine's files were not found");
    let mut found = Vec::new();
    for file in &files {
        for (n, line) in code_lines(file) {
            for module in crate_paths(&line) {
                if WAYS_IN.contains(&module.as_str()) {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the engine is below cli, config and daemon:\n{}",
        found.join("\n")
    );
}
