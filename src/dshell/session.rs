//! Holder names, and the locks a shell session or an orchestration holds: a keeper thread
//! renews each at a third of its lease, and forgets one whose renewal is refused.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{self, Client};
use crate::clock::BootInstant;

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_string();
    if ok && !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) {
        name
    } else {
        "localhost".into()
    }
}

/// The holder batch commands use by default: stable for one user on one machine, so a later
/// `release` finds what an earlier `acquire` took.
pub fn batch_holder(user: &str, host: &str) -> String {
    format!("{user}@{host}")
}

/// `USER@HOST/dshell-session-NNN`: NNN counts the shells started on this machine by this
/// user (kept in ~/.dshell_sessions under an exclusive lock; the process id without a home).
pub fn session_holder(user: &str, host: &str) -> String {
    let n = next_session_number().unwrap_or_else(|| u64::from(std::process::id()));
    format!("{user}@{host}/dshell-session-{n:03}")
}

fn next_session_number() -> Option<u64> {
    let path = super::home()?.join(".dshell_sessions");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).ok()?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let n = text.trim().parse::<u64>().unwrap_or(0) % 999 + 1;
    file.set_len(0).ok()?;
    file.rewind().ok()?;
    write!(file, "{n}").ok()?;
    Some(n)
}

/// One lock held and renewed.
#[derive(Clone, Debug)]
pub struct Held {
    pub holder: String,
    pub token: u64,
    /// The grant's id as the lock answer named it: renewals and the release name it.
    pub grant: String,
    pub timeout: String,
    pub lease: Duration,
    /// Send time of the last successful acquire or renewal (on `CLOCK_BOOTTIME`, which counts
    /// through a suspend): the trust counts from it.
    pub renewed: BootInstant,
    /// Why the renewals since then failed, if they did.
    pub last_error: Option<String>,
}

/// A lock the keeper stopped holding: why, and until when it was still trusted (a command
/// using it must be stopped by then).
#[derive(Clone, Debug)]
pub struct Lost {
    pub scope: String,
    pub why: String,
    pub trusted_until: BootInstant,
}

impl Held {
    /// Until when this grant is trusted: from the last successful renewal's send.
    pub fn trusted_until(&self) -> BootInstant {
        self.renewed + self.lease.mul_f64(1.0 - super::run::DRIFT)
    }
}

/// The locks held, by scope, renewed in the background until dropped.
pub struct Keeper {
    pub held: Arc<Mutex<BTreeMap<String, Held>>>,
    /// Locks lost (a renewal refused, or none in time), for the owner to act on.
    pub lost: Arc<Mutex<Vec<Lost>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    pub fn new(client: Client) -> Keeper {
        let held: Arc<Mutex<BTreeMap<String, Held>>> = Arc::default();
        let lost: Arc<Mutex<Vec<Lost>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, l, s) = (held.clone(), lost.clone(), stop.clone());
        let thread = std::thread::spawn(move || renew_loop(client, h, l, s));
        Keeper { held, lost, stop, thread: Some(thread) }
    }

    pub fn add(&self, scope: &str, held: Held) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(scope.to_string(), held);
    }

    pub fn remove(&self, scope: &str) -> Option<Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(scope)
    }

    pub fn get(&self, scope: &str) -> Option<Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(scope).cloned()
    }

    pub fn take_lost(&self) -> Vec<Lost> {
        std::mem::take(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops renewing (waits for a renewal in flight).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops renewing and releases everything still held, each by its grant: what was
    /// released (scope, token) and what could not be (scope, why).
    pub fn release_all(&mut self, client: &Client) -> Released {
        self.stop();
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        let (mut released, mut failed) = (Vec::new(), Vec::new());
        for (scope, h) in held {
            match client.unlock(&scope, Some(&h.holder), Some(&h.grant), false).and_then(|(status, v)| client::check(status, &v)) {
                Ok(()) => released.push((scope, h.token)),
                Err(f) => failed.push((scope, f.text().to_string())),
            }
        }
        Released { released, failed }
    }
}

/// What `release_all` released (scope, token) and could not release (scope, why).
pub struct Released {
    pub released: Vec<(String, u64)>,
    pub failed: Vec<(String, String)>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn renew_loop(client: Client, held: Arc<Mutex<BTreeMap<String, Held>>>, lost: Arc<Mutex<Vec<Lost>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let due: Vec<(String, Held)> = held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() >= h.lease / 3)
            .map(|(s, h)| (s.clone(), h.clone()))
            .collect();
        for (scope, h) in due {
            let sent = BootInstant::now();
            let answer = client.renew(&scope, &h.holder, &h.grant, &h.timeout, (h.lease / 3).max(Duration::from_millis(300)));
            let mut map = held.lock().unwrap_or_else(|e| e.into_inner());
            // Released or re-taken meanwhile: this answer is about a grant no longer held.
            let Some(entry) = map.get_mut(&scope).filter(|e| e.grant == h.grant && e.holder == h.holder) else { continue };
            let gone = match answer {
                Ok((200, _)) => {
                    entry.renewed = entry.renewed.max(sent);
                    entry.last_error = None;
                    None
                }
                Ok((409, v)) => Some(format!("renewal refused ({})", v["status"].as_str().unwrap_or("refused").replace('_', " "))),
                // Unavailable for now: try again shortly; the lease may still run out.
                failed => {
                    entry.last_error = Some(match failed {
                        Ok((status, v)) => client::check(status, &v).err().map_or_else(|| format!("HTTP {status}"), |f| f.text().to_string()),
                        Err(f) => f.text().to_string(),
                    });
                    (BootInstant::now() >= entry.trusted_until()).then(|| "could not renew before the lease ran out".to_string())
                }
            };
            if let Some(why) = gone {
                let trusted_until = entry.trusted_until();
                map.remove(&scope);
                lost.lock().unwrap_or_else(|e| e.into_inner()).push(Lost { scope, why, trusted_until });
            }
        }
    }
}
