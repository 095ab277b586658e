//! The proposer's pure decisions: what a majority of promises says the register holds, how
//! much time has provably passed, and whether the answer needs an Accept; and the node's
//! driving of its ballots: Prepare, Accept, retry with a higher ballot after jittered backoff.

use crate::prelude::*;

use alloc::collections::{BTreeMap, BTreeSet};

use super::broken::broken;
use super::lease::Drift;
use super::message::{AcceptedValue, Ballot, Body, Key, Value};
use super::node::{apply_lock_ops, apply_roster_ops, Agreement, Answer, Failure, Node, PendingOp, Timer};
use super::proof::{Link, Proof, Signed};
use super::quorum::{self, Decision};
use super::record::LockRecord;
use super::roster::{NodeId, Roster};
use super::time::Time;

/// Ballot rounds reserved per durable write of the high-water mark.
const ROUND_RESERVE: u64 = 1024;
/// Registers a node remembers as its own for the fast path; past that, the first by name is
/// forgotten (it then takes the full way once).
const OWNED_MAX: usize = 4096;

/// A register whose latest ballot was ours and was accepted by a majority: its value is
/// chosen, and every voter of that majority promised the ballot's successor.
#[derive(Clone, Debug)]
pub struct Owned {
    pub ballot: Ballot,
    pub record: LockRecord,
    pub roster: super::roster::RosterId,
    /// When the majority's last needed acceptance arrived: every acceptance of that majority
    /// happened before, so the time since is a lower bound of the value's age.
    pub at: Time,
}

/// One voter's promise, as the proposer keeps it.
#[derive(Clone, Debug)]
pub struct Promise {
    pub from: NodeId,
    pub accepted: Option<AcceptedValue>,
    pub age_us: u64,
}

/// What a majority of promises says.
#[derive(Clone, Debug)]
pub struct QuorumRead {
    /// The value at the highest accepted ballot, if any voter accepted one.
    pub value: Option<Value>,
    pub highest: Option<Ballot>,
    /// A proven lower bound of the true time since `value` was accepted (see `lease`).
    pub elapsed_us: u64,
    /// Whether `value` is already on a majority of the promises, hence chosen: an answer
    /// computed from it needs no Accept unless it changes the value.
    pub chosen: bool,
}

/// Rules that tests may switch off to prove the simulator notices (broken variants).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadRules {
    pub ages_from_stale_promises: bool,
    pub expiry_ignores_drift: bool,
}

/// Reads a register from a majority of promises.
///
/// Only promises whose accepted ballot equals the highest among them give a usable age: a
/// voter holding an older copy of the record may report a large age for a grant that was
/// renewed since (PROTOCOL §12 P1). Their ages count from accepting the *same* value, after
/// its Accept was sent, so the largest of them, drift-corrected, bounds the true time since.
pub fn read_quorum(promises: &[Promise], majority: usize, drift: Drift, rules: ReadRules) -> QuorumRead {
    let highest = promises.iter().filter_map(|p| p.accepted.as_ref().map(|a| a.ballot)).max();
    let Some(highest) = highest else {
        return QuorumRead { value: None, highest: None, elapsed_us: 0, chosen: true };
    };
    let at_highest: Vec<&Promise> =
        promises.iter().filter(|p| p.accepted.as_ref().is_some_and(|a| a.ballot == highest)).collect();
    let age_us = if rules.ages_from_stale_promises {
        promises.iter().filter(|p| p.accepted.is_some()).map(|p| p.age_us).max().unwrap_or(0)
    } else {
        at_highest.iter().map(|p| p.age_us).max().unwrap_or(0)
    };
    let elapsed_us = if rules.expiry_ignores_drift { age_us } else { drift.true_elapsed_floor(age_us) };
    let value = at_highest.first().and_then(|p| p.accepted.as_ref()).map(|a| a.value.clone());
    QuorumRead { value, highest: Some(highest), elapsed_us, chosen: at_highest.len() >= majority }
}

