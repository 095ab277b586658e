//! The sweep after a roster change: rewrite every scope under the new roster, then record
//! `sweep_done` in the roster register, which the next change requires.
//!
//! Majorities of two rosters that differ by one member intersect; majorities of rosters two
//! changes apart need not. The sweep makes every committed record sit on a majority of the new
//! roster before the next change. It lists scopes from a majority of voters that have installed
//! the new roster (they refuse messages under the old one from then on, so no scope can appear
//! behind the listing), then runs a full Prepare (and an Accept where the highest value is not
//! already on a majority) per scope. The listing also reports the highest ballot round each
//! voter has seen; the sweep records the largest as the roster's `round_floor`, above which
//! every later ballot must be, so that a value a lone voter accepted at a high round on a scope
//! nobody listed can never override a later choice. Any node may run or resume a sweep; it is
//! idempotent. One at a time is enough: only voters of the new roster sweep; the one that
//! decided the change starts at once; the others start only when no other node's sweep has
//! asked them for a page for `sweep_takeover_us`, and of two sweeps that meet, the one further
//! behind stops. A voter holding an accepted roster newer than its installed one reads the
//! roster register from its periodic check, so a change chosen while its proposer was cut off
//! is installed and swept all the same.

use crate::prelude::*;

use alloc::collections::{BTreeMap, BTreeSet};

use super::message::{AcceptedValue, Body, Key, Value};
use super::node::{Client, Node, Op, PendingOp, RosterOp, Timer};
use super::record::LockOp;
use super::roster::{NodeId, Roster, RosterId};
use super::time::Time;

/// A running sweep of roster `version`. Scopes are listed and rewritten a page at a time, in
/// name order: `cursor` is the last name of the ranges already done.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub id: u64,
    pub version: u64,
    pub stage: Stage,
    pub cursor: Option<String>,
    /// The highest round any listing voter reported having seen, over every page so far.
    pub round_floor: u64,
}

/// One voter's page of scope names after `after`.
#[derive(Clone, Debug)]
pub struct Page {
    pub after: Option<String>,
    pub keys: Vec<String>,
    /// The voter holds scopes past the last of `keys`.
    pub more: bool,
    pub max_round: u64,
}

#[derive(Clone, Debug)]
pub enum Stage {
    /// Collecting the page after `cursor` from a majority of the new roster.
    Listing { replies: BTreeMap<NodeId, Page> },
    /// Rewriting the scopes of the range after `cursor` up to `end` (`None`: to the last),
    /// a bounded number at a time; failures are retried on the next check.
    Rewriting { pending: Vec<String>, in_flight: usize, failed: Vec<String>, end: Option<String> },
    /// Recording `sweep_done` in the roster register.
    Marking,
}

/// The range a majority's pages cover completely: up to the smallest last name among the
/// voters that have more (every voter listed all it holds up to there), or to the end if
/// none has. The scopes in it are the union of the pages' names up to that bound.
fn covered(replies: &BTreeMap<NodeId, Page>) -> (Vec<String>, Option<String>) {
    let end = replies.values().filter(|p| p.more).filter_map(|p| p.keys.iter().max()).min().cloned();
    let mut keys = BTreeSet::new();
    for page in replies.values() {
        keys.extend(page.keys.iter().filter(|k| end.as_ref().is_none_or(|e| *k <= e)).cloned());
    }
    // Popped from the back: rewritten in name order.
    (keys.into_iter().rev().collect(), end)
}

impl Node {
    /// Starts (or restarts) the sweep of the installed roster, if it still needs one and this
    /// node votes in it (a voter hears of other sweeps through their page requests; a node
    /// outside the roster would not).
    pub(super) fn start_sweep(&mut self, now: Time) {
        let Some(roster) = self.roster().cloned() else { return };
        // (A voter no majority vouches for would be refused: it leaves the sweep to others.)
        if roster.sweep_done || !roster.contains(&self.id) || !self.self_vouched(now) {
            self.sweep = None;
            return;
        }
        let id = self.next_id();
        self.sweep = Some(Sweep { id, version: roster.version, stage: Stage::Listing { replies: BTreeMap::new() }, cursor: None, round_floor: 0 });
        self.list_page();
    }

    /// Asks every voter of the installed roster for the page after the sweep's cursor.
    fn list_page(&mut self) {
        let (Some(roster), Some(sweep)) = (self.roster().cloned(), self.sweep.as_mut()) else { return };
        sweep.stage = Stage::Listing { replies: BTreeMap::new() };
        let (id, after) = (sweep.id, sweep.cursor.clone());
        for voter in roster.voters {
            self.send(voter, Body::ListKeys { sweep: id, after: after.clone() });
        }
    }

