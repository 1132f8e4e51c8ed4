//! Older `docker save` archives read as backups. Before Docker 25, `docker save` wrote no OCI
//! layout: `manifest.json` lists each image's config (`<hex>.json`, whose digest is Docker's image
//! ID) and layers (`<id>/layer.tar`, an identical layer being a link to another entry), beside a
//! `repositories` file; skopeo's `docker-archive:` writes the same with layers named
//! `<diff id>.tar` and the `<id>/layer.tar` names as links to them. No manifest is stored, so one is
//! built here for each image, a Docker schema 2 manifest of its config and layers: they keep their
//! bytes (and digests), the manifest's digest is new.

use super::index::{unnamed, Entry};
use crate::digest::{Digest, Hasher};
use crate::manifest::{Descriptor, DOCKER_MANIFEST, MAX_MANIFEST_SIZE};
use crate::reference::Reference;
use crate::target::Repo;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest `manifest.json` read: it names images and files, a few hundred bytes each.
pub const MAX_MANIFEST_JSON: u64 = 16 << 20;
/// Largest image config read into memory (a long history stays well under it).
pub const MAX_CONFIG: u64 = 16 << 20;
/// Config media type of a Docker image.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Layer media type of an uncompressed tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Layer media type of a gzip'd tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The files of the archive as its reader holds them (a tar's index, or a directory).
pub trait Files: Sync {
    /// The regular file `name` is, or the one the link `name` points at: followed once, to a
    /// regular file of the archive, never to another link, never outside.
    fn resolve(&self, name: &str) -> Result<String>;
    /// A whole small file, refused when over `limit` bytes.
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>>;
    /// A file's bytes from its start.
    fn reader(&self, name: &str) -> Result<Box<dyn Read + '_>>;
}

/// One image of the archive and the manifest built for it.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest built.
    pub manifest: Descriptor,
    /// Its config's digest: Docker's image ID, kept.
    pub config: Digest,
    /// Its names (`RepoTags`), as repository and tag; none for an untagged image.
    pub tags: Vec<(Repo, String)>,
    /// How many of its uncompressed layers were gzip'd for the manifest (`restore --compress`).
    pub gzipped: usize,
}

impl Image {
    /// The status line that says what was built.
    pub fn describe(&self) -> String {
        let names = if self.tags.is_empty() {
            "an untagged image".to_string()
        } else {
            let list: Vec<String> = self.tags.iter().map(|(r, t)| format!("{r}:{t}")).collect();
            format!("tag {}", list.join(", "))
        };
        let layers = match self.gzipped {
            0 => String::new(),
            n => format!("; {n} uncompressed layer(s) gzip'd, so they have new digests and the config's diff_ids still name their tars"),
        };
        format!(
            "Built manifest {} for {names} from a docker save archive (its config {}, the image ID, is kept byte for byte; the manifest digest is new{layers})",
            self.manifest.digest, self.config
        )
    }
}

/// A docker save archive read as a layout.
#[derive(Default)]
pub struct Save {
    /// The `index.json` it would have: one entry per tag, untagged images under the unnamed
    /// repository.
    pub entries: Vec<Entry>,
    /// The archive's file holding each config and layer, by digest.
    pub files: HashMap<Digest, String>,
    /// The manifests built, by digest.
    pub manifests: HashMap<Digest, Bytes>,
    /// Layers gzip'd into the spool directory, by digest (`restore --compress gzip`).
    pub spooled: HashMap<Digest, PathBuf>,
    /// The images, in `manifest.json`'s order.
    pub images: Vec<Image>,
}

/// An image as `manifest.json` lists it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The part of an image config read here.
#[derive(Deserialize)]
struct Config {
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A layer file, hashed.
#[derive(Clone)]
struct Layer {
    digest: Digest,
    size: u64,
    /// The digest of its uncompressed tar (the config's `rootfs.diff_ids` entry).
    diff_id: Digest,
    media_type: &'static str,
    /// The gzip'd copy made of an uncompressed layer, when one was asked for.
    spooled: Option<PathBuf>,
}

/// A schema 2 descriptor, fields in the order Docker's and containers/image's manifests have.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2Descriptor<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a Digest,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Schema2Descriptor<'a>,
    layers: Vec<Schema2Descriptor<'a>>,
}

