use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dispatcher::DispatcherConfig;
use halab_runtime::{CommonArgs, StatusArgs, control, logging};
use proto::{DispatcherStatus, Message};

/// halab's dispatcher: finds workers by UDP broadcast, activates them by weight, removes the
/// silent ones. Every flag --some-name can also be set as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    config: DispatcherConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a running dispatcher's table and fairness figures.
    Status(StatusArgs),
    /// Exit 0 when the dispatcher answers status requests (Docker HEALTHCHECK).
    Healthcheck(StatusArgs),
}

const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:7101";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return halab_runtime::exit_on_error(Err(e.into())),
    };
    halab_runtime::exit_on_error(runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.common, cli.config).await,
        Some(Command::Status(args)) => {
            let status = query(&cli.common, &args).await?;
            control::print_status(&status, args.json, table)
        }
        Some(Command::Healthcheck(args)) => {
            query(&cli.common, &args).await?;
            Ok(())
        }
    }
}

async fn serve(common: CommonArgs, config: DispatcherConfig) -> anyhow::Result<()> {
    logging::init(&common)?;
    common.warn_if_unauthenticated();
    let shutdown = halab_runtime::shutdown_on_signal()?;
    let running = dispatcher::start(config, common.codec(), shutdown).await?;
    running.join().await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

async fn query(common: &CommonArgs, args: &StatusArgs) -> anyhow::Result<DispatcherStatus> {
    let addr = args.status_addr.unwrap_or_else(default_status_addr);
    match control::query_status(addr, common.codec(), Duration::from_millis(args.timeout_ms))
        .await?
    {
        Message::DispatcherStatus(status) => Ok(status),
        other => anyhow::bail!("{addr} answered {:?}: not a dispatcher", other.kind()),
    }
}

fn default_status_addr() -> SocketAddr {
    DEFAULT_STATUS_ADDR
        .parse()
        .expect("constant address parses")
}

fn table(status: &DispatcherStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} workers, {}/{} active, {} activations; fairness gap {:.3} (bound {:.3}); up {} s",
        status.workers.len(),
        status.active,
        status.max_active,
        status.total_activations,
        status.fairness_gap,
        status.fairness_bound,
        status.uptime_ms / 1000
    );
    let _ = writeln!(
        out,
        "{:>6}  {:<22} {:>6} {:>11} {:>8} {:>6} {:>7} {:>13}",
        "id", "addr", "weight", "activations", "share", "active", "answers", "last_comm_ms"
    );
    for w in &status.workers {
        let _ = writeln!(
            out,
            "{:>6}  {:<22} {:>6} {:>11} {:>8.2} {:>6} {:>7} {:>13}",
            w.id,
            w.addr,
            w.weight,
            w.activations,
            w.share,
            if w.active { "yes" } else { "no" },
            w.answers_since_activation,
            w.last_comm_ms_ago
        );
    }
    if status.auth_failures + status.bad_frames > 0 {
        let _ = writeln!(
            out,
            "dropped: {} unauthenticated, {} malformed frames",
            status.auth_failures, status.bad_frames
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
