//! A hostile registry for the tests: a loopback HTTP/1.1 relay in front of one real, plain-HTTP
//! registry that rewrites what the registry answers, and a "bystander" server on another origin
//! that records whatever reaches it.
//!
//! The relay forwards each request unchanged (the `Authorization` header included, so that a
//! registry that wants credentials still works through it) unless a rule matches; a rule can
//! - replace the answer wholesale (status, headers, body), the body possibly generated while it
//!   is sent (hundreds of MB of a repeated pattern, never held in memory) or sent one byte at a
//!   time;
//! - add or replace headers of the real answer (`Link`, `Location`, `WWW-Authenticate`...);
//! - trickle the real answer's body, one byte every so often;
//! - flip one byte of the real answer's body.
//!
//! Header values and canned bodies may name `{path}` (the request's path and query) and
//! `{authorization}` (the request's `Authorization` value), so that an answer can point at the
//! very URL that was asked for, or echo the credentials it was sent as a careless registry does.
//!
//! One exchange per connection (`Connection: close`), every request recorded. Traffic only ever
//! goes to the loopback upstream given at start.
//!
//! ```ignore
//! let proxy = EvilProxy::start(&registry.host());
//! proxy.always(Match::method("GET").path("/tags/list"), Action::SetHeaders(vec![link]));
//! let bystander = Bystander::start(Answer::NotFound);
//! // ... run oras against proxy.host() ...
//! bystander.settle();
//! assert!(bystander.seen().is_empty());
//! ```

#![allow(dead_code)]

use crate::harness::fault_proxy::{head_bytes, read_head, Headers};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of the request that [`EvilProxy::settle`] and [`Bystander::settle`] send themselves.
const SETTLE_PATH: &str = "/__settle__";

/// Bodies a relay reads into memory (request bodies, real answers it alters) may not exceed this.
const MAX_HELD_BODY: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Loopback servers that know when every connection they accepted has been recorded.

/// Counts a connection from its accept until its request is recorded (or it ends without one).
struct Pending {
    count: Arc<AtomicUsize>,
    done: bool,
}

impl Pending {
    /// The request was recorded (or there will be none).
    fn done(&mut self) {
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
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Connections accepted whose request is not recorded yet.
    unrecorded: Arc<AtomicUsize>,
}

impl Server {
    /// Listens on a free loopback port, handing each connection (and its [`Pending`]) to `handle`.
    fn start<F>(handle: F) -> Server
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

    /// Returns once every connection accepted so far has had its request recorded: a request of
    /// our own is accepted after all earlier connections (the listen queue is FIFO), so once it is
    /// answered they have all been counted; then wait for their handlers (bounded).
    fn settle(&self) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to settle");
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn.write_all(format!("GET {SETTLE_PATH} HTTP/1.1\r\nHost: settle\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 204"), "settle request not answered: {:?}", String::from_utf8_lossy(&answer));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.unrecorded.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "connections to port {} still not recorded after 10 s", self.port);
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

/// Answers a settle request (204, close).
fn answer_settle(mut w: TcpStream) {
    let _ = w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = w.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// Bodies.

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `headers` without those named in `names` (case-insensitive).
fn without(headers: &[(String, String)], names: &[&str]) -> Headers {
    headers.iter().filter(|(n, _)| !names.iter().any(|x| n.eq_ignore_ascii_case(x))).cloned().collect()
}

/// How a message's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(headers: &[(String, String)], is_request: bool) -> Framing {
    if header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Framing::Chunked;
    }
    match header(headers, "content-length").and_then(|v| v.parse().ok()) {
        Some(n) => Framing::Length(n),
        // A request without a length has no body; an answer without one runs until the close.
        None if is_request => Framing::None,
        None => Framing::UntilClose,
    }
}

/// Reads a whole body (decoding chunked framing), refusing more than [`MAX_HELD_BODY`] bytes.
fn read_body<R: BufRead>(r: &mut R, framing: Framing) -> std::io::Result<Vec<u8>> {
    let too_big = || std::io::Error::other("body too large for the test relay");
    let mut out = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            if n > MAX_HELD_BODY as u64 {
                return Err(too_big());
            }
            (&mut *r).take(n).read_to_end(&mut out)?;
        }
        Framing::UntilClose => {
            (&mut *r).take(MAX_HELD_BODY as u64 + 1).read_to_end(&mut out)?;
            if out.len() > MAX_HELD_BODY {
                return Err(too_big());
            }
        }
        Framing::Chunked => loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                        return Ok(out);
                    }
                }
            }
            if out.len() + size > MAX_HELD_BODY {
                return Err(too_big());
            }
            let start = out.len();
            out.resize(start + size, 0);
            r.read_exact(&mut out[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        },
    }
    Ok(out)
}

