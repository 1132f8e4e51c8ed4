//! Moving one blob: mounted where the destination allows, otherwise streamed and verified as it
//! flows; reading one back to check it; and the one retry policy of blob transfers.

use super::{Job, JobId, Run};
use crate::digest::{Digest, Verifier};
use crate::manifest::Descriptor;
use crate::progress::{Counter, Progress};
use crate::target::{kind_of, Access, ByteStream, ErrorKind, Failure, Repo, Sink, Source};
use anyhow::{bail, Result};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts at one blob transfer. Requests are retried by the transport where they can be replayed;
/// a transfer is retried whole (read from the source again) only when it failed in a way that may
/// pass: transiently, or with bytes damaged on their way (the source's were checked, or are checked
/// again).
const ATTEMPTS: u32 = 3;

/// Whether a failed transfer may succeed when tried again.
fn passing(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Transient | ErrorKind::Integrity)
}

/// What became of one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlobOutcome {
    Copied(u64),
    Skipped(u64),
    Mounted(u64),
}

/// Where blobs already landed in this run (the first repository each landed in), for mounts.
pub(super) type Placed = Arc<Mutex<HashMap<Digest, Repo>>>;

/// Records that a blob landed in the job's destination (the first place it landed is kept).
pub(super) fn place(placed: &Placed, desc: &Descriptor, job: &Job) {
    if let Ok(mut p) = placed.lock() {
        p.entry(desc.digest.clone()).or_insert_with(|| job.dst.clone());
    }
}

