//! Real network partitions: agents on 127.0.0.N in a private network namespace, links cut with
//! nftables. Needs root and `nft`; `scripts/test.sh` runs this binary only then, and says so
//! when it cannot.

mod support;

use std::time::Duration;

use support::{post, wait_for, Cluster};

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
