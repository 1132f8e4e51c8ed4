//! A small pool of large read buffers, so streaming a blob does not fault fresh pages in per chunk.

use bytes::Bytes;
use std::sync::Mutex;

/// The size of one buffer: large enough that one read and one hop move a lot, small enough that
/// the buffers of every stream in flight stay a few MiB.
pub const SIZE: usize = 1024 * 1024;

/// Idle buffers, at most `kept` of them (bounds what the pool holds once streams end).
struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
    kept: usize,
}

static POOL: Pool = Pool { idle: Mutex::new(Vec::new()), kept: 16 };

/// An empty buffer with room for `SIZE` bytes, recycled when one is idle.
pub fn take() -> Vec<u8> {
    POOL.take()
}

/// Shares `buf` as `Bytes`; it goes back to the pool when the last clone is dropped.
pub fn into_bytes(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(buf, &POOL))
}

impl Pool {
    fn take(&self) -> Vec<u8> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(SIZE),
        }
    }
}

struct Pooled(Vec<u8>, &'static Pool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A buffer that grew (or was never one of ours) is not worth keeping.
        if self.0.capacity() != SIZE {
            return;
        }
        if let Ok(mut idle) = self.1.idle.lock() {
            if idle.len() < self.1.kept {
                idle.push(std::mem::take(&mut self.0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kept: usize) -> &'static Pool {
        Box::leak(Box::new(Pool { idle: Mutex::new(Vec::new()), kept }))
    }

    #[test]
    fn a_dropped_buffer_comes_back_empty_and_is_reused() {
        let pool = pool(1);
        let mut buf = pool.take();
        buf.extend_from_slice(b"abc");
        let ptr = buf.as_ptr();
        let bytes = Bytes::from_owner(Pooled(buf, pool));
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(&clone[..], b"abc", "a clone still reads the bytes");
        drop(clone);
        let again = pool.take();
        assert!(again.is_empty() && again.capacity() == SIZE);
        assert_eq!(again.as_ptr(), ptr, "the dropped buffer was not recycled");
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let pool = pool(2);
        let held: Vec<Bytes> =
            (0..5).map(|_| Bytes::from_owner(Pooled(pool.take(), pool))).collect();
        drop(held);
        assert_eq!(pool.idle.lock().map(|idle| idle.len()).unwrap_or_default(), 2);
    }
}
