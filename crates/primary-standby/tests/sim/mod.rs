//! The store's simulation: sans-IO nodes in virtual time with a model of everything around
//! them — each node's disk (writes durable after a delay, lost or torn by a crash), the shared
//! witness (visits and compare-and-swap changes, atomic at one instant), replication links
//! (ordered, held up by partitions and paused receivers, closed by a killed peer's kernel) and
//! clients (writing unique keys, retrying with the same request id through redirects,
//! refusals and timeouts). Faults: kill, restart, pause (frames held, delivered in a burst on
//! resume), network partition (the witness stays reachable, as a shared volume does), a cut
//! replication link.
//!
//! After every step it checks that at most one node serves; at checkpoints that every
//! acknowledged write is durable on the witness's primary and on every in-sync standby, and
//! that in-sync standbys' logs are prefixes of the primary's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use primary_standby::limits::Limits;
use primary_standby::node::{Input, Node, NodeConfig, Output, Role, Timing};
use primary_standby::store::Store;
use primary_standby::wal::Recovered;
use primary_standby::witness::{Change, Visit, WitnessState};
use proto::{Entry, Op, Reply, StoreMessage, StoreNodeId, Write};
use testkit::sim::{Schedule, SimRng};

pub const STEP_MS: u64 = 2;
/// A client gives up on an answer after this long and retries elsewhere (same request id).
const CLIENT_TIMEOUT_MS: u64 = 400;
/// A standby whose connect failed tries again after this long (the daemon's backoff).
const RECONNECT_MS: u64 = 50;
/// How often nodes probe each other over the client network.
const PROBE_MS: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Paused,
    Down,
}

/// What a node's disk holds: a snapshot and the entries after it, and (for the checks) the
/// keys they set.
#[derive(Debug, Clone, Default)]
struct Disk {
    snapshot: Store,
    entries: Vec<Entry>,
    keys: HashMap<String, String>,
    /// Marked as its node's (a new or emptied one is not, until the node has left the
    /// witness's record).
    marked: bool,
}

#[derive(Debug, Clone)]
enum DiskWrite {
    Entries(Vec<Entry>),
    Snapshot(Store),
    Compact(Store),
    Mark,
}

pub struct SimNode {
    pub node: Option<Node>,
    pub health: Health,
    /// Bumped on every restart: what was in flight for an earlier life is dropped.
    life: u64,
    disk: Disk,
    /// Writes handed to the disk and not yet durable, with when they will be.
    writing: VecDeque<(u64, DiskWrite)>,
    group: u8,
    epoch_seen: u64,
}

/// A standby's replication link to a primary: two ordered directions.
struct Link {
    standby: StoreNodeId,
    primary: StoreNodeId,
    lives: (u64, u64),
    /// Frames on their way, standby → primary and primary → standby, each with its time.
    up: VecDeque<(u64, StoreMessage)>,
    down: VecDeque<(u64, StoreMessage)>,
    /// The primary has taken the link (it accepts as soon as it runs).
    accepted: bool,
}

enum Event {
    /// An input for a node's given life (dropped if it restarted or is down; kept while paused).
    Input {
        to: StoreNodeId,
        life: u64,
        input: Input,
    },
    /// A node's visit to the witness reaches the disk.
    Visit {
        node: StoreNodeId,
        life: u64,
        change: Option<Change>,
        renew: bool,
    },
    /// A standby tries to connect to its primary.
    Connect {
        standby: StoreNodeId,
        life: u64,
        primary: StoreNodeId,
    },
    /// A client's request reaches a node.
    Request {
        to: StoreNodeId,
        client: usize,
        token: u64,
        request: u64,
        op: Op,
    },
    /// A node's reply reaches a client.
    Reply { token: u64, reply: Reply },
}

#[derive(Debug, Default)]
struct Witness {
    versions: BTreeMap<u64, WitnessState>,
    slots: BTreeMap<StoreNodeId, u64>,
}