/// Runs `transfer` until it succeeds, fails for good, or has had [`ATTEMPTS`]; only transient
/// failures are tried again, and only when `again` (the source can be read a second time).
pub(super) async fn retrying<T, F, Fut>(again: bool, mut transfer: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match transfer(attempt).await {
            Err(e) if again && attempt < ATTEMPTS && passing(kind_of(&e)) => {
                crate::progress::debug_line(format_args!(
                    "attempt {attempt} failed, trying again: {e:#}"
                ));
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// The context every failed blob transfer gets.
pub(super) fn cannot_copy(e: anyhow::Error, job: &Job, desc: &Descriptor) -> anyhow::Error {
    e.context(format!("cannot copy blob {} from {} to {}", desc.digest, job.src, job.dst))
}

/// Copies a blob the destination lacks: mounted from a repository it landed in earlier in the run
/// where the destination allows, otherwise streamed and verified.
pub(super) async fn copy_blob(
    (src, dst): (Arc<dyn Source>, Arc<dyn Sink>),
    job: &Job,
    desc: &Descriptor,
    placed: Placed,
    progress: &Progress,
) -> Result<BlobOutcome> {
    if let Some(mounting) = dst.mounting() {
        let from = placed.lock().ok().and_then(|p| p.get(&desc.digest).cloned());
        if let Some(from) =
            from.filter(|r| r.registry == job.dst.registry && r.repository != job.dst.repository)
        {
            if mounting.mount(&job.dst, desc, &from).await.unwrap_or(false) {
                progress.add(desc.size);
                return Ok(BlobOutcome::Mounted(desc.size));
            }
        }
    }
    // A backup's blobs were read and checked before the first push, and such a destination checks
    // again.
    let checked = src.access() == Access::Local && dst.traits().checks_digests;
    let (src, dst, placed) = (&src, &dst, &placed);
    retrying(src.access() != Access::Stream, |_| async move {
        let bar = progress.blob(desc.digest.as_str(), desc.size);
        let stream = src.fetch_blob(&job.src, desc).await?;
        let problem = Problem::default();
        let data = if checked {
            counting(stream, bar.counter(progress))
        } else {
            verifying(stream, desc, bar.counter(progress), Some(problem.clone()))
        };
        if let Err(e) = dst.push_blob(&job.dst, desc, data).await {
            let from_source = problem.lock().map(|p| p.is_some()).unwrap_or(false);
            return Err(if from_source { source_failure(e, src.access()) } else { e });
        }
        place(placed, desc, job);
        bar.done("Copied");
        Ok(BlobOutcome::Copied(desc.size))
    })
    .await
    .map_err(|e| cannot_copy(e, job, desc))
}

/// A transfer that failed because of what the source sent: over a network, the next read may be
/// whole (transient); a local copy stays as damaged as it is.
fn source_failure(e: anyhow::Error, access: Access) -> anyhow::Error {
    let kind = if access == Access::Remote { ErrorKind::Transient } else { ErrorKind::Other };
    anyhow::Error::new(Failure::new(kind, Box::<dyn std::error::Error + Send + Sync>::from(e)))
}

/// Counts bytes for progress, without hashing them again.
pub(super) fn counting(inner: ByteStream, bar: Counter) -> ByteStream {
    Box::pin(inner.map(move |chunk| {
        if let Ok(c) = &chunk {
            bar.inc(c.len() as u64);
        }
        chunk
    }))
}

/// Where a check passing over a stream leaves what it found wrong.
pub(super) type Problem = Arc<Mutex<Option<String>>>;

/// The state of a [`verifying`] stream.
struct Verifying {
    inner: ByteStream,
    v: Option<Verifier>,
    bar: Counter,
    problem: Option<Problem>,
    digest: Digest,
}

impl Verifying {
    /// Ends the stream with `err`, telling the problem slot `why`.
    fn fail(self, why: String, err: std::io::Error) -> Option<(std::io::Result<Bytes>, Verifying)> {
        if let Some(Ok(mut p)) = self.problem.as_ref().map(|p| p.lock()) {
            p.get_or_insert(why);
        }
        Some((Err(err), self))
    }

    /// The next chunk, checked; the digest is checked at the last declared byte.
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Verifying)> {
        let v = self.v.as_mut()?;
        let bad = |e: crate::digest::VerifyError| {
            (format!("blob {e}"), std::io::Error::other(e.to_string()))
        };
        match self.inner.next().await {
            Some(Ok(chunk)) => {
                let mut checked = v.update(&chunk);
                if checked.is_ok() && v.is_complete() {
                    checked = self.v.take().map_or(Ok(()), Verifier::finish);
                }
                if let Err(e) = checked {
                    self.v = None;
                    let (why, err) = bad(e);
                    return self.fail(why, err);
                }
                self.bar.inc(chunk.len() as u64);
                Some((Ok(chunk), self))
            }
            Some(Err(e)) => {
                self.v = None;
                let why = format!("blob {}: {e}", self.digest);
                self.fail(why, e)
            }
            None => match self.v.take()?.finish() {
                Ok(()) => None,
                Err(e) => {
                    let (why, err) = bad(e);
                    self.fail(why, err)
                }
            },
        }
    }
}

/// Wraps a stream so it fails as soon as size or digest disagree: the digest is checked at the last
/// declared byte, before that chunk is passed on, since an HTTP body of known length is not read to
/// its end. `problem`, when given, is told why in the words of the backup check.
pub(super) fn verifying(
    inner: ByteStream,
    desc: &Descriptor,
    bar: Counter,
    problem: Option<Problem>,
) -> ByteStream {
    let st = Verifying {
        inner,
        v: Some(Verifier::new(&desc.digest, desc.size)),
        bar,
        problem,
        digest: desc.digest.clone(),
    };
    Box::pin(stream::unfold(st, Verifying::next))
}

/// Why a blob read back from a source is not what its descriptor says.
pub enum BlobProblem {
    /// It could not be opened.
    Unreadable(anyhow::Error),
    /// Its size or digest is wrong.
    Bytes(crate::digest::VerifyError),
    /// Reading it failed part-way.
    Read(std::io::Error),
}

/// Reads a blob from `src` once, checking its size and digest as the bytes pass.
pub async fn check_blob(
    src: &dyn Source,
    repo: &Repo,
    desc: &Descriptor,
) -> std::result::Result<(), BlobProblem> {
    let mut s = src.fetch_blob(repo, desc).await.map_err(BlobProblem::Unreadable)?;
    let mut v = Verifier::new(&desc.digest, desc.size);
    while let Some(chunk) = s.next().await {
        v.update(&chunk.map_err(BlobProblem::Read)?).map_err(BlobProblem::Bytes)?;
    }
    v.finish().map_err(BlobProblem::Bytes)
}

/// Reads and checks each distinct blob once; returns every problem found, worded for the user.
pub(super) async fn blob_problems(run: &Run<'_>, blobs: &[(JobId, &Descriptor)]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    // Each check started as a slot frees, its repository and descriptor cloned only then (a loop,
    // not a stream over a closure: see blobs::copy).
    let (mut checking, mut next) = (FuturesUnordered::new(), blobs.iter());
    loop {
        while checking.len() < run.conc.max(2) {
            let Some(&(id, b)) = next.next() else { break };
            if seen.insert(&b.digest) {
                checking.push(problem_of(run.src.clone(), run.job(id).src.clone(), b.clone()));
            }
        }
        match checking.next().await {
            Some(found) => problems.extend(found),
            None => break,
        }
    }
    problems
}

/// What is wrong with one blob of the source, if anything.
async fn problem_of(src: Arc<dyn Source>, repo: Repo, desc: Descriptor) -> Option<String> {
    // A task of its own, like a transfer: the check hashes on all the runtime's threads.
    super::on_own_task(async move {
        check_blob(&*src, &repo, &desc).await.err().map(|e| match e {
            BlobProblem::Unreadable(e) => format!("{e:#}"),
            BlobProblem::Bytes(e) => format!("blob {e}"),
            BlobProblem::Read(e) => format!("blob {}: {e}", desc.digest),
        })
    })
    .await
    .unwrap_or_else(|e| Some(format!("internal: check task failed: {e}")))
}

/// Refuses a damaged backup, naming its first problem and counting the others.
pub(super) fn damaged(mut problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    // The same damage gives the same message, whichever check finished first.
    problems.sort();
    let more = if problems.len() > 1 {
        format!(" (and {} more problem(s))", problems.len() - 1)
    } else {
        String::new()
    };
    bail!("the backup is damaged, nothing was pushed: {}{more}", problems[0])
}
