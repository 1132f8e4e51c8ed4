//! `oras backup`: registry repositories -> one layout (directory or tar).

use super::common;
use super::shard::Shard;
use super::UsageError;
use crate::cli::{BackupArgs, Format};
use crate::engine::{self, Job, Options, Platform};
use crate::layout::chain;
use crate::layout::compress::{CompressedOutput, Compression};
use crate::layout::dir::DirSink;
use crate::layout::index::{
    Rendering, ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_LOCATION, ANNOTATION_SHARD,
};
use crate::layout::tar_stream::StreamTarSink;
use crate::layout::tar_write::TarSink;
use crate::object::dir::ObjectDirSink;
use crate::object::upload::ObjectOutput;
use crate::object::Location;
use crate::progress::Progress;
use crate::reference::{parse_registry, Reference};
use crate::registry::target::Registries;
use crate::target::{ErrorKind, Repo, Sink, Source};
use anyhow::Result;
use anyhow::{anyhow, bail};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::PathBuf;
use std::sync::Arc;

enum Output {
    Dir(PathBuf),
    Tar(PathBuf),
    /// A compressed tar file.
    Compressed(PathBuf, Compression),
    /// A tar stream on standard output, compressed or not.
    Stdout(Option<Compression>),
    /// A tar (compressed or not) written to an object by a multipart upload.
    ObjectTar(Location, Option<Compression>),
    /// A layout under an object storage prefix.
    ObjectDir(Location),
}

fn output(spec: &str, compress: Option<Compression>) -> Result<Output> {
    if spec.trim().is_empty() {
        return Err(UsageError(
            "--output is empty: give a directory, or a path ending in .tar, .tar.gz or .tar.zst"
                .into(),
        )
        .into());
    }
    if spec == "-" {
        return Ok(Output::Stdout(compress));
    }
    if let Some(loc) =
        crate::object::parse(spec).map_err(|e| UsageError(format!("--output {e}")))?
    {
        return object_output(spec, loc, compress);
    }
    let p = PathBuf::from(spec);
    match (Compression::of_name(spec), compress) {
        (Some(named), Some(asked)) if named != asked => {
            return Err(UsageError(format!("--output {spec:?} names a {named} archive but --compress says {asked}: make them agree")).into())
        }
        (Some(c), _) => return Ok(Output::Compressed(p, c)),
        (None, _) => {}
    }
    if spec.to_ascii_lowercase().ends_with(".tar") {
        return Ok(compress.map_or(Output::Tar(p.clone()), |c| Output::Compressed(p, c)));
    }
    if let Some(c) = compress {
        return Err(UsageError(format!(
            "--compress {c} writes an archive, but --output {spec:?} is a directory: name a file (.tar.gz, .tar.zst) or - for standard output"
        ))
        .into());
    }
    if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
        if !p.is_dir() {
            eprintln!("Warning: output {spec:?} has extension .{ext}, which is not .tar, .tar.gz or .tar.zst: writing an OCI layout directory there");
        }
    }
    Ok(Output::Dir(p))
}

/// An `s3://` output: a key named like an archive is one, anything else a layout under that prefix.
fn object_output(spec: &str, loc: Location, compress: Option<Compression>) -> Result<Output> {
    let named = if loc.prefix { None } else { Compression::of_name(&loc.key) };
    match (named, compress) {
        (Some(named), Some(asked)) if named != asked => {
            return Err(UsageError(format!("--output {spec:?} names a {named} archive but --compress says {asked}: make them agree")).into())
        }
        (Some(c), _) => return Ok(Output::ObjectTar(loc, Some(c))),
        (None, _) => {}
    }
    if !loc.prefix && loc.key.to_ascii_lowercase().ends_with(".tar") {
        return Ok(Output::ObjectTar(loc, compress));
    }
    if let Some(c) = compress {
        return Err(UsageError(format!(
            "--compress {c} writes an archive, but --output {spec:?} is a layout prefix: name an object ending in .tar, .tar.gz or .tar.zst"
        ))
        .into());
    }
    Ok(Output::ObjectDir(loc))
}

