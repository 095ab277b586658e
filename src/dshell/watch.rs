//! `manager lock status --scope S --watch`: the scope's state, then every transition as the
//! cluster decides it, until Ctrl-C. A broken stream is reopened where it left off.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::check;
use super::commands::{path_segment, print_status};
use super::run::{catch_interrupt, restore_signals, PENDING};
use super::sse::{Events, Opened, SseEvent};
use super::{Failure, Identity, Output};

/// Between attempts to reopen a broken stream.
const REOPEN: Duration = Duration::from_secs(1);

pub fn watch(me: &Identity, scope: &str, out: Output) -> Result<u8, Failure> {
    catch_interrupt();
    let result = follow(me, scope, out);
    restore_signals();
    result
}

fn follow(me: &Identity, scope: &str, out: Output) -> Result<u8, Failure> {
    let url = me.client.url(&format!("/api/v1.0/lock/{}/watch", path_segment(scope)));
    let headers = me.client.headers();
    let mut last_id: Option<String> = None;
    loop {
        let events = match Events::open(&url, &headers, last_id.as_deref()) {
            Ok(Opened::Stream(events)) => events,
            Ok(Opened::Refused(answer)) => {
                let v = serde_json::from_str(&answer.body).unwrap_or_else(|_| json!({"error": answer.body.trim()}));
                // Once watching, a node that cannot answer for now (no quorum yet after a
                // restart, say) is waited for; anything else ends the watch.
                if last_id.is_some() && answer.status >= 500 {
                    eprintln!("(watch: HTTP {}: {}; retrying)", answer.status, v["error"].as_str().unwrap_or(""));
                    if interrupted_within(REOPEN) {
                        return Ok(0);
                    }
                    continue;
                }
                check(answer.status, &v)?;
                return Err(Failure::Other(format!("HTTP {}: not an event stream", answer.status)));
            }
            // Never connected: the first time is an error; later, the node may come back.
            Err(e) if last_id.is_none() => return Err(Failure::Connect(e.to_string())),
            Err(e) => {
                eprintln!("(watch: {e}; retrying)");
                if interrupted_within(REOPEN) {
                    return Ok(0);
                }
                continue;
            }
        };
        let Ok(socket) = events.socket() else { return Err(Failure::Other("cannot watch the connection".into())) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_all(events, tx));
        let ended = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(e)) => {
                    if e.id.is_some() {
                        last_id.clone_from(&e.id);
                    }
                    show(&e, out);
                }
                Ok(Err(why)) => break why,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break "the stream ended".into(),
            }
            if PENDING.load(Ordering::SeqCst) != 0 {
                // Unblocks the reader thread, which then ends.
                let _ = socket.shutdown(std::net::Shutdown::Both);
                return Ok(0);
            }
        };
        eprintln!("(watch: {ended}; reopening after event {})", last_id.as_deref().unwrap_or("none"));
        if interrupted_within(REOPEN) {
            return Ok(0);
        }
    }
}

fn read_all(mut events: Events, tx: mpsc::Sender<Result<SseEvent, String>>) {
    loop {
        let next = match events.next_event() {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err("the node closed the stream".to_string()),
            Err(e) => Err(e),
        };
        let end = next.is_err();
        if tx.send(next).is_err() || end {
            return;
        }
    }
}

/// Waits `d`, or less if Ctrl-C comes; whether it came.
fn interrupted_within(d: Duration) -> bool {
    let deadline = std::time::Instant::now() + d;
    while std::time::Instant::now() < deadline {
        if PENDING.load(Ordering::SeqCst) != 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    PENDING.load(Ordering::SeqCst) != 0
}

fn show(e: &SseEvent, out: Output) {
    let data: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| json!(e.data));
    if out.json {
        println!("{}", json!({"event": e.event, "id": e.id, "data": data}));
        return;
    }
    match e.event.as_str() {
        "state" => print_status(&data),
        "resync" => {
            println!("(missed some changes; the scope now:)");
            print_status(&data);
        }
        "unavailable" => println!("(the cluster cannot answer for now: {})", data["error"].as_str().unwrap_or(&e.data)),
        kind => {
            let token = data["fencing_token"].as_u64().map(|t| format!(", fencing token {t}")).unwrap_or_default();
            println!(
                "#{} {kind} {} ({}{token})",
                data["seq"],
                data["holder"].as_str().unwrap_or("?"),
                data["lock_type"].as_str().unwrap_or("?")
            );
        }
    }
}

/// While a request waits for a lock on a terminal, what happens to the scope, on stderr:
/// who holds it, then each change, until `stop`.
pub struct Progress {
    stream: std::sync::Arc<std::sync::Mutex<Stream>>,
}

/// Where the progress stream is: `stop` may come before it opened.
enum Stream {
    Opening,
    /// Its socket, to end it from `stop`.
    Open(std::net::TcpStream),
    Stopped,
}

impl Progress {
    /// Starts showing progress if stderr is a terminal; the watch opens on its own thread, so
    /// the lock request is never held up by it.
    pub fn start(me: &Identity, scope: &str) -> Option<Progress> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let url = me.client.url(&format!("/api/v1.0/lock/{}/watch", path_segment(scope)));
        let headers = me.client.headers();
        let stream = std::sync::Arc::new(std::sync::Mutex::new(Stream::Opening));
        let shared = stream.clone();
        let scope = scope.to_string();
        std::thread::spawn(move || {
            let Ok(Opened::Stream(mut events)) = Events::open(&url, &headers, None) else { return };
            {
                let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
                match (&*state, events.socket()) {
                    (Stream::Opening, Ok(socket)) => *state = Stream::Open(socket),
                    _ => return, // stopped already (or cannot be stopped): show nothing
                }
            }
            while let Ok(Some(e)) = events.next_event() {
                let data: Value = serde_json::from_str(&e.data).unwrap_or_default();
                // Printed under the lock `stop` takes: nothing appears after it returns.
                let state = shared.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(*state, Stream::Stopped) {
                    return;
                }
                match e.event.as_str() {
                    "state" | "resync" => eprintln!("{}", waiting_line(&scope, &data)),
                    "unavailable" => eprintln!("  (the cluster cannot answer for now)"),
                    kind => eprintln!("  {kind} {}", data["holder"].as_str().unwrap_or("?")),
                }
            }
        });
        Some(Progress { stream })
    }

    /// Ends the stream; nothing more is printed after this returns.
    pub fn stop(self) {
        let mut state = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        if let Stream::Open(socket) = std::mem::replace(&mut *state, Stream::Stopped) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// `Waiting for S: held by A, B; 2 waiting` (or closed by a lock-delay).
fn waiting_line(scope: &str, v: &Value) -> String {
    let holders: Vec<&str> = v["holders"].as_array().map(|h| h.iter().filter_map(|h| h["holder"].as_str()).collect()).unwrap_or_default();
    let why = match (holders.is_empty(), v["lock_delay_remaining"].as_str()) {
        (false, _) => format!("held by {}", holders.join(", ")),
        (true, Some(left)) => format!("closed for {left} more after an expired lease"),
        (true, None) => "free".to_string(),
    };
    let queue = v["queue"].as_array().map_or(0, Vec::len);
    format!("Waiting for {scope}: {why}; {queue} waiting")
}
