//! The invariants, checked against ghost state the simulator sees and no node does: every
//! durable acceptance, every roster, and every interval in which a client trusted a lease.
//!
//! Each check names the point of the safety contract (docs/PROTOCOL.md §0) it comes from.

use std::collections::{BTreeMap, BTreeSet};

use lockmesh_core::message::AcceptedValue;
use lockmesh_core::events::{EventKind, EventLog};
use lockmesh_core::history::MIN_HOLDS;
use lockmesh_core::record::{LockRecord, Outcome};
use lockmesh_core::call::Outcome as CallOutcome;
use lockmesh_core::{
    quorum, Answer, AutoChoice, AutoLease, Ballot, Key, LockResult, LockType, NodeId, Reply, RequestId, Roster, RosterId, Value, Which, Write,
};

use crate::serve::CallRequest;
use lockmesh_core::acceptor::Slot;

/// Durable acceptances of one (register, ballot).
#[derive(Default)]
struct Acceptance {
    voters: BTreeSet<NodeId>,
    /// The installed roster under which they accepted (voters accept only under their own).
    tag: Option<RosterId>,
    value: Option<Value>,
    chosen: bool,
}

/// A stretch of true time in which one client trusted one grant.
#[derive(Clone, Debug)]
struct Interval {
    client: usize,
    holder: String,
    /// The grant's id, and the digest of the request it answers.
    grant: u64,
    request: u64,
    token: u64,
    lock_type: LockType,
    start_us: u64,
    end_us: u64,
}

#[derive(Default)]
pub struct Checker {
    pub violations: Vec<String>,
    acceptances: BTreeMap<(Key, Ballot), Acceptance>,
    rosters: BTreeMap<RosterId, Roster>,
    chosen_rosters: BTreeSet<RosterId>,
    /// Chosen records' last tokens per scope, by ballot, to check they never go back.
    chosen_tokens: BTreeMap<String, BTreeMap<Ballot, u64>>,
    /// Chosen records per scope, by ballot, as far as the chain check needs them.
    chain: BTreeMap<String, BTreeMap<Ballot, Link>>,
    /// Chosen records' event logs per scope, by ballot (ages zeroed), to check that watchers
    /// see one history: numbers never go back and one number is always the same event.
    chosen_events: BTreeMap<String, BTreeMap<Ballot, EventLog>>,
    /// Requests that some chosen record shows as a holder, with the node that granted them,
    /// and when a chosen record last showed it.
    granted: BTreeMap<(String, RequestId, String), u64>,
    /// Requests every attempt of which got a definite "not granted".
    refused: Vec<(String, RequestId, u64)>,
    /// When each copy of an acquire (named by its serving node and attempt) reached a
    /// running node (true time).
    reached: BTreeMap<(String, RequestId, String), u64>,
    intervals: BTreeMap<String, Vec<Interval>>,
    /// When a voter first wrote a record holding each grant (scope, request digest, id,
    /// token): the grant is no younger than that. (Two branches of proposals may give two
    /// requests the same id and token; the request tells them apart.)
    first_written: BTreeMap<(String, u64, u64, u64), u64>,
    /// When bare unlocks of each (scope, holder) reached the node that applies them.
    bare_arrivals: BTreeMap<(String, String), Vec<u64>>,
    /// The same by request: (digest of the request id) -> (holder, arrivals of its copies).
    bare_requests: BTreeMap<u64, (String, Vec<u64>)>,
    pub grants_trusted: u64,
    /// Auto leases granted, and how many of them were chosen from a percentile.
    pub auto_leases: (u64, u64),
    pub latest_roster: Option<Roster>,
    /// Entries a record's request log keeps (the core's `Limits::log_capacity`).
    pub log_capacity: usize,
}

/// One grant of a chosen record, as the chain check sees it.
#[derive(Clone, Debug)]
struct LinkGrant {
    id: u64,
    token: u64,
    holder: String,
    /// `RequestId::digest` of the acquire it answers.
    request: u64,
    reported: bool,
}

/// What the chain check needs of a chosen record: its grants, and its request log (digest,
/// outcome); `full`: the log is full, so it may have pushed out what the check looks for.
#[derive(Clone, Debug)]
struct Link {
    grants: Vec<LinkGrant>,
    log: Vec<(u64, Outcome)>,
    full: bool,
}

