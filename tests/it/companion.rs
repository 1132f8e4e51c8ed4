//! End-to-end tests of the companion commands, the ones the backup/restore scenarios use to
//! check a result: `repo ls`, `repo tags`, `discover`, `verify`, `copy`, `--format json` of
//! backup/restore, shell completion scripts and man pages. Real Distribution 2.8 registries
//! (referrers tag schema) and the in-process fake where the referrers API is needed; every
//! test has its own registries and temporary directories.

use crate::harness;

use harness::client::{is_tag_schema_tag, tag_schema_tag, OCI_MANIFEST};
use harness::companion::{
    blob_file, catalog_cap_proxy, copy_dir, discover_nodes, edit_index, flip_byte_in_tar_blob,
    problems, stdout_json, stdout_lines, tar_entries, verify, verify_json,
};
use harness::fake_referrers::FakeRegistry;
use harness::fixtures::{self, RepoFixture, ATTESTATION_TYPE, SBOM_TYPE, SIGNATURE_TYPE};
use harness::layout::{Layout, LayoutBuilder, REF_NAME};
use harness::registry::RegistryOptions;
use harness::{
    assert_repo_matches, backup, oras, referrers_in, restore, s, tempdir, Client, Registry,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------
// Shared set-up
// ---------------------------------------------------------------------------------------

/// A Distribution registry with every fixture kind in `team/app`.
fn source_with_all_kinds() -> (Registry, Client, RepoFixture) {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    (reg, c, fx)
}

/// A backup (with referrers) of every fixture kind, written to `<tmp>/<name>` (a `.tar`
/// name gives an archive); the source registry is gone when this returns.
fn backup_all_kinds(name: &str) -> (tempfile::TempDir, PathBuf, RepoFixture) {
    let (reg, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join(name);
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", reg.host())]).ok();
    (dir, out, fx)
}

/// Digest of layer `i` of manifest `m`.
fn layer(fx: &RepoFixture, m: &str, i: usize) -> String {
    fx.manifests[m].json()["layers"][i]["digest"].as_str().unwrap().to_string()
}

/// Digest of child `i` of index `m`.
fn child(fx: &RepoFixture, m: &str, i: usize) -> String {
    fx.manifests[m].json()["manifests"][i]["digest"].as_str().unwrap().to_string()
}

/// Direct referrer of `subject` with artifact type `at`.
fn referrer_of(fx: &RepoFixture, subject: &str, at: &str) -> String {
    fx.referrers[subject]
        .iter()
        .find(|r| r.artifact_type.as_deref() == Some(at))
        .unwrap_or_else(|| panic!("no {at} referrer of {subject}"))
        .digest
        .clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// repo ls
// ---------------------------------------------------------------------------------------

#[test]
fn repo_ls_lists_the_catalog_sorted_with_list_alias_and_json() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_web(&c, "team/web");
    fixtures::push_signed_image(&c, "app");
    fixtures::push_many_tags(&c, "zeta/tools", 2);
    let want = vec!["app".to_string(), "team/web".to_string(), "zeta/tools".to_string()];

    let run = oras(&["repo", "ls", &reg.host()]);
    run.ok();
    assert_eq!(stdout_lines(&run), want, "repo ls output");
    let run = oras(&["repo", "list", &reg.host()]);
    run.ok();
    assert_eq!(stdout_lines(&run), want, "repo list (alias) output");
    let run = oras(&["repo", "ls", "--format", "json", &reg.host()]);
    run.ok();
    assert_eq!(strings(&stdout_json(&run)["repositories"]), want, "repo ls --format json");
}

#[test]
fn repo_ls_follows_catalog_pages_when_the_registry_caps_the_page_size() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let mut want = Vec::new();
    for i in 0..7 {
        let name = format!("repo{i}");
        fixtures::push_many_tags(&c, &name, 1);
        want.push(name);
    }
    // Pages of 3 repositories: 7 repositories take 3 pages linked by Distribution's `Link`.
    let proxy = catalog_cap_proxy(&reg.host(), 3);
    let run = oras(&["repo", "ls", "--plain-http", &proxy.host()]);
    run.ok();
    assert_eq!(stdout_lines(&run), want, "every repository across catalog pages");
    let catalog_calls = proxy.seen().iter().filter(|r| r.path.starts_with("/v2/_catalog")).count();
    assert!(catalog_calls >= 3, "expected at least 3 catalog pages, saw {:#?}", proxy.seen());
}

#[test]
fn repo_ls_works_against_distribution_with_a_small_catalog_maxentries() {
    let reg = Registry::start_with(&RegistryOptions {
        extra: Some("catalog:\n  maxentries: 2\n".into()),
        ..Default::default()
    });
    let c = Client::new(&reg.host());
    let mut want = Vec::new();
    for i in 0..5 {
        let name = format!("r{i}");
        fixtures::push_many_tags(&c, &name, 1);
        want.push(name);
    }
    let run = oras(&["repo", "ls", &reg.host()]);
    run.ok();
    assert_eq!(stdout_lines(&run), want, "every repository across catalog pages of 2");
}

#[test]
fn repo_ls_oci_layout_lists_the_repositories_of_a_backup_dir_and_tar() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    fixtures::push_web(&c, "team/web");
    fixtures::push_signed_image(&c, "team/app");
    let dir = tempdir();
    let app = format!("{}/team/app", reg.host());
    let web = format!("{}/team/web", reg.host());
    for name in ["both", "both.tar"] {
        let out = dir.path().join(name);
        backup(&["--include-referrers", "-o", s(&out), &app, &web]).ok();
        let run = oras(&["repo", "ls", "--oci-layout", s(&out)]);
        run.ok();
        assert_eq!(
            stdout_lines(&run),
            vec![app.clone(), web.clone()],
            "repo ls --oci-layout {name}"
        );
        let run = oras(&["repo", "list", "--format", "json", "--oci-layout", s(&out)]);
        run.ok();
        assert_eq!(
            strings(&stdout_json(&run)["repositories"]),
            vec![app.clone(), web.clone()],
            "json of {name}"
        );
    }
    // A single-repository backup names its repository too.
    let one = dir.path().join("one");
    backup(&["-o", s(&one), &web]).ok();
    let run = oras(&["repo", "ls", "--oci-layout", s(&one)]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec![web.clone()]);

    // Not a backup: a clean error, no list.
    let run = oras(&["repo", "ls", "--oci-layout", s(&dir.path().join("nothing-here"))]);
    run.fails(1, &["nothing-here"]);
    assert!(run.stdout.is_empty(), "no output for a missing backup: {}", run.stdout_str());
}