/// What a canned answer's body is.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes (after `{path}`/`{authorization}` substitution).
    Bytes(Vec<u8>),
    /// `prefix`, then `pattern` repeated, `len` bytes in all, generated while it is sent.
    Generated { prefix: Vec<u8>, pattern: Vec<u8>, len: u64 },
}

/// An answer made up by the test.
#[derive(Clone, Debug)]
pub struct Canned {
    /// The HTTP status.
    pub status: u16,
    /// Headers sent as given (after substitution), plus the framing ones the relay adds.
    pub headers: Headers,
    pub body: Body,
    /// Send the body with chunked framing, announcing no length.
    pub chunked: bool,
    /// Send the body one byte at a time, this far apart.
    pub pace: Option<Duration>,
}

impl Canned {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: impl Into<String>) -> Canned {
        Canned {
            status,
            headers: vec![("Content-Type".into(), "application/json; charset=utf-8".into())],
            body: Body::Bytes(body.into().into_bytes()),
            chunked: false,
            pace: None,
        }
    }

    /// `status` with a body of any bytes and content type.
    pub fn bytes(status: u16, content_type: &str, body: &[u8]) -> Canned {
        Canned {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Bytes(body.to_vec()),
            chunked: false,
            pace: None,
        }
    }

    /// `status` with a body of `len` bytes: `prefix`, then `pattern` over and over.
    pub fn huge(status: u16, content_type: &str, prefix: &str, pattern: &str, len: u64) -> Canned {
        assert!(!pattern.is_empty() && prefix.len() as u64 <= len);
        Canned {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Generated { prefix: prefix.as_bytes().to_vec(), pattern: pattern.as_bytes().to_vec(), len },
            chunked: false,
            pace: None,
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

    /// The body sent one byte at a time, `every` apart.
    pub fn paced(mut self, every: Duration) -> Canned {
        self.pace = Some(every);
        self
    }
}

/// Writes `body`, one byte every `pace` when given; stops at the first write error (the client left).
fn send_paced<W: Write>(w: &mut W, body: &[u8], pace: Option<Duration>) -> std::io::Result<()> {
    match pace {
        None => w.write_all(body),
        Some(every) => {
            for b in body {
                w.write_all(std::slice::from_ref(b))?;
                w.flush()?;
                std::thread::sleep(every);
            }
            Ok(())
        }
    }
}

/// Sends a canned answer (the body generated on the fly for [`Body::Generated`]).
fn send_canned<W: Write>(w: &mut W, method: &str, c: &Canned, vars: &Vars) -> std::io::Result<()> {
    let mut headers: Headers = c.headers.iter().map(|(n, v)| (n.clone(), vars.expand(v))).collect();
    headers.push(("Docker-Distribution-Api-Version".into(), "registry/2.0".into()));
    let body = match &c.body {
        Body::Bytes(b) => Some(match std::str::from_utf8(b) {
            Ok(text) => vars.expand(text).into_bytes(),
            Err(_) => b.clone(),
        }),
        Body::Generated { .. } => None,
    };
    let len = match (&c.body, &body) {
        (_, Some(b)) => b.len() as u64,
        (Body::Generated { len, .. }, None) => *len,
        _ => unreachable!(),
    };
    if c.chunked {
        headers.push(("Transfer-Encoding".into(), "chunked".into()));
    } else {
        headers.push(("Content-Length".into(), len.to_string()));
    }
    w.write_all(&head_bytes(&format!("HTTP/1.1 {} {}", c.status, reason(c.status)), &headers))?;
    if method == "HEAD" {
        return Ok(());
    }
    // Pieces of the body, each sent as it is made (as one chunk when chunked).
    let piece = |w: &mut W, bytes: &[u8]| -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if c.chunked {
            w.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
            send_paced(w, bytes, c.pace)?;
            w.write_all(b"\r\n")
        } else {
            send_paced(w, bytes, c.pace)
        }
    };
    match (&c.body, body) {
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
    if c.chunked {
        w.write_all(b"0\r\n\r\n")?;
    }
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// What `{path}` and `{authorization}` stand for in one exchange.
struct Vars {
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

    /// ... whose path (with query) contains `fragment` (each `path` call adds one that must be there).
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

/// What the relay does to a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer this instead of forwarding (the request never reaches the registry).
    Respond(Canned),
    /// Forward, then add or replace these headers of the answer (values may name `{path}`).
    SetHeaders(Headers),
    /// Forward, then send the answer's body one byte at a time, this far apart.
    Trickle(Duration),
    /// Forward, then flip every bit of the answer's body byte at this offset.
    FlipByte(u64),
}

/// A request the relay saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request method.
    pub method: String,
    /// Origin-form path and query, as sent.
    pub path: String,
    /// Request headers as sent.
    pub headers: Headers,
    /// The action applied, if any (its `Debug` form, abridged).
    pub action: Option<String>,
}

impl Seen {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

struct Rule {
    when: Match,
    action: Action,
    left: usize,
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    fired: AtomicUsize,
}

/// A running relay; stops accepting when dropped.
pub struct EvilProxy {
    shared: Arc<Shared>,
    server: Server,
}

impl EvilProxy {
    /// Starts on a free loopback port in front of `upstream` (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> EvilProxy {
        let upstream = upstream.to_socket_addrs().expect("upstream address").next().expect("upstream address");
        assert!(upstream.ip().is_loopback(), "the evil proxy only forwards to loopback addresses");
        let shared = Arc::new(Shared { upstream, rules: Mutex::new(Vec::new()), seen: Mutex::new(Vec::new()), fired: AtomicUsize::new(0) });
        let sh = shared.clone();
        let server = Server::start(move |conn, pending| {
            let _ = relay(conn, pending, &sh);
        });
        EvilProxy { shared, server }
    }

    /// `127.0.0.1:PORT`, to use as the registry host.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Applies `action` to the next `times` requests matching `when` (rules are checked in the
    /// order they were added; a used-up rule no longer matches).
    pub fn inject(&self, when: Match, action: Action, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule { when, action, left: times });
    }

    /// Applies `action` to every request matching `when` (retries included).
    pub fn always(&self, when: Match, action: Action) {
        self.inject(when, action, usize::MAX);
    }

    /// Removes every rule: from now on everything is relayed unchanged.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every request seen so far (call [`EvilProxy::settle`] first after a run).
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many times a rule was applied.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits until every connection made so far has had its request recorded.
    pub fn settle(&self) {
        self.server.settle();
    }
}

