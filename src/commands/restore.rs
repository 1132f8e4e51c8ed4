//! `oras restore`: one layout (directory or tar) -> registry repositories.

use super::common;
use super::rules;
use super::UsageError;
use crate::cli::{Format, RestoreArgs};
use crate::engine::{self, Job, Options, Report, TagFilter};
use crate::layout::chain;
use crate::layout::compress::Compression;
use crate::layout::reader::{unnamed, OpenOptions};
use crate::layout::stream_read::StreamSource;
use crate::progress::Progress;
use crate::reference::{parse_registry, Reference};
use crate::target::{Repo, Sink, Source};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The backup's repositories, named for an error message.
fn listing(backup_repos: &[Repo]) -> String {
    let name =
        |r: &Repo| if r == &unnamed() { "(unnamed repository)".to_string() } else { r.to_string() };
    backup_repos.iter().map(name).collect::<Vec<_>>().join(", ")
}

/// The job of each named target, given the backup repository assigned to it.
fn named_jobs(
    named: &[Reference],
    assigned: Vec<Option<usize>>,
    backup_repos: &[Repo],
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (t, a) in named.iter().zip(assigned) {
        let Some(j) = a else { continue };
        let src = backup_repos[j].clone();
        let refs = t.digest.iter().map(|d| d.to_string()).collect();
        let only_tags = if t.tags.is_empty() { None } else { Some(t.tags.clone()) };
        let label =
            if src == unnamed() { "the backup".to_string() } else { format!("the backup ({src})") };
        jobs.push(Job {
            refs,
            only_tags,
            ..Job::new(src, Repo::new(&t.registry, &t.repository), label)
        });
    }
    jobs
}

/// Maps restore targets onto the backup's repositories (cli.md rules).
pub fn map_targets(targets: &[String], backup_repos: &[Repo]) -> Result<Vec<Job>> {
    let list = || listing(backup_repos);
    let mut jobs = Vec::new();
    let mut named = Vec::new();
    for t in targets {
        match Reference::parse_target(t).map_err(|e| UsageError(e.to_string()))? {
            None => {
                let registry = parse_registry(t).map_err(|e| UsageError(e.to_string()))?;
                for r in backup_repos {
                    if r == &unnamed() {
                        bail!("the backup does not record the repository of its tags: restore it to <registry>/<repository>, e.g. {registry}/my/repo");
                    }
                    jobs.push(Job::new(
                        r.clone(),
                        Repo::new(&registry, &r.repository),
                        format!("the backup ({r})"),
                    ));
                }
            }
            Some(r) => named.push(r),
        }
    }
    if named.len() > backup_repos.len() && !named.is_empty() {
        bail!(
            "{} target repositories given, but the backup holds {}: {}",
            named.len(),
            backup_repos.len(),
            list()
        );
    }
    let mut used = vec![false; backup_repos.len()];
    let mut assigned: Vec<Option<usize>> = vec![None; named.len()];
    // Targets given a repository of the backup by position, not by its path.
    let mut by_position = Vec::new();
    if backup_repos.len() == 1 && named.len() == 1 {
        assigned[0] = Some(0);
    } else {
        for (i, t) in named.iter().enumerate() {
            if let Some(j) = backup_repos.iter().position(|r| r.repository == t.repository) {
                if !used[j] {
                    used[j] = true;
                    assigned[i] = Some(j);
                }
            }
        }
        for (i, a) in assigned.iter_mut().enumerate() {
            if a.is_none() {
                let j = used.iter().position(|u| !u).ok_or_else(|| {
                    anyhow::anyhow!(
                        "cannot map the targets onto the backup's repositories: {}",
                        list()
                    )
                })?;
                used[j] = true;
                *a = Some(j);
                by_position.push(i);
            }
        }
        // A target that names no repository of the backup takes one by position only when that
        // leaves none out: otherwise which one was meant, and that the others are to be left, is a
        // guess.
        let left: Vec<String> = backup_repos
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(r, _)| r.to_string())
            .collect();
        if !by_position.is_empty() && !left.is_empty() && jobs.is_empty() {
            let given: Vec<String> = by_position.iter().map(|&i| named[i].repo_name()).collect();
            return Err(UsageError(format!(
                "the backup holds {} repositories ({}), and {} names none of them: give one target per repository (a target takes the repository of the same path, else the next in order), a registry alone to restore them all under their own paths, targets whose paths name the repositories to restore, or a rules file (--rules) to map several into one repository",
                backup_repos.len(),
                list(),
                given.join(", ")
            ))
            .into());
        }
    }
    jobs.extend(named_jobs(&named, assigned, backup_repos));
    Ok(jobs)
}

