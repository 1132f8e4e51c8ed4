//! End-to-end backup and restore between real Distribution 2.8 registries, through tar
//! archives, directories and stdin/stdout, plus layouts written by other tools.

use crate::harness;

use harness::client::{sha256_digest, tag_schema_tag};
use harness::fake_referrers::FakeRegistry;
use harness::fixtures::{self, Builder, RepoFixture};
use harness::layout::{Layout, LayoutBuilder, TarStyle, CONTAINERD_NAME, REF_NAME};
use harness::{
    assert_layout_holds, assert_repo_matches, backup, oras, restore, s, tempdir, Client, Oras,
    Registry,
};
use std::io::Read;

/// A source registry holding every fixture kind in `team/app`.
fn source_with_all_kinds() -> (Registry, Client, RepoFixture) {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    (reg, c, fx)
}

/// [`source_with_all_kinds`] backed up with its referrers into `name` in a fresh directory (kept
/// alive by the returned handle).
fn backed_up(name: &str) -> (Registry, Client, RepoFixture, tempfile::TempDir, std::path::PathBuf) {
    let (src, c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join(name);
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", src.host())]).ok();
    (src, c, fx, dir, out)
}

fn round_trip(output_name: &str) {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join(output_name);
    let repo = format!("{}/team/app", src.host());
    let run = backup(&["--include-referrers", "-o", s(&out), &repo]);
    run.ok();
    let stdout = run.stdout_str();
    assert!(stdout.contains("Found 8 tag(s) in"), "status line 'Found N tag(s)': {stdout}");
    assert!(
        stdout.contains(&format!("Pulled {repo}:v1 with 3 referrer(s)")),
        "status line 'Pulled <repo>:<tag>': {stdout}"
    );
    assert!(
        stdout.contains("Successfully backed up 8 tag(s) from 1 repository(ies)"),
        "summary line: {stdout}"
    );
    if output_name.ends_with(".tar") {
        assert!(out.is_file(), "a .tar output is a file");
    } else {
        assert!(out.is_dir(), "an output without extension is a directory");
    }

    let layout = Layout::read(&out);
    assert_layout_holds(&layout, &[(&repo, &fx)], true);
    // Exactly one entry per tag and one per referrer manifest.
    assert_eq!(
        layout.entries().len(),
        fx.tags.len() + fx.referrer_manifests().len(),
        "index.json entries: {:#?}",
        layout.entries()
    );
    let names = layout.ref_names();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "tag entries are sorted");

    let dst = Registry::start();
    let run = restore(&["--input", s(&out), &dst.host()]);
    run.ok();
    let stdout = run.stdout_str();
    // The size it announces is the whole backup's: the archive file, or every blob a directory holds.
    let on_disk = if out.is_file() {
        std::fs::metadata(&out).unwrap().len()
    } else {
        std::fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let loaded = stdout
        .lines()
        .find(|l| l.starts_with("Loaded backup"))
        .unwrap_or_else(|| panic!("no 'Loaded backup' line: {stdout}"));
    let shown = human_bytes(
        loaded
            .rsplit_once('(')
            .and_then(|(_, r)| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{loaded}")),
    );
    assert!(
        shown.abs_diff(on_disk) <= on_disk / 100 + 1,
        "{loaded}: the backup holds {on_disk} bytes"
    );
    assert!(stdout.contains("Pushed tag v1"), "status line 'Pushed tag': {stdout}");
    assert!(stdout.contains("Successfully restored 8 tag(s)"), "summary line: {stdout}");
    let d = Client::new(&dst.host());
    assert_eq!(d.catalog(), ["team/app"]);
    assert_repo_matches(&d, "team/app", &fx, true);
    // Referrers are findable through the tag schema on Distribution 2.8.
    let v1 = fx.tag("v1");
    let mut found = d.tag_schema_referrers("team/app", v1);
    found.sort();
    let mut want: Vec<String> = fx.referrers[v1].iter().map(|r| r.digest.clone()).collect();
    want.sort();
    assert_eq!(found, want, "tag schema index of v1 in the target");
    harness::assert_tag_schema_descriptors(&d, "team/app", &fx);
}

/// Bytes of a size as printed ("12.50 KiB", "3 B").
fn human_bytes(text: &str) -> u64 {
    let (n, unit) = text.split_once(' ').unwrap_or_else(|| panic!("not a size: {text:?}"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("not a size: {text:?}"));
    let scale = match unit {
        "B" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => panic!("unknown unit in {text:?}"),
    };
    (n * scale as f64).round() as u64
}

#[test]
fn round_trip_all_kinds_through_tar() {
    round_trip("app.tar");
}

#[test]
fn round_trip_all_kinds_through_directory() {
    round_trip("app-backup");
}

#[test]
fn tar_extension_is_case_insensitive() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_signed_image(&c, "img");
    let dir = tempdir();
    let out = dir.path().join("IMG.TAR");
    backup(&["-o", s(&out), &format!("{}/img", reg.host())]).ok();
    assert!(out.is_file(), "IMG.TAR is a tar file");
    let mut magic = [0u8; 263];
    std::fs::File::open(&out).unwrap().read_exact(&mut magic).unwrap();
    assert_eq!(&magic[257..262], b"ustar");
}

#[test]
fn multi_repository_backup_and_restore() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let app = fixtures::push_all_kinds(&c, "team/app");
    let web = fixtures::push_web(&c, "team/web");
    let dir = tempdir();
    let out = dir.path().join("all.tar");
    let app_ref = format!("{}/team/app", src.host());
    let web_ref = format!("{}/team/web", src.host());
    let run =
        backup(&["--include-referrers", "-o", s(&out), &app_ref, &format!("{web_ref}:v2,v3")]);
    run.ok();
    assert!(
        run.stdout_str().contains("Successfully backed up 10 tag(s) from 2 repository(ies)"),
        "summary: {}",
        run.stdout_str()
    );
    let web_sub = web.subset(&["v2", "v3"], &[]);
    let layout = Layout::read(&out);
    assert_layout_holds(&layout, &[(&app_ref, &app), (&web_ref, &web_sub)], true);
    let names = layout.ref_names();
    assert!(
        !names.iter().any(|n| n.ends_with("team/web:v1")),
        "web:v1 was not asked for: {names:?}"
    );
    assert_eq!(names.len(), 10, "{names:?}");
    // The shared layer is stored once.
    let shared = sha256_digest(&fixtures::pseudo_random("shared-layer", 2048));
    let hex = shared.strip_prefix("sha256:").unwrap();
    assert_eq!(
        layout.files.keys().filter(|k| k.ends_with(hex)).count(),
        1,
        "shared blob stored once"
    );

    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    let mut repos = d.catalog();
    repos.sort();
    assert_eq!(repos, ["team/app", "team/web"]);
    assert_repo_matches(&d, "team/app", &app, true);
    assert_repo_matches(&d, "team/web", &web_sub, true);

    // The shared layer is uploaded once and mounted once: the summary's parts add up to its total.
    let dst_json = Registry::start();
    let run = restore(&["--format", "json", "--input", s(&out), &dst_json.host()]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON document");
    let r = &doc["report"];
    assert!(r["blobsMounted"].as_u64().unwrap_or(0) >= 1, "the shared layer is mounted: {doc}");
    assert_eq!(
        r["bytesCopied"].as_u64().unwrap() + r["bytesSkipped"].as_u64().unwrap(),
        r["bytesTotal"].as_u64().unwrap(),
        "uploaded + present or mounted = total: {doc}"
    );

    // Restore only one repository of a multi-repository backup, named by its path: the others are
    // left out, and the output says so.
    let dst2 = Registry::start();
    let run = restore(&["--input", s(&out), &format!("{}/team/web", dst2.host())]);
    run.ok();
    assert!(
        run.stdout_str().contains(&format!("Not restored (no target names them): {app_ref}")),
        "{}",
        run.stdout_str()
    );
    let d2 = Client::new(&dst2.host());
    assert_eq!(d2.catalog(), ["team/web"], "repositories not named are not restored");
    assert_repo_matches(&d2, "team/web", &web_sub, true);

    // A target naming none of the backup's repositories is not given one of them by guess.
    let dst3 = Registry::start();
    let run = restore(&["--input", s(&out), &format!("{}/elsewhere/app", dst3.host())]);
    run.fails(2, &["names none of them"]);
    assert!(
        run.stderr.contains(&app_ref) && run.stderr.contains(&web_ref),
        "the repositories are listed: {}",
        run.stderr
    );
    assert!(Client::new(&dst3.host()).catalog().is_empty(), "nothing was pushed");

    // A bare tag that two repositories of the backup hold names neither.
    let run = harness::oras(&["discover", "--oci-layout", &format!("{}:v2", s(&out))]);
    run.fails(1, &["several repositories"]);
    assert!(
        run.stderr.contains(&format!("{app_ref}:v2"))
            && run.stderr.contains(&format!("{web_ref}:v2")),
        "{}",
        run.stderr
    );
    harness::oras(&["discover", "--oci-layout", &format!("{}:{web_ref}:v2", s(&out))]).ok();
}

#[test]
fn a_repository_named_twice_is_backed_up_once() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("twice");
    let repo = format!("{}/team/app", src.host());
    let run = backup(&[
        "-o",
        s(&out),
        &format!("{repo}:v1"),
        &format!("{repo}:v2,v1"),
        &format!("{repo}:v2"),
    ]);
    run.ok();
    let stdout = run.stdout_str();
    assert!(stdout.contains("Successfully backed up 2 tag(s) from 1 repository(ies)"), "{stdout}");
    assert_eq!(stdout.matches(&format!("Pulled {repo}:v1 ")).count(), 1, "{stdout}");
    assert_eq!(Layout::read(&out).ref_names(), ["v1", "v2"]);
    // Every tag absorbs the tags named beside it.
    let out = dir.path().join("all");
    let run = backup(&["-o", s(&out), &format!("{repo}:v1"), &repo]);
    run.ok();
    assert!(
        run.stdout_str().contains(&format!("Successfully backed up {} tag(s)", fx.tags.len())),
        "{}",
        run.stdout_str()
    );
}

#[test]
fn backup_by_digest() {
    let (src, _c, fx) = source_with_all_kinds();
    let v1 = fx.tag("v1").to_string();
    let dir = tempdir();
    let out = dir.path().join("bydigest.tar");
    let reference = format!("{}/team/app@{v1}", src.host());
    backup(&["--include-referrers", "-o", s(&out), &reference]).ok();
    let layout = Layout::read(&out);
    let root = layout
        .entries()
        .into_iter()
        .find(|e| e["digest"] == v1.as_str())
        .expect("an index.json entry for the digest");
    assert_eq!(root["annotations"][CONTAINERD_NAME], reference.as_str());
    assert!(root["annotations"][REF_NAME].is_null(), "untagged root has no ref name");
    let sub = fx.subset(&[], &[&v1]);
    assert_eq!(sub.referrer_manifests().len(), 3, "sig, sbom, sig of sbom");
    for d in sub.all_digests() {
        assert!(layout.blob(&d).is_some(), "{d} missing from the backup");
    }
    assert!(layout.blob(fx.tag("v2")).is_none(), "other tags are not part of a backup by digest");

    let dst = Registry::start();
    restore(&["--input", s(&out), &format!("{}/team/app", dst.host())]).ok();
    let d = Client::new(&dst.host());
    assert!(d.user_tags("team/app").is_empty(), "a digest restores no tag");
    assert_repo_matches(&d, "team/app", &sub, true);
}

#[test]
fn restore_with_renaming_and_tag_selection() {
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");

    let dst = Registry::start();
    let d = Client::new(&dst.host());
    restore(&["--input", s(&out), &format!("{}/renamed/app", dst.host())]).ok();
    assert_eq!(d.catalog(), ["renamed/app"]);
    assert_repo_matches(&d, "renamed/app", &fx, true);

    let dst2 = Registry::start();
    let d2 = Client::new(&dst2.host());
    restore(&["--input", s(&out), &format!("{}/renamed/app:v1", dst2.host())]).ok();
    assert_eq!(d2.user_tags("renamed/app"), ["v1"], "only the named tag");
    assert_repo_matches(&d2, "renamed/app", &fx.subset(&["v1"], &[]), true);
    assert!(!d2.manifest_exists("renamed/app", fx.tag("v2")));
}

#[test]
fn restore_several_targets_maps_by_path_then_order() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let api = fixtures::push_signed_image(&c, "kube-apiserver");
    let ctrl = fixtures::push_web(&c, "kube-controller-manager");
    let dir = tempdir();
    let out = dir.path().join("cp");
    backup(&[
        "-o",
        s(&out),
        &format!("{}/kube-apiserver", src.host()),
        &format!("{}/kube-controller-manager", src.host()),
    ])
    .ok();
    let dst = Registry::start();
    restore(&[
        &format!("{}/kube-apiserver", dst.host()),
        &format!("{}/kube-controller", dst.host()),
        "--input",
        s(&out),
    ])
    .ok();
    let d = Client::new(&dst.host());
    let mut repos = d.catalog();
    repos.sort();
    assert_eq!(repos, ["kube-apiserver", "kube-controller"]);
    assert_eq!(d.user_tags("kube-apiserver"), ["v1"]);
    assert_eq!(d.get_manifest("kube-apiserver", "v1").unwrap().digest, api.tag("v1"));
    assert_eq!(d.user_tags("kube-controller"), ["v1", "v2", "v3"]);
    assert_eq!(d.get_manifest("kube-controller", "v3").unwrap().digest, ctrl.tag("v3"));

    // More targets than repositories is an error listing the backup's repositories.
    let dst2 = Registry::start();
    let run = restore(&[
        "--input",
        s(&out),
        &format!("{}/a", dst2.host()),
        &format!("{}/b", dst2.host()),
        &format!("{}/c", dst2.host()),
    ]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("kube-apiserver"), "error lists repositories: {}", run.stderr);
    assert!(Client::new(&dst2.host()).catalog().is_empty());
}

