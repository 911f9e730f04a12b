use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use halab::history;
use halab::recorder::{self, Workload};
use halab::verdict;

/// halab's lab instrument. `check` records a store client's history (reads and writes of a
/// few keys, through whatever faults happen meanwhile) and checks it: linearizable per key, no
/// acknowledged write lost, no value from nowhere. Every flag --some-name can also be set as
/// HALAB_SOME_NAME.
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
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Check this saved history (one JSON operation per line) instead of running a workload.
    #[arg(long, env = "HALAB_HISTORY")]
    history: Option<PathBuf>,
    /// Save the recorded history here.
    #[arg(long, env = "HALAB_SAVE")]
    save: Option<PathBuf>,
    /// The store's nodes (host:port of their client ports, comma-separated).
    #[arg(
        long,
        env = "HALAB_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:7300"
    )]
    nodes: Vec<String>,
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
    /// How long one operation keeps trying (through a failover) before its outcome is unknown.
    #[arg(long, env = "HALAB_DEADLINE_MS", default_value_t = 5000)]
    deadline_ms: u64,
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Check(args) = cli.command;
    let history = match &args.history {
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            history::read_jsonl(BufReader::new(file))
                .with_context(|| format!("{} is not a history", path.display()))?
        }
        None => {
            let workload = Workload {
                nodes: args.nodes.clone(),
                clients: args.clients,
                keys: args.keys,
                rate: args.rate,
                duration: Duration::from_secs(args.duration),
                deadline: Duration::from_millis(args.deadline_ms),
                prefix: format!("check{}", std::process::id()),
            };
            recorder::record(workload, cli.common.codec()).await?
        }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_follows_the_conventions() {
        halab_runtime::assert_cli_conventions(Cli::command());
    }
}