pub(super) enum Phase {
    Backoff,
    /// `untrusted`: voters that promised while no majority vouched for them here (`vouch`):
    /// counted, but what they said is not used.
    Preparing { promises: BTreeMap<NodeId, Promise>, untrusted: BTreeSet<NodeId>, refused: BTreeSet<NodeId> },
    /// `signed`: the accepting voters' signatures, for a roster value (its proof).
    Accepting { value: Value, answers: Vec<Answer>, agreed: BTreeSet<NodeId>, refused: BTreeSet<NodeId>, signed: Vec<(NodeId, Signed)> },
}

/// One register's ballot in flight at a node (at most one per key).
pub(super) struct Proposal {
    /// Changes with every attempt, so timers of earlier attempts are recognised as stale.
    pub id: u64,
    pub ballot: Ballot,
    pub roster: Roster,
    /// If `roster` is not swept, for a scope: the voters of the roster before it (a value
    /// chosen there may sit on fewer of this one's voters; `quorum::tally_promises`).
    pub before: Option<BTreeSet<NodeId>>,
    pub ops: Vec<PendingOp>,
    pub attempt: u32,
    pub phase: Phase,
}

/// A voter's answer to one of our ballots.
pub(super) enum Vote {
    Promise(Promise),
    /// A promise from a voter no majority vouches for here: its content is not used.
    Untrusted,
    /// With the voter's signature if the value is a roster.
    Accepted(Option<Signed>),
    Refused,
}

impl Node {
    /// Queues an operation for its register and starts a ballot if none is in flight.
    pub(super) fn enqueue(&mut self, now: Time, key: Key, op: PendingOp) {
        let waiting = self.waiting.entry(key.clone()).or_default();
        if waiting.len() >= self.config.max_queued_per_key {
            self.reply(now, &key, op.client, Err(Failure::Overloaded), None);
            return;
        }
        waiting.push(op);
        if !self.proposals.contains_key(&key) {
            self.start_proposal(now, key, 0, Vec::new());
        }
    }

    /// Removes and returns the proposal for `key` if its current attempt is `id`.
    pub(super) fn take_proposal(&mut self, key: &Key, id: u64) -> Option<Proposal> {
        if self.proposals.get(key).is_some_and(|p| p.id == id) {
            self.proposals.remove(key)
        } else {
            None
        }
    }

    /// Starts a ballot for `key` over `carried` ops and those waiting, under the installed roster.
    pub(super) fn start_proposal(&mut self, now: Time, key: Key, attempt: u32, carried: Vec<PendingOp>) {
        let mut ops = carried;
        if let Some(waiting) = self.waiting.get_mut(&key) {
            let room = self.config.max_batch.saturating_sub(ops.len()).min(waiting.len());
            ops.extend(waiting.drain(..room));
            if waiting.is_empty() {
                self.waiting.remove(&key);
            }
        }
        let ops = self.fail_overdue(now, &key, ops);
        let Some(roster) = self.roster().cloned() else {
            for op in ops {
                self.reply(now, &key, op.client, Err(Failure::NoRoster), None);
            }
            return;
        };
        if !roster.is_member(&self.id) {
            // Voters take ballots from members only. What may have taken effect while this
            // node was one is unknown (contract 6); the rest had no effect.
            for op in ops {
                let failure = if op.accept_sent { Failure::Timeout } else { Failure::NotMember };
                self.reply(now, &key, op.client, Err(failure), None);
            }
            return;
        }
        if ops.is_empty() {
            if self.waiting.contains_key(&key) {
                self.start_proposal(now, key, 0, Vec::new());
            }
            return;
        }
        let ops = if self.too_few_alive(&roster) {
            // Fail fast what is still definite; what may have taken effect keeps trying.
            let (unsure, definite): (Vec<_>, Vec<_>) = ops.into_iter().partition(|op| op.accept_sent);
            for op in definite {
                self.reply(now, &key, op.client, Err(Failure::NoQuorum), None);
            }
            if unsure.is_empty() {
                return;
            }
            unsure
        } else {
            ops
        };
        if !self.self_vouched(now) {
            // No majority vouches for this node (just started, cut off, or on its way out):
            // its ballots would be refused. Wait for vouches, as after a refused attempt.
            let p = Proposal { id: 0, ballot: Ballot { round: 0, proposer: self.id.incarnation }, roster, before: None, ops, attempt, phase: Phase::Backoff };
            self.retry(now, key, p);
            return;
        }
        // Ops that may already have had their effect go the full way (contract 6).
        if !ops.iter().any(|op| op.accept_sent) {
            if let Some((ballot, record, elapsed_us)) = self.fast_ballot(now, &key, &roster) {
                let (record, answers, _) = apply_lock_ops(record, elapsed_us, &ops, now, &self.config);
                let p = Proposal { id: 0, ballot, roster, before: None, ops, attempt, phase: Phase::Backoff };
                self.send_accepts(now, key, p, Value::Lock(record), answers);
                return;
            }
        }
        let ballot = self.next_ballot(attempt);
        self.stats.ballots += 1;
        let id = self.next_id();
        let phase = Phase::Preparing { promises: BTreeMap::new(), untrusted: BTreeSet::new(), refused: BTreeSet::new() };
        for voter in roster.voters.clone() {
            self.send_tagged(voter, Body::Prepare { key: key.clone(), ballot }, Some(roster.id()));
        }
        self.set_timer(now.plus_micros(self.config.phase_timeout_us), Timer::Phase { key: key.clone(), proposal: id });
        // (Not for the roster register: a value chosen there under the roster before is older
        // than the installed roster, which the register's later values all follow.)
        let before = if roster.sweep_done || key == Key::Roster { None } else { self.voters_before(&roster) };
        self.proposals.insert(key, Proposal { id, ballot, roster, before, ops, attempt, phase });
    }

