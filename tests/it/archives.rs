//! Archives for every tool: compressed backups (gzip, zstd) through files and pipes, the details
//! other tools read (artifact types in `index.json`, Docker's `manifest.json`), and the tools
//! themselves: skopeo, umoci and podman read our archives and write archives we restore
//! (docs/format.md's table).

use crate::harness;

use harness::fixtures::{self, RepoFixture};
use harness::layout::{Layout, REF_NAME};
use harness::{assert_repo_matches, backup, oras, restore, s, tempdir, Client, Oras, Registry};

fn source() -> (Registry, Client, RepoFixture) {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    (reg, c, fx)
}

#[test]
fn gzip_and_zstd_archives_verify_restore_and_list_digest_for_digest() {
    let (src, _c, fx) = source();
    let dir = tempdir();
    let repo = format!("{}/team/app", src.host());
    for (name, magic) in
        [("b.tar.gz", &[0x1f, 0x8b][..]), ("b.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd][..])]
    {
        let out = dir.path().join(name);
        backup(&["--include-referrers", "-o", s(&out), &repo]).ok();
        let bytes = std::fs::read(&out).expect("archive");
        assert!(bytes.starts_with(magic), "{name} is compressed");
        oras(&["verify", s(&out)]).ok();
        let tags = oras(&["repo", "tags", "--oci-layout", s(&out)]);
        assert!(tags.ok().stdout_str().lines().any(|t| t == "v1"), "{}", tags.stdout_str());
        let dst = Registry::start();
        restore(&["--input", s(&out), &format!("{}/copy", dst.host())]).ok();
        assert_repo_matches(&Client::new(&dst.host()), "copy", &fx, true);
        // The name does not decide: a compressed archive under any name is recognised.
        let renamed = dir.path().join(format!("{name}.bin"));
        std::fs::copy(&out, &renamed).expect("copy");
        oras(&["verify", s(&renamed)]).ok();
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
}

#[test]
fn a_compressed_stream_goes_through_a_pipe_and_the_archive_inside_is_the_uncompressed_one() {
    let (src, _c, fx) = source();
    let dir = tempdir();
    let repo = format!("{}/team/app", src.host());
    let piped = backup(&["--include-referrers", "--compress", "zstd", "-o", "-", &repo]);
    let stream = piped.ok().stdout.clone();
    assert!(stream.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "a zstd stream on stdout");
    let dst = Registry::start();
    Oras::new(&["restore", "--no-tty", "--input", "-", &format!("{}/piped", dst.host())])
        .stdin(&stream)
        .run()
        .ok();
    assert_repo_matches(&Client::new(&dst.host()), "piped", &fx, true);

    // The same content as a plain .tar: the compressed stream holds exactly that tar.
    let tar = dir.path().join("plain.tar");
    backup(&["--include-referrers", "-o", s(&tar), &repo]).ok();
    let gz = dir.path().join("plain.tar.gz");
    backup(&["--include-referrers", "-o", s(&gz), &repo]).ok();
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).expect("open")),
        &mut unpacked,
    )
    .expect("gunzip");
    assert_eq!(
        unpacked,
        std::fs::read(&tar).expect("tar"),
        "the archive inside is the reproducible tar"
    );
}

#[test]
fn compression_flags_that_disagree_and_damaged_streams_are_refused_cleanly() {
    let (src, _c, _fx) = source();
    let dir = tempdir();
    let repo = format!("{}/team/app:v1", src.host());
    backup(&["--compress", "zstd", "-o", s(&dir.path().join("x.tar.gz")), &repo])
        .fails(2, &["gzip", "zstd"]);
    backup(&["--compress", "gzip", "-o", s(&dir.path().join("adir")), &repo])
        .fails(2, &["--compress"]);
    let out = dir.path().join("b.tar.gz");
    backup(&["-o", s(&out), &repo]).ok();
    let mut bytes = std::fs::read(&out).expect("archive");
    bytes.truncate(bytes.len() / 2);
    let cut = dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes).expect("write");
    let dst = Registry::start();
    restore(&["--input", s(&cut), &format!("{}/cut", dst.host())]).fails(1, &["cut.tar.gz"]);
    assert!(Client::new(&dst.host()).catalog().is_empty(), "nothing pushed from a damaged archive");
}

