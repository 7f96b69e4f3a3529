//! The engine: composes the core and the adapters. `daemon` is the composition root (watch the
//! policy, tick, serve, shut down); `reconcile` runs one pass (plan, then execute); `backup`,
//! `archive` and `restore` do one job each; `replica` copies to the other destinations; `bucket` reads the bucket into the pure inventory.

pub mod archive;
pub mod backup;
pub mod bucket;
pub mod cluster;
pub mod drill;
pub mod reconcile;
pub mod replica;
pub mod restore;