#[test]
fn repo_ls_and_tags_of_a_layout_written_by_another_tool() {
    // Plain ref names (no repository recorded), as `skopeo copy oci:dir:tag` writes them.
    let dir = tempdir();
    let mut lb = LayoutBuilder::default();
    let (img, _) = lb.add_image("other");
    lb.add_entry(&img, &[(REF_NAME, "1.0")]);
    lb.add_entry(&img, &[(REF_NAME, "latest")]);
    let path = dir.path().join("skopeo");
    lb.write_dir(&path);
    let run = oras(&["repo", "ls", "--oci-layout", s(&path)]);
    run.ok();
    assert!(
        stdout_lines(&run).is_empty(),
        "no repository is recorded, and none is made up: {}",
        run.stdout_str()
    );
    assert!(run.stderr.contains("tags without a repository name"), "{}", run.stderr);
    let run = oras(&["repo", "ls", "--oci-layout", "--format", "json", s(&path)]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(doc["repositories"], serde_json::json!([]), "{doc}");
    let run = oras(&["repo", "tags", "--oci-layout", s(&path)]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec!["1.0", "latest"]);
}

// ---------------------------------------------------------------------------------------
// repo tags
// ---------------------------------------------------------------------------------------

#[test]
fn repo_tags_of_a_registry_with_and_without_digest_tags() {
    let (reg, _c, fx) = source_with_all_kinds();
    let repo = format!("{}/team/app", reg.host());
    let user: Vec<String> = fx.tags.keys().cloned().collect();
    assert!(!fx.tag_schema_tags.is_empty(), "fixture has tag-schema tags on Distribution");

    let run = oras(&["repo", "tags", "--all", &repo]);
    run.ok();
    let all = stdout_lines(&run);
    let want_all = sorted(user.iter().cloned().chain(fx.tag_schema_tags.iter().cloned()).collect());
    assert_eq!(sorted(all), want_all, "repo tags --all lists every tag, digest tags included");

    for flags in [&[][..], &["--exclude-digest-tags"][..]] {
        let run = oras(&[&["repo", "tags"][..], flags, &[&repo]].concat());
        run.ok();
        let got = stdout_lines(&run);
        assert_eq!(sorted(got.clone()), user, "repo tags {flags:?} hides sha256-<hex>");
        assert!(got.iter().all(|t| !is_tag_schema_tag(t)));
    }
    oras(&["repo", "tags", "--all", "--exclude-digest-tags", &repo])
        .fails(2, &["cannot be used with"]);

    let run = oras(&["repo", "tags", "--exclude-digest-tags", "--format", "json", &repo]);
    run.ok();
    assert_eq!(sorted(strings(&stdout_json(&run)["tags"])), user, "repo tags --format json");

    // An unknown repository is an error, not an empty list.
    let run = oras(&["repo", "tags", &format!("{}/no/such", reg.host())]);
    assert_eq!(run.code, Some(1), "unknown repository: {}", run.output());
}

#[test]
fn repo_tags_follows_tag_pages_when_the_registry_caps_the_page_size() {
    let fake = FakeRegistry::start_with_page_size(Some(10));
    let c = Client::new(&fake.host());
    let fx = fixtures::push_many_tags(&c, "many", 25);
    let run = oras(&["repo", "tags", &format!("{}/many", fake.host())]);
    run.ok();
    let want: Vec<String> = fx.tags.keys().cloned().collect();
    assert_eq!(sorted(stdout_lines(&run)), want, "25 tags over 3 pages");
    let pages = fake.requests().iter().filter(|r| r.contains("/tags/list")).count();
    assert!(pages >= 3, "expected 3 tag pages: {:?}", fake.requests());
}

#[test]
fn repo_tags_oci_layout_single_and_multi_repository_backups() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let web_fx = fixtures::push_web(&c, "team/web");
    let app_fx = fixtures::push_signed_image(&c, "team/app");
    let app = format!("{}/team/app", reg.host());
    let web = format!("{}/team/web", reg.host());
    let dir = tempdir();
    let web_tags: Vec<String> = web_fx.tags.keys().cloned().collect();
    let app_tags: Vec<String> = app_fx.tags.keys().cloned().collect();

    for name in ["web", "web.tar"] {
        let out = dir.path().join(name);
        backup(&["--include-referrers", "-o", s(&out), &web]).ok();
        let run = oras(&["repo", "tags", "--oci-layout", s(&out)]);
        run.ok();
        assert_eq!(stdout_lines(&run), web_tags, "tags of the single-repository backup {name}");
        let run = oras(&[
            "repo",
            "tags",
            "--oci-layout",
            "--exclude-digest-tags",
            "--format",
            "json",
            s(&out),
        ]);
        run.ok();
        assert_eq!(strings(&stdout_json(&run)["tags"]), web_tags);
    }

    for name in ["both", "both.tar"] {
        let out = dir.path().join(name);
        backup(&["--include-referrers", "-o", s(&out), &app, &web]).ok();
        // By full name and by repository path.
        let run = oras(&["repo", "tags", "--oci-layout", &format!("{}:{web}", s(&out))]);
        run.ok();
        assert_eq!(stdout_lines(&run), web_tags, "{name}:{web}");
        let run = oras(&["repo", "tags", "--oci-layout", &format!("{}:team/app", s(&out))]);
        run.ok();
        assert_eq!(stdout_lines(&run), app_tags, "{name}:team/app");
        // No repository named: every tag, qualified by its repository.
        let run = oras(&["repo", "tags", "--oci-layout", s(&out)]);
        run.ok();
        let mut want: Vec<String> = app_tags.iter().map(|t| format!("{app}:{t}")).collect();
        want.extend(web_tags.iter().map(|t| format!("{web}:{t}")));
        assert_eq!(sorted(stdout_lines(&run)), sorted(want), "every tag of {name}");
        // A repository the backup does not hold.
        let run = oras(&["repo", "tags", "--oci-layout", &format!("{}:team/nope", s(&out))]);
        run.fails(1, &["team/nope"]);
    }
}

