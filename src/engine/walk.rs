//! The second phase: the graph under each job's roots, every manifest fetched (or read where the
//! destination holds it), checked and parsed; with referrers, the referrers of each, recursively.

use super::platform;
use super::roots::{self, Prefetched};
use super::{Job, JobGraph, Node, Options, Root};
use crate::digest::{verify_bytes, Digest};
use crate::manifest::{self, Descriptor};
use crate::progress::Progress;
use crate::target::{kind_of, ErrorKind, ReferrerListing, Sink, Source};
use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every manifest read in a run, by digest (shared by its jobs).
type Nodes = Mutex<HashMap<Digest, Arc<Node>>>;

/// Resolves the roots of every job, then walks the graph under them.
pub(super) async fn graphs(
    (src, dst): (&Arc<dyn Source>, &Arc<dyn Sink>),
    jobs: &[Job],
    opts: &Options,
    conc: usize,
    progress: &Progress,
) -> Result<(Vec<JobGraph>, HashMap<Digest, Arc<Node>>)> {
    let prefetched = Prefetched::default();
    let nodes = Nodes::default();
    let walker = Walker { src, dst, nodes: &nodes, prefetched: &prefetched, opts, conc };
    let mut graphs = Vec::new();
    for job in jobs {
        let roots = roots::resolve((&**src, &**dst), job, conc, progress, &prefetched).await?;
        let mut graph = JobGraph { roots, ..JobGraph::default() };
        if !opts.platforms.is_empty() {
            walker.select_platform(job, &mut graph, progress).await?;
        }
        graphs.push(graph);
    }
    for (job, graph) in jobs.iter().zip(graphs.iter_mut()) {
        walker.walk(job, graph).await?;
        // A tagged artifact's entry in a layout's index says what it is, as the Go ORAS library's
        // do.
        if let Ok(read) = nodes.lock() {
            for root in &mut graph.roots {
                if let Some(n) = read.get(&root.desc.digest) {
                    root.desc.artifact_type = n.parsed.entry_artifact_type();
                }
            }
        }
    }
    let nodes = nodes.into_inner().map_err(|_| anyhow!("internal lock poisoned"))?;
    Ok((graphs, nodes))
}

/// What walking a job's graph needs from the run.
struct Walker<'a> {
    src: &'a Arc<dyn Source>,
    dst: &'a Arc<dyn Sink>,
    nodes: &'a Nodes,
    prefetched: &'a Prefetched,
    opts: &'a Options,
    conc: usize,
}

