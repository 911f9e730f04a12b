use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use halab::chaos::{self, RandomRun};
use halab::history;
use halab::recorder::{self, Workload};
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
}

#[derive(Debug, Subcommand)]
enum Chaos {
    /// Random faults on the store's and the election's nodes (kill, pause, cut from the
    /// replication network, cut from every network), one at a time, drawn from --seed, while
    /// the workload runs; then everything healed, the history checked, never two primaries or
    /// leaders at once, the election at rest. Prints the seed at once and one JSON line at the
    /// end; exits 1 when an invariant broke. Needs the Docker socket and the lab network.
    Random(RandomArgs),
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
    println!("{}", serde_json::to_string(&report)?);
    anyhow::ensure!(
        report.valid(),
        "the history is not valid: {} anomalies",
        report.anomalies.len()
    );
    Ok(())
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
        project: args.project,
        lan: args.lan,
        link: args.link,
        workload: args.workload.workload(),
    };
    let report = chaos::random(run, codec).await?;
    println!("{}", serde_json::to_string(&report)?);
    anyhow::ensure!(report.ok, "an invariant broke (seed {seed})");
    Ok(())
}

fn wall_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
