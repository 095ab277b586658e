//! Real network partitions: agents on 127.0.0.N in a private network namespace, links cut with
//! nftables. Needs root and `nft`; `scripts/test.sh` runs this binary only then, and says so
//! when it cannot.

mod support;

use std::time::Duration;

use support::{get_text, post, wait_for, Cluster};

fn lock(c: &Cluster, node: usize, scope: &str, holder: &str) -> (u16, serde_json::Value) {
    lock_for(c, node, scope, holder, "2s")
}

fn lock_for(c: &Cluster, node: usize, scope: &str, holder: &str, lease: &str) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"scope": "{scope}", "action": "lock", "holder": "{holder}", "timeout": "{lease}"}}"#);
    post(c.http(node), &body).unwrap_or((0, serde_json::Value::Null))
}

#[test]
fn an_isolated_node_refuses_while_the_majority_goes_on_and_heals() {
    let mut c = Cluster::in_private_network("isolate", 3).expect("root and nft (scripts/test.sh runs this only then)");
    c.start_all(&["--bootstrap-expect", "3"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    let (status, body) = lock(&c, 0, "p", "before");
    assert_eq!(status, 200, "{body}");
    let first = body["fencing_token"].as_u64().unwrap();

    c.split(&[2], &[0, 1]);
    // The minority side never grants; the majority side does, once the old lease ran out.
    let (status, body) = lock(&c, 2, "q", "minority");
    assert_eq!(status, 503, "the isolated node granted: {body}");
    let mut token = 0;
    wait_for("the majority to grant", Duration::from_secs(30), || {
        let (status, body) = lock(&c, 1, "p", "majority");
        token = body["fencing_token"].as_u64().unwrap_or(0);
        status == 200
    });
    assert!(token > first);

    c.heal();
    wait_for("the healed node to serve again", Duration::from_secs(30), || lock(&c, 2, "r", "healed").0 == 200);
}

#[test]
fn a_one_way_cut_never_yields_two_holders() {
    let mut c = Cluster::in_private_network("oneway", 3).expect("root and nft");
    c.start_all(&["--bootstrap-expect", "3"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    // node-1 can send to node-3 but not hear from it, and the other way round for node-2.
    c.cut_one_way(2, 0);
    c.cut_one_way(1, 2);
    let mut holders = Vec::new();
    for (i, node) in [0usize, 1, 2, 0, 1, 2].into_iter().enumerate() {
        let (status, body) = lock_for(&c, node, "contended", &format!("h{i}"), "120s");
        if status == 200 {
            holders.push(body["fencing_token"].as_u64().unwrap());
        }
    }
    // A 120 s lease outlives the test: at most one grant may ever be told "locked".
    assert!(holders.len() <= 1, "two holders of one write lock: tokens {holders:?}");
    let (status, body) = support::get(c.http(0), "/api/v1.0/lock/contended").unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("locked")), "the majority side could lock: {body}");
    assert_eq!(body["holders"].as_array().map(Vec::len), Some(1), "{body}");
}

/// Regression (review, PROTOCOL §11.10), on real processes: an unlock naming no grant, held up at a node whose
/// messages to the others are cut, must not free the grant its holder took again meanwhile
/// through another node. (Before the arrival rule, node-3 released token 2 after the heal and
/// bob got token 3 while h still trusted token 2.)
#[test]
fn a_bare_unlock_held_up_at_a_cut_off_node_does_not_free_a_later_grant() {
    let mut c = Cluster::in_private_network("stale-unlock", 3).expect("root and nft");
    // Long enough for node-3's proposer to keep retrying the unlock until the heal.
    c.start_all(&["--bootstrap-expect", "3", "--request-timeout-ms", "20000"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    let (status, body) = lock_for(&c, 0, "job", "h", "60s");
    assert_eq!(status, 200, "{body}");
    // node-3 still hears the others (so it does not fail fast) but nothing it sends arrives.
    c.cut_one_way(2, 0);
    c.cut_one_way(2, 1);
    let node3 = c.http(2);
    let stale = std::thread::spawn(move || post(node3, r#"{"scope": "job", "action": "unlock", "holder": "h"}"#));
    wait_for("node-3 to hold the unlock", Duration::from_secs(10), || {
        get_text(node3, "/metrics").is_ok_and(|(_, m)| m.lines().any(|l| l.starts_with("lockmesh_requests_in_flight ") && !l.ends_with(" 0")))
    });
    // h gives up on that call, unlocks through node-1 and locks again.
    let (status, body) = post(c.http(0), r#"{"scope": "job", "action": "unlock", "holder": "h"}"#).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("unlocked")), "{body}");
    let (status, body) = lock_for(&c, 0, "job", "h", "60s");
    assert_eq!(status, 200, "{body}");
    let token = body["fencing_token"].as_u64().unwrap();
    c.heal();
    // Decided after the heal: it found h's grant newer than its arrival.
    let (status, body) = stale.join().unwrap().unwrap();
    assert_eq!((status, body["status"].as_str()), (409, Some("not_holder")), "the held-up unlock, with token {token} held: {body}");
    // h trusts token 2 for a minute: nobody else may be granted the scope.
    let (status, body) = lock_for(&c, 1, "job", "bob", "60s");
    assert_eq!((status, body["status"].as_str()), (409, Some("busy")), "bob was granted while h holds token {token}: {body}");
}
