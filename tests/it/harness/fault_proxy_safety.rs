//! Damaged bytes, for the failure-safety tests: a [`Relay`] whose rules alter one byte of a
//! request's or an answer's body. The tests also throttle it ([`Relay::throttle`]), so that a
//! transfer is reliably in flight when they kill the registry or interrupt the client, and read how
//! far a transfer has got ([`Relay::relayed`]).

use super::relay::{Behaviour, Forwarding, Match, Plan, Relay, Seen};

/// A relay damaging bytes.
pub type SafetyProxy = Relay<Damage>;

/// Which body a damage applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The answer's body (downloads).
    Response,
    /// The request's body (uploads).
    Request,
}

/// The byte at body offset `at` altered, in one direction.
#[derive(Clone, Debug)]
pub struct Damage {
    direction: Direction,
    at: u64,
}

impl Behaviour for Damage {
    fn plan(&self, _: &Seen) -> Plan {
        let at = Some(self.at);
        Plan::Forward(match self.direction {
            Direction::Request => Forwarding { damage_request_at: at, ..Forwarding::default() },
            Direction::Response => Forwarding { damage_answer_at: at, ..Forwarding::default() },
        })
    }
}

impl SafetyProxy {
    /// Alters the byte at body offset `at` of the next `times` exchanges whose method is `method`
    /// and whose path (with query) contains `path_contains`, in the given direction.
    pub fn corrupt(
        &self,
        method: &str,
        path_contains: &str,
        direction: Direction,
        at: u64,
        times: usize,
    ) {
        self.inject(Match::method(method).path(path_contains), Damage { direction, at }, times);
    }
}
