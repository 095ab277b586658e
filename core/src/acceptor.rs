//! The voter side of the ballots: per-register promises and acceptances.
//!
//! Everything here that a reply depends on is returned as a `Write` that the runtime must make
//! durable before the reply leaves (the node's output contract).

use crate::prelude::*;

use alloc::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::message::{AcceptedValue, Ballot, Key, Value};
use super::roster::RosterId;
use super::time::Time;

/// A voter's durable state for one register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub promised: Option<Ballot>,
    pub accepted: Option<AcceptedValue>,
}

#[derive(Clone, Debug)]
struct SlotState {
    promised: Option<Ballot>,
    accepted: Option<Packed>,
    /// When this voter accepted `accepted`, on its own clock; the restart time after a
    /// restart, which underestimates the age and is therefore safe.
    accepted_at: Time,
}

/// An accepted value kept encoded: a voter holds every scope it ever voted on, and a record
/// takes a fraction of the memory encoded that it takes as a struct of vectors and strings.
#[derive(Clone, Debug)]
struct Packed {
    ballot: Ballot,
    roster: Option<RosterId>,
    value: Box<[u8]>,
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard()
}

impl Packed {
    fn pack(a: &AcceptedValue) -> Packed {
        // Encoding our own value into memory cannot fail; if it did, going on could lose it.
        let value = bincode::serde::encode_to_vec(&a.value, codec()).unwrap_or_else(|e| panic!("cannot encode an accepted value: {e}"));
        Packed { ballot: a.ballot, roster: a.roster, value: value.into_boxed_slice() }
    }

    fn unpack(&self) -> AcceptedValue {
        let value = bincode::serde::decode_from_slice(&self.value, codec())
            .map(|(v, _)| v)
            .unwrap_or_else(|e| panic!("cannot decode an accepted value this voter encoded: {e}"));
        AcceptedValue { ballot: self.ballot, value, roster: self.roster }
    }
}

impl SlotState {
    fn new(now: Time) -> SlotState {
        SlotState { promised: None, accepted: None, accepted_at: now }
    }

    fn slot(&self) -> Slot {
        Slot { promised: self.promised, accepted: self.accepted.as_ref().map(Packed::unpack) }
    }
}

/// All registers this voter holds.
#[derive(Clone, Debug, Default)]
pub struct Acceptor {
    slots: BTreeMap<Key, SlotState>,
}

/// A promise: the voter's accepted value and how long ago (its clock) it accepted it.
pub struct PromiseOut {
    pub accepted: Option<AcceptedValue>,
    pub age_us: u64,
}

impl Acceptor {
    /// Recovers from durable state after a restart; every age restarts at `now`.
    pub fn recover(slots: impl IntoIterator<Item = (Key, Slot)>, now: Time) -> Acceptor {
        let slots = slots
            .into_iter()
            .map(|(k, slot)| (k, SlotState { promised: slot.promised, accepted: slot.accepted.as_ref().map(Packed::pack), accepted_at: now }))
            .collect();
        Acceptor { slots }
    }

    /// Handles Prepare: promises `ballot` unless a higher one was promised. On success the
    /// returned slot must be persisted before the promise is sent.
    pub fn prepare(&mut self, now: Time, key: &Key, ballot: Ballot) -> Result<(PromiseOut, Option<Slot>), Ballot> {
        let state = self.slots.entry(key.clone()).or_insert_with(|| SlotState::new(now));
        if let Some(promised) = state.promised {
            if ballot < promised {
                return Err(promised);
            }
        }
        let changed = state.promised != Some(ballot);
        state.promised = Some(ballot);
        let slot = state.slot();
        let out = PromiseOut { accepted: slot.accepted.clone(), age_us: now.since(state.accepted_at) };
        Ok((out, changed.then_some(slot)))
    }

    /// Handles Accept: accepts unless a higher ballot was promised, and promises the ballot's
    /// successor (see `Ballot::successor`). A repeated Accept of the ballot already accepted
    /// (a duplicate message) is acknowledged again and changes nothing. On success the
    /// returned slot must be persisted before the acceptance is sent.
    pub fn accept(&mut self, now: Time, key: &Key, ballot: Ballot, value: Value, roster: Option<RosterId>) -> Result<Slot, Ballot> {
        self.accept_promising(now, key, ballot, value, roster, ballot.successor())
    }

    /// `accept`, promising `next` (a broken variant promises less).
    pub(super) fn accept_promising(&mut self, now: Time, key: &Key, ballot: Ballot, value: Value, roster: Option<RosterId>, next: Ballot) -> Result<Slot, Ballot> {
        let state = self.slots.entry(key.clone()).or_insert_with(|| SlotState::new(now));
        if state.accepted.as_ref().is_some_and(|a| a.ballot == ballot) && state.promised == Some(next) {
            return Ok(state.slot());
        }
        if let Some(promised) = state.promised {
            if ballot < promised {
                return Err(promised);
            }
        }
        let accepted = AcceptedValue { ballot, value, roster };
        state.promised = Some(next);
        state.accepted = Some(Packed::pack(&accepted));
        state.accepted_at = now;
        Ok(Slot { promised: Some(next), accepted: Some(accepted) })
    }

