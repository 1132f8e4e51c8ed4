//! `backup --base`: an incremental backup holds only what its base chain does not, records its base
//! (index.json digest and location), and restores digest-identically with it, found where it was
//! recorded or given with a second `--input`.

use crate::harness;

use harness::client::sha256_digest;
use harness::fixtures::{self, Builder, RepoFixture, SIGNATURE_TYPE};
use harness::layout::Layout;
use harness::{assert_repo_matches, backup, oras, restore, s, tempdir, Client, Registry};

/// The blob files of a backup (`blobs/sha256/<hex>`).
fn blob_files(layout: &Layout) -> Vec<&String> {
    layout.files.keys().filter(|k| k.starts_with("blobs/")).collect()
}

/// `team/app` with every kind of content, then a new image `v9` with a signature, and `latest`
/// moved to it: what a day of pushes changes.
fn a_day_later(c: &Client, before: &RepoFixture) -> RepoFixture {
    let mut b = Builder::new(c, "team/app");
    b.fx = before.clone();
    let layer = b.blob(fixtures::OCI_LAYER_GZIP, &fixtures::pseudo_random("day-two", 4096));
    let v9 = b.oci_image_with_layers(Some("v9"), "app-v9", "amd64", &[layer]);
    b.referrer(&v9, SIGNATURE_TYPE, b"signature-of-v9", "sig v9");
    b.tag("latest", &v9);
    b.finish()
}

#[test]
fn an_incremental_chain_holds_only_what_is_new_and_restores_digest_identically() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let day1 = fixtures::push_all_kinds(&c, "team/app");
    let repo = format!("{}/team/app", src.host());
    let dir = tempdir();
    let full = dir.path().join("full.tar");
    backup(&["--include-referrers", "-o", s(&full), &repo]).ok();
    let full_layout = Layout::read(&full);

    let day2 = a_day_later(&c, &day1);
    let inc = dir.path().join("inc.tar");
    let run = backup(&["--include-referrers", "--base", s(&full), "-o", s(&inc), &repo]);
    assert!(run.ok().stdout_str().contains("already in the base"), "{}", run.stdout_str());
    let inc_layout = Layout::read(&inc);
    let index = inc_layout.index();
    assert_eq!(
        index["annotations"]["vnd.oras-backup.base.index-digest"],
        sha256_digest(&full_layout.files["index.json"]),
        "the base is identified by its index.json"
    );
    assert_eq!(index["annotations"]["vnd.oras-backup.base.location"], "full.tar");
    assert!(!inc_layout.files.contains_key("manifest.json"), "docker load cannot take a part");
    // Only what the day added.
    for f in blob_files(&inc_layout) {
        assert!(!full_layout.files.contains_key(f), "{f} is in the base already");
    }
    let v9 = &day2.tags["v9"];
    assert!(inc_layout.blob(v9).is_some());
    // The signature's empty config `{}` is one the base's referrers have already.
    assert_eq!(
        blob_files(&inc_layout).len(),
        5,
        "v9, its config and layer, a signature and its payload"
    );
    assert_eq!(inc_layout.ref_names().len(), day2.tags.len(), "every tag is listed");

    // Nothing changed since: a few KiB, into a directory this time.
    let quiet = dir.path().join("quiet");
    backup(&["--include-referrers", "--base", s(&inc), "-o", s(&quiet), &repo]).ok();
    let quiet_layout = Layout::read(&quiet);
    assert!(blob_files(&quiet_layout).is_empty(), "{:?}", blob_files(&quiet_layout));
    let bytes: usize = quiet_layout.files.values().map(Vec::len).sum();
    assert!(bytes < 16 * 1024, "an unchanged day is {bytes} bytes");

    // The last of the chain alone: its bases are found where it recorded them.
    let run = oras(&["verify", s(&quiet)]);
    assert!(run.ok().stdout_str().contains("with its base(s)"), "{}", run.stdout_str());
    let dst = Registry::start();
    let run = restore(&["--input", s(&quiet), &dst.host()]);
    assert!(
        run.ok().stdout_str().contains("with the base(s) it builds on"),
        "{}",
        run.stdout_str()
    );
    let d = Client::new(&dst.host());
    assert_repo_matches(&d, "team/app", &day2, true);

    // A base that moved is given beside it; one that is missing, or another backup, is refused.
    let moved = dir.path().join("elsewhere");
    std::fs::create_dir_all(&moved).expect("dir");
    std::fs::rename(&full, moved.join("kept.tar")).expect("move");
    let target = format!("{}/again/app", dst.host());
    restore(&["--input", s(&inc), &target])
        .fails(1, &["incremental backup", "full.tar", "--input"]);
    restore(&["--input", s(&inc), "--input", s(&moved.join("kept.tar")), &target]).ok();
    assert_repo_matches(&d, "again/app", &day2, true);
    let run = oras(&["verify", s(&inc)]);
    run.fails(1, &["failed verification"]);
    assert!(run.stdout_str().contains("not there") && run.stdout_str().contains("--base BASE"));
    oras(&["verify", s(&inc), "--base", s(&moved.join("kept.tar"))]).ok();

    backup(&["-o", s(&full), &format!("{repo}:v1")]).ok();
    restore(&["--input", s(&inc), &format!("{}/third/app", dst.host())])
        .fails(1, &["another backup", "index.json"]);
    assert!(!d.catalog().contains(&"third/app".to_string()), "nothing pushed");
}

#[test]
fn a_base_must_be_a_backup_and_the_new_backup_a_new_path() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    fixtures::push_web(&c, "team/web");
    let repo = format!("{}/team/web", src.host());
    let dir = tempdir();
    let base = dir.path().join("base");
    backup(&["-o", s(&base), &repo]).ok();
    backup(&["--base", s(&base), "-o", s(&base), &repo]).fails(2, &["new"]);
    let tar = dir.path().join("b.tar");
    backup(&["-o", s(&tar), &repo]).ok();
    backup(&["--base", s(&tar), "-o", s(&tar), &repo]).fails(2, &["--output"]);
    backup(&["--base", s(&dir.path().join("none.tar")), "-o", s(&dir.path().join("n.tar")), &repo])
        .fails(1, &["--base"]);
    assert!(!dir.path().join("n.tar").exists());

    // Two full backups given together that disagree about a tag: neither is guessed at.
    let moved = Builder::new(&c, "team/web").oci_image(Some("v1"), "moved", "arm64");
    let later = dir.path().join("later.tar");
    backup(&["-o", s(&later), &repo]).ok();
    let dst = Registry::start();
    restore(&["--input", s(&tar), "--input", s(&later), &dst.host()])
        .fails(1, &["both hold tag", "v1", &moved.digest]);
    assert!(Client::new(&dst.host()).catalog().is_empty());
}
