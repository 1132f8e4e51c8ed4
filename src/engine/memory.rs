//! An in-memory target that records every call, for the engine's unit tests. As a sink it behaves
//! like a registry (`Memory::registry`: per-repository scopes, whole graphs, mounts, held uploads,
//! manifests refused while their content is missing) or like a layout (`Memory::layout`: one shared
//! scope, none of those capabilities).

use crate::digest::Digest;
use crate::manifest::{self, Descriptor};
use crate::target::{
    failure, Access, ByteStream, ErrorKind, Hints, Mounting, ReferrerListing, Repo, Resolved,
    Result, Sink, Source, Staging, Traits,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A call a test can assert on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Call {
    FetchBlob(Digest),
    HasBlob(Repo, Digest),
    PushBlob(Repo, Digest),
    Mount(Repo, Digest, Repo),
    Stage(Repo, Digest),
    Commit(Repo, Digest),
    Cancel(Repo),
    HasManifest(Repo, Digest),
    PushManifest(Repo, Digest),
    Tag(Repo, Option<String>, Digest),
    Finish,
}

/// A failure to inject into the next pushes of a blob: its kind and how many times.
#[derive(Clone, Copy)]
pub(super) struct Inject {
    pub(super) kind: ErrorKind,
    pub(super) times: usize,
}

/// Content and tags in memory, by repository.
pub(super) struct Memory {
    registry_like: bool,
    access: Access,
    content: Mutex<HashMap<(Repo, Digest), Bytes>>,
    tags: Mutex<BTreeMap<(Repo, String), Descriptor>>,
    staged: Mutex<HashMap<String, (Repo, Bytes)>>,
    failing: Mutex<HashMap<Digest, Inject>>,
    calls: Mutex<Vec<Call>>,
}

impl Memory {
    fn new(registry_like: bool, access: Access) -> Self {
        Memory {
            registry_like,
            access,
            content: Mutex::default(),
            tags: Mutex::default(),
            staged: Mutex::default(),
            failing: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// A registry: read remotely as a source; as a sink, every capability of one.
    pub(super) fn registry() -> Self {
        Memory::new(true, Access::Remote)
    }

    /// A layout read with `access` (local); as a sink, none of a registry's capabilities.
    pub(super) fn layout() -> Self {
        Memory::new(false, Access::Local)
    }

    /// Stores `bytes` in `repo` without checking them (a damaged backup stores what it likes).
    pub(super) fn put(&self, repo: &Repo, digest: &Digest, bytes: impl Into<Bytes>) {
        self.content.lock().unwrap().insert((repo.clone(), digest.clone()), bytes.into());
    }

    /// Stores content and returns its descriptor.
    pub(super) fn blob(&self, repo: &Repo, media_type: &str, bytes: &[u8]) -> Descriptor {
        let desc = Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64);
        self.put(repo, &desc.digest, bytes.to_vec());
        desc
    }

    /// Points `tag` at `desc`.
    pub(super) fn set_tag(&self, repo: &Repo, tag: &str, desc: &Descriptor) {
        self.tags.lock().unwrap().insert((repo.clone(), tag.to_string()), desc.clone());
    }

    /// Makes the next `inject.times` pushes of `digest` fail with `inject.kind`.
    pub(super) fn fail_pushes(&self, digest: &Digest, inject: Inject) {
        self.failing.lock().unwrap().insert(digest.clone(), inject);
    }

    /// Every call so far.
    pub(super) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Whether `repo` holds `digest`.
    pub(super) fn holds(&self, repo: &Repo, digest: &Digest) -> bool {
        self.content.lock().unwrap().contains_key(&(repo.clone(), digest.clone()))
    }

    /// What `tag` points at in `repo`.
    pub(super) fn tag_of(&self, repo: &Repo, tag: &str) -> Option<Digest> {
        self.tags.lock().unwrap().get(&(repo.clone(), tag.to_string())).map(|d| d.digest.clone())
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn get(&self, repo: &Repo, digest: &Digest) -> Result<Bytes> {
        let found = self.content.lock().unwrap().get(&(repo.clone(), digest.clone())).cloned();
        found.ok_or_else(|| failure(ErrorKind::NotFound, format!("{digest} not found in {repo}")))
    }

    /// An injected failure for this push, if one is due.
    fn injected(&self, digest: &Digest) -> Result<()> {
        let mut failing = self.failing.lock().unwrap();
        match failing.get_mut(digest) {
            Some(i) if i.times > 0 => {
                i.times -= 1;
                Err(failure(i.kind, format!("injected {:?} failure pushing {digest}", i.kind)))
            }
            _ => Ok(()),
        }
    }

    /// Collects a stream, failing as the engine's verifying wrapper makes it fail.
    async fn collect(mut data: ByteStream) -> Result<Bytes> {
        let mut all = Vec::new();
        while let Some(chunk) = data.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all.into())
    }

    /// Stores verified bytes, as a registry does (it checks every digest).
    /// A registry refuses a manifest whose content is missing: children must come first.
    fn children_first(&self, repo: &Repo, desc: &Descriptor, bytes: &Bytes) -> Result<()> {
        if self.registry_like {
            let parsed = manifest::parse(desc, bytes)?;
            if let Some(missing) =
                parsed.manifests.iter().chain(&parsed.blobs).find(|c| !self.holds(repo, &c.digest))
            {
                return Err(failure(
                    ErrorKind::Other,
                    format!("manifest {} pushed before its child {}", desc.digest, missing.digest),
                ));
            }
        }
        Ok(())
    }

    fn store_checked(&self, repo: &Repo, desc: &Descriptor, bytes: Bytes) -> Result<()> {
        if Digest::of(&bytes) != desc.digest {
            return Err(failure(
                ErrorKind::Integrity,
                format!("{} does not match its bytes", desc.digest),
            ));
        }
        self.put(repo, &desc.digest, bytes);
        Ok(())
    }
}

#[async_trait]
impl Source for Memory {
    async fn tags(&self, repo: &Repo) -> Result<Vec<String>> {
        Ok(self
            .tags
            .lock()
            .unwrap()
            .keys()
            .filter(|(r, _)| r == repo)
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn resolve(
        &self,
        repo: &Repo,
        reference: &str,
        _known: Option<&Descriptor>,
    ) -> Result<Resolved> {
        let tagged = self.tags.lock().unwrap().get(&(repo.clone(), reference.to_string())).cloned();
        let desc = match (tagged, reference.parse::<Digest>()) {
            (Some(d), _) => d,
            (None, Ok(digest)) => Descriptor::new(
                manifest::OCI_MANIFEST,
                digest.clone(),
                self.get(repo, &digest)?.len() as u64,
            ),
            (None, Err(_)) => {
                return Err(failure(
                    ErrorKind::NotFound,
                    format!("{reference} not found in {repo}"),
                ))
            }
        };
        Ok(Resolved { desc, bytes: None })
    }

    async fn fetch_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<Bytes> {
        self.get(repo, &desc.digest)
    }

    async fn fetch_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<ByteStream> {
        self.record(Call::FetchBlob(desc.digest.clone()));
        let bytes = self.get(repo, &desc.digest)?;
        Ok(Box::pin(futures::stream::iter(
            bytes.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
        )))
    }

    async fn predecessors(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        _known: Option<&ReferrerListing>,
    ) -> Result<ReferrerListing> {
        let content = self.content.lock().unwrap().clone();
        let mut referrers: Vec<Descriptor> = content
            .iter()
            .filter(|((r, _), _)| r == repo)
            .filter_map(|((_, d), bytes)| {
                let probe = Descriptor::new(manifest::OCI_MANIFEST, d.clone(), bytes.len() as u64);
                let parsed = manifest::parse(&probe, bytes).ok()?;
                (parsed.subject.as_ref()?.digest == desc.digest)
                    .then(|| manifest::referrer_descriptor(&probe, &parsed))
            })
            .collect();
        referrers.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(ReferrerListing { referrers, index: None })
    }

    fn access(&self) -> Access {
        self.access
    }

    fn partial(&self, repo: &Repo, desc: &Descriptor) -> Option<String> {
        let tags = self.tags.lock().unwrap();
        tags.iter()
            .find(|((r, _), d)| r == repo && d.digest == desc.digest)
            .and_then(|(_, d)| d.sparse_platforms().map(str::to_string))
    }
}

#[async_trait]
impl Sink for Memory {
    fn scope(&self, repo: &Repo) -> String {
        if self.registry_like {
            repo.to_string()
        } else {
            String::new()
        }
    }

    fn traits(&self) -> Traits {
        let r = self.registry_like;
        Traits {
            whole_graphs: r,
            checks_digests: r,
            creates_by_tag: r,
            relists_referrers: false,
            in_order: false,
        }
    }

    async fn has_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<bool> {
        self.record(Call::HasBlob(repo.clone(), desc.digest.clone()));
        Ok(self.holds(repo, &desc.digest))
    }

    async fn push_blob(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<()> {
        self.record(Call::PushBlob(repo.clone(), desc.digest.clone()));
        self.injected(&desc.digest)?;
        let bytes = Memory::collect(data).await?;
        self.store_checked(repo, desc, bytes)
    }

    async fn has_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<bool> {
        self.record(Call::HasManifest(repo.clone(), desc.digest.clone()));
        Ok(self.holds(repo, &desc.digest))
    }

    async fn push_manifest(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        _subject: Option<&Descriptor>,
    ) -> Result<()> {
        self.record(Call::PushManifest(repo.clone(), desc.digest.clone()));
        self.children_first(repo, desc, &bytes)?;
        self.store_checked(repo, desc, bytes)
    }

    async fn tag(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        tag: Option<&str>,
    ) -> Result<()> {
        self.record(Call::Tag(repo.clone(), tag.map(str::to_string), desc.digest.clone()));
        if !self.holds(repo, &desc.digest) {
            self.children_first(repo, desc, &bytes)?;
            self.store_checked(repo, desc, bytes)?;
        }
        if let Some(t) = tag {
            self.set_tag(repo, t, desc);
        }
        Ok(())
    }

    async fn finish(&self) -> Result<()> {
        self.record(Call::Finish);
        Ok(())
    }

    fn staging(&self) -> Option<&dyn Staging> {
        self.registry_like.then_some(self as &dyn Staging)
    }

    fn mounting(&self) -> Option<&dyn Mounting> {
        self.registry_like.then_some(self as &dyn Mounting)
    }

    fn hints(&self) -> &dyn Hints {
        self
    }
}

#[async_trait]
impl Hints for Memory {
    async fn tag_points_at(&self, repo: &Repo, tag: &str, digest: &Digest) -> Result<bool> {
        Ok(self.tag_of(repo, tag).as_ref() == Some(digest))
    }
}

#[async_trait]
impl Staging for Memory {
    async fn stage(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<String> {
        self.record(Call::Stage(repo.clone(), desc.digest.clone()));
        let bytes = Memory::collect(data).await?;
        let mut staged = self.staged.lock().unwrap();
        let token = format!("session-{}", staged.len());
        staged.insert(token.clone(), (repo.clone(), bytes));
        Ok(token)
    }

    async fn commit(&self, repo: &Repo, desc: &Descriptor, token: String) -> Result<()> {
        self.record(Call::Commit(repo.clone(), desc.digest.clone()));
        let held = self.staged.lock().unwrap().remove(&token);
        let (_, bytes) =
            held.ok_or_else(|| failure(ErrorKind::NotFound, format!("no upload session {token}")))?;
        self.store_checked(repo, desc, bytes)
    }

    async fn cancel(&self, repo: &Repo, token: &str) {
        self.record(Call::Cancel(repo.clone()));
        self.staged.lock().unwrap().remove(token);
    }
}

#[async_trait]
impl Mounting for Memory {
    async fn mount(&self, repo: &Repo, desc: &Descriptor, from: &Repo) -> Result<bool> {
        self.record(Call::Mount(repo.clone(), desc.digest.clone(), from.clone()));
        match self.get(from, &desc.digest) {
            Ok(bytes) => {
                self.put(repo, &desc.digest, bytes);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}
