use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dispatcher::DispatcherConfig;
use dispatcher::server::MAX_PAGE_ROWS;
use halab_runtime::{CommonArgs, ControlCommand, StatusArgs, control};
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
    command: Option<ControlCommand>,
}

/// Where `status` asks when --status-addr is not given: this host's dispatcher.
const DEFAULT_STATUS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7101);

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None => {
            let shutdown = halab_runtime::start_daemon(&cli.common)?;
            dispatcher::start(cli.config, cli.common.codec(), shutdown)
                .await?
                .join()
                .await;
            tracing::info!("dispatcher stopped");
            Ok(())
        }
        Some(ControlCommand::Status(args)) => {
            control::print_status(&query(&cli.common, args).await?, args.json, table)
        }
        Some(ControlCommand::Healthcheck(args)) => query(&cli.common, args).await.map(drop),
    }
}

async fn query(common: &CommonArgs, args: &StatusArgs) -> anyhow::Result<DispatcherStatus> {
    let addr = args.status_addr.unwrap_or(DEFAULT_STATUS_ADDR);
    let timeout = Duration::from_millis(args.timeout_ms);
    let ask = |request| async move {
        match control::query(addr, common.codec(), request, timeout).await? {
            Message::DispatcherStatus(status) => Ok(status),
            other => anyhow::bail!("{addr} answered {:?}: not a dispatcher", other.kind()),
        }
    };
    if !args.all {
        return ask(Message::StatusRequest).await;
    }
    // Page by page; the totals are those of the last page. Workers that come or go meanwhile
    // may shift a row across a page boundary: the listing is a scan, not a snapshot.
    let mut rows = Vec::new();
    loop {
        let limit = MAX_PAGE_ROWS as u32;
        let offset = rows.len() as u64;
        let mut page = ask(Message::StatusPage { offset, limit }).await?;
        let last = page.workers.len() < MAX_PAGE_ROWS;
        rows.append(&mut page.workers);
        if last {
            page.workers = rows;
            return Ok(page);
        }
    }
}

fn table(status: &DispatcherStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} workers, {}/{} active, {} activations; fairness gap {:.3} (bound {:.3}); up {} s",
        status.worker_count,
        status.active,
        status.max_active,
        status.total_activations,
        status.fairness_gap,
        status.fairness_bound,
        status.uptime_ms / 1000
    );
    let _ = writeln!(
        out,
        "{:>20}  {:<22} {:>6} {:>11} {:>8} {:>6} {:>7} {:>13}",
        "id", "addr", "weight", "activations", "share", "active", "answers", "last_comm_ms"
    );
    for w in &status.workers {
        let _ = writeln!(
            out,
            "{:>20}  {:<22} {:>6} {:>11} {:>8.2} {:>6} {:>7} {:>13}",
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
    if (status.workers.len() as u64) < status.worker_count {
        let _ = writeln!(
            out,
            "(the first {} of {} rows; --all for every one)",
            status.workers.len(),
            status.worker_count
        );
    }
    if status.auth_failures + status.bad_frames + status.replayed > 0 {
        let _ = writeln!(
            out,
            "dropped: {} unauthenticated, {} malformed, {} replayed frames",
            status.auth_failures, status.bad_frames, status.replayed
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