/// Reads the archive's `manifest.json`, checks every image (config against its name, layers
/// against the config's `rootfs.diff_ids`) and builds their manifests. Blocking: every layer is
/// read once, to know its digest. With `gzip_into`, each uncompressed layer is gzip'd into a file
/// of that directory on the same pass, and the manifest names the gzip'd copy.
pub fn read(files: &dyn Files, gzip_into: Option<&Path>) -> Result<Save> {
    let raw = files.read("manifest.json", MAX_MANIFEST_JSON)?;
    let listed: Vec<Listed> = serde_json::from_slice(&raw)
        .map_err(|e| anyhow!("manifest.json is not a docker save image list: {e}"))?;
    if listed.is_empty() {
        bail!("manifest.json lists no image");
    }
    let mut layer_names = Vec::new();
    for (i, image) in listed.iter().enumerate() {
        for l in &image.layers {
            let name =
                resolved(files, l).with_context(|| format!("image {} of manifest.json", i + 1))?;
            if !layer_names.contains(&name) {
                layer_names.push(name);
            }
        }
    }
    let layers = hash_layers(files, &layer_names, gzip_into)?;
    let mut save = Save::default();
    let mut tagged: BTreeMap<(Repo, String), Digest> = BTreeMap::new();
    for (i, image) in listed.iter().enumerate() {
        let what = match image.repo_tags.as_deref() {
            Some([first, ..]) => format!("image {} of manifest.json ({first})", i + 1),
            _ => format!("image {} of manifest.json", i + 1),
        };
        let built = build(files, image, &layers, &mut save).with_context(|| what.clone())?;
        for (repo, tag) in &built.tags {
            if let Some(prev) =
                tagged.insert((repo.clone(), tag.clone()), built.manifest.digest.clone())
            {
                if prev != built.manifest.digest {
                    bail!("manifest.json names {repo}:{tag} for two different images; refused");
                }
            }
        }
        if let Some(known) =
            save.images.iter_mut().find(|m| m.manifest.digest == built.manifest.digest)
        {
            known.tags.extend(built.tags);
            known.tags.sort();
            known.tags.dedup();
        } else {
            save.images.push(built);
        }
    }
    for image in &save.images {
        let desc =
            Descriptor::new(DOCKER_MANIFEST, image.manifest.digest.clone(), image.manifest.size);
        if image.tags.is_empty() {
            save.entries.push(Entry { repo: Some(unnamed()), tag: None, desc });
            continue;
        }
        for (repo, tag) in &image.tags {
            save.entries.push(Entry {
                repo: Some(repo.clone()),
                tag: Some(tag.clone()),
                desc: desc.clone(),
            });
        }
    }
    Ok(save)
}

/// The regular file a path of `manifest.json` names, its links followed as [`Files::resolve`]
/// allows.
fn resolved(files: &dyn Files, path: &str) -> Result<String> {
    let name = super::tar_index::normalise(std::path::Path::new(path), "manifest.json")
        .map_err(|_| {
            anyhow!(
                "manifest.json names {:?}, an unsafe path (absolute, or with '..'); refused",
                crate::scrub::escape_controls(path)
            )
        })?
        .ok_or_else(|| anyhow!("manifest.json names an empty path"))?;
    files.resolve(&name)
}