impl Link {
    fn new(record: &LockRecord, log_capacity: usize) -> Link {
        let grants = record
            .holders
            .iter()
            .map(|g| LinkGrant { id: g.id, token: g.token, holder: g.holder.clone(), request: g.request_id.digest(), reported: g.reported })
            .collect();
        let full = record.log.len() >= log_capacity;
        let log = record.log.iter().map(|e| (e.request, e.outcome)).collect();
        Link { grants, log, full }
    }

    fn holds(&self, g: &LinkGrant) -> bool {
        self.grants.iter().any(|x| x.id == g.id && x.token == g.token)
    }
}

/// Whether `later` continues `earlier`: no fewer events, and every number both still hold
/// names the same event.
fn one_history(earlier: &EventLog, later: &EventLog) -> bool {
    later.last_seq >= earlier.last_seq && later.events.iter().all(|e| earlier.events.iter().find(|x| x.seq == e.seq).is_none_or(|x| x == e))
}

fn conflicts(a: LockType, b: LockType) -> bool {
    a == LockType::Write || b == LockType::Write
}

impl Checker {
    /// A checker for records whose request logs keep `log_capacity` entries.
    pub fn new(log_capacity: usize) -> Checker {
        Checker { log_capacity, ..Checker::default() }
    }

    fn violation(&mut self, now_us: u64, text: String) {
        self.violations.push(format!("t={:.3}s {text}", now_us as f64 / 1e6));
    }

    /// The bootstrap roster is chosen by construction (every voter acknowledged it).
    pub fn first_roster(&mut self, roster: &Roster) {
        self.rosters.insert(roster.id(), roster.clone());
        self.chosen_rosters.insert(roster.id());
        self.latest_roster = Some(roster.clone());
    }

    /// A voter's acceptance reached its disk (seen in its writes at each sync).
    pub fn durable_acceptance(&mut self, now_us: u64, voter: &NodeId, key: &Key, accepted: &AcceptedValue) {
        if let Value::Roster(r) = &accepted.value {
            self.rosters.entry(r.id()).or_insert_with(|| r.clone());
        }
        let ballot = accepted.ballot;
        let entry = self.acceptances.entry((key.clone(), ballot)).or_default();
        let mut differs = false;
        if entry.value.is_none() {
            entry.value = Some(accepted.value.clone());
            entry.tag = accepted.roster;
        } else {
            differs = entry.value.as_ref() != Some(&accepted.value);
        }
        entry.voters.insert(voter.clone());
        if differs {
            self.violation(now_us, format!("paxos: two values accepted for {key:?} at {ballot:?}"));
        }
        if !self.acceptances[&(key.clone(), ballot)].chosen {
            self.update_chosen(now_us, key, ballot);
        }
    }

    fn majority_of_tag(&self, a: &Acceptance) -> bool {
        let Some(roster) = a.tag.and_then(|t| self.rosters.get(&t)) else { return false };
        let agreeing = a.voters.iter().filter(|v| roster.contains(v)).count();
        agreeing >= quorum::majority(roster.voters.len())
    }

