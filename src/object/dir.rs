//! An OCI layout under an object storage prefix (`s3://bucket/prefix/`): blobs as objects (each
//! appears only once whole), `index.json` merged with what is there and written last, so that an
//! incomplete backup never looks complete; a run into the same prefix adds to it and skips the
//! blobs it holds.

use super::{error, read, upload, Location, Store};
use crate::digest::Digest;
use crate::layout::blob_path;
use crate::layout::dir::{bare, merged_index};
use crate::layout::index::{self, Entry, MAX_INDEX_SIZE, OCI_LAYOUT};
use crate::manifest::Descriptor;
use crate::target::{
    kind_of, ByteStream, EntryRole, ErrorKind, Hints, Plan, Planning, ReferrerListing, Repo,
    Result, Sink,
};
use anyhow::{anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::sync::Mutex;

/// A layout under a prefix being written.
pub struct ObjectDirSink {
    store: Store,
    loc: Location,
    existing: Vec<Entry>,
    tagged: HashMap<(Repo, String), Descriptor>,
    listings: std::sync::OnceLock<HashMap<Digest, ReferrerListing>>,
    added: Mutex<Vec<Entry>>,
    /// The digest of `index.json` as found, so that a run that changes nothing writes nothing (its
    /// bytes, megabytes for thousands of tags, are not held for the run).
    index_found: Option<Digest>,
    marker_found: bool,
    /// How index.json is written (`--full-reference`, the index's annotations).
    rendering: index::Rendering,
    /// The blobs under the prefix when it was opened, by path below it, with their sizes: listed
    /// once (a thousand to a request) instead of a HEAD per blob; `None` when listing is denied.
    blobs: Option<HashMap<String, u64>>,
}

/// A small object's bytes, `None` when there is none; refused over `limit`.
async fn get_small(store: &Store, loc: &Location, name: &str, limit: u64) -> Result<Option<Bytes>> {
    let path = loc.child(name);
    let Some(size) = read::size(store, &path, loc).await? else { return Ok(None) };
    if size > limit {
        bail!("{loc} holds a {name} of {size} bytes, over the {limit} byte limit");
    }
    let what = format!("cannot read s3://{}/{path}", loc.bucket);
    let got = store.get(&path).await.map_err(|e| error(e, &what, loc))?;
    let bytes = got.bytes().await.map_err(|e| error(e, &what, loc))?;
    if bytes.len() as u64 > limit {
        bail!("{what}: over the {limit} byte limit");
    }
    Ok(Some(bytes))
}

impl ObjectDirSink {
    /// Opens a layout under `loc` (a prefix), reading the `index.json` there to add to it.
    pub async fn create(store: Store, loc: Location) -> Result<ObjectDirSink> {
        read::check_bucket(&store, &loc).await?;
        let under = Location { key: loc.child("blobs").to_string(), prefix: true, ..loc.clone() };
        // Credentials that may not list ask about each blob instead (HEAD).
        let blobs = match read::list(&store, &under).await {
            Ok(listed) => Some(
                listed.into_iter().map(|(name, size)| (format!("blobs/{name}"), size)).collect(),
            ),
            Err(e) if kind_of(&e) == ErrorKind::Denied => None,
            Err(e) => return Err(e),
        };
        let (mut existing, mut index_found) = (Vec::new(), None);
        if let Some(raw) = get_small(&store, &loc, "index.json", MAX_INDEX_SIZE).await? {
            existing = index::parse(&raw).map_err(|e| anyhow!("cannot add to {loc}: {e}"))?;
            index_found = Some(Digest::of(&raw));
        }
        let marker_found = get_small(&store, &loc, "oci-layout", 4096)
            .await?
            .is_some_and(|b| b.as_ref() == OCI_LAYOUT);
        let tagged = index::by_tag(&existing);
        Ok(ObjectDirSink {
            store,
            loc,
            existing,
            tagged,
            listings: std::sync::OnceLock::new(),
            added: Mutex::new(Vec::new()),
            index_found,
            marker_found,
            rendering: index::Rendering::default(),
            blobs,
        })
    }

    /// Writes index.json as `rendering` says (`--full-reference`, the index's annotations).
    pub fn rendering(self, rendering: index::Rendering) -> Self {
        ObjectDirSink { rendering, ..self }
    }

    fn record(&self, e: Entry) {
        if let Ok(mut a) = self.added.lock() {
            a.push(e);
        }
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.loc.child(name);
        let what = format!("cannot write s3://{}/{path}", self.loc.bucket);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| error(e, &what, &self.loc))?;
        Ok(())
    }
}

