//! The `index.json` model: which entry is a tag of which repository, and its reproducible rendering
//! (format.md).

use crate::digest::Digest;
use crate::manifest::{
    Descriptor, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REFERRERS_INDEX,
    ANNOTATION_REFERRERS_POSITION, ANNOTATION_REF_NAME, ANNOTATION_SUBJECT, OCI_INDEX,
};
use crate::reference::{is_schema_tag, valid_tag, Reference};
use crate::target::{ReferrerListing, Repo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Largest `index.json` accepted; a backup of 100k tags stays well under it.
pub const MAX_INDEX_SIZE: u64 = 256 * 1024 * 1024;

/// One `index.json` entry, classified.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Repository the entry belongs to; `None` when the layout does not say (bare tags, referrers).
    pub repo: Option<Repo>,
    /// Tag, for tagged entries.
    pub tag: Option<String>,
    /// The descriptor as stored (annotations included).
    pub desc: Descriptor,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Index annotation of an incremental backup (`backup --base`): the digest of its base's
/// `index.json`, which identifies the base.
pub const ANNOTATION_BASE_DIGEST: &str = "vnd.oras-backup.base.index-digest";
/// Index annotation of an incremental backup: where its base was, relative to the directory that
/// holds the backup (or absolute).
pub const ANNOTATION_BASE_LOCATION: &str = "vnd.oras-backup.base.location";
/// Index annotation of a sharded backup (`backup --shard K/N`): `K/N`.
pub const ANNOTATION_SHARD: &str = "vnd.oras-backup.shard";

/// What an incremental backup records of the backup it builds on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseRecord {
    /// The digest of the base's `index.json`.
    pub digest: Digest,
    /// Where the base was when the backup was made, as recorded.
    pub location: String,
}

/// The index's own annotations (not its entries'), as far as this tool writes them.
pub fn index_annotations(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    #[derive(Deserialize)]
    struct Top {
        #[serde(default)]
        annotations: Option<BTreeMap<String, String>>,
    }
    let top: Top = serde_json::from_slice(bytes)
        .map_err(|e| format!("index.json has annotations that are not strings: {e}"))?;
    Ok(top.annotations.unwrap_or_default())
}

/// The base an incremental backup records, checked: a digest, and a location that is a path.
pub fn base_record(annotations: &BTreeMap<String, String>) -> Result<Option<BaseRecord>, String> {
    let (digest, location) = match (
        annotations.get(ANNOTATION_BASE_DIGEST),
        annotations.get(ANNOTATION_BASE_LOCATION),
    ) {
        (None, None) => return Ok(None),
        (Some(d), Some(l)) => (d, l),
        _ => return Err(format!("index.json records half of a base ({ANNOTATION_BASE_DIGEST} and {ANNOTATION_BASE_LOCATION} go together): the backup is damaged")),
    };
    let digest: Digest = digest.parse().map_err(|_| {
        format!("index.json records a base whose digest {digest:?} is not a digest")
    })?;
    if location.is_empty() || location.len() > 4096 || location.chars().any(char::is_control) {
        return Err(format!(
            "index.json records a base location that is not a path: {:?}",
            crate::scrub::escape_controls(location)
        ));
    }
    Ok(Some(BaseRecord { digest, location: location.clone() }))
}

/// Parses and classifies `index.json`.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let raw: RawIndex = serde_json::from_slice(bytes)
        .map_err(|e| format!("index.json is not a valid OCI index: {e}"))?;
    let mut entries: Vec<Entry> =
        raw.manifests.into_iter().map(classify).collect::<Result<_, _>>()?;
    held_repositories_only(&entries)?;
    // The names, checked and classified, are the entry's repository and tag now; kept in the
    // annotations too they would double the memory of an index of thousands of tags (each map a
    // node of its own), and rendering writes them afresh from the repository and tag.
    for e in &mut entries {
        if e.repo.is_none() && e.tag.is_none() {
            continue;
        }
        if let Some(ann) = e.desc.annotations.as_mut() {
            ann.remove(ANNOTATION_REF_NAME);
            ann.remove(ANNOTATION_CONTAINERD_NAME);
            if ann.is_empty() {
                e.desc.annotations = None;
            }
        }
    }
    // One tag, two manifests: which one is meant depends on the reader (this one would restore the
    // first and rewrite the index with the last), so such an index is refused rather than guessed
    // at.
    let mut tags: std::collections::HashMap<(Option<&Repo>, &str), &crate::digest::Digest> =
        std::collections::HashMap::new();
    for e in &entries {
        if let Some(t) = &e.tag {
            if let Some(prev) = tags.insert((e.repo.as_ref(), t.as_str()), &e.desc.digest) {
                if prev != &e.desc.digest {
                    let name =
                        e.repo.as_ref().map(|r| format!("{r}:{t}")).unwrap_or_else(|| t.clone());
                    return Err(format!("index.json lists tag {name} twice, for different manifests ({prev} and {})", e.desc.digest));
                }
            }
        }
    }
    Ok(entries)
}

