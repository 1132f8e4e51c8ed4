//! Registry repositories as a `Source` and a `Sink`, including referrers (API or tag schema).

use super::client::Client;
use super::credentials::CredentialStore;
use super::error::RegistryError;
use super::listing::ReferrersAnswer;
use super::transport::{build_client, TransportOptions};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor};
use crate::reference::is_schema_tag;
use crate::target::{
    failure, ByteStream, ErrorKind, Failure, Hints, Mounting, ReferrerListing, Repo, Resolved,
    Result, Sink, Source, Staging, Traits,
};
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// How referrers are found and recorded (`--distribution-spec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferrersMode {
    /// Use the referrers API where the registry has it, else the tag schema.
    Auto,
    /// Only the referrers API.
    Api,
    /// Only the `sha256-<hex>` tag schema.
    Tag,
}

/// A repository's tag list, fetched at most once (`None` when listing was refused).
type Listing = Arc<tokio::sync::OnceCell<Option<HashSet<String>>>>;

/// A registry's client, made once (its credentials may take a credential helper's run to find).
type ClientCell = Arc<tokio::sync::OnceCell<Arc<Client>>>;

/// Every registry a run talks to, sharing one connection pool.
pub struct Registries {
    http: reqwest::Client,
    opts: TransportOptions,
    creds: CredentialStore,
    /// Held only to find or add a registry's cell, never across an await: the client is made in the
    /// cell.
    clients: Mutex<HashMap<String, ClientCell>>,
    mode: ReferrersMode,
    api_support: Mutex<HashMap<String, bool>>,
    /// Held while a registry is first asked whether it has the referrers API, so that concurrent
    /// first questions wait for that answer instead of each probing (a registry without it answered
    /// every one 404).
    probing: tokio::sync::Mutex<()>,
    pending: Mutex<BTreeMap<(Repo, Digest), Vec<Descriptor>>>,
    /// The source's order of each subject's referrers, in which new ones join its tag-schema index.
    referrer_order: Mutex<HashMap<(Repo, Digest), Vec<Digest>>>,
    read_only: bool,
    /// Every tag of a repository (schema tags included), listed once, so absent `sha256-` tags cost
    /// no request.
    listed: Mutex<HashMap<Repo, Listing>>,
}

impl Registries {
    /// Sets up the transport; errors are about the options (bad CA file...).
    pub fn new(
        opts: TransportOptions,
        creds: CredentialStore,
        mode: ReferrersMode,
        read_only: bool,
    ) -> Result<Registries> {
        let http = build_client(&opts).map_err(|e| anyhow!(e))?;
        Ok(Registries {
            http,
            opts,
            creds,
            clients: Mutex::new(HashMap::new()),
            mode,
            api_support: Mutex::new(HashMap::new()),
            probing: tokio::sync::Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
            referrer_order: Mutex::new(HashMap::new()),
            read_only,
            listed: Mutex::new(HashMap::new()),
        })
    }

    /// The client of a registry, with that registry's own credentials, looked up once: concurrent
    /// first requests to a registry wait for the one lookup (a credential helper runs once per
    /// registry).
    pub async fn client(&self, registry: &str) -> Arc<Client> {
        let cell = {
            let mut c = match self.clients.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            c.entry(registry.to_string()).or_default().clone()
        };
        let made = cell.get_or_init(|| async {
            let creds = self.creds.for_registry(registry).await;
            Client::new(self.http.clone(), registry, &self.opts, creds)
        });
        made.await.clone()
    }

    /// Deletes the upload sessions left open on every registry (a run that stops early).
    pub async fn abandon_open_uploads(&self) {
        let clients: Vec<Arc<Client>> = match self.clients.lock() {
            Ok(c) => c.values().filter_map(|cell| cell.get().cloned()).collect(),
            Err(p) => p.into_inner().values().filter_map(|cell| cell.get().cloned()).collect(),
        };
        futures::future::join_all(clients.iter().map(|c| c.abandon_open_uploads())).await;
    }

