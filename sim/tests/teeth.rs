//! The simulator has teeth: each known-broken variant of the protocol (compiled only into
//! test builds) must be caught within the seeds tried. If one of these fails, the simulator
//! has gone blind to a class of bugs, whatever the other tests say.

use lockmesh_sim::{first_violation, Broken, Options, Profile};

fn assert_caught(broken: Broken, profile: Profile, seeds: u64) {
    let options = Options { broken: Some(broken), profile, ..Options::default() };
    match first_violation(&options, 0, seeds) {
        Some((seed, report)) => println!("{broken:?} caught at seed {seed}: {}", report.violations[0]),
        None => panic!("{broken:?} went unnoticed in {seeds} seeds"),
    }
}

#[test]
fn catches_quorum_counted_over_reachable_members() {
    assert_caught(Broken::QuorumOverReachable, Profile::default(), 200);
}

#[test]
fn catches_a_voter_that_forgets_its_promises_on_restart() {
    assert_caught(Broken::ForgetPromisesOnRestart, Profile { restart_storm: true, ..Profile::default() }, 1000);
}

#[test]
fn catches_lease_expiry_that_ignores_drift() {
    assert_caught(Broken::ExpiryIgnoresDrift, Profile::default(), 1000);
}

#[test]
fn catches_ages_taken_from_promises_below_the_highest_ballot() {
    assert_caught(Broken::AgesFromStalePromises, Profile::default(), 200);
}

#[test]
fn catches_a_roster_installed_when_merely_accepted() {
    assert_caught(Broken::RosterInstalledWhenAccepted, Profile { roster_churn: true, ..Profile::default() }, 500);
}

#[test]
fn catches_a_roster_change_applied_before_the_sweep_finished() {
    // (Removals wait for vouches since issue 15: fewer changes per seed, first caught at 1846.)
    assert_caught(Broken::RosterChangeBeforeSweep, Profile { roster_churn: true, ..Profile::default() }, 2200);
}

#[test]
fn catches_a_bare_busy_after_an_accept_went_out() {
    assert_caught(Broken::BareRefusal, Profile::default(), 1000);
}

#[test]
fn catches_a_fast_path_whose_voters_did_not_promise_the_successor() {
    assert_caught(Broken::NoSuccessorPromise, Profile::default(), 1000);
}

#[test]
fn catches_messages_and_replies_sent_before_their_batch_is_durable() {
    assert_caught(Broken::SendBeforeWrite, Profile::default(), 200);
}

#[test]
fn catches_early_messages_sent_while_earlier_batches_wait_for_the_disk() {
    assert_caught(Broken::EarlyBeforeEarlierBatches, Profile { sync_crashes: true, ..Profile::default() }, 1000);
}

#[test]
fn catches_a_bare_unlock_that_frees_grants_younger_than_its_arrival() {
    assert_caught(Broken::BareUnlockWithoutArrivalRule, Profile::stalls(), 1000);
}

#[test]
fn catches_a_cancel_that_frees_a_grant_a_retry_collected() {
    assert_caught(Broken::CancelFreesReportedGrant, Profile::stalls(), 1000);
}

#[test]
fn catches_a_locked_answer_before_the_grant_is_marked_reported() {
    assert_caught(Broken::LockedBeforeReported, Profile::default(), 1000);
}

#[test]
fn catches_messages_taken_from_senders_the_roster_does_not_list() {
    assert_caught(Broken::NoAuthorization, Profile::default(), 200);
}

#[test]
fn catches_a_commit_installed_without_its_proof() {
    assert_caught(Broken::CommitWithoutProof, Profile::default(), 300);
}

#[test]
fn catches_a_removed_voters_ballots_taken_where_its_removal_is_not_known() {
    // First caught at seed 513 (since the operator demotes voters and sets targets too).
    assert_caught(Broken::NoVouches, Profile { roster_churn: true, ..Profile::default() }, 1200);
}
