//! Simulated clients: they acquire (waiting or not, read or write, at any priority), hold,
//! renew, release (naming the grant, or bare), crash while holding, retry a call with the same
//! request id at another node when its answer does not come, and start over with a fresh id
//! when a wait ends busy. In some seeds processes share holder names in pairs. Locks
//! and unlocks are calls that a node serves with the core's call module, as the HTTP API
//! does (`serve.rs`); renewals and status reads go to the core directly. Each client trusts a
//! grant exactly as a real client must: from the send of the request that obtained or
//! renewed it, for `lease * (1 - drift)` on its own clock.

use lockmesh_core::call::Outcome;
use lockmesh_core::{
    Acquire, Answer, AutoLease, Failure, GrantRef, Key, LeaseRule, LockOp, LockResult, LockType, Op, Priority, Reply, Request,
    RequestId, Time, Which,
};

use crate::clock::Clock;
use crate::serve::CallRequest;
use crate::world::{client_ref, Event, Phase, World};

/// Core timeout of a client request; the client waits a little longer for the reply.
const REQUEST_TIMEOUT_US: u64 = 400_000;
const REPLY_WAIT_US: u64 = 600_000;
const MAX_ATTEMPTS: u32 = 4;
/// The longest wait one lock call asks for; a client with more patience calls again.
const MAX_CALL_WAIT_US: u64 = 2_000_000;
/// Auto leases of simulated clients: from 0.1 s to 1.5 s, learnt over a day.
const AUTO: AutoLease = AutoLease { min_us: 100_000, max_us: 1_500_000, window_days: 1 };

#[derive(Clone, Debug)]
pub(crate) struct Wanted {
    scope: String,
    request_id: RequestId,
    lock_type: LockType,
    lease: LeaseRule,
    lock_delay_us: u64,
    wait: bool,
    priority: Priority,
    /// Give up waiting (cancel) after this, on the client's clock.
    wait_until: Time,
    attempts: u32,
    /// Send time of the attempt in flight, on the client's clock: the lease anchor.
    sent: Time,
    awaiting_reply: bool,
    /// Some attempt's outcome is unknown (timeout or lost reply).
    unknown: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Held {
    scope: String,
    /// The grant's id, as the answer named it, and the request that got it.
    grant: u64,
    request: RequestId,
    token: u64,
    lock_type: LockType,
    /// Trust ends here, on the client's clock.
    trust_end: Time,
}

#[derive(Clone, Debug)]
pub(crate) enum State {
    Idle,
    Acquiring(Wanted),
    Holding(Held),
    Renewing { held: Held, sent: Time },
    /// `bare`: the release names no grant (the holder's grants older than its arrival).
    Releasing { held: Held, request_id: RequestId, attempts: u32, bare: bool },
    /// A status read: exercises reads that write back only when needed.
    Reading,
    Crashed,
    Done,
}

pub(crate) struct SimClient {
    pub index: usize,
    pub clock: Clock,
    pub holder: String,
    pub state: State,
    /// The attempt whose reply is expected; replies to older attempts are ignored.
    pub attempt: u64,
    pub wake_token: u64,
    next_request: u64,
    lives: u32,
    pub probe: bool,
    pub done: bool,
    pub scope_hint: Option<String>,
    /// The scope to lock next: after a bare release, a process often locks the same scope
    /// again at once (while a copy of the release may still be in a node's queue).
    again: Option<String>,
}

impl SimClient {
    /// `shared`: this process shares its holder name with the client next to it (0 and 1,
    /// 2 and 3, ...), as two processes of one application might.
    pub fn new(index: usize, clock: Clock, probe: bool, shared: bool) -> SimClient {
        let holder = match (probe, shared) {
            (true, _) => format!("probe{index}"),
            (false, true) => format!("h{}", index / 2),
            (false, false) => format!("c{index}"),
        };
        SimClient {
            index,
            clock,
            holder,
            state: State::Idle,
            attempt: 0,
            wake_token: 0,
            next_request: 0,
            lives: 0,
            probe,
            done: false,
            scope_hint: None,
            again: None,
        }
    }

    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Idle => "idle",
            State::Acquiring(_) => "acquiring",
            State::Holding(_) => "holding",
            State::Renewing { .. } => "renewing",
            State::Releasing { .. } => "releasing",
            State::Reading => "reading",
            State::Crashed => "crashed",
            State::Done => "done",
        }
    }
}

