//! Each system at a glance, from the nodes' latest answers: who is the store's primary, who
//! leads the election and how it coloured the members, how fair the dispatcher has been. What
//! `/api/status` and the page show above the node table. Pure.

use proto::{Colour, MemberStatus, NodeId};
use serde::Serialize;

use crate::health::Health;
use crate::poller::{NodeHealth, System};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub store: Option<StoreOverview>,
    pub election: Option<ElectionOverview>,
    pub dispatcher: Option<DispatcherOverview>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreOverview {
    /// The node serving as primary in the highest epoch any healthy node reports.
    pub primary: Option<String>,
    pub epoch: u64,
    pub nodes: usize,
    pub up: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElectionOverview {
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The members and colours as the leader announces them (its view is authoritative).
    pub members: Vec<MemberStatus>,
    pub green: usize,
    /// ⌈n/3⌉ of the members: what the colouring promises.
    pub green_expected: usize,
    pub nodes: usize,
    pub up: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DispatcherOverview {
    pub addr: String,
    pub up: bool,
    pub workers: u64,
    pub active: u32,
    pub max_active: u32,
    pub total_activations: u64,
    pub fairness_gap: f64,
    pub fairness_bound: f64,
}

pub fn of(nodes: &[NodeHealth]) -> Overview {
    Overview {
        store: store(nodes),
        election: election(nodes),
        dispatcher: dispatcher(nodes),
    }
}

fn of_system(nodes: &[NodeHealth], system: System) -> impl Iterator<Item = &NodeHealth> {
    nodes.iter().filter(move |n| n.system == system)
}

fn store(nodes: &[NodeHealth]) -> Option<StoreOverview> {
    let store: Vec<&NodeHealth> = of_system(nodes, System::Store).collect();
    if store.is_empty() {
        return None;
    }
    // A deposed primary that has not heard of the new epoch still says primary: the highest
    // epoch wins, and only a node that answers now counts.
    let primary = store
        .iter()
        .filter(|n| n.state == Health::Up)
        .filter_map(|n| n.store.as_ref().map(|s| (n, s)))
        .filter(|(_, s)| s.role == "primary")
        .max_by_key(|(_, s)| s.epoch);
    Some(StoreOverview {
        primary: primary.map(|(n, _)| n.addr.clone()),
        epoch: primary.map_or(0, |(_, s)| s.epoch),
        nodes: store.len(),
        up: store.iter().filter(|n| n.state == Health::Up).count(),
    })
}

fn election(nodes: &[NodeHealth]) -> Option<ElectionOverview> {
    let election: Vec<&NodeHealth> = of_system(nodes, System::Election).collect();
    if election.is_empty() {
        return None;
    }
    let answering = election
        .iter()
        .filter(|n| n.state == Health::Up)
        .filter_map(|n| n.election.as_ref());
    // The leader's own answer if one is up (the highest term, should two say so); else what
    // the newest follower believes.
    let view = answering
        .clone()
        .filter(|s| s.state == "leader")
        .max_by_key(|s| s.term);
    let view = view.or_else(|| answering.max_by_key(|s| s.term));
    let members = view.map(|s| s.members.clone()).unwrap_or_default();
    let green = members
        .iter()
        .filter(|m| m.colour == Some(Colour::Green))
        .count();
    Some(ElectionOverview {
        leader: view.and_then(|s| s.leader),
        term: view.map_or(0, |s| s.term),
        green,
        green_expected: members.len().div_ceil(3),
        members,
        nodes: election.len(),
        up: election.iter().filter(|n| n.state == Health::Up).count(),
    })
}

fn dispatcher(nodes: &[NodeHealth]) -> Option<DispatcherOverview> {
    let node = of_system(nodes, System::Dispatcher).next()?;
    let status = node.dispatcher.as_ref();
    Some(DispatcherOverview {
        addr: node.addr.clone(),
        up: node.state == Health::Up,
        workers: status.map_or(0, |s| s.worker_count),
        active: status.map_or(0, |s| s.active),
        max_active: status.map_or(0, |s| s.max_active),
        total_activations: status.map_or(0, |s| s.total_activations),
        fairness_gap: status.map_or(0.0, |s| s.fairness_gap),
        fairness_bound: status.map_or(0.0, |s| s.fairness_bound),
    })
}

#[cfg(test)]
mod tests {
    use proto::{ElectionNodeStatus, StoreNodeStatus};

    use super::*;

    fn node(system: System, addr: &str, state: Health) -> NodeHealth {
        let mut n = NodeHealth::new(system, addr.to_string());
        n.state = state;
        n
    }

    fn store_node(addr: &str, state: Health, role: &str, epoch: u64) -> NodeHealth {
        let mut n = node(System::Store, addr, state);
        n.store = Some(StoreNodeStatus {
            role: role.into(),
            epoch,
            ..Default::default()
        });
        n
    }

    #[test]
    fn the_primary_is_the_healthy_one_with_the_highest_epoch() {
        let nodes = [
            store_node("s1", Health::Up, "primary", 3),
            store_node("s2", Health::Up, "primary", 4),
            store_node("s3", Health::ServiceDown, "primary", 5),
        ];
        let store = of(&nodes).store.unwrap();
        assert_eq!(store.primary.as_deref(), Some("s2"));
        assert_eq!((store.epoch, store.nodes, store.up), (4, 3, 2));
        assert_eq!(of(&nodes).election, None);
    }

    fn election_node(addr: &str, state: &str, term: u64, colours: &[Option<Colour>]) -> NodeHealth {
        let mut n = node(System::Election, addr, Health::Up);
        n.election = Some(ElectionNodeStatus {
            id: 9,
            state: state.into(),
            leader: Some(9),
            term,
            colour: None,
            members: colours
                .iter()
                .enumerate()
                .map(|(i, &colour)| MemberStatus {
                    id: i as u64,
                    colour,
                })
                .collect(),
            membership: vec![],
            quorum: 0,
            leaderships: vec![],
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        });
        n
    }

    #[test]
    fn the_election_is_seen_as_its_leader_sees_it() {
        use Colour::{Green, Red};
        let five = [Some(Green), Some(Red), Some(Green), Some(Red), Some(Red)];
        let nodes = [
            election_node("e1", "follower", 8, &[None, None]),
            election_node("e2", "leader", 7, &five),
            node(System::Election, "e3", Health::MachineDown),
        ];
        let election = of(&nodes).election.unwrap();
        assert_eq!(election.term, 7);
        assert_eq!((election.green, election.green_expected), (2, 2));
        assert_eq!((election.nodes, election.up), (3, 2));
    }

    #[test]
    fn without_a_leader_up_the_newest_follower_speaks() {
        let nodes = [
            election_node("e1", "follower", 3, &[None]),
            election_node("e2", "candidate", 4, &[None, None]),
        ];
        let election = of(&nodes).election.unwrap();
        assert_eq!((election.term, election.members.len()), (4, 2));
    }
}
