//! Registry access as in the real world, against real Distribution 2.8 registries: basic auth
//! (htpasswd) over TLS with a test CA, token auth with an in-process token server (anonymous,
//! password and identity-token grants, stale tokens), mutual TLS, docker config.json and
//! credential helpers, proxies from the environment, `--resolve`, `-H`, retries through a
//! fault-injecting proxy, and no secret in any output.
//!
//! Guarded registries share their storage with a plain one, which the tests use to push
//! fixtures and check results without credentials. `login.rs` uses the same registries (the
//! `pub(crate)` items).

use crate::harness;

use base64::Engine as _;
use harness::fault_proxy::{Fault, FaultProxy};
use harness::fixtures::{self, RepoFixture};
use harness::layout::Layout;
use harness::registry::RegistryOptions;
use harness::relay::Match;
use harness::tls::{htpasswd_auth_yaml, write_htpasswd, Pki};
use harness::token_server::{TokenConfig, TokenServer};
use harness::{assert_layout_holds, assert_repo_matches, s, tempdir, Client, Oras, Registry, Run};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const ALICE_PW: &str = "alice-Pa55-wOrd-7f3a";
pub(crate) const BOB_PW: &str = "bob-secret-91c2-xyz";
pub(crate) const REFRESH: &str = "refresh-tok-5be1-c0ffee";

/// One PKI for the whole file (generating keys costs a little).
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(&["reg.test", "a.test", "b.test"]))
}

/// A guarded registry (TLS and/or auth) and a plain registry serving the same storage.
pub(crate) struct Guarded {
    pub(crate) plain: Registry,
    pub(crate) reg: Registry,
    /// The name the tests use, e.g. `reg.test:PORT` (resolved with `--resolve`).
    pub(crate) name: String,
}

impl Guarded {
    fn start(dns: &str, mut opts: RegistryOptions) -> Guarded {
        let plain = Registry::start();
        opts.storage = Some(plain.storage());
        let reg = Registry::start_with(&opts);
        let name = format!("{dns}:{}", reg.port());
        Guarded { plain, reg, name }
    }

    /// A plain-HTTP client on the shared storage.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.plain.host())
    }

    /// `--resolve` for the test name.
    pub(crate) fn resolve(&self) -> String {
        format!("{}:127.0.0.1", self.name)
    }

    pub(crate) fn repo(&self, path: &str) -> String {
        format!("{}/{path}", self.name)
    }
}

fn tls_opts() -> RegistryOptions {
    let p = pki();
    RegistryOptions {
        tls: Some((p.server_cert.clone(), p.server_key.clone())),
        ..RegistryOptions::default()
    }
}

/// A TLS registry with htpasswd users alice and bob.
pub(crate) fn basic_tls(dns: &str) -> (Guarded, tempfile::TempDir) {
    let dir = tempdir();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, &[("alice", ALICE_PW), ("bob", BOB_PW)]);
    let opts = RegistryOptions { auth: Some(htpasswd_auth_yaml(&htpasswd)), ..tls_opts() };
    (Guarded::start(dns, opts), dir)
}

/// A plain-HTTP registry guarded by `token`.
pub(crate) fn token_registry(token: &TokenServer) -> Guarded {
    Guarded::start(
        "127.0.0.1",
        RegistryOptions { auth: Some(token.registry_auth_yaml()), ..RegistryOptions::default() },
    )
}

/// `oras <args>` with `stdin` and `env`.
fn run(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let o = Oras::new(args).envs(env);
    match stdin {
        Some(bytes) => o.stdin(bytes).run(),
        None => o.run(),
    }
}

pub(crate) fn ca() -> &'static str {
    s(&pki().ca_cert)
}

pub(crate) fn seed(g: &Guarded, repo: &str) -> RepoFixture {
    fixtures::push_web(&g.client(), repo)
}

pub(crate) fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Every regular file under `dir` (or `dir` itself), read as bytes.
fn files_under(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push((path.to_path_buf(), std::fs::read(path).unwrap()));
    } else if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            out.extend(files_under(&e.path()));
        }
    }
    out
}

