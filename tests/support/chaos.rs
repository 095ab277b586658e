//! The chaos checker's history and verdict. Clients record every request with its outcome,
//! when they trusted a grant, and every use of the fenced resource; an observer records
//! linearizable reads of the hot scopes; the fault injector records which node was down or cut
//! off from which, and when. The checker reads it all afterwards. Kept apart from the run so a
//! test can feed it a history with known violations (proof of teeth).

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Instant;

/// One stretch in which a client trusted a grant (from its send to its lease end or release).
#[derive(Clone, Debug)]
pub struct Trust {
    pub client: usize,
    pub holder: String,
    pub scope: String,
    pub token: u64,
    /// The grant as the lock answer named it ("token-id").
    pub grant: String,
    pub write: bool,
    /// When the request that made the grant was first sent: the grant is no older.
    pub asked: Instant,
    pub start: Instant,
    pub end: Instant,
}

/// A release that named no grant (the holder's grants older than its arrival).
#[derive(Clone, Debug)]
pub struct BareUnlock {
    pub holder: String,
    pub scope: String,
    pub sent: Instant,
    /// When a definite answer came; `None` if some copy's fate is unknown (it may arrive at
    /// any time later).
    pub done: Option<Instant>,
}

/// One use of the fenced resource.
#[derive(Clone, Debug)]
pub struct Use {
    pub client: usize,
    pub scope: String,
    pub token: u64,
    pub at: Instant,
    pub accepted: bool,
    /// Whether the client, at that moment, still believed its lease valid.
    pub believed_valid: bool,
}

/// How an acquire ended, as the client was told.
#[derive(Clone, Debug)]
pub enum Outcome {
    Acked { token: u64 },
    /// A definite "no" (busy, no quorum, overloaded). `queued`: it waited in the queue first,
    /// so a grant may have been handed to it and taken back before the answer.
    Failed { why: String, queued: bool },
    /// Timed out or lost with the connection: it may or may not have taken effect.
    Unknown { why: String },
}

/// One acquire request (with its retries, under one request id). Clients that share a
/// holder name mark it `shared`; the others use a holder name per attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub holder: String,
    pub shared: bool,
    pub scope: String,
    pub sent: Instant,
    pub done: Instant,
    pub outcome: Outcome,
    /// The grant an acknowledged attempt got ("token-id").
    pub grant: Option<String>,
}

/// An acknowledged decision (grant, renewal or release) and who the serving node said agreed.
#[derive(Clone, Debug)]
pub struct Decision {
    pub what: String,
    /// Index of the node that served it.
    pub node: usize,
    pub sent: Instant,
    pub told: Instant,
    /// Node indexes named in `agreed_by` (None for a name the cluster never had).
    pub agreed: Vec<Option<usize>>,
    pub voters: usize,
}

/// One holder a read showed.
#[derive(Clone, Debug)]
pub struct Shown {
    pub holder: String,
    pub token: u64,
    pub write: bool,
    pub grant: String,
}

/// A linearizable read of one scope: its holders and queue.
#[derive(Clone, Debug)]
pub struct Observation {
    pub node: usize,
    pub scope: String,
    pub start: Instant,
    pub end: Instant,
    pub holders: Vec<Shown>,
    pub queue: Vec<String>,
}

/// What a fault did, as far as a vote can tell.
#[derive(Clone, Debug)]
pub enum Impairment {
    /// The node's process was dead or stopped.
    Down { node: usize, from: Instant, to: Instant },
    /// Every mesh packet from `src` to `dst` was dropped.
    Cut { src: usize, dst: usize, from: Instant, to: Instant },
}

/// One fault episode of the schedule.
#[derive(Clone, Debug)]
pub struct Episode {
    pub kind: String,
    pub start: Instant,
    pub end: Instant,
    /// Whether it left no healthy, connected majority (then no grant is expected during it).
    pub majority_lost: bool,
}