/// `Debug` of an action without its (possibly huge) body.
fn describe(action: &Action) -> String {
    match action {
        Action::Respond(c) => format!("Respond({} {:?})", c.status, c.headers),
        other => format!("{other:?}"),
    }
}

fn relay(client: TcpStream, mut pending: Pending, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let Some((first, headers)) = read_head(&mut reader)? else { return Ok(()) };
    let mut parts = first.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    if path == SETTLE_PATH {
        pending.done();
        answer_settle(client_w);
        return Ok(());
    }
    let action = {
        let mut rules = shared.rules.lock().unwrap();
        rules.iter_mut().find(|r| r.left > 0 && r.when.matches(&method, &path, &headers)).map(|r| {
            r.left = r.left.saturating_sub(1);
            r.action.clone()
        })
    };
    if action.is_some() {
        shared.fired.fetch_add(1, Ordering::SeqCst);
    }
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        action: action.as_ref().map(describe),
    });
    pending.done();
    let vars = Vars { path: path.clone(), authorization: header(&headers, "authorization").unwrap_or("").to_string() };
    let body = read_body(&mut reader, framing(&headers, true))?;

    if let Some(Action::Respond(canned)) = &action {
        let r = send_canned(&mut client_w, &method, canned, &vars);
        let _ = client_w.shutdown(Shutdown::Both);
        return r;
    }

    // Forward, one request per connection, the body re-framed with its length.
    let upstream = TcpStream::connect(shared.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut up_w = upstream.try_clone()?;
    let mut fwd = without(&headers, &["proxy-authorization", "transfer-encoding", "content-length"]);
    if !body.is_empty() || header(&headers, "content-length").is_some() || header(&headers, "transfer-encoding").is_some() {
        fwd.push(("Content-Length".into(), body.len().to_string()));
    }
    up_w.write_all(&head_bytes(&first, &fwd))?;
    up_w.write_all(&body)?;
    up_w.flush()?;

    let mut up_r = BufReader::new(upstream);
    let Some((status_line, mut resp_headers)) = read_head(&mut up_r)? else {
        let _ = client_w.shutdown(Shutdown::Both);
        return Ok(());
    };
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let bodiless = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    match action {
        Some(Action::SetHeaders(set)) => {
            for (n, v) in set {
                resp_headers.retain(|(x, _)| !x.eq_ignore_ascii_case(&n));
                resp_headers.push((n, vars.expand(&v)));
            }
            client_w.write_all(&head_bytes(&status_line, &resp_headers))?;
            std::io::copy(&mut up_r, &mut client_w)?;
        }
        Some(Action::Trickle(every)) if !bodiless => {
            let body = read_body(&mut up_r, framing(&resp_headers, false))?;
            let mut h = without(&resp_headers, &["transfer-encoding", "content-length"]);
            h.push(("Content-Length".into(), body.len().to_string()));
            client_w.write_all(&head_bytes(&status_line, &h))?;
            send_paced(&mut client_w, &body, Some(every))?;
        }
        Some(Action::FlipByte(at)) if !bodiless => {
            let mut body = read_body(&mut up_r, framing(&resp_headers, false))?;
            if let Some(b) = body.get_mut(at as usize) {
                *b ^= 0xff;
            }
            let mut h = without(&resp_headers, &["transfer-encoding", "content-length"]);
            h.push(("Content-Length".into(), body.len().to_string()));
            client_w.write_all(&head_bytes(&status_line, &h))?;
            client_w.write_all(&body)?;
        }
        _ => {
            client_w.write_all(&head_bytes(&status_line, &resp_headers))?;
            std::io::copy(&mut up_r, &mut client_w)?;
        }
    }
    client_w.flush()?;
    let _ = client_w.shutdown(Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bystander.

/// What the bystander answers every request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 404 with a Distribution-style error: harmless.
    NotFound,
    /// 401 with `WWW-Authenticate: Basic realm="bystander"`: an origin fishing for credentials.
    AskForBasicAuth,
}

/// A request the bystander received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request method.
    pub method: String,
    /// Origin-form path and query, as sent.
    pub path: String,
    /// Request headers as sent.
    pub headers: Headers,
}