    /// The voters of the roster installed before `roster` (of a lower version), if any.
    fn voters_before(&self, roster: &Roster) -> Option<BTreeSet<NodeId>> {
        self.chain.iter().rev().map(|l| &l.roster).find(|r| r.version < roster.version).map(|r| r.voters.iter().cloned().collect())
    }

    /// Answers ops whose deadline passed: `Timeout` if they may have taken effect.
    fn fail_overdue(&mut self, now: Time, key: &Key, ops: Vec<PendingOp>) -> Vec<PendingOp> {
        let (overdue, live): (Vec<_>, Vec<_>) = ops.into_iter().partition(|op| op.deadline <= now);
        for op in overdue {
            let failure = if op.accept_sent { Failure::Timeout } else { Failure::NoQuorum };
            self.reply(now, key, op.client, Err(failure), None);
        }
        live
    }

    fn too_few_alive(&self, roster: &Roster) -> bool {
        let Some(alive) = &self.alive else { return false };
        let alive_voters = roster.voters.iter().filter(|v| alive.contains(*v)).count();
        alive_voters < roster.majority() && !broken!(self.config, QuorumOverReachable)
    }

    /// How many voters a majority is counted over: the whole roster, always.
    fn counted_voters(&self, roster: &Roster) -> usize {
        if broken!(self.config, QuorumOverReachable) {
            if let Some(alive) = &self.alive {
                return roster.voters.iter().filter(|v| alive.contains(*v)).count().max(1);
            }
        }
        roster.voters.len()
    }

    /// A ballot above every round seen, with the high-water mark persisted before its use
    /// (it goes out in the same output batch as the Prepare, and writes come first).
    ///
    /// A retry leaps further ahead the more attempts failed: a proposer on the fast path
    /// moves the register's promise one round per value, and a competitor that only ever
    /// stepped one round past the last refusal could be refused for as long as it keeps
    /// sending (found by the benchmark: contended requests timed out as `no_quorum`).
    fn next_ballot(&mut self, attempt: u32) -> Ballot {
        let leap = if attempt == 0 { 1 } else { 1u64 << (attempt + 3).min(20) };
        let round = self.max_round_seen.saturating_add(leap);
        self.use_round(round);
        Ballot { round, proposer: self.id.incarnation }
    }

    /// Records that `round` is used, reserving rounds durably first if it is past the mark.
    fn use_round(&mut self, round: u64) {
        self.max_round_seen = self.max_round_seen.max(round);
        if round > self.round_reserved {
            self.round_reserved = round.saturating_add(ROUND_RESERVE);
            self.out.writes.push(super::durable::Write::RoundReserved(self.round_reserved));
        }
    }