#[derive(Default, Debug)]
pub struct History {
    pub trusts: Vec<Trust>,
    pub uses: Vec<Use>,
    pub bare_unlocks: Vec<BareUnlock>,
    /// When each successful grant was told to its client.
    pub grants: Vec<Instant>,
    pub attempts: Vec<Attempt>,
    pub decisions: Vec<Decision>,
    pub observations: Vec<Observation>,
    pub impairments: Vec<Impairment>,
    pub episodes: Vec<Episode>,
}

/// A storage system that fences: it rejects a token lower than the highest it has seen.
#[derive(Default)]
pub struct Resource {
    highest: HashMap<String, u64>,
}

impl Resource {
    pub fn access(&mut self, scope: &str, token: u64) -> bool {
        let highest = self.highest.entry(scope.to_string()).or_insert(0);
        if token < *highest {
            return false;
        }
        *highest = token;
        true
    }
}

/// Every violation in the history, one line each.
pub fn check(history: &History) -> Vec<String> {
    let mut found = Vec::new();
    let history = &bare_unlocks_applied(history);
    exclusion_and_fencing(history, &mut found);
    majorities(history, &mut found);
    reads(history, &mut found);
    found
}

/// Processes sharing a holder name are one holder for a bare release (PROTOCOL §6): it may
/// free any of that name's grants made before it arrived — which is before its answer, if it
/// had a definite one. So every such grant stops being trusted (and used) from the release's
/// send; grants asked for after the answer must stay exclusive.
fn bare_unlocks_applied(history: &History) -> History {
    let mut trusts = history.trusts.clone();
    for t in &mut trusts {
        for u in history.bare_unlocks.iter().filter(|u| u.holder == t.holder && u.scope == t.scope) {
            let may_free = u.done.is_none_or(|done| t.asked < done);
            if may_free && t.end > u.sent {
                t.end = u.sent.max(t.start);
            }
        }
    }
    let mut uses = history.uses.clone();
    for u in &mut uses {
        let cut = trusts.iter().filter(|t| t.client == u.client && t.scope == u.scope && t.token == u.token && t.start <= u.at).any(|t| u.at >= t.end);
        let trusted = trusts.iter().any(|t| t.client == u.client && t.scope == u.scope && t.token == u.token && t.start <= u.at && u.at < t.end);
        if cut && !trusted {
            u.believed_valid = false;
        }
    }
    History {
        trusts,
        uses,
        bare_unlocks: history.bare_unlocks.clone(),
        grants: history.grants.clone(),
        attempts: history.attempts.clone(),
        decisions: history.decisions.clone(),
        observations: history.observations.clone(),
        impairments: history.impairments.clone(),
        episodes: history.episodes.clone(),
    }
}

/// No two conflicting trusted leases overlap; tokens rise; the resource never rejected a
/// client that still believed its lease valid.
fn exclusion_and_fencing(history: &History, found: &mut Vec<String>) {
    let mut by_scope: HashMap<&str, Vec<&Trust>> = HashMap::new();
    for t in &history.trusts {
        by_scope.entry(t.scope.as_str()).or_default().push(t);
    }
    for (scope, trusts) in by_scope {
        for (i, a) in trusts.iter().enumerate() {
            for b in &trusts[i + 1..] {
                let same_grant = a.client == b.client && a.token == b.token;
                let conflict = a.write || b.write;
                if !same_grant && conflict && a.start < b.end && b.start < a.end {
                    found.push(format!(
                        "exclusion: {scope}: client {} (token {}) and client {} (token {}) trusted overlapping leases",
                        a.client, a.token, b.client, b.token
                    ));
                }
                let (early, late) = if a.start <= b.start { (a, b) } else { (b, a) };
                let must_rise = early.write || late.write;
                if !same_grant && must_rise && late.token <= early.token && late.start >= early.start {
                    found.push(format!("fencing: {scope}: token {} granted after token {}", late.token, early.token));
                }
            }
        }
    }
    for u in &history.uses {
        if !u.accepted && u.believed_valid {
            found.push(format!("fencing: {}: the resource rejected token {} from client {} that believed its lease valid", u.scope, u.token, u.client));
        }
    }
}