    fn update_chosen(&mut self, now_us: u64, key: &Key, ballot: Ballot) {
        let Some(a) = self.acceptances.get(&(key.clone(), ballot)) else { return };
        if !self.majority_of_tag(a) {
            return;
        }
        let value = a.value.clone();
        if let Some(a) = self.acceptances.get_mut(&(key.clone(), ballot)) {
            a.chosen = true;
        }
        match (key, value) {
            (Key::Roster, Some(Value::Roster(r))) => {
                self.chosen_rosters.insert(r.id());
                let newer = self
                    .latest_roster
                    .as_ref()
                    .is_none_or(|l| (r.version, r.sweep_done) > (l.version, l.sweep_done));
                if newer {
                    self.latest_roster = Some(r);
                }
            }
            (Key::Scope(scope), Some(Value::Lock(record))) => {
                for g in &record.holders {
                    self.granted.insert((scope.clone(), g.request_id.clone(), g.node.clone()), now_us);
                }
                // Contract 2: a later chosen record never has a lower last token.
                let tokens = self.chosen_tokens.entry(scope.clone()).or_default();
                tokens.insert(ballot, record.last_token);
                let below = tokens.range(..ballot).next_back().map(|(b, t)| (*b, *t));
                let above = tokens.range((std::ops::Bound::Excluded(ballot), std::ops::Bound::Unbounded)).next().map(|(b, t)| (*b, *t));
                if let Some((b, t)) = below.filter(|(_, t)| *t > record.last_token) {
                    self.violation(now_us, format!("fencing: scope {scope} chose last_token {} at {ballot:?} after {t} at {b:?}", record.last_token));
                }
                if let Some((b, t)) = above.filter(|(_, t)| *t < record.last_token) {
                    self.violation(now_us, format!("fencing: scope {scope} chose last_token {} at {ballot:?} before {t} at {b:?}", record.last_token));
                }
                // Chosen records form one chain: a grant leaves only by ending.
                let link = Link::new(&record, self.log_capacity);
                let links = self.chain.get(scope.as_str());
                let below = links.and_then(|l| l.range(..ballot).next_back()).and_then(|(b, l)| self.broken_link(scope, l, &link).map(|why| (*b, why)));
                let above = links
                    .and_then(|l| l.range((std::ops::Bound::Excluded(ballot), std::ops::Bound::Unbounded)).next())
                    .and_then(|(b, l)| self.broken_link(scope, &link, l).map(|why| (*b, why)));
                self.chain.entry(scope.clone()).or_default().insert(ballot, link);
                for (b, why) in below.into_iter().chain(above) {
                    self.violation(now_us, format!("chain: scope {scope} chose records at {b:?} and {ballot:?} that are not one chain: {why}"));
                }
                let mut log = record.events.clone();
                log.events.iter_mut().for_each(|e| e.age_floor_us = 0);
                let logs = self.chosen_events.entry(scope.clone()).or_default();
                let below = logs.range(..ballot).next_back().map(|(b, l)| (*b, one_history(l, &log)));
                let above = logs.range((std::ops::Bound::Excluded(ballot), std::ops::Bound::Unbounded)).next().map(|(b, l)| (*b, one_history(&log, l)));
                logs.insert(ballot, log);
                for (b, ok) in below.into_iter().chain(above) {
                    if !ok {
                        self.violation(now_us, format!("watch: scope {scope} chose event logs at {b:?} and {ballot:?} that are not one history"));
                    }
                }
            }
            _ => {}
        }
    }

    /// How `later` fails to continue `earlier` as one chain of scope `scope`. A grant leaves
    /// only by ending — released, expired, or cancelled before anyone was told of it — and
    /// the later record's log says which: `Used` for a grant someone was told of (only an
    /// unreported one can end unused). And a bare release frees only grants older than its
    /// arrival: a release that the later record newly logs, whose holder lost exactly one
    /// grant there, must have arrived after that grant was first written.
    fn broken_link(&self, scope: &str, earlier: &Link, later: &Link) -> Option<String> {
        let log = &later.log;
        let gone: Vec<&LinkGrant> = earlier.grants.iter().filter(|g| !later.holds(g)).collect();
        for g in &gone {
            let ended = log.iter().filter(|e| e.0 == g.request).map(|e| e.1).collect::<Vec<_>>();
            // A full log may have pushed the entry out: then only what it still holds counts.
            if ended.is_empty() && later.full {
                continue;
            }
            let explained = ended.contains(&Outcome::Used) || (!g.reported && ended.contains(&Outcome::Ended));
            if !explained {
                return Some(format!("grant {} (token {}, {}reported) left with outcome {ended:?}", g.id, g.token, if g.reported { "" } else { "un" }));
            }
        }
        if earlier.full || later.full {
            return None;
        }
        let released_before = |d: u64| earlier.log.contains(&(d, Outcome::Released));
        for (digest, _) in log.iter().filter(|e| e.1 == Outcome::Released && !released_before(e.0)) {
            let Some((holder, arrivals)) = self.bare_requests.get(digest) else { continue };
            let theirs: Vec<&&LinkGrant> = gone.iter().filter(|g| g.holder == *holder).collect();
            let [g] = theirs.as_slice() else { continue };
            let last_arrival = arrivals.iter().max().copied().unwrap_or(0);
            let written = self.first_written.get(&(scope.to_string(), g.request, g.id, g.token));
            if written.is_some_and(|w| *w >= last_arrival) {
                return Some(format!("a bare release of {holder} (last copy arrived {last_arrival} µs) freed grant {} first written later", g.id));
            }
        }
        None
    }

