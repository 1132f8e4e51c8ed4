//! Compressed archives: a layout tar through gzip or zstd. Written as a stream (a compressed tar
//! has no random access); read back by unpacking into a temporary tar, or, from standard input, by
//! decompressing the stream as it passes. The uncompressed `.tar` stays the fast path.

use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWrite;

/// A compression of the archive stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// gzip (`.tar.gz`, `.tgz`): every tool reads it.
    Gzip,
    /// Zstandard (`.tar.zst`): faster, and smaller at its default level.
    Zstd,
}

impl Compression {
    /// The compression an output name asks for.
    pub fn of_name(name: &str) -> Option<Compression> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Compression::Gzip)
        } else if lower.ends_with(".tar.zst")
            || lower.ends_with(".tar.zstd")
            || lower.ends_with(".tzst")
        {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// The compression of data that starts with `head`, by its magic bytes.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// Compresses what is written to `w`; the stream is complete once shut down.
    pub fn writer(
        self,
        w: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Box<dyn AsyncWrite + Send + Unpin> {
        use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
        match self {
            Compression::Gzip => Box::new(GzipEncoder::new(w)),
            Compression::Zstd => Box::new(ZstdEncoder::new(w)),
        }
    }

    /// Decompresses what is read from `r` (concatenated gzip members included).
    pub fn reader<'a>(self, r: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// A compressed archive being written: a temporary file beside the final one, renamed into place
/// only by [`CompressedOutput::commit`]; dropped uncommitted, it is removed.
pub struct CompressedOutput {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl CompressedOutput {
    /// Starts writing `path`; returns the writer the archive stream goes to.
    pub async fn create(
        path: &Path,
        c: Compression,
    ) -> Result<(CompressedOutput, Box<dyn AsyncWrite + Send + Unpin>)> {
        let shown = path.display();
        if path.is_dir() {
            anyhow::bail!(
                "output {shown:?} is a directory, not a file: remove it or choose another path"
            );
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        tokio::fs::create_dir_all(&parent)
            .await
            .with_context(|| format!("cannot create the directory of {shown:?}"))?;
        let tmp = super::temp_name(path);
        let _ = tokio::fs::remove_file(&tmp).await;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let out = CompressedOutput { tmp, path: path.to_path_buf(), committed: false };
        Ok((out, c.writer(tokio::io::BufWriter::with_capacity(1 << 20, file))))
    }

    /// The stream is complete (and shut down): puts the archive on disk and in place.
    pub async fn commit(mut self) -> Result<()> {
        let (tmp, path) = (self.tmp.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            let parent =
                path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::File::open(parent)?.sync_all()
        })
        .await
        .context("internal: sync task failed")?
        .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for CompressedOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Unpacks a compressed archive into a temporary tar (in `$TMPDIR`), removed when the returned
/// path is dropped. Blocking.
pub fn unpack(path: &Path, c: Compression) -> Result<tempfile::TempPath> {
    let shown = path.display().to_string();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open backup {shown:?}"))?;
    unpack_from(file, &shown, c)
}

/// Unpacks a compressed archive read from `input` (shown as `shown`) into a temporary tar, as
/// [`unpack`]. Blocking.
pub fn unpack_from(input: impl Read, shown: &str, c: Compression) -> Result<tempfile::TempPath> {
    let mut reader = c.reader(std::io::BufReader::with_capacity(1 << 20, input))?;
    let mut tmp = tempfile::Builder::new()
        .prefix("oras-unpacked-")
        .suffix(".tar")
        .tempfile()
        .context("cannot create a temporary file to unpack the archive into (set TMPDIR to a directory with room)")?;
    std::io::copy(&mut reader, &mut tmp)
        .with_context(|| format!("backup {shown:?} is a {c} stream that cannot be decompressed"))?;
    Ok(tmp.into_temp_path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn both_compressions_round_trip_and_are_known_by_name_and_by_magic() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, c) in [("a.tar.gz", Compression::Gzip), ("a.tar.zst", Compression::Zstd)] {
            assert_eq!(Compression::of_name(name), Some(c));
            let path = dir.path().join(name);
            let (out, mut w) = CompressedOutput::create(&path, c).await.expect("create");
            w.write_all(&b"layout bytes ".repeat(1000)).await.expect("write");
            w.shutdown().await.expect("shutdown");
            assert!(!path.exists(), "nothing in place before the commit");
            out.commit().await.expect("commit");
            let raw = std::fs::read(&path).expect("read");
            assert_eq!(Compression::sniff(&raw), Some(c));
            let unpacked = unpack(&path, c).expect("unpack");
            assert_eq!(std::fs::read(&unpacked).expect("read"), b"layout bytes ".repeat(1000));
        }
        assert_eq!(Compression::of_name("a.tar"), None);
        let path = dir.path().join("dropped.tar.gz");
        let (out, _w) = CompressedOutput::create(&path, Compression::Gzip).await.expect("create");
        drop(out);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            2,
            "an uncommitted output leaves nothing"
        );
    }
}
