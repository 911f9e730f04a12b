//! The store node as a sans-IO state machine: inputs in (a client request, a frame from a
//! peer, the log's progress, a witness visit's result, the clock), outputs out (replies,
//! frames, log writes, witness visits). No sockets, files or clocks inside: the daemon carries
//! the outputs out, and the simulation drives many nodes through faults in virtual time.
//!
//! The rules themselves are in [`rules`]; [`primary`] and [`standby`] hold what each role does.

mod primary;
pub mod rules;
mod stalls;
mod standby;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proto::{Entry, Op, Primaryship, Reply, StoreMessage, StoreNodeId, StoreNodeStatus};

pub use rules::Timing;
use stalls::Stalls;

use crate::limits::Limits;
use crate::store::Store;
use crate::wal::Recovered;
use crate::witness::{Change, NOBODY, Visit, WitnessState};

/// Entries kept in memory after they are applied, for standbys to catch up from without a
/// snapshot.
const KEEP_ENTRIES: usize = 100_000;
/// Primaryships kept for `status`.
const KEEP_PRIMARYSHIPS: usize = 16;
/// Alerts kept for `status`.
const KEEP_ALERTS: usize = 8;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: StoreNodeId,
    /// Where clients reach this node (written to the witness when it is primary).
    pub client_addr: String,
    /// Where standbys reach this node's replication port.
    pub link_addr: String,
    pub timing: Timing,
    pub limits: Limits,
    /// Write the applied state as the snapshot (and cut the log) every this many entries;
    /// 0: only when a snapshot comes from the primary.
    pub snapshot_every: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Has not yet seen the witness.
    Starting,
    Primary,
    Standby,
    /// A standby that lost its primary and is changing the witness to take its place.
    Candidate,
}

#[derive(Debug, Clone)]
pub enum Input {
    /// Time passed (the daemon ticks every few milliseconds).
    Tick,
    /// A witness visit finished (Err: the witness could not be read or written).
    Visited(Result<Visit, String>),
    /// The local log is durable through this entry.
    Persisted {
        through: u64,
    },
    /// A client's request; `token` identifies where the reply goes.
    Client {
        token: u64,
        client: u64,
        request: u64,
        op: Op,
    },
    /// Another node answered over the client network just now (the daemon probes them).
    Reached,
    /// A standby's replication link to this node (the primary) carried a frame.
    FromStandby {
        node: StoreNodeId,
        message: StoreMessage,
    },
    StandbyClosed {
        node: StoreNodeId,
    },
    /// This standby's link to its primary is up (it should say `Join`), carried a frame, closed.
    PrimaryConnected,
    FromPrimary(StoreMessage),
    PrimaryClosed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Reply {
        token: u64,
        reply: Reply,
    },
    /// Append these entries to the log; `Persisted` comes back when they are durable.
    Persist(Vec<Entry>),
    /// Replace the data dir's contents with this state (a snapshot from the primary).
    InstallSnapshot(Store),
    /// Write this node's applied state as the snapshot and cut what it holds off the log.
    Compact(Store),
    ToStandby {
        node: StoreNodeId,
        message: StoreMessage,
    },
    /// Close a standby's link (it was fenced or dropped).
    CloseStandby {
        node: StoreNodeId,
    },
    /// Keep a replication link to this primary (the daemon reconnects until told otherwise).
    Follow {
        primary: StoreNodeId,
        link: String,
    },
    /// Close the replication link to the primary this node followed (it is primary now).
    StopFollowing,
    ToPrimary(StoreMessage),
    /// Visit the witness now, making this change if it is still against the latest version;
    /// renewing this node's slot unless `renew` is false (an isolated primary lets it age).
    Visit {
        change: Option<Change>,
        renew: bool,
    },
    /// Something the operator should know (also kept for `status`).
    Alert(String),
    /// The data dir, new, is this node's now (it is out of the witness's record).
    MarkDataDir,
}

/// What a visit in flight was for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Look,
    Claim,
    Promote {
        previous: StoreNodeId,
    },
    Drop(StoreNodeId),
    Add(StoreNodeId),
    /// A new data dir takes the node out of the witness's record.
    Leave,
}

