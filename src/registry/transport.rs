//! Building the HTTP client (TLS, plain HTTP rules, `--resolve`, extra headers, proxies from
//! the environment) and the retry policy every registry and token request follows.

use bytes::Bytes;
use futures::StreamExt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Transport settings shared by every registry of a run.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Use HTTP instead of HTTPS for every registry.
    pub plain_http: bool,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Extra CA certificate (PEM).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<std::path::PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key_file: Option<std::path::PathBuf>,
    /// `host:port:address[:port]` overrides.
    pub resolve: Vec<String>,
    /// `Name: value` headers added to every request.
    pub headers: Vec<String>,
    /// Print an HTTP trace (credentials redacted) to stderr.
    pub debug: bool,
    /// Upload blobs larger than this in PATCH chunks of this size (for registries or proxies that
    /// cap request bodies).
    pub chunk_size: Option<u64>,
    /// The longest a metadata request (manifest, tag or referrers page, token, upload session) may
    /// take in all, its answer read: a registry that trickles must not hold a run forever.
    pub request_timeout: Duration,
    /// The slowest a blob transfer may stay, and for how long, before it fails.
    pub stall: super::stall::StallLimit,
}

/// The `--request-timeout` default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            plain_http: false,
            insecure: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            resolve: Vec::new(),
            headers: Vec::new(),
            debug: false,
            chunk_size: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stall: super::stall::StallLimit::default(),
        }
    }
}

/// Whether a registry host is a loopback name that defaults to plain HTTP.
pub fn is_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => n,
        _ => host,
    };
    name == "localhost" || name == "127.0.0.1" || name == "[::1]" || name.starts_with("127.")
}

/// The host to talk to for a registry name (`docker.io` is served by `registry-1.docker.io`).
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

pub use crate::progress::debug_line;

/// A URL shown redacted (see [`redact_url`]) when formatted, and only then.
pub struct Redacted<'a>(pub &'a str);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(self.0))
    }
}

/// A URL fit for messages: user info and credential-like query parameters are replaced.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else { return raw.to_string() };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("redacted");
        let _ = u.set_password(None);
    }
    const SECRET_PARAMS: [&str; 6] =
        ["password", "refresh_token", "access_token", "token", "client_secret", "code"];
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
                    "<redacted>".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The X.509 version (1, 2 or 3) of the first certificate of a PEM file; None when there is none to
/// read.
fn first_certificate_version(pem: &[u8]) -> Option<u8> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let body = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] EXPLICIT version OPTIONAL, ... } ...
    // }
    let tbs = der_contents(&der, 0x30)?;
    let tbs = der_contents(tbs, 0x30)?;
    match tbs.first()? {
        0xa0 => der_contents(der_contents(tbs, 0xa0)?, 0x02)?.last().map(|v| v + 1),
        _ => Some(1),
    }
}

/// The contents of the DER element at the start of `der`, if its tag is `tag`.
fn der_contents(der: &[u8], tag: u8) -> Option<&[u8]> {
    if *der.first()? != tag {
        return None;
    }
    let first = *der.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = der.get(2..2 + n)?.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    der.get(start..start.checked_add(len)?)
}

/// Up to `limit` bytes of an answer (an error's body: its start says enough), and whether there was
/// more, which is not read.
pub async fn read_prefix(resp: reqwest::Response, limit: u64) -> (Bytes, bool) {
    let declared_over = resp.content_length().is_some_and(|l| l > limit);
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        let room = (limit as usize).saturating_sub(out.len());
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return (Bytes::from(out), true);
        }
        out.extend_from_slice(&chunk);
    }
    (Bytes::from(out), declared_over)
}

