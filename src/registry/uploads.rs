//! Blob uploads: a session opened (POST), its bytes sent in one PUT, in PATCH chunks, or in one
//! PATCH held back and committed later (PUT `?digest=`), and cross-repository mounts. Every request
//! goes through [`Client::send`]; one whose body is a stream is sent once (its bytes are gone once
//! read), one whose bytes are in memory is sent again when the registry asks for fresh credentials.
//! Sessions left open are recorded, so that a run that stops early deletes them.

use super::auth::repo_scope;
use super::client::{ByteStream, Call, Client, NoAnswer, Prepared, Replay, Result};
use super::error::RegistryError;
use super::quirks::Refusal;
use super::stall;
use super::urls::absolute;
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::target::ErrorKind;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The answer to an upload must come within this many request deadlines of its last byte:
/// committing a large blob may mean a copy inside the registry's storage.
pub(super) const COMMIT_DEADLINE_FACTOR: u32 = 10;

/// The size of the pieces an in-memory body is handed to the HTTP stack in, so that the stall watch
/// sees the registry read them.
const PIECE: usize = 256 << 10;

/// The upload sessions of one client that are open and not finished, and how many are being opened.
pub(super) struct Sessions {
    /// Session (a location without its query) -> (repository, latest location).
    open: Mutex<HashMap<String, (String, String)>>,
    /// How many requests opening a session are on their way.
    opening: watch::Sender<usize>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { open: Mutex::new(HashMap::new()), opening: watch::Sender::new(0) }
    }
}

