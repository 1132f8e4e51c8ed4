//! Reading a backup: a layout directory or tar as a `Source`, with its repositories, tags and
//! referrers.

use super::blob_path;
use super::compress::{self, Compression};
use super::docker_save;
use super::graph::{self, Graph};
use super::index::{self, Entry, MAX_INDEX_SIZE};
use super::tar_index::{self, TarIndex};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use crate::object::Location;
use crate::target::{
    failure, Access, ByteStream, ErrorKind, ReferrerListing, Repo, Resolved, Result, Source,
};
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files of a backup.
enum Files {
    /// A directory and its canonical path (reads must stay inside it).
    Dir(PathBuf, PathBuf),
    /// A tar, its index, and one handle that every read shares (positional reads).
    Tar(PathBuf, TarIndex, std::fs::File),
    /// A tar in one object, or a layout under a prefix (each file an object), read by ranged GETs.
    Object(ObjectFiles),
}

/// A backup in object storage: where each file's bytes are, by name.
struct ObjectFiles {
    store: crate::object::Store,
    loc: Location,
    /// For a tar, its entries; for a prefix, every object under it (offset 0, its size).
    idx: TarIndex,
    tar: bool,
    /// The runtime that blocking reads (on the blocking pool) wait on.
    handle: tokio::runtime::Handle,
}

impl ObjectFiles {
    /// The object holding `name`, and where in it `name`'s bytes are.
    fn locate(&self, name: &str) -> Result<(object_store::path::Path, u64, u64)> {
        let (off, size) = *self
            .idx
            .files
            .get(name)
            .ok_or_else(|| anyhow!("{name} is missing from the backup"))?;
        let path = if self.tar { self.loc.path() } else { self.loc.child(name) };
        Ok((path, off, size))
    }

    /// `name`'s bytes as a stream (one ranged GET).
    async fn stream(&self, name: &str) -> Result<ByteStream> {
        let (path, off, size) = self.locate(name)?;
        crate::object::read::stream_range(&self.store, &path, &self.loc, off, size).await
    }
}

impl Files {
    /// Opens a file of the backup for reading from its start: (handle, offset of its bytes, size).
    /// Blocking: called on the blocking pool, once per file.
    fn open(&self, name: &str) -> Result<(std::fs::File, u64, u64)> {
        match self {
            Files::Dir(root, top) => {
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
            Files::Tar(path, idx, _) => {
                let (off, size) = *idx
                    .files
                    .get(name)
                    .ok_or_else(|| anyhow!("{name} is missing from the backup"))?;
                // A handle of its own: a stream reads on from its own position.
                let f = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Ok((f, off, size))
            }
            Files::Object(_) => bail!("internal: {name} is in object storage, not a file"),
        }
    }

    /// Reads a whole (small) file of the backup, refusing one over `limit` bytes. Blocking.
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let opened;
        if let Files::Object(o) = self {
            let (path, off, size) = o.locate(name)?;
            if size > limit {
                bail!("{name} is {size} bytes, over the {limit} byte limit");
            }
            let got =
                crate::object::read::read_range(&o.handle, &o.store, &path, &o.loc, off, size)?;
            return Ok(got.to_vec());
        }
        let (file, off, size) = match self {
            // Positional reads on the shared handle: no open, seek and close per manifest.
            Files::Tar(_, idx, shared) => {
                let (off, size) = *idx
                    .files
                    .get(name)
                    .ok_or_else(|| anyhow!("{name} is missing from the backup"))?;
                (shared, off, size)
            }
            Files::Dir(..) | Files::Object(_) => {
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

    /// Whether the backup has an entry of this name, of any kind.
    fn has(&self, name: &str) -> bool {
        match self {
            Files::Dir(root, _) => std::fs::symlink_metadata(root.join(name)).is_ok(),
            Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. }) => {
                idx.files.contains_key(name) || idx.links.contains_key(name)
            }
        }
    }
}

impl docker_save::Files for Files {
    fn resolve(&self, name: &str) -> Result<String> {
        match self {
            Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. }) => {
                idx.resolve(name).map_err(anyhow::Error::msg)
            }
            Files::Dir(root, _) => {
                let meta = std::fs::symlink_metadata(root.join(name))
                    .with_context(|| format!("{name} is missing from the backup"))?;
                if !meta.file_type().is_symlink() {
                    return Ok(name.to_string());
                }
                // Resolved by its text, as in a tar: once, to a regular file inside the directory.
                let target = std::fs::read_link(root.join(name))
                    .with_context(|| format!("cannot read the link {name}"))?;
                let target = super::tar_index::link_target(name, &target, false)
                    .map_err(|why| anyhow!("{name} is a link {why}; refusing to follow it"))?;
                match std::fs::symlink_metadata(root.join(&target)) {
                    Ok(m) if m.is_file() => Ok(target),
                    Ok(m) if m.file_type().is_symlink() => bail!(
                        "{name} is a link to {target}, itself a link; links are followed once, to a regular file"
                    ),
                    _ => bail!("{name} is a link to {target}, which the backup does not hold as a regular file"),
                }
            }
        }
    }

    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        Files::read(self, name, limit)
    }

    fn reader(&self, name: &str) -> Result<Box<dyn std::io::Read + '_>> {
        if let Files::Object(o) = self {
            let stream = o.handle.block_on(o.stream(name))?;
            return Ok(Box::new(crate::object::read::SyncStream::new(stream, o.handle.clone())));
        }
        let (mut f, off, size) = self.open(name)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off))?;
        Ok(Box::new(std::io::Read::take(std::io::BufReader::with_capacity(1 << 20, f), size)))
    }
}

