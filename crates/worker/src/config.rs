use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use proto::discovery::{Backoff, Targets};

/// The worker's settings; defaults are seed 000's numbers.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// How many workers this process runs, each with its own id and connection (the seed's
    /// "threads").
    #[arg(long, env = "HALAB_COUNT", default_value_t = 1)]
    pub count: u32,

    /// The weight each worker registers with (its activation priority). Default: random 1..=10
    /// per worker.
    #[arg(long, env = "HALAB_WEIGHT", value_parser = clap::value_parser!(u32).range(1..))]
    pub weight: Option<u32>,

    /// UDP port the dispatcher answers discovery broadcasts on.
    #[arg(long, env = "HALAB_DISCOVERY_PORT", default_value_t = 7100)]
    pub discovery_port: u16,

    /// Send discovery datagrams to these addresses instead of every interface's broadcast
    /// address (comma-separated; for networks without broadcast, and tests).
    #[arg(long, env = "HALAB_DISCOVERY_TARGET", value_delimiter = ',')]
    pub discovery_target: Vec<SocketAddr>,

    /// First wait for a discovery answer before broadcasting again; doubles each time.
    #[arg(long, env = "HALAB_DISCOVERY_BACKOFF_MS", default_value_t = 200)]
    pub discovery_backoff_ms: u64,

    /// Longest wait between discovery broadcasts.
    #[arg(long, env = "HALAB_DISCOVERY_BACKOFF_MAX_MS", default_value_t = 2000)]
    pub discovery_backoff_max_ms: u64,

    /// Reports an activated worker sends before it deactivates (the last says "not activated").
    #[arg(long, env = "HALAB_REPORTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub reports: u32,

    /// Reports come at random intervals below this many milliseconds.
    #[arg(long, env = "HALAB_REPORT_MAX_INTERVAL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(2..))]
    pub report_max_interval_ms: u64,

    /// Probability that a worker terminates after it deactivates (0 never, 1 always).
    #[arg(long, env = "HALAB_TERMINATE_PROBABILITY", default_value_t = 0.8)]
    pub terminate_probability: f64,

    /// Heartbeat interval, so the dispatcher does not take a quiet worker for a dead one.
    #[arg(long, env = "HALAB_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,

    /// A dispatcher silent this long (it heartbeats every second) is taken for dead, paused or
    /// cut off: the worker discovers a dispatcher again. Longer than a pause the dispatcher
    /// rides out itself (the lab pauses it 7 s), shorter than TCP's own give-up (minutes).
    #[arg(long, env = "HALAB_DISPATCHER_TIMEOUT_MS", default_value_t = 10_000)]
    pub dispatcher_timeout_ms: u64,

    /// Where this process answers `worker status` (and Docker's healthcheck).
    #[arg(long, env = "HALAB_STATUS_ADDR", default_value = "127.0.0.1:7102")]
    pub status_addr: SocketAddr,
}

impl WorkerConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.count >= 1, "--count must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.terminate_probability),
            "--terminate-probability must be between 0 and 1, got {}",
            self.terminate_probability
        );
        anyhow::ensure!(
            self.heartbeat_interval_ms > 0,
            "--heartbeat-interval-ms must be above 0"
        );
        anyhow::ensure!(
            self.dispatcher_timeout_ms > 1000,
            "--dispatcher-timeout-ms must be above the dispatcher's 1 s heartbeat"
        );
        anyhow::ensure!(
            self.discovery_backoff_ms > 0
                && self.discovery_backoff_max_ms >= self.discovery_backoff_ms,
            "--discovery-backoff-ms must be above 0 and at most --discovery-backoff-max-ms"
        );
        Ok(())
    }

    pub fn targets(&self) -> Targets {
        if self.discovery_target.is_empty() {
            Targets::Broadcast {
                port: self.discovery_port,
            }
        } else {
            Targets::Fixed(self.discovery_target.clone())
        }
    }

    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.discovery_backoff_ms),
            max: Duration::from_millis(self.discovery_backoff_max_ms),
        }
    }

    pub fn dispatcher_timeout(&self) -> Duration {
        Duration::from_millis(self.dispatcher_timeout_ms)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// A random report interval in [1 ms, max): "random intervals (less than 5 seconds)".
    pub fn random_report_interval(&self) -> Duration {
        Duration::from_millis(rand::random_range(1..self.report_max_interval_ms))
    }
}
