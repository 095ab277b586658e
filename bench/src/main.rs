//! `lockmesh-bench` (run by `scripts/bench.sh`): starts clusters of release-built agents on
//! 127.0.0.1 and measures them; with `--compare etcd`, the lock scenarios also against a
//! 3-node etcd cluster, alternating the two, with the ratios at the end. Each scenario prints
//! a table row and appends a JSON line to the results file.

mod client;
mod cluster;
mod http;
mod scenarios;
mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use cluster::{Cluster, Kind};

const USAGE: &str = "usage: lockmesh-bench [--profile full|tiny] [--scenarios a,b,...] [--compare etcd] [--rounds N]
                      [--scopes N] [--lockmesh PATH] [--etcd PATH] [--out FILE]
scenarios: uncontended independent contended voter-loss scale members (default: all)";

const LOCK_SCENARIOS: [&str; 4] = ["uncontended", "independent", "contended", "voter-loss"];
const ALL: [&str; 6] = ["uncontended", "independent", "contended", "voter-loss", "scale", "members"];

/// How big each scenario is.
struct Profile {
    name: &'static str,
    pairs: usize,
    run: Duration,
    voter_loss: Duration,
    scopes: usize,
    members: usize,
    /// Runs of each lock scenario per target.
    rounds: usize,
}

const FULL: Profile =
    Profile { name: "full", pairs: 2000, run: Duration::from_secs(10), voter_loss: Duration::from_secs(20), scopes: 1_000_000, members: 32, rounds: 3 };
/// For the test suite: checks that every scenario runs, measures nothing worth keeping.
const TINY: Profile =
    Profile { name: "tiny", pairs: 30, run: Duration::from_secs(1), voter_loss: Duration::from_secs(4), scopes: 300, members: 4, rounds: 1 };

struct Options {
    profile: &'static Profile,
    scenarios: Vec<String>,
    compare: bool,
    rounds: Option<usize>,
    /// Distinct scopes of the scale scenario, if not the profile's.
    scopes: Option<usize>,
    lockmesh: PathBuf,
    etcd: PathBuf,
    out: PathBuf,
}

