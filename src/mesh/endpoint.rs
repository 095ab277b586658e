//! One QUIC endpoint per node: it accepts peers' connections, dials peers, and moves frames
//! over unidirectional streams. Each peer has one sender task that keeps one stream open and
//! writes every frame waiting for that peer at once (length-prefixed), so a burst of messages
//! for many scopes costs one write, not a stream each. Every frame's sender is checked against
//! the peer's certificate: a peer can speak only for the node name its certificate carries and
//! the key it holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::limits::{Handshake, Limits};
use super::tls::{self, Identity, TlsError};
use super::wire::{self, Frame, MAX_FRAME};
use crate::core::KeyHash;

/// A frame or a membership datagram from a peer, with the node name its certificate was
/// checked for.
#[derive(Debug)]
pub struct Inbound {
    pub peer: String,
    /// The hash of the peer certificate's public key.
    pub key: KeyHash,
    pub remote: SocketAddr,
    pub payload: Payload,
}

#[derive(Debug)]
pub enum Payload {
    Frame(Frame),
    /// A SWIM packet (QUIC datagram).
    Datagram(bytes::Bytes),
}

/// Reads the sender's name a datagram claims, so it can be checked against the certificate.
pub type DatagramSender = fn(&[u8]) -> Option<String>;

/// Where frames go: an address, and the name the certificate answering there must be valid
/// for (a node's own name, or the shared dial name when it is not known yet).
type Dest = (SocketAddr, String);

fn dest(addr: SocketAddr, name: Option<&str>) -> Dest {
    (addr, name.unwrap_or(tls::dial_name()).to_string())
}

/// Frames read at once from one connection.
const STREAMS_PER_CONNECTION: usize = 256;
/// Stream error codes.
const BAD_FRAME: u32 = 1;
const WRONG_NAME: u32 = 2;
const BANNED: u32 = 3;
/// Closes a connection whose peer certificate a revocation list names (`Mesh::set_crls`).
const REVOKED: u32 = 4;

/// Datagrams in flight at once; more are dropped, as a lossy network would (SWIM copes).
const MAX_DATAGRAMS_IN_FLIGHT: usize = 4096;
/// Frames waiting for one peer; more are dropped, as a lossy network would, and the protocol
/// retries. Bounds memory when a peer is slow or dead.
const OUTBOX_FRAMES: usize = 4096;
/// Most bytes one write to a peer's stream gathers.
const BATCH_BYTES: usize = 256 << 10;
/// A peer's sender task with nothing to send for this long ends; the next frame starts one.
const OUTBOX_IDLE: Duration = Duration::from_secs(60);

pub struct Mesh {
    datagram_slots: Arc<tokio::sync::Semaphore>,
    endpoint: quinn::Endpoint,
    connections: Mutex<HashMap<Dest, quinn::Connection>>,
    /// One dial at a time per destination (`connection`): when its last dial failed.
    dialing: Mutex<HashMap<Dest, Arc<tokio::sync::Mutex<Option<std::time::Instant>>>>>,
    /// Each peer's queue of encoded frames, drained by its sender task (`outbox`).
    outboxes: Mutex<HashMap<Dest, mpsc::Sender<Vec<u8>>>>,
    inbound: mpsc::Sender<Inbound>,
    datagram_sender: DatagramSender,
    banned: Mutex<Banned>,
    /// How this node dials: its certificate, and the revocation lists it checks servers
    /// against (`set_crls`).
    client: Mutex<quinn::ClientConfig>,
    /// The verifier with the latest revocation lists: every connection's reader checks its
    /// peer again when it changes, and closes the connection of a revoked certificate.
    revocation: tokio::sync::watch::Sender<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>>,
    /// Peer endpoints whose failed handshake was logged (once each; a peer redials every tick
    /// from the same endpoint).
    refused_logged: Mutex<std::collections::HashSet<SocketAddr>>,
    /// Handshakes per address, and strangers' frames per key (`limits.rs`).
    pub limits: Limits,
}

