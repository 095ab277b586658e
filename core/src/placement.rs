//! Placement: which members vote. The roster keeps a voter target (`Roster::target`); this
//! module decides the next roster change that brings the voters toward it, spread across zones
//! and made of healthy, stable members. It is a pure function of the roster, one node's view of
//! the members (zone, health, when each was last demoted) and the time, so every voter that
//! shares a view decides the same, and the simulator and tables test it as it runs.
//!
//! One change at a time, as the core requires, each a roster ballot:
//! - promote first: while voters are fewer than the target, or a voter has been down for
//!   `replace_after`, or the zones could be spread better, a member is promoted (from the zone
//!   with the fewest voters, then the longest alive) — never beyond one voter over the target;
//! - then demote: while voters exceed the target, the voter whose going leaves the best roster
//!   is demoted (one down for `replace_after` first, then one of the most crowded zone, then a
//!   suspect one, then the last by name — not by time up, which each node sees a little
//!   differently).
//!
//! A voter counts as down for `replace_after` only if a majority of the voters report it so
//! (`confirm_down`: each voter tells the others whom it has seen down that long): a node behind
//! a one-way cut, which sees healthy voters down, can neither replace nor demote them for it.
//! The check is the proposer's, not the acceptors': a voter refusing a roster value would wedge
//! the roster register for good once some voter had accepted that value, as every later
//! ballot must propose it again.
//!
//! The spread rule: losing any one zone must leave a majority of the voters whenever the zones
//! allow it — no zone holds half or more of the voters when there are three zones or more, and
//! otherwise as even a spread as there can be. Voters are compared by how many share the most
//! crowded zone, so a change is made only when it makes that smaller (or keeps it while fixing
//! the count): the roster settles and does not flap between equally good spreads.

use crate::prelude::*;

use alloc::collections::BTreeMap;

use super::roster::{NodeId, Roster, RosterChange};
use super::time::Time;

/// What one node knows of a member's health (from membership gossip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Up without a break since this time.
    Alive { since: Time },
    /// Suspected down: neither fit to promote nor failed long enough to replace.
    Suspect,
    /// Down since this time.
    Down { since: Time },
}

/// One member as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    /// Its zone (`--zone`); empty for none, which counts as one zone of its own.
    pub zone: String,
    pub health: Health,
    /// When it was last demoted, if this node saw it.
    pub demoted_at: Option<Time>,
}

/// The times placement waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a member must have been up before it is promoted.
    pub stabilize_us: u64,
    /// How long a voter must have been down before a member replaces it.
    pub replace_after_us: u64,
    /// How long a demoted voter waits before it may be promoted again.
    pub hold_down_us: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { stabilize_us: 10_000_000, replace_after_us: 30_000_000, hold_down_us: 60_000_000 }
    }
}

