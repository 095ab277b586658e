//! Chaos on real processes: clients spread over all nodes lock, use a fenced resource, renew
//! and release (some crash holding, some pause past their lease) while nodes are killed,
//! restarted, paused and, as root, partitioned. The checker then says whether exclusion and
//! fencing held. `CHAOS_SECONDS` and `CHAOS_SEED` set the run (scripts/chaos.sh); the last line
//! printed is `chaos: R runs, V violations, U s max unavailability`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::chaos::{check, max_unavailability, History, Resource, Trust, Use};
use support::{post, Cluster};

/// The drift bound the agents assume; a client trusts `lease × (1 − drift)` from its send.
const DRIFT: f64 = 0.01;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn client(id: usize, seed: u64, c: Arc<Vec<std::net::SocketAddr>>, history: Arc<Mutex<History>>, resource: Arc<Mutex<Resource>>, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed ^ (id as u64 * 7919));
    let holder = format!("client-{id}");
    let scopes = ["hot-a", "hot-b"];
    while !stop.load(Ordering::Relaxed) {
        let scope = scopes[rng.below(2) as usize];
        let write = rng.below(4) != 0;
        let lease_ms = 1_000 + rng.below(1_000);
        let node = c[rng.below(c.len() as u64) as usize];
        let body = format!(
            r#"{{"scope": "{scope}", "action": "lock", "holder": "{holder}", "lock_type": "{}", "timeout": "{lease_ms}ms", "wait": "1s"}}"#,
            if write { "write" } else { "read" }
        );
        let sent = Instant::now();
        let Ok((200, reply)) = post(node, &body) else {
            std::thread::sleep(Duration::from_millis(20 + rng.below(50)));
            continue;
        };
        let Some(token) = reply["fencing_token"].as_u64() else { continue };
        let trust_end = sent + Duration::from_millis((lease_ms as f64 * (1.0 - DRIFT)) as u64);
        let told = Instant::now();
        history.lock().unwrap().grants.push(told);
        let mut end = trust_end;
        // Use the resource a few times while trusting, as a careful client would.
        let roll = rng.below(10);
        for _ in 0..3 {
            let pause = if roll == 0 { lease_ms + 500 } else { rng.below(lease_ms / 6) };
            if Instant::now() >= trust_end {
                break;
            }
            // A pause between the validity check and the write (as a stalled process would).
            std::thread::sleep(Duration::from_millis(pause));
            let at = Instant::now();
            let accepted = resource.lock().unwrap().access(scope, token);
            history.lock().unwrap().uses.push(Use { client: id, scope: scope.into(), token, at, accepted, believed_valid: at < trust_end });
        }
        if roll == 1 {
            // Crash while holding: never release; the trust ends with the lease.
            history.lock().unwrap().trusts.push(Trust { client: id, scope: scope.into(), token, write, start: told, end });
            continue;
        }
        let release_at = Instant::now().min(trust_end);
        end = end.min(release_at);
        history.lock().unwrap().trusts.push(Trust { client: id, scope: scope.into(), token, write, start: told, end });
        let unlock = format!(r#"{{"scope": "{scope}", "action": "unlock", "holder": "{holder}", "fencing_token": {token}}}"#);
        let _ = post(node, &unlock);
    }
}

fn run_once(seconds: u64, seed: u64) -> (usize, Vec<String>, f64) {
    let mut c = Cluster::in_private_network("chaos", 3).unwrap_or_else(|| Cluster::new("chaos", 3));
    let partitions = c.private_network;
    c.start_all(&["--bootstrap-expect", "3"]);
    c.wait_for_roster(&[0, 1, 2], 3);
    let nodes = Arc::new((0..3).map(|i| c.http(i)).collect::<Vec<_>>());
    let history = Arc::new(Mutex::new(History::default()));
    let resource = Arc::new(Mutex::new(Resource::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|id| {
            let (nodes, history, resource, stop) = (nodes.clone(), history.clone(), resource.clone(), stop.clone());
            std::thread::spawn(move || client(id, seed, nodes, history, resource, stop))
        })
        .collect();
    // The faults: one at a time, so a majority is always meant to be up between them.
    let mut rng = Rng(seed);
    let deadline = started + Duration::from_secs(seconds);
    let mut faults = 0;
    while Instant::now() + Duration::from_secs(6) < deadline {
        std::thread::sleep(Duration::from_millis(1_500 + rng.below(1_500)));
        let victim = rng.below(3) as usize;
        let kind = rng.below(if partitions { 3 } else { 2 });
        faults += 1;
        match kind {
            0 => {
                c.kill(victim);
                std::thread::sleep(Duration::from_millis(1_000 + rng.below(2_000)));
                c.start(victim, &["--bootstrap-expect", "3"]);
            }
            1 => {
                let pid = c.agents[victim].child.as_ref().map(|ch| ch.id() as i32).unwrap_or(0);
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_millis(1_000 + rng.below(2_000)));
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            _ => {
                let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
                c.split(&[victim], &others);
                std::thread::sleep(Duration::from_millis(1_000 + rng.below(2_000)));
                c.heal();
            }
        }
    }
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        let _ = t.join();
    }
    let end = Instant::now();
    let history = history.lock().unwrap();
    let violations = check(&history);
    let unavailable = max_unavailability(&history, started, end);
    println!(
        "chaos run seed {seed}: {} grants, {} uses ({} rejected), {faults} faults{}",
        history.grants.len(),
        history.uses.len(),
        history.uses.iter().filter(|u| !u.accepted).count(),
        if partitions { " (with partitions)" } else { " (no partitions: not root)" }
    );
    assert!(history.grants.len() > 10, "the run granted almost nothing: {} grants", history.grants.len());
    (1, violations, unavailable)
}

#[test]
fn chaos_short_profile() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let seed: u64 = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let (runs, violations, unavailable) = run_once(seconds, seed);
    for v in &violations {
        println!("violation: {v}");
    }
    println!("chaos: {runs} runs, {} violations, {unavailable:.1} s max unavailability", violations.len());
    assert!(violations.is_empty());
}

/// The checker has teeth: a history with two overlapping write holders, a token that went
/// back, and a rejected client that still believed its lease valid is three violations.
#[test]
fn the_checker_catches_a_known_violation() {
    let t0 = Instant::now();
    let s = |ms: u64| t0 + Duration::from_millis(ms);
    let trust = |client, token, start, end| Trust { client, scope: "x".into(), token, write: true, start: s(start), end: s(end) };
    let history = History {
        trusts: vec![trust(1, 5, 0, 1000), trust(2, 6, 500, 1500), trust(3, 4, 2000, 2500)],
        uses: vec![Use { client: 3, scope: "x".into(), token: 4, at: s(2100), accepted: false, believed_valid: true }],
        grants: vec![s(0), s(500), s(2000)],
    };
    let found = check(&history);
    assert!(found.iter().any(|v| v.starts_with("exclusion")), "{found:?}");
    assert!(found.iter().any(|v| v.contains("granted after")), "{found:?}");
    assert!(found.iter().any(|v| v.contains("believed its lease valid")), "{found:?}");
    let clean = History { trusts: vec![trust(1, 5, 0, 1000), trust(2, 6, 1000, 1500)], uses: vec![], grants: vec![s(0), s(1000)] };
    assert!(check(&clean).is_empty(), "{:?}", check(&clean));
    assert!((max_unavailability(&clean, s(0), s(3000)) - 2.0).abs() < 0.01);
}
