//! Peer input cannot crash a node. A stable fuzz harness (no nightly toolchain needed): for
//! `FUZZ_SECONDS` (3 by default; `scripts/fuzz.sh --minutes 10` for a long run) it feeds
//! three nodes of a live in-memory cluster
//! - random bytes, and mutated encodings of valid frames, through the mesh's frame decoder,
//!   delivering whatever decodes;
//! - structured messages with random fields — every message kind, records breaking every
//!   invariant, rosters of any shape, ballots at any round — tagged half the time with the
//!   installed roster, so they get past the roster check to the voter's and proposer's
//!   handlers;
//! - random datagrams and mutated ones to SWIM,
//!
//! while clients keep locking, renewing, cancelling, releasing and revoking through the nodes
//! (and now and then change the roster), so that whatever a node
//! stored is read again by its next ballots. Any panic fails the test. The seed comes from
//! `FUZZ_SEED` (default: the time), and is printed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lockmesh::agent::swim::{claimed_sender, Swim, SwimId};
use lockmesh::core::message::AcceptedValue;
use lockmesh::core::record::{Grant, LogEntry, Outcome, Waiter};
use lockmesh::core::rng::Rng;
use lockmesh::core::{
    Acquire, Ballot, Body, Config, Durable, Envelope, GrantRef, Key, LeaseRule, LockOp, LockRecord, LockType, Node, NodeId, Op, Priority,
    Request, RequestId, Roster, RosterChange, RosterId, RosterOp, Time, Value, Which,
};
use lockmesh::mesh::wire::{self, Frame, PeerInfo};

struct Gen(Rng);

impl Gen {
    fn n(&mut self, hi: u64) -> u64 {
        self.0.between(0, hi)
    }

