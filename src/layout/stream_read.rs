//! Reading a backup from a non-seekable tar stream (stdin): manifests (which this tool writes
//! first) are held in memory; blobs are handed on as they pass, once, in stream order.

use super::compress::Compression;
use super::graph::{self, Broken};
use super::index::{self, Entry, MAX_INDEX_SIZE};
use super::tar_index::{check_entry, read_up_to};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use crate::target::{
    failure, Access, ByteStream, ErrorKind, ReferrerListing, Repo, Resolved, Result, Source,
};
use anyhow::{anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

const CHUNK: usize = 256 * 1024;

/// Bytes of manifests and small blobs held in memory before the first large blob; a stream that
/// keeps sending small entries beyond this is refused rather than held whole.
const MAX_HEAD_BYTES: u64 = 1 << 30;

type Chunk = std::result::Result<Bytes, std::io::Error>;

/// The blobs wanted from the stream, each with the channel its bytes go to.
type Wanted = HashMap<Digest, mpsc::Sender<Chunk>>;

/// What the reading thread learnt before the first blob.
struct Head {
    entries: Vec<Entry>,
    small: HashMap<Digest, Bytes>,
}

/// A backup read from a stream.
pub struct StreamSource {
    entries: Vec<Entry>,
    manifests: HashMap<Digest, Bytes>,
    referrers: HashMap<Digest, Vec<Descriptor>>,
    plan_tx: Mutex<Option<std::sync::mpsc::Sender<Wanted>>>,
    receivers: Mutex<HashMap<Digest, mpsc::Receiver<Chunk>>>,
    /// Bytes of small blobs read while looking for manifests, served from memory.
    early: HashMap<Digest, Bytes>,
}

fn hex_of(name: &str) -> Option<Digest> {
    name.strip_prefix("blobs/sha256/").and_then(|h| format!("sha256:{h}").parse().ok())
}

fn read_all<R: Read>(r: &mut R, size: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
    if size > limit {
        bail!("{what} is {size} bytes, over the {limit} byte limit");
    }
    // The header's size may lie: grow with the bytes that really arrive.
    let mut buf = Vec::with_capacity(size.min(CHUNK as u64) as usize);
    r.take(size).read_to_end(&mut buf)?;
    if buf.len() as u64 != size {
        bail!("the stream ended inside {what}: truncated archive");
    }
    Ok(buf)
}

/// The digest of the rest of an entry's data, read in chunks.
fn digest_of_entry<R: Read>(r: &mut R) -> std::io::Result<Digest> {
    let mut v = crate::digest::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(v.finish());
        }
        v.update(&buf[..n]);
    }
}

/// Where errors about the stream say it came from.
const P: &str = "standard input";

/// The blob whose last chunk is held back, with that chunk once read.
type Held = (mpsc::Sender<Chunk>, Option<Bytes>);

/// The reading thread: first the leading small entries (oci-layout, index.json, manifests), then
/// blobs on demand.
fn reader_thread<R: Read>(
    input: R,
    head_tx: oneshot::Sender<Result<Head>>,
    plan_rx: std::sync::mpsc::Receiver<Wanted>,
) {
    let mut reader = Reader::new(head_tx, plan_rx);
    let Some(input) = reader.sniff(input) else { return };
    let mut archive = tar::Archive::new(input);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return reader.fail(anyhow!("{P} is not a tar archive: {e}")),
    };
    for next in entries {
        let entry = match next {
            Ok(e) => e,
            Err(e) => return reader.fail(anyhow!("{P} is truncated or damaged: {e}")),
        };
        if reader.on_entry(entry).is_break() {
            return;
        }
    }
    reader.finish();
}

/// What the head phase made of one entry.
enum HeadStep {
    /// A small entry kept: read on.
    More,
    /// The first blob: the head is complete. `read` tells whether the entry was read whole (and is
    /// served from memory) or is still to be passed on.
    FirstBlob { read: bool },
}

