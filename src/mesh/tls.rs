//! Mutual TLS for the mesh: both sides present a certificate signed by the cluster CA, over
//! TLS 1.3 with one ALPN, built on the one crypto provider (ring).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::certs::SHARED_NAME;
use crate::core::KeyHash;

/// The mesh's wire format, as the TLS handshake names it: nodes of different formats cannot
/// connect (their handshake fails with "no application protocol", which the mesh logs as a
/// format mismatch). Bump it with any change to `Frame` or anything it carries.
pub const ALPN: &[u8] = b"lockmesh/8";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The node's identity and trust anchor, loaded from a certificates directory.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: Arc<RootCertStore>,
}

/// The hash of a certificate's public key (SHA-256 of its DER SubjectPublicKeyInfo): what a
/// roster names a member by, besides its name. A certificate renewed with the same key keeps
/// it; a new key is a new identity.
pub fn key_hash(cert: &CertificateDer<'_>) -> Option<KeyHash> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = cert.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    digest.as_ref().try_into().ok()
}

impl Identity {
    /// Loads `dir/ca.pem`, `dir/NAME.pem` and `dir/NAME.key`.
    pub fn load(dir: &Path, name: &str) -> Result<Identity, TlsError> {
        let read_certs = |file: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let path = dir.join(file);
            CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::Read(path.display().to_string(), e.to_string()))
        };
        let chain = read_certs(&format!("{name}.pem"))?;
        let key_path = dir.join(format!("{name}.key"));
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Read(key_path.display().to_string(), e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs("ca.pem")? {
            roots.add(ca).map_err(|e| TlsError::Setup(format!("bad CA certificate: {e}")))?;
        }
        Ok(Identity { chain, key, roots: Arc::new(roots) })
    }

    /// The hash of this node's certificate key.
    pub fn key_hash(&self) -> Result<KeyHash, TlsError> {
        self.chain.first().and_then(key_hash).ok_or_else(|| TlsError::Setup("the node certificate does not parse".into()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificate revocation lists, as `lockmesh certs revoke` writes them (`--crl FILE`: PEM
/// `X509 CRL` blocks, each signed by a CA of `ca.pem`).
pub type Crls = Vec<CertificateRevocationListDer<'static>>;

/// Reads the revocation lists of `path`.
pub fn load_crls(path: &Path) -> Result<Crls, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read(path.display().to_string(), e.to_string()))
}

/// Checks peers' certificates against the CA, and against `crls` if any: a certificate they
/// list is refused; one whose CA issued none of them is not (a CA being rotated in).
pub fn peer_verifier(id: &Identity, crls: &Crls) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(id.roots.clone(), provider());
    if !crls.is_empty() {
        builder = builder.with_crls(crls.iter().cloned()).only_check_end_entity_revocation().allow_unknown_revocation_status();
    }
    builder.build().map_err(|e| TlsError::Setup(e.to_string()))
}

/// Whether `verifier` (with its revocation lists) refuses the peer certificate `leaf` as
/// revoked.
pub fn revoked(verifier: &dyn ClientCertVerifier, leaf: &CertificateDer<'_>) -> bool {
    matches!(verifier.verify_client_cert(leaf, &[], UnixTime::now()), Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)))
}

/// Accepts only clients whose certificate the cluster CA signed.
pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    server_config_with(id, &Crls::new())
}

/// `server_config`, refusing certificates `crls` revoke.
pub fn server_config_with(id: &Identity, crls: &Crls) -> Result<quinn::ServerConfig, TlsError> {
    let verifier = peer_verifier(id, crls)?;
    let mut tls = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// Presents our certificate and accepts servers the cluster CA signed for `lockmesh-node`.
pub fn client_config(id: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    client_config_speaking(id, ALPN)
}

/// `client_config`, naming the wire format `alpn` (another build's, in tests of mismatches).
pub fn client_config_speaking(id: &Identity, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with(id, alpn, &Crls::new())
}

/// `client_config_speaking`, refusing servers whose certificate `crls` revoke.
pub fn client_config_with(id: &Identity, alpn: &[u8], crls: &Crls) -> Result<quinn::ClientConfig, TlsError> {
    let mut builder = WebPkiServerVerifier::builder_with_provider(id.roots.clone(), provider());
    if !crls.is_empty() {
        builder = builder.with_crls(crls.iter().cloned()).only_check_end_entity_revocation().allow_unknown_revocation_status();
    }
    let verifier = builder.build().map_err(|e| TlsError::Setup(e.to_string()))?;
    let mut tls = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// The name every node dials, since it may not know a peer's own name yet.
pub fn dial_name() -> &'static str {
    SHARED_NAME
}

/// The peer's certificate (already verified against the CA by TLS).
pub fn peer_leaf(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// The hash of the peer's certificate key: every frame it sends speaks for this key.
pub fn peer_key(connection: &quinn::Connection) -> Option<KeyHash> {
    key_hash(&peer_leaf(connection)?)
}

/// Whether the peer's certificate is a node certificate: only those are valid for the shared
/// node name (`lockmesh certs node`); client and HTTP certificates never are.
pub fn is_node_certificate(connection: &quinn::Connection) -> bool {
    verify_peer_name(connection, SHARED_NAME)
}

/// Whether the peer's certificate (already verified against the CA by TLS) is valid for the
/// node name it claims.
pub fn verify_peer_name(connection: &quinn::Connection, name: &str) -> bool {
    let Some(leaf) = peer_leaf(connection) else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(&leaf) else { return false };
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}
