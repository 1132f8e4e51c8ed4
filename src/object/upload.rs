//! Writing objects: multipart uploads whose object appears only when completed, aborted when a run
//! fails or is interrupted (the open ones are kept here for `interrupt::abandon_uploads`).
//!
//! Memory: a part is sent once [`PART_SIZE`] bytes are buffered (16 MiB; the size doubles every
//! 2,000 parts, so S3's 10,000 parts reach about 1 TB), and at most [`ARCHIVE_PARTS_IN_FLIGHT`]
//! parts of an archive are in flight: an archive holds at most 5 x 16 MiB = 80 MiB (plus 1 MiB of
//! pipe) while it is below 31 GiB. A blob of a layout under a prefix holds at most
//! (1 + [`BLOB_PARTS_IN_FLIGHT`]) parts, 48 MiB, per concurrent transfer.

use super::{error, Location, Store};
use crate::target::{ByteStream, Result};
use anyhow::anyhow;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinSet;

/// The size of the first parts; S3's minimum is 5 MiB.
pub const PART_SIZE: usize = 16 << 20;
/// Parts of an archive being uploaded at once.
pub const ARCHIVE_PARTS_IN_FLIGHT: usize = 4;
/// Parts of one blob being uploaded at once (the engine runs several blobs at once).
pub const BLOB_PARTS_IN_FLIGHT: usize = 2;

/// The size of part `n` (from 0): larger as the object grows, as S3 allows 10,000 parts.
fn part_size(n: usize) -> usize {
    PART_SIZE << (n / 2000).min(8)
}

/// An upload that is open until completed or aborted.
type Shared = Arc<tokio::sync::Mutex<Option<Box<dyn MultipartUpload>>>>;

/// The uploads of the run that are still open, by the object they would create.
static OPEN: Mutex<Vec<(String, Shared)>> = Mutex::new(Vec::new());

fn forget(shared: &Shared) {
    if let Ok(mut open) = OPEN.lock() {
        open.retain(|(_, s)| !Arc::ptr_eq(s, shared));
    }
}

/// Aborts one upload if it is still open.
async fn abort_shared(shared: &Shared) {
    let mut guard = shared.lock().await;
    if let Some(mut up) = guard.take() {
        let _ = up.abort().await;
    }
    drop(guard);
    forget(shared);
}

/// Aborts every multipart upload the run left open (a failed or interrupted run), so that no part
/// stays stored (and billed) at the key. Called by `interrupt::abandon_uploads`, under its limit.
pub async fn abort_open() {
    let open: Vec<Shared> =
        OPEN.lock().map(|o| o.iter().map(|(_, s)| s.clone()).collect()).unwrap_or_default();
    futures::future::join_all(open.iter().map(abort_shared)).await;
}

/// A multipart upload of one object, its parts sent as they fill.
struct Parts {
    shared: Shared,
    inflight: JoinSet<object_store::Result<()>>,
    max_inflight: usize,
    sent: usize,
    buf: Vec<Bytes>,
    buffered: usize,
    what: String,
    loc: Location,
}

impl Parts {
    async fn start(
        store: &Store,
        path: &ObjPath,
        loc: &Location,
        max_inflight: usize,
    ) -> Result<Parts> {
        let what = format!("cannot write s3://{}/{path}", loc.bucket);
        let up = store.put_multipart(path).await.map_err(|e| error(e, &what, loc))?;
        let shared: Shared = Arc::new(tokio::sync::Mutex::new(Some(up)));
        if let Ok(mut open) = OPEN.lock() {
            open.push((path.to_string(), shared.clone()));
        }
        Ok(Parts {
            shared,
            inflight: JoinSet::new(),
            max_inflight,
            sent: 0,
            buf: Vec::new(),
            buffered: 0,
            what,
            loc: loc.clone(),
        })
    }

    async fn wait_one(&mut self) -> Result<()> {
        if let Some(done) = self.inflight.join_next().await {
            done.map_err(|e| anyhow!("internal: an upload task failed: {e}"))?
                .map_err(|e| error(e, &self.what, &self.loc))?;
        }
        Ok(())
    }

