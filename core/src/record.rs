//! The lock record: the value of one scope's register, and the pure operations on it.
//!
//! Every ballot on a scope first carries the record forward by a proven lower bound of the
//! time that passed (`advance`), which expires leases and hands the lock to waiters, then
//! applies the requested operations (`apply`). Both are pure functions of the record, so every
//! node that runs them on the same inputs computes the same record.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::events::{EventKind, EventLog};
use super::history::{AutoChoice, AutoLease, HoldHistory};
use super::lease;

/// A client-chosen id that makes a request safe to retry: it is remembered in the record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub String);

impl RequestId {
    /// How the request log remembers it: 64 bits of its SHA-256, 8 bytes instead of the id's
    /// tens. Two ids of one scope's recent requests share a digest with odds of about 2^-50,
    /// and finding an id with the digest of someone else's takes about 2^64 hashes.
    pub fn digest(&self) -> u64 {
        let d = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&d.as_ref()[..8]);
        u64::from_le_bytes(first)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockType {
    /// Exclusive: excludes every other holder.
    Write,
    /// Shared: holds with other readers, excludes writers.
    Read,
}

/// Queue order: `High` before `Normal` before `Low`, then by arrival; a waiter moves up one
/// level for every `Limits::aging_us` it has waited (aging), so none waits forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// One holder's grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub holder: String,
    /// Fencing token; readers of one read phase share it.
    pub token: u64,
    /// The grant's own number in this scope, unique also among readers sharing a token (it is
    /// the `lease_seq` of its first lease instance, and that sequence never repeats). Clients
    /// name the grant by it (with the token) to release or renew exactly this one.
    pub id: u64,
    /// Whether an answer may have told a client of this grant. A direct grant is reported by
    /// the ballot that makes it; a grant handed over from the queue is not, until its waiter's
    /// next poll (a retry of its request, at any node) collects it. Only an unreported grant
    /// may be freed by a cancel, and until collected it lasts at most `pickup_us`.
    pub reported: bool,
    /// How long a handed-over grant waits to be collected (the waiter's place lease).
    pub pickup_us: u64,
    pub lock_type: LockType,
    pub lease_us: u64,
    /// Set when the lease was chosen from the scope's history (`"timeout": "auto"`).
    pub auto: Option<AutoChoice>,
    /// The node that ran the ballot which granted it.
    pub node: String,
    pub priority: Priority,
    pub reason: Option<String>,
    /// The acquire request that obtained it; a retry of that request renews it.
    pub request_id: RequestId,
    /// Lease instance: bumped by acquire, renew and handoff. Ages never carry across instances.
    pub lease_seq: u64,
    /// Proven lower bound of the true time since this lease instance started.
    pub elapsed_floor_us: u64,
    /// An admin revoked it: it can no longer be renewed and ends by the expiry rule.
    pub revoked: bool,
    /// If this grant expires (rather than being released), the scope stays closed this long.
    pub lock_delay_us: u64,
    /// Proven lower bound of the time since it was granted (renewals do not reset it).
    pub held_floor_us: u64,
}

impl Grant {
    /// The lease the voters expire it by: a grant nobody collected lasts only its pickup time.
    pub fn effective_lease_us(&self) -> u64 {
        if self.reported {
            self.lease_us
        } else {
            self.lease_us.min(self.pickup_us)
        }
    }
}

/// A request waiting in the scope's queue. It keeps its place while it polls: its own lease
/// (`wait_lease_us`) runs out otherwise, and it is skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub holder: String,
    pub request_id: RequestId,
    pub lock_type: LockType,
    /// The lease the grant will get when the lock is handed to this waiter (an auto lease is
    /// chosen then, from the history as it is at the handoff).
    pub lease: LeaseRule,
    pub lock_delay_us: u64,
    pub wait_lease_us: u64,
    pub node: String,
    pub priority: Priority,
    pub reason: Option<String>,
    pub arrival: u64,
    /// Bumped by every poll, so that a poll is a change the ballot must write: a poll that
    /// wrote nothing would not reset the place's lease on the voters.
    pub poll_seq: u64,
    /// Since the last poll (the place's lease).
    pub elapsed_floor_us: u64,
    /// Since the request joined the queue (for aging); never reset by polls.
    pub waited_floor_us: u64,
}

impl Waiter {
    /// Its place in the queue: the priority level after aging (0 = high), then arrival.
    fn rank(&self, aging_us: u64) -> (u64, u64) {
        let base = match self.priority {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        };
        let aged = self.waited_floor_us.checked_div(aging_us).unwrap_or(0);
        (base - aged.min(base), self.arrival)
    }
}

/// What became of a request that is no longer a holder or waiter, for answering retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The grant or the wait of this acquire ended (released, expired or cancelled) without
    /// anyone having been told of a grant.
    Ended,
    /// This acquire's grant was reported (someone was told "locked") and has ended since.
    Used,
    /// This release request was applied.
    Released,
    /// This acquire was refused (busy). Recording it makes the refusal a change that is
    /// committed at the deciding ballot, so a late copy of the request cannot be granted
    /// after its sender was told "busy" (PROTOCOL §12 P4).
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// `RequestId::digest` of the request.
    pub request: u64,
    pub outcome: Outcome,
    pub elapsed_floor_us: u64,
}

/// Bounds on a record's size, the same on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_waiters: usize,
    pub max_readers: usize,
    pub log_capacity: usize,
    /// How long (true time, lower bound) a finished request is remembered for retries.
    pub log_ttl_us: u64,
    /// A waiter moves up one priority level per this much waiting (0: no aging).
    pub aging_us: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_waiters: 1024, max_readers: 1024, log_capacity: 256, log_ttl_us: 600_000_000, aging_us: 60_000_000 }
    }
}

/// The register value of one scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The highest fencing token ever issued on this scope; never decreases.
    pub last_token: u64,
    /// Empty, exactly one write grant, or read grants sharing one token.
    pub holders: Vec<Grant>,
    /// Ordered by priority, then arrival.
    pub queue: Vec<Waiter>,
    pub next_arrival: u64,
    pub next_lease_seq: u64,
    /// Recently finished requests, oldest first.
    pub log: Vec<LogEntry>,
    /// Counts what the log was told (every `remember`, even one that only renews an entry's
    /// age), so that renewing the newest entry is a change a ballot must write.
    pub log_seq: u64,
    /// A lower bound of the age of the youngest entry the log ever dropped (capacity or age),
    /// `None` while it dropped none. A new request that may have arrived before that entry was
    /// written might have an outcome the log no longer remembers, so it is not granted.
    pub log_forgot_floor_us: Option<u64>,
    /// The latest high-priority requests (who, why, how long ago), newest last: an emergency
    /// that skipped the queue stays visible for a while.
    pub high_log: Vec<HighRequest>,
    /// Lock-delay left after a grant expired: nobody is granted the scope until it is 0. It
    /// counts down by lower bounds of the time passed, so it lasts at least as long as set.
    pub delay_remaining_us: u64,
    /// Contention in the last `WINDOWS` windows of `WINDOW_US`, newest last.
    pub recent: Vec<Window>,
    /// How long holds lasted, per day, for auto leases.
    pub history: HoldHistory,
    /// Recent transitions, numbered, for watchers.
    pub events: EventLog,
}

/// Contention counted over one window of time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Lower bound of the time since the window opened.
    pub age_floor_us: u64,
    /// New acquire requests (retries and polls are not counted again).
    pub attempts: u32,
    /// Those that found the lock taken (refused or queued).
    pub conflicts: u32,
    /// Grants that ended (released, expired or cancelled), and their total time held.
    pub holds: u32,
    pub hold_total_us: u64,
}

/// Contention is counted in windows of a minute, over the last ten.
pub const WINDOW_US: u64 = 60_000_000;
pub const WINDOWS: usize = 10;

/// Contention figures over the recent windows, as status reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contention {
    pub attempts: u64,
    pub conflicts: u64,
    pub holds: u64,
    pub hold_total_us: u64,
}

/// A high-priority acquire, as remembered in `LockRecord::high_log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighRequest {
    pub holder: String,
    pub reason: Option<String>,
    pub age_floor_us: u64,
}

/// How many high-priority requests a record remembers, and for how long.
const HIGH_LOG_CAPACITY: usize = 16;
const HIGH_LOG_TTL_US: u64 = 7 * 86_400_000_000;

