//! Deterministic fault simulator for the lockmesh core, in the spirit of TigerBeetle's VOPR.
//!
//! A seed decides everything: the cluster's size, clocks and hostility, every message's fate,
//! every fault and every client's choices. A run has a fault phase, in which the checker
//! verifies the safety contract at every step, then a healed phase in which every scope must
//! serve a probe client again within a bound. A failing seed replays exactly.

pub mod checker;
pub mod client;
pub mod clock;
pub mod net;
mod placement;
mod rogue;
pub mod serve;
pub mod world;

pub use lockmesh_core::Broken;

/// The shape of the runs: bounds within which each seed picks its cluster and workload.
#[derive(Clone, Debug)]
pub struct Profile {
    pub min_nodes: usize,
    pub max_nodes: usize,
    pub max_clients: usize,
    pub max_scopes: usize,
    /// Length of the fault phase, simulated time.
    pub fault_us: u64,
    /// Bound for probes to be served after healing.
    pub liveness_us: u64,
    /// The drift bound every clock stays within (and the core is configured with).
    pub drift_ppm: u32,
    /// Frequent roster changes (operator requests every 20–300 ms).
    pub roster_churn: bool,
    /// Nodes restart every few milliseconds with hardly any downtime, on one hot scope.
    pub restart_storm: bool,
    /// Crashes inside durability windows: a node that just let messages leave while writes
    /// of its wait for the disk is sometimes crashed at once, losing those writes.
    pub sync_crashes: bool,
    /// Stalls at the edges: a node that takes a bare release or a cancel is often paused at
    /// once (a process stopped right after it queued the op), so the op is decided late,
    /// after a retry of the client elsewhere has moved on.
    pub stalls: bool,
    /// The nodes choose their voters (`core::placement`), from views the network shapes;
    /// more nodes than the voter target (three), in three zones.
    pub placement: bool,
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            min_nodes: 3,
            max_nodes: 6,
            max_clients: 8,
            max_scopes: 3,
            fault_us: 15_000_000,
            liveness_us: 30_000_000,
            drift_ppm: 50_000,
            roster_churn: false,
            restart_storm: false,
            sync_crashes: false,
            stalls: false,
            placement: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub seed: u64,
    pub broken: Option<Broken>,
    pub verbose: bool,
    pub profile: Profile,
    /// Let each seed pick its profile (`Profile::for_seed`) instead of using `profile`.
    pub mixed: bool,
}

impl Profile {
    /// The profile a seed runs under when profiles are mixed: an eighth the default, an
    /// eighth placement, a quarter roster churn, a quarter restart storms, an eighth crashes
    /// in sync windows, an eighth stalls at the edges.
    pub fn for_seed(seed: u64) -> Profile {
        match seed % 8 {
            1 => Profile::placement(),
            2 | 6 => Profile { roster_churn: true, ..Profile::default() },
            3 | 7 => Profile { restart_storm: true, ..Profile::default() },
            4 => Profile { sync_crashes: true, ..Profile::default() },
            5 => Profile::stalls(),
            _ => Profile::default(),
        }
    }

    /// Stalls at the edges, on one hot scope where every lock waits.
    pub fn stalls() -> Profile {
        Profile { stalls: true, max_scopes: 1, max_clients: 3, ..Profile::default() }
    }

    /// Placement chooses the voters among four to seven nodes.
    pub fn placement() -> Profile {
        Profile { placement: true, min_nodes: 4, max_nodes: 7, ..Profile::default() }
    }

    pub fn name(&self) -> &'static str {
        if self.placement {
            return "placement";
        }
        match (self.roster_churn, self.restart_storm, self.sync_crashes, self.stalls) {
            (true, ..) => "roster-churn",
            (_, true, ..) => "restart-storm",
            (_, _, true, _) => "sync-crash",
            (.., true) => "stalls",
            _ => "mixed-faults",
        }
    }
}

/// What one seed's run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub violations: Vec<String>,
    /// Grants that clients trusted (a measure of how much the run exercised).
    pub grants: u64,
    /// Auto leases granted, and how many were chosen from the history's percentile.
    pub auto_leases: (u64, u64),
    pub events: u64,
    pub roster_version: u64,
    pub crashes: u64,
    pub wipes: u64,
    pub pauses: u64,
    pub partitions: u64,
    /// Simulated time the run covered, in microseconds.
    pub simulated_us: u64,
}

/// Runs one seed.
pub fn run(options: &Options) -> Report {
    if options.mixed {
        let options = Options { profile: Profile::for_seed(options.seed), mixed: false, ..options.clone() };
        return world::World::new(&options).run();
    }
    world::World::new(options).run()
}

/// Runs seeds `first..first + count` on `threads` threads; returns (seed, report) in seed order.
pub fn run_many(options: &Options, first: u64, count: u64, threads: usize) -> Vec<(u64, Report)> {
    let next = std::sync::atomic::AtomicU64::new(first);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= first + count {
                    break;
                }
                let report = run(&Options { seed, ..options.clone() });
                results.lock().unwrap_or_else(|e| e.into_inner()).push((seed, report));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(seed, _)| *seed);
    results
}

/// Runs seeds `first..first + count` in order until one reports a violation; returns that
/// seed and its report, or `None` if every seed passed.
pub fn first_violation(options: &Options, first: u64, count: u64) -> Option<(u64, Report)> {
    (first..first + count)
        .map(|seed| (seed, run(&Options { seed, ..options.clone() })))
        .find(|(_, report)| !report.violations.is_empty())
}

/// Parses a broken variant's name as the CLI and tests spell it.
pub fn parse_broken(name: &str) -> Option<Broken> {
    Some(match name {
        "quorum-over-reachable" => Broken::QuorumOverReachable,
        "forget-promises-on-restart" => Broken::ForgetPromisesOnRestart,
        "expiry-ignores-drift" => Broken::ExpiryIgnoresDrift,
        "ages-from-stale-promises" => Broken::AgesFromStalePromises,
        "roster-installed-when-accepted" => Broken::RosterInstalledWhenAccepted,
        "roster-change-before-sweep" => Broken::RosterChangeBeforeSweep,
        "bare-refusal" => Broken::BareRefusal,
        "no-successor-promise" => Broken::NoSuccessorPromise,
        "send-before-write" => Broken::SendBeforeWrite,
        "early-before-earlier-batches" => Broken::EarlyBeforeEarlierBatches,
        "bare-unlock-without-arrival-rule" => Broken::BareUnlockWithoutArrivalRule,
        "cancel-frees-reported-grant" => Broken::CancelFreesReportedGrant,
        "locked-before-reported" => Broken::LockedBeforeReported,
        "no-authorization" => Broken::NoAuthorization,
        "commit-without-proof" => Broken::CommitWithoutProof,
        "no-vouches" => Broken::NoVouches,
        _ => return None,
    })
}