impl Walker<'_> {
    /// Narrows index roots to one platform's manifest (see [`platform::select`]); with referrers,
    /// the referrers of each index left behind become roots of their own, untagged, so that a
    /// backup holds them and a restore pushes them.
    async fn select_platform(
        &self,
        job: &Job,
        g: &mut JobGraph,
        progress: &Progress,
    ) -> Result<()> {
        let mut children = HashMap::new();
        for root in &g.roots {
            let node = self.read(job, root.desc.clone()).await?;
            children.insert(root.desc.digest.clone(), node.parsed.manifests.clone());
        }
        let wanted = (self.opts.platforms.as_slice(), self.opts.sparse_index);
        platform::select(job, g, |d| children.get(&d.digest).cloned(), wanted, progress)?;
        if self.opts.referrers && !job.exclude_referrers {
            for index in std::mem::take(&mut g.left_indexes) {
                let listed = self.src.predecessors(&job.src, &index, None).await?;
                g.roots.extend(listed.referrers.into_iter().map(|desc| Root { tag: None, desc }));
            }
        }
        Ok(())
    }

    /// Walks the manifests under a job's roots (children and, with referrers, referrers),
    /// pipelined: a manifest starts as soon as the one naming it is done, never waiting for the
    /// rest of its level. Newest first, so that what the destination already holds (a second backup
    /// into a directory) is read while requests for the rest are in flight instead of after them.
    async fn walk(&self, job: &Job, g: &mut JobGraph) -> Result<()> {
        // A stack: the roots go in reverse so that they start in order. Each entry says whether it
        // may be absent: a child of an index the source holds partially (`--sparse-index`).
        let mut queue: Vec<(Descriptor, bool)> = Vec::new();
        for root in g.roots.iter_mut().rev() {
            if let Some(kept) = self.src.partial(&job.src, &root.desc) {
                mark_sparse(&mut root.desc, &kept);
                g.partial.insert(root.desc.digest.clone());
            }
            if g.manifests.insert(root.desc.digest.clone()) {
                queue.push((root.desc.clone(), false));
            }
        }
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < self.conc {
                let Some((desc, optional)) = queue.pop() else { break };
                running.push(async move {
                    let digest = desc.digest.clone();
                    match self.visit(job, desc).await {
                        Err(e) if optional && kind_of(&e) == ErrorKind::NotFound => Ok(Err(digest)),
                        done => done.map(Ok),
                    }
                });
            }
            let Some(done) = running.next().await else { break };
            let (node, refs) = match done? {
                Ok(visited) => visited,
                Err(absent) => {
                    g.manifests.remove(&absent);
                    g.left_out.insert(absent);
                    continue;
                }
            };
            let partial =
                node.desc.sparse_platforms().is_some() || g.partial.contains(&node.desc.digest);
            for d in g.add(&node, refs).into_iter().rev() {
                if g.manifests.insert(d.digest.clone()) {
                    let child = node.parsed.manifests.iter().any(|c| c.digest == d.digest);
                    queue.push((d, partial && child));
                }
            }
        }
        Ok(())
    }

    /// One manifest of a walk: its node (fetched, or read where the destination already holds it)
    /// and its referrers.
    async fn visit(&self, job: &Job, desc: Descriptor) -> Result<(Arc<Node>, ReferrerListing)> {
        let cached = self.nodes.lock().ok().and_then(|n| n.get(&desc.digest).cloned());
        let node = match cached {
            Some(n) => n,
            None => self.read(job, desc).await?,
        };
        let refs = if self.opts.referrers && !job.exclude_referrers {
            // A layout being added to may have recorded this listing: the source is then asked to
            // confirm it.
            let known = self.dst.hints().known_referrers(&node.desc.digest);
            self.src.predecessors(&job.src, &node.desc, known.as_ref()).await.with_context(
                || format!("cannot list referrers of {} in {}", node.desc.digest, job.src),
            )?
        } else {
            ReferrerListing::default()
        };
        Ok((node, refs))
    }

    /// Reads, checks and parses a manifest not read before in this run.
    async fn read(&self, job: &Job, desc: Descriptor) -> Result<Arc<Node>> {
        if desc.size > manifest::MAX_MANIFEST_SIZE {
            bail!(
                "manifest {} in {} declares {} bytes, over the 4 MiB manifest limit",
                desc.digest,
                job.src,
                desc.size
            );
        }
        let early = self.prefetched.lock().ok().and_then(|mut p| p.remove(&desc.digest));
        // A manifest the destination already holds (a directory backed up before) is not fetched
        // again; a stored copy that fails its digest is fetched instead, and one that passes is not
        // hashed twice.
        let stored = match &early {
            None => self
                .dst
                .hints()
                .stored_manifest(&desc)
                .await
                .filter(|b| verify_bytes(b, &desc.digest, desc.size).is_ok()),
            Some(_) => None,
        };
        let (bytes, stored) = match (early, stored) {
            (Some(b), _) => (b, false),
            (None, Some(b)) => (b, true),
            (None, None) => (self.src.fetch_manifest(&job.src, &desc).await?, false),
        };
        if !stored {
            verify_bytes(&bytes, &desc.digest, desc.size)
                .with_context(|| format!("manifest in {}", job.src))?;
        }
        let parsed = manifest::parse(&desc, &bytes).with_context(|| format!("in {}", job.src))?;
        let mut desc = desc;
        if !desc.is_manifest() {
            desc.media_type = parsed.media_type.clone();
        }
        let n = Arc::new(Node { desc, bytes, parsed, stored });
        if let Ok(mut map) = self.nodes.lock() {
            map.insert(n.desc.digest.clone(), n.clone());
        }
        Ok(n)
    }
}

/// Records on a root's descriptor that its index is held with only `kept`'s platforms.
pub(super) fn mark_sparse(desc: &mut Descriptor, kept: &str) {
    desc.annotations
        .get_or_insert_with(Default::default)
        .insert(manifest::ANNOTATION_SPARSE.to_string(), kept.to_string());
}

impl JobGraph {
    /// Records a visited manifest's blobs and referrers; returns the manifests it leads to
    /// (children, then referrers), which the walk visits unless it has already.
    fn add(&mut self, node: &Node, refs: ReferrerListing) -> Vec<Descriptor> {
        let mut found: Vec<Descriptor> = node
            .parsed
            .manifests
            .iter()
            .filter(|c| !self.left_out.contains(&c.digest))
            .cloned()
            .collect();
        for b in node.parsed.copied_blobs() {
            self.blobs.entry(b.digest.clone()).or_insert_with(|| b.clone());
        }
        if let Some(index) = refs.index {
            self.listed_by.insert(node.desc.digest.clone(), index);
        }
        for r in refs.referrers {
            if r.digest == node.desc.digest {
                continue;
            }
            self.referrer_nodes.insert(r.digest.clone());
            let list = self.referrers_of.entry(node.desc.digest.clone()).or_default();
            if !list.contains(&r.digest) {
                list.push(r.digest.clone());
            }
            found.push(r);
        }
        found
    }
}
