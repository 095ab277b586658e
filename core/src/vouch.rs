//! Vouches: a voter takes a member's ballot requests, and a proposer uses what a voter's
//! answers carry, only while a majority of the voters vouch for that member.
//!
//! A node removed from the roster may turn hostile the moment its removal is chosen (the
//! threat model, PROTOCOL §1), while a voter that has not heard of the removal yet still lists
//! it. Were that voter to take its Prepare or Accept, the removed node could plant a value
//! there at a high ballot, which later ballots read as possibly chosen. So members ask the
//! voters for vouches (`VouchAsk`, answered by `Vouch`): each answer says "for `vouch_us` from
//! your ask, I accept no roster that removes any member of our roster except these". A voter
//! asked to accept a roster value that removes nodes stops vouching for them at once, and
//! accepts it only once every vouch it gave for them has run out (`vouch_us`, drift included,
//! and as long after its own start: it may have vouched before a restart). Once a removal is
//! chosen, every voter that accepted it but the removed node has let its vouches for the node
//! run out and gives no more, so no node that still lists the removed node can gather a
//! majority's vouches for it: the removed node and the voters that did not accept its removal
//! are fewer than a majority (`proposer::on_vote`, the odd-roster rule in `node::on_accept`).
//!
//! A vouch is counted only from a voter of the asker's installed roster, for the members of
//! the roster that voter had installed (the asker's or an earlier one of its chain: a voter
//! keeps its word whatever it installs next), but those it withholds; a node counts itself
//! unless it withholds its own vouch (never for itself: that would prove nothing). Voters answer for themselves over the authenticated
//! transport, so a vouch needs no signature. What a promise may count for without its content
//! is `quorum::tally_promises`; docs/PROTOCOL.md §7, *Vouches*, has the whole argument.

use crate::prelude::*;

use alloc::collections::{BTreeMap, BTreeSet};

use super::message::{Body, Envelope};
use super::node::{Node, Timer};
use super::roster::{NodeId, Roster, RosterId};
use super::time::Time;

/// A voter's vouch, as the node that asked for it keeps it.
#[derive(Clone, Debug)]
struct Got {
    /// The ask this answers was sent at this time (this node's clock).
    asked: Time,
    /// Until when it may be trusted, on this node's clock.
    until: Time,
    /// The members it vouches for: those of the roster it has installed, but the withheld.
    members: BTreeSet<NodeId>,
}

/// A node's vouches: those it holds from voters, and those it withholds.
#[derive(Clone, Debug, Default)]
pub struct Vouches {
    got: BTreeMap<NodeId, Got>,
    /// Nodes this voter withholds its vouch from (a roster value it was asked to accept
    /// removes them): since when, and when it was last asked to accept their removal.
    withheld: BTreeMap<NodeId, (Time, Time)>,
    /// When this node started: vouches given before a restart are not remembered.
    started: Time,
    /// Ballot requests and listings from members not vouched for yet, with when they came:
    /// handled when vouches arrive (a voter just added, restarted, or a member just added
    /// has none at first), refused after a while.
    parked: Vec<(Time, Envelope)>,
}

/// Most requests parked while vouches are awaited.
const PARKED_MAX: usize = 256;

impl Vouches {
    pub fn new(started: Time) -> Vouches {
        Vouches { started, ..Vouches::default() }
    }
}

impl Node {
    /// Whether a majority of the installed roster's voters vouch for `node` now. Always true
    /// for this node itself (its own messages never come through here).
    pub(super) fn vouched(&self, now: Time, node: &NodeId) -> bool {
        *node == self.id || self.vouched_by_majority(now, node)
    }

    /// Whether this node's ballots would be taken: a majority of the voters vouch for it, as
    /// their answers to its asks say. A proposer that is not holds its ballots back (they
    /// would be refused, and its promises to itself would only outbid the others', which the
    /// simulator found dueling a node on its way out for ever).
    pub(super) fn self_vouched(&self, now: Time) -> bool {
        self.vouched_by_majority(now, &self.id)
    }

    fn vouched_by_majority(&self, now: Time, node: &NodeId) -> bool {
        if super::broken::broken!(self.config, NoVouches) {
            return true;
        }
        let Some(roster) = self.roster() else { return false };
        let count = roster
            .voters
            .iter()
            .filter(|v| {
                if **v == self.id {
                    return !self.withholding(node);
                }
                self.vouches.got.get(*v).is_some_and(|g| g.until > now && g.members.contains(node))
            })
            .count();
        count >= roster.majority()
    }

    /// Whether this node withholds its vouch from `node`: a roster value it was asked to
    /// accept removes it, or the roster it accepted no longer lists it. Never from itself: a
    /// node's vouch for itself proves nothing (a removed node vouches for itself all the same;
    /// the bound that matters is that it and the voters that did not accept its removal are
    /// fewer than a majority), and withholding it would leave a node that accepted its own
    /// removal, never chosen, distrusted for good (the simulator found such a cluster stuck).
    fn withholding(&self, node: &NodeId) -> bool {
        *node != self.id && (self.vouches.withheld.contains_key(node) || self.excluded(node))
    }

    /// The members of `roster` (the installed one) this node does not vouch for.
    fn withholds(&self, roster: &Roster) -> Vec<NodeId> {
        roster.voters.iter().chain(&roster.members).filter(|m| self.withholding(m)).cloned().collect()
    }

    /// Asks every voter of the installed roster to vouch, and schedules the next ask. Every
    /// member asks: voters to take ballot requests, proposers to use what votes carry.
    pub(super) fn ask_vouches(&mut self, now: Time) {
        self.forget_stale_withholds(now);
        let Some(roster) = self.roster().cloned() else { return };
        if !roster.is_member(&self.id) {
            return;
        }
        let me = self.id.clone();
        for voter in roster.voters.into_iter().filter(|v| *v != me) {
            self.send(voter, Body::VouchAsk { at: now.as_micros() });
        }
    }

