//! Writing into an OCI layout directory: blobs land under temporary names and are renamed once
//! verified; `index.json` is merged with what is there and written last, atomically.

use super::durable::{sync_layout, Sealer, Writeback};
use super::index::{self, Entry, MAX_INDEX_SIZE, OCI_LAYOUT};
use super::{blob_path, temp_name};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::target::{
    ByteStream, EntryRole, Hints, Plan, Planning, ReferrerListing, Repo, Result, Sink,
};
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

/// A layout directory being written.
pub struct DirSink {
    root: PathBuf,
    existing: Vec<Entry>,
    /// The tags of `existing`, for a second backup that confirms them with the source.
    tagged: HashMap<(Repo, String), Descriptor>,
    /// The referrer listings `existing` records, by subject, for a second backup that confirms them
    /// with the source; worked out when first asked (during the walk, not before the first request;
    /// never without referrers).
    listings: std::sync::OnceLock<HashMap<Digest, ReferrerListing>>,
    added: Mutex<Vec<Entry>>,
    /// The digest of `index.json` as found, so that a run that changes nothing writes nothing (its
    /// bytes, megabytes for thousands of tags, are not held for the run).
    index_found: Option<Digest>,
    /// Whether `oci-layout` was found with the expected content.
    marker_found: bool,
    /// Whether this run wrote blobs or manifests, which must reach the disk before `index.json`
    /// names them.
    dirty: AtomicBool,
    /// Whether the layout held no blob when opened: then everything planned is to be written, and
    /// its room can be checked before the transfer (a layout being added to or resumed is not
    /// stat'ed blob by blob).
    empty: bool,
    /// Full references as ref names even for one repository (`--full-reference`).
    rendering: index::Rendering,
    /// Blobs and manifests being synced and put in place.
    sealer: Sealer,
}

/// Removes a temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Creates a fresh temporary file, never following a link that is in the way (a stale leftover of
/// an earlier run with the same pid is replaced). Synchronous, so that an interrupted run cannot
/// have a creation still in flight after its guard has cleaned up.
fn create_temp(tmp: &Path) -> Result<std::fs::File> {
    let _ = std::fs::remove_file(tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))
}

/// Writes `data` to `path` through a temporary file and a rename; `durable` also waits for the
/// disk.
pub async fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let tmp = temp_name(path);
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut f = tokio::fs::File::from_std(create_temp(&tmp)?);
    f.write_all(data).await?;
    if durable {
        f.sync_all().await?;
    }
    drop(f);
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    guard.0 = None;
    Ok(())
}

impl DirSink {
    /// Opens (creating it if needed) a layout directory; an existing layout is added to.
    pub async fn create(root: &Path) -> Result<DirSink> {
        let shown = root.display();
        if let Ok(meta) = tokio::fs::metadata(root).await {
            if !meta.is_dir() {
                bail!("output {shown:?} exists and is not a directory: choose another path, or a name ending in .tar for an archive");
            }
        }
        // Everything is written below root: a link in the layout's own structure could send it
        // elsewhere.
        for sub in ["blobs", "blobs/sha256", "index.json", "oci-layout"] {
            if tokio::fs::symlink_metadata(root.join(sub))
                .await
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                bail!("output {shown:?} is not a usable layout: {sub} is a symbolic link; refusing to write through it");
            }
        }
        tokio::fs::create_dir_all(root.join("blobs/sha256"))
            .await
            .with_context(|| format!("cannot create output directory {shown:?}"))?;
        let empty =
            std::fs::read_dir(root.join("blobs/sha256")).is_ok_and(|mut d| d.next().is_none());
        let index_path = root.join("index.json");
        let mut existing = Vec::new();
        let mut index_found = None;
        if let Ok(meta) = tokio::fs::symlink_metadata(&index_path).await {
            if !meta.is_file() {
                bail!(
                    "output {shown:?} is not a usable layout: its index.json is not a regular file"
                );
            }
            if meta.len() > MAX_INDEX_SIZE {
                bail!("{shown:?} holds an index.json too large to be a layout index");
            }
            // Read whole into a buffer of its size: an async file read it in small steps, growing
            // (and copying) the buffer each time, before a second backup could ask its first
            // question.
            let mut raw = Vec::with_capacity(meta.len() as usize + 1);
            let f = std::fs::File::open(&index_path)
                .with_context(|| format!("cannot read {}", index_path.display()))?;
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_INDEX_SIZE), &mut raw)
                .with_context(|| format!("cannot read {}", index_path.display()))?;
            existing = index::parse(&raw).map_err(|e| anyhow!("cannot add to {shown:?}: {e}"))?;
            index_found = Some(Digest::of(&raw));
        }
        let marker = root.join("oci-layout");
        let marker_found = tokio::fs::symlink_metadata(&marker)
            .await
            .is_ok_and(|m| m.is_file() && m.len() == OCI_LAYOUT.len() as u64)
            && tokio::fs::read(&marker).await.is_ok_and(|b| b == OCI_LAYOUT);
        let tagged = index::by_tag(&existing);
        Ok(DirSink {
            root: root.to_path_buf(),
            existing,
            tagged,
            listings: std::sync::OnceLock::new(),
            added: Mutex::new(Vec::new()),
            index_found,
            marker_found,
            dirty: AtomicBool::new(false),
            empty,
            rendering: index::Rendering::default(),
            sealer: Sealer::default(),
        })
    }

    /// Writes index.json as `rendering` says (`--full-reference`, the index's annotations).
    pub fn rendering(self, rendering: index::Rendering) -> Self {
        DirSink { rendering, ..self }
    }

    async fn write_blob(&self, desc: &Descriptor, mut data: ByteStream) -> Result<()> {
        let path = self.root.join(blob_path(&desc.digest));
        let tmp = temp_name(&path);
        let mut guard = TempGuard(Some(tmp.clone()));
        let mut f = create_temp(&tmp)?;
        self.dirty.store(true, Ordering::SeqCst);
        let mut writeback = Writeback::new(0);
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            // Written in place, as the tar writer does: a page-cache write of one chunk is short,
            // and an async file would hop to the blocking pool (and copy) for every chunk.
            f.write_all(&chunk).with_context(|| format!("cannot write {}", tmp.display()))?;
            writeback.wrote(&f, chunk.len() as u64);
        }
        writeback.finish(&f);
        // The sealer owns the temporary file from here (and removes it if it fails).
        guard.0 = None;
        self.sealer.seal(f, tmp, path).await.context("cannot write the backup")?;
        Ok(())
    }

    fn record(&self, e: Entry) {
        if let Ok(mut a) = self.added.lock() {
            a.push(e);
        }
    }
}

