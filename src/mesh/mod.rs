//! The mesh between nodes: one QUIC endpoint per node, mutual TLS against the cluster CA,
//! and frames (bincode 2, size-limited) on unidirectional streams.

pub mod endpoint;
pub mod limits;
pub mod signer;
pub mod tls;
pub mod wire;
