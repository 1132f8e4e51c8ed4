//! The loopback servers the tests put in front of a registry, or beside it:
//! - [`Server`], an accept loop on a free loopback port (a thread per connection) that can tell when
//!   every connection made so far has had its request recorded ([`Server::settle`]);
//! - [`Relay`], an HTTP/1.1 relay in front of one plain-HTTP upstream (a real registry), on which
//!   every misbehaving registry of the tests is built. It records every request, and asks its rules
//!   what to do with each: the first rule whose [`Match`] fits, and that has uses left, gives a
//!   [`Plan`]: answer something made up ([`Canned`]), close the connection without an answer, or
//!   forward the request, altering the exchange on the way (a delay, another path, a damaged byte,
//!   an answer cut short, headers set on the answer, an answer trickled byte by byte). A request no
//!   rule matches is forwarded as it is; [`Relay::throttle`] paces every body.
//!
//! One exchange per connection (`Connection: close`; clients reconnect). A relay also works as a
//! forward proxy for clients configured with `HTTP_PROXY` (absolute-form requests) and
//! `HTTPS_PROXY` (`CONNECT` tunnels, relayed as they are): whatever host a client asks for, traffic
//! only ever goes to the loopback upstream given at start.
//!
//! The behaviours themselves are in `fault_proxy.rs` (a flaky network), `fault_proxy_safety.rs`
//! (damaged bytes), `evil_proxy.rs` (a hostile registry) and `companion.rs` (a capped catalog).

use std::fmt::Debug;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of the request that [`Server::settle`] sends itself.
const SETTLE_PATH: &str = "/__settle__";

/// How long a relay waits for either side to send something.
const IDLE_LIMIT: Duration = Duration::from_secs(120);

/// Bodies a relay reads into memory (a chunked answer it damages or cuts) may not exceed this.
const MAX_HELD_BODY: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Loopback servers that know when every connection they accepted has been recorded.

/// Counts a connection from its accept until its request is recorded (or it ends without one).
pub struct Pending {
    count: Arc<AtomicUsize>,
    done: bool,
}

impl Pending {
    /// The request was recorded (or there will be none).
    pub fn done(&mut self) {
        if !self.done {
            self.done = true;
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.done();
    }
}

/// A loopback listener handing each connection to a handler thread; stops when dropped.
pub struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Connections accepted whose request is not recorded yet.
    unrecorded: Arc<AtomicUsize>,
}

