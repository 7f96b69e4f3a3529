//! Database sources: each produces one consistent snapshot of a database as a Patina SQL dump.

pub mod d1;
pub mod d1_restore;
pub mod sqlite;
