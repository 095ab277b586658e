//! The server side of one client call, sans IO: what the node that serves a lock or unlock
//! request does between the request and its answer — submit it to the core, wait in the
//! queue and poll, wake on news of a handoff, give up the place at the deadline (keeping a
//! grant a retry elsewhere already collected), read who holds the scope for a busy answer,
//! and turn the core's answers into what the client is told, never a definite failure where
//! an earlier attempt of the same request may still take effect (PROTOCOL §6, §9 point 6).
//!
//! The HTTP handler and the simulator drive the same code: `new` gives the first `Step`;
//! after a `Submit` the driver runs the op through its node and passes the reply to
//! `on_reply` (or calls `on_lost` if none will come); after a `Wait` it calls `on_wake` at the
//! time named (or earlier, on news that the scope was handed to this request); an `Answer`
//! ends the call. A driver that stops
//! driving (its client went away) leaves no state behind but the core's: a place that is no
//! longer polled lapses after its wait lease, a grant nobody collects after its pickup time.

use crate::prelude::*;

use super::message::{Ballot, Key};
use super::node::{Answer, Failure, Op, Reply};
use super::record::{Acquire, GrantRef, LockOp, LockRecord, LockResult, LockType, RequestId, Which};
use super::time::Time;

/// How a waiting call keeps its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a waiter's place is kept between two polls.
    pub wait_lease_us: u64,
    /// How often a waiter polls (keeping its place); it polls at once on news of a handoff.
    pub poll_us: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { wait_lease_us: 3_000_000, poll_us: 500_000 }
    }
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Run `op` on `key` through this node; pass the reply to `on_reply`.
    Submit(Key, Op),
    /// Wait until `until` (this node's clock), or until news that the scope was handed to
    /// this request; then call `on_wake`.
    Wait { until: Time },
    /// Tell the client; the call is over.
    Answer(Outcome),
}

/// What the client is told.
#[derive(Debug)]
pub enum Outcome {
    /// Granted (`reply` holds `LockResult::Locked`), or unlocked or revoked (`Released`,
    /// `Revoked`, or a read that found the scope free), as the reply says.
    Done(Reply),
    /// Held by others (or closed by lock-delay); `position`: where a wait ended in the queue;
    /// `ballot`: the one that decided the refusal (the request's, or its cancel's).
    Busy { holders: Vec<String>, lock_delay_us: u64, position: Option<usize>, ballot: Option<Ballot> },
    /// Nothing was granted to this request, and nothing will be.
    Expired(Ended),
    /// The grant was revoked by an admin.
    Revoked,
    /// An unlock that matched no grant of the holder, with the scope's holders.
    NotHolder { holders: Vec<String>, why: NotHeld },
    /// No decision: `Timeout` where an earlier attempt may still take effect.
    Failed(Failure),
    /// The core answered what this call never asks for (a bug, reported as such).
    Unexpected(Answer),
    /// A read for the answer's details failed.
    Unreadable,
}

/// Why an `Expired` answer is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// This request id's grant or wait already ended.
    Ended,
    /// The grant was collected by a retry of this request and has ended since.
    GrantEnded,
    /// The request waited at this node longer than the scope's request log reaches back.
    TooOld,
}

/// Why an unlock matched no grant, where the holder does hold one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotHeld {
    /// The holder holds none.
    Nothing,
    /// A revoke named a token no current grant has.
    NoSuchToken,
    /// A bare unlock: the holder's grants are not provably older than its arrival.
    NotOlder,
    /// A fencing token names a write grant only, and the holder reads.
    TokenOfReader,
    /// The holder holds a grant, but not the one named.
    Another,
}

