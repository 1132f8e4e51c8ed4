//! The content graph of a backup: every manifest reachable from `index.json`, walked once, with the
//! blobs they name, their referrers and what refers to what. The directory and tar reader, the
//! stream reader and `verify` all read a backup's structure through this one walk.

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What refers to a manifest or a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// Entry `n` of `index.json`.
    Index(usize),
    /// A manifest (an index naming a child, or a manifest naming a blob).
    Manifest(Digest),
}

/// Why a manifest reached by the walk could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Broken {
    /// Its file is not in the backup (or cannot be read).
    Missing,
    /// Its descriptor declares more than a manifest may hold.
    TooLarge,
    /// Its bytes do not match its digest, or are not a manifest: the message says which.
    Damaged(String),
}

/// What a walk found.
#[derive(Default)]
pub struct Graph {
    /// Manifests read, checked against their digest and parsed, with their bytes when the walk
    /// keeps them (a backup of many thousands of tags need not hold them all at once).
    pub manifests: BTreeMap<Digest, (Descriptor, Bytes)>,
    /// Blobs (configs and layers, foreign layers left out) the manifests name, each once.
    pub blobs: BTreeMap<Digest, Descriptor>,
    /// Referrers by subject digest, each once, in digest order.
    pub referrers: HashMap<Digest, Vec<Descriptor>>,
    /// Every parent of each manifest and blob reached.
    pub parents: HashMap<Digest, Vec<Parent>>,
    /// Manifests that could not be used, and why.
    pub broken: BTreeMap<Digest, (Descriptor, Broken)>,
    /// (referrer, subject) for every referrer.
    pub subjects: Vec<(Digest, Digest)>,
    /// Children of partial indexes (`--sparse-index`) that are absent by design.
    pub left_out: BTreeSet<Digest>,
}

impl Graph {
    /// Bytes of every manifest and blob reached, each digest once: what a restore reads.
    pub fn content_size(&self) -> u64 {
        let manifests = self.manifests.values().map(|(d, _)| d.size);
        let blobs =
            self.blobs.iter().filter(|(d, _)| !self.manifests.contains_key(d)).map(|(_, b)| b.size);
        manifests.chain(blobs).fold(0u64, u64::saturating_add)
    }
}

/// Walks the manifests reachable from `roots` (the `index.json` descriptors, in order), reading
/// each once with `read`. Whatever an index names is read as a manifest, whatever its descriptor
/// says: content that is not one is reported as broken, never taken for a blob.
pub fn walk(
    roots: &[Descriptor],
    keep_bytes: bool,
    mut read: impl FnMut(&Descriptor) -> Option<Bytes>,
) -> Graph {
    let mut g = Graph::default();
    // Kept apart from the parents: a blob that shares a manifest's digest must not stop its walk.
    let mut walked = HashSet::new();
    // Each with whether it may be absent: a child of an index held partially.
    let mut queue: Vec<(Descriptor, Parent, bool)> =
        roots.iter().enumerate().rev().map(|(i, d)| (d.clone(), Parent::Index(i), false)).collect();
    while let Some((desc, parent, optional)) = queue.pop() {
        g.parents.entry(desc.digest.clone()).or_default().push(parent);
        if !walked.insert(desc.digest.clone()) {
            continue;
        }
        let me = Parent::Manifest(desc.digest.clone());
        let partial = desc.sparse_platforms().is_some();
        match visit(&desc, &mut read) {
            Err(Broken::Missing) if optional => {
                g.left_out.insert(desc.digest.clone());
            }
            Err(why) => {
                g.broken.insert(desc.digest.clone(), (desc, why));
            }
            Ok((bytes, parsed)) => {
                for b in parsed.copied_blobs() {
                    g.parents.entry(b.digest.clone()).or_default().push(me.clone());
                    g.blobs.entry(b.digest.clone()).or_insert_with(|| b.clone());
                }
                if let Some(s) = &parsed.subject {
                    let list = g.referrers.entry(s.digest.clone()).or_default();
                    if !list.iter().any(|x| x.digest == desc.digest) {
                        list.push(manifest::referrer_descriptor(&desc, &parsed));
                    }
                    g.subjects.push((desc.digest.clone(), s.digest.clone()));
                }
                queue.extend(
                    parsed.manifests.iter().rev().map(|c| (c.clone(), me.clone(), partial)),
                );
                g.manifests.insert(
                    desc.digest.clone(),
                    (desc, if keep_bytes { bytes } else { Bytes::new() }),
                );
            }
        }
    }
    for list in g.referrers.values_mut() {
        list.sort_by(|a, b| a.digest.cmp(&b.digest));
    }
    g
}

