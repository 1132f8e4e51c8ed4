//! Writing a layout tar in place: the archive is planned from known sizes, then concurrent
//! transfers write straight into their own regions of one file. It is written under a temporary
//! name and renamed when complete.

use super::blob_path;
use super::durable::Writeback;
use super::index::{self, OCI_LAYOUT};
use crate::digest::Digest;
use crate::engine::Platform;
use crate::manifest::Descriptor;
use crate::target::{ByteStream, Plan, PlanContent, Planning, Repo, Result, Sink};
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A layout tar being written.
pub struct TarSink {
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: Mutex<Option<std::sync::Arc<std::fs::File>>>,
    regions: Mutex<HashMap<Digest, (u64, u64)>>,
    written: Mutex<HashSet<Digest>>,
    finished: AtomicBool,
    /// How index.json is written (`--full-reference`, the index's annotations).
    rendering: index::Rendering,
    /// The platform Docker's `manifest.json` takes from an index; `None`: no `manifest.json`.
    docker: Option<Platform>,
}

/// A reproducible ustar header: mode 0644, uid/gid 0, no names, mtime 0.
pub fn header(name: &str, size: u64) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).with_context(|| format!("cannot name tar entry {name}"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// `size` rounded up to whole 512-byte blocks.
pub fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

impl TarSink {
    /// Prepares to write `path`; nothing appears there until the archive is complete.
    pub fn create(path: &Path) -> Result<TarSink> {
        let shown = path.display();
        if path.is_dir() {
            bail!("output {shown:?} is a directory, not a file: remove it or choose another .tar path");
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create the directory of {shown:?}"))?;
        if path.file_name().is_none() {
            bail!("output {shown:?} has no file name");
        }
        let tmp_path = super::temp_name(path);
        Ok(TarSink {
            final_path: path.to_path_buf(),
            tmp_path,
            file: Mutex::new(None),
            regions: Mutex::new(HashMap::new()),
            written: Mutex::new(HashSet::new()),
            finished: AtomicBool::new(false),
            rendering: index::Rendering::default(),
            docker: None,
        })
    }

    /// Adds Docker's `manifest.json`, an index's `platform` child standing for it.
    pub fn docker_manifest(mut self, platform: Option<Platform>) -> Self {
        self.docker = platform;
        self
    }

    /// Writes index.json as `rendering` says (`--full-reference`, the index's annotations).
    pub fn rendering(mut self, rendering: index::Rendering) -> Self {
        self.rendering = rendering;
        self
    }

    fn file(&self) -> Result<std::sync::Arc<std::fs::File>> {
        self.file
            .lock()
            .map_err(|_| anyhow!("internal lock poisoned"))?
            .clone()
            .ok_or_else(|| anyhow!("internal: tar not prepared"))
    }

    fn region(&self, d: &Digest) -> Result<(u64, u64)> {
        self.regions
            .lock()
            .map_err(|_| anyhow!("internal lock poisoned"))?
            .get(d)
            .copied()
            .ok_or_else(|| anyhow!("internal: {d} was not planned"))
    }

    fn mark(&self, d: &Digest) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(d.clone());
        }
    }
}

impl Drop for TarSink {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// The small entries a layout tar starts with: `oci-layout`, `index.json` and, unless `docker` is
/// `None`, Docker's `manifest.json` for the images Docker can load (an index by its `docker`
/// platform's child).
pub fn head_entries(
    plan: &Plan<'_>,
    rendering: &index::Rendering,
    docker: Option<&Platform>,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut head = vec![
        ("oci-layout", OCI_LAYOUT.to_vec()),
        ("index.json", index::render_plan(plan, rendering)),
    ];
    if let Some(json) = docker.and_then(|p| super::docker::manifest_json(plan, p)) {
        head.push(("manifest.json", json));
    }
    head
}

/// The entries of a layout tar after its head (see [`head_entries`]): manifests, then blobs, each in
/// digest order, each digest once. The order is fixed so that archives are reproducible and a
/// stream is byte-identical to a file, and so that a reader of a stream knows the whole graph
/// before the first blob passes.
pub fn entry_order<'a>(contents: &[PlanContent<'a>]) -> Vec<PlanContent<'a>> {
    let sorted: BTreeMap<(bool, &Digest), PlanContent<'a>> =
        contents.iter().map(|c| ((!c.manifest, &c.desc.digest), *c)).collect();
    sorted.into_values().collect()
}

