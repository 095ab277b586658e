//! `GET /api/v1.0/members`: the members this node knows, their state, and the roster.

use axum::extract::State;
use axum::Json;

use super::{members_view, ApiError};
use crate::agent::{Handle, MembersView};

pub async fn get(State(handle): State<Handle>) -> Result<Json<MembersView>, ApiError> {
    Ok(Json(members_view(&handle).await?))
}
