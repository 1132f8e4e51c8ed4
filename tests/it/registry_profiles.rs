//! Backup and restore through every registry profile (harness/profiles.rs: ECR, GAR, Docker Hub,
//! GHCR, ACR, Harbor, Quay, each laid over a real Distribution or, for the referrers API, the
//! in-process fake), and the behaviours of each that the tool must meet, one test each.

use crate::harness;
use harness::fault_proxy::Fault;
use harness::fixtures::{self, Builder, RepoFixture};
use harness::layout::Layout;
use harness::profiles::{Profile, Profiled, Quirk};
use harness::relay::{Canned, HeaderEdit, Headers, Match, Seen};
use harness::{assert_layout_holds, assert_repo_matches, backup, oras, restore, s, tempdir, Oras};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `args`, then `credentials` (a profile's [`Profiled::credentials`]).
fn with_credentials<'a>(credentials: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(credentials.iter().map(String::as_str)).collect()
}

/// Every fixture kind in `team/app` of `p`, backed up with referrers from `p` into a directory and
/// restored to `copy/app` of `p`: the backup holds every manifest and blob byte for byte, and the
/// restored repository every tag, digest, blob and referrer of the source.
fn round_trip(profile: Profile) -> (Profiled, RepoFixture, tempfile::TempDir) {
    let p = Profiled::start(profile);
    let fx = fixtures::push_all_kinds(&p.client(), "team/app");
    let dir = tempdir();
    let out = dir.path().join("app");
    let src = format!("{}/team/app", p.host());
    let pull = p.credentials(false);
    backup(&with_credentials(&pull, &["--include-referrers", "-o", s(&out), &src])).ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);

    p.create_repository("copy/app");
    let push = p.credentials(true);
    let dst = format!("{}/copy/app", p.host());
    restore(&with_credentials(&push, &["--input", s(&out), &dst])).ok();
    assert_repo_matches(&p.client(), "copy/app", &fx, true);
    (p, fx, dir)
}

/// ECR: layers come from one-use signed URLs; the restore's repository is created first (a
/// missing one, and refused mounts: registry_quirks.rs).
#[test]
fn round_trip_through_ecr() {
    let (p, _, _) = round_trip(Profile::Ecr);
    p.settle();
    assert!(p.signer().issued() > 0, "blob downloads were redirected to signed URLs");
}

/// GAR: layers from signed URLs, upload sessions on another origin, tags paged without `Link`.
#[test]
fn round_trip_through_gar() {
    let (p, _, _) = round_trip(Profile::Gar);
    p.settle();
    assert!(p.signer().issued() > 0, "blob downloads were redirected to signed URLs");
}

/// Docker Hub: anonymous pull tokens, manifests through the pull quota, layers from the CDN.
#[test]
fn round_trip_through_dockerhub() {
    let (p, _, _) = round_trip(Profile::DockerHub);
    assert!(p.quota().gets() > 0, "manifests were fetched through the quota");
}

/// GHCR: relative upload `Location`s are followed (per-repository tokens and no catalog: the
/// tests below).
#[test]
fn round_trip_through_ghcr() {
    let (p, _, _) = round_trip(Profile::Ghcr);
    p.settle();
    let relative = p
        .relay()
        .seen()
        .iter()
        .filter(|r| r.applied.as_deref().is_some_and(|a| a.contains("relative upload locations")))
        .count();
    assert!(relative > 0, "upload sessions were answered with relative locations");
}

/// ACR: every token is an identity token exchanged by POST (`grant_type=refresh_token`).
#[test]
fn round_trip_through_acr() {
    let (p, _, _) = round_trip(Profile::Acr);
    let asked = p.tokens().expect("acr has a token server").requests();
    assert!(!asked.is_empty());
    for t in &asked {
        assert_eq!(
            (t.method.as_str(), t.grant_type.as_str(), t.account.as_str(), t.status),
            ("POST", "refresh_token", "alice", 200),
            "{t:#?}"
        );
    }
}