#[test]
fn exclude_referrers() {
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");
    let dst = Registry::start();
    restore(&["--exclude-referrers", "--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    assert_repo_matches(&d, "team/app", &fx, false);
}

#[test]
fn backup_without_include_referrers_has_no_referrers() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app");
    backup(&["-o", s(&out), &format!("{}/team/app", src.host())]).ok();
    let layout = Layout::read(&out);
    assert_layout_holds(&layout, &[(&format!("{}/team/app", src.host()), &fx)], false);
    assert_eq!(layout.entries().len(), fx.tags.len());
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, false);
}

#[test]
fn dry_run_pushes_nothing() {
    let (src, _c, _fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", src.host())]).ok();
    let dst = Registry::start();
    let run = restore(&["--dry-run", "--input", s(&out), &format!("{}/dry/app", dst.host())]);
    run.ok();
    let d = Client::new(&dst.host());
    assert!(d.catalog().is_empty(), "dry run pushed something: {:?}", d.catalog());
    let output = run.output();
    for tag in ["v1", "v2", "artifact"] {
        assert!(output.contains(tag), "dry run output should mention tag {tag}:\n{output}");
    }
    assert!(output.contains("dry/app"), "dry run output names the target:\n{output}");
}

#[test]
fn tar_backups_are_reproducible() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let a = dir.path().join("a.tar");
    let b = dir.path().join("b.tar");
    let repo = format!("{}/team/app", src.host());
    backup(&["--include-referrers", "-o", s(&a), &repo]).ok();
    backup(&["--include-referrers", "--concurrency", "1", "-o", s(&b), &repo]).ok();
    let (ab, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(ab == bb, "two backups of the same content differ");

    // Reproducible headers: mode 0644, uid/gid 0, empty names, mtime 0, no directories.
    let mut archive = tar::Archive::new(&ab[..]);
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let name = e.path().unwrap().to_string_lossy().to_string();
        assert!(h.entry_type().is_file(), "{name}: only regular files");
        assert_eq!(h.mode().unwrap() & 0o7777, 0o644, "{name}: mode");
        assert_eq!(h.uid().unwrap(), 0, "{name}: uid");
        assert_eq!(h.gid().unwrap(), 0, "{name}: gid");
        assert_eq!(h.mtime().unwrap(), 0, "{name}: mtime");
        assert_eq!(h.username().unwrap().unwrap_or(""), "", "{name}: user name");
        assert_eq!(h.groupname().unwrap().unwrap_or(""), "", "{name}: group name");
        assert!(!name.starts_with('/') && !name.contains(".."), "{name}");
        names.push(name);
    }
    assert!(names.contains(&"oci-layout".to_string()));
    assert!(names.contains(&"index.json".to_string()));
    assert_eq!(
        names.iter().filter(|n| n.starts_with("blobs/sha256/")).count(),
        fx.all_digests().len(),
        "every blob and manifest exactly once"
    );
}

