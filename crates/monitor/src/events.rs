//! What the event log shows, found by comparing each status answer with what came before:
//! the store's failovers and alerts, the election's new leaders, recolourings and removals,
//! the dispatcher's removed workers. Pure: an answer in, the changes it reveals out.

use std::collections::{BTreeMap, BTreeSet};

use proto::{Colour, DispatcherStatus, ElectionNodeStatus, NodeId, StoreNodeStatus, WorkerId};
use serde::Serialize;

use crate::health::Health;
use crate::poller::System;

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    /// The monitor's verdict on a node changed.
    Health {
        at_ms: u64,
        addr: String,
        from: Health,
        to: Health,
    },
    /// The store has a new primary.
    Failover {
        at_ms: u64,
        addr: String,
        epoch: u64,
    },
    /// A store node raised an alert (a standby dropped from the in-sync set, a silent link…).
    Alert {
        at_ms: u64,
        addr: String,
        alert: String,
    },
    /// The election has a new leader.
    Leader { at_ms: u64, id: NodeId, term: u64 },
    /// The leader changed a member's colour.
    Recolour {
        at_ms: u64,
        id: NodeId,
        from: Option<Colour>,
        to: Option<Colour>,
    },
    /// A node left its system: an election member taken out of the membership, a worker the
    /// dispatcher removed.
    Removal {
        at_ms: u64,
        system: System,
        id: u64,
        addr: Option<String>,
    },
}

impl Change {
    /// The kind, as the JSON's `kind` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Health { .. } => "health",
            Change::Failover { .. } => "failover",
            Change::Alert { .. } => "alert",
            Change::Leader { .. } => "leader",
            Change::Recolour { .. } => "recolour",
            Change::Removal { .. } => "removal",
        }
    }
}

/// What the answers so far said, as far as the next answer is compared with it. The first
/// answer of each kind only sets the baseline: a monitor starting up is no news.
#[derive(Debug, Default)]
pub struct Observed {
    /// The highest epoch a store node has reported serving in as primary.
    primary_epoch: u64,
    /// Each store node's alerts as its last answer listed them (its recent ones, oldest first).
    alerts: BTreeMap<String, Vec<String>>,
    /// The highest term a node has reported leading in.
    leader_term: u64,
    /// The membership and colours as the current leader last announced them.
    election: Option<LeaderSaid>,
    /// The dispatcher's workers, by id, with their addresses.
    workers: Option<BTreeMap<WorkerId, String>>,
}

#[derive(Debug)]
struct LeaderSaid {
    membership: BTreeSet<NodeId>,
    colours: BTreeMap<NodeId, Option<Colour>>,
}

impl Observed {
    pub fn store(&mut self, addr: &str, status: &StoreNodeStatus, at_ms: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        if status.role == "primary" && status.epoch > self.primary_epoch {
            if self.primary_epoch > 0 {
                changes.push(Change::Failover {
                    at_ms,
                    addr: addr.to_string(),
                    epoch: status.epoch,
                });
            }
            self.primary_epoch = status.epoch;
        }
        if let Some(before) = self.alerts.get(addr) {
            // The list is a sliding window: an alert is new when the old window lacks it.
            changes.extend(
                status
                    .alerts
                    .iter()
                    .filter(|a| !before.contains(a))
                    .map(|alert| Change::Alert {
                        at_ms,
                        addr: addr.to_string(),
                        alert: alert.clone(),
                    }),
            );
        }
        self.alerts.insert(addr.to_string(), status.alerts.clone());
        changes
    }

    /// Only a leader's answer speaks for the membership and the colours (a follower's view may
    /// lag it).
    pub fn election(&mut self, status: &ElectionNodeStatus, at_ms: u64) -> Vec<Change> {
        if status.state != "leader" || status.term < self.leader_term {
            return Vec::new();
        }
        let mut changes = Vec::new();
        if status.term > self.leader_term {
            if self.leader_term > 0 {
                changes.push(Change::Leader {
                    at_ms,
                    id: status.id,
                    term: status.term,
                });
            }
            self.leader_term = status.term;
        }
        let membership: BTreeSet<NodeId> = status.membership.iter().copied().collect();
        let colours: BTreeMap<NodeId, Option<Colour>> =
            status.members.iter().map(|m| (m.id, m.colour)).collect();
        if let Some(before) = &self.election {
            changes.extend(
                before
                    .membership
                    .difference(&membership)
                    .map(|&id| Change::Removal {
                        at_ms,
                        system: System::Election,
                        id,
                        addr: None,
                    }),
            );
            for (&id, &to) in &colours {
                let from = before.colours.get(&id).copied().flatten();
                if from != to && before.colours.contains_key(&id) {
                    changes.push(Change::Recolour {
                        at_ms,
                        id,
                        from,
                        to,
                    });
                }
            }
        }
        self.election = Some(LeaderSaid {
            membership,
            colours,
        });
        changes
    }

    /// Workers that were in the dispatcher's table and are not any more. The table it answers
    /// a status request with holds its first rows only (100): removals beyond them go unseen.
    pub fn dispatcher(&mut self, status: &DispatcherStatus, at_ms: u64) -> Vec<Change> {
        let now: BTreeMap<WorkerId, String> = status
            .workers
            .iter()
            .map(|w| (w.id, w.addr.clone()))
            .collect();
        let complete = status.worker_count as usize == status.workers.len();
        let mut changes = Vec::new();
        if let Some(before) = &self.workers {
            let last_row = now.keys().next_back().copied().unwrap_or(0);
            changes.extend(
                before
                    .iter()
                    // A worker past the last row may only have slipped off the first page.
                    .filter(|(id, _)| !now.contains_key(id) && (complete || **id < last_row))
                    .map(|(&id, addr)| Change::Removal {
                        at_ms,
                        system: System::Dispatcher,
                        id,
                        addr: Some(addr.clone()),
                    }),
            );
        }
        self.workers = Some(now);
        changes
    }
}