impl Server {
    /// Listens on a free loopback port, handing each connection (and its [`Pending`]) to `handle`.
    pub fn start<F>(handle: F) -> Server
    where
        F: Fn(TcpStream, Pending) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback test server");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let unrecorded = Arc::new(AtomicUsize::new(0));
        let (sp, count, handle) = (stop.clone(), unrecorded.clone(), Arc::new(handle));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // Counted here, before the handler runs, so that `settle` cannot miss it.
                count.fetch_add(1, Ordering::SeqCst);
                let pending = Pending { count: count.clone(), done: false };
                let handle = handle.clone();
                std::thread::spawn(move || handle(conn, pending));
            }
        });
        Server { port, stop, unrecorded }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns once every connection accepted so far has had its request recorded: a request of
    /// our own is accepted after all earlier connections (the listen queue is FIFO), so once it is
    /// answered they have all been counted; then wait for their handlers (bounded).
    pub fn settle(&self) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to settle");
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn.write_all(
            format!("GET {SETTLE_PATH} HTTP/1.1\r\nHost: settle\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"HTTP/1.1 204"),
            "settle request not answered: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.unrecorded.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "connections to port {} still not recorded after 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Whether `path` is a settle request; if so, answers it (204, close) and marks it recorded.
pub fn settled(path: &str, pending: &mut Pending, w: &mut TcpStream) -> bool {
    if path != SETTLE_PATH {
        return false;
    }
    pending.done();
    let _ =
        w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = w.shutdown(Shutdown::Both);
    true
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 messages.

/// Header lines as (name, value).
pub type Headers = Vec<(String, String)>;

/// The value of a header (case-insensitive name).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `headers` without those named in `names` (case-insensitive).
fn without(headers: &[(String, String)], names: &[&str]) -> Headers {
    headers
        .iter()
        .filter(|(n, _)| !names.iter().any(|x| n.eq_ignore_ascii_case(x)))
        .cloned()
        .collect()
}

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

/// A head as sent on: hop-by-hop connection headers dropped, `Connection: close` added (one
/// exchange per connection keeps the relay simple; clients reconnect).
fn head_bytes(first: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{first}\r\n");
    for (n, v) in without(headers, &["connection", "proxy-connection", "keep-alive"]) {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// How a message's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(headers: &[(String, String)], is_request: bool) -> Framing {
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Framing::Chunked;
    }
    match header(headers, "content-length").and_then(|v| v.parse().ok()) {
        Some(n) => Framing::Length(n),
        // A request without a length has no body; an answer without one runs until the close.
        None if is_request => Framing::None,
        None => Framing::UntilClose,
    }
}

/// Copies a body (decoding chunked framing) from `r` to `w`, refusing more than `limit` bytes.
fn copy_body<R: BufRead, W: Write>(
    r: &mut R,
    framing: Framing,
    w: &mut W,
    limit: u64,
) -> std::io::Result<()> {
    let too_big = || std::io::Error::other("body too large for the test relay");
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) if n > limit => Err(too_big()),
        Framing::Length(n) => std::io::copy(&mut (&mut *r).take(n), w).map(|_| ()),
        Framing::UntilClose => {
            if std::io::copy(&mut (&mut *r).take(limit + 1), w)? > limit {
                return Err(too_big());
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut copied = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if size == 0 {
                    // Trailers, then the blank line.
                    loop {
                        let mut t = String::new();
                        if r.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                            return Ok(());
                        }
                    }
                }
                copied += size;
                if copied > limit {
                    return Err(too_big());
                }
                std::io::copy(&mut (&mut *r).take(size), w)?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        }
    }
}

/// Reads and discards a request's body, so that the client's connection ends cleanly.
pub fn drain_request_body<R: BufRead>(
    r: &mut R,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    copy_body(r, framing(headers, true), &mut std::io::sink(), u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Answers made up by the tests.

/// What a canned answer's body is.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes (after `{path}`/`{authorization}` substitution).
    Bytes(Vec<u8>),
    /// `prefix`, then `pattern` repeated, `len` bytes in all, generated while it is sent.
    Generated { prefix: Vec<u8>, pattern: Vec<u8>, len: u64 },
}

/// An answer made up by the test. Header values and text bodies may name `{path}` (the request's
/// path and query) and `{authorization}` (the request's `Authorization` value), so that an answer
/// can point at the very URL that was asked for, or echo the credentials it was sent as a careless
/// registry does.
#[derive(Clone, Debug)]
pub struct Canned {
    /// The HTTP status.
    pub status: u16,
    /// Headers sent as given (after substitution), plus the framing ones the relay adds.
    pub headers: Headers,
    pub body: Body,
    /// Send the body with chunked framing, announcing no length.
    pub chunked: bool,
}

impl Canned {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: impl Into<String>) -> Canned {
        Canned::bytes(status, "application/json; charset=utf-8", body.into().as_bytes())
    }

    /// `status` with a body of any bytes and content type.
    pub fn bytes(status: u16, content_type: &str, body: &[u8]) -> Canned {
        Canned {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Bytes(body.to_vec()),
            chunked: false,
        }
    }

    /// `status` with a body of `len` bytes: `prefix`, then `pattern` over and over.
    pub fn huge(status: u16, content_type: &str, prefix: &str, pattern: &str, len: u64) -> Canned {
        assert!(!pattern.is_empty() && prefix.len() as u64 <= len);
        Canned {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Generated {
                prefix: prefix.as_bytes().to_vec(),
                pattern: pattern.as_bytes().to_vec(),
                len,
            },
            chunked: false,
        }
    }

    /// Adds (or replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Chunked framing: no length announced.
    pub fn chunked(mut self) -> Canned {
        self.chunked = true;
        self
    }

    /// Sends itself as the answer to a `method` request with these `vars`; the body is generated on
    /// the fly for [`Body::Generated`].
    pub fn send<W: Write>(&self, w: &mut W, method: &str, vars: &Vars) -> std::io::Result<()> {
        let mut headers: Headers =
            self.headers.iter().map(|(n, v)| (n.clone(), vars.expand(v))).collect();
        headers.push(("Docker-Distribution-Api-Version".into(), "registry/2.0".into()));
        let body = match &self.body {
            Body::Bytes(b) => Some(match std::str::from_utf8(b) {
                Ok(text) => vars.expand(text).into_bytes(),
                Err(_) => b.clone(),
            }),
            Body::Generated { .. } => None,
        };
        let len = match (&self.body, &body) {
            (_, Some(b)) => b.len() as u64,
            (Body::Generated { len, .. }, None) => *len,
            _ => unreachable!(),
        };
        if self.chunked {
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
        } else {
            headers.push(("Content-Length".into(), len.to_string()));
        }
        w.write_all(&head_bytes(
            &format!("HTTP/1.1 {} {}", self.status, reason(self.status)),
            &headers,
        ))?;
        if method == "HEAD" {
            return w.flush();
        }
        // Pieces of the body, each sent as it is made (as one chunk when chunked).
        let piece = |w: &mut W, bytes: &[u8]| -> std::io::Result<()> {
            if bytes.is_empty() {
                return Ok(());
            }
            if self.chunked {
                w.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
                w.write_all(bytes)?;
                w.write_all(b"\r\n")
            } else {
                w.write_all(bytes)
            }
        };
        match (&self.body, body) {
            (_, Some(b)) => piece(w, &b)?,
            (Body::Generated { prefix, pattern, len }, None) => {
                piece(w, prefix)?;
                let mut block = Vec::with_capacity(64 << 10);
                while block.len() < (64 << 10) {
                    block.extend_from_slice(pattern);
                }
                let mut left = len - prefix.len() as u64;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    piece(w, &block[..n])?;
                    left -= n as u64;
                }
            }
            _ => unreachable!(),
        }
        if self.chunked {
            w.write_all(b"0\r\n\r\n")?;
        }
        w.flush()
    }
}

