//! Smart coordination against real agents: priorities (a high-priority request jumps a queue
//! of normal ones and is granted next, and stays visible in status) and lock-delay (after an
//! expiry, not after a release), contention figures, auto timeouts learnt from the holds, and
//! watches that see every transition in order.

mod support;

use std::time::Duration;

use lockmesh::dshell::http::Url;
use lockmesh::dshell::sse::{Events, Opened, SseEvent};
use serde_json::Value;
use support::{get, post, wait_for, Cluster};

/// An API duration ("650ms", "2s") in seconds.
fn seconds(v: &Value) -> f64 {
    let text = v.as_str().unwrap_or_default();
    match text.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => text.strip_suffix('s').unwrap().parse().unwrap(),
    }
}

fn queue(c: &Cluster, scope: &str) -> Vec<(String, String)> {
    let (_, v) = get(c.http(0), &format!("/api/v1.0/lock/{scope}")).unwrap();
    v["queue"]
        .as_array()
        .map(|q| q.iter().map(|w| (w["holder"].as_str().unwrap_or("").to_string(), w["priority"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

#[test]
fn a_high_priority_request_jumps_the_queue_and_is_granted_next() {
    let c = Cluster::started("priority", 3);
    let (status, v) = post(c.http(0), r#"{"scope": "db", "holder": "first", "timeout": "60s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    let first = v["fencing_token"].as_u64().unwrap();
    // Two normal waiters, on two nodes, then an emergency on the third.
    let waiter = |node: usize, body: &'static str| {
        let addr = c.http(node);
        std::thread::spawn(move || post(addr, body).unwrap_or((0, Value::Null)))
    };
    let n1 = waiter(1, r#"{"scope": "db", "holder": "normal-1", "wait": "60s", "timeout": "1s"}"#);
    wait_for("normal-1 to queue", Duration::from_secs(30), || queue(&c, "db").len() == 1);
    let n2 = waiter(2, r#"{"scope": "db", "holder": "normal-2", "wait": "60s", "timeout": "1s"}"#);
    wait_for("normal-2 to queue", Duration::from_secs(30), || queue(&c, "db").len() == 2);
    let high = waiter(0, r#"{"scope": "db", "holder": "oncall", "wait": "60s", "timeout": "1s", "priority": "high", "reason": "incident_recovery"}"#);
    wait_for("the high request to queue first", Duration::from_secs(30), || queue(&c, "db").first().is_some_and(|w| w.0 == "oncall" && w.1 == "high"));
    assert_eq!(queue(&c, "db").iter().map(|w| w.0.as_str()).collect::<Vec<_>>(), ["oncall", "normal-1", "normal-2"]);
    let (_, v) = get(c.http(1), "/api/v1.0/lock/db").unwrap();
    assert_eq!(v["high_priority_requests"][0]["holder"], "oncall", "{v}");
    assert_eq!(v["high_priority_requests"][0]["reason"], "incident_recovery", "{v}");

    let (status, v) = post(c.http(0), r#"{"scope": "db", "action": "unlock", "holder": "first"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    // Each takes its turn (1 s leases, never released): the emergency first.
    let (status, h) = high.join().unwrap();
    assert_eq!(status, 200, "{h}");
    let (s1, v1) = n1.join().unwrap();
    let (s2, v2) = n2.join().unwrap();
    assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
    let token = |v: &Value| v["fencing_token"].as_u64().unwrap();
    assert_eq!(token(&h), first + 1, "the high request was granted next");
    assert!(token(&h) < token(&v1) && token(&v1) < token(&v2), "then the normal ones in arrival order: {h} {v1} {v2}");
}

#[test]
fn an_expired_lease_closes_the_scope_for_its_lock_delay_and_a_release_does_not() {
    let c = Cluster::started("lock-delay", 3);
    // Expiry: a 1 s lease with a 3 s lock-delay, never renewed; a waiter on another node.
    let sent = std::time::Instant::now();
    let (status, v) = post(c.http(0), r#"{"scope": "job", "holder": "crashed", "timeout": "1s", "lock_delay": "3s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(c.http(1), r#"{"scope": "job", "holder": "next", "wait": "30s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    // The grant was decided after `sent`: it expired 1 s later at the earliest, and the scope
    // stayed closed 3 s more.
    assert!(sent.elapsed() >= Duration::from_secs(4), "granted {:?} after the first request", sent.elapsed());

    // While closed, a request is told why: no holders, the lock-delay left.
    let (status, v) = post(c.http(0), r#"{"scope": "closed", "holder": "crashed", "timeout": "1s", "lock_delay": "60s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    wait_for("the lease to expire", Duration::from_secs(30), || {
        get(c.http(1), "/api/v1.0/lock/closed").is_ok_and(|(_, v)| v["lock_delay_remaining"].is_string())
    });
    let (status, v) = post(c.http(2), r#"{"scope": "closed", "holder": "eager"}"#).unwrap();
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["holders"], serde_json::json!([]), "{v}");
    assert!(v["lock_delay_remaining"].is_string() && v["error"].as_str().unwrap_or("").contains("lock_delay"), "{v}");

    // Release: handed on at once, by the releasing ballot itself.
    let (status, v) = post(c.http(1), r#"{"scope": "rel", "holder": "a", "timeout": "30s", "lock_delay": "30s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    let addr = c.http(2);
    let waiter = std::thread::spawn(move || post(addr, r#"{"scope": "rel", "holder": "b", "wait": "60s"}"#).unwrap_or((0, Value::Null)));
    wait_for("b to queue", Duration::from_secs(30), || queue(&c, "rel").len() == 1);
    let (status, v) = post(c.http(0), r#"{"scope": "rel", "action": "unlock", "holder": "a"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    let (_, v) = get(c.http(0), "/api/v1.0/lock/rel").unwrap();
    assert_eq!(v["holders"][0]["holder"], "b", "{v}");
    assert!(v["lock_delay_remaining"].is_null(), "{v}");
    assert_eq!(waiter.join().unwrap().0, 200);
}

#[test]
fn contention_figures_match_a_scripted_workload() {
    let c = Cluster::started("contention", 3);
    let lock = |node: usize, body: &str| post(c.http(node), body).unwrap().0;
    assert_eq!(lock(0, r#"{"scope": "hot", "holder": "a", "timeout": "60s"}"#), 200);
    // Three refused attempts on three nodes, a retry of one of them (not a new attempt).
    assert_eq!(lock(1, r#"{"scope": "hot", "holder": "b", "request_id": "r1"}"#), 409);
    assert_eq!(lock(1, r#"{"scope": "hot", "holder": "b", "request_id": "r1"}"#), 409);
    assert_eq!(lock(2, r#"{"scope": "hot", "holder": "c"}"#), 409);
    assert_eq!(lock(0, r#"{"scope": "hot", "holder": "d"}"#), 409);
    // One waiter.
    let addr = c.http(2);
    let waiter = std::thread::spawn(move || post(addr, r#"{"scope": "hot", "holder": "e", "wait": "60s"}"#).unwrap_or((0, Value::Null)));
    wait_for("e to queue", Duration::from_secs(30), || queue(&c, "hot").len() == 1);
    let (_, v) = get(c.http(1), "/api/v1.0/lock/hot").unwrap();
    let k = &v["contention"];
    assert_eq!((k["attempts"].as_u64(), k["conflicts"].as_u64(), k["waiters"].as_u64()), (Some(5), Some(4), Some(1)), "{v}");
    assert_eq!(k["conflict_rate"], "80%", "{v}");
    assert!(k["hold_duration"].as_str().is_some_and(|d| d.ends_with('s')), "{v}");
    // The same figures in /metrics, from a voter's own copy (which may lag a little).
    wait_for("the metrics to show the waiter", Duration::from_secs(30), || {
        (0..3).any(|i| {
            support::get_text(c.http(i), "/metrics")
                .map(|(_, t)| t.contains("lockmesh_scope_waiters{scope=\"hot\"} 1") && t.contains("lockmesh_scope_conflict_ratio{scope=\"hot\"} 0.8"))
                .unwrap_or(false)
        })
    });
    assert_eq!(lock(0, r#"{"scope": "hot", "action": "unlock", "holder": "a"}"#), 200);
    assert_eq!(waiter.join().unwrap().0, 200);
    let (_, v) = get(c.http(2), "/api/v1.0/lock/hot").unwrap();
    assert_eq!(v["contention"]["holds"], 1, "{v}");
}

#[test]
fn an_auto_timeout_converges_to_the_observed_holds_within_its_bounds() {
    let c = Cluster::started("auto-timeout", 3);
    let auto = r#"{"scope": "job", "holder": "probe", "timeout": "auto", "min_timeout": "100ms", "max_timeout": "20s"}"#;
    // No history yet: the maximum.
    let (status, v) = post(c.http(0), auto).unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["timeout"], "20s", "{v}");
    assert_eq!(v["timeout_source"], "auto: max_timeout, as 0 holds in 7d are fewer than 10", "{v}");
    let (status, v) = post(c.http(0), r#"{"scope": "job", "action": "unlock", "holder": "probe"}"#).unwrap();
    assert_eq!(status, 200, "{v}");

    // Ten holds of at least 300 ms, through different nodes. Each one's length as the
    // cluster measures it lies between 300 ms and what the client saw from its lock's send
    // to its unlock's answer.
    let mut longest = Duration::ZERO;
    for i in 0..10 {
        let started = std::time::Instant::now();
        let (status, v) = post(c.http(i % 3), r#"{"scope": "job", "holder": "worker", "timeout": "30s"}"#).unwrap();
        assert_eq!(status, 200, "{v}");
        std::thread::sleep(Duration::from_millis(300));
        let (status, v) = post(c.http((i + 1) % 3), r#"{"scope": "job", "action": "unlock", "holder": "worker"}"#).unwrap();
        assert_eq!(status, 200, "{v}");
        longest = longest.max(started.elapsed());
    }

    // Eleven holds now (the probe's was short): the 99th percentile is the slowest of them.
    let (status, v) = post(c.http(2), auto).unwrap();
    assert_eq!(status, 200, "{v}");
    let lease = seconds(&v["timeout"]);
    // 1.5 × a bucket bound at most 19 % above the hold (and whole milliseconds).
    let most = 1.5 * 1.19 * longest.as_secs_f64() + 0.002;
    assert!((0.44..=most).contains(&lease), "lease {lease}s, holds of 0.3 s to {longest:?}: {v}");
    let source = v["timeout_source"].as_str().unwrap_or("");
    assert!(source.starts_with("auto: p99 of 11 holds in 7d ("), "{v}");
    // Every node computes the same: a retry of this request through another node says so.
    let (_, status_view) = get(c.http(1), "/api/v1.0/lock/job").unwrap();
    assert_eq!(status_view["holders"][0]["timeout"], v["timeout"], "{status_view}");
}

/// A watch on `scope` through node `node`, its events arriving on a channel.
fn watch(c: &Cluster, node: usize, scope: &str, last_id: Option<&str>) -> std::sync::mpsc::Receiver<SseEvent> {
    let url = Url { host: "127.0.0.1".into(), port: c.http(node).port(), path: format!("/api/v1.0/lock/{scope}/watch") };
    let Opened::Stream(mut events) = Events::open(&url, &[], last_id).unwrap() else { panic!("the watch was refused") };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(Some(e)) = events.next_event() {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    rx
}

fn next(rx: &std::sync::mpsc::Receiver<SseEvent>) -> (String, Value) {
    let e = rx.recv_timeout(Duration::from_secs(60)).expect("an event within 60 s");
    let data: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(e.id.as_deref().map(|i| i.parse::<u64>().unwrap()), data["seq"].as_u64().or(data["event_seq"].as_u64()), "{e:?}");
    (e.event, data)
}

#[test]
fn a_watch_sees_every_transition_in_order() {
    let c = Cluster::started("watch", 3);
    let rx = watch(&c, 2, "w", None);
    let (kind, state) = next(&rx);
    assert_eq!((kind.as_str(), &state["status"], &state["event_seq"]), ("state", &Value::from("free"), &Value::from(0)), "{state}");

    let (status, v) = post(c.http(0), r#"{"scope": "w", "holder": "a", "timeout": "30s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    let addr = c.http(1);
    let b = std::thread::spawn(move || post(addr, r#"{"scope": "w", "holder": "b", "wait": "30s", "timeout": "1s", "lock_delay": "0s"}"#).unwrap());
    wait_for("b to queue", Duration::from_secs(30), || queue(&c, "w").len() == 1);
    // c waits one second, gives up and leaves the queue.
    let (status, v) = post(c.http(0), r#"{"scope": "w", "holder": "c", "wait": "1s"}"#).unwrap();
    assert_eq!(status, 409, "{v}");
    let (status, v) = post(c.http(0), r#"{"scope": "w", "action": "unlock", "holder": "a"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(b.join().unwrap().0, 200);
    let (status, v) = post(c.http(2), r#"{"scope": "w", "action": "unlock", "holder": "b", "force": true}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    // b's 1 s lease is never renewed: it expires, with nobody else asking for the scope.

    let expected = [
        ("granted", "a"),
        ("queued", "b"),
        ("queued", "c"),
        ("left", "c"),
        ("released", "a"),
        ("granted", "b"),
        ("revoked", "b"),
        ("expired", "b"),
    ];
    let mut seen = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let (kind, data) = next(&rx);
        assert_eq!(data["seq"], i as u64 + 1, "{kind} {data}");
        seen.push((kind.clone(), data["holder"].as_str().unwrap_or("").to_string()));
        assert_eq!((kind.as_str(), data["holder"].as_str().unwrap_or("")), *want, "after {seen:?}");
    }

    // A client that reconnects after event 4 gets 5 to 8 through another node, then nothing
    // new; one that names a number the scope never reached starts again from the state.
    let again = watch(&c, 0, "w", Some("4"));
    let kinds: Vec<String> = (5..=8).map(|_| next(&again).0).collect();
    assert_eq!(kinds, ["released", "granted", "revoked", "expired"]);
    let (kind, state) = next(&watch(&c, 1, "w", Some("99")));
    assert_eq!((kind.as_str(), &state["event_seq"]), ("resync", &Value::from(8)), "{state}");
    // One that is up to date gets the next event only, however long it waits for it.
    let current = watch(&c, 1, "w", Some("8"));
    std::thread::sleep(Duration::from_secs(6)); // past the watch's periodic read
    let (status, v) = post(c.http(0), r#"{"scope": "w", "holder": "d", "timeout": "30s"}"#).unwrap();
    assert_eq!(status, 200, "{v}");
    let (kind, data) = next(&current);
    assert_eq!((kind.as_str(), &data["seq"], &data["holder"]), ("granted", &Value::from(9), &Value::from("d")), "{data}");
}
