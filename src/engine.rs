//! The one graph-copy engine: resolves roots, walks manifests (and referrers), then copies blobs,
//! manifests children-first and tags, deduplicated by digest, verified as bytes stream.

use crate::digest::{Digest, Verifier};
use crate::manifest::{self, Descriptor, Parsed};
use crate::progress::Progress;
use crate::target::{ByteStream, Plan, ReferrerListing, Repo, Sink, Source};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod stage;

/// What to copy from one source repository into one destination repository.
#[derive(Clone, Debug)]
pub struct Job {
    /// Repository read from.
    pub src: Repo,
    /// Repository written to.
    pub dst: Repo,
    /// Tags or digests to copy; empty means every tag (and, for layouts, every untagged root).
    pub refs: Vec<String>,
    /// How the source is named in status lines.
    pub label: String,
    /// Tag the copied roots with these instead of their own tags (copy with a new tag).
    pub retag: Option<Vec<String>>,
    /// Restrict tags to these when copying every tag of a layout repository (restore `repo:tags`).
    pub only_tags: Option<Vec<String>>,
}

/// Engine options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Transfers at once.
    pub concurrency: usize,
    /// Follow referrers recursively.
    pub referrers: bool,
    /// Read and check everything, ask the destination what it has, write nothing.
    pub dry_run: bool,
}

/// One copied tag (or untagged root) and how many referrers came with it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootReport {
    /// The tag, or none for a root copied by digest.
    pub tag: Option<String>,
    /// The root manifest's digest.
    pub digest: String,
    /// Referrers copied with it, recursively.
    pub referrers: usize,
}

/// The result of one job.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    /// Source repository.
    pub source: String,
    /// Destination repository.
    pub destination: String,
    /// Roots copied.
    pub roots: Vec<RootReport>,
}

/// The result of a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Per-job results.
    pub jobs: Vec<JobReport>,
    /// Blobs written.
    pub blobs_copied: usize,
    /// Blobs the destination already had.
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository.
    pub blobs_mounted: usize,
    /// Manifests written.
    pub manifests_copied: usize,
    /// Manifests the destination already had.
    pub manifests_skipped: usize,
    /// Bytes written.
    pub bytes_copied: u64,
    /// Bytes not written because the destination had them.
    pub bytes_skipped: u64,
    /// Total bytes of the graph in every destination repository: `bytes_copied + bytes_skipped`, so a
    /// blob copied into one repository and mounted into another counts in each, and the parts add up.
    pub bytes_total: u64,
    /// Seconds taken.
    pub seconds: f64,
}

struct Node {
    desc: Descriptor,
    bytes: Bytes,
    parsed: Parsed,
    /// Read from the destination, which therefore holds it.
    stored: bool,
}

struct JobGraph {
    roots: Vec<(Option<String>, Descriptor)>,
    manifests: BTreeSet<Digest>,
    referrer_nodes: BTreeSet<Digest>,
    referrers_of: BTreeMap<Digest, Vec<Digest>>,
    /// Digest of the source's referrers index each subject's referrers were listed by, where there is one.
    listed_by: BTreeMap<Digest, Digest>,
    blobs: BTreeMap<Digest, Descriptor>,
}

