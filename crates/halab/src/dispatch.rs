//! The dispatcher seen from outside during a nemesis run: sampled throughout (never more
//! workers active than its limit), and at rest after — every running worker container
//! registered with it, and activations going on.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proto::{DispatcherStatus, FrameCodec, Message, WorkerId};
use serde::Serialize;

use crate::lab::Lab;

/// What the samples showed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Watched {
    pub samples: u64,
    pub max_active_seen: u32,
    pub max_active_allowed: u32,
}

impl Watched {
    fn saw(&mut self, status: &DispatcherStatus) {
        self.samples += 1;
        self.max_active_seen = self.max_active_seen.max(status.active);
        self.max_active_allowed = status.max_active;
    }

    pub fn ok(&self) -> bool {
        self.max_active_seen <= self.max_active_allowed
    }
}

/// The dispatcher at rest after a run.
#[derive(Debug, Serialize)]
pub struct Settled {
    /// From the call until every running worker container was in the dispatcher's table.
    pub all_registered_after_ms: u64,
    pub worker_containers: usize,
    /// Activations made while that was awaited (at least one must be).
    pub activations_meanwhile: u64,
}

/// The dispatcher's status, its name looked up anew (a container cut off and connected again
/// may come back under another address).
pub(crate) async fn status(name: &str, codec: &FrameCodec) -> Option<DispatcherStatus> {
    let addr = tokio::net::lookup_host(name).await.ok()?.next()?;
    // Every row, not the summary's first few: the check looks for each worker.
    let every_row = Message::StatusPage {
        offset: 0,
        limit: 1_000,
    };
    let answer =
        halab_runtime::control::query(addr, codec.clone(), every_row, Duration::from_millis(500))
            .await;
    match answer {
        Ok(Message::DispatcherStatus(status)) => Some(status),
        _ => None,
    }
}

/// Samples the dispatcher at `name` every `every` until `until`.
pub async fn watch(name: String, codec: FrameCodec, every: Duration, until: Instant) -> Watched {
    let mut watched = Watched::default();
    while Instant::now() < until {
        if let Some(status) = status(&name, &codec).await {
            watched.saw(&status);
        }
        tokio::time::sleep(every).await;
    }
    watched
}

/// Waits (up to `limit`) until every running worker container of the lab is registered with
/// the dispatcher (by its address on `lan`) and an activation was made meanwhile.
pub(crate) async fn settled(
    lab: &Lab,
    name: &str,
    codec: &FrameCodec,
    lan: &str,
    limit: Duration,
) -> anyhow::Result<Settled> {
    let began = Instant::now();
    let mut baseline = None;
    loop {
        let mut running = BTreeSet::new();
        let containers = lab.workers().await?;
        for (id, _) in &containers {
            running.extend(lab.address(id, lan).await?);
        }
        if let Some(status) = status(name, codec).await {
            let baseline = baseline.get_or_insert_with(|| activations(&status));
            let activations_meanwhile = activations_since(baseline, &status);
            if activations_meanwhile > 0 && unregistered(&running, &status).is_empty() {
                return Ok(Settled {
                    all_registered_after_ms: began.elapsed().as_millis() as u64,
                    worker_containers: running.len(),
                    activations_meanwhile,
                });
            }
        }
        anyhow::ensure!(
            began.elapsed() < limit,
            "the dispatcher did not have every running worker registered and activations going on within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each registered worker's activations. (The status's total is their sum, which falls when
/// a worker leaves: no measure of progress.)
fn activations(status: &DispatcherStatus) -> HashMap<WorkerId, u64> {
    status
        .workers
        .iter()
        .map(|w| (w.id, w.activations))
        .collect()
}

/// Activations made since `baseline`, by the workers registered now (one that registered
/// since counts from zero).
fn activations_since(baseline: &HashMap<WorkerId, u64>, status: &DispatcherStatus) -> u64 {
    status
        .workers
        .iter()
        .map(|w| {
            w.activations
                .saturating_sub(baseline.get(&w.id).copied().unwrap_or(0))
        })
        .sum()
}

/// The running workers' addresses the dispatcher's table does not hold.
fn unregistered(running: &BTreeSet<IpAddr>, status: &DispatcherStatus) -> Vec<IpAddr> {
    let registered: BTreeSet<IpAddr> = status
        .workers
        .iter()
        .filter_map(|w| w.addr.parse::<std::net::SocketAddr>().ok())
        .map(|addr| addr.ip())
        .collect();
    running.difference(&registered).copied().collect()
}

/// A dispatcher's status for tests: `active` workers active, a row per (id, activations,
/// address).
#[cfg(test)]
pub(crate) fn table(active: u32, rows: &[(WorkerId, u64, &str)]) -> DispatcherStatus {
    let row = |&(id, activations, addr): &(WorkerId, u64, &str)| proto::WorkerRow {
        id,
        addr: addr.to_string(),
        weight: 1,
        activations,
        active: false,
        available: true,
        answers_since_activation: 0,
        last_comm_ms_ago: -1,
        last_heard_ms_ago: 0,
        share: 0.0,
    };
    DispatcherStatus {
        worker_count: rows.len() as u64,
        workers: rows.iter().map(row).collect(),
        fairness_gap: 0.0,
        fairness_bound: 0.0,
        total_activations: 0,
        active,
        max_active: 5,
        uptime_ms: 0,
        auth_failures: 0,
        bad_frames: 0,
        replayed: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: u32, addrs: &[&str]) -> DispatcherStatus {
        let rows: Vec<(WorkerId, u64, &str)> = addrs.iter().map(|addr| (1, 0, *addr)).collect();
        table(active, &rows)
    }

    #[test]
    fn more_active_than_allowed_is_seen() {
        let mut watched = Watched::default();
        watched.saw(&status(5, &[]));
        assert!(watched.ok());
        watched.saw(&status(6, &[]));
        assert!(!watched.ok());
    }

    #[test]
    fn activations_are_counted_per_worker_so_a_leaving_worker_takes_none_away() {
        let before = table(0, &[(1, 4, "a:1"), (2, 7, "b:1")]);
        let baseline = activations(&before);
        // Worker 2 left with its 7; worker 1 was activated once, newcomer 3 twice.
        let after = table(0, &[(1, 5, "a:1"), (3, 2, "c:1")]);
        assert!(after.workers.iter().map(|w| w.activations).sum::<u64>() < 11);
        assert_eq!(activations_since(&baseline, &after), 3);
        assert_eq!(activations_since(&baseline, &before), 0);
    }

    #[test]
    fn a_running_worker_missing_from_the_table_is_named() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let running = BTreeSet::from([ip("172.30.77.10"), ip("172.30.77.11")]);
        let table = status(0, &["172.30.77.10:40112", "172.30.77.12:40000"]);
        assert_eq!(unregistered(&running, &table), vec![ip("172.30.77.11")]);
    }
}
