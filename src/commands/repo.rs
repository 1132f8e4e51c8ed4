//! `oras repo ls` and `oras repo tags`, for registries and backups.

use super::common;
use super::UsageError;
use crate::cli::{Common, Format, RepoLsArgs, RepoTagsArgs};
use crate::layout::reader::{unnamed, LayoutSource};
use crate::manifest::Descriptor;
use crate::reference::{is_schema_tag, parse_registry, Reference};
use crate::target::{Repo, Source};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Splits `<path>[:<suffix>]` at the first `:` whose left side exists on disk.
pub fn split_layout_arg(arg: &str) -> (PathBuf, Option<String>) {
    // In object storage nothing can be asked cheaply: the location ends at the first ':' or '@'
    // after the scheme (a key holding one cannot be given a reference).
    if let Some(rest) = arg.strip_prefix("s3://") {
        if let Some(i) = rest.find([':', '@']) {
            let at = "s3://".len() + i;
            let reference = if arg[at..].starts_with('@') { &arg[at..] } else { &arg[at + 1..] };
            return (PathBuf::from(&arg[..at]), Some(reference.to_string()));
        }
        return (PathBuf::from(arg), None);
    }
    if Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    for (i, c) in arg.char_indices() {
        if (c == ':' || c == '@') && Path::new(&arg[..i]).exists() {
            let rest = if c == '@' { &arg[i..] } else { &arg[i + 1..] };
            return (PathBuf::from(&arg[..i]), Some(rest.to_string()));
        }
    }
    (PathBuf::from(arg), None)
}

/// A manifest found by a command's reference argument, and where it was found.
pub struct Located {
    /// The registry or backup that holds it.
    pub src: Arc<dyn Source>,
    /// Its repository there.
    pub repo: Repo,
    /// Its descriptor.
    pub desc: Descriptor,
    /// How to name where it was found (the repository, or the backup's path).
    pub shown: String,
}

/// Resolves a command's reference: `<registry>/<repo>:<tag>|@<digest>`, or with `oci_layout`
/// `<path>:<tag>`, `<path>@<digest>` or `<path>:<registry>/<repo>:<tag>` in a backup.
pub async fn locate(reference: &str, oci_layout: bool, common: &Common) -> Result<Located> {
    if oci_layout {
        let (path, inner) = split_layout_arg(reference);
        let inner = inner.ok_or_else(|| {
            UsageError("name a tag or digest: --oci-layout <path>:<tag> or <path>@<digest>".into())
        })?;
        let layout = LayoutSource::open(&path).await?;
        let (repo, desc) = resolve_in_layout(&layout, &inner)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#} {}", path.display()))?;
        return Ok(Located {
            src: Arc::new(layout),
            repo,
            desc,
            shown: path.display().to_string(),
        });
    }
    let r = Reference::parse(reference).map_err(|e| UsageError(e.to_string()))?;
    let what = match (&r.digest, r.tags.as_slice()) {
        (Some(d), _) => d.to_string(),
        (None, [t]) => t.clone(),
        _ => return Err(UsageError(format!("name one tag or a digest: {reference}")).into()),
    };
    let regs = common::registries(common, true)?;
    let repo = Repo::new(&r.registry, &r.repository);
    let desc = regs.resolve_head(&repo, &what).await?;
    let shown = repo.to_string();
    Ok(Located { src: regs, repo, desc, shown })
}

/// Resolves `<tag>`, `sha256:<hex>` or `<registry>/<repo>:<tag>|@<digest>` inside a backup.
pub async fn resolve_in_layout(
    layout: &LayoutSource,
    reference: &str,
) -> Result<(Repo, Descriptor)> {
    let reference = reference.trim_start_matches('@');
    if reference.contains('/') {
        let r = Reference::parse(reference).map_err(|e| UsageError(e.to_string()))?;
        let repo = layout.find_repo(Some(&r.repo_name()))?;
        let what = r.digest.as_ref().map(|d| d.to_string()).or_else(|| r.tags.first().cloned());
        let what =
            what.ok_or_else(|| UsageError(format!("name a tag or digest in {reference:?}")))?;
        return match layout.find(&repo, &what).await {
            Ok(d) => Ok((repo, d)),
            Err(e) => match r.digest.as_ref() {
                Some(digest) => Ok((repo, stored_manifest(layout, digest).await.ok_or(e)?)),
                None => Err(e),
            },
        };
    }
    let mut found = Vec::new();
    for r in layout.repositories() {
        if let Ok(d) = layout.find(&r, reference).await {
            found.push((r, d));
        }
    }
    if found.len() > 1 && reference.parse::<crate::digest::Digest>().is_err() {
        let candidates: Vec<String> =
            found.iter().map(|(r, _)| format!("{r}:{reference}")).collect();
        return Err(UsageError(format!(
            "tag {reference} is in several repositories of the backup ({}): name one with its full reference",
            candidates.join(", ")
        ))
        .into());
    }
    if let Some(first) = found.into_iter().next() {
        return Ok(first);
    }
    // A digest that index.json does not list (an index child, a referrer): any manifest the
    // backup stores can be named by its digest.
    if let Ok(digest) = reference.parse::<crate::digest::Digest>() {
        if let Some(d) = stored_manifest(layout, &digest).await {
            let repo = layout.repositories().into_iter().next().unwrap_or_else(unnamed);
            return Ok((repo, d));
        }
    }
    anyhow::bail!("{reference} not found in the backup")
}

