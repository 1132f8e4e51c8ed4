//! What a run that stops early still does before it exits: abandon the registry upload sessions and
//! the object storage multipart uploads it left open.

use crate::registry::target::Registries;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a run that stops early spends deleting the upload sessions it left open: the user is
/// waiting, and a registry that does not answer must not hold the exit.
pub const ABANDON_LIMIT: Duration = Duration::from_millis(1500);

/// How long the runtime is given, at exit, for tasks still in flight to drop (and remove their
/// temporary files) after the command has ended.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// The registries of the run (held until the process exits).
static WATCHED: Mutex<Vec<Arc<Registries>>> = Mutex::new(Vec::new());

/// Keeps `registries` for [`abandon_uploads`].
pub fn watch(registries: &Arc<Registries>) {
    if let Ok(mut w) = WATCHED.lock() {
        w.push(registries.clone());
    }
}

/// Deletes the upload sessions and aborts the multipart uploads the run left open, giving up after
/// [`ABANDON_LIMIT`].
pub async fn abandon_uploads() {
    let watched: Vec<Arc<Registries>> = WATCHED.lock().map(|w| w.clone()).unwrap_or_default();
    let all = futures::future::join_all(watched.iter().map(|r| r.abandon_open_uploads()));
    let both = futures::future::join(all, crate::object::upload::abort_open());
    let _ = tokio::time::timeout(ABANDON_LIMIT, both).await;
}