    /// The referrers a subject's `sha256-<hex>` index lists, with that index's digest; None when
    /// `unless` was sent and the index is still that one.
    async fn tag_schema_referrers(
        &self,
        repo: &Repo,
        subject: &Digest,
        unless: Option<&Digest>,
    ) -> Result<Option<ReferrerListing>> {
        let c = self.client(&repo.registry).await;
        let tag = subject.schema_tag();
        let found = match unless {
            Some(d) => c.get_manifest_unless(&repo.repository, &tag, d).await,
            None => c.get_manifest(&repo.repository, &tag, None).await.map(Some),
        };
        match found {
            Ok(None) => Ok(None),
            Ok(Some((desc, bytes))) => {
                let referrers = manifest::index_manifests(&bytes)
                    .map_err(|e| anyhow!("referrers index {repo}:{tag} is invalid: {e}"))?;
                Ok(Some(ReferrerListing { referrers, index: Some(desc.digest) }))
            }
            Err(e) if e.is_not_found() => Ok(Some(ReferrerListing::default())),
            Err(e) => Err(typed(e)),
        }
    }

    fn listing(&self, repo: &Repo) -> Listing {
        let mut l = match self.listed.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        l.entry(repo.clone()).or_default().clone()
    }

    /// Referrers from the tag schema, asking only when the repository's tag list has the schema
    /// tag, and asking whether the index is still `known`'s when there is one.
    async fn listed_schema_referrers(
        &self,
        repo: &Repo,
        subject: &Digest,
        known: Option<&ReferrerListing>,
    ) -> Result<ReferrerListing> {
        match self.listing_has(repo, &subject.schema_tag()).await {
            Some(false) => Ok(ReferrerListing::default()),
            _ => {
                let known = known.filter(|k| k.index.is_some());
                let unless = known.and_then(|k| k.index.as_ref());
                match self.tag_schema_referrers(repo, subject, unless).await? {
                    Some(found) => Ok(found),
                    // Still the index a layout recorded: its referrers are the ones recorded with
                    // it.
                    None => Ok(known.cloned().unwrap_or_default()),
                }
            }
        }
    }

    /// The repository's tag list, taken once (before this run pushed anything) and held in the
    /// returned cell: None when it could not be read. A repository the registry does not know (404)
    /// has no tags.
    async fn tag_list(&self, repo: &Repo) -> Listing {
        let cell = self.listing(repo);
        cell.get_or_init(|| async {
            match self.client(&repo.registry).await.list_tags(&repo.repository).await {
                Ok(tags) => Some(tags.into_iter().collect()),
                Err(e) if e.is_not_found() => Some(HashSet::new()),
                Err(_) => None,
            }
        })
        .await;
        cell
    }

    /// Whether the repository's tag list has `tag`; None when the list could not be read.
    async fn listing_has(&self, repo: &Repo, tag: &str) -> Option<bool> {
        self.tag_list(repo).await.get().and_then(|all| all.as_ref().map(|set| set.contains(tag)))
    }

    fn cached_support(&self, registry: &str) -> Option<bool> {
        self.api_support.lock().ok().and_then(|m| m.get(registry).copied())
    }

    fn set_support(&self, registry: &str, yes: bool) {
        if let Ok(mut m) = self.api_support.lock() {
            m.insert(registry.to_string(), yes);
        }
    }
}

/// A registry error as the engine sees it: its message, and the kind the engine decides by (the
/// registry error's own, from the HTTP status and the OCI error codes of the answer).
fn typed(e: RegistryError) -> anyhow::Error {
    let kind = e.kind();
    anyhow::Error::new(Failure::new(kind, e))
}

