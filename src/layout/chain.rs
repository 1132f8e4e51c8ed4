//! Backups read together as one: several given at once (the shards of a registry, restored in one
//! run) and the bases an incremental backup builds on, found where it recorded them when they are
//! not given.

use super::reader::{LayoutSource, OpenOptions};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Longest chain of backups read together; a daily incremental chain of years stays under it.
const MAX_BACKUPS: usize = 4096;

/// Backups opened together.
pub struct Opened {
    /// All of them as one source.
    pub source: LayoutSource,
    /// The bases found where an incremental backup recorded them (not given), as paths.
    pub found: Vec<String>,
    /// How many backups were given (`--input`s, duplicates left out).
    pub given: usize,
}

/// Where a recorded base location points, for a backup at `backup`: relative locations are
/// relative to the directory that holds the backup.
pub fn locate(backup: &Path, location: &str) -> PathBuf {
    let recorded = Path::new(location);
    // An object storage location is recorded whole, as an absolute path is.
    if recorded.is_absolute() || location.starts_with("s3://") {
        return recorded.to_path_buf();
    }
    match backup.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(recorded),
        _ => recorded.to_path_buf(),
    }
}

/// How to record `base` in a backup written to `output` (`-` for standard output): relative to the
/// directory that will hold the backup when the base is under it, so that the two can be moved
/// together; absolute otherwise.
pub fn location_of(base: &Path, output: &str) -> Result<String> {
    // A base in object storage is recorded by its whole s3:// location: nothing to resolve.
    if let Some(loc) = base.to_str().filter(|b| b.starts_with("s3://")) {
        return Ok(loc.to_string());
    }
    let base_abs = std::fs::canonicalize(base)
        .with_context(|| format!("cannot find the base {:?}", base.display()))?;
    let out_dir = if output == "-" {
        std::env::current_dir()?
    } else {
        let out = Path::new(output);
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::canonicalize(&parent).unwrap_or(parent)
    };
    let recorded = match base_abs.strip_prefix(&out_dir) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => base_abs,
    };
    recorded.to_str().map(str::to_string).ok_or_else(|| {
        anyhow!(
            "the base's path {:?} is not UTF-8, which index.json cannot record",
            recorded.display()
        )
    })
}

/// Opens the backups given, then the bases each incremental one records and that are not among
/// them, and reads them all as one: tags from the backups that are no other's base, blobs from
/// any. A base that is missing or is not the backup recorded is an error saying which.
pub async fn open(inputs: &[String], options: OpenOptions) -> Result<Opened> {
    let mut all: Vec<(String, PathBuf, LayoutSource)> = Vec::new();
    for input in inputs {
        let path = PathBuf::from(input);
        let src = LayoutSource::open_with(&path, options).await?;
        // The same backup given twice (or under two names) is read once.
        if src.index_digest().is_some()
            && all.iter().any(|(_, _, s)| s.index_digest() == src.index_digest())
        {
            continue;
        }
        all.push((input.clone(), path, src));
    }
    let given = all.len();
    let mut found = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let (shown, path) = (all[i].0.clone(), all[i].1.clone());
        let record = all[i].2.base().with_context(|| format!("backup {shown:?}"))?;
        i += 1;
        let Some(record) = record else { continue };
        if all.iter().any(|(_, _, s)| s.index_digest() == Some(&record.digest)) {
            continue;
        }
        if all.len() >= MAX_BACKUPS {
            bail!("backup {shown:?} is at the end of a chain of more than {MAX_BACKUPS} incremental backups; refused");
        }
        let at = locate(&path, &record.location);
        let at_shown = crate::scrub::escape_controls(&at.display().to_string()).into_owned();
        // A local base that is missing is said so here; one in object storage, by opening it.
        let remote = at.to_str().is_some_and(|a| a.starts_with("s3://"));
        if !remote && std::fs::symlink_metadata(&at).is_err() {
            bail!(
                "{shown:?} is an incremental backup: it holds only what its base, {at_shown:?} (index.json {}), did not, and that base is not there; give its path too (oras restore --input {shown} --input BASE ..., oras verify {shown} --base BASE)",
                record.digest
            );
        }
        let base = LayoutSource::open(&at)
            .await
            .with_context(|| format!("the base of {shown:?}, recorded as {at_shown:?}"))?;
        if base.index_digest() != Some(&record.digest) {
            bail!(
                "the base of {shown:?} is the backup whose index.json is {}, but {at_shown:?} has {}: it is another backup (made again, or changed since); give the backup {shown:?} was made on (oras restore --input {shown} --input BASE ..., oras verify {shown} --base BASE)",
                record.digest,
                base.index_digest().map_or("none (a docker save archive)".to_string(), |d| d.to_string())
            );
        }
        found.push(at_shown.clone());
        all.push((at_shown, at, base));
    }
    let mut bases = std::collections::HashSet::new();
    for (shown, _, s) in &all {
        if let Some(r) = s.base().with_context(|| format!("backup {shown:?}"))? {
            bases.insert(r.digest);
        }
    }
    let (tops, rest): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(_, _, s)| s.index_digest().is_none_or(|d| !bases.contains(d)));
    let mut tops = tops.into_iter();
    let Some((first_shown, _, first)) = tops.next() else {
        bail!("the backups given are each other's bases (a cycle): the chain is damaged");
    };
    let tops: Vec<(String, LayoutSource)> = tops.map(|(s, _, src)| (s, src)).collect();
    let rest: Vec<LayoutSource> = rest.into_iter().map(|(_, _, src)| src).collect();
    let source = if tops.is_empty() && rest.is_empty() {
        first
    } else {
        first.combine(&first_shown, tops, rest).await?
    };
    Ok(Opened { source, found, given })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_locations_are_relative_to_the_backup_s_directory_unless_absolute() {
        assert_eq!(locate(Path::new("/b/new.tar"), "base.tar"), PathBuf::from("/b/base.tar"));
        assert_eq!(locate(Path::new("new.tar"), "old/base.tar"), PathBuf::from("old/base.tar"));
        assert_eq!(locate(Path::new("x/new"), "/abs/base"), PathBuf::from("/abs/base"));
        assert_eq!(locate(Path::new("x/new"), "s3://b/base.tar"), PathBuf::from("s3://b/base.tar"));
        assert_eq!(
            locate(Path::new("s3://b/new.tar"), "base.tar"),
            PathBuf::from("s3://b/base.tar")
        );
    }

    #[test]
    fn a_base_beside_the_output_is_recorded_by_its_relative_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("daily").join("base.tar");
        std::fs::create_dir_all(base.parent().expect("parent")).expect("dir");
        std::fs::write(&base, b"x").expect("write");
        let out = dir.path().join("new.tar");
        let out = out.to_str().expect("utf-8");
        assert_eq!(location_of(&base, out).expect("location"), "daily/base.tar");
        let elsewhere = dir.path().join("sub").join("new.tar");
        std::fs::create_dir_all(elsewhere.parent().expect("parent")).expect("dir");
        let recorded = location_of(&base, elsewhere.to_str().expect("utf-8")).expect("location");
        assert!(Path::new(&recorded).is_absolute(), "{recorded}");
    }
}
