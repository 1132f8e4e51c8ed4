//! What the end-to-end tests share: registries (real ones, a fake one with the referrers API, a
//! token server) and the relays put in front of them, a test client, fixtures, hand-made layouts,
//! checks of a restored repository or a backup, and running the `oras` binary (`run.rs`).

pub mod client;
pub mod companion;
pub mod evil_proxy;
pub mod fake_referrers;
pub mod fault_proxy;
pub mod fault_proxy_safety;
pub mod fixtures;
pub mod layout;
pub mod profiles;
pub mod registry;
pub mod relay;
pub mod run;
pub mod s3;
pub mod tls;
pub mod token_server;

use std::path::Path;

pub use client::Client;
pub use registry::Registry;
pub use run::{backup, oras, restore, Oras, Run};

/// Failures of a test's cases, collected so that the test reports every case that went wrong.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Records `result` of `case` when it is a failure.
    pub fn check(&mut self, case: &str, result: Result<(), String>) {
        if let Err(why) = result {
            self.fail(case, why);
        }
    }

    /// Records a failure of `case`.
    pub fn fail(&mut self, case: &str, why: String) {
        self.0.push(format!("--- {case}: {why}"));
    }

    #[track_caller]
    pub fn assert_none(self) {
        assert!(self.0.is_empty(), "{} failing case(s):\n{}", self.0.len(), self.0.join("\n\n"));
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("oras-e2e").tempdir().unwrap()
}

/// `path` as &str.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Does `path` look like a complete layout (a directory with index.json, or a tar with an
/// index.json entry)?
pub fn looks_complete(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("index.json").exists();
    }
    if let Ok(bytes) = std::fs::read(path) {
        let mut archive = tar::Archive::new(&bytes[..]);
        if let Ok(entries) = archive.entries() {
            for e in entries.flatten() {
                if e.path()
                    .map(|p| p.to_string_lossy().trim_start_matches("./") == "index.json")
                    .unwrap_or(false)
                {
                    return true;
                }
            }
        }
    }
    false
}

