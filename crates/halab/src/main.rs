use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use halab::bench::{self, BenchArgs};
use halab::chaos::{self, RandomRun};
use halab::history;
use halab::lab::Networks;
use halab::recorder::{self, Workload};
use halab::scenario::dispatcher::{self, DispatcherRun, DispatcherScenario};
use halab::scenario::election::{ElectionRun, ElectionScenario};
use halab::scenario::fairness::{self, FairnessRun};
use halab::scenario::front_door::{self, FrontDoorRun};
use halab::scenario::monitor::{self, MonitorRun, MonitorScenario};
use halab::scenario::store::{self, StoreRun, StoreScenario};
use halab::soak::{self, SoakRun};
use halab::verdict;
use primary_standby::client::ClientArgs;

/// halab's lab instrument. `check` records a store client's history (reads and writes of a
/// few keys, through whatever faults happen meanwhile) and checks it: linearizable per key, no
/// acknowledged write lost, no value from nowhere. `chaos random` injects random faults into
/// the lab's store meanwhile. Every flag --some-name can also be set as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: halab_runtime::CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the workload against the store and check its history (or check a saved one with
    /// --history). Prints one JSON line; exits 1 when the history is not valid.
    Check(CheckArgs),
    /// Break the running lab on purpose.
    #[command(subcommand)]
    Chaos(Chaos),
    /// halab's store and election beside etcd and Redis Sentinel on this machine (loopback,
    /// host processes): write throughput at 1/16/64 clients, and the time from SIGKILL of the
    /// leader until writes work again (or, for the election, a successor leads). Prints a
    /// table of ratios and one JSON line; draws a PNG chart. Needs etcd, redis-server and
    /// redis-sentinel on PATH (scripts/bench installs them) unless --halab-only.
    Bench(BenchArgs),
    /// Both cores saturated by busy loops (normal priority) while the lab runs its ordinary
    /// work and a store client writes: no failover, no new leadership, no worker dropped for
    /// silence, no failover seen by the monitor; the store's latency printed. One JSON line;
    /// exits 1 if load alone looked like a fault. Runs on the lab network with the Docker
    /// socket (scripts/chaos soak).
    Soak(SoakArgs),
}

#[derive(Debug, Args)]
struct SoakArgs {
    /// Seconds of saturation.
    #[arg(long, env = "HALAB_DURATION", default_value_t = 600)]
    duration: u64,
    /// Busy loops (default: one per core).
    #[arg(long, env = "HALAB_BUSY_LOOPS")]
    busy_loops: Option<usize>,
    /// The store's nodes (host:port of their client ports, comma-separated).
    #[arg(
        long,
        env = "HALAB_NODES",
        value_delimiter = ',',
        default_value = "store1:7300,store2:7300,store3:7300"
    )]
    nodes: Vec<String>,
    /// The store workload's writes per second (4 clients).
    #[arg(long, env = "HALAB_RATE", default_value_t = 300)]
    rate: u64,
    /// The election's nodes (every address the name resolves to is one node).
    #[arg(long, env = "HALAB_ELECTION", default_value = "election:7201")]
    election: String,
    /// The monitor's HTTP address.
    #[arg(long, env = "HALAB_MONITOR", default_value = "monitor:8080")]
    monitor: String,
    /// The compose project (its dispatcher's log is read).
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
}