/// Where a backup goes: the sink, the directory this run creates (removed if it fails), and the
/// compressed file to put in place once complete.
type Opened = (Arc<dyn Sink>, Option<PathBuf>, Option<Commit>);

/// What makes a streamed archive visible once the run has succeeded; dropped, it is not.
enum Commit {
    /// A compressed file renamed into place.
    File(CompressedOutput),
    /// A multipart upload completed.
    Object(ObjectOutput),
}

async fn open_sink(out: &Output, how: Rendering, docker: Option<Platform>) -> Result<Opened> {
    let stream = |w: Box<dyn tokio::io::AsyncWrite + Send + Unpin>| {
        StreamTarSink::new(w).rendering(how.clone()).docker_manifest(docker.clone())
    };
    Ok(match out {
        Output::Tar(p) => (
            Arc::new(TarSink::create(p)?.rendering(how.clone()).docker_manifest(docker.clone())),
            None,
            None,
        ),
        Output::Compressed(p, c) => {
            let (file, writer) = CompressedOutput::create(p, *c).await?;
            (Arc::new(stream(writer)), None, Some(Commit::File(file)))
        }
        Output::ObjectTar(loc, c) => {
            let store = crate::object::connect(loc)?;
            crate::object::read::check_bucket(&store, loc).await?;
            let (upload, writer) = ObjectOutput::create(&store, loc).await?;
            let writer = match c {
                Some(c) => c.writer(writer),
                None => writer,
            };
            (Arc::new(stream(writer)), None, Some(Commit::Object(upload)))
        }
        Output::ObjectDir(loc) => {
            let store = crate::object::connect(loc)?;
            (
                Arc::new(ObjectDirSink::create(store, loc.clone()).await?.rendering(how.clone())),
                None,
                None,
            )
        }
        Output::Stdout(c) => {
            let stdout: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match c {
                Some(c) => c.writer(tokio::io::stdout()),
                None => Box::new(tokio::io::stdout()),
            };
            (Arc::new(stream(stdout)), None, None)
        }
        Output::Dir(p) => {
            let existed = p.exists();
            (
                Arc::new(DirSink::create(p).await?.rendering(how.clone())),
                if existed { None } else { Some(p.clone()) },
                None,
            )
        }
    })
}

