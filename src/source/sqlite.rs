//! SQLite source: one read transaction as a consistent snapshot, streamed into the dump writer;
//! and the loader that replays a dump into a new SQLite file (restore, verify).
//!
//! CONTRACT STUB — to be implemented by the dump helper.
use std::collections::BTreeMap;
use std::path::Path;

pub struct DumpRequest<'a> {
    pub database: &'a str,
    pub path: &'a Path,
    pub job_id: &'a str,
    pub generated_at: chrono::DateTime<chrono::Utc>,
    pub exclude_tables: &'a [String],
    pub busy_timeout: std::time::Duration,
}
pub struct DumpSummary {
    pub tables: BTreeMap<String, u64>,
    pub row_count: u64,
    pub schema_hash: String,
    pub sql_bytes: u64,
}
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub rows_done: u64,
    pub rows_total: u64,
}
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("write dump: {0}")]
    Write(std::io::Error),
}
pub fn dump(
    req: &DumpRequest,
    out: &mut dyn std::io::Write,
    progress: &mut dyn FnMut(Progress),
) -> Result<DumpSummary, SourceError> {
    let _ = (req, out, progress);
    todo!()
}
pub struct LoadSummary {
    pub statements: u64,
}
pub fn load(reader: &mut dyn std::io::BufRead, target: &Path) -> Result<LoadSummary, SourceError> {
    let _ = (reader, target);
    todo!()
}
pub struct Inspection {
    pub tables: BTreeMap<String, u64>,
    pub schema_hash: String,
    pub integrity: String,
    pub foreign_key_violations: u64,
}
pub fn inspect(path: &Path) -> Result<Inspection, SourceError> {
    let _ = path;
    todo!()
}
