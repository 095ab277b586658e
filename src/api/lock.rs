//! `POST /api/v1.0/lock`: lock, unlock and renew a scope.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::input::{self, MAX_BODY};
use crate::core::history::MAX_WINDOW_DAYS;
use super::{agreed_by, authorize, call, failure, quorum_text, ApiError};
use crate::auth::Role;
use crate::agent::Handle;
use crate::clock;
use crate::core::call::{Ended, LockCall, NotHeld, Outcome, Step, Timing, UnlockCall};
use crate::core::{Acquire, Answer, AutoLease, Failure, GrantRef, Key, LeaseRule, LockOp, LockResult, LockType, Op, Priority, RequestId, Which};

const DEFAULT_LEASE_US: u64 = 60_000_000;
/// The bounds and learning window of `"timeout": "auto"` when the request gives none.
const DEFAULT_AUTO: AutoLease = AutoLease { min_us: 5_000_000, max_us: 300_000_000, window_days: 7 };
/// After a grant expires (not after a release) its scope stays closed this long by default.
const DEFAULT_LOCK_DELAY_US: u64 = 1_000_000;

enum Action {
    Lock { lock_type: LockType, lease: LeaseRule, lock_delay_us: u64, wait_us: u64, priority: Priority, reason: Option<String> },
    /// `named`: the grant the request names (`grant` or `fencing_token`), if any.
    Unlock { named: Option<Which>, force: bool },
    /// `Auto`: renew for the grant's current lease (an auto grant keeps its chosen one). A
    /// renewal always names its grant.
    Renew { named: Which, lease: LeaseRule },
}

struct LockRequest {
    scope: String,
    holder: String,
    /// As the client gave it (echoed back), or a fresh one.
    request_id: String,
    /// Whether the client gave the request id: then an earlier attempt of it may exist.
    named_id: bool,
    action: Action,
}

/// The request id the core sees: scoped by holder, so two clients that pick the same id (or
/// one that borrows another's) never share a grant, a place in the queue, or a retry.
fn scoped(holder: &str, request_id: &str) -> RequestId {
    RequestId(format!("{holder}\u{0}{request_id}"))
}

fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn parse(bytes: &[u8], peer: SocketAddr, user: &str) -> Result<LockRequest, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(body) = value else { return Err("the body must be a JSON object".into()) };
    const KNOWN: &[&str] =
        &["scope", "action", "lock_type", "holder", "timeout", "min_timeout", "max_timeout", "learning_window", "wait", "priority", "reason",
          "request_id", "fencing_token", "grant", "force", "lock_delay"];
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown field {unknown:?}"));
    }
    let scope = input::scope(field(&body, "scope")?.ok_or("scope is required")?)?;
    let holder = match field(&body, "holder")? {
        Some(h) => input::name("holder", h)?,
        None => format!("{user}@{}", peer.ip()),
    };
    let named_id = field(&body, "request_id")?.is_some();
    let request_id = match field(&body, "request_id")? {
        Some(r) => input::name("request_id", r)?,
        None => fresh_request_id(),
    };
    let lease = lease_rule(&body)?;
    let named = named_grant(&body)?;
    let action = match field(&body, "action")?.unwrap_or("lock") {
        "lock" => {
            let lock_type = input::lock_type(field(&body, "lock_type")?.unwrap_or("write"))?;
            let wait_us = match field(&body, "wait")? {
                Some(w) => input::duration_us("wait", w)?,
                None => 0,
            };
            let priority = input::priority(field(&body, "priority")?.unwrap_or("normal"))?;
            let reason = field(&body, "reason")?.map(|r| input::name("reason", r)).transpose()?;
            if priority == Priority::High && reason.is_none() {
                return Err("priority \"high\" requires a reason".into());
            }
            let lock_delay_us = match field(&body, "lock_delay")? {
                Some(d) => input::duration_us("lock_delay", d)?,
                None => DEFAULT_LOCK_DELAY_US,
            };
            Action::Lock { lock_type, lease: lease.unwrap_or(LeaseRule::Fixed(DEFAULT_LEASE_US)), lock_delay_us, wait_us, priority, reason }
        }
        "unlock" => {
            let force = match body.get("force") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("force must be true or false".into()),
            };
            Action::Unlock { named, force }
        }
        "renew" => {
            let named = named.ok_or(
                "renew needs the \"grant\" its lock answer gave (or the \"fencing_token\" of a write lock): \
                 a renewal naming no grant could renew another process's grant of the same holder",
            )?;
            Action::Renew { named, lease: lease.unwrap_or(LeaseRule::Auto(DEFAULT_AUTO)) }
        }
        other => return Err(format!("unknown action {other:?}: use \"lock\", \"unlock\" or \"renew\"")),
    };
    if named.is_some() && matches!(action, Action::Lock { .. }) {
        return Err("grant and fencing_token go with \"unlock\" and \"renew\"".into());
    }
    Ok(LockRequest { scope, holder, request_id, named_id, action })
}

