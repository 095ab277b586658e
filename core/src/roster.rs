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
    /// The first roster's hash (SHA-256, 128 bits of it): checked in every handshake so two
    /// clusters never mix, and the root every later roster's proof chains back to.
    pub cluster_id: u128,
    pub version: u64,
    /// Sorted by name, names unique.
    pub voters: Vec<NodeId>,
    /// Members that do not vote. Sorted by name, names unique, none also a voter's.
    pub members: Vec<NodeId>,
    /// Nodes an admin removed: refused by name and by certificate key, as members and at the
    /// transport, until an admin re-admits them. Sorted by (name, key), each pair once.
    pub banned: Vec<Ban>,
    /// How many voters the cluster keeps (`placement`): odd, 1 to `MAX_TARGET`. Zero in a
    /// roster made before targets were (a build that stored data format 4): as many as its
    /// voters (`Roster::target`).
    pub target: u8,
    pub sweep_done: bool,
    pub round_floor: u64,
}

/// A node an admin removed, by name and certificate key (either one is refused). A ban whose
/// name was lifted for another key keeps the old key banned alone (`name` is `None`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ban {
    pub name: Option<String>,
    pub key: KeyHash,
}

/// Most bans a roster keeps: it travels in every Commit, and its identity (hashed into every
/// message's roster tag) covers the bans, about 20 µs of hashing at this bound.
pub const MAX_BANS: usize = 256;

/// Most voters a cluster's target may name.
pub const MAX_TARGET: u8 = 9;
/// The voter target of a cluster formed without one given.
pub const DEFAULT_TARGET: u8 = 5;

/// Whether `target` is a voter target a cluster may keep: odd, from 1 to `MAX_TARGET` (an
/// even number of voters tolerates no more failures than one fewer).
pub fn valid_target(target: u8) -> bool {
    target % 2 == 1 && target <= MAX_TARGET
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
    /// Makes a voter a member that does not vote.
    Demote(NodeId),
    /// Sets the voter target.
    SetTarget(u8),
    /// Removes a voter or a member if it is one, and bans its name and key: it is not added
    /// again until an `Unban`.
    Ban(NodeId),
    /// Lifts the ban on a name: for every key if `key` is `None` (the same node re-admitted),
    /// else for that key only, other keys banned under the name staying banned by key (a
    /// replacement device for the name, the lost one kept out).
    Unban { name: String, key: Option<KeyHash> },
}

/// Why a roster change cannot be applied to a roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeError {
    /// The named node is already a voter (with this or another identity).
    AlreadyVoter,
    /// The named node is already a member (with this or another identity).
    AlreadyMember,
    /// The node is neither a voter nor a member (for `Demote`: not a voter).
    NotVoter,
    /// Not an odd number from 1 to `MAX_TARGET`, or the target already.
    BadTarget,
    /// Removing the last voter would leave nobody to decide anything.
    LastVoter,
    /// The node's name or key is banned: an admin must re-admit it first.
    Banned,
    /// No ban names this node.
    NotBanned,
    /// The roster keeps `MAX_BANS` bans at most.
    TooManyBans,
    /// Another member holds this certificate key under another name: one key, one member.
    KeyInUse,
    /// A member of the roster has this node's name or key but is not this node: ban that
    /// member (the roster's entry), or nothing would remove it while the ban cuts it off.
    NotTheMember,
}

impl Roster {
    /// The first roster of a new cluster: its identity is derived from its voters and the
    /// voter target, so that two nodes proposing the same bootstrap set (and target) propose
    /// the same roster.
    pub fn first(mut voters: Vec<NodeId>, target: u8) -> Roster {
        voters.sort();
        voters.dedup_by(|a, b| a.name == b.name);
        let mut first = Roster { cluster_id: 0, version: 1, voters, members: Vec::new(), banned: Vec::new(), target, sweep_done: true, round_floor: 0 };
        let mut bytes = Vec::new();
        first.encode(&mut |b| bytes.extend_from_slice(b));
        let hash = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut id = [0; 16];
        id.copy_from_slice(&hash.as_ref()[..16]);
        first.cluster_id = u128::from_le_bytes(id);
        first
    }

