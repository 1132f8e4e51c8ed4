use super::*;
use crate::registry::credentials::CredentialStore;

fn basic(u: &str, p: &str) -> Secret {
    Secret::Basic { username: u.into(), password: p.into() }
}

/// A config file in a fresh directory holding `json` (None: no file).
fn config(json: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    if let Some(j) = json {
        std::fs::write(&path, j).expect("write");
    }
    (dir, path)
}

fn saved(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn keys_are_normalised_as_docker_does() {
    let (_d, path) = config(None);
    for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
        let c = ConfigFile::open(Some(&path)).expect("open");
        assert_eq!(c.keeper(hub), Keeper::File { key: "https://index.docker.io/v1/".into() });
    }
    let c = ConfigFile::open(Some(&path)).expect("open");
    assert_eq!(c.keeper("reg.example:5000"), Keeper::File { key: "reg.example:5000".into() });
    assert_eq!(c.keeper("Reg.Example"), Keeper::File { key: "Reg.Example".into() });
    assert_eq!(c.keeper("[::1]:5000"), Keeper::File { key: "[::1]:5000".into() });
}

#[test]
fn helpers_are_chosen_as_credentials_are_read() {
    let (_d, path) = config(Some(
        r#"{"credsStore":"store","credHelpers":{"own.example":"own","docker.io":"hub","empty.example":""}}"#,
    ));
    let c = ConfigFile::open(Some(&path)).expect("open");
    let helper = |name: &str, field, server: &str| Keeper::Helper {
        name: name.into(),
        field,
        server: server.into(),
    };
    assert_eq!(c.keeper("own.example"), helper("own", "credHelpers", "own.example"));
    assert_eq!(c.keeper("index.docker.io"), helper("hub", "credHelpers", DOCKER_HUB));
    assert_eq!(c.keeper("other.example"), helper("store", "credsStore", "other.example"));
    assert_eq!(c.keeper("empty.example"), helper("store", "credsStore", "empty.example"));
}

const DOCKER_HUB: &str = "https://index.docker.io/v1/";

#[test]
fn a_login_replaces_one_entry_and_keeps_everything_else() {
    let before = format!(
        r#"{{
  "psFormat": "table {{{{.ID}}}}",
  "auths": {{
    "other.example": {{"auth": "{other}"}},
    "https://reg.example/v2/": {{"identitytoken": "old-token", "email": "a@example.com"}},
    "reg.example": {{"auth": "{old}", "x-note": 1}}
  }},
  "HttpHeaders": {{"User-Agent": "x"}},
  "plugins": {{"a": {{"b": [1, 2, {{"c": null}}]}}}}
}}"#,
        other = b64("o:p"),
        old = b64("alice:old")
    );
    let (_d, path) = config(Some(&before));
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    c.put("reg.example", &basic("alice", "new-pw")).expect("put");
    c.save().expect("save");
    let after = saved(&path);
    let keys: Vec<&String> = after.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["psFormat", "auths", "HttpHeaders", "plugins"], "order kept");
    assert_eq!(after["psFormat"], "table {{.ID}}");
    assert_eq!(after["HttpHeaders"]["User-Agent"], "x");
    assert_eq!(after["plugins"]["a"]["b"][2]["c"], Value::Null);
    let auths = after["auths"].as_object().expect("auths");
    assert_eq!(auths.keys().collect::<Vec<_>>(), ["other.example", "reg.example"], "{auths:?}");
    assert_eq!(auths["other.example"]["auth"], b64("o:p"));
    let entry = &auths["reg.example"];
    assert_eq!(entry["auth"], b64("alice:new-pw"));
    assert!(entry.get("identitytoken").is_none(), "no older secret outlives it: {entry}");
    assert_eq!(entry["x-note"], 1);
    assert_eq!(entry["email"], "a@example.com");

    // An identity token replaces the password.
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    c.put("reg.example", &Secret::IdentityToken("idt-1".into())).expect("put");
    c.save().expect("save");
    let entry = &saved(&path)["auths"]["reg.example"];
    assert_eq!(entry["identitytoken"], "idt-1");
    assert!(entry.get("auth").is_none(), "{entry}");
}

