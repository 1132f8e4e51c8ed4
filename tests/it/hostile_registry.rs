//! A hostile or broken registry cannot turn `oras` against its user. A relay in front of a real
//! Distribution 2.8 registry (harness/evil_proxy.rs) rewrites its answers, and a bystander
//! server on another origin records whatever reaches it. These tests prove that:
//! 1. tag names from the registry are validated: invalid ones are skipped with a warning, never
//!    asked for, never stored in a backup, never restored;
//! 2. credentials go only to the registry's own origin: pagination links to another origin are
//!    refused before anything is sent there, and upload locations elsewhere never get them;
//! 3. secrets a registry echoes in an error body are never shown;
//! 4. memory stays bounded and runs end quickly whatever size a registry answers with, and a
//!    pagination link to itself does not loop;
//! 5. a registry that trickles its answers cannot hang a run;
//! 6. control characters from the registry (tags, error texts) never reach the terminal raw;
//! 7. a blob whose bytes do not match its digest is named as such, even when the backup
//!    streams a tar to standard output.
//!
//! Every run is killed after [`RUN_LIMIT`], so that a product that hangs fails a test instead of
//! stalling the suite.

use crate::harness;

use base64::Engine as _;
use harness::client::OCI_INDEX;
use harness::evil_proxy::{Action, Answer, Bystander, EvilProxy};
use harness::fixtures::{Builder, RepoFixture};
use harness::layout::{Layout, REF_NAME};
use harness::registry::RegistryOptions;
use harness::relay::{Canned, Match};
use harness::run::Measured;
use harness::tls::{htpasswd_auth_yaml, write_htpasswd, Pki};
use harness::token_server::{TokenConfig, TokenServer};
use harness::{
    assert_layout_holds, assert_repo_matches, s, tempdir, Client, Failures, Oras, Registry, Run,
};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const REPO: &str = "team/app";
const USER: &str = "hostile-user";
/// Distinctive, so that finding it anywhere in an output can only mean it leaked.
const PASSWORD: &str = "S3cr3t-pw-9d1f";
/// Any run still going after this is killed (and so fails its test).
const RUN_LIMIT: Duration = Duration::from_secs(45);
/// How long a run refusing an oversized or endless answer may take.
const QUICK: Duration = Duration::from_secs(30);
/// How long a run against a trickling registry may take: a 3 s timeout, retries included.
const TRICKLE_BOUND: Duration = Duration::from_secs(40);
/// The peak resident memory allowed to a run fed 200 MB answers.
const MAX_RSS_KIB: u64 = 100 * 1024;
/// The size of the oversized answers.
const HUGE: u64 = 200 << 20;
/// An empty OCI index: a valid referrers API answer.
const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Runs `oras <args>`, killed after [`RUN_LIMIT`].
fn oras(args: &[&str]) -> Run {
    measured(args).run
}

/// Runs `oras <args>`, killed after [`RUN_LIMIT`], measuring its time and memory.
fn measured(args: &[&str]) -> Measured {
    Oras::new(args).measure(RUN_LIMIT)
}

/// `v1` and `v2`: two small OCI images (config and two layers each) in [`REPO`].
fn seed(c: &Client) -> RepoFixture {
    let mut b = Builder::new(c, REPO);
    b.oci_image(Some("v1"), "hostile-v1", "amd64");
    b.oci_image(Some("v2"), "hostile-v2", "arm64");
    b.finish()
}

/// A registry that wants Basic credentials ([`USER`], [`PASSWORD`]), and a plain one serving the
/// same storage, to seed and inspect it without credentials.
struct Guarded {
    plain: Registry,
    reg: Registry,
    _htpasswd: tempfile::TempDir,
}

/// Starts a [`Guarded`] pair with one htpasswd user, [`USER`].
fn guarded() -> Guarded {
    let plain = Registry::start();
    let dir = tempdir();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, &[(USER, PASSWORD)]);
    let reg = Registry::start_with(&RegistryOptions {
        auth: Some(htpasswd_auth_yaml(&htpasswd)),
        storage: Some(plain.storage()),
        ..RegistryOptions::default()
    });
    Guarded { plain, reg, _htpasswd: dir }
}