#[test]
fn tagged_artifacts_carry_their_artifact_type_in_index_json_and_images_do_not() {
    let (src, _c, _fx) = source();
    let dir = tempdir();
    let out = dir.path().join("kinds.tar");
    backup(&["-o", s(&out), &format!("{}/team/app", src.host())]).ok();
    let layout = Layout::read(&out);
    let type_of = |tag: &str| {
        let e = layout
            .entries()
            .into_iter()
            .find(|e| e["annotations"][REF_NAME] == tag)
            .unwrap_or_else(|| panic!("no {tag}"));
        e["artifactType"].as_str().map(str::to_string)
    };
    assert!(type_of("artifact").is_some(), "an artifact names its type");
    assert_eq!(
        type_of("chart").as_deref(),
        Some("application/vnd.cncf.helm.config.v1+json"),
        "a Helm chart by its config"
    );
    assert_eq!(type_of("v1"), None, "an image is not an artifact");
    assert_eq!(type_of("v3"), None, "nor is a Docker image");
}

/// skopeo, which `scripts/test.sh` installs: an independent reader of Docker and OCI archives.
fn skopeo(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("skopeo").args(args).output();
    out.unwrap_or_else(|e| {
        panic!("skopeo cannot run ({e}): run scripts/test.sh, which installs it")
    })
}

/// Pushes a real image (a gzip'd layer tar whose digest the config records) as `real:v1`: what
/// a Docker-archive reader unpacks to check.
fn push_real_image(c: &Client) -> String {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    layer.append_data(&mut h, "hello.txt", &b"hello\n"[..]).expect("file");
    let layer = layer.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &layer).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [harness::client::sha256_digest(&layer)]}, "config": {}});
    let config = serde_json::to_vec(&config).expect("json");
    let (cd, ld) = (c.push_blob("real", &config), c.push_blob("real", &gz));
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": gz.len()}]});
    let bytes = serde_json::to_vec(&manifest).expect("json");
    c.push_manifest("real", "v1", "application/vnd.oci.image.manifest.v1+json", &bytes);
    cd
}

#[test]
fn a_tar_backup_is_a_docker_archive_too_with_every_digest_unchanged() {
    let (src, c, fx) = source();
    let config_digest = push_real_image(&c);
    let dir = tempdir();
    let out = dir.path().join("docker.tar");
    let repo = format!("{}/team/app", src.host());
    backup(&["--include-referrers", "-o", s(&out), &repo]).ok();
    let layout = Layout::read(&out);
    let manifest_json: serde_json::Value =
        serde_json::from_slice(layout.files.get("manifest.json").expect("manifest.json"))
            .expect("json");
    let images = manifest_json.as_array().expect("a list");
    let tagged: Vec<&str> = images
        .iter()
        .flat_map(|i| i["RepoTags"].as_array().into_iter().flatten())
        .filter_map(|t| t.as_str())
        .collect();
    for tag in ["v1", "v2", "v3", "latest", "v4"] {
        assert!(
            tagged.contains(&format!("{repo}:{tag}").as_str()),
            "{tag} loads into Docker: {manifest_json}"
        );
    }
    assert!(
        !tagged.iter().any(|t| t.ends_with(":chart") || t.ends_with(":artifact")),
        "artifacts are not images: {manifest_json}"
    );
    // skopeo reads a real image of it as a Docker archive: the config Docker loads is the
    // registry's, byte for byte (the fixture images' layers are not real tars).
    let real = dir.path().join("real.tar");
    let real_ref = format!("{}/real:v1", src.host());
    backup(&["-o", s(&real), &real_ref]).ok();
    let inspected = skopeo(&[
        "inspect",
        "--raw",
        "--config",
        &format!("docker-archive:{}:{real_ref}", s(&real)),
    ]);
    assert!(inspected.status.success(), "skopeo: {}", String::from_utf8_lossy(&inspected.stderr));
    assert_eq!(inspected.stdout, c.get_blob("real", &config_digest).expect("config blob"));
    // And as an OCI archive, by the tag's ref name: the manifest is the registry's.
    let oci = skopeo(&["inspect", "--raw", &format!("oci-archive:{}:v1", s(&out))]);
    assert!(oci.status.success(), "skopeo: {}", String::from_utf8_lossy(&oci.stderr));
    assert_eq!(oci.stdout, c.get_manifest("team/app", "v1").expect("v1").bytes);
    // The OCI side is untouched: restore gives every digest back, and --no-docker-manifest leaves
    // manifest.json out.
    let dst = Registry::start();
    restore(&["--input", s(&out), &format!("{}/back", dst.host())]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "back", &fx, true);
    let plain = dir.path().join("plain.tar");
    backup(&["--no-docker-manifest", "-o", s(&plain), &repo]).ok();
    assert!(!Layout::read(&plain).files.contains_key("manifest.json"));
}

