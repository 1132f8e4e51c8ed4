//! Reading a backup: a layout directory or tar as a `Source`, with its repositories, tags and
//! referrers.

use super::blob_path;
use super::compress::{self, Compression};
use super::graph::{self, Graph};
use super::index::{self, Entry, MAX_INDEX_SIZE};
use super::tar_index::{self, TarIndex};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use crate::target::{
    failure, Access, ByteStream, ErrorKind, ReferrerListing, Repo, Resolved, Result, Source,
};
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

enum Store {
    /// A directory and its canonical path (reads must stay inside it).
    Dir(PathBuf, PathBuf),
    /// A tar, its index, and one handle that every read shares (positional reads).
    Tar(PathBuf, TarIndex, std::fs::File),
}

impl Store {
    /// Opens a file of the backup for reading from its start: (handle, offset of its bytes, size).
    /// Blocking: called on the blocking pool, once per file.
    fn open(&self, name: &str) -> Result<(std::fs::File, u64, u64)> {
        match self {
            Store::Dir(root, top) => {
                let p = root.join(name);
                // Only regular files inside the layout: a symlink could point anywhere.
                let meta = std::fs::symlink_metadata(&p)
                    .with_context(|| format!("{name} is missing from the backup"))?;
                if !meta.is_file() {
                    bail!("{name} in the backup is not a regular file");
                }
                if !std::fs::canonicalize(&p)?.starts_with(top) {
                    bail!("{name} in the backup resolves outside the backup directory; refusing to read it");
                }
                let f = std::fs::File::open(&p).with_context(|| format!("cannot open {name}"))?;
                Ok((f, 0, meta.len()))
            }
            Store::Tar(path, idx, _) => {
                let (off, size) = *idx
                    .files
                    .get(name)
                    .ok_or_else(|| anyhow!("{name} is missing from the backup"))?;
                // A handle of its own: a stream reads on from its own position.
                let f = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Ok((f, off, size))
            }
        }
    }

    /// Reads a whole (small) file of the backup, refusing one over `limit` bytes. Blocking.
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let opened;
        let (file, off, size) = match self {
            // Positional reads on the shared handle: no open, seek and close per manifest.
            Store::Tar(_, idx, shared) => {
                let (off, size) = *idx
                    .files
                    .get(name)
                    .ok_or_else(|| anyhow!("{name} is missing from the backup"))?;
                (shared, off, size)
            }
            Store::Dir(..) => {
                let (f, off, size) = self.open(name)?;
                opened = f;
                (&opened, off, size)
            }
        };
        if size > limit {
            bail!("{name} is {size} bytes, over the {limit} byte limit");
        }
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => bail!("{name} is truncated"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {name}"))),
            }
        }
        Ok(buf)
    }
}

/// Walks the manifests reachable from `roots` in the store. Blocking: thousands of small reads,
/// done in one go on the blocking pool.
fn graph_of(store: &Store, roots: &[Descriptor]) -> Graph {
    graph::walk(roots, false, |d| {
        store.read(&blob_path(&d.digest), MAX_MANIFEST_SIZE).ok().map(Bytes::from)
    })
}

/// The compression of a file, by its first bytes.
async fn sniff_compression(path: &Path) -> Option<Compression> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4];
    let mut f = tokio::fs::File::open(path).await.ok()?;
    let n = f.read(&mut head).await.ok()?;
    Compression::sniff(&head[..n])
}

/// A backup opened for reading.
pub struct LayoutSource {
    store: Arc<Store>,
    entries: Vec<Entry>,
    referrers: HashMap<Digest, Vec<Descriptor>>,
    /// Its size: of the tar file, or of the content its index reaches for a directory.
    pub size: u64,
    /// Whether the input is a tar archive.
    pub is_tar: bool,
    /// How the archive was compressed, when it was: it is read from a temporary tar unpacked from
    /// it.
    pub compression: Option<Compression>,
    /// That temporary tar, removed with the source.
    _unpacked: Option<tempfile::TempPath>,
}

