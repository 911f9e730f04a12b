//! The random nemesis's plan: which fault, on which store node, when, for how long — drawn
//! from a seed, so that a failing run replays with the same schedule. Pure: the plan is data,
//! [`crate::chaos`] carries it out.
//!
//! One fault at a time, each healed before the next: a three-node store is promised to stay
//! available through one fault, and safe (linearizable, nothing acknowledged lost) through any.

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

pub const KINDS: [FaultKind; 4] = [
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::CutLink,
    FaultKind::CutOff,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Since the run began.
    pub at_ms: u64,
    pub kind: FaultKind,
    /// Index of the node (store1 is 0).
    pub node: usize,
    /// How long it lasts before it is healed (a kill: how long before the next fault).
    pub hold_ms: u64,
}

/// When the first fault may come: the workload runs a while undisturbed first.
const LEAD_MS: u64 = 2_000;
/// Faults last 0.5–4 s; between two, 1–3 s of calm.
const HOLD_MS: (u64, u64) = (500, 4_000);
const CALM_MS: (u64, u64) = (1_000, 3_000);

/// The faults of a run of `duration` over `nodes` nodes, all healed before its end.
pub fn plan(seed: u64, duration: Duration, nodes: usize) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = duration.as_millis() as u64;
    let mut faults = Vec::new();
    if nodes == 0 {
        return faults;
    }
    let mut at = LEAD_MS;
    loop {
        let hold = rng.random_range(HOLD_MS.0..=HOLD_MS.1);
        if at + hold >= end {
            break;
        }
        faults.push(Fault {
            at_ms: at,
            kind: KINDS[rng.random_range(0..KINDS.len())],
            node: rng.random_range(0..nodes),
            hold_ms: hold,
        });
        at += hold + rng.random_range(CALM_MS.0..=CALM_MS.1);
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_plan_and_another_seed_another() {
        let minute = Duration::from_secs(60);
        assert_eq!(plan(7, minute, 3), plan(7, minute, 3));
        assert_ne!(plan(7, minute, 3), plan(8, minute, 3));
    }

    #[test]
    fn faults_come_one_at_a_time_and_all_are_healed_before_the_end() {
        for seed in 0..200 {
            let faults = plan(seed, Duration::from_secs(120), 3);
            assert!(!faults.is_empty());
            assert!(faults[0].at_ms >= LEAD_MS);
            for pair in faults.windows(2) {
                assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms, "{pair:?}");
            }
            let last = faults.last().unwrap();
            assert!(last.at_ms + last.hold_ms < 120_000);
            assert!(faults.iter().all(|f| f.node < 3));
        }
    }

    #[test]
    fn every_kind_of_fault_on_every_node_turns_up() {
        let faults = plan(1, Duration::from_secs(600), 3);
        for kind in KINDS {
            for node in 0..3 {
                assert!(
                    faults.iter().any(|f| f.kind == kind && f.node == node),
                    "{kind:?} on {node}"
                );
            }
        }
    }

    #[test]
    fn a_run_too_short_for_a_fault_has_none() {
        assert!(plan(1, Duration::from_secs(2), 3).is_empty());
        assert!(plan(1, Duration::from_secs(60), 0).is_empty());
    }
}
