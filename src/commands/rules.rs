//! Restore rules (`oras restore --rules FILE`): the upstream ORAS multi-repository format, JSON
//! with `//` comments, checked against the backup before anything is pushed.

use super::UsageError;
use crate::engine::Job;
use crate::reference::{valid_tag, Reference};
use crate::target::Repo;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A rules file is written by hand: anything larger is not one.
const MAX_RULES_SIZE: u64 = 1 << 20;

/// A rules file. Unknown keys are errors: a misspelt key must not silently widen a restore.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Settings for every mapping.
    #[serde(default)]
    pub settings: Settings,
    /// What goes where.
    pub mappings: Vec<Mapping>,
}

/// The `settings` object.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Push no referrers, for every mapping that does not say otherwise.
    #[serde(default)]
    pub exclude_referrers: bool,
    /// Stop at the first mapping that fails (true), or restore the others and report every failure.
    #[serde(default = "yes")]
    pub fail_fast: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { exclude_referrers: false, fail_fast: true }
    }
}

fn yes() -> bool {
    true
}

/// One mapping: a repository of the backup to a target repository.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Mapping {
    /// The backed-up repository, as the backup records it (`registry/repository`).
    pub source: String,
    /// Where it goes (`registry/repository`).
    pub target: String,
    /// Only these tags (all when absent).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New names at the target for some tags.
    #[serde(default)]
    pub tag_mappings: BTreeMap<String, String>,
    /// Overrides `settings.exclude-referrers` for this mapping.
    #[serde(default)]
    pub exclude_referrers: Option<bool>,
}

/// Reads and parses a rules file.
pub fn load(path: &Path) -> Result<Rules> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| UsageError(format!("cannot read the rules file {shown:?}: {e}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > MAX_RULES_SIZE {
        return Err(UsageError(format!(
            "the rules file {shown:?} is {size} bytes, over the {MAX_RULES_SIZE} byte limit"
        ))
        .into());
    }
    let reader = json_comments::StripComments::new(std::io::Read::take(file, MAX_RULES_SIZE));
    let rules: Rules = serde_json::from_reader(reader)
        .map_err(|e| UsageError(format!("the rules file {shown:?} is not valid: {e}")))?;
    if rules.mappings.is_empty() {
        return Err(UsageError(format!(
            "the rules file {shown:?} has no mappings: nothing to restore"
        ))
        .into());
    }
    Ok(rules)
}

/// What the backup holds: each repository with its tags.
pub type Holdings = Vec<(Repo, Vec<String>)>;

fn listing(held: &Holdings) -> String {
    held.iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>().join(", ")
}

/// Turns the rules into one job per mapping, checking every source, tag and target against the
/// backup, and refusing tags that two mappings would write into the same target repository.
pub fn jobs(rules: &Rules, held: &Holdings) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    // (target, tag at the target) -> the source and tag that would write it.
    let mut writes: HashMap<(Repo, String), (Repo, String)> = HashMap::new();
    for (i, m) in rules.mappings.iter().enumerate() {
        let at = || format!("mapping {} ({} -> {})", i + 1, m.source, m.target);
        let (src, tags) =
            held.iter().find(|(r, _)| r.to_string() == m.source).ok_or_else(|| {
                anyhow!(
                    "{}: the backup has no repository {:?}; it holds: {}",
                    at(),
                    m.source,
                    listing(held)
                )
            })?;
        let dst = target_repo(&m.target).map_err(|e| anyhow!("{}: {e}", at()))?;
        if let Some(wanted) = &m.tags {
            let missing: Vec<&str> =
                wanted.iter().filter(|t| !tags.contains(t)).map(String::as_str).collect();
            if !missing.is_empty() {
                bail!(
                    "{}: tag(s) {} are not in the backup's {src}; it holds: {}",
                    at(),
                    missing.join(", "),
                    tags.join(", ")
                );
            }
        }
        let restored: Vec<&String> =
            tags.iter().filter(|t| m.tags.as_ref().is_none_or(|w| w.contains(t))).collect();
        for (from, to) in &m.tag_mappings {
            if !restored.contains(&from) {
                bail!("{}: tag-mappings renames {from:?}, which this mapping does not restore; it restores: {}", at(), join(&restored));
            }
            if !valid_tag(to) {
                bail!(
                    "{}: tag-mappings renames {from:?} to {to:?}, which is not a valid tag",
                    at()
                );
            }
        }
        for t in &restored {
            let new = m.tag_mappings.get(*t).unwrap_or(t);
            if let Some((other, other_tag)) =
                writes.insert((dst.clone(), new.clone()), (src.clone(), (*t).clone()))
            {
                bail!(
                    "{}: tag {new} of {dst} would be written twice, from {other}:{other_tag} and from {src}:{t}; restrict the mappings' tags or rename one with tag-mappings",
                    at()
                );
            }
        }
        let job = Job {
            only_tags: m.tags.clone(),
            rename: m.tag_mappings.clone(),
            exclude_referrers: m.exclude_referrers.unwrap_or(rules.settings.exclude_referrers),
            ..Job::new(src.clone(), dst, format!("the backup ({src})"))
        };
        jobs.push(job);
    }
    Ok(jobs)
}