#[test]
fn backup_to_stdout_equals_the_tar_file() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let file = dir.path().join("app.tar");
    let repo = format!("{}/team/app", src.host());
    backup(&["--include-referrers", "-o", s(&file), &repo]).ok();
    let run = backup(&["--include-referrers", "-o", "-", &repo]);
    run.ok();
    assert!(
        run.stdout == std::fs::read(&file).unwrap(),
        "the tar stream on stdout equals the tar file ({} vs {} bytes)",
        run.stdout.len(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert_layout_holds(&Layout::from_tar(&run.stdout), &[(&repo, &fx)], true);
}

#[test]
fn restore_from_stdin() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let file = dir.path().join("app.tar");
    backup(&["--include-referrers", "-o", s(&file), &format!("{}/team/app", src.host())]).ok();
    let dst = Registry::start();
    let tar = std::fs::read(&file).unwrap();
    let run = Oras::new(&["restore", "--no-tty", "--input", "-", &dst.host()]).stdin(&tar).run();
    run.ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);
}

#[test]
fn unknown_output_extension_warns_and_writes_a_directory() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_signed_image(&c, "img");
    let dir = tempdir();
    let out = dir.path().join("backup.zip");
    let run = backup(&["-o", s(&out), &format!("{}/img", reg.host())]);
    run.ok();
    assert!(run.stderr.to_lowercase().contains("warning"), "a warning on stderr: {}", run.stderr);
    assert!(out.is_dir() && out.join("index.json").is_file(), "backup.zip is a layout directory");
    assert_layout_holds(&Layout::read(&out), &[(&format!("{}/img", reg.host()), &fx)], false);
}