// ---------------------------------------------------------------------------------------
// discover
// ---------------------------------------------------------------------------------------

/// The tree `oras discover` prints for `v1` of [`fixtures::push_signed_image`]: the root
/// line, then the signature and the SBOM (in either order), the SBOM's signature under it.
fn expected_signed_tree(root_line: &str, fx: &RepoFixture, sbom_first: bool) -> Vec<String> {
    let v1 = fx.tag("v1");
    let sig = referrer_of(fx, v1, SIGNATURE_TYPE);
    let sbom = referrer_of(fx, v1, SBOM_TYPE);
    let sbom_sig = referrer_of(fx, &sbom, SIGNATURE_TYPE);
    let sig_line = |branch: &str| format!("{branch} {SIGNATURE_TYPE} {sig}");
    let sbom_line = |branch: &str| format!("{branch} {SBOM_TYPE} {sbom}");
    if sbom_first {
        vec![
            root_line.to_string(),
            sbom_line("├──"),
            format!("│   └── {SIGNATURE_TYPE} {sbom_sig}"),
            sig_line("└──"),
        ]
    } else {
        vec![
            root_line.to_string(),
            sig_line("├──"),
            sbom_line("└──"),
            format!("    └── {SIGNATURE_TYPE} {sbom_sig}"),
        ]
    }
}

#[test]
fn discover_prints_the_referrers_tree() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_signed_image(&c, "app");
    let v1 = fx.tag("v1");
    let root = format!("{}/app@{v1}", reg.host());
    for args in [vec!["discover"], vec!["discover", "--format", "tree"]] {
        let mut args = args.clone();
        let r = format!("{}/app:v1", reg.host());
        args.push(&r);
        let run = oras(&args);
        run.ok();
        let lines = stdout_lines(&run);
        let a = expected_signed_tree(&root, &fx, false);
        let b = expected_signed_tree(&root, &fx, true);
        assert!(
            lines == a || lines == b,
            "tree shape:\n{}\nexpected:\n{}",
            lines.join("\n"),
            a.join("\n")
        );
    }
    // By digest: same tree.
    let run = oras(&["discover", &root]);
    run.ok();
    assert_eq!(stdout_lines(&run)[0], root);
    assert_eq!(stdout_lines(&run).len(), 4);
    // A manifest without referrers: the root line alone.
    let sig = referrer_of(&fx, v1, SIGNATURE_TYPE);
    let run = oras(&["discover", &format!("{}/app@{sig}", reg.host())]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec![format!("{}/app@{sig}", reg.host())]);
    // Unknown tag: exit 1.
    oras(&["discover", &format!("{}/app:nope", reg.host())]).fails(1, &["nope"]);
}

/// JSON tree checks shared by the registry (API and tag schema) and layout variants:
/// full tree, `--artifact-type` and `--depth 1`.
fn check_discover_json(base: &[&str], reference: &str, fx: &RepoFixture) {
    let v1 = fx.tag("v1");
    let sig = referrer_of(fx, v1, SIGNATURE_TYPE);
    let sbom = referrer_of(fx, v1, SBOM_TYPE);
    let sbom_sig = referrer_of(fx, &sbom, SIGNATURE_TYPE);
    let run_with = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(&["--format", "json"]);
        args.extend_from_slice(extra);
        args.push(reference);
        let run = oras(&args);
        run.ok();
        let v = stdout_json(&run);
        assert_eq!(v["digest"], v1, "root digest: {v:#}");
        assert_eq!(v["mediaType"], OCI_MANIFEST, "root mediaType: {v:#}");
        assert_eq!(v["size"], fx.manifests[v1].bytes.len(), "root size: {v:#}");
        assert!(v["referrers"].is_array(), "referrers array always present: {v:#}");
        v
    };

    // Everything, recursively.
    let v = run_with(&[]);
    let nodes = discover_nodes(&v);
    let got: BTreeSet<(usize, String)> = nodes.iter().map(|(d, g, _)| (*d, g.clone())).collect();
    let want: BTreeSet<(usize, String)> =
        [(1, sig.clone()), (1, sbom.clone()), (2, sbom_sig.clone())].into_iter().collect();
    assert_eq!(got, want, "full tree: {v:#}");
    let sbom_node =
        v["referrers"].as_array().unwrap().iter().find(|n| n["digest"] == sbom.as_str()).unwrap();
    assert_eq!(sbom_node["artifactType"], SBOM_TYPE);
    assert_eq!(
        sbom_node["referrers"][0]["digest"],
        sbom_sig.as_str(),
        "the SBOM's signature nests under it: {v:#}"
    );
    assert_eq!(sbom_node["referrers"][0]["artifactType"], SIGNATURE_TYPE);
    let note = &fx.referrers[v1].iter().find(|r| r.digest == sbom).unwrap().annotations
        ["org.example.note"];
    assert_eq!(
        sbom_node["annotations"]["org.example.note"],
        note.as_str(),
        "annotations carried: {sbom_node:#}"
    );

    // --depth 1: direct referrers only.
    let v = run_with(&["--depth", "1"]);
    let nodes = discover_nodes(&v);
    assert_eq!(
        nodes.iter().map(|(d, g, _)| (*d, g.clone())).collect::<BTreeSet<_>>(),
        [(1, sig.clone()), (1, sbom.clone())].into_iter().collect(),
        "--depth 1: {v:#}"
    );

    // --artifact-type: only SBOMs.
    let v = run_with(&["--artifact-type", SBOM_TYPE]);
    let nodes = discover_nodes(&v);
    assert_eq!(nodes.len(), 1, "--artifact-type {SBOM_TYPE}: {v:#}");
    assert_eq!(nodes[0].1, sbom);
    // --artifact-type: signatures, including the SBOM's own (found through the SBOM).
    let v = run_with(&["--artifact-type", SIGNATURE_TYPE]);
    let nodes = discover_nodes(&v);
    assert!(
        nodes.iter().all(|(_, _, at)| at.as_deref() == Some(SIGNATURE_TYPE)),
        "only signatures: {v:#}"
    );
    assert_eq!(
        nodes.iter().map(|(_, g, _)| g.clone()).collect::<BTreeSet<_>>(),
        [sig.clone(), sbom_sig.clone()].into_iter().collect(),
        "signatures at any depth: {v:#}"
    );
    // A type nobody has: no referrers.
    let v = run_with(&["--artifact-type", "application/vnd.example.none"]);
    assert!(discover_nodes(&v).is_empty(), "{v:#}");
    // --depth 1 with a filter: the SBOM's signature is out of reach.
    let v = run_with(&["--depth", "1", "--artifact-type", SIGNATURE_TYPE]);
    assert_eq!(
        discover_nodes(&v).iter().map(|(_, g, _)| g.clone()).collect::<Vec<_>>(),
        vec![sig.clone()],
        "{v:#}"
    );
}

