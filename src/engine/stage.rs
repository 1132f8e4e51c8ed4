//! Restoring a backup while it is being checked. The check reads every blob at disk speed; the
//! uploads start at once beside it. Until the check is done, large blobs go into upload sessions
//! the registry keeps invisible and small ones wait; once the backup has proved intact, the held
//! sessions are committed and the rest is pushed the plain way (visible at once, so an interrupted
//! restore resumes). If the check finds damage, the held sessions are abandoned: nothing became
//! visible. A restore from a stream cannot be checked ahead: there every blob is held, hashed as it
//! passes, and all are committed once the whole stream has proved intact.

use super::transfer::{
    self, blob_problems, cannot_copy, copy_blob, damaged, place, retrying, BlobOutcome, Placed,
};
use super::{Job, JobId, Run};
use crate::manifest::Descriptor;
use crate::progress::{debug_line, Progress};
use crate::target::{kind_of, Access, ErrorKind, Staging};
use anyhow::Result;
use futures::stream::FuturesUnordered;
use futures::{stream, StreamExt, TryStreamExt};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Blobs from this size on are sent ahead while the check runs; smaller ones wait for it, as a held
/// upload takes one request more.
const STAGE_MIN: u64 = 1 << 20;

/// What the check of the backup has found so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Checked {
    Pending,
    Intact,
    Damaged,
}

/// What the restore paths of this module share: the run, and its bookkeeping of blobs.
#[derive(Clone, Copy)]
pub(super) struct Restore<'a> {
    pub(super) run: &'a Run<'a>,
    pub(super) placed: &'a Placed,
    pub(super) progress: &'a Progress,
}

/// The error of an upload given up because the check found damage (the damage is what gets
/// reported).
#[derive(Debug, thiserror::Error)]
#[error("upload abandoned: the backup is damaged")]
struct Abandoned;

/// Restores `blobs` (all missing from the destination) of a backup that can be read twice, checking
/// them beside the uploads; a damaged backup is refused with nothing made visible. `blobs` come
/// largest first (see [`super::blobs::largest_first`]): small ones wait for the check, and would
/// otherwise hold slots of the concurrency while a large one, which could go ahead held, queued
/// behind them.
pub(super) async fn restore_checked(
    r: Restore<'_>,
    blobs: Vec<(JobId, &Descriptor)>,
) -> Result<Vec<(JobId, BlobOutcome)>> {
    let (tx, rx) = watch::channel(Checked::Pending);
    let checking = async {
        let problems = blob_problems(r.run, &blobs).await;
        let _ = tx.send(if problems.is_empty() { Checked::Intact } else { Checked::Damaged });
        problems
    };
    let uploads = upload_checked(r, &blobs, rx);
    let (mut checking, mut uploads) = (Box::pin(checking), Box::pin(uploads));
    let (problems, uploaded) = tokio::select! {
        problems = &mut checking => (problems, uploads.await),
        uploaded = &mut uploads => match uploaded {
            // A failing destination ends the run without waiting for the rest of the check.
            Err(e) if !abandoned(&e) => return Err(e),
            uploaded => (checking.await, uploaded),
        },
    };
    damaged(problems)?;
    uploaded
}

