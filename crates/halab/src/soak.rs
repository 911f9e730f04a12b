//! `halab soak`: both cores saturated by busy loops at normal priority while every system runs
//! its ordinary work, to show that load alone never looks like a fault: no store failover, no
//! new election leadership, no worker dropped for silence, no failover seen by the monitor —
//! and what the store's latency becomes meanwhile.

use std::time::{Duration, Instant};

use primary_standby::load::{self, LoadPlan};
use primary_standby::witness::wall_ms;
use proto::FrameCodec;
use serde::Serialize;

use crate::election;
use crate::lab::Lab;
use crate::monitor;

#[derive(Debug, Clone)]
pub struct SoakRun {
    pub duration: Duration,
    /// Busy loops (default: one per core).
    pub busy_loops: usize,
    /// The store's nodes, host:port.
    pub nodes: Vec<String>,
    /// The election's service name and status port.
    pub election: String,
    /// The monitor's HTTP address.
    pub monitor: String,
    pub project: String,
    /// The store workload's writes per second.
    pub rate: u64,
}

#[derive(Debug, Serialize)]
pub struct StoreSoak {
    pub acked: u64,
    pub lost: u64,
    pub unknown: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The epoch moved: some standby was promoted.
    pub promoted: bool,
    pub max_primaries_at_once: u64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub duration_s: u64,
    pub busy_loops: usize,
    pub store: StoreSoak,
    /// Leaderships that began during the soak (a re-election), and the most at once.
    pub new_leaderships: usize,
    pub max_leaders_at_once: u64,
    /// Dispatcher log lines removing a worker for silence.
    pub workers_dropped_for_silence: usize,
    /// The monitor's failover count over the soak.
    pub monitor_failovers: u64,
    pub ok: bool,
}

pub async fn soak(run: SoakRun, codec: FrameCodec) -> anyhow::Result<SoakReport> {
    let lab = Lab::open(&run.project)?;
    // From a store at rest: a primary with both standbys in sync.
    crate::chaos::steady(&run.nodes, &codec).await?;
    let began_ms = wall_ms();
    let began = Instant::now();
    let until = began + run.duration;
    let failovers_before = monitor::failovers(&run.monitor).await?;

    let burners: Vec<_> = (0..run.busy_loops)
        .map(|_| std::thread::spawn(move || busy_until(until)))
        .collect();
    let plan = LoadPlan {
        nodes: run.nodes.clone(),
        clients: 4,
        rate: run.rate,
        duration: run.duration,
        prefix: format!("soak-{began_ms}"),
        verify: true,
        watch: Some(Duration::from_millis(20)),
        redis: None,
    };
    let store = tokio::spawn(load::run(plan, codec.clone()));
    // Nothing is killed here: the watch's kill reports stay empty.
    let (_no_kills, kills) = tokio::sync::mpsc::unbounded_channel();
    let watch = election::watch(
        run.election.clone(),
        codec,
        Duration::from_millis(50),
        tokio::time::sleep_until(until.into()),
        kills,
    );
    let seen = watch.await;
    for burner in burners {
        let _ = burner.join();
    }
    let store = store.await??;
    let now = wall_ms();
    let new_leaderships = seen.leaderships_since(began_ms);
    let max_leaders_at_once = seen.max_leaders_at_once(now);
    let dropped = lab
        .count_log_lines("dispatcher", began_ms / 1000, "no communication for")
        .await?;
    let monitor_failovers = monitor::failovers(&run.monitor).await? - failovers_before;
    let store = StoreSoak {
        acked: store.acked,
        lost: store.lost,
        unknown: store.unknown,
        p50_ms: store.p50_ms,
        p99_ms: store.p99_ms,
        max_ms: store.max_ms,
        promoted: store.promoted.unwrap_or(true),
        max_primaries_at_once: store.max_primaries_at_once.unwrap_or(u64::MAX),
    };
    let mut report = SoakReport {
        duration_s: run.duration.as_secs(),
        busy_loops: run.busy_loops,
        store,
        new_leaderships,
        max_leaders_at_once,
        workers_dropped_for_silence: dropped,
        monitor_failovers,
        ok: false,
    };
    report.ok = report.no_false_failover();
    Ok(report)
}

impl SoakReport {
    /// Load alone changed nothing: nothing lost, nobody promoted or elected, nobody dropped.
    fn no_false_failover(&self) -> bool {
        self.store.lost == 0
            && self.store.acked > 0
            && !self.store.promoted
            && self.store.max_primaries_at_once <= 1
            && self.new_leaderships == 0
            && self.max_leaders_at_once <= 1
            && self.workers_dropped_for_silence == 0
            && self.monitor_failovers == 0
    }
}

/// A core kept busy until `until`.
fn busy_until(until: Instant) {
    let mut spins = 0u64;
    while Instant::now() < until {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_failover_lost_write_or_drop_fails_the_soak() {
        let calm = || SoakReport {
            duration_s: 600,
            busy_loops: 2,
            store: StoreSoak {
                acked: 1000,
                lost: 0,
                unknown: 0,
                p50_ms: 1.0,
                p99_ms: 80.0,
                max_ms: 500.0,
                promoted: false,
                max_primaries_at_once: 1,
            },
            new_leaderships: 0,
            max_leaders_at_once: 1,
            workers_dropped_for_silence: 0,
            monitor_failovers: 0,
            ok: false,
        };
        assert!(calm().no_false_failover());
        let breaks: [fn(&mut SoakReport); 8] = [
            |r| r.store.lost = 1,
            |r| r.store.acked = 0,
            |r| r.store.promoted = true,
            |r| r.store.max_primaries_at_once = 2,
            |r| r.new_leaderships = 1,
            |r| r.max_leaders_at_once = 2,
            |r| r.workers_dropped_for_silence = 1,
            |r| r.monitor_failovers = 1,
        ];
        for (i, broken) in breaks.iter().enumerate() {
            let mut report = calm();
            broken(&mut report);
            assert!(!report.no_false_failover(), "break {i} went unnoticed");
        }
    }
}