/// Runs one copy of `jobs` from `src` to `dst`.
pub async fn run(src: Arc<dyn Source>, dst: Arc<dyn Sink>, jobs: &[Job], opts: &Options, progress: &mut Progress) -> Result<Report> {
    let started = Instant::now();
    let conc = opts.concurrency.max(1);
    let mut report = Report::default();

    // 1. Resolve roots.
    let mut graphs = Vec::new();
    // Manifests that came with the answer to a resolve: the walk does not fetch them again.
    let prefetched: Arc<Mutex<HashMap<Digest, Bytes>>> = Arc::new(Mutex::new(HashMap::new()));
    for job in jobs {
        let roots = resolve_roots((&*src, &*dst), job, conc, progress, &prefetched).await?;
        graphs.push(JobGraph {
            roots,
            manifests: BTreeSet::new(),
            referrer_nodes: BTreeSet::new(),
            referrers_of: BTreeMap::new(),
            listed_by: BTreeMap::new(),
            blobs: BTreeMap::new(),
        });
    }

    // 2. Walk manifests, pipelined under the concurrency (see `walk`).
    let nodes: Arc<Mutex<HashMap<Digest, Arc<Node>>>> = Arc::new(Mutex::new(HashMap::new()));
    for (job, graph) in jobs.iter().zip(graphs.iter_mut()) {
        walk((&src, &dst), job, graph, &nodes, &prefetched, opts, conc).await?;
    }
    let nodes: HashMap<Digest, Arc<Node>> = nodes.lock().map_err(|_| anyhow!("internal lock poisoned"))?.clone();

    // 4. Plan.
    let mut contents: Vec<(&Descriptor, bool)> = Vec::new();
    let mut seen: HashSet<&Digest> = HashSet::new();
    let mut entries = Vec::new();
    for (job, g) in jobs.iter().zip(&graphs) {
        for b in g.blobs.values() {
            if seen.insert(&b.digest) {
                contents.push((b, false));
            }
        }
        for d in &g.manifests {
            if let Some(n) = nodes.get(d) {
                if seen.insert(d) {
                    contents.push((&n.desc, true));
                }
            }
        }
        for (tag, desc) in &g.roots {
            match &job.retag {
                Some(tags) => entries.extend(tags.iter().map(|t| (job.dst.clone(), desc.clone(), Some(t.clone()), false))),
                None => entries.push((job.dst.clone(), desc.clone(), tag.clone(), false)),
            }
        }
    }
    let listed_by = recorded_indexes(&graphs, &nodes);
    for (job, g) in jobs.iter().zip(&graphs) {
        for d in &g.referrer_nodes {
            if let Some(n) = nodes.get(d) {
                let mut rd = manifest::referrer_descriptor(&n.desc, &n.parsed);
                rd.annotations = None;
                if let Some(subject) = &n.parsed.subject {
                    let mut ann = BTreeMap::from([(manifest::ANNOTATION_SUBJECT.to_string(), subject.digest.to_string())]);
                    if let Some(Some(index)) = listed_by.get(d) {
                        ann.insert(manifest::ANNOTATION_REFERRERS_INDEX.to_string(), index.to_string());
                    }
                    rd.annotations = Some(ann);
                }
                entries.push((job.dst.clone(), rd, None, true));
            }
        }
    }
    if !opts.dry_run {
        let manifest_bytes: HashMap<Digest, Bytes> = nodes.iter().map(|(d, n)| (d.clone(), n.bytes.clone())).collect();
        dst.prepare(&Plan { contents: &contents, entries: &entries, manifests: &manifest_bytes }).await?;
    }
    progress.start_overall(
        graphs.iter().flat_map(|g| g.blobs.values()).map(|d| d.size).sum(),
        if opts.dry_run { "checking" } else { "copying" },
    );

    // 4b. What the destination already holds, asked from the top.
    let known = if dst.prunes() { already_there(&dst, jobs, &graphs, &nodes, conc).await? } else { Known::default() };

    // 5. Blobs.
    let mut tasks: Vec<(usize, Descriptor)> = Vec::new();
    let mut scoped = HashSet::new();
    let mut outcomes: Vec<BlobOutcome> = Vec::new();
    for (i, (job, g)) in jobs.iter().zip(&graphs).enumerate() {
        for b in g.blobs.values() {
            if scoped.insert((dst.scope(&job.dst), b.digest.clone())) {
                if known.blobs.contains(&(i, b.digest.clone())) {
                    outcomes.push(BlobOutcome::Skipped(b.size));
                    progress.add(b.size);
                } else {
                    tasks.push((i, b.clone()));
                }
            }
        }
    }
    let placed: Placed = Arc::new(Mutex::new(HashMap::new()));
    // Each pass: tasks and whether the destination is already known not to have them.
    let mut passes: Vec<Vec<(usize, Descriptor, bool)>> = Vec::new();
    if src.ordered() || dst.ordered() {
        // Streams pass once, in digest order: tasks start in that order so each waits only on earlier ones.
        tasks.sort_by(|a, b| a.1.digest.cmp(&b.1.digest));
    } else {
        largest_first(&mut tasks);
    }
    if src.ordered() || src.is_local() {
        let restore = stage::Restore { src: &src, dst: &dst, jobs, placed: &placed, progress, conc };
        // A backup is checked before anything is written, and a stream must know up front which
        // blobs it will be asked for: so first ask the destination what it already has.
        let probes: Vec<(Repo, Descriptor)> = tasks.iter().map(|(i, d)| (jobs[*i].dst.clone(), d.clone())).collect();
        let present: Vec<bool> = stream::iter(probes.into_iter().map(|(repo, d)| {
            let dst = dst.clone();
            async move { dst.has_blob(&repo, &d).await }
        }))
        .buffered(conc)
        .try_collect()
        .await?;
        let mut first = Vec::new();
        let mut again = Vec::new();
        let mut wanted = Vec::new();
        let mut seen_digest = HashSet::new();
        let mut skipped_local = Vec::new();
        for ((i, d), there) in tasks.into_iter().zip(present) {
            if there {
                skipped_local.push((i, d.clone()));
                outcomes.push(BlobOutcome::Skipped(d.size));
                progress.add(d.size);
            } else if seen_digest.insert(d.digest.clone()) {
                wanted.push(d.digest.clone());
                first.push((i, d, true));
            } else {
                // Needed in a second repository: mounted from the first once that is done.
                again.push((i, d, true));
            }
        }
        if src.is_local() && opts.dry_run {
            // A dry run reads and checks the whole backup.
            let check: Vec<(usize, Descriptor)> =
                first.iter().chain(&again).map(|(i, d, _)| (*i, d.clone())).chain(skipped_local.drain(..)).collect();
            damaged(blob_problems(&src, jobs, &check, conc).await)?;
        } else if src.is_local() {
            // Everything that will be pushed is checked before anything becomes visible; the uploads
            // start beside the check and are held back until it is done (see stage.rs).
            let blobs = std::mem::take(&mut first).into_iter().map(|(i, d, _)| (i, d)).collect();
            outcomes.extend(stage::restore_checked(restore, blobs).await?);
        }
        if src.ordered() && !opts.dry_run {
            src.expect(&wanted).await?;
            if dst.stages() {
                // A stream cannot be checked before it is read: every blob is held until all have passed.
                let blobs = std::mem::take(&mut first).into_iter().map(|(i, d, _)| (i, d)).collect();
                outcomes.extend(stage::restore_stream_held(restore, blobs).await?);
            }
        }
        passes.push(first);
        passes.push(again);
    } else {
        passes.push(tasks.into_iter().map(|(i, d)| (i, d, false)).collect());
    }
    let shared_jobs: Arc<[Job]> = jobs.into();
    for pass in passes {
        let done: Vec<BlobOutcome> = stream::iter(pass.into_iter().map(|(i, desc, known_missing)| {
            let jobs = shared_jobs.clone();
            let src = src.clone();
            let dst = dst.clone();
            let placed = placed.clone();
            let progress = progress.clone();
            async move {
                let job = &jobs[i];
                if !known_missing && dst.has_blob(&job.dst, &desc).await? {
                    progress.add(desc.size);
                    place(&placed, &desc, job);
                    return Ok(BlobOutcome::Skipped(desc.size));
                }
                if opts.dry_run {
                    return Ok(BlobOutcome::Copied(desc.size));
                }
                // A task of its own: concurrent transfers hash (and write) on all the runtime's threads.
                on_own_task(async move { copy_blob((src, dst), &jobs[i], &desc, placed, &progress).await })
                    .await
                    .map_err(|e| anyhow!("internal: blob task failed: {e}"))?
            }
        }))
        .buffer_unordered(conc)
        .try_collect()
        .await?;
        outcomes.extend(done);
    }
    for o in outcomes {
        match o {
            BlobOutcome::Copied(n) => {
                report.blobs_copied += 1;
                report.bytes_copied += n;
            }
            BlobOutcome::Mounted(n) => {
                report.blobs_mounted += 1;
                report.bytes_skipped += n;
            }
            BlobOutcome::Skipped(n) => {
                report.blobs_skipped += 1;
                report.bytes_skipped += n;
            }
        }
    }

    // 6. Manifests, children before parents, referrers after their subjects.
    let mut levels: BTreeMap<usize, Vec<(usize, Digest)>> = BTreeMap::new();
    let mut scoped = HashSet::new();
    for (i, (job, g)) in jobs.iter().zip(&graphs).enumerate() {
        let mut memo = HashMap::new();
        for d in &g.manifests {
            let lvl = level(d, &nodes, g, &mut memo, 0);
            if known.manifests.contains(&(i, d.clone())) {
                report.manifests_skipped += 1;
                report.bytes_skipped += nodes.get(d).map(|n| n.desc.size).unwrap_or(0);
                continue;
            }
            if scoped.insert((dst.scope(&job.dst), d.clone())) {
                levels.entry(lvl).or_default().push((i, d.clone()));
            }
        }
    }
    // A registry creates a manifest pushed by tag: a tagged root goes out once, by its first tag.
    let first_tags: Vec<HashMap<Digest, String>> = jobs
        .iter()
        .zip(&graphs)
        .map(|(job, g)| {
            let mut m = HashMap::new();
            if job.retag.is_none() && dst.prunes() {
                for (t, d) in &g.roots {
                    if let Some(t) = t {
                        m.entry(d.digest.clone()).or_insert_with(|| t.clone());
                    }
                }
            }
            m
        })
        .collect();
    let mut tagged_early: HashSet<(usize, String)> = HashSet::new();
    for (_, batch) in levels {
        // (pushed, size, tag it was pushed by)
        type Pushed = (bool, u64, Option<(usize, String)>);
        let results: Vec<Pushed> = stream::iter(batch.into_iter().map(|(i, d)| {
            let job = &jobs[i];
            let g = &graphs[i];
            let dst = dst.clone();
            let node = nodes.get(&d).cloned();
            let by_tag = first_tags[i].get(&d).cloned();
            let absent = known.absent.contains(&(i, d.clone())) || known.new_repos.contains(&i);
            async move {
                let node = node.ok_or_else(|| anyhow!("internal: manifest {d} missing from graph"))?;
                let is_ref = g.referrer_nodes.contains(&d);
                // A manifest this run read from the destination is there.
                let exists = !absent && (node.stored || dst.has_manifest(&job.dst, &node.desc).await?);
                // A registry may hold a referrer without listing it (tag schema): pushing it again records it.
                // A layout lists referrers in its index, so a stored one is done.
                if opts.dry_run || (exists && (!is_ref || !dst.prunes())) {
                    return Ok::<_, anyhow::Error>((!exists, node.desc.size, None));
                }
                let subject = if is_ref { node.parsed.subject.as_ref() } else { None };
                let mut tagged = None;
                match (&by_tag, exists, subject) {
                    (Some(t), false, None) => {
                        dst.tag(&job.dst, &node.desc, node.bytes.clone(), Some(t))
                            .await
                            .with_context(|| format!("cannot write manifest {} as {}:{t}", node.desc.digest, job.dst))?;
                        tagged = Some((i, t.clone()));
                    }
                    (_, true, None) => {}
                    _ => {
                        dst.push_manifest(&job.dst, &node.desc, node.bytes.clone(), subject)
                            .await
                            .with_context(|| format!("cannot write manifest {} to {}", node.desc.digest, job.dst))?;
                    }
                }
                Ok((!exists, node.desc.size, tagged))
            }
        }))
        .buffer_unordered(conc)
        .try_collect()
        .await?;
        for (copied, size, tagged) in results {
            if copied {
                report.manifests_copied += 1;
                report.bytes_copied += size;
            } else {
                report.manifests_skipped += 1;
                report.bytes_skipped += size;
            }
            tagged_early.extend(tagged);
        }
    }

    // 7. Tags and untagged roots.
    let mut tag_tasks = Vec::new();
    for (i, (job, g)) in jobs.iter().zip(&graphs).enumerate() {
        for (tag, desc) in &g.roots {
            if tag.as_ref().is_some_and(|t| known.tags.contains(&(i, t.clone())) || tagged_early.contains(&(i, t.clone()))) {
                continue;
            }
            let bytes = nodes.get(&desc.digest).map(|n| n.bytes.clone()).unwrap_or_default();
            match &job.retag {
                Some(tags) => {
                    for t in tags {
                        tag_tasks.push((job.dst.clone(), desc.clone(), bytes.clone(), Some(t.clone())));
                    }
                }
                None => tag_tasks.push((job.dst.clone(), desc.clone(), bytes, tag.clone())),
            }
        }
    }
    if !opts.dry_run {
        stream::iter(tag_tasks.into_iter().map(|(repo, desc, bytes, tag)| {
            let dst = dst.clone();
            async move {
                dst.tag(&repo, &desc, bytes, tag.as_deref())
                    .await
                    .with_context(|| format!("cannot tag {} in {repo}", tag.as_deref().unwrap_or(desc.digest.as_str())))
            }
        }))
        .buffer_unordered(conc)
        .try_collect::<Vec<()>>()
        .await?;
        dst.finish().await?;
    }
    progress.finish();

    for (job, g) in jobs.iter().zip(&graphs) {
        let roots = g
            .roots
            .iter()
            .map(|(tag, desc)| RootReport {
                tag: tag.clone(),
                digest: desc.digest.to_string(),
                referrers: count_referrers(&desc.digest, &nodes, g),
            })
            .collect();
        report.jobs.push(JobReport { source: job.src.to_string(), destination: job.dst.to_string(), roots });
    }
    report.bytes_total = report.bytes_copied + report.bytes_skipped;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// For each referrer, the source index to record with it (see `ANNOTATION_REFERRERS_INDEX`): the index that
/// listed it, recorded only when the record is exact. A later run trusts a confirmed index to list precisely
/// the referrers recorded with it, so an index is recorded for none of its referrers unless every one of them
/// names that subject itself, and a referrer two listings disagree about gets none.
fn recorded_indexes(graphs: &[JobGraph], nodes: &HashMap<Digest, Arc<Node>>) -> HashMap<Digest, Option<Digest>> {
    let mut out: HashMap<Digest, Option<Digest>> = HashMap::new();
    for g in graphs {
        for (subject, referrers) in &g.referrers_of {
            let index = g.listed_by.get(subject).filter(|_| {
                referrers.iter().all(|r| nodes.get(r).and_then(|n| n.parsed.subject.as_ref()).is_some_and(|s| &s.digest == subject))
            });
            for r in referrers {
                let slot = out.entry(r.clone()).or_insert_with(|| index.cloned());
                if slot.as_ref() != index {
                    *slot = None;
                }
            }
        }
    }
    out
}

/// Orders transfers largest first: a large blob started last would run alone at the end, and (restore
/// of a backup) small blobs waiting for the check would hold slots a large one could use. Ties go by
/// digest, so runs are repeatable.
fn largest_first(blobs: &mut [(usize, Descriptor)]) {
    blobs.sort_by(|(_, a), (_, b)| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
}

/// What the destination was found to hold before the transfer, per job.
#[derive(Default)]
struct Known {
    manifests: HashSet<(usize, Digest)>,
    /// Roots the destination was asked about and does not have.
    absent: HashSet<(usize, Digest)>,
    /// Jobs whose destination repository had no tags: manifests are written there without asking, as a
    /// PUT of one that is there costs no more than the question and changes nothing. Blobs are still
    /// asked about, so that a restore resumed after an interruption sends none twice.
    new_repos: HashSet<usize>,
    blobs: HashSet<(usize, Digest)>,
    tags: HashSet<(usize, String)>,
}

/// Asks the destination about roots (tag, then digest) and about the referrers of what is there;
/// everything under a manifest that is there is there too.
async fn already_there(
    dst: &Arc<dyn Sink>,
    jobs: &[Job],
    graphs: &[JobGraph],
    nodes: &HashMap<Digest, Arc<Node>>,
    conc: usize,
) -> Result<Known> {
    let mut known = Known::default();
    let mut new_repos: HashMap<&Repo, bool> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if !new_repos.contains_key(&job.dst) {
            // Referrers to record make the destination list its tags anyway (tag schema): let that list answer.
            let whole = jobs.iter().zip(graphs).any(|(j, g)| j.dst == job.dst && !g.referrers_of.is_empty());
            new_repos.insert(&job.dst, dst.is_new(&job.dst, whole).await);
        }
        if new_repos.get(&job.dst) == Some(&true) {
            known.new_repos.insert(i);
        }
    }
    // A repository without tags holds none of the roots worth asking about (its manifests are written
    // without asking: see Known::new_repos).
    let roots: Vec<(usize, Option<String>, Descriptor)> = jobs
        .iter()
        .zip(graphs)
        .enumerate()
        .filter(|(i, _)| !known.new_repos.contains(i))
        .flat_map(|(i, (job, g))| g.roots.iter().map(move |(t, d)| (i, if job.retag.is_some() { None } else { t.clone() }, d.clone())))
        .collect();
    let answers: Vec<(usize, Option<String>, Digest, bool, bool)> = stream::iter(roots.into_iter().map(|(i, tag, desc)| {
        let dst = dst.clone();
        let repo = jobs[i].dst.clone();
        async move {
            let tagged = match &tag {
                Some(t) => dst.tag_points_at(&repo, t, &desc.digest).await?,
                None => false,
            };
            let there = tagged || dst.has_manifest(&repo, &desc).await?;
            Ok::<_, anyhow::Error>((i, tag, desc.digest, tagged, there))
        }
    }))
    .buffer_unordered(conc)
    .try_collect()
    .await?;
    for (i, tag, digest, tagged, there) in answers {
        if let (true, Some(t)) = (tagged, tag) {
            known.tags.insert((i, t));
        }
        if there {
            known.manifests.insert((i, digest));
        } else {
            known.absent.insert((i, digest));
        }
    }
    // Referrers of what is there, recorded there already (referrers of referrers in later rounds).
    let mut asked: HashSet<(usize, Digest)> = HashSet::new();
    loop {
        // Everything under a manifest that is there is there too, and may have referrers of its own.
        close_under(&mut known, nodes);
        let ask: Vec<(usize, Digest)> = graphs
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.referrers_of.keys().map(move |s| (i, s.clone())))
            .filter(|k| known.manifests.contains(k) && !asked.contains(k))
            .collect();
        if ask.is_empty() {
            break;
        }
        asked.extend(ask.iter().cloned());
        let listed: Vec<(usize, Digest, Vec<Digest>)> = stream::iter(ask.into_iter().filter_map(|(i, s)| {
            let desc = nodes.get(&s)?.desc.clone();
            let ours: Vec<Descriptor> = graphs[i]
                .referrers_of
                .get(&s)
                .into_iter()
                .flatten()
                .filter_map(|r| nodes.get(r).map(|n| manifest::referrer_descriptor(&n.desc, &n.parsed)))
                .collect();
            let dst = dst.clone();
            let repo = jobs[i].dst.clone();
            Some(async move { Ok::<_, anyhow::Error>((i, s, dst.listed_referrers(&repo, &desc, &ours).await?)) })
        }))
        .buffer_unordered(conc)
        .try_collect()
        .await?;
        for (i, subject, there) in listed {
            for r in graphs[i].referrers_of.get(&subject).into_iter().flatten() {
                if there.contains(r) {
                    known.manifests.insert((i, r.clone()));
                }
            }
        }
    }
    close_under(&mut known, nodes);
    Ok(known)
}

