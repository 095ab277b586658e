//! The rogue: what the threat model lets loose on the cluster (PROTOCOL §1). It holds a
//! certificate the CA signed that no roster lists (`rogue`), and the keys of voters removed
//! from the roster (ghosts: a wiped node's former identity, whose old data dir and certificate
//! someone kept, and a removed voter whose key no member holds, a retired device's, from the
//! moment its removal is chosen — also towards nodes that have not heard of the removal and
//! still list it). It knows everything: every node's roster and the ballots in flight. Every
//! 5–60 ms it sends nodes a forged message of some kind — ballots at rounds up to the bound,
//! valid-looking records granting a scope to `mallory` (to every node at once, at one
//! ballot), rosters in which it votes, votes for ballots in flight, refusals asking for a
//! roster sync, listings, pulls, vouches, bootstrap offers, Commits of rosters with forged proofs
//! (none, its own signature and those of other ghosts that vote in the target's roster — fewer
//! than a majority of it, the threat model's bound —, a first roster of its own) and replays of
//! honest links. The transport lets it speak only as the identities it holds, and it signs
//! only with their keys; within that it may send anything. The checker's safety and liveness
//! checks hold all the same, and no node may refuse an honest node's value.
//!
//! It draws from a random stream of its own, so the seed's other choices stay as they were.

use std::collections::BTreeSet;

use lockmesh_core::message::{AcceptedValue, Ballot, Body, Refusal};
use lockmesh_core::proof::{self, Link, Proof};
use lockmesh_core::rng::Rng;
use lockmesh_core::validate::COUNTER_BOUND;
use lockmesh_core::{Acquire, Ed25519Signer, Envelope, Key, LeaseRule, Limits, LockOp, LockRecord, LockType, NodeId, Priority, RequestId, Roster, RosterId, Value};

use crate::world::{node_key, Event, World};

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
    NodeId::new("rogue", 666, stranger_key().key_hash())
}

fn stranger_key() -> Ed25519Signer {
    Ed25519Signer::from_seed(&[0xee; 32])
}