#[derive(Debug, Subcommand)]
enum Chaos {
    /// Random faults on the nodes of all four systems (the store, the election, the
    /// dispatcher and its workers, the monitor): kill, pause, cut from the replication network
    /// or from every network, a one-way partition from one peer, a lossy link (those two by
    /// iptables in the node's namespace), a slow link (tc's token bucket there; both through
    /// the halab/nettools image scripts/build makes);
    /// drawn from --seed, one at a time per system, the systems' tracks at once, while the
    /// workload runs. Then everything healed and
    /// checked: the history valid, never two primaries or leaders at once, never more workers
    /// active than allowed, every system at rest. Prints the seed at once and one JSON line at
    /// the end; exits 1 when an invariant broke. Needs the Docker socket and the lab network.
    Random(RandomArgs),
    #[command(flatten)]
    Store(StoreCommand),
    #[command(flatten)]
    Dispatcher(DispatcherCommand),
    #[command(flatten)]
    Checker(CheckerCommand),
    #[command(flatten)]
    Monitor(MonitorCommand),
    #[command(flatten)]
    Election(ElectionCommand),
    /// The worker fleet recreated with self-termination off and the dispatcher restarted, then
    /// for --duration s: the largest fairness gap the dispatcher reports within its bound, and
    /// the gap from the workers' own activation counts within twice it; the fleet put back.
    Fairness(FairnessArgs),
}

#[derive(Debug, Args)]
struct FairnessArgs {
    /// Seconds measured.
    #[arg(long, env = "HALAB_DURATION", default_value_t = 180)]
    duration: u64,
    /// The dispatcher's status address.
    #[arg(long, env = "HALAB_DISPATCHER", default_value = "dispatcher:7101")]
    dispatcher: String,
    /// The compose project whose containers are recreated.
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
}

/// The election's named scenarios, every node's status read every 20 ms and every leadership
/// the nodes report kept. One JSON line (the fields scripts/chaos printed, and
/// max_leaders_seen_at_once by the nodes' own records); exits 1 when two nodes led at once or
/// the scenario's promise broke.
#[derive(Debug, Subcommand)]
enum ElectionCommand {
    /// The leader SIGKILLed (through the engine), started again once a successor leads:
    /// another node leads, ⌈n/3⌉ of the rest green.
    KillLeader(KillLeaderArgs),
    /// A follower SIGKILLed, later started again: the leader colours the rest.
    KillFollower(ElectionArgs),
    /// A sixth node added (as compose's --scale would), then removed: it is coloured.
    AddNode(ElectionArgs),
    /// The leader cut from the lab network, then reconnected: the majority elects another,
    /// one leader after healing.
    PartitionLeader(ElectionArgs),
    /// Two followers SIGKILLed at once and started again: they come back with their saved
    /// term and membership, the same leader in the same term throughout.
    RestartFollowers(ElectionArgs),
    /// A follower drops every packet from the leader (iptables in its namespace): no node's
    /// term moves, the leader stays.
    OneWayPartition(OneWayArgs),
}

#[derive(Debug, Args)]
struct ElectionArgs {
    /// The election's status address (every address the name resolves to is one node).
    #[arg(long, env = "HALAB_ELECTION", default_value = "election:7201")]
    election: String,
    /// The compose project whose containers are broken.
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
    /// The lab network the nodes are on.
    #[arg(long, env = "HALAB_LAN", default_value = "halab_lan")]
    lan: String,
}

#[derive(Debug, Args)]
struct KillLeaderArgs {
    /// Kills in a row: the report gives min / median / max of the re-election time.
    #[arg(long, env = "HALAB_RUNS", default_value_t = 1)]
    runs: usize,
    #[command(flatten)]
    election: ElectionArgs,
}

#[derive(Debug, Args)]
struct OneWayArgs {
    /// Seconds the follower stays deaf.
    #[arg(long, env = "HALAB_DURATION", default_value_t = 10)]
    duration: u64,
    #[command(flatten)]
    election: ElectionArgs,
}

impl ElectionCommand {
    fn split(self) -> (ElectionScenario, ElectionArgs) {
        match self {
            ElectionCommand::KillLeader(args) => (
                ElectionScenario::KillLeader { runs: args.runs },
                args.election,
            ),
            ElectionCommand::KillFollower(args) => (ElectionScenario::KillFollower, args),
            ElectionCommand::AddNode(args) => (ElectionScenario::AddNode, args),
            ElectionCommand::PartitionLeader(args) => (ElectionScenario::PartitionLeader, args),
            ElectionCommand::RestartFollowers(args) => (ElectionScenario::RestartFollowers, args),
            ElectionCommand::OneWayPartition(args) => (
                ElectionScenario::OneWayPartition {
                    deaf_for: Duration::from_secs(args.duration),
                },
                args.election,
            ),
        }
    }
}

