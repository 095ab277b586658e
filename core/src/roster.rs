//! The voter roster: which (name, incarnation) pairs vote, identified by (version, digest).
//!
//! The roster is itself the value of a reserved register (`Key::Roster`), changed by ballots
//! one member at a time. A node *installs* a roster only once it is known to be chosen.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::quorum;

/// A node's identity: its name and the random incarnation made with its data directory.
/// A wiped or restored data directory is a new incarnation, hence a different voter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub incarnation: u64,
}

impl NodeId {
    pub fn new(name: impl Into<String>, incarnation: u64) -> NodeId {
        NodeId { name: name.into(), incarnation }
    }
}

impl core::fmt::Display for NodeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}#{:016x}", self.name, self.incarnation)
    }
}

/// What every message carries to say which roster its sender has installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RosterId {
    pub version: u64,
    pub digest: u64,
}

/// A voter set. `sweep_done` records that every scope has been rewritten under this roster,
/// which the next change requires; `round_floor` is above every ballot round ever promised
/// under earlier rosters, and every later ballot must be above it (see docs/PROTOCOL.md,
/// "Roster changes"). Neither is part of the roster's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Digest of the first roster; checked in every handshake so two clusters never mix.
    pub cluster_id: u64,
    pub version: u64,
    /// Sorted by name, names unique.
    pub voters: Vec<NodeId>,
    pub sweep_done: bool,
    pub round_floor: u64,
}

/// A proposed change of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RosterChange {
    Add(NodeId),
    Remove(NodeId),
}

/// Why a roster change cannot be applied to a roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeError {
    /// The named node is already a voter (with this or another incarnation).
    AlreadyVoter,
    /// The node is not a voter.
    NotVoter,
    /// Removing the last voter would leave nobody to decide anything.
    LastVoter,
}

impl Roster {
    /// The first roster of a new cluster: its identity is derived from its voters, so that two
    /// nodes proposing the same bootstrap set propose the same roster.
    pub fn first(mut voters: Vec<NodeId>) -> Roster {
        voters.sort();
        voters.dedup_by(|a, b| a.name == b.name);
        let cluster_id = digest_voters(0, 0, &voters);
        Roster { cluster_id, version: 1, voters, sweep_done: true, round_floor: 0 }
    }

    pub fn id(&self) -> RosterId {
        RosterId { version: self.version, digest: digest_voters(self.cluster_id, self.version, &self.voters) }
    }

    pub fn majority(&self) -> usize {
        quorum::majority(self.voters.len())
    }

    pub fn contains(&self, node: &NodeId) -> bool {
        self.voters.binary_search(node).is_ok()
    }

    /// Whether this roster shows `change` made: the node added is a voter, the one removed
    /// is not.
    pub fn shows(&self, change: &RosterChange) -> bool {
        match change {
            RosterChange::Add(node) => self.contains(node),
            RosterChange::Remove(node) => !self.contains(node),
        }
    }

    /// The roster after `change`, one version later and not yet swept.
    pub fn changed(&self, change: &RosterChange) -> Result<Roster, ChangeError> {
        let mut voters = self.voters.clone();
        match change {
            RosterChange::Add(node) => {
                if voters.iter().any(|v| v.name == node.name) {
                    return Err(ChangeError::AlreadyVoter);
                }
                voters.push(node.clone());
                voters.sort();
            }
            RosterChange::Remove(node) => {
                let Some(at) = voters.iter().position(|v| v == node) else {
                    return Err(ChangeError::NotVoter);
                };
                if voters.len() == 1 {
                    return Err(ChangeError::LastVoter);
                }
                voters.remove(at);
            }
        }
        Ok(Roster { version: self.version.saturating_add(1), voters, sweep_done: false, ..self.clone() })
    }
}

/// FNV-1a over the roster's identity. Not cryptographic: it only tells rosters of one cluster
/// apart, and every peer is authenticated by the cluster CA before its messages are read.
fn digest_voters(cluster_id: u64, version: u64, voters: &[NodeId]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&cluster_id.to_le_bytes());
    eat(&version.to_le_bytes());
    for voter in voters {
        eat(&(voter.name.len() as u64).to_le_bytes());
        eat(voter.name.as_bytes());
        eat(&voter.incarnation.to_le_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().enumerate().map(|(i, n)| NodeId::new(*n, i as u64 + 1)).collect()
    }

    #[test]
    fn first_roster_is_the_same_for_the_same_set_in_any_order() {
        let a = Roster::first(ids(&["a", "b", "c"]));
        let mut reversed = ids(&["a", "b", "c"]);
        reversed.reverse();
        assert_eq!(a, Roster::first(reversed));
        assert_ne!(a.id(), Roster::first(ids(&["a", "b", "d"])).id());
    }

    #[test]
    fn changes_are_one_member_and_one_version() {
        let r = Roster::first(ids(&["a", "b", "c"]));
        let added = r.changed(&RosterChange::Add(NodeId::new("d", 9))).unwrap();
        assert_eq!(added.version, 2);
        assert_eq!(added.voters.len(), 4);
        assert!(!added.sweep_done);
        assert_ne!(added.id(), r.id());
        assert_eq!(r.changed(&RosterChange::Add(NodeId::new("a", 77))), Err(ChangeError::AlreadyVoter));
        assert_eq!(r.changed(&RosterChange::Remove(NodeId::new("a", 77))), Err(ChangeError::NotVoter));
        let one = Roster::first(ids(&["a"]));
        assert_eq!(one.changed(&RosterChange::Remove(NodeId::new("a", 1))), Err(ChangeError::LastVoter));
    }

    #[test]
    fn sweep_flag_does_not_change_identity() {
        let mut r = Roster::first(ids(&["a", "b"])).changed(&RosterChange::Add(NodeId::new("c", 5))).unwrap();
        let before = r.id();
        r.sweep_done = true;
        assert_eq!(before, r.id());
    }
}
