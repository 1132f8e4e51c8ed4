//! Archives for every tool: compressed backups (gzip, zstd) through files and pipes, and the
//! details other tools read (artifact types in `index.json`).

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
