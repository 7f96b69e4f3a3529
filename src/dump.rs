//! The SQL dump writer (pure): values, identifiers, header and footer, in the deterministic
//! format of DESIGN §6.
//!
//! CONTRACT STUB — to be implemented by the dump helper.