impl World {
    fn local(&self, c: usize) -> Time {
        self.clients[c].clock.local(self.now)
    }

    pub(crate) fn wake_client_at(&mut self, c: usize, at: u64) {
        self.clients[c].wake_token += 1;
        let token = self.clients[c].wake_token;
        self.schedule(at, Event::ClientWake { client: c, token });
    }

    /// Wakes the client after `us` on its own clock.
    fn wake_client_in(&mut self, c: usize, us: u64) {
        let at = self.clients[c].clock.true_at(self.local(c).plus_micros(us));
        self.wake_client_at(c, at);
    }

    fn send_request(&mut self, c: usize, key: Key, op: LockOp) {
        self.clients[c].attempt += 1;
        let client = client_ref(c, self.clients[c].attempt);
        let to = self.rng.index(self.nodes.len());
        self.log(|| format!("client {c} -> n{to} (attempt {}): {op:?}", client & 0xffff_ffff));
        let request = Request { client, key, op: Op::Lock(op), timeout_us: REQUEST_TIMEOUT_US };
        if let Some(delay) = self.net.client_delivery(&mut self.rng, c, to) {
            self.schedule(self.now + delay, Event::Request { to, request });
        }
        self.wake_client_in(c, REPLY_WAIT_US);
    }

    /// A lock or unlock call to a random node, served there as the API serves it; the answer
    /// is awaited for the call's wait and a little more.
    fn send_call(&mut self, c: usize, request: CallRequest, wait_us: u64) {
        self.clients[c].attempt += 1;
        let attempt = self.clients[c].attempt;
        let to = self.rng.index(self.nodes.len());
        self.log(|| format!("client {c} -> n{to} (call {attempt}): {request:?}"));
        if let Some(delay) = self.net.client_delivery(&mut self.rng, c, to) {
            self.schedule(self.now + delay, Event::Call { to, client: c, attempt, request });
        }
        // Now and then a call's connection breaks early: the client retries the request
        // elsewhere while the node that had it goes on serving it (a waiting one until it
        // cancels at its deadline).
        // (Profile `stalls`: half the waiting calls, so that two nodes serve one request often.)
        let breaks = if self.stalls && wait_us > 0 { 0.5 } else { 0.2 };
        let patience = if self.rng.chance(breaks) { self.rng.between(1, wait_us.max(REQUEST_TIMEOUT_US)) } else { wait_us + REPLY_WAIT_US };
        self.wake_client_in(c, patience);
    }

    fn send_acquire(&mut self, c: usize, mut wanted: Wanted) {
        wanted.attempts += 1;
        wanted.sent = self.local(c);
        wanted.awaiting_reply = true;
        let wait_us = if wanted.wait { wanted.wait_until.since(wanted.sent).min(MAX_CALL_WAIT_US) } else { 0 };
        // How to wait and poll is the serving node's call's business.
        let acquire = Acquire {
            request_id: wanted.request_id.clone(),
            holder: self.clients[c].holder.clone(),
            lock_type: wanted.lock_type,
            lease: wanted.lease,
            lock_delay_us: wanted.lock_delay_us,
            wait: false,
            wait_lease_us: 0,
            priority: wanted.priority,
            reason: None,
            node: String::new(),
            poll: false,
        };
        let key = Key::Scope(wanted.scope.clone());
        self.clients[c].state = State::Acquiring(wanted);
        self.send_call(c, CallRequest::Lock { key, acquire, wait_us }, wait_us);
    }

    fn new_request_id(&mut self, c: usize) -> RequestId {
        let client = &mut self.clients[c];
        client.next_request += 1;
        RequestId(format!("{}-{}-{}-{}", client.holder, client.index, client.lives, client.next_request))
    }

    fn rest(&mut self, c: usize) {
        self.clients[c].state = State::Idle;
        let pause = self.rng.between(1_000, 200_000);
        self.wake_client_in(c, pause);
    }

    fn give_up(&mut self, c: usize, wanted: &Wanted) {
        if !wanted.unknown {
            self.checker.refused(self.now, &wanted.scope, &wanted.request_id);
        }
        self.rest(c);
    }