/// A whole answer, if it is at most `limit` bytes (one that declares more is refused unread).
pub async fn read_limited(
    resp: reqwest::Response,
    limit: u64,
) -> std::result::Result<Bytes, String> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(format!("response larger than the {limit} byte limit"));
    }
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| describe_transport(&e))?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(format!("response larger than the {limit} byte limit"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Redirects (a blob served from storage elsewhere) are followed up to 10 times; reqwest drops the
/// Authorization header when one leaves the registry's host and port. One from HTTPS to plain HTTP
/// is refused: what was asked over TLS must not come back unprotected.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().last().is_some_and(|p| p.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            let to = redact_url(attempt.url().as_str());
            attempt.error(format!(
                "the registry redirected an HTTPS request to plain HTTP ({to}); refused"
            ))
        } else if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Builds the shared reqwest client from the options. Proxies come from `HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (reqwest's system proxy, on by default).
pub fn build_client(o: &TransportOptions) -> Result<reqwest::Client, String> {
    crate::progress::set_debug(o.debug);
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("oras-backup/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .redirect(redirect_policy());
    if o.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(ca) = &o.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {} is not a PEM certificate: {e}", ca.display()))?;
        if certs.is_empty() {
            // Text without any PEM block parses as an empty bundle: say so rather than ignore the
            // flag.
            return Err(format!("--ca-file {} holds no PEM certificate", ca.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&o.cert_file, &o.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = std::fs::read(c)
                .map_err(|e| format!("cannot read --cert-file {}: {e}", c.display()))?;
            if first_certificate_version(&pem) == Some(1) {
                // rustls (webpki) takes X.509 v3 certificates only; without this check the client
                // build fails with a bare "builder error".
                return Err(format!(
                    "--cert-file {} is an X.509 v1 certificate, which this tool's TLS library (rustls) cannot use as a client certificate; have it reissued as X.509 v3",
                    c.display()
                ));
            }
            pem.push(b'\n');
            pem.extend(
                std::fs::read(k)
                    .map_err(|e| format!("cannot read --key-file {}: {e}", k.display()))?,
            );
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!("--cert-file/--key-file are not a usable PEM certificate and key: {e}")
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err("--cert-file and --key-file must be given together".into()),
    }
    for r in &o.resolve {
        let (host, addr) = parse_resolve(r)?;
        b = b.resolve(&host, addr);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &o.headers {
        // The value may be a secret (a token): quote only the name in messages.
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| "invalid --header: expected 'Name: value'".to_string())?;
        let name = reqwest::header::HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| format!("invalid --header name {:?}", n.trim()))?;
        let value = reqwest::header::HeaderValue::from_str(v.trim())
            .map_err(|_| format!("invalid --header value for {:?}", n.trim()))?;
        headers.append(name, value);
    }
    b = b.default_headers(headers);
    b.build().map_err(|e| {
        let mut msg = format!("cannot set up HTTP client: {e}{}", causes(&e));
        if o.cert_file.is_some() {
            msg.push_str(
                " (check --cert-file and --key-file: a certificate and its own private key, PEM)",
            );
        }
        msg
    })
}

/// Bounds for retrying a request: attempts in all, and time spent waiting in all.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
    /// The first backoff; it doubles with each retry.
    pub base: Duration,
    /// The longest single backoff (and the longest `Retry-After` honoured).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(90),
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1`, or `None` when the budget is spent.
    /// `retry_after` (from the server) replaces the computed backoff, within `max_delay`.
    pub fn next_delay(
        &self,
        attempt: u32,
        started: Instant,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp =
            self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.max_delay);
        // Equal jitter: half fixed, half random, so that concurrent clients spread out.
        let half = exp / 2;
        let wait = match retry_after {
            // A server asking for a longer pause than we would ever wait: give up now with its
            // answer.
            Some(ra) if ra > self.max_delay => return None,
            Some(ra) => ra,
            None => half + Duration::from_nanos(jitter_nanos(half.as_nanos() as u64)),
        };
        if started.elapsed() + wait > self.max_elapsed {
            return None;
        }
        Some(wait)
    }
}