    /// Contract 5: a node installs only a chosen roster, and one roster per version.
    pub fn installed_roster(&mut self, now_us: u64, node: &NodeId, roster: &Roster) {
        let id = roster.id();
        if !self.chosen_rosters.contains(&id) {
            self.violation(now_us, format!("roster: {node} installed v{} {:?}, never chosen", roster.version, id));
        }
        let other = self.chosen_rosters.iter().find(|c| c.version == id.version && **c != id).copied();
        if let Some(other) = other {
            self.violation(now_us, format!("roster: two rosters chosen as v{}: {id:?} and {other:?}", id.version));
        }
    }

    /// Every decided answer names who agreed to it (`agreed_by` in the API): a majority of
    /// distinct voters of its ballot's roster.
    pub fn agreement(&mut self, now_us: u64, reply: &Reply) {
        if reply.result.is_err() {
            return;
        }
        let distinct: BTreeSet<&NodeId> = reply.agreed.iter().collect();
        if distinct.len() != reply.agreed.len() || distinct.len() < quorum::majority(reply.voters) {
            self.violation(now_us, format!("majority: an answer on {:?} names {:?} as agreeing, of {} voters", reply.key, reply.agreed, reply.voters));
        }
    }

    /// Contract 5 and 6: a `locked` answer only after a majority of a roster in force (a chosen
    /// one) durably accepted a record that holds this grant, with at least the lease the
    /// answer names (the holder trusts that one; an auto lease is computed by the record; a
    /// later op of the same batch, a renewal, may have lengthened it; a later op of the same
    /// batch, a bare release by a process sharing the holder name, may have ended it, which
    /// the record's events then show).
    pub fn locked_reply(&mut self, now_us: u64, scope: &str, ballot: Option<Ballot>, holder: &str, (token, grant): (u64, u64), lease_us: u64) {
        let Some(ballot) = ballot else {
            self.violation(now_us, format!("honesty: {holder} told locked on {scope} without a ballot"));
            return;
        };
        let Some(a) = self.acceptances.get(&(Key::Scope(scope.to_string()), ballot)) else {
            self.violation(now_us, format!("majority: {holder} told locked on {scope} at {ballot:?}, which no voter accepted"));
            return;
        };
        let has_grant = matches!(&a.value, Some(Value::Lock(r))
            if r.holders.iter().any(|g| g.holder == holder && g.token == token && g.lease_us >= lease_us)
                || r.events.events.iter().any(|e| e.kind == EventKind::Released && e.holder == holder && e.token == token && e.grant == grant));
        let tag_chosen = a.tag.is_some_and(|t| self.chosen_rosters.contains(&t));
        let majority = self.majority_of_tag(a);
        let voters = a.voters.len();
        if !majority {
            self.violation(now_us, format!("majority: {holder} told locked on {scope} (token {token}) with {voters} acceptances, short of a majority"));
        } else if !tag_chosen {
            self.violation(now_us, format!("roster: {holder} locked {scope} (token {token}) under roster {:?}, never chosen", a.tag));
        } else if !has_grant {
            self.violation(now_us, format!("honesty: {holder} told locked on {scope} (token {token}, lease {lease_us} µs) but the accepted record lacks that grant"));
        }
    }

    /// An auto lease lies within the request's bounds, and is the maximum when the history
    /// held too few holds to say anything.
    pub fn auto_lease(&mut self, now_us: u64, scope: &str, rule: &AutoLease, lease_us: u64, choice: &AutoChoice) {
        self.auto_leases.0 += 1;
        self.auto_leases.1 += u64::from(choice.p99_us.is_some());
        let within = (rule.min_us..=rule.max_us).contains(&lease_us);
        let few = choice.holds < MIN_HOLDS;
        if !within || few != choice.p99_us.is_none() || (few && lease_us != rule.max_us) {
            self.violation(now_us, format!("auto lease on {scope}: {lease_us} µs from {choice:?} under {rule:?}"));
        }
    }

