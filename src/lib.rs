//! `oras` as a library: the graph-copy engine, its targets (registries, OCI layouts) and the
//! commands over them. The binary is a thin shell over [`commands`]; fuzzing and benchmarks use the
//! parsers directly.

// A function a reader can hold in mind at once: at most 100 lines (clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod buffers;
pub mod cli;
pub mod commands;
pub mod digest;
pub mod engine;
pub mod interrupt;
pub mod layout;
pub mod manifest;
pub mod object;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod scrub;
pub mod target;
