//! The I/O edges of an election node: one driver task owns the UDP socket and feeds the
//! [`Node`] ticks and datagrams, carrying out what it returns; a TCP server takes
//! registrations (on the leader) and status requests; a short task per registration.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use halab_runtime::Rejections;
use halab_runtime::accept::Acceptor;
use proto::discovery::Targets;
use proto::udp::FrameSocket;
use proto::{
    Connection, ElectionMessage, ElectionNodeStatus, Frame, FrameCodec, Leadership, MemberStatus,
    Message, NodeId,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::ElectionConfig;
use crate::links::{self, Join};
use crate::node::{Input, Node, NodeConfig, Output};

/// How often the node's clock advances; well below every timeout.
const TICK: Duration = Duration::from_millis(20);
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The node, shared by the driver and the TCP server (its lock never held across an `.await`),
/// and the count of frames they dropped.
#[derive(Debug, Clone)]
pub struct SharedNode {
    node: Arc<Mutex<Node>>,
    pub(crate) rejections: Arc<Rejections>,
}

impl SharedNode {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> ElectionNodeStatus {
        let now = Instant::now();
        let wall = SystemTime::now();
        let epoch_ms = |at: Instant| -> u64 {
            let when = wall
                .checked_sub(now.saturating_duration_since(at))
                .unwrap_or(wall);
            when.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let dropped = self.rejections.totals();
        let node = self.lock();
        ElectionNodeStatus {
            id: node.id(),
            state: node.role(now).name().to_string(),
            leader: node.leader(now),
            term: node.term(),
            colour: node.colour(),
            members: node
                .colours()
                .iter()
                .map(|(id, c)| MemberStatus {
                    id: *id,
                    colour: Some(*c),
                })
                .collect(),
            membership: node.membership().iter().copied().collect(),
            quorum: node.quorum() as u32,
            leaderships: node
                .tenures()
                .iter()
                .map(|t| Leadership {
                    term: t.term,
                    from_ms: epoch_ms(t.from),
                    until_ms: t.until.map(epoch_ms),
                })
                .collect(),
            auth_failures: dropped.auth_failures,
            bad_frames: dropped.bad_frames,
            replayed: dropped.replayed,
        }
    }
}

#[derive(Debug)]
pub struct Running {
    pub id: NodeId,
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub node: SharedNode,
    tasks: JoinSet<()>,
}

impl Running {
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(
    config: ElectionConfig,
    codec: FrameCodec,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    config.validate()?;
    let id = config.node_id()?;
    let socket = FrameSocket::bind(config.udp_listen, codec.clone())
        .with_context(|| format!("cannot bind {}", config.udp_listen))?;
    let udp_addr = socket.local_addr()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let tcp_addr = listener.local_addr()?;
    let node_config = NodeConfig {
        id,
        tcp_port: tcp_addr.port(),
        min_cluster_size: config.min_cluster_size,
        timing: config.timing(),
    };
    let node = SharedNode {
        node: Arc::new(Mutex::new(Node::new(node_config, Instant::now()))),
        rejections: Arc::new(Rejections::default()),
    };

    let mut tasks = JoinSet::new();
    let rejections = node.rejections.clone();
    let reporter_shutdown = shutdown.clone();
    tasks.spawn(async move { rejections.report(reporter_shutdown).await });
    tasks.spawn(drive(
        socket,
        config.targets(),
        node.clone(),
        codec.clone(),
        shutdown.clone(),
    ));
    let max_connections = config.max_connections;
    tasks.spawn(serve(
        listener,
        max_connections,
        node.clone(),
        codec,
        shutdown,
    ));
    tracing::info!(id, %udp_addr, %tcp_addr, min_cluster_size = config.min_cluster_size, "election node started in state init");
    Ok(Running {
        id,
        udp_addr,
        tcp_addr,
        node,
        tasks,
    })
}

/// Feeds the node its clock and datagrams, and carries out its outputs.
async fn drive(
    mut socket: FrameSocket,
    targets: Targets,
    node: SharedNode,
    codec: FrameCodec,
    shutdown: CancellationToken,
) {
    let id = node.lock().id();
    let rejections = node.rejections.clone();
    let (joined_tx, mut joined) = mpsc::channel::<Input>(8);
    let mut link: Option<JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let input = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => Input::Tick,
            Some(input) = joined.recv() => input,
            received = socket.recv_from() => match received {
                Ok((from, Ok(Frame { sender, message: Message::Election(message) }))) => Input::Datagram { from, sender, message },
                Ok((from, Ok(frame))) => {
                    tracing::debug!(%from, kind = ?frame.message.kind(), "ignoring a non-election datagram");
                    continue;
                }
                Ok((from, Err(e))) => {
                    rejections.reject(from, "datagram", &e);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receive failed");
                    continue;
                }
            },
        };
        let outputs = node.lock().handle(Instant::now(), input);
        for output in outputs {
            match output {
                Output::Broadcast(message) => {
                    let frame = Frame::new(id, Message::Election(message));
                    if let Err(e) = socket.send_to_all(&frame, &targets.resolve()).await {
                        tracing::debug!(error = %e, "broadcast failed on some network");
                    }
                }
                Output::SendTo(to, message) => {
                    if let Err(e) = socket
                        .send_to(&Frame::new(id, Message::Election(message)), to)
                        .await
                    {
                        tracing::debug!(%to, error = %e, "send failed");
                    }
                }
                Output::Join {
                    leader,
                    addr,
                    term,
                    seq,
                } => {
                    // One link at a time: the one to a former leader is closed from our end.
                    if let Some(old) = link.take() {
                        old.abort();
                    }
                    let join = Join {
                        id,
                        leader,
                        addr,
                        term,
                        seq,
                    };
                    link = Some(tokio::spawn(links::follow(
                        join,
                        codec.clone(),
                        joined_tx.clone(),
                        shutdown.clone(),
                    )));
                }
            }
        }
    }
}

/// TCP: `Join` (answered by the leader only; the connection then stays open as the
/// follower's link) and `StatusRequest`.
async fn serve(
    listener: TcpListener,
    max_connections: usize,
    node: SharedNode,
    codec: FrameCodec,
    shutdown: CancellationToken,
) {
    let acceptor = Acceptor::new(listener, max_connections);
    loop {
        let (stream, peer, permit) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = acceptor.accept() => accepted,
        };
        let node = node.clone();
        let codec = codec.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = match Connection::new(stream, codec).await {
                Ok(conn) => conn,
                Err(e) => return node.rejections.reject(peer, "handshake", &e),
            };
            let first = match tokio::time::timeout(JOIN_TIMEOUT, conn.read_frame()).await {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) | Err(_) => return,
                Ok(Err(e)) => return node.rejections.reject(peer, "frame", &e),
            };
            let id = node.lock().id();
            match first {
                Frame {
                    message: Message::StatusRequest,
                    ..
                } => {
                    let _ = conn.send(id, Message::ElectionStatus(node.status())).await;
                }
                Frame {
                    sender,
                    message: Message::Election(ElectionMessage::Join { seq, .. }),
                } => {
                    let answer = node.lock().join(Instant::now(), sender, seq);
                    match answer {
                        Ok((term, colour, view)) => {
                            let joined = ElectionMessage::Joined { term, colour, view };
                            if conn.send(id, Message::Election(joined)).await.is_ok() {
                                links::lead(conn, sender, node, shutdown).await;
                            } else {
                                node.lock().link_lost(sender);
                            }
                        }
                        Err(reason) => {
                            let _ = conn.send(id, Message::Rejected { reason }).await;
                        }
                    }
                }
                frame => {
                    let reason = format!("unexpected {:?}", frame.message.kind());
                    let _ = conn.send(id, Message::Rejected { reason }).await;
                }
            }
        });
    }
}
