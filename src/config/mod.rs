//! Reading `patina.toml`: raw serde structs, `${VAR}` expansion, validation into a [`Policy`]
//! with every problem reported at once (file:line:column, key, hint), and the JSON Schema.
//!
//! The pipeline, all in [`from_str`]:
//!
//! 1. `toml::de::DeTable::parse` — a syntax error is one problem at its span.
//! 2. The spanned tree becomes a plain `toml::Value` tree; every string has its `${VAR}`
//!    references expanded (`$${` writes a literal `${`); the position of every key and value is
//!    indexed by its dotted path (`database[1].schedule`, 0-based indices).
//! 3. The tree is checked against the JSON Schema generated from the raw types below, so the
//!    schema editors use and the validator can never disagree: unknown keys (with a
//!    did-you-mean), missing required keys, wrong types, unknown enum values, minimums. Offending
//!    entries are removed so that the next steps still run and report their own problems.
//! 4. The cleaned tree is deserialized into the raw types (each `[[database]]` and `[[alert]]`
//!    on its own, so one broken entry does not hide the others).
//! 5. Semantic validation builds the [`Policy`]: addresses, durations, cron, timezone, URLs,
//!    names, cross references, credentials, age recipients (a `recipients_file` is read here,
//!    and its problems point at its own lines; the `identity_file` is not read: only restores
//!    need it).
//!
//! One file per job: `raw` (the types as written, and so the schema), `context`
//! (positions, problems, `${VAR}` expansion: steps 1–2), `schema_check` (step 3),
//! `validate` (steps 4–5), `render` (`patina check`'s description and the policy reference).
//!
//! A path that already has a problem gets no follow-on problems. Messages never contain the
//! value of a secret (tokens, keys, alert URLs and headers).
//!
//! Decisions: `weekly = "off"` (or `monthly = "off"`) disables that tier; storage `prefix` loses
//! any leading `/` and gains a trailing one; `[[alert]] on` is required and non-empty; a D1
//! database's `mode` defaults to `export`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::policy::{
    AlertEvent, AlertSettings, AlertSink, ApiToken, Cloudflare, Cluster, Compression, D1Mode,
    DEFAULT_TOKEN, Daemon, Database, Drills, Encryption, MAX_TOKEN_LEN, Policy, Priority,
    PriorityLevel, Retention, Scope, Secret, SinkKind, SourceSpec, Span, StaleAfter, Storage,
    StorageLocation, TlsFiles,
};
use crate::schedule::Schedule;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `database[1].schedule` (empty for syntax errors).
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for ConfigProblem {
    /// `<message> at <file>:<line>:<col>`, then ` — <hint>` when there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {}:{}:{}",
            self.message, self.file, self.line, self.column
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a policy file (never empty). `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_problems(.problems))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

fn display_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ConfigProblem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

mod context;
mod raw;
mod render;
mod schema_check;
#[cfg(test)]
mod tests;
mod validate;

use context::*;
use raw::*;
pub use render::{describe, reference_markdown};
use schema_check::*;

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Parse and validate a policy from text. `file` names it in messages; `base_dir` resolves
/// relative paths; `env` looks up `${VAR}`.
pub fn from_str(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, ConfigError> {
    let mut cx = Cx::new(text, file);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = cx.line_col(offset);
            return Err(ConfigError {
                problems: vec![ConfigProblem {
                    file: file.to_string(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("invalid TOML: {}", e.message().trim_end()),
                    hint: None,
                }],
            });
        }
    };
    let span = doc.span();
    let root = Spanned::new(span, DeValue::Table(doc.into_inner()));
    let mut tree = cx.convert(&root, String::new(), 0, env);

    let schema = json_schema();
    cx.check(&mut tree, &schema, &schema, "");

    let policy = cx.build(tree, file, base_dir);
    cx.finish(policy)
}

/// Read `path` and validate it with the process environment.
pub fn load(path: &Path) -> Result<Policy, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![ConfigProblem {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("read {}: {e}", path.display()),
            hint: None,
        }],
    })?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    from_str(&text, &path.display().to_string(), &base_dir, &|name| {
        std::env::var(name).ok()
    })
}

/// The JSON Schema of the policy file, generated from the raw config types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    let mut json = serde_json::to_value(schema).expect("a schema is JSON");
    strip_null(&mut json);
    json
}

/// TOML has no null: drop the `null` alternatives schemars adds for `Option` fields.
fn strip_null(json: &mut Json) {
    match json {
        Json::Object(map) => {
            if map.get("default") == Some(&Json::Null) {
                map.remove("default");
            }
            if let Some(Json::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Json::Array(alts)) = map.get_mut(key) {
                    alts.retain(|a| a.get("type").and_then(Json::as_str) != Some("null"));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        map.remove(key);
                        if let Json::Object(inner) = only {
                            for (k, v) in inner {
                                map.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
            for v in map.values_mut() {
                strip_null(v);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}