#[test]
fn a_docker_25_save_archive_restores_with_its_legacy_links_left_unread() {
    let (src, _c, fx) = source();
    let dir = tempdir();
    let ours = dir.path().join("ours.tar");
    backup(&["-o", s(&ours), &format!("{}/team/app:v1", src.host())]).ok();
    // `docker save` (Docker 25+) is an OCI layout plus its older layout, whose layer.tar files are
    // links into blobs/, and a `repositories` file.
    let layout = Layout::read(&ours);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in &layout.files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, name, data.as_slice()).expect("entry");
    }
    for (i, blob) in layout.blob_digests().iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        let hex = blob.trim_start_matches("sha256:");
        builder
            .append_link(&mut h, format!("legacy{i}/layer.tar"), format!("../blobs/sha256/{hex}"))
            .expect("link");
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    builder.append_link(&mut h, "legacy-outside/layer.tar", "/etc/passwd").expect("link");
    let repositories = br#"{"app":{"v1":"0000"}}"#;
    let mut h = tar::Header::new_ustar();
    h.set_size(repositories.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append_data(&mut h, "repositories", &repositories[..]).expect("entry");
    let saved = dir.path().join("saved.tar");
    std::fs::write(&saved, builder.into_inner().expect("tar")).expect("write");

    let dst = Registry::start();
    restore(&["--input", s(&saved), &format!("{}/saved", dst.host())]).ok();
    let d = Client::new(&dst.host());
    assert_eq!(d.get_manifest("saved", "v1").map(|f| f.digest), Some(fx.tag("v1").to_string()));
    oras(&["verify", s(&saved)]).ok();
}

/// A tool `scripts/test.sh` installs (umoci, podman), run with `args`.
fn tool(name: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(name).args(args).output();
    out.unwrap_or_else(|e| {
        panic!("{name} cannot run ({e}): run scripts/test.sh, which installs it")
    })
}

#[track_caller]
fn succeeded(what: &str, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_skopeo_docker_archive_restores_with_its_config_and_layers_unchanged() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let config = push_real_image(&c);
    let dir = tempdir();
    let saved = dir.path().join("skopeo.tar");
    let archive = format!("docker-archive:{}:reg.example/team/app:v1", s(&saved));
    let from = format!("docker://{}/real:v1", src.host());
    succeeded("skopeo copy", &skopeo(&["copy", "--src-tls-verify=false", &from, &archive]));
    // What skopeo writes: no OCI layout; layers `<diff id>.tar`, the legacy `<id>/layer.tar` names
    // as symbolic links to them, the config as `<image id>.json`.
    let mut links = Vec::new();
    let bytes = std::fs::read(&saved).expect("archive");
    for entry in tar::Archive::new(&bytes[..]).entries().expect("tar") {
        let entry = entry.expect("entry");
        let name = entry.path().expect("name").to_string_lossy().into_owned();
        assert_ne!(name, "index.json", "skopeo's docker-archive has no OCI layout");
        if entry.header().entry_type().is_symlink() {
            let to = entry.link_name().expect("target").expect("target");
            links.push((name, to.to_string_lossy().into_owned()));
        }
    }
    assert!(
        links.iter().any(|(n, t)| n.ends_with("/layer.tar") && t.starts_with("../")),
        "{links:?}"
    );

    let dst = Registry::start();
    let run = restore(&["--input", s(&saved), &format!("{}/app", dst.host())]);
    assert!(run.ok().stdout_str().contains("Built manifest"), "{}", run.stdout_str());
    let d = Client::new(&dst.host());
    let restored = d.get_manifest("app", "v1").expect("v1").json();
    assert_eq!(restored["config"]["digest"], config.as_str(), "the config is the source's");
    assert_eq!(d.get_blob("app", &config), c.get_blob("real", &config));
    // skopeo describes the same layers (it reads the archive's own manifest the same way).
    let theirs: serde_json::Value = serde_json::from_slice(
        &skopeo(&["inspect", "--raw", &format!("docker-archive:{}", s(&saved))]).stdout,
    )
    .expect("skopeo's manifest");
    for (ours, theirs) in restored["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(theirs["layers"].as_array().expect("layers"))
    {
        assert_eq!((&ours["digest"], &ours["size"]), (&theirs["digest"], &theirs["size"]));
        assert_eq!(ours["mediaType"], "application/vnd.docker.image.rootfs.diff.tar");
    }
}

#[test]
fn umoci_reads_a_directory_backup_and_a_layout_umoci_wrote_restores() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    push_real_image(&c);
    let dir = tempdir();
    let layout = dir.path().join("layout");
    backup(&["-o", s(&layout), &format!("{}/real:v1", src.host())]).ok();
    let tags = succeeded("umoci ls", &tool("umoci", &["ls", "--layout", s(&layout)]));
    assert_eq!(tags.trim(), "v1");
    let bundle = dir.path().join("bundle");
    let image = format!("{}:v1", s(&layout));
    succeeded(
        "umoci unpack",
        &tool("umoci", &["unpack", "--rootless", "--image", &image, s(&bundle)]),
    );
    assert_eq!(std::fs::read(bundle.join("rootfs/hello.txt")).expect("unpacked"), b"hello\n");

    // A layout umoci made (a new image and a layer of its own) restores.
    let theirs = dir.path().join("umoci");
    let image = |tag: &str| format!("{}:{tag}", s(&theirs));
    succeeded("umoci init", &tool("umoci", &["init", "--layout", s(&theirs)]));
    succeeded("umoci new", &tool("umoci", &["new", "--image", &image("base")]));
    let b2 = dir.path().join("bundle2");
    succeeded(
        "umoci unpack",
        &tool("umoci", &["unpack", "--rootless", "--image", &image("base"), s(&b2)]),
    );
    std::fs::write(b2.join("rootfs/made-by-umoci"), b"hi\n").expect("write");
    succeeded("umoci repack", &tool("umoci", &["repack", "--image", &image("v1"), s(&b2)]));
    oras(&["verify", s(&theirs)]).ok();
    let dst = Registry::start();
    restore(&["--input", s(&theirs), &format!("{}/from-umoci", dst.host())]).ok();
    let mut restored = Client::new(&dst.host()).user_tags("from-umoci");
    restored.sort();
    assert_eq!(restored, ["base", "v1"]);
}

