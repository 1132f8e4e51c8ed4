//! Choosing what moves and where, end to end against real registries: restore rules files, tag
//! and repository filters, whole-registry backups, full references and `manifest fetch`.

use crate::harness;

use harness::fixtures::{self, RepoFixture};
use harness::layout::Layout;
use harness::{backup, oras, restore, s, tempdir, Client, Registry};
use std::path::{Path, PathBuf};

/// A registry with `team/app` (v1, v2, v3; v2 signed) and `team/web` (the same tag names), backed
/// up with referrers into `all.tar`.
struct Backed {
    src: Registry,
    app: RepoFixture,
    web: RepoFixture,
    _dir: tempfile::TempDir,
    tar: PathBuf,
}

fn backed() -> Backed {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let app = fixtures::push_web(&c, "team/app");
    let web = fixtures::push_web(&c, "team/web");
    let dir = tempdir();
    let tar = dir.path().join("all.tar");
    let h = src.host();
    backup(&[
        "--include-referrers",
        "-o",
        s(&tar),
        &format!("{h}/team/app"),
        &format!("{h}/team/web"),
    ])
    .ok();
    Backed { src, app, web, _dir: dir, tar }
}

fn write_rules(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("rules.json");
    std::fs::write(&p, text).expect("write rules");
    p
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_rules_file_renames_selects_retags_and_consolidates() {
    let b = backed();
    let dst = Registry::start();
    let (h, d) = (b.src.host(), dst.host());
    let dir = tempdir();
    let rules = write_rules(
        dir.path(),
        &format!(
            r#"{{
              // upstream ORAS format, comments included
              "settings": {{"exclude-referrers": false}},
              "mappings": [
                {{"source": "{h}/team/app", "target": "{d}/apps/app", "tag-mappings": {{"v1": "stable"}}}},
                /* only v2 of web, without its signature, into the same repository */
                {{"source": "{h}/team/web", "target": "{d}/apps/app", "tags": ["v2"],
                  "tag-mappings": {{"v2": "web-v2"}}, "exclude-referrers": true}}
              ]
            }}"#
        ),
    );
    let run = restore(&["--input", s(&b.tar), "--rules", s(&rules)]);
    run.ok();
    let c = Client::new(&d);
    let user_tags =
        sorted(c.list_tags("apps/app").into_iter().filter(|t| !t.starts_with("sha256-")).collect());
    assert_eq!(user_tags, ["stable", "v2", "v3", "web-v2"]);
    let digest_of = |c: &Client, repo: &str, tag: &str| {
        c.get_manifest(repo, tag).map(|f| f.digest).expect("tag")
    };
    assert_eq!(digest_of(&c, "apps/app", "stable"), b.app.tag("v1"), "digests survive the rename");
    assert_eq!(digest_of(&c, "apps/app", "web-v2"), b.web.tag("v2"));
    let app_sig = b.app.referrer_manifests().into_iter().next().expect("app v2 signature");
    let web_sig = b.web.referrer_manifests().into_iter().next().expect("web v2 signature");
    assert!(c.manifest_exists("apps/app", &app_sig), "app's referrers follow the settings");
    assert!(
        !c.manifest_exists("apps/app", &web_sig),
        "the mapping's exclude-referrers leaves web's signature behind"
    );
    assert!(
        !c.catalog().iter().any(|r| r == "team/web" || r == "team/app"),
        "nothing under the original paths"
    );
}

