//! Distribution API calls against one registry host, with auth and bounded retries.

use super::auth::{repo_scope, Auth, Credentials, CREDENTIALS_HINT};
use super::error::{describe_body, RegistryError};
use super::stall::{self, StallLimit};
use super::transport::{
    api_host, debug_line, describe_transport, is_localhost, is_retryable_status, is_retryable_transport, read_limited, read_prefix,
    retry_after, Redacted, RetryPolicy, TransportOptions,
};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MANIFEST_TYPES, MAX_MANIFEST_SIZE};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Largest answer read whole (a tag, catalog or referrers page; a manifest is bounded lower).
pub const MAX_PAGE_SIZE: u64 = 16 << 20;
/// Most names (tags, repositories) or referrers one listing may gather over all its pages.
pub const MAX_LISTED: usize = 2_000_000;
/// How much of an error answer is read for its message; the rest is left unread.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A stream of blob bytes.
pub use crate::target::ByteStream;

/// A client for one registry.
pub struct Client {
    http: reqwest::Client,
    /// The registry name as the user wrote it.
    pub registry: String,
    base: String,
    /// The registry's origin (scheme, host, port): the only one its credentials are sent to.
    origin: url::Origin,
    auth: Auth,
    request_timeout: Duration,
    stall: StallLimit,
    debug: bool,
    chunk_size: Option<u64>,
    /// Upload sessions opened and not finished: session path -> (repository, latest location).
    open_uploads: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// How many requests opening an upload session are on their way.
    opening: tokio::sync::watch::Sender<usize>,
}

/// What a manifest PUT told us.
pub struct PutResult {
    /// The `OCI-Subject` header: the registry indexed the referrer itself.
    pub subject_indexed: bool,
}

type Result<T> = std::result::Result<T, RegistryError>;

fn rerr(op: &str, target: &str, status: Option<u16>, detail: impl Into<String>) -> RegistryError {
    RegistryError { op: op.into(), target: target.into(), status, detail: detail.into() }
}

