//! Listings that come in pages linked by `Link: <...>; rel="next"`: a repository's tags, the
//! registry's repositories (`/v2/_catalog`) and a manifest's referrers (the referrers API), all
//! read by one [`Pages`] that follows the links only forward and only on the registry's own origin.

use super::auth::repo_scope;
use super::client::{Call, Client, Result, MAX_PAGE_SIZE};
use super::error::RegistryError;
use super::transport::read_limited;
use super::urls::absolute;
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use crate::target::ErrorKind;
use reqwest::{header, Method, StatusCode};
use std::collections::HashSet;

/// Most names (tags, repositories) or referrers one listing may gather over all its pages.
pub const MAX_LISTED: usize = 2_000_000;

/// The pages of one listing, read in order. Each page's `Link` to the next is checked only when
/// that page is asked for, so a last page (or one the caller stops at) may link anywhere.
pub(super) struct Pages<'a> {
    client: &'a Client,
    op: &'a str,
    target: &'a str,
    scopes: &'a [String],
    accept: Option<&'a str>,
    /// The page read last, and the `Link` target it named for the next one.
    last: Option<(String, Option<String>)>,
    /// The first page, until it is read.
    first: Option<String>,
    /// How many more pages may be read.
    left: usize,
    /// The URLs of the pages read so far: a link back to one of them would never end.
    seen: HashSet<String>,
}

impl<'a> Pages<'a> {
    /// The pages of a listing starting at `url`, at most `pages` of them, asked for with the
    /// `Accept` header `accept` when given.
    pub fn new(client: &'a Client, call: &Call<'a>, accept: Option<&'a str>, pages: usize) -> Self {
        let (op, target, scopes) = (call.op, call.target, call.scopes);
        Pages {
            client,
            op,
            target,
            scopes,
            accept,
            last: None,
            first: Some(call.url.to_string()),
            left: pages,
            seen: HashSet::new(),
        }
    }

    /// The answer for the next page; None once a page named no next one, or `pages` were read.
    pub async fn next(&mut self) -> Result<Option<reqwest::Response>> {
        let url = match (self.first.take(), self.last.take()) {
            (Some(first), _) => first,
            (None, Some((current, Some(link)))) => self.follow(&current, &link)?,
            (None, _) => return Ok(None),
        };
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let accept = self.accept;
        let call = Call::new(self.op, self.target, Method::GET, &url, self.scopes);
        let resp = self
            .client
            .send(&call, |r| if let Some(a) = accept { r.header(header::ACCEPT, a) } else { r })
            .await?;
        let link = resp
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_next_link);
        self.last = Some((url, link));
        Ok(Some(resp))
    }

    /// For a registry that pages by `n` and `last` without sending a `Link` (the page read last was
    /// full): the next page is the first page's URL with `last` set to the last name read. False
    /// when a `Link` was given, or the page was asked for already.
    pub fn resume_after(&mut self, last_name: &str) -> bool {
        // (A `Link` given is followed as usual; a page asked for already ends the listing.)
        let current = match &self.last {
            Some((current, None)) => current.clone(),
            _ => return false,
        };
        let Ok(mut next) = url::Url::parse(&current) else { return false };
        let kept: Vec<(String, String)> = next
            .query_pairs()
            .filter(|(k, _)| k != "last")
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        next.query_pairs_mut().clear().extend_pairs(kept).append_pair("last", last_name);
        self.seen.insert(current.clone());
        if !self.seen.insert(next.to_string()) {
            return false;
        }
        self.last = None;
        self.first = Some(next.into());
        true
    }

    /// The URL of the next page named by a `Link` on the page at `current`: resolved against it, on
    /// the registry's own origin (credentials go nowhere else) and not a page read already.
    fn follow(&mut self, current: &str, link: &str) -> Result<String> {
        let error =
            |detail: String| RegistryError::local(self.op, self.target, ErrorKind::Other, detail);
        let next = absolute(current, link).ok_or_else(|| {
            error(format!(
                "the registry's pagination link {:?} is not a URL",
                crate::scrub::escape_controls(link)
            ))
        })?;
        if next.origin() != self.client.origin {
            return Err(error(format!(
                "the registry's pagination link points to another host ({}); not followed, so that no credentials go there",
                crate::scrub::escape_controls(&next.origin().ascii_serialization())
            )));
        }
        self.seen.insert(current.to_string());
        if !self.seen.insert(next.to_string()) {
            return Err(error("the registry's pagination repeats a page already read (a Link that does not advance); stopped".into()));
        }
        Ok(next.into())
    }
}