/// Where a blob of the backup is.
enum Blob<'a> {
    /// A file of the backup, by name.
    File(std::borrow::Cow<'a, str>),
    /// Bytes made when the backup was opened (a manifest built for a docker save archive).
    Built(&'a Bytes),
    /// A file made when the backup was opened, outside it (a docker save layer gzip'd for
    /// `restore --compress gzip`).
    Spooled(&'a Path),
}

/// Where a docker save archive's blobs are: none is at `blobs/<alg>/<hex>`.
struct DockerBlobs {
    /// The archive's file of each config and layer.
    files: HashMap<Digest, String>,
    /// The manifests built.
    built: HashMap<Digest, Bytes>,
    /// The layers gzip'd into the spool directory.
    spooled: HashMap<Digest, PathBuf>,
}

/// A backup's files and where its blobs are among them.
struct Store {
    files: Files,
    /// For a docker save archive, where its blobs are; `None` for a layout.
    docker: Option<DockerBlobs>,
}

impl Store {
    /// Where a blob is; `None` when the backup does not have it.
    fn blob(&self, d: &Digest) -> Option<Blob<'_>> {
        let Some(docker) = &self.docker else {
            return Some(Blob::File(blob_path(d).into()));
        };
        if let Some(name) = docker.files.get(d) {
            return Some(Blob::File(name.as_str().into()));
        }
        if let Some(path) = docker.spooled.get(d) {
            return Some(Blob::Spooled(path));
        }
        docker.built.get(d).map(Blob::Built)
    }

    /// Whether the backup holds the blob (as a regular file, for a directory). Blocking, but cheap:
    /// a lookup in a tar's index or one `lstat`.
    fn holds(&self, d: &Digest) -> bool {
        match (self.blob(d), &self.files) {
            (None, _) => false,
            (Some(Blob::Built(_) | Blob::Spooled(_)), _) => true,
            (
                Some(Blob::File(name)),
                Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. }),
            ) => idx.files.contains_key(&*name),
            (Some(Blob::File(name)), Files::Dir(root, _)) => {
                std::fs::symlink_metadata(root.join(&*name)).is_ok_and(|m| m.is_file())
            }
        }
    }

    /// Every blob of a layout, by the names of its files (`blobs/<alg>/<hex>`); what another
    /// backup may leave out when it builds on this one. Blocking.
    fn blob_digests(&self) -> Vec<Digest> {
        let parse = |name: &str| -> Option<Digest> {
            let rest = name.strip_prefix("blobs/")?;
            let (alg, hex) = rest.split_once('/')?;
            format!("{alg}:{hex}").parse().ok()
        };
        match (&self.docker, &self.files) {
            (Some(d), _) => d.files.keys().chain(d.spooled.keys()).cloned().collect(),
            (None, Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. })) => {
                idx.files.keys().filter_map(|n| parse(n)).collect()
            }
            (None, Files::Dir(root, _)) => {
                let mut out = Vec::new();
                for alg in std::fs::read_dir(root.join("blobs")).into_iter().flatten().flatten() {
                    let alg_name = alg.file_name().to_string_lossy().into_owned();
                    for f in std::fs::read_dir(alg.path()).into_iter().flatten().flatten() {
                        if f.file_type().is_ok_and(|t| t.is_file()) {
                            let name =
                                format!("blobs/{alg_name}/{}", f.file_name().to_string_lossy());
                            out.extend(parse(&name));
                        }
                    }
                }
                out
            }
        }
    }

    /// A blob's bytes, refused over `limit`. Blocking.
    fn read_blob(&self, d: &Digest, limit: u64) -> Result<Bytes> {
        match self.blob(d) {
            Some(Blob::File(name)) => Ok(Bytes::from(self.files.read(&name, limit)?)),
            Some(Blob::Built(b)) => Ok(b.clone()),
            Some(Blob::Spooled(path)) => {
                let size = std::fs::metadata(path)?.len();
                if size > limit {
                    bail!("{d} is {size} bytes, over the {limit} byte limit");
                }
                Ok(Bytes::from(std::fs::read(path)?))
            }
            None => bail!("{d} is missing from the backup"),
        }
    }
}

