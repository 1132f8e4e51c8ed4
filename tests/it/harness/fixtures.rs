//! Fixture builders: push every kind of content the product must handle into a registry
//! and describe what was pushed (tags, every manifest and blob, referrers per subject).

use super::client::{
    sha256_digest, tag_schema_tag, Client, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const SIGNATURE_TYPE: &str = "application/vnd.example.signature.v1+json";
pub const SBOM_TYPE: &str = "application/spdx+json";
pub const ATTESTATION_TYPE: &str = "application/vnd.example.attestation.v1+json";
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const TEXT_CONFIG: &str = "application/vnd.example.config.v1+text";
pub const ARTIFACT_TYPE: &str = "application/vnd.example.artifact.v1";

/// A descriptor (what a parent records about a child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Desc {
    /// The descriptor as JSON (mediaType, digest, size, artifactType?, annotations?).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if let Some(at) = &self.artifact_type {
            v["artifactType"] = json!(at);
        }
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }
}

/// A manifest that was pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Pushed {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap()
    }
}

/// What was pushed into one repository.
#[derive(Debug, Clone, Default)]
pub struct RepoFixture {
    pub repo: String,
    /// tag -> root manifest digest
    pub tags: BTreeMap<String, String>,
    /// every manifest (tagged graphs and referrers; not tag-schema indexes)
    pub manifests: BTreeMap<String, Pushed>,
    /// every blob: digest -> bytes
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// subject digest -> descriptors of its direct referrers
    pub referrers: BTreeMap<String, Vec<Desc>>,
    /// tag-schema tags that were pushed (`sha256-<hex>`)
    pub tag_schema_tags: BTreeSet<String>,
}

impl RepoFixture {
    /// Every manifest and blob digest (what a backup with referrers must round-trip).
    pub fn all_digests(&self) -> BTreeSet<String> {
        self.manifests.keys().chain(self.blobs.keys()).cloned().collect()
    }

    /// Every referrer manifest digest (recursively: referrers of referrers too).
    pub fn referrer_manifests(&self) -> BTreeSet<String> {
        self.referrers.values().flatten().map(|d| d.digest.clone()).collect()
    }

    /// Manifests reachable from the tags (no referrers).
    pub fn tagged_manifests(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<String> = self.tags.values().cloned().collect();
        while let Some(d) = todo.pop() {
            if !out.insert(d.clone()) {
                continue;
            }
            if let Some(m) = self.manifests.get(&d) {
                if let Some(children) = m.json()["manifests"].as_array() {
                    for c in children {
                        todo.push(c["digest"].as_str().unwrap().to_string());
                    }
                }
            }
        }
        out
    }

    /// Manifests that have referrers and are part of a tagged graph, recursively including
    /// referrers that have referrers.
    pub fn subjects(&self) -> BTreeSet<String> {
        self.referrers.keys().cloned().collect()
    }

    /// The part of the fixture a backup of `tags` (plus untagged `digests`) holds: those
    /// roots, their graphs, and their referrers recursively.
    pub fn subset(&self, tags: &[&str], digests: &[&str]) -> RepoFixture {
        let mut fx = self.clone();
        fx.tags.retain(|t, _| tags.contains(&t.as_str()));
        let mut keep = fx.tagged_manifests();
        let mut todo: Vec<String> = keep.iter().cloned().collect();
        todo.extend(digests.iter().map(|d| d.to_string()));
        while let Some(d) = todo.pop() {
            keep.insert(d.clone());
            if let Some(m) = self.manifests.get(&d) {
                if let Some(children) = m.json()["manifests"].as_array() {
                    for c in children {
                        let c = c["digest"].as_str().unwrap().to_string();
                        if !keep.contains(&c) {
                            todo.push(c);
                        }
                    }
                }
            }
            for r in self.referrers.get(&d).into_iter().flatten() {
                if !keep.contains(&r.digest) {
                    todo.push(r.digest.clone());
                }
            }
        }
        fx.manifests.retain(|d, _| keep.contains(d));
        fx.referrers.retain(|s, _| keep.contains(s));
        let mut blobs = BTreeSet::new();
        for m in fx.manifests.values() {
            let v = m.json();
            if let Some(d) = v["config"]["digest"].as_str() {
                blobs.insert(d.to_string());
            }
            for l in v["layers"].as_array().into_iter().flatten() {
                blobs.insert(l["digest"].as_str().unwrap().to_string());
            }
        }
        fx.blobs.retain(|d, _| blobs.contains(d));
        fx.tag_schema_tags.clear();
        fx
    }

    /// Digest of a tag's root.
    pub fn tag(&self, tag: &str) -> &str {
        self.tags.get(tag).unwrap_or_else(|| panic!("fixture has no tag {tag}"))
    }