    /// FNV-1a over the roster's identity. Not cryptographic: it only tells rosters of one
    /// cluster apart in message tags. Who may send what is decided by the members and their
    /// certificate keys, and what is installed by proofs, which sign the whole roster.
    pub fn id(&self) -> RosterId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        self.encode_identity(&mut |bytes| {
            for &b in bytes {
                hash ^= b as u64;
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        });
        RosterId { version: self.version, digest: hash }
    }

    /// Whether this roster comes after `current`: a later version, or the same roster with
    /// its sweep recorded.
    pub fn is_newer_than(&self, current: &Roster) -> bool {
        self.version > current.version
            || (self.version == current.version && self.id() == current.id() && self.sweep_done && !current.sweep_done)
    }

    /// Every field, in a fixed order (what a voter signs, what the cluster id hashes).
    pub fn encode(&self, out: &mut dyn FnMut(&[u8])) {
        self.encode_identity(out);
        out(&[self.sweep_done as u8]);
        out(&self.round_floor.to_le_bytes());
    }

    /// The fields that tell rosters of a cluster apart (`id`): all but `sweep_done` and
    /// `round_floor`, which a sweep records in the same roster.
    fn encode_identity(&self, eat: &mut dyn FnMut(&[u8])) {
        eat(&self.cluster_id.to_le_bytes());
        eat(&self.version.to_le_bytes());
        for (list, node) in self.voters.iter().map(|v| (0u8, v)).chain(self.members.iter().map(|m| (1u8, m))) {
            eat(&[list]);
            eat(&(node.name.len() as u64).to_le_bytes());
            eat(node.name.as_bytes());
            eat(&node.incarnation.to_le_bytes());
            eat(&node.key);
        }
        for ban in &self.banned {
            eat(&[2]);
            let name = ban.name.as_deref().unwrap_or("");
            eat(&[ban.name.is_some() as u8]);
            eat(&(name.len() as u64).to_le_bytes());
            eat(name.as_bytes());
            eat(&ban.key);
        }
        // Only when set: a roster made before targets were encodes as it did then, so the
        // signatures and the cluster id made over it hold.
        if self.target != 0 {
            eat(&[3, self.target]);
        }
    }

