//! Platform selection (`--platform`): a multi-platform index root is replaced by the child manifest
//! of the wanted platform, which takes its tag, as `oras copy --platform` and skopeo without
//! `--all` do. The index's own referrers still come along (their subject, the index, is left
//! behind).

use super::walk::mark_sparse;
use super::{Job, JobGraph, Root};
use crate::manifest::Descriptor;
use crate::progress::Progress;
use anyhow::{bail, Result};
use std::fmt;

/// A platform as `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`).
    pub arch: String,
    /// CPU variant (`v8`), when given.
    pub variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(format!("invalid platform {s:?}: give os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm64/v8")),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The platform an index child declares, if it declares one.
pub(super) fn declared(desc: &Descriptor) -> Option<Platform> {
    let p = desc.platform.as_ref()?;
    let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Some(Platform { os: field("os")?, arch: field("architecture")?, variant: field("variant") })
}

impl Platform {
    /// Whether an index child declares this platform (see [`Platform::matches`]).
    pub fn is_declared_by(&self, child: &Descriptor) -> bool {
        declared(child).is_some_and(|p| self.matches(&p))
    }

    /// Whether a declared platform is this one (a variant not asked for matches any).
    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.arch == other.arch
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

/// Narrows each index root of `g` to the children of `wanted`. Without `sparse` (one platform),
/// the child replaces the root and takes its tag; the index is remembered so that its referrers are
/// walked too. With `sparse`, the index stays, unchanged, and only the chosen children are walked;
/// the root is marked partial. A root that is not an index stays; an index that lacks a wanted
/// platform is an error naming the platforms it has.
pub(super) fn select(
    job: &Job,
    g: &mut JobGraph,
    children_of: impl Fn(&Descriptor) -> Option<Vec<Descriptor>>,
    (wanted, sparse): (&[Platform], bool),
    progress: &Progress,
) -> Result<()> {
    let mut roots = Vec::with_capacity(g.roots.len());
    for mut root in std::mem::take(&mut g.roots) {
        let Some(children) = children_of(&root.desc).filter(|c| !c.is_empty()) else {
            roots.push(root);
            continue;
        };
        let name = root
            .tag
            .as_deref()
            .map_or_else(|| root.desc.digest.to_string(), |t| format!("tag {t}"));
        let mut chosen = Vec::new();
        for w in wanted {
            let Some(child) = children.iter().find(|c| w.is_declared_by(c)) else {
                let has: Vec<String> =
                    children.iter().filter_map(declared).map(|p| p.to_string()).collect();
                let has = if has.is_empty() { "none".to_string() } else { has.join(", ") };
                bail!("{name} of {} has no {w} manifest; it has: {has}", job.label);
            };
            chosen.push(child.clone());
        }
        if sparse {
            let kept: Vec<String> = wanted.iter().map(Platform::to_string).collect();
            g.left_out.extend(
                children
                    .iter()
                    .filter(|c| !chosen.iter().any(|k| k.digest == c.digest))
                    .map(|c| c.digest.clone()),
            );
            g.partial.insert(root.desc.digest.clone());
            progress.status(&format!(
                "Kept {} of {name} of {}: the index {} is copied unchanged with {} of its {} manifests (--sparse-index)",
                kept.join(", "),
                job.label,
                root.desc.digest,
                chosen.len(),
                children.len()
            ));
            mark_sparse(&mut root.desc, &kept.join(","));
            roots.push(root);
            continue;
        }
        let child = &chosen[0];
        progress.status(&format!(
            "Selected {} for {name} of {}: the copy names manifest {} (the index {} is left behind, its referrers kept)",
            wanted[0], job.label, child.digest, root.desc.digest
        ));
        g.left_indexes.push(root.desc.clone());
        roots.push(Root {
            tag: root.tag,
            desc: Descriptor { platform: None, annotations: None, ..child.clone() },
        });
    }
    g.roots = roots;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_print_and_match_with_or_without_a_variant() {
        let p: Platform = "linux/arm64".parse().expect("platform");
        assert_eq!(p.to_string(), "linux/arm64");
        let v8: Platform = "linux/arm64/v8".parse().expect("platform");
        assert!(p.matches(&v8) && v8.matches(&v8) && !v8.matches(&p));
        assert!("linux".parse::<Platform>().unwrap_err().contains("os/arch"));
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
        let mut d = Descriptor::new("x", crate::digest::Digest::of(b"x"), 1);
        d.platform =
            Some(serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"}));
        assert_eq!(declared(&d), Some(v8));
    }
}
