//! `halab chaos SCENARIO`: the named scenarios, each one fault on the running lab and the
//! figures that show what the system under it did, measured by talking to the daemons' ports
//! directly (Docker through its Engine API). One JSON line each, the fields `scripts/chaos`
//! printed, with `ok` the verdict.

pub mod dispatcher;
pub mod election;
pub mod fairness;
pub mod front_door;
pub mod monitor;
pub mod store;

use std::time::{Duration, Instant};

use crate::nemesis::{Fault, FaultKind, System, Target};

/// A fault of `kind` on a node of `system`, for [`crate::lab::Lab::inject`] outside any plan.
fn single(kind: FaultKind, system: System) -> Fault {
    Fault {
        at_ms: 0,
        kind,
        target: Target { system, index: 0 },
        hold_ms: 0,
        peer: None,
        loss_percent: None,
        rate_kbit: None,
    }
}

/// Asks `check` every 20 ms until it gives something, for up to `limit`; returns it and how
/// long that took.
async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<(T, Duration)> {
    let began = Instant::now();
    loop {
        if let Some(found) = check().await {
            return Ok((found, began.elapsed()));
        }
        anyhow::ensure!(
            began.elapsed() < limit,
            "timed out after {} s waiting for {what}",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A store load's report through a fault that promoted a standby (the scenarios' tests): 3 000
/// writes acknowledged, a 170 ms gap from the last acknowledgement before the fault
/// (10 040 ms), one primary at a time.
#[cfg(test)]
pub(crate) fn promoted_load() -> primary_standby::load::LoadReport {
    primary_standby::load::LoadReport {
        acked: 3_000,
        lost: 0,
        lost_keys: vec![],
        unknown: 0,
        unknown_applied: 0,
        refused: 0,
        max_gap_ms: 170,
        gap_from_ms: 10_040,
        gap_until_ms: 10_210,
        ops_per_s: 300.0,
        p50_ms: 1.0,
        p99_ms: 30.04,
        max_ms: 200.0,
        clients: 4,
        duration_ms: 10_000,
        max_primaries_at_once: Some(1),
        promoted: Some(true),
        epochs: Some((2, 3)),
        alerts: vec![],
    }
}
