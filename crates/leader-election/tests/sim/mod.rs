//! The election simulation's harness: sans-IO nodes in virtual time, with message delays,
//! loss, duplication, one-way and two-way partitions, kills, restarts (from the state the node
//! saved), pauses (messages held and delivered in a burst on resume, as `docker pause` does)
//! and links (a follower's registration connection, closed by a killed leader's kernel or by
//! a live leader that first stops counting that follower). After every step it checks that no
//! two nodes lead at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use leader_election::colouring::greens_needed;
use leader_election::node::{Durable, Input, Node, NodeConfig, Output, Timing};
use proto::{Colour, ElectionMessage, NodeId};
use testkit::sim::{Schedule, SimRng};
use tokio::time::Instant;

const STEP: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Paused,
    Down,
}

pub struct SimNode {
    pub node: Node,
    pub health: Health,
    group: u8,
}

enum Delivery {
    Datagram {
        to: NodeId,
        from: NodeId,
        message: ElectionMessage,
    },
    Broadcast {
        from: NodeId,
        message: ElectionMessage,
    },
    JoinRequest {
        follower: NodeId,
        leader: NodeId,
        seq: u64,
    },
    /// The leader's end of `follower`'s link closed (a FIN or reset on its way).
    LinkClosed {
        follower: NodeId,
        leader: NodeId,
    },
    JoinAnswer {
        follower: NodeId,
        input: Input,
    },
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub nodes: BTreeMap<NodeId, SimNode>,
    queue: Schedule<Delivery, Instant>,
    /// Deliveries held for paused nodes, released on resume.
    held: Vec<Delivery>,
    /// Open links: follower → leader.
    links: BTreeMap<NodeId, NodeId>,
    /// Seeded: its seed is printed with every failure, so that it can be replayed.
    pub rng: SimRng,
    pub min_cluster_size: usize,
    /// Directed (from, to) pairs whose datagrams are dropped: one-way partitions.
    deaf: BTreeSet<(NodeId, NodeId)>,
    /// Percent of datagrams lost, and duplicated (delivered twice, with different delays).
    pub loss: u64,
    pub duplication: u64,
    /// Whether a resumed node may tick before it reads what was held for it (a daemon whose
    /// drain before the tick was cut short).
    pub tick_first_on_resume: bool,
}

fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 7200))
}

fn id_of(addr: SocketAddr) -> NodeId {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[3] as NodeId,
        std::net::IpAddr::V6(_) => unreachable!(),
    }
}

fn config(id: NodeId, min_cluster_size: usize) -> NodeConfig {
    NodeConfig {
        id,
        tcp_port: 7201,
        min_cluster_size,
        timing: Timing::default(),
    }
}

impl Sim {
    pub fn new(ids: impl IntoIterator<Item = NodeId>, seed: u64) -> Self {
        let start = Instant::now();
        let mut sim = Sim {
            start,
            now: start,
            nodes: BTreeMap::new(),
            queue: Schedule::default(),
            held: Vec::new(),
            links: BTreeMap::new(),
            rng: SimRng::new(seed),
            min_cluster_size: 3,
            deaf: BTreeSet::new(),
            loss: 0,
            duplication: 0,
            tick_first_on_resume: false,
        };
        for id in ids {
            sim.add(id);
        }
        sim
    }

    pub fn add(&mut self, id: NodeId) {
        self.start_node(id, 0, None);
    }

    /// A node up in `group`, with fresh state or what it saved before.
    fn start_node(&mut self, id: NodeId, group: u8, saved: Option<Durable>) {
        let config = config(id, self.min_cluster_size);
        let node = match saved {
            Some(durable) => Node::restore(config, durable, self.now),
            None => Node::new(config, self.now),
        };
        self.nodes.insert(
            id,
            SimNode {
                node,
                health: Health::Up,
                group,
            },
        );
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(1 + self.rng.below(15))
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        match (self.nodes.get(&a), self.nodes.get(&b)) {
            (Some(x), Some(y)) => {
                x.group == y.group && x.health != Health::Down && y.health != Health::Down
            }
            _ => false,
        }
    }

    /// Whether `to` receives `from`'s datagrams now.
    fn hears(&self, from: NodeId, to: NodeId) -> bool {
        self.connected(from, to) && !self.deaf.contains(&(from, to))
    }

    /// TCP needs both directions.
    fn tcp_connected(&self, a: NodeId, b: NodeId) -> bool {
        self.hears(a, b) && self.hears(b, a)
    }