impl Registries {
    /// Resolves a reference with a HEAD request (no manifest bytes).
    pub async fn resolve_head(&self, repo: &Repo, reference: &str) -> Result<Descriptor> {
        match self
            .client(&repo.registry)
            .await
            .head_manifest(&repo.repository, reference, false)
            .await
            .map_err(typed)?
        {
            Some(d) => Ok(d),
            None => Err(failure(ErrorKind::NotFound, format!("{reference} not found in {repo}"))),
        }
    }
}

#[async_trait]
impl Source for Registries {
    async fn tags(&self, repo: &Repo) -> Result<Vec<String>> {
        let mut tags =
            self.client(&repo.registry).await.list_tags(&repo.repository).await.map_err(typed)?;
        let _ = self.listing(repo).set(Some(tags.iter().cloned().collect()));
        tags.retain(|t| !is_schema_tag(t));
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    async fn resolve(
        &self,
        repo: &Repo,
        reference: &str,
        known: Option<&Descriptor>,
    ) -> Result<Resolved> {
        let c = self.client(&repo.registry).await;
        let found = match known {
            Some(k) => c.get_manifest_unless(&repo.repository, reference, &k.digest).await,
            None => c.get_manifest(&repo.repository, reference, None).await.map(Some),
        };
        match (found, known) {
            (Ok(Some((desc, bytes))), _) => Ok(Resolved { desc, bytes: Some(bytes) }),
            // Unchanged since the destination recorded it.
            (Ok(None), Some(k)) => Ok(Resolved { desc: k.clone(), bytes: None }),
            (Ok(None), None) => {
                bail!("internal: {reference} in {repo} answered as unchanged without being asked")
            }
            (Err(e), _) if e.is_not_found() => {
                Err(failure(ErrorKind::NotFound, format!("{reference} not found in {repo}")))
            }
            (Err(e), _) => Err(typed(e)),
        }
    }

    async fn fetch_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<Bytes> {
        let c = self.client(&repo.registry).await;
        let (_, bytes) = c
            .get_manifest(&repo.repository, desc.digest.as_str(), Some(desc))
            .await
            .map_err(typed)?;
        Ok(bytes)
    }

    async fn fetch_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<ByteStream> {
        self.client(&repo.registry).await.get_blob(&repo.repository, desc).await.map_err(typed)
    }

    async fn predecessors(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        known: Option<&ReferrerListing>,
    ) -> Result<ReferrerListing> {
        let c = self.client(&repo.registry).await;
        let probe =
            if self.mode == ReferrersMode::Auto && self.cached_support(&repo.registry).is_none() {
                let guard = self.probing.lock().await;
                // Another question may have found the answer while this one waited.
                self.cached_support(&repo.registry).is_none().then_some(guard)
            } else {
                None
            };
        let api = if self.mode != ReferrersMode::Tag
            && self.cached_support(&repo.registry) != Some(false)
        {
            match c.referrers_api(&repo.repository, &desc.digest).await.map_err(typed)? {
                ReferrersAnswer::Listed(found) => {
                    self.set_support(&repo.registry, true);
                    Some(found)
                }
                ReferrersAnswer::NoApi if self.mode == ReferrersMode::Api => {
                    bail!("{} has no referrers API (--distribution-spec v1.1-referrers-api); use v1.1-referrers-tag", repo.registry);
                }
                ReferrersAnswer::NoApi => {
                    self.set_support(&repo.registry, false);
                    None
                }
                ReferrersAnswer::NoneHere if self.mode == ReferrersMode::Api => Some(Vec::new()),
                ReferrersAnswer::NoneHere => None,
            }
        } else {
            None
        };
        drop(probe);
        let mut listing = match api {
            Some(referrers) => ReferrerListing { referrers, index: None },
            None => self.listed_schema_referrers(repo, &desc.digest, known).await?,
        };
        let list = &mut listing.referrers;
        list.retain(|d| d.is_manifest() || d.media_type.is_empty());
        if listing.index.is_none() {
            // The referrers API's order is the registry's own: digest order is the same every run.
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
        }
        // A tag-schema index's order is part of its bytes, which a copy of the same referrers
        // should give back: kept, with only the first of each digest.
        let mut seen = HashSet::new();
        list.retain(|d| seen.insert(d.digest.clone()));
        Ok(listing)
    }
}

#[async_trait]
impl Sink for Registries {
    fn scope(&self, repo: &Repo) -> String {
        repo.to_string()
    }

