//! dump tests