impl Client {
    /// A client for `registry` sharing the HTTP connection pool `http`.
    pub fn new(http: reqwest::Client, registry: &str, opts: &TransportOptions, creds: Credentials) -> Arc<Self> {
        let scheme = if opts.plain_http || is_localhost(registry) { "http" } else { "https" };
        let mut authority = api_host(registry).to_string();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h.to_string(), p.parse::<u16>().ok()),
            _ => (authority.clone(), None),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        // A URL without a port of its own is dialled at the port `--resolve` gives (transport::parse_resolve
        // keeps it), so the Host header and the registry's absolute upload URLs keep the name as written.
        // A URL that names a port is dialled there whatever the resolver says: it must name the new one.
        if let Some(port) = port.filter(|p| *p != default_port) {
            if let Some(p) = super::transport::remapped_port(&opts.resolve, &host, port) {
                authority = format!("{host}:{p}");
            }
        }
        let base = format!("{scheme}://{authority}");
        let origin =
            url::Url::parse(&base).map(|u| u.origin()).unwrap_or_else(|_| url::Url::parse("http://invalid.").expect("static URL").origin());
        Arc::new(Client {
            http,
            registry: registry.to_string(),
            base,
            origin,
            auth: Auth::new(creds, scheme == "https", opts.request_timeout),
            request_timeout: opts.request_timeout,
            stall: opts.stall,
            debug: opts.debug,
            chunk_size: opts.chunk_size,
            open_uploads: std::sync::Mutex::new(HashMap::new()),
            opening: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Whether `url` is on the registry's own origin, where its credentials may go.
    fn same_origin(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| u.origin() == self.origin)
    }

    /// The authorization cached for `key`, for a request to `url`: none off the registry's origin.
    fn authorization_for(&self, url: &str, key: &str) -> Option<String> {
        if self.same_origin(url) {
            self.auth.cached(key)
        } else {
            None
        }
    }

    fn session_closed(&self, location: &str) {
        if let Ok(mut open) = self.open_uploads.lock() {
            open.remove(session_of(location));
        }
    }

    /// Deletes the upload sessions this client opened and did not finish (an interrupted or failed run),
    /// best effort: a registry would otherwise keep their bytes until its own expiry (a week for
    /// Distribution). A session cut off mid-transfer may refuse: its location no longer matches its size.
    /// Sessions whose opening answer is still on its way are waited for (the caller bounds the time),
    /// then deleted too.
    pub async fn abandon_open_uploads(&self) {
        let mut settled = self.opening.subscribe();
        let known = self.cancel_recorded_uploads();
        let opened = async {
            let _ = settled.wait_for(|n| *n == 0).await;
        };
        futures::future::join(known, opened).await;
        self.cancel_recorded_uploads().await;
    }

    /// Deletes the sessions recorded as open so far.
    async fn cancel_recorded_uploads(&self) {
        let open: Vec<(String, String)> = match self.open_uploads.lock() {
            Ok(mut open) => open.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        futures::future::join_all(open.iter().map(|(repo, location)| self.cancel_upload(repo, location))).await;
    }

    fn trace(&self, method: &Method, url: &str, status: Option<StatusCode>, authed: bool) {
        if self.debug {
            let auth = if authed { " [Authorization: <redacted>]" } else { "" };
            match status {
                Some(s) => eprintln!("[debug] {method} {url}{auth} -> {}", s.as_u16()),
                None => eprintln!("[debug] {method} {url}{auth} -> transport error"),
            }
        }
    }

    /// Sends a request built by `build` with auth for `scopes`, retrying transient failures
    /// (connection errors, bodies cut short, 408/429/5xx) within the transport's retry budget.
    /// `build` is called again for each attempt, so bodies must be replayable. A 401 is answered
    /// once with fresh credentials, and once more when the token that failed came from the cache.
    async fn send<F>(&self, op: &str, target: &str, method: Method, url: &str, scopes: &[String], build: F) -> Result<reqwest::Response>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let key = scopes.join(" ");
        let policy = RetryPolicy::default();
        let started = std::time::Instant::now();
        let mut fetched_here = 0u32;
        let mut attempt = 0;
        let shown = Redacted(url);
        // Small JSON answers (manifests, tag lists, referrers) are read here, so that a body
        // cut short is retried like any transient failure; blobs stream to the caller.
        let buffer = method == Method::GET && !url.contains("/blobs/");
        // Credentials go to the registry's own origin only (an upload session or a blob may live on
        // storage elsewhere, which gets the request bare).
        let ours = self.same_origin(url);
        loop {
            attempt += 1;
            let mut authz = if ours { self.auth.cached(&key) } else { None };
            let from_cache = authz.is_some() && fetched_here == 0;
            if authz.is_none() && ours {
                authz = self.auth.preauthorize(&self.http, &key, scopes).await.map_err(|e| rerr(op, target, Some(401), e.to_string()))?;
                if authz.is_some() {
                    fetched_here += 1;
                }
            }
            let mut rb = build(self.http.request(method.clone(), url));
            if let Some(a) = &authz {
                let mut v = header::HeaderValue::from_str(a).map_err(|_| rerr(op, target, None, "unusable authorization token"))?;
                v.set_sensitive(true);
                rb = rb.header(header::AUTHORIZATION, v);
            }
            let auth_note = if authz.is_some() { " [Authorization: <redacted>]" } else { "" };
            // The whole exchange, answer read, within the deadline (a blob's body has its stall watch).
            let exchange = async {
                match rb.send().await {
                    Ok(resp) if buffer && resp.status().is_success() => buffered(resp).await,
                    other => other.map_err(Attempt::Transport),
                }
            };
            let res = match tokio::time::timeout(self.request_timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(Attempt::TimedOut),
            };
            let res = match res {
                Err(Attempt::TooLarge) => {
                    debug_line(format_args!("{method} {shown}{auth_note} -> answer over the {MAX_PAGE_SIZE} byte limit"));
                    return Err(rerr(op, target, None, format!("the registry's answer is larger than the {MAX_PAGE_SIZE} byte limit")));
                }
                Err(Attempt::TimedOut) => {
                    debug_line(format_args!("{method} {shown}{auth_note} -> no complete answer in time"));
                    if let Some(wait) = policy.next_delay(attempt, started, None) {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(rerr(
                        op,
                        target,
                        None,
                        format!(
                            "timed out: no complete answer within {} s (--request-timeout) from {}, after {attempt} attempts",
                            self.request_timeout.as_secs(),
                            self.registry
                        ),
                    ));
                }
                Err(Attempt::Transport(e)) => Err(e),
                Ok(r) => Ok(r),
            };
            match res {
                Err(e) => {
                    let why = describe_transport(&e);
                    debug_line(format_args!("{method} {shown}{auth_note} -> {why}"));
                    if is_retryable_transport(&e) {
                        if let Some(wait) = policy.next_delay(attempt, started, None) {
                            debug_line(format_args!(
                                "retrying in {} ms (attempt {}/{})",
                                wait.as_millis(),
                                attempt + 1,
                                policy.max_attempts
                            ));
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    let tries = if attempt > 1 { format!(", after {attempt} attempts") } else { String::new() };
                    return Err(rerr(op, target, None, format!("{why} ({}{tries})", self.registry)));
                }
                Ok(resp) => {
                    let status = resp.status();
                    debug_line(format_args!("{method} {shown}{auth_note} -> {}", status.as_u16()));
                    // Answer a 401 when we sent nothing, or sent a cached token that may have
                    // gone stale; a token fetched for this very request failing is final.
                    if ours && status == StatusCode::UNAUTHORIZED && (authz.is_none() || from_cache) && fetched_here < 2 {
                        self.auth.invalidate(&key, authz.as_deref());
                        let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_string);
                        self.auth
                            .authorize(&self.http, challenge.as_deref(), &key, scopes, authz.as_deref())
                            .await
                            .map_err(|e| rerr(op, target, Some(401), e.to_string()))?;
                        fetched_here += 1;
                        continue;
                    }
                    if is_retryable_status(status) {
                        if let Some(wait) = policy.next_delay(attempt, started, retry_after(resp.headers())) {
                            debug_line(format_args!(
                                "retrying in {} ms (attempt {}/{})",
                                wait.as_millis(),
                                attempt + 1,
                                policy.max_attempts
                            ));
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    return Ok(resp);
                }
            }
        }
    }

    /// The error for an unsuccessful answer: operation, reference, status, the registry's
    /// `errors[].code: message`, and for 401/403 which credentials were tried and how to give others.
    async fn fail(&self, op: &str, target: &str, resp: reqwest::Response) -> RegistryError {
        let status = resp.status().as_u16();
        let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (body, cut) = read_prefix(resp, MAX_ERROR_BODY).await;
        // Whatever the registry echoes (a header, a password, a token) is not repeated.
        let mut detail = crate::scrub::redact(&describe_body(&body)).into_owned();
        if cut {
            detail.push_str(&format!(" (the rest of the answer was not read: over the {MAX_ERROR_BODY} byte limit for an error)"));
        }
        let scope = challenge.as_deref().and_then(super::challenge::insufficient_scope);
        if let Some(scope) = scope {
            detail = format!("{detail} ({})", self.auth.insufficient(&self.registry, &scope));
        } else if status == 401 || status == 403 {
            let what = if status == 401 { "not accepted" } else { "not allowed this" };
            detail = format!("{detail} ({what}: tried {}; {CREDENTIALS_HINT})", self.auth.credentials().describe());
        }
        rerr(op, target, Some(status), detail)
    }

    fn url(&self, repo: &str, tail: &str) -> String {
        format!("{}/v2/{repo}/{tail}", self.base)
    }

    /// Every tag of a repository, following `Link` pagination. Names outside the distribution spec's tag
    /// grammar are skipped with a warning: they must never reach a URL, a file name or a ref name.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        let target = format!("{}/{repo}", self.registry);
        let url = self.url(repo, "tags/list?n=1000");
        let tags = self.paginate(usize::MAX, "list tags of", &target, url, &[repo_scope(repo, false)], "tags").await?;
        Ok(valid_names(tags, crate::reference::valid_tag, "tag", &target))
    }

    /// Whether a repository has at least one tag, from one page of one tag (a repository the registry does
    /// not know has none).
    pub async fn has_tags(&self, repo: &str) -> Result<bool> {
        let target = format!("{}/{repo}", self.registry);
        let url = self.url(repo, "tags/list?n=1");
        match self.paginate(1, "list tags of", &target, url, &[repo_scope(repo, false)], "tags").await {
            Ok(tags) => Ok(!tags.is_empty()),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every repository of the registry (`/v2/_catalog`), following `Link` pagination; names outside the
    /// spec's repository grammar are skipped with a warning.
    pub async fn list_repositories(&self) -> Result<Vec<String>> {
        // No `n`: Distribution refuses one above its catalog.maxentries; its own page size and Link work everywhere.
        let url = format!("{}/v2/_catalog", self.base);
        let registry = self.registry.clone();
        let repos =
            self.paginate(usize::MAX, "list repositories of", &registry, url, &["registry:catalog:*".to_string()], "repositories").await?;
        Ok(valid_names(repos, crate::reference::valid_repository, "repository", &registry))
    }

    /// Follows `Link: <...>; rel="next"` pages (at most `pages`), collecting the string array `field` of each.
    async fn paginate(&self, pages: usize, op: &str, target: &str, mut url: String, scopes: &[String], field: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..pages {
            let resp = self.send(op, target, Method::GET, &url, scopes, |r| r).await?;
            if !resp.status().is_success() {
                return Err(self.fail(op, target, resp).await);
            }
            let next = resp.headers().get(header::LINK).and_then(|v| v.to_str().ok()).and_then(parse_next_link);
            let body = read_limited(resp, MAX_PAGE_SIZE).await.map_err(|e| rerr(op, target, None, e))?;
            #[derive(serde::Deserialize)]
            struct Page {
                #[serde(default)]
                tags: Option<Vec<serde_json::Value>>,
                #[serde(default)]
                repositories: Option<Vec<serde_json::Value>>,
            }
            let page: Page = serde_json::from_slice(&body).map_err(|e| rerr(op, target, None, format!("invalid list: {e}")))?;
            let items = if field == "tags" { page.tags } else { page.repositories }.unwrap_or_default();
            let page: Vec<String> = items.into_iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
            let empty = page.is_empty();
            names.extend(page);
            if names.len() > MAX_LISTED {
                return Err(rerr(op, target, None, format!("the registry lists more than {MAX_LISTED} names; refusing to gather more")));
            }
            match next {
                Some(n) if !empty => url = self.next_page(op, target, &url, &n, &mut seen)?,
                _ => break,
            }
        }
        Ok(names)
    }

    /// The URL of the next page named by a `Link` on the page at `current`: resolved against it, on the
    /// registry's own origin (credentials go nowhere else) and not a page read already (`seen`: the URLs
    /// of the pages read so far).
    fn next_page(&self, op: &str, target: &str, current: &str, link: &str, seen: &mut HashSet<String>) -> Result<String> {
        let base = url::Url::parse(current).map_err(|e| rerr(op, target, None, format!("internal: bad URL: {e}")))?;
        let next = base.join(link).map_err(|_| {
            rerr(op, target, None, format!("the registry's pagination link {:?} is not a URL", crate::scrub::escape_controls(link)))
        })?;
        if next.origin() != self.origin {
            return Err(rerr(
                op,
                target,
                None,
                format!(
                    "the registry's pagination link points to another host ({}); not followed, so that no credentials go there",
                    crate::scrub::escape_controls(&next.origin().ascii_serialization())
                ),
            ));
        }
        seen.insert(current.to_string());
        if !seen.insert(next.to_string()) {
            return Err(rerr(
                op,
                target,
                None,
                "the registry's pagination repeats a page already read (a Link that does not advance); stopped",
            ));
        }
        Ok(next.into())
    }

    /// Resolves a tag or digest to a descriptor with HEAD; `None` when it does not exist.
    pub async fn head_manifest(&self, repo: &str, reference: &str, push: bool) -> Result<Option<Descriptor>> {
        let (target, resp) = self.head(repo, reference, push, None).await?;
        self.described(repo, reference, &target, resp).await
    }

    /// Whether a tag points at `digest`. Asked conditionally (If-None-Match): a registry that
    /// honours it answers 304 without reading the manifest from its storage.
    pub async fn tag_points_at(&self, repo: &str, tag: &str, digest: &Digest, push: bool) -> Result<bool> {
        let (target, resp) = self.head(repo, tag, push, Some(digest)).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(true);
        }
        Ok(self.described(repo, tag, &target, resp).await?.is_some_and(|d| d.digest == *digest))
    }

    /// Sends a HEAD for a manifest, conditional on `unless` when given: (what was asked, the answer).
    async fn head(&self, repo: &str, reference: &str, push: bool, unless: Option<&Digest>) -> Result<(String, reqwest::Response)> {
        let target = format!("{}/{repo}:{reference}", self.registry);
        let url = self.url(repo, &format!("manifests/{reference}"));
        let scopes = [repo_scope(repo, push)];
        let accept = MANIFEST_TYPES.join(", ");
        let resp = self
            .send("resolve", &target, Method::HEAD, &url, &scopes, |r| if_none_match(r.header(header::ACCEPT, &accept), unless))
            .await?;
        Ok((target, resp))
    }

    /// The descriptor a HEAD of a manifest answered with; None when there is no such manifest.
    async fn described(&self, repo: &str, reference: &str, target: &str, resp: reqwest::Response) -> Result<Option<Descriptor>> {
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail("resolve", target, resp).await);
        }
        let h = resp.headers();
        let media_type =
            h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.split(';').next().unwrap_or("").trim().to_string());
        let digest = h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|d| d.parse::<Digest>().ok());
        let size = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok());
        match (media_type, digest, size) {
            (Some(mt), Some(d), Some(s)) if MANIFEST_TYPES.contains(&mt.as_str()) => Ok(Some(Descriptor::new(&mt, d, s))),
            // Some registries omit headers on HEAD: fall back to GET.
            _ => Ok(self.get_manifest(repo, reference, None).await.map(|(d, _)| Some(d))?),
        }
    }