    pub(crate) fn client_wake(&mut self, c: usize) {
        let healed = self.phase == Phase::Healed;
        let now_local = self.local(c);
        match self.clients[c].state.clone() {
            State::Idle => {
                if healed && !self.clients[c].probe {
                    self.clients[c].state = State::Done;
                    return;
                }
                if !self.clients[c].probe && self.rng.chance(0.1) {
                    let scope = self.scopes[self.rng.index(self.scopes.len())].clone();
                    self.clients[c].state = State::Reading;
                    self.send_request(c, Key::Scope(scope), LockOp::Read);
                    return;
                }
                self.start_acquire(c);
            }
            State::Acquiring(mut wanted) => {
                if wanted.awaiting_reply {
                    // No answer: the call, or its answer, was lost, or its node went down. The
                    // outcome is unknown: the same request again, at another node.
                    wanted.unknown = true;
                }
                if wanted.attempts >= MAX_ATTEMPTS && !self.clients[c].probe {
                    self.give_up(c, &wanted);
                } else {
                    self.send_acquire(c, wanted);
                }
            }
            State::Holding(held) => {
                if now_local >= held.trust_end {
                    // The lease ran out under us; a real client would stop its work here.
                    self.rest(c);
                    return;
                }
                let roll = self.rng.index(100);
                if healed || roll < 50 {
                    // Some releases name no grant: the seed's bare unlock.
                    let bare = self.bare_unlocks && self.rng.chance(0.3);
                    self.send_release(c, held, None, 0, bare);
                } else if roll < 85 {
                    // A fixed lease, or the one the grant has (what an auto grant renews with).
                    let lease = if self.rng.chance(0.3) {
                        LeaseRule::Auto(AUTO)
                    } else {
                        LeaseRule::Fixed(self.rng.between(100_000, 1_200_000))
                    };
                    let sent = self.local(c);
                    self.clients[c].state = State::Renewing { held: held.clone(), sent };
                    let op = LockOp::Renew { grant: self.grant_ref(c, &held), lease };
                    self.send_request(c, Key::Scope(held.scope), op);
                } else if roll < 90 && !self.clients[c].probe {
                    // Crash while holding: it trusts until its lease ends, and never releases.
                    self.log(|| format!("client {c} crashes holding {} token {}", held.scope, held.token));
                    self.clients[c].state = State::Crashed;
                    let back = self.rng.between(100_000, 3_000_000);
                    self.wake_client_in(c, back);
                } else {
                    self.hold_a_while(c, held);
                }
            }
            State::Renewing { held, .. } => {
                // No answer to the renew: keep trusting the old lease only.
                self.clients[c].state = State::Holding(held.clone());
                self.hold_a_while(c, held);
            }
            State::Releasing { held, request_id, attempts, bare } => {
                if attempts + 1 >= MAX_ATTEMPTS {
                    self.after_release(c, bare.then_some(held.scope));
                } else {
                    self.send_release(c, held, Some(request_id), attempts + 1, bare);
                }
            }
            State::Reading => self.rest(c),
            State::Crashed => {
                // Back as a new process: a new holder name, nothing remembered.
                let client = &mut self.clients[c];
                client.lives += 1;
                client.holder = format!("c{}.{}", client.index, client.lives);
                self.rest(c);
            }
            State::Done => {}
        }
    }

