//! Registry-behaviour profiles: the registries people use, each laid as a named [`Profile`] over a
//! real Distribution 2.8 (or, for the referrers API Distribution lacks, the in-process fake) by a
//! [`Relay`] whose rules are [`Quirk`]s, with a token server where the registry wants tokens and a
//! second origin where it sends downloads or uploads elsewhere. Each profile cites what it follows:
//!
//! - `ecr`: no repository is created on push (`NAME_UNKNOWN`,
//!   <https://docs.aws.amazon.com/AmazonECR/latest/userguide/common-errors-docker.html>); a
//!   cross-repository mount answered with an upload session (202,
//!   <https://github.com/aws/containers-roadmap/issues/1589>); layers downloaded from pre-signed S3
//!   URLs (<https://docs.aws.amazon.com/sdkfornet/v3/apidocs/items/ECR/TGetDownloadUrlForLayerResponse.html>),
//!   here a 307 to a URL on another origin that works once.
//! - `gar`: blob downloads redirected to signed storage URLs
//!   (<https://github.com/ahmetb/serverless-registry-proxy/issues/8>: a redirect to a signed
//!   `artifacts-downloads` URL that needs no `Authorization`); upload sessions on another origin and
//!   tag lists paged by `n`/`last` without `Link`, which the distribution spec allows (the `Link` is a
//!   MAY, <https://github.com/opencontainers/distribution-spec/pull/470>) but no Google document
//!   describes: these two are the spec's latitude, worn by this profile.
//! - `dockerhub`: anonymous pull tokens (<https://docs.docker.com/docker-hub/usage/pulls/>, the
//!   `auth.docker.io/token?...scope=repository:...:pull` example), a pull quota counted on manifest
//!   GETs, not HEADs, reported in `RateLimit-Limit`/`RateLimit-Remaining` and answered with 429 once
//!   spent (same page); blobs redirected to its CDN (a 307 the distribution spec allows for blob
//!   GETs, <https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs>; no
//!   Docker document of the CDN was found); no catalog: the token server grants nothing for
//!   `registry:catalog:*`, so the catalog is a 401 (Docker documents no catalog either way).
//! - `ghcr`: no `_catalog` (<https://github.com/microsoft/vscode-docker/issues/1525>, GitHub staff:
//!   "we don't support the `_catalog` endpoint"), tokens per repository scope, relative upload
//!   `Location`s (allowed by the spec; GitHub documents neither way).
//! - `acr`: identity (refresh) tokens exchanged at `POST /oauth2/token` with
//!   `grant_type=refresh_token` (<https://azure.github.io/acr/AAD-OAuth.html>); the token server
//!   answers POST only (no GET with Basic), at its own path (`/token`): the grant is what counts.
//! - `harbor`: the referrers API with its answers paged by `Link` and the `artifactType` filter
//!   answered with `OCI-Filters-Applied` (<https://github.com/goharbor/harbor/issues/18413>,
//!   <https://github.com/goharbor/harbor/pull/18430>), over the in-process fake.
//! - `quay`: tag lists in pages of a fixed size linked by an opaque `next_page` token, `last`
//!   ignored (<https://github.com/regclient/regclient/issues/272>,
//!   <https://github.com/deitch/docker_registry2/issues/56>), tags not in lexical order
//!   (<https://github.com/pulp/pulpcore/issues/1823>), the same tag again at a page boundary
//!   (what a list that changes between pages gives); no referrers API (a bare 404: Quay before
//!   <https://github.com/quay/quay/pull/2597>).
//!
//! Behaviours that belong to no one registry (a proxy's body limit, a minimum chunk, PATCH refused)
//! are [`Quirk`]s a test adds to a profile with [`Profiled::always`].

