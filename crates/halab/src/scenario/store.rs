//! The replicated store's named scenarios, each one fault on the running lab while the
//! store's own load client writes 300/s and watches every node every 20 ms: kill the primary
//! or a standby (seed 001's authenticated admin kill), stop the primary (`docker stop`: its
//! graceful shutdown), pause it, cut it from the replication network or from every network,
//! kill all three. Then the store steady again, and
//! the scenario's figures: the longest time without an acknowledgement, nothing acknowledged
//! lost, never two primaries, a promotion when (and only when) the fault calls for one.

use std::time::Duration;

use primary_standby::load::{self, LoadPlan, LoadReport};
use primary_standby::witness::wall_ms;
use proto::{FrameCodec, Op, Reply};
use serde::Serialize;

use super::single;
use crate::chaos::steady;
use crate::lab::{Lab, Networks, Node};
use crate::nemesis::{FaultKind, System};
use crate::recorder::{self, Workload};
use crate::verdict::{self, Anomaly};

/// The store's named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreScenario {
    /// The primary exits on an admin request: a standby promotes, nothing is lost.
    KillPrimary,
    /// A standby exits on an admin request: no promotion, writes go on.
    KillStandby,
    /// The primary stopped by `docker stop` (SIGTERM: its graceful shutdown) for 2 s: a
    /// standby promotes; started again, the old one rejoins as a standby.
    StopPrimary,
    /// The primary paused for 3 s: a standby promotes; resumed, the old one is fenced.
    PausePrimary,
    /// The primary cut from the replication network for 4 s: it drops its standbys from the
    /// in-sync set and says so, and goes on without a promotion.
    DisconnectLink,
    /// The primary cut from both networks for 4 s: a standby promotes; reconnected, the old
    /// one rejoins as a standby.
    DisconnectPrimary,
    /// All three killed at once: nothing acknowledged is missing when they are back.
    RestartAll,
}

impl StoreScenario {
    fn name(self) -> &'static str {
        match self {
            StoreScenario::KillPrimary => "kill-primary",
            StoreScenario::KillStandby => "kill-standby",
            StoreScenario::StopPrimary => "stop-primary",
            StoreScenario::PausePrimary => "pause-primary",
            StoreScenario::DisconnectLink => "disconnect-link",
            StoreScenario::DisconnectPrimary => "disconnect-primary",
            StoreScenario::RestartAll => "restart-all",
        }
    }

    /// Whether the fault must lead to a promotion.
    fn promotes(self) -> bool {
        !matches!(
            self,
            StoreScenario::KillStandby | StoreScenario::DisconnectLink
        )
    }

    /// How long the fault lasts before it is healed (a kill heals itself).
    fn hold(self) -> Option<Duration> {
        match self {
            StoreScenario::StopPrimary => Some(Duration::from_secs(2)),
            StoreScenario::PausePrimary => Some(Duration::from_secs(3)),
            StoreScenario::DisconnectLink | StoreScenario::DisconnectPrimary => {
                Some(Duration::from_secs(4))
            }
            _ => None,
        }
    }

    /// How long the load runs: every node down at once acknowledges nothing until the restart
    /// policy has brought them back, so that one writes longer.
    fn load_for(self) -> Duration {
        match self {
            StoreScenario::RestartAll => Duration::from_secs(14),
            _ => Duration::from_secs(10),
        }
    }
}

/// What a scenario needs to know of the lab.
#[derive(Debug, Clone)]
pub struct StoreRun {
    /// None for `check-failover`, which has a workload of its own.
    pub scenario: Option<StoreScenario>,
    /// The store's client addresses, in node order (store1:7300, …); a node's service is the
    /// host part.
    pub nodes: Vec<String>,
    pub project: String,
    pub networks: Networks,
    /// The store's admin token (seed 001's kill).
    pub admin_token: String,
}