    /// A voter submitted `writes` for its disk: the first time a record holding a grant is
    /// written bounds that grant's age from above.
    pub fn written(&mut self, now_us: u64, writes: &[Write]) {
        for w in writes {
            let Write::Slot(Key::Scope(scope), Slot { accepted: Some(a), .. }) = w else { continue };
            let Value::Lock(record) = &a.value else { continue };
            for g in &record.holders {
                self.first_written.entry((scope.clone(), g.request_id.digest(), g.id, g.token)).or_insert(now_us);
            }
        }
    }

    /// Whether a bare unlock of `holder` that reached its node at `arrived_us` may free grant
    /// `grant`: the arrival rule frees only grants provably older than the arrival, and none
    /// is older than its first write.
    fn may_free(&self, scope: &str, request: u64, grant: u64, token: u64, arrived_us: u64) -> bool {
        self.first_written.get(&(scope.to_string(), request, grant, token)).is_some_and(|w| *w < arrived_us)
    }

    /// A bare unlock of `holder` on `scope` reached the node that applies it. Processes sharing
    /// a holder name are one holder (PROTOCOL §6): the unlock may free any grant of that name
    /// older than its arrival, so every process stops trusting such a grant there. Grants
    /// made after the arrival stay theirs — a variant that freed them is caught by exclusion.
    pub fn bare_unlock_arrived(&mut self, now_us: u64, scope: &str, holder: &str, request_id: &RequestId) {
        self.bare_arrivals.entry((scope.to_string(), holder.to_string())).or_default().push(now_us);
        self.bare_requests.entry(request_id.digest()).or_insert_with(|| (holder.to_string(), Vec::new())).1.push(now_us);
        let freeable: Vec<(u64, u64, u64)> = self
            .intervals
            .get(scope)
            .into_iter()
            .flatten()
            .filter(|i| i.holder == holder && i.end_us > now_us && self.may_free(scope, i.request, i.grant, i.token, now_us))
            .map(|i| (i.request, i.grant, i.token))
            .collect();
        for i in self.intervals.get_mut(scope).into_iter().flatten() {
            if i.holder == holder && freeable.contains(&(i.request, i.grant, i.token)) && i.end_us > now_us {
                i.end_us = now_us.max(i.start_us);
            }
        }
    }

    /// Contract 1 and 2: a client trusts a grant from `start_us` to `end_us` (true time).
    #[allow(clippy::too_many_arguments)]
    pub fn trusted(&mut self, client: usize, scope: &str, holder: &str, request: &RequestId, grant: u64, token: u64, lock_type: LockType, start_us: u64, end_us: u64) {
        // A bare unlock of this holder name that arrived after the grant was made may have
        // freed it: trust ends at that arrival (so none is left if it came first). Its token
        // must have risen all the same (contract 2), so the fencing check runs regardless.
        let request = request.digest();
        let arrivals = self.bare_arrivals.get(&(scope.to_string(), holder.to_string())).cloned().unwrap_or_default();
        let end_us = arrivals
            .into_iter()
            .filter(|a| self.may_free(scope, request, grant, token, *a))
            .fold(end_us, |end, a| end.min(a.max(start_us)));
        let empty = end_us <= start_us;
        let new = Interval { client, holder: holder.to_string(), grant, request, token, lock_type, start_us, end_us };
        let mut found = Vec::new();
        for other in self.intervals.get(scope).into_iter().flatten() {
            let same_grant = other.client == client && other.token == token;
            if same_grant {
                continue;
            }
            if !empty && conflicts(other.lock_type, lock_type) && other.start_us < end_us && start_us < other.end_us {
                found.push(format!(
                    "exclusion: on {scope}, client {client} ({lock_type:?}, token {token}) trusts [{:.3}s, {:.3}s] while client {} ({:?}, token {}) trusts [{:.3}s, {:.3}s]",
                    start_us as f64 / 1e6, end_us as f64 / 1e6, other.client, other.lock_type, other.token, other.start_us as f64 / 1e6, other.end_us as f64 / 1e6
                ));
            }
            let must_exceed = lock_type == LockType::Write || other.lock_type == LockType::Write;
            let ok = if must_exceed { token > other.token } else { token >= other.token };
            if other.start_us < start_us && !ok {
                found.push(format!(
                    "fencing: on {scope}, client {client} got token {token} ({lock_type:?}) after client {} used token {} ({:?})",
                    other.client, other.token, other.lock_type
                ));
            }
        }
        for text in found {
            self.violation(start_us, text);
        }
        if !empty {
            self.grants_trusted += 1;
            self.intervals.entry(scope.to_string()).or_default().push(new);
        }
    }

