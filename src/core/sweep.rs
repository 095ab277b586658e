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
//! idempotent.

use std::collections::BTreeSet;

use super::message::{Body, Key};
use super::node::{Client, Node, Op, PendingOp, RosterOp, Timer};
use super::record::LockOp;
use super::roster::{NodeId, RosterId};
use super::time::Time;

/// A running sweep of roster `version`.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub id: u64,
    pub version: u64,
    pub stage: Stage,
}

#[derive(Clone, Debug)]
pub enum Stage {
    /// Collecting scope lists from a majority of the new roster.
    Listing { replies: BTreeSet<NodeId>, keys: BTreeSet<String>, max_round: u64 },
    /// Rewriting scopes, a bounded number at a time; failures are retried on the next check.
    /// `round_floor`: the highest round the listing voters had seen.
    Rewriting { pending: Vec<String>, in_flight: usize, failed: Vec<String>, round_floor: u64 },
    /// Recording `sweep_done` in the roster register.
    Marking,
}

impl Node {
    /// Starts (or restarts) the sweep of the installed roster, if it still needs one.
    pub(super) fn start_sweep(&mut self, now: Time) {
        let _ = now;
        let Some(roster) = self.roster.clone() else { return };
        if roster.sweep_done {
            self.sweep = None;
            return;
        }
        let id = self.next_id();
        self.sweep = Some(Sweep {
            id,
            version: roster.version,
            stage: Stage::Listing { replies: BTreeSet::new(), keys: BTreeSet::new(), max_round: 0 },
        });
        for voter in roster.voters {
            self.send(voter, Body::ListKeys { sweep: id });
        }
    }

    pub(super) fn on_key_list(
        &mut self,
        now: Time,
        from: NodeId,
        their_roster: Option<RosterId>,
        id: u64,
        list: Vec<String>,
        their_max_round: u64,
    ) {
        let Some(roster) = self.roster.clone() else { return };
        if their_roster != Some(roster.id()) || !roster.contains(&from) {
            return;
        }
        let Some(sweep) = self.sweep.as_mut() else { return };
        if sweep.id != id {
            return;
        }
        let Stage::Listing { replies, keys, max_round } = &mut sweep.stage else { return };
        replies.insert(from);
        keys.extend(list);
        *max_round = (*max_round).max(their_max_round);
        if replies.len() >= roster.majority() {
            let pending = std::mem::take(keys).into_iter().rev().collect();
            let round_floor = *max_round;
            sweep.stage = Stage::Rewriting { pending, in_flight: 0, failed: Vec::new(), round_floor };
            self.pump_sweep(now);
        }
    }

    /// Issues scope rewrites up to the parallelism bound; marks the sweep done at the end.
    fn pump_sweep(&mut self, now: Time) {
        let deadline = now.plus_micros(self.config.phase_timeout_us.saturating_mul(10));
        let parallel = self.config.sweep_parallel.max(1);
        loop {
            let Some(sweep) = self.sweep.as_mut() else { return };
            let version = sweep.version;
            let Stage::Rewriting { pending, in_flight, failed, round_floor } = &mut sweep.stage else { return };
            let round_floor = *round_floor;
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
        let Some(roster) = self.roster.clone() else { return };
        if roster.sweep_done {
            self.sweep = None;
            return;
        }
        match self.sweep.as_mut() {
            None => self.start_sweep(now),
            Some(sweep) if sweep.version != roster.version => self.start_sweep(now),
            Some(sweep) => match &mut sweep.stage {
                Stage::Listing { .. } => self.start_sweep(now),
                Stage::Rewriting { pending, in_flight, failed, .. } => {
                    if *in_flight == 0 && !failed.is_empty() {
                        pending.append(failed);
                        self.pump_sweep(now);
                    }
                }
                Stage::Marking => {}
            },
        }
    }
}
