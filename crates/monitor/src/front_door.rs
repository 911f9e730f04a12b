//! The clients' HTTP front door (seed 001: clients talk only to the monitor). Every store
//! request goes through the store's `Client`, so a write is routed to the primary and retried
//! through a failover with the same request id: a client of the monitor sees a slower answer,
//! not an error. Errors are JSON `{"error": "..."}` with the status code that fits.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::StringRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use primary_standby::client::ClientError;
use primary_standby::limits::{Limits, parse_update};
use proto::{Op, Reply};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::balancer::{self, Balance};
use crate::gateway::Gateway;
use crate::health::Health;
use crate::metrics::{self, RequestCounts, UpstreamCounts};
use crate::overview;
use crate::poller::{Board, System};

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
    pub upstreams: UpstreamCounts,
    pub balance: Balance,
    pub balancing: Mutex<Balancing>,
}

/// What the balancer needs to remember: whose turn it is, and requests in flight per node.
#[derive(Debug, Default)]
pub struct Balancing {
    turn: u64,
    outstanding: HashMap<String, u32>,
}

pub fn router(door: Arc<FrontDoor>, body_limit: usize) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/ping", get(|| async { "pong" }))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
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
    door.requests.record((route, response.status().as_u16()));
    response
}

async fn exposition(State(door): State<Arc<FrontDoor>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&metrics::Sources {
            nodes: &door.board.nodes(),
            requests: &door.requests,
            upstreams: &door.upstreams,
            events: &door.board.change_counts(),
        }),
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

    /// A store node answered something the request cannot have asked for.
    fn unexpected(addr: &str, reply: Reply) -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("{addr} answered {reply:?}"),
        )
    }

    /// A store node did not answer.
    fn unreachable(addr: &str, error: anyhow::Error) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{addr}: {error}"))
    }

    /// No node matches `?node=`.
    fn no_node(error: anyhow::Error) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error.to_string())
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
    Json(status_of(&door))
}

/// Each system at a glance (`store`, `election`, `dispatcher`: null when not watched) and
/// every node's row.
fn status_of(door: &FrontDoor) -> Value {
    let nodes = door.board.nodes();
    let mut status = serde_json::to_value(overview::of(&nodes)).unwrap_or_default();
    status["nodes"] = json!(nodes);
    status
}

/// Server-sent events: a `status` snapshot at once and every second, a `change` for each state
/// change or failover.
async fn events(
    State(door): State<Arc<FrontDoor>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = door.board.subscribe();
    // The snapshot first, made now (a change already queued must not come before it), then
    // the changes as they come and a snapshot every second.
    let first = status_event(&door).map(Ok);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.reset();
    let rest = stream::unfold(
        (door, changes, tick),
        |(door, mut changes, mut tick)| async move {
            let event = tokio::select! {
                _ = tick.tick() => status_event(&door)?,
                change = changes.recv() => match change {
                    Ok(change) => Event::default().event("change").json_data(&change).ok()?,
                    // Fell behind: the snapshot says where things are now.
                    Err(RecvError::Lagged(_)) => status_event(&door)?,
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (door, changes, tick)))
        },
    );
    let stream = stream::iter(first).chain(rest);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn status_event(door: &FrontDoor) -> Option<Event> {
    Event::default()
        .event("status")
        .json_data(status_of(door))
        .ok()
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    consistency: Option<String>,
}

async fn read(
    State(door): State<Arc<FrontDoor>>,
    Path(key): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Answer {
    match query.consistency.as_deref() {
        None | Some("strong") => {}
        Some("stale") => {
            // Any healthy node's own copy, load-balanced: may lag the primary.
            let op = Op::Get {
                key: key.clone(),
                stale: true,
            };
            return match balanced(&door, op).await? {
                (addr, Reply::Value(Some(value))) => Ok(Json(
                    json!({ "key": key, "value": value, "served_by": addr }),
                )),
                (addr, Reply::Value(None)) => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no key {key:?} on {addr}"),
                )),
                (addr, other) => Err(ApiError::unexpected(&addr, other)),
            };
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("consistency is strong or stale, not {other:?}"),
            ));
        }
    }
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
struct SumQuery {
    first: Option<String>,
    second: Option<String>,
}

