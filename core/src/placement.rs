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
//!   differently: voters check a demotion against their own view, `agrees`).
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

/// Whether a voter with this view accepts a roster value that demotes `demoted` from
/// `installed`: each is down for `replace_after` in its view, or the one its own placement
/// demotes. So a node behind a one-way cut, which sees healthy voters down, cannot have them
/// demoted: the voters that see them up refuse.
pub fn agrees(installed: &Roster, demoted: &[NodeId], view: &[Candidate], now: Time, settings: &Settings) -> bool {
    let failed = |id: &NodeId| {
        view.iter().any(|c| c.id == *id && matches!(c.health, Health::Down { since } if now.since(since) >= settings.replace_after_us))
    };
    let ours = next_change(installed, view, now, settings);
    demoted.iter().all(|v| failed(v) || ours == Some(RosterChange::Demote(v.clone())))
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

/// Whether the voters meet the spread rule as well as the zones in `view` allow: with three
/// zones or more among the voters and fit members, none holds half or more of the voters.
pub fn spread_holds(voters: &[NodeId], view: &[Candidate]) -> bool {
    let zone = |id: &NodeId| view.iter().find(|c| c.id == *id).map_or("", |c| c.zone.as_str());
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for v in voters {
        *count.entry(zone(v)).or_default() += 1;
    }
    let zones: alloc::collections::BTreeSet<&str> = view.iter().map(|c| c.zone.as_str()).collect();
    zones.len() < 3 || voters.len() < 3 || count.values().all(|c| 2 * c < voters.len())
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
    fn a_voter_agrees_to_a_demotion_only_as_its_own_view_calls_for_it() {
        let view_up = view(&["a::up", "b::up", "c::up", "d::up"]);
        let view_c_down = view(&["a::up", "b::up", "c::down", "d::up"]);
        let s = Settings::default();
        // At the target: a node behind a one-way cut sees c down; the others see it up.
        let at_target = roster(&["a", "b", "c"], &["d"], 3);
        assert!(!agrees(&at_target, &[node("c")], &view_up, NOW, &s), "c is up here");
        assert!(agrees(&at_target, &[node("c")], &view_c_down, NOW, &s), "c is down here too");
        // One over the target (a promotion came first): only the voter its own placement picks.
        let over = roster(&["a", "b", "c", "d"], &[], 3);
        assert!(agrees(&over, &[node("d")], &view_up, NOW, &s));
        assert!(!agrees(&over, &[node("c")], &view_up, NOW, &s), "placement here demotes d, not c");
        assert!(agrees(&over, &[node("c")], &view_c_down, NOW, &s));
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
                    assert!(spread_holds(&r.voters, &view), "zones {zones}, target {target}, start {start}: {:?}", r.voters);
                }
            }
        }
    }
}
