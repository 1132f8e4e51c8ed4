//! Bad input: every case exits non-zero (usage errors 2, others 1) with exactly one error
//! line naming the problem, no panic, and nothing complete-looking left behind.

use crate::harness;

use harness::client::sha256_digest;
use harness::fixtures;
use harness::layout::Layout;
use harness::registry::free_port;
use harness::{backup, looks_complete, restore, s, tempdir, Client, Oras, Registry};

/// A registry holding one signed image in `team/app`, and a directory backup of it.
fn source_and_backup_dir(
) -> (Registry, fixtures::RepoFixture, tempfile::TempDir, std::path::PathBuf) {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_signed_image(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("app");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", reg.host())]).ok();
    (reg, fx, dir, out)
}

/// The first layer blob of `v1`.
fn first_layer(fx: &fixtures::RepoFixture) -> String {
    fx.manifests[fx.tag("v1")].json()["layers"][0]["digest"].as_str().unwrap().to_string()
}

fn blob_path(layout: &std::path::Path, digest: &str) -> std::path::PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

#[track_caller]
fn assert_registry_empty(reg: &Registry) {
    let c = Client::new(&reg.host());
    let repos = c.catalog();
    for r in &repos {
        assert!(c.list_tags(r).is_empty(), "tags pushed into {r}: {:?}", c.list_tags(r));
    }
    assert!(repos.is_empty(), "something was pushed: {repos:?}");
}

#[test]
fn backup_without_output_is_a_usage_error() {
    backup(&["127.0.0.1:1/team/app"]).fails(2, &["--output"]);
}

#[test]
fn backup_with_empty_output_is_a_usage_error() {
    let dir = tempdir();
    let run = harness::oras(&["backup", "--no-tty", "--output", "", "127.0.0.1:1/team/app"]);
    run.fails(2, &["output"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A usage error on a pseudo-terminal: exit 2, and `error` shown on the terminal.
#[track_caller]
fn refused_on_a_terminal(args: &[&str], error: &str) {
    let run = Oras::new(args).on_a_terminal().run();
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stdout_str().contains(error), "{}", run.describe());
}

#[test]
fn archive_streams_are_refused_on_a_terminal() {
    refused_on_a_terminal(
        &["backup", "-o", "-", "127.0.0.1:1/team/app"],
        "Error: -o - writes a tar archive to standard output, which is a terminal",
    );
    refused_on_a_terminal(
        &["restore", "--input", "-", "127.0.0.1:1"],
        "Error: --input - reads a tar stream from standard input, which is a terminal",
    );
}

#[test]
fn restore_without_input_is_a_usage_error() {
    restore(&["127.0.0.1:1"]).fails(2, &["--input"]);
}

#[test]
fn invalid_reference_upper_case() {
    let dir = tempdir();
    let out = dir.path().join("x.tar");
    backup(&["-o", s(&out), "UPPER/Case"]).fails(2, &["UPPER/Case"]);
    assert!(!out.exists());
}

#[test]
fn invalid_reference_bad_tag() {
    let dir = tempdir();
    let out = dir.path().join("x.tar");
    backup(&["-o", s(&out), "reg/repo:bad tag!"]).fails(2, &["bad tag!"]);
    assert!(!out.exists());
}

#[test]
fn invalid_restore_target() {
    let (_reg, _fx, _dir, out) = source_and_backup_dir();
    restore(&["--input", s(&out), "127.0.0.1:1/UPPER/Case"]).fails(2, &["UPPER/Case"]);
}

#[test]
fn unknown_tag_is_named() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_signed_image(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    backup(&["-o", s(&out), &format!("{}/team/app:nosuchtag", reg.host())])
        .fails(1, &["nosuchtag"]);
    assert!(!looks_complete(&out), "a failed backup left {} behind", out.display());
    let out_dir = dir.path().join("appdir");
    backup(&["-o", s(&out_dir), &format!("{}/team/app:v1,nosuchtag", reg.host())])
        .fails(1, &["nosuchtag"]);
    assert!(!looks_complete(&out_dir), "a failed backup left {} behind", out_dir.display());
}

#[test]
fn output_tar_name_that_is_an_existing_directory() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_signed_image(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("some_dir.tar");
    std::fs::create_dir(&out).unwrap();
    backup(&["-o", s(&out), &format!("{}/team/app", reg.host())]).fails(1, &["some_dir.tar"]);
    assert!(out.is_dir(), "the existing directory is left alone");
    assert!(!out.join("index.json").exists());
}

#[test]
fn input_that_is_neither_layout_nor_tar() {
    let dir = tempdir();
    let input = dir.path().join("random.bin");
    let mut bytes = fixtures::pseudo_random("not a tar", 4096);
    bytes[..4].copy_from_slice(b"RAND"); // not the gzip magic either
    std::fs::write(&input, bytes).unwrap();
    let reg = Registry::start();
    restore(&["--input", s(&input), &reg.host()]).fails(1, &["random.bin"]);
    assert_registry_empty(&reg);
}

#[test]
fn input_directory_missing() {
    let dir = tempdir();
    let input = dir.path().join("no-such-backup");
    let reg = Registry::start();
    restore(&["--input", s(&input), &reg.host()]).fails(1, &["no-such-backup"]);
    assert_registry_empty(&reg);
}

#[test]
fn input_directory_that_is_not_a_layout() {
    let dir = tempdir();
    let input = dir.path().join("plain-dir");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("hello.txt"), "hi").unwrap();
    let reg = Registry::start();
    restore(&["--input", s(&input), &reg.host()]).fails(1, &["plain-dir"]);
    assert_registry_empty(&reg);
}

#[test]
fn backup_with_a_deleted_blob_fails_before_pushing() {
    let (_src, fx, _dir, out) = source_and_backup_dir();
    let layer = first_layer(&fx);
    std::fs::remove_file(blob_path(&out, &layer)).unwrap();
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).fails(1, &[layer.strip_prefix("sha256:").unwrap()]);
    assert_registry_empty(&dst);
}

#[test]
fn tar_backup_with_a_missing_blob_fails_before_pushing() {
    let (_src, fx, dir, out) = source_and_backup_dir();
    let layer = first_layer(&fx);
    // Rewrite the backup as a tar without that blob.
    let layout = Layout::read(&out);
    let tar_path = dir.path().join("broken.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    let skip = format!("blobs/sha256/{}", layer.strip_prefix("sha256:").unwrap());
    for (name, data) in &layout.files {
        if *name == skip {
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, name, &data[..]).unwrap();
    }
    builder.finish().unwrap();
    drop(builder);
    let dst = Registry::start();
    restore(&["--input", s(&tar_path), &dst.host()])
        .fails(1, &[layer.strip_prefix("sha256:").unwrap()]);
    assert_registry_empty(&dst);
}

#[test]
fn backup_with_a_corrupt_blob_fails() {
    let (_src, fx, _dir, out) = source_and_backup_dir();
    let layer = first_layer(&fx);
    let path = blob_path(&out, &layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert_ne!(sha256_digest(&bytes), layer);
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).fails(1, &[layer.strip_prefix("sha256:").unwrap()]);
    let d = Client::new(&dst.host());
    assert!(d.user_tags("team/app").is_empty(), "a tag whose graph is corrupt was pushed");
    assert!(!d.blob_exists("team/app", &layer));
}

#[test]
fn backup_of_a_repository_with_no_tags() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let mut b = fixtures::Builder::new(&c, "empty/repo");
    b.oci_image(None, "untagged", "amd64");
    let dir = tempdir();
    let out = dir.path().join("empty.tar");
    backup(&["-o", s(&out), &format!("{}/empty/repo", reg.host())]).fails(1, &["empty/repo"]);
    assert!(!looks_complete(&out));
}

#[test]
fn backup_of_a_repository_that_does_not_exist() {
    let reg = Registry::start();
    let dir = tempdir();
    let out = dir.path().join("none");
    backup(&["-o", s(&out), &format!("{}/does/not-exist", reg.host())])
        .fails(1, &["does/not-exist"]);
    assert!(!looks_complete(&out));
}

#[test]
fn unreachable_registry_on_backup() {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let dir = tempdir();
    let out = dir.path().join("out.tar");
    backup(&["-o", s(&out), &format!("{host}/team/app")]).fails(1, &[&host]);
    assert!(!looks_complete(&out), "a failed backup left {} behind", out.display());
    let out_dir = dir.path().join("outdir");
    backup(&["-o", s(&out_dir), &format!("{host}/team/app")]).fails(1, &[&host]);
    assert!(!looks_complete(&out_dir));
}

#[test]
fn unreachable_registry_on_restore() {
    let (_src, _fx, _dir, out) = source_and_backup_dir();
    let host = format!("127.0.0.1:{}", free_port());
    restore(&["--input", s(&out), &host]).fails(1, &[&host]);
}

#[test]
fn failing_second_repository_leaves_no_backup() {
    // One good repository and one unknown tag: the whole backup fails, nothing is left.
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_signed_image(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("two.tar");
    backup(&[
        "-o",
        s(&out),
        &format!("{}/team/app", reg.host()),
        &format!("{}/team/app2:missing", reg.host()),
    ])
    .fails(1, &["team/app2"]);
    assert!(!looks_complete(&out));
}

#[test]
fn verify_reports_a_deleted_blob() {
    let (_src, fx, _dir, out) = source_and_backup_dir();
    let layer = first_layer(&fx);
    std::fs::remove_file(blob_path(&out, &layer)).unwrap();
    let run = harness::oras(&["verify", s(&out)]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.output().contains(layer.strip_prefix("sha256:").unwrap()), "{run:?}");
    assert!(!run.stderr.contains("panicked"));
}

/// A tar whose layout is valid plus one extra entry with a raw (unchecked) name or type.
fn tar_with_raw_entry(
    path: &std::path::Path,
    name: &str,
    entry_type: tar::EntryType,
    link: Option<&str>,
) {
    let mut b = harness::layout::LayoutBuilder::default();
    let (m, _) = b.add_image("evil");
    b.add_entry(&m, &[(harness::layout::REF_NAME, "v1")]);
    let good = path.with_extension("good.tar");
    b.write_tar(
        &good,
        &harness::layout::TarStyle { index_first: true, dir_entries: false, dot_slash: false },
    );
    let layout = Layout::read(&good);
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    // The raw entry first, so that a reader meets it before anything else.
    let mut h = tar::Header::new_ustar();
    {
        let ustar = h.as_ustar_mut().unwrap();
        ustar.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_mode(0o644);
    h.set_entry_type(entry_type);
    let data: &[u8] = if link.is_some() { b"" } else { b"evil\n" };
    h.set_size(data.len() as u64);
    if let Some(target) = link {
        let ustar = h.as_ustar_mut().unwrap();
        ustar.linkname[..target.len()].copy_from_slice(target.as_bytes());
    }
    h.set_cksum();
    builder.append(&h, data).unwrap();
    for (n, d) in &layout.files {
        let mut h = tar::Header::new_ustar();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, n, &d[..]).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn tar_with_a_parent_directory_entry_is_refused() {
    let dir = tempdir();
    let tar = dir.path().join("sub").join("evil.tar");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    tar_with_raw_entry(&tar, "../evil.txt", tar::EntryType::Regular, None);
    let reg = Registry::start();
    restore(&["--input", s(&tar), &format!("{}/some/repo", reg.host())]).fails(1, &["evil.txt"]);
    assert!(!dir.path().join("evil.txt").exists(), "an entry was written outside the layout");
    assert_registry_empty(&reg);
}

#[test]
fn tar_with_an_absolute_entry_is_refused() {
    let dir = tempdir();
    let tar = dir.path().join("abs.tar");
    tar_with_raw_entry(&tar, "/tmp/oras-e2e-absolute-evil.txt", tar::EntryType::Regular, None);
    let reg = Registry::start();
    restore(&["--input", s(&tar), &format!("{}/some/repo", reg.host())])
        .fails(1, &["oras-e2e-absolute-evil.txt"]);
    assert_registry_empty(&reg);
}

#[test]
fn tar_with_a_symlink_entry_is_refused() {
    let dir = tempdir();
    let tar = dir.path().join("link.tar");
    tar_with_raw_entry(
        &tar,
        "blobs/sha256/evil-link",
        tar::EntryType::Symlink,
        Some("/etc/passwd"),
    );
    let reg = Registry::start();
    restore(&["--input", s(&tar), &format!("{}/some/repo", reg.host())]).fails(1, &["evil-link"]);
    assert_registry_empty(&reg);
}

#[test]
fn restore_of_a_tag_the_backup_does_not_hold() {
    let (_src, _fx, _dir, out) = source_and_backup_dir();
    let dst = Registry::start();
    restore(&["--input", s(&out), &format!("{}/team/app:nosuchtag", dst.host())])
        .fails(1, &["nosuchtag"]);
    assert_registry_empty(&dst);
}