/// Cleans up after a run into a directory it created that did not complete (also on Ctrl-C): an
/// empty skeleton is removed; verified blobs are kept so a re-run resumes, and without index.json
/// it never looks complete.
struct CreatedDir(Option<PathBuf>);

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let has_blobs = std::fs::read_dir(dir.join("blobs/sha256"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if has_blobs {
                eprintln!("Note: the incomplete backup in {} has no index.json; run the same command again to resume it", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// One job per repository named (with every tag and digest its references name, in order, once), so
/// that `a:v1 a:v1` or `a a:v2` back up and count each tag once. A repository named without a tag
/// is backed up whole; digests named beside that are a job of their own, as "every tag" has no room
/// for them.
fn jobs_of(refs: &[Reference]) -> Vec<Job> {
    struct Wanted {
        repo: Repo,
        label: String,
        all_tags: bool,
        tags: Vec<String>,
        digests: Vec<String>,
    }
    // A command names a few repositories: a list keeps their order and is searched in place.
    let mut wanted: Vec<Wanted> = Vec::new();
    for r in refs {
        let repo = Repo::new(&r.registry, &r.repository);
        let i = match wanted.iter().position(|w| w.repo == repo) {
            Some(i) => i,
            None => {
                wanted.push(Wanted {
                    repo,
                    label: r.repo_name(),
                    all_tags: false,
                    tags: Vec::new(),
                    digests: Vec::new(),
                });
                wanted.len() - 1
            }
        };
        let w = &mut wanted[i];
        w.all_tags |= r.tags.is_empty() && r.digest.is_none();
        for t in &r.tags {
            if !w.tags.contains(t) {
                w.tags.push(t.clone());
            }
        }
        if let Some(d) = r.digest.as_ref().map(|d| d.to_string()).filter(|d| !w.digests.contains(d))
        {
            w.digests.push(d);
        }
    }
    let mut jobs = Vec::new();
    for w in wanted {
        let job = |refs: Vec<String>| Job {
            refs,
            ..Job::new(w.repo.clone(), w.repo.clone(), w.label.clone())
        };
        if w.all_tags {
            jobs.push(job(Vec::new()));
            if !w.digests.is_empty() {
                jobs.push(job(w.digests.clone()));
            }
        } else {
            jobs.push(job(w.tags.iter().chain(&w.digests).cloned().collect()));
        }
    }
    jobs
}

/// A glob set over repository paths; `*` stays within one component.
fn globs(flag: &str, patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| UsageError(format!("{flag} {p:?} is not a valid glob: {}", e.kind())))?;
        set.add(glob);
    }
    Ok(Some(set.build().map_err(|e| UsageError(format!("{flag}: {e}")))?))
}

/// The references to back up: those named, and for a registry named alone every repository its
/// catalog lists that the repository globs keep.
async fn references(
    args: &BackupArgs,
    regs: &Registries,
    progress: &mut Progress,
) -> Result<Vec<Reference>> {
    let include = globs("--include-repos", &args.include_repos)?;
    let exclude = globs("--exclude-repos", &args.exclude_repos)?;
    let mut targets = Vec::new();
    for r in &args.references {
        targets.push((r, Reference::parse_target(r).map_err(|e| UsageError(e.to_string()))?));
    }
    if (include.is_some() || exclude.is_some()) && targets.iter().all(|(_, t)| t.is_some()) {
        return Err(UsageError("--include-repos and --exclude-repos select among a registry's repositories: name a registry alone (e.g. oras backup -o DIR registry.example --include-repos 'team/*')".into()).into());
    }
    let mut refs = Vec::new();
    for (arg, target) in targets {
        if let Some(r) = target {
            refs.push(r);
            continue;
        }
        let registry = parse_registry(arg).map_err(|e| UsageError(e.to_string()))?;
        let listed = regs.client(&registry).await.list_repositories().await.map_err(|e| {
            // A registry without a catalog (the error says so): what to do instead.
            if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Denied | ErrorKind::Unsupported)
            {
                anyhow!("{e}; name the repositories to back up: {registry}/<repo> ...")
            } else {
                anyhow!("cannot list the repositories of {registry}: {e}")
            }
        })?;
        let kept: Vec<String> = listed
            .iter()
            .filter(|p| {
                include.as_ref().is_none_or(|g| g.is_match(p.as_str()))
                    && !exclude.as_ref().is_some_and(|g| g.is_match(p.as_str()))
            })
            .cloned()
            .collect();
        progress.status(&format!(
            "Found {} repository(ies) in the catalog of {registry}; {} selected",
            listed.len(),
            kept.len()
        ));
        if kept.is_empty() {
            bail!("no repository of {registry} to back up: its catalog lists {} and the repository filters keep none", listed.len());
        }
        for p in kept {
            refs.push(
                Reference::parse(&format!("{registry}/{p}"))
                    .map_err(|e| anyhow!("the catalog of {registry} lists {e}"))?,
            );
        }
    }
    Ok(refs)
}

/// The earlier backup an incremental one builds on: what it (and its own bases) hold, and how the
/// new backup records it.
struct Base {
    held: std::collections::HashSet<crate::digest::Digest>,
    digest: crate::digest::Digest,
    location: String,
}

/// Opens `--base` and its chain, refusing what cannot be one.
async fn open_base(
    base: &str,
    args: &BackupArgs,
    out: &Output,
    progress: &mut Progress,
) -> Result<Base> {
    if let Output::Dir(p) = out {
        if p.exists() {
            return Err(UsageError(format!("--base writes a new, incremental backup, but {:?} exists: give a new path (an incremental backup is never added to another)", args.output)).into());
        }
    }
    let same = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .ok()
            .zip(std::fs::canonicalize(base).ok())
            .is_some_and(|(a, b)| a == b)
    };
    if let Output::Tar(p) | Output::Compressed(p, _) = out {
        if same(p) {
            return Err(UsageError(format!(
                "--base {base:?} is also the --output: write the new backup to another path"
            ))
            .into());
        }
    }
    // In object storage the new archive would replace its own base once complete.
    let same_object = |loc: &Location| {
        crate::object::parse(base)
            .ok()
            .flatten()
            .is_some_and(|b| (&b.bucket, &b.key) == (&loc.bucket, &loc.key))
    };
    if let Output::ObjectTar(loc, _) | Output::ObjectDir(loc) = out {
        if same_object(loc) {
            return Err(UsageError(format!(
                "--base {base:?} is also the --output: write the new backup to another key"
            ))
            .into());
        }
    }
    let opened = chain::open(&[base.to_string()], Default::default())
        .await
        .map_err(|e| anyhow!("--base {base:?}: {e:#}"))?;
    let Some(digest) = opened.source.index_digest().cloned() else {
        return Err(UsageError(format!("--base {base:?} is a docker save archive: the base must be a backup made by oras backup (an OCI image layout)")).into());
    };
    let held = opened.source.held_digests().await?;
    let location = chain::location_of(std::path::Path::new(base), &args.output)?;
    let on = if opened.found.is_empty() {
        String::new()
    } else {
        format!("; it builds on {}", opened.found.join(", "))
    };
    progress.status(&format!(
        "Base {base:?}: index.json {digest}, {} blob(s) and manifest(s) that this backup leaves out{on}",
        held.len()
    ));
    Ok(Base { held, digest, location })
}

