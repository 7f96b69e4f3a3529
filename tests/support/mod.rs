//! Test support: real servers and tools the integration tests talk to.

pub mod d1;
pub mod faulty;
pub mod receiver;
pub mod s3;
pub mod sqlite3;