    async fn send_buffered(&mut self) -> Result<()> {
        while self.inflight.len() >= self.max_inflight {
            self.wait_one().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        self.buffered = 0;
        let part = {
            let mut guard = self.shared.lock().await;
            let up =
                guard.as_mut().ok_or_else(|| anyhow!("{}: the upload was aborted", self.what))?;
            up.put_part(payload)
        };
        self.inflight.spawn(part);
        self.sent += 1;
        Ok(())
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffered += chunk.len();
        self.buf.push(chunk);
        if self.buffered >= part_size(self.sent) {
            self.send_buffered().await?;
        }
        Ok(())
    }

    /// Sends the last part, waits for every part and completes the object.
    async fn finish(mut self) -> Result<()> {
        // S3 completes an upload of at least one part; the last may be short, even empty.
        if self.buffered > 0 || self.sent == 0 {
            self.send_buffered().await?;
        }
        while !self.inflight.is_empty() {
            self.wait_one().await?;
        }
        let mut guard = self.shared.lock().await;
        let mut up =
            guard.take().ok_or_else(|| anyhow!("{}: the upload was aborted", self.what))?;
        drop(guard);
        let done = up.complete().await;
        forget(&self.shared);
        if done.is_err() {
            let _ = up.abort().await;
        }
        done.map_err(|e| error(e, &self.what, &self.loc))?;
        Ok(())
    }

    async fn abort(mut self) {
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        abort_shared(&self.shared).await;
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        // Dropped midway (a cancelled transfer): the upload is aborted in the background, and
        // `abort_open` waits for it when the run ends.
        let open = self.shared.try_lock().map(|g| g.is_some()).unwrap_or(true);
        if open {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let shared = self.shared.clone();
                handle.spawn(async move { abort_shared(&shared).await });
            }
        }
    }
}

/// Writes one object from a blob stream: in one PUT when it fits in a part, else in a multipart
/// upload; either way the object appears only once whole, and a stream that fails leaves nothing.
pub async fn put_stream(
    store: &Store,
    path: &ObjPath,
    loc: &Location,
    mut data: ByteStream,
) -> Result<()> {
    let what = format!("cannot write s3://{}/{path}", loc.bucket);
    let mut head = Vec::new();
    let mut size = 0;
    while size < PART_SIZE {
        match data.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                size += chunk.len();
                head.push(chunk);
            }
            None => {
                let payload: PutPayload = head.into_iter().collect();
                store.put(path, payload).await.map_err(|e| error(e, &what, loc))?;
                return Ok(());
            }
        }
    }
    let mut parts = Parts::start(store, path, loc, BLOB_PARTS_IN_FLIGHT).await?;
    let copied = copy_into(&mut parts, head, &mut data).await;
    match copied {
        Ok(()) => parts.finish().await,
        Err(e) => {
            parts.abort().await;
            Err(e)
        }
    }
}

/// Writes what was read ahead and the rest of the stream into the parts.
async fn copy_into(parts: &mut Parts, head: Vec<Bytes>, data: &mut ByteStream) -> Result<()> {
    for chunk in head {
        parts.write(chunk).await?;
    }
    while let Some(chunk) = data.next().await {
        parts.write(chunk?).await?;
    }
    Ok(())
}

