//! Command implementations: turn parsed flags into engine runs and print the results.

pub mod backup;
pub mod common;
pub mod copy;
pub mod discover;
pub mod login;
pub mod manifest;
pub mod prompt;
pub mod repo;
pub mod restore;
pub mod rules;
pub mod shard;
pub mod verify;

/// An error in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