/// The next change that brings the roster's voters toward its target, as seen from `view`
/// (members missing from it count as suspect), or `None` when there is nothing to do. A
/// roster made before voter targets (target zero) is left as it is.
pub fn next_change(roster: &Roster, view: &[Candidate], now: Time, settings: &Settings) -> Option<RosterChange> {
    if roster.target == 0 {
        return None;
    }
    let target = roster.target as usize;
    let seen: BTreeMap<&NodeId, &Candidate> = view.iter().map(|c| (&c.id, c)).collect();
    let health = |id: &NodeId| seen.get(id).map_or(Health::Suspect, |c| c.health);
    let zone = |id: &NodeId| seen.get(id).map_or("", |c| c.zone.as_str()).to_string();
    let failed = |id: &NodeId| matches!(health(id), Health::Down { since } if now.since(since) >= settings.replace_after_us);
    let voters = &roster.voters;
    // Members fit to vote: up long enough, not demoted lately.
    let fit: Vec<&NodeId> = roster
        .members
        .iter()
        .filter(|m| matches!(health(m), Health::Alive { since } if now.since(since) >= settings.stabilize_us))
        .filter(|m| seen.get(m).and_then(|c| c.demoted_at).is_none_or(|at| now.since(at) >= settings.hold_down_us))
        .collect();
    let crowding = |set: &[&NodeId]| spread(set.iter().map(|v| zone(v)));
    let current: Vec<&NodeId> = voters.iter().collect();

    // Demote while over the target: the voter whose going leaves the best roster.
    if voters.len() > target {
        let rank = |v: &&NodeId| {
            let rest: Vec<&NodeId> = current.iter().copied().filter(|x| x != v).collect();
            // Smallest first: failed, least crowded rest, suspect or down.
            (!failed(v), crowding(&rest), matches!(health(v), Health::Alive { .. }))
        };
        return current.iter().min_by_key(|v| (rank(v), core::cmp::Reverse((**v).clone()))).map(|v| RosterChange::Demote((*v).clone()));
    }
    // Promote: the member from the zone with the fewest voters, then up the longest.
    let best = |fit: &[&NodeId]| -> Option<NodeId> {
        fit.iter()
            .min_by_key(|m| {
                let in_zone = current.iter().filter(|v| zone(v) == zone(m)).count();
                let since = match health(m) {
                    Health::Alive { since } => since.as_micros(),
                    _ => u64::MAX,
                };
                (in_zone, since, (**m).clone())
            })
            .map(|m| (*m).clone())
    };
    if voters.len() < target {
        return best(&fit).map(RosterChange::Add);
    }
    // At the target: replace a failed voter, promoting first (one over the target for a
    // moment; the demotion follows).
    if voters.iter().any(failed) {
        return best(&fit).map(RosterChange::Add);
    }
    // Spread better: promote a member whose zone, with a voter of the most crowded zone
    // demoted, makes the most crowded zone hold fewer.
    let now_crowding = crowding(&current);
    let improves = |m: &&NodeId| {
        current.iter().any(|v| {
            let mut after: Vec<&NodeId> = current.iter().copied().filter(|x| x != v).collect();
            after.push(m);
            crowding(&after) < now_crowding
        })
    };
    let improving: Vec<&NodeId> = fit.iter().copied().filter(improves).collect();
    best(&improving).map(RosterChange::Add)
}

/// `view` with only the failures a majority of the roster's voters confirm: a voter down in
/// this view stays down only if a majority of the voters report it down for `replace_after`
/// (`reports`: each reporting voter with the members it has seen down that long — this node's
/// own report among them if it votes); any other down member counts as suspect. So a node
/// behind a one-way cut, which sees healthy voters down, neither replaces nor demotes them.
pub fn confirm_down(roster: &Roster, view: Vec<Candidate>, reports: &[(NodeId, Vec<NodeId>)]) -> Vec<Candidate> {
    let majority = roster.majority();
    view.into_iter()
        .map(|c| {
            let down = matches!(c.health, Health::Down { .. });
            let confirmed = reports.iter().filter(|(voter, down)| roster.contains(voter) && down.contains(&c.id)).map(|(voter, _)| voter).collect::<alloc::collections::BTreeSet<_>>().len() >= majority;
            if down && !confirmed && roster.contains(&c.id) {
                Candidate { health: Health::Suspect, ..c }
            } else {
                c
            }
        })
        .collect()
}

/// How crowded a set of voters is, by zone: the most voters any zone holds, then how many
/// zones hold that many (fewer is better either way). Compared as a pair.
fn spread(zones: impl Iterator<Item = String>) -> (usize, usize) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for z in zones {
        *count.entry(z).or_default() += 1;
    }
    let most = count.values().copied().max().unwrap_or(0);
    (most, count.values().filter(|c| **c == most).count())
}

