//! The HTTP API (axum), served by every node. One file per endpoint; each parses its input
//! into typed values first (bad input is a 4xx that changes nothing), then calls the node.

mod cluster;
mod health;
pub mod input;
mod lock;
mod locks;
mod members;
mod metrics;
mod status;
mod watch;

pub use metrics::HttpMetrics;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::oneshot;

use crate::agent::{ApiCall, Handle, Input, MembersView};
use crate::auth::{AuthError, Principal, Role};
use crate::core::{Key, Op, Reply};

/// Who is asking, if they may do what needs `need`: 401 without valid credentials, 403 with
/// a role below `need`. With `--no-auth` everyone is an admin named "anonymous".
async fn authorize(handle: &Handle, headers: &axum::http::HeaderMap, need: Role) -> Result<Principal, Response> {
    let Some(users) = handle.users.clone() else {
        return Ok(Principal { name: "anonymous".into(), role: Role::Admin });
    };
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let checked = match users.cached(header.as_deref()) {
        Some(p) => Ok(Ok(p)),
        None => {
            // argon2 is slow and memory-hungry on purpose: keep it off the async workers, and
            // run few at once, so a flood of wrong passwords cannot exhaust the node.
            let Ok(permit) = handle.auth_slots.clone().try_acquire_owned() else {
                let mut response = ApiError(StatusCode::TOO_MANY_REQUESTS, "too many logins in progress; retry shortly".into()).into_response();
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                return Err(response);
            };
            tokio::task::spawn_blocking(move || {
                let _held = permit;
                users.authenticate(header.as_deref())
            })
            .await
        }
    };
    match checked {
        Ok(Ok(p)) if p.role >= need => Ok(p),
        Ok(Ok(p)) => Err(ApiError(StatusCode::FORBIDDEN, format!("user {:?} ({:?}) may not do this", p.name, p.role)).into_response()),
        Ok(Err(AuthError::Unauthenticated(why))) => {
            let mut response = ApiError(StatusCode::UNAUTHORIZED, why).into_response();
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Basic realm=\"lockmesh\""));
            Err(response)
        }
        Err(_) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "authentication failed to run".into()).into_response()),
    }
}

pub fn router(handle: Handle) -> Router {
    Router::new()
        .route("/api/v1.0/lock", post(lock::post))
        .route("/api/v1.0/lock/{scope}", get(status::get))
        .route("/api/v1.0/lock/{scope}/watch", get(watch::get))
        .route("/api/v1.0/locks", get(locks::get))
        .route("/metrics", get(metrics::get))
        .route("/api/v1.0/members", get(members::get))
        .route("/api/v1.0/cluster", get(cluster::get).put(cluster::put))
        .route("/api/v1.0/members/remove", post(members::remove))
        .route("/api/v1.0/members/approve", post(members::approve))
        .route("/healthz", get(health::get))
        .with_state(handle)
}

/// An API error: a status code and one line, as `{"status": "error", "error": LINE}`.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"status": "error", "error": self.1}))).into_response()
    }
}

fn unavailable() -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down".into())
}

/// Runs one operation on the node and waits for its decided answer (or failure).
async fn call(handle: &Handle, key: Key, op: Op) -> Result<Reply, ApiError> {
    let (tx, rx) = oneshot::channel();
    let call = ApiCall::Op { key, op, timeout_us: handle.request_timeout_us, reply: tx };
    handle.calls.send(Input::Api(call)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

/// Asks the node task something that is not a ballot (members, roster, metrics, scopes).
async fn ask<T>(handle: &Handle, call: impl FnOnce(oneshot::Sender<T>) -> ApiCall) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    handle.calls.send(Input::Api(call(tx))).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

async fn members_view(handle: &Handle) -> Result<MembersView, ApiError> {
    ask(handle, ApiCall::Members).await
}

/// The response for a request the cluster did not decide.
async fn failure(handle: &Handle, failure: crate::core::Failure) -> Response {
    use crate::core::Failure;
    match failure {
        Failure::NoQuorum => {
            let reachable = match members_view(handle).await {
                Ok(v) => format!("{}/{} voters reachable", v.members.iter().filter(|m| m.voter && m.state == "alive").count(), v.roster_size),
                Err(_) => "voters unreachable".into(),
            };
            let body = json!({"status": "no_quorum", "error": format!("no quorum: {reachable}")});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        Failure::Timeout => {
            let body = json!({"status": "timeout", "error": "outcome unknown: retry with the same request_id"});
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            // Told apart from `no_quorum` in the metrics, which see only the status code.
            response.extensions_mut().insert(metrics::Outcome("timeout"));
            response
        }
        Failure::NoRoster => {
            let body = json!({"status": "no_cluster", "error": "this node is not part of a cluster yet: start it with --join and --bootstrap-expect, or --bootstrap"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        Failure::NotMember => {
            let body = json!({"status": "not_member", "error": "this node is not a member of the cluster's roster (removed, or not admitted yet): send requests to a member"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        Failure::Overloaded => {
            let body = json!({"status": "overloaded", "error": "too many requests waiting for this scope here; retry later"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        Failure::Invalid(why) => ApiError(StatusCode::BAD_REQUEST, why.to_string()).into_response(),
    }
}

fn quorum_text(reply: &Reply) -> String {
    format!("{}/{} nodes agreed", reply.agreed.len(), reply.voters)
}

/// The names of the voters that agreed to a decision (for clients and outside checkers).
fn agreed_by(reply: &Reply) -> Vec<String> {
    reply.agreed.iter().map(|id| id.name.clone()).collect()
}
