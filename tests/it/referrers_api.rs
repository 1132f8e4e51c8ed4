//! The OCI referrers API path, against the in-process fake registry (Distribution 2.8 has
//! no referrers API): backup discovers referrers through the API, restore pushes them
//! without creating tag-schema tags, and `--distribution-spec v1.1-referrers-tag` forces
//! the tag schema.

use crate::harness;

use harness::client::{is_tag_schema_tag, tag_schema_tag};
use harness::fake_referrers::FakeRegistry;
use harness::fixtures::{self, RepoFixture};
use harness::layout::{Layout, REF_NAME};
use harness::{
    assert_layout_holds, assert_repo_matches, backup, restore, s, tempdir, Client, Registry,
};

fn fake_with_all_kinds() -> (FakeRegistry, RepoFixture) {
    let fake = FakeRegistry::start();
    let c = Client::new(&fake.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    assert_eq!(fake.tag_schema_pushes(), 0, "fixtures on the fake use the API");
    fake.reset_counters();
    (fake, fx)
}

#[test]
fn backup_discovers_referrers_through_the_api() {
    let (fake, fx) = fake_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    let repo = format!("{}/team/app", fake.host());
    backup(&["--include-referrers", "-o", s(&out), &repo]).ok();
    assert!(fake.referrers_calls() > 0, "the referrers API was not used");
    let layout = Layout::read(&out);
    // Includes referrers of referrers (signature of the SBOM) and of an index child.
    assert_layout_holds(&layout, &[(&repo, &fx)], true);
    let referrer_entries =
        layout.entries().iter().filter(|e| e["annotations"][REF_NAME].is_null()).count();
    assert_eq!(referrer_entries, fx.referrer_manifests().len());

    // Into Distribution 2.8: the target needs the tag schema, restore builds it.
    let dst = Registry::start();
    restore(&["--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    assert_repo_matches(&d, "team/app", &fx, true);
    for subject in fx.subjects() {
        assert!(
            d.list_tags("team/app").contains(&tag_schema_tag(&subject)),
            "tag schema index for {subject} not created on Distribution 2.8"
        );
    }
}

#[test]
fn restore_into_referrers_api_registry_creates_no_tag_schema_tags() {
    // Source: Distribution 2.8 with the tag schema.
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fx = fixtures::push_all_kinds(&c, "team/app");
    let dir = tempdir();
    let out = dir.path().join("app");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", src.host())]).ok();

    let fake = FakeRegistry::start();
    restore(&["--input", s(&out), &fake.host()]).ok();
    let d = Client::new(&fake.host());
    assert_repo_matches(&d, "team/app", &fx, true);
    // The API answers for every subject, including the index child and the SBOM.
    for (subject, refs) in &fx.referrers {
        let api = d.referrers_api("team/app", subject, None).unwrap();
        let got: Vec<&str> = api["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        for r in refs {
            assert!(got.contains(&r.digest.as_str()), "{} not a referrer of {subject}", r.digest);
        }
    }
    assert_eq!(
        fake.tag_schema_pushes(),
        0,
        "restore created tag-schema tags on a registry with the referrers API: {:#?}",
        fake.requests()
    );
    assert!(d.list_tags("team/app").iter().all(|t| !is_tag_schema_tag(t)));
}

#[test]
fn fake_to_fake_round_trip_through_directory() {
    let (fake, fx) = fake_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", fake.host())]).ok();
    let dst = FakeRegistry::start();
    restore(&["--input", s(&out), &format!("{}/copy/app", dst.host())]).ok();
    let d = Client::new(&dst.host());
    assert_repo_matches(&d, "copy/app", &fx, true);
    assert_eq!(dst.tag_schema_pushes(), 0);
    // artifactType filtering works on what was restored.
    let v1 = fx.tag("v1");
    let sigs = d.referrers_api("copy/app", v1, Some(fixtures::SBOM_TYPE)).unwrap();
    assert_eq!(sigs["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn distribution_spec_referrers_tag_forces_tag_schema_on_restore() {
    let (fake, fx) = fake_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", fake.host())]).ok();

    let dst = FakeRegistry::start();
    restore(&["--distribution-spec", "v1.1-referrers-tag", "--input", s(&out), &dst.host()]).ok();
    let d = Client::new(&dst.host());
    assert!(dst.tag_schema_pushes() > 0, "no tag-schema tag pushed: {:#?}", dst.requests());
    for (subject, refs) in &fx.referrers {
        let mut listed = d.tag_schema_referrers("team/app", subject);
        listed.sort();
        let mut want: Vec<String> = refs.iter().map(|r| r.digest.clone()).collect();
        want.sort();
        assert_eq!(listed, want, "tag schema index of {subject}");
    }
    harness::assert_tag_schema_descriptors(&d, "team/app", &fx);
    // User tags are untouched by the schema.
    assert_eq!(d.user_tags("team/app").len(), fx.tags.len());
}

#[test]
fn distribution_spec_referrers_tag_forces_tag_schema_on_backup() {
    // The fake has referrers only through its API: forcing the tag schema finds none, and
    // never calls the API.
    let (fake, fx) = fake_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app.tar");
    backup(&[
        "--include-referrers",
        "--distribution-spec",
        "v1.1-referrers-tag",
        "-o",
        s(&out),
        &format!("{}/team/app", fake.host()),
    ])
    .ok();
    assert_eq!(fake.referrers_calls(), 0, "{:#?}", fake.requests());
    // The schema is consulted either by asking for the `sha256-<hex>` tag, or (cheaper) by seeing
    // that the repository's tag list does not hold it.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains(&format!("/manifests/{}", tag_schema_tag(fx.tag("v1"))))
                || r.contains("/tags/list")),
        "the tag schema was not consulted: {:#?}",
        fake.requests()
    );
    let layout = Layout::read(&out);
    assert_eq!(layout.entries().len(), fx.tags.len(), "no referrer found through the tag schema");
}

#[test]
fn distribution_spec_referrers_api_on_backup_uses_the_api() {
    let (fake, fx) = fake_with_all_kinds();
    let dir = tempdir();
    let out = dir.path().join("app");
    let repo = format!("{}/team/app", fake.host());
    backup(&[
        "--include-referrers",
        "--distribution-spec",
        "v1.1-referrers-api",
        "-o",
        s(&out),
        &repo,
    ])
    .ok();
    assert!(fake.referrers_calls() > 0);
    assert_layout_holds(&Layout::read(&out), &[(&repo, &fx)], true);
}