#[track_caller]
pub(crate) fn assert_no_secret(run: &Run, secrets: &[String], files: &[&Path]) {
    let text = run.output();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !text.contains(secret.as_str()),
            "secret {secret:?} in the output of oras {}:\n{text}",
            run.args.join(" ")
        );
        for root in files {
            for (p, bytes) in files_under(root) {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "secret {secret:?} written into {}", p.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Basic auth over TLS
// ---------------------------------------------------------------------------------------

#[test]
fn basic_auth_over_tls_with_ca_file() {
    let (g, _d) = basic_tls("reg.test");
    let fx = seed(&g, "team/web");
    let src = g.repo("team/web");
    let resolve = g.resolve();
    let out = tempdir();
    let layout = out.path().join("web");

    // No credentials: a clean failure that names what was tried and how to give others.
    let r = run(
        &["backup", "--no-tty", "--ca-file", ca(), "--resolve", &resolve, "-o", s(&layout), &src],
        None,
        &[],
    );
    r.fails(1, &["username and password"]);
    assert!(
        r.stderr.contains("anonymous access") && r.stderr.contains("--password-stdin"),
        "{}",
        r.stderr
    );
    assert!(!layout.join("index.json").exists());

    // A wrong password: refused, the account named, the password never shown.
    let r = run(
        &[
            "backup",
            "--no-tty",
            "--ca-file",
            ca(),
            "--resolve",
            &resolve,
            "-u",
            "alice",
            "--password-stdin",
            "-o",
            s(&layout),
            &src,
        ],
        Some(b"not-the-password\n"),
        &[],
    );
    r.fails(1, &["401"]);
    assert!(
        r.stderr.contains("\"alice\"") && r.stderr.contains("--password-stdin"),
        "{}",
        r.stderr
    );
    assert!(!r.output().contains("not-the-password"));

    // Right password from stdin.
    let r = run(
        &[
            "backup",
            "--no-tty",
            "--ca-file",
            ca(),
            "--resolve",
            &resolve,
            "-u",
            "alice",
            "--password-stdin",
            "-o",
            s(&layout),
            &src,
        ],
        Some(format!("{ALICE_PW}\n").as_bytes()),
        &[],
    );
    r.ok();
    assert_layout_holds(&Layout::read(&layout), &[(&src, &fx)], false);

    // Restore under another name with -p (warned about), then check through the plain side.
    let dst = g.repo("team/copy");
    let r = run(
        &[
            "restore",
            "--no-tty",
            "--ca-file",
            ca(),
            "--resolve",
            &resolve,
            "-u",
            "bob",
            "-p",
            BOB_PW,
            "--input",
            s(&layout),
            &dst,
        ],
        None,
        &[],
    );
    r.ok();
    assert!(r.stderr.contains("shell history"), "-p warns: {}", r.stderr);
    assert_repo_matches(&g.client(), "team/copy", &fx.subset(&["v1", "v2", "v3"], &[]), false);
}

#[test]
fn tls_verification_ca_file_and_insecure() {
    let g = Guarded::start("reg.test", tls_opts());
    seed(&g, "team/web");
    let repo = g.repo("team/web");
    let resolve = g.resolve();

    // System roots only: the test CA is unknown. No retries for certificate errors.
    let t = Instant::now();
    let r = run(&["repo", "tags", "--resolve", &resolve, &repo], None, &[]);
    r.fails(1, &["certificate"]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "certificate errors are not retried: {:?}",
        t.elapsed()
    );

    // A CA that did not issue the server's certificate.
    run(
        &["repo", "tags", "--resolve", &resolve, "--ca-file", s(&pki().other_ca_cert), &repo],
        None,
        &[],
    )
    .fails(1, &["certificate"]);

    // A --ca-file that is not a certificate.
    let bogus = tempdir();
    let bad = bogus.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    run(&["repo", "tags", "--resolve", &resolve, "--ca-file", s(&bad), &repo], None, &[])
        .fails(1, &["no PEM certificate"]);

    let r = run(
        &["repo", "tags", "--resolve", &resolve, "--ca-file", ca(), "--exclude-digest-tags", &repo],
        None,
        &[],
    );
    r.ok();
    assert_eq!(r.stdout_str().lines().collect::<Vec<_>>(), ["v1", "v2", "v3"]);

    let r = run(&["repo", "tags", "--resolve", &resolve, "--insecure", &repo], None, &[]);
    r.ok();
    assert!(r.stderr.contains("--insecure"), "--insecure warns: {}", r.stderr);
    assert!(r.stdout_str().contains("v2"));

    // Plain HTTP to a TLS port fails cleanly.
    let r = run(&["repo", "tags", "--resolve", &resolve, "--plain-http", &repo], None, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
}

#[test]
fn mutual_tls_client_certificate() {
    let p = pki();
    let g = Guarded::start(
        "reg.test",
        RegistryOptions { client_cas: vec![p.ca_cert.clone()], ..tls_opts() },
    );
    let fx = seed(&g, "team/web");
    let repo = g.repo("team/web");
    let resolve = g.resolve();

    let r = run(&["repo", "tags", "--resolve", &resolve, "--ca-file", ca(), &repo], None, &[]);
    assert_eq!(r.code, Some(1), "no client certificate must fail: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"));

    let out = tempdir();
    let tar = out.path().join("web.tar");
    let r = run(
        &[
            "backup",
            "--no-tty",
            "--resolve",
            &resolve,
            "--ca-file",
            ca(),
            "--cert-file",
            s(&p.client_cert),
            "--key-file",
            s(&p.client_key),
            "-o",
            s(&tar),
            &repo,
        ],
        None,
        &[],
    );
    r.ok();
    assert_layout_holds(&Layout::read(&tar), &[(&repo, &fx)], false);

    // One without the other is a usage error.
    let r = run(
        &[
            "repo",
            "tags",
            "--resolve",
            &resolve,
            "--ca-file",
            ca(),
            "--cert-file",
            s(&p.client_cert),
            &repo,
        ],
        None,
        &[],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let r = run(
        &[
            "repo",
            "tags",
            "--resolve",
            &resolve,
            "--ca-file",
            ca(),
            "--key-file",
            s(&p.client_key),
            &repo,
        ],
        None,
        &[],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    // A key that does not parse.
    let r = run(
        &[
            "repo",
            "tags",
            "--resolve",
            &resolve,
            "--ca-file",
            ca(),
            "--cert-file",
            s(&p.client_cert),
            "--key-file",
            s(&p.ca_cert),
            &repo,
        ],
        None,
        &[],
    );
    assert!(r.code == Some(1) || r.code == Some(2), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
}

// ---------------------------------------------------------------------------------------
// Token auth
// ---------------------------------------------------------------------------------------

pub(crate) fn token_config() -> TokenConfig {
    TokenConfig::default()
        .user("alice", ALICE_PW)
        .refresh_token(REFRESH, "alice")
        .grant("", "pub/", "pull")
        .grant("alice", "", "pull,push")
        .grant("alice", "*", "*")
}

#[test]
fn token_auth_anonymous_pull_and_password_push_with_mount_scopes() {
    let p = pki();
    let ts = TokenServer::start(p, token_config());
    let g = token_registry(&ts);
    let fx_a = seed(&g, "pub/a");
    let fx_b = seed(&g, "pub/b");
    let out = tempdir();
    let layout = out.path().join("pub");

    // Anonymous pull: GET with service and one pull scope per repository.
    let (a, b) = (g.repo("pub/a"), g.repo("pub/b"));
    run(&["backup", "--no-tty", "-o", s(&layout), &a, &b], None, &[]).ok();
    assert_layout_holds(&Layout::read(&layout), &[(&a, &fx_a), (&b, &fx_b)], false);
    let reqs = ts.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!((r.method.as_str(), r.account.as_str(), r.status), ("GET", "", 200), "{r:?}");
        assert_eq!(r.service, "oras-test-registry");
        assert_eq!(r.scopes.len(), 1, "one scope per token request: {r:?}");
    }
    let scopes: Vec<&str> = reqs.iter().map(|r| r.scopes[0].as_str()).collect();
    assert!(
        scopes.contains(&"repository:pub/a:pull") && scopes.contains(&"repository:pub/b:pull"),
        "{scopes:?}"
    );
    // A token is fetched once per scope, not per request.
    assert!(reqs.len() <= 4, "tokens are cached per scope: {reqs:#?}");

    // Anonymous push is refused with a clear message.
    let (na, nb) = (g.repo("new/a"), g.repo("new/b"));
    let r = run(&["restore", "--no-tty", "--input", s(&layout), &na, &nb], None, &[]);
    r.fails(1, &["401"]);
    assert!(r.stderr.contains("anonymous access"), "{}", r.stderr);

    // Password push: OAuth2 password grant by POST; the second repository's shared blob is
    // mounted from the first, with one token for both repositories.
    let before = ts.requests().len();
    let r = run(
        &[
            "restore",
            "--no-tty",
            "-u",
            "alice",
            "--password-stdin",
            "--input",
            s(&layout),
            &na,
            &nb,
        ],
        Some(ALICE_PW.as_bytes()),
        &[],
    );
    r.ok();
    assert_repo_matches(&g.client(), "new/a", &fx_a, false);
    assert_repo_matches(&g.client(), "new/b", &fx_b, false);
    let reqs = ts.requests()[before..].to_vec();
    assert!(
        reqs.iter()
            .all(|r| r.method == "POST" && r.grant_type == "password" && r.account == "alice"),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.scopes == ["repository:new/a:pull,push"]),
        "push scope requested: {reqs:#?}"
    );
    let mounted = reqs.iter().any(|r| {
        r.scopes.len() == 2
            && r.scopes.iter().any(|s| s.ends_with(":pull,push"))
            && r.scopes.iter().any(|s| s.starts_with("repository:new/") && s.ends_with(":pull"))
    });
    assert!(mounted, "a mount asks for push on the target and pull on the source: {reqs:#?}");
}

/// A token server that accepts the credentials but grants only pull: the refusal to push says so,
/// instead of blaming the password, and the token server is not asked again and again.
#[test]
fn credentials_that_may_pull_but_not_push_are_named_as_such() {
    const CAROL_PW: &str = "carol-pull-only-4e8b";
    let ts = TokenServer::start(
        pki(),
        TokenConfig::default().user("carol", CAROL_PW).grant("carol", "", "pull"),
    );
    let g = token_registry(&ts);
    let out = tempdir();
    let layout = out.path().join("app");
    let fx = seed(&g, "team/app");
    let src = g.repo("team/app");
    run(
        &["backup", "--no-tty", "-u", "carol", "--password-stdin", "-o", s(&layout), &src],
        Some(CAROL_PW.as_bytes()),
        &[],
    )
    .ok();
    assert_layout_holds(&Layout::read(&layout), &[(&src, &fx)], false);

    let before = ts.requests().len();
    let target = g.repo("copy/app");
    let r = run(
        &["restore", "--no-tty", "-u", "carol", "--password-stdin", "--input", s(&layout), &target],
        Some(CAROL_PW.as_bytes()),
        &[],
    );
    r.fails(1, &["may pull but not push to copy/app"]);
    assert!(r.stderr.contains("carol"), "the account is named: {}", r.stderr);
    assert!(!r.stderr.contains("not accepted"), "the password is not blamed: {}", r.stderr);
    assert_no_secret(&r, &[CAROL_PW.to_string(), b64(&format!("carol:{CAROL_PW}"))], &[]);
    let asked = ts.requests().len() - before;
    assert!(asked <= 20, "bounded token requests for a refusal, got {asked}: {:#?}", ts.requests());
    assert!(g.client().list_tags("copy/app").is_empty());
}

/// An HTTPS registry whose challenge names a token server on plain HTTP: refused before any
/// credential is sent there.
#[test]
fn an_https_registry_with_a_plain_http_token_realm_is_refused() {
    let ts = TokenServer::start(pki(), token_config());
    let g = Guarded::start(
        "reg.test",
        RegistryOptions { auth: Some(ts.registry_auth_yaml()), ..tls_opts() },
    );
    seed(&g, "pub/app");
    let r = run(
        &[
            "repo",
            "tags",
            "--resolve",
            &g.resolve(),
            "--ca-file",
            ca(),
            "-u",
            "alice",
            "--password-stdin",
            &g.repo("pub/app"),
        ],
        Some(ALICE_PW.as_bytes()),
        &[],
    );
    r.fails(1, &["token server on plain HTTP"]);
    assert!(r.stderr.contains(&ts.realm()), "the realm is named: {}", r.stderr);
    assert!(
        ts.requests().is_empty(),
        "the plain-HTTP token server was asked: {:#?}",
        ts.requests()
    );
}

/// An X.509 v1 client certificate (older private CAs issue them; rustls takes v3 only) is named as
/// such, with its file, in one line.
#[test]
fn an_x509_v1_client_certificate_is_named_in_the_error() {
    let dir = tempdir();
    let (key, csr, cert) =
        (dir.path().join("v1.key"), dir.path().join("v1.csr"), dir.path().join("v1.pem"));
    let openssl = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        s(&key),
        "-subj",
        "/CN=client",
        "-out",
        s(&csr),
    ]);
    // `x509 -req` without extensions issues a version 1 certificate.
    openssl(&["x509", "-req", "-in", s(&csr), "-signkey", s(&key), "-days", "2", "-out", s(&cert)]);
    let r = run(
        &["repo", "tags", "--cert-file", s(&cert), "--key-file", s(&key), "127.0.0.1:1/team/app"],
        None,
        &[],
    );
    r.fails(1, &["X.509 v1"]);
    assert!(r.stderr.contains(s(&cert)), "the file is named: {}", r.stderr);
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("Error:")).count(), 1, "{}", r.stderr);
}

