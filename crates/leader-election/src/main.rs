use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use halab_runtime::{ControlCommand, StatusArgs, control};
use leader_election::ElectionConfig;
use proto::{ElectionNodeStatus, Message, NodeId};

/// halab's leader election node (seed 002): discovers its peers by UDP broadcast, elects the
/// highest id by the bully algorithm with majority quorums, and colours ⌈n/3⌉ nodes green.
/// Every flag --some-name can also be set as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: halab_runtime::CommonArgs,
    #[command(flatten)]
    config: ElectionConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Control(ControlCommand),
    /// Take a member out of the agreed membership (majorities are then counted without it),
    /// for a node that is gone for good. Ask the leader (--status-addr); a live node removed
    /// this way simply registers again.
    RemoveMember(RemoveArgs),
}

#[derive(Debug, Args)]
struct RemoveArgs {
    /// The member's id (as `status` shows it).
    id: NodeId,
    #[command(flatten)]
    target: StatusArgs,
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None => {
            let shutdown = halab_runtime::start_daemon(&cli.common)?;
            leader_election::daemon::start(cli.config, cli.common.codec(), shutdown)
                .await?
                .join()
                .await;
            tracing::info!("election node stopped");
            Ok(())
        }
        Some(Command::Control(ControlCommand::Status(args))) => {
            let status = query(&cli, args, Message::StatusRequest).await?;
            control::print_status(&status, args.json, table)
        }
        Some(Command::Control(ControlCommand::Healthcheck(args))) => {
            query(&cli, args, Message::StatusRequest).await.map(drop)
        }
        Some(Command::RemoveMember(RemoveArgs { id, target })) => {
            let status = query(&cli, target, Message::RemoveMember { id: *id }).await?;
            control::print_status(&status, target.json, table)
        }
    }
}

async fn query(
    cli: &Cli,
    args: &StatusArgs,
    request: Message,
) -> anyhow::Result<ElectionNodeStatus> {
    let listen = cli.config.listen;
    let addr = args
        .status_addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], listen.port())));
    let timeout = Duration::from_millis(args.timeout_ms);
    match control::query(addr, cli.common.codec(), request, timeout).await? {
        Message::ElectionStatus(status) => Ok(status),
        other => anyhow::bail!("{addr} answered {:?}: not an election node", other.kind()),
    }
}

/// Ids are IPv4 addresses as numbers by default: show them as addresses when they fit.
fn show(id: u64) -> String {
    u32::try_from(id).map_or(id.to_string(), |v4| {
        format!("{} ({id})", std::net::Ipv4Addr::from(v4))
    })
}

fn table(status: &ElectionNodeStatus) -> String {
    let mut out = String::new();
    let leader = status.leader.map_or("none".to_string(), show);
    let colour = status
        .colour
        .map_or("none".to_string(), |c| format!("{c:?}").to_lowercase());
    let _ = writeln!(
        out,
        "node {}: {} in term {}, leader {leader}, colour {colour}; {} members, quorum {}",
        show(status.id),
        status.state,
        status.term,
        status.membership.len(),
        status.quorum
    );
    for member in &status.members {
        let colour = member
            .colour
            .map_or("-".to_string(), |c| format!("{c:?}").to_lowercase());
        let _ = writeln!(out, "  {:<28}  {colour}", show(member.id));
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
