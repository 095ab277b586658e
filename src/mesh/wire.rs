//! What travels between nodes, and its encoding: bincode 2 with a decode limit, since peer
//! input is untrusted even from an authenticated peer.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::core::Envelope;

/// Largest frame a node accepts; a bigger one closes the stream with an error.
pub const MAX_FRAME: usize = 8 << 20;

/// What a node says about itself and the peers it knows, on every new connection and
/// periodically after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub incarnation: u64,
    /// The hash of its certificate key (`mesh::tls::key_hash`); checked against the
    /// certificate in the peer's own Hello, only gossip in another's.
    pub key: crate::core::KeyHash,
    pub mesh_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Which life of the process this is (SWIM tells restarts apart by it).
    pub bump: u64,
    /// Its zone (`--zone`), empty for none: placement spreads voters over zones.
    pub zone: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The sender, the cluster it belongs to (if any), the peers it knows, and the members it
    /// has seen down for `--replace-after-secs` (placement counts a voter failed only if a
    /// majority of the voters report it so).
    Hello { me: PeerInfo, cluster_id: Option<u128>, roster_version: u64, peers: Vec<PeerInfo>, leaving: bool, down: Vec<crate::core::NodeId> },
    /// A protocol message of the core.
    Core(Envelope),
    /// A member that does not vote asks a voter for news of these scopes (its watches and
    /// waiting requests), for a few seconds (`agent/runtime/news.rs`).
    Subscribe { from: crate::core::NodeId, scopes: Vec<String> },
    /// A voter's news of a scope a member subscribed to: a value with events up to
    /// `last_seq`, held by these requests' grants. A hint to read, never a substitute.
    News { from: crate::core::NodeId, scope: String, last_seq: u64, holders: Vec<crate::core::RequestId> },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("frame does not encode: {0}")]
    Encode(String),
    #[error("frame of {0} bytes is over the limit")]
    TooBig(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encodes a frame behind its length (4 bytes, big-endian), as streams carry them.
pub fn encode_prefixed(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut bytes = vec![0u8; 4];
    bincode::serde::encode_into_std_write(frame, &mut bytes, config()).map_err(|e| WireError::Encode(e.to_string()))?;
    let len = u32::try_from(bytes.len() - 4).ok().filter(|len| *len as usize <= MAX_FRAME).ok_or(WireError::TooBig(bytes.len() - 4))?;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    Ok(bytes)
}

/// Decodes exactly one frame from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    let (frame, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| WireError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::Trailing(bytes.len() - used));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error_not_a_panic() {
        let me = PeerInfo { name: "a".into(), incarnation: 7, key: [7; 32], mesh_addr: "127.0.0.1:1".parse().unwrap(), http_addr: "127.0.0.1:2".parse().unwrap(), bump: 1, zone: String::new() };
        let frame = Frame::Hello { me, cluster_id: Some(3), roster_version: 1, peers: vec![], leaving: false, down: vec![] };
        let prefixed = encode_prefixed(&frame).unwrap();
        let bytes = prefixed[4..].to_vec();
        assert_eq!(u32::from_be_bytes([prefixed[0], prefixed[1], prefixed[2], prefixed[3]]) as usize, bytes.len());
        assert_eq!(decode(&bytes).unwrap(), frame);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(WireError::Trailing(1))));
        for garbage in [&b""[..], &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..], &[1, 255, 255, 255, 255, 15][..]] {
            assert!(decode(garbage).is_err());
        }
        // A length prefix claiming far more than the limit is refused without allocating it.
        let huge = [0u8, 253, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(decode(&huge).is_err());
    }

    /// Regression (review, PROTOCOL §11.14): a voter holding 700,000 scopes answers a sweep's
    /// listing with frames the mesh can send. Its listing was one message, past MAX_FRAME
    /// beyond ~650,000 `scale-N` names: dropped, so no sweep and no roster change could ever
    /// complete again.
    #[test]
    fn a_voter_with_700_000_scopes_lists_them_in_frames_that_fit() {
        use crate::core::message::AcceptedValue;
        use crate::core::{Ballot, Body, Config, Durable, Key, LockRecord, Node, NodeId, Roster, Time, Value};
        let (me, sweeper) = (NodeId::new("node-1", 1, [1; 32]), NodeId::new("node-2", 2, [2; 32]));
        let roster = Roster::first(vec![me.clone(), sweeper.clone(), NodeId::new("node-3", 3, [3; 32])], 5);
        let proof = crate::core::Proof { ballot: Ballot::BOOTSTRAP, under: roster.id(), signatures: Vec::new() };
        let mut durable = Durable { chain: vec![crate::core::Link { roster: roster.clone(), proof }], ..Durable::default() };
        let accepted = AcceptedValue { ballot: Ballot { round: 1, proposer: 2 }, value: Value::Lock(LockRecord::default()), roster: Some(roster.id()) };
        for i in 0..700_000 {
            let slot = crate::core::acceptor::Slot { promised: Some(accepted.ballot), accepted: Some(accepted.clone()) };
            durable.slots.insert(Key::Scope(format!("scale-{i}")), slot);
        }
        let mut node = Node::new(Config::default(), me.clone(), durable, Time(0), 1, Box::new(crate::core::Ed25519Signer::from_seed(&[1; 32])));
        // The other voters vouch for the sweeper (it asked them at its start).
        let asks = node.drain().messages;
        for ask in asks {
            let Body::VouchAsk { at } = ask.body else { panic!("a vouch ask") };
            let vouch = Body::Vouch { at, withholds: Vec::new() };
            node.handle_message(Time(0), Envelope { from: ask.to, to: me.clone(), roster: Some(roster.id()), body: vouch });
        }
        let (mut after, mut listed, mut pages) = (None, 0, 0);
        loop {
            let ask = Body::ListKeys { sweep: 9, after: after.clone() };
            node.handle_message(Time(1), Envelope { from: sweeper.clone(), to: me.clone(), roster: Some(roster.id()), body: ask });
            let out = node.drain();
            let [answer] = &out.messages[..] else { panic!("one answer: {:?}", out.messages.len()) };
            encode_prefixed(&Frame::Core(answer.clone())).expect("every page fits a frame");
            let Body::KeyList { keys, more, .. } = &answer.body else { panic!("a key list") };
            listed += keys.len();
            pages += 1;
            if !more {
                break;
            }
            after = keys.last().cloned();
        }
        assert_eq!((listed, pages), (700_000, 700_000usize.div_ceil(Config::default().sweep_page)));
    }

    /// A sweep's listing is one page of at most `sweep_page` names of at most 200 characters:
    /// it always fits a frame, however many scopes a voter holds (review: one listing of
    /// ~650,000 `scale-N` names did not, and no roster change could complete after that).
    #[test]
    fn a_full_page_of_the_longest_scope_names_fits_a_frame() {
        use crate::core::{Body, Config, NodeId};
        let page = Config::default().sweep_page;
        let keys: Vec<String> = (0..page).map(|i| format!("{i:0>200}")).collect();
        let body = Body::KeyList { sweep: 1, after: Some("x".repeat(200)), keys, more: true, max_round: u64::MAX };
        let frame = Frame::Core(crate::core::Envelope { from: NodeId::new("node-1", 1, [1; 32]), to: NodeId::new("node-2", 2, [2; 32]), roster: None, body });
        let bytes = encode_prefixed(&frame).expect("a full page encodes");
        assert!(bytes.len() < MAX_FRAME / 8, "{} bytes", bytes.len());
    }
}