/// One lock request being served.
#[derive(Debug)]
pub struct LockCall {
    key: Key,
    acquire: Acquire,
    /// When the wait ends, on this node's clock.
    deadline: Time,
    timing: Timing,
    /// An earlier attempt carrying this request may still take effect: a failure is then
    /// never definite. True from the start for a request id the client gave (it may have
    /// sent it elsewhere); true once queued (an Accept carrying it went out).
    unsure: bool,
    cancelled: bool,
    stage: LockStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockStage {
    Acquiring,
    Cancelling { position: usize },
    Reading { position: Option<usize>, ballot: Option<Ballot> },
    Done,
}

impl LockCall {
    /// Starts serving `acquire` on `key`, waiting up to `wait_us` in the queue.
    /// `named_id`: the client gave the request id.
    pub fn new(now: Time, key: Key, mut acquire: Acquire, wait_us: u64, named_id: bool, timing: Timing) -> (LockCall, Step) {
        acquire.wait = wait_us > 0;
        acquire.wait_lease_us = timing.wait_lease_us;
        acquire.poll = false;
        let deadline = now.plus_micros(wait_us);
        let call = LockCall { key, acquire, deadline, timing, unsure: named_id, cancelled: false, stage: LockStage::Acquiring };
        let step = call.submit_acquire();
        (call, step)
    }

    /// The request id this call serves (news of a handoff to it wakes the wait).
    pub fn request_id(&self) -> &RequestId {
        &self.acquire.request_id
    }

    fn submit_acquire(&self) -> Step {
        Step::Submit(self.key.clone(), Op::Lock(LockOp::Acquire(self.acquire.clone())))
    }

    fn answer(&mut self, outcome: Outcome) -> Step {
        self.stage = LockStage::Done;
        Step::Answer(outcome)
    }

    /// A failure to report: `Timeout` where an earlier attempt may still take effect.
    fn failed(&mut self, failure: Failure) -> Step {
        let failure = match failure {
            Failure::NoQuorum | Failure::Overloaded | Failure::NotMember if self.unsure => Failure::Timeout,
            f => f,
        };
        self.answer(Outcome::Failed(failure))
    }

    /// The reply to the last `Submit`.
    pub fn on_reply(&mut self, now: Time, reply: Reply) -> Step {
        match self.stage {
            LockStage::Acquiring => self.on_acquired(now, reply),
            LockStage::Cancelling { position } => match reply.result {
                Ok(Answer::Lock(LockResult::Cancelled)) => {
                    self.stage = LockStage::Reading { position: Some(position), ballot: reply.ballot };
                    Step::Submit(self.key.clone(), Op::Lock(LockOp::Read))
                }
                // Ours, and already reported (a retry elsewhere collected it): poll once
                // more, which renews it for this call.
                Ok(Answer::Lock(LockResult::Collected { .. })) => {
                    self.stage = LockStage::Acquiring;
                    self.submit_acquire()
                }
                // Granted, reported and ended since.
                Ok(Answer::Lock(LockResult::Expired)) => self.answer(Outcome::Expired(Ended::GrantEnded)),
                // The place may still be there, and may yet become a grant: unknown.
                _ => self.answer(Outcome::Failed(Failure::Timeout)),
            },
            LockStage::Reading { position, ballot } => {
                let (holders, lock_delay_us) = match reply.result {
                    Ok(Answer::Lock(LockResult::Record(record))) => (holder_names(&record), record.delay_remaining_us),
                    _ => (Vec::new(), 0),
                };
                self.answer(Outcome::Busy { holders, lock_delay_us, position, ballot })
            }
            LockStage::Done => Step::Answer(Outcome::Failed(Failure::Timeout)),
        }
    }

