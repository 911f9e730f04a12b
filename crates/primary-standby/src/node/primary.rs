//! What the primary does: take writes, replicate them, acknowledge once every counted standby
//! has them, keep its lease, catch joining standbys up, and change the in-sync set through the
//! witness.

use proto::{Entry, Reply, StoreMessage, StoreNodeId, Write};

use super::rules::{self, CatchUp};
use super::{Counted, Node, Output, Peers, Pending, Purpose, Role, Waiters};
use crate::witness::{Change, Visit, WitnessState};

/// Largest batch of entries (or snapshot pairs) in one frame, in payload bytes (estimated):
/// well under the 1 MiB frame limit.
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub(super) struct PrimaryState {
    /// Acknowledge and serve reads only before this (wall ms)…
    pub lease_until_ms: u64,
    /// …and not before this: the previous primary's lease must have run out.
    pub serve_from_ms: u64,
    pub peers: Peers,
    /// Standbys whose acknowledgement a commit needs.
    pub counted: Counted,
    pub waiters: Waiters,
    pub pending: Pending,
}

impl PrimaryState {
    pub fn serving(&self, now_ms: u64) -> bool {
        now_ms >= self.serve_from_ms && now_ms < self.lease_until_ms
    }
}

/// A standby connected to the primary.
#[derive(Debug, Clone, Default)]
pub(super) struct Peer {
    /// Its log is durable through this entry.
    pub acked: u64,
    /// Entries sent to it through this one.
    pub sent: u64,
    pub last_heard_ms: u64,
    pub last_sent_ms: u64,
}

impl Node {
    pub(super) fn become_primary(
        &mut self,
        state: &WitnessState,
        visit: &Visit,
        previous_slot: Option<u64>,
        out: &mut Vec<Output>,
    ) {
        let timing = self.cfg.timing;
        self.role = Role::Primary;
        self.epoch = state.epoch;
        self.primary = PrimaryState {
            lease_until_ms: visit.started_ms + timing.lease_ms,
            serve_from_ms: rules::serve_from(previous_slot, self.now_ms, &timing),
            ..PrimaryState::default()
        };
        if self.standby.following.is_some() {
            out.push(Output::StopFollowing);
        }
        self.standby = Default::default();
        // Everything in this node's log is now the log: entries it had not seen committed
        // were perhaps acknowledged by the previous primary, and they commit now (no standby
        // is counted until one has caught up).
        self.advance_commit(out);
        tracing::info!(
            epoch = self.epoch,
            last_seq = self.last_seq(),
            serve_in_ms = self.primary.serve_from_ms.saturating_sub(self.now_ms),
            "primary: the witness names this node primary"
        );
        self.record_serving_start();
    }

    /// A higher epoch exists: stop at once, answer every waiting client, follow the new
    /// primary.
    pub(super) fn step_down(&mut self, state: &WitnessState, out: &mut Vec<Output>) {
        tracing::warn!(
            epoch = self.epoch,
            new_epoch = state.epoch,
            new_primary = state.primary,
            "stepping down: the witness names another primary"
        );
        let old = std::mem::take(&mut self.primary);
        for node in old.peers.keys() {
            out.push(Output::CloseStandby { node: *node });
        }
        for tokens in old.waiters.into_values() {
            for token in tokens {
                out.push(Output::Reply {
                    token,
                    reply: Reply::Unavailable {
                        reason: "the primary stepped down before this write committed; retry it"
                            .into(),
                    },
                });
            }
        }
        self.primary.lease_until_ms = old.lease_until_ms.min(self.now_ms);
        self.role = Role::Standby;
        self.record_lease_end();
    }

    pub(super) fn primary_visited(
        &mut self,
        state: &WitnessState,
        visit: &Visit,
        out: &mut Vec<Output>,
    ) {
        // Still primary in this epoch: the lease runs from when this visit renewed the slot
        // (a visit that left the slot to age, when isolated, extends nothing).
        if self.visit_renews {
            self.primary.lease_until_ms = self
                .primary
                .lease_until_ms
                .max(visit.started_ms + self.cfg.timing.lease_ms);
        }
        // Counted: exactly the witness's in-sync set (a standby being added is counted again
        // when its change is made, just below). Taken from the witness, not from what this
        // node believes it changed: a change whose visit failed may have been made or not.
        self.primary.counted = state.in_sync.iter().copied().collect();
        self.record_serving_start();
        self.advance_commit(out);
        self.change_in_sync(out);
    }