    /// The periodic ask (a quarter of a vouch's length apart); requests parked since the
    /// last one are handled now, vouched for or refused.
    pub(super) fn on_vouch_timer(&mut self, now: Time) {
        self.set_timer(now.plus_micros((self.config.vouch_us / 4).max(1)), Timer::Vouch);
        self.unpark(now, true);
        self.ask_vouches(now);
    }

    /// Parks a ballot request or listing under the installed roster, from a member no
    /// majority vouches for here yet, if there is room: the vouches may be on their way.
    pub(super) fn park(&mut self, now: Time, envelope: &Envelope) -> bool {
        let request = matches!(envelope.body, Body::Prepare { .. } | Body::Accept { .. } | Body::ListKeys { .. });
        let Some(roster) = self.roster() else { return false };
        let fits = request && envelope.roster == Some(roster.id()) && roster.contains(&self.id) && self.vouches.parked.len() < PARKED_MAX;
        if !fits || self.vouched(now, &envelope.from) {
            return false;
        }
        self.vouches.parked.push((now, envelope.clone()));
        true
    }

    /// Handles the parked requests whose senders are vouched for now (all of them if
    /// `expire`: the others are refused), checked again as they came.
    fn unpark(&mut self, now: Time, expire: bool) {
        let parked = core::mem::take(&mut self.vouches.parked);
        for (at, envelope) in parked {
            if expire || self.vouched(now, &envelope.from) {
                self.handle_admitted(now, envelope);
            } else {
                self.vouches.parked.push((at, envelope));
            }
        }
    }

    /// A member asks this node to vouch: answered under the roster installed here, whichever
    /// the asker has (a vouch under an earlier roster of its chain counts there too).
    pub(super) fn on_vouch_ask(&mut self, from: NodeId, theirs: Option<RosterId>, at: u64) {
        let Some(roster) = self.roster().cloned() else {
            // Asked by a member of a roster while this node has none: a roster lists it (the
            // Commit that told it so was lost). Ask for the chain; what comes back is installed
            // only from its seeds or back to its cluster id, with every proof.
            if theirs.is_some() {
                self.pull_roster(from);
            }
            return;
        };
        let withholds = self.withholds(&roster);
        self.send(from, Body::Vouch { at, withholds });
    }

    /// A voter's vouch, under the roster it has installed: kept if that is this node's
    /// installed roster or an earlier one of its chain (its promise covers the members of that
    /// roster, whatever it installs next: a removal waits for every vouch given before it).
    /// The ask time cannot be later than now (a node's own clock).
    pub(super) fn on_vouch(&mut self, now: Time, from: NodeId, theirs: Option<RosterId>, at: u64, withholds: Vec<NodeId>) {
        let Some(roster) = self.roster() else { return };
        if !roster.contains(&from) || from == self.id {
            return;
        }
        let Some(theirs) = theirs else { return };
        if theirs.version > roster.version {
            self.sync_roster(&from, Some(theirs));
            return;
        }
        let Some(under) = self.chain.iter().rev().map(|l| &l.roster).find(|r| r.id() == theirs) else { return };
        let asked = Time::from_micros(at.min(now.as_micros()));
        if self.vouches.got.get(&from).is_some_and(|g| g.asked > asked) {
            return;
        }
        let withholds: BTreeSet<NodeId> = withholds.into_iter().collect();
        let members = under.voters.iter().chain(&under.members).filter(|m| !withholds.contains(*m)).cloned().collect();
        let until = asked.plus_micros(self.config.drift.holder_trust(self.config.vouch_us));
        self.vouches.got.insert(from, Got { asked, until, members });
        if !self.vouches.parked.is_empty() {
            self.unpark(now, false);
        }
    }

    /// A roster was installed (`old`: the one before): what this voter withheld for a
    /// removal under the old one is settled. Ask anew: the voters added vouch from now on.
    pub(super) fn on_installed_for_vouches(&mut self, now: Time, old: Option<RosterId>) {
        let Some(id) = self.roster().map(Roster::id) else { return };
        if old != Some(id) {
            self.vouches.withheld.clear();
        }
        self.ask_vouches(now);
    }

    /// This voter is asked to accept a roster value that removes `removed`: it stops vouching
    /// for them, and says how much longer (on its clock) it must wait before it may accept,
    /// or `None` if it may now: every vouch it gave for them, before it stopped or before its
    /// last start, has run out on the asker's clock, however the clocks drift.
    pub(super) fn removal_wait(&mut self, now: Time, removed: &[NodeId]) -> Option<u64> {
        if super::broken::broken!(self.config, NoVouches) {
            return None;
        }
        let mut since = self.vouches.started;
        for node in removed.iter().filter(|n| **n != self.id) {
            let entry = self.vouches.withheld.entry(node.clone()).or_insert((now, now));
            entry.1 = now;
            since = since.max(entry.0);
        }
        // The shortest wait on this clock that is at least `vouch_us` of true time.
        let needed = self.config.drift.true_elapsed_ceiling(self.config.vouch_us);
        let waited = now.since(since);
        (waited < needed).then(|| needed - waited)
    }

    /// Withholds nobody was asked about lately (the removal was abandoned) are lifted.
    fn forget_stale_withholds(&mut self, now: Time) {
        let keep = self.config.vouch_us.saturating_mul(4);
        self.vouches.withheld.retain(|_, (_, last)| now.since(*last) < keep);
    }
}