/// How to call restore, shown when the targets are missing or given with `--rules`.
const FORMS: &str = "use either targets (oras restore --input BACKUP REGISTRY[/REPO[:TAGS]] ...) or a rules file (oras restore --input BACKUP --rules FILE), not both";

/// Checks what can be checked before the backup is opened.
fn check_args(args: &RestoreArgs) -> Result<()> {
    if args.input.iter().any(|i| i.trim().is_empty()) {
        return Err(
            UsageError("--input is empty: give a backup directory or .tar archive".into()).into()
        );
    }
    match (&args.rules, args.targets.is_empty()) {
        (Some(_), false) => {
            return Err(UsageError(format!(
                "--rules cannot be used with target arguments: {FORMS}"
            ))
            .into())
        }
        (None, true) => return Err(UsageError(format!("nothing to restore to: {FORMS}")).into()),
        _ => {}
    }
    let from_stdin = args.input.iter().any(|i| i == "-");
    if from_stdin && args.input.len() > 1 {
        return Err(UsageError(
            "--input - reads one tar stream from standard input: it cannot be restored together with other --input backups (save the stream to a file first)".into(),
        )
        .into());
    }
    match args.compress {
        Some(Compression::Zstd) => return Err(UsageError(
            "--compress zstd: a Docker image manifest describes only tar and gzip'd layers; use --compress gzip".into(),
        )
        .into()),
        Some(Compression::Gzip) if from_stdin => return Err(UsageError(
            "--compress gzip applies to a docker save archive's layers, and a docker save archive cannot be read from standard input: save it to a file and give its path".into(),
        )
        .into()),
        _ => {}
    }
    if from_stdin
        && (args.common.credentials.password_stdin || args.common.credentials.identity_token_stdin)
    {
        return Err(UsageError(
            "--input - reads the archive from standard input, so the password or token cannot come from there too".into(),
        )
        .into());
    }
    if from_stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // It would wait for an archive typed at the keyboard.
        return Err(UsageError(
            "--input - reads a tar stream from standard input, which is a terminal: pipe or redirect a backup into it (... < backup.tar), or give its path".into(),
        )
        .into());
    }
    for t in &args.targets {
        Reference::parse_target(t).map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(())
}

/// Opens the backups (directories, tars, or a stream on stdin) and the bases they build on, and
/// names their repositories.
async fn open(
    inputs: &[String],
    compress: Option<Compression>,
    progress: &mut Progress,
) -> Result<(Arc<dyn Source>, Vec<Repo>, Option<String>)> {
    if inputs == ["-"] {
        let s = StreamSource::open(std::io::stdin()).await?;
        progress.status("Loaded backup stream: standard input (blobs are uploaded as they pass)");
        let repos = s.repositories();
        return Ok((Arc::new(s), repos, None));
    }
    let options = OpenOptions { gzip_docker_layers: compress.is_some() };
    let opened = chain::open(inputs, options).await?;
    let layout = opened.source;
    if compress.is_some() && layout.docker_images().is_empty() {
        // Changing a layout's blobs would change the digests its manifests name.
        return Err(UsageError(format!(
            "--compress applies to a docker save archive's uncompressed layers; {:?} is an OCI image layout, whose blobs are restored as they are (leave --compress out)",
            inputs.join(", ")
        ))
        .into());
    }
    let input = inputs.join(", ");
    let kind = match (layout.is_tar, layout.docker_images().is_empty()) {
        (true, true) => "backup archive",
        (false, true) => "backup directory",
        (true, false) => "docker save archive",
        (false, false) => "docker save directory",
    };
    let together = match (opened.given, opened.found.len()) {
        (1, 0) => String::new(),
        (n, 0) => format!(", {n} backups read as one"),
        (_, _) => format!(", with the base(s) it builds on: {}", opened.found.join(", ")),
    };
    progress.status(&format!("Loaded {kind}: {} ({}{together})", input, common::size(layout.size)));
    for image in layout.docker_images() {
        progress.status(&image.describe());
    }
    let repos = layout.repositories();
    let shard = layout.shard().map(str::to_string);
    Ok((Arc::new(layout), repos, shard))
}

