//! lockmesh: a peer-to-peer distributed lock service.
//!
//! `core` is the sans-IO protocol, the `lockmesh-core` crate (see ARCHITECTURE.md and
//! docs/PROTOCOL.md); these modules are the runtime that runs it as a node: certificates,
//! storage, the QUIC mesh, the HTTP API, and dshell.

pub mod agent;
pub mod api;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod dshell;
pub mod mesh;
pub mod store;

pub use lockmesh_core as core;