    fn emit(&mut self, from: NodeId, outputs: Vec<Output>) {
        for output in outputs {
            let delivery = match output {
                Output::Broadcast(message) => {
                    if self.rng.chance(self.duplication) {
                        let at = self.now + self.delay();
                        let message = message.clone();
                        self.queue.push(at, Delivery::Broadcast { from, message });
                    }
                    Delivery::Broadcast { from, message }
                }
                Output::SendTo(to, message) => {
                    let to = id_of(to);
                    if self.rng.chance(self.duplication) {
                        let at = self.now + self.delay();
                        let message = message.clone();
                        self.queue
                            .push(at, Delivery::Datagram { to, from, message });
                    }
                    Delivery::Datagram { to, from, message }
                }
                Output::Join {
                    leader, addr, seq, ..
                } => {
                    assert_eq!(id_of(addr), leader, "join goes to the leader's address");
                    // A new registration replaces the old link, closed from the follower's end.
                    self.links.remove(&from);
                    Delivery::JoinRequest {
                        follower: from,
                        leader,
                        seq,
                    }
                }
            };
            let at = self.now + self.delay();
            self.queue.push(at, delivery);
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Broadcast { from, message } => {
                let targets: Vec<NodeId> = self
                    .nodes
                    .keys()
                    .copied()
                    .filter(|to| *to != from)
                    .collect();
                for to in targets {
                    self.deliver(Delivery::Datagram {
                        to,
                        from,
                        message: message.clone(),
                    });
                }
            }
            Delivery::Datagram { to, from, message } => {
                if !self.hears(from, to) || self.rng.chance(self.loss) {
                    return;
                }
                if self.nodes[&to].health == Health::Paused {
                    self.held.push(Delivery::Datagram { to, from, message });
                    return;
                }
                let input = Input::Datagram {
                    from: addr(from),
                    sender: from,
                    message,
                };
                self.feed(to, input);
            }
            Delivery::JoinRequest {
                follower,
                leader,
                seq,
            } => {
                // TCP: fails at once when the leader is unreachable (connect refused / timeout).
                let input = if self.tcp_connected(follower, leader)
                    && self.nodes[&leader].health == Health::Up
                {
                    let now = self.now;
                    match self
                        .nodes
                        .get_mut(&leader)
                        .expect("leader exists")
                        .node
                        .join(now, follower, seq)
                    {
                        Ok((term, _colour, view)) => Input::Joined { leader, term, view },
                        Err(_) => Input::JoinFailed { leader },
                    }
                } else {
                    Input::JoinFailed { leader }
                };
                let at = self.now + self.delay();
                self.queue
                    .push(at, Delivery::JoinAnswer { follower, input });
            }
            Delivery::LinkClosed { follower, leader } => self.deliver_link_closed(follower, leader),
            Delivery::JoinAnswer { follower, input } => {
                let Some(node) = self.nodes.get(&follower) else {
                    return;
                };
                match node.health {
                    Health::Down => {}
                    Health::Paused => self.held.push(Delivery::JoinAnswer { follower, input }),
                    Health::Up => {
                        if let Input::Joined { leader, .. } = input {
                            self.links.insert(follower, leader);
                        }
                        self.feed(follower, input);
                    }
                }
            }
        }
    }

    /// Hands `input` to node `id` now and sends what it answers.
    fn feed(&mut self, id: NodeId, input: Input) {
        let now = self.now;
        let outputs = self
            .nodes
            .get_mut(&id)
            .expect("node exists")
            .node
            .handle(now, input);
        self.emit(id, outputs);
    }

    fn deliver_link_closed(&mut self, follower: NodeId, leader: NodeId) {
        let closed = Delivery::LinkClosed { follower, leader };
        let same_side = self.nodes[&follower].group == self.nodes[&leader].group
            && !self.deaf.contains(&(leader, follower));
        if !same_side {
            // TCP retransmits the FIN until the partition heals.
            let at = self.now + Duration::from_millis(100);
            self.queue.push(at, closed);
            return;
        }
        match self.nodes[&follower].health {
            Health::Down => {}
            Health::Paused => self.held.push(closed),
            Health::Up => self.feed(follower, Input::LeaderLinkClosed { leader }),
        }
    }

