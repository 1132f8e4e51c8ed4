//! Backups in S3 and S3-compatible object stores (`s3://bucket/key.tar`, `s3://bucket/prefix/`):
//! the location grammar, the store built from the standard AWS environment, and errors worded and
//! typed for the engine. Writing is in `upload` (multipart, aborted unless committed) and `dir` (a
//! layout under a prefix); reading is in `read` (ranged GETs), used by `layout::reader`.

pub mod dir;
pub mod profile;
pub mod read;
pub mod trace;
pub mod upload;

use crate::target::{failure, ErrorKind, TargetError};
use anyhow::Result;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;

/// The longest one request to the store may take, its body included.
pub const REQUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// A store of the run (one bucket).
pub type Store = Arc<dyn ObjectStore>;

/// Where a backup lives in object storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The key (a tar) or prefix (a layout), without leading or trailing `/`; empty for the top of
    /// the bucket.
    pub key: String,
    /// Whether it was written with a trailing `/` (or names the bucket alone): a layout prefix.
    pub prefix: bool,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s3://{}/{}{}",
            self.bucket,
            self.key,
            if self.prefix && !self.key.is_empty() { "/" } else { "" }
        )
    }
}

impl Location {
    /// The object path of `name` below this location taken as a prefix.
    pub fn child(&self, name: &str) -> ObjPath {
        if self.key.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.key))
        }
    }

    /// The object path of the key itself.
    pub fn path(&self) -> ObjPath {
        ObjPath::from(self.key.as_str())
    }
}

/// Whether a bucket name is one S3 accepts (3 to 63 lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit).
fn valid_bucket(b: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.chars().all(|c| edge(c) || c == '.' || c == '-')
        && b.starts_with(edge)
        && b.ends_with(edge)
}

/// Parses an `--input`/`--output` that names object storage: `Ok(None)` for a local path or `-`,
/// an error (a usage error's text) for an unknown scheme or a malformed `s3://` location.
pub fn parse(spec: &str) -> std::result::Result<Option<Location>, String> {
    let Some((scheme, rest)) = spec.split_once("://") else { return Ok(None) };
    // A scheme is letters, digits, `+`, `-`, `.`, starting with a letter (RFC 3986); anything else
    // before `://` is a path that happens to contain it.
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !is_scheme {
        return Ok(None);
    }
    let shown = crate::scrub::escape_controls(spec);
    if !scheme.eq_ignore_ascii_case("s3") {
        return Err(format!(
            "{shown:?}: unknown scheme {scheme}://; object storage is named s3://BUCKET/KEY.tar or s3://BUCKET/PREFIX/ (S3 and S3-compatible stores), anything else is a local path"
        ));
    }
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!(
            "{shown:?} names no bucket: give s3://BUCKET/KEY.tar or s3://BUCKET/PREFIX/"
        ));
    }
    if !valid_bucket(bucket) {
        return Err(format!("{shown:?}: {:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and hyphens)", crate::scrub::escape_controls(bucket)));
    }
    let prefix = key.is_empty() || key.ends_with('/');
    let key = key.trim_end_matches('/');
    // Keys are bounded (S3: 1024 bytes) and plain: no empty, `.` or `..` segment, no control
    // characters, so that what is written is what a listing gives back.
    if key.len() > 900
        || key.chars().any(char::is_control)
        || (!key.is_empty() && key.split('/').any(|s| s.is_empty() || s == "." || s == ".."))
    {
        return Err(format!("{shown:?}: the key must be at most 900 bytes of non-empty path segments, without '.', '..' or control characters"));
    }
    Ok(Some(Location { bucket: bucket.to_string(), key: key.to_string(), prefix }))
}

/// Whether the environment names credentials object_store reads without asking the instance
/// metadata service (which only answers on a cloud machine, and elsewhere waits for a timeout).
fn credentials_in_env() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || (set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN"))
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
}

/// The store of `loc`'s bucket, configured from the standard AWS environment variables.
pub fn connect(loc: &Location) -> Result<Store> {
    let instance = std::env::var("ORAS_S3_INSTANCE_CREDENTIALS").is_ok_and(|v| v == "1");
    let profile = profile::load()?;
    let in_env = credentials_in_env();
    if !in_env && !instance && !profile.has_keys() {
        let why = if profile.unsupported.is_empty() {
            String::new()
        } else {
            format!(" (profile {:?} gets them by {}, which this tool does not run: export them first, e.g. eval \"$(aws configure export-credentials --format env)\")", profile.name, profile.unsupported.join(", "))
        };
        anyhow::bail!("no AWS credentials for {loc}{why}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or keys in ~/.aws/credentials for AWS_PROFILE; on an EC2 machine, ORAS_S3_INSTANCE_CREDENTIALS=1 uses its instance profile");
    }
    // As AmazonS3Builder::from_env, except that a variable set empty counts as unset (an empty
    // session token would otherwise be sent as one).
    // object_store's defaults end every request after 30 s, body included: a blob's GET or a
    // part's PUT over a slow link would fail however steadily it moved. A request may take 15
    // minutes (a 16 MiB part at 18 KiB/s); blob reads are cut into GETs of at most 64 MiB and held
    // to the stall floor (`read::stream_range`). Five retries (about 3 s of backoff) within a
    // minute: a store that is not there fails fast instead of after 3 minutes.
    let mut client = ClientOptions::new()
        .with_timeout(REQUEST_LIMIT)
        .with_connect_timeout(std::time::Duration::from_secs(10));
    for ca in ca_bundle(&profile)? {
        client = client.with_root_certificate(ca);
    }
    let retry = RetryConfig {
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(60),
        ..RetryConfig::default()
    };
    let mut b = AmazonS3Builder::new().with_client_options(client).with_retry(retry);
    if crate::progress::debugging() {
        b = b.with_http_connector(trace::TracingConnector::default());
    }
    for (key, value) in std::env::vars_os() {
        if let (Some(key), Some(value)) = (key.to_str(), value.to_str()) {
            if key.starts_with("AWS_") && !value.is_empty() {
                if let Ok(k) = key.to_ascii_lowercase().parse() {
                    b = b.with_config(k, value);
                }
            }
        }
    }
    b = b.with_bucket_name(&loc.bucket);
    // The profile fills in what the environment leaves out; its keys only when the environment
    // names no credentials of its own.
    if !in_env {
        if let (Some(id), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &profile.session_token {
                b = b.with_token(token);
            }
        }
    }
    // An endpoint given as http:// is a store without TLS (MinIO or a test server on loopback):
    // naming it so is the consent AWS_ALLOW_HTTP would otherwise give.
    let mut endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    if endpoint.is_none() {
        if let Some(e) = &profile.endpoint_url {
            b = b.with_endpoint(e);
            endpoint = Some(e.clone());
        }
    }
    if endpoint.as_deref().is_some_and(|e| e.to_ascii_lowercase().starts_with("http://")) {
        b = b.with_allow_http(true);
    }
    let region_set = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if !region_set {
        b = b.with_region(profile.region.as_deref().unwrap_or("us-east-1"));
    }
    let store = b.build().map_err(|e| anyhow::anyhow!("cannot use {loc}: {}", one_line(&e)))?;
    Ok(Arc::new(store))
}

