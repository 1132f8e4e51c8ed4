//! `oras discover`: the referrers tree of a manifest, from a registry or a backup.

use super::repo::{locate, Located};
use crate::cli::{DiscoverArgs, Format};
use crate::manifest::Descriptor;
use crate::target::{Repo, Source};
use anyhow::Result;
use serde::Serialize;
use std::collections::HashSet;

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
    let Located { src, repo, desc, shown } =
        locate(&args.reference, args.oci_layout, &args.common).await?;
    let mut seen = HashSet::new();
    let referrers =
        tree(&*src, &repo, &desc, args.depth, args.artifact_type.as_deref(), &mut seen).await?;
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
