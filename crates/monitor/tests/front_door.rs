//! Every route of the front door, and each of its errors, against one store node run
//! in-process on loopback (a node alone claims the witness and acknowledges by itself).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use monitor::balancer::Balance;
use monitor::front_door::{self, FrontDoor};
use monitor::gateway::Gateway;
use monitor::health::Thresholds;
use monitor::poller::{self, Board, Settings, System, Target};
use primary_standby::limits::Limits;
use primary_standby::testing::{ADMIN_TOKEN, Cluster};
use proto::FrameCodec;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = ADMIN_TOKEN;
const BODY_LIMIT: usize = 1024;

struct Lab {
    app: Router,
    _store: Cluster,
    stop: CancellationToken,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One store node and a front door to it.
async fn lab() -> Lab {
    let store = Cluster::start(1, FrameCodec::default()).await;
    let nodes = store.addrs();
    let stop = CancellationToken::new();
    let targets = nodes
        .iter()
        .map(|addr| Target {
            system: System::Store,
            addr: addr.clone(),
        })
        .collect();
    let board = poller::spawn(
        targets,
        settings_for_test(),
        None,
        FrameCodec::default(),
        stop.clone(),
    );
    let gateway = Gateway::new(nodes, FrameCodec::default(), Duration::from_secs(2));
    Lab {
        app: door(board, gateway, Some(TOKEN)),
        _store: store,
        stop,
    }
}

/// The front door's routes over `board` and `gateway`, balancing round-robin.
fn door(board: Arc<Board>, gateway: Gateway, admin_token: Option<&str>) -> Router {
    let door = Arc::new(FrontDoor {
        board,
        store: gateway,
        admin_token: admin_token.map(str::to_string),
        limits: Limits::default(),
        requests: Default::default(),
        upstreams: Default::default(),
        balance: Balance::RoundRobin,
        balancing: Default::default(),
    });
    front_door::router(door, BODY_LIMIT)
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

fn request(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap()
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error: {body}"))
}

#[tokio::test]
async fn keys_are_written_read_updated_and_deleted_through_the_door() {
    let lab = lab().await;
    let app = &lab.app;
    assert_eq!(
        call(app, request("GET", "/ping", "")).await,
        (StatusCode::OK, Value::String("pong".into()))
    );

    let (status, body) = call(app, request("PUT", "/kv/name", "Paola")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(app, request("GET", "/kv/name", "")).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (StatusCode::OK, Some("Paola"))
    );

    // Seed 001's update file, and the same as JSON.
    let (status, body) = call(app, request("POST", "/kv", "a=1\nb=2\n")).await;
    assert_eq!(
        (status, body["keys"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    let json = Request::builder()
        .method("POST")
        .uri("/kv")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"c": "3"}"#))
        .unwrap();
    assert_eq!(call(app, json).await.0, StatusCode::OK);

    let (status, body) = call(app, request("GET", "/kv", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pairs"]["a"], "1");
    assert_eq!(body["pairs"]["c"], "3");
    let (status, body) = call(app, request("GET", "/kv?node=1", "")).await;
    assert_eq!(
        (status, body["pairs"]["name"].as_str()),
        (StatusCode::OK, Some("Paola"))
    );

    assert_eq!(
        call(app, request("DELETE", "/kv/name", "")).await.0,
        StatusCode::OK
    );
    let (status, body) = call(app, request("GET", "/kv/name", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("no key"));

    let (status, body) = call(app, request("GET", "/api/status", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["nodes"][0]["system"], "store");

    // Prometheus' text format: every sample line `name{labels} value`, each family declared.
    let (status, body) = call(app, request("GET", "/metrics", "")).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("text");
    let mut declared = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(declared.iter().any(|d| d == name), "undeclared {name}");
        assert!(series.ends_with('}') || !series.contains('{'), "{line}");
    }
    assert!(
        text.contains(r#"halab_monitor_requests_total{route="/kv/{key}",status="200"}"#),
        "{text}"
    );
    assert!(text.contains("halab_monitor_node_state{"), "{text}");
    assert!(
        text.contains("\nhalab_monitor_failovers_total 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_requests_get_a_json_error_with_the_right_status_and_change_nothing() {
    let lab = lab().await;
    let app = &lab.app;
    // A read waits (through the client's retries) until the node is primary.
    assert_eq!(
        call(app, request("GET", "/kv/a", "")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = call(app, request("POST", "/kv", "a=1\nthis line is bad\nb=2\n")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("line 2"), "{body}");
    let (_, body) = call(app, request("GET", "/kv", "")).await;
    assert_eq!(body["pairs"], serde_json::json!({}), "nothing applied");

    let (status, body) = call(app, request("POST", "/kv", r#"{"a": 1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("string values"), "{body}");

    let too_long = "k".repeat(300);
    let (status, body) = call(app, request("PUT", &format!("/kv/{too_long}"), "v")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("key"), "{body}");

    let (status, body) = call(app, request("PUT", "/kv/big", "v".repeat(BODY_LIMIT + 1))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    error_of(&body);

    let (status, body) = call(app, request("GET", "/kv?node=7", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("no 7"), "{body}");

    let (status, body) = call(app, request("GET", "/nowhere", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_of(&body);
}

/// Waits until the monitor's checks call every node up (bounded).
async fn all_up(app: &Router) {
    for _ in 0..200 {
        let (_, body) = call(app, request("GET", "/api/status", "")).await;
        if body["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["state"] == "up"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the checks never called every node up");
}

#[tokio::test]
async fn seed_004s_sum_and_stale_reads_are_served_by_a_healthy_node() {
    let lab = lab().await;
    let app = &lab.app;
    all_up(app).await;
    let (status, body) = call(app, request("GET", "/?first=2&second=40", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sum"], 42);
    assert!(
        body["random"].is_u64() && body["served_by"].is_string(),
        "{body}"
    );

    for (query, says) in [
        ("/?first=x&second=1", "first is not a whole number"),
        ("/?first=1", "second is missing"),
        ("/?first=9223372036854775807&second=1", "does not fit"),
    ] {
        let (status, body) = call(app, request("GET", query, "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(error_of(&body).contains(says), "{query}: {body}");
    }

    let (_, body) = call(app, request("GET", "/", "")).await;
    assert!(
        body.as_str()
            .is_some_and(|page| page.contains("halab monitor")),
        "{body}"
    );

    assert_eq!(
        call(app, request("PUT", "/kv/k", "v")).await.0,
        StatusCode::OK
    );
    let (status, body) = call(app, request("GET", "/kv/k?consistency=stale", "")).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (StatusCode::OK, Some("v")),
        "{body}"
    );
    let node = body["served_by"].as_str().unwrap().to_string();
    let (status, body) = call(app, request("GET", "/kv/k?consistency=weird", "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    error_of(&body);

    // The one node served the sum, the overflowing sum (its refusal is an answer) and the
    // stale read: the balancer's choices are counted, and the node is the primary.
    let (_, text) = call(app, request("GET", "/metrics", "")).await;
    let counted =
        format!("halab_monitor_upstream_requests_total{{addr=\"{node}\",outcome=\"ok\"}} 3\n");
    assert!(text.as_str().unwrap().contains(&counted), "{text}");
    // The checks see the node's role a poll after it took it.
    let primary = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, status) = call(app, request("GET", "/api/status", "")).await;
            if let Some(primary) = status["store"]["primary"].as_str() {
                return primary.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the checks see a primary within 10 s");
    assert_eq!(primary, node);
}

#[tokio::test]
async fn events_stream_a_status_snapshot_at_once() {
    let lab = lab().await;
    let response = lab
        .app
        .clone()
        .oneshot(request("GET", "/api/events", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on")
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    let data = text
        .strip_prefix("event: status\ndata: ")
        .unwrap_or_else(|| panic!("a status event first: {text}"));
    let status: Value = serde_json::from_str(data.trim_end()).unwrap();
    assert!(status["nodes"].is_array(), "{status}");
    assert_eq!(status["store"]["nodes"], 1, "{status}");
}

#[tokio::test]
async fn kill_needs_the_token() {
    let lab = lab().await;
    let app = &lab.app;
    let (status, body) = call(app, request("POST", "/admin/kill?node=primary", "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&body).contains("Bearer"));
    let wrong = Request::builder()
        .method("POST")
        .uri("/admin/kill?node=primary")
        .header(header::AUTHORIZATION, "Bearer guess")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(app, wrong).await.0, StatusCode::UNAUTHORIZED);
    // The node is still there.
    assert_eq!(
        call(app, request("PUT", "/kv/alive", "yes")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn everything_down_is_503_with_a_reason() {
    // The door knows only a node nobody runs.
    let gone = format!("127.0.0.1:{}", testkit::free_port());
    let stop = CancellationToken::new();
    let board = poller::spawn(
        Vec::new(),
        settings_for_test(),
        None,
        FrameCodec::default(),
        stop.clone(),
    );
    let gateway = Gateway::new(
        vec![gone],
        FrameCodec::default(),
        Duration::from_millis(500),
    );
    let app = door(board, gateway, None);
    let (status, body) = call(&app, request("PUT", "/kv/k", "v")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&body).contains("did not answer"), "{body}");
    let (status, body) = call(&app, request("GET", "/?first=1&second=2", "")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        error_of(&body).contains("no store node is healthy"),
        "{body}"
    );
    let (status, _) = call(&app, request("POST", "/admin/kill?node=primary", "")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no token configured: refused"
    );
    stop.cancel();
}

fn settings_for_test() -> Settings {
    Settings {
        poll: Duration::from_millis(100),
        retry: Duration::from_millis(50),
        icmp_timeout: Duration::from_millis(100),
        service_timeout: Duration::from_millis(100),
        thresholds: Thresholds::default(),
    }
}
