//! SWIM membership (foca) over QUIC datagrams: who is up, suspect or down, gossiped through
//! the cluster. The lock protocol never counts on it for safety: the roster, not this view,
//! decides quorums; SWIM only says where peers are and which are known to be down.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use foca::{AccumulatingRuntime, Codec, Foca, Header, Identity, Member, NoCustomBroadcast, OwnedNotification, Timer};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Largest SWIM packet: below the QUIC datagram size right after the handshake (~1162 bytes,
/// before path MTU discovery raises it; a bigger datagram is dropped), the same on every node.
pub const MAX_PACKET: usize = 1100;
const DECODE_LIMIT: usize = 64 * 1024;

/// A member as SWIM knows it. `name` is its address (unique, bound to its certificate);
/// `bump` tells a restarted process from its previous life, so it wins and rejoins at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SwimId {
    pub name: String,
    pub incarnation: u64,
    pub mesh_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub bump: u64,
}

impl Identity for SwimId {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(SwimId { bump: self.bump.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// bincode 2 with a decode limit; one header, then members, each decoded exactly once.
pub struct SwimCodec;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

#[derive(Debug, thiserror::Error)]
#[error("swim codec: {0}")]
pub struct CodecError(String);

fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError(e.to_string()))?;
    if buf.remaining_mut() < bytes.len() {
        // Never leave the buffer half-written.
        return Err(CodecError("no room".into()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(buf.chunk(), config()).map_err(|e| CodecError(e.to_string()))?;
    buf.advance(used);
    Ok(value)
}

impl Codec<SwimId> for SwimCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<SwimId>, buf: impl BufMut) -> Result<(), CodecError> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<SwimId>, CodecError> {
        take(buf)
    }

    fn encode_member(&mut self, member: &Member<SwimId>, buf: impl BufMut) -> Result<(), CodecError> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<SwimId>, CodecError> {
        take(buf)
    }
}


/// The sender's name claimed by a SWIM packet (its header's source), for the mesh to check
/// against the certificate of the connection it came on.
pub fn claimed_sender(packet: &[u8]) -> Option<String> {
    let (header, _): (Header<SwimId>, usize) = bincode::serde::decode_from_slice(packet, config()).ok()?;
    Some(header.src.name)
}

/// Foca, its timers (a heap, delivered in order), and its outputs.
pub struct Swim {
    foca: Foca<SwimId, SwimCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<SwimId>,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    seq: u64,
}

/// Timers sort by time, then insertion; the payload itself takes no part in the order.
struct TimerSlot(Timer<SwimId>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// What SWIM wants done: datagrams to send and membership changes.
#[derive(Default)]
pub struct SwimOutput {
    pub send: Vec<(SwimId, Bytes)>,
    pub notifications: Vec<OwnedNotification<SwimId>>,
}

impl Swim {
    pub fn new(me: SwimId, seed: u64) -> Swim {
        let mut config = foca::Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN));
        config.max_packet_size = NonZeroUsize::new(MAX_PACKET).unwrap_or(NonZeroUsize::MIN);
        // Faster than the LAN preset's probing, so a dead voter is known within seconds.
        config.probe_period = Duration::from_millis(500);
        config.probe_rtt = Duration::from_millis(200);
        config.suspect_to_down_after = Duration::from_secs(3);
        // Remember down members for as long as the process lives: the runtime reaps voters
        // only after `reap_after` (72 h by default), and fails fast for known-down voters.
        config.remove_down_after = None;
        let foca = Foca::new(me, config, SmallRng::seed_from_u64(seed), SwimCodec);
        Swim { foca, runtime: AccumulatingRuntime::new(), timers: BinaryHeap::new(), seq: 0 }
    }

    pub fn announce(&mut self, to: SwimId) {
        if let Err(e) = self.foca.announce(to, &mut self.runtime) {
            tracing::debug!(error = %e, "swim: announce failed");
        }
    }

    pub fn handle_packet(&mut self, packet: &[u8]) {
        if let Err(e) = self.foca.handle_data(packet, &mut self.runtime) {
            tracing::debug!(error = %e, "swim: dropped a packet");
        }
    }

    pub fn leave(&mut self) {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "swim: leave failed");
        }
    }

    /// Fires every timer that is due.
    pub fn handle_timers(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            if let Some(Reverse((_, _, TimerSlot(timer)))) = self.timers.pop() {
                if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!(error = %e, "swim: timer failed");
                }
            }
        }
    }

    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Collects what to send and what changed; schedules the timers foca asked for.
    pub fn drain(&mut self, now: Instant) -> SwimOutput {
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.seq += 1;
            self.timers.push(Reverse((now + after, self.seq, TimerSlot(timer))));
        }
        let mut out = SwimOutput::default();
        while let Some(item) = self.runtime.to_send() {
            out.send.push(item);
        }
        while let Some(n) = self.runtime.to_notify() {
            out.notifications.push(n);
        }
        out
    }

    /// Every member SWIM has an opinion on, with that opinion.
    pub fn members(&self) -> impl Iterator<Item = (&SwimId, foca::State)> {
        self.foca.iter_membership_state().map(|m| (m.id(), m.state()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, bump: u64) -> SwimId {
        SwimId { name: name.into(), incarnation: 1, mesh_addr: "127.0.0.1:1".parse().unwrap(), http_addr: "127.0.0.1:2".parse().unwrap(), bump }
    }

    /// Two in-memory members find each other, and one is declared down when it goes quiet.
    #[test]
    fn members_meet_and_a_silent_one_goes_down() {
        let t0 = Instant::now();
        let mut a = Swim::new(id("a", 1), 1);
        let mut b = Swim::new(id("b", 1), 2);
        a.announce(id("b", 1));
        let mut now = t0;
        let mut b_alive = true;
        let mut a_saw_b_down = false;
        for step in 0..200 {
            now += Duration::from_millis(50);
            if step == 40 {
                b_alive = false;
            }
            a.handle_timers(now);
            if b_alive {
                b.handle_timers(now);
            }
            for _ in 0..4 {
                let out_a = a.drain(now);
                let out_b = b.drain(now);
                a_saw_b_down |= out_a.notifications.iter().any(|n| matches!(n, OwnedNotification::MemberDown(m) if m.name == "b"));
                for (to, packet) in out_a.send {
                    assert!(packet.len() <= MAX_PACKET);
                    if to.name == "b" && b_alive {
                        assert_eq!(claimed_sender(&packet).as_deref(), Some("a"));
                        b.handle_packet(&packet);
                    }
                }
                for (to, packet) in out_b.send {
                    if to.name == "a" && b_alive {
                        a.handle_packet(&packet);
                    }
                }
            }
            if step == 30 {
                assert!(a.members().any(|(m, s)| m.name == "b" && s == foca::State::Alive));
                assert!(b.members().any(|(m, s)| m.name == "a" && s == foca::State::Alive));
            }
        }
        assert!(a_saw_b_down, "a never declared the silent b down");
        // Garbage is dropped, not a panic.
        a.handle_packet(b"\xff\xff\xff\x00garbage");
    }
}
