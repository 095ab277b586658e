//! The voter roster: which nodes (name, incarnation, certificate key) vote, identified by
//! (version, digest).
//!
//! The roster is itself the value of a reserved register (`Key::Roster`), changed by ballots
//! one member at a time. A node *installs* a roster only once it is known to be chosen.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::quorum;

/// The SHA-256 hash of a node certificate's public key (its DER SubjectPublicKeyInfo).
pub type KeyHash = [u8; 32];

/// A node's identity: its name, the random incarnation made with its data directory, and the
/// hash of its certificate's public key. A wiped or restored data directory is a new
/// incarnation, and a new key a new identity: either way a different voter. The runtime's
/// transport proves `name` and `key` of every peer message's sender (its TLS certificate);
/// the incarnation is its holder's word.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub incarnation: u64,
    pub key: KeyHash,
}

impl NodeId {
    pub fn new(name: impl Into<String>, incarnation: u64, key: KeyHash) -> NodeId {
        NodeId { name: name.into(), incarnation, key }
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

/// The members of a cluster: its voters, and members that do not vote (they run ballots as
/// proposers, and their votes count for nothing). Only members may ask voters for anything
/// (`Node::authorize`). `sweep_done` records that every scope has been rewritten under this roster,
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
    /// Members that do not vote. Sorted by name, names unique, none also a voter's.
    pub members: Vec<NodeId>,
    pub sweep_done: bool,
    pub round_floor: u64,
}

/// A proposed change of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RosterChange {
    /// Adds a voter, or makes a member that does not vote one.
    Add(NodeId),
    /// Adds a member that does not vote.
    AddMember(NodeId),
    /// Removes a voter or a member.
    Remove(NodeId),
}

/// Why a roster change cannot be applied to a roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeError {
    /// The named node is already a voter (with this or another identity).
    AlreadyVoter,
    /// The named node is already a member (with this or another identity).
    AlreadyMember,
    /// The node is neither a voter nor a member.
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
        let cluster_id = digest(0, 0, &voters, &[]);
        Roster { cluster_id, version: 1, voters, members: Vec::new(), sweep_done: true, round_floor: 0 }
    }

    pub fn id(&self) -> RosterId {
        RosterId { version: self.version, digest: digest(self.cluster_id, self.version, &self.voters, &self.members) }
    }

    pub fn majority(&self) -> usize {
        quorum::majority(self.voters.len())
    }

    /// Whether `node` is a voter.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.voters.binary_search(node).is_ok()
    }

    /// Whether `node` is a member: a voter, or a member that does not vote.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.contains(node) || self.members.binary_search(node).is_ok()
    }

    /// Whether this roster shows `change` made: the node added is a voter (or member), the
    /// one removed is neither.
    pub fn shows(&self, change: &RosterChange) -> bool {
        match change {
            RosterChange::Add(node) => self.contains(node),
            RosterChange::AddMember(node) => self.members.binary_search(node).is_ok(),
            RosterChange::Remove(node) => !self.is_member(node),
        }
    }

    /// The roster after `change`, one version later. A change of the voters is not swept
    /// yet; a change of the members that do not vote leaves the voters, hence every quorum,
    /// as they were, and needs no sweep.
    pub fn changed(&self, change: &RosterChange) -> Result<Roster, ChangeError> {
        let (mut voters, mut members) = (self.voters.clone(), self.members.clone());
        let named = |list: &[NodeId], node: &NodeId| list.iter().position(|v| v.name == node.name);
        let voters_change = match change {
            RosterChange::Add(node) => {
                if named(&voters, node).is_some() {
                    return Err(ChangeError::AlreadyVoter);
                }
                match named(&members, node) {
                    Some(at) if members[at] == *node => {
                        members.remove(at);
                    }
                    Some(_) => return Err(ChangeError::AlreadyMember),
                    None => {}
                }
                voters.push(node.clone());
                true
            }
            RosterChange::AddMember(node) => {
                if named(&voters, node).is_some() {
                    return Err(ChangeError::AlreadyVoter);
                }
                if named(&members, node).is_some() {
                    return Err(ChangeError::AlreadyMember);
                }
                members.push(node.clone());
                false
            }
            RosterChange::Remove(node) => {
                if let Some(at) = members.iter().position(|v| v == node) {
                    members.remove(at);
                    false
                } else {
                    let Some(at) = voters.iter().position(|v| v == node) else {
                        return Err(ChangeError::NotVoter);
                    };
                    if voters.len() == 1 {
                        return Err(ChangeError::LastVoter);
                    }
                    voters.remove(at);
                    true
                }
            }
        };
        voters.sort();
        members.sort();
        let sweep_done = self.sweep_done && !voters_change;
        Ok(Roster { version: self.version.saturating_add(1), voters, members, sweep_done, ..self.clone() })
    }
}

