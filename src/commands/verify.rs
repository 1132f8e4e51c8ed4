//! `oras verify`: is a backup whole? Every tag resolves, every referenced blob is there with the right
//! size and digest, every referrer's subject is present. Reports every problem, not only the first.

use crate::cli::{Format, VerifyArgs};
use crate::digest::Digest;
use crate::engine::{check_blob, BlobProblem};
use crate::layout::reader::LayoutSource;
use crate::manifest::{self, Descriptor};
use crate::target::{Repo, Source};
use anyhow::{bail, Result};
use futures::{stream, StreamExt};
use std::collections::BTreeMap;
use std::path::Path;

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
}

/// Runs `oras verify`.
pub async fn run(args: VerifyArgs) -> Result<()> {
    let mut out = Outcome { path: args.path.clone(), ..Default::default() };
    match LayoutSource::open(Path::new(&args.path)).await {
        Ok(layout) => check(&layout, &mut out, usize::from(args.concurrency)).await,
        Err(e) => out.problems.push(format!("{e:#}")),
    }
    out.ok = out.problems.is_empty();
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for p in &out.problems {
            println!("problem: {p}");
        }
        if out.ok {
            println!(
                "Verified {:?}: {} tag(s), {} manifest(s), {} blob(s), {} — complete and intact.",
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

async fn check(layout: &LayoutSource, out: &mut Outcome, conc: usize) {
    if let Err(e) = layout.check_layout_file().await {
        out.problems.push(e);
    }
    let repo = Repo::new("", "");
    out.tags = layout.entries().iter().filter(|e| e.tag.is_some()).count();
    // Walk every manifest reachable from index.json, recording every parent of each manifest
    // and blob, so that a problem names everything that refers to the broken content.
    let mut queue: Vec<(Descriptor, String)> = layout
        .entries()
        .iter()
        .map(|e| {
            let what = match (&e.repo, &e.tag) {
                (Some(r), Some(t)) => format!("tag {r}:{t}"),
                (None, Some(t)) => format!("tag {t}"),
                _ => "index.json".to_string(),
            };
            (e.desc.clone(), what)
        })
        .collect();
    let mut manifest_parents: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    // digest -> what is wrong with that manifest (formatted with its parents at the end)
    let mut manifest_problems: BTreeMap<Digest, String> = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, (Descriptor, Vec<String>)> = BTreeMap::new();
    let mut subjects: Vec<(Digest, Digest)> = Vec::new();
    while let Some((desc, parent)) = queue.pop() {
        let parents = manifest_parents.entry(desc.digest.clone()).or_default();
        let first = parents.is_empty();
        parents.push(parent);
        if !first {
            continue;
        }
        if desc.size > manifest::MAX_MANIFEST_SIZE {
            manifest_problems
                .insert(desc.digest.clone(), format!("manifest {} declares {} bytes, over the 4 MiB limit", desc.digest, desc.size));
            continue;
        }
        let bytes = match layout.fetch_manifest(&repo, &desc).await {
            Ok(b) => b,
            Err(_) => {
                let why = layout.absence(&desc.digest).await;
                manifest_problems.insert(desc.digest.clone(), format!("manifest {} {why}", desc.digest));
                continue;
            }
        };
        out.manifests += 1;
        out.bytes += bytes.len() as u64;
        if let Err(e) = crate::digest::verify_bytes(&bytes, &desc.digest, desc.size) {
            manifest_problems.insert(desc.digest.clone(), format!("manifest {}: {e}", desc.digest));
            continue;
        }
        let parsed = match manifest::parse(&desc, &bytes) {
            Ok(p) => p,
            Err(e) => {
                manifest_problems.insert(desc.digest.clone(), e.to_string());
                continue;
            }
        };
        let me = format!("manifest {}", desc.digest);
        for c in &parsed.manifests {
            queue.push((c.clone(), me.clone()));
        }
        for b in &parsed.blobs {
            blobs.entry(b.digest.clone()).or_insert_with(|| (b.clone(), Vec::new())).1.push(me.clone());
        }
        if let Some(s) = &parsed.subject {
            subjects.push((desc.digest.clone(), s.digest.clone()));
        }
    }
    for (digest, problem) in &manifest_problems {
        let parents = manifest_parents.get(digest).map(|p| referenced_by(p)).unwrap_or_default();
        out.problems.push(format!("{problem} ({parents})"));
    }
    for (referrer, subject) in subjects {
        if layout.blob_size(&subject).await.is_none() {
            out.problems.push(format!("referrer {referrer}: its subject {subject} is not in the backup"));
        }
    }
    out.blobs = blobs.len();
    out.bytes += blobs.values().map(|(d, _)| d.size).sum::<u64>();
    let problems: Vec<String> = stream::iter(blobs.into_values().map(|(desc, parents)| {
        let repo = repo.clone();
        let parent = referenced_by(&parents);
        async move {
            match layout.blob_size(&desc.digest).await {
                None => return Some(format!("blob {} ({parent}) {}", desc.digest, layout.absence(&desc.digest).await)),
                Some(s) if s != desc.size => return Some(format!("blob {} ({parent}) is {s} bytes, expected {}", desc.digest, desc.size)),
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