/// The grant a request names: `grant` (exactly that one), or `fencing_token` (a write grant,
/// or a read grant provably older than the request); both must then agree.
fn named_grant(body: &Map<String, Value>) -> Result<Option<Which>, String> {
    let token = match body.get("fencing_token") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("fencing_token must be a non-negative integer")?),
    };
    match (field(body, "grant")?.map(input::grant).transpose()?, token) {
        (Some((t, _)), Some(token)) if t != token => Err(format!("fencing_token {token} is not the token of that grant ({t})")),
        (Some((token, id)), _) => Ok(Some(Which::Grant { token, id })),
        (None, Some(token)) => Ok(Some(Which::Token(token))),
        (None, None) => Ok(None),
    }
}

/// `timeout` (a duration or `"auto"`) and the bounds of an auto lease; `None` if not given.
fn lease_rule(body: &Map<String, Value>) -> Result<Option<LeaseRule>, String> {
    let min = field(body, "min_timeout")?.map(|t| input::duration_us("min_timeout", t)).transpose()?;
    let max = field(body, "max_timeout")?.map(|t| input::duration_us("max_timeout", t)).transpose()?;
    let window = field(body, "learning_window")?.map(|w| input::days("learning_window", w, MAX_WINDOW_DAYS)).transpose()?;
    let timeout = field(body, "timeout")?;
    if timeout != Some("auto") && (min.is_some() || max.is_some() || window.is_some()) {
        return Err("min_timeout, max_timeout and learning_window go with \"timeout\": \"auto\"".into());
    }
    match timeout {
        None => Ok(None),
        Some("auto") => {
            // A default bound gives way to the other one given explicitly.
            let auto = AutoLease {
                min_us: min.unwrap_or(DEFAULT_AUTO.min_us.min(max.unwrap_or(u64::MAX))),
                max_us: max.unwrap_or(DEFAULT_AUTO.max_us.max(min.unwrap_or(0))),
                window_days: window.unwrap_or(DEFAULT_AUTO.window_days),
            };
            if auto.min_us == 0 {
                return Err("min_timeout must be positive".into());
            }
            if auto.min_us > auto.max_us {
                return Err(format!(
                    "min_timeout {} is above max_timeout {}",
                    input::format_duration(auto.min_us),
                    input::format_duration(auto.max_us)
                ));
            }
            Ok(Some(LeaseRule::Auto(auto)))
        }
        Some(t) => match input::duration_us("timeout", t)? {
            0 => Err("timeout must be positive".into()),
            us => Ok(Some(LeaseRule::Fixed(us))),
        },
    }
}

