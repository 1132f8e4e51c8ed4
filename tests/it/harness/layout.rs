//! Reading backups (layout directories and tars) and writing layouts by hand the way other
//! tools (skopeo, the Go ORAS CLI, Docker/containerd export) write them.

use super::client::{sha256_digest, OCI_INDEX, OCI_MANIFEST};
use super::fixtures::{pseudo_random, Desc, OCI_CONFIG, OCI_LAYER_GZIP};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An OCI layout read fully into memory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// path -> bytes of every regular file (`oci-layout`, `index.json`, `blobs/sha256/...`)
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    /// Read a layout directory or a tar of one.
    pub fn read(path: &Path) -> Layout {
        if path.is_dir() {
            let mut files = BTreeMap::new();
            walk(path, path, &mut files);
            Layout { files }
        } else {
            let bytes =
                std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            Layout::from_tar(&bytes)
        }
    }

    pub fn from_tar(bytes: &[u8]) -> Layout {
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(bytes);
        for entry in archive.entries().expect("tar entries") {
            let mut entry = entry.expect("tar entry");
            if entry.header().entry_type().is_dir() {
                continue;
            }
            let name = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(name, data);
        }
        Layout { files }
    }

    pub fn index(&self) -> Value {
        serde_json::from_slice(self.files.get("index.json").expect("index.json present"))
            .expect("index.json is JSON")
    }

    /// The `manifests` of index.json.
    pub fn entries(&self) -> Vec<Value> {
        self.index()["manifests"].as_array().cloned().unwrap_or_default()
    }

    /// ref.name annotation of every entry that has one.
    pub fn ref_names(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|e| e["annotations"][REF_NAME].as_str().map(str::to_string))
            .collect()
    }

    pub fn blob(&self, digest: &str) -> Option<&Vec<u8>> {
        let (alg, hex) = digest.split_once(':').unwrap();
        self.files.get(&format!("blobs/{alg}/{hex}"))
    }

    /// Digests of every blob file.
    pub fn blob_digests(&self) -> Vec<String> {
        self.files
            .keys()
            .filter_map(|k| k.strip_prefix("blobs/"))
            .map(|k| k.replacen('/', ":", 1))
            .collect()
    }
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            files.insert(rel, std::fs::read(&path).unwrap());
        }
    }
}

/// Builds an OCI layout by hand.
#[derive(Default)]
pub struct LayoutBuilder {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub entries: Vec<Value>,
    /// Extra top-level files (e.g. Docker's `manifest.json`).
    pub extra: BTreeMap<String, Vec<u8>>,
}

/// Tar writing options.
pub struct TarStyle {
    /// write `index.json` (and `oci-layout`) before the blobs
    pub index_first: bool,
    /// write directory entries (`blobs/`, `blobs/sha256/`)
    pub dir_entries: bool,
    /// prefix entry names with `./`
    pub dot_slash: bool,
}

impl LayoutBuilder {
    pub fn add_blob(&mut self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = sha256_digest(bytes);
        self.blobs.insert(digest.clone(), bytes.to_vec());
        Desc {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len(),
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Add an OCI image (config + 2 layers); returns (manifest descriptor, manifest bytes).
    pub fn add_image(&mut self, name: &str) -> (Desc, Vec<u8>) {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(name.as_bytes())]},
        });
        let config = self.add_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        let l1 = self.add_blob(OCI_LAYER_GZIP, &pseudo_random(&format!("{name}-a"), 1200));
        let l2 = self.add_blob(OCI_LAYER_GZIP, &pseudo_random(&format!("{name}-b"), 300));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [l1.to_json(), l2.to_json()],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        (self.add_blob(OCI_MANIFEST, &bytes), bytes)
    }

    /// Add an index.json entry for `desc` with annotations.
    pub fn add_entry(&mut self, desc: &Desc, annotations: &[(&str, &str)]) {
        let mut e = desc.to_json();
        if !annotations.is_empty() {
            let map: BTreeMap<&str, &str> = annotations.iter().cloned().collect();
            e["annotations"] = json!(map);
        }
        self.entries.push(e);
    }

    pub fn index_json(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": self.entries,
        }))
        .unwrap()
    }

    /// Write as a directory.
    pub fn write_dir(&self, dir: &Path) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for (d, bytes) in &self.blobs {
            let hex = d.strip_prefix("sha256:").unwrap();
            std::fs::write(dir.join("blobs/sha256").join(hex), bytes).unwrap();
        }
        for (name, bytes) in &self.extra {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        std::fs::write(dir.join("index.json"), self.index_json()).unwrap();
    }

    /// Write as a tar archive.
    pub fn write_tar(&self, path: &Path, style: &TarStyle) {
        let file = std::fs::File::create(path).unwrap();
        let mut tar = tar::Builder::new(file);
        let prefix = if style.dot_slash { "./" } else { "" };
        let add_file = |tar: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("{prefix}{name}"), data).unwrap();
        };
        let add_dir = |tar: &mut tar::Builder<std::fs::File>, name: &str| {
            let mut h = tar::Header::new_ustar();
            h.set_size(0);
            h.set_mode(0o755);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{prefix}{name}"), std::io::empty()).unwrap();
        };
        let index = self.index_json();
        if style.index_first {
            add_file(&mut tar, "index.json", &index);
            add_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        }
        for (name, bytes) in &self.extra {
            add_file(&mut tar, name, bytes);
        }
        if style.dir_entries {
            add_dir(&mut tar, "blobs/");
            add_dir(&mut tar, "blobs/sha256/");
        }
        for (d, bytes) in &self.blobs {
            add_file(
                &mut tar,
                &format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap()),
                bytes,
            );
        }
        if !style.index_first {
            add_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
            add_file(&mut tar, "index.json", &index);
        }
        tar.finish().unwrap();
    }
}