/// Opens a file for reading that must be a file of the layout's own: a symbolic link fails to open,
/// and a FIFO does not block the open (its metadata then says it is no file).
fn open_plain(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    #[cfg(not(unix))]
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(std::io::Error::other("a symbolic link"));
    }
    o.open(path)
}

/// The `index.json` of a layout that held `existing` once `added` is recorded: a new tag replaces the
/// old one of its repository (or a bare one); a new untagged entry replaces the same digest's.
pub(crate) fn merged_index(existing: &[Entry], added: &[Entry], how: &index::Rendering) -> Vec<u8> {
    // A new tag replaces the old one of its repository (or a bare one); a new untagged entry
    // replaces the same digest's. Hashed: a second backup of thousands of tags compares every
    // pair otherwise.
    let mut new_tags: HashMap<&str, Vec<Option<&Repo>>> = HashMap::new();
    let mut new_untagged: HashSet<(&str, Option<&Repo>)> = HashSet::new();
    for e in added {
        match &e.tag {
            Some(t) => new_tags.entry(t.as_str()).or_default().push(e.repo.as_ref()),
            None => {
                new_untagged.insert((e.desc.digest.as_str(), e.repo.as_ref()));
            }
        }
    }
    let kept = existing.iter().filter(|old| match &old.tag {
        Some(t) => !new_tags
            .get(t.as_str())
            .is_some_and(|repos| old.repo.is_none() || repos.contains(&old.repo.as_ref())),
        None => !new_untagged.contains(&(old.desc.digest.as_str(), old.repo.as_ref())),
    });
    index::render(kept.chain(added), how)
}

/// A descriptor as `index.json` records it: no annotations but the sparse-index one.
pub(crate) fn bare(desc: &Descriptor) -> Descriptor {
    let mut d = Descriptor::new(&desc.media_type, desc.digest.clone(), desc.size);
    d.artifact_type = desc.artifact_type.clone();
    d.annotations = desc
        .sparse_platforms()
        .map(|p| [(crate::manifest::ANNOTATION_SPARSE.to_string(), p.to_string())].into());
    d
}

