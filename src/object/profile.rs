//! Shared AWS configuration files (`~/.aws/credentials`, `~/.aws/config`) read for the profile
//! `AWS_PROFILE` names (`default` otherwise), as the AWS CLI and SDKs read them: object_store reads
//! only the environment. Static keys, session token, region, `endpoint_url` and `ca_bundle`; the environment
//! wins over a profile, as in the SDKs.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;

/// Largest configuration file read (they hold a few profiles of a few lines).
const MAX_FILE: u64 = 1 << 20;

/// What a profile gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token`.
    pub session_token: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `endpoint_url`.
    pub endpoint_url: Option<String>,
    /// `ca_bundle`: a PEM file of CAs to trust for the endpoint.
    pub ca_bundle: Option<String>,
    /// Ways of getting credentials this tool does not run (`credential_process`, SSO, roles).
    pub unsupported: Vec<String>,
}

impl Profile {
    /// Whether it holds a key pair.
    pub fn has_keys(&self) -> bool {
        self.access_key_id.is_some() && self.secret_access_key.is_some()
    }
}

/// The sections of an INI file, by name, each a map of its keys (lowercased) to values.
fn sections(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // An indented line continues a nested setting (`s3 =` followed by its own keys, which
        // apply to that service only): not a key of the profile.
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=')) else { continue };
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    out
}

/// A file's text, or `None` when there is no such file.
fn read(path: &PathBuf) -> Result<Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if meta.len() > MAX_FILE {
        bail!("{} is over {MAX_FILE} bytes: not an AWS configuration file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Where a file is: its variable, else `~/.aws/<name>`.
fn location(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".aws").join(name))
}

/// Reads the profile from the shared files; a profile named by `AWS_PROFILE` that neither file
/// has is an error, the default one missing is not.
pub fn load() -> Result<Profile> {
    let named = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let name = named.clone().unwrap_or_else(|| "default".to_string());
    let credentials = match location("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
        Some(p) => read(&p)?.map(|t| sections(&t)).unwrap_or_default(),
        None => HashMap::new(),
    };
    let config = match location("AWS_CONFIG_FILE", "config") {
        Some(p) => read(&p)?.map(|t| sections(&t)).unwrap_or_default(),
        None => HashMap::new(),
    };
    // The config file names profiles `[profile NAME]`, except `[default]`.
    let in_config = config.get(&format!("profile {name}")).or_else(|| {
        if name == "default" {
            config.get("default")
        } else {
            None
        }
    });
    let in_credentials = credentials.get(&name);
    if named.is_some() && in_config.is_none() && in_credentials.is_none() {
        bail!("AWS_PROFILE names the profile {name:?}, which neither ~/.aws/credentials nor ~/.aws/config (or AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE) has");
    }
    let get = |key: &str| {
        in_credentials
            .and_then(|s| s.get(key))
            .or_else(|| in_config.and_then(|s| s.get(key)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let unsupported = ["credential_process", "sso_session", "sso_start_url", "role_arn"]
        .iter()
        .filter(|k| get(k).is_some())
        .map(|k| k.to_string())
        .collect();
    Ok(Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: get("region"),
        endpoint_url: get("endpoint_url"),
        ca_bundle: get("ca_bundle"),
        unsupported,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_as_the_aws_cli_reads_them() {
        let text = "# comment\n[default]\naws_access_key_id = AKIA1\nAWS_Secret_Access_Key=s1\n\n[profile dr]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:9000\ns3 =\n  addressing_style = path\n";
        let s = sections(text);
        assert_eq!(s["default"]["aws_access_key_id"], "AKIA1");
        assert_eq!(s["default"]["aws_secret_access_key"], "s1");
        assert_eq!(s["profile dr"]["region"], "eu-west-1");
        assert_eq!(s["profile dr"]["endpoint_url"], "http://127.0.0.1:9000");
        assert!(!s["profile dr"].contains_key("addressing_style"), "{:?}", s["profile dr"]);
        let nested = "[profile x]\ns3 =\n  endpoint_url = http://elsewhere\nregion = r\n";
        assert_eq!(sections(nested)["profile x"].get("endpoint_url"), None);
        assert_eq!(sections(nested)["profile x"]["region"], "r");
    }
}
