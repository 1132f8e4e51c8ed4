//! The parts of manifests and indexes the engine needs: descriptors, children, subject. Parsed
//! leniently, never re-serialised.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The deprecated OCI artifact manifest, still found in the wild.
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
/// Every manifest media type this tool accepts, for Accept headers.
pub const MANIFEST_TYPES: [&str; 5] =
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, OCI_ARTIFACT];
/// Manifests larger than this are refused before they are read (the distribution spec's own limit
/// is 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Ref-name annotation of the OCI image layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Image-name annotation containerd and Docker read on import.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// On a referrer's `index.json` entry: the digest of its subject (the referrer graph, readable
/// without opening manifests).
pub const ANNOTATION_SUBJECT: &str = "vnd.oras-backup.subject";
/// On a referrer's `index.json` entry: the digest of the source's referrers index (tag schema) that
/// listed it, which a later backup into the same directory asks the source to confirm instead of
/// fetching it again.
pub const ANNOTATION_REFERRERS_INDEX: &str = "vnd.oras-backup.referrers-index";
/// On a referrer's `index.json` entry that records its source index: its place in that index's
/// list (0 first), so that a restore lists the referrers in the source's order.
pub const ANNOTATION_REFERRERS_POSITION: &str = "vnd.oras-backup.referrers-index-position";
/// On an `index.json` entry: the index is held with only the manifests of these platforms
/// (comma-separated, `--sparse-index`); its other children are left out by design.
pub const ANNOTATION_SPARSE: &str = "vnd.oras-backup.sparse-index";

/// An OCI content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Content digest.
    pub digest: Digest,
    /// Content size in bytes.
    pub size: u64,
    /// Artifact type, for manifests that declare one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform of an index child, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    /// Annotations, sorted so output is reproducible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// External URLs of non-distributable layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// A plain descriptor.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            artifact_type: None,
            platform: None,
            annotations: None,
            urls: None,
        }
    }

    /// Whether this descriptor points at any kind of manifest.
    pub fn is_manifest(&self) -> bool {
        MANIFEST_TYPES.contains(&self.media_type.as_str())
    }

    /// The platforms a partial index is held with (see [`ANNOTATION_SPARSE`]).
    pub fn sparse_platforms(&self) -> Option<&str> {
        self.annotation(ANNOTATION_SPARSE)
    }

    /// An annotation value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What a manifest or index points at.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Media type, from the descriptor or the content.
    pub media_type: String,
    /// Child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    /// Blobs: config then layers (manifests only).
    pub blobs: Vec<Descriptor>,
    /// The manifest this one refers to, if it is a referrer.
    pub subject: Option<Descriptor>,
    /// `artifactType`, else the config media type: what the referrers API reports.
    pub artifact_type: Option<String>,
    /// Manifest-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Whether `artifact_type` is the manifest's own `artifactType` (not its config's media type).
    pub declared_artifact_type: bool,
}

/// Config media types of images (OCI, Docker): what Docker can load, and not an artifact's.
pub const IMAGE_CONFIGS: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// The empty config of artifacts that say their type with `artifactType` instead.
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

impl Parsed {
    /// The artifact type an index entry naming this manifest carries: `artifactType`, or a config
    /// media type that is not an image's (a Helm chart's, a signature's); none for images.
    pub fn entry_artifact_type(&self) -> Option<String> {
        if self.declared_artifact_type {
            return self.artifact_type.clone();
        }
        self.artifact_type
            .clone()
            .filter(|t| t != EMPTY_CONFIG && !IMAGE_CONFIGS.contains(&t.as_str()))
    }

    /// The blobs a copy moves: all of them but foreign layers (see [`is_foreign`]).
    pub fn copied_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.blobs.iter().filter(|b| !is_foreign(b))
    }
}

/// Whether a layer is one that registries need not hold: non-distributable (OCI) or foreign
/// (Docker), with URLs to fetch it from. Copies leave such layers where their URLs point, as
/// registries and other copy tools do.
pub fn is_foreign(desc: &Descriptor) -> bool {
    let restricted =
        desc.media_type.contains(".nondistributable.") || desc.media_type.contains(".foreign.");
    restricted && desc.urls.as_ref().is_some_and(|u| !u.is_empty())
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {0} is not a valid JSON manifest: {1}")]
    Json(Digest, String),
    #[error("manifest {0} is a Docker schema 1 manifest, which is deprecated and not supported")]
    Schema1(Digest),
    #[error("manifest {0} has media type {1:?}, which is not a manifest type this tool knows")]
    Unknown(Digest, String),
    #[error("manifest {0} refers to itself")]
    SelfReference(Digest),
}

