//! What a run that stops early still does before it exits: abandon the registry upload sessions it left open.

use crate::registry::target::Registries;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The registries of the run (held until the process exits).
static WATCHED: Mutex<Vec<Arc<Registries>>> = Mutex::new(Vec::new());

/// Keeps `registries` for [`abandon_uploads`].
pub fn watch(registries: &Arc<Registries>) {
    if let Ok(mut w) = WATCHED.lock() {
        w.push(registries.clone());
    }
}

/// Deletes the upload sessions the run left open, giving up after `limit` (the user is waiting).
pub async fn abandon_uploads(limit: Duration) {
    let watched: Vec<Arc<Registries>> = WATCHED.lock().map(|w| w.clone()).unwrap_or_default();
    let all = futures::future::join_all(watched.iter().map(|r| r.abandon_open_uploads()));
    let _ = tokio::time::timeout(limit, all).await;
}
