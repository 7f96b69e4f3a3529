//! The pure core: the decisions, with no tokio, network, SQLite or filesystem code and the clock
//! passed in. What a policy means (`policy`, `schedule`), what is due and what is kept and why
//! (`plan`, `retention`, and per replica `replication`), what sits in the bucket as typed facts (`inventory`) and which of it a pass lists (`listing`), object keys and
//! manifests (`manifest`), the SQL dump format (`dump`), the layers between SQL text and stored
//! bytes (`codec`) and the age keys of its encryption layer (`keys`), the clock as a value (`clock`), and numbers for people (`human`).
//! Most of the tests live here.

pub mod clock;
pub mod codec;
pub mod dump;
pub mod human;
pub mod inventory;
pub mod keys;
pub mod lease;
pub mod listing;
pub mod manifest;
pub mod plan;
pub mod points;
pub mod policy;
pub mod replication;
pub mod retention;
pub mod schedule;
