use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use monitor::config::MonitorConfig;
use monitor::front_door::{self, FrontDoor};
use monitor::gateway::Gateway;
use monitor::icmp::Pinger;
use primary_standby::limits::Limits;

/// halab's monitor (seeds 001, 003, 004): checks every node of the lab — an ICMP echo for the
/// machine, the service's status request for the service — and serves the clients' HTTP front
/// door to the store (/kv, /admin/kill, /ping, /api/status). Every flag --some-name can also
/// be set as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: halab_runtime::CommonArgs,
    #[command(flatten)]
    config: MonitorConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Exit 0 if the monitor at --http-addr answers GET /ping with pong (Docker's healthcheck).
    Healthcheck {
        /// Where the monitor's HTTP front door answers.
        #[arg(long, env = "HALAB_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck { http_addr }) = cli.command {
        return healthcheck(http_addr).await;
    }
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
    let codec = cli.common.codec();
    let board = monitor::poller::spawn(targets, settings, pinger, codec.clone(), shutdown.clone());
    let door = Arc::new(FrontDoor {
        board,
        store: Gateway::new(
            cli.config.store_nodes.clone(),
            codec,
            Duration::from_millis(cli.config.deadline_ms),
        ),
        admin_token: cli.config.admin_token.clone().filter(|t| !t.is_empty()),
        limits: Limits::default(),
        requests: Default::default(),
        upstreams: Default::default(),
        balance: cli.config.balance,
        balancing: Default::default(),
    });
    let app = front_door::router(door, cli.config.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(cli.config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.config.http_listen))?;
    tracing::info!(http = %cli.config.http_listen, poll_ms = cli.config.poll_ms, "monitor watching and serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    tracing::info!("monitor stopped");
    Ok(())
}

/// GET /ping over a bare TCP connection: the image has nothing else to do it with.
async fn healthcheck(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: monitor\r\n\r\n")
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .with_context(|| format!("{addr} did not answer within 2 s"))??;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("pong"),
        "{addr} answered {:?}",
        answer.lines().next().unwrap_or("")
    );
    println!("ok");
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
