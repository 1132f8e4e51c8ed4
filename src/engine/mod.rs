//! The one graph-copy engine: resolves roots, walks manifests (and referrers), then copies blobs,
//! manifests children-first and tags, deduplicated by digest, verified as bytes stream.
//!
//! One run goes through phases, each a module: [`roots`] (tags to descriptors), [`walk`] (the graph
//! under them), [`plan`] (what the destination will hold, handed to sinks that lay it out ahead),
//! [`present`] (what the destination already holds), [`blobs`] (with [`stage`] for restoring a
//! backup while it is checked), [`manifests`] (children before parents, then tags) and [`report`].

use crate::digest::Digest;
use crate::manifest::{Descriptor, Parsed};
use crate::progress::Progress;
use crate::target::{Sink, Source};
use anyhow::Result;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

mod blobs;
mod manifests;
mod plan;
mod platform;
mod present;
mod report;
mod roots;
mod stage;
mod transfer;
mod walk;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

pub use platform::Platform;
pub use report::{JobReport, Report, RootReport};
pub use transfer::{check_blob, BlobProblem};

/// What to copy from one source repository into one destination repository.
#[derive(Clone, Debug)]
pub struct Job {
    /// Repository read from.
    pub src: crate::target::Repo,
    /// Repository written to.
    pub dst: crate::target::Repo,
    /// Tags or digests to copy; empty means every tag (and, for layouts, every untagged root).
    pub refs: Vec<String>,
    /// How the source is named in status lines.
    pub label: String,
    /// Tag the copied roots with these instead of their own tags (copy with a new tag).
    pub retag: Option<Vec<String>>,
    /// Restrict tags to these when copying every tag of a layout repository (restore `repo:tags`).
    pub only_tags: Option<Vec<String>>,
    /// New names for some tags at the destination (a rules file's `tag-mappings`).
    pub rename: BTreeMap<String, String>,
    /// Leave this job's referrers behind even when the run follows referrers.
    pub exclude_referrers: bool,
    /// Which of the listed tags to take.
    pub filter: TagFilter,
}

impl Job {
    /// A job copying every tag of `src` into `dst`.
    pub fn new(src: crate::target::Repo, dst: crate::target::Repo, label: String) -> Job {
        Job {
            src,
            dst,
            refs: Vec::new(),
            label,
            retag: None,
            only_tags: None,
            rename: BTreeMap::new(),
            exclude_referrers: false,
            filter: TagFilter::default(),
        }
    }

    /// The tag a source tag gets at the destination.
    fn dst_tag(&self, tag: String) -> String {
        self.rename.get(&tag).cloned().unwrap_or(tag)
    }
}

/// Regular expressions selecting tags from a repository's list (`--include-tags`,
/// `--exclude-tags`); a tag is kept when it matches every include pattern and no exclude pattern.
/// Patterns match the whole tag.
#[derive(Clone, Debug, Default)]
pub struct TagFilter {
    /// Patterns a tag must match.
    pub include: Vec<regex::Regex>,
    /// Patterns a tag must not match.
    pub exclude: Vec<regex::Regex>,
}