#[test]
fn discover_json_artifact_type_and_depth_through_the_referrers_api() {
    let fake = FakeRegistry::start();
    let c = Client::new(&fake.host());
    let fx = fixtures::push_signed_image(&c, "app");
    fake.reset_counters();
    check_discover_json(&["discover"], &format!("{}/app:v1", fake.host()), &fx);
    assert!(fake.referrers_calls() > 0, "the referrers API was used");
    assert_eq!(fake.counters().manifest_puts, 0, "discover wrote nothing");
}

#[test]
fn discover_json_artifact_type_and_depth_through_the_tag_schema() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_signed_image(&c, "app");
    check_discover_json(&["discover"], &format!("{}/app:v1", reg.host()), &fx);
}

#[test]
fn discover_an_index_and_its_child() {
    let (reg, _c, fx) = source_with_all_kinds();
    let v2 = fx.tag("v2");
    let amd64 = child(&fx, v2, 0);
    let run = oras(&["discover", "--format", "json", &format!("{}/team/app:v2", reg.host())]);
    run.ok();
    let v = stdout_json(&run);
    let nodes = discover_nodes(&v);
    assert_eq!(
        nodes.len(),
        1,
        "the index has one referrer (its child's signature is not its referrer): {v:#}"
    );
    assert_eq!(nodes[0].1, referrer_of(&fx, v2, ATTESTATION_TYPE));
    let run = oras(&["discover", "--format", "json", &format!("{}/team/app@{amd64}", reg.host())]);
    run.ok();
    let v = stdout_json(&run);
    assert_eq!(v["digest"], amd64.as_str());
    let nodes = discover_nodes(&v);
    assert_eq!(
        nodes.iter().map(|n| n.1.clone()).collect::<Vec<_>>(),
        vec![referrer_of(&fx, &amd64, SIGNATURE_TYPE)],
        "{v:#}"
    );
}

#[test]
fn discover_in_a_backup_dir_and_tar() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_signed_image(&c, "team/app");
    let repo = format!("{}/team/app", reg.host());
    let v1 = fx.tag("v1").to_string();
    let dir = tempdir();
    for name in ["app", "app.tar"] {
        let out = dir.path().join(name);
        backup(&["--include-referrers", "-o", s(&out), &repo]).ok();
        let p = s(&out);
        check_discover_json(&["discover", "--oci-layout"], &format!("{p}:v1"), &fx);
        check_discover_json(&["discover", "--oci-layout"], &format!("{p}@{v1}"), &fx);
        check_discover_json(&["discover", "--oci-layout"], &format!("{p}:{repo}:v1"), &fx);
        check_discover_json(&["discover", "--oci-layout"], &format!("{p}:{repo}@{v1}"), &fx);
        // Text tree too.
        let run = oras(&["discover", "--oci-layout", &format!("{p}:v1")]);
        run.ok();
        let lines = stdout_lines(&run);
        assert_eq!(lines.len(), 4, "tree of {name}: {}", run.stdout_str());
        assert!(lines[0].ends_with(&format!("@{v1}")), "root line: {}", lines[0]);
        // Unknown tag, or no tag at all.
        oras(&["discover", "--oci-layout", &format!("{p}:nope")]).fails(1, &["nope"]);
        assert_eq!(
            oras(&["discover", "--oci-layout", p]).code,
            Some(2),
            "a layout path alone is a usage error"
        );
    }
}

#[test]
fn discover_in_a_backup_by_digest_of_an_index_child() {
    let (_dir, out, fx) = backup_all_kinds("app");
    let v2 = fx.tag("v2");
    let amd64 = child(&fx, v2, 0);
    let run =
        oras(&["discover", "--oci-layout", "--format", "json", &format!("{}@{amd64}", s(&out))]);
    run.ok();
    let v = stdout_json(&run);
    assert_eq!(v["digest"], amd64.as_str());
    let got: Vec<String> = discover_nodes(&v).into_iter().map(|n| n.1).collect();
    assert_eq!(got, vec![referrer_of(&fx, &amd64, SIGNATURE_TYPE)], "{v:#}");
}

// ---------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------