use super::client::sha256_digest;
use super::fake_referrers::FakeRegistry;
use super::fault_proxy::Fault;
use super::registry::{Registry, RegistryOptions};
use super::relay::{Behaviour, Canned, Forwarding, HeaderEdit, Headers, Match, Plan, Relay, Seen};
use super::tls::Pki;
use super::token_server::{TokenConfig, TokenServer};
use super::Client;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The account the token-guarded profiles know, and its password.
pub const USER: &str = "alice";
/// [`USER`]'s password.
pub const PASSWORD: &str = "profile-Pa55-4e1d";
/// [`USER`]'s identity (refresh) token.
pub const IDENTITY_TOKEN: &str = "acr-refresh-7c0ffee-91";

/// The registries the profiles stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Ecr,
    Gar,
    DockerHub,
    Ghcr,
    Acr,
    Harbor,
    Quay,
}

/// One-use signatures of the storage origin a registry redirects downloads to.
#[derive(Debug, Default)]
pub struct Signer {
    next: AtomicU64,
    /// Signature -> the path it was issued for, until it is used.
    live: Mutex<HashMap<String, String>>,
    /// Requests refused: a signature used again, or none.
    refused: AtomicUsize,
}

impl Signer {
    /// A fresh signature for `path`.
    fn sign(&self, path: &str) -> String {
        let sig = format!("s{:08}", self.next.fetch_add(1, Ordering::SeqCst));
        self.live.lock().unwrap().insert(sig.clone(), path.to_string());
        sig
    }

    /// The path `sig` was issued for, once.
    fn redeem(&self, sig: &str) -> Option<String> {
        self.live.lock().unwrap().remove(sig)
    }

    /// How many signed URLs were handed out.
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// How many storage requests were refused (a signature used twice, or none).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// A pull quota counted on manifest GETs (Docker Hub's "pulls"); HEADs are not counted.
#[derive(Debug)]
pub struct Quota {
    limit: AtomicU64,
    used: AtomicU64,
    /// Manifest GETs seen in all.
    gets: AtomicU64,
    /// 429s answered.
    refusals: AtomicU64,
}

impl Quota {
    /// Manifest GETs counted so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    /// 429s answered so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::SeqCst)
    }

    /// Allows `limit` manifest GETs per window (a 429 starts the next window).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::SeqCst);
        self.used.store(0, Ordering::SeqCst);
    }

    /// The quota headers of an answer, with `remaining`.
    fn headers(&self, remaining: u64) -> Headers {
        let limit = self.limit.load(Ordering::SeqCst);
        vec![
            ("RateLimit-Limit".into(), format!("{limit};w=21600")),
            ("RateLimit-Remaining".into(), format!("{remaining};w=21600")),
        ]
    }
}

/// How a profile pages tag lists it answers itself (from the full list of the registry behind).
#[derive(Clone, Copy, Debug)]
pub enum Paging {
    /// The spec's `n` and `last`, honoured exactly, with no `Link`.
    NoLink,
    /// Quay: pages of this many in its own order, linked by an opaque `next_page` token, `last`
    /// ignored, each page after the first starting with the previous page's last tag again.
    Opaque(usize),
}

/// What a profile's relay does with the requests a rule matches.
#[derive(Clone)]
pub enum Quirk {
    /// A fault or a canned answer (see `fault_proxy.rs`).
    Fault(Fault),
    /// Forward, adding these headers to the answer.
    SetHeaders(Headers),
    /// Forward, editing the answer's headers.
    EditHeaders(&'static str, HeaderEdit),
    /// Answer a blob GET with a 307 to a one-use signed URL on `storage` (`host:port`).
    RedirectBlobs { storage: String, signer: Arc<Signer> },
    /// (The storage origin.) Forward a request with a fresh signature, once; 403 otherwise.
    SignedOnce(Arc<Signer>),
    /// Answer tag lists from the full list of `upstream`, paged as said.
    TagPages { upstream: String, paging: Paging },
    /// Count manifest GETs against the quota: headers on every manifest answer, 429 once spent.
    PullQuota(Arc<Quota>),
    /// Uploads into a repository not created beforehand fail with `NAME_UNKNOWN`; mounts into one
    /// that exists get an upload session instead (ECR).
    EcrUploads(Arc<Mutex<BTreeSet<String>>>),
    /// A request body above this many bytes is refused with 413 (a proxy's body limit).
    BodyLimit(u64),
}

impl std::fmt::Debug for Quirk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quirk::Fault(x) => write!(f, "Fault({x:?})"),
            Quirk::SetHeaders(h) => write!(f, "SetHeaders({h:?})"),
            Quirk::EditHeaders(what, _) => write!(f, "EditHeaders({what})"),
            Quirk::RedirectBlobs { storage, .. } => write!(f, "RedirectBlobs({storage})"),
            Quirk::SignedOnce(_) => write!(f, "SignedOnce"),
            Quirk::TagPages { paging, .. } => write!(f, "TagPages({paging:?})"),
            Quirk::PullQuota(_) => write!(f, "PullQuota"),
            Quirk::EcrUploads(_) => write!(f, "EcrUploads"),
            Quirk::BodyLimit(n) => write!(f, "BodyLimit({n})"),
        }
    }
}