/// Standard base64, as Basic auth encodes `user:password`.
fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The password and the forms Basic auth puts it in.
fn basic_secrets() -> Vec<String> {
    let enc = b64(&format!("{USER}:{PASSWORD}"));
    vec![PASSWORD.to_string(), enc.clone(), format!("Basic {enc}")]
}

/// An error body that echoes the request's credentials, as a careless registry does.
fn echoing_error_body() -> String {
    let enc = b64(&format!("{USER}:{PASSWORD}"));
    json!({"errors": [{"code": "DENIED", "message": format!("bad Authorization: {{authorization}} password={PASSWORD} basic={enc}")}]})
        .to_string()
}

/// The digest of the first layer of the image tagged `tag`.
fn first_layer(fx: &RepoFixture, tag: &str) -> String {
    fx.manifests[&fx.tags[tag]].json()["layers"][0]["digest"].as_str().unwrap().to_string()
}

/// The stderr lines warning that a tag was skipped for its name.
fn skipped_tag_warnings(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("Warning: skipping tag ") && l.contains("not a valid tag"))
        .collect()
}

/// C0 control bytes other than newline and tab (ESC, BEL, CR, backspace...).
fn raw_controls(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|b| *b < 0x20 && *b != b'\n' && *b != b'\t').collect()
}

/// Neither stdout nor stderr holds a raw control character.
fn no_raw_controls(run: &Run) -> Result<(), String> {
    let (out, err) = (raw_controls(&run.stdout), raw_controls(run.stderr.as_bytes()));
    if out.is_empty() && err.is_empty() {
        return Ok(());
    }
    Err(format!(
        "raw control bytes {out:02x?} in stdout and {err:02x?} in stderr:\n{:?}",
        run.stderr
    ))
}

/// Neither stdout nor stderr holds any of `secrets`.
#[track_caller]
fn assert_no_secret(run: &Run, secrets: &[String]) {
    let text = run.output();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !text.contains(secret.as_str()),
            "secret {secret:?} shown by the run:\n{}",
            run.describe()
        );
    }
}