    /// The client stopped trusting its grant (it is about to send a release).
    pub fn stop_trusting(&mut self, client: usize, scope: &str, token: u64, at_us: u64) {
        for i in self.intervals.get_mut(scope).into_iter().flatten() {
            if i.client == client && i.token == token && i.end_us > at_us {
                i.end_us = at_us.max(i.start_us);
            }
        }
    }

    /// Contract 6 (PROTOCOL §11.9): a `busy` answer is committed. The record accepted at the
    /// answer's ballot remembers the refusal, so a copy of the request arriving later finds
    /// it — unless that value's log is full and pushed it out (later operations of the same
    /// batch), when a copy that arrived earlier is refused as too old instead.
    pub fn busy(&mut self, now_us: u64, scope: &str, ballot: Option<Ballot>, request_id: &RequestId) {
        let value = ballot.and_then(|b| self.acceptances.get(&(Key::Scope(scope.to_string()), b))).and_then(|a| a.value.as_ref());
        let remembered = match value {
            Some(Value::Lock(record)) => {
                let digest = request_id.digest();
                record.log.iter().any(|e| e.request == digest && e.outcome == Outcome::Refused) || record.log.len() >= self.log_capacity
            }
            _ => false,
        };
        if !remembered {
            self.violation(now_us, format!("honesty: {} told busy on {scope} at {ballot:?}, but no record accepted there remembers the refusal", request_id.0));
        }
    }

    /// Contract 6 for what calls answer: each answer is true of the record it was drawn
    /// from (the one accepted at the ballot of the call's last reply, or the cancel's).
    /// `expired`: the request neither holds nor waits, and the log says it ended; a wait
    /// that ended `busy` after its cancel: it neither holds nor waits; `released`: the log
    /// shows the release applied; `not_holder`: the grant named is not held. An answer the
    /// call never asks for is a bug. (A read that found the scope free answers from a record
    /// it carried forward, which expired what the accepted value still lists: not checked.)
    pub fn call_answer(&mut self, now_us: u64, asked: &CallRequest, outcome: &CallOutcome, last_ballot: Option<Ballot>) {
        let (scope, key) = match asked {
            CallRequest::Lock { key: Key::Scope(s), .. } | CallRequest::Unlock { key: Key::Scope(s), .. } => (s.clone(), Key::Scope(s.clone())),
            _ => return,
        };
        let record_at = |ballot: Option<Ballot>| match ballot.and_then(|b| self.acceptances.get(&(key.clone(), b))).and_then(|a| a.value.as_ref()) {
            Some(Value::Lock(r)) => Some(r.clone()),
            _ => None,
        };
        let logged = |r: &LockRecord, id: &RequestId, outcomes: &[Outcome]| {
            let d = id.digest();
            r.log.len() >= self.log_capacity || r.log.iter().any(|e| e.request == d && outcomes.contains(&e.outcome))
        };
        let lie = match (asked, outcome) {
            (_, CallOutcome::Unexpected(answer)) => Some(format!("the core answered {answer:?}, which the call never asks for")),
            (CallRequest::Lock { acquire, .. }, CallOutcome::Expired(why)) => match record_at(last_ballot) {
                None => Some(format!("expired ({why:?}) drawn from no accepted record")),
                Some(r) => {
                    let id = &acquire.request_id;
                    let present = r.holders.iter().any(|g| g.request_id == *id) || r.queue.iter().any(|w| w.request_id == *id);
                    (present || !logged(&r, id, &[Outcome::Ended, Outcome::Used])).then(|| format!("{} told expired ({why:?}), but the record holds it or does not say it ended", id.0))
                }
            },
            (CallRequest::Lock { acquire, .. }, CallOutcome::Busy { position: Some(_), ballot, .. }) => match record_at(*ballot) {
                None => Some("a cancelled wait drawn from no accepted record".to_string()),
                Some(r) => {
                    let id = &acquire.request_id;
                    let present = r.holders.iter().any(|g| g.request_id == *id) || r.queue.iter().any(|w| w.request_id == *id);
                    present.then(|| format!("{} told busy after its cancel, but the cancel's record still holds or queues it", id.0))
                }
            },
            (CallRequest::Unlock { holder, request_id, .. }, CallOutcome::Done(reply)) => match (&reply.result, record_at(reply.ballot)) {
                (_, None) => Some("an unlock answered from no accepted record".to_string()),
                (Ok(Answer::Lock(LockResult::Released)), Some(r)) => {
                    (!logged(&r, request_id, &[Outcome::Released])).then(|| format!("{holder}'s release {} told released, but the record does not show it applied", request_id.0))
                }
                (Ok(Answer::Lock(LockResult::Revoked)), _) => None,
                // A read behind the answer: it found the scope free, or this very request
                // released by another copy of it.
                (Ok(Answer::Lock(LockResult::Record(read))), _) => {
                    let free = read.holders.is_empty() || read.logged(request_id) == Some(Outcome::Released);
                    (!free).then(|| format!("{holder}'s release told done, but the read behind it shows {:?}", read.holders.iter().map(|g| &g.holder).collect::<Vec<_>>()))
                }
                (other, _) => Some(format!("{holder}'s release told done on {other:?}")),
            },
            (CallRequest::Unlock { holder, request_id, named, .. }, CallOutcome::NotHolder { .. }) => match record_at(last_ballot) {
                None => Some("not_holder drawn from no accepted record".to_string()),
                Some(r) if r.logged(request_id) == Some(Outcome::Released) => {
                    Some(format!("{holder}'s release {} told not_holder, but the record shows it applied", request_id.0))
                }
                Some(_) if named.is_none() => None,
                Some(r) => {
                    let which = named.as_ref().unwrap_or(&Which::Held);
                    let held = r.holders.iter().any(|g| {
                        g.holder == *holder
                            && match which {
                                Which::Grant { token, id } => g.token == *token && g.id == *id,
                                Which::Token(token) => g.token == *token && g.lock_type == LockType::Write,
                                Which::Held => false,
                            }
                    });
                    held.then(|| format!("{holder} told not_holder for {which:?}, which the record holds"))
                }
            },
            _ => None,
        };
        if let Some(lie) = lie {
            self.violation(now_us, format!("honesty: on {scope}: {lie}"));
        }
    }

