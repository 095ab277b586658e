//! lockmesh: a peer-to-peer distributed lock service.
//!
//! `core` is the sans-IO protocol (see ARCHITECTURE.md and docs/PROTOCOL.md); the other
//! modules are the runtime that runs it as a node: certificates, storage, the QUIC mesh.

pub mod agent;
pub mod api;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod core;
pub mod dshell;
pub mod mesh;
pub mod store;
