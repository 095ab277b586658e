//! The sans-IO lock core: per-scope Paxos registers holding lock records, leases measured as
//! drift-corrected ages, and a voter roster changed one member at a time.
//!
//! *Architecture invariant:* nothing in this crate performs IO or reads a clock: it is `no_std`
//! (outside its tests), so the compiler refuses anything that would. Time comes in
//! as `Time` arguments, randomness as a seed, messages and client requests as values; what must
//! be persisted, sent or answered comes out of `Node::drain` as `Outputs`. The runtime and the
//! simulator both pass those through an `Outbox` (`outbox.rs`), the one place that decides
//! what may leave before which writes are durable: `writes` before the `messages` and
//! `replies` of the same batch; only `early` messages before their own batch's writes, once
//! every earlier batch's are durable.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

/// What `std`'s prelude gives a crate: this one has no `std` outside its tests (no IO, no
/// clock, no threads can be reached from it), only `alloc`.
mod prelude {
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
}

pub mod acceptor;
pub mod call;
mod bootstrap;
mod broken;
pub mod durable;
pub mod events;
pub mod history;
pub mod lease;
pub mod message;
pub mod node;
pub mod placement;
pub mod outbox;
#[cfg(test)]
mod node_tests;
pub mod proof;
pub mod proposer;
pub mod quorum;
pub mod record;
pub mod roster;
pub mod rng;
pub mod sweep;
pub mod time;
pub mod validate;
pub mod vouch;

#[cfg(feature = "broken-variants")]
pub use broken::Broken;
pub use durable::{Durable, Write};
pub use lease::Drift;
pub use message::{Ballot, Body, Envelope, Key, Value};
pub use outbox::{Outbox, Release, ToDisk};
pub use node::{Answer, Failure, Node, Op, Outputs, Refused, Reply, Request, RosterOp, RosterRefusal, RosterResult, Stats};
pub use history::{AutoChoice, AutoLease};
pub use record::{Acquire, GrantRef, LeaseRule, Limits, LockOp, LockRecord, LockResult, LockType, Priority, RequestId, Which};
pub use proof::{Ed25519Signer, Link, Proof, Signed, Signer};
pub use roster::{Ban, KeyHash, NodeId, Roster, RosterChange, RosterId};
pub use time::Time;

/// Tunables of the core. Every node of a cluster must use the same `drift` and `limits`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bound on clock rate drift between any two clocks (holders' included).
    pub drift: Drift,
    /// How long a ballot phase waits for a majority before retrying with a higher ballot.
    pub phase_timeout_us: u64,
    /// Base of the jittered exponential backoff between ballot attempts.
    pub backoff_base_us: u64,
    /// Cap of that backoff.
    pub backoff_max_us: u64,
    /// Most operations on one scope decided by one ballot.
    pub max_batch: usize,
    /// Most operations on one scope waiting at one node for a ballot; more are refused.
    pub max_queued_per_key: usize,
    /// How often a node checks for an unfinished roster sweep to resume.
    pub sweep_check_us: u64,
    /// How long another node's sweep may go without asking this voter for a page before
    /// this node sweeps the roster itself (one sweeper at a time: several would rewrite the
    /// same scopes in the same order and duel over every one).
    pub sweep_takeover_us: u64,
    /// Scopes a sweep rewrites at once.
    pub sweep_parallel: usize,
    /// Scopes a voter lists in one page for a sweep: the listing of a million scopes must not
    /// have to fit one message.
    pub sweep_page: usize,
    /// How often bootstrap offers are resent until the first roster is installed.
    pub bootstrap_resend_us: u64,
    /// How long a voter's vouch for the members of its roster lasts (`vouch`): how long a
    /// removal waits, and how long a voter cut off from a majority keeps taking ballots.
    pub vouch_us: u64,
    pub limits: Limits,
    /// Test-only: run a known-broken variant of the protocol (the simulator must catch it).
    #[cfg(feature = "broken-variants")]
    pub broken: Option<Broken>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            drift: Drift::from_ppm(10_000),
            phase_timeout_us: 500_000,
            backoff_base_us: 5_000,
            backoff_max_us: 500_000,
            max_batch: 256,
            max_queued_per_key: 4096,
            sweep_check_us: 5_000_000,
            // A page (2048 scopes) takes seconds on a loaded machine.
            sweep_takeover_us: 30_000_000,
            sweep_parallel: 64,
            // 200-byte names at most: under half a MiB a page.
            sweep_page: 2048,
            bootstrap_resend_us: 1_000_000,
            vouch_us: 2_000_000,
            limits: Limits::default(),
            #[cfg(feature = "broken-variants")]
            broken: None,
        }
    }
}
