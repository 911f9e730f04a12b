use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use proto::NodeId;
use proto::discovery::Targets;

use crate::node::Timing;

/// The election node's settings; defaults follow seed 002 where it has numbers.
#[derive(Debug, Clone, Args)]
pub struct ElectionConfig {
    /// This node's id (highest wins). Default: the id in --state-file, else (first start) its
    /// IPv4 address as a number; saved, so it stays when the address changes.
    #[arg(long, env = "HALAB_ID")]
    pub id: Option<NodeId>,

    /// Where the node keeps its term, vote, agreed membership and id across restarts (written
    /// atomically on every change). Each node needs its own; delete it only together with
    /// removing the node from the membership (`remove-member`).
    #[arg(
        long,
        env = "HALAB_STATE_FILE",
        default_value = "/var/lib/halab/election.state"
    )]
    pub state_file: PathBuf,

    /// UDP address for discovery, election messages and heartbeats.
    #[arg(long, env = "HALAB_UDP_LISTEN", default_value = "0.0.0.0:7200")]
    pub udp_listen: SocketAddr,

    /// TCP address where the leader takes registrations and every node answers `status`.
    #[arg(long, env = "HALAB_LISTEN", default_value = "0.0.0.0:7201")]
    pub listen: SocketAddr,

    /// Send broadcasts to these addresses instead of every interface's broadcast address on the
    /// --udp-listen port (comma-separated; for loopback tests and networks without broadcast).
    #[arg(long, env = "HALAB_PEERS", value_delimiter = ',')]
    pub peers: Vec<SocketAddr>,

    /// Required: the number of nodes the cluster starts with (the seed's minimum is 3). Until a
    /// membership is agreed, majorities are counted over at least this many: a partition at
    /// first start cannot be told from a smaller cluster otherwise, so a smaller value lets two
    /// sides elect. The leader never removes silent members below it.
    #[arg(long, env = "HALAB_MIN_CLUSTER_SIZE")]
    pub min_cluster_size: Option<usize>,

    /// Leader heartbeat interval.
    #[arg(long, env = "HALAB_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,

    /// A leader leads only while a majority acked within this; must be below --leader-timeout-ms
    /// (the gap is the margin for clock-rate differences and scheduling delays).
    #[arg(long, env = "HALAB_LEASE_MS", default_value_t = 450)]
    pub lease_ms: u64,

    /// Followers start an election after this long without a heartbeat (a leader whose link
    /// closes is replaced without waiting for it).
    #[arg(long, env = "HALAB_LEADER_TIMEOUT_MS", default_value_t = 600)]
    pub leader_timeout_ms: u64,

    /// The leader removes (and stops colouring) members silent for this long.
    #[arg(long, env = "HALAB_MEMBER_TIMEOUT_MS", default_value_t = 1500)]
    pub member_timeout_ms: u64,

    /// Discovery ends when no new node appeared for this long (the seed's NEW_CLIENT_TIMEOUT).
    #[arg(long, env = "HALAB_SETTLE_MS", default_value_t = 2000)]
    pub settle_ms: u64,

    /// How long a candidate waits for votes before trying again.
    #[arg(long, env = "HALAB_ELECTION_TIMEOUT_MS", default_value_t = 500)]
    pub election_timeout_ms: u64,

    /// Most TCP connections served at once (followers' links, registrations, status requests);
    /// past it, new ones are closed at once.
    #[arg(long, env = "HALAB_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

impl ElectionConfig {
    pub fn timing(&self) -> Timing {
        let ms = Duration::from_millis;
        Timing {
            heartbeat: ms(self.heartbeat_ms),
            lease: ms(self.lease_ms),
            leader_timeout: ms(self.leader_timeout_ms),
            member_timeout: ms(self.member_timeout_ms),
            settle: ms(self.settle_ms),
            election: ms(self.election_timeout_ms),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.heartbeat_ms > 0, "--heartbeat-ms must be above 0");
        anyhow::ensure!(
            self.heartbeat_ms < self.lease_ms && self.lease_ms < self.leader_timeout_ms,
            "need --heartbeat-ms < --lease-ms < --leader-timeout-ms (got {} / {} / {}): an old leader must step down before followers elect a new one",
            self.heartbeat_ms,
            self.lease_ms,
            self.leader_timeout_ms
        );
        self.cluster_size()?;
        Ok(())
    }

    /// --min-cluster-size, which has no default: no number is safe for every cluster.
    pub fn cluster_size(&self) -> anyhow::Result<usize> {
        match self.min_cluster_size {
            None => anyhow::bail!(
                "set --min-cluster-size (HALAB_MIN_CLUSTER_SIZE) to the number of nodes the cluster \
                 starts with: until they agree on a membership, a node cannot tell a partition \
                 from a smaller cluster, and a smaller number lets two sides elect a leader each"
            ),
            Some(0) => anyhow::bail!("--min-cluster-size must be at least 1"),
            Some(size) => Ok(size),
        }
    }

    pub fn targets(&self) -> Targets {
        if self.peers.is_empty() {
            Targets::Broadcast {
                port: self.udp_listen.port(),
            }
        } else {
            Targets::Fixed(self.peers.clone())
        }
    }

    /// The node's id: `saved` (from the state file) unless --id says otherwise, which is an
    /// error: that file belongs to another node. On a first start, --id or this host's IPv4
    /// address as a number (the lowest, if it has several).
    pub fn node_id(&self, saved: Option<NodeId>) -> anyhow::Result<NodeId> {
        match (self.id, saved) {
            (Some(id), Some(saved)) if id != saved => anyhow::bail!(
                "--id is {id} but {} belongs to node {saved}: give each node its own \
                 --state-file (or delete this one after `remove-member {saved}`)",
                self.state_file.display()
            ),
            (_, Some(saved)) => return Ok(saved),
            (Some(id), None) => return Ok(id),
            (None, None) => {}
        }
        let interfaces = if_addrs::get_if_addrs()?;
        interfaces
            .iter()
            .filter_map(|iface| match iface.ip() {
                IpAddr::V4(v4) if !v4.is_loopback() => Some(u64::from(u32::from(v4))),
                _ => None,
            })
            .min()
            .ok_or_else(|| anyhow::anyhow!("no IPv4 address to derive the node id from; pass --id"))
    }
}
