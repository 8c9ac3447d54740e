//! Reports shared by the conformance suite, benchmarks and acceptance gates.

pub mod table;
