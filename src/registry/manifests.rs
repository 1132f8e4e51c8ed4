//! Manifests: resolving a reference (HEAD), fetching one verified (GET, conditional on a known
//! digest where asked), and pushing one (PUT).

use super::auth::repo_scope;
use super::client::{Call, Client, Result};
use super::error::RegistryError;
use super::quirks::Refusal;
use super::transport::read_limited;
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MANIFEST_TYPES, MAX_MANIFEST_SIZE};
use crate::target::ErrorKind;
use bytes::Bytes;
use reqwest::{header, Method, StatusCode};

/// How many times a manifest whose bytes arrived damaged is fetched before the run fails.
const FETCH_ATTEMPTS: u32 = 3;

/// What a manifest PUT told us.
pub struct PutResult {
    /// The `OCI-Subject` header: the registry indexed the referrer itself.
    pub subject_indexed: bool,
}

/// A manifest GET: what is asked for, and what the answer must be.
#[derive(Clone, Copy)]
pub struct ManifestRequest<'a> {
    /// The repository.
    pub repo: &'a str,
    /// A tag or a digest.
    pub reference: &'a str,
    /// The descriptor the bytes must match (size and digest), when known.
    pub expect: Option<&'a Descriptor>,
    /// A digest the manifest is asked about conditionally (If-None-Match): when it is still that
    /// one, a registry that honours the header answers 304 without the bytes.
    pub unless: Option<&'a Digest>,
}

impl<'a> ManifestRequest<'a> {
    /// The manifest `reference` of `repo`, taken as the registry serves it.
    pub fn new(repo: &'a str, reference: &'a str) -> Self {
        ManifestRequest { repo, reference, expect: None, unless: None }
    }

    /// The same request, its bytes checked against `expect` when given.
    pub fn expecting(self, expect: Option<&'a Descriptor>) -> Self {
        ManifestRequest { expect, ..self }
    }

    /// The same request, answered with nothing when the manifest is still `known`.
    pub fn unless(self, known: &'a Digest) -> Self {
        ManifestRequest { unless: Some(known), ..self }
    }

    /// The `Accept` header: every manifest type, and the expected one first when it is another.
    fn accept(&self) -> String {
        match self.expect {
            Some(d)
                if !d.media_type.is_empty() && !MANIFEST_TYPES.contains(&d.media_type.as_str()) =>
            {
                format!("{}, {}", d.media_type, MANIFEST_TYPES.join(", "))
            }
            _ => MANIFEST_TYPES.join(", "),
        }
    }
}

impl Client {
    /// What a manifest reference is called in messages: `registry/repo:tag` or
    /// `registry/repo@digest`.
    fn manifest_target(&self, repo: &str, reference: &str) -> String {
        format!(
            "{}/{repo}{}{reference}",
            self.registry,
            if reference.contains(':') { "@" } else { ":" }
        )
    }

