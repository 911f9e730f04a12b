//! `halab chaos random`: the nemesis's plan carried out on the running lab through Docker's
//! Engine API (bollard, over the socket), on the store's and the election's nodes, while the
//! checker's clients read and write and every node's status is polled (the store's every
//! 20 ms, the election's every 50). Then: every fault healed, both systems at rest again (a
//! primary with both standbys in sync; one leader all agree on, ⌈n/3⌉ green), the final reads,
//! and the checks — the history linearizable with nothing acknowledged lost, never two
//! primaries, never two leaders at once.
//!
//! Runs where the store's names resolve: a container on the lab network with the Docker socket
//! mounted (scripts/chaos random starts one).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions,
};
use primary_standby::client::Client;
use primary_standby::load;
use primary_standby::witness::wall_ms;
use proto::FrameCodec;
use serde::Serialize;

use crate::election;
use crate::nemesis::{self, FaultKind, System, Target};
use crate::recorder::{self, Workload};
use crate::verdict::{self, Anomaly};

#[derive(Debug, Clone)]
pub struct RandomRun {
    pub seed: u64,
    /// The workload's length; every fault is healed before it ends.
    pub duration: Duration,
    /// The store's services, in node order (store1, …), and their client addresses.
    pub services: Vec<String>,
    pub nodes: Vec<String>,
    /// The election's nodes: host:port their addresses all resolve under (None: left alone).
    pub election: Option<String>,
    /// The compose project (its containers' label) and the lab's two networks.
    pub project: String,
    pub lan: String,
    pub link: String,
    pub workload: Workload,
}

#[derive(Debug, Serialize)]
pub struct RandomReport {
    pub seed: u64,
    pub faults: usize,
    pub faults_by_kind: BTreeMap<FaultKind, usize>,
    pub operations: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub anomalies: Vec<Anomaly>,
    pub max_primaries_at_once: u64,
    /// From the end of the workload until a primary had both standbys in sync again.
    pub steady_after_ms: u64,
    pub max_leaders_at_once: Option<u64>,
    /// Two leaderships that overlapped, if any: (node, term, from_ms, until_ms) each.
    pub leaders_overlap: Option<[(u64, u64, u64, u64); 2]>,
    /// The election at rest after the run.
    pub election: Option<election::Settled>,
    pub ok: bool,
}

/// The election containers' service and the alias they answer to on the lab network.
const ELECTION_SERVICE: &str = "election";

/// How long the store may take to be steady again once every fault is healed.
const STEADY_LIMIT: Duration = Duration::from_secs(60);