/// Parses manifest bytes described by `desc`.
pub fn parse(desc: &Descriptor, bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| ManifestError::Json(desc.digest.clone(), e.to_string()))?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::Schema1(desc.digest.clone()));
    }
    let media_type = if desc.is_manifest() {
        desc.media_type.clone()
    } else if let Some(mt) = raw.media_type.clone().filter(|m| MANIFEST_TYPES.contains(&m.as_str()))
    {
        mt
    } else if raw.manifests.is_some() {
        OCI_INDEX.to_string()
    } else if raw.config.is_some() {
        OCI_MANIFEST.to_string()
    } else {
        return Err(ManifestError::Unknown(desc.digest.clone(), desc.media_type.clone()));
    };
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    if is_index {
        manifests = raw.manifests.unwrap_or_default();
        manifests.shrink_to_fit();
    } else {
        // Sized exactly: a run holds thousands of these, and grown a push at a time each would
        // keep room for four descriptors.
        blobs.reserve_exact(usize::from(raw.config.is_some()) + raw.layers.len() + raw.blobs.len());
        blobs.extend(raw.config.clone());
        blobs.extend(raw.layers);
        blobs.extend(raw.blobs);
    }
    if manifests
        .iter()
        .chain(blobs.iter())
        .chain(raw.subject.iter())
        .any(|d| d.digest == desc.digest)
    {
        return Err(ManifestError::SelfReference(desc.digest.clone()));
    }
    let declared_artifact_type = raw.artifact_type.is_some();
    let artifact_type = raw.artifact_type.or_else(|| raw.config.map(|c| c.media_type));
    Ok(Parsed {
        media_type,
        manifests,
        blobs,
        subject: raw.subject,
        artifact_type,
        annotations: raw.annotations,
        declared_artifact_type,
    })
}

/// The referrers-API descriptor of a referrer manifest (artifact type and annotations filled in).
pub fn referrer_descriptor(desc: &Descriptor, parsed: &Parsed) -> Descriptor {
    let mut d = Descriptor::new(&parsed.media_type, desc.digest.clone(), desc.size);
    d.artifact_type = parsed.artifact_type.clone();
    d.annotations = parsed.annotations.clone();
    d
}

/// Serialises an OCI index of `manifests` (referrers tag schema) as the Go ORAS library writes one
/// (`encoding/json` of image-spec's structs: their field order, compact, `<>&` escaped), so that
/// the same referrers give the same bytes, and digest, whichever tool wrote the index.
pub fn index_bytes(manifests: &[Descriptor]) -> Vec<u8> {
    /// image-spec's `Descriptor`, fields in the Go struct's order.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct GoDescriptor<'a> {
        media_type: &'a str,
        digest: &'a Digest,
        size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        urls: Option<&'a Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        annotations: Option<&'a BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<&'a serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        artifact_type: Option<&'a str>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: Vec<GoDescriptor<'a>>,
    }
    let manifests = manifests
        .iter()
        .map(|d| GoDescriptor {
            media_type: &d.media_type,
            digest: &d.digest,
            size: d.size,
            urls: d.urls.as_ref().filter(|u| !u.is_empty()),
            annotations: d.annotations.as_ref().filter(|a| !a.is_empty()),
            platform: d.platform.as_ref(),
            artifact_type: d.artifact_type.as_deref().filter(|t| !t.is_empty()),
        })
        .collect();
    let json =
        serde_json::to_string(&Index { schema_version: 2, media_type: OCI_INDEX, manifests })
            .unwrap_or_default();
    // encoding/json escapes these inside strings, where alone they can appear in JSON text.
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .into_bytes()
}

/// Reads the `manifests` of an index leniently (referrers responses, tag-schema indexes).
pub fn index_manifests(bytes: &[u8]) -> Result<Vec<Descriptor>, String> {
    #[derive(Deserialize)]
    struct Idx {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    serde_json::from_slice::<Idx>(bytes).map(|i| i.manifests).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_manifest_and_index() {
        let cfg = Digest::of(b"{}");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{cfg}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}}}"#,
            Digest::of(b"abc")
        );
        let d = Descriptor::new(OCI_MANIFEST, Digest::of(m.as_bytes()), m.len() as u64);
        let p = parse(&d, m.as_bytes()).unwrap();
        assert_eq!(p.blobs.len(), 1);
        assert_eq!(p.artifact_type.as_deref(), Some("application/x.sig"));
        assert!(p.subject.is_some());
        let idx = index_bytes(std::slice::from_ref(&d));
        assert_eq!(index_manifests(&idx).unwrap(), vec![d]);
    }

    #[test]
    fn a_referrers_index_is_written_as_the_go_oras_library_writes_it() {
        let mut d = Descriptor::new(OCI_MANIFEST, Digest::of(b"sig"), 3);
        d.artifact_type = Some("application/vnd.example+type".into());
        d.annotations = Some([("org.example.note".to_string(), "a<b>&c".to_string())].into());
        let expected = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3,"annotations":{{"org.example.note":"a\u003cb\u003e\u0026c"}},"artifactType":"application/vnd.example+type"}}]}}"#,
            d.digest
        );
        assert_eq!(String::from_utf8(index_bytes(&[d])).unwrap(), expected);
        assert_eq!(
            index_bytes(&[]),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#)
                .into_bytes()
        );
    }

    #[test]
    fn rejects_schema1_and_garbage() {
        let d = Descriptor::new(OCI_MANIFEST, Digest::of(b"x"), 1);
        assert!(matches!(parse(&d, br#"{"schemaVersion":1}"#), Err(ManifestError::Schema1(_))));
        assert!(matches!(parse(&d, b"not json"), Err(ManifestError::Json(..))));
    }
}
