//! Messages between nodes: the ballot protocol, roster install and sweep listing, bootstrap.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::proof::{Link, Signed};
use super::record::LockRecord;
use super::roster::{NodeId, Roster, RosterId};

/// A ballot number. Unique per proposer: `round` comes from a per-node counter that is
/// persisted (a high-water mark) before use, and `proposer` is the node's random 64-bit
/// incarnation, which the roster refuses to hold twice. Ordered by round, then proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub proposer: u64,
}

impl Ballot {
    /// The ballot of a cluster's first roster, below every ballot a proposer can use.
    pub const BOOTSTRAP: Ballot = Ballot { round: 0, proposer: 0 };

    /// The same proposer's next round. A voter that accepts at a ballot promises its
    /// successor, so the proposer whose Accept a majority took may send the register's next
    /// value at the successor without a Prepare: no other ballot can come in between.
    pub fn successor(self) -> Ballot {
        Ballot { round: self.round.saturating_add(1), proposer: self.proposer }
    }
}

/// A register's name: the reserved roster register, or a lock scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    Roster,
    Scope(String),
}

/// A register's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Lock(LockRecord),
    Roster(Roster),
}

/// A value a voter accepted, with the ballot it accepted it at and the roster it had installed
/// then (voters accept only under the proposer's roster, so that is the ballot's roster).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedValue {
    pub ballot: Ballot,
    pub value: Value,
    pub roster: Option<RosterId>,
}

/// Why a voter refused a Prepare or Accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// It promised a higher ballot.
    Promised(Ballot),
    /// Its installed roster differs from the sender's (the envelope says which it has).
    RosterMismatch,
    /// It is not a voter of its installed roster.
    NotVoter,
    /// Too few voters vouch for the sender here (`vouch`): it may have been removed.
    Unvouched,
    /// The value removes nodes this voter vouched for lately: it accepts it once those vouches
    /// have run out, in `wait_us` (its clock). Send the Accept again then.
    Withdrawing { wait_us: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    Prepare { key: Key, ballot: Ballot },
    /// `age_us`: time on the voter's own clock since it accepted `accepted` (since its restart
    /// if that came later). Only a lower bound of true time after drift correction.
    Promise { key: Key, ballot: Ballot, accepted: Option<AcceptedValue>, age_us: u64 },
    Accept { key: Key, ballot: Ballot, value: Value },
    /// `signed`: for a roster value, the voter's signature over it (`proof::statement`).
    Accepted { key: Key, ballot: Ballot, signed: Option<Signed> },
    Refuse { key: Key, ballot: Ballot, why: Refusal },
    /// These rosters are chosen, each proven from the one before (the first from the cluster's
    /// first roster): install those newer than yours, in order.
    Commit { links: Vec<Link> },
    /// Send me the links of your chain after the roster I have installed (`have`: its version
    /// and whether its sweep is recorded; `None`: from the first roster), as a `Commit`.
    RosterPull { have: Option<(u64, bool)> },
    /// Sweep: list the scopes you hold after `after`, in order, one page of them (only
    /// answered under the same installed roster).
    ListKeys { sweep: u64, after: Option<String> },
    /// A page of the scopes a voter holds after `after` (`more`: there are further ones past
    /// the last), and the highest ballot round it has seen (hence promised).
    KeyList { sweep: u64, after: Option<String>, keys: Vec<String>, more: bool, max_round: u64 },
    /// Bootstrap: acknowledge this first roster (each node acknowledges at most one).
    BootstrapOffer { roster: Roster },
    /// `signed`: the acknowledging voter's signature over the offered roster, at
    /// `Ballot::BOOTSTRAP` under the roster itself.
    BootstrapAck { roster: RosterId, signed: Signed },
    /// Vouch for the members of our roster (`at`: when the asker sent this, its clock).
    VouchAsk { at: u64 },
    /// For `vouch_us` from the ask sent at `at`, this voter accepts no roster that removes a
    /// member of the roster both have installed, except those it `withholds` its vouch from.
    Vouch { at: u64, withholds: Vec<NodeId> },
    /// Remove me from the roster (a graceful leave): the receiving voter proposes it.
    Leave,
}

/// A message with its routing and the sender's installed roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub roster: Option<RosterId>,
    pub body: Body,
}