#[async_trait]
impl Planning for DirSink {
    async fn prepare(&self, plan: &Plan<'_>) -> Result<()> {
        if self.empty {
            super::space::ensure_room(
                &self.root,
                &self.root,
                plan.contents.iter().map(|c| c.desc.size),
            )?;
        }
        for e in plan.entries.iter().filter(|e| e.role == EntryRole::Referrer) {
            // A referrer's annotations are the engine's record of its subject and listing.
            let desc = &e.desc;
            self.record(Entry {
                repo: None,
                tag: None,
                desc: Descriptor { annotations: desc.annotations.clone(), ..bare(desc) },
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Hints for DirSink {
    fn known_tag(&self, repo: &Repo, tag: &str) -> Option<Descriptor> {
        self.tagged.get(&(repo.clone(), tag.to_string())).cloned()
    }

    fn known_referrers(&self, subject: &Digest) -> Option<ReferrerListing> {
        self.listings.get_or_init(|| index::referrer_listings(&self.existing)).get(subject).cloned()
    }

    async fn stored_manifest(&self, desc: &Descriptor) -> Option<Bytes> {
        if desc.size > crate::manifest::MAX_MANIFEST_SIZE {
            return None;
        }
        // Read in place, like has_blob's stat: a manifest is at most MAX_MANIFEST_SIZE, and a hop
        // to the blocking pool per manifest costs more CPU than the read itself. Opened without
        // following a link or waiting on a FIFO, then checked on the open file: four system calls
        // in all.
        use std::io::Read;
        let f = open_plain(&self.root.join(blob_path(&desc.digest))).ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.len() != desc.size {
            return None;
        }
        let mut buf = vec![0; desc.size as usize];
        (&f).read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }
}

#[async_trait]
impl Sink for DirSink {
    fn scope(&self, _repo: &Repo) -> String {
        String::new()
    }

    fn planning(&self) -> Option<&dyn Planning> {
        Some(self)
    }

    fn hints(&self) -> &dyn Hints {
        self
    }

    async fn has_blob(&self, _repo: &Repo, desc: &Descriptor) -> Result<bool> {
        // A single stat answers at once on a local disk; a hop to the blocking pool per blob costs
        // more than the stat itself.
        let p = self.root.join(blob_path(&desc.digest));
        Ok(std::fs::symlink_metadata(&p)
            .map(|m| m.is_file() && m.len() == desc.size)
            .unwrap_or(false))
    }

    async fn push_blob(&self, _repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<()> {
        self.write_blob(desc, data).await
    }

    async fn has_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<bool> {
        self.has_blob(repo, desc).await
    }

    async fn push_manifest(
        &self,
        _repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        _subject: Option<&Descriptor>,
    ) -> Result<()> {
        // Written and sealed like every blob.
        self.write_blob(desc, Box::pin(futures::stream::once(async move { Ok(bytes) }))).await
    }

    async fn tag(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        _bytes: Bytes,
        tag: Option<&str>,
    ) -> Result<()> {
        let repo = Some(repo.clone()).filter(|r| !r.registry.is_empty());
        self.record(Entry { repo, tag: tag.map(str::to_string), desc: bare(desc) });
        Ok(())
    }

    async fn abandon(&self) {
        let _ = self.sealer.wait().await;
    }

    async fn finish(&self) -> Result<()> {
        let added =
            std::mem::take(&mut *self.added.lock().map_err(|_| anyhow!("internal lock poisoned"))?);
        let rendered = merged_index(&self.existing, &added, &self.rendering);
        // What index.json is about to name must be on disk first, or a crash could leave a backup
        // that looks complete with blobs that never reached the disk.
        self.sealer.wait().await.with_context(|| {
            format!("cannot sync the backup in {} to disk", self.root.display())
        })?;
        if self.dirty.load(Ordering::SeqCst) {
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || sync_layout(&root))
                .await
                .context("internal: sync task failed")?
                .with_context(|| {
                    format!("cannot sync the backup in {} to disk", self.root.display())
                })?;
        }
        // A second backup of unchanged content leaves the files as they are: no durable writes (an
        // fsync each) for nothing, and the layout's files keep their times.
        if !self.marker_found {
            write_atomic(&self.root.join("oci-layout"), OCI_LAYOUT, true).await?;
        }
        if Some(Digest::of(&rendered)) != self.index_found {
            write_atomic(&self.root.join("index.json"), &rendered, true).await?;
            // The rename itself, durable.
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || sync_layout(&root))
                .await
                .context("internal: sync task failed")??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_manifests_are_only_plain_files_of_the_declared_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let sink = rt.block_on(DirSink::create(dir.path())).expect("layout");
        let body = br#"{"schemaVersion":2}"#;
        let desc = |b: &[u8]| {
            Descriptor::new(
                "application/vnd.oci.image.manifest.v1+json",
                Digest::of(b),
                b.len() as u64,
            )
        };
        let put = |b: &[u8]| {
            std::fs::write(dir.path().join(blob_path(&Digest::of(b))), b).expect("write")
        };

        put(body);
        assert_eq!(rt.block_on(sink.stored_manifest(&desc(body))).as_deref(), Some(&body[..]));
        let mut short = desc(body);
        short.size -= 1;
        assert!(
            rt.block_on(sink.stored_manifest(&short)).is_none(),
            "a size other than the declared one"
        );

        #[cfg(unix)]
        {
            let linked = br#"{"schemaVersion":2,"x":1}"#;
            let elsewhere = dir.path().join("elsewhere");
            std::fs::write(&elsewhere, linked).expect("write");
            std::os::unix::fs::symlink(&elsewhere, dir.path().join(blob_path(&Digest::of(linked))))
                .expect("symlink");
            assert!(
                rt.block_on(sink.stored_manifest(&desc(linked))).is_none(),
                "a link is not followed"
            );

            // A FIFO in a blob's place would block a plain open until someone writes to it.
            let fifo = br#"{"schemaVersion":2,"x":2}"#;
            let made = std::process::Command::new("mkfifo")
                .arg(dir.path().join(blob_path(&Digest::of(fifo))))
                .status();
            assert!(made.is_ok_and(|s| s.success()), "mkfifo");
            assert!(
                rt.block_on(sink.stored_manifest(&desc(fifo))).is_none(),
                "a FIFO is no manifest"
            );
        }
    }
}