/// The reading thread's state, from the head phase (small entries held in memory) to the blob phase
/// (each wanted blob handed to its consumer as it passes).
struct Reader {
    /// Set until the head is handed over.
    head_tx: Option<oneshot::Sender<Result<Head>>>,
    plan_rx: std::sync::mpsc::Receiver<Wanted>,
    index_entries: Option<Vec<Entry>>,
    small: HashMap<Digest, Bytes>,
    /// Set once the consumer has said which blobs it wants.
    senders: Option<Wanted>,
    /// Digest of every entry read whole in the head phase, and names of entries passed later: a
    /// name that comes twice must carry the same bytes, or the archive means different things to
    /// different tools.
    read_whole: HashMap<String, Digest>,
    passed: HashSet<String>,
    head_bytes: u64,
    /// Whether Docker's `manifest.json` passed: an archive without `index.json` is then a docker
    /// save archive, which is read from a file only.
    docker_manifest: bool,
    /// The last chunk of the last wanted blob waits for the end of the archive, so that damage
    /// found after it (a conflicting duplicate, truncation) still fails that upload before anything
    /// is tagged: an upload with a known length may end without waiting for the stream's end.
    held: Option<Held>,
}

impl Reader {
    fn new(
        head_tx: oneshot::Sender<Result<Head>>,
        plan_rx: std::sync::mpsc::Receiver<Wanted>,
    ) -> Reader {
        Reader {
            head_tx: Some(head_tx),
            plan_rx,
            index_entries: None,
            small: HashMap::new(),
            senders: None,
            read_whole: HashMap::new(),
            passed: HashSet::new(),
            head_bytes: 0,
            docker_manifest: false,
            held: None,
        }
    }