/// The reason phrase of a status the test servers send (clients read only the code).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// What `{path}` and `{authorization}` stand for in one exchange.
#[derive(Default)]
pub struct Vars {
    path: String,
    authorization: String,
}

impl Vars {
    fn expand(&self, text: &str) -> String {
        text.replace("{path}", &self.path).replace("{authorization}", &self.authorization)
    }
}

// ---------------------------------------------------------------------------------------------
// The relay.

/// Which requests a rule applies to.
#[derive(Clone, Debug, Default)]
pub struct Match {
    method: Option<String>,
    /// Fragments the path (with query) must all contain.
    path_contains: Vec<String>,
    /// Only requests that carry an `Authorization` header.
    authorized: bool,
}

impl Match {
    /// Every request.
    pub fn any() -> Match {
        Match::default()
    }

    /// Requests with this method.
    pub fn method(m: &str) -> Match {
        Match { method: Some(m.to_ascii_uppercase()), ..Match::default() }
    }

    /// ... whose path (with query) contains `fragment` (e.g. "/blobs/", "/manifests/", "/tags/list";
    /// each `path` call adds one that must be there).
    pub fn path(mut self, fragment: &str) -> Match {
        self.path_contains.push(fragment.to_string());
        self
    }

    /// ... that carry credentials (an `Authorization` header).
    pub fn authorized(mut self) -> Match {
        self.authorized = true;
        self
    }

    fn matches(&self, method: &str, path: &str, headers: &[(String, String)]) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path_contains.iter().all(|p| path.contains(p.as_str()))
            && (!self.authorized || header(headers, "authorization").is_some())
    }
}

/// What the relay does with one request.
pub enum Plan {
    /// Answer this; the request never reaches the upstream.
    Respond(Canned),
    /// Close the connection without answering (after reading the request).
    Close,
    /// Forward the request, altered as said.
    Forward(Forwarding),
}

/// Edits the headers of a forwarded answer (drops one, rewrites a `Location`...), given the request.
pub type HeaderEdit = Arc<dyn Fn(&mut Headers, &Seen) + Send + Sync>;

