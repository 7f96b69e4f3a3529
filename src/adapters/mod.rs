//! Adapters: the world outside, each behind a narrow interface and importing only the core —
//! object storage (`store`: a `Backend` trait with conditional writes), the SQLite catalog
//! (`catalog`), database sources (`source`: the `Source` interface, sqlite and d1), alert sinks
//! (`alert`, behind `AlertHistory`) and the service manager (`systemd`). No adapter imports
//! another adapter's module or the engine (a test in `tests/integration/layers.rs` checks it).

pub mod alert;
pub mod catalog;
pub mod source;
pub mod store;
pub mod systemd;
