//! Blob transfers that stall: a transfer fails when it moves fewer bytes than a floor rate allows
//! over a whole window (curl's `--speed-limit`/`--speed-time`), so a registry that trickles a byte
//! every few seconds cannot hold a run forever, while a slow but moving link is left alone.

use bytes::Bytes;
use futures::{Future, Stream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The floor: at least `bytes_per_second` on average over every `window` (0 bytes per second: no
/// floor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallLimit {
    /// The slowest average rate allowed over a window.
    pub bytes_per_second: u64,
    /// How long a transfer may stay below the rate.
    pub window: Duration,
}

impl Default for StallLimit {
    fn default() -> Self {
        StallLimit { bytes_per_second: 1024, window: Duration::from_secs(30) }
    }
}

impl StallLimit {
    /// Bytes a transfer must move in one window.
    fn floor(&self) -> u64 {
        (self.bytes_per_second as f64 * self.window.as_secs_f64()) as u64
    }

    /// What a stalled transfer's error says.
    pub fn describe(&self) -> String {
        format!(
            "transfer stalled: less than {} bytes per second for {} s (--speed-limit, --speed-time)",
            self.bytes_per_second,
            self.window.as_secs()
        )
    }
}

/// Bytes a transfer has moved, and whether it is over.
#[derive(Default)]
pub struct Moved {
    bytes: AtomicU64,
    done: AtomicBool,
    finished: tokio::sync::Notify,
}

impl Moved {
    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Marks the transfer's bytes as all moved: the watch ends.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.finished.notify_waiters();
    }

    /// Resolves once every byte has moved.
    pub async fn finished(&self) {
        loop {
            // Created before the check: a finish in between still wakes it.
            let woken = self.finished.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }
}

/// Resolves with the stall's description when a window passes in which `moved` grew by less than
/// the floor; never while the transfer is over or when there is no floor.
pub async fn watch(moved: Arc<Moved>, limit: StallLimit) -> String {
    if limit.bytes_per_second == 0 || limit.window.is_zero() {
        return std::future::pending().await;
    }
    let mut before = moved.bytes.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(limit.window).await;
        if moved.done.load(Ordering::Relaxed) {
            return std::future::pending().await;
        }
        let now = moved.bytes.load(Ordering::Relaxed);
        if now.saturating_sub(before) < limit.floor() {
            return limit.describe();
        }
        before = now;
    }
}

type Watch = Pin<Box<dyn Future<Output = String> + Send>>;

/// A byte stream that counts what passes into `moved` and ends with an error (kind `TimedOut`) when
/// the watch finds it stalled while its consumer waits for bytes.
pub struct Guarded<S> {
    inner: S,
    moved: Arc<Moved>,
    watch: Watch,
}

/// Wraps a blob's byte stream in the stall watch.
pub fn guard<S>(inner: S, limit: StallLimit) -> Guarded<S> {
    let moved = Arc::new(Moved::default());
    Guarded { inner, moved: moved.clone(), watch: Box::pin(watch(moved, limit)) }
}

/// Counts the bytes of a stream into `moved` (an upload body: the registry's reading pace is the
/// rate).
pub fn counted<S>(inner: S, moved: Arc<Moved>) -> Guarded<S> {
    Guarded { inner, moved, watch: Box::pin(std::future::pending()) }
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.moved.add(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.moved.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => match self.watch.as_mut().poll(cx) {
                Poll::Ready(why) => {
                    self.moved.finish();
                    Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn trickle(every: Duration) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        Box::pin(futures::stream::unfold((), move |_| async move {
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from_static(b"x")), ()))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_fails_after_one_window() {
        let limit = StallLimit { bytes_per_second: 1024, window: Duration::from_secs(3) };
        let started = tokio::time::Instant::now();
        let mut s = guard(trickle(Duration::from_secs(2)), limit);
        let err = loop {
            match s.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the trickle ended"),
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("stalled"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_above_the_floor_is_left_alone() {
        let limit = StallLimit { bytes_per_second: 1, window: Duration::from_secs(3) };
        let s = guard(trickle(Duration::from_millis(500)), limit);
        let got: Vec<_> = s.take(20).collect().await;
        assert!(got.iter().all(|r| r.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn no_floor_never_fires() {
        let limit = StallLimit { bytes_per_second: 0, window: Duration::from_secs(1) };
        let w = tokio::time::timeout(
            Duration::from_secs(3600),
            watch(Arc::new(Moved::default()), limit),
        )
        .await;
        assert!(w.is_err());
    }
}
