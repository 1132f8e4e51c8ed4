//! A loopback relay in front of one plain-HTTP upstream (a registry) for the failure-safety
//! tests, with what `fault_proxy.rs` does not do: bandwidth throttling (so that a transfer is
//! reliably in flight when the test kills the registry or interrupts the client) and byte
//! corruption of response or request bodies. One exchange per connection (`Connection: close`);
//! every request is recorded. Traffic only ever goes to the loopback upstream given at start.

#![allow(dead_code)]

use crate::harness::fault_proxy::{head_bytes, read_head, serve_loopback, Listening};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a corruption applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The response body (downloads).
    Response,
    /// The request body (uploads).
    Request,
}

struct Rule {
    method: String,
    path_contains: String,
    direction: Direction,
    /// Body offset of the byte to flip.
    at: u64,
    left: usize,
}

/// A request the relay saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Whether a corruption was applied to this exchange.
    pub corrupted: bool,
    /// Body bytes relayed so far, both directions.
    pub bytes: Arc<AtomicU64>,
}

struct Shared {
    upstream: SocketAddr,
    /// Bytes per second per connection and direction; 0 means unlimited.
    rate: AtomicU64,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    fired: AtomicU64,
}

/// A running relay; stops accepting when dropped.
pub struct SafetyProxy {
    port: u16,
    shared: Arc<Shared>,
    _listening: Listening,
}

impl SafetyProxy {
    /// Starts on a free loopback port in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> SafetyProxy {
        let upstream = upstream.to_socket_addrs().expect("upstream address").next().expect("upstream address");
        assert!(upstream.ip().is_loopback(), "the relay only forwards to loopback addresses");
        let shared = Arc::new(Shared {
            upstream,
            rate: AtomicU64::new(0),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            fired: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let (port, listening) = serve_loopback(move |conn| {
            let _ = handle(conn, &sh);
        });
        SafetyProxy { port, shared, _listening: listening }
    }

    /// `127.0.0.1:PORT`, to use as the registry host.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Limits every body, both directions, to `bytes_per_second` per connection (0: no limit).
    /// Applies to transfers already running too.
    pub fn throttle(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Flips the byte at body offset `at` of the next `times` exchanges whose method is `method`
    /// and whose path (with query) contains `path_contains`, in the given direction.
    pub fn corrupt(&self, method: &str, path_contains: &str, direction: Direction, at: u64, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule {
            method: method.to_ascii_uppercase(),
            path_contains: path_contains.to_string(),
            direction,
            at,
            left: times,
        });
    }

    /// Removes every corruption rule.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn forget(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// How many corruptions were applied.
    pub fn fired(&self) -> u64 {
        self.shared.fired.load(Ordering::SeqCst)
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

    /// Whether a request with this method and a path containing `fragment` was seen.
    pub fn saw(&self, method: &str, fragment: &str) -> bool {
        self.seen().iter().any(|s| s.method == method && s.path.contains(fragment))
    }
}

/// Copies `from` to `to` (after `prefix`), flipping the byte at `corrupt_at` and pacing to the
/// shared rate. Returns when `from` ends or either side fails.
fn relay<R: Read, W: Write>(
    prefix: &[u8],
    from: &mut R,
    to: &mut W,
    corrupt_at: Option<u64>,
    shared: &Shared,
    counted: &AtomicU64,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = Some(prefix.to_vec()).filter(|p| !p.is_empty());
    loop {
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
        if let Some(at) = corrupt_at {
            if at >= sent && at < sent + chunk.len() as u64 {
                chunk[(at - sent) as usize] ^= 0x55;
            }
        }
        // Small writes when throttled, so that a slow transfer is steady, not bursty.
        for part in chunk.chunks(4096) {
            to.write_all(part)?;
            sent += part.len() as u64;
            counted.fetch_add(part.len() as u64, Ordering::SeqCst);
            let rate = shared.rate.load(Ordering::SeqCst);
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
}

fn handle(client: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let Some((first, headers)) = read_head(&mut reader)? else { return Ok(()) };
    let mut parts = first.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut corrupt_req, mut corrupt_resp) = (None, None);
    {
        let mut rules = shared.rules.lock().unwrap();
        if let Some(r) = rules.iter_mut().find(|r| r.left > 0 && r.method == method && path.contains(&r.path_contains)) {
            r.left -= 1;
            shared.fired.fetch_add(1, Ordering::SeqCst);
            match r.direction {
                Direction::Request => corrupt_req = Some(r.at),
                Direction::Response => corrupt_resp = Some(r.at),
            }
        }
    }
    let counted = Arc::new(AtomicU64::new(0));
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        corrupted: corrupt_req.is_some() || corrupt_resp.is_some(),
        bytes: counted.clone(),
    });
    let upstream = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
        Ok(u) => u,
        Err(_) => {
            // The registry is gone: the client sees its connection closed, as with a dead server.
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut up_w = upstream.try_clone()?;
    up_w.write_all(&head_bytes(&first, &headers))?;
    // Request body: whatever the reader already buffered, then the rest, on its own thread.
    let buffered = reader.buffer().to_vec();
    let mut client_r = reader.into_inner();
    let up_thread = {
        let shared = shared.clone();
        let counted = counted.clone();
        std::thread::spawn(move || {
            let _ = relay(&buffered, &mut client_r, &mut up_w, corrupt_req, &shared, &counted);
            let _ = up_w.shutdown(Shutdown::Write);
        })
    };
    let mut up_r = BufReader::new(upstream);
    let result = (|| -> std::io::Result<()> {
        let Some((status, resp_headers)) = read_head(&mut up_r)? else { return Ok(()) };
        client_w.write_all(&head_bytes(&status, &resp_headers))?;
        let rest = up_r.buffer().to_vec();
        let mut inner = up_r.get_ref().try_clone()?;
        relay(&rest, &mut inner, &mut client_w, corrupt_resp, shared.as_ref(), &counted)
    })();
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = up_r.get_ref().shutdown(Shutdown::Both);
    let _ = up_thread.join();
    result
}