/// Every acknowledged decision names a majority of its roster, of nodes that could have voted
/// while it was being decided: none dead or stopped, none cut off from the serving node, for
/// the whole time between the request and its answer.
fn majorities(history: &History, found: &mut Vec<String>) {
    for d in &history.decisions {
        let mut names: Vec<Option<usize>> = d.agreed.clone();
        names.sort();
        names.dedup();
        if names.len() * 2 <= d.voters || names.len() != d.agreed.len() {
            found.push(format!("majority: a {} at node {} was acknowledged with {:?} of {} voters", d.what, d.node, d.agreed, d.voters));
            continue;
        }
        for voter in &d.agreed {
            let Some(v) = *voter else {
                found.push(format!("majority: a {} at node {} names a voter the cluster never had", d.what, d.node));
                continue;
            };
            let covers = |from: Instant, to: Instant| from <= d.sent && d.told <= to;
            let impossible = history.impairments.iter().find(|i| match **i {
                Impairment::Down { node, from, to } => node == v && covers(from, to),
                Impairment::Cut { src, dst, from, to } => v != d.node && ((src, dst) == (d.node, v) || (src, dst) == (v, d.node)) && covers(from, to),
            });
            if let Some(why) = impossible {
                let (what, from, to) = match *why {
                    Impairment::Down { from, to, .. } => ("down", from, to),
                    Impairment::Cut { from, to, .. } => ("cut off from it", from, to),
                };
                found.push(format!(
                    "majority: a {} at node {} counted node {v}, which was {what} for {:.2} s from {:.2} s before the request until {:.2} s after its answer",
                    d.what,
                    d.node,
                    (to - from).as_secs_f64(),
                    (d.sent - from).as_secs_f64(),
                    (to - d.told).as_secs_f64()
                ));
            }
        }
    }
}

/// What linearizable reads saw agrees with what clients were told: never two conflicting
/// holders; an acknowledged grant shows with its token while trusted (nothing acknowledged was
/// lost); a definitely failed acquire never shows (or, if it had queued, not after its answer).
fn reads(history: &History, found: &mut Vec<String>) {
    let mut by_holder: HashMap<(&str, &str), Vec<&Attempt>> = HashMap::new();
    for a in &history.attempts {
        by_holder.entry((a.holder.as_str(), a.scope.as_str())).or_default().push(a);
    }
    for o in &history.observations {
        let writers = o.holders.iter().filter(|h| h.write).count();
        if writers > 0 && o.holders.len() > 1 {
            let shown: Vec<(&str, u64)> = o.holders.iter().map(|h| (h.holder.as_str(), h.token)).collect();
            found.push(format!("exclusion: a read of {} at node {} showed {shown:?}", o.scope, o.node));
        }
        let seen = o.holders.iter().map(|h| (h.holder.as_str(), Some(h))).chain(o.queue.iter().map(|q| (q.as_str(), None)));
        for (holder, shown) in seen {
            let Some(attempts) = by_holder.get(&(holder, o.scope.as_str())) else { continue };
            // The attempt this entry is: an acknowledged one with this grant; else, under a
            // name of its own, the attempt; a shared name's other entries are not told apart.
            let acked = shown.and_then(|h| attempts.iter().find(|a| a.grant.as_deref() == Some(h.grant.as_str())));
            let a = match (acked, attempts.as_slice()) {
                (Some(a), _) => a,
                (None, [a]) if !a.shared => a,
                _ => continue,
            };
            let token = shown.map(|h| h.token);
            match &a.outcome {
                Outcome::Acked { token: acked } => {
                    if token.is_some_and(|t| t != *acked) {
                        found.push(format!("read: {holder} was told token {acked}, a read showed {token:?}"));
                    }
                }
                Outcome::Failed { why, queued } => {
                    if !queued || o.start > a.done {
                        found.push(format!(
                            "read: {holder} was told {why} (asked {:?} after its send), yet a read of {} at node {} {:?} after that answer showed it (held: {})",
                            a.done - a.sent,
                            o.scope,
                            o.node,
                            o.start.saturating_duration_since(a.done),
                            token.is_some()
                        ));
                    }
                }
                Outcome::Unknown { .. } => {}
            }
        }
    }
    for t in &history.trusts {
        for o in history.observations.iter().filter(|o| o.scope == t.scope && o.start >= t.start && o.end <= t.end) {
            if !o.holders.iter().any(|h| h.holder == t.holder && h.token == t.token && h.grant == t.grant) {
                let shown: Vec<(&str, &str)> = o.holders.iter().map(|h| (h.holder.as_str(), h.grant.as_str())).collect();
                found.push(format!("lost: {} held {} (grant {}), but a read at node {} did not show it: {shown:?}", t.holder, t.scope, t.grant, o.node));
            }
        }
    }
}