impl Client {
    /// Every tag of a repository, following `Link` pagination, sorted, each once. Names outside the
    /// distribution spec's tag grammar are skipped with a warning: they must never reach a URL, a
    /// file name or a ref name.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        let target = format!("{}/{repo}", self.registry);
        let url = self.url(repo, "tags/list?n=1000");
        let scopes = [repo_scope(repo, false)];
        let tags = self
            .names(
                &Call::new("list tags of", &target, Method::GET, &url, &scopes),
                usize::MAX,
                Field::Tags,
            )
            .await?;
        // Sorted and each once: registries list in their own order (Quay), and a tag may come
        // again on the next page when the list changed between pages.
        let mut tags = valid_names(tags, crate::reference::valid_tag, "tag", &target);
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Whether a repository has at least one tag, from one page of one tag (a repository the
    /// registry does not know has none).
    pub async fn has_tags(&self, repo: &str) -> Result<bool> {
        let target = format!("{}/{repo}", self.registry);
        let url = self.url(repo, "tags/list?n=1");
        let scopes = [repo_scope(repo, false)];
        match self
            .names(&Call::new("list tags of", &target, Method::GET, &url, &scopes), 1, Field::Tags)
            .await
        {
            Ok(tags) => Ok(!tags.is_empty()),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every repository of the registry (`/v2/_catalog`), following `Link` pagination; names
    /// outside the spec's repository grammar are skipped with a warning.
    pub async fn list_repositories(&self) -> Result<Vec<String>> {
        // No `n`: Distribution refuses one above its catalog.maxentries; its own page size and Link
        // work everywhere.
        let url = self.root_url("/v2/_catalog");
        let registry = self.registry.clone();
        let scopes = ["registry:catalog:*".to_string()];
        let call = Call::new("list repositories of", &registry, Method::GET, &url, &scopes);
        let repos = self.names(&call, usize::MAX, Field::Repositories).await.map_err(|e| {
            // A registry that answered, but not with a catalog: it has none (GHCR: 404), or none for
            // these credentials (Docker Hub: 401 for the catalog scope). Said so, not only its
            // HTTP status.
            if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Denied | ErrorKind::Unsupported) {
                let detail = format!(
                    "{registry} does not list its repositories (no catalog, or none for these credentials): {}",
                    e.detail
                );
                e.with_detail(detail)
            } else {
                e
            }
        })?;
        Ok(valid_names(repos, crate::reference::valid_repository, "repository", &registry))
    }

    /// The names of a listing (at most `pages` pages): the string array `field` of each page, until
    /// a page has none or names no next one.
    async fn names(&self, call: &Call<'_>, pages: usize, field: Field) -> Result<Vec<String>> {
        // The page size asked for, when the URL asks (a full page without a `Link` may have more
        // after it).
        let asked = url::Url::parse(call.url).ok().and_then(|u| {
            u.query_pairs().find(|(k, _)| k == "n").and_then(|(_, v)| v.parse::<usize>().ok())
        });
        let (op, target) = (call.op, call.target);
        let mut names = Vec::new();
        let mut pager = Pages::new(self, call, None, pages);
        while let Some(resp) = pager.next().await? {
            if !resp.status().is_success() {
                return Err(self.fail(op, target, resp).await);
            }
            let body = read_limited(resp, MAX_PAGE_SIZE)
                .await
                .map_err(|e| call.error(ErrorKind::Other, e))?;
            let page = field
                .read(&body)
                .map_err(|e| call.error(ErrorKind::Other, format!("invalid list: {e}")))?;
            if page.is_empty() {
                break;
            }
            let full = asked.is_some_and(|n| page.len() >= n);
            let last_name = page.last().cloned().unwrap_or_default();
            names.extend(page);
            if full {
                pager.resume_after(&last_name);
            }
            if names.len() > MAX_LISTED {
                return Err(call.error(
                    ErrorKind::Other,
                    format!(
                        "the registry lists more than {MAX_LISTED} names; refusing to gather more"
                    ),
                ));
            }
        }
        Ok(names)
    }

    /// The referrers of a manifest through the referrers API.
    pub async fn referrers_api(&self, repo: &str, subject: &Digest) -> Result<ReferrersAnswer> {
        let target = format!("{}/{repo}@{subject}", self.registry);
        let scopes = [repo_scope(repo, false)];
        let url = self.url(repo, &format!("referrers/{subject}"));
        let call = Call::new("list referrers of", &target, Method::GET, &url, &scopes);
        let mut all = Vec::new();
        let mut pager = Pages::new(self, &call, Some(manifest::OCI_INDEX), usize::MAX);
        while let Some(resp) = pager.next().await? {
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                // A route the registry does not have is a bare 404 ("404 page not found" from
                // Distribution); an API that says "nothing here" the distribution spec's way answers
                // with its error codes (some registries do, for a subject without referrers).
                let (body, _) =
                    super::transport::read_prefix(resp, super::client::MAX_ERROR_BODY).await;
                let codes = super::error::parse_body(&body).codes;
                return Ok(if codes.is_empty() {
                    ReferrersAnswer::NoApi
                } else {
                    ReferrersAnswer::NoneHere
                });
            }
            if status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::BAD_REQUEST {
                return Ok(ReferrersAnswer::NoApi);
            }
            if !status.is_success() {
                return Err(self.fail(call.op, &target, resp).await);
            }
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with(manifest::OCI_INDEX) {
                return Ok(ReferrersAnswer::NoApi);
            }
            let body = read_limited(resp, MAX_MANIFEST_SIZE)
                .await
                .map_err(|e| call.error(ErrorKind::Other, e))?;
            let page = manifest::index_manifests(&body).map_err(|e| {
                call.error(ErrorKind::Other, format!("invalid referrers index: {e}"))
            })?;
            all.extend(page);
            if all.len() > MAX_LISTED {
                let detail = format!(
                    "the registry lists more than {MAX_LISTED} referrers; refusing to gather more"
                );
                return Err(call.error(ErrorKind::Other, detail));
            }
        }
        Ok(ReferrersAnswer::Listed(all))
    }
}

/// What the referrers API answered for one subject.
#[derive(Debug)]
pub enum ReferrersAnswer {
    /// The referrers, every page of them.
    Listed(Vec<Descriptor>),
    /// The registry has no referrers API (a bare 404, 400, 405, or no index served).
    NoApi,
    /// A 404 the API's way (with OCI error codes): none listed for this subject, while the
    /// registry may well have the API; the tag schema is asked too.
    NoneHere,
}

/// Which string array of a listing page holds the names.
#[derive(Clone, Copy)]
enum Field {
    /// `tags` (`/v2/<name>/tags/list`).
    Tags,
    /// `repositories` (`/v2/_catalog`).
    Repositories,
}

impl Field {
    /// The names of one page; values that are not strings are left out.
    fn read(self, body: &[u8]) -> std::result::Result<Vec<String>, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<serde_json::Value>>,
            #[serde(default)]
            repositories: Option<Vec<serde_json::Value>>,
        }
        let page: Page = serde_json::from_slice(body)?;
        let items = match self {
            Field::Tags => page.tags,
            Field::Repositories => page.repositories,
        };
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect())
    }
}