/// The dispatcher's named scenarios, its table read from its status port every 20 ms. One JSON
/// line (the fields scripts/chaos printed); exits 1 when the dispatcher did not do as promised.
#[derive(Debug, Subcommand)]
enum DispatcherCommand {
    /// An active worker's container SIGKILLed: removed at once (its connection closed).
    KillWorker(DispatcherArgs),
    /// An idle worker's container paused: removed after the 5 s silence timeout and not
    /// before; unpaused, it registers again under a new id.
    PauseWorker(DispatcherArgs),
    /// The dispatcher SIGKILLed and started again: every live worker registers with the new
    /// process, which hands out no id the old one used.
    KillDispatcher(DispatcherArgs),
    /// The dispatcher paused 7 s: resumed, it removes no worker for silence, and no worker
    /// gives it up.
    PauseDispatcher(DispatcherArgs),
}

impl DispatcherCommand {
    fn split(self) -> (DispatcherScenario, DispatcherArgs) {
        match self {
            DispatcherCommand::KillWorker(args) => (DispatcherScenario::KillWorker, args),
            DispatcherCommand::PauseWorker(args) => (DispatcherScenario::PauseWorker, args),
            DispatcherCommand::KillDispatcher(args) => (DispatcherScenario::KillDispatcher, args),
            DispatcherCommand::PauseDispatcher(args) => (DispatcherScenario::PauseDispatcher, args),
        }
    }
}

#[derive(Debug, Args)]
struct DispatcherArgs {
    /// The dispatcher's status address.
    #[arg(long, env = "HALAB_DISPATCHER", default_value = "dispatcher:7101")]
    dispatcher: String,
    /// The compose project whose containers are broken.
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
    /// The lab network the workers are on.
    #[arg(long, env = "HALAB_LAN", default_value = "halab_lan")]
    lan: String,
}

/// The store's named scenarios: one fault while its load client writes 300/s for 10 s
/// (watching every node every 20 ms), then the store steady again. One JSON line (the fields
/// scripts/chaos printed); exits 1 if nothing acknowledged may be lost, a second primary, or a
/// promotion the fault did not call for (or none where it did) was seen.
#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// The primary exits on an authenticated admin request (needs --admin-token).
    KillPrimary(StoreArgs),
    /// A standby exits on an authenticated admin request (needs --admin-token).
    KillStandby(StoreArgs),
    /// The primary stopped 2 s (docker stop: SIGTERM, its graceful shutdown), then started.
    StopPrimary(StoreArgs),
    /// The primary paused 3 s (docker pause), then unpaused.
    PausePrimary(StoreArgs),
    /// The primary off the replication network for 4 s.
    DisconnectLink(StoreArgs),
    /// The primary off both networks for 4 s.
    DisconnectPrimary(StoreArgs),
    /// All three store nodes SIGKILLed at once (the load writes 14 s).
    RestartAll(StoreArgs),
}

/// The monitor's named scenarios, its view read from /api/status every 20 ms. One JSON line
/// (the fields scripts/chaos printed).
#[derive(Debug, Subcommand)]
enum MonitorCommand {
    /// A store standby paused: the monitor calls it service-down, then up after unpause.
    PauseNode(MonitorArgs),
    /// A store standby stopped: the monitor calls it machine-down, then up after start.
    StopNode(MonitorArgs),
    /// The monitor restarted: its API comes back with every store node up, and a write made
    /// through it before is still there.
    RestartMonitor(MonitorArgs),
    /// Clients writing only through the monitor's front door (4, 200/s for 12 s) while the
    /// store's primary exits on an admin request: no error, nothing acknowledged lost, an
    /// outage no longer than the store's own client's (beside them) plus one monitor poll.
    FrontDoorFailover(FrontDoorArgs),
}