struct Client {
    id: u64,
    request: u64,
    /// The node it asks next, and its outstanding request (token, sent at, to).
    target: StoreNodeId,
    outstanding: Option<(u64, u64, StoreNodeId)>,
    retry_at: Option<u64>,
}

/// An acknowledged write: the key and value it set, and when.
#[derive(Debug, Clone)]
pub struct Acked {
    pub key: String,
    pub value: String,
    pub at_ms: u64,
}

pub struct Sim {
    pub now: u64,
    pub rng: SimRng,
    pub nodes: BTreeMap<StoreNodeId, SimNode>,
    events: Schedule<Event>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    witness: Witness,
    clients: Vec<Client>,
    /// Token → client and the request it carried, for replies.
    tokens: HashMap<u64, (usize, u64)>,
    next_token: u64,
    pub acked: Vec<Acked>,
    acked_requests: HashSet<(u64, u64)>,
    /// Replication links cut (standby, primary pairs in both orders), as `docker network
    /// disconnect` of the link network does.
    cut: BTreeSet<(StoreNodeId, StoreNodeId)>,
    last_witness_epoch: u64,
}

fn config(id: StoreNodeId) -> NodeConfig {
    NodeConfig {
        id,
        client_addr: format!("store{id}:7300"),
        link_addr: format!("store{id}:7301"),
        timing: Timing::default(),
        limits: Limits::default(),
        // Often, so that restarts in every schedule start from a compacted log.
        snapshot_every: 25,
    }
}

fn key_of(client: u64, request: u64) -> (String, String) {
    (
        format!("k{client}-{request}"),
        format!("v{client}-{request}"),
    )
}

impl Sim {
    pub fn new(nodes: u64, clients: u64, seed: u64) -> Sim {
        let mut sim = Sim {
            now: 1_000_000,
            rng: SimRng::new(seed),
            nodes: BTreeMap::new(),
            events: Schedule::default(),
            links: BTreeMap::new(),
            next_link: 0,
            witness: Witness::default(),
            clients: Vec::new(),
            tokens: HashMap::new(),
            next_token: 0,
            acked: Vec::new(),
            acked_requests: HashSet::new(),
            cut: BTreeSet::new(),
            last_witness_epoch: 0,
        };
        for id in 1..=nodes {
            sim.nodes.insert(
                id,
                SimNode {
                    node: None,
                    health: Health::Down,
                    life: 0,
                    disk: Disk::default(),
                    writing: VecDeque::new(),
                    group: 0,
                    epoch_seen: 0,
                },
            );
            sim.start(id);
        }
        for c in 0..clients {
            sim.clients.push(Client {
                id: 1000 + c,
                request: 1,
                target: 1 + c % nodes,
                outstanding: None,
                retry_at: Some(sim.now + 50),
            });
        }
        sim
    }

    fn delay(&mut self) -> u64 {
        self.rng.between(1, 4)
    }

    // ---- faults -------------------------------------------------------------------------

    /// Starts a node that is down, from what its disk holds.
    pub fn start(&mut self, id: StoreNodeId) {
        let now = self.now;
        let sim_node = self.nodes.get_mut(&id).expect("node exists");
        assert_eq!(sim_node.health, Health::Down);
        let recovered = Recovered {
            store: sim_node.disk.snapshot.clone(),
            entries: sim_node.disk.entries.clone(),
            truncated_bytes: 0,
            fresh: !sim_node.disk.marked,
        };
        sim_node.life += 1;
        sim_node.health = Health::Up;
        sim_node.epoch_seen = 0;
        sim_node.node = Some(Node::new(config(id), recovered, now));
    }

