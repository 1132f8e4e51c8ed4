//! `oras discover`: the referrers tree of a manifest, from a registry or a backup.

use super::common;
use super::repo::{resolve_in_layout, split_layout_arg};
use super::UsageError;
use crate::cli::{DiscoverArgs, Format};
use crate::layout::reader::LayoutSource;
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::target::{Repo, Source};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;

/// One node of the referrers tree.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    #[serde(flatten)]
    desc: Descriptor,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    referrers: Vec<Node>,
}

async fn tree(
    src: &dyn Source,
    repo: &Repo,
    desc: &Descriptor,
    depth: Option<usize>,
    filter: Option<&str>,
    seen: &mut HashSet<String>,
) -> Result<Vec<Node>> {
    if depth == Some(0) || !seen.insert(desc.digest.to_string()) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for r in src.predecessors(repo, desc, None).await?.referrers {
        let children = Box::pin(tree(src, repo, &r, depth.map(|d| d - 1), filter, seen)).await?;
        if filter.is_none_or(|f| r.artifact_type.as_deref() == Some(f)) {
            out.push(Node { desc: r, referrers: children });
        } else {
            // Filtered out, but what refers to it may match: lift it up a level.
            out.extend(children);
        }
    }
    Ok(out)
}

fn print_tree(nodes: &[Node], prefix: &str) {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let kind = n.desc.artifact_type.as_deref().unwrap_or(&n.desc.media_type);
        println!("{prefix}{} {kind} {}", if last { "└──" } else { "├──" }, n.desc.digest);
        let next = format!("{prefix}{}", if last { "    " } else { "│   " });
        print_tree(&n.referrers, &next);
    }
}

/// Runs `oras discover`.
pub async fn run(args: DiscoverArgs) -> Result<()> {
    let (src, repo, desc, shown): (Arc<dyn Source>, Repo, Descriptor, String) = if args.oci_layout {
        let (path, reference) = split_layout_arg(&args.reference);
        let reference = reference.ok_or_else(|| UsageError("name a tag or digest: --oci-layout <path>:<tag> or <path>@<digest>".into()))?;
        let layout = LayoutSource::open(&path).await?;
        let (repo, desc) = resolve_in_layout(&layout, &reference).await.map_err(|e| anyhow!("{e:#} {}", path.display()))?;
        (Arc::new(layout), repo, desc, path.display().to_string())
    } else {
        let r = Reference::parse(&args.reference).map_err(|e| UsageError(e.to_string()))?;
        let reference = match (&r.digest, r.tags.as_slice()) {
            (Some(d), _) => d.to_string(),
            (None, [t]) => t.clone(),
            _ => return Err(UsageError(format!("name one tag or a digest: {}", args.reference)).into()),
        };
        let regs = common::registries(&args.common, true)?;
        let repo = Repo::new(&r.registry, &r.repository);
        let desc = regs.resolve_head(&repo, &reference).await?;
        let shown = repo.to_string();
        (regs, repo, desc, shown)
    };
    let mut seen = HashSet::new();
    let referrers = tree(&*src, &repo, &desc, args.depth, args.artifact_type.as_deref(), &mut seen).await?;
    let root = Node { desc, referrers };
    if args.common.format == Format::Json {
        let mut v = serde_json::to_value(&root)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("reference".into(), serde_json::Value::String(args.reference.clone()));
            o.entry("referrers").or_insert(serde_json::Value::Array(Vec::new()));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{shown}@{}", root.desc.digest);
        print_tree(&root.referrers, "");
    }
    Ok(())
}
