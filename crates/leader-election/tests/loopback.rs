//! Election nodes over loopback sockets (fixed peer lists instead of broadcast), with fast
//! timers: the leader dying and a follower leaving. Waits poll for the awaited state with a
//! generous deadline.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use leader_election::ElectionConfig;
use leader_election::daemon::{self, Running};
use proto::udp::FrameSocket;
use proto::{ClusterKey, Colour, ElectionMessage, Frame, FrameCodec, LeaderView, Message};
use testkit::{TcpRecorder, UdpRecorder, count_frames, replay_tcp, replay_udp};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    config: ElectionConfig,
}

const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster {
    nodes: Vec<(Running, CancellationToken)>,
    /// Each node's command line, to restart it with.
    args: Vec<Vec<String>>,
    codec: FrameCodec,
    /// Each node's state file lives here.
    state_dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes with ids 1..=n on 127.0.0.1, UDP ports picked by reserving then releasing.
    async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, FrameCodec::default()).await
    }

    async fn start_with(n: u64, codec: FrameCodec) -> Cluster {
        Cluster::start_overheard(n, codec, None).await
    }

    /// As [`Cluster::start_with`], with every node also broadcasting to `eavesdropper`.
    async fn start_overheard(
        n: u64,
        codec: FrameCodec,
        eavesdropper: Option<SocketAddr>,
    ) -> Cluster {
        let ports: Vec<u16> = (0..n)
            .map(|_| {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let peers = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .chain(eavesdropper.map(|e| e.to_string()))
            .collect::<Vec<_>>()
            .join(",");
        let state = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            args: Vec::new(),
            codec,
            state_dir: state,
        };
        for (i, port) in ports.iter().enumerate() {
            let state = cluster.state_dir.path().to_path_buf();
            let args: Vec<String> = vec![
                "leader-election".to_string(),
                format!("--id={}", i + 1),
                format!("--udp-listen=127.0.0.1:{port}"),
                "--listen=127.0.0.1:0".to_string(),
                format!("--peers={peers}"),
                format!(
                    "--state-file={}",
                    state.join(format!("node-{}", i + 1)).display()
                ),
                // Below the cluster's size on purpose: followers leaving are removed.
                "--min-cluster-size=3".to_string(),
                "--heartbeat-ms=100".to_string(),
                "--lease-ms=400".to_string(),
                "--leader-timeout-ms=800".to_string(),
                "--member-timeout-ms=800".to_string(),
                "--settle-ms=500".to_string(),
                "--election-timeout-ms=250".to_string(),
            ];
            let node = cluster.launch(&args).await.unwrap();
            cluster.nodes.push(node);
            cluster.args.push(args);
        }
        cluster
    }

    async fn launch(&self, args: &[String]) -> anyhow::Result<(Running, CancellationToken)> {
        let config = Args::parse_from(args).config;
        let shutdown = CancellationToken::new();
        let running = daemon::start(config, self.codec.clone(), shutdown.clone()).await?;
        Ok((running, shutdown))
    }

    /// Stops every node and waits until each has let go of its sockets.
    async fn stop_all(&mut self) {
        for (running, stop) in self.nodes.drain(..) {
            stop.cancel();
            running.join().await;
        }
    }

    /// Node `id` started again with its command line, so its state file.
    async fn relaunch(&self, id: u64) -> (Running, CancellationToken) {
        self.launch(&self.args[id as usize - 1]).await.unwrap()
    }

    fn live(&self) -> impl Iterator<Item = &Running> {
        self.nodes
            .iter()
            .filter(|(_, stop)| !stop.is_cancelled())
            .map(|(r, _)| r)
    }

    /// The leader's id once exactly one live node leads, every live node follows it, and the
    /// leader colours exactly the live nodes with ⌈n/3⌉ green.
    fn converged(&self) -> Option<u64> {
        let statuses: Vec<_> = self.live().map(|r| r.node.status()).collect();
        let leaders: Vec<_> = statuses.iter().filter(|s| s.state == "leader").collect();
        let [leader] = leaders[..] else { return None };
        let live: Vec<u64> = statuses.iter().map(|s| s.id).collect();
        let mut coloured: Vec<u64> = leader.members.iter().map(|m| m.id).collect();
        coloured.sort();
        let greens = leader
            .members
            .iter()
            .filter(|m| m.colour == Some(Colour::Green))
            .count();
        let all_follow = statuses
            .iter()
            .all(|s| s.leader == Some(leader.id) && s.colour.is_some());
        (all_follow && coloured == live && greens == live.len().div_ceil(3)).then_some(leader.id)
    }

    async fn wait_converged(&self, what: &str) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(leader) = self.converged() {
                return leader;
            }
            let states: Vec<_> = self
                .live()
                .map(|r| r.node.status())
                .map(|s| (s.id, s.state, s.leader, s.colour))
                .collect();
            assert!(
                Instant::now() < deadline,
                "no convergence ({what}): {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&self, id: u64) {
        let (_, stop) = &self.nodes[id as usize - 1];
        stop.cancel();
    }
}

