//! `oras verify`: is a backup whole? Every tag resolves, every referenced blob is there with the right
//! size and digest, every referrer's subject is present. Reports every problem, not only the first.

use crate::cli::{Format, VerifyArgs};
use crate::digest::{Digest, Verifier};
use crate::layout::reader::LayoutSource;
use crate::manifest::{self, Descriptor};
use crate::target::{Repo, Source};
use anyhow::{bail, Result};
use futures::{stream, StreamExt};
use std::collections::{BTreeMap, HashSet};
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

async fn check(layout: &LayoutSource, out: &mut Outcome, conc: usize) {
    if let Err(e) = layout.check_layout_file().await {
        out.problems.push(e);
    }
    let repo = Repo::new("", "");
    out.tags = layout.entries().iter().filter(|e| e.tag.is_some()).count();
    // Walk every manifest reachable from index.json.
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
    let mut seen = HashSet::new();
    let mut blobs: BTreeMap<Digest, (Descriptor, String)> = BTreeMap::new();
    let mut subjects: Vec<(Digest, Digest)> = Vec::new();
    while let Some((desc, parent)) = queue.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if desc.size > manifest::MAX_MANIFEST_SIZE {
            out.problems
                .push(format!("manifest {} (referenced by {parent}) declares {} bytes, over the 4 MiB limit", desc.digest, desc.size));
            continue;
        }
        let bytes = match layout.fetch_manifest(&repo, &desc).await {
            Ok(b) => b,
            Err(_) => {
                out.problems.push(format!("manifest {} (referenced by {parent}) is missing", desc.digest));
                continue;
            }
        };
        out.manifests += 1;
        out.bytes += bytes.len() as u64;
        if let Err(e) = crate::digest::verify_bytes(&bytes, &desc.digest, desc.size) {
            out.problems.push(format!("manifest {} (referenced by {parent}): {e}", desc.digest));
            continue;
        }
        let parsed = match manifest::parse(&desc, &bytes) {
            Ok(p) => p,
            Err(e) => {
                out.problems.push(format!("{e} (referenced by {parent})"));
                continue;
            }
        };
        let me = format!("manifest {}", desc.digest);
        for c in &parsed.manifests {
            queue.push((c.clone(), me.clone()));
        }
        for b in &parsed.blobs {
            blobs.entry(b.digest.clone()).or_insert_with(|| (b.clone(), me.clone()));
        }
        if let Some(s) = &parsed.subject {
            subjects.push((desc.digest.clone(), s.digest.clone()));
        }
    }
    for (referrer, subject) in subjects {
        if layout.blob_size(&subject).await.is_none() {
            out.problems.push(format!("referrer {referrer}: its subject {subject} is not in the backup"));
        }
    }
    out.blobs = blobs.len();
    out.bytes += blobs.values().map(|(d, _)| d.size).sum::<u64>();
    let problems: Vec<String> = stream::iter(blobs.into_values().map(|(desc, parent)| {
        let repo = repo.clone();
        async move {
            match layout.blob_size(&desc.digest).await {
                None => return Some(format!("blob {} (referenced by {parent}) is missing", desc.digest)),
                Some(s) if s != desc.size => {
                    return Some(format!("blob {} (referenced by {parent}) is {s} bytes, expected {}", desc.digest, desc.size))
                }
                _ => {}
            }
            let mut s = match layout.fetch_blob(&repo, &desc).await {
                Ok(s) => s,
                Err(e) => return Some(format!("blob {} (referenced by {parent}): {e:#}", desc.digest)),
            };
            let mut v = Verifier::new(&desc.digest, desc.size);
            while let Some(chunk) = s.next().await {
                match chunk {
                    Ok(c) => {
                        if let Err(e) = v.update(&c) {
                            return Some(format!("blob {e} (referenced by {parent})"));
                        }
                    }
                    Err(e) => return Some(format!("blob {} (referenced by {parent}): {e}", desc.digest)),
                }
            }
            v.finish().err().map(|e| format!("blob {e} (referenced by {parent})"))
        }
    }))
    .buffer_unordered(conc.max(1))
    .filter_map(|p| async move { p })
    .collect()
    .await;
    out.problems.extend(problems);
    out.problems.sort();
}
