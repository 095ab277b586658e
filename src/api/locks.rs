//! `GET /api/v1.0/locks`: the scopes held now. Each scope this node votes on is read
//! linearizably; at most `MAX_SCOPES` are read per call.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::input::lock_type_name;
use super::{ask, authorize, call};
use crate::agent::{ApiCall, Handle};
use crate::auth::Role;
use crate::core::{Answer, Key, LockOp, LockResult, Op};

const MAX_SCOPES: usize = 1000;

pub async fn get(State(handle): State<Handle>, headers: axum::http::HeaderMap) -> Response {
    if let Err(response) = authorize(&handle, &headers, Role::Viewer).await {
        return response;
    }
    let mut scopes = match ask(&handle, ApiCall::Scopes).await {
        Ok(scopes) => scopes,
        Err(e) => return e.into_response(),
    };
    let truncated = scopes.len() > MAX_SCOPES;
    scopes.truncate(MAX_SCOPES);
    let reads = scopes.into_iter().map(|scope| {
        let handle = handle.clone();
        async move { (scope.clone(), call(&handle, Key::Scope(scope), Op::Lock(LockOp::Read)).await) }
    });
    let mut held = Vec::new();
    let mut unread = 0;
    for (scope, reply) in futures_join_all(reads).await {
        match reply {
            Ok(reply) => match reply.result {
                Ok(Answer::Lock(LockResult::Record(record))) if !record.holders.is_empty() => {
                    let holders: Vec<_> = record.holders.iter().map(|g| json!({"holder": g.holder, "fencing_token": g.token, "grant": super::input::format_grant(g.token, g.id)})).collect();
                    let lock_type = lock_type_name(record.holders[0].lock_type);
                    held.push(json!({"scope": scope, "lock_type": lock_type, "holders": holders, "waiters": record.queue.len()}));
                }
                Ok(_) => {}
                Err(_) => unread += 1,
            },
            Err(_) => unread += 1,
        }
    }
    (StatusCode::OK, Json(json!({"locks": held, "unread": unread, "truncated": truncated}))).into_response()
}

/// Runs the reads concurrently (a small join without another dependency).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