/// Harbor: referrers through the API (paged by `Link`), none written as tag-schema tags.
#[test]
fn round_trip_through_harbor() {
    let (p, _, _) = round_trip(Profile::Harbor);
    let fake = p.fake().expect("harbor runs on the fake");
    assert!(fake.referrers_calls() > 0, "the referrers API was used");
    assert_eq!(fake.tag_schema_pushes(), 0, "the registry indexed the referrers itself");
}

/// Quay: opaque tag pages in its own order; referrers by the tag schema (no API).
#[test]
fn round_trip_through_quay() {
    round_trip(Profile::Quay);
}

// ---------------------------------------------------------------------------------------------
// Downloads and uploads elsewhere.

/// Blob downloads answered with a 307 to a signed URL on another origin that works once (Docker
/// Hub's CDN, ECR's S3, GAR's storage): every blob is fetched once, each URL used once, and the
/// registry's token never goes there, though the registry got it with each blob request.
#[test]
fn signed_blob_urls_are_used_once_and_get_no_credentials() {
    let p = Profiled::start(Profile::DockerHub);
    let fx = fixtures::push_web(&p.client(), "team/web");
    let dir = tempdir();
    let out = dir.path().join("web");
    let src = format!("{}/team/web", p.host());
    backup(&["--include-referrers", "-o", s(&out), &src]).ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);
    p.settle();
    let storage = p.storage().expect("dockerhub redirects downloads").seen();
    assert_eq!(p.signer().issued() as usize, fx.blobs.len(), "one download per blob");
    assert_eq!(storage.len(), fx.blobs.len(), "one request per signed URL: {storage:#?}");
    assert_eq!(p.signer().refused(), 0, "no signed URL asked for twice");
    for r in &storage {
        assert!(r.header("authorization").is_none(), "credentials sent to storage: {r:#?}");
    }
    let with_token = p
        .relay()
        .seen()
        .iter()
        .filter(|r| r.path.contains("/blobs/sha256:") && r.header("authorization").is_some())
        .count();
    assert!(with_token > 0, "the registry itself was sent the token (there was one to leak)");
}

/// Upload sessions on another origin (`gar`): the bytes go there, none through the registry's
/// own origin. (That no credentials go to such an origin: hostile_registry.rs,
/// `upload_locations_on_another_origin_never_receive_credentials`.)
#[test]
fn upload_sessions_on_another_origin_are_followed() {
    let p = Profiled::start(Profile::Gar);
    let fx = fixtures::push_web(&p.client(), "team/web");
    let dir = tempdir();
    let out = dir.path().join("web");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/web", p.host())]).ok();
    p.relay().forget();
    restore(&["--input", s(&out), &format!("{}/copy/web", p.host())]).ok();
    assert_repo_matches(&p.client(), "copy/web", &fx, true);
    p.settle();
    let uploads = p.uploads().expect("gar sends uploads elsewhere");
    let there = uploads.count("PUT", "/blobs/uploads/") + uploads.count("PATCH", "/blobs/uploads/");
    assert!(there >= fx.blobs.len(), "every blob's bytes went to the session origin ({there})");
    let here =
        p.relay().count("PUT", "/blobs/uploads/") + p.relay().count("PATCH", "/blobs/uploads/");
    assert_eq!(here, 0, "no upload bytes through the registry's origin");
}

// ---------------------------------------------------------------------------------------------
// Docker Hub: tokens, the pull quota, no catalog.