/// Adds everything under the manifests known to be there (registries refuse a manifest whose content is missing).
fn close_under(known: &mut Known, nodes: &HashMap<Digest, Arc<Node>>) {
    let mut stack: Vec<(usize, Digest)> = known.manifests.iter().cloned().collect();
    while let Some((i, d)) = stack.pop() {
        let Some(n) = nodes.get(&d) else { continue };
        for b in &n.parsed.blobs {
            known.blobs.insert((i, b.digest.clone()));
        }
        for c in &n.parsed.manifests {
            if known.manifests.insert((i, c.digest.clone())) {
                stack.push((i, c.digest.clone()));
            }
        }
    }
}

async fn resolve_roots(
    (src, dst): (&dyn Source, &dyn Sink),
    job: &Job,
    conc: usize,
    progress: &Progress,
    prefetched: &Mutex<HashMap<Digest, Bytes>>,
) -> Result<Vec<(Option<String>, Descriptor)>> {
    let mut refs = job.refs.clone();
    let listed = refs.is_empty();
    if listed {
        let mut tags = src.tags(&job.src).await?;
        if let Some(only) = &job.only_tags {
            let missing: Vec<&String> = only.iter().filter(|t| !tags.contains(t)).collect();
            if !missing.is_empty() {
                bail!("tag(s) not found in {}: {}", job.label, missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
            }
            tags.retain(|t| only.contains(t));
        }
        if tags.is_empty() && src.untagged(&job.src).await?.is_empty() {
            bail!("{} has no tags to copy: name a tag or digest, or check the repository name", job.label);
        }
        if !tags.is_empty() {
            progress.status(&format!("Found {} tag(s) in {}: {}", tags.len(), job.label, abbreviate(&tags)));
        }
        refs = tags;
    }
    let mut roots = Vec::new();
    if listed && job.only_tags.is_none() {
        for d in src.untagged(&job.src).await? {
            roots.push((None, d));
        }
    }
    type Resolved = Result<(Descriptor, Option<Bytes>)>;
    let results: Vec<(String, Resolved)> = stream::iter(refs.into_iter().map(|r| async move {
        // A tag the destination already holds (a second backup into a directory) is only confirmed.
        let known = if job.retag.is_none() { dst.known_tag(&job.dst, &r) } else { None };
        let d = src.resolve_manifest(&job.src, &r, known.as_ref()).await;
        (r, d)
    }))
    .buffered(conc)
    .collect()
    .await;
    let mut missing = Vec::new();
    for (r, d) in results {
        match d {
            Ok((d, bytes)) => {
                let tag = if r.starts_with("sha256:") { None } else { Some(r) };
                if let Some(b) = bytes {
                    if let Ok(mut p) = prefetched.lock() {
                        p.insert(d.digest.clone(), b);
                    }
                }
                roots.push((tag, d));
            }
            Err(e) if e.to_string().contains("not found") => missing.push(r),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        bail!("not found in {}: {} (check the tag names)", job.label, missing.join(", "));
    }
    Ok(roots)
}

fn abbreviate(tags: &[String]) -> String {
    if tags.len() <= 10 {
        tags.join(", ")
    } else {
        format!("{}, ... and {} more", tags[..10].join(", "), tags.len() - 10)
    }
}

/// Walks the manifests under a job's roots (children and, with referrers, referrers), pipelined: a manifest
/// starts as soon as the one naming it is done, never waiting for the rest of its level. Newest first, so
/// what the destination already holds (a second backup into a directory) is read while requests for the
/// rest are in flight instead of after them.
async fn walk(
    (src, dst): (&Arc<dyn Source>, &Arc<dyn Sink>),
    job: &Job,
    g: &mut JobGraph,
    nodes: &Arc<Mutex<HashMap<Digest, Arc<Node>>>>,
    prefetched: &Arc<Mutex<HashMap<Digest, Bytes>>>,
    opts: &Options,
    conc: usize,
) -> Result<()> {
    // A stack: the roots go in reverse so that they start in order.
    let mut queue: Vec<Descriptor> = Vec::new();
    for (_, d) in g.roots.iter().rev() {
        if g.manifests.insert(d.digest.clone()) {
            queue.push(d.clone());
        }
    }
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        while running.len() < conc {
            let Some(desc) = queue.pop() else { break };
            running.push(visit((src, dst), job, desc, nodes, prefetched, opts));
        }
        let Some(done) = running.next().await else { break };
        let (node, refs) = done?;
        let mut found: Vec<Descriptor> = node.parsed.manifests.clone();
        for b in &node.parsed.blobs {
            if b.urls.as_ref().is_some_and(|u| !u.is_empty()) && b.media_type.contains("nondistributable") {
                continue;
            }
            g.blobs.entry(b.digest.clone()).or_insert_with(|| b.clone());
        }
        if let Some(index) = refs.index {
            g.listed_by.insert(node.desc.digest.clone(), index);
        }
        for r in refs.referrers {
            if r.digest == node.desc.digest {
                continue;
            }
            g.referrer_nodes.insert(r.digest.clone());
            let list = g.referrers_of.entry(node.desc.digest.clone()).or_default();
            if !list.contains(&r.digest) {
                list.push(r.digest.clone());
            }
            found.push(r);
        }
        for d in found.into_iter().rev() {
            if g.manifests.insert(d.digest.clone()) {
                queue.push(d);
            }
        }
    }
    Ok(())
}

/// One manifest of a walk: its node (fetched, or read where the destination already holds it) and its referrers.
async fn visit(
    (src, dst): (&Arc<dyn Source>, &Arc<dyn Sink>),
    job: &Job,
    desc: Descriptor,
    nodes: &Mutex<HashMap<Digest, Arc<Node>>>,
    prefetched: &Mutex<HashMap<Digest, Bytes>>,
    opts: &Options,
) -> Result<(Arc<Node>, ReferrerListing)> {
    let cached = nodes.lock().ok().and_then(|n| n.get(&desc.digest).cloned());
    let node = match cached {
        Some(n) => n,
        None => {
            if desc.size > manifest::MAX_MANIFEST_SIZE {
                bail!("manifest {} in {} declares {} bytes, over the 4 MiB manifest limit", desc.digest, job.src, desc.size);
            }
            let early = prefetched.lock().ok().and_then(|mut p| p.remove(&desc.digest));
            // A manifest the destination already holds (a directory backed up before) is not fetched again; a
            // stored copy that fails its digest is fetched instead, and one that passes is not hashed twice.
            let (bytes, stored) = match early {
                Some(b) => (b, false),
                None => {
                    match dst.stored_manifest(&desc).await.filter(|b| crate::digest::verify_bytes(b, &desc.digest, desc.size).is_ok()) {
                        Some(b) => (b, true),
                        None => (src.fetch_manifest(&job.src, &desc).await?, false),
                    }
                }
            };
            if !stored {
                crate::digest::verify_bytes(&bytes, &desc.digest, desc.size).with_context(|| format!("manifest in {}", job.src))?;
            }
            let parsed = manifest::parse(&desc, &bytes).with_context(|| format!("in {}", job.src))?;
            let mut desc = desc.clone();
            if !desc.is_manifest() {
                desc.media_type = parsed.media_type.clone();
            }
            let n = Arc::new(Node { desc, bytes, parsed, stored });
            if let Ok(mut map) = nodes.lock() {
                map.insert(n.desc.digest.clone(), n.clone());
            }
            n
        }
    };
    let refs = if opts.referrers {
        // A layout being added to may have recorded this listing: the source is then asked to confirm it.
        let known = dst.known_referrers(&node.desc.digest);
        src.referrer_listing(&job.src, &node.desc, known.as_ref())
            .await
            .with_context(|| format!("cannot list referrers of {} in {}", node.desc.digest, job.src))?
    } else {
        ReferrerListing::default()
    };
    Ok((node, refs))
}

/// Reads and checks each distinct blob once; returns every problem found, worded for the user.
async fn blob_problems(src: &Arc<dyn Source>, jobs: &[Job], blobs: &[(usize, Descriptor)], conc: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut work = Vec::new();
    for (i, b) in blobs {
        if seen.insert(b.digest.clone()) {
            work.push((jobs[*i].src.clone(), b.clone()));
        }
    }
    stream::iter(work.into_iter().map(|(repo, desc)| {
        let src = src.clone();
        async move {
            // A task of its own, like a transfer: the check hashes on all the runtime's threads.
            on_own_task(async move {
                check_blob(&*src, &repo, &desc).await.err().map(|e| match e {
                    BlobProblem::Unreadable(e) => format!("{e:#}"),
                    BlobProblem::Bytes(e) => format!("blob {e}"),
                    BlobProblem::Read(e) => format!("blob {}: {e}", desc.digest),
                })
            })
            .await
            .unwrap_or_else(|e| Some(format!("internal: check task failed: {e}")))
        }
    }))
    .buffer_unordered(conc.max(2))
    .filter_map(|e| async move { e })
    .collect()
    .await
}

/// Refuses a damaged backup, naming its first problem and counting the others.
fn damaged(mut problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    // The same damage gives the same message, whichever check finished first.
    problems.sort();
    let more = if problems.len() > 1 { format!(" (and {} more problem(s))", problems.len() - 1) } else { String::new() };
    bail!("the backup is damaged, nothing was pushed: {}{more}", problems[0])
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
pub async fn check_blob(src: &dyn Source, repo: &Repo, desc: &Descriptor) -> std::result::Result<(), BlobProblem> {
    let mut s = src.fetch_blob(repo, desc).await.map_err(BlobProblem::Unreadable)?;
    let mut v = Verifier::new(&desc.digest, desc.size);
    while let Some(chunk) = s.next().await {
        v.update(&chunk.map_err(BlobProblem::Read)?).map_err(BlobProblem::Bytes)?;
    }
    v.finish().map_err(BlobProblem::Bytes)
}

enum BlobOutcome {
    Copied(u64),
    Skipped(u64),
    Mounted(u64),
}

/// Where blobs already landed in this run, for cross-repository mounts.
type Placed = Arc<Mutex<HashMap<Digest, Repo>>>;

/// Records that a blob landed in the job's destination (the first place it landed is kept).
fn place(placed: &Placed, desc: &Descriptor, job: &Job) {
    if let Ok(mut p) = placed.lock() {
        p.entry(desc.digest.clone()).or_insert_with(|| job.dst.clone());
    }
}

/// Runs `f` as a task of its own, on whichever worker thread is free; dropping the returned future aborts
/// it, so the caller's concurrency limit and cancellation hold as if `f` were awaited in place.
async fn on_own_task<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, tokio::task::JoinError> {
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(f)).await
}

/// Copies a blob the destination lacks: mounted from a repository it landed in earlier in the run
/// where the registry allows, otherwise streamed and verified, with a few attempts.
async fn copy_blob(
    (src, dst): (Arc<dyn Source>, Arc<dyn Sink>),
    job: &Job,
    desc: &Descriptor,
    placed: Placed,
    progress: &Progress,
) -> Result<BlobOutcome> {
    let mount_from = placed
        .lock()
        .ok()
        .and_then(|p| p.get(&desc.digest).cloned())
        .filter(|r| r.registry == job.dst.registry && r.repository != job.dst.repository);
    if let Some(from) = &mount_from {
        if dst.mount_blob(&job.dst, desc, from).await.unwrap_or(false) {
            progress.add(desc.size);
            return Ok(BlobOutcome::Mounted(desc.size));
        }
    }
    let mut last_err = None;
    for attempt in 0..3u64 {
        let bar = progress.blob(desc.digest.as_str(), desc.size);
        let stream = match src.fetch_blob(&job.src, desc).await {
            Ok(s) => s,
            Err(e) => {
                last_err = Some(e);
                if src.ordered() {
                    break;
                }
                continue;
            }
        };
        // A backup's blobs were read and checked before the first push, and a registry checks the digest again.
        let verified = if src.is_local() && dst.prunes() {
            counting(stream, bar.counter(progress))
        } else {
            verifying(stream, desc, bar.counter(progress), None)
        };
        match dst.push_blob(&job.dst, desc, verified).await {
            Ok(()) => {
                place(&placed, desc, job);
                bar.done("Copied");
                return Ok(BlobOutcome::Copied(desc.size));
            }
            Err(e) => {
                last_err = Some(e);
                drop(bar);
                if src.ordered() {
                    // A stream cannot be read twice.
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(300 * (attempt + 1))).await;
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| anyhow!("unknown error"))
        .context(format!("cannot copy blob {} from {} to {}", desc.digest, job.src, job.dst)))
}

/// Counts bytes for progress, without hashing them again.
fn counting(inner: ByteStream, bar: crate::progress::Counter) -> ByteStream {
    Box::pin(inner.map(move |chunk| {
        if let Ok(c) = &chunk {
            bar.inc(c.len() as u64);
        }
        chunk
    }))
}

/// Wraps a stream so it fails as soon as size or digest disagree: the digest is checked at the last
/// declared byte, before that chunk is passed on, since an HTTP body of known length is not read to
/// its end. `problem`, when given, is told why in the words of the backup check.
fn verifying(inner: ByteStream, desc: &Descriptor, bar: crate::progress::Counter, problem: Option<Problem>) -> ByteStream {
    struct St {
        inner: ByteStream,
        v: Option<Verifier>,
        bar: crate::progress::Counter,
        problem: Option<Problem>,
        digest: Digest,
    }
    fn fail(st: St, why: String, err: std::io::Error) -> Option<(std::io::Result<Bytes>, St)> {
        if let Some(Ok(mut p)) = st.problem.as_ref().map(|p| p.lock()) {
            p.get_or_insert(why);
        }
        Some((Err(err), st))
    }
    let st = St { inner, v: Some(Verifier::new(&desc.digest, desc.size)), bar, problem, digest: desc.digest.clone() };
    Box::pin(stream::unfold(st, |mut st| async move {
        let v = st.v.as_mut()?;
        let bad = |e: crate::digest::VerifyError| (format!("blob {e}"), std::io::Error::other(e.to_string()));
        match st.inner.next().await {
            Some(Ok(chunk)) => {
                let mut checked = v.update(&chunk);
                if checked.is_ok() && v.is_complete() {
                    checked = st.v.take().map_or(Ok(()), Verifier::finish);
                }
                if let Err(e) = checked {
                    st.v = None;
                    let (why, err) = bad(e);
                    return fail(st, why, err);
                }
                st.bar.inc(chunk.len() as u64);
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                st.v = None;
                let why = format!("blob {}: {e}", st.digest);
                fail(st, why, e)
            }
            None => {
                let v = st.v.take()?;
                match v.finish() {
                    Ok(()) => None,
                    Err(e) => {
                        let (why, err) = bad(e);
                        fail(st, why, err)
                    }
                }
            }
        }
    }))
}

/// Where a check passing over a stream leaves what it found wrong.
type Problem = Arc<Mutex<Option<String>>>;

fn level(d: &Digest, nodes: &HashMap<Digest, Arc<Node>>, g: &JobGraph, memo: &mut HashMap<Digest, usize>, depth: usize) -> usize {
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

fn count_referrers(root: &Digest, nodes: &HashMap<Digest, Arc<Node>>, g: &JobGraph) -> usize {
    let mut seen = HashSet::new();
    let mut stack = vec![root.clone()];
    let mut count = 0;
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        if &d != root && g.referrer_nodes.contains(&d) {
            count += 1;
        }
        if let Some(n) = nodes.get(&d) {
            stack.extend(n.parsed.manifests.iter().map(|c| c.digest.clone()));
        }
        if let Some(rs) = g.referrers_of.get(&d) {
            stack.extend(rs.iter().cloned());
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_start_with_the_largest_blobs() {
        let blob = |data: &[u8], size| (0, Descriptor::new("application/octet-stream", Digest::of(data), size));
        let mut blobs = vec![blob(b"config", 400), blob(b"layer-a", 5 << 20), blob(b"tiny", 2), blob(b"layer-b", 90 << 20)];
        largest_first(&mut blobs);
        let sizes: Vec<u64> = blobs.iter().map(|(_, d)| d.size).collect();
        assert_eq!(sizes, vec![90 << 20, 5 << 20, 400, 2]);
        let mut ties = vec![blob(b"b", 7), blob(b"a", 7)];
        largest_first(&mut ties);
        assert!(ties[0].1.digest < ties[1].1.digest, "equal sizes go by digest");
    }

    /// A referrer node whose manifest names `subject`.
    fn node(name: &str, subject: &Digest) -> (Digest, Arc<Node>) {
        let desc = Descriptor::new(manifest::OCI_MANIFEST, Digest::of(name.as_bytes()), 1);
        let parsed = Parsed {
            media_type: manifest::OCI_MANIFEST.into(),
            manifests: Vec::new(),
            blobs: Vec::new(),
            subject: Some(Descriptor::new(manifest::OCI_MANIFEST, subject.clone(), 1)),
            artifact_type: None,
            annotations: None,
        };
        (desc.digest.clone(), Arc::new(Node { desc, bytes: Bytes::new(), parsed, stored: false }))
    }

    fn graph(listings: &[(&Digest, &Digest, &[&Digest])]) -> JobGraph {
        let mut g = JobGraph {
            roots: Vec::new(),
            manifests: BTreeSet::new(),
            referrer_nodes: BTreeSet::new(),
            referrers_of: BTreeMap::new(),
            listed_by: BTreeMap::new(),
            blobs: BTreeMap::new(),
        };
        for (subject, index, referrers) in listings {
            g.referrers_of.insert((*subject).clone(), referrers.iter().map(|r| (*r).clone()).collect());
            g.listed_by.insert((*subject).clone(), (*index).clone());
        }
        g
    }

    #[test]
    fn an_index_is_recorded_with_all_of_its_referrers_or_with_none() {
        let (img, other) = (Digest::of(b"img"), Digest::of(b"other"));
        let (idx, idx2, bogus_idx) = (Digest::of(b"idx"), Digest::of(b"idx2"), Digest::of(b"bogus"));
        let (sig, n_sig) = node("sig", &img);
        let (sbom, n_sbom) = node("sbom", &img);
        let (stray, n_stray) = node("stray", &img);
        let (att, n_att) = node("att", &other);
        let nodes: HashMap<Digest, Arc<Node>> =
            [(sig.clone(), n_sig), (sbom.clone(), n_sbom), (stray.clone(), n_stray), (att.clone(), n_att)].into();

        // One job: img's index lists two referrers of img; other's index also lists `stray`, which names img.
        let one = graph(&[(&img, &idx, &[&sig, &sbom]), (&other, &bogus_idx, &[&att, &stray])]);
        let got = recorded_indexes(std::slice::from_ref(&one), &nodes);
        assert_eq!(got[&sig], Some(idx.clone()));
        assert_eq!(got[&sbom], Some(idx.clone()));
        assert_eq!(got[&att], None, "an index listing a manifest of another subject is not recorded");
        assert_eq!(got[&stray], None);

        // Two jobs (repositories) whose indexes of img differ: neither can stand for the other.
        let two = graph(&[(&img, &idx2, &[&sig])]);
        let got = recorded_indexes(&[one, two], &nodes);
        assert_eq!(got[&sig], None);
        assert_eq!(got[&sbom], Some(idx));
    }
}
