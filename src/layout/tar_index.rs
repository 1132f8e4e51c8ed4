//! Indexing a layout tar once (headers only, seeking past data) so blobs can be read by offset,
//! never extracted.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::{Component, Path};

/// Where each layout file lives inside the archive.
#[derive(Debug, Default)]
pub struct TarIndex {
    /// Normalised entry name to (data offset, size).
    pub files: HashMap<String, (u64, u64)>,
    /// Links beside the layout's files (never read as a layout's files): normalised name to the
    /// normalised name of the entry they point at, or why that target cannot be inside the
    /// archive. Only a `docker save` archive's reader resolves them, to regular files only.
    pub links: HashMap<String, Result<String, &'static str>>,
}

impl TarIndex {
    /// The regular file `name` is, or that the link `name` points at: a link is followed once, to
    /// a regular file entry of this archive, never to another link, never outside.
    pub fn resolve(&self, name: &str) -> Result<String, String> {
        if self.files.contains_key(name) {
            return Ok(name.to_string());
        }
        match self.links.get(name) {
            None => Err(format!("{name} is missing from the archive")),
            Some(Err(why)) => Err(format!("{name} is a link {why}; refusing to follow it")),
            Some(Ok(target)) if self.files.contains_key(target) => Ok(target.clone()),
            Some(Ok(target)) if self.links.contains_key(target) => Err(format!(
                "{name} is a link to {target}, itself a link; links are followed once, to a regular file"
            )),
            Some(Ok(target)) => Err(format!(
                "{name} is a link to {target}, which the archive does not hold as a regular file"
            )),
        }
    }
}

/// What is wrong with an archive.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("{0} is gzip-compressed, not a plain tar: decompress it first (gunzip)")]
    Gzip(String),
    #[error("{0} is a zip file, not a tar archive")]
    Zip(String),
    #[error("{0} is neither a directory nor a tar archive: give a backup made by oras backup (a directory, .tar, .tar.gz or .tar.zst), an OCI image layout or a docker save archive")]
    NotTar(String),
    #[error("{path}: refusing unsafe entry {entry:?}: {why}")]
    Unsafe { path: String, entry: String, why: &'static str },
    #[error("{path}: entry {entry:?} appears twice with different contents")]
    Duplicate { path: String, entry: String },
    #[error("{path} is truncated or damaged: {detail}")]
    Damaged { path: String, detail: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Whether the first bytes of a file are a tar header (`ustar` magic), else why not.
pub fn sniff(path: &Path, head: &[u8]) -> Result<(), TarError> {
    let p = path.display().to_string();
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err(TarError::Gzip(p));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Err(TarError::Zip(p));
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(());
    }
    // An empty tar is its end-of-archive blocks: zeros.
    if head.len() >= 512 && head.iter().all(|b| *b == 0) {
        return Ok(());
    }
    Err(TarError::NotTar(p))
}

/// Normalises an entry name, refusing absolute paths and `..`.
pub(super) fn normalise(name: &Path, path: &str) -> Result<Option<String>, TarError> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(TarError::Unsafe {
                    path: path.into(),
                    entry: name.display().to_string(),
                    why: "contains '..'",
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(TarError::Unsafe {
                    path: path.into(),
                    entry: name.display().to_string(),
                    why: "absolute path",
                })
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

/// Where a link entry named `name` (normalised) points, as a normalised name inside the archive: a
/// symbolic link's target is relative to the link's directory, a hard link's to the archive's top.
pub(super) fn link_target(name: &str, target: &Path, hard: bool) -> Result<String, &'static str> {
    let mut parts: Vec<String> = Vec::new();
    if !hard {
        parts.extend(name.split('/').map(str::to_string));
        parts.pop();
    }
    for c in target.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("that points outside the archive");
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("to an absolute path");
            }
        }
    }
    if parts.is_empty() {
        return Err("to the archive's top directory");
    }
    Ok(parts.join("/"))
}

/// Whether a name is one of the files a layout (or Docker's loader) reads.
fn is_layout_file(name: &str) -> bool {
    name.starts_with("blobs/") || matches!(name, "index.json" | "oci-layout" | "manifest.json")
}

