//! The dispatcher and real workers over loopback sockets, with fast timers. Every wait is a
//! poll for an event with a generous deadline; no assertion depends on a tight timing.

mod common;

use bytes::{BufMut, BytesMut};
use proto::{ClusterKey, FrameCodec, Message};
use std::time::Duration;
use testkit::{TcpRecorder, count_frames, replay_tcp};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use common::*;

#[tokio::test]
async fn workers_are_activated_by_weight_within_the_fairness_bound() {
    let codec = FrameCodec::default();
    let (d, d_stop) = start_dispatcher(dispatcher_config(&["--max-active=2"]), codec.clone()).await;
    let mut fleets = Vec::new();
    for weight in ["1", "2", "4"] {
        let config = worker_config(
            d.discovery_addr,
            &["--count=2", &format!("--weight={weight}")],
        );
        fleets.push(start_workers(config, codec.clone()).await);
    }
    wait_for(d.tcp_addr, &codec, "six registered workers", |s| {
        s.workers.len() == 6
    })
    .await;
    // Each worker process reports its workers on its status port, with the ids they were given
    // (polled: the dispatcher lists a worker just before the worker reads its confirmation).
    let (fleet, _) = &fleets[2];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = halab_runtime::control::query_status(
            fleet.status_addr,
            codec.clone(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let Message::WorkerStatus(board) = answer else {
            panic!("not a worker status: {answer:?}")
        };
        assert_eq!(board.workers.len(), 2);
        assert!(board.workers.iter().all(|w| w.weight == 4), "{board:?}");
        if board
            .workers
            .iter()
            .all(|w| w.id.is_some() && w.registrations == 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers never reported their ids: {board:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = wait_for(d.tcp_addr, &codec, "70 activations", |s| {
        assert!(
            s.active <= 2,
            "more workers active than --max-active: {s:#?}"
        );
        assert!(
            s.fairness_gap <= s.fairness_bound + 1e-9,
            "gap above the bound: {s:#?}"
        );
        s.total_activations >= 70
    })
    .await;
    for w in &status.workers {
        assert!(w.activations > 0, "worker {} never activated", w.id);
    }
    let by_weight = |weight: u32| -> u64 {
        status
            .workers
            .iter()
            .filter(|w| w.weight == weight)
            .map(|w| w.activations)
            .sum()
    };
    assert!(
        by_weight(4) > by_weight(2) && by_weight(2) > by_weight(1),
        "activations do not follow the weights: {status:#?}"
    );
    d_stop.cancel();
    for (_, stop) in fleets {
        stop.cancel();
    }
    d.join().await;
}

#[tokio::test]
async fn a_worker_that_shuts_down_is_removed_at_once() {
    let codec = FrameCodec::default();
    let (d, _d_stop) = start_dispatcher(
        dispatcher_config(&["--silence-timeout-ms=60000"]),
        codec.clone(),
    )
    .await;
    let (w, w_stop) = start_workers(worker_config(d.discovery_addr, &[]), codec.clone()).await;
    wait_for(d.tcp_addr, &codec, "a registered worker", |s| {
        s.workers.len() == 1
    })
    .await;
    w_stop.cancel();
    w.join().await;
    // Far sooner than the 60 s silence timeout: the worker said it was leaving.
    wait_for(d.tcp_addr, &codec, "the worker's removal", |s| {
        s.workers.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_closed_connection_removes_the_worker_at_once() {
    let codec = FrameCodec::default();
    let (d, _d_stop) = start_dispatcher(
        dispatcher_config(&["--silence-timeout-ms=60000"]),
        codec.clone(),
    )
    .await;
    let (id, conn) = register_by_hand(&d, &codec).await;
    let status = status_of(d.tcp_addr, &codec).await;
    assert_eq!(
        status.workers.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![id]
    );
    drop(conn);
    wait_for(d.tcp_addr, &codec, "the worker's removal", |s| {
        s.workers.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_silent_worker_is_removed_after_the_silence_timeout_and_not_before() {
    let codec = FrameCodec::default();
    let (d, _d_stop) = start_dispatcher(
        dispatcher_config(&["--silence-timeout-ms=1000"]),
        codec.clone(),
    )
    .await;
    let (_id, _conn) = register_by_hand(&d, &codec).await;
    let registered_at = Instant::now();
    // The connection stays open but says nothing, like a paused container.
    wait_for(d.tcp_addr, &codec, "the silent worker's removal", |s| {
        s.workers.is_empty()
    })
    .await;
    assert!(
        registered_at.elapsed() >= Duration::from_millis(1000),
        "removed before the silence timeout"
    );
}

#[tokio::test]
async fn self_terminating_workers_leave_the_table() {
    let codec = FrameCodec::default();
    let (d, _d_stop) = start_dispatcher(dispatcher_config(&[]), codec.clone()).await;
    let (w, _w_stop) = start_workers(
        worker_config(
            d.discovery_addr,
            &["--count=3", "--terminate-probability=1"],
        ),
        codec.clone(),
    )
    .await;
    // Each worker terminates after its first deactivation, so the process ends by itself.
    let board = w.board.clone();
    tokio::time::timeout(PATIENCE, w.join())
        .await
        .expect("workers did not terminate");
    wait_for(d.tcp_addr, &codec, "an empty table", |s| {
        s.workers.is_empty()
    })
    .await;
    // What the workers say of themselves: each was activated exactly once, then left.
    let board = board.snapshot();
    assert!(
        board
            .workers
            .iter()
            .all(|t| t.activations == 1 && t.state == "terminated"),
        "{board:?}"
    );
}

#[tokio::test]
async fn garbage_is_logged_and_dropped_and_the_dispatcher_keeps_serving() {
    let codec = FrameCodec::new(4096, None);
    let (d, _d_stop) = start_dispatcher(dispatcher_config(&[]), codec.clone()).await;

    let mut garbage = TcpStream::connect(d.tcp_addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut oversized = TcpStream::connect(d.tcp_addr).await.unwrap();
    let mut prefix = BytesMut::new();
    prefix.put_u32(1 << 30);
    oversized.write_all(&prefix).await.unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"\x00\x00\x00\x05hello", d.discovery_addr)
        .await
        .unwrap();
    udp.send_to(&[0xff; 300], d.discovery_addr).await.unwrap();

    let status = wait_for(d.tcp_addr, &codec, "four dropped frames", |s| {
        s.bad_frames >= 4
    })
    .await;
    assert_eq!(status.auth_failures, 0);
    // Still serving: a real worker registers and gets activated.
    let (_w, _w_stop) = start_workers(worker_config(d.discovery_addr, &[]), codec.clone()).await;
    wait_for(d.tcp_addr, &codec, "an activation after the garbage", |s| {
        s.total_activations >= 1
    })
    .await;
}

#[tokio::test]
async fn with_a_cluster_key_unauthenticated_peers_cannot_register() {
    let keyed = FrameCodec::new(1 << 20, Some(ClusterKey::new("lab-secret")));
    let wrong = FrameCodec::new(1 << 20, Some(ClusterKey::new("guess")));
    let plain = FrameCodec::default();
    let (d, _d_stop) = start_dispatcher(dispatcher_config(&[]), keyed.clone()).await;

    let (intruders, _stop_a) = start_workers(worker_config(d.discovery_addr, &[]), plain).await;
    let (guessers, _stop_b) = start_workers(worker_config(d.discovery_addr, &[]), wrong).await;
    let (members, _stop_c) =
        start_workers(worker_config(d.discovery_addr, &[]), keyed.clone()).await;
    let status = wait_for(
        d.tcp_addr,
        &keyed,
        "the keyed worker and dropped intruders",
        |s| s.workers.len() == 1 && s.auth_failures >= 2,
    )
    .await;
    let member = members.board.snapshot().workers[0].id;
    assert_eq!(
        member,
        Some(status.workers[0].id),
        "the one registered worker is the keyed one"
    );
    for board in [intruders.board.snapshot(), guessers.board.snapshot()] {
        assert!(
            board.workers.iter().all(|w| w.id.is_none()),
            "an unauthenticated worker got an id: {board:?}"
        );
    }
    // Status requests need the key too.
    let refused = halab_runtime::control::query_status(
        d.tcp_addr,
        FrameCodec::default(),
        Duration::from_secs(2),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn workers_register_again_with_a_restarted_dispatcher() {
    let codec = FrameCodec::default();
    let (first, stop_first) = start_dispatcher(dispatcher_config(&[]), codec.clone()).await;
    let (tcp, udp) = (first.tcp_addr, first.discovery_addr);
    let (w, _w_stop) = start_workers(worker_config(udp, &["--count=4"]), codec.clone()).await;
    let before = wait_for(tcp, &codec, "four workers", |s| s.workers.len() == 4).await;
    stop_first.cancel();
    first.join().await;

    let config = dispatcher_config(&[
        &format!("--listen={tcp}"),
        &format!("--discovery-listen={udp}"),
    ]);
    let (second, _stop_second) = start_dispatcher(config, codec.clone()).await;
    let after = wait_for(second.tcp_addr, &codec, "the four workers back", |s| {
        s.workers.len() == 4
    })
    .await;
    let board = w.board.snapshot();
    let table: std::collections::BTreeSet<u64> = after.workers.iter().map(|r| r.id).collect();
    let told: std::collections::BTreeSet<u64> = board.workers.iter().filter_map(|t| t.id).collect();
    assert_eq!(
        table, told,
        "the new table and the workers agree on the ids"
    );
    let old: std::collections::BTreeSet<u64> = before.workers.iter().map(|r| r.id).collect();
    assert!(
        table.is_disjoint(&old),
        "a restarted dispatcher handed out an id its predecessor had used: {old:?} / {table:?}"
    );
    assert!(
        board.workers.iter().all(|t| t.registrations == 2),
        "every worker registered twice: {board:?}"
    );
}

#[tokio::test]
async fn one_dispatcher_holds_a_thousand_workers() {
    let codec = FrameCodec::default();
    let (d, _d_stop) = start_dispatcher(
        dispatcher_config(&["--silence-timeout-ms=10000"]),
        codec.clone(),
    )
    .await;
    let config = worker_config(
        d.discovery_addr,
        &[
            "--count=1000",
            "--heartbeat-interval-ms=1000",
            "--discovery-backoff-ms=200",
            "--discovery-backoff-max-ms=1000",
        ],
    );
    let (w, _w_stop) = start_workers(config, codec.clone()).await;
    // A loaded machine (the whole suite at once) can lose a burst of SYNs or datagrams; the
    // retries that recover them take seconds, so this wait is longer than the others.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = status_of(d.tcp_addr, &codec).await;
        if status.worker_count == 1000 {
            break status;
        }
        if Instant::now() > deadline {
            let board = w.board.snapshot();
            let stuck: Vec<_> = board
                .workers
                .iter()
                .filter(|t| t.state != "registered" && t.state != "active")
                .collect();
            panic!(
                "{} of 1000 workers after 90 s; the others say: {stuck:#?}",
                status.worker_count
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.workers.len(),
        100,
        "a plain status request gets the first rows"
    );

    // The whole table, page by page, each page in one frame.
    let mut ids = Vec::new();
    while ids.len() < 1000 {
        let request = Message::StatusPage {
            offset: ids.len() as u64,
            limit: 300,
        };
        let Message::DispatcherStatus(page) =
            halab_runtime::control::query(d.tcp_addr, codec.clone(), request, PATIENCE)
                .await
                .unwrap()
        else {
            panic!("not a dispatcher status")
        };
        assert!(
            !page.workers.is_empty(),
            "a page came back empty at {}",
            ids.len()
        );
        ids.extend(page.workers.iter().map(|w| w.id));
    }
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!((ids.len(), distinct.len()), (1000, 1000));
}

/// Connections recorded on their way to the dispatcher (a worker's registration and heartbeats,
/// a status request) and to a worker's status port, sent again on new connections: nothing is
/// answered but the handshake, each is counted, no phantom worker appears, and activations go on.
#[tokio::test]
async fn recorded_connections_replayed_are_refused() {
    let codec = FrameCodec::new(1 << 20, Some(ClusterKey::new("lab-secret")));
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let recorder = TcpRecorder::start(listen).await;
    let config = dispatcher_config(&[
        &format!("--listen={listen}"),
        &format!("--advertise={}", recorder.addr),
    ]);
    let (d, _d_stop) = start_dispatcher(config, codec.clone()).await;
    let (w, _w_stop) = start_workers(worker_config(d.discovery_addr, &[]), codec.clone()).await;
    wait_for(
        d.tcp_addr,
        &codec,
        "the worker active through the recorder",
        |s| s.workers.len() == 1 && s.total_activations >= 2,
    )
    .await;
    status_of(recorder.addr, &codec).await;
    let worker_recorder = TcpRecorder::start(w.status_addr).await;
    halab_runtime::control::query_status(
        worker_recorder.addr,
        codec.clone(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    let to_dispatcher = recorder.recorded();
    assert_eq!(
        to_dispatcher.len(),
        2,
        "the worker's connection and a status request"
    );
    let before = status_of(d.tcp_addr, &codec).await;
    for bytes in &to_dispatcher {
        let answer = replay_tcp(d.tcp_addr, bytes, Duration::from_secs(2)).await;
        assert_eq!(count_frames(&answer), 1, "a replay was answered");
    }
    for bytes in worker_recorder.recorded() {
        let answer = replay_tcp(w.status_addr, &bytes, Duration::from_secs(2)).await;
        assert_eq!(
            count_frames(&answer),
            1,
            "a replay to the worker was answered"
        );
    }
    let after = wait_for(d.tcp_addr, &codec, "activations after the replays", |s| {
        s.total_activations >= before.total_activations + 2
    })
    .await;
    assert_eq!(
        after.auth_failures,
        before.auth_failures + to_dispatcher.len() as u64
    );
    assert_eq!(
        after.workers.len(),
        1,
        "a replay registered a phantom worker"
    );
    assert_eq!(after.workers[0].id, before.workers[0].id);
}