#[tokio::test]
async fn the_highest_node_leads_and_a_third_is_green() {
    let cluster = Cluster::start(5).await;
    assert_eq!(cluster.wait_converged("start").await, 5);
}

#[tokio::test]
async fn when_the_leader_dies_the_next_highest_leads_and_recolours() {
    let cluster = Cluster::start(5).await;
    assert_eq!(cluster.wait_converged("start").await, 5);
    cluster.stop(5).await;
    assert_eq!(cluster.wait_converged("after the leader died").await, 4);
}

#[tokio::test]
async fn a_follower_leaving_is_recoloured_out() {
    let cluster = Cluster::start(5).await;
    assert_eq!(cluster.wait_converged("start").await, 5);
    cluster.stop(1).await;
    assert_eq!(cluster.wait_converged("after a follower left").await, 5);
    let leader = cluster.live().find(|r| r.id == 5).unwrap().node.status();
    assert!(
        leader.members.iter().all(|m| m.id != 1),
        "the departed follower is still coloured"
    );
}

/// With a cluster key, a process without it cannot claim leadership (a heartbeat from a huge
/// term), and garbage on either port is dropped: the cluster keeps its leader and its term.
#[tokio::test]
async fn intruders_and_garbage_cannot_move_a_keyed_cluster() {
    let key = ClusterKey::new("election-secret");
    let cluster = Cluster::start_with(3, FrameCodec::new(1 << 20, Some(key))).await;
    assert_eq!(cluster.wait_converged("start").await, 3);
    let term_before = cluster.live().map(|r| r.node.status().term).max().unwrap();

    let mut intruder =
        FrameSocket::bind("127.0.0.1:0".parse().unwrap(), FrameCodec::default()).unwrap();
    let claim = ElectionMessage::Heartbeat {
        term: 1_000,
        seq: 0,
        view: LeaderView {
            tcp_port: 1,
            membership: vec![99],
            version: 1_000,
            colours: vec![],
        },
    };
    let garbage = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for node in cluster.live() {
        for _ in 0..5 {
            intruder
                .send_to(
                    &Frame::new(99, Message::Election(claim.clone())),
                    node.udp_addr,
                )
                .await
                .unwrap();
            garbage
                .send_to(b"\x00\x00\x00\x03abc", node.udp_addr)
                .await
                .unwrap();
        }
        let mut tcp = tokio::net::TcpStream::connect(node.tcp_addr).await.unwrap();
        tcp.write_all(&[0xff; 64]).await.unwrap();
    }
    // Nothing answers the intruder: it is not one of us.
    let answer = tokio::time::timeout(Duration::from_millis(500), intruder.recv_from()).await;
    assert!(
        answer.is_err(),
        "a node answered an unauthenticated peer: {answer:?}"
    );
    assert_eq!(cluster.wait_converged("after the intrusion").await, 3);
    for node in cluster.live() {
        let status = node.node.status();
        assert_eq!(
            status.term, term_before,
            "the intruder's term was adopted: {status:?}"
        );
        assert!(!status.membership.contains(&99));
    }
}

fn keyed() -> FrameCodec {
    FrameCodec::new(1 << 20, Some(ClusterKey::new("election-secret")))
}

