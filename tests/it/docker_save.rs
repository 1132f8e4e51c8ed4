//! `docker save` archives from before Docker 25 (no OCI layout: `manifest.json`, configs, layer
//! tars, links between identical layers) restored, verified and listed; archives that are no
//! backup of any kind refused with one error saying what they look like.

use crate::harness;

use harness::client::sha256_digest;
use harness::{oras, restore, s, tempdir, Client, Oras, Registry};
use serde_json::json;

/// One entry of a hand-made archive.
#[derive(Clone)]
enum Item {
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

/// A `docker save` archive written by hand, entry by entry, in order.
#[derive(Clone, Default)]
struct Archive(Vec<(String, Item)>);

impl Archive {
    fn file(&mut self, name: &str, bytes: &[u8]) {
        self.0.push((name.to_string(), Item::File(bytes.to_vec())));
    }

    fn set(&mut self, name: &str, item: Item) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = item,
            None => self.0.push((name.to_string(), item)),
        }
    }

    fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, item) in &self.0 {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_mtime(0);
            match item {
                Item::File(bytes) => {
                    h.set_size(bytes.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, name, bytes.as_slice()).expect("file");
                }
                Item::Symlink(to) | Item::Hardlink(to) => {
                    h.set_entry_type(if matches!(item, Item::Symlink(_)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_size(0);
                    b.append_link(&mut h, name, to).expect("link");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.tar()).expect("write archive");
    }
}

/// An uncompressed layer tar holding one file.
fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, file, content).expect("layer file");
    b.into_inner().expect("layer tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// What the hand-made archive holds.
struct Saved {
    archive: Archive,
    config: Vec<u8>,
    /// The bytes of each layer's file, in the image's order.
    layers: Vec<Vec<u8>>,
}

/// An image as Docker before 25 saved it: layers `<id>/layer.tar` (an uncompressed one, a gzip'd
/// one, then the first again as a symbolic link and as a hard link, as Docker links identical
/// layers), the config as `<image id>.json`, `manifest.json` naming the image `app:v1` (Docker
/// Hub's familiar form) and `docker.io/library/app:v2`, and `repositories`.
fn saved_image() -> Saved {
    let plain = layer_tar("a.txt", b"hello from the first layer\n");
    let inner = layer_tar("b.txt", b"hello from the second layer\n");
    let zipped = gzip(&inner);
    let diff_ids = [
        sha256_digest(&plain),
        sha256_digest(&inner),
        sha256_digest(&plain),
        sha256_digest(&plain),
    ];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "hand"}],
    }))
    .expect("config");
    let config_name = format!("{}.json", &sha256_digest(&config)[7..]);
    let ids: Vec<String> =
        (0..4).map(|i| sha256_digest(format!("id{i}").as_bytes())[7..].to_string()).collect();
    let mut a = Archive::default();
    for id in &ids {
        a.file(&format!("{id}/VERSION"), b"1.0");
        a.file(&format!("{id}/json"), format!("{{\"id\":\"{id}\"}}").as_bytes());
    }
    a.file(&format!("{}/layer.tar", ids[0]), &plain);
    a.file(&format!("{}/layer.tar", ids[1]), &zipped);
    a.set(&format!("{}/layer.tar", ids[2]), Item::Symlink(format!("../{}/layer.tar", ids[0])));
    a.set(&format!("{}/layer.tar", ids[3]), Item::Hardlink(format!("{}/layer.tar", ids[0])));
    a.file(&config_name, &config);
    let layers: Vec<String> = ids.iter().map(|id| format!("{id}/layer.tar")).collect();
    let manifest = json!([{"Config": config_name, "RepoTags": ["app:v1", "docker.io/library/app:v2"], "Layers": layers}]);
    a.file("manifest.json", &serde_json::to_vec(&manifest).expect("json"));
    a.file("repositories", format!("{{\"app\":{{\"v1\":\"{}\"}}}}", ids[3]).as_bytes());
    Saved { archive: a, config, layers: vec![plain.clone(), zipped, plain.clone(), plain] }
}

/// The manifest this tool builds for `saved_image`: Docker schema 2, the descriptors' fields in
/// Docker's order.
fn expected_manifest(saved: &Saved) -> String {
    let desc = |t: &str, b: &[u8]| {
        format!(r#"{{"mediaType":"{t}","size":{},"digest":"{}"}}"#, b.len(), sha256_digest(b))
    };
    let (tar, gz) = (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    let layers: Vec<String> = saved
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| desc(if i == 1 { gz } else { tar }, l))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[{}]}}"#,
        desc("application/vnd.docker.container.image.v1+json", &saved.config),
        layers.join(",")
    )
}

