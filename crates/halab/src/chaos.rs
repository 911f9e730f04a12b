//! `halab chaos random`: the nemesis's plan carried out on the running lab ([`crate::lab`]),
//! each system's track of faults at once, while the checker's clients read and write and the
//! store's and election's nodes are polled every 20 ms, the dispatcher every 50 ms. Then: every
//! fault healed, every system at rest again (a primary with both standbys in sync; one leader
//! all agree on, ⌈n/3⌉ green; every running worker registered; the monitor seeing every node
//! up), the final reads, and the checks — the history linearizable with nothing acknowledged
//! lost, never two primaries, never two leaders at once, never more workers active than
//! allowed, the monitor's front door serving the store's final values.
//!
//! Runs where the store's names resolve: a container on the lab network with the Docker socket
//! mounted (scripts/chaos random starts one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use primary_standby::client::Client;
use primary_standby::load;
use primary_standby::witness::wall_ms;
use proto::FrameCodec;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::lab::{ELECTION_SERVICE, Lab, Networks};
use crate::nemesis::{self, Fault, FaultKind, System, Target};
use crate::recorder::{self, Workload};
use crate::verdict::{self, Anomaly};
use crate::{dispatch, election, monitor};

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
    /// The dispatcher's status address (its workers are broken too) and the monitor's HTTP
    /// address (None: left alone).
    pub dispatcher: Option<String>,
    pub monitor: Option<String>,
    /// The compose project (its containers' label) and the lab's two networks.
    pub project: String,
    pub networks: Networks,
    pub workload: Workload,
}

#[derive(Debug, Serialize)]
pub struct RandomReport {
    pub seed: u64,
    pub faults: usize,
    pub faults_by_kind: BTreeMap<FaultKind, usize>,
    pub faults_by_system: BTreeMap<System, usize>,
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
    /// The dispatcher as sampled during the run, and at rest after it.
    pub dispatcher_watched: Option<dispatch::Watched>,
    pub dispatcher: Option<dispatch::Settled>,
    /// The monitor at rest after the run.
    pub monitor: Option<monitor::Settled>,
    pub ok: bool,
}

/// How long the store may take to be steady again once every fault is healed.
const STEADY_LIMIT: Duration = Duration::from_secs(60);

pub async fn random(run: RandomRun, codec: FrameCodec) -> anyhow::Result<RandomReport> {
    let lab = Lab::open(&run.project)?;
    // From a store at rest: a primary with both standbys in sync.
    steady(&run.nodes, &codec).await?;
    let electors = match run.election {
        Some(_) => lab.containers(ELECTION_SERVICE).await?.len(),
        None => 0,
    };
    let (dispatchers, workers) = match run.dispatcher {
        Some(_) => (1, lab.workers().await?.len()),
        None => (0, 0),
    };
    let monitors = usize::from(run.monitor.is_some());
    let of = |system, count| (0..count).map(move |index| Target { system, index });
    let targets: Vec<Target> = of(System::Store, run.services.len())
        .chain(of(System::Election, electors))
        .chain(of(System::Dispatcher, dispatchers))
        .chain(of(System::Worker, workers))
        .chain(of(System::Monitor, monitors))
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
    let (kills, killed) = mpsc::unbounded_channel();
    let election_watch = run.election.clone().map(|name| {
        let every = Duration::from_millis(20);
        let stop = tokio::time::sleep_until(until.into());
        tokio::spawn(election::watch(name, codec.clone(), every, stop, killed))
    });
    let dispatcher_watch = run.dispatcher.clone().map(|name| {
        let every = Duration::from_millis(50);
        tokio::spawn(dispatch::watch(name, codec.clone(), every, until))
    });
    let workload = run.workload.clone();
    let client_codec = codec.clone();
    let clients =
        tokio::spawn(async move { recorder::clients(&workload, &client_codec, began).await });

    // Each system's track is its own future, all joined at once: faults on different systems
    // overlap.
    let tracks = plan
        .iter()
        .map(|fault| fault.target.system)
        .collect::<std::collections::BTreeSet<System>>()
        .into_iter()
        .map(|system| {
            let track: Vec<_> = plan
                .iter()
                .filter(|f| f.target.system == system)
                .cloned()
                .collect();
            carry_out(&lab, &run, track, began, until, &kills)
        });
    let mut faults_by_kind = BTreeMap::new();
    let mut faults_by_system = BTreeMap::new();
    for done in futures_util::future::join_all(tracks).await {
        for fault in done? {
            *faults_by_kind.entry(fault.kind).or_default() += 1;
            *faults_by_system.entry(fault.target.system).or_default() += 1;
        }
    }

    let mut history = clients.await??;
    let workload_ended = Instant::now();
    steady(&run.nodes, &codec).await?;
    let steady_after = workload_ended.elapsed();
    let final_reads = recorder::final_reads(&run.workload, &codec, began).await;
    let monitor = match &run.monitor {
        Some(addr) => Some(monitor::settled(addr, &final_reads, STEADY_LIMIT).await?),
        None => None,
    };
    history.extend(final_reads);
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

    let (dispatcher_watched, dispatcher) = match (&run.dispatcher, dispatcher_watch) {
        (Some(name), Some(watch)) => {
            let watched = watch.await?;
            let settled =
                dispatch::settled(&lab, name, &codec, &run.networks.lan, STEADY_LIMIT).await?;
            (Some(watched), Some(settled))
        }
        _ => (None, None),
    };

    let report = verdict::check(&history);
    let max_primaries_at_once = seen.max_overlap(wall_ms());
    Ok(RandomReport {
        seed: run.seed,
        faults: faults_by_kind.values().sum(),
        faults_by_kind,
        faults_by_system,
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
            && max_leaders_at_once.is_none_or(|most| most <= 1)
            && dispatcher_watched.is_none_or(|watched| watched.ok())
            && monitor.as_ref().is_none_or(monitor::Settled::ok),
        dispatcher_watched,
        dispatcher,
        monitor,
        anomalies: report.anomalies,
    })
}

