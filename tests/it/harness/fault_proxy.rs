//! A flaky network or registry: a [`Relay`] whose rules are faults, each applied to requests
//! matching a [`Match`] a given number of times: error statuses (503, 429 with `Retry-After`...),
//! connections closed mid-body, connections closed without an answer, and delays. As every relay it
//! records each request and also works as a forward proxy (`HTTP_PROXY`, `HTTPS_PROXY`).
//!
//! ```ignore
//! let proxy = FaultProxy::start(&registry.host());
//! proxy.inject(Match::method("GET").path("/blobs/"), Fault::cut_body(100), 2);
//! proxy.inject(Match::any(), Fault::too_many_requests("1"), 1);
//! // ... run the client against proxy.host() ...
//! assert_eq!(proxy.fired(), 3);
//! ```

use super::relay::{Behaviour, Canned, Forwarding, Plan, Relay, Seen};
use std::time::Duration;

/// A relay injecting [`Fault`]s.
pub type FaultProxy = Relay<Fault>;

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this instead of forwarding.
    Answer(Canned),
    /// Forward, then close the connection after `after` bytes of the answer's body.
    CutBody {
        /// Body bytes relayed before the connection is closed.
        after: u64,
    },
    /// Close the connection without answering (after reading the request).
    Close,
    /// Wait, then forward.
    Delay(Duration),
}

impl Fault {
    /// A status with a Distribution-style error body.
    pub fn status(code: u16) -> Fault {
        Fault::Answer(Canned::json(
            code,
            format!(
                r#"{{"errors":[{{"code":"INJECTED","message":"fault injected by the test proxy ({code})"}}]}}"#
            ),
        ))
    }

    /// 503 Service Unavailable.
    pub fn unavailable() -> Fault {
        Fault::status(503)
    }

    /// 429 Too Many Requests with `Retry-After: <retry_after>` (seconds or an HTTP date).
    pub fn too_many_requests(retry_after: &str) -> Fault {
        match Fault::status(429) {
            Fault::Answer(c) => Fault::Answer(c.header("Retry-After", retry_after)),
            other => other,
        }
    }

    /// Close the connection after `after` bytes of the answer's body.
    pub fn cut_body(after: u64) -> Fault {
        Fault::CutBody { after }
    }
}

impl Behaviour for Fault {
    fn plan(&self, _: &Seen) -> Plan {
        match self {
            Fault::Answer(c) => Plan::Respond(c.clone()),
            Fault::CutBody { after } => Plan::Forward(Forwarding {
                cut_answer_after: Some(*after),
                ..Forwarding::default()
            }),
            Fault::Close => Plan::Close,
            Fault::Delay(d) => {
                Plan::Forward(Forwarding { delay: Some(*d), ..Forwarding::default() })
            }
        }
    }
}
