//! The random nemesis's plan: which fault, on which node of which system, when, for how long —
//! drawn from a seed, so that a failing run replays with the same schedule. Pure: the plan is
//! data, [`crate::chaos`] carries it out.
//!
//! Faults: kill, pause, cut from one network or all, a one-way partition, a lossy link.
//! Each system has a track of its own, and the tracks run at once, so faults on different
//! systems overlap; within a track one fault at a time, each healed before the next: the
//! three-node store and the five-node election are promised to stay available through one
//! fault, and safe (linearizable, one leader) through any.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL; the restart policy brings the node back.
    Kill,
    /// `docker pause` for the hold, then unpause.
    Pause,
    /// Cut from the replication network for the hold.
    CutLink,
    /// Cut from both networks for the hold.
    CutOff,
    /// A one-way partition: the node drops every packet from one peer of its system (on every
    /// network), while the peer still hears it.
    Deafen,
    /// A lossy link: the node drops a share of every packet it receives, the acknowledgements
    /// of what it sends among them, so its TCP streams stall on retransmissions.
    LossyLink,
    /// A slow link: what the node sends leaves at a few hundred kbit/s (a token bucket, `tc
    /// tbf`, on each of its interfaces), so a queue builds and every frame waits behind it, up
    /// to [`SLOW_LINK_QUEUE_MS`], before it is dropped. (netem's fixed delay is not to be had:
    /// this kernel has no netem qdisc.)
    SlowLink,
}

/// The systems the nemesis breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Store,
    Election,
    Dispatcher,
    Worker,
    Monitor,
}

impl System {
    /// The faults that fit: only the store has a replication network of its own, and a
    /// one-way partition is from a peer of the same system (the store's, the election's).
    pub fn kinds(self) -> &'static [FaultKind] {
        match self {
            System::Store => &[
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::CutLink,
                FaultKind::CutOff,
                FaultKind::Deafen,
                FaultKind::LossyLink,
                FaultKind::SlowLink,
            ],
            System::Election => &[
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::CutOff,
                FaultKind::Deafen,
                FaultKind::LossyLink,
                FaultKind::SlowLink,
            ],
            System::Dispatcher | System::Monitor => &[
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::CutOff,
                FaultKind::LossyLink,
                FaultKind::SlowLink,
            ],
            System::Worker => &[FaultKind::Kill, FaultKind::Pause, FaultKind::CutOff],
        }
    }
}

/// A node to break: the `index`-th of its system (store1 is the store's 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    pub system: System,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Since the run began.
    pub at_ms: u64,
    pub kind: FaultKind,
    pub target: Target,
    /// How long it lasts before it is healed (a kill: how long before the next fault).
    pub hold_ms: u64,
    /// Deafen: the index of the peer (of the same system) the node stops hearing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<usize>,
    /// LossyLink: the share of received packets dropped, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_percent: Option<u32>,
    /// SlowLink: the rate what the node sends leaves at, in kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u32>,
}

/// When the first fault may come: the workload runs a while undisturbed first.
const LEAD_MS: u64 = 2_000;
/// Faults last 0.5–4 s; between two, 1–3 s of calm.
const HOLD_MS: (u64, u64) = (500, 4_000);
const CALM_MS: (u64, u64) = (1_000, 3_000);
/// A lossy link drops 10–50 % of what the node receives.
const LOSS_PERCENT: (u32, u32) = (10, 50);
/// A slow link sends 64–512 kbit/s (the store's replication at 300 writes/s is ~300 kbit/s per
/// standby: the low end of the range falls behind and queues).
const RATE_KBIT: (u32, u32) = (64, 512);
/// How long a frame may wait in a slow link's queue before it is dropped.
pub const SLOW_LINK_QUEUE_MS: u32 = 400;

/// The faults of a run of `duration` over `targets`, all healed before its end, in time
/// order: one track per system, all at once.
pub fn plan(seed: u64, duration: Duration, targets: &[Target]) -> Vec<Fault> {
    let mut systems: Vec<System> = targets.iter().map(|t| t.system).collect();
    systems.sort();
    systems.dedup();
    let mut faults: Vec<Fault> = systems
        .into_iter()
        .flat_map(|system| {
            let nodes: Vec<usize> = targets
                .iter()
                .filter(|t| t.system == system)
                .map(|t| t.index)
                .collect();
            track(seed, duration, system, &nodes)
        })
        .collect();
    faults.sort_by_key(|f| f.at_ms);
    faults
}

