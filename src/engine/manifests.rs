//! The last phases: manifests, children before parents and referrers after their subjects, level by
//! level; then the tags (and untagged roots) that point at them.

use super::present::Known;
use super::report::Report;
use super::{JobGraph, JobId, Node, Run};
use crate::digest::Digest;
use anyhow::{anyhow, Context, Result};
use futures::stream::FuturesUnordered;
use futures::{stream, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Tags already written with their manifest (a destination that creates a manifest pushed by tag).
pub(super) type TaggedEarly = HashSet<(JobId, String)>;

/// One manifest to write.
struct Write<'r> {
    job: JobId,
    node: Arc<Node>,
    /// The tag to push it by, when the destination creates manifests by tag and it is a tagged
    /// root.
    by_tag: Option<String>,
    /// The destination is known not to have it.
    absent: bool,
    graph: &'r JobGraph,
}

/// What writing one manifest did.
struct Written {
    copied: bool,
    size: u64,
    tagged: Option<(JobId, String)>,
    job: JobId,
}

/// Writes every manifest the destination lacks, children first; returns the tags written on the
/// way.
pub(super) async fn copy(run: &Run<'_>, known: &Known, report: &mut Report) -> Result<TaggedEarly> {
    let mut levels: BTreeMap<usize, Vec<(JobId, Digest)>> = BTreeMap::new();
    let mut scoped = HashSet::new();
    for (id, job, g) in run.each() {
        let mut memo = HashMap::new();
        for d in &g.manifests {
            let lvl = level(d, &run.nodes, g, &mut memo, 0);
            if known.manifests.contains(&(id, d.clone())) {
                report.manifest(id, false, run.nodes.get(d).map_or(0, |n| n.desc.size));
                continue;
            }
            if scoped.insert((run.dst.scope(&job.dst), d.clone())) {
                levels.entry(lvl).or_default().push((id, d.clone()));
            }
        }
    }
    // Sinks that list referrers themselves keep the source's order.
    for (_, job, g) in run.each() {
        for (subject, referrers) in &g.referrers_of {
            run.dst.referrers_order(&job.dst, subject, referrers);
        }
    }
    let first_tags = first_tags(run);
    let mut tagged_early = TaggedEarly::new();
    for (_, batch) in levels {
        let writes = batch.into_iter().map(|(id, d)| {
            let node = run
                .nodes
                .get(&d)
                .cloned()
                .ok_or_else(|| anyhow!("internal: manifest {d} missing from graph"))?;
            let by_tag = first_tags[id.0].get(&d).cloned();
            let absent = known.absent.contains(&(id, d)) || known.new_repos.contains(&id);
            Ok(Write { job: id, node, by_tag, absent, graph: run.graph(id) })
        });
        let writes: Vec<Write> = writes.collect::<Result<_>>()?;
        // Each write started as a slot frees: made all at once, thousands of futures would be
        // held for the whole level. (A loop, not a stream over a closure: one borrowing `run`
        // makes the command's future unprovably `Send`.)
        let (mut writing, mut next) = (FuturesUnordered::new(), writes.into_iter());
        loop {
            while writing.len() < run.conc {
                let Some(w) = next.next() else { break };
                writing.push(write(run, w));
            }
            let Some(w) = writing.next().await else { break };
            let w = w?;
            report.manifest(w.job, w.copied, w.size);
            tagged_early.extend(w.tagged);
        }
    }
    Ok(tagged_early)
}

/// For each job, the first tag of each tagged root, when the destination creates a manifest pushed
/// by tag: such a root goes out once, by that tag.
fn first_tags(run: &Run<'_>) -> Vec<HashMap<Digest, String>> {
    let by_tag = run.dst.traits().creates_by_tag;
    run.each()
        .map(|(_, job, g)| {
            let mut m = HashMap::new();
            if job.retag.is_none() && by_tag {
                for root in &g.roots {
                    if let Some(t) = &root.tag {
                        m.entry(root.desc.digest.clone()).or_insert_with(|| t.clone());
                    }
                }
            }
            m
        })
        .collect()
}