/// The lease a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRule {
    Fixed(u64),
    /// Chosen from the scope's history when granted; a renewal keeps the chosen lease.
    Auto(AutoLease),
}

/// An acquire request as the core sees it (validated at the edge).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub request_id: RequestId,
    pub holder: String,
    pub lock_type: LockType,
    pub lease: LeaseRule,
    /// How long the scope stays closed if this grant expires instead of being released.
    pub lock_delay_us: u64,
    /// Queue if the lock is taken, keeping the place for `wait_lease_us` between polls.
    pub wait: bool,
    pub wait_lease_us: u64,
    pub priority: Priority,
    pub reason: Option<String>,
    pub node: String,
    /// A poll: a follow-up of a request already answered `Queued` (by this caller). It keeps
    /// the place or collects the grant, but never takes a new place or grant: if both are
    /// gone, the request ended (perhaps cancelled and answered elsewhere, its log entry since
    /// forgotten), and starting it over would grant a request its client was told had failed.
    pub poll: bool,
}

/// Which of a holder's grants a release or renewal means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Which {
    /// Exactly the grant with this token and id (`Grant::id`), as lock answers report it.
    Grant { token: u64, id: u64 },
    /// The write grant with this fencing token, which names it alone. Readers of one phase
    /// share a token — two processes under one holder name, or a reader that released and
    /// rejoined the phase — so a token never names a read grant: readers name theirs by id.
    Token(u64),
    /// A bare release, naming no grant: the holder's grants that the record can prove are
    /// older than the request's arrival at the node serving it. Safe only if the holder does
    /// not lock the scope again under the same name while an earlier bare release may still
    /// be in flight: no rule can tell a release delayed in the network from a fresh one.
    Held,
}

/// Names one grant: the holder's, narrowed by `which`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRef {
    pub holder: String,
    pub which: Which,
}

impl GrantRef {
    /// Whether `g` is the grant meant, for a request that arrived at its serving node at most
    /// `arrived_us` of true time ago. A grant is provably older than that arrival when the
    /// lower bound of the time since it was granted exceeds that upper bound.
    fn matches(&self, g: &Grant, arrived_us: u64) -> bool {
        g.holder == self.holder
            && match self.which {
                Which::Grant { token, id } => g.token == token && g.id == id,
                Which::Token(token) => g.token == token && g.lock_type == LockType::Write,
                Which::Held => g.held_floor_us > arrived_us,
            }
    }
}

/// An operation on one scope's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Take the lock, or queue for it; a retry (same request id) renews a current grant.
    Acquire(Acquire),
    /// Give up a grant (the first that `grant` names).
    Release { request_id: RequestId, grant: GrantRef },
    /// Start a new lease instance of a current grant (`Auto`: as long as the chosen lease).
    /// Only a grant named by id or token is renewed: a bare renewal of "the holder's" grant
    /// could hand one process the grant of another that shares its holder name.
    Renew { grant: GrantRef, lease: LeaseRule },
    /// A waiter gives up; if it was handed the lock meanwhile and nobody was told, the grant
    /// is released. A grant that was reported (a retry of the request collected it) is kept.
    Cancel { request_id: RequestId },
    /// Admin: block renewals of the grant with this token (every grant if `None`). The grant
    /// ends only by the expiry rule.
    Revoke { token: Option<u64> },
    /// Linearizable read.
    Read,
    /// Rewrite the record under the current roster (roster-change sweep).
    Sweep,
}

/// The answer to one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockResult {
    /// Granted or renewed. The holder trusts the lease from the send of its request. `grant`
    /// is the grant's id; `auto` says what an auto lease was chosen from.
    Locked { token: u64, grant: u64, lease_us: u64, lock_type: LockType, lease_seq: u64, auto: Option<AutoChoice> },
    /// Waiting; `position` counts from 1.
    Queued { position: usize },
    /// Taken by others and the request did not ask to wait (or the queue is full), or closed
    /// for the `lock_delay_us` still left after an expired lease.
    Busy { holders: Vec<String>, queue_full: bool, lock_delay_us: u64 },
    Released,
    /// No current grant matches this holder and token.
    NotHolder,
    /// The request's grant or wait already ended.
    Expired,
    /// A new request that arrived before the oldest outcome the request log still remembers:
    /// it might have been answered already, so it is refused (and this is remembered).
    TooOld,
    /// The grant was revoked by an admin; it ends by the expiry rule.
    Revoked,
    Cancelled,
    /// A cancel found its request holding a grant that was already reported (a retry of the
    /// request, perhaps at another node, collected it): the grant is kept.
    Collected { token: u64, grant: u64 },
    /// The record as of the read (after expiry), for status.
    Record(Box<LockRecord>),
    Swept,
}

impl LockRecord {
    /// Carries every lease and log entry forward by `elapsed_us` of true time (a proven lower
    /// bound), drops what expired, and hands the lock to the head of the queue.
    pub fn advance(&mut self, elapsed_us: u64, limits: &Limits) {
        let mut ended = Vec::new();
        self.delay_remaining_us = self.delay_remaining_us.saturating_sub(elapsed_us);
        for w in &mut self.recent {
            w.age_floor_us = w.age_floor_us.saturating_add(elapsed_us);
        }
        self.recent.retain(|w| w.age_floor_us < WINDOW_US * WINDOWS as u64);
        self.history.advance(elapsed_us);
        self.events.advance(elapsed_us);
        let mut delay = 0;
        let mut held = Vec::new();
        self.holders.retain_mut(|g| {
            g.elapsed_floor_us = g.elapsed_floor_us.saturating_add(elapsed_us);
            g.held_floor_us = g.held_floor_us.saturating_add(elapsed_us);
            let keep = !lease::is_expired(g.elapsed_floor_us, g.effective_lease_us());
            if !keep {
                ended.push((g.request_id.clone(), if g.reported { Outcome::Used } else { Outcome::Ended }));
                held.push((g.held_floor_us, g.holder.clone(), g.token, g.id, g.lock_type));
                if g.reported {
                    // The lease ended at least `floor - lease` ago: the scope stays closed for
                    // what is left of the lock-delay counted from there (never less than that,
                    // as the floor is a lower bound). An unreported grant was never used.
                    let since_end = g.elapsed_floor_us.saturating_sub(g.lease_us);
                    delay = delay.max(g.lock_delay_us.saturating_sub(since_end));
                }
            }
            keep
        });
        self.delay_remaining_us = self.delay_remaining_us.max(delay);
        for (held_us, holder, token, id, lock_type) in held {
            // An expired hold says how long the lease was, not how long the work took.
            self.count_hold(held_us, false);
            self.events.push(EventKind::Expired, &holder, token, id, lock_type);
        }
        let mut left = Vec::new();
        self.queue.retain_mut(|w| {
            w.elapsed_floor_us = w.elapsed_floor_us.saturating_add(elapsed_us);
            w.waited_floor_us = w.waited_floor_us.saturating_add(elapsed_us);
            let keep = !lease::is_expired(w.elapsed_floor_us, w.wait_lease_us);
            if !keep {
                ended.push((w.request_id.clone(), Outcome::Ended));
                left.push((w.holder.clone(), w.lock_type));
            }
            keep
        });
        for (holder, lock_type) in left {
            self.events.push(EventKind::Left, &holder, 0, 0, lock_type);
        }
        self.log_forgot_floor_us = self.log_forgot_floor_us.map(|f| f.saturating_add(elapsed_us));
        let mut forgot = None;
        self.log.retain_mut(|e| {
            e.elapsed_floor_us = e.elapsed_floor_us.saturating_add(elapsed_us);
            let keep = e.elapsed_floor_us <= limits.log_ttl_us;
            if !keep {
                forgot = Some(forgot.map_or(e.elapsed_floor_us, |f: u64| f.min(e.elapsed_floor_us)));
            }
            keep
        });
        if let Some(floor) = forgot {
            self.forgot(floor);
        }
        self.high_log.retain_mut(|h| {
            h.age_floor_us = h.age_floor_us.saturating_add(elapsed_us);
            h.age_floor_us <= HIGH_LOG_TTL_US
        });
        for (request_id, outcome) in ended {
            self.remember(request_id, outcome, limits);
        }
        self.queue.sort_by_key(|w| w.rank(limits.aging_us));
        self.promote(limits);
    }