/// Whether the voters are spread over zones as well as the members in `view` allow: the most
/// crowded zone holds no more voters than it must. (With three zones or more and enough
/// members in each, that is the spread rule: no zone holds half of an odd number of voters.)
pub fn spread_is_best(voters: &[NodeId], view: &[Candidate]) -> bool {
    let zone = |id: &NodeId| view.iter().find(|c| c.id == *id).map_or("", |c| c.zone.as_str());
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for v in voters {
        *held.entry(zone(v)).or_default() += 1;
    }
    let mut room: BTreeMap<&str, usize> = BTreeMap::new();
    for c in view {
        *room.entry(c.zone.as_str()).or_default() += 1;
    }
    let need = voters.len();
    // The fewest the most crowded zone can hold: the smallest m with room for all at m a zone.
    let best = (0..=need).find(|m| room.values().map(|r| (*r).min(*m)).sum::<usize>() >= need).unwrap_or(need);
    held.values().all(|h| *h <= best)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn node(name: &str) -> NodeId {
        NodeId::new(name, 1, [name.as_bytes()[0]; 32])
    }

    fn roster(voters: &[&str], members: &[&str], target: u8) -> Roster {
        let mut r = Roster::first(voters.iter().map(|v| node(v)).collect(), target);
        r.members = members.iter().map(|m| node(m)).collect();
        r.members.sort();
        r
    }

    /// `name:zone:health`, health `up` (since 0), `new` (since 95 s), `sus`, `down` (since
    /// 0), `blip` (down since 90 s), `held` (up, demoted at 90 s).
    fn view(spec: &[&str]) -> Vec<Candidate> {
        spec.iter()
            .map(|s| {
                let parts: Vec<&str> = s.split(':').collect();
                let (health, demoted_at) = match parts[2] {
                    "up" => (Health::Alive { since: Time(0) }, None),
                    "new" => (Health::Alive { since: Time(95 * S) }, None),
                    "sus" => (Health::Suspect, None),
                    "down" => (Health::Down { since: Time(0) }, None),
                    "blip" => (Health::Down { since: Time(90 * S) }, None),
                    "held" => (Health::Alive { since: Time(0) }, Some(Time(90 * S))),
                    other => panic!("{other}"),
                };
                Candidate { id: node(parts[0]), zone: parts[1].to_string(), health, demoted_at }
            })
            .collect()
    }

    const NOW: Time = Time(100 * S);

    fn decide(voters: &[&str], members: &[&str], target: u8, spec: &[&str]) -> Option<RosterChange> {
        next_change(&roster(voters, members, target), &view(spec), NOW, &Settings::default())
    }

    #[test]
    fn decisions_from_tables() {
        use RosterChange::{Add, Demote};
        let cases: &[(&str, &[&str], &[&str], u8, &[&str], Option<RosterChange>)] = &[
            ("at the target, all well: nothing", &["a", "b", "c"], &["d"], 3, &["a:z1:up", "b:z2:up", "c:z3:up", "d:z1:up"], None),
            ("fewer voters than the target: promote", &["a", "b", "c"], &["d", "e"], 5, &["a::up", "b::up", "c::up", "d::up", "e::up"], Some(Add(node("d")))),
            ("a member up for less than the stabilisation time waits", &["a", "b", "c"], &["d"], 5, &["a::up", "b::up", "c::up", "d::new"], None),
            ("a suspect member is not promoted", &["a", "b", "c"], &["d", "e"], 5, &["a::up", "b::up", "c::up", "d::sus", "e::up"], Some(Add(node("e")))),
            ("a member demoted lately is held down", &["a", "b", "c"], &["d", "e"], 5, &["a::up", "b::up", "c::up", "d::held", "e::up"], Some(Add(node("e")))),
            ("promote from the zone with the fewest voters", &["a", "b"], &["c", "d"], 3, &["a:z1:up", "b:z2:up", "c:z1:up", "d:z3:up"], Some(Add(node("d")))),
            ("more voters than the target: demote the most crowded zone's", &["a", "b", "c", "d"], &[], 3, &["a:z1:up", "b:z1:up", "c:z2:up", "d:z3:up"], Some(Demote(node("b")))),
            ("over the target: demote a failed voter first", &["a", "b", "c", "d"], &[], 3, &["a:z1:up", "b:z1:up", "c:z2:down", "d:z3:up"], Some(Demote(node("c")))),
            ("over the target, no zones: demote a suspect one, then the most recently up", &["a", "b", "c", "d"], &[], 3, &["a::up", "b::sus", "c::up", "d::new"], Some(Demote(node("b")))),
            ("over the target, all up alike: the last by name", &["a", "b", "c", "d"], &[], 3, &["a::new", "b::up", "c::up", "d::up"], Some(Demote(node("d")))),
            ("a voter down for replace_after: promote a replacement", &["a", "b", "c"], &["d"], 3, &["a::up", "b::up", "c::down", "d::up"], Some(Add(node("d")))),
            ("a voter down for less: wait", &["a", "b", "c"], &["d"], 3, &["a::up", "b::up", "c::blip", "d::up"], None),
            ("a failed voter and nobody fit to replace it: nothing", &["a", "b", "c"], &["d"], 3, &["a::up", "b::up", "c::down", "d::sus"], None),
            ("two zones of three voters' worth: promote into the empty third zone", &["a", "b", "c"], &["d"], 3, &["a:z1:up", "b:z1:up", "c:z2:up", "d:z3:up"], Some(Add(node("d")))),
            ("spread as well as the zones allow: nothing", &["a", "b", "c"], &["d"], 3, &["a:z1:up", "b:z1:up", "c:z2:up", "d:z2:up"], None),
            ("a roster made before targets is left alone", &["a", "b"], &["c"], 0, &["a::up", "b::down", "c::up"], None),
        ];
        for (what, voters, members, target, spec, want) in cases {
            assert_eq!(decide(voters, members, *target, spec), *want, "{what}");
        }
    }

    #[test]
    fn a_voter_counts_as_failed_only_if_a_majority_of_the_voters_see_it_down() {
        let r = roster(&["a", "b", "c"], &["d"], 3);
        // a is behind a one-way cut: it sees c down; b and c see c up.
        let a_sees = view(&["a::up", "b::up", "c::down", "d::up"]);
        let alone = confirm_down(&r, a_sees.clone(), &[(node("a"), vec![node("c")])]);
        assert_eq!(next_change(&r, &alone, NOW, &Settings::default()), None, "no replacement on one voter's word");
        assert_eq!(alone[2].health, Health::Suspect);
        // b sees it down too: a majority of the three.
        let both = confirm_down(&r, a_sees, &[(node("a"), vec![node("c")]), (node("b"), vec![node("c")])]);
        assert_eq!(next_change(&r, &both, NOW, &Settings::default()), Some(RosterChange::Add(node("d"))));
        // Reports of members that do not vote, or twice from one voter, count for nothing.
        let by_member = confirm_down(&r, view(&["a::up", "b::up", "c::down", "d::up"]), &[(node("a"), vec![node("c")]), (node("d"), vec![node("c")]), (node("a"), vec![node("c")])]);
        assert_eq!(by_member[2].health, Health::Suspect);
        // One over the target after that promotion: c goes, on the same reports.
        let over = r.changed(&RosterChange::Add(node("d"))).unwrap();
        let both = confirm_down(&over, view(&["a::up", "b::up", "c::down", "d::up"]), &[(node("a"), vec![node("c")]), (node("b"), vec![node("c")]), (node("d"), vec![node("c")])]);
        assert_eq!(next_change(&over, &both, NOW, &Settings::default()), Some(RosterChange::Demote(node("c"))));
    }

    /// Placement run to its end from many starting points: it settles (no flapping), at the
    /// target, spread, with every change one the core accepts.
    #[test]
    fn placement_settles_at_the_target_spread_over_zones() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        for zones in 1..=4usize {
            for target in [1u8, 3, 5, 7, 9] {
                for start in 1..=names.len().min(9) {
                    let spec: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("{n}:z{}:up", i % zones)).collect();
                    let spec: Vec<&str> = spec.iter().map(|s| s.as_str()).collect();
                    let view = view(&spec);
                    let mut r = roster(&names[..start], &names[start..], target);
                    let mut steps = 0;
                    while let Some(change) = next_change(&r, &view, NOW, &Settings::default()) {
                        r = r.changed(&change).unwrap_or_else(|e| panic!("{change:?}: {e:?}"));
                        steps += 1;
                        assert!(steps <= 30, "no end: zones {zones}, target {target}, start {start}: {r:?}");
                    }
                    assert_eq!(r.voters.len(), (target as usize).min(names.len()), "zones {zones}, target {target}, start {start}");
                    assert!(spread_is_best(&r.voters, &view), "zones {zones}, target {target}, start {start}: {:?}", r.voters);
                }
            }
        }
    }
}
