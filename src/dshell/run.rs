//! `dshell manager lock run --scope S -- CMD ARGS...`: acquire, run CMD in its own process
//! group with `LOCKMESH_SCOPE`, `LOCKMESH_HOLDER`, `LOCKMESH_FENCING_TOKEN` and `LOCKMESH_GRANT`,
//! renew every third of the lease (on the session keeper's thread), release when it exits, and
//! exit with its code. Every lease is measured on `CLOCK_BOOTTIME` (`BootInstant`). The
//! main loop never blocks on the network: if the lease is lost (a renewal refused, or none
//! succeeded in time) CMD gets SIGTERM, then SIGKILL, timed from the lease's trusted end, so
//! that it is stopped before the lease can run out and the lock be granted to anyone else.
//! Signals dshell gets are passed on to CMD; on a terminal, CMD is the foreground job.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::client::{check, check_timeout, granted, granted_lease, seconds, Client, LockOptions};
use crate::clock::BootInstant;
use super::session::{Held, Keeper};
use super::{Failure, Identity, RunArgs};

/// The drift bound the cluster assumes: a grant is trusted for `lease × (1 − DRIFT)` from the
/// request's send.
pub(super) const DRIFT: f64 = 0.01;
/// Shorter leases leave no room to renew and to stop a command in time.
const SHORTEST_LEASE: Duration = Duration::from_secs(1);

/// The last signal dshell received and has not passed on yet (0: none).
pub(super) static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember(signal: libc::c_int) {
    PENDING.store(signal, Ordering::SeqCst);
}

/// Signals that would end or stop dshell are caught, to be passed on to the command.
pub(super) fn catch_signals() {
    PENDING.store(0, Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGTSTP] {
        catch(signal);
    }
    // SAFETY: ignoring SIGTTOU lets dshell hand the terminal to its command and take it back.
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
}

/// Only Ctrl-C is caught (for a loop that ends on it); `restore_signals` undoes it.
pub(super) fn catch_interrupt() {
    PENDING.store(0, Ordering::SeqCst);
    catch(libc::SIGINT);
}

fn catch(signal: libc::c_int) {
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = remember as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

/// Back to the default dispositions (the interactive shell, after a command).
pub(super) fn restore_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGTSTP, libc::SIGTTOU] {
        // SAFETY: resets a disposition to its default.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    PENDING.store(0, Ordering::SeqCst);
}

pub(super) fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) on the process group of our own child.
    unsafe { libc::kill(-pgid, signal) };
}

/// A command in its own process group: the foreground job if dshell has the terminal, killed
/// with dshell if dshell dies, and the whole group killed if dropped while running.
pub(super) struct Job {
    pub pgid: i32,
    terminal: bool,
    done: bool,
}

impl Job {
    pub fn spawn(command: &mut std::process::Command) -> std::io::Result<Job> {
        // SAFETY: getpgrp/tcgetpgrp only read process state.
        let terminal = unsafe { libc::isatty(libc::STDIN_FILENO) == 1 && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() };
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                libc::setpgid(0, 0);
                if terminal {
                    libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                    libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
                    libc::signal(libc::SIGTTOU, libc::SIG_DFL);
                }
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGTSTP] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pgid = child.id() as i32;
        if terminal {
            // SAFETY: as in the child; both sides set it, whichever runs first.
            unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, pgid) };
        }
        // The status is collected with waitpid below; `child` owns nothing else.
        drop(child);
        Ok(Job { pgid, terminal, done: false })
    }

    /// The exit status if the command ended. A stopped command (Ctrl-Z) is resumed: it may
    /// not sit holding a lock that nobody watches.
    pub fn poll(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        let mut status = 0;
        // SAFETY: waitpid on our own child, non-blocking.
        let pid = unsafe { libc::waitpid(self.pgid, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            return Ok(None);
        }
        if libc::WIFSTOPPED(status) {
            eprintln!("dshell: the command was stopped; it holds a lock, so it is resumed (end it instead)");
            signal_group(self.pgid, libc::SIGCONT);
            return Ok(None);
        }
        self.done = true;
        self.take_terminal();
        Ok(Some(std::process::ExitStatus::from_raw(status)))
    }

    fn take_terminal(&mut self) {
        if self.terminal {
            // SAFETY: SIGTTOU is ignored while a job runs (catch_signals).
            unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp()) };
            self.terminal = false;
        }
    }

    pub fn kill(&mut self) {
        signal_group(self.pgid, libc::SIGKILL);
    }

    /// Whether any process is left in the command's group.
    pub fn group_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the group exists.
        unsafe { libc::kill(-self.pgid, 0) == 0 }
    }

    /// SIGTERM to what is left of the group, SIGKILL after `grace`.
    pub fn stop_group(&mut self, grace: Duration) {
        signal_group(self.pgid, libc::SIGTERM);
        let until = Instant::now() + grace;
        while self.group_alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
            let mut status = 0;
            // SAFETY: reaps our own killed child.
            unsafe { libc::waitpid(self.pgid, &mut status, 0) };
        }
        self.take_terminal();
    }
}

/// A grant whose answer came late (after a wait) is confirmed by a renewal before it is
/// used: trust counts from the renewal's send. Returns the send time trust counts from.
pub(super) fn confirm(client: &Client, scope: &str, holder: &str, grant: &str, timeout: &str, lease: Duration, sent: BootInstant) -> Result<BootInstant, Failure> {
    if sent.elapsed() < lease / 3 {
        return Ok(sent);
    }
    let renew_sent = BootInstant::now();
    let (status, v) = client.renew(scope, holder, grant, timeout, (lease / 3).max(Duration::from_millis(300)))?;
    check(status, &v).map_err(|f| Failure::Unavailable(format!("granted after a wait, but could not confirm it in time: {}", f.text())))?;
    Ok(renew_sent)
}

