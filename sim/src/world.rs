//! The simulated world: nodes with fake disks and clocks, a faulty network, clients, an
//! operator changing the roster, and a fault schedule, all driven by one seeded event queue.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use lockmesh_core::call::Outcome;
use lockmesh_core::rng::Rng;
use lockmesh_core::{
    Config, Drift, Durable, Envelope, Key, LockOp, Node, NodeId, Op, Outbox, Reply, Request, Roster, RosterChange, RosterOp,
    Time, ToDisk, Value, Write,
};

use crate::checker::Checker;
use crate::client::SimClient;
use crate::clock::Clock;
use crate::net::{Net, NetFaults};
use crate::serve::{CallRequest, Handler, CALL_BIT};
use crate::{Options, Report};

/// Ids of client requests carry the client's index in their upper half.
pub(crate) fn client_ref(client: usize, attempt: u64) -> u64 {
    ((client as u64) << 32) | (attempt & 0xffff_ffff)
}

pub(crate) enum Event {
    Deliver { to: usize, envelope: Envelope },
    Request { to: usize, request: Request },
    Reply { client: usize, reply: Reply },
    /// A client's call reaches a node, which serves it with the core's call module.
    Call { to: usize, client: usize, attempt: u64, request: CallRequest },
    /// The node's reply to an op of a call it serves.
    CallReply { id: u64, reply: Reply },
    CallWake { id: u64 },
    /// A call's answer reaches its client; `sent_at`: when the node sent it.
    CallAnswer { client: usize, attempt: u64, outcome: Outcome, sent_at: u64 },
    /// The node serving a client's call crashed (or was down): the connection is reset.
    CallLost { client: usize, attempt: u64 },
    NodeWake { node: usize },
    Flush { node: usize, generation: u64 },
    ClientWake { client: usize, token: u64 },
    Fault,
    Operator,
    Revoke,
    HealPartition { generation: u64 },
    Restart { node: usize, generation: u64 },
    Resume { node: usize, generation: u64 },
    AliveUpdate,
    Heal,
    /// A crash inside a durability window (profile `sync_crashes`).
    SyncCrash { node: usize, generation: u64 },
    /// The rogue sends a forged message (`rogue.rs`).
    Rogue,
    /// Placement looks at the members (`placement.rs`), every 300 ms.
    Place,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(crate) struct SimNode {
    pub id: NodeId,
    pub clock: Clock,
    pub(crate) disk: Durable,
    pub node: Option<Node>,
    pub paused_until: u64,
    /// Bumped by every crash, so events for the previous life are dropped.
    pub generation: u64,
    /// The core's outputs waiting for the disk: the runtime's send rule, the same code.
    outbox: Outbox,
    /// The outbox's write batches not yet synced, oldest first; a crash loses them all.
    pending: VecDeque<ToDisk>,
    last_flush_at: u64,
    wake_at: Option<u64>,
}

/// Which part of a run we are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Faults,
    Healed,
}

/// The per-seed choice of how hostile the world is.
#[derive(Clone, Debug)]
pub(crate) struct Hostility {
    pub net: NetFaults,
    pub fault_gap_us: (u64, u64),
    pub crash: u32,
    pub wipe: f64,
    pub pause: u32,
    pub partition: u32,
    pub roster_changes: bool,
    pub operator_gap_us: (u64, u64),
    pub downtime_us: (u64, u64),
    /// Longest time a disk takes to sync one batch (a slow disk widens every window between
    /// a step and the durability of its writes).
    pub disk_max_us: u64,
}

pub(crate) struct World {
    pub now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    pub rng: Rng,
    pub config: Config,
    pub nodes: Vec<SimNode>,
    pub clients: Vec<SimClient>,
    pub net: Net,
    pub checker: Checker,
    pub phase: Phase,
    pub hostility: Hostility,
    pub scopes: Vec<String>,
    pub verbose: bool,
    bootstrap_set: Vec<NodeId>,
    partition_generation: u64,
    pub events: u64,
    pub faults: [u64; 4],
    pub heal_at: u64,
    pub end_at: u64,
    sync_crashes: bool,
    /// Profile `stalls`: pause a node that takes a bare release or a cancel.
    pub(crate) stalls: bool,
    /// Calls being served at the nodes, by id.
    pub(crate) calls: BTreeMap<u64, Handler>,
    pub(crate) next_call: u64,
    /// Clients send some releases bare (naming no grant).
    pub(crate) bare_unlocks: bool,
    /// Forges messages as nodes the roster does not list.
    pub(crate) rogue: crate::rogue::Rogue,
    /// Profile `placement`: the nodes choose their voters.
    placement: bool,
    pub(crate) views: crate::placement::Views,
}

