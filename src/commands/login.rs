//! `oras login` and `oras logout`: credentials checked against the registry, then stored where the
//! docker config says (its credential helper, else its `auths`), or removed from there.

use super::{common, prompt, UsageError};
use crate::cli::{CredentialArgs, LoginArgs, LogoutArgs};
use crate::reference::parse_registry;
use crate::registry::auth::{Credentials, Secret};
use crate::registry::client::Client;
use crate::registry::credentials::IDENTITY_TOKEN_USERNAME;
use crate::registry::docker_config::{ConfigFile, Keeper};
use crate::registry::helper::{self, Outcome};
use crate::registry::login::Checked;
use anyhow::{anyhow, bail, Result};

/// `oras login`.
pub async fn login(args: LoginArgs) -> Result<()> {
    let registry = registry_arg(&args.registry)?;
    let config_path = args.credentials.registry_config.as_deref();
    // A config that cannot be read fails before anyone is asked for a password.
    ConfigFile::open(config_path).map_err(|e| anyhow!(e))?;
    let creds = credentials(&args.credentials, &registry)?;
    if let Secret::Basic { username, .. } = &creds.secret {
        if username.contains(':') {
            return Err(UsageError(format!("the username {username:?} contains ':', which cannot be stored: a registry reads the username up to the first ':'")).into());
        }
    }
    let opts = common::transport(&args.connection, Default::default());
    let http = crate::registry::transport::build_client(&opts).map_err(|e| anyhow!(e))?;
    let client = Client::new(http, &registry, &opts, creds.clone());
    match client.check_login().await {
        Ok(Checked::Accepted) => {}
        Ok(Checked::NotAsked) => crate::scrub::warn(format_args!(
            "{registry} did not ask for credentials (GET /v2/ answered without a challenge): they are stored unchecked"
        )),
        Err(e) => bail!(
            "login to {registry} failed: {e}; tried {}; nothing was stored",
            creds.describe()
        ),
    }
    // Read again: another program may have changed it while the password was typed or checked.
    let mut config = ConfigFile::open(config_path).map_err(|e| anyhow!(e))?;
    let place = store(&mut config, &registry, &creds.secret).await?;
    println!("Stored the credentials for {registry} in {place}");
    println!("Login Succeeded");
    Ok(())
}

/// `oras logout`. Credentials that are not there are not an error (exit 0), as with Docker and the
/// ORAS CLI: the registry is logged out either way.
pub async fn logout(args: LogoutArgs) -> Result<()> {
    let registry = registry_arg(&args.registry)?;
    let mut config = ConfigFile::open(args.registry_config.as_deref()).map_err(|e| anyhow!(e))?;
    let path = config.path().display().to_string();
    let mut removed_from = Vec::new();
    if let Keeper::Helper { name, field, server } = config.keeper(&registry) {
        let program = helper::program(&name);
        match blocking(move || helper::erase(&name, &server)).await? {
            Outcome::Done(_) => removed_from.push(program),
            Outcome::NotFound => {}
            // Credentials cannot be in a helper that is not there; those in the file still go.
            Outcome::Missing => crate::scrub::warn(format_args!(
                "{program} (the {field} of {path}) is not installed: nothing to remove from it"
            )),
            Outcome::Failed(why) => bail!(
                "cannot remove the credentials for {registry} from {program} (the {field} of {path}): {why}"
            ),
        }
    }
    if config.remove(&registry) {
        config.save().map_err(|e| anyhow!(e))?;
        removed_from.push(path);
    }
    if removed_from.is_empty() {
        println!("Not logged in to {registry}");
    } else {
        println!("Removed the credentials for {registry} from {}", removed_from.join(" and "));
    }
    Ok(())
}

/// The registry of a login: `host[:port]`, with a scheme and a path (Docker's
/// `https://index.docker.io/v1/`) dropped as Docker drops them.
fn registry_arg(arg: &str) -> Result<String> {
    let s = arg.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    parse_registry(host).map_err(|_| {
        UsageError(format!(
            "{:?} is not a registry: give its host[:port], e.g. registry.example or localhost:5000",
            crate::scrub::escape_controls(arg)
        ))
        .into()
    })
}

