//! Writing the docker `config.json` that credentials are read from (`oras login` and `oras
//! logout`): one registry's `auths` entry put or removed, every other key and entry kept as it
//! was, and the file replaced atomically, mode 0600.
//!
//! A config that is a symbolic link (dotfiles kept elsewhere) is written through: the file it
//! points to is replaced, by a temporary file in that file's own directory, and the link stays a
//! link. Replacing the link itself would silently cut the user's dotfiles off.

use super::auth::Secret;
use super::credentials::{
    default_config_path, lookup_keys, normalize_key, server_address, DockerConfig,
};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The fields of an `auths` entry that hold credentials; a login replaces them all, so that no
/// earlier secret of another kind (an identity token, which readers prefer) outlives it.
const CREDENTIAL_FIELDS: [&str; 5] =
    ["auth", "username", "password", "identitytoken", "registrytoken"];

/// How many symbolic links are followed to the real file (as the kernel's own limit, roughly).
const MAX_LINKS: usize = 40;

/// A docker config, read to be changed and written back.
pub struct ConfigFile {
    /// The path as given (`--registry-config`) or found (`$DOCKER_CONFIG`, `~/.docker`).
    path: PathBuf,
    /// Every key of the file, in its order (`auths` is kept apart, below, and put back in its
    /// place when written).
    doc: Map<String, Value>,
    /// The `auths` object.
    auths: Map<String, Value>,
    /// What this tool reads of it: which helper keeps which registry's credentials.
    read: DockerConfig,
    /// Whether the file exists.
    exists: bool,
}

/// Where a registry's credentials are kept.
#[derive(Debug, PartialEq, Eq)]
pub enum Keeper {
    /// In the file itself, under `auths[key]`.
    File {
        /// The `auths` key.
        key: String,
    },
    /// In a credential helper, asked about `server`.
    Helper {
        /// The helper's name (`docker-credential-<name>`).
        name: String,
        /// The config key that names it: `credHelpers` or `credsStore`.
        field: &'static str,
        /// The server address the helper keeps them under.
        server: String,
    },
}