pub use super::index::unnamed;

impl LayoutSource {
    /// Opens a directory or a tar (recognised by content, whatever its name).
    pub async fn open(path: &Path) -> Result<LayoutSource> {
        let shown = path.display().to_string();
        let meta = tokio::fs::metadata(path).await.with_context(|| {
            format!("cannot open backup {shown:?}: it does not exist or is not readable")
        })?;
        if !meta.is_dir() && !meta.is_file() {
            // A fifo or device would block or never end; streams go through `--input -`.
            bail!("cannot open backup {shown:?}: it is neither a directory nor a regular file (use --input - to read a stream)");
        }
        let (mut compression, mut unpacked) = (None, None);
        let store = if meta.is_dir() {
            if tokio::fs::metadata(path.join("index.json")).await.is_err() {
                bail!("{shown:?} is not an OCI image layout: it has no index.json");
            }
            let top = tokio::fs::canonicalize(path)
                .await
                .with_context(|| format!("cannot open backup {shown:?}"))?;
            Store::Dir(path.to_path_buf(), top)
        } else {
            compression = sniff_compression(path).await;
            if let Some(c) = compression {
                let p = path.to_path_buf();
                unpacked = Some(
                    tokio::task::spawn_blocking(move || compress::unpack(&p, c))
                        .await
                        .context("internal: reader task failed")??,
                );
            }
            let p = unpacked.as_ref().map_or_else(|| path.to_path_buf(), |t| t.to_path_buf());
            let idx = tokio::task::spawn_blocking(move || tar_index::index(&p)).await??;
            if !idx.files.contains_key("index.json") {
                bail!(
                    "{shown:?} is a tar archive but not an OCI image layout: it has no index.json"
                );
            }
            let tar = unpacked.as_ref().map_or_else(|| path.to_path_buf(), |t| t.to_path_buf());
            let file = std::fs::File::open(&tar)
                .with_context(|| format!("cannot open backup {shown:?}"))?;
            Store::Tar(tar, idx, file)
        };
        let store = Arc::new(store);
        let mut src = LayoutSource {
            store,
            entries: Vec::new(),
            referrers: HashMap::new(),
            size: 0,
            is_tar: !meta.is_dir(),
            compression,
            _unpacked: unpacked,
        };
        let raw = src
            .read_file("index.json", MAX_INDEX_SIZE)
            .await
            .with_context(|| format!("in backup {shown:?}"))?;
        src.entries = index::parse(&raw).map_err(|e| anyhow!("backup {shown:?}: {e}"))?;
        let graph = src.graph().await?;
        src.size = if meta.is_dir() { graph.content_size() } else { meta.len() };
        src.referrers = graph.referrers;
        Ok(src)
    }

    /// The backup's content graph, read from the store.
    pub async fn graph(&self) -> Result<Graph> {
        let (store, roots) =
            (self.store.clone(), self.entries.iter().map(|e| e.desc.clone()).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || graph_of(&store, &roots))
            .await
            .context("internal: reader task failed")
    }

    /// The classified `index.json` entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether a blob file is present, and its size.
    pub async fn blob_size(&self, digest: &Digest) -> Option<u64> {
        match &*self.store {
            Store::Dir(root, _) => tokio::fs::symlink_metadata(root.join(blob_path(digest)))
                .await
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            Store::Tar(_, idx, _) => idx.files.get(&blob_path(digest)).map(|(_, s)| *s),
        }
    }