/// The jobs the targets or the rules file ask for, and whether a failing one stops the others.
async fn jobs_of(
    args: &RestoreArgs,
    src: &dyn Source,
    repos: &[Repo],
    progress: &mut Progress,
) -> Result<(Vec<Job>, bool)> {
    let filter =
        TagFilter::new(&args.filter.include_tags, &args.filter.exclude_tags).map_err(UsageError)?;
    let (mut jobs, fail_fast) = match &args.rules {
        Some(path) => {
            let rules = rules::load(path)?;
            let mut held = Vec::new();
            for r in repos {
                held.push((r.clone(), src.tags(r).await?));
            }
            let jobs = rules::jobs(&rules, &held)?;
            progress.status(&format!("Loaded rules {}: {} mapping(s)", path.display(), jobs.len()));
            (jobs, rules.settings.fail_fast)
        }
        None => (map_targets(&args.targets, repos)?, true),
    };
    for j in &mut jobs {
        j.filter = filter.clone();
    }
    let left: Vec<String> = repos
        .iter()
        .filter(|r| !jobs.iter().any(|j| &j.src == *r))
        .map(|r| r.to_string())
        .collect();
    if !left.is_empty() {
        // Restoring a part of a backup is a choice the targets made; it is said, not done silently.
        progress.status(&format!("Not restored (no target names them): {}", left.join(", ")));
    }
    Ok((jobs, fail_fast))
}

/// Runs `oras restore`.
pub async fn run(args: RestoreArgs) -> Result<()> {
    check_args(&args)?;
    let mut progress = common::progress(&args.common);
    let (src, repos, shard) = open(&args.input, args.compress, &mut progress).await?;
    if repos.is_empty() {
        if let Some(shard) = shard {
            // An empty shard is a normal outcome of splitting a registry: nothing to do.
            progress.status(&format!(
                "Nothing to restore: shard {shard} of the registry holds no repository"
            ));
            return Ok(());
        }
        bail!("the backup {:?} holds no tags", args.input.join(", "));
    }
    let (jobs, fail_fast) = jobs_of(&args, src.as_ref(), &repos, &mut progress).await?;
    let registries = common::registries(&args.common, args.dry_run)?;
    let opts = Options {
        concurrency: args.common.concurrency.map(usize::from).unwrap_or(5),
        referrers: !args.exclude_referrers,
        dry_run: args.dry_run,
        platforms: Vec::new(),
        sparse_index: false,
        held: None,
    };
    let sink: Arc<dyn Sink> = registries;
    let (report, failures) = if fail_fast || jobs.len() == 1 {
        (engine::run(src, sink, &jobs, &opts, &mut progress).await?, Vec::new())
    } else {
        each_alone(src, sink, &jobs, &opts, &mut progress).await
    };
    let targets = if args.targets.is_empty() { destinations(&jobs) } else { args.targets.clone() };
    print(&args, &report, &targets, &failures, &mut progress)?;
    if !failures.is_empty() {
        bail!("{} of {} mapping(s) failed: {}", failures.len(), jobs.len(), failures.join("; "));
    }
    Ok(())
}

/// Runs each job alone (a rules file's `"fail-fast": false`): the others go on when one fails.
async fn each_alone(
    src: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    jobs: &[Job],
    opts: &Options,
    progress: &mut Progress,
) -> (Report, Vec<String>) {
    let mut report = Report::default();
    let mut failures = Vec::new();
    for job in jobs {
        match engine::run(src.clone(), sink.clone(), std::slice::from_ref(job), opts, progress)
            .await
        {
            Ok(r) => report.merge(r),
            Err(e) => {
                progress.status(&format!("Failed: {} -> {}: {e:#}", job.src, job.dst));
                failures.push(format!("{} -> {}: {e:#}", job.src, job.dst));
            }
        }
    }
    (report, failures)
}

