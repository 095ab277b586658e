//! `GET /api/v1.0/cluster`: the cluster as a whole — its id, the voter target, the roster's
//! voters and members, the quorum, and how voters and members spread over zones.
//! `PUT /api/v1.0/cluster {"voters": N}` (admin): sets the voter target (odd, 1-9); placement
//! then promotes or demotes members toward it, one roster change at a time.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::input::MAX_BODY;
use super::members::{change, roster};
use super::{members_view, ApiError};
use crate::agent::Handle;
use crate::core::roster::{valid_target, MAX_TARGET};
use crate::core::RosterChange;

pub async fn get(State(handle): State<Handle>, headers: axum::http::HeaderMap) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Viewer).await {
        return response;
    }
    let view = match members_view(&handle).await {
        Ok(view) => view,
        Err(e) => return e.into_response(),
    };
    // The roster says who votes; this node's view of the members says where each is (a
    // member it has not heard from yet counts in no zone).
    let roster = match roster(&handle).await {
        Ok(roster) => Some(roster),
        Err(_) => None,
    };
    let zone_of = |name: &str| view.members.iter().find(|m| m.name == name).map_or("", |m| m.zone.as_str());
    let mut zones: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (voter, m) in roster.iter().flat_map(|r| r.voters.iter().map(|v| (true, v)).chain(r.members.iter().map(|m| (false, m)))) {
        let counts = zones.entry(zone_of(&m.name)).or_default();
        if voter {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let zones: Vec<Value> = zones.iter().map(|(zone, (v, m))| json!({"zone": zone, "voters": v, "members": m})).collect();
    let named = |voters: bool| {
        roster.iter().flat_map(|r| if voters { &r.voters } else { &r.members }).map(|m| m.name.clone()).collect::<Vec<_>>()
    };
    let body = json!({
        "cluster_id": view.cluster_id,
        "roster_version": view.roster_version,
        "voter_target": view.voter_target,
        "roster_size": view.roster_size,
        "quorum_size": view.quorum_size,
        "sweep_done": view.sweep_done,
        "voters": named(true),
        "members": named(false),
        "zones": zones,
    });
    Json(body).into_response()
}

pub async fn put(State(handle): State<Handle>, headers: axum::http::HeaderMap, body: Body) -> Response {
    if let Err(response) = super::authorize(&handle, &headers, crate::auth::Role::Admin).await {
        return response;
    }
    let target = match parse_target(body).await {
        Ok(target) => target,
        Err(e) => return e.into_response(),
    };
    let roster = match roster(&handle).await {
        Ok(roster) => roster,
        Err(e) => return e.into_response(),
    };
    if roster.target == target {
        let body = json!({"status": "unchanged", "voter_target": target, "roster_version": roster.version, "roster_size": roster.voters.len()});
        return (StatusCode::OK, Json(body)).into_response();
    }
    match change(&handle, RosterChange::SetTarget(target), roster.version, "the cluster").await {
        Ok(r) => {
            let body = json!({"status": "changed", "voter_target": target, "roster_version": r.version, "roster_size": r.voters.len(),
                "note": "placement moves the voters toward the target one roster change at a time"});
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(response) => response,
    }
}

/// `{"voters": N}`: an odd number from 1 to 9.
async fn parse_target(body: Body) -> Result<u8, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} KiB", MAX_BODY / 1024)))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let bad = || ApiError(StatusCode::BAD_REQUEST, format!("voters must be an odd number from 1 to {MAX_TARGET}"));
    match value.get("voters") {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u8::try_from(n).ok()).filter(|n| valid_target(*n)).ok_or_else(bad),
        Some(_) => Err(bad()),
        None => Err(ApiError(StatusCode::BAD_REQUEST, "voters is required: {\"voters\": N}".into())),
    }
}
