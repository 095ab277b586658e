//! The protocol keeps the safety contract and recovers after healing, over many seeds of
//! each fault profile. A failure prints the seed: `scripts/sim.sh --seed S -v` replays it.

use lockmesh_sim::{run_many, Options, Profile};

fn assert_clean(profile: Profile, seeds: u64) {
    let options = Options { profile, ..Options::default() };
    let results = run_many(&options, 0, seeds, 1);
    let mut failures = Vec::new();
    let mut grants = 0;
    for (seed, report) in &results {
        grants += report.grants;
        for v in &report.violations {
            failures.push(format!("seed {seed}: {v}"));
        }
    }
    // A run in which clients got nothing would prove nothing.
    assert!(grants > seeds * 3, "only {grants} grants trusted over {seeds} seeds");
    assert!(failures.is_empty(), "{} violations:\n{}", failures.len(), failures.join("\n"));
}

/// Message loss, duplication, delay, partitions, crashes, pauses, wiped disks, drifting
/// clocks, and roster changes in half the seeds.
#[test]
fn mixed_faults_1000_seeds() {
    assert_clean(Profile::default(), 1000);
}

/// Roster changes every 20–300 ms on top of the mixed faults.
#[test]
fn roster_churn_400_seeds() {
    assert_clean(Profile { roster_churn: true, ..Profile::default() }, 400);
}

/// Nodes restarting every few milliseconds while clients fight over one scope.
#[test]
fn restart_storm_400_seeds() {
    assert_clean(Profile { restart_storm: true, ..Profile::default() }, 400);
}

/// The mixed faults, plus crashes right after a node let messages leave while writes of its
/// were still unsynced.
#[test]
fn sync_crash_400_seeds() {
    assert_clean(Profile { sync_crashes: true, ..Profile::default() }, 400);
}

/// The mixed faults on one hot scope where every lock waits, with nodes stopped right after
/// they queue a cancel or a bare release, and clients that give up on calls early and retry
/// elsewhere.
#[test]
fn stalls_400_seeds() {
    assert_clean(Profile::stalls(), 400);
}