#[test]
fn token_auth_password_falls_back_to_get_and_identity_tokens_use_refresh_grant() {
    let p = pki();
    let ts = TokenServer::start(p, TokenConfig { allow_post: false, ..token_config() });
    let g = token_registry(&ts);
    seed(&g, "priv/app");
    let repo = g.repo("priv/app");

    // The token server has no POST: the password goes by GET with basic auth.
    let r = run(
        &["repo", "tags", "-u", "alice", "--password-stdin", &repo],
        Some(ALICE_PW.as_bytes()),
        &[],
    );
    r.ok();
    assert!(r.stdout_str().contains("v3"));
    let reqs = ts.requests();
    assert!(reqs.iter().any(|r| r.method == "POST" && r.status == 404), "{reqs:#?}");
    let get =
        reqs.iter().find(|r| r.method == "GET" && r.status == 200).expect("a GET token request");
    assert_eq!(get.account, "alice");
    assert_eq!(get.scopes, ["repository:priv/app:pull"]);

    // Identity token by POST refresh_token grant.
    ts.configure(|c| c.allow_post = true);
    let before = ts.requests().len();
    let r = run(
        &["repo", "tags", "--identity-token-stdin", &repo],
        Some(format!("{REFRESH}\n").as_bytes()),
        &[],
    );
    r.ok();
    let reqs = ts.requests()[before..].to_vec();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.grant_type == "refresh_token" && r.account == "alice"),
        "{reqs:#?}"
    );

    // --identity-token works too (with a shell-history warning).
    let r = run(&["repo", "tags", "--identity-token", REFRESH, &repo], None, &[]);
    r.ok();
    assert!(r.stderr.contains("shell history"), "{}", r.stderr);

    // A wrong identity token: refused, described, never shown.
    let r = run(
        &["repo", "tags", "--identity-token-stdin", &repo],
        Some(b"wrong-refresh-token-value"),
        &[],
    );
    r.fails(1, &["identity token"]);
    assert!(r.stderr.contains("--identity-token-stdin"), "{}", r.stderr);
    assert!(!r.output().contains("wrong-refresh-token-value"));

    // A server that only speaks OAuth2 POST still works for passwords.
    ts.configure(|c| c.allow_get = false);
    run(
        &["repo", "tags", "-u", "alice", "--password-stdin", &repo],
        Some(ALICE_PW.as_bytes()),
        &[],
    )
    .ok();
}