/// How a forwarded exchange is altered; the default changes nothing.
#[derive(Default)]
pub struct Forwarding {
    /// Wait this long before forwarding.
    pub delay: Option<Duration>,
    /// Ask the upstream for this path (with query) instead.
    pub path: Option<String>,
    /// Damage the byte of the request's body at this offset.
    pub damage_request_at: Option<u64>,
    /// Damage the byte of the answer's body at this offset.
    pub damage_answer_at: Option<u64>,
    /// Close the connection after this many bytes of the answer's body.
    pub cut_answer_after: Option<u64>,
    /// Add or replace these headers of the answer (values may name `{path}`, `{authorization}`).
    pub set_headers: Headers,
    /// Send the answer's body one byte at a time, this far apart.
    pub trickle: Option<Duration>,
    /// Then edit the answer's headers as this says.
    pub edit_headers: Option<HeaderEdit>,
}

/// A behaviour the rules of a [`Relay`] hold: what to do with a request a rule matches.
pub trait Behaviour: Clone + Debug + Send + Sync + 'static {
    /// The plan for `request` (as it is recorded).
    fn plan(&self, request: &Seen) -> Plan;

    /// How a request it applied to records it.
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// A request the relay saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method (`CONNECT` for tunnels).
    pub method: String,
    /// Origin-form path and query (the authority for `CONNECT`).
    pub path: String,
    /// Request headers as sent (names as written).
    pub headers: Headers,
    /// Whether the client used the relay as a forward proxy (absolute-form or CONNECT).
    pub as_forward_proxy: bool,
    /// The behaviour applied, if any ([`Behaviour::describe`]).
    pub applied: Option<String>,
    /// Body bytes relayed so far, both directions.
    bytes: Arc<AtomicU64>,
}

impl Seen {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

struct Rule<B> {
    when: Match,
    behaviour: B,
    left: usize,
}

struct Shared<B> {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule<B>>>,
    seen: Mutex<Vec<Seen>>,
    fired: AtomicUsize,
    /// Bytes per second per connection and direction; 0 means unlimited.
    rate: Arc<AtomicU64>,
}

/// A running relay whose rules hold `B`s; stops accepting when dropped.
pub struct Relay<B> {
    shared: Arc<Shared<B>>,
    server: Server,
}

impl<B: Behaviour> Relay<B> {
    /// Starts on a free loopback port in front of `upstream` (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> Relay<B> {
        let upstream =
            upstream.to_socket_addrs().expect("upstream address").next().expect("upstream address");
        assert!(upstream.ip().is_loopback(), "a test relay only forwards to loopback addresses");
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            fired: AtomicUsize::new(0),
            rate: Arc::new(AtomicU64::new(0)),
        });
        let sh = shared.clone();
        let server = Server::start(move |conn, pending| {
            let _ = serve(conn, pending, &sh);
        });
        Relay { shared, server }
    }

    /// `127.0.0.1:PORT`, to use as the registry host (or as `http://` proxy address).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Applies `behaviour` to the next `times` requests matching `when` (rules are checked in the
    /// order they were added; a used-up rule no longer matches).
    pub fn inject(&self, when: Match, behaviour: B, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule { when, behaviour, left: times });
    }

    /// Applies `behaviour` to every request matching `when` (retries included).
    pub fn always(&self, when: Match, behaviour: B) {
        self.inject(when, behaviour, usize::MAX);
    }

    /// Removes every rule: from now on everything is relayed unchanged.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Uses of the rules still to come.
    pub fn pending(&self) -> usize {
        self.shared.rules.lock().unwrap().iter().fold(0, |n, r| n.saturating_add(r.left))
    }

    /// How many times a rule was applied.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Limits every body, both directions, to `bytes_per_second` per connection (0: no limit).
    /// Applies to transfers already running too.
    pub fn throttle(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Every request seen so far (after a run, [`Relay::settle`] first when it matters that the
    /// last ones are in).
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn forget(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// Waits until every connection made so far has had its request recorded.
    pub fn settle(&self) {
        self.server.settle();
    }

    /// Whether a request with this method and a path containing `fragment` was seen.
    pub fn saw(&self, method: &str, fragment: &str) -> bool {
        self.seen().iter().any(|s| s.method == method && s.path.contains(fragment))
    }

    /// How many requests with this method (any, when empty) and a path containing `fragment` were
    /// seen.
    pub fn count(&self, method: &str, fragment: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| (method.is_empty() || s.method == method) && s.path.contains(fragment))
            .count()
    }

    /// The most body bytes relayed so far by one exchange with this method and a path containing
    /// `fragment` (0 when there is none): how far a transfer has got.
    pub fn relayed(&self, method: &str, fragment: &str) -> u64 {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(fragment))
            .map(|s| s.bytes.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0)
    }
}