    /// A crash: what was not yet durable is lost, except a prefix of it that the disk happened
    /// to write (a torn tail is the rest); links close from the kernel's side.
    pub fn kill(&mut self, id: StoreNodeId) {
        let keep = self.rng.below(3);
        let sim_node = self.nodes.get_mut(&id).expect("node exists");
        if sim_node.health == Health::Down {
            return;
        }
        let writing: Vec<_> = sim_node.writing.drain(..).collect();
        for (_, write) in writing.into_iter().take(keep as usize) {
            apply_disk(&mut sim_node.disk, write);
        }
        sim_node.health = Health::Down;
        sim_node.node = None;
        let closing: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.standby == id || l.primary == id)
            .map(|(k, _)| *k)
            .collect();
        for link in closing {
            self.close_link(link);
        }
    }

    /// Kills the node and empties its data dir (an operator who moved it aside, a volume
    /// lost); it stays down until started.
    pub fn wipe(&mut self, id: StoreNodeId) {
        self.kill(id);
        self.nodes.get_mut(&id).expect("node exists").disk = Disk::default();
    }

    /// Whether `id`'s data holds every write the witness could count it for: not emptied, or
    /// marked again since (the witness's record is then without it).
    pub fn data_marked(&self, id: StoreNodeId) -> bool {
        self.nodes[&id].disk.marked
    }

    /// Whether a node other than `id` holds every acknowledged write for the witness: its
    /// primary, or a standby it counts in sync, with a data dir not emptied since.
    pub fn another_copy_than(&self, id: StoreNodeId) -> bool {
        self.witness_state().is_some_and(|state| {
            state
                .in_sync
                .iter()
                .chain([&state.primary])
                .any(|h| *h != id && self.nodes.get(h).is_some_and(|n| n.disk.marked))
        })
    }

    /// The witness's latest record, if any.
    pub fn witness_state(&self) -> Option<&WitnessState> {
        self.witness.versions.values().next_back()
    }

    pub fn pause(&mut self, id: StoreNodeId) {
        let n = self.nodes.get_mut(&id).expect("node exists");
        if n.health == Health::Up {
            n.health = Health::Paused;
        }
    }

    pub fn resume(&mut self, id: StoreNodeId) {
        let n = self.nodes.get_mut(&id).expect("node exists");
        if n.health == Health::Paused {
            n.health = Health::Up;
        }
    }

    /// Puts a node alone on its side of a network partition (the witness stays reachable).
    pub fn isolate(&mut self, id: StoreNodeId) {
        self.nodes.get_mut(&id).expect("node exists").group = 1;
    }

    pub fn cut_link(&mut self, a: StoreNodeId, b: StoreNodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        for n in self.nodes.values_mut() {
            n.group = 0;
        }
    }

    /// Holds up the visits to the witness `node` has under way by `ms` (a slow volume).
    pub fn slow_visits_of(&mut self, node: StoreNodeId, ms: u64) {
        let visits = self
            .events
            .take_if(|e| matches!(e, Event::Visit { node: n, .. } if *n == node));
        for visit in visits {
            self.events.push(self.now + ms, visit);
        }
    }

    pub fn health(&self, id: StoreNodeId) -> Health {
        self.nodes[&id].health
    }

    /// Whether frames get from `a` to `b` over the replication network.
    fn reachable(&self, a: StoreNodeId, b: StoreNodeId) -> bool {
        self.nodes[&a].group == self.nodes[&b].group && !self.cut.contains(&(a, b))
    }

    // ---- the world --------------------------------------------------------------------

    fn life(&self, id: StoreNodeId) -> u64 {
        self.nodes[&id].life
    }

    /// Hands `input` to node `id` now and carries out what it answers.
    fn feed(&mut self, id: StoreNodeId, input: Input) {
        let now = self.now;
        let outputs = {
            let n = self.nodes.get_mut(&id).expect("node exists");
            let node = n.node.as_mut().expect("an up node runs");
            let outputs = node.handle(now, input);
            assert!(
                node.epoch() >= n.epoch_seen,
                "node {id}'s epoch went back from {} to {} (seed {})",
                n.epoch_seen,
                node.epoch(),
                self.rng.seed()
            );
            n.epoch_seen = node.epoch();
            outputs
        };
        for output in outputs {
            self.carry_out(id, output);
        }
    }

    fn carry_out(&mut self, id: StoreNodeId, output: Output) {
        let life = self.life(id);
        match output {
            Output::Reply { token, reply } => {
                let at = self.now + self.delay();
                self.events.push(at, Event::Reply { token, reply });
            }
            Output::Persist(entries) => self.write_disk(id, DiskWrite::Entries(entries)),
            Output::InstallSnapshot(store) => self.write_disk(id, DiskWrite::Snapshot(store)),
            Output::Compact(store) => self.write_disk(id, DiskWrite::Compact(store)),
            Output::ToStandby { node, message } => {
                if let Some(link) = self.link_between(node, id) {
                    let at = self.now + self.delay();
                    let l = self.links.get_mut(&link).expect("link exists");
                    let at = at.max(l.down.back().map_or(0, |(t, _)| *t));
                    l.down.push_back((at, message));
                }
            }
            Output::CloseStandby { node } => {
                if let Some(link) = self.link_between(node, id) {
                    self.close_link(link);
                }
            }
            Output::StopFollowing => self.close_links_of_standby(id),
            Output::Follow { primary, .. } => {
                self.close_links_of_standby(id);
                let at = self.now + self.delay();
                self.events.push(
                    at,
                    Event::Connect {
                        standby: id,
                        life,
                        primary,
                    },
                );
            }
            Output::ToPrimary(message) => {
                if let Some((&link, _)) = self.links.iter().find(|(_, l)| l.standby == id) {
                    let at = self.now + self.delay();
                    let l = self.links.get_mut(&link).expect("link exists");
                    let at = at.max(l.up.back().map_or(0, |(t, _)| *t));
                    l.up.push_back((at, message));
                }
            }
            Output::Visit { change, renew } => {
                // Now and then the shared volume is slow.
                let slow = self.rng.chance(10);
                let at = self.now
                    + if slow {
                        self.rng.between(5, 40)
                    } else {
                        self.rng.between(0, 2)
                    };
                self.events.push(
                    at,
                    Event::Visit {
                        node: id,
                        life,
                        change,
                        renew,
                    },
                );
            }
            Output::Alert(_) => {}
            Output::MarkDataDir => self.write_disk(id, DiskWrite::Mark),
        }
    }

    /// The link a standby holds to a primary, if any.
    fn link_between(&self, standby: StoreNodeId, primary: StoreNodeId) -> Option<u64> {
        self.links
            .iter()
            .find(|(_, l)| l.standby == standby && l.primary == primary)
            .map(|(k, _)| *k)
    }

    /// A link ends: each live end that can still hear the other is told (a FIN or a reset);
    /// an end cut off from the other is not, and finds out by its own timeouts.
    fn close_link(&mut self, link: u64) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        let at = self.now + self.delay();
        if self.nodes[&l.standby].health != Health::Down
            && self.life(l.standby) == l.lives.0
            && self.reachable(l.primary, l.standby)
        {
            self.events.push(
                at,
                Event::Input {
                    to: l.standby,
                    life: l.lives.0,
                    input: Input::PrimaryClosed,
                },
            );
        }
        if l.accepted
            && self.nodes[&l.primary].health != Health::Down
            && self.life(l.primary) == l.lives.1
            && self.reachable(l.standby, l.primary)
        {
            self.events.push(
                at,
                Event::Input {
                    to: l.primary,
                    life: l.lives.1,
                    input: Input::StandbyClosed { node: l.standby },
                },
            );
        }
    }

    /// Closes the links on which `id` is the standby.
    fn close_links_of_standby(&mut self, id: StoreNodeId) {
        let old: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.standby == id)
            .map(|(k, _)| *k)
            .collect();
        for link in old {
            self.close_link(link);
        }
    }

    fn write_disk(&mut self, id: StoreNodeId, write: DiskWrite) {
        let at = self.now + self.rng.between(1, 4);
        let n = self.nodes.get_mut(&id).expect("node exists");
        let at = at.max(n.writing.back().map_or(0, |(t, _)| *t));
        n.writing.push_back((at, write));
    }

    /// Disk writes due become durable (for up and paused nodes: the kernel writes on).
    fn flush_disks(&mut self) {
        let now = self.now;
        let ids: Vec<StoreNodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            loop {
                let n = self.nodes.get_mut(&id).expect("node exists");
                match n.writing.front() {
                    Some((at, _)) if *at <= now => {}
                    _ => break,
                }
                let (_, write) = n.writing.pop_front().expect("checked");
                let through = match &write {
                    DiskWrite::Entries(entries) => entries.last().map_or(0, |e| e.seq),
                    DiskWrite::Snapshot(store) | DiskWrite::Compact(store) => store.applied(),
                    DiskWrite::Mark => 0,
                };
                apply_disk(&mut n.disk, write);
                let life = n.life;
                let at = now + 1;
                self.events.push(
                    at,
                    Event::Input {
                        to: id,
                        life,
                        input: Input::Persisted { through },
                    },
                );
            }
        }
    }

    fn visit_witness(&mut self, id: StoreNodeId, change: Option<Change>, renew: bool) -> Visit {
        let now = self.now;
        if renew {
            self.witness.slots.insert(id, now);
        }
        let latest = self
            .witness
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        let changed = change.map(|change| {
            let made = change.expected == latest;
            if made {
                let next = WitnessState {
                    version: latest + 1,
                    ..change.next
                };
                assert!(
                    next.epoch >= self.last_witness_epoch,
                    "the witness epoch went back (seed {})",
                    self.rng.seed()
                );
                self.last_witness_epoch = next.epoch;
                if std::env::var("HALAB_SIM_TRACE").is_ok() {
                    eprintln!("{now} ms: node {id} changed the witness to {next:?}");
                }
                self.witness.versions.insert(latest + 1, next);
            }
            made
        });
        Visit {
            started_ms: now,
            state: self.witness.versions.values().next_back().cloned(),
            slots: self.witness.slots.clone(),
            changed,
        }
    }

    fn deliver(&mut self, event: Event) {
        match event {
            Event::Input { to, life, input } => {
                if self.life(to) != life {
                    return;
                }
                match self.nodes[&to].health {
                    Health::Down => {}
                    Health::Paused => self
                        .events
                        .push(self.now + STEP_MS, Event::Input { to, life, input }),
                    Health::Up => self.feed(to, input),
                }
            }
            Event::Visit {
                node,
                life,
                change,
                renew,
            } => {
                if self.life(node) != life {
                    return;
                }
                match self.nodes[&node].health {
                    Health::Down => {}
                    Health::Paused => self.events.push(
                        self.now + STEP_MS,
                        Event::Visit {
                            node,
                            life,
                            change,
                            renew,
                        },
                    ),
                    Health::Up => {
                        let changing = change.is_some();
                        let visit = self.visit_witness(node, change, renew);
                        // Now and then a visit fails after its change was made (an error
                        // syncing the directory, say): the node cannot know it won.
                        let result = if changing && self.rng.chance(5) {
                            Err("simulated error after the change".to_string())
                        } else {
                            Ok(visit)
                        };
                        let at = self.now + self.rng.between(0, 2);
                        self.events.push(
                            at,
                            Event::Input {
                                to: node,
                                life,
                                input: Input::Visited(result),
                            },
                        );
                    }
                }
            }
            Event::Connect {
                standby,
                life,
                primary,
            } => {
                if self.life(standby) != life || self.nodes[&standby].health == Health::Down {
                    return;
                }
                let target = &self.nodes[&primary];
                if target.health == Health::Down
                    || !self.reachable(standby, primary)
                    || !self.reachable(primary, standby)
                {
                    // Refused or timed out: the daemon tries again.
                    let at = self.now + RECONNECT_MS;
                    self.events.push(
                        at,
                        Event::Connect {
                            standby,
                            life,
                            primary,
                        },
                    );
                    return;
                }
                let id = self.next_link;
                self.next_link += 1;
                self.links.insert(
                    id,
                    Link {
                        standby,
                        primary,
                        lives: (life, target.life),
                        up: VecDeque::new(),
                        down: VecDeque::new(),
                        accepted: false,
                    },
                );
                let at = self.now + self.delay();
                self.events.push(
                    at,
                    Event::Input {
                        to: standby,
                        life,
                        input: Input::PrimaryConnected,
                    },
                );
            }
            Event::Request {
                to,
                client,
                token,
                request,
                op,
            } => {
                if self.nodes[&to].health == Health::Up {
                    let client_id = self.clients[client].id;
                    self.feed(
                        to,
                        Input::Client {
                            token,
                            client: client_id,
                            request,
                            op,
                        },
                    );
                } else if self.nodes[&to].health == Health::Paused {
                    self.events.push(
                        self.now + STEP_MS,
                        Event::Request {
                            to,
                            client,
                            token,
                            request,
                            op,
                        },
                    );
                }
            }
            Event::Reply { token, reply } => self.client_reply(token, reply),
        }
    }

    /// Frames due on each link, in order, as far as the network and the receiver let them.
    fn move_links(&mut self) {
        let now = self.now;
        let ids: Vec<u64> = self.links.keys().copied().collect();
        for id in ids {
            for upward in [true, false] {
                while let Some(l) = self.links.get(&id) {
                    let (from, to, to_life) = if upward {
                        (l.standby, l.primary, l.lives.1)
                    } else {
                        (l.primary, l.standby, l.lives.0)
                    };
                    let queue = if upward { &l.up } else { &l.down };
                    match queue.front() {
                        Some((at, _)) if *at <= now => {}
                        _ => break,
                    }
                    if !self.reachable(from, to)
                        || self.nodes[&to].health != Health::Up
                        || self.life(to) != to_life
                    {
                        break; // held: retransmitted later, or read when it resumes
                    }
                    let l = self.links.get_mut(&id).expect("link exists");
                    let (_, message) = if upward {
                        l.up.pop_front()
                    } else {
                        l.down.pop_front()
                    }
                    .expect("checked");
                    let input = if upward {
                        l.accepted = true;
                        Input::FromStandby {
                            node: from,
                            message,
                        }
                    } else {
                        Input::FromPrimary(message)
                    };
                    self.feed(to, input);
                }
            }
        }
    }

    // ---- clients ----------------------------------------------------------------------

    fn client_send(&mut self, index: usize) {
        let c = &self.clients[index];
        let (key, value) = key_of(c.id, c.request);
        let token = self.next_token;
        self.next_token += 1;
        let to = c.target;
        let request = c.request;
        self.tokens.insert(token, (index, request));
        let c = &mut self.clients[index];
        c.outstanding = Some((token, self.now, to));
        c.retry_at = None;
        let at = self.now + self.rng.between(1, 3);
        self.events.push(
            at,
            Event::Request {
                to,
                client: index,
                token,
                request,
                op: Op::Write(Write::Set { key, value }),
            },
        );
    }

    fn client_reply(&mut self, token: u64, reply: Reply) {
        let Some((index, request)) = self.tokens.remove(&token) else {
            return;
        };
        let now = self.now;
        let nodes = self.nodes.len() as u64;
        let random_node = 1 + self.rng.below(nodes);
        let c = &mut self.clients[index];
        let current = c.outstanding.is_some_and(|(t, _, _)| t == token);
        match reply {
            Reply::Written { .. } => {
                // An answer to an earlier try of the request counts as well as the last's.
                let (key, value) = key_of(c.id, request);
                if self.acked_requests.insert((c.id, request)) {
                    self.acked.push(Acked {
                        key,
                        value,
                        at_ms: now,
                    });
                }
                if request == c.request {
                    c.request += 1;
                    c.outstanding = None;
                    c.retry_at = Some(now + 1);
                }
            }
            _ if !current => {}
            Reply::Redirect {
                primary: Some(p), ..
            } => {
                c.target = p;
                c.outstanding = None;
                c.retry_at = Some(now + 1);
            }
            Reply::Redirect { primary: None, .. } | Reply::Unavailable { .. } => {
                c.target = random_node;
                c.outstanding = None;
                c.retry_at = Some(now + 10);
            }
            other => panic!(
                "client {} got {other:?} for a plain write (seed {})",
                c.id,
                self.rng.seed()
            ),
        }
    }

    fn run_clients(&mut self) {
        let now = self.now;
        let nodes = self.nodes.len() as u64;
        for index in 0..self.clients.len() {
            let random_node = 1 + self.rng.below(nodes);
            let c = &mut self.clients[index];
            if let Some((_, sent, _)) = c.outstanding {
                if now.saturating_sub(sent) > CLIENT_TIMEOUT_MS {
                    // No answer: an unknown outcome. Retry elsewhere with the same id.
                    c.target = random_node;
                    c.outstanding = None;
                    c.retry_at = Some(now);
                }
            }
            if c.outstanding.is_none() && c.retry_at.is_some_and(|at| at <= now) {
                self.client_send(index);
            }
        }
    }

    // ---- stepping and checks ----------------------------------------------------------

    pub fn step(&mut self) {
        self.now += STEP_MS;
        let now = self.now;
        self.flush_disks();
        for event in self.events.due(now) {
            self.deliver(event);
        }
        self.move_links();
        let ids: Vec<StoreNodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            if self.nodes[&id].health == Health::Up {
                self.feed(id, Input::Tick);
            }
        }
        // The daemons' probes of each other over the client network (a paused node's kernel
        // still accepts connections).
        if self.now % PROBE_MS == 0 {
            for &id in &ids {
                let reaches = ids.iter().any(|other| {
                    *other != id
                        && self.nodes[other].health != Health::Down
                        && self.nodes[other].group == self.nodes[&id].group
                });
                if reaches && self.nodes[&id].health == Health::Up {
                    self.feed(id, Input::Reached);
                }
            }
        }
        self.run_clients();
        self.check_one_serving();
    }

    pub fn run(&mut self, ms: u64) {
        let until = self.now + ms;
        let mut steps = 0u64;
        while self.now < until {
            self.step();
            steps += 1;
            if steps % 50 == 0 {
                self.check_acked_writes();
            }
        }
        self.check_acked_writes();
    }

    /// The nodes that would acknowledge a write right now.
    pub fn serving(&self) -> Vec<StoreNodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.health == Health::Up)
            .filter(|(_, n)| n.node.as_ref().is_some_and(Node::serving))
            .map(|(id, _)| *id)
            .collect()
    }

    fn check_one_serving(&self) {
        let serving = self.serving();
        assert!(
            serving.len() <= 1,
            "two nodes serve at once at {} ms (seed {}): {serving:?}\n{}",
            self.now,
            self.rng.seed(),
            self.describe()
        );
    }

    /// Every acknowledged write is durable on the witness's primary and on every standby the
    /// witness counts in sync, and in-sync standbys' logs agree with the primary's.
    pub fn check_acked_writes(&self) {
        let Some(state) = self.witness.versions.values().next_back() else {
            return;
        };
        let mut holders = state.in_sync.clone();
        holders.push(state.primary);
        // A node whose data dir was emptied counts for nothing until it has left the record
        // (the protocol's rule; what it checks is that such a node never serves).
        holders.retain(|id| self.nodes.get(id).is_some_and(|n| n.disk.marked));
        for id in holders {
            let keys = &self.nodes[&id].disk.keys;
            for acked in &self.acked {
                assert_eq!(
                    keys.get(&acked.key),
                    Some(&acked.value),
                    "write {} acknowledged at {} ms is not durable on node {id} (witness: \
                     epoch {}, primary {}, in sync {:?}) at {} ms (seed {})\n{}",
                    acked.key,
                    acked.at_ms,
                    state.epoch,
                    state.primary,
                    state.in_sync,
                    self.now,
                    self.rng.seed(),
                    self.describe()
                );
            }
        }
        let Some(primary) = self.nodes.get(&state.primary).and_then(|n| n.node.as_ref()) else {
            return;
        };
        if primary.role() != Role::Primary || primary.epoch() != state.epoch {
            return;
        }
        let log: HashMap<u64, &Entry> = primary.entries().map(|e| (e.seq, e)).collect();
        for id in &state.in_sync {
            let Some(standby) = self.nodes[id].node.as_ref() else {
                continue;
            };
            for entry in standby.entries() {
                if let Some(theirs) = log.get(&entry.seq) {
                    assert_eq!(
                        *theirs,
                        entry,
                        "in-sync standby {id}'s log differs from primary {}'s at {} (seed {})",
                        state.primary,
                        entry.seq,
                        self.rng.seed()
                    );
                }
            }
        }
    }

    /// After healing: one primary serves, and it holds every acknowledged write and nothing
    /// that no client wrote.
    pub fn check_final(&self) {
        let serving = self.serving();
        assert_eq!(
            serving.len(),
            1,
            "not exactly one primary serving after healing (seed {}): {serving:?}\n{}",
            self.rng.seed(),
            self.describe()
        );
        let primary = self.nodes[&serving[0]].node.as_ref().expect("serving");
        for acked in &self.acked {
            assert_eq!(
                primary.store().get(&acked.key),
                Some(&acked.value),
                "acknowledged write {} missing from the primary {} (seed {})",
                acked.key,
                serving[0],
                self.rng.seed()
            );
        }
        for (key, value) in primary.store().pairs() {
            assert_eq!(
                value,
                &key.replacen('k', "v", 1),
                "a value no client wrote (seed {})",
                self.rng.seed()
            );
        }
    }

    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(state) = self.witness.versions.values().next_back() {
            out += &format!(
                "witness v{}: epoch {} primary {} in_sync {:?}\n",
                state.version, state.epoch, state.primary, state.in_sync
            );
        }
        for (id, n) in &self.nodes {
            match &n.node {
                Some(node) => {
                    let s = node.status();
                    out += &format!(
                        "node {id} {:?} group {}: {} epoch {} last {} commit {} applied {} \
                         lease {} alerts {:?}\n",
                        n.health,
                        n.group,
                        s.role,
                        s.epoch,
                        s.last_seq,
                        s.commit_seq,
                        node.store().applied(),
                        s.lease_ms_left,
                        s.alerts
                    );
                }
                None => out += &format!("node {id} down, disk {} entries\n", n.disk.entries.len()),
            }
        }
        out += &format!("acked {} writes; cut {:?}\n", self.acked.len(), self.cut);
        out
    }
}

fn apply_disk(disk: &mut Disk, write: DiskWrite) {
    match write {
        DiskWrite::Entries(entries) => {
            for entry in &entries {
                if let Write::Set { key, value } = &entry.write {
                    disk.keys.insert(key.clone(), value.clone());
                }
            }
            disk.entries.extend(entries);
        }
        DiskWrite::Snapshot(store) => {
            disk.keys = store.pairs().map(|(k, v)| (k.clone(), v.clone())).collect();
            disk.snapshot = store;
            disk.entries.clear();
        }
        DiskWrite::Mark => disk.marked = true,
        DiskWrite::Compact(store) => {
            disk.entries.retain(|e| e.seq > store.applied());
            disk.keys = store.pairs().map(|(k, v)| (k.clone(), v.clone())).collect();
            for entry in &disk.entries {
                if let Write::Set { key, value } = &entry.write {
                    disk.keys.insert(key.clone(), value.clone());
                }
            }
            disk.snapshot = store;
        }
    }
}