    fn any(&mut self) -> u64 {
        match self.n(4) {
            0 => 0,
            1 => self.n(16),
            2 => u64::MAX - self.n(3),
            _ => self.0.next_u64(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.0.chance(p)
    }

    fn text(&mut self) -> String {
        let len = self.n(12) as usize;
        (0..len).map(|_| (b'a' + self.n(25) as u8) as char).collect()
    }

    fn node(&mut self, known: &[NodeId]) -> NodeId {
        if !known.is_empty() && self.chance(0.7) {
            known[self.n(known.len() as u64 - 1) as usize].clone()
        } else {
            NodeId::new(self.text(), self.any(), [self.n(255) as u8; 32])
        }
    }

    fn key(&mut self) -> Key {
        match self.n(5) {
            0 => Key::Roster,
            1 => Key::Scope(self.text()),
            _ => Key::Scope(format!("s{}", self.n(2))),
        }
    }

    fn ballot(&mut self, known: &[NodeId]) -> Ballot {
        let proposer = if self.chance(0.5) { self.node(known).incarnation } else { self.any() };
        Ballot { round: self.any(), proposer }
    }

    fn lock_type(&mut self) -> LockType {
        if self.chance(0.5) {
            LockType::Write
        } else {
            LockType::Read
        }
    }

    fn grant(&mut self) -> Grant {
        Grant {
            holder: self.text(),
            token: self.any(),
            id: self.any(),
            reported: self.chance(0.5),
            pickup_us: self.any(),
            lock_type: self.lock_type(),
            lease_us: self.any(),
            auto: None,
            node: self.text(),
            priority: Priority::Normal,
            reason: None,
            request_id: RequestId(self.text()),
            lease_seq: self.any(),
            elapsed_floor_us: self.any(),
            revoked: self.chance(0.2),
            lock_delay_us: self.any(),
            held_floor_us: self.any(),
        }
    }

    fn waiter(&mut self) -> Waiter {
        Waiter {
            holder: self.text(),
            request_id: RequestId(self.text()),
            lock_type: self.lock_type(),
            lease: LeaseRule::Fixed(self.any()),
            lock_delay_us: self.any(),
            wait_lease_us: self.any(),
            node: self.text(),
            priority: Priority::Low,
            reason: None,
            arrival: self.any(),
            poll_seq: self.any(),
            elapsed_floor_us: self.any(),
            waited_floor_us: self.any(),
        }
    }

    fn record(&mut self) -> LockRecord {
        let mut r = LockRecord { last_token: self.any(), next_lease_seq: self.any(), next_arrival: self.any(), delay_remaining_us: self.any(), ..LockRecord::default() };
        for _ in 0..self.n(3) {
            r.holders.push(self.grant());
        }
        for _ in 0..self.n(3) {
            r.queue.push(self.waiter());
        }
        for _ in 0..self.n(4) {
            let outcome = [Outcome::Ended, Outcome::Used, Outcome::Released, Outcome::Refused][self.n(3) as usize];
            r.log.push(LogEntry { request: self.any(), outcome, elapsed_floor_us: self.any() });
        }
        if self.chance(0.3) {
            r.log_forgot_floor_us = Some(self.any());
        }
        r
    }

    fn roster(&mut self, known: &[NodeId], installed: Option<&Roster>) -> Roster {
        let mut voters: Vec<NodeId> = (0..self.n(4)).map(|_| self.node(known)).collect();
        if self.chance(0.6) {
            voters.sort();
            voters.dedup_by(|a, b| a.name == b.name);
        }
        let cluster_id = match installed {
            Some(r) if self.chance(0.7) => r.cluster_id,
            _ => (self.any() as u128) << 64 | self.any() as u128,
        };
        let version = match installed {
            Some(r) if self.chance(0.7) => r.version.saturating_add(self.n(3)),
            _ => self.any(),
        };
        let members = if self.chance(0.3) { (0..self.n(3)).map(|_| self.node(known)).collect() } else { Vec::new() };
        let banned = if self.chance(0.2) { (0..self.n(2)).map(|_| lockmesh::core::Ban { name: self.chance(0.8).then(|| self.text()), key: [self.n(255) as u8; 32] }).collect() } else { Vec::new() };
        Roster { cluster_id, version, voters, members, banned, target: self.n(10) as u8, sweep_done: self.chance(0.5), round_floor: self.any() }
    }

    /// A record an honest history could reach: random operations applied to an empty one
    /// (it passes validation, so it gets stored and read).
    fn honest_record(&mut self) -> LockRecord {
        let mut r = LockRecord::default();
        let limits = lockmesh::core::Limits::default();
        for k in 0..self.n(8) {
            let holder = format!("h{}", self.n(3));
            let op = match self.n(4) {
                0 | 1 => LockOp::Acquire(Acquire {
                    request_id: RequestId(format!("f{k}")),
                    holder,
                    lock_type: self.lock_type(),
                    lease: LeaseRule::Fixed(self.n(10_000_000)),
                    lock_delay_us: self.n(1_000_000),
                    wait: self.chance(0.5),
                    wait_lease_us: self.n(3_000_000),
                    priority: Priority::High,
                    reason: None,
                    node: "forged".into(),
                    poll: false,
                }),
                2 => LockOp::Release { request_id: RequestId(format!("g{k}")), grant: GrantRef { holder, which: Which::Held } },
                3 => LockOp::Cancel { request_id: RequestId(format!("f{}", self.n(k))) },
                _ => LockOp::Revoke { token: None },
            };
            let _ = r.apply(&op, self.n(1_000_000), &limits);
            r.advance(self.n(2_000_000), &limits);
        }
        r
    }

    fn signed(&mut self) -> lockmesh::core::Signed {
        let (public_key, signature) = (self.bytes(), self.bytes());
        lockmesh::core::Signed { public_key: public_key.into_iter().take(120).collect(), signature: signature.into_iter().take(90).collect() }
    }

    /// A roster with a proof: signatures (random bytes) of known nodes, under the installed
    /// roster or any.
    fn link(&mut self, known: &[NodeId], installed: Option<&Roster>) -> lockmesh::core::Link {
        let roster = self.roster(known, installed);
        let under = match installed {
            Some(r) if self.chance(0.7) => r.id(),
            _ => RosterId { version: self.any(), digest: self.any() },
        };
        let signatures = (0..self.n(4)).map(|_| (self.node(known), self.signed())).collect();
        lockmesh::core::Link { roster, proof: lockmesh::core::Proof { ballot: self.ballot(known), under, signatures } }
    }

    fn value(&mut self, known: &[NodeId], installed: Option<&Roster>) -> Value {
        if self.chance(0.4) {
            Value::Lock(self.honest_record())
        } else if self.chance(0.7) {
            Value::Lock(self.record())
        } else {
            Value::Roster(self.roster(known, installed))
        }
    }

    fn body(&mut self, known: &[NodeId], installed: Option<&Roster>) -> Body {
        let key = self.key();
        let ballot = self.ballot(known);
        match self.n(11) {
            0 => Body::Prepare { key, ballot },
            1 => {
                let accepted = self.chance(0.7).then(|| AcceptedValue {
                    ballot: self.ballot(known),
                    value: self.value(known, installed),
                    roster: installed.map(Roster::id),
                });
                Body::Promise { key, ballot, accepted, age_us: self.any() }
            }
            2 | 3 => Body::Accept { key, ballot, value: self.value(known, installed) },
            4 => Body::Accepted { key, ballot, signed: self.chance(0.5).then(|| self.signed()) },
            5 => Body::Refuse { key, ballot, why: lockmesh::core::message::Refusal::Promised(self.ballot(known)) },
            6 => Body::Commit { links: (0..self.n(3)).map(|_| self.link(known, installed)).collect() },
            7 => Body::RosterPull { have: self.chance(0.5).then(|| (self.any(), self.chance(0.5))) },
            8 => Body::ListKeys { sweep: self.any(), after: self.chance(0.5).then(|| self.text()) },
            9 => Body::KeyList {
                sweep: self.any(),
                after: self.chance(0.5).then(|| self.text()),
                keys: (0..self.n(4)).map(|_| self.text()).collect(),
                more: self.chance(0.5),
                max_round: self.any(),
            },
            10 => Body::BootstrapOffer { roster: self.roster(known, installed) },
            _ => Body::BootstrapAck { roster: RosterId { version: self.any(), digest: self.any() }, signed: self.signed() },
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.n(600) as usize;
        (0..len).map(|_| self.n(255) as u8).collect()
    }

    /// Flips, overwrites, cuts or splices a few bytes of `b`.
    fn mutate(&mut self, mut b: Vec<u8>) -> Vec<u8> {
        for _ in 0..=self.n(4) {
            if b.is_empty() {
                break;
            }
            let at = self.n(b.len() as u64 - 1) as usize;
            match self.n(4) {
                0 => b[at] ^= 1 << self.n(7),
                1 => b[at] = self.n(255) as u8,
                2 => b.truncate(at),
                3 => {
                    let extra = self.bytes();
                    b.splice(at..at, extra.into_iter().take(8));
                }
                _ => b[at] = 0xff,
            }
        }
        b
    }
}

/// Three voters that deliver every message at once, with clients on top.
struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<Envelope>,
    now: u64,
    next_client: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let key = |i: u64| lockmesh::core::Ed25519Signer::from_seed(&[i as u8 + 1; 32]);
        let ids: Vec<NodeId> = (0..3).map(|i| NodeId::new(format!("n{i}"), 100 + i, key(i).key_hash())).collect();
        let nodes = (0..3).map(|i| Node::new(Config::default(), ids[i as usize].clone(), Durable::default(), Time(0), 7, Box::new(key(i)))).collect();
        let mut c = Cluster { nodes, queue: VecDeque::new(), now: 0, next_client: 1 };
        for i in 0..3 {
            c.nodes[i].bootstrap(Time(0), ids.clone(), 5).expect("bootstrap");
        }
        c.settle();
        c
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id().clone()).collect()
    }