#[test]
fn stale_cached_token_is_renewed_once_and_a_refused_fresh_token_fails() {
    let p = pki();
    // Tokens the registry stops accepting about 3 s after issue (60 s leeway), announced as
    // valid for 5 minutes: the client's cached token goes stale mid-run.
    let ts = TokenServer::start(
        p,
        TokenConfig { jwt_lifetime_secs: -57, expires_in: 300, ..token_config() },
    );
    let g = token_registry(&ts);
    let fx = seed(&g, "pub/app");
    let proxy = FaultProxy::start(&g.reg.host());
    // Hold the first blob download long enough for the token to go stale.
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::Delay(Duration::from_secs(5)), 1);
    let out = tempdir();
    let layout = out.path().join("app");
    let repo = format!("{}/pub/app", proxy.host());
    let r = run(&["backup", "--no-tty", "--concurrency", "1", "-o", s(&layout), &repo], None, &[]);
    r.ok();
    assert_layout_holds(&Layout::read(&layout), &[(&repo, &fx)], false);
    let pulls = ts.requests().iter().filter(|r| r.scopes == ["repository:pub/app:pull"]).count();
    assert!(pulls >= 2, "the stale token was renewed: {:#?}", ts.requests());
    assert!(proxy.seen().iter().any(|s| s.applied.is_some()));

    // Tokens refused as soon as issued: one renewal, then a clear failure, no loop.
    ts.configure(|c| c.jwt_lifetime_secs = -120);
    let before = ts.requests().len();
    let r = run(&["repo", "tags", &format!("{}/pub/app", g.name)], None, &[]);
    r.fails(1, &["401"]);
    assert!(r.stderr.contains("anonymous access"), "{}", r.stderr);
    let asked = ts.requests().len() - before;
    assert!((1..=2).contains(&asked), "bounded re-authentication, got {asked} token requests");
}

// ---------------------------------------------------------------------------------------
// Docker config and credential helpers
// ---------------------------------------------------------------------------------------

