use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// The dispatcher's settings; defaults are seed 000's numbers.
#[derive(Debug, Clone, Args)]
pub struct DispatcherConfig {
    /// TCP address where workers register and `status` requests are answered.
    #[arg(long, env = "HALAB_LISTEN", default_value = "0.0.0.0:7101")]
    pub listen: SocketAddr,

    /// UDP address where workers' "is someone there" broadcasts are answered.
    #[arg(long, env = "HALAB_DISCOVERY_LISTEN", default_value = "0.0.0.0:7100")]
    pub discovery_listen: SocketAddr,

    /// Address told to workers in discovery answers. Default: the local address the worker's
    /// datagram was routed to, with the --listen port.
    #[arg(long, env = "HALAB_ADVERTISE")]
    pub advertise: Option<SocketAddr>,

    /// How often to activate a worker while fewer than --max-active are active.
    #[arg(long, env = "HALAB_ACTIVATION_INTERVAL_MS", default_value_t = 2000)]
    pub activation_interval_ms: u64,

    /// How many workers may be active at once.
    #[arg(long, env = "HALAB_MAX_ACTIVE", default_value_t = 5)]
    pub max_active: u32,

    /// A worker that sends nothing (heartbeats included) for this long after its next frame was
    /// due is considered terminated and removed: with 1 s heartbeats, 5–6 s after it last spoke.
    /// A closed connection removes it at once.
    #[arg(long, env = "HALAB_SILENCE_TIMEOUT_MS", default_value_t = 5000)]
    pub silence_timeout_ms: u64,

    /// Most TCP connections served at once (workers and status requests); past it, new ones are
    /// closed at once. Each worker holds one, as does each open descriptor of this process.
    #[arg(long, env = "HALAB_MAX_CONNECTIONS", default_value_t = 16384)]
    pub max_connections: usize,

    /// How long to wait for a worker's answer to "status check" or "activate" before trying
    /// the next candidate.
    #[arg(long, env = "HALAB_REPLY_TIMEOUT_MS", default_value_t = 1000)]
    pub reply_timeout_ms: u64,

    /// The longest a worker is expected to stay active (seed: 5 reports under 5 s each), used
    /// for the fairness bound until a longer activation is seen.
    #[arg(long, env = "HALAB_EXPECTED_ACTIVATION_MS", default_value_t = 25_000)]
    pub expected_activation_ms: u64,
}

impl DispatcherConfig {
    pub fn activation_interval(&self) -> Duration {
        Duration::from_millis(self.activation_interval_ms)
    }

    pub fn silence_timeout(&self) -> Duration {
        Duration::from_millis(self.silence_timeout_ms)
    }

    pub fn reply_timeout(&self) -> Duration {
        Duration::from_millis(self.reply_timeout_ms)
    }

    pub fn expected_activation(&self) -> Duration {
        Duration::from_millis(self.expected_activation_ms)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.activation_interval_ms > 0,
            "--activation-interval-ms must be above 0"
        );
        anyhow::ensure!(
            self.silence_timeout_ms > 0,
            "--silence-timeout-ms must be above 0"
        );
        anyhow::ensure!(
            self.reply_timeout_ms > 0,
            "--reply-timeout-ms must be above 0"
        );
        Ok(())
    }
}
