//! The checks' loop, one task per node: an ICMP echo and a service ping, each with its own
//! timeout, fed to the node's [`Tracker`]; again after `poll`, or after `retry` while the
//! results disagree with the state (so that a failure is confirmed quickly rather than a
//! whole interval later). The node's name is resolved on every poll: Docker gives a restarted
//! container a new address and drops a stopped one's name. An election target's name stands
//! for every address it resolves to (the lab's replicas share one service name): a roster task
//! adds a row per address that appears, and drops one gone from the name for [`FORGET_AFTER`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{
    Connection, DispatcherStatus, ElectionNodeStatus, FrameCodec, Message, StoreNodeStatus,
};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::{Change, Observed};
use crate::health::{Health, Probe, Thresholds, Tracker};
use crate::icmp::Pinger;

/// Which of halab's systems a node belongs to (its service ping is its status request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Store,
    Election,
    Dispatcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub system: System,
    /// host:port of the node's status port.
    pub addr: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub poll: Duration,
    pub retry: Duration,
    pub icmp_timeout: Duration,
    pub service_timeout: Duration,
    pub thresholds: Thresholds,
}

/// What the monitor knows of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    pub system: System,
    pub addr: String,
    pub state: Health,
    /// The latest round trips, when they succeeded.
    pub machine_ms: Option<f64>,
    pub service_ms: Option<f64>,
    /// Wall-clock ms when the service last answered.
    pub last_seen_ms: Option<u64>,
    pub checks: u64,
    /// The node's own status, as its last answer gave it (the field of its system).
    pub store: Option<StoreNodeStatus>,
    pub election: Option<ElectionNodeStatus>,
    pub dispatcher: Option<DispatcherStatus>,
}

impl NodeHealth {
    pub fn new(system: System, addr: String) -> NodeHealth {
        NodeHealth {
            system,
            addr,
            state: Health::Unknown,
            machine_ms: None,
            service_ms: None,
            last_seen_ms: None,
            checks: 0,
            store: None,
            election: None,
            dispatcher: None,
        }
    }
}

/// Every node's health, shared with whoever reports it; changes are also broadcast.
#[derive(Debug)]
pub struct Board {
    nodes: Mutex<BTreeMap<String, NodeHealth>>,
    changes: broadcast::Sender<Change>,
    observed: Mutex<Observed>,
    /// Changes so far, by kind (for /metrics).
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Board {
    pub fn nodes(&self) -> Vec<NodeHealth> {
        self.nodes
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// How many changes of each kind there have been.
    pub fn change_counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().expect("not poisoned").clone()
    }

    fn publish(&self, change: Change) {
        tracing::info!(?change, "event");
        *self
            .counts
            .lock()
            .expect("not poisoned")
            .entry(change.kind())
            .or_default() += 1;
        let _ = self.changes.send(change);
    }
}

/// Starts one checking task per target; they stop with `shutdown`. Without a pinger (no ICMP
/// socket can be opened here) a node's machine counts as up when its port accepts a
/// connection: a paused container's kernel still does.
pub fn spawn(
    targets: Vec<Target>,
    settings: Settings,
    pinger: Option<Arc<Pinger>>,
    codec: FrameCodec,
    shutdown: CancellationToken,
) -> Arc<Board> {
    let board = Arc::new(Board {
        nodes: Mutex::new(BTreeMap::new()),
        changes: broadcast::channel(256).0,
        observed: Mutex::default(),
        counts: Mutex::default(),
    });
    let checking = Checking {
        settings,
        pinger,
        codec,
        board: board.clone(),
    };
    for target in targets {
        if target.system == System::Election {
            tokio::spawn(checking.clone().roster(target.addr, shutdown.clone()));
        } else {
            checking.start(target, shutdown.clone());
        }
    }
    board
}

/// How long an address may be gone from an election target's name before its row is
/// dropped: a stopped container's name goes at once, and a row that vanished as it stopped
/// would hide the very failure the page is there to show.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);

/// What every checking task shares.
#[derive(Clone)]
struct Checking {
    settings: Settings,
    pinger: Option<Arc<Pinger>>,
    codec: FrameCodec,
    board: Arc<Board>,
}

impl Checking {
    /// A row for the target and a task checking it until `stop`.
    fn start(&self, target: Target, stop: CancellationToken) {
        self.board.nodes.lock().expect("not poisoned").insert(
            target.addr.clone(),
            NodeHealth::new(target.system, target.addr.clone()),
        );
        let checker = Checker {
            target,
            settings: self.settings,
            pinger: self.pinger.clone(),
            codec: self.codec.clone(),
            board: self.board.clone(),
        };
        tokio::spawn(checker.run(stop));
    }

