//! `oras` as a library: the graph-copy engine, its targets (registries, OCI layouts) and the commands over them.
//! The binary is a thin shell over [`commands`]; fuzzing and benchmarks use the parsers directly.

pub mod buffers;
pub mod cli;
pub mod commands;
pub mod digest;
pub mod engine;
pub mod interrupt;
pub mod layout;
pub mod manifest;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod scrub;
pub mod target;