#[tokio::test]
async fn what_is_stored_is_what_is_read() {
    let (_d, path) = config(Some(r#"{"auths":{"docker.io":{"auth":"eDp5"}}}"#));
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    c.put("reg.example:5000", &basic("alice", "pa:ss")).expect("put");
    c.put("docker.io", &Secret::IdentityToken("hub-token".into())).expect("put");
    c.save().expect("save");
    let auths = saved(&path)["auths"].clone();
    assert_eq!(
        auths.as_object().expect("auths").keys().collect::<Vec<_>>(),
        ["reg.example:5000", DOCKER_HUB],
        "the docker.io entry was folded into Docker's key"
    );
    let store = CredentialStore::load(None, Some(&path)).expect("load");
    let got = store.for_registry("reg.example:5000").await;
    assert!(
        matches!(&got.secret, Secret::Basic { username, password } if username == "alice" && password == "pa:ss"),
        "{got:?}"
    );
    let got = store.for_registry("docker.io").await;
    assert!(matches!(&got.secret, Secret::IdentityToken(t) if t == "hub-token"), "{got:?}");
}

#[test]
fn logout_removes_every_form_of_the_key() {
    let (_d, path) = config(Some(
        r#"{"auths":{"reg.example":{"auth":"eDp5"},"https://reg.example":{"auth":"eDp5"},"http://REG.example/v1/":{},"keep.example":{"auth":"eDp5"}}}"#,
    ));
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    assert!(c.remove("reg.example"));
    assert!(!c.remove("reg.example"), "nothing left to remove");
    assert!(!c.remove("never.example"));
    c.save().expect("save");
    let auths = saved(&path)["auths"].clone();
    assert_eq!(auths.as_object().expect("auths").keys().collect::<Vec<_>>(), ["keep.example"]);
}

#[test]
fn a_login_into_a_helper_strips_secrets_left_in_the_file() {
    let (_d, path) = config(Some(
        r#"{"credsStore":"x","auths":{"reg.example":{"auth":"eDp5","email":"e"},"b.example":{"identitytoken":"t"}}}"#,
    ));
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    assert!(c.strip_credentials("reg.example"));
    assert!(c.strip_credentials("b.example"));
    assert!(!c.strip_credentials("c.example"));
    c.save().expect("save");
    let after = saved(&path);
    assert_eq!(after["credsStore"], "x");
    assert_eq!(after["auths"], serde_json::json!({"reg.example": {"email": "e"}}));
}

#[cfg(unix)]
#[test]
fn a_new_file_is_private_and_written_whole() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("new/sub/config.json");
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    assert!(!c.exists());
    c.put("reg.example", &basic("u", "p")).expect("put");
    c.save().expect("save");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&root.path().join("new/sub")), 0o700);
    assert_eq!(mode(&root.path().join("new")), 0o700);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.starts_with("{\n\t\"auths\": {\n\t\t\"reg.example\""), "tabs, as Docker: {text}");
    // An existing file readable by others becomes private; no temporary file is left beside it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    assert!(c.remove("reg.example"));
    c.save().expect("save");
    assert_eq!(mode(&path), 0o600);
    let names: Vec<_> = std::fs::read_dir(root.path().join("new/sub"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["config.json"]);
}

#[cfg(unix)]
#[test]
fn a_linked_config_is_written_through_and_stays_a_link() {
    let root = tempfile::tempdir().expect("tempdir");
    let dotfiles = root.path().join("dotfiles");
    std::fs::create_dir(&dotfiles).expect("mkdir");
    std::fs::write(dotfiles.join("docker.json"), r#"{"psFormat":"x"}"#).expect("write");
    let link = root.path().join("config.json");
    std::os::unix::fs::symlink("dotfiles/docker.json", &link).expect("symlink");
    let mut c = ConfigFile::open(Some(&link)).expect("open");
    c.put("reg.example", &basic("u", "p")).expect("put");
    c.save().expect("save");
    assert!(std::fs::symlink_metadata(&link).expect("lstat").file_type().is_symlink());
    let target = saved(&dotfiles.join("docker.json"));
    assert_eq!(target["psFormat"], "x");
    assert_eq!(target["auths"]["reg.example"]["auth"], b64("u:p"));

    // A dangling link into a directory that does not exist is refused, not made.
    let dangling = root.path().join("dangling.json");
    std::os::unix::fs::symlink("nowhere/config.json", &dangling).expect("symlink");
    let mut c = ConfigFile::open(Some(&dangling)).expect("open");
    c.put("reg.example", &basic("u", "p")).expect("put");
    let e = c.save().expect_err("refused");
    assert!(e.contains("is a link to") && e.contains("does not exist"), "{e}");
    assert!(!root.path().join("nowhere").exists());
}

#[test]
fn unusable_files_are_refused_and_left_alone() {
    for (text, says) in [
        ("{ not json", "not a valid docker config.json"),
        (r#"{"auths":[]}"#, "not a valid docker config.json"),
        ("[1]", "not a valid docker config.json"),
    ] {
        let (_d, path) = config(Some(text));
        let e = ConfigFile::open(Some(&path)).err().unwrap_or_default();
        assert!(e.contains(says) && e.contains("config.json"), "{text}: {e}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }
    // Empty and blank files are empty configs, as Docker takes them.
    let (_d, path) = config(Some(" \n"));
    let mut c = ConfigFile::open(Some(&path)).expect("open");
    c.put("r.example", &basic("u", "p")).expect("put");
    c.save().expect("save");
    assert_eq!(saved(&path)["auths"]["r.example"]["auth"], b64("u:p"));
}