    fn start_acquire(&mut self, c: usize) {
        let probe = self.clients[c].probe;
        let again = self.clients[c].again.take();
        let scope = match (self.clients[c].scope_hint.clone(), again) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => self.scopes[self.rng.index(self.scopes.len())].clone(),
        };
        let lock_type = if !probe && self.rng.chance(0.25) { LockType::Read } else { LockType::Write };
        // Profile `stalls`: every lock waits, so waits end queued and calls cancel often.
        let wait = probe || self.stalls || self.rng.chance(0.5);
        let priority = [Priority::High, Priority::Normal, Priority::Normal, Priority::Low][self.rng.index(4)];
        // Sometimes "auto": chosen by the record from the scope's history of holds.
        let lease = if self.rng.chance(0.3) { LeaseRule::Auto(AUTO) } else { LeaseRule::Fixed(self.rng.between(100_000, 1_500_000)) };
        let lock_delay_us = if self.rng.chance(0.5) { 0 } else { self.rng.between(10_000, 500_000) };
        // Profile `stalls`: waits longer than one call, so a retry's call outlives the first.
        let longest = if self.stalls { 6_000_000 } else { 3_000_000 };
        let patience = if probe { 60_000_000 } else { self.rng.between(100_000, longest) };
        let wanted = Wanted {
            scope,
            request_id: self.new_request_id(c),
            lock_type,
            lease,
            lock_delay_us,
            wait,
            priority,
            wait_until: self.local(c).plus_micros(patience),
            attempts: 0,
            sent: Time(0),
            awaiting_reply: false,
            unknown: false,
        };
        self.send_acquire(c, wanted);
    }

    fn hold_a_while(&mut self, c: usize, held: Held) {
        let left = held.trust_end.since(self.local(c));
        // Sometimes past the end of the trust, to exercise late releases and renewals.
        let hold = self.rng.between(left / 10, left + left / 5);
        self.clients[c].state = State::Holding(held);
        self.wake_client_in(c, hold.max(1));
    }

    fn send_release(&mut self, c: usize, held: Held, request_id: Option<RequestId>, attempts: u32, bare: bool) {
        // Stop using the resource before asking to release it.
        self.checker.stop_trusting(c, &held.scope, held.token, self.now);
        let request_id = request_id.unwrap_or_else(|| self.new_request_id(c));
        let GrantRef { holder, which } = self.grant_ref(c, &held);
        let named = if bare { None } else { Some(which) };
        let key = Key::Scope(held.scope.clone());
        self.clients[c].state = State::Releasing { held, request_id: request_id.clone(), attempts, bare };
        self.send_call(c, CallRequest::Unlock { key, holder, request_id, named }, 0);
    }

    /// How a client names its grant: by id, or (a write grant) sometimes by its token alone.
    fn grant_ref(&mut self, c: usize, held: &Held) -> GrantRef {
        let which = if held.lock_type == LockType::Write && self.rng.chance(0.3) {
            Which::Token(held.token)
        } else {
            Which::Grant { token: held.token, id: held.grant }
        };
        GrantRef { holder: self.clients[c].holder.clone(), which }
    }

    /// `bare_on`: the scope of a bare release just made.
    fn after_release(&mut self, c: usize, bare_on: Option<String>) {
        if self.clients[c].probe {
            self.clients[c].done = true;
            self.clients[c].state = State::Done;
        } else {
            if self.rng.chance(0.5) {
                self.clients[c].again = bare_on;
            }
            self.rest(c);
        }
    }

    /// A reply of the core (to a renewal or a status read) reaches client `c`.
    pub(crate) fn client_reply(&mut self, c: usize, reply: Reply) {
        if c >= self.clients.len() || reply.client != client_ref(c, self.clients[c].attempt) {
            return; // the operator's, or an answer to an attempt given up on
        }
        self.log(|| format!("client {c} <- (attempt {}) {:?} ballot {:?}", reply.client & 0xffff_ffff, reply.result, reply.ballot.map(|b| b.round)));
        let now_local = self.local(c);
        let scope = match &reply.key {
            Key::Scope(s) => s.clone(),
            Key::Roster => return,
        };
        match self.clients[c].state.clone() {
            State::Renewing { held, sent } => {
                // Trusted for the lease the answer names (at least what was asked for).
                if let Ok(Answer::Lock(LockResult::Locked { token, grant, lease_us, .. })) = reply.result {
                    let holder = self.clients[c].holder.clone();
                    self.checker.locked_reply(self.now, &scope, reply.ballot, &holder, (token, grant), lease_us);
                    let trust_end = sent.plus_micros(self.config.drift.holder_trust(lease_us));
                    if now_local < trust_end {
                        let end = self.clients[c].clock.true_at(trust_end);
                        self.checker.trusted(c, &scope, &holder, &held.request, held.grant, token, held.lock_type, self.now, end);
                        let held = Held { trust_end: trust_end.max(held.trust_end), ..held };
                        self.hold_a_while(c, held);
                        return;
                    }
                }
                self.hold_a_while(c, held);
            }
            State::Reading => self.rest(c),
            _ => {}
        }
    }

    /// The answer to client `c`'s call `attempt`, which its node sent at `sent_at`.
    pub(crate) fn client_answer(&mut self, c: usize, attempt: u64, outcome: Outcome, sent_at: u64) {
        if c >= self.clients.len() || attempt != self.clients[c].attempt {
            return; // an answer to an attempt given up on
        }
        self.log(|| format!("client {c} <- (call {attempt}) {outcome:?}"));
        match self.clients[c].state.clone() {
            State::Acquiring(mut wanted) if wanted.awaiting_reply => {
                wanted.awaiting_reply = false;
                match outcome {
                    Outcome::Done(reply) => self.granted(c, wanted, reply),
                    Outcome::Busy { ballot, position, .. } => {
                        if position.is_none() {
                            // Refused outright: the refusal is in the chosen record, and no
                            // attempt of this request is ever granted. (A wait that ended busy
                            // cancelled its place: a grant handed to it, never told of, may
                            // have been freed by that cancel.)
                            self.checker.busy(self.now, &wanted.scope, ballot, &wanted.request_id);
                            self.checker.refused(sent_at, &wanted.scope, &wanted.request_id);
                        }
                        if wanted.wait && self.local(c) < wanted.wait_until {
                            // Patience left: a new request, with a fresh id.
                            let request_id = self.new_request_id(c);
                            self.send_acquire(c, Wanted { request_id, attempts: 0, unknown: false, ..wanted });
                        } else {
                            self.rest(c);
                        }
                    }
                    Outcome::Failed(Failure::Timeout) => {
                        wanted.unknown = true;
                        self.retry_acquire(c, wanted);
                    }
                    Outcome::Failed(_) => self.retry_acquire(c, wanted),
                    _ => self.rest(c),
                }
            }
            State::Releasing { held, request_id, attempts, bare } => match outcome {
                // The outcome is unknown: release again, with the same request id.
                Outcome::Failed(_) if attempts + 1 < MAX_ATTEMPTS => self.send_release(c, held, Some(request_id), attempts + 1, bare),
                _ => self.after_release(c, bare.then_some(held.scope)),
            },
            _ => {}
        }
    }

    /// Client `c`'s call `attempt` was refused or cut off by its node going down.
    pub(crate) fn client_call_lost(&mut self, c: usize, attempt: u64) {
        if c < self.clients.len() && attempt == self.clients[c].attempt {
            let now = self.now;
            self.wake_client_at(c, now);
        }
    }

    /// A lock call answered `locked` (`reply`): trusted from the send of this attempt.
    fn granted(&mut self, c: usize, wanted: Wanted, reply: Reply) {
        let Ok(Answer::Lock(LockResult::Locked { token, grant, lease_us, lock_type, auto, .. })) = reply.result else {
            self.rest(c);
            return;
        };
        let scope = wanted.scope.clone();
        let holder = self.clients[c].holder.clone();
        self.checker.locked_reply(self.now, &scope, reply.ballot, &holder, (token, grant), lease_us);
        if let (LeaseRule::Auto(rule), Some(choice)) = (wanted.lease, auto) {
            self.checker.auto_lease(self.now, &scope, &rule, lease_us, &choice);
        }
        let trust_end = wanted.sent.plus_micros(self.config.drift.holder_trust(lease_us));
        if self.local(c) >= trust_end {
            // Granted, but the answer came too late to trust; let it expire.
            self.rest(c);
            return;
        }
        let end = self.clients[c].clock.true_at(trust_end);
        self.checker.trusted(c, &scope, &holder, &wanted.request_id, grant, token, lock_type, self.now, end);
        self.log(|| format!("client {c} holds {scope} token {token} {lock_type:?} until {:.3}s", end as f64 / 1e6));
        self.hold_a_while(c, Held { scope, grant, request: wanted.request_id, token, lock_type, trust_end });
    }

    fn retry_acquire(&mut self, c: usize, wanted: Wanted) {
        if wanted.attempts >= MAX_ATTEMPTS && !self.clients[c].probe {
            self.give_up(c, &wanted);
        } else {
            self.clients[c].state = State::Acquiring(Wanted { awaiting_reply: false, ..wanted });
            let pause = self.rng.between(1_000, 50_000);
            self.wake_client_in(c, pause);
        }
    }
}
