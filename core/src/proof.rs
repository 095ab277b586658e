//! Proof that a roster is chosen: signatures of a majority of the voters it was chosen by.
//!
//! A voter that accepts a roster value signs the whole value with its node key (the key of its
//! certificate, whose hash is its `NodeId::key`), together with the ballot and the roster the
//! ballot ran under. A majority of those voters' signatures over one ballot prove the value
//! chosen: members follow the protocol, so a majority accepted it there. The first roster is
//! signed by every one of its voters (their bootstrap acknowledgements), and its hash is the
//! cluster's id. A node installs a roster only with such a proof, checked against the roster it
//! has installed (`Link::verify`), so every installed roster is chained back to the first: a
//! node never admitted, a removed voter, another cluster's node can send a `Commit`, but not
//! one that verifies (docs/PROTOCOL.md §7, "Rosters with proof").

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::message::Ballot;
use super::roster::{KeyHash, NodeId, Roster, RosterId};

/// Signs with this node's key: the runtime signs with its certificate's private key; the
/// simulator and the tests with Ed25519 keys made from a seed (`Ed25519Signer`).
pub trait Signer: Send {
    /// The public key, as a DER SubjectPublicKeyInfo: its SHA-256 is the node's `NodeId::key`.
    fn public_key(&self) -> &[u8];
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// An Ed25519 key made from a 32-byte seed (deterministic: the simulator's nodes have them).
pub struct Ed25519Signer {
    pair: ring::signature::Ed25519KeyPair,
    spki: Vec<u8>,
}

/// The DER SubjectPublicKeyInfo before an Ed25519 public key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// The DER SubjectPublicKeyInfo before an uncompressed P-256 point (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl Ed25519Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Ed25519Signer {
        use ring::signature::KeyPair;
        // `from_seed_unchecked` cannot fail on a 32-byte seed.
        let pair = match ring::signature::Ed25519KeyPair::from_seed_unchecked(seed) {
            Ok(pair) => pair,
            Err(_) => unreachable!("an Ed25519 seed is any 32 bytes"),
        };
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ed25519Signer { pair, spki }
    }

    /// The key hash a node with this key has (`NodeId::key`).
    pub fn key_hash(&self) -> KeyHash {
        key_hash(&self.spki)
    }
}

impl Signer for Ed25519Signer {
    fn public_key(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// SHA-256 of a DER SubjectPublicKeyInfo: a node's `NodeId::key`.
pub fn key_hash(spki: &[u8]) -> KeyHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Whether `signature` over `message` was made with the key `spki` (P-256 ECDSA with SHA-256,
/// or Ed25519), and that key's hash is `key`.
pub fn verify_signature(key: &KeyHash, spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519};
    if key_hash(spki) != *key {
        return false;
    }
    if let Some(point) = spki.strip_prefix(&P256_SPKI_PREFIX[..]).filter(|p| p.len() == 65) {
        return UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(message, signature).is_ok();
    }
    if let Some(public) = spki.strip_prefix(&ED25519_SPKI_PREFIX[..]).filter(|p| p.len() == 32) {
        return UnparsedPublicKey::new(&ED25519, public).verify(message, signature).is_ok();
    }
    false
}

/// A voter's signature over a roster value it accepted, with the public key it was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Signatures over one roster value at one ballot, by voters of the roster `under` that
/// ballot ran under (for the first roster: the roster itself, at `Ballot::BOOTSTRAP`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub ballot: Ballot,
    pub under: RosterId,
    pub signatures: Vec<(NodeId, Signed)>,
}

/// A chosen roster with its proof: a node keeps the chain of them from the first roster, and
/// hands it to members that are behind and to nodes that join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub roster: Roster,
    pub proof: Proof,
}

/// Longest public key or signature taken from a peer (a P-256 SPKI is 91 bytes, its
/// signature at most 72).
pub const MAX_KEY_BYTES: usize = 256;

/// What a voter signs when it accepts `roster` at `ballot` under roster `under`: everything a
/// forged copy could change.
pub fn statement(ballot: Ballot, under: RosterId, roster: &Roster) -> Vec<u8> {
    let mut out = b"lockmesh roster accepted/1".to_vec();
    out.extend_from_slice(&ballot.round.to_le_bytes());
    out.extend_from_slice(&ballot.proposer.to_le_bytes());
    out.extend_from_slice(&under.version.to_le_bytes());
    out.extend_from_slice(&under.digest.to_le_bytes());
    roster.encode(&mut |bytes| out.extend_from_slice(bytes));
    out
}

/// Signs `roster` as accepted at `ballot` under `under`.
pub fn sign(signer: &dyn Signer, ballot: Ballot, under: RosterId, roster: &Roster) -> Signed {
    Signed { public_key: signer.public_key().to_vec(), signature: signer.sign(&statement(ballot, under, roster)) }
}

/// Why a link was not installed.
pub type Unproven = &'static str;

