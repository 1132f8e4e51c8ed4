//! An async client for the OCI distribution API: auth, transport, tags, manifests, blobs, uploads,
//! referrers.

pub mod auth;
pub mod blobs;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod docker_config;
pub mod error;
pub mod helper;
pub mod listing;
pub mod login;
pub mod manifests;
pub mod quirks;
pub mod stall;
pub mod target;
pub mod transport;
pub mod uploads;
pub mod urls;

pub use transport::TransportOptions;
