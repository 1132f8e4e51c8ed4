//! Parsing and normalising `registry/repo[:tag[,tag...]]`, `registry/repo@digest` and bare
//! registries.

use crate::digest::Digest;
use std::fmt;

/// A parsed reference to a repository, with the tags or digest it names (none: every tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry as the user names it (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path (`library/` added for one-part Docker Hub names).
    pub repository: String,
    /// Tags named after `:`, comma-separated.
    pub tags: Vec<String>,
    /// Digest named after `@`.
    pub digest: Option<Digest>,
}

/// A reference the user wrote that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError { input: input.to_string(), reason: reason.into() }
}

/// Whether `s` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// Whether `s` is a referrers tag-schema tag (`sha256-<64 hex>`), never a user tag.
pub fn is_schema_tag(s: &str) -> bool {
    s.len() == 71
        && s.starts_with("sha256-")
        && s[7..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `repo` is a valid repository path.
pub fn valid_repository(repo: &str) -> bool {
    !repo.is_empty() && repo.len() <= 255 && repo.split('/').all(valid_component)
}

fn valid_registry(host: &str) -> bool {
    // "[::1]" alone has colons but no port; "[::1]:5000" and "host:5000" have one.
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !host.starts_with('[') || n.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.parse::<u16>().is_err() {
            return false;
        }
    }
    if name.starts_with('[') && name.ends_with(']') {
        return name[1..name.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

impl Reference {
    /// Parses `registry/repo[:tags|@digest]`; the repository part is required.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let r = Self::parse_target(input)?;
        match r {
            Some(r) => Ok(r),
            None => Err(err(input, "expected <registry>/<repository>[:<tag>[,<tag>...]] or <registry>/<repository>@<digest>")),
        }
    }

    /// Parses a reference that may also be a bare registry (restore targets); `None` for a bare
    /// registry.
    pub fn parse_target(input: &str) -> Result<Option<Reference>, ReferenceError> {
        if input.is_empty() {
            return Err(err(input, "empty reference"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(input, "contains whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let d: Digest = d.parse().map_err(|e| err(input, format!("{e}")))?;
                (r, Some(d))
            }
            None => (input, None),
        };
        let (first, path) = match rest.split_once('/') {
            Some((f, p)) if looks_like_host(f) => (f.to_string(), Some(p)),
            Some(_) => ("docker.io".to_string(), Some(rest)),
            None if looks_like_host(rest) && digest.is_none() => {
                if !valid_registry(rest) {
                    return Err(err(input, "invalid registry host"));
                }
                return Ok(None);
            }
            None => ("docker.io".to_string(), Some(rest)),
        };
        if !valid_registry(&first) {
            return Err(err(input, format!("invalid registry host {first:?}")));
        }
        let path = path.unwrap_or_default();
        // A tag follows the last ':' after the last '/'.
        let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tags) = match path[last_slash..].find(':') {
            Some(i) => {
                let (r, t) = path.split_at(last_slash + i);
                (r, Some(&t[1..]))
            }
            None => (path, None),
        };
        let mut repository = repo.to_string();
        if first == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if !valid_repository(&repository) {
            return Err(err(input, format!("invalid repository name {repo:?}: use lowercase letters, digits and separators (. _ - /)")));
        }
        let mut tag_list = Vec::new();
        if let Some(t) = tags {
            for tag in t.split(',') {
                if !valid_tag(tag) {
                    return Err(err(input, format!("invalid tag {tag:?}: tags are 1-128 of [A-Za-z0-9_.-], not starting with . or -")));
                }
                if !tag_list.iter().any(|x: &String| x == tag) {
                    tag_list.push(tag.to_string());
                }
            }
        }
        if digest.is_some() && !tag_list.is_empty() {
            return Err(err(input, "give either tags or a digest, not both"));
        }
        Ok(Some(Reference { registry: first, repository, tags: tag_list, digest }))
    }

    /// `registry/repository` without tags.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        } else if !self.tags.is_empty() {
            write!(f, ":{}", self.tags.join(","))?;
        }
        Ok(())
    }
}

/// Checks a registry host as the user typed it (restore targets, `repo ls`).
pub fn parse_registry(input: &str) -> Result<String, ReferenceError> {
    if valid_registry(input) {
        Ok(input.to_string())
    } else {
        Err(err(input, "invalid registry host"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let r = Reference::parse("localhost:5000/team/app:v1,v2").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tags, vec!["v1", "v2"]);
        let r = Reference::parse("reg.io/app").unwrap();
        assert!(r.tags.is_empty());
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("reg.io/app@{d}")).unwrap();
        assert_eq!(r.digest, Some(d));
        let r = Reference::parse("docker.io/alpine").unwrap();
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(Reference::parse_target("127.0.0.1:5000").unwrap(), None);
        assert!(Reference::parse_target("127.0.0.1:5000/x").unwrap().is_some());
    }

    #[test]
    fn rejects_bad() {
        assert!(Reference::parse("UPPER/Case").is_err());
        assert!(Reference::parse("reg.io/repo:bad tag!").is_err());
        assert!(Reference::parse("reg.io/repo:bad!").is_err());
        assert!(Reference::parse("reg.io/repo:").is_err());
        assert!(Reference::parse("reg.io/repo@sha256:1234").is_err());
        assert!(Reference::parse("reg.io:99999/repo").is_err());
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("reg.io").is_err());
    }

    #[test]
    fn schema_tags() {
        assert!(is_schema_tag(&Digest::of(b"").schema_tag()));
        assert!(!is_schema_tag("sha256-abc"));
        assert!(valid_tag("v1.0_rc-1"));
        assert!(!valid_tag(".hidden"));
    }
}