    /// Why a blob cannot be read: absent, or present but not a regular file (never followed).
    pub async fn absence(&self, digest: &Digest) -> &'static str {
        match &*self.store {
            Store::Dir(root, _) => match tokio::fs::symlink_metadata(root.join(blob_path(digest)))
                .await
            {
                Ok(m) if !m.is_file() => {
                    "is missing (what is there is a link, fifo or directory, not a regular file)"
                }
                _ => "is missing",
            },
            Store::Tar(..) => "is missing",
        }
    }

    /// The `oci-layout` file's content, checked.
    pub async fn check_layout_file(&self) -> std::result::Result<(), String> {
        let raw = self.read_file("oci-layout", 4096).await.map_err(|e| format!("{e:#}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| format!("oci-layout is not JSON: {e}"))?;
        match v.get("imageLayoutVersion").and_then(|x| x.as_str()) {
            Some(_) => Ok(()),
            None => Err("oci-layout has no imageLayoutVersion".into()),
        }
    }

    /// Finds a repository of the backup by full name or by path; `None` names the only one.
    pub fn find_repo(&self, name: Option<&str>) -> Result<Repo> {
        let repos = self.repositories();
        let listed = || {
            repos
                .iter()
                .map(|r| if r == &unnamed() { "(unnamed)".to_string() } else { r.to_string() })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            None if repos.len() == 1 => Ok(repos[0].clone()),
            None => bail!("the backup holds several repositories ({}): name one", listed()),
            Some(n) => {
                repos.iter().find(|r| r.to_string() == n || r.repository == n).cloned().ok_or_else(
                    || anyhow!("the backup has no repository {n:?}; it holds: {}", listed()),
                )
            }
        }
    }

    /// Repositories the backup names (sorted), plus the unnamed one when tags carry no repository.
    pub fn repositories(&self) -> Vec<Repo> {
        index::repositories(&self.entries)
    }

    fn locate(&self, digest: &Digest) -> Option<u64> {
        match &*self.store {
            Store::Dir(..) => None,
            Store::Tar(_, idx, _) => idx.files.get(&blob_path(digest)).map(|(_, s)| *s),
        }
    }

    async fn read_file(&self, name: &str, limit: u64) -> Result<Bytes> {
        let (store, owned) = (self.store.clone(), name.to_string());
        // One hop to the blocking pool per file: a restore reads thousands of manifests.
        let bytes = tokio::task::spawn_blocking(move || store.read(&owned, limit))
            .await
            .context("internal: reader task failed")??;
        Ok(Bytes::from(bytes))
    }

    /// A descriptor for a manifest stored as a blob, checked and typed by its content.
    async fn stored_manifest(&self, digest: &Digest) -> Result<Descriptor> {
        let not_found = || anyhow!("{digest} not found in the backup");
        let size = self.blob_size(digest).await.ok_or_else(not_found)?;
        if size > MAX_MANIFEST_SIZE {
            bail!("{digest} in the backup is not a manifest (it is {size} bytes)");
        }
        let bytes = self.read_file(&blob_path(digest), MAX_MANIFEST_SIZE).await?;
        crate::digest::verify_bytes(&bytes, digest, size)?;
        let probe = Descriptor::new("", digest.clone(), size);
        let parsed = manifest::parse(&probe, &bytes)
            .map_err(|_| anyhow!("{digest} in the backup is not a manifest"))?;
        Ok(Descriptor::new(&parsed.media_type, digest.clone(), size))
    }

    /// Tags stored for a repository.
    pub fn tags_of(&self, repo: &Repo) -> Vec<String> {
        index::tags_of(&self.entries, repo)
    }

    /// Roots stored by digest (no tag) for a repository.
    pub fn untagged_of(&self, repo: &Repo) -> Vec<Descriptor> {
        index::untagged_of(&self.entries, repo)
    }

    /// Resolves a tag or digest of a repository; a digest index.json does not list (an index child,
    /// a referrer) is still found among the backup's blobs.
    pub async fn find(&self, repo: &Repo, reference: &str) -> Result<Descriptor> {
        match index::find(&self.entries, repo, reference) {
            Some(d) => Ok(d),
            None => match reference.parse::<Digest>() {
                Ok(digest) => self.stored_manifest(&digest).await,
                Err(_) => Err(failure(
                    ErrorKind::NotFound,
                    format!("{reference} not found in the backup"),
                )),
            },
        }
    }
}

#[async_trait]
impl Source for LayoutSource {
    async fn tags(&self, repo: &Repo) -> Result<Vec<String>> {
        Ok(self.tags_of(repo))
    }

    async fn untagged(&self, repo: &Repo) -> Result<Vec<Descriptor>> {
        Ok(self.untagged_of(repo))
    }

    async fn resolve(
        &self,
        repo: &Repo,
        reference: &str,
        _known: Option<&Descriptor>,
    ) -> Result<Resolved> {
        Ok(Resolved { desc: self.find(repo, reference).await?, bytes: None })
    }

    async fn fetch_manifest(&self, _repo: &Repo, desc: &Descriptor) -> Result<Bytes> {
        if self.blob_size(&desc.digest).await.is_none() {
            return Err(failure(
                ErrorKind::NotFound,
                format!("manifest {} is missing from the backup", desc.digest),
            ));
        }
        self.read_file(&blob_path(&desc.digest), MAX_MANIFEST_SIZE)
            .await
            .with_context(|| format!("manifest {} is missing or unreadable", desc.digest))
    }

    async fn fetch_blob(&self, _repo: &Repo, desc: &Descriptor) -> Result<ByteStream> {
        let name = blob_path(&desc.digest);
        if let Some(size) = self.locate(&desc.digest) {
            if size != desc.size {
                bail!(
                    "blob {} is {size} bytes in the backup, but {} bytes are referenced",
                    desc.digest,
                    desc.size
                );
            }
        }
        let (store, owned) = (self.store.clone(), name.clone());
        let (file, size) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (mut f, off, size) = store.open(&owned)?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off))?;
            Ok((f, size))
        })
        .await
        .context("internal: reader task failed")?
        .with_context(|| format!("blob {} is missing from the backup", desc.digest))?;
        if size != desc.size {
            bail!(
                "blob {} is {size} bytes in the backup, but {} bytes are referenced",
                desc.digest,
                desc.size
            );
        }
        Ok(chunks(file, size))
    }

    async fn predecessors(
        &self,
        _repo: &Repo,
        desc: &Descriptor,
        _known: Option<&ReferrerListing>,
    ) -> Result<ReferrerListing> {
        Ok(ReferrerListing {
            referrers: self.referrers.get(&desc.digest).cloned().unwrap_or_default(),
            index: None,
        })
    }

    fn access(&self) -> Access {
        Access::Local
    }

    fn partial(&self, _repo: &Repo, desc: &Descriptor) -> Option<String> {
        index::partial(&self.entries, &desc.digest)
    }
}

/// Streams `size` bytes from `file`'s position in pooled chunks, one blocking-pool hop per chunk.
///
/// Why not tokio::fs::File: it reads into a buffer of its own and copies out, hopping every 256
/// KiB, and fresh buffers cost a page fault per 4 KiB; `read_to_end` on a `take` reads straight
/// into a recycled chunk's spare capacity without initialising it.
fn chunks(file: std::fs::File, size: u64) -> ByteStream {
    Box::pin(futures::stream::try_unfold((Some(file), size), |(file, left)| async move {
        let Some(file) = file else { return Ok(None) };
        if left == 0 {
            return Ok(None);
        }
        let want = left.min(crate::buffers::SIZE as u64);
        let (file, buf) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut buf = crate::buffers::take();
            std::io::Read::read_to_end(&mut std::io::Read::take(&file, want), &mut buf)?;
            Ok((file, buf))
        })
        .await
        .map_err(std::io::Error::other)??;
        if buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the backup file ends early",
            ));
        }
        let left = left - buf.len() as u64;
        Ok(Some((crate::buffers::into_bytes(buf), (Some(file), left))))
    }))
}