/// The pull quota counts manifest GETs, not HEADs: a backup GETs each manifest once, and a second
/// backup of the unchanged repository into the same directory GETs none (it checks each tag and
/// referrers index with a HEAD). The registry is named as Docker Hub (`--resolve` onto the
/// profile), which the tool knows to count pulls before any answer says so; named by its address,
/// it is known to from the `RateLimit-Limit` of its first manifest answer.
#[test]
fn dockerhub_manifest_gets_are_only_those_a_backup_needs() {
    let p = Profiled::start(Profile::DockerHub);
    let fx = fixtures::push_web(&p.client(), "team/web");
    let dir = tempdir();
    let out = dir.path().join("web");
    let port = p.relay().port();
    let name = format!("registry-1.docker.io:{port}");
    let resolve = format!("{name}:127.0.0.1");
    let src = format!("{name}/team/web");
    let args = ["--include-referrers", "--plain-http", "--resolve", &resolve, "-o", s(&out), &src];
    backup(&args).ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);
    let needed = (fx.manifests.len() + fx.tag_schema_tags.len()) as u64;
    assert_eq!(p.quota().gets(), needed, "one GET per manifest and referrers index");
    p.relay().forget();
    backup(&args).ok();
    assert_eq!(p.quota().gets(), needed, "an unchanged repository costs no pull");
    p.settle();
    let heads = p.relay().count("HEAD", "/manifests/");
    assert_eq!(heads, fx.tags.len() + fx.tag_schema_tags.len(), "one HEAD per tag and index");

    // Named otherwise, the registry is known to count pulls from its first quota headers: one
    // at a time, only the first tag of a second backup is asked with a GET.
    let other = dir.path().join("by-address");
    let src = format!("{}/team/web", p.host());
    let args = ["--include-referrers", "--concurrency", "1", "-o", s(&other), &src];
    backup(&args).ok();
    let before = p.quota().gets();
    assert_eq!(before, 2 * needed, "the first backup by address GETs every manifest");
    backup(&args).ok();
    assert_eq!(p.quota().gets() - before, 1, "one GET before the quota headers were seen");
    // Anonymous pulls: every token was asked for without credentials.
    let tokens = p.tokens().expect("dockerhub has a token server").requests();
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t.account.is_empty() && t.status == 200), "{tokens:#?}");
}

/// A spent quota (429 with `Retry-After` and the quota headers) is waited out: the backup
/// completes, each pause is one warning with the registry's numbers.
#[test]
fn dockerhub_spent_quota_is_waited_out_with_one_warning_per_pause() {
    let p = Profiled::start(Profile::DockerHub);
    let fx = fixtures::push_web(&p.client(), "team/web");
    p.quota().set_limit(3);
    let dir = tempdir();
    let out = dir.path().join("web");
    let src = format!("{}/team/web", p.host());
    let run = backup(&["--include-referrers", "-o", s(&out), &src]);
    run.ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);
    assert!(p.quota().refusals() > 0, "the quota was spent");
    let warnings: Vec<&str> =
        run.stderr.lines().filter(|l| l.contains("is rate limiting requests")).collect();
    assert!(
        !warnings.is_empty() && warnings.len() as u64 <= p.quota().refusals(),
        "one warning per pause at most: {}",
        run.stderr
    );
    assert!(warnings.iter().all(|w| w.contains("ratelimit-remaining: 0;w=21600")), "{warnings:?}");
}

/// Docker Hub (401 for the catalog scope) and GHCR (404) list no repositories: `repo ls` and a
/// whole-registry backup say so in one line and fail.
#[test]
fn registries_without_a_catalog_say_so_in_one_line() {
    for profile in [Profile::DockerHub, Profile::Ghcr] {
        let p = Profiled::start(profile);
        fixtures::push_web(&p.client(), "team/web");
        let credentials = p.credentials(false);
        let host = p.host();
        let ls = oras(&with_credentials(&credentials, &["repo", "ls", &host]));
        ls.fails(1, &[&host, "does not list its repositories"]);
        let dir = tempdir();
        let out = dir.path().join("all");
        let run = backup(&with_credentials(&credentials, &["-o", s(&out), &host]));
        run.fails(1, &[&host, "does not list its repositories", "name the repositories"]);
        assert!(!out.exists(), "{profile:?}: nothing written");
    }
}

// ---------------------------------------------------------------------------------------------
// GHCR and ACR: tokens.

