//! The monitor's named scenarios, its view read from its /api/status every 20 ms: a store
//! standby paused (the machine answers, the service not: `service-down`) or stopped (its name
//! leaves Docker's DNS: `machine-down`), then `up` again once it is back; and the monitor
//! itself restarted (its API comes back with every node's state, and what was written through
//! it is still there: it holds nothing the cluster needs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::FrameCodec;
use serde_json::{Map, Value, json};

use super::{millis, wait_until};
use crate::chaos::steady;
use crate::lab::Lab;
use crate::monitor::{http_get, http_put, node_states};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorScenario {
    PauseNode,
    StopNode,
    RestartMonitor,
}

#[derive(Debug, Clone)]
pub struct MonitorRun {
    pub scenario: MonitorScenario,
    /// The monitor's HTTP address on the lab network.
    pub monitor: String,
    /// The store's client addresses (store1:7300, …), as the monitor names them.
    pub nodes: Vec<String>,
    pub project: String,
}

/// The monitor's poll interval in the lab (its default): a figure in poll intervals says how
/// soon within its rhythm it noticed.
const POLL: Duration = Duration::from_millis(500);

/// One JSON line, the fields `scripts/chaos` printed (one is named for the state awaited).
pub async fn run(run: MonitorRun, codec: FrameCodec) -> anyhow::Result<Map<String, Value>> {
    let lab = Lab::open(&run.project)?;
    match run.scenario {
        MonitorScenario::PauseNode => node_fault(&lab, &run, &codec, Fault::Pause).await,
        MonitorScenario::StopNode => node_fault(&lab, &run, &codec, Fault::Stop).await,
        MonitorScenario::RestartMonitor => restart_monitor(&lab, &run).await,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Pause,
    Stop,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Pause => "pause-node",
            Fault::Stop => "stop-node",
        }
    }

    /// What the monitor must call the node while it lasts.
    fn down_state(self) -> &'static str {
        match self {
            Fault::Pause => "service-down",
            Fault::Stop => "machine-down",
        }
    }
}

/// Waits until the monitor gives `node` the state `state`.
async fn state_is(
    monitor: &str,
    node: &str,
    state: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let what = format!("the monitor to call {node} {state}");
    let (_, took) = wait_until(&what, limit, async || {
        let states = node_states(monitor).await.ok()?;
        (states.get(node).map(String::as_str) == Some(state)).then_some(())
    })
    .await?;
    Ok(took)
}

async fn node_fault(
    lab: &Lab,
    run: &MonitorRun,
    codec: &FrameCodec,
    fault: Fault,
) -> anyhow::Result<Map<String, Value>> {
    let primary = steady(&run.nodes, codec).await?;
    let mut standbys: Vec<&String> = run.nodes.iter().filter(|n| **n != primary).collect();
    standbys.sort();
    let standby = standbys
        .first()
        .ok_or_else(|| anyhow::anyhow!("the store has no standby"))?
        .to_string();
    let service = standby.rsplit_once(':').map_or(&*standby, |(host, _)| host);
    state_is(&run.monitor, &standby, "up", Duration::from_secs(60)).await?;
    let (id, _) = lab.containers(service).await?.swap_remove(0);
    let began = Instant::now();
    match fault {
        Fault::Pause => lab.pause(&id).await?,
        Fault::Stop => lab.stop(&id).await?,
    }
    let command = began.elapsed();
    // From the moment the fault is in place (the request returned).
    let noticed = state_is(
        &run.monitor,
        &standby,
        fault.down_state(),
        Duration::from_secs(30),
    )
    .await;
    match fault {
        Fault::Pause => lab.unpause(&id).await?,
        Fault::Stop => lab.start(&id).await?,
    }
    let noticed = noticed?;
    let back = state_is(&run.monitor, &standby, "up", Duration::from_secs(60)).await?;
    steady(&run.nodes, codec).await?;
    let mut report = Map::new();
    report.insert("scenario".into(), json!(fault.name()));
    report.insert("node".into(), json!(service));
    report.insert("fault_command_ms".into(), json!(millis(command)));
    report.insert(
        format!("{}_after_ms", fault.down_state()),
        json!(millis(noticed)),
    );
    report.insert(
        "poll_intervals".into(),
        json!((noticed.as_secs_f64() / POLL.as_secs_f64() * 10.0).round() / 10.0),
    );
    report.insert("up_after_ms".into(), json!(millis(back)));
    report.insert("ok".into(), json!(true));
    Ok(report)
}

async fn restart_monitor(lab: &Lab, run: &MonitorRun) -> anyhow::Result<Map<String, Value>> {
    wait_until(
        "the monitor's front door",
        Duration::from_secs(60),
        async || http_get(&run.monitor, "/ping").await.ok(),
    )
    .await?;
    let key = format!("rm{}", primary_standby::witness::wall_ms());
    http_put(&run.monitor, &format!("/kv/{key}"), "kept").await?;
    let (id, _) = lab.containers("monitor").await?.swap_remove(0);
    let began = Instant::now();
    lab.restart(&id).await?;
    let command = began.elapsed();
    let (states, back) = wait_until(
        "the monitor to see every store node up again",
        Duration::from_secs(60),
        async || {
            let states = node_states(&run.monitor).await.ok()?;
            all_up(&states, &run.nodes).then_some(states)
        },
    )
    .await?;
    let read = http_get(&run.monitor, &format!("/kv/{key}")).await;
    let kept = read
        .ok()
        .and_then(|body| serde_json::from_str::<Value>(&body).ok())
        .is_some_and(|body| body["value"] == "kept");
    let mut report = Map::new();
    report.insert("scenario".into(), json!("restart-monitor"));
    report.insert("back_after_ms".into(), json!(millis(back)));
    report.insert("restart_command_ms".into(), json!(millis(command)));
    report.insert("states".into(), json!(states));
    report.insert("write_kept".into(), json!(kept));
    report.insert("ok".into(), json!(kept));
    Ok(report)
}

/// Whether the monitor calls every one of `nodes` up.
fn all_up(states: &BTreeMap<String, String>, nodes: &[String]) -> bool {
    nodes
        .iter()
        .all(|node| states.get(node).map(String::as_str) == Some("up"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_node_must_be_up() {
        let nodes = vec!["store1:7300".to_string(), "store2:7300".to_string()];
        let mut states = BTreeMap::from([
            ("store1:7300".to_string(), "up".to_string()),
            ("store2:7300".to_string(), "service-down".to_string()),
            ("election:7201".to_string(), "up".to_string()),
        ]);
        assert!(!all_up(&states, &nodes));
        states.insert("store2:7300".into(), "up".into());
        assert!(all_up(&states, &nodes));
        states.remove("store1:7300");
        assert!(!all_up(&states, &nodes), "a node the monitor does not list");
    }
}