    fn collect(&mut self) {
        for n in &mut self.nodes {
            let out = n.drain();
            self.queue.extend(out.early);
            self.queue.extend(out.messages);
            let _ = n.take_rejected();
        }
    }

    /// Delivers messages between the three (those to others are dropped) for a while.
    fn settle(&mut self) {
        self.collect();
        for _ in 0..2_000 {
            let Some(e) = self.queue.pop_front() else { return };
            let Some(i) = self.nodes.iter().position(|n| *n.id() == e.to) else { continue };
            self.nodes[i].handle_message(Time(self.now), e);
            self.collect();
        }
        self.queue.clear();
    }

    fn deliver(&mut self, i: usize, e: Envelope) {
        self.nodes[i].handle_message(Time(self.now), e);
        self.settle();
    }

    /// A client's lock, release or read through a random node; time moves on.
    fn client_step(&mut self, g: &mut Gen) {
        self.now += g.n(50_000);
        let i = g.n(2) as usize;
        let scope = format!("s{}", g.n(2));
        let holder = format!("h{}", g.n(3));
        let op = match g.n(6) {
            0 | 1 => LockOp::Acquire(Acquire {
                request_id: RequestId(format!("r{}", self.next_client)),
                holder,
                lock_type: g.lock_type(),
                lease: LeaseRule::Fixed(g.n(2_000_000)),
                lock_delay_us: 0,
                wait: g.chance(0.5),
                wait_lease_us: 1_000_000,
                priority: Priority::Normal,
                reason: None,
                node: "n".into(),
                poll: false,
            }),
            2 => LockOp::Release { request_id: RequestId(format!("u{}", self.next_client)), grant: GrantRef { holder, which: Which::Held } },
            3 => LockOp::Renew { grant: GrantRef { holder, which: Which::Grant { token: g.n(8), id: g.n(8) } }, lease: LeaseRule::Fixed(g.n(2_000_000)) },
            4 => LockOp::Cancel { request_id: RequestId(format!("r{}", g.n(self.next_client))) },
            5 => LockOp::Revoke { token: g.chance(0.5).then(|| g.n(8)) },
            _ => LockOp::Read,
        };
        self.next_client += 1;
        // Now and then a roster change instead (an operator's; most are refused).
        let (key, op) = if g.chance(0.05) {
            let node = self.nodes[g.n(2) as usize].id().clone();
            let other = NodeId::new(format!("x{}", g.n(3)), g.any(), [9; 32]);
            let change = match g.n(6) {
                0 => RosterChange::Remove(node),
                1 => RosterChange::Add(other),
                2 => RosterChange::AddMember(other),
                3 => RosterChange::Ban(node),
                4 => RosterChange::Demote(node),
                5 => RosterChange::SetTarget(g.n(12) as u8),
                _ => RosterChange::Unban { name: other.name, key: g.chance(0.5).then_some(other.key) },
            };
            (Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: None }))
        } else {
            (Key::Scope(scope), Op::Lock(op))
        };
        let request = Request { client: self.next_client, key, op, timeout_us: 1_000_000 };
        self.nodes[i].handle_request(Time(self.now), request);
        for n in &mut self.nodes {
            n.handle_timeout(Time(self.now));
        }
        self.settle();
    }
}

