//! The node's key as the core signs with it: its votes for rosters (`core::proof`) are signed
//! with the private key of its node certificate, whose public key's hash names it in the
//! roster.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::pki_types::PrivateKeyDer;

use super::tls::{Identity, TlsError};
use crate::core::proof;

enum Pair {
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Signs with the node certificate's private key (ECDSA P-256, as `lockmesh certs node`
/// makes, or Ed25519).
pub struct NodeSigner {
    pair: Pair,
    spki: Vec<u8>,
    rng: SystemRandom,
}

impl NodeSigner {
    /// The signer for `identity`'s key; refuses a key that is not its certificate's.
    pub fn new(identity: &Identity) -> Result<NodeSigner, TlsError> {
        let unsupported = || TlsError::Setup("the node key must be a PKCS#8 ECDSA P-256 or Ed25519 key (as `lockmesh certs node` makes)".into());
        let PrivateKeyDer::Pkcs8(der) = &identity.key else { return Err(unsupported()) };
        let rng = SystemRandom::new();
        let pair = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der(), &rng) {
            Ok(pair) => Pair::P256(pair),
            Err(_) => Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).map_err(|_| unsupported())?),
        };
        let cert = identity.chain.first().ok_or_else(|| TlsError::Setup("no node certificate".into()))?;
        let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| TlsError::Setup(format!("the node certificate does not parse: {e}")))?;
        let spki = cert.subject_public_key_info().as_ref().to_vec();
        let signer = NodeSigner { pair, spki, rng };
        let key = proof::key_hash(&signer.spki);
        let probe = b"lockmesh node key probe";
        if !proof::verify_signature(&key, &signer.spki, probe, &proof::Signer::sign(&signer, probe)) {
            return Err(TlsError::Setup("the node key is not the node certificate's key".into()));
        }
        Ok(signer)
    }
}

impl proof::Signer for NodeSigner {
    fn public_key(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.pair {
            // Signing fails only if the system's random source does; a vote with an empty
            // signature proves nothing, and its roster is proven by the other voters' or
            // read and signed again (the core's catch-up).
            Pair::P256(pair) => pair.sign(&self.rng, message).map(|s| s.as_ref().to_vec()).unwrap_or_default(),
            Pair::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificates_key_signs_what_the_core_verifies() {
        let dir = std::env::temp_dir().join(format!("lockmesh-signer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::certs::make_ca(&dir, 30).unwrap();
        crate::certs::make_node(&dir, "n1", &[], &[], 30, false).unwrap();
        let identity = Identity::load(&dir, "n1").unwrap();
        let signer = NodeSigner::new(&identity).unwrap();
        let key = identity.key_hash().unwrap();
        let signature = proof::Signer::sign(&signer, b"roster");
        assert!(proof::verify_signature(&key, proof::Signer::public_key(&signer), b"roster", &signature));
        assert!(!proof::verify_signature(&key, proof::Signer::public_key(&signer), b"another roster", &signature));
        // Another node's key with this certificate is refused at start.
        crate::certs::make_node(&dir, "n2", &[], &[], 30, false).unwrap();
        let other = Identity::load(&dir, "n2").unwrap();
        let mixed = Identity { chain: identity.chain.clone(), key: other.key.clone_key(), roots: identity.roots.clone() };
        assert!(NodeSigner::new(&mixed).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
