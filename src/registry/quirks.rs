//! What one registry was found, during this run, not to do, so that the request it refused is not
//! sent again for every blob or manifest (ECR opens an upload for every mount, some registries
//! refuse HEAD on manifests or PATCH uploads), and the pause a rate-limited registry asked for,
//! shared by every request to it instead of each request hammering on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The largest minimum chunk a registry may ask for (`OCI-Chunk-Min-Length`): each chunk is held
/// in memory, once per concurrent upload, so a larger demand is refused rather than obeyed.
pub const MAX_CHUNK_MIN: u64 = 256 << 20;

/// The chunk size used when a registry refuses a whole blob in one request and names no minimum.
pub const FORCED_CHUNK: u64 = 16 << 20;

/// One registry's refusals and pause, learned as the run goes.
#[derive(Default)]
pub struct Learned {
    /// HEAD on manifests is refused (405/501): manifests are resolved with GET.
    head_refused: AtomicBool,
    /// Cross-repository mounts open an upload session instead: not asked for again.
    mount_refused: AtomicBool,
    /// A blob in one PUT is refused (413): uploads go in PATCH chunks.
    monolithic_refused: AtomicBool,
    /// PATCH uploads are refused (405/501): no held uploads, blobs go in one PUT.
    patch_refused: AtomicBool,
    /// The largest `OCI-Chunk-Min-Length` the registry announced (0: none).
    chunk_min: AtomicU64,
    /// Requests wait until then (a 429's `Retry-After`).
    paused_until: Mutex<Option<Instant>>,
    /// Per repository, what its first upload found (see [`RepoGate`]).
    repos: Mutex<HashMap<String, RepoGate>>,
    /// A mount succeeded: mounts go at once from then on.
    mount_works: AtomicBool,
    /// Held by the one mount asked while nobody knows yet whether the registry mounts, so that a
    /// registry that does not is asked once, not once per upload under way.
    mount_probe: tokio::sync::Mutex<()>,
    /// The registry counts manifest GETs against a pull quota (Docker Hub; any registry that
    /// answers with `RateLimit-Limit`): a tag is checked with HEAD, which is not counted, before its
    /// manifest is fetched.
    counts_pulls: AtomicBool,
}

/// What the first upload to a repository found: None while none succeeded or failed for good;
/// `Some(None)` it takes uploads; `Some(Some(error))` it does not exist. Held while that first
/// upload is opened, so that the others wait for its answer.
pub type RepoGate = Arc<tokio::sync::Mutex<Option<Option<String>>>>;

/// A refusal [`Learned`] remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// HEAD on manifests.
    Head,
    /// Cross-repository mounts.
    Mount,
    /// A blob in one PUT.
    Monolithic,
    /// PATCH uploads.
    Patch,
}

impl Learned {
    fn flag(&self, what: Refusal) -> &AtomicBool {
        match what {
            Refusal::Head => &self.head_refused,
            Refusal::Mount => &self.mount_refused,
            Refusal::Monolithic => &self.monolithic_refused,
            Refusal::Patch => &self.patch_refused,
        }
    }

    /// Whether the registry refused this already.
    pub fn refused(&self, what: Refusal) -> bool {
        self.flag(what).load(Ordering::Relaxed)
    }

    /// Records a refusal; true the first time (when it is worth a line of trace).
    pub fn refuse(&self, what: Refusal) -> bool {
        !self.flag(what).swap(true, Ordering::Relaxed)
    }

    /// Records that the registry counts manifest GETs against a pull quota.
    pub fn count_pulls(&self) {
        self.counts_pulls.store(true, Ordering::Relaxed);
    }

    /// Whether the registry counts manifest GETs against a pull quota.
    pub fn pulls_counted(&self) -> bool {
        self.counts_pulls.load(Ordering::Relaxed)
    }

    /// Waits, while it is not known whether the registry mounts, for the mount being asked; the
    /// guard returned is held by the caller's own mount until it is answered.
    pub async fn mount_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.mount_works.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.mount_probe.lock().await)
    }

    /// Records that a mount succeeded.
    pub fn mount_worked(&self) {
        self.mount_works.store(true, Ordering::Relaxed);
    }

    /// The gate of uploads to `repo`.
    pub fn repo_gate(&self, repo: &str) -> RepoGate {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        repos.entry(repo.to_string()).or_default().clone()
    }

    /// Records the registry's `OCI-Chunk-Min-Length`; an absurd one is an error to report.
    pub fn announce_chunk_min(&self, value: Option<&str>) -> Result<(), String> {
        let Some(v) = value else { return Ok(()) };
        let min = v.trim().parse::<u64>().map_err(|_| {
            format!(
                "the registry announced an unreadable OCI-Chunk-Min-Length {:?}",
                crate::scrub::escape_controls(v)
            )
        })?;
        if min > MAX_CHUNK_MIN {
            return Err(format!(
                "the registry asks for upload chunks of at least {min} bytes (OCI-Chunk-Min-Length), over the {MAX_CHUNK_MIN} byte limit this tool holds in memory per upload"
            ));
        }
        self.chunk_min.fetch_max(min, Ordering::Relaxed);
        Ok(())
    }

    /// The chunk size for an upload in pieces: the configured one (or, when the registry refused
    /// whole blobs, [`FORCED_CHUNK`]), raised to the registry's minimum; None for one PUT.
    pub fn chunk_size(&self, configured: Option<u64>) -> Option<u64> {
        let base =
            configured.or_else(|| self.refused(Refusal::Monolithic).then_some(FORCED_CHUNK))?;
        Some(base.max(self.chunk_min.load(Ordering::Relaxed)))
    }

    /// Asks every request to wait `wait` from now (the longest pause asked wins); true when this
    /// extends the pause already under way by more than a second (worth telling the user).
    pub fn pause(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let Ok(mut p) = self.paused_until.lock() else { return false };
        let news = p.is_none_or(|cur| until > cur + Duration::from_secs(1));
        if p.is_none_or(|cur| until > cur) {
            *p = Some(until);
        }
        news
    }

    /// Waits out a pause under way, if any.
    pub async fn wait_pause(&self) {
        let until = self.paused_until.lock().ok().and_then(|p| *p);
        if let Some(until) = until.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_reported_once() {
        let l = Learned::default();
        assert!(!l.refused(Refusal::Mount));
        assert!(l.refuse(Refusal::Mount));
        assert!(!l.refuse(Refusal::Mount));
        assert!(l.refused(Refusal::Mount));
        assert!(!l.refused(Refusal::Head));
    }

    #[test]
    fn chunk_sizes_follow_the_registry() {
        let l = Learned::default();
        assert_eq!(l.chunk_size(None), None);
        assert_eq!(l.chunk_size(Some(1000)), Some(1000));
        l.announce_chunk_min(Some("5242880")).unwrap();
        assert_eq!(l.chunk_size(Some(1000)), Some(5_242_880));
        assert_eq!(l.chunk_size(None), None, "a minimum alone does not force chunks");
        l.refuse(Refusal::Monolithic);
        assert_eq!(l.chunk_size(None), Some(FORCED_CHUNK));
        assert!(l.announce_chunk_min(Some("lots")).is_err());
        assert!(l.announce_chunk_min(Some(&(MAX_CHUNK_MIN + 1).to_string())).is_err());
        assert!(l.announce_chunk_min(None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_are_shared_and_the_longest_wins() {
        let l = Learned::default();
        assert!(l.pause(Duration::from_secs(5)));
        assert!(!l.pause(Duration::from_secs(3)), "a shorter pause is inside the one under way");
        let start = Instant::now();
        l.wait_pause().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }
}