impl World {
    pub(crate) fn new(options: &Options) -> World {
        let mut rng = Rng::new(options.seed);
        let p = &options.profile;
        let drift = Drift::from_ppm(p.drift_ppm);
        let mut config = Config {
            drift,
            phase_timeout_us: 60_000,
            backoff_base_us: 2_000,
            backoff_max_us: 80_000,
            max_batch: 64,
            sweep_check_us: 400_000,
            sweep_takeover_us: 3_000_000,
            sweep_parallel: 8,
            bootstrap_resend_us: 100_000,
            ..Config::default()
        };
        config.limits.log_ttl_us = 30_000_000;
        // Without consuming the seed's randomness: sweeps list one or two scopes a page in two
        // seeds of three (so every sweep goes through several pages), and request logs hold
        // only eight entries in one of four (so they forget, and old requests are refused).
        config.sweep_page = [1, 2, 2048][(options.seed % 3) as usize];
        // (Not `seed % 4`, which would tie it to the profile a mixed seed runs: `seed % 8`.)
        if (options.seed / 8) % 4 == 1 {
            config.limits.log_capacity = 8;
        }
        // Short, so that aging reorders queues within a run's waits.
        config.limits.aging_us = 300_000;
        config.broken = options.broken;

        let config_log_capacity = config.limits.log_capacity;
        let hostility = Hostility::choose(&mut rng, p);
        let node_count = rng.between(p.min_nodes as u64, p.max_nodes as u64) as usize;
        let bound = p.drift_ppm as i64;
        let mut nodes = Vec::new();
        for i in 0..node_count {
            let clock = random_clock(&mut rng, bound);
            // Each node holds its own certificate: a key of its own (the same across wipes).
            let id = NodeId::new(format!("n{i}"), rng.next_u64() | 1, node_key(i).key_hash());
            nodes.push(SimNode {
                id,
                clock,
                disk: Durable::default(),
                node: None,
                paused_until: 0,
                generation: 0,
                outbox: Outbox::with_broken(config.broken),
                pending: VecDeque::new(),
                last_flush_at: 0,
                wake_at: None,
            });
        }
        let scope_count = if p.restart_storm { 1 } else { rng.between(1, p.max_scopes as u64) as usize };
        let scopes = (0..scope_count).map(|i| format!("scope-{i}")).collect();
        let client_count = rng.between(2, p.max_clients as u64) as usize;
        // Without consuming the seed's randomness either: in half the seeds processes share
        // holder names in pairs, and in two of three some releases are bare.
        let shared_holders = (options.seed / 3) % 2 == 0;
        let bare_unlocks = (options.seed / 5) % 3 != 0;
        let clients = (0..client_count).map(|i| SimClient::new(i, random_clock(&mut rng, bound), false, shared_holders)).collect();
        let net = Net::new(hostility.net.clone());
        World {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            config,
            nodes,
            clients,
            net,
            checker: Checker::new(config_log_capacity),
            phase: Phase::Faults,
            hostility,
            scopes,
            verbose: options.verbose,
            bootstrap_set: Vec::new(),
            partition_generation: 0,
            events: 0,
            faults: [0; 4],
            heal_at: p.fault_us,
            end_at: p.fault_us + p.liveness_us,
            sync_crashes: p.sync_crashes,
            stalls: p.stalls,
            calls: BTreeMap::new(),
            next_call: 0,
            bare_unlocks,
            rogue: crate::rogue::Rogue::new(options.seed),
            placement: p.placement,
            views: crate::placement::Views::default(),
        }
    }