/// The key of an identity the rogue holds: its own, or a ghost's (node `n<i>`'s certificate).
fn key_of(id: &NodeId) -> Ed25519Signer {
    match id.name.strip_prefix('n').and_then(|i| i.parse::<usize>().ok()) {
        Some(i) => node_key(i),
        None => stranger_key(),
    }
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
        let rosters: Vec<Option<Roster>> = self.nodes.iter().map(|n| n.node.as_ref().and_then(|node| node.roster().cloned()).or_else(|| n.disk.roster().cloned())).collect();
        for r in rosters.iter().flatten() {
            self.rogue.seen.extend(r.voters.iter().chain(&r.members).cloned());
        }
        // A ghost, run by no node: an identity listed by no node's roster (installed, or on a
        // crashed node's disk, or the latest chosen); or one the latest chosen roster does not
        // list whose key no member of it holds (a retired device's, not a wiped node's: that
        // key is a member's), also towards nodes that have not heard of its removal and still
        // list it: they must not take its ballot requests, nor use what its votes carry
        // (`vouch`), and install its Commits only with a majority's proof.
        let listed = |id: &NodeId| rosters.iter().flatten().chain(self.checker.latest_roster.iter()).any(|r| r.is_member(id));
        let keyed = |id: &NodeId| self.checker.latest_roster.iter().any(|r| r.voters.iter().chain(&r.members).any(|m| m.key == id.key));
        let ghost = |id: &NodeId| !listed(id) || !keyed(id);
        let ghosts: Vec<NodeId> = self.rogue.seen.iter().filter(|id| ghost(id) && !self.nodes.iter().any(|n| n.id == **id)).cloned().collect();
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
            2 | 3 => match &rosters[to] {
                Some(base) => {
                    let mut roster = forged_roster(&mut self.rogue.rng, base, &target, &me);
                    match self.rogue.rng.index(4) {
                        0 => Body::Accept { key: Key::Roster, ballot, value: Value::Roster(roster) },
                        1 => Body::Commit { links: vec![Link { roster, proof: Proof { ballot, under: base.id(), signatures: Vec::new() } }] },
                        2 => {
                            // Signed by the identities it holds that vote in the target's
                            // roster (a ghost the target still lists), fewer than a majority.
                            roster.version = base.version + 1;
                            let signers: Vec<NodeId> = ghosts.iter().chain([&me]).filter(|g| base.contains(g)).cloned().collect::<BTreeSet<_>>().into_iter().take(base.majority() - 1).collect();
                            let signers = if signers.is_empty() { vec![me.clone()] } else { signers };
                            let signatures = signers.iter().map(|g| (g.clone(), proof::sign(&key_of(g), ballot, base.id(), &roster))).collect();
                            Body::Commit { links: vec![Link { roster, proof: Proof { ballot, under: base.id(), signatures } }] }
                        }
                        _ => self.replayed_links(),
                    }
                }
                // Its own first roster, which it alone signs: a cluster of its own.
                None if self.rogue.rng.chance(0.5) => {
                    let first = Roster::first(vec![me.clone()], 5);
                    let signed = proof::sign(&key_of(&me), Ballot::BOOTSTRAP, first.id(), &first);
                    Body::Commit { links: vec![Link { proof: Proof { ballot: Ballot::BOOTSTRAP, under: first.id(), signatures: vec![(me.clone(), signed)] }, roster: first }] }
                }
                None => self.replayed_links(),
            },
            4 => match self.ballot_in_flight(to) {
                // A promise for a ballot the node runs, claiming a value at a higher ballot.
                Some((key, ballot)) => {
                    let accepted = match &key {
                        Key::Scope(_) => Some(AcceptedValue { ballot: Ballot { round: ballot.round + 1, proposer: me.incarnation }, value: Value::Lock(mallory(1)), roster: tag }),
                        Key::Roster => None,
                    };
                    match self.rogue.rng.index(3) {
                        0 => Body::Promise { key, ballot, accepted, age_us: 0 },
                        1 => Body::Accepted { key, ballot, signed: None },
                        // "Wait for my vouches to run out", for ever.
                        _ => Body::Refuse { key, ballot, why: Refusal::Withdrawing { wait_us: u64::MAX } },
                    }
                }
                None => Body::RosterPull { have: None },
            },
            5 => {
                let newer = tag.map(|t| RosterId { version: t.version + 1, digest: self.rogue.rng.next_u64() });
                let envelope = Envelope { from: me, to: target, roster: newer, body: Body::Refuse { key: scope, ballot, why: Refusal::RosterMismatch } };
                self.rogue_send(to, envelope);
                return;
            }
            6 if self.rogue.rng.chance(0.5) => Body::ListKeys { sweep: self.rogue.rng.next_u64(), after: None },
            // A vouch for everyone, as if answering an ask sent just now (or at any time), or
            // an ask for one.
            6 => match self.rogue.rng.index(3) {
                0 => Body::VouchAsk { at: self.rogue.rng.next_u64() },
                _ => Body::Vouch { at: if self.rogue.rng.chance(0.5) { u64::MAX } else { self.rogue.rng.next_u64() }, withholds: Vec::new() },
            },
            7 => Body::KeyList { sweep: self.rogue.rng.next_u64(), after: None, keys: self.scopes.clone(), more: false, max_round: round },
            8 => Body::BootstrapOffer { roster: Roster::first(vec![me.clone(), target], 5) },
            _ => Body::RosterPull { have: if self.rogue.rng.chance(0.5) { None } else { Some((self.rogue.rng.between(0, 1_000), false)) } },
        };
        let envelope = Envelope { from: me, to: self.nodes[to].id.clone(), roster: tag, body };
        self.rogue_send(to, envelope);
    }

    /// Honest links of some node's chain, replayed out of order.
    fn replayed_links(&mut self) -> Body {
        let chains: Vec<&[Link]> = self.nodes.iter().filter_map(|n| n.node.as_ref().map(|node| node.chain())).filter(|c| !c.is_empty()).collect();
        if chains.is_empty() {
            return Body::RosterPull { have: None };
        }
        let chain = chains[self.rogue.rng.index(chains.len())];
        let at = self.rogue.rng.index(chain.len());
        let len = self.rogue.rng.between(1, 4) as usize;
        let mut links: Vec<Link> = chain[at..(at + len).min(chain.len())].to_vec();
        if self.rogue.rng.chance(0.3) {
            links.reverse();
        }
        Body::Commit { links }
    }

    fn rogue_send(&mut self, to: usize, envelope: Envelope) {
        self.rogue.used.insert(envelope.from.clone());
        let delay = self.rogue.rng.between(100, 2_000);
        self.log(|| format!("rogue as {} -> n{to}: {:?}", envelope.from, envelope.body));
        self.schedule(self.now + delay, Event::Deliver { to, envelope });
    }
}