    fn traits(&self) -> Traits {
        Traits {
            whole_graphs: true,
            checks_digests: true,
            creates_by_tag: true,
            relists_referrers: true,
            in_order: false,
        }
    }

    async fn has_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<bool> {
        self.client(&repo.registry)
            .await
            .blob_exists(&repo.repository, desc, !self.read_only)
            .await
            .map_err(typed)
    }

    async fn push_blob(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<()> {
        self.client(&repo.registry)
            .await
            .push_blob(&repo.repository, desc, data)
            .await
            .map_err(typed)
    }

    async fn has_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<bool> {
        let c = self.client(&repo.registry).await;
        Ok(c.head_manifest(&repo.repository, desc.digest.as_str(), !self.read_only)
            .await
            .map_err(typed)?
            .is_some())
    }

    async fn push_manifest(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        subject: Option<&Descriptor>,
    ) -> Result<()> {
        let c = self.client(&repo.registry).await;
        let put = c
            .put_manifest(&repo.repository, desc.digest.as_str(), desc, bytes.clone())
            .await
            .map_err(typed)?;
        if let Some(subject) = subject {
            let api = match self.mode {
                ReferrersMode::Tag => false,
                ReferrersMode::Api => true,
                ReferrersMode::Auto => put.subject_indexed,
            };
            if !api {
                let parsed = manifest::parse(desc, &bytes)?;
                let rd = manifest::referrer_descriptor(desc, &parsed);
                let mut p = self.pending.lock().map_err(|_| anyhow!("internal lock poisoned"))?;
                p.entry((repo.clone(), subject.digest.clone())).or_default().push(rd);
            }
        }
        Ok(())
    }

    async fn tag(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        tag: Option<&str>,
    ) -> Result<()> {
        let Some(tag) = tag else { return Ok(()) };
        self.client(&repo.registry)
            .await
            .put_manifest(&repo.repository, tag, desc, bytes)
            .await
            .map_err(typed)?;
        Ok(())
    }

    async fn finish(&self) -> Result<()> {
        let pending = std::mem::take(
            &mut *self.pending.lock().map_err(|_| anyhow!("internal lock poisoned"))?,
        );
        for ((repo, subject), mut new) in pending {
            // Pushed concurrently: put back in the source's order (then by digest).
            let order = self
                .referrer_order
                .lock()
                .map_err(|_| anyhow!("internal lock poisoned"))?
                .remove(&(repo.clone(), subject.clone()))
                .unwrap_or_default();
            new.sort_by_key(|d| {
                (order.iter().position(|o| o == &d.digest).unwrap_or(usize::MAX), d.digest.clone())
            });
            // Merge with what the registry already lists, so earlier referrers are kept, and come
            // first, as the Go ORAS library adds them (the tag list, taken before this run pushed
            // anything, says whether there is anything to merge with).
            let mut list = self.listed_schema_referrers(&repo, &subject, None).await?.referrers;
            let before = list.len();
            for d in new {
                if !list.iter().any(|x| x.digest == d.digest) {
                    list.push(d);
                }
            }
            if list.len() == before {
                continue;
            }
            let (body, desc) = schema_index(list);
            self.client(&repo.registry)
                .await
                .put_manifest(&repo.repository, &subject.schema_tag(), &desc, body)
                .await
                .with_context(|| {
                    format!("cannot update the referrers index of {subject} in {repo}")
                })?;
        }
        Ok(())
    }

    fn referrers_order(&self, repo: &Repo, subject: &Digest, order: &[Digest]) {
        if let Ok(mut o) = self.referrer_order.lock() {
            o.insert((repo.clone(), subject.clone()), order.to_vec());
        }
    }

    fn staging(&self) -> Option<&dyn Staging> {
        Some(self)
    }

    fn mounting(&self) -> Option<&dyn Mounting> {
        Some(self)
    }

    fn hints(&self) -> &dyn Hints {
        self
    }
}

#[async_trait]
impl Hints for Registries {
    async fn tag_points_at(&self, repo: &Repo, tag: &str, digest: &Digest) -> Result<bool> {
        self.client(&repo.registry)
            .await
            .tag_points_at(&repo.repository, tag, digest, !self.read_only)
            .await
            .map_err(typed)
    }

