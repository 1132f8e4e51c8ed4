//! Registries that behave unlike Distribution 2.8, each behaviour laid over a real Distribution
//! by a relay (see harness/fault_proxy.rs) or the registry's profile (harness/profiles.rs): a
//! round trip through each loses nothing, and the refusal is learned once instead of being asked
//! again for every blob or manifest.
//! - ECR answers a cross-repository mount with an upload session (202) instead of mounting
//!   (<https://github.com/aws/containers-roadmap/issues/1589>), and creates no repository on push:
//!   `NAME_UNKNOWN` (<https://docs.aws.amazon.com/AmazonECR/latest/userguide/common-errors-docker.html>).
//! - Registries behind proxies or older implementations refuse HEAD on manifests (405), as the
//!   distribution spec allows clients to fall back to GET.
//! - Docker Hub answers 429 with its quota headers when the pull quota is spent
//!   (<https://docs.docker.com/docker-hub/usage/pulls/>).

use crate::harness;
use harness::fault_proxy::{Fault, FaultProxy};
use harness::fixtures;
use harness::profiles::{Profile, Profiled};
use harness::relay::{Canned, Match};
use harness::{assert_repo_matches, backup, restore, s, tempdir, Client, Registry};

/// A mount answered the ECR way (the `ecr` profile): an upload session instead; the blobs are
/// uploaded, and only the first mount is asked for.
#[test]
fn a_registry_that_does_not_mount_is_asked_once_and_gets_uploads() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let fa = fixtures::push_all_kinds(&c, "team/a");
    let fb = fixtures::push_all_kinds(&c, "team/b");
    let dir = tempdir();
    let out = dir.path().join("two.tar");
    let (a, b) = (format!("{}/team/a", src.host()), format!("{}/team/b", src.host()));
    backup(&["--include-referrers", "-o", s(&out), &a, &b]).ok();

    let ecr = Profiled::start(Profile::Ecr);
    ecr.create_repository("team/a");
    ecr.create_repository("team/b");
    restore(&["--input", s(&out), &ecr.host()]).ok();
    ecr.settle();
    let mounts = ecr.relay().count("", "mount=");
    assert_eq!(mounts, 1, "after one refusal no other mount is asked for");
    let dc = ecr.client();
    assert_repo_matches(&dc, "team/a", &fa, true);
    assert_repo_matches(&dc, "team/b", &fb, true);
}

/// A repository the registry does not have (the `ecr` profile creates none on push): one error
/// line naming it and what to do, one upload attempted, nothing pushed.
#[test]
fn a_missing_repository_is_one_clear_error_before_other_uploads() {
    let src = Registry::start();
    fixtures::push_all_kinds(&Client::new(&src.host()), "team/app");
    let dir = tempdir();
    let out = dir.path().join("b.tar");
    backup(&["-o", s(&out), &format!("{}/team/app", src.host())]).ok();

    let ecr = Profiled::start(Profile::Ecr);
    let run = restore(&["--input", s(&out), &format!("{}/prod/app", ecr.host())]);
    run.fails(1, &["prod/app", "does not exist", "create it first"]);
    ecr.settle();
    let posts = ecr.relay().count("POST", "/blobs/uploads/");
    assert_eq!(posts, 1, "no other upload is attempted once the repository is known missing");
    assert!(ecr.client().list_tags("prod/app").is_empty());
}

/// HEAD on manifests refused (405): resolved with GET, asked with HEAD once; a 429 with quota
/// headers is waited out and reported once.
#[test]
fn head_refusals_and_rate_limits_are_handled_and_reported() {
    let src = Registry::start();
    let fx = fixtures::push_web(&Client::new(&src.host()), "team/web");
    let dir = tempdir();
    let out = dir.path().join("web");
    backup(&["--include-referrers", "-o", s(&out), &format!("{}/team/web", src.host())]).ok();

    let dst = Registry::start();
    let proxy = FaultProxy::start(&dst.host());
    let limited = Canned::json(
        429,
        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#,
    )
    .header("Retry-After", "1")
    .header("RateLimit-Limit", "100;w=21600")
    .header("RateLimit-Remaining", "0;w=21600");
    proxy.inject(Match::method("HEAD").path("/blobs/"), Fault::Answer(limited), 2);
    proxy.always(Match::method("HEAD").path("/manifests/"), Fault::status(405));
    let target = format!("{}/team/web", proxy.host());
    let run = restore(&["--input", s(&out), &target]);
    run.ok();
    let warnings: Vec<&str> =
        run.stderr.lines().filter(|l| l.contains("is rate limiting requests")).collect();
    assert_eq!(warnings.len(), 1, "one warning per pause: {}", run.stderr);
    assert!(warnings[0].contains("ratelimit-remaining: 0;w=21600"), "{}", warnings[0]);
    assert_repo_matches(&Client::new(&dst.host()), "team/web", &fx, true);

    // A second run resolves every tag, by GET after the first HEAD is refused.
    proxy.forget();
    restore(&["--concurrency", "1", "--input", s(&out), &target]).ok();
    proxy.settle();
    let heads = proxy.count("HEAD", "/manifests/");
    assert!(heads <= 1, "HEAD on manifests asked {heads} times after a 405");
}