    /// A primary that hears no standby and reaches no other node over the client network is
    /// cut off from everything but the witness: it must not drop its standbys from the in-sync
    /// set (one of them has to take over), and it lets its slot age so that one can. Only
    /// judged when the daemon probes (`Reached` came at least once) and there are at least two
    /// others: with one, a dead standby could not be told from a cut-off primary. Probes get a
    /// longer grace (twice the peer timeout) than links: a probe is a whole exchange, and a
    /// busy machine answers it late; giving up the lease for nothing is a needless failover.
    /// Time this node was held up is not silence (see [`super::stalls`]).
    pub(super) fn isolated(&self) -> bool {
        let timeout = self.cfg.timing.peer_timeout_ms;
        let silent_for = |at: u64| self.silent_since(at);
        self.role == Role::Primary
            && self.others >= 2
            && self
                .reached_ms
                .is_some_and(|at| silent_for(at) > 2 * timeout)
            && self
                .primary
                .peers
                .values()
                .all(|peer| silent_for(peer.last_heard_ms) > timeout)
    }

    pub(super) fn primary_tick(&mut self, out: &mut Vec<Output>) {
        let now = self.now_ms;
        let timing = self.cfg.timing;
        let commit = self.commit;
        let epoch = self.epoch;
        for (node, peer) in &mut self.primary.peers {
            if now.saturating_sub(peer.last_sent_ms) >= timing.keepalive_ms {
                peer.last_sent_ms = now;
                out.push(Output::ToStandby {
                    node: *node,
                    message: StoreMessage::Append {
                        epoch,
                        entries: Vec::new(),
                        commit,
                    },
                });
            }
        }
        self.change_in_sync(out);
    }

    /// Drops a counted standby that stopped answering, or adds one that caught up, one change
    /// at a time, through the witness.
    fn change_in_sync(&mut self, out: &mut Vec<Output>) {
        if self.visiting.is_some() {
            return;
        }
        let Some(state) = self.witness.clone() else {
            return;
        };
        let now = self.now_ms;
        let timeout = self.cfg.timing.peer_timeout_ms;
        let last = self.last_seq();
        let silent = state.in_sync.iter().copied().find(|node| {
            self.primary
                .peers
                .get(node)
                .is_none_or(|peer| now.saturating_sub(peer.last_heard_ms) > timeout)
        });
        if let Some(node) = silent {
            // Heard *well* after it (a keep-alive interval): two standbys cut off together
            // fall silent a few milliseconds apart, and that is no evidence of anything.
            let silent_since = self
                .primary
                .peers
                .get(&node)
                .map_or(0, |peer| peer.last_heard_ms + self.cfg.timing.keepalive_ms);
            let others_heard = self
                .primary
                .peers
                .iter()
                .filter(|(other, _)| **other != node)
                .map(|(_, peer)| peer.last_heard_ms);
            let reached = (self.others >= 2).then_some(self.reached_ms).flatten();
            if !rules::may_drop(silent_since, reached, others_heard) {
                self.alert(
                    "isolated: no standby and no other node answers; keeping the in-sync set \
                     and letting the lease lapse so that an in-sync standby can take over"
                        .into(),
                    out,
                );
                return;
            }
            let mut next = state.clone();
            next.in_sync.retain(|n| *n != node);
            let change = Change {
                expected: state.version,
                next,
            };
            self.visit(Purpose::Drop(node), Some(change), out);
            return;
        }
        // Caught up: it holds everything committed so far (every write acknowledged or about
        // to be). Not "everything in the log": under a steady stream of writes the log's end
        // is always a little ahead, and a standby waiting for it would never be added back.
        let commit = self.commit;
        let caught_up = self.primary.peers.iter().find_map(|(node, peer)| {
            (!state.in_sync.contains(node) && peer.acked >= commit && peer.sent == last)
                .then_some(*node)
        });
        if let Some(node) = caught_up {
            // Counted from now on, before the witness says so: every later commit waits for
            // it, so from the moment the witness lets it be promoted it holds every
            // acknowledged write.
            self.primary.counted.insert(node);
            let mut next = state.clone();
            next.in_sync.push(node);
            next.in_sync.sort_unstable();
            let change = Change {
                expected: state.version,
                next,
            };
            self.visit(Purpose::Add(node), Some(change), out);
        }
    }

