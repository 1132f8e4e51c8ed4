//! The fourth phase, for sinks that hold whole graphs: what the destination already has, asked from
//! the top. A manifest that is there brings everything under it, so only roots and the referrers of
//! what is there are asked about.

use super::{JobId, Run};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor};
use crate::target::{Hints, Repo};
use anyhow::Result;
use futures::{stream, StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};

/// What the destination was found to hold before the transfer, per job.
#[derive(Default)]
pub(super) struct Known {
    pub(super) manifests: HashSet<(JobId, Digest)>,
    /// Roots the destination was asked about and does not have.
    pub(super) absent: HashSet<(JobId, Digest)>,
    /// Jobs whose destination repository had no tags: manifests are written there without asking,
    /// as a PUT of one that is there costs no more than the question and changes nothing. Blobs are
    /// still asked about, so that a restore resumed after an interruption sends none twice.
    pub(super) new_repos: HashSet<JobId>,
    pub(super) blobs: HashSet<(JobId, Digest)>,
    pub(super) tags: HashSet<(JobId, String)>,
}

/// One root to ask about: its tag (none when retagged or untagged) and descriptor.
struct Question {
    job: JobId,
    tag: Option<String>,
    desc: Descriptor,
}

/// Asks the destination about roots (tag, then digest) and about the referrers of what is there;
/// everything under a manifest that is there is there too.
pub(super) async fn already_there(run: &Run<'_>) -> Result<Known> {
    let mut known = Known::default();
    let hints = run.dst.hints();
    known.new_repos = new_repos(run, hints).await;
    // A repository without tags holds none of the roots worth asking about.
    let questions: Vec<Question> = run
        .each()
        .filter(|(id, _, _)| !known.new_repos.contains(id))
        .flat_map(|(job, j, g)| {
            g.roots.iter().map(move |r| Question {
                job,
                tag: if j.retag.is_some() { None } else { r.tag.clone() },
                desc: r.desc.clone(),
            })
        })
        .collect();
    let answers: Vec<(Question, bool, bool)> =
        stream::iter(questions.into_iter().map(|q| async move {
            let repo = &run.job(q.job).dst;
            let tagged = match &q.tag {
                Some(t) => hints.tag_points_at(repo, t, &q.desc.digest).await?,
                None => false,
            };
            let there = tagged || run.dst.has_manifest(repo, &q.desc).await?;
            Ok::<_, anyhow::Error>((q, tagged, there))
        }))
        .buffer_unordered(run.conc)
        .try_collect()
        .await?;
    for (q, tagged, there) in answers {
        if let (true, Some(t)) = (tagged, q.tag) {
            known.tags.insert((q.job, t));
        }
        if there {
            known.manifests.insert((q.job, q.desc.digest));
        } else {
            known.absent.insert((q.job, q.desc.digest));
        }
    }
    known_referrers(run, hints, &mut known).await?;
    Ok(known)
}

/// Counts what an earlier backup holds (`backup --base`) as there: it is neither written nor
/// planned.
pub(super) fn held_elsewhere(run: &Run<'_>, held: &HashSet<Digest>, known: &mut Known) {
    for (id, _, g) in run.each() {
        for d in g.blobs.keys().filter(|d| held.contains(*d)) {
            known.blobs.insert((id, d.clone()));
        }
        for d in g.manifests.iter().filter(|d| held.contains(*d)) {
            known.manifests.insert((id, d.clone()));
        }
    }
}

/// The jobs whose destination repository had no tags before the run.
async fn new_repos(run: &Run<'_>, hints: &dyn Hints) -> HashSet<JobId> {
    let mut asked: HashMap<&Repo, bool> = HashMap::new();
    let mut out = HashSet::new();
    for (id, job, _) in run.each() {
        if !asked.contains_key(&job.dst) {
            // Referrers to record make the destination list its tags anyway (tag schema): let that
            // list answer.
            let whole = run.each().any(|(_, j, g)| j.dst == job.dst && !g.referrers_of.is_empty());
            asked.insert(&job.dst, hints.is_new(&job.dst, whole).await);
        }
        if asked.get(&job.dst) == Some(&true) {
            out.insert(id);
        }
    }
    out
}

/// Adds the referrers of what is there that the destination lists already, round by round
/// (referrers of referrers in later rounds), and everything under them.
async fn known_referrers(run: &Run<'_>, hints: &dyn Hints, known: &mut Known) -> Result<()> {
    let mut asked: HashSet<(JobId, Digest)> = HashSet::new();
    loop {
        // Everything under a manifest that is there is there too, and may have referrers of its
        // own.
        close_under(known, run);
        let ask: Vec<(JobId, Digest)> = run
            .each()
            .flat_map(|(id, _, g)| g.referrers_of.keys().map(move |s| (id, s.clone())))
            .filter(|k| known.manifests.contains(k) && !asked.contains(k))
            .collect();
        if ask.is_empty() {
            return Ok(());
        }
        asked.extend(ask.iter().cloned());
        let listed: Vec<(JobId, Digest, Vec<Digest>)> =
            stream::iter(ask.into_iter().filter_map(|(id, s)| {
                let desc = run.nodes.get(&s)?.desc.clone();
                let ours: Vec<Descriptor> = run
                    .graph(id)
                    .referrers_of
                    .get(&s)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        run.nodes.get(r).map(|n| manifest::referrer_descriptor(&n.desc, &n.parsed))
                    })
                    .collect();
                Some(async move {
                    Ok::<_, anyhow::Error>((
                        id,
                        s,
                        hints.listed_referrers(&run.job(id).dst, &desc, &ours).await?,
                    ))
                })
            }))
            .buffer_unordered(run.conc)
            .try_collect()
            .await?;
        for (id, subject, there) in listed {
            for r in run.graph(id).referrers_of.get(&subject).into_iter().flatten() {
                if there.contains(r) {
                    known.manifests.insert((id, r.clone()));
                }
            }
        }
    }
}

/// Adds everything under the manifests known to be there (registries refuse a manifest whose
/// content is missing).
fn close_under(known: &mut Known, run: &Run<'_>) {
    let mut stack: Vec<(JobId, Digest)> = known.manifests.iter().cloned().collect();
    while let Some((id, d)) = stack.pop() {
        let Some(n) = run.nodes.get(&d) else { continue };
        for b in &n.parsed.blobs {
            known.blobs.insert((id, b.digest.clone()));
        }
        for c in &n.parsed.manifests {
            if known.manifests.insert((id, c.digest.clone())) {
                stack.push((id, c.digest.clone()));
            }
        }
    }
}
