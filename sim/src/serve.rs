//! The server side of client calls at the simulated nodes. Each lock or unlock a client sends
//! is served by the core's `call` module at the node it reached, exactly as the HTTP handler
//! serves it: submit, wait in the queue and poll, cancel at the deadline (keeping a grant a
//! retry elsewhere collected), read the scope for a busy answer. Its outcome travels back to
//! the client over the client network; a node that crashes resets the calls it was serving.

use lockmesh_core::call::{LockCall, Step, Timing, UnlockCall};
use lockmesh_core::{Acquire, Ballot, Key, LockOp, Op, Reply, Request, RequestId, Which};

use crate::world::{Event, Phase, World};

/// Core timeout of one op a call submits.
const OP_TIMEOUT_US: u64 = 1_500_000;
/// Replies to the ops of calls carry this bit in their client id.
pub(crate) const CALL_BIT: u64 = 1 << 63;
/// Waits at the simulator's scale.
pub(crate) const TIMING: Timing = Timing { wait_lease_us: 300_000, poll_us: 80_000 };

/// What a client asks of a node.
#[derive(Clone, Debug)]
pub enum CallRequest {
    Lock { key: Key, acquire: Acquire, wait_us: u64 },
    Unlock { key: Key, holder: String, request_id: RequestId, named: Option<Which> },
}

enum Served {
    Lock(LockCall),
    Unlock(UnlockCall),
}

enum CallState {
    Live,
    Gone,
    PausedUntil(u64),
}

/// A call being served.
pub(crate) struct Handler {
    node: usize,
    /// The node's life it started in: a crash ends it.
    generation: u64,
    client: usize,
    attempt: u64,
    served: Served,
    /// What the client asked, for the checker.
    asked: CallRequest,
    /// The ballot of the last reply the call got: its answer is drawn from that record.
    last_ballot: Option<Ballot>,
}

impl World {
    /// Client `client`'s call (its attempt `attempt`) reached node `to`.
    pub(crate) fn call_arrived(&mut self, to: usize, client: usize, attempt: u64, request: CallRequest) {
        if self.nodes[to].node.is_none() {
            // Refused: the client hears of it at once, as a reset connection.
            self.schedule(self.now, Event::CallLost { client, attempt });
            return;
        }
        let id = self.next_call;
        self.next_call += 1;
        let now = self.nodes[to].clock.local(self.now);
        let asked = request.clone();
        let (served, step) = match request {
            CallRequest::Lock { key, mut acquire, wait_us } => {
                // The serving node names itself (as the API does), with the call, so a grant
                // says which copy of the request made it; the checker learns when it arrived.
                acquire.node = format!("{}#c{id}", self.nodes[to].id.name);
                if let Key::Scope(scope) = &key {
                    self.checker.reached(self.now, scope, &acquire.request_id, &acquire.node);
                }
                let (call, step) = LockCall::new(now, key, acquire, wait_us, true, TIMING);
                (Served::Lock(call), step)
            }
            CallRequest::Unlock { key, holder, request_id, named } => {
                let (call, step) = UnlockCall::new(key, holder, request_id, named, false, true);
                (Served::Unlock(call), step)
            }
        };
        let generation = self.nodes[to].generation;
        self.calls.insert(id, Handler { node: to, generation, client, attempt, served, asked, last_ballot: None });
        self.drive(id, step);
    }

    fn drive(&mut self, id: u64, step: Step) {
        let Some(node) = self.calls.get(&id).map(|h| h.node) else { return };
        match step {
            Step::Submit(key, op) => {
                if let (Key::Scope(scope), Op::Lock(LockOp::Release { grant, request_id })) = (&key, &op) {
                    if grant.which == Which::Held && self.nodes[node].node.is_some() {
                        self.checker.bare_unlock_arrived(self.now, scope, &grant.holder, request_id);
                    }
                }
                let stall = matches!(&op, Op::Lock(LockOp::Cancel { .. }))
                    || matches!(&op, Op::Lock(LockOp::Release { grant, .. }) if grant.which == Which::Held);
                let request = Request { client: CALL_BIT | id, key, op, timeout_us: OP_TIMEOUT_US };
                self.log(|| format!("call {id} at n{node}: {:?}", request.op));
                self.step_node(node, |n, now| n.handle_request(now, request));
                // Profile `stalls`: the process stops right after it queued the op.
                if stall && self.stalls && self.phase == Phase::Faults && self.rng.chance(0.7) {
                    let length = self.rng.between(100_000, 2_000_000);
                    self.pause(node, length);
                }
            }
            Step::Wait { until } => {
                let at = self.nodes[node].clock.true_at(until).max(self.now);
                self.schedule(at, Event::CallWake { id });
            }
            Step::Answer(outcome) => {
                let Some(h) = self.calls.remove(&id) else { return };
                self.log(|| format!("call {id} at n{node} answers client {}: {outcome:?}", h.client));
                self.checker.call_answer(self.now, &h.asked, &outcome, h.last_ballot);
                if let Some(delay) = self.net.client_delivery(&mut self.rng, h.client, node) {
                    let event = Event::CallAnswer { client: h.client, attempt: h.attempt, outcome, sent_at: self.now };
                    self.schedule(self.now + delay, event);
                }
            }
        }
    }

    /// Whether call `id` still runs (a call whose node crashed since it started is gone), and
    /// if its node is paused, until when its next event must wait.
    fn call_state(&mut self, id: u64) -> CallState {
        let Some(h) = self.calls.get(&id) else { return CallState::Gone };
        let n = &self.nodes[h.node];
        if n.generation != h.generation || n.node.is_none() {
            self.calls.remove(&id);
            return CallState::Gone;
        }
        if n.paused_until > self.now {
            return CallState::PausedUntil(n.paused_until);
        }
        CallState::Live
    }

    /// The node's reply to an op of call `id`.
    pub(crate) fn call_reply(&mut self, id: u64, reply: Reply) {
        match self.call_state(id) {
            CallState::Gone => return,
            CallState::PausedUntil(at) => return self.schedule(at, Event::CallReply { id, reply }),
            CallState::Live => {}
        }
        let Some(h) = self.calls.get_mut(&id) else { return };
        let now = self.nodes[h.node].clock.local(self.now);
        h.last_ballot = reply.ballot.or(h.last_ballot);
        let step = match &mut h.served {
            Served::Lock(call) => call.on_reply(now, reply),
            Served::Unlock(call) => call.on_reply(reply),
        };
        self.drive(id, step);
    }

    /// Call `id`'s wait is over: it polls.
    pub(crate) fn call_wake(&mut self, id: u64) {
        match self.call_state(id) {
            CallState::Gone => return,
            CallState::PausedUntil(at) => return self.schedule(at, Event::CallWake { id }),
            CallState::Live => {}
        }
        let Some(h) = self.calls.get_mut(&id) else { return };
        let now = self.nodes[h.node].clock.local(self.now);
        let step = match &mut h.served {
            Served::Lock(call) => call.on_wake(now),
            Served::Unlock(_) => return,
        };
        self.drive(id, step);
    }

    /// Node `node` crashed: the calls it served end, and their clients see the connection
    /// reset.
    pub(crate) fn calls_lost(&mut self, node: usize) {
        let lost: Vec<u64> = self.calls.iter().filter(|(_, h)| h.node == node).map(|(id, _)| *id).collect();
        for id in lost {
            if let Some(h) = self.calls.remove(&id) {
                self.schedule(self.now, Event::CallLost { client: h.client, attempt: h.attempt });
            }
        }
    }
}
