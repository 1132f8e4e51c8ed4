//! The traits the copy engine moves content between: a source it reads graphs from and a sink it writes them to.

use crate::manifest::Descriptor;
pub use crate::registry::client::ByteStream;
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;

/// A repository within a target: the registry it lives on (or came from) and its path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repo {
    /// Registry host as the user names it.
    pub registry: String,
    /// Repository path.
    pub repository: String,
}

impl Repo {
    /// A repository of a registry.
    pub fn new(registry: &str, repository: &str) -> Self {
        Repo { registry: registry.into(), repository: repository.into() }
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.registry.is_empty() && self.repository.is_empty() {
            // A layout from another tool that does not record where its tags came from.
            return f.write_str("the backup's unnamed repository");
        }
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// The referrers of a subject as one listing by a source gave them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReferrerListing {
    /// The referrers.
    pub referrers: Vec<Descriptor>,
    /// Digest of the index they were read from (the referrers tag schema), by which a later run can ask
    /// whether the list changed; `None` when the source has no such index (referrers API, layouts).
    pub index: Option<crate::digest::Digest>,
}

/// A boxed error crossing the target boundary, already worded for the user.
pub type TargetError = anyhow::Error;
/// Result of target operations.
pub type Result<T> = std::result::Result<T, TargetError>;

/// Something graphs are read from: registry repositories or a layout.
#[async_trait]
pub trait Source: Send + Sync {
    /// User tags of a repository (tag-schema tags excluded), sorted.
    async fn tags(&self, repo: &Repo) -> Result<Vec<String>>;
    /// Roots stored without a tag (layouts only), copied along when every tag is.
    async fn untagged(&self, _repo: &Repo) -> Result<Vec<Descriptor>> {
        Ok(Vec::new())
    }
    /// Resolves a tag or `sha256:` digest to a descriptor; errors name what was not found.
    async fn resolve(&self, repo: &Repo, reference: &str) -> Result<Descriptor>;
    /// Resolves like `resolve`, also returning the manifest bytes when they came with the answer (saves a request).
    /// `known` is what the tag pointed at last time (a layout being added to): a source may then just confirm
    /// it, answering `known` without bytes.
    async fn resolve_manifest(&self, repo: &Repo, reference: &str, _known: Option<&Descriptor>) -> Result<(Descriptor, Option<Bytes>)> {
        Ok((self.resolve(repo, reference).await?, None))
    }
    /// Fetches manifest bytes (the engine verifies them).
    async fn fetch_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<Bytes>;
    /// Opens a blob as a stream (the engine verifies it as it flows).
    async fn fetch_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<ByteStream>;
    /// Manifests whose subject is `desc`.
    async fn referrers(&self, repo: &Repo, desc: &Descriptor) -> Result<Vec<Descriptor>>;
    /// The referrers of `desc` with the index they came from; `known` is what an earlier listing of this
    /// source gave (recorded in a layout being added to), which a source may confirm instead of listing again.
    async fn referrer_listing(&self, repo: &Repo, desc: &Descriptor, _known: Option<&ReferrerListing>) -> Result<ReferrerListing> {
        Ok(ReferrerListing { referrers: self.referrers(repo, desc).await?, index: None })
    }
    /// Whether reading a blob is cheap and local, so the engine can verify everything before writing.
    fn is_local(&self) -> bool {
        false
    }
    /// Whether blobs can only be read once, in digest order (a tar stream on stdin).
    fn ordered(&self) -> bool {
        false
    }
    /// Announces the blobs that will be read, in order (ordered sources skip the rest).
    async fn expect(&self, _digests: &[crate::digest::Digest]) -> Result<()> {
        Ok(())
    }
}

/// What the engine will write, handed to the sink before any transfer.
pub struct Plan<'a> {
    /// Every distinct blob and manifest to write, with whether it is a manifest.
    pub contents: &'a [(&'a Descriptor, bool)],
    /// Tagged and untagged roots and referrers: (repository, descriptor, tag, is_referrer).
    pub entries: &'a [(Repo, Descriptor, Option<String>, bool)],
    /// The bytes of every manifest in `contents`.
    pub manifests: &'a std::collections::HashMap<crate::digest::Digest, Bytes>,
}