    fn on_acquired(&mut self, now: Time, reply: Reply) -> Step {
        match reply.result {
            Ok(Answer::Lock(LockResult::Locked { .. })) => self.answer(Outcome::Done(reply)),
            Ok(Answer::Lock(LockResult::Queued { position })) => {
                self.unsure = true;
                // From now on this call polls: it keeps the place or collects the grant, and
                // never starts the request over if both are gone.
                self.acquire.poll = true;
                if now < self.deadline {
                    return Step::Wait { until: now.plus_micros(self.timing.poll_us).min(self.deadline) };
                }
                if self.cancelled {
                    return self.answer(Outcome::Failed(Failure::Timeout));
                }
                // Waited long enough: give up the place. A grant handed over meanwhile that
                // nobody was told of is freed by the cancel; one a retry of this request
                // collected (at another node) is kept and answered.
                self.cancelled = true;
                self.stage = LockStage::Cancelling { position };
                Step::Submit(self.key.clone(), Op::Lock(LockOp::Cancel { request_id: self.acquire.request_id.clone() }))
            }
            Ok(Answer::Lock(LockResult::Busy { holders, lock_delay_us, .. })) => {
                self.answer(Outcome::Busy { holders, lock_delay_us, position: None, ballot: reply.ballot })
            }
            Ok(Answer::Lock(LockResult::Expired)) => self.answer(Outcome::Expired(Ended::Ended)),
            Ok(Answer::Lock(LockResult::TooOld)) => self.answer(Outcome::Expired(Ended::TooOld)),
            Ok(Answer::Lock(LockResult::Revoked)) => self.answer(Outcome::Revoked),
            Ok(other) => self.answer(Outcome::Unexpected(other)),
            Err(f) => self.failed(f),
        }
    }

    /// The wait ended (its time came, or news of a handoff): poll.
    pub fn on_wake(&mut self, _now: Time) -> Step {
        self.submit_acquire()
    }

    /// The last `Submit` got no reply at all (the node is shutting down): whatever it carried
    /// may have gone out in an Accept, so the outcome is unknown — except for the read behind
    /// a busy answer, whose refusal is already decided.
    pub fn on_lost(&mut self) -> Step {
        match self.stage {
            LockStage::Reading { position, ballot } => self.answer(Outcome::Busy { holders: Vec::new(), lock_delay_us: 0, position, ballot }),
            _ => self.answer(Outcome::Failed(Failure::Timeout)),
        }
    }
}

/// One unlock (release, or an admin's revoke) being served.
#[derive(Debug)]
pub struct UnlockCall {
    key: Key,
    holder: String,
    request_id: RequestId,
    named: Option<Which>,
    force: bool,
    named_id: bool,
    reading: bool,
}

impl UnlockCall {
    /// `named`: the grant the request names, if any (a bare unlock names none); `force`: an
    /// admin's revoke; `named_id`: the client gave `request_id`.
    pub fn new(key: Key, holder: String, request_id: RequestId, named: Option<Which>, force: bool, named_id: bool) -> (UnlockCall, Step) {
        let op = if force {
            let token = match named {
                Some(Which::Grant { token, .. } | Which::Token(token)) => Some(token),
                Some(Which::Held) | None => None,
            };
            LockOp::Revoke { token }
        } else {
            LockOp::Release { request_id: request_id.clone(), grant: GrantRef { holder: holder.clone(), which: named.unwrap_or(Which::Held) } }
        };
        let step = Step::Submit(key.clone(), Op::Lock(op));
        (UnlockCall { key, holder, request_id, named, force, named_id, reading: false }, step)
    }

    pub fn on_reply(&mut self, reply: Reply) -> Step {
        if self.reading {
            return Step::Answer(self.on_read(reply));
        }
        match reply.result {
            Ok(Answer::Lock(LockResult::Released | LockResult::Revoked)) => Step::Answer(Outcome::Done(reply)),
            // Idempotent on a free scope; a conflict if someone else holds it.
            Ok(Answer::Lock(LockResult::NotHolder)) => {
                self.reading = true;
                Step::Submit(self.key.clone(), Op::Lock(LockOp::Read))
            }
            Ok(other) => Step::Answer(Outcome::Unexpected(other)),
            // This call had no effect, but an earlier one with the client's request id may have.
            Err(Failure::NoQuorum | Failure::Overloaded | Failure::NotMember) if self.named_id => Step::Answer(Outcome::Failed(Failure::Timeout)),
            Err(f) => Step::Answer(Outcome::Failed(f)),
        }
    }

    /// The last `Submit` got no reply at all (the node is shutting down): the release may
    /// have gone out in an Accept, so its outcome is unknown; a read only could not be made.
    pub fn on_lost(&mut self) -> Step {
        Step::Answer(if self.reading { Outcome::Unreadable } else { Outcome::Failed(Failure::Timeout) })
    }