    async fn listed_referrers(
        &self,
        repo: &Repo,
        subject: &Descriptor,
        ours: &[Descriptor],
    ) -> Result<Vec<Digest>> {
        // If the tag-schema index is still the one this tool writes for exactly these referrers (a
        // restore run again), the registry confirms it with a 304 instead of sending it.
        let known = (!ours.is_empty()).then(|| ReferrerListing {
            referrers: ours.to_vec(),
            index: Some(schema_index(ours.to_vec()).1.digest),
        });
        Ok(self
            .predecessors(repo, subject, known.as_ref())
            .await?
            .referrers
            .into_iter()
            .map(|d| d.digest)
            .collect())
    }

    async fn is_new(&self, repo: &Repo, whole: bool) -> bool {
        let schema = self.mode == ReferrersMode::Tag
            || (self.mode == ReferrersMode::Auto
                && self.cached_support(&repo.registry) == Some(false));
        if whole && schema {
            // The list is taken once either way. (Where the registry may have a referrers API, a
            // repository of many tags is not listed whole for this.)
            return self
                .tag_list(repo)
                .await
                .get()
                .is_some_and(|all| all.as_ref().is_some_and(HashSet::is_empty));
        }
        let cell = self.listing(repo);
        if let Some(all) = cell.get() {
            return all.as_ref().is_some_and(HashSet::is_empty);
        }
        // One tag is enough to know: a repository of many thousands is not listed whole for this.
        match self.client(&repo.registry).await.has_tags(&repo.repository).await {
            Ok(false) => {
                // Its whole list is known too: nothing (a sha256- tag asked about later costs no
                // request).
                let _ = cell.set(Some(HashSet::new()));
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl Staging for Registries {
    async fn stage(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<String> {
        self.client(&repo.registry)
            .await
            .stage_blob(&repo.repository, desc, data)
            .await
            .map_err(typed)
    }

    async fn commit(&self, repo: &Repo, desc: &Descriptor, token: String) -> Result<()> {
        self.client(&repo.registry)
            .await
            .commit_upload(&repo.repository, desc, token)
            .await
            .map_err(typed)
    }

    async fn cancel(&self, repo: &Repo, token: &str) {
        self.client(&repo.registry).await.cancel_upload(&repo.repository, token).await
    }
}

#[async_trait]
impl Mounting for Registries {
    async fn mount(&self, repo: &Repo, desc: &Descriptor, from: &Repo) -> Result<bool> {
        if from.registry != repo.registry {
            return Ok(false);
        }
        self.client(&repo.registry)
            .await
            .mount_blob(&repo.repository, desc, &from.repository)
            .await
            .map_err(typed)
    }
}

/// The tag-schema index listing `referrers` in their order (the source's, see
/// `Sink::referrers_order`), as bytes and descriptor: the same referrers in the same order give the
/// same bytes, so a copy gives back the source's index and a run repeated recognises its own.
fn schema_index(referrers: Vec<Descriptor>) -> (Bytes, Descriptor) {
    let body = Bytes::from(manifest::index_bytes(&referrers));
    let desc = Descriptor::new(manifest::OCI_INDEX, Digest::of(&body), body.len() as u64);
    (body, desc)
}
