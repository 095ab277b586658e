//! The cluster's certificates: a CA; node certificates it signs for both server and client use;
//! client certificates (client use only) and HTTP server certificates (server use only), which
//! the mesh refuses. `lockmesh certs ca|node|client|http` call into here.
//!
//! Every node certificate carries its node name as a DNS name, plus the shared name
//! `lockmesh-node`, which is what a node dials when it does not know a peer's name yet; the
//! peer's real name is then checked against its certificate (`mesh::tls::verify_peer_name`).

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The DNS name every node certificate carries besides its own.
pub const SHARED_NAME: &str = "lockmesh-node";
const CA_NAME: &str = "lockmesh cluster CA";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("invalid node name {0:?}: use 1-63 of a-z, 0-9 and '-', not starting with '-'")]
    BadName(String),
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Bad(PathBuf, String),
}

/// Whether `name` can be a node name: a DNS label, since it is a name in the certificate.
pub fn valid_node_name(name: &str) -> bool {
    name != SHARED_NAME
        && !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Default validity of a node certificate, in days.
pub const NODE_DAYS: u32 = 365;
/// Default validity of a CA certificate, in days.
pub const CA_DAYS: u32 = 3650;

/// Valid from an hour ago (clocks differ a little) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

/// Writes `dir/ca.pem` and `dir/ca.key` (mode 0600), valid for `days` days. Refuses to
/// overwrite an existing CA.
pub fn make_ca(dir: &Path, days: u32) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|e| CertError::Write(dir.to_path_buf(), e))?;
    let key_path = dir.join("ca.key");
    if key_path.exists() {
        return Err(CertError::Exists(key_path));
    }
    let key = KeyPair::generate()?;
    let mut params = ca_params()?;
    validity(&mut params, days);
    let cert = params.self_signed(&key)?;
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&dir.join("ca.pem"), &cert.pem())
}

/// Writes `dir/NAME.pem` and `dir/NAME.key` (mode 0600) for a client of the HTTP API, signed by
/// the CA in `dir`: for client use only, named by its common name, valid for no DNS name — in
/// particular not for the shared node name, so the mesh refuses it.
pub fn make_client(dir: &Path, name: &str, days: u32) -> Result<(), CertError> {
    if name.is_empty() || name.len() > 64 || name == SHARED_NAME || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
        return Err(CertError::BadName(name.to_string()));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, name, params, days, false)
}

/// Writes `dir/NAME.pem` and `dir/NAME.key` (mode 0600) for serving the HTTP API over TLS,
/// signed by the CA in `dir`: for server use only, valid for `dns` names and `ips`, never for
/// the shared node name, so no node takes it for a node's.
pub fn make_http(dir: &Path, name: &str, ips: &[IpAddr], dns: &[String], days: u32) -> Result<(), CertError> {
    let dns_name = |n: &str| !n.is_empty() && n.len() <= 253 && n != SHARED_NAME && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if let Some(bad) = std::iter::once(name).chain(dns.iter().map(String::as_str)).find(|n| !dns_name(n)) {
        return Err(CertError::BadName(bad.to_string()));
    }
    let mut params = CertificateParams::new(dns.to_vec())?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(dir, name, params, days, false)
}