    /// How many voters the cluster keeps: its target, or for a roster made before targets
    /// were, as many as its voters then (`Roster::target` zero: placement changes no voters).
    pub fn voter_target(&self) -> usize {
        match self.target {
            0 => self.voters.len(),
            t => t as usize,
        }
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

    /// Whether a node of this name or this certificate key is banned.
    pub fn is_banned(&self, name: &str, key: &KeyHash) -> bool {
        self.banned.iter().any(|b| b.name.as_deref() == Some(name) || b.key == *key)
    }

    /// Whether this roster shows `change` made: the node added is a voter (or member), the
    /// one removed is neither, the one banned is banned, the name unbanned is not.
    pub fn shows(&self, change: &RosterChange) -> bool {
        match change {
            RosterChange::Add(node) => self.contains(node),
            RosterChange::AddMember(node) => self.members.binary_search(node).is_ok(),
            RosterChange::Remove(node) => !self.is_member(node),
            RosterChange::Demote(node) => self.members.binary_search(node).is_ok(),
            RosterChange::SetTarget(target) => self.target == *target,
            RosterChange::Ban(node) => !self.is_member(node) && self.banned.iter().any(|b| b.name.as_ref() == Some(&node.name) && b.key == node.key),
            RosterChange::Unban { name, key } => !self.banned.iter().any(|b| b.name.as_ref() == Some(name) || Some(b.key) == *key),
        }
    }

    /// Whether this roster is `unswept` with its sweep recorded: every field the same, but
    /// `sweep_done` set and the round floor raised (or kept).
    pub fn is_sweep_of(&self, unswept: &Roster) -> bool {
        let same = Roster { sweep_done: unswept.sweep_done, round_floor: unswept.round_floor, ..self.clone() };
        same == *unswept && self.sweep_done && !unswept.sweep_done && self.round_floor >= unswept.round_floor
    }

    /// Whether this roster may be the roster register's next value after `installed`: the
    /// same roster (its sweep recorded or not), or one change on from it (`changed`), its
    /// sweep recorded or not. A proposer following the protocol proposes nothing else under
    /// `installed` (`node::apply_roster_ops`). (Round floors are not compared: a change made
    /// from the unswept roster in the batch that records its sweep carries that sweep's floor,
    /// which another sweep's record, chosen in its place, may exceed.)
    pub fn follows(&self, installed: &Roster) -> bool {
        if self.cluster_id != installed.cluster_id {
            return false;
        }
        if self.version == installed.version {
            return self.id() == installed.id();
        }
        if self.version != installed.version.saturating_add(1) {
            return false;
        }
        let id = self.id();
        self.changes_from(installed).iter().any(|c| installed.changed(c).is_ok_and(|next| next.id() == id))
    }

    /// The changes that could have made this roster from `from` (each is tried by `follows`).
    fn changes_from(&self, from: &Roster) -> Vec<RosterChange> {
        let mut changes = Vec::new();
        changes.extend(self.voters.iter().filter(|v| !from.voters.contains(v)).map(|v| RosterChange::Add(v.clone())));
        changes.extend(self.members.iter().filter(|m| !from.members.contains(m)).map(|m| RosterChange::AddMember(m.clone())));
        changes.extend(from.voters.iter().filter(|v| self.members.contains(v)).map(|v| RosterChange::Demote(v.clone())));
        if self.target != from.target {
            changes.push(RosterChange::SetTarget(self.target));
        }
        for gone in from.voters.iter().chain(&from.members).filter(|x| !self.is_member(x)) {
            changes.push(RosterChange::Remove(gone.clone()));
            changes.push(RosterChange::Ban(gone.clone()));
        }
        for ban in self.banned.iter().filter(|b| !from.banned.contains(b)) {
            // A ban of a node that is no member: its incarnation plays no part.
            changes.push(RosterChange::Ban(NodeId::new(ban.name.clone().unwrap_or_default(), 0, ban.key)));
        }
        for ban in from.banned.iter().filter(|b| !self.banned.contains(b)) {
            let name = ban.name.clone().unwrap_or_default();
            changes.push(RosterChange::Unban { name: name.clone(), key: None });
            changes.push(RosterChange::Unban { name: name.clone(), key: Some(ban.key) });
            // A name freed for another key than any banned: the other keys stay banned alone.
            let unbanned = (0..=u8::MAX).map(|b| [b; 32]).find(|k| !from.banned.iter().any(|x| x.key == *k)).unwrap_or([0; 32]);
            changes.push(RosterChange::Unban { name, key: Some(unbanned) });
        }
        changes
    }

    /// The roster after `change`, one version later. A change of the voters is not swept
    /// yet; a change of the members that do not vote leaves the voters, hence every quorum,
    /// as they were, and needs no sweep.
    pub fn changed(&self, change: &RosterChange) -> Result<Roster, ChangeError> {
        let (mut voters, mut members, mut banned) = (self.voters.clone(), self.members.clone(), self.banned.clone());
        let mut target = self.target;
        let named = |list: &[NodeId], node: &NodeId| list.iter().position(|v| v.name == node.name);
        if let RosterChange::Add(node) | RosterChange::AddMember(node) = change {
            if self.is_banned(&node.name, &node.key) {
                return Err(ChangeError::Banned);
            }
            if voters.iter().chain(&members).any(|m| m.key == node.key && m.name != node.name) {
                return Err(ChangeError::KeyInUse);
            }
        }
        if let RosterChange::Ban(node) = change {
            if voters.iter().chain(&members).any(|m| (m.name == node.name || m.key == node.key) && m != node) {
                return Err(ChangeError::NotTheMember);
            }
        }
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
            RosterChange::Remove(node) => remove(&mut voters, &mut members, node)?.ok_or(ChangeError::NotVoter)?,
            RosterChange::Demote(node) => {
                let at = voters.iter().position(|v| v == node).ok_or(ChangeError::NotVoter)?;
                if voters.len() == 1 {
                    return Err(ChangeError::LastVoter);
                }
                voters.remove(at);
                members.push(node.clone());
                true
            }
            RosterChange::SetTarget(t) => {
                if !valid_target(*t) || *t == self.target {
                    return Err(ChangeError::BadTarget);
                }
                target = *t;
                false
            }
            RosterChange::Ban(node) => {
                let removed = remove(&mut voters, &mut members, node)?;
                // A name may be banned under several keys (each device certified for it).
                banned.retain(|b| b.key != node.key);
                if banned.len() >= MAX_BANS {
                    return Err(ChangeError::TooManyBans);
                }
                banned.push(Ban { name: Some(node.name.clone()), key: node.key });
                removed.unwrap_or(false)
            }
            RosterChange::Unban { name, key } => {
                if !banned.iter().any(|b| b.name.as_ref() == Some(name) || Some(b.key) == *key) {
                    return Err(ChangeError::NotBanned);
                }
                // The name is free; the key admitted is too; any other key banned under the
                // name stays banned by itself.
                banned.retain(|b| Some(b.key) != *key && (key.is_some() || b.name.as_ref() != Some(name)));
                for b in banned.iter_mut().filter(|b| b.name.as_ref() == Some(name)) {
                    b.name = None;
                }
                false
            }
        };
        voters.sort();
        members.sort();
        banned.sort();
        let sweep_done = self.sweep_done && !voters_change;
        Ok(Roster { version: self.version.saturating_add(1), voters, members, banned, target, sweep_done, ..self.clone() })
    }
}