#[cfg(test)]
mod tests {
    use proto::{MemberStatus, WorkerRow};

    use super::*;

    fn store(role: &str, epoch: u64, alerts: &[&str]) -> StoreNodeStatus {
        StoreNodeStatus {
            role: role.into(),
            epoch,
            alerts: alerts.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_higher_epoch_served_as_primary_is_a_failover_but_the_first_primary_is_not() {
        let mut seen = Observed::default();
        assert_eq!(seen.store("s1", &store("primary", 1, &[]), 10), vec![]);
        assert_eq!(seen.store("s2", &store("standby", 2, &[]), 20), vec![]);
        assert_eq!(seen.store("s1", &store("primary", 1, &[]), 30), vec![]);
        assert_eq!(
            seen.store("s2", &store("primary", 2, &[]), 40),
            vec![Change::Failover {
                at_ms: 40,
                addr: "s2".into(),
                epoch: 2
            }]
        );
        // The old primary, not yet fenced, still says primary of epoch 1: no news.
        assert_eq!(seen.store("s1", &store("primary", 1, &[]), 50), vec![]);
    }

    #[test]
    fn an_alert_is_reported_once_when_it_first_appears() {
        let mut seen = Observed::default();
        assert_eq!(seen.store("s1", &store("primary", 1, &["old"]), 1), vec![]);
        let changes = seen.store("s1", &store("primary", 1, &["old", "link to 2 lost"]), 2);
        assert_eq!(
            changes,
            vec![Change::Alert {
                at_ms: 2,
                addr: "s1".into(),
                alert: "link to 2 lost".into()
            }]
        );
        assert_eq!(
            seen.store("s1", &store("primary", 1, &["link to 2 lost"]), 3),
            vec![]
        );
    }

    fn election(
        id: NodeId,
        state: &str,
        term: u64,
        members: &[(NodeId, Colour)],
    ) -> ElectionNodeStatus {
        ElectionNodeStatus {
            id,
            state: state.into(),
            leader: Some(id),
            term,
            colour: None,
            members: members
                .iter()
                .map(|&(id, c)| MemberStatus {
                    id,
                    colour: Some(c),
                })
                .collect(),
            membership: members.iter().map(|m| m.0).collect(),
            quorum: members.len() as u32 / 2 + 1,
            leaderships: vec![],
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }
    }

    #[test]
    fn a_new_leader_a_recolouring_and_a_removal_each_show_once() {
        use Colour::{Green, Red};
        let mut seen = Observed::default();
        let three = [(1, Green), (2, Red), (3, Red)];
        assert_eq!(seen.election(&election(3, "leader", 4, &three), 1), vec![]);
        // A follower's (possibly stale) view says nothing.
        let stale = [(1, Red), (2, Red)];
        assert_eq!(
            seen.election(&election(1, "follower", 4, &stale), 2),
            vec![]
        );

        let two = [(1, Red), (2, Green)];
        let changes = seen.election(&election(2, "leader", 5, &two), 3);
        assert_eq!(
            changes,
            vec![
                Change::Leader {
                    at_ms: 3,
                    id: 2,
                    term: 5
                },
                Change::Removal {
                    at_ms: 3,
                    system: System::Election,
                    id: 3,
                    addr: None
                },
                Change::Recolour {
                    at_ms: 3,
                    id: 1,
                    from: Some(Green),
                    to: Some(Red)
                },
                Change::Recolour {
                    at_ms: 3,
                    id: 2,
                    from: Some(Red),
                    to: Some(Green)
                },
            ]
        );
        assert_eq!(seen.election(&election(2, "leader", 5, &two), 4), vec![]);
        // The deposed leader, still answering as leader of an older term, is not news.
        assert_eq!(seen.election(&election(3, "leader", 4, &three), 5), vec![]);
    }

    fn dispatcher(ids: &[WorkerId], worker_count: u64) -> DispatcherStatus {
        DispatcherStatus {
            worker_count,
            workers: ids
                .iter()
                .map(|&id| WorkerRow {
                    id,
                    addr: format!("w{id}"),
                    weight: 1,
                    activations: 0,
                    active: false,
                    available: true,
                    answers_since_activation: 0,
                    last_comm_ms_ago: -1,
                    last_heard_ms_ago: 0,
                    share: 0.0,
                })
                .collect(),
            fairness_gap: 0.0,
            fairness_bound: 1.0,
            total_activations: 0,
            active: 0,
            max_active: 5,
            uptime_ms: 0,
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }
    }

    #[test]
    fn a_worker_gone_from_the_table_is_a_removal_unless_it_only_slipped_off_the_page() {
        let mut seen = Observed::default();
        assert_eq!(seen.dispatcher(&dispatcher(&[1, 2, 3], 3), 1), vec![]);
        assert_eq!(
            seen.dispatcher(&dispatcher(&[1, 3, 4], 3), 2),
            vec![Change::Removal {
                at_ms: 2,
                system: System::Dispatcher,
                id: 2,
                addr: Some("w2".into())
            }]
        );
        // Of 5 workers only the first 2 rows came: 3 and 4 may be past the page.
        assert_eq!(seen.dispatcher(&dispatcher(&[0, 1], 5), 3), vec![]);
    }
}
