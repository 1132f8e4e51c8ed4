//! Authentication: credentials, challenge handling, and a token cache per scope.

use super::challenge::{self, Challenge};
use super::error::describe_body;
use super::transport::{self, describe_transport};
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The secret part of credentials.
#[derive(Clone, Default)]
pub enum Secret {
    /// No credentials: anonymous tokens only.
    #[default]
    Anonymous,
    /// Username and password (basic auth, or token-server password grant).
    Basic {
        /// The account name (not secret: it appears in messages).
        username: String,
        /// The password or personal access token.
        password: String,
    },
    /// An OAuth2 refresh token (identity token).
    IdentityToken(String),
    /// The credential source failed (a credential helper error); the message says why, without
    /// secrets.
    Unavailable(String),
}

/// What to authenticate with, and where it came from (for messages).
#[derive(Clone, Default)]
pub struct Credentials {
    /// The secret.
    pub secret: Secret,
    /// Where the secret came from, e.g. `--username/--password` or `credential helper
    /// docker-credential-x`.
    pub origin: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets, not even in debug output.
        f.write_str(&self.describe())
    }
}

/// How to give other credentials; appended to authentication failures.
pub const CREDENTIALS_HINT: &str = "to use other credentials pass -u/--username with --password-stdin, or --identity-token-stdin, \
or store them with `oras login` (or `docker login`) in the docker config.json, or name one with --registry-config PATH";

impl Credentials {
    /// No credentials; `origin` says why (e.g. none configured for the registry).
    pub fn anonymous(origin: impl Into<String>) -> Self {
        Credentials { secret: Secret::Anonymous, origin: origin.into() }
    }

    /// Username and password from `origin`.
    pub fn basic(
        username: impl Into<String>,
        password: impl Into<String>,
        origin: impl Into<String>,
    ) -> Self {
        let (username, password) = (username.into(), password.into());
        crate::scrub::register_basic(&username, &password);
        Credentials { secret: Secret::Basic { username, password }, origin: origin.into() }
    }

    /// An identity (refresh) token from `origin`.
    pub fn identity_token(token: impl Into<String>, origin: impl Into<String>) -> Self {
        let token = token.into();
        crate::scrub::register_secret(&token);
        crate::scrub::register_basic("<token>", &token);
        Credentials { secret: Secret::IdentityToken(token), origin: origin.into() }
    }

    /// A failed credential source.
    pub fn unavailable(message: impl Into<String>, origin: impl Into<String>) -> Self {
        Credentials { secret: Secret::Unavailable(message.into()), origin: origin.into() }
    }

    /// A short description for error messages: what kind, as whom, from where; never a secret.
    pub fn describe(&self) -> String {
        let what = match &self.secret {
            Secret::Anonymous => "anonymous access".to_string(),
            Secret::Basic { username, .. } => format!("username {username:?} with a password"),
            Secret::IdentityToken(_) => "an identity token".to_string(),
            Secret::Unavailable(_) => "stored credentials".to_string(),
        };
        if self.origin.is_empty() {
            what
        } else {
            format!("{what} ({})", self.origin)
        }
    }

    /// Every secret value, for redacting text that might echo one.
    fn secrets(&self) -> Vec<&str> {
        match &self.secret {
            Secret::Basic { password, .. } => vec![password.as_str()],
            Secret::IdentityToken(t) => vec![t.as_str()],
            _ => Vec::new(),
        }
    }
}

/// A scope of access for one repository.
pub fn repo_scope(repository: &str, push: bool) -> String {
    if push {
        format!("repository:{repository}:pull,push")
    } else {
        format!("repository:{repository}:pull")
    }
}

struct Cached {
    header: String,
    expires: Instant,
}

/// The cache key under which basic auth is kept: it is valid for every scope.
const BASIC_KEY: &str = "*basic*";

/// Per-registry auth state: the last challenge seen and tokens by scope.
pub struct Auth {
    creds: Credentials,
    /// Whether the registry is reached over TLS: its token server must be too.
    https: bool,
    /// The longest a token request may take, its answer read.
    request_timeout: Duration,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Cached>>,
    /// One token fetch at a time, so concurrent requests of a scope share one token.
    fetching: tokio::sync::Mutex<()>,
}

