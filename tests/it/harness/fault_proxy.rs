//! A loopback HTTP/1.1 proxy in front of one upstream (a plain-HTTP registry) that injects
//! faults: error statuses (503, 429 with `Retry-After`...), connections closed mid-body,
//! connections closed without an answer, and delays, each for requests matching a method
//! and a path fragment, a given number of times.
//!
//! It also works as a forward proxy for clients configured with `HTTP_PROXY` (absolute-form
//! requests) and `HTTPS_PROXY` (`CONNECT` tunnels); whatever host a client asks for, traffic
//! only ever goes to the upstream given at start, on loopback. Every request is recorded.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&registry.host());
//! proxy.inject(When::method("GET").path("/blobs/"), Fault::cut_body(100), 2);
//! proxy.inject(When::any(), Fault::too_many_requests("1"), 1);
//! // ... run the client against proxy.host() ...
//! assert_eq!(proxy.fired(), 3);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which requests a fault applies to.
#[derive(Clone, Debug, Default)]
pub struct When {
    /// The method (`GET`, `PUT`...), any when `None`.
    pub method: Option<String>,
    /// A fragment of the request path (with query), any when `None`.
    pub path_contains: Option<String>,
}

impl When {
    /// Every request.
    pub fn any() -> When {
        When::default()
    }

    /// Requests with this method.
    pub fn method(m: &str) -> When {
        When { method: Some(m.to_ascii_uppercase()), path_contains: None }
    }

    /// Requests whose path contains `fragment` (e.g. "/blobs/", "/manifests/", "/tags/list").
    pub fn path(mut self, fragment: &str) -> When {
        self.path_contains = Some(fragment.to_string());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, headers and body instead of forwarding.
    Status {
        /// HTTP status code.
        code: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
    },
    /// Forward, then close the connection after `after` bytes of the response body.
    CutBody {
        /// Body bytes relayed before the connection is closed.
        after: usize,
    },
    /// Close the connection without answering (after reading the request).
    Close,
    /// Wait, then forward.
    Delay(Duration),
}

impl Fault {
    /// A status with a Distribution-style error body.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            headers: Vec::new(),
            body: format!(r#"{{"errors":[{{"code":"INJECTED","message":"fault injected by the test proxy ({code})"}}]}}"#),
        }
    }

    /// 503 Service Unavailable.
    pub fn unavailable() -> Fault {
        Fault::status(503)
    }

    /// 429 Too Many Requests with `Retry-After: <retry_after>` (seconds or an HTTP date).
    pub fn too_many_requests(retry_after: &str) -> Fault {
        match Fault::status(429) {
            Fault::Status { code, body, .. } => Fault::Status { code, headers: vec![("Retry-After".into(), retry_after.into())], body },
            other => other,
        }
    }

    /// Close the connection after `after` bytes of the response body.
    pub fn cut_body(after: usize) -> Fault {
        Fault::CutBody { after }
    }
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method (`CONNECT` for tunnels).
    pub method: String,
    /// Origin-form path and query (the authority for `CONNECT`).
    pub path: String,
    /// Request headers as sent (names as written).
    pub headers: Vec<(String, String)>,
    /// Whether the client used the proxy as a forward proxy (absolute-form or CONNECT).
    pub as_forward_proxy: bool,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

impl Seen {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Rule {
    when: When,
    fault: Fault,
    left: usize,
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    fired: Mutex<usize>,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    _listening: Listening,
}

/// Stops a loopback listener of [`serve_loopback`] when dropped.
pub struct Listening {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Listens on a free loopback port and hands each connection to `handle` on a thread of its own,
/// until the returned guard is dropped. Shared by the test relays.
pub fn serve_loopback<F>(handle: F) -> (u16, Listening)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback relay");
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let (sp, handle) = (stop.clone(), Arc::new(handle));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if sp.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || handle(conn));
        }
    });
    (port, Listening { port, stop })
}

impl FaultProxy {
    /// Starts on a free loopback port in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.to_socket_addrs().expect("upstream address").next().expect("upstream address");
        assert!(upstream.ip().is_loopback(), "the fault proxy only forwards to loopback addresses");
        let shared = Arc::new(Shared { upstream, rules: Mutex::new(Vec::new()), seen: Mutex::new(Vec::new()), fired: Mutex::new(0) });
        let sh = shared.clone();
        let (port, listening) = serve_loopback(move |conn| {
            let _ = handle(conn, &sh);
        });
        FaultProxy { port, shared, _listening: listening }
    }

    /// `127.0.0.1:PORT`, to use as the registry host (or as `http://` proxy address).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Applies `fault` to the next `times` requests matching `when` (rules are checked in
    /// the order they were added; a used-up rule no longer matches).
    pub fn inject(&self, when: When, fault: Fault, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule { when, fault, left: times });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many faults were applied so far.
    pub fn fired(&self) -> usize {
        *self.shared.fired.lock().unwrap()
    }

    /// Faults still to apply.
    pub fn pending(&self) -> usize {
        self.shared.rules.lock().unwrap().iter().map(|r| r.left).sum()
    }
}

/// Header lines as (name, value).
pub type Headers = Vec<(String, String)>;

