use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use proto::StoreNodeId;

use crate::limits::Limits;
use crate::node::{NodeConfig, Timing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// fsync before a write counts as durable (grouped: one fsync covers every write waiting).
    Always,
    /// Leave it to the OS: a process crash loses nothing, a machine crash may.
    Never,
}

/// A store node's settings. The timers' defaults give failover well under 300 ms; see
/// `--lease-ms` for the rule that keeps two primaries from ever serving at once.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// This node's id (1 or more): names it in the witness, the same on every restart
    /// (required).
    #[arg(long, env = "HALAB_ID")]
    pub id: Option<StoreNodeId>,

    /// The node's own data dir: its log and snapshot. Never shared between nodes.
    #[arg(long, env = "HALAB_DATA_DIR", default_value = "/var/lib/halab/store")]
    pub data_dir: PathBuf,

    /// The witness directory, on a volume every node of the store mounts (seed 003's
    /// communications folder).
    #[arg(long, env = "HALAB_WITNESS_DIR", default_value = "/witness")]
    pub witness_dir: PathBuf,

    /// Where clients (and `status`) reach this node.
    #[arg(long, env = "HALAB_LISTEN", default_value = "0.0.0.0:7300")]
    pub listen: SocketAddr,

    /// Where standbys replicate from this node when it is primary.
    #[arg(long, env = "HALAB_LINK_LISTEN", default_value = "0.0.0.0:7301")]
    pub link_listen: SocketAddr,

    /// The address clients are redirected to when this node is primary (host:port). Default:
    /// this host's name and the --listen port.
    #[arg(long, env = "HALAB_ADVERTISE")]
    pub advertise: Option<String>,

    /// The address standbys replicate from when this node is primary (host:port), on the
    /// replication network. Default: this host's name and the --link-listen port.
    #[arg(long, env = "HALAB_ADVERTISE_LINK")]
    pub advertise_link: Option<String>,

    /// The other nodes' client addresses (host:port, comma-separated; this node's own is
    /// skipped). Probed over the client network, so that a primary cut off from every network
    /// can tell that apart from dead standbys: it then keeps them in sync and lets its lease
    /// lapse, and one of them takes over. Without it a primary drops silent standbys.
    #[arg(long, env = "HALAB_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// When a log write counts as durable.
    #[arg(long, env = "HALAB_FSYNC", value_enum, default_value_t = Fsync::Always)]
    pub fsync: Fsync,

    /// Every this many entries the node writes its state as a snapshot and cuts the log
    /// before it, so the log and a restart's replay stay short. 0: never.
    #[arg(long, env = "HALAB_SNAPSHOT_EVERY", default_value_t = 100_000)]
    pub snapshot_every: u64,

    /// The primary sends a keep-alive to each standby after this long without a frame.
    #[arg(long, env = "HALAB_KEEPALIVE_MS", default_value_t = Timing::default().keepalive_ms)]
    pub keepalive_ms: u64,

    /// A peer silent this long is lost: a standby checks the witness, a primary drops the
    /// standby from the in-sync set (recorded in the witness first).
    #[arg(long, env = "HALAB_PEER_TIMEOUT_MS", default_value_t = Timing::default().peer_timeout_ms)]
    pub peer_timeout_ms: u64,

    /// The primary acknowledges writes and serves reads only until this long after its last
    /// visit to the witness began. A standby promotes only once the primary's slot is older
    /// than --lease-ms + --lease-margin-ms, so the old lease is over before the new primary
    /// serves.
    #[arg(long, env = "HALAB_LEASE_MS", default_value_t = Timing::default().lease_ms)]
    pub lease_ms: u64,

    /// Added to the lease before a standby counts the primary dead (clock-rate differences,
    /// the time a slot takes to reach the disk).
    #[arg(long, env = "HALAB_LEASE_MARGIN_MS", default_value_t = Timing::default().lease_margin_ms)]
    pub lease_margin_ms: u64,

    /// How often every node visits the witness (the primary renews its lease by it); must be
    /// well below --lease-ms.
    #[arg(long, env = "HALAB_VISIT_MS", default_value_t = Timing::default().visit_ms)]
    pub visit_ms: u64,

    /// Largest key, in bytes.
    #[arg(long, env = "HALAB_MAX_KEY_BYTES", default_value_t = Limits::default().max_key_bytes)]
    pub max_key_bytes: usize,

    /// Largest value, in bytes.
    #[arg(long, env = "HALAB_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes)]
    pub max_value_bytes: usize,

    /// Most key=value pairs in one update.
    #[arg(long, env = "HALAB_MAX_UPDATE_PAIRS", default_value_t = Limits::default().max_update_pairs)]
    pub max_update_pairs: usize,

    /// The token `kill` must carry. Without one, this node refuses every kill.
    #[arg(long, env = "HALAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Most client and replication connections served at once; past it, new ones are closed.
    #[arg(long, env = "HALAB_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

impl StoreConfig {
    pub fn timing(&self) -> Timing {
        Timing {
            keepalive_ms: self.keepalive_ms,
            peer_timeout_ms: self.peer_timeout_ms,
            lease_ms: self.lease_ms,
            lease_margin_ms: self.lease_margin_ms,
            visit_ms: self.visit_ms,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_update_pairs: self.max_update_pairs,
        }
    }

    pub fn node_id(&self) -> anyhow::Result<StoreNodeId> {
        match self.id {
            None => anyhow::bail!(
                "set --id (HALAB_ID): each store node needs an id of its own that stays the \
                 same across restarts; the witness names nodes by it"
            ),
            Some(crate::witness::NOBODY) => {
                anyhow::bail!(
                    "--id 0 is reserved (a witness record that names nobody): use 1 or more"
                )
            }
            Some(id) => Ok(id),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.node_id()?;
        anyhow::ensure!(
            self.visit_ms > 0 && self.visit_ms * 2 <= self.lease_ms,
            "--visit-ms ({}) must be above 0 and at most half of --lease-ms ({}): the primary \
             renews its lease on every visit and must not lose it between two",
            self.visit_ms,
            self.lease_ms
        );
        anyhow::ensure!(
            self.keepalive_ms > 0 && self.keepalive_ms < self.peer_timeout_ms,
            "--keepalive-ms ({}) must be above 0 and below --peer-timeout-ms ({})",
            self.keepalive_ms,
            self.peer_timeout_ms
        );
        Ok(())
    }

    /// The node's settings for the sans-IO core.
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let host = hostname();
        Ok(NodeConfig {
            id: self.node_id()?,
            client_addr: self
                .advertise
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", self.listen.port())),
            link_addr: self
                .advertise_link
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", self.link_listen.port())),
            timing: self.timing(),
            limits: self.limits(),
            snapshot_every: self.snapshot_every,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
