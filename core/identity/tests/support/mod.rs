//! Helpers shared by the integration tests (and, through `#[path]`, the benchmark).

pub mod generator;