/// GHCR grants per repository: each token is asked for one repository, and a mount from one
/// restored repository into the other asks for both scopes in one token request.
#[test]
fn ghcr_tokens_are_per_repository_and_a_mount_asks_for_both() {
    let p = Profiled::start(Profile::Ghcr);
    let fa = fixtures::push_all_kinds(&p.client(), "team/app");
    let fw = fixtures::push_web(&p.client(), "team/web");
    let dir = tempdir();
    let out = dir.path().join("two");
    let (a, w) = (format!("{}/team/app", p.host()), format!("{}/team/web", p.host()));
    let credentials = p.credentials(true);
    backup(&with_credentials(&credentials, &["--include-referrers", "-o", s(&out), &a, &w])).ok();
    let tokens = p.tokens().expect("ghcr has a token server");
    let asked = tokens.requests();
    assert!(asked.iter().all(|t| t.scopes.len() == 1), "one repository per token: {asked:#?}");
    let before = asked.len();
    let (ca, cw) = (format!("{}/copy/app", p.host()), format!("{}/copy/web", p.host()));
    restore(&with_credentials(&credentials, &["--input", s(&out), &ca, &cw])).ok();
    assert_repo_matches(&p.client(), "copy/app", &fa, true);
    assert_repo_matches(&p.client(), "copy/web", &fw, true);
    let asked = tokens.requests()[before..].to_vec();
    let both = asked.iter().any(|t| {
        t.scopes.len() == 2
            && t.scopes
                .iter()
                .any(|s| s.starts_with("repository:copy/") && s.ends_with(":pull,push"))
            && t.scopes.iter().any(|s| s.starts_with("repository:copy/") && s.ends_with(":pull"))
    });
    assert!(both, "a mount asks for push on the target and pull on the source: {asked:#?}");
}

// ---------------------------------------------------------------------------------------------
// Uploads: body limits, minimum chunks, PATCH refused. These belong to no one registry: each is
// added to a profile whose own rules leave uploads alone (`quay`).

/// `v1` of `repo`: one OCI image whose one layer is `len` bytes.
fn push_big(p: &Profiled, repo: &str, len: usize) -> RepoFixture {
    let mut b = Builder::new(&p.client(), repo);
    let big = b.blob(fixtures::OCI_LAYER_GZIP, &fixtures::pseudo_random("big-layer", len));
    b.oci_image_with_layers(Some("v1"), "big", "amd64", &[big]);
    b.finish()
}

/// A backup directory of `repo` of `p` (no referrers), in `dir`.
fn backed_up(p: &Profiled, repo: &str, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let out = dir.path().join("backup");
    backup(&["-o", s(&out), &format!("{}/{repo}", p.host())]).ok();
    out
}

/// The sizes of the PATCH requests of each upload session (by its path), in order.
fn patches_by_session(p: &Profiled) -> BTreeMap<String, Vec<u64>> {
    let mut sessions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in p.relay().seen().iter().filter(|r| r.method == "PATCH") {
        let session = r.path.split('?').next().unwrap_or_default().to_string();
        let len = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        sessions.entry(session).or_default().push(len);
    }
    sessions
}

/// The upload sessions (by path) that were sent a request `refused` picks and never a DELETE:
/// sessions a refusal left open on the registry.
fn left_open(p: &Profiled, refused: impl Fn(&Seen) -> bool) -> Vec<String> {
    let seen = p.relay().seen();
    let session = |r: &Seen| r.path.split('?').next().unwrap_or_default().to_string();
    let deleted: Vec<String> = seen.iter().filter(|r| r.method == "DELETE").map(session).collect();
    seen.iter().filter(|r| refused(r)).map(session).filter(|s| !deleted.contains(s)).collect()
}

