//! Reading blobs: whether a repository holds one (HEAD), and its bytes as a stream (GET) under the
//! stall watch. Writing them is `uploads`.

use super::auth::repo_scope;
use super::client::{ByteStream, Call, Client, Result};
use super::stall;
use super::transport::describe_transport;
use crate::manifest::Descriptor;
use futures::StreamExt;
use reqwest::{Method, StatusCode};

impl Client {
    /// Whether the repository holds a blob.
    pub async fn blob_exists(&self, repo: &str, desc: &Descriptor, push: bool) -> Result<bool> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let url = self.url(repo, &format!("blobs/{}", desc.digest));
        let scopes = [repo_scope(repo, push)];
        let op = "check blob";
        let resp = self.send(&Call::new(op, &target, Method::HEAD, &url, &scopes), |r| r).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(op, &target, resp).await),
        }
    }

    /// Streams a blob; the caller verifies the bytes.
    pub async fn get_blob(&self, repo: &str, desc: &Descriptor) -> Result<ByteStream> {
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let url = self.url(repo, &format!("blobs/{}", desc.digest));
        let scopes = [repo_scope(repo, false)];
        let op = "fetch blob";
        let resp = self
            .send(&Call::new(op, &target, Method::GET, &url, &scopes).streamed(), |r| r)
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(op, &target, resp).await);
        }
        let registry = self.registry.clone();
        let bytes = resp.bytes_stream().map(move |r| {
            r.map_err(|e| std::io::Error::other(format!("{} ({registry})", describe_transport(&e))))
        });
        Ok(Box::pin(stall::guard(bytes, self.stall)))
    }
}
