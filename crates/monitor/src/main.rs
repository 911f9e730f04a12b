use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use monitor::config::MonitorConfig;
use monitor::icmp::Pinger;

/// halab's monitor (seeds 001, 003, 004): checks every node of the lab — an ICMP echo for the
/// machine, the service's status request for the service — and logs each change of state
/// (up, service-down, machine-down). Every flag --some-name can also be set as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: halab_runtime::CommonArgs,
    #[command(flatten)]
    config: MonitorConfig,
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let targets = cli.config.targets()?;
    let settings = cli.config.settings()?;
    let shutdown = halab_runtime::start_daemon(&cli.common)?;
    let pinger = match Pinger::detect() {
        Ok(pinger) => {
            tracing::info!(kind = ?pinger.kind(), "ICMP echo available");
            Some(Arc::new(pinger))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no ICMP: a node's machine counts as up when its port accepts a connection");
            None
        }
    };
    tracing::info!(
        nodes = targets.len(),
        poll_ms = cli.config.poll_ms,
        "monitor watching"
    );
    let _board = monitor::poller::spawn(
        targets,
        settings,
        pinger,
        cli.common.codec(),
        shutdown.clone(),
    );
    shutdown.cancelled().await;
    tracing::info!("monitor stopped");
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
