//! What a standby does: follow the primary the witness names, keep its log durable and
//! acknowledged, and — when the primary is lost — tell a dead primary from a cut link by its
//! slot in the witness before it promotes (seed 003).

use proto::{ClientSession, StoreMessage, StoreNodeId};

use super::rules::{self, Promotion};
use super::{Node, Output, Purpose, Role};
use crate::store::Store;
use crate::witness::{Change, NOBODY, Visit, WitnessState};

#[derive(Debug, Default)]
pub(super) struct StandbyState {
    /// The primary this node keeps a link to, and the link's address.
    pub following: Option<(StoreNodeId, String)>,
    pub link_up: bool,
    pub heard_ms: u64,
    /// Since when the primary is lost (link closed or silent), if it is.
    pub lost_since: Option<u64>,
    /// The primary's commit point, as it last said.
    pub primary_commit: u64,
    /// A snapshot being received: its pairs so far.
    pub snapshot: Vec<(String, String)>,
}

impl Node {
    pub(super) fn standby_visited(
        &mut self,
        state: &WitnessState,
        visit: &Visit,
        out: &mut Vec<Output>,
    ) {
        if self.role == Role::Starting || self.role == Role::Candidate {
            self.role = Role::Standby;
        }
        if state.primary == NOBODY && self.standby.lost_since.is_none() {
            // The primary resigned (its data dir was emptied): look for a successor.
            self.standby.lost_since = Some(self.now_ms);
        }
        self.follow(state, out);
        if self.standby.lost_since.is_none() {
            return;
        }
        let addrs = (self.cfg.client_addr.as_str(), self.cfg.link_addr.as_str());
        match rules::promotion(
            self.cfg.id,
            addrs,
            state,
            &visit.slots,
            |slot| self.silent_since(slot),
            &self.cfg.timing,
            !self.fresh,
        ) {
            Promotion::PrimaryAlive { primary, age_ms } => {
                if self.standby.lost_since.is_some_and(|since| {
                    self.now_ms.saturating_sub(since) >= self.cfg.timing.peer_timeout_ms
                }) || !self.standby.link_up
                {
                    tracing::debug!(primary, age_ms, "primary lost but its slot is fresh");
                    // One alert per episode: the slot's age is in the debug line above.
                    self.alert(
                        format!(
                            "replication link to {primary} down; its witness slot is fresh: \
                             not promoting"
                        ),
                        out,
                    );
                }
            }
            Promotion::NotInSync => {
                self.alert(
                    format!(
                        "primary {} lost, and this node is not in sync: it cannot be promoted",
                        state.primary
                    ),
                    out,
                );
            }
            Promotion::NewDataDir => {
                self.alert(
                    format!(
                        "primary {} lost; this node's data dir is new: it cannot be promoted",
                        state.primary
                    ),
                    out,
                );
            }
            Promotion::Promote(next) => {
                tracing::warn!(
                    primary = state.primary,
                    epoch = next.epoch,
                    "primary lost and its witness slot is stale: promoting"
                );
                self.role = Role::Candidate;
                let change = Change {
                    expected: state.version,
                    next,
                };
                self.visit(
                    Purpose::Promote {
                        previous: state.primary,
                    },
                    Some(change),
                    out,
                );
            }
        }
    }

    /// Keeps a link to the primary the witness names.
    fn follow(&mut self, state: &WitnessState, out: &mut Vec<Output>) {
        if state.primary == self.cfg.id || state.primary == NOBODY {
            return;
        }
        let target = (state.primary, state.primary_link.clone());
        if self.standby.following.as_ref() != Some(&target) {
            tracing::info!(
                primary = state.primary,
                link = %state.primary_link,
                epoch = state.epoch,
                "following the primary the witness names"
            );
            self.standby.following = Some(target);
            self.standby.link_up = false;
            self.standby.lost_since = None;
            out.push(Output::Follow {
                primary: state.primary,
                link: state.primary_link.clone(),
            });
        }
    }

    pub(super) fn standby_tick(&mut self, out: &mut Vec<Output>) {
        let timeout = self.cfg.timing.peer_timeout_ms;
        // Time this node was held up is not the primary's silence (see `stalls`).
        if self.standby.link_up && self.silent_since(self.standby.heard_ms) > timeout {
            if self.standby.lost_since.is_none() {
                tracing::warn!("the primary has been silent for {timeout} ms");
                self.standby.lost_since = Some(self.now_ms);
                self.visit_soon();
            }
            // A silent link may be dead without knowing it (a cut, a reset lost on the way,
            // a join the other end dropped): connect again rather than wait on it, however
            // the primary came to be counted lost.
            if let Some((primary, link)) = self.standby.following.clone() {
                self.standby.link_up = false;
                out.push(Output::Follow { primary, link });
            }
        }
    }