/// Keeps the references of the repositories in this run's shard, and says how many.
fn take_shard(refs: &mut Vec<Reference>, shard: Shard, progress: &mut Progress) {
    let repos = |refs: &[Reference]| {
        refs.iter()
            .map(|r| (r.registry.clone(), r.repository.clone()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = repos(refs).len();
    refs.retain(|r| shard.takes(&r.repository));
    let kept = repos(refs);
    progress.status(&format!(
        "Shard {shard}: {} of {before} repository(ies){}",
        kept.len(),
        if kept.is_empty() {
            " (an empty backup is written, so that every shard has one)"
        } else {
            ""
        }
    ));
}

/// How index.json is written: `--full-reference`, and what records the shard and the base.
fn rendering(args: &BackupArgs, base: Option<&Base>) -> Rendering {
    let mut how = Rendering { full: args.full_reference, ..Rendering::default() };
    if let Some(b) = base {
        how.annotations.insert(ANNOTATION_BASE_DIGEST.into(), b.digest.to_string());
        how.annotations.insert(ANNOTATION_BASE_LOCATION.into(), b.location.clone());
    }
    if let Some(shard) = args.shard {
        how.annotations.insert(ANNOTATION_SHARD.into(), shard.to_string());
    }
    how
}

/// Runs `oras backup`.
pub async fn run(args: BackupArgs) -> Result<()> {
    let out = output(&args.output, args.compress)?;
    if matches!(out, Output::Stdout(_)) && args.common.format == Format::Json {
        return Err(UsageError(
            "--format json cannot be used with -o -: standard output carries the archive".into(),
        )
        .into());
    }
    if matches!(out, Output::Stdout(_)) && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(UsageError(
            "-o - writes a tar archive to standard output, which is a terminal: redirect it to a file or a pipe (... > backup.tar), or give a path".into(),
        )
        .into());
    }
    common::check_platforms(&args.platforms)?;
    let registries = common::registries(&args.common, true)?;
    let mut progress = common::progress(&args.common);
    if matches!(out, Output::Stdout(_)) {
        progress.status_to_stderr();
    }
    let mut refs = references(&args, &registries, &mut progress).await?;
    if let Some(shard) = args.shard {
        take_shard(&mut refs, shard, &mut progress);
    }
    let base = match &args.base {
        Some(b) => Some(open_base(b, &args, &out, &mut progress).await?),
        None => None,
    };
    let filter =
        crate::engine::TagFilter::new(&args.filter.include_tags, &args.filter.exclude_tags)
            .map_err(UsageError)?;
    let mut jobs = jobs_of(&refs);
    for j in &mut jobs {
        j.filter = filter.clone();
    }
    let opts = Options {
        concurrency: args.common.concurrency.map(usize::from).unwrap_or(3),
        referrers: args.include_referrers,
        dry_run: false,
        platforms: args.platforms.platform.clone(),
        sparse_index: args.platforms.sparse_index,
        held: base.as_ref().map(|b| Arc::new(b.held.clone())),
    };
    // Docker's manifest.json would name configs and layers that only the base holds.
    let docker = (!args.no_docker_manifest && base.is_none()).then(|| args.docker_platform.clone());
    let (sink, created_dir, compressed) =
        open_sink(&out, rendering(&args, base.as_ref()), docker).await?;
    // We made this directory for this run: if it fails, leave nothing behind that could pass for a
    // backup.
    let mut cleanup = CreatedDir(created_dir);
    let src: Arc<dyn Source> = registries;
    let result = engine::run(src, sink.clone(), &jobs, &opts, &mut progress).await;
    drop(sink);
    let report = result?;
    match compressed {
        Some(Commit::File(file)) => file.commit().await?,
        Some(Commit::Object(upload)) => upload.commit().await?,
        None => {}
    }
    cleanup.0 = None;
    let tags: usize =
        report.jobs.iter().map(|j| j.roots.iter().filter(|r| r.tag.is_some()).count()).sum();
    let repos: std::collections::BTreeSet<&str> =
        report.jobs.iter().map(|j| j.source.as_str()).collect();
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
                // Named in full: a backup of several repositories pulls the same tag from each.
                Some(t) => format!("Pulled {}:{t} with {} referrer(s)", j.source, r.referrers),
                None => {
                    format!("Pulled {}@{} with {} referrer(s)", j.source, r.digest, r.referrers)
                }
            })
        })
        .collect();
    progress.status_lines(&pulled);
    progress.status(&format!(
        "Successfully backed up {tags} tag(s) from {} repository(ies) to {:?} in {}. Total size: {} ({} copied, {} {}).",
        repos.len(),
        args.output,
        common::duration(report.seconds),
        common::size(report.bytes_total),
        common::size(report.bytes_copied),
        common::size(report.bytes_skipped),
        if base.is_some() { "already in the base, left out" } else { "already present" },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(list: &[&str]) -> Vec<Reference> {
        list.iter().map(|r| Reference::parse(r).expect("reference")).collect()
    }

    #[test]
    fn a_repository_named_twice_is_one_job_with_each_tag_once() {
        let d = format!("sha256:{}", "a".repeat(64));
        let jobs = jobs_of(&refs(&["r.io/a:v1,v2", "r.io/b:v1", "r.io/a:v2,v3", "r.io/a:v1"]));
        let got: Vec<(String, Vec<String>)> =
            jobs.iter().map(|j| (j.src.repository.clone(), j.refs.clone())).collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), vec!["v1".to_string(), "v2".into(), "v3".into()]),
                ("b".to_string(), vec!["v1".to_string()])
            ]
        );

        // Every tag absorbs named tags; a digest beside it stays a job of its own.
        let jobs = jobs_of(&refs(&[
            "r.io/a:v1",
            "r.io/a",
            &format!("r.io/a@{d}"),
            &format!("r.io/a@{d}"),
        ]));
        let got: Vec<Vec<String>> = jobs.iter().map(|j| j.refs.clone()).collect();
        assert_eq!(got, [vec![], vec![d.clone()]]);
        let jobs = jobs_of(&refs(&["r.io/a:v1", &format!("r.io/a@{d}")]));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].refs, ["v1".to_string(), d]);
    }
}