/// A pseudo-random number below `bound` (no RNG dependency: the clock and a counter, mixed).
fn jitter_nanos(bound: u64) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    if bound == 0 {
        return 0;
    }
    let now =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut x = now ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % bound
}

/// Statuses worth another attempt: 408, 429, 500, 502, 503, 504.
pub fn is_retryable_status(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Whether a transport error may go away on its own (resets, refused or timed-out
/// connections, bodies cut short); TLS refusals (see [`is_tls_refusal`]) and bad requests do not.
pub fn is_retryable_transport(e: &reqwest::Error) -> bool {
    // (reqwest labels a body cut short while streaming as a "decode" error: that one is retried.)
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    !is_tls_refusal(e)
}

/// Whether an error was caused by a TLS handshake that another attempt cannot change: the peer's
/// certificate was not accepted (or none was sent), the peer refused the handshake with an alert
/// (our client certificate, a protocol it will not speak), or the two sides share no protocol to
/// speak. A corrupt or cut handshake (a reset, plain HTTP on the port) may pass and is not one of
/// these.
pub fn is_tls_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::Error as Tls;
    matches!(
        tls_error(e),
        Some(
            Tls::InvalidCertificate(_)
                | Tls::NoCertificatesPresented
                | Tls::InvalidCertRevocationList(_)
                | Tls::AlertReceived(_)
                | Tls::PeerIncompatible(_)
                | Tls::InconsistentKeys(_)
        )
    )
}

/// The TLS error that caused `e`, if one did (found however deep the wrapping goes).
pub fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = carried(cause);
    }
    None
}

/// The error `e` carries: an `io::Error`'s own inner error (tokio-rustls hands a handshake's rustls
/// error up inside one, itself inside another; `io::Error::source` skips the inner error and gives
/// that one's source), else `e.source()`.
fn carried<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    }
}

/// Describes a reqwest transport error with its causes (connection refused, TLS...).
pub fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}{}", causes(e))
}

/// The messages of an error's causes (its `source()` chain, without the error's own message), each
/// after `": "`; a cause whose message only repeats the one before it is left out.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut last = String::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if text != last {
            out.push_str(": ");
            out.push_str(&text);
            last = text;
        }
        next = cause.source();
    }
    out
}

/// `Retry-After` as a duration: delay-seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = parse_http_date(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// `RateLimit-Reset` (IETF draft, delta seconds until the quota is restored), the wait a 429 without
/// `Retry-After` implies.
pub fn ratelimit_reset(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get("ratelimit-reset")?.to_str().ok()?;
    let secs = v.split(';').next()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs))
}

/// The registry's quota headers (`RateLimit-Limit`, `RateLimit-Remaining`, Docker Hub's
/// `docker-ratelimit-source`), as a note for a rate-limit message: escaped and short.
pub fn quota_note(headers: &reqwest::header::HeaderMap) -> String {
    let mut out = String::new();
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            let v: String = crate::scrub::escape_controls(v).chars().take(64).collect();
            out.push_str(&format!(", {name}: {v}"));
        }
    }
    out
}

