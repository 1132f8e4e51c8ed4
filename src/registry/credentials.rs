//! Where credentials come from: the command-line flags, or a Docker `config.json`
//! (`auths`, `credsStore`, `credHelpers` through the `docker-credential-*` protocol).

use super::auth::Credentials;
use super::helper;
use super::transport::api_host;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The key Docker uses for Docker Hub in `config.json` and with credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The username under which a credential helper keeps an identity token (Docker's convention).
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";

/// What this tool reads of a docker `config.json` (every other key is left alone).
#[derive(serde::Deserialize, Default)]
pub(super) struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
}

/// A config's `auths` entry: `auth` (base64 of `username:password`), the two apart, or an
/// identity token.
#[derive(serde::Deserialize, Default)]
pub(super) struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The credentials of every registry of a run: the flags' for the registries named on the
/// command line (all a run talks to), else each registry's own entry in the docker config.
pub struct CredentialStore {
    flags: Option<Credentials>,
    config: DockerConfig,
    /// The config file read (for messages), if any.
    path: Option<PathBuf>,
}

impl CredentialStore {
    /// Credentials from the flags (if any) and from the docker config at `explicit`, else
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. A missing default file
    /// means no stored credentials; a missing `--registry-config` file is an error.
    pub fn load(
        flags: Option<Credentials>,
        explicit: Option<&Path>,
    ) -> Result<CredentialStore, String> {
        if flags.is_some() && explicit.is_none() {
            // The flags win for every registry of the run: no need to read (or trip over) a config.
            return Ok(CredentialStore { flags, config: DockerConfig::default(), path: None });
        }
        let (path, required) = match explicit {
            Some(p) => (Some(p.to_path_buf()), true),
            None => (default_config_path(), false),
        };
        let Some(path) = path else {
            return Ok(CredentialStore { flags, config: DockerConfig::default(), path: None });
        };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialStore { flags, config: DockerConfig::default(), path: None })
            }
            Err(e) => {
                return Err(format!("cannot read the registry config {}: {e}", path.display()))
            }
        };
        let config = DockerConfig::parse(&text, &path)?;
        Ok(CredentialStore { flags, config, path: Some(path) })
    }

    /// The credentials for `registry` (as written in references, e.g. `docker.io`, `reg:5000`). A
    /// credential helper is run when the config names one (on a thread of its own: it may take up
    /// to its timeout, which must not hold a worker of the async runtime); its failure is kept in
    /// the result and reported when the registry asks for credentials.
    pub async fn for_registry(&self, registry: &str) -> Credentials {
        if let Some(f) = &self.flags {
            return f.clone();
        }
        let file = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "no docker config.json found".into());
        let keys = lookup_keys(registry);
        let server = server_address(registry);
        if let Some(helper) =
            keys.iter().find_map(|k| self.config.cred_helpers.get(k)).filter(|h| !h.is_empty())
        {
            return match ask_helper(helper, &server).await {
                HelperAnswer::Found(c) => c,
                HelperAnswer::NotFound => Credentials::anonymous(format!(
                    "docker-credential-{helper} has none for {server}"
                )),
                HelperAnswer::Missing(note) => Credentials::anonymous(note),
                HelperAnswer::Failed(c) => c,
            };
        }
        let mut store_note = String::new();
        if let Some(store) = self.config.creds_store.as_deref().filter(|s| !s.is_empty()) {
            match ask_helper(store, &server).await {
                HelperAnswer::Found(c) => return c,
                HelperAnswer::NotFound => {
                    store_note = format!("docker-credential-{store} has none; ")
                }
                HelperAnswer::Missing(note) => store_note = format!("{note}; "),
                HelperAnswer::Failed(c) => {
                    // A store that cannot run (e.g. `desktop` on a CI machine) should not hide
                    // credentials written into the file itself.
                    if let Some(found) = self.lookup_auths(&keys, &file) {
                        return found;
                    }
                    return c;
                }
            }
        }
        self.lookup_auths(&keys, &file).unwrap_or_else(|| {
            Credentials::anonymous(format!("{store_note}no credentials for {registry} in {file}"))
        })
    }

    fn lookup_auths(&self, keys: &[String], file: &str) -> Option<Credentials> {
        let (key, entry) =
            keys.iter().find_map(|k| self.config.auths.get_key_value(k)).or_else(|| {
                // Keys may be written as URLs (`https://reg.example/v2/`): compare host parts.
                let wanted: Vec<String> = keys.iter().map(|k| normalize_key(k)).collect();
                self.config.auths.iter().find(|(k, _)| wanted.contains(&normalize_key(k)))
            })?;
        let origin = format!("auths[{key:?}] in {file}");
        if let Some(t) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Some(Credentials::identity_token(t, origin));
        }
        if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            return Some(match decode_auth(a) {
                Some((u, p)) => Credentials::basic(u, p, origin),
                None => Credentials::unavailable(
                    "its \"auth\" value is not base64 of username:password",
                    origin,
                ),
            });
        }
        match (entry.username.as_deref(), entry.password.as_deref()) {
            (Some(u), Some(p)) if !u.is_empty() => Some(Credentials::basic(u, p, origin)),
            _ => None,
        }
    }
}

