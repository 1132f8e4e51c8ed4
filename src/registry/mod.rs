//! An async client for the OCI distribution API: auth, transport, tags, manifests, blobs, uploads, referrers.

pub mod auth;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod error;
pub mod stall;
pub mod target;
pub mod transport;

pub use transport::TransportOptions;
