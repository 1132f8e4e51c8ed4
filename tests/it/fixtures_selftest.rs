//! Checks the test harness itself: the registry guard, the test client, the fixtures (read
//! back through Distribution 2.8 and through the fake referrers registry), and the layout
//! helpers. If these fail, the e2e tests' failures mean nothing.

use crate::harness;

use harness::client::{is_tag_schema_tag, sha256_digest, tag_schema_tag, OCI_INDEX};
use harness::fake_referrers::FakeRegistry;
use harness::fixtures::{self, RepoFixture};
use harness::layout::{Layout, LayoutBuilder, TarStyle};
use harness::{assert_repo_matches, referrers_in, Client, Registry};

fn check_fixture_readback(client: &Client, fx: &RepoFixture) {
    // The fixture compared against itself through the registry.
    assert_repo_matches(client, &fx.repo, fx, true);
}

#[test]
fn distribution_registry_round_trips_all_fixture_kinds() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let app = fixtures::push_all_kinds(&c, "team/app");
    let web = fixtures::push_web(&c, "team/web");
    check_fixture_readback(&c, &app);
    check_fixture_readback(&c, &web);

    // Every kind is present.
    let tags: Vec<&str> = app.tags.keys().map(String::as_str).collect();
    assert_eq!(tags, ["artifact", "chart", "latest", "textcfg", "v1", "v2", "v3", "v4"]);
    assert_eq!(c.get_manifest("team/app", "v2").unwrap().media_type, OCI_INDEX);
    assert_eq!(c.get_manifest("team/app", "v4").unwrap().media_type, harness::client::DOCKER_LIST);
    // The zero-byte blob is stored and served.
    let empty = sha256_digest(b"");
    assert_eq!(c.get_blob("team/app", &empty).unwrap(), Vec::<u8>::new());
    // Shared layer is the same blob in both repositories.
    let shared = sha256_digest(&fixtures::pseudo_random("shared-layer", 2048));
    assert!(c.blob_exists("team/app", &shared) && c.blob_exists("team/web", &shared));

    // Referrers: v1 has sig + sbom, the sbom has a signature, index and index child have one each.
    let v1 = app.tag("v1").to_string();
    assert_eq!(app.referrers[&v1].len(), 2);
    assert_eq!(app.referrers.len(), 4, "subjects: v1, sbom, v2, v2's amd64 child");
    // Distribution 2.8 has no referrers API: the fixture maintained the tag schema.
    assert!(c.referrers_api("team/app", &v1, None).is_none());
    let all_tags = c.list_tags("team/app");
    assert_eq!(all_tags.iter().filter(|t| is_tag_schema_tag(t)).count(), 4);
    assert!(all_tags.contains(&tag_schema_tag(&v1)));
    let idx = c.get_manifest("team/app", &tag_schema_tag(&v1)).unwrap().json();
    for d in idx["manifests"].as_array().unwrap() {
        assert!(
            d["artifactType"].is_string() && d["annotations"].is_object() && d["size"].is_u64()
        );
    }
    assert_eq!(referrers_in(&c, "team/app", &v1).len(), 2);

    // Referrer manifests are untagged and distinct from the tagged graph.
    let tagged = app.tagged_manifests();
    for r in app.referrer_manifests() {
        assert!(!tagged.contains(&r));
    }
    // v2 index: 2 children in the tagged graph.
    assert!(tagged.len() >= 10, "{tagged:?}");
}

#[test]
fn distribution_registry_many_tags_and_pagination() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    let fx = fixtures::push_many_tags(&c, "many", 120);
    assert_eq!(fx.tags.len(), 120);
    assert_eq!(c.list_tags("many").len(), 120);
    // The client follows Link pagination.
    let paged = c.list_tags_paged("many", 50);
    assert_eq!(paged.len(), 120, "paged listing");
    assert_repo_matches(&c, "many", &fx, true);
}

#[test]
fn distribution_registry_behaviour_probes() {
    // Facts about Distribution 2.8 the e2e tests rely on.
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    assert!(c.catalog().is_empty());
    assert!(c.list_tags("nothing/here").is_empty());
    // A repository with a manifest but no tag.
    let mut b = fixtures::Builder::new(&c, "notags");
    let d = b.oci_image(None, "untagged", "amd64");
    assert!(c.manifest_exists("notags", &d.digest));
    assert!(c.list_tags("notags").is_empty());
    assert!(c.catalog().contains(&"notags".to_string()));
}

#[test]
fn fake_registry_serves_referrers_api() {
    let fake = FakeRegistry::start();
    let c = Client::new(&fake.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    check_fixture_readback(&c, &fx);
    let v1 = fx.tag("v1").to_string();
    let api = c.referrers_api("team/app", &v1, None).expect("referrers API");
    assert_eq!(api["manifests"].as_array().unwrap().len(), 2);
    let sigs = c.referrers_api("team/app", &v1, Some(fixtures::SIGNATURE_TYPE)).unwrap();
    assert_eq!(sigs["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(sigs["manifests"][0]["artifactType"], fixtures::SIGNATURE_TYPE);
    // The fixture saw the API and did not maintain the tag schema.
    assert_eq!(fake.tag_schema_pushes(), 0);
    assert!(c.list_tags("team/app").iter().all(|t| !is_tag_schema_tag(t)));
    assert!(fake.referrers_calls() > 0);
}

#[test]
fn fake_registry_pagination_and_mounts() {
    let fake = FakeRegistry::start_with_page_size(Some(100));
    let c = Client::new(&fake.host());
    let fx = fixtures::push_many_tags(&c, "many", 120);
    let tags = c.list_tags("many");
    assert_eq!(tags.len(), 120);
    assert!(
        fake.requests().iter().any(|r| r.contains("last=t099")),
        "second page requested: {:?}",
        fake.requests()
    );
    assert_repo_matches(&c, "many", &fx, true);
    // Mount: POST ?mount=&from= answers 201 when the source has the blob.
    let layer = sha256_digest(&fixtures::pseudo_random("many-layer", 64));
    let http = reqwest::blocking::Client::new();
    let resp = http
        .post(format!("http://{}/v2/other/blobs/uploads/?mount={layer}&from=many", fake.host()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert!(c.blob_exists("other", &layer));
    assert_eq!(fake.counters().mounts, 1);
    // Wrong digest on upload is refused.
    let resp = http
        .post(format!(
            "http://{}/v2/other/blobs/uploads/?digest={}",
            fake.host(),
            sha256_digest(b"x")
        ))
        .body("y")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[test]
fn layout_builder_and_reader_agree() {
    let dir = harness::tempdir();
    let mut b = LayoutBuilder::default();
    let (m, bytes) = b.add_image("x");
    b.add_entry(&m, &[("org.opencontainers.image.ref.name", "1.0")]);
    let tar_path = dir.path().join("x.tar");
    b.write_tar(&tar_path, &TarStyle { index_first: true, dir_entries: true, dot_slash: true });
    let l = Layout::read(&tar_path);
    assert_eq!(l.ref_names(), ["1.0"]);
    assert_eq!(l.blob(&m.digest).unwrap(), &bytes);
    assert!(harness::looks_complete(&tar_path));
    let d = dir.path().join("x");
    b.write_dir(&d);
    let l2 = Layout::read(&d);
    assert_eq!(l.files, l2.files);
    assert_eq!(l2.blob_digests().len(), 4);
}