/// Failures obtaining authorization.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token server (or the registry, for basic auth) refused the credentials.
    #[error("authentication refused by {realm} (HTTP {status}{detail}); tried {creds}; {hint}")]
    Refused {
        /// Token server URL, or `the registry`.
        realm: String,
        /// Description of the credentials tried.
        creds: String,
        /// HTTP status of the refusal.
        status: u16,
        /// The server's explanation, prefixed with `: `, or empty.
        detail: String,
        /// How to supply other credentials.
        hint: String,
    },
    /// The registry wants a username and password and has none.
    #[error("the registry requires a username and password; tried {creds}; {hint}")]
    NeedsCredentials {
        /// Description of the credentials tried.
        creds: String,
        /// How to supply credentials.
        hint: String,
    },
    /// The token server could not be reached.
    #[error("cannot reach token server {realm}: {detail}")]
    Transport {
        /// Token server URL.
        realm: String,
        /// The transport error.
        detail: String,
    },
    /// The token server's answer could not be read in full (too large, too slow, cut short).
    #[error("token server {realm} sent an answer that cannot be used: {detail}")]
    BadAnswer {
        /// Token server URL.
        realm: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The token server's answer had no usable token.
    #[error("token server {realm} sent an answer without a token")]
    NoToken {
        /// Token server URL.
        realm: String,
    },
    /// The challenge cannot be answered.
    #[error("{0}")]
    Unsupported(String),
    /// The credential source failed.
    #[error("cannot get credentials ({origin}): {message}")]
    Unavailable {
        /// Where the credentials were to come from.
        origin: String,
        /// The failure.
        message: String,
    },
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Token servers that answer a POST with one of these do not support the OAuth2 form:
/// fall back to GET (as containerd does; GCR answers 404, Artifactory 401, ACR 400).
const POST_UNSUPPORTED: [u16; 4] = [400, 401, 404, 405];

impl Auth {
    /// Auth state for one registry.
    pub fn new(creds: Credentials, https: bool, request_timeout: Duration) -> Self {
        Auth {
            creds,
            https,
            request_timeout,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// What to say when the registry answered `insufficient_scope` for `scope`: the credentials
    /// were accepted, and what they were granted (read from the token, where it says) is not
    /// enough.
    pub fn insufficient(&self, registry: &str, scope: &str) -> String {
        let creds = self.creds.describe();
        let (resource, wanted) = scope.rsplit_once(':').unwrap_or((scope, ""));
        let repo = resource.strip_prefix("repository:").unwrap_or(resource);
        let granted = self
            .cached(&format!("{resource}:{wanted}"))
            .or_else(|| self.cached(&format!("{resource}:pull")));
        let granted = granted.as_deref().and_then(|h| granted_actions(h, repo));
        let wants_push = wanted.split(',').any(|a| a == "push");
        match granted {
            Some(actions) if wants_push && actions.iter().any(|a| a == "pull") && !actions.iter().any(|a| a == "push" || a == "*") => {
                format!("the credentials for {registry} ({creds}) may pull but not push to {repo}: the registry answered insufficient_scope; use credentials with push rights")
            }
            Some(actions) => format!(
                "the credentials for {registry} ({creds}) were accepted but grant only [{}] on {repo}, not {wanted}: the registry answered insufficient_scope",
                actions.join(",")
            ),
            None => format!(
                "the credentials for {registry} ({creds}) were accepted but not granted {wanted} on {repo}: the registry answered insufficient_scope"
            ),
        }
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// The cached `Authorization` header for a scope, if any.
    pub fn cached(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        if let Some(c) = tokens.get(scope) {
            if c.expires > Instant::now() {
                return Some(c.header.clone());
            }
        }
        // Basic auth is valid for every scope once the registry asked for it.
        tokens.get(BASIC_KEY).map(|c| c.header.clone())
    }

    /// Forgets the token of a scope (after the registry rejected it); `rejected` keeps a
    /// newer token that another request fetched meanwhile.
    pub fn invalidate(&self, scope: &str, rejected: Option<&str>) {
        if let Ok(mut t) = self.tokens.lock() {
            let drop_it = match (t.get(scope), rejected) {
                (Some(c), Some(r)) => c.header == r,
                _ => true,
            };
            if drop_it {
                t.remove(scope);
            }
            if t.get(BASIC_KEY).is_some_and(|c| Some(c.header.as_str()) == rejected) {
                t.remove(BASIC_KEY);
            }
        }
    }

    /// A header for `scopes` before any request is sent, when the registry's challenge is
    /// already known (saves one 401 round trip per new scope). `None` when nothing is known.
    pub async fn preauthorize(
        &self,
        http: &reqwest::Client,
        key: &str,
        scopes: &[String],
    ) -> Result<Option<String>, AuthError> {
        let known = self.challenge.lock().ok().and_then(|c| c.clone());
        match known {
            Some(ch) if ch.scheme == "bearer" => {
                self.authorize(http, None, key, scopes, None).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Answers a 401 challenge for `scopes`, caching the result under `key`. `rejected` is
    /// the header the registry just refused, if any.
    pub async fn authorize(
        &self,
        http: &reqwest::Client,
        www_authenticate: Option<&str>,
        key: &str,
        scopes: &[String],
        rejected: Option<&str>,
    ) -> Result<String, AuthError> {
        let _one_at_a_time = self.fetching.lock().await;
        // Another request may have fetched a token for this scope while we waited.
        if let Some(h) = self.cached(key) {
            if Some(h.as_str()) != rejected {
                return Ok(h);
            }
        }
        let challenges = www_authenticate.map(challenge::parse).unwrap_or_default();
        let fresh = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .cloned();
        // A remembered challenge's scope was about another request: only its realm and service
        // apply.
        let fresh_scope = fresh.as_ref().and_then(|c| c.params.get("scope").cloned());
        let chosen = fresh.or_else(|| {
            self.challenge.lock().ok().and_then(|c| c.clone()).map(|mut c| {
                c.params.remove("scope");
                c
            })
        });
        let Some(chosen) = chosen else {
            if let Some(other) = challenges.first() {
                return Err(AuthError::Unsupported(format!(
                    "the registry asks for {:?} authentication, which this tool does not support",
                    other.scheme
                )));
            }
            // No challenge given: try basic with what we have.
            return self.basic(key);
        };
        if let Ok(mut c) = self.challenge.lock() {
            *c = Some(chosen.clone());
        }
        match chosen.scheme.as_str() {
            "basic" => self.basic(key),
            "bearer" => {
                // The registry may name a scope we did not think of (e.g. a mount source): ask for
                // it too.
                let mut scopes = scopes.to_vec();
                if let Some(s) = &fresh_scope {
                    for one in s.split(' ').filter(|s| !s.is_empty()) {
                        if !scopes.iter().any(|x| covers(x, one)) {
                            scopes.push(one.to_string());
                        }
                    }
                }
                let (token, ttl) = self.fetch_token(http, &chosen, &scopes).await?;
                let header = format!("Bearer {token}");
                if let Ok(mut t) = self.tokens.lock() {
                    // Renew a little early so a token never expires mid-request.
                    let ttl = Duration::from_secs(ttl.max(60).saturating_sub(15));
                    t.insert(
                        key.to_string(),
                        Cached { header: header.clone(), expires: Instant::now() + ttl },
                    );
                }
                Ok(header)
            }
            other => Err(AuthError::Unsupported(format!(
                "the registry asks for {other:?} authentication, which this tool does not support"
            ))),
        }
    }

    fn unavailable(&self) -> Option<AuthError> {
        match &self.creds.secret {
            Secret::Unavailable(m) => Some(AuthError::Unavailable {
                origin: self.creds.origin.clone(),
                message: m.clone(),
            }),
            _ => None,
        }
    }

    fn basic(&self, key: &str) -> Result<String, AuthError> {
        if let Some(e) = self.unavailable() {
            return Err(e);
        }
        let header = match &self.creds.secret {
            Secret::Basic { username, password } => {
                let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                format!("Basic {enc}")
            }
            Secret::IdentityToken(_) => {
                return Err(AuthError::Unsupported(format!(
                    "the registry asks for a username and password (basic auth), but the credentials are {}; {CREDENTIALS_HINT}",
                    self.creds.describe()
                )))
            }
            _ => return Err(AuthError::NeedsCredentials { creds: self.creds.describe(), hint: CREDENTIALS_HINT.into() }),
        };
        if let Ok(mut t) = self.tokens.lock() {
            let far = Instant::now() + Duration::from_secs(24 * 3600);
            t.insert(BASIC_KEY.into(), Cached { header: header.clone(), expires: far });
            t.insert(key.into(), Cached { header: header.clone(), expires: far });
        }
        Ok(header)
    }

    /// Gets a token: OAuth2 POST when there is a secret (refresh token or password grant),
    /// falling back to the Distribution token GET (basic auth or anonymous).
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        ch: &Challenge,
        scopes: &[String],
    ) -> Result<(String, u64), AuthError> {
        if let Some(e) = self.unavailable() {
            return Err(e);
        }
        let realm = ch.params.get("realm").cloned().unwrap_or_default();
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(AuthError::Unsupported(format!(
                "the registry's bearer challenge names no usable token server (realm {:?})",
                crate::scrub::escape_controls(&realm)
            )));
        }
        if self.https && !realm.starts_with("https://") {
            return Err(AuthError::Unsupported(format!(
                "the registry (HTTPS) names a token server on plain HTTP (realm {:?}); refused: the credentials would travel unencrypted",
                crate::scrub::escape_controls(&realm)
            )));
        }
        let service = ch.params.get("service").cloned();
        let post_form: Option<Vec<(&str, String)>> = match &self.creds.secret {
            Secret::IdentityToken(refresh) => Some(vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh.clone()),
                ("client_id", "oras".into()),
            ]),
            Secret::Basic { username, password } => Some(vec![
                ("grant_type", "password".into()),
                ("username", username.clone()),
                ("password", password.clone()),
                ("client_id", "oras".into()),
            ]),
            _ => None,
        };
        if let Some(mut form) = post_form {
            if let Some(s) = &service {
                form.push(("service", s.clone()));
            }
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
            let resp = self.token_request(http, &realm, || http.post(&realm).form(&form)).await?;
            if resp.status().is_success() {
                return self.token_from(&realm, resp).await;
            }
            if !POST_UNSUPPORTED.contains(&resp.status().as_u16()) {
                return Err(self.refused(&realm, resp).await);
            }
            transport::debug_line(format_args!(
                "token server answered the OAuth2 POST with {}; trying GET",
                resp.status().as_u16()
            ));
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &service {
            query.push(("service", s.clone()));
        }
        for s in scopes {
            query.push(("scope", s.clone()));
        }
        let resp = match &self.creds.secret {
            Secret::Basic { username, password } => {
                query.push(("account", username.clone()));
                self.token_request(http, &realm, || {
                    http.get(&realm).query(&query).basic_auth(username, Some(password))
                })
                .await?
            }
            // Docker's convention for identity tokens over basic auth.
            Secret::IdentityToken(t) => {
                self.token_request(http, &realm, || {
                    http.get(&realm).query(&query).basic_auth("<token>", Some(t))
                })
                .await?
            }
            _ => self.token_request(http, &realm, || http.get(&realm).query(&query)).await?,
        };
        if !resp.status().is_success() {
            return Err(self.refused(&realm, resp).await);
        }
        self.token_from(&realm, resp).await
    }

    /// Sends a token request, retrying transient failures like any registry request.
    async fn token_request<F>(
        &self,
        http: &reqwest::Client,
        realm: &str,
        build: F,
    ) -> Result<reqwest::Response, AuthError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let retry = transport::RetryPolicy::default();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let req = build().build().map_err(|e| AuthError::Transport {
                realm: realm.into(),
                detail: describe_transport(&e),
            })?;
            let method = req.method().clone();
            let url = transport::redact_url(req.url().as_str());
            let res = match tokio::time::timeout(self.request_timeout, http.execute(req)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(AuthError::Transport {
                        realm: realm.into(),
                        detail: format!(
                            "timed out: no answer within {} s (--request-timeout)",
                            self.request_timeout.as_secs()
                        ),
                    })
                }
            };
            match res {
                Ok(resp) => {
                    let status = resp.status();
                    transport::debug_line(format_args!(
                        "{method} {url} [token request, credentials redacted] -> {}",
                        status.as_u16()
                    ));
                    if transport::is_retryable_status(status) {
                        let after = transport::retry_after(resp.headers());
                        if let Some(wait) = retry.next_delay(attempt, started, after) {
                            transport::debug_line(format_args!("retrying in {wait:?}"));
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    transport::debug_line(format_args!(
                        "{method} {url} [token request] -> {}",
                        describe_transport(&e)
                    ));
                    if transport::is_retryable_transport(&e) {
                        if let Some(wait) = retry.next_delay(attempt, started, None) {
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    return Err(AuthError::Transport {
                        realm: realm.into(),
                        detail: describe_transport(&e),
                    });
                }
            }
        }
    }

    async fn refused(&self, realm: &str, resp: reqwest::Response) -> AuthError {
        let status = resp.status().as_u16();
        let body =
            read_at_most(resp, MAX_TOKEN_ANSWER, self.request_timeout).await.unwrap_or_default();
        let mut detail = describe_body(&body);
        for s in self.creds.secrets() {
            if !s.is_empty() {
                detail = detail.replace(s, "<redacted>");
            }
        }
        let detail = crate::scrub::redact(&detail).into_owned();
        AuthError::Refused {
            realm: realm.into(),
            creds: self.creds.describe(),
            status,
            detail: if detail.is_empty() { String::new() } else { format!(": {detail}") },
            hint: CREDENTIALS_HINT.into(),
        }
    }

    async fn token_from(
        &self,
        realm: &str,
        resp: reqwest::Response,
    ) -> Result<(String, u64), AuthError> {
        // Parse from bytes so that no error message can quote the body (it holds the token).
        let body = read_at_most(resp, MAX_TOKEN_ANSWER, self.request_timeout)
            .await
            .map_err(|detail| AuthError::BadAnswer { realm: realm.into(), detail })?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| AuthError::NoToken { realm: realm.into() })?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token)
            .filter(|t| !t.is_empty());
        let token = token.ok_or_else(|| AuthError::NoToken { realm: realm.into() })?;
        // A token must fit in a header; refuse anything that would break the request builder.
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(AuthError::NoToken { realm: realm.into() });
        }
        crate::scrub::register_secret(&token);
        // The distribution spec's default lifetime is 60 seconds.
        Ok((token, parsed.expires_in.unwrap_or(60)))
    }
}

/// Largest token server answer read (a token is a few KiB at most).
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// A token server's answer, if it is at most `limit` bytes and comes in full within `deadline`.
async fn read_at_most(
    resp: reqwest::Response,
    limit: u64,
    deadline: Duration,
) -> Result<bytes::Bytes, String> {
    tokio::time::timeout(deadline, transport::read_limited(resp, limit))
        .await
        .unwrap_or_else(|_| Err("timed out reading its answer (--request-timeout)".into()))
}

/// The actions a bearer token (a JWT as Distribution's token servers issue) grants on `repo`, read
/// from its claims without checking its signature (only to explain a refusal); None when it does
/// not say.
fn granted_actions(header: &str, repo: &str) -> Option<Vec<String>> {
    let token = header.strip_prefix("Bearer ")?;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let mut actions = Vec::new();
    for a in v.get("access")?.as_array()? {
        if a.get("type").and_then(|t| t.as_str()) == Some("repository")
            && a.get("name").and_then(|n| n.as_str()) == Some(repo)
        {
            actions.extend(
                a.get("actions")?.as_array()?.iter().filter_map(|x| x.as_str().map(str::to_string)),
            );
        }
    }
    Some(actions)
}

/// Whether scope `have` (`type:name:actions`) grants everything scope `want` asks for.
fn covers(have: &str, want: &str) -> bool {
    let split = |s: &str| {
        s.rsplit_once(':').map(|(res, acts)| {
            (res.to_string(), acts.split(',').map(str::to_string).collect::<Vec<_>>())
        })
    };
    match (split(have), split(want)) {
        (Some((hr, ha)), Some((wr, wa))) => {
            hr == wr && (ha.iter().any(|a| a == "*") || wa.iter().all(|w| ha.contains(w)))
        }
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_coverage() {
        assert!(covers("repository:a/b:pull,push", "repository:a/b:pull"));
        assert!(covers("repository:a/b:pull", "repository:a/b:pull"));
        assert!(!covers("repository:a/b:pull", "repository:a/b:pull,push"));
        assert!(!covers("repository:a/c:pull,push", "repository:a/b:pull"));
        assert!(covers("registry:catalog:*", "registry:catalog:*"));
    }

    #[test]
    fn describe_never_shows_secrets() {
        let c = Credentials::basic("alice", "s3cr3t-pw", "--username/--password");
        let d = format!("{} {:?}", c.describe(), c);
        assert!(d.contains("alice") && d.contains("--username/--password"));
        assert!(!d.contains("s3cr3t-pw"));
        let t = Credentials::identity_token("refresh-xyz", "--identity-token");
        assert!(!format!("{t:?}").contains("refresh-xyz"));
    }

    #[test]
    fn invalidate_keeps_a_newer_token() {
        let a = Auth::new(Credentials::default(), true, Duration::from_secs(60));
        let far = Instant::now() + Duration::from_secs(60);
        a.tokens
            .lock()
            .unwrap()
            .insert("k".into(), Cached { header: "Bearer new".into(), expires: far });
        a.invalidate("k", Some("Bearer old"));
        assert_eq!(a.cached("k").as_deref(), Some("Bearer new"));
        a.invalidate("k", Some("Bearer new"));
        assert_eq!(a.cached("k"), None);
    }

    #[test]
    fn basic_without_credentials_is_refused_with_a_hint() {
        let a = Auth::new(
            Credentials::anonymous("no credentials for r in config.json"),
            true,
            Duration::from_secs(60),
        );
        let e = a.basic("k").unwrap_err().to_string();
        assert!(e.contains("anonymous access") && e.contains("--password-stdin"), "{e}");
    }
}