/// FNV-1a over the roster's identity. Not cryptographic: it only tells rosters of one cluster
/// apart; who may send what is decided by the roster's members and their certificate keys.
fn digest(cluster_id: u64, version: u64, voters: &[NodeId], members: &[NodeId]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&cluster_id.to_le_bytes());
    eat(&version.to_le_bytes());
    for (list, node) in voters.iter().map(|v| (0u8, v)).chain(members.iter().map(|m| (1u8, m))) {
        eat(&[list]);
        eat(&(node.name.len() as u64).to_le_bytes());
        eat(node.name.as_bytes());
        eat(&node.incarnation.to_le_bytes());
        eat(&node.key);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, incarnation: u64) -> NodeId {
        NodeId::new(name, incarnation, [name.len() as u8; 32])
    }

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().enumerate().map(|(i, n)| id(n, i as u64 + 1)).collect()
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
        let added = r.changed(&RosterChange::Add(id("d", 9))).unwrap();
        assert_eq!(added.version, 2);
        assert_eq!(added.voters.len(), 4);
        assert!(!added.sweep_done);
        assert_ne!(added.id(), r.id());
        assert_eq!(r.changed(&RosterChange::Add(id("a", 77))), Err(ChangeError::AlreadyVoter));
        assert_eq!(r.changed(&RosterChange::Remove(id("a", 77))), Err(ChangeError::NotVoter));
        let one = Roster::first(ids(&["a"]));
        assert_eq!(one.changed(&RosterChange::Remove(id("a", 1))), Err(ChangeError::LastVoter));
    }

    #[test]
    fn a_voter_is_its_certificate_key_too() {
        let r = Roster::first(ids(&["a", "b", "c"]));
        let a = r.voters[0].clone();
        let rekeyed = NodeId { key: [9; 32], ..a.clone() };
        assert!(r.contains(&a) && !r.contains(&rekeyed));
        let other = Roster::first(vec![rekeyed, r.voters[1].clone(), r.voters[2].clone()]);
        assert_ne!(other.id(), r.id());
        assert_ne!(other.cluster_id, r.cluster_id);
    }

    #[test]
    fn members_that_do_not_vote_change_no_quorum_and_need_no_sweep() {
        let r = Roster::first(ids(&["a", "b", "c"]));
        let m = id("m", 4);
        let with = r.changed(&RosterChange::AddMember(m.clone())).unwrap();
        assert!(with.sweep_done && with.is_member(&m) && !with.contains(&m) && with.majority() == 2);
        assert!(with.shows(&RosterChange::AddMember(m.clone())));
        assert_ne!(with.id(), r.id());
        assert_eq!(with.changed(&RosterChange::AddMember(id("m", 5))), Err(ChangeError::AlreadyMember));
        assert_eq!(with.changed(&RosterChange::AddMember(id("a", 5))), Err(ChangeError::AlreadyVoter));
        assert_eq!(with.changed(&RosterChange::Add(id("m", 5))), Err(ChangeError::AlreadyMember));
        // Made a voter: a change of the quorum, swept.
        let promoted = with.changed(&RosterChange::Add(m.clone())).unwrap();
        assert!(promoted.contains(&m) && promoted.members.is_empty() && !promoted.sweep_done);
        let without = with.changed(&RosterChange::Remove(m.clone())).unwrap();
        assert!(!without.is_member(&m) && without.sweep_done && without.voters == r.voters);
    }

    #[test]
    fn sweep_flag_does_not_change_identity() {
        let mut r = Roster::first(ids(&["a", "b"])).changed(&RosterChange::Add(id("c", 5))).unwrap();
        let before = r.id();
        r.sweep_done = true;
        assert_eq!(before, r.id());
    }
}