/// One JSON line: the same fields `scripts/chaos` printed for these scenarios.
#[derive(Debug, Serialize)]
pub struct StoreReport {
    pub scenario: &'static str,
    pub outage_ms: u64,
    /// Whether the longest gap without an acknowledgement overlaps the fault.
    pub outage_covers_fault: bool,
    pub acked: u64,
    pub lost: u64,
    pub unknown: u64,
    pub unknown_applied: u64,
    pub refused: u64,
    pub max_primaries_at_once: Option<u64>,
    pub promoted: Option<bool>,
    pub epochs: Option<(u64, u64)>,
    pub p99_ms: f64,
    pub primary: String,
    pub final_primary: String,
    pub healed_after_ms: u64,
    /// How long the fault was held, if it is healed rather than healing itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_s: Option<u64>,
    /// disconnect-link: the primary raised an alert about its replication link, and dropped
    /// its standbys from the in-sync set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standbys_dropped: Option<bool>,
    /// disconnect-primary: the cut-off primary said it was isolated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolated_alert: Option<bool>,
    pub ok: bool,
}

/// Lets the writes run this long before the fault.
const LEAD: Duration = Duration::from_secs(3);

pub async fn run(run: StoreRun, codec: FrameCodec) -> anyhow::Result<StoreReport> {
    let lab = Lab::open(&run.project)?;
    let scenario = run
        .scenario
        .ok_or_else(|| anyhow::anyhow!("which of the store's scenarios?"))?;
    let primary = steady(&run.nodes, &codec).await?;
    let standby = run
        .nodes
        .iter()
        .find(|node| **node != primary)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the store has no standby"))?;
    let plan = LoadPlan {
        nodes: run.nodes.clone(),
        clients: 4,
        rate: 300,
        duration: scenario.load_for(),
        prefix: format!("{}-{}", scenario.name(), wall_ms()),
        verify: true,
        watch: Some(Duration::from_millis(20)),
        redis: None,
    };
    let load = tokio::spawn(load::run(plan, codec.clone()));
    tokio::time::sleep(LEAD).await;

    let fault_from = wall_ms();
    // When the fault was in place; a held one is healed before the load's report is read.
    let fault_until = match scenario {
        StoreScenario::KillPrimary => {
            admin_kill(&run.nodes, &run.admin_token, &primary, &codec).await?;
            wall_ms()
        }
        StoreScenario::KillStandby => {
            admin_kill(&run.nodes, &run.admin_token, &standby, &codec).await?;
            wall_ms()
        }
        StoreScenario::RestartAll => {
            let mut killed = Vec::new();
            for node in &run.nodes {
                let target = store_node(&lab, node).await?;
                let undo = lab
                    .inject(
                        &single(FaultKind::Kill, System::Store),
                        &target,
                        &run.networks,
                        None,
                    )
                    .await?;
                killed.push((target, undo));
            }
            let until = wall_ms();
            // A kill through the engine is no crash to the restart policy: start them again
            // as it would have.
            for (target, undo) in killed {
                lab.heal(&target, undo).await?;
            }
            until
        }
        StoreScenario::StopPrimary => {
            let target = store_node(&lab, &primary).await?;
            // Returns once the container has exited: its shutdown is part of the fault.
            lab.stop(&target.id).await?;
            let until = wall_ms();
            tokio::time::sleep(scenario.hold().unwrap_or_default()).await;
            lab.start(&target.id).await?;
            until
        }
        StoreScenario::PausePrimary
        | StoreScenario::DisconnectLink
        | StoreScenario::DisconnectPrimary => {
            let kind = match scenario {
                StoreScenario::PausePrimary => FaultKind::Pause,
                StoreScenario::DisconnectLink => FaultKind::CutLink,
                _ => FaultKind::CutOff,
            };
            let target = store_node(&lab, &primary).await?;
            let undo = lab
                .inject(&single(kind, System::Store), &target, &run.networks, None)
                .await?;
            let until = wall_ms();
            tokio::time::sleep(scenario.hold().unwrap_or_default()).await;
            lab.heal(&target, undo).await?;
            until
        }
    };
    finish(
        scenario,
        &run,
        load.await??,
        (fault_from, fault_until),
        primary,
        &codec,
    )
    .await
}

/// `check-failover`: the checker's clients (4, reading and writing 5 keys, 300 operations/s
/// for 10 s) while the primary is killed 4 s in; the history must be linearizable per key with
/// nothing acknowledged lost, and another node primary after.
#[derive(Debug, Serialize)]
pub struct CheckFailoverReport {
    pub scenario: &'static str,
    pub operations: usize,
    pub ok_ops: usize,
    pub unknown: usize,
    pub failed: usize,
    pub anomalies: usize,
    pub first_anomaly: Option<Anomaly>,
    pub check_ms: u64,
    pub primary: String,
    pub final_primary: String,
    pub ok: bool,
}

