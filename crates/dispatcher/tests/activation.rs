//! The activation protocol's edges over loopback: confirmations that come late, and a
//! dispatcher that falls silent. Hand-driven peers play the side that misbehaves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proto::udp::FrameSocket;
use proto::{Connection, Frame, FrameCodec, Message};
use tokio::net::TcpListener;
use tokio::time::Instant;

use common::*;

/// A hand-driven worker that heartbeats, says "not activated" to status checks, and confirms
/// an activation only after `delay` (well past the dispatcher's reply timeout). Counts the
/// activations it was asked for.
async fn slow_confirmer(mut conn: Connection, id: u64, delay: Duration, asked: Arc<AtomicU32>) {
    let mut heartbeat = tokio::time::interval(Duration::from_millis(100));
    let mut confirm: Option<(Instant, u64)> = None;
    loop {
        let deadline = confirm.map_or(Instant::now() + Duration::from_secs(3600), |c| c.0);
        tokio::select! {
            _ = heartbeat.tick() => conn.send(id, Message::Heartbeat).await.unwrap(),
            _ = tokio::time::sleep_until(deadline), if confirm.is_some() => {
                let (_, request) = confirm.take().unwrap();
                conn.send(id, Message::WorkerActivated { request }).await.unwrap();
            }
            frame = conn.read_frame() => match frame.unwrap().map(|f| f.message) {
                Some(Message::StatusCheck { request, .. }) => {
                    let status = Message::Status { activated: false, request };
                    conn.send(id, status).await.unwrap();
                }
                Some(Message::Activate { request, .. }) => {
                    asked.fetch_add(1, Ordering::SeqCst);
                    confirm = Some((Instant::now() + delay, request));
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// Issue 7's late confirmation: with one place, a worker that confirms after the activator
/// stopped waiting keeps its place; the other is never asked to activate as well.
#[tokio::test]
async fn a_late_confirmation_never_takes_active_past_the_limit() {
    let codec = FrameCodec::default();
    let config = dispatcher_config(&["--max-active=1", "--reply-timeout-ms=150"]);
    let (d, _d_stop) = start_dispatcher(config, codec.clone()).await;
    let asked = Arc::new(AtomicU32::new(0));
    for _ in 0..2 {
        let (id, conn) = register_by_hand(&d, &codec).await;
        let delay = Duration::from_millis(800);
        tokio::spawn(slow_confirmer(conn, id, delay, asked.clone()));
    }
    let status = wait_for(d.tcp_addr, &codec, "the late confirmation", |s| {
        s.active == 1
    })
    .await;
    assert_eq!(status.workers.iter().filter(|w| w.active).count(), 1);
    // Many more rounds (every 40 ms) while the active worker never deactivates.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "a second worker was asked to activate while the first held the only place"
    );
    assert_eq!(status_of(d.tcp_addr, &codec).await.active, 1);
}

/// A dispatcher that registers a worker and then says nothing (paused, cut off: the TCP
/// connection stays open) is given up after --dispatcher-timeout-ms, and the worker looks
/// for a dispatcher again.
#[tokio::test]
async fn a_worker_gives_up_a_silent_dispatcher_and_discovers_again() {
    let codec = FrameCodec::default();
    let mut discovery = FrameSocket::bind("127.0.0.1:0".parse().unwrap(), codec.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = listener.local_addr().unwrap();
    let config = worker_config(
        discovery.local_addr().unwrap(),
        &["--dispatcher-timeout-ms=1500"],
    );
    let (_w, _w_stop) = start_workers(config, codec.clone()).await;

    let mut discoveries = 0;
    let mut registered_at = None;
    let deadline = Instant::now() + PATIENCE;
    while discoveries < 2 {
        let (from, frame) = tokio::time::timeout_at(deadline, discovery.recv_from())
            .await
            .expect("no (second) discovery")
            .unwrap();
        let Message::Discover { nonce } = frame.unwrap().message else {
            continue;
        };
        discoveries += 1;
        if discoveries == 2 {
            break;
        }
        let welcome = Message::Welcome {
            nonce,
            worker_id: 42,
            dispatcher: tcp_addr,
        };
        discovery
            .send_to(&Frame::new(0, welcome), from)
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Connection::new(stream, codec.clone()).await.unwrap();
        let register = conn.read_frame().await.unwrap().unwrap();
        assert!(matches!(register.message, Message::Register { .. }));
        conn.send(0, Message::Registered { worker_id: 42 })
            .await
            .unwrap();
        registered_at = Some(Instant::now());
        // From here on the "dispatcher" only listens: the worker's heartbeats arrive, nothing
        // goes back. The worker must close the connection on its own.
        tokio::spawn(async move { while let Ok(Some(_)) = conn.read_frame().await {} });
    }
    let gave_up_after = registered_at.expect("registered").elapsed();
    assert!(
        gave_up_after >= Duration::from_millis(1500),
        "gave up after {gave_up_after:?}, before the timeout"
    );
}