    /// The witness now records `node` out of sync: commits stop waiting for it.
    pub(super) fn dropped(&mut self, node: StoreNodeId, out: &mut Vec<Output>) {
        if self.role != Role::Primary {
            return;
        }
        self.primary.counted.remove(&node);
        self.alert(
            format!("standby {node} dropped from the in-sync set: it stopped answering"),
            out,
        );
        self.advance_commit(out);
    }

    pub(super) fn write(
        &mut self,
        token: u64,
        client: u64,
        request: u64,
        write: Write,
        out: &mut Vec<Output>,
    ) {
        if let Err(reason) = self.cfg.limits.check(&write) {
            out.push(Output::Reply {
                token,
                reply: Reply::Invalid { reason },
            });
            return;
        }
        if !self.serving() {
            let reply = self.not_serving();
            out.push(Output::Reply { token, reply });
            return;
        }
        // A retry of a write already in the log is answered when that entry commits.
        let known = self
            .primary
            .pending
            .get(&client)
            .copied()
            .or_else(|| self.store.session(client).map(|s| (s.request, s.seq)));
        if let Some((last_request, seq)) = known {
            if request == last_request {
                self.wait_for(seq, token, out);
                return;
            }
            if request < last_request {
                out.push(Output::Reply {
                    token,
                    reply: Reply::Invalid {
                        reason: format!(
                            "request {request} is older than this client's last ({last_request}): \
                             a client sends its writes one at a time, numbered upwards"
                        ),
                    },
                });
                return;
            }
        }
        let entry = Entry {
            seq: self.last_seq() + 1,
            epoch: self.epoch,
            client,
            request,
            write,
        };
        self.primary.pending.insert(client, (request, entry.seq));
        self.log.push_back(entry.clone());
        self.replicate(&entry, out);
        out.push(Output::Persist(vec![entry.clone()]));
        self.wait_for(entry.seq, token, out);
    }

    fn replicate(&mut self, entry: &Entry, out: &mut Vec<Output>) {
        for (node, peer) in &mut self.primary.peers {
            // A standby still catching up gets this entry with the rest of its catch-up.
            if peer.sent + 1 == entry.seq {
                peer.sent = entry.seq;
                peer.last_sent_ms = self.now_ms;
                out.push(Output::ToStandby {
                    node: *node,
                    message: StoreMessage::Append {
                        epoch: self.epoch,
                        entries: vec![entry.clone()],
                        commit: self.commit,
                    },
                });
            }
        }
    }

    fn wait_for(&mut self, seq: u64, token: u64, out: &mut Vec<Output>) {
        if seq <= self.commit && self.serving() {
            out.push(Output::Reply {
                token,
                reply: Reply::Written { seq },
            });
        } else {
            self.primary.waiters.entry(seq).or_default().push(token);
        }
    }

    /// Moves the commit point as far as the rules allow, applies, and answers the writes that
    /// committed — while the lease holds; otherwise they wait for it (or for a step-down).
    pub(super) fn advance_commit(&mut self, out: &mut Vec<Output>) {
        let acked = self
            .primary
            .peers
            .iter()
            .map(|(node, peer)| (*node, peer.acked))
            .collect();
        let point = rules::commit_point(self.durable, &self.primary.counted, &acked);
        if point > self.commit {
            self.commit = point;
            self.apply_committed();
            let applied = self.store.applied();
            self.primary.pending.retain(|_, (_, seq)| *seq > applied);
        }
        if !self.serving() {
            return;
        }
        let later = self.primary.waiters.split_off(&(self.commit + 1));
        let done = std::mem::replace(&mut self.primary.waiters, later);
        for (seq, tokens) in done {
            for token in tokens {
                out.push(Output::Reply {
                    token,
                    reply: Reply::Written { seq },
                });
            }
        }
    }