/// Walks the manifests reachable from `roots` in the stores, each manifest read from the first
/// that holds it. Blocking: thousands of small reads, done in one go on the blocking pool.
fn graph_of(stores: &[Arc<Store>], roots: &[Descriptor]) -> Graph {
    graph::walk(roots, false, |d| {
        stores.iter().find_map(|s| s.read_blob(&d.digest, MAX_MANIFEST_SIZE).ok())
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
    /// The images of a docker save archive, with the manifests built for them.
    docker_images: Vec<docker_save::Image>,
    /// That temporary tar, removed with the source.
    _unpacked: Option<tempfile::TempPath>,
    /// Where a docker save archive's layers were gzip'd, removed with the source.
    _spool: Option<tempfile::TempDir>,
    /// The digest of its `index.json` (none for a docker save archive): what identifies it as the
    /// base of an incremental backup.
    index_digest: Option<Digest>,
    /// Its `index.json`'s own annotations.
    annotations: std::collections::BTreeMap<String, String>,
    /// Backups read together with this one (`restore --input A --input B`, an incremental
    /// backup's bases): a blob this one lacks is read from the first of them that holds it.
    more: Vec<LayoutSource>,
}

/// How a backup is opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Gzip a docker save archive's uncompressed layers (into `$TMPDIR`) and build its manifests
    /// on the gzip'd copies; an OCI layout's blobs are never changed.
    pub gzip_docker_layers: bool,
}

/// Why a directory or tar that is neither a layout nor a docker save archive cannot be read, with
/// what it looks like.
fn not_a_backup(shown: &str, files: &Files) -> String {
    let mut names: Vec<String> = match files {
        Files::Dir(root, _) => std::fs::read_dir(root)
            .map(|d| {
                d.take(10_000)
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
        Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. }) => idx
            .files
            .keys()
            .chain(idx.links.keys())
            .map(|n| n.split('/').next().unwrap_or_default().to_string())
            .collect(),
    };
    names.sort();
    names.dedup();
    let holds = if names.is_empty() {
        "it is empty".to_string()
    } else if names.iter().any(|n| n == "blobs" || n == "oci-layout") {
        "it has oci-layout or blobs/ but no index.json, which a layout gets last: an incomplete copy?".to_string()
    } else {
        let shown: Vec<String> = names
            .iter()
            .take(3)
            .map(|n| format!("{:?}", crate::scrub::escape_controls(n)))
            .collect();
        let more =
            if names.len() > 3 { format!(" and {} more", names.len() - 3) } else { String::new() };
        format!("it holds {}{more}", shown.join(", "))
    };
    let (what, save) = match files {
        Files::Dir(..) => ("a directory", "an extracted docker save archive"),
        Files::Tar(..) | Files::Object(ObjectFiles { tar: true, .. }) => {
            ("a tar archive", "a docker save archive")
        }
        Files::Object(_) => ("an object storage prefix", "an extracted docker save archive"),
    };
    format!(
        "{shown:?} is {what} with no index.json or manifest.json: not an OCI image layout or {save} ({holds}); give a backup made by oras backup, an OCI image layout (oci-layout, index.json, blobs/) or a docker save archive"
    )
}

pub use super::index::unnamed;

impl LayoutSource {
    /// Opens a directory or a tar (recognised by content, whatever its name): an OCI image layout,
    /// or a `docker save` archive without one (see `docker_save`).
    pub async fn open(path: &Path) -> Result<LayoutSource> {
        Self::open_with(path, OpenOptions::default()).await
    }

    /// Opens a backup as [`LayoutSource::open`] does, as `options` say.
    pub async fn open_with(path: &Path, options: OpenOptions) -> Result<LayoutSource> {
        if let Some(loc) = path
            .to_str()
            .map(crate::object::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .flatten()
        {
            return Self::open_object(loc, options).await;
        }
        let shown = path.display().to_string();
        let meta = tokio::fs::metadata(path).await.with_context(|| {
            format!("cannot open backup {shown:?}: it does not exist or is not readable")
        })?;
        if !meta.is_dir() && !meta.is_file() {
            // A fifo or device would block or never end; streams go through `--input -`.
            bail!("cannot open backup {shown:?}: it is neither a directory nor a regular file (use --input - to read a stream)");
        }
        let (mut compression, mut unpacked) = (None, None);
        let files = if meta.is_dir() {
            let top = tokio::fs::canonicalize(path)
                .await
                .with_context(|| format!("cannot open backup {shown:?}"))?;
            Files::Dir(path.to_path_buf(), top)
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
            let tar = unpacked.as_ref().map_or_else(|| path.to_path_buf(), |t| t.to_path_buf());
            let file = std::fs::File::open(&tar)
                .with_context(|| format!("cannot open backup {shown:?}"))?;
            Files::Tar(tar, idx, file)
        };
        let tar_len = (!meta.is_dir()).then_some(meta.len());
        Self::from_files(files, &shown, tar_len, compression, unpacked, options).await
    }

    /// Opens a backup in object storage: a tar object (compressed ones are unpacked into a
    /// temporary tar as they are read), or a layout under a prefix.
    async fn open_object(loc: Location, options: OpenOptions) -> Result<LayoutSource> {
        use crate::object::read;
        let shown = loc.to_string();
        let store = crate::object::connect(&loc)?;
        read::check_bucket(&store, &loc).await?;
        let handle = tokio::runtime::Handle::current();
        let len = if loc.prefix { None } else { read::size(&store, &loc.path(), &loc).await? };
        let Some(len) = len else {
            let mut idx = TarIndex::default();
            for (name, size) in read::list(&store, &loc).await? {
                // Only names that mean the same to every reader: no empty, `.` or `..` segment.
                if let Ok(Some(norm)) = tar_index::normalise(Path::new(&name), &shown) {
                    if norm == name {
                        idx.files.insert(name, (0, size));
                    }
                }
            }
            if idx.files.is_empty() {
                bail!("cannot open backup {shown:?}: there is no object at this key and nothing under it as a prefix");
            }
            let files = Files::Object(ObjectFiles { store, loc, idx, tar: false, handle });
            return Self::from_files(files, &shown, None, None, None, options).await;
        };
        let head = read::read_range_async(&store, &loc.path(), &loc, 0, len.min(4)).await?;
        let compression = Compression::sniff(&head);
        if let Some(c) = compression {
            let stream = read::stream_range(&store, &loc.path(), &loc, 0, len).await?;
            let (h, shown2) = (handle.clone(), shown.clone());
            let unpacked = tokio::task::spawn_blocking(move || {
                compress::unpack_from(read::SyncStream::new(stream, h), &shown2, c)
            })
            .await
            .context("internal: reader task failed")??;
            let p = unpacked.to_path_buf();
            let idx = tokio::task::spawn_blocking(move || tar_index::index(&p)).await??;
            let file = std::fs::File::open(&unpacked)
                .with_context(|| format!("cannot open backup {shown:?}"))?;
            let files = Files::Tar(unpacked.to_path_buf(), idx, file);
            return Self::from_files(
                files,
                &shown,
                Some(len),
                compression,
                Some(unpacked),
                options,
            )
            .await;
        }
        let (s2, l2, h2, shown2) = (store.clone(), loc.clone(), handle.clone(), shown.clone());
        let idx = tokio::task::spawn_blocking(move || {
            let ranged = |h: &tokio::runtime::Handle| {
                read::Ranged::new(s2.clone(), l2.path(), l2.clone(), len, h.clone())
            };
            let compare = ranged(&h2);
            let same = move |a: u64, b: u64, n: u64| -> std::io::Result<bool> {
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(read::WINDOW);
                    let x = compare.read_at(a + done, k).map_err(std::io::Error::other)?;
                    let y = compare.read_at(b + done, k).map_err(std::io::Error::other)?;
                    if x != y {
                        return Ok(false);
                    }
                    done += k;
                }
                Ok(true)
            };
            tar_index::index_from(&shown2, ranged(&h2), len, &same)
        })
        .await
        .context("internal: reader task failed")??;
        let files = Files::Object(ObjectFiles { store, loc, idx, tar: true, handle });
        Self::from_files(files, &shown, Some(len), None, None, options).await
    }

    /// Reads the index (or the docker save manifest) and the graph of a backup's files; `tar_len`
    /// is the archive's size for a tar.
    async fn from_files(
        files: Files,
        shown: &str,
        tar_len: Option<u64>,
        compression: Option<Compression>,
        unpacked: Option<tempfile::TempPath>,
        options: OpenOptions,
    ) -> Result<LayoutSource> {
        let shown = shown.to_string();
        // index.json may be there as something other than a file: reading it says so.
        let layout = match &files {
            Files::Dir(root, _) => tokio::fs::metadata(root.join("index.json")).await.is_ok(),
            Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. }) => {
                idx.files.contains_key("index.json")
            }
        };
        let docker = !layout && files.has("manifest.json");
        if !layout && !docker {
            bail!("{}", not_a_backup(&shown, &files));
        }
        let mut src = LayoutSource {
            store: Arc::new(Store { files, docker: None }),
            entries: Vec::new(),
            referrers: HashMap::new(),
            size: 0,
            is_tar: tar_len.is_some(),
            compression,
            docker_images: Vec::new(),
            _unpacked: unpacked,
            _spool: None,
            index_digest: None,
            annotations: Default::default(),
            more: Vec::new(),
        };
        if docker {
            src.open_docker_save(&shown, options.gzip_docker_layers).await?;
        } else {
            let raw = src
                .read_file("index.json", MAX_INDEX_SIZE)
                .await
                .with_context(|| format!("in backup {shown:?}"))?;
            src.entries = index::parse(&raw).map_err(|e| anyhow!("backup {shown:?}: {e}"))?;
            src.annotations =
                index::index_annotations(&raw).map_err(|e| anyhow!("backup {shown:?}: {e}"))?;
            src.index_digest = Some(Digest::of(&raw));
        }
        let graph = src.graph().await?;
        src.size = tar_len.unwrap_or_else(|| graph.content_size());
        src.referrers = graph.referrers;
        index::order_referrers(&src.entries, &mut src.referrers);
        Ok(src)
    }

    /// Reads a docker save archive's images and builds their manifests (see `docker_save`).
    async fn open_docker_save(&mut self, shown: &str, gzip: bool) -> Result<()> {
        let store = self.store.clone();
        let spool = if gzip {
            Some(tempfile::Builder::new().prefix("oras-gzip-").tempdir().context(
                "cannot create a temporary directory to gzip layers into (set TMPDIR to a writable place)",
            )?)
        } else {
            None
        };
        let dir = spool.as_ref().map(|d| d.path().to_path_buf());
        let save =
            tokio::task::spawn_blocking(move || docker_save::read(&store.files, dir.as_deref()))
                .await
                .context("internal: reader task failed")?
                .with_context(|| format!("docker save archive {shown:?}"))?;
        let store = Arc::get_mut(&mut self.store)
            .ok_or_else(|| anyhow!("internal: the backup's store is shared while it is opened"))?;
        store.docker =
            Some(DockerBlobs { files: save.files, built: save.manifests, spooled: save.spooled });
        self._spool = spool;
        self.entries = save.entries;
        self.docker_images = save.images;
        Ok(())
    }

    /// The images of a `docker save` archive, each with the manifest built for it; empty for an
    /// OCI image layout.
    pub fn docker_images(&self) -> &[docker_save::Image] {
        &self.docker_images
    }

    /// The backup's content graph, read from its store and those of the backups read with it.
    pub async fn graph(&self) -> Result<Graph> {
        let roots = self.entries.iter().map(|e| e.desc.clone()).collect::<Vec<_>>();
        let stores = self.stores();
        tokio::task::spawn_blocking(move || graph_of(&stores, &roots))
            .await
            .context("internal: reader task failed")
    }

    /// Its store, then those of the backups read with it.
    fn stores(&self) -> Vec<Arc<Store>> {
        std::iter::once(self.store.clone())
            .chain(self.more.iter().map(|m| m.store.clone()))
            .collect()
    }

    /// The store to read a blob from: this backup's, or the first of those read with it that holds
    /// it (this one's when none does, so that errors name this backup).
    fn store_of(&self, d: &Digest) -> &Arc<Store> {
        if self.more.is_empty() || self.store.holds(d) {
            return &self.store;
        }
        self.more.iter().map(|m| &m.store).find(|s| s.holds(d)).unwrap_or(&self.store)
    }

    /// The digest of its `index.json`; none for a docker save archive.
    pub fn index_digest(&self) -> Option<&Digest> {
        self.index_digest.as_ref()
    }

    /// The base it records, when it is an incremental backup.
    pub fn base(&self) -> Result<Option<index::BaseRecord>> {
        index::base_record(&self.annotations).map_err(anyhow::Error::msg)
    }

    /// The shard it holds (`K/N`), when it was made with `--shard`.
    pub fn shard(&self) -> Option<&str> {
        self.annotations.get(index::ANNOTATION_SHARD).map(String::as_str)
    }

    /// Every blob (and manifest) its files hold, and those of the backups read with it. Blocking.
    pub async fn held_digests(&self) -> Result<std::collections::HashSet<Digest>> {
        let stores = self.stores();
        tokio::task::spawn_blocking(move || stores.iter().flat_map(|s| s.blob_digests()).collect())
            .await
            .context("internal: reader task failed")
    }

    /// Reads `more` together with this backup: tags and referrers of `tops` (the backups given that
    /// are no other's base) are merged into this one's, and blobs come from whichever holds them.
    /// One tag naming two manifests in two backups is refused.
    pub async fn combine(
        mut self,
        shown: &str,
        tops: Vec<(String, LayoutSource)>,
        bases: Vec<LayoutSource>,
    ) -> Result<LayoutSource> {
        let mut tagged: HashMap<(Option<Repo>, String), (Digest, String)> = HashMap::new();
        for e in &self.entries {
            if let Some(t) = &e.tag {
                tagged.insert((e.repo.clone(), t.clone()), (e.desc.digest.clone(), shown.into()));
            }
        }
        for (name, top) in &tops {
            for e in &top.entries {
                if let Some(t) = &e.tag {
                    let key = (e.repo.clone(), t.clone());
                    match tagged.get(&key) {
                        Some((d, _)) if d == &e.desc.digest => continue,
                        Some((d, first)) => {
                            let tag = e.repo.as_ref().map_or(t.clone(), |r| format!("{r}:{t}"));
                            bail!("{first:?} and {name:?} both hold tag {tag}, for different manifests ({d} and {}): restore them one at a time, or give the one to restore", e.desc.digest);
                        }
                        None => {
                            tagged.insert(key, (e.desc.digest.clone(), name.clone()));
                        }
                    }
                } else if self.entries.iter().any(|x| x == e) {
                    continue;
                }
                self.entries.push(e.clone());
            }
        }
        for (_, mut top) in tops {
            self.docker_images.append(&mut top.docker_images);
            self.size += top.size;
            self.more.push(top);
        }
        for base in bases {
            self.size += base.size;
            self.more.push(base);
        }
        let graph = self.graph().await?;
        self.referrers = graph.referrers;
        index::order_referrers(&self.entries, &mut self.referrers);
        Ok(self)
    }

    /// The classified `index.json` entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether a blob file is present, and its size.
    pub async fn blob_size(&self, digest: &Digest) -> Option<u64> {
        let store = self.store_of(digest);
        match (store.blob(digest)?, &store.files) {
            (Blob::Built(b), _) => Some(b.len() as u64),
            (Blob::File(name), Files::Dir(root, _)) => {
                tokio::fs::symlink_metadata(root.join(&*name))
                    .await
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
            }
            (Blob::File(name), Files::Tar(_, idx, _) | Files::Object(ObjectFiles { idx, .. })) => {
                idx.files.get(&*name).map(|(_, s)| *s)
            }
            (Blob::Spooled(path), _) => tokio::fs::metadata(path).await.ok().map(|m| m.len()),
        }
    }

    /// Why a blob cannot be read: absent, or present but not a regular file (never followed).
    pub async fn absence(&self, digest: &Digest) -> &'static str {
        let store = self.store_of(digest);
        match (store.blob(digest), &store.files) {
            (Some(Blob::File(name)), Files::Dir(root, _)) => {
                match tokio::fs::symlink_metadata(root.join(&*name)).await {
                    Ok(m) if !m.is_file() => {
                        "is missing (what is there is a link, fifo or directory, not a regular file)"
                    }
                    _ => "is missing",
                }
            }
            _ => "is missing",
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

    async fn read_file(&self, name: &str, limit: u64) -> Result<Bytes> {
        let (store, owned) = (self.store.clone(), name.to_string());
        // One hop to the blocking pool per file: a restore reads thousands of manifests.
        let bytes = tokio::task::spawn_blocking(move || store.files.read(&owned, limit))
            .await
            .context("internal: reader task failed")??;
        Ok(Bytes::from(bytes))
    }

    async fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Bytes> {
        let (store, owned) = (self.store_of(digest).clone(), digest.clone());
        tokio::task::spawn_blocking(move || store.read_blob(&owned, limit))
            .await
            .context("internal: reader task failed")?
    }

    /// A descriptor for a manifest stored as a blob, checked and typed by its content.
    async fn stored_manifest(&self, digest: &Digest) -> Result<Descriptor> {
        let not_found = || anyhow!("{digest} not found in the backup");
        let size = self.blob_size(digest).await.ok_or_else(not_found)?;
        if size > MAX_MANIFEST_SIZE {
            bail!("{digest} in the backup is not a manifest (it is {size} bytes)");
        }
        let bytes = self.read_blob(digest, MAX_MANIFEST_SIZE).await?;
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
        self.read_blob(&desc.digest, MAX_MANIFEST_SIZE)
            .await
            .with_context(|| format!("manifest {} is missing or unreadable", desc.digest))
    }

    async fn fetch_blob(&self, _repo: &Repo, desc: &Descriptor) -> Result<ByteStream> {
        let missing = || anyhow!("blob {} is missing from the backup", desc.digest);
        let store = self.store_of(&desc.digest).clone();
        let name = match store.blob(&desc.digest).ok_or_else(missing)? {
            Blob::Built(b) => {
                if b.len() as u64 != desc.size {
                    bail!(
                        "blob {} is {} bytes in the backup, but {} bytes are referenced",
                        desc.digest,
                        b.len(),
                        desc.size
                    );
                }
                let b = b.clone();
                return Ok(Box::pin(futures::stream::once(async move { Ok(b) })));
            }
            Blob::File(name) => name.into_owned(),
            Blob::Spooled(path) => {
                let path = path.to_path_buf();
                let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
                    .await
                    .context("internal: reader task failed")?
                    .with_context(|| format!("blob {} (a gzip'd layer) is gone", desc.digest))?;
                let size = file.metadata()?.len();
                if size != desc.size {
                    bail!(
                        "blob {} is {size} bytes, but {} bytes are referenced",
                        desc.digest,
                        desc.size
                    );
                }
                return Ok(chunks(file, size));
            }
        };
        if let Files::Tar(_, idx, _) = &store.files {
            if let Some(&(_, size)) = idx.files.get(&name) {
                if size != desc.size {
                    bail!(
                        "blob {} is {size} bytes in the backup, but {} bytes are referenced",
                        desc.digest,
                        desc.size
                    );
                }
            }
        }
        if let Files::Object(o) = &store.files {
            let (_, _, size) = o.locate(&name).map_err(|_| missing())?;
            if size != desc.size {
                bail!(
                    "blob {} is {size} bytes in the backup, but {} bytes are referenced",
                    desc.digest,
                    desc.size
                );
            }
            return o.stream(&name).await;
        }
        let owned = name.clone();
        let (file, size) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (mut f, off, size) = store.files.open(&owned)?;
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