/// Seed 004's `/?first=A&second=B`: the sum and a random number, computed by a healthy store
/// node the balancer picks (the next one if it fails). Without them, the page.
async fn home(State(door): State<Arc<FrontDoor>>, Query(query): Query<SumQuery>) -> Response {
    if query.first.is_none() && query.second.is_none() {
        return page().into_response();
    }
    let number = |name: &str, value: Option<&String>| {
        let value = value
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("{name} is missing")))?;
        value.trim().parse::<i64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{name} is not a whole number: {value:?}"),
            )
        })
    };
    let answer = async {
        let first = number("first", query.first.as_ref())?;
        let second = number("second", query.second.as_ref())?;
        match balanced(&door, Op::Sum { first, second }).await? {
            (addr, Reply::Summed { sum, random, node }) => Ok(Json(
                json!({ "sum": sum, "random": random, "node": node, "served_by": addr }),
            )),
            (addr, other) => Err(ApiError::unexpected(&addr, other)),
        }
    };
    answer.await.into_response()
}

/// The live page: embedded in the binary, it fills itself from `/api/events`.
fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// Sends `op` to a healthy store node the balancer picks, and to the next ones if it fails;
/// the answer and who gave it.
async fn balanced(door: &FrontDoor, op: Op) -> Result<(String, Reply), ApiError> {
    let healthy: Vec<String> = door
        .board
        .nodes()
        .into_iter()
        .filter(|n| n.system == System::Store && n.state == Health::Up)
        .map(|n| n.addr)
        .collect();
    let order = {
        let mut balancing = door.balancing.lock().expect("not poisoned");
        balancing.turn += 1;
        let loads: Vec<(String, u32)> = healthy
            .iter()
            .map(|a| {
                (
                    a.clone(),
                    balancing.outstanding.get(a).copied().unwrap_or(0),
                )
            })
            .collect();
        balancer::order(door.balance, &loads, balancing.turn, rand::random())
    };
    if order.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no store node is healthy right now",
        ));
    }
    let client = door.store.asker();
    let mut failures = Vec::new();
    for addr in order {
        let answer = {
            let _in_flight = InFlight::new(door, &addr);
            client.ask(&addr, op.clone()).await
        };
        let outcome = if answer.is_ok() { "ok" } else { "failed" };
        door.upstreams.record((addr.clone(), outcome));
        match answer {
            Ok(Reply::Invalid { reason }) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, reason));
            }
            Ok(reply) => return Ok((addr, reply)),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("every healthy node failed: {}", failures.join("; ")),
    ))
}

/// A request in flight to a node, for p2c; counted down however the request ends.
struct InFlight<'a> {
    door: &'a FrontDoor,
    addr: String,
}

impl<'a> InFlight<'a> {
    fn new(door: &'a FrontDoor, addr: &str) -> InFlight<'a> {
        let mut balancing = door.balancing.lock().expect("not poisoned");
        *balancing.outstanding.entry(addr.to_string()).or_default() += 1;
        InFlight {
            door,
            addr: addr.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut balancing = self.door.balancing.lock().expect("not poisoned");
        if let Some(n) = balancing.outstanding.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
        }
    }
}

#[derive(Debug, Deserialize)]
struct NodeQuery {
    node: Option<String>,
}

/// Seed 001's get_state: one node's whole map (the primary's unless `?node=` names another:
/// `primary`, `standby`, a node id).
async fn whole_map(State(door): State<Arc<FrontDoor>>, Query(query): Query<NodeQuery>) -> Answer {
    let which = query.node.unwrap_or_else(|| "primary".into());
    let client = door.store.asker();
    let addr = client.find_node(&which).await.map_err(ApiError::no_node)?;
    match client.ask(&addr, Op::State).await {
        Ok(Reply::State { seq, pairs }) => {
            let map: serde_json::Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            Ok(Json(json!({ "node": addr, "seq": seq, "pairs": map })))
        }
        Ok(other) => Err(ApiError::unexpected(&addr, other)),
        Err(e) => Err(ApiError::unreachable(&addr, e)),
    }
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
    let client = door.store.asker();
    let addr = client.find_node(&which).await.map_err(ApiError::no_node)?;
    let token = expected.to_string();
    match client.ask(&addr, Op::Kill { token }).await {
        Ok(Reply::Killed) => Ok(Json(json!({ "killed": addr }))),
        Ok(Reply::Invalid { reason }) => Err(ApiError::new(StatusCode::FORBIDDEN, reason)),
        Ok(other) => Err(ApiError::unexpected(&addr, other)),
        Err(e) => Err(ApiError::unreachable(&addr, e)),
    }
}
