//! Reading a backup in object storage with ranged GETs: a blocking `Read + Seek` view of an object
//! for the tar indexer (which reads headers and seeks past data), a blob's range as a stream, and a
//! blocking reader over a stream (docker save layers, a compressed archive being unpacked).
//!
//! Indexing a tar reads only what the header chain needs: each read outside the window fetches
//! [`WINDOW`] bytes from there on, so the headers of consecutive small entries (manifests,
//! configs) come in one GET, and a seek past a large blob costs one GET at the next header. An
//! archive of N entries larger than the window is indexed in about N + (small entries' bytes /
//! 1 MiB) sequential requests, with 1 MiB of memory.

use super::{error, Location, Store};
use crate::registry::stall::{guard, StallLimit};
use crate::target::{ByteStream, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use std::io::{Read, Seek, SeekFrom};
use tokio::runtime::Handle;

/// How much one read of the tar indexer fetches at once.
pub const WINDOW: u64 = 1 << 20;

/// A blocking, seekable view of one object, fetching [`WINDOW`] bytes at a time. For the blocking
/// pool only (it waits on the runtime).
pub struct Ranged {
    store: Store,
    path: ObjPath,
    loc: Location,
    len: u64,
    pos: u64,
    window: Bytes,
    window_start: u64,
    handle: Handle,
}

impl Ranged {
    /// A view of the `len` bytes of the object at `path`.
    pub fn new(store: Store, path: ObjPath, loc: Location, len: u64, handle: Handle) -> Ranged {
        Ranged { store, path, loc, len, pos: 0, window: Bytes::new(), window_start: 0, handle }
    }

    /// Reads `len` bytes at `offset` (one GET). Blocking.
    pub fn read_at(&self, offset: u64, len: u64) -> Result<Bytes> {
        read_range(&self.handle, &self.store, &self.path, &self.loc, offset, len)
    }
}

/// Reads `len` bytes at `offset` of an object, checking that they all came. Blocking.
pub fn read_range(
    handle: &Handle,
    store: &Store,
    path: &ObjPath,
    loc: &Location,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    handle.block_on(read_range_async(store, path, loc, offset, len))
}

/// Reads `len` bytes at `offset` of an object, from async code, checking that they all came.
pub async fn read_range_async(
    store: &Store,
    path: &ObjPath,
    loc: &Location,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let what = format!("cannot read s3://{}/{path}", loc.bucket);
    let got =
        store.get_range(path, offset..offset + len).await.map_err(|e| error(e, &what, loc))?;
    if got.len() as u64 != len {
        anyhow::bail!("{what}: {} bytes came for a range of {len}", got.len());
    }
    Ok(got)
}

impl Read for Ranged {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let end = self.window_start + self.window.len() as u64;
        if self.pos < self.window_start || self.pos >= end {
            let want = WINDOW.min(self.len - self.pos);
            self.window = self
                .read_at(self.pos, want)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            self.window_start = self.pos;
        }
        let from = (self.pos - self.window_start) as usize;
        let n = buf.len().min(self.window.len() - from);
        buf[..n].copy_from_slice(&self.window[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Ranged {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos =
            pos.ok_or_else(|| std::io::Error::other("seek before the start of the object"))?;
        Ok(self.pos)
    }
}

/// The longest range one GET of a blob reads: at the 15-minute request limit, 73 KiB/s.
pub const SEGMENT: u64 = 64 << 20;

/// The floor a blob read is held to: `ORAS_SPEED_LIMIT` bytes per second over `ORAS_SPEED_TIME`
/// seconds, as registry transfers (1024 over 30 by default).
fn stall_limit() -> StallLimit {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let d = StallLimit::default();
    StallLimit {
        bytes_per_second: var("ORAS_SPEED_LIMIT").unwrap_or(d.bytes_per_second),
        window: var("ORAS_SPEED_TIME").map_or(d.window, std::time::Duration::from_secs),
    }
}

/// One ranged GET as a stream, checked not to run past the range.
async fn get_segment(
    store: Store,
    path: ObjPath,
    loc: Location,
    range: std::ops::Range<u64>,
) -> Result<ByteStream> {
    let what = format!("cannot read s3://{}/{path}", loc.bucket);
    let mut left = range.end - range.start;
    let opts = GetOptions { range: Some(GetRange::Bounded(range)), ..Default::default() };
    let got = store.get_opts(&path, opts).await.map_err(|e| error(e, &what, &loc))?;
    let stream = got.into_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| std::io::Error::other(format!("{what}: {e}")))?;
        // A store that sends more than the range asked is not trusted with the rest.
        left = left.checked_sub(chunk.len() as u64).ok_or_else(|| {
            std::io::Error::other("the object store sent more than the range asked for")
        })?;
        Ok(chunk)
    });
    Ok(Box::pin(stream))
}

