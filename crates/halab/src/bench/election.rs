//! halab's election in the benchmark: five `leader-election` processes on loopback with the
//! shipped timers; the leader is killed and the time until a successor leads is read from the
//! successor's own record of when its leadership began (a majority's acks: it leads).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use halab_runtime::control;
use primary_standby::witness::wall_ms;
use proto::{ElectionNodeStatus, FrameCodec, Message};

use super::measure::Fault;
use super::process::{Daemon, await_ready};

const NODES: usize = 5;
const STATUS_TIMEOUT: Duration = Duration::from_millis(300);

pub struct ElectionCluster {
    daemons: Vec<Daemon>,
    status: Vec<SocketAddr>,
    codec: FrameCodec,
}

impl ElectionCluster {
    pub fn start(bin_dir: &Path, work: &Path) -> anyhow::Result<ElectionCluster> {
        let program = bin_dir.join("leader-election");
        let dir = work.join("election");
        std::fs::create_dir_all(&dir)?;
        let udp = |i: usize| 17600 + i as u16;
        let tcp = |i: usize| 17610 + i as u16;
        let peers: Vec<String> = (1..=NODES)
            .map(|i| format!("127.0.0.1:{}", udp(i)))
            .collect();
        let mut daemons = Vec::new();
        for i in 1..=NODES {
            let args = vec![
                format!("--id={i}"),
                format!("--udp-listen=127.0.0.1:{}", udp(i)),
                format!("--listen=127.0.0.1:{}", tcp(i)),
                format!("--peers={}", peers.join(",")),
                format!(
                    "--state-file={}",
                    dir.join(format!("node{i}.state")).display()
                ),
                format!("--min-cluster-size={NODES}"),
            ];
            daemons.push(Daemon::start(
                &format!("election{i}"),
                &program,
                args,
                work,
            )?);
        }
        let status = (1..=NODES)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], tcp(i))))
            .collect();
        Ok(ElectionCluster {
            daemons,
            status,
            codec: FrameCodec::default(),
        })
    }

    async fn statuses(&self) -> Vec<Option<ElectionNodeStatus>> {
        self.statuses_but(usize::MAX).await
    }

    /// Every node's status but `skipped`'s (a paused process answers nothing, slowly).
    async fn statuses_but(&self, skipped: usize) -> Vec<Option<ElectionNodeStatus>> {
        let mut out = Vec::new();
        for (index, (addr, daemon)) in self.status.iter().zip(&self.daemons).enumerate() {
            let answer = match daemon.is_running() && index != skipped {
                true => control::query_status(*addr, self.codec.clone(), STATUS_TIMEOUT)
                    .await
                    .ok(),
                false => None,
            };
            out.push(match answer {
                Some(Message::ElectionStatus(status)) => Some(status),
                _ => None,
            });
        }
        out
    }

    /// Every node answers and follows one leader, which counts all of them as members.
    async fn ready(&self) -> anyhow::Result<()> {
        let what = "the election: one leader that every node follows";
        await_ready(what, Duration::from_secs(60), &self.daemons, || async {
            let statuses = self.statuses().await;
            let live: Vec<&ElectionNodeStatus> = statuses.iter().flatten().collect();
            let leaders: Vec<&&ElectionNodeStatus> =
                live.iter().filter(|s| s.state == "leader").collect();
            Ok(match leaders[..] {
                [leader] => {
                    live.len() == NODES
                        && leader.members.len() == NODES
                        && live.iter().all(|s| s.leader == Some(leader.id))
                }
                _ => false,
            })
        })
        .await
    }

    /// Kills (pauses) the leader of a ready cluster; returns how long after the fault its
    /// successor's leadership began, then heals the node.
    pub async fn reelection(&mut self, fault: Fault) -> anyhow::Result<Duration> {
        self.ready().await?;
        let statuses = self.statuses().await;
        let leader = statuses
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.state == "leader"))
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        let killed_at = wall_ms();
        fault.inject(&mut self.daemons[leader]).await?;
        let began = self.successor_since(killed_at, leader).await?;
        fault.heal(&mut self.daemons[leader]).await?;
        Ok(Duration::from_millis(began - killed_at))
    }

    /// When the leadership of whoever leads after `killed_at` began (polled every 5 ms; the
    /// old leader, paused, is not asked).
    async fn successor_since(&self, killed_at: u64, old: usize) -> anyhow::Result<u64> {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < give_up {
            let statuses = self.statuses_but(old).await;
            for status in statuses.into_iter().flatten() {
                let tenure = status.leaderships.last();
                if let (true, Some(tenure)) = (status.state == "leader", tenure) {
                    anyhow::ensure!(
                        tenure.from_ms >= killed_at,
                        "node {} leads since before its predecessor was killed",
                        status.id
                    );
                    return Ok(tenure.from_ms);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::bail!("no successor led within 30 s of the kill")
    }
}
