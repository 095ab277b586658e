//! Chaos on real processes: clients spread over all nodes lock, use a fenced resource, renew
//! and release (some crash holding, some pause past their lease) while an observer reads the
//! hot scopes and a seeded schedule kills, restarts, pauses, wipes and replaces nodes and, as
//! root, partitions them (isolated node, minority split, bridge, one-way, flapping, and faults
//! combined). The checker (support/chaos.rs) then says whether exclusion and fencing held,
//! every acknowledged decision had a majority that could have voted, and reads agreed with what
//! clients were told. `CHAOS_SECONDS` and `CHAOS_SEED` set the run (scripts/chaos.sh); the last
//! line printed is `chaos: R runs, V violations, U s max unavailability`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockmesh::core::rng::Rng;
use serde_json::Value;
use support::chaos::{
    check, long_gaps, max_unavailability, recoveries, unknown_outcomes, Attempt, BareUnlock, Decision, Episode, History, Impairment, Observation,
    Outcome, Resource, Shown, Trust, Use,
};
use support::{get, post, Cluster};

/// The drift bound the agents assume; a client trusts `lease × (1 − drift)` from its send.
const DRIFT: f64 = 0.01;
const SCOPES: [&str; 2] = ["hot-a", "hot-b"];

/// What the clients and the observer share.
struct Shared {
    nodes: Vec<SocketAddr>,
    /// Per pair of clients sharing a holder name: the name's generation.
    generations: Vec<AtomicU64>,
    history: Mutex<History>,
    resource: Mutex<Resource>,
    stop: AtomicBool,
}

fn node_index(name: &str, n: usize) -> Option<usize> {
    let i: usize = name.strip_prefix("node-")?.parse().ok()?;
    (1..=n).contains(&i).then(|| i - 1)
}

/// The decision an acknowledged reply describes (who agreed, out of how many voters).
fn decision(what: &str, node: usize, sent: Instant, reply: &Value, n: usize) -> Decision {
    let agreed = reply["agreed_by"].as_array().map(|a| a.iter().map(|v| v.as_str().and_then(|s| node_index(s, n))).collect()).unwrap_or_default();
    let voters = reply["quorum"].as_str().and_then(|q| q.split_once('/')).and_then(|(_, rest)| rest.split(' ').next()?.parse().ok()).unwrap_or(0);
    Decision { what: what.into(), node, sent, told: Instant::now(), agreed, voters }
}

/// How an acquire's HTTP answer counts.
fn outcome(answer: &Result<(u16, Value), String>) -> Outcome {
    match answer {
        Ok((200, v)) => match v["fencing_token"].as_u64() {
            Some(token) => Outcome::Acked { token },
            None => Outcome::Unknown { why: format!("200 without a token: {v}") },
        },
        // Only a plain "busy" never waited: "expired" (the place or grant ran out between
        // polls) and a busy with a queue position did.
        Ok((409, v)) => {
            let why = v["status"].as_str().unwrap_or("409");
            Outcome::Failed { why: why.into(), queued: why != "busy" || v.get("queue_position").is_some() }
        }
        Ok((503, v)) if matches!(v["status"].as_str(), Some("no_quorum" | "overloaded" | "no_cluster")) => {
            Outcome::Failed { why: v["status"].as_str().unwrap_or_default().into(), queued: false }
        }
        Ok((status, v)) => Outcome::Unknown { why: format!("{status} {}", v["status"]) },
        // Never reached the node: definitely not taken.
        Err(e) if e.contains("Connection refused") => Outcome::Failed { why: "connection refused".into(), queued: false },
        Err(e) => Outcome::Unknown { why: e.clone() },
    }
}

/// Another node than `node`, for a retry.
fn other(rng: &mut Rng, node: usize, n: usize) -> usize {
    if n < 2 {
        return node;
    }
    (node + 1 + rng.index(n - 1)) % n
}

/// Whether an unlock's answer leaves its fate unknown: no answer, or `timeout`.
fn unlock_unknown(answer: &Result<(u16, Value), String>) -> bool {
    match answer {
        Ok((_, v)) => v["status"] == "timeout",
        Err(e) => !e.contains("Connection refused"),
    }
}

fn lock_unknown(answer: &Result<(u16, Value), String>) -> bool {
    matches!(outcome(answer), Outcome::Unknown { .. })
}