/// One system's track of faults carried out, each healed before the next; returns those made.
/// The plan's calm between faults is kept after each actual healing (a kill through the engine
/// can take a second or two): the track shifts later, and a fault that would no longer be
/// healed before the workload ends is left out.
async fn carry_out(
    lab: &Lab,
    run: &RandomRun,
    track: Vec<Fault>,
    began: Instant,
    until: Instant,
    kills: &mpsc::UnboundedSender<(std::net::IpAddr, u64)>,
) -> anyhow::Result<Vec<Fault>> {
    let mut made = Vec::new();
    let mut next_at = began + Duration::from_millis(track.first().map_or(0, |f| f.at_ms));
    for (index, fault) in track.iter().enumerate() {
        let hold = Duration::from_millis(fault.hold_ms);
        if next_at + hold >= until {
            tracing::info!(
                system = ?fault.target.system,
                left_out = track.len() - index,
                "no time left for the rest of the track"
            );
            break;
        }
        tokio::time::sleep_until(next_at.into()).await;
        let node = lab.node(&fault.target, run).await?;
        tracing::info!(?fault.kind, node = %node.name, hold_ms = fault.hold_ms, "fault");
        if (fault.kind, node.system) == (FaultKind::Kill, System::Election) {
            // Told before the signal leaves: the leadership a dead process held ends with it.
            if let Some(ip) = lab.address(&node.id, &run.networks.lan).await? {
                let _ = kills.send((ip, wall_ms()));
            }
        }
        let peer = match fault.peer {
            Some(index) => {
                let peer = Target {
                    system: fault.target.system,
                    index,
                };
                Some(lab.node(&peer, run).await?)
            }
            None => None,
        };
        match lab.inject(fault, &node, &run.networks, peer.as_ref()).await {
            Ok(undo) => {
                tokio::time::sleep(hold).await;
                lab.heal(&node, undo).await?;
                tracing::info!(?fault.kind, node = %node.name, "healed");
                made.push(fault.clone());
            }
            // Picked while it ran, it ended on its own before the fault reached it.
            Err(e) if node.system == System::Worker && !lab.runs(&node.id).await? => {
                tracing::info!(node = %node.name, "the worker ended on its own first ({e:#}); fault left out");
            }
            Err(e) => return Err(e),
        }
        if let Some(following) = track.get(index + 1) {
            let calm = following.at_ms - fault.at_ms - fault.hold_ms;
            next_at = Instant::now() + Duration::from_millis(calm);
        }
    }
    Ok(made)
}

/// Waits until one node is primary with every other node in sync; returns that node.
pub(crate) async fn steady(nodes: &[String], codec: &FrameCodec) -> anyhow::Result<String> {
    let client = Client::new(nodes.to_vec(), codec.clone());
    let give_up = Instant::now() + STEADY_LIMIT;
    loop {
        let mut primaries = Vec::new();
        for node in nodes {
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_millis(500), client.status(node)).await
            {
                if status.role == "primary" {
                    primaries.push((node, status.in_sync.len()));
                }
            }
        }
        if let [(primary, in_sync)] = primaries[..] {
            if in_sync == nodes.len() - 1 {
                return Ok(primary.clone());
            }
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "the store was not steady (a primary, every standby in sync) within {STEADY_LIMIT:?} of the last fault's healing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