    /// Applies one operation that arrived at its serving node at most `arrived_us` of true
    /// time ago (an upper bound, measured by that node). Never panics, whatever the input.
    pub fn apply(&mut self, op: &LockOp, arrived_us: u64, limits: &Limits) -> LockResult {
        match op {
            LockOp::Acquire(acquire) => self.acquire(acquire, arrived_us, limits),
            LockOp::Release { request_id, grant } => {
                // A release that was already applied does nothing again: a delayed duplicate
                // must not free a later grant of the same holder and token (a reader that
                // rejoined the same read phase). Found by the simulator, seed 680 (churn).
                if self.logged(request_id) == Some(Outcome::Released) {
                    return LockResult::Released;
                }
                if let Some(at) = self.holders.iter().position(|g| grant.matches(g, arrived_us)) {
                    let grant = self.holders.remove(at);
                    self.count_hold(grant.held_floor_us, grant.reported);
                    self.events.push(EventKind::Released, &grant.holder, grant.token, grant.id, grant.lock_type);
                    self.remember(grant.request_id, if grant.reported { Outcome::Used } else { Outcome::Ended }, limits);
                    self.remember(request_id.clone(), Outcome::Released, limits);
                    self.promote(limits);
                    LockResult::Released
                } else {
                    LockResult::NotHolder
                }
            }
            LockOp::Renew { grant, lease } => {
                if grant.which == Which::Held {
                    return LockResult::NotHolder;
                }
                match self.holders.iter().position(|g| grant.matches(g, arrived_us)) {
                    Some(at) if self.holders[at].revoked => LockResult::Revoked,
                    Some(at) => self.renew(at, *lease),
                    None => LockResult::NotHolder,
                }
            }
            LockOp::Cancel { request_id } => {
                if let Some(at) = self.queue.iter().position(|w| w.request_id == *request_id) {
                    let w = self.queue.remove(at);
                    self.events.push(EventKind::Left, &w.holder, 0, 0, w.lock_type);
                } else if let Some(at) = self.holders.iter().position(|g| g.request_id == *request_id) {
                    let g = &self.holders[at];
                    if g.reported {
                        // Someone was told "locked" for it (a retry of this request, maybe at
                        // another node): it is theirs until released or expired.
                        return LockResult::Collected { token: g.token, grant: g.id };
                    }
                    // Handed over before the waiter gave up, and nobody was told of it, so
                    // nobody trusts it: freeing it at once is safe.
                    let grant = self.holders.remove(at);
                    // Never used: no work to learn from.
                    self.count_hold(grant.held_floor_us, false);
                    self.events.push(EventKind::Released, &grant.holder, grant.token, grant.id, grant.lock_type);
                } else if let Some(outcome) = self.logged(request_id) {
                    // Remembered anew, as a definite answer drawn from the log (see `acquire`).
                    self.remember(request_id.clone(), outcome, limits);
                    // Too late: a grant this request was told of already ended.
                    return if outcome == Outcome::Used { LockResult::Expired } else { LockResult::Cancelled };
                }
                // Also for a request not seen yet: a late copy of it must not be granted.
                self.remember(request_id.clone(), Outcome::Ended, limits);
                self.promote(limits);
                LockResult::Cancelled
            }
            LockOp::Revoke { token } => {
                let mut any = false;
                for g in self.holders.iter_mut().filter(|g| token.is_none_or(|t| g.token == t)) {
                    if !g.revoked {
                        self.events.push(EventKind::Revoked, &g.holder, g.token, g.id, g.lock_type);
                    }
                    g.revoked = true;
                    any = true;
                }
                if any {
                    LockResult::Revoked
                } else {
                    LockResult::NotHolder
                }
            }
            LockOp::Read => LockResult::Record(Box::new(self.clone())),
            LockOp::Sweep => LockResult::Swept,
        }
    }

