//! Real `lockmesh agent` processes on 127.0.0.1: forming a cluster, the seed's lock/unlock
//! pair on every node, conflicts, crashes of a minority and a majority, restarts, joins,
//! graceful leave, lease expiry, and a stranger with a foreign certificate.

mod support;

use std::time::Duration;

use support::{get, post, wait_for, Cluster};

fn lock_body(scope: &str, holder: &str) -> String {
    format!(r#"{{"scope": "{scope}", "action": "lock", "holder": "{holder}"}}"#)
}

fn unlock_body(scope: &str, holder: &str) -> String {
    format!(r#"{{"scope": "{scope}", "action": "unlock", "holder": "{holder}"}}"#)
}

#[test]
fn three_nodes_form_a_cluster_and_serve_the_seed_requests_on_every_node() {
    let c = Cluster::started("seed", 3);
    let mut last_token = 0;
    for i in 0..3 {
        // The seed's bare pair: no holder given, so it is derived from the client's address.
        let (status, body) = post(c.http(i), r#"{"scope": "db-migration", "action": "lock"}"#).unwrap();
        assert_eq!(status, 200, "lock on node {i}: {body}");
        assert_eq!(body["status"], "locked");
        assert_eq!(body["holder"], "anonymous@127.0.0.1");
        assert_eq!(body["lock_type"], "write");
        let token = body["fencing_token"].as_u64().unwrap();
        assert!(token > last_token, "tokens rise: {token} after {last_token}");
        last_token = token;
        assert!(body["quorum"].as_str().unwrap().ends_with("/3 nodes agreed"));
        // Another holder conflicts, on any node.
        let (status, body) = post(c.http((i + 1) % 3), &lock_body("db-migration", "someone-else")).unwrap();
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["status"], "busy");
        let (status, body) = get(c.http((i + 2) % 3), "/api/v1.0/lock/db-migration").unwrap();
        assert_eq!((status, body["status"].as_str()), (200, Some("locked")), "{body}");
        let (status, body) = post(c.http(i), r#"{"scope": "db-migration", "action": "unlock"}"#).unwrap();
        assert_eq!((status, body["status"].as_str()), (200, Some("unlocked")), "{body}");
    }
    // A request id names one holder's request: another holder borrowing it gets nothing.
    let alice = r#"{"scope": "ids", "action": "lock", "holder": "alice", "request_id": "migrate-42"}"#;
    let eve = r#"{"scope": "ids", "action": "lock", "holder": "eve", "request_id": "migrate-42"}"#;
    assert_eq!(post(c.http(0), alice).unwrap().0, 200);
    let (status, body) = post(c.http(1), eve).unwrap();
    assert_eq!((status, body["status"].as_str()), (409, Some("busy")), "{body}");
    // Held scopes are listed; metrics count what happened.
    let (status, body) = post(c.http(0), &lock_body("listed", "lister")).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(c.http(1), "/api/v1.0/locks").unwrap();
    assert_eq!(status, 200);
    let listed: Vec<&str> = body["locks"].as_array().unwrap().iter().map(|l| l["scope"].as_str().unwrap()).collect();
    assert_eq!(listed, vec!["ids", "listed"], "{body}");
    let (status, metrics) = support::get_text(c.http(0), "/metrics").unwrap();
    assert_eq!(status, 200);
    for line in ["lockmesh_lock_requests_total{outcome=\"locked\"}", "lockmesh_ballots_total", "lockmesh_members{state=\"alive\"} 3", "lockmesh_roster_voters 3"] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    // Unlocking a free scope is idempotent; bad input changes nothing.
    let (status, _) = post(c.http(0), r#"{"scope": "db-migration", "action": "unlock"}"#).unwrap();
    assert_eq!(status, 200);
    let (status, body) = post(c.http(0), r#"{"scope": "no spaces allowed", "action": "lock"}"#).unwrap();
    assert_eq!((status, body["status"].as_str()), (400, Some("error")), "{body}");
    let (status, _) = post(c.http(0), "not json").unwrap();
    assert_eq!(status, 400);
}

#[test]
fn a_minority_may_crash_a_majority_may_not_and_restarts_keep_tokens_rising() {
    let mut c = Cluster::started("crash", 3);
    let (_, body) = post(c.http(0), &lock_body("jobs", "a")).unwrap();
    let first = body["fencing_token"].as_u64().unwrap();
    post(c.http(0), &unlock_body("jobs", "a")).unwrap();

    c.kill(2);
    let (status, body) = post(c.http(1), &lock_body("jobs", "b")).unwrap();
    assert_eq!(status, 200, "with one of three down: {body}");
    post(c.http(1), &unlock_body("jobs", "b")).unwrap();

    c.kill(1);
    let (status, body) = post(c.http(0), &lock_body("jobs", "c")).unwrap();
    assert_eq!(status, 503, "with two of three down: {body}");
    assert!(["no_quorum", "timeout"].contains(&body["status"].as_str().unwrap()), "{body}");
    // With a request id of the client's, an earlier attempt of it (elsewhere) may still take
    // effect: never a definite "no_quorum".
    let named = r#"{"scope": "jobs", "action": "lock", "holder": "c", "request_id": "c-1"}"#;
    let (status, body) = post(c.http(0), named).unwrap();
    assert_eq!((status, body["status"].as_str()), (503, Some("timeout")), "{body}");

    c.start(1, &["--bootstrap-expect", "3"]);
    c.start(2, &["--bootstrap-expect", "3"]);
    let mut token = 0;
    wait_for("locking to work again", Duration::from_secs(60), || match post(c.http(2), &lock_body("jobs", "d")) {
        Ok((200, body)) => {
            token = body["fencing_token"].as_u64().unwrap_or(0);
            true
        }
        _ => false,
    });
    assert!(token > first + 1, "token {token} after {first} and one more grant");
}

#[test]
fn a_new_node_becomes_a_voter_and_a_leaving_node_shrinks_the_roster() {
    let mut c = Cluster::started("join", 3);
    let four = c.add_agent();
    c.start(four, &[]);
    c.wait_for_roster(&[0, 1, 2, 3], 4);
    let (status, body) = post(c.http(3), &lock_body("deploy", "new-node-user")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["quorum"].as_str().unwrap().ends_with("/4 nodes agreed"), "{body}");
    post(c.http(3), &unlock_body("deploy", "new-node-user")).unwrap();

    assert!(c.terminate(1, Duration::from_secs(20)), "node-2 left within 20 s");
    c.wait_for_roster(&[0, 2, 3], 3);
    let (status, body) = post(c.http(0), &lock_body("deploy", "after-leave")).unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_node_that_cannot_leave_the_roster_still_exits_on_sigterm() {
    // Two of three voters are gone: leaving needs a roster change no majority can make. The
    // refusal comes back at once, without the disk; retrying it from the reply once spun
    // the node task, so the leave deadline never fired and SIGTERM was ignored.
    let mut c = Cluster::started("stuck-leave", 3);
    c.kill(1);
    c.kill(2);
    wait_for("node-1 to see both peers down", Duration::from_secs(30), || {
        let Ok((_, body)) = get(c.http(0), "/api/v1.0/members") else { return false };
        let members = body["members"].as_array().cloned().unwrap_or_default();
        members.iter().filter(|m| m["state"] == "down").count() == 2
    });
    assert!(c.terminate(0, Duration::from_secs(60)), "node-1 exited within 60 s of SIGTERM");
    assert!(c.log(0).contains("could not leave the roster in time"), "it gave up leaving, as it should");
}

#[test]
fn an_unrenewed_lease_expires_and_the_next_holder_gets_a_higher_token() {
    let c = Cluster::started("lease", 3);
    let (status, body) = post(c.http(0), r#"{"scope": "cron", "action": "lock", "holder": "dies", "timeout": "1s"}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let first = body["fencing_token"].as_u64().unwrap();
    let grant = body["grant"].as_str().unwrap().to_string();
    // Waiting in the queue, the next holder is handed the lock once the lease runs out.
    let (status, body) = post(c.http(1), r#"{"scope": "cron", "action": "lock", "holder": "next", "wait": "20s"}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["fencing_token"].as_u64().unwrap() > first);
    // The first holder's renewal, naming its grant, now fails; one naming no grant is refused
    // outright, as it could renew another process's grant of the same holder name.
    let (status, body) = post(c.http(0), &format!(r#"{{"scope": "cron", "action": "renew", "holder": "dies", "grant": "{grant}"}}"#)).unwrap();
    assert_eq!((status, body["status"].as_str()), (409, Some("not_holder")), "{body}");
    let (status, body) = post(c.http(0), r#"{"scope": "cron", "action": "renew", "holder": "dies"}"#).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("grant")), "{body}");
}

#[test]
fn a_node_with_a_foreign_certificate_is_kept_out() {
    let c = Cluster::started("stranger", 3);
    // A stranger with its own CA, claiming a name, joining node 0.
    let mut s = Cluster::new("stranger-ca", 4);
    s.agents[3].name = "node-4".into();
    let join = c.agents[0].mesh;
    s.agents[0].mesh = join;
    s.start(3, &["--bootstrap-expect", "4"]);
    // Give it every chance to gossip its way in; members must never list it.
    std::thread::sleep(Duration::from_secs(3));
    let (_, body) = get(c.http(0), "/api/v1.0/members").unwrap();
    let names: Vec<&str> = body["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"node-4"), "the stranger got in: {body}");
    assert_eq!(body["roster_size"], 3);
    assert!(c.log(0).contains("refused a connection"), "node-1 should log the refused handshake");
}

#[test]
fn an_admin_removes_a_crashed_voter() {
    let mut c = Cluster::started("remove", 3);
    c.kill(2);
    let (status, body) = support::request(c.http(0), "POST", "/api/v1.0/members/remove", Some(r#"{"name": "node-3"}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["roster_size"], 2);
    c.wait_for_roster(&[0, 1], 2);
    let (status, body) = support::request(c.http(0), "POST", "/api/v1.0/members/remove", Some(r#"{"name": "nobody"}"#)).unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(c.http(1), &lock_body("after-removal", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["quorum"].as_str().unwrap().ends_with("/2 nodes agreed"), "{body}");
}

#[test]
fn swim_sees_a_killed_node_down_everywhere_and_up_again_after_restart() {
    let mut c = Cluster::started("swim", 3);
    let state_of = |c: &Cluster, at: usize, name: &str| -> String {
        get(c.http(at), "/api/v1.0/members")
            .ok()
            .and_then(|(_, v)| v["members"].as_array().cloned())
            .and_then(|ms| ms.into_iter().find(|m| m["name"] == name))
            .and_then(|m| m["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    wait_for("node-3 alive everywhere", Duration::from_secs(30), || (0..2).all(|i| state_of(&c, i, "node-3") == "alive"));
    c.kill(2);
    wait_for("node-3 down everywhere", Duration::from_secs(30), || (0..2).all(|i| state_of(&c, i, "node-3") == "down"));
    c.start(2, &["--bootstrap-expect", "3"]);
    wait_for("node-3 alive again", Duration::from_secs(30), || (0..2).all(|i| state_of(&c, i, "node-3") == "alive"));
    assert!(c.log(0).contains("member up"), "SWIM reported members");
}

#[test]
fn users_and_roles_guard_the_api() {
    use base64::Engine;
    use support::{lockmesh, request_as};
    let mut c = Cluster::new("auth", 3);
    let users = c.dir.join("users.toml");
    let add = |name: &str, role: &str, password: &str| -> String {
        let out = std::process::Command::new(support::BIN)
            .args(["users", "add", "--file", users.to_str().unwrap(), "--name", name, "--role", role, "--password-env", "PW"])
            .env("PW", password)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    add("admin", "admin", "admin-secret");
    let ops_token = add("ops", "operator", "ops-secret");
    add("view", "viewer", "view-secret");
    let basic = |u: &str, p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));

    // Without --users or --no-auth the agent refuses to start, with one line and exit code 2.
    let out = lockmesh(&["agent", "--name", "x", "--data-dir", "/nonexistent", "--certs", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));

    let users_arg = users.to_str().unwrap().to_string();
    c.start_all(&["--bootstrap-expect", "3", "--users", &users_arg]);
    let api = c.http(0);
    wait_for("the cluster to form", Duration::from_secs(60), || {
        matches!(request_as(api, &basic("view", "view-secret"), "GET", "/api/v1.0/members", None), Ok((200, v)) if v["roster_size"] == 3)
    });
    let lock = r#"{"scope": "guarded", "action": "lock"}"#;
    assert_eq!(post(api, lock).unwrap().0, 401, "no credentials");
    assert_eq!(request_as(api, &basic("ops", "wrong"), "POST", "/api/v1.0/lock", Some(lock)).unwrap().0, 401);
    assert_eq!(request_as(api, &basic("view", "view-secret"), "POST", "/api/v1.0/lock", Some(lock)).unwrap().0, 403);
    let (status, body) = request_as(api, &basic("ops", "ops-secret"), "POST", "/api/v1.0/lock", Some(lock)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["holder"], "ops@127.0.0.1");
    let (status, body) = request_as(api, &basic("view", "view-secret"), "GET", "/api/v1.0/lock/guarded", None).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("locked")), "{body}");
    // An operator cannot act for someone else's holder, nor force.
    let as_admin = r#"{"scope": "guarded", "action": "unlock", "holder": "admin@127.0.0.1"}"#;
    assert_eq!(request_as(api, &format!("Bearer {ops_token}"), "POST", "/api/v1.0/lock", Some(as_admin)).unwrap().0, 403);
    let force = r#"{"scope": "guarded", "action": "unlock", "holder": "ops@127.0.0.1", "force": true}"#;
    assert_eq!(request_as(api, &format!("Bearer {ops_token}"), "POST", "/api/v1.0/lock", Some(force)).unwrap().0, 403);
    let (status, body) = request_as(api, &basic("admin", "admin-secret"), "POST", "/api/v1.0/lock", Some(force)).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")), "{body}");
    // The bearer token unlocks the operator's own lock.
    let unlock = r#"{"scope": "guarded", "action": "unlock"}"#;
    let (status, body) = request_as(api, &format!("Bearer {ops_token}"), "POST", "/api/v1.0/lock", Some(unlock)).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("unlocked")), "{body}");
    assert_eq!(request_as(api, &basic("ops", "ops-secret"), "POST", "/api/v1.0/members/remove", Some(r#"{"name": "node-3"}"#)).unwrap().0, 403);
}

#[test]
fn a_voter_down_longer_than_reap_after_is_removed() {
    let mut c = Cluster::new("reap", 3);
    c.start_all(&["--bootstrap-expect", "3", "--reap-after-secs", "2"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    c.kill(2);
    c.wait_for_roster(&[0, 1], 2);
    let (status, body) = post(c.http(1), &lock_body("after-reap", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(c.log(0).contains("reaping") || c.log(1).contains("reaping"), "the reap is logged");
}

#[test]
fn five_nodes_survive_two_crashes_but_not_three() {
    let mut c = Cluster::new("five", 5);
    c.start_all(&["--bootstrap-expect", "5"]);
    c.wait_for_roster(&[0, 1, 2, 3, 4], 5);
    c.kill(3);
    c.kill(4);
    let (status, body) = post(c.http(0), &lock_body("five", "a")).unwrap();
    assert_eq!(status, 200, "two of five down: {body}");
    assert!(body["quorum"].as_str().unwrap().ends_with("/5 nodes agreed"), "{body}");
    post(c.http(0), &unlock_body("five", "a")).unwrap();
    c.kill(2);
    let started = std::time::Instant::now();
    let (status, body) = post(c.http(1), &lock_body("five", "b")).unwrap();
    assert_eq!(status, 503, "three of five down: {body}");
    // Within the request timeout (3 s here), with room for a slow machine.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[test]
fn malformed_peer_input_closes_streams_and_changes_nothing() {
    let mut c = Cluster::started("garbage", 3);
    // A peer with a valid certificate (signed by the cluster CA) that speaks nonsense.
    let rogue = c.add_agent();
    let certs = c.certs.clone();
    let name = c.agents[rogue].name.clone();
    let target = c.agents[0].mesh;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (endpoint, id) = support::mesh_client(&certs, &name);
        let connection = endpoint.connect(target, lockmesh::mesh::tls::dial_name()).unwrap().await.unwrap();
        // Streams carry frames behind a 4-byte length: one claiming more than the limit, one
        // cut off inside its frame, one that is not a frame, and nothing at all.
        let too_long = ((lockmesh::mesh::wire::MAX_FRAME + 1) as u32).to_be_bytes();
        let cut_off = [&10u32.to_be_bytes()[..], b"abc"].concat();
        let garbage = [&9u32.to_be_bytes()[..], b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"].concat();
        for payload in [&too_long[..], &cut_off[..], &garbage[..], &[][..]] {
            if let Ok(mut stream) = connection.open_uni().await {
                let _ = stream.write_all(payload).await;
                let _ = stream.finish();
            }
        }
        for junk in [&b"junk"[..], &[0u8; 900][..]] {
            let _ = connection.send_datagram(bytes::Bytes::copy_from_slice(junk));
        }
        // A frame that speaks for another node than the certificate's is refused too.
        let hello = lockmesh::mesh::wire::Frame::Hello {
            me: lockmesh::mesh::wire::PeerInfo { name: "node-1".into(), incarnation: 1, key: [0; 32], mesh_addr: target, http_addr: target, bump: 1, zone: String::new() },
            cluster_id: None,
            roster_version: 0,
            peers: vec![],
            leaving: false,
            down: vec![],
        };
        if let Ok(mut stream) = connection.open_uni().await {
            let _ = stream.write_all(&lockmesh::mesh::wire::encode_prefixed(&hello).unwrap()).await;
            let _ = stream.finish();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A build of an earlier wire format cannot connect, and the node says why.
        let mut old = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        old.set_default_client_config(lockmesh::mesh::tls::client_config_speaking(&id, b"lockmesh/2").unwrap());
        let refused = old.connect(target, lockmesh::mesh::tls::dial_name()).unwrap().await;
        assert!(refused.is_err(), "a node of another wire format was let in");
    });
    let (status, body) = post(c.http(0), &lock_body("still-fine", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(c.log(0).contains("malformed") || c.log(0).contains("unreadable"), "bad frames are logged");
    assert!(c.log(0).contains("certificate does not carry"), "the impostor is logged");
    wait_for("the format mismatch to be logged", Duration::from_secs(10), || c.log(0).contains("another lockmesh wire format"));
}

/// A stranger (a certificate of the cluster CA, never admitted) floods a node with greetings
/// on one stream and with handshakes: the mesh drops its frames beyond the per-key limit and
/// refuses its handshakes beyond the per-address limit, counts and logs both, and the cluster
/// serves on with its roster unchanged.
#[test]
fn a_stranger_flooding_frames_and_handshakes_is_held_to_its_rate_limits() {
    let mut c = Cluster::started("flood", 3);
    let rogue = c.add_agent();
    let certs = c.certs.clone();
    let name = c.agents[rogue].name.clone();
    let target = c.agents[0].mesh;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        use lockmesh::mesh::wire::{encode_prefixed, Frame, PeerInfo};
        let (endpoint, id) = support::mesh_client(&certs, &name);
        let connection = endpoint.connect(target, lockmesh::mesh::tls::dial_name()).unwrap().await.unwrap();
        let local = endpoint.local_addr().unwrap();
        // Leaving, so that auto-admission does not take it in: only the flood is under test.
        let me = PeerInfo { name: name.clone(), incarnation: 1, key: id.key_hash().unwrap(), mesh_addr: local, http_addr: local, bump: 1, zone: String::new() };
        let hello = Frame::Hello { me, cluster_id: None, roster_version: 0, peers: vec![], leaving: true, down: vec![] };
        let mut stream = connection.open_uni().await.unwrap();
        stream.write_all(&encode_prefixed(&hello).unwrap().repeat(5000)).await.unwrap();
        let _ = stream.finish();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Handshakes, one after another, until one is refused.
        let mut refused = false;
        for _ in 0..5000 {
            match endpoint.connect(target, lockmesh::mesh::tls::dial_name()).unwrap().await {
                Ok(extra) => extra.close(quinn::VarInt::from_u32(0), b""),
                Err(quinn::ConnectionError::ConnectionClosed(_)) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("a handshake failed otherwise than by refusal: {e}"),
            }
        }
        assert!(refused, "5000 handshakes from one address, none refused");
    });
    let counted = |name: &str| {
        support::get_text(c.http(0), "/metrics").is_ok_and(|(_, m)| m.lines().any(|l| l.starts_with(name) && !l.ends_with(" 0")))
    };
    wait_for("the flood to be counted", Duration::from_secs(30), || {
        counted("lockmesh_mesh_frames_dropped_total") && counted("lockmesh_mesh_handshakes_refused_total")
    });
    assert!(c.log(0).contains("sends too many") && c.log(0).contains("opens too many"), "the limits are logged");
    wait_for("node-1 to serve a lock", Duration::from_secs(30), || post(c.http(0), &lock_body("after-flood", "x")).is_ok_and(|(s, _)| s == 200));
    let (_, members) = get(c.http(0), "/api/v1.0/members").unwrap();
    assert_eq!(members["roster_size"], 3, "{members}");
}

#[test]
fn a_data_dir_of_another_cluster_is_refused() {
    let mut a = Cluster::new("cluster-a", 1);
    a.start(0, &["--bootstrap"]);
    a.wait_for_roster(&[0], 1);
    a.kill(0);
    let mut b = Cluster::new("cluster-b", 3);
    b.start_all(&["--bootstrap-expect", "3"]);
    b.wait_for_roster(&[0, 1, 2], 3);
    // Cluster A's node restarts with its data dir, certified by B's CA, pointed at B.
    let four = b.add_agent();
    b.agents[four].data_dir = a.agents[0].data_dir.clone();
    b.start(four, &[]);
    wait_for("B to notice the foreign cluster", Duration::from_secs(30), || b.log(0).contains("another cluster") || b.log(four).contains("another cluster"));
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = get(b.http(0), "/api/v1.0/members").unwrap();
    assert_eq!(body["roster_size"], 3, "the foreign node was admitted: {body}");
}

#[test]
fn bad_flags_and_settings_get_one_line_and_exit_code_2() {
    use support::lockmesh;
    let dir = std::env::temp_dir().join(format!("lockmesh-badflags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "name = \"n1\"\ncolour = \"blue\"\n").unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["agent".into(), "--bogus".into()],
        vec!["agent".into(), "--name".into(), "n1".into(), "--http".into(), "not-an-address".into()],
        vec!["agent".into(), "--name".into(), "Bad_Name".into(), "--data-dir".into(), "/x".into(), "--certs".into(), "/x".into(), "--no-auth".into()],
        vec!["agent".into(), "--config".into(), config.to_string_lossy().into_owned(), "--no-auth".into()],
        vec!["certs".into(), "node".into(), dir.to_string_lossy().into_owned(), "n1".into()],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lockmesh(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wiped_node_comes_back_as_a_new_voter_replacing_its_old_self() {
    let mut c = Cluster::started("wipe", 3);
    let (_, body) = post(c.http(0), &lock_body("amnesia", "a")).unwrap();
    let first = body["fencing_token"].as_u64().unwrap();
    post(c.http(0), &unlock_body("amnesia", "a")).unwrap();
    c.wipe(2);
    c.start(2, &[]);
    // The old incarnation is removed and the new one added, one change at a time.
    wait_for("node-3 to vote again with its new disk", Duration::from_secs(60), || {
        get(c.http(0), "/api/v1.0/members")
            .map(|(_, v)| {
                v["roster_size"] == 3
                    && v["sweep_done"] == true
                    && v["roster_version"].as_u64().unwrap_or(0) >= 3
                    && v["members"].as_array().unwrap().iter().any(|m| m["name"] == "node-3" && m["voter"] == true)
            })
            .unwrap_or(false)
    });
    // The new node learns the roster too (it is told of the change after it is decided).
    c.wait_for_roster(&[0, 1, 2], 3);
    // Tokens never go back, whatever quorum answers.
    for node in [2, 1, 0] {
        let (status, body) = post(c.http(node), &lock_body("amnesia", "b")).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body["fencing_token"].as_u64().unwrap() > first, "{body}");
        post(c.http(node), &unlock_body("amnesia", "b")).unwrap();
    }
}

#[test]
fn a_paused_node_is_outvoted_and_rejoins_when_resumed() {
    let c = Cluster::started("pause", 3);
    c.pause(2, true);
    let (status, body) = post(c.http(0), &lock_body("paused", "a")).unwrap();
    assert_eq!(status, 200, "with node-3 paused: {body}");
    post(c.http(0), &unlock_body("paused", "a")).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    c.pause(2, false);
    wait_for("the resumed node to serve", Duration::from_secs(30), || {
        matches!(post(c.http(2), &lock_body("paused", "c")), Ok((200, _)))
    });
}

#[test]
fn with_require_grant_an_unlock_must_name_its_grant() {
    let mut c = Cluster::new("require-grant", 3);
    c.start_all(&["--bootstrap-expect", "3", "--require-grant"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    let (status, body) = post(c.http(0), &lock_body("strict", "a")).unwrap();
    assert_eq!(status, 200, "{body}");
    let grant = body["grant"].as_str().unwrap().to_string();
    let (status, body) = post(c.http(1), &unlock_body("strict", "a")).unwrap();
    assert_eq!(status, 400, "a bare unlock: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("--require-grant")), "{body}");
    let named = format!(r#"{{"scope": "strict", "action": "unlock", "holder": "a", "grant": "{grant}"}}"#);
    let (status, body) = post(c.http(1), &named).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("unlocked")), "{body}");
}

/// The review's attacks by a never-admitted certificate (signed by the cluster CA, valid for
/// its own name and key): a roster Commit, version +1000, in which it alone votes (two clients
/// then both got `locked, token 1`), signed with its own key, and an Accept granting a scope to
/// someone at a huge ballot, tagged with the roster in force (computed from the members' own
/// Hellos). Voters take neither: the roster stays, the scope is free, nobody crashes, and the
/// refusals are counted and logged.
#[test]
fn a_never_admitted_certificate_can_neither_split_the_cluster_nor_grant_a_scope() {
    let mut c = Cluster::started("never-admitted", 3);
    let rogue = c.add_agent();
    let name = c.agents[rogue].name.clone();
    forge_commit_and_accept(&c, &name, 3);
}

/// The same attacks by a voter removed from the roster (it left; no ban keeps its certificate
/// out), with its own certificate and key: it voted in the first roster, and signs a later one
/// of its own.
#[test]
fn a_removed_voter_can_neither_split_the_cluster_nor_grant_a_scope() {
    let mut c = Cluster::started("removed-voter", 3);
    assert!(c.terminate(2, Duration::from_secs(30)), "node-3 left");
    c.wait_for_roster(&[0, 1], 2);
    let name = c.agents[2].name.clone();
    forge_commit_and_accept(&c, &name, 2);
}

/// As `name` (a certificate of the cluster CA), greets the cluster's `members` until each
/// greeted back, then sends each a forged Commit and Accept; checks that nothing came of them.
fn forge_commit_and_accept(c: &Cluster, name: &str, members: usize) {
    use lockmesh::core::{Ballot, Body, Envelope, Key, NodeId, Roster, Value};
    use lockmesh::mesh::wire::{Frame, PeerInfo};
    let certs = c.certs.clone();
    let name = name.to_string();
    let targets: Vec<std::net::SocketAddr> = (0..members).map(|i| c.agents[i].mesh).collect();
    let (_, before) = get(c.http(0), "/api/v1.0/members").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = lockmesh::mesh::tls::Identity::load(&certs, &name).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mesh = lockmesh::mesh::endpoint::Mesh::bind("127.0.0.1:0".parse().unwrap(), &identity, tx, |_| None).unwrap();
        let addr = mesh.local_addr().unwrap();
        let me = PeerInfo { name: name.clone(), incarnation: 1, key: identity.key_hash().unwrap(), mesh_addr: addr, http_addr: addr, bump: 1, zone: String::new() };
        // Greet every member until each has greeted back: their Hellos name them and the cluster.
        let mut greeted: std::collections::BTreeMap<String, (PeerInfo, u128, u64)> = Default::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while greeted.len() < members {
            assert!(tokio::time::Instant::now() < deadline, "the members never greeted back: {greeted:?}");
            for t in &targets {
                mesh.send(*t, None, &Frame::Hello { me: me.clone(), cluster_id: None, roster_version: 0, peers: vec![], leaving: true, down: vec![] });
            }
            while let Ok(Some(inbound)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                if let lockmesh::mesh::endpoint::Payload::Frame(Frame::Hello { me: peer, cluster_id: Some(id), roster_version, .. }) = inbound.payload {
                    greeted.insert(peer.name.clone(), (peer, id, roster_version));
                }
            }
        }
        let ids: Vec<NodeId> = greeted.values().map(|(p, _, _)| NodeId::new(p.name.clone(), p.incarnation, p.key)).collect();
        let (cluster_id, version) = greeted.values().map(|(_, id, v)| (*id, *v)).next().unwrap();
        // The roster in force, as far as its id goes (voters, version, cluster).
        let in_force = Roster { cluster_id, version, voters: ids.clone(), members: vec![], banned: vec![], target: 5, sweep_done: true, round_floor: 0 };
        let attacker = NodeId::new(name.clone(), 1, me.key);
        let forged = Roster { version: version + 1000, voters: vec![attacker.clone()], ..in_force.clone() };
        // Signed with its own certificate's key, as a voter signs: no voter of the roster in
        // force, so no proof.
        let signer = lockmesh::mesh::signer::NodeSigner::new(&identity).unwrap();
        let under = in_force.id();
        let ballot = Ballot { round: 1 << 40, proposer: 1 };
        let signatures = vec![(attacker.clone(), lockmesh::core::proof::sign(&signer, ballot, under, &forged))];
        let link = lockmesh::core::Link { roster: forged.clone(), proof: lockmesh::core::Proof { ballot, under, signatures } };
        let record = support::mallory();
        for (t, to) in targets.iter().zip(&ids) {
            for body in [Body::Accept { key: Key::Scope("attacked".into()), ballot, value: Value::Lock(record.clone()) }, Body::Commit { links: vec![link.clone()] }] {
                let envelope = Envelope { from: attacker.clone(), to: to.clone(), roster: Some(in_force.id()), body };
                mesh.send(*t, None, &Frame::Core(envelope));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        mesh.close();
    });
    // Two clients on two nodes: one gets the scope (token 1, as nobody held it), the other is busy.
    let (status, first) = post(c.http(0), &lock_body("attacked", "alice")).unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["fencing_token"], 1, "{first}");
    let (status, second) = post(c.http(1), &lock_body("attacked", "bob")).unwrap();
    assert_ne!(status, 200, "two holders of one write lock: {second}");
    for i in 0..members {
        let (status, after) = get(c.http(i), "/api/v1.0/members").unwrap();
        assert_eq!(status, 200);
        assert_eq!(after["roster_version"], before["roster_version"], "node {i} installed a forged roster: {after}");
        assert_eq!(after["roster_size"], members);
        wait_for("the forged messages to be counted", Duration::from_secs(30), || {
            support::get_text(c.http(i), "/metrics").is_ok_and(|(_, m)| {
                let counted = |name: &str| m.lines().any(|l| l.starts_with(name) && !l.ends_with(" 0"));
                counted("lockmesh_unauthorized_peer_messages_total") && counted("lockmesh_unproven_rosters_total")
            })
        });
    }
    assert!(c.log(0).contains("unauthorized") && c.log(0).contains("unproven roster"), "the refusals are logged");
}

/// A revoked certificate is cut off: every node checks peers against `--crl` (the list
/// `lockmesh certs revoke` writes), re-reads it when it changes, closes the revoked node's
/// connections and refuses its handshakes. The others serve on (it is a voter down, until an
/// admin removes it); it can no longer take or grant anything.
#[test]
fn a_revoked_node_certificate_is_cut_off_while_the_cluster_serves() {
    let mut c = Cluster::new("revoked", 3);
    let certs = c.certs.to_str().unwrap().to_string();
    let out = support::lockmesh(&["certs", "crl", &certs]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crl = c.certs.join("crl.pem");
    c.start_all(&["--bootstrap-expect", "3", "--crl", crl.to_str().unwrap()]);
    c.wait_for_roster(&[0, 1, 2], 3);
    let (status, body) = post(c.http(2), &lock_body("before", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    let out = support::lockmesh(&["certs", "revoke", &certs, "node-3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("node-1 to close node-3's connections", Duration::from_secs(30), || c.log(0).contains("closed the connection of a revoked certificate"));
    wait_for("node-3 to be refused", Duration::from_secs(60), || post(c.http(2), &lock_body("after", "y")).is_ok_and(|(status, _)| status != 200));
    let (status, body) = post(c.http(0), &lock_body("after", "z")).unwrap();
    assert_eq!(status, 200, "the others serve on: {body}");
    std::thread::sleep(Duration::from_secs(5));
    let (status, body) = post(c.http(2), &lock_body("later", "y")).unwrap();
    assert_ne!(status, 200, "node-3 reached the others again: {body}");
}

fn role_of(c: &Cluster, at: usize, name: &str) -> Option<String> {
    let (_, v) = get(c.http(at), "/api/v1.0/members").ok()?;
    v["members"].as_array()?.iter().find(|m| m["name"] == name).and_then(|m| m["role"].as_str().map(str::to_string))
}

/// A review removed a running voter through the API and automatic admission put it back within
/// a second. An admin's removal now bans the node's name and key in the roster: it stays out
/// (a minute later too), its frames are refused at the mesh, its own API says it is no
/// member, and an admin's approval re-admits it.
#[test]
fn an_admins_removal_sticks_until_the_node_is_re_admitted() {
    let c = Cluster::started("removal-sticks", 3);
    let (status, body) = support::request(c.http(0), "POST", "/api/v1.0/members/remove", Some(r#"{"name": "node-3"}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["banned"], true, "{body}");
    c.wait_for_roster(&[0, 1], 2);
    wait_for("node-3 to learn it was removed", Duration::from_secs(30), || c.log(2).contains("an admin removed this node"));
    // node-3 runs on and keeps greeting; a minute later it is still out.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < until {
        for at in [0, 1] {
            let (_, v) = get(c.http(at), "/api/v1.0/members").unwrap();
            assert_eq!(v["roster_size"], 2, "node-3 came back: {v}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(role_of(&c, 0, "node-3").as_deref(), Some("banned"));
    let (_, v) = get(c.http(0), "/api/v1.0/members").unwrap();
    assert_eq!(v["banned"][0]["name"], "node-3", "{v}");
    let (status, body) = post(c.http(2), &lock_body("from-a-removed-node", "x")).unwrap();
    assert_eq!((status, body["status"].as_str()), (503, Some("not_member")), "{body}");
    assert!(c.log(0).contains("refused a node an admin removed"), "the mesh logs the refusal");
    let (status, body) = post(c.http(0), &lock_body("still-serving", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    // An admin re-admits it: the ban is lifted, and it is a voter again.
    let (status, body) = support::request(c.http(1), "POST", "/api/v1.0/members/approve", Some(r#"{"name": "node-3"}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unbanned"], true, "{body}");
    c.wait_for_roster(&[0, 1, 2], 3);
    let (status, body) = post(c.http(2), &lock_body("back-again", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
}

/// With `--admission approve` a new node waits, listed `pending`, until an admin approves it.
#[test]
fn with_admission_approve_a_new_node_waits_until_approved() {
    let mut c = Cluster::new("approve", 3);
    c.start_all(&["--bootstrap-expect", "3", "--admission", "approve"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    let new = c.add_agent();
    c.start(new, &["--admission", "approve"]);
    wait_for("node-4 to be listed pending", Duration::from_secs(30), || role_of(&c, 0, "node-4").as_deref() == Some("pending"));
    std::thread::sleep(Duration::from_secs(3));
    let (_, v) = get(c.http(0), "/api/v1.0/members").unwrap();
    assert_eq!((v["roster_size"].as_u64(), v["admission"].as_str()), (Some(3), Some("approve")), "{v}");
    let (status, body) = post(c.http(new), &lock_body("too-early", "x")).unwrap();
    assert_eq!((status, body["status"].as_str()), (503, Some("no_cluster")), "{body}");
    let (status, body) = support::request(c.http(1), "POST", "/api/v1.0/members/approve", Some(r#"{"name": "nobody"}"#)).unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = support::request(c.http(1), "POST", "/api/v1.0/members/approve", Some(r#"{"name": "node-4", "key": "not-hex"}"#)).unwrap();
    assert_eq!(status, 400, "{body}");
    let wrong_key = format!(r#"{{"name": "node-4", "key": "{}"}}"#, "ab".repeat(32));
    let (status, body) = support::request(c.http(1), "POST", "/api/v1.0/members/approve", Some(&wrong_key)).unwrap();
    assert_eq!(status, 404, "another certificate of the name is not the one waiting: {body}");
    let (status, body) = support::request(c.http(1), "POST", "/api/v1.0/members/approve", Some(r#"{"name": "node-4"}"#)).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")), "{body}");
    c.wait_for_roster(&[0, 1, 2, 3], 4);
    let (status, body) = post(c.http(new), &lock_body("approved", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
}

/// A node of a second cluster under the same CA greets the first: neither takes the other's
/// roster, and both keep serving. (The first may admit it in the moment before it forms its
/// own cluster; it then removes the voter that greets it as another cluster's.)
#[test]
fn a_node_of_another_cluster_with_the_same_ca_is_not_admitted() {
    let mut c = Cluster::started("second-cluster", 3);
    let other = c.add_agent();
    c.start(other, &["--bootstrap"]);
    wait_for("the second cluster to form", Duration::from_secs(30), || {
        get(c.http(other), "/api/v1.0/members").is_ok_and(|(_, v)| v["roster_size"] == 1)
    });
    c.wait_for_roster(&[0, 1, 2], 3);
    std::thread::sleep(Duration::from_secs(5));
    let (_, first) = get(c.http(0), "/api/v1.0/members").unwrap();
    let (_, second) = get(c.http(other), "/api/v1.0/members").unwrap();
    assert_eq!(first["roster_size"], 3, "{first}");
    assert_eq!(second["roster_size"], 1, "{second}");
    assert_ne!(first["cluster_id"], second["cluster_id"]);
    assert_ne!(role_of(&c, 0, "node-4").as_deref(), Some("voter"));
    for at in [0, other] {
        let (status, body) = post(c.http(at), &lock_body("each-its-own", "x")).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["fencing_token"], 1, "the clusters share no scope: {body}");
    }
}

/// A node certificate rotated while the cluster serves: renewed with the same key, the node is
/// the same member (no roster change); with a new key it is a new identity, which admission
/// swaps in for the old one.
#[test]
fn a_node_certificate_is_rotated_while_the_cluster_serves() {
    let mut c = Cluster::started("rotate", 3);
    let members = |c: &Cluster| get(c.http(0), "/api/v1.0/members").unwrap().1;
    let before = members(&c)["roster_version"].as_u64().unwrap();
    let certs = c.certs.to_str().unwrap().to_string();
    let out = support::lockmesh(&["certs", "node", &certs, "node-2", "--ip", "127.0.0.1", "--days", "30", "--renew"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.kill(1);
    c.start(1, &[]);
    wait_for("node-2 to serve with its renewed certificate", Duration::from_secs(60), || {
        post(c.http(1), &lock_body("renewed", "x")).is_ok_and(|(status, _)| status == 200)
    });
    assert_eq!(members(&c)["roster_version"].as_u64(), Some(before), "a renewal changes no roster");
    // A new key: move the old pair away and make a new one.
    for ext in ["pem", "key"] {
        std::fs::rename(c.certs.join(format!("node-2.{ext}")), c.certs.join(format!("node-2.old.{ext}"))).unwrap();
    }
    let out = support::lockmesh(&["certs", "node", &certs, "node-2", "--ip", "127.0.0.1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pem = rustls::pki_types::pem::PemObject::from_pem_file(c.certs.join("node-2.pem")).unwrap();
    let key: String = lockmesh::mesh::tls::key_hash(&pem).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    c.kill(1);
    c.start(1, &[]);
    let (status, body) = post(c.http(0), &lock_body("during-the-swap", "x")).unwrap();
    assert_eq!(status, 200, "two of three voters serve meanwhile: {body}");
    wait_for("the new key to be swapped in", Duration::from_secs(90), || {
        let v = members(&c);
        v["roster_size"] == 3
            && v["sweep_done"] == true
            && v["members"].as_array().is_some_and(|ms| ms.iter().any(|m| m["name"] == "node-2" && m["role"] == "voter" && m["key"] == key.as_str()))
    });
    assert!(members(&c)["roster_version"].as_u64().unwrap() >= before + 2, "removed the old identity, added the new");
    wait_for("node-2 to serve with its new key", Duration::from_secs(60), || {
        post(c.http(1), &lock_body("rekeyed", "x")).is_ok_and(|(status, _)| status == 200)
    });
}

/// Only node certificates speak on the mesh: a client or HTTP certificate of the same CA is
/// refused in or right after its handshake, whatever it then claims.
#[test]
fn client_and_http_certificates_are_refused_by_the_mesh() {
    let c = Cluster::started("purpose", 3);
    let certs = c.certs.to_str().unwrap().to_string();
    for args in [&["certs", "client", &certs, "alice"][..], &["certs", "http", &certs, "api.example.com", "--dns", "node-9"][..]] {
        let out = support::lockmesh(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let target = c.agents[0].mesh;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for name in ["alice", "api.example.com"] {
        let dir = c.certs.clone();
        runtime.block_on(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let id = lockmesh::mesh::tls::Identity::load(&dir, name).unwrap();
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(lockmesh::mesh::tls::client_config(&id).unwrap());
            // An HTTP certificate is no client certificate: TLS refuses it. A client one gets
            // through TLS and is closed at once, before it says anything, for what it is.
            let Ok(connection) = endpoint.connect(target, lockmesh::mesh::tls::dial_name()).unwrap().await else { return };
            let why = tokio::time::timeout(Duration::from_secs(10), connection.closed()).await;
            match why {
                Ok(quinn::ConnectionError::ApplicationClosed(close)) if name == "alice" => {
                    assert_eq!(&close.reason[..], b"not a node certificate", "the {name} certificate was closed for another reason")
                }
                // TLS 1.3: the server checks the client's certificate after the client's side
                // of the handshake is done.
                Ok(quinn::ConnectionError::ConnectionClosed(close)) if name != "alice" => {
                    assert!(String::from_utf8_lossy(&close.reason).contains("client authentication"), "{close:?}")
                }
                other => panic!("the {name} certificate's mesh connection: {other:?}"),
            }
        });
    }
    wait_for("the refusal to be logged", Duration::from_secs(10), || c.log(0).contains("not a node certificate"));
    let (_, v) = get(c.http(0), "/api/v1.0/members").unwrap();
    assert_eq!(v["roster_size"], 3, "{v}");
    assert!(v["members"].as_array().unwrap().iter().all(|m| m["name"] != "node-9"), "{v}");
    let (status, body) = post(c.http(0), &lock_body("purpose", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
}

/// A removed voter's certificate (a retired device that kept it) is refused at the mesh: its
/// connection is closed right after the handshake, before it can send anything, and the
/// cluster goes on without it.
#[test]
fn a_removed_voters_certificate_is_refused_at_the_handshake() {
    let mut c = Cluster::started("removed-cert", 3);
    let (status, body) = support::request(c.http(0), "POST", "/api/v1.0/members/remove", Some(r#"{"name": "node-3"}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    c.wait_for_roster(&[0, 1], 2);
    c.kill(2);
    let (certs, targets) = (c.certs.clone(), [c.agents[0].mesh, c.agents[1].mesh]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let id = lockmesh::mesh::tls::Identity::load(&certs, "node-3").unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(lockmesh::mesh::tls::client_config(&id).unwrap());
        for target in targets {
            let connection = endpoint.connect(target, lockmesh::mesh::tls::dial_name()).unwrap().await.unwrap();
            match tokio::time::timeout(Duration::from_secs(10), connection.closed()).await {
                Ok(quinn::ConnectionError::ApplicationClosed(close)) => assert_eq!(&close.reason[..], b"banned"),
                other => panic!("the removed voter's certificate kept its connection: {other:?}"),
            }
        }
    });
    let (_, v) = get(c.http(0), "/api/v1.0/members").unwrap();
    assert_eq!(v["roster_size"], 2, "{v}");
    let (status, body) = post(c.http(1), &lock_body("after-the-ban", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fencing_token"], 1, "{body}");
}

/// A node given the cluster's id (`--cluster-id`, as `/healthz` shows it) joins that cluster,
/// proving its chain of rosters back to the first; given another id it is not admitted, and a
/// data dir of another cluster refuses to start under that id.
#[test]
fn a_node_given_the_cluster_id_joins_only_that_cluster() {
    let mut c = Cluster::started("cluster-id", 3);
    let (_, health) = get(c.http(0), "/healthz").unwrap();
    let id = health["cluster_id"].as_str().expect("a cluster id").to_string();
    assert_eq!(id.len(), 32, "{health}");
    let wrong = format!("{:032x}", u128::from_str_radix(&id, 16).unwrap() ^ 1);
    let stranger = c.add_agent();
    c.start(stranger, &["--cluster-id", &wrong]);
    let joiner = c.add_agent();
    c.start(joiner, &["--cluster-id", &id]);
    wait_for("the node given the id to join", Duration::from_secs(60), || {
        get(c.http(joiner), "/healthz").is_ok_and(|(_, v)| v["cluster_id"] == id.as_str())
    });
    let (status, body) = post(c.http(joiner), &lock_body("joined", "x")).unwrap();
    assert_eq!(status, 200, "{body}");
    // Long enough for admission to have added it, had the members taken it for one of theirs.
    std::thread::sleep(Duration::from_secs(3));
    let (_, v) = get(c.http(stranger), "/healthz").unwrap();
    assert_eq!(v["in_cluster"], false, "the node given another id joined: {v}");
    assert_ne!(role_of(&c, 0, "node-4").as_deref(), Some("voter"));
    // node-1's data dir belongs to the cluster: under another id it does not start.
    c.kill(0);
    c.start(0, &["--cluster-id", &wrong]);
    wait_for("node-1 to refuse the other cluster id", Duration::from_secs(30), || c.log(0).contains("not to --cluster-id"));
}

/// The README's first command: `lockmesh dev` forms a local three-node cluster, prints how to
/// use it (with the cluster id), serves locks, and stops on Ctrl-C. Every node of it joins
/// through the first, which joins through itself: when the first proposed the roster before
/// the others did, it never took the roster they formed with its acknowledgement (it was no
/// seed of theirs) and stayed out.
#[test]
fn lockmesh_dev_forms_a_cluster_that_serves_locks() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let mut child = Command::new(support::BIN).arg("dev").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("lockmesh dev starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut printed = Vec::new();
    let token = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
            panic!("lockmesh dev printed no welcome: {printed:?}");
        };
        printed.push(line.clone());
        if let Some(rest) = line.split("(bearer token ").nth(1) {
            break rest.trim_end_matches(". Try:").trim_end_matches(')').to_string();
        }
    };
    assert!(printed.iter().any(|l| l.contains("cluster id ") && l.contains("--cluster-id")), "{printed:?}");
    let api: std::net::SocketAddr = "127.0.0.1:20194".parse().unwrap();
    let body = r#"{"scope": "db-migration", "action": "lock"}"#;
    let (status, answer) = support::request_as(api, &format!("Bearer {token}"), "POST", "/api/v1.0/lock", Some(body)).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let stopped = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < stopped {
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = child.try_wait().ok().flatten().is_some();
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!((status, answer["status"].as_str()), (200, Some("locked")), "{answer}");
    assert!(exited, "lockmesh dev did not stop on Ctrl-C");
}

/// The CA rotated while the cluster serves (certs/README.md): every node first trusts both
/// CAs (`ca.pem` holds both), then gets its certificate from the new CA with its key kept (the
/// same identity: no roster change), then trusts the new CA alone — restarted one at a time,
/// each step, and locks are served after every restart.
#[test]
fn the_ca_is_rotated_while_the_cluster_serves() {
    let mut c = Cluster::started("rotate-ca", 3);
    let version = get(c.http(0), "/api/v1.0/members").unwrap().1["roster_version"].as_u64();
    let old_dir = c.certs.clone();
    let new_dir = c.dir.join("new-ca");
    let out = support::lockmesh(&["certs", "ca", new_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old_ca = std::fs::read_to_string(old_dir.join("ca.pem")).unwrap();
    let new_ca = std::fs::read_to_string(new_dir.join("ca.pem")).unwrap();
    let restart_all = |c: &mut Cluster, step: &str| {
        for i in 0..3 {
            c.kill(i);
            c.start(i, &[]);
            let scope = format!("{step}-{i}");
            wait_for(&format!("node-{} to serve after {step}", i + 1), Duration::from_secs(60), || {
                post(c.http(i), &lock_body(&scope, "x")).is_ok_and(|(status, _)| status == 200)
            });
        }
    };
    // 1. Trust both.
    std::fs::write(old_dir.join("ca.pem"), format!("{old_ca}{new_ca}")).unwrap();
    restart_all(&mut c, "both");
    // 2. Certificates from the new CA, same keys.
    for i in 0..3 {
        let name = c.agents[i].name.clone();
        std::fs::copy(old_dir.join(format!("{name}.key")), new_dir.join(format!("{name}.key"))).unwrap();
        let out = support::lockmesh(&["certs", "node", new_dir.to_str().unwrap(), &name, "--ip", "127.0.0.1", "--renew"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::copy(new_dir.join(format!("{name}.pem")), old_dir.join(format!("{name}.pem"))).unwrap();
        c.kill(i);
        c.start(i, &[]);
        let scope = format!("reissued-{i}");
        wait_for(&format!("{name} to serve with the new CA's certificate"), Duration::from_secs(60), || {
            post(c.http(i), &lock_body(&scope, "x")).is_ok_and(|(status, _)| status == 200)
        });
    }
    // 3. The new CA alone.
    std::fs::write(old_dir.join("ca.pem"), &new_ca).unwrap();
    restart_all(&mut c, "new-only");
    assert_eq!(get(c.http(0), "/api/v1.0/members").unwrap().1["roster_version"].as_u64(), version, "the same identities: no roster change");
    // A certificate of the old CA is refused now: a fourth node made by it (the old CA's key
    // is still in the shared directory) never joins.
    let stale = c.add_agent();
    c.start(stale, &[]);
    wait_for("the old CA's certificate to be refused", Duration::from_secs(30), || c.log(0).contains("handshake"));
    std::thread::sleep(Duration::from_secs(3));
    let (_, health) = get(c.http(stale), "/healthz").unwrap();
    assert_eq!(health["in_cluster"], false, "{health}");
    assert_eq!(get(c.http(0), "/api/v1.0/members").unwrap().1["roster_size"], 3);
}
