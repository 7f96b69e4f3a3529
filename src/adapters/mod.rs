//! Adapters: the world outside, each behind a narrow interface and importing only the core —
//! object storage (`store`: a `Backend` trait with conditional writes), the SQLite catalog
//! (`catalog`), database sources (`source`: the `Source` interface, sqlite and d1), alert sinks
//! (`alert`, behind `AlertHistory`), and the surfaces that show the engine's state (`http`,
//! `metrics`, `systemd`).

pub mod alert;
pub mod catalog;
pub mod http;
pub mod metrics;
pub mod source;
pub mod store;
pub mod systemd;