/// Counts one session being opened while it lives.
struct Opening(watch::Sender<usize>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Sessions {
    /// Records a session opened in `repo` at `location`.
    fn opened(&self, repo: &str, location: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.insert(session_of(location).to_string(), (repo.to_string(), location.to_string()));
        }
    }

    /// Records that a session moved on to `next` (Distribution only accepts a session's latest
    /// location, whose state names the size so far).
    fn moved(&self, location: &str, next: &str) {
        if let Ok(mut open) = self.open.lock() {
            if let Some((repo, _)) = open.remove(session_of(location)) {
                open.insert(session_of(next).to_string(), (repo, next.to_string()));
            }
        }
    }

    /// The latest location of the session `location` belongs to, while it is open.
    fn latest(&self, location: &str) -> Option<String> {
        let open = self.open.lock().ok()?;
        open.get(session_of(location)).map(|(_, latest)| latest.clone())
    }

    /// Forgets a session that was finished or deleted.
    fn closed(&self, location: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(session_of(location));
        }
    }

    /// Takes every session recorded as open: (repository, latest location).
    fn take_all(&self) -> Vec<(String, String)> {
        match self.open.lock() {
            Ok(mut open) => open.drain().map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Counts a session as being opened until the returned guard is dropped.
    fn opening(&self) -> Opening {
        self.opening.send_modify(|n| *n += 1);
        Opening(self.opening.clone())
    }

    /// Resolves once no session is being opened.
    async fn settled(&self) {
        let mut settled = self.opening.subscribe();
        let _ = settled.wait_for(|n| *n == 0).await;
    }
}

/// What one blob's upload requests share.
struct Upload {
    /// What is uploaded, for messages.
    target: String,
    /// The scopes its requests need.
    scopes: Vec<String>,
}

/// The bytes of an upload request.
enum Payload {
    /// Bytes in memory (none, or one chunk): made into a body again for each attempt.
    Memory(Bytes),
    /// A stream of this many bytes: sent once.
    Stream(ByteStream, u64),
}

impl Payload {
    /// How many bytes it carries.
    fn len(&self) -> u64 {
        match self {
            Payload::Memory(b) => b.len() as u64,
            Payload::Stream(_, len) => *len,
        }
    }
}

impl Client {
    /// What the upload of a blob into `repo` is called and the scopes its requests need.
    fn upload_of(&self, repo: &str, desc: &Descriptor) -> Upload {
        Upload {
            target: format!("{}/{repo}@{}", self.registry, desc.digest),
            scopes: vec![repo_scope(repo, true)],
        }
    }

    /// Deletes the upload sessions this client opened and did not finish (an interrupted or failed
    /// run), best effort: a registry would otherwise keep their bytes until its own expiry (a week
    /// for Distribution). A session cut off mid-transfer may refuse: its location no longer matches
    /// its size. Sessions whose opening answer is still on its way are waited for (the caller
    /// bounds the time), then deleted too.
    pub async fn abandon_open_uploads(&self) {
        futures::future::join(self.cancel_recorded_uploads(), self.sessions.settled()).await;
        self.cancel_recorded_uploads().await;
    }

    /// Deletes the sessions recorded as open so far.
    async fn cancel_recorded_uploads(&self) {
        let open = self.sessions.take_all();
        futures::future::join_all(
            open.iter().map(|(repo, location)| self.cancel_upload(repo, location)),
        )
        .await;
    }

    /// Uploads a blob: one streamed PUT, or PATCH chunks when a chunk size is set.
    pub async fn push_blob(
        self: &Arc<Self>,
        repo: &str,
        desc: &Descriptor,
        data: ByteStream,
    ) -> Result<()> {
        let (upload, location) = self.start_upload(repo, desc).await?;
        let sent = self.send_blob(&upload, location.clone(), desc, data).await;
        if let Err(e) = &sent {
            self.drop_refused(repo, &location, e).await;
        }
        match sent {
            // Too large for one request (a proxy's body limit): chunks from now on, and this blob
            // again from the start (the engine retries a transient failure with a fresh stream).
            Err(e) if e.status == Some(413) && self.chunk_size.is_none() => {
                if self.learned.refuse(Refusal::Monolithic) {
                    crate::scrub::warn(format_args!(
                        "{} refuses a blob in one request (HTTP 413): uploading in chunks from now on",
                        self.registry
                    ));
                }
                Err(e.with_kind(ErrorKind::Transient))
            }
            other => other,
        }
    }

    /// Sends a blob's bytes into the session at `location` and commits it: one streamed PUT, or
    /// PATCH chunks when a chunk size is set.
    async fn send_blob(
        &self,
        upload: &Upload,
        location: String,
        desc: &Descriptor,
        data: ByteStream,
    ) -> Result<()> {
        if let Some(chunk) = self.learned.chunk_size(self.chunk_size).filter(|c| desc.size > *c) {
            let closing = self.upload_chunks(upload, location, data, chunk).await?;
            return self.finish_upload(upload, closing, desc, Payload::Memory(Bytes::new())).await;
        }
        self.finish_upload(upload, location, desc, Payload::Stream(data, desc.size)).await
    }

    /// Deletes the session `location` belongs to when the registry refused a request of it (a
    /// 413, a PATCH refused, a digest it did not accept): the blob is sent again in a session of
    /// its own, and this one would keep its bytes until the registry's expiry. A request without
    /// an answer leaves its session to the end of the run ([`Client::abandon_open_uploads`]).
    async fn drop_refused(&self, repo: &str, location: &str, e: &RegistryError) {
        if e.status.is_none() {
            return;
        }
        if let Some(latest) = self.sessions.latest(location) {
            self.cancel_upload(repo, &latest).await;
        }
    }

    /// Sends a blob's bytes into an upload session without committing it, so nothing is visible
    /// until [`Client::commit_upload`]; returns the session's location.
    pub async fn stage_blob(
        self: &Arc<Self>,
        repo: &str,
        desc: &Descriptor,
        data: ByteStream,
    ) -> Result<String> {
        if self.learned.refused(Refusal::Patch) {
            return Err(RegistryError::local(
                "push blob",
                &format!("{}/{repo}@{}", self.registry, desc.digest),
                ErrorKind::Unsupported,
                "the registry refuses PATCH uploads",
            ));
        }
        let (upload, location) = self.start_upload(repo, desc).await?;
        if desc.size == 0 {
            return Ok(location);
        }
        let staged = match self.learned.chunk_size(self.chunk_size) {
            Some(chunk) => self.upload_chunks(&upload, location.clone(), data, chunk).await,
            // One PATCH carrying the whole stream: the size is known, so it is a single
            // spec-conformant chunk.
            None => {
                self.patch(&upload, location.clone(), 0, Payload::Stream(data, desc.size)).await
            }
        };
        if let Err(e) = &staged {
            self.drop_refused(repo, &location, e).await;
        }
        staged
    }

    /// Commits a staged upload under the blob's digest (the registry checks it).
    pub async fn commit_upload(
        &self,
        repo: &str,
        desc: &Descriptor,
        location: String,
    ) -> Result<()> {
        let upload = self.upload_of(repo, desc);
        self.finish_upload(&upload, location, desc, Payload::Memory(Bytes::new())).await
    }

    /// Abandons a staged upload; best effort (registries also expire abandoned sessions).
    pub async fn cancel_upload(&self, repo: &str, location: &str) {
        let scopes = [repo_scope(repo, true)];
        let _ = self
            .send(&Call::new("cancel upload", repo, Method::DELETE, location, &scopes), |r| r)
            .await;
        self.sessions.closed(location);
    }

    /// Opens an upload session: (the upload, its absolute location). The request runs as a task of
    /// its own that records the session however the caller ends, so that a run stopped while the
    /// answer is on its way still knows the session, and deletes it.
    async fn start_upload(
        self: &Arc<Self>,
        repo: &str,
        desc: &Descriptor,
    ) -> Result<(Upload, String)> {
        let opening = self.sessions.opening();
        let (this, repo, desc) = (self.clone(), repo.to_string(), desc.clone());
        let task = tokio::spawn(async move {
            let _opening = opening;
            this.open_session(&repo, &desc).await
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(RegistryError::local(
                "push blob",
                &self.registry,
                ErrorKind::Other,
                format!("internal: the upload task failed: {e}"),
            )),
        }
    }

    /// Opens an upload session; the first one of each repository goes alone, so that a repository
    /// the registry does not have (ECR creates none on push) is one clear error before any other
    /// upload to it is attempted.
    async fn open_session(&self, repo: &str, desc: &Descriptor) -> Result<(Upload, String)> {
        let gate = self.learned.repo_gate(repo);
        let mut first = gate.lock().await;
        match &*first {
            Some(None) => {
                drop(first);
                self.post_session(repo, desc).await
            }
            Some(Some(missing)) => Err(RegistryError::local(
                "push blob",
                &format!("{}/{repo}", self.registry),
                ErrorKind::NotFound,
                missing.clone(),
            )),
            None => {
                let opened = self.post_session(repo, desc).await;
                match &opened {
                    Ok(_) => *first = Some(None),
                    Err(e) if e.is_not_found() => *first = Some(Some(e.detail.clone())),
                    Err(_) => {}
                }
                opened
            }
        }
    }

    /// Sends the request that opens an upload session and records the session.
    async fn post_session(&self, repo: &str, desc: &Descriptor) -> Result<(Upload, String)> {
        let upload = self.upload_of(repo, desc);
        let start = self.url(repo, "blobs/uploads/");
        let call = Call::new("push blob", &upload.target, Method::POST, &start, &upload.scopes);
        let resp = self.send(&call, |r| r.header(header::CONTENT_LENGTH, "0")).await?;
        if resp.status() != StatusCode::ACCEPTED {
            let e = self.fail(call.op, call.target, resp).await;
            return Err(self.repository_missing(repo, e));
        }
        let location =
            resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(
                || call.error(ErrorKind::Other, "upload started without a Location header"),
            )?;
        let location = session_location(&call, location)?;
        self.sessions.opened(repo, &location);
        let min = resp.headers().get("oci-chunk-min-length").and_then(|v| v.to_str().ok());
        self.learned.announce_chunk_min(min).map_err(|e| call.error(ErrorKind::Other, e))?;
        Ok((upload, location))
    }

    /// Sends the closing PUT of an upload session, with the last bytes (or none).
    async fn finish_upload(
        &self,
        upload: &Upload,
        location: String,
        desc: &Descriptor,
        payload: Payload,
    ) -> Result<()> {
        let put = with_digest(&location, &desc.digest);
        let call = Call::new("push blob", &upload.target, Method::PUT, &put, &upload.scopes);
        let resp = self.send_upload(&call, payload, |r| r).await?;
        if !resp.status().is_success() {
            return Err(self.fail(call.op, call.target, resp).await);
        }
        self.sessions.closed(&location);
        Ok(())
    }

    /// Uploads a stream as PATCH chunks of `chunk` bytes, each held in memory; returns the location
    /// for the closing PUT.
    async fn upload_chunks(
        &self,
        upload: &Upload,
        mut location: String,
        mut data: ByteStream,
        chunk: u64,
    ) -> Result<String> {
        let mut offset = 0u64;
        let mut buf: Vec<u8> = Vec::with_capacity(chunk as usize);
        loop {
            let next = data.next().await;
            let done = next.is_none();
            if let Some(c) = next {
                // The source failed to give its bytes (a read, or a download cut off): that may
                // pass.
                let c = c.map_err(|e| {
                    RegistryError::local(
                        "push blob chunk",
                        &upload.target,
                        ErrorKind::Transient,
                        e.to_string(),
                    )
                })?;
                buf.extend_from_slice(&c);
            }
            if buf.is_empty() || (!done && (buf.len() as u64) < chunk) {
                if done {
                    return Ok(location);
                }
                continue;
            }
            let body = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(chunk as usize)));
            let len = body.len() as u64;
            location = self.patch(upload, location, offset, Payload::Memory(body)).await?;
            offset += len;
            if done {
                return Ok(location);
            }
        }
    }

    /// Sends the bytes of `payload` at `offset` of an upload session; returns the session's next
    /// location.
    async fn patch(
        &self,
        upload: &Upload,
        location: String,
        offset: u64,
        payload: Payload,
    ) -> Result<String> {
        let range = format!("{offset}-{}", (offset + payload.len()).saturating_sub(1));
        let call =
            Call::new("push blob chunk", &upload.target, Method::PATCH, &location, &upload.scopes);
        let resp = self
            .send_upload(&call, payload, |r| r.header(header::CONTENT_RANGE, range.as_str()))
            .await?;
        if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
            if matches!(resp.status().as_u16(), 405 | 501) && self.learned.refuse(Refusal::Patch) {
                super::transport::debug_line(format_args!(
                    "{} refuses PATCH uploads: blobs go in one PUT from now on",
                    self.registry
                ));
            }
            return Err(self.fail(call.op, call.target, resp).await);
        }
        let next = match resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            Some(l) => session_location(&call, l)?,
            None => return Ok(location),
        };
        self.sessions.moved(&location, &next);
        Ok(next)
    }

    /// Sends an upload request with `payload` as its body, `headers` added: a stream is sent once,
    /// bytes in memory again when the registry asks for fresh credentials (see [`Replay`]).
    async fn send_upload<H>(
        &self,
        call: &Call<'_>,
        payload: Payload,
        headers: H,
    ) -> Result<reqwest::Response>
    where
        H: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let len = payload.len();
        let prepared = move |r: reqwest::RequestBuilder, body: ByteStream| {
            let (body, moved) = watched(body, len);
            let r = r
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, len);
            Prepared { request: headers(r).body(body), upload: Some(moved) }
        };
        match payload {
            Payload::Memory(bytes) => {
                let call = call.clone().replay(Replay::AfterRefusal);
                self.send_prepared(&call, |r| Some(prepared(r, in_pieces(bytes.clone())))).await
            }
            Payload::Stream(data, _) => {
                let call = call.clone().replay(Replay::Never);
                let mut data = Some(data);
                self.send_prepared(&call, |r| data.take().map(|d| prepared(r, d))).await
            }
        }
    }

    /// Sends one attempt of an upload and waits for its answer: the body must keep above the stall
    /// floor while it goes, and the answer must come within [`COMMIT_DEADLINE_FACTOR`] request
    /// deadlines once it is all sent.
    pub(super) async fn upload_exchange(
        &self,
        request: reqwest::RequestBuilder,
        moved: Arc<stall::Moved>,
    ) -> std::result::Result<reqwest::Response, NoAnswer> {
        let sent = request.send();
        tokio::pin!(sent);
        tokio::select! {
            r = &mut sent => return r.map_err(NoAnswer::Transport),
            why = stall::watch(moved.clone(), self.stall) => return Err(NoAnswer::Stalled(why)),
            _ = moved.finished() => {}
        }
        match tokio::time::timeout(self.request_timeout * COMMIT_DEADLINE_FACTOR, sent).await {
            Ok(r) => r.map_err(NoAnswer::Transport),
            Err(_) => Err(NoAnswer::NotAfterUpload),
        }
    }

    /// Asks the registry to mount a blob from another repository; false when it opened an upload
    /// instead.
    pub async fn mount_blob(&self, repo: &str, desc: &Descriptor, from: &str) -> Result<bool> {
        let _turn = self.learned.mount_turn().await;
        if self.learned.refused(Refusal::Mount) {
            return Ok(false);
        }
        let target = format!("{}/{repo}@{}", self.registry, desc.digest);
        let scopes = [repo_scope(repo, true), repo_scope(from, false)];
        let url = format!("{}?mount={}&from={from}", self.url(repo, "blobs/uploads/"), desc.digest);
        let resp = self
            .send(&Call::new("mount blob", &target, Method::POST, &url, &scopes), |r| {
                r.header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                self.learned.mount_worked();
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                // The blob was placed in `from` by this run, so an upload session instead of a
                // mount means the registry does not mount (ECR): not asked again.
                if self.learned.refuse(Refusal::Mount) {
                    super::transport::debug_line(format_args!(
                        "{} does not mount blobs across repositories: uploading them instead",
                        self.registry
                    ));
                }
                // The registry started an upload session instead; close it so it does not linger.
                if let Some(session) = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| absolute(&url, l))
                {
                    let _ = self
                        .send(
                            &Call::new(
                                "mount blob",
                                &target,
                                Method::DELETE,
                                session.as_str(),
                                &scopes,
                            ),
                            |r| r,
                        )
                        .await;
                }
                Ok(false)
            }
            s => {
                if matches!(s.as_u16(), 400 | 405 | 501) {
                    self.learned.refuse(Refusal::Mount);
                }
                Ok(false)
            }
        }
    }
}