    /// The fast path: if our last ballot on this scope was accepted by a majority under this
    /// roster, the register holds that ballot's value, and no other ballot can have come in
    /// between (that majority promised the successor). Then the ballot to Accept at, the
    /// value, and a proven lower bound of its age. An Accept that is refused falls back to
    /// the full ballot, like any lost attempt.
    fn fast_ballot(&mut self, now: Time, key: &Key, roster: &Roster) -> Option<(Ballot, LockRecord, u64)> {
        let owned = self.owned.remove(key)?;
        if owned.roster != roster.id() {
            return None;
        }
        let ballot = owned.ballot.successor();
        self.use_round(ballot.round);
        let measured = now.since(owned.at);
        let elapsed_us = if broken!(self.config, ExpiryIgnoresDrift) { measured } else { self.config.drift.true_elapsed_floor(measured) };
        self.stats.ballots += 1;
        self.stats.fast_ballots += 1;
        Some((ballot, owned.record, elapsed_us))
    }

    /// Remembers that our ballot `p` put `value` on a majority (for the fast path).
    fn own(&mut self, now: Time, key: &Key, p: &Proposal, value: &Value) {
        if let (Key::Scope(_), Value::Lock(record)) = (key, value) {
            self.owned.insert(key.clone(), Owned { ballot: p.ballot, record: record.clone(), roster: p.roster.id(), at: now });
            while self.owned.len() > OWNED_MAX {
                self.owned.pop_first();
            }
        }
    }

    /// Counts a voter's answer to our ballot on `key`.
    pub(super) fn on_vote(&mut self, now: Time, from: NodeId, key: Key, ballot: Ballot, vote: Vote) {
        let Some(mut p) = self.proposals.remove(&key) else { return };
        // A voter of the ballot's roster that the installed roster no longer lists was
        // removed: it is no longer trusted, and its votes count for nothing.
        let still_member = self.roster().is_some_and(|r| r.is_member(&from));
        if p.ballot != ballot || !p.roster.contains(&from) || !still_member {
            self.proposals.insert(key, p);
            return;
        }
        let voters = self.counted_voters(&p.roster);
        let decision = match (&mut p.phase, vote) {
            (Phase::Preparing { promises, untrusted, refused }, vote @ (Vote::Promise(_) | Vote::Untrusted | Vote::Refused)) => {
                match vote {
                    Vote::Promise(promise) => {
                        promises.insert(from, promise);
                    }
                    Vote::Untrusted => {
                        untrusted.insert(from);
                    }
                    _ => {
                        refused.insert(from);
                    }
                }
                let before = p.before.as_ref().map(|b| (b.len(), promises.keys().filter(|v| b.contains(*v)).count()));
                quorum::tally_promises(voters, promises.len(), untrusted.len(), refused.len(), before)
            }
            (Phase::Accepting { agreed, refused, signed, .. }, Vote::Accepted(signature)) => {
                if let Some(signature) = signature {
                    signed.push((from.clone(), signature));
                }
                agreed.insert(from);
                quorum::tally(voters, agreed.len(), refused.len())
            }
            (Phase::Accepting { agreed, refused, .. }, Vote::Refused) => {
                refused.insert(from);
                quorum::tally(voters, agreed.len(), refused.len())
            }
            _ => Decision::Pending,
        };
        // A roster value that removes voters is chosen only once a majority of the voters it
        // keeps accepted it too (a majority of the old roster and of the new): they then refuse
        // the removed voter (`Node::excluded`), and it and the rest are too few to decide
        // anything under the old roster.
        let decision = match (&p.phase, decision) {
            (Phase::Accepting { value: Value::Roster(next), agreed, .. }, Decision::Won) if !p.roster.voters.iter().all(|v| next.contains(v)) => {
                let kept = agreed.iter().filter(|v| next.contains(v)).count();
                if kept >= quorum::majority(next.voters.len()) {
                    Decision::Won
                } else {
                    Decision::Pending
                }
            }
            (_, decision) => decision,
        };
        match decision {
            Decision::Pending => {
                self.proposals.insert(key, p);
            }
            Decision::Lost => self.retry(now, key, p),
            Decision::Won => match core::mem::replace(&mut p.phase, Phase::Backoff) {
                Phase::Preparing { promises, untrusted, .. } => self.decide(now, key, p, promises, untrusted, voters),
                Phase::Accepting { value, answers, agreed, signed, .. } => {
                    self.own(now, &key, &p, &value);
                    let ops = core::mem::take(&mut p.ops);
                    let agreement = Agreement { ballot: p.ballot, agreed: agreed.into_iter().collect(), voters: p.roster.voters.len() };
                    let proof = Proof { ballot: p.ballot, under: p.roster.id(), signatures: signed };
                    self.finish(now, &key, value, ops, answers, agreement, Some(proof));
                }
                Phase::Backoff => {}
            },
        }
    }

