//! Text from outside (a registry's answers, a backup's names) made safe to print: secrets of the
//! run redacted, control characters escaped, so that nothing a registry sends can leak a credential
//! into a log or drive the user's terminal.

use base64::Engine as _;
use std::borrow::Cow;
use std::sync::Mutex;

/// Shorter values are not redacted: they would match ordinary words.
const MIN_SECRET_LEN: usize = 4;

/// Every secret of the run (passwords, tokens, and their encoded forms), for [`redact`].
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds a secret that must never be printed (a password, a token), with its base64 forms.
pub fn register_secret(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    register([
        secret.to_string(),
        b64.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ]);
}

/// Adds the pair `username:password` as it travels in a Basic header, besides the password alone.
pub fn register_basic(username: &str, password: &str) {
    register_secret(password);
    register([base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))]);
}

/// Adds exact values to [`SECRETS`], each once.
fn register(values: impl IntoIterator<Item = String>) {
    if let Ok(mut all) = SECRETS.lock() {
        for v in values {
            if !all.contains(&v) {
                all.push(v);
            }
        }
        // Longest first, so that a secret containing another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Replaces every registered secret, and the credential of any `Basic`/`Bearer` authorization a
/// registry echoed, with `<redacted>`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if let Ok(all) = SECRETS.lock() {
        for s in all.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "<redacted>"));
            }
        }
    }
    match redact_schemes(&out) {
        Some(clean) => Cow::Owned(clean),
        None => out,
    }
}

/// The text with the word after each `Basic ` or `Bearer ` (any case) replaced; None when there is
/// none.
fn redact_schemes(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("basic ") && !lower.contains("bearer ") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut rest_lower = lower.as_str();
    loop {
        let next = ["basic ", "bearer "]
            .iter()
            .filter_map(|w| rest_lower.find(w).map(|i| (i, w.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return Some(out);
        };
        out.push_str(&rest[..at + len]);
        let after = &rest[at + len..];
        let credential = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
            .unwrap_or(after.len());
        if credential >= MIN_SECRET_LEN {
            out.push_str("<redacted>");
        } else {
            out.push_str(&after[..credential]);
        }
        rest = &after[credential..];
        rest_lower = &rest_lower[at + len + credential..];
    }
}

/// Escapes control characters (C0, DEL, C1) as `\u{..}` so that text from outside cannot move the
/// cursor, recolour or retitle the user's terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text fit to print: secrets redacted, then control characters escaped.
pub fn scrub(text: &str) -> String {
    escape_controls(&redact(text)).into_owned()
}

/// Prints a warning line on stderr, scrubbed.
pub fn warn(message: std::fmt::Arguments<'_>) {
    eprintln!("Warning: {}", scrub(&message.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("v1"), "v1");
        assert_eq!(escape_controls("a\u{1b}[31mred\u{7}\n"), "a\\u{1b}[31mred\\u{7}\\u{a}");
        assert_eq!(escape_controls("\u{9b}x"), "\\u{9b}x");
    }

    #[test]
    fn registered_secrets_and_echoed_authorizations_are_redacted() {
        register_basic("alice", "S3cr3t-pw-9d1f");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:S3cr3t-pw-9d1f");
        let echoed = format!("denied: password=S3cr3t-pw-9d1f header {b64} and Bearer eyJhbGciOi.x-y_z= end; basic ok");
        let clean = redact(&echoed);
        assert!(
            !clean.contains("S3cr3t-pw-9d1f")
                && !clean.contains(&b64)
                && !clean.contains("eyJhbGciOi"),
            "{clean}"
        );
        assert!(clean.contains("Bearer <redacted> end") && clean.ends_with("basic ok"), "{clean}");
        assert_eq!(redact("nothing secret here"), "nothing secret here");
    }
}