#[test]
fn an_older_docker_save_archive_restores_with_a_built_manifest_and_its_config_and_layers_kept() {
    let saved = saved_image();
    let dir = tempdir();
    let tar = dir.path().join("saved.tar");
    saved.archive.write(&tar);
    let manifest = expected_manifest(&saved);
    let digest = sha256_digest(manifest.as_bytes());

    let dst = Registry::start();
    let run = restore(&["--input", s(&tar), &format!("{}/saved", dst.host())]);
    let out = run.ok().stdout_str();
    assert!(
        out.contains(&format!("Built manifest {digest} for tag docker.io/library/app:v1, docker.io/library/app:v2 from a docker save archive")),
        "one status line per image names the new manifest and its tags:\n{out}"
    );
    let c = Client::new(&dst.host());
    for tag in ["v1", "v2"] {
        let got = c.get_manifest("saved", tag).expect("restored");
        assert_eq!(got.digest, digest, "{tag}");
        assert_eq!(String::from_utf8_lossy(&got.bytes), manifest);
    }
    // The config is Docker's image ID, byte for byte; every layer keeps its bytes.
    assert_eq!(c.get_blob("saved", &sha256_digest(&saved.config)), Some(saved.config.clone()));
    for layer in &saved.layers {
        assert_eq!(c.get_blob("saved", &sha256_digest(layer)).as_ref(), Some(layer));
    }

    let verified = oras(&["verify", s(&tar)]);
    assert!(verified.ok().stdout_str().contains("Built manifest"), "{}", verified.stdout_str());
    assert_eq!(
        oras(&["repo", "ls", "--oci-layout", s(&tar)]).ok().stdout_str().trim(),
        "docker.io/library/app"
    );
    assert_eq!(oras(&["repo", "tags", "--oci-layout", s(&tar)]).ok().stdout_str(), "v1\nv2\n");
    let fetched = oras(&["manifest", "fetch", "--oci-layout", &format!("{}:v1", s(&tar))]);
    assert_eq!(fetched.ok().stdout_str(), manifest, "the same manifest wherever it is built");

    // Extracted into a directory (links as links), the archive reads the same.
    let extracted = dir.path().join("extracted");
    tar::Archive::new(&saved.archive.tar()[..]).unpack(&extracted).expect("unpack");
    assert!(std::fs::symlink_metadata(
        extracted.join(
            saved
                .archive
                .0
                .iter()
                .find(|(_, i)| matches!(i, Item::Symlink(_)))
                .map(|(n, _)| n.as_str())
                .unwrap_or_default()
        )
    )
    .expect("link")
    .file_type()
    .is_symlink());
    restore(&["--input", s(&extracted), &format!("{}/from-dir", dst.host())]).ok();
    assert_eq!(c.get_manifest("from-dir", "v1").map(|m| m.digest), Some(digest));

    // A stream cannot be read twice, which building manifests needs: the error says to use a file.
    Oras::new(&["restore", "--no-tty", "--input", "-", &format!("{}/piped", dst.host())])
        .stdin(&saved.archive.tar())
        .run()
        .fails(1, &["docker save", "file"]);
}

#[test]
fn damaged_and_hostile_docker_save_archives_are_refused_before_anything_is_pushed() {
    let saved = saved_image();
    let layer = |i: usize| {
        saved
            .archive
            .0
            .iter()
            .filter(|(n, _)| n.ends_with("/layer.tar"))
            .nth(i)
            .map(|(n, _)| n.clone())
            .expect("layer")
    };
    let cases: Vec<(&str, Archive, &[&str])> = vec![
        (
            "link outside",
            {
                let mut a = saved.archive.clone();
                a.set(&layer(2), Item::Symlink("../../../etc/passwd".into()));
                a
            },
            &["outside"],
        ),
        (
            "absolute link",
            {
                let mut a = saved.archive.clone();
                a.set(&layer(2), Item::Symlink("/etc/passwd".into()));
                a
            },
            &["absolute"],
        ),
        (
            "link to a link",
            {
                let mut a = saved.archive.clone();
                a.set(&layer(3), Item::Symlink(format!("../{}", layer(2))));
                a
            },
            &["itself a link"],
        ),
        (
            "link to nothing",
            {
                let mut a = saved.archive.clone();
                a.set(&layer(3), Item::Hardlink("nowhere/layer.tar".into()));
                a
            },
            &["nowhere/layer.tar"],
        ),
        (
            "swapped layer",
            {
                let mut a = saved.archive.clone();
                a.set(&layer(0), Item::File(layer_tar("a.txt", b"something else\n")));
                a
            },
            &["rootfs.diff_ids"],
        ),
        (
            "config not its name",
            {
                let mut a = saved.archive.clone();
                let name = a
                    .0
                    .iter()
                    .find(|(n, _)| n.ends_with(".json") && !n.contains('/') && n != "manifest.json")
                    .map(|(n, _)| n.clone())
                    .expect("config");
                a.set(&name, Item::File(b"{\"rootfs\":{\"diff_ids\":[]}}".to_vec()));
                a
            },
            &["does not match its name"],
        ),
        (
            "unsafe path",
            {
                let mut a = saved.archive.clone();
                a.set(
                    "manifest.json",
                    Item::File(
                        br#"[{"Config":"../x.json","RepoTags":["app:v1"],"Layers":[]}]"#.to_vec(),
                    ),
                );
                a
            },
            &["unsafe path"],
        ),
        (
            "bad name",
            {
                let mut a = saved.archive.clone();
                let mut m: serde_json::Value =
                    match &a.0.iter().find(|(n, _)| n == "manifest.json").expect("manifest").1 {
                        Item::File(b) => serde_json::from_slice(b).expect("json"),
                        _ => unreachable!(),
                    };
                m[0]["RepoTags"] = json!(["Not A Name"]);
                a.set("manifest.json", Item::File(serde_json::to_vec(&m).expect("json")));
                a
            },
            &["not a valid name:tag"],
        ),
        (
            "manifest.json too large",
            {
                let mut a = saved.archive.clone();
                a.set("manifest.json", Item::File(vec![b' '; 17 << 20]));
                a
            },
            &["manifest.json", "limit"],
        ),
    ];
    let dir = tempdir();
    let dst = Registry::start();
    let c = Client::new(&dst.host());
    let mut failures = harness::Failures::default();
    for (name, archive, words) in cases {
        let path = dir.path().join(format!("{}.tar", name.replace(' ', "-")));
        archive.write(&path);
        failures.check(
            name,
            restore(&["--input", s(&path), &format!("{}/x", dst.host())]).check_failure(1, words),
        );
        failures
            .check(&format!("{name} (verify)"), oras(&["verify", s(&path)]).check_failure(1, &[]));
    }
    failures.assert_none();
    assert!(c.catalog().is_empty(), "nothing pushed from a refused archive");
}

