//! The etcd anchor: three members of Debian's `etcd` on loopback, with its default timers
//! (heartbeat 100 ms, election 1 000 ms) or tuned ones (50 / 250 ms).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::etcd::{EtcdConnection, member_status};
use super::measure::{System, Writer};
use super::process::{Daemon, await_ready};

const MEMBERS: usize = 3;
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// etcd's two timers, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub heartbeat: u64,
    pub election: u64,
}

pub const DEFAULT_TIMERS: Timers = Timers {
    heartbeat: 100,
    election: 1000,
};
pub const TUNED_TIMERS: Timers = Timers {
    heartbeat: 50,
    election: 250,
};

pub struct EtcdCluster {
    daemons: Vec<Daemon>,
    clients: Vec<SocketAddr>,
    timers: Timers,
}

impl EtcdCluster {
    /// `base` sets the ports: member i (1-based) serves clients on base + 10 i, peers one above.
    pub fn start(
        program: &Path,
        work: &Path,
        timers: Timers,
        base: u16,
    ) -> anyhow::Result<EtcdCluster> {
        let name = format!("etcd-{}-{}", timers.heartbeat, timers.election);
        let dir = work.join(&name);
        std::fs::create_dir_all(&dir)?;
        let port = |i: usize| base + 10 * i as u16;
        let peers: Vec<String> = (1..=MEMBERS)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", port(i) + 1))
            .collect();
        let mut daemons = Vec::new();
        for i in 1..=MEMBERS {
            let client = format!("http://127.0.0.1:{}", port(i));
            let peer = format!("http://127.0.0.1:{}", port(i) + 1);
            let args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", dir.join(format!("m{i}")).display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={}", peers.join(",")),
                "--initial-cluster-state=new".to_string(),
                format!("--initial-cluster-token={name}"),
                format!("--heartbeat-interval={}", timers.heartbeat),
                format!("--election-timeout={}", timers.election),
                "--logger=zap".to_string(),
                "--log-level=warn".to_string(),
            ];
            daemons.push(Daemon::start(&format!("{name}-m{i}"), program, args, work)?);
        }
        let clients = (1..=MEMBERS)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], port(i))))
            .collect();
        Ok(EtcdCluster {
            daemons,
            clients,
            timers,
        })
    }

    /// Each live member's status, in member order (`None`: no answer).
    async fn statuses(&self) -> Vec<Option<super::etcd::MemberStatus>> {
        let mut out = Vec::new();
        for (addr, daemon) in self.clients.iter().zip(&self.daemons) {
            out.push(match daemon.is_running() {
                true => member_status(*addr, STATUS_TIMEOUT).await.ok(),
                false => None,
            });
        }
        out
    }
}

pub struct EtcdWriter(EtcdConnection);

impl Writer for EtcdWriter {
    async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.0.put(key, value).await
    }
}

impl System for EtcdCluster {
    type Writer = EtcdWriter;

    fn name(&self) -> String {
        format!(
            "etcd ({}/{} ms)",
            self.timers.heartbeat, self.timers.election
        )
    }

    /// Connected to the leader: no forwarding hop, etcd at its best.
    async fn writer(&self) -> anyhow::Result<EtcdWriter> {
        let statuses = self.statuses().await;
        let leader = statuses
            .iter()
            .flatten()
            .find(|s| s.member == s.leader)
            .ok_or_else(|| anyhow::anyhow!("etcd has no leader"))?;
        let at = statuses
            .iter()
            .position(|s| s.as_ref() == Some(leader))
            .expect("found above");
        Ok(EtcdWriter(EtcdConnection::connect(self.clients[at]).await?))
    }

    fn probe(&self, attempt: u64) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        // Any member takes a write (a follower forwards it to the leader): rotate over them.
        let addr = self.clients[attempt as usize % self.clients.len()];
        async move { EtcdConnection::connect(addr).await?.put("probe", "p").await }
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        let what = format!("{}: every member following one leader", self.name());
        await_ready(&what, Duration::from_secs(30), &self.daemons, || async {
            let statuses = self.statuses().await;
            let leaders: Vec<u64> = statuses.iter().flatten().map(|s| s.leader).collect();
            Ok(leaders.len() == MEMBERS
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0]))
        })
        .await
    }

    async fn leader(&mut self) -> anyhow::Result<usize> {
        self.statuses()
            .await
            .iter()
            .position(|s| s.is_some_and(|s| s.member == s.leader))
            .ok_or_else(|| anyhow::anyhow!("etcd has no leader"))
    }

    fn daemon(&mut self, member: usize) -> &mut Daemon {
        &mut self.daemons[member]
    }
}