/// Signs `params` with the CA in `dir` for `days` days and writes `dir/NAME.pem`, with a new
/// key in `dir/NAME.key` (mode 0600, never overwritten), or the existing key if `renew`.
fn issue(dir: &Path, name: &str, mut params: CertificateParams, days: u32, renew: bool) -> Result<(), CertError> {
    let ca_key_path = dir.join("ca.key");
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(|e| CertError::Read(ca_key_path, e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    // The issuer is rebuilt from the same parameters and key as the CA certificate: same
    // subject, same key identifier, so the signature chains to ca.pem.
    let issuer = Issuer::new(ca_params()?, ca_key);
    validity(&mut params, days);
    let key_path = dir.join(format!("{name}.key"));
    let key = if renew {
        let pem = fs::read_to_string(&key_path).map_err(|e| CertError::Read(key_path.clone(), e))?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        write_private(&key_path, &key.serialize_pem())?;
        key
    };
    let cert = params.signed_by(&key, &issuer)?;
    write_public(&dir.join(format!("{name}.pem")), &cert.pem())
}

/// Writes `dir/NAME.pem` and `dir/NAME.key` (mode 0600), signed by the CA in `dir`, valid for
/// `days` days. With `renew`, keeps the node's existing key (`dir/NAME.key`) and replaces only
/// its certificate: the node keeps its identity in the roster (its name and key hash), so a
/// renewal needs no roster change. A new key is a new identity.
pub fn make_node(dir: &Path, name: &str, ips: &[IpAddr], dns: &[String], days: u32, renew: bool) -> Result<(), CertError> {
    if !valid_node_name(name) {
        return Err(CertError::BadName(name.to_string()));
    }
    if let Some(clash) = dns.iter().find(|d| valid_node_name(d) || d.as_str() == SHARED_NAME) {
        // A certificate valid for another node's name could speak for that node.
        return Err(CertError::BadName(format!("--dns {clash}: looks like a node name; use a dotted DNS name")));
    }
    let mut names = vec![name.to_string(), SHARED_NAME.to_string()];
    names.extend(dns.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, name, params, days, renew)
}

/// Default validity of a revocation list, in days (the mesh does not refuse an expired one:
/// it is a deny list, and an old one still denies what it lists).
pub const CRL_DAYS: u32 = 365;

/// Revokes the certificate `DIR/NAME.pem` (and every certificate of the same key: renewals
/// keep the serial, which is derived from the key): adds its serial to `DIR/revoked.txt` and
/// writes `DIR/crl.pem` anew (`write_crl`). Nodes started with `--crl DIR/crl.pem` (a copy of
/// it, on every node) refuse that certificate from then on, and close its connections.
pub fn revoke(dir: &Path, name: &str, days: u32) -> Result<(), CertError> {
    let path = dir.join(format!("{name}.pem"));
    let pem = fs::read(&path).map_err(|e| CertError::Read(path.clone(), e))?;
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem).map_err(|e| CertError::Bad(path.clone(), e.to_string()))?;
    let parsed = webpki::EndEntityCert::try_from(&cert).map_err(|e| CertError::Bad(path.clone(), e.to_string()))?;
    let serial: String = parsed.serial().iter().map(|b| format!("{b:02x}")).collect();
    let list = dir.join("revoked.txt");
    let mut text = fs::read_to_string(&list).unwrap_or_default();
    if !text.lines().any(|l| l.split_whitespace().next() == Some(serial.as_str())) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        text.push_str(&format!("{serial} {name} {now}\n"));
        fs::write(&list, &text).map_err(|e| CertError::Write(list.clone(), e))?;
    }
    write_crl(dir, days)
}

/// Writes `DIR/crl.pem`: the certificates `DIR/revoked.txt` lists (none if it does not
/// exist), signed by the CA in `DIR`, valid for `days` days.
pub fn write_crl(dir: &Path, days: u32) -> Result<(), CertError> {
    let list = dir.join("revoked.txt");
    let text = fs::read_to_string(&list).unwrap_or_default();
    let mut revoked = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let bad = || CertError::Bad(list.clone(), format!("cannot read the line {line:?}"));
        let serial = fields.next().ok_or_else(bad)?;
        let bytes: Vec<u8> = (0..serial.len() / 2).map(|i| u8::from_str_radix(&serial[2 * i..2 * i + 2], 16)).collect::<Result<_, _>>().map_err(|_| bad())?;
        let at: i64 = fields.nth(1).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let revocation_time = time::OffsetDateTime::from_unix_timestamp(at).map_err(|_| bad())?;
        revoked.push(rcgen::RevokedCertParams { serial_number: rcgen::SerialNumber::from_slice(&bytes), revocation_time, reason_code: None, invalidity_date: None });
    }
    let ca_key_path = dir.join("ca.key");
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(|e| CertError::Read(ca_key_path, e))?;
    let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&ca_key_pem)?);
    let now = time::OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(i64::from(days.max(1))),
        crl_number: rcgen::SerialNumber::from(now.unix_timestamp().max(0) as u64),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    write_public(&dir.join("crl.pem"), &crl.pem()?)
}

fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CertError::Write(path.to_path_buf(), e))?;
    file.write_all(text.as_bytes()).map_err(|e| CertError::Write(path.to_path_buf(), e))
}