/// A Distribution-style error answer.
fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(status, format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#))
}

/// The repository a `/v2/<name>/<what>/...` path names.
fn repository(path: &str, what: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let rest = path.strip_prefix("/v2/").unwrap_or(path);
    rest.find(&format!("/{what}/")).map(|i| rest[..i].to_string()).unwrap_or_default()
}

/// The value of query parameter `name` in `path`.
fn query_param(path: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(&format!("http://x{path}")).ok()?;
    let found = url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    found
}

impl Behaviour for Quirk {
    fn plan(&self, request: &Seen) -> Plan {
        match self {
            Quirk::Fault(fault) => fault.plan(request),
            Quirk::SetHeaders(h) => {
                Plan::Forward(Forwarding { set_headers: h.clone(), ..Forwarding::default() })
            }
            Quirk::EditHeaders(_, edit) => Plan::Forward(Forwarding {
                edit_headers: Some(edit.clone()),
                ..Forwarding::default()
            }),
            Quirk::RedirectBlobs { storage, signer } => {
                let path = request.path.split('?').next().unwrap_or(&request.path);
                let sig = signer.sign(path);
                let to = format!("http://{storage}{path}?X-Amz-Expires=60&X-Amz-Signature={sig}");
                Plan::Respond(Canned::bytes(307, "text/plain", b"").header("Location", &to))
            }
            Quirk::SignedOnce(signer) => {
                let issued =
                    query_param(&request.path, "X-Amz-Signature").and_then(|s| signer.redeem(&s));
                match issued {
                    Some(path) => {
                        Plan::Forward(Forwarding { path: Some(path), ..Forwarding::default() })
                    }
                    None => {
                        signer.refused.fetch_add(1, Ordering::SeqCst);
                        Plan::Respond(Canned::bytes(
                            403,
                            "application/xml",
                            b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                        ))
                    }
                }
            }
            Quirk::TagPages { upstream, paging } => tag_page(upstream, *paging, request),
            Quirk::PullQuota(quota) => {
                let limit = quota.limit.load(Ordering::SeqCst);
                if request.method != "GET" {
                    let left = limit.saturating_sub(quota.used.load(Ordering::SeqCst));
                    return Plan::Forward(Forwarding {
                        set_headers: quota.headers(left),
                        ..Forwarding::default()
                    });
                }
                quota.gets.fetch_add(1, Ordering::SeqCst);
                let used = quota.used.fetch_add(1, Ordering::SeqCst) + 1;
                if used > limit {
                    // A new window starts once this 429 has been waited out.
                    quota.used.store(0, Ordering::SeqCst);
                    quota.refusals.fetch_add(1, Ordering::SeqCst);
                    let mut answer =
                        error(429, "TOOMANYREQUESTS", "You have reached your pull rate limit.")
                            .header("Retry-After", "1");
                    for (n, v) in quota.headers(0) {
                        answer = answer.header(&n, &v);
                    }
                    return Plan::Respond(answer);
                }
                Plan::Forward(Forwarding {
                    set_headers: quota.headers(limit - used),
                    ..Forwarding::default()
                })
            }
            Quirk::EcrUploads(created) => {
                let repo = repository(&request.path, "blobs");
                if !created.lock().unwrap().contains(&repo) {
                    let message = format!(
                        "The repository with name '{repo}' does not exist in the registry with id '123456789012'"
                    );
                    return Plan::Respond(error(404, "NAME_UNKNOWN", &message));
                }
                if request.path.contains("mount=") {
                    let session = format!("/v2/{repo}/blobs/uploads/refused-mount");
                    return Plan::Respond(Canned::json(202, "").header("Location", &session));
                }
                Plan::Forward(Forwarding::default())
            }
            Quirk::BodyLimit(limit) => {
                let len: u64 =
                    request.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                if len > *limit {
                    return Plan::Respond(Canned::bytes(
                        413,
                        "text/html",
                        b"<html><head><title>413 Request Entity Too Large</title></head></html>",
                    ));
                }
                Plan::Forward(Forwarding::default())
            }
        }
    }
}

