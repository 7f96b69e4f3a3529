//! SQLite source: one read transaction as a consistent snapshot, streamed into the dump writer;
//! and the loader that replays a dump into a new SQLite file (restore, verify).
//!
//! CONTRACT STUB — to be implemented by the dump helper.
