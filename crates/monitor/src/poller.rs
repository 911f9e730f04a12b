//! The checks' loop, one task per node: an ICMP echo and a service ping, each with its own
//! timeout, fed to the node's [`Tracker`]; again after `poll`, or after `retry` while the
//! results disagree with the state (so that a failure is confirmed quickly rather than a
//! whole interval later). The node's name is resolved on every poll: Docker gives a restarted
//! container a new address and drops a stopped one's name.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{Connection, FrameCodec, Message, StoreNodeStatus};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

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
    /// A store node's own status, as its last answer gave it.
    pub store: Option<StoreNodeStatus>,
}

/// Something the event log shows: a node's state changed, or the store has a new primary.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    Health {
        at_ms: u64,
        addr: String,
        from: Health,
        to: Health,
    },
    Failover {
        at_ms: u64,
        addr: String,
        epoch: u64,
    },
}

/// Every node's health, shared with whoever reports it; changes are also broadcast.
#[derive(Debug)]
pub struct Board {
    nodes: Mutex<BTreeMap<String, NodeHealth>>,
    changes: broadcast::Sender<Change>,
    /// The highest epoch a store node has reported serving in (a higher one is a failover).
    primary_epoch: Mutex<u64>,
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
    let nodes = targets
        .iter()
        .map(|t| {
            let health = NodeHealth {
                system: t.system,
                addr: t.addr.clone(),
                state: Health::Unknown,
                machine_ms: None,
                service_ms: None,
                last_seen_ms: None,
                checks: 0,
                store: None,
            };
            (t.addr.clone(), health)
        })
        .collect();
    let board = Arc::new(Board {
        nodes: Mutex::new(nodes),
        changes: broadcast::channel(256).0,
        primary_epoch: Mutex::new(0),
    });
    for target in targets {
        let checker = Checker {
            target,
            settings,
            pinger: pinger.clone(),
            codec: codec.clone(),
            board: board.clone(),
        };
        tokio::spawn(checker.run(shutdown.clone()));
    }
    board
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
        let node = nodes
            .get_mut(&self.target.addr)
            .expect("every target has a row");
        node.state = tracker.state();
        node.checks += 1;
        node.machine_ms = findings.machine.map(|d| d.as_secs_f64() * 1000.0);
        node.service_ms = findings.service.map(|d| d.as_secs_f64() * 1000.0);
        if findings.service.is_some() {
            node.last_seen_ms = Some(now);
        }
        if let Some(Message::StoreStatus(status)) = &findings.answer {
            node.store = Some((**status).clone());
            let mut seen = self.board.primary_epoch.lock().expect("not poisoned");
            if status.role == "primary" && status.epoch > *seen {
                // The first primary seen is no failover, only the start of the watch.
                if *seen > 0 {
                    tracing::info!(node = %self.target.addr, epoch = status.epoch, "failover: a new primary");
                    let _ = self.board.changes.send(Change::Failover {
                        at_ms: now,
                        addr: self.target.addr.clone(),
                        epoch: status.epoch,
                    });
                }
                *seen = status.epoch;
            }
        }
        if let Some(t) = transition {
            tracing::info!(node = %self.target.addr, from = ?t.from, to = ?t.to, machine = probe.machine, service = probe.service, "health changed");
            let _ = self.board.changes.send(Change::Health {
                at_ms: now,
                addr: self.target.addr.clone(),
                from: t.from,
                to: t.to,
            });
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