#[test]
fn rules_refuse_collisions_unknown_keys_and_what_the_backup_does_not_hold_before_pushing() {
    let b = backed();
    let dst = Registry::start();
    let (h, d) = (b.src.host(), dst.host());
    let dir = tempdir();
    let collide = write_rules(
        dir.path(),
        &format!(
            r#"{{"mappings": [{{"source": "{h}/team/app", "target": "{d}/all"}}, {{"source": "{h}/team/web", "target": "{d}/all"}}]}}"#
        ),
    );
    let run = restore(&["--input", s(&b.tar), "--rules", s(&collide)]);
    run.fails(1, &[&format!("{h}/team/app:v1")]);
    assert!(run.stderr.contains(&format!("{h}/team/web:v1")), "both sources named: {}", run.stderr);

    let typo = write_rules(
        dir.path(),
        &format!(
            r#"{{"mappings": [{{"source": "{h}/team/app", "target": "{d}/x", "tag": ["v1"]}}]}}"#
        ),
    );
    restore(&["--input", s(&b.tar), "--rules", s(&typo)]).fails(2, &["unknown field"]);

    let absent = write_rules(
        dir.path(),
        &format!(r#"{{"mappings": [{{"source": "{h}/team/gone", "target": "{d}/x"}}]}}"#),
    );
    restore(&["--input", s(&b.tar), "--rules", s(&absent)]).fails(1, &[&format!("{h}/team/web")]);

    let no_tag = write_rules(
        dir.path(),
        &format!(
            r#"{{"mappings": [{{"source": "{h}/team/app", "target": "{d}/x", "tags": ["v9"]}}]}}"#
        ),
    );
    restore(&["--input", s(&b.tar), "--rules", s(&no_tag)]).fails(1, &["v9"]);

    restore(&["--input", s(&b.tar), "--rules", s(&no_tag), &d]).fails(2, &["--rules"]);
    assert!(Client::new(&d).catalog().is_empty(), "nothing was pushed by any refused run");
}

#[test]
fn a_dry_run_with_rules_prints_the_plan_and_json_reports_it_as_data() {
    let b = backed();
    let dst = Registry::start();
    let (h, d) = (b.src.host(), dst.host());
    let dir = tempdir();
    let rules = write_rules(
        dir.path(),
        &format!(
            r#"{{"mappings": [{{"source": "{h}/team/app", "target": "{d}/apps/app", "tags": ["v2"]}}]}}"#
        ),
    );
    let run = restore(&["--input", s(&b.tar), "--rules", s(&rules), "--dry-run"]);
    run.ok();
    let out = run.stdout_str();
    assert!(
        out.contains(&format!("Registry: {d}")) && out.contains("Repository: apps/app"),
        "{out}"
    );
    assert!(out.contains(&format!("v2 ({}) + 1 referrer(s)", b.app.tag("v2"))), "{out}");
    assert!(Client::new(&d).catalog().is_empty(), "a dry run pushes nothing");

    let run =
        restore(&["--input", s(&b.tar), "--rules", s(&rules), "--dry-run", "--format", "json"]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    let job = &doc["report"]["jobs"][0];
    assert_eq!(job["destination"], format!("{d}/apps/app"));
    assert_eq!(job["roots"][0]["digest"], b.app.tag("v2"));
    assert!(job["bytesCopied"].as_u64().is_some_and(|n| n > 0), "{job}");
}

#[test]
fn tag_filters_select_tags_on_backup_and_restore() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    fixtures::push_web(&c, "team/web");
    let dir = tempdir();
    let out = dir.path().join("web");
    let repo = format!("{}/team/web", src.host());
    let run = backup(&["-o", s(&out), "--include-tags", "v[12]", "--exclude-tags", "v2", &repo]);
    run.ok();
    assert!(
        run.output().contains("--include-tags kept 2")
            && run.output().contains("--exclude-tags kept 1 of 2"),
        "{}",
        run.output()
    );
    assert_eq!(Layout::read(&out).ref_names(), ["v1"]);

    backup(&["-o", s(&out), "--include-tags", "(", &repo])
        .fails(2, &["not a valid regular expression"]);
    backup(&["-o", s(&dir.path().join("none")), "--include-tags", "nothing", &repo])
        .fails(1, &["tag filters"]);

    let all = dir.path().join("all.tar");
    backup(&["-o", s(&all), &repo]).ok();
    let dst = Registry::start();
    restore(&["--input", s(&all), "--exclude-tags", "v1|v3", &format!("{}/web", dst.host())]).ok();
    assert_eq!(Client::new(&dst.host()).list_tags("web"), ["v2"]);
}

#[test]
fn a_registry_named_alone_backs_up_what_its_catalog_lists_through_the_repository_globs() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    fixtures::push_web(&c, "team/app");
    fixtures::push_web(&c, "team/web");
    fixtures::push_web(&c, "other/tool");
    fixtures::push_web(&c, "team/deep/nested");
    let dir = tempdir();
    let out = dir.path().join("reg");
    let run = backup(&[
        "-o",
        s(&out),
        &src.host(),
        "--include-repos",
        "team/*",
        "--exclude-repos",
        "**/web",
    ]);
    run.ok();
    let listed = oras(&["repo", "ls", "--oci-layout", s(&out)]);
    assert_eq!(
        listed.ok().stdout_str().lines().collect::<Vec<_>>(),
        [format!("{}/team/app", src.host())],
        "* stays within one component"
    );

    backup(&[
        "-o",
        s(&dir.path().join("x")),
        &format!("{}/team/app", src.host()),
        "--include-repos",
        "x",
    ])
    .fails(2, &["registry alone"]);
    backup(&["-o", s(&dir.path().join("y")), &src.host(), "--include-repos", "nothing/*"])
        .fails(1, &["keep none"]);
}

#[test]
fn full_references_name_a_single_repository_and_manifest_fetch_reads_them() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_web(&c, "team/web");
    let dir = tempdir();
    let out = dir.path().join("full.tar");
    let repo = format!("{}/team/web", src.host());
    backup(&["--full-reference", "-o", s(&out), &format!("{repo}:v1")]).ok();
    assert_eq!(Layout::read(&out).ref_names(), [format!("{repo}:v1")]);

    let fetched = oras(&["manifest", "fetch", "--oci-layout", &format!("{}:{repo}:v1", s(&out))]);
    fetched.ok();
    let from_registry = c.get_manifest("team/web", "v1").expect("manifest");
    assert_eq!(fetched.stdout, from_registry.bytes, "the exact bytes");
    let fetched = oras(&["manifest", "fetch", "--oci-layout", &format!("{}:v1", s(&out))]);
    assert_eq!(fetched.ok().stdout, from_registry.bytes, "a bare tag finds the only repository");
    let desc = oras(&["manifest", "fetch", "--descriptor", &format!("{repo}:v1")]);
    let v: serde_json::Value = serde_json::from_slice(&desc.ok().stdout).expect("descriptor json");
    assert_eq!(v["digest"], fx.tag("v1"));

    let dst = Registry::start();
    restore(&["--input", s(&out), &format!("{}/copy", dst.host())]).ok();
    assert_eq!(
        Client::new(&dst.host()).get_manifest("copy", "v1").map(|f| f.digest),
        Some(fx.tag("v1").to_string())
    );
}

