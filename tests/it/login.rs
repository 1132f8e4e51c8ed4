//! `oras login` and `oras logout` without Docker on the machine, against real Distribution
//! registries (htpasswd over TLS, and token auth through the in-process token server): the
//! credentials are checked before anything is stored, stored in a temporary `DOCKER_CONFIG` (mode
//! 0600, every other key kept) or in a fake credential helper that records what it was given (the
//! secret on its stdin, never on its argv, never in config.json), used by a later backup without
//! any credential flag, and removed again.

use crate::auth_tls::{
    assert_no_secret, b64, basic_tls, ca, path_with, pki, seed, token_config, token_registry,
    ALICE_PW, REFRESH,
};
use crate::harness;

use harness::layout::Layout;
use harness::token_server::TokenServer;
use harness::{assert_layout_holds, assert_repo_matches, s, tempdir, Oras, Run};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `oras <args>` with `DOCKER_CONFIG=<cfg>` and more environment, `stdin` on standard input.
/// A command line: `head`, the TLS flags, then `tail`.
fn cmdline<'a>(head: &[&'a str], tls: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tls).chain(tail).copied().collect()
}

fn oras_with(cfg: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let o = Oras::new(args).env("DOCKER_CONFIG", s(cfg)).envs(env);
    match stdin {
        Some(text) => o.stdin(text.as_bytes()).run(),
        None => o.run(),
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read config")).expect("config is JSON")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// A config with keys of its own (other tools', another registry's credentials), which every
/// login and logout must keep.
fn busy_config(dir: &Path) -> PathBuf {
    let path = dir.join("config.json");
    let other = json!({
        "psFormat": "table {{.ID}}",
        "auths": {"other.example": {"auth": b64("carol:carols-pw")}},
        "credHelpers": {"unrelated.example": "nothing"},
        "plugins": {"x": {"enabled": "true"}},
    });
    std::fs::write(&path, serde_json::to_string_pretty(&other).expect("json")).expect("write");
    path
}

#[track_caller]
fn assert_other_keys_kept(config: &Value) {
    assert_eq!(config["psFormat"], "table {{.ID}}", "{config:#}");
    assert_eq!(config["auths"]["other.example"]["auth"], b64("carol:carols-pw"), "{config:#}");
    assert_eq!(config["credHelpers"]["unrelated.example"], "nothing", "{config:#}");
    assert_eq!(config["plugins"]["x"]["enabled"], "true", "{config:#}");
}

#[test]
fn login_checks_a_password_stores_it_privately_and_logout_removes_it() {
    let (g, _d) = basic_tls("reg.test");
    let fx = seed(&g, "team/web");
    let dir = tempdir();
    let cfg = busy_config(dir.path());
    let before = std::fs::read(&cfg).expect("read");
    let resolve = g.resolve();
    let tls = ["--ca-file", ca(), "--resolve", &resolve];
    let login = |extra: &[&str], stdin: Option<&str>| {
        let args: Vec<&str> =
            cmdline(&["login"], &tls, extra).into_iter().chain([g.name.as_str()]).collect();
        oras_with(dir.path(), &args, stdin, &[])
    };

    // A wrong password: refused by the registry, one error line, nothing stored.
    let r = login(&["-u", "alice", "--password-stdin"], Some("not-the-password\n"));
    r.fails(1, &[&format!("login to {}", g.name), "the registry refused the credentials (401)"]);
    assert!(r.stderr.contains("nothing was stored"), "{}", r.stderr);
    assert_eq!(std::fs::read(&cfg).expect("read"), before, "the config is untouched");
    assert_no_secret(&r, &["not-the-password".into()], &[dir.path()]);

    // The right one: checked, stored as Docker stores it, the file private, the rest kept.
    let r = login(&["-u", "alice", "--password-stdin"], Some(&format!("{ALICE_PW}\n")));
    r.ok();
    assert!(r.stdout_str().lines().any(|l| l == "Login Succeeded"), "{}", r.describe());
    assert!(r.stderr.contains("unencrypted"), "the plain-text store is said: {}", r.stderr);
    let config = read_json(&cfg);
    assert_eq!(config["auths"][&g.name]["auth"], b64(&format!("alice:{ALICE_PW}")));
    assert_other_keys_kept(&config);
    assert_eq!(mode(&cfg), 0o600);
    assert_no_secret(&r, &[ALICE_PW.into()], &[]);

    // A backup and a restore with no credential flag use what was stored.
    let out = tempdir();
    let layout = out.path().join("web");
    let src = g.repo("team/web");
    let args: Vec<&str> = cmdline(&["backup", "--no-tty"], &tls, &["-o", s(&layout), &src]);
    oras_with(dir.path(), &args, None, &[]).ok();
    assert_layout_holds(&Layout::read(&layout), &[(&src, &fx)], false);
    let dst = g.repo("team/copy");
    let args: Vec<&str> = cmdline(&["restore", "--no-tty"], &tls, &["-i", s(&layout), &dst]);
    oras_with(dir.path(), &args, None, &[]).ok();
    assert_repo_matches(&g.client(), "team/copy", &fx.subset(&["v1", "v2", "v3"], &[]), false);

    // -p works too, with the warning the ORAS and Docker CLIs give.
    let r = login(&["-u", "alice", "-p", ALICE_PW], None);
    r.ok();
    assert!(r.stderr.contains("shell history"), "{}", r.stderr);

    // Logout removes the entry and nothing else; a second one says there is nothing to remove.
    let r = oras_with(dir.path(), &["logout", &g.name], None, &[]);
    r.ok();
    assert!(
        r.stdout_str().contains(&format!("Removed the credentials for {}", g.name)),
        "{}",
        r.stdout_str()
    );
    let config = read_json(&cfg);
    assert!(config["auths"].get(&g.name).is_none(), "{config:#}");
    assert_other_keys_kept(&config);
    assert_eq!(mode(&cfg), 0o600);
    let r = oras_with(dir.path(), &["logout", &g.name], None, &[]);
    r.ok();
    assert!(r.stdout_str().contains(&format!("Not logged in to {}", g.name)), "{}", r.describe());
    let args: Vec<&str> = cmdline(&["backup", "--no-tty"], &tls, &["-o", s(&layout), &src]);
    oras_with(dir.path(), &args, None, &[]).fails(1, &["username and password"]);

    // A config directory that does not exist yet is made, private.
    let fresh = dir.path().join("new/docker");
    let args: Vec<&str> = cmdline(&["login"], &tls, &["-u", "alice", "--password-stdin", &g.name]);
    oras_with(&fresh, &args, Some(ALICE_PW), &[]).ok();
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("config.json")), 0o600);
    assert_eq!(
        read_json(&fresh.join("config.json")),
        json!({"auths": {g.name.clone(): {"auth": b64(&format!("alice:{ALICE_PW}"))}}})
    );
}