#[test]
fn json_format_prints_one_document() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_signed_image(&c, "img");
    let dir = tempdir();
    let out = dir.path().join("img.tar");
    let run = backup(&["--format", "json", "-o", s(&out), &format!("{}/img", reg.host())]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", run.stdout_str()));
    assert!(doc.is_object(), "{doc}");
    let dst = Registry::start();
    let run = restore(&["--format", "json", "--input", s(&out), &dst.host()]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", run.stdout_str()));
    assert!(doc.is_object(), "{doc}");
}

#[test]
fn restoring_twice_is_idempotent() {
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    assert_repo_matches(&d, "team/app", &fx, true);
    // The tag schema is not duplicated by the second run.
    let v1 = fx.tag("v1");
    assert_eq!(d.tag_schema_referrers("team/app", v1).len(), fx.referrers[v1].len());
}

/// `[debug]` request lines of a run for manifests, as (method, reference, status).
fn manifest_requests(stderr: &str) -> Vec<(String, String, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("[debug] ")?.split_whitespace();
            let (method, url, _, status) = (w.next()?, w.next()?, w.next()?, w.next()?);
            let reference = url.split_once("/manifests/")?.1;
            Some((method.to_string(), reference.to_string(), status.to_string()))
        })
        .collect()
}

#[test]
fn a_second_restore_confirms_tags_and_puts_back_a_moved_one() {
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    // Someone points v1 elsewhere in the destination between the runs.
    let moved = Builder::new(&d, "team/app").oci_image(Some("v1"), "moved", "arm64");
    assert_ne!(moved.digest, fx.tag("v1"));
    // The tag schema named up front: no referrers API probe comes first.
    let run = restore(&[
        "--debug",
        "--distribution-spec",
        "v1.1-referrers-tag",
        "--input",
        s(&out),
        &dst.host(),
    ]);
    run.ok();
    let asked = manifest_requests(&run.stderr);
    // Each tag is asked about conditionally: the ones in place answer 304, the moved one does not.
    let confirmed: Vec<&String> =
        asked.iter().filter(|(m, _, st)| m == "HEAD" && st == "304").map(|(_, r, _)| r).collect();
    assert_eq!(confirmed.len(), fx.tags.len() - 1, "{}", run.stderr);
    assert!(!confirmed.contains(&&"v1".to_string()), "{}", run.stderr);
    // The referrers indexes are the ones the first run wrote: each is confirmed, not fetched.
    let indexes: Vec<&String> = asked
        .iter()
        .filter(|(m, r, _)| m == "GET" && r.starts_with("sha256-"))
        .map(|(_, _, st)| st)
        .collect();
    assert_eq!(indexes.len(), fx.subjects().len(), "{}", run.stderr);
    assert!(indexes.iter().all(|st| *st == "304"), "{}", run.stderr);
    // The tag list is taken once, answering both whether the repository is new and which schema tags it has.
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("[debug] GET ") && l.contains("/tags/list"))
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert_repo_matches(&d, "team/app", &fx, true);
}

