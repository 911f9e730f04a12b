use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use halab_runtime::{CommonArgs, StatusArgs, control, logging};
use proto::{Message, WorkerProcessStatus};
use worker::WorkerConfig;

/// halab's worker: finds the dispatcher by UDP broadcast, registers with a weight, answers
/// status checks and activations, reports while active. Every flag --some-name can also be set
/// as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    config: WorkerConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the state of a running worker process's workers.
    Status(StatusArgs),
    /// Exit 0 when the worker process answers status requests (Docker HEALTHCHECK).
    Healthcheck(StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return halab_runtime::exit_on_error(Err(e.into())),
    };
    halab_runtime::exit_on_error(runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None => serve(cli.common, cli.config).await,
        Some(Command::Status(args)) => {
            let status = query(&cli, args).await?;
            control::print_status(&status, args.json, table)
        }
        Some(Command::Healthcheck(args)) => {
            query(&cli, args).await?;
            Ok(())
        }
    }
}

async fn serve(common: CommonArgs, config: WorkerConfig) -> anyhow::Result<()> {
    logging::init(&common)?;
    common.warn_if_unauthenticated();
    let shutdown = halab_runtime::shutdown_on_signal()?;
    let running = worker::start(config, common.codec(), shutdown.clone()).await?;
    running.join().await;
    if !shutdown.is_cancelled() {
        tracing::info!("every worker of this process has terminated; exiting");
    }
    Ok(())
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
        let _ = writeln!(
            out,
            "{:>5}  {:>6} {:>6} {:<12} {:>11} {:>13}  {}",
            w.index,
            id,
            w.weight,
            w.state,
            w.activations,
            w.registrations,
            w.dispatcher.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_reads_its_halab_env_variable() {
        let missing = halab_runtime::flags_without_env(&Cli::command());
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
