//! Patina: a declarative backup daemon for SQLite and Cloudflare D1 databases.
//!
//! The modules follow the architecture of `DESIGN.md` §2. Pure modules (`config`, `policy`,
//! `schedule`, `dump`, `manifest`, `codec`) import no tokio, network or filesystem code and take
//! the clock as a parameter; adapters (`store`, `source`, `catalog`) sit behind narrow
//! interfaces; `backup`, `restore` and `cli` compose them. `codec` is the one pipeline from SQL
//! text to stored bytes and back (compress → hash; verify → decompress).

pub mod alert;
pub mod archive;
pub mod backup;
pub mod bucket;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod dump;
pub mod http;
pub mod human;
pub mod inventory;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod source;
pub mod store;
pub mod systemd;
