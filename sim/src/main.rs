//! `lockmesh-sim`: runs the deterministic simulator over many seeds, or replays one.
//! The last line it prints is always `sim: N seeds, V violations`.

use std::process::ExitCode;

use lockmesh_sim::{parse_broken, run_many, Options, Profile};

const USAGE: &str = "\
usage: lockmesh-sim [--seeds N] [--first S] [--seed S] [--threads T] [--verbose]
                    [--profile all|mixed-faults|roster-churn|restart-storm|sync-crash|stalls|placement] [--broken VARIANT]

  --seeds N     run seeds FIRST..FIRST+N (default 300, FIRST 0)
  --seed S      replay one seed (add --verbose for its events)
  --profile P   fault profile; 'all' (default) lets each seed pick one
  --broken V    run a known-broken protocol variant (quorum-over-reachable,
                forget-promises-on-restart, expiry-ignores-drift, ages-from-stale-promises,
                roster-installed-when-accepted, roster-change-before-sweep, bare-refusal,
                no-successor-promise, send-before-write,
                early-before-earlier-batches, bare-unlock-without-arrival-rule,
                cancel-frees-reported-grant, locked-before-reported, no-authorization,
                commit-without-proof, no-vouches)";

fn main() -> ExitCode {
    let mut seeds = 300u64;
    let mut first = 0u64;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut options = Options { profile: Profile::default(), mixed: true, ..Options::default() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<String, String> { args.next().ok_or(format!("{name} needs a value")) };
        let parsed: Result<(), String> = (|| {
            match arg.as_str() {
                "--seeds" => seeds = value("--seeds")?.parse().map_err(|e| format!("--seeds: {e}"))?,
                "--first" => first = value("--first")?.parse().map_err(|e| format!("--first: {e}"))?,
                "--seed" => {
                    first = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?;
                    seeds = 1;
                }
                "--threads" => threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
                "--verbose" | "-v" => options.verbose = true,
                "--profile" => {
                    let name = value("--profile")?;
                    options.mixed = name == "all";
                    options.profile = match name.as_str() {
                        "all" | "mixed-faults" => Profile::default(),
                        "roster-churn" => Profile { roster_churn: true, ..Profile::default() },
                        "restart-storm" => Profile { restart_storm: true, ..Profile::default() },
                        "sync-crash" => Profile { sync_crashes: true, ..Profile::default() },
                        "stalls" => Profile::stalls(),
                        "placement" => Profile::placement(),
                        other => return Err(format!("unknown profile '{other}'")),
                    };
                }
                "--broken" => {
                    let name = value("--broken")?;
                    options.broken = Some(parse_broken(&name).ok_or(format!("unknown broken variant '{name}'"))?);
                }
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument '{other}'")),
            }
            Ok(())
        })();
        if let Err(e) = parsed {
            if !e.is_empty() {
                eprintln!("lockmesh-sim: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    if options.verbose {
        threads = 1;
    }
    let results = run_many(&options, first, seeds, threads);
    let mut violations = 0usize;
    let (mut auto, mut learnt) = (0u64, 0u64);
    let (mut grants, mut events, mut sim_us, mut crashes, mut wipes, mut pauses, mut partitions, mut rosters) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (seed, report) in &results {
        grants += report.grants;
        auto += report.auto_leases.0;
        learnt += report.auto_leases.1;
        events += report.events;
        sim_us += report.simulated_us;
        crashes += report.crashes;
        wipes += report.wipes;
        pauses += report.pauses;
        partitions += report.partitions;
        rosters += report.roster_version.saturating_sub(1);
        for v in &report.violations {
            violations += 1;
            let profile = if options.mixed { Profile::for_seed(*seed) } else { options.profile.clone() };
            println!("seed {seed} ({}): {v}", profile.name());
        }
    }
    println!(
        "covered: {:.0} simulated minutes, {events} events, {grants} trusted grants, {crashes} crashes ({wipes} wiped disks), {pauses} pauses, {partitions} partitions, {rosters} roster changes, {auto} auto leases ({learnt} from a percentile)",
        sim_us as f64 / 60e6
    );
    println!("sim: {seeds} seeds, {violations} violations");
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
