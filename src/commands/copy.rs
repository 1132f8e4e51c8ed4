//! `oras copy`: one graph between any two targets (registry repositories, layout directories or
//! tars).

use super::common;
use super::repo::{resolve_in_layout, split_layout_arg};
use super::UsageError;
use crate::cli::{CopyArgs, Format};
use crate::engine::{self, Job, Options};
use crate::layout::dir::DirSink;
use crate::layout::reader::LayoutSource;
use crate::layout::tar_write::TarSink;
use crate::reference::{valid_tag, Reference};
use crate::target::{Repo, Sink, Source};
use anyhow::Result;
use std::sync::Arc;

/// Object storage is written by `oras backup`, which commits an archive only once complete: a
/// copy's destination naming it is refused rather than taken for a local path.
fn refuse_object_storage(to: &str, path: &std::path::Path) -> Result<()> {
    if crate::object::parse(&path.to_string_lossy()).map_err(UsageError)?.is_some() {
        return Err(UsageError(format!(
            "oras copy writes layouts on local disk only; to write {to:?}, use oras backup -o {to:?} <reference>"
        ))
        .into());
    }
    Ok(())
}

/// Runs `oras copy`.
pub async fn run(args: CopyArgs) -> Result<()> {
    common::check_platforms(&args.platforms)?;
    let regs = common::registries(&args.common, false)?;
    // Source.
    let (src, src_repo, refs, label): (Arc<dyn Source>, Repo, Vec<String>, String) =
        if args.from_oci_layout {
            let (path, reference) = split_layout_arg(&args.from);
            let layout = LayoutSource::open(&path).await?;
            let (repo, refs) = match &reference {
                Some(r) => {
                    let (repo, desc) = resolve_in_layout(&layout, r).await?;
                    (repo, vec![layout_tag(r).unwrap_or_else(|| desc.digest.to_string())])
                }
                None => (layout.find_repo(None)?, Vec::new()),
            };
            (Arc::new(layout), repo, refs, path.display().to_string())
        } else {
            let r = Reference::parse(&args.from).map_err(|e| UsageError(e.to_string()))?;
            let mut refs = r.tags.clone();
            if let Some(d) = &r.digest {
                refs.push(d.to_string());
            }
            let repo = Repo::new(&r.registry, &r.repository);
            (regs.clone(), repo, refs, r.repo_name())
        };
    // Destination.
    let (dst, dst_repo, retag): (Arc<dyn Sink>, Repo, Option<Vec<String>>) = if args.to_oci_layout {
        let (path, tag) = match args.to.rsplit_once(':') {
            Some((p, t)) if valid_tag(t) && !p.is_empty() && !t.contains('/') => {
                (std::path::PathBuf::from(p), Some(t.to_string()))
            }
            _ => (std::path::PathBuf::from(&args.to), None),
        };
        refuse_object_storage(&args.to, &path)?;
        // The path, not the whole argument, decides: `out.tar:Release` is an archive too.
        let sink: Arc<dyn Sink> = if path.to_string_lossy().to_ascii_lowercase().ends_with(".tar") {
            Arc::new(TarSink::create(&path)?)
        } else {
            Arc::new(DirSink::create(&path).await?)
        };
        (sink, src_repo.clone(), tag.map(|t| vec![t]))
    } else {
        let r = Reference::parse(&args.to).map_err(|e| UsageError(e.to_string()))?;
        if r.digest.is_some() {
            return Err(UsageError("the destination takes tags, not a digest".into()).into());
        }
        let retag = if r.tags.is_empty() { None } else { Some(r.tags.clone()) };
        (regs.clone(), Repo::new(&r.registry, &r.repository), retag)
    };
    if retag.is_some() && refs.len() > 1 {
        return Err(
            UsageError("copy one tag or digest when the destination names tags".into()).into()
        );
    }
    let job = Job { refs, retag, ..Job::new(src_repo, dst_repo, label) };
    let opts = Options {
        concurrency: args.common.concurrency.map(usize::from).unwrap_or(3),
        referrers: args.recursive,
        dry_run: false,
        platforms: args.platforms.platform.clone(),
        sparse_index: args.platforms.sparse_index,
        held: None,
    };
    let mut progress = common::progress(&args.common);
    let report = engine::run(src, dst, std::slice::from_ref(&job), &opts, &mut progress).await?;
    if args.common.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "command": "copy", "from": args.from, "to": args.to, "report": report })
            )?
        );
        return Ok(());
    }
    let copied: Vec<String> = report
        .jobs
        .iter()
        .flat_map(|j| &j.roots)
        .map(|r| {
            format!(
                "Copied {} {} with {} referrer(s)",
                r.tag.as_deref().unwrap_or("digest"),
                r.digest,
                r.referrers
            )
        })
        .collect();
    progress.status_lines(&copied);
    progress.status(&format!(
        "Copied {:?} to {:?} in {}: {} copied, {} already present.",
        args.from,
        args.to,
        common::duration(report.seconds),
        common::size(report.bytes_copied),
        common::size(report.bytes_skipped)
    ));
    Ok(())
}

/// The tag a `--from-oci-layout` reference names (`<tag>` or `<registry>/<repo>:<tag>`), or
/// `None` for a digest, so that a copied tag keeps its name.
fn layout_tag(reference: &str) -> Option<String> {
    if reference.starts_with('@')
        || reference.contains('@')
        || reference.parse::<crate::digest::Digest>().is_ok()
    {
        return None;
    }
    if reference.contains('/') {
        return Reference::parse(reference).ok().and_then(|r| r.tags.first().cloned());
    }
    Some(reference.to_string()).filter(|t| valid_tag(t))
}
