//! Docker's `manifest.json` in a layout tar, so that `docker load` (and every reader of Docker
//! archives: skopeo `docker-archive:`, podman `load`) takes the images the tar holds, while the OCI
//! `index.json` and every digest stay as they are.

use crate::engine::Platform;
use crate::manifest::{self, Descriptor};
use crate::target::{EntryRole, Plan, Repo};
use serde::Serialize;
use std::collections::BTreeMap;

/// One image of `manifest.json`: its config and layers as paths inside the archive, and its names.
#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct Image {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// How Docker names a tag: familiar names for Docker Hub (`alpine:3`, `team/app:v1`), the full
/// name elsewhere.
fn docker_name(repo: &Repo, tag: &str) -> String {
    if repo.registry == "docker.io" {
        let path = repo.repository.strip_prefix("library/").unwrap_or(&repo.repository);
        return format!("{path}:{tag}");
    }
    format!("{}/{}:{tag}", repo.registry, repo.repository)
}

/// The image manifest a tagged root gives Docker: the root itself, or an index's child for
/// `platform`; `None` for artifacts and for images the archive does not hold whole.
fn image_of(
    plan: &Plan<'_>,
    root: &Descriptor,
    platform: &Platform,
) -> Option<(String, Vec<String>)> {
    let bytes = plan.manifests.get(&root.digest)?;
    let parsed = manifest::parse(root, bytes).ok()?;
    if !parsed.manifests.is_empty() {
        let child = parsed.manifests.iter().find(|c| platform.is_declared_by(c))?;
        return image_of(plan, child, platform);
    }
    let (config, layers) = parsed.blobs.split_first()?;
    if !manifest::IMAGE_CONFIGS.contains(&config.media_type.as_str())
        || layers.iter().any(manifest::is_foreign)
    {
        return None;
    }
    let path = |d: &Descriptor| super::blob_path(&d.digest);
    Some((path(config), layers.iter().map(path).collect()))
}

/// `manifest.json` for the tagged images of `plan` (for an index, its `platform` child), one entry
/// per image with all its tags, in a fixed order; `None` when no tag is an image Docker can load.
pub fn manifest_json(plan: &Plan<'_>, platform: &Platform) -> Option<Vec<u8>> {
    let mut images: BTreeMap<(String, Vec<String>), Vec<String>> = BTreeMap::new();
    for e in plan.entries.iter().filter(|e| e.role == EntryRole::Root) {
        let Some(tag) = &e.tag else { continue };
        let Some(image) = image_of(plan, &e.desc, platform) else { continue };
        let names = images.entry(image).or_default();
        if !e.repo.registry.is_empty() {
            names.push(docker_name(&e.repo, tag));
        }
    }
    if images.is_empty() {
        return None;
    }
    let list: Vec<Image> = images
        .into_iter()
        .map(|((config, layers), mut repo_tags)| {
            repo_tags.sort();
            repo_tags.dedup();
            Image { config, repo_tags, layers }
        })
        .collect();
    let mut out = serde_json::to_vec(&list).ok()?;
    out.push(b'\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::target::{PlanContent, PlanEntry};
    use bytes::Bytes;
    use std::collections::HashMap;

    fn stored(m: &mut HashMap<Digest, Bytes>, media_type: &str, json: String) -> Descriptor {
        let b = Bytes::from(json);
        let d = Descriptor::new(media_type, Digest::of(&b), b.len() as u64);
        m.insert(d.digest.clone(), b);
        d
    }

    fn image(m: &mut HashMap<Digest, Bytes>, config_type: &str, layer: &str) -> Descriptor {
        let (c, l) = (Digest::of(b"config"), Digest::of(layer.as_bytes()));
        stored(
            m,
            manifest::OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"{config_type}","digest":"{c}","size":6}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{l}","size":5}}]}}"#
            ),
        )
    }

    #[test]
    fn images_are_listed_with_all_their_tags_indexes_by_platform_and_artifacts_left_out() {
        let mut m = HashMap::new();
        let app = image(&mut m, manifest::IMAGE_CONFIGS[0], "layer-app");
        let arm = image(&mut m, manifest::IMAGE_CONFIGS[1], "layer-arm");
        let chart = image(&mut m, "application/vnd.cncf.helm.config.v1+json", "chart");
        let idx = stored(
            &mut m,
            manifest::OCI_INDEX,
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
                manifest::OCI_MANIFEST,
                arm.digest,
                arm.size
            ),
        );
        let repo = Repo::new("reg.io", "team/app");
        let hub = Repo::new("docker.io", "library/alpine");
        let entry = |repo: &Repo, desc: &Descriptor, tag: &str| PlanEntry {
            repo: repo.clone(),
            desc: desc.clone(),
            tag: Some(tag.into()),
            role: EntryRole::Root,
        };
        let entries = [
            entry(&repo, &app, "v1"),
            entry(&repo, &app, "latest"),
            entry(&hub, &idx, "3"),
            entry(&repo, &chart, "chart"),
        ];
        let contents: Vec<PlanContent<'_>> = Vec::new();
        let plan = Plan { contents: &contents, entries: &entries, manifests: &m };
        let amd64: Platform = "linux/amd64".parse().expect("platform");
        let json: serde_json::Value =
            serde_json::from_slice(&manifest_json(&plan, &amd64).expect("some")).expect("json");
        let list = json.as_array().expect("list");
        assert_eq!(
            list.len(),
            1,
            "the index has no amd64 child and the chart is an artifact: {json}"
        );
        assert_eq!(
            list[0]["RepoTags"],
            serde_json::json!(["reg.io/team/app:latest", "reg.io/team/app:v1"])
        );
        assert_eq!(list[0]["Layers"][0], super::super::blob_path(&Digest::of(b"layer-app")));
        let arm64: Platform = "linux/arm64".parse().expect("platform");
        let json: serde_json::Value =
            serde_json::from_slice(&manifest_json(&plan, &arm64).expect("some")).expect("json");
        assert!(
            json.as_array()
                .expect("list")
                .iter()
                .any(|i| i["RepoTags"] == serde_json::json!(["alpine:3"])),
            "{json}"
        );
        let none = Plan { contents: &contents, entries: &entries[3..], manifests: &m };
        assert!(manifest_json(&none, &amd64).is_none());
    }
}
