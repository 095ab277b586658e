//! The scenarios. Each returns the figures of one table row (JSON), or why it could not run.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::LockClient;
use crate::cluster::{Cluster, Kind};
use crate::stats::{ms, per_second, percentile};

/// 1 worker, acquire and release on one scope, through node 1.
pub fn uncontended(c: &Cluster, pairs: usize) -> Result<Value, String> {
    let mut client = LockClient::new(c.kind, c.client_addr(0), "bench-uncontended".into());
    for _ in 0..pairs.min(20) {
        let g = client.acquire("uncontended", false)?;
        client.release("uncontended", &g)?;
    }
    let (mut acquire, mut release) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    let started = Instant::now();
    for _ in 0..pairs {
        let t0 = Instant::now();
        let g = client.acquire("uncontended", false)?;
        let t1 = Instant::now();
        client.release("uncontended", &g)?;
        acquire.push(t1 - t0);
        release.push(t1.elapsed());
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "pairs": pairs, "pairs_per_s": per_second(pairs, elapsed),
        "acquire_p50_ms": ms(percentile(&mut acquire, 50.0)), "acquire_p90_ms": ms(percentile(&mut acquire, 90.0)),
        "acquire_p99_ms": ms(percentile(&mut acquire, 99.0)),
        "release_p50_ms": ms(percentile(&mut release, 50.0)), "release_p90_ms": ms(percentile(&mut release, 90.0)),
        "release_p99_ms": ms(percentile(&mut release, 99.0)),
        "connections": client.connects(),
    }))
}

/// One completed (or failed) pair of a worker.
struct Pair {
    done: Instant,
    latency: Duration,
    ok: bool,
    node: usize,
}

