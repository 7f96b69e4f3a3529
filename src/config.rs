//! Reading `patina.toml`: raw serde structs, `${VAR}` expansion, validation into a [`Policy`]
//! with every problem reported at once (file:line:column, key, hint), and the JSON Schema.
//!
//! CONTRACT STUB — to be implemented (see the helper brief). The public API below is fixed.

use std::path::Path;

use crate::policy::Policy;

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

/// Every problem found in a policy file (never empty). `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_problems(.problems))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

fn display_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", p.file, p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parse and validate a policy from text. `file` names it in messages; `base_dir` resolves
/// relative paths; `env` looks up `${VAR}`.
pub fn from_str(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, ConfigError> {
    let _ = (text, file, base_dir, env);
    todo!()
}

/// Read `path` and validate it with the process environment.
pub fn load(path: &Path) -> Result<Policy, ConfigError> {
    let _ = path;
    todo!()
}

/// The JSON Schema of the policy file, generated from the raw config types.
pub fn json_schema() -> serde_json::Value {
    todo!()
}

/// The effective policy as `patina check` prints it: databases with priority, schedule and
/// the next three fire times after `now` in the configured timezone. Secrets print as `***`.
pub fn describe(policy: &Policy, now: chrono::DateTime<chrono::Utc>) -> String {
    let _ = (policy, now);
    todo!()
}
