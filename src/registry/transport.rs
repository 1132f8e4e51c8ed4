//! Building the HTTP client: TLS, plain HTTP rules, `--resolve`, extra headers.

use std::net::{SocketAddr, ToSocketAddrs};

/// Transport settings shared by every registry of a run.
#[derive(Clone, Debug, Default)]
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
    /// Upload blobs larger than this in PATCH chunks of this size (for registries or proxies that cap request bodies).
    pub chunk_size: Option<u64>,
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

/// Builds the shared reqwest client from the options.
pub fn build_client(o: &TransportOptions) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("oras-backup/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true);
    if o.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(ca) = &o.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read --ca-file {}: {e}", ca.display()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("--ca-file {} is not a PEM certificate: {e}", ca.display()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&o.cert_file, &o.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = std::fs::read(c).map_err(|e| format!("cannot read --cert-file {}: {e}", c.display()))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(k).map_err(|e| format!("cannot read --key-file {}: {e}", k.display()))?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("--cert-file/--key-file are not a usable PEM certificate and key: {e}"))?;
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
        let (n, v) = h.split_once(':').ok_or_else(|| format!("invalid --header {h:?}: expected 'Name: value'"))?;
        let name =
            reqwest::header::HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| format!("invalid --header name {:?}", n.trim()))?;
        let value = reqwest::header::HeaderValue::from_str(v.trim()).map_err(|_| format!("invalid --header value for {:?}", n.trim()))?;
        headers.append(name, value);
    }
    b = b.default_headers(headers);
    b.build().map_err(|e| format!("cannot set up HTTP client: {e}"))
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
    } else if let Some((ip, p)) = addr.rsplit_once(':').filter(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().is_ok()) {
        (ip.to_string(), Some(p.parse::<u16>().map_err(|_| bad())?))
    } else {
        (addr.to_string(), None)
    };
    let ipaddr: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let sock = (ipaddr, to_port.unwrap_or(port)).to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
    // reqwest's resolve override ignores the port unless it is non-zero; keep it.
    let _ = port;
    Ok((host.to_string(), sock))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
