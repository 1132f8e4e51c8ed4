//! An in-process OAuth2/Distribution token server on loopback for Distribution's `auth.token`:
//! GET with basic auth or anonymous, POST with `grant_type=password` or `refresh_token`.
//! It issues ES256 JWTs signed with the test PKI's token key, whose certificate travels in
//! the JWT `x5c` header and sits in the registry's `rootcertbundle`.

use super::relay::{reason, Server};
use super::tls::Pki;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the token server grants.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// The `service` (JWT audience) the registry is configured with.
    pub service: String,
    /// The JWT issuer the registry trusts.
    pub issuer: String,
    /// Accounts: username -> password.
    pub users: BTreeMap<String, String>,
    /// Identity (refresh) tokens: token -> username.
    pub refresh_tokens: BTreeMap<String, String>,
    /// Grants: (username, or "" for anonymous; repository prefix; allowed actions).
    pub grants: Vec<(String, String, Vec<String>)>,
    /// Answer POST requests (OAuth2 form); when false POST gets a 404 and clients must use GET.
    pub allow_post: bool,
    /// Answer GET requests; when false GET gets a 405 (an OAuth2-only server).
    pub allow_get: bool,
    /// Seconds until the JWT `exp` (Distribution adds 60 s of leeway, so use e.g. -57 for a
    /// token the registry refuses about 3 s after issue).
    pub jwt_lifetime_secs: i64,
    /// The `expires_in` announced to clients.
    pub expires_in: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            service: "oras-test-registry".into(),
            issuer: "oras-test-issuer".into(),
            users: BTreeMap::new(),
            refresh_tokens: BTreeMap::new(),
            grants: Vec::new(),
            allow_post: true,
            allow_get: true,
            jwt_lifetime_secs: 300,
            expires_in: 300,
        }
    }
}

impl TokenConfig {
    /// Adds an account.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.insert(name.into(), password.into());
        self
    }

    /// Adds an identity token for an account.
    pub fn refresh_token(mut self, token: &str, user: &str) -> Self {
        self.refresh_tokens.insert(token.into(), user.into());
        self
    }

    /// Grants `actions` (e.g. "pull,push", "*") on repositories starting with `prefix` ("" = all) to `user` ("" = anonymous).
    pub fn grant(mut self, user: &str, prefix: &str, actions: &str) -> Self {
        self.grants.push((
            user.into(),
            prefix.into(),
            actions.split(',').map(str::to_string).collect(),
        ));
        self
    }
}

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// GET or POST.
    pub method: String,
    /// `grant_type` of a POST, "" for GET.
    pub grant_type: String,
    /// The authenticated account, "" when anonymous or refused.
    pub account: String,
    /// Requested scopes, in order.
    pub scopes: Vec<String>,
    /// The `service` parameter.
    pub service: String,
    /// The answer's status.
    pub status: u16,
    /// Request headers (lowercased names).
    pub headers: Vec<(String, String)>,
}

struct State {
    config: TokenConfig,
    requests: Vec<TokenRequest>,
    issued: Vec<String>,
}

/// A running token server; stops when dropped.
pub struct TokenServer {
    server: Server,
    state: Arc<Mutex<State>>,
    cert_bundle: std::path::PathBuf,
}

impl TokenServer {
    /// Starts on a free loopback port, signing with `pki`'s token key.
    pub fn start(pki: &Pki, config: TokenConfig) -> TokenServer {
        let pkcs8 = std::fs::read(&pki.token_key_pkcs8).unwrap();
        let rng = SystemRandom::new();
        let key = Arc::new(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
                .expect("token key is PKCS#8 P-256"),
        );
        let x5c = pki.token_cert_x5c();
        let state =
            Arc::new(Mutex::new(State { config, requests: Vec::new(), issued: Vec::new() }));
        let st = state.clone();
        let server = Server::start(move |conn, _| {
            let _ = serve(conn, &st, &key, &x5c);
        });
        TokenServer { server, state, cert_bundle: pki.token_cert.clone() }
    }