pub async fn check_failover(
    run: StoreRun,
    codec: FrameCodec,
) -> anyhow::Result<CheckFailoverReport> {
    let primary = steady(&run.nodes, &codec).await?;
    let workload = Workload {
        nodes: run.nodes.clone(),
        clients: 4,
        keys: 5,
        rate: 300,
        duration: Duration::from_secs(10),
        deadline: Duration::from_secs(5),
        prefix: format!("check-failover-{}", wall_ms()),
    };
    let recording = tokio::spawn(recorder::record(workload, codec.clone()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    admin_kill(&run.nodes, &run.admin_token, &primary, &codec).await?;
    let history = recording.await??;
    let report = verdict::check(&history);
    let final_primary = steady(&run.nodes, &codec).await?;
    Ok(CheckFailoverReport {
        scenario: "check-failover",
        operations: report.operations,
        ok_ops: report.ok,
        unknown: report.unknown,
        failed: report.failed,
        anomalies: report.anomalies.len(),
        first_anomaly: report.anomalies.first().cloned(),
        check_ms: report.check_ms,
        ok: report.valid() && report.ok > 0 && final_primary != primary,
        primary: service_of(&primary).to_string(),
        final_primary: service_of(&final_primary).to_string(),
    })
}

/// The load's report, the store steady again, and the verdict.
async fn finish(
    scenario: StoreScenario,
    run: &StoreRun,
    report: LoadReport,
    fault: (u64, u64),
    primary: String,
    codec: &FrameCodec,
) -> anyhow::Result<StoreReport> {
    let healing = std::time::Instant::now();
    let final_primary = steady(&run.nodes, codec).await?;
    let healed_after_ms = healing.elapsed().as_millis() as u64;
    Ok(judge(
        scenario,
        &report,
        fault,
        primary,
        final_primary,
        healed_after_ms,
    ))
}

/// The scenario's figures and verdict (pure).
fn judge(
    scenario: StoreScenario,
    report: &LoadReport,
    (fault_from, fault_until): (u64, u64),
    primary: String,
    final_primary: String,
    healed_after_ms: u64,
) -> StoreReport {
    let alert = |needle: &str| report.alerts.iter().any(|a| a.contains(needle));
    let (alerted, standbys_dropped, isolated_alert) = match scenario {
        StoreScenario::DisconnectLink => (
            Some(alert("replication link")),
            Some(alert("dropped from the in-sync set")),
            None,
        ),
        StoreScenario::DisconnectPrimary => (
            None,
            None,
            Some(report.alerts.iter().any(|a| a.starts_with("isolated"))),
        ),
        _ => (None, None, None),
    };
    let held = report.lost == 0
        && report.refused == 0
        && report.acked > 0
        && report.max_primaries_at_once == Some(1)
        && report.promoted == Some(scenario.promotes());
    let moved = final_primary != primary;
    let ok = held
        && match scenario {
            StoreScenario::KillPrimary
            | StoreScenario::StopPrimary
            | StoreScenario::PausePrimary
            | StoreScenario::DisconnectPrimary => moved,
            StoreScenario::KillStandby => !moved,
            // Writes go on through the cut: no gap as long as it.
            StoreScenario::DisconnectLink => {
                !moved
                    && alerted == Some(true)
                    && standbys_dropped == Some(true)
                    && report.max_gap_ms < 4_000
            }
            StoreScenario::RestartAll => true,
        };
    StoreReport {
        scenario: scenario.name(),
        outage_ms: report.max_gap_ms,
        outage_covers_fault: report.gap_from_ms <= fault_until && report.gap_until_ms >= fault_from,
        acked: report.acked,
        lost: report.lost,
        unknown: report.unknown,
        unknown_applied: report.unknown_applied,
        refused: report.refused,
        max_primaries_at_once: report.max_primaries_at_once,
        promoted: report.promoted,
        epochs: report.epochs,
        p99_ms: (report.p99_ms * 10.0).round() / 10.0,
        primary: service_of(&primary).to_string(),
        final_primary: service_of(&final_primary).to_string(),
        healed_after_ms,
        held_s: scenario.hold().map(|hold| hold.as_secs()),
        alerted,
        standbys_dropped,
        isolated_alert,
        ok,
    }
}

/// Seed 001's kill: `node`, one of `nodes`, exits at once on a request carrying the admin
/// `token`.
pub(crate) async fn admin_kill(
    nodes: &[String],
    token: &str,
    node: &str,
    codec: &FrameCodec,
) -> anyhow::Result<()> {
    let client = primary_standby::client::Client::new(nodes.to_vec(), codec.clone());
    let kill = Op::Kill {
        token: token.to_string(),
    };
    match client.ask(node, kill).await? {
        Reply::Killed => Ok(()),
        other => anyhow::bail!("{node} did not exit on the admin kill: {other:?}"),
    }
}

/// store1:7300 → store1, its compose service.
fn service_of(node: &str) -> &str {
    node.rsplit_once(':').map_or(node, |(host, _)| host)
}

/// The container of the store node whose client address is `node`.
async fn store_node(lab: &Lab, node: &str) -> anyhow::Result<Node> {
    let service = service_of(node);
    let (id, name) = lab.containers(service).await?.swap_remove(0);
    Ok(Node {
        id,
        name,
        system: System::Store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scenario::promoted_load as promoted;

    fn verdict(scenario: StoreScenario, report: &LoadReport, final_primary: &str) -> StoreReport {
        let primary = "store1:7300".to_string();
        judge(
            scenario,
            report,
            (10_050, 10_060),
            primary,
            final_primary.to_string(),
            500,
        )
    }

    #[test]
    fn a_killed_primary_must_be_replaced_with_nothing_lost() {
        let report = verdict(StoreScenario::KillPrimary, &promoted(), "store2:7300");
        assert!(report.ok && report.outage_covers_fault);
        assert_eq!(
            (report.primary.as_str(), report.final_primary.as_str()),
            ("store1", "store2")
        );
        assert_eq!(report.p99_ms, 30.0);
        assert!(!verdict(StoreScenario::KillPrimary, &promoted(), "store1:7300").ok);
        let mut lost = promoted();
        lost.lost = 1;
        assert!(!verdict(StoreScenario::KillPrimary, &lost, "store2:7300").ok);
        let mut two = promoted();
        two.max_primaries_at_once = Some(2);
        assert!(!verdict(StoreScenario::KillPrimary, &two, "store2:7300").ok);
    }

    #[test]
    fn a_stopped_primary_must_be_replaced_with_nothing_lost() {
        let report = verdict(StoreScenario::StopPrimary, &promoted(), "store2:7300");
        assert!(report.ok);
        assert_eq!((report.scenario, report.held_s), ("stop-primary", Some(2)));
        let mut nobody = promoted();
        nobody.promoted = Some(false);
        assert!(!verdict(StoreScenario::StopPrimary, &nobody, "store1:7300").ok);
        assert!(!verdict(StoreScenario::StopPrimary, &promoted(), "store1:7300").ok);
    }

    #[test]
    fn a_killed_standby_must_not_promote_anyone() {
        let mut calm = promoted();
        calm.promoted = Some(false);
        assert!(verdict(StoreScenario::KillStandby, &calm, "store1:7300").ok);
        assert!(!verdict(StoreScenario::KillStandby, &promoted(), "store1:7300").ok);
    }

    #[test]
    fn a_cut_link_must_be_reported_and_ridden_through() {
        let mut cut = promoted();
        cut.promoted = Some(false);
        let report = verdict(StoreScenario::DisconnectLink, &cut, "store1:7300");
        assert!(!report.ok, "no alert raised");
        cut.alerts = vec![
            "replication link to store2-link:7301 lost".into(),
            "store2 dropped from the in-sync set".into(),
        ];
        assert!(verdict(StoreScenario::DisconnectLink, &cut, "store1:7300").ok);
        cut.max_gap_ms = 4_000;
        assert!(!verdict(StoreScenario::DisconnectLink, &cut, "store1:7300").ok);
    }

    #[test]
    fn a_gap_elsewhere_does_not_cover_the_fault() {
        let mut early = promoted();
        early.gap_from_ms = 5_000;
        early.gap_until_ms = 5_100;
        let report = verdict(StoreScenario::PausePrimary, &early, "store3:7300");
        assert!(!report.outage_covers_fault);
        assert_eq!(report.held_s, Some(3));
    }
}