/// Something graphs are written to: registry repositories or a layout.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Dedupe scope of a repository: content written once in a scope is there for every repository of it.
    fn scope(&self, repo: &Repo) -> String;
    /// Whether blobs must be written in digest order, one after another (a stream).
    fn ordered(&self) -> bool {
        false
    }
    /// Receives the whole plan before the first write.
    async fn prepare(&self, _plan: &Plan<'_>) -> Result<()> {
        Ok(())
    }
    /// Whether asking from the top pays: a manifest that is there brings its whole subgraph (registries
    /// refuse a manifest whose content is missing), so nothing under it needs asking about.
    fn prunes(&self) -> bool {
        false
    }
    /// Whether a tag exists there and points at `digest`.
    async fn tag_points_at(&self, _repo: &Repo, _tag: &str, _digest: &crate::digest::Digest) -> Result<bool> {
        Ok(false)
    }
    /// What a tag pointed at when the destination was opened, when that is known locally (a layout being
    /// added to), so that a source can be asked whether the tag moved instead of for its manifest.
    fn known_tag(&self, _repo: &Repo, _tag: &str) -> Option<Descriptor> {
        None
    }
    /// Digests of the referrers of `subject` already recorded there; `ours` are the referrers about to be
    /// written (a destination may confirm they are all recorded instead of listing what is).
    async fn listed_referrers(&self, _repo: &Repo, _subject: &Descriptor, _ours: &[Descriptor]) -> Result<Vec<crate::digest::Digest>> {
        Ok(Vec::new())
    }
    /// Whether the repository had no tags before this run wrote to it (a new repository, as when feeding a
    /// fresh registry): manifests are then written without first asking whether they are there.
    /// `whole`: the run will want the repository's whole tag list anyway (referrers it may record by the tag
    /// schema), so the answer can come from that list instead of a question of its own.
    async fn is_new(&self, _repo: &Repo, _whole: bool) -> bool {
        false
    }
    /// What the destination recorded about the referrers of `subject` from its source's referrers index (a
    /// layout being added to), when that record is complete and unambiguous.
    fn known_referrers(&self, _subject: &crate::digest::Digest) -> Option<ReferrerListing> {
        None
    }
    /// The bytes of a manifest stored there already, when reading them is local and cheap (the caller verifies).
    async fn stored_manifest(&self, _desc: &Descriptor) -> Option<Bytes> {
        None
    }
    /// Whether the blob is already there.
    async fn has_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<bool>;
    /// Writes a blob from a stream the engine verifies as it flows.
    async fn push_blob(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<()>;
    /// Whether blobs can be sent ahead and committed later, invisible until then (registry upload sessions):
    /// a restore then sends blobs while the backup is still being checked, and commits them once it has passed.
    fn stages(&self) -> bool {
        false
    }
    /// Sends a blob without making it visible; returns a token for [`Sink::commit_blob`] or [`Sink::cancel_blob`].
    async fn stage_blob(&self, _repo: &Repo, _desc: &Descriptor, _data: ByteStream) -> Result<String> {
        Err(anyhow::anyhow!("internal: this destination cannot hold uploads back"))
    }
    /// Makes a staged blob visible under its digest.
    async fn commit_blob(&self, _repo: &Repo, _desc: &Descriptor, _token: String) -> Result<()> {
        Err(anyhow::anyhow!("internal: this destination cannot hold uploads back"))
    }
    /// Abandons a staged blob, best effort.
    async fn cancel_blob(&self, _repo: &Repo, _token: &str) {}
    /// Makes a blob that `from` (same registry) holds appear in `repo` without sending it; false if not possible.
    async fn mount_blob(&self, _repo: &Repo, _desc: &Descriptor, _from: &Repo) -> Result<bool> {
        Ok(false)
    }
    /// Whether the manifest is already there.
    async fn has_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<bool>;
    /// Writes a manifest by digest; `subject` is set for referrers.
    async fn push_manifest(&self, repo: &Repo, desc: &Descriptor, bytes: Bytes, subject: Option<&Descriptor>) -> Result<()>;
    /// Points a tag at a manifest (or records an untagged root when `tag` is `None`).
    async fn tag(&self, repo: &Repo, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()>;
    /// Makes everything written visible (index.json, rename, referrers tag schema).
    async fn finish(&self) -> Result<()>;
}