/// Names and certificate keys the roster bans (`Mesh::set_banned`), and the keys whose
/// refusal was logged (once each).
#[derive(Default)]
struct Banned {
    names: std::collections::HashSet<String>,
    keys: std::collections::HashSet<KeyHash>,
    logged: std::collections::HashSet<KeyHash>,
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    // A peer silent this long is gone; the next send dials it again.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(3)).ok());
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(4096));
    Arc::new(t)
}

/// What a node logs when a peer's handshake names another wire format.
const MISMATCH: &str = "mesh: a peer speaks another lockmesh wire format (ALPN) than this build: run one build on every node";

/// Whether a handshake failed because the two sides named no common application protocol
/// (TLS alert 120): their builds speak different wire formats (`tls::ALPN`).
fn format_mismatch(e: &quinn::ConnectionError) -> bool {
    let no_common_protocol = quinn::TransportErrorCode::crypto(120);
    match e {
        quinn::ConnectionError::TransportError(t) => t.code == no_common_protocol,
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code == no_common_protocol,
        _ => false,
    }
}

impl Mesh {
    /// Binds the endpoint and starts accepting peers; their frames go to `inbound`.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        inbound: mpsc::Sender<Inbound>,
        datagram_sender: DatagramSender,
    ) -> Result<Arc<Mesh>, MeshError> {
        let mut server = tls::server_config(identity)?;
        server.transport_config(transport());
        let mut client = tls::client_config(identity)?;
        client.transport_config(transport());
        let endpoint = quinn::Endpoint::server(server, addr).map_err(|e| MeshError::Bind(addr, e))?;
        let mesh = Arc::new(Mesh {
            client: Mutex::new(client),
            revocation: tokio::sync::watch::Sender::new(None),
            datagram_slots: Arc::new(tokio::sync::Semaphore::new(MAX_DATAGRAMS_IN_FLIGHT)),
            endpoint,
            connections: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            outboxes: Mutex::new(HashMap::new()),
            inbound,
            datagram_sender,
            banned: Mutex::new(Banned::default()),
            refused_logged: Mutex::new(std::collections::HashSet::new()),
            limits: Limits::default(),
        });
        tokio::spawn(mesh.clone().accept_loop());
        Ok(mesh)
    }

    /// Refuses these names and keys from now on: a connection from a banned key is closed
    /// right after its handshake, and a frame speaking for a banned name closes its
    /// connection (also one opened before the ban); datagrams from them are dropped.
    pub fn set_banned(&self, bans: impl IntoIterator<Item = (Option<String>, KeyHash)>) {
        if let Ok(mut banned) = self.banned.lock() {
            let (names, keys): (Vec<Option<String>>, _) = bans.into_iter().unzip();
            banned.names = names.into_iter().flatten().collect();
            banned.keys = keys;
        }
    }

    /// The certificate keys of the installed roster's members: their frames are not rate
    /// limited; everyone else's are (`limits.rs`).
    pub fn set_members(&self, keys: impl IntoIterator<Item = KeyHash>) {
        self.limits.set_members(keys);
    }

    /// Checks peers' certificates against these revocation lists from now on (`--crl`): new
    /// connections of a certificate they revoke fail their handshake, both ways, and existing
    /// ones are closed.
    pub fn set_crls(&self, identity: &Identity, crls: &tls::Crls) -> Result<(), MeshError> {
        let mut server = tls::server_config_with(identity, crls)?;
        server.transport_config(transport());
        let mut client = tls::client_config_with(identity, tls::ALPN, crls)?;
        client.transport_config(transport());
        let verifier = tls::peer_verifier(identity, crls)?;
        self.endpoint.set_server_config(Some(server));
        if let Ok(mut current) = self.client.lock() {
            *current = client;
        }
        self.revocation.send_replace(Some(verifier));
        Ok(())
    }

    /// Whether `name` or `key` is banned; logs the first refusal of each key.
    fn refuse(&self, remote: SocketAddr, name: Option<&str>, key: &KeyHash) -> bool {
        let Ok(mut banned) = self.banned.lock() else { return false };
        let refused = banned.keys.contains(key) || name.is_some_and(|n| banned.names.contains(n));
        if refused && banned.logged.insert(*key) {
            tracing::warn!(%remote, name = name.unwrap_or("?"), "mesh: refused a node an admin removed (banned in the roster; logged once)");
        }
        refused
    }

    /// Whether this is the first failed handshake from `peer` (at most a thousand remembered).
    fn first_refusal(&self, peer: SocketAddr) -> bool {
        let Ok(mut logged) = self.refused_logged.lock() else { return true };
        if logged.len() >= 1024 {
            logged.clear();
        }
        logged.insert(peer)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            // Before any work on it: a retry or a refusal is one small packet, and no state.
            let proven = incoming.remote_address_validated();
            match self.limits.handshake(incoming.remote_address().ip(), proven, std::time::Instant::now()) {
                Handshake::Accept => {}
                Handshake::Retry if incoming.may_retry() => {
                    let _ = incoming.retry();
                    continue;
                }
                Handshake::Retry | Handshake::Refuse => {
                    incoming.refuse();
                    continue;
                }
            }
            let mesh = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(connection) => mesh.read_frames(connection).await,
                    // A client the CA did not sign ends here (or one of another wire format).
                    Err(e) if mesh.first_refusal(remote) => {
                        let what = if format_mismatch(&e) { MISMATCH } else { "mesh: refused a connection (logged once per peer address)" };
                        tracing::warn!(%remote, error = %e, "{what}");
                    }
                    Err(e) => tracing::debug!(%remote, error = %e, "mesh: refused a connection"),
                }
            });
        }
    }

    /// Queues one frame for the node `name` at `addr` (dialing if needed); with no name, for
    /// whichever node answers there (a `--join` address). Fire and forget: the protocol
    /// retries.
    pub fn send(self: &Arc<Self>, addr: SocketAddr, name: Option<&str>, frame: &Frame) {
        let dest = dest(addr, name);
        let mut bytes = match wire::encode_prefixed(frame) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "mesh: cannot encode a frame");
                return;
            }
        };
        let Ok(mut outboxes) = self.outboxes.lock() else { return };
        // Twice at most: a sender task that ended (idle) is replaced once.
        for _ in 0..2 {
            let outbox = outboxes.entry(dest.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
                tokio::spawn(self.clone().outbox(dest.clone(), rx));
                tx
            });
            match outbox.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(%addr, "mesh: too many frames waiting for a peer; frame dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    outboxes.remove(&dest);
                    bytes = back;
                }
            }
        }
    }

    /// One peer's sender task: writes every frame waiting for `addr` to one stream at once.
    /// A failed write loses the frames it carried (as a lossy network would) and the next
    /// batch opens a new stream, on a new connection if the old one is gone.
    async fn outbox(self: Arc<Self>, dest: Dest, mut frames: mpsc::Receiver<Vec<u8>>) {
        let addr = dest.0;
        let mut stream = None;
        loop {
            let mut batch = match tokio::time::timeout(OUTBOX_IDLE, frames.recv()).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return,
                Err(_idle) => {
                    if self.retire(&dest, &frames) {
                        return;
                    }
                    continue;
                }
            };
            while batch.len() < BATCH_BYTES {
                match frames.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.write(&dest, &mut stream, &batch).await {
                tracing::debug!(%addr, error = %e, "mesh: send failed");
                stream = None;
                self.forget(&dest);
            }
        }
    }

    /// Writes to the stream kept for `addr`, opening one first if there is none or its
    /// connection has closed (the peer restarted, or went silent).
    async fn write(self: &Arc<Self>, dest: &Dest, kept: &mut Option<(quinn::Connection, quinn::SendStream)>, bytes: &[u8]) -> Result<(), MeshError> {
        let (connection, stream) = match kept.take() {
            Some((connection, stream)) if connection.close_reason().is_none() => (connection, stream),
            _ => {
                let connection = self.connection(dest).await?;
                let stream = connection.open_uni().await.map_err(|e| MeshError::Send(e.to_string()))?;
                (connection, stream)
            }
        };
        let (_, stream) = kept.insert((connection, stream));
        stream.write_all(bytes).await.map_err(|e| MeshError::Send(e.to_string()))
    }

    /// Ends an idle sender task, unless a frame arrived meanwhile: `send` queues frames under
    /// the same lock, so none is queued to a task that is going away.
    fn retire(&self, dest: &Dest, frames: &mpsc::Receiver<Vec<u8>>) -> bool {
        let Ok(mut outboxes) = self.outboxes.lock() else { return false };
        if !frames.is_empty() {
            return false;
        }
        outboxes.remove(dest);
        true
    }

    /// Sends one datagram to the node `name` at `addr` (dialing if needed); lost if anything
    /// fails, as datagrams are.
    pub fn send_datagram(self: &Arc<Self>, addr: SocketAddr, name: &str, packet: bytes::Bytes) {
        let dest = dest(addr, Some(name));
        let Ok(permit) = self.datagram_slots.clone().try_acquire_owned() else { return };
        let mesh = self.clone();
        tokio::spawn(async move {
            let _held = permit;
            match mesh.connection(&dest).await {
                Ok(connection) => {
                    if let Err(e) = connection.send_datagram(packet) {
                        tracing::debug!(%addr, error = %e, "mesh: datagram not sent");
                    }
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "mesh: no connection for a datagram");
                    mesh.forget(&dest);
                }
            }
        });
    }

    fn forget(&self, dest: &Dest) {
        if let Ok(mut connections) = self.connections.lock() {
            if connections.get(dest).is_some_and(|c| c.close_reason().is_some()) {
                connections.remove(dest);
            }
        }
    }

    /// A connection to `dest`, dialled once however many frames and datagrams wait for it:
    /// those that come while a dial is under way wait for it, and share its connection or its
    /// failure (a handshake each would cost the peer as much, and count against its limit).
    async fn connection(self: &Arc<Self>, dest: &Dest) -> Result<quinn::Connection, MeshError> {
        if let Some(connection) = self.cached(dest) {
            return Ok(connection);
        }
        let asked = std::time::Instant::now();
        let gate = {
            let mut dialing = self.dialing.lock().map_err(|_| MeshError::Send("mesh state poisoned".into()))?;
            dialing.entry(dest.clone()).or_default().clone()
        };
        let mut failed = gate.lock().await;
        let outcome = match self.cached(dest) {
            Some(connection) => Ok(connection),
            None if failed.is_some_and(|at| at >= asked) => Err(MeshError::Send(format!("{}: the dial under way failed", dest.0))),
            None => {
                let outcome = self.dial(dest).await;
                *failed = outcome.is_err().then(std::time::Instant::now);
                outcome
            }
        };
        drop(failed);
        // The gate goes once nobody else holds it (clones are made under this lock).
        if let Ok(mut dialing) = self.dialing.lock() {
            if Arc::strong_count(&gate) <= 2 {
                dialing.remove(dest);
            }
        }
        outcome
    }

    /// The open connection kept for `dest`, if any.
    fn cached(&self, dest: &Dest) -> Option<quinn::Connection> {
        let connection = self.connections.lock().ok()?.get(dest).cloned()?;
        connection.close_reason().is_none().then_some(connection)
    }

    /// Dials `dest`: the peer's certificate verified for the name dialled (the node's own
    /// name when known, so that no other certificate at that address receives what is meant
    /// for it).
    async fn dial(self: &Arc<Self>, dest: &Dest) -> Result<quinn::Connection, MeshError> {
        let addr = dest.0;
        let client = self.client.lock().map_err(|_| MeshError::Send("mesh state poisoned".into()))?.clone();
        let connecting = self.endpoint.connect_with(client, addr, &dest.1).map_err(|e| MeshError::Send(e.to_string()))?;
        let connection = connecting.await.map_err(|e| {
            if format_mismatch(&e) {
                tracing::warn!(%addr, error = %e, "{}", MISMATCH);
            }
            MeshError::Send(e.to_string())
        })?;
        if !tls::is_node_certificate(&connection) {
            connection.close(quinn::VarInt::from_u32(WRONG_NAME), b"not a node certificate");
            return Err(MeshError::Send(format!("{addr} answered with a certificate that is not a node certificate")));
        }
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(dest.clone(), connection.clone());
        }
        tokio::spawn(self.clone().read_frames(connection.clone()));
        Ok(connection)
    }

    /// Reads frames from one connection until it closes, up to `STREAMS_PER_CONNECTION`
    /// streams at once (a peer's sender keeps one open, and opens another after a failed
    /// write; beyond the limit the peer waits, as QUIC flow control makes it).
    async fn read_frames(self: Arc<Self>, connection: quinn::Connection) {
        let remote = connection.remote_address();
        let Some(key) = tls::peer_key(&connection) else {
            tracing::warn!(%remote, "mesh: a peer certificate without a readable public key");
            connection.close(quinn::VarInt::from_u32(WRONG_NAME), b"unreadable certificate key");
            return;
        };
        if self.refuse(remote, None, &key) {
            connection.close(quinn::VarInt::from_u32(BANNED), b"banned");
            return;
        }
        if !tls::is_node_certificate(&connection) {
            if self.first_refusal(remote) {
                tracing::warn!(%remote, "mesh: refused a certificate that is not a node certificate (a client or HTTP one; logged once per peer address)");
            }
            connection.close(quinn::VarInt::from_u32(WRONG_NAME), b"not a node certificate");
            return;
        }
        tokio::spawn(self.clone().read_datagrams(connection.clone(), key));
        let names = Arc::new(Mutex::new(HashMap::new()));
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION));
        let mut revocation = self.revocation.subscribe();
        revocation.mark_changed();
        loop {
            let stream = tokio::select! {
                accepted = connection.accept_uni() => match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "mesh: connection ended");
                        return;
                    }
                },
                changed = revocation.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let verifier = revocation.borrow_and_update().clone();
                    if verifier.is_some_and(|v| tls::peer_leaf(&connection).is_some_and(|leaf| tls::revoked(&*v, &leaf))) {
                        tracing::warn!(%remote, "mesh: closed the connection of a revoked certificate (--crl)");
                        connection.close(quinn::VarInt::from_u32(REVOKED), b"revoked");
                        return;
                    }
                    continue;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let (mesh, connection, names) = (self.clone(), connection.clone(), names.clone());
            tokio::spawn(async move {
                let _held = permit;
                mesh.read_stream(stream, &connection, key, &names).await;
            });
        }
    }

    /// Reads length-prefixed frames from one stream until the peer finishes it. A frame that
    /// does not decode, one longer than `MAX_FRAME`, or a stream that breaks off inside a
    /// frame ends the stream (the peer's sender opens another); a frame speaking for a name
    /// the certificate does not carry, or for another key than the certificate's (`key`),
    /// closes the connection. Nothing panics.
    async fn read_stream(&self, mut stream: quinn::RecvStream, connection: &quinn::Connection, key: KeyHash, names: &Mutex<HashMap<String, bool>>) {
        let remote = connection.remote_address();
        loop {
            let mut prefix = [0u8; 4];
            match stream.read_exact(&mut prefix).await {
                Ok(()) => {}
                Err(quinn::ReadExactError::FinishedEarly(0)) => return,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "mesh: stream ended inside a frame");
                    return;
                }
            }
            let len = u32::from_be_bytes(prefix) as usize;
            if len > MAX_FRAME {
                tracing::warn!(%remote, len, "mesh: dropped an unreadable or oversized frame");
                let _ = stream.stop(quinn::VarInt::from_u32(BAD_FRAME));
                return;
            }
            // Grows as the bytes arrive: a length alone reserves nothing.
            let mut bytes = Vec::new();
            match (&mut stream).take(len as u64).read_to_end(&mut bytes).await {
                Ok(read) if read == len => {}
                Ok(_) => {
                    tracing::warn!(%remote, "mesh: dropped a frame cut off by the end of its stream");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "mesh: dropped an unreadable frame");
                    return;
                }
            }
            // Dropped undecoded, as a lossy network would; the stream reads on.
            if !self.limits.frame(&key, remote, std::time::Instant::now()) {
                continue;
            }
            let frame = match wire::decode(&bytes) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "mesh: dropped a malformed frame");
                    let _ = stream.stop(quinn::VarInt::from_u32(BAD_FRAME));
                    return;
                }
            };
            let (claimed, claimed_key) = match &frame {
                Frame::Hello { me, .. } => (me.name.clone(), me.key),
                Frame::Core(envelope) => (envelope.from.name.clone(), envelope.from.key),
                Frame::Subscribe { from, .. } | Frame::News { from, .. } => (from.name.clone(), from.key),
            };
            if !allowed(names, connection, &claimed) || claimed_key != key {
                tracing::warn!(%remote, %claimed, "mesh: peer spoke for a name or key its certificate does not carry");
                connection.close(quinn::VarInt::from_u32(WRONG_NAME), b"name or key does not match certificate");
                return;
            }
            if self.refuse(remote, Some(&claimed), &key) {
                connection.close(quinn::VarInt::from_u32(BANNED), b"banned");
                return;
            }
            if self.inbound.send(Inbound { peer: claimed, key, remote, payload: Payload::Frame(frame) }).await.is_err() {
                return;
            }
        }
    }

    /// Reads datagrams from one connection until it closes; a datagram whose claimed sender
    /// the certificate does not carry is dropped.
    async fn read_datagrams(self: Arc<Self>, connection: quinn::Connection, key: KeyHash) {
        let remote = connection.remote_address();
        let names = Mutex::new(HashMap::new());
        while let Ok(packet) = connection.read_datagram().await {
            if !self.limits.frame(&key, remote, std::time::Instant::now()) {
                continue;
            }
            let Some(claimed) = (self.datagram_sender)(&packet) else { continue };
            if !allowed(&names, &connection, &claimed) {
                tracing::warn!(%remote, %claimed, "mesh: datagram for a name the certificate does not carry");
                continue;
            }
            if self.refuse(remote, Some(&claimed), &key) {
                continue;
            }
            if self.inbound.try_send(Inbound { peer: claimed, key, remote, payload: Payload::Datagram(packet) }).is_err() {
                // Full or closed: membership datagrams may be lost; SWIM copes.
                continue;
            }
        }
    }

    pub fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"bye");
    }
}

/// Whether the connection's certificate carries `name`, remembering answers (at most a few
/// dozen names: a peer speaking for many names is wrong anyway).
fn allowed(names: &Mutex<HashMap<String, bool>>, connection: &quinn::Connection, name: &str) -> bool {
    if let Some(known) = names.lock().ok().and_then(|n| n.get(name).copied()) {
        return known;
    }
    // Only a node name: every certificate is also valid for the shared dial name and its DNS
    // and IP names, which would let one key speak (and be admitted) as several nodes.
    let ok = crate::certs::valid_node_name(name) && tls::verify_peer_name(connection, name);
    if let Ok(mut names) = names.lock() {
        if names.len() >= 64 {
            names.clear();
        }
        names.insert(name.to_string(), ok);
    }
    ok
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot bind the mesh to {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("send: {0}")]
    Send(String),
}
