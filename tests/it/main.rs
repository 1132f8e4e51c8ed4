//! The end-to-end tests: one test binary (`cargo test --test it`), a module per subject, and the
//! harness they share (registries, relays, fixtures, and running the `oras` binary).
//!
//! One binary rather than one per subject: the harness is compiled once, and a helper no test
//! uses is reported as dead code.

mod harness;

mod archives;
mod auth_tls;
mod backup_restore;
mod bad_input;
mod companion;
mod docker_save;
mod failure_safety;
mod fixtures_selftest;
mod hostile;
mod hostile_registry;
mod image;
mod incremental;
mod login;
mod object_storage;
mod referrers_api;
mod registry_profiles;
mod registry_quirks;
mod selection;
mod shards;
mod version;