/// Sends `body` to `node`; if its fate is unknown (`unknown` says: no answer, a timeout),
/// sends the same request (same request id) again to other nodes, up to three tries. Returns
/// the node and send time of the last try, its answer, and whether an earlier try's fate
/// stayed unknown.
fn send_with_retries(
    s: &Shared,
    rng: &mut Rng,
    node: usize,
    body: &str,
    unknown_fate: fn(&Result<(u16, Value), String>) -> bool,
) -> (usize, Instant, Result<(u16, Value), String>, bool) {
    let n = s.nodes.len();
    let mut node = node;
    let mut unknown = false;
    for tries in 1.. {
        let sent = Instant::now();
        let answer = post(s.nodes[node], body);
        let lost = unknown_fate(&answer);
        if !lost || tries == 3 || s.stop.load(Ordering::Relaxed) {
            return (node, sent, answer, unknown);
        }
        unknown = true;
        std::thread::sleep(Duration::from_millis(rng.between(10, 50)));
        node = other(rng, node, n);
    }
    unreachable!()
}

/// One client process. Clients 0 and 1, 2 and 3, ... share a holder name (two processes of
/// one application), which changes only after a bare release of theirs had an unknown fate;
/// the last one or two use a name per attempt. Some releases are bare, and after one the
/// process often locks the same scope again at once. A request whose answer does not come is
/// sent again, with the same request id, to another node.
fn client(id: usize, seed: u64, s: Arc<Shared>) {
    let mut rng = Rng::new(seed ^ (id as u64 * 7919));
    let n = s.nodes.len();
    let pair = id / 2;
    let shared = pair < s.generations.len();
    let mut attempt = 0;
    let mut again: Option<&str> = None;
    while !s.stop.load(Ordering::Relaxed) {
        attempt += 1;
        let holder = if shared { format!("g{pair}.{}", s.generations[pair].load(Ordering::Relaxed)) } else { format!("c{id}-{attempt}") };
        let scope = again.take().unwrap_or(SCOPES[rng.index(SCOPES.len())]);
        let write = rng.index(4) != 0;
        let lease_ms = rng.between(1_000, 2_000);
        let request_id = format!("r{id}-{attempt}");
        let body = format!(
            r#"{{"scope": "{scope}", "action": "lock", "holder": "{holder}", "request_id": "{request_id}", "lock_type": "{}", "timeout": "{lease_ms}ms", "wait": "1s"}}"#,
            if write { "write" } else { "read" }
        );
        let asked = Instant::now();
        let first = rng.index(n);
        let (node, sent, answer, unknown_before) = send_with_retries(&s, &mut rng, first, &body, lock_unknown);
        let mut outcome = outcome(&answer);
        if let Outcome::Failed { why, queued } = &mut outcome {
            if unknown_before && why.as_str() == "connection refused" {
                // The last try never reached a node; an earlier one's fate is unknown.
                outcome = Outcome::Unknown { why: format!("{why} after a try of unknown fate") };
            } else {
                // An earlier try may have queued, been granted and been taken back meanwhile.
                *queued |= unknown_before;
            }
        }
        let told = Instant::now();
        let reply = answer.map(|(_, v)| v).unwrap_or_default();
        // Renewals and named releases name the grant, as every client of the API should.
        let grant = reply["grant"].as_str().unwrap_or_default().to_string();
        let acked = matches!(outcome, Outcome::Acked { .. }).then(|| grant.clone());
        s.history.lock().unwrap().attempts.push(Attempt { holder: holder.clone(), shared, scope: scope.into(), sent: asked, done: told, outcome: outcome.clone(), grant: acked });
        let Outcome::Acked { token } = outcome else {
            std::thread::sleep(Duration::from_millis(rng.between(20, 70)));
            continue;
        };
        // Trusted from the send of the try that got the grant.
        let mut trust_end = sent + Duration::from_millis((lease_ms as f64 * (1.0 - DRIFT)) as u64);
        {
            let mut h = s.history.lock().unwrap();
            h.grants.push(told);
            h.decisions.push(decision("grant", node, sent, &reply, n));
        }
        let roll = rng.index(10);
        use_resource(&s, &mut rng, id, scope, token, trust_end, if roll == 0 { lease_ms + 500 } else { lease_ms / 6 });
        if (2..=4).contains(&roll) && Instant::now() < trust_end {
            // Renew, then use it again under the longer lease.
            let renew = format!(r#"{{"scope": "{scope}", "action": "renew", "holder": "{holder}", "grant": "{grant}", "timeout": "{lease_ms}ms"}}"#);
            let renew_sent = Instant::now();
            if let Ok((200, reply)) = post(s.nodes[node], &renew) {
                trust_end = trust_end.max(renew_sent + Duration::from_millis((lease_ms as f64 * (1.0 - DRIFT)) as u64));
                s.history.lock().unwrap().decisions.push(decision("renewal", node, renew_sent, &reply, n));
                use_resource(&s, &mut rng, id, scope, token, trust_end, lease_ms / 6);
            }
        }
        let end = if roll == 1 { trust_end } else { Instant::now().min(trust_end) };
        let trust = Trust { client: id, holder: holder.clone(), scope: scope.into(), token, grant: grant.clone(), write, asked, start: told, end };
        s.history.lock().unwrap().trusts.push(trust);
        if roll == 1 {
            continue; // Crashed while holding: never releases; the lease runs out.
        }
        let bare = rng.index(10) < 3;
        let unlock_id = format!("u{id}-{attempt}");
        let unlock = if bare {
            format!(r#"{{"scope": "{scope}", "action": "unlock", "holder": "{holder}", "request_id": "{unlock_id}"}}"#)
        } else {
            format!(r#"{{"scope": "{scope}", "action": "unlock", "holder": "{holder}", "request_id": "{unlock_id}", "grant": "{grant}"}}"#)
        };
        let unlock_sent = Instant::now();
        let (node, last_sent, answer, unknown_before) = send_with_retries(&s, &mut rng, node, &unlock, unlock_unknown);
        let definite = !unlock_unknown(&answer) && !unknown_before;
        if let Ok((200, reply)) = &answer {
            s.history.lock().unwrap().decisions.push(decision("release", node, last_sent, reply, n));
        }
        if bare {
            let done = definite.then(Instant::now);
            s.history.lock().unwrap().bare_unlocks.push(BareUnlock { holder: holder.clone(), scope: scope.into(), sent: unlock_sent, done });
            if done.is_none() && shared {
                // A copy may still arrive and free whatever this name holds then: the pair
                // moves on to a new name.
                s.generations[pair].fetch_add(1, Ordering::Relaxed);
            }
            if rng.index(2) == 0 {
                again = Some(scope);
            }
        }
    }
}

/// Uses the resource up to three times while the lease is trusted, pausing up to `pause_ms`
/// before each use (a stalled process pauses between its validity check and its write).
fn use_resource(s: &Shared, rng: &mut Rng, client: usize, scope: &str, token: u64, trust_end: Instant, pause_ms: u64) {
    for _ in 0..3 {
        if Instant::now() >= trust_end {
            return;
        }
        std::thread::sleep(Duration::from_millis(rng.between(pause_ms / 2, pause_ms)));
        let at = Instant::now();
        let accepted = s.resource.lock().unwrap().access(scope, token);
        s.history.lock().unwrap().uses.push(Use { client, scope: scope.into(), token, at, accepted, believed_valid: at < trust_end });
    }
}

/// Reads the hot scopes through random nodes, recording what each read showed.
fn observer(seed: u64, s: Arc<Shared>) {
    let mut rng = Rng::new(seed ^ 0x0b5e);
    while !s.stop.load(Ordering::Relaxed) {
        let (node, scope) = (rng.index(s.nodes.len()), SCOPES[rng.index(SCOPES.len())]);
        let start = Instant::now();
        if let Ok((200, v)) = get(s.nodes[node], &format!("/api/v1.0/lock/{scope}")) {
            let end = Instant::now();
            let holders = v["holders"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| Shown {
                            holder: h["holder"].as_str().unwrap_or_default().to_string(),
                            token: h["fencing_token"].as_u64().unwrap_or(0),
                            write: h["lock_type"] == "write",
                            grant: h["grant"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let queue = v["queue"].as_array().map(|q| q.iter().map(|w| w["holder"].as_str().unwrap_or_default().to_string()).collect()).unwrap_or_default();
            s.history.lock().unwrap().observations.push(Observation { node, scope: scope.into(), start, end, holders, queue });
        }
        std::thread::sleep(Duration::from_millis(rng.between(20, 60)));
    }
}

/// The seeded fault schedule: one episode at a time, each recorded with what it impaired.
struct Injector {
    c: Cluster,
    rng: Rng,
    partitions: bool,
    shared: Arc<Shared>,
    /// Liveness problems found while healing (counted as violations).
    problems: Vec<String>,
}

impl Injector {
    fn n(&self) -> usize {
        self.c.agents.len()
    }

    fn pick(&mut self, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.n()).collect();
        for i in (1..all.len()).rev() {
            let j = self.rng.index(i + 1);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }

    fn hold(&mut self, lo: u64, hi: u64) {
        std::thread::sleep(Duration::from_millis(self.rng.between(lo, hi)));
    }

    fn record(&self, impairment: Impairment) {
        self.shared.history.lock().unwrap().impairments.push(impairment);
    }

    fn restart(&mut self, i: usize) {
        let expect = self.n().to_string();
        self.c.start(i, &["--bootstrap-expect", &expect]);
    }

    /// Cuts `pairs` (one way each) for a while, then heals.
    fn cut_for(&mut self, pairs: &[(usize, usize)], lo: u64, hi: u64) {
        for &(a, b) in pairs {
            self.c.cut_one_way(a, b);
        }
        let from = Instant::now();
        self.hold(lo, hi);
        let to = Instant::now();
        self.c.heal();
        for &(src, dst) in pairs {
            self.record(Impairment::Cut { src, dst, from, to });
        }
    }

    fn both_ways(left: &[usize], right: &[usize]) -> Vec<(usize, usize)> {
        left.iter().flat_map(|&a| right.iter().flat_map(move |&b| [(a, b), (b, a)])).collect()
    }

    /// Node `i` down (killed or stopped) while `during` runs.
    fn down_while(&mut self, i: usize, kill: bool, during: impl FnOnce(&mut Self)) {
        if kill {
            self.c.kill(i);
        } else {
            self.c.pause(i, true);
        }
        let from = Instant::now();
        during(self);
        let to = Instant::now();
        if kill {
            self.restart(i);
        } else {
            self.c.pause(i, false);
        }
        self.record(Impairment::Down { node: i, from, to });
    }

    /// Waits (bounded) until every running node sees `n` swept voters, `i` among them.
    fn wait_readmitted(&mut self, i: usize) {
        let (n, name) = (self.n(), self.c.agents[i].name.clone());
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let whole = (0..n).all(|j| {
                get(self.c.http(j), "/api/v1.0/members")
                    .map(|(_, v)| {
                        v["roster_size"] == n
                            && v["sweep_done"] == true
                            && v["members"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == name.as_str() && m["voter"] == true))
                    })
                    .unwrap_or(false)
            });
            if whole {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.problems.push(format!("recovery: {name} was not a voter again on every node 90 s after it came back"));
    }

    /// Runs one episode; returns its kind and whether it left no healthy majority.
    fn episode(&mut self) -> (String, bool) {
        let n = self.n();
        let minority = (n - 1) / 2;
        let kinds: &[&str] = if self.partitions {
            &["kill", "kill", "pause", "pause", "isolate", "split", "bridge", "one-way", "flap", "kill+pause", "kill+isolate", "kill-majority", "wipe", "leave-rejoin"]
        } else {
            &["kill", "kill", "pause", "pause", "kill+pause", "kill-majority", "wipe", "leave-rejoin"]
        };
        let kind = kinds[self.rng.index(kinds.len())];
        match kind {
            "kill" => {
                let v = self.pick(1)[0];
                self.down_while(v, true, |me| me.hold(1_000, 3_000));
            }
            "pause" => {
                // Sometimes past the 1–2 s leases of its clients' grants.
                let v = self.pick(1)[0];
                self.down_while(v, false, |me| me.hold(1_000, 4_000));
            }
            "isolate" => {
                let v = self.pick(1)[0];
                let others: Vec<usize> = (0..n).filter(|&i| i != v).collect();
                self.cut_for(&Self::both_ways(&[v], &others), 1_000, 3_000);
            }
            "split" => {
                let side = self.pick(minority.max(1));
                let others: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                self.cut_for(&Self::both_ways(&side, &others), 1_000, 3_000);
            }
            "bridge" => {
                // One node sees both sides; the sides cannot see each other.
                let order = self.pick(n);
                let cut = 1 + self.rng.index(n - 2);
                let (left, right) = order[1..].split_at(cut);
                self.cut_for(&Self::both_ways(left, right), 1_500, 3_500);
            }
            "one-way" => {
                let pair = self.pick(2);
                let all = self.rng.chance(0.5);
                let pairs: Vec<(usize, usize)> = if all { (0..n).filter(|&b| b != pair[0]).map(|b| (pair[0], b)).collect() } else { vec![(pair[0], pair[1])] };
                self.cut_for(&pairs, 1_000, 3_000);
            }
            "flap" => {
                let side = self.pick(minority.max(1));
                let others: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                let until = Instant::now() + Duration::from_millis(self.rng.between(3_000, 5_000));
                while Instant::now() < until {
                    self.cut_for(&Self::both_ways(&side, &others), 200, 600);
                    self.hold(200, 600);
                }
            }
            "kill+pause" => {
                let v = self.pick(2);
                self.down_while(v[0], true, |me| me.down_while(v[1], false, |me| me.hold(1_000, 3_000)));
                return (kind.into(), 2 > minority);
            }
            "kill+isolate" => {
                let v = self.pick(2);
                let others: Vec<usize> = (0..n).filter(|&i| i != v[1]).collect();
                self.down_while(v[0], true, |me| me.cut_for(&Self::both_ways(&[v[1]], &others), 1_000, 3_000));
                return (kind.into(), 2 > minority);
            }
            "kill-majority" => {
                let victims = self.pick(minority + 1);
                for &v in &victims {
                    self.c.kill(v);
                }
                let from = Instant::now();
                self.hold(2_000, 4_000);
                let to = Instant::now();
                for &v in &victims {
                    self.restart(v);
                    self.record(Impairment::Down { node: v, from, to });
                }
                return (kind.into(), true);
            }
            "wipe" => {
                let v = self.pick(1)[0];
                self.c.wipe(v);
                let from = Instant::now();
                self.hold(500, 1_500);
                self.record(Impairment::Down { node: v, from, to: Instant::now() });
                self.c.start(v, &[]);
                self.wait_readmitted(v);
            }
            _ => {
                // leave-rejoin: a graceful leave, then the same name back with an empty disk.
                // The node votes while it leaves: it is down only once its process has exited.
                let v = self.pick(1)[0];
                let _ = self.c.terminate(v, Duration::from_secs(20));
                let from = Instant::now();
                self.c.wipe(v);
                self.hold(500, 1_500);
                self.record(Impairment::Down { node: v, from, to: Instant::now() });
                self.c.start(v, &[]);
                self.wait_readmitted(v);
            }
        }
        (kind.into(), false)
    }
}

struct RunReport {
    violations: Vec<String>,
    unavailable: f64,
}

fn run_once(n: usize, seconds: u64, seed: u64) -> RunReport {
    let mut c = Cluster::in_private_network("chaos", n).unwrap_or_else(|| Cluster::new("chaos", n));
    let partitions = c.private_network;
    let expect = n.to_string();
    c.start_all(&["--bootstrap-expect", &expect]);
    c.wait_for_roster(&(0..n).collect::<Vec<_>>(), n);
    let clients = n + 3;
    let shared = Arc::new(Shared {
        nodes: (0..n).map(|i| c.http(i)).collect(),
        // Pairs share names; at least one client (two when the count is even) does not, so
        // that a refused attempt stays traceable in reads.
        generations: (0..(clients - 1) / 2).map(|_| AtomicU64::new(0)).collect(),
        history: Mutex::new(History::default()),
        resource: Mutex::new(Resource::default()),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut threads: Vec<_> = (0..clients)
        .map(|id| {
            let s = shared.clone();
            std::thread::spawn(move || client(id, seed, s))
        })
        .collect();
    let s = shared.clone();
    threads.push(std::thread::spawn(move || observer(seed, s)));

    let mut inj = Injector { c, rng: Rng::new(seed), partitions, shared: shared.clone(), problems: Vec::new() };
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() + Duration::from_secs(8) < deadline {
        inj.hold(1_500, 3_000);
        let start = Instant::now();
        let (kind, majority_lost) = inj.episode();
        shared.history.lock().unwrap().episodes.push(Episode { kind, start, end: Instant::now(), majority_lost });
    }
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let end = Instant::now();
    let history = shared.history.lock().unwrap();
    let mut violations = check(&history);
    violations.extend(inj.problems.iter().cloned());
    if !violations.is_empty() {
        inj.c.keep_files = true;
        eprintln!("chaos: the agents' logs are kept in {}", inj.c.dir.display());
    }
    let unavailable = max_unavailability(&history, started, end);
    let (unknown, unknown_granted) = unknown_outcomes(&history);
    let failed = history.attempts.iter().filter(|a| matches!(a.outcome, Outcome::Failed { .. })).count();
    let kinds = {
        let mut k: Vec<String> = history.episodes.iter().map(|e| e.kind.clone()).collect();
        k.sort();
        k.dedup_by(|a, b| a == b);
        k.iter().map(|kind| format!("{kind}×{}", history.episodes.iter().filter(|e| &e.kind == kind).count())).collect::<Vec<_>>().join(" ")
    };
    let recovered: Vec<f64> = recoveries(&history, end).into_iter().filter_map(|(_, r)| r).collect();
    println!(
        "chaos run seed {seed}, {n} nodes{}: {} acquires ({} granted, {failed} refused, {unknown} unknown of which {unknown_granted} later seen granted), \
         {} bare releases ({} of unknown fate), {} decisions checked for a majority, {} reads, {} uses ({} rejected); faults: {kinds}; \
         {unavailable:.1} s max unavailability, {:.1} s max recovery after a fault healed",
        if partitions { " with partitions" } else { " (no partitions: not root)" },
        history.attempts.len(),
        history.grants.len(),
        history.bare_unlocks.len(),
        history.bare_unlocks.iter().filter(|u| u.done.is_none()).count(),
        history.decisions.len(),
        history.observations.len(),
        history.uses.len(),
        history.uses.iter().filter(|u| !u.accepted).count(),
        recovered.iter().cloned().fold(0.0, f64::max),
    );
    for gap in long_gaps(&history, started, end, 5.0) {
        println!("chaos gap: {gap}");
    }
    if history.grants.len() <= 10 {
        violations.push(format!("liveness: the run granted almost nothing ({} grants)", history.grants.len()));
    }
    RunReport { violations, unavailable }
}

fn profile(n: usize) {
    let seconds: u64 = std::env::var("CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let seed: u64 = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let report = run_once(n, seconds, seed);
    for v in &report.violations {
        println!("violation: {v}");
    }
    println!("chaos: 1 runs, {} violations, {:.1} s max unavailability", report.violations.len(), report.unavailable);
    assert!(report.violations.is_empty());
}

#[test]
fn chaos_3_nodes() {
    profile(3);
}

#[test]
fn chaos_5_nodes() {
    profile(5);
}

/// Seven agents on two cores: for soaks (`scripts/chaos.sh` runs it in turn with 3 and 5).
#[test]
#[ignore]
fn chaos_7_nodes() {
    profile(7);
}

/// The checker has teeth: each kind of violation in a made-up history is found, and a clean
/// history passes.
#[test]
fn the_checker_catches_known_violations() {
    let t0 = Instant::now();
    let s = |ms: u64| t0 + Duration::from_millis(ms);
    let trust = |client: usize, token, start, end| Trust {
        client,
        holder: format!("c{client}"),
        scope: "x".into(),
        token,
        grant: format!("{token}-{token}"),
        write: true,
        asked: s(start),
        start: s(start),
        end: s(end),
    };
    let read = |start, end, holders: &[(&str, u64)]| Observation {
        node: 0,
        scope: "x".into(),
        start: s(start),
        end: s(end),
        holders: holders.iter().map(|&(h, t)| Shown { holder: h.to_string(), token: t, write: true, grant: format!("{t}-{t}") }).collect(),
        queue: vec![],
    };
    let attempt = |holder: &str, sent, done, outcome| Attempt { holder: holder.into(), shared: false, scope: "x".into(), sent: s(sent), done: s(done), outcome, grant: None };
    let decided = |agreed: Vec<Option<usize>>, voters| Decision { what: "grant".into(), node: 0, sent: s(3000), told: s(3100), agreed, voters };
    let history = History {
        trusts: vec![trust(1, 5, 0, 1000), trust(2, 6, 500, 1500), trust(3, 4, 2000, 2500)],
        uses: vec![Use { client: 3, scope: "x".into(), token: 4, at: s(2100), accepted: false, believed_valid: true }],
        bare_unlocks: vec![],
        grants: vec![s(0), s(500), s(2000)],
        attempts: vec![
            attempt("c9", 2600, 2700, Outcome::Failed { why: "no_quorum".into(), queued: false }),
            attempt("c8", 2600, 2700, Outcome::Failed { why: "busy".into(), queued: true }),
        ],
        decisions: vec![decided(vec![Some(0)], 3), decided(vec![Some(0), Some(2)], 3)],
        observations: vec![read(2100, 2200, &[]), read(2800, 2900, &[("c9", 7)]), read(2650, 2680, &[("c8", 8)]), read(2750, 2800, &[("c8", 8), ("c7", 9)])],
        impairments: vec![Impairment::Down { node: 2, from: s(2900), to: s(3500) }],
        episodes: vec![],
    };
    let found = check(&history);
    for expected in [
        "exclusion: x: client 1",
        "granted after",
        "believed its lease valid",
        "acknowledged with [Some(0)] of 3",
        "counted node 2",
        "lost: c3 held x (grant 4-4)",
        "c9 was told no_quorum",
        "c8 was told busy",
        "exclusion: a read",
    ] {
        assert!(found.iter().any(|v| v.contains(expected)), "{expected:?} not in {found:#?}");
    }
    // A queued attempt may show before its answer (a grant handed to it, taken back by the cancel).
    assert_eq!(found.iter().filter(|v| v.contains("c8 was told busy")).count(), 1, "{found:#?}");
    let clean = History {
        trusts: vec![trust(1, 5, 0, 1000), trust(2, 6, 1000, 1500)],
        grants: vec![s(0), s(1000)],
        observations: vec![read(100, 200, &[("c1", 5)])],
        decisions: vec![decided(vec![Some(0), Some(1)], 3)],
        ..History::default()
    };
    assert!(check(&clean).is_empty(), "{:?}", check(&clean));
    assert!((max_unavailability(&clean, s(0), s(3000)) - 2.0).abs() < 0.01);
}

/// Processes sharing a holder name are one holder for a bare release: it may free the
/// partner's grant made before its answer (no violation when someone else takes the scope
/// then), but never a grant asked for after its answer (a violation).
#[test]
fn the_checker_lets_a_bare_release_free_only_older_grants_of_its_holder() {
    let t0 = Instant::now();
    let s = |ms: u64| t0 + Duration::from_millis(ms);
    let trust = |client: usize, holder: &str, token: u64, asked, start, end| Trust {
        client,
        holder: holder.into(),
        scope: "x".into(),
        token,
        grant: format!("{token}-{token}"),
        write: true,
        asked: s(asked),
        start: s(start),
        end: s(end),
    };
    let bare = |sent, done: Option<u64>| BareUnlock { holder: "g0.0".into(), scope: "x".into(), sent: s(sent), done: done.map(s) };
    // Client 1 (g0.0) holds from 100 to 2000; its partner's bare release is sent at 500 and
    // answered at 600; client 2 takes the scope at 700. Client 1's use at 800 is rejected.
    let use_at = |at| Use { client: 1, scope: "x".into(), token: 5, at: s(at), accepted: false, believed_valid: true };
    let freed = History {
        trusts: vec![trust(1, "g0.0", 5, 50, 100, 2000), trust(2, "c2", 6, 650, 700, 1500)],
        uses: vec![use_at(800)],
        bare_unlocks: vec![bare(500, Some(600))],
        ..History::default()
    };
    assert!(check(&freed).is_empty(), "{:#?}", check(&freed));
    // The same, but client 1 asked for its grant after the release was answered: it must
    // not have been freed.
    let kept = History {
        trusts: vec![trust(1, "g0.0", 5, 650, 660, 2000), trust(2, "c2", 6, 650, 700, 1500)],
        uses: vec![use_at(800)],
        bare_unlocks: vec![bare(500, Some(600))],
        ..History::default()
    };
    let found = check(&kept);
    assert!(found.iter().any(|v| v.contains("exclusion: x: client 1")), "{found:#?}");
    assert!(found.iter().any(|v| v.contains("believed its lease valid")), "{found:#?}");
    // A bare release whose fate is unknown may arrive at any time: it may free any grant.
    let unknown = History { bare_unlocks: vec![bare(500, None)], ..kept };
    assert!(check(&unknown).is_empty(), "{:#?}", check(&unknown));
}