/// A `docker-credential-test` helper in a fresh directory: it logs each `get` and answers
/// for the hosts in `answers` (host -> (username, secret)).
fn credential_helper(answers: &[(&str, &str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let log = dir.path().join("helper.log");
    let mut cases = String::new();
    for (host, user, secret) in answers {
        cases.push_str(&format!(
            "  '{host}') printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\" ;;\n"
        ));
    }
    let script = format!(
        "#!/bin/sh\nserver=$(cat)\necho \"$1 $server\" >> '{}'\n[ \"$1\" = get ] || exit 1\ncase \"$server\" in\n{cases}  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        log.display()
    );
    let path = dir.path().join("docker-credential-test");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, log)
}

/// A helper stuck on a prompt nobody sees (a locked keychain in a CI job) does not hang the run.
#[test]
fn a_credential_helper_that_never_answers_is_given_up_on() {
    let (ga, _da) = basic_tls("reg.test");
    let helper = tempdir();
    let path = helper.path().join("docker-credential-stuck");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 60\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = tempdir();
    std::fs::write(
        cfg.path().join("config.json"),
        serde_json::json!({"credHelpers": {ga.name.clone(): "stuck"}}).to_string(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let r = run(
        &["repo", "tags", "--ca-file", ca(), "--resolve", &ga.resolve(), &ga.repo("src/app")],
        None,
        &[
            ("DOCKER_CONFIG", s(cfg.path())),
            ("PATH", &path_with(helper.path())),
            ("ORAS_CREDENTIAL_HELPER_TIMEOUT", "1"),
        ],
    );
    r.fails(1, &["docker-credential-stuck get` did not answer within 1 s"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
}

pub(crate) fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn per_registry_credentials_from_config_and_helpers() {
    let (ga, _da) = basic_tls("a.test");
    let (gb, _db) = basic_tls("b.test");
    let fx = seed(&ga, "src/app");
    let (helper_dir, helper_log) = credential_helper(&[(&ga.name, "alice", ALICE_PW)]);
    let cfg_dir = tempdir();
    let cfg = cfg_dir.path().join("config.json");
    // a.test through credHelpers, b.test through an auths entry.
    std::fs::write(
        &cfg,
        serde_json::json!({
            "credHelpers": {ga.name.clone(): "test"},
            "auths": {format!("https://{}", gb.name): {"auth": b64(&format!("bob:{BOB_PW}"))}},
        })
        .to_string(),
    )
    .unwrap();
    let path = path_with(helper_dir.path());
    let (ra, rb) = (ga.resolve(), gb.resolve());
    let copy_args = |cfg: &str| -> Vec<String> {
        vec![
            "copy".into(),
            "--no-tty".into(),
            "--registry-config".into(),
            cfg.into(),
            "--ca-file".into(),
            ca().into(),
            "--resolve".into(),
            ra.clone(),
            "--resolve".into(),
            rb.clone(),
            ga.repo("src/app:v2"),
            gb.repo("dst/app:v2"),
        ]
    };
    let args = copy_args(s(&cfg));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&argv, None, &[("PATH", &path)]);
    r.ok();
    assert_repo_matches(&gb.client(), "dst/app", &fx.subset(&["v2"], &[]), false);
    let log = std::fs::read_to_string(&helper_log).unwrap();
    assert!(log.contains(&format!("get {}", ga.name)), "the helper was asked for a.test: {log}");
    assert_no_secret(&r, &[ALICE_PW.into(), BOB_PW.into()], &[]);

    // The same through $DOCKER_CONFIG, and a credsStore that knows only a.test.
    let store_dir = tempdir();
    std::fs::write(
        store_dir.path().join("config.json"),
        serde_json::json!({
            "credsStore": "test",
            "auths": {gb.name.clone(): {"username": "bob", "password": BOB_PW}},
        })
        .to_string(),
    )
    .unwrap();
    let out = tempdir();
    let layout = out.path().join("app");
    let src = ga.repo("src/app");
    run(
        &["backup", "--no-tty", "--ca-file", ca(), "--resolve", &ra, "-o", s(&layout), &src],
        None,
        &[("PATH", &path), ("DOCKER_CONFIG", s(store_dir.path()))],
    )
    .ok();
    run(
        &[
            "restore",
            "--no-tty",
            "--ca-file",
            ca(),
            "--resolve",
            &rb,
            "--input",
            s(&layout),
            &gb.repo("dst/again"),
        ],
        None,
        &[("PATH", &path), ("DOCKER_CONFIG", s(store_dir.path()))],
    )
    .ok();
    assert_repo_matches(&gb.client(), "dst/again", &fx.subset(&["v1", "v2", "v3"], &[]), false);

    // ~/.docker/config.json when DOCKER_CONFIG is unset; a helper answering "not found"
    // leaves the registry anonymous, and the message says where credentials were looked for.
    let home = tempdir();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(
        home.path().join(".docker/config.json"),
        r#"{"credHelpers":{"nothing.here":"test"},"credsStore":"test"}"#,
    )
    .unwrap();
    let r = run(
        &["repo", "tags", "--ca-file", ca(), "--resolve", &rb, &gb.repo("dst/again")],
        None,
        &[("PATH", &path), ("DOCKER_CONFIG", ""), ("HOME", s(home.path()))],
    );
    r.fails(1, &["username and password"]);
    assert!(r.stderr.contains("docker-credential-test has none"), "{}", r.stderr);

    // Flags win over the config for the registries on the command line: a wrong flag
    // password fails although the config holds working credentials.
    let r = run(
        &[
            "repo",
            "tags",
            "--registry-config",
            s(&cfg),
            "--ca-file",
            ca(),
            "--resolve",
            &ra,
            "-u",
            "bob",
            "--password-stdin",
            &src,
        ],
        Some(b"not-bobs-password"),
        &[("PATH", &path)],
    );
    r.fails(1, &["401"]);
    assert!(
        r.stderr.contains("\"bob\"") && r.stderr.contains("--username/--password-stdin"),
        "{}",
        r.stderr
    );
    let r = run(
        &[
            "repo",
            "tags",
            "--registry-config",
            s(&cfg),
            "--ca-file",
            ca(),
            "--resolve",
            &ra,
            "-u",
            "bob",
            "--password-stdin",
            &src,
        ],
        Some(BOB_PW.as_bytes()),
        &[("PATH", &path)],
    );
    r.ok();

    // A helper that fails is reported by name; a missing --registry-config file is an error.
    let broken = tempdir();
    std::fs::write(
        broken.path().join("config.json"),
        r#"{"credHelpers":{"ZZ":"test"}}"#.replace("ZZ", &ga.name),
    )
    .unwrap();
    let r = run(
        &["repo", "tags", "--ca-file", ca(), "--resolve", &ra, &src],
        None,
        &[("DOCKER_CONFIG", s(broken.path()))],
    );
    r.fails(1, &["docker-credential-test"]);
    let r =
        run(&["repo", "tags", "--registry-config", "/nonexistent/config.json", &src], None, &[]);
    r.fails(1, &["/nonexistent/config.json"]);
    std::fs::write(cfg_dir.path().join("bad.json"), "{ not json").unwrap();
    let r = run(
        &["repo", "tags", "--registry-config", s(&cfg_dir.path().join("bad.json")), &src],
        None,
        &[],
    );
    r.fails(1, &["not a valid docker config.json"]);
}

#[test]
fn credential_helper_identity_token_for_a_token_registry() {
    let ts = TokenServer::start(pki(), token_config());
    let g = token_registry(&ts);
    seed(&g, "priv/app");
    let (dir, _log) = credential_helper(&[(&g.name, "<token>", REFRESH)]);
    let cfg = tempdir();
    std::fs::write(
        cfg.path().join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"test"}}}}"#, g.name),
    )
    .unwrap();
    let r = run(
        &["repo", "tags", &g.repo("priv/app")],
        None,
        &[("PATH", &path_with(dir.path())), ("DOCKER_CONFIG", s(cfg.path()))],
    );
    r.ok();
    assert!(
        ts.requests().iter().any(|r| r.grant_type == "refresh_token" && r.account == "alice"),
        "{:#?}",
        ts.requests()
    );
}

