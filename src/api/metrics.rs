//! `GET /metrics`: Prometheus text format. The API counts requests and their latency; the
//! core counts ballots; membership gives members by state and the roster.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ask, authorize};
use crate::agent::{ApiCall, Handle};
use crate::auth::Role;

/// One per-scope figure of the contention metrics.
type ScopeFigure = fn(&crate::core::node::ScopeContention) -> f64;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
/// Outcomes of lock-API requests, as labels.
pub const OUTCOMES: [&str; 8] = ["locked", "unlocked", "busy", "not_holder", "no_quorum", "timeout", "bad_request", "other"];

/// An outcome label a response carries when its status code alone does not tell it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outcome(pub &'static str);

/// Counters of the HTTP API; lock-free, shared by every request.
#[derive(Default)]
pub struct HttpMetrics {
    outcomes: [AtomicU64; OUTCOMES.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl HttpMetrics {
    /// Counts one lock-API request with its outcome (one of `OUTCOMES`) and latency.
    pub fn observe(&self, outcome: &str, took: Duration) {
        let at = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(OUTCOMES.len() - 1);
        self.outcomes[at].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

pub async fn get(State(handle): State<Handle>, headers: axum::http::HeaderMap) -> Response {
    if let Err(response) = authorize(&handle, &headers, Role::Viewer).await {
        return response;
    }
    let node = match ask(&handle, ApiCall::Metrics).await {
        Ok(node) => node,
        Err(e) => return e.into_response(),
    };
    let m = &handle.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP lockmesh_lock_requests_total Lock API requests by outcome.");
    let _ = writeln!(out, "# TYPE lockmesh_lock_requests_total counter");
    for (name, value) in OUTCOMES.iter().zip(&m.outcomes) {
        let _ = writeln!(out, "lockmesh_lock_requests_total{{outcome=\"{name}\"}} {}", value.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# HELP lockmesh_lock_request_seconds Latency of lock API requests.");
    let _ = writeln!(out, "# TYPE lockmesh_lock_request_seconds histogram");
    for (bound, value) in BUCKETS.iter().zip(&m.buckets) {
        let _ = writeln!(out, "lockmesh_lock_request_seconds_bucket{{le=\"{bound}\"}} {}", value.load(Ordering::Relaxed));
    }
    let count = m.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "lockmesh_lock_request_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "lockmesh_lock_request_seconds_sum {}", m.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
    let _ = writeln!(out, "lockmesh_lock_request_seconds_count {count}");
    let counters = [
        ("lockmesh_ballots_total", "Ballots started by this node.", node.stats.ballots),
        ("lockmesh_ballot_retries_total", "Ballot attempts retried with a higher ballot (conflicts, losses).", node.stats.retries),
        ("lockmesh_answers_without_write_total", "Answers decided from a chosen value without an Accept.", node.stats.answered_without_write),
        ("lockmesh_answers_total", "Operations answered by this node.", node.stats.answered),
        (
            "lockmesh_invalid_peer_values_total",
            "Values from peers refused because no node following the protocol could send them.",
            node.stats.invalid_from_peers,
        ),
        (
            "lockmesh_unauthorized_peer_messages_total",
            "Messages from peers refused because the roster does not let their sender send them (not a member).",
            node.stats.unauthorized_from_peers,
        ),
        (
            "lockmesh_unproven_rosters_total",
            "Rosters from peers (and bootstrap acknowledgements) refused because their proof does not hold: not signed by a majority of the installed roster's voters.",
            node.stats.unproven_rosters,
        ),
        (
            "lockmesh_unvouched_total",
            "Ballot requests refused, and promises whose content was not used, because no majority of the voters vouched for their sender lately (it may have been removed, or this node is cut off from the voters).",
            node.stats.unvouched,
        ),
        (
            "lockmesh_scope_news_received_total",
            "News of scopes taken from voters, on a member that does not vote (it wakes watches and waiting requests here).",
            node.news_received,
        ),
        (
            "lockmesh_mesh_handshakes_refused_total",
            "Mesh handshakes refused because their address opened too many (a rate limit per address).",
            node.handshakes_refused,
        ),
        (
            "lockmesh_mesh_frames_dropped_total",
            "Frames and membership datagrams dropped because a peer that is not a member sent too many (a rate limit per certificate key).",
            node.frames_dropped,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(out, "# HELP lockmesh_members Members this node knows, by state.\n# TYPE lockmesh_members gauge");
    for state in ["alive", "suspect", "down", "left"] {
        let n = node.members.members.iter().filter(|mv| mv.state == state).count();
        let _ = writeln!(out, "lockmesh_members{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP lockmesh_member_info Each member this node knows, with its role (voter, member, pending, banned, none) and zone.\n# TYPE lockmesh_member_info gauge");
    for mv in &node.members.members {
        let _ = writeln!(out, "lockmesh_member_info{{name=\"{}\",role=\"{}\",zone=\"{}\"}} 1", mv.name, mv.role, mv.zone);
    }
    let gauges = [
        ("lockmesh_roster_version", "Version of the installed roster.", node.members.roster_version as u64),
        ("lockmesh_roster_voters", "Voters in the installed roster.", node.members.roster_size as u64),
        ("lockmesh_voter_target", "How many voters the cluster keeps.", node.members.voter_target as u64),
        (
            "lockmesh_roster_members",
            "Members of the installed roster that do not vote.",
            node.members.members.iter().filter(|m| m.role == "member").count() as u64,
        ),
        ("lockmesh_requests_in_flight", "Operations waiting for a ballot at this node.", node.in_flight as u64),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let c = &node.contention;
    let contention = [
        ("lockmesh_contention_scopes_scanned", "Scopes whose records this node's copy was read for the contention figures (at most 10000).", c.scanned as f64),
        ("lockmesh_contention_waiters", "Requests waiting, over the scanned scopes.", c.waiters as f64),
        ("lockmesh_contention_attempts", "New acquire requests in the last ten minutes, over the scanned scopes.", c.attempts as f64),
        ("lockmesh_contention_conflicts", "Of those, the ones that found the lock taken.", c.conflicts as f64),
    ];
    for (name, help, value) in contention {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let per_scope: [(&str, &str, ScopeFigure); 3] = [
        ("lockmesh_scope_waiters", "Requests waiting, for the most contended scopes.", |s| s.waiters as f64),
        ("lockmesh_scope_conflict_ratio", "Share of new acquire requests in the last ten minutes that found the lock taken.", |s| {
            s.contention.conflicts as f64 / s.contention.attempts.max(1) as f64
        }),
        ("lockmesh_scope_hold_seconds", "Mean time held of the grants that ended in the last ten minutes.", |s| {
            s.contention.hold_total_us as f64 / 1e6 / s.contention.holds.max(1) as f64
        }),
    ];
    for (name, help, value) in per_scope {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in &c.top {
            let _ = writeln!(out, "{name}{{scope=\"{}\"}} {}", s.scope, value(s));
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
