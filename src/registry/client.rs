//! The client of one registry host and the one path every request takes ([`Client::send`]):
//! credentials attached on the registry's own origin, a 401 answered, transient failures retried
//! where the request can be sent again, one line of `--debug` trace per attempt. The distribution
//! API's calls are in the sibling modules: `listing` (tags, repositories, referrers), `manifests`,
//! `blobs`, `uploads`.

use super::auth::{Auth, Credentials, CREDENTIALS_HINT};
use super::error::{parse_body, RegistryError};
use super::quirks::Learned;
use super::stall::{self, StallLimit};
use super::transport::{
    api_host, debug_line, describe_transport, is_localhost, is_retryable_status,
    is_retryable_transport, read_prefix, retry_after, Redacted, RetryPolicy, TransportOptions,
};
use super::uploads::Sessions;
use crate::target::ErrorKind;
use futures::StreamExt;
use reqwest::{header, Method, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::listing::MAX_LISTED;
pub use super::manifests::PutResult;

/// Largest answer read whole (a tag, catalog or referrers page; a manifest is bounded lower).
pub const MAX_PAGE_SIZE: u64 = 16 << 20;
/// How much of an error answer is read for its message; the rest is left unread.
pub(super) const MAX_ERROR_BODY: u64 = 64 << 10;
/// What a trace line says of a request that carried credentials.
const AUTH_NOTE: &str = " [Authorization: <redacted>]";

/// A stream of blob bytes.
pub use crate::target::ByteStream;

/// A client for one registry.
pub struct Client {
    pub(super) http: reqwest::Client,
    /// The registry name as the user wrote it.
    pub registry: String,
    base: String,
    /// The registry's origin (scheme, host, port): the only one its credentials are sent to.
    pub(super) origin: url::Origin,
    pub(super) auth: Auth,
    pub(super) request_timeout: Duration,
    pub(super) stall: StallLimit,
    pub(super) chunk_size: Option<u64>,
    /// Upload sessions opened and not finished, and those being opened.
    pub(super) sessions: Sessions,
    /// What the registry refused so far, and the pause it asked for.
    pub(super) learned: Learned,
}

pub(super) type Result<T> = std::result::Result<T, RegistryError>;

/// A request as [`Client::send`] makes it: what it is for (in messages), where it goes, the scopes
/// its credentials need, and how often it may be sent.
#[derive(Clone)]
pub(super) struct Call<'a> {
    /// What is being done (`fetch manifest`...).
    pub op: &'a str,
    /// What it is done to, for messages.
    pub target: &'a str,
    /// The HTTP method.
    pub method: Method,
    /// The absolute URL.
    pub url: &'a str,
    /// The scopes the credentials must grant.
    pub scopes: &'a [String],
    /// How often the request may be sent.
    pub replay: Replay,
    /// Whether a successful answer is read whole within the deadline (small answers) or handed on
    /// as it comes (a blob).
    pub whole: bool,
}

impl<'a> Call<'a> {
    /// A request that may be sent again; a GET's answer is read whole.
    pub fn new(
        op: &'a str,
        target: &'a str,
        method: Method,
        url: &'a str,
        scopes: &'a [String],
    ) -> Self {
        let whole = method == Method::GET;
        Call { op, target, method, url, scopes, replay: Replay::Any, whole }
    }

    /// The same request, its successful answer handed on unread (a blob streams to the caller).
    pub fn streamed(self) -> Self {
        Call { whole: false, ..self }
    }

    /// The same request, sent at most as `replay` allows.
    pub fn replay(self, replay: Replay) -> Self {
        Call { replay, ..self }
    }

    /// An error found on this side while making this request.
    pub fn error(&self, kind: ErrorKind, detail: impl Into<String>) -> RegistryError {
        RegistryError::local(self.op, self.target, kind, detail)
    }
}