#[async_trait]
impl Planning for ObjectDirSink {
    async fn prepare(&self, plan: &Plan<'_>) -> Result<()> {
        for e in plan.entries.iter().filter(|e| e.role == EntryRole::Referrer) {
            // A referrer's annotations are the engine's record of its subject and listing.
            let desc = &e.desc;
            self.record(Entry {
                repo: None,
                tag: None,
                desc: Descriptor { annotations: desc.annotations.clone(), ..bare(desc) },
            });
        }
        Ok(())
    }
}

impl Hints for ObjectDirSink {
    fn known_tag(&self, repo: &Repo, tag: &str) -> Option<Descriptor> {
        self.tagged.get(&(repo.clone(), tag.to_string())).cloned()
    }

    fn known_referrers(&self, subject: &Digest) -> Option<ReferrerListing> {
        self.listings.get_or_init(|| index::referrer_listings(&self.existing)).get(subject).cloned()
    }
}

#[async_trait]
impl Sink for ObjectDirSink {
    fn scope(&self, _repo: &Repo) -> String {
        String::new()
    }

    fn planning(&self) -> Option<&dyn Planning> {
        Some(self)
    }

    fn hints(&self) -> &dyn Hints {
        self
    }

    async fn has_blob(&self, _repo: &Repo, desc: &Descriptor) -> Result<bool> {
        // An object is only ever there whole (a PUT or a completed upload): its size tells.
        let name = blob_path(&desc.digest);
        match &self.blobs {
            Some(listed) => Ok(listed.get(&name) == Some(&desc.size)),
            None => {
                let path = self.loc.child(&name);
                Ok(read::size(&self.store, &path, &self.loc).await? == Some(desc.size))
            }
        }
    }

    async fn push_blob(&self, _repo: &Repo, desc: &Descriptor, data: ByteStream) -> Result<()> {
        let path = self.loc.child(&blob_path(&desc.digest));
        upload::put_stream(&self.store, &path, &self.loc, data).await
    }

    async fn has_manifest(&self, repo: &Repo, desc: &Descriptor) -> Result<bool> {
        self.has_blob(repo, desc).await
    }

    async fn push_manifest(
        &self,
        _repo: &Repo,
        desc: &Descriptor,
        bytes: Bytes,
        _subject: Option<&Descriptor>,
    ) -> Result<()> {
        self.put(&blob_path(&desc.digest), bytes).await
    }

    async fn tag(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        _bytes: Bytes,
        tag: Option<&str>,
    ) -> Result<()> {
        let repo = Some(repo.clone()).filter(|r| !r.registry.is_empty());
        self.record(Entry { repo, tag: tag.map(str::to_string), desc: bare(desc) });
        Ok(())
    }

    async fn finish(&self) -> Result<()> {
        let added =
            std::mem::take(&mut *self.added.lock().map_err(|_| anyhow!("internal lock poisoned"))?);
        let rendered = merged_index(&self.existing, &added, &self.rendering);
        // Every blob and manifest is a complete object by now (the engine finishes them first):
        // index.json, last, is what makes the prefix a backup.
        if !self.marker_found {
            self.put("oci-layout", Bytes::from_static(OCI_LAYOUT)).await?;
        }
        if Some(Digest::of(&rendered)) != self.index_found {
            self.put("index.json", Bytes::from(rendered)).await?;
        }
        Ok(())
    }
}