    fn on_read(&self, reply: Reply) -> Outcome {
        let record = match &reply.result {
            // Already free: the read that found it so is the decision to report.
            Ok(Answer::Lock(LockResult::Record(record))) if record.holders.is_empty() => return Outcome::Done(reply),
            Ok(Answer::Lock(LockResult::Record(record))) => record,
            Err(f) => return Outcome::Failed(f.clone()),
            Ok(_) => return Outcome::Unreadable,
        };
        // Another copy of this very request (a retry at another node) released it first.
        if !self.force && record.logged(&self.request_id) == Some(crate::record::Outcome::Released) {
            return Outcome::Done(reply);
        }
        let holders = holder_names(record);
        let why = if self.force {
            NotHeld::NoSuchToken
        } else if !holders.contains(&self.holder) {
            NotHeld::Nothing
        } else {
            let reading = record.holders.iter().any(|g| g.holder == self.holder && g.lock_type == LockType::Read);
            match self.named {
                None => NotHeld::NotOlder,
                Some(Which::Token(_)) if reading => NotHeld::TokenOfReader,
                Some(_) => NotHeld::Another,
            }
        };
        Outcome::NotHolder { holders, why }
    }
}

fn holder_names(record: &LockRecord) -> Vec<String> {
    record.holders.iter().map(|g| g.holder.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LeaseRule, Priority};

    fn key() -> Key {
        Key::Scope("s".into())
    }

    fn acquire() -> Acquire {
        Acquire {
            request_id: RequestId("h\u{0}r1".into()),
            holder: "h".into(),
            lock_type: LockType::Write,
            lease: LeaseRule::Fixed(30_000_000),
            lock_delay_us: 0,
            wait: false,
            wait_lease_us: 0,
            priority: Priority::Normal,
            reason: None,
            node: "n1".into(),
            poll: false,
        }
    }

    fn reply(result: Result<LockResult, Failure>) -> Reply {
        Reply { client: 1, key: key(), result: result.map(Answer::Lock), agreed: Vec::new(), voters: 3, ballot: None }
    }

    fn submitted(step: &Step) -> &LockOp {
        match step {
            Step::Submit(_, Op::Lock(op)) => op,
            other => panic!("expected a submit, got {other:?}"),
        }
    }

    fn is_poll(step: &Step) -> bool {
        matches!(submitted(step), LockOp::Acquire(a) if a.poll && a.wait)
    }

    #[test]
    fn a_waiting_call_polls_until_its_deadline_then_gives_up_its_place_and_says_who_holds_it() {
        let (mut call, step) = LockCall::new(Time(0), key(), acquire(), 2_000_000, false, Timing::default());
        assert!(matches!(submitted(&step), LockOp::Acquire(a) if a.wait && !a.poll && a.wait_lease_us == Timing::default().wait_lease_us));
        let step = call.on_reply(Time(1_000), reply(Ok(LockResult::Queued { position: 2 })));
        assert!(matches!(step, Step::Wait { until: Time(501_000) }));
        let step = call.on_wake(Time(501_000));
        assert!(is_poll(&step), "after the first answer the call only polls: {step:?}");
        let step = call.on_reply(Time(1_900_000), reply(Ok(LockResult::Queued { position: 1 })));
        assert!(matches!(step, Step::Wait { until: Time(2_000_000) }), "the last wait ends at the deadline");
        let step = call.on_reply(Time(2_000_000), reply(Ok(LockResult::Queued { position: 1 })));
        assert!(matches!(submitted(&step), LockOp::Cancel { request_id } if request_id.0 == "h\u{0}r1"));
        let step = call.on_reply(Time(2_001_000), reply(Ok(LockResult::Cancelled)));
        assert!(matches!(submitted(&step), LockOp::Read));
        let mut record = LockRecord::default();
        record.delay_remaining_us = 7;
        let step = call.on_reply(Time(2_002_000), reply(Ok(LockResult::Record(Box::new(record)))));
        assert!(matches!(step, Step::Answer(Outcome::Busy { lock_delay_us: 7, position: Some(1), .. })), "{step:?}");
    }

    #[test]
    fn a_cancel_that_finds_the_grant_collected_elsewhere_polls_and_answers_locked() {
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 1_000, false, Timing::default());
        let step = call.on_reply(Time(2_000), reply(Ok(LockResult::Queued { position: 1 })));
        assert!(matches!(submitted(&step), LockOp::Cancel { .. }));
        let step = call.on_reply(Time(3_000), reply(Ok(LockResult::Collected { token: 4, grant: 9 })));
        assert!(is_poll(&step), "the grant is ours and reported: collect it ({step:?})");
        let locked = LockResult::Locked { token: 4, grant: 9, lease_us: 1, lock_type: LockType::Write, lease_seq: 9, auto: None };
        let step = call.on_reply(Time(4_000), reply(Ok(locked)));
        assert!(matches!(step, Step::Answer(Outcome::Done(_))), "{step:?}");
        // A cancel whose request's grant was collected and has ended since: nothing will be granted.
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 1_000, false, Timing::default());
        call.on_reply(Time(2_000), reply(Ok(LockResult::Queued { position: 1 })));
        let step = call.on_reply(Time(3_000), reply(Ok(LockResult::Expired)));
        assert!(matches!(step, Step::Answer(Outcome::Expired(Ended::GrantEnded))), "{step:?}");
        // Anything else: the place may still become a grant.
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 1_000, false, Timing::default());
        call.on_reply(Time(2_000), reply(Ok(LockResult::Queued { position: 1 })));
        let step = call.on_reply(Time(3_000), reply(Err(Failure::NoQuorum)));
        assert!(matches!(step, Step::Answer(Outcome::Failed(Failure::Timeout))), "{step:?}");
    }

    #[test]
    fn no_quorum_is_definite_only_when_no_earlier_attempt_can_take_effect() {
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 0, false, Timing::default());
        let step = call.on_reply(Time(1), reply(Err(Failure::NoQuorum)));
        assert!(matches!(step, Step::Answer(Outcome::Failed(Failure::NoQuorum))));
        // The client gave the id: it may have sent it elsewhere before.
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 0, true, Timing::default());
        let step = call.on_reply(Time(1), reply(Err(Failure::Overloaded)));
        assert!(matches!(step, Step::Answer(Outcome::Failed(Failure::Timeout))));
        // Once queued, an Accept carrying it went out.
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 5_000_000, false, Timing::default());
        call.on_reply(Time(1), reply(Ok(LockResult::Queued { position: 1 })));
        let step = call.on_reply(Time(2), reply(Err(Failure::NoQuorum)));
        assert!(matches!(step, Step::Answer(Outcome::Failed(Failure::Timeout))));
    }

    #[test]
    fn an_op_that_gets_no_reply_leaves_the_outcome_unknown_but_a_decided_refusal_stands() {
        // The first attempt, a poll, a cancel: each may have gone out in an Accept.
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 0, false, Timing::default());
        assert!(matches!(call.on_lost(), Step::Answer(Outcome::Failed(Failure::Timeout))));
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 5_000_000, false, Timing::default());
        call.on_reply(Time(1), reply(Ok(LockResult::Queued { position: 1 })));
        call.on_wake(Time(2));
        assert!(matches!(call.on_lost(), Step::Answer(Outcome::Failed(Failure::Timeout))));
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 1_000, false, Timing::default());
        call.on_reply(Time(2_000), reply(Ok(LockResult::Queued { position: 2 })));
        assert!(matches!(call.on_lost(), Step::Answer(Outcome::Failed(Failure::Timeout))));
        // The cancel was decided; only the read for the holders failed: still busy.
        let (mut call, _) = LockCall::new(Time(0), key(), acquire(), 1_000, false, Timing::default());
        call.on_reply(Time(2_000), reply(Ok(LockResult::Queued { position: 2 })));
        call.on_reply(Time(3_000), reply(Ok(LockResult::Cancelled)));
        assert!(matches!(call.on_lost(), Step::Answer(Outcome::Busy { position: Some(2), .. })));
        // An unlock: unknown; its read: unreadable.
        let (mut call, _) = UnlockCall::new(key(), "h".into(), RequestId("u".into()), None, false, false);
        assert!(matches!(call.on_lost(), Step::Answer(Outcome::Failed(Failure::Timeout))));
        call.on_reply(reply(Ok(LockResult::NotHolder)));
        assert!(matches!(call.on_lost(), Step::Answer(Outcome::Unreadable)));
    }

    #[test]
    fn an_unlock_that_matched_nothing_reads_the_scope_to_say_why() {
        let id = RequestId("h\u{0}u1".into());
        // Free: the read that found it so is the answer.
        let (mut call, step) = UnlockCall::new(key(), "h".into(), id.clone(), None, false, false);
        assert!(matches!(submitted(&step), LockOp::Release { grant: GrantRef { which: Which::Held, .. }, .. }));
        assert!(matches!(submitted(&call.on_reply(reply(Ok(LockResult::NotHolder)))), LockOp::Read));
        let step = call.on_reply(reply(Ok(LockResult::Record(Box::default()))));
        assert!(matches!(step, Step::Answer(Outcome::Done(_))));
        // h reads; a token names a write grant only.
        let mut grant = LockRecord::default();
        let op = LockOp::Acquire(Acquire { lock_type: LockType::Read, ..acquire() });
        grant.apply(&op, 0, &crate::record::Limits::default());
        let (mut call, _) = UnlockCall::new(key(), "h".into(), id.clone(), Some(Which::Token(1)), false, false);
        call.on_reply(reply(Ok(LockResult::NotHolder)));
        let step = call.on_reply(reply(Ok(LockResult::Record(Box::new(grant.clone())))));
        assert!(matches!(step, Step::Answer(Outcome::NotHolder { why: NotHeld::TokenOfReader, .. })), "{step:?}");
        let (mut call, _) = UnlockCall::new(key(), "h".into(), id.clone(), None, false, false);
        call.on_reply(reply(Ok(LockResult::NotHolder)));
        let step = call.on_reply(reply(Ok(LockResult::Record(Box::new(grant.clone())))));
        assert!(matches!(step, Step::Answer(Outcome::NotHolder { why: NotHeld::NotOlder, .. })), "{step:?}");
        let (mut call, _) = UnlockCall::new(key(), "other".into(), id.clone(), None, false, true);
        call.on_reply(reply(Ok(LockResult::NotHolder)));
        let step = call.on_reply(reply(Ok(LockResult::Record(Box::new(grant)))));
        assert!(matches!(step, Step::Answer(Outcome::NotHolder { why: NotHeld::Nothing, .. })), "{step:?}");
        // A copy of this request released elsewhere first (a retry): released, not "not held".
        let mut released = LockRecord::default();
        released.apply(&LockOp::Acquire(acquire()), 0, &crate::record::Limits::default());
        let release = LockOp::Release { request_id: id.clone(), grant: GrantRef { holder: "h".into(), which: Which::Token(1) } };
        released.apply(&release, 0, &crate::record::Limits::default());
        released.apply(&LockOp::Acquire(Acquire { request_id: RequestId("h\u{0}again".into()), ..acquire() }), 0, &crate::record::Limits::default());
        assert_eq!(released.logged(&id), Some(crate::record::Outcome::Released));
        let (mut call, _) = UnlockCall::new(key(), "h".into(), id.clone(), None, false, false);
        call.on_reply(reply(Ok(LockResult::NotHolder)));
        let step = call.on_reply(reply(Ok(LockResult::Record(Box::new(released)))));
        assert!(matches!(step, Step::Answer(Outcome::Done(_))), "{step:?}");
        // No quorum with the client's request id: an earlier attempt may still release.
        let (mut call, _) = UnlockCall::new(key(), "h".into(), RequestId("x".into()), None, false, true);
        assert!(matches!(call.on_reply(reply(Err(Failure::NoQuorum))), Step::Answer(Outcome::Failed(Failure::Timeout))));
    }
}
