//! The traits the copy engine moves content between: a source it reads graphs from and a sink it
//! writes them to. Each has a small core every target implements and optional capabilities
//! (`Option<&dyn ...>`) that only some targets have, as oras-go's optional interfaces.

use crate::digest::Digest;
use crate::manifest::Descriptor;
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;

/// A stream of blob bytes.
pub type ByteStream =
    Pin<Box<dyn Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send>>;

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
    /// Digest of the index they were read from (the referrers tag schema), by which a later run can
    /// ask whether the list changed; `None` when the source has no such index (referrers API,
    /// layouts).
    pub index: Option<Digest>,
}

/// What a reference resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The manifest's descriptor.
    pub desc: Descriptor,
    /// Its bytes when they came with the answer (saves the walk a request); `None` when the source
    /// only confirmed a descriptor the caller already knew.
    pub bytes: Option<Bytes>,
}

/// What went wrong, in the terms the engine decides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The tag, manifest, blob or repository does not exist.
    NotFound,
    /// The credentials are missing, wrong or not allowed to do this.
    Denied,
    /// The target does not do this (a way of uploading, an API).
    Unsupported,
    /// Content is not what its descriptor says.
    Integrity,
    /// A failure that may pass: a timeout, a cut connection, an overloaded server.
    Transient,
    /// Anything else.
    Other,
}

/// An error of a target that carries its kind; its message is the wrapped error's, worded for the
/// user.
#[derive(Debug)]
pub struct Failure {
    /// What kind of failure it is.
    pub kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Failure {
    /// Wraps an error with its kind.
    pub fn new(
        kind: ErrorKind,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Failure { kind, inner: inner.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// A boxed error crossing the target boundary, already worded for the user; [`kind_of`] tells its
/// kind.
pub type TargetError = anyhow::Error;
/// Result of target operations.
pub type Result<T> = std::result::Result<T, TargetError>;

/// An error of `kind` with a message for the user.
pub fn failure(kind: ErrorKind, message: impl Into<String>) -> TargetError {
    anyhow::Error::new(Failure::new(kind, message.into()))
}

/// The kind of a target error: the outermost [`Failure`] of its chain decides (a layer that wraps
/// one reclassifies it on purpose); an error without one is `Other`.
pub fn kind_of(e: &TargetError) -> ErrorKind {
    e.chain().find_map(|c| c.downcast_ref::<Failure>()).map_or(ErrorKind::Other, |f| f.kind)
}

/// How blobs of a source can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Over the network, at a cost per read: read as they are written.
    Remote,
    /// Cheaply and more than once (a layout on disk): the engine checks everything before writing.
    Local,
    /// Once, in digest order (a tar stream on stdin); announced up front with [`Source::expect`].
    Stream,
}

/// Something graphs are read from: registry repositories or a layout.
#[async_trait]
pub trait Source: Send + Sync {
    /// User tags of a repository (tag-schema tags excluded), sorted.
    async fn tags(&self, repo: &Repo) -> Result<Vec<String>>;
    /// Roots stored without a tag (layouts only), copied along when every tag is.
    async fn untagged(&self, _repo: &Repo) -> Result<Vec<Descriptor>> {
        Ok(Vec::new())
    }
    /// Resolves a tag or `sha256:` digest; a missing one is an [`ErrorKind::NotFound`] error naming
    /// it. `known` is what the tag pointed at last time (a layout being added to): a source may
    /// then just confirm it, answering `known` without bytes.
    async fn resolve(
        &self,
        repo: &Repo,
        reference: &str,
        known: Option<&Descriptor>,
    ) -> Result<Resolved>;
    /// Fetches manifest bytes (the engine verifies them).
    async fn fetch_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<Bytes>;
    /// Opens a blob as a stream (the engine verifies it as it flows).
    async fn fetch_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<ByteStream>;
    /// The manifests whose subject is `desc`, with the index they came from; `known` is what an
    /// earlier listing of this source gave (recorded in a layout being added to), which a source
    /// may confirm instead of listing again.
    async fn predecessors(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        known: Option<&ReferrerListing>,
    ) -> Result<ReferrerListing>;
    /// How its blobs can be read.
    fn access(&self) -> Access {
        Access::Remote
    }
    /// Announces the blobs that will be read, in order: an [`Access::Stream`] source skips the
    /// rest.
    async fn expect(&self, _digests: &[Digest]) -> Result<()> {
        Ok(())
    }
    /// The platforms an index root is held with, when the source holds it partially (a backup made
    /// with `--sparse-index`): its other children are absent by design, not by damage.
    fn partial(&self, _repo: &Repo, _desc: &Descriptor) -> Option<String> {
        None
    }
}

/// Whether an entry of the plan is a root (tagged or not) or a referrer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRole {
    /// A tagged or untagged root the user asked for.
    Root,
    /// A referrer of something copied; its annotations record its subject and listing.
    Referrer,
}

/// One entry the destination's index will name.
#[derive(Clone, Debug)]
pub struct PlanEntry {
    /// The destination repository.
    pub repo: Repo,
    /// The manifest.
    pub desc: Descriptor,
    /// Its tag, if any.
    pub tag: Option<String>,
    /// Root or referrer.
    pub role: EntryRole,
}

/// One distinct piece of content the engine will write.
#[derive(Clone, Copy, Debug)]
pub struct PlanContent<'a> {
    /// Its descriptor.
    pub desc: &'a Descriptor,
    /// Whether it is a manifest (its bytes are in [`Plan::manifests`]).
    pub manifest: bool,
}

/// What the engine will write, handed to a [`Planning`] sink before any transfer.
pub struct Plan<'a> {
    /// Every distinct blob and manifest to write.
    pub contents: &'a [PlanContent<'a>],
    /// Tagged and untagged roots and referrers.
    pub entries: &'a [PlanEntry],
    /// The bytes of every manifest in `contents`.
    pub manifests: &'a HashMap<Digest, Bytes>,
}