#[test]
fn verify_passes_a_good_backup_dir_and_tar() {
    let (reg, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let repo = format!("{}/team/app", reg.host());
    for name in ["good", "good.tar"] {
        let out = dir.path().join(name);
        backup(&["--include-referrers", "-o", s(&out), &repo]).ok();
        let run = verify(&out);
        run.ok();
        assert!(problems(&run).is_empty(), "no problem lines: {}", run.stdout_str());
        assert!(run.stdout_str().contains("Verified"), "summary line: {}", run.stdout_str());
        let (run, v) = verify_json(&out);
        run.ok();
        assert_eq!(v["ok"], true, "{v:#}");
        assert_eq!(v["path"], s(&out));
        assert_eq!(v["tags"], fx.tags.len(), "tags: {v:#}");
        assert_eq!(v["manifests"], fx.manifests.len(), "every manifest, referrers included: {v:#}");
        assert_eq!(v["blobs"], fx.blobs.len(), "every distinct blob: {v:#}");
        let min_bytes: usize = fx.blobs.values().map(Vec::len).sum::<usize>()
            + fx.manifests.values().map(|m| m.bytes.len()).sum::<usize>();
        assert_eq!(v["bytes"].as_u64().unwrap(), min_bytes as u64, "bytes: {v:#}");
        assert_eq!(v["problems"], serde_json::json!([]));
    }
    // A backup without referrers is complete too.
    let out = dir.path().join("no-referrers.tar");
    backup(&["-o", s(&out), &repo]).ok();
    verify(&out).ok();
}

/// Checks a failed verify: exit 1 with one error line, and `n` problem lines.
#[track_caller]
fn assert_verify_fails(path: &Path, n: usize) -> Vec<String> {
    let run = verify(path);
    run.fails(1, &["verification"]);
    let p = problems(&run);
    assert_eq!(p.len(), n, "expected {n} problem(s):\n{}", run.stdout_str());
    assert!(
        !run.stdout_str().contains("Verified"),
        "no success line on failure: {}",
        run.stdout_str()
    );
    let (run, v) = verify_json(path);
    assert_eq!(run.code, Some(1), "verify --format json exits 1 too");
    assert_eq!(v["ok"], false);
    assert_eq!(strings(&v["problems"]), p, "json problems are the text problems");
    p
}

#[test]
fn verify_reports_a_flipped_byte_in_a_layer_of_a_directory() {
    let (_dir, out, fx) = backup_all_kinds("app");
    let v1 = fx.tag("v1");
    let own = layer(&fx, v1, 1);
    let f = blob_file(&out, &own);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let p = assert_verify_fails(&out, 1);
    assert!(p[0].contains(&own), "problem names the blob: {p:?}");
    assert!(p[0].contains(v1), "problem names the manifest that refers to it: {p:?}");
}

#[test]
fn verify_reports_a_flipped_byte_in_a_layer_of_a_tar() {
    let (_dir, out, fx) = backup_all_kinds("app.tar");
    let v1 = fx.tag("v1");
    let own = layer(&fx, v1, 1);
    flip_byte_in_tar_blob(&out, &own);
    let p = assert_verify_fails(&out, 1);
    assert!(
        p[0].contains(&own) && p[0].contains(v1),
        "problem names the blob and its manifest: {p:?}"
    );
}

#[test]
fn verify_reports_a_missing_blob() {
    let (_dir, out, fx) = backup_all_kinds("app");
    let v3 = fx.tag("v3");
    let own = layer(&fx, v3, 1);
    std::fs::remove_file(blob_file(&out, &own)).unwrap();
    let p = assert_verify_fails(&out, 1);
    assert!(p[0].contains(&own) && p[0].contains("missing"), "{p:?}");
    assert!(p[0].contains(v3), "names the manifest that refers to it: {p:?}");
    // A layer two images share: one problem naming both.
    let v1 = fx.tag("v1");
    let shared = layer(&fx, v1, 0);
    assert_eq!(shared, layer(&fx, v3, 0), "fixture: v1 and v3 share their first layer");
    std::fs::remove_file(blob_file(&out, &shared)).unwrap();
    let p = assert_verify_fails(&out, 2);
    let line = p
        .iter()
        .find(|l| l.contains(&shared))
        .unwrap_or_else(|| panic!("shared layer reported: {p:?}"));
    assert!(
        line.contains(v1) && line.contains(v3),
        "names every manifest that refers to it: {line}"
    );
}

#[test]
fn verify_reports_a_missing_manifest() {
    let (dir, out, fx) = backup_all_kinds("app");
    // A child of a Docker manifest list: referenced by the list, not by a tag.
    let v4 = fx.tag("v4");
    let arm64 = child(&fx, v4, 1);
    let a = dir.path().join("child-missing");
    copy_dir(&out, &a);
    std::fs::remove_file(blob_file(&a, &arm64)).unwrap();
    let p = assert_verify_fails(&a, 1);
    assert!(p[0].contains(&arm64) && p[0].contains("missing") && p[0].contains(v4), "{p:?}");
    // A tagged manifest: the tag does not resolve.
    let chart = fx.tag("chart");
    let b = dir.path().join("tagged-missing");
    copy_dir(&out, &b);
    std::fs::remove_file(blob_file(&b, chart)).unwrap();
    let p = assert_verify_fails(&b, 1);
    assert!(
        p[0].contains(chart) && p[0].contains("chart"),
        "names the manifest and the tag: {p:?}"
    );
    // A manifest under two tags (v3 and latest): one problem naming both tags.
    let v3 = fx.tag("v3");
    let c = dir.path().join("two-tags-missing");
    copy_dir(&out, &c);
    std::fs::remove_file(blob_file(&c, v3)).unwrap();
    let p = assert_verify_fails(&c, 1);
    assert!(
        p[0].contains(v3) && p[0].contains(":v3") && p[0].contains(":latest"),
        "names both tags: {p:?}"
    );
}

#[test]
fn verify_reports_a_truncated_tar() {
    let (dir, out, _fx) = backup_all_kinds("app.tar");
    let len = std::fs::metadata(&out).unwrap().len();
    for (name, keep) in [("half.tar", len / 2), ("tail-cut.tar", len - 3000)] {
        let cut = dir.path().join(name);
        let bytes = std::fs::read(&out).unwrap();
        std::fs::write(&cut, &bytes[..keep as usize]).unwrap();
        let run = verify(&cut);
        run.fails(1, &["verification"]);
        assert!(!problems(&run).is_empty(), "{name}: at least one problem line:\n{}", run.output());
        let (run, v) = verify_json(&cut);
        assert_eq!(run.code, Some(1));
        assert_eq!(v["ok"], false, "{name}: {v:#}");
    }
}

#[test]
fn verify_reports_a_tar_cut_at_an_entry_boundary() {
    // No partial entry and no end-of-archive blocks: the tar reads cleanly, the last blob is
    // simply absent, and verify must notice.
    let (dir, out, _fx) = backup_all_kinds("app.tar");
    let entries = tar_entries(&out);
    let (last_name, (last_off, _)) = entries.iter().max_by_key(|(_, (off, _))| *off).unwrap();
    let digest = last_name.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}"));
    let digest = digest.unwrap_or_else(|| panic!("the last tar entry is a blob: {last_name}"));
    let cut = dir.path().join("boundary.tar");
    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(&cut, &bytes[..(*last_off - 512) as usize]).unwrap();
    let run = verify(&cut);
    run.fails(1, &["verification"]);
    let p = problems(&run);
    assert!(
        p.iter().any(|l| l.contains(&digest) && l.contains("missing")),
        "the cut-off blob {digest} is reported:\n{}",
        run.output()
    );
}