#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    role: Role,
    epoch: u64,
    /// The latest witness state seen, and when a visit last succeeded.
    witness: Option<WitnessState>,
    witness_ok_ms: Option<u64>,
    /// The visit in flight (one at a time) and when the next routine one is due.
    visiting: Option<Purpose>,
    next_visit_ms: u64,

    /// The map as of the last applied entry.
    store: Store,
    /// Entries in memory: `log_base + 1 ..= last`, applied ones kept for catch-up.
    log: VecDeque<Entry>,
    log_base: u64,
    log_base_epoch: u64,
    durable: u64,
    commit: u64,
    /// The entry the data dir's snapshot was last written at.
    snapshot_seq: u64,
    /// The data dir is new (emptied, replaced) and not yet marked as this node's: the witness
    /// may still name the node primary or count it in sync from before, which its empty log
    /// no longer is. It takes itself out of the witness first ([`rules::leave_witness`]),
    /// and only then marks the data dir; meanwhile it neither promotes nor claims.
    fresh: bool,

    primary: primary::PrimaryState,
    standby: standby::StandbyState,

    alerts: VecDeque<String>,
    primaryships: VecDeque<Primaryship>,
    now_ms: u64,
    /// When another node last answered over the client network (None: never, or not probed).
    reached_ms: Option<u64>,
    /// The other nodes the witness has slots for.
    others: usize,
    /// When this node was held up: taken out of every silence it judges by.
    stalls: Stalls,
    /// Whether the visit in flight renews this node's slot (only such a visit extends a lease).
    visit_renews: bool,
}

impl Node {
    /// A node starting on what its data dir holds.
    pub fn new(cfg: NodeConfig, recovered: Recovered, now_ms: u64) -> Node {
        let store = recovered.store;
        let log_base = store.applied();
        let log_base_epoch = store.applied_epoch();
        let durable = recovered.entries.last().map_or(log_base, |e| e.seq);
        let epoch = recovered.entries.last().map_or(log_base_epoch, |e| e.epoch);
        Node {
            cfg,
            role: Role::Starting,
            epoch,
            witness: None,
            witness_ok_ms: None,
            stalls: Stalls::default(),
            visiting: None,
            next_visit_ms: now_ms,
            commit: log_base,
            snapshot_seq: log_base,
            fresh: recovered.fresh,
            store,
            log: recovered.entries.into(),
            log_base,
            log_base_epoch,
            durable,
            primary: primary::PrimaryState::default(),
            standby: standby::StandbyState::default(),
            alerts: VecDeque::new(),
            primaryships: VecDeque::new(),
            now_ms,
            reached_ms: None,
            others: 0,
            visit_renews: true,
        }
    }

    pub fn id(&self) -> StoreNodeId {
        self.cfg.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn commit(&self) -> u64 {
        self.commit
    }

    pub fn last_seq(&self) -> u64 {
        self.log.back().map_or(self.log_base, |e| e.seq)
    }

    pub fn last_epoch(&self) -> u64 {
        self.log.back().map_or(self.log_base_epoch, |e| e.epoch)
    }

    /// The log in memory (for the simulation's checks).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.iter()
    }

    /// Whether this node would acknowledge a write or serve a read right now.
    pub fn serving(&self) -> bool {
        self.role == Role::Primary && self.primary.serving(self.now_ms)
    }