#[test]
fn a_platform_backs_up_one_manifest_of_an_index_under_its_tag_with_the_referrers_of_both() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    // v2 is an index (amd64, arm64) with an attestation; its amd64 child has a signature.
    let fx = fixtures::push_all_kinds(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("arm.tar");
    let repo = format!("{}/team/app", src.host());
    let index = fx.tag("v2").to_string();
    let children: Vec<String> = c
        .get_manifest("team/app", &index)
        .map(|f| {
            f.json()["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["digest"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    let run = backup(&[
        "--include-referrers",
        "--platform",
        "linux/amd64",
        "-o",
        s(&out),
        &format!("{repo}:v2"),
    ]);
    run.ok();
    assert!(
        run.output().contains(&format!("the copy names manifest {}", children[0])),
        "{}",
        run.output()
    );

    let dst = Registry::start();
    restore(&["--input", s(&out), &format!("{}/arm", dst.host())]).ok();
    let d = Client::new(&dst.host());
    assert_eq!(
        d.get_manifest("arm", "v2").map(|f| f.digest),
        Some(children[0].clone()),
        "the tag names the amd64 manifest"
    );
    assert!(
        !d.manifest_exists("arm", &index) && !d.manifest_exists("arm", &children[1]),
        "neither the index nor arm64"
    );
    let kept = fx.referrer_manifests().into_iter().filter(|r| d.manifest_exists("arm", r)).count();
    assert_eq!(kept, 2, "the index's attestation and the child's signature");

    backup(&[
        "--platform",
        "linux/s390x",
        "-o",
        s(&dir.path().join("none")),
        &format!("{repo}:v2"),
    ])
    .fails(1, &["linux/amd64, linux/arm64"]);
    backup(&["--platform", "linux", "-o", s(&dir.path().join("none")), &format!("{repo}:v2")])
        .fails(2, &["os/arch"]);
}

#[test]
fn a_sparse_index_backup_keeps_the_index_digest_verifies_as_partial_and_a_strict_registry_refusal_is_explained(
) {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("sparse");
    let repo = format!("{}/team/app", src.host());
    let index = fx.tag("v2").to_string();
    backup(&[
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "-o",
        s(&out),
        &format!("{repo}:v2"),
    ])
    .fails(2, &["--sparse-index"]);
    let run = backup(&[
        "--platform",
        "linux/arm64",
        "--sparse-index",
        "-o",
        s(&out),
        &format!("{repo}:v2"),
    ]);
    run.ok();
    assert!(run.output().contains("1 of its 2 manifests"), "{}", run.output());
    let fetched = oras(&["manifest", "fetch", "--oci-layout", &format!("{}:v2", s(&out))]);
    assert_eq!(
        fetched.ok().stdout,
        c.get_manifest("team/app", "v2").expect("index").bytes,
        "the index's bytes, unchanged"
    );

    let verified = oras(&["verify", s(&out)]);
    verified.ok();
    assert!(
        verified.stdout_str().contains("partial: index")
            && verified.stdout_str().contains("linux/arm64"),
        "{}",
        verified.stdout_str()
    );

    // Distribution insists on every manifest an index names: the refusal says why.
    let dst = Registry::start();
    restore(&["--input", s(&out), &format!("{}/app", dst.host())]).fails(1, &["--sparse-index"]);
    assert!(!Client::new(&dst.host()).manifest_exists("app", &index));
}

#[test]
fn restore_summary_sizes_add_up_with_mounts_counted_once() {
    let b = backed();
    let dst = Registry::start();
    // Both repositories share a layer: uploaded into the first, mounted into the second.
    let run = restore(&["--input", s(&b.tar), &dst.host(), "--format", "json"]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    let r = &doc["report"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert!(n("bytesMounted") > 0, "the shared layer is mounted: {r}");
    assert_eq!(n("bytesTotal"), n("bytesCopied") + n("bytesSkipped"), "{r}");
    let per_job: u64 = r["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["bytesCopied"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_job, n("bytesCopied"), "per-repository uploads add up to the total: {r}");
}

#[test]
fn copy_with_a_platform_tags_the_platform_manifest_at_the_destination() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    let dst = Registry::start();
    let run = oras(&[
        "copy",
        "--platform",
        "linux/arm64",
        &format!("{}/team/app:v2", src.host()),
        &format!("{}/one:arm", dst.host()),
    ]);
    run.ok();
    let d = Client::new(&dst.host());
    let arm = d.get_manifest("one", "arm").expect("tagged");
    assert_eq!(
        arm.json()["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json",
        "an image manifest, not the index"
    );
    assert_ne!(arm.digest, fx.tag("v2"));
}