    /// Fetches a manifest by tag or digest; verifies it against `expect` when given.
    pub async fn get_manifest(&self, repo: &str, reference: &str, expect: Option<&Descriptor>) -> Result<(Descriptor, Bytes)> {
        match self.get_manifest_if(repo, reference, expect, None).await? {
            Some(found) => Ok(found),
            None => Err(rerr(
                "fetch manifest",
                &format!("{}/{repo}/{reference}", self.registry),
                Some(304),
                "the registry answered an unconditional request with 304",
            )),
        }
    }

    /// Fetches a manifest by tag unless the tag still points at `known`: then (a 304 from a
    /// registry that honours If-None-Match, saving it a storage read and the body) returns None.
    pub async fn get_manifest_unless(&self, repo: &str, tag: &str, known: &Digest) -> Result<Option<(Descriptor, Bytes)>> {
        self.get_manifest_if(repo, tag, None, Some(known)).await
    }

    /// Fetches a manifest, verified against `expect` when given; None when `unless` was sent and the
    /// registry answered that it is unchanged.
    async fn get_manifest_if(
        &self,
        repo: &str,
        reference: &str,
        expect: Option<&Descriptor>,
        unless: Option<&Digest>,
    ) -> Result<Option<(Descriptor, Bytes)>> {
        let target = format!("{}/{repo}{}{reference}", self.registry, if reference.contains(':') { "@" } else { ":" });
        let op = "fetch manifest";
        if let Some(d) = expect {
            if d.size > MAX_MANIFEST_SIZE {
                return Err(rerr(
                    op,
                    &target,
                    None,
                    format!("declared size {} exceeds the {} byte manifest limit", d.size, MAX_MANIFEST_SIZE),
                ));
            }
        }
        let url = self.url(repo, &format!("manifests/{reference}"));
        let scopes = [repo_scope(repo, false)];
        let accept = match expect {
            Some(d) if !d.media_type.is_empty() && !MANIFEST_TYPES.contains(&d.media_type.as_str()) => {
                format!("{}, {}", d.media_type, MANIFEST_TYPES.join(", "))
            }
            _ => MANIFEST_TYPES.join(", "),
        };
        // Bytes damaged in transit are fetched again a couple of times before the run fails.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_manifest_once(op, &target, reference, &url, &scopes, &accept, expect, unless).await {
                Err(e) if e.status.is_none() && e.detail.contains("digest") && attempt < 3 => continue,
                other => return other,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn get_manifest_once(
        &self,
        op: &str,
        target: &str,
        reference: &str,
        url: &str,
        scopes: &[String],
        accept: &str,
        expect: Option<&Descriptor>,
        unless: Option<&Digest>,
    ) -> Result<Option<(Descriptor, Bytes)>> {
        let target = target.to_string();
        let resp = self.send(op, &target, Method::GET, url, scopes, |r| if_none_match(r.header(header::ACCEPT, accept), unless)).await?;
        if unless.is_some() && resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(op, &target, resp).await);
        }
        let served = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|d| d.parse::<Digest>().ok());
        let mt = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST_SIZE) {
            return Err(rerr(op, &target, None, "manifest larger than the 4 MiB limit"));
        }
        let body = read_limited(resp, MAX_MANIFEST_SIZE).await.map_err(|e| rerr(op, &target, None, e))?;
        let digest = Digest::of(&body);
        let desc = match expect {
            Some(d) => {
                crate::digest::verify_bytes(&body, &d.digest, d.size).map_err(|e| rerr(op, &target, None, e.to_string()))?;
                d.clone()
            }
            None => {
                if let Ok(d) = reference.parse::<Digest>() {
                    if d != digest {
                        return Err(rerr(op, &target, None, format!("registry served content with digest {digest}")));
                    }
                }
                // By tag, the registry's own digest header is the only check there is.
                if let Some(d) = served.filter(|d| *d != digest) {
                    return Err(rerr(op, &target, None, format!("content does not match the registry's digest {d} (computed {digest})")));
                }
                let mt = if MANIFEST_TYPES.contains(&mt.as_str()) {
                    mt
                } else {
                    let probe = Descriptor::new("", digest.clone(), body.len() as u64);
                    manifest::parse(&probe, &body).map(|p| p.media_type).map_err(|e| rerr(op, &target, None, e.to_string()))?
                };
                Descriptor::new(&mt, digest, body.len() as u64)
            }
        };
        Ok(Some((desc, body)))
    }

    /// Pushes manifest bytes under a tag or digest with the descriptor's media type.
    pub async fn put_manifest(&self, repo: &str, reference: &str, desc: &Descriptor, body: Bytes) -> Result<PutResult> {
        let target = format!("{}/{repo}{}{reference}", self.registry, if reference.contains(':') { "@" } else { ":" });
        let url = self.url(repo, &format!("manifests/{reference}"));
        let scopes = [repo_scope(repo, true)];
        let resp = self
            .send("push manifest", &target, Method::PUT, &url, &scopes, |r| {
                r.header(header::CONTENT_TYPE, &desc.media_type).body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail("push manifest", &target, resp).await);
        }
        Ok(PutResult { subject_indexed: resp.headers().contains_key("oci-subject") })
    }

    /// Whether the repository holds a blob.
    pub async fn blob_exists(&self, repo: &str, desc: &Descriptor, push: bool) -> Result<bool> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let url = self.url(repo, &format!("blobs/{}", desc.digest));
        let scopes = [repo_scope(repo, push)];
        let resp = self.send("check blob", &target, Method::HEAD, &url, &scopes, |r| r).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail("check blob", &target, resp).await),
        }
    }

    /// Streams a blob; the caller verifies the bytes.
    pub async fn get_blob(&self, repo: &str, desc: &Descriptor) -> Result<ByteStream> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let url = self.url(repo, &format!("blobs/{}", desc.digest));
        let scopes = [repo_scope(repo, false)];
        let resp = self.send("fetch blob", &target, Method::GET, &url, &scopes, |r| r).await?;
        if !resp.status().is_success() {
            return Err(self.fail("fetch blob", &target, resp).await);
        }
        let registry = self.registry.clone();
        let bytes =
            resp.bytes_stream().map(move |r| r.map_err(|e| std::io::Error::other(format!("{} ({registry})", describe_transport(&e)))));
        Ok(Box::pin(stall::guard(bytes, self.stall)))
    }

    /// Uploads a blob: one streamed PUT, or PATCH chunks when a chunk size is set.
    pub async fn push_blob(self: &Arc<Self>, repo: &str, desc: &Descriptor, data: ByteStream) -> Result<()> {
        let (target, key, put) = self.start_upload(repo, desc).await?;
        if let Some(chunk) = self.chunk_size.filter(|c| desc.size > *c) {
            let closing = self.upload_chunks(&target, &key, put, data, chunk).await?;
            return self.finish_upload(&target, &key, closing, desc, no_bytes(), 0).await;
        }
        self.finish_upload(&target, &key, put, desc, data, desc.size).await
    }

    /// Sends a blob's bytes into an upload session without committing it, so nothing is visible until
    /// [`Client::commit_upload`]; returns the session's location.
    pub async fn stage_blob(self: &Arc<Self>, repo: &str, desc: &Descriptor, data: ByteStream) -> Result<String> {
        let (target, key, location) = self.start_upload(repo, desc).await?;
        if desc.size == 0 {
            return Ok(location);
        }
        match self.chunk_size {
            Some(chunk) => self.upload_chunks(&target, &key, location, data, chunk).await,
            // One PATCH carrying the whole stream: the size is known, so it is a single spec-conformant chunk.
            None => self.patch(&target, &key, location, 0, desc.size, data).await,
        }
    }

    /// Commits a staged upload under the blob's digest (the registry checks it).
    pub async fn commit_upload(&self, repo: &str, desc: &Descriptor, location: String) -> Result<()> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let key = repo_scope(repo, true);
        self.finish_upload(&target, &key, location, desc, no_bytes(), 0).await
    }

    /// Abandons a staged upload; best effort (registries also expire abandoned sessions).
    pub async fn cancel_upload(&self, repo: &str, location: &str) {
        let scopes = [repo_scope(repo, true)];
        let _ = self.send("cancel upload", repo, Method::DELETE, location, &scopes, |r| r).await;
        self.session_closed(location);
    }

    /// Opens an upload session: (what is uploaded, auth key, absolute session location). The request
    /// runs as a task of its own that records the session however the caller ends, so that a run
    /// stopped while the answer is on its way still knows the session, and deletes it.
    async fn start_upload(self: &Arc<Self>, repo: &str, desc: &Descriptor) -> Result<(String, String, String)> {
        struct Opening(tokio::sync::watch::Sender<usize>);
        impl Drop for Opening {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        self.opening.send_modify(|n| *n += 1);
        let opening = Opening(self.opening.clone());
        let (this, repo, desc) = (self.clone(), repo.to_string(), desc.clone());
        let task = tokio::spawn(async move {
            let _opening = opening;
            this.open_session(&repo, &desc).await
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(rerr("push blob", &self.registry, None, format!("internal: the upload task failed: {e}"))),
        }
    }

    /// Sends the request that opens an upload session and records the session.
    async fn open_session(&self, repo: &str, desc: &Descriptor) -> Result<(String, String, String)> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let op = "push blob";
        let scopes = vec![repo_scope(repo, true)];
        let start = self.url(repo, "blobs/uploads/");
        let resp = self.send(op, &target, Method::POST, &start, &scopes, |r| r.header(header::CONTENT_LENGTH, "0")).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail(op, &target, resp).await);
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| rerr(op, &target, None, "upload started without a Location header"))?;
        let location = self.absolute(&start, location)?;
        if let Ok(mut open) = self.open_uploads.lock() {
            open.insert(session_of(&location).to_string(), (repo.to_string(), location.clone()));
        }
        Ok((target, scopes.join(" "), location))
    }

    /// A `Location` the registry answered a request to `from` with, made absolute (relative ones are
    /// relative to that request's URL).
    fn absolute(&self, from: &str, location: &str) -> Result<String> {
        url::Url::parse(from).and_then(|u| u.join(location)).map(String::from).map_err(|_| {
            rerr(
                "push blob",
                &self.registry,
                None,
                format!("the registry answered with an unusable Location {:?}", crate::scrub::escape_controls(location)),
            )
        })
    }

    /// Sends the closing PUT of an upload session, with the last bytes (or none).
    async fn finish_upload(&self, target: &str, key: &str, mut put: String, desc: &Descriptor, data: ByteStream, len: u64) -> Result<()> {
        let op = "push blob";
        let session = session_of(&put).to_string();
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={}", desc.digest));
        let (body, moved) = self.watched(data, len);
        let mut rb =
            self.http.put(&put).header(header::CONTENT_TYPE, "application/octet-stream").header(header::CONTENT_LENGTH, len).body(body);
        if let Some(a) = self.authorization_for(&put, key) {
            rb = rb.header(header::AUTHORIZATION, a);
        }
        let resp = self.upload(rb, moved).await;
        self.trace(&Method::PUT, &put, resp.as_ref().ok().map(|r| r.status()), true);
        let resp = resp.map_err(|e| rerr(op, target, None, e))?;
        if !resp.status().is_success() {
            return Err(self.fail(op, target, resp).await);
        }
        self.session_closed(&session);
        Ok(())
    }

    /// Uploads a stream as PATCH chunks of `chunk` bytes, each held in memory; returns the location for
    /// the closing PUT.
    async fn upload_chunks(&self, target: &str, key: &str, mut location: String, mut data: ByteStream, chunk: u64) -> Result<String> {
        let op = "push blob chunk";
        let mut offset = 0u64;
        let mut buf: Vec<u8> = Vec::with_capacity(chunk as usize);
        loop {
            let next = data.next().await;
            let done = next.is_none();
            if let Some(c) = next {
                let c = c.map_err(|e| rerr(op, target, None, e.to_string()))?;
                buf.extend_from_slice(&c);
            }
            if buf.is_empty() || (!done && (buf.len() as u64) < chunk) {
                if done {
                    return Ok(location);
                }
                continue;
            }
            let body = std::mem::replace(&mut buf, Vec::with_capacity(chunk as usize));
            let len = body.len() as u64;
            location = self.patch(target, key, location, offset, len, in_pieces(body)).await?;
            offset += len;
            if done {
                return Ok(location);
            }
        }
    }

    /// Sends `len` bytes at `offset` of an upload session; returns the session's next location.
    async fn patch(&self, target: &str, key: &str, location: String, offset: u64, len: u64, data: ByteStream) -> Result<String> {
        let op = "push blob chunk";
        let end = offset + len - 1;
        let (body, moved) = self.watched(data, len);
        let mut rb = self
            .http
            .patch(&location)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
            .header(header::CONTENT_LENGTH, len)
            .body(body);
        if let Some(a) = self.authorization_for(&location, key) {
            rb = rb.header(header::AUTHORIZATION, a);
        }
        let resp = self.upload(rb, moved).await;
        self.trace(&Method::PATCH, &location, resp.as_ref().ok().map(|r| r.status()), true);
        let resp = resp.map_err(|e| rerr(op, target, None, e))?;
        if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
            return Err(self.fail(op, target, resp).await);
        }
        let next = match resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            Some(l) => self.absolute(&location, l)?,
            None => return Ok(location),
        };
        // Distribution only accepts a session's latest location (its state names the size so far).
        if let Ok(mut open) = self.open_uploads.lock() {
            if let Some((repo, _)) = open.remove(session_of(&location)) {
                open.insert(session_of(&next).to_string(), (repo, next.clone()));
            }
        }
        Ok(next)
    }

    /// An upload body counted for the stall watch; a body known to be empty has nothing to watch.
    fn watched(&self, data: ByteStream, len: u64) -> (reqwest::Body, Arc<stall::Moved>) {
        let moved = Arc::new(stall::Moved::default());
        if len == 0 {
            moved.finish();
            return (reqwest::Body::from(Vec::new()), moved);
        }
        (reqwest::Body::wrap_stream(stall::counted(data, moved.clone())), moved)
    }

    /// Sends an upload: its body must keep above the stall floor while it goes, and the answer must come
    /// within the request deadline once it is all sent (ten times that: committing a large blob may
    /// mean a copy inside the registry's storage).
    async fn upload(&self, rb: reqwest::RequestBuilder, moved: Arc<stall::Moved>) -> std::result::Result<reqwest::Response, String> {
        let sent = rb.send();
        tokio::pin!(sent);
        tokio::select! {
            r = &mut sent => return r.map_err(|e| describe_transport(&e)),
            why = stall::watch(moved.clone(), self.stall) => return Err(why),
            _ = moved.finished() => {}
        }
        match tokio::time::timeout(self.request_timeout * 10, sent).await {
            Ok(r) => r.map_err(|e| describe_transport(&e)),
            Err(_) => Err(format!("timed out: no answer within {} s of the upload's last byte", (self.request_timeout * 10).as_secs())),
        }
    }

    /// Asks the registry to mount a blob from another repository; false when it opened an upload instead.
    pub async fn mount_blob(&self, repo: &str, desc: &Descriptor, from: &str) -> Result<bool> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let op = "mount blob";
        let scopes = [repo_scope(repo, true), repo_scope(from, false)];
        let url = format!("{}?mount={}&from={from}", self.url(repo, "blobs/uploads/"), desc.digest);
        let resp = self.send(op, &target, Method::POST, &url, &scopes, |r| r.header(header::CONTENT_LENGTH, "0")).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry started an upload session instead; close it so it does not linger.
                if let Some(loc) = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) {
                    if let Ok(loc) = self.absolute(&url, loc) {
                        let _ = self.send(op, &target, Method::DELETE, &loc, &scopes, |r| r).await;
                    }
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// The referrers of a manifest through the referrers API; `None` when the registry has no such API.
    pub async fn referrers_api(&self, repo: &str, subject: &Digest) -> Result<Option<Vec<Descriptor>>> {
        let target = format!("{}/{repo}@{subject}", self.registry);
        let op = "list referrers of";
        let scopes = [repo_scope(repo, false)];
        let mut url = self.url(repo, &format!("referrers/{subject}"));
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let resp = self.send(op, &target, Method::GET, &url, &scopes, |r| r.header(header::ACCEPT, manifest::OCI_INDEX)).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::BAD_REQUEST {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(self.fail(op, &target, resp).await);
            }
            let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            if !ct.starts_with(manifest::OCI_INDEX) {
                return Ok(None);
            }
            let next = resp.headers().get(header::LINK).and_then(|v| v.to_str().ok()).and_then(parse_next_link);
            let body = read_limited(resp, MAX_MANIFEST_SIZE).await.map_err(|e| rerr(op, &target, None, e))?;
            all.extend(manifest::index_manifests(&body).map_err(|e| rerr(op, &target, None, format!("invalid referrers index: {e}")))?);
            if all.len() > MAX_LISTED {
                return Err(rerr(
                    op,
                    &target,
                    None,
                    format!("the registry lists more than {MAX_LISTED} referrers; refusing to gather more"),
                ));
            }
            match next {
                Some(n) => url = self.next_page(op, &target, &url, &n, &mut seen)?,
                None => break,
            }
        }
        Ok(Some(all))
    }
}