    /// Resolves a tag or digest to a descriptor with HEAD; `None` when it does not exist.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
        push: bool,
    ) -> Result<Option<Descriptor>> {
        if self.learned.refused(Refusal::Head) {
            return self.resolve_by_get(repo, reference).await;
        }
        let (target, resp) = self.head(repo, reference, push, None).await?;
        self.described(repo, reference, &target, resp).await
    }

    /// Whether a tag points at `digest`. Asked conditionally (If-None-Match): a registry that
    /// honours it answers 304 without reading the manifest from its storage.
    pub async fn tag_points_at(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
        push: bool,
    ) -> Result<bool> {
        if self.learned.refused(Refusal::Head) {
            return Ok(self.resolve_by_get(repo, tag).await?.is_some_and(|d| d.digest == *digest));
        }
        let (target, resp) = self.head(repo, tag, push, Some(digest)).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(true);
        }
        Ok(self.described(repo, tag, &target, resp).await?.is_some_and(|d| d.digest == *digest))
    }

    /// Sends a HEAD for a manifest, conditional on `unless` when given: (what was asked, the
    /// answer).
    async fn head(
        &self,
        repo: &str,
        reference: &str,
        push: bool,
        unless: Option<&Digest>,
    ) -> Result<(String, reqwest::Response)> {
        let target = format!("{}/{repo}:{reference}", self.registry);
        let url = self.url(repo, &format!("manifests/{reference}"));
        let scopes = [repo_scope(repo, push)];
        let accept = MANIFEST_TYPES.join(", ");
        let call = Call::new("resolve", &target, Method::HEAD, &url, &scopes);
        let resp =
            self.send(&call, |r| if_none_match(r.header(header::ACCEPT, &accept), unless)).await?;
        Ok((target, resp))
    }

    /// The descriptor a HEAD of a manifest answered with; None when there is no such manifest.
    async fn described(
        &self,
        repo: &str,
        reference: &str,
        target: &str,
        resp: reqwest::Response,
    ) -> Result<Option<Descriptor>> {
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if matches!(resp.status().as_u16(), 405 | 501) {
            if self.learned.refuse(Refusal::Head) {
                super::transport::debug_line(format_args!(
                    "{} refuses HEAD on manifests (HTTP {}): resolving with GET from now on",
                    self.registry,
                    resp.status().as_u16()
                ));
            }
            return self.resolve_by_get(repo, reference).await;
        }
        if !resp.status().is_success() {
            return Err(self.fail("resolve", target, resp).await);
        }
        let h = resp.headers();
        let media_type = media_type(h);
        let digest = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok());
        let size = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        match (media_type, digest, size) {
            (Some(mt), Some(d), Some(s)) if MANIFEST_TYPES.contains(&mt.as_str()) => {
                Ok(Some(Descriptor::new(&mt, d, s)))
            }
            // Some registries omit headers on HEAD: fall back to GET.
            _ => Ok(self.get_manifest(repo, reference, None).await.map(|(d, _)| Some(d))?),
        }
    }

    /// Resolves a reference with GET, for a registry that refuses HEAD; None when it does not exist.
    async fn resolve_by_get(&self, repo: &str, reference: &str) -> Result<Option<Descriptor>> {
        match self.get_manifest(repo, reference, None).await {
            Ok((d, _)) => Ok(Some(d)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches a manifest by tag or digest; verifies it against `expect` when given.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        expect: Option<&Descriptor>,
    ) -> Result<(Descriptor, Bytes)> {
        match self.fetch_manifest(ManifestRequest::new(repo, reference).expecting(expect)).await? {
            Some(found) => Ok(found),
            None => Err(RegistryError::answered(
                "fetch manifest",
                &self.manifest_target(repo, reference),
                304,
                &[],
                "the registry answered an unconditional request with 304",
            )),
        }
    }

    /// Fetches a manifest by tag unless the tag still points at `known`: then (a 304 from a
    /// registry that honours If-None-Match, saving it a storage read and the body; or, where GETs
    /// are counted as pulls, a HEAD) returns None.
    pub async fn get_manifest_unless(
        &self,
        repo: &str,
        tag: &str,
        known: &Digest,
    ) -> Result<Option<(Descriptor, Bytes)>> {
        // A registry that counts GETs as pulls is asked with a HEAD first, which it does not
        // count: an unchanged tag, the usual case of a run again, then costs no pull; a changed one
        // costs a request more.
        if self.learned.pulls_counted()
            && !self.learned.refused(Refusal::Head)
            && self.tag_points_at(repo, tag, known, false).await?
        {
            return Ok(None);
        }
        self.fetch_manifest(ManifestRequest::new(repo, tag).unless(known)).await
    }

    /// Fetches a manifest as `req` asks, verified; None when `req.unless` was sent and the registry
    /// answered that it is unchanged.
    pub async fn fetch_manifest(
        &self,
        req: ManifestRequest<'_>,
    ) -> Result<Option<(Descriptor, Bytes)>> {
        let target = self.manifest_target(req.repo, req.reference);
        let url = self.url(req.repo, &format!("manifests/{}", req.reference));
        let scopes = [repo_scope(req.repo, false)];
        let call = Call::new("fetch manifest", &target, Method::GET, &url, &scopes);
        if let Some(d) = req.expect.filter(|d| d.size > MAX_MANIFEST_SIZE) {
            let detail = format!(
                "declared size {} exceeds the {} byte manifest limit",
                d.size, MAX_MANIFEST_SIZE
            );
            return Err(call.error(ErrorKind::Other, detail));
        }
        let accept = req.accept();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_manifest_once(&req, &call, &accept).await {
                // Bytes found damaged here (the registry answered, then what came failed a check)
                // may come whole next time; a registry refusing with DIGEST_INVALID would answer
                // the same again.
                Err(e)
                    if e.kind() == ErrorKind::Integrity
                        && e.status.is_none()
                        && attempt < FETCH_ATTEMPTS =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    /// One GET of a manifest, its answer checked (see [`checked`]).
    async fn fetch_manifest_once(
        &self,
        req: &ManifestRequest<'_>,
        call: &Call<'_>,
        accept: &str,
    ) -> Result<Option<(Descriptor, Bytes)>> {
        let resp = self
            .send(call, |r| if_none_match(r.header(header::ACCEPT, accept), req.unless))
            .await?;
        if req.unless.is_some() && resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(call.op, call.target, resp).await);
        }
        let served = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok());
        let mt = media_type(resp.headers()).unwrap_or_default();
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST_SIZE) {
            return Err(call.error(ErrorKind::Other, "manifest larger than the 4 MiB limit"));
        }
        let body = read_limited(resp, MAX_MANIFEST_SIZE)
            .await
            .map_err(|e| call.error(ErrorKind::Other, e))?;
        let desc = checked(req, call, &body, served, mt)?;
        Ok(Some((desc, body)))
    }

    /// Pushes manifest bytes under a tag or digest with the descriptor's media type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        desc: &Descriptor,
        body: Bytes,
    ) -> Result<PutResult> {
        let target = self.manifest_target(repo, reference);
        let url = self.url(repo, &format!("manifests/{reference}"));
        let scopes = [repo_scope(repo, true)];
        let op = "push manifest";
        let call = Call::new(op, &target, Method::PUT, &url, &scopes);
        let resp = self
            .send(&call, |r| r.header(header::CONTENT_TYPE, &desc.media_type).body(body.clone()))
            .await?;
        if !resp.status().is_success() {
            let e = self.fail(op, &target, resp).await;
            return Err(self.refused_manifest(repo, desc, e));
        }
        Ok(PutResult { subject_indexed: resp.headers().contains_key("oci-subject") })
    }

    /// A manifest the registry refused, said with what it is: its digest and media type (and
    /// artifact type), since a registry that accepts only the types it knows (Quay, before its
    /// artifact support is enabled) answers `MANIFEST_INVALID` for a sound manifest.
    fn refused_manifest(&self, repo: &str, desc: &Descriptor, e: RegistryError) -> RegistryError {
        let e = self.repository_missing(repo, e);
        let invalid = e.codes.iter().any(|c| {
            c.eq_ignore_ascii_case("MANIFEST_INVALID") || c.eq_ignore_ascii_case("UNSUPPORTED")
        });
        if !invalid {
            return e;
        }
        let what = match &desc.artifact_type {
            Some(t) => format!("{} (artifact type {t})", desc.media_type),
            None => desc.media_type.clone(),
        };
        let detail = format!(
            "{} (the registry refused manifest {} of type {}: it may accept only the media types it knows; check that it supports this type, or leave such artifacts out with --exclude-referrers or a rules file)",
            e.detail,
            desc.digest,
            crate::scrub::escape_controls(&what)
        );
        RegistryError::answered(&e.op, &e.target, e.status.unwrap_or(400), &e.codes, detail)
    }
}

