//! Registry errors that say what was being done, to what, and what the registry answered, typed
//! with the [`ErrorKind`] decisions are made by: from the HTTP status and the OCI error codes of
//! the answer's body (`errors[].code`, distribution spec), or set where the failure is found on
//! this side.

use super::auth::AuthError;
use crate::target::ErrorKind;
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
    /// The registry's `errors[].code` values (none for a failure found on this side).
    pub codes: Vec<String>,
    kind: ErrorKind,
    /// Why the registry's challenge could not be answered, when that is the failure.
    auth: Option<Box<AuthError>>,
}

impl RegistryError {
    /// An error the registry answered: its status and the OCI error codes of its body decide the
    /// kind (see [`classify`]).
    pub fn answered(
        op: &str,
        target: &str,
        status: u16,
        codes: &[String],
        detail: impl Into<String>,
    ) -> Self {
        RegistryError {
            op: op.into(),
            target: target.into(),
            status: Some(status),
            detail: detail.into(),
            codes: codes.to_vec(),
            kind: classify(status, codes),
            auth: None,
        }
    }

    /// A request whose 401 could not be answered: the token server refused the credentials or could
    /// not be asked, or there were none to give. A denial, as the registry's 401 was.
    pub fn unauthorized(op: &str, target: &str, error: AuthError) -> Self {
        let detail = error.to_string();
        RegistryError {
            auth: Some(Box::new(error)),
            ..RegistryError::answered(op, target, 401, &[], detail)
        }
    }

    /// Why the registry's challenge could not be answered, when that is the failure.
    pub fn auth_error(&self) -> Option<&AuthError> {
        self.auth.as_deref()
    }

    /// A failure found on this side: no usable answer (a transport error, a timeout, a stall), or
    /// an answer that fails a check (a digest, a size limit, the protocol), of the kind given.
    pub fn local(op: &str, target: &str, kind: ErrorKind, detail: impl Into<String>) -> Self {
        RegistryError {
            op: op.into(),
            target: target.into(),
            status: None,
            detail: detail.into(),
            codes: Vec::new(),
            kind,
            auth: None,
        }
    }

    /// The same error, of another kind (a refusal this side knows how to get past on a retry).
    pub fn with_kind(self, kind: ErrorKind) -> Self {
        RegistryError { kind, ..self }
    }

    /// The same error, its detail said in the terms of what was being done.
    pub fn with_detail(self, detail: impl Into<String>) -> Self {
        RegistryError { detail: detail.into(), ..self }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the error says the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
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

/// The kind of an error answer. A status that says "try again later" (408, 429, 5xx) is transient
/// whatever the body says; otherwise the first OCI error code with a kind of its own decides (a
/// code names the failure more precisely than a status, which registries choose loosely: `403` with
/// `TOOMANYREQUESTS`, `400` with `DIGEST_INVALID`); without one the status does: 401 and 403 are
/// denials, 404 is not found, and any other refusal is something the registry does not do.
pub fn classify(status: u16, codes: &[String]) -> ErrorKind {
    if matches!(status, 408 | 429 | 500..=599) {
        return ErrorKind::Transient;
    }
    codes.iter().find_map(|c| code_kind(c)).unwrap_or(match status {
        401 | 403 => ErrorKind::Denied,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::Unsupported,
    })
}

/// The kind an OCI distribution error code names; None for codes that say what was wrong with a
/// request (`MANIFEST_INVALID`, `NAME_INVALID`, `BLOB_UPLOAD_INVALID`...) without saying more than
/// its status.
fn code_kind(code: &str) -> Option<ErrorKind> {
    Some(match code.to_ascii_uppercase().as_str() {
        "BLOB_UNKNOWN" | "BLOB_UPLOAD_UNKNOWN" | "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" => {
            ErrorKind::NotFound
        }
        "UNAUTHORIZED" | "DENIED" => ErrorKind::Denied,
        "UNSUPPORTED" => ErrorKind::Unsupported,
        // Bytes that did not arrive as they were sent (damaged or cut on their way).
        "DIGEST_INVALID" | "SIZE_INVALID" => ErrorKind::Integrity,
        "TOOMANYREQUESTS" | "UNAVAILABLE" => ErrorKind::Transient,
        _ => return None,
    })
}

/// What a registry's error answer says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// The `errors[].code` values, in order.
    pub codes: Vec<String>,
    /// `CODE: message` pairs joined by `; `, else a short excerpt of the body.
    pub text: String,
}

/// Reads the OCI error codes and messages of a registry's error body
/// (`{"errors":[{"code","message"}]}`); any other body is shown as a short excerpt.
pub fn parse_body(body: &[u8]) -> ErrorBody {
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
        let codes: Vec<String> = e.errors.iter().filter_map(|i| i.code.clone()).collect();
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
            return ErrorBody { codes, text: parts.join("; ") };
        }
    }
    let text = String::from_utf8_lossy(body);
    let short: String = text.trim().chars().take(200).collect();
    ErrorBody { codes: Vec::new(), text: short.replace('\n', " ") }
}