/// A tag list page made from `upstream`'s full list; a failure there is forwarded as it is.
fn tag_page(upstream: &str, paging: Paging, request: &Seen) -> Plan {
    let repo = repository(&request.path, "tags");
    let http = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let mut asked = http.get(format!("http://{upstream}/v2/{repo}/tags/list"));
    if let Some(auth) = request.header("authorization") {
        asked = asked.header("Authorization", auth);
    }
    let Ok(resp) = asked.send() else { return Plan::Forward(Forwarding::default()) };
    if !resp.status().is_success() {
        return Plan::Forward(Forwarding::default());
    }
    let body: serde_json::Value = resp.json().unwrap_or_default();
    let mut all: Vec<String> = body["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let (page, link) = match paging {
        Paging::NoLink => {
            // In lexical order, as the spec asks of `last` paging (Distribution lists its storage's
            // order when asked for every tag).
            all.sort();
            let last = query_param(&request.path, "last");
            let n =
                query_param(&request.path, "n").and_then(|n| n.parse().ok()).unwrap_or(all.len());
            let page: Vec<String> =
                all.into_iter().filter(|t| last.as_ref().is_none_or(|l| t > l)).take(n).collect();
            (page, None)
        }
        Paging::Opaque(per) => {
            // Its own order: not lexical, the same on every page.
            all.sort_by_key(|t| sha256_digest(t.as_bytes()));
            let at: usize = query_param(&request.path, "next_page")
                .and_then(|t| t.strip_prefix("gAAAA").and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            let mut page: Vec<String> = all.iter().skip(at).take(per).cloned().collect();
            if at > 0 {
                page.insert(0, all[at - 1].clone());
            }
            let link = (at + per < all.len()).then(|| {
                format!("</v2/{repo}/tags/list?next_page=gAAAA{}&n={per}>; rel=\"next\"", at + per)
            });
            (page, link)
        }
    };
    let mut answer = Canned::json(200, serde_json::json!({"name": repo, "tags": page}).to_string());
    if let Some(link) = link {
        answer = answer.header("Link", &link);
    }
    Plan::Respond(answer)
}

/// One PKI for the token-guarded profiles (keys cost a little to make).
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(&["profile.test"]))
}

/// What a profile runs on.
enum Backing {
    /// A plain Distribution, and for token-guarded profiles a guarded one on the same storage
    /// with its token server.
    Distribution { plain: Registry, guarded: Option<Box<(Registry, TokenServer)>> },
    /// The in-process fake with the referrers API.
    Fake(FakeRegistry),
}

/// A running profile: the relay the tool talks to, over its backing registry.
pub struct Profiled {
    /// Which registry it stands for.
    pub profile: Profile,
    front: Relay<Quirk>,
    /// The other origin: signed downloads (`ecr`, `gar`, `dockerhub`) or upload sessions (`gar`).
    storage: Option<Relay<Quirk>>,
    uploads: Option<Relay<Quirk>>,
    signer: Arc<Signer>,
    quota: Arc<Quota>,
    created: Arc<Mutex<BTreeSet<String>>>,
    backing: Backing,
}