/// Referrer digests of `subject` in a registry: the referrers API where the registry has it,
/// the `sha256-<hex>` tag schema otherwise.
pub fn referrers_in(client: &Client, repo: &str, subject: &str) -> Vec<String> {
    if let Some(index) = client.referrers_api(repo, subject, None) {
        return index["manifests"]
            .as_array()
            .map(|m| m.iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
    }
    client.tag_schema_referrers(repo, subject)
}

/// Check that `dst_repo` in `dst` holds exactly what `fx` describes: the same tags pointing
/// at the same digests, every manifest byte-identical by digest (with its media type), every
/// blob, and (with `referrers`) every referrer findable from its subject; without
/// `referrers`, no referrer manifest and no `sha256-` tag.
#[track_caller]
pub fn assert_repo_matches(
    dst: &Client,
    dst_repo: &str,
    fx: &fixtures::RepoFixture,
    referrers: bool,
) {
    let mut tags = dst.user_tags(dst_repo);
    tags.sort();
    let expected: Vec<String> = fx.tags.keys().cloned().collect();
    assert_eq!(tags, expected, "tags of {dst_repo}");
    for (tag, digest) in &fx.tags {
        let got =
            dst.get_manifest(dst_repo, tag).unwrap_or_else(|| panic!("{dst_repo}:{tag} missing"));
        assert_eq!(&got.digest, digest, "digest of {dst_repo}:{tag}");
    }
    let tagged = fx.tagged_manifests();
    let referrer_manifests = fx.referrer_manifests();
    for (digest, pushed) in &fx.manifests {
        let wanted = referrers || tagged.contains(digest);
        let got = dst.get_manifest(dst_repo, digest);
        if !wanted {
            assert!(
                got.is_none(),
                "referrer {digest} must not be in {dst_repo} (referrers excluded)"
            );
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("manifest {digest} missing from {dst_repo}"));
        assert!(got.bytes == pushed.bytes, "manifest {digest} in {dst_repo} is not byte-identical");
        assert_eq!(
            got.media_type.split(';').next().unwrap().trim(),
            pushed.media_type,
            "media type of {digest} in {dst_repo}"
        );
    }
    // Blobs: every blob of every wanted manifest.
    for (digest, pushed) in &fx.manifests {
        if !(referrers || tagged.contains(digest)) {
            continue;
        }
        let v = pushed.json();
        let mut blobs = Vec::new();
        if v["config"].is_object() {
            blobs.push(v["config"]["digest"].as_str().unwrap().to_string());
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for b in blobs {
            let got = dst
                .get_blob(dst_repo, &b)
                .unwrap_or_else(|| panic!("blob {b} (of {digest}) missing from {dst_repo}"));
            assert!(got == fx.blobs[&b], "blob {b} in {dst_repo} differs");
        }
    }
    if referrers {
        for (subject, refs) in &fx.referrers {
            let mut found = referrers_in(dst, dst_repo, subject);
            found.sort();
            for r in refs {
                assert!(
                    found.contains(&r.digest),
                    "referrer {} of {subject} not findable in {dst_repo} (found {found:?})",
                    r.digest
                );
            }
        }
    } else {
        let schema: Vec<String> =
            dst.list_tags(dst_repo).into_iter().filter(|t| client::is_tag_schema_tag(t)).collect();
        assert!(schema.is_empty(), "referrers excluded but {dst_repo} has {schema:?}");
        for r in &referrer_manifests {
            assert!(!dst.manifest_exists(dst_repo, r), "referrer {r} present in {dst_repo}");
        }
    }
}

/// Check a backup of one or more repositories against the fixtures: every manifest and blob
/// stored byte-identical under its digest, every blob file hashing to its name, one index
/// entry per tag with the ref name rules of format.md, one entry without ref name per
/// referrer manifest, no `sha256-` tag stored as a tag.
/// `repos` are (full `<registry>/<repo>` name, fixture); `multi` selects full ref names.
#[track_caller]
pub fn assert_layout_holds(
    layout: &layout::Layout,
    repos: &[(&str, &fixtures::RepoFixture)],
    referrers: bool,
) {
    use layout::{CONTAINERD_NAME, REF_NAME};
    let multi = repos.len() > 1;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(
            layout.files.get("oci-layout").expect("oci-layout file")
        )
        .unwrap()["imageLayoutVersion"],
        "1.0.0"
    );
    for d in layout.blob_digests() {
        let bytes = layout.blob(&d).unwrap();
        assert_eq!(client::sha256_digest(bytes), d, "blob file {d} does not hash to its name");
    }
    let entries = layout.entries();
    for (full, fx) in repos {
        let wanted: std::collections::BTreeSet<String> =
            if referrers { fx.manifests.keys().cloned().collect() } else { fx.tagged_manifests() };
        for d in &wanted {
            let got = layout
                .blob(d)
                .unwrap_or_else(|| panic!("manifest {d} of {full} missing from the backup"));
            assert!(*got == fx.manifests[d].bytes, "manifest {d} re-serialised in the backup");
        }
        for (d, bytes) in &fx.blobs {
            if referrers {
                let got = layout
                    .blob(d)
                    .unwrap_or_else(|| panic!("blob {d} of {full} missing from the backup"));
                assert!(got == bytes, "blob {d} differs in the backup");
            }
        }
        for (tag, digest) in &fx.tags {
            let want_ref = if multi { format!("{full}:{tag}") } else { tag.clone() };
            let e = entries
                .iter()
                .find(|e| e["annotations"][REF_NAME] == want_ref.as_str())
                .unwrap_or_else(|| {
                    panic!("no index.json entry with ref name {want_ref}: {entries:#?}")
                });
            assert_eq!(e["digest"], digest.as_str(), "digest of {want_ref}");
            assert_eq!(
                e["mediaType"],
                fx.manifests[digest].media_type.as_str(),
                "mediaType of {want_ref}"
            );
            assert_eq!(e["size"], fx.manifests[digest].bytes.len(), "size of {want_ref}");
            assert_eq!(
                e["annotations"][CONTAINERD_NAME],
                format!("{full}:{tag}").as_str(),
                "containerd name of {want_ref}"
            );
        }
        if referrers {
            for r in fx.referrer_manifests() {
                let e = entries
                    .iter()
                    .find(|e| e["digest"] == r.as_str())
                    .unwrap_or_else(|| panic!("referrer {r} of {full} not listed in index.json"));
                assert!(
                    e["annotations"][REF_NAME].is_null(),
                    "referrer entry {r} must have no ref name: {e}"
                );
            }
        } else {
            for r in fx.referrer_manifests() {
                assert!(layout.blob(&r).is_none(), "referrer {r} in a backup without referrers");
            }
        }
    }
    for name in layout.ref_names() {
        let tag = name.rsplit(':').next().unwrap();
        assert!(!client::is_tag_schema_tag(tag), "tag schema tag stored as a tag: {name}");
    }
}

/// Check the referrers tag schema of `repo` for every subject of `fx`: the tag
/// `sha256-<hex>` is an OCI index whose descriptors carry each referrer's mediaType, digest,
/// size, artifactType and annotations.
#[track_caller]
pub fn assert_tag_schema_descriptors(dst: &Client, repo: &str, fx: &fixtures::RepoFixture) {
    for (subject, refs) in &fx.referrers {
        let index = dst
            .get_manifest(repo, &client::tag_schema_tag(subject))
            .unwrap_or_else(|| panic!("no tag schema index for {subject} in {repo}"));
        assert_eq!(
            index.media_type.split(';').next().unwrap().trim(),
            client::OCI_INDEX,
            "tag schema index media type"
        );
        let v = index.json();
        let listed = v["manifests"].as_array().expect("manifests");
        for r in refs {
            let e = listed
                .iter()
                .find(|e| e["digest"] == r.digest.as_str())
                .unwrap_or_else(|| panic!("{} not in the tag schema index of {subject}", r.digest));
            assert_eq!(e["mediaType"], r.media_type.as_str(), "mediaType of {}", r.digest);
            assert_eq!(e["size"], r.size, "size of {}", r.digest);
            assert_eq!(
                e["artifactType"],
                r.artifact_type.as_deref().unwrap_or_default(),
                "artifactType of {}",
                r.digest
            );
            assert_eq!(
                e["annotations"],
                serde_json::json!(r.annotations),
                "annotations of {}",
                r.digest
            );
        }
    }
}
