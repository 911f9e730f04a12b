//! The clients' HTTP front door (seed 001: clients talk only to the monitor). Every store
//! request goes through the store's `Client`, so a write is routed to the primary and retried
//! through a failover with the same request id: a client of the monitor sees a slower answer,
//! not an error. Errors are JSON `{"error": "..."}` with the status code that fits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::StringRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use primary_standby::client::ClientError;
use primary_standby::limits::{Limits, parse_update};
use proto::{Op, Reply};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::metrics::{self, RequestCounts};
use crate::poller::Board;

/// What the handlers share.
#[derive(Debug)]
pub struct FrontDoor {
    pub board: Arc<Board>,
    pub store: Gateway,
    /// The token `POST /admin/kill` must carry (`Authorization: Bearer ...`); it is passed on
    /// to the store node, which checks it too.
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub requests: RequestCounts,
}

pub fn router(door: Arc<FrontDoor>, body_limit: usize) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/api/status", get(status))
        .route("/kv", get(whole_map).post(update))
        .route("/kv/{key}", get(read).put(write).delete(delete))
        .route("/admin/kill", post(kill))
        .route("/metrics", get(exposition))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(door.clone(), count))
        .with_state(door)
}

/// Counts every request by the route it matched and the status it got.
async fn count(State(door): State<Arc<FrontDoor>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    door.requests.record(&route, response.status().as_u16());
    response
}

async fn exposition(State(door): State<Arc<FrontDoor>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&door.board.nodes(), &door.requests),
    )
}

/// An error answer: `{"error": reason}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        match e {
            ClientError::Refused(reason) => ApiError::new(StatusCode::BAD_REQUEST, reason),
            unknown @ ClientError::Unknown { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the store did not answer in time; a write may or may not be applied: {unknown}"
                ),
            ),
        }
    }
}

impl From<StringRejection> for ApiError {
    fn from(rejection: StringRejection) -> ApiError {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

type Answer = Result<Json<Value>, ApiError>;

async fn status(State(door): State<Arc<FrontDoor>>) -> Json<Value> {
    Json(json!({ "nodes": door.board.nodes() }))
}

async fn read(State(door): State<Arc<FrontDoor>>, Path(key): Path<String>) -> Answer {
    let mut client = door.store.client();
    let result = client.get(&key).await;
    door.store.put_back(client, &result);
    match result? {
        Some(value) => Ok(Json(json!({ "key": key, "value": value }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no key {key:?}"),
        )),
    }
}

async fn write(
    State(door): State<Arc<FrontDoor>>,
    Path(key): Path<String>,
    body: Result<String, StringRejection>,
) -> Answer {
    let value = body?;
    let mut client = door.store.client();
    let result = client.set(&key, &value).await;
    door.store.put_back(client, &result);
    Ok(Json(json!({ "key": key, "seq": result? })))
}

async fn delete(State(door): State<Arc<FrontDoor>>, Path(key): Path<String>) -> Answer {
    let mut client = door.store.client();
    let result = client.delete(&key).await;
    door.store.put_back(client, &result);
    Ok(Json(json!({ "key": key, "seq": result? })))
}

/// Many entries at once: a JSON object of strings, or seed 001's `key=value` lines (a bad line
/// is refused by its number, and nothing is written).
async fn update(
    State(door): State<Arc<FrontDoor>>,
    headers: HeaderMap,
    body: Result<String, StringRejection>,
) -> Answer {
    let body = body?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"))
        || body.trim_start().starts_with('{');
    let pairs = if json {
        let map: BTreeMap<String, String> = serde_json::from_str(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("expected a JSON object of string values: {e}"),
            )
        })?;
        map.into_iter().collect()
    } else {
        parse_update(&body, &door.limits).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?
    };
    let keys = pairs.len();
    let mut client = door.store.client();
    let result = client.update(pairs).await;
    door.store.put_back(client, &result);
    Ok(Json(json!({ "keys": keys, "seq": result? })))
}

#[derive(Debug, Deserialize)]
struct NodeQuery {
    node: Option<String>,
}

/// Seed 001's get_state: one node's whole map (the primary's unless `?node=` names another:
/// `primary`, `standby`, a node id).
async fn whole_map(State(door): State<Arc<FrontDoor>>, Query(query): Query<NodeQuery>) -> Answer {
    let which = query.node.unwrap_or_else(|| "primary".into());
    let client = door.store.client();
    let answer = async {
        let addr = client
            .find_node(&which)
            .await
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
        match client.ask(&addr, Op::State).await {
            Ok(Reply::State { seq, pairs }) => {
                let map: serde_json::Map<String, Value> = pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                Ok(Json(json!({ "node": addr, "seq": seq, "pairs": map })))
            }
            Ok(other) => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("{addr} answered {other:?}"),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{addr}: {e}"),
            )),
        }
    }
    .await;
    door.store.put_back(client, &Ok::<(), ClientError>(()));
    answer
}

/// Seed 001's kill: the named node exits at once, as a crash. Needs the admin token.
async fn kill(
    State(door): State<Arc<FrontDoor>>,
    headers: HeaderMap,
    Query(query): Query<NodeQuery>,
) -> Answer {
    let Some(expected) = door.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no admin token is set on the monitor (--admin-token): kill is refused",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(expected) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "kill needs Authorization: Bearer <the admin token>",
        ));
    }
    let Some(which) = query.node else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name the node: ?node=primary|standby|ID",
        ));
    };
    let client = door.store.client();
    let addr = client
        .find_node(&which)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let token = expected.to_string();
    match client.ask(&addr, Op::Kill { token }).await {
        Ok(Reply::Killed) => Ok(Json(json!({ "killed": addr }))),
        Ok(Reply::Invalid { reason }) => Err(ApiError::new(StatusCode::FORBIDDEN, reason)),
        Ok(other) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("{addr} answered {other:?}"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{addr}: {e}"),
        )),
    }
}