    pub(super) fn on_standby_frame(
        &mut self,
        node: StoreNodeId,
        message: StoreMessage,
        out: &mut Vec<Output>,
    ) {
        if let Some(epoch) = message.epoch() {
            if epoch > self.epoch {
                // Someone knows a newer epoch: the witness says which.
                self.visit_soon();
                return;
            }
            if epoch < self.epoch && !matches!(message, StoreMessage::Join { .. }) {
                out.push(Output::ToStandby {
                    node,
                    message: StoreMessage::Fenced { epoch: self.epoch },
                });
                return;
            }
        }
        if self.role != Role::Primary {
            out.push(Output::ToStandby {
                node,
                message: StoreMessage::Fenced { epoch: self.epoch },
            });
            out.push(Output::CloseStandby { node });
            return;
        }
        match message {
            StoreMessage::Join {
                last_seq,
                last_epoch,
                ..
            } => self.join(node, last_seq, last_epoch, out),
            StoreMessage::Appended { last_seq, .. } => {
                if let Some(peer) = self.primary.peers.get_mut(&node) {
                    peer.acked = peer.acked.max(last_seq.min(peer.sent));
                    peer.last_heard_ms = self.now_ms;
                }
                self.advance_commit(out);
                self.change_in_sync(out);
            }
            StoreMessage::Fenced { .. } => self.visit_soon(),
            StoreMessage::Request { .. }
            | StoreMessage::Reply { .. }
            | StoreMessage::Append { .. }
            | StoreMessage::Snapshot { .. } => {
                tracing::debug!(node, "unexpected frame on a standby's link");
            }
        }
    }

    /// A standby (re)joins: send what it lacks — entries after its last if its log is a
    /// prefix of ours, else the whole state and then the entries after it.
    fn join(&mut self, node: StoreNodeId, last_seq: u64, last_epoch: u64, out: &mut Vec<Output>) {
        let plan = rules::catch_up(last_seq, last_epoch, |seq| self.epoch_at(seq));
        tracing::info!(node, last_seq, last_epoch, ?plan, "standby joined");
        let from = match plan {
            CatchUp::Entries { from } => from,
            CatchUp::Snapshot => {
                self.send_snapshot(node, out);
                self.store.applied()
            }
        };
        let now = self.now_ms;
        let last = self.last_seq();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for seq in from + 1..=last {
            let entry = &self.log[(seq - self.log_base - 1) as usize];
            bytes += entry_size(entry);
            batch.push(entry.clone());
            if bytes >= BATCH_BYTES {
                out.push(self.append_to(node, std::mem::take(&mut batch)));
                bytes = 0;
            }
        }
        out.push(self.append_to(node, batch));
        self.primary.peers.insert(
            node,
            Peer {
                acked: 0,
                sent: last,
                last_heard_ms: now,
                last_sent_ms: now,
            },
        );
        // A standby counted before it left is counted again only once the witness says so.
        if !self
            .witness
            .as_ref()
            .is_some_and(|w| w.in_sync.contains(&node))
        {
            self.primary.counted.remove(&node);
        }
    }

    fn append_to(&self, node: StoreNodeId, entries: Vec<Entry>) -> Output {
        Output::ToStandby {
            node,
            message: StoreMessage::Append {
                epoch: self.epoch,
                entries,
                commit: self.commit,
            },
        }
    }

    fn send_snapshot(&self, node: StoreNodeId, out: &mut Vec<Output>) {
        let mut pairs = Vec::new();
        let mut bytes = 0;
        let chunk = |pairs: Vec<(String, String)>, done: bool, out: &mut Vec<Output>| {
            out.push(Output::ToStandby {
                node,
                message: StoreMessage::Snapshot {
                    epoch: self.epoch,
                    seq: self.store.applied(),
                    seq_epoch: self.store.applied_epoch(),
                    pairs,
                    sessions: if done {
                        self.store.sessions().copied().collect()
                    } else {
                        Vec::new()
                    },
                    done,
                },
            })
        };
        for (key, value) in self.store.pairs() {
            bytes += key.len() + value.len() + 8;
            pairs.push((key.clone(), value.clone()));
            if bytes >= BATCH_BYTES {
                chunk(std::mem::take(&mut pairs), false, out);
                bytes = 0;
            }
        }
        chunk(pairs, true, out);
    }

    pub(super) fn standby_closed(&mut self, node: StoreNodeId, out: &mut Vec<Output>) {
        if self.primary.peers.remove(&node).is_some() {
            tracing::info!(node, "a standby's link closed");
        }
        if self.role == Role::Primary {
            // A counted standby that is gone is dropped through the witness at once: a killed
            // container's socket closes, no need to wait for the timeout.
            self.change_in_sync(out);
        }
    }
}

/// Roughly what an entry takes in a frame.
fn entry_size(entry: &Entry) -> usize {
    32 + match &entry.write {
        Write::Set { key, value } => key.len() + value.len(),
        Write::Delete { key } => key.len(),
        Write::Update { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len() + 4).sum(),
    }
}
