//! Patina: a declarative backup daemon for SQLite and Cloudflare D1 databases.
//!
//! The folders show the architecture of `DESIGN.md` §2, and arrows point down only:
//! [`core`] holds the pure decisions (no tokio, network, SQLite or filesystem code; the clock is
//! a parameter), [`adapters`] the world outside behind narrow interfaces, [`engine`] composes
//! them, and [`cli`], [`config`] and [`daemon`] (the process loop, its HTTP surface and
//! metrics) are the ways in. `tests/integration/layers.rs` checks the arrows. Every module is also re-exported at the
//! crate root (`patina::policy`, `patina::store`, …), so paths name the module, not its layer.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod engine;

pub use adapters::{alert, catalog, source, store, systemd};
pub use core::{
    clock, codec, dump, human, inventory, keys, lease, listing, manifest, plan, points, policy,
    replication, retention, schedule,
};
pub use daemon::{http, metrics};
pub use engine::{archive, backup, bucket, cluster, drill, reconcile, replica, restore};
