//! Per-peer rate limits at the mesh's door. Handshakes are limited per remote IP address
//! (a TLS handshake costs signatures and a certificate check, so a flood of them is the
//! cheapest way to load a node); frames and membership datagrams are limited per certificate
//! key for peers that are not members of the installed roster. Members follow the protocol
//! (the threat model, docs/PROTOCOL.md §1) and are held back only by QUIC flow control, so a
//! busy cluster is never slowed by its own limits; a stranger — a removed node, another
//! cluster's, a device never admitted — gets what joining needs and no more. Over the limit, a
//! handshake is refused and a frame dropped, as a lossy network would: the protocol retries.
//!
//! A source address in a UDP packet can be forged, so handshakes count per address twice
//! over: an address over its limit is first asked to prove it is reachable there (a QUIC
//! retry: stateless, one packet), and only handshakes from proven addresses count against the
//! proven bucket. Someone forging a member's address can use up the unproven bucket, not the
//! member's handshakes.
//!
//! Token buckets: each holds at most `burst` tokens and gains `per_sec` a second; a handshake
//! or a frame takes one.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::core::KeyHash;

/// How fast a bucket fills and how much it holds.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

/// Handshakes from one IP address. A node dials each peer once and keeps the connection, so
/// even a site of many nodes behind one NAT address stays far below this.
pub const HANDSHAKES: Rate = Rate { per_sec: 32.0, burst: 128.0 };
/// Frames and datagrams from one certificate key that is not a member's: a joining or pending
/// node greets every tick and pulls a chain page at a time, well below this.
pub const STRANGER_FRAMES: Rate = Rate { per_sec: 100.0, burst: 400.0 };
/// Peers tracked per kind; buckets that have filled up again are forgotten first, and beyond
/// this a new peer is refused until some have.
const TRACKED: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One kind's buckets, by peer.
struct Buckets<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    /// Peers whose first refusal was logged (once each).
    logged: HashSet<K>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate) -> Buckets<K> {
        Buckets { rate, buckets: HashMap::new(), logged: HashSet::new() }
    }

    /// Takes a token for `peer` at `now`; `None` if there is none, with whether this is the
    /// peer's first refusal (to be logged).
    fn take(&mut self, peer: K, now: Instant) -> Result<(), bool> {
        let rate = self.rate;
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= TRACKED {
            self.buckets.retain(|_, b| fill(*b, rate, now) < rate.burst);
            if self.buckets.len() >= TRACKED {
                return Err(false);
            }
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket { tokens: rate.burst, at: now });
        let tokens = fill(*bucket, rate, now);
        if tokens >= 1.0 {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            return Ok(());
        }
        *bucket = Bucket { tokens, at: now };
        if self.logged.len() >= TRACKED {
            self.logged.clear();
        }
        Err(self.logged.insert(peer))
    }
}

/// The tokens a bucket holds at `now`.
fn fill(bucket: Bucket, rate: Rate, now: Instant) -> f64 {
    let secs = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + secs * rate.per_sec).min(rate.burst)
}

/// What the mesh does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Accept,
    /// Ask the peer to prove its address first (`Incoming::retry`).
    Retry,
    Refuse,
}

/// The mesh's limits, and counts of what they turned away (exported as metrics).
pub struct Limits {
    /// By address, and whether the address is proven (`Incoming::remote_address_validated`).
    handshakes: Mutex<Buckets<(IpAddr, bool)>>,
    frames: Mutex<Buckets<KeyHash>>,
    /// Keys of the installed roster's members: not limited.
    members: Mutex<HashSet<KeyHash>>,
    pub handshakes_refused: AtomicU64,
    pub frames_dropped: AtomicU64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(HANDSHAKES, STRANGER_FRAMES)
    }
}

impl Limits {
    pub fn new(handshakes: Rate, frames: Rate) -> Limits {
        Limits {
            handshakes: Mutex::new(Buckets::new(handshakes)),
            frames: Mutex::new(Buckets::new(frames)),
            members: Mutex::new(HashSet::new()),
            handshakes_refused: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
        }
    }

    /// The keys of the installed roster's members, whose frames are not limited.
    pub fn set_members(&self, keys: impl IntoIterator<Item = KeyHash>) {
        if let Ok(mut members) = self.members.lock() {
            *members = keys.into_iter().collect();
        }
        // Members' buckets go: a member that leaves starts as a stranger with a full bucket.
        if let (Ok(members), Ok(mut frames)) = (self.members.lock(), self.frames.lock()) {
            frames.buckets.retain(|k, _| !members.contains(k));
        }
    }