/// How bytes are passed on: counted, paced, one of them damaged, cut short.
#[derive(Clone)]
struct Pipe {
    /// The relay's throttle, bytes per second (0: none).
    rate: Arc<AtomicU64>,
    /// One byte every so often instead.
    trickle: Option<Duration>,
    damage_at: Option<u64>,
    cut_after: Option<u64>,
    counted: Arc<AtomicU64>,
}

impl Pipe {
    /// Copies `prefix`, then `from` until it ends (or the cut), to `to`.
    fn copy<R: Read, W: Write>(
        &self,
        prefix: &[u8],
        from: &mut R,
        to: &mut W,
    ) -> std::io::Result<()> {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        let mut first = Some(prefix.to_vec()).filter(|p| !p.is_empty());
        while self.cut_after.is_none_or(|cut| sent < cut) {
            let mut chunk = match first.take() {
                Some(p) => p,
                None => {
                    let n = from.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf[..n].to_vec()
                }
            };
            if let Some(at) =
                self.damage_at.filter(|at| (sent..sent + chunk.len() as u64).contains(at))
            {
                // Letters stay printable (so that damaged JSON can stay valid JSON).
                chunk[(at - sent) as usize] ^= 0x55;
            }
            if let Some(cut) = self.cut_after {
                chunk.truncate(chunk.len().min((cut - sent) as usize));
            }
            // Small writes when paced, so that a slow transfer is steady, not bursty.
            for part in chunk.chunks(if self.trickle.is_some() { 1 } else { 4096 }) {
                to.write_all(part)?;
                sent += part.len() as u64;
                self.counted.fetch_add(part.len() as u64, Ordering::SeqCst);
                if let Some(every) = self.trickle {
                    to.flush()?;
                    std::thread::sleep(every);
                    continue;
                }
                let rate = self.rate.load(Ordering::SeqCst);
                if rate > 0 {
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        std::thread::sleep(due - elapsed);
                    }
                }
            }
            to.flush()?;
        }
        Ok(())
    }
}

fn serve<B: Behaviour>(
    client: TcpStream,
    mut pending: Pending,
    shared: &Shared<B>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(IDLE_LIMIT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let Some((first, headers)) = read_head(&mut reader)? else { return Ok(()) };
    let mut parts = first.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    if settled(&target, &mut pending, &mut client_w) {
        return Ok(());
    }
    let bytes = Arc::new(AtomicU64::new(0));
    if method == "CONNECT" {
        let seen =
            Seen { method, path: target, headers, as_forward_proxy: true, applied: None, bytes };
        shared.seen.lock().unwrap().push(seen);
        pending.done();
        return tunnel(reader, client_w, shared.upstream);
    }
    // Absolute-form (a client using the relay as HTTP_PROXY): keep only the path.
    let (path, as_forward_proxy) = match target.strip_prefix("http://") {
        Some(rest) => {
            (rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into()), true)
        }
        None => (target, false),
    };
    let mut seen = Seen { method, path, headers, as_forward_proxy, applied: None, bytes };
    let plan = {
        let mut rules = shared.rules.lock().unwrap();
        let hit = rules
            .iter_mut()
            .find(|r| r.left > 0 && r.when.matches(&seen.method, &seen.path, &seen.headers));
        hit.map(|r| {
            r.left -= 1;
            shared.fired.fetch_add(1, Ordering::SeqCst);
            seen.applied = Some(r.behaviour.describe());
            r.behaviour.plan(&seen)
        })
    };
    shared.seen.lock().unwrap().push(seen.clone());
    pending.done();
    let vars = Vars {
        path: seen.path.clone(),
        authorization: seen.header("authorization").unwrap_or_default().to_string(),
    };
    match plan.unwrap_or(Plan::Forward(Forwarding::default())) {
        Plan::Respond(canned) => {
            drain_request_body(&mut reader, &seen.headers)?;
            let sent = canned.send(&mut client_w, &seen.method, &vars);
            let _ = client_w.shutdown(Shutdown::Both);
            sent
        }
        Plan::Close => {
            drain_request_body(&mut reader, &seen.headers)?;
            let _ = client_w.shutdown(Shutdown::Both);
            Ok(())
        }
        Plan::Forward(how) => forward(reader, client_w, &seen, &version, &vars, how, shared),
    }
}