    fn acquire(&mut self, a: &Acquire, arrived_us: u64, limits: &Limits) -> LockResult {
        // A retry of a request that already holds: run a renew, so that the lease counts from
        // the retry's send, which is what its sender will trust (PROTOCOL §12 P3). This is also
        // how a waiter collects a grant handed to it: the renewal marks it reported.
        if let Some(at) = self.holders.iter().position(|g| g.request_id == a.request_id) {
            if self.holders[at].revoked {
                return LockResult::Revoked;
            }
            return self.renew(at, a.lease);
        }
        if let Some(at) = self.queue.iter().position(|w| w.request_id == a.request_id) {
            let poll_seq = self.next_lease_seq();
            let w = &mut self.queue[at];
            w.elapsed_floor_us = 0;
            w.wait_lease_us = a.wait_lease_us;
            w.poll_seq = poll_seq;
            return LockResult::Queued { position: at + 1 };
        }
        // A definite failure drawn from the log is remembered anew, so the entry is as young as
        // this answer: a copy of the request that reached some node before it is then older
        // than the entry, and refused as too old once the log forgets it.
        match self.logged(&a.request_id) {
            Some(outcome @ (Outcome::Ended | Outcome::Used)) => {
                self.remember(a.request_id.clone(), outcome, limits);
                return LockResult::Expired;
            }
            Some(Outcome::Refused) => {
                self.remember(a.request_id.clone(), Outcome::Refused, limits);
                let holders = self.holders.iter().map(|g| g.holder.clone()).collect();
                return LockResult::Busy { holders, queue_full: false, lock_delay_us: self.delay_remaining_us };
            }
            Some(Outcome::Released) | None => {}
        }
        if a.poll {
            // Neither holding nor waiting, and not remembered: it ended, and the log forgot.
            self.remember(a.request_id.clone(), Outcome::Ended, limits);
            return LockResult::Expired;
        }
        if self.log_forgot_floor_us.is_some_and(|forgot| arrived_us >= forgot) {
            // Its outcome, if it had one, may be among what the log forgot (a copy of it that
            // was answered "busy" long ago, say): it must not be granted now. Remembered, so a
            // later copy is refused the same way.
            self.remember(a.request_id.clone(), Outcome::Ended, limits);
            return LockResult::TooOld;
        }
        let free = self.compatible(a.lock_type, limits);
        let window = self.window();
        window.attempts = window.attempts.saturating_add(1);
        if !free {
            window.conflicts = window.conflicts.saturating_add(1);
        }
        let will_queue = a.wait && self.queue.len() < limits.max_waiters;
        if a.priority == Priority::High && (will_queue || free) {
            self.high_log.push(HighRequest { holder: a.holder.clone(), reason: a.reason.clone(), age_floor_us: 0 });
            let excess = self.high_log.len().saturating_sub(HIGH_LOG_CAPACITY);
            self.high_log.drain(..excess);
        }
        if free {
            let token = match (a.lock_type, self.holders.first()) {
                (LockType::Read, Some(reader)) => reader.token,
                _ => self.next_token(),
            };
            let lease_seq = self.next_lease_seq();
            let (lease_us, auto) = self.lease_for(a.lease);
            self.holders.push(Grant {
                holder: a.holder.clone(),
                token,
                id: lease_seq,
                reported: true,
                pickup_us: 0,
                lock_type: a.lock_type,
                lease_us,
                auto,
                node: a.node.clone(),
                priority: a.priority,
                reason: a.reason.clone(),
                request_id: a.request_id.clone(),
                lease_seq,
                elapsed_floor_us: 0,
                revoked: false,
                lock_delay_us: a.lock_delay_us,
                held_floor_us: 0,
            });
            self.events.push(EventKind::Granted, &a.holder, token, lease_seq, a.lock_type);
            return LockResult::Locked { token, grant: lease_seq, lease_us, lock_type: a.lock_type, lease_seq, auto };
        }
        let holders = self.holders.iter().map(|g| g.holder.clone()).collect();
        if !a.wait || self.queue.len() >= limits.max_waiters {
            self.remember(a.request_id.clone(), Outcome::Refused, limits);
            return LockResult::Busy { holders, queue_full: a.wait, lock_delay_us: self.delay_remaining_us };
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.queue.push(Waiter {
            holder: a.holder.clone(),
            request_id: a.request_id.clone(),
            lock_type: a.lock_type,
            lease: a.lease,
            lock_delay_us: a.lock_delay_us,
            wait_lease_us: a.wait_lease_us,
            node: a.node.clone(),
            priority: a.priority,
            reason: a.reason.clone(),
            arrival,
            poll_seq: 0,
            elapsed_floor_us: 0,
            waited_floor_us: 0,
        });
        self.events.push(EventKind::Queued, &a.holder, 0, 0, a.lock_type);
        self.queue.sort_by_key(|w| w.rank(limits.aging_us));
        let at = self.queue.iter().position(|w| w.request_id == a.request_id).unwrap_or(0);
        LockResult::Queued { position: at + 1 }
    }

    /// Whether a new request of this type may be granted now, ahead of nobody: the queue
    /// must be empty (a queued writer stops new readers), and the holders compatible.
    fn compatible(&self, lock_type: LockType, limits: &Limits) -> bool {
        self.queue.is_empty() && self.delay_remaining_us == 0 && self.fits(lock_type, limits)
    }

    /// Whether a grant of this type fits beside the current holders.
    fn fits(&self, lock_type: LockType, limits: &Limits) -> bool {
        match lock_type {
            LockType::Write => self.holders.is_empty(),
            LockType::Read => {
                self.holders.len() < limits.max_readers && self.holders.iter().all(|g| g.lock_type == LockType::Read)
            }
        }
    }

    /// Starts a new lease instance. It never ends before the current one could: until the
    /// holder hears of the renewal it still trusts the old lease, so a shorter renewal is
    /// stretched to what may remain of the old one (an upper bound, since the floor is a
    /// lower bound of the time elapsed). An auto grant renewed with `Auto` keeps its lease.
    fn renew(&mut self, at: usize, lease: LeaseRule) -> LockResult {
        let lease_seq = self.next_lease_seq();
        let g = &mut self.holders[at];
        let wanted = match lease {
            LeaseRule::Fixed(us) => {
                g.auto = None;
                us
            }
            LeaseRule::Auto(_) => g.lease_us,
        };
        let lease_us = wanted.max(g.lease_us.saturating_sub(g.elapsed_floor_us));
        g.lease_seq = lease_seq;
        g.elapsed_floor_us = 0;
        g.lease_us = lease_us;
        // This answer tells of the grant: from now on it is reported, and no cancel frees it.
        g.reported = true;
        LockResult::Locked { token: g.token, grant: g.id, lease_us, lock_type: g.lock_type, lease_seq, auto: g.auto }
    }

    /// The lease a grant gets now under `rule`.
    fn lease_for(&self, rule: LeaseRule) -> (u64, Option<AutoChoice>) {
        match rule {
            LeaseRule::Fixed(us) => (us, None),
            LeaseRule::Auto(auto) => {
                let (us, choice) = self.history.choose(&auto);
                (us, Some(choice))
            }
        }
    }

    /// Hands the lock to the head of the queue while it is compatible with the holders:
    /// one writer, or a run of readers sharing one token.
    fn promote(&mut self, limits: &Limits) {
        if self.delay_remaining_us > 0 {
            return;
        }
        while let Some(head) = self.queue.first() {
            if !self.fits(head.lock_type, limits) {
                break;
            }
            let w = self.queue.remove(0);
            let token = match (w.lock_type, self.holders.first()) {
                (LockType::Read, Some(reader)) => reader.token,
                _ => self.next_token(),
            };
            let lease_seq = self.next_lease_seq();
            self.events.push(EventKind::Granted, &w.holder, token, lease_seq, w.lock_type);
            let is_write = w.lock_type == LockType::Write;
            let (lease_us, auto) = self.lease_for(w.lease);
            self.holders.push(Grant {
                holder: w.holder,
                token,
                id: lease_seq,
                // Nobody is told yet: the waiter collects it with its next poll, within the
                // time its place was kept for, or loses it.
                reported: false,
                pickup_us: w.wait_lease_us,
                lock_type: w.lock_type,
                lease_us,
                auto,
                node: w.node,
                priority: w.priority,
                reason: w.reason,
                request_id: w.request_id,
                lease_seq,
                elapsed_floor_us: 0,
                revoked: false,
                lock_delay_us: w.lock_delay_us,
                held_floor_us: 0,
            });
            if is_write {
                break;
            }
        }
    }

    /// The window now being counted (a new one each `WINDOW_US`).
    fn window(&mut self) -> &mut Window {
        if self.recent.last().is_none_or(|w| w.age_floor_us >= WINDOW_US) {
            self.recent.push(Window::default());
            let excess = self.recent.len().saturating_sub(WINDOWS);
            self.recent.drain(..excess);
        }
        let last = self.recent.len() - 1;
        &mut self.recent[last]
    }

    /// Counts an ended hold for contention, and, if `learn`, in the history auto leases are
    /// chosen from: only holds their holder released say how long the work took.
    fn count_hold(&mut self, held_us: u64, learn: bool) {
        let window = self.window();
        window.holds = window.holds.saturating_add(1);
        window.hold_total_us = window.hold_total_us.saturating_add(held_us);
        if learn {
            self.history.count(held_us);
        }
    }

    /// Contention over the recent windows (about the last ten minutes).
    pub fn contention(&self) -> Contention {
        let mut c = Contention { attempts: 0, conflicts: 0, holds: 0, hold_total_us: 0 };
        for w in &self.recent {
            c.attempts += u64::from(w.attempts);
            c.conflicts += u64::from(w.conflicts);
            c.holds += u64::from(w.holds);
            c.hold_total_us = c.hold_total_us.saturating_add(w.hold_total_us);
        }
        c
    }

    fn next_token(&mut self) -> u64 {
        // A u64 of grants cannot run out; overflow would be a bug, caught by overflow checks.
        self.last_token += 1;
        self.last_token
    }

    fn next_lease_seq(&mut self) -> u64 {
        self.next_lease_seq += 1;
        self.next_lease_seq
    }

    /// What the request log remembers of this request (its latest outcome), if anything.
    pub fn logged(&self, request_id: &RequestId) -> Option<Outcome> {
        let request = request_id.digest();
        self.log.iter().rev().find(|e| e.request == request).map(|e| e.outcome)
    }

    fn remember(&mut self, request_id: RequestId, outcome: Outcome, limits: &Limits) {
        let request = request_id.digest();
        self.log_seq += 1;
        self.log.retain(|e| !(e.request == request && e.outcome == outcome));
        self.log.push(LogEntry { request, outcome, elapsed_floor_us: 0 });
        let excess = self.log.len().saturating_sub(limits.log_capacity);
        let dropped = self.log.drain(..excess).map(|e| e.elapsed_floor_us).min();
        if let Some(floor) = dropped {
            self.forgot(floor);
        }
    }

    /// Notes that the log dropped an entry whose age is at least `floor_us`.
    fn forgot(&mut self, floor_us: u64) {
        self.log_forgot_floor_us = Some(self.log_forgot_floor_us.map_or(floor_us, |f| f.min(floor_us)));
    }

    /// Whether two records say the same thing apart from elapsed-time floors: if so, and the
    /// older one is chosen, nothing needs writing. Field by field, without copying: it runs
    /// for every ballot.
    pub fn same_state(&self, other: &LockRecord) -> bool {
        fn same<T>(a: &[T], b: &[T], eq: impl Fn(&T, &T) -> bool) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y))
        }
        // Every field is named here, so a new one cannot be forgotten below: it must be
        // compared, or said to be a floor.
        let LockRecord {
            last_token: _,
            holders: _,
            queue: _,
            next_arrival: _,
            next_lease_seq: _,
            log: _,
            log_seq: _,
            log_forgot_floor_us: _, // a floor
            high_log: _,
            delay_remaining_us: _, // a floor
            recent: _,             // counts, which change only with something else
            history: _,
            events: _,
        } = self;
        let grant = |a: &Grant, b: &Grant| {
            let Grant {
                holder: _,
                token: _,
                id: _,
                reported: _,
                pickup_us: _,
                lock_type: _,
                lease_us: _,
                auto: _,
                node: _,
                priority: _,
                reason: _,
                request_id: _,
                lease_seq: _,
                elapsed_floor_us: _, // floors
                revoked: _,
                lock_delay_us: _,
                held_floor_us: _,
            } = a;
            a.holder == b.holder
                && a.token == b.token
                && a.id == b.id
                && a.reported == b.reported
                && a.pickup_us == b.pickup_us
                && a.lock_type == b.lock_type
                && a.lease_us == b.lease_us
                && a.auto == b.auto
                && a.node == b.node
                && a.priority == b.priority
                && a.reason == b.reason
                && a.request_id == b.request_id
                && a.lease_seq == b.lease_seq
                && a.revoked == b.revoked
                && a.lock_delay_us == b.lock_delay_us
        };
        let waiter = |a: &Waiter, b: &Waiter| {
            let Waiter {
                holder: _,
                request_id: _,
                lock_type: _,
                lease: _,
                lock_delay_us: _,
                wait_lease_us: _,
                node: _,
                priority: _,
                reason: _,
                arrival: _,
                poll_seq: _,
                elapsed_floor_us: _, // floors
                waited_floor_us: _,
            } = a;
            a.holder == b.holder
                && a.request_id == b.request_id
                && a.lock_type == b.lock_type
                && a.lease == b.lease
                && a.lock_delay_us == b.lock_delay_us
                && a.wait_lease_us == b.wait_lease_us
                && a.node == b.node
                && a.priority == b.priority
                && a.reason == b.reason
                && a.arrival == b.arrival
                && a.poll_seq == b.poll_seq
        };
        // Counting a window's event always comes with another change; aging alone is no news.
        self.last_token == other.last_token
            && self.next_arrival == other.next_arrival
            && self.next_lease_seq == other.next_lease_seq
            && same(&self.holders, &other.holders, grant)
            && same(&self.queue, &other.queue, waiter)
            && self.log_seq == other.log_seq
            && same(&self.log, &other.log, |a, b| a.request == b.request && a.outcome == b.outcome)
            && same(&self.high_log, &other.high_log, |a, b| a.holder == b.holder && a.reason == b.reason)
            && same(&self.history.days, &other.history.days, |a, b| a.buckets == b.buckets)
            && self.events.last_seq == other.events.last_seq
            && same(&self.events.events, &other.events.events, |a, b| {
                a.seq == b.seq && a.kind == b.kind && a.holder == b.holder && a.token == b.token && a.grant == b.grant && a.lock_type == b.lock_type
            })
    }

    /// Checks the record's own invariants; a violation means a bug that could double-grant.
    pub fn check_invariants(&self) -> Result<(), String> {
        let writers = self.holders.iter().filter(|g| g.lock_type == LockType::Write).count();
        if writers > 1 || (writers == 1 && self.holders.len() > 1) {
            return Err(format!("a writer shares the lock: {:?}", self.holders));
        }
        if let Some(first) = self.holders.first() {
            if self.holders.iter().any(|g| g.token != first.token) {
                return Err("readers of one phase hold different tokens".into());
            }
            if first.token > self.last_token {
                return Err("a grant's token is above last_token".into());
            }
        }
        if self.holders.is_empty() && !self.queue.is_empty() && self.delay_remaining_us == 0 {
            return Err("the lock is free while requests wait".into());
        }
        for (i, g) in self.holders.iter().enumerate() {
            if g.id == 0 || g.id > self.next_lease_seq || self.holders[..i].iter().any(|h| h.id == g.id) {
                return Err(format!("grant ids are not unique numbers of this record: {:?}", self.holders));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_waiters: 4, max_readers: 8, log_capacity: 8, log_ttl_us: 1_000_000, aging_us: 1_000 };

    fn acquire(id: &str, lock_type: LockType, wait: bool, priority: Priority) -> LockOp {
        LockOp::Acquire(Acquire {
            request_id: RequestId(id.into()),
            holder: id.into(),
            lock_type,
            lease: LeaseRule::Fixed(100),
            lock_delay_us: 0,
            wait,
            wait_lease_us: 50,
            priority,
            reason: None,
            node: "n1".into(),
            poll: false,
        })
    }

    fn w(id: &str) -> LockOp {
        acquire(id, LockType::Write, true, Priority::Normal)
    }

    fn r(id: &str) -> LockOp {
        acquire(id, LockType::Read, true, Priority::Normal)
    }

    fn release(holder: &str, token: u64) -> LockOp {
        LockOp::Release { request_id: RequestId(format!("rel-{holder}")), grant: grant(holder, token) }
    }

    fn grant(holder: &str, token: u64) -> GrantRef {
        GrantRef { holder: holder.into(), which: Which::Token(token) }
    }

    fn holders(rec: &LockRecord) -> Vec<(&str, u64)> {
        rec.holders.iter().map(|g| (g.holder.as_str(), g.token)).collect()
    }

    #[test]
    fn writer_excludes_and_tokens_rise() {
        let mut rec = LockRecord::default();
        assert!(matches!(rec.apply(&w("a"), 0, &L), LockResult::Locked { token: 1, .. }));
        assert_eq!(rec.apply(&acquire("b", LockType::Write, false, Priority::Normal), 0, &L), LockResult::Busy {
            holders: vec!["a".into()],
            queue_full: false,
            lock_delay_us: 0
        });
        assert_eq!(rec.apply(&w("c"), 0, &L), LockResult::Queued { position: 1 });
        assert_eq!(rec.apply(&release("a", 1), 0, &L), LockResult::Released);
        // Handoff in the same operation, with a new token.
        assert_eq!(holders(&rec), vec![("c", 2)]);
        rec.check_invariants().unwrap();
    }

    #[test]
    fn readers_share_a_token_and_a_queued_writer_blocks_new_readers() {
        let mut rec = LockRecord::default();
        assert!(matches!(rec.apply(&r("r1"), 0, &L), LockResult::Locked { token: 1, .. }));
        assert!(matches!(rec.apply(&r("r2"), 0, &L), LockResult::Locked { token: 1, .. }));
        assert_eq!(rec.apply(&w("w"), 0, &L), LockResult::Queued { position: 1 });
        assert_eq!(rec.apply(&r("r3"), 0, &L), LockResult::Queued { position: 2 });
        // Readers of one phase share the token: each is released by its grant id.
        rec.apply(&release_as("rel-r1", named("r1", Which::Grant { token: 1, id: 1 })), 0, &L);
        assert_eq!(holders(&rec), vec![("r2", 1)], "the writer waits for every reader");
        rec.apply(&release_as("rel-r2", named("r2", Which::Grant { token: 1, id: 2 })), 0, &L);
        assert_eq!(holders(&rec), vec![("w", 2)]);
        rec.apply(&release("w", 2), 0, &L);
        assert_eq!(holders(&rec), vec![("r3", 3)]);
        rec.check_invariants().unwrap();
    }

    #[test]
    fn priority_orders_the_queue_then_arrival() {
        let mut rec = LockRecord::default();
        rec.apply(&w("h"), 0, &L);
        rec.apply(&acquire("low", LockType::Write, true, Priority::Low), 0, &L);
        rec.apply(&w("n1"), 0, &L);
        assert_eq!(rec.apply(&acquire("hi", LockType::Write, true, Priority::High), 0, &L), LockResult::Queued {
            position: 1
        });
        rec.apply(&w("n2"), 0, &L);
        let order: Vec<_> = rec.queue.iter().map(|w| w.holder.as_str()).collect();
        assert_eq!(order, vec!["hi", "n1", "n2", "low"]);
        assert_eq!(rec.apply(&w("x"), 0, &L), LockResult::Busy { holders: vec!["h".into()], queue_full: true, lock_delay_us: 0 });
    }

    #[test]
    fn waiting_ages_a_request_up_one_level_per_aging_period() {
        let limits = Limits { aging_us: 100, ..L };
        let mut rec = LockRecord::default();
        rec.apply(&acquire("h", LockType::Write, false, Priority::Normal), 0, &limits);
        rec.apply(&acquire("low", LockType::Write, true, Priority::Low), 0, &limits);
        // The holder renews (lease 100 µs) and waiters poll (wait lease 50 µs) as time passes.
        let wait = |rec: &mut LockRecord, us: u64| {
            for _ in 0..us / 40 {
                rec.advance(40, &limits);
                rec.apply(&acquire("h", LockType::Write, false, Priority::Normal), 0, &limits);
                let polls: Vec<LockOp> = rec.queue.iter().map(|w| acquire(&w.holder, LockType::Write, true, w.priority)).collect();
                for p in polls {
                    rec.apply(&p, 0, &limits);
                }
            }
        };
        wait(&mut rec, 120);
        rec.apply(&w("n1"), 0, &limits);
        // After 120 µs the low request ranks as normal, ahead of a later normal one.
        let order: Vec<_> = rec.queue.iter().map(|w| w.holder.as_str()).collect();
        assert_eq!(order, vec!["low", "n1"]);
        wait(&mut rec, 120);
        // Now low (240 µs) and n1 (120 µs) both rank as high: a high request that comes now
        // goes after them, and still ahead of a fresh normal one.
        assert_eq!(rec.apply(&acquire("hi", LockType::Write, true, Priority::High), 0, &limits), LockResult::Queued { position: 3 });
        rec.apply(&w("n2"), 0, &limits);
        let order: Vec<_> = rec.queue.iter().map(|w| w.holder.as_str()).collect();
        assert_eq!(order, vec!["low", "n1", "hi", "n2"]);
    }

    #[test]
    fn an_expired_grant_closes_the_scope_for_its_lock_delay_and_a_release_does_not() {
        let with_delay = |id: &str, delay| {
            let LockOp::Acquire(mut a) = w(id) else { unreachable!() };
            a.lock_delay_us = delay;
            LockOp::Acquire(a)
        };
        let mut rec = LockRecord::default();
        rec.apply(&with_delay("a", 300), 0, &L);
        rec.apply(&w("b"), 0, &L);
        // a's lease (100 µs) runs out unrenewed while b keeps polling.
        for _ in 0..3 {
            rec.advance(40, &L);
            rec.apply(&w("b"), 0, &L);
        }
        assert!(rec.holders.is_empty(), "{:?}", rec.holders);
        // Noticed at a floor of 120 µs: the lease ended at least 20 µs ago.
        assert_eq!(rec.delay_remaining_us, 280);
        rec.check_invariants().unwrap();
        assert_eq!(rec.apply(&acquire("c", LockType::Write, false, Priority::High), 0, &L), LockResult::Busy {
            holders: vec![],
            queue_full: false,
            lock_delay_us: 280
        });
        for _ in 0..6 {
            rec.advance(40, &L);
            rec.apply(&w("b"), 0, &L);
        }
        assert!(rec.holders.is_empty(), "still closed 280 µs after the lease ended");
        rec.advance(40, &L);
        assert_eq!(holders(&rec), vec![("b", 2)], "handed on once the delay passed");
        // A clean release hands on at once, whatever the delay.
        rec.apply(&w("d"), 0, &L);
        rec.apply(&release("b", 2), 0, &L);
        assert_eq!(holders(&rec), vec![("d", 3)]);
        assert_eq!(rec.delay_remaining_us, 0);
    }

    #[test]
    fn contention_counts_new_attempts_conflicts_and_holds_in_recent_windows() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&acquire("b", LockType::Write, false, Priority::Normal), 0, &L);
        rec.apply(&acquire("b", LockType::Write, false, Priority::Normal), 0, &L); // a retry
        rec.apply(&w("c"), 0, &L);
        rec.apply(&w("c"), 0, &L); // a poll
        rec.advance(30, &L);
        rec.apply(&w("c"), 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        let c = rec.contention();
        assert_eq!((c.attempts, c.conflicts, c.holds, c.hold_total_us), (3, 2, 1, 30));
        // Windows age out after ten minutes.
        rec.advance(WINDOW_US * WINDOWS as u64, &L);
        assert_eq!(rec.contention().attempts, 0);
    }

    #[test]
    fn an_auto_lease_is_chosen_from_the_holds_when_granted_and_kept_by_renewals() {
        let rule = AutoLease { min_us: 10, max_us: 5_000_000, window_days: 7 };
        let auto = |id: &str| {
            let LockOp::Acquire(mut a) = w(id) else { unreachable!() };
            a.lease = LeaseRule::Auto(rule);
            LockOp::Acquire(a)
        };
        let mut rec = LockRecord::default();
        let LockResult::Locked { lease_us, auto: Some(choice), .. } = rec.apply(&auto("first"), 0, &L) else { panic!() };
        assert_eq!((lease_us, choice.holds, choice.p99_us), (5_000_000, 0, None), "no history: the maximum");
        rec.apply(&release("first", 1), 0, &L);
        // Twelve holds of 40 ms each, released, and one that expires (not counted).
        let long = |id: &str| {
            let LockOp::Acquire(mut a) = w(id) else { unreachable!() };
            a.lease = LeaseRule::Fixed(1_000_000);
            LockOp::Acquire(a)
        };
        for i in 0..12u64 {
            rec.apply(&long(&format!("h{i}")), 0, &L);
            rec.advance(40_000, &L);
            rec.apply(&release(&format!("h{i}"), i + 2), 0, &L);
        }
        rec.apply(&long("crashed"), 0, &L);
        rec.advance(1_000_001, &L);
        // A waiter queued behind a holder gets its auto lease chosen at the handoff.
        rec.apply(&w("holder"), 0, &L);
        assert!(matches!(rec.apply(&auto("waiter"), 0, &L), LockResult::Queued { .. }));
        rec.apply(&release("holder", 15), 0, &L);
        let chosen = rec.holders[0].lease_us;
        assert!((60_000..=72_000).contains(&chosen), "1.5 × p99 of 40 ms holds: {chosen}");
        assert_eq!(rec.holders[0].auto.map(|c| c.holds), Some(14), "the first, twelve and the holder");
        // Its poll (a retry) and an auto renewal keep the chosen lease; a fixed one replaces it.
        assert!(matches!(rec.apply(&auto("waiter"), 0, &L), LockResult::Locked { lease_us, auto: Some(_), .. } if lease_us == chosen));
        let renew = |lease| LockOp::Renew { grant: grant("waiter", 16), lease };
        assert!(matches!(rec.apply(&renew(LeaseRule::Auto(rule)), 0, &L), LockResult::Locked { lease_us, .. } if lease_us == chosen));
        assert!(matches!(rec.apply(&renew(LeaseRule::Fixed(100_000)), 0, &L), LockResult::Locked { lease_us: 100_000, auto: None, .. }));
    }

    #[test]
    fn every_transition_is_numbered_in_the_event_log() {
        use crate::events::Since;
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("b"), 0, &L);
        rec.apply(&w("c"), 0, &L);
        rec.apply(&LockOp::Cancel { request_id: RequestId("c".into()) }, 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        rec.apply(&w("b"), 0, &L); // b collects its grant
        rec.apply(&LockOp::Revoke { token: None }, 0, &L);
        rec.apply(&w("d"), 0, &L);
        rec.advance(60, &L); // d's place runs out (wait lease 50)
        rec.advance(50, &L); // b's lease (100) runs out
        let Since::Events(events) = rec.events.since(0) else { panic!() };
        let seen: Vec<(&str, &str, u64)> = events.iter().map(|e| (e.kind.name(), e.holder.as_str(), e.token)).collect();
        assert_eq!(seen, [
            ("granted", "a", 1),
            ("queued", "b", 0),
            ("queued", "c", 0),
            ("left", "c", 0),
            ("released", "a", 1),
            ("granted", "b", 2),
            ("revoked", "b", 2),
            ("queued", "d", 0),
            ("left", "d", 0),
            ("expired", "b", 2),
        ]);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn same_state_ignores_floors_and_nothing_else() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("b"), 0, &L);
        rec.apply(&acquire("c", LockType::Write, false, Priority::High), 0, &L);
        let before = rec.clone();
        rec.advance(10, &L);
        assert!(rec.same_state(&before), "ten microseconds of age are no news");
        let mut revoked = rec.clone();
        revoked.apply(&LockOp::Revoke { token: None }, 0, &L);
        assert!(!revoked.same_state(&before));
        let mut refused = rec.clone();
        refused.apply(&acquire("d", LockType::Write, false, Priority::Normal), 0, &L);
        assert!(!refused.same_state(&before), "a refusal is logged: a change to write");
        // A retry of the refused request is answered from the log, renewing the entry's age:
        // a change too, even though the entry was the newest already.
        let logged = refused.clone();
        assert!(matches!(refused.apply(&acquire("d", LockType::Write, false, Priority::Normal), 0, &L), LockResult::Busy { .. }));
        assert!(!refused.same_state(&logged), "an answer drawn from the log renews its entry");
    }

    #[test]
    fn expiry_needs_the_floor_strictly_past_the_lease_and_hands_off() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("b"), 0, &L);
        rec.advance(40, &L);
        // The waiter polls to keep its place; that is a change a ballot must write.
        let before = rec.clone();
        assert_eq!(rec.apply(&w("b"), 0, &L), LockResult::Queued { position: 1 });
        assert!(!rec.same_state(&before), "a poll must not look like a no-op");
        rec.advance(40, &L);
        assert_eq!(rec.apply(&w("b"), 0, &L), LockResult::Queued { position: 1 });
        rec.advance(20, &L);
        assert_eq!(holders(&rec), vec![("a", 1)], "exactly at the lease is not expired");
        rec.advance(1, &L);
        assert_eq!(holders(&rec), vec![("b", 2)]);
        assert_eq!(rec.holders[0].elapsed_floor_us, 0, "a handoff starts a new lease");
        // The expired holder's retry is told so, never granted again.
        assert_eq!(rec.apply(&w("a"), 0, &L), LockResult::Expired);
    }

    #[test]
    fn a_waiter_that_stops_polling_is_skipped() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("gone"), 0, &L);
        rec.apply(&w("c"), 0, &L);
        rec.advance(51, &L);
        assert_eq!(rec.queue.len(), 0, "both waiters' places ran out");
        assert_eq!(rec.apply(&w("c"), 0, &L), LockResult::Expired, "a late poll is told, not re-queued");
        rec.apply(&w("c2"), 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        assert_eq!(holders(&rec), vec![("c2", 2)]);
    }

    #[test]
    fn a_retry_of_a_granted_request_renews_and_never_grants_twice() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.advance(70, &L);
        assert!(matches!(rec.apply(&w("a"), 0, &L), LockResult::Locked { token: 1, .. }));
        assert_eq!(rec.holders[0].elapsed_floor_us, 0);
        assert_eq!(rec.last_token, 1);
        assert_eq!(rec.apply(&release("a", 1), 0, &L), LockResult::Released);
        assert_eq!(rec.apply(&release("a", 1), 0, &L), LockResult::Released, "a retried release");
        assert_eq!(rec.apply(&w("a"), 0, &L), LockResult::Expired);
    }

    #[test]
    fn a_renewal_never_shortens_what_the_holder_may_still_trust() {
        // Found by the simulator (seed 6): a renew with a shorter lease let voters expire the
        // grant while its holder, not yet told of the renewal, trusted the old lease.
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.advance(30, &L);
        let renewed = rec.apply(&LockOp::Renew { grant: grant("a", 1), lease: LeaseRule::Fixed(10) }, 0, &L);
        assert!(matches!(renewed, LockResult::Locked { lease_us: 70, .. }), "{renewed:?}");
        let longer = rec.apply(&LockOp::Renew { grant: grant("a", 1), lease: LeaseRule::Fixed(500) }, 0, &L);
        assert!(matches!(longer, LockResult::Locked { lease_us: 500, .. }));
    }

    #[test]
    fn a_duplicate_release_does_not_free_a_later_grant_of_the_same_holder_and_token() {
        let mut rec = LockRecord::default();
        rec.apply(&r("other"), 0, &L);
        rec.apply(&r("a"), 0, &L);
        let first = GrantRef { holder: "a".into(), which: Which::Grant { token: 1, id: 2 } };
        let release_first = |id: &str| LockOp::Release { request_id: RequestId(id.into()), grant: first.clone() };
        assert_eq!(rec.apply(&release_first("rel-1"), 0, &L), LockResult::Released);
        // "a" reads again in the same read phase: same holder, same token, another grant id.
        let again = acquire("a-again", LockType::Read, false, Priority::Normal);
        let LockOp::Acquire(mut again) = again else { unreachable!() };
        again.holder = "a".into();
        assert!(matches!(rec.apply(&LockOp::Acquire(again), 0, &L), LockResult::Locked { token: 1, grant: 3, .. }));
        // The first release arrives again, late.
        assert_eq!(rec.apply(&release_first("rel-1"), 0, &L), LockResult::Released);
        assert_eq!(holders(&rec), vec![("other", 1), ("a", 1)]);
        // A release that names the earlier grant by its id, under a new request id, misses too.
        assert_eq!(rec.apply(&release_first("rel-2"), 0, &L), LockResult::NotHolder);
        assert_eq!(holders(&rec), vec![("other", 1), ("a", 1)]);
    }

    fn named(holder: &str, which: Which) -> GrantRef {
        GrantRef { holder: holder.into(), which }
    }

    fn release_as(request_id: &str, grant: GrantRef) -> LockOp {
        LockOp::Release { request_id: RequestId(request_id.into()), grant }
    }

    /// Regression (review, PROTOCOL §11.10): a bare release frees only grants it can prove older than its own
    /// arrival at the serving node, so one delayed there cannot free the holder's next grant.
    #[test]
    fn a_bare_release_frees_only_grants_older_than_its_arrival() {
        let mut rec = LockRecord::default();
        rec.apply(&w("h"), 0, &L);
        rec.advance(30, &L);
        // Arrived 20 µs ago, after the grant (30 µs old): released.
        assert_eq!(rec.apply(&release_as("u1", named("h", Which::Held)), 20, &L), LockResult::Released);
        // h locks again; a bare release that arrived 40 µs ago (before this grant) misses it.
        rec.apply(&acquire("h2", LockType::Write, false, Priority::Normal), 0, &L);
        let LockOp::Acquire(mut again) = w("h3") else { unreachable!() };
        again.holder = "h".into();
        rec.apply(&release_as("u-h2", named("h2", Which::Token(2))), 0, &L);
        assert!(matches!(rec.apply(&LockOp::Acquire(again), 0, &L), LockResult::Locked { token: 3, .. }));
        rec.advance(10, &L);
        assert_eq!(rec.apply(&release_as("u0", named("h", Which::Held)), 40, &L), LockResult::NotHolder);
        assert_eq!(rec.apply(&release_as("u0", named("h", Which::Held)), 10, &L), LockResult::NotHolder, "not provably older");
        assert_eq!(holders(&rec), vec![("h", 3)]);
        // A release naming the grant frees it whenever it arrived.
        assert_eq!(rec.apply(&release_as("u2", named("h", Which::Token(3))), 40, &L), LockResult::Released);
    }

    /// Regression (review, PROTOCOL §11.10): readers of one phase share a token (a reader that
    /// released and rejoined the phase, or two processes under one holder name), so a token
    /// names only a write grant; readers name theirs by id.
    #[test]
    fn a_token_names_only_a_write_grant() {
        let mut rec = LockRecord::default();
        rec.apply(&r("x"), 0, &L);
        rec.apply(&r("h"), 0, &L);
        rec.advance(30, &L);
        assert_eq!(rec.apply(&release_as("u1", named("h", Which::Token(1))), 0, &L), LockResult::NotHolder);
        let renew = |which| LockOp::Renew { grant: named("h", which), lease: LeaseRule::Fixed(100) };
        assert_eq!(rec.apply(&renew(Which::Token(1)), 0, &L), LockResult::NotHolder);
        assert!(matches!(rec.apply(&renew(Which::Grant { token: 1, id: 2 }), 0, &L), LockResult::Locked { token: 1, grant: 2, .. }));
        assert_eq!(rec.apply(&release_as("u2", named("h", Which::Grant { token: 1, id: 2 })), 0, &L), LockResult::Released);
        assert_eq!(holders(&rec), vec![("x", 1)]);
        // A write grant's token names it.
        rec.apply(&release_as("u3", named("x", Which::Grant { token: 1, id: 1 })), 0, &L);
        rec.apply(&w("wr"), 0, &L);
        assert_eq!(rec.apply(&release_as("u4", named("wr", Which::Token(2))), 0, &L), LockResult::Released);
    }

    /// Regression (red team): a cancel of a request whose grant was reported and has ended
    /// since is not answered `Cancelled` (the API's "busy"): the request was granted and used.
    #[test]
    fn a_cancel_after_a_reported_grant_ended_says_it_expired() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("b"), 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        assert!(matches!(rec.apply(&w("b"), 0, &L), LockResult::Locked { .. }), "collected");
        rec.apply(&release("b", 2), 0, &L);
        assert_eq!(rec.apply(&LockOp::Cancel { request_id: RequestId("b".into()) }, 0, &L), LockResult::Expired);
        // One never told of its grant is cancelled as before.
        rec.apply(&w("c"), 0, &L);
        rec.apply(&w("d"), 0, &L);
        rec.apply(&release("c", 3), 0, &L);
        assert_eq!(rec.apply(&LockOp::Cancel { request_id: RequestId("d".into()) }, 0, &L), LockResult::Cancelled);
        assert_eq!(rec.apply(&LockOp::Cancel { request_id: RequestId("d".into()) }, 0, &L), LockResult::Cancelled);
    }

    /// Regression (red team): a poll never starts a request over. Its place gone and its end
    /// forgotten by the log, it is told the request ended instead of being queued anew.
    #[test]
    fn a_poll_keeps_or_collects_but_never_starts_over() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        let LockOp::Acquire(mut poll) = w("b") else { unreachable!() };
        poll.poll = true;
        let poll = LockOp::Acquire(poll);
        assert_eq!(rec.apply(&poll, 0, &L), LockResult::Expired, "a poll of a request never queued");
        rec.log.clear();
        assert_eq!(rec.apply(&w("c"), 0, &L), LockResult::Queued { position: 1 });
        let LockOp::Acquire(mut poll_c) = w("c") else { unreachable!() };
        poll_c.poll = true;
        assert_eq!(rec.apply(&LockOp::Acquire(poll_c.clone()), 0, &L), LockResult::Queued { position: 1 });
        rec.apply(&release("a", 1), 0, &L);
        assert!(matches!(rec.apply(&LockOp::Acquire(poll_c), 0, &L), LockResult::Locked { token: 2, .. }));
    }

    /// Regression (review, PROTOCOL §11.10): a renewal that names no grant renews nothing, since processes
    /// sharing a holder name would otherwise renew each other's grants.
    #[test]
    fn a_renewal_naming_no_grant_renews_nothing() {
        let mut rec = LockRecord::default();
        rec.apply(&w("h"), 0, &L);
        rec.advance(50, &L);
        let bare = LockOp::Renew { grant: named("h", Which::Held), lease: LeaseRule::Fixed(100) };
        assert_eq!(rec.apply(&bare, 0, &L), LockResult::NotHolder);
        assert!(matches!(rec.apply(&LockOp::Renew { grant: named("h", Which::Token(1)), lease: LeaseRule::Fixed(100) }, 0, &L), LockResult::Locked { .. }));
    }

    /// Regression (review, PROTOCOL §11.11): once a retry of a waiting request collected the grant handed to it
    /// (and was told "locked"), a cancel of that request keeps the grant.
    #[test]
    fn a_cancel_frees_a_handed_over_grant_only_while_nobody_was_told() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("b"), 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        assert_eq!(holders(&rec), vec![("b", 2)]);
        assert!(!rec.holders[0].reported, "handed over, not yet told");
        // b's poll (a retry of its request) collects it.
        assert!(matches!(rec.apply(&w("b"), 0, &L), LockResult::Locked { token: 2, .. }));
        assert!(rec.holders[0].reported);
        let cancel = LockOp::Cancel { request_id: RequestId("b".into()) };
        assert_eq!(rec.apply(&cancel, 0, &L), LockResult::Collected { token: 2, grant: 2 });
        assert_eq!(holders(&rec), vec![("b", 2)]);
    }

    /// Regression (review, PROTOCOL §11.11): a grant handed to a waiter whose client vanished lasts only its
    /// pickup time (the place's lease), not a whole lease; collected, it gets the full lease.
    #[test]
    fn an_uncollected_handover_lasts_only_its_pickup_time() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("gone"), 0, &L);
        rec.apply(&w("c"), 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        assert_eq!(holders(&rec), vec![("gone", 2)]);
        for _ in 0..2 {
            rec.advance(30, &L);
            rec.apply(&w("c"), 0, &L); // c keeps its place
        }
        assert_eq!(holders(&rec), vec![("c", 3)], "gone's grant expired after its 50 µs pickup, not its 100 µs lease");
        assert_eq!(rec.delay_remaining_us, 0, "an uncollected grant was never used: no lock-delay");
        assert_eq!(rec.apply(&w("gone"), 0, &L), LockResult::Expired);
        // c collects its grant and keeps it for the whole lease.
        rec.advance(40, &L);
        assert!(matches!(rec.apply(&w("c"), 0, &L), LockResult::Locked { lease_us: 100, .. }));
        rec.advance(90, &L);
        assert_eq!(holders(&rec), vec![("c", 3)]);
    }

    /// Regression (review, PROTOCOL §11.12): a request that may have arrived before an outcome the log no longer
    /// remembers is not granted; one that arrived after is.
    #[test]
    fn a_request_older_than_what_the_log_forgot_is_not_granted() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        // "late" is refused; a copy of it is still queued at some node.
        assert!(matches!(rec.apply(&acquire("late", LockType::Write, false, Priority::Normal), 0, &L), LockResult::Busy { .. }));
        rec.advance(10, &L);
        // Eight more outcomes push "late" out of the log (capacity 8).
        for i in 0..8 {
            rec.apply(&acquire(&format!("x{i}"), LockType::Write, false, Priority::Normal), 0, &L);
        }
        assert_eq!(rec.log_forgot_floor_us, Some(10));
        rec.apply(&release("a", 1), 0, &L);
        rec.advance(5, &L);
        // The copy arrived before the refusal (20 µs ago): not granted, and remembered.
        let copy = acquire("late", LockType::Write, false, Priority::Normal);
        assert_eq!(rec.apply(&copy, 20, &L), LockResult::TooOld);
        assert_eq!(rec.apply(&copy, 0, &L), LockResult::Expired);
        assert!(rec.holders.is_empty());
        // The release pushed out two more (logged 5 µs ago): a request that arrived after
        // everything forgotten is granted.
        assert_eq!(rec.log_forgot_floor_us, Some(5));
        assert!(matches!(rec.apply(&w("fresh"), 4, &L), LockResult::Locked { .. }));
    }

    /// Regression (review, PROTOCOL §11.13): the lock-delay counts from the end of the lease as far as the
    /// record can prove it, not from when a ballot noticed the expiry.
    #[test]
    fn the_lock_delay_counts_from_the_end_of_the_lease() {
        let with_delay = |id: &str, delay| {
            let LockOp::Acquire(mut a) = w(id) else { unreachable!() };
            a.lock_delay_us = delay;
            LockOp::Acquire(a)
        };
        let mut rec = LockRecord::default();
        rec.apply(&with_delay("a", 300), 0, &L);
        // Noticed 250 µs after the 100 µs lease began: at least 150 µs of the delay passed.
        rec.advance(250, &L);
        assert!(rec.holders.is_empty());
        assert_eq!(rec.delay_remaining_us, 150);
        rec.apply(&with_delay("b", 300), 0, &L);
        // Noticed long after: no delay left.
        rec.apply(&release("b", 2), 0, &L);
        rec.advance(150, &L);
        rec.apply(&with_delay("c", 300), 0, &L);
        rec.advance(1_000, &L);
        assert_eq!(rec.delay_remaining_us, 0);
        assert!(matches!(rec.apply(&w("d"), 0, &L), LockResult::Locked { .. }));
    }

    #[test]
    fn revoke_blocks_renewal_but_frees_only_by_expiry() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        assert_eq!(rec.apply(&LockOp::Revoke { token: Some(1) }, 0, &L), LockResult::Revoked);
        assert_eq!(holders(&rec), vec![("a", 1)]);
        assert_eq!(rec.apply(&LockOp::Renew { grant: grant("a", 1), lease: LeaseRule::Fixed(100) }, 0, &L), LockResult::Revoked);
        rec.advance(101, &L);
        assert!(rec.holders.is_empty());
    }

    #[test]
    fn cancel_of_a_waiter_granted_meanwhile_frees_the_lock() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.apply(&w("b"), 0, &L);
        rec.apply(&w("c"), 0, &L);
        rec.apply(&release("a", 1), 0, &L);
        assert_eq!(holders(&rec), vec![("b", 2)]);
        assert_eq!(rec.apply(&LockOp::Cancel { request_id: RequestId("b".into()) }, 0, &L), LockResult::Cancelled);
        assert_eq!(holders(&rec), vec![("c", 3)]);
    }

    #[test]
    fn tokens_survive_idle_periods() {
        let mut rec = LockRecord::default();
        rec.apply(&w("a"), 0, &L);
        rec.advance(10_000_000, &L);
        rec.advance(10_000_000, &L);
        assert!(rec.holders.is_empty() && rec.log.is_empty(), "an idle record keeps only its token");
        assert!(matches!(rec.apply(&w("b"), 0, &L), LockResult::Locked { token: 2, .. }));
    }
}
