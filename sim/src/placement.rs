//! Placement in the simulator (profile `placement`): the nodes choose their voters as the
//! runtime does. Each node's view of the members comes from the simulated network (a member
//! is up to it while it runs and their link is whole, down since it stopped being so), every
//! node is in zone `z{i % 3}`, and the lowest-named voter a node sees up proposes the change
//! `core::placement` asks for, counting a voter failed only if a majority of the voters it
//! hears from report it down (as Hellos carry those reports in the runtime). Views differ
//! under partitions and churn; after healing they agree, and the roster must settle at the
//! target, spread as well as the zones allow, without flapping.

use lockmesh_core::placement::{confirm_down, next_change, spread_is_best, Candidate, Health, Settings};
use lockmesh_core::{Key, NodeId, Op, Request, Roster, RosterChange, RosterOp, Time};

use crate::world::{Event, Phase, World};

/// Times placement waits here (simulated): short, so a run sees many changes.
pub(crate) const SETTINGS: Settings = Settings { stabilize_us: 1_000_000, replace_after_us: 2_000_000, hold_down_us: 4_000_000 };
/// How long a node waits for its last placement change before it proposes another.
const IN_FLIGHT_US: u64 = 1_500_000;
/// Placement changes after healing beyond this count as flapping.
const SETTLE_CHANGES: u64 = 12;

/// What each node has seen of every other, in true time.
#[derive(Default)]
pub(crate) struct Views {
    /// `up_since[i][j]`: since when node `i` has seen node `j` up without a break.
    up_since: Vec<Vec<Option<u64>>>,
    /// `down_since[i][j]`: since when node `i` has seen node `j` down.
    down_since: Vec<Vec<Option<u64>>>,
    /// When each node was last seen demoted (any node's observation).
    demoted_at: std::collections::BTreeMap<NodeId, u64>,
    /// Each node's voters when last looked at (to see demotions).
    voters_seen: Vec<Vec<NodeId>>,
    /// When each node last proposed a placement change.
    proposed_at: Vec<Option<u64>>,
    /// Placement changes proposed since healing.
    pub(crate) after_heal: u64,
}

pub(crate) fn zone(i: usize) -> String {
    format!("z{}", i % 3)
}

impl World {
    /// Updates every node's view (from the network as it is now) and has each node that leads
    /// placement propose the next change.
    pub(crate) fn place(&mut self) {
        let n = self.nodes.len();
        let v = &mut self.views;
        if v.up_since.len() != n {
            v.up_since = vec![vec![None; n]; n];
            v.down_since = vec![vec![None; n]; n];
            v.voters_seen = vec![Vec::new(); n];
            v.proposed_at = vec![None; n];
        }
        for i in 0..n {
            for j in 0..n {
                let up = self.nodes[j].node.is_some() && self.nodes[j].paused_until <= self.now && (i == j || self.net.reachable(i, j));
                let v = &mut self.views;
                if up {
                    v.up_since[i][j].get_or_insert(self.now);
                    v.down_since[i][j] = None;
                } else {
                    v.down_since[i][j].get_or_insert(self.now);
                    v.up_since[i][j] = None;
                }
            }
        }
        for i in 0..n {
            let Some(roster) = self.nodes[i].node.as_ref().and_then(|node| node.roster().cloned()) else { continue };
            for gone in self.views.voters_seen[i].iter().filter(|v| roster.members.contains(v)) {
                self.views.demoted_at.entry(gone.clone()).or_insert(self.now);
            }
            self.views.voters_seen[i] = roster.voters.clone();
            self.lead(i, &roster);
        }
    }

    /// Node `i`'s view of `roster`'s members, in its own clock's time.
    fn view_of(&self, i: usize, roster: &Roster) -> Vec<Candidate> {
        let clock = self.nodes[i].clock;
        let local = |t: u64| clock.local(t);
        roster
            .voters
            .iter()
            .chain(&roster.members)
            .filter_map(|m| {
                let j = self.nodes.iter().position(|n| n.id == *m);
                let health = match j {
                    Some(j) => match (self.views.up_since[i][j], self.views.down_since[i][j]) {
                        (Some(since), _) => Health::Alive { since: local(since) },
                        (_, Some(since)) => Health::Down { since: local(since) },
                        _ => Health::Suspect,
                    },
                    // An identity no node has any more (wiped since): down since ever.
                    None => Health::Down { since: Time(0) },
                };
                let zone = j.map(zone).unwrap_or_default();
                Some(Candidate { id: m.clone(), zone, health, demoted_at: self.views.demoted_at.get(m).map(|t| local(*t)) })
            })
            .collect()
    }