impl Profiled {
    /// Starts `profile` on fresh storage.
    pub fn start(profile: Profile) -> Profiled {
        let signer = Arc::new(Signer::default());
        let quota = Arc::new(Quota {
            limit: AtomicU64::new(u64::MAX / 2),
            used: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        });
        let created = Arc::new(Mutex::new(BTreeSet::new()));
        let backing = match profile {
            Profile::Harbor => Backing::Fake(FakeRegistry::start()),
            Profile::DockerHub | Profile::Ghcr | Profile::Acr => {
                let plain = Registry::start();
                let config = match profile {
                    // Anonymous pulls of everything; pushes with the account.
                    Profile::DockerHub => TokenConfig::default()
                        .user(USER, PASSWORD)
                        .grant("", "team/", "pull")
                        .grant(USER, "", "pull,push"),
                    // Per-repository grants: the account may push only where it is granted.
                    Profile::Ghcr => TokenConfig::default()
                        .user(USER, PASSWORD)
                        .grant(USER, "team/", "pull,push")
                        .grant(USER, "copy/", "pull,push"),
                    // Only identity tokens (no password), exchanged by POST.
                    _ => TokenConfig { allow_get: false, ..TokenConfig::default() }
                        .refresh_token(IDENTITY_TOKEN, USER)
                        .grant(USER, "", "pull,push"),
                };
                let tokens = TokenServer::start(pki(), config);
                let guarded = Registry::start_with(&RegistryOptions {
                    auth: Some(tokens.registry_auth_yaml()),
                    storage: Some(plain.storage()),
                    ..RegistryOptions::default()
                });
                Backing::Distribution { plain, guarded: Some(Box::new((guarded, tokens))) }
            }
            _ => Backing::Distribution { plain: Registry::start(), guarded: None },
        };
        let (front_upstream, plain_host) = match &backing {
            Backing::Distribution { plain, guarded: Some(g) } => (g.0.host(), plain.host()),
            Backing::Distribution { plain, guarded: None } => (plain.host(), plain.host()),
            Backing::Fake(f) => (f.host(), f.host()),
        };
        let front: Relay<Quirk> = Relay::start(&front_upstream);
        let mut p = Profiled {
            profile,
            front,
            storage: None,
            uploads: None,
            signer,
            quota,
            created,
            backing,
        };
        p.lay(&plain_host);
        p
    }

    /// Sets up the profile's rules (`plain` serves the storage without credentials).
    fn lay(&mut self, plain: &str) {
        let blob_get = || Match::method("GET").path("/blobs/sha256:");
        if matches!(self.profile, Profile::Ecr | Profile::Gar | Profile::DockerHub) {
            let storage: Relay<Quirk> = Relay::start(plain);
            storage.always(Match::any(), Quirk::SignedOnce(self.signer.clone()));
            // "localhost" and another port: another origin, as a storage bucket is.
            let at = format!("localhost:{}", storage.port());
            self.front.always(
                blob_get(),
                Quirk::RedirectBlobs { storage: at, signer: self.signer.clone() },
            );
            self.storage = Some(storage);
        }
        match self.profile {
            Profile::Ecr => {
                self.front.always(
                    Match::method("POST").path("/blobs/uploads/"),
                    Quirk::EcrUploads(self.created.clone()),
                );
            }
            Profile::Gar => {
                let uploads: Relay<Quirk> = Relay::start(plain);
                let elsewhere = format!("localhost:{}", uploads.port());
                let front = self.front.host();
                let edit: HeaderEdit = Arc::new(move |headers: &mut Headers, _: &Seen| {
                    for (n, v) in headers.iter_mut() {
                        if n.eq_ignore_ascii_case("location") {
                            *v = v.replace(&front, &elsewhere);
                        }
                    }
                });
                self.front.always(
                    Match::method("POST").path("/blobs/uploads/"),
                    Quirk::EditHeaders("upload sessions elsewhere", edit),
                );
                self.front.always(
                    Match::method("GET").path("/tags/list"),
                    Quirk::TagPages { upstream: plain.to_string(), paging: Paging::NoLink },
                );
                self.uploads = Some(uploads);
            }
            Profile::DockerHub => {
                self.front
                    .always(Match::any().path("/manifests/"), Quirk::PullQuota(self.quota.clone()));
            }
            Profile::Ghcr => {
                self.front.always(
                    Match::method("GET").path("/v2/_catalog"),
                    Quirk::Fault(Fault::Answer(error(404, "NOT_FOUND", "404 page not found"))),
                );
                let relative: HeaderEdit = Arc::new(|headers: &mut Headers, _: &Seen| {
                    for (n, v) in headers.iter_mut() {
                        if n.eq_ignore_ascii_case("location") {
                            if let Some(i) = v.find("/v2/") {
                                *v = v[i..].to_string();
                            }
                        }
                    }
                });
                self.front.always(
                    Match::any().path("/blobs/uploads/"),
                    Quirk::EditHeaders("relative upload locations", relative),
                );
            }
            Profile::Harbor => {
                if let Backing::Fake(fake) = &self.backing {
                    fake.page_referrers(2);
                }
            }
            Profile::Quay => {
                self.front.always(
                    Match::method("GET").path("/tags/list"),
                    Quirk::TagPages { upstream: plain.to_string(), paging: Paging::Opaque(2) },
                );
            }
            Profile::Acr => {}
        }
    }