    /// A voter waits for its vouches to run out before it accepts our roster value, which
    /// removes members: send it the Accept again then, and give the phase that long more.
    /// (At most a vouch's length plus drift: a voter's word is not taken for longer.)
    pub(super) fn on_withdrawing(&mut self, now: Time, from: NodeId, key: Key, ballot: Ballot, wait_us: u64) {
        let Some(mut p) = self.proposals.remove(&key) else { return };
        if p.ballot != ballot || !p.roster.contains(&from) || !matches!(p.phase, Phase::Accepting { .. }) {
            self.proposals.insert(key, p);
            return;
        }
        let wait_us = wait_us.min(self.config.drift.true_elapsed_ceiling(self.config.vouch_us));
        p.id = self.next_id();
        self.set_timer(now.plus_micros(wait_us), Timer::Resend { key: key.clone(), proposal: p.id });
        self.set_timer(now.plus_micros(wait_us.saturating_add(self.config.phase_timeout_us)), Timer::Phase { key: key.clone(), proposal: p.id });
        self.proposals.insert(key, p);
    }

    /// Sends the Accept of attempt `id` again to the voters that have not answered it yet.
    pub(super) fn resend_accepts(&mut self, key: &Key, id: u64) {
        let Some(p) = self.proposals.get(key).filter(|p| p.id == id) else { return };
        let Phase::Accepting { value, agreed, refused, .. } = &p.phase else { return };
        let body = Body::Accept { key: key.clone(), ballot: p.ballot, value: value.clone() };
        let tag = Some(p.roster.id());
        let to: Vec<NodeId> = p.roster.voters.iter().filter(|v| !agreed.contains(*v) && !refused.contains(*v) && self.roster().is_some_and(|r| r.is_member(v))).cloned().collect();
        for voter in to {
            self.send_tagged(voter, body.clone(), tag);
        }
    }