    /// Applies a file's format checks to the stream's first block, so that a foreign stream gets a
    /// clear answer; a gzip or zstd stream is decompressed as it passes. Returns the stream with
    /// that block put back.
    fn sniff<'a, R: Read + 'a>(&mut self, mut input: R) -> Option<Box<dyn Read + 'a>> {
        let mut magic = [0u8; 4];
        let n = match read_up_to(&mut input, &mut magic) {
            Ok(n) => n,
            Err(e) => {
                self.fail(anyhow!("cannot read {P}: {e}"));
                return None;
            }
        };
        let raw = std::io::Cursor::new(magic[..n].to_vec()).chain(input);
        let mut input: Box<dyn Read + 'a> = match Compression::sniff(&magic[..n]) {
            Some(c) => match c.reader(raw) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(anyhow!("cannot read the {c} stream on {P}: {e}"));
                    return None;
                }
            },
            None => Box::new(raw),
        };
        let mut first = vec![0u8; 512];
        match read_up_to(&mut input, &mut first) {
            Ok(n) => first.truncate(n),
            Err(e) => {
                self.fail(anyhow!("cannot read {P}: {e}"));
                return None;
            }
        }
        // An empty or all-zero stream is an empty tar: reported at the end as having no index.json.
        if !first.iter().all(|b| *b == 0) {
            if let Err(e) = super::tar_index::sniff(std::path::Path::new(P), &first) {
                self.fail(e.into());
                return None;
            }
        }
        Some(Box::new(std::io::Cursor::new(first).chain(input)))
    }

    /// Fails the run: the head's receiver if it still waits, otherwise every blob consumer.
    fn fail(&mut self, e: anyhow::Error) {
        match self.head_tx.take() {
            Some(tx) => {
                let _ = tx.send(Err(e));
            }
            None => self.fail_blobs(&e.to_string()),
        }
    }

    fn fail_blobs(&mut self, msg: &str) {
        let held = self.held.take().map(|(tx, _)| tx);
        let waiting = self.senders.take().into_iter().flat_map(|s| s.into_values());
        for tx in held.into_iter().chain(waiting) {
            let _ = tx.blocking_send(Err(std::io::Error::other(msg.to_string())));
        }
    }

    fn on_entry<R: Read>(&mut self, mut entry: tar::Entry<R>) -> ControlFlow<()> {
        let name = match check_entry(&entry, P) {
            Ok(Some(n)) => n,
            Ok(None) => return ControlFlow::Continue(()),
            Err(e) => {
                self.fail(e.into());
                return ControlFlow::Break(());
            }
        };
        if self.head_tx.is_some() {
            match self.head_entry(&name, &mut entry) {
                Ok(HeadStep::More) => return ControlFlow::Continue(()),
                Ok(HeadStep::FirstBlob { read }) => {
                    self.hand_over_head()?;
                    if read {
                        return ControlFlow::Continue(());
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return ControlFlow::Break(());
                }
            }
        }
        self.blob_entry(name, entry)
    }

    /// Notes an entry read whole; false if the same name came before with the same bytes.
    fn note_whole(&mut self, name: &str, bytes: &[u8]) -> Result<bool> {
        self.head_bytes += bytes.len() as u64;
        if self.head_bytes > MAX_HEAD_BYTES {
            bail!("{P} holds more than {MAX_HEAD_BYTES} bytes of manifests before its first blob; refusing to hold them in memory");
        }
        let digest = Digest::of(bytes);
        match self.read_whole.insert(name.to_string(), digest.clone()) {
            Some(prev) if prev != digest => {
                bail!("{P}: entry {name:?} appears twice with different contents")
            }
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    /// Head phase: keeps small entries until the first blob that is not a manifest.
    fn head_entry<R: Read>(&mut self, name: &str, entry: &mut tar::Entry<R>) -> Result<HeadStep> {
        let size = entry.size();
        match name {
            "oci-layout" => {
                let raw = read_all(entry, size, 4096, "oci-layout")?;
                self.note_whole(name, &raw)?;
            }
            "index.json" => {
                let raw = read_all(entry, size, MAX_INDEX_SIZE, "index.json")?;
                if self.note_whole(name, &raw)? {
                    self.index_entries = Some(index::parse(&raw).map_err(|e| anyhow!("{e}"))?);
                }
            }
            "manifest.json" => self.docker_manifest = true,
            n => match hex_of(n) {
                Some(d) if size <= MAX_MANIFEST_SIZE => {
                    let bytes = read_all(entry, size, MAX_MANIFEST_SIZE, n)?;
                    self.note_whole(name, &bytes)?;
                    let probe = Descriptor::new("", d.clone(), size);
                    let is_manifest = manifest::parse(&probe, &bytes).is_ok();
                    self.small.insert(d, Bytes::from(bytes));
                    if !is_manifest {
                        return Ok(HeadStep::FirstBlob { read: true });
                    }
                }
                Some(_) => return Ok(HeadStep::FirstBlob { read: false }),
                None => {}
            },
        }
        Ok(HeadStep::More)
    }

    /// Hands what the head holds to the consumer and waits for the list of blobs it wants.
    fn hand_over_head(&mut self) -> ControlFlow<()> {
        let Some(entries) = self.index_entries.take() else {
            self.fail(anyhow!(
                "{P}: index.json does not come before the blobs; this tool can only stream archives it wrote (save the archive to a file and restore from the file)"
            ));
            return ControlFlow::Break(());
        };
        if let Some(tx) = self.head_tx.take() {
            let _ = tx.send(Ok(Head { entries, small: std::mem::take(&mut self.small) }));
        }
        match self.plan_rx.recv() {
            Ok(s) => {
                self.senders = Some(s);
                ControlFlow::Continue(())
            }
            Err(_) => ControlFlow::Break(()),
        }
    }

    /// Blob phase: hands this entry to whoever wants it and skips it otherwise. Small blobs read in
    /// the head phase are served from memory.
    fn blob_entry<R: Read>(&mut self, name: String, mut entry: tar::Entry<R>) -> ControlFlow<()> {
        if self.read_whole.contains_key(&name) || !self.passed.insert(name.clone()) {
            // A second copy: its first copy is what counts (and, if wanted, was verified); this one
            // must agree.
            let Some(expected) = self.read_whole.get(&name).cloned().or_else(|| hex_of(&name))
            else {
                return ControlFlow::Continue(());
            };
            match digest_of_entry(&mut entry) {
                Ok(got) if got == expected => return ControlFlow::Continue(()),
                Ok(_) => self.fail_blobs(&format!(
                    "{P}: entry {name:?} appears twice with different contents"
                )),
                Err(e) => self.fail_blobs(&format!("{P} is truncated or damaged: {e}")),
            }
            return ControlFlow::Break(());
        }
        let Some(d) = hex_of(&name) else { return ControlFlow::Continue(()) };
        let Some(tx) = self.senders.as_mut().and_then(|s| s.remove(&d)) else {
            return ControlFlow::Continue(());
        };
        let is_last = self.senders.as_ref().is_some_and(HashMap::is_empty);
        if is_last {
            self.held = Some((tx.clone(), None));
        }
        self.pass(&d, &tx, &mut entry, is_last)
    }

    /// Sends one blob's bytes to its consumer, holding back the last chunk of the last blob.
    fn pass<R: Read>(
        &mut self,
        d: &Digest,
        tx: &mpsc::Sender<Chunk>,
        entry: &mut tar::Entry<R>,
        is_last: bool,
    ) -> ControlFlow<()> {
        let mut left = entry.size();
        let mut buf = vec![0u8; CHUNK];
        while left > 0 {
            let want = (left as usize).min(CHUNK);
            match entry.read(&mut buf[..want]) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                        "{P} ended inside blob {d}: truncated archive"
                    ))));
                    self.fail_blobs(&format!(
                        "{P} ended before blob could be read: truncated archive"
                    ));
                    return ControlFlow::Break(());
                }
                Ok(n) => {
                    left -= n as u64;
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if left == 0 && is_last {
                        self.held = Some((tx.clone(), Some(chunk)));
                        break;
                    }
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        // The consumer gave up (the run is failing); read on so that others are not
                        // stuck.
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    self.fail_blobs(&format!("{P} could not be read"));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// The whole archive was read and agrees with itself: releases the held bytes, or answers the
    /// head's receiver when the archive held no blob at all.
    fn finish(mut self) {
        if let Some((tx, Some(chunk))) = self.held.take() {
            let _ = tx.blocking_send(Ok(chunk));
        }
        if let Some(tx) = self.head_tx.take() {
            match self.index_entries.take() {
                Some(entries) => {
                    let _ = tx.send(Ok(Head { entries, small: std::mem::take(&mut self.small) }));
                    // Everything was small: nothing more will be asked of the stream.
                    let _ = self.plan_rx.recv();
                }
                None if self.docker_manifest => {
                    let _ = tx.send(Err(anyhow!(
                        "{P} is a docker save archive (manifest.json, no index.json): its manifests are built from the whole archive, which a stream cannot give; save it to a file and restore from the file (--input saved.tar)"
                    )));
                }
                None => {
                    let _ = tx.send(Err(anyhow!(
                        "{P} is a tar with no index.json or manifest.json: not an OCI image layout or a docker save archive; give a backup made by oras backup, or an OCI image layout archive"
                    )));
                }
            }
            return;
        }
        for (d, tx) in self.senders.take().into_iter().flatten() {
            let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                "blob {d} is missing from the archive on {P}"
            ))));
        }
    }
}