/// A proxy in front of the registry refusing request bodies over its limit with 413 (Cloudflare's,
/// <https://github.com/cloudflare/serverless-registry/issues/67>): the blob refused whole is sent
/// again in chunks under the limit, with one warning; the sessions refused are deleted.
#[test]
fn a_blob_refused_whole_with_413_is_uploaded_in_chunks() {
    let p = Profiled::start(Profile::Quay);
    let fx = push_big(&p, "team/big", 20 << 20);
    let dir = tempdir();
    let out = backed_up(&p, "team/big", &dir);
    let limit = 17 << 20;
    p.always(Match::any().path("/blobs/uploads/"), Quirk::BodyLimit(limit));
    let run = restore(&["--input", s(&out), &format!("{}/copy/big", p.host())]);
    run.ok();
    assert_repo_matches(&p.client(), "copy/big", &fx, false);
    p.settle();
    let refused = p
        .relay()
        .seen()
        .iter()
        .filter(|r| r.header("content-length").and_then(|v| v.parse::<u64>().ok()) > Some(limit))
        .count();
    assert!(refused >= 1, "the whole blob was refused first");
    let oversized = |r: &Seen| {
        r.path.contains("/blobs/uploads/")
            && r.header("content-length").and_then(|v| v.parse::<u64>().ok()) > Some(limit)
    };
    assert_eq!(left_open(&p, oversized), Vec::<String>::new(), "refused sessions are deleted");
    let chunked: Vec<Vec<u64>> =
        patches_by_session(&p).into_values().filter(|sizes| sizes.len() > 1).collect();
    assert_eq!(chunked.len(), 1, "the big blob went in chunks: {chunked:?}");
    assert!(chunked[0].iter().all(|n| *n <= limit), "{chunked:?}");
    let warned = run.stderr.lines().filter(|l| l.contains("refuses a blob in one request")).count();
    assert_eq!(warned, 1, "{}", run.stderr);
}

/// `OCI-Chunk-Min-Length` announced with the upload session: every chunk but a session's last is
/// at least that long, though the configured chunk size is smaller.
#[test]
fn chunks_are_never_smaller_than_the_registry_minimum() {
    let p = Profiled::start(Profile::Quay);
    let fx = push_big(&p, "team/big", (4 << 20) + 1000);
    let dir = tempdir();
    let out = backed_up(&p, "team/big", &dir);
    let min: u64 = 1 << 20;
    p.always(
        Match::method("POST").path("/blobs/uploads/"),
        Quirk::SetHeaders(vec![("OCI-Chunk-Min-Length".into(), min.to_string())]),
    );
    Oras::new(&["restore", "--no-tty", "--input", s(&out), &format!("{}/copy/big", p.host())])
        .env("ORAS_UPLOAD_CHUNK_SIZE", "262144")
        .run()
        .ok();
    assert_repo_matches(&p.client(), "copy/big", &fx, false);
    p.settle();
    let sessions = patches_by_session(&p);
    assert!(sessions.values().any(|s| s.len() > 1), "the big blob went in chunks: {sessions:?}");
    for sizes in sessions.values() {
        let (_, all_but_last) = sizes.split_last().expect("a session with a PATCH");
        assert!(all_but_last.iter().all(|n| *n >= min), "a chunk under the minimum: {sizes:?}");
    }
}

/// PATCH refused (405): no upload is held in a session (the refused one is deleted); the blob goes
/// in one PUT, and PATCH is not asked again.
#[test]
fn a_registry_refusing_patch_gets_whole_blobs() {
    let p = Profiled::start(Profile::Quay);
    let fx = push_big(&p, "team/big", 3 << 20);
    let dir = tempdir();
    let out = backed_up(&p, "team/big", &dir);
    p.always(Match::method("PATCH"), Quirk::Fault(Fault::status(405)));
    restore(&["--input", s(&out), &format!("{}/copy/big", p.host())]).ok();
    assert_repo_matches(&p.client(), "copy/big", &fx, false);
    p.settle();
    assert!(p.relay().count("PATCH", "") <= 1, "PATCH asked once at most");
    let patched = |r: &Seen| r.method == "PATCH";
    assert_eq!(left_open(&p, patched), Vec::<String>::new(), "the refused session is deleted");
    let whole = p.relay().seen().iter().any(|r| {
        r.method == "PUT"
            && r.path.contains("/blobs/uploads/")
            && r.header("content-length").and_then(|v| v.parse::<u64>().ok()) == Some(3 << 20)
    });
    assert!(whole, "the big blob went in one PUT");
}

// ---------------------------------------------------------------------------------------------
// Manifests and tags.