#[derive(Debug, Args)]
struct FrontDoorArgs {
    #[command(flatten)]
    monitor: MonitorArgs,
    /// The store's admin token, for the kill.
    #[arg(
        long,
        env = "HALAB_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    admin_token: String,
}

#[derive(Debug, Args)]
struct MonitorArgs {
    /// The monitor's HTTP address.
    #[arg(long, env = "HALAB_MONITOR", default_value = "monitor:8080")]
    monitor: String,
    /// The store's nodes, as the monitor names them (a node's compose service is the host).
    #[arg(
        long,
        env = "HALAB_NODES",
        value_delimiter = ',',
        default_value = "store1:7300,store2:7300,store3:7300"
    )]
    nodes: Vec<String>,
    /// The compose project whose containers are broken.
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
}

#[derive(Debug, Subcommand)]
enum CheckerCommand {
    /// The checker's clients (4 reading and writing 5 keys, 300/s for 10 s) while the primary
    /// exits on an admin request 4 s in: the history linearizable, nothing acknowledged lost.
    CheckFailover(StoreArgs),
}

impl StoreCommand {
    fn split(self) -> (StoreScenario, StoreArgs) {
        match self {
            StoreCommand::KillPrimary(args) => (StoreScenario::KillPrimary, args),
            StoreCommand::KillStandby(args) => (StoreScenario::KillStandby, args),
            StoreCommand::StopPrimary(args) => (StoreScenario::StopPrimary, args),
            StoreCommand::PausePrimary(args) => (StoreScenario::PausePrimary, args),
            StoreCommand::DisconnectLink(args) => (StoreScenario::DisconnectLink, args),
            StoreCommand::DisconnectPrimary(args) => (StoreScenario::DisconnectPrimary, args),
            StoreCommand::RestartAll(args) => (StoreScenario::RestartAll, args),
        }
    }
}

impl StoreArgs {
    fn store_run(self, scenario: Option<StoreScenario>) -> StoreRun {
        StoreRun {
            scenario,
            nodes: self.nodes,
            project: self.project,
            networks: Networks {
                lan: self.lan,
                link: self.link,
            },
            admin_token: self.admin_token,
        }
    }
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// The store's nodes (host:port of their client ports, comma-separated; a node's compose
    /// service is the host).
    #[arg(
        long,
        env = "HALAB_NODES",
        value_delimiter = ',',
        default_value = "store1:7300,store2:7300,store3:7300"
    )]
    nodes: Vec<String>,
    /// The store's admin token, for the kill scenarios.
    #[arg(long, env = "HALAB_ADMIN_TOKEN", default_value = "")]
    admin_token: String,
    /// The compose project whose containers are broken.
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
    /// The lab network (clients) and the replication network.
    #[arg(long, env = "HALAB_LAN", default_value = "halab_lan")]
    lan: String,
    #[arg(long, env = "HALAB_LINK", default_value = "halab_link")]
    link: String,
}

#[derive(Debug, Args)]
struct WorkloadArgs {
    #[command(flatten)]
    store: ClientArgs,
    /// Clients, each one operation at a time.
    #[arg(long, env = "HALAB_CLIENTS", default_value_t = 4)]
    clients: u32,
    /// Keys the clients share (few: operations on one key must overlap to prove anything).
    #[arg(long, env = "HALAB_KEYS", default_value_t = 5)]
    keys: u32,
    /// Operations per second over all clients.
    #[arg(long, env = "HALAB_RATE", default_value_t = 200)]
    rate: u32,
    /// How long the workload runs, in seconds.
    #[arg(long, env = "HALAB_DURATION", default_value_t = 10)]
    duration: u64,
}

