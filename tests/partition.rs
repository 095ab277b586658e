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

/// The removal window (PROTOCOL §7, *Vouches*), on real processes: node-4 is cut off from
/// node-1..3 while they remove node-5 (an admin's ban), so node-4 still lists node-5 as a
/// voter. Someone holding node-5's certificate and key then asks node-4 to accept a record
/// granting the held scope to mallory, at a high ballot. Without vouches node-4 accepted it,
/// and once it caught up its own promise put mallory in the scope read through it. Now no
/// majority vouches for node-5 at node-4: it refuses, and the scope stays a's.
#[test]
fn a_removed_voter_cannot_plant_a_value_at_a_voter_that_missed_its_removal() {
    use lockmesh::core::{Ballot, Body, Envelope, Key, NodeId, Roster, Value};
    use lockmesh::mesh::endpoint::{Mesh, Payload};
    use lockmesh::mesh::wire::{Frame, PeerInfo};
    let mut c = Cluster::in_private_network("removed-plants", 5).expect("root and nft");
    c.start_all(&["--bootstrap-expect", "5"]);
    c.wait_for_roster(&[0, 1, 2, 3, 4], 5);
    let (status, body) = lock_for(&c, 0, "job", "a", "300s");
    assert_eq!(status, 200, "{body}");
    let first_token = body["fencing_token"].as_u64().unwrap();

    // Every voter's identity: its incarnation as it names itself in its log, its key as the
    // members list shows it.
    let (_, members) = support::get(c.http(0), "/api/v1.0/members").unwrap();
    let voters: Vec<NodeId> = (0..5)
        .map(|i| {
            let name = c.agents[i].name.clone();
            let incarnation = c.log(i).split(&format!("{name}#")).nth(1).and_then(|s| u64::from_str_radix(s.get(..16)?, 16).ok()).expect("the incarnation in the log");
            let hex = members["members"].as_array().unwrap().iter().find(|m| m["name"] == name).and_then(|m| m["key"].as_str()).unwrap().to_string();
            let key: [u8; 32] = (0..32).map(|b| u8::from_str_radix(&hex[2 * b..2 * b + 2], 16).unwrap()).collect::<Vec<_>>().try_into().unwrap();
            NodeId::new(name, incarnation, key)
        })
        .collect();
    let first = Roster::first(voters.clone(), 5);
    assert_eq!(members["cluster_id"].as_str(), Some(format!("{:032x}", first.cluster_id).as_str()), "the first roster as the voters have it");
    let (node4, node5) = (voters[3].clone(), voters[4].clone());

    // node-4 misses node-5's removal.
    c.split(&[3], &[0, 1, 2]);
    c.kill(4);
    let (status, body) = support::request(c.http(0), "POST", "/api/v1.0/members/remove", Some(r#"{"name": "node-5"}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    c.wait_for_roster(&[0, 1, 2], 4);
    let (_, lagging) = support::get(c.http(3), "/api/v1.0/members").unwrap();
    assert_eq!(lagging["roster_version"], 1, "node-4 heard of the removal: {lagging}");

    // As node-5, at its address: the Accept, and node-4's answer.
    let record = support::mallory();
    let (node4_mesh, node5_mesh, node5_http) = (c.agents[3].mesh, c.agents[4].mesh, c.agents[4].http);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = lockmesh::mesh::tls::Identity::load(&c.certs, "node-5").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mesh = Mesh::bind(node5_mesh, &identity, tx, |_| None).unwrap();
        let me = PeerInfo { name: "node-5".into(), incarnation: node5.incarnation, key: node5.key, mesh_addr: node5_mesh, http_addr: node5_http, bump: 0, zone: String::new() };
        let ballot = Ballot { round: 1 << 40, proposer: node5.incarnation };
        let body = Body::Accept { key: Key::Scope("job".into()), ballot, value: Value::Lock(record) };
        let envelope = Envelope { from: node5.clone(), to: node4.clone(), roster: Some(first.id()), body };
        // (node-4 keeps sending node-5 SWIM probes meanwhile.)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut resend = tokio::time::Instant::now();
        let mut answer = None;
        while answer.is_none() && tokio::time::Instant::now() < deadline {
            if tokio::time::Instant::now() >= resend {
                // Greeted lately, node-5 is up again for node-4, which then answers it.
                mesh.send(node4_mesh, Some("node-4"), &Frame::Hello { me: me.clone(), cluster_id: Some(first.cluster_id), roster_version: 1, peers: vec![], leaving: false, down: vec![] });
                mesh.send(node4_mesh, Some("node-4"), &Frame::Core(envelope.clone()));
                resend += Duration::from_secs(2);
            }
            if let Ok(Some(inbound)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                if let Payload::Frame(Frame::Core(Envelope { body: body @ (Body::Accepted { .. } | Body::Refuse { .. }), .. })) = inbound.payload {
                    answer = Some(body);
                }
            }
        }
        mesh.close();
        answer
    });
    let answer = answer.expect("node-4 answered the Accept");
    assert!(matches!(answer, Body::Refuse { why: lockmesh::core::message::Refusal::Unvouched, .. }), "node-4 took the removed voter's Accept: {answer:?}");
    let (_, metrics) = get_text(c.http(3), "/metrics").unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("lockmesh_unvouched_total") && !l.ends_with(" 0")), "counted");

    // node-4 catches up; the scope read through it is still a's, and b is refused.
    c.heal();
    c.wait_for_roster(&[0, 1, 2, 3], 4);
    let (status, body) = support::get(c.http(3), "/api/v1.0/lock/job").unwrap();
    assert_eq!(status, 200, "{body}");
    let holders: Vec<&str> = body["holders"].as_array().unwrap().iter().filter_map(|h| h["holder"].as_str()).collect();
    assert_eq!(holders, vec!["a"], "{body}");
    let (status, body) = lock_for(&c, 3, "job", "b", "10s");
    assert_ne!(status, 200, "b got a's scope: {body}");
    assert!(body["fencing_token"].as_u64().is_none_or(|t| t > first_token));
}
