//! A node of the core: the acceptor for every register, the proposer for the requests it
//! receives, and the keeper of the installed roster. Sweeps and bootstrap live beside it
//! (`sweep.rs`, `bootstrap.rs`) as further `impl Node` blocks.

use crate::prelude::*;

use alloc::vec;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};

use super::acceptor::Acceptor;
use super::broken::broken;
use super::durable::{Durable, Write};
use super::message::{Ballot, Body, Envelope, Key, Refusal, Value};
use super::proof::{self, Link, Proof, Signer};
use super::proposer::{Phase, Promise, Proposal, Vote};
use super::record::{LockOp, LockRecord, LockResult};
use super::rng::Rng;
use super::roster::{ChangeError, KeyHash, NodeId, Roster, RosterChange, RosterId};
use super::sweep::Sweep;
use super::time::Time;
use super::validate;
use super::Config;

/// How far above a refused ballot the round a voter no majority vouches for reports is still
/// taken (`vouch`): a removed voter's refusals can then move this node's rounds up only this
/// much per ballot it refuses, 2^30 ballots from the bound.
pub const UNTRUSTED_ROUND_LEAP: u64 = 1 << 32;

/// Links of the roster chain sent in one `Commit` to a peer that pulls.
pub const CHAIN_PAGE: usize = 16;

/// An operation on one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Lock(LockOp),
    Roster(RosterOp),
}

/// An operation on the roster register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterOp {
    /// Add or remove one voter; allowed only once the previous change is swept, and, if
    /// `expected_version` is given, only to that roster version (compare-and-set, so that
    /// automation deciding on one roster never applies its change to a later one).
    Change { change: RosterChange, expected_version: Option<u64> },
    /// Record that every scope was rewritten under roster `version`, and that every ballot
    /// round promised under earlier rosters is at most `round_floor`.
    MarkSwept { version: u64, round_floor: u64 },
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterResult {
    /// The change is chosen; the new roster is installed here and its sweep has started.
    Changed(Roster),
    Swept,
    Current(Roster),
    Refused(RosterRefusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterRefusal {
    /// The roster moved on since this node's installed one; retry after it catches up.
    Moved { current: u64 },
    /// The previous change is still being swept; retry later.
    Sweeping,
    Invalid(ChangeError),
}

/// The answer to an operation, decided by a majority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Lock(LockResult),
    Roster(RosterResult),
}

/// Why a request got no decided answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An Accept carrying the request's effect was sent and no outcome is known: it may or may
    /// not have taken effect. Retry with the same request id.
    Timeout,
    /// No majority answered and nothing carrying the request's effect was sent from here.
    NoQuorum,
    /// This node has no installed roster: not part of a cluster yet.
    NoRoster,
    /// This node is not a member of its installed roster (removed, or not admitted yet):
    /// the voters would refuse its ballots. Nothing carrying the request's effect was sent.
    NotMember,
    /// The request is malformed (the key and operation do not match); nothing changed.
    Invalid(&'static str),
    /// Too many requests for this key are already waiting here; nothing changed.
    Overloaded,
}

/// A client request for one register.
#[derive(Clone, Debug)]
pub struct Request {
    /// The runtime's handle for routing the reply.
    pub client: u64,
    pub key: Key,
    pub op: Op,
    /// After this long, answer `Timeout` or `NoQuorum` instead of retrying further.
    pub timeout_us: u64,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub client: u64,
    pub key: Key,
    pub result: Result<Answer, Failure>,
    /// The voters that agreed to the decision (accepted it, or promised on a chosen value
    /// it left unchanged), out of `voters` in the ballot's roster; empty for failures.
    pub agreed: Vec<NodeId>,
    pub voters: usize,
    /// The ballot the answer was decided at.
    pub ballot: Option<Ballot>,
}

/// Who decided an answer: the ballot, the voters that agreed, and the roster's size.
#[derive(Clone, Debug)]
pub(super) struct Agreement {
    pub ballot: Ballot,
    pub agreed: Vec<NodeId>,
    pub voters: usize,
}

/// What the node asks its runtime to do with one batch. Persist `writes` (durably) first,
/// then send `messages` and deliver `replies`. `early` messages may leave sooner: as soon as
/// every *earlier* batch's writes are durable, without waiting for this batch's own (they
/// rely on none of them; see `Node::may_leave_early`).
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub writes: Vec<Write>,
    pub early: Vec<Envelope>,
    pub messages: Vec<Envelope>,
    pub replies: Vec<Reply>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.early.is_empty() && self.messages.is_empty() && self.replies.is_empty()
    }
}

/// Contention of one scope, from this voter's copy of its record.
#[derive(Clone, Debug)]
pub struct ScopeContention {
    pub scope: String,
    pub waiters: u64,
    pub contention: super::record::Contention,
}

/// Contention over the scopes this voter holds (see `Node::local_contention`).
#[derive(Clone, Debug, Default)]
pub struct LocalContention {
    pub scanned: u64,
    pub waiters: u64,
    pub attempts: u64,
    pub conflicts: u64,
    pub top: Vec<ScopeContention>,
}

/// Counters for metrics, plain numbers the runtime reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ballots started (first attempts and retries).
    pub ballots: u64,
    /// Attempts that failed and were retried with a higher ballot.
    pub retries: u64,
    /// Answers decided from a chosen value without an Accept.
    pub answered_without_write: u64,
    /// Ballots that skipped the Prepare: the proposer's previous Accept on the register was
    /// taken by a majority, which promised its successor.
    pub fast_ballots: u64,
    /// Operations answered (decided or failed).
    pub answered: u64,
    /// Messages from peers refused because they carry what no node following the protocol
    /// sends (`validate::body`).
    pub invalid_from_peers: u64,
    /// Messages from peers refused because their sender may not send them: ballot requests,
    /// sweep listings, roster pulls and Commits from a node that is not a member of the
    /// installed roster (`Node::authorize`).
    pub unauthorized_from_peers: u64,
    /// Rosters from peers refused because their proof does not hold (`proof::Link::verify`).
    pub unproven_rosters: u64,
    /// Ballot requests refused, and promises whose content was not used, because no majority
    /// of the voters vouched for their sender (`vouch`: it may have been removed).
    pub unvouched: u64,
}

/// A peer's message this node refused, for the runtime to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It carried what no node following the protocol sends (`validate::body`).
    Invalid(validate::Invalid),
    /// Its sender may not send it (`Node::authorize`).
    Unauthorized(String),
    /// A roster whose proof does not hold.
    Unproven(proof::Unproven),
}