    pub(crate) fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at: at.max(self.now), seq: self.seq, event });
    }

    /// A ballot node `i` runs now, as the Prepares and Accepts it has in flight show it.
    pub(crate) fn ballot_in_flight(&self, i: usize) -> Option<(Key, lockmesh_core::Ballot)> {
        let me = &self.nodes[i].id;
        self.queue.iter().find_map(|s| match &s.event {
            Event::Deliver { envelope, .. } if envelope.from == *me => match &envelope.body {
                lockmesh_core::Body::Prepare { key, ballot } | lockmesh_core::Body::Accept { key, ballot, .. } => Some((key.clone(), *ballot)),
                _ => None,
            },
            _ => None,
        })
    }

    pub(crate) fn log(&self, text: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:>10.6} {}", self.now as f64 / 1e6, text());
        }
    }

    pub(crate) fn run(mut self) -> Report {
        // Bootstrap: the first voters, all acknowledging one first roster.
        let voters: Vec<usize> = (0..self.nodes.len().min(3)).collect();
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        let ids: Vec<NodeId> = voters.iter().map(|&i| self.nodes[i].id.clone()).collect();
        self.checker.first_roster(&Roster::first(ids.clone(), self.target()));
        self.bootstrap_set = ids;
        for i in voters {
            self.bootstrap(i);
        }
        for c in 0..self.clients.len() {
            let at = self.rng.between(0, 200_000);
            self.wake_client_at(c, at);
        }
        let first_fault = self.rng.between(self.hostility.fault_gap_us.0, self.hostility.fault_gap_us.1);
        self.schedule(first_fault, Event::Fault);
        if self.hostility.roster_changes {
            let at = self.rng.between(self.hostility.operator_gap_us.0, self.hostility.operator_gap_us.1);
            self.schedule(at, Event::Operator);
        }
        let first_revoke = self.rng.between(500_000, 4_000_000);
        self.schedule(first_revoke, Event::Revoke);
        self.schedule(100_000, Event::Rogue);
        self.schedule(self.heal_at, Event::Heal);
        if self.placement {
            self.schedule(300_000, Event::Place);
        }

        while let Some(next) = self.queue.pop() {
            if next.at > self.end_at {
                break;
            }
            self.now = next.at;
            self.events += 1;
            self.handle(next.event);
            // (Placement runs on past the probes for a while: members up since the heal need
            // time to be fit to vote, and demoted ones their hold-down.)
            let placed = !self.placement || (self.now >= self.heal_at + 10_000_000 && self.placement_settled());
            if self.phase == Phase::Healed && self.probes_done() && self.roster_swept() && placed {
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> Report {
        if !self.probes_done() {
            let stuck: Vec<String> = self
                .clients
                .iter()
                .filter(|c| c.probe && !c.done)
                .map(|c| format!("{} ({:?})", c.scope_hint.clone().unwrap_or_default(), c.state_name()))
                .collect();
            let at = self.now;
            self.checker.violations.push(format!(
                "t={:.3}s liveness: {} s after healing, probes still not served: {}",
                at as f64 / 1e6,
                (self.end_at - self.heal_at) / 1_000_000,
                stuck.join(", ")
            ));
        }
        if !self.roster_swept() {
            let version = self.checker.latest_roster.as_ref().map_or(0, |r| r.version);
            let at = self.now;
            self.checker.violations.push(format!(
                "t={:.3}s liveness: {} s after healing, roster v{version} is chosen but its sweep is not",
                at as f64 / 1e6,
                (self.end_at - self.heal_at) / 1_000_000,
            ));
        }
        if self.placement {
            let verdict = self.placement_verdict();
            self.checker.violations.extend(verdict);
        }
        self.checker.finish();
        Report {
            violations: std::mem::take(&mut self.checker.violations),
            grants: self.checker.grants_trusted,
            auto_leases: self.checker.auto_leases,
            events: self.events,
            roster_version: self.checker.latest_roster.as_ref().map_or(0, |r| r.version),
            crashes: self.faults[0],
            wipes: self.faults[1],
            pauses: self.faults[2],
            partitions: self.faults[3],
            simulated_us: self.now,
        }
    }

    /// The latest chosen roster change is complete: chosen with `sweep_done` (so it was
    /// installed, announced and swept). A change chosen while its proposer was cut off must
    /// still complete after healing.
    fn roster_swept(&self) -> bool {
        self.checker.latest_roster.as_ref().is_none_or(|r| r.sweep_done)
    }

    fn probes_done(&self) -> bool {
        let mut any = false;
        for c in self.clients.iter().filter(|c| c.probe) {
            any = true;
            if !c.done {
                return false;
            }
        }
        any
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { to, envelope } => {
                if self.nodes[to].paused_until > self.now {
                    let at = self.nodes[to].paused_until;
                    self.schedule(at, Event::Deliver { to, envelope });
                    return;
                }
                self.step_node(to, |node, now| node.handle_message(now, envelope));
            }
            Event::Request { to, mut request } => {
                if self.nodes[to].paused_until > self.now {
                    let at = self.nodes[to].paused_until;
                    self.schedule(at, Event::Request { to, request });
                    return;
                }
                // The node serving an acquire names itself in it (as the API does), tagged with
                // the attempt, so a grant says which copy made it; the checker learns when that
                // copy reached a running node.
                if let (Key::Scope(scope), Op::Lock(LockOp::Acquire(a))) = (&request.key, &mut request.op) {
                    a.node = format!("{}#{}", self.nodes[to].id.name, request.client);
                    if self.nodes[to].node.is_some() {
                        self.checker.reached(self.now, scope, &a.request_id, &a.node);
                    }
                }
                self.step_node(to, |node, now| node.handle_request(now, request));
            }
            Event::Reply { client, reply } => self.client_reply(client, reply),
            Event::Call { to, client, attempt, request } => {
                if self.nodes[to].paused_until > self.now {
                    let at = self.nodes[to].paused_until;
                    self.schedule(at, Event::Call { to, client, attempt, request });
                    return;
                }
                self.call_arrived(to, client, attempt, request);
            }
            Event::CallReply { id, reply } => self.call_reply(id, reply),
            Event::CallWake { id } => self.call_wake(id),
            Event::CallAnswer { client, attempt, outcome, sent_at } => self.client_answer(client, attempt, outcome, sent_at),
            Event::CallLost { client, attempt } => self.client_call_lost(client, attempt),
            Event::NodeWake { node } => {
                if self.nodes[node].wake_at == Some(self.now) {
                    self.nodes[node].wake_at = None;
                }
                if self.nodes[node].paused_until > self.now {
                    let at = self.nodes[node].paused_until;
                    self.schedule(at, Event::NodeWake { node });
                    return;
                }
                self.step_node(node, |n, now| n.handle_timeout(now));
            }
            Event::Flush { node, generation } => {
                // A stopped process learns of no sync: what waited for it waits on.
                if self.nodes[node].paused_until > self.now {
                    let at = self.nodes[node].paused_until;
                    self.schedule(at, Event::Flush { node, generation });
                    return;
                }
                self.flush(node, generation);
            }
            Event::ClientWake { client, token } => {
                if self.clients[client].wake_token == token {
                    self.client_wake(client);
                }
            }
            Event::Fault => self.inject_fault(),
            Event::Operator => self.operator(),
            Event::Revoke => self.revoke(),
            Event::Rogue => {
                if self.phase == Phase::Faults {
                    self.rogue_act();
                }
            }
            Event::HealPartition { generation } => {
                if generation == self.partition_generation {
                    self.net.heal();
                    self.log(|| "partition healed".into());
                    self.schedule_alive_update();
                }
            }
            Event::Restart { node, generation } => {
                if self.nodes[node].generation == generation && self.nodes[node].node.is_none() {
                    self.start_node(node);
                }
            }
            Event::Resume { node, generation } => {
                if self.nodes[node].generation == generation {
                    self.nodes[node].paused_until = 0;
                }
            }
            Event::AliveUpdate => self.update_alive(),
            Event::Place => {
                self.place();
                if self.phase == Phase::Faults && self.rng.chance(0.02) {
                    self.set_target();
                }
                self.schedule(self.now + 300_000, Event::Place);
            }
            Event::Heal => self.heal(),
            Event::SyncCrash { node, generation } => {
                if self.nodes[node].generation == generation && self.nodes[node].node.is_some() {
                    self.crash(node);
                    self.faults[0] += 1;
                    let down = self.rng.between(self.hostility.downtime_us.0, self.hostility.downtime_us.1);
                    let generation = self.nodes[node].generation;
                    self.log(|| format!("crash n{node} inside a sync window for {}ms", down / 1000));
                    self.schedule(self.now + down, Event::Restart { node, generation });
                }
            }
        }
    }

    /// Runs one input through a node, then queues its output behind a disk sync.
    pub(crate) fn step_node(&mut self, i: usize, f: impl FnOnce(&mut Node, Time)) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_mut() else { return };
        let local = n.clock.local(now);
        f(node, local);
        // Every node here follows the protocol: none of their values may be refused.
        for (from, refused) in node.take_rejected() {
            // Honest nodes can send what another may not take (a Commit from a member the
            // receiver has not installed yet, a removed node's ballot): only invalid values
            // are impossible.
            let lockmesh_core::Refused::Invalid(why) = refused else { continue };
            if self.rogue.used.contains(&from) {
                continue;
            }
            let text = format!("validation: {} refused a value from {from}, an honest node: {why}", n.id);
            self.checker.violations.push(format!("t={:.3}s {text}", now as f64 / 1e6));
        }
        let out = node.drain();
        let next_local = node.next_timeout();
        let (now_out, to_disk) = n.outbox.submit(out);
        let wrote = to_disk.is_some();
        if let Some(batch) = to_disk {
            self.checker.written(now, &batch.writes);
            let n = &mut self.nodes[i];
            n.pending.push_back(batch);
            let latency = self.rng.between(20, self.hostility.disk_max_us);
            let at = (now + latency).max(n.last_flush_at);
            n.last_flush_at = at;
            let generation = n.generation;
            self.schedule(at, Event::Flush { node: i, generation });
        }
        let sent = !now_out.messages.is_empty();
        let own = usize::from(wrote);
        self.send_out(i, now_out.messages);
        self.reply_out(i, now_out.replies);
        // A crash inside the window: messages are out, writes of this node still unsynced —
        // now and then when they are only this batch's own, often when an earlier batch's.
        let unsynced = self.nodes[i].pending.len();
        let chance = if unsynced > own { 0.5 } else { 0.02 };
        if self.sync_crashes && sent && self.phase == Phase::Faults && unsynced > 0 && self.rng.chance(chance) {
            let generation = self.nodes[i].generation;
            self.schedule(now, Event::SyncCrash { node: i, generation });
        }
        if let Some(local_at) = next_local {
            let n = &mut self.nodes[i];
            let at = n.clock.true_at(local_at).max(now);
            if n.wake_at.is_none_or(|w| at < w) {
                n.wake_at = Some(at);
                self.schedule(at, Event::NodeWake { node: i });
            }
        }
    }

    /// The disk synced: the oldest batch is durable; the outbox releases what waited for it.
    fn flush(&mut self, i: usize, generation: u64) {
        let n = &mut self.nodes[i];
        if n.generation != generation || n.node.is_none() {
            return;
        }
        let Some(batch) = n.pending.pop_front() else { return };
        let seq = batch.seq;
        let from = n.id.clone();
        for write in batch.writes {
            match &write {
                Write::Slot(key, slot) => {
                    if let Some(a) = &slot.accepted {
                        self.checker.durable_acceptance(self.now, &from, key, a);
                    }
                }
                Write::Link(link) => {
                    self.checker.installed_roster(self.now, &from, &link.roster);
                    // The cluster formed: nodes that join it are given its id, as an
                    // operator passes `--cluster-id` (a ghost's first roster is refused then).
                    if link.roster.version == 1 {
                        for n in self.nodes.iter_mut().filter_map(|n| n.node.as_mut()) {
                            n.set_cluster_id(link.roster.cluster_id);
                        }
                    }
                }
                Write::RoundReserved(_) | Write::BootstrapAck(_) => {}
            }
            self.nodes[i].disk.apply(write);
        }
        let out = self.nodes[i].outbox.durable(seq);
        self.send_out(i, out.messages);
        self.reply_out(i, out.replies);
    }

    /// Puts node `i`'s messages on the network.
    fn send_out(&mut self, i: usize, messages: impl IntoIterator<Item = Envelope>) {
        for envelope in messages {
            self.log(|| describe(&envelope));
            let Some(to) = self.nodes.iter().position(|n| n.id.name == envelope.to.name) else { continue };
            for delay in self.net.deliveries(&mut self.rng, i, to) {
                self.schedule(self.now + delay, Event::Deliver { to, envelope: envelope.clone() });
            }
        }
    }

    /// Sends replies to their clients, after the checker has seen them.
    fn reply_out(&mut self, node: usize, replies: Vec<Reply>) {
        for reply in replies {
            self.checker.agreement(self.now, &reply);
            if reply.client & CALL_BIT != 0 {
                // To a call this node serves: no network in between. (The operator's requests,
                // client u64::MAX, carry the bit too; no call has their id, so their replies
                // are dropped, as the operator ignores them.)
                self.schedule(self.now, Event::CallReply { id: reply.client & !CALL_BIT, reply });
                continue;
            }
            let client = (reply.client >> 32) as usize;
            if let Some(delay) = self.net.client_delivery(&mut self.rng, client, node) {
                self.schedule(self.now + delay, Event::Reply { client, reply });
            }
        }
    }

    /// What the runtime does with `--bootstrap-expect`: every expected member proposes the
    /// same first roster, again after each restart until one is installed.
    fn bootstrap(&mut self, i: usize) {
        if !self.bootstrap_set.contains(&self.nodes[i].id) {
            return;
        }
        let ids = self.bootstrap_set.clone();
        let target = self.target();
        self.step_node(i, |node, now| {
            if node.roster().is_none() {
                let _ = node.bootstrap(now, ids, target);
            }
        });
    }

    fn start_node(&mut self, i: usize) {
        let seed = self.rng.next_u64();
        let n = &self.nodes[i];
        let local = n.clock.local(self.now);
        let mut node = Node::new(self.config.clone(), n.id.clone(), n.disk.clone(), local, seed, Box::new(node_key(i)));
        // Before it has a roster, a node takes one only from the nodes it joins through: all
        // the cluster's, as a `--join` list names them.
        node.set_seeds(self.nodes.iter().map(|n| (n.id.name.clone(), n.id.key)));
        if let Some(latest) = &self.checker.latest_roster {
            node.set_cluster_id(latest.cluster_id);
        }
        let n = &mut self.nodes[i];
        n.node = Some(node);
        n.paused_until = 0;
        n.wake_at = None;
        self.log(|| format!("start {}", self.nodes[i].id));
        self.step_node(i, |_, _| {});
        self.bootstrap(i);
        self.schedule_alive_update();
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        n.generation += 1;
        n.outbox = Outbox::with_broken(self.config.broken);
        n.pending.clear();
        n.wake_at = None;
        n.paused_until = 0;
        self.calls_lost(i);
        self.schedule_alive_update();
    }

    fn schedule_alive_update(&mut self) {
        let lag = self.rng.between(50_000, 500_000);
        self.schedule(self.now + lag, Event::AliveUpdate);
    }

    /// What each node's membership layer would see: the up nodes it can reach.
    fn update_alive(&mut self) {
        for i in 0..self.nodes.len() {
            let alive: Vec<NodeId> = (0..self.nodes.len())
                .filter(|&j| self.nodes[j].node.is_some() && (i == j || self.net.reachable(i, j)))
                .map(|j| self.nodes[j].id.clone())
                .collect();
            self.step_node(i, |node, _| node.set_alive(alive));
        }
    }

    fn inject_fault(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let h = self.hostility.clone();
        let total = h.crash + h.pause + h.partition;
        let mut pick = self.rng.between(0, total.max(1) as u64 - 1) as u32;
        let n = self.nodes.len();
        let victim = self.rng.index(n);
        if pick < h.crash {
            if self.nodes[victim].node.is_some() {
                self.crash(victim);
                self.faults[0] += 1;
                // Losing a voter's disk is survivable only while the other voters are intact, and
                // only an operator (a roster change) can repair it; more is a lost cluster.
                let wipe = self.rng.chance(h.wipe) && h.roster_changes && self.can_lose_disk(victim);
                if wipe {
                    self.faults[1] += 1;
                    let node = &mut self.nodes[victim];
                    node.disk = Durable::default();
                    node.id.incarnation = self.rng.next_u64() | 1;
                }
                let down = self.rng.between(h.downtime_us.0, h.downtime_us.1);
                let generation = self.nodes[victim].generation;
                self.log(|| format!("crash n{victim}{} for {}ms", if wipe { " (wiped)" } else { "" }, down / 1000));
                self.schedule(self.now + down, Event::Restart { node: victim, generation });
            }
        } else if {
            pick -= h.crash;
            pick < h.pause
        } {
            let length = self.rng.between(5_000, 2_500_000);
            self.pause(victim, length);
        } else {
            self.partition_generation += 1;
            self.faults[3] += 1;
            self.net.heal();
            let kind = self.rng.index(4);
            let mut order: Vec<usize> = (0..n).collect();
            for k in (1..n).rev() {
                let j = self.rng.index(k + 1);
                order.swap(k, j);
            }
            match kind {
                0 => {
                    let (one, rest) = order.split_at(1);
                    self.net.split(one, rest);
                }
                1 => {
                    let cut = self.rng.between(1, (n - 1) as u64) as usize;
                    let (left, right) = order.split_at(cut);
                    self.net.split(left, right);
                }
                2 => {
                    let a = order[0];
                    let b = order[1 % n];
                    if a != b {
                        self.net.cut.insert((a, b));
                    }
                }
                _ => {
                    // A bridge: order[0] stays linked to both sides, which cannot see each other.
                    if n >= 3 {
                        let rest = &order[1..];
                        let (left, right) = rest.split_at((rest.len() / 2).max(1));
                        self.net.split(left, right);
                    }
                }
            }
            // Clients, too, may sit on one side: each (in half the partitions) reaches only
            // the nodes of a random group, and is cut off from the others.
            if self.rng.chance(0.5) {
                for c in 0..self.clients.len() {
                    if self.clients[c].probe || !self.rng.chance(0.5) {
                        continue;
                    }
                    let reach = self.rng.between(1, n as u64) as usize;
                    for &node in &order[reach.min(n)..] {
                        self.net.client_cut.insert((c, node));
                    }
                    order.rotate_left(1);
                }
            }
            let length = self.rng.between(50_000, 3_000_000);
            let cut = self.net.cut.clone();
            let client_cut = self.net.client_cut.clone();
            self.log(|| format!("partition {cut:?} clients {client_cut:?} for {}ms", length / 1000));
            let generation = self.partition_generation;
            self.schedule(self.now + length, Event::HealPartition { generation });
            self.schedule_alive_update();
        }
        let gap = self.rng.between(h.fault_gap_us.0, h.fault_gap_us.1);
        self.schedule(self.now + gap, Event::Fault);
    }

    /// Stops node `i` for `length`: messages, timers, calls and disk syncs wait; its clock
    /// runs on.
    pub(crate) fn pause(&mut self, i: usize, length: u64) {
        self.faults[2] += 1;
        self.nodes[i].paused_until = self.now + length;
        let generation = self.nodes[i].generation;
        self.log(|| format!("pause n{i} for {}ms", length / 1000));
        self.schedule(self.now + length, Event::Resume { node: i, generation });
    }

    /// Whether `victim` may lose its disk and the cluster stay repairable: every roster that is
    /// chosen or installed anywhere has at least three voters, all still on the disk they were
    /// added with. So at most one voter is amnesiac at a time, until the operator has replaced
    /// it everywhere. (Losing a majority of disks loses the cluster, as in any quorum system.)
    fn can_lose_disk(&self, victim: usize) -> bool {
        let _ = victim;
        let intact = |r: &Roster| r.voters.len() >= 3 && r.voters.iter().all(|v| self.nodes.iter().any(|n| n.id == *v));
        let installed = self.nodes.iter().filter_map(|n| n.node.as_ref().and_then(|node| node.roster()));
        // Rosters older than the latest chosen one are no longer in force and can never be
        // chosen again; of the others, one installed on the disk of a node that is down, or
        // accepted by a voter (on disk or on its way there), may still be the one in force.
        let latest = self.checker.latest_roster.as_ref().map_or(0, |r| r.version);
        let on_disk = self.nodes.iter().filter_map(|n| n.disk.roster());
        let slots = self.nodes.iter().flat_map(|n| {
            let pending = n.pending.iter().flat_map(|b| b.writes.iter()).filter_map(|w| match w {
                Write::Slot(Key::Roster, slot) => Some(slot),
                _ => None,
            });
            n.disk.slots.get(&Key::Roster).into_iter().chain(pending)
        });
        let accepted = slots.filter_map(|slot| match slot.accepted.as_ref().map(|a| &a.value) {
            Some(Value::Roster(r)) => Some(r),
            _ => None,
        });
        let maybe_in_force = on_disk.chain(accepted).filter(|r| r.version >= latest);
        self.checker.latest_roster.iter().chain(installed).chain(maybe_in_force).all(intact)
    }

    /// The voter target the cluster forms with: three when placement runs (more nodes than
    /// that, so some are members that do not vote), else five (every node a voter).
    pub(crate) fn target(&self) -> u8 {
        if self.placement { 3 } else { lockmesh_core::roster::DEFAULT_TARGET }
    }

    /// The operator asks a random node for a roster change chosen from the latest roster.
    fn operator(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let h = self.hostility.clone();
        let gap = self.rng.between(h.operator_gap_us.0, h.operator_gap_us.1);
        self.schedule(self.now + gap, Event::Operator);
        let Some(latest) = self.checker.latest_roster.clone() else { return };
        let current = |w: &World, name: &str| w.nodes.iter().find(|n| n.id.name == name).map(|n| n.id.clone());
        let stale = latest.voters.iter().find(|v| current(self, &v.name).is_some_and(|c| c != **v)).cloned();
        let outside: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| !latest.voters.iter().any(|v| v.name == n.id.name))
            .map(|n| n.id.clone())
            .collect();
        // Members that do not vote: proposers the voters take ballots from.
        let stale_member = latest.members.iter().find(|m| current(self, &m.name).is_some_and(|c| c != **m)).cloned();
        let joinable: Vec<NodeId> = outside.iter().filter(|n| !latest.members.iter().any(|m| m.name == n.name)).cloned().collect();
        // Never below three voters: a two-voter roster loses everything with one disk.
        let change = if let Some(stale) = stale_member {
            RosterChange::Remove(stale)
        } else if let Some(ban) = latest.banned.first().filter(|_| self.rng.chance(0.5)) {
            // An admin re-admits a node it removed (auto admission may then add it again).
            RosterChange::Unban { name: ban.name.clone().unwrap_or_default(), key: Some(ban.key) }
        } else if latest.voters.len() > 3 && self.rng.chance(0.1) {
            // An admin removes a voter for good: banned, until re-admitted.
            RosterChange::Ban(latest.voters[self.rng.index(latest.voters.len())].clone())
        } else if latest.voters.len() > 3 && self.rng.chance(0.1) {
            // Placement demotes a voter (over the target, or to replace or re-spread it): it
            // stays a member and proposes.
            RosterChange::Demote(latest.voters[self.rng.index(latest.voters.len())].clone())
        } else if self.rng.chance(0.05) {
            // An admin sets the voter target (the same as now is refused).
            RosterChange::SetTarget([1, 3, 5, 7, 9][self.rng.index(5)])
        } else if !joinable.is_empty() && self.rng.chance(0.25) {
            RosterChange::AddMember(joinable[self.rng.index(joinable.len())].clone())
        } else if let Some(stale) = stale {
            if latest.voters.len() > 3 {
                RosterChange::Remove(stale)
            } else if !outside.is_empty() {
                RosterChange::Add(outside[self.rng.index(outside.len())].clone())
            } else {
                return;
            }
        } else if !outside.is_empty() && (latest.voters.len() < 3 || self.rng.chance(0.5)) {
            RosterChange::Add(outside[self.rng.index(outside.len())].clone())
        } else if latest.voters.len() > 3 {
            // Shrinking below three would leave a lost disk fatal; the stale case above may.
            RosterChange::Remove(latest.voters[self.rng.index(latest.voters.len())].clone())
        } else {
            return;
        };
        let to = self.rng.index(self.nodes.len());
        self.log(|| format!("operator asks n{to}: {change:?}"));
        let request = Request { client: u64::MAX, key: Key::Roster, op: Op::Roster(RosterOp::Change { change, expected_version: Some(latest.version) }), timeout_us: 1_000_000 };
        self.schedule(self.now + 500, Event::Request { to, request });
    }

    /// An admin revokes whoever holds a random scope: renewals stop, the grant ends by expiry.
    fn revoke(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let next = self.rng.between(500_000, 4_000_000);
        self.schedule(self.now + next, Event::Revoke);
        let scope = self.scopes[self.rng.index(self.scopes.len())].clone();
        let to = self.rng.index(self.nodes.len());
        self.log(|| format!("admin revokes {scope} via n{to}"));
        let op = Op::Lock(LockOp::Revoke { token: None });
        let request = Request { client: u64::MAX, key: Key::Scope(scope), op, timeout_us: 1_000_000 };
        self.schedule(self.now + 500, Event::Request { to, request });
    }

    /// The end of the fault phase: a calm network, every node up, no new faults. Clients wind
    /// down and one probe per scope must get the lock within the liveness bound.
    fn heal(&mut self) {
        self.phase = Phase::Healed;
        self.net.heal();
        self.net.faults = NetFaults::calm();
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until = 0;
            if self.nodes[i].node.is_none() {
                self.start_node(i);
            }
        }
        self.schedule_alive_update();
        let first_probe = self.clients.len();
        let scopes = self.scopes.clone();
        for (k, scope) in scopes.into_iter().enumerate() {
            let clock = random_clock(&mut self.rng, self.config.drift.ppm() as i64);
            let mut probe = SimClient::new(first_probe + k, clock, true, false);
            probe.scope_hint = Some(scope);
            self.clients.push(probe);
            // Give leases of crashed holders time to run out before probing.
            let at = self.now + 3_000_000 + self.rng.between(0, 200_000);
            self.wake_client_at(first_probe + k, at);
        }
        self.log(|| "healed".into());
    }
}