    /// The descriptor of a pushed manifest.
    pub fn desc(&self, digest: &str) -> Desc {
        let m = &self.manifests[digest];
        Desc {
            media_type: m.media_type.clone(),
            digest: m.digest.clone(),
            size: m.bytes.len(),
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), starting with the gzip magic so that
/// they look like compressed layers.
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in seed.bytes() {
        x = (x ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0x1f, 0x8b, 0x08, 0x00]);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Pushes content into one repository and records it.
pub struct Builder {
    pub client: Client,
    pub fx: RepoFixture,
    /// Maintain the referrers tag schema (registries without the referrers API).
    pub tag_schema: bool,
}

impl Builder {
    /// The tag schema is maintained unless the registry answers the referrers API.
    pub fn new(client: &Client, repo: &str) -> Builder {
        let probe = sha256_digest(b"probe");
        let has_api = client.referrers_api(repo, &probe, None).is_some();
        Builder {
            client: client.clone(),
            fx: RepoFixture { repo: repo.to_string(), ..Default::default() },
            tag_schema: !has_api,
        }
    }

    pub fn finish(self) -> RepoFixture {
        self.fx
    }

    /// Push a blob; returns its descriptor.
    pub fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = self.client.push_blob(&self.fx.repo, bytes);
        self.fx.blobs.insert(digest.clone(), bytes.to_vec());
        Desc {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len(),
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Push manifest bytes under a tag, or by digest when `tag` is None.
    pub fn manifest_bytes(&mut self, tag: Option<&str>, media_type: &str, bytes: Vec<u8>) -> Desc {
        let digest = sha256_digest(&bytes);
        let reference = tag.unwrap_or(&digest).to_string();
        self.client.push_manifest(&self.fx.repo, &reference, media_type, &bytes);
        if let Some(t) = tag {
            self.fx.tags.insert(t.to_string(), digest.clone());
        }
        let size = bytes.len();
        self.fx.manifests.insert(
            digest.clone(),
            Pushed { media_type: media_type.to_string(), bytes, digest: digest.clone() },
        );
        Desc {
            media_type: media_type.to_string(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Push a manifest serialised compactly.
    pub fn manifest(&mut self, tag: Option<&str>, media_type: &str, value: &Value) -> Desc {
        self.manifest_bytes(tag, media_type, serde_json::to_vec(value).unwrap())
    }

    /// Tag an already pushed manifest with another tag.
    pub fn tag(&mut self, tag: &str, desc: &Desc) {
        let m = self.fx.manifests[&desc.digest].clone();
        self.client.push_manifest(&self.fx.repo, tag, &m.media_type, &m.bytes);
        self.fx.tags.insert(tag.to_string(), desc.digest.clone());
    }

    fn image_config(&mut self, media_type: &str, name: &str, arch: &str, diff_ids: usize) -> Desc {
        let diff: Vec<String> =
            (0..diff_ids).map(|i| sha256_digest(format!("{name}-diff-{i}").as_bytes())).collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Labels": {"name": name}},
            "rootfs": {"type": "layers", "diff_ids": diff},
            "created": "2024-01-01T00:00:00Z",
        });
        self.blob(media_type, &serde_json::to_vec(&config).unwrap())
    }

    /// An OCI image manifest with a JSON config and the given layers.
    pub fn oci_image_with_layers(
        &mut self,
        tag: Option<&str>,
        name: &str,
        arch: &str,
        layers: &[Desc],
    ) -> Desc {
        let config = self.image_config(OCI_CONFIG, name, arch, layers.len());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Desc::to_json).collect::<Vec<_>>(),
            "annotations": {"org.opencontainers.image.title": name},
        });
        self.manifest(tag, OCI_MANIFEST, &manifest)
    }

    /// An OCI image manifest: config JSON + 2 gzip-looking random layers.
    pub fn oci_image(&mut self, tag: Option<&str>, name: &str, arch: &str) -> Desc {
        let l1 = self.blob(OCI_LAYER_GZIP, &pseudo_random(&format!("{name}-l1"), 1500));
        let l2 = self.blob(OCI_LAYER_GZIP, &pseudo_random(&format!("{name}-l2"), 700));
        self.oci_image_with_layers(tag, name, arch, &[l1, l2])
    }

    /// An OCI index with a linux/amd64 and a linux/arm64 child; returns (index, children).
    pub fn oci_index(&mut self, tag: Option<&str>, name: &str) -> (Desc, Vec<Desc>) {
        let mut children = Vec::new();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let d = self.oci_image(None, &format!("{name}-{arch}"), arch);
            let mut e = d.to_json();
            e["platform"] = json!({"architecture": arch, "os": "linux"});
            entries.push(e);
            children.push(d);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        });
        (self.manifest(tag, OCI_INDEX, &index), children)
    }

    /// A Docker schema 2 manifest, pretty-printed like the Docker CLI does (bytes that a
    /// re-serialisation would change).
    pub fn docker_image_with_layers(
        &mut self,
        tag: Option<&str>,
        name: &str,
        arch: &str,
        layers: &[Desc],
    ) -> Desc {
        let config = self.image_config(DOCKER_CONFIG, name, arch, layers.len());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Desc::to_json).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        self.manifest_bytes(tag, DOCKER_MANIFEST, bytes)
    }

    pub fn docker_image(&mut self, tag: Option<&str>, name: &str, arch: &str) -> Desc {
        let l1 = self.blob(DOCKER_LAYER, &pseudo_random(&format!("{name}-d1"), 900));
        self.docker_image_with_layers(tag, name, arch, &[l1])
    }

    /// A Docker manifest list with two platform children.
    pub fn docker_list(&mut self, tag: Option<&str>, name: &str) -> (Desc, Vec<Desc>) {
        let mut children = Vec::new();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let d = self.docker_image(None, &format!("{name}-{arch}"), arch);
            let mut e = d.to_json();
            e["platform"] = json!({"architecture": arch, "os": "linux"});
            entries.push(e);
            children.push(d);
        }
        let list = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": entries,
        });
        let bytes = serde_json::to_vec_pretty(&list).unwrap();
        (self.manifest_bytes(tag, DOCKER_LIST, bytes), children)
    }

    /// An artifact: `artifactType`, the empty config `{}`, one payload layer and one
    /// zero-byte layer.
    pub fn artifact(&mut self, tag: Option<&str>, name: &str) -> Desc {
        let empty = self.blob(EMPTY_CONFIG, b"{}");
        let payload =
            self.blob("application/vnd.example.data.v1", format!("artifact {name}\n").as_bytes());
        let mut zero = self.blob("application/vnd.example.empty-file.v1", b"");
        zero.annotations.insert("org.opencontainers.image.title".into(), "empty.txt".into());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": empty.to_json(),
            "layers": [payload.to_json(), zero.to_json()],
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        });
        let mut d = self.manifest(tag, OCI_MANIFEST, &manifest);
        d.artifact_type = Some(ARTIFACT_TYPE.into());
        d
    }

    /// A Helm chart (config media type of Helm, chart layer).
    pub fn helm_chart(&mut self, tag: Option<&str>, name: &str) -> Desc {
        let config = self.blob(
            HELM_CONFIG,
            format!("{{\"name\":\"{name}\",\"version\":\"0.1.0\",\"apiVersion\":\"v2\"}}")
                .as_bytes(),
        );
        let chart = self.blob(HELM_CHART, &pseudo_random(&format!("{name}-chart"), 600));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [chart.to_json()],
        });
        self.manifest(tag, OCI_MANIFEST, &manifest)
    }

    /// A manifest whose config blob is not JSON at all.
    pub fn text_config_artifact(&mut self, tag: Option<&str>, name: &str) -> Desc {
        let config =
            self.blob(TEXT_CONFIG, format!("plain text config of {name}\nnot json\n").as_bytes());
        let layer = self.blob("text/plain", format!("hello from {name}\n").as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        });
        self.manifest(tag, OCI_MANIFEST, &manifest)
    }

    /// Push a referrer of `subject` (by digest, untagged) and maintain the tag schema.
    pub fn referrer(
        &mut self,
        subject: &Desc,
        artifact_type: &str,
        payload: &[u8],
        note: &str,
    ) -> Desc {
        let empty = self.blob(EMPTY_CONFIG, b"{}");
        let layer = self.blob(artifact_type, payload);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.created".to_string(),
            "2024-01-01T00:00:00Z".to_string(),
        );
        annotations.insert("org.example.note".to_string(), note.to_string());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty.to_json(),
            "layers": [layer.to_json()],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest,
                "size": subject.size,
            },
            "annotations": annotations,
        });
        let mut d = self.manifest(None, OCI_MANIFEST, &manifest);
        d.artifact_type = Some(artifact_type.to_string());
        d.annotations = annotations;
        self.fx.referrers.entry(subject.digest.clone()).or_default().push(d.clone());
        if self.tag_schema {
            self.update_tag_schema(&subject.digest);
        }
        d
    }

    /// (Re)write the tag `sha256-<hex>` as an OCI index listing the referrers of `subject`,
    /// as other clients do on registries without the referrers API.
    pub fn update_tag_schema(&mut self, subject: &str) {
        let entries: Vec<Value> = self.fx.referrers[subject].iter().map(Desc::to_json).collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        });
        let tag = tag_schema_tag(subject);
        self.client.push_manifest(
            &self.fx.repo,
            &tag,
            OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        );
        self.fx.tag_schema_tags.insert(tag);
    }
}