impl WorkloadArgs {
    fn workload(&self) -> Workload {
        Workload {
            nodes: self.store.nodes.clone(),
            clients: self.clients,
            keys: self.keys,
            rate: self.rate,
            duration: Duration::from_secs(self.duration),
            deadline: self.store.deadline(),
            prefix: format!("check{}-{}", std::process::id(), wall_s()),
        }
    }
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Check this saved history (one JSON operation per line) instead of running a workload.
    #[arg(long, env = "HALAB_HISTORY")]
    history: Option<PathBuf>,
    /// Save the recorded history here.
    #[arg(long, env = "HALAB_SAVE")]
    save: Option<PathBuf>,
    #[command(flatten)]
    workload: WorkloadArgs,
}

#[derive(Debug, Args)]
struct RandomArgs {
    /// The schedule's seed (printed): the same seed replays the same faults. Default: random.
    #[arg(long, env = "HALAB_SEED")]
    seed: Option<u64>,
    /// The election's nodes (host:port: every address the name resolves to is one node), also
    /// broken and watched; empty: the store alone.
    #[arg(long, env = "HALAB_ELECTION", default_value = "election:7201")]
    election: String,
    /// The dispatcher's status address: it and its workers are also broken, and it is
    /// sampled (never more active than its limit) and must have every running worker
    /// registered after; empty: left alone.
    #[arg(long, env = "HALAB_DISPATCHER", default_value = "dispatcher:7101")]
    dispatcher: String,
    /// The monitor's HTTP address: it is also broken, and must see every node up and serve the
    /// store's final values through its front door after; empty: left alone.
    #[arg(long, env = "HALAB_MONITOR", default_value = "monitor:8080")]
    monitor: String,
    /// The compose project whose containers are broken.
    #[arg(long, env = "HALAB_PROJECT", default_value = "halab")]
    project: String,
    /// The lab network (clients) and the replication network.
    #[arg(long, env = "HALAB_LAN", default_value = "halab_lan")]
    lan: String,
    #[arg(long, env = "HALAB_LINK", default_value = "halab_link")]
    link: String,
    #[command(flatten)]
    workload: WorkloadArgs,
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let codec = cli.common.codec();
    match cli.command {
        Command::Check(args) => check(args, codec).await,
        Command::Chaos(Chaos::Random(args)) => random(args, &cli.common, codec).await,
        Command::Chaos(Chaos::Dispatcher(command)) => {
            halab_runtime::logging::init(&cli.common)?;
            let (scenario, args) = command.split();
            let run = DispatcherRun {
                scenario,
                dispatcher: args.dispatcher,
                project: args.project,
                // The dispatcher and its workers are on the lab network alone.
                networks: Networks {
                    lan: args.lan,
                    link: String::new(),
                },
            };
            let report = dispatcher::run(run, codec).await?;
            print_verdict(
                &report,
                report.ok(),
                "the dispatcher did not do as promised",
            )
        }
        Command::Chaos(Chaos::Fairness(args)) => {
            halab_runtime::logging::init(&cli.common)?;
            let run = FairnessRun {
                dispatcher: args.dispatcher,
                project: args.project,
                duration: Duration::from_secs(args.duration),
            };
            let report = fairness::run(run, codec).await?;
            print_verdict(&report, report["ok"] == true, "the dispatcher was not fair")
        }
        Command::Chaos(Chaos::Store(command)) => {
            halab_runtime::logging::init(&cli.common)?;
            let (scenario, args) = command.split();
            let report = store::run(args.store_run(Some(scenario)), codec).await?;
            print_verdict(&report, report.ok, "an invariant broke")
        }
        Command::Chaos(Chaos::Monitor(command)) => {
            halab_runtime::logging::init(&cli.common)?;
            let (scenario, args) = match command {
                MonitorCommand::PauseNode(args) => (MonitorScenario::PauseNode, args),
                MonitorCommand::StopNode(args) => (MonitorScenario::StopNode, args),
                MonitorCommand::RestartMonitor(args) => (MonitorScenario::RestartMonitor, args),
                MonitorCommand::FrontDoorFailover(args) => {
                    let run = FrontDoorRun {
                        monitor: args.monitor.monitor,
                        nodes: args.monitor.nodes,
                        admin_token: args.admin_token,
                    };
                    let report = front_door::run(run, codec).await?;
                    return print_verdict(
                        &report,
                        report["ok"] == true,
                        "the front door did not do as promised",
                    );
                }
            };
            let run = MonitorRun {
                scenario,
                monitor: args.monitor,
                nodes: args.nodes,
                project: args.project,
            };
            let report = monitor::run(run, codec).await?;
            print_verdict(
                &report,
                report["ok"] == true,
                "the monitor did not do as promised",
            )
        }
        Command::Chaos(Chaos::Election(command)) => {
            halab_runtime::logging::init(&cli.common)?;
            let (scenario, args) = command.split();
            let run = ElectionRun {
                scenario,
                election: args.election,
                project: args.project,
                lan: args.lan,
            };
            let report = halab::scenario::election::run(run, codec).await?;
            print_verdict(
                &report,
                report["ok"] == true,
                "two nodes led at once, or the election broke its promise",
            )
        }
        Command::Chaos(Chaos::Checker(CheckerCommand::CheckFailover(args))) => {
            halab_runtime::logging::init(&cli.common)?;
            let report = store::check_failover(args.store_run(None), codec).await?;
            print_verdict(
                &report,
                report.ok,
                "the history is not valid, or no failover happened",
            )
        }
        Command::Soak(args) => {
            let busy_loops = args
                .busy_loops
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let run = SoakRun {
                duration: Duration::from_secs(args.duration),
                busy_loops,
                nodes: args.nodes,
                election: args.election,
                monitor: args.monitor,
                project: args.project,
                rate: args.rate,
            };
            let report = soak::soak(run, codec).await?;
            print_verdict(&report, report.ok, "load alone looked like a fault")
        }
        Command::Bench(args) => {
            let chart = args.chart.clone();
            let report = bench::run(args).await?;
            eprintln!("{}", bench::table(&report));
            eprintln!("chart: {}", chart.display());
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

async fn check(args: CheckArgs, codec: proto::FrameCodec) -> anyhow::Result<()> {
    let history = match &args.history {
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            history::read_jsonl(BufReader::new(file))
                .with_context(|| format!("{} is not a history", path.display()))?
        }
        None => recorder::record(args.workload.workload(), codec).await?,
    };
    if let Some(path) = &args.save {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        history::write_jsonl(&history, BufWriter::new(file))?;
    }
    let report = verdict::check(&history);
    let broke = format!(
        "the history is not valid: {} anomalies",
        report.anomalies.len()
    );
    print_verdict(&report, report.valid(), &broke)
}

async fn random(
    args: RandomArgs,
    common: &halab_runtime::CommonArgs,
    codec: proto::FrameCodec,
) -> anyhow::Result<()> {
    halab_runtime::logging::init(common)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with --seed {seed})");
    let services = args
        .workload
        .store
        .nodes
        .iter()
        .map(|n| {
            n.rsplit_once(':')
                .map_or(n.as_str(), |(host, _)| host)
                .to_string()
        })
        .collect();
    let run = RandomRun {
        seed,
        duration: Duration::from_secs(args.workload.duration),
        services,
        nodes: args.workload.store.nodes.clone(),
        election: Some(args.election).filter(|e| !e.is_empty()),
        dispatcher: Some(args.dispatcher).filter(|d| !d.is_empty()),
        monitor: Some(args.monitor).filter(|m| !m.is_empty()),
        project: args.project,
        networks: Networks {
            lan: args.lan,
            link: args.link,
        },
        workload: args.workload.workload(),
    };
    let report = chaos::random(run, codec).await?;
    print_verdict(
        &report,
        report.ok,
        &format!("an invariant broke (seed {seed})"),
    )
}

fn wall_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Prints a scenario's report as its one JSON line; an error (exit 1) saying what broke unless
/// it held.
fn print_verdict(report: &impl serde::Serialize, ok: bool, broke: &str) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    anyhow::ensure!(ok, "{broke}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_follows_the_conventions() {
        halab_runtime::assert_cli_conventions(Cli::command());
    }
}