/// The descriptor of fetched manifest bytes, once they pass the checks there are: the expected
/// descriptor's size and digest; else the digest the reference names; else (by tag) the registry's
/// own digest header. The media type is the one served when it is a manifest type, else read from
/// the bytes.
fn checked(
    req: &ManifestRequest<'_>,
    call: &Call<'_>,
    body: &[u8],
    served: Option<Digest>,
    served_type: String,
) -> Result<Descriptor> {
    if let Some(d) = req.expect {
        crate::digest::verify_bytes(body, &d.digest, d.size)
            .map_err(|e| call.error(ErrorKind::Integrity, e.to_string()))?;
        return Ok(d.clone());
    }
    let digest = Digest::of(body);
    if let Ok(d) = req.reference.parse::<Digest>() {
        if d != digest {
            return Err(call.error(
                ErrorKind::Integrity,
                format!("registry served content with digest {digest}"),
            ));
        }
    }
    // By tag, the registry's own digest header is the only check there is.
    if let Some(d) = served.filter(|d| *d != digest) {
        return Err(call.error(
            ErrorKind::Integrity,
            format!("content does not match the registry's digest {d} (computed {digest})"),
        ));
    }
    let mt = if MANIFEST_TYPES.contains(&served_type.as_str()) {
        served_type
    } else {
        let probe = Descriptor::new("", digest.clone(), body.len() as u64);
        manifest::parse(&probe, body)
            .map(|p| p.media_type)
            .map_err(|e| call.error(ErrorKind::Other, e.to_string()))?
    };
    Ok(Descriptor::new(&mt, digest, body.len() as u64))
}

/// The media type of an answer (`Content-Type` without its parameters).
fn media_type(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
}

/// Makes a request conditional on the manifest not being `unless` (registries use the digest as
/// ETag).
fn if_none_match(r: reqwest::RequestBuilder, unless: Option<&Digest>) -> reqwest::RequestBuilder {
    match unless {
        Some(d) => r.header(header::IF_NONE_MATCH, format!("\"{d}\"")),
        None => r,
    }
}