    /// Handles one input at wall-clock `now_ms` (the clock only moves forward).
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Output> {
        self.stalls.note(self.now_ms, now_ms);
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(&mut out),
            Input::Visited(visit) => self.visited(visit, &mut out),
            Input::Persisted { through } => {
                self.durable = self.durable.max(through).min(self.last_seq());
                match self.role {
                    Role::Primary => self.advance_commit(&mut out),
                    _ => self.ack_primary(&mut out),
                }
            }
            Input::Client {
                token,
                client,
                request,
                op,
            } => self.client(token, client, request, op, &mut out),
            Input::FromStandby { node, message } => self.on_standby_frame(node, message, &mut out),
            Input::StandbyClosed { node } => self.standby_closed(node, &mut out),
            Input::PrimaryConnected => self.primary_connected(&mut out),
            Input::FromPrimary(message) => self.on_primary_frame(message, &mut out),
            Input::PrimaryClosed => self.primary_closed(&mut out),
            Input::Reached => self.reached_ms = Some(self.now_ms),
        }
        self.record_lease_end();
        self.compact_if_due(&mut out);
        out
    }

    /// How long it has been since `at_ms`, less the time this node was held up meanwhile.
    fn silent_since(&self, at_ms: u64) -> u64 {
        self.stalls.silence(at_ms, self.now_ms)
    }

    fn tick(&mut self, out: &mut Vec<Output>) {
        match self.role {
            Role::Primary => self.primary_tick(out),
            Role::Standby | Role::Candidate => self.standby_tick(out),
            Role::Starting => {}
        }
        if self.visiting.is_none() && self.now_ms >= self.next_visit_ms {
            self.visit(Purpose::Look, None, out);
        }
    }

    fn visit(&mut self, purpose: Purpose, change: Option<Change>, out: &mut Vec<Output>) {
        debug_assert!(self.visiting.is_none(), "one visit at a time");
        self.visiting = Some(purpose);
        self.next_visit_ms = self.now_ms + self.cfg.timing.visit_ms;
        let renew = !self.isolated();
        self.visit_renews = renew;
        out.push(Output::Visit { change, renew });
    }

    /// Visits the witness as soon as the one in flight is back.
    fn visit_soon(&mut self) {
        self.next_visit_ms = self.now_ms;
    }

    fn visited(&mut self, visit: Result<Visit, String>, out: &mut Vec<Output>) {
        let purpose = self.visiting.take().unwrap_or(Purpose::Look);
        let visit = match visit {
            Ok(visit) => visit,
            Err(e) => {
                self.witness_ok_ms = None;
                tracing::warn!(error = %e, "the witness cannot be visited");
                return;
            }
        };
        self.witness_ok_ms = Some(visit.started_ms);
        self.others = visit.slots.keys().filter(|id| **id != self.cfg.id).count();
        let Some(state) = visit.state.clone() else {
            if self.fresh {
                // Nobody was ever primary, so nothing was ever acknowledged: any data dir
                // holds all of it. (Marked before the claim is made; a crash in between leaves
                // a dir that resigns the claim: see the README.)
                self.fresh = false;
                out.push(Output::MarkDataDir);
            }
            // Nobody has claimed the witness: the first to claim it is primary (seed 003).
            if self.visiting.is_none() {
                let change = Change {
                    expected: 0,
                    next: self.primary_record(1, Vec::new()),
                };
                self.visit(Purpose::Claim, Some(change), out);
            }
            return;
        };
        self.witness = Some(state.clone());
        let won = visit.changed == Some(true) && state.primary == self.cfg.id;
        match purpose {
            Purpose::Claim | Purpose::Promote { .. } if won => {
                let previous = match purpose {
                    Purpose::Promote { previous } if previous != self.cfg.id => {
                        visit.slots.get(&previous).copied()
                    }
                    _ => None,
                };
                self.become_primary(&state, &visit, previous, out);
                return;
            }
            Purpose::Drop(node) if visit.changed == Some(true) => self.dropped(node, out),
            _ => {}
        }
        if state.epoch > self.epoch || (state.epoch == self.epoch && state.primary != self.cfg.id) {
            if self.role == Role::Primary {
                self.step_down(&state, out);
            }
            self.epoch = state.epoch;
        }
        match self.role {
            Role::Primary => self.primary_visited(&state, &visit, out),
            _ if self.fresh => self.leave_witness(&state, &visit, out),
            Role::Starting | Role::Standby | Role::Candidate if state.primary == self.cfg.id => {
                // Named primary by a change this process cannot have acted on: made before a
                // restart, or by a visit whose answer was an error after the change was made.
                // Take it again in a new epoch, so that no entry this node may have lost (sent
                // to standbys before it was durable here) keeps its number; meanwhile nobody
                // else would (this node's slot is fresh).
                if self.role != Role::Starting {
                    tracing::warn!(
                        epoch = state.epoch,
                        "the witness names this node primary, unknown to it: taking it again"
                    );
                }
                let change = Change {
                    expected: state.version,
                    next: self.primary_record(state.epoch + 1, Vec::new()),
                };
                self.visit(Purpose::Claim, Some(change), out);
            }
            Role::Starting | Role::Standby | Role::Candidate => {
                self.standby_visited(&state, &visit, out)
            }
        }
    }

    /// A new data dir: out of the witness's record first (a change per visit until one
    /// succeeds), then the dir is marked as this node's; a standby meanwhile.
    fn leave_witness(&mut self, state: &WitnessState, visit: &Visit, out: &mut Vec<Output>) {
        self.role = Role::Standby;
        match rules::leave_witness(self.cfg.id, state) {
            Some(next) => {
                let was = if state.primary == self.cfg.id {
                    "primary"
                } else {
                    "in sync"
                };
                self.alert(
                    format!(
                        "this node's data dir is new: taking it out of the witness (which counts \
                         it {was}), so that it is never counted for what it no longer holds"
                    ),
                    out,
                );
                let change = Change {
                    expected: state.version,
                    next,
                };
                self.visit(Purpose::Leave, Some(change), out);
            }
            None => {
                tracing::info!(
                    "the witness does not count this node: its new data dir is marked as its own"
                );
                self.fresh = false;
                out.push(Output::MarkDataDir);
                self.standby_visited(state, visit, out);
            }
        }
    }

    /// The witness record naming this node primary in `epoch`.
    fn primary_record(&self, epoch: u64, in_sync: Vec<StoreNodeId>) -> WitnessState {
        WitnessState {
            version: 0,
            epoch,
            primary: self.cfg.id,
            primary_addr: self.cfg.client_addr.clone(),
            primary_link: self.cfg.link_addr.clone(),
            in_sync,
        }
    }

    fn client(&mut self, token: u64, client: u64, request: u64, op: Op, out: &mut Vec<Output>) {
        let reply = match op {
            Op::State => Reply::State {
                seq: self.store.applied(),
                pairs: self
                    .store
                    .pairs()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            Op::Get { key, stale: true } => Reply::Value(self.store.get(&key).cloned()),
            Op::Get { key, stale: false } if self.role == Role::Primary => {
                if self.serving() {
                    Reply::Value(self.store.get(&key).cloned())
                } else {
                    self.not_serving()
                }
            }
            Op::Write(write) if self.role == Role::Primary => {
                return self.write(token, client, request, write, out);
            }
            Op::Get { .. } | Op::Write(_) => self.redirect(),
            Op::Kill { .. } | Op::Sum { .. } => Reply::Invalid {
                reason: "kill and sum are carried out by the daemon, not the store".into(),
            },
        };
        out.push(Output::Reply { token, reply });
    }

    fn redirect(&self) -> Reply {
        match &self.witness {
            Some(w) if w.primary != self.cfg.id && w.primary != NOBODY => Reply::Redirect {
                primary: Some(w.primary),
                addr: Some(w.primary_addr.clone()),
            },
            _ => Reply::Redirect {
                primary: None,
                addr: None,
            },
        }
    }

    fn not_serving(&self) -> Reply {
        let reason = if self.now_ms < self.primary.serve_from_ms {
            "new primary: waiting for the previous primary's lease to run out"
        } else {
            "primary without a current lease: cannot reach the witness"
        };
        Reply::Unavailable {
            reason: reason.into(),
        }
    }

    /// Applies committed entries to the map, and lets go of applied entries past what is kept.
    fn apply_committed(&mut self) {
        let upto = self.commit.min(self.last_seq());
        while self.store.applied() < upto {
            let next = self.store.applied() + 1;
            let index = (next - self.log_base - 1) as usize;
            let entry = &self.log[index];
            self.store.apply(entry);
        }
        while self.log.len() > KEEP_ENTRIES && self.log_base < self.store.applied() {
            let entry = self.log.pop_front().expect("longer than the limit");
            self.log_base = entry.seq;
            self.log_base_epoch = entry.epoch;
        }
    }

    /// Snapshots the applied state every `snapshot_every` entries, so the log on disk (and the
    /// time a restart takes to read it) stays bounded.
    fn compact_if_due(&mut self, out: &mut Vec<Output>) {
        let every = self.cfg.snapshot_every;
        if every > 0 && self.store.applied() >= self.snapshot_seq + every {
            self.snapshot_seq = self.store.applied();
            out.push(Output::Compact(self.store.clone()));
        }
    }

    /// The epoch of entry `seq`, if this node's memory still holds it.
    fn epoch_at(&self, seq: u64) -> Option<u64> {
        if seq == self.log_base {
            return Some(self.log_base_epoch);
        }
        if seq < self.log_base || seq > self.last_seq() {
            return None;
        }
        Some(self.log[(seq - self.log_base - 1) as usize].epoch)
    }

    fn alert(&mut self, text: String, out: &mut Vec<Output>) {
        if self.alerts.back() != Some(&text) {
            tracing::warn!(alert = %text);
            self.alerts.push_back(text.clone());
            if self.alerts.len() > KEEP_ALERTS {
                self.alerts.pop_front();
            }
            out.push(Output::Alert(text));
        }
    }

    /// Closes the current primaryship once its lease has run out, at the lease's end.
    fn record_lease_end(&mut self) {
        if let Some(last) = self.primaryships.back_mut() {
            if last.until_ms.is_none()
                && (self.role != Role::Primary || self.now_ms >= self.primary.lease_until_ms)
            {
                last.until_ms = Some(self.primary.lease_until_ms.min(self.now_ms));
            }
        }
    }

    fn record_serving_start(&mut self) {
        let open = self
            .primaryships
            .back()
            .is_some_and(|p| p.until_ms.is_none());
        if !open && self.serving() {
            self.primaryships.push_back(Primaryship {
                epoch: self.epoch,
                from_ms: self.now_ms,
                until_ms: None,
            });
            if self.primaryships.len() > KEEP_PRIMARYSHIPS {
                self.primaryships.pop_front();
            }
        }
    }

    /// The status as an observer must see it at `now_ms` (wall clock): a primaryship whose
    /// lease has run out ended then, even if this node has not noticed yet (a primary resumed
    /// after a pause may answer a status request before its first tick).
    pub fn status_as_of(&self, now_ms: u64) -> StoreNodeStatus {
        let mut status = self.status();
        if self.role == Role::Primary && now_ms >= self.primary.lease_until_ms {
            let open = status
                .primaryships
                .last_mut()
                .filter(|p| p.until_ms.is_none());
            if let Some(open) = open {
                open.until_ms = Some(self.primary.lease_until_ms.max(open.from_ms));
            }
            status.lease_ms_left = 0;
        }
        status
    }

    pub fn status(&self) -> StoreNodeStatus {
        let role = match self.role {
            Role::Primary if self.serving() => "primary",
            Role::Primary => "fenced",
            Role::Standby => "standby",
            Role::Candidate => "candidate",
            Role::Starting => "starting",
        };
        let witness_ok = self
            .witness_ok_ms
            .is_some_and(|ms| self.now_ms.saturating_sub(ms) <= self.cfg.timing.peer_timeout_ms);
        StoreNodeStatus {
            id: self.cfg.id,
            role: role.into(),
            epoch: self.epoch,
            primary: self
                .witness
                .as_ref()
                .map(|w| w.primary)
                .filter(|p| *p != NOBODY),
            primary_addr: self
                .witness
                .as_ref()
                .filter(|w| w.primary != NOBODY)
                .map(|w| w.primary_addr.clone()),
            in_sync: self
                .witness
                .as_ref()
                .map(|w| w.in_sync.clone())
                .unwrap_or_default(),
            last_seq: self.last_seq(),
            commit_seq: self.commit,
            lag: self
                .standby
                .primary_commit
                .saturating_sub(self.store.applied()),
            lease_ms_left: if self.role == Role::Primary {
                self.primary.lease_until_ms.saturating_sub(self.now_ms)
            } else {
                0
            },
            witness: if witness_ok { "ok" } else { "unreachable" }.into(),
            alerts: self.alerts.iter().cloned().collect(),
            primaryships: self.primaryships.iter().cloned().collect(),
            keys: self.store.len() as u64,
            auth_failures: 0,
            bad_frames: 0,
        }
    }
}

/// Standbys a primary knows, by id.
type Peers = BTreeMap<StoreNodeId, primary::Peer>;
/// Replies waiting for their entry to commit, by sequence number.
type Waiters = BTreeMap<u64, Vec<u64>>;
/// Clients' writes appended but not yet applied: client → (request, seq).
type Pending = HashMap<u64, (u64, u64)>;
/// Standbys counted for commits.
type Counted = BTreeSet<StoreNodeId>;
