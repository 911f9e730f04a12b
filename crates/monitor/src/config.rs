use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::balancer::Balance;
use crate::health::Thresholds;
use crate::poller::{Settings, System, Target};

/// The monitor's settings: what to watch and how often.
#[derive(Debug, Clone, Args)]
pub struct MonitorConfig {
    /// The store's nodes (host:port of their client ports, comma-separated).
    #[arg(long, env = "HALAB_STORE_NODES", value_delimiter = ',')]
    pub store_nodes: Vec<String>,

    /// The election's nodes (host:port of their TCP ports, comma-separated). A name that
    /// resolves to several addresses stands for each of them (the lab's replicas share one
    /// service name): nodes that appear under it are watched, and one gone from it for 30 s
    /// is dropped.
    #[arg(long, env = "HALAB_ELECTION_NODES", value_delimiter = ',')]
    pub election_nodes: Vec<String>,

    /// The dispatcher (host:port of its TCP port).
    #[arg(long, env = "HALAB_DISPATCHER")]
    pub dispatcher: Option<String>,

    /// How often every node is checked.
    #[arg(long, env = "HALAB_POLL_MS", default_value_t = 500)]
    pub poll_ms: u64,

    /// How soon a node is checked again after a result that disagrees with its state, to
    /// confirm a change without waiting a whole poll.
    #[arg(long, env = "HALAB_RETRY_MS", default_value_t = 100)]
    pub retry_ms: u64,

    /// How long an ICMP echo may take.
    #[arg(long, env = "HALAB_ICMP_TIMEOUT_MS", default_value_t = 200)]
    pub icmp_timeout_ms: u64,

    /// How long the service's ping (its status request) may take. A paused service is then
    /// called down within poll + 2 × this + retry (two silent pings in a row): with the
    /// defaults 1 s, two poll intervals.
    #[arg(long, env = "HALAB_SERVICE_TIMEOUT_MS", default_value_t = 200)]
    pub service_timeout_ms: u64,

    /// Results in a row before a node is up again.
    #[arg(long, env = "HALAB_RISE", default_value_t = Thresholds::default().rise)]
    pub rise: u32,

    /// Results in a row before a node is down (one lost ping never is).
    #[arg(long, env = "HALAB_FALL", default_value_t = Thresholds::default().fall)]
    pub fall: u32,

    /// Where the HTTP front door listens (the lab publishes it on the host's 127.0.0.1 only).
    #[arg(long, env = "HALAB_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// The token `POST /admin/kill` must carry as `Authorization: Bearer ...` (the store's
    /// admin token: it is passed on). Without one, kill is refused.
    #[arg(long, env = "HALAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "HALAB_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// How requests any healthy store node can serve (seed 004's sum, stale reads) are spread:
    /// p2c (power of two choices on outstanding requests), priority (seed 004's "S1, else
    /// S2", in --store-nodes order) or round-robin.
    #[arg(long, env = "HALAB_BALANCE", value_enum, default_value_t = Balance::P2c)]
    pub balance: Balance,

    /// How long a request to the store keeps trying (through a failover) before the client
    /// gets 503.
    #[arg(long, env = "HALAB_DEADLINE_MS", default_value_t = 5000)]
    pub deadline_ms: u64,
}

impl MonitorConfig {
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let of = |system, addrs: &[String]| {
            addrs
                .iter()
                .filter(|a| !a.is_empty())
                .map(move |addr| Target {
                    system,
                    addr: addr.clone(),
                })
                .collect::<Vec<_>>()
        };
        let mut targets = of(System::Store, &self.store_nodes);
        targets.extend(of(System::Election, &self.election_nodes));
        targets.extend(of(System::Dispatcher, self.dispatcher.as_slice()));
        anyhow::ensure!(
            !targets.is_empty(),
            "nothing to watch: give --store-nodes, --election-nodes or --dispatcher"
        );
        Ok(targets)
    }

    pub fn settings(&self) -> anyhow::Result<Settings> {
        anyhow::ensure!(
            self.rise >= 1 && self.fall >= 1,
            "--rise and --fall must be at least 1"
        );
        anyhow::ensure!(self.poll_ms > 0, "--poll-ms must be above 0");
        Ok(Settings {
            poll: Duration::from_millis(self.poll_ms),
            retry: Duration::from_millis(self.retry_ms),
            icmp_timeout: Duration::from_millis(self.icmp_timeout_ms),
            service_timeout: Duration::from_millis(self.service_timeout_ms),
            thresholds: Thresholds {
                rise: self.rise,
                fall: self.fall,
            },
        })
    }
}
