//! The first phase: a job's tags and digests resolved to the root descriptors its graph hangs from.

use super::{Job, Root};
use crate::digest::Digest;
use crate::progress::Progress;
use crate::target::{kind_of, ErrorKind, Resolved, Sink, Source};
use anyhow::{bail, Result};
use bytes::Bytes;
use futures::{stream, StreamExt};
use std::collections::HashMap;
use std::sync::Mutex;

/// Manifests that came with the answer to a resolve: the walk does not fetch them again.
pub(super) type Prefetched = Mutex<HashMap<Digest, Bytes>>;

/// Resolves a job's roots: its named references, or every tag (and, for layouts, every untagged
/// root).
pub(super) async fn resolve(
    (src, dst): (&dyn Source, &dyn Sink),
    job: &Job,
    conc: usize,
    progress: &Progress,
    prefetched: &Prefetched,
) -> Result<Vec<Root>> {
    let listed = job.refs.is_empty();
    let refs = if listed { listed_tags(src, job, progress).await? } else { job.refs.clone() };
    let mut roots = Vec::new();
    if listed && job.only_tags.is_none() && !job.filter.is_set() {
        roots
            .extend(src.untagged(&job.src).await?.into_iter().map(|desc| Root { tag: None, desc }));
    }
    let hints = dst.hints();
    let results: Vec<(String, Result<Resolved>)> =
        stream::iter(refs.into_iter().map(|r| async move {
            // A tag the destination already holds (a second backup into a directory) is only
            // confirmed.
            let known = if job.retag.is_none() {
                hints.known_tag(&job.dst, &job.dst_tag(r.clone()))
            } else {
                None
            };
            let d = src.resolve(&job.src, &r, known.as_ref()).await;
            (r, d)
        }))
        .buffered(conc)
        .collect()
        .await;
    let mut missing = Vec::new();
    for (r, d) in results {
        match d {
            Ok(Resolved { desc, bytes }) => {
                if let (Some(b), Ok(mut p)) = (bytes, prefetched.lock()) {
                    p.insert(desc.digest.clone(), b);
                }
                let tag = if r.starts_with("sha256:") { None } else { Some(job.dst_tag(r)) };
                roots.push(Root { tag, desc });
            }
            Err(e) if kind_of(&e) == ErrorKind::NotFound => missing.push(r),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        bail!("not found in {}: {} (check the tag names)", job.label, missing.join(", "));
    }
    Ok(roots)
}

/// Every tag of the job's source repository (only those of `only_tags` when it is set); an error
/// when there is nothing to copy.
async fn listed_tags(src: &dyn Source, job: &Job, progress: &Progress) -> Result<Vec<String>> {
    let mut tags = src.tags(&job.src).await?;
    if let Some(only) = &job.only_tags {
        let missing: Vec<&str> =
            only.iter().filter(|t| !tags.contains(t)).map(String::as_str).collect();
        if !missing.is_empty() {
            bail!("tag(s) not found in {}: {}", job.label, missing.join(", "));
        }
        tags.retain(|t| only.contains(t));
    }
    if job.filter.is_set() {
        let listed = tags.len();
        let said = job.filter.apply(&mut tags);
        progress.status(&format!("Tag filters on the {listed} tag(s) of {}: {said}", job.label));
        if tags.is_empty() {
            bail!("the tag filters leave none of the {listed} tag(s) of {}: check --include-tags / --exclude-tags", job.label);
        }
    }
    if tags.is_empty() && src.untagged(&job.src).await?.is_empty() {
        bail!(
            "{} has no tags to copy: name a tag or digest, or check the repository name",
            job.label
        );
    }
    if !tags.is_empty() {
        progress.status(&format!(
            "Found {} tag(s) in {}: {}",
            tags.len(),
            job.label,
            abbreviate(&tags)
        ));
    }
    Ok(tags)
}

/// The first ten tags, and how many more there are.
fn abbreviate(tags: &[String]) -> String {
    if tags.len() <= 10 {
        tags.join(", ")
    } else {
        format!("{}, ... and {} more", tags[..10].join(", "), tags.len() - 10)
    }
}