impl Link {
    /// Whether this link is proven from `installed` (the roster this node has installed, or
    /// `None` before it belongs to a cluster, when only a first roster can be), and newer
    /// than it. `cluster`: the cluster id the operator gave (`--cluster-id`), if any.
    pub fn verify(&self, installed: Option<&Roster>, cluster: Option<u128>) -> Result<(), Unproven> {
        let (roster, proof) = (&self.roster, &self.proof);
        let signers: &Roster = match installed {
            None => {
                if roster.version != 1 || *roster != Roster::first(roster.voters.clone(), roster.target) {
                    return Err("a first roster that is not the first roster of its voters");
                }
                if proof.ballot != Ballot::BOOTSTRAP || proof.under != roster.id() {
                    return Err("a first roster proven at another ballot or roster");
                }
                if cluster.is_some_and(|c| c != roster.cluster_id) {
                    return Err("a first roster of another cluster than the one given to join");
                }
                roster
            }
            Some(current) => {
                if roster.cluster_id != current.cluster_id {
                    return Err("a roster of another cluster");
                }
                if !roster.is_newer_than(current) {
                    return Err("a roster not newer than the installed one");
                }
                if proof.under != current.id() {
                    return Err("a roster proven under another roster than the installed one");
                }
                current
            }
        };
        // The first roster: every voter signs. Later ones: a majority of the previous voters.
        let needed = if installed.is_none() { signers.voters.len() } else { signers.majority() };
        let message = statement(proof.ballot, proof.under, roster);
        let mut counted: Vec<&NodeId> = Vec::new();
        for (voter, signed) in &proof.signatures {
            if counted.contains(&voter) || !signers.contains(voter) {
                continue;
            }
            if !verify_signature(&voter.key, &signed.public_key, &message, &signed.signature) {
                return Err("a signature that does not verify");
            }
            counted.push(voter);
        }
        if counted.len() < needed {
            return Err("too few voters' signatures");
        }
        // A roster that removes voters: a majority of those it keeps signed too (as the
        // proposer counts, `proposer::on_vote`).
        if installed.is_some() && !signers.voters.iter().all(|v| roster.contains(v)) {
            let kept = counted.iter().filter(|v| roster.contains(v)).count();
            if kept < roster.majority() {
                return Err("too few signatures of the voters the roster keeps");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::RosterChange;

    fn signer(i: u8) -> Ed25519Signer {
        Ed25519Signer::from_seed(&[i; 32])
    }

    fn node(name: &str, i: u8) -> NodeId {
        NodeId::new(name, i as u64, signer(i).key_hash())
    }

    fn signed_by(roster: &Roster, ballot: Ballot, under: RosterId, by: &[(NodeId, u8)]) -> Link {
        let signatures = by.iter().map(|(id, i)| (id.clone(), sign(&signer(*i), ballot, under, roster))).collect();
        Link { roster: roster.clone(), proof: Proof { ballot, under, signatures } }
    }

    #[test]
    fn a_chain_is_proven_link_by_link_and_a_forgery_is_not() {
        let (a, b, c) = (node("a", 1), node("b", 2), node("c", 3));
        let first = Roster::first(vec![a.clone(), b.clone(), c.clone()], 5);
        let all = [(a.clone(), 1), (b.clone(), 2), (c.clone(), 3)];
        let boot = signed_by(&first, Ballot::BOOTSTRAP, first.id(), &all);
        assert_eq!(boot.verify(None, None), Ok(()));
        assert_eq!(boot.verify(None, Some(first.cluster_id)), Ok(()));
        assert!(boot.verify(None, Some(first.cluster_id ^ 1)).is_err(), "another cluster's id");
        // Every voter signs the first roster.
        assert!(signed_by(&first, Ballot::BOOTSTRAP, first.id(), &all[..2]).verify(None, None).is_err());

        let ballot = Ballot { round: 9, proposer: 1 };
        let second = first.changed(&RosterChange::Remove(c.clone())).unwrap();
        let link = signed_by(&second, ballot, first.id(), &all[..2]);
        assert_eq!(link.verify(Some(&first), None), Ok(()));
        assert!(link.verify(None, None).is_err(), "only a first roster starts a chain");
        assert!(link.verify(Some(&second), None).is_err(), "not newer");
        // A removal needs a majority of the voters it keeps, too: c's own signature and b's
        // are a majority of the first roster, not of {a, b}.
        assert_eq!(signed_by(&second, ballot, first.id(), &[all[1].clone(), all[2].clone()]).verify(Some(&first), None), Err("too few signatures of the voters the roster keeps"));
        // One voter is no majority, and a signature counts once.
        assert!(signed_by(&second, ballot, first.id(), &all[..1]).verify(Some(&first), None).is_err());
        assert!(signed_by(&second, ballot, first.id(), &[all[0].clone(), all[0].clone()]).verify(Some(&first), None).is_err());
        // The removed voter `c` and a stranger cannot make the next link with `c`'s help.
        let d = node("d", 4);
        let forged = second.changed(&RosterChange::Add(d.clone())).unwrap();
        let forgery = signed_by(&forged, ballot, second.id(), &[(c.clone(), 3), (d.clone(), 4), (a.clone(), 4)]);
        assert!(forgery.verify(Some(&second), None).is_err());
        // A signature is over the whole value: changing what was signed breaks it.
        let mut tampered = link.clone();
        tampered.roster.round_floor += 1;
        assert_eq!(tampered.verify(Some(&first), None), Err("a signature that does not verify"));
        let mut swept = second.clone();
        swept.sweep_done = !swept.sweep_done;
        let mut flipped = link.clone();
        flipped.roster = swept;
        assert!(flipped.verify(Some(&first), None).is_err());
        let mut moved = link;
        moved.proof.ballot.round += 1;
        assert!(moved.verify(Some(&first), None).is_err());
    }

    #[test]
    fn keys_are_checked_against_their_hash() {
        let s = signer(1);
        let sig = s.sign(b"x");
        assert!(verify_signature(&s.key_hash(), s.public_key(), b"x", &sig));
        assert!(!verify_signature(&signer(2).key_hash(), s.public_key(), b"x", &sig));
        assert!(!verify_signature(&s.key_hash(), s.public_key(), b"y", &sig));
        assert!(!verify_signature(&key_hash(b"junk"), b"junk", b"x", &sig));
    }
}