    /// Another node's sweep of the installed roster asked this voter for the page after
    /// `after`. A sweep here that is behind it (or level with it and from a later node id)
    /// stops: sweeping the same names at once, the two would duel over every scope.
    pub(super) fn on_peer_sweep(&mut self, now: Time, from: &NodeId, after: &Option<String>) {
        let Some(version) = self.roster().map(|r| r.version) else { return };
        if *from == self.id {
            return;
        }
        self.sweep_seen = Some((version, now));
        let Some(sweep) = &self.sweep else { return };
        let behind = match after.cmp(&sweep.cursor) {
            core::cmp::Ordering::Greater => true,
            core::cmp::Ordering::Equal => *from < self.id,
            core::cmp::Ordering::Less => false,
        };
        // A sweep recording its end is finished: let it be.
        if sweep.version == version && behind && !matches!(sweep.stage, Stage::Marking) {
            self.sweep = None;
        }
    }

    /// Whether another node's sweep of roster `version` asked for a page lately.
    fn peer_sweeping(&self, now: Time, version: u64) -> bool {
        self.sweep_seen.is_some_and(|(v, at)| v == version && now.since(at) < self.config.sweep_takeover_us)
    }

    pub(super) fn on_key_list(&mut self, now: Time, from: NodeId, their_roster: Option<RosterId>, id: u64, page: Page) {
        let Some(roster) = self.roster().cloned() else { return };
        if their_roster != Some(roster.id()) || !roster.contains(&from) {
            return;
        }
        let Some(sweep) = self.sweep.as_mut() else { return };
        if sweep.id != id || sweep.cursor != page.after {
            return;
        }
        let Stage::Listing { replies } = &mut sweep.stage else { return };
        if page.more && page.keys.is_empty() {
            // "More, but none listed" says nothing about where this voter's names stop.
            return;
        }
        sweep.round_floor = sweep.round_floor.max(page.max_round);
        replies.insert(from, page);
        if replies.len() >= roster.majority() {
            let (pending, end) = covered(replies);
            sweep.stage = Stage::Rewriting { pending, in_flight: 0, failed: Vec::new(), end };
            self.pump_sweep(now);
        }
    }

    /// Issues scope rewrites up to the parallelism bound; lists the next page when a range is
    /// done, and marks the sweep done after the last.
    fn pump_sweep(&mut self, now: Time) {
        let deadline = now.plus_micros(self.config.phase_timeout_us.saturating_mul(10));
        let parallel = self.config.sweep_parallel.max(1);
        loop {
            let Some(sweep) = self.sweep.as_mut() else { return };
            let version = sweep.version;
            let round_floor = sweep.round_floor;
            let Stage::Rewriting { pending, in_flight, failed, end } = &mut sweep.stage else { return };
            if *in_flight >= parallel {
                return;
            }
            if let Some(scope) = pending.pop() {
                *in_flight += 1;
                let op = PendingOp { client: Client::Sweep(version), op: Op::Lock(LockOp::Sweep), deadline, arrived: now, accept_sent: false };
                self.enqueue(now, Key::Scope(scope), op);
                continue;
            }
            if *in_flight > 0 || !failed.is_empty() {
                // Failed scopes are retried by the next periodic check.
                return;
            }
            if let Some(end) = end.take() {
                sweep.cursor = Some(end);
                self.list_page();
                return;
            }
            sweep.stage = Stage::Marking;
            let op = PendingOp {
                client: Client::Sweep(version),
                op: Op::Roster(RosterOp::MarkSwept { version, round_floor }),
                deadline,
                arrived: now,
                accept_sent: false,
            };
            self.enqueue(now, Key::Roster, op);
            return;
        }
    }

    pub(super) fn on_sweep_op_done(&mut self, now: Time, key: Key, ok: bool) {
        let Some(sweep) = self.sweep.as_mut() else { return };
        match (&mut sweep.stage, key) {
            (Stage::Rewriting { in_flight, failed, .. }, Key::Scope(scope)) => {
                *in_flight = in_flight.saturating_sub(1);
                if !ok {
                    failed.push(scope);
                }
                self.pump_sweep(now);
            }
            (Stage::Marking, Key::Roster) => {
                if !ok {
                    // Try the whole sweep again on the next check; it is idempotent.
                    self.sweep = None;
                }
                // On success the chosen roster (with `sweep_done`) was installed and
                // announced by the ballot itself, which ended this sweep.
            }
            _ => {}
        }
    }

