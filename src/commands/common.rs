//! Set-up shared by commands: credentials, transport, progress, durations and sizes.

use super::UsageError;
use crate::cli::{Common, ConnectionArgs, CredentialArgs, DistributionSpec, Format};
use crate::progress::Progress;
use crate::registry::auth::Credentials;
use crate::registry::credentials::CredentialStore;
use crate::registry::target::{ReferrersMode, Registries};
use crate::registry::TransportOptions;
use anyhow::{Context, Result};
use std::io::{IsTerminal, Read};
use std::sync::Arc;

/// Checks `--platform` / `--sparse-index`: several platforms keep the index, which needs saying.
pub fn check_platforms(p: &crate::cli::PlatformArgs) -> Result<()> {
    if p.platform.len() > 1 && !p.sparse_index {
        return Err(UsageError(format!(
            "{} platforms given: one --platform replaces an index by that platform's manifest; to keep the index with several platforms' manifests, add --sparse-index",
            p.platform.len()
        ))
        .into());
    }
    Ok(())
}

/// The credentials the flags give (stdin ones included), or `None` to use the docker config.
pub fn credentials(c: &CredentialArgs) -> Result<Option<Credentials>> {
    let read_stdin = |what: &str| -> Result<String> {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .with_context(|| format!("cannot read {what} from standard input"))?;
        // One trailing line break is how `echo` and files end; anything else is the secret.
        let s = s
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&s)
            .to_string();
        if s.is_empty() {
            return Err(UsageError(format!("{what} read from standard input is empty")).into());
        }
        Ok(s)
    };
    // clap already rejects conflicting sources; these are the combinations it cannot express.
    if let Some(t) = c.identity_token.as_ref().map(|t| t.expose()) {
        eprintln!("Warning: an identity token given with --identity-token may be saved in shell history; prefer --identity-token-stdin");
        if t.is_empty() {
            return Err(UsageError("--identity-token is empty".into()).into());
        }
        return Ok(Some(Credentials::identity_token(t, "--identity-token")));
    }
    if c.identity_token_stdin {
        return Ok(Some(Credentials::identity_token(
            read_stdin("identity token")?,
            "--identity-token-stdin",
        )));
    }
    let (password, how) = if c.password_stdin {
        (Some(read_stdin("password")?), "--username/--password-stdin")
    } else {
        if c.password.is_some() {
            eprintln!("Warning: a password given with -p/--password may be saved in shell history; prefer --password-stdin");
        }
        (c.password.as_ref().map(|p| p.expose().to_string()), "--username/--password")
    };
    match (&c.username, password) {
        (Some(u), _) if u.is_empty() => Err(UsageError("--username is empty".into()).into()),
        (Some(u), Some(p)) => Ok(Some(Credentials::basic(u.clone(), p, how))),
        (Some(_), None) => Err(UsageError(
            "--username needs a password: add --password-stdin or -p/--password".into(),
        )
        .into()),
        (None, Some(_)) => {
            Err(UsageError("a password needs a username: add -u/--username".into()).into())
        }
        (None, None) => Ok(None),
    }
}

/// The transport the connection flags describe (with the stall floor of transfers, which only
/// commands that move blobs have); warns about `--insecure`.
pub fn transport(
    c: &ConnectionArgs,
    stall: crate::registry::stall::StallLimit,
) -> TransportOptions {
    if c.insecure {
        eprintln!("Warning: --insecure: TLS certificates are not verified");
    }
    TransportOptions {
        plain_http: c.plain_http,
        insecure: c.insecure,
        ca_file: c.ca_file.clone(),
        cert_file: c.cert_file.clone(),
        key_file: c.key_file.clone(),
        resolve: c.resolve.clone(),
        headers: c.headers.clone(),
        debug: c.debug,
        chunk_size: std::env::var("ORAS_UPLOAD_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0),
        request_timeout: std::time::Duration::from_secs(c.request_timeout),
        stall,
    }
}

/// The registries of a run, configured from the flags. Flag credentials apply to every
/// registry of the run (they are all named on the command line); without them each
/// registry gets its own entry of the docker config (`--registry-config` or the default).
pub fn registries(c: &Common, read_only: bool) -> Result<Arc<Registries>> {
    let stall = crate::registry::stall::StallLimit {
        bytes_per_second: c.speed_limit,
        window: std::time::Duration::from_secs(c.speed_time),
    };
    let opts = transport(&c.connection, stall);
    let mode = match c.distribution_spec {
        None => ReferrersMode::Auto,
        Some(DistributionSpec::ReferrersApi) => ReferrersMode::Api,
        Some(DistributionSpec::ReferrersTag) => ReferrersMode::Tag,
    };
    let creds = &c.credentials;
    let store = CredentialStore::load(credentials(creds)?, creds.registry_config.as_deref())
        .map_err(anyhow::Error::msg)?;
    let registries = Arc::new(Registries::new(opts, store, mode, read_only)?);
    // A run that stops early deletes the upload sessions it leaves open.
    crate::interrupt::watch(&registries);
    Ok(registries)
}

/// Progress output as the flags and the terminal allow.
pub fn progress(c: &Common) -> Progress {
    let tty = !c.no_tty && !c.connection.debug && std::io::stderr().is_terminal();
    Progress::new(tty, c.format == Format::Json)
}

/// `1.2s`, `3m04s`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = secs.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Human-readable byte count.
pub fn size(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
