//! `GET /api/v1.0/lock/{scope}`: a linearizable read of one scope.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::input::{self, lock_type_name, priority_name};
use super::{call, failure, quorum_text, ApiError};
use crate::agent::Handle;
use crate::core::record::{WINDOWS, WINDOW_US};
use crate::core::{Answer, Key, LockOp, LockRecord, LockResult, Op};

pub async fn get(State(handle): State<Handle>, headers: axum::http::HeaderMap, Path(scope): Path<String>) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Viewer).await {
        return response;
    }
    let scope = match input::scope(&scope) {
        Ok(s) => s,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, e).into_response(),
    };
    let reply = match call(&handle, Key::Scope(scope.clone()), Op::Lock(LockOp::Read)).await {
        Ok(reply) => reply,
        Err(e) => return e.into_response(),
    };
    let quorum = quorum_text(&reply);
    match reply.result {
        Ok(Answer::Lock(LockResult::Record(record))) => (StatusCode::OK, Json(view(&scope, &record, &quorum))).into_response(),
        Ok(other) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")).into_response(),
        Err(f) => failure(&handle, f).await,
    }
}

/// A scope's record as the API shows it.
pub(super) fn view(scope: &str, record: &LockRecord, quorum: &str) -> Value {
    let holders: Vec<_> = record
        .holders
        .iter()
        .map(|g| {
            json!({
                "holder": g.holder, "fencing_token": g.token, "grant": input::format_grant(g.token, g.id),
                "lock_type": lock_type_name(g.lock_type),
                "held_for": input::format_seconds(g.held_floor_us), "timeout": input::format_duration(g.lease_us),
                "timeout_source": g.auto.map(|choice| input::timeout_source(&choice, g.lease_us)),
                "expires_in": input::format_seconds(g.effective_lease_us().saturating_sub(g.elapsed_floor_us)),
                // Handed over from the queue, and not yet collected by its waiter's next poll.
                "collected": g.reported,
                "priority": priority_name(g.priority), "reason": g.reason, "revoked": g.revoked,
            })
        })
        .collect();
    let queue: Vec<_> = record
        .queue
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({"holder": w.holder, "position": i + 1, "lock_type": lock_type_name(w.lock_type),
                "priority": priority_name(w.priority), "reason": w.reason, "waited": input::format_seconds(w.waited_floor_us)})
        })
        .collect();
    let high: Vec<_> = record
        .high_log
        .iter()
        .rev()
        .map(|h| json!({"holder": h.holder, "reason": h.reason, "ago": input::format_seconds(h.age_floor_us)}))
        .collect();
    let c = record.contention();
    // Current hold if held, else the typical (mean) hold of the recent windows.
    let hold_us = match record.holders.iter().map(|g| g.held_floor_us).max() {
        Some(current) => Some(current),
        None => c.hold_total_us.checked_div(c.holds),
    };
    let contention = json!({
        "waiters": record.queue.len(),
        "hold_duration": hold_us.map(input::format_seconds),
        "conflict_rate": (c.attempts > 0).then(|| format!("{}%", (c.conflicts * 100 + c.attempts / 2) / c.attempts)),
        "attempts": c.attempts, "conflicts": c.conflicts, "holds": c.holds,
        "window": format!("{}m", WINDOW_US * WINDOWS as u64 / 60_000_000),
    });
    let status = if record.holders.is_empty() { "free" } else { "locked" };
    let lock_type = record.holders.first().map(|g| lock_type_name(g.lock_type));
    json!({
        "scope": scope, "status": status, "lock_type": lock_type, "holders": holders, "queue": queue,
        "last_token": record.last_token, "quorum": quorum, "high_priority_requests": high,
        "lock_delay_remaining": (record.delay_remaining_us > 0).then(|| input::format_seconds(record.delay_remaining_us)),
        "contention": contention, "event_seq": record.events.last_seq,
    })
}