fn options() -> Result<Options, String> {
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = here.parent().map(PathBuf::from).unwrap_or_default();
    let mut o = Options {
        profile: &FULL,
        scenarios: ALL.iter().map(|s| s.to_string()).collect(),
        compare: false,
        rounds: None,
        scopes: None,
        lockmesh: dir.join("lockmesh"),
        etcd: PathBuf::from("etcd"),
        out: dir.join("bench-results.jsonl"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--profile" => {
                o.profile = match value()?.as_str() {
                    "full" => &FULL,
                    "tiny" => &TINY,
                    other => return Err(format!("unknown profile {other:?}")),
                }
            }
            "--scenarios" => o.scenarios = value()?.split(',').map(String::from).collect(),
            "--compare" => match value()?.as_str() {
                "etcd" => o.compare = true,
                other => return Err(format!("can only compare with etcd, not {other:?}")),
            },
            "--rounds" => o.rounds = Some(value()?.parse().map_err(|_| "--rounds takes a number")?),
            "--scopes" => o.scopes = Some(value()?.parse().map_err(|_| "--scopes takes a number")?),
            "--lockmesh" => o.lockmesh = value()?.into(),
            "--etcd" => o.etcd = value()?.into(),
            "--out" => o.out = value()?.into(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(bad) = o.scenarios.iter().find(|s| !ALL.contains(&s.as_str())) {
        return Err(format!("unknown scenario {bad:?}"));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("lockmesh-bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut out = match std::fs::OpenOptions::new().create(true).append(true).open(&o.out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lockmesh-bench: cannot write {}: {e}", o.out.display());
            return ExitCode::FAILURE;
        }
    };
    let machine = machine();
    println!("lockmesh-bench, profile {}, {} (results appended to {})", o.profile.name, machine["cpu"].as_str().unwrap_or("?"), o.out.display());
    let targets: Vec<Kind> = if o.compare { vec![Kind::Lockmesh, Kind::Etcd] } else { vec![Kind::Lockmesh] };
    let mut results: Vec<(String, Kind, Value)> = Vec::new();
    let mut failed = false;
    for scenario in &o.scenarios {
        let kinds: &[Kind] = if LOCK_SCENARIOS.contains(&scenario.as_str()) { &targets } else { &[Kind::Lockmesh] };
        let rounds = if LOCK_SCENARIOS.contains(&scenario.as_str()) { o.rounds.unwrap_or(o.profile.rounds) } else { 1 };
        for round in 0..rounds {
            // Alternate which goes first, so neither always runs on a warmer machine.
            let order: Vec<Kind> = if round % 2 == 0 { kinds.to_vec() } else { kinds.iter().rev().copied().collect() };
            for kind in order {
                let row = run(&o, scenario, kind);
                let line = json!({"scenario": scenario, "target": kind.name(), "round": round + 1, "profile": o.profile.name,
                    "machine": machine, "result": row.as_ref().ok(), "error": row.as_ref().err()});
                let _ = writeln!(out, "{line}");
                match row {
                    Ok(v) => {
                        println!("{:<12} {:<9} {}", scenario, kind.name(), summary(&v));
                        results.push((scenario.clone(), kind, v));
                    }
                    Err(e) => {
                        println!("{:<12} {:<9} FAILED: {e}", scenario, kind.name());
                        failed = true;
                    }
                }
            }
        }
    }
    if o.compare {
        print_ratios(&results);
    }
    print_targets(&results);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run(o: &Options, scenario: &str, kind: Kind) -> Result<Value, String> {
    let p = o.profile;
    let binary = match kind {
        Kind::Lockmesh => &o.lockmesh,
        Kind::Etcd => &o.etcd,
    };
    if scenario == "members" {
        return scenarios::members(binary, p.members);
    }
    let mut c = Cluster::start(kind, binary, 3, scenario)?;
    match scenario {
        "uncontended" => scenarios::uncontended(&c, p.pairs),
        "independent" => scenarios::independent(&c, 16, p.run),
        "contended" => scenarios::contended(&c, 8, p.run),
        "voter-loss" => scenarios::voter_loss(&mut c, 16, p.voter_loss),
        "scale" => scenarios::scale(&mut c, o.scopes.unwrap_or(p.scopes), 16),
        other => Err(format!("unknown scenario {other}")),
    }
}

/// A row's figures as `key=value` pairs.
fn summary(v: &Value) -> String {
    let Some(map) = v.as_object() else { return v.to_string() };
    map.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| format!("{k}={}", x.as_str().map_or(x.to_string(), String::from))).collect::<Vec<_>>().join(" ")
}

/// The mean of a figure over the rounds of one scenario and target.
fn mean(results: &[(String, Kind, Value)], scenario: &str, kind: Kind, field: &str) -> Option<f64> {
    let xs: Vec<f64> = results.iter().filter(|(s, k, _)| s == scenario && *k == kind).filter_map(|(_, _, v)| v[field].as_f64()).collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn print_ratios(results: &[(String, Kind, Value)]) {
    println!("\nlockmesh beside etcd (means over rounds; > 1 is better for lockmesh):");
    // (scenario, figure, higher is better)
    let figures = [
        ("uncontended", "acquire_p50_ms", false),
        ("uncontended", "pairs_per_s", true),
        ("independent", "pairs_per_s", true),
        ("independent", "pair_p99_ms", false),
        ("contended", "grants_per_s", true),
        ("voter-loss", "longest_gap_ms", false),
        ("voter-loss", "failed_via_survivors", false),
    ];
    for (scenario, field, higher) in figures {
        let (Some(l), Some(e)) = (mean(results, scenario, Kind::Lockmesh, field), mean(results, scenario, Kind::Etcd, field)) else { continue };
        let (better, worse) = if higher { (l, e) } else { (e, l) };
        let ratio = match (better, worse) {
            (b, w) if w > 0.0 => format!("{:.2}", b / w),
            (b, _) if b > 0.0 => "∞".to_string(),
            _ => "equal".to_string(),
        };
        println!("  {scenario:<12} {field:<22} lockmesh {l:>10.3}  etcd {e:>10.3}  ratio {ratio:>7}");
    }
}

/// The worst of a figure over the rounds of one scenario and target (for "never" targets).
fn max(results: &[(String, Kind, Value)], scenario: &str, kind: Kind, field: &str) -> Option<f64> {
    results.iter().filter(|(s, k, _)| s == scenario && *k == kind).filter_map(|(_, _, v)| v[field].as_f64()).reduce(f64::max)
}

/// Each target of the benchmark's issue that this run measured: the figure, the bound, and
/// whether it was met (etcd ratios only with `--compare etcd`).
fn print_targets(results: &[(String, Kind, Value)]) {
    use Kind::{Etcd, Lockmesh};
    let ratio = |scenario: &str, field: &str| Some(mean(results, scenario, Lockmesh, field)? / mean(results, scenario, Etcd, field)?);
    // (scenario, figure, measured, at most (false) or at least (true), bound)
    let targets = [
        ("uncontended", "acquire p50 / etcd's", ratio("uncontended", "acquire_p50_ms"), false, 1.0 / 3.0),
        ("independent", "pairs/s / etcd's", ratio("independent", "pairs_per_s"), true, 2.0),
        ("contended", "grants/s / etcd's", ratio("contended", "grants_per_s"), true, 10.0),
        ("voter-loss", "failed via survivors", max(results, "voter-loss", Lockmesh, "failed_via_survivors"), false, 0.0),
        ("voter-loss", "longest gap (ms)", max(results, "voter-loss", Lockmesh, "longest_gap_ms"), false, 1000.0),
        ("scale", "acquire p50 full / empty", mean(results, "scale", Lockmesh, "p50_ratio"), false, 1.5),
        ("scale", "RSS full (MB)", mean(results, "scale", Lockmesh, "rss_full_mb"), false, 500.0),
        ("scale", "RSS idle (MB)", mean(results, "scale", Lockmesh, "rss_idle_mb"), false, 30.0),
        ("members", "converged (s)", mean(results, "members", Lockmesh, "converged_s"), false, 10.0),
    ];
    let measured: Vec<_> = targets.iter().filter_map(|&(scenario, figure, x, at_least, bound)| Some((scenario, figure, x?, at_least, bound))).collect();
    if measured.is_empty() {
        return;
    }
    println!("\nlockmesh against its targets (docs/PERFORMANCE.md says what bounds a missed one):");
    for (scenario, figure, x, at_least, bound) in measured {
        let met = if at_least { x >= bound } else { x <= bound };
        let sign = if at_least { "≥" } else { "≤" };
        println!("  {scenario:<12} {figure:<26} {x:>10.3}  target {sign} {bound:<8.3} {}", if met { "met" } else { "missed" });
    }
}

/// What the numbers were measured on.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0);
    json!({"cpu": cpu, "cores": cores, "memory_gb": (mem_kb as f64 / 1048576.0).round()})
}
