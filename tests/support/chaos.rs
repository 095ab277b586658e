//! The chaos checker's history and verdict: clients record when they trusted a grant and every
//! use of the fenced resource; the checker says whether exclusion and fencing held. Kept apart
//! from the run so a test can feed it a history with a known violation (proof of teeth).

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Instant;

/// One stretch in which a client trusted a grant (from its send to its lease end or release).
#[derive(Clone, Debug)]
pub struct Trust {
    pub client: usize,
    pub scope: String,
    pub token: u64,
    pub write: bool,
    pub start: Instant,
    pub end: Instant,
}

/// One use of the fenced resource.
#[derive(Clone, Debug)]
pub struct Use {
    pub client: usize,
    pub scope: String,
    pub token: u64,
    pub at: Instant,
    pub accepted: bool,
    /// Whether the client, at that moment, still believed its lease valid.
    pub believed_valid: bool,
}

#[derive(Default, Debug)]
pub struct History {
    pub trusts: Vec<Trust>,
    pub uses: Vec<Use>,
    /// When each successful grant was told to its client.
    pub grants: Vec<Instant>,
}

/// A storage system that fences: it rejects a token lower than the highest it has seen.
#[derive(Default)]
pub struct Resource {
    highest: HashMap<String, u64>,
}

impl Resource {
    pub fn access(&mut self, scope: &str, token: u64) -> bool {
        let highest = self.highest.entry(scope.to_string()).or_insert(0);
        if token < *highest {
            return false;
        }
        *highest = token;
        true
    }
}

/// Every violation in the history, one line each.
pub fn check(history: &History) -> Vec<String> {
    let mut found = Vec::new();
    let mut by_scope: HashMap<&str, Vec<&Trust>> = HashMap::new();
    for t in &history.trusts {
        by_scope.entry(t.scope.as_str()).or_default().push(t);
    }
    for (scope, trusts) in by_scope {
        for (i, a) in trusts.iter().enumerate() {
            for b in &trusts[i + 1..] {
                let same_grant = a.client == b.client && a.token == b.token;
                let conflict = a.write || b.write;
                if !same_grant && conflict && a.start < b.end && b.start < a.end {
                    found.push(format!(
                        "exclusion: {scope}: client {} (token {}) and client {} (token {}) trusted overlapping leases",
                        a.client, a.token, b.client, b.token
                    ));
                }
                let (early, late) = if a.start <= b.start { (a, b) } else { (b, a) };
                let must_rise = early.write || late.write;
                if !same_grant && must_rise && late.token <= early.token && late.start >= early.start {
                    found.push(format!("fencing: {scope}: token {} granted after token {}", late.token, early.token));
                }
            }
        }
    }
    for u in &history.uses {
        if !u.accepted && u.believed_valid {
            found.push(format!("fencing: {}: the resource rejected token {} from client {} that believed its lease valid", u.scope, u.token, u.client));
        }
    }
    found
}

/// The longest stretch without a successful grant, in seconds.
pub fn max_unavailability(history: &History, start: Instant, end: Instant) -> f64 {
    let mut times: Vec<Instant> = history.grants.clone();
    times.push(start);
    times.push(end);
    times.sort();
    times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).fold(0.0, f64::max)
}