#[test]
fn credential_flag_combinations_are_usage_errors() {
    let target = "127.0.0.1:9/none/such";
    let cases: &[(&[&str], Option<&[u8]>)] = &[
        (&["-u", "alice"], None),
        (&["-p", "pw"], None),
        (&["--password-stdin"], Some(b"pw")),
        (&["-u", "alice", "-p", "pw", "--password-stdin"], Some(b"pw")),
        (&["-u", "alice", "--identity-token", "t"], None),
        (&["-u", "alice", "--identity-token-stdin"], Some(b"t")),
        (&["--identity-token", "t", "--identity-token-stdin"], Some(b"t")),
        (&["--password-stdin", "--identity-token-stdin"], Some(b"t")),
        (&["-p", "pw", "--identity-token", "t"], None),
        (&["-u", "alice", "--password-stdin"], Some(b"")),
        (&["--identity-token-stdin"], Some(b"\n")),
        (&["--cert-file", "/x.pem"], None),
        (&["-H", "no colon here"], None),
        (&["--resolve", "nonsense"], None),
    ];
    for (flags, stdin) in cases {
        let mut args = vec!["repo", "tags"];
        args.extend_from_slice(flags);
        args.push(target);
        let r = run(&args, *stdin, &[]);
        let expect =
            if flags.contains(&"-H") || flags.contains(&"--resolve") { [1, 2] } else { [2, 2] };
        assert!(
            r.code.is_some_and(|c| expect.contains(&c)),
            "oras {} should be a usage error, got {:?}: {}",
            args.join(" "),
            r.code,
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"));
    }
}

// ---------------------------------------------------------------------------------------
// Transport: proxies, --resolve, --plain-http, headers
// ---------------------------------------------------------------------------------------

#[test]
fn https_proxy_http_proxy_and_no_proxy_from_the_environment() {
    let g = Guarded::start("reg.test", tls_opts());
    seed(&g, "team/web");
    let repo = g.repo("team/web");

    // HTTPS through a CONNECT proxy: the name is never resolved locally.
    let proxy = FaultProxy::start(&g.reg.host());
    let proxy_url = format!("http://{}", proxy.host());
    let env = [("HTTPS_PROXY", proxy_url.as_str()), ("NO_PROXY", "")];
    let r = run(&["repo", "tags", "--ca-file", ca(), &repo], None, &env);
    r.ok();
    assert!(r.stdout_str().contains("v1"));
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.method == "CONNECT" && s.path == g.name), "{seen:#?}");

    // NO_PROXY bypasses it.
    let resolve = g.resolve();
    let n = proxy.seen().len();
    let env = [("HTTPS_PROXY", proxy_url.as_str()), ("NO_PROXY", "reg.test")];
    run(&["repo", "tags", "--ca-file", ca(), "--resolve", &resolve, &repo], None, &env).ok();
    assert_eq!(proxy.seen().len(), n, "NO_PROXY host must not use the proxy");

    // Plain HTTP through HTTP_PROXY (absolute-form requests), with --plain-http for a
    // name that is not localhost.
    let plain_proxy = FaultProxy::start(&g.plain.host());
    let plain_url = format!("http://{}", plain_proxy.host());
    let name = format!("plain.test:{}", g.plain.port());
    let r = run(
        &["repo", "tags", "--plain-http", &format!("{name}/team/web")],
        None,
        &[("HTTP_PROXY", &plain_url), ("NO_PROXY", "")],
    );
    r.ok();
    assert!(r.stdout_str().contains("v3"));
    assert!(plain_proxy.seen().iter().all(|s| s.as_forward_proxy), "{:#?}", plain_proxy.seen());
    assert!(!plain_proxy.seen().is_empty());
}