/// Every kind in one repository:
/// - `v1`: OCI image (config + 2 layers) with a signature and an SBOM referring to it, and a
///   signature of the SBOM (referrer of a referrer);
/// - `v2`: OCI index with 2 platform children; an attestation refers to the index, and a
///   signature refers to its amd64 CHILD;
/// - `v3`: Docker schema 2 image sharing a layer with `v1`; `latest` is another tag of it;
/// - `v4`: Docker manifest list;
/// - `artifact`: artifactType + empty config + zero-byte layer;
/// - `chart`: Helm chart; `textcfg`: non-JSON config.
pub fn push_all_kinds(client: &Client, repo: &str) -> RepoFixture {
    let mut b = Builder::new(client, repo);
    let shared = b.blob(OCI_LAYER_GZIP, &pseudo_random("shared-layer", 2048));
    let own = b.blob(OCI_LAYER_GZIP, &pseudo_random(&format!("{repo}-own"), 1024));
    let v1 = b.oci_image_with_layers(Some("v1"), "app-v1", "amd64", &[shared.clone(), own]);
    let sig = b.referrer(&v1, SIGNATURE_TYPE, b"signature-of-v1", "sig v1");
    let _ = sig;
    let sbom =
        b.referrer(&v1, SBOM_TYPE, br#"{"spdxVersion":"SPDX-2.3","name":"app-v1"}"#, "sbom v1");
    b.referrer(&sbom, SIGNATURE_TYPE, b"signature-of-sbom", "sig of sbom");

    let (v2, children) = b.oci_index(Some("v2"), "app-v2");
    b.referrer(&v2, ATTESTATION_TYPE, b"attestation-of-index", "index attestation");
    b.referrer(&children[0], SIGNATURE_TYPE, b"signature-of-amd64-child", "child sig");

    let d1 = b.blob(DOCKER_LAYER, &pseudo_random("docker-own", 800));
    let mut shared_docker = shared.clone();
    shared_docker.media_type = DOCKER_LAYER.to_string();
    let v3 = b.docker_image_with_layers(Some("v3"), "app-v3", "amd64", &[shared_docker, d1]);
    b.tag("latest", &v3);
    b.docker_list(Some("v4"), "app-v4");
    b.artifact(Some("artifact"), "app-artifact");
    b.helm_chart(Some("chart"), "app-chart");
    b.text_config_artifact(Some("textcfg"), "app-text");
    b.finish()
}

/// A small repository: `v1`, `v2`, `v3` OCI images sharing the "shared-layer" blob with
/// [`push_all_kinds`] (layers shared across repositories) and a signature on `v2`.
pub fn push_web(client: &Client, repo: &str) -> RepoFixture {
    let mut b = Builder::new(client, repo);
    let shared = b.blob(OCI_LAYER_GZIP, &pseudo_random("shared-layer", 2048));
    for tag in ["v1", "v2", "v3"] {
        let own = b.blob(OCI_LAYER_GZIP, &pseudo_random(&format!("{repo}-{tag}"), 512));
        let d = b.oci_image_with_layers(
            Some(tag),
            &format!("web-{tag}"),
            "amd64",
            &[shared.clone(), own],
        );
        if tag == "v2" {
            b.referrer(&d, SIGNATURE_TYPE, b"signature-of-web-v2", "web sig");
        }
    }
    b.finish()
}

/// One OCI image tagged `v1` with a signature and an SBOM (plus a signature of the SBOM).
pub fn push_signed_image(client: &Client, repo: &str) -> RepoFixture {
    let mut b = Builder::new(client, repo);
    let v1 = b.oci_image(Some("v1"), &format!("{repo}-img"), "amd64");
    b.referrer(&v1, SIGNATURE_TYPE, b"signature", "sig");
    let sbom = b.referrer(&v1, SBOM_TYPE, br#"{"spdxVersion":"SPDX-2.3"}"#, "sbom");
    b.referrer(&sbom, SIGNATURE_TYPE, b"signature-of-sbom", "sbom sig");
    b.finish()
}

/// `n` tags (`t000`, `t001`, ...) of tiny images sharing one layer.
pub fn push_many_tags(client: &Client, repo: &str, n: usize) -> RepoFixture {
    let mut b = Builder::new(client, repo);
    let layer = b.blob(OCI_LAYER_GZIP, &pseudo_random("many-layer", 64));
    let empty = b.blob(EMPTY_CONFIG, b"{}");
    for i in 0..n {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": empty.to_json(),
            "layers": [layer.to_json()],
            "annotations": {"org.example.n": i.to_string()},
        });
        b.manifest(Some(&format!("t{i:03}")), OCI_MANIFEST, &manifest);
    }
    b.finish()
}
