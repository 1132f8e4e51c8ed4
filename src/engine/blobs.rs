//! The fifth phase: every blob the destination lacks, once per dedupe scope, largest first (or in
//! digest order between streams). From a backup (a local or streamed source) the destination is
//! asked first, then the backup is checked before anything becomes visible (see [`super::stage`]).

use super::present::Known;
use super::stage::{self, Restore};
use super::transfer::{self, copy_blob, place, BlobOutcome, Placed};
use super::{on_own_task, JobId, Run};
use crate::manifest::Descriptor;
use crate::progress::Progress;
use crate::target::Access;
use anyhow::{anyhow, Result};
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::StreamExt;
use std::collections::HashSet;

/// A blob to copy into a job's destination (its descriptor borrowed from the job's graph: a run
/// of 20,000 blobs would otherwise hold a copy of each in every list the phase builds).
#[derive(Clone, Copy, Debug)]
pub(super) struct Task<'a> {
    pub(super) job: JobId,
    pub(super) desc: &'a Descriptor,
    /// The destination is known not to have it (no need to ask again).
    pub(super) missing: bool,
}

/// Copies the blobs of every job; returns what became of each.
pub(super) async fn copy(
    run: &Run<'_>,
    known: &Known,
    progress: &Progress,
) -> Result<Vec<(JobId, BlobOutcome)>> {
    let mut outcomes = Vec::new();
    let mut tasks = Vec::new();
    // Scopes named once per job, not once per blob.
    let scopes: Vec<String> = run.each().map(|(_, job, _)| run.dst.scope(&job.dst)).collect();
    let mut scoped = HashSet::new();
    for (id, _, g) in run.each() {
        for b in g.blobs.values() {
            if !scoped.insert((scopes[id.0].as_str(), &b.digest)) {
                continue;
            }
            if known.blobs.contains(&(id, b.digest.clone())) {
                outcomes.push((id, BlobOutcome::Skipped(b.size)));
                progress.add(b.size);
            } else {
                tasks.push(Task { job: id, desc: b, missing: false });
            }
        }
    }
    if run.src.access() == Access::Stream || run.dst.traits().in_order {
        // Streams pass once, in digest order: tasks start in that order so each waits only on
        // earlier ones.
        tasks.sort_by(|a, b| a.desc.digest.cmp(&b.desc.digest));
    } else {
        largest_first(&mut tasks);
    }
    let placed = Placed::default();
    let passes = if run.src.access() == Access::Remote {
        vec![tasks]
    } else {
        from_backup(run, tasks, &placed, progress, &mut outcomes).await?
    };
    for pass in passes {
        // Each copy started as a slot frees (see `from_backup`).
        let (mut copying, mut next) = (FuturesUnordered::new(), pass.into_iter());
        loop {
            while copying.len() < run.conc {
                let Some(t) = next.next() else { break };
                copying.push(copy_one(run, t, &placed, progress));
            }
            match copying.next().await {
                Some(done) => outcomes.push(done?),
                None => break,
            }
        }
    }
    Ok(outcomes)
}

/// Copies one blob unless the destination turns out to have it.
async fn copy_one(
    run: &Run<'_>,
    t: Task<'_>,
    placed: &Placed,
    progress: &Progress,
) -> Result<(JobId, BlobOutcome)> {
    let id = t.job;
    copy_task(run, t, placed, progress).await.map(|o| (id, o))
}

async fn copy_task(
    run: &Run<'_>,
    t: Task<'_>,
    placed: &Placed,
    progress: &Progress,
) -> Result<BlobOutcome> {
    let job = run.job(t.job);
    if !t.missing && run.dst.has_blob(&job.dst, t.desc).await? {
        progress.add(t.desc.size);
        place(placed, t.desc, job);
        return Ok(BlobOutcome::Skipped(t.desc.size));
    }
    if run.opts.dry_run {
        return Ok(BlobOutcome::Copied(t.desc.size));
    }
    // A task of its own: concurrent transfers hash (and write) on all the runtime's threads.
    let (src, dst, job, placed, progress) =
        (run.src.clone(), run.dst.clone(), job.clone(), placed.clone(), progress.clone());
    let desc = t.desc.clone();
    on_own_task(async move { copy_blob((src, dst), &job, &desc, placed, &progress).await })
        .await
        .map_err(|e| anyhow!("internal: blob task failed: {e}"))?
}

/// The blobs of a backup (a layout or a stream): the destination is asked about each first, as a
/// backup is checked (or a stream announced) before anything is written. Returns the passes left to
/// copy the plain way: first each distinct blob, then the same blobs for further repositories
/// (mounted from the first where the destination can).
async fn from_backup<'a>(
    run: &Run<'_>,
    tasks: Vec<Task<'a>>,
    placed: &Placed,
    progress: &Progress,
    outcomes: &mut Vec<(JobId, BlobOutcome)>,
) -> Result<Vec<Vec<Task<'a>>>> {
    // Each question made as a slot frees: made all at once, the futures of thousands of blobs
    // would be held until the last is answered. (A loop, not a stream over a closure: one
    // borrowing the run makes the command's future unprovably `Send`.)
    let mut present = Vec::with_capacity(tasks.len());
    {
        let (mut asking, mut next) = (FuturesOrdered::new(), tasks.iter());
        loop {
            while asking.len() < run.conc {
                let Some(t) = next.next() else { break };
                asking.push_back(run.dst.has_blob(&run.job(t.job).dst, t.desc));
            }
            match asking.next().await {
                Some(answer) => present.push(answer?),
                None => break,
            }
        }
    }
    let (mut first, mut again, mut there) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for (t, present) in tasks.into_iter().zip(present) {
        if present {
            outcomes.push((t.job, BlobOutcome::Skipped(t.desc.size)));
            progress.add(t.desc.size);
            there.push((t.job, t.desc));
        } else if seen.insert(t.desc.digest.clone()) {
            first.push(Task { missing: true, ..t });
        } else {
            again.push(Task { missing: true, ..t });
        }
    }
    let restore = Restore { run, placed, progress };
    let local = run.src.access() == Access::Local;
    if local && run.opts.dry_run {
        // A dry run reads and checks the whole backup.
        let check: Vec<(JobId, &Descriptor)> =
            first.iter().chain(&again).map(|t| (t.job, t.desc)).chain(there).collect();
        transfer::damaged(transfer::blob_problems(run, &check).await)?;
    } else if local {
        // Everything that will be pushed is checked before anything becomes visible; the uploads
        // start beside the check and are held back until it is done.
        let blobs = std::mem::take(&mut first).into_iter().map(|t| (t.job, t.desc)).collect();
        outcomes.extend(stage::restore_checked(restore, blobs).await?);
    } else if !run.opts.dry_run {
        run.src.expect(&first.iter().map(|t| t.desc.digest.clone()).collect::<Vec<_>>()).await?;
        if run.dst.staging().is_some() {
            // A stream cannot be checked before it is read: every blob is held until all have
            // passed.
            let blobs =
                std::mem::take(&mut first).into_iter().map(|t| (t.job, t.desc.clone())).collect();
            outcomes.extend(stage::restore_stream_held(restore, blobs).await?);
        }
    }
    Ok(vec![first, again])
}

/// Orders transfers largest first: a large blob started last would run alone at the end, and
/// (restore of a backup) small blobs waiting for the check would hold slots a large one could use.
/// Ties go by digest, so runs are repeatable.
pub(super) fn largest_first(tasks: &mut [Task<'_>]) {
    tasks.sort_by(|a, b| {
        b.desc.size.cmp(&a.desc.size).then_with(|| a.desc.digest.cmp(&b.desc.digest))
    });
}