/// A ref name that is a full reference must name the repository the backup holds that entry for: a
/// layout naming other repositories in ref names than in its `io.containerd.image.name`s is
/// refused, so that a crafted backup cannot make a restore push to a repository it does not hold
/// (`docker.io/library/ubuntu:latest` as a ref name in a backup of `team/app`).
fn held_repositories_only(entries: &[Entry]) -> Result<(), String> {
    let held: BTreeSet<(String, String)> = entries
        .iter()
        .filter_map(|e| {
            e.desc.annotation(ANNOTATION_CONTAINERD_NAME).and_then(|n| Reference::parse(n).ok())
        })
        .map(|r| (r.registry, r.repository))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    for e in entries {
        let Some(name) = e.desc.annotation(ANNOTATION_REF_NAME).filter(|n| n.contains('/')) else {
            continue;
        };
        if let Ok(r) = Reference::parse(name) {
            if !held.contains(&(r.registry.clone(), r.repository.clone())) {
                return Err(format!(
                    "index.json names {:?} as a ref name, a repository the backup holds nothing of (it holds {}); refused",
                    crate::scrub::escape_controls(name),
                    held.iter().map(|(reg, repo)| format!("{reg}/{repo}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn classify(desc: Descriptor) -> Result<Entry, String> {
    let full = desc.annotation(ANNOTATION_CONTAINERD_NAME).and_then(|n| Reference::parse(n).ok());
    let ref_name = desc.annotation(ANNOTATION_REF_NAME).map(str::to_string);
    // A ref name may be a full reference (multi-repository backups) or a bare tag.
    let from_ref =
        ref_name
            .as_deref()
            .and_then(|n| if n.contains('/') { Reference::parse(n).ok() } else { None });
    if let (Some(r), Some(f)) = (&from_ref, &full) {
        if (&r.registry, &r.repository) != (&f.registry, &f.repository) {
            return Err(format!(
                "index.json entry {} has ref name {:?} but {ANNOTATION_CONTAINERD_NAME} {:?}: two different repositories; refused",
                desc.digest,
                crate::scrub::escape_controls(ref_name.as_deref().unwrap_or_default()),
                crate::scrub::escape_controls(desc.annotation(ANNOTATION_CONTAINERD_NAME).unwrap_or_default())
            ));
        }
    }
    let named = from_ref.or(full);
    let (repo, tag) = match (&named, &ref_name) {
        (Some(r), _) => (
            Some(Repo::new(&r.registry, &r.repository)),
            r.tags.first().cloned().or_else(|| ref_name.clone().filter(|t| valid_tag(t))),
        ),
        (None, Some(t)) if valid_tag(t) => (None, Some(t.clone())),
        _ => (None, None),
    };
    let tag = tag.filter(|t| !is_schema_tag(t));
    Ok(Entry { repo, tag, desc })
}

/// The repository name used for entries of a layout that does not record one.
pub fn unnamed() -> Repo {
    Repo::new("", "")
}

/// Whether an entry belongs to `repo` (entries without a repository belong to the unnamed one).
fn belongs(e: &Entry, repo: &Repo) -> bool {
    match &e.repo {
        Some(r) => r == repo,
        None => repo == &unnamed(),
    }
}

/// The repositories entries name (sorted), plus the unnamed one when tags carry no repository.
pub fn repositories(entries: &[Entry]) -> Vec<Repo> {
    let mut set: BTreeSet<Repo> = BTreeSet::new();
    for e in entries {
        match (&e.repo, &e.tag) {
            (Some(r), _) => {
                set.insert(r.clone());
            }
            (None, Some(_)) => {
                set.insert(unnamed());
            }
            _ => {}
        }
    }
    set.into_iter().collect()
}

/// The tags of a repository, sorted.
pub fn tags_of(entries: &[Entry], repo: &Repo) -> Vec<String> {
    let mut tags: Vec<String> =
        entries.iter().filter(|e| belongs(e, repo)).filter_map(|e| e.tag.clone()).collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Roots stored by digest (no tag) for a repository.
pub fn untagged_of(entries: &[Entry], repo: &Repo) -> Vec<Descriptor> {
    entries
        .iter()
        .filter(|e| e.repo.as_ref() == Some(repo) && e.tag.is_none())
        .map(|e| e.desc.clone())
        .collect()
}

/// The listed descriptor of a tag of `repo`, or of a digest anywhere, without its annotations.
pub fn find(entries: &[Entry], repo: &Repo, reference: &str) -> Option<Descriptor> {
    let found = match reference.parse::<crate::digest::Digest>() {
        Ok(d) => entries.iter().find(|e| e.desc.digest == d),
        Err(_) => entries.iter().find(|e| belongs(e, repo) && e.tag.as_deref() == Some(reference)),
    };
    found.map(|e| Descriptor { annotations: None, ..e.desc.clone() })
}

/// The platforms an index is held with when an entry marks it partial (`--sparse-index`).
pub fn partial(entries: &[Entry], digest: &crate::digest::Digest) -> Option<String> {
    entries
        .iter()
        .find(|e| &e.desc.digest == digest)
        .and_then(|e| e.desc.sparse_platforms())
        .map(str::to_string)
}

/// Tagged entries by repository and tag (entries without a repository under the unnamed one), for
/// many lookups.
pub fn by_tag(entries: &[Entry]) -> HashMap<(Repo, String), Descriptor> {
    entries
        .iter()
        .filter_map(|e| {
            let key = (e.repo.clone().unwrap_or_else(unnamed), e.tag.clone()?);
            Some((key, Descriptor { annotations: None, ..e.desc.clone() }))
        })
        .collect()
}

/// How `index.json` is written, beyond its entries.
#[derive(Clone, Debug, Default)]
pub struct Rendering {
    /// Full references as ref names even for one repository (`--full-reference`).
    pub full: bool,
    /// The index's own annotations: a shard's place, an incremental backup's base.
    pub annotations: BTreeMap<String, String>,
}

/// Renders entries as a reproducible `index.json`: tags of one repository get bare ref names
/// (unless `--full-reference`), several get full references.
pub fn render<'a>(entries: impl IntoIterator<Item = &'a Entry>, how: &Rendering) -> Vec<u8> {
    let entries: Vec<&Entry> = entries.into_iter().collect();
    let repos: BTreeSet<&Repo> = entries.iter().filter_map(|e| e.repo.as_ref()).collect();
    let single = repos.len() <= 1 && !how.full;
    // Descriptors are borrowed, not cloned: an index of thousands of tags is rendered at the end of
    // a run, when it would otherwise be held twice.
    let mut tagged: BTreeMap<(String, String), Named<'_>> = BTreeMap::new();
    let mut untagged: BTreeMap<(String, String), Named<'_>> = BTreeMap::new();
    let mut others: BTreeMap<&str, Named<'_>> = BTreeMap::new();
    for e in entries {
        let d = &e.desc;
        match (&e.repo, &e.tag) {
            (Some(r), Some(t)) => {
                let full = format!("{r}:{t}");
                let short = if single { t.clone() } else { full.clone() };
                let names = vec![(ANNOTATION_REF_NAME, short), (ANNOTATION_CONTAINERD_NAME, full)];
                tagged.insert((r.to_string(), t.clone()), Named { desc: d, names });
            }
            (None, Some(t)) => {
                let names = vec![(ANNOTATION_REF_NAME, t.clone())];
                tagged.insert((String::new(), t.clone()), Named { desc: d, names });
            }
            (Some(r), None) => {
                let names = vec![(ANNOTATION_CONTAINERD_NAME, format!("{r}@{}", d.digest))];
                untagged.insert((r.to_string(), d.digest.to_string()), Named { desc: d, names });
            }
            (None, None) => {
                others.insert(d.digest.as_str(), Named { desc: d, names: Vec::new() });
            }
        }
    }
    let manifests: Vec<Named<'_>> =
        tagged.into_values().chain(untagged.into_values()).chain(others.into_values()).collect();
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out<'a> {
        schema_version: u32,
        media_type: &'static str,
        manifests: Vec<Named<'a>>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        annotations: &'a BTreeMap<String, String>,
    }
    // Sized up front: grown by doubling, a large index would be copied over and over.
    let mut v = Vec::with_capacity(manifests.len() * 512 + 128);
    if serde_json::to_writer_pretty(
        &mut v,
        &Out { schema_version: 2, media_type: OCI_INDEX, manifests, annotations: &how.annotations },
    )
    .is_err()
    {
        v.clear();
    }
    v.push(b'\n');
    v
}

/// An index entry as written: its descriptor, with the names that say its repository and tag in
/// place of any it carried.
struct Named<'a> {
    desc: &'a Descriptor,
    names: Vec<(&'static str, String)>,
}

impl Serialize for Named<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let d = self.desc;
        let mut ann: BTreeMap<&str, &str> = d
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| *k != ANNOTATION_REF_NAME && *k != ANNOTATION_CONTAINERD_NAME)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ann.extend(self.names.iter().map(|(k, v)| (*k, v.as_str())));
        // The fields and their order are Descriptor's own serialisation.
        let mut st = s.serialize_struct("Descriptor", 7)?;
        st.serialize_field("mediaType", &d.media_type)?;
        st.serialize_field("digest", &d.digest)?;
        st.serialize_field("size", &d.size)?;
        if let Some(t) = &d.artifact_type {
            st.serialize_field("artifactType", t)?;
        }
        if let Some(p) = &d.platform {
            st.serialize_field("platform", p)?;
        }
        if !ann.is_empty() {
            st.serialize_field("annotations", &ann)?;
        }
        if let Some(u) = &d.urls {
            st.serialize_field("urls", u)?;
        }
        st.end()
    }
}

/// The referrer listings an index records (see `ANNOTATION_REFERRERS_INDEX`), by subject: a
/// subject's is known only when every referrer recorded for it names the same source index, which
/// then listed exactly those (the engine records an index with all of its referrers or with none).
pub fn referrer_listings(entries: &[Entry]) -> HashMap<Digest, ReferrerListing> {
    let mut by_subject: HashMap<Digest, Option<ReferrerListing>> = HashMap::new();
    for e in entries.iter().filter(|e| e.tag.is_none() && e.repo.is_none()) {
        let Some(subject) =
            e.desc.annotation(ANNOTATION_SUBJECT).and_then(|s| s.parse::<Digest>().ok())
        else {
            continue;
        };
        let index =
            e.desc.annotation(ANNOTATION_REFERRERS_INDEX).and_then(|s| s.parse::<Digest>().ok());
        let slot = by_subject.entry(subject).or_insert_with(|| {
            Some(ReferrerListing { referrers: Vec::new(), index: index.clone() })
        });
        match slot {
            Some(l) if index.is_some() && l.index == index => {
                l.referrers.push(Descriptor { annotations: None, ..e.desc.clone() })
            }
            _ => *slot = None,
        }
    }
    let mut listings: HashMap<Digest, ReferrerListing> =
        by_subject.into_iter().filter_map(|(s, l)| Some((s, l?))).collect();
    let positions = positions(entries);
    for l in listings.values_mut() {
        sort_by_position(&mut l.referrers, &positions);
    }
    listings
}

/// Each referrer's place in its source index's list, where `index.json` records one.
fn positions(entries: &[Entry]) -> HashMap<&Digest, usize> {
    entries
        .iter()
        .filter(|e| e.tag.is_none() && e.repo.is_none())
        .filter_map(|e| {
            let p = e.desc.annotation(ANNOTATION_REFERRERS_POSITION)?.parse().ok()?;
            Some((&e.desc.digest, p))
        })
        .collect()
}

/// Sorts referrers by their recorded places, those without one last, by digest.
fn sort_by_position(list: &mut [Descriptor], positions: &HashMap<&Digest, usize>) {
    list.sort_by(|a, b| {
        let place = |d: &Descriptor| positions.get(&d.digest).copied().unwrap_or(usize::MAX);
        (place(a), &a.digest).cmp(&(place(b), &b.digest))
    });
}

/// Puts each subject's referrers in the order of the source index that listed them, as `index.json`
/// records it (`ANNOTATION_REFERRERS_POSITION`), so that a restore lists them in that order.
pub fn order_referrers(entries: &[Entry], referrers: &mut HashMap<Digest, Vec<Descriptor>>) {
    let positions = positions(entries);
    if positions.is_empty() {
        return;
    }
    for list in referrers.values_mut() {
        sort_by_position(list, &positions);
    }
}

/// Renders the `index.json` of a planned run (roots with their tags, referrers unnamed, with the
/// annotations the engine gives them), as [`render`] does.
pub fn render_plan(plan: &crate::target::Plan<'_>, how: &Rendering) -> Vec<u8> {
    let entries: Vec<Entry> = plan
        .entries
        .iter()
        .map(|e| {
            let is_ref = e.role == crate::target::EntryRole::Referrer;
            let mut d = Descriptor::new(&e.desc.media_type, e.desc.digest.clone(), e.desc.size);
            d.artifact_type = e.desc.artifact_type.clone();
            if is_ref {
                d.annotations = e.desc.annotations.clone();
            } else if let Some(p) = e.desc.sparse_platforms() {
                d.annotations =
                    Some([(crate::manifest::ANNOTATION_SPARSE.to_string(), p.to_string())].into());
            }
            Entry {
                repo: if is_ref || e.repo.registry.is_empty() {
                    None
                } else {
                    Some(e.repo.clone())
                },
                tag: e.tag.clone(),
                desc: d,
            }
        })
        .collect();
    render(&entries, how)
}

/// The `oci-layout` file's content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Descriptor {
        Descriptor::new(crate::manifest::OCI_MANIFEST, Digest::of(s.as_bytes()), 1)
    }

    #[test]
    fn single_repo_gets_bare_tags_and_round_trips() {
        let r = Repo::new("reg.io", "team/app");
        let entries = vec![
            Entry { repo: Some(r.clone()), tag: Some("v2".into()), desc: d("b") },
            Entry { repo: Some(r.clone()), tag: Some("v1".into()), desc: d("a") },
            Entry { repo: None, tag: None, desc: d("ref") },
        ];
        let out = render(&entries, &Rendering::default());
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(r#""org.opencontainers.image.ref.name": "v1""#));
        assert!(text.contains(r#""io.containerd.image.name": "reg.io/team/app:v1""#));
        assert!(text.find("\"v1\"").unwrap() < text.find("\"v2\"").unwrap());
        let back = parse(&out).unwrap();
        assert_eq!(back[0].repo, Some(r));
        assert_eq!(back[0].tag.as_deref(), Some("v1"));
        assert_eq!(back[2].tag, None);
        assert_eq!(render(&back, &Rendering::default()), out);
    }

    fn entry_json(digest: &Digest, ref_name: &str, containerd: Option<&str>) -> serde_json::Value {
        let mut ann = serde_json::json!({ ANNOTATION_REF_NAME: ref_name });
        if let Some(c) = containerd {
            ann[ANNOTATION_CONTAINERD_NAME] = c.into();
        }
        serde_json::json!({"mediaType": crate::manifest::OCI_MANIFEST, "digest": digest.as_str(), "size": 1, "annotations": ann})
    }

    #[test]
    fn ref_names_naming_a_repository_the_backup_does_not_hold_are_refused() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let index = |m: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": m})).unwrap()
        };
        // Ref name and containerd name of one entry disagree.
        let e = parse(&index(vec![entry_json(
            &a,
            "docker.io/library/ubuntu:latest",
            Some("reg.io/team/app:v1"),
        )]))
        .unwrap_err();
        assert!(e.contains("two different repositories") && e.contains("ubuntu"), "{e}");
        // A full ref name without a containerd name of its own, for a repository nothing else
        // names.
        let e = parse(&index(vec![
            entry_json(&a, "v1", Some("reg.io/team/app:v1")),
            entry_json(&b, "docker.io/library/ubuntu:latest", None),
        ]))
        .unwrap_err();
        assert!(e.contains("holds nothing of") && e.contains("reg.io/team/app"), "{e}");
        // Full ref names of the repositories the backup holds (a multi-repository backup) are fine.
        let ok = parse(&index(vec![
            entry_json(&a, "reg.io/team/app:v1", Some("reg.io/team/app:v1")),
            entry_json(&b, "reg.io/team/web:v1", Some("reg.io/team/web:v1")),
        ]))
        .unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn several_repos_get_full_names() {
        let entries = vec![
            Entry { repo: Some(Repo::new("reg.io", "a")), tag: Some("v1".into()), desc: d("a") },
            Entry { repo: Some(Repo::new("reg.io", "b")), tag: Some("v1".into()), desc: d("b") },
        ];
        let text = String::from_utf8(render(&entries, &Rendering::default())).unwrap();
        assert!(text.contains(r#""org.opencontainers.image.ref.name": "reg.io/b:v1""#));
    }

    #[test]
    fn one_tag_for_two_manifests_is_refused() {
        let entry = |d: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"annotations":{{"io.containerd.image.name":"docker.io/foo:1.0"}}}}"#,
                Digest::of(d.as_bytes())
            )
        };
        let same = format!(r#"{{"manifests":[{},{}]}}"#, entry("a"), entry("a"));
        assert_eq!(parse(same.as_bytes()).unwrap().len(), 2);
        let differ = format!(r#"{{"manifests":[{},{}]}}"#, entry("a"), entry("b"));
        assert!(parse(differ.as_bytes()).unwrap_err().contains("twice"));
    }

    fn referrer(name: &str, subject: &str, index: Option<&str>) -> Entry {
        let mut desc = d(name);
        let mut ann = BTreeMap::from([(
            ANNOTATION_SUBJECT.to_string(),
            Digest::of(subject.as_bytes()).to_string(),
        )]);
        if let Some(i) = index {
            ann.insert(
                ANNOTATION_REFERRERS_INDEX.to_string(),
                Digest::of(i.as_bytes()).to_string(),
            );
        }
        desc.annotations = Some(ann);
        Entry { repo: None, tag: None, desc }
    }

    #[test]
    fn a_referrer_listing_is_known_only_when_every_referrer_of_the_subject_names_the_same_index() {
        let entries = vec![
            referrer("sig", "img", Some("idx")),
            referrer("sbom", "img", Some("idx")),
            referrer("sig2", "other", Some("idx-a")),
            referrer("sbom2", "other", Some("idx-b")),
            referrer("att", "third", Some("idx-c")),
            referrer("old", "third", None),
            Entry { repo: None, tag: None, desc: d("unannotated") },
        ];
        // Rendered and read back, as a second run finds them.
        let listings = referrer_listings(&parse(&render(&entries, &Rendering::default())).unwrap());
        assert_eq!(listings.len(), 1, "{listings:?}");
        let img = &listings[&Digest::of(b"img")];
        assert_eq!(img.index, Some(Digest::of(b"idx")));
        let mut got: Vec<Digest> = img.referrers.iter().map(|r| r.digest.clone()).collect();
        got.sort();
        let mut want = vec![Digest::of(b"sig"), Digest::of(b"sbom")];
        want.sort();
        assert_eq!(got, want);
        assert!(
            img.referrers.iter().all(|r| r.annotations.is_none()),
            "listed as a source would list them"
        );
    }

    #[test]
    fn referrers_come_back_in_the_order_of_the_source_index() {
        let mut entries = Vec::new();
        for (name, place) in [("a", Some("2")), ("b", Some("0")), ("c", None), ("d", Some("1"))] {
            let mut e = referrer(name, "img", Some("idx"));
            if let (Some(p), Some(ann)) = (place, e.desc.annotations.as_mut()) {
                ann.insert(ANNOTATION_REFERRERS_POSITION.to_string(), p.to_string());
            }
            entries.push(e);
        }
        let back = parse(&render(&entries, &Rendering::default())).unwrap();
        let mut referrers: HashMap<Digest, Vec<Descriptor>> =
            HashMap::from([(Digest::of(b"img"), back.iter().map(|e| e.desc.clone()).collect())]);
        order_referrers(&back, &mut referrers);
        let want: Vec<Digest> =
            ["b", "d", "a", "c"].iter().map(|n| Digest::of(n.as_bytes())).collect();
        let got: Vec<Digest> =
            referrers[&Digest::of(b"img")].iter().map(|d| d.digest.clone()).collect();
        assert_eq!(got, want, "recorded places first, then the rest");
        let listed: Vec<Digest> = referrer_listings(&back)[&Digest::of(b"img")]
            .referrers
            .iter()
            .map(|d| d.digest.clone())
            .collect();
        assert_eq!(listed, want, "a recorded listing in its index's order");
    }

    #[test]
    fn bare_tags_from_other_tools() {
        let desc = r#"{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"annotations":{"org.opencontainers.image.ref.name":"1.0","io.containerd.image.name":"docker.io/library/foo:1.0"}}]}"#;
        let e = parse(desc.as_bytes()).unwrap();
        assert_eq!(e[0].repo, Some(Repo::new("docker.io", "library/foo")));
        assert_eq!(e[0].tag.as_deref(), Some("1.0"));
    }
}