    /// The copy `copy` (its serving node and attempt) of an acquire reached that node, which
    /// now starts to serve it.
    pub fn reached(&mut self, now_us: u64, scope: &str, request_id: &RequestId, copy: &str) {
        self.reached.insert((scope.to_string(), request_id.clone(), copy.to_string()), now_us);
    }

    /// Every attempt of this request was answered "not granted" (busy or no quorum).
    pub fn refused(&mut self, now_us: u64, scope: &str, request_id: &RequestId) {
        self.refused.push((scope.to_string(), request_id.clone(), now_us));
    }

    /// Contract 6, checked once the run is over: no request told "not granted" was granted
    /// after that answer.
    ///
    /// A copy of the request that reached the granting node only after the refusal is the one
    /// exception the protocol states (PROTOCOL §9.6): a node cannot tell a request delayed on
    /// its way (or unread while the node was paused) from a fresh one, so once the scope's
    /// request log forgot the refusal, such a copy can be granted. Copies that reached a node
    /// before the refusal must never be.
    pub fn finish(&mut self) {
        let refused = std::mem::take(&mut self.refused);
        for (scope, request_id, at) in refused {
            // A grant a chosen record showed only before the refusal had ended by then (a live
            // one is collected by a retry of its request, never refused); the contract is that
            // nothing grants the request after a definite failure.
            let granted_by = self
                .granted
                .iter()
                .filter(|((s, r, _), last)| *s == scope && *r == request_id && **last >= at)
                .map(|((_, _, node), _)| node.clone())
                .collect::<Vec<_>>();
            for node in granted_by {
                let late = self.reached.get(&(scope.clone(), request_id.clone(), node.clone())).is_some_and(|t| *t >= at);
                if !late {
                    self.violation(at, format!("honesty: request {} on {scope} was refused, yet a chosen record granted it (via {node})", request_id.0));
                }
            }
        }
    }
}