    /// Sets a register's value outside a ballot; used only for the first roster, which all
    /// its voters acknowledged before anyone installed it.
    pub fn seed(&mut self, now: Time, key: Key, accepted: AcceptedValue) -> Option<Slot> {
        let state = self.slots.entry(key).or_insert_with(|| SlotState::new(now));
        if state.accepted.is_some() {
            return None;
        }
        state.accepted = Some(Packed::pack(&accepted));
        state.accepted_at = now;
        Some(Slot { promised: state.promised, accepted: Some(accepted) })
    }

    /// When this voter accepted the value it holds for `key` (its own clock; the restart
    /// time after a restart).
    pub fn accepted_at(&self, key: &Key) -> Option<Time> {
        self.slots.get(key).filter(|s| s.accepted.is_some()).map(|s| s.accepted_at)
    }

    pub fn slot(&self, key: &Key) -> Option<Slot> {
        self.slots.get(key).map(SlotState::slot)
    }

    /// Scope names this voter holds a value for.
    pub fn scopes(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| s.accepted.is_some())
            .filter_map(|(k, _)| match k {
                Key::Scope(name) => Some(name.clone()),
                Key::Roster => None,
            })
            .collect()
    }

    /// Up to `limit` scope names this voter holds a value for, in order, after `after`; and
    /// whether there are more past them.
    pub fn scopes_after(&self, after: Option<&str>, limit: usize) -> (Vec<String>, bool) {
        use core::ops::Bound;
        let from = match after {
            Some(name) => Bound::Excluded(Key::Scope(name.to_string())),
            None => Bound::Included(Key::Scope(String::new())),
        };
        let mut names = self.slots.range((from, Bound::Unbounded)).filter(|(_, s)| s.accepted.is_some()).filter_map(|(k, _)| match k {
            Key::Scope(name) => Some(name.clone()),
            Key::Roster => None,
        });
        let page: Vec<String> = names.by_ref().take(limit.max(1)).collect();
        let more = names.next().is_some();
        (page, more)
    }

    /// The lock records this voter holds, in scope order, up to `limit` of them (for metrics:
    /// its own copies, which may be a little behind the chosen values).
    pub fn records(&self, limit: usize) -> impl Iterator<Item = (&str, super::record::LockRecord)> {
        self.slots
            .iter()
            .filter_map(|(k, s)| match (k, s.accepted.as_ref().map(|a| a.unpack().value)) {
                (Key::Scope(name), Some(Value::Lock(record))) => Some((name.as_str(), record)),
                _ => None,
            })
            .take(limit)
    }

    /// Test-only amnesia: forget every promise that went beyond the accepted ballot.
    #[cfg(feature = "broken-variants")]
    pub fn forget_promises(&mut self) {
        for state in self.slots.values_mut() {
            state.promised = state.accepted.as_ref().map(|a| a.ballot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LockRecord;

    fn b(round: u64) -> Ballot {
        Ballot { round, proposer: 1 }
    }

    #[test]
    fn promises_and_accepts_only_at_or_above_the_promise() {
        let mut a = Acceptor::default();
        let key = Key::Scope("s".into());
        let v = Value::Lock(LockRecord::default());
        assert!(a.prepare(Time(0), &key, b(5)).is_ok());
        assert_eq!(a.prepare(Time(1), &key, b(4)).err(), Some(b(5)));
        assert_eq!(a.accept(Time(2), &key, b(4), v.clone(), None).err(), Some(b(5)));
        assert!(a.accept(Time(3), &key, b(5), v.clone(), None).is_ok());
        let (promise, _) = a.prepare(Time(10), &key, b(6)).ok().unwrap();
        assert_eq!(promise.accepted.map(|x| x.ballot), Some(b(5)));
        assert_eq!(promise.age_us, 7);
    }

    #[test]
    fn an_accept_promises_the_successor_and_a_duplicate_is_acknowledged() {
        let mut a = Acceptor::default();
        let key = Key::Scope("s".into());
        let v = Value::Lock(LockRecord::default());
        a.accept(Time(0), &key, b(5), v.clone(), None).unwrap();
        // Another proposer's ballot between (5, 1) and its successor (6, 1) is refused.
        let between = Ballot { round: 5, proposer: 2 };
        assert_eq!(a.prepare(Time(1), &key, between).err(), Some(b(6)));
        assert_eq!(a.accept(Time(1), &key, between, v.clone(), None).err(), Some(b(6)));
        assert!(a.accept(Time(2), &key, b(5), v.clone(), None).is_ok(), "the same Accept again");
        assert!(a.accept(Time(3), &key, b(6), v, None).is_ok(), "the proposer's next value, without a Prepare");
        assert_eq!(a.slot(&key).and_then(|s| s.promised), Some(b(7)));
    }

    #[test]
    fn a_restart_resets_ages_to_zero_never_more() {
        let key = Key::Scope("s".into());
        let mut a = Acceptor::default();
        a.accept(Time(0), &key, b(1), Value::Lock(LockRecord::default()), None).unwrap();
        let slot = a.slot(&key).unwrap();
        let mut b2 = Acceptor::recover([(key.clone(), slot)], Time(1_000));
        let (promise, _) = b2.prepare(Time(1_250), &key, b(2)).ok().unwrap();
        assert_eq!(promise.age_us, 250);
    }
}
