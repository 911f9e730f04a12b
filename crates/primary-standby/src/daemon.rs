//! The store daemon: carries out what the sans-IO [`Node`] decides, over real sockets, the
//! data dir and the witness directory.
//!
//! Every input goes through [`Shared::feed`], which runs the node and hands each output to its
//! channel *while still holding the node's lock*: frames to a standby leave in the order the
//! node made them, whichever task fed the input. Nothing under the lock blocks — outputs are
//! channel sends; the disk, the witness and the sockets are served by their own tasks:
//!
//! - a writer thread appends to the log and fsyncs once for everything queued (group commit);
//! - a witness task makes one visit at a time on the blocking pool;
//! - one task per client connection, one per standby's link (on the primary), and one that
//!   keeps this node's link to its primary (on a standby).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use anyhow::Context;
use halab_runtime::Rejections;
use halab_runtime::accept::Acceptor;
use proto::{
    Connection, FrameCodec, Message, Op, Reply, StoreMessage, StoreNodeId, StoreNodeStatus,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::connect;
use crate::config::StoreConfig;
use crate::log_writer::{self, DiskCommand};
use crate::node::{Input, Node, Output};
use crate::wal::Wal;
use crate::witness::{Change, Witness, wall_ms};

/// How often the node's clock ticks.
const TICK: Duration = Duration::from_millis(5);
/// A standby whose connection to the primary failed tries again after this.
const RECONNECT: Duration = Duration::from_millis(50);
/// A client's request that gets no answer in this long is told to retry (same request id).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often, and how patiently, a node probes the others over the client network.
const PROBE_EVERY: Duration = Duration::from_millis(50);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// A witness visit slower than this is logged: it eats into the primary's lease.
const SLOW_VISIT: Duration = Duration::from_millis(30);
/// A replication link must say who it is this soon.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

enum LinkCommand {
    Send(StoreMessage),
    Close,
}

/// What every task of the daemon shares.
struct Shared {
    node: Mutex<Node>,
    disk: std_mpsc::Sender<DiskCommand>,
    witness: mpsc::UnboundedSender<(Option<Change>, bool)>,
    replies: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_token: AtomicU64,
    /// Standbys' links (on the primary): node → (connection number, its task's queue).
    standbys: Mutex<HashMap<StoreNodeId, (u64, mpsc::UnboundedSender<LinkCommand>)>>,
    next_link: AtomicU64,
    /// The primary this node follows (the link task connects to it), and the number of the
    /// current connection: frames made for an earlier connection are not sent on a later one.
    follow: watch::Sender<Option<(StoreNodeId, String)>>,
    to_primary: mpsc::UnboundedSender<(u64, StoreMessage)>,
    primary_conn: AtomicU64,
    rejections: Rejections,
    admin_token: Option<String>,
}

impl Shared {
    /// Runs the node on `input` and carries out what it answers (see the module docs).
    fn feed(&self, input: Input) {
        let mut node = self.node.lock().expect("the node's lock is never poisoned");
        for output in node.handle(wall_ms(), input) {
            self.carry_out(output);
        }
    }

    fn carry_out(&self, output: Output) {
        match output {
            Output::Reply { token, reply } => {
                if let Some(tx) = self.replies.lock().expect("not poisoned").remove(&token) {
                    let _ = tx.send(reply);
                }
            }
            Output::Persist(entries) => {
                let _ = self.disk.send(DiskCommand::Append(entries));
            }
            Output::InstallSnapshot(store) => {
                let _ = self.disk.send(DiskCommand::Snapshot(store));
            }
            Output::Compact(store) => {
                let _ = self.disk.send(DiskCommand::Compact(store));
            }
            Output::ToStandby { node, message } => {
                if let Some((_, tx)) = self.standbys.lock().expect("not poisoned").get(&node) {
                    let _ = tx.send(LinkCommand::Send(message));
                }
            }
            Output::CloseStandby { node } => {
                if let Some((_, tx)) = self.standbys.lock().expect("not poisoned").remove(&node) {
                    let _ = tx.send(LinkCommand::Close);
                }
            }
            Output::Follow { primary, link } => {
                self.follow.send_replace(Some((primary, link)));
            }
            Output::StopFollowing => {
                self.follow.send_replace(None);
            }
            Output::ToPrimary(message) => {
                let conn = self.primary_conn.load(Ordering::SeqCst);
                let _ = self.to_primary.send((conn, message));
            }
            Output::Visit { change, renew } => {
                let _ = self.witness.send((change, renew));
            }
            // The node logged it; status shows it.
            Output::Alert(_) => {}
            Output::MarkDataDir => {
                let _ = self.disk.send(DiskCommand::Mark);
            }
        }
    }

    /// A client's request, answered by the node (or a timeout).
    async fn request(&self, client: u64, request: u64, op: Op) -> Reply {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.replies.lock().expect("not poisoned").insert(token, tx);
        self.feed(Input::Client {
            token,
            client,
            request,
            op,
        });
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            _ => {
                self.replies.lock().expect("not poisoned").remove(&token);
                Reply::Unavailable {
                    reason: "no answer in time; retry with the same request id".into(),
                }
            }
        }
    }

    fn status(&self) -> StoreNodeStatus {
        let now = crate::witness::wall_ms();
        let mut status = self.node.lock().expect("not poisoned").status_as_of(now);
        let dropped = self.rejections.totals();
        status.auth_failures = dropped.auth_failures;
        status.bad_frames = dropped.bad_frames + dropped.replayed;
        status
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub client_addr: SocketAddr,
    pub link_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Daemon {
    /// Runs until shutdown.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens the data dir, binds the ports and starts every task.
pub async fn start(
    config: StoreConfig,
    codec: FrameCodec,
    shutdown: CancellationToken,
) -> anyhow::Result<Daemon> {
    config.validate()?;
    let node_config = config.node_config()?;
    let id = node_config.id;
    let node_config_addr = node_config.client_addr.clone();
    let (wal, recovered) = Wal::open(&config.data_dir, id)?;
    tracing::info!(
        id,
        data_dir = %config.data_dir.display(),
        snapshot_seq = recovered.store.applied(),
        entries = recovered.entries.len(),
        truncated_bytes = recovered.truncated_bytes,
        fresh = recovered.fresh,
        "recovered the data dir"
    );
    if recovered.truncated_bytes > 0 {
        tracing::warn!(
            bytes = recovered.truncated_bytes,
            "cut a torn record off the end of the log (a crash mid-write; it was never acknowledged)"
        );
    }
    std::fs::create_dir_all(&config.witness_dir).with_context(|| {
        format!(
            "the witness dir {} cannot be created",
            config.witness_dir.display()
        )
    })?;
    let witness = Witness::new(&config.witness_dir);
    let client_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let link_listener = TcpListener::bind(config.link_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.link_listen))?;
    let client_addr = client_listener.local_addr()?;
    let link_addr = link_listener.local_addr()?;
    tracing::info!(
        id,
        %client_addr,
        %link_addr,
        advertise = %node_config.client_addr,
        advertise_link = %node_config.link_addr,
        "store node listening"
    );

    let (disk_tx, disk_rx) = std_mpsc::channel();
    let (witness_tx, witness_rx) = mpsc::unbounded_channel();
    let (follow_tx, follow_rx) = watch::channel(None);
    let (to_primary_tx, to_primary_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        node: Mutex::new(Node::new(node_config, recovered, wall_ms())),
        disk: disk_tx,
        witness: witness_tx,
        replies: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(1),
        standbys: Mutex::new(HashMap::new()),
        next_link: AtomicU64::new(1),
        follow: follow_tx,
        to_primary: to_primary_tx,
        primary_conn: AtomicU64::new(0),
        rejections: Rejections::default(),
        admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
    });

    let writer_shared = shared.clone();
    log_writer::spawn(
        id,
        wal,
        config.fsync,
        disk_rx,
        shared.disk.clone(),
        move |through| writer_shared.feed(Input::Persisted { through }),
    )?;

    let mut tasks = JoinSet::new();
    let reporter = shared.clone();
    let reporter_shutdown = shutdown.clone();
    tasks.spawn(async move { reporter.rejections.report(reporter_shutdown).await });
    tasks.spawn(visit_witness(
        witness,
        id,
        witness_rx,
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(tick(shared.clone(), shutdown.clone()));
    let peers: Vec<String> = config
        .peers
        .iter()
        .filter(|p| **p != node_config_addr)
        .cloned()
        .collect();
    for peer in peers {
        tasks.spawn(probe_peer(
            peer,
            codec.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(serve(
        Port::Clients,
        Acceptor::new(client_listener, config.max_connections),
        codec.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(serve(
        Port::Links,
        Acceptor::new(link_listener, config.max_connections),
        codec.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(keep_primary_link(
        shared.clone(),
        follow_rx,
        to_primary_rx,
        codec,
        shutdown,
    ));
    Ok(Daemon {
        client_addr,
        link_addr,
        tasks,
    })
}

async fn visit_witness(
    witness: Witness,
    id: StoreNodeId,
    mut rx: mpsc::UnboundedReceiver<(Option<Change>, bool)>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let (change, renew) = tokio::select! {
            // Shutdown first: stopping closes this node's links, and a primary that then wrote
            // its standbys out of the in-sync set would leave none promotable (a stopped
            // primary blocked its own failover about half the time before this was biased).
            biased;
            _ = shutdown.cancelled() => return,
            change = rx.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        let visiting = witness.clone();
        let began = std::time::Instant::now();
        let visit = tokio::task::spawn_blocking(move || visiting.visit(id, change.as_ref(), renew))
            .await
            .map_err(|e| e.to_string())
            .and_then(|visit| visit.map_err(|e| format!("{}: {e}", witness.dir().display())));
        if began.elapsed() > SLOW_VISIT {
            tracing::warn!(
                ms = began.elapsed().as_millis() as u64,
                "slow visit to the witness"
            );
        }
        shared.feed(Input::Visited(visit));
    }
}

async fn tick(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => shared.feed(Input::Tick),
        }
    }
}

/// Tells the node whenever another node answers a status request on its client port (a full
/// exchange, not a bare connect: a paused node's kernel would accept that, and the node would
/// count a probe that hangs up at once as a bad handshake). One loop per peer, so that a slow
/// peer does not hold back the news that another answered.
async fn probe_peer(
    peer: String,
    codec: FrameCodec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(PROBE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let exchange = async {
            let mut conn = connect(&peer, codec.clone()).await.ok()?;
            conn.send(0, Message::StatusRequest).await.ok()?;
            conn.read_frame().await.ok().flatten()
        };
        if tokio::time::timeout(PROBE_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            shared.feed(Input::Reached);
        }
    }
}

/// The node's two TCP ports: clients (and status), and standbys' replication links.
#[derive(Debug, Clone, Copy)]
enum Port {
    Clients,
    Links,
}

/// Accepts connections on one port until shutdown, each served by a task of its own.
async fn serve(
    port: Port,
    acceptor: Acceptor,
    codec: FrameCodec,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer, permit) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = acceptor.accept() => accepted,
        };
        let codec = codec.clone();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match Connection::new(stream, codec).await {
                Ok(conn) => conn,
                Err(e) => return shared.rejections.reject(peer, "handshake", &e),
            };
            match port {
                Port::Clients => serve_client(conn, peer, &shared, shutdown).await,
                Port::Links => serve_link(conn, peer, &shared, shutdown).await,
            }
        });
    }
}

/// One client connection: requests answered one at a time, in order.
async fn serve_client(
    mut conn: Connection,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            frame = conn.read_frame() => frame,
        };
        let answer = match frame {
            Ok(Some(frame)) => match frame.message {
                Message::Store(StoreMessage::Request {
                    client,
                    request,
                    op: Op::Kill { token },
                }) => {
                    let reply = kill_reply(shared, &token);
                    let killed = reply == Reply::Killed;
                    let _ = conn
                        .send(0, Message::Store(StoreMessage::Reply { request, reply }))
                        .await;
                    if killed {
                        tracing::warn!(%peer, client, "killed by an admin request: exiting at once");
                        // As a crash: no shutdown, no flush; the kernel closes every socket.
                        std::process::exit(137);
                    }
                    continue;
                }
                Message::Store(StoreMessage::Request {
                    request,
                    op: Op::Sum { first, second },
                    ..
                }) => {
                    let reply = sum_reply(shared, first, second);
                    Message::Store(StoreMessage::Reply { request, reply })
                }
                Message::Store(StoreMessage::Request {
                    client,
                    request,
                    op,
                }) => {
                    let reply = shared.request(client, request, op).await;
                    Message::Store(StoreMessage::Reply { request, reply })
                }
                Message::StatusRequest => Message::StoreStatus(Box::new(shared.status())),
                other => {
                    tracing::debug!(%peer, kind = ?other.kind(), "unexpected frame on the client port");
                    let reason = "this port takes store requests and status requests".into();
                    let _ = conn.send(0, Message::Rejected { reason }).await;
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                return shared
                    .rejections
                    .reject(peer, "frame on the client port", &e);
            }
        };
        if conn.send(0, answer).await.is_err() {
            return;
        }
    }
}

fn kill_reply(shared: &Shared, token: &str) -> Reply {
    match &shared.admin_token {
        None => Reply::Invalid {
            reason: "this node has no --admin-token: kill is disabled".into(),
        },
        Some(expected) if expected == token => Reply::Killed,
        Some(_) => Reply::Invalid {
            reason: "wrong admin token".into(),
        },
    }
}

/// Seed 004's work, answered by the daemon itself (the random number is not the store's).
fn sum_reply(shared: &Shared, first: i64, second: i64) -> Reply {
    match first.checked_add(second) {
        Some(sum) => Reply::Summed {
            sum,
            random: rand::random(),
            node: shared.node.lock().expect("not poisoned").id(),
        },
        None => Reply::Invalid {
            reason: format!("{first} + {second} does not fit in 64 bits"),
        },
    }
}

/// A standby's replication link, on the primary: its first frame says who it is.
async fn serve_link(
    mut conn: Connection,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: CancellationToken,
) {
    let join = match tokio::time::timeout(JOIN_TIMEOUT, conn.read_frame()).await {
        Ok(Ok(Some(frame))) => frame.message,
        Ok(Err(e)) => return shared.rejections.reject(peer, "frame on the link port", &e),
        _ => return,
    };
    let Message::Store(join @ StoreMessage::Join { node, .. }) = join else {
        let reason = "a replication link starts with Join".into();
        let _ = conn.send(0, Message::Rejected { reason }).await;
        return;
    };
    let number = shared.next_link.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // A standby that reconnects replaces its old link (whose task then ends).
    shared
        .standbys
        .lock()
        .expect("not poisoned")
        .insert(node, (number, tx));
    shared.feed(Input::FromStandby {
        node,
        message: join,
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            command = rx.recv() => {
                let Some(LinkCommand::Send(message)) = command else { break };
                // Send what is queued with one flush.
                let mut result = conn.queue(0, Message::Store(message)).await;
                while let Ok(LinkCommand::Send(more)) = rx.try_recv() {
                    if result.is_err() {
                        break;
                    }
                    result = conn.queue(0, Message::Store(more)).await;
                }
                if result.and(conn.flush().await).is_err() {
                    break;
                }
            }
            frame = conn.read_frame() => match frame {
                Ok(Some(frame)) => match frame.message {
                    Message::Store(message) => shared.feed(Input::FromStandby { node, message }),
                    other => {
                        tracing::debug!(%peer, kind = ?other.kind(), "unexpected frame on a link");
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    shared.rejections.reject(peer, "frame on a link", &e);
                    break;
                }
            },
        }
    }
    let current = {
        let mut standbys = shared.standbys.lock().expect("not poisoned");
        let current = standbys.get(&node).is_some_and(|(n, _)| *n == number);
        if current {
            standbys.remove(&node);
        }
        current
    };
    if current {
        shared.feed(Input::StandbyClosed { node });
    }
}

/// On a standby: keeps one connection to the primary the node follows, reconnecting after a
/// failure and moving to another primary when told to.
async fn keep_primary_link(
    shared: Arc<Shared>,
    mut follow: watch::Receiver<Option<(StoreNodeId, String)>>,
    mut outgoing: mpsc::UnboundedReceiver<(u64, StoreMessage)>,
    codec: FrameCodec,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let target = follow.borrow_and_update().clone();
        let Some((primary, addr)) = target else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = follow.changed() => if changed.is_err() { return } else { continue },
            }
        };
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = follow.changed() => continue,
            connected = connect(&addr, codec.clone()) => connected,
        };
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 100 == 0 {
                    tracing::warn!(primary, %addr, error = %e, failures, "cannot reach the primary's link port");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = follow.changed() => {}
                    _ = tokio::time::sleep(RECONNECT) => {}
                }
                // Tell the node: a primary that refuses connections may be dead.
                shared.feed(Input::PrimaryClosed);
                continue;
            }
        };
        failures = 0;
        let number = shared.primary_conn.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(primary, %addr, "replication link up");
        shared.feed(Input::PrimaryConnected);
        let closed = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = follow.changed() => break false,
                message = outgoing.recv() => {
                    let Some((conn_number, message)) = message else { return };
                    if conn_number != number {
                        continue; // made for an earlier connection
                    }
                    if conn.send(0, Message::Store(message)).await.is_err() {
                        break true;
                    }
                }
                frame = conn.read_frame() => match frame {
                    Ok(Some(frame)) => match frame.message {
                        Message::Store(message) => shared.feed(Input::FromPrimary(message)),
                        Message::Rejected { reason } => {
                            tracing::warn!(primary, %reason, "the primary refused the link");
                            break true;
                        }
                        other => tracing::debug!(kind = ?other.kind(), "unexpected frame from the primary"),
                    },
                    Ok(None) => break true,
                    Err(e) => {
                        tracing::warn!(primary, error = %e, "replication link failed");
                        break true;
                    }
                },
            }
        };
        if closed {
            tracing::warn!(primary, "replication link closed");
            shared.feed(Input::PrimaryClosed);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = follow.changed() => {}
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }
}