/// The distinct destination repositories of the jobs, in order.
fn destinations(jobs: &[Job]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for j in jobs {
        let d = j.dst.to_string();
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen
}

/// Prints the result: JSON, the dry run's plan, or what was pushed.
fn print(
    args: &RestoreArgs,
    report: &Report,
    targets: &[String],
    failures: &[String],
    progress: &mut Progress,
) -> Result<()> {
    let tags: usize =
        report.jobs.iter().map(|j| j.roots.iter().filter(|r| r.tag.is_some()).count()).sum();
    if args.common.format == Format::Json {
        let doc = serde_json::json!({
            "command": "restore",
            "input": args.input.first(),
            "inputs": args.input,
            "targets": targets,
            "rules": args.rules,
            "dryRun": args.dry_run,
            "tags": tags,
            "failures": failures,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let targets = targets.join(", ");
    if args.dry_run {
        progress.status_lines(&plan_lines(report));
        progress.status(&format!(
            "Dry run: the backup is complete and valid. Would push {} blob(s) ({}) and {} manifest(s) to {targets:?}; {} blob(s) and {} manifest(s) are already there. Nothing was pushed.",
            report.blobs_copied,
            common::size(report.bytes_copied),
            report.manifests_copied,
            report.blobs_skipped,
            report.manifests_skipped,
        ));
        return Ok(());
    }
    let pushed: Vec<String> = report
        .jobs
        .iter()
        .flat_map(|j| {
            j.roots.iter().map(move |r| match &r.tag {
                Some(t) => {
                    format!("Pushed tag {t} with {} referrer(s) to {}", r.referrers, j.destination)
                }
                None => format!(
                    "Pushed {}@{} with {} referrer(s)",
                    j.destination, r.digest, r.referrers
                ),
            })
        })
        .collect();
    progress.status_lines(&pushed);
    progress.status(&format!(
        "Successfully restored {tags} tag(s) to {targets:?} in {}. Total size: {} ({} uploaded, {} mounted from another repository, {} already present).",
        common::duration(report.seconds),
        common::size(report.bytes_total),
        common::size(report.bytes_copied),
        common::size(report.bytes_mounted),
        common::size(report.bytes_skipped.saturating_sub(report.bytes_mounted)),
    ));
    Ok(())
}

/// A dry run's plan, per registry, repository and tag: "Registry r / Repository p / tag (digest) +
/// n referrer(s), b to upload".
fn plan_lines(report: &Report) -> Vec<String> {
    let mut by_registry: BTreeMap<&str, BTreeMap<&str, (Vec<String>, u64)>> = BTreeMap::new();
    for j in &report.jobs {
        let (registry, repository) =
            j.destination.split_once('/').unwrap_or((j.destination.as_str(), ""));
        let (lines, bytes) =
            by_registry.entry(registry).or_default().entry(repository).or_default();
        for r in &j.roots {
            let name = r.tag.as_deref().unwrap_or("(untagged)");
            lines.push(format!(
                "      {name} ({}) + {} referrer(s), from {}",
                r.digest, r.referrers, j.source
            ));
        }
        *bytes += j.bytes_copied;
    }
    let mut out = vec!["Would restore:".to_string()];
    for (registry, repos) in by_registry {
        out.push(format!("  Registry: {registry}"));
        for (repository, (lines, bytes)) in repos {
            out.push(format!("    Repository: {repository} ({} to upload)", common::size(bytes)));
            out.extend(lines);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repos(names: &[&str]) -> Vec<Repo> {
        names
            .iter()
            .map(|n| {
                let (r, p) = n.split_once('/').unwrap();
                Repo::new(r, p)
            })
            .collect()
    }

    #[test]
    fn registry_alone_keeps_paths() {
        let jobs = map_targets(&["dst.io".into()], &repos(&["src.io/team/app", "src.io/team/web"]))
            .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].dst, Repo::new("dst.io", "team/web"));
    }

    #[test]
    fn scenario_mapping() {
        let r = repos(&["reg.k8s.io/kube-apiserver", "reg.k8s.io/kube-controller-manager"]);
        let jobs = map_targets(
            &["localhost:5000/kube-apiserver".into(), "localhost:5000/kube-controller".into()],
            &r,
        )
        .unwrap();
        assert_eq!(jobs[0].src.repository, "kube-apiserver");
        assert_eq!(jobs[1].src.repository, "kube-controller-manager");
        assert_eq!(jobs[1].dst.repository, "kube-controller");
    }

    #[test]
    fn too_many_targets() {
        let r = repos(&["a.io/x"]);
        assert!(map_targets(&["b.io/y".into(), "b.io/z".into()], &r).is_err());
    }

    #[test]
    fn a_target_that_names_no_repository_of_a_multi_repository_backup_is_refused() {
        let r = repos(&["a.io/team/app", "a.io/team/web"]);
        let e = map_targets(&["b.io/other/thing".into()], &r).unwrap_err().to_string();
        assert!(
            e.contains("a.io/team/app") && e.contains("a.io/team/web") && e.contains("other/thing"),
            "{e}"
        );
        // Named by path: an explicit choice of one repository.
        let jobs = map_targets(&["b.io/team/web".into()], &r).unwrap();
        assert_eq!((jobs.len(), jobs[0].src.repository.as_str()), (1, "team/web"));
        // One target per repository: matched by path, then in order.
        let jobs = map_targets(&["b.io/team/web".into(), "b.io/x".into()], &r).unwrap();
        assert_eq!(jobs[1].src.repository, "team/app");
    }

    #[test]
    fn rename_single_with_tags() {
        let jobs =
            map_targets(&["b.io/renamed/app:v1".into()], &repos(&["a.io/team/app"])).unwrap();
        assert_eq!(jobs[0].only_tags, Some(vec!["v1".to_string()]));
        assert_eq!(jobs[0].dst.repository, "renamed/app");
    }
}