/// Removes `node` from the voters or the members: whether it was a voter, or `None` if it was
/// neither.
fn remove(voters: &mut Vec<NodeId>, members: &mut Vec<NodeId>, node: &NodeId) -> Result<Option<bool>, ChangeError> {
    if let Some(at) = members.iter().position(|v| v == node) {
        members.remove(at);
        return Ok(Some(false));
    }
    let Some(at) = voters.iter().position(|v| v == node) else { return Ok(None) };
    if voters.len() == 1 {
        return Err(ChangeError::LastVoter);
    }
    voters.remove(at);
    Ok(Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, incarnation: u64) -> NodeId {
        let mut key = [name.len() as u8; 32];
        for (k, b) in key.iter_mut().zip(name.bytes()) {
            *k = b;
        }
        NodeId::new(name, incarnation, key)
    }

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().enumerate().map(|(i, n)| id(n, i as u64 + 1)).collect()
    }

    #[test]
    fn first_roster_is_the_same_for_the_same_set_in_any_order() {
        let a = Roster::first(ids(&["a", "b", "c"]), 5);
        let mut reversed = ids(&["a", "b", "c"]);
        reversed.reverse();
        assert_eq!(a, Roster::first(reversed, 5));
        assert_ne!(a.id(), Roster::first(ids(&["a", "b", "d"]), 5).id());
    }

    #[test]
    fn changes_are_one_member_and_one_version() {
        let r = Roster::first(ids(&["a", "b", "c"]), 5);
        let added = r.changed(&RosterChange::Add(id("d", 9))).unwrap();
        assert_eq!(added.version, 2);
        assert_eq!(added.voters.len(), 4);
        assert!(!added.sweep_done);
        assert_ne!(added.id(), r.id());
        assert_eq!(r.changed(&RosterChange::Add(id("a", 77))), Err(ChangeError::AlreadyVoter));
        assert_eq!(r.changed(&RosterChange::Remove(id("a", 77))), Err(ChangeError::NotVoter));
        let one = Roster::first(ids(&["a"]), 5);
        assert_eq!(one.changed(&RosterChange::Remove(id("a", 1))), Err(ChangeError::LastVoter));
    }

    #[test]
    fn a_voter_is_its_certificate_key_too() {
        let r = Roster::first(ids(&["a", "b", "c"]), 5);
        let a = r.voters[0].clone();
        let rekeyed = NodeId { key: [9; 32], ..a.clone() };
        assert!(r.contains(&a) && !r.contains(&rekeyed));
        let other = Roster::first(vec![rekeyed, r.voters[1].clone(), r.voters[2].clone()], 5);
        assert_ne!(other.id(), r.id());
        assert_ne!(other.cluster_id, r.cluster_id);
    }

    #[test]
    fn members_that_do_not_vote_change_no_quorum_and_need_no_sweep() {
        let r = Roster::first(ids(&["a", "b", "c"]), 5);
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
    fn a_ban_removes_and_keeps_out_by_name_and_by_key_until_lifted() {
        let r = Roster::first(ids(&["a", "b", "c"]), 5);
        let c = r.voters[2].clone();
        let banned = r.changed(&RosterChange::Ban(c.clone())).unwrap();
        assert!(!banned.is_member(&c) && !banned.sweep_done && banned.shows(&RosterChange::Ban(c.clone())));
        assert_ne!(banned.id(), r.changed(&RosterChange::Remove(c.clone())).unwrap().id());
        let mut swept = banned.clone();
        swept.sweep_done = true;
        // Neither the same name (a wiped data dir, a new key) nor the same key comes back.
        let renamed = NodeId::new("z", 9, c.key);
        for again in [NodeId { incarnation: 99, ..c.clone() }, NodeId { key: [7; 32], ..c.clone() }, renamed.clone()] {
            assert_eq!(swept.changed(&RosterChange::Add(again.clone())), Err(ChangeError::Banned));
            assert_eq!(swept.changed(&RosterChange::AddMember(again)), Err(ChangeError::Banned));
        }
        // Lifting a ban needs no sweep; then the node may be added again.
        let unban = RosterChange::Unban { name: "c".into(), key: None };
        let lifted = swept.changed(&unban).unwrap();
        assert!(lifted.sweep_done && lifted.banned.is_empty() && lifted.shows(&unban));
        assert!(lifted.changed(&RosterChange::Add(c.clone())).is_ok());
        assert_eq!(lifted.changed(&unban), Err(ChangeError::NotBanned));
        // A replacement device for the name, with a new key: the name is free, the lost key
        // stays banned (under any name).
        let fresh = NodeId::new("c", 77, [0xcc; 32]);
        let replaced = swept.changed(&RosterChange::Unban { name: "c".into(), key: Some(fresh.key) }).unwrap();
        assert!(replaced.changed(&RosterChange::Add(fresh.clone())).is_ok());
        assert!(replaced.is_banned("other", &c.key) && !replaced.is_banned("c", &fresh.key));
        assert_eq!(replaced.changed(&RosterChange::Add(NodeId { incarnation: 3, ..c.clone() })), Err(ChangeError::Banned));
        // A node that is no member can be banned too (a lost device), with no sweep.
        let outsider = swept.changed(&RosterChange::Ban(id("x", 5))).unwrap();
        assert!(outsider.sweep_done && outsider.is_banned("x", &[9; 32]) && outsider.is_banned("y", &id("x", 5).key));
    }

    // ---------------------------------------------------------------------------------
    // Red team: bans.

    /// Every roster entry a ban applies to: a voter or member whose name or key is banned.
    fn banned_members(r: &Roster) -> Vec<String> {
        r.voters.iter().chain(&r.members).filter(|m| r.is_banned(&m.name, &m.key)).map(|m| m.name.clone()).collect()
    }

    /// A ban's target need not be the roster's entry of that name or key: another identity of
    /// a voter's name (a second device certified for the name, waiting as pending; the voter's
    /// new certificate) or another name of a voter's key (one certificate speaks for every name
    /// it is valid for: the shared dial name `lockmesh-node`, its DNS and IP names). `remove`
    /// finds no exact entry, so nothing is removed, yet the ban is recorded: the voter stays in
    /// the roster, counted in every quorum, while every mesh refuses its frames (by name or at
    /// the handshake, by key) — a voter lost without a removal, and it can never be re-added
    /// or replaced (`admit` skips banned names). Two such bans in a three-voter roster are a
    /// lasting loss of quorum (see the node test of the same name).
    #[test]
    fn a_ban_leaves_no_voter_or_member_whose_name_or_key_it_bans() {
        let r = Roster::first(vec![NodeId::new("a", 1, [0xa; 32]), NodeId::new("b", 2, [0xb; 32]), NodeId::new("c", 3, [0xc; 32])], 5);
        let c = r.voters[2].clone();
        let namesake = NodeId { incarnation: 9, key: [0xcc; 32], ..c.clone() };
        let alias = NodeId::new("lockmesh-node", 9, c.key);
        for target in [namesake, alias] {
            match r.changed(&RosterChange::Ban(target.clone())) {
                Err(_) => {}
                Ok(next) => assert!(banned_members(&next).is_empty(), "Ban({}) left {:?} in the roster, banned", target.name, banned_members(&next)),
            }
        }
        // The alias admitted beside its key's first name (automatic admission takes any name
        // the certificate is valid for), then the admin bans the node by its name.
        let with_alias = match r.changed(&RosterChange::AddMember(NodeId::new("lockmesh-node", 9, c.key))) {
            Err(_) => return, // one key, one member: fine
            Ok(x) => x,
        };
        let banned = with_alias.changed(&RosterChange::Ban(c.clone())).unwrap();
        assert!(banned_members(&banned).is_empty(), "the banned key is still a member: {:?}", banned_members(&banned));
    }

    /// A second ban of a name replaces the first (`retain` by name), lifting the first ban's
    /// key: an admin who removes `x` (key K1, a stolen device) and then `x` again (the pending
    /// device now greeting as `x`, key K2) has let K1 back in under any other name its
    /// certificate is valid for.
    #[test]
    fn a_second_ban_of_a_name_keeps_the_first_key_banned() {
        let r = Roster::first(ids(&["a", "b", "c"]), 5);
        let stolen = NodeId::new("x", 5, [0x51; 32]);
        let replacement = NodeId::new("x", 6, [0x52; 32]);
        let once = r.changed(&RosterChange::Ban(stolen.clone())).unwrap();
        let twice = once.changed(&RosterChange::Ban(replacement.clone())).unwrap();
        assert!(twice.is_banned("x", &replacement.key));
        assert!(twice.is_banned("lockmesh-node", &stolen.key), "the stolen key is no longer banned: {:?}", twice.banned);
    }

    #[test]
    fn a_roster_follows_its_predecessor_by_one_change_or_its_sweep() {
        let r = Roster::first(ids(&["a", "b", "c"]), 5);
        let c = r.voters[2].clone();
        let mut swept = r.clone();
        swept.round_floor = 9;
        assert!(r.follows(&r) && swept.follows(&r));
        for change in [
            RosterChange::Add(id("d", 4)),
            RosterChange::AddMember(id("m", 5)),
            RosterChange::Remove(c.clone()),
            RosterChange::Ban(c.clone()),
            RosterChange::Ban(id("x", 6)),
        ] {
            let next = r.changed(&change).unwrap();
            assert!(next.follows(&r), "{change:?}");
            let mut next_swept = next.clone();
            next_swept.sweep_done = true;
            assert!(next_swept.follows(&r), "{change:?}, swept");
            assert!(!r.follows(&next) && !next.changed(&RosterChange::AddMember(id("z", 7))).unwrap().follows(&r), "{change:?}: two changes on");
        }
        let banned = r.changed(&RosterChange::Ban(c.clone())).unwrap();
        for unban in [RosterChange::Unban { name: "c".into(), key: None }, RosterChange::Unban { name: "c".into(), key: Some([0x77; 32]) }] {
            assert!(banned.changed(&unban).unwrap().follows(&banned), "{unban:?}");
        }
        // Forged: a jump, a roster with other voters at the next version, another cluster's.
        assert!(!Roster { version: 7, ..r.clone() }.follows(&r));
        assert!(!Roster { version: 2, voters: vec![r.voters[1].clone(), id("rogue", 9)], ..r.clone() }.follows(&r));
        assert!(!Roster { cluster_id: r.cluster_id ^ 1, ..r.clone() }.follows(&r));
    }

    #[test]
    fn sweep_flag_does_not_change_identity() {
        let mut r = Roster::first(ids(&["a", "b"]), 5).changed(&RosterChange::Add(id("c", 5))).unwrap();
        let before = r.id();
        r.sweep_done = true;
        assert_eq!(before, r.id());
    }
}