#[test]
fn a_second_restore_without_the_schema_named_probes_once_and_confirms_every_index() {
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let run = restore(&["--debug", "--input", s(&out), &dst.host()]);
    run.ok();
    let probes = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("[debug] GET ") && l.contains("/referrers/"))
        .count();
    assert_eq!(probes, 1, "Distribution 2.8 has no referrers API, found once: {}", run.stderr);
    let indexes: Vec<(String, String, String)> = manifest_requests(&run.stderr)
        .into_iter()
        .filter(|(m, r, _)| m == "GET" && r.starts_with("sha256-"))
        .collect();
    assert_eq!(indexes.len(), fx.subjects().len(), "{}", run.stderr);
    assert!(
        indexes.iter().all(|(_, _, st)| st == "304"),
        "every index is the one the first run wrote: {indexes:#?}"
    );
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);
}

#[test]
fn a_restore_into_a_new_repository_writes_manifests_without_asking() {
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");
    let dst = Registry::start();
    let run = restore(&["--debug", "--input", s(&out), &dst.host()]);
    run.ok();
    // The repository has no tags: a manifest PUT costs no more than asking first.
    let asked: Vec<(String, String, String)> =
        manifest_requests(&run.stderr).into_iter().filter(|(m, _, _)| m == "HEAD").collect();
    assert!(asked.is_empty(), "no manifest asked about in a new repository: {asked:#?}");
    // Learning that it is new took one request for one tag, and nothing else lists its tags.
    let listings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("[debug] GET ") && l.contains("/tags/list"))
        .collect();
    assert_eq!(listings.len(), 1, "{listings:#?}");
    assert!(listings[0].contains("/team/app/tags/list?n=1 "), "{listings:#?}");
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);

    // With the tag schema named, the whole list it needs answers the question too.
    let dst = Registry::start();
    let run = restore(&[
        "--debug",
        "--distribution-spec",
        "v1.1-referrers-tag",
        "--input",
        s(&out),
        &dst.host(),
    ]);
    run.ok();
    let listings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("[debug] GET ") && l.contains("/tags/list"))
        .collect();
    assert_eq!(listings.len(), 1, "{listings:#?}");
    assert!(!listings[0].contains("?n=1 "), "{listings:#?}");
}

