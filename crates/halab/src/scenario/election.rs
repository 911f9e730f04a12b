//! The election's named scenarios: kill the leader or a follower, add a node, cut the leader
//! off, restart two followers at once, make one follower deaf to the leader. Every node's
//! status is read over its status port (each address the service's name resolves to) every
//! 20 ms throughout, and every leadership the nodes report is kept: `max_leaders_seen_at_once`
//! counts the leaderships in force at one instant by the nodes' own records, so two leaders
//! show even between samples.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use primary_standby::witness::wall_ms;
use proto::{ElectionNodeStatus, FrameCodec, NodeId};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{millis, single, wait_until};
use crate::election::{self, Settled};
use crate::lab::{ELECTION_SERVICE, Lab, Networks, Node};
use crate::nemesis::{FaultKind, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionScenario {
    /// SIGKILL the leader, `runs` times in a row (each time started again).
    KillLeader {
        runs: usize,
    },
    KillFollower,
    AddNode,
    PartitionLeader,
    RestartFollowers,
    /// One follower drops every packet from the leader for this long.
    OneWayPartition {
        deaf_for: Duration,
    },
}

impl ElectionScenario {
    fn name(self) -> &'static str {
        match self {
            ElectionScenario::KillLeader { .. } => "kill-leader",
            ElectionScenario::KillFollower => "kill-follower",
            ElectionScenario::AddNode => "add-node",
            ElectionScenario::PartitionLeader => "partition-leader",
            ElectionScenario::RestartFollowers => "restart-followers",
            ElectionScenario::OneWayPartition { .. } => "one-way-partition",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ElectionRun {
    pub scenario: ElectionScenario,
    /// The election's status address: every address the name resolves to is one node.
    pub election: String,
    pub project: String,
    /// The lab network the nodes are on.
    pub lan: String,
}

/// What a scenario works with.
struct Bench {
    lab: Lab,
    run: ElectionRun,
    codec: FrameCodec,
    /// Told of every SIGKILL before it is sent: the watch ends the victim's leadership there.
    kills: mpsc::UnboundedSender<(IpAddr, u64)>,
}

impl Bench {
    /// The election is on the lab network alone.
    fn networks(&self) -> Networks {
        Networks {
            lan: self.run.lan.clone(),
            link: String::new(),
        }
    }
}

/// The nodes that answered, with their status.
type Nodes = Vec<(SocketAddr, ElectionNodeStatus)>;

/// How long the election may take to be valid again after a fault is healed.
const SETTLE: Duration = Duration::from_secs(60);

/// One JSON line: the fields `scripts/chaos` printed, and `max_leaders_seen_at_once`.
pub async fn run(run: ElectionRun, codec: FrameCodec) -> anyhow::Result<Map<String, Value>> {
    let scenario = run.scenario;
    let (stop, stopped) = oneshot::channel::<()>();
    let (kills, killed) = mpsc::unbounded_channel();
    let watch = tokio::spawn(election::watch(
        run.election.clone(),
        codec.clone(),
        Duration::from_millis(20),
        async move {
            let _ = stopped.await;
        },
        killed,
    ));
    let bench = Bench {
        lab: Lab::open(&run.project)?,
        run,
        codec,
        kills,
    };
    let outcome = match scenario {
        ElectionScenario::KillLeader { runs } => kill_leader(&bench, runs).await,
        ElectionScenario::KillFollower => kill_follower(&bench).await,
        ElectionScenario::AddNode => add_node(&bench).await,
        ElectionScenario::PartitionLeader => partition_leader(&bench).await,
        ElectionScenario::RestartFollowers => restart_followers(&bench).await,
        ElectionScenario::OneWayPartition { deaf_for } => one_way_partition(&bench, deaf_for).await,
    };
    let _ = stop.send(());
    let seen = watch.await?;
    let (mut report, held) = outcome?;
    let now = wall_ms();
    let most = seen.max_leaders_at_once(now);
    let mut line = Map::new();
    line.insert("scenario".into(), scenario.name().into());
    line.append(&mut report);
    line.insert("max_leaders_seen_at_once".into(), most.into());
    if let Some(overlap) = seen.overlapping(now) {
        line.insert("leaders_overlap".into(), json!(overlap));
    }
    line.insert("ok".into(), (held && most <= 1).into());
    Ok(line)
}

/// Waits until the election is valid (one leader, every node following it with the colour it
/// gave, ⌈n/3⌉ green) and `condition` holds; returns the state and how long that took.
async fn valid(
    bench: &Bench,
    what: &str,
    limit: Duration,
    condition: impl Fn(&Settled, &Nodes) -> bool,
) -> anyhow::Result<((Settled, Nodes), Duration)> {
    wait_until(what, limit, async || {
        let sweep = election::sweep(&bench.run.election, &bench.codec).await;
        let answers: Vec<_> = sweep.iter().map(|(_, answer)| answer.clone()).collect();
        let settled = election::at_rest(&answers).ok()?;
        let nodes: Nodes = sweep
            .into_iter()
            .filter_map(|(addr, answer)| Some((addr, answer?)))
            .collect();
        condition(&settled, &nodes).then_some((settled, nodes))
    })
    .await
}

fn status_of(nodes: &Nodes, id: NodeId) -> anyhow::Result<&(SocketAddr, ElectionNodeStatus)> {
    nodes
        .iter()
        .find(|(_, status)| status.id == id)
        .ok_or_else(|| anyhow::anyhow!("node {id} did not answer"))
}

fn followers(nodes: &Nodes) -> impl Iterator<Item = &(SocketAddr, ElectionNodeStatus)> {
    nodes
        .iter()
        .filter(|(_, status)| status.state == "follower")
}

/// The election container at `ip` on the lab network.
async fn container_at(bench: &Bench, ip: IpAddr) -> anyhow::Result<Node> {
    for (id, name) in bench.lab.containers(ELECTION_SERVICE).await? {
        if bench.lab.address(&id, &bench.run.lan).await? == Some(ip) {
            let system = System::Election;
            return Ok(Node { id, name, system });
        }
    }
    anyhow::bail!("no election container at {ip}")
}

/// SIGKILL through the engine, the watch told first; returns when the request left (wall ms)
/// and how long the engine took to carry it out (the process died within that span).
async fn kill(bench: &Bench, ip: IpAddr, node: &Node) -> anyhow::Result<(u64, u64)> {
    let at_ms = wall_ms();
    let _ = bench.kills.send((ip, at_ms));
    let began = Instant::now();
    bench.lab.kill(&node.id).await?;
    Ok((at_ms, millis(began.elapsed())))
}

/// When the node's first leadership beginning at or after `since_ms` began (wall ms).
fn lease_start_after(status: &ElectionNodeStatus, since_ms: u64) -> Option<u64> {
    status
        .leaderships
        .iter()
        .map(|l| l.from_ms)
        .filter(|from| *from >= since_ms)
        .min()
}

/// How long after `cut_ms` the leadership the node held at `cut_ms` ended, by its own record.
fn stepped_down_after(status: &ElectionNodeStatus, cut_ms: u64) -> Option<u64> {
    status
        .leaderships
        .iter()
        .find(|l| l.from_ms <= cut_ms)
        .and_then(|l| l.until_ms)
        .map(|until| until.saturating_sub(cut_ms))
}

type Outcome = anyhow::Result<(Map<String, Value>, bool)>;

fn figures(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// One kill of the leader: its figures.
#[derive(Debug, Clone, PartialEq)]
struct LeaderKill {
    old_leader: NodeId,
    new_leader: NodeId,
    nodes_after: usize,
    greens_after: usize,
    reelected_after_ms: u64,
    observed_after_ms: u64,
    kill_request_ms: u64,
    rejoined_after_ms: u64,
}

async fn kill_leader_once(bench: &Bench) -> anyhow::Result<LeaderKill> {
    let ((before, nodes), _) = valid(bench, "a valid colouring", SETTLE, |_, _| true).await?;
    let n = nodes.len();
    let (addr, _) = status_of(&nodes, before.leader)?;
    let victim = container_at(bench, addr.ip()).await?;
    tracing::info!(leader = before.leader, container = %victim.name, "killing the leader");
    let (killed_ms, kill_request_ms) = kill(bench, addr.ip(), &victim).await?;
    let new_leader = |settled: &Settled, _: &Nodes| settled.leader != before.leader;
    let ((after, survivors), observed) =
        valid(bench, "a new leader", Duration::from_secs(30), new_leader).await?;
    let (_, new_status) = status_of(&survivors, after.leader)?;
    let began = lease_start_after(new_status, killed_ms)
        .ok_or_else(|| anyhow::anyhow!("the new leader reports no leadership after the kill"))?;
    bench.lab.start(&victim.id).await?;
    let (_, rejoined) = valid(bench, "every node coloured again", SETTLE, |_, all| {
        all.len() == n
    })
    .await?;
    Ok(LeaderKill {
        old_leader: before.leader,
        new_leader: after.leader,
        nodes_after: survivors.len(),
        greens_after: after.green,
        reelected_after_ms: began.saturating_sub(killed_ms),
        observed_after_ms: millis(observed) + kill_request_ms,
        kill_request_ms,
        rejoined_after_ms: millis(rejoined),
    })
}

async fn kill_leader(bench: &Bench, runs: usize) -> Outcome {
    let mut kills = Vec::new();
    for _ in 0..runs.max(1) {
        kills.push(kill_leader_once(bench).await?);
    }
    Ok(kill_leader_report(&kills))
}

/// The last run's figures, and over several runs min / median / max of the re-election time;
/// held when every new leader coloured ⌈n/3⌉ green (pure).
fn kill_leader_report(kills: &[LeaderKill]) -> (Map<String, Value>, bool) {
    let Some(last) = kills.last() else {
        return (Map::new(), false);
    };
    let mut report = figures(json!({
        "old_leader": last.old_leader,
        "new_leader": last.new_leader,
        "nodes_after": last.nodes_after,
        "greens_after": last.greens_after,
        "reelected_after_ms": last.reelected_after_ms,
        "observed_after_ms": last.observed_after_ms,
        "kill_request_ms": last.kill_request_ms,
        "rejoined_after_ms": last.rejoined_after_ms,
    }));
    if kills.len() > 1 {
        let mut times: Vec<u64> = kills.iter().map(|k| k.reelected_after_ms).collect();
        let all = times.clone();
        times.sort_unstable();
        report.insert("runs".into(), kills.len().into());
        report.insert(
            "reelected_after_ms".into(),
            json!({
                "min": times[0],
                "median": times[times.len() / 2],
                "max": times[times.len() - 1],
                "all": all,
            }),
        );
    }
    let held = kills
        .iter()
        .all(|k| k.greens_after == k.nodes_after.div_ceil(3));
    (report, held)
}

async fn kill_follower(bench: &Bench) -> Outcome {
    let ((before, nodes), _) = valid(bench, "a valid colouring", SETTLE, |_, _| true).await?;
    let n = nodes.len();
    let (addr, follower) = followers(&nodes)
        .next()
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let victim = container_at(bench, addr.ip()).await?;
    tracing::info!(follower = follower.id, container = %victim.name, "killing a follower");
    kill(bench, addr.ip(), &victim).await?;
    let ((after, left), recoloured) = valid(
        bench,
        "the colouring without it",
        Duration::from_secs(30),
        |_, all| all.len() == n - 1,
    )
    .await?;
    bench.lab.start(&victim.id).await?;
    let (_, rejoined) = valid(bench, "every node coloured again", SETTLE, |_, all| {
        all.len() == n
    })
    .await?;
    let report = figures(json!({
        "leader": before.leader,
        "follower": follower.id,
        "nodes_after": left.len(),
        "greens_after": after.green,
        "recoloured_after_ms": millis(recoloured),
        "rejoined_after_ms": millis(rejoined),
    }));
    Ok((report, after.green == left.len().div_ceil(3)))
}

async fn add_node(bench: &Bench) -> Outcome {
    let ((_, nodes), _) = valid(bench, "a valid colouring", SETTLE, |_, _| true).await?;
    let n = nodes.len();
    let containers = bench.lab.containers(ELECTION_SERVICE).await?;
    let number = containers
        .iter()
        .filter_map(|(_, name)| name.rsplit_once('_')?.1.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    tracing::info!(number, "adding a node");
    let began = Instant::now();
    let (id, name) = bench
        .lab
        .add_like(&containers[0].0, number, &bench.run.lan, ELECTION_SERVICE)
        .await?;
    let joined = valid(bench, "the newcomer coloured", SETTLE, |_, all| {
        all.len() == n + 1
    })
    .await
    .map(|(state, _)| (state, began.elapsed()));
    tracing::info!(container = %name, "removing the newcomer");
    bench.lab.remove(&id).await?;
    let ((after, _), joined_after) = joined?;
    valid(
        bench,
        "the nodes of before coloured again",
        SETTLE,
        |_, all| all.len() == n,
    )
    .await?;
    let report = figures(json!({
        "leader": after.leader,
        "nodes": n + 1,
        "greens": after.green,
        "joined_after_ms": millis(joined_after),
    }));
    Ok((report, after.green == (n + 1).div_ceil(3)))
}

async fn partition_leader(bench: &Bench) -> Outcome {
    let ((before, nodes), _) = valid(bench, "a valid colouring", SETTLE, |_, _| true).await?;
    let n = nodes.len();
    let (addr, _) = status_of(&nodes, before.leader)?;
    let victim = container_at(bench, addr.ip()).await?;
    let networks = bench.networks();
    tracing::info!(leader = before.leader, container = %victim.name, "cutting the leader off");
    let cut_ms = wall_ms();
    let undo = bench
        .lab
        .inject(
            &single(FaultKind::CutOff, System::Election),
            &victim,
            &networks,
            None,
        )
        .await?;
    let majority = valid(
        bench,
        "a leader on the majority side",
        Duration::from_secs(30),
        |settled, _| settled.leader != before.leader,
    )
    .await;
    tracing::info!("reconnecting it");
    bench.lab.heal(&victim, undo).await?;
    let ((after, majority), reelected) = majority?;
    let (_, new_status) = status_of(&majority, after.leader)?;
    let began = lease_start_after(new_status, cut_ms);
    let ((last, all), healed) = valid(bench, "one leader after healing", SETTLE, |_, all| {
        all.len() == n
    })
    .await?;
    // Out of reach while cut off: its own record, read once it is back, says when it stopped.
    let (_, old_status) = status_of(&all, before.leader)?;
    let report = figures(json!({
        "old_leader": before.leader,
        "new_leader": after.leader,
        "final_leader": last.leader,
        "old_leader_stepped_down_after_ms": stepped_down_after(old_status, cut_ms),
        "reelected_after_ms": millis(reelected),
        "reelected_after_cut_ms": began.map(|began| began.saturating_sub(cut_ms)),
        "healed_after_ms": millis(healed),
    }));
    Ok((report, true))
}

async fn restart_followers(bench: &Bench) -> Outcome {
    let ((before, nodes), _) = valid(bench, "a valid colouring", SETTLE, |_, _| true).await?;
    let n = nodes.len();
    let (_, leader) = status_of(&nodes, before.leader)?;
    let mut membership = leader.membership.clone();
    membership.sort_unstable();
    let mut victims = Vec::new();
    for (addr, status) in followers(&nodes).take(2) {
        victims.push((status.id, addr.ip(), container_at(bench, addr.ip()).await?));
    }
    let ids: Vec<NodeId> = victims.iter().map(|(id, _, _)| *id).collect();
    tracing::info!(
        ?ids,
        "killing two followers at once, then starting them again"
    );
    for (_, ip, node) in &victims {
        kill(bench, *ip, node).await?;
    }
    for (_, _, node) in &victims {
        bench.lab.start(&node.id).await?;
    }
    let back = |_: &Settled, all: &Nodes| {
        all.len() == n
            && ids.iter().all(|id| {
                all.iter().any(|(_, s)| {
                    let mut theirs = s.membership.clone();
                    theirs.sort_unstable();
                    s.id == *id && theirs == membership
                })
            })
    };
    let ((after, all), rejoined) =
        valid(bench, "both back in the same membership", SETTLE, back).await?;
    let terms: BTreeSet<u64> = all.iter().map(|(_, s)| s.term).collect();
    let report = figures(json!({
        "leader": before.leader,
        "final_leader": after.leader,
        "restarted": ids,
        "term_before": before.term,
        "terms_after": terms,
        "rejoined_after_ms": millis(rejoined),
        "members": membership.len(),
    }));
    Ok((
        report,
        after.leader == before.leader && after.term == before.term,
    ))
}

async fn one_way_partition(bench: &Bench, deaf_for: Duration) -> Outcome {
    let ((before, nodes), _) = valid(bench, "a valid colouring", SETTLE, |_, _| true).await?;
    let n = nodes.len();
    let terms_before: BTreeMap<NodeId, u64> = nodes.iter().map(|(_, s)| (s.id, s.term)).collect();
    let (leader_addr, _) = status_of(&nodes, before.leader)?;
    let leader = container_at(bench, leader_addr.ip()).await?;
    let (addr, follower) = followers(&nodes)
        .next()
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let deaf = container_at(bench, addr.ip()).await?;
    let networks = bench.networks();
    tracing::info!(
        follower = follower.id,
        leader = before.leader,
        ?deaf_for,
        "the follower stops hearing the leader"
    );
    let undo = bench
        .lab
        .inject(
            &single(FaultKind::Deafen, System::Election),
            &deaf,
            &networks,
            Some(&leader),
        )
        .await?;
    let mut while_deaf = Vec::new();
    let until = Instant::now() + deaf_for;
    while Instant::now() < until {
        let sweep = election::sweep(&bench.run.election, &bench.codec).await;
        while_deaf.extend(sweep.into_iter().filter_map(|(_, answer)| answer));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!("healing");
    bench.lab.heal(&deaf, undo).await?;
    let ((after, all), healed) = valid(bench, "one leader after healing", SETTLE, |_, all| {
        all.len() == n
    })
    .await?;
    while_deaf.extend(all.into_iter().map(|(_, status)| status));
    let deafness = Deafness::of(&while_deaf, follower.id, &terms_before);
    let report = figures(json!({
        "leader": before.leader,
        "deaf_follower": follower.id,
        "duration_s": deaf_for.as_secs(),
        "follower_states_while_deaf": deafness.follower_states,
        "leaders_seen": deafness.leaders_seen,
        "terms_moved": deafness.terms_moved,
        "healed_after_ms": millis(healed),
    }));
    let held = deafness.leaders_seen == BTreeSet::from([before.leader])
        && after.leader == before.leader
        && deafness.terms_moved.is_empty();
    Ok((report, held))
}

/// What the nodes said while one follower was deaf to the leader.
#[derive(Debug, Default, PartialEq)]
struct Deafness {
    follower_states: BTreeSet<String>,
    leaders_seen: BTreeSet<NodeId>,
    /// Nodes whose term is no longer the one they had before: (node → term).
    terms_moved: BTreeMap<NodeId, u64>,
}

impl Deafness {
    /// Pure: from every status read, in order.
    fn of(read: &[ElectionNodeStatus], deaf: NodeId, terms_before: &BTreeMap<NodeId, u64>) -> Self {
        let mut seen = Deafness::default();
        for status in read {
            if status.state == "leader" {
                seen.leaders_seen.insert(status.id);
            }
            if status.id == deaf {
                seen.follower_states.insert(status.state.clone());
            }
            if terms_before.get(&status.id) != Some(&status.term) {
                seen.terms_moved.insert(status.id, status.term);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use proto::Leadership;

    use super::*;

    fn status(
        id: NodeId,
        state: &str,
        term: u64,
        leaderships: &[(u64, Option<u64>)],
    ) -> ElectionNodeStatus {
        ElectionNodeStatus {
            id,
            state: state.into(),
            leader: None,
            term,
            colour: None,
            members: vec![],
            membership: vec![],
            quorum: 3,
            leaderships: leaderships
                .iter()
                .map(|&(from_ms, until_ms)| Leadership {
                    term,
                    from_ms,
                    until_ms,
                })
                .collect(),
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }
    }

    #[test]
    fn a_leadership_is_dated_from_the_nodes_own_record() {
        let leader = status(5, "leader", 4, &[(100, Some(900)), (1_500, None)]);
        assert_eq!(lease_start_after(&leader, 1_000), Some(1_500));
        assert_eq!(lease_start_after(&leader, 2_000), None);
        // Cut off at 400 while leading since 100: it stepped down at 900.
        assert_eq!(stepped_down_after(&leader, 400), Some(500));
        let still = status(5, "leader", 4, &[(100, None)]);
        assert_eq!(stepped_down_after(&still, 400), None);
    }

    fn leader_kill(reelected_after_ms: u64, greens_after: usize) -> LeaderKill {
        LeaderKill {
            old_leader: 5,
            new_leader: 4,
            nodes_after: 4,
            greens_after,
            reelected_after_ms,
            observed_after_ms: reelected_after_ms + 20,
            kill_request_ms: 10,
            rejoined_after_ms: 700,
        }
    }

    #[test]
    fn kill_leader_reports_the_spread_and_needs_a_third_green_every_time() {
        let kills = [leader_kill(90, 2), leader_kill(30, 2), leader_kill(60, 2)];
        let (report, held) = kill_leader_report(&kills);
        assert!(held);
        assert_eq!(report["runs"], 3);
        assert_eq!(
            report["reelected_after_ms"],
            json!({"min": 30, "median": 60, "max": 90, "all": [90, 30, 60]})
        );
        let (single, _) = kill_leader_report(&kills[..1]);
        assert_eq!(single["reelected_after_ms"], 90);
        let (_, held) = kill_leader_report(&[leader_kill(90, 2), leader_kill(40, 1)]);
        assert!(!held, "one run left a single green of four");
        assert!(!kill_leader_report(&[]).1);
    }

    #[test]
    fn a_deaf_follower_must_move_no_term_and_see_no_other_leader() {
        let before = BTreeMap::from([(5, 3), (2, 3)]);
        let calm = [
            status(5, "leader", 3, &[]),
            status(2, "candidate", 3, &[]),
            status(2, "follower", 3, &[]),
        ];
        let seen = Deafness::of(&calm, 2, &before);
        assert_eq!(seen.leaders_seen, BTreeSet::from([5]));
        assert_eq!(
            seen.follower_states,
            BTreeSet::from(["candidate".to_string(), "follower".to_string()])
        );
        assert!(seen.terms_moved.is_empty());
        let moved = [status(5, "leader", 3, &[]), status(2, "leader", 4, &[])];
        let seen = Deafness::of(&moved, 2, &before);
        assert_eq!(seen.leaders_seen, BTreeSet::from([2, 5]));
        assert_eq!(seen.terms_moved, BTreeMap::from([(2, 4)]));
    }
}
