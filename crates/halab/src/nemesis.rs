//! The random nemesis's plan: which fault, on which node of which system, when, for how long —
//! drawn from a seed, so that a failing run replays with the same schedule. Pure: the plan is
//! data, [`crate::chaos`] carries it out.
//!
//! One fault at a time, each healed before the next: the three-node store and the five-node
//! election are promised to stay available through one fault, and safe (linearizable, one
//! leader) through any.

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
}

/// The systems the nemesis breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Store,
    Election,
}

impl System {
    /// The faults that fit: only the store has a replication network of its own.
    pub fn kinds(self) -> &'static [FaultKind] {
        match self {
            System::Store => &[
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::CutLink,
                FaultKind::CutOff,
            ],
            System::Election => &[FaultKind::Kill, FaultKind::Pause, FaultKind::CutOff],
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
}

/// When the first fault may come: the workload runs a while undisturbed first.
const LEAD_MS: u64 = 2_000;
/// Faults last 0.5–4 s; between two, 1–3 s of calm.
const HOLD_MS: (u64, u64) = (500, 4_000);
const CALM_MS: (u64, u64) = (1_000, 3_000);

/// The faults of a run of `duration` over `targets`, all healed before its end.
pub fn plan(seed: u64, duration: Duration, targets: &[Target]) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = duration.as_millis() as u64;
    let mut faults = Vec::new();
    if targets.is_empty() {
        return faults;
    }
    let mut at = LEAD_MS;
    loop {
        let hold = rng.random_range(HOLD_MS.0..=HOLD_MS.1);
        if at + hold >= end {
            break;
        }
        let target = targets[rng.random_range(0..targets.len())];
        let kinds = target.system.kinds();
        faults.push(Fault {
            at_ms: at,
            kind: kinds[rng.random_range(0..kinds.len())],
            target,
            hold_ms: hold,
        });
        at += hold + rng.random_range(CALM_MS.0..=CALM_MS.1);
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's: three store nodes, five election nodes.
    fn lab() -> Vec<Target> {
        let of = |system, n| (0..n).map(move |index| Target { system, index });
        of(System::Store, 3)
            .chain(of(System::Election, 5))
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_plan_and_another_seed_another() {
        let minute = Duration::from_secs(60);
        assert_eq!(plan(7, minute, &lab()), plan(7, minute, &lab()));
        assert_ne!(plan(7, minute, &lab()), plan(8, minute, &lab()));
    }

    #[test]
    fn faults_come_one_at_a_time_and_all_are_healed_before_the_end() {
        for seed in 0..200 {
            let faults = plan(seed, Duration::from_secs(120), &lab());
            assert!(!faults.is_empty());
            assert!(faults[0].at_ms >= LEAD_MS);
            for pair in faults.windows(2) {
                assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms, "{pair:?}");
            }
            let last = faults.last().unwrap();
            assert!(last.at_ms + last.hold_ms < 120_000);
            assert!(
                faults
                    .iter()
                    .all(|f| lab().contains(&f.target) && f.target.system.kinds().contains(&f.kind))
            );
        }
    }

    #[test]
    fn every_kind_of_fault_on_every_node_turns_up() {
        let faults = plan(1, Duration::from_secs(1200), &lab());
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
    fn a_run_too_short_for_a_fault_has_none() {
        assert!(plan(1, Duration::from_secs(2), &lab()).is_empty());
        assert!(plan(1, Duration::from_secs(60), &[]).is_empty());
    }
}