impl TagFilter {
    /// Compiles `--include-tags` / `--exclude-tags` patterns, anchored to the whole tag.
    pub fn new(include: &[String], exclude: &[String]) -> std::result::Result<TagFilter, String> {
        let compile = |flag: &str, p: &String| {
            regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                format!("{flag} {p:?} is not a valid regular expression: {first}")
            })
        };
        Ok(TagFilter {
            include: include
                .iter()
                .map(|p| compile("--include-tags", p))
                .collect::<std::result::Result<_, _>>()?,
            exclude: exclude
                .iter()
                .map(|p| compile("--exclude-tags", p))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    /// Whether any pattern is set.
    pub fn is_set(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// Whether a tag passes.
    pub fn keeps(&self, tag: &str) -> bool {
        self.included(tag) && !self.excluded(tag)
    }

    fn included(&self, tag: &str) -> bool {
        self.include.iter().all(|r| r.is_match(tag))
    }

    fn excluded(&self, tag: &str) -> bool {
        self.exclude.iter().any(|r| r.is_match(tag))
    }

    /// Keeps the tags that pass; says how many each kind of pattern kept
    /// (`--include-tags kept 4, --exclude-tags kept 3 of 4`).
    pub fn apply(&self, tags: &mut Vec<String>) -> String {
        let mut said = Vec::new();
        if !self.include.is_empty() {
            tags.retain(|t| self.included(t));
            said.push(format!("--include-tags kept {}", tags.len()));
        }
        if !self.exclude.is_empty() {
            let before = tags.len();
            tags.retain(|t| !self.excluded(t));
            said.push(format!("--exclude-tags kept {} of {before}", tags.len()));
        }
        said.join(", ")
    }
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
    /// Copy only these platforms' manifests of a multi-platform index root (`--platform`): one,
    /// whose manifest replaces the index, or with `sparse_index` any number, the index kept.
    pub platforms: Vec<Platform>,
    /// Keep index roots as they are, with only the chosen platforms' manifests (`--sparse-index`).
    pub sparse_index: bool,
    /// Content the destination need not hold because an earlier backup it builds on holds it
    /// (`backup --base`): neither written nor planned, counted as already there.
    pub held: Option<Arc<std::collections::HashSet<Digest>>>,
}

/// The position of a job in the run's list, which every per-job record is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct JobId(usize);

/// A root of a job: a tagged manifest, or one copied by digest or stored untagged.
#[derive(Clone, Debug)]
struct Root {
    tag: Option<String>,
    desc: Descriptor,
}

/// A manifest of the graph, read and checked.
struct Node {
    desc: Descriptor,
    bytes: Bytes,
    parsed: Parsed,
    /// Read from the destination, which therefore holds it.
    stored: bool,
}

/// The graph under one job's roots.
#[derive(Default)]
struct JobGraph {
    roots: Vec<Root>,
    /// Every manifest of the graph, roots and referrers included.
    manifests: BTreeSet<Digest>,
    referrer_nodes: BTreeSet<Digest>,
    referrers_of: BTreeMap<Digest, Vec<Digest>>,
    /// Digest of the source's referrers index each subject's referrers were listed by, where there
    /// is one.
    listed_by: BTreeMap<Digest, Digest>,
    blobs: BTreeMap<Digest, Descriptor>,
    /// Index roots replaced by one platform's manifest, whose referrers are still to be copied.
    left_indexes: Vec<Descriptor>,
    /// Index children left out: not selected (`--sparse-index`), or absent from a partial source.
    left_out: BTreeSet<Digest>,
    /// Index roots copied partially (their digests).
    partial: BTreeSet<Digest>,
}

/// Everything the phases after the walk share.
struct Run<'a> {
    src: Arc<dyn Source>,
    dst: Arc<dyn Sink>,
    jobs: &'a [Job],
    graphs: Vec<JobGraph>,
    nodes: HashMap<Digest, Arc<Node>>,
    opts: &'a Options,
    /// Transfers at once (at least one).
    conc: usize,
}

impl Run<'_> {
    fn job(&self, id: JobId) -> &Job {
        &self.jobs[id.0]
    }

    fn graph(&self, id: JobId) -> &JobGraph {
        &self.graphs[id.0]
    }

    /// Every job with its graph.
    fn each(&self) -> impl Iterator<Item = (JobId, &Job, &JobGraph)> {
        self.jobs.iter().zip(&self.graphs).enumerate().map(|(i, (j, g))| (JobId(i), j, g))
    }
}

/// Runs one copy of `jobs` from `src` to `dst`.
pub async fn run(
    src: Arc<dyn Source>,
    dst: Arc<dyn Sink>,
    jobs: &[Job],
    opts: &Options,
    progress: &mut Progress,
) -> Result<Report> {
    let done = phases(src, dst.clone(), jobs, opts, progress).await;
    if done.is_err() {
        dst.abandon().await;
    }
    done
}

/// The phases of one run, in order.
async fn phases(
    src: Arc<dyn Source>,
    dst: Arc<dyn Sink>,
    jobs: &[Job],
    opts: &Options,
    progress: &mut Progress,
) -> Result<Report> {
    let started = Instant::now();
    let conc = opts.concurrency.max(1);
    let (graphs, nodes) = walk::graphs((&src, &dst), jobs, opts, conc, progress).await?;
    let run = Run { src, dst, jobs, graphs, nodes, opts, conc };
    if !opts.dry_run {
        plan::prepare(&run).await?;
    }
    progress.start_overall(
        run.graphs.iter().flat_map(|g| g.blobs.values()).map(|d| d.size).sum(),
        if opts.dry_run { "checking" } else { "copying" },
    );
    let mut known = if run.dst.traits().whole_graphs {
        present::already_there(&run).await?
    } else {
        present::Known::default()
    };
    if let Some(held) = &opts.held {
        present::held_elsewhere(&run, held, &mut known);
    }
    let mut report = Report::default();
    report.add_blobs(blobs::copy(&run, &known, progress).await?);
    let tagged_early = manifests::copy(&run, &known, &mut report).await?;
    if !opts.dry_run {
        manifests::tag(&run, &known, &tagged_early).await?;
        run.dst.finish().await?;
    }
    progress.finish();
    Ok(report.finish(&run, started))
}

/// Runs `f` as a task of its own, on whichever worker thread is free; dropping the returned future
/// aborts it, so the caller's concurrency limit and cancellation hold as if `f` were awaited in
/// place.
async fn on_own_task<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, tokio::task::JoinError> {
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(f)).await
}