#[test]
fn verify_reports_a_referrer_whose_subject_is_missing() {
    let (_dir, out, fx) = backup_all_kinds("app");
    // Drop tag v2 (an index whose only direct referrer is an attestation) and its manifest;
    // the attestation stays.
    let v2 = fx.tag("v2").to_string();
    let att = referrer_of(&fx, &v2, ATTESTATION_TYPE);
    edit_index(&out, |v| {
        v["manifests"].as_array_mut().unwrap().retain(|e| e["digest"] != v2.as_str());
    });
    std::fs::remove_file(blob_file(&out, &v2)).unwrap();
    let p = assert_verify_fails(&out, 1);
    assert!(
        p[0].contains(&att) && p[0].contains(&v2) && p[0].contains("subject"),
        "names the referrer and its subject: {p:?}"
    );
}

#[test]
fn verify_reports_a_size_mismatch() {
    let (_dir, out, fx) = backup_all_kinds("app");
    let v1 = fx.tag("v1");
    let own = layer(&fx, v1, 1);
    let f = blob_file(&out, &own);
    let mut bytes = std::fs::read(&f).unwrap();
    let expected = bytes.len();
    bytes.extend_from_slice(b"extra");
    std::fs::write(&f, bytes).unwrap();
    let p = assert_verify_fails(&out, 1);
    assert!(p[0].contains(&own) && p[0].contains(v1), "{p:?}");
    assert!(
        p[0].contains(&expected.to_string()) && p[0].contains(&(expected + 5).to_string()),
        "both sizes: {p:?}"
    );
}

#[test]
fn verify_reports_every_problem_not_only_the_first() {
    let (dir, out, fx) = backup_all_kinds("app");
    let v1 = fx.tag("v1");
    let v3 = fx.tag("v3");
    let v1_own = layer(&fx, v1, 1);
    let v3_own = layer(&fx, v3, 1);
    let a = dir.path().join("two");
    copy_dir(&out, &a);
    let f = blob_file(&a, &v1_own);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[10] ^= 0x80;
    std::fs::write(&f, bytes).unwrap();
    std::fs::remove_file(blob_file(&a, &v3_own)).unwrap();
    let p = assert_verify_fails(&a, 2);
    assert!(
        p.iter().any(|l| l.contains(&v1_own) && l.contains(v1)),
        "corrupt blob reported: {p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains(&v3_own) && l.contains(v3) && l.contains("missing")),
        "missing blob reported: {p:?}"
    );

    // In a tar: a corrupt layer and a corrupt manifest, both reported.
    let t = dir.path().join("two.tar");
    backup_all_kinds_into_tar_from_dir(&out, &t);
    flip_byte_in_tar_blob(&t, &v1_own);
    let chart = fx.tag("chart");
    flip_byte_in_tar_blob(&t, chart);
    let p = assert_verify_fails(&t, 2);
    assert!(p.iter().any(|l| l.contains(&v1_own)), "{p:?}");
    assert!(p.iter().any(|l| l.contains(chart)), "{p:?}");
}

/// Pack a layout directory into a tar (index.json first), as another tool might.
fn backup_all_kinds_into_tar_from_dir(dir: &Path, tar_path: &Path) {
    let layout = Layout::read(dir);
    let file = std::fs::File::create(tar_path).unwrap();
    let mut tar = tar::Builder::new(file);
    for (name, data) in &layout.files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, &data[..]).unwrap();
    }
    tar.finish().unwrap();
    assert!(tar_entries(tar_path).contains_key("index.json"));
}

#[test]
fn verify_reports_a_path_that_is_not_a_backup() {
    let dir = tempdir();
    let missing = dir.path().join("nope");
    let run = verify(&missing);
    run.fails(1, &["verification"]);
    assert_eq!(problems(&run).len(), 1, "{}", run.stdout_str());
    // A directory without oci-layout: reported, other checks still run.
    let mut lb = LayoutBuilder::default();
    let (img, _) = lb.add_image("x");
    lb.add_entry(&img, &[(REF_NAME, "v1")]);
    let p = dir.path().join("no-oci-layout");
    lb.write_dir(&p);
    std::fs::remove_file(p.join("oci-layout")).unwrap();
    let problems = assert_verify_fails(&p, 1);
    assert!(problems[0].contains("oci-layout"), "{problems:?}");
}

// ---------------------------------------------------------------------------------------
// --format json of backup and restore
// ---------------------------------------------------------------------------------------

#[test]
fn backup_and_restore_print_one_json_document() {
    let (reg, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    let repo = format!("{}/team/app", reg.host());
    let tag_digests: BTreeSet<String> = fx.tags.values().cloned().collect();

    let run = backup(&["--format", "json", "--include-referrers", "-o", s(&out), &repo]);
    run.ok();
    let v = stdout_json(&run);
    assert_eq!(v["command"], "backup", "{v:#}");
    assert_eq!(v["tags"], fx.tags.len(), "{v:#}");
    assert_eq!(v["repositories"], 1, "{v:#}");
    let roots = v["report"]["jobs"][0]["roots"]
        .as_array()
        .unwrap_or_else(|| panic!("report.jobs[0].roots: {v:#}"));
    let got: BTreeSet<String> =
        roots.iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, tag_digests, "root digests: {v:#}");
    let tags: BTreeSet<String> =
        roots.iter().map(|r| r["tag"].as_str().unwrap().to_string()).collect();
    assert_eq!(tags, fx.tags.keys().cloned().collect(), "root tags: {v:#}");
    let referrers: u64 = roots.iter().map(|r| r["referrers"].as_u64().unwrap()).sum();
    assert!(referrers as usize >= fx.referrer_manifests().len(), "referrer counts: {v:#}");

    let dst = Registry::start();
    let run = restore(&["--format", "json", "--dry-run", "--input", s(&out), &dst.host()]);
    run.ok();
    let v = stdout_json(&run);
    assert_eq!(v["command"], "restore", "{v:#}");
    assert_eq!(v["dryRun"], true, "{v:#}");
    assert!(Client::new(&dst.host()).catalog().is_empty(), "dry run pushed nothing");

    let run = restore(&["--format", "json", "--input", s(&out), &dst.host()]);
    run.ok();
    let v = stdout_json(&run);
    assert_eq!(v["command"], "restore", "{v:#}");
    assert_eq!(v["tags"], fx.tags.len(), "{v:#}");
    let roots = v["report"]["jobs"][0]["roots"]
        .as_array()
        .unwrap_or_else(|| panic!("report.jobs[0].roots: {v:#}"));
    let got: BTreeSet<String> =
        roots.iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, tag_digests, "{v:#}");
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);

    // A failing run in JSON mode: exit 1, the error on stderr.
    let run = backup(&[
        "--format",
        "json",
        "-o",
        s(&dir.path().join("x")),
        &format!("{}/no/such", reg.host()),
    ]);
    assert_eq!(run.code, Some(1), "{}", run.output());
}