/// podman with its storage (vfs) and run state in `dir`, never the machine's.
fn podman(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let (root, run) = (dir.join("storage"), dir.join("run"));
    let mut all = vec!["--root", s(&root), "--runroot", s(&run), "--storage-driver", "vfs"];
    all.extend_from_slice(args);
    tool("podman", &all)
}

#[test]
#[ignore = "needs root (podman's image storage): scripts/test.sh runs it as root, installing podman if missing"]
fn podman_loads_and_pulls_tar_backups_and_its_saves_restore() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let config = push_real_image(&c);
    let v1 = c.get_manifest("real", "v1").expect("v1");
    c.push_manifest("real", "v2", &v1.media_type, &v1.bytes);
    let dir = tempdir();
    let repo = format!("{}/real", src.host());
    let (both, bare) = (dir.path().join("both.tar"), dir.path().join("bare.tar"));
    backup(&["-o", s(&both), &repo]).ok();
    backup(&["--no-docker-manifest", "-o", s(&bare), &repo]).ok();

    // `podman load` takes every tag of a backup through its manifest.json...
    succeeded("podman load", &podman(dir.path(), &["load", "-i", s(&both)]));
    let listed = podman(dir.path(), &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let listed = succeeded("podman images", &listed);
    for tag in ["v1", "v2"] {
        let want = format!("{repo}:{tag} {}", &config[7..19]);
        assert!(listed.lines().any(|l| l == want), "{want} in:\n{listed}");
    }
    // ...refuses an OCI layout of several images without one...
    let refused = podman(dir.path(), &["load", "-i", s(&bare)]);
    assert!(!refused.status.success(), "podman load of several OCI images");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("more than one image"));
    // ...and pulls one of them by its ref name.
    let pulled = podman(dir.path(), &["pull", &format!("oci-archive:{}:v2", s(&bare))]);
    assert_eq!(succeeded("podman pull", &pulled).trim(), &config[7..]);

    // podman's saves restore: its docker-archive (no OCI layout) and its oci-archive.
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    for (format, name) in [("docker-archive", "saved-docker"), ("oci-archive", "saved-oci")] {
        let out = dir.path().join(format!("{name}.tar"));
        let save = ["save", "--format", format, "-o", s(&out), &format!("{repo}:v1")];
        succeeded("podman save", &podman(dir.path(), &save));
        restore(&["--input", s(&out), &format!("{}/{name}", dst.host())]).ok();
        let got = d.get_manifest(name, "v1").expect("restored").json();
        assert_eq!(got["config"]["digest"], config.as_str(), "{format}: the image ID is kept");
    }
}