impl Client {
    /// A push refused because the repository does not exist (`NAME_UNKNOWN`, ECR's
    /// `REPOSITORY_NOT_FOUND`) says so and what to do; other errors are returned as they are.
    pub(super) fn repository_missing(&self, repo: &str, e: RegistryError) -> RegistryError {
        let missing = e.status == Some(404)
            && e.codes.iter().any(|c| {
                c.eq_ignore_ascii_case("NAME_UNKNOWN")
                    || c.eq_ignore_ascii_case("REPOSITORY_NOT_FOUND")
            });
        if !missing {
            return e;
        }
        let registry = &self.registry;
        RegistryError::local(
            &e.op,
            &format!("{registry}/{repo}"),
            ErrorKind::NotFound,
            format!("repository {repo} does not exist on {registry}, which does not create repositories on push: create it first (on Amazon ECR: aws ecr create-repository --repository-name {repo}), then run again ({})", e.detail),
        )
    }
}

/// The absolute URL of a session `location` the registry answered `call` with; a location on
/// another host is taken (a session may live on storage elsewhere; it gets no credentials there).
fn session_location(call: &Call<'_>, location: &str) -> Result<String> {
    absolute(call.url, location).map(String::from).ok_or_else(|| {
        let shown = crate::scrub::escape_controls(location);
        call.error(
            ErrorKind::Other,
            format!("the registry answered with an unusable Location {shown:?}"),
        )
    })
}