pub fn run(me: &Identity, args: RunArgs) -> Result<u8, Failure> {
    check_timeout(&args.timeout)?;
    let too_short = |timeout: &str| Failure::Usage(format!("a lease of {timeout} is too short to renew and stop a command in time: use at least 1s"));
    let shortest = args.auto.min_timeout.as_deref().filter(|_| args.timeout == "auto").unwrap_or(&args.timeout);
    if seconds(shortest).is_some_and(|s| s < SHORTEST_LEASE.as_secs_f64()) {
        return Err(too_short(shortest));
    }
    let grace = seconds(&args.grace).ok_or_else(|| Failure::Usage(format!("invalid --grace {:?}: use e.g. 5s", args.grace)))?;
    let holder = args.holder.clone().unwrap_or_else(|| format!("{}@{}/run-{}", me.user, me.host, std::process::id()));
    let options = LockOptions {
        lock_type: Some(args.lock_type.clone()),
        timeout: Some(args.timeout.clone()),
        auto: args.auto.clone(),
        wait: args.wait.clone(),
        ..LockOptions::default()
    };
    let progress = args.wait.as_ref().and_then(|_| super::watch::Progress::start(me, &args.scope));
    let sent = BootInstant::now();
    let answer = me.client.lock(&args.scope, &holder, &options);
    progress.map(super::watch::Progress::stop);
    let (code, v) = answer?;
    check(code, &v)?;
    let (token, grant) = granted(&v)?;
    let release = || {
        if let Err(f) = me.client.unlock(&args.scope, Some(&holder), Some(&grant), false).and_then(|(s, v)| check(s, &v)) {
            eprintln!("dshell: could not release {}: {} (its lease will run out)", args.scope, f.text());
        }
    };
    // The lease granted (an auto one is known only now).
    let (timeout, lease) = match granted_lease(&v, &args.timeout) {
        Ok((timeout, lease)) if lease >= SHORTEST_LEASE => (timeout, lease),
        Ok(_) => {
            release();
            return Err(too_short(v["timeout"].as_str().unwrap_or("?")));
        }
        Err(f) => {
            release();
            return Err(f);
        }
    };
    // Room kept at the end of the lease for SIGKILL to land; the grace fits before it.
    let margin = (lease / 20).max(Duration::from_millis(200));
    let grace = Duration::from_secs_f64(grace).min(lease / 3);
    let renewed = match confirm(&me.client, &args.scope, &holder, &grant, &timeout, lease, sent) {
        Ok(t) => t,
        Err(f) => {
            release();
            return Err(f);
        }
    };

    catch_signals();
    let mut command = std::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("LOCKMESH_SCOPE", &args.scope)
        .env("LOCKMESH_HOLDER", &holder)
        .env("LOCKMESH_FENCING_TOKEN", token.to_string())
        .env("LOCKMESH_GRANT", &grant);
    let mut job = match Job::spawn(&mut command) {
        Ok(job) => job,
        Err(e) => {
            restore_signals();
            release();
            eprintln!("dshell: cannot run {:?}: {e}", args.command[0]);
            return Ok(127);
        }
    };
    // Renewals on the keeper's thread: this loop never waits for the network.
    let mut keeper = Keeper::new(me.client.clone());
    keeper.add(&args.scope, Held { holder: holder.clone(), token, grant: grant.clone(), timeout, lease, renewed, last_error: None });
    let mut lost: Option<String> = None;
    let mut lost_until: Option<BootInstant> = None;
    let mut terminated: Option<BootInstant> = None;
    let status = loop {
        match job.poll() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                lost.get_or_insert(format!("cannot wait for the command: {e}"));
                job.kill();
                break std::process::ExitStatus::from_raw(1 << 8);
            }
        }
        let signal = PENDING.swap(0, Ordering::SeqCst);
        if signal != 0 && signal != libc::SIGTSTP {
            signal_group(job.pgid, signal);
        }
        let now = BootInstant::now();
        if lost.is_none() {
            if let Some(l) = keeper.take_lost().into_iter().next() {
                lost = Some(l.why);
                lost_until = Some(l.trusted_until);
            } else if let Some(h) = keeper.get(&args.scope).filter(|h| h.trusted_until().saturating_duration_since(now) <= grace + margin) {
                let cause = h.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                lost = Some(format!("no renewal succeeded in time{cause}"));
            }
        }
        let trusted_until = lost_until.or_else(|| keeper.get(&args.scope).map(|h| h.trusted_until())).unwrap_or(now);
        let left = trusted_until.saturating_duration_since(now);
        if lost.is_some() {
            if terminated.is_none() {
                signal_group(job.pgid, libc::SIGTERM);
                terminated = Some(now);
            }
            if terminated.is_some_and(|at| now - at >= grace) || left <= margin {
                job.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if lost.is_none() && job.group_alive() {
        // The command left processes behind in its group: they may still be using what the
        // lock protects, so they end before the lock is released.
        eprintln!("dshell: {:?} exited but left processes running; stopping them before releasing", args.command[0]);
        job.stop_group(grace);
    }
    keeper.stop();
    restore_signals();
    if let Some(why) = lost {
        // Whatever else the command left in its group goes too.
        job.kill();
        release();
        return Err(Failure::LeaseLost(format!("lost the lock on {}: {why}; stopped {:?}", args.scope, args.command[0])));
    }
    release();
    Ok(status.code().map(|c| c as u8).unwrap_or_else(|| 128u8.wrapping_add(status.signal().unwrap_or(0) as u8)))
}