    /// A majority promised: read the register, apply the ops, and either answer at once (the
    /// value is chosen and unchanged) or send the new value in Accepts.
    /// (`untrusted`: voters whose promises count but whose content is not used, `vouch`.)
    fn decide(&mut self, now: Time, key: Key, mut p: Proposal, promises: BTreeMap<NodeId, Promise>, untrusted: BTreeSet<NodeId>, voters: usize) {
        // Whatever we remembered of this register may be stale now.
        self.owned.remove(&key);
        let promisers: BTreeSet<NodeId> = promises.keys().cloned().chain(untrusted).collect();
        let mut promises: Vec<Promise> = promises.into_values().collect();
        if key == Key::Roster {
            self.drop_impossible_rosters(&mut promises);
        }
        let rules = ReadRules {
            ages_from_stale_promises: broken!(self.config, AgesFromStalePromises),
            expiry_ignores_drift: broken!(self.config, ExpiryIgnoresDrift),
        };
        let read = read_quorum(&promises, quorum::majority(voters), self.config.drift, rules);
        let applied = match (&key, read.value.clone()) {
            (Key::Scope(_), None) => Some(apply_lock(LockRecord::default(), &read, &p.ops, now, self)),
            (Key::Scope(_), Some(Value::Lock(record))) => Some(apply_lock(record, &read, &p.ops, now, self)),
            // No promise held a roster the register could hold now (every one older than the
            // installed roster, or none): the installed roster is its latest chosen value.
            (Key::Roster, read @ (None | Some(Value::Roster(_)))) => {
                let base = match read {
                    Some(Value::Roster(r)) => Some(r),
                    _ => self.roster().cloned(),
                };
                base.map(|base| {
                    let allow = broken!(self.config, RosterChangeBeforeSweep);
                    let (roster, answers) = apply_roster_ops(&base, p.roster.version, &p.ops, allow);
                    let changed = roster != base;
                    (Value::Roster(roster), answers, changed)
                })
            }
            _ => None,
        };
        let Some((value, answers, changed)) = applied else {
            // A register holding the wrong kind of value, or a roster register no voter of
            // this quorum holds: nothing can be decided here.
            for op in core::mem::take(&mut p.ops) {
                let failure = if op.accept_sent { Failure::Timeout } else { Failure::Invalid("register holds no usable value") };
                self.reply(now, &key, op.client, Err(failure), None);
            }
            self.after_ballot(now, &key);
            return;
        };
        // Answer without writing only from a chosen value that changes nothing, and only if
        // no op of this batch may have had its effect in an Accept we sent: a negative answer
        // for such an op must be decided at a ballot above that Accept (contract 6).
        let may_have_taken_effect = p.ops.iter().any(|op| op.accept_sent) && !broken!(self.config, BareRefusal);
        // A chosen roster this node has not installed is accepted again, for the signatures
        // that prove it (a read of the roster register installs what it finds).
        let unproven = matches!(&value, Value::Roster(r) if self.roster() != Some(r));
        if !changed && read.chosen && !may_have_taken_effect && !unproven {
            let ops = core::mem::take(&mut p.ops);
            let ballot = read.highest.unwrap_or(p.ballot);
            self.stats.answered_without_write += 1;
            let agreed = promisers.into_iter().collect();
            self.finish(now, &key, value, ops, answers, Agreement { ballot, agreed, voters: p.roster.voters.len() }, None);
            return;
        }
        self.send_accepts(now, key, p, value, answers);
    }

    /// Forgets, in promises for the roster register, values that cannot be its latest: a
    /// roster older than the installed one, another at its version, or the installed one with
    /// anything changed but its sweep recorded (an older copy of it, or one with another round
    /// floor, which `RosterId` does not cover). The installed roster is chosen, and the
    /// register's chosen values only move on from it, so only a forgery sits above it at a
    /// higher ballot (a removed voter's Accept at a node that had not heard of its removal);
    /// taking it for possibly chosen would put it back.
    fn drop_impossible_rosters(&self, promises: &mut [Promise]) {
        let Some(installed) = self.roster() else { return };
        for promise in promises {
            if let Some(AcceptedValue { value: Value::Roster(r), .. }) = &promise.accepted {
                if !(r.version > installed.version || r == installed || r.is_sweep_of(installed)) {
                    promise.accepted = None;
                }
            }
        }
    }

    /// Sends `value` to every voter at `p`'s ballot and waits for a majority to take it.
    fn send_accepts(&mut self, now: Time, key: Key, mut p: Proposal, value: Value, answers: Vec<Answer>) {
        for op in &mut p.ops {
            op.accept_sent = true;
        }
        let tag = Some(p.roster.id());
        // Not to a voter removed since the ballot started: it is no longer trusted with values
        // (nor are its votes counted, `on_vote`).
        let members: Vec<NodeId> = p.roster.voters.iter().filter(|v| self.roster().is_some_and(|r| r.is_member(v))).cloned().collect();
        for voter in members {
            self.send_tagged(voter, Body::Accept { key: key.clone(), ballot: p.ballot, value: value.clone() }, tag);
        }
        p.phase = Phase::Accepting { value, answers, agreed: BTreeSet::new(), refused: BTreeSet::new(), signed: Vec::new() };
        p.id = self.next_id();
        self.set_timer(now.plus_micros(self.config.phase_timeout_us), Timer::Phase { key: key.clone(), proposal: p.id });
        self.proposals.insert(key, p);
    }

