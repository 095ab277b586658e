//! `GET /api/v1.0/members`: the members this node knows, their state, and the roster.
//! `POST /api/v1.0/members/remove {"name": N}`: remove a voter (a roster ballot), e.g. one that
//! crashed for good.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::input::MAX_BODY;
use super::{ask, call, failure, members_view, ApiError};
use crate::agent::{ApiCall, Handle};
use crate::core::{Answer, Key, Op, RosterChange, RosterOp, RosterRefusal, RosterResult};
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
    let name = match parse_name(body).await {
        Ok(name) => name,
        Err(e) => return e.into_response(),
    };
    let roster = match ask(&handle, ApiCall::Roster).await {
        Ok(roster) => roster,
        Err(e) => return e.into_response(),
    };
    let Some(roster) = roster else {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "this node is not part of a cluster yet".into()).into_response();
    };
    let Some(voter) = roster.voters.iter().find(|v| v.name == name).cloned() else {
        return ApiError(StatusCode::NOT_FOUND, format!("{name:?} is not a voter")).into_response();
    };
    let op = Op::Roster(RosterOp::Change { change: RosterChange::Remove(voter), expected_version: Some(roster.version) });
    let reply = match call(&handle, Key::Roster, op).await {
        Ok(reply) => reply,
        Err(e) => return e.into_response(),
    };
    match reply.result {
        Ok(Answer::Roster(RosterResult::Changed(r))) => {
            let body = json!({"status": "removed", "name": name, "roster_version": r.version, "roster_size": r.voters.len()});
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(Answer::Roster(RosterResult::Refused(why))) => {
            let text = match why {
                RosterRefusal::Sweeping => "the previous roster change is still being applied; retry shortly".to_string(),
                RosterRefusal::Moved { current } => format!("the roster changed meanwhile (now version {current}); retry"),
                RosterRefusal::Invalid(ChangeError::LastVoter) => "cannot remove the last voter".to_string(),
                RosterRefusal::Invalid(e) => format!("cannot remove {name:?}: {e:?}"),
            };
            ApiError(StatusCode::CONFLICT, text).into_response()
        }
        Ok(other) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")).into_response(),
        Err(f) => failure(&handle, f).await,
    }
}

async fn parse_name(body: Body) -> Result<String, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} KiB", MAX_BODY / 1024)))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    match value.get("name") {
        Some(Value::String(name)) if crate::certs::valid_node_name(name) => Ok(name.clone()),
        Some(_) => Err(ApiError(StatusCode::BAD_REQUEST, "name must be a node name (a-z, 0-9, '-')".into())),
        None => Err(ApiError(StatusCode::BAD_REQUEST, "name is required".into())),
    }
}
