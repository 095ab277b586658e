//! `GET /healthz`: the process serves; says whether it belongs to a cluster yet, and which
//! (the id a joining node may be given, `--cluster-id`).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{members_view, ApiError};
use crate::agent::Handle;

pub async fn get(State(handle): State<Handle>) -> Result<Json<Value>, ApiError> {
    let view = members_view(&handle).await?;
    Ok(Json(json!({
        "status": "ok",
        "name": handle.name,
        "roster_version": view.roster_version,
        "in_cluster": view.roster_version > 0,
        "cluster_id": view.cluster_id,
    })))
}