/// Relays a CONNECT tunnel to the upstream, bytes as they are, both ways.
fn tunnel(
    reader: BufReader<TcpStream>,
    mut client_w: TcpStream,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    let upstream = TcpStream::connect(upstream)?;
    client_w.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    // Bytes the reader already buffered belong to the tunnel.
    let mut up_w = upstream.try_clone()?;
    up_w.write_all(reader.buffer())?;
    let mut up_r = upstream;
    let mut cl_r = reader.into_inner();
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut cl_r, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut up_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = t.join();
    Ok(())
}

/// Forwards one exchange to the upstream, altered as `how` says: the request body streams on a
/// thread of its own while the answer comes back.
fn forward<B>(
    reader: BufReader<TcpStream>,
    mut client_w: TcpStream,
    seen: &Seen,
    version: &str,
    vars: &Vars,
    how: Forwarding,
    shared: &Shared<B>,
) -> std::io::Result<()> {
    if let Some(d) = how.delay {
        std::thread::sleep(d);
    }
    let upstream = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
        Ok(u) => u,
        Err(_) => {
            // The registry is gone: the client sees its connection closed, as with a dead server.
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    upstream.set_read_timeout(Some(IDLE_LIMIT))?;
    let mut up_w = upstream.try_clone()?;
    let path = how.path.as_deref().unwrap_or(&seen.path);
    up_w.write_all(&head_bytes(
        &format!("{} {path} {version}", seen.method),
        &without(&seen.headers, &["proxy-authorization"]),
    ))?;
    let pipe = Pipe {
        rate: shared.rate.clone(),
        trickle: None,
        damage_at: how.damage_request_at,
        cut_after: None,
        counted: seen.bytes.clone(),
    };
    let up_thread = {
        let buffered = reader.buffer().to_vec();
        let mut client_r = reader.into_inner();
        let pipe = pipe.clone();
        std::thread::spawn(move || {
            let _ = pipe.copy(&buffered, &mut client_r, &mut up_w);
            let _ = up_w.shutdown(Shutdown::Write);
        })
    };
    let pipe = Pipe {
        trickle: how.trickle,
        damage_at: how.damage_answer_at,
        cut_after: how.cut_answer_after,
        ..pipe
    };
    let mut up_r = BufReader::new(upstream);
    let result = (|| -> std::io::Result<()> {
        let Some((status_line, mut headers)) = read_head(&mut up_r)? else { return Ok(()) };
        for (n, v) in &how.set_headers {
            headers.retain(|(x, _)| !x.eq_ignore_ascii_case(n));
            headers.push((n.clone(), vars.expand(v)));
        }
        if let Some(edit) = &how.edit_headers {
            edit(&mut headers, seen);
        }
        let chunked = matches!(framing(&headers, false), Framing::Chunked);
        if chunked && (pipe.damage_at.is_some() || pipe.cut_after.is_some()) {
            // Offsets are the body's, not the chunked framing's: the body is sent on with its length.
            let mut body = Vec::new();
            copy_body(&mut up_r, Framing::Chunked, &mut body, MAX_HELD_BODY)?;
            headers = without(&headers, &["transfer-encoding", "content-length"]);
            headers.push(("Content-Length".into(), body.len().to_string()));
            client_w.write_all(&head_bytes(&status_line, &headers))?;
            return pipe.copy(&body, &mut std::io::empty(), &mut client_w);
        }
        client_w.write_all(&head_bytes(&status_line, &headers))?;
        let rest = up_r.buffer().to_vec();
        let mut inner = up_r.get_ref().try_clone()?;
        pipe.copy(&rest, &mut inner, &mut client_w)
    })();
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = up_r.get_ref().shutdown(Shutdown::Both);
    let _ = up_thread.join();
    result
}