/// A fake `docker-credential-fake` in a fresh directory: it records its arguments and what it was
/// given, and keeps one server's credentials in `stored.json`, as the protocol asks.
fn fake_helper() -> tempfile::TempDir {
    let dir = tempdir();
    let d = dir.path().display();
    let script = format!(
        r#"#!/bin/sh
echo "$0 $*" >> '{d}/argv.log'
input=$(cat)
case "$1" in
  store) printf '%s' "$input" > '{d}/stored.json' ;;
  get)
    if [ -f '{d}/stored.json' ]; then cat '{d}/stored.json'
    else echo 'credentials not found in native keychain'; exit 1; fi ;;
  erase)
    echo "$input" >> '{d}/erased.log'
    if [ -f '{d}/stored.json' ]; then rm '{d}/stored.json'
    else echo 'credentials not found in native keychain'; exit 1; fi ;;
  *) exit 1 ;;
esac
"#
    );
    let broken = "#!/bin/sh\nprintf 'cannot store \\033[31m%s\\n' \"$(cat)\"\nexit 3\n";
    for (name, text) in
        [("docker-credential-fake", script.as_str()), ("docker-credential-broken", broken)]
    {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

#[test]
fn login_and_logout_through_a_credential_helper() {
    let (g, _d) = basic_tls("reg.test");
    let fx = seed(&g, "team/web");
    let helper = fake_helper();
    let path = path_with(helper.path());
    let env = [("PATH", path.as_str())];
    let dir = tempdir();
    let cfg = dir.path().join("config.json");
    // A stale secret in the file beside the helper, which a login must not leave there.
    std::fs::write(
        &cfg,
        json!({"credsStore": "fake", "auths": {g.name.clone(): {"auth": b64("alice:stale-pw-123")}}})
            .to_string(),
    )
    .expect("write");
    let resolve = g.resolve();
    let tls = ["--ca-file", ca(), "--resolve", &resolve];
    let args: Vec<&str> = cmdline(&["login"], &tls, &["-u", "alice", "--password-stdin", &g.name]);

    // A wrong password never reaches the helper.
    oras_with(dir.path(), &args, Some("wrong-pw-4242"), &env)
        .fails(1, &["the registry refused the credentials (401)"]);
    assert!(!helper.path().join("argv.log").exists(), "the helper was not run");

    let r = oras_with(dir.path(), &args, Some(ALICE_PW), &env);
    r.ok();
    assert!(
        r.stdout_str().contains("docker-credential-fake (the credsStore of"),
        "{}",
        r.stdout_str()
    );
    assert!(!r.stderr.contains("unencrypted"), "{}", r.stderr);
    let stored = read_json(&helper.path().join("stored.json"));
    assert_eq!(
        stored,
        json!({"ServerURL": g.name.clone(), "Username": "alice", "Secret": ALICE_PW})
    );
    let argv = std::fs::read_to_string(helper.path().join("argv.log")).expect("argv log");
    assert!(argv.trim_end().ends_with("docker-credential-fake store"), "{argv}");
    let config = read_json(&cfg);
    assert_eq!(config, json!({"credsStore": "fake", "auths": {}}), "no secret beside the helper");
    assert_eq!(mode(&cfg), 0o600);
    assert_no_secret(&r, &[ALICE_PW.into()], &[&cfg]);

    // A backup with no credential flag asks the helper.
    let out = tempdir();
    let layout = out.path().join("web");
    let src = g.repo("team/web");
    let backup: Vec<&str> = cmdline(&["backup", "--no-tty"], &tls, &["-o", s(&layout), &src]);
    oras_with(dir.path(), &backup, None, &env).ok();
    assert_layout_holds(&Layout::read(&layout), &[(&src, &fx)], false);
    let argv = std::fs::read_to_string(helper.path().join("argv.log")).expect("argv log");
    assert!(!argv.contains(ALICE_PW), "the secret is never an argument: {argv}");

    // Logout erases it from the helper (the server address on stdin); a second finds nothing.
    let r = oras_with(dir.path(), &["logout", &g.name], None, &env);
    r.ok();
    assert!(r.stdout_str().contains("from docker-credential-fake"), "{}", r.stdout_str());
    assert!(!helper.path().join("stored.json").exists());
    let erased = std::fs::read_to_string(helper.path().join("erased.log")).expect("erase log");
    assert_eq!(erased.trim(), g.name);
    let r = oras_with(dir.path(), &["logout", &g.name], None, &env);
    r.ok();
    assert!(r.stdout_str().contains("Not logged in to"), "{}", r.describe());

    // A registry's own helper (credHelpers) that fails: its message shown escaped and without the
    // secret it echoes, nothing stored anywhere.
    std::fs::write(&cfg, json!({"credHelpers": {g.name.clone(): "broken"}}).to_string())
        .expect("write");
    let r = oras_with(dir.path(), &args, Some(ALICE_PW), &env);
    r.fails(1, &["docker-credential-broken store` failed", "cannot store", "\\u{1b}[31m"]);
    assert!(r.stderr.contains("the credHelpers of"), "{}", r.stderr);
    assert_no_secret(&r, &[ALICE_PW.into()], &[&cfg]);
    assert_eq!(read_json(&cfg), json!({"credHelpers": {g.name.clone(): "broken"}}));

    // A helper that is not installed: an error, never a fallback to the file.
    std::fs::write(&cfg, r#"{"credsStore":"surely-not-installed"}"#).expect("write");
    oras_with(dir.path(), &args, Some(ALICE_PW), &env).fails(
        1,
        &["docker-credential-surely-not-installed", "not installed", "nothing was stored"],
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).expect("read"),
        r#"{"credsStore":"surely-not-installed"}"#
    );
}

#[test]
fn identity_token_and_password_logins_against_a_token_server() {
    let ts = TokenServer::start(pki(), token_config());
    let g = token_registry(&ts);
    seed(&g, "priv/app");
    let repo = g.repo("priv/app");
    let dir = tempdir();
    let cfg = dir.path().join("config.json");

    // A wrong identity token: refused by the token server, nothing stored.
    let r = oras_with(
        dir.path(),
        &["login", "--identity-token-stdin", &g.name],
        Some("wrong-refresh-0000"),
        &[],
    );
    r.fails(1, &["the registry refused the credentials (401 from its token server", &ts.realm()]);
    assert!(!cfg.exists(), "nothing stored");

    // The right one: the OAuth2 refresh-token grant, the token stored as an identity token.
    let before = ts.requests().len();
    let r =
        oras_with(dir.path(), &["login", "--identity-token-stdin", &g.name], Some(REFRESH), &[]);
    r.ok();
    let reqs = ts.requests()[before..].to_vec();
    assert!(
        reqs.iter().any(|q| q.method == "POST"
            && q.grant_type == "refresh_token"
            && q.account == "alice"
            && q.status == 200),
        "{reqs:#?}"
    );
    assert_eq!(read_json(&cfg), json!({"auths": {g.name.clone(): {"identitytoken": REFRESH}}}));
    assert_no_secret(&r, &[REFRESH.into()], &[]);

    // A later command with no flag uses it (refresh-token grant again), with push rights.
    let before = ts.requests().len();
    let r = oras_with(dir.path(), &["repo", "tags", &repo], None, &[]);
    r.ok();
    assert!(r.stdout_str().contains("v3"), "{}", r.stdout_str());
    assert!(
        ts.requests()[before..]
            .iter()
            .any(|q| q.grant_type == "refresh_token" && q.account == "alice"),
        "{:#?}",
        ts.requests()
    );

    // A password replaces it (password grant); a wrong password is refused by the token server.
    let args = ["login", "-u", "alice", "--password-stdin", g.name.as_str()];
    oras_with(dir.path(), &args, Some("nope-wrong-pw"), &[])
        .fails(1, &["the registry refused the credentials (401 from its token server"]);
    assert_eq!(read_json(&cfg)["auths"][&g.name]["identitytoken"], REFRESH, "unchanged");
    oras_with(dir.path(), &args, Some(ALICE_PW), &[]).ok();
    assert_eq!(
        read_json(&cfg),
        json!({"auths": {g.name.clone(): {"auth": b64(&format!("alice:{ALICE_PW}"))}}})
    );

    // Through a registry's own helper, an identity token goes under the username `<token>`, and is
    // read back as one.
    let helper = fake_helper();
    let path = path_with(helper.path());
    let env = [("PATH", path.as_str())];
    let hdir = tempdir();
    std::fs::write(
        hdir.path().join("config.json"),
        json!({"credHelpers": {g.name.clone(): "fake"}}).to_string(),
    )
    .expect("write");
    oras_with(hdir.path(), &["login", "--identity-token-stdin", &g.name], Some(REFRESH), &env).ok();
    assert_eq!(
        read_json(&helper.path().join("stored.json")),
        json!({"ServerURL": g.name.clone(), "Username": "<token>", "Secret": REFRESH})
    );
    let before = ts.requests().len();
    oras_with(hdir.path(), &["repo", "tags", &repo], None, &env).ok();
    assert!(
        ts.requests()[before..]
            .iter()
            .any(|q| q.grant_type == "refresh_token" && q.account == "alice"),
        "{:#?}",
        ts.requests()
    );

    // On a terminal, without flags: asked for a username and a password, which is not echoed; an
    // empty username asks for an identity token instead, as the ORAS CLI does.
    oras_with(dir.path(), &["logout", &g.name], None, &[]).ok();
    let r = login_on_a_terminal(
        dir.path(),
        &g.name,
        &[("Username: ", "alice"), ("Password: ", ALICE_PW)],
    );
    r.ok();
    let shown = r.stdout_str();
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(!shown.contains(ALICE_PW), "the password was echoed: {shown}");
    assert_eq!(read_json(&cfg)["auths"][&g.name]["auth"], b64(&format!("alice:{ALICE_PW}")));
    let r = login_on_a_terminal(dir.path(), &g.name, &[("Username: ", ""), ("Token: ", REFRESH)]);
    r.ok();
    assert!(!r.stdout_str().contains(REFRESH), "the token was echoed: {}", r.stdout_str());
    assert_eq!(read_json(&cfg)["auths"][&g.name]["identitytoken"], REFRESH);
}

/// `oras login REGISTRY` on a terminal, each answer typed once its question shows (typed ahead, it
/// would be echoed before the echo is turned off).
fn login_on_a_terminal(cfg: &Path, registry: &str, answers: &[(&str, &str)]) -> Run {
    use std::io::Write;
    let mut running = Oras::new(&["login", registry])
        .env("DOCKER_CONFIG", s(cfg))
        .stdin_pipe()
        .on_a_terminal()
        .spawn();
    let mut keys = running.stdin();
    for (question, answer) in answers {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !running.stdout().contains(question) {
            assert!(
                running.is_running(),
                "oras ended before asking {question:?}: {}",
                running.stdout()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "never asked {question:?}: {}",
                running.stdout()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        keys.write_all(format!("{answer}\n").as_bytes()).expect("type the answer");
        keys.flush().expect("flush");
    }
    let run = running.wait(std::time::Duration::from_secs(60));
    drop(keys);
    run
}

#[test]
fn login_input_that_cannot_work_fails_clearly_and_stores_nothing() {
    let dir = tempdir();
    let cfg = dir.path().join("config.json");
    // Nobody to ask for a password.
    oras_with(dir.path(), &["login", "-u", "alice", "127.0.0.1:9"], None, &[])
        .fails(2, &["needs a password", "--password-stdin", "not a terminal"]);
    oras_with(dir.path(), &["login", "127.0.0.1:9"], None, &[]).fails(2, &["needs credentials"]);
    // Not a registry name; a username that cannot be stored.
    oras_with(dir.path(), &["login", "-u", "a", "--password-stdin", "not a host"], Some("pw"), &[])
        .fails(2, &["is not a registry", "host[:port]"]);
    oras_with(
        dir.path(),
        &["login", "-u", "a:b", "--password-stdin", "127.0.0.1:9"],
        Some("pw"),
        &[],
    )
    .fails(2, &["contains ':'"]);
    oras_with(dir.path(), &["logout", "http://"], None, &[]).fails(2, &["is not a registry"]);
    // Nothing listening there.
    let port = harness::registry::free_port();
    let reg = format!("127.0.0.1:{port}");
    oras_with(
        dir.path(),
        &["login", "-u", "alice", "--password-stdin", &reg],
        Some("pw-1234"),
        &[],
    )
    .fails(1, &[&format!("login to {reg} failed: cannot reach it"), "nothing was stored"]);
    assert!(!cfg.exists(), "nothing stored");
    // A config that is not JSON is named, and left as it is.
    std::fs::write(&cfg, "{ not json").expect("write");
    oras_with(dir.path(), &["logout", &reg], None, &[])
        .fails(1, &["not a valid docker config.json"]);
    oras_with(dir.path(), &["login", "-u", "a", "--password-stdin", &reg], Some("pw"), &[])
        .fails(1, &["not a valid docker config.json"]);
    assert_eq!(std::fs::read_to_string(&cfg).expect("read"), "{ not json");
}

#[test]
fn a_registry_that_asks_for_nothing_gets_the_credentials_unchecked_and_says_so() {
    let reg = harness::Registry::start();
    let dir = tempdir();
    let r = oras_with(
        dir.path(),
        &["login", "-u", "u", "--password-stdin", &reg.host()],
        Some("pw-open"),
        &[],
    );
    r.ok();
    assert!(r.stderr.contains("did not ask for credentials"), "{}", r.stderr);
    assert_eq!(
        read_json(&dir.path().join("config.json"))["auths"][&reg.host()]["auth"],
        b64("u:pw-open")
    );
}