/// The credentials to log in with: from the flags, else asked on the terminal (as the ORAS CLI
/// does: an empty username asks for an identity token instead of a password).
fn credentials(flags: &CredentialArgs, registry: &str) -> Result<Credentials> {
    let secret_given = flags.password.is_some()
        || flags.password_stdin
        || flags.identity_token.is_some()
        || flags.identity_token_stdin;
    if secret_given {
        if let Some(c) = common::credentials(flags)? {
            return Ok(c);
        }
    }
    if !prompt::interactive() {
        let what = if flags.username.is_some() { "a password" } else { "credentials" };
        return Err(UsageError(format!(
            "login to {registry} needs {what}: give -u/--username with --password-stdin (or -p), or --identity-token-stdin; standard input is not a terminal to ask on"
        ))
        .into());
    }
    let username = match &flags.username {
        Some(u) => u.clone(),
        None => prompt::ask("Username: ")?.trim().to_string(),
    };
    if username.is_empty() {
        let token = prompt::ask_hidden("Token: ")?;
        if token.is_empty() {
            return Err(UsageError("no identity token given".into()).into());
        }
        return Ok(Credentials::identity_token(token, "typed at the prompt"));
    }
    let password = prompt::ask_hidden("Password: ")?;
    if password.is_empty() {
        return Err(UsageError("no password given".into()).into());
    }
    Ok(Credentials::basic(username, password, "typed at the prompt"))
}

/// Stores `secret` as `registry`'s credentials where the config says; returns where, for the
/// status line.
async fn store(config: &mut ConfigFile, registry: &str, secret: &Secret) -> Result<String> {
    let path = config.path().display().to_string();
    match config.keeper(registry) {
        Keeper::File { .. } => {
            config.put(registry, secret).map_err(|e| anyhow!(e))?;
            config.save().map_err(|e| anyhow!(e))?;
            let what = match secret {
                Secret::IdentityToken(_) => "identity token",
                _ => "password",
            };
            crate::scrub::warn(format_args!(
                "the {what} is stored unencrypted (base64) in {path}; a credential helper keeps it elsewhere (\"credsStore\": \"<name>\" there, for docker-credential-<name>)"
            ));
            Ok(path)
        }
        Keeper::Helper { name, field, server } => {
            let program = helper::program(&name);
            let (username, secret) = match secret {
                Secret::Basic { username, password } => (username.clone(), password.clone()),
                Secret::IdentityToken(t) => (IDENTITY_TOKEN_USERNAME.to_string(), t.clone()),
                _ => bail!("internal: only a password or an identity token is stored"),
            };
            let helper_name = name.clone();
            let outcome =
                blocking(move || helper::store(&helper_name, &server, &username, &secret)).await?;
            match outcome {
                Outcome::Done(_) => {}
                Outcome::Missing => bail!(
                    "cannot store the credentials for {registry}: {program} (the {field} of {path}) is not installed; install it, or remove \"{field}\" there to store them in the file; nothing was stored"
                ),
                Outcome::NotFound | Outcome::Failed(_) => {
                    let why = match outcome {
                        Outcome::Failed(why) => why,
                        _ => format!("`{program} store` said it found no credentials"),
                    };
                    bail!("cannot store the credentials for {registry} in {program} (the {field} of {path}): {why}")
                }
            }
            // A secret written into the file by an earlier login would outlive this one there.
            if config.strip_credentials(registry) {
                config.save().map_err(|e| anyhow!(e))?;
            }
            Ok(format!("{program} (the {field} of {path})"))
        }
    }
}

/// Runs a credential helper off the async workers: it may take up to its time limit.
async fn blocking(f: impl FnOnce() -> Outcome + Send + 'static) -> Result<Outcome> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("internal: the credential helper's task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_arguments() {
        assert_eq!(registry_arg("localhost:5000").unwrap(), "localhost:5000");
        assert_eq!(registry_arg("https://index.docker.io/v1/").unwrap(), "index.docker.io");
        assert_eq!(registry_arg("http://reg.example:8080").unwrap(), "reg.example:8080");
        assert_eq!(registry_arg("reg.example/team/app").unwrap(), "reg.example");
        for bad in ["", "https://", "reg example", "reg.example:port", "a\u{1b}b"] {
            let e = registry_arg(bad).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad:?}: {e}");
        }
    }
}
