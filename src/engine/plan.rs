//! The third phase: what the destination will hold (every distinct blob and manifest, every root
//! and referrer entry), handed to sinks that lay their output out before the first write.

use super::{JobGraph, Node, Run};
use crate::digest::Digest;
use crate::manifest::{
    self, ANNOTATION_REFERRERS_INDEX, ANNOTATION_REFERRERS_POSITION, ANNOTATION_SUBJECT,
};
use crate::target::{EntryRole, Plan, PlanContent, PlanEntry};
use anyhow::Result;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Hands the plan to a sink that wants it.
pub(super) async fn prepare(run: &Run<'_>) -> Result<()> {
    let Some(planning) = run.dst.planning() else { return Ok(()) };
    let contents = contents(run);
    let entries = entries(run);
    let manifests: HashMap<Digest, Bytes> =
        run.nodes.iter().map(|(d, n)| (d.clone(), n.bytes.clone())).collect();
    planning.prepare(&Plan { contents: &contents, entries: &entries, manifests: &manifests }).await
}

/// Every distinct blob and manifest of the run, blobs of each job first; what an earlier backup
/// holds (`backup --base`) is left out.
fn contents<'a>(run: &'a Run<'_>) -> Vec<PlanContent<'a>> {
    let mut contents = Vec::new();
    let mut seen: HashSet<&Digest> = HashSet::new();
    if let Some(held) = &run.opts.held {
        seen.extend(held.iter());
    }
    for g in &run.graphs {
        for b in g.blobs.values() {
            if seen.insert(&b.digest) {
                contents.push(PlanContent { desc: b, manifest: false });
            }
        }
        for d in &g.manifests {
            if let Some(n) = run.nodes.get(d) {
                if seen.insert(d) {
                    contents.push(PlanContent { desc: &n.desc, manifest: true });
                }
            }
        }
    }
    contents
}

/// The roots (under their new tags when retagged), then every referrer annotated with its subject
/// and, where exact, the source index that listed it.
fn entries(run: &Run<'_>) -> Vec<PlanEntry> {
    let mut entries = Vec::new();
    for (_, job, g) in run.each() {
        for root in &g.roots {
            let entry = |tag: Option<String>| PlanEntry {
                repo: job.dst.clone(),
                desc: root.desc.clone(),
                tag,
                role: EntryRole::Root,
            };
            match &job.retag {
                Some(tags) => entries.extend(tags.iter().map(|t| entry(Some(t.clone())))),
                None => entries.push(entry(root.tag.clone())),
            }
        }
    }
    let listed_by = recorded_indexes(&run.graphs, &run.nodes);
    for (_, job, g) in run.each() {
        for n in g.referrer_nodes.iter().filter_map(|d| run.nodes.get(d)) {
            let mut desc = manifest::referrer_descriptor(&n.desc, &n.parsed);
            desc.annotations = n.parsed.subject.as_ref().map(|subject| {
                let mut ann =
                    BTreeMap::from([(ANNOTATION_SUBJECT.to_string(), subject.digest.to_string())]);
                if let Some(Some((index, position))) = listed_by.get(&n.desc.digest) {
                    ann.insert(ANNOTATION_REFERRERS_INDEX.to_string(), index.to_string());
                    ann.insert(ANNOTATION_REFERRERS_POSITION.to_string(), position.to_string());
                }
                ann
            });
            entries.push(PlanEntry {
                repo: job.dst.clone(),
                desc,
                tag: None,
                role: EntryRole::Referrer,
            });
        }
    }
    entries
}

/// For each referrer, the source index to record with it (see `ANNOTATION_REFERRERS_INDEX`) and its
/// place in that index's list: the index that listed it, recorded only when the record is exact. A later run trusts a confirmed
/// index to list precisely the referrers recorded with it, so an index is recorded for none of its
/// referrers unless every one of them names that subject itself, and a referrer two listings
/// disagree about gets none.
pub(super) fn recorded_indexes(
    graphs: &[JobGraph],
    nodes: &HashMap<Digest, Arc<Node>>,
) -> HashMap<Digest, Option<(Digest, usize)>> {
    let mut out: HashMap<Digest, Option<(Digest, usize)>> = HashMap::new();
    for g in graphs {
        for (subject, referrers) in &g.referrers_of {
            let index = g.listed_by.get(subject).filter(|_| {
                referrers.iter().all(|r| {
                    nodes
                        .get(r)
                        .and_then(|n| n.parsed.subject.as_ref())
                        .is_some_and(|s| &s.digest == subject)
                })
            });
            for (position, r) in referrers.iter().enumerate() {
                let recorded = index.map(|i| (i.clone(), position));
                let slot = out.entry(r.clone()).or_insert_with(|| recorded.clone());
                if *slot != recorded {
                    *slot = None;
                }
            }
        }
    }
    out
}