/// Extracts `CODE: message` pairs from a registry error body, else a short excerpt of it.
pub fn describe_body(body: &[u8]) -> String {
    parse_body(body).text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> ErrorKind {
        classify(status, &parse_body(body.as_bytes()).codes)
    }

    fn errors(code: &str) -> String {
        format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#)
    }

    #[test]
    fn statuses_decide_without_codes() {
        assert_eq!(kind(404, ""), ErrorKind::NotFound);
        assert_eq!(kind(401, "not json"), ErrorKind::Denied);
        assert_eq!(
            kind(403, &errors("INJECTED")),
            ErrorKind::Denied,
            "an unknown code leaves it to the status"
        );
        assert_eq!(
            kind(400, &errors("MANIFEST_INVALID")),
            ErrorKind::Unsupported,
            "a code without a kind of its own"
        );
        assert_eq!(kind(405, ""), ErrorKind::Unsupported);
        assert_eq!(kind(304, ""), ErrorKind::Unsupported);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(kind(s, ""), ErrorKind::Transient, "{s}");
        }
    }

    #[test]
    fn codes_refine_the_status() {
        assert_eq!(kind(400, &errors("DIGEST_INVALID")), ErrorKind::Integrity);
        assert_eq!(kind(400, &errors("SIZE_INVALID")), ErrorKind::Integrity);
        assert_eq!(kind(400, &errors("NAME_UNKNOWN")), ErrorKind::NotFound);
        assert_eq!(kind(404, &errors("MANIFEST_UNKNOWN")), ErrorKind::NotFound);
        assert_eq!(kind(404, &errors("BLOB_UNKNOWN")), ErrorKind::NotFound);
        assert_eq!(kind(401, &errors("UNAUTHORIZED")), ErrorKind::Denied);
        assert_eq!(kind(404, &errors("DENIED")), ErrorKind::Denied, "the code names the failure");
        assert_eq!(kind(403, &errors("TOOMANYREQUESTS")), ErrorKind::Transient);
        assert_eq!(kind(405, &errors("UNSUPPORTED")), ErrorKind::Unsupported);
        assert_eq!(
            kind(400, &errors("digest_invalid")),
            ErrorKind::Integrity,
            "codes are compared without case"
        );
    }

    #[test]
    fn retry_statuses_stay_transient_whatever_the_code() {
        assert_eq!(kind(503, &errors("DIGEST_INVALID")), ErrorKind::Transient);
        assert_eq!(kind(429, &errors("DENIED")), ErrorKind::Transient);
    }

    #[test]
    fn the_first_code_with_a_kind_decides() {
        let body = r#"{"errors":[{"code":"MANIFEST_INVALID"},{"code":"BLOB_UNKNOWN","message":"gone"},{"code":"DENIED"}]}"#;
        assert_eq!(kind(400, body), ErrorKind::NotFound);
        let parsed = parse_body(body.as_bytes());
        assert_eq!(parsed.codes, ["MANIFEST_INVALID", "BLOB_UNKNOWN", "DENIED"]);
        assert_eq!(parsed.text, "MANIFEST_INVALID; BLOB_UNKNOWN: gone; DENIED");
    }

    #[test]
    fn message_text_does_not_decide() {
        // Only the code field counts: a message that reads like a code is only a message.
        assert_eq!(
            kind(400, r#"{"errors":[{"code":"UNKNOWN","message":"DIGEST_INVALID"}]}"#),
            ErrorKind::Unsupported
        );
        assert_eq!(kind(400, "DIGEST_INVALID: not json"), ErrorKind::Unsupported);
    }

    #[test]
    fn bodies_without_codes_are_excerpted() {
        assert_eq!(
            parse_body(b"  upstream\nfailed  "),
            ErrorBody { codes: vec![], text: "upstream failed".into() }
        );
        assert_eq!(parse_body(br#"{"errors":[{}]}"#).text, r#"{"errors":[{}]}"#);
        assert_eq!(describe_body(&"x".repeat(500).into_bytes()).len(), 200);
    }

    #[test]
    fn local_errors_carry_their_kind() {
        let e = RegistryError::local(
            "fetch manifest",
            "r/a:v1",
            ErrorKind::Integrity,
            "content does not match",
        );
        assert_eq!((e.kind(), e.status, e.is_not_found()), (ErrorKind::Integrity, None, false));
        assert_eq!(e.to_string(), "fetch manifest r/a:v1: content does not match");
        let e = RegistryError::answered("resolve", "r/a:v1", 404, &[], "MANIFEST_UNKNOWN: unknown");
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "resolve r/a:v1: HTTP 404 MANIFEST_UNKNOWN: unknown");
    }
}