impl StreamSource {
    /// Starts reading `input` (stdin) and returns once index.json and every manifest are in memory.
    pub async fn open<R: Read + Send + 'static>(input: R) -> Result<StreamSource> {
        let (head_tx, head_rx) = oneshot::channel();
        let (plan_tx, plan_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tar-stream".into())
            .spawn(move || reader_thread(input, head_tx, plan_rx))?;
        let head =
            head_rx.await.map_err(|_| anyhow!("the archive reader stopped unexpectedly"))??;
        // Manifests are what is reachable from index.json; other small entries are blobs kept in
        // memory.
        let roots: Vec<Descriptor> = head.entries.iter().map(|e| e.desc.clone()).collect();
        let graph = graph::walk(&roots, true, |d| head.small.get(&d.digest).cloned());
        if let Some((digest, (_, why))) = graph.broken.iter().next() {
            match why {
                Broken::Missing => bail!(
                    "manifest {digest} is not among the first entries of the stream; this tool can only stream archives it wrote (save the archive to a file and restore from the file)"
                ),
                Broken::TooLarge => bail!("manifest {digest} is over the {MAX_MANIFEST_SIZE} byte limit"),
                Broken::Damaged(e) => bail!("{e}"),
            }
        }
        let manifests: HashMap<Digest, Bytes> =
            graph.manifests.into_iter().map(|(d, (_, b))| (d, b)).collect();
        let mut referrers = graph.referrers;
        index::order_referrers(&head.entries, &mut referrers);
        let early = head.small.into_iter().filter(|(d, _)| !manifests.contains_key(d)).collect();
        Ok(StreamSource {
            entries: head.entries,
            manifests,
            referrers,
            plan_tx: Mutex::new(Some(plan_tx)),
            receivers: Mutex::new(HashMap::new()),
            early,
        })
    }

