use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use halab_runtime::{ControlCommand, StatusArgs, control};
use proto::{Message, WorkerProcessStatus};
use worker::WorkerConfig;

/// halab's worker: finds the dispatcher by UDP broadcast, registers with a weight, answers
/// status checks and activations, reports while active. Every flag --some-name can also be set
/// as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: halab_runtime::CommonArgs,
    #[command(flatten)]
    config: WorkerConfig,
    #[command(subcommand)]
    command: Option<ControlCommand>,
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None => {
            let shutdown = halab_runtime::start_daemon(&cli.common)?;
            worker::start(cli.config, cli.common.codec(), shutdown.clone())
                .await?
                .join()
                .await;
            if !shutdown.is_cancelled() {
                tracing::info!("every worker of this process has terminated; exiting");
            }
            Ok(())
        }
        Some(ControlCommand::Status(args)) => {
            control::print_status(&query(&cli, args).await?, args.json, table)
        }
        Some(ControlCommand::Healthcheck(args)) => query(&cli, args).await.map(drop),
    }
}

async fn query(cli: &Cli, args: &StatusArgs) -> anyhow::Result<WorkerProcessStatus> {
    // The worker serves status where --status-addr says; asking uses the same setting.
    let addr = args.status_addr.unwrap_or(cli.config.status_addr);
    match control::query_status(
        addr,
        cli.common.codec(),
        Duration::from_millis(args.timeout_ms),
    )
    .await?
    {
        Message::WorkerStatus(status) => Ok(status),
        other => anyhow::bail!("{addr} answered {:?}: not a worker", other.kind()),
    }
}

fn table(status: &WorkerProcessStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:>6} {:>6} {:<12} {:>11} {:>13}  dispatcher",
        "index", "id", "weight", "state", "activations", "registrations"
    );
    for w in &status.workers {
        let id = w.id.map_or("-".to_string(), |id| id.to_string());
        let dispatcher = w.dispatcher.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:>5}  {:>6} {:>6} {:<12} {:>11} {:>13}  {dispatcher}",
            w.index, id, w.weight, w.state, w.activations, w.registrations
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_follows_the_conventions() {
        halab_runtime::assert_cli_conventions(super::Cli::command());
    }
}