    pub(super) fn primary_connected(&mut self, out: &mut Vec<Output>) {
        if self.role == Role::Primary {
            return; // a link made before this node was promoted
        }
        self.standby.link_up = true;
        self.standby.heard_ms = self.now_ms;
        out.push(Output::ToPrimary(StoreMessage::Join {
            epoch: self.epoch,
            node: self.cfg.id,
            last_seq: self.last_seq(),
            last_epoch: self.last_epoch(),
        }));
    }

    pub(super) fn primary_closed(&mut self, _out: &mut [Output]) {
        self.standby.link_up = false;
        if self.role != Role::Primary && self.standby.lost_since.is_none() {
            // A killed primary's kernel closes the link: look at the witness now.
            self.standby.lost_since = Some(self.now_ms);
            self.visit_soon();
        }
    }

    pub(super) fn on_primary_frame(&mut self, message: StoreMessage, out: &mut Vec<Output>) {
        if self.role == Role::Primary {
            return;
        }
        if let Some(epoch) = message.epoch() {
            if epoch < self.epoch {
                out.push(Output::ToPrimary(StoreMessage::Fenced {
                    epoch: self.epoch,
                }));
                return;
            }
            self.epoch = epoch;
        }
        self.standby.heard_ms = self.now_ms;
        if self.standby.lost_since.take().is_some() {
            tracing::info!("the primary is heard again");
        }
        match message {
            StoreMessage::Append {
                entries, commit, ..
            } => {
                let mut fresh = Vec::new();
                for entry in entries {
                    if entry.seq == self.last_seq() + 1 {
                        self.log.push_back(entry.clone());
                        fresh.push(entry);
                    } else if entry.seq > self.last_seq() + 1 {
                        tracing::warn!(
                            seq = entry.seq,
                            last = self.last_seq(),
                            "a gap in the primary's entries; ignoring them"
                        );
                        break;
                    }
                }
                self.standby.primary_commit = commit;
                self.commit = self.commit.max(commit.min(self.durable));
                self.apply_committed();
                if fresh.is_empty() {
                    self.ack_primary(out);
                } else {
                    out.push(Output::Persist(fresh));
                }
            }
            StoreMessage::Snapshot {
                seq,
                seq_epoch,
                pairs,
                sessions,
                done,
                ..
            } => {
                self.standby.snapshot.extend(pairs);
                if done {
                    self.install_snapshot(seq, seq_epoch, sessions, out);
                }
            }
            StoreMessage::Fenced { .. } => self.visit_soon(),
            StoreMessage::Join { .. }
            | StoreMessage::Appended { .. }
            | StoreMessage::Request { .. }
            | StoreMessage::Reply { .. } => {
                tracing::debug!("unexpected frame from the primary");
            }
        }
    }

    fn install_snapshot(
        &mut self,
        seq: u64,
        seq_epoch: u64,
        sessions: Vec<ClientSession>,
        out: &mut Vec<Output>,
    ) {
        let pairs = std::mem::take(&mut self.standby.snapshot);
        tracing::info!(
            seq,
            keys = pairs.len(),
            "replacing this node's state with the primary's"
        );
        self.store = Store::from_snapshot(seq, seq_epoch, pairs, sessions);
        self.log.clear();
        self.log_base = seq;
        self.log_base_epoch = seq_epoch;
        self.commit = seq;
        self.snapshot_seq = seq;
        // What was durable here is gone with the old log; the snapshot's install reports back.
        self.durable = 0;
        out.push(Output::InstallSnapshot(self.store.clone()));
    }

    /// Tells the primary how far this node's log is durable.
    pub(super) fn ack_primary(&mut self, out: &mut Vec<Output>) {
        if self.standby.link_up {
            self.commit = self
                .commit
                .max(self.standby.primary_commit.min(self.durable));
            self.apply_committed();

            out.push(Output::ToPrimary(StoreMessage::Appended {
                epoch: self.epoch,
                last_seq: self.durable,
            }));
        }
    }
}
