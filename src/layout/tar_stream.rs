//! Writing a layout tar to a non-seekable stream (stdout): the same bytes as a tar file, in the
//! same order, so blobs are written strictly in turn; transfers started early wait (their sockets
//! buffer, bounded).

use super::blob_path;
use super::tar_write::{entry_order, head_entries, header, padded};
use crate::digest::Digest;
use crate::engine::Platform;
use crate::manifest::Descriptor;
use crate::target::{ByteStream, Plan, Planning, Repo, Result, Sink, Traits};
use anyhow::{anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// A layout tar written in order to a stream.
pub struct StreamTarSink {
    out: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    order: Mutex<HashMap<Digest, usize>>,
    turn: watch::Sender<usize>,
    /// Why the stream was torn: a failure once an entry was begun ends the archive, and whoever
    /// asks again (a retry) is told that first failure, not a vaguer one of its own.
    torn: Mutex<Option<String>>,
    /// Full references as ref names even for one repository (`--full-reference`).
    rendering: super::index::Rendering,
    /// The platform Docker's `manifest.json` takes from an index; `None`: no `manifest.json`.
    docker: Option<Platform>,
}

impl StreamTarSink {
    /// Writes to `out` (stdout in practice).
    pub fn new(out: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        StreamTarSink {
            out: tokio::sync::Mutex::new(out),
            order: Mutex::new(HashMap::new()),
            turn: watch::channel(0).0,
            torn: Mutex::new(None),
            rendering: super::index::Rendering::default(),
            docker: None,
        }
    }

    /// Adds Docker's `manifest.json`, an index's `platform` child standing for it.
    pub fn docker_manifest(self, platform: Option<Platform>) -> Self {
        StreamTarSink { docker: platform, ..self }
    }

    /// Writes index.json as `rendering` says (`--full-reference`, the index's annotations).
    pub fn rendering(self, rendering: super::index::Rendering) -> Self {
        StreamTarSink { rendering, ..self }
    }

    async fn write_entry_head(
        &self,
        out: &mut (dyn AsyncWrite + Send + Unpin),
        name: &str,
        size: u64,
    ) -> Result<()> {
        out.write_all(&header(name, size)?).await?;
        Ok(())
    }

    /// Writes one blob's entry: header, bytes, padding.
    async fn write_blob(
        &self,
        out: &mut (dyn AsyncWrite + Send + Unpin),
        desc: &Descriptor,
        data: &mut ByteStream,
    ) -> Result<()> {
        self.write_entry_head(out, &blob_path(&desc.digest), desc.size).await?;
        let mut n = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            if n > desc.size {
                bail!("blob {} is longer than its {} bytes", desc.digest, desc.size);
            }
            out.write_all(&chunk).await?;
        }
        if n != desc.size {
            bail!("blob {} ended after {n} of {} bytes", desc.digest, desc.size);
        }
        out.write_all(&ZEROS[..(padded(desc.size) - desc.size) as usize]).await?;
        Ok(())
    }
}

const ZEROS: [u8; 1024] = [0; 1024];

#[async_trait]
impl Planning for StreamTarSink {
    async fn prepare(&self, plan: &Plan<'_>) -> Result<()> {
        let head = head_entries(plan, &self.rendering, self.docker.as_ref());
        let mut out = self.out.lock().await;
        for (name, data) in &head {
            let data = data.as_slice();
            self.write_entry_head(&mut **out, name, data.len() as u64).await?;
            out.write_all(data).await?;
            out.write_all(&ZEROS[..(padded(data.len() as u64) - data.len() as u64) as usize])
                .await?;
        }
        let entries = entry_order(plan.contents);
        // Manifests come first and are in memory already: they go out now.
        for desc in entries.iter().filter(|e| e.manifest).map(|e| e.desc) {
            let digest = &desc.digest;
            let bytes = plan
                .manifests
                .get(digest)
                .ok_or_else(|| anyhow!("internal: manifest {digest} has no bytes"))?;
            self.write_entry_head(&mut **out, &blob_path(digest), desc.size).await?;
            out.write_all(bytes).await?;
            out.write_all(&ZEROS[..(padded(desc.size) - desc.size) as usize]).await?;
        }
        let mut order = self.order.lock().map_err(|_| anyhow!("internal lock poisoned"))?;
        for (i, e) in entries.iter().filter(|e| !e.manifest).enumerate() {
            order.insert(e.desc.digest.clone(), i);
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for StreamTarSink {
    fn scope(&self, _repo: &Repo) -> String {
        String::new()
    }

    fn traits(&self) -> Traits {
        Traits { in_order: true, ..Traits::default() }
    }

    fn planning(&self) -> Option<&dyn Planning> {
        Some(self)
    }

    async fn has_blob(&self, _repo: &Repo, _desc: &Descriptor) -> Result<bool> {
        Ok(false)
    }

    async fn push_blob(&self, _repo: &Repo, desc: &Descriptor, mut data: ByteStream) -> Result<()> {
        let idx = *self
            .order
            .lock()
            .map_err(|_| anyhow!("internal lock poisoned"))?
            .get(&desc.digest)
            .ok_or_else(|| anyhow!("internal: {} not planned", desc.digest))?;
        let mut rx = self.turn.subscribe();
        rx.wait_for(|t| *t == idx).await.map_err(|_| anyhow!("internal: output closed"))?;
        if let Some(first) =
            self.torn.lock().map_err(|_| anyhow!("internal lock poisoned"))?.clone()
        {
            bail!("{first} (the archive on the output stream cannot be completed after that)");
        }
        let mut out = self.out.lock().await;
        // From here on a failure leaves a torn archive: it is recorded so that no retry writes
        // after it.
        if let Err(e) = self.write_blob(&mut **out, desc, &mut data).await {
            if let Ok(mut torn) = self.torn.lock() {
                *torn = Some(format!("{e:#}"));
            }
            return Err(e);
        }
        drop(out);
        self.turn.send_replace(idx + 1);
        Ok(())
    }

    async fn has_manifest(&self, _repo: &Repo, _desc: &Descriptor) -> Result<bool> {
        // Not before this run: the run writes it (in prepare, ahead of the blobs), and counts it
        // so.
        Ok(false)
    }

    async fn push_manifest(
        &self,
        _repo: &Repo,
        _desc: &Descriptor,
        _bytes: Bytes,
        _subject: Option<&Descriptor>,
    ) -> Result<()> {
        // Written in prepare.
        Ok(())
    }

    async fn tag(
        &self,
        _repo: &Repo,
        _desc: &Descriptor,
        _bytes: Bytes,
        _tag: Option<&str>,
    ) -> Result<()> {
        Ok(())
    }

    async fn finish(&self) -> Result<()> {
        let planned = self.order.lock().map_err(|_| anyhow!("internal lock poisoned"))?.len();
        if *self.turn.borrow() != planned {
            bail!("internal: not every blob was written; the archive is incomplete");
        }
        let mut out = self.out.lock().await;
        out.write_all(&ZEROS).await?;
        // A compressed stream writes its end here; standard output is only flushed.
        out.shutdown().await?;
        Ok(())
    }
}