/// `workers` workers spread over the nodes at `addrs`, each acquiring and releasing its own
/// scope until `stop` says so; every pair they finished, and the connections they opened.
fn independent_load(kind: Kind, addrs: &[SocketAddr], workers: usize, scope: &str, stop: &(dyn Fn(Instant) -> bool + Sync)) -> (Vec<Pair>, u64) {
    let pairs = Mutex::new(Vec::new());
    let connects = Mutex::new(0);
    std::thread::scope(|s| {
        for w in 0..workers {
            let node = w % addrs.len();
            let (pairs, connects) = (&pairs, &connects);
            let mut client = LockClient::new(kind, addrs[node], format!("bench-{scope}-{w}"));
            let scope = format!("{scope}-{w}");
            s.spawn(move || {
                let mut mine = Vec::new();
                while !stop(Instant::now()) {
                    let t0 = Instant::now();
                    let ok = client.acquire(&scope, false).and_then(|g| client.release(&scope, &g)).is_ok();
                    mine.push(Pair { done: Instant::now(), latency: t0.elapsed(), ok, node });
                    if !ok {
                        std::thread::sleep(Duration::from_millis(20)); // a dead node refuses at once
                    }
                }
                *connects.lock().unwrap_or_else(|e| e.into_inner()) += client.connects();
                pairs.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            });
        }
    });
    (pairs.into_inner().unwrap_or_else(|e| e.into_inner()), connects.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// 16 workers, each on its own scope.
pub fn independent(c: &Cluster, workers: usize, duration: Duration) -> Result<Value, String> {
    let started = Instant::now();
    let (pairs, connects) = independent_load(c.kind, &c.addrs(), workers, "independent", &|now| now - started >= duration);
    let elapsed = started.elapsed();
    let errors = pairs.iter().filter(|p| !p.ok).count();
    let mut latencies: Vec<Duration> = pairs.iter().filter(|p| p.ok).map(|p| p.latency).collect();
    Ok(json!({
        "workers": workers, "pairs": latencies.len(), "errors": errors,
        "pairs_per_s": per_second(latencies.len(), elapsed),
        "pair_p50_ms": ms(percentile(&mut latencies, 50.0)), "pair_p99_ms": ms(percentile(&mut latencies, 99.0)),
        "connections": connects,
    }))
}

/// 8 workers on one scope, each waiting for its turn, holding nothing but the grant.
pub fn contended(c: &Cluster, workers: usize, duration: Duration) -> Result<Value, String> {
    struct Held {
        token: u64,
        granted: Instant,
        releasing: Instant,
    }
    let held = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let (held, errors) = (held.clone(), errors.clone());
            let mut client = LockClient::new(c.kind, c.client_addr(w % c.len()), format!("bench-contended-{w}"));
            s.spawn(move || {
                while started.elapsed() < duration {
                    let result = client.acquire("contended", true).and_then(|g| {
                        let granted = Instant::now();
                        let releasing = Instant::now();
                        client.release("contended", &g).map(|_| Held { token: g.token, granted, releasing })
                    });
                    match result {
                        Ok(h) => held.lock().unwrap_or_else(|e| e.into_inner()).push(h),
                        Err(e) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let mut held = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    held.sort_by_key(|h| h.token);
    // Each grant was answered only after the previous holder's release was sent: holders never
    // overlapped, and tokens rose with each grant.
    let overlaps = held.windows(2).filter(|w| w[1].granted < w[0].releasing).count();
    let repeated = held.windows(2).filter(|w| w[1].token == w[0].token).count();
    Ok(json!({
        "workers": workers, "grants": held.len(), "grants_per_s": per_second(held.len(), elapsed),
        "errors": errors.len(), "first_error": errors.first(),
        "overlaps": overlaps, "tokens_repeated": repeated, "exclusive": overlaps == 0 && repeated == 0,
    }))
}

/// The independent load while the last node is killed at a quarter of the run and started
/// again at half of it: failures through the surviving nodes, the longest time without any
/// grant, and latency before, during and after.
pub fn voter_loss(c: &mut Cluster, workers: usize, duration: Duration) -> Result<Value, String> {
    let victim = c.len() - 1;
    let (kind, addrs) = (c.kind, c.addrs());
    let started = Instant::now();
    let (kill_at, restart_at) = (started + duration / 4, started + duration / 2);
    let (pairs, restart) = std::thread::scope(|s| {
        let load = s.spawn(|| independent_load(kind, &addrs, workers, "voter-loss", &|now| now - started >= duration));
        std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
        c.kill(victim);
        std::thread::sleep(restart_at.saturating_duration_since(Instant::now()));
        let restart = c.start_node(victim);
        (load.join().map(|(p, _)| p).unwrap_or_default(), restart)
    });
    restart?;
    let end = Instant::now();
    let survivors = |p: &&Pair| p.node != victim;
    let failed_survivors = pairs.iter().filter(survivors).filter(|p| !p.ok).count();
    let failed_victim = pairs.iter().filter(|p| p.node == victim && !p.ok).count();
    let mut granted: Vec<Instant> = pairs.iter().filter(|p| p.ok).map(|p| p.done).collect();
    granted.push(started);
    granted.push(end);
    granted.sort_unstable();
    let longest_gap = granted.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let phase = |from: Instant, to: Instant| {
        let mut l: Vec<Duration> = pairs.iter().filter(survivors).filter(|p| p.ok && p.done >= from && p.done < to).map(|p| p.latency).collect();
        (l.len(), ms(percentile(&mut l, 99.0)))
    };
    let (before, during, after) = (phase(started, kill_at), phase(kill_at, restart_at), phase(restart_at, end));
    Ok(json!({
        "workers": workers, "killed": format!("node {}", victim + 1),
        "failed_via_survivors": failed_survivors, "failed_via_killed": failed_victim,
        "longest_gap_ms": ms(longest_gap),
        "p99_before_ms": before.1, "p99_during_ms": during.1, "p99_after_ms": after.1,
        "pairs_before": before.0, "pairs_during": during.0, "pairs_after": after.0,
    }))
}

/// Acquire latency (p50) through node 1 on `n` scopes never locked before.
fn fresh_acquire_p50(c: &Cluster, prefix: &str, n: usize) -> Result<Duration, String> {
    let mut client = LockClient::new(c.kind, c.client_addr(0), format!("bench-{prefix}"));
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let scope = format!("{prefix}-{i}");
        let t0 = Instant::now();
        let g = client.acquire(&scope, false)?;
        latencies.push(t0.elapsed());
        client.release(&scope, &g)?;
    }
    Ok(percentile(&mut latencies, 50.0))
}

/// The largest resident memory of any node, in MB.
fn rss_mb(c: &Cluster) -> f64 {
    let bytes = (0..c.len()).filter_map(|i| c.rss(i)).max().unwrap_or(0);
    (bytes as f64 / 1e5).round() / 10.0
}

/// Waits until node 1's installed roster has `size` voters and its sweep is done; how long.
fn roster_settled(c: &Cluster, size: usize, bound: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    while c.roster_seen(0) != Some((size, true)) {
        if started.elapsed() > bound {
            return Err(format!("the roster did not settle at {size} voters, swept, within {bound:?} (now {:?})", c.roster_seen(0)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(started.elapsed())
}

/// Acquire latency and memory after `scopes` distinct scopes were locked and released; then
/// (lockmesh) a fourth node joins and is removed again, each a roster change whose sweep
/// rewrites every scope, and how long each took until its sweep was done.
pub fn scale(c: &mut Cluster, scopes: usize, workers: usize) -> Result<Value, String> {
    let idle_mb = rss_mb(c);
    let empty = fresh_acquire_p50(c, "probe-empty", 200)?;
    let errors = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let errors = &errors;
            let mut client = LockClient::new(c.kind, c.client_addr(w % c.len()), format!("bench-scale-{w}"));
            s.spawn(move || {
                for i in (w..scopes).step_by(workers) {
                    let scope = format!("scale-{i}");
                    if let Err(e) = client.acquire(&scope, false).and_then(|g| client.release(&scope, &g)) {
                        errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let full = fresh_acquire_p50(c, "probe-full", 200)?;
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    let rss_full = rss_mb(c);
    let (joined, removed) = match c.kind {
        Kind::Lockmesh => {
            // A sweep rewrites a few thousand scopes a second: allow an hour for a million.
            let bound = Duration::from_secs(600 + scopes as u64 / 250);
            let fourth = c.add_node()?;
            c.start_node(fourth)?;
            let joined = roster_settled(c, 4, bound)?;
            c.kill(fourth);
            c.remove_member(0, &format!("node-{}", fourth + 1))?;
            (Some(joined.as_secs_f64()), Some(roster_settled(c, 3, bound)?.as_secs_f64()))
        }
        Kind::Etcd => (None, None),
    };
    Ok(json!({
        "scopes": scopes, "fill_pairs_per_s": per_second(scopes, elapsed), "errors": errors.len(), "first_error": errors.first(),
        "acquire_p50_empty_ms": ms(empty), "acquire_p50_full_ms": ms(full),
        "p50_ratio": (full.as_secs_f64() / empty.as_secs_f64().max(1e-9) * 100.0).round() / 100.0,
        "rss_idle_mb": idle_mb, "rss_full_mb": rss_full,
        "join_swept_s": joined, "remove_swept_s": removed,
    }))
}

/// `n` agents started at once: until every node sees all of them alive and the roster holds
/// them all; then one is killed, until every other node sees it gone.
pub fn members(binary: &std::path::Path, n: usize) -> Result<Value, String> {
    let mut c = Cluster::prepare(Kind::Lockmesh, binary, n, "members")?;
    let started = Instant::now();
    c.launch()?;
    let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
    let bound = Duration::from_secs(300);
    let all_see = |c: &Cluster, nodes: usize, ok: &dyn Fn(&[String], usize) -> bool| {
        (0..nodes).all(|i| c.members_seen(i).is_some_and(|(alive, roster)| ok(&alive, roster)))
    };
    while !all_see(&c, n, &|alive, roster| roster == n && names.iter().all(|m| alive.contains(m))) {
        if started.elapsed() > bound {
            return Err(format!("{n} members did not converge in {bound:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let converged = started.elapsed();
    let gone = names[n - 1].clone();
    c.kill(n - 1);
    let killed = Instant::now();
    while !all_see(&c, n - 1, &|alive, _| !alive.contains(&gone)) {
        if killed.elapsed() > bound {
            return Err(format!("{gone} was not seen down everywhere in {bound:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(json!({"members": n, "converged_s": converged.as_secs_f64(), "down_everywhere_s": killed.elapsed().as_secs_f64()}))
}