#[test]
fn a_repository_without_tags_but_with_some_blobs_gets_only_the_missing_ones() {
    // As an interrupted restore leaves it: blobs there, no tags yet.
    let (_src, _c, fx, _dir, out) = backed_up("app.tar");
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    let there: Vec<&Vec<u8>> = fx.blobs.values().take(3).collect();
    for bytes in &there {
        d.push_blob("team/app", bytes);
    }
    let run = restore(&["--format", "json", "--input", s(&out), &dst.host()]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON document");
    assert_eq!(doc["report"]["blobsSkipped"].as_u64(), Some(there.len() as u64), "{doc}");
    assert_eq!(
        doc["report"]["blobsCopied"].as_u64(),
        Some((fx.blobs.len() - there.len()) as u64),
        "{doc}"
    );
    assert_repo_matches(&d, "team/app", &fx, true);
}

#[test]
fn a_second_backup_confirms_unchanged_tags_and_follows_a_moved_one() {
    let (src, c, fx, _dir, out) = backed_up("app");
    let repo = format!("{}/team/app", src.host());
    let moved = Builder::new(&c, "team/app").oci_image(Some("v1"), "moved", "arm64");
    let run = backup(&["--include-referrers", "--debug", "-o", s(&out), &repo]);
    run.ok();
    let asked = manifest_requests(&run.stderr);
    // Tags the directory holds are confirmed (If-None-Match, 304) rather than fetched again.
    let by_tag: Vec<&(String, String, String)> =
        asked.iter().filter(|(m, r, _)| m == "GET" && fx.tags.contains_key(r)).collect();
    assert_eq!(by_tag.len(), fx.tags.len(), "one request per tag: {}", run.stderr);
    for (_, tag, status) in by_tag {
        let want = if tag == "v1" { "200" } else { "304" };
        assert_eq!(status, want, "tag {tag}: {}", run.stderr);
    }
    let layout = Layout::read(&out);
    let v1: Vec<String> = layout
        .entries()
        .iter()
        .filter(|e| e["annotations"][REF_NAME] == "v1")
        .map(|e| e["digest"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(v1, std::slice::from_ref(&moved.digest), "v1 follows the source");
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let restored = Client::new(&dst.host()).get_manifest("team/app", "v1").map(|m| m.digest);
    assert_eq!(restored, Some(moved.digest.clone()));
}

#[test]
fn a_second_backup_confirms_unchanged_referrer_indexes_and_follows_a_changed_one() {
    let (src, c, fx, _dir, out) = backed_up("app");
    let repo = format!("{}/team/app", src.host());
    // Each referrer's entry names its subject and the tag-schema index that listed it (Distribution 2.8).
    let layout = Layout::read(&out);
    for (subject, referrers) in &fx.referrers {
        for r in referrers {
            let entry = layout
                .entries()
                .into_iter()
                .find(|e| e["digest"] == r.digest.as_str())
                .expect("referrer listed in index.json");
            assert_eq!(
                entry["annotations"]["vnd.oras-backup.subject"],
                subject.as_str(),
                "{entry}"
            );
            assert!(
                entry["annotations"]["vnd.oras-backup.referrers-index"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("sha256:")),
                "{entry}"
            );
        }
    }
    // A second signature of v1 changes v1's index between the runs.
    let v1 = fx.desc(fx.tag("v1"));
    let mut b = Builder { client: c.clone(), fx: fx.clone(), tag_schema: true };
    let added = b.referrer(&v1, fixtures::SIGNATURE_TYPE, b"second-signature-of-v1", "sig 2 v1");
    let run = backup(&["--include-referrers", "--debug", "-o", s(&out), &repo]);
    run.ok();
    let schema: Vec<(String, String, String)> = manifest_requests(&run.stderr)
        .into_iter()
        .filter(|(_, r, _)| r.starts_with("sha256-"))
        .collect();
    assert_eq!(schema.len(), fx.tag_schema_tags.len(), "one request per index: {}", run.stderr);
    // Whether the registry has the referrers API is asked once, however many subjects are listed at once.
    let probes = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("[debug] GET ") && l.contains("/referrers/"))
        .count();
    assert_eq!(probes, 1, "{}", run.stderr);
    for (method, reference, status) in &schema {
        let want = if *reference == tag_schema_tag(&v1.digest) { "200" } else { "304" };
        assert_eq!(
            (method.as_str(), status.as_str()),
            ("GET", want),
            "{reference}: {}",
            run.stderr
        );
    }
    let layout = Layout::read(&out);
    assert!(
        layout.entries().iter().any(|e| e["digest"] == added.digest.as_str()),
        "the new referrer is backed up"
    );
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &b.fx, true);
}

#[test]
fn restore_recognises_tar_by_magic_whatever_its_name() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_signed_image(&c, "img");
    let dir = tempdir();
    let out = dir.path().join("img.tar");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/img", reg.host())]).ok();
    let renamed = dir.path().join("backup.bin");
    std::fs::rename(&out, &renamed).unwrap();
    let dst = Registry::start();
    restore(&["--input", s(&renamed), &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "img", &fx, true);
}

#[test]
fn backing_up_twice_into_the_same_directory() {
    let (src, _c, fx, _dir, out) = backed_up("app");
    let repo = format!("{}/team/app", src.host());
    let first = Layout::read(&out);
    let inode = |name: &str| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(out.join(name)).unwrap())
    };
    let files_before = (inode("index.json"), inode("oci-layout"));
    backup(&["--include-referrers", "-o", s(&out), &repo]).ok();
    let second = Layout::read(&out);
    // Nothing changed, so nothing was rewritten (a rewrite renames a new file into place).
    assert_eq!(
        (inode("index.json"), inode("oci-layout")),
        files_before,
        "an unchanged backup rewrote its index"
    );
    assert_eq!(first.files.keys().collect::<Vec<_>>(), second.files.keys().collect::<Vec<_>>());
    assert!(first.index() == second.index(), "index.json changed between identical backups");
    assert_layout_holds(&second, &[(&repo, &fx)], true);
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);
}

#[test]
fn more_than_100_tags() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_many_tags(&c, "many", 120);
    let dir = tempdir();
    let out = dir.path().join("many.tar");
    let run = backup(&["-o", s(&out), &format!("{}/many", src.host())]);
    run.ok();
    assert!(run.stdout_str().contains("Found 120 tag(s)"), "{}", run.stdout_str());
    assert_eq!(Layout::read(&out).ref_names().len(), 120);
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    assert_eq!(d.list_tags("many").len(), 120);
    assert_repo_matches(&d, "many", &fx, true);
}