/// Acquires whose outcome is unknown, and how many of them reads later showed as granted.
pub fn unknown_outcomes(history: &History) -> (usize, usize) {
    let unknown: Vec<&Attempt> = history.attempts.iter().filter(|a| matches!(a.outcome, Outcome::Unknown { .. })).collect();
    let granted = unknown.iter().filter(|a| !a.shared && history.observations.iter().any(|o| o.holders.iter().any(|h| h.holder == a.holder))).count();
    (unknown.len(), granted)
}

/// The longest stretch without a successful grant while a healthy majority existed (time
/// inside episodes that left none does not count), in seconds.
pub fn max_unavailability(history: &History, start: Instant, end: Instant) -> f64 {
    let mut times: Vec<Instant> = history.grants.clone();
    times.push(start);
    times.push(end);
    times.sort();
    times.windows(2).map(|w| gap_with_majority(history, w[0], w[1])).fold(0.0, f64::max)
}

fn gap_with_majority(history: &History, a: Instant, b: Instant) -> f64 {
    let mut gap = (b - a).as_secs_f64();
    for e in history.episodes.iter().filter(|e| e.majority_lost) {
        let (from, to) = (e.start.max(a), e.end.min(b));
        if from < to {
            gap -= (to - from).as_secs_f64();
        }
    }
    gap.max(0.0)
}

/// Per episode: how long after it healed the first grant came (None if the next episode began
/// first, or the run ended).
pub fn recoveries(history: &History, end: Instant) -> Vec<(String, Option<f64>)> {
    let mut grants = history.grants.clone();
    grants.sort();
    history
        .episodes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let next = history.episodes.get(i + 1).map_or(end, |n| n.start);
            let first = grants.iter().find(|&&g| g >= e.end && g <= next);
            (e.kind.clone(), first.map(|g| (*g - e.end).as_secs_f64()))
        })
        .collect()
}

/// The gaps without a grant longer than `over` seconds, with the episodes around them.
pub fn long_gaps(history: &History, start: Instant, end: Instant, over: f64) -> Vec<String> {
    let mut times: Vec<Instant> = history.grants.clone();
    times.push(start);
    times.push(end);
    times.sort();
    times
        .windows(2)
        .filter(|w| gap_with_majority(history, w[0], w[1]) > over)
        .map(|w| {
            let around: Vec<String> = history
                .episodes
                .iter()
                .filter(|e| e.start < w[1] && e.end + std::time::Duration::from_secs(5) > w[0])
                .map(|e| format!("{} {:.1}-{:.1}s", e.kind, (e.start - start).as_secs_f64(), (e.end - start).as_secs_f64()))
                .collect();
            format!("{:.1} s without a grant from {:.1}s; faults around: {}", (w[1] - w[0]).as_secs_f64(), (w[0] - start).as_secs_f64(), around.join(", "))
        })
        .collect()
}