/// What an error for a 429 adds: the registry's quota and wish, and what to do.
pub fn rate_limit_hint(headers: &reqwest::header::HeaderMap) -> String {
    let wait = retry_after(headers).or_else(|| ratelimit_reset(headers));
    let when = match wait {
        Some(w) => format!("the registry asks to wait {} s", w.as_secs()),
        None => "the registry names no time to wait".to_string(),
    };
    format!(
        " (rate limited{}; {when}; this run stopped retrying: try again later, or use credentials with a larger quota)",
        quota_note(headers)
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
fn parse_http_date(s: &str) -> Option<u64> {
    let rest = s.split_once(", ").map(|(_, r)| r)?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: u64 = day.parse().ok()?;
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let year: u64 = year.parse().ok()?;
    let hms: Vec<u64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?;
    let [h, m, sec] = hms.as_slice() else { return None };
    if year < 1970 || !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), valid for years >= 1970.
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// Parses `host:port:address[:port]`.
fn parse_resolve(s: &str) -> Result<(String, SocketAddr), String> {
    let bad = || format!("invalid --resolve {s:?}: expected host:port:address[:port]");
    let (host, rest) = s.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    // address may be IPv6 in brackets, optionally followed by :port
    let (ip, to_port) = if let Some(stripped) = addr.strip_prefix('[') {
        let (ip, after) = stripped.split_once(']').ok_or_else(bad)?;
        let p = after.strip_prefix(':').map(|p| p.parse::<u16>()).transpose().map_err(|_| bad())?;
        (ip.to_string(), p)
    } else if let Some((ip, p)) =
        addr.rsplit_once(':').filter(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().is_ok())
    {
        (ip.to_string(), Some(p.parse::<u16>().map_err(|_| bad())?))
    } else {
        (addr.to_string(), None)
    };
    let ipaddr: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    // The HTTP stack dials this port for a URL that names none (and the URL's own port otherwise).
    let sock = (ipaddr, to_port.unwrap_or(port))
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)?;
    Ok((host.to_string(), sock))
}

/// The port to dial instead of `port` for `host`, when a `--resolve` entry maps that host and port
/// to another port. Only needed for a registry named with a port of its own: the HTTP stack dials
/// the port written in a URL whatever the resolver says, so the URL (and with it the Host header)
/// must name the new port. A registry named without one keeps its URL and is dialled at the
/// resolver's port.
pub fn remapped_port(resolve: &[String], host: &str, port: u16) -> Option<u16> {
    resolve.iter().find_map(|r| {
        let (h, rest) = r.split_once(':')?;
        let (p, _) = rest.split_once(':')?;
        if h != host || p.parse::<u16>().ok()? != port {
            return None;
        }
        let (_, sock) = parse_resolve(r).ok()?;
        (sock.port() != port).then_some(sock.port())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaps_ports() {
        let r = vec!["reg.example:443:127.0.0.1:5000".to_string()];
        assert_eq!(remapped_port(&r, "reg.example", 443), Some(5000));
        assert_eq!(remapped_port(&r, "reg.example", 8443), None);
        assert_eq!(remapped_port(&r, "other.example", 443), None);
        assert_eq!(
            remapped_port(&["reg.example:443:127.0.0.1".to_string()], "reg.example", 443),
            None
        );
    }

    #[test]
    fn localhost_rule() {
        assert!(is_localhost("localhost:5000"));
        assert!(is_localhost("127.0.0.1:5000"));
        assert!(is_localhost("localhost"));
        assert!(!is_localhost("registry.example:5000"));
    }

    #[test]
    fn resolve_forms() {
        let (h, a) = parse_resolve("reg.example:443:127.0.0.1:5000").unwrap();
        assert_eq!(h, "reg.example");
        assert_eq!(a.port(), 5000);
        let (_, a) = parse_resolve("reg.example:443:127.0.0.1").unwrap();
        assert_eq!(a.port(), 443);
        assert!(parse_resolve("nonsense").is_err());
        let (_, a) = parse_resolve("reg.example:443:[::1]:5000").unwrap();
        assert!(a.is_ipv6() && a.port() == 5000);
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn retry_budget() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let t = Instant::now();
        let d1 = p.next_delay(1, t, None).unwrap();
        assert!(d1 >= Duration::from_millis(125) && d1 <= Duration::from_millis(250), "{d1:?}");
        let d2 = p.next_delay(2, t, None).unwrap();
        assert!(d2 >= Duration::from_millis(250) && d2 <= Duration::from_millis(500), "{d2:?}");
        assert_eq!(p.next_delay(3, t, None), None, "attempts are bounded");
        assert_eq!(
            p.next_delay(1, t, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2)),
            "Retry-After is honoured"
        );
        assert_eq!(
            p.next_delay(1, t, Some(Duration::from_secs(60))),
            None,
            "a wait past the longest backoff gives up"
        );
        let short = RetryPolicy { max_elapsed: Duration::from_secs(1), ..p };
        assert_eq!(
            short.next_delay(1, t, Some(Duration::from_secs(2))),
            None,
            "a wait past the time budget gives up"
        );
    }

    /// An error that carries another, as the HTTP stack's own errors carry the transport's.
    #[derive(Debug)]
    struct Carrier(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Carrier {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Carrier {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    /// A rustls error as the HTTP stack hands it up: in an `io::Error` in another, in the stack's
    /// own.
    fn carried_in_io(tls: rustls::Error) -> Carrier {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        Carrier(Box::new(std::io::Error::other(io)))
    }

    #[test]
    fn tls_refusals_are_found_by_type_inside_io_errors() {
        let refused = [
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
            rustls::Error::NoCertificatesPresented,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
        ];
        for tls in refused {
            let shown = tls.to_string();
            assert!(is_tls_refusal(&carried_in_io(tls)), "{shown}");
        }
        assert!(
            is_tls_refusal(&Carrier(Box::new(rustls::Error::NoCertificatesPresented))),
            "a rustls error in the chain itself"
        );
        let passing = [
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            rustls::Error::DecryptError,
        ];
        for tls in passing {
            let shown = tls.to_string();
            assert!(!is_tls_refusal(&carried_in_io(tls)), "{shown}");
        }
        // Wording alone decides nothing.
        let worded = std::io::Error::other("invalid peer certificate: received fatal alert");
        assert!(!is_tls_refusal(&Carrier(Box::new(worded))));
    }

    /// A server on loopback that answers whatever it is sent first with `answer`, then closes.
    fn answering(answer: &'static [u8]) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
        let port = listener.local_addr().expect("bound address").port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut hello = [0u8; 4096];
                let _ = conn.read(&mut hello);
                let _ = conn.write_all(answer);
            }
        });
        port
    }

    /// The error of an HTTPS request to a loopback server that answers with `answer`.
    async fn https_error(answer: &'static [u8]) -> reqwest::Error {
        let port = answering(answer);
        // No proxy: the request must reach the loopback server whatever the environment names.
        let http = reqwest::Client::builder().no_proxy().build().expect("HTTP client");
        http.get(format!("https://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .expect_err("the server speaks no TLS")
    }

    #[tokio::test]
    async fn a_tls_alert_from_the_server_is_not_retried() {
        // A fatal handshake_failure alert record, as a server that refuses the handshake sends.
        let e = https_error(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]).await;
        assert!(!is_retryable_transport(&e), "{}", describe_transport(&e));
        assert!(
            describe_transport(&e).contains("fatal alert"),
            "the message keeps rustls's words: {}",
            describe_transport(&e)
        );
    }

    #[tokio::test]
    async fn a_cut_or_garbled_handshake_is_retried() {
        let e = https_error(b"").await;
        assert!(is_retryable_transport(&e), "{}", describe_transport(&e));
        let e = https_error(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        assert!(is_retryable_transport(&e), "{}", describe_transport(&e));
    }

    #[test]
    fn causes_are_listed_once_each() {
        let inner = std::io::Error::other("connection refused");
        let e = Carrier(Box::new(Carrier(Box::new(inner))));
        assert_eq!(causes(&e), ": client error (Connect): connection refused");
        assert_eq!(causes(&std::io::Error::other("alone")), "");
    }

    #[test]
    fn urls_are_redacted() {
        let r = redact_url("https://user:pw@auth.example/token?service=x&refresh_token=abc&scope=repository%3Aa%3Apull");
        assert!(!r.contains("pw") && !r.contains("abc"), "{r}");
        assert!(r.contains("service=x") && r.contains("scope="), "{r}");
        assert_eq!(
            Redacted("https://user:pw@r.example/v2/").to_string(),
            redact_url("https://user:pw@r.example/v2/")
        );
    }
}