impl Received {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A loopback server on an origin of its own (another port) that records every request it gets,
/// with its headers, and answers something that moves nobody forward.
pub struct Bystander {
    received: Arc<Mutex<Vec<Received>>>,
    /// Connections accepted, requests or not.
    connections: Arc<AtomicUsize>,
    server: Server,
}

impl Bystander {
    /// Starts on a free loopback port, answering every request as `answer` says.
    pub fn start(answer: Answer) -> Bystander {
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (rec, conns) = (received.clone(), connections.clone());
        let server = Server::start(move |conn, pending| {
            let _ = serve_bystander(conn, pending, answer, &rec, &conns);
        });
        Bystander { received, connections, server }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// The bystander's port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Every request received so far (call [`Bystander::settle`] first after a run).
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Connections accepted so far, whether a request came on them or not.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until every connection made so far has had its request (if any) recorded.
    pub fn settle(&self) {
        self.server.settle();
    }
}

fn serve_bystander(
    conn: TcpStream,
    mut pending: Pending,
    answer: Answer,
    received: &Mutex<Vec<Received>>,
    connections: &AtomicUsize,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let head = read_head(&mut reader);
    let Ok(Some((first, headers))) = head else {
        connections.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    };
    let mut parts = first.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    if path == SETTLE_PATH {
        pending.done();
        answer_settle(w);
        return Ok(());
    }
    connections.fetch_add(1, Ordering::SeqCst);
    received.lock().unwrap().push(Received { method, path, headers: headers.clone() });
    pending.done();
    // Drain the body (an upload sent here), then answer.
    let _ = read_body(&mut reader, framing(&headers, true));
    let out = match answer {
        Answer::NotFound => Canned::json(404, r#"{"errors":[{"code":"NAME_UNKNOWN","message":"nothing here"}]}"#),
        Answer::AskForBasicAuth => Canned::json(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
            .header("WWW-Authenticate", r#"Basic realm="bystander""#),
    };
    let vars = Vars { path: String::new(), authorization: String::new() };
    send_canned(&mut w, "GET", &out, &vars)?;
    let _ = w.shutdown(Shutdown::Both);
    Ok(())
}