/// A measured run refused an answer with `keyword`, within `QUICK` and `MAX_RSS_KIB`.
fn refused_quickly_and_small(m: &Measured, keyword: &str) -> Result<(), String> {
    m.run.check_failure(1, &[keyword])?;
    if m.elapsed > QUICK {
        return Err(format!(
            "took {:.1} s (at most {QUICK:?}):\n{}",
            m.elapsed.as_secs_f64(),
            m.run.describe()
        ));
    }
    if m.peak_rss_kib >= MAX_RSS_KIB {
        let how = if m.peak_exact { "" } else { ", sampled" };
        return Err(format!(
            "peak RSS {} KiB{how} (under {MAX_RSS_KIB} KiB allowed):\n{}",
            m.peak_rss_kib,
            m.run.describe()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Names from the registry are validated.

/// Whether a request path only names what a backup of the valid tags of [`REPO`] needs: the API
/// root, its tag list, a valid tag's or a digest's manifest, a digest's blob or referrers.
fn expected_request(path: &str, valid_tags: &[&str]) -> bool {
    let is_digest = |r: &str| {
        r.strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let p = path.split('?').next().unwrap_or(path);
    let under = |what: &str| p.strip_prefix(&format!("/v2/{REPO}/{what}/")).map(str::to_string);
    p == "/v2/"
        || p == "/v2"
        || p == format!("/v2/{REPO}/tags/list")
        || under("manifests").is_some_and(|r| valid_tags.contains(&r.as_str()) || is_digest(&r))
        || under("blobs").is_some_and(|r| is_digest(&r))
        || under("referrers").is_some_and(|r| is_digest(&r))
}

#[test]
fn invalid_tag_names_from_the_registry_are_skipped_never_requested_nor_stored() {
    let reg = Registry::start();
    let mut b = Builder::new(&Client::new(&reg.host()), REPO);
    let v1 = b.oci_image(Some("v1"), "hostile-v1", "amd64");
    b.oci_image(Some("v2"), "hostile-v2", "arm64");
    // The longest valid tag, starting with the one non-alphanumeric character allowed there:
    // valid names must not be caught with the invalid ones.
    let edge = format!("_E.9-{}", "z".repeat(123));
    assert_eq!(edge.len(), 128);
    b.tag(&edge, &v1);
    let fx = b.finish();
    let valid = ["v1", "v2", edge.as_str()];

    // A path that would land in /tmp if a tag ever became a file name; unique to this run.
    let escaped_to = PathBuf::from(format!("/tmp/pwned-{}", std::process::id()));
    let invalid: Vec<String> = vec![
        "docker.io/library/ubuntu:latest".into(),
        "a/b".into(),
        format!("../../../../tmp/pwned-{}", std::process::id()),
        "q?x=1".into(),
        "esc\u{1b}[31mred".into(),
        String::new(),
        ".hidden".into(),
        "-dash".into(),
        "x".repeat(129),
        "new\nline".into(),
        "späce".into(),
        "%2e%2e%2fescape".into(),
    ];
    let mut listed: Vec<String> = vec!["v1".into()];
    listed.extend(invalid.iter().cloned());
    listed.push("v2".into());
    listed.push(edge.clone());
    let proxy = EvilProxy::start(&reg.host());
    let tags = json!({"name": REPO, "tags": listed}).to_string();
    proxy.always(
        Match::method("GET").path(&format!("/v2/{REPO}/tags/list")),
        Action::Respond(Canned::json(200, tags)),
    );
    let src = format!("{}/{REPO}", proxy.host());

    // The backup of every tag skips each invalid name with a warning and keeps the others.
    let out = tempdir();
    let dir = out.path().join("backup");
    let r = oras(&["backup", "--no-tty", "-o", s(&dir), &src]);
    r.ok();
    assert_eq!(
        skipped_tag_warnings(&r).len(),
        invalid.len(),
        "one warning per invalid tag:\n{}",
        r.describe()
    );
    let layout = Layout::read(&dir);
    let mut refs = layout.ref_names();
    refs.sort();
    let mut want: Vec<String> = valid.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(refs, want, "ref names in index.json");
    for e in layout.entries() {
        let name = e["annotations"][REF_NAME].as_str().unwrap_or_default();
        assert!(valid.contains(&name), "index.json entry with ref name {name:?}: {e}");
    }
    let index = String::from_utf8_lossy(&layout.files["index.json"]).into_owned();
    for fragment in
        ["pwned", "ubuntu", "x=1", ".hidden", "-dash", "escape", "spä", "\\u001b", "\u{1b}", "\\n"]
    {
        assert!(!index.contains(fragment), "index.json mentions {fragment:?}: {index}");
    }
    assert_layout_holds(&layout, &[(&src, &fx)], false);
    assert!(!escaped_to.exists(), "{} was created", escaped_to.display());
    let outside: Vec<_> =
        std::fs::read_dir(out.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("backup")], "files next to the backup");

    // Restoring it elsewhere pushes the valid tags only.
    let other = Registry::start();
    let dst = format!("{}/team/copy", other.host());
    oras(&["restore", "--no-tty", "--input", s(&dir), &dst]).ok();
    assert_repo_matches(&Client::new(&other.host()), "team/copy", &fx, false);

    // `repo tags` prints the valid tags only, with the same warnings.
    let r = oras(&["repo", "tags", &src]);
    r.ok();
    let mut printed: Vec<String> = r.stdout_str().lines().map(str::to_string).collect();
    printed.sort();
    assert_eq!(printed, want, "tags printed:\n{}", r.describe());
    assert_eq!(
        skipped_tag_warnings(&r).len(),
        invalid.len(),
        "one warning per invalid tag:\n{}",
        r.describe()
    );

    // Nothing the runs asked the registry for named an invalid tag.
    proxy.settle();
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s.path.contains("/manifests/")),
        "the runs fetched manifests through the proxy"
    );
    for req in &seen {
        let lower = req.path.to_ascii_lowercase();
        let named_invalid =
            ["pwned", "ubuntu", "x=1", "x%3d1", "hidden", "dash", "escape", "%1b", "\u{1b}"]
                .iter()
                .any(|f| lower.contains(f));
        assert!(
            !named_invalid && expected_request(&req.path, &valid),
            "unexpected request {} {}",
            req.method,
            req.path
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Credentials go only to the registry's own origin.

/// The run failed naming pagination to another host.
#[track_caller]
fn refused_foreign_pagination(run: &Run) {
    run.fails(1, &["pagination", "another host"]);
}

/// The bystander was never contacted.
#[track_caller]
fn untouched(bystander: &Bystander, case: &str) {
    bystander.settle();
    assert!(
        bystander.received().is_empty() && bystander.connections() == 0,
        "{case}: the other origin was contacted ({} connections): {:#?}",
        bystander.connections(),
        bystander.received()
    );
}

#[test]
fn pagination_to_another_origin_is_refused_before_anything_is_sent_there() {
    let g = guarded();
    seed(&Client::new(&g.plain.host()));
    let proxy = EvilProxy::start(&g.reg.host());
    // It would answer with a Basic challenge, fishing for the credentials.
    let bystander = Bystander::start(Answer::AskForBasicAuth);
    let src = format!("{}/{REPO}", proxy.host());
    let out = tempdir();

    // Another port of the same address, and the same port under another name: both another origin.
    let nexts = [
        format!("http://127.0.0.1:{}/v2/{REPO}/tags/list?n=1&last=x", bystander.port()),
        format!("http://localhost:{}/v2/{REPO}/tags/list?n=1&last=x", bystander.port()),
    ];
    for (i, next) in nexts.iter().enumerate() {
        proxy.clear();
        // Only on answers to requests with credentials: the run is past the 401 by then.
        let link = ("Link".to_string(), format!("<{next}>; rel=\"next\""));
        proxy.always(
            Match::method("GET").path("/tags/list").authorized(),
            Action::SetHeaders(vec![link]),
        );
        let before = proxy.fired();
        let dir = out.path().join(format!("tags{i}"));
        refused_foreign_pagination(&oras(&[
            "backup",
            "--no-tty",
            "-u",
            USER,
            "-p",
            PASSWORD,
            "-o",
            s(&dir),
            &src,
        ]));
        assert!(proxy.fired() > before, "the tag list was answered with the link");
        untouched(&bystander, &format!("backup, next page at {next}"));
        refused_foreign_pagination(&oras(&["repo", "tags", "-u", USER, "-p", PASSWORD, &src]));
        untouched(&bystander, &format!("repo tags, next page at {next}"));
    }

    // The referrers API: a valid empty page whose next page is elsewhere.
    proxy.clear();
    let link = format!(
        "<http://127.0.0.1:{}/v2/{REPO}/referrers/sha256:{}?n=1>; rel=\"next\"",
        bystander.port(),
        "0".repeat(64)
    );
    let page =
        Canned::json(200, EMPTY_INDEX).header("Content-Type", OCI_INDEX).header("Link", &link);
    proxy.always(Match::method("GET").path("/referrers/").authorized(), Action::Respond(page));
    let dir = out.path().join("referrers");
    let r = oras(&[
        "backup",
        "--no-tty",
        "--include-referrers",
        "-u",
        USER,
        "-p",
        PASSWORD,
        "-o",
        s(&dir),
        &format!("{src}:v1"),
    ]);
    assert!(proxy.fired() > 0, "the referrers API was asked:\n{}", r.describe());
    refused_foreign_pagination(&r);
    untouched(&bystander, "referrers, next page on another port");
}

#[test]
fn upload_locations_on_another_origin_never_receive_credentials() {
    let g = guarded();
    seed(&Client::new(&g.plain.host()));
    let out = tempdir();
    let layout = out.path().join("app");
    oras(&["backup", "--no-tty", "-o", s(&layout), &format!("{}/{REPO}", g.plain.host())]).ok();
    let proxy = EvilProxy::start(&g.reg.host());
    let secrets = basic_secrets();

    // A harmless other origin, and one that asks for Basic credentials when it gets a request.
    for (i, (answer, host)) in
        [(Answer::NotFound, "127.0.0.1"), (Answer::AskForBasicAuth, "localhost")]
            .into_iter()
            .enumerate()
    {
        let bystander = Bystander::start(answer);
        proxy.clear();
        let location = format!(
            "http://{host}:{}/v2/team/copy{i}/blobs/uploads/evil-session?_state=stolen",
            bystander.port()
        );
        // Only sessions opened with credentials: those are the runs that hold some.
        proxy.always(
            Match::method("POST").path("/blobs/uploads/").authorized(),
            Action::SetHeaders(vec![("Location".into(), location)]),
        );
        let dst = format!("{}/team/copy{i}", proxy.host());
        let r =
            oras(&["restore", "--no-tty", "-u", USER, "-p", PASSWORD, "--input", s(&layout), &dst]);
        assert!(r.code.is_some() && !r.stderr.contains("panicked"), "{}", r.describe());
        assert!(
            proxy.fired() > 0,
            "no upload session was opened with credentials:\n{}",
            r.describe()
        );
        assert_no_secret(&r, &secrets);
        bystander.settle();
        for req in bystander.received() {
            assert!(
                req.header("authorization").is_none(),
                "credentials sent to {host}:{}: {req:#?}",
                bystander.port()
            );
            for (name, value) in &req.headers {
                for secret in &secrets {
                    assert!(
                        !value.contains(secret.as_str()),
                        "secret in header {name} sent to another origin: {req:#?}"
                    );
                }
            }
            assert!(
                !req.path.contains(PASSWORD),
                "password in a URL sent to another origin: {req:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Secrets are never echoed.

#[test]
fn credentials_echoed_in_registry_error_bodies_are_never_shown() {
    let g = guarded();
    seed(&Client::new(&g.plain.host()));
    let out = tempdir();
    let layout = out.path().join("app");
    oras(&["backup", "--no-tty", "-o", s(&layout), &format!("{}/{REPO}:v1", g.plain.host())]).ok();
    let proxy = EvilProxy::start(&g.reg.host());
    let secrets = basic_secrets();
    let src = format!("{}/{REPO}:v1", proxy.host());

    // A manifest GET answered 400 with the credentials in the body (with and without --debug,
    // which traces every request).
    proxy.always(
        Match::method("GET").path("/manifests/").authorized(),
        Action::Respond(Canned::json(400, echoing_error_body())),
    );
    for debug in [false, true] {
        let dir = out.path().join(format!("manifest-{debug}"));
        let mut args = vec!["backup", "--no-tty", "-u", USER, "-p", PASSWORD, "-o", s(&dir), &src];
        if debug {
            args.insert(1, "--debug");
        }
        let r = oras(&args);
        r.fails(1, &["400"]);
        assert_no_secret(&r, &secrets);
    }
    let echoed = proxy.seen().into_iter().any(|s| {
        s.applied.is_some() && s.header("authorization").is_some_and(|a| a.starts_with("Basic "))
    });
    assert!(echoed, "the error answers echoed Basic credentials");

    // A blob upload answered 500 (retried, then given up on) with the same body.
    proxy.clear();
    proxy.always(
        Match::method("POST").path("/blobs/uploads/").authorized(),
        Action::Respond(Canned::json(500, echoing_error_body())),
    );
    let r = oras(&[
        "restore",
        "--no-tty",
        "-u",
        USER,
        "-p",
        PASSWORD,
        "--input",
        s(&layout),
        &format!("{}/team/copy", proxy.host()),
    ]);
    r.fails(1, &["500"]);
    assert_no_secret(&r, &secrets);
    assert!(proxy.fired() > 0, "the upload was answered with the echo");
}

#[test]
fn bearer_tokens_echoed_in_registry_error_bodies_are_never_shown() {
    let pki = Pki::generate(&["reg.test"]);
    let ts = TokenServer::start(
        &pki,
        TokenConfig::default().user(USER, PASSWORD).grant(USER, "", "pull,push"),
    );
    let plain = Registry::start();
    seed(&Client::new(&plain.host()));
    let reg = Registry::start_with(&RegistryOptions {
        auth: Some(ts.registry_auth_yaml()),
        storage: Some(plain.storage()),
        ..RegistryOptions::default()
    });
    let proxy = EvilProxy::start(&reg.host());
    proxy.always(
        Match::method("GET").path("/manifests/").authorized(),
        Action::Respond(Canned::json(400, echoing_error_body())),
    );
    let out = tempdir();
    let dir = out.path().join("app");
    let r = oras(&[
        "backup",
        "--no-tty",
        "-u",
        USER,
        "-p",
        PASSWORD,
        "-o",
        s(&dir),
        &format!("{}/{REPO}:v1", proxy.host()),
    ]);
    r.fails(1, &["400"]);
    let tokens = ts.issued();
    assert!(!tokens.is_empty(), "a token was issued");
    let echoed = proxy.seen().into_iter().any(|s| {
        s.applied.is_some() && s.header("authorization").is_some_and(|a| a.starts_with("Bearer "))
    });
    assert!(echoed, "the error answer echoed a bearer token");
    let mut secrets = basic_secrets();
    secrets.extend(tokens);
    assert_no_secret(&r, &secrets);
}

// ---------------------------------------------------------------------------------------------
// 4. Bounded memory, no endless pagination.

#[test]
fn huge_answers_fail_fast_in_bounded_memory() {
    let reg = Registry::start();
    seed(&Client::new(&reg.host()));
    let proxy = EvilProxy::start(&reg.host());
    let out = tempdir();
    let all_tags = format!("{}/{REPO}", proxy.host());
    let v1 = format!("{all_tags}:v1");
    let tags_list = || Match::method("GET").path("/tags/list");
    let manifest_get = || Match::method("GET").path("/manifests/");
    // 200 MB of valid-looking tags after a real one; 200 MB of error message (5xx: retried).
    let tags = Canned::huge(
        200,
        "application/json",
        &format!(r#"{{"name":"{REPO}","tags":["v1","#),
        r#""t-0123456789","#,
        HUGE,
    );
    let error = Canned::huge(
        500,
        "application/json",
        r#"{"errors":[{"code":"UNKNOWN","message":""#,
        "A",
        HUGE,
    );
    let cases = [
        ("a 200 MB tag list with its length announced", tags_list(), tags.clone(), &all_tags),
        ("a 200 MB tag list, chunked", tags_list(), tags.chunked(), &all_tags),
        ("a 200 MB error body with its length announced", manifest_get(), error.clone(), &v1),
        ("a 200 MB error body, chunked", manifest_get(), error.chunked(), &v1),
    ];
    let mut failures = Failures::default();
    for (i, (case, when, answer, src)) in cases.into_iter().enumerate() {
        proxy.clear();
        proxy.always(when, Action::Respond(answer));
        let dir = out.path().join(format!("case{i}"));
        let m = measured(&["backup", "--no-tty", "-o", s(&dir), src]);
        failures.check(case, refused_quickly_and_small(&m, "limit"));
    }
    // 200 MB of token answer: the registry's challenge names a token realm that floods.
    let realm = format!("http://{}/token", proxy.host());
    let token = Canned::huge(200, "application/json", r#"{"token":""#, "A", HUGE);
    let challenge = Canned::json(
        401,
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
    .header("WWW-Authenticate", &format!(r#"Bearer realm="{realm}",service="evil""#));
    for (case, token) in [
        ("a 200 MB token answer", token.clone()),
        ("a 200 MB token answer, chunked", token.chunked()),
    ] {
        proxy.clear();
        proxy.always(Match::method("GET").path("/token"), Action::Respond(token));
        proxy.always(Match::any().path("/v2/"), Action::Respond(challenge.clone()));
        let m = measured(&["repo", "tags", &all_tags]);
        failures.check(case, refused_quickly_and_small(&m, "limit"));
    }
    failures.assert_none();
}

#[test]
fn a_pagination_link_to_the_same_page_fails_fast_in_bounded_memory() {
    let reg = Registry::start();
    seed(&Client::new(&reg.host()));
    let proxy = EvilProxy::start(&reg.host());
    let out = tempdir();
    let src = format!("{}/{REPO}", proxy.host());
    // The real page every time, its next page being the URL just asked for.
    let cases = [
        ("relative", "<{path}>; rel=\"next\"".to_string()),
        ("absolute", format!("<http://{}{{path}}>; rel=\"next\"", proxy.host())),
    ];
    let mut failures = Failures::default();
    for (name, link) in cases {
        proxy.clear();
        proxy.always(
            Match::method("GET").path("/tags/list"),
            Action::SetHeaders(vec![("Link".into(), link)]),
        );
        let dir = out.path().join(name);
        let m = measured(&["backup", "--no-tty", "-o", s(&dir), &src]);
        failures.check(
            &format!("backup, {name} link to itself"),
            refused_quickly_and_small(&m, "pagination"),
        );
        let m = measured(&["repo", "tags", &src]);
        failures.check(
            &format!("repo tags, {name} link to itself"),
            refused_quickly_and_small(&m, "pagination"),
        );
    }
    assert!(proxy.fired() > 0, "the tag lists carried the link");
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// 5. No hang on a trickling registry.

/// Backs up `reference` (a repository of the proxy) with `flags` through a proxy that trickles the
/// bodies of the answers matching `when(fixture)` one byte every 2 s; returns the measured run and
/// how many answers were trickled.
fn backup_trickled(
    when: impl FnOnce(&RepoFixture) -> Match,
    reference: &str,
    flags: &[&str],
) -> (Measured, usize) {
    let reg = Registry::start();
    let fx = seed(&Client::new(&reg.host()));
    let proxy = EvilProxy::start(&reg.host());
    proxy.always(when(&fx), Action::Trickle(Duration::from_secs(2)));
    let out = tempdir();
    let dir = out.path().join("backup");
    let src = format!("{}/{reference}", proxy.host());
    let mut args = vec!["backup", "--no-tty"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["-o", s(&dir), &src]);
    let m = measured(&args);
    (m, proxy.fired())
}

/// The run failed with `keyword` within [`TRICKLE_BOUND`], after being trickled to.
#[track_caller]
fn gave_up_in_time((m, trickled): (Measured, usize), keyword: &str) {
    m.run.fails(1, &[keyword]);
    assert!(
        m.elapsed < TRICKLE_BOUND,
        "took {:.1} s (under {TRICKLE_BOUND:?} expected):\n{}",
        m.elapsed.as_secs_f64(),
        m.run.describe()
    );
    assert!(trickled > 0, "the failure came before any answer was trickled:\n{}", m.run.describe());
}

#[test]
fn a_trickled_manifest_times_out() {
    let m = backup_trickled(
        |_| Match::method("GET").path("/manifests/"),
        &format!("{REPO}:v1"),
        &["--request-timeout", "3"],
    );
    gave_up_in_time(m, "timed out");
}

#[test]
fn a_trickled_tag_list_times_out() {
    let m = backup_trickled(
        |_| Match::method("GET").path("/tags/list"),
        REPO,
        &["--request-timeout", "3"],
    );
    gave_up_in_time(m, "timed out");
}

#[test]
fn a_trickled_blob_is_reported_stalled() {
    let layer_of_v1 =
        |fx: &RepoFixture| Match::method("GET").path(&format!("/blobs/{}", first_layer(fx, "v1")));
    let m = backup_trickled(
        layer_of_v1,
        &format!("{REPO}:v1"),
        &["--speed-limit", "1024", "--speed-time", "3"],
    );
    gave_up_in_time(m, "stalled");
}

// ---------------------------------------------------------------------------------------------
// 6. No terminal control sequences.

/// A run whose registry answered with control characters: none reaches stdout or stderr raw,
/// and the line about them (the error, or a skipped-tag warning) shows them escaped.
fn shown_escaped(run: &Run, line: Option<&str>) -> Result<(), String> {
    no_raw_controls(run)?;
    match line {
        Some(l) if l.contains(r"\u{1b}") => Ok(()),
        Some(l) => Err(format!("expected ESC shown as \\u{{1b}} in {l:?}:\n{}", run.describe())),
        None => Err(format!("no line about the control characters:\n{}", run.describe())),
    }
}

#[test]
fn control_characters_from_the_registry_are_shown_escaped() {
    let reg = Registry::start();
    seed(&Client::new(&reg.host()));
    let proxy = EvilProxy::start(&reg.host());
    let out = tempdir();
    let all_tags = format!("{}/{REPO}", proxy.host());
    let v1 = format!("{all_tags}:v1");
    let mut failures = Failures::default();

    // Tags that set the window title, clear the screen, colour, return the carriage, ring the bell.
    let hostile = ["\u{1b}]0;owned\u{7}", "\u{1b}[2J\u{1b}[31mred", "cr\rreturn", "bell\u{7}\u{8}"];
    let mut listed = vec!["v1"];
    listed.extend(hostile);
    let tags = json!({"name": REPO, "tags": listed}).to_string();
    proxy.always(Match::method("GET").path("/tags/list"), Action::Respond(Canned::json(200, tags)));
    let r = oras(&["repo", "tags", &all_tags]);
    let warning =
        skipped_tag_warnings(&r).into_iter().find(|l| l.contains("owned")).map(str::to_string);
    failures.check("repo tags", r.check_ok().and_then(|_| shown_escaped(&r, warning.as_deref())));
    failures.check(
        "repo tags prints the valid tag only",
        if r.stdout == b"v1\n" { Ok(()) } else { Err(r.describe()) },
    );
    let dir = out.path().join("all");
    let r = oras(&["backup", "--no-tty", "-o", s(&dir), &all_tags]);
    let warning =
        skipped_tag_warnings(&r).into_iter().find(|l| l.contains("red")).map(str::to_string);
    failures.check("backup", r.check_ok().and_then(|_| shown_escaped(&r, warning.as_deref())));

    // Error texts: in a registry's JSON error (code and message), and in a plain-text body.
    let json_error = json!({"errors": [{"code": "\u{1b}[31mDENIED", "message": "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31mred alert\u{1b}[0m\r\u{8}"}]});
    let errors = [
        ("JSON error", Canned::json(400, json_error.to_string())),
        (
            "plain-text error",
            Canned::bytes(400, "text/plain", b"\x1b[31mplain failure\x1b[0m\x07\r\x1b]0;owned\x07"),
        ),
    ];
    for (i, (case, answer)) in errors.into_iter().enumerate() {
        proxy.clear();
        proxy.always(Match::method("GET").path("/manifests/"), Action::Respond(answer));
        let dir = out.path().join(format!("error{i}"));
        let r = oras(&["backup", "--no-tty", "-o", s(&dir), &v1]);
        let line = r.error_lines().first().map(|l| l.to_string());
        failures.check(
            case,
            r.check_failure(1, &["400"]).and_then(|_| shown_escaped(&r, line.as_deref())),
        );
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// 7. A digest mismatch is named, whatever the output.

#[test]
fn a_corrupted_blob_is_named_even_when_the_backup_streams_to_stdout() {
    let reg = Registry::start();
    let fx = seed(&Client::new(&reg.host()));
    let layer = first_layer(&fx, "v1");
    let proxy = EvilProxy::start(&reg.host());
    // Every time (retries included) the layer comes with one byte flipped.
    proxy.always(Match::method("GET").path(&format!("/blobs/{layer}")), Action::FlipByte(100));
    let src = format!("{}/{REPO}:v1", proxy.host());
    let out = tempdir();
    let dir = out.path().join("dir");
    for output in ["-", s(&dir)] {
        let r = oras(&["backup", "--no-tty", "-o", output, &src]);
        r.fails(1, &["digest", &layer]);
        assert!(
            !r.error_lines()[0].contains("already broken"),
            "the error blames the stream, not the blob:\n{}",
            r.describe()
        );
    }
    assert!(proxy.fired() >= 2, "the layer was corrupted for each run");
}
