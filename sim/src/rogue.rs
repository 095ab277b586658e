//! The rogue: what the threat model lets loose on the cluster (PROTOCOL §1). It holds a
//! certificate the CA signed that no roster lists (`rogue`), and the keys of voters removed
//! from the roster (ghosts: a wiped node's former identity, whose old data dir and certificate
//! someone kept). It knows everything: every node's roster and the ballots in flight. Every
//! 5–60 ms it sends nodes a forged message of some kind — ballots at rounds up to the bound,
//! valid-looking records granting a scope to `mallory` (to every node at once, at one
//! ballot), rosters in which it votes, votes for ballots in flight, refusals asking for a
//! roster sync, listings, pulls, bootstrap offers. The transport lets it speak only as the
//! identities it holds; within that it may send anything. The checker's safety and liveness
//! checks hold all the same, and no node may refuse an honest node's value.
//!
//! It draws from a random stream of its own, so the seed's other choices stay as they were.
//! Left out, as gaps PROTOCOL §1 states: a ghost's Commit to a node that has not installed
//! the ghost's removal, or has no roster yet.

use std::collections::BTreeSet;

use lockmesh_core::message::{AcceptedValue, Ballot, Body, Refusal};
use lockmesh_core::rng::Rng;
use lockmesh_core::validate::COUNTER_BOUND;
use lockmesh_core::{Acquire, Envelope, Key, LeaseRule, Limits, LockOp, LockRecord, LockType, NodeId, Priority, RequestId, Roster, RosterId, Value};

use crate::world::{Event, World};

pub(crate) struct Rogue {
    rng: Rng,
    /// Every voter identity some node installed; those no node lists any more, and no node
    /// runs as, are ghosts it may speak as.
    seen: BTreeSet<NodeId>,
    /// Every identity it spoke as (their refused values are not honest nodes').
    pub used: BTreeSet<NodeId>,
}

/// The rogue's own certificate: no roster lists it.
fn stranger() -> NodeId {
    NodeId::new("rogue", 666, [0xee; 32])
}

impl Rogue {
    pub(crate) fn new(seed: u64) -> Rogue {
        Rogue { rng: Rng::new(seed ^ 0x7267_7565_5f72_6e67), seen: BTreeSet::new(), used: BTreeSet::new() }
    }
}

/// A record that keeps every invariant, granting the scope to `mallory`.
fn mallory(token: u64) -> LockRecord {
    let mut record = LockRecord { last_token: token, ..LockRecord::default() };
    let acquire = Acquire {
        request_id: RequestId("mallory".into()),
        holder: "mallory".into(),
        lock_type: LockType::Write,
        lease: LeaseRule::Fixed(60_000_000),
        lock_delay_us: 0,
        wait: false,
        wait_lease_us: 0,
        priority: Priority::Normal,
        reason: None,
        node: String::new(),
        poll: false,
    };
    record.apply(&LockOp::Acquire(acquire), 0, &Limits::default());
    record
}