#[test]
fn what_is_neither_a_layout_nor_a_docker_save_archive_gets_one_error_saying_what_it_looks_like() {
    let dir = tempdir();
    let dst = Registry::start();
    let target = format!("{}/x", dst.host());
    let mut a = Archive::default();
    a.file("README.md", b"hello\n");
    a.file("src/main.rs", b"fn main() {}\n");
    let tar = dir.path().join("source.tar");
    a.write(&tar);
    restore(&["--input", s(&tar), &target])
        .fails(1, &["no index.json or manifest.json", "docker save", "README.md"]);
    let mut interrupted = Archive::default();
    interrupted.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    interrupted.file("blobs/sha256/00", b"x");
    let tar = dir.path().join("interrupted.tar");
    interrupted.write(&tar);
    oras(&["repo", "tags", "--oci-layout", s(&tar)]).fails(1, &["no index.json", "incomplete"]);
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(plain.join("docs")).expect("dir");
    oras(&["repo", "ls", "--oci-layout", s(&plain)])
        .fails(1, &["directory", "no index.json or manifest.json", "docs"]);
    Oras::new(&["restore", "--no-tty", "--input", "-", &target])
        .stdin(&a.tar())
        .run()
        .fails(1, &["no index.json or manifest.json"]);
    assert!(Client::new(&dst.host()).catalog().is_empty());
}

/// A layer blob gunzipped.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
        .expect("a gzip stream");
    out
}

#[test]
fn restore_compress_gzip_gzips_a_docker_save_archive_s_uncompressed_layers_and_keeps_the_image_id()
{
    let saved = saved_image();
    let dir = tempdir();
    let tar = dir.path().join("saved.tar");
    saved.archive.write(&tar);
    let dst = Registry::start();
    let c = Client::new(&dst.host());

    let run =
        restore(&["--compress", "gzip", "--input", s(&tar), &format!("{}/zipped", dst.host())]);
    let out = run.ok().stdout_str();
    assert!(out.contains("3 uncompressed layer(s) gzip'd"), "the status line says so:\n{out}");
    let got = c.get_manifest("zipped", "v1").expect("restored");
    assert_ne!(got.digest, sha256_digest(expected_manifest(&saved).as_bytes()));
    let manifest = got.json();
    assert_eq!(manifest["config"]["digest"], sha256_digest(&saved.config), "the image ID is kept");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 4);
    for (i, layer) in layers.iter().enumerate() {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip", "{i}");
        let digest = layer["digest"].as_str().expect("digest");
        let blob = c.get_blob("zipped", digest).expect("layer pushed");
        assert_eq!(sha256_digest(&blob), digest);
        assert_eq!(layer["size"], blob.len());
        if i == 1 {
            assert_eq!(blob, saved.layers[1], "a layer gzip'd already is kept byte for byte");
        } else {
            assert_eq!(gunzip(&blob), saved.layers[i], "layer {i} holds the same tar");
        }
    }
    // The same archive gives the same gzip'd bytes and manifest every time.
    restore(&["--compress", "gzip", "--input", s(&tar), &format!("{}/again", dst.host())]).ok();
    assert_eq!(c.get_manifest("again", "v2").map(|m| m.digest), Some(got.digest.clone()));

    // zstd layers are something a Docker manifest cannot describe; a layout's blobs never change.
    restore(&["--compress", "zstd", "--input", s(&tar), &format!("{}/z", dst.host())])
        .fails(2, &["--compress gzip"]);
    let layout = dir.path().join("layout");
    oras(&["backup", "--no-tty", "-o", s(&layout), &format!("{}/zipped:v1", dst.host())]).ok();
    restore(&["--compress", "gzip", "--input", s(&layout), &format!("{}/l", dst.host())])
        .fails(2, &["OCI image layout", "leave --compress out"]);
    assert!(c.get_manifest("z", "v1").is_none() && c.get_manifest("l", "v1").is_none());
}