/// An upload body without bytes.
fn no_bytes() -> ByteStream {
    Box::pin(futures::stream::empty())
}

/// Bytes in memory as a stream of pieces, so the stall watch sees the registry read them.
fn in_pieces(data: Vec<u8>) -> ByteStream {
    let data = Bytes::from(data);
    let pieces: Vec<std::io::Result<Bytes>> =
        (0..data.len()).step_by(256 << 10).map(|at| Ok(data.slice(at..(at + (256 << 10)).min(data.len())))).collect();
    Box::pin(futures::stream::iter(pieces))
}

/// Why one attempt of a request got no usable answer.
enum Attempt {
    Transport(reqwest::Error),
    /// The answer was larger than [`MAX_PAGE_SIZE`].
    TooLarge,
    /// No complete answer within the request deadline.
    TimedOut,
}

/// The names that fit `valid`; each other one is skipped with a warning (escaped: it came from outside).
fn valid_names(names: Vec<String>, valid: fn(&str) -> bool, what: &str, of: &str) -> Vec<String> {
    let (good, bad): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| valid(n));
    for b in &bad {
        crate::scrub::warn(format_args!("skipping {what} {:?} of {of}: not a valid {what} name (distribution spec)", b));
    }
    good
}

/// Extracts the target of `rel="next"` from a `Link` header.
fn parse_next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let part = part.trim();
        let (url, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        Some(url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

/// Reads a whole (small) response so that a transport error mid-body surfaces as an error of the
/// request, which `send` retries; the caller gets an equivalent in-memory response. An answer larger
/// than [`MAX_PAGE_SIZE`] is refused, not read.
async fn buffered(resp: reqwest::Response) -> std::result::Result<reqwest::Response, Attempt> {
    if resp.content_length().is_some_and(|l| l > MAX_PAGE_SIZE) {
        return Err(Attempt::TooLarge);
    }
    let status = resp.status();
    let version = resp.version();
    let headers = resp.headers().clone();
    let url = resp.url().clone();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(Attempt::Transport)?);
        if buf.len() as u64 > MAX_PAGE_SIZE {
            return Err(Attempt::TooLarge);
        }
    }
    let mut r = http::Response::new(reqwest::Body::from(buf));
    *r.status_mut() = status;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    r.extensions_mut().insert(url);
    Ok(reqwest::Response::from(r))
}

/// Makes a request conditional on the manifest not being `unless` (registries use the digest as ETag).
fn if_none_match(r: reqwest::RequestBuilder, unless: Option<&Digest>) -> reqwest::RequestBuilder {
    match unless {
        Some(d) => r.header(header::IF_NONE_MATCH, format!("\"{d}\"")),
        None => r,
    }
}

/// The session an upload location names: the location without its query (which carries state).
fn session_of(location: &str) -> &str {
    location.split('?').next().unwrap_or(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link() {
        assert_eq!(parse_next_link(r#"</v2/r/tags/list?n=2&last=b>; rel="next""#).as_deref(), Some("/v2/r/tags/list?n=2&last=b"));
        assert_eq!(parse_next_link(r#"</x>; rel="prev""#), None);
    }
}
