//! The dispatcher's named scenarios, its table read from its status port every 20 ms: a
//! worker killed (removed at once: its connection closed), a worker paused (removed after the
//! 5 s silence timeout and not before; registered again under a new id once resumed), the
//! dispatcher killed (every live worker registers again with the new process, which hands out
//! no id the old one used), the dispatcher paused for 7 s (it removes no worker for silence
//! once resumed, and no worker gives it up).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proto::{DispatcherStatus, FrameCodec, WorkerId, WorkerRow};
use serde::Serialize;

use super::{millis, single, wait_until};
use crate::dispatch::status;
use crate::lab::{Lab, Networks, Node};
use crate::nemesis::{FaultKind, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatcherScenario {
    KillWorker,
    PauseWorker,
    KillDispatcher,
    PauseDispatcher,
}

#[derive(Debug, Clone)]
pub struct DispatcherRun {
    pub scenario: DispatcherScenario,
    /// The dispatcher's status address (name:port on the lab network).
    pub dispatcher: String,
    pub project: String,
    pub networks: Networks,
}

/// One JSON line: the fields `scripts/chaos` printed for the scenario.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DispatcherReport {
    KillWorker {
        scenario: &'static str,
        worker: WorkerId,
        weight: u32,
        removed_after_ms: u64,
        ok: bool,
    },
    PauseWorker {
        scenario: &'static str,
        worker: WorkerId,
        new_id: WorkerId,
        removed_after_ms: u64,
        removed_after_freeze_ms: u64,
        rejoined_after_ms: u64,
        ok: bool,
    },
    KillDispatcher {
        scenario: &'static str,
        workers_before: u64,
        workers_after: u64,
        reregistered_after_ms: u64,
        ids_reused: Vec<WorkerId>,
        live_workers_missing: Vec<IpAddr>,
        ok: bool,
    },
    PauseDispatcher {
        scenario: &'static str,
        workers_before: u64,
        workers_after: Option<u64>,
        silence_removals: usize,
        workers_that_gave_it_up: usize,
        stall_noticed: bool,
        ok: bool,
    },
}

impl DispatcherReport {
    pub fn ok(&self) -> bool {
        match self {
            DispatcherReport::KillWorker { ok, .. }
            | DispatcherReport::PauseWorker { ok, .. }
            | DispatcherReport::KillDispatcher { ok, .. }
            | DispatcherReport::PauseDispatcher { ok, .. } => *ok,
        }
    }
}

/// The dispatcher's silence timeout in the lab, and how long a removal after it may take: the
/// worker's last heartbeat can be up to one heartbeat (1 s) old at the freeze, and a check
/// runs every 1/20 of the timeout.
const SILENCE: Duration = Duration::from_secs(5);
const REMOVED_BY: Duration = Duration::from_secs(7);
/// A killed worker's connection closes with it: removed well within the silence timeout.
const KILLED_REMOVED_BY: Duration = Duration::from_millis(6_500);
/// How long the dispatcher is paused, and watched after.
const DISPATCHER_PAUSE: Duration = Duration::from_secs(7);

pub async fn run(run: DispatcherRun, codec: FrameCodec) -> anyhow::Result<DispatcherReport> {
    let lab = Lab::open(&run.project)?;
    match run.scenario {
        DispatcherScenario::KillWorker => kill_worker(&lab, &run, &codec).await,
        DispatcherScenario::PauseWorker => pause_worker(&lab, &run, &codec).await,
        DispatcherScenario::KillDispatcher => kill_dispatcher(&lab, &run, &codec).await,
        DispatcherScenario::PauseDispatcher => pause_dispatcher(&lab, &run, &codec).await,
    }
}