/// Checks one entry: its normalised name for a regular file, `None` for entries to skip
/// (directories).
pub fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    p: &str,
) -> Result<Option<String>, TarError> {
    let name = entry
        .path()
        .map_err(|e| TarError::Damaged { path: p.to_string(), detail: e.to_string() })?
        .into_owned();
    let kind = entry.header().entry_type();
    let Some(norm) = normalise(&name, p)? else { return Ok(None) };
    // A PAX global header (`git archive` writes one) only carries metadata for the readers that
    // want it.
    if kind.is_dir() || kind.is_pax_global_extensions() {
        return Ok(None);
    }
    if kind.is_symlink() || kind.is_hard_link() {
        // A layout's own files are regular files. A link beside them (`docker save` since Docker
        // 25 keeps its older directories as links into blobs/) is never followed and never read.
        if is_layout_file(&norm) {
            return Err(TarError::Unsafe {
                path: p.to_string(),
                entry: norm,
                why: "links are not allowed in a backup",
            });
        }
        return Ok(None);
    }
    if !(kind.is_file() || kind.is_contiguous()) {
        return Err(TarError::Unsafe {
            path: p.to_string(),
            entry: norm,
            why: "only regular files are allowed in a backup",
        });
    }
    Ok(Some(norm))
}

/// Reads every header of the archive at `path` and records where each regular file's data lies.
pub fn index(path: &Path) -> Result<TarIndex, TarError> {
    let p = path.display().to_string();
    let io = |source| TarError::Io { path: p.clone(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    // A second handle for comparing duplicate entries, positioned reads only (the archive owns the
    // first).
    let compare = std::fs::File::open(path).map_err(io)?;
    index_from(&p, file, len, &|a, b, n| same_bytes(&compare, a, b, n))
}

/// Compares the `len` bytes at two offsets of an archive.
pub type SameBytes<'a> = dyn Fn(u64, u64, u64) -> std::io::Result<bool> + 'a;

/// Reads every header of an archive of `len` bytes read through `input` (seeking past data), shown
/// to the user as `p`; `same` compares two entries' bytes when a name appears twice.
pub fn index_from<R: Read + Seek>(
    p: &str,
    mut input: R,
    len: u64,
    same: &SameBytes<'_>,
) -> Result<TarIndex, TarError> {
    let io = |source| TarError::Io { path: p.to_string(), source };
    let mut head = vec![0u8; 512];
    let n = read_up_to(&mut input, &mut head).map_err(io)?;
    sniff(Path::new(p), &head[..n])?;
    input.rewind().map_err(io)?;
    let mut archive = tar::Archive::new(input);
    let mut out = TarIndex::default();
    let entries = archive
        .entries_with_seek()
        .map_err(|e| TarError::Damaged { path: p.to_string(), detail: e.to_string() })?;
    for entry in entries {
        let entry =
            entry.map_err(|e| TarError::Damaged { path: p.to_string(), detail: e.to_string() })?;
        let Some(norm) = check_entry(&entry, p)? else {
            record_link(&entry, p, &mut out.links)?;
            continue;
        };
        let offset = entry.raw_file_position();
        let size = entry.size();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(TarError::Damaged {
                path: p.to_string(),
                detail: format!("entry {norm:?} runs past the end of the file"),
            });
        }
        if let Some(&(prev_offset, prev_size)) = out.files.get(&norm) {
            // Other readers keep the last copy, this one the first: two copies must not differ, or
            // the archive would mean different things to different tools.
            if prev_size != size || !same(prev_offset, offset, size).map_err(io)? {
                return Err(TarError::Duplicate { path: p.to_string(), entry: norm });
            }
            continue;
        }
        out.files.insert(norm, (offset, size));
    }
    // A name that is a file and a link means one thing to a reader that keeps the first entry and
    // another to one that keeps the last.
    if let Some(name) = out.links.keys().find(|n| out.files.contains_key(*n)) {
        return Err(TarError::Duplicate { path: p.to_string(), entry: name.clone() });
    }
    Ok(out)
}

/// Records a link entry `check_entry` let pass (one beside the layout's files) with its target.
fn record_link<R: Read>(
    entry: &tar::Entry<'_, R>,
    p: &str,
    links: &mut HashMap<String, Result<String, &'static str>>,
) -> Result<(), TarError> {
    let kind = entry.header().entry_type();
    if !(kind.is_symlink() || kind.is_hard_link()) {
        return Ok(());
    }
    let damaged =
        |e: std::io::Error| TarError::Damaged { path: p.to_string(), detail: e.to_string() };
    let name = entry.path().map_err(damaged)?;
    let Some(name) = normalise(&name, p)? else { return Ok(()) };
    let target = match entry.link_name().map_err(damaged)? {
        Some(t) => link_target(&name, &t, kind.is_hard_link()),
        None => Err("without a target"),
    };
    match links.get(&name) {
        Some(prev) if prev != &target => {
            Err(TarError::Duplicate { path: p.to_string(), entry: name })
        }
        _ => {
            links.insert(name, target);
            Ok(())
        }
    }
}

/// Whether the `len` bytes at offsets `a` and `b` of `f` are equal.
fn same_bytes(f: &std::fs::File, a: u64, b: u64, len: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 * 1024;
    let (mut x, mut y) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        f.read_exact_at(&mut x[..n], a + done)?;
        f.read_exact_at(&mut y[..n], b + done)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
pub(super) fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_traversal_and_absolute() {
        assert!(normalise(Path::new("../x"), "t").is_err());
        assert!(normalise(Path::new("/etc/passwd"), "t").is_err());
        assert_eq!(
            normalise(Path::new("./blobs/sha256/ab"), "t").unwrap().as_deref(),
            Some("blobs/sha256/ab")
        );
    }

    fn tar_of(entries: &[(&str, &[u8])], global_header: bool) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        if global_header {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XGlobalHeader);
            let data = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
            h.set_size(data.len() as u64);
            b.append_data(&mut h, "pax_global_header", &data[..]).unwrap();
        }
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        f
    }

    #[test]
    fn duplicates_must_agree() {
        let same = tar_of(
            &[("index.json", b"{}"), ("blobs/sha256/ab", b"xy"), ("./blobs/sha256/ab", b"xy")],
            false,
        );
        assert_eq!(index(same.path()).unwrap().files.len(), 2);
        let differ = tar_of(
            &[("index.json", b"{}"), ("blobs/sha256/ab", b"xy"), ("blobs/sha256/ab", b"xz")],
            false,
        );
        assert!(matches!(index(differ.path()), Err(TarError::Duplicate { .. })));
        let two_index = tar_of(&[("index.json", b"{}"), ("index.json", b"[]")], false);
        assert!(matches!(index(two_index.path()), Err(TarError::Duplicate { .. })));
    }

    #[test]
    fn links_beside_the_layout_resolve_once_to_regular_files_inside_the_archive() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        b.append_data(&mut h, "a/layer.tar", &b"xy"[..]).unwrap();
        for (name, to, kind) in [
            ("b/layer.tar", "../a/layer.tar", tar::EntryType::Symlink),
            ("c/layer.tar", "a/layer.tar", tar::EntryType::Link),
            ("d/layer.tar", "../b/layer.tar", tar::EntryType::Symlink),
            ("e/layer.tar", "../../etc/passwd", tar::EntryType::Symlink),
            ("f/layer.tar", "/etc/passwd", tar::EntryType::Symlink),
            ("g/layer.tar", "../a", tar::EntryType::Symlink),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(0);
            b.append_link(&mut h, name, to).unwrap();
        }
        b.finish().unwrap();
        let idx = index(f.path()).unwrap();
        assert_eq!(idx.resolve("a/layer.tar").unwrap(), "a/layer.tar");
        assert_eq!(idx.resolve("b/layer.tar").unwrap(), "a/layer.tar");
        assert_eq!(idx.resolve("c/layer.tar").unwrap(), "a/layer.tar");
        let err = |n: &str| idx.resolve(n).unwrap_err();
        assert!(err("d/layer.tar").contains("itself a link"), "{}", err("d/layer.tar"));
        assert!(err("e/layer.tar").contains("outside"), "{}", err("e/layer.tar"));
        assert!(err("f/layer.tar").contains("absolute"), "{}", err("f/layer.tar"));
        assert!(err("g/layer.tar").contains("regular file"), "{}", err("g/layer.tar"));
        assert!(err("h/layer.tar").contains("missing"), "{}", err("h/layer.tar"));
    }

    #[test]
    fn global_pax_header_is_skipped() {
        let t = tar_of(&[("index.json", b"{}")], true);
        assert_eq!(index(t.path()).unwrap().files.len(), 1);
    }

    #[test]
    fn sniffs_formats() {
        assert!(matches!(sniff(Path::new("x"), &[0x1f, 0x8b, 0]), Err(TarError::Gzip(_))));
        assert!(matches!(sniff(Path::new("x"), b"PK\x03\x04"), Err(TarError::Zip(_))));
        assert!(matches!(sniff(Path::new("x"), b"hello"), Err(TarError::NotTar(_))));
    }
}