/// The names that fit `valid`; each other one is skipped with a warning (escaped: it came from
/// outside).
fn valid_names(names: Vec<String>, valid: fn(&str) -> bool, what: &str, of: &str) -> Vec<String> {
    let (good, bad): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| valid(n));
    for b in &bad {
        crate::scrub::warn(format_args!(
            "skipping {what} {:?} of {of}: not a valid {what} name (distribution spec)",
            b
        ));
    }
    good
}

/// The target of `rel="next"` in a `Link` header (RFC 8288): `<url>; rel="next"`, among other links
/// separated by commas; the relation may be quoted or not.
fn parse_next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        // A relation may name several types, separated by spaces (`rel="next last"`).
        let mut rels = params.split(';').filter_map(|p| p.trim().strip_prefix("rel="));
        let next = rels.any(|rel| rel.trim_matches('"').split_whitespace().any(|r| r == "next"));
        next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        assert_eq!(
            parse_next_link(r#"</v2/r/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/r/tags/list?n=2&last=b")
        );
        assert_eq!(
            parse_next_link("</v2/_catalog?last=x>; rel=next").as_deref(),
            Some("/v2/_catalog?last=x")
        );
        assert_eq!(parse_next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(
            parse_next_link(r#"</a>; rel="prev", <https://reg.example/b?c=d>; rel="next""#)
                .as_deref(),
            Some("https://reg.example/b?c=d")
        );
        assert_eq!(
            parse_next_link(r#"</a>; type="text/plain"; rel="next""#).as_deref(),
            Some("/a")
        );
        assert_eq!(parse_next_link(r#"</a>; rel="nextish""#), None);
        assert_eq!(parse_next_link(r#"</a>; rel="next last""#).as_deref(), Some("/a"));
        assert_eq!(parse_next_link("</a>"), None, "a link without parameters has no relation");
        assert_eq!(parse_next_link(""), None);
    }

    #[test]
    fn page_fields() {
        let page = br#"{"name":"r","tags":["v1",7,"v2"],"repositories":["x"]}"#;
        assert_eq!(Field::Tags.read(page).unwrap(), ["v1", "v2"]);
        assert_eq!(Field::Repositories.read(page).unwrap(), ["x"]);
        assert_eq!(Field::Tags.read(br#"{"tags":null}"#).unwrap(), Vec::<String>::new());
        assert!(Field::Tags.read(b"<html>").is_err());
    }
}