/// Reads, checks and parses one manifest.
fn visit(
    desc: &Descriptor,
    read: &mut impl FnMut(&Descriptor) -> Option<Bytes>,
) -> Result<(Bytes, manifest::Parsed), Broken> {
    if desc.size > MAX_MANIFEST_SIZE {
        return Err(Broken::TooLarge);
    }
    let bytes = read(desc).ok_or(Broken::Missing)?;
    crate::digest::verify_bytes(&bytes, &desc.digest, desc.size)
        .map_err(|e| Broken::Damaged(format!("manifest {}: {e}", desc.digest)))?;
    let parsed = manifest::parse(desc, &bytes).map_err(|e| Broken::Damaged(e.to_string()))?;
    Ok((bytes, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{OCI_INDEX as MT_OCI_INDEX, OCI_MANIFEST as MT_OCI_MANIFEST};

    fn stored(json: String, media_type: &str) -> (Descriptor, Bytes) {
        let bytes = Bytes::from(json);
        (Descriptor::new(media_type, Digest::of(&bytes), bytes.len() as u64), bytes)
    }

    fn image(layer: &str, subject: Option<&Descriptor>) -> (Descriptor, Bytes) {
        let subject = subject.map_or(String::new(), |s| {
            format!(
                r#","subject":{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                s.media_type, s.digest, s.size
            )
        });
        let layer = Digest::of(layer.as_bytes());
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{layer}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":1}}]{subject}}}"#
        );
        stored(json, MT_OCI_MANIFEST)
    }

    #[test]
    fn walks_children_referrers_and_blobs_once_and_names_what_is_broken() {
        let (a, a_bytes) = image("a", None);
        let (b, b_bytes) = image("b", None);
        let (sig, sig_bytes) = image("sig", Some(&a));
        let (index, index_bytes) = stored(
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","manifests":[{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{}","size":{}}},{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{}","size":{}}}]}}"#,
                a.digest, a.size, b.digest, b.size
            ),
            MT_OCI_INDEX,
        );
        let missing = Descriptor::new(MT_OCI_MANIFEST, Digest::of(b"gone"), 4);
        let mut damaged = b.clone();
        damaged.digest = Digest::of(b"other");
        let store: HashMap<Digest, Bytes> = [
            (&a, a_bytes),
            (&b, b_bytes.clone()),
            (&sig, sig_bytes),
            (&index, index_bytes),
            (&damaged, b_bytes),
        ]
        .into_iter()
        .map(|(d, b)| (d.digest.clone(), b))
        .collect();
        let mut reads = 0;
        let g = walk(
            &[index.clone(), sig.clone(), a.clone(), missing.clone(), damaged.clone()],
            true,
            |d| {
                reads += 1;
                store.get(&d.digest).cloned()
            },
        );
        assert_eq!(reads, 6, "each manifest is read once");
        assert_eq!(g.manifests.len(), 4);
        assert_eq!(g.blobs.len(), 3, "a, b and sig layers, each once");
        assert_eq!(
            g.referrers[&a.digest].iter().map(|d| &d.digest).collect::<Vec<_>>(),
            vec![&sig.digest]
        );
        assert_eq!(g.subjects, vec![(sig.digest.clone(), a.digest.clone())]);
        assert_eq!(
            g.parents[&a.digest],
            vec![Parent::Manifest(index.digest.clone()), Parent::Index(2)]
        );
        assert_eq!(g.broken[&missing.digest].1, Broken::Missing);
        assert!(
            matches!(&g.broken[&damaged.digest].1, Broken::Damaged(m) if m.contains(&damaged.digest.to_string()))
        );
        let size: u64 = [&index, &a, &b, &sig].iter().map(|d| d.size).sum::<u64>() + 3;
        assert_eq!(g.content_size(), size);
    }
}