#[test]
fn resolve_plain_http_and_headers_on_every_request() {
    let ts = TokenServer::start(pki(), token_config());
    let g = token_registry(&ts);
    let fx = seed(&g, "pub/app");
    let proxy = FaultProxy::start(&g.reg.host());
    // A name that only --resolve knows, over plain HTTP, through the recording proxy.
    let name = format!("myregistry.test:{}", proxy.port());
    let resolve = format!("{name}:127.0.0.1");
    let out = tempdir();
    let layout = out.path().join("app");
    let src = format!("{name}/pub/app");
    let r = run(
        &[
            "backup",
            "--no-tty",
            "--plain-http",
            "--resolve",
            &resolve,
            "-H",
            "X-Oras-Test: hello",
            "--header",
            "X-Second: two",
            "-o",
            s(&layout),
            &src,
        ],
        None,
        &[],
    );
    r.ok();
    assert_layout_holds(&Layout::read(&layout), &[(&src, &fx)], false);
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(s.header("x-oras-test"), Some("hello"), "header on {} {}", s.method, s.path);
        assert_eq!(s.header("x-second"), Some("two"));
        assert!(s.header("host").is_some_and(|h| h.starts_with("myregistry.test")), "{s:?}");
    }
    for t in ts.requests() {
        assert!(
            t.headers.iter().any(|(n, v)| n == "x-oras-test" && v == "hello"),
            "token request without -H header: {t:?}"
        );
    }
    // --resolve to another port: a registry on a standard port, served from a test port. The requests
    // still name the registry as written (Host: alias.test, as curl --resolve does), and so do the upload
    // URLs the registry hands out, which must be dialled at the test port too.
    let alias = format!("alias.test:80:127.0.0.1:{}", proxy.port());
    let before = proxy.seen().len();
    let r = run(
        &["repo", "tags", "--plain-http", "--resolve", &alias, "alias.test/pub/app"],
        None,
        &[],
    );
    r.ok();
    assert!(r.stdout_str().contains("v2"));
    let r = run(
        &[
            "restore",
            "--no-tty",
            "--plain-http",
            "--resolve",
            &alias,
            "-u",
            "alice",
            "--password-stdin",
            "--input",
            s(&layout),
            "alias.test/team/aliased",
        ],
        Some(format!("{ALICE_PW}\n").as_bytes()),
        &[],
    );
    r.ok();
    assert_repo_matches(&g.client(), "team/aliased", &fx, false);
    let seen = proxy.seen();
    assert!(
        seen[before..].iter().any(|s| s.method == "PUT" && s.path.contains("/blobs/uploads/")),
        "uploads went through the alias"
    );
    for s in &seen[before..] {
        assert_eq!(s.header("host"), Some("alias.test"), "{} {}", s.method, s.path);
    }
    // ... and when the reference names a port of its own, that port is remapped too.
    let alias = format!("alias.test:5555:127.0.0.1:{}", proxy.port());
    let r = run(
        &["repo", "tags", "--plain-http", "--resolve", &alias, "alias.test:5555/pub/app"],
        None,
        &[],
    );
    r.ok();
    assert!(r.stdout_str().contains("v2"));
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

#[test]
fn transient_failures_are_retried() {
    let reg = Registry::start();
    let fx = fixtures::push_web(&Client::new(&reg.host()), "team/web");
    let proxy = FaultProxy::start(&reg.host());
    proxy.inject(Match::method("GET").path("/tags/list"), Fault::unavailable(), 1);
    proxy.inject(Match::method("GET").path("/tags/list"), Fault::too_many_requests("1"), 1);
    proxy.inject(Match::method("GET").path("/manifests/"), Fault::cut_body(10), 1);
    proxy.inject(Match::method("GET").path("/manifests/"), Fault::status(502), 1);
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::cut_body(100), 2);
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::Close, 1);
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::status(504), 1);
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::status(408), 1);
    let out = tempdir();
    let layout = out.path().join("web.tar");
    let src = format!("{}/team/web", proxy.host());
    let t = Instant::now();
    let r = run(&["backup", "--no-tty", "--include-referrers", "-o", s(&layout), &src], None, &[]);
    r.ok();
    assert!(t.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    assert_eq!(proxy.pending(), 0, "every fault fired");
    assert_layout_holds(&Layout::read(&layout), &[(&src, &fx)], true);

    // Uploads: a failed upload restarts its session; 500 and 503 on manifest pushes retry.
    let dst = Registry::start();
    let dproxy = FaultProxy::start(&dst.host());
    dproxy.inject(Match::method("PUT").path("/blobs/uploads/"), Fault::status(500), 1);
    dproxy.inject(Match::method("POST").path("/blobs/uploads/"), Fault::unavailable(), 1);
    dproxy.inject(Match::method("PUT").path("/manifests/"), Fault::unavailable(), 2);
    dproxy.inject(Match::method("HEAD").path("/blobs/"), Fault::Close, 1);
    let r = run(
        &["restore", "--no-tty", "--input", s(&layout), &format!("{}/team/web", dproxy.host())],
        None,
        &[],
    );
    r.ok();
    assert_eq!(dproxy.pending(), 0, "every fault fired");
    assert_repo_matches(&Client::new(&dst.host()), "team/web", &fx, true);
}

