//! The harness the dispatcher's integration tests share: configs with fast timers, started
//! daemons, and status polling.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dispatcher::DispatcherConfig;
use proto::udp::FrameSocket;
use proto::{Connection, DispatcherStatus, Frame, FrameCodec, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use worker::WorkerConfig;

#[derive(Parser)]
#[command(args_override_self = true)]
pub struct DispatcherArgs {
    #[command(flatten)]
    pub config: DispatcherConfig,
}

#[derive(Parser)]
#[command(args_override_self = true)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: WorkerConfig,
}

pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn dispatcher_config(extra: &[&str]) -> DispatcherConfig {
    let mut args = vec![
        "dispatcher",
        "--listen=127.0.0.1:0",
        "--discovery-listen=127.0.0.1:0",
        "--activation-interval-ms=40",
        "--silence-timeout-ms=1000",
        "--reply-timeout-ms=500",
        "--expected-activation-ms=300",
    ];
    args.extend_from_slice(extra);
    DispatcherArgs::parse_from(args).config
}

pub fn worker_config(discovery: SocketAddr, extra: &[&str]) -> WorkerConfig {
    let target = format!("--discovery-target={discovery}");
    let mut args = vec![
        "worker",
        "--status-addr=127.0.0.1:0",
        "--report-max-interval-ms=60",
        "--heartbeat-interval-ms=100",
        "--discovery-backoff-ms=50",
        "--discovery-backoff-max-ms=200",
        "--terminate-probability=0",
        &target,
    ];
    args.extend_from_slice(extra);
    WorkerArgs::parse_from(args).config
}

pub async fn start_dispatcher(
    config: DispatcherConfig,
    codec: FrameCodec,
) -> (dispatcher::Running, CancellationToken) {
    let shutdown = CancellationToken::new();
    let running = dispatcher::start(config, codec, shutdown.clone())
        .await
        .unwrap();
    (running, shutdown)
}

pub async fn start_workers(
    config: WorkerConfig,
    codec: FrameCodec,
) -> (worker::Running, CancellationToken) {
    let shutdown = CancellationToken::new();
    let running = worker::start(config, codec, shutdown.clone())
        .await
        .unwrap();
    (running, shutdown)
}

/// Polls the dispatcher's status over its TCP port until `done` holds.
pub async fn wait_for(
    addr: SocketAddr,
    codec: &FrameCodec,
    what: &str,
    done: impl Fn(&DispatcherStatus) -> bool,
) -> DispatcherStatus {
    wait_longer_for(addr, codec, what, PATIENCE, done).await
}

pub async fn wait_longer_for(
    addr: SocketAddr,
    codec: &FrameCodec,
    what: &str,
    patience: Duration,
    done: impl Fn(&DispatcherStatus) -> bool,
) -> DispatcherStatus {
    let deadline = Instant::now() + patience;
    loop {
        let status = status_of(addr, codec).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn status_of(addr: SocketAddr, codec: &FrameCodec) -> DispatcherStatus {
    match halab_runtime::control::query_status(addr, codec.clone(), Duration::from_secs(5))
        .await
        .unwrap()
    {
        Message::DispatcherStatus(status) => status,
        other => panic!("not a dispatcher status: {other:?}"),
    }
}

/// Registers a hand-driven worker: discover over UDP, then register over TCP.
pub async fn register_by_hand(d: &dispatcher::Running, codec: &FrameCodec) -> (u64, Connection) {
    let mut socket = FrameSocket::bind("127.0.0.1:0".parse().unwrap(), codec.clone()).unwrap();
    socket
        .send_to(
            &Frame::new(0, Message::Discover { nonce: 7 }),
            d.discovery_addr,
        )
        .await
        .unwrap();
    let (_, reply) = tokio::time::timeout(PATIENCE, socket.recv_from())
        .await
        .unwrap()
        .unwrap();
    let Message::Welcome {
        worker_id,
        dispatcher,
        ..
    } = reply.unwrap().message
    else {
        panic!("expected Welcome")
    };
    assert_eq!(
        dispatcher, d.tcp_addr,
        "the dispatcher advertises the address it listens on"
    );
    let mut conn = Connection::connect(dispatcher, codec.clone())
        .await
        .unwrap();
    conn.send(
        worker_id,
        Message::Register {
            weight: 3,
            heartbeat_ms: 100,
        },
    )
    .await
    .unwrap();
    let answer = conn.read_frame().await.unwrap().unwrap();
    assert_eq!(answer.message, Message::Registered { worker_id });
    (worker_id, conn)
}