impl core::fmt::Display for Refused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refused::Invalid(why) => write!(f, "invalid: {why}"),
            Refused::Unauthorized(why) => write!(f, "unauthorized: {why}"),
            Refused::Unproven(why) => write!(f, "unproven roster: {why}"),
        }
    }
}

/// Who is waiting for an operation's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Client {
    External(u64),
    /// The sweep of roster `version`.
    Sweep(u64),
    /// A read of the roster register that installs a roster this voter accepted at the
    /// ballot given (the answer is the installation itself).
    RosterCatchUp(Ballot),
    /// A member's graceful leave, asked of this voter (`Body::Leave`); it learns the outcome
    /// from the roster's Commit.
    Leave,
}

#[derive(Clone, Debug)]
pub(super) struct PendingOp {
    pub client: Client,
    pub op: Op,
    pub deadline: Time,
    /// When it reached this node: the record refuses to let a request act on grants made
    /// after it arrived (bare releases), or be granted once its outcome may be forgotten.
    pub arrived: Time,
    /// An Accept that may carry this op's effect was sent: only success, `Timeout`, or an
    /// answer decided at a higher ballot may follow (safety contract point 6).
    pub accept_sent: bool,
}

#[derive(Clone, Debug)]
pub(super) enum Timer {
    Phase { key: Key, proposal: u64 },
    Retry { key: Key, proposal: u64 },
    SweepCheck,
    BootstrapResend,
    /// Ask the voters for vouches again.
    Vouch,
    /// Send an Accept again to the voters that have not taken it (a removal they wait for).
    Resend { key: Key, proposal: u64 },
}

pub struct Node {
    pub(super) config: Config,
    pub(super) id: NodeId,
    pub(super) rng: Rng,
    /// Every roster installed, with its proof, from the cluster's first: the last is the
    /// installed roster (`roster()`), known to be chosen.
    pub(super) chain: Vec<Link>,
    /// Signs this node's votes for rosters.
    pub(super) signer: Box<dyn Signer>,
    /// The cluster this node may join (`--cluster-id`): a first roster of another is refused.
    cluster: Option<u128>,
    /// The roster this voter last accepted in the roster register, while it is newer than the
    /// installed one: a node it does not list is on its way out, and is trusted no more here
    /// (`excluded`).
    pub(super) accepted_roster: Option<Roster>,
    pub(super) acceptor: Acceptor,
    pub(super) round_reserved: u64,
    pub(super) max_round_seen: u64,
    pub(super) bootstrap_ack: Option<RosterId>,
    /// The first roster this node offers, and the voters' signed acknowledgements so far.
    pub(super) bootstrapping: Option<(Roster, BTreeMap<NodeId, proof::Signed>)>,
    pub(super) proposals: BTreeMap<Key, Proposal>,
    pub(super) waiting: BTreeMap<Key, Vec<PendingOp>>,
    /// Registers whose last ballot was this node's, accepted by a majority (fast path).
    pub(super) owned: BTreeMap<Key, super::proposer::Owned>,
    timers: BTreeMap<(Time, u64), Timer>,
    timer_seq: u64,
    next_id: u64,
    pub(super) sweep: Option<Sweep>,
    /// Vouches this node holds and withholds (`vouch`).
    pub(super) vouches: super::vouch::Vouches,
    /// When another node's sweep of roster `version` last asked this voter for a page.
    pub(super) sweep_seen: Option<(u64, Time)>,
    /// Sweep ops answered since the last `flush`, handled after the current step.
    pub(super) sweep_done_ops: Vec<(Key, bool)>,
    /// The ballot of the accepted roster that the last successful catch-up read was for: a
    /// value this voter accepted that was never chosen stays in its register, and is not read
    /// again and again.
    pub(super) roster_read_for: Option<Ballot>,
    pub(super) alive: Option<BTreeSet<NodeId>>,
    /// Before this node belongs to a cluster, the peers it takes a roster from (by name, which
    /// the transport proves): the ones the operator named to join through. `None`: any peer.
    seeds: Option<BTreeSet<(String, KeyHash)>>,
    /// Peers' values refused since the runtime last asked (at most a few kept).
    pub(super) rejected: Vec<(NodeId, Refused)>,
    loopback: VecDeque<Envelope>,
    pub(super) out: Outputs,
    pub(super) stats: Stats,
}