#[test]
fn retries_are_bounded_and_errors_say_what_failed() {
    let reg = Registry::start();
    fixtures::push_web(&Client::new(&reg.host()), "team/web");
    let proxy = FaultProxy::start(&reg.host());
    proxy.inject(Match::any(), Fault::unavailable(), 1000);
    let t = Instant::now();
    let src = format!("{}/team/web", proxy.host());
    let r = run(&["repo", "tags", &src], None, &[]);
    r.fails(1, &["503"]);
    assert!(
        r.stderr.contains("INJECTED: fault injected by the test proxy"),
        "registry errors[] shown: {}",
        r.stderr
    );
    assert!(r.stderr.contains("team/web"), "the reference is named: {}", r.stderr);
    assert!(r.stderr.contains("list tags"), "the operation is named: {}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(30), "bounded in time: {:?}", t.elapsed());
    let n = proxy.seen().len();
    assert!((2..=5).contains(&n), "bounded in count: {n} attempts");

    // A Retry-After beyond the time budget gives up at once instead of sleeping.
    proxy.clear();
    proxy.inject(Match::any(), Fault::too_many_requests("3600"), 1000);
    let t = Instant::now();
    run(&["repo", "tags", &src], None, &[]).fails(1, &["429"]);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());

    // Connection refused: retried a few times, then a clear error.
    let dead = format!("127.0.0.1:{}/team/web", harness::registry::free_port());
    let t = Instant::now();
    run(&["repo", "tags", &dead], None, &[]).fails(1, &["connect"]);
    assert!(t.elapsed() < Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

#[test]
fn debug_trace_and_files_never_show_secrets() {
    let ts = TokenServer::start(pki(), token_config());
    let tg = token_registry(&ts);
    seed(&tg, "priv/app");
    let (bg, _d) = basic_tls("reg.test");
    seed(&bg, "team/web");
    let out = tempdir();
    let mut secrets = vec![
        ALICE_PW.to_string(),
        REFRESH.to_string(),
        b64(&format!("alice:{ALICE_PW}")),
        b64(&format!("<token>:{REFRESH}")),
        "Basic ".to_string() + &b64(&format!("alice:{ALICE_PW}")),
    ];
    let mut runs = Vec::new();

    // Token registry: password grant, identity token, a wrong password.
    let l1 = out.path().join("one");
    runs.push(run(
        &["backup", "--debug", "-u", "alice", "-p", ALICE_PW, "-o", s(&l1), &tg.repo("priv/app")],
        None,
        &[],
    ));
    runs.last().unwrap().ok();
    ts.configure(|c| c.allow_post = false);
    let l2 = out.path().join("two.tar");
    runs.push(run(
        &["backup", "--debug", "--identity-token", REFRESH, "-o", s(&l2), &tg.repo("priv/app")],
        None,
        &[],
    ));
    runs.last().unwrap().ok();
    let l3 = out.path().join("three");
    runs.push(run(
        &[
            "restore",
            "--debug",
            "-u",
            "alice",
            "--password-stdin",
            "--input",
            s(&l1),
            &tg.repo("priv/copy"),
        ],
        Some(ALICE_PW.as_bytes()),
        &[],
    ));
    runs.last().unwrap().ok();
    runs.push(run(
        &[
            "backup",
            "--debug",
            "-u",
            "alice",
            "-p",
            "wrong-Pa55-4d1e",
            "-o",
            s(&l3),
            &tg.repo("priv/app"),
        ],
        None,
        &[],
    ));
    assert_eq!(runs.last().unwrap().code, Some(1));
    secrets.push("wrong-Pa55-4d1e".into());

    // Basic auth over TLS, from a docker config and from flags.
    let cfg = tempdir();
    std::fs::write(
        cfg.path().join("config.json"),
        serde_json::json!({"auths": {bg.name.clone(): {"auth": b64(&format!("alice:{ALICE_PW}"))}}}).to_string(),
    )
    .unwrap();
    let resolve = bg.resolve();
    let l4 = out.path().join("four");
    runs.push(run(
        &[
            "backup",
            "--debug",
            "--ca-file",
            ca(),
            "--resolve",
            &resolve,
            "-o",
            s(&l4),
            &bg.repo("team/web"),
        ],
        None,
        &[("DOCKER_CONFIG", s(cfg.path()))],
    ));
    runs.last().unwrap().ok();
    runs.push(run(
        &[
            "copy",
            "--debug",
            "--ca-file",
            ca(),
            "--resolve",
            &resolve,
            "-u",
            "alice",
            "-p",
            ALICE_PW,
            &bg.repo("team/web:v1"),
            &bg.repo("team/x:v1"),
        ],
        None,
        &[],
    ));
    runs.last().unwrap().ok();
    runs.push(run(
        &[
            "repo",
            "tags",
            "--debug",
            "--ca-file",
            ca(),
            "--resolve",
            &resolve,
            "-u",
            "alice",
            "-p",
            "wrong-Pa55-4d1e",
            &bg.repo("team/web"),
        ],
        None,
        &[],
    ));
    assert_eq!(runs.last().unwrap().code, Some(1));

    secrets.extend(ts.issued());
    assert!(!ts.issued().is_empty());
    for r in &runs {
        assert!(r.stderr.contains("[debug]"), "--debug traces: {}", r.stderr);
        assert!(
            r.stderr.contains("<redacted>") || r.stderr.contains("credentials redacted"),
            "{}",
            r.stderr
        );
        // The password given with -p is part of argv, not of the output.
        assert_no_secret(r, &secrets, &[out.path()]);
    }
}