#[async_trait]
impl Planning for TarSink {
    async fn prepare(&self, plan: &Plan<'_>) -> Result<()> {
        let head = head_entries(plan, &self.rendering, self.docker.as_ref());
        // A fresh file, never through a link someone left at the temporary name.
        let _ = std::fs::remove_file(&self.tmp_path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&self.tmp_path)
            .with_context(|| format!("cannot create {}", self.tmp_path.display()))?;
        let mut pos = 0u64;
        for (name, data) in &head {
            file.write_all_at(&header(name, data.len() as u64)?, pos)?;
            file.write_all_at(data, pos + 512)?;
            pos += 512 + padded(data.len() as u64);
        }
        let mut regions = HashMap::new();
        for entry in entry_order(plan.contents) {
            let (digest, size) = (&entry.desc.digest, entry.desc.size);
            file.write_all_at(&header(&blob_path(digest), size)?, pos)?;
            regions.insert(digest.clone(), (pos + 512, size));
            pos += 512 + padded(size);
        }
        // Two zero blocks end the archive. Only headers are written so far (the unfinished file is
        // removed on drop): a backup that cannot fit stops here, before its first blob is fetched.
        let total = pos + 1024;
        if let Some(dir) = self.tmp_path.parent() {
            super::space::ensure_room(&self.final_path, dir, [total])?;
        }
        // set_len leaves every gap zero-filled.
        file.set_len(total).with_context(|| format!("cannot size {}", self.tmp_path.display()))?;
        *self.regions.lock().map_err(|_| anyhow!("internal lock poisoned"))? = regions;
        *self.file.lock().map_err(|_| anyhow!("internal lock poisoned"))? =
            Some(std::sync::Arc::new(file));
        Ok(())
    }
}

#[async_trait]
impl Sink for TarSink {
    fn scope(&self, _repo: &Repo) -> String {
        String::new()
    }

    fn planning(&self) -> Option<&dyn Planning> {
        Some(self)
    }

    async fn has_blob(&self, _repo: &Repo, _desc: &Descriptor) -> Result<bool> {
        Ok(false)
    }

    async fn push_blob(&self, _repo: &Repo, desc: &Descriptor, mut data: ByteStream) -> Result<()> {
        let (off, size) = self.region(&desc.digest)?;
        let file = self.file()?;
        let mut pos = 0u64;
        let mut writeback = Writeback::new(off);
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            if pos + chunk.len() as u64 > size {
                bail!("blob {} is longer than its {size} bytes", desc.digest);
            }
            // Page-cache writes of one chunk are short; a blocking-pool hop per chunk costs more
            // than it saves.
            file.write_all_at(&chunk, off + pos)?;
            pos += chunk.len() as u64;
            writeback.wrote(&*file, chunk.len() as u64);
        }
        writeback.finish(&*file);
        if pos != size {
            bail!("blob {} ended after {pos} of {size} bytes", desc.digest);
        }
        self.mark(&desc.digest);
        Ok(())
    }

    async fn has_manifest(&self, _repo: &Repo, _desc: &Descriptor) -> Result<bool> {
        Ok(false)
    }

    async fn push_manifest(
        &self,
        _repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        _subject: Option<&Descriptor>,
    ) -> Result<()> {
        let (off, size) = self.region(&desc.digest)?;
        if bytes.len() as u64 != size {
            bail!("manifest {} is not {size} bytes", desc.digest);
        }
        self.file()?.write_all_at(&bytes, off)?;
        self.mark(&desc.digest);
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
        let planned = self.regions.lock().map_err(|_| anyhow!("internal lock poisoned"))?.len();
        let written = self.written.lock().map_err(|_| anyhow!("internal lock poisoned"))?.len();
        if planned != written {
            bail!("internal: {written} of {planned} planned entries were written; the archive was not completed");
        }
        let file = self.file()?;
        tokio::task::spawn_blocking(move || file.sync_all()).await??;
        std::fs::rename(&self.tmp_path, &self.final_path).with_context(|| {
            format!("cannot move the archive into place at {}", self.final_path.display())
        })?;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}