fn ip_of(row: &WorkerRow) -> Option<IpAddr> {
    row.addr.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

/// A row of the dispatcher's table that `pick` likes, of a worker whose container is live.
async fn pick_worker(
    lab: &Lab,
    run: &DispatcherRun,
    codec: &FrameCodec,
    what: &str,
    pick: impl Fn(&WorkerRow) -> bool,
) -> anyhow::Result<(WorkerRow, Node)> {
    let live = lab.live_workers(&run.networks.lan).await?;
    let (found, _) = wait_until(what, Duration::from_secs(30), async || {
        let status = status(&run.dispatcher, codec).await?;
        status.workers.into_iter().find_map(|row| {
            let ip = ip_of(&row)?;
            let (_, node) = live.iter().find(|(live_ip, _)| *live_ip == ip)?;
            pick(&row).then(|| (row, node.clone()))
        })
    })
    .await?;
    Ok(found)
}

/// Waits until worker `id` is no longer in the table.
async fn gone(
    run: &DispatcherRun,
    codec: &FrameCodec,
    id: WorkerId,
    limit: Duration,
) -> anyhow::Result<()> {
    wait_until(
        &format!("worker {id} to leave the table"),
        limit,
        async || {
            let status = status(&run.dispatcher, codec).await?;
            status.workers.iter().all(|w| w.id != id).then_some(())
        },
    )
    .await
    .map(drop)
}

async fn kill_worker(
    lab: &Lab,
    run: &DispatcherRun,
    codec: &FrameCodec,
) -> anyhow::Result<DispatcherReport> {
    let (row, node) = pick_worker(lab, run, codec, "an active worker", |w| w.active).await?;
    tracing::info!(worker = row.id, container = %node.name, "killing an active worker");
    let started = Instant::now();
    let kill = single(FaultKind::Kill, System::Worker);
    let undo = lab.inject(&kill, &node, &run.networks, None).await?;
    let removed = gone(run, codec, row.id, Duration::from_secs(15)).await;
    let removed_after = started.elapsed();
    lab.heal(&node, undo).await?;
    removed?;
    Ok(DispatcherReport::KillWorker {
        scenario: "kill-worker",
        worker: row.id,
        weight: row.weight,
        removed_after_ms: millis(removed_after),
        ok: removed_after <= KILLED_REMOVED_BY,
    })
}

async fn pause_worker(
    lab: &Lab,
    run: &DispatcherRun,
    codec: &FrameCodec,
) -> anyhow::Result<DispatcherReport> {
    // An idle worker, so that nothing but the pause decides when it goes quiet.
    let (row, node) =
        pick_worker(lab, run, codec, "a registered idle worker", |w| !w.active).await?;
    let ip = ip_of(&row).ok_or_else(|| anyhow::anyhow!("no address in {}", row.addr))?;
    tracing::info!(worker = row.id, container = %node.name, "pausing an idle worker");
    let started = Instant::now();
    let pause = single(FaultKind::Pause, System::Worker);
    let undo = lab.inject(&pause, &node, &run.networks, None).await?;
    // The freeze happens somewhere inside the request, which can take a while.
    let frozen_by = Instant::now();
    let removed = gone(run, codec, row.id, Duration::from_secs(20)).await;
    let (removed_after, after_freeze) = (started.elapsed(), frozen_by.elapsed());
    lab.heal(&node, undo).await?;
    removed?;
    let (new_row, rejoined_after) = wait_until(
        &format!("the worker at {ip} to register again"),
        Duration::from_secs(30),
        async || {
            let status = status(&run.dispatcher, codec).await?;
            status
                .workers
                .into_iter()
                .find(|w| ip_of(w) == Some(ip) && w.id != row.id)
        },
    )
    .await?;
    Ok(DispatcherReport::PauseWorker {
        scenario: "pause-worker",
        worker: row.id,
        new_id: new_row.id,
        removed_after_ms: millis(removed_after),
        removed_after_freeze_ms: millis(after_freeze),
        rejoined_after_ms: millis(rejoined_after),
        ok: removed_in_time(removed_after, after_freeze) && new_row.id != row.id,
    })
}

/// Never before the silence timeout (counted from the pause request, before the freeze), and
/// within [`REMOVED_BY`] of the freeze.
fn removed_in_time(after_request: Duration, after_freeze: Duration) -> bool {
    after_request >= SILENCE && after_freeze <= REMOVED_BY
}

async fn dispatcher_node(lab: &Lab) -> anyhow::Result<Node> {
    let (id, name) = lab.containers("dispatcher").await?.swap_remove(0);
    Ok(Node {
        id,
        name,
        system: System::Dispatcher,
    })
}

async fn kill_dispatcher(
    lab: &Lab,
    run: &DispatcherRun,
    codec: &FrameCodec,
) -> anyhow::Result<DispatcherReport> {
    let before = status(&run.dispatcher, codec)
        .await
        .ok_or_else(|| anyhow::anyhow!("the dispatcher does not answer"))?;
    let node = dispatcher_node(lab).await?;
    tracing::info!(workers = before.worker_count, "killing the dispatcher");
    let started = Instant::now();
    let kill = single(FaultKind::Kill, System::Dispatcher);
    let undo = lab.inject(&kill, &node, &run.networks, None).await?;
    lab.heal(&node, undo).await?;
    let lan = &run.networks.lan;
    let (after, waited) = wait_until(
        "every live worker to register again",
        Duration::from_secs(60),
        async || {
            let status = status(&run.dispatcher, codec).await?;
            // Still the old process, or nobody registered yet.
            if status.uptime_ms > millis(started.elapsed()) {
                return None;
            }
            let live = lab.live_workers(lan).await.ok()?;
            let missing = missing(&live_ips(&live), &status);
            (!live.is_empty() && missing.is_empty()).then_some(status)
        },
    )
    .await?;
    // Read again, apart from the wait.
    let live = live_ips(&lab.live_workers(lan).await?);
    let ids_reused = reused(&before, &after);
    let live_workers_missing = missing(&live, &after);
    Ok(DispatcherReport::KillDispatcher {
        scenario: "kill-dispatcher",
        workers_before: before.worker_count,
        workers_after: after.worker_count,
        reregistered_after_ms: millis(waited),
        ok: ids_reused.is_empty()
            && live_workers_missing.is_empty()
            && after.uptime_ms < millis(started.elapsed()),
        ids_reused,
        live_workers_missing,
    })
}

fn live_ips(live: &[(IpAddr, Node)]) -> BTreeSet<IpAddr> {
    live.iter().map(|(ip, _)| *ip).collect()
}

/// The live workers' addresses missing from the table.
fn missing(live: &BTreeSet<IpAddr>, status: &DispatcherStatus) -> Vec<IpAddr> {
    let registered: BTreeSet<IpAddr> = status.workers.iter().filter_map(ip_of).collect();
    live.difference(&registered).copied().collect()
}

/// Ids the new process handed out that the old one had used.
fn reused(before: &DispatcherStatus, after: &DispatcherStatus) -> Vec<WorkerId> {
    let old: BTreeSet<WorkerId> = before.workers.iter().map(|w| w.id).collect();
    let new: BTreeSet<WorkerId> = after.workers.iter().map(|w| w.id).collect();
    old.intersection(&new).copied().collect()
}

async fn pause_dispatcher(
    lab: &Lab,
    run: &DispatcherRun,
    codec: &FrameCodec,
) -> anyhow::Result<DispatcherReport> {
    let before = status(&run.dispatcher, codec)
        .await
        .ok_or_else(|| anyhow::anyhow!("the dispatcher does not answer"))?;
    let node = dispatcher_node(lab).await?;
    let since_s = primary_standby::witness::wall_ms() / 1000;
    tracing::info!(
        workers = before.worker_count,
        "pausing the dispatcher for 7 s"
    );
    let pause = single(FaultKind::Pause, System::Dispatcher);
    let undo = lab.inject(&pause, &node, &run.networks, None).await?;
    tokio::time::sleep(DISPATCHER_PAUSE).await;
    lab.heal(&node, undo).await?;
    // A silence timeout and more after the pause: when a wrong removal would have happened.
    tokio::time::sleep(DISPATCHER_PAUSE).await;
    let silence_removals = lab
        .count_log_lines("dispatcher", since_s, "no communication for")
        .await?;
    let stall_noticed = lab
        .count_log_lines("dispatcher", since_s, "dispatcher stalled")
        .await?
        > 0;
    // The workers' side, from their own logs: none gave the paused dispatcher up (that would
    // mean registering again under a new id).
    let workers: Vec<String> = lab.workers().await?.into_iter().map(|(id, _)| id).collect();
    let workers_that_gave_it_up = lab
        .count_lines_of(&workers, since_s, "lost the dispatcher")
        .await?;
    let after = status(&run.dispatcher, codec).await;
    Ok(DispatcherReport::PauseDispatcher {
        scenario: "pause-dispatcher",
        workers_before: before.worker_count,
        workers_after: after.as_ref().map(|s| s.worker_count),
        ok: after.is_some() && silence_removals == 0 && workers_that_gave_it_up == 0,
        silence_removals,
        workers_that_gave_it_up,
        stall_noticed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(WorkerId, &str)]) -> DispatcherStatus {
        let rows: Vec<(WorkerId, u64, &str)> =
            rows.iter().map(|&(id, addr)| (id, 0, addr)).collect();
        crate::dispatch::table(0, &rows)
    }

    #[test]
    fn a_paused_worker_goes_after_the_silence_timeout_and_not_before() {
        let s = Duration::from_secs;
        assert!(removed_in_time(s(6), s(5)));
        assert!(
            !removed_in_time(Duration::from_millis(4_900), s(4)),
            "too soon"
        );
        assert!(!removed_in_time(s(9), s(8)), "too late");
    }

    #[test]
    fn a_restarted_dispatcher_must_hand_out_new_ids_and_take_every_live_worker_back() {
        let before = table(&[(1, "172.30.77.10:4000"), (2, "172.30.77.11:4000")]);
        let after = table(&[(3, "172.30.77.10:4100"), (2, "172.30.77.12:4000")]);
        assert_eq!(reused(&before, &after), [2]);
        let live: BTreeSet<IpAddr> = ["172.30.77.10", "172.30.77.11"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        assert_eq!(
            missing(&live, &after),
            ["172.30.77.11".parse::<IpAddr>().unwrap()]
        );
    }
}