    /// Periodic: resume an unfinished sweep, resend lost listings, retry failed scopes.
    pub(super) fn on_sweep_check(&mut self, now: Time) {
        let next = self.rng.between(self.config.sweep_check_us / 2, self.config.sweep_check_us);
        self.set_timer(now.plus_micros(next), Timer::SweepCheck);
        let Some(roster) = self.roster().cloned() else { return };
        self.catch_up_roster(now, &roster);
        if roster.sweep_done {
            self.sweep = None;
            return;
        }
        if self.sweep.as_ref().is_none_or(|s| s.version != roster.version) {
            // Nobody else sweeping: start (or restart) here.
            if !self.peer_sweeping(now, roster.version) {
                self.start_sweep(now);
            }
            return;
        }
        let Some(sweep) = self.sweep.as_mut() else { return };
        match &mut sweep.stage {
            // A page's listing still short of a majority: ask again, from the same cursor.
            Stage::Listing { .. } => self.list_page(),
            Stage::Rewriting { pending, in_flight, failed, .. } => {
                if *in_flight == 0 && !failed.is_empty() {
                    pending.append(failed);
                    self.pump_sweep(now);
                }
            }
            Stage::Marking => {}
        }
    }
}

impl Node {
    /// A roster this voter accepted that is newer than the installed one may have been chosen
    /// while its proposer was cut off or crashed: nobody would install it (nor sweep it) until
    /// the next roster change, which it blocks. A read of the register finds it chosen, or
    /// chooses it, and the ballot installs and announces the result.
    fn catch_up_roster(&mut self, now: Time, installed: &Roster) {
        // (Not a roster without this node: the voters withhold it while they are asked to
        // accept its removal, and would take none of its ballots; those that accepted it, if
        // it was chosen, finish it.)
        let accepted = match self.acceptor.slot(&Key::Roster).and_then(|s| s.accepted) {
            Some(AcceptedValue { value: Value::Roster(r), ballot, .. })
                if r.cluster_id == installed.cluster_id
                    && r.is_member(&self.id)
                    && (r.version, r.sweep_done) > (installed.version, installed.sweep_done) =>
            {
                ballot
            }
            _ => return,
        };
        let busy = self.proposals.contains_key(&Key::Roster) || self.waiting.contains_key(&Key::Roster);
        if busy || self.roster_read_for == Some(accepted) {
            return;
        }
        // Give the change's own decider time to finish: a read overtaking its Accepts in
        // flight makes it retry (it then answers from the register all the same).
        let age = now.since(self.acceptor.accepted_at(&Key::Roster).unwrap_or(now));
        let settled = age >= self.config.phase_timeout_us.saturating_mul(10);
        if !settled {
            return;
        }
        let deadline = now.plus_micros(self.config.phase_timeout_us.saturating_mul(10));
        let op = PendingOp { client: Client::RosterCatchUp(accepted), op: Op::Roster(RosterOp::Read), deadline, arrived: now, accept_sent: false };
        self.enqueue(now, Key::Roster, op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], more: bool) -> Page {
        Page { after: None, keys: keys.iter().map(|k| k.to_string()).collect(), more, max_round: 0 }
    }

    fn replies(pages: &[Page]) -> BTreeMap<NodeId, Page> {
        pages.iter().enumerate().map(|(i, p)| (NodeId::new(format!("v{i}"), i as u64, [i as u8; 32]), p.clone())).collect()
    }

    #[test]
    fn a_majoritys_pages_cover_up_to_the_smallest_last_name_of_those_with_more() {
        // v0 listed a..c and has more; v1 listed b..e and has more: everything up to c is
        // known from both (v1 holds nothing before b but a is v0's), d and e wait for the next page.
        let (mut keys, end) = covered(&replies(&[page(&["a", "b", "c"], true), page(&["b", "d", "e"], true)]));
        keys.reverse();
        assert_eq!((keys, end.as_deref()), (vec!["a".to_string(), "b".into(), "c".into()], Some("c")));
        // A voter with nothing more covers to the end together with the others' bound.
        let (mut keys, end) = covered(&replies(&[page(&["a"], false), page(&["b", "x"], true)]));
        keys.reverse();
        assert_eq!((keys, end.as_deref()), (vec!["a".to_string(), "b".into(), "x".into()], Some("x")));
        let (keys, end) = covered(&replies(&[page(&["a"], false), page(&[], false)]));
        assert_eq!((keys, end), (vec!["a".to_string()], None));
        // Names out of order bound the range by the page's largest.
        let (_, end) = covered(&replies(&[page(&["c", "b"], true), page(&[], false)]));
        assert_eq!(end.as_deref(), Some("c"));
    }
}