    /// The value is chosen: answer every op, install a chosen roster (with `proof`, the
    /// signatures of the majority that accepted it; `None` if it is the installed one), start
    /// the next ballot.
    #[allow(clippy::too_many_arguments)]
    fn finish(&mut self, now: Time, key: &Key, value: Value, ops: Vec<PendingOp>, answers: Vec<Answer>, agreement: Agreement, proof: Option<Proof>) {
        if let (Value::Roster(roster), Some(proof)) = (value, proof) {
            // Signed by the voters whose acceptance made it chosen: the proof holds (a failure
            // would leave this roster to the catch-up read, which accepts it again).
            let _ = self.learn_roster(now, Link { roster, proof }, true);
        }
        self.after_ballot(now, key);
        for (op, answer) in ops.into_iter().zip(answers) {
            self.reply(now, key, op.client, Ok(answer), Some(agreement.clone()));
        }
    }

    fn after_ballot(&mut self, now: Time, key: &Key) {
        if self.waiting.contains_key(key) && !self.proposals.contains_key(key) {
            self.start_proposal(now, key.clone(), 0, Vec::new());
        }
    }

    /// This attempt failed (refused or timed out): answer overdue ops, and try again with a
    /// higher ballot after a jittered, growing backoff.
    pub(super) fn retry(&mut self, now: Time, key: Key, mut p: Proposal) {
        let ops = core::mem::take(&mut p.ops);
        let ops = self.fail_overdue(now, &key, ops);
        if ops.is_empty() {
            self.after_ballot(now, &key);
            return;
        }
        self.stats.retries += 1;
        let exp = p.attempt.min(16);
        let cap = self.config.backoff_base_us.saturating_mul(1 << exp).min(self.config.backoff_max_us);
        let wait = self.rng.between(cap / 2, cap);
        p.ops = ops;
        p.attempt += 1;
        p.id = self.next_id();
        p.phase = Phase::Backoff;
        self.set_timer(now.plus_micros(wait), Timer::Retry { key: key.clone(), proposal: p.id });
        self.proposals.insert(key, p);
    }
}

fn apply_lock(record: LockRecord, read: &QuorumRead, ops: &[PendingOp], now: Time, node: &Node) -> (Value, Vec<Answer>, bool) {
    let (record, answers, changed) = apply_lock_ops(record, read.elapsed_us, ops, now, &node.config);
    (Value::Lock(record), answers, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LockRecord;

    fn promise(node: u64, ballot: Option<u64>, age_us: u64, last_token: u64) -> Promise {
        Promise {
            from: NodeId::new(format!("n{node}"), node, [node as u8; 32]),
            accepted: ballot.map(|round| AcceptedValue {
                ballot: Ballot { round, proposer: 1 },
                value: Value::Lock(LockRecord { last_token, ..LockRecord::default() }),
                roster: None,
            }),
            age_us,
        }
    }

    #[test]
    fn ages_only_from_the_highest_ballot() {
        // PROTOCOL §12 P1: v3 holds the pre-renewal record (ballot 1) with a large age.
        let promises = [promise(2, Some(2), 6_000, 5), promise(3, Some(1), 31_000, 5)];
        let read = read_quorum(&promises, 2, Drift::from_ppm(0), ReadRules::default());
        assert_eq!(read.elapsed_us, 6_000);
        assert!(!read.chosen);
        let broken = ReadRules { ages_from_stale_promises: true, ..ReadRules::default() };
        assert_eq!(read_quorum(&promises, 2, Drift::from_ppm(0), broken).elapsed_us, 31_000);
    }

    #[test]
    fn chosen_when_the_highest_value_is_on_a_majority() {
        let promises = [promise(1, Some(4), 10, 1), promise(2, Some(4), 20, 1), promise(3, Some(3), 99, 1)];
        let read = read_quorum(&promises, 2, Drift::from_ppm(10_000), ReadRules::default());
        assert!(read.chosen);
        assert_eq!(read.elapsed_us, 19, "20 µs on a clock up to 1 % fast is at least 19 µs");
        let empty = read_quorum(&[promise(1, None, 0, 0), promise(2, None, 0, 0)], 2, Drift::from_ppm(0), ReadRules::default());
        assert!(empty.chosen && empty.value.is_none());
    }
}