fn peer_info(g: &mut Gen) -> PeerInfo {
    PeerInfo { name: g.text(), incarnation: g.any(), key: [g.n(255) as u8; 32], mesh_addr: "127.0.0.1:1".parse().unwrap(), http_addr: "127.0.0.1:2".parse().unwrap(), bump: g.any(), zone: g.text() }
}

#[test]
fn peer_input_never_panics_a_node() {
    let seconds: u64 = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("fuzz: seed {seed} for {seconds} s (FUZZ_SEED={seed} replays the inputs)");
    let mut g = Gen(Rng::new(seed));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let me = SwimId { name: "n0".into(), incarnation: 1, mesh_addr: "127.0.0.1:7".parse().unwrap(), http_addr: "127.0.0.1:8".parse().unwrap(), bump: 1 };
    let mut swim = Swim::new(me, seed);
    let mut c = Cluster::new();
    let (mut frames, mut delivered, mut datagrams) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        // A fresh cluster now and then, so that early and late states both meet bad input.
        if frames % 5_000 == 4_999 {
            c = Cluster::new();
        }
        frames += 1;
        let ids = c.ids();
        let installed = c.nodes[0].roster().cloned();
        let i = g.n(2) as usize;
        let to = c.nodes[i].id().clone();
        let envelope = Envelope {
            from: g.node(&ids),
            to: to.clone(),
            roster: if g.chance(0.5) { installed.as_ref().map(Roster::id) } else { Some(RosterId { version: g.any(), digest: g.any() }) },
            body: g.body(&ids, installed.as_ref()),
        };
        let bytes = match g.n(3) {
            0 => g.bytes(),
            1 => {
                let frame = if g.chance(0.8) {
                    Frame::Core(envelope.clone())
                } else if g.chance(0.3) {
                    let from = NodeId::new(g.text(), g.any(), [g.n(255) as u8; 32]);
                    if g.chance(0.5) {
                        Frame::Subscribe { from, scopes: vec![g.text(), g.text()] }
                    } else {
                        Frame::News { from, scope: g.text(), last_seq: g.any(), holders: vec![lockmesh::core::RequestId(g.text())] }
                    }
                } else {
                    Frame::Hello { me: peer_info(&mut g), cluster_id: Some(g.any() as u128), roster_version: g.any(), peers: vec![peer_info(&mut g)], leaving: g.chance(0.5), down: vec![NodeId::new(g.text(), g.any(), [g.n(255) as u8; 32])] }
                };
                let encoded = wire::encode_prefixed(&frame).expect("a generated frame encodes");
                g.mutate(encoded[4..].to_vec())
            }
            _ => Vec::new(),
        };
        let decoded = if bytes.is_empty() { Some(envelope) } else {
            match wire::decode(&bytes) {
                Ok(Frame::Core(e)) => Some(e),
                _ => None,
            }
        };
        if let Some(mut e) = decoded {
            e.to = to;
            delivered += 1;
            c.deliver(i, e);
        }
        if g.chance(0.3) {
            c.client_step(&mut g);
        }
        if g.chance(0.2) {
            datagrams += 1;
            let random = g.bytes();
            let packet = if g.chance(0.5) { random } else { g.mutate(random) };
            let _ = claimed_sender(&packet);
            swim.handle_packet(&packet);
        }
    }
    println!("fuzz: {frames} frames ({delivered} delivered to a node), {datagrams} SWIM datagrams, no panic");
}