pub async fn random(run: RandomRun, codec: FrameCodec) -> anyhow::Result<RandomReport> {
    let lab = Lab::open(&run.project)?;
    let electors = match run.election {
        Some(_) => lab.containers(ELECTION_SERVICE).await?.len(),
        None => 0,
    };
    let targets: Vec<Target> = (0..run.services.len())
        .map(|index| Target {
            system: System::Store,
            index,
        })
        .chain((0..electors).map(|index| Target {
            system: System::Election,
            index,
        }))
        .collect();
    let plan = nemesis::plan(run.seed, run.duration, &targets);
    tracing::info!(seed = run.seed, faults = plan.len(), "the nemesis's plan");
    let began = Instant::now();
    let until = began + run.duration;
    let store_watch = tokio::spawn(load::watch(
        run.nodes.clone(),
        codec.clone(),
        Duration::from_millis(20),
        until.into(),
    ));
    let election_watch = run.election.clone().map(|name| {
        let every = Duration::from_millis(50);
        tokio::spawn(election::watch(name, codec.clone(), every, until))
    });
    let workload = run.workload.clone();
    let client_codec = codec.clone();
    let clients =
        tokio::spawn(async move { recorder::clients(&workload, &client_codec, began).await });

    // The plan's calm between faults is kept after each actual healing (a kill through the
    // engine can take a second or two): the schedule shifts later, and a fault that would no
    // longer be healed before the workload ends is left out.
    let mut faults_by_kind = BTreeMap::new();
    let mut next_at = began + Duration::from_millis(plan.first().map_or(0, |f| f.at_ms));
    for (index, fault) in plan.iter().enumerate() {
        let hold = Duration::from_millis(fault.hold_ms);
        if next_at + hold >= until {
            tracing::info!(
                left_out = plan.len() - index,
                "no time left for the rest of the plan"
            );
            break;
        }
        tokio::time::sleep_until(next_at.into()).await;
        let node = lab.node(&fault.target, &run).await?;
        tracing::info!(?fault.kind, node = %node.name, hold_ms = fault.hold_ms, "fault");
        lab.inject(fault.kind, &node, &run).await?;
        tokio::time::sleep(hold).await;
        lab.heal(fault.kind, &node, &run).await?;
        tracing::info!(?fault.kind, node = %node.name, "healed");
        *faults_by_kind.entry(fault.kind).or_default() += 1;
        if let Some(following) = plan.get(index + 1) {
            let calm = following.at_ms - fault.at_ms - fault.hold_ms;
            next_at = Instant::now() + Duration::from_millis(calm);
        }
    }

    let mut history = clients.await??;
    let workload_ended = Instant::now();
    steady(&run.nodes, &codec).await?;
    let steady_after = workload_ended.elapsed();
    history.extend(recorder::final_reads(&run.workload, &codec, began).await);
    history.sort_by_key(|op| op.invoked_ns);
    let seen = store_watch.await?;
    let (max_leaders_at_once, leaders_overlap, settled) = match (&run.election, election_watch) {
        (Some(name), Some(watch)) => {
            let seen = watch.await?;
            let settled = election::settled(name, &codec, STEADY_LIMIT).await?;
            let now = wall_ms();
            let overlap = seen.overlapping(now);
            (Some(seen.max_leaders_at_once(now)), overlap, Some(settled))
        }
        _ => (None, None, None),
    };

    let report = verdict::check(&history);
    let max_primaries_at_once = seen.max_overlap(wall_ms());
    Ok(RandomReport {
        seed: run.seed,
        faults: faults_by_kind.values().sum(),
        faults_by_kind,
        operations: report.operations,
        acknowledged: report.ok,
        unknown: report.unknown,
        max_primaries_at_once,
        steady_after_ms: steady_after.as_millis() as u64,
        max_leaders_at_once,
        leaders_overlap,
        election: settled,
        ok: report.valid()
            && max_primaries_at_once <= 1
            && report.ok > 0
            && max_leaders_at_once.is_none_or(|most| most <= 1),
        anomalies: report.anomalies,
    })
}