/// Checks one image and builds its manifest, recording its blobs and the manifest in `save`.
fn build(
    files: &dyn Files,
    image: &Listed,
    layers: &HashMap<String, Layer>,
    save: &mut Save,
) -> Result<Image> {
    let config_file = resolved(files, &image.config)?;
    let config = files.read(&config_file, MAX_CONFIG)?;
    let config_digest = Digest::of(&config);
    // Docker names a config by its digest: a config that does not match its name was damaged or
    // swapped.
    let base = image.config.rsplit('/').next().unwrap_or_default();
    if let Some(hex) = base
        .strip_suffix(".json")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        if hex != config_digest.hex() {
            bail!("config {} does not match its name (its digest is {config_digest}): the archive is damaged", image.config);
        }
    }
    let parsed: Config = serde_json::from_slice(&config)
        .map_err(|e| anyhow!("config {} is not an image config: {e}", image.config))?;
    let diff_ids = parsed.rootfs.map(|r| r.diff_ids).ok_or_else(|| {
        anyhow!("config {} has no rootfs.diff_ids: not an image config", image.config)
    })?;
    if diff_ids.len() != image.layers.len() {
        bail!(
            "its config lists {} layers (rootfs.diff_ids) and manifest.json {}: the archive is damaged",
            diff_ids.len(),
            image.layers.len()
        );
    }
    let mut descriptors = Vec::new();
    for (n, (path, diff_id)) in image.layers.iter().zip(&diff_ids).enumerate() {
        let name = resolved(files, path)?;
        let layer = layers.get(&name).ok_or_else(|| anyhow!("internal: layer {name} not read"))?;
        if layer.diff_id.as_str() != diff_id {
            bail!(
                "layer {} ({path}) holds a tar of digest {}, but the config's rootfs.diff_ids[{n}] is {diff_id}: the archive is damaged or its files were swapped",
                n + 1,
                layer.diff_id,
            );
        }
        match &layer.spooled {
            Some(path) => {
                save.spooled.insert(layer.digest.clone(), path.clone());
            }
            None => {
                save.files.insert(layer.digest.clone(), name);
            }
        }
        descriptors.push(layer.clone());
    }
    save.files.insert(config_digest.clone(), config_file);
    let manifest = Schema2 {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: Schema2Descriptor {
            media_type: DOCKER_CONFIG,
            size: config.len() as u64,
            digest: &config_digest,
        },
        layers: descriptors
            .iter()
            .map(|l| Schema2Descriptor {
                media_type: l.media_type,
                size: l.size,
                digest: &l.digest,
            })
            .collect(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&manifest)?);
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        bail!(
            "its manifest would be over the {MAX_MANIFEST_SIZE} byte limit ({} layers)",
            descriptors.len()
        );
    }
    let desc = Descriptor::new(DOCKER_MANIFEST, Digest::of(&bytes), bytes.len() as u64);
    save.manifests.insert(desc.digest.clone(), bytes);
    let mut tags = Vec::new();
    for name in image.repo_tags.iter().flatten() {
        tags.push(docker_name(name).ok_or_else(|| {
            anyhow!(
                "RepoTags names it {:?}, not a valid name:tag; refused",
                crate::scrub::escape_controls(name)
            )
        })?);
    }
    tags.sort();
    tags.dedup();
    let gzipped = descriptors.iter().filter(|l| l.spooled.is_some()).count();
    Ok(Image { manifest: desc, config: config_digest, tags, gzipped })
}

/// A `RepoTags` name as Docker reads it: `alpine:3` and `team/app:v1` are Docker Hub's
/// (`docker.io/library/alpine`, `docker.io/team/app`), `reg.io/team/app:v1` names its registry.
fn docker_name(name: &str) -> Option<(Repo, String)> {
    let first = name.split('/').next().unwrap_or_default();
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_host { name.to_string() } else { format!("docker.io/{name}") };
    let r = Reference::parse(&full).ok()?;
    match (r.tags.as_slice(), &r.digest) {
        ([tag], None) => Some((Repo::new(&r.registry, &r.repository), tag.clone())),
        _ => None,
    }
}

