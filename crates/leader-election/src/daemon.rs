//! The I/O edges of an election node: one driver task owns the UDP socket and feeds the
//! [`Node`] ticks and datagrams, carrying out what it returns; a TCP server takes
//! registrations (on the leader), status requests and the operator's `remove-member`; a short
//! task per connection. Every change to the node is saved to its state file before anything
//! it answered is sent.

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
    Message, NodeId, ProtoError,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::ElectionConfig;
use crate::links::{self, Join};
use crate::node::{Input, Node, NodeConfig, Output};
use crate::state::{Saved, StateFile};

/// How often the node's clock advances; well below every timeout.
const TICK: Duration = Duration::from_millis(20);
/// Most queued datagrams read before a tick: all of them after a pause, in practice, while a
/// flood cannot hold the clock back for long.
const DRAIN_BEFORE_TICK: usize = 1024;
/// A state file write slower than this is logged.
const SLOW_SAVE: Duration = Duration::from_millis(10);
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The node, shared by the driver and the TCP server (its lock never held across an `.await`),
/// its state file, and the count of frames they dropped.
#[derive(Debug, Clone)]
pub struct SharedNode {
    node: Arc<Mutex<Node>>,
    state: Arc<Mutex<StateFile>>,
    pub(crate) rejections: Arc<Rejections>,
    /// Cancelled when the state cannot be saved: a node that could forget its vote stops.
    shutdown: CancellationToken,
}

impl SharedNode {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on the node and saves its durable state before returning what it gave,
    /// so nothing it answers (a vote, say) is sent before it would survive a crash. The write
    /// blocks the thread for an fsync, but only when the term, vote or membership changed:
    /// a few times per election. If it fails, the node stops.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut Node) -> R) -> anyhow::Result<R> {
        let mut node = self.lock();
        let result = change(&mut node);
        let saved = Saved {
            id: node.id(),
            durable: node.durable(),
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let saving = state.save(&saved);
        let took = started.elapsed();
        if took > SLOW_SAVE {
            // Every vote and term change waits for this: a slow disk slows elections down.
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "saving the state file took {} ms",
                took.as_millis()
            );
        }
        if let Err(e) = saving {
            tracing::error!(
                error = format!("{e:#}"),
                "stopping: the node's state cannot be saved, and a node that may forget its vote must not take part"
            );
            self.shutdown.cancel();
            return Err(e);
        }
        Ok(result)
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
                .tenures_as_of(now)
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
    let (state, saved) = StateFile::open(&config.state_file)?;
    let id = config.node_id(saved.as_ref().map(|s| s.id))?;
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
        min_cluster_size: config.cluster_size()?,
        timing: config.timing(),
    };
    let restored = saved.map(|s| s.durable);
    let now = Instant::now();
    let node = match restored.clone() {
        Some(durable) => Node::restore(node_config, durable, now),
        None => Node::new(node_config, now),
    };
    let node = SharedNode {
        node: Arc::new(Mutex::new(node)),
        state: Arc::new(Mutex::new(state)),
        rejections: Arc::new(Rejections::default()),
        shutdown: shutdown.clone(),
    };
    // Saved at once: the id stays this node's even if its address changes before any vote.
    node.update(|_| ())?;
    match &restored {
        Some(durable) => tracing::info!(
            term = durable.term,
            voted = ?durable.voted,
            members = ?durable.view.as_ref().map(|v| &v.membership),
            state_file = %config.state_file.display(),
            "restored the term, vote and membership saved by an earlier run"
        ),
        None => {
            tracing::info!(state_file = %config.state_file.display(), "first start: no saved state")
        }
    }

    let mut tasks = JoinSet::new();
    let rejections = node.rejections.clone();
    let reporter_shutdown = shutdown.clone();
    tasks.spawn(async move { rejections.report(reporter_shutdown).await });
    let (joined_tx, joined) = mpsc::channel::<Input>(8);
    let driver = Driver {
        id,
        socket,
        targets: config.targets(),
        node: node.clone(),
        codec: codec.clone(),
        joined_tx,
        link: None,
        shutdown: shutdown.clone(),
    };
    tasks.spawn(driver.run(joined));
    let max_connections = config.max_connections;
    tasks.spawn(serve(
        listener,
        max_connections,
        node.clone(),
        codec,
        shutdown,
    ));
    tracing::info!(id, %udp_addr, %tcp_addr, min_cluster_size = ?config.min_cluster_size, "election node started in state init");
    Ok(Running {
        id,
        udp_addr,
        tcp_addr,
        node,
        tasks,
    })
}

