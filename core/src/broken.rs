//! Known-broken protocol variants, compiled only with the test-only `broken-variants` feature.
//!
//! Each one removes a rule that docs/PROTOCOL.md argues is necessary; the
//! simulator's tests switch them on and must report violations. In builds without the feature
//! the `broken!` checks are the constant `false` and the variants do not exist.

/// A rule switched off.
#[cfg(feature = "broken-variants")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Broken {
    /// Count a majority of the members that look alive instead of the whole roster.
    QuorumOverReachable,
    /// A restarted voter forgets promises it made beyond its accepted ballot.
    ForgetPromisesOnRestart,
    /// Treat ages as true time, ignoring that a voter's clock may run fast.
    ExpiryIgnoresDrift,
    /// Take ages from every promise, not only from those at the highest accepted ballot.
    AgesFromStalePromises,
    /// Install a roster as soon as it is accepted, before it is known to be chosen.
    RosterInstalledWhenAccepted,
    /// Allow the next roster change before the sweep of the previous one finished.
    RosterChangeBeforeSweep,
    /// Answer "busy" bare: without committing the refusal, even after an Accept that may
    /// carry the request's effect went out (PROTOCOL §12 P4).
    BareRefusal,
    /// The outbox lets a batch's messages and replies leave before its own writes are
    /// durable (the same-batch half of write-before-send removed).
    SendBeforeWrite,
    /// The outbox lets early messages leave while earlier batches still wait for the disk
    /// (the earlier-batch half of the early-message rule removed).
    EarlyBeforeEarlierBatches,
    /// Voters accept without promising the ballot's successor, while proposers still skip
    /// the Prepare after a ballot of theirs a majority accepted.
    NoSuccessorPromise,
    /// A bare unlock frees the holder's grants whatever their age: the arrival rule removed.
    BareUnlockWithoutArrivalRule,
    /// A cancel frees its request's grant even when a retry of the request collected it
    /// (the grant is reported).
    CancelFreesReportedGrant,
    /// A poll or retry that collects a handed-over grant answers `locked` without marking
    /// the grant reported, so a cancel may still free it.
    LockedBeforeReported,
    /// Messages are taken from any sender the transport authenticated, member of the roster
    /// or not (no `Node::authorize`).
    NoAuthorization,
    /// A node installs a roster a member's `Commit` carries without checking its proof.
    CommitWithoutProof,
    /// Ballot requests and votes are taken from every member, vouched for or not, and a voter
    /// accepts a removal at once (no `vouch`).
    NoVouches,
}

/// Whether `$config` runs the broken variant `$variant`; always `false` without the feature.
macro_rules! broken {
    ($config:expr, $variant:ident) => {{
        #[cfg(feature = "broken-variants")]
        let on = $config.broken == Some($crate::Broken::$variant);
        #[cfg(not(feature = "broken-variants"))]
        let on = {
            let _ = &$config;
            false
        };
        on
    }};
}
pub(crate) use broken;