/// The descriptor of a manifest stored in the backup under `digest`, when its bytes are
/// there, match the digest and parse as a manifest.
async fn stored_manifest(
    layout: &LayoutSource,
    digest: &crate::digest::Digest,
) -> Option<Descriptor> {
    use crate::manifest;
    let size = layout.blob_size(digest).await?;
    if size > manifest::MAX_MANIFEST_SIZE {
        return None;
    }
    let probe = Descriptor::new("", digest.clone(), size);
    let bytes = layout.fetch_manifest(&unnamed(), &probe).await.ok()?;
    crate::digest::verify_bytes(&bytes, digest, size).ok()?;
    let parsed = manifest::parse(&probe, &bytes).ok()?;
    Some(Descriptor::new(&parsed.media_type, digest.clone(), size))
}

fn print_list(format: Format, key: &str, items: &[String]) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ key: items }))?);
    } else {
        for i in items {
            println!("{i}");
        }
    }
    Ok(())
}

/// Runs `oras repo ls`.
pub async fn ls(args: RepoLsArgs) -> Result<()> {
    let names: Vec<String> = if args.oci_layout {
        let layout = LayoutSource::open(Path::new(&args.target)).await?;
        let repos = layout.repositories();
        if repos.contains(&unnamed()) {
            // Not a repository to list: said beside the list, never as an entry of it.
            eprintln!("Note: the backup has tags without a repository name (oras repo tags --oci-layout {} lists them)", args.target);
        }
        repos.into_iter().filter(|r| *r != unnamed()).map(|r| r.to_string()).collect()
    } else {
        let registry = parse_registry(&args.target).map_err(|e| UsageError(e.to_string()))?;
        let regs = common::registries(&args.common, true)?;
        let mut list = regs.client(&registry).await.list_repositories().await?;
        list.sort();
        list
    };
    print_list(args.common.format, "repositories", &names)
}

/// Runs `oras repo tags`.
pub async fn tags(args: RepoTagsArgs) -> Result<()> {
    let mut tags: Vec<String> = if args.oci_layout {
        let (path, repo) = split_layout_arg(&args.target);
        let layout = LayoutSource::open(&path).await?;
        match repo {
            Some(r) => layout.tags_of(&layout.find_repo(Some(&r))?),
            None => {
                let repos = layout.repositories();
                if repos.len() == 1 {
                    layout.tags_of(&repos[0])
                } else {
                    repos
                        .iter()
                        .flat_map(|r| {
                            layout.tags_of(r).into_iter().map(move |t| format!("{r}:{t}"))
                        })
                        .collect()
                }
            }
        }
    } else {
        let r = Reference::parse(&args.target).map_err(|e| UsageError(e.to_string()))?;
        let regs = common::registries(&args.common, true)?;
        regs.client(&r.registry).await.list_tags(&r.repository).await?
    };
    // The tag schema's sha256-<hex> tags index referrers; they are not tags anyone chose.
    if !args.all {
        tags.retain(|t| !is_schema_tag(t.rsplit(':').next().unwrap_or(t)));
    }
    print_list(args.common.format, "tags", &tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_storage_location_ends_at_its_first_colon_or_at_sign() {
        let split = |a: &str| {
            let (p, r) = split_layout_arg(a);
            (p.to_string_lossy().into_owned(), r)
        };
        assert_eq!(split("s3://b/app.tar"), ("s3://b/app.tar".into(), None));
        assert_eq!(split("s3://b/app.tar:v1"), ("s3://b/app.tar".into(), Some("v1".into())));
        assert_eq!(
            split("s3://b/dir/:reg.io/team/app:v1"),
            ("s3://b/dir/".into(), Some("reg.io/team/app:v1".into()))
        );
        let d = format!("@sha256:{}", "a".repeat(64));
        assert_eq!(split(&format!("s3://b/app.tar{d}")), ("s3://b/app.tar".into(), Some(d)));
    }
}
