//! An S3-compatible server for the object storage tests: moto (PyPI `moto[server]`, which
//! scripts/test.sh installs into a virtual environment and names with `ORAS_TEST_PYTHON`) on a free
//! loopback port, killed when dropped. Moto does not check signatures, so the test's own plain
//! HTTP requests (create a bucket, read or overwrite an object, list multipart uploads) carry a
//! placeholder signature.

use super::registry::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the object storage tests are ignored unless asked for.
pub const NEEDS_MOTO: &str =
    "object storage: needs moto[server]; scripts/test.sh installs it and runs these";

/// A running moto server.
pub struct S3Server {
    child: Child,
    port: u16,
    /// `http`, or `https` when started with a certificate.
    scheme: &'static str,
    log: tempfile::NamedTempFile,
    http: reqwest::blocking::Client,
}

/// The Python that has moto: `ORAS_TEST_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("ORAS_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

impl S3Server {
    /// Starts moto; a machine without it fails the test with the reason (run through
    /// scripts/test.sh, which installs it).
    pub fn start() -> S3Server {
        Self::start_with(None)
    }

    /// Starts moto serving HTTPS with the test PKI's server certificate (for 127.0.0.1).
    pub fn start_tls(pki: &super::tls::Pki) -> S3Server {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&super::tls::Pki>) -> S3Server {
        let py = python();
        let has = Command::new(&py)
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has,
            "{py} cannot import moto.server: {NEEDS_MOTO} (or pip install 'moto[server]')"
        );
        let mut last = String::new();
        // The port was free a moment ago; another process may take it first: try again.
        for _ in 0..5 {
            match Self::try_start(&py, pki) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("could not start moto: {last}");
    }

    fn try_start(py: &str, pki: Option<&super::tls::Pki>) -> Result<S3Server, String> {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut args =
            vec!["-m".to_string(), "moto.server".into(), "-H".into(), "127.0.0.1".into()];
        args.extend(["-p".to_string(), port.to_string()]);
        if let Some(pki) = pki {
            let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
            args.extend(["-c".to_string(), path(&pki.server_cert)]);
            args.extend(["-k".to_string(), path(&pki.server_key)]);
        }
        let child = Command::new(py)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().map_err(|e| e.to_string())?))
            .spawn()
            .map_err(|e| format!("spawn {py}: {e}"))?;
        // Moto refuses anonymous object reads; it takes the access key from the Authorization
        // header without checking the signature.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"),
        );
        let mut http = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10));
        if let Some(pki) = pki {
            let pem = std::fs::read(&pki.ca_cert).map_err(|e| e.to_string())?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
            http = http.add_root_certificate(ca);
        }
        let http = http.build().map_err(|e| e.to_string())?;
        let scheme = if pki.is_some() { "https" } else { "http" };
        let mut s = S3Server { child, port, scheme, log, http };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                let log = std::fs::read_to_string(s.log.path()).unwrap_or_default();
                return Err(format!("moto exited early ({status}): {log}"));
            }
            if s.http.get(s.url("")).send().is_ok_and(|r| r.status().is_success()) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err("moto did not answer within 60 s".into());
            }
            // Polled until it answers: no fixed wait.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT/<path>` (`https` when serving TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}/{path}", self.scheme, self.port)
    }

    /// The environment a run of oras needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", String::new()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.url("").trim_end_matches('/').to_string()),
        ]
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let r = self.http.put(self.url(bucket)).send().expect("create bucket");
        assert!(r.status().is_success(), "create bucket {bucket}: {}", r.status());
    }

    /// An object's bytes, `None` when there is none.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self.http.get(self.url(&format!("{bucket}/{key}"))).send().expect("get object");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(r.status().is_success(), "get {bucket}/{key}: {}: {:?}", r.status(), r.text());
        Some(r.bytes().expect("object body").to_vec())
    }

    /// Writes an object.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let r =
            self.http.put(self.url(&format!("{bucket}/{key}"))).body(bytes).send().expect("put");
        assert!(r.status().is_success(), "put {bucket}/{key}: {}", r.status());
    }

    /// An object's ETag, which for an object completed from N parts ends in `-N`.
    pub fn etag(&self, bucket: &str, key: &str) -> String {
        let r = self.http.head(self.url(&format!("{bucket}/{key}"))).send().expect("head object");
        assert!(r.status().is_success(), "head {bucket}/{key}: {}", r.status());
        let etag = r.headers().get(reqwest::header::ETAG).expect("an ETag");
        etag.to_str().expect("ASCII ETag").trim_matches('"').to_string()
    }

    /// The keys of a bucket (first 1000).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let body = self
            .http
            .get(self.url(&format!("{bucket}?list-type=2")))
            .send()
            .expect("list objects")
            .text()
            .expect("listing");
        tags(&body, "Key")
    }

    /// The keys of the multipart uploads under way in a bucket.
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let body = self
            .http
            .get(self.url(&format!("{bucket}?uploads")))
            .send()
            .expect("list multipart uploads")
            .text()
            .expect("listing");
        body.split("<Upload>").skip(1).flat_map(|u| tags(u, "Key")).collect()
    }
}

/// The text of every `<name>...</name>` element.
fn tags(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|p| p.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
