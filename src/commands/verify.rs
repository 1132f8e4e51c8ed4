//! `oras verify`: is a backup whole? Every tag resolves, every referenced blob is there with the
//! right size and digest, every referrer's subject is present. Reports every problem, not only the
//! first.

use crate::cli::{Format, VerifyArgs};
use crate::digest::Digest;
use crate::engine::{check_blob, BlobProblem};
use crate::layout::chain;
use crate::layout::graph::{Broken, Parent};
use crate::layout::reader::LayoutSource;
use crate::manifest::Descriptor;
use crate::target::Repo;
use anyhow::{bail, Result};
use futures::{stream, StreamExt};

/// What verify found.
#[derive(serde::Serialize, Default)]
struct Outcome {
    path: String,
    ok: bool,
    tags: usize,
    manifests: usize,
    blobs: usize,
    bytes: u64,
    problems: Vec<String>,
    /// Indexes held partially by design (`--sparse-index`), each with what it holds.
    partial: Vec<String>,
    /// For a docker save archive: the manifest built for each image.
    built: Vec<String>,
    /// For an incremental backup: the bases it was checked with.
    bases: Vec<String>,
}

/// Runs `oras verify`.
pub async fn run(args: VerifyArgs) -> Result<()> {
    let mut out = Outcome { path: args.path.clone(), ..Default::default() };
    let inputs: Vec<String> = std::iter::once(args.path.clone()).chain(args.base.clone()).collect();
    match chain::open(&inputs, Default::default()).await {
        Ok(opened) => {
            out.bases = opened.found.clone();
            out.bases.extend(args.base.iter().cloned());
            check(&opened.source, &mut out, usize::from(args.concurrency)).await
        }
        Err(e) => out.problems.push(format!("{e:#}")),
    }
    out.ok = out.problems.is_empty();
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for p in &out.problems {
            println!("problem: {p}");
        }
        for p in &out.partial {
            println!("partial: {p}");
        }
        for b in &out.built {
            println!("{b}");
        }
        if out.ok {
            let with = if out.bases.is_empty() {
                String::new()
            } else {
                format!(" with its base(s) {}", out.bases.join(", "))
            };
            println!(
                "Verified {:?}{with}: {} tag(s), {} manifest(s), {} blob(s), {} — complete and intact.",
                out.path,
                out.tags,
                out.manifests,
                out.blobs,
                indicatif::HumanBytes(out.bytes)
            );
        }
    }
    if !out.ok {
        bail!("backup {:?} failed verification: {} problem(s)", out.path, out.problems.len());
    }
    Ok(())
}

/// "tag v1, manifest sha256:..." — every parent, a few named, the rest counted.
fn referenced_by(parents: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut list: Vec<&str> = parents.iter().map(String::as_str).collect();
    list.sort_unstable();
    list.dedup();
    let more = list.len().saturating_sub(SHOWN);
    let mut text = list.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    format!("referenced by {text}")
}

/// How `verify` names a parent: "tag r:t", "index.json", "manifest sha256:...".
fn parent_name(layout: &LayoutSource, p: &Parent) -> String {
    match p {
        Parent::Manifest(d) => format!("manifest {d}"),
        Parent::Index(i) => match layout.entries().get(*i).map(|e| (&e.repo, &e.tag)) {
            Some((Some(r), Some(t))) => format!("tag {r}:{t}"),
            Some((None, Some(t))) => format!("tag {t}"),
            _ => "index.json".to_string(),
        },
    }
}

async fn check(layout: &LayoutSource, out: &mut Outcome, conc: usize) {
    out.built = layout.docker_images().iter().map(|i| i.describe()).collect();
    // A docker save archive has no oci-layout file: its manifests are built, not stored.
    if out.built.is_empty() {
        if let Err(e) = layout.check_layout_file().await {
            out.problems.push(e);
        }
    }
    let repo = Repo::new("", "");
    out.tags = layout.entries().iter().filter(|e| e.tag.is_some()).count();
    let graph = match layout.graph().await {
        Ok(g) => g,
        Err(e) => {
            out.problems.push(format!("{e:#}"));
            return;
        }
    };
    // Every problem names everything that refers to the broken content.
    let parents_of = |d: &Digest| {
        let names: Vec<String> =
            graph.parents.get(d).into_iter().flatten().map(|p| parent_name(layout, p)).collect();
        referenced_by(&names)
    };
    for (desc, _) in graph.manifests.values() {
        if let Some(kept) = layout
            .entries()
            .iter()
            .find(|e| e.desc.digest == desc.digest)
            .and_then(|e| e.desc.sparse_platforms())
        {
            out.partial.push(format!(
                "index {} holds only the manifests of {kept} (--sparse-index)",
                desc.digest
            ));
        }
    }
    out.manifests = graph.manifests.len();
    out.bytes = graph.manifests.values().map(|(d, _)| d.size).sum();
    for (digest, (desc, why)) in &graph.broken {
        let problem = match why {
            Broken::TooLarge => {
                format!("manifest {digest} declares {} bytes, over the 4 MiB limit", desc.size)
            }
            Broken::Missing => format!("manifest {digest} {}", layout.absence(digest).await),
            Broken::Damaged(e) => e.clone(),
        };
        out.problems.push(format!("{problem} ({})", parents_of(digest)));
    }
    for (referrer, subject) in &graph.subjects {
        if layout.blob_size(subject).await.is_none() {
            out.problems
                .push(format!("referrer {referrer}: its subject {subject} is not in the backup"));
        }
    }
    let blobs: Vec<(Descriptor, String)> = graph
        .blobs
        .values()
        .filter(|b| !graph.manifests.contains_key(&b.digest))
        .map(|b| (b.clone(), parents_of(&b.digest)))
        .collect();
    out.blobs = blobs.len();
    out.bytes += blobs.iter().map(|(d, _)| d.size).sum::<u64>();
    let problems: Vec<String> = stream::iter(blobs.into_iter().map(|(desc, parent)| {
        let repo = repo.clone();
        async move {
            match layout.blob_size(&desc.digest).await {
                None => {
                    return Some(format!(
                        "blob {} ({parent}) {}",
                        desc.digest,
                        layout.absence(&desc.digest).await
                    ))
                }
                Some(s) if s != desc.size => {
                    return Some(format!(
                        "blob {} ({parent}) is {s} bytes, expected {}",
                        desc.digest, desc.size
                    ))
                }
                _ => {}
            }
            check_blob(layout, &repo, &desc).await.err().map(|e| match e {
                BlobProblem::Unreadable(e) => format!("blob {} ({parent}): {e:#}", desc.digest),
                BlobProblem::Bytes(e) => format!("blob {e} ({parent})"),
                BlobProblem::Read(e) => format!("blob {} ({parent}): {e}", desc.digest),
            })
        }
    }))
    .buffer_unordered(conc.max(1))
    .filter_map(|p| async move { p })
    .collect()
    .await;
    out.problems.extend(problems);
    out.problems.sort();
}
