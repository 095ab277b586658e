//! What a node keeps on disk, and the writes that change it.
//!
//! The runtime stores these (redb); the simulator keeps them in a fake disk that a crash
//! rolls back to the last sync. `Durable::apply` is the one definition of what a write means.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::acceptor::Slot;
use super::message::Key;
use super::proof::Link;
use super::roster::{Roster, RosterId};

/// A change to durable state. A batch of them is persisted before the messages and replies
/// produced with it are released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// A register's promise and accepted value.
    Slot(Key, Slot),
    /// A roster installed (known to be chosen), with its proof: appended to the chain.
    Link(Link),
    /// Ballot rounds up to this one may have been used; after a restart, use higher ones.
    RoundReserved(u64),
    /// The first roster this node acknowledged in bootstrap (at most one, ever).
    BootstrapAck(RosterId),
}

/// A node's durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    /// Every roster installed, each with its proof, from the cluster's first: the last is the
    /// installed one.
    pub chain: Vec<Link>,
    pub round_reserved: u64,
    pub bootstrap_ack: Option<RosterId>,
    pub slots: BTreeMap<Key, Slot>,
}

impl Durable {
    /// The installed roster.
    pub fn roster(&self) -> Option<&Roster> {
        self.chain.last().map(|link| &link.roster)
    }

    pub fn apply(&mut self, write: Write) {
        match write {
            Write::Slot(key, slot) => {
                self.slots.insert(key, slot);
            }
            Write::Link(link) => self.chain.push(link),
            Write::RoundReserved(round) => self.round_reserved = self.round_reserved.max(round),
            Write::BootstrapAck(id) => self.bootstrap_ack = Some(id),
        }
    }
}