/// One line about a message, for verbose replays.
fn describe(e: &Envelope) -> String {
    use lockmesh_core::Body::*;
    let body = match &e.body {
        Prepare { key, ballot } => format!("prepare {key:?} {}.{:x}", ballot.round, ballot.proposer & 0xfff),
        Promise { key, ballot, accepted, age_us } => format!(
            "promise {key:?} {}.{:x} accepted={:?} age={}us",
            ballot.round,
            ballot.proposer & 0xfff,
            accepted.as_ref().map(|a| (a.ballot.round, summary(&a.value))),
            age_us
        ),
        Accept { key, ballot, value } => format!("accept {key:?} {}.{:x} {}", ballot.round, ballot.proposer & 0xfff, summary(value)),
        Accepted { key, ballot, signed } => format!("accepted {key:?} {}.{:x}{}", ballot.round, ballot.proposer & 0xfff, if signed.is_some() { " signed" } else { "" }),
        Commit { links } => format!("commit {:?}", links.iter().map(|l| (l.roster.version, l.roster.sweep_done, l.proof.signatures.len())).collect::<Vec<_>>()),
        Refuse { key, ballot, why } => format!("refuse {key:?} {}.{:x} {why:?}", ballot.round, ballot.proposer & 0xfff),
        other => format!("{other:?}"),
    };
    let tag = e.roster.map_or("-".to_string(), |r| format!("v{}", r.version));
    format!("  {} -> {} [{tag}]: {body}", e.from.name, e.to.name)
}

