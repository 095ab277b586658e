//! What peers send is checked before it is stored or used (`body`, on every message). A peer
//! that follows the protocol never sends what fails these checks; a message that does is
//! refused (it changes nothing), counted, and reported to the runtime, which logs it. The node's
//! own values are checked by `LockRecord::check_invariants` where they are made: a failure
//! there is a bug of this node, not bad input.

use crate::prelude::*;

use super::message::{Ballot, Body, Key, Value};
use super::proof::{Link, Signed, MAX_KEY_BYTES};
use super::record::{Limits, LockRecord};
use super::roster::Roster;

/// Why a peer's value was refused.
pub type Invalid = String;

/// The longest scope name a peer may send (the HTTP API takes 200 bytes): a page of a sweep
/// (2048 names) must fit a frame, whatever names voters hold.
pub const MAX_SCOPE_BYTES: usize = 256;

/// Checks everything a peer's message carries that the node would store, count on from or
/// compare with: ballot rounds (a round at the top of the range would pin every later ballot
/// there, where a successor equals its ballot), scope names, register values, rosters.
pub fn body(body: &Body, limits: &Limits) -> Result<(), Invalid> {
    match body {
        Body::Prepare { key: k, ballot: b } => key(k).and(self::ballot(b)),
        Body::Accepted { key: k, ballot: b, signed: s } => key(k).and(self::ballot(b)).and(s.iter().try_for_each(signed)),
        Body::Accept { key: k, ballot: b, value: v } => key(k).and(self::ballot(b)).and(value(k, v, limits)),
        Body::Promise { key: k, ballot: b, accepted, .. } => {
            key(k).and(self::ballot(b))?;
            match accepted {
                Some(a) => self::ballot(&a.ballot).and(value(k, &a.value, limits)),
                None => Ok(()),
            }
        }
        Body::Refuse { key: k, ballot: b, why } => {
            key(k).and(self::ballot(b))?;
            match why {
                super::message::Refusal::Promised(p) => self::ballot(p),
                _ => Ok(()),
            }
        }
        Body::BootstrapOffer { roster: r } => roster(r),
        Body::Commit { links } => {
            if links.len() > MAX_LINKS {
                return Err(format!("{} rosters in one Commit, more than {MAX_LINKS}", links.len()));
            }
            links.iter().try_for_each(link)
        }
        Body::KeyList { keys, max_round, after, .. } => {
            round(*max_round)?;
            keys.iter().chain(after.iter()).try_for_each(|k| scope_name(k))
        }
        Body::ListKeys { after, .. } => after.iter().try_for_each(|k| scope_name(k)),
        Body::RosterPull { .. } => Ok(()),
        Body::BootstrapAck { signed: s, .. } => signed(s),
        Body::VouchAsk { .. } | Body::Leave => Ok(()),
        Body::Vouch { withholds, .. } if withholds.len() > MAX_WITHHOLDS => Err(format!("a vouch withholding {} nodes, more than {MAX_WITHHOLDS}", withholds.len())),
        Body::Vouch { .. } => Ok(()),
    }
}

/// Most nodes a vouch withholds: more than any roster lists.
pub const MAX_WITHHOLDS: usize = 4096;

/// Most links a Commit carries (a page of the chain is `node::CHAIN_PAGE`).
pub const MAX_LINKS: usize = 64;

fn link(link: &Link) -> Result<(), Invalid> {
    roster(&link.roster)?;
    ballot(&link.proof.ballot)?;
    if link.proof.signatures.len() > MAX_SIGNATURES {
        return Err(format!("a roster proof of {} signatures, more than {MAX_SIGNATURES}", link.proof.signatures.len()));
    }
    link.proof.signatures.iter().try_for_each(|(_, s)| signed(s))
}

/// Most signatures in a roster's proof: far above any roster's voters.
pub const MAX_SIGNATURES: usize = 1024;

fn signed(signed: &Signed) -> Result<(), Invalid> {
    if signed.public_key.len() > MAX_KEY_BYTES || signed.signature.len() > MAX_KEY_BYTES {
        return Err(format!("a public key or signature longer than {MAX_KEY_BYTES} bytes"));
    }
    Ok(())
}

fn round(round: u64) -> Result<(), Invalid> {
    if round >= COUNTER_BOUND {
        return Err(format!("ballot round {round}, beyond any round a cluster reaches"));
    }
    Ok(())
}

fn ballot(b: &Ballot) -> Result<(), Invalid> {
    round(b.round)
}

fn key(key: &Key) -> Result<(), Invalid> {
    match key {
        Key::Roster => Ok(()),
        Key::Scope(name) => scope_name(name),
    }
}

fn scope_name(name: &str) -> Result<(), Invalid> {
    if name.len() > MAX_SCOPE_BYTES {
        return Err(format!("a scope name of {} bytes, longer than {MAX_SCOPE_BYTES}", name.len()));
    }
    Ok(())
}

/// Checks a register value a peer sent (in an Accept or a Promise) for register `key`.
pub fn value(key: &Key, value: &Value, limits: &Limits) -> Result<(), Invalid> {
    match (key, value) {
        (Key::Scope(_), Value::Lock(record)) => lock_record(record, limits),
        (Key::Roster, Value::Roster(roster)) => self::roster(roster),
        (Key::Scope(_), Value::Roster(_)) => Err("a roster as the value of a scope".into()),
        (Key::Roster, Value::Lock(_)) => Err("a lock record as the value of the roster register".into()),
    }
}

/// Far above any count a record reaches (a grant a nanosecond for a century is below 2^62),
/// and far enough below the top of a u64 that counting on from it cannot overflow.
pub const COUNTER_BOUND: u64 = 1 << 62;