/// How often a request may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replay {
    /// As often as it takes: the request is idempotent and its body (if any) is rebuilt for each
    /// attempt. Transient failures are retried and a 401 is answered with fresh credentials.
    Any,
    /// Its body can be sent again but the request does something each time (a chunk appended, a
    /// blob committed): only a 401, which refuses before anything is done, is answered by sending
    /// it again.
    AfterRefusal,
    /// Once: its body is a stream that is gone once sent. The first answer is final.
    Never,
}

/// One attempt's request, ready to send.
pub(super) struct Prepared {
    /// The request with headers and body.
    pub request: reqwest::RequestBuilder,
    /// For an upload, the count of its body's bytes that the stall watch reads.
    pub upload: Option<Arc<stall::Moved>>,
}

/// Why one attempt of a request got no usable answer.
pub(super) enum NoAnswer {
    /// The transport failed (connection, TLS, a body cut short).
    Transport(reqwest::Error),
    /// The answer was larger than [`MAX_PAGE_SIZE`].
    TooLarge,
    /// No complete answer within the request deadline.
    TimedOut,
    /// An upload's body moved slower than the stall floor; says so.
    Stalled(String),
    /// No answer within the deadline after an upload's last byte.
    NotAfterUpload,
}

/// The state of one request over its attempts.
struct Attempts {
    /// The token cache key of the request's scopes.
    key: String,
    policy: RetryPolicy,
    started: Instant,
    /// The attempt under way, from 1.
    attempt: u32,
    /// Tokens fetched by this request itself (not taken from the cache).
    fetched_here: u32,
    /// Whether the URL is on the registry's origin, where credentials go.
    ours: bool,
    /// The `Authorization` the current attempt carries.
    authorization: Option<String>,
    /// Whether that came from the cache (and may have gone stale).
    from_cache: bool,
}

impl Attempts {
    /// What a trace line says of the current attempt's credentials.
    fn note(&self) -> &'static str {
        if self.authorization.is_some() {
            AUTH_NOTE
        } else {
            ""
        }
    }
}

/// What to do after an attempt.
enum Next {
    /// The answer is the request's.
    Done(reqwest::Response),
    /// Send the request again.
    Again,
}

