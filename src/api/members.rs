//! `GET /api/v1.0/members`: the members this node knows, their state and role, the roster and
//! its bans. `POST /api/v1.0/members/remove {"name": N}`: remove a voter or member for good
//! (a roster ballot that bans its name and certificate key until re-admitted), e.g. one that
//! crashed for good or a lost device. `POST /api/v1.0/members/approve {"name": N}`: re-admit a
//! removed node (lift its ban), and admit a node waiting as `pending`. Both take an optional
//! `"key"` (64 hex digits, as `GET` shows it) to name one certificate of the node: `approve`
//! with a new key admits a replacement device under a banned name, the old key staying banned.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::input::MAX_BODY;
use super::{ask, call, failure, members_view, ApiError};
use crate::agent::{ApiCall, Handle};
use crate::core::{Answer, Key, KeyHash, Op, RosterChange, RosterOp, RosterRefusal, RosterResult};
use crate::core::roster::ChangeError;

pub async fn get(State(handle): State<Handle>, headers: axum::http::HeaderMap) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Viewer).await {
        return response;
    }
    match members_view(&handle).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn remove(State(handle): State<Handle>, headers: axum::http::HeaderMap, body: Body) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Admin).await {
        return response;
    }
    let (name, key) = match parse_name(body).await {
        Ok(named) => named,
        Err(e) => return e.into_response(),
    };
    let roster = match roster(&handle).await {
        Ok(roster) => roster,
        Err(e) => return e.into_response(),
    };
    // A voter or member of the roster; else a node that greets as pending (a lost device, say).
    let listed = roster.voters.iter().chain(&roster.members).find(|v| v.name == name && key.is_none_or(|k| v.key == k)).cloned();
    let target = match listed {
        Some(node) => node,
        None => match ask(&handle, |tx| ApiCall::Candidate(name.clone(), key, tx)).await {
            Ok(Some(node)) => node,
            Ok(None) => return ApiError(StatusCode::NOT_FOUND, format!("{name:?} is neither a member nor waiting to join here")).into_response(),
            Err(e) => return e.into_response(),
        },
    };
    let banned_key = hex(&target.key);
    match change(&handle, RosterChange::Ban(target), roster.version, &name).await {
        Ok(r) => {
            let body = json!({"status": "removed", "name": name, "key": banned_key, "banned": true, "roster_version": r.version, "roster_size": r.voters.len()});
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(response) => response,
    }
}

pub async fn approve(State(handle): State<Handle>, headers: axum::http::HeaderMap, body: Body) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Admin).await {
        return response;
    }
    let (name, key) = match parse_name(body).await {
        Ok(named) => named,
        Err(e) => return e.into_response(),
    };
    let mut roster = match roster(&handle).await {
        Ok(roster) => roster,
        Err(e) => return e.into_response(),
    };
    let mut unbanned = false;
    // Without a key, the node is re-admitted as it was (its name and key); with one, that key
    // is admitted under the name, and any other key banned under it stays banned.
    if roster.banned.iter().any(|b| b.name.as_ref() == Some(&name) || Some(b.key) == key) {
        roster = match change(&handle, RosterChange::Unban { name: name.clone(), key }, roster.version, &name).await {
            Ok(r) => r,
            Err(response) => return response,
        };
        unbanned = true;
    }
    if roster.voters.iter().chain(&roster.members).any(|v| v.name == name) {
        let body = json!({"status": "member", "name": name, "unbanned": unbanned, "roster_version": roster.version});
        return (StatusCode::OK, Json(body)).into_response();
    }
    let candidate = match ask(&handle, |tx| ApiCall::Candidate(name.clone(), key, tx)).await {
        Ok(candidate) => candidate,
        Err(e) => return e.into_response(),
    };
    let Some(node) = candidate else {
        if unbanned {
            let body = json!({"status": "unbanned", "name": name, "unbanned": true, "roster_version": roster.version,
                "note": "not waiting to join here now: it is admitted when it greets a member (with --admission approve, approve it again then)"});
            return (StatusCode::OK, Json(body)).into_response();
        }
        return ApiError(StatusCode::NOT_FOUND, format!("{name:?} is not waiting to join here (not seen, down, or of another cluster)")).into_response();
    };
    let admitted_key = hex(&node.key);
    // A member; placement makes it a voter if the cluster needs one (a roster made before
    // voter targets adds a voter, as it did then).
    let add = if roster.target == 0 { RosterChange::Add(node) } else { RosterChange::AddMember(node) };
    match change(&handle, add, roster.version, &name).await {
        Ok(r) => {
            let body = json!({"status": "approved", "name": name, "key": admitted_key, "unbanned": unbanned, "roster_version": r.version, "roster_size": r.voters.len()});
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(response) => response,
    }
}

pub(super) async fn roster(handle: &Handle) -> Result<crate::core::Roster, ApiError> {
    ask(handle, ApiCall::Roster)
        .await?
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "this node is not part of a cluster yet".into()))
}

/// Runs one roster change, compare-and-set on `version`; the new roster, or the response that
/// says why not.
pub(super) async fn change(handle: &Handle, change: RosterChange, version: u64, name: &str) -> Result<crate::core::Roster, Response> {
    let op = Op::Roster(RosterOp::Change { change, expected_version: Some(version) });
    let reply = call(handle, Key::Roster, op).await.map_err(IntoResponse::into_response)?;
    match reply.result {
        Ok(Answer::Roster(RosterResult::Changed(r))) => Ok(r),
        Ok(Answer::Roster(RosterResult::Refused(why))) => {
            let text = match why {
                RosterRefusal::Sweeping => "the previous roster change is still being applied; retry shortly".to_string(),
                RosterRefusal::Moved { current } => format!("the roster changed meanwhile (now version {current}); retry"),
                RosterRefusal::Invalid(ChangeError::LastVoter) => "cannot remove the last voter".to_string(),
                RosterRefusal::Invalid(ChangeError::BadTarget) => "the voter target must be an odd number from 1 to 9, and differ from the current one".to_string(),
                RosterRefusal::Invalid(ChangeError::TooManyBans) => format!("the roster keeps {} bans at most: re-admit some first", crate::core::roster::MAX_BANS),
                RosterRefusal::Invalid(e) => format!("cannot change {name:?}: {e:?}"),
            };
            Err(ApiError(StatusCode::CONFLICT, text).into_response())
        }
        Ok(other) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")).into_response()),
        Err(f) => Err(failure(handle, f).await),
    }
}

/// `{"name": N}`, optionally with `"key": HEX`: which node (and which of its certificates).
async fn parse_name(body: Body) -> Result<(String, Option<KeyHash>), ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} KiB", MAX_BODY / 1024)))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let name = match value.get("name") {
        Some(Value::String(name)) if crate::certs::valid_node_name(name) => name.clone(),
        Some(_) => return Err(ApiError(StatusCode::BAD_REQUEST, "name must be a node name (a-z, 0-9, '-')".into())),
        None => return Err(ApiError(StatusCode::BAD_REQUEST, "name is required".into())),
    };
    let key = match value.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(hex)) => Some(parse_key(hex).ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "key must be 64 hex digits (a member's `key` in GET /api/v1.0/members)".into()))?),
        Some(_) => return Err(ApiError(StatusCode::BAD_REQUEST, "key must be a string of 64 hex digits".into())),
    };
    Ok((name, key))
}

/// A certificate key hash as `GET /api/v1.0/members` shows it.
fn parse_key(hex: &str) -> Option<KeyHash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

fn hex(key: &KeyHash) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
