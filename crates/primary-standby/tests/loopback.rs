//! Store daemons over loopback sockets, each with its own data dir and one shared witness dir:
//! replication before acknowledgement, failover when the primary stops, retries applied once,
//! restarts that lose nothing, and bad input refused and counted.

use std::time::Duration;

use primary_standby::client::ClientError;
use primary_standby::load::{self, LoadPlan};
use primary_standby::testing::{Cluster, SNAPSHOT_EVERY};
use primary_standby::wal::Wal;
use proto::{ClusterKey, Connection, FrameCodec, Message, Op, Reply, StoreMessage, Write};

#[tokio::test]
async fn a_write_is_on_every_in_sync_standby_when_it_is_acknowledged() {
    let cluster = Cluster::start(3, FrameCodec::default()).await;
    let primary = cluster.primary_with(2).await;
    let mut client = cluster.client();
    let checker = cluster.client();
    for i in 0..50 {
        let seq = client.set(&format!("k{i}"), "v").await.unwrap();
        for (index, node) in cluster.nodes.iter().enumerate() {
            if index == primary {
                continue;
            }
            let status = checker.status(&node.addr).await.unwrap();
            assert!(
                status.last_seq >= seq,
                "entry {seq} acknowledged but standby {} holds only {}",
                node.id,
                status.last_seq
            );
        }
    }
    // Every node's own map catches up with the primary's.
    for node in &cluster.nodes {
        let mut keys = 0;
        for _ in 0..100 {
            if let Reply::State { pairs, .. } = checker.ask(&node.addr, Op::State).await.unwrap() {
                keys = pairs.len();
            }
            if keys == 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(keys, 50, "node {}'s map", node.id);
    }
}

#[tokio::test]
async fn a_stopped_primary_is_replaced_and_no_acknowledged_write_is_lost() {
    let mut cluster = Cluster::start(3, FrameCodec::default()).await;
    let primary = cluster.primary_with(2).await;
    let plan = LoadPlan {
        nodes: cluster.addrs(),
        clients: 4,
        rate: 400,
        duration: Duration::from_secs(3),
        prefix: "failover".into(),
        verify: true,
        watch: Some(Duration::from_millis(20)),
        redis: None,
    };
    let load = tokio::spawn(load::run(plan, cluster.codec.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop(primary).await;
    let report = load.await.unwrap().unwrap();
    assert_eq!(report.lost, 0, "{report:?}");
    assert!(report.acked > 0, "{report:?}");
    let new = cluster.primary_with(1).await;
    assert_ne!(new, primary);
    // Writes go on with the new primary.
    cluster.client().set("after", "failover").await.unwrap();
    let status = cluster
        .client()
        .status(&cluster.nodes[new].addr)
        .await
        .unwrap();
    assert_eq!(status.epoch, 2, "{status:?}");
    // The old primary comes back as a standby and catches up.
    cluster.run(primary).await;
    let again = cluster.primary_with(2).await;
    assert_eq!(again, new);
    let old = cluster
        .client()
        .status(&cluster.nodes[primary].addr)
        .await
        .unwrap();
    assert_eq!(old.role, "standby", "{old:?}");
}

#[tokio::test]
async fn restarted_nodes_lose_nothing_they_acknowledged() {
    let mut cluster = Cluster::start(3, FrameCodec::default()).await;
    cluster.primary_with(2).await;
    let mut client = cluster.client();
    for i in 0..100 {
        client
            .set(&format!("k{i}"), &format!("v{i}"))
            .await
            .unwrap();
    }
    for index in 0..3 {
        cluster.stop(index).await;
    }
    // Each data dir holds a snapshot and only the log after it.
    for node in &cluster.nodes {
        let (_, recovered) = Wal::open(&node.data, node.id).unwrap();
        let snapshot = recovered.store.applied();
        assert!(
            snapshot >= 2 * SNAPSHOT_EVERY,
            "node {}: snapshot at {snapshot}",
            node.id
        );
        assert!(
            recovered.entries.len() < 2 * SNAPSHOT_EVERY as usize,
            "node {}: {} entries in the log after the snapshot at {snapshot}",
            node.id,
            recovered.entries.len()
        );
    }
    for index in 0..3 {
        cluster.run(index).await;
    }
    let mut client = cluster.client();
    for i in 0..100 {
        assert_eq!(
            client.get(&format!("k{i}")).await.unwrap(),
            Some(format!("v{i}"))
        );
    }
}

/// The data dir of a node is emptied while it is down (a volume lost): when it starts again
/// it is never the one that takes over, and it is back in sync after catching up.
#[tokio::test]
async fn a_node_whose_data_dir_was_emptied_is_never_promoted_on_it() {
    let mut cluster = Cluster::start(3, FrameCodec::default()).await;
    let primary = cluster.primary_with(2).await;
    let mut client = cluster.client();
    for i in 0..50 {
        client.set(&format!("k{i}"), "v").await.unwrap();
    }
    // The primary itself, emptied and started again at once: it resigns, a standby takes over.
    cluster.stop(primary).await;
    std::fs::remove_dir_all(&cluster.nodes[primary].data).unwrap();
    cluster.run(primary).await;
    let new = cluster.primary_with(1).await;
    assert_ne!(new, primary, "the emptied node took the primaryship again");
    let mut client = cluster.client();
    for i in 0..50 {
        assert_eq!(
            client.get(&format!("k{i}")).await.unwrap().as_deref(),
            Some("v")
        );
    }
    // Both others in sync again once the emptied one has caught up.
    assert_eq!(cluster.primary_with(2).await, new);
    let status = client.status(&cluster.nodes[primary].addr).await.unwrap();
    assert_eq!(status.role, "standby", "{status:?}");
    assert!(
        status.alerts.iter().any(|a| a.contains("data dir is new")),
        "{status:?}"
    );
}

async fn raw_request(conn: &mut Connection, client: u64, request: u64, op: Op) -> Reply {
    conn.send(
        0,
        Message::Store(StoreMessage::Request {
            client,
            request,
            op,
        }),
    )
    .await
    .unwrap();
    match conn.read_frame().await.unwrap().unwrap().message {
        Message::Store(StoreMessage::Reply { reply, .. }) => reply,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_write_is_applied_once() {
    let cluster = Cluster::start(3, FrameCodec::default()).await;
    let primary = cluster.primary_with(2).await;
    let addr = cluster.nodes[primary].addr.parse().unwrap();
    let mut conn = Connection::connect(addr, FrameCodec::default())
        .await
        .unwrap();
    let set = |value: &str| {
        Op::Write(Write::Set {
            key: "k".into(),
            value: value.into(),
        })
    };
    let first = raw_request(&mut conn, 7, 1, set("first")).await;
    let retry = raw_request(&mut conn, 7, 1, set("first")).await;
    assert_eq!(first, retry, "the retry is answered with the first's entry");
    let Reply::Written { seq } = first else {
        panic!("{first:?}")
    };
    let next = raw_request(&mut conn, 7, 2, set("second")).await;
    assert_eq!(next, Reply::Written { seq: seq + 1 });
    // An older request than the last is refused, not applied.
    let stale = raw_request(&mut conn, 7, 1, set("again")).await;
    assert!(matches!(stale, Reply::Invalid { .. }), "{stale:?}");
    let status = cluster
        .client()
        .status(&cluster.nodes[primary].addr)
        .await
        .unwrap();
    assert_eq!(status.last_seq, seq + 1, "{status:?}");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason_and_counted() {
    let key = ClusterKey::new("lab-key");
    let codec = FrameCodec::new(proto::DEFAULT_MAX_FRAME_LEN, Some(key));
    let cluster = Cluster::start(3, codec.clone()).await;
    let primary = cluster.primary_with(2).await;
    let addr = &cluster.nodes[primary].addr;
    let mut client = cluster.client();
    let big = "x".repeat(20_000);
    match client.set("k", &big).await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("over the limit"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Garbage and frames without the key, on the client port and on the link port.
    let socket: std::net::SocketAddr = addr.parse().unwrap();
    let link: std::net::SocketAddr = format!("127.0.0.1:{}", cluster.nodes[primary].link_port)
        .parse()
        .unwrap();
    for target in [socket, link] {
        testkit::replay_tcp(target, b"\x00\x00\x00\x05hello", Duration::from_millis(300)).await;
        // Without the key the handshake is dropped: the connection closes, nothing is answered.
        if let Ok(mut unkeyed) = Connection::connect(target, FrameCodec::default()).await {
            let _ = unkeyed.send(0, Message::StatusRequest).await;
            let answer = tokio::time::timeout(Duration::from_secs(2), unkeyed.read_frame()).await;
            assert!(
                matches!(answer, Ok(Ok(None)) | Ok(Err(_))),
                "an unkeyed peer got {answer:?}"
            );
        }
    }
    let status = client.status(addr).await.unwrap();
    assert!(status.bad_frames >= 2, "{status:?}");
    assert!(status.auth_failures >= 2, "{status:?}");
    // Kill without the token is refused, and nothing else happened.
    match client
        .ask(
            addr,
            Op::Kill {
                token: "guess".into(),
            },
        )
        .await
        .unwrap()
    {
        Reply::Invalid { reason } => assert_eq!(reason, "wrong admin token"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.get("k").await.unwrap(), None);
    assert_eq!(client.status(addr).await.unwrap().role, "primary");
}