impl World {
    /// One forged message (or one burst to every node), and the next one scheduled.
    pub(crate) fn rogue_act(&mut self) {
        let gap = self.rogue.rng.between(5_000, 60_000);
        self.schedule(self.now + gap, Event::Rogue);
        let rosters: Vec<Option<Roster>> = self.nodes.iter().map(|n| n.node.as_ref().and_then(|node| node.roster().cloned()).or_else(|| n.disk.roster.clone())).collect();
        for r in rosters.iter().flatten() {
            self.rogue.seen.extend(r.voters.iter().chain(&r.members).cloned());
        }
        // A ghost: listed by no node's roster (installed, or on a crashed node's disk, or the
        // latest chosen), run by no node. (A node that has not installed a removal yet still
        // takes the removed voter's Commit — a gap PROTOCOL §1 states; rosters with proof will
        // close it.)
        let listed = |id: &NodeId| rosters.iter().flatten().chain(self.checker.latest_roster.iter()).any(|r| r.is_member(id));
        let ghosts: Vec<NodeId> = self.rogue.seen.iter().filter(|id| !listed(id) && !self.nodes.iter().any(|n| n.id == **id)).cloned().collect();
        let me = if !ghosts.is_empty() && self.rogue.rng.chance(0.4) { ghosts[self.rogue.rng.index(ghosts.len())].clone() } else { stranger() };
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].node.is_some()).collect();
        if running.is_empty() {
            return;
        }
        let to = running[self.rogue.rng.index(running.len())];
        let tag = rosters[to].as_ref().map(Roster::id);
        let scope = Key::Scope(self.scopes[self.rogue.rng.index(self.scopes.len())].clone());
        let round = match self.rogue.rng.index(3) {
            0 => self.rogue.rng.between(1, 1_000),
            1 => self.rogue.rng.between(1 << 20, 1 << 40),
            _ => COUNTER_BOUND - 1,
        };
        let ballot = Ballot { round, proposer: me.incarnation };
        let forged_roster = |rng: &mut Rng, base: &Roster, target: &NodeId, me: &NodeId| {
            let mut voters = if rng.chance(0.5) { vec![me.clone()] } else { vec![me.clone(), target.clone()] };
            voters.sort();
            voters.dedup_by(|a, b| a.name == b.name);
            Roster { version: base.version + rng.between(1, 1_000), voters, members: Vec::new(), banned: Vec::new(), sweep_done: true, ..base.clone() }
        };
        let target = self.nodes[to].id.clone();
        let body = match self.rogue.rng.index(10) {
            0 => Body::Prepare { key: if self.rogue.rng.chance(0.2) { Key::Roster } else { scope }, ballot },
            1 => {
                // To every node at once, at one ballot: a majority could choose it.
                let value = Value::Lock(mallory(self.rogue.rng.between(1, 1_000)));
                for i in running {
                    let tag = rosters[i].as_ref().map(Roster::id);
                    let envelope = Envelope { from: me.clone(), to: self.nodes[i].id.clone(), roster: tag, body: Body::Accept { key: scope.clone(), ballot, value: value.clone() } };
                    self.rogue_send(i, envelope);
                }
                return;
            }
            // Ghosts send no Commits: a node with no roster yet takes one from the nodes it
            // joins through, by name and key, which a ghost holds (PROTOCOL §1, a gap the
            // runtime narrows by the seed's address and rosters with proof will close).
            2 | 3 if me != stranger() => Body::RosterPull,
            2 | 3 => match &rosters[to] {
                Some(base) => {
                    let roster = forged_roster(&mut self.rogue.rng, base, &target, &me);
                    if self.rogue.rng.chance(0.3) {
                        Body::Accept { key: Key::Roster, ballot, value: Value::Roster(roster) }
                    } else {
                        Body::Commit { roster }
                    }
                }
                None => Body::RosterPull,
            },
            4 => match self.ballot_in_flight(to) {
                // A promise for a ballot the node runs, claiming a value at a higher ballot.
                Some((key, ballot)) => {
                    let accepted = match &key {
                        Key::Scope(_) => Some(AcceptedValue { ballot: Ballot { round: ballot.round + 1, proposer: me.incarnation }, value: Value::Lock(mallory(1)), roster: tag }),
                        Key::Roster => None,
                    };
                    if self.rogue.rng.chance(0.5) {
                        Body::Promise { key, ballot, accepted, age_us: 0 }
                    } else {
                        Body::Accepted { key, ballot }
                    }
                }
                None => Body::RosterPull,
            },
            5 => {
                let newer = tag.map(|t| RosterId { version: t.version + 1, digest: self.rogue.rng.next_u64() });
                let envelope = Envelope { from: me, to: target, roster: newer, body: Body::Refuse { key: scope, ballot, why: Refusal::RosterMismatch } };
                self.rogue_send(to, envelope);
                return;
            }
            6 => Body::ListKeys { sweep: self.rogue.rng.next_u64(), after: None },
            7 => Body::KeyList { sweep: self.rogue.rng.next_u64(), after: None, keys: self.scopes.clone(), more: false, max_round: round },
            8 => Body::BootstrapOffer { roster: Roster::first(vec![me.clone(), target]) },
            _ => Body::RosterPull,
        };
        let envelope = Envelope { from: me, to: self.nodes[to].id.clone(), roster: tag, body };
        self.rogue_send(to, envelope);
    }

    fn rogue_send(&mut self, to: usize, envelope: Envelope) {
        self.rogue.used.insert(envelope.from.clone());
        let delay = self.rogue.rng.between(100, 2_000);
        self.log(|| format!("rogue as {} -> n{to}: {:?}", envelope.from, envelope.body));
        self.schedule(self.now + delay, Event::Deliver { to, envelope });
    }
}