/// The URL that commits a session under `digest`. The location's query carries the session's state,
/// which must reach the registry as it came: the parameter is appended, nothing is re-encoded.
fn with_digest(location: &str, digest: &Digest) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

/// An upload body counted for the stall watch; a body known to be empty has nothing to watch.
fn watched(data: ByteStream, len: u64) -> (reqwest::Body, Arc<stall::Moved>) {
    let moved = Arc::new(stall::Moved::default());
    if len == 0 {
        moved.finish();
        return (reqwest::Body::from(Vec::new()), moved);
    }
    (reqwest::Body::wrap_stream(stall::counted(data, moved.clone())), moved)
}

/// Bytes in memory as a stream of pieces, so the stall watch sees the registry read them.
fn in_pieces(data: Bytes) -> ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> = (0..data.len())
        .step_by(PIECE)
        .map(|at| Ok(data.slice(at..(at + PIECE).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(pieces))
}

/// The session an upload location names: the location without its query (which carries state).
fn session_of(location: &str) -> &str {
    location.split('?').next().unwrap_or(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_urls_keep_the_session_state_as_it_came() {
        let d = Digest::of(b"x");
        assert_eq!(
            with_digest("https://r.example/v2/a/blobs/uploads/s1", &d),
            format!("https://r.example/v2/a/blobs/uploads/s1?digest={d}")
        );
        assert_eq!(
            with_digest("/up/s1?_state=a%2Bb==", &d),
            format!("/up/s1?_state=a%2Bb==&digest={d}")
        );
        assert_eq!(session_of("/up/s1?_state=x"), "/up/s1");
    }

    #[tokio::test]
    async fn bytes_in_memory_go_in_pieces() {
        let data = Bytes::from(vec![7u8; PIECE * 2 + 5]);
        let pieces: Vec<Bytes> =
            in_pieces(data.clone()).map(|p| p.expect("in memory")).collect().await;
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [PIECE, PIECE, 5]);
        assert!(in_pieces(Bytes::new()).next().await.is_none());
    }

    #[test]
    fn sessions_follow_their_latest_location() {
        let s = Sessions::default();
        s.opened("team/app", "https://r.example/up/s1?_state=0");
        s.moved("https://r.example/up/s1?_state=0", "https://r.example/up/s1?_state=1");
        s.opened("team/web", "https://r.example/up/s2");
        s.closed("https://r.example/up/s2?digest=sha256:x");
        assert_eq!(
            s.take_all(),
            [("team/app".to_string(), "https://r.example/up/s1?_state=1".to_string())]
        );
        assert!(s.take_all().is_empty());
    }
}