    /// The repositories the stream's index names.
    pub fn repositories(&self) -> Vec<Repo> {
        index::repositories(&self.entries)
    }
}

#[async_trait]
impl Source for StreamSource {
    async fn tags(&self, repo: &Repo) -> Result<Vec<String>> {
        Ok(index::tags_of(&self.entries, repo))
    }

    async fn untagged(&self, repo: &Repo) -> Result<Vec<Descriptor>> {
        Ok(index::untagged_of(&self.entries, repo))
    }

    async fn resolve(
        &self,
        repo: &Repo,
        reference: &str,
        _known: Option<&Descriptor>,
    ) -> Result<Resolved> {
        let desc = index::find(&self.entries, repo, reference).ok_or_else(|| {
            failure(ErrorKind::NotFound, format!("{reference} not found in the backup"))
        })?;
        Ok(Resolved { desc, bytes: None })
    }

    async fn fetch_manifest(&self, _repo: &Repo, desc: &Descriptor) -> Result<Bytes> {
        self.manifests.get(&desc.digest).cloned().ok_or_else(|| {
            failure(
                ErrorKind::NotFound,
                format!("manifest {} is missing from the archive", desc.digest),
            )
        })
    }

    async fn fetch_blob(&self, _repo: &Repo, desc: &Descriptor) -> Result<ByteStream> {
        if let Some(b) = self.early.get(&desc.digest).or_else(|| self.manifests.get(&desc.digest)) {
            let b = b.clone();
            return Ok(Box::pin(futures::stream::once(async move { Ok(b) })));
        }
        let rx = self
            .receivers
            .lock()
            .map_err(|_| anyhow!("internal lock poisoned"))?
            .remove(&desc.digest);
        let rx = rx.ok_or_else(|| {
            anyhow!("blob {} was already read from the stream and cannot be read again; restore from a file instead", desc.digest)
        })?;
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        })))
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
        Access::Stream
    }

    fn partial(&self, _repo: &Repo, desc: &Descriptor) -> Option<String> {
        index::partial(&self.entries, &desc.digest)
    }

    async fn expect(&self, digests: &[Digest]) -> Result<()> {
        let mut senders = HashMap::new();
        let mut receivers = self.receivers.lock().map_err(|_| anyhow!("internal lock poisoned"))?;
        for d in digests {
            if self.early.contains_key(d) || self.manifests.contains_key(d) {
                continue;
            }
            let (tx, rx) = mpsc::channel(4);
            senders.insert(d.clone(), tx);
            receivers.insert(d.clone(), rx);
        }
        let tx = self.plan_tx.lock().map_err(|_| anyhow!("internal lock poisoned"))?.take();
        if let Some(tx) = tx {
            tx.send(senders).map_err(|_| anyhow!("the archive reader stopped unexpectedly"))?;
        }
        Ok(())
    }
}