/// Writes one manifest unless the destination has it.
async fn write(run: &Run<'_>, w: Write<'_>) -> Result<Written> {
    let job = run.job(w.job);
    let node = &w.node;
    let is_ref = w.graph.referrer_nodes.contains(&node.desc.digest);
    // A manifest this run read from the destination is there.
    let exists = !w.absent && (node.stored || run.dst.has_manifest(&job.dst, &node.desc).await?);
    let done = Written { copied: !exists, size: node.desc.size, tagged: None, job: w.job };
    // A destination may hold a referrer without listing it: pushing it again records it there.
    if run.opts.dry_run || (exists && (!is_ref || !run.dst.traits().relists_referrers)) {
        return Ok(done);
    }
    let subject = if is_ref { node.parsed.subject.as_ref() } else { None };
    match (&w.by_tag, exists, subject) {
        (Some(t), false, None) => {
            let pushed = run.dst.tag(&job.dst, &node.desc, node.bytes.clone(), Some(t)).await;
            pushed.map_err(|e| partial_refused(e, w.graph, node)).with_context(|| {
                format!("cannot write manifest {} as {}:{t}", node.desc.digest, job.dst)
            })?;
            Ok(Written { tagged: Some((w.job, t.clone())), ..done })
        }
        (_, true, None) => Ok(done),
        _ => {
            let pushed =
                run.dst.push_manifest(&job.dst, &node.desc, node.bytes.clone(), subject).await;
            pushed.map_err(|e| partial_refused(e, w.graph, node)).with_context(|| {
                format!("cannot write manifest {} to {}", node.desc.digest, job.dst)
            })?;
            Ok(done)
        }
    }
}

/// Says why a destination may refuse an index copied partially (`--sparse-index`): registries may
/// insist on holding every manifest an index names.
fn partial_refused(e: anyhow::Error, g: &JobGraph, node: &Node) -> anyhow::Error {
    if !g.partial.contains(&node.desc.digest) {
        return e;
    }
    e.context(format!(
        "index {} is copied partially (--sparse-index): the destination may refuse an index whose other platforms' manifests it does not hold; copy one platform without --sparse-index instead",
        node.desc.digest
    ))
}

/// Points the tags (under their new names when retagged) at their roots and records untagged roots.
pub(super) async fn tag(run: &Run<'_>, known: &Known, tagged_early: &TaggedEarly) -> Result<()> {
    let mut tags = Vec::new();
    for (id, job, g) in run.each() {
        for root in &g.roots {
            if root.tag.as_ref().is_some_and(|t| {
                known.tags.contains(&(id, t.clone())) || tagged_early.contains(&(id, t.clone()))
            }) {
                continue;
            }
            let bytes =
                run.nodes.get(&root.desc.digest).map(|n| n.bytes.clone()).unwrap_or_default();
            match &job.retag {
                Some(new) => tags
                    .extend(new.iter().map(|t| (job, &root.desc, bytes.clone(), Some(t.as_str())))),
                None => tags.push((job, &root.desc, bytes, root.tag.as_deref())),
            }
        }
    }
    let writes: Vec<_> = tags
        .into_iter()
        .map(|(job, desc, bytes, tag)| async move {
            run.dst.tag(&job.dst, desc, bytes, tag).await.with_context(|| {
                format!("cannot tag {} in {}", tag.unwrap_or(desc.digest.as_str()), job.dst)
            })
        })
        .collect();
    stream::iter(writes).buffer_unordered(run.conc).try_collect::<Vec<()>>().await?;
    Ok(())
}

/// A manifest's level: 0 for one without manifests under it, else one more than its highest child
/// (and, for a referrer, than its subject), so that writing level by level writes children first.
fn level(
    d: &Digest,
    nodes: &HashMap<Digest, Arc<Node>>,
    g: &JobGraph,
    memo: &mut HashMap<Digest, usize>,
    depth: usize,
) -> usize {
    if let Some(l) = memo.get(d) {
        return *l;
    }
    if depth > 10_000 {
        return 0;
    }
    let Some(n) = nodes.get(d) else { return 0 };
    let mut l = 0;
    for c in &n.parsed.manifests {
        if g.manifests.contains(&c.digest) {
            l = l.max(level(&c.digest, nodes, g, memo, depth + 1) + 1);
        }
    }
    if g.referrer_nodes.contains(d) {
        if let Some(s) = &n.parsed.subject {
            if g.manifests.contains(&s.digest) && &s.digest != d {
                // Marked as in progress: a subject that leads back here (a cycle) does not recurse
                // forever.
                memo.insert(d.clone(), usize::MAX / 4);
                let sl = level(&s.digest, nodes, g, memo, depth + 1);
                if sl < usize::MAX / 4 {
                    l = l.max(sl + 1);
                }
            }
        }
    }
    memo.insert(d.clone(), l);
    l
}