    /// A process dies: its kernel closes its links' far ends (followers see them close soon);
    /// links it held as a follower just end.
    fn close_links_of(&mut self, id: NodeId) {
        self.links.remove(&id);
        let followers: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, leader)| **leader == id)
            .map(|(follower, _)| *follower)
            .collect();
        for follower in followers {
            self.links.remove(&follower);
            let at = self.now + self.delay();
            self.queue.push(
                at,
                Delivery::LinkClosed {
                    follower,
                    leader: id,
                },
            );
        }
    }

    /// A live, running leader closes one follower's link (an error on it, say).
    pub fn drop_a_link(&mut self) {
        let candidates: Vec<(NodeId, NodeId)> = self
            .links
            .iter()
            .filter(|(_, leader)| self.nodes[*leader].health == Health::Up)
            .map(|(f, l)| (*f, *l))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let (follower, leader) = candidates[self.rng.below(candidates.len() as u64) as usize];
        self.drop_link(follower, leader);
    }

    /// `leader` closes every link it holds at once.
    pub fn drop_links_of(&mut self, leader: NodeId) {
        let followers: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, l)| **l == leader)
            .map(|(f, _)| *f)
            .collect();
        for follower in followers {
            self.drop_link(follower, leader);
        }
    }

    /// The leader drops the follower's acks first, as the daemon does, then the link closes.
    fn drop_link(&mut self, follower: NodeId, leader: NodeId) {
        self.nodes
            .get_mut(&leader)
            .expect("node exists")
            .node
            .link_lost(follower);
        self.links.remove(&follower);
        let at = self.now + self.delay();
        self.queue
            .push(at, Delivery::LinkClosed { follower, leader });
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        for delivery in self.queue.due(now) {
            self.deliver(delivery);
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].health == Health::Up {
                self.feed(id, Input::Tick);
            }
        }
        let leaders = self.leaders().len();
        assert!(
            leaders <= 1,
            "two leaders at once at {:?} (seed {}): {:?}{}",
            now.duration_since(self.start),
            self.rng.seed(),
            self.leaders(),
            self.describe()
        );
    }

    pub fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step();
        }
    }

    /// Runs until `done` holds (returns the virtual time it took) or panics after `limit`.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Sim) -> bool,
    ) -> Duration {
        let started = self.now;
        while !done(self) {
            assert!(
                self.now.duration_since(started) < limit,
                "no {what} within {limit:?} (seed {}): {}",
                self.rng.seed(),
                self.describe()
            );
            self.step();
        }
        self.now.duration_since(started)
    }

    /// Nodes that are leaders now. A paused node's leadership counts until its lease ends.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.health != Health::Down && n.node.is_leader(self.now))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn set_health(&mut self, id: NodeId, health: Health) {
        let was = self.nodes[&id].health;
        self.nodes.get_mut(&id).expect("node exists").health = health;
        if was == Health::Paused && health == Health::Up {
            if self.tick_first_on_resume && self.rng.below(2) == 0 {
                self.feed(id, Input::Tick);
            }
            for delivery in std::mem::take(&mut self.held) {
                self.deliver(delivery);
            }
        }
        if health == Health::Down {
            self.held.retain(|d| !matches!(d, Delivery::Datagram { to, .. } | Delivery::JoinAnswer { follower: to, .. } if *to == id));
        }
    }

    pub fn kill(&mut self, id: NodeId) {
        if self.nodes[&id].health != Health::Down {
            self.close_links_of(id);
        }
        self.set_health(id, Health::Down);
    }

    /// A restarted container: same id, the state it saved (its durable state is saved after
    /// every input, before anything it answered is sent).
    pub fn restart(&mut self, id: NodeId) {
        if self.nodes[&id].health != Health::Down {
            self.close_links_of(id);
        }
        let saved = self.nodes[&id].node.durable();
        self.start_node(id, self.nodes[&id].group, Some(saved));
    }

    /// `to` stops hearing `from` (datagrams and, as TCP needs both ways, links).
    pub fn deafen(&mut self, from: NodeId, to: NodeId) {
        self.deaf.insert((from, to));
    }

    pub fn partition(&mut self, minority: &[NodeId]) {
        for (id, n) in self.nodes.iter_mut() {
            n.group = u8::from(minority.contains(id));
        }
    }

    /// Every partition, one-way or not, healed; no more loss or duplication.
    pub fn heal(&mut self) {
        for n in self.nodes.values_mut() {
            n.group = 0;
        }
        self.deaf.clear();
        self.loss = 0;
        self.duplication = 0;
    }

    pub fn up(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.health == Health::Up)
            .map(|(id, _)| *id)
            .collect()
    }

    /// One leader, followed by every up node, colouring exactly the up nodes with ⌈n/3⌉ green.
    pub fn converged(&self) -> bool {
        let leaders = self.leaders();
        let [leader] = leaders[..] else { return false };
        let up = self.up();
        let colours = self.nodes[&leader].node.colours();
        let greens = colours.values().filter(|c| **c == Colour::Green).count();
        up.iter().all(|id| {
            self.nodes[id].node.leader(self.now) == Some(leader)
                && self.nodes[id].node.colour().is_some()
        }) && colours.keys().copied().collect::<BTreeSet<_>>() == up
            && greens == greens_needed(up.len())
            && colours.get(&leader) == Some(&Colour::Green)
    }

    /// Independent of the check at every step (which asks each node whether it leads now): the
    /// leaderships every node recorded, as intervals of virtual time, never overlap.
    pub fn assert_leaderships_disjoint(&self) {
        let mut all: Vec<(Instant, Instant, NodeId)> = self
            .nodes
            .iter()
            .flat_map(|(id, n)| {
                n.node
                    .tenures()
                    .iter()
                    .map(|t| (t.from, t.until.unwrap_or(self.now), *id))
            })
            .collect();
        all.sort();
        assert!(!all.is_empty(), "nobody ever led");
        for pair in all.windows(2) {
            let ((_, until, a), (from, _, b)) = (pair[0], pair[1]);
            assert!(
                until <= from,
                "node {a} led until {:?}, node {b} from {:?} (seed {})",
                until.duration_since(self.start),
                from.duration_since(self.start),
                self.rng.seed()
            );
        }
    }

    fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|(id, n)| {
                format!(
                    "\n  {id}: {:?} {} term {} leader {:?} colour {:?} members {:?}",
                    n.health,
                    n.node.role(self.now).name(),
                    n.node.term(),
                    n.node.leader(self.now),
                    n.node.colour(),
                    n.node.membership()
                )
            })
            .collect()
    }
}
