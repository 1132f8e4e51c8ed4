//! Reading a backup from a non-seekable tar stream (stdin): manifests (which this tool writes first) are
//! held in memory; blobs are handed on as they pass, once, in stream order.

use super::index::{self, Entry, MAX_INDEX_SIZE};
use super::tar_index::check_entry;
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use crate::target::{failure, Access, ByteStream, ErrorKind, ReferrerListing, Repo, Resolved, Result, Source};
use anyhow::{anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::Read;
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

/// The reading thread: first the leading small entries (oci-layout, index.json, manifests), then blobs on demand.
fn reader_thread<R: Read>(input: R, head_tx: oneshot::Sender<Result<Head>>, plan_rx: std::sync::mpsc::Receiver<Wanted>) {
    let p = "standard input";
    // The same format checks as for a file: a compressed or foreign stream gets a clear answer.
    let mut input = input;
    let mut first = vec![0u8; 512];
    let mut n = 0;
    while n < first.len() {
        match input.read(&mut first[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = head_tx.send(Err(anyhow!("cannot read {p}: {e}")));
                return;
            }
        }
    }
    first.truncate(n);
    let empty = first.iter().all(|b| *b == 0);
    if let Err(e) = super::tar_index::sniff(std::path::Path::new(p), &first) {
        // An empty or all-zero stream is an empty tar: reported below as having no index.json.
        if !empty {
            let _ = head_tx.send(Err(e.into()));
            return;
        }
    }
    let mut archive = tar::Archive::new(std::io::Cursor::new(first).chain(input));
    let mut entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            let _ = head_tx.send(Err(anyhow!("{p} is not a tar archive: {e}")));
            return;
        }
    };
    let mut head_tx = Some(head_tx);
    let mut index_entries: Option<Vec<Entry>> = None;
    let mut small: HashMap<Digest, Bytes> = HashMap::new();
    let mut senders: Option<Wanted> = None;
    // Digest of every entry read whole (head phase), and names of entries passed later: a name that
    // comes twice must carry the same bytes, or the archive means different things to different tools.
    let mut read_whole: HashMap<String, Digest> = HashMap::new();
    let mut passed: HashSet<String> = HashSet::new();
    let mut head_bytes = 0u64;
    // The last chunk of the last wanted blob, held back until the end of the archive, so that damage
    // found after it (a conflicting duplicate, truncation) still fails that upload, before anything is
    // tagged. (An upload with a known length may end without waiting for the stream's end: the
    // last bytes themselves must wait.)
    let mut held: Option<(mpsc::Sender<Chunk>, Option<Bytes>)> = None;
    let fail_all = |senders: &mut Option<Wanted>, held: &mut Option<(mpsc::Sender<Chunk>, Option<Bytes>)>, msg: String| {
        if let Some((tx, _)) = held.take() {
            let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
        }
        if let Some(s) = senders.take() {
            for (_, tx) in s {
                let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
            }
        }
    };
    loop {
        let next = entries.next();
        let mut entry = match next {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                let msg = format!("{p} is truncated or damaged: {e}");
                if let Some(tx) = head_tx.take() {
                    let _ = tx.send(Err(anyhow!(msg)));
                } else {
                    fail_all(&mut senders, &mut held, msg);
                }
                return;
            }
        };
        let name = match check_entry(&entry, p) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                if let Some(tx) = head_tx.take() {
                    let _ = tx.send(Err(e.into()));
                } else {
                    fail_all(&mut senders, &mut held, e.to_string());
                }
                return;
            }
        };
        let size = entry.size();
        if head_tx.is_some() {
            // Still reading the head: keep small entries until the first blob that is not a manifest.
            let mut read_here = false;
            let mut once = |bytes: &[u8]| -> Result<bool> {
                read_here = true;
                head_bytes += bytes.len() as u64;
                if head_bytes > MAX_HEAD_BYTES {
                    bail!("{p} holds more than {MAX_HEAD_BYTES} bytes of manifests before its first blob; refusing to hold them in memory");
                }
                let digest = Digest::of(bytes);
                match read_whole.insert(name.clone(), digest.clone()) {
                    Some(prev) if prev != digest => bail!("{p}: entry {name:?} appears twice with different contents"),
                    Some(_) => Ok(false),
                    None => Ok(true),
                }
            };
            let res: Result<bool> = (|| match name.as_str() {
                "oci-layout" => {
                    let raw = read_all(&mut entry, size, 4096, "oci-layout")?;
                    once(&raw)?;
                    Ok(true)
                }
                "index.json" => {
                    let raw = read_all(&mut entry, size, MAX_INDEX_SIZE, "index.json")?;
                    if once(&raw)? {
                        index_entries = Some(index::parse(&raw).map_err(|e| anyhow!("{e}"))?);
                    }
                    Ok(true)
                }
                n => match hex_of(n) {
                    Some(d) if size <= MAX_MANIFEST_SIZE => {
                        let bytes = read_all(&mut entry, size, MAX_MANIFEST_SIZE, n)?;
                        once(&bytes)?;
                        let probe = Descriptor::new("", d.clone(), size);
                        let is_manifest = manifest::parse(&probe, &bytes).is_ok();
                        small.insert(d, Bytes::from(bytes));
                        Ok(is_manifest)
                    }
                    Some(_) => Ok(false),
                    None => Ok(true),
                },
            })();
            match res {
                Ok(true) => continue,
                Ok(false) => {
                    // The first blob: hand over what we know and wait for the list of blobs wanted.
                    let Some(entries_found) = index_entries.take() else {
                        if let Some(tx) = head_tx.take() {
                            let _ = tx.send(Err(anyhow!(
                                "{p}: index.json does not come before the blobs; this tool can only stream archives it wrote (save the archive to a file and restore from the file)"
                            )));
                        }
                        return;
                    };
                    if let Some(tx) = head_tx.take() {
                        let _ = tx.send(Ok(Head { entries: entries_found, small: std::mem::take(&mut small) }));
                    }
                    match plan_rx.recv() {
                        Ok(s) => senders = Some(s),
                        Err(_) => return,
                    }
                    if read_here {
                        // A small blob read whole above: it is served from memory.
                        continue;
                    }
                }
                Err(e) => {
                    if let Some(tx) = head_tx.take() {
                        let _ = tx.send(Err(e));
                    }
                    return;
                }
            }
        }
        // Blob phase: hand this entry to whoever wants it; skip it otherwise. Small blobs read in the
        // head phase were already served from memory.
        if read_whole.contains_key(&name) || !passed.insert(name.clone()) {
            // A second copy: its first copy was what counted (and, if wanted, was verified); this one must agree.
            let expected = read_whole.get(&name).cloned().or_else(|| hex_of(&name));
            if let Some(expected) = expected {
                match digest_of_entry(&mut entry) {
                    Ok(got) if got == expected => continue,
                    Ok(_) => fail_all(&mut senders, &mut held, format!("{p}: entry {name:?} appears twice with different contents")),
                    Err(e) => fail_all(&mut senders, &mut held, format!("{p} is truncated or damaged: {e}")),
                }
                return;
            }
            continue;
        }
        let Some(d) = hex_of(&name) else { continue };
        let tx = senders.as_mut().and_then(|s| s.remove(&d));
        let Some(tx) = tx else { continue };
        let is_last = senders.as_ref().is_some_and(|s| s.is_empty());
        if is_last {
            held = Some((tx.clone(), None));
        }
        let mut left = size;
        let mut buf = vec![0u8; CHUNK];
        while left > 0 {
            let want = (left as usize).min(CHUNK);
            match entry.read(&mut buf[..want]) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(format!("{p} ended inside blob {d}: truncated archive"))));
                    fail_all(&mut senders, &mut held, format!("{p} ended before blob could be read: truncated archive"));
                    return;
                }
                Ok(n) => {
                    left -= n as u64;
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if left == 0 && is_last {
                        held = Some((tx.clone(), Some(chunk)));
                        break;
                    }
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        // The consumer gave up (the run is failing); keep draining so others are not stuck.
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    fail_all(&mut senders, &mut held, format!("{p} could not be read"));
                    return;
                }
            }
        }
    }
    // The whole archive was read and agreed with itself: release the held bytes.
    if let Some((tx, Some(chunk))) = held.take() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    if let Some(tx) = head_tx.take() {
        match index_entries {
            Some(entries) => {
                let _ = tx.send(Ok(Head { entries, small }));
                // Everything was small: nothing more will be asked of the stream.
                let _ = plan_rx.recv();
            }
            None => {
                let _ = tx.send(Err(anyhow!("{p} is not an OCI layout archive: it has no index.json")));
            }
        }
        return;
    }
    if let Some(s) = senders.take() {
        for (d, tx) in s {
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("blob {d} is missing from the archive on {p}"))));
        }
    }
}