/// Uploads `blobs` (all missing from the destination), `conc` at a time, each made visible only
/// once `checked` says the backup is intact; stops at the first failure of the destination. Damage
/// lets every upload wind down (held sessions are deleted) before it returns.
async fn upload_checked(
    r: Restore<'_>,
    blobs: &[(JobId, &Descriptor)],
    checked: watch::Receiver<Checked>,
) -> Result<Vec<(JobId, BlobOutcome)>> {
    // Each upload made as a slot frees (a loop, not a stream over a closure: see blobs::copy).
    let (mut running, mut next) = (FuturesUnordered::new(), blobs.iter());
    let mut done = Vec::new();
    let mut given_up = None;
    loop {
        while running.len() < r.run.conc {
            let Some(&(id, desc)) = next.next() else { break };
            running.push(upload_job(r, id, desc, checked.clone()));
        }
        match running.next().await {
            Some(Ok(o)) => done.push(o),
            Some(Err(e)) if abandoned(&e) => given_up = Some(e),
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    given_up.map_or(Ok(done), Err)
}

/// [`upload_one`] of a job's blob, with the job's id.
async fn upload_job(
    r: Restore<'_>,
    id: JobId,
    desc: &Descriptor,
    checked: watch::Receiver<Checked>,
) -> Result<(JobId, BlobOutcome)> {
    upload_one(r, r.run.job(id), desc, checked).await.map(|o| (id, o))
}

async fn upload_one(
    r: Restore<'_>,
    job: &Job,
    desc: &Descriptor,
    mut checked: watch::Receiver<Checked>,
) -> Result<BlobOutcome> {
    let staging = r
        .run
        .dst
        .staging()
        .filter(|_| desc.size >= STAGE_MIN && *checked.borrow() == Checked::Pending);
    if let Some(staging) = staging {
        let sent = tokio::select! {
            sent = stage(r, staging, job, desc) => sent?,
            _ = verdict(&mut checked, Checked::Damaged) => return Err(Abandoned.into()),
        };
        if let Some(token) = sent {
            if !verdict(&mut checked, Checked::Intact).await {
                staging.cancel(&job.dst, &token).await;
                return Err(Abandoned.into());
            }
            match commit(staging, job, desc, token, r.placed).await {
                Ok(done) => return Ok(done),
                // Its bytes were checked: sent again the plain way below.
                Err(e) => debug_line(format_args!(
                    "commit of {} failed, sending it again: {e:#}",
                    desc.digest
                )),
            }
        }
    }
    if !verdict(&mut checked, Checked::Intact).await {
        return Err(Abandoned.into());
    }
    copy_blob((r.run.src.clone(), r.run.dst.clone()), job, desc, r.placed.clone(), r.progress).await
}

/// Makes a held blob visible and records where it landed.
async fn commit(
    staging: &dyn Staging,
    job: &Job,
    desc: &Descriptor,
    token: String,
    placed: &Placed,
) -> Result<BlobOutcome> {
    staging.commit(&job.dst, desc, token).await?;
    place(placed, desc, job);
    Ok(BlobOutcome::Copied(desc.size))
}

/// Waits for the check to end; true if it ended as `want`. With `want` Damaged it never returns on
/// an intact backup (for racing against an upload).
async fn verdict(checked: &mut watch::Receiver<Checked>, want: Checked) -> bool {
    let end = match checked.wait_for(|c| *c != Checked::Pending).await {
        Ok(c) => *c,
        // The check was dropped: the run is ending anyway.
        Err(_) => Checked::Damaged,
    };
    if want == Checked::Damaged && end == Checked::Intact {
        std::future::pending::<()>().await;
    }
    end == want
}

/// Sends a blob into a held upload session, retrying like a plain upload; `None` when the
/// destination does not take this way of uploading (the plain upload is used then).
async fn stage(
    r: Restore<'_>,
    staging: &dyn Staging,
    job: &Job,
    desc: &Descriptor,
) -> Result<Option<String>> {
    let sent = retrying(true, |attempt| async move {
        let bar = r.progress.blob(desc.digest.as_str(), desc.size);
        // The check reads the same bytes; the destination checks the digest again at the commit.
        let data = transfer::counting(
            r.run.src.fetch_blob(&job.src, desc).await?,
            bar.counter(r.progress),
        );
        match staging.stage(&job.dst, desc, data).await {
            Ok(token) => {
                bar.done("Uploaded");
                Ok(Some(token))
            }
            Err(e) if kind_of(&e) == ErrorKind::Unsupported => {
                debug_line(format_args!(
                    "held upload of {} refused, sending it the plain way: {e:#}",
                    desc.digest
                ));
                Ok(None)
            }
            Err(e) => {
                debug_line(format_args!(
                    "held upload of {} failed (attempt {attempt}): {e:#}",
                    desc.digest
                ));
                Err(e)
            }
        }
    });
    sent.await.map_err(|e| cannot_copy(e, job, desc))
}

/// Whether an upload error only says it was given up for damage found by the check.
fn abandoned(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Abandoned>().is_some()
}

/// Restores the blobs of a stream, in its order: each is hashed as it passes into a held upload
/// session; once every one has passed intact, all are committed. Damage (or a failure) abandons
/// them all, so nothing becomes visible.
pub(super) async fn restore_stream_held(
    r: Restore<'_>,
    blobs: Vec<(JobId, Descriptor)>,
) -> Result<Vec<(JobId, BlobOutcome)>> {
    let Restore { run, placed, progress } = r;
    let staging = run
        .dst
        .staging()
        .ok_or_else(|| anyhow::anyhow!("internal: held uploads without a staging destination"))?;
    debug_assert_eq!(run.src.access(), Access::Stream);
    let mut results = stream::iter(blobs.into_iter().map(|(id, desc)| async move {
        let job = run.job(id);
        if desc.size == 0 && desc.digest != crate::digest::Digest::of(b"") {
            // No bytes pass to be hashed: the descriptor alone is wrong.
            anyhow::bail!("the backup is damaged, nothing was pushed: blob {} is empty but named as if it were not", desc.digest);
        }
        let bar = progress.blob(desc.digest.as_str(), desc.size);
        let problem = Arc::new(Mutex::new(None));
        let data = run.src.fetch_blob(&job.src, &desc).await?;
        let sent = staging.stage(&job.dst, &desc, transfer::verifying(data, &desc, bar.counter(progress), Some(problem.clone()))).await;
        let damage = problem.lock().ok().and_then(|mut p| p.take());
        match (sent, damage) {
            (Ok(token), None) => {
                bar.done("Uploaded");
                Ok((id, desc, token))
            }
            (sent, Some(why)) => {
                if let Ok(token) = sent {
                    staging.cancel(&job.dst, &token).await;
                }
                Err(anyhow::anyhow!("the backup is damaged, nothing was pushed: {why}"))
            }
            (Err(e), None) => {
                let hint = if kind_of(&e) == ErrorKind::Unsupported {
                    " (this registry does not take held uploads: restore from a file instead)"
                } else {
                    ""
                };
                Err(e.context(format!("cannot copy blob {} from {} to {}{hint}", desc.digest, job.src, job.dst)))
            }
        }
    }))
    .buffer_unordered(run.conc);
    let mut held = Vec::new();
    let mut failed = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(h) => held.push(h),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Uploads still under way are dropped with the stream; the run's way out deletes their sessions
    // (crate::interrupt), as far as the registry lets it.
    drop(results);
    if let Some(e) = failed {
        stream::iter(
            held.into_iter().map(|(id, _, token)| async move {
                staging.cancel(&run.job(id).dst, &token).await
            }),
        )
        .buffer_unordered(run.conc)
        .collect::<Vec<()>>()
        .await;
        return Err(e);
    }
    stream::iter(held.into_iter().map(|(id, desc, token)| async move {
        let job = run.job(id);
        commit(staging, job, &desc, token, placed)
            .await
            .map(|o| (id, o))
            .map_err(|e| cannot_copy(e, job, &desc))
    }))
    .buffer_unordered(run.conc)
    .try_collect()
    .await
}
