//! A tiny blocking registry client used by the tests to push fixtures and read results.

use reqwest::blocking::Client as Http;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

/// The referrers tag schema tag of a subject: `sha256-<hex>`.
pub fn tag_schema_tag(subject: &str) -> String {
    format!("sha256-{}", digest_hex(subject))
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Fetched {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).expect("manifest is JSON")
    }
}

/// Blocking client for one registry host (plain HTTP).
#[derive(Clone)]
pub struct Client {
    http: Http,
    base: String,
}

impl Client {
    pub fn new(host: &str) -> Client {
        let http = Http::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("reqwest client");
        Client { http, base: format!("http://{host}") }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn resolve(&self, location: &str) -> url::Url {
        let base = url::Url::parse(&self.base).unwrap();
        base.join(location).expect("valid Location")
    }

    /// Upload a blob (POST + monolithic PUT) and return its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let resp = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .header("Content-Length", "0")
            .send()
            .expect("POST upload");
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "POST /v2/{repo}/blobs/uploads/: {:?}",
            resp.text()
        );
        let location =
            resp.headers().get("Location").expect("Location header").to_str().unwrap().to_string();
        let mut url = self.resolve(&location);
        url.query_pairs_mut().append_pair("digest", &digest);
        let resp = self
            .http
            .put(url)
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .expect("PUT upload");
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "PUT blob {digest} into {repo}: {:?}",
            resp.text()
        );
        digest
    }

    pub fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let resp = self
            .http
            .head(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .expect("HEAD blob");
        resp.status().is_success()
    }

    pub fn get_blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let resp = self
            .http
            .get(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .expect("GET blob");
        if resp.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert!(resp.status().is_success(), "GET blob {repo}@{digest}: {}", resp.status());
        Some(resp.bytes().unwrap().to_vec())
    }

    /// PUT a manifest under `reference` (tag or digest); returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let digest = sha256_digest(bytes);
        let resp = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .expect("PUT manifest");
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "PUT manifest {repo}:{reference}: {:?}",
            resp.text()
        );
        if let Some(d) = resp.headers().get("Docker-Content-Digest") {
            assert_eq!(d.to_str().unwrap(), digest, "registry digest of {repo}:{reference}");
        }
        digest
    }

    /// GET a manifest by tag or digest; None when the registry answers 404.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Option<Fetched> {
        let resp = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Accept", MANIFEST_ACCEPT)
            .send()
            .expect("GET manifest");
        if resp.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert!(resp.status().is_success(), "GET manifest {repo}:{reference}: {}", resp.status());
        let media_type = resp
            .headers()
            .get("Content-Type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.bytes().unwrap().to_vec();
        let digest = sha256_digest(&bytes);
        Some(Fetched { media_type, bytes, digest })
    }

    pub fn manifest_exists(&self, repo: &str, reference: &str) -> bool {
        let resp = self
            .http
            .head(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Accept", MANIFEST_ACCEPT)
            .send()
            .expect("HEAD manifest");
        resp.status().is_success()
    }

    /// Every tag of `repo`, following `Link` pagination; empty when the repository is unknown.
    pub fn list_tags(&self, repo: &str) -> Vec<String> {
        self.list_paginated(&format!("/v2/{repo}/tags/list"), "tags")
    }

    /// Same as [`list_tags`] but asking for pages of `n`.
    pub fn list_tags_paged(&self, repo: &str, n: usize) -> Vec<String> {
        self.list_paginated(&format!("/v2/{repo}/tags/list?n={n}"), "tags")
    }

    /// Every repository of the registry (`/v2/_catalog`, paginated).
    pub fn catalog(&self) -> Vec<String> {
        self.list_paginated("/v2/_catalog?n=1000", "repositories")
    }

    fn list_paginated(&self, first: &str, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(self.resolve(first));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            assert!(pages < 1000, "runaway pagination");
            let resp = self.http.get(url.clone()).send().expect("GET list");
            if resp.status() == StatusCode::NOT_FOUND {
                return out;
            }
            assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
            if let Some(link) = resp.headers().get("Link") {
                let link = link.to_str().unwrap();
                if let (Some(a), Some(b)) = (link.find('<'), link.find('>')) {
                    next = Some(self.resolve(&link[a + 1..b]));
                }
            }
            let body: serde_json::Value = resp.json().expect("list JSON");
            if let Some(items) = body[field].as_array() {
                out.extend(items.iter().map(|t| t.as_str().unwrap().to_string()));
            }
        }
        out
    }

    /// User tags only (not the `sha256-<hex>` referrers tag schema).
    pub fn user_tags(&self, repo: &str) -> Vec<String> {
        self.list_tags(repo).into_iter().filter(|t| !is_tag_schema_tag(t)).collect()
    }

    /// `GET /v2/<repo>/referrers/<digest>`: Some(index JSON) when the registry answers 200.
    pub fn referrers_api(
        &self,
        repo: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Option<serde_json::Value> {
        let mut url = self.resolve(&format!("/v2/{repo}/referrers/{digest}"));
        if let Some(at) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", at);
        }
        let resp = self.http.get(url).send().expect("GET referrers");
        if !resp.status().is_success() {
            return None;
        }
        Some(resp.json().expect("referrers JSON"))
    }

    /// Digests listed by the referrers tag schema index of `subject` (empty when absent).
    pub fn tag_schema_referrers(&self, repo: &str, subject: &str) -> Vec<String> {
        match self.get_manifest(repo, &tag_schema_tag(subject)) {
            None => Vec::new(),
            Some(index) => index.json()["manifests"]
                .as_array()
                .map(|m| m.iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
        }
    }
}

/// `sha256-<64 hex>`
pub fn is_tag_schema_tag(tag: &str) -> bool {
    tag.len() == 71
        && tag.starts_with("sha256-")
        && tag[7..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}
