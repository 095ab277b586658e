//! Bootstrap: the first roster, acknowledged durably by every one of its voters before anyone
//! installs it. Each node acknowledges at most one first roster, ever, so two different first
//! rosters that share a member can never both complete (PROTOCOL §12 P7).

use crate::prelude::*;

use alloc::collections::BTreeMap;

use super::durable::Write;
use super::message::{Ballot, Body};
use super::proof::{self, Link, Proof, Signed};
use super::node::{Failure, Node, Timer};
use super::roster::{NodeId, Roster, RosterId};
use super::time::Time;

impl Node {
    /// Proposes the first roster of a new cluster with these voters (this node among them)
    /// and voter target (`--voters`: every node of the bootstrap set must be given the same).
    /// The runtime calls it once `--bootstrap-expect` members have met, or for `--bootstrap`
    /// with this node alone. A node that already has a roster refuses.
    pub fn bootstrap(&mut self, now: Time, voters: Vec<NodeId>, target: u8) -> Result<(), Failure> {
        if self.roster().is_some() {
            return Err(Failure::Invalid("this node already belongs to a cluster"));
        }
        if !super::roster::valid_target(target) {
            return Err(Failure::Invalid("the voter target must be odd, from 1 to 9"));
        }
        if !voters.contains(&self.id) {
            return Err(Failure::Invalid("the bootstrap set must include this node"));
        }
        let roster = Roster::first(voters, target);
        self.bootstrapping = Some((roster, BTreeMap::new()));
        self.on_bootstrap_resend(now);
        self.flush(now);
        Ok(())
    }

    /// Sends the offer to every voter that has not acknowledged it yet.
    pub(super) fn on_bootstrap_resend(&mut self, now: Time) {
        let Some((roster, acks)) = &self.bootstrapping else { return };
        let roster = roster.clone();
        let missing: Vec<NodeId> = roster.voters.iter().filter(|v| !acks.contains_key(*v)).cloned().collect();
        for voter in missing {
            self.send(voter, Body::BootstrapOffer { roster: roster.clone() });
        }
        self.set_timer(now.plus_micros(self.config.bootstrap_resend_us), Timer::BootstrapResend);
    }

    pub(super) fn on_bootstrap_offer(&mut self, from: NodeId, roster: Roster) {
        if self.roster().is_some() || !roster.contains(&self.id) || roster != Roster::first(roster.voters.clone(), roster.target) {
            return;
        }
        // Only the first roster this node's own runtime proposes (every node of a bootstrap
        // set proposes the same one): a stranger's offer would otherwise take this node's one
        // acknowledgement, forever. The offerer resends until this node proposes too.
        if self.bootstrapping.as_ref().is_none_or(|(mine, _)| *mine != roster) {
            return;
        }
        let id = roster.id();
        match self.bootstrap_ack {
            Some(acked) if acked != id => return,
            Some(_) => {}
            None => {
                self.bootstrap_ack = Some(id);
                self.out.writes.push(Write::BootstrapAck(id));
            }
        }
        // Signed as accepted at the bootstrap ballot under itself: every voter's signature is
        // the first link of the cluster's chain.
        let signed = proof::sign(&*self.signer, Ballot::BOOTSTRAP, id, &roster);
        self.send(from, Body::BootstrapAck { roster: id, signed });
    }

    pub(super) fn on_bootstrap_ack(&mut self, now: Time, from: NodeId, id: RosterId, signed: Signed) {
        let Some((roster, acks)) = &mut self.bootstrapping else { return };
        if roster.id() != id || !roster.contains(&from) {
            return;
        }
        if !proof::verify_signature(&from.key, &signed.public_key, &proof::statement(Ballot::BOOTSTRAP, id, roster), &signed.signature) {
            self.stats.unproven_rosters += 1;
            return;
        }
        acks.insert(from, signed);
        if acks.len() == roster.voters.len() {
            let signatures = acks.iter().map(|(v, s)| (v.clone(), s.clone())).collect();
            let link = Link { roster: roster.clone(), proof: Proof { ballot: Ballot::BOOTSTRAP, under: id, signatures } };
            // Every voter's signature, each checked as it came: the link holds.
            let _ = self.learn_roster(now, link, true);
        }
    }
}