impl ConfigFile {
    /// Reads the config at `explicit`, else `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`; a file that does not exist yet is an empty config.
    pub fn open(explicit: Option<&Path>) -> Result<ConfigFile, String> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_config_path().ok_or(
                "no docker config location: neither DOCKER_CONFIG nor HOME is set; give --registry-config PATH",
            )?,
        };
        let text = match std::fs::read(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(format!("cannot read the registry config {}: {e}", path.display()))
            }
        };
        let exists = text.is_some();
        // An empty file is an empty config, as Docker takes it.
        let text = text.filter(|t| !t.iter().all(u8::is_ascii_whitespace));
        let text = text.as_deref().unwrap_or(b"{}");
        let read = DockerConfig::parse(text, &path)?;
        let doc: Map<String, Value> = serde_json::from_slice(text).map_err(|e| {
            format!("the registry config {} is not a JSON object: {e}", path.display())
        })?;
        let auths = match doc.get("auths") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(format!(
                "the registry config {} has an \"auths\" that is not an object; fix or remove it",
                path.display()
            ))
            }
        };
        Ok(ConfigFile { path, doc, auths, read, exists })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists (or is to be created by [`ConfigFile::save`]).
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Where `registry`'s credentials are kept (as a reference names it: `docker.io`,
    /// `reg.example:5000`).
    pub fn keeper(&self, registry: &str) -> Keeper {
        match self.read.helper_for(registry) {
            Some((name, field)) => Keeper::Helper { name, field, server: server_address(registry) },
            None => Keeper::File { key: server_address(registry) },
        }
    }

    /// Puts `secret` (a username and password, or an identity token) into `auths` as `registry`'s
    /// credentials: under Docker's key for it, with any other entry for the same host (an
    /// `https://` or `/v1/` form of the key) folded in, so that one entry is left and a reader
    /// cannot find an older one first. The entry's other fields are kept.
    pub fn put(&mut self, registry: &str, secret: &Secret) -> Result<(), String> {
        let key = server_address(registry);
        let mut entry = self.take_entries(registry).unwrap_or_default();
        for f in CREDENTIAL_FIELDS {
            entry.shift_remove(f);
        }
        match secret {
            Secret::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                entry.insert("auth".into(), Value::String(encoded));
            }
            Secret::IdentityToken(token) => {
                entry.insert("identitytoken".into(), Value::String(token.clone()));
            }
            _ => return Err("internal: only a password or an identity token is stored".into()),
        }
        self.auths.insert(key, Value::Object(entry));
        Ok(())
    }

    /// Removes `registry`'s credentials from the file itself: every `auths` entry whose key names
    /// its host. False when there was none.
    pub fn remove(&mut self, registry: &str) -> bool {
        self.take_entries(registry).is_some()
    }

    /// Removes the credentials a login with a helper makes stale: those of `registry` written into
    /// the file itself (Docker too leaves no secret in the file beside a helper). The entry's other
    /// fields stay. False when there were none.
    pub fn strip_credentials(&mut self, registry: &str) -> bool {
        let key = server_address(registry);
        let Some(mut entry) = self.take_entries(registry) else { return false };
        let had = CREDENTIAL_FIELDS.iter().any(|f| entry.shift_remove(*f).is_some());
        if !entry.is_empty() {
            self.auths.insert(key, Value::Object(entry));
        }
        had
    }

    /// Takes every `auths` entry for `registry`'s host out of the file: the one under its own key
    /// first (whose fields win), then the others in order. None when there is none.
    fn take_entries(&mut self, registry: &str) -> Option<Map<String, Value>> {
        let wanted: Vec<String> = lookup_keys(registry).iter().map(|k| normalize_key(k)).collect();
        let own = server_address(registry);
        let auths = &mut self.auths;
        let mut keys: Vec<String> =
            auths.keys().filter(|k| wanted.contains(&normalize_key(k))).cloned().collect();
        keys.sort_by_key(|k| *k != own);
        let mut merged: Option<Map<String, Value>> = None;
        for k in keys {
            let taken = auths.shift_remove(&k);
            let fields = match taken {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let into = merged.get_or_insert_with(Map::new);
            for (name, value) in fields {
                into.entry(name).or_insert(value);
            }
        }
        merged
    }

    /// The whole document as it is to be written: `auths` in its place (or last, when new).
    fn document(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in &self.doc {
            let v = if k == "auths" { Value::Object(self.auths.clone()) } else { v.clone() };
            out.insert(k.clone(), v);
        }
        if !out.contains_key("auths") {
            out.insert("auths".into(), Value::Object(self.auths.clone()));
        }
        out
    }

    /// Writes the config: into a temporary file beside the real one (the link's target, for a
    /// link), synced, mode 0600, then renamed over it, so that a crash leaves the old file or the
    /// new one, never a part. A new file's directory is made (0700) when missing.
    pub fn save(&mut self) -> Result<(), String> {
        let shown = self.path.display().to_string();
        let target = resolve_links(&self.path)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if target != self.path && !dir.is_dir() {
            return Err(format!(
                "the registry config {shown} is a link to {}, whose directory does not exist; create it, or give --registry-config another file",
                target.display()
            ));
        }
        make_private_dir(&dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
        let mut text = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut text,
            serde_json::ser::PrettyFormatter::with_indent(b"\t"),
        );
        serde::Serialize::serialize(&self.document(), &mut ser)
            .map_err(|e| format!("internal: cannot encode the registry config: {e}"))?;
        text.push(b'\n');
        write_replacing(&target, &dir, &text)
            .map_err(|e| format!("cannot write the registry config {shown}: {e}"))?;
        self.exists = true;
        Ok(())
    }
}

/// The file `path` names after every symbolic link on the way (the last one may dangle: the file
/// is then made where it points).
fn resolve_links(path: &Path) -> Result<PathBuf, String> {
    let mut at = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&at)
                    .map_err(|e| format!("cannot read the link {}: {e}", at.display()))?;
                at = match at.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(at),
        }
    }
    Err(format!("the registry config {} is a loop of links", path.display()))
}

/// Makes `dir` and its missing parents, each new one readable by its owner only.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Replaces `target` (in `dir`) by `text`: a temporary file written, synced, made 0600 (and given
/// the old file's owner where that is allowed: root editing a user's config), then renamed over it;
/// the directory is synced so that the rename lasts.
fn write_replacing(target: &Path, dir: &Path, text: &[u8]) -> std::io::Result<()> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp =
        tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        if let Ok(old) = std::fs::metadata(target) {
            // Not allowed unless root; the file then stays ours, as it would be anyway.
            let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()));
        }
    }
    tmp.write_all(text)?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    // The rename is durable once the directory is; a filesystem that cannot sync a directory still
    // has the new file.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