/// Manifest answers without `Docker-Content-Digest` (HEAD and GET): digests are computed from the
/// bytes; the backup and a restore into the same registry lose nothing.
#[test]
fn manifests_without_a_digest_header_are_digested_here() {
    let p = Profiled::start(Profile::Quay);
    let fx = fixtures::push_all_kinds(&p.client(), "team/app");
    let drop: HeaderEdit = Arc::new(|headers: &mut Headers, _: &Seen| {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("docker-content-digest"))
    });
    p.always(Match::any().path("/manifests/"), Quirk::EditHeaders("no digest header", drop));
    let dir = tempdir();
    let out = dir.path().join("app");
    let src = format!("{}/team/app", p.host());
    backup(&["--include-referrers", "-o", s(&out), &src]).ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);
    restore(&["--input", s(&out), &format!("{}/copy/app", p.host())]).ok();
    assert_repo_matches(&p.client(), "copy/app", &fx, true);
    // And a second restore, which asks about every tag, finds them all in place.
    restore(&["--input", s(&out), &format!("{}/copy/app", p.host())]).ok();
    assert_repo_matches(&p.client(), "copy/app", &fx, true);
}

/// Quay's tag pages (opaque `next_page` links, its own order, a tag again at a page boundary):
/// `repo tags` lists each tag once, sorted, having followed every link.
#[test]
fn quay_tag_pages_are_followed_sorted_and_deduplicated() {
    let p = Profiled::start(Profile::Quay);
    let fx = fixtures::push_all_kinds(&p.client(), "team/app");
    let run = oras(&["repo", "tags", &format!("{}/team/app", p.host())]);
    run.ok();
    let stdout = run.stdout_str();
    let listed: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    let want: Vec<&str> = fx.tags.keys().map(String::as_str).collect();
    assert_eq!(listed, want, "every tag once, sorted");
    p.settle();
    assert!(p.relay().count("GET", "next_page=") > 1, "the links were followed");
}

/// A registry that refuses a manifest type it does not know (Quay, MANIFEST_INVALID,
/// <https://github.com/oras-project/oras/issues/738>): the error names the manifest, its media
/// type and artifact type, and how to leave such artifacts out.
#[test]
fn quay_refusing_an_artifact_type_names_the_manifest() {
    let p = Profiled::start(Profile::Quay);
    let fx = fixtures::push_signed_image(&p.client(), "team/app");
    let dir = tempdir();
    let out = dir.path().join("app");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/app", p.host())]).ok();
    let sbom = &fx.referrers[fx.tag("v1")]
        .iter()
        .find(|r| r.artifact_type.as_deref() == Some(fixtures::SBOM_TYPE))
        .expect("an SBOM of v1")
        .digest;
    let invalid = Canned::json(
        400,
        r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{"message":"failed to parse manifest"}}]}"#,
    );
    p.always(
        Match::method("PUT").path(&format!("/manifests/{sbom}")),
        Quirk::Fault(Fault::Answer(invalid)),
    );
    let run = restore(&["--input", s(&out), &format!("{}/copy/app", p.host())]);
    run.fails(
        1,
        &[sbom, harness::client::OCI_MANIFEST, fixtures::SBOM_TYPE, "--exclude-referrers"],
    );
}

/// Tags paged by `n` and `last` without `Link` (`gar`): a full page is followed by `last`, every
/// tag listed once.
#[test]
fn tag_pages_without_link_are_followed_by_last() {
    let p = Profiled::start(Profile::Gar);
    let fx = fixtures::push_many_tags(&p.client(), "many", 1003);
    let run = oras(&["repo", "tags", &format!("{}/many", p.host())]);
    run.ok();
    let stdout = run.stdout_str();
    let listed: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    let want: Vec<&str> = fx.tags.keys().map(String::as_str).collect();
    assert_eq!(listed.len(), want.len());
    assert_eq!(listed, want, "every tag once, sorted");
    p.settle();
    assert!(p.relay().count("GET", "last=") >= 1, "the next page was asked by last");
}

// ---------------------------------------------------------------------------------------------
// Harbor: the referrers API.

