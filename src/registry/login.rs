//! Checking credentials against a registry (`oras login`): `GET /v2/` through the registry's own
//! authentication, as every other request makes it: Basic, or Bearer through its token server (the
//! password grant, or the OAuth2 refresh-token grant of an identity token), so that credentials
//! that pass here pass for a backup too.

use super::auth::AuthError;
use super::client::{Call, Client};
use reqwest::Method;

/// What the registry made of the credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// It asked for credentials and accepted them.
    Accepted,
    /// It answered without asking for any (an open registry): they were not checked.
    NotAsked,
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// The registry, or its token server, refused the credentials.
    Refused {
        /// The HTTP status of the refusal.
        status: u16,
        /// The token server that refused them; None when the registry itself did.
        realm: Option<String>,
    },
    /// The registry or its token server could not be reached (connection, TLS, time).
    Unreachable(String),
    /// Anything else (an answer that is not a registry's, a challenge that cannot be answered).
    Other(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Refused { status, realm: None } => {
                write!(f, "the registry refused the credentials ({status})")
            }
            LoginError::Refused { status, realm: Some(realm) } => {
                write!(
                    f,
                    "the registry refused the credentials ({status} from its token server {realm})"
                )
            }
            LoginError::Unreachable(why) => write!(f, "cannot reach it: {why}"),
            LoginError::Other(why) => f.write_str(why),
        }
    }
}

impl Client {
    /// Checks the client's credentials with `GET /v2/`.
    pub async fn check_login(&self) -> Result<Checked, LoginError> {
        let url = self.root_url("/v2/");
        let scopes: [String; 0] = [];
        let call = Call::new("log in to", &self.registry, Method::GET, &url, &scopes);
        let resp = match self.send(&call, |r| r).await {
            Ok(resp) => resp,
            Err(e) => {
                return Err(match e.auth_error() {
                    Some(AuthError::Refused { realm, status, .. }) => {
                        LoginError::Refused { status: *status, realm: Some(realm.clone()) }
                    }
                    Some(AuthError::Transport { realm, detail }) => {
                        LoginError::Unreachable(format!("its token server {realm}: {detail}"))
                    }
                    Some(other) => LoginError::Other(other.to_string()),
                    None if e.status.is_none() => LoginError::Unreachable(e.detail),
                    None => LoginError::Other(e.to_string()),
                })
            }
        };
        let status = resp.status().as_u16();
        match status {
            // A fresh client sends nothing until asked: credentials in the cache mean the registry
            // asked for them and took them.
            200..=299 if self.auth.cached("").is_some() => Ok(Checked::Accepted),
            200..=299 => Ok(Checked::NotAsked),
            401 | 403 => Err(LoginError::Refused { status, realm: None }),
            _ => {
                let e = self.fail("log in to", &self.registry, resp).await;
                Err(LoginError::Other(format!("{e} (is {} a registry?)", self.registry)))
            }
        }
    }
}