fn summary(value: &lockmesh_core::Value) -> String {
    match value {
        lockmesh_core::Value::Lock(r) => {
            let holders: Vec<String> =
                r.holders.iter().map(|g| format!("{}:t{}:{}/{}ms", g.holder, g.token, g.elapsed_floor_us / 1000, g.lease_us / 1000)).collect();
            let queue: Vec<String> = r.queue.iter().map(|w| w.holder.clone()).collect();
            format!("[{}] q[{}] last={}", holders.join(","), queue.join(","), r.last_token)
        }
        lockmesh_core::Value::Roster(r) => format!("roster v{} {:?} swept={}", r.version, r.voters.iter().map(|v| &v.name).collect::<Vec<_>>(), r.sweep_done),
    }
}

fn random_clock(rng: &mut Rng, bound_ppm: i64) -> Clock {
    let rate_ppm = match rng.index(4) {
        0 => bound_ppm,
        1 => -bound_ppm,
        _ => rng.between(0, 2 * bound_ppm as u64) as i64 - bound_ppm,
    };
    Clock { offset_us: rng.between(0, 1_000_000_000), rate_ppm }
}

impl Hostility {
    fn choose(rng: &mut Rng, profile: &crate::Profile) -> Hostility {
        let roster_churn = profile.roster_churn;
        let drop = [0.0, 0.01, 0.05, 0.15][rng.index(4)];
        let duplicate = [0.0, 0.02, 0.1][rng.index(3)];
        let delay_max_us = [500, 3_000, 20_000][rng.index(3)];
        let spike = [0.0, 0.01, 0.05][rng.index(3)];
        let quiet = rng.chance(0.15);
        let mut h = Hostility {
            net: NetFaults { drop, duplicate, delay_min_us: 50, delay_max_us, spike, spike_max_us: 400_000 },
            fault_gap_us: if quiet { (2_000_000, 6_000_000) } else { (50_000, 1_000_000) },
            crash: rng.between(0, 3) as u32,
            wipe: [0.0, 0.1, 0.3][rng.index(3)],
            pause: rng.between(0, 3) as u32,
            partition: rng.between(1, 4) as u32,
            roster_changes: roster_churn || rng.chance(0.5),
            operator_gap_us: if roster_churn { (20_000, 300_000) } else { (300_000, 3_000_000) },
            downtime_us: (10_000, 2_000_000),
            disk_max_us: [1_500, 1_500, 30_000][rng.index(3)],
        };
        if profile.restart_storm {
            h.fault_gap_us = (10_000, 80_000);
            h.crash = 1;
            h.pause = 0;
            h.partition = 0;
            h.downtime_us = (0, 1_000);
            h.roster_changes = false;
            h.net.delay_max_us = 40_000;
            h.net.spike = 0.0;
        }
        h
    }
}

/// Node `i`'s certificate key: its own, the same across wipes (an Ed25519 key from a seed).
pub(crate) fn node_key(i: usize) -> lockmesh_core::Ed25519Signer {
    lockmesh_core::Ed25519Signer::from_seed(&[i as u8 + 1; 32])
}
