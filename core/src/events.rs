//! A scope's recent transitions, numbered, so a watcher sees every one in order.
//!
//! The record keeps the last `CAPACITY` events of the last `TTL_US`: a watcher that reads the
//! record again gets every event after the last one it saw, or learns it fell behind (a gap
//! in the numbers) and must start again from the current state.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::record::LockType;

/// Events a record keeps.
pub const CAPACITY: usize = 32;
const TTL_US: u64 = 600_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A request was granted (directly, or handed the lock from the queue).
    Granted,
    /// A holder released (or a waiter granted meanwhile gave up).
    Released,
    /// A grant's lease ran out.
    Expired,
    /// An admin revoked a grant: it ends when its lease runs out.
    Revoked,
    /// A request joined the queue.
    Queued,
    /// A waiter left the queue without the lock (gave up, or stopped polling).
    Left,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Granted => "granted",
            EventKind::Released => "released",
            EventKind::Expired => "expired",
            EventKind::Revoked => "revoked",
            EventKind::Queued => "queued",
            EventKind::Left => "left",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Numbers every event of the scope, from 1, without gaps.
    pub seq: u64,
    pub kind: EventKind,
    pub holder: String,
    /// The grant's fencing token (0 for queue events).
    pub token: u64,
    /// The grant's id (`Grant::id`; 0 for queue events).
    pub grant: u64,
    pub lock_type: LockType,
    /// Lower bound of the time since it happened.
    pub age_floor_us: u64,
}

/// The recent events of one scope, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    /// The number of the latest event ever (0: none yet).
    pub last_seq: u64,
    pub events: Vec<Event>,
}

/// What a watcher that saw everything up to `after` gets from a log.
#[derive(Debug, PartialEq, Eq)]
pub enum Since<'a> {
    Events(&'a [Event]),
    /// Events after `after` were dropped: start again from the current state.
    Gap,
}

impl EventLog {
    pub fn push(&mut self, kind: EventKind, holder: &str, token: u64, grant: u64, lock_type: LockType) {
        self.last_seq += 1;
        self.events.push(Event { seq: self.last_seq, kind, holder: holder.to_string(), token, grant, lock_type, age_floor_us: 0 });
        let excess = self.events.len().saturating_sub(CAPACITY);
        self.events.drain(..excess);
    }

    pub fn advance(&mut self, elapsed_us: u64) {
        for e in &mut self.events {
            e.age_floor_us = e.age_floor_us.saturating_add(elapsed_us);
        }
        self.events.retain(|e| e.age_floor_us <= TTL_US);
    }

    /// The events after `after`, in order.
    pub fn since(&self, after: u64) -> Since<'_> {
        if after == self.last_seq {
            return Since::Events(&[]);
        }
        match self.events.first() {
            // A number this scope never reached (from elsewhere): start again too.
            _ if after > self.last_seq => Since::Gap,
            Some(first) if first.seq <= after + 1 => {
                let from = self.events.partition_point(|e| e.seq <= after);
                Since::Events(&self.events[from..])
            }
            _ => Since::Gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_gets_every_event_after_its_last_or_a_gap() {
        let mut log = EventLog::default();
        assert_eq!(log.since(0), Since::Events(&[]));
        for i in 0..40 {
            log.push(EventKind::Granted, &format!("h{i}"), i, i, LockType::Write);
        }
        assert_eq!(log.events.len(), CAPACITY);
        let Since::Events(after_30) = log.since(30) else { panic!() };
        assert_eq!(after_30.iter().map(|e| e.seq).collect::<Vec<_>>(), (31..=40).collect::<Vec<_>>());
        assert_eq!(log.since(8), Since::Events(&log.events[..]), "9 is the oldest kept");
        assert_eq!(log.since(7), Since::Gap);
        assert_eq!(log.since(40), Since::Events(&[]));
        assert_eq!(log.since(99), Since::Gap, "a number this scope never reached");
        log.advance(TTL_US + 1);
        assert!(log.events.is_empty());
        assert_eq!(log.since(39), Since::Gap);
        assert_eq!(log.since(40), Since::Events(&[]));
    }
}