fn fresh_request_id() -> String {
    let mut bytes = [0u8; 12];
    // A failed read of randomness leaves zeros; the id is then still unique enough with the
    // time mixed in below, and it only affects retry matching.
    let _ = getrandom::fill(&mut bytes);
    let t = crate::clock::now().as_micros();
    format!("req-{:x}-{}", t, bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub async fn post(
    State(handle): State<Handle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let (response, unlocking) = serve(&handle, peer, headers, body).await;
    let labelled = response.extensions().get::<super::metrics::Outcome>().map(|o| o.0);
    let outcome = labelled.unwrap_or(match (response.status().as_u16(), unlocking) {
        (200, false) => "locked",
        (200, true) => "unlocked",
        (409, false) => "busy",
        (409, true) => "not_holder",
        (503, _) => "no_quorum",
        (400 | 401 | 403 | 413, _) => "bad_request",
        _ => "other",
    });
    handle.metrics.observe(outcome, started.elapsed());
    response
}

/// The response, and whether the request was an unlock (for the metrics label).
async fn serve(handle: &Handle, peer: SocketAddr, headers: axum::http::HeaderMap, body: Body) -> (Response, bool) {
    let principal = match authorize(handle, &headers, Role::Operator).await {
        Ok(p) => p,
        Err(response) => return (response, false),
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return (ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} KiB", MAX_BODY / 1024)).into_response(), false),
    };
    let request = match parse(&bytes, peer, &principal.name) {
        Ok(r) => r,
        Err(e) => return (ApiError(StatusCode::BAD_REQUEST, e).into_response(), false),
    };
    let unlocking = matches!(request.action, Action::Unlock { .. });
    if !principal.owns(&request.holder) {
        let text = format!("user {:?} may only act for holders named {0:?}, \"{0}@...\" or \"{0}/...\"", principal.name);
        return (ApiError(StatusCode::FORBIDDEN, text).into_response(), unlocking);
    }
    if matches!(request.action, Action::Unlock { force: true, .. }) && principal.role != Role::Admin {
        return (ApiError(StatusCode::FORBIDDEN, "force (revoke) needs the admin role".into()).into_response(), unlocking);
    }
    if matches!(request.action, Action::Unlock { named: None, force: false }) && handle.require_grant {
        let text = "this node requires unlocks to name their grant (--require-grant): send the \"grant\" the lock answer gave";
        return (ApiError(StatusCode::BAD_REQUEST, text.into()).into_response(), unlocking);
    }
    let response = match request.action {
        Action::Lock { lock_type, lease, lock_delay_us, wait_us, priority, reason } => {
            let options = LockOptions { lock_type, lease, lock_delay_us, wait_us, priority, reason };
            lock(handle, request.scope, request.holder, request.request_id, request.named_id, options).await
        }
        Action::Unlock { named, force } => {
            unlock(handle, request.scope, request.holder, request.request_id, request.named_id, named, force).await
        }
        Action::Renew { named, lease } => renew(handle, request.scope, request.holder, named, lease).await,
    };
    (response, unlocking)
}

/// What a lock request asks for besides scope, holder and request id.
struct LockOptions {
    lock_type: LockType,
    lease: LeaseRule,
    lock_delay_us: u64,
    wait_us: u64,
    priority: Priority,
    reason: Option<String>,
}

async fn lock(handle: &Handle, scope: String, holder: String, request_id: String, named_id: bool, o: LockOptions) -> Response {
    let LockOptions { lock_type, lease, lock_delay_us, wait_us, priority, reason } = o;
    let acquire = Acquire {
        request_id: scoped(&holder, &request_id),
        holder: holder.clone(),
        lock_type,
        lease,
        lock_delay_us,
        // The call sets how it waits and polls.
        wait: false,
        wait_lease_us: 0,
        priority,
        reason,
        node: handle.name.clone(),
        poll: false,
    };
    let (mut served, mut step) = LockCall::new(clock::now(), Key::Scope(scope.clone()), acquire, wait_us, named_id, Timing::default());
    // News of the scope, once waiting: a handoff to this request is then answered at once.
    let mut news = None;
    loop {
        step = match step {
            Step::Submit(key, op) => match call(handle, key, op).await {
                Ok(reply) => served.on_reply(clock::now(), reply),
                Err(_) => served.on_lost(),
            },
            Step::Wait { until } => {
                let news = news.get_or_insert_with(|| handle.changes.subscribe(&scope));
                let wait = Duration::from_micros(until.since(clock::now()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = news.granted(served.request_id()) => {}
                }
                served.on_wake(clock::now())
            }
            Step::Answer(outcome) => return answer(handle, &scope, &holder, Some(&request_id), outcome).await,
        }
    }
}

async fn unlock(
    handle: &Handle,
    scope: String,
    holder: String,
    request_id: String,
    named_id: bool,
    named: Option<Which>,
    force: bool,
) -> Response {
    let key = Key::Scope(scope.clone());
    let (mut served, mut step) = UnlockCall::new(key, holder.clone(), scoped(&holder, &request_id), named, force, named_id);
    loop {
        step = match step {
            Step::Submit(key, op) => match call(handle, key, op).await {
                Ok(reply) => served.on_reply(reply),
                Err(_) => served.on_lost(),
            },
            // An unlock never waits.
            Step::Wait { .. } => return failure(handle, Failure::Timeout).await,
            Step::Answer(outcome) => return answer(handle, &scope, &holder, None, outcome).await,
        }
    }
}

/// What a served lock or unlock call tells its client, as JSON. `request_id`: a lock's.
async fn answer(handle: &Handle, scope: &str, holder: &str, request_id: Option<&str>, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Done(reply) => {
            let (quorum, agreed) = (quorum_text(&reply), agreed_by(&reply));
            match reply.result {
                Ok(Answer::Lock(LockResult::Locked { token, grant, lease_us, lock_type, auto, .. })) => {
                    let mut body = json!({
                        "status": "locked", "scope": scope, "holder": holder, "fencing_token": token,
                        "grant": input::format_grant(token, grant),
                        "lock_type": input::lock_type_name(lock_type), "quorum": quorum, "agreed_by": agreed,
                        "timeout": input::format_duration(lease_us), "request_id": request_id,
                    });
                    if let Some(choice) = auto {
                        body["timeout_source"] = json!(input::timeout_source(&choice, lease_us));
                    }
                    (StatusCode::OK, Json(body)).into_response()
                }
                Ok(Answer::Lock(LockResult::Revoked)) => {
                    let body = json!({"status": "revoked", "scope": scope, "quorum": quorum,
                        "note": "renewals are refused; the grant ends when its lease runs out"});
                    (StatusCode::OK, Json(body)).into_response()
                }
                // Released, or a read that found the scope free.
                _ => {
                    let body = json!({"status": "unlocked", "scope": scope, "quorum": quorum, "agreed_by": agreed});
                    (StatusCode::OK, Json(body)).into_response()
                }
            }
        }
        Outcome::Busy { holders, lock_delay_us, position, .. } => busy_answer(scope, holders, lock_delay_us, position),
        Outcome::Expired(Ended::Ended) => expired(scope, "this request_id's grant or wait already ended; use a new request_id"),
        Outcome::Expired(Ended::GrantEnded) => expired(scope, "this request_id's grant already ended; use a new request_id"),
        Outcome::Expired(Ended::TooOld) => expired(
            scope,
            "this request waited here longer than the scope's request log reaches back, so it was not granted; retry with a new request_id",
        ),
        Outcome::Revoked => {
            let body = json!({"status": "revoked", "scope": scope, "error": "this grant was revoked by an admin"});
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Outcome::NotHolder { holders, why } => {
            let mut body = json!({"status": "not_holder", "scope": scope, "holder": holder, "holders": holders});
            let error = match why {
                NotHeld::Nothing => None,
                NotHeld::NoSuchToken => Some("no grant with that token"),
                NotHeld::NotOlder => Some("this holder's grants are not provably older than this unlock, which releases only grants made before it arrived: send the \"grant\" the lock answer gave"),
                NotHeld::TokenOfReader => Some("a fencing_token names a write grant only (readers share theirs): send the \"grant\" the lock answer gave"),
                NotHeld::Another => Some("this holder holds a grant, but not the one named"),
            };
            if let Some(error) = error {
                body["error"] = json!(error);
            }
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Outcome::Failed(f) => failure(handle, f).await,
        Outcome::Unexpected(other) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")).into_response(),
        Outcome::Unreadable => ApiError(StatusCode::SERVICE_UNAVAILABLE, "could not read the scope".into()).into_response(),
    }
}

/// 409 expired: nothing was granted to this request, and nothing will be.
fn expired(scope: &str, why: &str) -> Response {
    (StatusCode::CONFLICT, Json(json!({"status": "expired", "scope": scope, "error": why}))).into_response()
}

/// 409 busy: who holds the scope, or how long its lock-delay still closes it, and the place
/// in the queue a wait ended at.
fn busy_answer(scope: &str, holders: Vec<String>, lock_delay_us: u64, position: Option<usize>) -> Response {
    let mut body = json!({"status": "busy", "scope": scope, "holders": holders});
    if lock_delay_us > 0 {
        body["lock_delay_remaining"] = json!(input::format_seconds(lock_delay_us));
        body["error"] = json!("a lease expired here recently: the scope stays closed for its lock_delay");
    }
    if let Some(position) = position {
        body["queue_position"] = json!(position);
    }
    (StatusCode::CONFLICT, Json(body)).into_response()
}

async fn renew(handle: &Handle, scope: String, holder: String, named: Which, lease: LeaseRule) -> Response {
    let op = LockOp::Renew { grant: GrantRef { holder: holder.clone(), which: named }, lease };
    let reply = match call(handle, Key::Scope(scope.clone()), Op::Lock(op)).await {
        Ok(reply) => reply,
        Err(e) => return e.into_response(),
    };
    let (quorum, agreed) = (quorum_text(&reply), agreed_by(&reply));
    match reply.result {
        Ok(Answer::Lock(LockResult::Locked { token, grant, lease_us, lock_type, auto, .. })) => {
            let mut body = json!({"status": "locked", "scope": scope, "holder": holder, "fencing_token": token,
                "grant": input::format_grant(token, grant),
                "lock_type": input::lock_type_name(lock_type), "quorum": quorum, "agreed_by": agreed,
                "timeout": input::format_duration(lease_us)});
            if let Some(choice) = auto {
                body["timeout_source"] = json!(input::timeout_source(&choice, lease_us));
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(Answer::Lock(LockResult::Revoked)) => (StatusCode::CONFLICT, Json(json!({"status": "revoked", "scope": scope}))).into_response(),
        Ok(Answer::Lock(_)) => (StatusCode::CONFLICT, Json(json!({"status": "not_holder", "scope": scope, "holder": holder}))).into_response(),
        Ok(other) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")).into_response(),
        Err(f) => failure(handle, f).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.5:4000".parse().unwrap()
    }

    #[test]
    fn the_seed_request_parses_with_a_holder_from_the_address() {
        let r = parse(br#"{"scope": "db-migration", "action": "lock"}"#, peer(), "anonymous").unwrap();
        assert_eq!(r.scope, "db-migration");
        assert_eq!(r.holder, "anonymous@10.0.0.5");
        assert!(matches!(r.action, Action::Lock { lease: LeaseRule::Fixed(DEFAULT_LEASE_US), wait_us: 0, .. }));
    }

    #[test]
    fn auto_timeouts_take_bounds_and_a_window() {
        let body = br#"{"scope": "s", "timeout": "auto", "min_timeout": "2s", "max_timeout": "10m", "learning_window": "3d"}"#;
        let r = parse(body, peer(), "anonymous").unwrap();
        let auto = AutoLease { min_us: 2_000_000, max_us: 600_000_000, window_days: 3 };
        assert!(matches!(r.action, Action::Lock { lease: LeaseRule::Auto(a), .. } if a == auto));
        let r = parse(br#"{"scope": "s", "timeout": "auto"}"#, peer(), "anonymous").unwrap();
        assert!(matches!(r.action, Action::Lock { lease: LeaseRule::Auto(DEFAULT_AUTO), .. }));
        // A default bound gives way to an explicit other one.
        let r = parse(br#"{"scope": "s", "timeout": "auto", "max_timeout": "2s"}"#, peer(), "anonymous").unwrap();
        assert!(matches!(r.action, Action::Lock { lease: LeaseRule::Auto(AutoLease { min_us: 2_000_000, max_us: 2_000_000, .. }), .. }));
        let r = parse(br#"{"scope": "s", "timeout": "auto", "min_timeout": "10m"}"#, peer(), "anonymous").unwrap();
        assert!(matches!(r.action, Action::Lock { lease: LeaseRule::Auto(AutoLease { min_us: 600_000_000, max_us: 600_000_000, .. }), .. }));
        // A renewal without a timeout keeps the grant's lease.
        let r = parse(br#"{"scope": "s", "action": "renew", "grant": "3-9"}"#, peer(), "anonymous").unwrap();
        assert!(matches!(r.action, Action::Renew { lease: LeaseRule::Auto(_), named: Which::Grant { token: 3, id: 9 } }));
    }

    #[test]
    fn request_ids_are_scoped_by_holder() {
        assert_ne!(scoped("alice", "migrate-42"), scoped("eve", "migrate-42"));
        // Holders and ids are printable, so the separator cannot be forged through the API.
        assert!(parse(br#"{"scope": "s", "holder": "a\u0000b"}"#, peer(), "anonymous").is_err());
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        for (body, expect) in [
            (&b"{"[..], "malformed JSON"),
            (br#"[]"#, "JSON object"),
            (br#"{"action": "lock"}"#, "scope is required"),
            (br#"{"scope": "a b"}"#, "invalid scope"),
            (br#"{"scope": "s", "action": "grab"}"#, "unknown action"),
            (br#"{"scope": "s", "lock_type": "exclusive"}"#, "invalid lock_type"),
            (br#"{"scope": "s", "timeout": "soon"}"#, "invalid timeout"),
            (br#"{"scope": "s", "lock_delay": "later"}"#, "invalid lock_delay"),
            (br#"{"scope": "s", "timeout": "auto", "min_timeout": "9s", "max_timeout": "5s"}"#, "above max_timeout"),
            (br#"{"scope": "s", "timeout": "auto", "min_timeout": "0s"}"#, "must be positive"),
            (br#"{"scope": "s", "timeout": "auto", "learning_window": "40d"}"#, "learning_window"),
            (br#"{"scope": "s", "timeout": "auto", "learning_window": "1h"}"#, "learning_window"),
            (br#"{"scope": "s", "timeout": "30s", "max_timeout": "60s"}"#, "go with"),
            (br#"{"scope": "s", "priority": "high"}"#, "requires a reason"),
            (br#"{"scope": "s", "colour": "red"}"#, "unknown field"),
            (br#"{"scope": 7}"#, "must be a string"),
            (br#"{"scope": "s", "action": "unlock", "fencing_token": -1}"#, "fencing_token"),
            (br#"{"scope": "s", "action": "renew"}"#, "renew needs the \"grant\""),
            (br#"{"scope": "s", "action": "renew", "holder": "h", "timeout": "30s"}"#, "renew needs the \"grant\""),
            (br#"{"scope": "s", "action": "unlock", "grant": "7"}"#, "invalid grant"),
            (br#"{"scope": "s", "action": "unlock", "grant": 7}"#, "grant must be a string"),
            (br#"{"scope": "s", "action": "unlock", "grant": "7-2", "fencing_token": 6}"#, "not the token of that grant"),
            (br#"{"scope": "s", "action": "lock", "grant": "7-2"}"#, "go with \"unlock\""),
        ] {
            let e = parse(body, peer(), "anonymous").err().unwrap_or_default();
            assert!(e.contains(expect), "{}: {e}", String::from_utf8_lossy(body));
            assert!(!e.contains('\n'));
        }
    }
}

/// The handler against a scripted node task: what the client is told when the node stops
/// answering (`call` fails: it is shutting down) part-way through a call. Written by a red
/// team of the move to `core::call`, which first passed such failures through as 503 errors.
#[cfg(test)]
mod no_reply {
    use super::*;
    use crate::agent::{ApiCall, Input};
    use crate::core::{LockRecord, NodeId, Reply};
    use tokio::sync::mpsc;

    /// What the scripted node does with an op: answer it, or drop its reply (shutdown).
    type Script = Box<dyn FnMut(&Op) -> Option<Result<Answer, Failure>> + Send>;

    fn handle(mut script: Script) -> (Handle, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let (tx, mut rx) = mpsc::channel::<Input>(64);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                if let Input::Api(ApiCall::Op { key, op, reply, .. }) = input {
                    let poll = matches!(&op, Op::Lock(LockOp::Acquire(a)) if a.poll && a.wait);
                    log.lock().unwrap().push(format!("{}{}", kind(&op), if poll { "(poll)" } else { "" }));
                    match script(&op) {
                        Some(result) => {
                            let agreed = vec![NodeId::new("n1", 1, [1; 32]), NodeId::new("n2", 1, [2; 32])];
                            let _ = reply.send(Reply { client: 1, key, result, agreed, voters: 3, ballot: None });
                        }
                        None => drop(reply),
                    }
                }
            }
        });
        let handle = Handle {
            name: "n1".into(),
            calls: tx,
            users: None,
            request_timeout_us: 1_000_000,
            require_grant: false,
            metrics: Default::default(),
            auth_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
            changes: Default::default(),
        };
        (handle, seen)
    }

    fn options(wait_us: u64) -> LockOptions {
        LockOptions { lock_type: LockType::Write, lease: LeaseRule::Fixed(30_000_000), lock_delay_us: 0, wait_us, priority: Priority::Normal, reason: None }
    }

    async fn json(response: Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn kind(op: &Op) -> &'static str {
        match op {
            Op::Lock(LockOp::Acquire(_)) => "acquire",
            Op::Lock(LockOp::Cancel { .. }) => "cancel",
            Op::Lock(LockOp::Read) => "read",
            Op::Lock(LockOp::Release { .. }) => "release",
            Op::Lock(LockOp::Revoke { .. }) => "revoke",
            _ => "other",
        }
    }

    /// Queued, then the deadline's cancel gets no answer (the node task is gone). An Accept
    /// carrying the request went out when it was queued, and a handoff may grant the place
    /// before it lapses: PROTOCOL §0.6 allows only `timeout`.
    #[tokio::test]
    async fn a_cancel_that_gets_no_answer_is_timeout() {
        let (handle, seen) = handle(Box::new(|op| match kind(op) {
            "acquire" => Some(Ok(Answer::Lock(LockResult::Queued { position: 1 }))),
            _ => None,
        }));
        let response = lock(&handle, "s".into(), "h".into(), "r1".into(), false, options(1_000)).await;
        let labelled = response.extensions().get::<super::super::metrics::Outcome>().map(|o| o.0);
        let (status, body) = json(response).await;
        eprintln!("ops {:?}; answer {status} {body} (metrics label extension {labelled:?})", seen.lock().unwrap());
        assert_eq!((status, body["status"].as_str()), (503, Some("timeout")), "{body}");
        assert_eq!(labelled, Some("timeout"));
    }

    /// Queued, then a poll gets no answer (the node task is gone): an Accept carrying the
    /// request already went out and a handoff may still grant the place, so `timeout`, not a
    /// 503 error (the handler before `core::call` got this wrong too).
    #[tokio::test]
    async fn a_poll_that_gets_no_answer_after_queueing_is_timeout() {
        let (handle, seen) = handle(Box::new(|op| match op {
            Op::Lock(LockOp::Acquire(a)) if !a.poll => Some(Ok(Answer::Lock(LockResult::Queued { position: 1 }))),
            _ => None,
        }));
        let response = lock(&handle, "s".into(), "h".into(), "r1".into(), false, options(2_000_000)).await;
        let (status, body) = json(response).await;
        eprintln!("ops {:?}; answer {status} {body}", seen.lock().unwrap());
        assert_eq!((status, body["status"].as_str()), (503, Some("timeout")), "{body}");
    }

    /// Queued, cancelled at the deadline (decided: nothing will be granted), then the read
    /// for the busy answer gets no answer: still 409 busy, with the queue position and no
    /// holders.
    #[tokio::test]
    async fn a_cancelled_wait_whose_read_gets_no_answer_is_busy() {
        let (handle, seen) = handle(Box::new(|op| match kind(op) {
            "acquire" => Some(Ok(Answer::Lock(LockResult::Queued { position: 2 }))),
            "cancel" => Some(Ok(Answer::Lock(LockResult::Cancelled))),
            _ => None,
        }));
        let response = lock(&handle, "s".into(), "h".into(), "r1".into(), false, options(1_000)).await;
        let (status, body) = json(response).await;
        eprintln!("ops {:?}; answer {status} {body}", seen.lock().unwrap());
        assert_eq!(status, 409, "{body}");
        assert_eq!(body, json!({"status": "busy", "scope": "s", "holders": [], "queue_position": 2}));
    }

    /// An unlock that matched nothing, whose read gets no answer: "could not read the scope".
    #[tokio::test]
    async fn an_unlock_whose_read_gets_no_answer_could_not_read() {
        let (handle, seen) = handle(Box::new(|op| match kind(op) {
            "release" => Some(Ok(Answer::Lock(LockResult::NotHolder))),
            _ => None,
        }));
        let response = unlock(&handle, "s".into(), "h".into(), "u1".into(), false, None, false).await;
        let (status, body) = json(response).await;
        eprintln!("ops {:?}; answer {status} {body}", seen.lock().unwrap());
        assert_eq!((status, &body), (503, &json!({"status": "error", "error": "could not read the scope"})));
    }

    /// The answers of the ordinary paths, through the handler itself.
    #[tokio::test]
    async fn ordinary_paths_answer_as_before() {
        // Queued, polled, cancel finds the grant collected elsewhere, poll once more: locked.
        let mut cancelled = false;
        let (h, seen) = handle(Box::new(move |op| match op {
            Op::Lock(LockOp::Acquire(a)) if !a.poll => Some(Ok(Answer::Lock(LockResult::Queued { position: 1 }))),
            Op::Lock(LockOp::Acquire(_)) => {
                Some(Ok(Answer::Lock(if !cancelled {
                    LockResult::Queued { position: 1 }
                } else {
                    LockResult::Locked { token: 4, grant: 9, lease_us: 30_000_000, lock_type: LockType::Write, lease_seq: 1, auto: None }
                })))
            }
            Op::Lock(LockOp::Cancel { .. }) => {
                cancelled = true;
                Some(Ok(Answer::Lock(LockResult::Collected { token: 4, grant: 9 })))
            }
            _ => None,
        }));
        let (status, body) = json(lock(&h, "s".into(), "h".into(), "r1".into(), false, options(700_000)).await).await;
        eprintln!("collected: ops {:?}; answer {status} {body}", seen.lock().unwrap());
        assert_eq!(status, 200);
        assert_eq!(body["status"], "locked");
        assert_eq!(body["request_id"], "r1");
        assert_eq!(body["grant"], "4-9");
        assert_eq!(*seen.lock().unwrap(), ["acquire", "acquire(poll)", "acquire(poll)", "cancel", "acquire(poll)"]);
        // Cancel answers Expired.
        let (h, _) = handle(Box::new(|op| match kind(op) {
            "acquire" => Some(Ok(Answer::Lock(LockResult::Queued { position: 1 }))),
            "cancel" => Some(Ok(Answer::Lock(LockResult::Expired))),
            _ => None,
        }));
        let (status, body) = json(lock(&h, "s".into(), "h".into(), "r1".into(), false, options(1_000)).await).await;
        assert_eq!((status, body), (409, json!({"status": "expired", "scope": "s", "error": "this request_id's grant already ended; use a new request_id"})));
        // Cancel answers a failure: timeout.
        let (h, _) = handle(Box::new(|op| match kind(op) {
            "acquire" => Some(Ok(Answer::Lock(LockResult::Queued { position: 1 }))),
            _ => Some(Err(Failure::NoQuorum)),
        }));
        let (status, body) = json(lock(&h, "s".into(), "h".into(), "r1".into(), false, options(1_000)).await).await;
        assert_eq!((status, body["status"].as_str()), (503, Some("timeout")));
        // no_quorum without wait and without the client's id is definite; with the id, timeout.
        for (named, expect) in [(false, "no_quorum"), (true, "timeout")] {
            let (h, _) = handle(Box::new(|_| Some(Err(Failure::NoQuorum))));
            let (status, body) = json(lock(&h, "s".into(), "h".into(), "r1".into(), named, options(0)).await).await;
            assert_eq!((status, body["status"].as_str()), (503, Some(expect)));
            let (h, _) = handle(Box::new(|_| Some(Err(Failure::Overloaded))));
            let (status, body) = json(unlock(&h, "s".into(), "h".into(), "u1".into(), named, None, false).await).await;
            assert_eq!((status, body["status"].as_str()), (503, Some(if named { "timeout" } else { "overloaded" })));
        }
        // Unlock on a free scope: unlocked, with the read's quorum.
        let (h, _) = handle(Box::new(|op| match kind(op) {
            "release" => Some(Ok(Answer::Lock(LockResult::NotHolder))),
            "read" => Some(Ok(Answer::Lock(LockResult::Record(Box::new(LockRecord::default()))))),
            _ => None,
        }));
        let (status, body) = json(unlock(&h, "s".into(), "h".into(), "u1".into(), false, None, false).await).await;
        assert_eq!((status, body), (200, json!({"status": "unlocked", "scope": "s", "quorum": "2/3 nodes agreed", "agreed_by": ["n1", "n2"]})));
        // A revoke naming no current token, on a scope someone else holds.
        let mut held = LockRecord::default();
        held.apply(
            &LockOp::Acquire(Acquire {
                request_id: RequestId("x\u{0}1".into()), holder: "x".into(), lock_type: LockType::Write, lease: LeaseRule::Fixed(30_000_000),
                lock_delay_us: 0, wait: false, wait_lease_us: 0, priority: Priority::Normal, reason: None, node: "n1".into(), poll: false,
            }),
            0,
            &crate::core::Limits::default(),
        );
        let record = held.clone();
        let (h, _) = handle(Box::new(move |op| match kind(op) {
            "revoke" => Some(Ok(Answer::Lock(LockResult::NotHolder))),
            "read" => Some(Ok(Answer::Lock(LockResult::Record(Box::new(record.clone()))))),
            _ => None,
        }));
        let (status, body) = json(unlock(&h, "s".into(), "admin".into(), "u1".into(), false, Some(Which::Token(9)), true).await).await;
        assert_eq!((status, body), (409, json!({"status": "not_holder", "scope": "s", "holder": "admin", "holders": ["x"], "error": "no grant with that token"})));
        // A bare unlock by someone who holds nothing: no error text.
        let record = held.clone();
        let (h, _) = handle(Box::new(move |op| match kind(op) {
            "release" => Some(Ok(Answer::Lock(LockResult::NotHolder))),
            "read" => Some(Ok(Answer::Lock(LockResult::Record(Box::new(record.clone()))))),
            _ => None,
        }));
        let (status, body) = json(unlock(&h, "s".into(), "y".into(), "u1".into(), false, None, false).await).await;
        assert_eq!((status, body), (409, json!({"status": "not_holder", "scope": "s", "holder": "y", "holders": ["x"]})));
        // The holder itself, bare, and by a token of another grant.
        for (named, why) in [
            (None, "this holder's grants are not provably older than this unlock, which releases only grants made before it arrived: send the \"grant\" the lock answer gave"),
            (Some(Which::Token(77)), "this holder holds a grant, but not the one named"),
        ] {
            let record = held.clone();
            let (h, _) = handle(Box::new(move |op| match kind(op) {
                "release" => Some(Ok(Answer::Lock(LockResult::NotHolder))),
                "read" => Some(Ok(Answer::Lock(LockResult::Record(Box::new(record.clone()))))),
                _ => None,
            }));
            let (status, body) = json(unlock(&h, "s".into(), "x".into(), "u1".into(), false, named, false).await).await;
            assert_eq!((status, body["error"].as_str()), (409, Some(why)));
        }
    }
}