    /// One checker per address `name` resolves to, kept in step with it every poll.
    async fn roster(self, name: String, shutdown: CancellationToken) {
        let mut known: BTreeMap<SocketAddr, (CancellationToken, Option<Instant>)> = BTreeMap::new();
        loop {
            let now: Vec<SocketAddr> = tokio::net::lookup_host(&name)
                .await
                .map(|found| found.collect())
                .unwrap_or_default();
            for addr in &now {
                known.entry(*addr).or_insert_with(|| {
                    tracing::info!(%name, %addr, "watching a new election node");
                    let stop = shutdown.child_token();
                    let target = Target {
                        system: System::Election,
                        addr: addr.to_string(),
                    };
                    self.start(target, stop.clone());
                    (stop, None)
                });
            }
            known.retain(|addr, (stop, gone_since)| {
                if now.contains(addr) {
                    *gone_since = None;
                    return true;
                }
                let since = *gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() < FORGET_AFTER {
                    return true;
                }
                tracing::info!(%name, %addr, "no longer watching: the address left the name");
                stop.cancel();
                let mut nodes = self.board.nodes.lock().expect("not poisoned");
                nodes.remove(&addr.to_string());
                false
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }
}

struct Checker {
    target: Target,
    settings: Settings,
    pinger: Option<Arc<Pinger>>,
    codec: FrameCodec,
    board: Arc<Board>,
}

/// One poll's findings.
#[derive(Debug, Default)]
struct Findings {
    machine: Option<Duration>,
    /// The port accepted a connection.
    connected: bool,
    service: Option<Duration>,
    /// The service's answer.
    answer: Option<Message>,
}

impl Checker {
    async fn run(self, shutdown: CancellationToken) {
        let mut tracker = Tracker::new(self.settings.thresholds);
        loop {
            let findings = tokio::select! {
                _ = shutdown.cancelled() => return,
                findings = self.check() => findings,
            };
            self.record(&mut tracker, &findings);
            let wait = if tracker.wavering() {
                self.settings.retry
            } else {
                self.settings.poll
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn check(&self) -> Findings {
        let Some(addr) = resolve(&self.target.addr).await else {
            return Findings::default(); // no such name now: a stopped container
        };
        let machine = async {
            match (&self.pinger, addr.ip()) {
                (Some(pinger), IpAddr::V4(ip)) => {
                    pinger.ping(ip, self.settings.icmp_timeout).await.ok()
                }
                _ => None,
            }
        };
        let (machine, (connected, answer)) = tokio::join!(machine, self.ping_service(addr));
        let (service, answer) = answer.map_or((None, None), |(rtt, m)| (Some(rtt), Some(m)));
        Findings {
            machine,
            connected,
            service,
            answer,
        }
    }

    /// The service's ping: its status request, answered within the timeout (the round trip and
    /// the answer). Also says whether the port accepted the connection at all.
    async fn ping_service(&self, addr: SocketAddr) -> (bool, Option<(Duration, Message)>) {
        let began = Instant::now();
        let timeout = self.settings.service_timeout;
        let Ok(Ok(stream)) = tokio::time::timeout(timeout, TcpStream::connect(addr)).await else {
            return (false, None);
        };
        let exchange = async {
            let mut conn = Connection::new(stream, self.codec.clone()).await.ok()?;
            conn.send(0, Message::StatusRequest).await.ok()?;
            conn.read_frame()
                .await
                .ok()?
                .map(|frame| (began.elapsed(), frame.message))
        };
        let left = timeout.saturating_sub(began.elapsed());
        (
            true,
            tokio::time::timeout(left, exchange).await.ok().flatten(),
        )
    }

    fn record(&self, tracker: &mut Tracker, findings: &Findings) {
        let machine_up =
            findings.machine.is_some() || (self.pinger.is_none() && findings.connected);
        let probe = Probe {
            machine: machine_up,
            service: findings.service.is_some(),
        };
        let transition = tracker.observe(probe);
        let now = wall_ms();
        let mut nodes = self.board.nodes.lock().expect("not poisoned");
        let Some(node) = nodes.get_mut(&self.target.addr) else {
            return; // the roster dropped this row as the check ended
        };
        node.state = tracker.state();
        node.checks += 1;
        node.machine_ms = findings.machine.map(|d| d.as_secs_f64() * 1000.0);
        node.service_ms = findings.service.map(|d| d.as_secs_f64() * 1000.0);
        if findings.service.is_some() {
            node.last_seen_ms = Some(now);
        }
        let changes = match &findings.answer {
            Some(answer) => self.take_answer(node, answer, now),
            None => Vec::new(),
        };
        drop(nodes);
        for change in changes {
            self.board.publish(change);
        }
        if let Some(t) = transition {
            tracing::info!(node = %self.target.addr, from = ?t.from, to = ?t.to, machine = probe.machine, service = probe.service, "health changed");
            self.board.publish(Change::Health {
                at_ms: now,
                addr: self.target.addr.clone(),
                from: t.from,
                to: t.to,
            });
        }
    }

    /// Keeps the node's own status and returns what it reveals.
    fn take_answer(&self, node: &mut NodeHealth, answer: &Message, now: u64) -> Vec<Change> {
        let mut observed = self.board.observed.lock().expect("not poisoned");
        match answer {
            Message::StoreStatus(status) => {
                node.store = Some((**status).clone());
                observed.store(&self.target.addr, status, now)
            }
            Message::ElectionStatus(status) => {
                node.election = Some(status.clone());
                observed.election(status, now)
            }
            Message::DispatcherStatus(status) => {
                node.dispatcher = Some(status.clone());
                observed.dispatcher(status, now)
            }
            _ => Vec::new(),
        }
    }
}

async fn resolve(addr: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(addr).await.ok()?.next()
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
