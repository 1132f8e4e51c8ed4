//! Checked uploads of a backup's large blobs: each is hashed while it is sent into an upload session
//! the registry keeps invisible, and all are committed only once every one has proved intact. A
//! damaged backup still pushes nothing, while the check and the transfer share one read of the file.

use super::{BlobOutcome, Job, Placed};
use crate::digest::Verifier;
use crate::manifest::Descriptor;
use crate::progress::{Counter, Progress};
use crate::target::{ByteStream, Sink, Source};
use futures::{stream, StreamExt};
use std::sync::{Arc, Mutex};

/// Blobs from this size on are checked as they are sent; smaller ones are checked in a pass of their
/// own, where hashing them costs less than the extra request a staged upload takes.
pub(super) const STAGE_MIN: u64 = 1 << 20;

/// How staging one blob ended.
pub(super) enum Staged {
    /// Sent and intact: (job, blob, upload token).
    Sent(usize, Descriptor, String),
    /// The backup's copy is damaged: the problem, worded for the user.
    Damaged(String),
    /// The destination refused this way of uploading: pushed the plain way after a check of its own.
    Unsupported(usize, Descriptor),
    /// The destination failed, after retries.
    Failed(anyhow::Error),
}

/// Stages every blob of `blobs`, `conc` at a time, carrying on past damage so all problems are reported.
pub(super) async fn stage_all(
    (src, dst): (&Arc<dyn Source>, &Arc<dyn Sink>),
    jobs: &[Job],
    blobs: Vec<(usize, Descriptor)>,
    progress: &Progress,
    conc: usize,
) -> Vec<Staged> {
    stream::iter(blobs.into_iter().map(|(i, desc)| async move { stage_one((src, dst), i, &jobs[i], desc, progress).await }))
        .buffer_unordered(conc)
        .collect()
        .await
}

async fn stage_one((src, dst): (&Arc<dyn Source>, &Arc<dyn Sink>), i: usize, job: &Job, desc: Descriptor, progress: &Progress) -> Staged {
    let mut attempt = 0u64;
    loop {
        let bar = progress.blob(desc.digest.as_str(), desc.size);
        let data = match src.fetch_blob(&job.src, &desc).await {
            Ok(s) => s,
            Err(e) => return Staged::Damaged(format!("{e:#}")),
        };
        let problem = Arc::new(Mutex::new(None));
        let checked = checking(data, &desc, bar.counter(progress), problem.clone());
        let sent = dst.stage_blob(&job.dst, &desc, checked).await;
        let damage = problem.lock().ok().and_then(|mut p| p.take());
        match (sent, damage) {
            (Ok(token), None) => {
                bar.done("Uploaded");
                return Staged::Sent(i, desc, token);
            }
            (sent, Some(why)) => {
                if let Ok(token) = sent {
                    dst.cancel_blob(&job.dst, &token).await;
                }
                return Staged::Damaged(why);
            }
            (Err(e), None) => {
                drop(bar);
                crate::registry::transport::debug_line(&format!("staging {} failed (attempt {}): {e:#}", desc.digest, attempt + 1));
                if refused(&e) {
                    return Staged::Unsupported(i, desc);
                }
                if attempt == 2 {
                    return Staged::Failed(e.context(format!("cannot copy blob {} from {} to {}", desc.digest, job.src, job.dst)));
                }
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(300 * attempt)).await;
            }
        }
    }
}

/// Whether the registry answered that it does not take a blob sent as one PATCH (a client error that is
/// not about credentials, a missing repository, or load): the plain upload may still work.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::registry::error::RegistryError>()
        .and_then(|r| r.status)
        .is_some_and(|s| (400..500).contains(&s) && ![401, 403, 404, 408, 429].contains(&s))
}

/// Commits staged uploads; returns the outcomes of those committed and the blobs whose commit failed
/// (their bytes were checked, so they can be pushed the plain way).
pub(super) async fn commit_all(
    dst: &Arc<dyn Sink>,
    jobs: &[Job],
    sent: Vec<(usize, Descriptor, String)>,
    placed: &Placed,
    conc: usize,
) -> (Vec<BlobOutcome>, Vec<(usize, Descriptor)>) {
    let results: Vec<(usize, Descriptor, bool)> = stream::iter(sent.into_iter().map(|(i, desc, token)| async move {
        let job = &jobs[i];
        let ok = match dst.commit_blob(&job.dst, &desc, token).await {
            Ok(()) => true,
            Err(e) => {
                crate::registry::transport::debug_line(&format!("commit of {} failed, sending it again: {e:#}", desc.digest));
                false
            }
        };
        if ok {
            if let Ok(mut p) = placed.lock() {
                p.entry(desc.digest.clone()).or_insert_with(|| job.dst.clone());
            }
        }
        (i, desc, ok)
    }))
    .buffer_unordered(conc)
    .collect()
    .await;
    let mut done = Vec::new();
    let mut again = Vec::new();
    for (i, desc, ok) in results {
        if ok {
            done.push(BlobOutcome::Copied(desc.size));
        } else {
            again.push((i, desc));
        }
    }
    (done, again)
}

/// Abandons staged uploads (a damaged backup: nothing may become visible).
pub(super) async fn cancel_all(dst: &Arc<dyn Sink>, jobs: &[Job], sent: &[(usize, Descriptor, String)], conc: usize) {
    stream::iter(sent.iter().map(|(i, _, token)| dst.cancel_blob(&jobs[*i].dst, token))).buffer_unordered(conc).collect::<Vec<()>>().await;
}

/// Passes a backup's blob through, hashing it; on damage the stream fails (so the upload is cut off) and
/// `problem` says why, worded like the pre-push check's messages.
fn checking(inner: ByteStream, desc: &Descriptor, bar: Counter, problem: Arc<Mutex<Option<String>>>) -> ByteStream {
    struct St {
        inner: ByteStream,
        v: Option<Verifier>,
        bar: Counter,
        problem: Arc<Mutex<Option<String>>>,
        digest: String,
    }
    fn fail(st: St, why: String) -> Option<(std::io::Result<bytes::Bytes>, St)> {
        if let Ok(mut p) = st.problem.lock() {
            p.get_or_insert(why.clone());
        }
        Some((Err(std::io::Error::other(why)), st))
    }
    let st = St { inner, v: Some(Verifier::new(&desc.digest, desc.size)), bar, problem, digest: desc.digest.to_string() };
    Box::pin(stream::unfold(st, |mut st| async move {
        let v = st.v.as_mut()?;
        match st.inner.next().await {
            Some(Ok(chunk)) => {
                if let Err(e) = v.update(&chunk) {
                    st.v = None;
                    return fail(st, format!("blob {e}"));
                }
                if v.is_complete() {
                    // Checked before the last bytes go out: an HTTP body of known length is not read to its end.
                    if let Some(Err(e)) = st.v.take().map(Verifier::finish) {
                        return fail(st, format!("blob {e}"));
                    }
                }
                st.bar.inc(chunk.len() as u64);
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                st.v = None;
                let why = format!("blob {}: {e}", st.digest);
                fail(st, why)
            }
            None => {
                let v = st.v.take()?;
                match v.finish() {
                    Ok(()) => None,
                    Err(e) => fail(st, format!("blob {e}")),
                }
            }
        }
    }))
}