/// Referrers listed in pages linked by `Link` (the profile lists two per page): every referrer of
/// a subject with five is backed up. `discover --artifact-type` filters on this side, so whether
/// the registry applies the filter (and says so with `OCI-Filters-Applied`) changes nothing: the
/// filter is never asked of it.
#[test]
fn harbor_referrers_pages_are_all_read_and_filtered_here() {
    let p = Profiled::start(Profile::Harbor);
    let mut b = Builder::new(&p.client(), "team/app");
    let v1 = b.oci_image(Some("v1"), "app", "amd64");
    for i in 0..4 {
        b.referrer(&v1, fixtures::SIGNATURE_TYPE, format!("sig-{i}").as_bytes(), "sig");
    }
    let sbom = b.referrer(&v1, fixtures::SBOM_TYPE, br#"{"spdxVersion":"SPDX-2.3"}"#, "sbom");
    let fx = b.finish();
    let fake = p.fake().expect("harbor runs on the fake");
    fake.reset_counters();
    let dir = tempdir();
    let out = dir.path().join("app");
    let src = format!("{}/team/app", p.host());
    backup(&["--include-referrers", "-o", s(&out), &src]).ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);
    let pages: Vec<String> =
        fake.requests().into_iter().filter(|r| r.contains("/referrers/")).collect();
    assert!(pages.iter().any(|r| r.contains("page=2")), "every page was read: {pages:#?}");

    let run = oras(&["discover", "--artifact-type", fixtures::SBOM_TYPE, &format!("{src}:v1")]);
    run.ok();
    assert!(run.stdout_str().contains(&sbom.digest), "{}", run.stdout_str());
    for r in fx.referrers[&v1.digest].iter().filter(|r| r.digest != sbom.digest) {
        assert!(!run.stdout_str().contains(&r.digest), "{} listed: {}", r.digest, run.stdout_str());
    }
    assert!(
        fake.requests().iter().all(|r| !r.contains("artifactType=")),
        "the filter is applied here, never asked of the registry"
    );
}

/// The referrers API answering 404 with OCI error codes (Quay before
/// <https://github.com/quay/quay/pull/3071>) says "none listed here" for that subject: the tag
/// schema is read for it, and the API is still asked for the others. A bare 404 says there is no
/// API: it is asked once, and the tag schema serves from then on.
#[test]
fn a_referrers_404_with_error_codes_is_none_here_and_a_bare_404_no_api() {
    let p = Profiled::start(Profile::Harbor);
    let mut b = Builder::new(&p.client(), "team/app");
    let v1 = b.oci_image(Some("v1"), "one", "amd64");
    b.referrer(&v1, fixtures::SIGNATURE_TYPE, b"sig-of-v1", "sig v1");
    b.update_tag_schema(&v1.digest);
    let v2 = b.oci_image(Some("v2"), "two", "amd64");
    b.referrer(&v2, fixtures::SBOM_TYPE, br#"{"spdxVersion":"SPDX-2.3"}"#, "sbom v2");
    let fx = b.finish();
    let src = format!("{}/team/app", p.host());

    let unknown = Canned::json(
        404,
        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
    );
    p.always(
        Match::method("GET").path(&format!("/referrers/{}", v1.digest)),
        Quirk::Fault(Fault::Answer(unknown)),
    );
    let dir = tempdir();
    let out = dir.path().join("codes");
    backup(&["--include-referrers", "-o", s(&out), &src]).ok();
    assert_layout_holds(&Layout::read(&out), &[(&src, &fx)], true);
    p.settle();
    assert_eq!(
        p.relay().count("GET", &format!("/referrers/{}", v2.digest)),
        1,
        "v2 asked by the API"
    );

    p.relay().clear();
    p.relay().forget();
    let bare = Canned::bytes(404, "text/plain; charset=utf-8", b"404 page not found\n");
    p.always(Match::method("GET").path("/referrers/"), Quirk::Fault(Fault::Answer(bare)));
    let out = dir.path().join("bare");
    backup(&["--include-referrers", "-o", s(&out), &src]).ok();
    p.settle();
    assert_eq!(p.relay().count("GET", "/referrers/"), 1, "no API: asked once");
    let layout = Layout::read(&out);
    let v1_sig = &fx.referrers[&v1.digest][0].digest;
    assert!(layout.blob(v1_sig).is_some(), "v1's referrer found by the tag schema");
}