    /// The token endpoint (the registry's `realm`).
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.server.port())
    }

    /// The body of Distribution's `auth:` section for this server.
    pub fn registry_auth_yaml(&self) -> String {
        let c = &self.state.lock().unwrap().config;
        format!(
            "  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            self.realm(),
            c.service,
            c.issuer,
            self.cert_bundle.display()
        )
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every token issued so far (to check none leaks into output).
    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Changes the configuration of the running server.
    pub fn configure(&self, f: impl FnOnce(&mut TokenConfig)) {
        f(&mut self.state.lock().unwrap().config);
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign_jwt(key: &EcdsaKeyPair, x5c: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = key.sign(&SystemRandom::new(), signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )?;
    conn.flush()
}

static JTI: AtomicU64 = AtomicU64::new(1);

fn serve(
    mut conn: TcpStream,
    state: &Mutex<State>,
    key: &EcdsaKeyPair,
    x5c: &str,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let query = target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let params: Vec<(String, String)> = if method == "POST" {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    };
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string))
        .collect();
    scopes.retain(|s| !s.is_empty());
    let mut st = state.lock().unwrap();
    let config = st.config.clone();
    let mut record = TokenRequest {
        method: method.clone(),
        grant_type: if method == "POST" {
            param("grant_type").unwrap_or_default()
        } else {
            String::new()
        },
        account: String::new(),
        scopes: scopes.clone(),
        service: param("service").unwrap_or_default(),
        status: 200,
        headers: headers.clone(),
    };
    // Who is asking?
    let basic = header("authorization").and_then(|v| {
        let enc = v.strip_prefix("Basic ")?;
        let dec = base64::engine::general_purpose::STANDARD.decode(enc.trim()).ok()?;
        let text = String::from_utf8(dec).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    });
    let who: Result<String, ()> = match method.as_str() {
        "POST" if !config.allow_post => {
            record.status = 404;
            st.requests.push(record);
            drop(st);
            return respond(
                &mut conn,
                404,
                r#"{"errors":[{"code":"NOT_FOUND","message":"POST not supported"}]}"#,
            );
        }
        "GET" if !config.allow_get => {
            record.status = 405;
            st.requests.push(record);
            drop(st);
            return respond(
                &mut conn,
                405,
                r#"{"errors":[{"code":"UNSUPPORTED","message":"use POST"}]}"#,
            );
        }
        "POST" => match record.grant_type.as_str() {
            "password" => {
                let (u, p) =
                    (param("username").unwrap_or_default(), param("password").unwrap_or_default());
                if config.users.get(&u) == Some(&p) {
                    Ok(u)
                } else {
                    Err(())
                }
            }
            "refresh_token" => config
                .refresh_tokens
                .get(&param("refresh_token").unwrap_or_default())
                .cloned()
                .ok_or(()),
            _ => Err(()),
        },
        _ => match basic {
            None => Ok(String::new()),
            Some((u, p)) if u == "<token>" => config.refresh_tokens.get(&p).cloned().ok_or(()),
            Some((u, p)) => {
                if config.users.get(&u) == Some(&p) {
                    Ok(u)
                } else {
                    Err(())
                }
            }
        },
    };
    let Ok(account) = who else {
        record.status = 401;
        st.requests.push(record);
        drop(st);
        return respond(
            &mut conn,
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username, password or token"}]}"#,
        );
    };
    record.account = account.clone();
    // Grant what the account may have of what was asked.
    let mut access = Vec::new();
    for scope in &scopes {
        let mut p = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (p.next(), p.next(), p.next()) else {
            continue;
        };
        let wanted: Vec<&str> = actions.split(',').collect();
        let mut granted: Vec<String> = Vec::new();
        for (user, prefix, allowed) in &config.grants {
            if user != &account {
                continue;
            }
            let name_ok = if kind == "registry" {
                prefix.is_empty() || prefix == "*"
            } else {
                name.starts_with(prefix.as_str())
            };
            if !name_ok {
                continue;
            }
            for w in &wanted {
                if (allowed.iter().any(|a| a == w || a == "*")) && !granted.iter().any(|g| g == w) {
                    granted.push(w.to_string());
                }
            }
        }
        if !granted.is_empty() {
            access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
        }
    }
    let iat = now();
    let claims = serde_json::json!({
        "iss": config.issuer,
        "sub": account,
        "aud": config.service,
        "exp": iat + config.jwt_lifetime_secs,
        "nbf": iat - 10,
        "iat": iat,
        "jti": format!("oras-test-{}", JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let token = sign_jwt(key, x5c, &claims);
    st.issued.push(token.clone());
    st.requests.push(record);
    drop(st);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": config.expires_in,
        "issued_at": "2024-01-01T00:00:00Z",
    });
    respond(&mut conn, 200, &body.to_string())
}