fn join(tags: &[&String]) -> String {
    tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// A mapping's target: a repository, without tag or digest.
fn target_repo(target: &str) -> Result<Repo> {
    match Reference::parse_target(target) {
        Ok(Some(r)) if r.tags.is_empty() && r.digest.is_none() => Ok(Repo::new(&r.registry, &r.repository)),
        Ok(Some(_)) => bail!("target {target:?} names a tag or digest: give registry/repository, and tags in \"tags\" or \"tag-mappings\""),
        Ok(None) => bail!("target {target:?} is a registry alone: give registry/repository"),
        Err(e) => bail!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<Rules> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules.json");
        std::fs::write(&p, text).unwrap();
        load(&p)
    }

    fn held() -> Holdings {
        vec![
            (Repo::new("src.io", "team/app"), vec!["latest".into(), "v1".into()]),
            (Repo::new("src.io", "team/web"), vec!["latest".into(), "v2".into()]),
        ]
    }

    #[test]
    fn the_upstream_format_with_comments_becomes_one_job_per_mapping() {
        let r = rules(
            r#"{
              // global settings
              "settings": {"exclude-referrers": true, "fail-fast": false},
              "mappings": [
                {"source": "src.io/team/app", "target": "dst.io/apps/app", "tag-mappings": {"latest": "stable"}},
                // only v2, referrers kept
                {"source": "src.io/team/web", "target": "dst.io/web", "tags": ["v2"], "exclude-referrers": false}
              ]
            }"#,
        )
        .unwrap();
        assert!(!r.settings.fail_fast);
        let jobs = jobs(&r, &held()).unwrap();
        assert_eq!(jobs[0].dst, Repo::new("dst.io", "apps/app"));
        assert_eq!(jobs[0].rename.get("latest").map(String::as_str), Some("stable"));
        assert!(jobs[0].exclude_referrers && !jobs[1].exclude_referrers);
        assert_eq!(jobs[1].only_tags, Some(vec!["v2".to_string()]));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let e =
            rules(r#"{"mappings": [{"source": "a.io/x", "target": "b.io/x", "tagz": ["v1"]}]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("tagz") && e.contains("line 1"), "{e}");
        let e = rules(r#"{"setings": {}, "mappings": []}"#).unwrap_err().to_string();
        assert!(e.contains("setings"), "{e}");
    }

    #[test]
    fn sources_and_tags_not_in_the_backup_are_named_with_what_it_holds() {
        let r =
            rules(r#"{"mappings": [{"source": "src.io/team/gone", "target": "b.io/x"}]}"#).unwrap();
        let e = jobs(&r, &held()).unwrap_err().to_string();
        assert!(
            e.contains("src.io/team/gone") && e.contains("src.io/team/app, src.io/team/web"),
            "{e}"
        );
        let r = rules(
            r#"{"mappings": [{"source": "src.io/team/app", "target": "b.io/x", "tags": ["v9"]}]}"#,
        )
        .unwrap();
        let e = jobs(&r, &held()).unwrap_err().to_string();
        assert!(e.contains("v9") && e.contains("latest, v1"), "{e}");
        let r = rules(r#"{"mappings": [{"source": "src.io/team/app", "target": "b.io/x:v1"}]}"#)
            .unwrap();
        assert!(jobs(&r, &held()).unwrap_err().to_string().contains("names a tag"));
    }

    #[test]
    fn consolidation_that_would_write_a_tag_twice_names_both_sources() {
        let r = rules(
            r#"{"mappings": [
                {"source": "src.io/team/app", "target": "dst.io/all"},
                {"source": "src.io/team/web", "target": "dst.io/all"}
            ]}"#,
        )
        .unwrap();
        let e = jobs(&r, &held()).unwrap_err().to_string();
        assert!(
            e.contains("latest")
                && e.contains("src.io/team/app:latest")
                && e.contains("src.io/team/web:latest"),
            "{e}"
        );
        let r = rules(
            r#"{"mappings": [
                {"source": "src.io/team/app", "target": "dst.io/all", "tag-mappings": {"latest": "app-latest"}},
                {"source": "src.io/team/web", "target": "dst.io/all", "tag-mappings": {"latest": "web-latest"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(jobs(&r, &held()).unwrap().len(), 2);
    }
}