/// A lock record keeps its invariants (never two writers, one token per phase, unique
/// grant ids, nobody waiting on a free lock), the cluster's size limits, and counters that
/// an honest history could have reached.
pub fn lock_record(record: &LockRecord, limits: &Limits) -> Result<(), Invalid> {
    record.check_invariants()?;
    let counters = [
        ("last_token", record.last_token),
        ("next_lease_seq", record.next_lease_seq),
        ("next_arrival", record.next_arrival),
        ("log_seq", record.log_seq),
        ("events.last_seq", record.events.last_seq),
    ];
    if let Some((name, n)) = counters.iter().find(|(_, n)| *n >= COUNTER_BOUND) {
        return Err(format!("{name} is {n}, beyond any count a record reaches"));
    }
    if record.holders.len() > limits.max_readers.max(1) {
        return Err(format!("{} holders, more than the limit of {}", record.holders.len(), limits.max_readers));
    }
    if record.queue.len() > limits.max_waiters {
        return Err(format!("{} waiters, more than the limit of {}", record.queue.len(), limits.max_waiters));
    }
    if record.log.len() > limits.log_capacity {
        return Err(format!("a request log of {} entries, more than its capacity of {}", record.log.len(), limits.log_capacity));
    }
    Ok(())
}

/// A roster has voters, voters and members in order and each name once (lookups depend on
/// it), and a version.
pub fn roster(roster: &Roster) -> Result<(), Invalid> {
    if roster.voters.is_empty() {
        return Err("a roster without voters".into());
    }
    if roster.version == 0 || roster.version >= COUNTER_BOUND {
        return Err(format!("a roster of version {}", roster.version));
    }
    round(roster.round_floor)?;
    if roster.target != 0 && !super::roster::valid_target(roster.target) {
        return Err(format!("a roster with a voter target of {}", roster.target));
    }
    if roster.voters.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err("a roster whose voters are out of order or named twice".into());
    }
    if roster.members.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err("a roster whose members are out of order or named twice".into());
    }
    if roster.members.iter().any(|m| roster.voters.iter().any(|v| v.name == m.name)) {
        return Err("a roster naming one node both voter and member".into());
    }
    if roster.banned.len() > super::roster::MAX_BANS || roster.banned.windows(2).any(|w| w[0] >= w[1]) {
        return Err("a roster whose bans are too many, out of order or named twice".into());
    }
    let listed = || roster.voters.iter().chain(&roster.members);
    if listed().any(|m| roster.is_banned(&m.name, &m.key)) {
        return Err("a roster that bans one of its own members".into());
    }
    if listed().any(|m| listed().any(|n| n.key == m.key && n.name != m.name)) {
        return Err("a roster naming one certificate key under two names".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Grant, LockType, Priority, RequestId};
    use crate::roster::NodeId;

    fn grant(holder: &str, token: u64, id: u64, lock_type: LockType) -> Grant {
        Grant {
            holder: holder.into(),
            token,
            id,
            reported: true,
            pickup_us: 0,
            lock_type,
            lease_us: 1_000,
            auto: None,
            node: "n1".into(),
            priority: Priority::Normal,
            reason: None,
            request_id: RequestId(holder.into()),
            lease_seq: id,
            elapsed_floor_us: 0,
            revoked: false,
            lock_delay_us: 0,
            held_floor_us: 0,
        }
    }

    #[test]
    fn records_that_break_an_invariant_or_a_limit_are_refused() {
        let limits = Limits::default();
        let ok = LockRecord { last_token: 1, next_lease_seq: 1, holders: vec![grant("a", 1, 1, LockType::Write)], ..LockRecord::default() };
        assert_eq!(lock_record(&ok, &limits), Ok(()));
        let two_writers = LockRecord { holders: vec![grant("a", 1, 1, LockType::Write), grant("b", 1, 2, LockType::Write)], next_lease_seq: 2, last_token: 1, ..LockRecord::default() };
        assert!(lock_record(&two_writers, &limits).unwrap_err().contains("writer shares"));
        let readers: Vec<Grant> = (1..=3).map(|i| grant(&format!("r{i}"), 1, i, LockType::Read)).collect();
        let small = Limits { max_readers: 2, ..limits };
        let many = LockRecord { holders: readers, next_lease_seq: 3, last_token: 1, ..LockRecord::default() };
        assert!(lock_record(&many, &small).unwrap_err().contains("more than the limit"));
        assert!(value(&Key::Roster, &Value::Lock(ok.clone()), &limits).is_err());
        // Counters at the top of the range would overflow as soon as they count on.
        let top = LockRecord { last_token: u64::MAX, ..ok.clone() };
        assert!(lock_record(&top, &limits).unwrap_err().contains("last_token"));
        let mut events = ok;
        events.events.last_seq = u64::MAX;
        assert!(lock_record(&events, &limits).unwrap_err().contains("events.last_seq"));
    }

    #[test]
    fn rosters_need_voters_in_order_and_a_version() {
        let r = Roster::first(vec![NodeId::new("a", 1, [1; 32]), NodeId::new("b", 2, [2; 32])], 5);
        assert_eq!(roster(&r), Ok(()));
        assert!(roster(&Roster { voters: vec![], ..r.clone() }).is_err());
        assert!(roster(&Roster { version: 0, ..r.clone() }).is_err());
        let mut swapped = r.clone();
        swapped.voters.reverse();
        assert!(roster(&swapped).is_err());
        let twice = Roster { voters: vec![NodeId::new("a", 1, [1; 32]), NodeId::new("a", 2, [1; 32])], ..r.clone() };
        assert!(roster(&twice).is_err());
        let both = Roster { members: vec![NodeId::new("a", 3, [1; 32])], ..r };
        assert!(roster(&both).is_err());
    }
}
