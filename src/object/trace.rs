//! The `--debug` trace of object storage requests: object_store's own HTTP client, wrapped so
//! that each request prints one line (method, URL, status or error, time), as registry requests
//! do. Requests are signed in headers, which are never printed; a presigned URL's signing
//! parameters are redacted all the same.

use crate::progress::debug_line;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;
use std::time::Instant;

/// Connects as object_store does, through a client that traces (used only with `--debug`: a
/// line is formatted for every request).
#[derive(Debug, Default)]
pub struct TracingConnector(ReqwestConnector);

impl HttpConnector for TracingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Traced(self.0.connect(options)?)))
    }
}

/// A client whose requests are traced.
#[derive(Debug)]
struct Traced(HttpClient);

#[async_trait::async_trait]
impl HttpService for Traced {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let shown = format!("{} {}", req.method(), shown_uri(req.uri()));
        let started = Instant::now();
        let answer = self.0.execute(req).await;
        let took = started.elapsed();
        match &answer {
            Ok(r) => debug_line(format_args!("S3 {shown} -> {} ({took:.0?})", r.status())),
            Err(e) => debug_line(format_args!(
                "S3 {shown} -> {} ({took:.0?})",
                crate::scrub::scrub(&super::one_line(e))
            )),
        }
        answer
    }
}

/// Query parameters that sign a presigned URL, or carry a token.
const SECRET_PARAMS: [&str; 3] = ["x-amz-signature", "x-amz-credential", "x-amz-security-token"];

/// The URI with signing parameters' values redacted and control characters escaped.
fn shown_uri(uri: &http::Uri) -> String {
    let base = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    );
    let Some(query) = uri.query() else { return crate::scrub::scrub(&base) };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=REDACTED")
            }
            _ => p.to_string(),
        })
        .collect();
    crate::scrub::scrub(&format!("{base}?{}", params.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_parameters_are_redacted() {
        let uri: http::Uri = "https://b.s3.example/k.tar?partNumber=2&uploadId=u1&X-Amz-Signature=abc&X-Amz-Security-Token=t"
            .parse()
            .unwrap();
        let shown = shown_uri(&uri);
        assert_eq!(
            shown,
            "https://b.s3.example/k.tar?partNumber=2&uploadId=u1&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED"
        );
        let plain: http::Uri = "http://127.0.0.1:9000/b/k".parse().unwrap();
        assert_eq!(shown_uri(&plain), "http://127.0.0.1:9000/b/k");
    }
}