/// What a sink is, in the terms the engine's choices depend on. Registries have all of these;
/// layouts none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traits {
    /// A manifest that is there brings its whole subgraph (registries refuse a manifest whose
    /// content is missing): asking from the top pays, as nothing under one that is there needs
    /// asking about.
    pub whole_graphs: bool,
    /// It checks every blob's digest itself as it takes it: a blob already checked need not be
    /// hashed again.
    pub checks_digests: bool,
    /// Pushing a manifest by a tag creates it: a tagged root takes one request instead of two.
    pub creates_by_tag: bool,
    /// It may hold a referrer without listing it (the tag schema's index): pushing one again
    /// records it.
    pub relists_referrers: bool,
    /// Blobs must be written in digest order, one after another (a stream).
    pub in_order: bool,
}

/// Something graphs are written to: registry repositories or a layout.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Dedupe scope of a repository: content written once in a scope is there for every repository
    /// of it.
    fn scope(&self, repo: &Repo) -> String;
    /// What the sink is.
    fn traits(&self) -> Traits {
        Traits::default()
    }
    /// Whether the blob is already there.
    async fn has_blob(&self, repo: &Repo, desc: &Descriptor) -> Result<bool>;
    /// Writes a blob from a stream the engine verifies as it flows.
    async fn push_blob(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<()>;
    /// Whether the manifest is already there.
    async fn has_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<bool>;
    /// Writes a manifest by digest; `subject` is set for referrers.
    async fn push_manifest(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        subject: Option<&Descriptor>,
    ) -> Result<()>;
    /// Points a tag at a manifest (or records an untagged root when `tag` is `None`).
    async fn tag(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        tag: Option<&str>,
    ) -> Result<()>;
    /// Makes everything written visible (index.json, rename, referrers tag schema).
    async fn finish(&self) -> Result<()>;
    /// The order in which the source lists a subject's referrers, told before any of them is
    /// pushed: a sink that writes its own list of them (the tag schema's index) adds new ones in
    /// this order, so that the same referrers give back the source's list, byte for byte.
    fn referrers_order(&self, _repo: &Repo, _subject: &Digest, _order: &[Digest]) {}
    /// The run failed: lets work still under way in the background end, so that what the caller
    /// cleans up next is not written to behind its back.
    async fn abandon(&self) {}
    /// Sinks that need the whole plan before the first write (archives lay out their entries).
    fn planning(&self) -> Option<&dyn Planning> {
        None
    }
    /// Sinks that can hold uploads back and commit them later.
    fn staging(&self) -> Option<&dyn Staging> {
        None
    }
    /// Sinks that can make a blob of one repository appear in another without sending it.
    fn mounting(&self) -> Option<&dyn Mounting> {
        None
    }
    /// What the sink can tell about its content cheaply, so that the engine asks or reads less.
    /// Hints are advice with safe defaults ([`NoHints`]), so every sink has them.
    fn hints(&self) -> &dyn Hints {
        &NoHints
    }
}