impl Client {
    /// A client for `registry` sharing the HTTP connection pool `http`.
    pub fn new(
        http: reqwest::Client,
        registry: &str,
        opts: &TransportOptions,
        creds: Credentials,
    ) -> Arc<Self> {
        let scheme = if opts.plain_http || is_localhost(registry) { "http" } else { "https" };
        let mut authority = api_host(registry).to_string();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h.to_string(), p.parse::<u16>().ok())
            }
            _ => (authority.clone(), None),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        // A URL without a port of its own is dialled at the port `--resolve` gives
        // (transport::parse_resolve keeps it), so the Host header and the registry's absolute
        // upload URLs keep the name as written. A URL that names a port is dialled there whatever
        // the resolver says: it must name the new one.
        if let Some(port) = port.filter(|p| *p != default_port) {
            if let Some(p) = super::transport::remapped_port(&opts.resolve, &host, port) {
                authority = format!("{host}:{p}");
            }
        }
        let base = format!("{scheme}://{authority}");
        let origin = url::Url::parse(&base)
            .map(|u| u.origin())
            .unwrap_or_else(|_| url::Url::parse("http://invalid.").expect("static URL").origin());
        let learned = Learned::default();
        // Docker Hub counts manifest GETs as pulls, HEADs not
        // (https://docs.docker.com/docker-hub/usage/pulls/); known by name before any answer says so.
        if host == "registry-1.docker.io" {
            learned.count_pulls();
        }
        Arc::new(Client {
            http,
            registry: registry.to_string(),
            base,
            origin,
            auth: Auth::new(creds, scheme == "https", opts.request_timeout),
            request_timeout: opts.request_timeout,
            stall: opts.stall,
            chunk_size: opts.chunk_size,
            sessions: Sessions::default(),
            learned,
        })
    }

    /// The URL of `tail` under a repository of this registry (`/v2/<repo>/<tail>`).
    pub(super) fn url(&self, repo: &str, tail: &str) -> String {
        format!("{}/v2/{repo}/{tail}", self.base)
    }

    /// The URL of `path` on this registry (`/v2/_catalog`).
    pub(super) fn root_url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request whose headers and body `build` adds, again for each attempt, within the
    /// transport's retry budget (see [`Client::send_prepared`]).
    pub(super) async fn send<F>(&self, call: &Call<'_>, build: F) -> Result<reqwest::Response>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        self.send_prepared(call, |r| Some(Prepared { request: build(r), upload: None })).await
    }

    /// Sends a request with auth for its scopes: transient failures (connection errors, bodies cut
    /// short, 408/429/5xx) are retried within the transport's retry budget, and a 401 is answered
    /// once with fresh credentials, and once more when the token that failed came from the cache,
    /// as far as `call.replay` allows. `prepare` makes each attempt's request; None when it cannot
    /// be made again.
    pub(super) async fn send_prepared<F>(
        &self,
        call: &Call<'_>,
        mut prepare: F,
    ) -> Result<reqwest::Response>
    where
        F: FnMut(reqwest::RequestBuilder) -> Option<Prepared>,
    {
        let mut run = Attempts {
            key: call.scopes.join(" "),
            policy: RetryPolicy::default(),
            started: Instant::now(),
            attempt: 0,
            fetched_here: 0,
            // Credentials go to the registry's own origin only (an upload session or a blob may
            // live on storage elsewhere, which gets the request bare).
            ours: super::urls::same_origin(call.url, &self.origin),
            authorization: None,
            from_cache: false,
        };
        loop {
            run.attempt += 1;
            self.learned.wait_pause().await;
            self.authorize_attempt(call, &mut run).await?;
            let prepared =
                prepare(self.http.request(call.method.clone(), call.url)).ok_or_else(|| {
                    call.error(
                        ErrorKind::Other,
                        "internal: the request's body was sent already and cannot be sent again",
                    )
                })?;
            let request = with_authorization(call, prepared.request, run.authorization.as_deref())?;
            let outcome = match prepared.upload {
                Some(moved) => self.upload_exchange(request, moved).await,
                None => self.exchange(request, call.whole).await,
            };
            let next = match outcome {
                Ok(resp) => self.after_answer(call, &mut run, resp).await?,
                Err(why) => self.after_failure(call, &run, why).await?,
            };
            if let Next::Done(resp) = next {
                return Ok(resp);
            }
        }
    }

    /// Finds the credentials of an attempt: cached for its scopes, else fetched ahead when the
    /// registry's challenge is known. None off the registry's origin.
    async fn authorize_attempt(&self, call: &Call<'_>, run: &mut Attempts) -> Result<()> {
        run.authorization = if run.ours { self.auth.cached(&run.key) } else { None };
        run.from_cache = run.authorization.is_some() && run.fetched_here == 0;
        if run.authorization.is_none() && run.ours {
            run.authorization = self
                .auth
                .preauthorize(&self.http, &run.key, call.scopes)
                .await
                .map_err(|e| RegistryError::unauthorized(call.op, call.target, e))?;
            if run.authorization.is_some() {
                run.fetched_here += 1;
            }
        }
        Ok(())
    }

    /// Sends one attempt and waits for its answer, read whole when `whole` and successful (so that
    /// a body cut short is retried like any transient failure), all within the request deadline (a
    /// blob's body has its stall watch).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        whole: bool,
    ) -> std::result::Result<reqwest::Response, NoAnswer> {
        let exchange = async {
            match request.send().await {
                Ok(resp) if whole && resp.status().is_success() => buffered(resp).await,
                other => other.map_err(NoAnswer::Transport),
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(NoAnswer::TimedOut))
    }

    /// Decides what an answer means for the request: a 401 answered with fresh credentials, a
    /// transient status retried (as far as the request may be sent again), anything else the
    /// request's answer.
    async fn after_answer(
        &self,
        call: &Call<'_>,
        run: &mut Attempts,
        resp: reqwest::Response,
    ) -> Result<Next> {
        let status = resp.status();
        debug_line(format_args!(
            "{} {}{} -> {}",
            call.method,
            Redacted(call.url),
            run.note(),
            status.as_u16()
        ));
        // Answer a 401 when we sent nothing, or sent a cached token that may have gone stale; a
        // token fetched for this very request failing is final.
        let stale = run.authorization.is_none() || run.from_cache;
        if run.ours
            && status == StatusCode::UNAUTHORIZED
            && stale
            && run.fetched_here < 2
            && call.replay != Replay::Never
        {
            let rejected = run.authorization.as_deref();
            self.auth.invalidate(&run.key, rejected);
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            self.auth
                .authorize(&self.http, challenge.as_deref(), &run.key, call.scopes, rejected)
                .await
                .map_err(|e| RegistryError::unauthorized(call.op, call.target, e))?;
            run.fetched_here += 1;
            return Ok(Next::Again);
        }
        // A registry that reports a pull quota counts what it is asked (Docker Hub, manifest GETs).
        if resp.headers().contains_key("ratelimit-limit") {
            self.learned.count_pulls();
        }
        let mut asked = retry_after(resp.headers());
        if status == StatusCode::TOO_MANY_REQUESTS {
            asked = asked.or_else(|| super::transport::ratelimit_reset(resp.headers()));
            // This request waits what it asked every other to wait, not a second draw of jitter.
            asked = self.rate_limited(resp.headers(), asked, run).or(asked);
        }
        if is_retryable_status(status) && call.replay == Replay::Any && self.pause(run, asked).await
        {
            return Ok(Next::Again);
        }
        Ok(Next::Done(resp))
    }

    /// Decides what an attempt without a usable answer means: another attempt where the failure may
    /// pass and the request may be sent again, else the request's error.
    async fn after_failure(&self, call: &Call<'_>, run: &Attempts, why: NoAnswer) -> Result<Next> {
        let shown = Redacted(call.url);
        let (method, note, attempt) = (&call.method, run.note(), run.attempt);
        let may_retry = call.replay == Replay::Any;
        match why {
            NoAnswer::TooLarge => {
                debug_line(format_args!(
                    "{method} {shown}{note} -> answer over the {MAX_PAGE_SIZE} byte limit"
                ));
                Err(call.error(
                    ErrorKind::Other,
                    format!("the registry's answer is larger than the {MAX_PAGE_SIZE} byte limit"),
                ))
            }
            NoAnswer::TimedOut => {
                debug_line(format_args!("{method} {shown}{note} -> no complete answer in time"));
                if may_retry && self.pause(run, None).await {
                    return Ok(Next::Again);
                }
                let secs = self.request_timeout.as_secs();
                let registry = &self.registry;
                let detail =
                    format!("timed out: no complete answer within {secs} s (--request-timeout) from {registry}, after {attempt} attempts");
                Err(call.error(ErrorKind::Transient, detail))
            }
            NoAnswer::Transport(e) => {
                let why = describe_transport(&e);
                debug_line(format_args!("{method} {shown}{note} -> {why}"));
                if may_retry && is_retryable_transport(&e) && self.pause(run, None).await {
                    return Ok(Next::Again);
                }
                let tries =
                    if attempt > 1 { format!(", after {attempt} attempts") } else { String::new() };
                Err(call.error(ErrorKind::Transient, format!("{why} ({}{tries})", self.registry)))
            }
            NoAnswer::Stalled(why) => {
                debug_line(format_args!("{method} {shown}{note} -> {why}"));
                Err(call.error(ErrorKind::Transient, why))
            }
            NoAnswer::NotAfterUpload => {
                let secs =
                    (self.request_timeout * super::uploads::COMMIT_DEADLINE_FACTOR).as_secs();
                debug_line(format_args!(
                    "{method} {shown}{note} -> no answer in time after the upload"
                ));
                Err(call.error(
                    ErrorKind::Transient,
                    format!("timed out: no answer within {secs} s of the upload's last byte"),
                ))
            }
        }
    }

    /// A 429: every request to this registry waits (not only this one, so that the others do not
    /// keep hammering), and the user is told once per pause, with the registry's quota headers.
    /// Returns the wait, `None` when the retry budget is spent.
    fn rate_limited(
        &self,
        headers: &header::HeaderMap,
        asked: Option<Duration>,
        run: &Attempts,
    ) -> Option<Duration> {
        let wait = run.policy.next_delay(run.attempt, run.started, asked)?;
        if self.learned.pause(wait) {
            crate::scrub::warn(format_args!(
                "{} is rate limiting requests (HTTP 429{}); waiting {:.1} s before sending more",
                self.registry,
                super::transport::quota_note(headers),
                wait.as_secs_f64()
            ));
        }
        Some(wait)
    }

    /// Waits before the next attempt, when the retry budget allows one (`retry_after` is the
    /// server's own wish); false when it is spent.
    async fn pause(&self, run: &Attempts, retry_after: Option<Duration>) -> bool {
        let Some(wait) = run.policy.next_delay(run.attempt, run.started, retry_after) else {
            return false;
        };
        debug_line(format_args!(
            "retrying in {} ms (attempt {}/{})",
            wait.as_millis(),
            run.attempt + 1,
            run.policy.max_attempts
        ));
        tokio::time::sleep(wait).await;
        true
    }

    /// The error for an unsuccessful answer: operation, reference, status, the registry's
    /// `errors[].code: message` (whose codes, with the status, give its kind), and for 401/403
    /// which credentials were tried and how to give others.
    pub(super) async fn fail(
        &self,
        op: &str,
        target: &str,
        resp: reqwest::Response,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (body, cut) = read_prefix(resp, MAX_ERROR_BODY).await;
        let body = parse_body(&body);
        // Whatever the registry echoes (a header, a password, a token) is not repeated.
        let mut detail = crate::scrub::redact(&body.text).into_owned();
        if cut {
            detail.push_str(&format!(" (the rest of the answer was not read: over the {MAX_ERROR_BODY} byte limit for an error)"));
        }
        if status == 429 {
            detail.push_str(&super::transport::rate_limit_hint(&headers));
        }
        let scope = challenge.as_deref().and_then(super::challenge::insufficient_scope);
        if let Some(scope) = scope {
            detail = format!("{detail} ({})", self.auth.insufficient(&self.registry, &scope));
        } else if status == 401 || status == 403 {
            let what = if status == 401 { "not accepted" } else { "not allowed this" };
            detail = format!(
                "{detail} ({what}: tried {}; {CREDENTIALS_HINT})",
                self.auth.credentials().describe()
            );
        }
        RegistryError::answered(op, target, status, &body.codes, detail)
    }
}

