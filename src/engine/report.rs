//! What a run did: per job, the roots copied and their referrers; overall, what was written,
//! skipped and mounted, in counts and bytes.

use super::transfer::BlobOutcome;
use super::{JobGraph, JobId, Node, Run};
use crate::digest::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

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
    /// Bytes written into this destination (or, in a dry run, that would be).
    pub bytes_copied: u64,
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
    /// Bytes not written because the destination had them, or took them by a mount.
    pub bytes_skipped: u64,
    /// Of `bytes_skipped`, the bytes of blobs mounted from another repository.
    pub bytes_mounted: u64,
    /// Total bytes of the graph in every destination repository: `bytes_copied + bytes_skipped`, so
    /// a blob copied into one repository and mounted into another counts in each, and the parts add
    /// up.
    pub bytes_total: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// Bytes written per job, until [`Report::finish`] puts them in `jobs`.
    #[serde(skip)]
    copied_by_job: HashMap<JobId, u64>,
}

impl Report {
    /// Adds another run's report (a job run alone) to this one.
    pub fn merge(&mut self, other: Report) {
        self.jobs.extend(other.jobs);
        self.blobs_copied += other.blobs_copied;
        self.blobs_skipped += other.blobs_skipped;
        self.blobs_mounted += other.blobs_mounted;
        self.manifests_copied += other.manifests_copied;
        self.manifests_skipped += other.manifests_skipped;
        self.bytes_copied += other.bytes_copied;
        self.bytes_skipped += other.bytes_skipped;
        self.bytes_mounted += other.bytes_mounted;
        self.bytes_total += other.bytes_total;
        self.seconds += other.seconds;
    }

    /// Counts what became of blobs.
    pub(super) fn add_blobs(&mut self, outcomes: impl IntoIterator<Item = (JobId, BlobOutcome)>) {
        for (job, o) in outcomes {
            match o {
                BlobOutcome::Copied(n) => {
                    self.blobs_copied += 1;
                    self.bytes_copied += n;
                    *self.copied_by_job.entry(job).or_default() += n;
                }
                BlobOutcome::Mounted(n) => {
                    self.blobs_mounted += 1;
                    self.bytes_skipped += n;
                    self.bytes_mounted += n;
                }
                BlobOutcome::Skipped(n) => {
                    self.blobs_skipped += 1;
                    self.bytes_skipped += n;
                }
            }
        }
    }

    /// Counts a manifest written (`copied`) or found there.
    pub(super) fn manifest(&mut self, job: JobId, copied: bool, size: u64) {
        if copied {
            self.manifests_copied += 1;
            self.bytes_copied += size;
            *self.copied_by_job.entry(job).or_default() += size;
        } else {
            self.manifests_skipped += 1;
            self.bytes_skipped += size;
        }
    }

    /// Adds the per-job results and the totals.
    pub(super) fn finish(mut self, run: &Run<'_>, started: Instant) -> Report {
        for (id, job, g) in run.each() {
            let roots = g
                .roots
                .iter()
                .map(|root| RootReport {
                    tag: root.tag.clone(),
                    digest: root.desc.digest.to_string(),
                    referrers: count_referrers(&root.desc.digest, &run.nodes, g),
                })
                .collect();
            let bytes_copied = self.copied_by_job.get(&id).copied().unwrap_or(0);
            self.jobs.push(JobReport {
                source: job.src.to_string(),
                destination: job.dst.to_string(),
                roots,
                bytes_copied,
            });
        }
        self.bytes_total = self.bytes_copied + self.bytes_skipped;
        self.seconds = started.elapsed().as_secs_f64();
        self
    }
}

/// The referrers reachable from a root (referrers of its children and of referrers included).
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
