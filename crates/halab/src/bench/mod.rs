//! `halab bench`: halab's store and election beside the systems people run today, in one run
//! on this machine, all on loopback as host processes with the same client code: write
//! throughput and latency at 1, 16 and 64 clients (halab's store, a 3-member etcd, Redis with a
//! replica), and the time from SIGKILL of the leader / primary until writes are accepted again
//! (halab's store; etcd with its default and with tuned timers; Redis Sentinel) or, for the
//! election, until a successor leads. Printed as a table of ratios and drawn as a PNG.

mod chart;
mod election;
mod etcd;
mod etcd_cluster;
mod measure;
mod process;
mod sentinel;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use measure::{Fault, Spread, System, Throughput};
use store::STORE;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each throughput row writes for.
    #[arg(long, env = "HALAB_SECONDS", default_value_t = 5)]
    pub seconds: u64,
    /// Kills per system for the failover figures.
    #[arg(long, env = "HALAB_RUNS", default_value_t = 10)]
    pub runs: usize,
    /// Client counts of the throughput rows.
    #[arg(
        long,
        env = "HALAB_CLIENTS",
        value_delimiter = ',',
        default_value = "1,16,64"
    )]
    pub clients: Vec<usize>,
    /// Where `primary-standby` and `leader-election` are (default: beside this binary).
    #[arg(long, env = "HALAB_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The anchors' programs (found on PATH unless given).
    #[arg(long, env = "HALAB_ETCD", default_value = "etcd")]
    pub etcd: PathBuf,
    #[arg(long, env = "HALAB_REDIS_SERVER", default_value = "redis-server")]
    pub redis_server: PathBuf,
    #[arg(long, env = "HALAB_REDIS_SENTINEL", default_value = "redis-sentinel")]
    pub redis_sentinel: PathBuf,
    /// Only halab's own systems (no etcd, no Redis).
    #[arg(long, env = "HALAB_HALAB_ONLY")]
    pub halab_only: bool,
    /// Data directories and daemons' logs go here (default: a new temporary directory).
    #[arg(long, env = "HALAB_WORK")]
    pub work: Option<PathBuf>,
    /// The chart.
    #[arg(long, env = "HALAB_CHART", default_value = "bench.png")]
    pub chart: PathBuf,
    /// A TrueType font for the chart's text.
    #[arg(
        long,
        env = "HALAB_FONT",
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct SystemThroughput {
    pub system: String,
    pub rows: Vec<Throughput>,
}

#[derive(Debug, Serialize)]
pub struct SystemFailover {
    pub system: String,
    pub fault: Fault,
    /// What "works again" means for it.
    pub until: &'static str,
    pub spread: Spread,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub throughput: Vec<SystemThroughput>,
    pub failover: Vec<SystemFailover>,
}

const WRITES_AGAIN: &str = "a write by a new client acknowledged";
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf(),
    };
    let work = match &args.work {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => std::env::temp_dir().join(format!("halab-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    tracing::info!(work = %work.display(), "daemons' data and logs");
    let mut report = BenchReport {
        throughput: Vec::new(),
        failover: Vec::new(),
    };

    let mut halab = store::StoreCluster::start(&bin_dir, &work)?;
    measure_system(&mut halab, &args, true, &mut report).await?;
    drop(halab);

    if !args.halab_only {
        let etcd = find_program(&args.etcd)?;
        let mut default =
            etcd_cluster::EtcdCluster::start(&etcd, &work, etcd_cluster::DEFAULT_TIMERS, 17700)?;
        measure_system(&mut default, &args, true, &mut report).await?;
        drop(default);
        let mut tuned =
            etcd_cluster::EtcdCluster::start(&etcd, &work, etcd_cluster::TUNED_TIMERS, 17750)?;
        measure_system(&mut tuned, &args, false, &mut report).await?;
        drop(tuned);

        let (server, sentinel) = (
            find_program(&args.redis_server)?,
            find_program(&args.redis_sentinel)?,
        );
        let mut redis = sentinel::SentinelGroup::start(&server, &sentinel, &work)?;
        measure_system(&mut redis, &args, true, &mut report).await?;
        drop(redis);
    }

    let mut election = election::ElectionCluster::start(&bin_dir, &work)?;
    for fault in [Fault::Kill, Fault::Pause] {
        let mut outages = Vec::new();
        for run in 1..=args.runs {
            let outage = election.reelection(fault).await?;
            tracing::info!(run, ?fault, ms = outage.as_millis() as u64, "election");
            outages.push(outage);
        }
        report.failover.push(SystemFailover {
            system: "halab election (5 nodes)".to_string(),
            fault,
            until: "a successor leads (its majority acked)",
            spread: Spread::of(&outages),
        });
    }
    drop(election);
    // Kills first, then pauses; halab's rows first within each.
    report
        .failover
        .sort_by_key(|row| (row.fault, !row.system.starts_with("halab")));

    chart::draw(&report, &args.font, &args.chart)?;
    Ok(report)
}

/// Throughput rows (if `throughput`), then `args.runs` failovers.
async fn measure_system<S: System>(
    system: &mut S,
    args: &BenchArgs,
    throughput: bool,
    report: &mut BenchReport,
) -> anyhow::Result<()> {
    let name = system.name();
    system.ready().await?;
    if throughput {
        let mut rows = Vec::new();
        for clients in &args.clients {
            let row =
                measure::throughput(system, *clients, Duration::from_secs(args.seconds)).await?;
            tracing::info!(system = %name, ?row, "throughput");
            rows.push(row);
            // Replicas catch up before the next row starts.
            system.ready().await?;
        }
        report.throughput.push(SystemThroughput {
            system: name.clone(),
            rows,
        });
    }
    for fault in [Fault::Kill, Fault::Pause] {
        let mut outages = Vec::new();
        for run in 1..=args.runs {
            let outage = measure::failover(system, fault, FAILOVER_LIMIT).await?;
            tracing::info!(system = %name, run, ?fault, ms = outage.as_millis() as u64, "failover");
            outages.push(outage);
        }
        report.failover.push(SystemFailover {
            system: name.clone(),
            fault,
            until: WRITES_AGAIN,
            spread: Spread::of(&outages),
        });
    }
    Ok(())
}

/// `program` itself if it has a directory, else the first of that name on PATH.
fn find_program(program: &Path) -> anyhow::Result<PathBuf> {
    if program.components().count() > 1 {
        return Ok(program.to_path_buf());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "{} is not installed (scripts/bench installs etcd-server, redis-server and redis-sentinel)",
                program.display()
            )
        })
}

