//! Placement on real processes: a voter target, members that do not vote, zones, the
//! replacement of a dead voter and changes of the target.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{get, post, request, wait_for, Cluster};

/// The placement flags of node `i`, in zone `zone`: short waits so the test runs in seconds.
fn flags(zone: &str) -> Vec<String> {
    ["--voters", "3", "--zone", zone, "--stabilize-secs", "1", "--replace-after-secs", "3"].iter().map(|s| s.to_string()).collect()
}

fn cluster_view(c: &Cluster, i: usize) -> Option<Value> {
    get(c.http(i), "/api/v1.0/cluster").ok().filter(|(s, _)| *s == 200).map(|(_, v)| v)
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|n| n.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Waits until node `i` reports `voters` voters, swept, and returns its view.
fn wait_for_voters(c: &Cluster, i: usize, voters: usize, what: &str) -> Value {
    let mut last = Value::Null;
    wait_for(what, Duration::from_secs(90), || {
        last = cluster_view(c, i).unwrap_or(Value::Null);
        last["roster_size"] == voters && last["sweep_done"] == true
    });
    last
}

fn lock(c: &Cluster, i: usize, scope: &str, holder: &str) -> Value {
    let body = format!(r#"{{"scope":"{scope}","action":"lock","holder":"{holder}","timeout":"30s"}}"#);
    let mut answer = Value::Null;
    wait_for(&format!("a lock on {scope} through node {}", i + 1), Duration::from_secs(30), || match post(c.http(i), &body) {
        Ok((200, v)) => {
            answer = v;
            true
        }
        _ => false,
    });
    answer
}

/// Three voters form the cluster with a voter target of three, in zones a, b, c; two more
/// nodes join (zones a and b) and stay members that do not vote, yet serve locks. A voter
/// killed is replaced by a member (promoted, then the dead voter demoted), keeping the
/// voters in two zones at least. The target set to one and back to three moves the voters
/// there and back, one roster change at a time.
#[test]
fn members_beyond_the_target_serve_locks_and_one_replaces_a_dead_voter() {
    let mut c = Cluster::new("placement", 5);
    let zones = ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b"];
    for (i, zone) in zones.iter().enumerate().take(3) {
        let mut extra = flags(zone);
        extra.extend(["--bootstrap-expect".to_string(), "3".to_string()]);
        c.start(i, &extra.iter().map(String::as_str).collect::<Vec<_>>());
    }
    c.wait_for_roster(&[0, 1, 2], 3);
    for (i, zone) in zones.iter().enumerate().skip(3) {
        c.start(i, &flags(zone).iter().map(String::as_str).collect::<Vec<_>>());
    }
    wait_for("node-4 and node-5 to be members that do not vote", Duration::from_secs(60), || {
        cluster_view(&c, 0).is_some_and(|v| names(&v, "members") == ["node-4", "node-5"] && v["roster_size"] == 3)
    });
    let mut view = Value::Null;
    wait_for("node-4 to install the roster that lists it", Duration::from_secs(60), || {
        view = cluster_view(&c, 3).unwrap_or(Value::Null);
        view["roster_size"] == 3
    });
    assert_eq!(view["voter_target"], 3, "{view}");
    assert_eq!(names(&view, "voters"), ["node-1", "node-2", "node-3"], "{view}");
    let (_, members) = get(c.http(0), "/api/v1.0/members").unwrap();
    let node4 = members["members"].as_array().unwrap().iter().find(|m| m["name"] == "node-4").cloned().unwrap();
    assert_eq!((node4["role"].as_str(), node4["voter"].as_bool(), node4["zone"].as_str()), (Some("member"), Some(false), Some("zone-a")), "{node4}");

    // A member runs ballots against the voters: its lock needs two of the three.
    let first = lock(&c, 3, "through-a-member", "m");
    assert_eq!(first["fencing_token"], 1, "{first}");
    assert_eq!(first["quorum"], "2/3 nodes agreed", "{first}");
    let (status, busy) = post(c.http(4), r#"{"scope":"through-a-member","action":"lock","holder":"other","timeout":"30s"}"#).unwrap();
    assert_ne!(status, 200, "two holders through two members: {busy}");

    // A watch through a member hears of changes from the voters' news: the member asks them
    // for news of the scopes it waits on, as its own acceptor accepts nothing.
    let watch = {
        let http = c.http(4);
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(http).unwrap();
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = write!(stream, "GET /api/v1.0/lock/news/watch HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
        })
    };
    let news = || {
        support::get_text(c.http(4), "/metrics")
            .is_ok_and(|(_, m)| m.lines().any(|l| l.starts_with("lockmesh_scope_news_received_total") && !l.ends_with(" 0")))
    };
    wait_for("node-5 to hear of the scope from the voters", Duration::from_secs(60), || {
        let _ = post(c.http(0), r#"{"scope":"news","action":"lock","holder":"h","timeout":"30s"}"#);
        let _ = post(c.http(0), r#"{"scope":"news","action":"unlock","holder":"h"}"#);
        news()
    });
    drop(watch);

    // node-3 (zone-c) dies: after replace-after a member is promoted, then node-3 demoted.
    c.kill(2);
    wait_for("node-3 to be replaced", Duration::from_secs(90), || {
        view = cluster_view(&c, 0).unwrap_or(Value::Null);
        let voters = names(&view, "voters");
        voters.len() == 3 && !voters.contains(&"node-3".to_string()) && view["sweep_done"] == true
    });
    assert!(names(&view, "members").contains(&"node-3".to_string()), "a replaced voter stays a member: {view}");
    let zones_of_voters: std::collections::BTreeSet<&str> =
        names(&view, "voters").iter().map(|n| zones[index(n)]).collect();
    assert_eq!(zones_of_voters.len(), 2, "the voters spread over the two zones left: {view}");
    let (_, released) = post(c.http(3), r#"{"scope":"through-a-member","action":"unlock","holder":"m"}"#).unwrap();
    assert_eq!(released["status"], "unlocked", "{released}");
    let second = lock(&c, 4, "through-a-member", "n");
    assert!(second["fencing_token"].as_u64() > first["fencing_token"].as_u64(), "tokens rise across the replacement: {second}");

    // The target down to one voter and back to three.
    let (status, set) = request(c.http(0), "PUT", "/api/v1.0/cluster", Some(r#"{"voters": 1}"#)).unwrap();
    assert_eq!(status, 200, "{set}");
    wait_for_voters(&c, 0, 1, "the voters to shrink to one");
    let third = lock(&c, 1, "with-one-voter", "o");
    assert_eq!(third["status"], "locked", "{third}");
    let (status, set) = request(c.http(3), "PUT", "/api/v1.0/cluster", Some(r#"{"voters": 3}"#)).unwrap();
    assert_eq!(status, 200, "{set}");
    let view = wait_for_voters(&c, 0, 3, "the voters to grow back to three");
    assert!(!names(&view, "voters").contains(&"node-3".to_string()), "a dead node is not promoted: {view}");

    // Bad input changes nothing.
    for bad in [r#"{"voters": 4}"#, r#"{"voters": 11}"#, r#"{"voters": "x"}"#, r#"{}"#, "not json"] {
        let (status, body) = request(c.http(0), "PUT", "/api/v1.0/cluster", Some(bad)).unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(cluster_view(&c, 0).unwrap()["voter_target"], 3);
}

fn index(name: &str) -> usize {
    name.trim_start_matches("node-").parse::<usize>().unwrap() - 1
}

/// How many of `voters` each zone holds (zone of node i: `zones[i % 3]`).
fn per_zone(voters: &[String], zones: &[&str; 3]) -> std::collections::BTreeMap<String, usize> {
    let mut count = std::collections::BTreeMap::new();
    for v in voters {
        *count.entry(zones[index(v) % 3].to_string()).or_insert(0) += 1;
    }
    count
}

/// Twelve agents in three zones with the default voter target of five: the voters spread
/// (no zone holds half of them), a member serves locks, two voters killed are replaced, a
/// whole zone killed is routed around (locks go on, the voters move to the zones left), and
/// the target goes to three and back to five.
#[test]
fn twelve_agents_in_three_zones_keep_five_voters_spread_and_route_around_a_lost_zone() {
    let zones = ["zone-a", "zone-b", "zone-c"];
    let mut c = Cluster::new("zones", 12);
    let flags_of = |i: usize, first: bool| {
        let mut f: Vec<String> = ["--voters", "5", "--zone", zones[i % 3], "--stabilize-secs", "1", "--replace-after-secs", "3"].iter().map(|s| s.to_string()).collect();
        if first {
            f.extend(["--bootstrap-expect".to_string(), "3".to_string()]);
        }
        f
    };
    for i in 0..3 {
        c.start(i, &flags_of(i, true).iter().map(String::as_str).collect::<Vec<_>>());
    }
    c.wait_for_roster(&[0, 1, 2], 3);
    for i in 3..12 {
        c.start(i, &flags_of(i, false).iter().map(String::as_str).collect::<Vec<_>>());
    }
    let spread = |v: &Value| per_zone(&names(v, "voters"), &zones).values().all(|n| *n <= 2);
    let mut view = Value::Null;
    wait_for("five voters spread over the three zones, seven members", Duration::from_secs(180), || {
        view = cluster_view(&c, 0).unwrap_or(Value::Null);
        names(&view, "voters").len() == 5 && names(&view, "members").len() == 7 && view["sweep_done"] == true && spread(&view)
    });
    assert_eq!(view["voter_target"], 5, "{view}");

    // A member serves a lock, with a quorum of three of the five voters.
    let member = index(&names(&view, "members")[0]);
    let granted = lock(&c, member, "twelve", "m");
    assert_eq!(granted["quorum"], "3/5 nodes agreed", "{granted}");

    // Two voters die (not node-1, which the test asks): both are replaced, the spread kept.
    let killed: Vec<usize> = names(&view, "voters").iter().map(|n| index(n)).filter(|i| *i != 0).take(2).collect();
    for &i in &killed {
        c.kill(i);
    }
    wait_for("the two dead voters to be replaced", Duration::from_secs(180), || {
        view = cluster_view(&c, 0).unwrap_or(Value::Null);
        let voters = names(&view, "voters");
        voters.len() == 5 && voters.iter().all(|v| !killed.contains(&index(v))) && view["sweep_done"] == true && spread(&view)
    });

    // A whole zone is lost (every node of zone-c still running): locks go on through node-1,
    // and the voters move to the two zones left.
    let lost: Vec<usize> = (0..12).filter(|i| i % 3 == 2 && !killed.contains(i)).collect();
    for &i in &lost {
        c.kill(i);
    }
    let during = lock(&c, 0, "zone-lost", "z");
    assert_eq!(during["status"], "locked", "{during}");
    wait_for("the voters to leave the lost zone", Duration::from_secs(180), || {
        view = cluster_view(&c, 0).unwrap_or(Value::Null);
        let voters = names(&view, "voters");
        voters.len() == 5 && voters.iter().all(|v| index(v) % 3 != 2) && view["sweep_done"] == true
    });
    let after = lock(&c, 0, "zone-lost-after", "z");
    assert_eq!(after["quorum"], "3/5 nodes agreed", "{after}");

    // The target to three and back to five.
    let (status, set) = request(c.http(0), "PUT", "/api/v1.0/cluster", Some(r#"{"voters": 3}"#)).unwrap();
    assert_eq!(status, 200, "{set}");
    wait_for_voters(&c, 0, 3, "the voters to shrink to three");
    let (status, set) = request(c.http(0), "PUT", "/api/v1.0/cluster", Some(r#"{"voters": 5}"#)).unwrap();
    assert_eq!(status, 200, "{set}");
    let view = wait_for_voters(&c, 0, 5, "the voters to grow back to five");
    assert!(names(&view, "voters").iter().all(|v| index(v) % 3 != 2 && !killed.contains(&index(v))), "only live nodes vote: {view}");
}
