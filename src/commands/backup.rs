//! `oras backup`: registry repositories -> one layout (directory or tar).

use super::common;
use super::UsageError;
use crate::cli::{BackupArgs, Format};
use crate::engine::{self, Job, Options};
use crate::layout::dir::DirSink;
use crate::layout::tar_stream::StreamTarSink;
use crate::layout::tar_write::TarSink;
use crate::reference::Reference;
use crate::target::{Repo, Sink, Source};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;

enum Output {
    Dir(PathBuf),
    Tar(PathBuf),
    Stdout,
}

fn output(spec: &str) -> Result<Output> {
    if spec.trim().is_empty() {
        return Err(UsageError("--output is empty: give a directory, or a path ending in .tar".into()).into());
    }
    if spec == "-" {
        return Ok(Output::Stdout);
    }
    let p = PathBuf::from(spec);
    let lower = spec.to_ascii_lowercase();
    if lower.ends_with(".tar") {
        return Ok(Output::Tar(p));
    }
    if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
        if !p.is_dir() {
            eprintln!("Warning: output {spec:?} has extension .{ext}, which is not .tar: writing an OCI layout directory there");
        }
    }
    Ok(Output::Dir(p))
}

/// Cleans up after a run into a directory it created that did not complete (also on Ctrl-C): an empty
/// skeleton is removed; verified blobs are kept so a re-run resumes, and without index.json it never looks complete.
struct CreatedDir(Option<PathBuf>);

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let has_blobs = std::fs::read_dir(dir.join("blobs/sha256")).map(|mut d| d.next().is_some()).unwrap_or(false);
            if has_blobs {
                eprintln!("Note: the incomplete backup in {} has no index.json; run the same command again to resume it", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Runs `oras backup`.
pub async fn run(args: BackupArgs) -> Result<()> {
    let out = output(&args.output)?;
    if matches!(out, Output::Stdout) && args.common.format == Format::Json {
        return Err(UsageError("--format json cannot be used with -o -: standard output carries the archive".into()).into());
    }
    if matches!(out, Output::Stdout) && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(UsageError(
            "-o - writes a tar archive to standard output, which is a terminal: redirect it to a file or a pipe (... > backup.tar), or give a path".into(),
        )
        .into());
    }
    let mut refs = Vec::new();
    for r in &args.references {
        refs.push(Reference::parse(r).map_err(|e| UsageError(e.to_string()))?);
    }
    let registries = common::registries(&args.common, true)?;
    let mut progress = common::progress(&args.common);
    if matches!(out, Output::Stdout) {
        progress.status_to_stderr();
    }
    let jobs: Vec<Job> = refs
        .iter()
        .map(|r| {
            let repo = Repo::new(&r.registry, &r.repository);
            let mut list = r.tags.clone();
            if let Some(d) = &r.digest {
                list.push(d.to_string());
            }
            Job { src: repo.clone(), dst: repo, refs: list, only_tags: None, retag: None, label: r.repo_name() }
        })
        .collect();
    let opts =
        Options { concurrency: args.common.concurrency.map(usize::from).unwrap_or(3), referrers: args.include_referrers, dry_run: false };
    let (sink, created_dir): (Arc<dyn Sink>, Option<PathBuf>) = match &out {
        Output::Tar(p) => (Arc::new(TarSink::create(p)?), None),
        Output::Stdout => (Arc::new(StreamTarSink::new(Box::new(tokio::io::stdout()))), None),
        Output::Dir(p) => {
            let existed = p.exists();
            (Arc::new(DirSink::create(p).await?), if existed { None } else { Some(p.clone()) })
        }
    };
    // We made this directory for this run: if it fails, leave nothing behind that could pass for a backup.
    let mut cleanup = CreatedDir(created_dir);
    let src: Arc<dyn Source> = registries;
    let result = engine::run(src, sink.clone(), &jobs, &opts, &mut progress).await;
    drop(sink);
    let report = result?;
    cleanup.0 = None;
    let tags: usize = report.jobs.iter().map(|j| j.roots.iter().filter(|r| r.tag.is_some()).count()).sum();
    let repos: std::collections::BTreeSet<&str> = report.jobs.iter().map(|j| j.source.as_str()).collect();
    if args.common.format == Format::Json {
        let doc = serde_json::json!({
            "command": "backup",
            "output": args.output,
            "tags": tags,
            "repositories": repos.len(),
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let pulled: Vec<String> = report
        .jobs
        .iter()
        .flat_map(|j| {
            j.roots.iter().map(move |r| match &r.tag {
                Some(t) => format!("Pulled tag {t} with {} referrer(s)", r.referrers),
                None => format!("Pulled {}@{} with {} referrer(s)", j.source, r.digest, r.referrers),
            })
        })
        .collect();
    progress.status_lines(&pulled);
    progress.status(&format!(
        "Successfully backed up {tags} tag(s) from {} repository(ies) to {:?} in {}. Total size: {} ({} copied, {} already present).",
        repos.len(),
        args.output,
        common::duration(report.seconds),
        common::size(report.bytes_total),
        common::size(report.bytes_copied),
        common::size(report.bytes_skipped),
    ));
    Ok(())
}
