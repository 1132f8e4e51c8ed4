//! Authentication: credentials, challenge handling, and a token cache per scope.

use super::challenge::{self, Challenge};
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the user gave to authenticate with.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials: anonymous tokens only.
    #[default]
    Anonymous,
    /// Username and password (basic auth, or token-server password grant).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (identity token).
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets, not even in debug output.
        match self {
            Credentials::Anonymous => f.write_str("anonymous"),
            Credentials::Basic { username, .. } => write!(f, "basic auth as {username:?}"),
            Credentials::IdentityToken(_) => f.write_str("identity token"),
        }
    }
}

impl Credentials {
    /// A short description for error messages, without secrets.
    pub fn describe(&self) -> String {
        format!("{self:?}")
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

/// Per-registry auth state: the last challenge seen and tokens by scope.
pub struct Auth {
    creds: Credentials,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Cached>>,
}

/// Failures obtaining authorization.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token server {realm} refused {creds} (HTTP {status}){hint}")]
    Refused { realm: String, creds: String, status: u16, hint: String },
    #[error("cannot reach token server {realm}: {source}")]
    Transport { realm: String, source: reqwest::Error },
    #[error("token server {realm} sent an answer without a token")]
    NoToken { realm: String },
    #[error("registry asks for {0:?} authentication, which this tool does not support")]
    Unsupported(String),
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    /// Auth state for one registry.
    pub fn new(creds: Credentials) -> Self {
        Auth { creds, challenge: Mutex::new(None), tokens: Mutex::new(HashMap::new()) }
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
        tokens.get("*basic*").map(|c| c.header.clone())
    }

    /// Forgets the token of a scope (after the registry rejected it).
    pub fn invalidate(&self, scope: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(scope);
        }
    }

    /// Answers a 401 challenge for `scopes`, caching the result under `key`.
    pub async fn authorize(
        &self,
        http: &reqwest::Client,
        www_authenticate: Option<&str>,
        key: &str,
        scopes: &[String],
    ) -> Result<String, AuthError> {
        let challenges = www_authenticate.map(challenge::parse).unwrap_or_default();
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .cloned()
            .or_else(|| self.challenge.lock().ok().and_then(|c| c.clone()));
        let Some(chosen) = chosen else {
            // No challenge given: try basic with what we have.
            return self.basic(key);
        };
        if let Ok(mut c) = self.challenge.lock() {
            *c = Some(chosen.clone());
        }
        match chosen.scheme.as_str() {
            "basic" => self.basic(key),
            "bearer" => {
                let (token, ttl) = self.fetch_token(http, &chosen, scopes).await?;
                let header = format!("Bearer {token}");
                if let Ok(mut t) = self.tokens.lock() {
                    // Renew a little early so a token never expires mid-request.
                    let ttl = Duration::from_secs(ttl.max(60).saturating_sub(15));
                    t.insert(key.to_string(), Cached { header: header.clone(), expires: Instant::now() + ttl });
                }
                Ok(header)
            }
            other => Err(AuthError::Unsupported(other.to_string())),
        }
    }

    fn basic(&self, key: &str) -> Result<String, AuthError> {
        let header = match &self.creds {
            Credentials::Basic { username, password } => {
                let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                format!("Basic {enc}")
            }
            _ => {
                return Err(AuthError::Refused {
                    realm: "registry".into(),
                    creds: self.creds.describe(),
                    status: 401,
                    hint: ": the registry requires a username and password; pass -u/--username and -p/--password".into(),
                })
            }
        };
        if let Ok(mut t) = self.tokens.lock() {
            let far = Instant::now() + Duration::from_secs(24 * 3600);
            t.insert("*basic*".into(), Cached { header: header.clone(), expires: far });
            t.insert(key.into(), Cached { header: header.clone(), expires: far });
        }
        Ok(header)
    }

    async fn fetch_token(&self, http: &reqwest::Client, ch: &Challenge, scopes: &[String]) -> Result<(String, u64), AuthError> {
        let realm = ch.params.get("realm").cloned().unwrap_or_default();
        let service = ch.params.get("service").cloned();
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &service {
            query.push(("service", s.clone()));
        }
        for s in scopes {
            query.push(("scope", s.clone()));
        }
        let resp = match &self.creds {
            Credentials::IdentityToken(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "oras".to_string()),
                ];
                if let Some(s) = &service {
                    form.push(("service", s.clone()));
                }
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                http.post(&realm).form(&form).send().await
            }
            Credentials::Basic { username, password } => {
                query.push(("account", username.clone()));
                http.get(&realm).query(&query).basic_auth(username, Some(password)).send().await
            }
            Credentials::Anonymous => http.get(&realm).query(&query).send().await,
        }
        .map_err(|source| AuthError::Transport { realm: realm.clone(), source })?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match self.creds {
                Credentials::Anonymous => ": anonymous access was refused; pass -u/--username and -p/--password".to_string(),
                _ => ": check the credentials, and that they may access this repository".to_string(),
            };
            return Err(AuthError::Refused { realm, creds: self.creds.describe(), status: status.as_u16(), hint });
        }
        let body: TokenResponse = resp.json().await.map_err(|source| AuthError::Transport { realm: realm.clone(), source })?;
        let token = body.token.or(body.access_token).filter(|t| !t.is_empty()).ok_or(AuthError::NoToken { realm })?;
        Ok((token, body.expires_in.unwrap_or(60)))
    }
}