// ---------------------------------------------------------------------------------------
// copy
// ---------------------------------------------------------------------------------------

#[test]
fn copy_between_registries_with_referrers_retagging_and_by_digest() {
    let (src, _c, fx) = source_with_all_kinds();
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    let from = |r: &str| format!("{}/team/app{r}", src.host());
    let to = |r: &str| format!("{}/{r}", dst.host());

    // -r: an index with a referrer on it and on a child.
    oras(&["copy", "--no-tty", "-r", &from(":v2"), &to("mirror/app:v2")]).ok();
    assert_repo_matches(&d, "mirror/app", &fx.subset(&["v2"], &[]), true);

    // -r on an image whose SBOM has a signature (referrer of a referrer), JSON output.
    let run = oras(&["copy", "--no-tty", "-r", "--format", "json", &from(":v1"), &to("signed:v1")]);
    run.ok();
    let v = stdout_json(&run);
    assert_eq!(v["report"]["jobs"][0]["roots"][0]["digest"], fx.tag("v1"), "{v:#}");
    assert_repo_matches(&d, "signed", &fx.subset(&["v1"], &[]), true);

    // Without -r: no referrers; retag to several tags.
    oras(&["copy", "--no-tty", &from(":v1"), &to("retag:prod,stable")]).ok();
    assert_eq!(sorted(d.list_tags("retag")), vec!["prod", "stable"]);
    for t in ["prod", "stable"] {
        assert_eq!(d.get_manifest("retag", t).unwrap().digest, fx.tag("v1"), "retag:{t}");
    }
    assert!(referrers_in(&d, "retag", fx.tag("v1")).is_empty(), "no referrers without -r");
    assert!(d.list_tags("retag").iter().all(|t| !is_tag_schema_tag(t)));

    // By digest to a tag: byte-identical (pretty-printed Docker manifest).
    let v3 = fx.tag("v3");
    oras(&["copy", "--no-tty", &from(&format!("@{v3}")), &to("bydigest:d")]).ok();
    let got = d.get_manifest("bydigest", "d").expect("bydigest:d");
    assert_eq!(got.digest, v3);
    assert!(got.bytes == fx.manifests[v3].bytes);

    // A digest as the destination is a usage error.
    assert_eq!(oras(&["copy", "--no-tty", &from(":v1"), &to(&format!("x@{v3}"))]).code, Some(2));
    // Unknown source tag: exit 1, nothing created.
    oras(&["copy", "--no-tty", &from(":nope"), &to("none:x")]).fails(1, &["nope"]);
    assert!(d.list_tags("none").is_empty());
}

#[test]
fn copy_with_referrers_into_a_registry_with_the_referrers_api() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_signed_image(&c, "app");
    let fake = FakeRegistry::start();
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        &format!("{}/app:v1", src.host()),
        &format!("{}/app:v1", fake.host()),
    ])
    .ok();
    let d = Client::new(&fake.host());
    assert_repo_matches(&d, "app", &fx, true);
    assert_eq!(
        fake.tag_schema_pushes(),
        0,
        "no tag-schema tags on a registry with the API: {:#?}",
        fake.requests()
    );
    // And discover sees the same tree on both sides.
    let a = stdout_json(
        oras(&["discover", "--format", "json", &format!("{}/app:v1", src.host())]).ok(),
    );
    let b = stdout_json(
        oras(&["discover", "--format", "json", &format!("{}/app:v1", fake.host())]).ok(),
    );
    let strip =
        |v: &Value| discover_nodes(v).into_iter().map(|(d, g, _)| (d, g)).collect::<BTreeSet<_>>();
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(strip(&a).len(), 3);

    // And back from the API registry into Distribution (tag schema), by digest.
    let dst = Registry::start();
    let v1 = fx.tag("v1");
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        &format!("{}/app@{v1}", fake.host()),
        &format!("{}/again:v1", dst.host()),
    ])
    .ok();
    let d2 = Client::new(&dst.host());
    assert_repo_matches(&d2, "again", &fx, true);
    assert_eq!(
        sorted(d2.tag_schema_referrers("again", v1)),
        sorted(fx.referrers[v1].iter().map(|r| r.digest.clone()).collect())
    );
}

#[test]
fn copy_from_an_oci_layout_by_digest_of_an_index_child() {
    let (_dir, out, fx) = backup_all_kinds("app");
    let v2 = fx.tag("v2");
    let amd64 = child(&fx, v2, 0);
    let dst = Registry::start();
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--from-oci-layout",
        &format!("{}@{amd64}", s(&out)),
        &format!("{}/child:amd64", dst.host()),
    ])
    .ok();
    let d = Client::new(&dst.host());
    assert_eq!(d.get_manifest("child", "amd64").expect("child:amd64").digest, amd64);
    assert_eq!(referrers_in(&d, "child", &amd64), vec![referrer_of(&fx, &amd64, SIGNATURE_TYPE)]);
}