#[test]
fn more_than_100_tags_from_a_registry_that_paginates() {
    // The fake caps unrequested pages at 100 tags, as many hosted registries do, so the
    // product must follow the Link header.
    let src = FakeRegistry::start_with_page_size(Some(100));
    let c = Client::new(&src.host());
    let fx = fixtures::push_many_tags(&c, "many", 120);
    let dir = tempdir();
    let out = dir.path().join("many");
    backup(&["-o", s(&out), &format!("{}/many", src.host())]).ok();
    let names = Layout::read(&out).ref_names();
    assert_eq!(names.len(), 120, "all pages listed: {names:?}");
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "many", &fx, true);
}

#[test]
fn restore_merges_with_existing_tag_schema_index() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_signed_image(&c, "team/app");
    let v1 = fx.tag("v1").to_string();
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", src.host())]).ok();

    // The target already has the same image with another referrer in its tag schema.
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    let mut b = Builder::new(&d, "team/app");
    let img = b.oci_image(Some("v1"), "team/app-img", "amd64");
    assert_eq!(img.digest, v1, "same deterministic image");
    let existing = b.referrer(&img, fixtures::ATTESTATION_TYPE, b"pre-existing", "kept");
    assert_eq!(d.tag_schema_referrers("team/app", &v1), vec![existing.digest.clone()]);

    restore(&["--input", s(&out), &dst.host()]).ok();
    let found = d.tag_schema_referrers("team/app", &v1);
    assert!(found.contains(&existing.digest), "pre-existing referrer dropped: {found:?}");
    for r in &fx.referrers[&v1] {
        assert!(found.contains(&r.digest), "restored referrer {} missing: {found:?}", r.digest);
    }
    assert_eq!(found.len(), 3, "no duplicates: {found:?}");
    assert!(d.manifest_exists("team/app", &existing.digest));
    assert_repo_matches(&d, "team/app", &fx, true);
    // The merged index keeps descriptors complete.
    let idx = d.get_manifest("team/app", &tag_schema_tag(&v1)).unwrap();
    assert_eq!(idx.media_type, harness::client::OCI_INDEX);
    for e in idx.json()["manifests"].as_array().unwrap() {
        assert!(e["artifactType"].is_string(), "artifactType in {e}");
        assert!(e["size"].is_u64(), "size in {e}");
    }
}