/// The report as the table `halab bench` prints: each anchor's figures with halab's over
/// theirs (throughput: above 1, halab does more; failover: below 1, halab is back sooner).
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    out.push_str(
        "throughput: synchronous replicated writes, fsync always, loopback\n\
         clients  system                              ops/s   p50_ms   p99_ms  errors  halab/this\n",
    );
    let halab = report.throughput.first();
    for system in &report.throughput {
        for row in &system.rows {
            let ratio = halab
                .and_then(|h| h.rows.iter().find(|r| r.clients == row.clients))
                .map_or(String::new(), |h| {
                    format!("{:.2}", h.ops_per_s / row.ops_per_s.max(f64::MIN_POSITIVE))
                });
            out.push_str(&format!(
                "{:<8} {:<33} {:>8.0} {:>8.2} {:>8.2} {:>7} {:>11}\n",
                row.clients,
                system.system,
                row.ops_per_s,
                row.p50_ms,
                row.p99_ms,
                row.errors,
                ratio
            ));
        }
    }
    out.push_str(
        "\nfailover: the leader / primary killed (SIGKILL) or paused (SIGSTOP) until it works again\n\
         fault  system                              runs   min_ms  median_ms   max_ms  store/this  until\n",
    );
    for row in &report.failover {
        let s = &row.spread;
        // Only like with like: the same fault, and the election's figure is no write.
        let store = report
            .failover
            .iter()
            .find(|r| r.fault == row.fault && r.system == STORE && r.until == row.until);
        let ratio = store.map_or(String::new(), |store| {
            format!(
                "{:.2}",
                store.spread.median_ms as f64 / s.median_ms.max(1) as f64
            )
        });
        let fault = match row.fault {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
        };
        out.push_str(&format!(
            "{fault:<6} {:<35} {:>4} {:>8} {:>10} {:>8} {:>11}  {}\n",
            row.system, s.runs, s.min_ms, s.median_ms, s.max_ms, ratio, row.until
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, fault: Fault, until: &'static str, median_ms: u64) -> SystemFailover {
        let ms = Duration::from_millis(median_ms);
        SystemFailover {
            system: system.to_string(),
            fault,
            until,
            spread: Spread::of(&[ms]),
        }
    }

    #[test]
    fn each_anchor_is_compared_with_the_store_under_the_same_fault() {
        let report = BenchReport {
            throughput: Vec::new(),
            failover: vec![
                row(STORE, Fault::Kill, WRITES_AGAIN, 150),
                row("halab election", Fault::Kill, "leads", 5),
                row("etcd", Fault::Kill, WRITES_AGAIN, 1500),
                row(STORE, Fault::Pause, WRITES_AGAIN, 200),
                row("etcd", Fault::Pause, WRITES_AGAIN, 1000),
            ],
        };
        let table = table(&report);
        let line = |fault: &str, system: &str| {
            table
                .lines()
                .find(|l| l.starts_with(fault) && l.contains(system))
                .unwrap_or_else(|| panic!("no {fault} {system} line in\n{table}"))
                .to_string()
        };
        assert!(line("kill", "etcd").contains(" 0.10 "), "{table}");
        assert!(line("pause", "etcd").contains(" 0.20 "), "{table}");
        assert!(
            !line("kill", "halab election").contains("0."),
            "no ratio: {table}"
        );
    }
}