    /// `127.0.0.1:PORT`: the registry as the tool sees it.
    pub fn host(&self) -> String {
        self.front.host()
    }

    /// A client on the storage behind the profile, without its quirks or credentials, to seed and
    /// to check.
    pub fn client(&self) -> Client {
        match &self.backing {
            Backing::Distribution { plain, .. } => Client::new(&plain.host()),
            Backing::Fake(f) => Client::new(&f.host()),
        }
    }

    /// The relay the tool talks to (its requests, and more rules).
    pub fn relay(&self) -> &Relay<Quirk> {
        &self.front
    }

    /// The storage origin blob downloads are redirected to, where the profile has one.
    pub fn storage(&self) -> Option<&Relay<Quirk>> {
        self.storage.as_ref()
    }

    /// The origin upload sessions are sent to, where the profile has one.
    pub fn uploads(&self) -> Option<&Relay<Quirk>> {
        self.uploads.as_ref()
    }

    /// The signatures of the storage origin.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The pull quota (`dockerhub`).
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The token server, for the token-guarded profiles.
    pub fn tokens(&self) -> Option<&TokenServer> {
        match &self.backing {
            Backing::Distribution { guarded: Some(g), .. } => Some(&g.1),
            _ => None,
        }
    }

    /// The in-process fake (`harbor`).
    pub fn fake(&self) -> Option<&FakeRegistry> {
        match &self.backing {
            Backing::Fake(f) => Some(f),
            _ => None,
        }
    }

    /// Creates a repository (`ecr`: pushes elsewhere fail).
    pub fn create_repository(&self, name: &str) {
        self.created.lock().unwrap().insert(name.to_string());
    }

    /// Adds `quirk` for every request matching `when` that no rule of the profile's own matches
    /// first (rules apply in the order they were added).
    pub fn always(&self, when: Match, quirk: Quirk) {
        self.front.always(when, quirk);
    }

    /// The credentials arguments of `oras` for this profile: pulls need none where the registry
    /// lets anyone pull, pushes (and every ACR request) need the account's.
    pub fn credentials(&self, push: bool) -> Vec<String> {
        let account =
            || vec!["-u".to_string(), USER.to_string(), "-p".to_string(), PASSWORD.to_string()];
        match self.profile {
            Profile::Acr => vec!["--identity-token".into(), IDENTITY_TOKEN.into()],
            Profile::Ghcr => account(),
            Profile::DockerHub if push => account(),
            _ => Vec::new(),
        }
    }

    /// Waits until every request so far, on every origin of the profile, is recorded.
    pub fn settle(&self) {
        self.front.settle();
        for other in [&self.storage, &self.uploads].into_iter().flatten() {
            other.settle();
        }
    }
}