/// What a layer's first bytes say it is.
fn compression(head: &[u8]) -> Result<Option<&'static str>, &'static str> {
    match head {
        [0x1f, 0x8b, ..] => Ok(Some("gzip")),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Err("zstd"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Err("xz"),
        [b'B', b'Z', b'h', ..] => Err("bzip2"),
        _ => Ok(None),
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what it passes on.
struct HashWrite<W> {
    inner: W,
    hasher: Hasher,
    size: u64,
}

impl<W: std::io::Write> HashWrite<W> {
    fn new(inner: W) -> Self {
        HashWrite { inner, hasher: Hasher::new(), size: 0 }
    }
}

impl<W: std::io::Write> std::io::Write for HashWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads one layer file: its digest and size, and the digest of the tar inside when compressed.
/// An uncompressed one is gzip'd into `gzip_into` when given.
fn hash_layer(files: &dyn Files, name: &str, gzip_into: Option<&Path>) -> Result<Layer> {
    let mut input = files.reader(name)?;
    let mut head = [0u8; 6];
    let got = super::tar_index::read_up_to(&mut input, &mut head)
        .with_context(|| format!("cannot read {name}"))?;
    let kind = compression(&head[..got]).map_err(|c| {
        anyhow!("layer {name} is {c}-compressed, which a Docker image manifest cannot describe (only tar and gzip'd tar)")
    })?;
    let mut raw = Hashing {
        inner: std::io::Cursor::new(head[..got].to_vec()).chain(input),
        hasher: Hasher::new(),
        size: 0,
    };
    if let (None, Some(dir)) = (kind, gzip_into) {
        return gzip_layer(name, raw, dir);
    }
    let (diff_id, media_type) = if kind.is_some() {
        let mut tar = HashWrite::new(std::io::sink());
        std::io::copy(&mut flate2::read::MultiGzDecoder::new(&mut raw), &mut tar)
            .map_err(|e| anyhow!("layer {name} is not a valid gzip stream: {e}"))?;
        (Some(tar.hasher.finish()), DOCKER_LAYER_GZIP)
    } else {
        (None, DOCKER_LAYER_TAR)
    };
    std::io::copy(&mut raw, &mut std::io::sink()).with_context(|| format!("cannot read {name}"))?;
    let digest = raw.hasher.finish();
    Ok(Layer {
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size: raw.size,
        media_type,
        spooled: None,
    })
}

/// Gzips an uncompressed layer into a file of `dir` while hashing the tar (its diff_id) and the
/// gzip'd bytes (its new digest). The gzip header carries no name and no time, so the same layer
/// always gives the same bytes and digest.
fn gzip_layer<R: Read>(name: &str, mut raw: Hashing<R>, dir: &Path) -> Result<Layer> {
    let (file, path) = tempfile::Builder::new()
        .prefix("layer-")
        .suffix(".tar.gz")
        .tempfile_in(dir)
        .and_then(|t| t.keep().map_err(|e| e.error))
        .with_context(|| {
            format!("cannot create a file in {} to gzip {name} into", dir.display())
        })?;
    let out = HashWrite::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let mut gz = flate2::GzBuilder::new().write(out, flate2::Compression::default());
    std::io::copy(&mut raw, &mut gz).with_context(|| {
        format!("cannot gzip {name} into {} (is its filesystem full?)", dir.display())
    })?;
    let mut out = gz.finish().with_context(|| format!("cannot gzip {name}"))?;
    std::io::Write::flush(&mut out.inner).with_context(|| format!("cannot gzip {name}"))?;
    Ok(Layer {
        diff_id: raw.hasher.finish(),
        digest: out.hasher.finish(),
        size: out.size,
        media_type: DOCKER_LAYER_GZIP,
        spooled: Some(path),
    })
}

/// Hashes every layer file once, a few at a time.
fn hash_layers(
    files: &dyn Files,
    names: &[String],
    gzip_into: Option<&Path>,
) -> Result<HashMap<String, Layer>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..workers.min(names.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(name) = names.get(i) else { return };
                let result = hash_layer(files, name, gzip_into);
                let failed = result.is_err();
                if let Ok(mut d) = done.lock() {
                    d.push((name.clone(), result));
                }
                if failed {
                    // The others stop at their next file: one failure is the answer.
                    next.store(names.len(), std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    let done = done.into_inner().map_err(|_| anyhow!("internal: a layer reader failed"))?;
    let mut out = HashMap::new();
    for (name, layer) in done {
        out.insert(name, layer?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_are_read_as_docker_reads_them() {
        let n = |s: &str| docker_name(s).map(|(r, t)| format!("{r}:{t}"));
        assert_eq!(n("alpine:3").as_deref(), Some("docker.io/library/alpine:3"));
        assert_eq!(n("team/app:v1").as_deref(), Some("docker.io/team/app:v1"));
        assert_eq!(n("docker.io/library/x:1").as_deref(), Some("docker.io/library/x:1"));
        assert_eq!(n("localhost:5000/app:v1").as_deref(), Some("localhost:5000/app:v1"));
        assert_eq!(n("reg.io/team/app:v1").as_deref(), Some("reg.io/team/app:v1"));
        for bad in ["app", "App:v1", "reg.io/app@sha256:1234", "a:v1,v2", "../x:1", ""] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(compression(&[0x1f, 0x8b, 8, 0]), Ok(Some("gzip")));
        assert_eq!(compression(b"layer"), Ok(None));
        assert_eq!(compression(&[0x28, 0xb5, 0x2f, 0xfd]), Err("zstd"));
        assert_eq!(compression(b"BZh91A"), Err("bzip2"));
    }
}