#[test]
fn restore_mounts_shared_blobs_and_skips_existing_content() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let app = fixtures::push_web(&c, "team/app");
    let web = fixtures::push_web(&c, "team/web");
    let dir = tempdir();
    let out = dir.path().join("all.tar");
    backup(&[
        "--include-referrers",
        "-o",
        s(&out),
        &format!("{}/team/app", src.host()),
        &format!("{}/team/web", src.host()),
    ])
    .ok();
    let dst = FakeRegistry::start();
    restore(&["--concurrency", "1", "--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    assert_repo_matches(&d, "team/app", &app, true);
    assert_repo_matches(&d, "team/web", &web, true);
    let shared = sha256_digest(&fixtures::pseudo_random("shared-layer", 2048));
    let uploads_of_shared = dst
        .requests()
        .iter()
        .filter(|r| (r.starts_with("PUT ") || r.starts_with("POST ")) && r.contains("digest="))
        .filter(|r| r.contains(shared.strip_prefix("sha256:").unwrap()))
        .count();
    assert_eq!(
        uploads_of_shared,
        1,
        "the shared layer is uploaded once and mounted into the other repository: {:#?}",
        dst.requests()
    );
    assert!(dst.counters().mounts >= 1, "{:?}", dst.counters());

    // Restoring again sends no blob.
    dst.reset_counters();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let counters = dst.counters();
    assert_eq!(counters.blob_uploads, 0, "blobs re-uploaded: {:#?}", dst.requests());
    assert_eq!(counters.mounts, 0, "blobs re-mounted: {:#?}", dst.requests());
}

// ---- Layouts written by other tools ----

fn check_restored_image(
    reg: &Registry,
    repo: &str,
    tag: &str,
    layout: &LayoutBuilder,
    digest: &str,
) {
    let d = Client::new(&reg.host());
    assert_eq!(d.user_tags(repo), [tag.to_string()], "tags of {repo}");
    let got = d.get_manifest(repo, tag).unwrap();
    assert_eq!(got.digest, digest);
    assert!(got.bytes == layout.blobs[digest]);
    for (blob, bytes) in &layout.blobs {
        if blob != digest {
            assert!(
                d.get_blob(repo, blob).as_ref() == Some(bytes),
                "blob {blob} missing or different in {repo}"
            );
        }
    }
}

#[test]
fn restore_skopeo_style_oci_archive() {
    let mut b = LayoutBuilder::default();
    let (m, _) = b.add_image("skopeo");
    b.add_entry(&m, &[(REF_NAME, "v1")]);
    let dir = tempdir();
    let tar = dir.path().join("skopeo.tar");
    b.write_tar(&tar, &TarStyle { index_first: true, dir_entries: true, dot_slash: false });
    let reg = Registry::start();
    restore(&["--input", s(&tar), &format!("{}/some/repo", reg.host())]).ok();
    check_restored_image(&reg, "some/repo", "v1", &b, &m.digest);
}

#[test]
fn restore_go_oras_style_layout_directory() {
    let mut b = LayoutBuilder::default();
    let (m1, _) = b.add_image("oras-go-1");
    let (m2, _) = b.add_image("oras-go-2");
    b.add_entry(&m1, &[(REF_NAME, "v1")]);
    b.add_entry(&m2, &[(REF_NAME, "v2")]);
    let dir = tempdir();
    let layout = dir.path().join("oras-layout");
    b.write_dir(&layout);
    std::fs::create_dir_all(layout.join("ingest")).unwrap();
    let reg = Registry::start();
    restore(&["--input", s(&layout), &format!("{}/some/repo", reg.host())]).ok();
    let d = Client::new(&reg.host());
    assert_eq!(d.user_tags("some/repo"), ["v1", "v2"]);
    assert_eq!(d.get_manifest("some/repo", "v1").unwrap().digest, m1.digest);
    assert_eq!(d.get_manifest("some/repo", "v2").unwrap().digest, m2.digest);
    for (blob, bytes) in &b.blobs {
        let present = d.get_blob("some/repo", blob).as_ref() == Some(bytes)
            || d.get_manifest("some/repo", blob).is_some();
        assert!(present, "{blob} missing");
    }
}

#[test]
fn restore_docker_export_style_tar() {
    let mut b = LayoutBuilder::default();
    let (m, _) = b.add_image("docker-foo");
    b.add_entry(&m, &[(CONTAINERD_NAME, "docker.io/library/foo:1.0"), (REF_NAME, "1.0")]);
    // docker save also writes its legacy files next to the layout.
    let config = serde_json::from_slice::<serde_json::Value>(&b.blobs[&m.digest]).unwrap()
        ["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    b.extra.insert(
        "manifest.json".into(),
        serde_json::to_vec(&serde_json::json!([{
            "Config": format!("blobs/sha256/{}", config.strip_prefix("sha256:").unwrap()),
            "RepoTags": ["foo:1.0"],
            "Layers": [],
        }]))
        .unwrap(),
    );
    b.extra.insert("repositories".into(), br#"{"foo":{"1.0":"abc"}}"#.to_vec());
    let dir = tempdir();
    let tar = dir.path().join("foo.tar");
    b.write_tar(&tar, &TarStyle { index_first: false, dir_entries: true, dot_slash: false });
    let reg = Registry::start();
    restore(&["--input", s(&tar), &format!("{}/some/repo", reg.host())]).ok();
    check_restored_image(&reg, "some/repo", "1.0", &b, &m.digest);
}

#[test]
fn companion_verify_accepts_a_good_backup() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_signed_image(&c, "img");
    let dir = tempdir();
    let out = dir.path().join("img.tar");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/img", reg.host())]).ok();
    assert!(out.is_file(), "backup wrote {}", out.display());
    oras(&["verify", s(&out)]).ok();
}

/// A tag-schema index as the Go ORAS library writes one: `encoding/json` of image-spec's structs
/// (fields in their order, compact), the referrers in the order they were pushed.
fn go_oras_index(referrers: &[fixtures::Desc]) -> Vec<u8> {
    let entries: Vec<String> = referrers
        .iter()
        .map(|d| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":{},"annotations":{},"artifactType":"{}"}}"#,
                d.media_type,
                d.digest,
                d.size,
                serde_json::to_string(&d.annotations).expect("json"),
                d.artifact_type.as_deref().unwrap_or_default()
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    )
    .into_bytes()
}

#[test]
fn a_restored_tag_schema_index_is_the_source_s_byte_for_byte() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let mut b = Builder::new(&c, "team/app");
    b.tag_schema = false;
    let v1 = b.oci_image(Some("v1"), "app-v1", "amd64");
    let mut referrers: Vec<fixtures::Desc> = (0..4)
        .map(|i| {
            let kind = [fixtures::SIGNATURE_TYPE, fixtures::SBOM_TYPE][i % 2];
            b.referrer(&v1, kind, format!("payload {i}").as_bytes(), &format!("note {i}"))
        })
        .collect();
    // Not the digest order, which a list sorted on the way would fall back to.
    referrers.sort_by(|a, b| b.digest.cmp(&a.digest));
    referrers.swap(0, 1);
    let index = go_oras_index(&referrers);
    let schema_tag = tag_schema_tag(&v1.digest);
    let source_digest =
        c.push_manifest("team/app", &schema_tag, "application/vnd.oci.image.index.v1+json", &index);

    let dir = tempdir();
    let out = dir.path().join("b.tar");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", src.host())]).ok();
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    for run in ["first", "second"] {
        restore(&["--input", s(&out), &format!("{}/team/app", dst.host())]).ok();
        let got = d.get_manifest("team/app", &schema_tag).expect("referrers index restored");
        assert_eq!(
            got.digest,
            source_digest,
            "{run} restore: the source's index, byte for byte:\n{}\n{}",
            String::from_utf8_lossy(&got.bytes),
            String::from_utf8_lossy(&index)
        );
    }
}