impl Node {
    /// Starts a node from its durable state (empty for a new data dir). Ages of accepted
    /// values restart at `now`; ballots continue above the persisted high-water mark.
    pub fn new(config: Config, id: NodeId, durable: Durable, now: Time, seed: u64, signer: Box<dyn Signer>) -> Node {
        // Every round this voter promised or accepted, so sweeps can put later ballots above.
        let highest_slot_round = durable
            .slots
            .values()
            .flat_map(|s| s.promised.iter().chain(s.accepted.iter().map(|a| &a.ballot)))
            .map(|b| b.round)
            .max()
            .unwrap_or(0);
        let accepted_roster = match durable.slots.get(&Key::Roster).and_then(|s| s.accepted.as_ref()) {
            Some(super::message::AcceptedValue { value: Value::Roster(r), .. }) if durable.roster().is_some_and(|i| r.is_newer_than(i)) => Some(r.clone()),
            _ => None,
        };
        #[allow(unused_mut)]
        let mut acceptor = Acceptor::recover(durable.slots, now);
        #[cfg(feature = "broken-variants")]
        if broken!(config, ForgetPromisesOnRestart) {
            acceptor.forget_promises();
        }
        let mut node = Node {
            rng: Rng::new(seed ^ id.incarnation),
            config,
            id,
            chain: durable.chain,
            signer,
            cluster: None,
            accepted_roster,
            acceptor,
            round_reserved: durable.round_reserved,
            max_round_seen: durable.round_reserved.max(highest_slot_round),
            bootstrap_ack: durable.bootstrap_ack,
            bootstrapping: None,
            proposals: BTreeMap::new(),
            waiting: BTreeMap::new(),
            owned: BTreeMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_id: 0,
            sweep: None,
            vouches: super::vouch::Vouches::new(now),
            sweep_seen: None,
            sweep_done_ops: Vec::new(),
            roster_read_for: None,
            alive: None,
            seeds: None,
            rejected: Vec::new(),
            loopback: VecDeque::new(),
            out: Outputs::default(),
            stats: Stats::default(),
        };
        let first_check = node.rng.between(node.config.sweep_check_us / 2, node.config.sweep_check_us);
        node.set_timer(now.plus_micros(first_check), Timer::SweepCheck);
        node.on_vouch_timer(now);
        node
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The installed roster, if this node belongs to a cluster.
    pub fn roster(&self) -> Option<&Roster> {
        self.chain.last().map(|link| &link.roster)
    }

    /// Whether a sweep of the installed roster is running here.
    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Ballots in flight and requests waiting for one, for status and metrics.
    pub fn in_flight(&self) -> usize {
        self.proposals.len() + self.waiting.values().map(Vec::len).sum::<usize>()
    }

    /// The members that membership (SWIM) currently sees alive. Used only to fail fast with
    /// `NoQuorum` when too few voters are alive; quorums are always counted over the roster.
    pub fn set_alive(&mut self, alive: impl IntoIterator<Item = NodeId>) {
        self.alive = Some(alive.into_iter().collect());
    }

    /// The cluster this node may join: it installs no first roster of another cluster (the
    /// chain of every roster it installs starts at the first roster, whose hash the id is).
    pub fn set_cluster_id(&mut self, cluster: u128) {
        self.cluster = Some(cluster);
    }

    /// The chain of rosters installed, with their proofs, from the cluster's first.
    pub fn chain(&self) -> &[Link] {
        &self.chain
    }

    /// The peers this node takes its first roster from (a `Commit` or a pull answer) while it
    /// has none: the ones reached through the addresses it was told to join (the runtime
    /// names them as they greet it). Anyone else's roster could be a stranger's, which the
    /// cluster would install from this node once it is admitted.
    /// Each seed is a name and a certificate key: another certificate of a seed's name (an old
    /// one, another cluster's node) is no seed.
    pub fn set_seeds(&mut self, seeds: impl IntoIterator<Item = (String, KeyHash)>) {
        self.seeds = Some(seeds.into_iter().collect());
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Scopes this node holds a value for as a voter (its own view, not a linearizable list).
    pub fn local_scopes(&self) -> Vec<String> {
        self.acceptor.scopes()
    }

    /// Contention in this voter's copies of up to `scan` scopes: the totals, and the `top`
    /// scopes by waiters, then conflicts.
    pub fn local_contention(&self, scan: usize, top: usize) -> LocalContention {
        let mut all = LocalContention::default();
        for (scope, record) in self.acceptor.records(scan) {
            let (waiters, contention) = (record.queue.len() as u64, record.contention());
            all.scanned += 1;
            all.waiters += waiters;
            all.attempts += contention.attempts;
            all.conflicts += contention.conflicts;
            if waiters > 0 || contention.conflicts > 0 {
                all.top.push(ScopeContention { scope: scope.to_string(), waiters, contention });
            }
        }
        all.top.sort_by_key(|s| core::cmp::Reverse((s.waiters, s.contention.conflicts)));
        all.top.truncate(top);
        all
    }

    /// Whether a ballot of this node waits to send an Accept again (tests let time pass then).
    #[cfg(test)]
    pub(crate) fn resend_pending(&self) -> bool {
        self.timers.values().any(|t| matches!(t, Timer::Resend { .. }))
    }

    /// When `handle_timeout` should next be called.
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Takes what the runtime must do now: persist `writes`, then send and reply.
    pub fn drain(&mut self) -> Outputs {
        core::mem::take(&mut self.out)
    }

    pub fn handle_request(&mut self, now: Time, request: Request) {
        let client = Client::External(request.client);
        match (&request.key, &request.op) {
            (Key::Roster, Op::Roster(_)) | (Key::Scope(_), Op::Lock(_)) => {}
            _ => {
                self.reply(now, &request.key, client, Err(Failure::Invalid("operation does not fit the key")), None);
                return;
            }
        }
        // A node does not propose its own removal: the voters withhold their vouches from it
        // as soon as they are asked to accept that, and would take no more of its ballots (it
        // leaves through the others, `request_leave`).
        if let Op::Roster(RosterOp::Change { change: RosterChange::Remove(node) | RosterChange::Ban(node), .. }) = &request.op {
            if *node == self.id {
                self.reply(now, &request.key, client, Err(Failure::Invalid("a node cannot propose its own removal: ask another member")), None);
                return;
            }
        }
        let deadline = now.plus_micros(request.timeout_us);
        self.enqueue(now, request.key, PendingOp { client, op: request.op, deadline, arrived: now, accept_sent: false });
        self.flush(now);
    }

    /// A message from a peer: checked (`validate::body`) and authorized (`authorize`) before
    /// anything of it is used. The node's messages to itself skip both (`flush`).
    pub fn handle_message(&mut self, now: Time, envelope: Envelope) {
        if self.admit(now, &envelope) && !self.park(now, &envelope) {
            self.on_message(now, envelope);
        }
        self.flush(now);
    }

    /// A parked message (`vouch`), checked again as if it came now.
    pub(super) fn handle_admitted(&mut self, now: Time, envelope: Envelope) {
        if self.admit(now, &envelope) {
            self.on_message(now, envelope);
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            match timer {
                Timer::Phase { key, proposal } => {
                    if let Some(p) = self.take_proposal(&key, proposal) {
                        if matches!(p.phase, Phase::Backoff) {
                            self.proposals.insert(key, p);
                        } else {
                            self.retry(now, key, p);
                        }
                    }
                }
                Timer::Retry { key, proposal } => {
                    if let Some(p) = self.take_proposal(&key, proposal) {
                        self.start_proposal(now, key, p.attempt, p.ops);
                    }
                }
                Timer::SweepCheck => self.on_sweep_check(now),
                Timer::BootstrapResend => self.on_bootstrap_resend(now),
                Timer::Vouch => self.on_vouch_timer(now),
                Timer::Resend { key, proposal } => self.resend_accepts(&key, proposal),
            }
        }
        self.flush(now);
    }

    /// Processes messages to itself and internal completions until none are left.
    pub(super) fn flush(&mut self, now: Time) {
        loop {
            if let Some(envelope) = self.loopback.pop_front() {
                self.on_message(now, envelope);
            } else if !self.sweep_done_ops.is_empty() {
                for (key, ok) in core::mem::take(&mut self.sweep_done_ops) {
                    self.on_sweep_op_done(now, key, ok);
                }
            } else {
                break;
            }
        }
    }

    /// Sends a message tagged with the installed roster.
    pub(super) fn send(&mut self, to: NodeId, body: Body) {
        let roster = self.roster().map(Roster::id);
        self.send_tagged(to, body, roster);
    }

    /// Sends a message tagged with `roster`: a ballot's messages carry the roster its votes
    /// are counted over, even if a newer one was installed since it started.
    pub(super) fn send_tagged(&mut self, to: NodeId, body: Body, roster: Option<RosterId>) {
        let envelope = Envelope { from: self.id.clone(), to, roster, body };
        if envelope.to == self.id {
            self.loopback.push_back(envelope);
        } else if self.may_leave_early(&envelope.body) {
            self.out.early.push(envelope);
        } else {
            self.out.messages.push(envelope);
        }
    }

    /// Whether a message may leave before the writes of its own batch are durable (once every
    /// earlier batch's are). A proposer's Prepare or Accept on a scope states nothing about
    /// this voter's state, so the disk need not be waited for — unless it relies on a write of
    /// this batch made before it: a round reservation covering its ballot, this voter's own
    /// promise counted in the quorum that chose its value, or a roster just installed. A crash
    /// then loses at most this node's vote for its own ballot, which is a lost message. Every
    /// answer a voter gives, and every reply to a client, waits for the disk.
    fn may_leave_early(&self, body: &Body) -> bool {
        let key = match body {
            Body::Prepare { key: key @ Key::Scope(_), .. } | Body::Accept { key: key @ Key::Scope(_), .. } => key,
            _ => return false,
        };
        self.out.writes.iter().all(|w| matches!(w, Write::Slot(k, _) if k != key))
    }

    pub(super) fn set_timer(&mut self, at: Time, timer: Timer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Peers' values refused since the last call (the runtime logs them), oldest first.
    pub fn take_rejected(&mut self) -> Vec<(NodeId, Refused)> {
        core::mem::take(&mut self.rejected)
    }

    /// A peer's message was refused: kept (a few) for the runtime to log.
    fn reject(&mut self, from: &NodeId, why: Refused) {
        if self.rejected.len() < 16 {
            self.rejected.push((from.clone(), why));
        }
    }

    /// Whether a peer's message may be handled: it carries only what an honest node sends,
    /// and its sender may send it. A refused message changes nothing, and is counted.
    fn admit(&mut self, now: Time, envelope: &Envelope) -> bool {
        if let Err(why) = validate::body(&envelope.body, &self.config.limits) {
            self.stats.invalid_from_peers += 1;
            self.reject(&envelope.from, Refused::Invalid(why));
            // A promise carrying what no honest voter could send counts as a refusal: the
            // ballot goes on without it, and nothing of it is used. Anything else is dropped
            // unanswered (an Accept is never stored: its ballot fails as if lost).
            if let Body::Promise { key, ballot, .. } = &envelope.body {
                self.on_vote(now, envelope.from.clone(), key.clone(), *ballot, Vote::Refused);
            }
            return false;
        }
        if let Err(why) = self.authorize(&envelope.from, &envelope.body) {
            self.stats.unauthorized_from_peers += 1;
            self.reject(&envelope.from, Refused::Unauthorized(why));
            // A node added by a roster this one has not installed yet is no member here: if
            // it has installed a later roster, ask it for the chain (what it sends back is
            // installed only with its proofs, and it answers only a member of its roster).
            let mine = self.roster().map(|r| r.version);
            if envelope.roster.is_some_and(|t| mine.is_some_and(|m| t.version > m)) && !matches!(envelope.body, Body::RosterPull { .. }) {
                self.pull_roster(envelope.from.clone());
            }
            return false;
        }
        true
    }

    /// Who may send what. Once a roster is installed, ballot requests (Prepare, Accept), sweep
    /// listings and roster pulls are taken only from its members: the sender's name
    /// and certificate key are proven by the transport, so a node the roster does not list
    /// (never admitted, removed, another cluster's, or an old certificate of a member's name)
    /// can neither decide, read nor stall anything here. Votes and key lists are counted only
    /// from the voters of their ballot's or sweep's roster (`on_vote`, `on_key_list`), and a
    /// roster is synced only with members (`sync_roster`). A Commit is taken from anyone, and
    /// installs only rosters its proofs chain to the installed one. Before any roster is
    /// installed, nothing here can be decided or read: ballot requests are refused, and a
    /// Commit (how a joining node learns its cluster) is taken only from its seeds
    /// (`set_seeds`), unless the node was given its cluster's id (`set_cluster_id`).
    fn authorize(&self, from: &NodeId, body: &Body) -> Result<(), String> {
        if broken!(self.config, NoAuthorization) {
            return Ok(());
        }
        let Some(roster) = self.roster() else {
            // Anyone can make a first roster of their own, signed by all its voters: before
            // this node belongs to a cluster it takes one only from its seeds, or, given the
            // cluster's id, one whose hash that is.
            // The first roster this node acknowledged it signed itself: that one may come from
            // any of its voters (its decider, when this node's own offers came too early).
            let acknowledged = |links: &[Link]| links.first().is_some_and(|l| Some(l.roster.id()) == self.bootstrap_ack);
            return match (body, &self.seeds) {
                (Body::Commit { links }, Some(seeds)) if !seeds.contains(&(from.name.clone(), from.key)) && self.cluster.is_none() && !acknowledged(links) => {
                    Err(format!("a roster Commit from {from}, not a node this one joins through, before it belongs to a cluster"))
                }
                _ => Ok(()),
            };
        };
        let what = match body {
            Body::Prepare { .. } => "a Prepare",
            Body::Accept { .. } => "an Accept",
            Body::ListKeys { .. } => "a sweep listing",
            Body::RosterPull { .. } => "a roster pull",
            Body::VouchAsk { .. } => "a vouch ask",
            Body::Leave => "a leave",
            // A Commit proves itself (`learn_roster`): a roster that adds this node may come
            // from members this node does not know yet.
            _ => return Ok(()),
        };
        if !roster.is_member(from) {
            return Err(format!("{what} from {from}, which is not a member of roster version {}", roster.version));
        }
        // (A vouch says whom this node withholds its vouch from: a node on its way out may
        // learn that, and its vote may still be needed for its own removal.)
        if self.excluded(from) && !matches!(body, Body::VouchAsk { .. } | Body::Leave) {
            return Err(format!("{what} from {from}, which a roster this node accepted removes"));
        }
        Ok(())
    }

    /// Whether `node`, a member of the installed roster, is on its way out: a roster this
    /// voter accepted (not yet installed) no longer lists it. Its ballot requests are refused
    /// (its votes still count while it is a member: its removal may need them). A voter's
    /// removal is chosen only once a majority of the remaining voters accepted it
    /// (`proposer::on_vote`), so the removed node and the voters that did not accept it are
    /// too few to decide anything under the old roster (docs/PROTOCOL.md §7, *Removals*).
    pub(super) fn excluded(&self, node: &NodeId) -> bool {
        self.accepted_roster.as_ref().is_some_and(|r| !r.is_member(node))
    }

    fn on_message(&mut self, now: Time, envelope: Envelope) {
        let Envelope { from, roster: their_roster, body, .. } = envelope;
        // What a vote carries (a value, an age, a round) is used only from a voter of the
        // installed roster that a majority vouches for (`vouch`): a removed voter's promise
        // could claim anything, and its rounds would pin this node's ballots high. Another
        // voter's promise counts only as far as `quorum::tally_promises` lets it. (An
        // acceptance carries nothing to use, and still counts: with the removed voter, the
        // voters that did not accept its removal are too few for a majority,
        // `proposer::on_vote`.)
        let from_voter = self.roster().is_some_and(|r| r.contains(&from));
        let trusted = from_voter && self.vouched(now, &from);
        match body {
            Body::Prepare { key, ballot } => self.on_prepare(now, from, their_roster, key, ballot),
            Body::Accept { key, ballot, value } => self.on_accept(now, from, their_roster, key, ballot, value),
            Body::Promise { key, ballot, .. } if !trusted => {
                self.stats.unvouched += 1;
                self.on_vote(now, from, key, ballot, Vote::Untrusted)
            }
            Body::Promise { key, ballot, accepted, age_us } => {
                if let Some(a) = accepted.as_ref() {
                    self.max_round_seen = self.max_round_seen.max(a.ballot.round);
                }
                let promise = Promise { from: from.clone(), accepted, age_us };
                self.on_vote(now, from, key, ballot, Vote::Promise(promise))
            }
            Body::Accepted { key, ballot, signed } => self.on_vote(now, from, key, ballot, Vote::Accepted(signed)),
            // (From any voter of the ballot's roster: a voter that just started may not have
            // its vouches yet, and the wait is bounded, `on_withdrawing`.)
            Body::Refuse { key, ballot, why: Refusal::Withdrawing { wait_us } } => self.on_withdrawing(now, from, key, ballot, wait_us),
            Body::Refuse { key, ballot, why } => {
                // Only a refusal of a ballot this node runs, from a voter of its roster, moves
                // its rounds (a red team had a removed voter name a ballot of its own choosing
                // just under the bound, and the leap counted from there).
                let ours = self.proposals.get(&key).is_some_and(|p| p.ballot == ballot && p.roster.contains(&from));
                match why {
                    // From a voter no majority vouches for, a round is taken only if it is not
                    // far above our refused ballot: a voter being removed may be dueling this
                    // node (its promise must be outbid), yet a removed one could send any round
                    // (`UNTRUSTED_ROUND_LEAP`).
                    Refusal::Promised(promised) if ours && (trusted || promised.round <= ballot.round.saturating_add(UNTRUSTED_ROUND_LEAP)) => {
                        self.max_round_seen = self.max_round_seen.max(promised.round)
                    }
                    Refusal::RosterMismatch => self.sync_roster(&from, their_roster),
                    Refusal::Promised(_) | Refusal::NotVoter | Refusal::Unvouched | Refusal::Withdrawing { .. } => {}
                }
                self.on_vote(now, from, key, ballot, Vote::Refused)
            }
            Body::Commit { links } => self.on_commit(now, from, their_roster, links),
            Body::RosterPull { have } => {
                let links = self.links_after(have);
                if !links.is_empty() {
                    self.send(from, Body::Commit { links });
                }
            }
            Body::ListKeys { sweep, after } => {
                // Another member sweeps: a hint for this node's own sweep (it may only wait).
                // Not from one no majority vouches for: its sweep cannot go on (a node on its
                // way out kept the others from taking its sweep over, in the simulator).
                if their_roster == self.roster().map(Roster::id) && self.vouched(now, &from) {
                    self.on_peer_sweep(now, &from, &after);
                }
                if self.voter_check(now, &from, their_roster, Ballot { round: u64::MAX, proposer: 0 }).is_ok() {
                    let (keys, more) = self.acceptor.scopes_after(after.as_deref(), self.config.sweep_page);
                    let max_round = self.max_round_seen;
                    self.send(from, Body::KeyList { sweep, after, keys, more, max_round });
                }
            }
            Body::KeyList { sweep, after, keys, more, max_round } => {
                let page = super::sweep::Page { after, keys, more, max_round };
                self.on_key_list(now, from, their_roster, sweep, page)
            }
            Body::BootstrapOffer { roster } => self.on_bootstrap_offer(from, roster),
            Body::BootstrapAck { roster, signed } => self.on_bootstrap_ack(now, from, roster, signed),
            Body::VouchAsk { at } => self.on_vouch_ask(from, their_roster, at),
            Body::Leave => self.on_leave(now, from),
            Body::Vouch { at, withholds } => self.on_vouch(now, from, their_roster, at, withholds),
        }
    }

    /// Asks the voters of the installed roster to remove this node (a graceful leave). It does
    /// not propose its own removal: the voters withhold their vouches from it as soon as they
    /// are asked to accept its removal, and would take no more of its ballots. Call it again
    /// until the installed roster no longer lists this node.
    pub fn request_leave(&mut self, now: Time) {
        let Some(roster) = self.roster().cloned() else { return };
        let me = self.id.clone();
        for voter in roster.voters.into_iter().filter(|v| *v != me) {
            self.send(voter, Body::Leave);
        }
        self.flush(now);
    }

    /// A member asks to leave: this voter proposes its removal (`RosterChange::Remove`, on
    /// whichever roster is current), unless such a request waits here already. A removed node
    /// asking again changes nothing: it is not a member of the roster any ballot would apply
    /// the change to.
    fn on_leave(&mut self, now: Time, from: NodeId) {
        let Some(roster) = self.roster() else { return };
        if from == self.id || !roster.contains(&self.id) || !roster.is_member(&from) {
            return;
        }
        let change = RosterChange::Remove(from);
        let asked = |op: &PendingOp| matches!(&op.op, Op::Roster(RosterOp::Change { change: c, .. }) if *c == change);
        let waiting = self.waiting.get(&Key::Roster).is_some_and(|ops| ops.iter().any(asked));
        let running = self.proposals.get(&Key::Roster).is_some_and(|p| p.ops.iter().any(asked));
        if waiting || running {
            return;
        }
        let deadline = now.plus_micros(self.config.phase_timeout_us.saturating_mul(10).saturating_add(self.config.vouch_us));
        let op = PendingOp { client: Client::Leave, op: Op::Roster(RosterOp::Change { change, expected_version: None }), deadline, arrived: now, accept_sent: false };
        self.enqueue(now, Key::Roster, op);
    }

    /// Whether this node may vote on a ballot tagged with `their_roster`: only under exactly
    /// its own installed roster, only if that roster lists this very incarnation, only for a
    /// proposer a majority vouches for (`vouch`), and only above the roster's round floor.
    fn voter_check(&mut self, now: Time, from: &NodeId, their_roster: Option<RosterId>, ballot: Ballot) -> Result<(), Refusal> {
        let Some(mine) = self.roster() else {
            self.sync_roster(from, their_roster);
            return Err(Refusal::RosterMismatch);
        };
        if their_roster != Some(mine.id()) {
            self.sync_roster(from, their_roster);
            return Err(Refusal::RosterMismatch);
        }
        if !mine.contains(&self.id) {
            return Err(Refusal::NotVoter);
        }
        if !self.vouched(now, from) {
            self.stats.unvouched += 1;
            return Err(Refusal::Unvouched);
        }
        if ballot.round <= mine.round_floor {
            return Err(Refusal::Promised(Ballot { round: mine.round_floor, proposer: u64::MAX }));
        }
        Ok(())
    }

    /// Brings whichever of the two sides is behind up to the other's installed roster: only
    /// with a member of this node's installed roster (if any), so that no other peer is sent
    /// the roster or can make this node pull.
    pub(super) fn sync_roster(&mut self, peer: &NodeId, theirs: Option<RosterId>) {
        if self.roster().is_some_and(|r| !r.is_member(peer)) {
            return;
        }
        let mine = self.roster().map(Roster::id);
        let behind = match (mine, theirs) {
            (Some(m), Some(t)) => t.version > m.version,
            (None, Some(_)) => true,
            _ => false,
        };
        let ahead = match (mine, theirs) {
            (Some(m), Some(t)) => t.version < m.version,
            (Some(_), None) => true,
            _ => false,
        };
        if behind {
            self.pull_roster(peer.clone());
        } else if ahead {
            // The latest link: a peer further behind cannot prove it, and pulls what it lacks.
            if let Some(link) = self.chain.last().cloned() {
                self.send(peer.clone(), Body::Commit { links: vec![link] });
            }
        }
    }

    /// Asks `peer` for the links of its chain after this node's installed roster.
    pub(super) fn pull_roster(&mut self, peer: NodeId) {
        let have = self.roster().map(|r| (r.version, r.sweep_done));
        self.send(peer, Body::RosterPull { have });
    }

    /// The links of this node's chain after a roster at `have` (a page of them).
    fn links_after(&self, have: Option<(u64, bool)>) -> Vec<Link> {
        let newer = |link: &&Link| match have {
            None => true,
            Some((version, swept)) => link.roster.version > version || (link.roster.version == version && link.roster.sweep_done && !swept),
        };
        self.chain.iter().filter(newer).take(CHAIN_PAGE).cloned().collect()
    }

    /// A peer's chosen rosters: each installed that is proven from the one installed before
    /// it. A link proven under a later roster than this node's means it is behind by more: it
    /// asks the sender for the links in between, as it does when a page of them leaves it
    /// still behind the sender. A link that fails its proof is refused, and stops the page.
    fn on_commit(&mut self, now: Time, from: NodeId, theirs: Option<RosterId>, links: Vec<Link>) {
        let mut moved = false;
        let mut gap = false;
        for link in links {
            let installed = self.roster().map(|r| r.version);
            if self.roster().is_some_and(|r| !link.roster.is_newer_than(r)) {
                continue;
            }
            if installed.map_or(link.roster.version > 1, |v| link.proof.under.version > v) {
                gap = true;
                break;
            }
            match self.learn_roster(now, link, false) {
                Ok(()) => moved = true,
                Err(why) => {
                    self.stats.unproven_rosters += 1;
                    self.reject(&from, Refused::Unproven(why));
                    return;
                }
            }
        }
        // A roster whose decider votes in it is swept by the decider at once (`install`: the
        // others wait before taking over). One from a node that does not vote in it (a voter
        // that demoted itself, a member relaying it) has no such sweeper: sweep it now.
        if moved && self.roster().is_some_and(|r| !r.sweep_done && !r.contains(&from)) {
            self.sweep_seen = None;
        }
        let mine = self.roster().map(|r| r.version);
        let sender_ahead = theirs.is_some_and(|t| mine.is_none_or(|m| t.version > m));
        if gap || (moved && sender_ahead) {
            self.pull_roster(from);
        }
    }

    fn on_prepare(&mut self, now: Time, from: NodeId, their_roster: Option<RosterId>, key: Key, ballot: Ballot) {
        if let Err(why) = self.voter_check(now, &from, their_roster, ballot) {
            self.send(from, Body::Refuse { key, ballot, why });
            return;
        }
        // Only a ballot this node votes on moves its rounds: before any roster (when anyone
        // may send one) a refused ballot's round would stay with it for good.
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        match self.acceptor.prepare(now, &key, ballot) {
            Ok((promise, slot)) => {
                if let Some(slot) = slot {
                    self.out.writes.push(Write::Slot(key.clone(), slot));
                }
                self.send(from, Body::Promise { key, ballot, accepted: promise.accepted, age_us: promise.age_us });
            }
            Err(promised) => self.send(from, Body::Refuse { key, ballot, why: Refusal::Promised(promised) }),
        }
    }

    fn on_accept(&mut self, now: Time, from: NodeId, their_roster: Option<RosterId>, key: Key, ballot: Ballot, value: Value) {
        if let Err(why) = self.voter_check(now, &from, their_roster, ballot) {
            self.send(from, Body::Refuse { key, ballot, why });
            return;
        }
        let roster_value = match &value {
            Value::Roster(r) => Some(r.clone()),
            Value::Lock(_) => None,
        };
        // A roster value newer than the installed roster is one change on from it. A proposer
        // following the protocol sends nothing else; a removed voter's forgery at a node that
        // missed its removal (a jump, or another roster at the installed version) is neither
        // stored nor signed.
        // (An older roster, or the installed one before its sweep was recorded, comes from an
        // honest proposer whose ballot a later choice outran — the roster installed here came
        // in a Commit: the ballot decides about it, and reads ignore it, `drop_impossible_rosters`.)
        if let (Some(r), Some(installed)) = (&roster_value, self.roster()) {
            let stale = r.version < installed.version || (r.version == installed.version && r.id() == installed.id());
            if !stale && !r.follows(installed) {
                let why = format!("a roster value (version {}) that does not follow the installed one (version {})", r.version, installed.version);
                self.stats.invalid_from_peers += 1;
                self.reject(&from, Refused::Invalid(why));
                return;
            }
            // A voter does not vote for its own removal from an odd number of voters: with its
            // vote a bare majority could choose it, and it and the voters that had not accepted
            // it yet would still be a majority of the old roster — enough, were it to turn
            // hostile once removed, to choose a roster of its own there. Without its vote, the
            // voters that accepted are a majority of the old roster among the rest, and refuse
            // it (`excluded`). It costs nothing: from an odd number of voters, a removal the
            // others cannot choose without it would leave too few voters up for a quorum. (From
            // an even number it would: there its vote counts.)
            let odd = installed.voters.len() % 2 == 1;
            if odd && installed.contains(&self.id) && !r.contains(&self.id) {
                self.send(from, Body::Refuse { key, ballot, why: Refusal::NotVoter });
                return;
            }
            // A value that removes members is accepted only once the vouches this voter gave
            // for them have run out (`vouch`); until then it withholds them. (Not if the
            // Accept would be refused anyway: a higher ballot was promised.)
            let removed: Vec<NodeId> = installed.voters.iter().chain(&installed.members).filter(|m| !r.is_member(m)).cloned().collect();
            let outrun = self.acceptor.slot(&key).and_then(|s| s.promised).is_some_and(|p| ballot < p);
            if !stale && !removed.is_empty() && !outrun {
                if let Some(wait_us) = self.removal_wait(now, &removed) {
                    self.send(from, Body::Refuse { key, ballot, why: Refusal::Withdrawing { wait_us } });
                    return;
                }
            }
        }
        // Only a ballot this node votes on moves its rounds: before any roster (when anyone
        // may send one) a refused ballot's round would stay with it for good.
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        let next = if broken!(self.config, NoSuccessorPromise) { ballot } else { ballot.successor() };
        match self.acceptor.accept_promising(now, &key, ballot, value, their_roster, next) {
            Ok(slot) => {
                self.out.writes.push(Write::Slot(key.clone(), slot));
                // A roster value is signed: a majority of these signatures at one ballot proves
                // it chosen to any node that has the roster they were made under.
                let mut signed = None;
                if let (Some(r), Some(under)) = (roster_value, their_roster) {
                    signed = Some(proof::sign(&*self.signer, ballot, under, &r));
                    if broken!(self.config, RosterInstalledWhenAccepted) {
                        let proof = Proof { ballot, under, signatures: Vec::new() };
                        self.install(now, Link { roster: r.clone(), proof }, false);
                    }
                    // Only ever raised here (cleared by installing a roster as new): a later
                    // Accept of an older roster does not let a node it removes back in.
                    let newer = self.roster().is_some_and(|i| r.is_newer_than(i)) && self.accepted_roster.as_ref().is_none_or(|a| r.is_newer_than(a));
                    if newer {
                        self.accepted_roster = Some(r);
                    }
                }
                self.send(from, Body::Accepted { key, ballot, signed });
            }
            Err(promised) => self.send(from, Body::Refuse { key, ballot, why: Refusal::Promised(promised) }),
        }
    }
}

impl Node {
    /// Installs the roster of `link` if its proof holds from the installed roster (or, before
    /// any, if it is a first roster every voter signed), whoever it came from: a Commit, a pull
    /// answer, this node's own ballot or bootstrap. If `announce`, tells every old and new
    /// member.
    pub(super) fn learn_roster(&mut self, now: Time, link: Link, announce: bool) -> Result<(), proof::Unproven> {
        if !broken!(self.config, CommitWithoutProof) {
            link.verify(self.roster(), self.cluster)?;
        }
        self.install(now, link, announce);
        Ok(())
    }

    /// Installs a roster known to be chosen, if it is newer than the installed one.
    pub(super) fn install(&mut self, now: Time, link: Link, announce: bool) {
        // Another cluster's roster is never installed (the runtime's handshake checks the
        // cluster id too; this keeps the core safe on its own).
        let newer = self.roster().is_none_or(|current| current.cluster_id == link.roster.cluster_id && link.roster.is_newer_than(current));
        if !newer {
            return;
        }
        let roster = link.roster.clone();
        if self.accepted_roster.as_ref().is_some_and(|a| !a.is_newer_than(&roster)) {
            self.accepted_roster = None;
        }
        self.max_round_seen = self.max_round_seen.max(roster.round_floor);
        let old = self.chain.last().map(|l| l.roster.clone());
        if old.is_none() && roster.version == 1 && roster.contains(&self.id) {
            // The first roster: every voter acknowledged it before anyone installed it, so it
            // is the register's value at the bootstrap ballot.
            let accepted = super::message::AcceptedValue {
                ballot: Ballot::BOOTSTRAP,
                value: Value::Roster(roster.clone()),
                roster: Some(roster.id()),
            };
            if let Some(slot) = self.acceptor.seed(now, Key::Roster, accepted) {
                self.out.writes.push(Write::Slot(Key::Roster, slot));
            }
        }
        self.chain.push(link.clone());
        self.out.writes.push(Write::Link(link.clone()));
        self.on_installed_for_vouches(now, old.as_ref().map(Roster::id));
        self.bootstrapping = None;
        if self.sweep.as_ref().is_some_and(|s| s.version != roster.version) {
            self.sweep = None;
        }
        if !announce && !roster.sweep_done {
            // Its decider sweeps it at once: the time to take over counts from here.
            self.sweep_seen = Some((roster.version, now));
        }
        if announce {
            let mut to: BTreeSet<NodeId> = roster.voters.iter().chain(&roster.members).cloned().collect();
            to.extend(old.iter().flat_map(|o| o.voters.iter().chain(&o.members).cloned()));
            for voter in to {
                self.send(voter, Body::Commit { links: vec![link.clone()] });
            }
            if !roster.sweep_done {
                self.start_sweep(now);
            }
        }
    }

    /// Answers an operation, to its external client or to the sweep that issued it.
    pub(super) fn reply(
        &mut self,
        _now: Time,
        key: &Key,
        client: Client,
        result: Result<Answer, Failure>,
        agreement: Option<Agreement>,
    ) {
        self.stats.answered += 1;
        match client {
            Client::External(client) => {
                let reply = match agreement {
                    Some(a) => Reply { client, key: key.clone(), result, agreed: a.agreed, voters: a.voters, ballot: Some(a.ballot) },
                    None => {
                        let voters = self.roster().map_or(0, |r| r.voters.len());
                        Reply { client, key: key.clone(), result, agreed: Vec::new(), voters, ballot: None }
                    }
                };
                self.out.replies.push(reply);
            }
            Client::Sweep(version) => {
                if self.sweep.as_ref().is_some_and(|s| s.version == version) {
                    self.sweep_done_ops.push((key.clone(), result.is_ok()));
                }
            }
            Client::RosterCatchUp(ballot) => {
                if result.is_ok() {
                    self.roster_read_for = Some(ballot);
                }
            }
            Client::Leave => {}
        }
    }
}

/// Applies a batch of roster operations to the roster register's value.
pub(super) fn apply_roster_ops(
    base: &Roster,
    installed_version: u64,
    ops: &[PendingOp],
    allow_unswept_change: bool,
) -> (Roster, Vec<Answer>) {
    let mut roster = base.clone();
    let answers = ops
        .iter()
        .map(|pending| {
            let Op::Roster(op) = &pending.op else {
                return Answer::Roster(RosterResult::Refused(RosterRefusal::Moved { current: roster.version }));
            };
            Answer::Roster(match op {
                // An earlier attempt of this change sent Accepts, and the register now shows
                // the change made: it took effect (or an identical one did). A refusal would
                // say it did not (contract 6).
                RosterOp::Change { change, .. } if pending.accept_sent && roster.shows(change) => RosterResult::Changed(roster.clone()),
                RosterOp::Change { change, expected_version } => {
                    if roster.version != installed_version || expected_version.is_some_and(|v| v != roster.version) {
                        RosterResult::Refused(RosterRefusal::Moved { current: roster.version })
                    } else if !roster.sweep_done && !allow_unswept_change {
                        RosterResult::Refused(RosterRefusal::Sweeping)
                    } else {
                        match roster.changed(change) {
                            Ok(next) => {
                                roster = next;
                                RosterResult::Changed(roster.clone())
                            }
                            Err(e) => RosterResult::Refused(RosterRefusal::Invalid(e)),
                        }
                    }
                }
                RosterOp::MarkSwept { version, round_floor } => {
                    if roster.version == *version && !roster.sweep_done {
                        roster.sweep_done = true;
                        roster.round_floor = roster.round_floor.max(*round_floor);
                    }
                    RosterResult::Swept
                }
                RosterOp::Read => RosterResult::Current(roster.clone()),
            })
        })
        .collect();
    (roster, answers)
}

/// The record-level broken variants, before an op is applied: returns the arrival to apply
/// it with, and the grant (by id) that an acquire is about to collect unreported.
#[cfg(feature = "broken-variants")]
fn broken_before(record: &mut LockRecord, lock: &LockOp, arrived_us: u64, config: &Config) -> (u64, Option<u64>) {
    use super::record::Which;
    match lock {
        LockOp::Release { grant, .. } if grant.which == Which::Held && broken!(config, BareUnlockWithoutArrivalRule) => (0, None),
        LockOp::Cancel { request_id } if broken!(config, CancelFreesReportedGrant) => {
            for g in record.holders.iter_mut().filter(|g| g.request_id == *request_id) {
                g.reported = false;
            }
            (arrived_us, None)
        }
        LockOp::Acquire(a) if broken!(config, LockedBeforeReported) => {
            let unreported = record.holders.iter().find(|g| g.request_id == a.request_id && !g.reported).map(|g| g.id);
            (arrived_us, unreported)
        }
        _ => (arrived_us, None),
    }
}

/// After the op: a grant collected without being marked reported.
#[cfg(feature = "broken-variants")]
fn broken_after(record: &mut LockRecord, collecting: Option<u64>) {
    if let Some(id) = collecting {
        for g in record.holders.iter_mut().filter(|g| g.id == id) {
            g.reported = false;
        }
    }
}

/// Applies a batch of lock operations to a scope's record, after carrying it forward by
/// `elapsed_us`. Returns the new record, the answers, and whether anything but the floors
/// changed (only then does a chosen record need an Accept). Each op is applied with an upper
/// bound of the true time since it arrived here, measured on this node's clock up to `now`.
pub(super) fn apply_lock_ops(
    base: LockRecord,
    elapsed_us: u64,
    ops: &[PendingOp],
    now: Time,
    config: &Config,
) -> (LockRecord, Vec<Answer>, bool) {
    let mut record = base.clone();
    record.advance(elapsed_us, &config.limits);
    let mut answers: Vec<Answer> = ops
        .iter()
        .map(|op| match &op.op {
            Op::Lock(lock) => {
                let arrived_us = config.drift.true_elapsed_ceiling(now.since(op.arrived));
                #[cfg(feature = "broken-variants")]
                let (arrived_us, collecting) = broken_before(&mut record, lock, arrived_us, config);
                #[allow(clippy::let_and_return)]
                let answer = record.apply(lock, arrived_us, &config.limits);
                #[cfg(feature = "broken-variants")]
                broken_after(&mut record, collecting);
                Answer::Lock(answer)
            }
            Op::Roster(_) => Answer::Lock(LockResult::NotHolder),
        })
        .collect();
    #[cfg(feature = "broken-variants")]
    if broken!(config, BareRefusal) {
        record.log.retain(|e| e.outcome != super::record::Outcome::Refused);
    }
    // A record that breaks its own invariants would double-grant: stop here, loudly.
    if let Err(e) = record.check_invariants() {
        panic!("lock record invariant broken: {e}");
    }
    // Reads see the batch's outcome, as if placed last in it: a read placed before another
    // op of its batch would report a state no chosen value shows (an unlock's read saying
    // "not the holder" while another copy of the same request, later in the batch, released).
    for (op, answer) in ops.iter().zip(answers.iter_mut()) {
        if matches!(op.op, Op::Lock(LockOp::Read)) {
            *answer = Answer::Lock(LockResult::Record(Box::new(record.clone())));
        }
    }
    let changed = !record.same_state(&base);
    (record, answers, changed)
}
