//! `GET /api/v1.0/lock/{scope}/watch`: a scope's transitions as server-sent events.
//!
//! The stream opens with `state` (the scope as status shows it; its `id` is the latest event
//! number), then sends `granted`, `released`, `expired`, `revoked`, `queued` and `left`
//! events in the order the cluster decided them, each with its number as the SSE `id`. A
//! client that reconnects with `Last-Event-ID` (or `?after=N`) gets what it missed, or a
//! `resync` (the current state again) if the scope's event log no longer holds it.
//!
//! Every event comes from a linearizable read of the record, which numbers its transitions;
//! nothing is inferred from timing. Reads are run when this node accepts a value of the scope
//! with newer events, when a lease or a waiter's place may have run out (a read then also
//! carries the record forward, which is what expires it), and at least every few seconds.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;

use super::input::{self, lock_type_name};
use super::{call, quorum_text, status, ApiError};
use crate::agent::{Handle, Subscription};
use crate::core::events::{self, Since};
use crate::core::{Answer, Key, LockOp, LockRecord, LockResult, Op};

/// Read at least this often, even when nothing was heard (this node may miss Accepts).
const RECHECK: Duration = Duration::from_secs(5);
/// And at most this often, however busy the scope.
const MIN_GAP: Duration = Duration::from_millis(20);
/// Past a lease's or a place's end, before reading to see it expire (proofs lag true time).
const PAST_END: Duration = Duration::from_millis(20);

pub async fn get(State(handle): State<Handle>, headers: HeaderMap, Path(scope): Path<String>, RawQuery(query): RawQuery) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Viewer).await {
        return response;
    }
    let scope = match input::scope(&scope) {
        Ok(s) => s,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, e).into_response(),
    };
    let after = match after(query.as_deref(), &headers) {
        Ok(a) => a,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, e).into_response(),
    };
    // Subscribed before the first read, so no change after it goes unnoticed.
    let news = handle.changes.subscribe(&scope);
    let (record, quorum) = match read(&handle, &scope).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    // Room for a whole event log before the stream is read.
    let (tx, rx) = mpsc::channel(events::CAPACITY + 8);
    let mut watch = Watch { handle, scope, tx, last: 0 };
    watch.catch_up(&record, &quorum, after).await;
    tokio::spawn(watch.run(news, record));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// The last event number the client saw: `?after=N`, else the `Last-Event-ID` header.
fn after(query: Option<&str>, headers: &HeaderMap) -> Result<Option<u64>, String> {
    let number = |v: &str| {
        let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        v.parse::<u64>().ok().filter(|_| digits).ok_or_else(|| format!("invalid event number {v:?}: use the id of an event"))
    };
    let mut after = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", v)) if after.is_none() => after = Some(number(v)?),
            _ => return Err(format!("unexpected parameter {pair:?}: the only one is after=N, once")),
        }
    }
    if after.is_some() {
        return Ok(after);
    }
    match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(v)) => number(v.trim()).map(Some),
        Some(Err(_)) => Err("invalid Last-Event-ID".into()),
        None => Ok(None),
    }
}

/// A linearizable read: the record, and who agreed to it.
async fn read(handle: &Handle, scope: &str) -> Result<(LockRecord, String), Response> {
    let reply = call(handle, Key::Scope(scope.to_string()), Op::Lock(LockOp::Read)).await.map_err(IntoResponse::into_response)?;
    let quorum = quorum_text(&reply);
    match reply.result {
        Ok(Answer::Lock(LockResult::Record(record))) => Ok((*record, quorum)),
        Ok(other) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")).into_response()),
        Err(f) => Err(super::failure(handle, f).await),
    }
}

struct Watch {
    handle: Handle,
    scope: String,
    tx: mpsc::Sender<SseEvent>,
    /// The number of the last event sent.
    last: u64,
}

impl Watch {
    async fn run(mut self, mut news: Subscription, mut record: LockRecord) {
        let mut unavailable = false;
        loop {
            // Wait for a reason to read: news of this scope, a lease or place that may have
            // ended, or the periodic check (only that after a failed read).
            let wait = if unavailable { RECHECK } else { next_read(&record) };
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = news.newer_than(self.last) => {}
            }
            tokio::time::sleep(MIN_GAP).await;
            match read(&self.handle, &self.scope).await {
                Ok((r, quorum)) => {
                    unavailable = false;
                    record = r;
                    self.catch_up(&record, &quorum, Some(self.last)).await;
                }
                Err(response) if !unavailable => {
                    // Said once per outage; the watch goes on and catches up when it can.
                    unavailable = true;
                    let why = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
                    let data = String::from_utf8_lossy(&why).into_owned();
                    self.send(SseEvent::default().event("unavailable").data(data)).await;
                }
                Err(_) => {}
            }
        }
    }

    /// Sends the events after `after` from `record`, or its state if there is no `after` or
    /// the log no longer reaches back to it.
    async fn catch_up(&mut self, record: &LockRecord, quorum: &str, after: Option<u64>) {
        let events = match after.map(|a| (a, record.events.since(a))) {
            Some((a, Since::Events(events))) => {
                self.last = a;
                events
            }
            Some((_, Since::Gap)) => return self.state("resync", record, quorum).await,
            None => return self.state("state", record, quorum).await,
        };
        for e in events {
            let data = json!({
                "seq": e.seq, "scope": self.scope, "holder": e.holder,
                "fencing_token": (e.token > 0).then_some(e.token),
                "grant": (e.grant > 0).then(|| input::format_grant(e.token, e.grant)), "lock_type": lock_type_name(e.lock_type),
                "ago": input::format_seconds(e.age_floor_us),
            });
            self.send(SseEvent::default().id(e.seq.to_string()).event(e.kind.name()).data(data.to_string())).await;
            self.last = e.seq;
        }
    }

    async fn state(&mut self, name: &str, record: &LockRecord, quorum: &str) {
        let view = status::view(&self.scope, record, quorum);
        self.last = record.events.last_seq;
        self.send(SseEvent::default().id(self.last.to_string()).event(name).data(view.to_string())).await;
    }

    async fn send(&self, event: SseEvent) {
        // A closed stream is noticed by the loop.
        let _ = self.tx.send(event).await;
    }
}

/// When to read next: just past the earliest end of a lease, a lock-delay or a waiter's place
/// the record shows (a read then expires it), or after `RECHECK`.
fn next_read(record: &LockRecord) -> Duration {
    let leases = record.holders.iter().map(|g| g.lease_us.saturating_sub(g.elapsed_floor_us));
    let places = record.queue.iter().map(|w| w.wait_lease_us.saturating_sub(w.elapsed_floor_us));
    let delay = (record.delay_remaining_us > 0).then_some(record.delay_remaining_us);
    let soonest = leases.chain(places).chain(delay).min().map(Duration::from_micros);
    soonest.map_or(RECHECK, |d| (d + PAST_END).min(RECHECK))
}