/// Feeds the node its clock and datagrams, and carries out its outputs.
struct Driver {
    id: NodeId,
    socket: FrameSocket,
    targets: Targets,
    node: SharedNode,
    codec: FrameCodec,
    /// Registration answers and closed links, from the link task.
    joined_tx: mpsc::Sender<Input>,
    /// The open link to the leader, if any: one at a time.
    link: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Driver {
    async fn run(mut self, mut joined: mpsc::Receiver<Input>) {
        let rejections = self.node.rejections.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut inputs = Vec::new();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    // What queued up while this process was stopped (a `docker pause`, a long
                    // scheduling delay) is read before the clock: otherwise a resumed follower
                    // would find its leader silent and run, its heartbeats still unread.
                    for _ in 0..DRAIN_BEFORE_TICK {
                        let Some(received) = self.socket.try_recv_from() else { break };
                        inputs.extend(datagram_input(received, &rejections));
                    }
                    while let Ok(input) = joined.try_recv() {
                        inputs.push(input);
                    }
                    inputs.push(Input::Tick);
                }
                Some(input) = joined.recv() => inputs.push(input),
                received = self.socket.recv_from() => {
                    inputs.extend(datagram_input(received, &rejections));
                }
            }
            for input in inputs.drain(..) {
                let Ok(outputs) = self.node.update(|n| n.handle(Instant::now(), input)) else {
                    return;
                };
                for output in outputs {
                    self.carry_out(output).await;
                }
            }
        }
    }

    async fn carry_out(&mut self, output: Output) {
        match output {
            Output::Broadcast(message) => {
                let frame = Frame::new(self.id, Message::Election(message));
                let targets = self.targets.resolve();
                if let Err(e) = self.socket.send_to_all(&frame, &targets).await {
                    tracing::debug!(error = %e, "broadcast failed on some network");
                }
            }
            Output::SendTo(to, message) => {
                let frame = Frame::new(self.id, Message::Election(message));
                if let Err(e) = self.socket.send_to(&frame, to).await {
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
                if let Some(old) = self.link.take() {
                    old.abort();
                }
                let join = Join {
                    id: self.id,
                    leader,
                    addr,
                    term,
                    seq,
                };
                self.link = Some(tokio::spawn(links::follow(
                    join,
                    self.codec.clone(),
                    self.joined_tx.clone(),
                    self.shutdown.clone(),
                )));
            }
        }
    }
}

/// The node's input for a received datagram, if it is an election message.
fn datagram_input(
    received: std::io::Result<(SocketAddr, Result<Frame, ProtoError>)>,
    rejections: &Rejections,
) -> Option<Input> {
    match received {
        Ok((
            from,
            Ok(Frame {
                sender,
                message: Message::Election(message),
            }),
        )) => Some(Input::Datagram {
            from,
            sender,
            message,
        }),
        Ok((from, Ok(frame))) => {
            tracing::debug!(%from, kind = ?frame.message.kind(), "ignoring a non-election datagram");
            None
        }
        Ok((from, Err(e))) => {
            rejections.reject(from, "datagram", &e);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "receive failed");
            None
        }
    }
}

/// TCP: `Join` (answered by the leader only; the connection then stays open as the
/// follower's link), `StatusRequest` and `RemoveMember` (the leader only).
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
                    let Ok(answer) = node.update(|n| n.join(Instant::now(), sender, seq)) else {
                        return;
                    };
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
                Frame {
                    message: Message::RemoveMember { id: member },
                    ..
                } => {
                    let Ok(removed) = node.update(|n| n.remove_member(Instant::now(), member))
                    else {
                        return;
                    };
                    let answer = match removed {
                        Ok(_) => Message::ElectionStatus(node.status()),
                        Err(reason) => Message::Rejected { reason },
                    };
                    let _ = conn.send(id, answer).await;
                }
                frame => {
                    let reason = format!("unexpected {:?}", frame.message.kind());
                    let _ = conn.send(id, Message::Rejected { reason }).await;
                }
            }
        });
    }
}