/// A sink that receives the whole plan before the first write.
#[async_trait]
pub trait Planning: Send + Sync {
    /// Receives the plan.
    async fn prepare(&self, plan: &Plan<'_>) -> Result<()>;
}

/// A sink whose blobs can be sent ahead and committed later, invisible until then (registry upload
/// sessions): a restore sends blobs while the backup is still being checked, and commits them once
/// it has passed.
#[async_trait]
pub trait Staging: Send + Sync {
    /// Sends a blob without making it visible; returns a token for `commit` or `cancel`. A sink
    /// that does not take this way of uploading answers [`ErrorKind::Unsupported`].
    async fn stage(&self, repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<String>;
    /// Makes a staged blob visible under its digest.
    async fn commit(&self, repo: &Repo, desc: &Descriptor, token: String) -> Result<()>;
    /// Abandons a staged blob, best effort.
    async fn cancel(&self, repo: &Repo, token: &str);
}

/// A sink that can make a blob held by another of its repositories appear in `repo`.
#[async_trait]
pub trait Mounting: Send + Sync {
    /// Mounts the blob from `from`; false when that is not possible (the blob is then sent).
    async fn mount(&self, repo: &Repo, desc: &Descriptor, from: &Repo) -> Result<bool>;
}

/// What a sink can tell about its content more cheaply than by the core questions.
#[async_trait]
pub trait Hints: Send + Sync {
    /// Whether a tag exists there and points at `digest`.
    async fn tag_points_at(&self, _repo: &Repo, _tag: &str, _digest: &Digest) -> Result<bool> {
        Ok(false)
    }
    /// What a tag pointed at when the destination was opened, when that is known locally (a layout
    /// being added to), so that a source can be asked whether the tag moved instead of for its
    /// manifest.
    fn known_tag(&self, _repo: &Repo, _tag: &str) -> Option<Descriptor> {
        None
    }
    /// Digests of the referrers of `subject` already recorded there; `ours` are the referrers about
    /// to be written (a destination may confirm they are all recorded instead of listing what is).
    async fn listed_referrers(
        &self,
        _repo: &Repo,
        _subject: &Descriptor,
        _ours: &[Descriptor],
    ) -> Result<Vec<Digest>> {
        Ok(Vec::new())
    }
    /// Whether the repository had no tags before this run wrote to it (a new repository, as when
    /// feeding a fresh registry): manifests are then written without first asking whether they are
    /// there. `whole`: the run will want the repository's whole tag list anyway (referrers it may
    /// record by the tag schema), so the answer can come from that list instead of a question of
    /// its own.
    async fn is_new(&self, _repo: &Repo, _whole: bool) -> bool {
        false
    }
    /// What the destination recorded about the referrers of `subject` from its source's referrers
    /// index (a layout being added to), when that record is complete and unambiguous.
    fn known_referrers(&self, _subject: &Digest) -> Option<ReferrerListing> {
        None
    }
    /// The bytes of a manifest stored there already, when reading them is local and cheap (the
    /// caller verifies).
    async fn stored_manifest(&self, _desc: &Descriptor) -> Option<Bytes> {
        None
    }
}

/// The hints of a sink that knows nothing ahead: every question is asked the plain way.
pub struct NoHints;

impl Hints for NoHints {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_kind_through_context() {
        let e =
            failure(ErrorKind::NotFound, "v9 not found in reg.io/app").context("cannot resolve");
        assert_eq!(kind_of(&e), ErrorKind::NotFound);
        assert_eq!(format!("{e:#}"), "cannot resolve: v9 not found in reg.io/app");
        assert_eq!(kind_of(&anyhow::anyhow!("plain")), ErrorKind::Other);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e =
            anyhow::Error::new(Failure::new(ErrorKind::Transient, io)).context("cannot copy blob");
        assert_eq!(
            (kind_of(&e), format!("{e:#}").as_str()),
            (ErrorKind::Transient, "cannot copy blob: reset")
        );
    }
}