/// Reads a request or response head: the first line and the header lines.
pub fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<Option<(String, Headers)>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = line.trim_end().split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn write_head<W: Write>(w: &mut W, first: &str, headers: &[(String, String)]) -> std::io::Result<()> {
    w.write_all(&head_bytes(first, headers))
}

/// A head as sent on: hop-by-hop connection headers dropped, `Connection: close` added (one
/// exchange per connection keeps the relays simple; clients reconnect).
pub fn head_bytes(first: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{first}\r\n");
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("proxy-connection") || n.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Copies a request body (Content-Length or chunked) from `r` to `w` (or discards it when `w` is None).
fn copy_body<R: BufRead, W: Write>(r: &mut R, mut w: Option<&mut W>, headers: &[(String, String)]) -> std::io::Result<()> {
    let chunked = header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            if let Some(w) = w.as_deref_mut() {
                w.write_all(line.as_bytes())?;
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = String::new();
                    let n = r.read_line(&mut t)?;
                    if let Some(w) = w.as_deref_mut() {
                        w.write_all(t.as_bytes())?;
                    }
                    if n == 0 || t.trim_end().is_empty() {
                        return Ok(());
                    }
                }
            }
            let mut chunk = (&mut *r).take(size as u64 + 2);
            match w.as_deref_mut() {
                Some(w) => {
                    std::io::copy(&mut chunk, w)?;
                }
                None => {
                    std::io::copy(&mut chunk, &mut std::io::sink())?;
                }
            }
        }
    }
    let len: u64 = header(headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = (&mut *r).take(len);
    match w {
        Some(w) => std::io::copy(&mut body, w)?,
        None => std::io::copy(&mut body, &mut std::io::sink())?,
    };
    Ok(())
}

fn handle(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let Some((first, headers)) = read_head(&mut reader)? else { return Ok(()) };
    let mut parts = first.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();

    if method == "CONNECT" {
        shared.seen.lock().unwrap().push(Seen { method, path: target, headers, as_forward_proxy: true, fault: None });
        let upstream = TcpStream::connect(shared.upstream)?;
        client_w.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
        // Bytes the reader already buffered belong to the tunnel.
        let buffered = reader.buffer().to_vec();
        let mut up_w = upstream.try_clone()?;
        up_w.write_all(&buffered)?;
        let mut up_r = upstream;
        let mut cl_r = reader.into_inner();
        let t = std::thread::spawn(move || {
            let _ = std::io::copy(&mut cl_r, &mut up_w);
            let _ = up_w.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut up_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Both);
        let _ = t.join();
        return Ok(());
    }

    // Absolute-form (a client using us as HTTP_PROXY): keep only the path.
    let (path, as_forward_proxy) = match target.strip_prefix("http://") {
        Some(rest) => (rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into()), true),
        None => (target.clone(), false),
    };
    let fault = {
        let mut rules = shared.rules.lock().unwrap();
        let hit = rules.iter_mut().find(|r| r.left > 0 && r.when.matches(&method, &path));
        hit.map(|r| {
            r.left -= 1;
            r.fault.clone()
        })
    };
    if fault.is_some() {
        *shared.fired.lock().unwrap() += 1;
    }
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        as_forward_proxy,
        fault: fault.as_ref().map(|f| format!("{f:?}")),
    });

    match &fault {
        Some(Fault::Status { code, headers: extra, body }) => {
            copy_body::<_, TcpStream>(&mut reader, None, &headers)?;
            let mut h = extra.clone();
            h.push(("Content-Type".into(), "application/json".into()));
            h.push(("Content-Length".into(), body.len().to_string()));
            h.push(("Docker-Distribution-Api-Version".into(), "registry/2.0".into()));
            write_head(&mut client_w, &format!("HTTP/1.1 {code} Injected"), &h)?;
            if method != "HEAD" {
                client_w.write_all(body.as_bytes())?;
            }
            client_w.flush()?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Close) => {
            copy_body::<_, TcpStream>(&mut reader, None, &headers)?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Delay(d)) => std::thread::sleep(*d),
        _ => {}
    }

    // Forward to the upstream, one request per connection.
    let upstream = TcpStream::connect(shared.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut up_w = upstream.try_clone()?;
    let fwd_headers: Vec<(String, String)> =
        headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("proxy-authorization")).cloned().collect();
    let mut head = Vec::new();
    write_head(&mut head, &format!("{method} {path} {version}"), &fwd_headers)?;
    up_w.write_all(&head)?;
    copy_body(&mut reader, Some(&mut up_w), &headers)?;
    up_w.flush()?;

    let mut up_r = BufReader::new(upstream);
    let Some((status_line, resp_headers)) = read_head(&mut up_r)? else {
        let _ = client_w.shutdown(Shutdown::Both);
        return Ok(());
    };
    write_head(&mut client_w, &status_line, &resp_headers)?;
    match fault {
        Some(Fault::CutBody { after }) => {
            std::io::copy(&mut (&mut up_r).take(after as u64), &mut client_w)?;
            client_w.flush()?;
            // The client sees the connection end before the promised body did.
            let _ = client_w.shutdown(Shutdown::Both);
        }
        _ => {
            std::io::copy(&mut up_r, &mut client_w)?;
            client_w.flush()?;
            let _ = client_w.shutdown(Shutdown::Write);
        }
    }
    Ok(())
}