fn write_public(path: &Path, text: &str) -> Result<(), CertError> {
    fs::write(path, text).map_err(|e| CertError::Write(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_names_are_dns_labels() {
        assert!(valid_node_name("node-1"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name("Node"));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name(&"a".repeat(64)));
        assert!(!valid_node_name(SHARED_NAME), "the shared dial name is no node's name");
    }

    #[test]
    fn a_ca_signs_node_certificates_with_private_keys_0600() {
        let dir = std::env::temp_dir().join(format!("lockmesh-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        make_ca(&dir, CA_DAYS).unwrap();
        assert!(matches!(make_ca(&dir, CA_DAYS), Err(CertError::Exists(_))));
        make_node(&dir, "node-1", &["127.0.0.1".parse().unwrap()], &[], NODE_DAYS, false).unwrap();
        assert!(matches!(make_node(&dir, "Bad_Name", &[], &[], NODE_DAYS, false), Err(CertError::BadName(_))));
        // Without --renew, an existing node key is never overwritten.
        assert!(make_node(&dir, "node-1", &[], &[], NODE_DAYS, false).is_err());
        for key in ["ca.key", "node-1.key"] {
            let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_node_certificates_are_valid_for_the_shared_node_name() {
        use rustls::pki_types::pem::PemObject;
        let dir = std::env::temp_dir().join(format!("lockmesh-certs-purpose-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        make_ca(&dir, CA_DAYS).unwrap();
        make_node(&dir, "node-1", &[], &[], NODE_DAYS, false).unwrap();
        make_client(&dir, "alice", NODE_DAYS).unwrap();
        make_http(&dir, "api.example.com", &[], &["node-1".into()], NODE_DAYS).unwrap();
        assert!(make_http(&dir, "x", &[], &[SHARED_NAME.into()], NODE_DAYS).is_err());
        assert!(make_client(&dir, SHARED_NAME, NODE_DAYS).is_err());
        let shared = rustls::pki_types::ServerName::try_from(SHARED_NAME).unwrap();
        let node_cert = |name: &str| {
            let der = rustls::pki_types::CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap();
            webpki::EndEntityCert::try_from(&der).unwrap().verify_is_valid_for_subject_name(&shared).is_ok()
        };
        assert!(node_cert("node-1"));
        assert!(!node_cert("alice") && !node_cert("api.example.com"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificates_expire_and_a_renewal_keeps_the_key() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, UnixTime};
        let dir = std::env::temp_dir().join(format!("lockmesh-certs-renew-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        make_ca(&dir, CA_DAYS).unwrap();
        let read = |file: &str| CertificateDer::from_pem_file(dir.join(file)).unwrap();
        let ca = read("ca.pem");
        let anchors = [webpki::anchor_from_trusted_cert(&ca).unwrap()];
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms.all;
        let day = 86_400;
        let now = UnixTime::now().as_secs();
        // Whether the mesh's verifier takes the node certificate `days` days from now.
        let valid_in = |cert: &CertificateDer<'_>, days: u64| {
            let leaf = webpki::EndEntityCert::try_from(cert).unwrap();
            let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now + days * day));
            leaf.verify_for_usage(algs, &anchors, &[], at, webpki::KeyUsage::client_auth(), None, None).is_ok()
        };
        make_node(&dir, "node-1", &[], &[], 30, false).unwrap();
        let first = read("node-1.pem");
        assert!(valid_in(&first, 0) && valid_in(&first, 29), "valid for its days");
        assert!(!valid_in(&first, 31), "and no longer");
        make_node(&dir, "node-1", &[], &[], 90, true).unwrap();
        let renewed = read("node-1.pem");
        assert!(valid_in(&renewed, 89) && !valid_in(&renewed, 91));
        let key = crate::mesh::tls::key_hash;
        assert_eq!(key(&first), key(&renewed), "renewed with the same key: the same identity in the roster");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_revoked_certificate_and_its_renewals_are_refused_and_no_other() {
        use crate::mesh::tls;
        use rustls::pki_types::pem::PemObject;
        let dir = std::env::temp_dir().join(format!("lockmesh-certs-revoke-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        make_ca(&dir, CA_DAYS).unwrap();
        make_node(&dir, "node-1", &[], &[], NODE_DAYS, false).unwrap();
        make_node(&dir, "node-2", &[], &[], NODE_DAYS, false).unwrap();
        let me = tls::Identity::load(&dir, "node-1").unwrap();
        let leaf = |name: &str| rustls::pki_types::CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap();
        let revoked = |name: &str| {
            let crls = tls::load_crls(&dir.join("crl.pem")).unwrap();
            tls::revoked(&*tls::peer_verifier(&me, &crls).unwrap(), &leaf(name))
        };
        write_crl(&dir, CRL_DAYS).unwrap();
        assert!(!revoked("node-1") && !revoked("node-2"), "an empty list revokes nothing");
        revoke(&dir, "node-2", CRL_DAYS).unwrap();
        assert!(revoked("node-2") && !revoked("node-1"));
        make_node(&dir, "node-2", &[], &[], NODE_DAYS, true).unwrap();
        assert!(revoked("node-2"), "a renewal keeps the key, hence the serial");
        revoke(&dir, "node-2", CRL_DAYS).unwrap();
        assert_eq!(fs::read_to_string(dir.join("revoked.txt")).unwrap().lines().count(), 1, "listed once");
        let _ = fs::remove_dir_all(&dir);
    }
}