/// The `len` bytes at `offset` of an object as a stream: ranged GETs of at most [`SEGMENT`]
/// bytes one after another (the first asked at once, so that a missing object fails here), held
/// to the stall floor. The engine checks the length and digest of what comes.
pub async fn stream_range(
    store: &Store,
    path: &ObjPath,
    loc: &Location,
    offset: u64,
    len: u64,
) -> Result<ByteStream> {
    if len == 0 {
        return Ok(Box::pin(futures::stream::empty()));
    }
    let end = offset + len;
    let first =
        get_segment(store.clone(), path.clone(), loc.clone(), offset..end.min(offset + SEGMENT))
            .await?;
    let (store, path, loc) = (store.clone(), path.clone(), loc.clone());
    let rest = futures::stream::iter((offset + SEGMENT..end).step_by(SEGMENT as usize))
        .then(move |from| {
            let (store, path, loc) = (store.clone(), path.clone(), loc.clone());
            async move {
                get_segment(store, path, loc, from..end.min(from + SEGMENT))
                    .await
                    .map_err(|e| std::io::Error::other(format!("{e:#}")))
            }
        })
        .try_flatten();
    let all: ByteStream = Box::pin(first.chain(rest));
    Ok(Box::pin(guard(all, stall_limit())))
}

/// A blocking reader over a stream, for readers that need `std::io::Read` (on the blocking pool).
pub struct SyncStream {
    stream: ByteStream,
    current: Bytes,
    handle: Handle,
}

impl SyncStream {
    /// Reads `stream` by waiting on `handle`'s runtime.
    pub fn new(stream: ByteStream, handle: Handle) -> SyncStream {
        SyncStream { stream, current: Bytes::new(), handle }
    }
}

impl Read for SyncStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The most objects a layout prefix may hold for this tool to list it.
pub const MAX_LISTED: usize = 1_000_000;

/// Every object under `loc` taken as a prefix: its name below the prefix and its size.
pub async fn list(store: &Store, loc: &Location) -> Result<Vec<(String, u64)>> {
    let what = format!("cannot list {loc}");
    let prefix = if loc.key.is_empty() { None } else { Some(ObjPath::from(loc.key.as_str())) };
    let mut listing = store.list(prefix.as_ref());
    let mut out = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| error(e, &what, loc))?;
        let full = meta.location.as_ref();
        let name = match &prefix {
            Some(p) => full.strip_prefix(p.as_ref()).and_then(|r| r.strip_prefix('/')),
            None => Some(full),
        };
        if let Some(name) = name {
            out.push((name.to_string(), meta.size));
        }
        if out.len() > MAX_LISTED {
            anyhow::bail!("{loc} holds more than {MAX_LISTED} objects: not read as a backup");
        }
    }
    Ok(out)
}

/// The size of an object, `None` when there is none at `path`.
pub async fn size(store: &Store, path: &ObjPath, loc: &Location) -> Result<Option<u64>> {
    match store.head(path).await {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(error(e, &format!("cannot read s3://{}/{path}", loc.bucket), loc)),
    }
}

/// Checks that the bucket is there (a HEAD cannot tell a missing bucket from a missing object: a
/// listing can). Credentials that may not list (a write-only backup role) pass: what they may do is
/// told by the requests the run makes.
pub async fn check_bucket(store: &Store, loc: &Location) -> Result<()> {
    let prefix = if loc.key.is_empty() { None } else { Some(ObjPath::from(loc.key.as_str())) };
    let mut listing = store.list(prefix.as_ref());
    if let Some(Err(e)) = listing.next().await {
        let e = error(e, &format!("cannot use {loc}"), loc);
        if crate::target::kind_of(&e) != crate::target::ErrorKind::Denied {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;
    use std::sync::Arc;

    /// A tar of entries around the window's size, so that headers fall inside, at the edge of and
    /// beyond a window.
    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let sizes = [10usize, 1 << 20, 511, (1 << 20) + 1, 3 << 20, 0, 700];
        for (i, size) in sizes.iter().enumerate() {
            let data = vec![i as u8; *size];
            let mut h = tar::Header::new_ustar();
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, format!("blobs/sha256/{i}"), &data[..]).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn a_tar_object_indexes_as_the_same_file_does_and_its_ranges_stream_back() {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
        let bytes = archive();
        let file = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(file.path(), &bytes).expect("write");
        let local = crate::layout::tar_index::index(file.path()).expect("local index");
        let loc = Location { bucket: "b".into(), key: "a.tar".into(), prefix: false };
        let store: Store = Arc::new(InMemory::new());
        rt.block_on(store.put(&loc.path(), PutPayload::from(bytes.clone()))).expect("put");
        let handle = rt.handle().clone();
        let (s2, l2, len) = (store.clone(), loc.clone(), bytes.len() as u64);
        let remote = rt
            .block_on(rt.spawn_blocking(move || {
                let ranged = Ranged::new(s2, l2.path(), l2, len, handle);
                crate::layout::tar_index::index_from("s3://b/a.tar", ranged, len, &|_, _, _| {
                    Ok(true)
                })
            }))
            .expect("task")
            .expect("remote index");
        assert_eq!(remote.files, local.files);
        for (name, (off, size)) in &remote.files {
            let got: Vec<Bytes> = rt.block_on(async {
                stream_range(&store, &loc.path(), &loc, *off, *size)
                    .await
                    .expect("stream")
                    .map(|c| c.expect("chunk"))
                    .collect()
                    .await
            });
            let got: Vec<u8> = got.concat();
            assert_eq!(&got[..], &bytes[*off as usize..(*off + *size) as usize], "{name}");
        }
    }
}
