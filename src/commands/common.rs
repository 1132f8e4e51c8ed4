//! Set-up shared by commands: credentials, transport, progress, durations and sizes.

use super::UsageError;
use crate::cli::{Common, DistributionSpec, Format};
use crate::progress::Progress;
use crate::registry::auth::Credentials;
use crate::registry::target::{ReferrersMode, Registries};
use crate::registry::TransportOptions;
use anyhow::{Context, Result};
use std::io::{IsTerminal, Read};

/// Reads the credentials the flags name (stdin ones included).
pub fn credentials(c: &Common) -> Result<Credentials> {
    let read_stdin = |what: &str| -> Result<String> {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).with_context(|| format!("cannot read {what} from standard input"))?;
        let s = s.trim_end_matches(['\n', '\r']).to_string();
        if s.is_empty() {
            return Err(UsageError(format!("{what} read from standard input is empty")).into());
        }
        Ok(s)
    };
    if let Some(t) = &c.identity_token {
        return Ok(Credentials::IdentityToken(t.clone()));
    }
    if c.identity_token_stdin {
        return Ok(Credentials::IdentityToken(read_stdin("identity token")?));
    }
    let password = if c.password_stdin {
        Some(read_stdin("password")?)
    } else {
        if c.password.is_some() {
            eprintln!("Warning: a password given with -p/--password may be saved in shell history; prefer --password-stdin");
        }
        c.password.clone()
    };
    match (&c.username, password) {
        (Some(u), Some(p)) => Ok(Credentials::Basic { username: u.clone(), password: p }),
        (Some(_), None) => Err(UsageError("--username needs a password: add -p/--password or --password-stdin".into()).into()),
        (None, Some(_)) => Err(UsageError("a password needs a username: add -u/--username".into()).into()),
        (None, None) => Ok(Credentials::Anonymous),
    }
}

/// The registries of a run, configured from the flags.
pub fn registries(c: &Common, read_only: bool) -> Result<Registries> {
    if c.insecure {
        eprintln!("Warning: --insecure: TLS certificates are not verified");
    }
    let opts = TransportOptions {
        plain_http: c.plain_http,
        insecure: c.insecure,
        ca_file: c.ca_file.clone(),
        cert_file: c.cert_file.clone(),
        key_file: c.key_file.clone(),
        resolve: c.resolve.clone(),
        headers: c.headers.clone(),
        debug: c.debug,
        chunk_size: std::env::var("ORAS_UPLOAD_CHUNK_SIZE").ok().and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0),
    };
    let mode = match c.distribution_spec {
        None => ReferrersMode::Auto,
        Some(DistributionSpec::ReferrersApi) => ReferrersMode::Api,
        Some(DistributionSpec::ReferrersTag) => ReferrersMode::Tag,
    };
    Registries::new(opts, credentials(c)?, mode, read_only)
}

/// Progress output as the flags and the terminal allow.
pub fn progress(c: &Common) -> Progress {
    let tty = !c.no_tty && !c.debug && std::io::stderr().is_terminal();
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
