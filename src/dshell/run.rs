//! `dshell manager lock run --scope S -- CMD ARGS...`: acquire, run CMD in its own process
//! group with `LOCKMESH_SCOPE`, `LOCKMESH_HOLDER` and `LOCKMESH_FENCING_TOKEN`, renew every third
//! of the lease, release when it exits, and exit with its code. If the lease is lost (a renewal
//! refused, or none succeeded in time), CMD gets SIGTERM, then SIGKILL, so that it is stopped
//! before the lease can run out (and the lock be granted to anyone else). Signals dshell gets
//! are passed on to CMD.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::client::{check, seconds, LockOptions};
use super::{Failure, Identity, RunArgs};

/// The drift bound the cluster assumes: a grant is trusted for `lease × (1 − DRIFT)` from the
/// request's send.
pub(super) const DRIFT: f64 = 0.01;

/// The last signal dshell received and has not passed on yet (0: none).
pub(super) static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember(signal: libc::c_int) {
    PENDING.store(signal, Ordering::SeqCst);
}

pub(super) fn catch_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: installs an async-signal-safe handler (one atomic store).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = remember as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub(super) fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) on the process group of our own child.
    unsafe { libc::kill(-pgid, signal) };
}

pub fn run(me: &Identity, args: RunArgs) -> Result<u8, Failure> {
    let lease = seconds(&args.timeout).ok_or_else(|| Failure::Usage(format!("invalid --timeout {:?}: use e.g. 30s, 5m", args.timeout)))?;
    let grace = seconds(&args.grace).ok_or_else(|| Failure::Usage(format!("invalid --grace {:?}: use e.g. 5s", args.grace)))?;
    let lease = Duration::from_secs_f64(lease);
    // Room kept at the end of the lease for SIGKILL to land; the grace fits before it.
    let margin = (lease / 20).max(Duration::from_millis(200)).min(lease / 4);
    let grace = Duration::from_secs_f64(grace).min(lease / 3);
    let holder = args.holder.clone().unwrap_or_else(|| format!("{}@{}/run-{}", me.user, me.host, std::process::id()));
    let options = LockOptions { lock_type: Some(args.lock_type.clone()), timeout: Some(args.timeout.clone()), wait: args.wait.clone(), ..LockOptions::default() };
    let sent = Instant::now();
    let (code, v) = me.client.lock(&args.scope, &holder, &options)?;
    check(code, &v)?;
    let token = v["fencing_token"].as_u64().ok_or_else(|| Failure::Other(format!("a grant without a fencing token: {v}")))?;
    let mut trusted_until = sent + lease.mul_f64(1.0 - DRIFT);

    catch_signals();
    let spawned = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("LOCKMESH_SCOPE", &args.scope)
        .env("LOCKMESH_HOLDER", &holder)
        .env("LOCKMESH_FENCING_TOKEN", token.to_string())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = me.client.unlock(&args.scope, Some(&holder), Some(token), false);
            eprintln!("dshell: cannot run {:?}: {e}", args.command[0]);
            return Ok(127);
        }
    };
    let pgid = child.id() as i32;
    let mut next_renewal = sent + lease / 3;
    let mut lost: Option<String> = None;
    let mut terminated: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Failure::Other(format!("cannot wait for the command: {e}"))),
        }
        let signal = PENDING.swap(0, Ordering::SeqCst);
        if signal != 0 {
            signal_group(pgid, signal);
        }
        let now = Instant::now();
        if lost.is_none() && now >= next_renewal {
            // Bounded so that a hung renewal cannot eat the time needed to stop the command.
            let room = trusted_until.saturating_duration_since(now).saturating_sub(grace + margin);
            let within = room.clamp(Duration::from_millis(200), (lease / 6).max(Duration::from_millis(200)));
            let renew_sent = Instant::now();
            match me.client.renew(&args.scope, &holder, token, &args.timeout, within) {
                Ok((200, _)) => {
                    trusted_until = renew_sent + lease.mul_f64(1.0 - DRIFT);
                    next_renewal = renew_sent + lease / 3;
                }
                Ok((409, v)) => lost = Some(format!("renewal refused ({})", v["status"].as_str().unwrap_or("conflict").replace('_', " "))),
                _ => next_renewal = Instant::now() + Duration::from_millis(500),
            }
        }
        let now = Instant::now();
        let left = trusted_until.saturating_duration_since(now);
        if lost.is_none() && left <= grace + margin {
            lost = Some(format!("no renewal succeeded; the lease would run out in {:.1}s", left.as_secs_f64()));
        }
        if lost.is_some() {
            match terminated {
                None => {
                    signal_group(pgid, libc::SIGTERM);
                    terminated = Some(now);
                }
                Some(at) if now - at >= grace || left <= margin => signal_group(pgid, libc::SIGKILL),
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(why) = lost {
        // Whatever else the command left in its group goes too.
        signal_group(pgid, libc::SIGKILL);
        let _ = me.client.unlock(&args.scope, Some(&holder), Some(token), false);
        return Err(Failure::LeaseLost(format!("lost the lock on {}: {why}; stopped {:?}", args.scope, args.command[0])));
    }
    match me.client.unlock(&args.scope, Some(&holder), Some(token), false) {
        Ok((status, v)) if check(status, &v).is_ok() => {}
        Ok((status, v)) => eprintln!("dshell: could not release {}: {} (its lease will run out)", args.scope, check(status, &v).err().map(|f| f.text().to_string()).unwrap_or_default()),
        Err(f) => eprintln!("dshell: could not release {}: {} (its lease will run out)", args.scope, f.text()),
    }
    Ok(status.code().map(|c| c as u8).unwrap_or_else(|| 128u8.wrapping_add(status.signal().unwrap_or(0) as u8)))
}
