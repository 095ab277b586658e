//! The runtime's side of placement (`core::placement`): the view of the members it hands the
//! pure decision — zones from their own greetings, health from SWIM and greetings, when each
//! came up and was last demoted, failures only as a majority of the voters report them (each
//! node's Hellos carry the members it has seen down for `replace_after`) — and the times from
//! the flags.

use std::time::Instant;

use super::{peer_id, Runtime};
use crate::clock;
use crate::core::placement::{self, confirm_down, Candidate, Health, Settings};
use crate::core::time::Time;
use crate::core::{NodeId, Roster, RosterChange};

/// The core's time of an instant this process saw.
fn at(instant: Instant) -> Time {
    Time(clock::now().as_micros().saturating_sub(instant.elapsed().as_micros() as u64))
}

impl Runtime {
    fn placement_settings(&self) -> Settings {
        Settings {
            stabilize_us: self.config.stabilize_secs.saturating_mul(1_000_000),
            replace_after_us: self.config.replace_after_secs.saturating_mul(1_000_000),
            // A demoted voter waits twice the replacement time (a minute by default) before
            // it may vote again: a voter that flaps is not promoted and demoted on every flap.
            hold_down_us: self.config.replace_after_secs.saturating_mul(2_000_000),
        }
    }

    /// This node's view of the roster's members, a voter down only if a majority of the
    /// voters report it so: this node's own report and those in the latest Hellos of the
    /// voters that greeted it lately.
    fn placement_view(&self, roster: &Roster) -> Vec<Candidate> {
        let view = roster.voters.iter().chain(&roster.members).filter_map(|m| self.candidate(m)).collect();
        let mut reports = vec![(self.node.id().clone(), self.down_long())];
        reports.extend(self.peers.values().filter(|p| p.greeted_lately()).map(|p| (peer_id(&p.info), p.down.clone())));
        confirm_down(roster, view, &reports)
    }

    /// The members of the installed roster this node has seen down for `replace_after` (its
    /// report to the others, in its Hellos).
    pub(super) fn down_long(&self) -> Vec<NodeId> {
        let Some(roster) = self.node.roster() else { return Vec::new() };
        let replace_after = std::time::Duration::from_secs(self.config.replace_after_secs);
        roster
            .voters
            .iter()
            .chain(&roster.members)
            .filter(|m| self.known_down(m) && self.down_since.get(&(m.name.clone(), m.incarnation)).is_some_and(|t| t.elapsed() >= replace_after))
            .cloned()
            .collect()
    }

    /// The change placement asks for next, if any: from this node's view of the roster's
    /// members.
    pub(super) fn placement_change(&self, roster: &Roster) -> Option<RosterChange> {
        placement::next_change(roster, &self.placement_view(roster), clock::now(), &self.placement_settings())
    }

    /// One member as this node sees it; `None` if it knows nothing of it (placement then
    /// counts it suspect).
    fn candidate(&self, id: &NodeId) -> Option<Candidate> {
        let demoted_at = self.demoted_at.get(id).map(|i| at(*i));
        if id == self.node.id() {
            let health = Health::Alive { since: at(self.started) };
            return Some(Candidate { id: id.clone(), zone: self.me.zone.clone(), health, demoted_at });
        }
        let peer = self.peers.get(&id.name).filter(|p| peer_id(&p.info) == *id)?;
        let health = if self.known_down(id) {
            Health::Down { since: at(self.down_since.get(&(id.name.clone(), id.incarnation)).copied().unwrap_or_else(Instant::now)) }
        } else if !peer.greeted_lately() && self.swim_state(&id.name, id.incarnation) == Some(foca::State::Suspect) {
            Health::Suspect
        } else if self.peer_up(peer) {
            Health::Alive { since: at(self.up_since.get(&(id.name.clone(), id.incarnation)).copied().unwrap_or_else(Instant::now)) }
        } else {
            Health::Suspect
        };
        // A zone is the peer's own word, from its greeting; one no flag could give is none.
        let zone = if crate::certs::valid_node_name(&peer.info.zone) { peer.info.zone.clone() } else { String::new() };
        Some(Candidate { id: id.clone(), zone, health, demoted_at })
    }

    /// Notes which peers are up since when (placement promotes members up long enough).
    pub(super) fn note_up(&mut self) {
        let now = Instant::now();
        let up: Vec<(String, u64)> = self.peers.values().filter(|p| self.peer_up(p)).map(|p| (p.info.name.clone(), p.info.incarnation)).collect();
        self.up_since.retain(|k, _| up.contains(k));
        for k in up {
            self.up_since.entry(k).or_insert(now);
        }
    }
}
