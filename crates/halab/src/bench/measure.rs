//! The two measurements, the same for every system: closed-loop write throughput, and how long
//! after its leader (primary) is killed writes are accepted again.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::process::Daemon;

/// A client connected the way a steady application's is.
pub trait Writer: Send + 'static {
    /// Ok once the system acknowledged the write as durable by its own rules.
    fn put(&mut self, key: &str, value: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A replicated system the benchmark starts, writes to and breaks.
pub trait System {
    type Writer: Writer;
    fn name(&self) -> String;
    /// A writer for the throughput runs.
    fn writer(&self) -> impl Future<Output = anyhow::Result<Self::Writer>> + Send;
    /// One write by a client that knows nothing yet (finds the leader, connects, writes): the
    /// probe sent every few milliseconds through a failover. `attempt` lets it rotate over
    /// the members it may ask.
    fn probe(&self, attempt: u64) -> impl Future<Output = anyhow::Result<()>> + Send + 'static;
    /// Waits until a leader leads with every other member in step.
    fn ready(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Which member leads (is primary) now.
    fn leader(&mut self) -> impl Future<Output = anyhow::Result<usize>> + Send;
    /// A member's process.
    fn daemon(&mut self, member: usize) -> &mut Daemon;
}

/// What happens to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL; afterwards started again with its data.
    Kill,
    /// SIGSTOP; afterwards SIGCONT.
    Pause,
}

impl Fault {
    pub async fn inject(self, daemon: &mut Daemon) -> anyhow::Result<()> {
        match self {
            Fault::Kill => daemon.kill().await,
            Fault::Pause => daemon.pause().await,
        }
    }

    pub async fn heal(self, daemon: &mut Daemon) -> anyhow::Result<()> {
        match self {
            Fault::Kill => daemon.restart(),
            Fault::Pause => daemon.resume().await,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub clients: usize,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// `clients` writers, each writing its next unique key as soon as the last was acknowledged,
/// for `duration`.
pub async fn throughput<S: System>(
    system: &S,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let mut writers = Vec::new();
    for _ in 0..clients {
        writers.push(system.writer().await?);
    }
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for (index, mut writer) in writers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let begin = Instant::now();
                match writer
                    .put(&format!("bench-{index}-{n}"), &format!("v{n}"))
                    .await
                {
                    Ok(()) => latencies.push(begin.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mine, failed) = task.await?;
        latencies.extend(mine);
        errors += failed;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Throughput {
        clients,
        ops_per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        errors,
    })
}

/// The `q`-quantile of sorted durations, in ms (0 when there are none).
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A probe every this often through a failover: the outage's resolution.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A probe that has not been answered by then has failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes before the kill, to see that writes go through.
const WARM_UP: Duration = Duration::from_millis(300);

/// Kills (pauses) the leader of a ready system and returns how long after the fault the first
/// probe *sent after it* was acknowledged (a probe in flight at the fault may have been
/// committed before it). Then the member is healed; the next run waits until all are in step.
pub async fn failover<S: System>(
    system: &mut S,
    fault: Fault,
    limit: Duration,
) -> anyhow::Result<Duration> {
    system.ready().await?;
    let warm = system.probe(0).await;
    anyhow::ensure!(
        warm.is_ok(),
        "{}: a write before the kill failed: {warm:?}",
        system.name()
    );
    tokio::time::sleep(WARM_UP).await;
    let member = system.leader().await?;
    let killed_at = Instant::now();
    fault.inject(system.daemon(member)).await?;
    let (done, mut acknowledged) = tokio::sync::mpsc::unbounded_channel();
    let mut attempt = 0u64;
    let outage = loop {
        attempt += 1;
        let probe = system.probe(attempt);
        let done = done.clone();
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                let _ = done.send(Instant::now());
            }
        });
        let next = Instant::now() + PROBE_EVERY;
        if let Ok(Some(at)) = tokio::time::timeout_at(next, acknowledged.recv()).await {
            break at.duration_since(killed_at);
        }
        anyhow::ensure!(
            killed_at.elapsed() < limit,
            "{}: no write acknowledged within {limit:?} of {fault:?} of member {member}",
            system.name()
        );
        tokio::time::sleep_until(next).await;
    };
    fault.heal(system.daemon(member)).await?;
    Ok(outage)
}

/// min / median / max of some runs.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub runs: usize,
    pub min_ms: u64,
    pub median_ms: u64,
    pub max_ms: u64,
    pub all_ms: Vec<u64>,
}

impl Spread {
    pub fn of(outages: &[Duration]) -> Spread {
        let mut all: Vec<u64> = outages.iter().map(|d| d.as_millis() as u64).collect();
        all.sort_unstable();
        let median = match all.len() {
            0 => 0,
            n if n % 2 == 1 => all[n / 2],
            n => (all[n / 2 - 1] + all[n / 2]) / 2,
        };
        Spread {
            runs: all.len(),
            min_ms: all.first().copied().unwrap_or(0),
            median_ms: median,
            max_ms: all.last().copied().unwrap_or(0),
            all_ms: all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_min_median_max() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let s = Spread::of(&ms(&[300, 100, 200]));
        assert_eq!((s.min_ms, s.median_ms, s.max_ms), (100, 200, 300));
        assert_eq!(Spread::of(&ms(&[100, 400, 200, 300])).median_ms, 250);
    }

    #[test]
    fn quantiles_of_sorted_latencies() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&sorted, 0.5), 51.0);
        assert_eq!(quantile_ms(&sorted, 0.99), 100.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }
}