/// One system's track: a fault at a time on one of `nodes`, with calm between. Its own random
/// stream (from the seed and the system), so the track is the same whichever other systems
/// are broken beside it.
fn track(seed: u64, duration: Duration, system: System, nodes: &[usize]) -> Vec<Fault> {
    let stream = (system as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = StdRng::seed_from_u64(seed ^ stream);
    let end = duration.as_millis() as u64;
    let mut faults = Vec::new();
    let mut at = LEAD_MS;
    loop {
        let hold = rng.random_range(HOLD_MS.0..=HOLD_MS.1);
        if at + hold >= end {
            break;
        }
        let index = nodes[rng.random_range(0..nodes.len())];
        let peers: Vec<usize> = nodes.iter().copied().filter(|&n| n != index).collect();
        let kinds: Vec<FaultKind> = system
            .kinds()
            .iter()
            .copied()
            .filter(|&kind| kind != FaultKind::Deafen || !peers.is_empty())
            .collect();
        let kind = kinds[rng.random_range(0..kinds.len())];
        faults.push(Fault {
            at_ms: at,
            kind,
            target: Target { system, index },
            hold_ms: hold,
            peer: (kind == FaultKind::Deafen).then(|| peers[rng.random_range(0..peers.len())]),
            loss_percent: (kind == FaultKind::LossyLink)
                .then(|| rng.random_range(LOSS_PERCENT.0..=LOSS_PERCENT.1)),
            rate_kbit: (kind == FaultKind::SlowLink)
                .then(|| rng.random_range(RATE_KBIT.0..=RATE_KBIT.1)),
        });
        at += hold + rng.random_range(CALM_MS.0..=CALM_MS.1);
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMS: [System; 5] = [
        System::Store,
        System::Election,
        System::Dispatcher,
        System::Worker,
        System::Monitor,
    ];

    /// The lab's: three store nodes, five election nodes, the dispatcher and its 25 workers,
    /// the monitor.
    fn lab() -> Vec<Target> {
        let of = |system, n| (0..n).map(move |index| Target { system, index });
        of(System::Store, 3)
            .chain(of(System::Election, 5))
            .chain(of(System::Dispatcher, 1))
            .chain(of(System::Worker, 25))
            .chain(of(System::Monitor, 1))
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_plan_and_another_seed_another() {
        let minute = Duration::from_secs(60);
        assert_eq!(plan(7, minute, &lab()), plan(7, minute, &lab()));
        assert_ne!(plan(7, minute, &lab()), plan(8, minute, &lab()));
    }

    #[test]
    fn faults_come_one_at_a_time_per_system_and_all_are_healed_before_the_end() {
        for seed in 0..200 {
            let faults = plan(seed, Duration::from_secs(120), &lab());
            assert!(!faults.is_empty());
            assert!(faults[0].at_ms >= LEAD_MS);
            assert!(faults.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms));
            for system in SYSTEMS {
                let track: Vec<&Fault> = faults
                    .iter()
                    .filter(|f| f.target.system == system)
                    .collect();
                for pair in track.windows(2) {
                    assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms, "{pair:?}");
                }
            }
            let last = faults.last().unwrap();
            assert!(last.at_ms + last.hold_ms < 120_000);
            assert!(
                faults
                    .iter()
                    .all(|f| lab().contains(&f.target) && f.target.system.kinds().contains(&f.kind))
            );
            for f in &faults {
                // A deafened node stops hearing another node of its own system.
                assert_eq!(f.peer.is_some(), f.kind == FaultKind::Deafen, "{f:?}");
                if let Some(peer) = f.peer {
                    assert_ne!(peer, f.target.index);
                    assert!(lab().contains(&Target {
                        system: f.target.system,
                        index: peer
                    }));
                }
                assert_eq!(
                    f.loss_percent.is_some(),
                    f.kind == FaultKind::LossyLink,
                    "{f:?}"
                );
                assert!(
                    f.loss_percent
                        .is_none_or(|p| (LOSS_PERCENT.0..=LOSS_PERCENT.1).contains(&p))
                );
                assert_eq!(
                    f.rate_kbit.is_some(),
                    f.kind == FaultKind::SlowLink,
                    "{f:?}"
                );
                assert!(
                    f.rate_kbit
                        .is_none_or(|r| (RATE_KBIT.0..=RATE_KBIT.1).contains(&r))
                );
            }
        }
    }

    #[test]
    fn every_kind_of_fault_on_every_node_turns_up() {
        let faults = plan(1, Duration::from_secs(6000), &lab());
        for target in lab() {
            for &kind in target.system.kinds() {
                assert!(
                    faults.iter().any(|f| f.kind == kind && f.target == target),
                    "{kind:?} on {target:?}"
                );
            }
        }
    }

    #[test]
    fn each_system_is_broken_about_as_often_however_many_nodes_it_has() {
        let faults = plan(5, Duration::from_secs(6000), &lab());
        let count = |system| faults.iter().filter(|f| f.target.system == system).count();
        let even = faults.len() / 5;
        for system in SYSTEMS {
            assert!(
                count(system) > even * 3 / 4 && count(system) < even * 5 / 4,
                "{system:?}: {} of {}",
                count(system),
                faults.len()
            );
        }
    }

    #[test]
    fn faults_on_different_systems_overlap() {
        let faults = plan(9, Duration::from_secs(120), &lab());
        let overlapping = faults.iter().enumerate().any(|(i, a)| {
            faults[i + 1..]
                .iter()
                .any(|b| a.target.system != b.target.system && b.at_ms < a.at_ms + a.hold_ms)
        });
        assert!(overlapping);
    }

    #[test]
    fn a_systems_track_is_the_same_whichever_systems_are_broken_beside_it() {
        let minute = Duration::from_secs(60);
        let store: Vec<Target> = lab()
            .into_iter()
            .filter(|t| t.system == System::Store)
            .collect();
        let alone = plan(11, minute, &store);
        let beside: Vec<Fault> = plan(11, minute, &lab())
            .into_iter()
            .filter(|f| f.target.system == System::Store)
            .collect();
        assert!(!alone.is_empty());
        assert_eq!(alone, beside);
    }

    #[test]
    fn a_node_alone_in_its_system_is_never_deafened() {
        let alone = [Target {
            system: System::Election,
            index: 0,
        }];
        let faults = plan(3, Duration::from_secs(600), &alone);
        assert!(faults.len() > 50);
        assert!(faults.iter().all(|f| f.kind != FaultKind::Deafen));
    }

    #[test]
    fn a_run_too_short_for_a_fault_has_none() {
        assert!(plan(1, Duration::from_secs(2), &lab()).is_empty());
        assert!(plan(1, Duration::from_secs(60), &[]).is_empty());
    }
}