/// Largest CA bundle read (Debian's whole system bundle is about 200 KiB).
const MAX_CA_BUNDLE: u64 = 4 << 20;

/// The CAs `AWS_CA_BUNDLE` (else the profile's `ca_bundle`) names, trusted for the store besides
/// the system's, as the AWS CLI trusts them: a private CA in front of MinIO or Ceph.
fn ca_bundle(profile: &profile::Profile) -> Result<Vec<object_store::Certificate>> {
    let named = std::env::var("AWS_CA_BUNDLE").ok().filter(|v| !v.is_empty());
    let Some(path) = named.or_else(|| profile.ca_bundle.clone()) else { return Ok(Vec::new()) };
    let fail = |why: String| {
        anyhow::anyhow!(
            "cannot use the CA bundle {path:?} (AWS_CA_BUNDLE or the profile's ca_bundle): {why}"
        )
    };
    let file = std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?;
    let mut pem = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CA_BUNDLE + 1), &mut pem)
        .map_err(|e| fail(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_BUNDLE {
        return Err(fail(format!("over {MAX_CA_BUNDLE} bytes")));
    }
    let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| fail(one_line(&e)))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// An error's text on one line (object_store's carry their causes after line breaks).
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An object store error's text on one line with the causes it hides (object_store says "error
/// sending request" and keeps why in its source chain), and what to do when the cause is a
/// certificate not trusted.
fn describe(e: &object_store::Error) -> String {
    let mut text = one_line(e);
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        let t = one_line(cause);
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        next = cause.source();
    }
    let untrusted = matches!(
        crate::registry::transport::tls_error(e),
        Some(rustls::Error::InvalidCertificate(_))
    );
    if untrusted {
        text.push_str(" (the store's TLS certificate is not trusted: name the CA that issued it in AWS_CA_BUNDLE)");
    }
    text
}

/// An object store error, worded with what was being done (`what`, naming the object) and typed
/// for the engine.
pub fn error(e: object_store::Error, what: &str, loc: &Location) -> TargetError {
    let text = describe(&e);
    let (kind, msg) = if text.contains("NoSuchBucket") {
        (ErrorKind::NotFound, format!("{what}: bucket {:?} does not exist", loc.bucket))
    } else {
        match &e {
            object_store::Error::NotFound { .. } => {
                (ErrorKind::NotFound, format!("{what}: no such object"))
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                (ErrorKind::Denied, format!("{what}: access denied ({text})"))
            }
            _ if [
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
            ]
            .iter()
            .any(|c| text.contains(c)) =>
            {
                (ErrorKind::Denied, format!("{what}: access denied ({text})"))
            }
            _ => (ErrorKind::Other, format!("{what}: {text}")),
        }
    };
    failure(kind, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_bad_ones_say_why() {
        let l = parse("s3://my-bucket/backups/app.tar").expect("valid").expect("s3");
        assert_eq!(
            (l.bucket.as_str(), l.key.as_str(), l.prefix),
            ("my-bucket", "backups/app.tar", false)
        );
        let l = parse("s3://my-bucket/backups/").expect("valid").expect("s3");
        assert_eq!((l.key.as_str(), l.prefix), ("backups", true));
        assert_eq!(l.child("index.json").as_ref(), "backups/index.json");
        let l = parse("s3://my-bucket").expect("valid").expect("s3");
        assert_eq!((l.key.as_str(), l.prefix), ("", true));
        assert_eq!(parse("./dir").expect("path"), None);
        assert_eq!(parse("-").expect("path"), None);
        assert!(parse("s3:///key.tar").unwrap_err().contains("names no bucket"));
        assert!(parse("s3://").unwrap_err().contains("names no bucket"));
        assert!(parse("gs://b/k.tar").unwrap_err().contains("unknown scheme gs://"));
        assert!(parse("s3://Bad_Bucket/k.tar").unwrap_err().contains("not a valid bucket"));
        assert!(parse("s3://bucket/a/../k.tar").unwrap_err().contains("'..'"));
        assert!(parse("s3://bucket/a//k.tar").is_err());
    }
}