    /// What to do with a handshake from `ip` at `now`; `proven` if the peer proved it can be
    /// reached at that address (answered a retry).
    pub fn handshake(&self, ip: IpAddr, proven: bool, now: Instant) -> Handshake {
        let Ok(mut buckets) = self.handshakes.lock() else { return Handshake::Accept };
        match buckets.take((ip, proven), now) {
            Ok(()) => Handshake::Accept,
            Err(_) if !proven => Handshake::Retry,
            Err(first) => {
                self.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                if first {
                    tracing::warn!(%ip, "mesh: refused handshakes from an address that opens too many (rate limit; logged once per address)");
                }
                Handshake::Refuse
            }
        }
    }

    /// Whether a frame or datagram from the certificate key `key` (at `remote`) may be taken
    /// at `now`.
    pub fn frame(&self, key: &KeyHash, remote: SocketAddr, now: Instant) -> bool {
        if self.members.lock().is_ok_and(|m| m.contains(key)) {
            return true;
        }
        let Ok(mut buckets) = self.frames.lock() else { return true };
        match buckets.take(*key, now) {
            Ok(()) => true,
            Err(first) => {
                self.frames_dropped.fetch_add(1, Ordering::Relaxed);
                if first {
                    tracing::warn!(%remote, "mesh: dropped frames from a peer that is not a member and sends too many (rate limit; logged once per key)");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SLOW: Rate = Rate { per_sec: 2.0, burst: 3.0 };
    const REMOTE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[test]
    fn a_bucket_lets_its_burst_through_then_its_rate() {
        let limits = Limits::new(SLOW, SLOW);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let ok = |at| limits.handshake(ip, true, at) == Handshake::Accept;
        assert!((0..3).all(|_| ok(t0)), "the burst");
        assert!(!ok(t0), "then nothing");
        assert!(!ok(t0 + Duration::from_millis(400)), "0.8 of a token");
        assert!(ok(t0 + Duration::from_millis(500)), "one token after half a second");
        assert!(!ok(t0 + Duration::from_millis(500)));
        // A long pause fills the bucket to its burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| ok(later)).count(), 3);
        assert_eq!(limits.handshakes_refused.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn handshakes_from_unproven_addresses_are_asked_to_prove_them_not_refused() {
        let limits = Limits::new(SLOW, SLOW);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        // Someone forging the address uses up the unproven bucket...
        assert!((0..3).all(|_| limits.handshake(ip, false, t0) == Handshake::Accept));
        assert_eq!(limits.handshake(ip, false, t0), Handshake::Retry);
        // ...and the peer really there answers the retry and gets in.
        assert_eq!(limits.handshake(ip, true, t0), Handshake::Accept);
        assert_eq!(limits.handshakes_refused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn addresses_and_keys_have_buckets_of_their_own() {
        let limits = Limits::new(SLOW, SLOW);
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!((0..3).all(|_| limits.handshake(a, true, t0) == Handshake::Accept));
        assert_eq!(limits.handshake(a, true, t0), Handshake::Refuse);
        assert_eq!(limits.handshake(b, true, t0), Handshake::Accept, "another address is not held back");
        assert!((0..3).all(|_| limits.frame(&[1; 32], REMOTE, t0)));
        assert!(!limits.frame(&[1; 32], REMOTE, t0));
        assert!(limits.frame(&[2; 32], REMOTE, t0), "another key is not held back");
        assert_eq!(limits.frames_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn members_frames_are_not_limited_and_a_removed_member_is_a_stranger_again() {
        let limits = Limits::new(SLOW, SLOW);
        let t0 = Instant::now();
        limits.set_members([[7; 32]]);
        assert!((0..1000).all(|_| limits.frame(&[7; 32], REMOTE, t0)));
        limits.set_members([]);
        assert_eq!((0..10).filter(|_| limits.frame(&[7; 32], REMOTE, t0)).count(), 3, "removed: a stranger's burst");
    }

    #[test]
    fn past_the_tracked_peers_idle_buckets_are_forgotten_first() {
        let mut buckets = Buckets::new(SLOW);
        let t0 = Instant::now();
        for i in 0..TRACKED as u32 {
            assert!(buckets.take(i, t0).is_ok());
        }
        assert!(buckets.take(u32::MAX, t0).is_err(), "full, and every bucket is in use");
        // A second later every bucket has filled up again: they go, and the new peer is let in.
        assert!(buckets.take(u32::MAX, t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(buckets.buckets.len(), 1);
    }
}
