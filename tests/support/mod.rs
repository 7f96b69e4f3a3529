//! Test support: real servers and tools the integration tests talk to.
pub mod sqlite3;