/// Adds the `Authorization` header (marked sensitive, so no debug output of the HTTP stack shows
/// it).
fn with_authorization(
    call: &Call<'_>,
    request: reqwest::RequestBuilder,
    authorization: Option<&str>,
) -> Result<reqwest::RequestBuilder> {
    let Some(a) = authorization else { return Ok(request) };
    let mut v = header::HeaderValue::from_str(a)
        .map_err(|_| call.error(ErrorKind::Other, "unusable authorization token"))?;
    v.set_sensitive(true);
    Ok(request.header(header::AUTHORIZATION, v))
}

/// Reads a whole (small) response so that a transport error mid-body surfaces as an error of the
/// request, which `send` retries; the caller gets an equivalent in-memory response. An answer
/// larger than [`MAX_PAGE_SIZE`] is refused, not read.
async fn buffered(resp: reqwest::Response) -> std::result::Result<reqwest::Response, NoAnswer> {
    if resp.content_length().is_some_and(|l| l > MAX_PAGE_SIZE) {
        return Err(NoAnswer::TooLarge);
    }
    let status = resp.status();
    let version = resp.version();
    let headers = resp.headers().clone();
    let url = resp.url().clone();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(NoAnswer::Transport)?);
        if buf.len() as u64 > MAX_PAGE_SIZE {
            return Err(NoAnswer::TooLarge);
        }
    }
    let mut r = http::Response::new(reqwest::Body::from(buf));
    *r.status_mut() = status;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    r.extensions_mut().insert(url);
    Ok(reqwest::Response::from(r))
}
