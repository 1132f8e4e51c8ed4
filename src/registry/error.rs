//! Registry errors that say what was being done, to what, and what the registry answered.

use std::fmt;

/// A failed registry operation.
#[derive(Debug)]
pub struct RegistryError {
    /// What was being done (`list tags of`, `push blob to`...).
    pub op: String,
    /// The reference or URL it was done to.
    pub target: String,
    /// HTTP status, when the registry answered.
    pub status: Option<u16>,
    /// The registry's `errors[].code: message`, or the transport error.
    pub detail: String,
}

impl RegistryError {
    /// Whether the error says the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.op, self.target)?;
        if let Some(s) = self.status {
            write!(f, "HTTP {s}")?;
            if !self.detail.is_empty() {
                write!(f, " ")?;
            }
        }
        f.write_str(&self.detail)
    }
}

impl std::error::Error for RegistryError {}

/// Extracts `CODE: message` pairs from a registry error body, else a short excerpt of it.
pub fn describe_body(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .into_iter()
            .map(|i| match (i.code, i.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c,
                (None, Some(m)) => m,
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let short: String = text.chars().take(200).collect();
    short.replace('\n', " ")
}