/// Waits until one node is primary with every other node in sync.
async fn steady(nodes: &[String], codec: &FrameCodec) -> anyhow::Result<()> {
    let client = Client::new(nodes.to_vec(), codec.clone());
    let give_up = Instant::now() + STEADY_LIMIT;
    loop {
        let mut primaries = Vec::new();
        for node in nodes {
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_millis(500), client.status(node)).await
            {
                if status.role == "primary" {
                    primaries.push(status.in_sync.len());
                }
            }
        }
        if primaries == [nodes.len() - 1] {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "the store was not steady (a primary, every standby in sync) within {STEADY_LIMIT:?} of the last fault's healing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lab's containers, through the Engine API.
struct Lab {
    docker: Docker,
    project: String,
}

/// A container to break, and what it takes to put it back.
struct Node {
    id: String,
    /// store1, or election's container name.
    name: String,
    system: System,
}

impl Lab {
    fn open(project: &str) -> anyhow::Result<Lab> {
        let docker = Docker::connect_with_socket_defaults()
            .context("cannot reach the Docker engine (is /var/run/docker.sock mounted?)")?;
        Ok(Lab {
            docker,
            project: project.to_string(),
        })
    }

    /// The service's containers (id, name), in name order.
    async fn containers(&self, service: &str) -> anyhow::Result<Vec<(String, String)>> {
        let labels = vec![
            format!("com.docker.compose.project={}", self.project),
            format!("com.docker.compose.service={service}"),
        ];
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), labels)])),
            ..Default::default()
        };
        let mut found: Vec<(String, String)> = self
            .docker
            .list_containers(Some(options))
            .await?
            .into_iter()
            .filter_map(|c| Some((c.id?, c.names?.first()?.trim_start_matches('/').to_string())))
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1));
        anyhow::ensure!(
            !found.is_empty(),
            "no container of {service} in project {}",
            self.project
        );
        Ok(found)
    }

    async fn node(&self, target: &Target, run: &RandomRun) -> anyhow::Result<Node> {
        let (id, name) = match target.system {
            System::Store => {
                let service = &run.services[target.index];
                let (id, _) = self.containers(service).await?.swap_remove(0);
                (id, service.clone())
            }
            System::Election => {
                let all = self.containers(ELECTION_SERVICE).await?;
                all[target.index % all.len()].clone()
            }
        };
        Ok(Node {
            id,
            name,
            system: target.system,
        })
    }

    async fn inject(&self, kind: FaultKind, node: &Node, run: &RandomRun) -> anyhow::Result<()> {
        match kind {
            FaultKind::Kill => {
                let options = KillContainerOptions {
                    signal: "SIGKILL".into(),
                };
                self.docker.kill_container(&node.id, Some(options)).await?;
            }
            FaultKind::Pause => self.docker.pause_container(&node.id).await?,
            FaultKind::CutLink => self.disconnect(&run.link, &node.id).await?,
            FaultKind::CutOff => {
                self.disconnect(&run.lan, &node.id).await?;
                if node.system == System::Store {
                    self.disconnect(&run.link, &node.id).await?;
                }
            }
        }
        Ok(())
    }

    async fn heal(&self, kind: FaultKind, node: &Node, run: &RandomRun) -> anyhow::Result<()> {
        let (lan_alias, link_alias) = match node.system {
            System::Store => (node.name.clone(), format!("{}-link", node.name)),
            System::Election => (ELECTION_SERVICE.to_string(), String::new()),
        };
        match kind {
            // The store's restart policy may not apply to a kill through the engine, and the
            // election has none: start it if nothing brings it back.
            FaultKind::Kill => {
                let inspected = self
                    .docker
                    .inspect_container(&node.id, None::<InspectContainerOptions>)
                    .await?;
                let state = inspected.state.unwrap_or_default();
                let coming_back = state.running == Some(true) || state.restarting == Some(true);
                if !coming_back {
                    self.docker.start_container(&node.id, None).await?;
                }
            }
            FaultKind::Pause => self.docker.unpause_container(&node.id).await?,
            FaultKind::CutLink => self.connect(&run.link, &node.id, &link_alias).await?,
            FaultKind::CutOff => {
                self.connect(&run.lan, &node.id, &lan_alias).await?;
                if node.system == System::Store {
                    self.connect(&run.link, &node.id, &link_alias).await?;
                }
            }
        }
        Ok(())
    }

    async fn disconnect(&self, network: &str, id: &str) -> anyhow::Result<()> {
        let request = NetworkDisconnectRequest {
            container: id.to_string(),
            force: Some(true),
        };
        self.docker
            .disconnect_network(network, request)
            .await
            .with_context(|| format!("disconnecting {id} from {network}"))
    }

    /// Back on the network under the alias the lab gives it there.
    async fn connect(&self, network: &str, id: &str, alias: &str) -> anyhow::Result<()> {
        let request = NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(vec![alias.to_string()]),
                ..Default::default()
            }),
        };
        self.docker
            .connect_network(network, request)
            .await
            .with_context(|| format!("connecting {id} to {network}"))
    }
}