impl DockerConfig {
    /// Parses a config file's bytes; the message names the line and column, never the content
    /// (which holds secrets).
    pub(super) fn parse(text: &[u8], path: &Path) -> Result<DockerConfig, String> {
        serde_json::from_slice(text).map_err(|e| {
            format!("the registry config {} is not a valid docker config.json: {e}", path.display())
        })
    }

    /// The credential helper that keeps `registry`'s credentials, and the key that names it: the
    /// registry's own (`credHelpers`), else the one of every registry (`credsStore`), in the order
    /// [`CredentialStore::for_registry`] asks them; None when the file keeps them itself.
    pub(super) fn helper_for(&self, registry: &str) -> Option<(String, &'static str)> {
        let own = lookup_keys(registry).iter().find_map(|k| self.cred_helpers.get(k)).cloned();
        if let Some(h) = own.filter(|h| !h.is_empty()) {
            return Some((h, "credHelpers"));
        }
        let store = self.creds_store.clone().filter(|s| !s.is_empty());
        store.map(|s| (s, "credsStore"))
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(super) fn default_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

fn is_docker_hub(registry: &str) -> bool {
    api_host(registry) == "registry-1.docker.io"
}

/// The server address a credential helper is asked about.
pub(super) fn server_address(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// The config keys that may hold a registry's credentials, most specific first.
pub(super) fn lookup_keys(registry: &str) -> Vec<String> {
    if is_docker_hub(registry) {
        [DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec![registry.to_string()]
    }
}

/// `https://reg.example:5000/v1/` -> `reg.example:5000`; Docker Hub's names -> `index.docker.io`.
pub(super) fn normalize_key(key: &str) -> String {
    let k = key.trim();
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".into(),
        _ => host,
    }
}

/// Decodes a config `auth` value: base64 of `username:password` (padding optional).
fn decode_auth(value: &str) -> Option<(String, String)> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = engine.decode(value.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    if u.is_empty() {
        return None;
    }
    Some((u.to_string(), p.trim_end_matches(['\n', '\r']).to_string()))
}

enum HelperAnswer {
    Found(Credentials),
    NotFound,
    /// The helper is not installed: like no credentials, with a note for messages.
    Missing(String),
    Failed(Credentials),
}

#[derive(serde::Deserialize)]
struct HelperResponse {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<name> get` (see [`run_helper`]) on the runtime's blocking threads.
async fn ask_helper(name: &str, server: &str) -> HelperAnswer {
    let (helper, address) = (name.to_string(), server.to_string());
    match tokio::task::spawn_blocking(move || run_helper(&helper, &address)).await {
        Ok(answer) => answer,
        Err(e) => HelperAnswer::Failed(Credentials::unavailable(
            format!("internal: the credential helper's task failed: {e}"),
            format!("credential helper {}", helper::program(name)),
        )),
    }
}

/// Runs `docker-credential-<name> get` with the server address on stdin, blocking until it answers
/// or its time is up.
fn run_helper(name: &str, server: &str) -> HelperAnswer {
    let program = helper::program(name);
    let origin = format!("credential helper {program}");
    let out = match helper::run(name, "get", server.as_bytes()) {
        helper::Outcome::Done(out) => out,
        helper::Outcome::NotFound => return HelperAnswer::NotFound,
        helper::Outcome::Missing => {
            eprintln!("Warning: {program} (named in the docker config) is not installed; continuing without its credentials");
            return HelperAnswer::Missing(format!("{program} is not installed"));
        }
        helper::Outcome::Failed(why) => {
            return HelperAnswer::Failed(Credentials::unavailable(why, origin))
        }
    };
    let resp: HelperResponse = match serde_json::from_slice(&out) {
        Ok(r) => r,
        Err(_) => {
            return HelperAnswer::Failed(Credentials::unavailable(
                format!("`{program} get` did not answer with {{\"Username\",\"Secret\"}} JSON"),
                origin,
            ))
        }
    };
    if resp.secret.is_empty() {
        return HelperAnswer::NotFound;
    }
    if resp.username == IDENTITY_TOKEN_USERNAME {
        HelperAnswer::Found(Credentials::identity_token(resp.secret, origin))
    } else {
        HelperAnswer::Found(Credentials::basic(resp.username, resp.secret, origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::Secret;

    fn store(json: &str) -> CredentialStore {
        CredentialStore {
            flags: None,
            config: serde_json::from_str(json).unwrap(),
            path: Some("/x/config.json".into()),
        }
    }

    fn basic(c: &Credentials) -> (String, String) {
        match &c.secret {
            Secret::Basic { username, password } => (username.clone(), password.clone()),
            _ => panic!("expected basic, got {c:?}"),
        }
    }

    #[tokio::test]
    async fn auths_forms() {
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let s = store(&format!(
            r#"{{"auths":{{"reg.a:5000":{{"auth":"{enc}"}},"https://reg.b/v2/":{{"username":"bob","password":"pw"}},
            "reg.c":{{"auth":"eDp5","identitytoken":"idt"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("hub:hubpw")
        ));
        assert_eq!(basic(&s.for_registry("reg.a:5000").await), ("alice".into(), "pa:ss".into()));
        assert_eq!(basic(&s.for_registry("reg.b").await), ("bob".into(), "pw".into()));
        assert!(
            matches!(s.for_registry("reg.c").await.secret, Secret::IdentityToken(ref t) if t == "idt")
        );
        assert_eq!(basic(&s.for_registry("docker.io").await), ("hub".into(), "hubpw".into()));
        let none = s.for_registry("reg.a:5001").await;
        assert!(matches!(none.secret, Secret::Anonymous));
        assert!(none.describe().contains("/x/config.json"), "{}", none.describe());
        assert!(
            basic(&s.for_registry("reg.a:5000").await).0 == "alice"
                && s.for_registry("reg.a:5000").await.describe().contains("auths")
        );
    }

    #[tokio::test]
    async fn bad_auth_value_is_reported_without_content() {
        let s = store(r#"{"auths":{"r":{"auth":"!!!not-base64"}}}"#);
        let c = s.for_registry("r").await;
        assert!(matches!(c.secret, Secret::Unavailable(ref m) if !m.contains("not-base64")));
    }

    #[tokio::test]
    async fn flags_win() {
        let s = CredentialStore::load(
            Some(Credentials::basic("u", "p", "--username/--password")),
            None,
        )
        .unwrap();
        assert_eq!(basic(&s.for_registry("anything").await), ("u".into(), "p".into()));
    }

    #[tokio::test]
    async fn missing_helper_falls_back_to_auths() {
        let enc = base64::engine::general_purpose::STANDARD.encode("carol:pw");
        let s = store(&format!(
            r#"{{"credsStore":"oras-test-surely-missing","auths":{{"r":{{"auth":"{enc}"}}}}}}"#
        ));
        assert_eq!(basic(&s.for_registry("r").await).0, "carol");
        let other = s.for_registry("other").await;
        assert!(
            matches!(other.secret, Secret::Anonymous) && other.describe().contains("not installed"),
            "{other:?}"
        );
    }

    #[test]
    fn keys() {
        assert_eq!(normalize_key("https://Reg.Example:5000/v1/"), "reg.example:5000");
        assert_eq!(normalize_key("docker.io"), "index.docker.io");
        assert_eq!(server_address("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_address("ghcr.io"), "ghcr.io");
        assert_eq!(decode_auth("dXNlcjpwdw"), Some(("user".into(), "pw".into())));
        assert_eq!(decode_auth("Og=="), None);
    }
}