#[test]
fn copy_to_and_from_an_oci_layout_directory() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let layout = dir.path().join("layout");
    let v1 = fx.tag("v1").to_string();
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--to-oci-layout",
        &format!("{}/team/app:v1", src.host()),
        s(&layout),
    ])
    .ok();
    assert!(layout.is_dir(), "a directory layout");
    verify(&layout).ok();
    let run = oras(&["repo", "tags", "--oci-layout", s(&layout)]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec!["v1"]);
    let l = Layout::read(&layout);
    let sub = fx.subset(&["v1"], &[]);
    for d in sub.all_digests() {
        assert!(l.blob(&d).is_some(), "{d} missing from the layout");
    }
    check_discover_json(&["discover", "--oci-layout"], &format!("{}:v1", s(&layout)), &fx);

    // Back into a registry, from the tag and from the digest.
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--from-oci-layout",
        &format!("{}:v1", s(&layout)),
        &format!("{}/back:v1", dst.host()),
    ])
    .ok();
    assert_repo_matches(&d, "back", &sub, true);
    oras(&[
        "copy",
        "--no-tty",
        "--from-oci-layout",
        &format!("{}@{v1}", s(&layout)),
        &format!("{}/bydigest:x", dst.host()),
    ])
    .ok();
    assert_eq!(d.get_manifest("bydigest", "x").expect("bydigest:x").digest, v1);
    assert!(referrers_in(&d, "bydigest", &v1).is_empty(), "no referrers without -r");

    // A second graph into the same directory adds to it.
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--to-oci-layout",
        &format!("{}/team/app:v2", src.host()),
        s(&layout),
    ])
    .ok();
    verify(&layout).ok();
    let run = oras(&["repo", "tags", "--oci-layout", s(&layout)]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec!["v1", "v2"]);
}

#[test]
fn copy_to_and_from_an_oci_layout_tar() {
    let (src, _c, fx) = source_with_all_kinds();
    let dir = tempdir();
    let tar = dir.path().join("out.tar");
    let v2 = fx.tag("v2").to_string();
    // Retagged in the archive.
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--to-oci-layout",
        &format!("{}/team/app:v2", src.host()),
        &format!("{}:release", s(&tar)),
    ])
    .ok();
    assert!(tar.is_file(), "a .tar destination is an archive");
    let bytes = std::fs::read(&tar).unwrap();
    assert_eq!(&bytes[257..262], b"ustar", "ustar magic");
    verify(&tar).ok();
    let run = oras(&["repo", "tags", "--oci-layout", s(&tar)]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec!["release"]);
    let l = Layout::read(&tar);
    let sub = fx.subset(&["v2"], &[]);
    for d in sub.all_digests() {
        assert!(l.blob(&d).is_some(), "{d} missing from the tar");
    }

    // Back: the index, its children, the attestation and the child's signature.
    let dst = Registry::start();
    let d = Client::new(&dst.host());
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--from-oci-layout",
        &format!("{}:release", s(&tar)),
        &format!("{}/back:v2", dst.host()),
    ])
    .ok();
    assert_repo_matches(&d, "back", &sub, true);
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--from-oci-layout",
        &format!("{}@{v2}", s(&tar)),
        &format!("{}/bydigest:v2", dst.host()),
    ])
    .ok();
    assert_repo_matches(&d, "bydigest", &sub, true);
    assert!(
        d.list_tags("bydigest").contains(&tag_schema_tag(&v2)),
        "tag schema index for the index's referrers"
    );

    // A tag with capitals, and a name ending in .TAR: still an archive named exactly so.
    let upper = dir.path().join("UPPER.TAR");
    oras(&[
        "copy",
        "--no-tty",
        "--to-oci-layout",
        &format!("{}/team/app:v1", src.host()),
        &format!("{}:Release-1", s(&upper)),
    ])
    .ok();
    assert!(upper.is_file(), "UPPER.TAR:Release-1 is an archive, not a directory");
    let run = oras(&["repo", "tags", "--oci-layout", s(&upper)]);
    run.ok();
    assert_eq!(stdout_lines(&run), vec!["Release-1"]);

    // Registry -> tar -> directory -> registry keeps every digest.
    let dir2 = dir.path().join("from-tar");
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--from-oci-layout",
        "--to-oci-layout",
        &format!("{}:release", s(&tar)),
        s(&dir2),
    ])
    .ok();
    verify(&dir2).ok();
    oras(&[
        "copy",
        "--no-tty",
        "-r",
        "--from-oci-layout",
        &format!("{}:release", s(&dir2)),
        &format!("{}/twice:v2", dst.host()),
    ])
    .ok();
    assert_repo_matches(&d, "twice", &sub, true);
}

// ---------------------------------------------------------------------------------------
// completion and man pages
// ---------------------------------------------------------------------------------------

const SUBCOMMANDS: [&str; 6] = ["backup", "restore", "repo", "discover", "copy", "verify"];

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker) in
        [("bash", "complete "), ("zsh", "#compdef oras"), ("fish", "complete -c oras")]
    {
        let run = oras(&["completion", shell]);
        run.ok();
        let script = run.stdout_str();
        assert!(script.len() > 500, "{shell} script is too short: {script}");
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} script does not mention {sub}");
        }
        assert!(script.contains("include-referrers"), "{shell} script completes backup flags");
    }
    assert_eq!(oras(&["completion", "tcsh"]).code, Some(2), "unknown shell is a usage error");
}

#[test]
fn man_pages_are_written() {
    let dir = tempdir();
    let out = dir.path().join("man1");
    let run = oras(&["man", "--dir", s(&out)]);
    run.ok();
    let mut names = vec!["oras".to_string()];
    names.extend(SUBCOMMANDS.iter().map(|c| format!("oras-{c}")));
    for name in &names {
        let p = out.join(format!("{name}.1"));
        let page = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(page.contains(".TH"), "{name}.1 has no .TH");
        assert!(page.contains(".SH NAME"), "{name}.1 has no NAME section");
    }
    let main = std::fs::read_to_string(out.join("oras.1")).unwrap();
    for sub in SUBCOMMANDS {
        assert!(main.contains(sub), "oras.1 does not mention {sub}");
    }
    let backup_page = std::fs::read_to_string(out.join("oras-backup.1")).unwrap();
    assert!(
        backup_page.contains("include\\-referrers") || backup_page.contains("include-referrers"),
        "backup flags documented"
    );
    assert!(!out.join("oras-man.1").exists(), "the hidden man command has no page");
}
