//! lockmesh: a peer-to-peer distributed lock service.
//!
//! `core` is the sans-IO protocol (see ARCHITECTURE.md and docs/PROTOCOL.md). The runtime
//! (QUIC mesh, storage, HTTP API) is built on it in later modules.

pub mod core;