/// An archive being written to an object: the bytes written to its writer go out in parts; the
/// object appears only with [`ObjectOutput::commit`]. Dropped uncommitted, the upload is aborted.
pub struct ObjectOutput {
    commit: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// The writer side: a pipe to the upload task, whose own failure it reports instead of a broken
/// pipe.
struct PipeWriter {
    pipe: tokio::io::DuplexStream,
    failed: Arc<Mutex<Option<String>>>,
}

impl PipeWriter {
    fn explain(&self, e: std::io::Error) -> std::io::Error {
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some(why) => std::io::Error::other(why),
            None => e,
        }
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.pipe).poll_write(cx, buf) {
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(self.explain(e))),
            other => other,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

/// Reads the pipe into parts until it ends.
async fn pump(parts: &mut Parts, pipe: &mut (impl AsyncRead + Unpin)) -> Result<()> {
    loop {
        let mut chunk = BytesMut::with_capacity(1 << 20);
        while chunk.len() < chunk.capacity() {
            if pipe.read_buf(&mut chunk).await? == 0 {
                break;
            }
        }
        if chunk.is_empty() {
            return Ok(());
        }
        parts.write(chunk.freeze()).await?;
    }
}

impl ObjectOutput {
    /// Starts the multipart upload of `loc` (so that a missing bucket or refused credentials fail
    /// before any blob is fetched); returns the writer the archive stream goes to.
    pub async fn create(
        store: &Store,
        loc: &Location,
    ) -> Result<(ObjectOutput, Box<dyn AsyncWrite + Send + Unpin>)> {
        let mut parts = Parts::start(store, &loc.path(), loc, ARCHIVE_PARTS_IN_FLIGHT).await?;
        let (writer, mut reader) = tokio::io::duplex(1 << 20);
        let (commit_tx, commit_rx) = tokio::sync::oneshot::channel::<()>();
        let failed = Arc::new(Mutex::new(None));
        let failed_in_task = failed.clone();
        let task = tokio::spawn(async move {
            let pumped = pump(&mut parts, &mut reader).await;
            drop(reader);
            // The stream ended: it becomes the object only when the run says it is complete.
            match (pumped, commit_rx.await) {
                (Ok(()), Ok(())) => parts.finish().await,
                (Ok(()), Err(_)) => {
                    parts.abort().await;
                    Ok(())
                }
                (Err(e), _) => {
                    if let Ok(mut f) = failed_in_task.lock() {
                        *f = Some(format!("{e:#}"));
                    }
                    parts.abort().await;
                    Err(e)
                }
            }
        });
        let out = ObjectOutput { commit: Some(commit_tx), task: Some(task) };
        Ok((out, Box::new(PipeWriter { pipe: writer, failed })))
    }

    /// The stream is complete (and shut down): completes the upload, making the object visible.
    pub async fn commit(mut self) -> Result<()> {
        if let Some(tx) = self.commit.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => {
                task.await.map_err(|e| anyhow!("internal: the upload task failed: {e}"))?
            }
            None => Ok(()),
        }
    }
}

impl Drop for ObjectOutput {
    fn drop(&mut self) {
        // The commit sender goes with it: the task aborts the upload (and `abort_open` waits).
        self.commit.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn parts_grow_so_that_ten_thousand_reach_a_terabyte() {
        assert_eq!(part_size(0), 16 << 20);
        assert_eq!(part_size(1999), 16 << 20);
        assert_eq!(part_size(2000), 32 << 20);
        let total: u64 = (0..10_000).map(|n| part_size(n) as u64).sum();
        assert!(total > 900 << 30, "{total}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_output_appears_only_when_committed_and_a_dropped_one_never() {
        let store: Store = Arc::new(InMemory::new());
        let loc = |key: &str| Location { bucket: "b".into(), key: key.into(), prefix: false };
        // Three parts' worth and a bit: several parts, in order.
        let data: Vec<u8> = (0..(PART_SIZE * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let (out, mut w) = ObjectOutput::create(&store, &loc("kept.tar")).await.expect("create");
        w.write_all(&data).await.expect("write");
        w.shutdown().await.expect("shutdown");
        assert!(store.head(&loc("kept.tar").path()).await.is_err(), "visible before the commit");
        out.commit().await.expect("commit");
        let got =
            store.get(&loc("kept.tar").path()).await.expect("get").bytes().await.expect("bytes");
        assert!(got[..] == data[..], "the object is what was written");

        let (out, mut w) = ObjectOutput::create(&store, &loc("dropped.tar")).await.expect("create");
        w.write_all(&data[..1000]).await.expect("write");
        drop(w);
        drop(out);
        abort_open().await;
        assert!(
            store.head(&loc("dropped.tar").path()).await.is_err(),
            "a dropped output left an object"
        );
        assert!(OPEN.lock().map(|o| o.is_empty()).unwrap_or(false), "an upload is still open");
    }
}
