//! Content digests: parsing, validation and streaming verification.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A validated `sha256:<64 lowercase hex>` digest (the only algorithm registries and layouts use in
/// practice). Shared, not copied: a run over thousands of manifests clones each digest into several
/// sets and maps.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(Arc<str>);

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("malformed digest {0:?}: expected sha256:<64 hex characters>")]
    Malformed(String),
    #[error("unsupported digest algorithm in {0:?}: only sha256 is supported")]
    Algorithm(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))).into())
    }

    /// The algorithm part (`sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The referrers tag-schema tag for this digest (`sha256-<hex>`).
    pub fn schema_tag(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        if alg != "sha256" {
            if !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            {
                return Err(DigestError::Algorithm(s.to_string()));
            }
            return Err(DigestError::Malformed(s.to_string()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest(s.into()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed from the deserializer's own text: no intermediate String per digest of a large
        // index.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Incremental SHA-256 of content whose digest is not known in advance.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Hasher(Sha256::new())
    }

    /// Feeds a chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.0.finalize())).into())
    }
}

/// Incremental verifier: feed bytes as they stream, then check size and digest once at the end.
pub struct Verifier {
    hasher: Sha256,
    seen: u64,
    expected: Digest,
    size: u64,
}

/// A size or digest mismatch found while streaming.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{digest}: expected {expected} bytes, got more than that")]
    TooLong { digest: Digest, expected: u64 },
    #[error("{digest}: expected {expected} bytes, got {got}")]
    Size { digest: Digest, expected: u64, got: u64 },
    #[error("content does not match its digest {expected} (computed {got})")]
    Mismatch { expected: Digest, got: Digest },
}

impl Verifier {
    /// A verifier for content that must be `size` bytes with digest `expected`.
    pub fn new(expected: &Digest, size: u64) -> Self {
        Verifier { hasher: Sha256::new(), seen: 0, expected: expected.clone(), size }
    }

    /// Feeds a chunk; fails as soon as more bytes arrive than the descriptor declares.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), VerifyError> {
        self.seen += chunk.len() as u64;
        if self.seen > self.size {
            return Err(VerifyError::TooLong {
                digest: self.expected.clone(),
                expected: self.size,
            });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Whether every declared byte has arrived (a sender that stops reading at the declared length
    /// never asks for the end of the stream, so the check must not wait for it).
    pub fn is_complete(&self) -> bool {
        self.seen == self.size
    }

    /// Checks the final size and digest.
    pub fn finish(self) -> Result<(), VerifyError> {
        if self.seen != self.size {
            return Err(VerifyError::Size {
                digest: self.expected,
                expected: self.size,
                got: self.seen,
            });
        }
        let got = Digest(format!("sha256:{}", hex::encode(self.hasher.finalize())).into());
        if got != self.expected {
            return Err(VerifyError::Mismatch { expected: self.expected, got });
        }
        Ok(())
    }
}

/// Checks a whole in-memory value against a digest and size.
pub fn verify_bytes(data: &[u8], digest: &Digest, size: u64) -> Result<(), VerifyError> {
    let mut v = Verifier::new(digest, size);
    v.update(data)?;
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_once_every_declared_byte_arrived() {
        let d = Digest::of(b"abc");
        let mut v = Verifier::new(&d, 3);
        v.update(b"ab").unwrap();
        assert!(!v.is_complete());
        v.update(b"c").unwrap();
        assert!(v.is_complete());
        assert!(v.finish().is_ok());
    }

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.as_str().parse::<Digest>().is_ok());
        assert!(matches!("sha512:abcd".parse::<Digest>(), Err(DigestError::Algorithm(_))));
        assert!(matches!("sha256:ABCD".parse::<Digest>(), Err(DigestError::Malformed(_))));
        assert!(matches!("nonsense".parse::<Digest>(), Err(DigestError::Malformed(_))));
        assert_eq!(d.schema_tag().len(), 71);
    }

    #[test]
    fn deserializes_from_borrowed_and_escaped_text() {
        let d = Digest::of(b"");
        let plain: Digest = serde_json::from_str(&format!("\"{d}\"")).unwrap();
        assert_eq!(plain, d);
        // An escape makes serde_json hand over a transient copy instead of the input's own text.
        let escaped: Digest =
            serde_json::from_str(&format!("\"sha256\\u003a{}\"", d.hex())).unwrap();
        assert_eq!(escaped, d);
        let err = serde_json::from_str::<Digest>("\"sha256:ABCD\"").unwrap_err().to_string();
        assert!(err.contains("malformed digest"), "{err}");
        assert!(serde_json::from_str::<Digest>("42").is_err(), "a number is not a digest");
    }

    #[test]
    fn verifier_catches_size_and_content() {
        let d = Digest::of(b"hello");
        assert!(verify_bytes(b"hello", &d, 5).is_ok());
        assert!(matches!(verify_bytes(b"hellO", &d, 5), Err(VerifyError::Mismatch { .. })));
        assert!(matches!(verify_bytes(b"hell", &d, 5), Err(VerifyError::Size { .. })));
        assert!(matches!(verify_bytes(b"hello!", &d, 5), Err(VerifyError::TooLong { .. })));
    }
}