impl StreamSource {
    /// Starts reading `input` (stdin) and returns once index.json and every manifest are in memory.
    pub async fn open<R: Read + Send + 'static>(input: R) -> Result<StreamSource> {
        let (head_tx, head_rx) = oneshot::channel();
        let (plan_tx, plan_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("tar-stream".into()).spawn(move || reader_thread(input, head_tx, plan_rx))?;
        let head = head_rx.await.map_err(|_| anyhow!("the archive reader stopped unexpectedly"))??;
        // Manifests are what is reachable from index.json; other small entries are blobs kept in memory.
        let mut manifests = HashMap::new();
        let mut referrers: HashMap<Digest, Vec<Descriptor>> = HashMap::new();
        let mut seen = HashSet::new();
        let mut queue: Vec<Descriptor> = head.entries.iter().map(|e| e.desc.clone()).collect();
        while let Some(d) = queue.pop() {
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            let Some(bytes) = head.small.get(&d.digest) else {
                bail!(
                    "manifest {} is not among the first entries of the stream; this tool can only stream archives it wrote (save the archive to a file and restore from the file)",
                    d.digest
                );
            };
            let parsed = manifest::parse(&d, bytes)?;
            if let Some(s) = &parsed.subject {
                referrers.entry(s.digest.clone()).or_default().push(manifest::referrer_descriptor(&d, &parsed));
            }
            queue.extend(parsed.manifests.iter().cloned());
            manifests.insert(d.digest.clone(), bytes.clone());
        }
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

    async fn resolve(&self, repo: &Repo, reference: &str, _known: Option<&Descriptor>) -> Result<Resolved> {
        let desc = index::find(&self.entries, repo, reference)
            .ok_or_else(|| failure(ErrorKind::NotFound, format!("{reference} not found in the backup")))?;
        Ok(Resolved { desc, bytes: None })
    }

    async fn fetch_manifest(&self, _repo: &Repo, desc: &Descriptor) -> Result<Bytes> {
        self.manifests.get(&desc.digest).cloned().ok_or_else(|| anyhow!("manifest {} is missing from the archive", desc.digest))
    }

    async fn fetch_blob(&self, _repo: &Repo, desc: &Descriptor) -> Result<ByteStream> {
        if let Some(b) = self.early.get(&desc.digest).or_else(|| self.manifests.get(&desc.digest)) {
            let b = b.clone();
            return Ok(Box::pin(futures::stream::once(async move { Ok(b) })));
        }
        let rx = self.receivers.lock().map_err(|_| anyhow!("internal lock poisoned"))?.remove(&desc.digest);
        let rx = rx.ok_or_else(|| {
            anyhow!("blob {} was already read from the stream and cannot be read again; restore from a file instead", desc.digest)
        })?;
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })))
    }

    async fn predecessors(&self, _repo: &Repo, desc: &Descriptor, _known: Option<&ReferrerListing>) -> Result<ReferrerListing> {
        Ok(ReferrerListing { referrers: self.referrers.get(&desc.digest).cloned().unwrap_or_default(), index: None })
    }

    fn access(&self) -> Access {
        Access::Stream
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
