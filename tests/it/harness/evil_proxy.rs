//! A hostile registry for the tests: a [`Relay`] in front of one real, plain-HTTP registry that
//! rewrites what the registry answers, and a "bystander" server on another origin that records
//! whatever reaches it.
//!
//! The relay forwards each request unchanged (the `Authorization` header included, so that a
//! registry that wants credentials still works through it) unless a rule matches; a rule can
//! - replace the answer wholesale ([`Canned`]: status, headers, body), the body possibly generated
//!   while it is sent (hundreds of MB of a repeated pattern, never held in memory);
//! - add or replace headers of the real answer (`Link`, `Location`, `WWW-Authenticate`...);
//! - trickle the real answer's body, one byte every so often;
//! - alter one byte of the real answer's body.
//!
//! ```ignore
//! let proxy = EvilProxy::start(&registry.host());
//! proxy.always(Match::method("GET").path("/tags/list"), Action::SetHeaders(vec![link]));
//! let bystander = Bystander::start(Answer::NotFound);
//! // ... run oras against proxy.host() ...
//! bystander.settle();
//! assert!(bystander.seen().is_empty());
//! ```

use super::relay::{
    self, drain_request_body, read_head, settled, Behaviour, Canned, Forwarding, Headers, Pending,
    Plan, Relay, Seen, Server, Vars,
};
use std::io::BufReader;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A relay applying [`Action`]s.
pub type EvilProxy = Relay<Action>;

/// What the relay does to a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer this instead of forwarding (the request never reaches the registry).
    Respond(Canned),
    /// Forward, then add or replace these headers of the answer (values may name `{path}`).
    SetHeaders(Headers),
    /// Forward, then send the answer's body one byte at a time, this far apart.
    Trickle(Duration),
    /// Forward, then alter the answer's body byte at this offset.
    FlipByte(u64),
}

impl Behaviour for Action {
    fn plan(&self, _: &Seen) -> Plan {
        match self {
            Action::Respond(c) => Plan::Respond(c.clone()),
            Action::SetHeaders(h) => {
                Plan::Forward(Forwarding { set_headers: h.clone(), ..Forwarding::default() })
            }
            Action::Trickle(every) => {
                Plan::Forward(Forwarding { trickle: Some(*every), ..Forwarding::default() })
            }
            Action::FlipByte(at) => {
                Plan::Forward(Forwarding { damage_answer_at: Some(*at), ..Forwarding::default() })
            }
        }
    }

    /// Without a canned answer's body, possibly huge.
    fn describe(&self) -> String {
        match self {
            Action::Respond(c) => format!("Respond({} {:?})", c.status, c.headers),
            other => format!("{other:?}"),
        }
    }
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
    /// Origin-form path and query, as sent.
    pub path: String,
    /// Request headers as sent.
    pub headers: Headers,
}

impl Received {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        relay::header(&self.headers, name)
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

    /// The bystander's port.
    pub fn port(&self) -> u16 {
        self.server.port()
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
    let path = first.split(' ').nth(1).unwrap_or("").to_string();
    if settled(&path, &mut pending, &mut w) {
        return Ok(());
    }
    connections.fetch_add(1, Ordering::SeqCst);
    received.lock().unwrap().push(Received { path, headers: headers.clone() });
    pending.done();
    // Drain the body (an upload sent here), then answer.
    let _ = drain_request_body(&mut reader, &headers);
    let out = match answer {
        Answer::NotFound => {
            Canned::json(404, r#"{"errors":[{"code":"NAME_UNKNOWN","message":"nothing here"}]}"#)
        }
        Answer::AskForBasicAuth => Canned::json(
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
        .header("WWW-Authenticate", r#"Basic realm="bystander""#),
    };
    out.send(&mut w, "GET", &Vars::default())?;
    let _ = w.shutdown(Shutdown::Both);
    Ok(())
}