/// The attack of issue 6: the leader's signed datagrams captured off the wire, the leader
/// killed, and the captured bytes sent again every 50 ms. Each is refused as a repeat, and the
/// followers elect a new leader while the replay goes on.
#[tokio::test]
async fn a_dead_leaders_captured_heartbeats_replayed_cannot_hold_off_an_election() {
    let recorder = UdpRecorder::start().await;
    let cluster = Cluster::start_overheard(3, keyed(), Some(recorder.addr)).await;
    assert_eq!(cluster.wait_converged("start").await, 3);
    let leader_addr = cluster.live().find(|r| r.id == 3).unwrap().udp_addr;
    let deadline = Instant::now() + PATIENCE;
    while recorder.from(leader_addr).len() < 10 {
        assert!(
            Instant::now() < deadline,
            "nothing captured from the leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop(3).await;
    let captured = recorder.from(leader_addr);
    let followers: Vec<SocketAddr> = cluster.live().map(|r| r.udp_addr).collect();

    let deadline = Instant::now() + PATIENCE;
    while cluster.converged() != Some(2) {
        assert!(
            Instant::now() < deadline,
            "no new leader while the replay ran"
        );
        replay_udp(&captured, &followers).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in cluster.live() {
        let status = node.node.status();
        assert!(
            status.replayed >= captured.len() as u64,
            "node {} counted {} replays of {} sent",
            status.id,
            status.replayed,
            captured.len()
        );
        assert_eq!(status.auth_failures, 0);
    }
}

/// A registration and a status request recorded on their way to a node and sent again on a
/// new connection: the node answers neither, counts them, and keeps serving.
#[tokio::test]
async fn recorded_tcp_requests_replayed_are_refused() {
    let codec = keyed();
    let cluster = Cluster::start_with(3, codec.clone()).await;
    assert_eq!(cluster.wait_converged("start").await, 3);
    let leader = cluster.live().find(|r| r.id == 3).unwrap();
    let recorder = TcpRecorder::start(leader.tcp_addr).await;

    // A legitimate status request through the recorder is answered.
    let status =
        halab_runtime::control::query_status(recorder.addr, codec.clone(), Duration::from_secs(5))
            .await
            .unwrap();
    assert!(matches!(status, Message::ElectionStatus(_)));
    // And a legitimate registration (from a node the leader already counts).
    let mut conn = proto::Connection::connect(recorder.addr, codec.clone())
        .await
        .unwrap();
    conn.send(
        2,
        Message::Election(ElectionMessage::Join { term: 1, seq: 0 }),
    )
    .await
    .unwrap();
    let joined = conn.read_frame().await.unwrap().unwrap();
    assert!(matches!(
        joined.message,
        Message::Election(ElectionMessage::Joined { .. })
    ));
    drop(conn);

    let recorded = recorder.recorded();
    assert_eq!(recorded.len(), 2);
    for bytes in &recorded {
        let answer = replay_tcp(leader.tcp_addr, bytes, Duration::from_secs(2)).await;
        // The node's own handshake comes back, and nothing else.
        assert_eq!(count_frames(&answer), 1, "a replayed request was answered");
    }
    let counted = leader.node.status().auth_failures;
    assert!(counted >= 2, "replays counted: {counted}");
    assert_eq!(cluster.wait_converged("after the replays").await, 3);
    let status =
        halab_runtime::control::query_status(leader.tcp_addr, codec, Duration::from_secs(5))
            .await
            .unwrap();
    assert!(matches!(status, Message::ElectionStatus(_)));
}

/// A restarted node remembers its term and the agreed membership, and the cluster, all
/// restarted, elects the same leader again.
#[tokio::test]
async fn restarted_nodes_remember_their_term_and_membership() {
    let mut cluster = Cluster::start(5).await;
    assert_eq!(cluster.wait_converged("start").await, 5);
    let before = cluster.nodes[1].0.node.status();
    cluster.stop_all().await;
    let mut alone = Some(cluster.relaunch(2).await);
    // Alone, it has heard nobody: what it shows is what it saved.
    let after = alone.as_ref().unwrap().0.node.status();
    assert_eq!(after.state, "init");
    assert_eq!(after.term, before.term, "the term was saved");
    assert_eq!(
        after.membership, before.membership,
        "the agreed membership was saved"
    );
    assert_eq!(after.quorum, 3);
    for id in 1..=5 {
        let node = match id {
            2 => alone.take().unwrap(),
            _ => cluster.relaunch(id).await,
        };
        cluster.nodes.push(node);
    }
    assert_eq!(cluster.wait_converged("after the restart").await, 5);
}

#[tokio::test]
async fn a_state_file_of_another_node_is_refused() {
    let cluster = Cluster::start(3).await;
    let mut args = cluster.args[0].clone();
    args[1] = "--id=9".to_string();
    let error = cluster.launch(&args).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("belongs to node 1"),
        "{error:#}"
    );
}

/// `remove-member` on the leader takes a dead member out even below the minimum size (three
/// nodes, minimum three: the leader would never remove it for silence); a follower refuses it.
#[tokio::test]
async fn the_operator_removes_a_dead_member_through_the_leader() {
    let cluster = Cluster::start(3).await;
    assert_eq!(cluster.wait_converged("start").await, 3);
    cluster.stop(1).await;
    let ask = |addr, id| {
        halab_runtime::control::query(
            addr,
            cluster.codec.clone(),
            Message::RemoveMember { id },
            Duration::from_secs(5),
        )
    };
    let follower = cluster.nodes[1].0.tcp_addr;
    let refused = ask(follower, 1).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("not the leader"),
        "{refused:#}"
    );

    let leader = cluster.nodes[2].0.tcp_addr;
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        // Retried while the previous change (if any) is being acked.
        match ask(leader, 1).await {
            Ok(Message::ElectionStatus(status)) => break status,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.membership, vec![2, 3]);
    assert_eq!(status.quorum, 2);
    assert_eq!(cluster.wait_converged("without node 1").await, 3);
    let error = ask(leader, 1).await.unwrap_err();
    assert!(format!("{error:#}").contains("not a member"), "{error:#}");
}