    /// As the runtime: the lowest-named voter that node `i` sees up (itself, if that is it)
    /// proposes placement's next change, one at a time, and only once the roster is swept.
    fn lead(&mut self, i: usize, roster: &Roster) {
        let me = &self.nodes[i].id;
        if !roster.contains(me) || !roster.sweep_done {
            return;
        }
        let up = |j: usize| self.views.up_since[i][j].is_some();
        let lowest_up = roster.voters.iter().filter(|v| self.nodes.iter().position(|n| n.id == **v).is_some_and(up)).min_by(|a, b| a.name.cmp(&b.name));
        if lowest_up != Some(me) || self.views.proposed_at[i].is_some_and(|at| self.now < at + IN_FLIGHT_US) {
            return;
        }
        // What each voter it hears from (itself too) has seen down for `replace_after`.
        let reports: Vec<(NodeId, Vec<NodeId>)> = (0..self.nodes.len())
            .filter(|&j| roster.contains(&self.nodes[j].id) && self.views.up_since[i][j].is_some())
            .map(|j| {
                // (An identity no node has any more, wiped since, is down to everyone.)
                let down = roster
                    .voters
                    .iter()
                    .chain(&roster.members)
                    .filter(|m| match self.nodes.iter().position(|n| n.id == **m) {
                        Some(m) => self.views.down_since[j][m].is_some_and(|since| self.now >= since + SETTINGS.replace_after_us),
                        None => true,
                    })
                    .cloned()
                    .collect();
                (self.nodes[j].id.clone(), down)
            })
            .collect();
        let view = confirm_down(roster, self.view_of(i, roster), &reports);
        let local = self.nodes[i].clock.local(self.now);
        let Some(change) = next_change(roster, &view, local, &SETTINGS) else { return };
        self.views.proposed_at[i] = Some(self.now);
        if self.phase == Phase::Healed {
            self.views.after_heal += 1;
        }
        self.log(|| format!("placement: n{i} proposes {change:?}"));
        let op = Op::Roster(RosterOp::Change { change, expected_version: Some(roster.version) });
        let request = Request { client: u64::MAX, key: Key::Roster, op, timeout_us: 1_000_000 };
        self.schedule(self.now + 100, Event::Request { to: i, request });
    }

    /// Now and then an admin sets another voter target.
    pub(crate) fn set_target(&mut self) {
        let Some(latest) = self.checker.latest_roster.clone() else { return };
        let target = [1, 3, 5][self.rng.index(3)];
        if target == latest.target {
            return;
        }
        let to = self.rng.index(self.nodes.len());
        self.log(|| format!("admin asks n{to} for voter target {target}"));
        let op = Op::Roster(RosterOp::Change { change: RosterChange::SetTarget(target), expected_version: Some(latest.version) });
        self.schedule(self.now + 500, Event::Request { to, request: Request { client: u64::MAX, key: Key::Roster, op, timeout_us: 1_000_000 } });
    }

    /// After healing, with every node up and views agreeing: whether placement has nothing
    /// left to do on the latest roster.
    pub(crate) fn placement_settled(&self) -> bool {
        let Some(latest) = self.checker.latest_roster.as_ref() else { return true };
        if !latest.sweep_done {
            return false;
        }
        // Node 0's view stands for all: after healing they agree (up since about the heal).
        // Hold-downs aside: a change that waits for one is still to come.
        let view: Vec<Candidate> = self.omniscient_view(latest).into_iter().map(|c| Candidate { demoted_at: None, ..c }).collect();
        next_change(latest, &view, Time(self.now), &SETTINGS).is_none()
    }

    /// Every member as it truly is: up since the later of the heal and its start.
    fn omniscient_view(&self, roster: &Roster) -> Vec<Candidate> {
        roster
            .voters
            .iter()
            .chain(&roster.members)
            .map(|m| {
                let j = self.nodes.iter().position(|n| n.id == *m);
                let up = j.and_then(|j| self.views.up_since.first().and_then(|row| row[j]));
                let health = match up {
                    Some(since) => Health::Alive { since: Time(since) },
                    None => Health::Down { since: Time(0) },
                };
                Candidate { id: m.clone(), zone: j.map(zone).unwrap_or_default(), health, demoted_at: self.views.demoted_at.get(m).map(|t| Time(*t)) }
            })
            .collect()
    }

    /// The violations placement's run leaves: not settled by the end, flapping after healing,
    /// or settled with the voters badly spread.
    pub(crate) fn placement_verdict(&self) -> Vec<String> {
        let mut found = Vec::new();
        let at = self.now as f64 / 1e6;
        if !self.placement_settled() {
            let version = self.checker.latest_roster.as_ref().map_or(0, |r| r.version);
            found.push(format!("t={at:.3}s liveness: placement did not settle after healing (roster v{version})"));
        }
        if self.views.after_heal > SETTLE_CHANGES {
            found.push(format!("t={at:.3}s liveness: placement flaps: {} changes proposed after healing", self.views.after_heal));
        }
        if let Some(latest) = self.checker.latest_roster.as_ref().filter(|_| found.is_empty()) {
            // Over the zones of the members that are up: a dead one's zone counts for nothing.
            let view: Vec<Candidate> = self.omniscient_view(latest).into_iter().filter(|c| matches!(c.health, Health::Alive { .. })).collect();
            if !spread_is_best(&latest.voters, &view) {
                found.push(format!("t={at:.3}s placement settled with the voters badly spread: {:?}", latest.voters));
            }
        }
        found
    }
}
